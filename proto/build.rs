//! Generates the gRPC code for `modelfleet/engine/v1/*.proto` and the descriptor set that
//! the engine's server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("modelfleet_engine_v1_descriptor.bin"))
        .compile_protos(&["modelfleet/engine/v1/generation.proto"], &["."])?;
    println!("cargo:rerun-if-changed=modelfleet");
    Ok(())
}
