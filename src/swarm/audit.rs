//! The audit after the load: every account, every statement, replays of acknowledged requests.

use super::*;

/// Mixed into an ATM's client id to seed the re-login id of the client that replays its
/// requests in the audit, so the two never share one.
pub(super) const AUDIT_REPLAY_SEED_TAG: u64 = 0x5245_504c_4159_2121;

/// How long the audit waits for the transfers the server still delivers in the background.
const TRANSIT_WAIT_MAX: Duration = Duration::from_secs(60);

/// Checks every account (after the server delivered every transfer), its statement, the totals,
/// and replays each ATM's latest acknowledged requests.
pub(super) async fn audit(
    shared: &Arc<Shared>,
    bank: Option<Arc<crate::server::Bank>>,
    results: &[AtmResult],
    report: &mut SwarmReport,
) {
    let mut violations = unanswered_and_refused(results, report);
    for result in results {
        violations.extend(result.violations.iter().cloned());
    }
    if report
        .operations
        .contains_key(crate::model::Kind::Transfer.name())
    {
        violations.extend(wait_until_nothing_in_transit(shared, bank).await);
    }
    let observed = run_auditors(shared, Phase::Observe).await;
    let mut ledgers = Vec::with_capacity(observed.len());
    for (expected, observed) in report.accounts.iter().zip(observed) {
        match observed {
            Ok(Some(observed)) => {
                violations.extend(account_violations(expected, &observed));
                ledgers.push(observed.ledger);
            }
            Ok(None) => {}
            Err(error) => violations.push(error),
        }
    }
    if ledgers.len() == report.accounts.len() {
        violations.extend(totals_violations(&report.flows, &ledgers));
    }
    violations.extend(audit_replays(shared, results).await);
    report.violations = violations.len() as u64;
    report.violation_details = violations;
}

/// Waits until the server has no transfer on its way: the committed ledger's money in transit,
/// in process; otherwise every card's `in_transit` in its account details.
async fn wait_until_nothing_in_transit(
    shared: &Arc<Shared>,
    bank: Option<Arc<crate::server::Bank>>,
) -> Vec<String> {
    let deadline = Instant::now() + TRANSIT_WAIT_MAX;
    let Some(bank) = bank else {
        let waited = run_auditors(shared, Phase::Transit { deadline }).await;
        return waited.into_iter().filter_map(Result::err).collect();
    };
    loop {
        match bank.storage().with_committed(|ledger| ledger.in_transit()) {
            Some(0) => return Vec::new(),
            None => return vec!["the server received more by transfers than was sent".into()],
            Some(transit) if Instant::now() >= deadline => {
                return vec![format!(
                    "{transit} still in transit {} s after the load",
                    TRANSIT_WAIT_MAX.as_secs()
                )]
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// What one auditor does for each of its cards.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waits (until `deadline`) for the card to have nothing in transit, by its account details.
    Transit {
        /// When waiting is a violation.
        deadline: Instant,
    },
    /// Reads the card's balances and statement.
    Observe,
}

/// Runs `phase` for every card, a few auditors at a time; the results in the cards' order.
async fn run_auditors(
    shared: &Arc<Shared>,
    phase: Phase,
) -> Vec<Result<Option<Observation>, String>> {
    let auditors = 8.min(shared.cards.len().max(1));
    let chunk = shared.cards.len().div_ceil(auditors).max(1);
    let mut tasks = Vec::new();
    for (worker, cards) in shared.cards.chunks(chunk).enumerate() {
        let cards = cards.to_vec();
        let tag = match phase {
            Phase::Transit { .. } => 1 << 40,
            Phase::Observe => 0,
        };
        let client_id = shared.config.seed.wrapping_add(worker as u64 + tag) | 3 << 62;
        let config = client_config(shared, client_id, client_id);
        let token = shared.config.operator_token.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(config);
            let mut found = Vec::with_capacity(cards.len());
            for (card, pin) in cards {
                found.push(match phase {
                    Phase::Transit { deadline } => {
                        wait_for_card(&mut client, &token, card, deadline)
                            .await
                            .map(|()| None)
                    }
                    Phase::Observe => observe(&mut client, card, &pin).await.map(Some),
                });
            }
            found
        }));
    }
    let mut results = Vec::with_capacity(shared.cards.len());
    for task in tasks {
        match task.await {
            Ok(found) => results.extend(found),
            Err(error) => results.push(Err(format!("an auditor failed: {error}"))),
        }
    }
    results
}

