//! Which operation an ATM does next, by the mix's weights.

use super::*;

/// What an ATM does next: an operation complete in itself, or one of the banking operations
/// whose request depends on what the ATM did before (its open holds, its last withdrawal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Choice {
    /// Sent as it is on the account picked (withdrawal, deposit, inquiry, utility, statement).
    Plain(Operation),
    /// A transfer of `amount` to another card of the swarm.
    Transfer {
        /// How much.
        amount: Amount,
    },
    /// A hold of `amount` placed on the account picked.
    Hold {
        /// How much.
        amount: Amount,
    },
    /// The completion of one of the ATM's open holds.
    Complete,
    /// The void of one of the ATM's open holds.
    Void,
    /// The reversal of the ATM's latest withdrawal.
    Reverse,
    /// A reversal of an id never sent, then that id's withdrawal of `amount`, to be refused.
    ReverseBeforeOriginal {
        /// How much the original would withdraw.
        amount: Amount,
    },
}

/// Picks what to do next by the mix's weights.
pub(super) fn pick(mix: &Mix, generator: &mut StdRng) -> Choice {
    let mut roll = generator.gen_range(0..mix.total().max(1));
    let mut kind = 0;
    for (index, weight) in mix.weights().into_iter().enumerate() {
        kind = index;
        if roll < weight {
            break;
        }
        roll -= weight;
    }
    let amount = generator.gen_range(1..=AMOUNT_MAX);
    match MIX_KINDS[kind] {
        "withdraw" => Choice::Plain(ops::Withdraw { amount }.into_operation()),
        "deposit" => Choice::Plain(ops::Deposit { amount }.into_operation()),
        "balance" => Choice::Plain(ops::Balance.into_operation()),
        "transfer" => Choice::Transfer { amount },
        "hold" => Choice::Hold { amount },
        "complete" => Choice::Complete,
        "void" => Choice::Void,
        "reverse" if generator.gen_ratio(1, 4) => Choice::ReverseBeforeOriginal { amount },
        "reverse" => Choice::Reverse,
        "statement" => Choice::Plain(
            ops::Statement {
                count: STATEMENT_MOVEMENTS,
            }
            .into_operation(),
        ),
        _ => Choice::Plain(utility(generator)),
    }
}

/// Movements asked for by a statement (the server's default maximum).
pub(super) const STATEMENT_MOVEMENTS: u32 = 50;

/// One of the lab's utilities, with a random argument.
fn utility(generator: &mut StdRng) -> Operation {
    match generator.gen_range(0..3) {
        0 => ops::Lowercase {
            text: "Hello From The SWARM".into(),
        }
        .into_operation(),
        1 => ops::IsPrime {
            number: generator.gen_range(1..1_000_000_000),
        }
        .into_operation(),
        _ => ops::IsPalindrome {
            number: generator.gen_range(1..1_000_000),
        }
        .into_operation(),
    }
}

/// What the ATM keeps of an approved withdrawal, so it can reverse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Withdrawal {
    /// The account it was taken from.
    pub(super) account: usize,
    /// Its request id, which the reversal names.
    pub(super) id: RequestId,
    /// How much it took.
    pub(super) amount: Amount,
}

/// A hold the ATM placed and has not resolved yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OpenHold {
    /// The account it is on.
    pub(super) account: usize,
    /// Its id, from the placement's reply.
    pub(super) hold_id: HoldId,
    /// How much it reserves.
    pub(super) amount: Amount,
}

/// Open holds one ATM keeps at most; with as many, a new hold pick completes one instead.
pub(super) const OPEN_HOLDS_PER_ATM_MAX: usize = 4;

/// A withdrawal older than this many of the ATM's operations is not reversed (a fresh one
/// is made and reversed instead), so the original is surely still in the server's window of
/// the client's remembered requests when the reversal names it.
pub(super) const REVERSAL_OPERATIONS_MAX: u64 = 4;

/// How much of `amount` a reversal says was dispensed: none (all given back) half the time,
/// otherwise a part of it.
pub(super) fn dispensed(amount: Amount, generator: &mut StdRng) -> Option<Amount> {
    (amount > 1 && generator.gen_bool(0.5)).then(|| generator.gen_range(1..amount))
}

/// How much of a hold of `amount` a completion posts: all of it (`None`) two times in three,
/// otherwise less.
pub(super) fn posted(amount: Amount, generator: &mut StdRng) -> Option<Amount> {
    (amount > 1 && generator.gen_ratio(1, 3)).then(|| generator.gen_range(1..amount))
}

/// The ledger and available balances a reply carries, if it carries them.
pub(super) fn reply_balances(reply: &Reply) -> Option<(Amount, Amount)> {
    match reply.body {
        Body::Balance(balance) => Some((balance, balance)),
        Body::Balances { ledger, available }
        | Body::Hold {
            ledger, available, ..
        } => Some((ledger, available)),
        _ => None,
    }
}
