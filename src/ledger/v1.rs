//! The ledger as the first release stored it in snapshots, and its conversion to [`Ledger`].

use super::{Account, Card, ClientWindow, Ledger, Lsn, Memory, Principal, Shards};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// The ledger as the snapshots of the first release hold it: one window per client id, whatever
/// card or operator its requests were made as. Only read, to open those snapshots
/// ([`Ledger::from`] converts it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerV1 {
    /// As [`Ledger::applied_lsn`].
    pub applied_lsn: Lsn,
    /// As [`Ledger::accounts`].
    pub accounts: Shards<Card, Account>,
    /// Every remembered client's window, by client id alone.
    pub clients: HashMap<u64, ClientWindow>,
    /// As [`Ledger::money_in`].
    pub money_in: u128,
    /// As [`Ledger::money_out`].
    pub money_out: u128,
}

/// Splits each client's window by the principal of each remembered request (an open belongs to
/// the operator, a withdrawal or deposit to its card; PIN attempts are dropped, they are no longer
/// remembered). Every part keeps the client's highest sequence, so an id that was stale stays
/// stale: nothing the first release refused can run after the upgrade.
impl From<LedgerV1> for Ledger {
    fn from(old: LedgerV1) -> Self {
        let mut clients = Memory::new();
        for (client, window) in old.clients {
            for done in window.completed {
                let principal = match done.fingerprint.kind {
                    0 => Principal::Operator,
                    3 => continue,
                    _ => Principal::Card(done.fingerprint.card),
                };
                clients
                    .entry_or_default(principal)
                    .windows
                    .entry(client)
                    .or_insert_with(|| ClientWindow {
                        highest: window.highest,
                        completed: VecDeque::new(),
                        last_used_unix_ms: window.last_used_unix_ms,
                    })
                    .completed
                    .push_back(done);
            }
        }
        Ledger {
            applied_lsn: old.applied_lsn,
            accounts: old.accounts,
            clients,
            money_in: old.money_in,
            money_out: old.money_out,
            balances_total: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{opened, withdrawal_entry};
    use super::super::*;
    use super::*;

    #[test]
    fn a_first_release_ledger_splits_its_windows_by_principal() {
        let mut window = ClientWindow::default();
        let open = Completed {
            fingerprint: Fingerprint::of(7, &opened(100)),
            ..withdrawal_entry(10, 7)
        };
        let pin = Completed {
            fingerprint: Fingerprint::of(7, &Event::PinAttempt { correct: false }),
            ..withdrawal_entry(11, 7)
        };
        for done in [open, pin, withdrawal_entry(12, 7), withdrawal_entry(40, 8)] {
            window.remember(done, 5);
        }
        let old = LedgerV1 {
            applied_lsn: 40,
            clients: HashMap::from([(9, window)]),
            ..LedgerV1::default()
        };
        let ledger = Ledger::from(old);
        assert_eq!(ledger.applied_lsn, 40);
        let on = |principal| ledger.window(principal, 9).unwrap();
        assert_eq!(on(Principal::Operator).completed, [open]);
        assert_eq!(on(Principal::Card(7)).completed, [withdrawal_entry(12, 7)]);
        assert_eq!(on(Principal::Card(8)).completed, [withdrawal_entry(40, 8)]);
        // The client's highest sequence is kept everywhere: what was stale stays stale.
        assert_eq!(on(Principal::Card(7)).highest, 40);
        assert_eq!(
            on(Principal::Card(7)).check(5, &withdrawal_entry(5, 7).fingerprint),
            Seen::Stale
        );
    }
}
