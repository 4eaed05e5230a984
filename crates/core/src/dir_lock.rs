//! Who may open a data directory. A `ferrohsm server` owns its directory: it takes an
//! exclusive lock on `<dir>/lock` and writes its process id there. Embedded users (the CLI
//! and the PKCS#11 module run without a server) take a shared lock, so several of them may
//! work on one directory at once, but never beside a server, and a server never starts beside
//! them. Both refusals name the process that holds the directory.
//!
//! A process holds at most one lock per directory, however many store handles it opens:
//! the lock is kept while any [`DirLock`] for it is alive. `flock(2)` locks belong to the
//! open file, so a child made by `fork()` shares its parent's lock, and the kernel drops the
//! lock when the last holder exits, even by `kill -9`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{HsmError, Result};

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "lock";

/// How a directory is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Embedded use: shared with other embedded users, refused beside a server.
    Shared,
    /// A server: nobody else may open the directory.
    Exclusive,
}

/// A held lock on a data directory; the lock is released when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct DirLock(Arc<Held>);

#[derive(Debug)]
struct Held {
    mode: LockMode,
    // Kept open for the lock's lifetime: closing it releases the lock.
    file: File,
}

impl DirLock {
    /// How this process holds the directory.
    pub fn mode(&self) -> LockMode {
        self.0.mode
    }

    /// A server says where it listens: the lock file then holds its pid and its socket, so
    /// that the CLI pointed at the directory finds the server ([`served_by`]).
    pub fn announce(&self, socket: &Path) -> Result<()> {
        write_holder(&self.0.file, Some(socket)).map_err(|e| HsmError::io(LOCK_FILE, e))
    }
}

/// Who holds a directory exclusively, as its lock file says: the server's pid, then the
/// socket it listens on once it has announced one. One line each; this is the one writer
/// ([`write_holder`]) and the one reader ([`read_holder`]) of that format.
struct Holder {
    pid: Option<u32>,
    socket: Option<PathBuf>,
}

fn write_holder(mut f: &File, socket: Option<&Path>) -> std::io::Result<()> {
    let mut text = format!("{}\n", std::process::id());
    if let Some(s) = socket {
        text.push_str(&format!("{}\n", s.display()));
    }
    f.set_len(0)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut lines = text.lines().map(str::trim);
    Holder {
        pid: lines.next().and_then(|l| l.parse().ok()),
        socket: lines.next().filter(|l| !l.is_empty()).map(PathBuf::from),
    }
}

/// The server holding `dir`, if one does: its pid and the socket it announced.
pub fn served_by(dir: &Path) -> Option<(u32, Option<PathBuf>)> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new().read(true).open(&path).ok()?;
    match file.try_lock_shared() {
        // Nobody holds it exclusively: no server (the shared lock goes with `file`).
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => {
            let h = read_holder(&mut file);
            Some((h.pid?, h.socket))
        }
        Err(TryLockError::Error(_)) => None,
    }
}

/// The locks this process holds, by canonical directory (weak: the stores own them).
static HELD: Mutex<Vec<(PathBuf, Weak<Held>)>> = Mutex::new(Vec::new());

fn canonical(dir: &Path) -> Result<PathBuf> {
    dir.canonicalize().map_err(|e| HsmError::io(dir, e))
}

/// Takes (or joins this process's) lock on `dir`, which must exist. A process that already
/// holds the directory in either mode gets that lock back: a server opens its own store
/// handles under its exclusive lock.
pub fn acquire(dir: &Path, mode: LockMode) -> Result<DirLock> {
    let key = canonical(dir)?;
    // The table holds only weak references; a poisoned table is still consistent.
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.retain(|(_, w)| w.strong_count() > 0);
    if let Some(h) = held
        .iter()
        .find(|(p, _)| *p == key)
        .and_then(|(_, w)| w.upgrade())
    {
        if mode == LockMode::Exclusive && h.mode == LockMode::Shared {
            return Err(HsmError::InUse(format!(
                "{} is open in this process for embedded use; a server cannot take it",
                dir.display()
            )));
        }
        return Ok(DirLock(h));
    }
    let path = key.join(LOCK_FILE);
    let mut file = open_lock_file(&path)?;
    let taken = match mode {
        LockMode::Shared => file.try_lock_shared(),
        LockMode::Exclusive => file.try_lock(),
    };
    match taken {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(refusal(dir, &path, &mut file, mode)),
        Err(TryLockError::Error(e)) => return Err(HsmError::io(&path, e)),
    }
    if mode == LockMode::Exclusive {
        // Tell whoever is refused which process to look for.
        write_holder(&file, None).map_err(|e| HsmError::io(&path, e))?;
    }
    let h = Arc::new(Held { mode, file });
    held.push((key, Arc::downgrade(&h)));
    Ok(DirLock(h))
}

