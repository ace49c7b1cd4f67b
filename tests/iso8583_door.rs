//! The ISO 8583 door against the real server over TCP: sign-on rules and keep-alives; every
//! financial message with every field of its reply; every response code the door gives; repeats
//! answered byte for byte (after a lost reply and after a restart too); the same key with other
//! content refused; reversals in full, in part, repeated and before their original; holds
//! authorised and completed; hostile frames that end only their own connection; PANs and PINs
//! kept out of the logs.
#[path = "common/banking.rs"]
mod banking;
mod common;
#[path = "common/iso8583.rs"]
mod iso;

use actor_bank::faults::FaultPlan;
use actor_bank::iso8583::{self, field, mti, network, Transaction};
use banking::{committed, manage_ok, operator, wait_for};
use common::{TestServer, AHONA, JOTY, JOTY_PIN};
use iso::*;
use std::time::Duration;

/// Keep-alives are answered in kind at any time; nothing but network management is answered
/// before a sign-on; a sign-on is for the link or for one terminal; a sign-off ends it.
#[tokio::test]
async fn a_link_signs_on_before_anything_financial_and_keep_alives_are_answered_in_kind() {
    let server = iso_server();
    let mut link = Link::connect(&server).await;
    link.send_raw(&[0, 0]).await;
    assert_eq!(link.receive().await, Some(Vec::new()));
    assert_eq!(link.code(&network_message(network::ECHO, None)).await, "58");
    let early = withdrawal(JOTY, JOTY_PIN, 100, 2);
    assert_eq!(link.code(&early).await, "58");
    assert_eq!(
        link.code(&network_message(network::SIGN_OFF, None)).await,
        "58"
    );
    assert_eq!(link.code(&network_message("999", None)).await, "12");
    assert_eq!(
        link.code(&network_message(network::SIGN_ON, None)).await,
        "00"
    );
    assert_eq!(link.code(&network_message(network::ECHO, None)).await, "00");
    assert_eq!(link.code(&withdrawal(JOTY, JOTY_PIN, 100, 3)).await, "00");
    assert_eq!(
        link.code(&network_message(network::SIGN_OFF, None)).await,
        "00"
    );
    assert_eq!(link.code(&withdrawal(JOTY, JOTY_PIN, 100, 4)).await, "58");
    // Nothing the refused messages asked happened.
    assert_eq!(committed(&server, JOTY).balance, 9_900);

    // One terminal signs on: its messages are answered, another terminal's are not.
    let mut terminals = Link::connect(&server).await;
    assert_eq!(
        terminals
            .code(&network_message(network::SIGN_ON, Some(TERMINAL)))
            .await,
        "00"
    );
    assert_eq!(
        terminals.code(&withdrawal(JOTY, JOTY_PIN, 100, 5)).await,
        "00"
    );
    let mut other = withdrawal(JOTY, JOTY_PIN, 100, 6);
    other.set(field::TERMINAL, "ATM00002");
    assert_eq!(terminals.code(&other).await, "58");
    link.send_raw(&[0, 0]).await;
    assert_eq!(link.receive().await, Some(Vec::new()));
}

