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

use ferromq_broker::{Demand, Destination, DestinationKind};

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
