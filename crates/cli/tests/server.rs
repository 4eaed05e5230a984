//! `ferrohsm server` as a boundary: real server processes over real data directories,
//! reached through the HSM API client (`ferrohsm-client`) and through raw sockets.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrohsm_client::Remote;
use ferrohsm_core::api::{Embedded, HsmApi, LoginCredential};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::{KeyOptions, ObjectClass};
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{HsmError, Role};
use support::{Lab, CO_PW, SO_PW};

fn pw(s: &str) -> LoginCredential {
    LoginCredential::Secret(Pin::password(s).unwrap())
}

fn opts(label: &str) -> KeyOptions {
    KeyOptions {
        label: label.into(),
        id: vec![1, 2],
        extractable: false,
    }
}

/// The same story through any implementation of the API.
fn story(api: &mut dyn HsmApi) {
    let s = api.summary().unwrap();
    assert_eq!(s.state, "initialised");
    assert_eq!(s.auth_mode.as_deref(), Some("password"));
    assert_eq!(s.partitions.len(), 1);
    assert_eq!(s.partitions[0].label, "app");

    // A wrong password is counted and says how many attempts are left.
    match api.login(Role::CryptoOfficer, Some("app"), pw("wrong-password")) {
        Err(HsmError::AuthFailed { remaining, .. }) => assert_eq!(remaining, Some(9)),
        other => panic!("{other:?}"),
    }
    let co = api
        .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
        .unwrap();
    let made = api
        .generate_key(co, KeySpec::EcP256, &opts("signer"))
        .unwrap();
    assert_eq!(made.len(), 2);
    let found = api.find_objects(co, Some("signer")).unwrap();
    assert_eq!(found.len(), 2);
    let private = found
        .iter()
        .find(|o| o.attrs.class == ObjectClass::PrivateKey)
        .unwrap();
    assert_eq!(private.attrs.spec, Some(KeySpec::EcP256));
    assert!(private.attrs.sensitive && !private.attrs.extractable && private.attrs.local);
    assert!(private.public.is_some());
    let sig = api
        .sign(
            co,
            private.handle,
            Mechanism::Ecdsa(Some(ferrohsm_core::mechanism::Hash::Sha256)),
            b"invoice",
        )
        .unwrap();
    assert_eq!(sig.len(), 64, "raw r||s");
    let public = found
        .iter()
        .find(|o| o.attrs.class == ObjectClass::PublicKey)
        .unwrap();
    let m = Mechanism::Ecdsa(Some(ferrohsm_core::mechanism::Hash::Sha256));
    assert!(api.verify(co, public.handle, m, b"invoice", &sig).unwrap());
    assert!(!api.verify(co, public.handle, m, b"invoice!", &sig).unwrap());

    // CKM_RSA_PKCS over bytes that are no DigestInfo (legacy TLS's MD5+SHA-1): only AWS-LC's
    // raw RSA (ferrohsm-crypto's provider, installed wherever the engine runs) does this.
    let rsa = api
        .generate_key(co, KeySpec::Rsa2048, &opts("rsa"))
        .unwrap();
    let tls10 = [0x5au8; 36];
    let raw = api
        .sign(co, rsa[0], Mechanism::RsaPkcs1Raw, &tls10)
        .unwrap();
    assert_eq!(raw.len(), 256);
    assert!(api
        .verify(co, rsa[1], Mechanism::RsaPkcs1Raw, &tls10, &raw)
        .unwrap());
    assert!(!api
        .verify(co, rsa[1], Mechanism::RsaPkcs1Raw, &[0x5b; 36], &raw)
        .unwrap());

    let aes = api.generate_key(co, KeySpec::Aes256, &opts("aes")).unwrap()[0];
    let p = Params {
        iv: vec![7; 12],
        aad: b"header".to_vec(),
        label: vec![],
    };
    let ct = api
        .encrypt(co, aes, Mechanism::AesGcm, &p, b"secret message")
        .unwrap();
    assert_eq!(ct.len(), 14 + 16);
    assert_eq!(
        api.decrypt(co, aes, Mechanism::AesGcm, &p, &ct).unwrap(),
        b"secret message"
    );

    // A batch: every key made in one transaction, each with its own handles.
    let batch: Vec<KeyOptions> = (0..3).map(|i| opts(&format!("card-{i}"))).collect();
    let made = api.generate_keys(co, KeySpec::Aes128, &batch).unwrap();
    assert_eq!(made.len(), 3);
    assert_eq!(
        api.find_objects(co, Some("card-2")).unwrap()[0].handle,
        made[2][0]
    );
    // A repeated label in a batch refuses the whole batch.
    let dup = vec![opts("twin"), opts("twin")];
    assert!(api.generate_keys(co, KeySpec::Aes128, &dup).is_err());
    assert!(api.find_objects(co, Some("twin")).unwrap().is_empty());

    let r = api.random(32).unwrap();
    assert_eq!(r.len(), 32);
    assert_ne!(r, api.random(32).unwrap());
    assert!(matches!(
        api.random(2 << 20),
        Err(HsmError::InvalidInput(_))
    ));

    // Separation of duties holds through the API: the CO cannot zeroize.
    assert!(matches!(api.zeroize(co, "x"), Err(HsmError::Refused(_))));
    api.destroy_object(co, aes).unwrap();
    assert!(api.find_objects(co, Some("aes")).unwrap().is_empty());
    api.logout(co).unwrap();
    assert!(matches!(
        api.sign(co, private.handle, m, b"x"),
        Err(HsmError::NotLoggedIn(_))
    ));
    // A login id is no bearer token: a guessed one names nothing.
    assert!(matches!(api.logout(co ^ 1), Err(HsmError::NotLoggedIn(_))));
}

