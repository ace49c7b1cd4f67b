//! The layouts earlier releases stored, and their conversion to today's: the first release's
//! snapshot ledger ([`LedgerV1`], one memory window per client id), the second layout
//! ([`LedgerV2`], windows per principal, accounts without holds, limits or statements) and the
//! records written before business days and reply references existed ([`RecordV1`]).

use super::{
    Account, Card, ClientWindow, Clients, Completed, Completions, Event, Fingerprint, Ledger, Lsn,
    Memory, Opening, Outcome, Principal, Record, Shards,
};
use crate::model::{AccountState, Amount, Code, RequestId};
use crate::pin::PinHash;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// An outcome as releases before holds stored it: a code and a balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeV1 {
    /// As [`Outcome::status`].
    pub status: Code,
    /// As [`Outcome::balance`].
    pub balance: Option<Amount>,
}

impl From<OutcomeV1> for Outcome {
    fn from(old: OutcomeV1) -> Outcome {
        Outcome {
            status: old.status,
            balance: old.balance,
            available: None,
            reference: None,
        }
    }
}

/// A record as releases before business days and references wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordV1 {
    /// As [`Record::request`].
    pub request: RequestId,
    /// As [`Record::card`].
    pub card: Card,
    /// As [`Record::at_unix_ms`].
    pub at_unix_ms: u64,
    /// As [`Record::event`] (those releases wrote only the events they knew, which keep their
    /// place in today's list).
    pub event: Event,
    /// As [`Record::outcome`].
    pub outcome: OutcomeV1,
}

impl From<RecordV1> for Record {
    fn from(old: RecordV1) -> Record {
        Record {
            request: old.request,
            card: old.card,
            at_unix_ms: old.at_unix_ms,
            business_day: 0,
            event: old.event,
            outcome: old.outcome.into(),
        }
    }
}

/// A memory entry with an [`OutcomeV1`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedV1 {
    /// As [`Completed::sequence`].
    pub sequence: u64,
    /// As [`Completed::fingerprint`].
    pub fingerprint: Fingerprint,
    /// As [`Completed::outcome`].
    pub outcome: OutcomeV1,
    /// As [`Completed::lsn`].
    pub lsn: Lsn,
}

impl From<CompletedV1> for Completed {
    fn from(old: CompletedV1) -> Completed {
        Completed {
            sequence: old.sequence,
            fingerprint: old.fingerprint,
            outcome: old.outcome.into(),
            lsn: old.lsn,
        }
    }
}

impl From<Completed> for CompletedV1 {
    /// The part of an entry the earlier layouts kept (to write their files in tests).
    fn from(done: Completed) -> CompletedV1 {
        CompletedV1 {
            sequence: done.sequence,
            fingerprint: done.fingerprint,
            outcome: OutcomeV1 {
                status: done.outcome.status,
                balance: done.outcome.balance,
            },
            lsn: done.lsn,
        }
    }
}

/// A client's window of [`CompletedV1`] entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientWindowV1 {
    /// As [`ClientWindow::highest`].
    pub highest: u64,
    /// As [`ClientWindow::completed`].
    pub completed: VecDeque<CompletedV1>,
    /// As [`ClientWindow::last_used_unix_ms`].
    pub last_used_unix_ms: u64,
}

impl From<ClientWindowV1> for ClientWindow {
    fn from(old: ClientWindowV1) -> ClientWindow {
        ClientWindow {
            highest: old.highest,
            completed: old.completed.into_iter().map(Completed::from).collect(),
            last_used_unix_ms: old.last_used_unix_ms,
        }
    }
}

impl From<ClientWindow> for ClientWindowV1 {
    /// The window as the earlier layouts kept it (to write their files in tests).
    fn from(window: ClientWindow) -> ClientWindowV1 {
        ClientWindowV1 {
            highest: window.highest,
            completed: window
                .completed
                .into_iter()
                .map(CompletedV1::from)
                .collect(),
            last_used_unix_ms: window.last_used_unix_ms,
        }
    }
}

/// A principal's clients, with [`ClientWindowV1`] windows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientsV1 {
    /// As [`Clients::windows`].
    pub windows: HashMap<u64, ClientWindowV1>,
}

/// An account as releases before holds, limits and statements stored it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountV2 {
    /// As [`Account::holder`].
    pub holder: Box<str>,
    /// As [`Account::pin_hash`].
    pub pin_hash: PinHash,
    /// As [`Account::balance`].
    pub balance: Amount,
    /// As [`Account::pin_failures`].
    pub pin_failures: u8,
}

