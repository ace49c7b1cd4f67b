//! `Logout`: forget the verified card.

use super::{Answer, Check, Login, Started};
use crate::model::Code;

/// The checks of `Logout`, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[Check::InFlight, Check::Answered];

/// Logs the connection out, in the session's turn; a Verify still being checked then does not
/// log it in.
pub(super) fn start(login: &mut Login) -> Started {
    login.next_epoch();
    // Check::Answered.
    Started::Now(Answer::bare(Code::Approved))
}
