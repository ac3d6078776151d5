//! `multicast://` discovery URIs, with ActiveMQ's option names and defaults
//! (`MulticastDiscoveryAgent.java`, `MulticastDiscoveryAgentFactory.java`). Pure code, no I/O.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// ActiveMQ's default group address (`DEFAULT_HOST_IP`, the host `default` stands for).
pub const DEFAULT_GROUP_ADDR: Ipv4Addr = Ipv4Addr::new(239, 255, 2, 3);
/// ActiveMQ's default discovery port (`DEFAULT_PORT`).
pub const DEFAULT_PORT: u16 = 6155;
/// ActiveMQ's default group name.
pub const DEFAULT_GROUP: &str = "default";
/// ActiveMQ's default `keepAliveInterval` (`DEFAULT_IDLE_TIME`), in milliseconds.
pub const DEFAULT_KEEP_ALIVE_INTERVAL_MS: u64 = 500;
/// Missed keep-alives after which a service is declared dead (`HEARTBEAT_MISS_BEFORE_DEATH`).
pub const HEARTBEAT_MISS_BEFORE_DEATH: u32 = 10;
/// Longest group name accepted: it is repeated in every datagram, which must fit in
/// [`crate::DATAGRAM_BYTES_MAX`] together with the service URI.
pub const GROUP_BYTES_MAX: usize = 256;
/// Longest `keepAliveInterval` accepted (one hour): beyond it a dead broker would stay listed
/// for more than ten hours.
pub const KEEP_ALIVE_INTERVAL_MS_MAX: u64 = 3_600_000;

/// Why a `multicast://` URI was rejected. Every variant names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The URI does not start with `multicast://`.
    #[error("not a multicast discovery URI: {0:?} (expected multicast://host[:port][?options])")]
    NotMulticast(String),
    /// The host is neither `default` nor an IPv4 multicast address (224.0.0.0/4).
    #[error(
        "invalid multicast group address {0:?}: expected `default` or an IPv4 multicast address"
    )]
    InvalidAddress(String),
    /// The port does not parse as a number in 1..=65535.
    #[error("invalid multicast port {0:?}")]
    InvalidPort(String),
    /// An option this crate does not know. ActiveMQ ignores these silently; we refuse, since a
    /// misspelt option would leave a default in force that nobody asked for.
    #[error("unknown multicast discovery option {0:?}")]
    UnknownOption(String),
    /// An ActiveMQ option this crate does not implement, or not with this value.
    #[error("multicast discovery option {name}={value} is not supported: {why}")]
    UnsupportedOption {
        /// The option name.
        name: String,
        /// The value given.
        value: String,
        /// What to use instead.
        why: &'static str,
    },
    /// An option value that does not parse or is out of range.
    #[error("invalid value {value:?} for multicast discovery option {name}: expected {expected}")]
    InvalidValue {
        /// The option name.
        name: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The same option given twice.
    #[error("multicast discovery option {0:?} given more than once")]
    DuplicateOption(String),
    /// A `&`-separated item without `=`.
    #[error("malformed multicast discovery option {0:?}: expected name=value")]
    MalformedOption(String),
}

