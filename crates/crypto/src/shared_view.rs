//! A memory map of the start of the store's WAL index (`hsm.db-shm`), so that the check every
//! operation makes ("has any process committed since the keys were loaded?") is a few loads
//! instead of a `pread`. The engine decides what the bytes mean
//! ([`ferrohsm_core::store::SharedView`]); this is the mapping and nothing else.

use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use ferrohsm_core::store::{SharedView, WalHeader};

/// Bytes mapped: one page, far more than the header, and no more than SQLite's smallest WAL
/// index (32 KiB), which the file is already grown to while a connection uses it.
const MAP_LEN: usize = 4096;

/// A read-only, shared mapping of the first [`MAP_LEN`] bytes of a file.
struct Mapped(*const AtomicU64);

// SAFETY: the mapping is read-only and read only through atomics; the pointer is not tied
// to a thread, and unmapping happens once, in `drop`, when no reference remains.
unsafe impl Send for Mapped {}
// SAFETY: as above: shared access is atomic loads only.
unsafe impl Sync for Mapped {}

impl SharedView for Mapped {
    fn header(&self) -> WalHeader {
        let mut h: WalHeader = [0; 6];
        for (i, w) in h.iter_mut().enumerate() {
            // SAFETY: `self.0` points at the start of a live mapping of MAP_LEN (≥ 48) bytes,
            // page-aligned, so each of the six 8-byte words is in bounds and aligned. Other
            // processes write these bytes (SQLite's header update); atomic loads make that a
            // race on values, not undefined behaviour, and a torn header only sends the
            // engine to its full check.
            *w = unsafe { &*self.0.add(i) }.load(Ordering::Relaxed);
        }
        // What the caller reads after deciding "nothing changed" must not move before the
        // header loads.
        fence(Ordering::Acquire);
        h
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `map` mapped; no reference into it outlives
        // `self` (header() copies out).
        unsafe {
            libc::munmap(self.0 as *mut libc::c_void, MAP_LEN);
        }
    }
}

/// Maps the start of `file` read-only, or `None` when the file is shorter than the mapping
/// (reading past its end would raise SIGBUS) or the map fails. The engine calls this only
/// while one of this process's SQLite connections has the file open: SQLite truncates a WAL
/// index only when it is the first to open it, and deletes it only when the last connection
/// closes, so the file keeps at least this length for as long as the mapping is read. (SQLite
/// maps the same file the same way; a truncation by hand would fault SQLite first.)
pub fn map(file: &std::fs::File) -> Option<Box<dyn SharedView>> {
    if file.metadata().ok()?.len() < MAP_LEN as u64 {
        return None;
    }
    // SAFETY: a fresh read-only shared mapping of an open descriptor; no existing memory is
    // affected. The result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MAP_LEN,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED || p.is_null() {
        return None;
    }
    Some(Box::new(Mapped(p as *const AtomicU64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_view_follows_writes_made_through_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-shm");
        let mut w = std::fs::File::create(&path).unwrap();
        w.write_all(&[0u8; MAP_LEN]).unwrap();
        let r = std::fs::File::open(&path).unwrap();
        let view = map(&r).expect("mapped");
        assert_eq!(view.header(), [0u64; 6]);
        w.write_all_at(&[0xa5; 3], 45).unwrap();
        let mut want = [0u8; 8];
        want[5..].copy_from_slice(&[0xa5; 3]);
        assert_eq!(view.header(), [0, 0, 0, 0, 0, u64::from_ne_bytes(want)]);
    }

    #[test]
    fn a_file_shorter_than_the_view_is_not_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short-shm");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let r = std::fs::File::open(&path).unwrap();
        assert!(map(&r).is_none());
    }
}
