//! PINs and the operator token.
//!
//! A PIN is checked the way card issuers check it in a hardware security module: with a keyed
//! function under a *PIN verification key* ([`PinKey`]) that is kept apart from the data
//! directory. The stored verifier of a PIN is HMAC-SHA-256 under that key over the card number
//! and the PIN, so the journal and snapshots alone yield no PIN: a 4-digit PIN has only 10 000
//! values, and no unkeyed hash, however slow, would protect it from whoever holds the data. A
//! keyed check costs about a microsecond, so a storm of logins costs nothing.
//!
//! Every verifier is stored as a [`PinHash`], the 56-byte layout the first release wrote for its
//! argon2id hashes; `memory_kib = 0` (a cost argon2 cannot have) marks a keyed verifier, whose
//! `salt` holds the key's check value and `hash` the MAC. Data written by the first release
//! therefore still opens unchanged, and its argon2id hashes still verify ([`verify`]; slow on
//! purpose, so the server runs them on a small fixed pool) until each is re-keyed at its card's
//! next correct PIN.

use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of a PIN hash's salt.
pub const SALT_BYTES: usize = 16;
/// Bytes of a PIN hash.
pub const HASH_BYTES: usize = 32;

/// A stored PIN verifier: either a keyed verifier ([`PinKey::verifier`], `memory_kib = 0`) or an
/// argon2id hash written by the first release, with everything needed to check a PIN against it.
/// The layout is the one on disk (docs/JOURNAL.md), which is why the two kinds share one struct;
/// an account keeps it in memory as a [`Verifier`], 16 bytes smaller.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinHash {
    /// Memory cost it was made with, in KiB; 0 for a keyed verifier.
    pub memory_kib: u32,
    /// Passes it was made with; for a keyed verifier, the scheme ([`KEYED_SCHEME`]).
    pub iterations: u32,
    /// Its random salt; for a keyed verifier, the check value of the key it was made with.
    pub salt: [u8; SALT_BYTES],
    /// The hash; for a keyed verifier, the MAC.
    pub hash: [u8; HASH_BYTES],
}

/// Hashes are not secrets in the way PINs are, but there is no reason to print them either.
impl std::fmt::Debug for PinHash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key_check() {
            Some(check) => write!(formatter, "PinHash(keyed, key {})", check_text(&check)),
            None => write!(
                formatter,
                "PinHash(argon2id, m={} KiB, t={})",
                self.memory_kib, self.iterations
            ),
        }
    }
}

