//! The broker list of a failover client, and how `discovery:(multicast://...)` fills it.
//!
//! With a `discovery:` URI (ActiveMQ's `DiscoveryTransport`) the client starts with no broker:
//! it joins the multicast group (see `ferromq-discovery`) and every service a broker
//! advertises there (`tcp://host:61613`, `stomp://host:61613`) becomes a broker to connect
//! to; a service reported dead (its `dead` advert, or 10 missed keep-alives) is no longer
//! tried. While no broker is known, a pass over the list fails at once and the back-off wait
//! is cut short as soon as one is discovered.
//!
//! The advertised service must be the broker's STOMP connector: this client speaks STOMP, so
//! an OpenWire `tcp://host:61616` advert yields connect failures. A client with TLS
//! (`ClientConfig::tls`) takes only TLS adverts (`ssl://`, `stomp+ssl://`, which a broker with
//! `transports.discovery_transport = "stomp+ssl"` sends) and a client without it only
//! clear-text ones: anyone who can send to the group can advertise an address, and a
//! clear-text advert must not draw a TLS client's login out in clear. Other schemes (`nio://`)
//! and adverts of the other kind are ignored with a warning.
//!
//! The list only grows, so that indices into it stay valid; a service that goes down is
//! marked withdrawn, and passes skip it until it is advertised again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use ferromq_discovery::{DiscoveryEvent, Listener, ListenerHandle, MulticastConfig};
use tokio::sync::{mpsc, watch};

use super::cluster::{broker_key, CLUSTER_BROKERS_MAX};
use super::uri::BrokerUri;
use crate::error::ClientError;

/// The brokers a failover client chooses from: configured, learned from CONNECTED frames
/// ([`super::cluster`]) and discovered. Shared by the client and its discovery task.
#[derive(Debug)]
pub(crate) struct Brokers {
    list: Mutex<BrokerList>,
    /// Bumped when a broker becomes available, so that a back-off wait can end early.
    available: watch::Sender<u64>,
    /// Whether this client dials brokers over TLS: it then takes only TLS adverts.
    tls: bool,
}

#[derive(Debug, Default)]
struct BrokerList {
    /// Only ever appended to.
    all: Vec<BrokerUri>,
    /// [`broker_key`]s of discovered brokers reported down.
    withdrawn: HashSet<String>,
}

/// One pass's view of the list: every broker (so indices match), and which may be tried.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) all: Vec<BrokerUri>,
    pub(crate) usable: Vec<bool>,
}

impl Snapshot {
    /// The brokers that may be tried, in list order.
    pub(crate) fn usable(&self) -> Vec<BrokerUri> {
        self.all
            .iter()
            .zip(&self.usable)
            .filter(|(_, ok)| **ok)
            .map(|(b, _)| b.clone())
            .collect()
    }
}

