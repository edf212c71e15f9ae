//! Writes the FileDescriptorSet tensorserve was built with, for the descriptor-identity check.
//!
//! `cargo run --release --example dump_descriptors -- OUT.pb`

fn main() -> std::io::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "tensorserve_descriptors.pb".into());
    std::fs::write(&out, tensorserve::proto::FILE_DESCRIPTOR_SET)?;
    eprintln!("wrote {} bytes to {out}", tensorserve::proto::FILE_DESCRIPTOR_SET.len());
    Ok(())
}
