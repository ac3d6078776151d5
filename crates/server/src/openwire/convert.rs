//! JMS messages ↔ the broker's protocol-neutral [`Message`], with ActiveMQ's STOMP mapping.
//!
//! A JMS message keeps its JMS form in a few headers of the stored message, so that a JMS
//! consumer gets back what a JMS producer sent, while a STOMP consumer sees plain headers:
//!
//! - `ferromq.jms.kind`: `text`, `bytes`, `map`, `stream`, `object` or `message` (no header:
//!   a STOMP message, a TextMessage — or `bytes` when the STOMP frame had `content-length`,
//!   as in ActiveMQ);
//! - `ferromq.jms.id`: the producer's JMSMessageID (`ID:<connection>:<session>:<producer>:<seq>`),
//!   which JMS consumers see again and the client's duplicate audit relies on; for a persistent
//!   message the same value is the duplicate-detection id (`_AMQ_DUPL_ID`), so that a failover
//!   client's resend of an unanswered message is not stored twice;
//! - `ferromq.jms.props`: the marshalled property map (hex), only when a property is not a
//!   string, so that typed properties (`getIntProperty`, `getObjectProperty`) come back typed.
//!
//! Every property is also a plain header (its value as text), which is what STOMP consumers and
//! selectors see. A text body is stored as UTF-8, so STOMP consumers read it as is.

use std::sync::Arc;

use bytes::Bytes;
use ferromq_broker::{Destination, DestinationKind, Message, DUPLICATE_ID_HEADER};
use ferromq_protocol::openwire as ow;
use ow::{MapLimits, MessageKind, PrimitiveMap, PrimitiveValue};

use crate::stomp::dest;

/// Headers that carry the JMS form of a message start with this.
pub const JMS_HEADER_PREFIX: &str = "ferromq.jms.";
/// The JMS message type (`text`, `bytes`, ...).
pub const JMS_KIND_HEADER: &str = "ferromq.jms.kind";
/// The producer's JMSMessageID.
pub const JMS_ID_HEADER: &str = "ferromq.jms.id";
/// The typed property map, hex-encoded.
pub const JMS_PROPS_HEADER: &str = "ferromq.jms.props";
/// Present when the JMS body was null (a TextMessage whose text is null, not "").
pub const JMS_NULL_BODY_HEADER: &str = "ferromq.jms.null-body";

/// Headers that map to JMS header fields rather than properties.
const MAPPED_HEADERS: [&str; 5] = [
    "correlation-id",
    "type",
    "reply-to",
    "JMSXGroupID",
    "JMSXGroupSeq",
];

/// Why a JMS message cannot be taken.
#[derive(Debug)]
pub struct Refused(pub String);

fn kind_name(k: MessageKind) -> &'static str {
    match k {
        MessageKind::Message => "message",
        MessageKind::Bytes => "bytes",
        MessageKind::Map => "map",
        MessageKind::Object => "object",
        MessageKind::Stream => "stream",
        MessageKind::Text => "text",
    }
}

fn kind_from_name(s: &str) -> MessageKind {
    match s {
        "message" => MessageKind::Message,
        "bytes" => MessageKind::Bytes,
        "map" => MessageKind::Map,
        "object" => MessageKind::Object,
        "stream" => MessageKind::Stream,
        _ => MessageKind::Text,
    }
}

/// The broker destination an OpenWire destination names.
pub fn to_broker_dest(d: &ow::Destination) -> Destination {
    let kind = match d.kind {
        ow::DestinationKind::Queue => DestinationKind::Queue,
        ow::DestinationKind::Topic => DestinationKind::Topic,
        ow::DestinationKind::TempQueue => DestinationKind::TempQueue,
        ow::DestinationKind::TempTopic => DestinationKind::TempTopic,
    };
    Destination {
        kind,
        name: d.physical_name.as_str().into(),
    }
}

/// The OpenWire destination for a broker destination.
pub fn to_ow_dest(d: &Destination) -> ow::Destination {
    let kind = match d.kind {
        DestinationKind::Queue => ow::DestinationKind::Queue,
        DestinationKind::Topic => ow::DestinationKind::Topic,
        DestinationKind::TempQueue => ow::DestinationKind::TempQueue,
        DestinationKind::TempTopic => ow::DestinationKind::TempTopic,
    };
    ow::Destination {
        kind,
        physical_name: d.name.to_string(),
    }
}

/// The text form of a MessageId, as `MessageId.toString()` gives it.
pub fn message_id_text(id: &ow::MessageId) -> String {
    if let Some(t) = &id.text_view {
        return t.clone();
    }
    match &id.producer_id {
        Some(p) => format!(
            "{}:{}:{}:{}",
            p.connection_id, p.session_id, p.value, id.producer_sequence_id
        ),
        None => format!("::{}", id.producer_sequence_id),
    }
}

