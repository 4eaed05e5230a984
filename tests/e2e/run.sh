#!/usr/bin/env bash
# End to end through clients nobody here wrote: OpenSC's pkcs11-tool, GnuTLS p11tool and
# certtool, OpenSSL through the Debian pkcs11 engine, Java 17 SunPKCS11 (keytool, jarsigner)
# and python-pkcs11 drive the module, and OpenSSL checks what comes out of it (signatures
# verified outside the token, ciphertexts made outside it decrypted on it, certificates made
# with token keys). Every check prints PASS or FAIL; the last line is "N passed, M failed",
# and the exit status is non-zero if anything failed.
#
# The suite runs three times: with the module against a real `ferrohsm server` over its Unix
# socket (the way users run it on the HSM's machine), over TCP with mutual TLS as a
# registered application host (certificates made in the run), and embedded (the engine
# inside each client, no boundary).
#
#   tests/e2e/run.sh [server|tls|embedded|all]   (default all; after `cargo build`; installs
#                                                what is missing with apt-get and pip)
set -u
MODES=${1:-all}
[ "$MODES" = all ] && MODES="server tls embedded"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${FERROHSM_BIN:-$ROOT/target/debug/ferrohsm}
MOD=${FERROHSM_MODULE:-$ROOT/target/debug/libferrohsm_pkcs11.so}

ENGINE=/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
need=()
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v p11tool >/dev/null 2>&1 && command -v certtool >/dev/null 2>&1 || need+=(gnutls-bin)
[ -f "$ENGINE" ] || need+=(libengine-pkcs11-openssl)
command -v keytool >/dev/null 2>&1 && command -v jarsigner >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/golang.org/x/mod/sumdb ] || need+=(golang-golang-x-mod-dev)
[ -f /usr/include/p11-kit-1/p11-kit/pkcs11.h ] || need+=(libp11-kit-dev)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1
fi
if ! python3 -c 'import pkcs11' >/dev/null 2>&1; then
  python3 -m pip install --quiet python-pkcs11 >/dev/null 2>&1 ||
    python3 -m pip install --quiet --break-system-packages python-pkcs11 >/dev/null 2>&1
fi
for t in pkcs11-tool openssl p11tool certtool keytool jarsigner jar python3 go cc; do
  command -v "$t" >/dev/null 2>&1 || { echo "FAIL prerequisite: $t is not installed"; echo "0 passed, 1 failed"; exit 1; }
done
[ -x "$BIN" ] && [ -f "$MOD" ] || { echo "FAIL prerequisite: build first (cargo build)"; echo "0 passed, 1 failed"; exit 1; }

PASS=0
FAIL=0
TAG=
check() {
  local name=$1
  shift
  if "$@" >"$W/out" 2>&1; then
    echo "PASS $TAG$name"
    PASS=$((PASS + 1))
  else
    echo "FAIL $TAG$name"
    sed 's/^/      /' "$W/out" | tail -6
    FAIL=$((FAIL + 1))
  fi
}

# A check that must be refused with a specific answer (a refusal for another reason, such
# as a missing token, does not count).
refused() {
  local name=$1 want=$2
  shift 2
  if "$@" >"$W/out" 2>&1; then
    echo "FAIL $TAG$name (was allowed)"
    FAIL=$((FAIL + 1))
  elif grep -q -- "$want" "$W/out"; then
    echo "PASS $TAG$name"
    PASS=$((PASS + 1))
  else
    echo "FAIL $TAG$name (refused, but not with \"$want\")"
    sed 's/^/      /' "$W/out" | tail -4
    FAIL=$((FAIL + 1))
  fi
}

