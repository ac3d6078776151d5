//! Broker-pushed cluster membership (ActiveMQ's `updateClusterClients` on the broker,
//! `updateURIsSupported` on the client).
//!
//! A broker with `updateClusterClients` enabled lists its group in the CONNECTED header
//! [`CLUSTER_HEADER`]: `tcp://a:61613,tcp://b:61613`, itself included. With
//! `updateURIsSupported=true` (the default) the failover client merges that list into its own
//! after every connect, so that a client configured with one address still finds the others
//! when that one fails. Pure code, no I/O.
//!
//! The merge only adds: the configured brokers stay first and in their order, learned ones are
//! appended, duplicates (by `host:port`, host compared without case) are skipped, and the list
//! never grows beyond [`CLUSTER_BROKERS_MAX`]. A broker that leaves the group stays listed (as
//! with ActiveMQ's default `updateClusterClientsOnRemove=false`); trying it costs one refused
//! connect per pass.

use super::uri::BrokerUri;

/// The CONNECTED header that lists the broker group.
pub const CLUSTER_HEADER: &str = "ferromq.cluster";

/// Most brokers a failover client's list holds, configured and learned together. Learned ones
/// beyond it are ignored: each costs a connect attempt per reconnect pass.
pub const CLUSTER_BROKERS_MAX: usize = 64;

/// Most entries of one header examined; the rest are ignored, so a hostile header costs
/// bounded work (the frame decoder already bounds its bytes).
const CLUSTER_ENTRIES_MAX: usize = 4 * CLUSTER_BROKERS_MAX;

/// What [`merge_cluster_header`] did with one header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The brokers appended to the list, in header order.
    pub added: Vec<BrokerUri>,
    /// Entries that are not `tcp://host:port` (or `stomp://host:port`, `host:port`).
    pub malformed: Vec<String>,
    /// Well-formed new brokers not added because the list was full.
    pub over_limit: usize,
}

/// The key two broker URIs are the same broker by: `host:port`, host in lower case.
pub fn broker_key(broker: &BrokerUri) -> String {
    broker.addr.to_ascii_lowercase()
}

/// Merges the value of a [`CLUSTER_HEADER`] into `brokers`: appends every well-formed entry
/// not yet listed, up to [`CLUSTER_BROKERS_MAX`] brokers in all. Existing entries are never
/// removed or reordered, so indices into `brokers` stay valid.
pub fn merge_cluster_header(brokers: &mut Vec<BrokerUri>, value: &str) -> MergeOutcome {
    let len_before = brokers.len();
    let mut outcome = MergeOutcome::default();
    let entries = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(CLUSTER_ENTRIES_MAX);
    for entry in entries {
        let learned = match super::uri::broker(entry) {
            Ok(b) => b,
            Err(_) => {
                outcome.malformed.push(entry.to_owned());
                continue;
            }
        };
        let key = broker_key(&learned);
        if brokers.iter().any(|b| broker_key(b) == key) {
            continue;
        }
        if brokers.len() >= CLUSTER_BROKERS_MAX {
            outcome.over_limit += 1;
            continue;
        }
        brokers.push(learned.clone());
        outcome.added.push(learned);
    }
    debug_assert_eq!(brokers.len(), len_before + outcome.added.len());
    debug_assert!(brokers.len() <= CLUSTER_BROKERS_MAX.max(len_before));
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::FailoverUri;

    fn configured(text: &str) -> Vec<BrokerUri> {
        FailoverUri::parse(text).unwrap().brokers
    }

    fn addrs(brokers: &[BrokerUri]) -> Vec<&str> {
        brokers.iter().map(|b| b.addr.as_str()).collect()
    }

    #[test]
    fn learned_brokers_are_appended_after_the_configured_ones_in_header_order() {
        let mut list = configured("failover:(tcp://b:2,tcp://a:1)");
        let out = merge_cluster_header(&mut list, "tcp://a:1,tcp://c:3, tcp://d:4 ,tcp://b:2");
        assert_eq!(addrs(&list), ["b:2", "a:1", "c:3", "d:4"]);
        assert_eq!(addrs(&out.added), ["c:3", "d:4"]);
        assert_eq!(list[2].uri, "tcp://c:3");
        assert!(out.malformed.is_empty());
        assert_eq!(out.over_limit, 0);
    }

    #[test]
    fn duplicates_are_recognised_by_host_and_port_whatever_the_spelling() {
        let mut list = configured("failover:(tcp://Broker-A:61613)");
        let out = merge_cluster_header(
            &mut list,
            "broker-a:61613,stomp://BROKER-A:61613,tcp://broker-a:61613?x=1,tcp://c:1,tcp://C:1",
        );
        assert_eq!(addrs(&list), ["Broker-A:61613", "c:1"]);
        assert_eq!(out.added.len(), 1);
    }

    #[test]
    fn malformed_entries_are_reported_and_skipped() {
        let mut list = configured("tcp://a:1");
        let out = merge_cluster_header(
            &mut list,
            "garbage,,tcp://b:2,tcp://noport,tcp://c:99999,udp://d:1,tcp://:5",
        );
        assert_eq!(addrs(&list), ["a:1", "b:2"]);
        assert_eq!(
            out.malformed,
            [
                "garbage",
                "tcp://noport",
                "tcp://c:99999",
                "udp://d:1",
                "tcp://:5"
            ]
        );
    }

    #[test]
    fn an_empty_header_teaches_nothing() {
        let mut list = configured("tcp://a:1");
        assert_eq!(merge_cluster_header(&mut list, ""), MergeOutcome::default());
        assert_eq!(
            merge_cluster_header(&mut list, " , ,"),
            MergeOutcome::default()
        );
        assert_eq!(addrs(&list), ["a:1"]);
    }

    #[test]
    fn the_list_never_grows_beyond_its_bound() {
        let mut list = configured("tcp://a:1");
        let header: Vec<String> = (0..100).map(|i| format!("tcp://h{i}:1")).collect();
        let out = merge_cluster_header(&mut list, &header.join(","));
        assert_eq!(list.len(), CLUSTER_BROKERS_MAX);
        assert_eq!(out.added.len(), CLUSTER_BROKERS_MAX - 1);
        assert_eq!(out.over_limit, 100 - (CLUSTER_BROKERS_MAX - 1));
        // Known ones are still recognised when full, and nothing is evicted.
        let out = merge_cluster_header(&mut list, "tcp://a:1,tcp://h0:1,tcp://new:1");
        assert_eq!(out.added.len(), 0);
        assert_eq!(out.over_limit, 1);
        assert_eq!(list[0].addr, "a:1");
    }

    #[test]
    fn a_configured_list_already_over_the_bound_is_kept_whole() {
        let text: Vec<String> = (0..70).map(|i| format!("tcp://h{i}:1")).collect();
        let mut list = configured(&format!("failover:({})", text.join(",")));
        let out = merge_cluster_header(&mut list, "tcp://new:1");
        assert_eq!(list.len(), 70);
        assert_eq!(out.over_limit, 1);
    }
}
