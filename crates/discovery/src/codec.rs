//! The datagram format of ActiveMQ 5.x multicast discovery. Pure code, no I/O.
//!
//! One datagram is one line of text, no terminator (`MulticastDiscoveryAgent.doAdvertizeSelf`):
//!
//! ```text
//! <group>.ActiveMQ-4.alive.%<brokerName>%<serviceUri>
//! <group>.ActiveMQ-4.dead.%<brokerName>%<serviceUri>
//! ```
//!
//! for example `default.ActiveMQ-4.alive.%localhost%tcp://host:61616`. ActiveMQ always writes
//! the literal `localhost` as broker name and identifies a service only by its URI; so does the
//! [`crate::Membership`] table here. The receiver keeps at most 8192 bytes of a datagram
//! ([`DATAGRAM_BYTES_MAX`], Java's `BUFF_SIZE`).
//!
//! The decoder is stricter than Java's, which takes anything after the group prefix that is not
//! `alive.` for `dead.` and finds the broker name between the first two `%` wherever they are:
//! here the kind must be `alive.` or `dead.`, the `%name%` must follow it immediately, and the
//! service URI must not be empty. Everything ActiveMQ sends passes.

/// Largest datagram accepted, in bytes (ActiveMQ's receive buffer, `BUFF_SIZE`).
pub const DATAGRAM_BYTES_MAX: usize = 8192;

/// What follows the group name (ActiveMQ's `TYPE_SUFFIX`, after a `.`).
const TYPE_MARKER: &str = ".ActiveMQ-4.";
const ALIVE: &str = "alive.";
const DEAD: &str = "dead.";
const DELIMITER: char = '%';

/// Whether an advert announces a service or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdvertKind {
    /// `alive.`: the service is up; repeated every keep-alive interval.
    Alive,
    /// `dead.`: the service is shutting down; sent once by a clean stop.
    Dead,
}

/// One decoded discovery datagram.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advert {
    /// The discovery group (`group` option).
    pub group: String,
    /// Alive or dead.
    pub kind: AdvertKind,
    /// The broker name between the `%` signs (`localhost` from ActiveMQ).
    pub broker_name: String,
    /// The advertised service, for example `tcp://host:61616`.
    pub service_uri: String,
}

/// Why an advert cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The group name is empty.
    #[error("empty discovery group name")]
    EmptyGroup,
    /// The broker name contains `%`, which would end it early for every receiver.
    #[error("broker name {0:?} contains '%'")]
    BrokerNameHasDelimiter(String),
    /// The service URI is empty.
    #[error("empty service URI")]
    EmptyService,
    /// The datagram would be longer than receivers accept.
    #[error("discovery datagram of {bytes} bytes exceeds the {DATAGRAM_BYTES_MAX}-byte limit")]
    TooLarge {
        /// The encoded length.
        bytes: usize,
    },
}

/// Why a datagram is not an advert for us. The listener counts and drops these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`DATAGRAM_BYTES_MAX`].
    #[error("datagram of {bytes} bytes exceeds the {DATAGRAM_BYTES_MAX}-byte limit")]
    TooLarge {
        /// The length received (at least).
        bytes: usize,
    },
    /// Not UTF-8 text.
    #[error("datagram is not UTF-8")]
    NotUtf8,
    /// No `<group>.ActiveMQ-4.` prefix: some other traffic on the address.
    #[error("not an ActiveMQ discovery datagram")]
    NotActiveMq,
    /// An ActiveMQ advert for another group.
    #[error("advert for another discovery group")]
    WrongGroup,
    /// The prefix is right but the rest is not `alive.%name%uri` or `dead.%name%uri`.
    #[error("malformed discovery advert")]
    Malformed,
}

/// Encodes an `alive` advert: `<group>.ActiveMQ-4.alive.%<broker_name>%<service_uri>`.
pub fn encode_alive(
    group: &str,
    broker_name: &str,
    service_uri: &str,
) -> Result<Vec<u8>, EncodeError> {
    encode(group, AdvertKind::Alive, broker_name, service_uri)
}

/// Encodes a `dead` advert: `<group>.ActiveMQ-4.dead.%<broker_name>%<service_uri>`.
pub fn encode_dead(
    group: &str,
    broker_name: &str,
    service_uri: &str,
) -> Result<Vec<u8>, EncodeError> {
    encode(group, AdvertKind::Dead, broker_name, service_uri)
}

