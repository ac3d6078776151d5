//! What the broker core knows of networks of brokers: the broker path a forwarded message
//! carries, the rule that decides which messages a bridge's network consumer may take, and the
//! consumer demand that a broker advertises to the bridges connected to it.
//!
//! The bridges themselves (connections, forwarding, acks) live in the server; the core only
//! needs these three things so that dispatch can prefer local consumers, never hand a network
//! consumer a message it must not forward (a queue message acked by a bridge that drops it
//! would be lost), and tell bridges where consumers are.

use crate::destination::Destination;
use crate::message::Message;

/// The header naming the brokers a message has been forwarded through, oldest first,
/// comma-separated (ActiveMQ keeps the same list in `Message.brokerPath`).
pub const BROKER_PATH_HEADER: &str = "ferromq.brokerPath";

/// ActiveMQ's `consumerPriorityBase`: a network consumer's priority is this minus one per
/// further hop, so a local consumer (priority 0 by default) always wins.
pub const NETWORK_CONSUMER_PRIORITY_BASE: i8 = -5;

/// The brokers a message has passed through, oldest first.
pub fn broker_path(msg: &Message) -> impl Iterator<Item = &str> {
    msg.header(BROKER_PATH_HEADER)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The broker path after one more hop through `broker`.
pub fn extended_path(msg: &Message, broker: &str) -> String {
    let mut out = String::new();
    for b in broker_path(msg) {
        out.push_str(b);
        out.push(',');
    }
    out.push_str(broker);
    out
}

/// Where a network consumer's messages go, and how far a message may travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRoute {
    /// The broker the bridge forwards to (its `broker.name`).
    pub target: String,
    /// The brokers the demand came through, `target` first: what this broker advertises for
    /// the network consumer, so that demand does not loop back to where it came from.
    pub demand_path: Vec<String>,
    /// `messageTTL`: hops a message may already have made and still be forwarded;
    /// `u32::MAX` for unlimited.
    pub message_ttl: u32,
    /// Extra hops a queue message may make when this broker has no local consumer of its
    /// queue left (stuck messages, `replayWhenNoConsumers`); 0 disables replay. The bound is
    /// what stops a message from moving back and forth for ever.
    pub max_replays: u32,
    /// How long (ms) a message this consumer held when it went away is kept for `target`
    /// alone; 0: not at all. The bridge may have sent it and the target stored it without the
    /// confirmation arriving; sent again to the target (its new master, after a failover) the
    /// copy is dropped by the target's duplicate detection, while sent to any other broker —
    /// or delivered here — it would be a second copy. Past the hold the message goes wherever
    /// there is demand (the target may be gone for good).
    pub pin_ms: u64,
}

impl NetworkRoute {
    /// Whether this route may take `msg`. `local_consumers` is whether the list the message is
    /// on has a consumer that is not a bridge (always pass `true` for topics, which never
    /// replay).
    ///
    /// A message is forwarded normally when it has not been to the target yet and has made
    /// fewer than `message_ttl` hops. A queue message that fails that test may still be
    /// replayed — sent on even to a broker it came from — when nobody on this broker can
    /// consume it, within `message_ttl + max_replays` hops in all.
    pub fn accepts(&self, msg: &Message, local_consumers: bool) -> bool {
        let mut hops: u32 = 0;
        let mut visited = false;
        for b in broker_path(msg) {
            hops = hops.saturating_add(1);
            visited |= b == self.target;
        }
        if !visited && hops < self.message_ttl {
            return true;
        }
        !local_consumers && self.max_replays > 0 && {
            let limit = self.message_ttl.saturating_add(self.max_replays);
            hops < limit
        }
    }
}

/// One consumer's demand, as a broker advertises it to bridges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Demand {
    /// What it consumes (may be a topic wildcard).
    pub destination: Destination,
    /// Empty for a local consumer; for a network consumer, the brokers its demand came
    /// through (its route's `demand_path`).
    pub path: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(path: &str) -> Message {
        Message {
            id: "ID:x-1-1".into(),
            destination: Destination::queue("q"),
            headers: if path.is_empty() {
                Vec::new()
            } else {
                vec![(BROKER_PATH_HEADER.into(), path.into())]
            },
            body: Bytes::new(),
            persistent: true,
            priority: 4,
            timestamp_ms: 0,
            expires_ms: 0,
            producer_connection: 0,
            wire: Default::default(),
        }
    }

    fn route(target: &str, ttl: u32, replays: u32) -> NetworkRoute {
        NetworkRoute {
            target: target.into(),
            demand_path: vec![target.into()],
            message_ttl: ttl,
            max_replays: replays,
            pin_ms: 0,
        }
    }

    #[test]
    fn ttl_and_loops() {
        let r = route("b", 1, 0);
        assert!(r.accepts(&msg(""), true));
        // One hop made already: messageTTL 1 stops it.
        assert!(!r.accepts(&msg("c"), true));
        let r = route("b", 3, 0);
        assert!(r.accepts(&msg("a,c"), true));
        // Never back to a broker it has been through (loop), whatever the TTL.
        assert!(!r.accepts(&msg("b"), true));
        assert!(!r.accepts(&msg("a,b"), false));
        let r = route("b", u32::MAX, 0);
        assert!(r.accepts(&msg("a,c,d,e"), true));
    }

    #[test]
    fn replay_only_without_local_consumers_and_bounded() {
        let r = route("a", 1, 2);
        // Came from a: back to a only when nobody here can take it.
        assert!(!r.accepts(&msg("a"), true));
        assert!(r.accepts(&msg("a"), false));
        assert!(r.accepts(&msg("a,b"), false));
        // 1 + 2 hops in all: no further.
        assert!(!r.accepts(&msg("a,b,a"), false));
    }

    #[test]
    fn path_extends() {
        assert_eq!(extended_path(&msg(""), "a"), "a");
        assert_eq!(extended_path(&msg("a, b"), "c"), "a,b,c");
    }
}