fn open_lock_file(path: &Path) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(|e| HsmError::io(path, e))
}

/// The refusal, naming the holder: a server's pid is in the file; embedded holders are found
/// in the kernel's lock table.
fn refusal(dir: &Path, path: &Path, file: &mut File, wanted: LockMode) -> HsmError {
    match wanted {
        LockMode::Shared => {
            let h = read_holder(file);
            let who = match h.pid {
                Some(pid) => format!("ferrohsm server process {pid}"),
                None => "a ferrohsm server".to_string(),
            };
            let at = h
                .socket
                .map(|s| format!(" on {}", s.display()))
                .unwrap_or_default();
            HsmError::InUse(format!(
                "{} is served by {who}{at}; go through the server, or stop it to open the \
                 directory directly",
                dir.display()
            ))
        }
        LockMode::Exclusive => {
            let pids = holders(path);
            let who = if pids.is_empty() {
                "another process".to_string()
            } else {
                format!(
                    "process {}",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            HsmError::InUse(format!(
                "{} is already open ({who} holds its lock: another server, or embedded use by \
                 the CLI or the PKCS#11 module); stop it first",
                dir.display()
            ))
        }
    }
}

/// Processes holding a flock on `path`, from `/proc/locks` (Linux; empty elsewhere).
fn holders(path: &Path) -> Vec<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return Vec::new();
        };
        let Ok(table) = std::fs::read_to_string("/proc/locks") else {
            return Vec::new();
        };
        let ino = meta.ino().to_string();
        let mut pids: Vec<u32> = table
            .lines()
            .filter_map(|line| {
                // "1: FLOCK  ADVISORY  READ  1234 08:01:5678 0 EOF"
                let f: Vec<&str> = line.split_whitespace().collect();
                let (kind, pid, dev_ino) = (f.get(1)?, f.get(4)?, f.get(5)?);
                (*kind == "FLOCK" && dev_ino.rsplit(':').next() == Some(ino.as_str()))
                    .then(|| pid.parse().ok())
                    .flatten()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Vec::new()
    }
}

/// Refuses a data directory, or a file in it, that users other than the owner may read or
/// write: a server will not serve keys from a directory anyone else can copy.
pub fn check_private(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut paths = vec![dir.to_path_buf()];
        for entry in std::fs::read_dir(dir).map_err(|e| HsmError::io(dir, e))? {
            let entry = entry.map_err(|e| HsmError::io(dir, e))?;
            paths.push(entry.path());
        }
        for p in paths {
            let meta = std::fs::symlink_metadata(&p).map_err(|e| HsmError::io(&p, e))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(HsmError::Refused(format!(
                    "{} has mode {mode:03o}: other users could read or change it; `chmod {} {}` \
                     and start again",
                    p.display(),
                    if meta.is_dir() { "700" } else { "600" },
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_joins_its_own_lock_and_a_shared_holder_blocks_a_server_here() {
        let d = tempfile::tempdir().unwrap();
        let a = acquire(d.path(), LockMode::Shared).unwrap();
        let b = acquire(d.path(), LockMode::Shared).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let e = acquire(d.path(), LockMode::Exclusive).unwrap_err();
        assert!(matches!(e, HsmError::InUse(_)), "{e}");
        drop((a, b));
        let x = acquire(d.path(), LockMode::Exclusive).unwrap();
        assert_eq!(x.mode(), LockMode::Exclusive);
        // A store handle opened later in the server's process joins the exclusive lock.
        assert_eq!(
            acquire(d.path(), LockMode::Shared).unwrap().mode(),
            LockMode::Exclusive
        );
        let pid: u32 = std::fs::read_to_string(d.path().join(LOCK_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, std::process::id());
    }

    #[test]
    fn private_check_names_the_readable_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let f = d.path().join("device.key");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(d.path()).unwrap_err().to_string();
        assert!(e.contains("device.key") && e.contains("644"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_private(d.path()).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_private(d.path()).is_err());
    }
}