/// Polls `card`'s account details until nothing it sent is in transit.
async fn wait_for_card(
    client: &mut Client,
    token: &str,
    card: Card,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        let info = ops::Manage {
            operator_token: token.to_string(),
            card,
            action: ops::Management::Info,
        };
        let in_transit = match client.send(info).await {
            Ok(Reply {
                status: Status::Approved,
                body: Body::Account(details),
                ..
            }) => details.in_transit,
            Ok(reply) => return Err(format!("card {card}: account info answered {reply:?}")),
            Err(error) => return Err(format!("card {card}: account info failed: {error}")),
        };
        if in_transit == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "card {card}: {in_transit} still in transit {} s after the load",
                TRANSIT_WAIT_MAX.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `card`'s balances and last movements, as its holder would.
async fn observe(client: &mut Client, card: Card, pin: &str) -> Result<Observation, String> {
    let failed = |what: &str, detail: String| format!("card {card}: audit {what}: {detail}");
    match client.verify(card, pin).await {
        Ok(reply) if reply.status == Status::Approved => {}
        Ok(reply) => return Err(failed("verify", reply.status.to_string())),
        Err(error) => return Err(failed("verify", error.to_string())),
    }
    let reply = client
        .balance()
        .await
        .map_err(|error| failed("balance", error.to_string()))?;
    let (ledger, available) =
        reply_balances(&reply).ok_or_else(|| failed("balance", format!("{reply:?}")))?;
    let reply = client
        .send(ops::Statement {
            count: STATEMENT_MOVEMENTS,
        })
        .await
        .map_err(|error| failed("statement", error.to_string()))?;
    let Body::Statement(movements) = reply.body else {
        return Err(failed("statement", format!("{reply:?}")));
    };
    Ok(Observation {
        card,
        ledger,
        available,
        movements,
    })
}

/// What the audit read of one account on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The account's card.
    pub card: Card,
    /// Its ledger balance.
    pub ledger: Amount,
    /// Its available balance.
    pub available: Amount,
    /// Its last movements, oldest first.
    pub movements: Vec<Movement>,
}

/// What is wrong with an account the server shows as `observed`, when the acknowledged replies
/// say it must be as `expected`: balances, signs, and its statement (whose last balance must be
/// the ledger balance, since nothing moves any more).
pub fn account_violations(expected: &AccountExpectation, observed: &Observation) -> Vec<String> {
    let card = expected.card;
    let mut found = Vec::new();
    for (what, value) in [
        ("balance", expected.expected_balance),
        ("available balance", expected.expected_available),
    ] {
        if value < 0 {
            found.push(format!("card {card}: expected {what} {value} is negative"));
        }
    }
    if observed.available > observed.ledger {
        found.push(format!(
            "card {card}: available balance {} above the ledger balance {}",
            observed.available, observed.ledger
        ));
    }
    if observed.ledger as i64 != expected.expected_balance {
        found.push(format!(
            "card {card}: server balance {}, expected {} from acknowledged replies",
            observed.ledger, expected.expected_balance
        ));
    }
    if observed.available as i64 != expected.expected_available {
        found.push(format!(
            "card {card}: server available balance {}, expected {} (the holds left open taken off)",
            observed.available, expected.expected_available
        ));
    }
    found.extend(statement_violations(
        card,
        &observed.movements,
        Some(observed.ledger),
    ));
    found
}

/// Which way a movement of each kind moves the balance: +1 in, -1 out, 0 for the opening (which
/// sets it).
fn direction(kind: MovementKind) -> i128 {
    match kind {
        MovementKind::Opened => 0,
        MovementKind::Deposit
        | MovementKind::TransferIn
        | MovementKind::TransferReturned
        | MovementKind::Reversal => 1,
        MovementKind::Withdrawal | MovementKind::TransferOut | MovementKind::HoldCompleted => -1,
    }
}

