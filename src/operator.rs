//! The operator token's rules: how strong it must be, how to make one, and how fast a peer may
//! get it wrong.
//!
//! The token is the operator's only credential, checked on every operator request, so it must be
//! too long to guess ([`check_strength`]) and guesses must be slow ([`OPERATOR_FAILURES_DEFAULT`], counted by
//! [`crate::ratelimit::PeerBuckets`]): each
//! peer address has a bucket of failed attempts that refills slowly; while it is empty, that
//! peer's operator requests are answered `busy` without the token being looked at, so the answer
//! says nothing about the token.

use crate::ratelimit::RateLimit;
use rand::RngCore;

/// Shortest operator token accepted, in characters. 32 characters drawn at random from the
/// 16 hexadecimal digits hold 128 bits; the tokens [`generate`] makes are 64 (256 bits).
pub const OPERATOR_TOKEN_CHARS_MIN: usize = 32;

/// Fewest different characters an operator token must contain: rules out `aaaa…`-like tokens
/// that pass the length test but hold almost nothing. (A random hexadecimal token of 32
/// characters has fewer than 8 different ones with a probability below one in ten million.)
pub const OPERATOR_TOKEN_DISTINCT_CHARS_MIN: usize = 8;

/// Random bytes in a generated token (written as twice as many hexadecimal digits).
pub const GENERATED_TOKEN_BYTES: usize = 32;

/// Peers whose failed operator attempts are tracked at once. When the table is full, peers whose
/// bucket has refilled are dropped; if none has, a new peer's operator request is answered `busy`
/// without a check (a flood from many addresses cannot turn the limit off).
pub const OPERATOR_FAILURE_PEERS_MAX: usize = 4096;

/// Why a token is refused at start, with how to make a good one.
pub fn check_strength(token: &str) -> Result<(), String> {
    let how = "make one with `bank-server generate-operator-token`";
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(format!(
            "the operator token must be printable ASCII without spaces; {how}"
        ));
    }
    if token.len() < OPERATOR_TOKEN_CHARS_MIN {
        return Err(format!(
            "the operator token has {} characters; at least {OPERATOR_TOKEN_CHARS_MIN} (128 bits) are required; {how}",
            token.len()
        ));
    }
    let mut seen = [false; 128];
    token
        .bytes()
        .for_each(|byte| seen[usize::from(byte)] = true);
    if seen.iter().filter(|seen| **seen).count() < OPERATOR_TOKEN_DISTINCT_CHARS_MIN {
        return Err(format!(
            "the operator token has fewer than {OPERATOR_TOKEN_DISTINCT_CHARS_MIN} different characters; {how}"
        ));
    }
    Ok(())
}

/// A new random operator token: [`GENERATED_TOKEN_BYTES`] bytes from the operating system's
/// random source, as lowercase hexadecimal.
pub fn generate() -> String {
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Failed operator-token attempts each peer address may make by default: 5 in a row, then 10
/// a minute.
pub const OPERATOR_FAILURES_DEFAULT: RateLimit = RateLimit {
    burst: 5,
    per_minute: 10,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_under_128_bits_are_refused_and_generated_ones_pass() {
        assert!(check_strength("test-operator-token").is_err());
        assert!(check_strength(&"ab".repeat(16)).is_err(), "two characters");
        assert!(check_strength(&format!("{} x", "0123456789abcdef".repeat(2))).is_err());
        let error = check_strength("abcd").unwrap_err();
        assert!(error.contains("generate-operator-token"), "{error}");
        assert!(check_strength(&"0123456789abcdef".repeat(2)).is_ok());
        let token = generate();
        assert_eq!(token.len(), 2 * GENERATED_TOKEN_BYTES);
        assert!(check_strength(&token).is_ok());
        assert_ne!(generate(), token);
    }
}