/// Parses `<connection>:<session>:<producer>:<seq>` back into a MessageId.
fn parse_message_id(s: &str) -> Option<ow::MessageId> {
    let mut parts = s.rsplitn(4, ':');
    let seq = parts.next()?.parse::<i64>().ok()?;
    let producer = parts.next()?.parse::<i64>().ok()?;
    let session = parts.next()?.parse::<i64>().ok()?;
    let connection = parts.next()?;
    Some(ow::MessageId {
        text_view: None,
        producer_id: Some(ow::ProducerId {
            connection_id: connection.to_string(),
            value: producer,
            session_id: session,
        }),
        producer_sequence_id: seq,
        broker_sequence_id: 0,
    })
}

/// The MessageId a JMS consumer sees for a stored message: the producer's own for a JMS
/// message; for anything else one made from the broker's id (`ID:<broker>-<boot>-<n>` becomes
/// producer `ID:<broker>-<boot>:0:0`, sequence `n`), unique and increasing per broker run as
/// the client's duplicate audit expects.
pub fn delivery_message_id(m: &Message) -> ow::MessageId {
    if let Some(id) = m.header(JMS_ID_HEADER).and_then(parse_message_id) {
        return id;
    }
    let (conn, seq) = match m.id.rsplit_once('-') {
        Some((c, n)) => match n.parse::<i64>() {
            Ok(n) => (c.to_string(), n),
            Err(_) => (m.id.to_string(), 0),
        },
        None => (m.id.to_string(), 0),
    };
    ow::MessageId {
        text_view: None,
        producer_id: Some(ow::ProducerId {
            connection_id: conn,
            value: 0,
            session_id: 0,
        }),
        producer_sequence_id: seq,
        broker_sequence_id: 0,
    }
}

fn value_text(v: &PrimitiveValue) -> Option<String> {
    Some(match v {
        PrimitiveValue::Null => return None,
        PrimitiveValue::Bool(b) => b.to_string(),
        PrimitiveValue::Byte(b) => b.to_string(),
        PrimitiveValue::Char(c) => String::from_utf16_lossy(&[*c]),
        PrimitiveValue::Short(s) => s.to_string(),
        PrimitiveValue::Int(i) => i.to_string(),
        PrimitiveValue::Long(l) => l.to_string(),
        PrimitiveValue::Double(d) => d.to_string(),
        PrimitiveValue::Float(f) => f.to_string(),
        PrimitiveValue::String(s) => s.clone(),
        // Not JMS property types; kept only in the typed map.
        PrimitiveValue::Bytes(_) | PrimitiveValue::Map(_) | PrimitiveValue::List(_) => return None,
    })
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 0xf)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Renders a destination for the `reply-to` header (the STOMP form, global temp names).
fn render_reply_to(d: &ow::Destination) -> String {
    dest::render_global(&to_broker_dest(d))
}

/// Turns a JMS message into the broker's message. `now_ms` stamps messages without a JMS
/// timestamp.
pub fn inbound(
    m: &ow::Message,
    destination: Destination,
    id: Arc<str>,
    now_ms: u64,
    connection: u64,
    limits: &MapLimits,
) -> Result<Message, Refused> {
    if m.compressed {
        return Err(Refused(
            "Compressed messages (jms.useCompression=true) are not supported by ferromq".into(),
        ));
    }
    let props = match &m.marshalled_properties {
        Some(raw) if !raw.is_empty() => Some(
            m.properties(limits)
                .map_err(|e| Refused(format!("Invalid message properties: {e}")))?,
        ),
        _ => None,
    };
    let mut headers: Vec<(String, String)> =
        Vec::with_capacity(8 + props.as_ref().map_or(0, |p| p.len()));
    headers.push((JMS_KIND_HEADER.into(), kind_name(m.kind).into()));
    if m.content.is_none() && m.kind != MessageKind::Message {
        headers.push((JMS_NULL_BODY_HEADER.into(), "true".into()));
    }
    if let Some(mid) = &m.message_id {
        let text = message_id_text(mid);
        // Only a persistent send is resent by a failover client (it waits for an answer); a
        // non-persistent one is never resent, and remembering its id would cost a store write.
        if m.persistent {
            headers.push((DUPLICATE_ID_HEADER.into(), text.clone()));
        }
        headers.push((JMS_ID_HEADER.into(), text));
    }
    if let Some(c) = &m.correlation_id {
        headers.push(("correlation-id".into(), c.clone()));
    }
    if let Some(t) = &m.message_type {
        headers.push(("type".into(), t.clone()));
    }
    if let Some(r) = &m.reply_to {
        headers.push(("reply-to".into(), render_reply_to(r)));
    }
    if let Some(g) = &m.group_id {
        headers.push(("JMSXGroupID".into(), g.clone()));
        headers.push(("JMSXGroupSeq".into(), m.group_sequence.to_string()));
    }
    if let Some(p) = &props {
        let mut typed = false;
        for (k, v) in &p.entries {
            if !matches!(v, PrimitiveValue::String(_)) {
                typed = true;
            }
            if k.starts_with(JMS_HEADER_PREFIX)
                || MAPPED_HEADERS.contains(&k.as_str())
                || headers.iter().any(|(n, _)| n == k)
            {
                continue;
            }
            if let Some(text) = value_text(v) {
                headers.push((k.clone(), text));
            }
        }
        if typed {
            if let Some(raw) = &m.marshalled_properties {
                headers.push((JMS_PROPS_HEADER.into(), hex(raw)));
            }
        }
    }
    let body = match m.kind {
        MessageKind::Text => match m.text(limits.max_value_bytes) {
            Ok(Some(t)) => Bytes::from(t.into_bytes()),
            Ok(None) => Bytes::new(),
            Err(e) => return Err(Refused(format!("Invalid TextMessage body: {e}"))),
        },
        _ => m.content.clone().unwrap_or_default(),
    };
    let timestamp_ms = if m.timestamp > 0 {
        m.timestamp as u64
    } else {
        now_ms
    };
    Ok(Message {
        id,
        destination,
        headers,
        body,
        persistent: m.persistent,
        priority: m.priority.min(ferromq_broker::MAX_PRIORITY),
        timestamp_ms,
        expires_ms: m.expiration.max(0) as u64,
        producer_connection: connection,
        wire: Default::default(),
    })
}

