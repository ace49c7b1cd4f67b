//! The audit after the load: every account, every statement, replays of acknowledged requests.

use super::*;

/// Mixed into an ATM's client id to seed the re-login id of the client that replays its
/// requests in the audit, so the two never share one.
pub(super) const AUDIT_REPLAY_SEED_TAG: u64 = 0x5245_504c_4159_2121;

/// Checks every account and replays each ATM's latest acknowledged requests.
pub(super) async fn audit(shared: &Arc<Shared>, results: &[AtmResult], report: &mut SwarmReport) {
    let mut violations = unanswered_and_refused(results, report);
    violations.extend(audit_balances(shared, &report.accounts).await);
    violations.extend(audit_replays(shared, results).await);
    report.violations = violations.len() as u64;
    report.violation_details = violations;
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

/// Every account's balance on the server against the expected one, a few auditors at a time.
pub(super) async fn audit_balances(
    shared: &Arc<Shared>,
    accounts: &[AccountExpectation],
) -> Vec<String> {
    let auditors = 8.min(shared.cards.len().max(1));
    let chunk = shared.cards.len().div_ceil(auditors).max(1);
    let mut tasks = Vec::new();
    for (worker, accounts) in accounts.chunks(chunk).enumerate() {
        let accounts = accounts.to_vec();
        let client_id = shared.config.seed.wrapping_add(worker as u64) | 3 << 62;
        let config = client_config(shared, client_id, client_id);
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(config);
            let mut found = Vec::new();
            for account in accounts {
                found.extend(audit_account(&mut client, &account).await);
            }
            found
        }));
    }
    let mut violations = Vec::new();
    for task in tasks {
        match task.await {
            Ok(found) => violations.extend(found),
            Err(error) => violations.push(format!("an auditor failed: {error}")),
        }
    }
    violations
}

/// One account's balance on the server against the expected one.
pub(super) async fn audit_account(
    client: &mut Client,
    account: &AccountExpectation,
) -> Vec<String> {
    let mut found = Vec::new();
    let card = account.card;
    if account.expected_balance < 0 {
        found.push(format!(
            "card {card}: expected balance {} is negative",
            account.expected_balance
        ));
    }
    let balance = match client.verify(card, &account.pin).await {
        Ok(reply) if reply.status == Status::Approved => {
            client.balance().await.map(|reply| reply_balance(&reply))
        }
        Ok(reply) => {
            found.push(format!(
                "card {card}: audit verify answered {}",
                reply.status
            ));
            return found;
        }
        Err(error) => Err(error),
    };
    match balance {
        Ok(Some(balance)) if balance as i64 == account.expected_balance => {}
        Ok(balance) => found.push(format!(
            "card {card}: server balance {balance:?}, expected {} from acknowledged replies",
            account.expected_balance
        )),
        Err(error) => found.push(format!("card {card}: audit balance failed: {error}")),
    }
    found
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
