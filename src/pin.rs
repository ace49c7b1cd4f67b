//! PINs and the operator token.
//!
//! PINs are stored only as argon2id hashes ([`PinHash`]: the cost, a random salt and the hash),
//! so neither memory snapshots, logs nor the data directory ever hold one in clear. Hashing is
//! slow on purpose; callers run it on a blocking thread, never on an actor's thread, unless the
//! cost is so low ([`PinHashCost::is_cheap`]) that handing it to another thread would take
//! longer than the hash itself.

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of a PIN hash's salt.
pub const SALT_BYTES: usize = 16;
/// Bytes of a PIN hash.
pub const HASH_BYTES: usize = 32;

/// An argon2id hash of a PIN, with everything needed to check a PIN against it. Kept inline
/// (56 bytes, no heap), because every account holds one.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinHash {
    /// Memory cost it was made with, in KiB.
    pub memory_kib: u32,
    /// Passes it was made with.
    pub iterations: u32,
    /// Its random salt.
    pub salt: [u8; SALT_BYTES],
    /// The hash.
    pub hash: [u8; HASH_BYTES],
}

/// Hashes are not secrets in the way PINs are, but there is no reason to print them either.
impl std::fmt::Debug for PinHash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "PinHash(argon2id, m={} KiB, t={})",
            self.memory_kib, self.iterations
        )
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

/// The cost of a PIN hash. The default follows OWASP's argon2id recommendation (19 MiB, two
/// passes); tests and load generators that create thousands of accounts may lower it.
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

/// The largest cost (KiB of memory times passes) at which a hash is computed where it is needed
/// instead of on a blocking thread: 64 KiB in one pass takes about 40 µs, less than the two thread
/// wake-ups a hand-off costs. The default cost is 600 times that.
pub const INLINE_COST_MAX: u64 = 64;

impl PinHashCost {
    /// The cheapest cost argon2 allows; for tests only.
    pub const MINIMUM: PinHashCost = PinHashCost {
        memory_kib: 8,
        iterations: 1,
    };

    /// True when a hash of this cost is cheaper than handing it to another thread
    /// ([`INLINE_COST_MAX`]).
    pub fn is_cheap(self) -> bool {
        u64::from(self.memory_kib) * u64::from(self.iterations) <= INLINE_COST_MAX
    }
}

impl PinHash {
    /// The cost this hash was made with (and any check against it takes).
    pub fn cost(&self) -> PinHashCost {
        PinHashCost {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
        }
    }
}

/// True when `pin` is 4 to 12 ASCII digits.
pub fn is_well_formed(pin: &str) -> bool {
    (PIN_DIGITS_MIN..=PIN_DIGITS_MAX).contains(&pin.len())
        && pin.bytes().all(|b| b.is_ascii_digit())
}

/// Hashes a PIN with a fresh random salt.
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

/// True when `pin` matches `stored`, whatever cost it was made with. The comparison takes the
/// same time whichever byte differs.
pub fn verify(pin: &str, stored: &PinHash) -> bool {
    let mut hash = [0u8; HASH_BYTES];
    match argon2id(stored.cost()).and_then(|argon2| {
        argon2
            .hash_password_into(pin.as_bytes(), &stored.salt, &mut hash)
            .map_err(|error| error.to_string())
    }) {
        Ok(()) => bool::from(hash.ct_eq(&stored.hash)),
        Err(_) => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hashes_cheaper_than_a_thread_hand_off_count_as_cheap() {
        assert!(PinHashCost::MINIMUM.is_cheap());
        assert!(!PinHashCost::default().is_cheap());
        let edge = PinHashCost {
            memory_kib: INLINE_COST_MAX as u32,
            iterations: 1,
        };
        assert!(edge.is_cheap());
        assert!(!PinHashCost {
            iterations: 2,
            ..edge
        }
        .is_cheap());
        let stored = hash("1234", edge).unwrap();
        assert_eq!(stored.cost(), edge);
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
