//! The lab's idempotent utilities. They change nothing, so they need no journal and no request-id
//! memory: the session answers them itself.

/// The text in lowercase (full Unicode lowercasing, not only ASCII).
pub fn lowercase(text: &str) -> String {
    text.to_lowercase()
}

/// True when `number` is prime.
///
/// Miller–Rabin with the first twelve primes as witnesses, which is exact (not probabilistic) for
/// every 64-bit number, and takes microseconds even for the largest: trial division would take
/// seconds there, and a client could make the session spin on it.
pub fn is_prime(number: u64) -> bool {
    const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if number < 2 {
        return false;
    }
    for prime in WITNESSES {
        if number.is_multiple_of(prime) {
            return number == prime;
        }
    }
    // number - 1 = odd * 2^twos
    let twos = (number - 1).trailing_zeros();
    let odd = (number - 1) >> twos;
    let multiply = |a: u64, b: u64| ((u128::from(a) * u128::from(b)) % u128::from(number)) as u64;
    let power = |mut base: u64, mut exponent: u64| {
        let mut result = 1;
        while exponent > 0 {
            if exponent & 1 == 1 {
                result = multiply(result, base);
            }
            base = multiply(base, base);
            exponent >>= 1;
        }
        result
    };
    'witness: for witness in WITNESSES {
        let mut x = power(witness, odd);
        if x == 1 || x == number - 1 {
            continue;
        }
        for _ in 1..twos {
            x = multiply(x, x);
            if x == number - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// True when `number`'s decimal digits read the same backwards.
pub fn is_palindrome(number: u64) -> bool {
    let digits = number.to_string();
    digits.bytes().eq(digits.bytes().rev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_and_palindromes_match_the_lab() {
        let primes: Vec<u64> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(primes, vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(18_446_744_073_709_551_557)); // the largest u64 prime
        assert!(!is_prime(u64::MAX));
        assert!(!is_prime(3_215_031_751)); // a strong pseudoprime to bases 2, 3, 5 and 7
        let slow = |n: u64| {
            n >= 2
                && (2..n)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        assert!((0..5_000).all(|n| is_prime(n) == slow(n)));
        assert!(is_palindrome(12321) && is_palindrome(7) && !is_palindrome(10));
        assert_eq!(lowercase("HeLLo ÄTM"), "hello ätm");
    }
}
