//! Transport security over real TCP: TLS on the listener, mutual TLS with terminal identities,
//! refusals that cost nothing else, reloads of the CA and the deny file, and the plaintext rule.
//! Certificates are made in the test with rcgen.

#[path = "common/banking.rs"]
mod banking;
mod common;
#[path = "common/iso8583.rs"]
mod iso;

use actor_bank::codec::encode_frame;
use actor_bank::protocol::{ClientMessage, Hello, ServerMessage, Status, PROTOCOL_VERSION};
use actor_bank::server::tls::TlsFiles;
use actor_bank::server::{RunningServer, ServerConfig, ServerError};
use common::{verify, withdraw, Capture, RawConnection, TestServer, JOTY, JOTY_PIN};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A certificate authority made for one test.
struct Authority {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        Authority { certificate, key }
    }

    /// A certificate signed by this authority: (certificate PEM, key PEM).
    fn issue(&self, names: &[&str], common_name: &str, usage: ExtendedKeyUsagePurpose) -> Pem {
        let names = names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if !common_name.is_empty() {
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
        }
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .unwrap();
        Pem {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    fn pem(&self) -> String {
        self.certificate.pem()
    }
}

/// A certificate and its key, in PEM.
struct Pem {
    certificate: String,
    key: String,
}

/// The files of a TLS test setup.
struct Setup {
    dir: tempfile::TempDir,
    files: TlsFiles,
}

impl Setup {
    /// A server certificate for 127.0.0.1/localhost from `server_ca`; mutual TLS against
    /// `client_ca` when given; an empty deny file.
    fn new(server_ca: &Authority, client_ca: Option<&Authority>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let server = server_ca.issue(
            &["localhost", "127.0.0.1"],
            "bank",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, server.certificate).unwrap();
        write_private(&key, &server.key);
        let client_ca = client_ca.map(|authority| {
            let path = dir.path().join("client-ca.pem");
            std::fs::write(&path, authority.pem()).unwrap();
            path
        });
        let deny_file = dir.path().join("deny");
        std::fs::write(&deny_file, "").unwrap();
        let files = TlsFiles {
            cert,
            key,
            client_ca,
            deny_file: Some(deny_file),
        };
        Setup { dir, files }
    }

    fn start(&self) -> TestServer {
        let files = self.files.clone();
        TestServer::start_with(move |config| config.tls = Some(files))
    }
}

/// Writes a key file only its owner may read.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    set_mode(path, 0o600);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The log of every server in this test binary, at debug level.
fn log() -> &'static Capture {
    static LOG: OnceLock<Capture> = OnceLock::new();
    LOG.get_or_init(|| {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        capture
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned()
}

/// A TLS client trusting `server_ca`, presenting `identity` when given.
fn connector(server_ca: &Authority, identity: Option<&Pem>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        Some(pem) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pem.certificate.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Connects over TLS; `None` when the handshake failed on the client's side.
async fn connect(
    server: &TestServer,
    connector: &TlsConnector,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.address()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.ok()
}

/// Writes one message as a frame.
async fn send(stream: &mut (impl AsyncWrite + Unpin), message: &ClientMessage) -> bool {
    let frame = encode_frame(message).unwrap();
    stream.write_all(&frame).await.is_ok() && stream.flush().await.is_ok()
}

/// Reads one message; `None` when the connection closed or failed.
async fn receive(stream: &mut (impl AsyncRead + Unpin)) -> Option<ServerMessage> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(actor_bank::codec::decode_wire(&body).unwrap())
}

fn hello() -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
    })
}

