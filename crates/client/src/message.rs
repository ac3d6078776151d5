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

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_protocol::stomp::Command;

    #[test]
    fn accessors_read_the_standard_headers() {
        let msg = ReceivedMessage {
            frame: Frame::new(Command::Message)
                .with_header("destination", "/queue/a")
                .with_header("message-id", "m1")
                .with_header("subscription", "s1")
                .with_header("ack", "a1")
                .with_header("redelivered", "true")
                .with_header("priority", "4")
                .with_body("b"),
        };
        assert_eq!(msg.destination(), Some("/queue/a"));
        assert_eq!(msg.message_id(), Some("m1"));
        assert_eq!(msg.subscription(), Some("s1"));
        assert_eq!(msg.ack_id(), Some("a1"));
        assert_eq!(msg.header("priority"), Some("4"));
        assert_eq!(msg.body(), "b");
        assert!(msg.redelivered());
        let fresh = ReceivedMessage {
            frame: Frame::new(Command::Message).with_header("redelivered", "false"),
        };
        assert!(!fresh.redelivered());
    }
}
