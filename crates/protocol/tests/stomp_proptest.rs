//! Property tests for the STOMP codec: encode→decode round trips in every version, however the
//! bytes are chunked, and arbitrary input never panics or stalls the decoder.

use bytes::{Bytes, BytesMut};
use ferromq_protocol::stomp::{
    encode, encode_heartbeat, Command, DecodeError, Decoder, Frame, Item, Limits, Version,
};
use proptest::prelude::*;

const ALL_COMMANDS: [Command; 15] = [
    Command::Connect,
    Command::Stomp,
    Command::Connected,
    Command::Send,
    Command::Subscribe,
    Command::Unsubscribe,
    Command::Ack,
    Command::Nack,
    Command::Begin,
    Command::Commit,
    Command::Abort,
    Command::Disconnect,
    Command::Message,
    Command::Receipt,
    Command::Error,
];

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::V1_0),
        Just(Version::V1_1),
        Just(Version::V1_2)
    ]
}

/// Header text biased towards the characters that escaping and framing care about.
fn text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        6 => proptest::char::range(' ', '~'),
        1 => Just(':'),
        1 => Just('\n'),
        1 => Just('\r'),
        1 => Just('\\'),
        1 => Just('\t'),
        1 => Just('é'),
        1 => Just('日'),
    ];
    proptest::collection::vec(ch, 0..12).prop_map(|chars| chars.into_iter().collect())
}

