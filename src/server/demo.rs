//! The lab's sample accounts (`--demo`), opened through the same path as any `CreateAccount`.
//!
//! Each is an [`Event::AccountOpened`] decided by its account actor under the operator principal
//! (the actor stamps it with the bank's clock, the journal records it, the memory of completed
//! requests remembers it) with a fixed request id: client [`SERVER_CLIENT_ID`], sequence 1 for
//! the first account, 2 for the second. The server waits until both are durable before it
//! starts accepting connections. On a data directory that already has a sample account, that
//! account is left as it is: it is not asked for again, and an answer `card_exists` (its card was
//! opened by the operator some other way) counts as done. Should the operator have used one of
//! these ids for a request of its own (the memory answers `stale_request` or
//! `request_id_conflict`), the account is opened under the next sequence client
//! [`SERVER_CLIENT_ID`] has not used.

use super::Bank;
use crate::ledger::{Event, Principal};
use crate::model::{Amount, Card, Code, RequestId};
use crate::storage::Placement;
use std::sync::Arc;

/// One sample account: card, holder, PIN, balance.
type DemoAccount = (Card, &'static str, &'static str, Amount);

/// The lab's sample accounts: card, holder, PIN, balance.
pub const DEMO_ACCOUNTS: [DemoAccount; 2] = [
    (123_456_789, "Joty", "1234", 10_000),
    (987_654_321, "Ahona", "5678", 5_000),
];

/// The reserved client id of requests the server makes itself (opening the demo accounts, with
/// sequence numbers 1 and 2). These ids are in the operator's memory of completed requests like
/// any other: an operator who reuses them gets the sample account's opening replayed.
pub const SERVER_CLIENT_ID: u64 = 0;

/// Opens the demo accounts that do not exist yet, and waits until they are durable. Both are
/// submitted before either is waited for, so that they share one group commit.
pub(super) async fn open_demo_accounts(bank: &Arc<Bank>) -> Result<(), String> {
    let missing: Vec<_> = DEMO_ACCOUNTS
        .iter()
        .enumerate()
        .filter(|(_, (card, ..))| !bank.storage().committed_account_exists(*card))
        // In cluster mode, only those of the partitions this node serves: the node serving the
        // others opens them when started with `--demo`.
        .filter(|(_, (card, ..))| bank.storage().placement(*card) == Placement::Here)
        .map(|(index, account)| (index as u64 + 1, account))
        .collect();
    let submitted: Vec<_> = missing
        .iter()
        .map(|(sequence, account)| {
            bank.submit(account.0, request(*sequence), opening(bank, account))
        })
        .collect();
    for ((_, account), submitted) in missing.iter().zip(submitted) {
        let mut status = bank.settle(submitted).await.status;
        if matches!(status, Code::StaleRequest | Code::RequestIdConflict) {
            // The operator used this id for another request: take the next unused one.
            let retry = request(sequence_unused(bank));
            status = bank
                .decide(account.0, retry, opening(bank, account))
                .await
                .status;
        }
        if !matches!(status, Code::Approved | Code::CardExists) {
            return Err(format!(
                "cannot open the demo account {}: {status:?}",
                account.0
            ));
        }
    }
    Ok(())
}

/// The opening of one of [`DEMO_ACCOUNTS`], its PIN under the bank's key.
fn opening(bank: &Bank, (card, holder, pin_text, balance): &DemoAccount) -> Event {
    Event::AccountOpened {
        holder: holder.to_string(),
        pin_hash: bank.pins().key().verifier(*card, pin_text),
        initial_balance: *balance,
    }
}

/// The server's request with `sequence`.
fn request(sequence: u64) -> RequestId {
    RequestId {
        client: SERVER_CLIENT_ID,
        sequence,
    }
}

/// The sequence after the highest [`SERVER_CLIENT_ID`] has completed under the operator: an id
/// the memory of completed requests takes as new.
fn sequence_unused(bank: &Bank) -> u64 {
    bank.clients
        .get(&Principal::Operator)
        .and_then(|clients| {
            clients
                .windows
                .get(&SERVER_CLIENT_ID)
                .map(|window| window.highest)
        })
        .map_or(1, |highest| highest.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::server::pins::PinKeySource;
    use crate::server::{RunningServer, ServerConfig};
    use std::time::Duration;

    /// A demo server on `root/data`, its PIN key beside the data directory.
    fn demo_config(root: &std::path::Path, clock: Arc<ManualClock>) -> ServerConfig {
        let mut config = ServerConfig::new(root.join("data"));
        config.listen = ([127, 0, 0, 1], 0).into();
        config.demo = true;
        config.arbiters = 1;
        config.clock = clock;
        config.client_retention = Duration::from_secs(3_600);
        config.pin_key = PinKeySource::File(root.join("pin.key"));
        config
    }

    /// The demo accounts are ordinary operator requests stamped by the injected clock, and the
    /// sweep of idle clients forgets their client when that clock passes the retention.
    #[test]
    fn demo_accounts_follow_the_injected_clock_into_records_and_the_idle_sweep() {
        let data_dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let server = RunningServer::start(demo_config(data_dir.path(), clock.clone())).unwrap();
        let bank = server.bank();
        for (card, _, _, balance) in DEMO_ACCOUNTS {
            assert_eq!(bank.balance(card), Some(balance));
        }
        let committed = bank.storage().committed_clients();
        let window = &committed[&Principal::Operator].windows[&SERVER_CLIENT_ID];
        assert_eq!(window.last_used_unix_ms, ManualClock::UNIX_MS_START);
        assert_eq!(window.highest, 2);
        assert_eq!(bank.clients_remembered(Principal::Operator), 1);

        clock.advance(bank.client_retention() - Duration::from_millis(1));
        assert_eq!(bank.forget_idle_clients(), 0);
        clock.advance(Duration::from_millis(2));
        assert_eq!(bank.forget_idle_clients(), 1);
        assert_eq!(bank.clients_remembered(Principal::Operator), 0);
    }

    /// Reopening a data directory that has the demo accounts writes nothing and changes nothing.
    #[test]
    fn reopening_with_the_demo_accounts_leaves_them_as_they_are() {
        let data_dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let server = RunningServer::start(demo_config(data_dir.path(), clock.clone())).unwrap();
        let head = server.bank().storage().head();
        server.stop();
        let server = RunningServer::start(demo_config(data_dir.path(), clock)).unwrap();
        let bank = server.bank();
        assert_eq!(bank.storage().head(), head);
        for (card, _, _, balance) in DEMO_ACCOUNTS {
            assert_eq!(bank.balance(card), Some(balance));
        }
    }
}
