//! The client's byte stream: plain TCP, or TLS over TCP when [`super::ClientConfig::tls`] says so.
//!
//! [`TlsSettings::load`] reads the PEM files once, before anything is sent, so a file that cannot
//! be read is an error that names it ([`TlsError`]) rather than a connection that keeps failing.
//! `open_stream` is the one place the client opens a connection; everything above it (the
//! framing, the handshake, retries, backoff, deadlines, re-verification) is the same whatever the
//! stream is.
//!
//! The server's certificate must chain to a certificate authority of the CA bundle and name the
//! server. The name checked is the host part of the server's address — a DNS name is matched
//! against the certificate's DNS names, an IP address against its IP addresses — unless
//! [`TlsFiles::server_name`] gives another (for an address that is an IP the certificate does
//! not list, or a tunnel's local port). With a client certificate and key the client also proves
//! who it is to a server that asks (mutual TLS).
//!
//! A failed TLS handshake is a failed connection like a refused one: the caller retries it with
//! backoff until its deadline, and the last failure's text (rustls's reason, "invalid peer
//! certificate: UnknownIssuer" say) ends up in the final error.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where a client's TLS material is: what `atm` and the swarm are given on their command lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate authorities to trust (a PEM bundle): the server's certificate must chain
    /// to one of them.
    pub ca: PathBuf,
    /// A certificate and key to present to a server that asks for one (mutual TLS).
    pub client_identity: Option<IdentityFiles>,
    /// The name the server's certificate must carry, when it is not the host part of the
    /// server's address.
    pub server_name: Option<String>,
}

/// A client certificate and its private key, for mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityFiles {
    /// The certificate chain (PEM), the client's own certificate first.
    pub certificate: PathBuf,
    /// Its private key (PEM: PKCS #8, PKCS #1 or SEC1); only its owner should be able to read it.
    pub key: PathBuf,
}

/// Why TLS settings could not be made from their files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read, or holds nothing of the kind expected.
    #[error("cannot read the {what} {path}: {reason}")]
    Unreadable {
        /// Which file it is ("CA bundle", "client certificate", "client key").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file was read but rustls refused what it holds (a malformed CA certificate, a key that
    /// does not fit the certificate).
    #[error("the {what} {path} cannot be used: {reason}")]
    Unusable {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The server name given is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// TLS settings read from their files and checked: what a client needs to open TLS connections.
/// Cloning is cheap (the rustls configuration is shared).
#[derive(Clone)]
pub struct TlsSettings {
    /// The rustls client configuration (trusted roots, client identity) behind a handshake.
    connector: TlsConnector,
    /// The name to verify instead of the address's host part, already parsed.
    server_name: Option<ServerName<'static>>,
    /// The files the settings came from, for `Debug` and for telling the user.
    files: TlsFiles,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsSettings")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads and checks the files: the CA bundle must hold at least one certificate rustls
    /// accepts, and a client identity a certificate and a key that fit it.
    pub fn load(files: TlsFiles) -> Result<TlsSettings, TlsError> {
        let server_name = match &files.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::ServerName(name.clone()))?,
            ),
            None => None,
        };
        let mut roots = rustls::RootCertStore::empty();
        for certificate in read_certificates(&files.ca, "CA bundle")? {
            roots
                .add(certificate)
                .map_err(|error| unusable("CA bundle", &files.ca, error))?;
        }
        // The provider is named, not taken from the process default, so that the settings
        // work whatever other crates in the program choose.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports rustls's default protocol versions")
            .with_root_certificates(roots);
        let config = match &files.client_identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let chain = read_certificates(&identity.certificate, "client certificate")?;
                let key = read_key(&identity.key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| unusable("client key", &identity.key, error))?
            }
        };
        Ok(TlsSettings {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            files,
        })
    }

    /// The files these settings were read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The name the certificate of the server at `address` must carry.
    fn server_name_for(&self, address: &str) -> Result<ServerName<'static>, String> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host_part(address);
        ServerName::try_from(host.to_string()).map_err(|_| {
            format!("{host:?} (from {address}) is not a TLS server name: give one explicitly")
        })
    }
}

/// The host of a `host:port` address (`[v6]:port` without its brackets).
fn host_part(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

/// Every certificate in the PEM file at `path`; at least one.
fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| unreadable(what, path, error))?;
    if certificates.is_empty() {
        return Err(unreadable(what, path, pem::Error::NoItemsFound));
    }
    Ok(certificates)
}

/// The first private key in the PEM file at `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| unreadable("client key", path, error))
}

/// The error for the `what` file at `path` that could not be read as PEM.
fn unreadable(what: &'static str, path: &Path, error: pem::Error) -> TlsError {
    let kind = if what.ends_with("key") {
        "private key"
    } else {
        "certificate"
    };
    let reason = match error {
        pem::Error::NoItemsFound => format!("it holds no PEM {kind}"),
        pem::Error::Io(error) => error.to_string(),
        other => format!("not valid PEM: {other}"),
    };
    TlsError::Unreadable {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

/// The error for the `what` file at `path` whose contents rustls refused.
fn unusable(what: &'static str, path: &Path, error: rustls::Error) -> TlsError {
    TlsError::Unusable {
        what,
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// A byte stream the client frames: a TCP stream, or a TLS session over one.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Sync + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Transport for T {}

/// Connects to `server`, with a TLS handshake on top when `tls` is given. The error is the
/// text the caller retries on (and reports when it gives up).
pub(crate) async fn open_stream(
    server: &str,
    tls: Option<&TlsSettings>,
) -> Result<Box<dyn Transport>, String> {
    let stream = TcpStream::connect(server)
        .await
        .map_err(|error| format!("cannot connect to {server}: {error}"))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    let name = tls.server_name_for(server)?;
    let stream = tls
        .connector
        .connect(name, stream)
        .await
        .map_err(|error| format!("TLS handshake with {server} failed: {error}"))?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_part_drops_the_port_and_the_brackets() {
        assert_eq!(host_part("127.0.0.1:7878"), "127.0.0.1");
        assert_eq!(host_part("bank.example:443"), "bank.example");
        assert_eq!(host_part("[::1]:7878"), "::1");
        assert_eq!(host_part("localhost"), "localhost");
    }

    #[test]
    fn a_missing_pem_file_is_named_in_the_error() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let missing = directory.path().join("no-such-ca.pem");
        let error = TlsSettings::load(TlsFiles {
            ca: missing.clone(),
            ..TlsFiles::default()
        })
        .expect_err("a missing CA bundle is an error");
        let text = error.to_string();
        assert!(text.contains("CA bundle"), "{text}");
        assert!(text.contains(&missing.display().to_string()), "{text}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let empty = directory.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("written");
        let error = TlsSettings::load(TlsFiles {
            ca: empty,
            ..TlsFiles::default()
        })
        .expect_err("a CA bundle without certificates is an error");
        assert!(
            error.to_string().contains("holds no PEM certificate"),
            "{error}"
        );
    }
}