/// Settings of a multicast discovery agent, as ActiveMQ's `multicast://` URI gives them.
///
/// The option names (in the doc comments) are ActiveMQ's, as written in the URI query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastConfig {
    /// The multicast group address: the URI host (`default` is 239.255.2.3).
    pub group_addr: Ipv4Addr,
    /// The UDP port: the URI port (default 6155).
    pub port: u16,
    /// `group` (default `default`): the name every datagram starts with; agents with another
    /// group name ignore each other even on the same address and port.
    pub group: String,
    /// `timeToLive` (default 1): the IP TTL of sent datagrams; 1 keeps them on the local subnet.
    pub time_to_live: u32,
    /// `keepAliveInterval` (default 500 ms): the period of alive datagrams. A service not heard
    /// from for [`HEARTBEAT_MISS_BEFORE_DEATH`] intervals is declared dead.
    pub keep_alive_interval_ms: u64,
    /// `loopBackMode` (default `false`): with Java's `MulticastSocket.setLoopbackMode` meaning,
    /// `true` *disables* the local loopback of sent datagrams (so agents on the same host do
    /// not hear each other). `false` sets `IP_MULTICAST_LOOP` on.
    pub loop_back_mode: bool,
    /// `interface` (default none: the kernel's choice by its routing table): the IPv4 address of
    /// the interface to send on and to join the group on, for example `127.0.0.1`.
    pub interface: Option<Ipv4Addr>,
    /// `initialReconnectDelay` (default 5000 ms): after a service is reported failed while its
    /// adverts still arrive, how long its alive adverts are not reported again
    /// (see [`crate::Membership::service_failed`]).
    pub initial_reconnect_delay_ms: u64,
    /// `maxReconnectDelay` (default 30 000 ms): the cap of that suppression with exponential
    /// back-off.
    pub max_reconnect_delay_ms: u64,
    /// `backOffMultiplier` (default 2): the base of the exponential back-off.
    pub back_off_multiplier: u64,
    /// `useExponentialBackOff` (default `false`): suppress for `backOffMultiplier ^ failures`
    /// ms (ActiveMQ's formula) instead of `initialReconnectDelay`.
    pub use_exponential_back_off: bool,
    /// `maxReconnectAttempts` (default 0 = no limit): after this many failures a service is
    /// not reported up again.
    pub max_reconnect_attempts: u32,
}

impl Default for MulticastConfig {
    /// `multicast://default`.
    fn default() -> Self {
        MulticastConfig {
            group_addr: DEFAULT_GROUP_ADDR,
            port: DEFAULT_PORT,
            group: DEFAULT_GROUP.to_owned(),
            time_to_live: 1,
            keep_alive_interval_ms: DEFAULT_KEEP_ALIVE_INTERVAL_MS,
            loop_back_mode: false,
            interface: None,
            initial_reconnect_delay_ms: 5000,
            max_reconnect_delay_ms: 30_000,
            back_off_multiplier: 2,
            use_exponential_back_off: false,
            max_reconnect_attempts: 0,
        }
    }
}