/// Turns a stored message into the JMS message a consumer gets.
pub fn outbound(m: &Message, redelivery_counter: i32) -> ow::Message {
    let kind = m
        .header(JMS_KIND_HEADER)
        .map(kind_from_name)
        .unwrap_or(MessageKind::Text);
    let mut out = ow::Message {
        kind,
        message_id: Some(delivery_message_id(m)),
        destination: Some(to_ow_dest(&m.destination)),
        persistent: m.persistent,
        priority: m.priority,
        timestamp: m.timestamp_ms as i64,
        expiration: m.expires_ms as i64,
        redelivery_counter,
        correlation_id: m.header("correlation-id").map(str::to_owned),
        message_type: m.header("type").map(str::to_owned),
        group_id: m.header("JMSXGroupID").map(str::to_owned),
        group_sequence: m
            .header("JMSXGroupSeq")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        ..Default::default()
    };
    if let Some(p) = out.message_id.as_ref().and_then(|i| i.producer_id.clone()) {
        out.producer_id = Some(p);
    }
    if let Some(r) = m.header("reply-to") {
        if let Ok(dest::StompDest::Named(d)) = dest::parse(r) {
            out.reply_to = Some(to_ow_dest(&d));
        }
    }
    out.marshalled_properties = match m.header(JMS_PROPS_HEADER).and_then(unhex) {
        Some(raw) => Some(Bytes::from(raw)),
        None => {
            let mut map = PrimitiveMap::new();
            for (n, v) in &m.headers {
                if n.starts_with(JMS_HEADER_PREFIX)
                    || n == DUPLICATE_ID_HEADER
                    || MAPPED_HEADERS.contains(&n.as_str())
                {
                    continue;
                }
                map.insert(n.clone(), PrimitiveValue::String(v.clone()));
            }
            if map.is_empty() {
                None
            } else {
                ow::map::encode_map(Some(&map)).ok()
            }
        }
    };
    match kind {
        _ if m.header(JMS_NULL_BODY_HEADER).is_some() => {}
        MessageKind::Text => {
            let text = String::from_utf8_lossy(&m.body);
            // A text body that cannot be encoded (over 2^31 bytes) cannot be in the store.
            let _ = out.set_text(Some(&text));
        }
        MessageKind::Message => {}
        _ => out.content = Some(m.body.clone()),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip_through_their_text() {
        let id = ow::MessageId {
            text_view: None,
            producer_id: Some(ow::ProducerId {
                connection_id: "ID:host-4242-1700000000000-1:1".into(),
                value: 3,
                session_id: 2,
            }),
            producer_sequence_id: 77,
            broker_sequence_id: 0,
        };
        let text = message_id_text(&id);
        assert_eq!(text, "ID:host-4242-1700000000000-1:1:2:3:77");
        assert_eq!(parse_message_id(&text), Some(id));
    }

    #[test]
    fn hex_round_trips() {
        let raw = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(unhex(&hex(&raw)).unwrap(), raw);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
