//! Networks of brokers (ActiveMQ's `networkConnector`): bridges that forward messages to other
//! brokers where there is consumer demand.
//!
//! - [`config`]: the `[[network_connectors]]` tables, ActiveMQ's options with its defaults.
//! - [`demand`]: the sans-I/O form in which a broker tells a bridge where its consumers are.
//! - [`bridge`]: one bridge: a STOMP client of the remote broker that learns its demand,
//!   attaches network consumers here and forwards what they receive, acknowledging a message
//!   here only once the remote broker has stored it.
//!
//! The path of a forwarded message and the rule of which messages a network consumer may take
//! (TTL, loops, replay of stuck messages) live in the broker core (`ferromq_broker::network`),
//! because dispatch applies them.

pub mod bridge;
pub mod config;
pub mod demand;

pub use config::{validate, ConnectorUri, NetworkConfigError, NetworkConnectorConfig};

/// The bridges the configuration asks for: one per `static:` address, one per `masterslave:`
/// group. (Discovery URIs are refused by [`validate`] until discovery is built.)
pub fn bridge_specs(cfg: &crate::config::Config) -> Vec<bridge::BridgeSpec> {
    let mut out = Vec::new();
    for c in &cfg.network_connectors {
        let groups = match c.check() {
            Ok(ConnectorUri::Static(addrs)) => addrs.into_iter().map(|a| vec![a]).collect(),
            Ok(ConnectorUri::MasterSlave(addrs)) => vec![addrs],
            // Refused when the configuration was loaded.
            Ok(ConnectorUri::Multicast(_) | ConnectorUri::Zookeeper(_)) | Err(_) => Vec::new(),
        };
        for addrs in groups {
            out.push(bridge::BridgeSpec {
                connector: c.clone(),
                addrs,
                local_name: cfg.broker.name.clone(),
            });
        }
    }
    out
}
