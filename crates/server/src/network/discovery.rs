//! Discovery for networks of brokers: a master advertises its STOMP address
//! (`transports.discovery`; `tcp://…`, or `stomp+ssl://…` with `transports.discovery_transport
//! = "stomp+ssl"`), and a network connector with a discovery URI bridges to every broker it
//! hears of, over TLS when it has `tls_ca` (and then only over TLS).
//!
//! Two agents, one shape:
//! - `multicast://default` (ActiveMQ's `MulticastDiscoveryAgent`, byte-compatible; see
//!   `ferromq-discovery`): alive adverts every 500 ms, dead on a clean stop, expiry after 10
//!   missed adverts.
//! - `zookeeper://host:port[,host:port…]/path` (cargo feature `zk`): each master publishes its
//!   address at the ephemeral znode `<path>/<broker.name>`; a new master replaces its deposed
//!   predecessor's znode at once, so bridges re-form without waiting for a session expiry.
//!
//! Only a broker that serves advertises or runs bridges (both are started with the server,
//! which runs only on a master): slaves are invisible to the network, as in ActiveMQ.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferromq_broker::Broker;
use ferromq_discovery::{Advertiser, DiscoveryEvent, Listener, MulticastConfig};
use tokio::sync::{mpsc, watch};

use super::bridge::{self, BridgeSpec, BridgeStats};
use super::config::NetworkConnectorConfig;
use crate::server::{BridgeList, BridgeStatus};

/// Default ZooKeeper path of `zookeeper://` discovery.
pub const DEFAULT_ZK_PATH: &str = "/ferromq/network";
/// Session timeout of discovery's ZooKeeper sessions: how long a crashed master (not replaced
/// by a new one) stays listed.
const ZK_SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);

/// A discovery URI.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryUri {
    /// `multicast://…`.
    Multicast(MulticastConfig),
    /// `zookeeper://hosts/path`.
    Zookeeper {
        /// `host:port[,host:port…]`.
        address: String,
        /// The parent znode of the masters' entries.
        path: String,
    },
}

impl DiscoveryUri {
    /// Parses `multicast://…` or `zookeeper://hosts[/path]`.
    pub fn parse(uri: &str) -> Result<DiscoveryUri, String> {
        let uri = uri.trim();
        if uri.starts_with("multicast://") {
            return MulticastConfig::parse(uri)
                .map(DiscoveryUri::Multicast)
                .map_err(|e| format!("{uri:?}: {e}"));
        }
        if let Some(rest) = uri.strip_prefix("zookeeper://") {
            let (address, path) = match rest.find('/') {
                Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
                None => (rest, DEFAULT_ZK_PATH),
            };
            if address.is_empty() || path.is_empty() {
                return Err(format!("{uri:?}: expected zookeeper://host:port[/path]"));
            }
            if !cfg!(feature = "zk") {
                return Err(format!(
                    "{uri:?}: zookeeper:// discovery needs the `zk` cargo feature, which this build does not have"
                ));
            }
            return Ok(DiscoveryUri::Zookeeper {
                address: address.to_string(),
                path: path.to_string(),
            });
        }
        Err(format!(
            "{uri:?}: expected multicast://default (or multicast://group-address:port?options) or zookeeper://host:port/path"
        ))
    }
}

/// Advertises `service` (this broker's STOMP address) as `broker` until `shutdown` flips.
pub async fn advertise(
    uri: DiscoveryUri,
    broker: String,
    service: String,
    mut shutdown: watch::Receiver<bool>,
) {
    match uri {
        DiscoveryUri::Multicast(cfg) => match Advertiser::start(&cfg, &broker, &service) {
            Ok(handle) => {
                tracing::info!(%service, group = %cfg.group, "advertising on multicast discovery");
                let _ = shutdown.changed().await;
                // Sends the `dead` advert: bridges to this broker stop at once.
                handle.stop().await;
            }
            Err(e) => tracing::error!(error = %e, "cannot advertise on multicast discovery"),
        },
        DiscoveryUri::Zookeeper { address, path } => {
            advertise_zk(address, path, broker, service, shutdown).await
        }
    }
}

#[cfg(feature = "zk")]
async fn advertise_zk(
    address: String,
    path: String,
    broker: String,
    service: String,
    mut shutdown: watch::Receiver<bool>,
) {
    use ferromq_ha_zk::registry::{register, RegistryConfig};
    let node = format!("{path}/{broker}");
    tracing::info!(%service, %node, "advertising on ZooKeeper discovery");
    let reg = register(
        RegistryConfig {
            zk_address: address,
            session_timeout: ZK_SESSION_TIMEOUT,
        },
        node,
        service.into_bytes(),
    );
    let _ = shutdown.changed().await;
    reg.stop().await;
}