impl MulticastConfig {
    /// Parses `multicast://default`, `multicast://239.255.2.3:6155?group=x&timeToLive=1&...`.
    ///
    /// The host is `default` (239.255.2.3) or an IPv4 multicast address; the port defaults to
    /// 6155. Option values are taken literally (no percent-decoding).
    pub fn parse(uri: &str) -> Result<MulticastConfig, ConfigError> {
        let text = uri.trim();
        let rest = strip_prefix_ignore_case(text, "multicast://")
            .ok_or_else(|| ConfigError::NotMulticast(text.to_owned()))?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ConfigError::InvalidPort(p.to_owned()))?;
                (h, port)
            }
            None => (authority, DEFAULT_PORT),
        };
        let group_addr = if host.eq_ignore_ascii_case("default") {
            DEFAULT_GROUP_ADDR
        } else {
            host.parse::<Ipv4Addr>()
                .ok()
                .filter(Ipv4Addr::is_multicast)
                .ok_or_else(|| ConfigError::InvalidAddress(host.to_owned()))?
        };
        let mut config = MulticastConfig {
            group_addr,
            port,
            ..MulticastConfig::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        for item in query.split('&').filter(|s| !s.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::MalformedOption(item.to_owned()))?;
            if seen.contains(&name) {
                return Err(ConfigError::DuplicateOption(name.to_owned()));
            }
            seen.push(name);
            config.set(name, value)?;
        }
        Ok(config)
    }

    /// Applies one `name=value` option.
    fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |expected: &'static str| ConfigError::InvalidValue {
            name: name.to_owned(),
            value: value.to_owned(),
            expected,
        };
        let boolean = || match value.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(invalid("true or false")),
        };
        let millis = || {
            value
                .parse::<u64>()
                .map_err(|_| invalid("milliseconds >= 0"))
        };
        match name {
            "group" => {
                if value.is_empty() || value.len() > GROUP_BYTES_MAX {
                    return Err(invalid("a non-empty group name of at most 256 bytes"));
                }
                self.group = value.to_owned();
            }
            "timeToLive" => {
                self.time_to_live = match value.parse::<u32>() {
                    Ok(ttl) if ttl <= 255 => ttl,
                    _ => return Err(invalid("a TTL in 0..=255")),
                }
            }
            "keepAliveInterval" => {
                self.keep_alive_interval_ms = match value.parse::<u64>() {
                    Ok(ms) if (1..=KEEP_ALIVE_INTERVAL_MS_MAX).contains(&ms) => ms,
                    _ => return Err(invalid("milliseconds in 1..=3600000")),
                }
            }
            "loopBackMode" => self.loop_back_mode = boolean()?,
            "interface" => {
                self.interface = Some(
                    value
                        .parse::<Ipv4Addr>()
                        .map_err(|_| invalid("the IPv4 address of a local interface"))?,
                )
            }
            // Java resolves these by interface name (NetworkInterface.getByName); resolving
            // names needs getifaddrs, which this crate does without.
            "networkInterface" | "joinNetworkInterface" => {
                return Err(ConfigError::UnsupportedOption {
                    name: name.to_owned(),
                    value: value.to_owned(),
                    why: "interfaces are chosen by address: use interface=<IPv4 address>",
                })
            }
            "initialReconnectDelay" => self.initial_reconnect_delay_ms = millis()?,
            "maxReconnectDelay" => self.max_reconnect_delay_ms = millis()?,
            "backOffMultiplier" => {
                self.back_off_multiplier = match value.parse::<u64>() {
                    Ok(m) if m >= 1 => m,
                    _ => return Err(invalid("an integer >= 1")),
                }
            }
            "useExponentialBackOff" => self.use_exponential_back_off = boolean()?,
            "maxReconnectAttempts" => {
                self.max_reconnect_attempts = value
                    .parse::<u32>()
                    .map_err(|_| invalid("0 (no limit) or a count"))?
            }
            _ => return Err(ConfigError::UnknownOption(name.to_owned())),
        }
        Ok(())
    }

    /// Where datagrams are sent and received: the group address and port.
    pub fn group_socket_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.group_addr, self.port)
    }

    /// The interface address to send and join on: the configured one, else `0.0.0.0` (the
    /// kernel chooses by its routing table).
    pub fn interface_addr(&self) -> Ipv4Addr {
        self.interface.unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The period of alive datagrams.
    pub fn keep_alive_interval(&self) -> Duration {
        Duration::from_millis(self.keep_alive_interval_ms)
    }

    /// How long a service may stay silent before it is declared dead:
    /// [`HEARTBEAT_MISS_BEFORE_DEATH`] keep-alive intervals.
    pub fn expiry(&self) -> Duration {
        self.keep_alive_interval()
            .saturating_mul(HEARTBEAT_MISS_BEFORE_DEATH)
    }
}

