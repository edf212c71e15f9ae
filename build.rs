//! Compiles `proto/` with protox (pure Rust: no protoc on the machine is needed).

use prost::Message;
use std::path::{Path, PathBuf};

/// Every .proto file under `dir`, sorted so builds are reproducible.
fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("proto dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            proto_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    proto_files(Path::new("proto"), &mut files);
    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set, and reflection needs it.
    std::fs::write(out.join("tensorserve_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Request bytes (tensor_content, string_val) are borrowed from the receive buffer.
        .bytes(".")
        // Sorted maps give deterministic iteration and TF Serving's error message order.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