#[cfg(not(feature = "zk"))]
async fn advertise_zk(_: String, _: String, _: String, _: String, _: watch::Receiver<bool>) {
    // Refused by `DiscoveryUri::parse` in such a build.
}

/// What discovery currently knows: key (service or broker name) → (broker name, `host:port`).
type Known = BTreeMap<String, (String, String)>;

/// The address a bridge dials for an advertised service, as ActiveMQ's network connector dials
/// the scheme a discovery agent advertises: `tcp://h:p` or `stomp://h:p` → `h:p` (clear text),
/// `ssl://h:p` or `stomp+ssl://h:p` → `ssl://h:p` (TLS, what [`super::bridge`] dials with the
/// connector's `tls_ca`). Other schemes are not bridged. (An ActiveMQ broker's OpenWire
/// `tcp://…:61616` or `ssl://…:61617` cannot be told apart from a STOMP one and is taken as
/// given.)
fn bridge_addr(service: &str) -> Option<String> {
    let tls = service
        .strip_prefix("ssl://")
        .or_else(|| service.strip_prefix("stomp+ssl://"));
    let rest = match tls {
        Some(r) => r,
        None => service
            .strip_prefix("tcp://")
            .or_else(|| service.strip_prefix("stomp://"))?,
    };
    let host_port = rest.split(['?', '/']).next().unwrap_or(rest);
    if host_port.is_empty() {
        return None;
    }
    Some(match tls {
        Some(_) => format!("ssl://{host_port}"),
        None => host_port.to_string(),
    })
}

/// Why a discovered broker gets no bridge from a connector, if it does not: a connector with
/// `tls_ca` bridges over TLS only, so that a broker (or anyone on the multicast group)
/// advertising a clear-text address cannot downgrade it and read its login; one without
/// `tls_ca` cannot verify a TLS broker.
fn refusal(addr: &str, connector_tls: bool) -> Option<&'static str> {
    match (addr.starts_with("ssl://"), connector_tls) {
        (true, true) | (false, false) => None,
        (false, true) => Some(
            "advertises a clear-text address and this connector has tls_ca (TLS only): no bridge",
        ),
        (true, false) => Some(
            "advertises a TLS address and this connector has no tls_ca to verify it: no bridge",
        ),
    }
}

/// Runs a discovery connector: a bridge to every broker discovery reports, other than this
/// one, re-formed when a broker's address changes (a group's new master), until `shutdown`.
pub async fn run_connector(
    broker: Arc<Broker>,
    connector: NetworkConnectorConfig,
    local_name: String,
    own_service: String,
    list: BridgeList,
    mut shutdown: watch::Receiver<bool>,
) {
    let uri = match DiscoveryUri::parse(&connector.uri) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(bridge = %connector.name, error = %e, "bad discovery URI");
            return;
        }
    };
    let (known_tx, mut known_rx) = mpsc::channel::<Known>(16);
    let source = match uri {
        DiscoveryUri::Multicast(cfg) => tokio::spawn(multicast_source(cfg, own_service, known_tx)),
        DiscoveryUri::Zookeeper { address, path } => {
            tokio::spawn(zk_source(address, path, known_tx))
        }
    };
    let mut bridges: BTreeMap<String, Running> = BTreeMap::new();
    let connector_tls = !connector.tls_ca.as_os_str().is_empty();
    // Brokers refused a bridge, logged once per address rather than at every change of what
    // discovery knows.
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            k = known_rx.recv() => {
                let Some(known) = k else { break };
                let known: Known = known
                    .into_iter()
                    .filter(|(_, (name, _))| *name != local_name)
                    .collect();
                refused.retain(|key, addr| known.get(key).map(|(_, a)| a) == Some(addr));
                let known: Known = known
                    .into_iter()
                    .filter(|(key, (name, addr))| {
                        let Some(why) = refusal(addr, connector_tls) else {
                            return true;
                        };
                        if refused.insert(key.clone(), addr.clone()).as_ref() != Some(addr) {
                            tracing::warn!(bridge = %connector.name, remote = %name, %addr, "discovered broker {why}");
                        }
                        false
                    })
                    .collect();
                let stale: Vec<String> = bridges
                    .iter()
                    .filter(|(key, r)| known.get(*key).map(|(_, a)| a) != Some(&r.addr))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in stale {
                    if let Some(r) = bridges.remove(&key) {
                        tracing::info!(bridge = %connector.name, addr = %r.addr, "discovered broker gone: stopping its bridge");
                        list.remove(&r.stats);
                        r.stop().await;
                    }
                }
                for (key, (name, addr)) in known {
                    if bridges.contains_key(&key) {
                        continue;
                    }
                    tracing::info!(bridge = %connector.name, remote = %name, %addr, "discovered broker: starting a bridge");
                    let spec = BridgeSpec {
                        connector: connector.clone(),
                        addrs: vec![addr.clone()],
                        local_name: local_name.clone(),
                    };
                    let stats = Arc::new(BridgeStats::default());
                    list.push(BridgeStatus {
                        connector: connector.name.clone(),
                        addrs: vec![addr.clone()],
                        stats: stats.clone(),
                    });
                    let (stop, stop_rx) = watch::channel(false);
                    let task = tokio::spawn(bridge::run(broker.clone(), spec, stats.clone(), stop_rx));
                    bridges.insert(key, Running { addr, stats, stop, task });
                }
            }
        }
    }
    source.abort();
    for (_, r) in bridges {
        r.stop().await;
    }
}

