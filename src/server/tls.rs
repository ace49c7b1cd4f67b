//! Transport security: TLS on the listeners, with rustls.
//!
//! [`Tls`] holds the acceptor made from the certificate chain, the private key and, for mutual
//! TLS, the client CA bundle, together with the deny list. It sits behind a lock so that
//! [`Tls::reload`] (on SIGHUP) can swap it: connections that are open keep the configuration they
//! were accepted with, new connections use the new one, and a failed reload keeps the old one.
//!
//! The handshake runs on the session's arbiter, under [`super::Limits::tls_handshake_timeout`]. A
//! client certificate names its [`Terminal`]: the subject's common name, else its first DNS or URI
//! name, together with the certificate's SHA-256 fingerprint. A terminal on the deny list (by name
//! or fingerprint) is refused right after the handshake.

use super::gateway::Entrance;
use super::Bank;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Default of [`super::Limits::tls_handshake_timeout`]: a handshake is a few round trips, so ten
/// seconds is generous even far away, and a connection that does not finish it holds a
/// connection slot no longer.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files TLS is made from, read at start and again at every reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), its own certificate first.
    pub cert: PathBuf,
    /// The server's private key (PEM); refused when group or others may read it.
    pub key: PathBuf,
    /// A CA bundle (PEM): when given, every client must present a certificate chaining to it.
    pub client_ca: Option<PathBuf>,
    /// Terminals refused even with a good certificate: one name or SHA-256 fingerprint a line.
    pub deny_file: Option<PathBuf>,
}

/// Who is at the other end of a mutual-TLS connection, from its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Terminal {
    /// The subject's common name, else the first DNS or URI name; `None` when it has none.
    pub name: Option<String>,
    /// The SHA-256 of the certificate (DER), in lowercase hexadecimal: names the certificate
    /// even when its name is shared or missing.
    pub fingerprint: String,
}

impl Terminal {
    /// The terminal as read from its certificate (DER).
    pub fn from_certificate(certificate: &CertificateDer<'_>) -> Terminal {
        let fingerprint = Sha256::digest(certificate.as_ref())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let name = webpki::EndEntityCert::try_from(certificate)
            .ok()
            .and_then(|parsed| {
                common_name(parsed.subject())
                    .filter(|name| !name.is_empty())
                    .or_else(|| parsed.valid_dns_names().next().map(str::to_string))
                    .or_else(|| parsed.valid_uri_names().next().map(str::to_string))
            });
        Terminal { name, fingerprint }
    }

    /// What failure limits count this terminal by: its name, else its fingerprint.
    pub fn key(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.fingerprint)
    }
}

impl fmt::Display for Terminal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (sha256 {})", self.fingerprint),
            None => write!(f, "sha256 {}", self.fingerprint),
        }
    }
}

/// A connection that finished its handshake.
pub struct Secured {
    /// The encrypted stream.
    pub stream: TlsStream<TcpStream>,
    /// The client's terminal, under mutual TLS.
    pub terminal: Option<Terminal>,
}

/// Why a handshake failed: `reason` is one of a few fixed words (the metric's label), `detail`
/// goes to the log.
#[derive(Debug)]
pub struct Refusal {
    /// `timeout`, `not_tls`, `no_certificate`, `expired`, `bad_certificate`, `denied`,
    /// `protocol` or `io`.
    pub reason: &'static str,
    /// What went wrong, for the log.
    pub detail: String,
}

/// What one load of the files gave.
struct Loaded {
    acceptor: TlsAcceptor,
    /// Names and fingerprints refused.
    denied: HashSet<String>,
    /// True when client certificates are required.
    mutual: bool,
}

/// TLS for the listeners, reloadable.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
    /// Handshakes that failed, for tests and audits (the metric has them by reason).
    failures: AtomicU64,
}