/// Run by the test above in a process of its own: a login id of another process names nothing.
#[test]
#[ignore = "helper process for the_api_tells_the_same_story_embedded_and_through_a_server"]
fn helper_use_a_login_of_another_process() {
    let socket = std::env::var_os("FH_TEST_SOCKET").unwrap();
    let login: u64 = std::env::var("FH_TEST_LOGIN").unwrap().parse().unwrap();
    let mut api = Remote::connect(std::path::Path::new(&socket)).unwrap();
    assert!(matches!(
        api.find_objects(login, None),
        Err(HsmError::NotLoggedIn(_))
    ));
}

#[test]
fn the_api_tells_the_same_story_embedded_and_through_a_server() {
    // This process runs the engine too: give it the providers the server installs.
    ferrohsm_crypto::install();
    let embedded = Lab::new();
    story(&mut Embedded::open(&embedded.data()).unwrap());

    let served = Lab::new();
    let server = served.start();
    story(&mut Remote::connect(&server.socket).unwrap());
    // A login belongs to its client process, as a PKCS#11 login is the application's: the
    // process's other connections (the module's other sessions) share it...
    let mut a = Remote::connect(&server.socket).unwrap();
    let mut b = Remote::connect(&server.socket).unwrap();
    let co = a
        .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
        .unwrap();
    assert!(a.find_objects(co, None).is_ok());
    assert!(b.find_objects(co, None).is_ok());
    // ...another process cannot use it, even knowing its id...
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_use_a_login_of_another_process",
            "--ignored",
        ])
        .env("FH_TEST_SOCKET", &server.socket)
        .env("FH_TEST_LOGIN", co.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "another process used the login: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ...and it ends with the process's last connection.
    drop((a, b));
    let t = Instant::now();
    // Each try on a fresh connection: once the server has read the others' end, the login
    // is gone, and a new connection starts the process afresh.
    while Remote::connect(&server.socket)
        .unwrap()
        .find_objects(co, None)
        .is_ok()
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the login outlived its process's connections"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Remote::connect(&server.socket).unwrap();
    assert!(matches!(
        c.find_objects(co, None),
        Err(HsmError::NotLoggedIn(_))
    ));
    // The server's log has the connections, never a password.
    let st = server.stop();
    assert!(st.success(), "{st}");
    let log = std::fs::read_to_string(served.tmp.path().join("server.log")).unwrap();
    assert!(
        log.contains("connection opened") && log.contains("stopped"),
        "{log}"
    );
    for secret in [CO_PW, SO_PW, "wrong-password"] {
        assert!(!log.contains(secret), "the log holds a password");
    }
    assert!(!served.socket().exists(), "the socket is removed at stop");
}

