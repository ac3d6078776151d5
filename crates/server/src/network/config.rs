//! Networks of brokers (issue 14): the `[[network_connectors]]` configuration.
//!
//! Only the configuration layer exists so far: ActiveMQ's `networkConnector` options,
//! snake_cased, with ActiveMQ's defaults (see `docs/network.md`). Forwarding itself is not
//! implemented yet, so the server refuses to start when a network connector is configured
//! (`Config::validate`) — silently not forwarding would strand messages, which is worse than
//! a clear error. Options that ActiveMQ has but ferromq does not implement are named and
//! rejected instead of being accepted and ignored.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

/// A bridge's password at the remote broker: kept out of `Debug` output (and so out of logs).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct BridgePassword(pub String);

impl std::fmt::Debug for BridgePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// ActiveMQ's URI options a `[[network_connectors]]` table may carry that ferromq does not
/// implement. Each is rejected with a message naming it, rather than with serde's generic
/// "unknown field", so a user porting an `activemq.xml` learns it is a known gap.
const UNSUPPORTED_OPTIONS: &[&str] = &[
    "suppress_duplicate_topic_subscriptions",
    "bridge_temp_destinations",
    "always_sync_send",
    "use_virtual_dest_subs",
    "sync_durable_subs",
    "use_compression",
    "advisory_for_failed_forward",
    "check_duplicate_messages_on_duplex",
    "gc_destination_views",
    "consumer_priority_base",
    "advisory_prefetch_size",
    "advisory_ack_percentage",
];

/// A typed configuration error of a network connector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkConfigError {
    /// A TOML key this table does not know.
    #[error("network connector {name:?}: unknown option {key:?}")]
    UnknownOption { name: String, key: String },
    /// A known ActiveMQ option that ferromq does not implement.
    #[error("network connector {name:?}: option {key:?} (ActiveMQ networkConnector) is not supported by ferromq yet")]
    Unsupported { name: String, key: String },
    /// A value outside its range or of the wrong shape.
    #[error("network connector {name:?}: {msg}")]
    Invalid { name: String, msg: String },
    /// Two connectors with the same name (ActiveMQ: unique per pair of brokers; here unique
    /// per broker, which is stricter and simpler to reason about).
    #[error("network connector name {0:?} is used twice")]
    DuplicateName(String),
}

/// Where a connector connects (`uri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorUri {
    /// `static:(tcp://h:p,…)`: a bridge to each listed broker.
    Static(Vec<String>),
    /// `masterslave:(tcp://a,tcp://b,…)`: one bridge to whichever of an HA group is master.
    MasterSlave(Vec<String>),
    /// `multicast://group`: bridges to the brokers discovery hears.
    Multicast(String),
    /// `zookeeper://…`: bridges to the masters registered in ZooKeeper.
    Zookeeper(String),
}

impl ConnectorUri {
    /// Parses ActiveMQ's connector URI forms.
    pub fn parse(uri: &str) -> Result<ConnectorUri, String> {
        let uri = uri.trim();
        if let Some(rest) = uri.strip_prefix("static:") {
            return Ok(ConnectorUri::Static(parse_list(rest)?));
        }
        if let Some(rest) = uri.strip_prefix("masterslave:") {
            let list = parse_list(rest)?;
            if list.len() < 2 {
                return Err(format!(
                    "uri {uri:?}: masterslave: needs at least two brokers (master and slave)"
                ));
            }
            return Ok(ConnectorUri::MasterSlave(list));
        }
        if let Some(rest) = uri.strip_prefix("multicast://") {
            if rest.is_empty() {
                return Err(format!(
                    "uri {uri:?}: multicast:// needs a group, e.g. multicast://default"
                ));
            }
            return Ok(ConnectorUri::Multicast(rest.to_string()));
        }
        if let Some(rest) = uri.strip_prefix("zookeeper://") {
            if rest.is_empty() {
                return Err(format!("uri {uri:?}: zookeeper:// needs host:port"));
            }
            return Ok(ConnectorUri::Zookeeper(rest.to_string()));
        }
        Err(format!(
            "uri {uri:?}: expected static:(tcp://host:port,…), masterslave:(tcp://a,tcp://b,…), multicast://group or zookeeper://host:port"
        ))
    }
}

