//! The consumer-side duplicate audit (ActiveMQ's `checkForDuplicates` / `auditDepth`).
//!
//! After a failover the broker redelivers every message that was delivered but whose ACK it
//! never saw, including messages the application did acknowledge when the ACK was lost with
//! the connection. The audit remembers the last `depth` message ids the application has
//! consumed, so those redeliveries are recognised and not handed to it a second time.

use std::collections::{HashSet, VecDeque};

/// A bounded FIFO set of message ids: the oldest id is forgotten when a new one would exceed
/// `depth`.
#[derive(Debug, Clone)]
pub struct AckAudit {
    depth: usize,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl AckAudit {
    /// An empty audit that remembers at most `depth` ids (0 disables it).
    pub fn new(depth: usize) -> AckAudit {
        AckAudit {
            depth,
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `id` as consumed by the application.
    pub fn record(&mut self, id: &str) {
        if self.depth == 0 || self.ids.contains(id) {
            return;
        }
        if self.order.len() == self.depth {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        debug_assert_eq!(self.ids.len(), self.order.len());
        debug_assert!(self.order.len() <= self.depth);
    }

    /// True when `id` was consumed and is still remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recorded_ids_and_forgets_the_oldest_beyond_depth() {
        let mut audit = AckAudit::new(3);
        for id in ["a", "b", "c", "b"] {
            audit.record(id);
        }
        assert_eq!(audit.len(), 3);
        assert!(audit.contains("a") && audit.contains("b") && audit.contains("c"));
        audit.record("d");
        assert!(!audit.contains("a"), "oldest forgotten");
        assert!(audit.contains("d"));
        assert_eq!(audit.len(), 3);
    }

    #[test]
    fn depth_zero_disables_the_audit() {
        let mut audit = AckAudit::new(0);
        audit.record("a");
        assert!(!audit.contains("a"));
        assert!(audit.is_empty());
    }
}
