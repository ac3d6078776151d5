//! The demand feed: how a broker tells the bridges connected to it where its consumers are.
//!
//! A bridge subscribes to [`DEMAND_DESTINATION`]; the broker answers at once with a MESSAGE
//! holding its whole current demand, and with a new one whenever it changes (coalesced). A
//! whole snapshot rather than add/remove events: a bridge that missed one, or reconnects,
//! needs no history to be right, and the set is bounded by the destinations in use.
//!
//! Body: one line per demand, `<destination key>\t<path>`, where the key is
//! `queue://NAME` or `topic://NAME` and the path lists (comma-separated) the brokers the demand
//! comes through — empty for a consumer on the broker itself. The MESSAGE's
//! [`BROKER_NAME_HEADER`] names the broker.

use ferromq_broker::{Demand, Destination, DestinationKind, NetworkRoute};

/// The pseudo-destination of the demand feed. Not a queue or topic: nothing can be sent to it.
pub const DEMAND_DESTINATION: &str = "/ferromq/network-demand";
/// The header of a demand MESSAGE that names the broker it describes.
pub const BROKER_NAME_HEADER: &str = "broker-name";
/// Most demand lines a bridge accepts from one snapshot (a bound on what a peer can make it
/// hold); the broker's own `max_destinations` keeps real snapshots far below.
pub const DEMAND_LINES_MAX: usize = 100_000;

/// Renders a snapshot.
pub fn encode(demand: &[Demand]) -> String {
    let mut out = String::new();
    for d in demand {
        out.push_str(&d.destination.key());
        out.push('\t');
        out.push_str(&d.path.join(","));
        out.push('\n');
    }
    out
}