impl Tls {
    /// Loads the files; the error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let loaded = load_files(&files)?;
        Ok(Tls {
            files,
            current: RwLock::new(Arc::new(loaded)),
            failures: AtomicU64::new(0),
        })
    }

    /// Reads the files again and, if they are all good, uses them for every new connection;
    /// otherwise keeps the configuration in use and says why.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load_files(&self.files)?;
        let denied = loaded.denied.len();
        *self.current.write() = Arc::new(loaded);
        tracing::info!(target: "security", denied, "TLS configuration reloaded");
        Ok(())
    }

    /// True when every client must present a certificate.
    pub fn mutual(&self) -> bool {
        self.current.read().mutual
    }

    /// Handshakes that failed since start.
    pub fn handshake_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Runs the handshake on `stream` within `timeout`, then checks the deny list. A failure is
    /// counted (by reason) and logged with the peer before the connection closes.
    pub async fn accept(&self, stream: TcpStream, timeout: Duration) -> Result<Secured, Refusal> {
        let peer = stream.peer_addr().ok();
        let loaded = self.current.read().clone();
        let handshake = loaded.acceptor.accept(stream).into_fallible();
        let stream = match tokio::time::timeout(timeout, handshake).await {
            Err(_) => {
                return Err(self.refused(
                    peer,
                    "timeout",
                    format!("the TLS handshake took longer than {timeout:?}"),
                ))
            }
            // rustls has already sent its alert, so the client may see the close a moment
            // before the failure is counted.
            Ok(Err((error, _stream))) => return Err(self.refused_by(peer, &error)),
            Ok(Ok(stream)) => stream,
        };
        let terminal = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(Terminal::from_certificate);
        if let Some(terminal) = &terminal {
            let listed = |entry: &str| loaded.denied.contains(entry);
            if listed(&terminal.fingerprint) || terminal.name.as_deref().is_some_and(listed) {
                let refusal = self.refused(
                    peer,
                    "denied",
                    format!("terminal {terminal} is on the deny list"),
                );
                drop(stream);
                return Err(refusal);
            }
        }
        crate::metrics::tls_handshake("secured");
        Ok(Secured { stream, terminal })
    }

    /// Counts a failed handshake and logs why, while the connection is still open.
    fn refused(&self, peer: Option<SocketAddr>, reason: &'static str, detail: String) -> Refusal {
        tracing::warn!(
            target: "security",
            ?peer,
            reason,
            %detail,
            "TLS handshake failed; connection closed"
        );
        crate::metrics::tls_handshake("failed");
        crate::metrics::tls_handshake_failure(reason);
        // Counted last: whoever sees the count also finds the log line and the metrics.
        self.failures.fetch_add(1, Ordering::Relaxed);
        Refusal { reason, detail }
    }

    /// Counts a handshake that rustls refused, with a bounded reason.
    fn refused_by(&self, peer: Option<SocketAddr>, error: &std::io::Error) -> Refusal {
        let reason = match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::NoCertificatesPresented) => "no_certificate",
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
            )) => "expired",
            Some(rustls::Error::InvalidCertificate(_)) => "bad_certificate",
            Some(rustls::Error::InvalidMessage(_)) => "not_tls",
            Some(_) => "protocol",
            None => "io",
        };
        self.refused(peer, reason, error.to_string())
    }
}

/// Runs the handshake of a connection the gateway accepted (on the arbiter the session will run
/// on) and starts the session behind `door`; a failed handshake closes the connection, with its
/// reason logged and counted, and costs nothing else.
pub(super) async fn secure_session(
    tls: Arc<Tls>,
    door: Arc<dyn Entrance>,
    bank: Arc<Bank>,
    stream: TcpStream,
    slot: Option<super::slots::Slot>,
) {
    let peer = stream.peer_addr().ok();
    let timeout = bank.limits().tls_handshake_timeout;
    let stopping = bank.clone();
    let secured = tokio::select! {
        biased;
        // A graceful shutdown does not wait for handshakes: nothing was read from them yet.
        _ = stopping.shutting_down() => {
            bank.stats().connection_closed();
            return;
        }
        secured = tls.accept(stream, timeout) => secured,
    };
    match secured {
        Ok(secured) => {
            let slot = match &secured.terminal {
                Some(terminal) => match terminal_slot(&bank, terminal, peer) {
                    Some(slot) => Some(slot),
                    None => return bank.stats().connection_closed(),
                },
                None => slot,
            };
            door.start_secured_session(bank, secured, peer, slot);
        }
        // Counted and logged by `accept`, before the socket closed.
        Err(_) => bank.stats().connection_closed(),
    }
}

