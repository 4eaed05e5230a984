//! A real (uninitialised) HSM in a temporary directory, made once per fuzzing process and
//! shared by its runs.

use std::sync::{Mutex, OnceLock};

use ferrohsm_core::api::Embedded;

pub struct Lab {
    _dir: tempfile::TempDir,
    pub api: Mutex<Embedded>,
}

pub fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let hsm = ferrohsm_core::Hsm::open_or_create(dir.path()).expect("hsm");
        Lab {
            api: Mutex::new(Embedded::with(hsm, Default::default())),
            _dir: dir,
        }
    })
}
