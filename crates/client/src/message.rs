//! Messages delivered to a subscription.

use bytes::Bytes;
use ferromq_protocol::stomp::Frame;

/// A MESSAGE frame delivered to a [`Subscription`](crate::Subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The frame as the server sent it (headers unescaped).
    pub frame: Frame,
}

impl ReceivedMessage {
    /// The `destination` header.
    pub fn destination(&self) -> Option<&str> {
        self.frame.header("destination")
    }

    /// The `message-id` header.
    pub fn message_id(&self) -> Option<&str> {
        self.frame.header("message-id")
    }

    /// The `subscription` header: the id of the subscription the message was delivered to.
    pub fn subscription(&self) -> Option<&str> {
        self.frame.header("subscription")
    }

    /// The `ack` header (STOMP 1.2): the token an ACK or NACK must quote as its `id`.
    pub fn ack_id(&self) -> Option<&str> {
        self.frame.header("ack")
    }

    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.frame.header(name)
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.frame.body
    }

    /// True when the broker says it delivered this message before (`redelivered:true`).
    pub fn redelivered(&self) -> bool {
        self.frame
            .header("redelivered")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}
