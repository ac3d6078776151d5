//! Store errors.

use std::io;
use std::sync::Arc;

/// Why a store operation failed. Cloneable, because one failed group commit fails every waiter
/// of its batch with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed. After a failed write or sync the store refuses further writes.
    #[error("store I/O error during {op}: {source}")]
    Io {
        /// What the store was doing (`write`, `fdatasync`, `open segment`, ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The store failed earlier and refuses writes until it is reopened (never retry a fsync).
    #[error("store has failed and refuses writes until reopened: {0}")]
    Failed(String),
    /// Stored data failed a check.
    #[error("corrupt store data at {location}: {reason}")]
    Corrupt {
        /// Where (file and offset, key, row).
        location: String,
        /// What was wrong.
        reason: String,
    },
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// The store reached its configured size limit.
    #[error("store is full: {0}")]
    Full(String),
    /// A configuration problem found when opening.
    #[error("store configuration: {0}")]
    Config(String),
    /// The write was not confirmed, but it may be stored anyway: it was handed on (to a
    /// replication stream, say) before the store lost the right to confirm it. A client must
    /// neither be told "not stored" nor "stored": the connection is dropped so that a failover
    /// client resends it (with its duplicate id) to whoever serves next.
    #[error("the write's outcome is unknown: {0}")]
    Indeterminate(String),
}

impl StoreError {
    /// Wraps an I/O error with the operation it came from.
    pub fn io(op: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            source: Arc::new(source),
        }
    }
}