/// A frame as an application would build it (no content-length header).
fn frame() -> impl Strategy<Value = Frame> {
    (
        proptest::sample::select(ALL_COMMANDS.to_vec()),
        proptest::collection::vec((text(), text()), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(command, headers, body)| Frame {
            command,
            headers: headers
                .into_iter()
                .filter(|(n, _)| n != "content-length")
                .collect(),
            body: Bytes::from(body),
        })
}

/// A stream element: a frame or a heart-beat.
fn element() -> impl Strategy<Value = Option<Frame>> {
    prop_oneof![1 => Just(None), 4 => frame().prop_map(Some)]
}

/// Rewrites `frame` into what `version` can carry exactly: 1.0 and handshake frames have no
/// escaping (no LF, no ':' in names) and 1.0 trims whitespace; a value ending in CR is
/// indistinguishable from a CRLF line end wherever CR is not escaped (1.0, 1.1, handshakes).
fn representable(mut frame: Frame, version: Version) -> Frame {
    let raw = version == Version::V1_0 || frame.command.is_handshake();
    let mut headers = frame.headers.to_vec();
    for (name, value) in &mut headers {
        if raw {
            name.retain(|c| c != '\n' && c != ':');
            value.retain(|c| c != '\n');
        }
        if version == Version::V1_0 {
            let ws: &[char] = &[' ', '\t', '\r'];
            *name = name.trim_matches(ws).to_owned();
            *value = value.trim_matches(ws).to_owned();
        }
        if raw || version != Version::V1_2 {
            *value = value.trim_end_matches('\r').to_owned();
        }
    }
    frame.headers = headers.into_iter().collect();
    frame
}

/// What the decoder should return for a representable `frame`: the encoder adds a
/// content-length to non-empty bodies.
fn expected(frame: &Frame) -> Item {
    let mut frame = frame.clone();
    if !frame.body.is_empty() {
        frame.push_header("content-length", frame.body.len().to_string());
    }
    Item::Frame(frame)
}

fn encode_stream(elements: &[Option<Frame>], version: Version) -> BytesMut {
    let mut out = BytesMut::new();
    for element in elements {
        match element {
            Some(frame) => encode(frame, version, &mut out),
            None => encode_heartbeat(&mut out),
        }
    }
    out
}

/// Decodes everything available, asserting that every returned item consumed bytes.
fn drain(d: &mut Decoder, buf: &mut BytesMut, items: &mut Vec<Item>) -> Result<(), DecodeError> {
    loop {
        let before = buf.len();
        match d.decode(buf)? {
            Some(item) => {
                assert!(buf.len() < before, "an item must consume bytes");
                items.push(item);
            }
            None => return Ok(()),
        }
    }
}

/// Feeds `bytes` in chunks of the given sizes (cycled), draining after each.
fn feed_chunked(
    d: &mut Decoder,
    bytes: &[u8],
    chunk_sizes: &[usize],
) -> (Result<(), DecodeError>, Vec<Item>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunk_sizes.iter().cycle();
    while !rest.is_empty() {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if let Err(e) = drain(d, &mut buf, &mut items) {
            return (Err(e), items, buf);
        }
    }
    (Ok(()), items, buf)
}

fn decoder(version: Version, limits: Limits) -> Decoder {
    let mut d = Decoder::new(limits);
    d.set_version(version);
    d
}

fn small_limits() -> Limits {
    Limits {
        frame_bytes_max: 256,
        header_count_max: 4,
        header_line_bytes_max: 32,
    }
}

proptest! {
    #[test]
    fn frames_round_trip_in_every_version(
        version in version(),
        elements in proptest::collection::vec(element(), 1..6),
    ) {
        let elements: Vec<_> = elements
            .into_iter()
            .map(|e| e.map(|f| representable(f, version)))
            .collect();
        let want: Vec<Item> = elements
            .iter()
            .map(|e| e.as_ref().map_or(Item::HeartBeat, expected))
            .collect();
        let mut buf = encode_stream(&elements, version);
        let mut items = Vec::new();
        drain(&mut decoder(version, Limits::default()), &mut buf, &mut items)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(buf.is_empty());
        prop_assert_eq!(items, want);
    }

    #[test]
    fn chunking_does_not_change_what_is_decoded(
        version in version(),
        elements in proptest::collection::vec(element(), 1..6),
        chunk_sizes in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let elements: Vec<_> = elements
            .into_iter()
            .map(|e| e.map(|f| representable(f, version)))
            .collect();
        let want: Vec<Item> = elements
            .iter()
            .map(|e| e.as_ref().map_or(Item::HeartBeat, expected))
            .collect();
        let bytes = encode_stream(&elements, version);
        let mut d = decoder(version, Limits::default());
        let (result, items, rest) = feed_chunked(&mut d, &bytes, &chunk_sizes);
        prop_assert_eq!(result, Ok(()));
        prop_assert!(rest.is_empty());
        prop_assert_eq!(items, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_stall(
        version in version(),
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        chunk_sizes in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let mut whole = decoder(version, small_limits());
        let (whole_result, whole_items, _) = feed_chunked(&mut whole, &bytes, &[bytes.len()]);
        let mut chunked = decoder(version, small_limits());
        let (result, items, rest) = feed_chunked(&mut chunked, &bytes, &chunk_sizes);
        // Chunking may only change *when* an error is seen (limits fire on partial frames),
        // never what was decoded before it.
        if result.is_ok() && whole_result.is_ok() {
            prop_assert_eq!(&items, &whole_items);
        }
        let shorter = items.len().min(whole_items.len());
        prop_assert_eq!(&items[..shorter], &whole_items[..shorter]);
        prop_assert!(rest.len() <= bytes.len());
    }

    #[test]
    fn mutated_valid_streams_never_panic_or_stall(
        version in version(),
        elements in proptest::collection::vec(element(), 1..4),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        chunk_sizes in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let mut bytes = encode_stream(&elements, version).to_vec();
        for (at, byte) in mutations {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let mut d = decoder(version, small_limits());
        let (_, items, _) = feed_chunked(&mut d, &bytes, &chunk_sizes);
        // Whatever decodes must survive its own round trip (modulo the added content-length).
        for item in items {
            if let Item::Frame(frame) = item {
                let mut out = BytesMut::new();
                encode(&frame, version, &mut out);
                let mut again = Vec::new();
                drain(&mut decoder(version, Limits::default()), &mut out, &mut again)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again.len(), 1);
                if let Some(Item::Frame(back)) = again.pop() {
                    prop_assert_eq!(back.command, frame.command);
                    prop_assert_eq!(back.body, frame.body);
                }
            }
        }
    }
}