#[test]
fn a_served_directory_is_the_servers_alone() {
    let lab = Lab::new();
    let server = lab.start();
    let pid = server.pid().to_string();

    // A factory reset is done on the directory itself: refused while a server holds it, and
    // told which process serves it and where.
    let out = lab
        .cli()
        .args(["hsm", "factory-reset", "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("served by ferrohsm server process") && err.contains(&pid),
        "{err}"
    );
    assert!(err.contains("hsm.sock"), "{err}");

    // So is this process's engine.
    match Embedded::open(&lab.data()) {
        Err(HsmError::InUse(m)) => assert!(m.contains(&pid), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an embedded open of a served directory succeeded"),
    }

    // A second server on the same directory (another socket) is refused at start.
    let second = lab.config("second.toml", &lab.run_dir().join("second.sock"), "");
    let (code, err) = support::refused_start(&second);
    assert_eq!(code, Some(6));
    assert!(err.contains("already open") && err.contains(&pid), "{err}");

    // Once it stops, the directory is usable directly again.
    assert!(server.stop().success());
    lab.ok(&["hsm", "show"]);

    // And a server cannot start beside an embedded user: this process holds it now.
    let _held = Embedded::open(&lab.data()).unwrap();
    let (code, err) = support::refused_start(&lab.tmp.path().join("server.toml"));
    assert_eq!(code, Some(6));
    assert!(err.contains(&std::process::id().to_string()), "{err}");
}

#[test]
fn a_directory_others_can_read_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let db = lab.data().join("hsm.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let conf = lab.config("s.toml", &lab.socket(), "");
    let (code, err) = support::refused_start(&conf);
    assert_eq!(code, Some(4));
    assert!(err.contains("hsm.db") && err.contains("chmod 600"), "{err}");
    assert!(!lab.socket().exists());
}

#[test]
fn check_config_reports_the_bad_key_and_accepts_a_good_file() {
    let lab = Lab::new();
    let bad = lab.tmp.path().join("bad.toml");
    std::fs::write(&bad, "max_conections = 5\n").unwrap();
    let out = lab
        .cli()
        .args(["server", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"));

    let good = lab.tmp.path().join("good.toml");
    let defaults = lab
        .cli()
        .args(["server", "--print-default-config"])
        .output()
        .unwrap();
    assert!(defaults.status.success());
    std::fs::write(&good, &defaults.stdout).unwrap();
    let out = lab
        .cli()
        .args(["server", "--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, defaults.stdout);
}

#[test]
fn zeroize_reaches_a_client_signing_in_a_loop_on_its_very_next_call() {
    let lab = Lab::new();
    let server = lab.start();
    let mut setup = Remote::connect(&server.socket).unwrap();
    let co = setup
        .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
        .unwrap();
    let key = setup
        .generate_key(co, KeySpec::Ed25519, &opts("ed"))
        .unwrap()[0];

    let zeroized = Arc::new(AtomicBool::new(false));
    let after = Arc::new(AtomicU64::new(0));
    let signer = {
        let (sock, zeroized, after) = (server.socket.clone(), zeroized.clone(), after.clone());
        std::thread::spawn(move || {
            let mut app = Remote::connect(&sock).unwrap();
            let co = app
                .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
                .unwrap();
            let mut signed = 0u64;
            loop {
                // Read the flag before the call: a call that starts after zeroize returned
                // must fail.
                let was_zeroized = zeroized.load(Ordering::SeqCst);
                match app.sign(co, key, Mechanism::Ed25519, b"payload") {
                    Ok(_) if was_zeroized => {
                        after.fetch_add(1, Ordering::SeqCst);
                        return (signed, None);
                    }
                    Ok(_) => signed += 1,
                    Err(e) => return (signed, Some(e)),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut officer = Remote::connect(&server.socket).unwrap();
    // The CO cannot pull the plug.
    assert!(matches!(setup.zeroize(co, "no"), Err(HsmError::Refused(_))));
    assert!(matches!(setup.tamper(co), Err(HsmError::Refused(_))));
    assert!(matches!(setup.restart(co), Err(HsmError::Refused(_))));
    let so = officer.login(Role::HsmSo, None, pw(SO_PW)).unwrap();
    officer
        .zeroize(so, "test: zeroize reaches clients")
        .unwrap();
    zeroized.store(true, Ordering::SeqCst);
    let (signed, err) = signer.join().unwrap();
    assert!(signed > 0, "the application signed before the zeroize");
    assert_eq!(
        after.load(Ordering::SeqCst),
        0,
        "a signature came back after zeroize"
    );
    assert!(matches!(err, Some(HsmError::NotLoggedIn(_))), "{err:?}");
    // Every login ended, the HSM SO's included, and the HSM is zeroized.
    assert!(matches!(
        setup.find_objects(co, None),
        Err(HsmError::NotLoggedIn(_))
    ));
    assert_eq!(officer.summary().unwrap().state, "zeroized");
    assert!(officer
        .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
        .is_err());
    drop(server);
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Reads one answer frame and returns its bytes (the connection then closes).
fn answer(s: &mut UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    all
}

#[test]
fn garbage_truncation_oversize_idle_crowds_and_dropped_clients_never_hurt_the_server() {
    let lab = Lab::new();
    let server = lab.start_with("max_frame_bytes = 4096\nmax_connections = 400\n");
    let sock = server.socket.clone();
    let mut app = Remote::connect(&sock).unwrap();
    let co = app
        .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
        .unwrap();
    let key = app.generate_key(co, KeySpec::Ed25519, &opts("ed")).unwrap()[0];

    // Garbage in a well-formed frame: an error answer, then the connection closes.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&frame(&[0xff; 64])).unwrap();
    let a = answer(&mut s);
    assert!(
        String::from_utf8_lossy(&a).contains("does not decode"),
        "{a:?}"
    );

    // An oversized frame is refused before it is read.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
    let a = answer(&mut s);
    assert!(
        String::from_utf8_lossy(&a).contains("over this server's limit"),
        "{a:?}"
    );

    // A truncated frame, then the client goes.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(&[1, 2, 3]).unwrap();
    drop(s);

    // A request of another protocol version is refused, not misread.
    let req = ferrohsm_proto::Request {
        version: 99,
        id: 5,
        call: Some(ferrohsm_proto::v1::request::Call::Summary(
            ferrohsm_proto::v1::Summary {},
        )),
    };
    let mut s = UnixStream::connect(&sock).unwrap();
    ferrohsm_proto::write_frame(&mut s, &req).unwrap();
    let resp: ferrohsm_proto::Response = ferrohsm_proto::read_message(&mut s, 1 << 20).unwrap();
    match resp.result {
        Some(ferrohsm_proto::v1::response::Result::Error(e)) => {
            assert!(e.message.contains("version 99"), "{}", e.message)
        }
        other => panic!("{other:?}"),
    }

    // Three hundred idle connections, and a key generation whose client vanishes at once.
    let idle: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    {
        // A client logs in, asks for an RSA key and goes without reading the answer.
        let mut raw = UnixStream::connect(&sock).unwrap();
        let login = ferrohsm_proto::Request {
            version: ferrohsm_proto::PROTOCOL_VERSION,
            id: 1,
            call: Some(ferrohsm_proto::v1::request::Call::Login(
                ferrohsm_proto::v1::Login {
                    role: "co".into(),
                    partition: Some("app".into()),
                    credential: Some(ferrohsm_proto::v1::login::Credential::Secret(
                        CO_PW.as_bytes().to_vec(),
                    )),
                },
            )),
        };
        ferrohsm_proto::write_frame(&mut raw, &login).unwrap();
        let resp: ferrohsm_proto::Response =
            ferrohsm_proto::read_message(&mut raw, 1 << 20).unwrap();
        let Some(ferrohsm_proto::v1::response::Result::Login(li)) = resp.result else {
            panic!("{resp:?}")
        };
        let gen = ferrohsm_proto::Request {
            version: ferrohsm_proto::PROTOCOL_VERSION,
            id: 2,
            call: Some(ferrohsm_proto::v1::request::Call::GenerateKey(
                ferrohsm_proto::v1::GenerateKey {
                    login: li.login,
                    key_type: "rsa-2048".into(),
                    label: "orphan".into(),
                    object_id: vec![],
                    extractable: false,
                },
            )),
        };
        ferrohsm_proto::write_frame(&mut raw, &gen).unwrap();
        drop(raw);
    }

    // Meanwhile the application keeps signing, undisturbed.
    let t = Instant::now();
    for _ in 0..50 {
        app.sign(co, key, Mechanism::Ed25519, b"still here")
            .unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    drop(idle);

    // The orphaned generation either finished whole (a private and a public key) or never
    // happened; never half an object.
    let t = Instant::now();
    let orphans = loop {
        let n = app.find_objects(co, Some("orphan")).unwrap();
        if n.len() == 2 || t.elapsed() > Duration::from_secs(20) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(orphans.len() == 2 || orphans.is_empty(), "{orphans:?}");

    let log = server.log_text();
    for what in ["does not decode", "oversized frame", "broken frame"] {
        assert!(log.contains(what), "the log does not say {what:?}: {log}");
    }
    let st = server.stop();
    assert!(st.success(), "{st}");
}

#[test]
fn kill_9_under_eight_signing_threads_errors_promptly_and_loses_nothing_acknowledged() {
    let lab = Lab::new();
    let mut server = lab.start();
    let sock = server.socket.clone();
    let mut setup = Remote::connect(&sock).unwrap();
    let co = setup
        .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
        .unwrap();
    let key = setup
        .generate_key(co, KeySpec::EcP256, &opts("p256"))
        .unwrap()[0];
    // Keys acknowledged before the kill must be there after it.
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(
            setup
                .generate_key(co, KeySpec::Aes128, &opts(&format!("k{i}")))
                .unwrap()[0],
        );
    }
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Remote::connect(&sock)
                    .unwrap()
                    .with_deadline(Duration::from_secs(3));
                let l = c
                    .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
                    .unwrap();
                let mut n = 0u64;
                loop {
                    let t = Instant::now();
                    let m = Mechanism::Ecdsa(Some(ferrohsm_core::mechanism::Hash::Sha256));
                    match c.sign(l, key, m, b"load") {
                        Ok(_) => n += 1,
                        Err(e) => return (n, e, t.elapsed()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    server.signal("KILL");
    server.wait(Duration::from_secs(10));
    for t in threads {
        let (n, e, took) = t.join().unwrap();
        assert!(n > 0);
        assert!(matches!(e, HsmError::Io { .. }), "{e}");
        assert!(took < Duration::from_secs(4), "a call hung for {took:?}");
    }
    // A restarted server serves new logins, with every acknowledged key in place.
    let server = lab.start();
    let mut c = Remote::connect(&server.socket).unwrap();
    let l = c
        .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
        .unwrap();
    let handles: Vec<u64> = c
        .find_objects(l, None)
        .unwrap()
        .iter()
        .map(|o| o.handle)
        .collect();
    for h in acked {
        assert!(handles.contains(&h), "acknowledged key {h} lost");
    }
    c.sign(l, key, Mechanism::Ecdsa(None), &[0u8; 32]).unwrap();
    assert!(server.stop().success());
}

#[test]
fn a_user_the_configuration_does_not_name_is_refused_by_its_uid() {
    // Needs root to connect as another user.
    let python = std::path::Path::new("/usr/bin/python3");
    if !support::is_root() || !python.exists() || !support::have("setpriv", "--version") {
        eprintln!("skipped: needs root, setpriv and /usr/bin/python3 to connect as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    // Let others reach the socket file, so that only the uid check stands in the way.
    std::fs::set_permissions(lab.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(lab.run_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = lab.start();
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\nd=b''\nwhile True:\n  b=s.recv(4096)\n  if not b: break\n  d+=b\nsys.stdout.write(d[4:].decode('latin-1'))\n",
        server.socket.display().to_string()
    );
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("uid 65534 is not allowed"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = server.log_text();
    assert!(
        log.contains("connection refused") && log.contains("uid 65534 is not allowed"),
        "{log}"
    );
}

/// PED-key logins through the server: the client reads the key files and presents their
/// bytes with the PED PIN; the HSM parses and checks them as it checks local files.
#[test]
fn ped_keys_are_presented_through_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, peds, run) = (
        tmp.path().join("data"),
        tmp.path().join("peds"),
        tmp.path().join("run"),
    );
    std::fs::create_dir_all(&run).unwrap();
    let out = std::process::Command::new(support::bin())
        .env("FERROHSM_HOME", &data)
        .env("FERROHSM_PED_DIR", &peds)
        .env("SO_PIN", "246810")
        .args(["hsm", "init", "--label", "ped", "--so-pin", "env:SO_PIN"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::read_dir(&peds)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-hsm-so-1.pedkey"))
        .unwrap();
    let conf = tmp.path().join("s.toml");
    let socket = run.join("hsm.sock");
    std::fs::write(&conf, format!("data_dir = {data:?}\nsocket = {socket:?}\n")).unwrap();
    let server = support::Server::start(&conf, &socket, &tmp.path().join("log"));
    let bytes = std::fs::read(&key).unwrap();
    let cred = |contents: Vec<u8>, pin: &str| LoginCredential::PedKeys {
        keys: vec![("so-1.pedkey".into(), zeroize::Zeroizing::new(contents))],
        pin: Some(Pin::ped_pin(pin).unwrap()),
    };
    let mut c = Remote::connect(&socket).unwrap();
    match c.login(Role::HsmSo, None, cred(bytes.clone(), "135790")) {
        Err(HsmError::AuthFailed { remaining, .. }) => assert_eq!(remaining, Some(2)),
        other => panic!("{other:?}"),
    }
    // A damaged file is refused as such, and not counted.
    let mut bad = bytes.clone();
    let n = bad.len() / 2;
    bad[n] ^= 1;
    assert!(matches!(
        c.login(Role::HsmSo, None, cred(bad, "246810")),
        Err(HsmError::BadPedKey { .. })
    ));
    match c.login(Role::HsmSo, None, cred(bytes.clone(), "135790")) {
        Err(HsmError::AuthFailed { remaining, .. }) => assert_eq!(remaining, Some(1)),
        other => panic!("{other:?}"),
    }
    let so = c.login(Role::HsmSo, None, cred(bytes, "246810")).unwrap();
    c.restart(so).unwrap();
    assert!(server.stop().success());
}

/// The operator's key commands and device actions through a server: the CLI finds the server
/// that holds the directory (or is told with --server) and never opens the directory itself.
#[test]
fn the_cli_goes_through_the_server_that_holds_the_directory() {
    let lab = Lab::new();
    let server = lab.start();
    let co = ["--partition", "app", "--password", "env:CO_PW"];
    let run = |args: &[&str]| {
        let out = lab.cli().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ok = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    ok(&[
        &["key", "generate", "--type", "ec-p256", "--label", "signer"][..],
        &co,
    ]
    .concat());
    ok(&[
        &[
            "key", "generate", "--type", "aes-256", "--label", "batch", "--count", "3",
        ][..],
        &co,
    ]
    .concat());
    let msg = lab.tmp.path().join("msg.txt");
    std::fs::write(&msg, b"pay 100").unwrap();
    let (m, sig) = (
        msg.display().to_string(),
        lab.tmp.path().join("msg.sig").display().to_string(),
    );
    ok(&[
        &[
            "key", "sign", "--label", "signer", "--in", &m, "--out", &sig,
        ][..],
        &co,
    ]
    .concat());
    let out = ok(&[
        &[
            "key",
            "verify",
            "--label",
            "signer",
            "--in",
            &m,
            "--signature",
            &sig,
        ][..],
        &co,
    ]
    .concat());
    assert!(out.contains("valid"), "{out}");
    let (ct, pt) = (
        lab.tmp.path().join("ct").display().to_string(),
        lab.tmp.path().join("pt").display().to_string(),
    );
    ok(&[
        &[
            "key",
            "encrypt",
            "--label",
            "batch-00002",
            "--in",
            &m,
            "--out",
            &ct,
        ][..],
        &co,
    ]
    .concat());
    ok(&[
        &[
            "key",
            "decrypt",
            "--label",
            "batch-00002",
            "--in",
            &ct,
            "--out",
            &pt,
        ][..],
        &co,
    ]
    .concat());
    assert_eq!(std::fs::read(&pt).unwrap(), b"pay 100");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&[&["--json", "key", "list"][..], &co].concat())).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 5);
    // The whole description, as on the directory: policies and every partition.
    let out = ok(&["hsm", "show"]);
    assert!(
        out.contains("policy:") && out.contains("partition app"),
        "{out}"
    );
    // A wrong password through the server is an authentication failure (exit 3).
    let (code, _, _) = run(&[
        "key",
        "list",
        "--partition",
        "app",
        "--password",
        "env:SO_PW",
    ]);
    assert_eq!(code, Some(3));
    // Named explicitly, from a directory that is not the HSM's.
    let sock = lab.socket().display().to_string();
    let out = lab
        .cli()
        .env("FERROHSM_HOME", lab.tmp.path().join("elsewhere"))
        .args([&["--server", &sock, "key", "list"][..], &co].concat())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The CO cannot restart the HSM through the server; the HSM SO can, and zeroize it.
    let (code, _, _) = run(&["hsm", "restart", "--password", "env:CO_PW"]);
    assert_eq!(code, Some(3), "the CO's password is not the SO's");
    ok(&["hsm", "restart", "--password", "env:SO_PW"]);
    ok(&["hsm", "zeroize", "--yes", "--password", "env:SO_PW"]);
    assert!(ok(&["hsm", "show"]).contains("zeroized"));
    assert!(server.stop().success());
}

/// The boundary from the client's side: an operator's command that signs through the server
/// opens no file of the data directory (strace records every file system call); finding the
/// server by the directory reads only its lock file, which holds a pid and a socket path.
#[test]
fn a_client_through_the_server_opens_nothing_in_the_data_directory() {
    if !support::have("strace", "-V") {
        eprintln!("skipped: strace is not installed (.ci/run installs it)");
        return;
    }
    let lab = Lab::new();
    let server = lab.start();
    let co = ["--partition", "app", "--password", "env:CO_PW"];
    lab.ok(&[
        &["key", "generate", "--type", "ec-p256", "--label", "signer"][..],
        &co,
    ]
    .concat());
    let msg = lab.tmp.path().join("msg.txt");
    std::fs::write(&msg, b"pay 100").unwrap();
    let (m, sig) = (
        msg.display().to_string(),
        lab.tmp.path().join("msg.sig").display().to_string(),
    );
    let data = lab.data().canonicalize().unwrap().display().to_string();
    let traced = |extra: &[&str], name: &str| -> String {
        let trace = lab.tmp.path().join(name);
        // The same environment as the lab's commands, run under strace.
        let mut cmd = lab.cli();
        let mut args = vec!["-f", "-qq", "-e", "trace=%file", "-o"];
        let t = trace.display().to_string();
        args.push(&t);
        let bin = support::bin().display().to_string();
        args.push(&bin);
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "key", "sign", "--label", "signer", "--in", &m, "--out", &sig,
        ]);
        args.extend_from_slice(&co);
        let out = strace(&mut cmd, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&trace).unwrap()
    };
    let sock = lab.socket().display().to_string();
    let named = traced(&["--server", &sock], "named.trace");
    assert!(
        named.contains("hsm.sock"),
        "the trace saw the socket: {named}"
    );
    assert!(
        !named.contains(&data),
        "the client opened the data directory:\n{named}"
    );
    let found = traced(&[], "found.trace");
    for line in found.lines().filter(|l| l.contains(&data)) {
        assert!(
            line.contains(&format!("{data}/lock")),
            "the client touched {line}"
        );
    }
    for secret_file in ["device.key", "audit.key", "hsm.db"] {
        assert!(
            !found.contains(secret_file),
            "the client opened {secret_file}"
        );
    }
    assert!(server.stop().success());
}

/// The server's process: no core file can be written.
#[test]
fn the_server_process_writes_no_core_and_locks_memory_when_allowed() {
    let lab = Lab::new();
    let server = lab.start();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{core}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    if server.log_text().contains("memory locked") {
        assert!(
            locked_kb > 0,
            "the log says locked, VmLck says {locked_kb} kB"
        );
    } else {
        assert!(
            server.log_text().contains("RLIMIT_MEMLOCK") || server.log_text().contains("mlockall")
        );
    }
    assert!(server.stop().success());
}

/// Runs `strace ARGS` with `cmd`'s environment and working directory.
fn strace(cmd: &mut std::process::Command, args: &[&str]) -> std::process::Output {
    let mut st = std::process::Command::new("strace");
    st.args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => st.env(k, v),
            None => st.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        st.current_dir(d);
    }
    st.output().unwrap()
}

/// The Auditor reads, exports and verifies the log through a running server (and the export
/// verifies offline with the public key it gave). SIGTERM: a request in flight (RSA-4096
/// generations) finishes and is answered; key uses
/// counted in a batched audit window that has not closed yet are committed before the
/// process exits; then the server stops with 0.
#[test]
fn the_auditor_works_through_the_server_and_sigterm_finishes_requests_and_flushes_audit_batches() {
    let lab = Lab::new();
    let with_auditor = |args: &[&str]| {
        let out = lab
            .cli()
            .env("AUD_PW", "auditor-pass-1")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    with_auditor(&[
        "audit",
        "init",
        "--auth",
        "password",
        "--new-password",
        "env:AUD_PW",
    ]);
    // A window far longer than the test: only the flush at shutdown writes these records.
    with_auditor(&[
        "audit",
        "config",
        "set",
        "--key-use",
        "batched",
        "--batch-ms",
        "60000",
        "--password",
        "env:AUD_PW",
    ]);
    let server = lab.start();
    // While the server runs, the Auditor reads, exports and verifies the log through it.
    let vkey = lab.tmp.path().join("hsm-audit.vkey").display().to_string();
    let export = lab.tmp.path().join("audit.json").display().to_string();
    with_auditor(&["audit", "public-key", "--out", &vkey]);
    let shown = with_auditor(&[
        "audit",
        "show",
        "--event",
        "audit-config",
        "--password",
        "env:AUD_PW",
    ]);
    assert!(shown.contains("audit-config"), "{shown}");
    with_auditor(&[
        "audit",
        "export",
        "--out",
        &export,
        "--password",
        "env:AUD_PW",
    ]);
    let live = with_auditor(&["audit", "verify", "--password", "env:AUD_PW"]);
    assert!(live.contains("verified"), "{live}");
    let offline = with_auditor(&[
        "audit",
        "verify",
        "--export",
        &export,
        "--public-key",
        &vkey,
    ]);
    assert!(offline.contains("verified"), "{offline}");
    let mut app = Remote::connect(&server.socket).unwrap();
    let co = app
        .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
        .unwrap();
    // The Crypto Officer is not the Auditor, through the server either.
    assert!(matches!(app.audit_records(co), Err(HsmError::Refused(_))));
    let ed = app.generate_key(co, KeySpec::Ed25519, &opts("ed")).unwrap()[0];
    for _ in 0..5 {
        app.sign(co, ed, Mechanism::Ed25519, b"counted").unwrap();
    }
    let sock = server.socket.clone();
    let slow = std::thread::spawn(move || {
        let mut c = Remote::connect(&sock)
            .unwrap()
            .with_deadline(Duration::from_secs(60));
        let l = c
            .login(Role::CryptoOfficer, Some("app"), pw(CO_PW))
            .unwrap();
        // Six RSA-4096 keys in one transaction: seconds of work in one request.
        let batch: Vec<KeyOptions> = (0..6).map(|i| opts(&format!("big-{i}"))).collect();
        let r = c.generate_keys(l, KeySpec::Rsa4096, &batch);
        (r, Instant::now())
    });
    // Let the generation start (the login's Argon2 comes first), then ask the server to stop.
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    server.signal("TERM");
    let (made, answered) = slow.join().unwrap();
    let made = made.expect("the request in flight was answered");
    assert_eq!(made.len(), 6);
    assert!(
        answered > signalled,
        "the generation finished before the signal; the test proves nothing"
    );
    let mut server = server;
    assert!(server.wait(Duration::from_secs(60)).success());
    // A new request after the stop is refused: the socket is gone.
    assert!(matches!(app.random(8), Err(HsmError::Io { .. })));

    // On the directory again (no server): the RSA key is whole, the uses were recorded.
    let listed = lab
        .cli()
        .args([
            "--json",
            "key",
            "list",
            "--partition",
            "app",
            "--password",
            "env:CO_PW",
        ])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let big = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            o["attrs"]["label"]
                .as_str()
                .unwrap_or_default()
                .starts_with("big-")
        })
        .count();
    assert_eq!(big, 12, "six whole key pairs");
    let recs: serde_json::Value = serde_json::from_str(&with_auditor(&[
        "--json",
        "audit",
        "show",
        "--event",
        "key-use",
        "--password",
        "env:AUD_PW",
    ]))
    .unwrap();
    let outcomes: Vec<String> = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        outcomes.iter().any(|o| o.contains("sign ed25519 x5")),
        "{outcomes:?}"
    );
}

/// The server keeps the latest checkpoint outside the data directory; when an older copy of
/// the directory is put back (its own log, consistent but shorter), it refuses to serve it.
#[test]
fn a_rolled_back_data_directory_is_refused_against_the_checkpoint_kept_outside() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let copy_dir = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
            }
        }
    };
    let old = lab.tmp.path().join("data-old");
    copy_dir(&lab.data(), &old);
    let outside = lab.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let kept = outside.join("last.checkpoint");
    let extra = format!("checkpoint_file = {kept:?}\n");
    let server = lab.start_with(&extra);
    let size = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|n| ferrohsm_audit::verify::checkpoint_size(&n))
    };
    let t = Instant::now();
    while size(&kept).is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "no checkpoint kept");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = size(&kept).unwrap();
    let mut c = lab.cli();
    c.arg("--server").arg(&server.socket);
    let out = c
        .args([
            "partition",
            "create",
            "--label",
            "more",
            "--password",
            "env:SO_PW",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    while size(&kept) == Some(first) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the kept checkpoint never grew"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.stop().success());
    // An unchanged directory starts again.
    let server = lab.start_with(&extra);
    assert!(server.stop().success());
    // The older copy put back: refused, and the refusal is the tamper `hsm show` reports.
    std::fs::remove_dir_all(lab.data()).unwrap();
    copy_dir(&old, &lab.data());
    let conf = lab.config("server.toml", &lab.socket(), &extra);
    let (code, said) = support::refused_start(&conf);
    assert_ne!(code, Some(0));
    assert!(said.contains("rollback"), "{said}");
    let show = lab.cli().args(["hsm", "show"]).output().unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("TAMPER") && text.contains("rollback"),
        "{text}"
    );
}

/// A server stopped the moment its socket appears (as a supervisor or an impatient client
/// may) stops cleanly: SIGTERM is handled from before the socket exists.
#[test]
fn sigterm_right_after_the_socket_appears_is_a_clean_stop() {
    let lab = Lab::new();
    for _ in 0..5 {
        let server = lab.start();
        assert!(server.stop().success());
    }
}