impl From<AccountV2> for Account {
    fn from(old: AccountV2) -> Account {
        // The earlier layouts kept no statement: the account has no line at all.
        Account {
            holder: old.holder,
            pin: old.pin_hash.into(),
            balance: old.balance,
            pin_failures: old.pin_failures,
            state: AccountState::Open,
            activity: None,
            opening: Opening::NONE,
            opening_line: false,
        }
    }
}

impl From<&Account> for AccountV2 {
    /// The part of an account the earlier layouts kept (to write their files in tests).
    fn from(account: &Account) -> AccountV2 {
        AccountV2 {
            holder: account.holder.clone(),
            pin_hash: account.pin_hash(),
            balance: account.balance,
            pin_failures: account.pin_failures,
        }
    }
}

/// The accounts as the earlier layouts kept them (to write their files in tests).
pub fn accounts_v2(accounts: &Shards<Card, Account>) -> Shards<Card, AccountV2> {
    let mut old = Shards::default();
    for (card, account) in accounts.iter() {
        old.insert(*card, AccountV2::from(account));
    }
    old
}

fn accounts_from(old: Shards<Card, AccountV2>) -> Shards<Card, Account> {
    let mut accounts = Shards::default();
    for (card, account) in old.into_iter() {
        accounts.insert(card, Account::from(account));
    }
    accounts
}

/// The ledger an earlier layout's parts make: its accounts converted, its memory as given, its
/// money in and out (`(in, out)`); nothing was in transit before transfers existed.
fn earlier_ledger(
    applied_lsn: Lsn,
    accounts: Shards<Card, AccountV2>,
    clients: Memory,
    (money_in, money_out): (u128, u128),
) -> Ledger {
    Ledger {
        applied_lsn,
        accounts: accounts_from(accounts),
        clients,
        money_in,
        money_out,
        money_sent: 0,
        money_received: 0,
        balances_total: None,
    }
}

/// The ledger as the second snapshot layout (body version 2) holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerV2 {
    /// As [`Ledger::applied_lsn`].
    pub applied_lsn: Lsn,
    /// As [`Ledger::accounts`].
    pub accounts: Shards<Card, AccountV2>,
    /// As [`Ledger::clients`].
    pub clients: Shards<Principal, ClientsV1>,
    /// As [`Ledger::money_in`].
    pub money_in: u128,
    /// As [`Ledger::money_out`].
    pub money_out: u128,
}

impl From<LedgerV2> for Ledger {
    fn from(old: LedgerV2) -> Self {
        let mut clients = Memory::new();
        for (principal, kept) in old.clients.into_iter() {
            let windows = kept
                .windows
                .into_iter()
                .map(|(client, window)| (client, ClientWindow::from(window)))
                .collect();
            clients.insert(principal, Clients { windows });
        }
        earlier_ledger(
            old.applied_lsn,
            old.accounts,
            clients,
            (old.money_in, old.money_out),
        )
    }
}

