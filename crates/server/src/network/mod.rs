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
pub mod discovery;

pub use config::{validate, ConnectorUri, NetworkConfigError, NetworkConnectorConfig};

/// Whether a connector URI is a discovery one (`multicast://`, `zookeeper://`): its bridges
/// come and go with what discovery hears (see [`discovery::run_connector`]).
pub fn is_discovery(uri: &str) -> bool {
    let u = uri.trim();
    u.starts_with("multicast://") || u.starts_with("zookeeper://")
}

/// The fixed bridges the configuration asks for: one per `static:` address, one per
/// `masterslave:` group.
pub fn bridge_specs(cfg: &crate::config::Config) -> Vec<bridge::BridgeSpec> {
    let mut out = Vec::new();
    for c in &cfg.network_connectors {
        let groups = match c.check() {
            Ok(ConnectorUri::Static(addrs)) => addrs.into_iter().map(|a| vec![a]).collect(),
            Ok(ConnectorUri::MasterSlave(addrs)) => vec![addrs],
            // Discovery connectors run their own bridges; a bad URI was refused at load.
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