/// Encodes an advert of either kind.
pub fn encode(
    group: &str,
    kind: AdvertKind,
    broker_name: &str,
    service_uri: &str,
) -> Result<Vec<u8>, EncodeError> {
    if group.is_empty() {
        return Err(EncodeError::EmptyGroup);
    }
    if broker_name.contains(DELIMITER) {
        return Err(EncodeError::BrokerNameHasDelimiter(broker_name.to_owned()));
    }
    if service_uri.is_empty() {
        return Err(EncodeError::EmptyService);
    }
    let kind = match kind {
        AdvertKind::Alive => ALIVE,
        AdvertKind::Dead => DEAD,
    };
    let bytes =
        group.len() + TYPE_MARKER.len() + kind.len() + 2 + broker_name.len() + service_uri.len();
    if bytes > DATAGRAM_BYTES_MAX {
        return Err(EncodeError::TooLarge { bytes });
    }
    let mut out = Vec::with_capacity(bytes);
    for part in [group, TYPE_MARKER, kind, "%", broker_name, "%", service_uri] {
        out.extend_from_slice(part.as_bytes());
    }
    debug_assert_eq!(out.len(), bytes);
    Ok(out)
}

/// Decodes a datagram of any group; the group is the text before the first `.ActiveMQ-4.`.
pub fn decode(datagram: &[u8]) -> Result<Advert, DecodeError> {
    let text = as_text(datagram)?;
    let at = text.find(TYPE_MARKER).ok_or(DecodeError::NotActiveMq)?;
    if at == 0 {
        return Err(DecodeError::NotActiveMq);
    }
    decode_rest(&text[..at], &text[at + TYPE_MARKER.len()..])
}

/// Decodes a datagram for `group` only, as ActiveMQ matches it (the text starts with
/// `<group>.ActiveMQ-4.`); an advert of another group is [`DecodeError::WrongGroup`].
pub fn decode_for_group(group: &str, datagram: &[u8]) -> Result<Advert, DecodeError> {
    let text = as_text(datagram)?;
    match text
        .strip_prefix(group)
        .and_then(|rest| rest.strip_prefix(TYPE_MARKER))
    {
        Some(rest) if !group.is_empty() => decode_rest(group, rest),
        _ if text.contains(TYPE_MARKER) => Err(DecodeError::WrongGroup),
        _ => Err(DecodeError::NotActiveMq),
    }
}

fn as_text(datagram: &[u8]) -> Result<&str, DecodeError> {
    if datagram.len() > DATAGRAM_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            bytes: datagram.len(),
        });
    }
    std::str::from_utf8(datagram).map_err(|_| DecodeError::NotUtf8)
}

