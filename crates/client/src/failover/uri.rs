//! Parsing ActiveMQ-style connection URIs: `failover:(uri1,...,uriN)?options`,
//! `failover:uri1,...,uriN`, `discovery:(multicast://default)?options`, and a plain
//! `tcp://host:port` or `host:port`.
//!
//! Option names and defaults are ActiveMQ Classic's (`failover-transport-reference`,
//! `FailoverTransport.java`, `DiscoveryTransportFactory.java`). Pure code, no I/O.

use std::fmt;
use std::time::Duration;

/// Why a connection URI was rejected. Every variant names the offending text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UriError {
    /// The URI is empty.
    #[error("empty connection URI")]
    Empty,
    /// `failover:(` without its closing `)`.
    #[error("unbalanced parentheses in {0:?}")]
    UnbalancedParentheses(String),
    /// `failover:` followed by no broker URI.
    #[error("failover URI {0:?} lists no broker")]
    NoBrokers(String),
    /// A broker URI that is not `tcp://host:port`, `stomp://host:port` or `host:port`.
    #[error("invalid broker URI {0:?}: expected tcp://host:port, stomp://host:port or host:port")]
    InvalidBroker(String),
    /// An option this client does not know. ActiveMQ silently ignores these; we refuse, since a
    /// misspelt option would otherwise leave a default in force that nobody asked for.
    #[error("unknown failover option {name:?}")]
    UnknownOption {
        /// The option as written.
        name: String,
    },
    /// An ActiveMQ failover option with a value this client does not implement (for example
    /// `backup=true`).
    #[error("failover option {name}={value} is not supported by ferromq-client")]
    UnsupportedOption {
        /// The option name.
        name: String,
        /// The value given.
        value: String,
    },
    /// An option value that does not parse or is out of range.
    #[error("invalid value {value:?} for failover option {name}: expected {expected}")]
    InvalidValue {
        /// The option name.
        name: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The same option given twice.
    #[error("failover option {0:?} given more than once")]
    DuplicateOption(String),
    /// A `?`-separated item without `=`.
    #[error("malformed option {0:?}: expected name=value")]
    MalformedOption(String),
    /// `discovery:(...)` names an agent other than `multicast://`, or more than one.
    #[error("unsupported discovery agent {0:?}: expected exactly one multicast://... URI")]
    UnsupportedDiscoveryAgent(String),
    /// The `multicast://` URI inside `discovery:(...)` is invalid.
    #[error("invalid discovery agent URI: {0}")]
    Discovery(#[from] ferromq_discovery::ConfigError),
}

/// One broker in the list: the URI as written and the `host:port` it connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUri {
    /// The URI as written (trimmed), e.g. `tcp://a:61613`; used in logs.
    pub uri: String,
    /// The `host:port` to connect to.
    pub addr: String,
}

impl fmt::Display for BrokerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// The failover transport options, with ActiveMQ's names (in the doc comments) and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverOptions {
    /// `randomize` (default `true`): shuffle the broker list before each connect pass; `false`
    /// tries the brokers in the order given (primary first).
    pub randomize: bool,
    /// `initialReconnectDelay` (default 10 ms): wait before the first reconnect pass after a
    /// lost connection, and the first back-off step.
    pub initial_reconnect_delay_ms: u64,
    /// `maxReconnectDelay` (default 30 000 ms): cap of the back-off.
    pub max_reconnect_delay_ms: u64,
    /// `useExponentialBackOff` (default `true`): multiply the delay after every failed pass.
    pub use_exponential_back_off: bool,
    /// `reconnectDelayExponent` (default 2.0): the back-off multiplier (ActiveMQ's internal
    /// field is `backOffMultiplier`).
    pub reconnect_delay_exponent: f64,
    /// `maxReconnectAttempts` (default -1): failed passes over the broker list before giving
    /// up after a connection was lost; -1 never gives up, 0 tries one pass.
    pub max_reconnect_attempts: i32,
    /// `startupMaxReconnectAttempts` (default -1): the same limit for the very first connect;
    /// -1 means `maxReconnectAttempts` applies to the first connect too.
    pub startup_max_reconnect_attempts: i32,
    /// `timeout` (default -1): a send fails after this many ms without a connection or
    /// confirmation; -1 (or 0) waits forever.
    pub timeout_ms: i64,
    /// `warnAfterReconnectAttempts` (default 10): log a warning every N failed passes; <= 0
    /// disables the warning.
    pub warn_after_reconnect_attempts: i32,
    /// `reconnectSupported` (default `true`): obey a broker's request to reconnect elsewhere.
    /// Stored; the broker sends no such request yet.
    pub reconnect_supported: bool,
    /// `updateURIsSupported` (default `true`): after each connect, add the brokers listed in
    /// the CONNECTED header [`CLUSTER_HEADER`](super::cluster::CLUSTER_HEADER) (sent by a
    /// broker with `updateClusterClients`) to the broker list; see [`super::cluster`].
    pub update_uris_supported: bool,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            randomize: true,
            initial_reconnect_delay_ms: 10,
            max_reconnect_delay_ms: 30_000,
            use_exponential_back_off: true,
            reconnect_delay_exponent: 2.0,
            max_reconnect_attempts: -1,
            startup_max_reconnect_attempts: -1,
            timeout_ms: -1,
            warn_after_reconnect_attempts: 10,
            reconnect_supported: true,
            update_uris_supported: true,
        }
    }
}