fn argon2id(cost: PinHashCost) -> Result<Argon2<'static>, String> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, Some(HASH_BYTES))
        .map_err(|error| format!("bad PIN hash cost: {error}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Shortest PIN accepted.
pub const PIN_DIGITS_MIN: usize = 4;
/// Longest PIN accepted.
pub const PIN_DIGITS_MAX: usize = 12;

/// The cost of an argon2id PIN hash. The first release's default followed OWASP's argon2id
/// recommendation (19 MiB, two passes); its data may hold hashes of any cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinHashCost {
    /// Memory per hash in KiB.
    pub memory_kib: u32,
    /// Passes over that memory.
    pub iterations: u32,
}

impl Default for PinHashCost {
    fn default() -> Self {
        PinHashCost {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

impl PinHashCost {
    /// The cheapest cost argon2 allows; for tests only.
    pub const MINIMUM: PinHashCost = PinHashCost {
        memory_kib: 8,
        iterations: 1,
    };
}

impl PinHash {
    /// The cost this hash was made with (and any check against it takes).
    pub fn cost(&self) -> PinHashCost {
        PinHashCost {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
        }
    }

    /// True for a keyed verifier, false for an argon2id hash of the first release.
    pub fn is_keyed(&self) -> bool {
        self.memory_kib == 0
    }

    /// The check value of the key a keyed verifier was made with; `None` for an argon2id hash.
    pub fn key_check(&self) -> Option<KeyCheck> {
        self.is_keyed().then_some(self.salt)
    }
}

/// A PIN verifier as an account keeps it in memory: 40 bytes where a [`PinHash`] takes 56. Every
/// keyed verifier of a data directory carries the same key check value (the server refuses to
/// start otherwise), so a keyed verifier keeps its MAC and a reference to that value, stored once
/// for the life of the process (`interned_check`); an argon2id hash of the first release, which
/// its card's next right PIN re-keys, or a keyed verifier whose check value finds no room among
/// those interned, is kept whole on the heap. [`PinHash`] stays the form on disk and on the
/// wire: [`Verifier::get`] gives it back unchanged.
#[derive(Clone)]
pub struct Verifier(Kept);

#[derive(Clone)]
enum Kept {
    Keyed {
        mac: [u8; HASH_BYTES],
        check: &'static KeyCheck,
    },
    Whole(Box<PinHash>),
}

impl Verifier {
    /// The verifier as its stored form.
    pub fn get(&self) -> PinHash {
        match &self.0 {
            Kept::Keyed { mac, check } => PinHash {
                memory_kib: 0,
                iterations: KEYED_SCHEME,
                salt: **check,
                hash: *mac,
            },
            Kept::Whole(whole) => **whole,
        }
    }
}

impl From<PinHash> for Verifier {
    fn from(stored: PinHash) -> Self {
        let keyed = stored.is_keyed() && stored.iterations == KEYED_SCHEME;
        match keyed.then(|| interned_check(&stored.salt)).flatten() {
            Some(check) => Verifier(Kept::Keyed {
                mac: stored.hash,
                check,
            }),
            None => Verifier(Kept::Whole(Box::new(stored))),
        }
    }
}

/// Equal when their stored forms are.
impl PartialEq for Verifier {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Verifier {}

/// Like [`PinHash`]'s: which kind, never the bytes.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(formatter)
    }
}

/// How many distinct key check values `interned_check` keeps: a data directory has one, a test
/// process a few; a verifier of any other is kept whole.
pub const KEY_CHECKS_INTERNED_MAX: usize = 64;

/// Key check values, each stored once: places filled in the order values are first seen, and
/// never changed once filled, so they are read without a lock; a new value is added under the
/// mutex.
struct Interner {
    places: [std::sync::OnceLock<KeyCheck>; KEY_CHECKS_INTERNED_MAX],
    adding: std::sync::Mutex<()>,
}

impl Interner {
    const fn new() -> Self {
        Interner {
            places: [const { std::sync::OnceLock::new() }; KEY_CHECKS_INTERNED_MAX],
            adding: std::sync::Mutex::new(()),
        }
    }

    /// The one copy of `check`, made on first use; `None` when other values took every place.
    fn intern(&self, check: &KeyCheck) -> Option<&KeyCheck> {
        let find = || {
            self.places
                .iter()
                .map_while(std::sync::OnceLock::get)
                .find(|kept| *kept == check)
        };
        if let Some(found) = find() {
            return Some(found);
        }
        let _adding = self
            .adding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = find() {
            return Some(found);
        }
        let free = self.places.iter().find(|place| place.get().is_none())?;
        Some(free.get_or_init(|| *check))
    }
}

/// The process-wide copy of `check` every [`Verifier`] of its key refers to.
fn interned_check(check: &KeyCheck) -> Option<&'static KeyCheck> {
    static INTERNED: Interner = Interner::new();
    INTERNED.intern(check)
}

/// The scheme number a keyed verifier carries in [`PinHash::iterations`]: HMAC-SHA-256 over
/// [`PIN_MAC_LABEL`], the card as 8 big-endian bytes and the PIN's ASCII digits.
pub const KEYED_SCHEME: u32 = 1;

/// Bytes of a PIN verification key.
pub const PIN_KEY_BYTES: usize = 32;

/// A key check value: the first bytes of HMAC-SHA-256 under the key over [`KEY_CHECK_LABEL`].
/// It tells which key a verifier was made with and reveals nothing about the key.
pub type KeyCheck = [u8; SALT_BYTES];

/// What a PIN's MAC starts with, so that no other use of the key can produce a verifier.
pub const PIN_MAC_LABEL: &[u8] = b"actor-bank pin verifier v1\0";
/// What a key check value is the MAC of.
pub const KEY_CHECK_LABEL: &[u8] = b"actor-bank pin key check v1\0";
/// What the stand-in verifier of an unknown card is the MAC of; no PIN's MAC can equal it,
/// because every PIN's MAC starts with [`PIN_MAC_LABEL`].
const UNKNOWN_CARD_LABEL: &[u8] = b"actor-bank unknown card v1\0";

/// HMAC-SHA-256 under `key` over the concatenation of `parts`.
fn mac(key: &[u8; PIN_KEY_BYTES], parts: &[&[u8]]) -> [u8; HASH_BYTES] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A key check value as hex, for messages.
pub fn check_text(check: &KeyCheck) -> String {
    check.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The PIN verification key: the secret every keyed PIN verifier is made and checked with. It
/// lives in a file of its own, apart from the data directory (see docs/SECURITY.md); whoever
/// has the data directory without it can check no PIN.
#[derive(Clone)]
pub struct PinKey {
    key: [u8; PIN_KEY_BYTES],
    /// The key's check value, computed once: every verifier carries it.
    check: KeyCheck,
}

/// The key never reaches a log line; its check value (which is stored with every verifier
/// anyway) tells keys apart.
impl std::fmt::Debug for PinKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "PinKey(check {})", check_text(&self.check()))
    }
}

