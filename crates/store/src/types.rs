//! Records the broker writes and reads through the [`crate::MessageStore`] seam.

use bytes::Bytes;

/// Names one persistent message list: `queue://NAME` or `durable://CLIENT-ID:NAME`.
pub type ListKey = String;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Adds a message to a list. `seq` is greater than every earlier seq of the same list.
    Enqueue {
        /// The list.
        list: ListKey,
        /// The message's position in its list.
        seq: u64,
        /// The broker's encoding of the message (opaque to the store).
        payload: Bytes,
    },
    /// Removes (acknowledges) a message from a list. Removing an absent message is a no-op.
    Dequeue {
        /// The list.
        list: ListKey,
        /// The message's position in its list.
        seq: u64,
    },
    /// Creates or replaces a durable subscription record.
    PutSubscription(SubscriptionRecord),
    /// Deletes a durable subscription record and every message of its list.
    DeleteSubscription {
        /// The subscription's list.
        list: ListKey,
    },
    /// Deletes every message of a list (a purged or removed queue).
    Purge {
        /// The list.
        list: ListKey,
    },
}

/// An atomic group of writes.
pub type Batch = Vec<Op>;

/// A durable topic subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The list that holds the subscription's messages (`durable://CLIENT-ID:NAME`).
    pub list: ListKey,
    /// The JMS client id of the subscriber.
    pub client_id: String,
    /// The subscription name.
    pub name: String,
    /// The topic name or wildcard pattern subscribed to.
    pub topic: String,
    /// The selector, if any.
    pub selector: Option<String>,
    /// Whether the subscriber asked not to receive its own connection's messages.
    pub no_local: bool,
}

/// A message read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its position in its list.
    pub seq: u64,
    /// The broker's encoding of the message.
    pub payload: Bytes,
}

/// A non-empty list found at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListInfo {
    /// The list.
    pub list: ListKey,
    /// How many messages it holds.
    pub count: u64,
    /// Payload bytes it holds.
    pub bytes: u64,
    /// The highest sequence number ever enqueued to it (so new ones continue above).
    pub max_seq: u64,
}

/// What a store holds at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Every durable subscription.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Every list that holds at least one message.
    pub lists: Vec<ListInfo>,
}