impl Brokers {
    pub(crate) fn new(configured: Vec<BrokerUri>, tls: bool) -> Arc<Brokers> {
        Arc::new(Brokers {
            tls,
            list: Mutex::new(BrokerList {
                all: configured,
                withdrawn: HashSet::new(),
            }),
            available: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BrokerList> {
        // Nothing panics while holding it.
        self.list
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let list = self.lock();
        Snapshot {
            usable: list
                .all
                .iter()
                .map(|b| !list.withdrawn.contains(&broker_key(b)))
                .collect(),
            all: list.all.clone(),
        }
    }

    /// The broker at `index` (indices never change).
    pub(crate) fn get(&self, index: usize) -> Option<BrokerUri> {
        self.lock().all.get(index).cloned()
    }

    /// Runs `f` on the whole list, which it may only append to.
    pub(crate) fn append_with<R>(&self, f: impl FnOnce(&mut Vec<BrokerUri>) -> R) -> R {
        let mut list = self.lock();
        let before = list.all.len();
        let result = f(&mut list.all);
        debug_assert!(list.all.len() >= before, "the broker list only grows");
        if list.all.len() > before {
            self.available.send_modify(|v| *v = v.wrapping_add(1));
        }
        result
    }

    /// Subscribes to "a broker became available"; `changed()` fires after the next one.
    pub(crate) fn watch_available(&self) -> watch::Receiver<u64> {
        self.available.subscribe()
    }

    /// Applies one discovery event.
    pub(crate) fn apply(&self, event: &DiscoveryEvent) {
        match event {
            DiscoveryEvent::Up { service_uri, .. } => {
                // The client's TLS setting applies to every broker alike: an advert of the
                // other kind would be dialled wrongly (or, for a TLS client, in clear).
                match (crate::tls::is_tls_addr(service_uri), self.tls) {
                    (true, false) => {
                        tracing::warn!(
                            uri = %service_uri,
                            "ignoring discovered TLS service: this client has no TLS settings \
                             (ClientConfig::tls, the CLI's --tls-ca)"
                        );
                        return;
                    }
                    (false, true) => {
                        tracing::warn!(
                            uri = %service_uri,
                            "ignoring discovered clear-text service: this client uses TLS"
                        );
                        return;
                    }
                    _ => {}
                }
                let broker = match super::uri::broker(service_uri) {
                    Ok(b) => b,
                    Err(_) => {
                        tracing::warn!(
                            uri = %service_uri,
                            "ignoring discovered service: not tcp://host:port or stomp://host:port"
                        );
                        return;
                    }
                };
                let key = broker_key(&broker);
                let mut list = self.lock();
                if list.withdrawn.remove(&key) {
                    tracing::info!("Discovered broker is back: {broker}");
                } else if list.all.iter().any(|b| broker_key(b) == key) {
                    return;
                } else if list.all.len() >= CLUSTER_BROKERS_MAX {
                    tracing::warn!(
                        uri = %broker,
                        "broker list full ({CLUSTER_BROKERS_MAX} brokers); ignoring discovered broker"
                    );
                    return;
                } else {
                    tracing::info!("Adding new broker connection URL: {broker}");
                    list.all.push(broker);
                }
                drop(list);
                self.available.send_modify(|v| *v = v.wrapping_add(1));
            }
            DiscoveryEvent::Down { service_uri, .. } => {
                let Ok(broker) = super::uri::broker(service_uri) else {
                    return;
                };
                let key = broker_key(&broker);
                let mut list = self.lock();
                if list.all.iter().any(|b| broker_key(b) == key) && list.withdrawn.insert(key) {
                    tracing::info!("Removing broker connection URL: {broker}");
                }
            }
        }
    }
}

/// Starts listening to `cfg`'s group and feeding `brokers`. The returned handle keeps the
/// listener alive; dropping it ends the listener and the feeding task.
pub(crate) fn start(
    cfg: &MulticastConfig,
    brokers: Arc<Brokers>,
) -> Result<ListenerHandle, ClientError> {
    let (handle, events) = Listener::start(cfg, None)?;
    tokio::spawn(feed(events, brokers));
    Ok(handle)
}

async fn feed(mut events: mpsc::Receiver<DiscoveryEvent>, brokers: Arc<Brokers>) {
    while let Some(event) = events.recv().await {
        brokers.apply(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(uri: &str) -> DiscoveryEvent {
        DiscoveryEvent::Up {
            broker_name: "localhost".into(),
            service_uri: uri.into(),
        }
    }

    fn down(uri: &str) -> DiscoveryEvent {
        DiscoveryEvent::Down {
            broker_name: "localhost".into(),
            service_uri: uri.into(),
        }
    }

    fn usable(brokers: &Brokers) -> Vec<String> {
        brokers
            .snapshot()
            .usable()
            .into_iter()
            .map(|b| b.addr)
            .collect()
    }

    #[test]
    fn discovered_brokers_are_added_withdrawn_and_restored_without_moving() {
        let brokers = Brokers::new(Vec::new(), false);
        let mut available = brokers.watch_available();
        brokers.apply(&up("tcp://a:1"));
        brokers.apply(&up("stomp://b:2"));
        brokers.apply(&up("tcp://A:1?x=1"));
        assert_eq!(usable(&brokers), ["a:1", "b:2"]);
        assert!(available.has_changed().unwrap());
        available.mark_unchanged();

        brokers.apply(&down("tcp://a:1"));
        assert_eq!(usable(&brokers), ["b:2"]);
        // Indices are stable: a:1 is still at 0, just not usable.
        assert_eq!(brokers.snapshot().usable, [false, true]);
        assert_eq!(brokers.get(0).unwrap().addr, "a:1");
        assert!(!available.has_changed().unwrap());

        brokers.apply(&up("tcp://a:1"));
        assert_eq!(usable(&brokers), ["a:1", "b:2"]);
        assert!(available.has_changed().unwrap());
    }

    #[test]
    fn services_this_client_cannot_connect_to_are_ignored() {
        let brokers = Brokers::new(Vec::new(), false);
        brokers.apply(&up("ssl://a:1"));
        brokers.apply(&up("nio://a:1"));
        brokers.apply(&down("tcp://never-seen:1"));
        assert!(brokers.snapshot().all.is_empty());
    }

    #[test]
    fn a_tls_client_takes_only_tls_adverts() {
        let brokers = Brokers::new(Vec::new(), true);
        brokers.apply(&up("tcp://plain:1"));
        brokers.apply(&up("stomp://plain:2"));
        assert!(brokers.snapshot().all.is_empty(), "no clear-text broker");
        brokers.apply(&up("stomp+ssl://a:61612"));
        brokers.apply(&up("ssl://b:61612"));
        assert_eq!(usable(&brokers), ["a:61612", "b:61612"]);
        brokers.apply(&down("stomp+ssl://a:61612"));
        assert_eq!(usable(&brokers), ["b:61612"]);
    }
}
