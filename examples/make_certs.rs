//! Makes throwaway certificates for the TLS tests, so no key is ever committed: two CAs, a
//! server certificate for localhost and 127.0.0.1, and a client certificate from each CA.
//!
//! `cargo run --release --example make_certs -- DIR` writes `ca.pem`, `server.pem`, `server.key`,
//! `client.pem`, `client.key` (from `ca`), and `other_ca.pem`, `other_client.pem`,
//! `other_client.key` (from a CA the server does not trust).

use std::path::Path;

fn ca(name: &str) -> Result<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)
}

fn leaf(
    issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    names: &[&str],
) -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    Ok((params.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: make_certs DIR")?;
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text);
    let trusted = ca("tensorserve test CA")?;
    let other = ca("an untrusted CA")?;
    let (server, server_key) = leaf(&trusted, &["localhost", "127.0.0.1"])?;
    let (client, client_key) = leaf(&trusted, &["client"])?;
    let (other_client, other_client_key) = leaf(&other, &["intruder"])?;
    write("ca.pem", &trusted.pem())?;
    write("server.pem", &server)?;
    write("server.key", &server_key)?;
    write("client.pem", &client)?;
    write("client.key", &client_key)?;
    write("other_ca.pem", &other.pem())?;
    write("other_client.pem", &other_client)?;
    write("other_client.key", &other_client_key)?;
    eprintln!("wrote test certificates to {}", dir.display());
    Ok(())
}