/// `rest` is what follows `<group>.ActiveMQ-4.`.
fn decode_rest(group: &str, rest: &str) -> Result<Advert, DecodeError> {
    let (kind, rest) = if let Some(r) = rest.strip_prefix(ALIVE) {
        (AdvertKind::Alive, r)
    } else if let Some(r) = rest.strip_prefix(DEAD) {
        (AdvertKind::Dead, r)
    } else {
        return Err(DecodeError::Malformed);
    };
    let rest = rest.strip_prefix(DELIMITER).ok_or(DecodeError::Malformed)?;
    let (broker_name, service_uri) = rest.split_once(DELIMITER).ok_or(DecodeError::Malformed)?;
    if service_uri.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok(Advert {
        group: group.to_owned(),
        kind,
        broker_name: broker_name.to_owned(),
        service_uri: service_uri.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alive_and_dead_are_byte_for_byte_what_activemq_sends() {
        assert_eq!(
            encode_alive("default", "localhost", "tcp://host:61616").unwrap(),
            b"default.ActiveMQ-4.alive.%localhost%tcp://host:61616"
        );
        assert_eq!(
            encode_dead("default", "localhost", "tcp://host:61616").unwrap(),
            b"default.ActiveMQ-4.dead.%localhost%tcp://host:61616"
        );
    }

    #[test]
    fn activemq_datagrams_decode() {
        let a = decode(b"default.ActiveMQ-4.alive.%localhost%tcp://h:61616?x=1").unwrap();
        assert_eq!(
            a,
            Advert {
                group: "default".into(),
                kind: AdvertKind::Alive,
                broker_name: "localhost".into(),
                service_uri: "tcp://h:61616?x=1".into(),
            }
        );
        let d = decode_for_group("g.1", b"g.1.ActiveMQ-4.dead.%b%stomp://h:1").unwrap();
        assert_eq!(d.kind, AdvertKind::Dead);
        assert_eq!(d.group, "g.1");
        assert_eq!(d.broker_name, "b");
        // A '%' inside the URI belongs to the URI (percent-encoding).
        let a = decode(b"default.ActiveMQ-4.alive.%%tcp://h:1?q=a%20b").unwrap();
        assert_eq!(a.broker_name, "");
        assert_eq!(a.service_uri, "tcp://h:1?q=a%20b");
    }

    #[test]
    fn other_groups_other_traffic_and_junk_are_rejected() {
        let alive = encode_alive("default", "localhost", "tcp://h:1").unwrap();
        assert_eq!(
            decode_for_group("other", &alive),
            Err(DecodeError::WrongGroup)
        );
        // A group that is a prefix of another is not that group.
        assert_eq!(
            decode_for_group("def", &alive),
            Err(DecodeError::WrongGroup)
        );
        assert_eq!(
            decode_for_group("default", b"hello"),
            Err(DecodeError::NotActiveMq)
        );
        assert_eq!(
            decode(b".ActiveMQ-4.alive.%a%b"),
            Err(DecodeError::NotActiveMq)
        );
        assert_eq!(decode(&[0xff, 0xfe]), Err(DecodeError::NotUtf8));
        for junk in [
            &b"default.ActiveMQ-4.alivex%a%tcp://h:1"[..],
            b"default.ActiveMQ-4.alive.a%tcp://h:1",
            b"default.ActiveMQ-4.alive.%a",
            b"default.ActiveMQ-4.alive.%a%",
            b"default.ActiveMQ-4.",
            b"default.ActiveMQ-4.gone.%a%tcp://h:1",
        ] {
            assert_eq!(
                decode(junk),
                Err(DecodeError::Malformed),
                "{:?}",
                String::from_utf8_lossy(junk)
            );
        }
    }

    #[test]
    fn the_size_limit_is_8192_bytes_both_ways() {
        let fixed = "default.ActiveMQ-4.alive.%b%".len();
        let fits = "x".repeat(DATAGRAM_BYTES_MAX - fixed);
        let datagram = encode_alive("default", "b", &fits).unwrap();
        assert_eq!(datagram.len(), DATAGRAM_BYTES_MAX);
        assert!(decode(&datagram).is_ok());
        let over = "x".repeat(DATAGRAM_BYTES_MAX - fixed + 1);
        assert_eq!(
            encode_alive("default", "b", &over),
            Err(EncodeError::TooLarge {
                bytes: DATAGRAM_BYTES_MAX + 1
            })
        );
        let mut big = datagram.clone();
        big.push(b'x');
        assert_eq!(
            decode(&big),
            Err(DecodeError::TooLarge {
                bytes: DATAGRAM_BYTES_MAX + 1
            })
        );
    }

    #[test]
    fn unencodable_adverts_are_refused() {
        assert_eq!(
            encode_alive("", "b", "tcp://h:1"),
            Err(EncodeError::EmptyGroup)
        );
        assert_eq!(
            encode_alive("g", "a%b", "tcp://h:1"),
            Err(EncodeError::BrokerNameHasDelimiter("a%b".into()))
        );
        assert_eq!(encode_dead("g", "b", ""), Err(EncodeError::EmptyService));
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_advert_back(
            group in "[a-zA-Z0-9_.-]{1,40}",
            alive in any::<bool>(),
            broker_name in "[^%]{0,40}",
            service_uri in ".{1,200}",
        ) {
            let kind = if alive { AdvertKind::Alive } else { AdvertKind::Dead };
            let datagram = encode(&group, kind, &broker_name, &service_uri).unwrap();
            let want = Advert { group: group.clone(), kind, broker_name, service_uri };
            prop_assert_eq!(decode_for_group(&group, &datagram), Ok(want.clone()));
            // The group-less decoder agrees unless the group itself contains the marker.
            if !group.contains(".ActiveMQ-4") {
                prop_assert_eq!(decode(&datagram), Ok(want));
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let _ = decode_for_group("default", &bytes);
        }
    }
}