impl fmt::Display for MulticastConfig {
    /// The URI form, with the group and every option that differs from the default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "multicast://{}:{}", self.group_addr, self.port)?;
        let d = MulticastConfig::default();
        let mut sep = '?';
        let mut opt = |f: &mut fmt::Formatter<'_>, name: &str, value: &dyn fmt::Display| {
            let r = write!(f, "{sep}{name}={value}");
            sep = '&';
            r
        };
        if self.group != d.group {
            opt(f, "group", &self.group)?;
        }
        if self.time_to_live != d.time_to_live {
            opt(f, "timeToLive", &self.time_to_live)?;
        }
        if self.keep_alive_interval_ms != d.keep_alive_interval_ms {
            opt(f, "keepAliveInterval", &self.keep_alive_interval_ms)?;
        }
        if self.loop_back_mode != d.loop_back_mode {
            opt(f, "loopBackMode", &self.loop_back_mode)?;
        }
        if let Some(interface) = self.interface {
            opt(f, "interface", &interface)?;
        }
        Ok(())
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicast_default_is_activemqs_group_address_port_and_timing() {
        let c = MulticastConfig::parse("multicast://default").unwrap();
        assert_eq!(c, MulticastConfig::default());
        assert_eq!(
            c.group_socket_addr(),
            "239.255.2.3:6155".parse::<SocketAddrV4>().unwrap()
        );
        assert_eq!(c.group, "default");
        assert_eq!(c.time_to_live, 1);
        assert_eq!(c.keep_alive_interval(), Duration::from_millis(500));
        assert_eq!(c.expiry(), Duration::from_millis(5000));
        assert!(!c.loop_back_mode);
        assert_eq!(c.interface_addr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(c.initial_reconnect_delay_ms, 5000);
        assert_eq!(c.max_reconnect_delay_ms, 30_000);
        assert_eq!(c.back_off_multiplier, 2);
        assert!(!c.use_exponential_back_off);
        assert_eq!(c.max_reconnect_attempts, 0);
    }

    #[test]
    fn every_activemq_option_in_the_query_is_applied() {
        let c = MulticastConfig::parse(
            "multicast://239.255.9.9:7000?group=x&timeToLive=4&keepAliveInterval=50\
             &loopBackMode=true&interface=127.0.0.1&initialReconnectDelay=10\
             &maxReconnectDelay=20&backOffMultiplier=3&useExponentialBackOff=true\
             &maxReconnectAttempts=5",
        )
        .unwrap();
        assert_eq!(
            c,
            MulticastConfig {
                group_addr: Ipv4Addr::new(239, 255, 9, 9),
                port: 7000,
                group: "x".into(),
                time_to_live: 4,
                keep_alive_interval_ms: 50,
                loop_back_mode: true,
                interface: Some(Ipv4Addr::LOCALHOST),
                initial_reconnect_delay_ms: 10,
                max_reconnect_delay_ms: 20,
                back_off_multiplier: 3,
                use_exponential_back_off: true,
                max_reconnect_attempts: 5,
            }
        );
        assert_eq!(c.expiry(), Duration::from_millis(500));
    }

    #[test]
    fn default_host_with_a_port_and_a_scheme_in_any_case_parse() {
        let c = MulticastConfig::parse(" MULTICAST://Default:7001/?group=g ").unwrap();
        assert_eq!(c.group_addr, DEFAULT_GROUP_ADDR);
        assert_eq!(c.port, 7001);
        assert_eq!(c.group, "g");
    }

    #[test]
    fn display_gives_a_uri_that_parses_back_to_the_same_config() {
        for text in [
            "multicast://default",
            "multicast://239.1.2.3:9?group=g&timeToLive=3&keepAliveInterval=7&loopBackMode=true&interface=127.0.0.1",
        ] {
            let c = MulticastConfig::parse(text).unwrap();
            assert_eq!(MulticastConfig::parse(&c.to_string()).unwrap(), c, "{c}");
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases: &[(&str, ConfigError)] = &[
            (
                "tcp://default",
                ConfigError::NotMulticast("tcp://default".into()),
            ),
            (
                "multicast://10.0.0.1",
                ConfigError::InvalidAddress("10.0.0.1".into()),
            ),
            (
                "multicast://somehost:1",
                ConfigError::InvalidAddress("somehost".into()),
            ),
            (
                "multicast://default:0",
                ConfigError::InvalidPort("0".into()),
            ),
            (
                "multicast://default:99999",
                ConfigError::InvalidPort("99999".into()),
            ),
            (
                "multicast://default?grop=x",
                ConfigError::UnknownOption("grop".into()),
            ),
            (
                "multicast://default?group",
                ConfigError::MalformedOption("group".into()),
            ),
            (
                "multicast://default?group=a&group=b",
                ConfigError::DuplicateOption("group".into()),
            ),
        ];
        for (text, want) in cases {
            let got = MulticastConfig::parse(text).unwrap_err();
            assert_eq!(&got, want, "{text}");
        }
        for text in [
            "multicast://default?group=",
            "multicast://default?timeToLive=256",
            "multicast://default?keepAliveInterval=0",
            "multicast://default?keepAliveInterval=-1",
            "multicast://default?loopBackMode=yes",
            "multicast://default?interface=lo",
            "multicast://default?backOffMultiplier=0",
        ] {
            let err = MulticastConfig::parse(text).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidValue { .. }),
                "{text}: {err}"
            );
        }
        let err = MulticastConfig::parse("multicast://default?networkInterface=eth0").unwrap_err();
        assert!(
            matches!(err, ConfigError::UnsupportedOption { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("interface=<IPv4 address>"),
            "{err}"
        );
    }
}