impl FailoverOptions {
    /// The `timeout` as a duration, `None` when sends wait forever (`timeout` <= 0).
    pub fn send_timeout(&self) -> Option<Duration> {
        u64::try_from(self.timeout_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    /// Applies one `name=value` option.
    fn set(&mut self, name: &str, value: &str) -> Result<(), UriError> {
        let invalid = |expected: &'static str| UriError::InvalidValue {
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
        let attempts = || match value.parse::<i32>() {
            Ok(n) if n >= -1 => Ok(n),
            _ => Err(invalid("-1 (no limit) or a count >= 0")),
        };
        // Accepted only with the value that means "off": we do not implement them, and
        // pretending to would mislead whoever reads the URI.
        let off_only = || match boolean()? {
            false => Ok(()),
            true => Err(UriError::UnsupportedOption {
                name: name.to_owned(),
                value: value.to_owned(),
            }),
        };
        match name {
            "randomize" => self.randomize = boolean()?,
            "initialReconnectDelay" => self.initial_reconnect_delay_ms = millis()?,
            "maxReconnectDelay" => self.max_reconnect_delay_ms = millis()?,
            "useExponentialBackOff" => self.use_exponential_back_off = boolean()?,
            "reconnectDelayExponent" => {
                self.reconnect_delay_exponent = match value.parse::<f64>() {
                    Ok(x) if x.is_finite() && x >= 1.0 => x,
                    _ => return Err(invalid("a number >= 1.0")),
                }
            }
            "maxReconnectAttempts" => self.max_reconnect_attempts = attempts()?,
            "startupMaxReconnectAttempts" => self.startup_max_reconnect_attempts = attempts()?,
            "timeout" => {
                self.timeout_ms = match value.parse::<i64>() {
                    Ok(n) if n >= -1 => n,
                    _ => return Err(invalid("-1 (wait forever) or milliseconds >= 0")),
                }
            }
            "warnAfterReconnectAttempts" => {
                self.warn_after_reconnect_attempts =
                    value.parse().map_err(|_| invalid("an integer"))?
            }
            "reconnectSupported" => self.reconnect_supported = boolean()?,
            "updateURIsSupported" => self.update_uris_supported = boolean()?,
            "backup" | "priorityBackup" | "trackMessages" => off_only()?,
            _ => {
                return Err(UriError::UnknownOption {
                    name: name.to_owned(),
                })
            }
        }
        Ok(())
    }
}

/// A parsed connection URI: the brokers to try, and whether (and how) to fail over.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverUri {
    /// The brokers, in the order written; empty for a `discovery:` URI.
    pub brokers: Vec<BrokerUri>,
    /// For `discovery:(multicast://...)`: the multicast group whose advertised services
    /// are the broker list (see [`crate::failover::discovery`]).
    pub discovery: Option<ferromq_discovery::MulticastConfig>,
    /// False for a plain `tcp://host:port` URI: one broker, no reconnect after a loss.
    pub failover: bool,
    /// The transport options (defaults for a plain URI).
    pub options: FailoverOptions,
}

impl FailoverUri {
    /// Parses `failover:(uri1,...,uriN)?options`, `failover:uri1,...,uriN`,
    /// `failover://...` and a plain `tcp://host:port`, `stomp://host:port` or `host:port`.
    ///
    /// As in ActiveMQ, in the form without parentheses a `?query` belongs to the last broker
    /// URI (a nested transport option), not to the failover transport. Nested transport
    /// options are ignored, as [`Client::connect`](crate::Client::connect) ignores them.
    pub fn parse(uri: &str) -> Result<FailoverUri, UriError> {
        let text = uri.trim();
        if text.is_empty() {
            return Err(UriError::Empty);
        }
        let Some(rest) = strip_prefix_ignore_case(text, "failover:") else {
            if let Some(rest) = strip_prefix_ignore_case(text, "discovery:") {
                return parse_discovery(text, rest);
            }
            return Ok(FailoverUri {
                brokers: vec![broker(text)?],
                discovery: None,
                failover: false,
                options: FailoverOptions::default(),
            });
        };
        let rest = rest.trim();
        let rest = rest.strip_prefix("//").unwrap_or(rest).trim();
        let (list, query) = match rest.strip_prefix('(') {
            Some(inner) => {
                let close = matching_paren(inner)
                    .ok_or_else(|| UriError::UnbalancedParentheses(text.to_owned()))?;
                let after = inner[close + 1..].trim();
                let query = match after.strip_prefix('?') {
                    Some(q) => q,
                    None if after.is_empty() => "",
                    None => return Err(UriError::InvalidBroker(after.to_owned())),
                };
                (&inner[..close], query)
            }
            None => (rest, ""),
        };
        let brokers = split_top_level(list)
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(broker)
            .collect::<Result<Vec<_>, _>>()?;
        if brokers.is_empty() {
            return Err(UriError::NoBrokers(text.to_owned()));
        }
        Ok(FailoverUri {
            brokers,
            discovery: None,
            failover: true,
            options: parse_options(query, false)?,
        })
    }
}

/// Parses the failover options of `query`. With `discovery`, `discovered.*` options (which
/// ActiveMQ applies to each discovered broker URI) are accepted and ignored, as this client
/// ignores nested transport options.
fn parse_options(query: &str, discovery: bool) -> Result<FailoverOptions, UriError> {
    let mut options = FailoverOptions::default();
    let mut seen: Vec<&str> = Vec::new();
    for item in query.split('&').filter(|s| !s.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| UriError::MalformedOption(item.to_owned()))?;
        if seen.contains(&name) {
            return Err(UriError::DuplicateOption(name.to_owned()));
        }
        seen.push(name);
        if discovery && name.starts_with("discovered.") {
            continue;
        }
        options.set(name, value)?;
    }
    Ok(options)
}

