//! STOMP frame encoder.
//!
//! The encoder guarantees that what it writes frames unambiguously, whatever the [`Frame`]
//! holds: a relay forwards headers it got from one peer to another, so a header value must never
//! be able to start a new header line or end the frame early.

use bytes::{BufMut, BytesMut};

use super::decode::parse_content_length;
use super::{Command, Frame, Version};

/// What a peer will make of a byte in a header, and so how the encoder must write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escaping {
    /// 1.0, and CONNECT/STOMP/CONNECTED in every version: bytes go out raw.
    Raw,
    /// 1.1: `\\`, `\n`, `\c`. A CR goes out raw, as 1.1 defines no escape for it.
    V1_1,
    /// 1.2: 1.1 plus `\r`.
    V1_2,
}

impl Escaping {
    fn for_frame(command: Command, version: Version) -> Escaping {
        match version {
            _ if command.is_handshake() => Escaping::Raw,
            Version::V1_0 => Escaping::Raw,
            Version::V1_1 => Escaping::V1_1,
            Version::V1_2 => Escaping::V1_2,
        }
    }
}

/// Appends the wire form of `frame` to `out`, escaping headers as `version` requires (never on
/// CONNECT/STOMP/CONNECTED). Adds a `content-length` header when the body is non-empty and the
/// frame has none, so bodies containing NUL bytes survive.
///
/// The output always frames exactly the frame's body:
/// - the first `content-length` header is written with the real body length if its value is
///   not already that number, and later `content-length` headers are dropped (peers disagree on
///   whether the first or the last one counts; two different values would desynchronise them);
/// - bytes that the context cannot represent are replaced, as RFC 9110 allows for HTTP fields:
///   NUL always, and LF where there is no escaping, become a space; a `:` in a header name
///   where there is no escaping becomes `_`.
///
/// A header value that ends in CR cannot be represented in 1.1 or unescaped contexts: decoders
/// that accept CRLF line endings (this one included) strip it.
pub fn encode(frame: &Frame, version: Version, out: &mut BytesMut) {
    let escaping = Escaping::for_frame(frame.command, version);
    let header_bytes: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    // Headers may grow by escaping; this is a hint, not a bound.
    out.reserve(frame.command.as_str().len() + header_bytes + frame.body.len() + 32);

    out.put_slice(frame.command.as_str().as_bytes());
    out.put_u8(b'\n');
    let body_bytes = frame.body.len();
    let mut content_length_written = false;
    for (name, value) in &frame.headers {
        if name == "content-length" {
            if content_length_written {
                continue;
            }
            content_length_written = true;
            put_text(out, name, escaping, Part::Name);
            out.put_u8(b':');
            if parse_content_length(value) == Ok(body_bytes) {
                // Keep the sender's spelling (e.g. leading zeros) so relayed frames are unchanged.
                put_text(out, value, escaping, Part::Value);
            } else {
                out.put_slice(body_bytes.to_string().as_bytes());
            }
            out.put_u8(b'\n');
            continue;
        }
        put_text(out, name, escaping, Part::Name);
        out.put_u8(b':');
        put_text(out, value, escaping, Part::Value);
        out.put_u8(b'\n');
    }
    if !content_length_written && body_bytes > 0 {
        out.put_slice(b"content-length:");
        out.put_slice(body_bytes.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
}

/// Writes a frame piece by piece straight into an output buffer, without building a
/// [`Frame`]: the connector renders each delivery this way, and may splice in a header block
/// encoded once ([`HeaderWriter`]) and shared by every delivery of the same message.
///
/// The same guarantees as [`encode`]: headers are escaped (or sanitised) for the version, and
/// the body is framed by a `content-length` the encoder writes itself — a `content-length`
/// passed as a header is dropped.
#[derive(Debug)]
pub struct FrameEncoder<'a> {
    headers: HeaderWriter<'a>,
}

impl<'a> FrameEncoder<'a> {
    /// Starts a frame: writes the command line.
    pub fn new(out: &'a mut BytesMut, command: Command, version: Version) -> FrameEncoder<'a> {
        out.put_slice(command.as_str().as_bytes());
        out.put_u8(b'\n');
        FrameEncoder {
            headers: HeaderWriter::new(out, command, version),
        }
    }

    /// Appends one header (escaped for the version; `content-length` is ignored).
    pub fn header(&mut self, name: &str, value: &str) {
        self.headers.header(name, value);
    }

    /// Appends a header whose value is a number.
    pub fn header_u64(&mut self, name: &str, value: u64) {
        self.headers.header_u64(name, value);
    }

    /// The frame's header writer, for code that writes headers either into a frame or into a
    /// block to be shared.
    pub fn header_writer(&mut self) -> &mut HeaderWriter<'a> {
        &mut self.headers
    }

    /// Appends a block written by a [`HeaderWriter`] for the same command and version.
    pub fn header_block(&mut self, block: &[u8]) {
        self.headers.out.put_slice(block);
    }

    /// Ends the frame: `content-length` (for a non-empty body), the blank line, the body, NUL.
    pub fn finish(self, body: &[u8]) {
        let out = self.headers.out;
        out.reserve(body.len() + 40);
        if !body.is_empty() {
            out.put_slice(b"content-length:");
            put_u64(out, body.len() as u64);
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
        out.put_slice(body);
        out.put_u8(0);
    }
}

/// Encodes header lines alone, escaped as a frame of `command` in `version` needs them, for
/// [`FrameEncoder::header_block`]. A `content-length` header is ignored (the frame encoder
/// writes the real one).
#[derive(Debug)]
pub struct HeaderWriter<'a> {
    out: &'a mut BytesMut,
    escaping: Escaping,
}

impl<'a> HeaderWriter<'a> {
    /// Header lines for a frame of `command` in `version`, appended to `out`.
    pub fn new(out: &'a mut BytesMut, command: Command, version: Version) -> HeaderWriter<'a> {
        HeaderWriter {
            out,
            escaping: Escaping::for_frame(command, version),
        }
    }

    /// Appends one header line.
    pub fn header(&mut self, name: &str, value: &str) {
        if name == "content-length" {
            return;
        }
        self.out.reserve(name.len() + value.len() + 2);
        put_text(self.out, name, self.escaping, Part::Name);
        self.out.put_u8(b':');
        put_text(self.out, value, self.escaping, Part::Value);
        self.out.put_u8(b'\n');
    }

    /// Appends a header whose value is a number.
    pub fn header_u64(&mut self, name: &str, value: u64) {
        if name == "content-length" {
            return;
        }
        put_text(self.out, name, self.escaping, Part::Name);
        self.out.put_u8(b':');
        put_u64(self.out, value);
        self.out.put_u8(b'\n');
    }
}

/// Appends `v` in decimal without allocating.
fn put_u64(out: &mut BytesMut, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Appends one heart-beat (a single LF) to `out`.
pub fn encode_heartbeat(out: &mut BytesMut) {
    out.extend_from_slice(b"\n");
}

/// Which half of a header a string is; a raw `:` is harmless only in a value, because decoders
/// split on the first colon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Name,
    Value,
}

/// Appends `text` escaped (or sanitised) for `escaping`.
fn put_text(out: &mut BytesMut, text: &str, escaping: Escaping, part: Part) {
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let replacement: &[u8] = match (escaping, b) {
            (_, 0) => b" ",
            (Escaping::Raw, b'\n') => b" ",
            (Escaping::Raw, b':') if part == Part::Name => b"_",
            (Escaping::Raw, _) => continue,
            (_, b'\\') => b"\\\\",
            (_, b'\n') => b"\\n",
            (_, b':') => b"\\c",
            (Escaping::V1_2, b'\r') => b"\\r",
            _ => continue,
        };
        out.put_slice(&bytes[run_start..i]);
        out.put_slice(replacement);
        run_start = i + 1;
    }
    out.put_slice(&bytes[run_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::{Decoder, Item, Limits};
    use bytes::Bytes;

    fn wire(frame: &Frame, version: Version) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(frame, version, &mut out);
        out.to_vec()
    }

    fn decode_one(bytes: &[u8], version: Version) -> Frame {
        let mut d = Decoder::new(Limits::default());
        d.set_version(version);
        let mut buf = BytesMut::from(bytes);
        let item = d.decode(&mut buf);
        assert!(buf.is_empty(), "left over: {buf:?}");
        match item {
            Ok(Some(Item::Frame(f))) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The piecewise encoder writes what `encode` writes for the same frame (no
    /// `content-length` header given), splicing a header block included.
    #[test]
    fn the_frame_encoder_matches_encode() {
        for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
            for body in [&b""[..], b"a\0b", b"hello"] {
                let frame = Frame::new(Command::Message)
                    .with_header("subscription", "s:1")
                    .with_header("ack", "7")
                    .with_header("k\\n", "v\nw\rx:y")
                    .with_header("n", "18446744073709551615")
                    .with_body(Bytes::copy_from_slice(body));
                let mut block = BytesMut::new();
                let mut hw = HeaderWriter::new(&mut block, Command::Message, version);
                hw.header("k\\n", "v\nw\rx:y");
                hw.header_u64("n", u64::MAX);
                hw.header("content-length", "999");
                let mut out = BytesMut::new();
                let mut fe = FrameEncoder::new(&mut out, Command::Message, version);
                fe.header("subscription", "s:1");
                fe.header_u64("ack", 7);
                fe.header_block(&block);
                fe.finish(body);
                assert_eq!(out.to_vec(), wire(&frame, version), "{version:?} {body:?}");
            }
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for v in [0, 1, 9, 10, 99, 100, 4_294_967_296, u64::MAX] {
            let mut out = BytesMut::new();
            put_u64(&mut out, v);
            assert_eq!(out.to_vec(), v.to_string().into_bytes());
        }
    }

    #[test]
    fn writes_command_headers_blank_line_body_and_nul_only() {
        let frame = Frame::new(Command::Send)
            .with_header("destination", "/queue/a")
            .with_body("hi");
        assert_eq!(
            wire(&frame, Version::V1_2),
            b"SEND\ndestination:/queue/a\ncontent-length:2\n\nhi\0"
        );
        assert_eq!(
            wire(&Frame::new(Command::Disconnect), Version::V1_2),
            b"DISCONNECT\n\n\0"
        );
    }

    #[test]
    fn escaping_follows_the_version() {
        let frame = Frame::new(Command::Message).with_header("a:b", "x\\y\nz\rw");
        assert_eq!(
            wire(&frame, Version::V1_2),
            b"MESSAGE\na\\cb:x\\\\y\\nz\\rw\n\n\0"
        );
        assert_eq!(
            wire(&frame, Version::V1_1),
            b"MESSAGE\na\\cb:x\\\\y\\nz\rw\n\n\0",
            "1.1 has no \\r escape"
        );
        for version in [Version::V1_1, Version::V1_2] {
            assert_eq!(decode_one(&wire(&frame, version), version), frame);
        }
    }

    #[test]
    fn handshake_frames_are_not_escaped_even_in_1_2() {
        let connect = Frame::new(Command::Connect)
            .with_header("login", "bob")
            .with_header("passcode", "a\\nb:c");
        let bytes = wire(&connect, Version::V1_2);
        assert_eq!(bytes, b"CONNECT\nlogin:bob\npasscode:a\\nb:c\n\n\0");
        assert_eq!(decode_one(&bytes, Version::V1_2), connect);
        let connected = Frame::new(Command::Connected).with_header("server", "x\\y");
        assert_eq!(
            wire(&connected, Version::V1_2),
            b"CONNECTED\nserver:x\\y\n\n\0"
        );
    }

    #[test]
    fn version_1_0_writes_backslashes_raw() {
        let frame = Frame::new(Command::Send).with_header("k", "a\\b:c");
        let bytes = wire(&frame, Version::V1_0);
        assert_eq!(bytes, b"SEND\nk:a\\b:c\n\n\0");
        assert_eq!(decode_one(&bytes, Version::V1_0), frame);
    }

    #[test]
    fn unrepresentable_bytes_cannot_inject_headers_or_end_the_frame() {
        let frame = Frame::new(Command::Send)
            .with_header("x:destination", "a\ndestination:/evil")
            .with_header("n", "a\0b");
        let bytes = wire(&frame, Version::V1_0);
        assert_eq!(
            bytes,
            b"SEND\nx_destination:a destination:/evil\nn:a b\n\n\0"
        );
        let decoded = decode_one(&bytes, Version::V1_0);
        assert_eq!(decoded.header("destination"), None);
        assert_eq!(decoded.headers.len(), 2);
        let escaped = wire(&frame, Version::V1_2);
        assert_eq!(decode_one(&escaped, Version::V1_2).header("n"), Some("a b"));
    }

    #[test]
    fn content_length_is_added_only_for_non_empty_bodies() {
        let frame = Frame::new(Command::Send).with_body(Bytes::from_static(b"a\0b"));
        let bytes = wire(&frame, Version::V1_2);
        assert_eq!(bytes, b"SEND\ncontent-length:3\n\na\0b\0");
        assert_eq!(decode_one(&bytes, Version::V1_2).body, frame.body);
        assert_eq!(
            wire(&Frame::new(Command::Send), Version::V1_2),
            b"SEND\n\n\0"
        );
    }

    #[test]
    fn content_length_always_matches_the_body() {
        let wrong = Frame::new(Command::Send)
            .with_header("content-length", "1")
            .with_header("x", "y")
            .with_header("content-length", "99")
            .with_body("abcd");
        assert_eq!(
            wire(&wrong, Version::V1_2),
            b"SEND\ncontent-length:4\nx:y\n\nabcd\0"
        );
        let padded = Frame::new(Command::Send)
            .with_header("content-length", "004")
            .with_body("abcd");
        assert_eq!(
            wire(&padded, Version::V1_2),
            b"SEND\ncontent-length:004\n\nabcd\0",
            "a correct value keeps its spelling"
        );
        let stale = Frame::new(Command::Send).with_header("content-length", "5");
        assert_eq!(wire(&stale, Version::V1_2), b"SEND\ncontent-length:0\n\n\0");
    }

    #[test]
    fn heartbeat_is_one_lf() {
        let mut out = BytesMut::new();
        encode_heartbeat(&mut out);
        assert_eq!(&out[..], b"\n");
    }
}