/// `static:(a,b)` or `static:a`; every element `tcp://host:port` (or `stomp://`, or bare), kept
/// as `host:port`, or `ssl://host:port` (or `stomp+ssl://`), kept as `ssl://host:port`.
fn parse_list(rest: &str) -> Result<Vec<String>, String> {
    let inner = match rest.strip_prefix('(') {
        Some(r) => r
            .strip_suffix(')')
            .ok_or_else(|| format!("{rest:?}: unbalanced parenthesis"))?,
        None => rest,
    };
    let mut out = Vec::new();
    for part in inner.split(',') {
        let p = part.trim();
        let tls = p
            .strip_prefix("ssl://")
            .or_else(|| p.strip_prefix("stomp+ssl://"));
        let addr = tls
            .or_else(|| p.strip_prefix("tcp://"))
            .or_else(|| p.strip_prefix("stomp://"))
            .unwrap_or(p);
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(format!(
                "{p:?}: expected tcp://host:port or ssl://host:port"
            ));
        };
        if host.is_empty() || !matches!(port.parse::<u16>(), Ok(n) if n != 0) {
            return Err(format!(
                "{p:?}: expected tcp://host:port or ssl://host:port"
            ));
        }
        out.push(match tls {
            Some(_) => format!("ssl://{addr}"),
            None => addr.to_string(),
        });
    }
    Ok(out)
}

/// One `[[network_connectors]]` table: ActiveMQ's `networkConnector`, snake_cased, with
/// ActiveMQ's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct NetworkConnectorConfig {
    /// `name` (default `bridge`, the documented default); unique per broker.
    pub name: String,
    /// `uri`, required (see [`ConnectorUri`]).
    pub uri: String,
    /// `duplex` (false): one connection carries both directions.
    pub duplex: bool,
    /// `conduitSubscriptions` (true): many remote consumers of one destination count as one.
    pub conduit_subscriptions: bool,
    /// `networkTTL` (1): hops for messages and subscriptions; -1 = unlimited. Sets the two
    /// below unless they are given.
    pub network_ttl: i32,
    /// `messageTTL` (= `network_ttl`).
    pub message_ttl: Option<i32>,
    /// `consumerTTL` (= `network_ttl`).
    pub consumer_ttl: Option<i32>,
    /// `dynamicOnly` (false).
    pub dynamic_only: bool,
    /// `decreaseNetworkConsumerPriority` (true since ActiveMQ 5.18): local consumers win.
    pub decrease_network_consumer_priority: bool,
    /// `staticallyIncludedDestinations`: always forwarded, no demand needed.
    pub statically_included_destinations: Vec<String>,
    /// `dynamicallyIncludedDestinations` (empty = all): forwarded on demand.
    pub dynamically_included_destinations: Vec<String>,
    /// `excludedDestinations`: never forwarded (does not override statically included).
    pub excluded_destinations: Vec<String>,
    /// `suppressDuplicateQueueSubscriptions` (false).
    pub suppress_duplicate_queue_subscriptions: bool,
    /// `prefetchSize` (1000, must be > 0): the network consumer's prefetch.
    pub prefetch_size: u32,
    /// `staticBridge` (false): ignore remote demand, forward only static destinations.
    pub static_bridge: bool,
    /// `initialReconnectDelay` (1000 ms).
    pub initial_reconnect_delay_ms: u64,
    /// `maxReconnectDelay` (30000 ms).
    pub max_reconnect_delay_ms: u64,
    /// `useExponentialBackOff` (true).
    pub use_exponential_back_off: bool,
    /// `backOffMultiplier` (2).
    pub back_off_multiplier: f64,
    /// ActiveMQ's `replayWhenNoConsumers` (a filter factory option there, off by default; on
    /// here): a queue message forwarded to this broker whose consumers then left moves on to
    /// where consumers are, even back to a broker it came from.
    pub replay_when_no_consumers: bool,
    /// Extra hops beyond `message_ttl` such a stuck message may make (ferromq's bound, so
    /// that a message cannot move back and forth for ever). Default 3.
    pub max_replays: u32,
    /// How long (ms) a message in flight to the remote when the bridge went down waits for
    /// that broker alone (its new master, after a failover) before it may go anywhere else:
    /// the remote may have stored it without the confirmation arriving, and its duplicate
    /// detection drops only a copy sent to it. 0 disables. Default 30000.
    pub in_flight_pin_ms: u64,
    /// `userName`: the login the bridge gives the remote broker (empty = none).
    pub user_name: String,
    /// `password`: the bridge's password at the remote broker (plain text: it is sent).
    pub password: BridgePassword,
    /// PEM file of the CA that signed the remote brokers' certificates, for `ssl://`
    /// addresses (ActiveMQ's trust store). On a discovery connector it makes the connector
    /// bridge only to brokers that advertise TLS (`ssl://` or `stomp+ssl://`), verified with
    /// this CA; without it, only to brokers that advertise `tcp://` or `stomp://`.
    pub tls_ca: PathBuf,
    /// PEM client certificate chain the bridge presents, for a remote with
    /// `tls.need_client_auth` (with `tls_key`).
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// Every other key, so known-but-unsupported ActiveMQ options get a message naming them.
    #[serde(flatten)]
    pub other: toml::Table,
}

