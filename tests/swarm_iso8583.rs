//! The ATM swarm through the ISO 8583 door: lost requests and replies on the acquirer's side, so
//! withdrawals are reversed (0420, 0421 repeats) and deposits and inquiries repeated (0201), and
//! still every cent is accounted for.
use actor_bank::swarm::{self, FrontDoor, Stop, SwarmConfig};
use std::time::Duration;

/// The counter `name` of the report's ISO 8583 mechanics.
fn counter(report: &swarm::SwarmReport, name: &str) -> u64 {
    report.iso8583.get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iso8583_swarm_with_lost_messages_reverses_repeats_and_has_no_violations() {
    let mut config = SwarmConfig::new(None);
    config.front_door = FrontDoor::Iso8583;
    config.atms = 24;
    config.accounts = 8;
    config.mix = "withdraw=10,deposit=6,balance=3,reverse=3".parse().unwrap();
    // Six hundred operations with one message in ten lost each way meet dozens of reversals and
    // repeats (each lost message costs an ATM at most an attempt timeout).
    config.stop = Stop::Operations(600);
    config.seed = 17;
    config.attempt_timeout = Duration::from_millis(300);
    config.client_faults = "drop-request=0.1,drop-reply=0.1".parse().unwrap();
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert_eq!(report.front_door, "iso8583");
    assert!(report.ops_acked >= 600 - 24, "acked {}", report.ops_acked);
    for name in [
        "sign_ons",
        "reversals",
        "reversal_repeats",
        "repeats",
        "replays",
    ] {
        assert!(
            counter(&report, name) > 0,
            "no {name}: {:?}",
            report.iso8583
        );
    }
    assert!(
        counter(&report, "reversed") > 0,
        "no reversal recorded: {:?}",
        report.iso8583
    );
    assert!(
        report.faults["client_replies_dropped"] > 0 && report.faults["client_requests_dropped"] > 0,
        "{:?}",
        report.faults
    );
    for probe in [
        "original_after_its_reversal_refused",
        "keep_alive_answered",
        "echo_before_sign_on_refused",
        "financial_after_sign_off_refused",
    ] {
        assert!(
            report.probes.get(probe).copied().unwrap_or(0) > 0,
            "no {probe}: {:?}",
            report.probes
        );
    }
    assert!(report.flows.withdrawals > 0 && report.flows.deposits > 0);
    assert!(report.flows.reversals > 0, "{:?}", report.flows);
}

/// Requests and replies lost on the bank's side: the acquirer's waits time out for real, late
/// replies find nobody waiting, reversals race their originals; still every cent is accounted
/// for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iso8583_swarm_with_losses_on_the_bank_side_has_no_violations() {
    let mut config = SwarmConfig::new(None);
    config.front_door = FrontDoor::Iso8583;
    config.atms = 16;
    config.accounts = 6;
    config.mix = "withdraw=10,deposit=6,balance=3,reverse=3".parse().unwrap();
    config.stop = Stop::Operations(400);
    config.seed = 19;
    config.attempt_timeout = Duration::from_millis(300);
    config.server_faults = Some("drop-request=0.03,drop-reply=0.03,seed=19".parse().unwrap());
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(report.ops_acked >= 400 - 16, "acked {}", report.ops_acked);
    assert!(
        report.faults["server_requests_dropped"] > 0 && report.faults["server_replies_dropped"] > 0,
        "{:?}",
        report.faults
    );
    for name in ["reversals", "reversed", "repeats"] {
        assert!(
            counter(&report, name) > 0,
            "no {name}: {:?}",
            report.iso8583
        );
    }
}
