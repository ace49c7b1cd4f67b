//! Daily withdrawal limits against the real server over TCP: a card's own limits (set by the
//! operator) refuse by count and by amount, holds count too, a reversal or a void gives the
//! limit back, a new business day in the configured time zone starts afresh, and the server-wide
//! defaults apply to cards with none of their own.
#[path = "common/banking.rs"]
mod banking;
mod common;

use actor_bank::client::ops::Management;
use actor_bank::protocol::{Operation, Status};
use banking::*;
use common::TestServer;
use std::time::Duration;

const CARD: u64 = 34_001;

/// Three withdrawals a day: the fourth is `withdrawal_count_exceeded`; a full reversal gives
/// one back. 1000 a day: past it is `withdrawal_limit_exceeded`. The operator sees the usage.
#[tokio::test]
async fn a_cards_own_limits_refuse_by_count_and_by_amount() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    let mut atm = opened_teller(&server, CARD, 5_000).await;
    manage_ok(&mut operator, CARD, Management::SetLimits(limits(1_000, 3))).await;
    let first = atm.next_id();
    let reply = atm
        .call_with_id(first, Operation::Withdraw { amount: 600 })
        .await
        .unwrap();
    assert_reply(&reply, Status::Approved, (4_400, 4_400));
    let reply = atm.withdraw(401).await.unwrap();
    assert_reply(&reply, Status::WithdrawalLimitExceeded, (4_400, 4_400));
    assert_eq!(atm.withdraw(300).await.unwrap().status, Status::Approved);
    assert_eq!(atm.withdraw(100).await.unwrap().status, Status::Approved);
    let used = details(&mut operator, CARD).await;
    assert_eq!((used.withdrawals_today, used.withdrawn_today), (3, 1_000));
    assert_eq!((used.limits, used.own_limits), (limits(1_000, 3), true));
    let reply = atm.withdraw(1).await.unwrap();
    assert_reply(&reply, Status::WithdrawalCountExceeded, (4_000, 4_000));
    // The count is checked before the amount.
    let reply = atm.withdraw(5_000).await.unwrap();
    assert_eq!(reply.status, Status::WithdrawalCountExceeded);
    // A full reversal gives the withdrawal and its amount back to today's limits.
    let reply = atm.reverse(first, None).await.unwrap();
    assert_reply(&reply, Status::Approved, (4_600, 4_600));
    let used = details(&mut operator, CARD).await;
    assert_eq!((used.withdrawals_today, used.withdrawn_today), (2, 400));
    assert_eq!(atm.withdraw(600).await.unwrap().status, Status::Approved);
    assert_eq!(
        atm.withdraw(1).await.unwrap().status,
        Status::WithdrawalCountExceeded
    );
    assert!(conserved(&server));
}

/// A hold counts against the limits like a withdrawal; voiding it gives it back, a partial
/// completion gives back the rest of the amount.
#[tokio::test]
async fn holds_count_against_the_limits_and_releases_give_back() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    let mut atm = opened_teller(&server, CARD, 5_000).await;
    manage_ok(&mut operator, CARD, Management::SetLimits(limits(500, 2))).await;
    let hold = hold_id(&atm.place_hold(400).await.unwrap());
    let reply = atm.place_hold(101).await.unwrap();
    assert_reply(&reply, Status::WithdrawalLimitExceeded, (5_000, 4_600));
    let reply = atm.withdraw(101).await.unwrap();
    assert_eq!(reply.status, Status::WithdrawalLimitExceeded);
    assert_eq!(atm.void_hold(hold).await.unwrap().status, Status::Approved);
    let used = details(&mut operator, CARD).await;
    assert_eq!((used.withdrawals_today, used.withdrawn_today), (0, 0));
    let hold = hold_id(&atm.place_hold(500).await.unwrap());
    let reply = atm.complete_hold(hold, Some(200)).await.unwrap();
    assert_reply(&reply, Status::Approved, (4_800, 4_800));
    let used = details(&mut operator, CARD).await;
    assert_eq!((used.withdrawals_today, used.withdrawn_today), (1, 200));
    assert_eq!(atm.withdraw(300).await.unwrap().status, Status::Approved);
    assert_eq!(
        atm.withdraw(1).await.unwrap().status,
        Status::WithdrawalCountExceeded
    );
}

