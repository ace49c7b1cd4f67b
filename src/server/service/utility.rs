//! The lab's utilities: `Lowercase`, `IsPrime`, `IsPalindrome`.

use super::{Answer, AnswerBody, Check, Started};
use crate::codec::FRAME_BYTES_LIMIT;
use crate::model::Code;
use crate::server::Bank;
use crate::utility;

/// Room a reply needs around its text: message and status tags, the request id, the length.
const REPLY_OVERHEAD_BYTES: usize = 32;

/// The checks of `Lowercase`, in the order [`lowercase`] runs them.
pub(super) const LOWERCASE_CHECKS: &[Check] =
    &[Check::InFlight, Check::Validation, Check::Answered];

/// The checks of `IsPrime` and `IsPalindrome`.
pub(super) const CHECKS: &[Check] = &[Check::InFlight, Check::Answered];

/// The text in lowercase.
pub(super) fn lowercase(bank: &Bank, text: &str) -> Result<Started, Answer> {
    // Check::Validation: lowercasing can lengthen text (some capitals become two characters),
    // and a reply must fit in a frame the client accepts.
    let lowered = utility::lowercase(text);
    let frame_bytes_max = bank.limits().frame_bytes_max.min(FRAME_BYTES_LIMIT);
    if lowered.len() + REPLY_OVERHEAD_BYTES > frame_bytes_max {
        return Err(Answer::bare(Code::InvalidRequest));
    }
    // Check::Answered.
    Ok(Started::Now(Answer::approved(AnswerBody::Text(lowered))))
}

/// Whether `number` is prime.
pub(super) fn is_prime(number: u64) -> Started {
    Started::Now(Answer::approved(AnswerBody::Yes(utility::is_prime(number))))
}

/// Whether `number`'s digits read the same both ways.
pub(super) fn is_palindrome(number: u64) -> Started {
    Started::Now(Answer::approved(AnswerBody::Yes(utility::is_palindrome(
        number,
    ))))
}