/// Parses a snapshot. Lines for temporary destinations or of another shape are errors: a peer
/// that sends them is not a ferromq broker of this version.
pub fn decode(body: &[u8]) -> Result<Vec<Demand>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "demand is not UTF-8".to_string())?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if out.len() >= DEMAND_LINES_MAX {
            return Err(format!("demand has more than {DEMAND_LINES_MAX} lines"));
        }
        let (key, path) = line
            .split_once('\t')
            .ok_or_else(|| format!("demand line without a tab: {line:?}"))?;
        let destination = Destination::from_key(key)
            .filter(|d| matches!(d.kind, DestinationKind::Queue | DestinationKind::Topic))
            .filter(|d| !d.name.is_empty())
            .ok_or_else(|| format!("demand line with a bad destination: {line:?}"))?;
        let path = path
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        out.push(Demand { destination, path });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let demand = vec![
            Demand {
                destination: Destination::queue("orders"),
                path: vec![],
            },
            Demand {
                destination: Destination::topic("prices.>"),
                path: vec!["b".into(), "c".into()],
            },
        ];
        let text = encode(&demand);
        assert_eq!(text, "queue://orders\t\ntopic://prices.>\tb,c\n");
        assert_eq!(decode(text.as_bytes()).unwrap(), demand);
        assert_eq!(decode(b"").unwrap(), vec![]);
    }

    #[test]
    fn bad_lines_are_errors() {
        for bad in [
            &b"queue://orders"[..],
            b"nowhere://x\t",
            b"queue://\t",
            b"temp-queue://x\t",
            b"\xff\t",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}

/// SUBSCRIBE header that makes a subscription a network consumer (a duplex bridge pulling):
/// the name of the broker it forwards to.
pub const NETWORK_TARGET_HEADER: &str = "ferromq.network.target";
/// SUBSCRIBE header: the network consumer's demand path, comma-separated, target first.
pub const NETWORK_DEMAND_PATH_HEADER: &str = "ferromq.network.demandPath";
/// SUBSCRIBE header: the route's `message_ttl` (`-1` unlimited).
pub const NETWORK_MESSAGE_TTL_HEADER: &str = "ferromq.network.messageTtl";
/// SUBSCRIBE header: the route's `max_replays`.
pub const NETWORK_MAX_REPLAYS_HEADER: &str = "ferromq.network.maxReplays";
/// SUBSCRIBE header: the route's `pin_ms` (at most [`PIN_MS_MAX`]).
pub const NETWORK_PIN_HEADER: &str = "ferromq.network.pinMs";
/// The longest a network consumer may keep messages for its target (one hour): a pin is a
/// wait for a failover, not a place to park messages.
pub const PIN_MS_MAX: u64 = 3_600_000;

/// The SUBSCRIBE headers that describe `route`.
pub fn route_headers(route: &NetworkRoute) -> Vec<(&'static str, String)> {
    let ttl = if route.message_ttl == u32::MAX {
        "-1".to_string()
    } else {
        route.message_ttl.to_string()
    };
    vec![
        (NETWORK_TARGET_HEADER, route.target.clone()),
        (NETWORK_DEMAND_PATH_HEADER, route.demand_path.join(",")),
        (NETWORK_MESSAGE_TTL_HEADER, ttl),
        (NETWORK_MAX_REPLAYS_HEADER, route.max_replays.to_string()),
        (NETWORK_PIN_HEADER, route.pin_ms.to_string()),
    ]
}

/// The network route a SUBSCRIBE asks for, if any (`header` looks a header up).
pub fn route_from_headers<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<NetworkRoute>, String> {
    let Some(target) = header(NETWORK_TARGET_HEADER) else {
        return Ok(None);
    };
    if target.is_empty() || target.contains(',') {
        return Err(format!("Invalid {NETWORK_TARGET_HEADER}: {target:?}"));
    }
    let demand_path: Vec<String> = header(NETWORK_DEMAND_PATH_HEADER)
        .unwrap_or(target)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if demand_path.first().map(String::as_str) != Some(target) {
        return Err(format!(
            "{NETWORK_DEMAND_PATH_HEADER} must start with the target {target:?}"
        ));
    }
    let message_ttl = match header(NETWORK_MESSAGE_TTL_HEADER).unwrap_or("1").trim() {
        "-1" => u32::MAX,
        v => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("Invalid {NETWORK_MESSAGE_TTL_HEADER}: {v:?}"))?,
    };
    let max_replays = match header(NETWORK_MAX_REPLAYS_HEADER) {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("Invalid {NETWORK_MAX_REPLAYS_HEADER}: {v:?}"))?,
    };
    let pin_ms = match header(NETWORK_PIN_HEADER) {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms <= PIN_MS_MAX)
            .ok_or_else(|| format!("Invalid {NETWORK_PIN_HEADER}: {v:?}"))?,
    };
    Ok(Some(NetworkRoute {
        target: target.to_string(),
        demand_path,
        message_ttl,
        max_replays,
        pin_ms,
    }))
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn routes_round_trip_through_headers() {
        for ttl in [1, 3, u32::MAX] {
            let r = NetworkRoute {
                target: "a".into(),
                demand_path: vec!["a".into(), "c".into()],
                message_ttl: ttl,
                max_replays: 2,
                pin_ms: 30_000,
            };
            let hs = route_headers(&r);
            let got =
                route_from_headers(|n| hs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str()));
            assert_eq!(got, Ok(Some(r)));
        }
        assert_eq!(route_from_headers(|_| None), Ok(None));
        let bad = |k: &'static str, v: &'static str| {
            route_from_headers(move |n| match n {
                NETWORK_TARGET_HEADER => Some("a"),
                _ if n == k => Some(v),
                _ => None,
            })
        };
        assert!(bad(NETWORK_MESSAGE_TTL_HEADER, "0").is_err());
        assert!(bad(NETWORK_MESSAGE_TTL_HEADER, "x").is_err());
        assert!(bad(NETWORK_DEMAND_PATH_HEADER, "b,a").is_err());
        assert!(bad(NETWORK_MAX_REPLAYS_HEADER, "-1").is_err());
        assert!(bad(NETWORK_PIN_HEADER, "soon").is_err());
        assert!(bad(NETWORK_PIN_HEADER, "3600001").is_err());
    }
}