/// The ledger as the snapshots of the first release hold it: one window per client id, whatever
/// card or operator its requests were made as. Only read, to open those snapshots
/// ([`Ledger::from`] converts it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerV1 {
    /// As [`Ledger::applied_lsn`].
    pub applied_lsn: Lsn,
    /// As [`Ledger::accounts`].
    pub accounts: Shards<Card, AccountV2>,
    /// Every remembered client's window, by client id alone.
    pub clients: HashMap<u64, ClientWindowV1>,
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
                        completed: Completions::default(),
                        last_used_unix_ms: window.last_used_unix_ms,
                    })
                    .completed
                    .push_back(done.into());
            }
        }
        earlier_ledger(
            old.applied_lsn,
            old.accounts,
            clients,
            (old.money_in, old.money_out),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{opened, withdrawal_entry};
    use super::super::*;
    use super::*;

    #[test]
    fn an_old_record_converts_to_day_zero_and_an_outcome_without_available_or_reference() {
        let old = RecordV1 {
            request: RequestId {
                client: 4,
                sequence: 9,
            },
            card: 7,
            at_unix_ms: 1_234,
            event: Event::Withdrawal { amount: 30 },
            outcome: OutcomeV1 {
                status: Code::InsufficientFunds,
                balance: Some(20),
            },
        };
        let bytes = crate::codec::encode_stored(&old).unwrap();
        let decoded: RecordV1 = crate::codec::decode_stored(&bytes).unwrap();
        assert_eq!(
            Record::from(decoded),
            Record {
                request: old.request,
                card: 7,
                at_unix_ms: 1_234,
                business_day: 0,
                event: Event::Withdrawal { amount: 30 },
                outcome: Outcome {
                    status: Code::InsufficientFunds,
                    balance: Some(20),
                    available: None,
                    reference: None,
                },
            }
        );
        // The events the old records hold keep their stored tags.
        let tags: Vec<u8> = [
            opened(1),
            Event::Withdrawal { amount: 1 },
            Event::Deposit { amount: 1 },
            Event::PinAttempt { correct: true },
            Event::CardUnlocked,
        ]
        .iter()
        .map(Event::tag)
        .collect();
        assert_eq!(tags, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_second_layout_ledger_converts_to_open_accounts_with_nothing_in_transit() {
        let key = crate::pin::PinKey::from_bytes([2; crate::pin::PIN_KEY_BYTES]);
        let mut accounts = Shards::default();
        accounts.insert(
            7,
            AccountV2 {
                holder: "Joty".into(),
                pin_hash: key.verifier(7, "1234"),
                balance: 900,
                pin_failures: 2,
            },
        );
        let mut window = ClientWindowV1::default();
        window
            .completed
            .push_back(CompletedV1::from(withdrawal_entry(3, 7)));
        window.highest = 3;
        let mut clients = Shards::default();
        clients.insert(
            Principal::Card(7),
            ClientsV1 {
                windows: HashMap::from([(5, window)]),
            },
        );
        let old = LedgerV2 {
            applied_lsn: 12,
            accounts,
            clients,
            money_in: 1_000,
            money_out: 100,
        };
        let bytes = crate::codec::encode_stored(&old).unwrap();
        let ledger = Ledger::from(crate::codec::decode_stored::<LedgerV2>(&bytes).unwrap());
        let account = &ledger.accounts[&7];
        assert_eq!(
            (account.balance, account.pin_failures, account.state),
            (900, 2, AccountState::Open)
        );
        assert_eq!(account.activity, None);
        // The earlier layouts kept no statement: none is made up.
        assert_eq!(account.movements(usize::MAX), []);
        assert_eq!(
            (account.available(), account.held(), account.in_transit()),
            (900, 0, 0)
        );
        assert_eq!((ledger.money_sent, ledger.money_received), (0, 0));
        assert_eq!(ledger.in_transit(), Some(0));
        assert!(ledger.is_conserved());
        let window = ledger.window(Principal::Card(7), 5).unwrap();
        assert_eq!(window.highest, 3);
        let outcome = window.completed.get(0).expect("an entry").outcome;
        assert_eq!(
            (outcome.balance, outcome.available, outcome.reference),
            (Some(1), None, None)
        );
        // The next record applies to it as to any ledger.
        let mut ledger = ledger;
        super::super::testing::step(&mut ledger, 20, Event::Withdrawal { amount: 50 });
        assert_eq!(ledger.accounts[&7].balance, 850);
        assert!(ledger.is_conserved());
    }

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
            clients: HashMap::from([(9, ClientWindowV1::from(window))]),
            ..LedgerV1::default()
        };
        let ledger = Ledger::from(old);
        assert_eq!(ledger.applied_lsn, 40);
        let on = |principal| ledger.window(principal, 9).unwrap();
        // The first release kept no available balance: the entries come back without one.
        let kept = |done: Completed| Completed {
            outcome: Outcome {
                available: None,
                ..done.outcome
            },
            ..done
        };
        assert_eq!(on(Principal::Operator).completed.to_vec(), [kept(open)]);
        assert_eq!(
            on(Principal::Card(7)).completed.to_vec(),
            [kept(withdrawal_entry(12, 7))]
        );
        assert_eq!(
            on(Principal::Card(8)).completed.to_vec(),
            [kept(withdrawal_entry(40, 8))]
        );
        assert_eq!(
            on(Principal::Card(8))
                .completed
                .get(0)
                .map(|done| done.outcome.balance),
            Some(Some(1))
        );
        // The client's highest sequence is kept everywhere: what was stale stays stale.
        assert_eq!(on(Principal::Card(7)).highest, 40);
        assert_eq!(
            on(Principal::Card(7)).check(5, &withdrawal_entry(5, 7).fingerprint),
            Seen::Stale
        );
    }
}
