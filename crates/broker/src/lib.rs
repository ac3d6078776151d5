//! ferromq broker semantics: queues, topics, durable subscriptions, acks, transactions,
//! redelivery, dead-lettering, expiry, priority, selectors and producer flow control.
//!
//! The broker knows nothing of sockets, protocols or which store backend it runs on. A protocol
//! session turns frames into calls on [`Broker`] and receives deliveries through its
//! [`DeliverySink`]; persistent writes go through [`ferromq_store::MessageStore`], and every
//! operation that writes returns a [`ferromq_store::Completion`] the session awaits before it
//! confirms anything to the client.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod broker;
mod config;
mod consumer;
mod dedup;
mod destination;
mod error;
mod message;
mod network;
mod queue;
mod selector_props;

pub use broker::{
    system_clock, Broker, Clock, ConsumerHandle, DurableName, DurableSubscriptionSnapshot,
    RetryOutcome, TopicSubscriptionSnapshot, TxWork,
};
pub use config::BrokerConfig;
pub use consumer::{AckMode, ConsumerId, ConsumerOptions, Delivery, DeliverySink};
pub use dedup::{DUPLICATE_ID_HEADER, DUP_LIST_PREFIX};
pub use destination::{is_wildcard, wildcard_matches, Destination, DestinationKind};
pub use error::BrokerError;
pub use ferromq_selector::{Selector, SelectorError};
pub use message::{
    DecodeMessageError, Message, WireCache, DEFAULT_PRIORITY, MAX_PRIORITY, WIRE_CACHE_SLOTS,
};
pub use network::{
    broker_path, extended_path, Demand, NetworkRoute, BROKER_PATH_HEADER,
    NETWORK_CONSUMER_PRIORITY_BASE,
};
pub use queue::{AckScope, DeadCause, ListKind, ListSnapshot, ListStats};
pub use selector_props::MessageProperties;
