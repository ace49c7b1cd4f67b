//! docs/PROTOCOL.md's "Precedence" cannot drift from the order the service runs its checks in.
//!
//! The tables between `<!-- precedence: begin -->` and `<!-- precedence: end -->` must be what
//! `service::precedence_markdown()` generates from `service::checks()`; on a mismatch the test
//! prints the tables to paste. And every status the "Statuses by operation" table lists for an
//! operation must be one that one of its checks can produce.

use actor_bank::model::{Code, Kind};
use actor_bank::server::service::{checks, precedence_markdown, Check};

const BEGIN: &str = "<!-- precedence: begin -->";
const END: &str = "<!-- precedence: end -->";

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The text between the precedence markers, without the blank lines around it.
fn documented_precedence(document: &str) -> String {
    let start = document
        .find(BEGIN)
        .expect("PROTOCOL.md marks its precedence tables")
        + BEGIN.len();
    let end = document[start..]
        .find(END)
        .expect("the precedence tables end with a marker")
        + start;
    format!("{}\n", document[start..end].trim())
}

/// The cells of a table row, trimmed.
fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|cell| cell.trim().to_string())
        .collect()
}

/// The words in backticks in a cell.
fn quoted(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn kind_named(name: &str) -> Kind {
    *Kind::ALL
        .iter()
        .find(|kind| format!("{kind:?}") == name)
        .unwrap_or_else(|| panic!("no operation is called {name}"))
}

#[test]
fn the_documented_order_of_checks_is_the_order_the_service_runs() {
    let documented = documented_precedence(&document());
    let expected = precedence_markdown();
    // Parsed first, so that a difference names the operation.
    let rows: Vec<Vec<String>> = documented
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(cells)
        .collect();
    for kind in Kind::ALL {
        let row = rows
            .iter()
            .find(|row| quoted(&row[0]) == [format!("{kind:?}")])
            .unwrap_or_else(|| panic!("no precedence row for {kind:?}; expected:\n{expected}"));
        let names: Vec<&str> = checks(*kind).iter().map(|check| check.name()).collect();
        let documented: Vec<&str> = row[1].split(" → ").collect();
        assert_eq!(
            documented, names,
            "the checks of {kind:?} differ; the tables should read:\n{expected}"
        );
    }
    assert_eq!(
        documented, expected,
        "docs/PROTOCOL.md's precedence tables differ; they should read:\n{expected}"
    );
}

#[test]
fn every_status_an_operation_can_end_in_comes_from_one_of_its_checks() {
    let document = document();
    let mut lines = document
        .lines()
        .skip_while(|line| line.trim() != "### Statuses by operation");
    assert!(
        lines.next().is_some(),
        "PROTOCOL.md has a table of statuses by operation"
    );
    let rows: Vec<Vec<String>> = lines
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(cells)
        .collect();
    let mut seen = Vec::new();
    for row in &rows {
        for name in quoted(&row[0]) {
            let kind = kind_named(&name);
            seen.push(kind);
            // `busy` is listed for none: every operation can end in it.
            let mut statuses = quoted(&row[1]);
            statuses.push("busy".into());
            for status in statuses {
                let code = *Code::ALL
                    .iter()
                    .find(|code| code.name() == status)
                    .unwrap_or_else(|| panic!("{name}: no status is called {status}"));
                assert!(
                    checks(kind)
                        .iter()
                        .any(|check| check.codes().contains(&code)),
                    "{name} can end in {status}, but none of its checks {:?} produces it",
                    checks(kind)
                );
            }
        }
    }
    for kind in Kind::ALL {
        assert!(seen.contains(kind), "no statuses are listed for {kind:?}");
    }
}

#[test]
fn every_check_is_run_by_some_operation() {
    for check in Check::ALL {
        assert!(
            Kind::ALL.iter().any(|kind| checks(*kind).contains(check)),
            "{check:?} is run by no operation"
        );
    }
}

/// docs/ISO8583.md's order of checks for the requests of an acquirer is the one the service runs
/// (between `<!-- iso8583-precedence: begin -->` and `<!-- iso8583-precedence: end -->`).
#[test]
fn the_documented_order_of_an_acquirers_checks_is_the_order_the_service_runs() {
    const BEGIN: &str = "<!-- iso8583-precedence: begin -->";
    const END: &str = "<!-- iso8583-precedence: end -->";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ISO8583.md");
    let document = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let start = document.find(BEGIN).expect("ISO8583.md marks its table") + BEGIN.len();
    let end = document[start..]
        .find(END)
        .expect("the table ends with a marker")
        + start;
    let expected = actor_bank::server::service::acquirer_precedence_markdown();
    assert_eq!(
        format!("{}\n", document[start..end].trim()),
        expected,
        "the table should read:\n{expected}"
    );
}