/// Withdrawal, balance inquiry, deposit, transfer and mini statement: each approved with its
/// authorisation id and the balances after it, echoing the request's fields.
#[tokio::test]
async fn every_financial_transaction_is_answered_with_its_balances() {
    let server = iso_server();
    let mut link = Link::signed_on(&server).await;

    let (_, reply) = link.call(&withdrawal(JOTY, JOTY_PIN, 300, 10)).await;
    assert_echoes(&withdrawal(JOTY, JOTY_PIN, 300, 10), &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(reply.get(field::AUTHORISATION_ID).map(str::len), Some(6));
    assert_eq!(balances(&reply), (9_700, 9_700));

    let inquiry = financial(Transaction::BalanceInquiry, JOTY, JOTY_PIN, None, 11);
    let (_, reply) = link.call(&inquiry).await;
    assert_echoes(&inquiry, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (9_700, 9_700));

    let deposit = financial(Transaction::Deposit, JOTY, JOTY_PIN, Some(1_000), 12);
    let (_, reply) = link.call(&deposit).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (10_700, 10_700));

    let mut transfer = financial(Transaction::Transfer, JOTY, JOTY_PIN, Some(700), 13);
    transfer.set(field::TO_ACCOUNT, AHONA.to_string());
    let (_, reply) = link.call(&transfer).await;
    assert_echoes(&transfer, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (10_000, 10_000));
    wait_for("the transfer delivered", || {
        committed(&server, AHONA).balance == 5_700
    })
    .await;

    let statement = financial(Transaction::MiniStatement, JOTY, JOTY_PIN, None, 14);
    let (_, reply) = link.call(&statement).await;
    assert_echoes(&statement, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    let entries = reply
        .get(field::ADDITIONAL_DATA)
        .and_then(iso8583::parse_mini_statement)
        .expect("a mini statement in field 48");
    let moved: Vec<(&str, bool, u64, u64)> = entries
        .iter()
        .map(|entry| {
            (
                entry.kind.as_str(),
                entry.debit,
                entry.amount,
                entry.balance_after,
            )
        })
        .collect();
    assert_eq!(
        moved,
        [
            ("OP", false, 10_000, 10_000),
            ("WD", true, 300, 9_700),
            ("DP", false, 1_000, 10_700),
            ("TO", true, 700, 10_000),
        ]
    );
}

/// The declines an issuer gives, each with its code and nothing moved: insufficient funds (51,
/// with the balances), a wrong PIN (55) and the one that locks the card (75), an unknown card
/// (14), a frozen (62) and a closed (57) account, the daily amount (61) and count (65) limits, a
/// transaction the bank does not offer (12), a missing field (30), another currency (13).
#[tokio::test]
async fn every_decline_carries_its_response_code_and_moves_nothing() {
    let server = iso_server();
    let mut link = Link::signed_on(&server).await;
    let (_, reply) = link.call(&withdrawal(JOTY, JOTY_PIN, 1_000_000, 20)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("51"));
    assert_eq!(reply.get(field::AUTHORISATION_ID), None);
    assert_eq!(balances(&reply), (10_000, 10_000));

    const LOCKING: u64 = 41_001;
    opened(&server, LOCKING, "4821", 500).await;
    assert_eq!(link.code(&withdrawal(LOCKING, "1111", 10, 21)).await, "55");
    assert_eq!(link.code(&withdrawal(LOCKING, "1111", 10, 22)).await, "55");
    assert_eq!(link.code(&withdrawal(LOCKING, "1111", 10, 23)).await, "75");
    assert_eq!(link.code(&withdrawal(LOCKING, "4821", 10, 24)).await, "75");
    assert_eq!(link.code(&withdrawal(55_555, "4821", 10, 25)).await, "14");

    const FROZEN: u64 = 41_002;
    const CLOSED: u64 = 41_003;
    const LIMITED: u64 = 41_004;
    opened(&server, FROZEN, "4821", 500).await;
    opened(&server, CLOSED, "4821", 0).await;
    opened(&server, LIMITED, "4821", 500).await;
    let mut operator = operator(&server).await;
    use actor_bank::client::ops::Management;
    manage_ok(&mut operator, FROZEN, Management::Freeze).await;
    manage_ok(&mut operator, CLOSED, Management::Close).await;
    manage_ok(
        &mut operator,
        LIMITED,
        Management::SetLimits(banking::limits(150, 2)),
    )
    .await;
    assert_eq!(link.code(&withdrawal(FROZEN, "4821", 10, 26)).await, "62");
    assert_eq!(link.code(&withdrawal(CLOSED, "4821", 10, 27)).await, "57");
    assert_eq!(link.code(&withdrawal(LIMITED, "4821", 200, 28)).await, "61");
    assert_eq!(link.code(&withdrawal(LIMITED, "4821", 10, 29)).await, "00");
    assert_eq!(link.code(&withdrawal(LIMITED, "4821", 10, 30)).await, "00");
    assert_eq!(link.code(&withdrawal(LIMITED, "4821", 10, 31)).await, "65");

    let mut unknown = withdrawal(JOTY, JOTY_PIN, 10, 32);
    unknown.set(field::PROCESSING_CODE, "990000");
    assert_eq!(link.code(&unknown).await, "12");
    let mut missing = withdrawal(JOTY, JOTY_PIN, 10, 33);
    missing.fields.remove(&field::AMOUNT);
    assert_eq!(link.code(&missing).await, "30");
    let mut unsigned = withdrawal(JOTY, JOTY_PIN, 10, 34);
    unsigned.fields.remove(&field::PIN_BLOCK);
    assert_eq!(link.code(&unsigned).await, "30");
    let mut dollars = withdrawal(JOTY, JOTY_PIN, 10, 35);
    dollars.set(field::CURRENCY, "840");
    assert_eq!(link.code(&dollars).await, "13");

    assert_eq!(committed(&server, JOTY).balance, 10_000);
    assert_eq!(committed(&server, LOCKING).balance, 500);
    assert_eq!(committed(&server, FROZEN).balance, 500);
    assert_eq!(committed(&server, LIMITED).balance, 480);
}

/// A repeat gets its original's reply byte for byte and moves nothing again: on the same
/// connection, after the reply was lost with its connection, and after a restart. The same key
/// with other content is refused with 94 and moves nothing.
#[tokio::test]
async fn a_repeat_gets_the_original_reply_byte_for_byte_and_moves_money_once() {
    let mut server = iso_server();
    let original = withdrawal(JOTY, JOTY_PIN, 300, 40);
    let (first, _) = Link::signed_on(&server).await.call(&original).await;
    let mut link = Link::signed_on(&server).await;
    let (again, _) = link
        .call(&repeat_of(&original, mti::FINANCIAL_REPEAT))
        .await;
    assert_eq!(again, first);
    assert_eq!(committed(&server, JOTY).balance, 9_700);

    // The reply is lost with its connection; the acquirer repeats on a new one.
    let lost = withdrawal(JOTY, JOTY_PIN, 200, 41);
    let mut cut = Link::signed_on(&server).await;
    cut.send(&lost).await;
    drop(cut);
    wait_for("the lost withdrawal applied", || {
        committed(&server, JOTY).balance == 9_500
    })
    .await;
    let (repeated, reply) = link.call(&repeat_of(&lost, mti::FINANCIAL_REPEAT)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (9_500, 9_500));

    let mut other = withdrawal(JOTY, JOTY_PIN, 999, 40);
    other.mti = mti::FINANCIAL_REPEAT.into();
    assert_eq!(link.code(&other).await, "94");
    let mut deposit = financial(Transaction::Deposit, JOTY, JOTY_PIN, Some(300), 40);
    deposit.mti = mti::FINANCIAL_REPEAT.into();
    assert_eq!(link.code(&deposit).await, "94");
    assert_eq!(committed(&server, JOTY).balance, 9_500);

    server.restart(with_door);
    let mut link = Link::signed_on(&server).await;
    let (after_restart, _) = link
        .call(&repeat_of(&original, mti::FINANCIAL_REPEAT))
        .await;
    assert_eq!(after_restart, first);
    let (after_restart, _) = link.call(&repeat_of(&lost, mti::FINANCIAL_REPEAT)).await;
    assert_eq!(after_restart, repeated);
    assert_eq!(committed(&server, JOTY).balance, 9_500);
}

/// Reversals: in full, in part (field 95), repeated (the same 0430, nothing moves twice), of a
/// declined original (12), dispensing more than the original (13), before their original,
/// which is then declined with 94 and never debits, and on another card than their original's
/// (12). No 0430 carries balances.
#[tokio::test]
async fn reversals_give_back_once_whenever_they_arrive() {
    let server = iso_server();
    let mut link = Link::signed_on(&server).await;
    let original = withdrawal(JOTY, JOTY_PIN, 300, 50);
    assert_eq!(link.code(&original).await, "00");
    let full = reversal(&original, None, 51);
    let (acknowledged, reply) = link.call(&full).await;
    assert_echoes(&full, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    // An advice carries no PIN: its reply tells nothing of the card's balances.
    assert_eq!(reply.get(field::ADDITIONAL_AMOUNTS), None);
    assert_eq!(committed(&server, JOTY).balance, 10_000);
    let (again, _) = link.call(&repeat_of(&full, mti::REVERSAL_REPEAT)).await;
    assert_eq!(again, acknowledged);
    assert_eq!(committed(&server, JOTY).balance, 10_000);

    let partly = withdrawal(JOTY, JOTY_PIN, 300, 52);
    assert_eq!(link.code(&partly).await, "00");
    let (_, reply) = link.call(&reversal(&partly, Some(100), 53)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(committed(&server, JOTY).balance, 9_900);

    let declined = withdrawal(JOTY, JOTY_PIN, 1_000_000, 54);
    assert_eq!(link.code(&declined).await, "51");
    assert_eq!(link.code(&reversal(&declined, None, 55)).await, "12");
    let small = withdrawal(JOTY, JOTY_PIN, 100, 56);
    assert_eq!(link.code(&small).await, "00");
    assert_eq!(link.code(&reversal(&small, Some(500), 57)).await, "13");
    assert_eq!(committed(&server, JOTY).balance, 9_800);

    // The reversal arrives first: acknowledged, and the original, arriving late, never debits.
    let late = withdrawal(JOTY, JOTY_PIN, 400, 58);
    assert_eq!(link.code(&reversal(&late, None, 59)).await, "00");
    assert_eq!(link.code(&late).await, "94");
    assert_eq!(committed(&server, JOTY).balance, 9_800);

    // A reversal must name its original's card: on another card it is refused, and the
    // original's own reversal still gives the money back.
    let mine = withdrawal(JOTY, JOTY_PIN, 100, 60);
    assert_eq!(link.code(&mine).await, "00");
    let mut elsewhere = reversal(&mine, None, 61);
    elsewhere.set(field::PAN, AHONA.to_string());
    assert_eq!(link.code(&elsewhere).await, "12");
    assert_eq!(link.code(&reversal(&mine, None, 62)).await, "00");
    assert_eq!(committed(&server, JOTY).balance, 9_800);
    assert_eq!(committed(&server, AHONA).balance, 5_000);
}

/// An authorisation holds the amount (0110 with the hold's id in field 38); its completion
/// posts less and releases the rest; a repeat of the completion gets the same 0230; a
/// completion for zero voids a hold; an unknown hold is 25, a resolved one 12; a reversal gives
/// a completion back, and refuses to name an authorisation (12).
#[tokio::test]
async fn an_authorisation_holds_and_its_completion_posts_it() {
    let server = iso_server();
    let mut link = Link::signed_on(&server).await;
    let hold = authorisation(JOTY, JOTY_PIN, 500, 60);
    let (_, reply) = link.call(&hold).await;
    assert_echoes(&hold, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (10_000, 9_500));
    let hold_id = reply.get(field::AUTHORISATION_ID).unwrap().to_string();
    assert_eq!(iso8583::parse_authorisation_id(&hold_id), Some(1));

    let complete = completion(JOTY, &hold_id, 300, 61);
    let (completed, reply) = link.call(&complete).await;
    assert_echoes(&complete, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(reply.get(field::ADDITIONAL_AMOUNTS), None);
    let account = committed(&server, JOTY);
    assert_eq!((account.balance, account.available()), (9_700, 9_700));
    let (again, _) = link
        .call(&repeat_of(&complete, mti::COMPLETION_REPEAT))
        .await;
    assert_eq!(again, completed);
    assert_eq!(link.code(&completion(JOTY, &hold_id, 300, 62)).await, "12");

    let second = authorisation(JOTY, JOTY_PIN, 200, 63);
    let (_, reply) = link.call(&second).await;
    let second_id = reply.get(field::AUTHORISATION_ID).unwrap().to_string();
    let (_, reply) = link.call(&completion(JOTY, &second_id, 0, 64)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(link.code(&completion(JOTY, "00ZZZZ", 10, 65)).await, "25");
    let account = committed(&server, JOTY);
    assert_eq!((account.balance, account.available()), (9_700, 9_700));

    // A completion is a debit a reversal gives back; an authorisation is not (it is released by
    // a completion for zero, or expires).
    let (_, reply) = link.call(&reversal(&complete, None, 66)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(committed(&server, JOTY).balance, 10_000);
    assert_eq!(link.code(&reversal(&hold, None, 67)).await, "12");
}

/// A request arriving while the connection's in-flight limit is reached is answered 91 at once
/// (every reply is held back 5 s, so the first is surely still in flight), and the journal's
/// failure is 96.
#[tokio::test]
async fn busy_is_91_and_a_failed_journal_is_96() {
    let server = TestServer::start_with(|config| {
        with_door(config);
        config.limits.requests_in_flight_max = 1;
        config.faults = Some(FaultPlan {
            drop_request: 0.0,
            drop_reply: 0.0,
            crash_actor: 0.0,
            delay: Duration::from_secs(5),
            seed: 1,
        });
    });
    let mut link = Link::signed_on(&server).await;
    let first = withdrawal(JOTY, JOTY_PIN, 100, 70);
    let second = withdrawal(JOTY, JOTY_PIN, 100, 71);
    link.send(&first).await;
    link.send(&second).await;
    let busy = iso8583::decode(&link.receive().await.unwrap()).unwrap();
    assert_eq!(busy.get(field::STAN), Some("000071"));
    assert_eq!(busy.get(field::RESPONSE_CODE), Some("91"));
    let done = iso8583::decode(&link.receive().await.unwrap()).unwrap();
    assert_eq!(done.get(field::STAN), Some("000070"));
    assert_eq!(done.get(field::RESPONSE_CODE), Some("00"));
    drop(server);

    let directory = tempfile::tempdir().unwrap();
    let mut config = common::test_config(directory.path());
    with_door(&mut config);
    actor_bank::server::RunningServer::start(config.clone())
        .unwrap()
        .stop();
    let mut journal = actor_bank::server::journal_config(&config);
    journal.files = std::sync::Arc::new(actor_bank::journal::files::FullDisk::new(0));
    let failing = TestServer::around(
        directory,
        actor_bank::server::RunningServer::start_with_journal(config, journal).unwrap(),
    );
    let mut link = Link::signed_on(&failing).await;
    assert_eq!(link.code(&withdrawal(JOTY, JOTY_PIN, 100, 72)).await, "96");
}

/// An oversize frame, a message that does not decode, and a response sent as a request each end
/// their own connection without a reply; the door goes on serving the others.
#[tokio::test]
async fn hostile_frames_end_only_their_own_connection() {
    let server = iso_server();
    let mut oversize = Link::signed_on(&server).await;
    oversize.send_raw(&[0x10, 0x01]).await;
    oversize.send_raw(&[b'0'; 64]).await;
    assert!(oversize.closed().await);

    let mut garbage = Link::signed_on(&server).await;
    garbage.send_raw(&[0, 6]).await;
    garbage.send_raw(b"02x0zz").await;
    assert!(garbage.closed().await);

    let mut response = Link::signed_on(&server).await;
    let mut reply = withdrawal(JOTY, JOTY_PIN, 100, 80);
    reply.mti = mti::FINANCIAL_RESPONSE.into();
    response.send(&reply).await;
    assert!(response.closed().await);

    let mut honest = Link::signed_on(&server).await;
    assert_eq!(
        honest.code(&withdrawal(JOTY, JOTY_PIN, 100, 81)).await,
        "00"
    );
    assert_eq!(committed(&server, JOTY).balance, 9_900);
}

/// A repeat is answered from the door's memory of recent replies before its PIN is looked at:
/// the repeat of a message declined for a wrong PIN counts no second wrong PIN, the repeat of one
/// approved before its card was locked is still answered as it was, and the same key on another
/// card is refused with 94 and moves nothing.
#[tokio::test]
async fn repeats_are_answered_before_the_pin_is_checked_again() {
    let server = iso_server();
    const CARD: u64 = 42_001;
    opened(&server, CARD, "4821", 1_000).await;
    let mut link = Link::signed_on(&server).await;
    let approved = withdrawal(CARD, "4821", 100, 90);
    let (first, _) = link.call(&approved).await;
    let wrong = withdrawal(CARD, "1111", 100, 91);
    let (declined, reply) = link.call(&wrong).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("55"));
    for _ in 0..3 {
        let (again, _) = link.call(&repeat_of(&wrong, mti::FINANCIAL_REPEAT)).await;
        assert_eq!(again, declined);
    }
    assert_eq!(committed(&server, CARD).pin_failures, 1);
    // Two more wrong PINs lock the card; the approved withdrawal's repeat is still approved.
    assert_eq!(link.code(&withdrawal(CARD, "2222", 100, 92)).await, "55");
    assert_eq!(link.code(&withdrawal(CARD, "3333", 100, 93)).await, "75");
    let (again, _) = link
        .call(&repeat_of(&approved, mti::FINANCIAL_REPEAT))
        .await;
    assert_eq!(again, first);

    let mut elsewhere = withdrawal(JOTY, JOTY_PIN, 100, 90);
    elsewhere.mti = mti::FINANCIAL_REPEAT.into();
    assert_eq!(link.code(&elsewhere).await, "94");
    assert_eq!(committed(&server, JOTY).balance, 10_000);
    assert_eq!(committed(&server, CARD).balance, 900);
}

/// Without TLS the ISO 8583 listener, like the other, serves only on a loopback address unless
/// plaintext is allowed explicitly.
#[test]
fn the_plaintext_rule_covers_the_iso8583_listener() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = common::test_config(directory.path());
    config.iso8583 = Some(actor_bank::server::Iso8583Settings::new(
        "0.0.0.0:0".parse().unwrap(),
        actor_bank::server::Iso8583Pins::Key(Box::new(zone_key())),
    ));
    let refused = actor_bank::server::RunningServer::start(config.clone()).err();
    assert!(refused.is_some_and(|error| error
        .to_string()
        .contains("refusing to serve plaintext on 0.0.0.0")),);
    config.allow_plaintext = true;
    actor_bank::server::RunningServer::start(config)
        .unwrap()
        .stop();
}

/// Failed PIN checks count against the terminal that sent them, not the link: a terminal that
/// used up its allowance is answered 91 unchecked, while another terminal on the same
/// connection is still checked.
#[tokio::test]
async fn failed_pins_count_against_their_terminal() {
    let server = TestServer::start_with(|config| {
        with_door(config);
        config.limits.pin_failures_per_peer = actor_bank::ratelimit::RateLimit {
            burst: 2,
            per_minute: 0,
        };
    });
    for card in [43_001, 43_002, 43_003] {
        opened(&server, card, "4821", 100).await;
    }
    let mut link = Link::signed_on(&server).await;
    assert_eq!(link.code(&withdrawal(43_001, "1111", 10, 1)).await, "55");
    assert_eq!(link.code(&withdrawal(43_002, "1111", 10, 2)).await, "55");
    // The allowance is used up: not even a right PIN is checked for this terminal.
    assert_eq!(link.code(&withdrawal(43_003, "1111", 10, 3)).await, "91");
    assert_eq!(link.code(&withdrawal(43_003, "4821", 10, 4)).await, "91");
    let mut other = withdrawal(43_003, "4821", 10, 5);
    other.set(field::TERMINAL, "ATM00002");
    assert_eq!(link.code(&other).await, "00");
    assert_eq!(committed(&server, 43_003).pin_failures, 0);
}