struct Running {
    addr: String,
    stats: Arc<BridgeStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the bridge and waits for it to detach its consumers.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn multicast_source(cfg: MulticastConfig, own_service: String, tx: mpsc::Sender<Known>) {
    let (listener, mut events) = match Listener::start(&cfg, Some(own_service)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for multicast discovery");
            return;
        }
    };
    let mut known = Known::new();
    while let Some(ev) = events.recv().await {
        match ev {
            DiscoveryEvent::Up {
                broker_name,
                service_uri,
            } => {
                if let Some(addr) = bridge_addr(&service_uri) {
                    known.insert(service_uri, (broker_name, addr));
                }
            }
            DiscoveryEvent::Down { service_uri, .. } => {
                known.remove(&service_uri);
            }
        }
        if tx.send(known.clone()).await.is_err() {
            break;
        }
    }
    listener.stop().await;
}

#[cfg(feature = "zk")]
async fn zk_source(address: String, path: String, tx: mpsc::Sender<Known>) {
    use ferromq_ha_zk::registry::{watch_children, RegistryConfig};
    let mut w = watch_children(
        RegistryConfig {
            zk_address: address,
            session_timeout: ZK_SESSION_TIMEOUT,
        },
        path,
    );
    loop {
        let known: Known =
            w.rx.borrow_and_update()
                .iter()
                .filter_map(|(name, data)| {
                    let service = String::from_utf8_lossy(data);
                    bridge_addr(&service).map(|a| (name.clone(), (name.clone(), a)))
                })
                .collect();
        if tx.send(known).await.is_err() || w.rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(not(feature = "zk"))]
async fn zk_source(_: String, _: String, _: mpsc::Sender<Known>) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert!(matches!(
            DiscoveryUri::parse("multicast://default"),
            Ok(DiscoveryUri::Multicast(_))
        ));
        if cfg!(feature = "zk") {
            assert_eq!(
                DiscoveryUri::parse("zookeeper://127.0.0.1:2191,127.0.0.1:2192/net/x/"),
                Ok(DiscoveryUri::Zookeeper {
                    address: "127.0.0.1:2191,127.0.0.1:2192".into(),
                    path: "/net/x".into()
                })
            );
            assert_eq!(
                DiscoveryUri::parse("zookeeper://h:1"),
                Ok(DiscoveryUri::Zookeeper {
                    address: "h:1".into(),
                    path: DEFAULT_ZK_PATH.into()
                })
            );
        }
        for bad in ["zookeeper://", "static:(tcp://a:1)", "multicast://"] {
            assert!(DiscoveryUri::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(bridge_addr("tcp://127.0.0.1:5"), Some("127.0.0.1:5".into()));
        assert_eq!(bridge_addr("stomp://h:5?x=1"), Some("h:5".into()));
        assert_eq!(bridge_addr("ssl://h:5"), Some("ssl://h:5".into()));
        assert_eq!(bridge_addr("stomp+ssl://h:5/x"), Some("ssl://h:5".into()));
        assert_eq!(bridge_addr("ws://h:5"), None);
        assert_eq!(bridge_addr("ssl://"), None);
    }

    #[test]
    fn a_tls_connector_bridges_only_to_tls_brokers_and_a_plain_one_only_to_plain_ones() {
        assert_eq!(refusal("ssl://h:5", true), None);
        assert_eq!(refusal("h:5", false), None);
        // A clear-text advert must not downgrade a TLS connector (its login would travel in
        // clear), nor may a plain connector dial TLS it cannot verify.
        assert!(refusal("h:5", true).is_some());
        assert!(refusal("ssl://h:5", false).is_some());
    }
}