suite() {
MODE=$1
TAG="[$MODE] "
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export FERROHSM_HOME=$W/data
unset FERROHSM_SERVER
export SO_PW=hsm-so-password DOMAIN_PW=domain-password
P=(pkcs11-tool --module "$MOD")
cd "$W"
printf 'pay 100 EUR to account 42\n' > msg.txt
head -c 32 /dev/urandom > secret

check "HSM initialised password-authenticated by the ferrohsm command" \
  "$BIN" hsm init --label e2e --auth password --so-password env:SO_PW --domain-password env:DOMAIN_PW
check "the HSM SO lets C_InitToken create partitions (HSM policy init-token)" \
  "$BIN" hsm policy set init-token on --password env:SO_PW
if [ "$MODE" != embedded ]; then
  # From here on every client reaches the HSM through the server; none opens its files.
  chmod -R go-rwx "$W/data"
  printf 'data_dir = "%s"\nsocket = "%s"\n' "$W/data" "$W/ferrohsm.sock" > server.toml
  if [ "$MODE" = tls ]; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf 'tls_listen = "127.0.0.1:%s"\n' "$PORT" >> server.toml
  fi
  "$BIN" server --config server.toml 2>"$W/server.log" &
  SRV=$!
  for _ in $(seq 300); do [ -S "$W/ferrohsm.sock" ] && break; sleep 0.1; done
  check "ferrohsm server serves the data directory on its socket" test -S "$W/ferrohsm.sock"
  export FERROHSM_SERVER=$W/ferrohsm.sock
  unset FERROHSM_HOME
  refused "the module in embedded mode is refused the served directory, naming the server" \
    "served by ferrohsm server process $SRV" env -u FERROHSM_SERVER FERROHSM_HOME="$W/data" "${P[@]}" -L
fi
check "pkcs11-tool lists one uninitialised token" \
  bash -c "${P[*]} -L | grep -q 'uninitialized'"
check "C_InitToken from pkcs11-tool creates the token" \
  "${P[@]}" --init-token --slot 1 --label e2e-token --so-pin 87654321
check "C_InitPIN from pkcs11-tool sets the user PIN" \
  "${P[@]}" --slot 1 --init-pin --so-pin 87654321 --pin 123456
check "the token keeps its slot id and label" \
  bash -c "${P[*]} -L | grep -A3 'Slot 0 (0x1)' | grep -q 'e2e-token'"
if [ "$MODE" = tls ]; then
  # The operator (on the HSM's machine, over the socket) registers the application host;
  # from here on every client is that host, reaching the server over TCP with mutual TLS.
  check "a key and a self-signed certificate for the application host" \
    "$BIN" client keygen --name e2e-host --key host.key --cert host.crt
  check "the HSM SO registers the host by its certificate" \
    "$BIN" client register --name e2e-host --cert host.crt --password env:SO_PW
  check "the HSM SO assigns it the token's partition" \
    "$BIN" client assign --client e2e-host --partition e2e-token --password env:SO_PW
  FP=$("$BIN" server --config server.toml fingerprint)
  printf 'server = "tls://127.0.0.1:%s"\nclient_cert = "%s"\nclient_key = "%s"\nserver_fingerprint = "%s"\n' \
    "$PORT" "$W/host.crt" "$W/host.key" "$FP" > p11.conf
  { sed "s/$FP/$(printf 'ab%.0s' $(seq 32))/" p11.conf; printf 'log = "%s"\n' "$W/wrong-pin.log"; } > wrong-pin.conf
  export FERROHSM_PKCS11_CONF=$W/p11.conf FERROHSM_SERVER=tls://127.0.0.1:$PORT \
    FERROHSM_TLS_CERT=$W/host.crt FERROHSM_TLS_KEY=$W/host.key FERROHSM_SERVER_FINGERPRINT=$FP
  check "over mutual TLS the module shows the host its assigned token" \
    bash -c "${P[*]} -L | grep -q e2e-token"
  check "a module pinning another server key refuses the server: no token, and its log says why" \
    bash -c "! FERROHSM_PKCS11_CONF=$W/wrong-pin.conf ${P[*]} -L | grep -q e2e-token && grep -q 'TLS handshake' $W/wrong-pin.log"
fi
U=("${P[@]}" --slot 1 --login --pin 123456)
check "RSA-2048 key pair generated on the token" "${U[@]}" --keypairgen --key-type rsa:2048 --id 01 --label rsa
check "EC P-256 key pair generated on the token" "${U[@]}" --keypairgen --key-type EC:prime256v1 --id 02 --label ec
# pkcs11-tool asks for CKA_SENSITIVE false unless told --sensitive; a partition refuses such
# keys unless its Partition SO allows them (policy non-sensitive-keys).
refused "a non-sensitive AES key (pkcs11-tool's default) is refused by the partition's policy" \
  "0x1b\|ACTION_PROHIBITED" "${U[@]}" --keygen --key-type AES:32 --id 06 --label loose
check "AES-256 key generated on the token" "${U[@]}" --keygen --key-type AES:32 --sensitive --id 03 --label aes
check "objects are visible to a new process" bash -c "${U[*]} -O | grep -c 'label:' | grep -qx 5"

check "RSA public key exported" "${U[@]}" --read-object --type pubkey --id 01 -o rsa.der
check "OpenSSL reads the RSA public key" openssl pkey -pubin -inform DER -in rsa.der -out rsa.pem
check "EC public key exported (CKA_PUBLIC_KEY_INFO, through the ferrohsm command)" \
  env UPIN=123456 "$BIN" key public --partition e2e-token --label ec --password env:UPIN --out ec.pem
check "OpenSSL reads the EC public key" openssl pkey -pubin -in ec.pem -noout
# (Not pkcs11-tool: OpenSC 0.23's --read-object of an EC public key frees the parameters it
# then builds the key from, OpenSC issue 3200; whether it works depends on the heap.)
check "GnuTLS p11tool exports the same EC public key" \
  bash -c "GNUTLS_PIN=123456 p11tool --provider '$MOD' --login --export-pubkey 'pkcs11:token=e2e-token;id=%02;type=public' | openssl pkey -pubin | cmp -s - ec.pem"

check "RSA PKCS#1 v1.5 SHA-256 signature made on the token" "${U[@]}" --sign -m SHA256-RSA-PKCS --id 01 -i msg.txt -o rsa.sig
check "OpenSSL verifies the RSA PKCS#1 v1.5 signature" openssl dgst -sha256 -verify rsa.pem -signature rsa.sig msg.txt
check "RSA PKCS#1 v1.5 SHA-1 signature made on the token (legacy, still asked for)" \
  "${U[@]}" --sign -m SHA1-RSA-PKCS --id 01 -i msg.txt -o sha1.sig
check "OpenSSL verifies the SHA-1 signature" openssl dgst -sha1 -verify rsa.pem -signature sha1.sig msg.txt
check "RSA-PSS SHA-1 signature made on the token" \
  "${U[@]}" --sign -m SHA1-RSA-PKCS-PSS --id 01 -i msg.txt -o pss1.sig
check "OpenSSL verifies the RSA-PSS SHA-1 signature" \
  openssl dgst -sha1 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:20 -verify rsa.pem -signature pss1.sig msg.txt
check "RSA-PSS SHA-256 signature made on the token" "${U[@]}" --sign -m SHA256-RSA-PKCS-PSS --id 01 -i msg.txt -o pss.sig
check "OpenSSL verifies the RSA-PSS signature" \
  openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -verify rsa.pem -signature pss.sig msg.txt
check "ECDSA P-256 SHA-256 signature made on the token" \
  "${U[@]}" --sign -m ECDSA-SHA256 --id 02 -i msg.txt -o ec.sig --signature-format openssl
check "OpenSSL verifies the ECDSA signature" openssl dgst -sha256 -verify ec.pem -signature ec.sig msg.txt
check "EC P-521 key pair generated on the token" "${U[@]}" --keypairgen --key-type EC:secp521r1 --id 04 --label p521
check "EC P-521 public key exported" \
  env UPIN=123456 "$BIN" key public --partition e2e-token --label p521 --password env:UPIN --out p521.pem
check "ECDSA P-521 SHA-512 signature made on the token" \
  "${U[@]}" --sign -m ECDSA-SHA512 --id 04 -i msg.txt -o p521.sig --signature-format openssl
check "OpenSSL verifies the P-521 signature" openssl dgst -sha512 -verify p521.pem -signature p521.sig msg.txt
printf 'pay 999 EUR to account 42\n' > forged
refused "OpenSSL rejects the ECDSA signature on altered data" "Verification failure" openssl dgst -sha256 -verify ec.pem -signature ec.sig forged

check "raw CKM_RSA_PKCS signature of arbitrary bytes made on the token" \
  "${U[@]}" --sign -m RSA-PKCS --id 01 -i msg.txt -o raw.sig
check "OpenSSL recovers exactly those bytes from the raw signature" \
  bash -c "openssl pkeyutl -verifyrecover -pubin -inkey rsa.pem -in raw.sig | cmp -s - msg.txt"
check "OpenSSL encrypts to the token's RSA key with OAEP-SHA256" \
  openssl pkeyutl -encrypt -pubin -inkey rsa.pem -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in secret -out oaep.ct
check "the token decrypts what OpenSSL encrypted" \
  "${U[@]}" --decrypt -m RSA-PKCS-OAEP --hash-algorithm SHA256 --mgf MGF1-SHA256 --id 01 -i oaep.ct -o oaep.pt
check "the plaintext round-trips" cmp secret oaep.pt

check "OpenSSL encrypts to the token's RSA key with PKCS#1 v1.5 padding" \
  openssl pkeyutl -encrypt -pubin -inkey rsa.pem -in secret -out pkcs1.ct
check "pkcs11-tool --decrypt -m RSA-PKCS recovers it on the token" \
  bash -c "${U[*]} --decrypt -m RSA-PKCS --id 01 -i pkcs1.ct -o pkcs1.pt && cmp secret pkcs1.pt"
{ printf '\000'; head -c 255 /dev/urandom; } > not-pkcs1.ct
check "a ciphertext that is not well padded decrypts to a fixed other message, never an error (implicit rejection)" \
  bash -c "${U[*]} --decrypt -m RSA-PKCS --id 01 -i not-pkcs1.ct -o junk1 && ${U[*]} --decrypt -m RSA-PKCS --id 01 -i not-pkcs1.ct -o junk2 && cmp -s junk1 junk2 && ! cmp -s junk1 secret"
check "the RSA private key is sensitive and never extractable" \
  bash -c "${U[*]} -O --type privkey --id 01 | grep -q 'Access:.*sensitive, always sensitive, never extractable'"
refused "the AES key cannot be read out" "CKR_ATTRIBUTE_SENSITIVE\|sensitive\|extract" "${U[@]}" --read-object --type secrkey --id 03 -o aes.bin
check "nothing was written by the refused read" bash -c '! [ -s aes.bin ]'
check "pkcs11-tool --test-fork: a forked child initialises the module afresh" "${P[@]}" --test-fork
SPY=/usr/lib/x86_64-linux-gnu/pkcs11-spy.so
check "OpenSC's pkcs11-spy wraps the module and logs its calls" \
  bash -c "PKCS11SPY='$MOD' PKCS11SPY_OUTPUT='$W/spy.log' pkcs11-tool --module $SPY -L | grep -q e2e-token && grep -q C_GetTokenInfo '$W/spy.log'"
check "pkcs11-tool --test: its whole self-test reports no errors" \
  bash -c "${U[*]} --test 2>&1 | tail -1 | grep -qx 'No errors'"
check "pkcs11-tool --test-ec: generate, relabel, sign and delete an EC key pair" \
  bash -c "${U[*]} --session-rw --test-ec --id 0e --key-type EC:prime256v1 2>&1 | grep -q '==> OK'"
# Threads 1 and 2 pause a second (P1) so thread 0's C_Initialize comes first; without it, a
# call that wins the race is rightly answered CKR_CRYPTOKI_NOT_INITIALIZED and the check flakes.
check "pkcs11-tool --test-threads: three threads share the module" \
  bash -c "${P[*]} --test-threads INGISLGI --test-threads P1GISLGIT0 --test-threads P1SLGISLGI 2>&1 | grep -q 'all threads have ended with CKR_OK'"
# ---- GnuTLS
export GNUTLS_PIN=123456
TOK="pkcs11:token=e2e-token"
check "GnuTLS p11tool lists the token's keys" \
  bash -c "p11tool --provider '$MOD' --login --list-all '$TOK' | grep -q 'type=private'"
printf 'cn = "certtool on ferrohsm"\nexpiration_days = 30\nsigning_key\n' > gnutls.tmpl
check "GnuTLS certtool self-signs a certificate with the token's EC key" \
  certtool --provider "$MOD" --generate-self-signed --load-privkey "$TOK;id=%02;type=private" \
    --template gnutls.tmpl --outfile gnutls.pem
check "OpenSSL verifies the certtool certificate" openssl verify -CAfile gnutls.pem gnutls.pem
check "the certtool certificate holds the token's EC public key" \
  bash -c "openssl x509 -in gnutls.pem -pubkey -noout | cmp -s - ec.pem"
refused "GnuTLS cannot export the private key" "not available\|Error" \
  p11tool --provider "$MOD" --login --export "$TOK;id=%02;type=private"

# ---- OpenSSL through the pkcs11 engine (libp11)
KEY="$TOK;id=%01;type=private;pin-value=123456"
E=(env PKCS11_MODULE_PATH="$MOD" openssl)
check "openssl req (pkcs11 engine) self-signs a CA certificate with the token's RSA key" \
  "${E[@]}" req -engine pkcs11 -keyform engine -key "$KEY" -new -x509 -days 30 -sha256 -subj /CN=e2e-ca -out ca.pem
check "the CA certificate verifies and holds the token's RSA public key" \
  bash -c "openssl verify -CAfile ca.pem ca.pem && openssl x509 -in ca.pem -pubkey -noout | cmp -s - rsa.pem"
check "a software key's certificate request" \
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=leaf -out leaf.csr
check "openssl x509 (pkcs11 engine) issues the certificate with the token's key as CA" \
  "${E[@]}" x509 -req -engine pkcs11 -CAkeyform engine -CAkey "$KEY" -CA ca.pem -in leaf.csr -days 10 -sha256 -set_serial 7 -out leaf.pem
check "OpenSSL verifies the issued certificate against the token's CA" openssl verify -CAfile ca.pem leaf.pem
check "openssl dgst (pkcs11 engine) signs with the token's RSA key" \
  "${E[@]}" dgst -engine pkcs11 -keyform engine -sign "$KEY" -sha256 -out eng.sig msg.txt
check "OpenSSL verifies the engine's signature" openssl dgst -sha256 -verify rsa.pem -signature eng.sig msg.txt

check "openssl pkeyutl -decrypt (pkcs11 engine) decrypts the PKCS#1 v1.5 ciphertext with the token's key" \
  bash -c "${E[*]} pkeyutl -engine pkcs11 -keyform engine -inkey '$KEY' -decrypt -in pkcs1.ct -out eng.pt && cmp secret eng.pt"

# ---- certificates stored on the token
openssl x509 -in ca.pem -outform DER -out ca.der
check "pkcs11-tool stores the CA certificate on the token" \
  "${U[@]}" --write-object ca.der --type cert --id 01 --label e2e-ca
check "the stored certificate reads back byte for byte" \
  bash -c "${U[*]} --read-object --type cert --id 01 -o back.der && cmp ca.der back.der"

# ---- Java 17 SunPKCS11: keytool and jarsigner
printf 'name = ferrohsm\nlibrary = %s\nslot = 1\n' "$MOD" > p11.cfg
J=(-keystore NONE -storetype PKCS11 -providerClass sun.security.pkcs11.SunPKCS11 -providerArg p11.cfg -storepass 123456)
check "Java keytool generates an EC key pair on the token and stores its certificate" \
  keytool -genkeypair "${J[@]}" -alias java-signer -keyalg EC -groupname secp256r1 -sigalg SHA256withECDSA -dname CN=java-signer -validity 30
check "Java keytool lists it as a private key entry" \
  bash -c "keytool -list ${J[*]} | grep -q 'java-signer, PrivateKeyEntry'"
mkdir -p jarsrc && printf 'hello from the jar\n' > jarsrc/hello.txt
check "a jar to sign" jar cf app.jar -C jarsrc .
check "Java jarsigner signs the jar with the token's key" \
  jarsigner "${J[@]}" -sigalg SHA256withECDSA app.jar java-signer
check "jarsigner -verify accepts the signed jar" bash -c "jarsigner -verify app.jar | grep -q 'jar verified'"
check "the jar's signature block is an ECDSA one" bash -c "jar tf app.jar | grep -q 'META-INF/JAVA-SIG.EC'"
check "Java KeyStore and Signature APIs sign on the token; the JDK verifies in software" \
  bash -c "java '$ROOT/tests/e2e/P11Sign.java' p11.cfg 123456 java-signer | grep -qx OK"

# Keys made outside the HSM enter only where the Partition SO allows it (import-keys).
check "the Partition SO allows keys in clear in the token's partition" \
  env PSO=87654321 "$BIN" partition policy set --partition e2e-token import-keys on --password env:PSO
check "partition policy show names each policy with what it guards against" \
  bash -c "'$BIN' partition policy show --partition e2e-token | grep -q '^import-keys = on .*# '"
check "Java keytool -genkeypair -keyalg RSA (made in software, stored with C_CreateObject)" \
  keytool -genkeypair "${J[@]}" -alias java-rsa -keyalg RSA -keysize 2048 -sigalg SHA256withRSA -dname CN=java-rsa -validity 30
check "Java jarsigner signs with that RSA key" \
  bash -c "cp app.jar app-rsa.jar && jarsigner ${J[*]} -sigalg SHA256withRSA app-rsa.jar java-rsa && jarsigner -verify app-rsa.jar | grep -q 'jar verified'"
check "Java: RSA/ECB/PKCS1Padding decrypts on the token, HmacSHA256 with a Java key and KeyStore.setEntry of an AES key" \
  bash -c "java '$ROOT/tests/e2e/P11Keys.java' p11.cfg 123456 e2e-ca | grep -qx OK"

# ---- python-pkcs11, several threads
check "python-pkcs11: 4 threads sign and verify on the token at once" \
  python3 "$ROOT/tests/e2e/pkcs11_threads.py" "$MOD" e2e-token 123456 02 4 25
check "python-pkcs11: the private key's value is sensitive" python3 -c "
import pkcs11, sys
t = pkcs11.lib('$MOD').get_token(token_label='e2e-token')
with t.open(user_pin='123456') as s:
    k = s.get_key(pkcs11.ObjectClass.PRIVATE_KEY, id=bytes([2]))
    try:
        k[pkcs11.Attribute.VALUE]
    except pkcs11.exceptions.AttributeSensitive:
        sys.exit(0)
sys.exit(1)"

check "the Partition SO allows non-sensitive secret keys" \
  env PSO=87654321 "$BIN" partition policy set --partition e2e-token non-sensitive-keys on --password env:PSO
check "python-pkcs11 makes a non-sensitive, extractable AES key" python3 -c "
import pkcs11
t = pkcs11.lib('$MOD').get_token(token_label='e2e-token')
with t.open(user_pin='123456', rw=True) as s:
    k = s.generate_key(pkcs11.KeyType.AES, 256, id=bytes([5]), label='open', store=True,
        template={pkcs11.Attribute.SENSITIVE: False, pkcs11.Attribute.EXTRACTABLE: True})
    open('open.py.bin', 'wb').write(k[pkcs11.Attribute.VALUE])"
check "pkcs11-tool reads the same value back" \
  bash -c "${U[*]} --read-object --type secrkey --id 05 -o open.bin && [ \$(stat -c %s open.bin) = 32 ] && cmp open.bin open.py.bin"
refused "a wrong user PIN is refused" "CKR_PIN_INCORRECT" "${P[@]}" --slot 1 --login --pin 000000 -O
check "the right PIN still works after a wrong one" "${U[@]}" -O
if [ "$MODE" = tls ]; then
  # An HA group: a partition on this server and the same partition on two more HSMs of the
  # same cloning domain, each served over mutual TLS to the same host, seen as one token.
  # C_InitToken's token is in no cloning domain (nothing it is given opens one), so the
  # group's partitions are made with the domain password.
  OP=("$BIN" --server "$W/ferrohsm.sock")   # the operator, on the HSM's machine
  check "C_InitToken's token is in no cloning domain" \
    bash -c "${OP[*]} partition show --partition e2e-token | grep -q 'domain: *none'"
  check "a partition in the HSM's cloning domain (its domain password given), its CO, the host assigned" bash -c "
    export PSO=87654321 UPIN=123456
    ${OP[*]} partition create --label ha-token --password env:SO_PW &&
    ${OP[*]} partition init --partition ha-token --so-password env:PSO --domain-password env:DOMAIN_PW &&
    ${OP[*]} role init --partition ha-token --role co --password env:PSO --new-password env:UPIN &&
    ${OP[*]} client assign --client e2e-host --partition ha-token --password env:SO_PW"
  refused "a wrong domain password is refused" "not this HSM's cloning domain" \
    env PSO=87654321 "${OP[@]}" partition init --partition ha-token --so-password env:PSO --domain-password env:PSO --confirm-destroy --password env:PSO
  HA_PIDS=()
  MEMBERS=$(printf 'ha_member = "tls://127.0.0.1:%s ha-token %s"' "$PORT" "$FP")
  for n in 2 3; do
    D=$W/ha$n
    mkdir -p "$D"
    HPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    S=("$BIN" --server "$D/s.sock")
    env -u FERROHSM_SERVER "$BIN" --data-dir "$D/data" hsm init --label ha$n --auth password --so-password env:SO_PW --domain-password env:DOMAIN_PW >/dev/null
    chmod -R go-rwx "$D/data"
    printf 'data_dir = "%s"\nsocket = "%s"\ntls_listen = "127.0.0.1:%s"\n' "$D/data" "$D/s.sock" "$HPORT" > "$D/server.toml"
    "$BIN" server --config "$D/server.toml" 2>"$D/server.log" &
    HA_PIDS+=($!)
    for _ in $(seq 300); do [ -S "$D/s.sock" ] && break; sleep 0.1; done
    check "HA member $n: a partition of the same cloning domain, its CO, the host registered" bash -c "
      export PSO=87654321 UPIN=123456
      ${S[*]} partition create --label ha-token --password env:SO_PW &&
      ${S[*]} partition init --partition ha-token --so-password env:PSO --domain-password env:DOMAIN_PW &&
      ${S[*]} role init --partition ha-token --role co --password env:PSO --new-password env:UPIN &&
      ${S[*]} client register --name e2e-host --cert host.crt --password env:SO_PW &&
      ${S[*]} client assign --client e2e-host --partition ha-token --password env:SO_PW"
    MEMBERS=$(printf '%s\nha_member = "tls://127.0.0.1:%s ha-token %s"' "$MEMBERS" "$HPORT" "$("$BIN" server --config "$D/server.toml" fingerprint)")
  done
  printf 'ha_group = "e2e-ha"\n%s\nclient_cert = "%s"\nclient_key = "%s"\nlog = "%s"\n' \
    "$MEMBERS" "$W/host.crt" "$W/host.key" "$W/ha.log" > ha.conf
  H=(env FERROHSM_PKCS11_CONF="$W/ha.conf" pkcs11-tool --module "$MOD")
  HU=("${H[@]}" --slot 1 --login --pin 123456)
  check "pkcs11-tool sees the HA group of three as one token" \
    bash -c "${H[*]} -L | grep -c 'token label' | grep -qx 1 && ${H[*]} -L | grep -q e2e-ha"
  check "an EC key pair generated through the group" \
    "${HU[@]}" --keypairgen --key-type EC:prime256v1 --id 09 --label ha-ec
  on_members() {
    local c=0
    for s in "$W/ferrohsm.sock" "$W/ha2/s.sock" "$W/ha3/s.sock"; do
      UPIN=123456 "$BIN" --server "$s" key list --partition ha-token --password env:UPIN 2>/dev/null | grep -q ha-ec && c=$((c + 1))
    done
    echo "$c"
  }
  check "the key pair is on at least two of the three members" test "$(on_members)" -ge 2
  check "its public key, read from one member" \
    env UPIN=123456 "$BIN" --server "$W/ha2/s.sock" key public --partition ha-token --label ha-ec --password env:UPIN --out ha-ec.pem
  check "ECDSA through the group, verified by OpenSSL" bash -c "
    ${HU[*]} --sign -m ECDSA-SHA256 --id 09 -i msg.txt -o ha.sig --signature-format openssl &&
    openssl dgst -sha256 -verify ha-ec.pem -signature ha.sig msg.txt"
  kill -9 "${HA_PIDS[0]}"
  check "a member killed with SIGKILL: the group signs on, OpenSSL verifies" bash -c "
    for i in 1 2 3 4; do ${HU[*]} --sign -m ECDSA-SHA256 --id 09 -i msg.txt -o ha\$i.sig --signature-format openssl &&
      openssl dgst -sha256 -verify ha-ec.pem -signature ha\$i.sig msg.txt || exit 1; done"
  refused "ferrohsm ha show reports the killed member down (exit 6)" "down" \
    env UPIN=123456 "$BIN" ha show --config ha.conf --password env:UPIN
  kill "${HA_PIDS[1]}" 2>/dev/null
fi
if [ "$MODE" != embedded ]; then
  kill -TERM "$SRV"
  wait "$SRV"
  STOPPED=$?
  SRV=
  check "SIGTERM stops the server cleanly (exit 0)" test "$STOPPED" = 0
  check "the server removed its socket" test ! -e "$W/ferrohsm.sock"
  unset FERROHSM_SERVER FERROHSM_PKCS11_CONF FERROHSM_TLS_CERT FERROHSM_TLS_KEY FERROHSM_SERVER_FINGERPRINT
  export FERROHSM_HOME=$W/data
fi
check "the Auditor, imprinted afterwards, sees the token's whole history" \
  bash -c "'$BIN' --ped-dir '$W/ped' audit init --auth password --new-password env:SO_PW >/dev/null && '$BIN' --ped-dir '$W/ped' audit show --password env:SO_PW | grep -q 'partition-create .*e2e-token'"

# A C application of a card-management system, compiled against p11-kit's pkcs11.h and the
# README's own declarations of the GlobalPlatform vendor mechanisms (extracted as they stand).
python3 -c "import sys; s=open(sys.argv[1]).read(); i=s.index('\x60\x60\x60c\n#define CKM_FERROHSM_GP_KCV '); b=s[i+5:]; print(b[:b.index('\x60\x60\x60')])" \
  "$ROOT/README.md" > gp_decls.h
check "a C application builds against the README's GlobalPlatform declarations" \
  cc -std=c99 -Wall -Werror -I/usr/include/p11-kit-1 -I"$W" -o gp_client "$ROOT/tests/e2e/gp_client.c" -ldl
check "it generates a master key set, finds its three keys, and prints their check values" \
  bash -c "./gp_client '$MOD' 123456 c-issuer 0000112233445566778A > gp.out && grep -q '^aes-cmac [0-9A-F]\{10\}$' gp.out"
check "the ferrohsm command reports the same check values, the card key's too" bash -c "
  G=(env UPIN=123456 '$BIN' gp kcv --partition e2e-token --set c-issuer --role enc --password env:UPIN) &&
  grep -qx \"aes-gp \$(\"\${G[@]}\" --method aes-gp | cut -d' ' -f1)\" gp.out &&
  grep -qx \"aes-cmac \$(\"\${G[@]}\" --method aes-cmac | cut -d' ' -f1)\" gp.out &&
  grep -qx \"card-enc \$(\"\${G[@]}\" --method aes-gp --kdd 0000112233445566778A --diversify kdf3 | cut -d' ' -f1)\" gp.out"

# The audit export read by Go's golang.org/x/mod/sumdb/note and sumdb/tlog (Debian's
# golang-golang-x-mod-dev), with a witness's C2SP cosignature on a checkpoint it carries.
A=("$BIN" --ped-dir "$W/ped" audit)
GO=(env GOCACHE="$W/gocache" GO111MODULE=off GOPATH=/usr/share/gocode go run "$ROOT/tests/e2e/tlogcheck/main.go")
check "a witness cosigns a checkpoint (C2SP tlog-cosignature/v1) and the Auditor submits it" bash -c "
  ${A[*]} public-key --out hsm-audit.vkey >/dev/null &&
  ${A[*]} witness keygen --name e2e.example/witness --out w.key > w.vkey &&
  ${A[*]} witness add --public-key w.vkey --password env:SO_PW >/dev/null &&
  ${A[*]} checkpoint --out cp.txt --password env:SO_PW >/dev/null &&
  ${A[*]} witness cosign --key w.key --checkpoint cp.txt --public-key hsm-audit.vkey >/dev/null &&
  ${A[*]} witness submit --checkpoint cp.txt --password env:SO_PW | grep -q e2e.example/witness"
check "the export verifies offline with that witness's cosignature required" bash -c "
  ${A[*]} export --out audit.json --earlier cp.txt --password env:SO_PW >/dev/null &&
  '$ROOT/target/debug/ferrohsm-audit' verify audit.json --public-key hsm-audit.vkey --earlier cp.txt --witness w.vkey --require-cosignatures 1 | grep -q 'cosigned by: e2e.example/witness'"
check "Go's sumdb/note opens the checkpoints with the HSM's key and sumdb/tlog checks every proof" \
  bash -c "${GO[*]} audit.json hsm-audit.vkey | grep -q '^OK size=.* earlier=[1-9]'"
sed 's/partition-create/partition-creatf/' audit.json > altered.json
refused "Go's sumdb/tlog catches a changed record" "FAILED: record" "${GO[@]}" altered.json hsm-audit.vkey

[ -n "${SRV:-}" ] && kill "$SRV" 2>/dev/null
SRV=
cd "$ROOT"
rm -rf "$W"
}

for m in $MODES; do
  suite "$m"
done
echo
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
