//! The checkpoint the server keeps outside the data directory (`checkpoint_file`): written
//! whenever the log grows, and checked at start, so that an older copy of the data directory
//! put back (which brings its own, older, consistent log) is refused rather than served.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferrohsm_core::{Hsm, HsmError};
use tracing::{debug, error, info, warn};

use crate::listener::Shared;
use crate::ServerError;

/// Refuses to go on when the log does not extend the checkpoint kept at `path` (nothing to
/// check before the first one is kept). The refusal is tamper, recorded by the engine.
pub fn check(hsm: &mut Hsm, path: &Path) -> Result<(), ServerError> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    let note = match std::fs::read_to_string(path) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!(file = %path.display(), "no checkpoint kept yet; one will be");
            return Ok(());
        }
        Err(e) => {
            return Err(ServerError::Io {
                what: format!("reading {}", path.display()),
                source: e,
            })
        }
    };
    match hsm.check_extends(&note) {
        Ok(size) => {
            info!(file = %path.display(), size, "the log extends the checkpoint kept outside the data directory");
            Ok(())
        }
        Err(e) => {
            error!(file = %path.display(), error = %e, "refusing to serve: the log does not extend the checkpoint kept outside the data directory");
            Err(e.into())
        }
    }
}

/// Keeps the file up to date: the latest checkpoint, written whole (a temporary file, synced,
/// renamed) at most once a second, until the server stops.
pub fn keep(shared: Arc<Shared>) {
    let path = shared.config.checkpoint_file.clone();
    if path.as_os_str().is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("checkpoint-file".into())
        .spawn(move || {
            let mut last = String::new();
            loop {
                let stopping = shared.stopping.load(Ordering::SeqCst);
                match shared.with_registry(|h| h.latest_checkpoint()) {
                    Ok(Some(note)) if note != last => match write(&path, &note) {
                        Ok(()) => last = note,
                        Err(e) => warn!(file = %path.display(), error = %e, "the checkpoint file could not be written"),
                    },
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "no checkpoint to keep"),
                }
                if stopping {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "the checkpoint file will not be kept");
    }
}

fn write(path: &Path, note: &str) -> Result<(), HsmError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| HsmError::io(&tmp, e))?;
    f.write_all(note.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| HsmError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| HsmError::io(path, e))
}
