//! Short ATM swarms: many concurrent ATMs with injected faults, audited to the cent.
mod common;

use actor_bank::protocol::{Movement, MovementKind, RequestId};
use actor_bank::swarm::{self, AccountExpectation, Flows, Observation, Stop, SwarmConfig};
use std::time::Duration;

/// The operation kinds of the banking mix, each of which must really run.
const BANKING_KINDS: [&str; 6] = [
    "transfer",
    "hold",
    "complete_hold",
    "void_hold",
    "reverse",
    "statement",
];

/// Every banking kind got approved replies, and both provoked refusals came.
fn assert_banking_ran(report: &swarm::SwarmReport) {
    for kind in BANKING_KINDS {
        let approved = report
            .operations
            .get(kind)
            .map_or(0, |counts| counts.approved);
        assert!(approved > 0, "no {kind} approved: {:#?}", report.operations);
    }
    for probe in ["hold_resolved_again", "original_after_its_reversal_refused"] {
        assert!(
            report.probes.get(probe).copied().unwrap_or(0) > 0,
            "no {probe}: {:?}",
            report.probes
        );
    }
    assert!(report.flows.transfers > 0 && report.flows.reversals > 0);
    assert!(report.flows.holds_completed > 0, "{:?}", report.flows);
}

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
    let mut config =
        common::kill_9_restart_swarm(data_dir.path(), "chaos-operator-token-5e8a1f3c9d2b7046", "");
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

/// The banking mix (transfers, holds completed in full or in part and voided, reversals, one
/// before its original, statements) under client- and server-side faults and kill -9 restarts of
/// the server: every acknowledged operation applied once, transfers delivered, totals conserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banking_mix_survives_faults_and_restarts() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = common::kill_9_restart_swarm(
        data_dir.path(),
        "banking-operator-token-7b1e9c3a5d2f4068",
        "",
    );
    config.mix = "withdraw=20,deposit=15,balance=5,transfer=15,hold=10,complete=8,void=8,reverse=12,statement=7"
        .parse()
        .unwrap();
    config.atms = 16;
    config.accounts = 6;
    config.stop = Stop::After(Duration::from_secs(6));
    config.seed = 23;
    config.attempt_timeout = Duration::from_millis(300);
    config.client_faults = "drop-request=0.03,drop-reply=0.03".parse().unwrap();
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(report.restarts >= 1, "only {} restarts", report.restarts);
    assert!(
        report.faults["client_replies_dropped"] > 0,
        "{:?}",
        report.faults
    );
    assert_banking_ran(&report);
}

/// The same mix against the in-process server with server-side faults and account-actor
/// crashes: the audit reads the committed ledger's transit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banking_mix_survives_actor_crashes() {
    let mut config = SwarmConfig::new(None);
    config.mix = "withdraw=20,deposit=15,balance=5,transfer=15,hold=10,complete=8,void=8,reverse=12,statement=7"
        .parse()
        .unwrap();
    config.atms = 16;
    config.accounts = 6;
    config.stop = Stop::Operations(800);
    config.seed = 29;
    config.attempt_timeout = Duration::from_millis(300);
    config.server_faults = Some(
        "drop-request=0.02,drop-reply=0.02,crash-actor=0.03,seed=29"
            .parse()
            .unwrap(),
    );
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(
        report.faults["server_actor_crashes"] > 0,
        "{:?}",
        report.faults
    );
    assert_banking_ran(&report);
}

fn movement(kind: MovementKind, amount: u64, sequence: u64, balance_after: u64) -> Movement {
    Movement {
        at_unix_ms: 1,
        kind,
        amount,
        request: RequestId {
            client: 9,
            sequence,
        },
        balance_after,
    }
}

/// A consistent observation passes; each kind of inconsistency is caught, so the audit cannot
/// pass for want of looking.
#[test]
fn the_audit_catches_fabricated_inconsistencies() {
    let expected = AccountExpectation {
        card: 4_000_000_001,
        pin: "1234".into(),
        expected_balance: 1_050,
        expected_available: 1_000,
    };
    let movements = vec![
        movement(MovementKind::Opened, 1_000, 0, 1_000),
        movement(MovementKind::Withdrawal, 100, 1, 900),
        movement(MovementKind::TransferIn, 200, 2, 1_100),
        movement(MovementKind::HoldCompleted, 50, 3, 1_050),
    ];
    let good = Observation {
        card: expected.card,
        ledger: 1_050,
        available: 1_000,
        movements,
    };
    assert_eq!(
        swarm::account_violations(&expected, &good),
        Vec::<String>::new()
    );

    let mut wrong_balance = good.clone();
    wrong_balance.ledger = 1_150;
    assert!(!swarm::account_violations(&expected, &wrong_balance).is_empty());

    let mut wrong_available = good.clone();
    wrong_available.available = 1_050;
    assert!(!swarm::account_violations(&expected, &wrong_available).is_empty());

    // A withdrawal whose balance went up, and a movement applied twice.
    let mut wrong_direction = good.clone();
    wrong_direction.movements[1].balance_after = 1_100;
    wrong_direction.movements[2].balance_after = 1_300;
    wrong_direction.movements[3].balance_after = 1_250;
    assert!(
        !swarm::statement_violations(expected.card, &wrong_direction.movements, None).is_empty()
    );
    let mut twice = good.movements.clone();
    twice.push(movement(MovementKind::Deposit, 0, 3, 1_050));
    twice[4].kind = MovementKind::HoldCompleted;
    assert!(!swarm::statement_violations(expected.card, &twice, None).is_empty());

    // A statement that does not end at the ledger balance.
    assert!(!swarm::statement_violations(expected.card, &good.movements, Some(900)).is_empty());

    let flows = Flows {
        opening: 2_000,
        deposits: 100,
        withdrawals: 100,
        reversals: 0,
        holds_completed: 50,
        transfers: 200,
    };
    assert!(swarm::totals_violations(&flows, &[1_050, 900]).is_empty());
    assert!(!swarm::totals_violations(&flows, &[1_050, 1_000]).is_empty());
}

