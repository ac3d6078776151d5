//! Errors returned by the client, and why a connection ended.

use std::io;

use ferromq_protocol::stomp::DecodeError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The server sent bytes that are not a valid STOMP frame; the connection was closed.
    #[error("cannot decode a frame from the server: {0}")]
    Decode(#[from] DecodeError),
    /// The server sent an ERROR frame (and then closes the connection).
    #[error("server error: {message}")]
    Server {
        /// The ERROR's `message` header (empty if absent).
        message: String,
        /// The ERROR's body, decoded as UTF-8 with replacement characters.
        body: String,
    },
    /// The connection is closed (by the peer, by `disconnect`, or after an earlier failure).
    #[error("connection closed")]
    Closed,
    /// Something did not happen in time: `"connect"`, `"receipt"` or `"server heart-beat"`;
    /// for a [`FailoverClient`](crate::FailoverClient) also `"failover timeout"` (the URI's
    /// `timeout` option elapsed).
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The server broke the protocol (e.g. answered CONNECT with something other than
    /// CONNECTED, or sent a malformed handshake header), or a frame could not be built.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The operation does not exist in the negotiated STOMP version (e.g. NACK on 1.0).
    #[error("{0} is not available in the negotiated STOMP version")]
    Unsupported(&'static str),
    /// The address is not `host:port`, `tcp://host:port` or `ssl://host:port`.
    #[error("invalid address {0:?}: expected host:port, tcp://host:port or ssl://host:port")]
    InvalidAddress(String),
    /// TLS could not be set up: an unreadable or invalid PEM file, an `ssl://` address without
    /// [`ClientConfig::tls`](crate::ClientConfig::tls), or a failed handshake.
    #[error("TLS: {0}")]
    Tls(String),
    /// [`RECEIPTS_PENDING_MAX`](crate::RECEIPTS_PENDING_MAX) receipts are already outstanding.
    #[error("too many receipts pending (limit {limit})")]
    TooManyPendingReceipts {
        /// The limit in force.
        limit: usize,
    },
    /// A subscription with this id is already active on this connection.
    #[error("subscription id {0:?} is already in use on this connection")]
    DuplicateSubscription(String),
    /// The connection URI (`failover:(...)?...` or `tcp://host:port`) is malformed.
    #[error("invalid connection URI: {0}")]
    InvalidUri(#[from] crate::failover::UriError),
    /// The multicast discovery of a `discovery:(multicast://...)` URI could not start.
    #[error("discovery: {0}")]
    Discovery(#[from] ferromq_discovery::DiscoveryError),
    /// The failover client exhausted `maxReconnectAttempts` (or `startupMaxReconnectAttempts`)
    /// passes over its broker list, or lost the connection of a URI without failover.
    #[error("gave up connecting after {attempts} attempt(s): {last_error}")]
    ReconnectFailed {
        /// Failed passes over the broker list.
        attempts: u32,
        /// The last connect failure (or what ended the connection), as text.
        last_error: String,
    },
    /// The connection failed over while this transaction was open, so the broker rolled it
    /// back (ActiveMQ's `TransactionRolledBackException`). Begin it again and redo its work.
    #[error("transaction {transaction:?} was rolled back by a failover; retry it")]
    TransactionRolledBack {
        /// The transaction id.
        transaction: String,
    },
    /// The connection failed while this transaction's COMMIT was in flight: the broker may or
    /// may not have committed it.
    #[error("connection lost while committing transaction {transaction:?}: outcome unknown")]
    TransactionInDoubt {
        /// The transaction id.
        transaction: String,
    },
}

/// Why a connection ended. Kept separately from [`ClientError`] because it must be cloned to
/// every waiter the close fails, and `io::Error` is not `Clone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// This side closed it: `disconnect`, or every handle was dropped.
    Local,
    /// The server closed the socket without an ERROR.
    Eof,
    /// The server sent an ERROR.
    Server { message: String, body: String },
    /// The socket failed.
    Io { kind: io::ErrorKind, text: String },
    /// The server sent an undecodable frame.
    Decode(DecodeError),
    /// The server was silent for longer than the heart-beat contract allows.
    HeartBeatTimeout,
}

impl CloseReason {
    /// Records an I/O error in cloneable form.
    pub(crate) fn io(err: &io::Error) -> CloseReason {
        CloseReason::Io {
            kind: err.kind(),
            text: err.to_string(),
        }
    }

    /// The error handed to an operation that was pending (or started) when the connection ended.
    pub(crate) fn to_error(&self) -> ClientError {
        match self {
            CloseReason::Local | CloseReason::Eof => ClientError::Closed,
            CloseReason::Server { message, body } => ClientError::Server {
                message: message.clone(),
                body: body.clone(),
            },
            CloseReason::Io { kind, text } => ClientError::Io(io::Error::new(*kind, text.clone())),
            CloseReason::Decode(e) => ClientError::Decode(e.clone()),
            CloseReason::HeartBeatTimeout => ClientError::Timeout("server heart-beat"),
        }
    }

    /// What [`Client::closed`](crate::Client::closed) reports: nothing for a close this side
    /// asked for, the failure otherwise (an unannounced EOF is reported as `Closed`).
    pub(crate) fn outcome(&self) -> Option<ClientError> {
        match self {
            CloseReason::Local => None,
            other => Some(other.to_error()),
        }
    }
}
