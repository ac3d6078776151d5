//! Arbitrary bytes into the STOMP decoder: no panic, no stall, and every decoded frame survives
//! an encode→decode round trip.
#![no_main]

use bytes::BytesMut;
use ferromq_protocol::stomp::{encode, Decoder, Frame, Item, Limits, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the version and the chunking, so the fuzzer explores both.
    let [version_seed, chunk_seed, rest @ ..] = data else {
        return;
    };
    let version = match version_seed % 3 {
        0 => Version::V1_0,
        1 => Version::V1_1,
        _ => Version::V1_2,
    };
    let chunk_bytes = usize::from(*chunk_seed).max(1);
    let limits = Limits {
        frame_bytes_max: 4096,
        header_count_max: 16,
        header_line_bytes_max: 256,
    };
    let mut decoder = Decoder::new(limits);
    decoder.set_version(version);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(chunk_bytes) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => {
                    assert!(buf.len() < before, "an item must consume bytes");
                    if let Item::Frame(frame) = item {
                        check_round_trip(&frame, version);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Incomplete frames are bounded by the frame limit (plus the chunk just appended).
        assert!(buf.len() <= limits.frame_bytes_max + chunk_bytes);
    }
});

/// Re-encodes `frame` and decodes it again; the only permitted differences are the encoder's
/// documented normalisations.
fn check_round_trip(frame: &Frame, version: Version) {
    let mut wire = BytesMut::new();
    encode(frame, version, &mut wire);
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(version);
    let again = match decoder.decode(&mut wire) {
        Ok(Some(Item::Frame(again))) => again,
        other => panic!("re-encoded {frame:?} decoded as {other:?}"),
    };
    assert!(wire.is_empty(), "re-encoded frame left {wire:?}");
    assert_eq!(again, canonical(frame, version));
}

/// `frame` as the encoder writes it: one content-length (added for a non-empty body), and no
/// trailing CR on values where CR is not escaped, since the CRLF-tolerant decoder strips it.
fn canonical(frame: &Frame, version: Version) -> Frame {
    let mut out = Frame::new(frame.command).with_body(frame.body.clone());
    let cr_escaped = version == Version::V1_2 && !frame.command.is_handshake();
    for (name, value) in &frame.headers {
        if name == "content-length" && out.header("content-length").is_some() {
            continue;
        }
        let value = match value.strip_suffix('\r') {
            Some(stripped) if !cr_escaped => stripped,
            _ => value,
        };
        out.push_header(name.clone(), value);
    }
    if !frame.body.is_empty() && out.header("content-length").is_none() {
        out.push_header("content-length", frame.body.len().to_string());
    }
    out
}
