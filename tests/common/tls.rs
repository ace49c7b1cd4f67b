//! Certificates for TLS tests, made fresh by rcgen on every call: a test certificate authority,
//! a server certificate it signed (for 127.0.0.1 and localhost unless told otherwise) and a
//! client certificate it signed, as PEM text and as files only their owner can read.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tempfile::TempDir;

/// Numbers the test CAs of a process, so that no two share a name: a certificate from another
/// test CA then has an unknown issuer, as it would in the field.
static CA_NUMBER: AtomicU64 = AtomicU64::new(1);

/// A test CA with one server and one client certificate, in PEM and in files.
pub struct TestPki {
    /// The CA's certificate: what a client (or a server checking client certificates) trusts.
    pub ca_pem: String,
    /// The server's certificate, signed by the CA.
    pub server_cert_pem: String,
    /// The server certificate's private key (PKCS #8).
    pub server_key_pem: String,
    /// The client's certificate, signed by the CA, for mutual TLS.
    pub client_cert_pem: String,
    /// The client certificate's private key (PKCS #8).
    pub client_key_pem: String,
    /// `ca_pem` as a file.
    pub ca_path: PathBuf,
    /// `server_cert_pem` as a file.
    pub server_cert_path: PathBuf,
    /// `server_key_pem` as a file.
    pub server_key_path: PathBuf,
    /// `client_cert_pem` as a file.
    pub client_cert_path: PathBuf,
    /// `client_key_pem` as a file.
    pub client_key_path: PathBuf,
    /// Holds the files; deleted on drop.
    directory: TempDir,
}

impl TestPki {
    /// A fresh CA and certificates; the server's names 127.0.0.1 and localhost.
    pub fn new() -> TestPki {
        TestPki::for_server_names(&["127.0.0.1", "localhost"])
    }

    /// A fresh CA and certificates; the server's certificate names exactly `names` (DNS names,
    /// or IP addresses written as such).
    pub fn for_server_names(names: &[&str]) -> TestPki {
        let ca = certificate_authority();
        let ca_pem = ca.0.pem();
        let (server_cert_pem, server_key_pem) = leaf(
            names,
            "actor-bank test server",
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        );
        let (client_cert_pem, client_key_pem) = leaf(
            &["atm.test"],
            "actor-bank test client",
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        );
        let directory = tempfile::tempdir().unwrap();
        let file = |name: &str, contents: &str| owner_only_file(directory.path(), name, contents);
        TestPki {
            ca_path: file("ca.pem", &ca_pem),
            server_cert_path: file("server.pem", &server_cert_pem),
            server_key_path: file("server.key", &server_key_pem),
            client_cert_path: file("client.pem", &client_cert_pem),
            client_key_path: file("client.key", &client_key_pem),
            ca_pem,
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
            directory,
        }
    }

    /// The directory holding the files.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }
}

/// A self-signed CA: its certificate and the key it signs with.
fn certificate_authority() -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let number = CA_NUMBER.fetch_add(1, Ordering::Relaxed);
    params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "actor-bank test CA {number} of process {}",
            std::process::id()
        ),
    );
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.self_signed(&key).unwrap(), key)
}

/// A certificate for `names` signed by `ca`, for `purpose`: its PEM and its key's PEM.
fn leaf(
    names: &[&str],
    common_name: &str,
    purpose: ExtendedKeyUsagePurpose,
    (ca, ca_key): &(Certificate, KeyPair),
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    params.use_authority_key_identifier_extension = true;
    let certificate = params.signed_by(&key, ca, ca_key).unwrap();
    (certificate.pem(), key.serialize_pem())
}

/// Writes `contents` to `directory/name`, readable and writable by its owner only.
fn owner_only_file(directory: &Path, name: &str, contents: &str) -> PathBuf {
    let path = directory.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    path
}