impl PinKey {
    /// A key of these bytes.
    pub fn from_bytes(key: [u8; PIN_KEY_BYTES]) -> Self {
        let mac = mac(&key, &[KEY_CHECK_LABEL]);
        let mut check = [0u8; SALT_BYTES];
        check.copy_from_slice(&mac[..SALT_BYTES]);
        PinKey { key, check }
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut key = [0u8; PIN_KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut key);
        PinKey::from_bytes(key)
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; HASH_BYTES] {
        mac(&self.key, parts)
    }

    /// This key's check value.
    pub fn check(&self) -> KeyCheck {
        self.check
    }

    /// The keyed verifier of `pin` on `card`: deterministic, so a retried change of PIN makes the
    /// same record.
    pub fn verifier(&self, card: u64, pin: &str) -> PinHash {
        PinHash {
            memory_kib: 0,
            iterations: KEYED_SCHEME,
            salt: self.check(),
            hash: self.mac(&[PIN_MAC_LABEL, &card.to_be_bytes(), pin.as_bytes()]),
        }
    }

    /// A verifier no PIN matches, made with this key: an unknown card is checked against it, so
    /// that it costs exactly what a known card costs (see docs/SECURITY.md, "Rate limits and
    /// timing").
    pub fn unknown_card_verifier(&self) -> PinHash {
        PinHash {
            hash: self.mac(&[UNKNOWN_CARD_LABEL]),
            ..self.verifier(0, "")
        }
    }

    /// True when `pin` on `card` matches the keyed verifier `stored`, compared in constant time.
    /// Always false for an argon2id hash (see [`verify`]) and for a verifier of another key; the
    /// work is the same in every case.
    pub fn matches(&self, card: u64, pin: &str, stored: &PinHash) -> bool {
        let offered = self.verifier(card, pin);
        let same_mac = offered.hash.ct_eq(&stored.hash);
        let same_key = offered.salt.ct_eq(&stored.salt);
        let keyed = stored.memory_kib.ct_eq(&0) & stored.iterations.ct_eq(&KEYED_SCHEME);
        bool::from(same_mac & same_key & keyed)
    }

