//! Generates the protocol's Rust types from proto/ferrohsm.proto with a vendored protoc, so
//! a build needs nothing installed.
fn main() -> std::io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(std::io::Error::other)?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/ferrohsm.proto");
    prost_build::compile_protos(&["proto/ferrohsm.proto"], &["proto"])
}
