//! How a store notices other processes' commits without a system call: a shared, read-only
//! view of the WAL index's header (see [`WalHeader`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A read-only view of the start of a file that other processes rewrite in place (the WAL
/// index), read without a system call. Mapping memory needs `unsafe`, which this crate
/// forbids: the PKCS#11 module, where every operation pays for the check, installs a maker
/// ([`install_shared_view`]); without one the store reads the file with `pread`.
pub trait SharedView: Send + Sync {
    /// The first 48 bytes as they are now, as six native-order words. The copy may be torn by
    /// a concurrent writer; the caller only ever treats a header equal to an earlier one as
    /// "nothing committed".
    fn header(&self) -> WalHeader;
}

/// Makes a [`SharedView`] of an open WAL-index file, or `None` when it cannot (the file is
/// shorter than the view, or mapping failed). Called only while a connection of this process
/// has the file open, so that SQLite neither truncates nor replaces it meanwhile.
pub type SharedViewMaker = fn(&std::fs::File) -> Option<Box<dyn SharedView>>;

static SHARED_VIEW_MAKER: std::sync::OnceLock<SharedViewMaker> = std::sync::OnceLock::new();

/// Installs the maker of [`SharedView`]s (the first call wins).
pub fn install_shared_view(maker: SharedViewMaker) {
    let _ = SHARED_VIEW_MAKER.set(maker);
}

/// One WAL-index file: a read-only handle and, once made, a view of its header.
pub struct ShmFile {
    /// Declared first so that it is dropped (unmapped) before the handle closes.
    view: std::sync::OnceLock<Box<dyn SharedView>>,
    file: std::fs::File,
}

impl ShmFile {
    /// The header as it is now, if it can be read.
    pub(super) fn header(&self) -> Option<WalHeader> {
        if let Some(v) = self.view.get() {
            return Some(v.header());
        }
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 48];
        self.file.read_exact_at(&mut b, 0).ok()?;
        let mut h: WalHeader = [0; 6];
        for (w, chunk) in h.iter_mut().zip(b.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *w = u64::from_ne_bytes(word);
        }
        Some(h)
    }

    /// Makes the view if a maker is installed and none exists yet (the caller's connection
    /// has just read the database, so SQLite has the file open and sized).
    pub(super) fn try_view(&self) {
        if self.view.get().is_none() {
            if let Some(view) = SHARED_VIEW_MAKER.get().and_then(|make| make(&self.file)) {
                let _ = self.view.set(view);
            }
        }
    }
}

/// Read-only handles on WAL-index files, one per file (path and inode). A handle is closed
/// only once the file has been replaced and no store uses it: closing any descriptor of a
/// file drops every POSIX lock the process holds on it, SQLite's own included, so a handle
/// opened and closed per store would break SQLite's locking for the other connections.
static SHM_FILES: Mutex<Vec<(PathBuf, u64, Arc<ShmFile>)>> = Mutex::new(Vec::new());

/// The shared handle on the WAL index of the database at `db`, which a connection of the
/// caller holds open (so the file cannot be deleted and replaced meanwhile).
pub(super) fn shm_handle(db: &Path) -> Option<Arc<ShmFile>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = PathBuf::from(format!("{}-shm", db.display()));
    let ino = std::fs::metadata(&path).ok()?.ino();
    let mut files = SHM_FILES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, f)) = files.iter().find(|(p, i, _)| *p == path && *i == ino) {
        return Some(f.clone());
    }
    // O_NOATIME: without a view this file is read once per operation; updating its access
    // time each time would cost more than the read.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(&path)
        .ok()?;
    if f.metadata().ok()?.ino() != ino {
        // Replaced between the two looks: keep the handle (closing it is what must not
        // happen) but do not use it.
        std::mem::forget(f);
        return None;
    }
    let f = Arc::new(ShmFile {
        view: std::sync::OnceLock::new(),
        file: f,
    });
    // An entry for an older file at this path: every connection to that file is gone (it
    // was deleted when the last one closed); stores still holding it close it when dropped.
    files.retain(|(p, _, _)| *p != path);
    files.push((path, ino, f.clone()));
    Some(f)
}

/// The first copy of the WAL-index header (SQLite's documented `-shm` layout: 48 bytes at
/// offset 0, rewritten by every commit with its change counter, frame count, salts and
/// checksum), as six native-order words so that comparing two is six word compares. Equal
/// headers mean no commit in between; a torn or unreadable header only sends the caller to
/// the full check.
pub type WalHeader = [u64; 6];
