//! Switch mode through the ISO 8583 door: many terminals share a few acquirer connections, each
//! connection signed on once for all of them, their 0200s (each carrying its PIN block) in
//! flight together and their replies matched by terminal and STAN.
mod common;

use actor_bank::client::iso8583::PinBlocks;
use actor_bank::swarm::{self, FrontDoor, Stop, SwarmConfig};
use std::time::Duration;

/// The counter `name` of the report's ISO 8583 mechanics.
fn counter(report: &swarm::SwarmReport, name: &str) -> u64 {
    report.iso8583.get(name).copied().unwrap_or(0)
}

/// 16 terminals on 2 ISO 8583 connections, under client-side losses (so withdrawals are
/// reversed and messages repeated on the shared connection): every cent accounted for, and a
/// connection really carried several messages at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iso8583_switch_pipelines_terminals_over_few_connections_without_violations() {
    let mut config = SwarmConfig::new(None);
    config.front_door = FrontDoor::Iso8583;
    config.connections = Some(2);
    config.in_flight = 8;
    config.accounts = 20;
    config.mix = "withdraw=10,deposit=6,balance=3".parse().unwrap();
    config.stop = Stop::Operations(300);
    config.seed = 23;
    config.attempt_timeout = Duration::from_millis(300);
    config.client_faults = "drop-request=0.05,drop-reply=0.05".parse().unwrap();
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert_eq!(report.front_door, "iso8583");
    assert!(report.ops_acked >= 300 - 16, "acked {}", report.ops_acked);
    let switch = report.switch.expect("a switch run reports its lines");
    assert_eq!((switch.connections, switch.in_flight), (2, 8));
    assert!(
        switch.in_flight_max_seen > 1,
        "never more than one message in flight: {switch:?}"
    );
    // Each line signed on its connection (once, unless it broke).
    assert!(switch.connections_opened >= 2, "{switch:?}");
    assert!(counter(&report, "sign_ons") >= 2, "{:?}", report.iso8583);
    // Lost messages were repeated or reversed on the shared connections.
    assert!(
        counter(&report, "repeats") + counter(&report, "reversals") > 0,
        "{:?}",
        report.iso8583
    );
    assert!(report.flows.withdrawals > 0 && report.flows.deposits > 0);
}

/// The same against the real server binary, SIGKILLed and restarted under load: each line opens
/// a new connection and signs it on again, and its terminals repeat or reverse what went
/// unanswered; still every cent accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iso8583_switch_reconnects_and_signs_on_again_through_kill_9_restarts() {
    let data_dir = tempfile::tempdir().unwrap();
    // The door's port is fixed for the run (every successor opens it again): one the system
    // gave, released for the server.
    let iso_address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = common::kill_9_restart_swarm(
        data_dir.path(),
        "iso-switch-operator-token-7c1e5a9d3b2f4086",
        &format!("--iso8583-listen {iso_address} --iso8583-clear-pin-blocks"),
    );
    config.front_door = FrontDoor::Iso8583;
    config.iso8583_address = Some(iso_address.to_string());
    config.iso8583_pins = Some(PinBlocks::Clear);
    config.connections = Some(2);
    config.in_flight = 8;
    config.accounts = 10;
    config.mix = "withdraw=10,deposit=6,balance=3".parse().unwrap();
    config.stop = Stop::After(Duration::from_secs(6));
    config.seed = 37;
    config.attempt_timeout = Duration::from_millis(300);
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(report.restarts >= 1, "only {} restarts", report.restarts);
    let switch = report.switch.expect("a switch run reports its lines");
    // Each restart breaks both lines: they open new connections and sign them on.
    assert!(switch.connections_opened > 2, "{switch:?}");
    assert!(counter(&report, "sign_ons") > 2, "{:?}", report.iso8583);
    assert!(switch.in_flight_max_seen > 1, "{switch:?}");
    assert!(report.ops_acked > 0);
}
