//! Why the server could not start.

use crate::journal::JournalError;
use std::net::SocketAddr;

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be recovered.
    #[error("cannot open the journal: {0}")]
    Journal(#[from] JournalError),
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The PIN verification key is missing, unreadable, or not the key the accounts' PINs were
    /// made with.
    #[error("{0}")]
    PinKey(String),
    /// The TLS files are missing, unreadable, too widely readable, or do not fit together.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// Something else went wrong during start-up.
    #[error("cannot start: {0}")]
    Start(String),
}
