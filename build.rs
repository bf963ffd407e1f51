//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates
//! the tonic service and prost messages, plus the descriptor set that server
//! reflection serves (with source info, so `grpcurl describe` shows comments).

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/partnerevents/v1/partner_events.proto",
        "proto/partnerevents/v1/admin.proto",
    ];
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(protos)?
        .file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("partnerevents_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
