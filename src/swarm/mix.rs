//! Which operation an ATM does next, by the mix's weights.

use super::*;

/// Picks the next operation by the mix's weights.
pub(super) fn pick_operation(mix: &Mix, generator: &mut StdRng) -> Operation {
    let total = mix.withdraw + mix.deposit + mix.balance + mix.utility;
    let mut roll = generator.gen_range(0..total);
    if roll < mix.withdraw {
        let amount = generator.gen_range(1..=AMOUNT_MAX);
        return ops::Withdraw { amount }.into_operation();
    }
    roll -= mix.withdraw;
    if roll < mix.deposit {
        let amount = generator.gen_range(1..=AMOUNT_MAX);
        return ops::Deposit { amount }.into_operation();
    }
    roll -= mix.deposit;
    if roll < mix.balance {
        return ops::Balance.into_operation();
    }
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

/// How an approved `operation` changes its account's balance.
pub(super) fn balance_change(operation: &Operation) -> i64 {
    match operation {
        Operation::Withdraw { amount } => -(*amount as i64),
        Operation::Deposit { amount } => *amount as i64,
        _ => 0,
    }
}
