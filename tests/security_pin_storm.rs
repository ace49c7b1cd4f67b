//! A login storm at the default settings stays cheap: 256 concurrent Verifys (four connections,
//! 64 pipelined each) of a keyed PIN all succeed without touching the argon2id pool, and the same
//! storm against an account of the first release, hashed at the old default cost (19 MiB, two
//! passes), runs at most one hash per core at once, queues at most the pool's limit, refuses the
//! rest `busy`, and keeps the process's peak memory within a few hashes' worth. (The first
//! release hashed every Verify on a blocking pool of up to 512 threads: 64 in flight on one
//! connection took it past 4 GiB.) Alone in its own test binary, so the peak resident memory
//! measured from /proc is this storm's.
mod common;
use common::{request_frame, verify, TestServer, JOTY, JOTY_PIN};

use actor_bank::pin::PinHashCost;
use actor_bank::protocol::Status;
use actor_bank::server::Limits;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Connections in the storm.
const CONNECTIONS: u64 = 4;
/// Verifys pipelined on each (the default in-flight limit).
const PIPELINED: u64 = 64;

/// The process's peak resident memory in KiB (VmHWM), where /proc tells it.
fn peak_resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends every connection's Verifys in one write each, then counts the replies by status.
async fn storm(server: &TestServer, round: u64, card: u64, pin_text: &str) -> HashMap<Status, u64> {
    let mut connections = Vec::new();
    for connection in 0..CONNECTIONS {
        let mut atm = server.raw().await;
        let client = 1_000 * round + connection;
        let frames: Vec<u8> = (1..=PIPELINED)
            .flat_map(|sequence| request_frame(client, sequence, verify(card, pin_text)))
            .collect();
        atm.send_bytes(&frames).await;
        connections.push(atm);
    }
    let mut statuses = HashMap::new();
    for atm in &mut connections {
        for _ in 0..PIPELINED {
            let (reply, _) = atm.receive_reply().await;
            *statuses.entry(reply.status).or_default() += 1;
        }
    }
    statuses
}

#[test]
fn a_login_storm_at_the_default_settings_stays_cheap() {
    const LEGACY: u64 = 246_813_579;
    let data_dir = tempfile::tempdir().unwrap();
    let record = common::durability::legacy_opening(LEGACY, "8642", PinHashCost::default());
    common::durability::write_journal(data_dir.path(), &[record], 1_000_000);
    let mut config = common::test_config(data_dir.path());
    // Every limit at its default, the failure limits included.
    config.limits = Limits::default();
    let server = TestServer::on(data_dir, config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let before_kib = peak_resident_kib();
    let pins = server.running().bank().pins();

    let keyed = runtime.block_on(storm(&server, 1, JOTY, JOTY_PIN));
    assert_eq!(
        keyed.get(&Status::Approved),
        Some(&(CONNECTIONS * PIPELINED)),
        "{keyed:?}"
    );
    assert_eq!(pins.pool().threads.load(Ordering::Relaxed), 0);

    let legacy = runtime.block_on(storm(&server, 2, LEGACY, "8642"));
    let approved = legacy.get(&Status::Approved).copied().unwrap_or(0);
    let busy = legacy.get(&Status::Busy).copied().unwrap_or(0);
    assert_eq!(approved + busy, CONNECTIONS * PIPELINED, "{legacy:?}");
    assert!(approved >= 1, "{legacy:?}");
    let pool = pins.pool();
    let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    let threads = pool.threads.load(Ordering::Relaxed);
    assert!((1..=cores).contains(&threads), "{threads} threads");
    assert!(pool.running_peak.load(Ordering::Relaxed) <= threads);
    let queue_max = Limits::default().pin_check_queue_max;
    assert!(pool.queued_peak.load(Ordering::Relaxed) <= queue_max);
    assert_eq!(pool.refused.load(Ordering::Relaxed), busy);
    assert!(
        pool.done.load(Ordering::Relaxed) <= (queue_max + threads) as u64,
        "at most a queue and a pool's worth of hashes ran"
    );
    assert!(pins.stats.rekeyed.load(Ordering::Relaxed) >= 1);
    // The card is re-keyed: a second storm costs no hash at all.
    let done = pool.done.load(Ordering::Relaxed);
    let again = runtime.block_on(storm(&server, 3, LEGACY, "8642"));
    assert_eq!(
        again.get(&Status::Approved),
        Some(&(CONNECTIONS * PIPELINED))
    );
    assert_eq!(pool.done.load(Ordering::Relaxed), done);

    if let (Some(before), Some(after)) = (before_kib, peak_resident_kib()) {
        // One 19 MiB working memory per pool thread, kept and reused. The unbounded pool needed
        // 64 × 19 MiB for one connection's storm.
        let grown_mib = after.saturating_sub(before) / 1024;
        let bound_mib = 19 * threads as u64 + 32;
        assert!(
            grown_mib < bound_mib,
            "peak memory grew by {grown_mib} MiB (bound {bound_mib} MiB)"
        );
        println!("peak resident memory grew by {grown_mib} MiB during the storms");
    }
}
