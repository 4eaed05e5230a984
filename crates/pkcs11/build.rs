//! Links the module with `-z nodelete`: libraries it uses (aws-lc, Rust's own thread locals)
//! register thread-exit destructors, and an application that `dlclose`s the module must not
//! leave those pointing at unmapped code (a crash at thread exit, seen with real clients).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
