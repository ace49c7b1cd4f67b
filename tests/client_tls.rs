//! The client library, `atm` and the swarm over TLS. The real (plaintext) server sits behind a TLS
//! terminator started in the test: a tokio-rustls acceptor on 127.0.0.1:0 that forwards bytes
//! both ways, with certificates made by rcgen for each test ([`common::tls::TestPki`]).

mod common;

use actor_bank::client::tls::{IdentityFiles, TlsFiles, TlsSettings};
use actor_bank::client::{reply_balance, Client, ClientConfig, ClientError};
use actor_bank::faults::{self, FaultKind, FaultPlan};
use actor_bank::protocol::{Operation, RequestId, Status};
use actor_bank::swarm::{self, Stop, SwarmConfig};
use common::tls::TestPki;
use common::{client_config_with_id, TestServer, JOTY, JOTY_PIN, OPERATOR_TOKEN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Whether the terminator asks the client for a certificate signed by the test CA.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    /// Any client may connect.
    None,
    /// Only a client with a certificate the test CA signed.
    Required,
}

/// The terminator's rustls configuration: the PKI's server certificate, and with
/// `ClientAuth::Required` a verifier of client certificates against the PKI's CA.
fn terminator_config(pki: &TestPki, client_auth: ClientAuth) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
                .unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = vec![CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    builder.with_single_cert(chain, key).unwrap()
}

