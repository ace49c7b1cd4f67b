//! The layer order of docs/ARCHITECTURE.md section 3 holds in the code: every `crate::` path in
//! a module's non-test code names a module of a lower layer (or the module itself).
//!
//! The order is written here once, as data, and the same list is the table in the architecture
//! document, which this test also checks, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use the modules of the layers before its own, and
/// modules of its own layer only where `PEERS` says so.
const LAYERS: &[&[&str]] = &[
    &["model", "clock", "utility", "metrics", "pin", "pin_block"],
    &["codec", "iso8583"],
    &["protocol"],
    &["ledger"],
    &["storage", "journal"],
    &["ratelimit", "operator", "faults", "logging"],
    &["client"],
    &["server"],
    &["config"],
    &["atm", "swarm"],
];

/// Uses within one layer that are part of the design: the file journal implements the storage
/// seam; the operator token's failure limit is a rate limit; a PIN block's PIN is a PIN, and its
/// key file is a secret file like the PIN key's.
const PEERS: &[(&str, &str)] = &[
    ("journal", "storage"),
    ("storage", "journal"),
    ("operator", "ratelimit"),
    ("pin_block", "pin"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a source file belongs to (`src/journal/format.rs` → `journal`).
fn module_of(path: &Path, source: &Path) -> Option<String> {
    let relative = path.strip_prefix(source).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// The modules named by `crate::NAME` in the code of `text` before its test module, leaving out
/// comments (doc links may point anywhere).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|character| character.is_ascii_alphanumeric() || *character == '_')
                .collect();
            if !name.is_empty() {
                found.push((number + 1, name));
            }
        }
        // `use crate::{a, b}` names several modules at once.
        if let Some(group) = line.split("crate::{").nth(1) {
            for name in group.split(['}', ',']) {
                let name = name.trim().split("::").next().unwrap_or("").to_string();
                if !name.is_empty() {
                    found.push((number + 1, name));
                }
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_lower_layers() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&source, &mut files);
    let mut violations = Vec::new();
    let mut seen = BTreeMap::new();
    for path in &files {
        let Some(module) = module_of(path, &source) else {
            continue;
        };
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("module {module} is in no layer of tests/layers.rs"));
        seen.insert(module.clone(), own);
        let text = std::fs::read_to_string(path).expect("source is readable");
        for (line, used) in crate_paths(&text) {
            if used == module {
                continue;
            }
            let Some(theirs) = layer_of(&used) else {
                violations.push(format!("{}:{line}: unknown module {used}", path.display()));
                continue;
            };
            let peer = theirs == own && PEERS.contains(&(module.as_str(), used.as_str()));
            if theirs > own || (theirs == own && !peer) {
                violations.push(format!(
                    "{}:{line}: {module} (layer {own}) uses {used} (layer {theirs})",
                    path.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    let listed: usize = LAYERS.iter().map(|layer| layer.len()).sum();
    assert_eq!(seen.len(), listed, "every listed module exists: {seen:?}");
}

#[test]
fn the_architecture_document_lists_the_same_layers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(path).expect("docs/ARCHITECTURE.md is readable");
    let section = text
        .split("## 3. Layers")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("ARCHITECTURE.md has a section 3, Layers");
    let mut rows = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 3 && cells[1].chars().all(|character| character.is_ascii_digit()) {
            let modules: Vec<String> = cells[2]
                .split(',')
                .map(|module| module.trim().trim_matches('`').to_string())
                .collect();
            rows.push(modules);
        }
    }
    let expected: Vec<Vec<String>> = LAYERS
        .iter()
        .map(|layer| layer.iter().map(|module| module.to_string()).collect())
        .collect();
    assert_eq!(
        rows, expected,
        "the layer table of ARCHITECTURE.md section 3"
    );
}
