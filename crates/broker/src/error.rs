//! Broker errors. Each has a message fit for a STOMP ERROR frame.

use ferromq_store::StoreError;

/// Why a broker operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The store failed; persistent messages are refused until it is reopened.
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
    /// An ACK or NACK that names no outstanding delivery.
    #[error("unexpected ACK/NACK: no outstanding delivery {0}")]
    UnknownDelivery(String),
    /// A temporary destination that does not exist (its connection closed).
    #[error("cannot send to deleted temporary destination {0}")]
    NoSuchDestination(String),
    /// A destination name that cannot be used for this operation.
    #[error("invalid destination: {0}")]
    InvalidDestination(String),
    /// Producer flow control gave up waiting for space.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Durable subscription in use by another consumer, or a client id already connected.
    #[error("{0}")]
    InUse(String),
    /// A limit was reached (consumers, destinations, transactions).
    #[error("{0}")]
    Limit(String),
    /// What an administrative operation names (a queue, a message, a subscription) does not
    /// exist.
    #[error("{0}")]
    NotFound(String),
    /// The broker is shutting down.
    #[error("broker is stopping")]
    Stopping,
}
