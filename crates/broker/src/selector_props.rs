//! How a selector sees a message: JMS header fields plus the message's headers as properties.

use ferromq_selector::{PropertySource, Value};

use crate::message::Message;

/// Exposes a [`Message`] to a selector.
///
/// JMS fields map as in ActiveMQ: `JMSMessageID`, `JMSCorrelationID` (`correlation-id`),
/// `JMSType` (`type`), `JMSPriority`, `JMSTimestamp`, `JMSExpiration`, `JMSDeliveryMode`
/// (`'PERSISTENT'`/`'NON_PERSISTENT'`), `JMSDestination`, `JMSReplyTo` (`reply-to`). Any
/// other identifier is a message header, as a string (the selector engine converts strings to
/// numbers for numeric comparisons).
#[derive(Debug)]
pub struct MessageProperties<'a>(pub &'a Message);

impl PropertySource for MessageProperties<'_> {
    fn property(&self, name: &str) -> Option<Value> {
        let m = self.0;
        match name {
            // A JMS producer's own id when it has one (what its JMS consumers see).
            "JMSMessageID" => Some(Value::String(
                m.header("ferromq.jms.id")
                    .map_or_else(|| m.id.to_string(), str::to_owned),
            )),
            "JMSCorrelationID" => m.header("correlation-id").map(|v| Value::String(v.into())),
            "JMSType" => m.header("type").map(|v| Value::String(v.into())),
            "JMSReplyTo" => m.header("reply-to").map(|v| Value::String(v.into())),
            "JMSPriority" => Some(Value::Long(i64::from(m.priority))),
            "JMSTimestamp" => Some(Value::Long(m.timestamp_ms as i64)),
            "JMSExpiration" => Some(Value::Long(m.expires_ms as i64)),
            "JMSDeliveryMode" => Some(Value::String(
                if m.persistent {
                    "PERSISTENT"
                } else {
                    "NON_PERSISTENT"
                }
                .into(),
            )),
            "JMSDestination" => Some(Value::String(m.destination.to_string())),
            _ => m.header(name).map(|v| Value::String(v.into())),
        }
    }
}