/// The business day follows the configured time zone: the manual clock starts at 09:00 in
/// Tokyo, so 14 hours later it is still the same day there (refused), and a little over an
/// hour later it is the next day (allowed again), while in UTC it would still be the first day.
#[tokio::test]
async fn a_new_business_day_in_the_time_zone_resets_the_limits() {
    let (server, clock) = with_manual_clock(|config| {
        config.banking.time_zone = chrono_tz::Asia::Tokyo;
    });
    let mut operator = operator(&server).await;
    let mut atm = opened_teller(&server, CARD, 5_000).await;
    manage_ok(&mut operator, CARD, Management::SetLimits(limits(1_000, 1))).await;
    assert_eq!(atm.withdraw(700).await.unwrap().status, Status::Approved);
    assert_eq!(
        atm.withdraw(1).await.unwrap().status,
        Status::WithdrawalCountExceeded
    );
    clock.advance(Duration::from_secs(14 * 3_600));
    assert_eq!(
        atm.withdraw(1).await.unwrap().status,
        Status::WithdrawalCountExceeded
    );
    clock.advance(Duration::from_secs(3_600 + 60));
    let reply = atm.withdraw(1_000).await.unwrap();
    assert_reply(&reply, Status::Approved, (3_300, 3_300));
    let used = details(&mut operator, CARD).await;
    assert_eq!((used.withdrawals_today, used.withdrawn_today), (1, 1_000));
    let reply = atm.withdraw(1).await.unwrap();
    assert_eq!(reply.status, Status::WithdrawalCountExceeded);
}

/// The same clock with the business day in UTC: 15 hours on it is still the first day.
#[tokio::test]
async fn the_business_day_in_utc_has_not_turned_yet() {
    let (server, clock) = with_manual_clock(|_| {});
    let mut operator = operator(&server).await;
    let mut atm = opened_teller(&server, CARD, 5_000).await;
    manage_ok(&mut operator, CARD, Management::SetLimits(limits(1_000, 1))).await;
    assert_eq!(atm.withdraw(700).await.unwrap().status, Status::Approved);
    clock.advance(Duration::from_secs(15 * 3_600 + 60));
    assert_eq!(
        atm.withdraw(1).await.unwrap().status,
        Status::WithdrawalCountExceeded
    );
    clock.advance(Duration::from_secs(9 * 3_600));
    assert_eq!(atm.withdraw(1).await.unwrap().status, Status::Approved);
}

/// The server-wide defaults (`banking.daily_limits`) apply to every card without limits of its
/// own; the operator's limits replace them for one card.
#[tokio::test]
async fn the_server_wide_defaults_apply_until_a_card_has_its_own() {
    const OWN: u64 = 34_002;
    let server = TestServer::start_with(|config| {
        config.banking.daily_limits = limits(500, 2);
    });
    let mut operator = operator(&server).await;
    let mut atm = opened_teller(&server, CARD, 5_000).await;
    let mut own = opened_teller(&server, OWN, 5_000).await;
    manage_ok(&mut operator, OWN, Management::SetLimits(limits(5_000, 10))).await;
    let shown = details(&mut operator, CARD).await;
    assert_eq!((shown.limits, shown.own_limits), (limits(500, 2), false));
    assert_eq!(atm.withdraw(300).await.unwrap().status, Status::Approved);
    let reply = atm.withdraw(300).await.unwrap();
    assert_reply(&reply, Status::WithdrawalLimitExceeded, (4_700, 4_700));
    assert_eq!(atm.withdraw(200).await.unwrap().status, Status::Approved);
    let reply = atm.withdraw(1).await.unwrap();
    assert_eq!(reply.status, Status::WithdrawalCountExceeded);
    for _ in 0..3 {
        assert_eq!(own.withdraw(600).await.unwrap().status, Status::Approved);
    }
    // Limits survive a restart (the defaults come from the configuration).
    drop((atm, own));
    let mut server = server;
    server.restart(|config| config.banking.daily_limits = limits(500, 2));
    let mut atm = teller(&server, CARD, PIN).await;
    assert_eq!(
        atm.withdraw(1).await.unwrap().status,
        Status::WithdrawalCountExceeded
    );
    let mut own = teller(&server, OWN, PIN).await;
    assert_eq!(own.withdraw(600).await.unwrap().status, Status::Approved);
    // Dropping the card's own limits brings the server's back: 4 × 600 today is over 500.
    let mut admin = banking::operator(&server).await;
    manage_ok(&mut admin, OWN, Management::ClearLimits).await;
    let shown = details(&mut admin, OWN).await;
    assert_eq!((shown.limits, shown.own_limits), (limits(500, 2), false));
    assert_eq!(
        own.withdraw(1).await.unwrap().status,
        Status::WithdrawalCountExceeded
    );
}
