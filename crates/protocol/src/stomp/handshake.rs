//! The CONNECT handshake: version negotiation and heart-beat arithmetic.

use super::Version;

/// Picks the highest version both sides speak.
///
/// `accept_version` is the client's `accept-version` header (comma-separated). A CONNECT without
/// it is a STOMP 1.0 client. Returns `None` when there is no common version; the server must then
/// answer with an ERROR that lists the versions it supports.
pub fn negotiate_version(accept_version: Option<&str>, supported: &[Version]) -> Option<Version> {
    let Some(list) = accept_version else {
        return supported.contains(&Version::V1_0).then_some(Version::V1_0);
    };
    list.split(',')
        .filter_map(Version::parse)
        .filter(|v| supported.contains(v))
        .max()
}

/// A `heart-beat` header: `cx,cy` in milliseconds (0 = not wanted / cannot do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartBeat {
    /// The smallest interval at which the sender can send heart-beats (0: never).
    pub send_ms: u64,
    /// The interval at which the sender wants to receive heart-beats (0: does not want any).
    pub recv_ms: u64,
}

/// A `heart-beat` header that is not two comma-separated non-negative integers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid heart-beat header {0:?}: expected two comma-separated integers such as 10000,10000"
)]
pub struct HeartBeatError(pub String);

impl HeartBeat {
    /// Parses `cx,cy`.
    pub fn parse(value: &str) -> Result<HeartBeat, HeartBeatError> {
        let err = || HeartBeatError(value.to_owned());
        let (a, b) = value.split_once(',').ok_or_else(err)?;
        let send_ms = a.trim().parse::<u64>().map_err(|_| err())?;
        let recv_ms = b.trim().parse::<u64>().map_err(|_| err())?;
        Ok(HeartBeat { send_ms, recv_ms })
    }

    /// Formats as `cx,cy`.
    pub fn to_header(self) -> String {
        format!("{},{}", self.send_ms, self.recv_ms)
    }

    /// Given what this side offers (`local`) and what the peer asked for (`peer`), returns
    /// `(send_every_ms, expect_every_ms)` for this side: how often this side must send a
    /// heart-beat, and how often it should expect one from the peer. 0 means "none".
    ///
    /// Per the spec: this side sends every `max(local.send_ms, peer.recv_ms)` if both are
    /// non-zero, and expects the peer every `max(local.recv_ms, peer.send_ms)` if both are
    /// non-zero.
    pub fn negotiate(local: HeartBeat, peer: HeartBeat) -> (u64, u64) {
        let send = if local.send_ms == 0 || peer.recv_ms == 0 {
            0
        } else {
            local.send_ms.max(peer.recv_ms)
        };
        let expect = if local.recv_ms == 0 || peer.send_ms == 0 {
            0
        } else {
            local.recv_ms.max(peer.send_ms)
        };
        (send, expect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        let all = [Version::V1_0, Version::V1_1, Version::V1_2];
        assert_eq!(negotiate_version(None, &all), Some(Version::V1_0));
        assert_eq!(
            negotiate_version(Some("1.0,1.1,1.2"), &all),
            Some(Version::V1_2)
        );
        assert_eq!(negotiate_version(Some("1.1"), &all), Some(Version::V1_1));
        assert_eq!(negotiate_version(Some("2.0,3.1"), &all), None);
        assert_eq!(negotiate_version(Some("1.2"), &[Version::V1_0]), None);
    }

    #[test]
    fn heartbeat_parses_and_negotiates() {
        let peer = HeartBeat::parse("1000, 5000").unwrap();
        assert_eq!(
            peer,
            HeartBeat {
                send_ms: 1000,
                recv_ms: 5000
            }
        );
        assert!(HeartBeat::parse("abc").is_err());
        assert!(HeartBeat::parse("1,-1").is_err());
        let local = HeartBeat {
            send_ms: 2000,
            recv_ms: 3000,
        };
        assert_eq!(HeartBeat::negotiate(local, peer), (5000, 3000));
        assert_eq!(HeartBeat::negotiate(local, HeartBeat::default()), (0, 0));
    }
}
