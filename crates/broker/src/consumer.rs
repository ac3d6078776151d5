//! Consumers as the broker sees them: how deliveries leave the broker.

use std::sync::{Arc, Weak};

use ferromq_selector::Selector;

use crate::message::Message;
use crate::network::NetworkRoute;
use crate::queue::MessageList;

/// Identifies a consumer broker-wide.
pub type ConsumerId = u64;

/// How a consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// The session acknowledges each message once it has written it to the client.
    Auto,
    /// An ACK acknowledges the message and every earlier one delivered to the consumer.
    Client,
    /// An ACK acknowledges exactly one message.
    ClientIndividual,
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The consumer it is for.
    pub consumer: ConsumerId,
    /// Broker-wide unique delivery tag; the session's ACK/NACK names it.
    pub tag: u64,
    /// The message.
    pub message: Arc<Message>,
    /// True when an earlier delivery of this message was not acknowledged.
    pub redelivered: bool,
    /// How many times it has been delivered, this one included (JMSXDeliveryCount).
    pub delivery_count: u32,
    /// The list it came from, for [`crate::Broker::ack_delivery`].
    pub(crate) source: Weak<MessageList>,
}

/// Where a consumer's deliveries go. Implemented by the protocol session.
///
/// `deliver` is called with a destination's lock held: it must not block and must not call back
/// into the broker. The number of deliveries outstanding per consumer is bounded by its prefetch,
/// which bounds what an implementation has to buffer.
pub trait DeliverySink: Send + Sync + std::fmt::Debug {
    /// Takes one delivery.
    fn deliver(&self, delivery: Delivery);
}

/// What a consumer asks for when it subscribes.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Ack mode.
    pub ack_mode: AckMode,
    /// Most unacknowledged deliveries at once (`activemq.prefetchSize`); at least 1.
    pub prefetch: u32,
    /// Only messages that match (JMS selector).
    pub selector: Option<Arc<Selector>>,
    /// `activemq.exclusive`: one exclusive consumer receives every message of a queue.
    pub exclusive: bool,
    /// `activemq.noLocal`: skip messages produced on this consumer's own connection.
    pub no_local: bool,
    /// The consumer's connection, for `no_local`.
    pub connection: u64,
    /// `activemq.priority`: a queue hands each message to the highest-priority consumer with
    /// room (round-robin among equals). Network consumers sit below local ones.
    pub priority: i8,
    /// Set for a network bridge's consumer: where it forwards, which decides what it may take.
    pub network: Option<Arc<NetworkRoute>>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            ack_mode: AckMode::Auto,
            prefetch: 1000,
            selector: None,
            exclusive: false,
            no_local: false,
            connection: 0,
            priority: 0,
            network: None,
        }
    }
}