/// Switch mode: 16 terminals share 2 connections, their requests pipelined on them, under
/// client-side faults: every cent accounted for, and a connection really carried several
/// requests at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_pipelines_terminals_over_few_connections_without_violations() {
    let mut config = SwarmConfig::new(None);
    config.connections = Some(2);
    config.in_flight = 8;
    config.accounts = 20;
    // Several operations per verified card, so holds are resolved and withdrawals reversed on
    // the card they were made on.
    config.operations_per_card = 4;
    config.stop = Stop::Operations(200);
    config.seed = 19;
    config.attempt_timeout = Duration::from_millis(300);
    config.client_faults = "drop-request=0.05,drop-reply=0.05".parse().unwrap();
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(report.ops_acked >= 200 - 16, "acked {}", report.ops_acked);
    let switch = report.switch.expect("a switch run reports its lines");
    assert_eq!((switch.connections, switch.in_flight), (2, 8));
    assert!(
        switch.in_flight_max_seen > 1,
        "never more than one request in flight: {switch:?}"
    );
    // A round reuses the line's login when it draws the card verified last; each line verified
    // at least once.
    assert!(
        switch.verifies >= 2 && switch.verifies <= switch.rounds,
        "{switch:?}"
    );
    let faults = report.faults["client_requests_dropped"] + report.faults["client_replies_dropped"];
    assert!(faults > 0, "{:?}", report.faults);
    assert!(report.retries > 0);
}

/// Switch mode against the real server binary, SIGKILLed and restarted under load: every line
/// reconnects, verifies its round's card again and re-sends its unanswered requests with their
/// ids; still exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_reconnects_and_reverifies_through_kill_9_restarts() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = common::kill_9_restart_swarm(
        data_dir.path(),
        "switch-operator-token-4d9b2e7a1c6f3085",
        "",
    );
    config.connections = Some(2);
    config.in_flight = 8;
    config.accounts = 10;
    config.operations_per_card = 4;
    config.stop = Stop::After(Duration::from_secs(6));
    config.seed = 31;
    config.attempt_timeout = Duration::from_millis(300);
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(report.restarts >= 1, "only {} restarts", report.restarts);
    let switch = report.switch.expect("a switch run reports its lines");
    // Each restart breaks both lines: they open new connections.
    assert!(switch.connections_opened > 2, "{switch:?}");
    assert!(switch.in_flight_max_seen > 1, "{switch:?}");
    assert!(report.ops_acked > 0);
}

/// ATMs that send the card's PIN with every request (`ForCard`) under client- and server-side
/// faults and account-actor crashes: they never verify a card on their connections, and every
/// cent is accounted for. The same mix sent the usual way verifies a card per customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atms_that_send_the_pin_with_each_request_verify_no_card_and_lose_no_cent() {
    let config = |pin_with_each: bool| {
        let mut config = SwarmConfig::new(None);
        config.mix = "withdraw=40,deposit=25,balance=10,transfer=15,statement=10"
            .parse()
            .unwrap();
        config.atms = 16;
        config.accounts = 6;
        config.stop = Stop::Operations(600);
        config.seed = 31;
        config.pin_with_each = pin_with_each;
        config.attempt_timeout = Duration::from_millis(300);
        config
    };
    let mut faulty = config(true);
    faulty.client_faults = "drop-request=0.03,drop-reply=0.03".parse().unwrap();
    faulty.server_faults = Some(
        "drop-request=0.02,drop-reply=0.02,crash-actor=0.03,seed=31"
            .parse()
            .unwrap(),
    );
    let report = swarm::run(faulty).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert_eq!(report.logins, 0, "a Verify was sent");
    for kind in ["withdraw", "deposit", "transfer", "statement"] {
        let approved = report
            .operations
            .get(kind)
            .map_or(0, |counts| counts.approved);
        assert!(approved > 0, "no {kind} approved: {:#?}", report.operations);
    }
    assert!(
        report.faults["server_actor_crashes"] > 0,
        "{:?}",
        report.faults
    );
    assert!(report.retries > 0, "no retry met a lost request or reply");

    let usual = swarm::run(config(false)).await.unwrap();
    assert_eq!(usual.violations, 0, "{:#?}", usual.violation_details);
    assert!(usual.logins > 0, "the usual way verifies cards");
}