/// What is wrong with `card`'s statement: a balance after a movement that is not the one before
/// it moved by the movement's amount in its direction, an opening that is not the first
/// movement, a movement listed twice (applied twice), and, with `ledger_now`, a last balance
/// that is not the ledger balance.
pub fn statement_violations(
    card: Card,
    movements: &[Movement],
    ledger_now: Option<Amount>,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (index, movement) in movements.iter().enumerate() {
        let kind = movement.kind.name();
        if !seen.insert((kind, movement.request)) {
            found.push(format!(
                "card {card}: statement lists {kind} {} twice",
                movement.request
            ));
        }
        let expected = match (
            index.checked_sub(1).map(|before| &movements[before]),
            movement.kind,
        ) {
            (None, MovementKind::Opened) => Some(i128::from(movement.amount)),
            (Some(_), MovementKind::Opened) => {
                found.push(format!(
                    "card {card}: statement shows an opening after movements"
                ));
                None
            }
            (Some(before), kind) => Some(
                i128::from(before.balance_after) + direction(kind) * i128::from(movement.amount),
            ),
            (None, _) => None,
        };
        if expected.is_some_and(|expected| expected != i128::from(movement.balance_after)) {
            found.push(format!(
                "card {card}: statement's {kind} {} of {} leaves {}, expected {}",
                movement.request,
                movement.amount,
                movement.balance_after,
                expected.unwrap_or_default()
            ));
        }
    }
    if let (Some(last), Some(ledger)) = (movements.last(), ledger_now) {
        if last.balance_after != ledger {
            found.push(format!(
                "card {card}: statement ends at {}, the ledger balance is {ledger}",
                last.balance_after
            ));
        }
    }
    found
}

/// What is wrong with the server's `ledgers` together, against the money the acknowledged
/// replies moved (transfers move money between the swarm's accounts only).
pub fn totals_violations(flows: &Flows, ledgers: &[Amount]) -> Vec<String> {
    let total: i128 = ledgers.iter().map(|ledger| i128::from(*ledger)).sum();
    let expected = flows.balances_total();
    if total == expected {
        return Vec::new();
    }
    vec![format!(
        "the balances add up to {total}, the acknowledged replies to {expected} ({flows:?})"
    )]
}

/// Requests without a definite answer, and honest requests refused as stale or as conflicts.
pub(super) fn unanswered_and_refused(results: &[AtmResult], report: &SwarmReport) -> Vec<String> {
    let mut violations = Vec::new();
    for result in results {
        violations.extend(
            result
                .unknown
                .iter()
                .map(|detail| format!("no definite answer: {detail}")),
        );
    }
    for status in [Status::StaleRequest, Status::RequestIdConflict] {
        if let Some(count) = report.statuses.get(status.name()) {
            violations.push(format!("{count} honest requests were answered {status}"));
        }
    }
    violations
}

/// Replays: the same client id, the same request id, the identical reply, no money moved.
pub(super) async fn audit_replays(shared: &Arc<Shared>, results: &[AtmResult]) -> Vec<String> {
    let pins: BTreeMap<Card, &str> = shared
        .cards
        .iter()
        .map(|(card, pin)| (*card, pin.as_str()))
        .collect();
    let mut violations = Vec::new();
    for result in results {
        if !result.recent.is_empty() {
            violations.extend(replay_atm(shared, result, &pins).await);
        }
    }
    violations
}

/// Replays one ATM's latest acknowledged requests under its own client id.
pub(super) async fn replay_atm(
    shared: &Shared,
    result: &AtmResult,
    pins: &BTreeMap<Card, &str>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let seed = result.client_id ^ AUDIT_REPLAY_SEED_TAG;
    let mut client = Client::new(client_config(shared, result.client_id, seed));
    client.resume_after(result.next_sequence);
    // Each replay may cost one verify (a new sequence number); only requests that stay inside
    // the server's window after those are replayed.
    let oldest = (result.next_sequence + AUDIT_REPLAYS_PER_ATM as u64)
        .saturating_sub(crate::ledger::REQUEST_WINDOW);
    let mut recent: Vec<_> = result
        .recent
        .iter()
        .filter(|(id, ..)| id.sequence > oldest)
        .collect();
    recent.sort_by_key(|(id, card, ..)| (*card, id.sequence));
    let mut verified = None;
    for (id, card, operation, reply) in recent {
        if verified != Some(*card) {
            let pin = pins.get(card).copied().unwrap_or_default();
            match client.verify(*card, pin).await {
                Ok(login) if login.status == Status::Approved => verified = Some(*card),
                other => {
                    violations.push(format!(
                        "replay of {id}: cannot verify card {card}: {other:?}"
                    ));
                    continue;
                }
            }
        }
        match client.call_with_id(*id, operation.clone()).await {
            Ok(again) if again == *reply => {}
            Ok(again) => violations.push(format!(
                "replay of {id} answered {again:?}, originally {reply:?}"
            )),
            Err(error) => violations.push(format!("replay of {id}: {error}")),
        }
    }
    violations
}
