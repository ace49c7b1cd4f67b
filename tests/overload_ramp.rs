//! The swarm's load ramp, tiny: two steps of a few ATMs against an in-process server. Only what
//! holds on any machine is checked: every ATM got definite answers, the audit found nothing, and
//! the steps account for every acknowledged operation.
use actor_bank::swarm::{self, Stop, SwarmConfig};

/// Two steps (2, then 4 ATMs), each ending after 40 operations: no violation, one report per
/// step with its number of ATMs, and the steps' operations add up to the run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_step_ramp_is_audited_clean_and_reports_each_step() {
    let mut config = SwarmConfig::new(None);
    config.accounts = 4;
    config.seed = 21;
    config.ramp = vec![2, 4];
    config.ramp_step = Stop::Operations(40);
    let report = swarm::run(config).await.unwrap();
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    let atms: Vec<usize> = report.ramp.iter().map(|step| step.atms).collect();
    assert_eq!(atms, [2, 4]);
    let acked: u64 = report.ramp.iter().map(|step| step.ops_acked).sum();
    assert_eq!(acked, report.ops_acked);
    assert!(report.ops_acked >= 80, "acked {}", report.ops_acked);
}
