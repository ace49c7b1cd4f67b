//! Short ATM swarms: many concurrent ATMs with injected faults, audited to the cent.
use actor_bank::swarm::{self, Stop, SwarmConfig};
use std::time::Duration;

/// Client- and server-side faults and account-actor crashes: every cent is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_with_faults_and_actor_crashes_has_no_violations() {
    let mut config = SwarmConfig::new(None);
    config.atms = 40;
    config.accounts = 12;
    // A thousand operations meet dozens of every fault kind (each lost one costs an ATM an
    // attempt timeout, so more only make the test slower).
    config.stop = Stop::Operations(1_000);
    config.seed = 7;
    config.attempt_timeout = Duration::from_millis(300);
    config.client_faults = "drop-request=0.05,drop-reply=0.05".parse().unwrap();
    config.server_faults = Some(
        "drop-request=0.02,drop-reply=0.02,crash-actor=0.03,seed=7"
            .parse()
            .unwrap(),
    );
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(report.ops_acked >= 1_000 - 40, "acked {}", report.ops_acked);
    assert!(
        report.faults["server_actor_crashes"] > 0,
        "{:?}",
        report.faults
    );
    assert!(
        report.faults["server_actor_restarts"] > 0,
        "{:?}",
        report.faults
    );
    assert!(
        report.faults["client_replies_dropped"] > 0,
        "{:?}",
        report.faults
    );
    assert!(report.retries > 0);
}

/// The server process is SIGKILLed and restarted again and again under load: still exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_survives_kill_9_chaos_restarts() {
    let data_dir = tempfile::tempdir().unwrap();
    // The first server binds a port of its own choosing and reports it; its successors are
    // started on that address.
    let address = "127.0.0.1:0".to_string();
    let command = format!(
        "{} --listen {{listen}} --data-dir {} --operator-token chaos-operator-token-5e8a1f3c9d2b7046 --pin-hash-memory-kib 8 --pin-hash-iterations 1",
        env!("CARGO_BIN_EXE_bank-server"),
        data_dir.path().display()
    );
    let mut config = SwarmConfig::new(Some(address));
    config.operator_token = "chaos-operator-token-5e8a1f3c9d2b7046".into();
    config.server_command = Some(command);
    config.chaos_restart = Some(Duration::from_millis(1_500));
    config.atms = 24;
    config.accounts = 8;
    config.stop = Stop::After(Duration::from_secs(8));
    config.seed = 11;
    config.attempt_timeout = Duration::from_millis(300);
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    // Kills come every 1.5 s after the previous server listens: within 8 s at least two, even
    // when each start takes seconds on a loaded machine.
    assert!(report.restarts >= 2, "only {} restarts", report.restarts);
    assert!(report.ops_acked > 0);
}