    /// The key as the text its file holds: 64 hex digits and a newline.
    fn to_text(&self) -> String {
        let mut text: String = self.key.iter().map(|byte| format!("{byte:02x}")).collect();
        text.push('\n');
        text
    }

    /// Parses a key file's text: 64 hex digits, surrounding whitespace ignored.
    fn from_text(text: &str) -> Result<Self, String> {
        let digits = text.trim();
        if digits.len() != 2 * PIN_KEY_BYTES || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a PIN key file holds {} hex digits, this one does not",
                2 * PIN_KEY_BYTES
            ));
        }
        let mut key = [0u8; PIN_KEY_BYTES];
        for (index, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * index..2 * index + 2], 16)
                .map_err(|error| error.to_string())?;
        }
        Ok(PinKey::from_bytes(key))
    }

    /// Reads the key from `path`; `Ok(None)` when there is no file. A key file that others than
    /// its owner may read or write is refused (like ssh does with private keys).
    pub fn read(path: &std::path::Path) -> Result<Option<PinKey>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(format!(
                    "cannot read the PIN key {}: {error}",
                    path.display()
                ))
            }
        };
        refuse_shared_secret_file(path, "the PIN key")?;
        PinKey::from_text(&text)
            .map(Some)
            .map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Makes a new random key and writes it to `path`, which must not exist: the file is created
    /// with `create_new` (so a file or symlink planted at that name is never followed or
    /// overwritten), readable and writable by its owner only (0600), and synced.
    pub fn create(path: &std::path::Path) -> Result<PinKey, String> {
        use std::io::Write;
        let key = PinKey::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let failed = |error: std::io::Error| {
            format!("cannot create the PIN key {}: {error}", path.display())
        };
        let mut file = options.open(path).map_err(failed)?;
        file.write_all(key.to_text().as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            // The new name must survive a crash too.
            if let Ok(directory) = std::fs::File::open(parent) {
                let _ = directory.sync_all();
            }
        }
        Ok(key)
    }
}

/// True when `pin` is 4 to 12 ASCII digits.
pub fn is_well_formed(pin: &str) -> bool {
    (PIN_DIGITS_MIN..=PIN_DIGITS_MAX).contains(&pin.len())
        && pin.bytes().all(|b| b.is_ascii_digit())
}