/// The slot of a terminal that finished its handshake, in place of its address's (dropped by the
/// caller), or `None` when the terminal already holds all its slots (counted and logged like a
/// peer at its cap; the connection is closed).
fn terminal_slot(
    bank: &Bank,
    terminal: &Terminal,
    peer: Option<std::net::SocketAddr>,
) -> Option<super::slots::Slot> {
    tracing::debug!(target: "security", ?peer, %terminal, "terminal connected");
    let slot = bank
        .slots()
        .take(super::slots::PeerKey::Terminal(terminal.key().into()));
    if slot.is_none() {
        bank.stats().connection_refused_per_peer();
        tracing::warn!(
            target: "security",
            ?peer,
            %terminal,
            limit = bank.limits().connections_per_peer_max,
            "refusing connection: its terminal holds all its connection slots"
        );
    }
    slot
}

/// Reads every file and builds the acceptor.
fn load_files(files: &TlsFiles) -> Result<Loaded, String> {
    let chain = read_certificates(&files.cert, "certificate chain")?;
    let key = read_key(&files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| format!("TLS: {error}"))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(path, "client CA bundle")? {
                roots
                    .add(certificate)
                    .map_err(|error| format!("the client CA bundle {}: {error}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|error| format!("the client CA bundle {}: {error}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|error| {
        format!(
            "the certificate {} and the key {} do not make a TLS identity: {error}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    let denied = match &files.deny_file {
        Some(path) => read_deny_file(path)?,
        None => HashSet::new(),
    };
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        denied,
        mutual: files.client_ca.is_some(),
    })
}

/// Every certificate of a PEM file; at least one.
fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let read_error = |error: &dyn fmt::Display| format!("the {what} {}: {error}", path.display());
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| read_error(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| read_error(&error))?;
    if certificates.is_empty() {
        return Err(read_error(&"no PEM certificate in it"));
    }
    Ok(certificates)
}

/// The private key of a PEM file that only its owner may read (like the PIN key).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    crate::pin::refuse_shared_secret_file(path, "the TLS key")?;
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| format!("the TLS key {}: {error}", path.display()))
}

/// The deny list: one terminal name or SHA-256 fingerprint a line; blank lines and lines
/// starting with `#` are skipped. Fingerprints may be written with colons and in any case.
fn read_deny_file(path: &Path) -> Result<HashSet<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("the TLS deny file {}: {error}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .flat_map(|line| {
            let fingerprint: String = line
                .chars()
                .filter(|c| *c != ':')
                .collect::<String>()
                .to_ascii_lowercase();
            let looks_like_fingerprint =
                fingerprint.len() == 64 && fingerprint.chars().all(|c| c.is_ascii_hexdigit());
            [
                Some(line.to_string()),
                looks_like_fingerprint.then_some(fingerprint),
            ]
        })
        .flatten()
        .collect())
}

/// The common name (OID 2.5.4.3) of a DER-encoded name without its outer SEQUENCE header:
/// a sequence of SETs of SEQUENCE { OID, value }.
fn common_name(name: &[u8]) -> Option<String> {
    const COMMON_NAME_OID: [u8; 3] = [0x55, 0x04, 0x03];
    let mut names = name;
    while let Some((_, set, rest)) = der_item(names) {
        names = rest;
        let mut attributes = set;
        while let Some((_, attribute, rest)) = der_item(attributes) {
            attributes = rest;
            let (oid_tag, oid, value) = der_item(attribute)?;
            if oid_tag == 0x06 && oid == COMMON_NAME_OID {
                let (_, text, _) = der_item(value)?;
                return std::str::from_utf8(text).ok().map(str::to_string);
            }
        }
    }
    None
}

/// Splits one DER item off `bytes`: its tag, its contents, and what follows it.
fn der_item(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (digits, rest) = rest.split_at(count);
        let length = digits
            .iter()
            .fold(0usize, |length, digit| (length << 8) | usize::from(*digit));
        (length, rest)
    };
    (rest.len() >= length).then(|| {
        let (contents, rest) = rest.split_at(length);
        (tag, contents, rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_file_takes_names_and_fingerprints_in_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny");
        let fingerprint = "AB:".repeat(31) + "AB";
        std::fs::write(&path, format!("# retired\n\natm-7\n{fingerprint}\n")).unwrap();
        let denied = read_deny_file(&path).unwrap();
        assert!(denied.contains("atm-7"));
        assert!(denied.contains(&"ab".repeat(32)));
        assert!(!denied.contains("# retired"));
    }

    #[test]
    fn a_der_item_longer_than_its_input_is_refused() {
        assert_eq!(der_item(&[0x30, 0x05, 0x01]), None);
        assert_eq!(
            der_item(&[0x30, 0x81, 0x01, 0x07]),
            Some((0x30, &[7u8][..], &[][..]))
        );
    }
}
