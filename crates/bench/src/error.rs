//! The errors a benchmark run can end with.

use ferromq_client::ClientError;

/// Why a run or probe stopped without a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments describe an impossible or unbounded workload.
    #[error("invalid arguments: {0}")]
    Config(String),
    /// A STOMP operation failed (connection refused, ERROR frame, receipt timeout, ...).
    #[error("{what}: {source}")]
    Client {
        /// Which connection and operation failed.
        what: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The broker stopped answering: an operation did not finish within the run's timeout.
    #[error("broker stopped answering: {0}")]
    Timeout(String),
    /// A file operation of the fsync probe failed; a failed fsync is never retried.
    #[error("{what}: {source}")]
    Io {
        /// Which operation failed.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The probe cannot measure here (e.g. no `O_DIRECT` on this filesystem); says what to use.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A worker task or thread panicked or was cancelled.
    #[error("worker failed: {0}")]
    Worker(String),
}