impl Default for NetworkConnectorConfig {
    fn default() -> Self {
        NetworkConnectorConfig {
            name: "bridge".into(),
            uri: String::new(),
            duplex: false,
            conduit_subscriptions: true,
            network_ttl: 1,
            message_ttl: None,
            consumer_ttl: None,
            dynamic_only: false,
            decrease_network_consumer_priority: true,
            statically_included_destinations: Vec::new(),
            dynamically_included_destinations: Vec::new(),
            excluded_destinations: Vec::new(),
            suppress_duplicate_queue_subscriptions: false,
            prefetch_size: 1000,
            static_bridge: false,
            initial_reconnect_delay_ms: 1000,
            max_reconnect_delay_ms: 30_000,
            use_exponential_back_off: true,
            back_off_multiplier: 2.0,
            replay_when_no_consumers: true,
            max_replays: super::bridge::DEFAULT_MAX_REPLAYS,
            in_flight_pin_ms: 30_000,
            user_name: String::new(),
            password: BridgePassword::default(),
            tls_ca: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            other: toml::Table::new(),
        }
    }
}

impl NetworkConnectorConfig {
    /// The rustls configuration for `ssl://` addresses (`tls_ca`, and `tls_cert` / `tls_key`
    /// when given); `None` without `tls_ca`.
    pub fn tls_client_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        if self.tls_ca.as_os_str().is_empty() {
            return Ok(None);
        }
        let client = match (
            self.tls_cert.as_os_str().is_empty(),
            self.tls_key.as_os_str().is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some((self.tls_cert.as_path(), self.tls_key.as_path())),
            _ => return Err("tls_cert and tls_key go together".into()),
        };
        ferromq_client::tls::client_config(&self.tls_ca, client)
            .map(Some)
            .map_err(|e| format!("tls_ca / tls_cert / tls_key: {e}"))
    }

    /// `messageTTL`: defaults to `networkTTL`.
    pub fn effective_message_ttl(&self) -> i32 {
        self.message_ttl.unwrap_or(self.network_ttl)
    }

    /// `consumerTTL`: defaults to `networkTTL`.
    pub fn effective_consumer_ttl(&self) -> i32 {
        self.consumer_ttl.unwrap_or(self.network_ttl)
    }

    /// Checks values; does not decide whether this build can run the connector.
    pub fn check(&self) -> Result<ConnectorUri, NetworkConfigError> {
        let name = self.name.clone();
        let invalid = |msg: String| NetworkConfigError::Invalid {
            name: name.clone(),
            msg,
        };
        if let Some(key) = self.other.keys().next() {
            return Err(if UNSUPPORTED_OPTIONS.contains(&key.as_str()) {
                NetworkConfigError::Unsupported {
                    name: self.name.clone(),
                    key: key.clone(),
                }
            } else {
                NetworkConfigError::UnknownOption {
                    name: self.name.clone(),
                    key: key.clone(),
                }
            });
        }
        if self.name.is_empty() || self.name.contains([':', '/']) {
            return Err(invalid(
                "name must be non-empty and contain no ':' or '/'".into(),
            ));
        }
        if self.uri.is_empty() {
            return Err(invalid("uri is required".into()));
        }
        let uri = ConnectorUri::parse(&self.uri).map_err(&invalid)?;
        // A discovery connector learns its addresses at run time: there `tls_ca` says that it
        // bridges only to brokers advertising TLS (see `discovery::bridge_addr`).
        if let ConnectorUri::Static(a) | ConnectorUri::MasterSlave(a) = &uri {
            let tls_addrs = a.iter().any(|a| a.starts_with("ssl://"));
            if tls_addrs && self.tls_ca.as_os_str().is_empty() {
                return Err(invalid(
                    "ssl:// addresses need tls_ca (the CA that signed the remote brokers' certificates)"
                        .into(),
                ));
            }
            if !tls_addrs && !self.tls_ca.as_os_str().is_empty() {
                return Err(invalid(
                    "tls_ca is set but no address of uri is ssl://: the bridge would not use TLS"
                        .into(),
                ));
            }
        }
        // Read the files now, so that a bad one stops the start with its name.
        self.tls_client_config().map_err(&invalid)?;
        if self.user_name.is_empty() && !self.password.0.is_empty() {
            return Err(invalid("password without user_name".into()));
        }
        for (key, v) in [
            ("network_ttl", Some(self.network_ttl)),
            ("message_ttl", self.message_ttl),
            ("consumer_ttl", self.consumer_ttl),
        ] {
            let Some(v) = v else { continue };
            if v == 0 || v < -1 {
                return Err(invalid(format!(
                    "{key} = {v}: expected a hop count >= 1, or -1 for unlimited"
                )));
            }
        }
        if self.prefetch_size == 0 {
            return Err(invalid("prefetch_size must be > 0".into()));
        }
        if self.initial_reconnect_delay_ms == 0
            || self.max_reconnect_delay_ms < self.initial_reconnect_delay_ms
        {
            return Err(invalid(
                "reconnect delays: need 0 < initial_reconnect_delay_ms <= max_reconnect_delay_ms"
                    .into(),
            ));
        }
        if !self.back_off_multiplier.is_finite() || self.back_off_multiplier < 1.0 {
            return Err(invalid("back_off_multiplier must be >= 1".into()));
        }
        if self.static_bridge && self.statically_included_destinations.is_empty() {
            return Err(invalid(
                "static_bridge = true forwards only statically_included_destinations, which is empty".into(),
            ));
        }
        for (key, list) in [
            (
                "statically_included_destinations",
                &self.statically_included_destinations,
            ),
            (
                "dynamically_included_destinations",
                &self.dynamically_included_destinations,
            ),
            ("excluded_destinations", &self.excluded_destinations),
        ] {
            for d in list {
                if key == "statically_included_destinations"
                    && super::bridge::parse_filter(d).is_some_and(|f| {
                        f.kind == ferromq_broker::DestinationKind::Queue && f.is_wildcard()
                    })
                {
                    return Err(invalid(format!(
                        "{key}: {d:?}: a statically included queue must be named exactly (no wildcards)"
                    )));
                }
                if !is_destination_filter(d) {
                    return Err(invalid(format!(
                        "{key}: {d:?}: expected /queue/NAME, /topic/NAME, queue://NAME or topic://NAME (wildcards * and > allowed)"
                    )));
                }
            }
        }
        Ok(uri)
    }
}