/// The status of the reply to `operation`, sent as request 1:`sequence`.
async fn exchange(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    sequence: u64,
    operation: actor_bank::protocol::Operation,
) -> Status {
    let request = ClientMessage::Request(actor_bank::protocol::Request {
        id: actor_bank::protocol::RequestId {
            client: 41,
            sequence,
        },
        operation,
    });
    assert!(send(stream, &request).await);
    match receive(stream).await {
        Some(ServerMessage::Reply(reply)) => reply.status,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// A TLS connection that completes the bank's handshake, verifies Joty and withdraws.
async fn served(server: &TestServer, connector: &TlsConnector) {
    let mut stream = greeted(server, connector).await;
    assert_eq!(
        exchange(&mut stream, 1, verify(JOTY, JOTY_PIN)).await,
        Status::Approved
    );
    assert_eq!(
        exchange(&mut stream, 2, withdraw(5)).await,
        Status::Approved
    );
}

/// A TLS connection the server refuses: the handshake fails, or the first message gets no
/// answer before the connection closes (under TLS 1.3 the server judges the client's certificate
/// after the client considers the handshake done).
async fn refused(server: &TestServer, connector: &TlsConnector) -> bool {
    let Some(mut stream) = connect(server, connector).await else {
        return true;
    };
    let _ = send(&mut stream, &hello()).await;
    receive(&mut stream).await.is_none()
}

fn failures(server: &TestServer) -> u64 {
    server.running().tls().unwrap().handshake_failures()
}

/// Waits until `expected` failed handshakes are counted, then checks there are no more. The
/// server sends its alert before it counts, so a client that saw the close may be a moment early.
async fn counted_failures(server: &TestServer, expected: u64) {
    common::eventually("the failed handshakes are counted", || {
        failures(server) >= expected
    })
    .await;
    assert_eq!(failures(server), expected);
}

/// The ISO 8583 listener is secured like the other: an acquirer over TLS signs on and
/// withdraws; one speaking plaintext to it is closed without an answer.
#[tokio::test]
async fn the_iso8583_listener_is_served_over_tls_too() {
    use actor_bank::iso8583::{self, field, network};
    let authority = Authority::new("test CA");
    let setup = Setup::new(&authority, None);
    let files = setup.files.clone();
    let server = TestServer::start_with(move |config| {
        config.tls = Some(files);
        iso::with_door(config);
    });
    let address = server.running().iso8583_addr().unwrap();
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = connector(&authority, None)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut call = async |message: &iso8583::Message| {
        let body = iso8583::encode(message).unwrap();
        let mut frame = (body.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        stream.write_all(&frame).await.unwrap();
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).await.unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut reply).await.unwrap();
        iso8583::decode(&reply).unwrap()
    };
    let signed_on = call(&iso::network_message(network::SIGN_ON, None)).await;
    assert_eq!(signed_on.get(field::RESPONSE_CODE), Some("00"));
    let withdrawn = call(&iso::withdrawal(JOTY, JOTY_PIN, 100, 2)).await;
    assert_eq!(withdrawn.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(iso::balances(&withdrawn), (9_900, 9_900));

    let mut plain = TcpStream::connect(address).await.unwrap();
    let body = iso8583::encode(&iso::network_message(network::SIGN_ON, None)).unwrap();
    let mut frame = (body.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    plain.write_all(&frame).await.unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    // Whatever came back (a TLS alert at most) is no ISO 8583 reply.
    assert!(!answer.windows(4).any(|window| window == b"0810"));
}

#[tokio::test]
async fn verify_and_withdraw_over_tls() {
    let authority = Authority::new("test CA");
    let setup = Setup::new(&authority, None);
    let server = setup.start();
    served(&server, &connector(&authority, None)).await;
    assert_eq!(failures(&server), 0);
}

#[tokio::test]
async fn mutual_tls_names_the_terminal_in_the_log() {
    log();
    let authority = Authority::new("test CA");
    let setup = Setup::new(&authority, Some(&authority));
    let server = setup.start();
    let terminal = authority.issue(&[], "atm-lobby-17", ExtendedKeyUsagePurpose::ClientAuth);
    served(&server, &connector(&authority, Some(&terminal))).await;
    assert!(server.running().tls().unwrap().mutual());
    assert_eq!(failures(&server), 0);
    let text = log_text();
    assert!(text.contains("atm-lobby-17 (sha256 "), "{text}");
}

#[tokio::test]
async fn a_client_without_a_certificate_or_from_another_ca_is_refused() {
    let authority = Authority::new("test CA");
    let stranger = Authority::new("another CA");
    let setup = Setup::new(&authority, Some(&authority));
    let server = setup.start();
    assert!(refused(&server, &connector(&authority, None)).await);
    counted_failures(&server, 1).await;
    let forged = stranger.issue(&[], "atm-1", ExtendedKeyUsagePurpose::ClientAuth);
    assert!(refused(&server, &connector(&authority, Some(&forged))).await);
    counted_failures(&server, 2).await;
    let good = authority.issue(&[], "atm-1", ExtendedKeyUsagePurpose::ClientAuth);
    served(&server, &connector(&authority, Some(&good))).await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    log();
    let authority = Authority::new("test CA");
    let setup = Setup::new(&authority, Some(&authority));
    let server = setup.start();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "atm-expired");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let key = KeyPair::generate().unwrap();
    let certificate = params
        .signed_by(&key, &authority.certificate, &authority.key)
        .unwrap();
    let expired = Pem {
        certificate: certificate.pem(),
        key: key.serialize_pem(),
    };
    assert!(refused(&server, &connector(&authority, Some(&expired))).await);
    counted_failures(&server, 1).await;
    let text = log_text();
    assert!(text.contains("reason=\"expired\""), "{text}");
}

#[tokio::test]
async fn a_plaintext_hello_to_a_tls_listener_is_closed_and_counted() {
    log();
    let authority = Authority::new("test CA");
    let setup = Setup::new(&authority, None);
    let server = setup.start();
    let mut plain = RawConnection::connect(&server.address()).await;
    plain.send(&hello()).await;
    assert!(plain.closed_by_server().await);
    counted_failures(&server, 1).await;
    let text = log_text();
    assert!(text.contains("reason=\"not_tls\""), "{text}");
    assert_eq!(
        server
            .running()
            .bank()
            .stats()
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    served(&server, &connector(&authority, None)).await;
}

#[tokio::test]
async fn a_reload_trusts_the_new_ca_and_no_longer_the_old() {
    let old = Authority::new("old CA");
    let new = Authority::new("new CA");
    let setup = Setup::new(&old, Some(&old));
    let server = setup.start();
    let old_terminal = old.issue(&[], "atm-old", ExtendedKeyUsagePurpose::ClientAuth);
    let new_terminal = new.issue(&[], "atm-new", ExtendedKeyUsagePurpose::ClientAuth);
    served(&server, &connector(&old, Some(&old_terminal))).await;
    assert!(refused(&server, &connector(&old, Some(&new_terminal))).await);

    let client_ca: &PathBuf = setup.files.client_ca.as_ref().unwrap();
    std::fs::write(client_ca, new.pem()).unwrap();
    server.running().reload_tls().unwrap();
    served(&server, &connector(&old, Some(&new_terminal))).await;
    assert!(refused(&server, &connector(&old, Some(&old_terminal))).await);

    // A broken file keeps the configuration in use.
    std::fs::write(client_ca, "not a certificate").unwrap();
    let reason = server.running().reload_tls().unwrap_err();
    assert!(reason.contains("client-ca.pem"), "{reason}");
    served(&server, &connector(&old, Some(&new_terminal))).await;
}

#[tokio::test]
async fn a_terminal_on_the_deny_file_is_refused_after_a_reload() {
    let authority = Authority::new("test CA");
    let setup = Setup::new(&authority, Some(&authority));
    let server = setup.start();
    let retired = authority.issue(&[], "atm-retired", ExtendedKeyUsagePurpose::ClientAuth);
    let other = authority.issue(&[], "atm-other", ExtendedKeyUsagePurpose::ClientAuth);
    let by_uri = authority.issue(
        &["atm-by-fingerprint.example"],
        "",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    served(&server, &connector(&authority, Some(&retired))).await;
    served(&server, &connector(&authority, Some(&by_uri))).await;

    let identity = actor_bank::server::tls::Terminal::from_certificate(
        &CertificateDer::from_pem_slice(by_uri.certificate.as_bytes()).unwrap(),
    );
    // Without a common name the terminal is named by its first DNS name.
    assert_eq!(identity.name.as_deref(), Some("atm-by-fingerprint.example"));
    let fingerprint = identity.fingerprint;
    let deny_file = setup.files.deny_file.as_ref().unwrap();
    std::fs::write(deny_file, format!("atm-retired\n{fingerprint}\n")).unwrap();
    server.running().reload_tls().unwrap();
    assert!(refused(&server, &connector(&authority, Some(&retired))).await);
    assert!(refused(&server, &connector(&authority, Some(&by_uri))).await);
    counted_failures(&server, 2).await;
    served(&server, &connector(&authority, Some(&other))).await;
}

/// A configuration on `listen` with the test's settings but no demo accounts.
fn config_on(dir: &Path, listen: &str) -> ServerConfig {
    let mut config = common::test_config(dir);
    config.listen = listen.parse().unwrap();
    config.demo = false;
    config
}

#[test]
fn plaintext_off_loopback_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_on(dir.path(), "0.0.0.0:0");
    match RunningServer::start(config.clone()) {
        Err(ServerError::Start(reason)) => {
            assert!(reason.contains("--allow-plaintext"), "{reason}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("plaintext on 0.0.0.0 was served"),
    }
    let mut allowed = config;
    allowed.allow_plaintext = true;
    RunningServer::start(allowed).unwrap().stop();
}

#[test]
fn a_key_readable_by_others_is_refused() {
    let authority = Authority::new("test CA");
    let setup = Setup::new(&authority, None);
    set_mode(&setup.files.key, 0o644);
    let mut config = config_on(setup.dir.path(), "127.0.0.1:0");
    config.data_dir = setup.dir.path().join("data");
    config.tls = Some(setup.files.clone());
    match RunningServer::start(config) {
        Err(ServerError::Tls(reason)) => assert!(reason.contains("chmod 600"), "{reason}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a key readable by others was used"),
    }
}

/// A connection that finished its handshake and was greeted, kept open by the caller.
async fn greeted(
    server: &TestServer,
    connector: &TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut stream = connect(server, connector)
        .await
        .expect("the TLS handshake failed");
    assert!(send(&mut stream, &hello()).await);
    assert!(matches!(
        receive(&mut stream).await,
        Some(ServerMessage::Welcome(_))
    ));
    stream
}

/// Under mutual TLS a connection counts against its terminal, not its address: a terminal that
/// holds all its slots is refused after its handshake, while another terminal behind the same
/// address is served.
#[tokio::test]
async fn under_mutual_tls_the_connection_cap_is_per_terminal() {
    let authority = Authority::new("test CA");
    let setup = Setup::new(&authority, Some(&authority));
    let files = setup.files.clone();
    let server = TestServer::start_with(move |config| {
        config.tls = Some(files);
        config.limits.connections_per_peer_max = 2;
    });
    let first = authority.issue(&[], "atm-1", ExtendedKeyUsagePurpose::ClientAuth);
    let second = authority.issue(&[], "atm-2", ExtendedKeyUsagePurpose::ClientAuth);
    let (atm_1, atm_2) = (
        connector(&authority, Some(&first)),
        connector(&authority, Some(&second)),
    );
    let mut held = vec![
        greeted(&server, &atm_1).await,
        greeted(&server, &atm_1).await,
    ];
    assert!(
        refused(&server, &atm_1).await,
        "a third connection of atm-1"
    );
    let refusals = &server.running().bank().stats().connections_refused_per_peer;
    common::eventually("the refusal is counted", || {
        refusals.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    // Four connections from one address, two per terminal: the address's cap of two does not
    // apply once the terminals are known.
    held.push(greeted(&server, &atm_2).await);
    held.push(greeted(&server, &atm_2).await);
    assert_eq!(held.len(), 4);
    assert_eq!(refusals.load(std::sync::atomic::Ordering::Relaxed), 1);
}
