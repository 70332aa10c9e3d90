//! Compiles the `.proto` files with protox, a protobuf compiler written in Rust, so building the
//! workspace needs no system `protoc`. The encoded descriptor set is kept for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "userctl/user/v1/user.proto",
    "userctl/gateway/v1/gateway.proto",
    "userctl/cache/v1/cache.proto",
    "userctl/bench/v1/echo.proto",
    "userctl/requests/v1/requests.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("userctl_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure().compile_fds(descriptors)?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