/// Starts a TLS terminator in front of `upstream` and returns its address. Each accepted TLS
/// session gets its own plaintext connection to `upstream`.
async fn start_terminator(upstream: String, pki: &TestPki, client_auth: ClientAuth) -> String {
    let acceptor = TlsAcceptor::from(Arc::new(terminator_config(pki, client_auth)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(client).into_fallible().await {
                    Ok(tls) => tls,
                    // Read until the client hangs up, so that closing never resets a connection
                    // whose alert the client has yet to read.
                    Err((_, mut refused)) => {
                        let _ = tokio::io::copy(&mut refused, &mut tokio::io::sink()).await;
                        return;
                    }
                };
                let mut plain = TcpStream::connect(&upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    address
}

/// TLS settings that trust `pki`'s CA, with its client certificate when `with_identity`.
fn settings(pki: &TestPki, with_identity: bool) -> TlsSettings {
    let client_identity = with_identity.then(|| IdentityFiles {
        certificate: pki.client_cert_path.clone(),
        key: pki.client_key_path.clone(),
    });
    TlsSettings::load(TlsFiles {
        ca: pki.ca_path.clone(),
        client_identity,
        server_name: None,
    })
    .unwrap()
}

/// A client configuration for `address` over TLS with `tls`, with the fixed id `client_id`.
fn tls_config(address: &str, client_id: u64, tls: TlsSettings) -> ClientConfig {
    let mut config = client_config_with_id(address, client_id);
    config.tls = Some(tls);
    config
}

/// The same, for a client expected to fail: it gives up after a short deadline.
fn failing_config(address: &str, client_id: u64, tls: TlsSettings) -> ClientConfig {
    let mut config = tls_config(address, client_id, tls);
    config.outcome_deadline = Duration::from_millis(500);
    config.attempt_timeout = Duration::from_millis(500);
    config
}

/// The text of the error a client that cannot connect ends with.
async fn connect_error(config: ClientConfig) -> String {
    match Client::connect(config).await {
        Ok(_) => panic!("the client connected"),
        Err(error @ ClientError::Refused(_)) => error.to_string(),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// A client-fault seed that drops the reply to the first attempt of `withdrawal` and of nothing
/// else the test sends: the Verify before it, the second attempt, the re-login's Verify.
fn seed_dropping_the_first_reply(withdrawal: RequestId, others: &[RequestId]) -> u64 {
    let hits = |seed, id, attempt| faults::hits(seed, FaultKind::DropReply, id, attempt, 0.5);
    (1..)
        .find(|&seed| {
            hits(seed, withdrawal, 0)
                && !hits(seed, withdrawal, 1)
                && others.iter().all(|&other| !hits(seed, other, 0))
        })
        .unwrap()
}

/// Over TLS the client verifies and withdraws; a lost reply is retried on a new TLS connection
/// (verified again) with the same id, and a later replay of that id returns the same reply
/// without moving money again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_verifies_withdraws_and_replays_a_retry_over_tls() {
    let server = TestServer::start();
    let pki = TestPki::new();
    let address = start_terminator(server.address(), &pki, ClientAuth::None).await;
    let client_id = 51_001;
    let mut config = tls_config(&address, client_id, settings(&pki, false));
    let verify_id = RequestId {
        client: client_id,
        sequence: 1,
    };
    let withdrawal = RequestId {
        client: client_id,
        sequence: 2,
    };
    let relogin = RequestId {
        client: config.relogin_client_id,
        sequence: 1,
    };
    config.faults = FaultPlan {
        drop_reply: 0.5,
        seed: seed_dropping_the_first_reply(withdrawal, &[verify_id, relogin]),
        ..FaultPlan::default()
    };
    let mut client = Client::connect(config).await.unwrap();
    assert_eq!(
        client.verify(JOTY, JOTY_PIN).await.unwrap().status,
        Status::Approved
    );
    let before = server.committed_balance(JOTY).unwrap();
    let withdraw = Operation::Withdraw { amount: 250 };
    let reply = client
        .call_with_id(withdrawal, withdraw.clone())
        .await
        .unwrap();
    assert_eq!(reply.status, Status::Approved);
    assert_eq!(reply_balance(&reply), Some(before - 250));
    let stats = client.stats();
    assert_eq!(stats.replies_dropped, 1, "{stats:?}");
    assert_eq!(stats.connections, 2, "{stats:?}");

    let mut replayer = Client::connect(tls_config(&address, 51_002, settings(&pki, false)))
        .await
        .unwrap();
    assert_eq!(
        replayer.verify(JOTY, JOTY_PIN).await.unwrap().status,
        Status::Approved
    );
    let replayed = replayer.call_with_id(withdrawal, withdraw).await.unwrap();
    assert_eq!(replayed, reply);
    assert_eq!(server.committed_balance(JOTY), Some(before - 250));
}

/// With client certificates required, the client that presents one signed by the CA is served;
/// one without a certificate cannot get a session, and its error says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_the_client_with_a_certificate_and_refuses_the_one_without() {
    let server = TestServer::start();
    let pki = TestPki::new();
    let address = start_terminator(server.address(), &pki, ClientAuth::Required).await;

    let mut client = Client::connect(tls_config(&address, 52_001, settings(&pki, true)))
        .await
        .unwrap();
    assert_eq!(
        client.verify(JOTY, JOTY_PIN).await.unwrap().status,
        Status::Approved
    );
    let balance = client.balance().await.unwrap();
    assert_eq!(reply_balance(&balance), server.committed_balance(JOTY));

    let error = connect_error(failing_config(&address, 52_002, settings(&pki, false))).await;
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

/// A client that trusts another CA refuses the server's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_refuses_the_server() {
    let server = TestServer::start();
    let pki = TestPki::new();
    let stranger = TestPki::new();
    let address = start_terminator(server.address(), &pki, ClientAuth::None).await;
    let error = connect_error(failing_config(&address, 53_001, settings(&stranger, false))).await;
    assert!(error.contains("TLS handshake"), "{error}");
    assert!(
        error.contains("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
}

/// The name checked is the host part of the address unless one is given: a certificate for
/// `localhost` only is refused at 127.0.0.1, and accepted there with the name `localhost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_server_name_is_checked_instead_of_the_address() {
    let server = TestServer::start();
    let pki = TestPki::for_server_names(&["localhost"]);
    let address = start_terminator(server.address(), &pki, ClientAuth::None).await;
    let error = connect_error(failing_config(&address, 54_001, settings(&pki, false))).await;
    assert!(error.contains("certificate"), "{error}");

    let named = TlsSettings::load(TlsFiles {
        ca: pki.ca_path.clone(),
        client_identity: None,
        server_name: Some("localhost".into()),
    })
    .unwrap();
    let mut client = Client::connect(tls_config(&address, 54_002, named))
        .await
        .unwrap();
    assert_eq!(
        client.verify(JOTY, JOTY_PIN).await.unwrap().status,
        Status::Approved
    );
}

/// `atm --tls-ca … balance` works through the terminator; an unreadable CA file is bad usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atm_one_shot_balance_over_tls() {
    let server = TestServer::start();
    let pki = TestPki::new();
    let address = start_terminator(server.address(), &pki, ClientAuth::Required).await;
    let ca = pki.ca_path.to_str().unwrap();
    let cert = pki.client_cert_path.to_str().unwrap();
    let key = pki.client_key_path.to_str().unwrap();
    let card = JOTY.to_string();
    let (stdout, code) = common::run_atm(
        &address,
        &[
            "--tls-ca",
            ca,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "balance",
            "--card",
            &card,
            "--pin",
            JOTY_PIN,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}");
    let printed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(printed["status"], "approved", "{stdout}");
    assert_eq!(
        printed["balance"].as_u64(),
        server.committed_balance(JOTY),
        "{stdout}"
    );

    let missing = pki.directory().join("missing-ca.pem");
    let (stdout, code) = common::run_atm(
        &address,
        &[
            "--tls-ca",
            missing.to_str().unwrap(),
            "balance",
            "--card",
            &card,
            "--pin",
            JOTY_PIN,
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{stdout}");
}

/// A short swarm runs over mutual TLS and its audit finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_runs_over_tls() {
    let server = TestServer::start();
    let pki = TestPki::new();
    let address = start_terminator(server.address(), &pki, ClientAuth::Required).await;
    let mut config = SwarmConfig::new(Some(address));
    config.operator_token = OPERATOR_TOKEN.into();
    config.atms = 4;
    config.accounts = 4;
    config.stop = Stop::Operations(40);
    config.seed = 3;
    config.tls = Some(settings(&pki, true));
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(report.ops_acked > 0);
}