fn is_destination_filter(d: &str) -> bool {
    ["/queue/", "/topic/", "queue://", "topic://"]
        .iter()
        .any(|p| d.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// Checks every connector.
pub fn validate(connectors: &[NetworkConnectorConfig]) -> Result<(), NetworkConfigError> {
    let mut names = std::collections::HashSet::new();
    for c in connectors {
        let uri = c.check()?;
        if !names.insert(c.name.as_str()) {
            return Err(NetworkConfigError::DuplicateName(c.name.clone()));
        }
        if c.in_flight_pin_ms > super::demand::PIN_MS_MAX {
            return Err(NetworkConfigError::Invalid {
                name: c.name.clone(),
                msg: format!(
                    "in_flight_pin_ms = {} is above the limit of {} (one hour)",
                    c.in_flight_pin_ms,
                    super::demand::PIN_MS_MAX
                ),
            });
        }
        if let ConnectorUri::Multicast(_) | ConnectorUri::Zookeeper(_) = uri {
            super::discovery::DiscoveryUri::parse(&c.uri).map_err(|msg| {
                NetworkConfigError::Invalid {
                    name: c.name.clone(),
                    msg,
                }
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<NetworkConnectorConfig> {
        #[derive(Deserialize)]
        struct Doc {
            network_connectors: Vec<NetworkConnectorConfig>,
        }
        toml::from_str::<Doc>(text).unwrap().network_connectors
    }

    #[test]
    fn defaults_are_activemq_defaults() {
        let c = &parse("[[network_connectors]]\nuri = \"static:(tcp://127.0.0.1:61613)\"\n")[0];
        assert_eq!(c.name, "bridge");
        assert!(!c.duplex);
        assert!(c.conduit_subscriptions);
        assert_eq!(c.network_ttl, 1);
        assert_eq!(c.effective_message_ttl(), 1);
        assert_eq!(c.effective_consumer_ttl(), 1);
        assert!(!c.dynamic_only);
        assert!(c.decrease_network_consumer_priority);
        assert!(!c.suppress_duplicate_queue_subscriptions);
        assert_eq!(c.prefetch_size, 1000);
        assert!(!c.static_bridge);
        assert_eq!(c.initial_reconnect_delay_ms, 1000);
        assert_eq!(c.max_reconnect_delay_ms, 30_000);
        assert!(c.use_exponential_back_off);
        assert!((c.back_off_multiplier - 2.0).abs() < f64::EPSILON);
        assert_eq!(c.in_flight_pin_ms, 30_000);
        assert_eq!(
            c.check(),
            Ok(ConnectorUri::Static(vec!["127.0.0.1:61613".into()]))
        );
    }

    #[test]
    fn network_ttl_sets_both_ttls_unless_given() {
        let c = &parse(
            "[[network_connectors]]\nuri = \"static:tcp://h:1\"\nnetwork_ttl = 3\nconsumer_ttl = 1\n",
        )[0];
        assert_eq!(c.effective_message_ttl(), 3);
        assert_eq!(c.effective_consumer_ttl(), 1);
    }

    #[test]
    fn uris_parse() {
        assert_eq!(
            ConnectorUri::parse("masterslave:(tcp://a:1,tcp://b:2,tcp://c:3)"),
            Ok(ConnectorUri::MasterSlave(vec![
                "a:1".into(),
                "b:2".into(),
                "c:3".into()
            ]))
        );
        assert_eq!(
            ConnectorUri::parse("multicast://default"),
            Ok(ConnectorUri::Multicast("default".into()))
        );
        for bad in [
            "static:(tcp://a:1",
            "static:(tcp://a)",
            "static:(tcp://a:0)",
            "masterslave:(tcp://a:1)",
            "multicast://",
            "tcp://a:1",
        ] {
            assert!(ConnectorUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsupported_and_unknown_options_are_named() {
        let c =
            &parse("[[network_connectors]]\nuri = \"static:tcp://h:1\"\nalways_sync_send = true\n")
                [0];
        let err = c.check().unwrap_err();
        assert!(
            matches!(err, NetworkConfigError::Unsupported { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("always_sync_send"), "{err}");
        let c = &parse("[[network_connectors]]\nuri = \"static:tcp://h:1\"\nduplx = true\n")[0];
        let err = c.check().unwrap_err();
        assert!(
            matches!(err, NetworkConfigError::UnknownOption { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("duplx"), "{err}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        for extra in [
            "network_ttl = 0",
            "message_ttl = -2",
            "prefetch_size = 0",
            "initial_reconnect_delay_ms = 0",
            "max_reconnect_delay_ms = 10",
            "back_off_multiplier = 0.5",
            "static_bridge = true",
            "excluded_destinations = [\"foo\"]",
            "name = \"a/b\"",
        ] {
            let c = &parse(&format!(
                "[[network_connectors]]\nuri = \"static:tcp://h:1\"\n{extra}\n"
            ))[0];
            assert!(c.check().is_err(), "{extra}");
        }
        let c = &parse("[[network_connectors]]\nname = \"x\"\n")[0];
        assert!(c.check().is_err());
    }

    #[test]
    fn names_are_unique_and_discovery_uris_are_checked() {
        assert_eq!(validate(&[]), Ok(()));
        let cs = parse(
            "[[network_connectors]]\nname = \"a\"\nuri = \"static:tcp://h:1\"\n[[network_connectors]]\nname = \"a\"\nuri = \"static:tcp://h:2\"\n",
        );
        assert_eq!(
            validate(&cs),
            Err(NetworkConfigError::DuplicateName("a".into()))
        );
        assert_eq!(validate(&cs[..1]), Ok(()));
        let cs = parse("[[network_connectors]]\nuri = \"multicast://default?nonsense=1\"\n");
        let err = validate(&cs).unwrap_err();
        assert!(matches!(err, NetworkConfigError::Invalid { .. }), "{err}");
    }
}