/// `discovery:(multicast://...)?failoverOptions` or `discovery:multicast://...` (whose query
/// then belongs to the agent), as ActiveMQ's `DiscoveryTransportFactory`: the agent's
/// services are the failover transport's broker list, and the outer options are failover
/// options.
fn parse_discovery(text: &str, rest: &str) -> Result<FailoverUri, UriError> {
    let rest = rest.trim();
    let rest = rest.strip_prefix("//").unwrap_or(rest).trim();
    let (agents, query) = match rest.strip_prefix('(') {
        Some(inner) => {
            let close = matching_paren(inner)
                .ok_or_else(|| UriError::UnbalancedParentheses(text.to_owned()))?;
            let after = inner[close + 1..].trim();
            let query = match after.strip_prefix('?') {
                Some(q) => q,
                None if after.is_empty() => "",
                None => return Err(UriError::UnsupportedDiscoveryAgent(after.to_owned())),
            };
            (&inner[..close], query)
        }
        None => (rest, ""),
    };
    let agents: Vec<&str> = split_top_level(agents)
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let agent = match agents.as_slice() {
        [one] if strip_prefix_ignore_case(one, "multicast:").is_some() => *one,
        [] => return Err(UriError::UnsupportedDiscoveryAgent(text.to_owned())),
        [one] => return Err(UriError::UnsupportedDiscoveryAgent((*one).to_owned())),
        _ => return Err(UriError::UnsupportedDiscoveryAgent(agents.join(","))),
    };
    Ok(FailoverUri {
        brokers: Vec::new(),
        discovery: Some(ferromq_discovery::MulticastConfig::parse(agent)?),
        failover: true,
        options: parse_options(query, true)?,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Index in `s` of the `)` closing a `(` that preceded `s`.
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

pub(super) fn broker(uri: &str) -> Result<BrokerUri, UriError> {
    let addr =
        crate::client::parse_addr(uri).map_err(|_| UriError::InvalidBroker(uri.to_owned()))?;
    Ok(BrokerUri {
        uri: uri.to_owned(),
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(uri: &FailoverUri) -> Vec<&str> {
        uri.brokers.iter().map(|b| b.addr.as_str()).collect()
    }

    #[test]
    fn every_option_in_the_issue_example_parses_to_its_value() {
        let uri = FailoverUri::parse(
            "failover:(tcp://a:61613,tcp://b:61613)?randomize=false&initialReconnectDelay=10\
             &maxReconnectDelay=30000&useExponentialBackOff=true&reconnectDelayExponent=2.0\
             &maxReconnectAttempts=-1&startupMaxReconnectAttempts=-1&timeout=-1\
             &priorityBackup=false&backup=false",
        )
        .unwrap();
        assert!(uri.failover);
        assert_eq!(addrs(&uri), ["a:61613", "b:61613"]);
        assert_eq!(uri.brokers[0].uri, "tcp://a:61613");
        assert_eq!(
            uri.options,
            FailoverOptions {
                randomize: false,
                ..FailoverOptions::default()
            }
        );
    }

    #[test]
    fn defaults_are_activemqs() {
        let o = FailoverUri::parse("failover:(tcp://a:1)").unwrap().options;
        assert!(o.randomize);
        assert_eq!(o.initial_reconnect_delay_ms, 10);
        assert_eq!(o.max_reconnect_delay_ms, 30_000);
        assert!(o.use_exponential_back_off);
        assert_eq!(o.reconnect_delay_exponent, 2.0);
        assert_eq!(o.max_reconnect_attempts, -1);
        assert_eq!(o.startup_max_reconnect_attempts, -1);
        assert_eq!(o.timeout_ms, -1);
        assert_eq!(o.send_timeout(), None);
        assert_eq!(o.warn_after_reconnect_attempts, 10);
        assert!(o.reconnect_supported);
        assert!(o.update_uris_supported);
    }

    #[test]
    fn non_default_values_are_applied() {
        let o = FailoverUri::parse(
            "failover:(tcp://a:1,tcp://b:2,tcp://c:3)?initialReconnectDelay=100&maxReconnectDelay=5000\
             &useExponentialBackOff=false&reconnectDelayExponent=1.5&maxReconnectAttempts=3\
             &startupMaxReconnectAttempts=0&timeout=2500&warnAfterReconnectAttempts=0\
             &reconnectSupported=false&updateURIsSupported=FALSE",
        )
        .unwrap()
        .options;
        assert_eq!(o.initial_reconnect_delay_ms, 100);
        assert_eq!(o.max_reconnect_delay_ms, 5000);
        assert!(!o.use_exponential_back_off);
        assert_eq!(o.reconnect_delay_exponent, 1.5);
        assert_eq!(o.max_reconnect_attempts, 3);
        assert_eq!(o.startup_max_reconnect_attempts, 0);
        assert_eq!(o.send_timeout(), Some(Duration::from_millis(2500)));
        assert_eq!(o.warn_after_reconnect_attempts, 0);
        assert!(!o.reconnect_supported);
        assert!(!o.update_uris_supported);
    }

    #[test]
    fn the_form_without_parentheses_lists_brokers_and_gives_the_query_to_the_last_one() {
        let uri = FailoverUri::parse("failover:tcp://a:1,tcp://b:2").unwrap();
        assert!(uri.failover);
        assert_eq!(addrs(&uri), ["a:1", "b:2"]);
        assert_eq!(uri.options, FailoverOptions::default());

        // ActiveMQ's URISupport.parseComposite: no parentheses, no failover options.
        let uri = FailoverUri::parse("failover:tcp://a:1,tcp://b:2?randomize=false").unwrap();
        assert_eq!(addrs(&uri), ["a:1", "b:2"]);
        assert!(uri.options.randomize);

        let uri = FailoverUri::parse("failover://(tcp://a:1 , b:2)?timeout=5").unwrap();
        assert_eq!(addrs(&uri), ["a:1", "b:2"]);
        assert_eq!(uri.options.timeout_ms, 5);
    }

    #[test]
    fn plain_addresses_are_single_broker_uris_without_failover() {
        for (text, addr) in [
            ("tcp://host:61613", "host:61613"),
            ("host:61613", "host:61613"),
            ("stomp://10.0.0.1:1", "10.0.0.1:1"),
            ("tcp://h:2?wireFormat.maxInactivityDuration=0", "h:2"),
        ] {
            let uri = FailoverUri::parse(text).unwrap();
            assert!(!uri.failover, "{text}");
            assert_eq!(addrs(&uri), [addr], "{text}");
        }
    }

    #[test]
    fn nested_uri_options_do_not_confuse_the_broker_list() {
        let uri = FailoverUri::parse(
            "failover:(tcp://a:1?wireFormat.maxInactivityDuration=0,tcp://b:2)?randomize=false",
        )
        .unwrap();
        assert_eq!(addrs(&uri), ["a:1", "b:2"]);
        assert!(!uri.options.randomize);
    }

    #[test]
    fn unknown_options_are_an_error_that_names_them() {
        let err = FailoverUri::parse("failover:(tcp://a:1)?randomise=false").unwrap_err();
        assert_eq!(
            err,
            UriError::UnknownOption {
                name: "randomise".into()
            }
        );
        assert!(err.to_string().contains("randomise"), "{err}");
    }

    #[test]
    fn unimplemented_activemq_options_are_accepted_only_when_off() {
        for name in ["backup", "priorityBackup", "trackMessages"] {
            FailoverUri::parse(&format!("failover:(tcp://a:1)?{name}=false")).unwrap();
            let err = FailoverUri::parse(&format!("failover:(tcp://a:1)?{name}=true")).unwrap_err();
            assert_eq!(
                err,
                UriError::UnsupportedOption {
                    name: name.into(),
                    value: "true".into()
                }
            );
        }
    }

    #[test]
    fn discovery_uris_name_a_multicast_group_and_carry_failover_options() {
        let uri = FailoverUri::parse("discovery:(multicast://default)?initialReconnectDelay=100")
            .unwrap();
        assert!(uri.failover);
        assert!(uri.brokers.is_empty());
        assert_eq!(
            uri.discovery,
            Some(ferromq_discovery::MulticastConfig::default())
        );
        assert_eq!(uri.options.initial_reconnect_delay_ms, 100);

        // Agent options inside the parentheses, failover options outside, discovered.* ignored.
        let uri = FailoverUri::parse(
            "DISCOVERY:(multicast://239.1.2.3:7000?group=g&interface=127.0.0.1)\
             ?randomize=false&discovered.wireFormat.maxInactivityDuration=0",
        )
        .unwrap();
        let cfg = uri.discovery.unwrap();
        assert_eq!(cfg.port, 7000);
        assert_eq!(cfg.group, "g");
        assert_eq!(cfg.interface, Some(std::net::Ipv4Addr::LOCALHOST));
        assert!(!uri.options.randomize);

        // Without parentheses the query belongs to the agent.
        let uri = FailoverUri::parse("discovery:multicast://default?group=x").unwrap();
        assert_eq!(uri.discovery.unwrap().group, "x");
        assert_eq!(uri.options, FailoverOptions::default());
    }

    #[test]
    fn bad_discovery_uris_are_rejected_with_the_reason() {
        for (text, want) in [
            (
                "discovery:(static:(tcp://a:1))",
                UriError::UnsupportedDiscoveryAgent("static:(tcp://a:1)".into()),
            ),
            (
                "discovery:(multicast://default,multicast://default)",
                UriError::UnsupportedDiscoveryAgent(
                    "multicast://default,multicast://default".into(),
                ),
            ),
            (
                "discovery:()",
                UriError::UnsupportedDiscoveryAgent("discovery:()".into()),
            ),
            (
                "discovery:(multicast://default?grup=x)",
                UriError::Discovery(ferromq_discovery::ConfigError::UnknownOption("grup".into())),
            ),
            (
                "discovery:(multicast://default)?randomise=false",
                UriError::UnknownOption {
                    name: "randomise".into(),
                },
            ),
            (
                "discovery:(multicast://default",
                UriError::UnbalancedParentheses("discovery:(multicast://default".into()),
            ),
        ] {
            assert_eq!(FailoverUri::parse(text), Err(want), "{text}");
        }
    }

    #[test]
    fn bad_values_and_bad_shapes_are_rejected() {
        let cases = [
            "failover:(tcp://a:1)?randomize=yes",
            "failover:(tcp://a:1)?initialReconnectDelay=-5",
            "failover:(tcp://a:1)?maxReconnectAttempts=-2",
            "failover:(tcp://a:1)?reconnectDelayExponent=0.5",
            "failover:(tcp://a:1)?reconnectDelayExponent=NaN",
            "failover:(tcp://a:1)?timeout=-7",
            "failover:(tcp://a:1)?timeout",
            "failover:(tcp://a:1)?timeout=1&timeout=2",
            "failover:(tcp://a:1",
            "failover:()",
            "failover:",
            "failover:(tcp://a:1)junk",
            "failover:(tcp://a:1,tcp://nope)",
            "tcp://noport",
            "",
        ];
        for text in cases {
            assert!(FailoverUri::parse(text).is_err(), "{text:?} accepted");
        }
        assert!(matches!(
            FailoverUri::parse("failover:(tcp://a:1)?timeout=1&timeout=2"),
            Err(UriError::DuplicateOption(n)) if n == "timeout"
        ));
    }
}
