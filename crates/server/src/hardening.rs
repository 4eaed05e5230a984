//! What the server does to its own process so that keys stay inside it: no core dumps, no
//! ptrace attachment by other processes of the same user, key memory kept out of swap where
//! the system allows, and files created owner-only.

use tracing::{info, warn};

/// Applies every measure; those the system refuses (say, `mlockall` over the memlock limit)
/// are logged and the server runs without them, except the ones keys depend on (core dumps
/// and ptrace), which fail the start.
pub fn harden() -> std::io::Result<()> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    // Core files would hold every unsealed key.
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    // Not dumpable: no core dump either way, and other processes of this user cannot ptrace
    // it or read /proc/<pid>/mem.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    // Files the server makes (the store, its journal, the socket) are the owner's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Locking all memory under a small RLIMIT_MEMLOCK would make later allocations fail, so
    // lock only where the limit leaves room; ONFAULT locks pages as they are used, so idle
    // thread stacks cost nothing.
    let limit = rustix::process::getrlimit(Resource::Memlock);
    let roomy = limit.current.is_none_or(|c| c >= 1 << 30);
    if roomy {
        use rustix::mm::MlockAllFlags as F;
        match rustix::mm::mlockall(F::CURRENT | F::FUTURE | F::ONFAULT) {
            Ok(()) => info!("memory locked: key material stays out of swap"),
            Err(e) => warn!(error = %e, "mlockall refused; key material may be swapped"),
        }
    } else {
        warn!(
            limit = ?limit.current,
            "RLIMIT_MEMLOCK is small (raise LimitMEMLOCK); memory not locked, key material may be swapped"
        );
    }
    Ok(())
}

/// Whether this process may be dumped or traced (false after [`harden`]).
pub fn dumpable() -> bool {
    !matches!(
        rustix::process::dumpable_behavior(),
        Ok(rustix::process::DumpableBehavior::NotDumpable)
    )
}