/// Hashes a PIN with argon2id and a fresh random salt, as the first release stored PINs. The
/// server makes keyed verifiers instead; this stays to write data of the old format in tests.
pub fn hash(pin: &str, cost: PinHashCost) -> Result<PinHash, String> {
    let mut salt = [0u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut hash = [0u8; HASH_BYTES];
    argon2id(cost)?
        .hash_password_into(pin.as_bytes(), &salt, &mut hash)
        .map_err(|error| format!("cannot hash PIN: {error}"))?;
    Ok(PinHash {
        memory_kib: cost.memory_kib,
        iterations: cost.iterations,
        salt,
        hash,
    })
}

/// True when `pin` matches the argon2id hash `stored`, whatever cost it was made with (false for
/// a keyed verifier). Slow on purpose: the server runs it on its fixed pool of PIN threads. The
/// comparison takes the same time whichever byte differs.
pub fn verify(pin: &str, stored: &PinHash) -> bool {
    if stored.is_keyed() {
        return false;
    }
    let mut hash = [0u8; HASH_BYTES];
    let hashed = argon2id(stored.cost()).and_then(|argon2| {
        HASH_MEMORY.with(|memory| {
            // One buffer per thread, grown to the largest cost seen and reused: a fresh 19 MiB
            // allocation per check let the allocator's peak grow far beyond the checks running
            // at once (measured: 400 MiB after 40 checks on two threads).
            let mut memory = memory.borrow_mut();
            let blocks = argon2.params().block_count();
            if memory.len() < blocks {
                memory.resize(blocks, argon2::Block::default());
            }
            argon2
                .hash_password_into_with_memory(
                    pin.as_bytes(),
                    &stored.salt,
                    &mut hash,
                    &mut memory[..],
                )
                .map_err(|error| error.to_string())
        })
    });
    match hashed {
        Ok(()) => bool::from(hash.ct_eq(&stored.hash)),
        Err(_) => false,
    }
}

thread_local! {
    /// The argon2id working memory of this thread's checks ([`verify`]).
    static HASH_MEMORY: std::cell::RefCell<Vec<argon2::Block>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The operator token, kept only as a digest so comparisons take the same time whatever the
/// guess (no early exit on the first wrong byte, and no length leak).
#[derive(Clone)]
pub struct OperatorToken {
    digest: Option<[u8; 32]>,
}

impl OperatorToken {
    /// A token; `None` or an empty string disables operator operations.
    pub fn new(token: Option<&str>) -> Self {
        OperatorToken {
            digest: token
                .filter(|token| !token.is_empty())
                .map(|token| Sha256::digest(token.as_bytes()).into()),
        }
    }

    /// True when operator operations are possible at all.
    pub fn is_set(&self) -> bool {
        self.digest.is_some()
    }

    /// Compares `offered` with the token in constant time.
    pub fn matches(&self, offered: &str) -> bool {
        match &self.digest {
            Some(digest) => {
                let offered: [u8; 32] = Sha256::digest(offered.as_bytes()).into();
                bool::from(digest.ct_eq(&offered))
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(if self.is_set() {
            "OperatorToken(set)"
        } else {
            "OperatorToken(unset)"
        })
    }
}

/// Refuses a file holding a secret (the PIN key, a TLS private key) that users other than its
/// owner may read or write: `what` names it in the error, which says how to fix it.
pub fn refuse_shared_secret_file(path: &std::path::Path, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|error| format!("{what} {}: {error}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{what} {} may be read by other users (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_kept_in_memory_gives_back_its_stored_form() {
        assert_eq!(std::mem::size_of::<Verifier>(), 40);
        let key = PinKey::from_bytes([7; PIN_KEY_BYTES]);
        let keyed = key.verifier(123_456_789, "1234");
        let kept = Verifier::from(keyed);
        assert_eq!(kept.get(), keyed);
        let neighbour = Verifier::from(key.verifier(123_456_780, "1234"));
        match (&kept.0, &neighbour.0) {
            (Kept::Keyed { check: one, .. }, Kept::Keyed { check: two, .. }) => {
                assert!(
                    std::ptr::eq(*one, *two),
                    "one copy of the key's check value"
                )
            }
            _ => panic!("keyed verifiers kept whole: {kept:?} {neighbour:?}"),
        }
        assert_ne!(kept, Verifier::from(key.verifier(123_456_789, "1235")));
        let legacy = hash("1234", PinHashCost::MINIMUM).unwrap();
        let kept = Verifier::from(legacy);
        assert!(matches!(kept.0, Kept::Whole(_)));
        assert_eq!(kept.get(), legacy);
        // Keyed by its memory cost but of a scheme this release does not know: kept as it is.
        let unknown_scheme = PinHash {
            iterations: KEYED_SCHEME + 1,
            ..keyed
        };
        let kept = Verifier::from(unknown_scheme);
        assert!(matches!(kept.0, Kept::Whole(_)));
        assert_eq!(kept.get(), unknown_scheme);
        assert!(!format!("{kept:?}").contains("07"));
    }

    #[test]
    fn key_checks_beyond_the_interned_places_find_none() {
        let interner = Interner::new();
        let checks: Vec<KeyCheck> = (0..=KEY_CHECKS_INTERNED_MAX)
            .map(|index| [index as u8; SALT_BYTES])
            .collect();
        let first = interner.intern(&checks[0]).expect("room");
        assert!(std::ptr::eq(first, interner.intern(&checks[0]).unwrap()));
        for check in &checks[1..KEY_CHECKS_INTERNED_MAX] {
            assert_eq!(interner.intern(check), Some(check));
        }
        assert_eq!(interner.intern(&checks[KEY_CHECKS_INTERNED_MAX]), None);
        assert_eq!(interner.intern(&checks[3]), Some(&checks[3]), "still found");
    }

    #[test]
    fn a_pin_hash_verifies_only_its_pin_and_holds_no_clear_text() {
        let stored = hash("1234", PinHashCost::MINIMUM).unwrap();
        assert!(verify("1234", &stored));
        assert!(!verify("1235", &stored));
        let again = hash("1234", PinHashCost::MINIMUM).unwrap();
        assert_ne!(again.salt, stored.salt, "every hash gets its own salt");
        assert!(verify("1234", &again));
        let broken = PinHash {
            memory_kib: 0,
            ..stored
        };
        assert!(!verify("1234", &broken));
        assert_eq!(std::mem::size_of::<PinHash>(), 56);
    }

    #[test]
    fn a_keyed_verifier_matches_only_its_card_its_pin_and_its_key() {
        let key = PinKey::from_bytes([7; PIN_KEY_BYTES]);
        let stored = key.verifier(123_456_789, "1234");
        assert!(stored.is_keyed() && stored.key_check() == Some(key.check()));
        assert!(key.matches(123_456_789, "1234", &stored));
        assert!(!key.matches(123_456_789, "1235", &stored));
        assert!(
            !key.matches(123_456_780, "1234", &stored),
            "bound to the card"
        );
        let other = PinKey::from_bytes([8; PIN_KEY_BYTES]);
        assert_ne!(other.check(), key.check());
        assert!(
            !other.matches(123_456_789, "1234", &stored),
            "bound to the key"
        );
        assert_eq!(stored, key.verifier(123_456_789, "1234"), "deterministic");
        assert!(!verify("1234", &stored), "never taken for an argon2id hash");
        let legacy = hash("1234", PinHashCost::MINIMUM).unwrap();
        assert!(!legacy.is_keyed() && !key.matches(123_456_789, "1234", &legacy));
        let unknown = key.unknown_card_verifier();
        assert!(unknown.is_keyed() && !key.matches(0, "", &unknown));
        assert!(
            !format!("{key:?}{stored:?}").contains("0707"),
            "no key bytes in Debug"
        );
    }

    #[test]
    fn a_key_file_is_created_0600_never_over_an_existing_name_and_reads_back() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("pin.key");
        assert!(PinKey::read(&path).unwrap().is_none());
        let key = PinKey::create(&path).unwrap();
        let read = PinKey::read(&path).unwrap().unwrap();
        assert_eq!(read.check(), key.check());
        assert!(
            PinKey::create(&path).is_err(),
            "an existing key is never replaced"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // A symlink planted at the name is not followed.
            let target = directory.path().join("target");
            std::fs::write(&target, "keep").unwrap();
            let planted = directory.path().join("planted.key");
            std::os::unix::fs::symlink(&target, &planted).unwrap();
            assert!(PinKey::create(&planted).is_err());
            assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
            // A key others may read is refused.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(PinKey::read(&path).unwrap_err().contains("chmod 600"));
        }
        std::fs::write(directory.path().join("short.key"), "abcd").unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(
            directory.path().join("short.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(PinKey::read(&directory.path().join("short.key")).is_err());
    }

    #[test]
    fn pins_must_be_four_to_twelve_digits() {
        assert!(is_well_formed("1234") && is_well_formed("123456789012"));
        assert!(
            !is_well_formed("123") && !is_well_formed("12a4") && !is_well_formed("1234567890123")
        );
    }

    #[test]
    fn the_operator_token_matches_only_itself() {
        let token = OperatorToken::new(Some("open sesame"));
        assert!(token.matches("open sesame") && !token.matches("open sesam") && !token.matches(""));
        assert!(!OperatorToken::new(None).matches(""));
        assert!(!OperatorToken::new(Some("")).is_set());
    }
}
