//! Destinations and ActiveMQ-style wildcard matching.

use std::fmt;
use std::sync::Arc;

/// What kind of destination a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestinationKind {
    /// Point-to-point: each message goes to one consumer.
    Queue,
    /// Publish/subscribe: each message goes to every subscription.
    Topic,
    /// A queue that lives as long as the connection that created it.
    TempQueue,
    /// A topic that lives as long as the connection that created it.
    TempTopic,
}

impl DestinationKind {
    /// Queue-like kinds (one consumer per message).
    pub fn is_queue(self) -> bool {
        matches!(self, DestinationKind::Queue | DestinationKind::TempQueue)
    }

    /// Temporary kinds.
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            DestinationKind::TempQueue | DestinationKind::TempTopic
        )
    }

    fn scheme(self) -> &'static str {
        match self {
            DestinationKind::Queue => "queue",
            DestinationKind::Topic => "topic",
            DestinationKind::TempQueue => "temp-queue",
            DestinationKind::TempTopic => "temp-topic",
        }
    }

    fn from_scheme(s: &str) -> Option<DestinationKind> {
        Some(match s {
            "queue" => DestinationKind::Queue,
            "topic" => DestinationKind::Topic,
            "temp-queue" => DestinationKind::TempQueue,
            "temp-topic" => DestinationKind::TempTopic,
            _ => return None,
        })
    }
}

/// A destination: a kind and a name such as `orders.eu`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    /// Queue, topic or a temporary kind.
    pub kind: DestinationKind,
    /// The name, without any prefix.
    pub name: Arc<str>,
}

impl Destination {
    /// A queue.
    pub fn queue(name: &str) -> Destination {
        Destination {
            kind: DestinationKind::Queue,
            name: name.into(),
        }
    }

    /// A topic.
    pub fn topic(name: &str) -> Destination {
        Destination {
            kind: DestinationKind::Topic,
            name: name.into(),
        }
    }

    /// The canonical key, `queue://NAME`, used in the registry, the store and logs.
    pub fn key(&self) -> String {
        format!("{}://{}", self.kind.scheme(), self.name)
    }

    /// Parses a key produced by [`Destination::key`].
    pub fn from_key(key: &str) -> Option<Destination> {
        let (scheme, name) = key.split_once("://")?;
        Some(Destination {
            kind: DestinationKind::from_scheme(scheme)?,
            name: name.into(),
        })
    }

    /// True when the name contains ActiveMQ wildcards (`*` or `>` as a whole path element).
    pub fn is_wildcard(&self) -> bool {
        is_wildcard(&self.name)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.scheme(), self.name)
    }
}

/// True when a dotted name has a `*` or `>` element.
pub fn is_wildcard(name: &str) -> bool {
    name.split('.').any(|p| p == "*" || p == ">")
}

/// ActiveMQ wildcard matching on `.`-separated paths: `*` matches exactly one element, `>`
/// matches one or more trailing elements (ActiveMQ: "`>` matches any number of elements, must be
/// last"; `a.>` does not match `a` itself, as in ActiveMQ).
pub fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let mut p = pattern.split('.');
    let mut n = name.split('.');
    loop {
        match (p.next(), n.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_activemq_rules() {
        assert!(wildcard_matches("PRICE.>", "PRICE.STOCK.NASDAQ.ORCL"));
        assert!(wildcard_matches("PRICE.STOCK.*", "PRICE.STOCK.NYSE"));
        assert!(!wildcard_matches("PRICE.STOCK.*", "PRICE.STOCK.NYSE.IBM"));
        assert!(wildcard_matches("PRICE.*.NYSE", "PRICE.STOCK.NYSE"));
        assert!(!wildcard_matches("PRICE.>", "PRICE"));
        assert!(wildcard_matches(">", "anything.at.all"));
        assert!(wildcard_matches("a.b", "a.b"));
        assert!(!wildcard_matches("a.b", "a.b.c"));
        assert!(!wildcard_matches("a.*", "a"));
        assert!(is_wildcard("a.*.c"));
        assert!(is_wildcard("a.>"));
        assert!(!is_wildcard("a.b*"));
    }

    #[test]
    fn keys_round_trip() {
        for d in [Destination::queue("a.b"), Destination::topic("t://x")] {
            assert_eq!(Destination::from_key(&d.key()), Some(d.clone()));
        }
        assert_eq!(Destination::from_key("nonsense"), None);
    }
}
