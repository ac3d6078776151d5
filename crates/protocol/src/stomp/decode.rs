//! Incremental STOMP frame decoder over a `BytesMut`.
//!
//! The decoder is a small state machine over the caller's read buffer. It removes nothing from
//! the buffer until a whole item is there, but it remembers how far it has already looked and
//! which headers it has already parsed. A big body arriving in many small reads therefore costs
//! O(n) in total, not O(n²): every byte is examined once by the line/NUL scanner.

use std::borrow::Cow;

use bytes::{Buf, Bytes, BytesMut};

use super::{Command, Frame, Headers, Version};

const LF: u8 = b'\n';
const CR: u8 = b'\r';
const NUL: u8 = 0;

/// Longest command name (`UNSUBSCRIBE`). An unterminated command line longer than this is
/// rejected before its LF arrives, so garbage is refused after a dozen bytes, not at the frame
/// limit.
const COMMAND_BYTES_MAX: usize = 11;

/// How much of an offending line an error quotes: enough to diagnose, too little for a peer to
/// make us log megabytes.
const QUOTE_BYTES_MAX: usize = 64;

/// Limits that bound what one peer can make the decoder hold.
///
/// The decoder fails as soon as the bytes buffered for one incomplete frame exceed
/// `frame_bytes_max`, so a caller that reads into the buffer and then decodes never holds more
/// than `frame_bytes_max` plus one read for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame on the wire, command line + headers + body + the terminating NUL, in bytes.
    /// Heart-beat EOLs between frames do not count.
    pub frame_bytes_max: usize,
    /// Most headers one frame may carry.
    pub header_count_max: usize,
    /// Longest single header line (name, colon and value, escaped, without its EOL), in bytes.
    pub header_line_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes_max: 16 * 1024 * 1024,
            header_count_max: 1000,
            header_line_bytes_max: 10 * 1024,
        }
    }
}

/// What the decoder found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete frame.
    Frame(Frame),
    /// A bare EOL between frames: a heart-beat.
    HeartBeat,
}

/// Why a frame could not be decoded. After any of these the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The command line is not a STOMP command.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// The frame exceeds `frame_bytes_max`.
    #[error("frame exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The frame has more than `header_count_max` headers.
    #[error("frame has more than {limit} headers")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// A header line exceeds `header_line_bytes_max`.
    #[error("header line exceeds the limit of {limit} bytes")]
    HeaderLineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A header line has no colon (or contains a NUL byte).
    #[error("malformed header line {0:?}: no ':'")]
    MalformedHeader(String),
    /// An escape sequence that the version does not define (e.g. `\t`).
    #[error("invalid escape sequence in header {0:?}")]
    InvalidEscape(String),
    /// A command line or header that is not UTF-8.
    #[error("command or header is not valid UTF-8")]
    InvalidUtf8,
    /// The `content-length` header is not a non-negative integer.
    #[error("invalid content-length {0:?}")]
    InvalidContentLength(String),
    /// The byte after a `content-length` body is not NUL.
    #[error("frame body is not terminated by NUL after content-length bytes")]
    MissingNul,
}

/// Headers and bytes of header text a new frame's [`Headers`] has room for before it grows.
const HEADERS_PRESIZE: usize = 16;
const HEADER_TEXT_PRESIZE: usize = 256;

/// A frame whose command and some headers have been parsed. Offsets in [`State`] are relative to
/// the front of the caller's buffer, where this frame starts.
#[derive(Debug, Clone)]
struct Partial {
    command: Command,
    headers: Headers,
}

/// Where the decoder is within the frame at the front of the buffer.
#[derive(Debug, Clone)]
enum State {
    /// Looking for the command line (or a heart-beat EOL); `buf[..scan]` holds no LF.
    Command { scan: usize },
    /// Reading header lines; the current line starts at `line_start` and `buf[line_start..scan]`
    /// holds no LF.
    Headers {
        partial: Partial,
        line_start: usize,
        scan: usize,
    },
    /// Reading the body, which starts at `body_start`. Without a content-length,
    /// `buf[body_start..scan]` holds no NUL.
    Body {
        partial: Partial,
        body_start: usize,
        content_length: Option<usize>,
        scan: usize,
    },
}

impl State {
    const START: State = State::Command { scan: 0 };

    /// The furthest buffer offset this state relies on; never more than the buffer length the
    /// state was saved with.
    fn offset_max(&self) -> usize {
        match self {
            State::Command { scan } => *scan,
            State::Headers { scan, .. } => *scan,
            State::Body { scan, .. } => *scan,
        }
    }
}

/// The outcome of one state's step.
enum Step {
    /// An item is ready; its bytes have been removed from the buffer.
    Ready(Item),
    /// The buffer ends inside this state; save it and wait for more bytes.
    Pending(State),
    /// Moved on to the next state; keep going.
    Next(State),
}

/// An incremental decoder. Feed it the connection's read buffer after every read; it consumes
/// complete items from the front and leaves a partial frame in place.
///
/// Between calls the caller may only append to the buffer (or drain it through this decoder): the
/// decoder remembers offsets into the partial frame at its front. If the buffer is cleared or
/// replaced, call [`Decoder::reset`]. A buffer shorter than the decoder remembers is detected and
/// handled by starting over, never by panicking.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    version: Version,
    state: State,
    /// Bytes examined by the scanner since creation; lets tests prove the O(n) claim.
    #[cfg(test)]
    bytes_scanned: usize,
}

impl Decoder {
    /// A decoder for a connection that has not negotiated yet (headers are read unescaped, as
    /// CONNECT and STOMP frames must be).
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            version: Version::V1_0,
            state: State::START,
            #[cfg(test)]
            bytes_scanned: 0,
        }
    }

    /// Sets the negotiated version, which decides header unescaping and 1.0 whitespace trimming.
    ///
    /// Any partly parsed frame is re-read under the new version on the next call (its bytes are
    /// still in the buffer), so the switch is exact even if bytes of the next frame already
    /// arrived.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
        self.state = State::START;
    }

    /// The version in force.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Forgets progress on a partial frame. Call it after clearing or replacing the buffer.
    pub fn reset(&mut self) {
        self.state = State::START;
    }

    /// Decodes the next item from the front of `buf`.
    ///
    /// `Ok(None)` means "need more bytes". Consumed bytes are removed from `buf` only when an
    /// item is returned. Trailing EOLs after a frame's NUL are left in place and come back as
    /// [`Item::HeartBeat`]s on later calls. After an error the decoder starts over, so decoding
    /// the same bytes again yields the same error; the connection should be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, DecodeError> {
        // Taking the state out means an error leaves the decoder at the start, never in a
        // half-updated state.
        let mut state = std::mem::replace(&mut self.state, State::START);
        if state.offset_max() > buf.len() {
            // The caller shrank the buffer behind our back; the remembered offsets are void.
            state = State::START;
        }
        loop {
            let step = match state {
                State::Command { scan } => self.step_command(buf, scan)?,
                State::Headers {
                    partial,
                    line_start,
                    scan,
                } => self.step_headers(buf, partial, line_start, scan)?,
                State::Body {
                    partial,
                    body_start,
                    content_length,
                    scan,
                } => self.step_body(buf, partial, body_start, content_length, scan)?,
            };
            match step {
                Step::Ready(item) => return Ok(Some(item)),
                Step::Pending(pending) => {
                    debug_assert!(pending.offset_max() <= buf.len());
                    self.state = pending;
                    return Ok(None);
                }
                Step::Next(next) => state = next,
            }
        }
    }

    fn step_command(&mut self, buf: &mut BytesMut, scan: usize) -> Result<Step, DecodeError> {
        // A bare EOL where a command would start is a heart-beat.
        match buf.first() {
            None => return Ok(Step::Pending(State::START)),
            Some(&LF) => {
                buf.advance(1);
                return Ok(Step::Ready(Item::HeartBeat));
            }
            Some(&CR) => match buf.get(1) {
                // A lone CR may be the first half of a CRLF heart-beat.
                None => return Ok(Step::Pending(State::START)),
                Some(&LF) => {
                    buf.advance(2);
                    return Ok(Step::Ready(Item::HeartBeat));
                }
                Some(_) => {}
            },
            Some(_) => {}
        }
        let Some(lf) = self.find(buf, scan, LF) else {
            let line = strip_cr(buf);
            if line.len() > COMMAND_BYTES_MAX {
                return Err(DecodeError::UnknownCommand(quote(line)));
            }
            self.check_frame_bytes(buf.len())?;
            return Ok(Step::Pending(State::Command { scan: buf.len() }));
        };
        let line = strip_cr(&buf[..lf]);
        let command =
            Command::parse(line).ok_or_else(|| DecodeError::UnknownCommand(quote(line)))?;
        Ok(Step::Next(State::Headers {
            partial: Partial {
                command,
                // Sized for a MESSAGE as brokers send them (a dozen short headers): growing
                // from empty reallocated both buffers several times per frame.
                headers: Headers::with_capacity(HEADERS_PRESIZE, HEADER_TEXT_PRESIZE),
            },
            line_start: lf + 1,
            scan: lf + 1,
        }))
    }

    fn step_headers(
        &mut self,
        buf: &mut BytesMut,
        mut partial: Partial,
        mut line_start: usize,
        mut scan: usize,
    ) -> Result<Step, DecodeError> {
        let line_bytes_max = self.limits.header_line_bytes_max;
        loop {
            let Some(lf) = self.find(buf, scan, LF) else {
                // Fail on an overlong line now rather than buffer up to its end.
                if strip_cr(&buf[line_start..]).len() > line_bytes_max {
                    return Err(DecodeError::HeaderLineTooLong {
                        limit: line_bytes_max,
                    });
                }
                self.check_frame_bytes(buf.len())?;
                return Ok(Step::Pending(State::Headers {
                    partial,
                    line_start,
                    scan: buf.len(),
                }));
            };
            let line = strip_cr(&buf[line_start..lf]);
            if line.is_empty() {
                return self.headers_done(partial, lf + 1);
            }
            if line.len() > line_bytes_max {
                return Err(DecodeError::HeaderLineTooLong {
                    limit: line_bytes_max,
                });
            }
            if partial.headers.len() >= self.limits.header_count_max {
                return Err(DecodeError::TooManyHeaders {
                    limit: self.limits.header_count_max,
                });
            }
            push_header(&mut partial.headers, line, partial.command, self.version)?;
            line_start = lf + 1;
            scan = lf + 1;
        }
    }

    /// The blank line after the headers has been read; the body starts at `body_start`.
    fn headers_done(&self, partial: Partial, body_start: usize) -> Result<Step, DecodeError> {
        // The first content-length counts, like every repeated header.
        let content_length = match partial.headers.iter().find(|(n, _)| *n == "content-length") {
            None => None,
            Some((_, value)) => {
                let body_bytes = parse_content_length(value)?;
                // Refuse an announced oversized body before buffering any of it.
                let frame_bytes = body_start
                    .checked_add(body_bytes)
                    .and_then(|n| n.checked_add(1))
                    .ok_or(DecodeError::FrameTooLarge {
                        limit: self.limits.frame_bytes_max,
                    })?;
                self.check_frame_bytes(frame_bytes)?;
                Some(body_bytes)
            }
        };
        Ok(Step::Next(State::Body {
            partial,
            body_start,
            content_length,
            scan: body_start,
        }))
    }

    fn step_body(
        &mut self,
        buf: &mut BytesMut,
        partial: Partial,
        body_start: usize,
        content_length: Option<usize>,
        scan: usize,
    ) -> Result<Step, DecodeError> {
        let nul = match content_length {
            Some(body_bytes) => {
                // headers_done checked that this cannot overflow.
                let nul = body_start + body_bytes;
                match buf.get(nul) {
                    Some(&NUL) => nul,
                    Some(_) => return Err(DecodeError::MissingNul),
                    None => {
                        return Ok(Step::Pending(State::Body {
                            partial,
                            body_start,
                            content_length,
                            scan: buf.len(),
                        }))
                    }
                }
            }
            None => match self.find(buf, scan, NUL) {
                Some(nul) => nul,
                None => {
                    self.check_frame_bytes(buf.len())?;
                    return Ok(Step::Pending(State::Body {
                        partial,
                        body_start,
                        content_length,
                        scan: buf.len(),
                    }));
                }
            },
        };
        self.check_frame_bytes(nul + 1)?;
        // The headers are already parsed out of the buffer, so a short frame keeps only its
        // body (one exact allocation, no shared header to make for a slice); a long one is
        // split off the read buffer without a copy (see FRAME_COPY_BELOW_BYTES).
        let body = if nul + 1 < crate::FRAME_COPY_BELOW_BYTES {
            let body = match nul - body_start {
                0 => Bytes::new(),
                _ => Bytes::copy_from_slice(&buf[body_start..nul]),
            };
            buf.advance(nul + 1);
            body
        } else {
            buf.split_to(nul + 1).freeze().slice(body_start..nul)
        };
        Ok(Step::Ready(Item::Frame(Frame {
            command: partial.command,
            headers: partial.headers,
            body,
        })))
    }

    /// The offset of the first `byte` in `buf[from..]`.
    fn find(&mut self, buf: &[u8], from: usize, byte: u8) -> Option<usize> {
        let rest = buf.get(from..)?;
        let found = memchr::memchr(byte, rest);
        #[cfg(test)]
        {
            self.bytes_scanned += found.map_or(rest.len(), |i| i + 1);
        }
        found.map(|i| from + i)
    }

    fn check_frame_bytes(&self, frame_bytes: usize) -> Result<(), DecodeError> {
        if frame_bytes > self.limits.frame_bytes_max {
            return Err(DecodeError::FrameTooLarge {
                limit: self.limits.frame_bytes_max,
            });
        }
        Ok(())
    }
}

/// Parses a `content-length` value: ASCII digits only (no sign, no spaces), fitting a `usize`.
pub(super) fn parse_content_length(value: &str) -> Result<usize, DecodeError> {
    let invalid = || DecodeError::InvalidContentLength(quote(value.as_bytes()));
    // `usize::from_str` would accept a leading '+'; the spec's grammar does not.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse::<usize>().map_err(|_| invalid())
}

/// Parses one header line (EOL already removed) of a frame with `command` under `version` and
/// appends it to `headers`, unescaped, without an allocation of its own.
///
/// One pass over the line finds the separator and whether anything needs unescaping: a MESSAGE
/// has a dozen short header lines, and a scan (and a UTF-8 check) per name and per value cost
/// more than the bytes themselves.
fn push_header(
    headers: &mut Headers,
    line: &[u8],
    command: Command,
    version: Version,
) -> Result<(), DecodeError> {
    let mut colon = None;
    let mut escaped = false;
    for (i, &b) in line.iter().enumerate() {
        match b {
            // A NUL would end the frame for peers that scan for it; forwarding one would let a
            // sender split frames in other clients' parsers.
            NUL => return Err(DecodeError::MalformedHeader(quote(line))),
            b':' if colon.is_none() => colon = Some(i),
            b'\\' => escaped = true,
            _ => {}
        }
    }
    let colon = colon.ok_or_else(|| DecodeError::MalformedHeader(quote(line)))?;
    // 1.0 defines no escaping, and the spec forbids it in CONNECT/STOMP/CONNECTED so that
    // passcodes survive.
    let raw = version == Version::V1_0 || command.is_handshake();
    if raw || !escaped {
        // The separator is ASCII, so it splits the checked text on a character boundary.
        let text = utf8(line)?;
        let (mut name, mut value) = (&text[..colon], &text[colon + 1..]);
        if version == Version::V1_0 {
            // ActiveMQ trims, and 1.0 clients rely on `name: value`.
            name = trim(name);
            value = trim(value);
        }
        push_parts(headers, name, value);
        return Ok(());
    }
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let name = unescape(name).ok_or_else(|| DecodeError::InvalidEscape(quote(line)))?;
    let value = unescape(value).ok_or_else(|| DecodeError::InvalidEscape(quote(line)))?;
    push_parts(headers, utf8(&name)?, utf8(&value)?);
    Ok(())
}

fn push_parts(headers: &mut Headers, name: &str, value: &str) {
    let text = headers.text_mut();
    let start = text.len();
    text.push_str(name);
    let mid = text.len();
    text.push_str(value);
    headers.push_written(start, mid);
}

/// Undoes 1.1/1.2 header escaping; `None` on an undefined escape. `\r` is accepted in 1.1 too:
/// being lenient here costs nothing and some 1.1 clients send it.
fn unescape(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if memchr::memchr(b'\\', raw).is_none() {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next()? {
            b'\\' => b'\\',
            b'n' => LF,
            b'c' => b':',
            b'r' => CR,
            _ => return None,
        });
    }
    Some(Cow::Owned(out))
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Removes one CR before the (already removed) LF: every version accepts CRLF.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(&[CR]).unwrap_or(line)
}

/// Trims the whitespace 1.0 clients put around names and values (space, tab, stray CR).
fn trim(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r'))
}

/// The start of an offending line, for an error message.
fn quote(bytes: &[u8]) -> String {
    let end = bytes.len().min(QUOTE_BYTES_MAX);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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

    fn decoder(version: Version) -> Decoder {
        let mut d = Decoder::new(Limits::default());
        d.set_version(version);
        d
    }

    /// Decodes everything in `bytes` at once; returns the items and what was left over.
    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> (Vec<Item>, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let mut items = Vec::new();
        while let Some(item) = d.decode(&mut buf).unwrap() {
            items.push(item);
        }
        (items, buf)
    }

    fn one_frame(version: Version, bytes: &[u8]) -> Frame {
        let (items, rest) = decode_all(&mut decoder(version), bytes);
        assert!(rest.is_empty(), "left over: {rest:?}");
        match items.as_slice() {
            [Item::Frame(f)] => f.clone(),
            other => panic!("expected one frame, got {other:?}"),
        }
    }

    fn error(version: Version, bytes: &[u8]) -> DecodeError {
        error_with(Limits::default(), version, bytes)
    }

    fn error_with(limits: Limits, version: Version, bytes: &[u8]) -> DecodeError {
        let mut d = Decoder::new(limits);
        d.set_version(version);
        let mut buf = BytesMut::from(bytes);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no error; waiting for more with {buf:?}"),
                Err(e) => return e,
            }
        }
    }

    /// Whether `body` points into the allocation `[base, base + cap)`.
    fn inside(body: &[u8], base: *const u8, cap: usize) -> bool {
        let p = body.as_ptr() as usize;
        p >= base as usize && p < base as usize + cap
    }

    #[test]
    fn a_small_frame_does_not_keep_the_read_buffer_alive_and_a_large_one_is_not_copied() {
        // A SEND read into a 16 KiB chunk: its body must not be a slice of that chunk (which a
        // queued message would keep whole).
        let mut buf = BytesMut::with_capacity(16 * 1024);
        buf.extend_from_slice(b"SEND\ndestination:/queue/a\n\n");
        buf.extend_from_slice(&[b'x'; 1024]);
        buf.extend_from_slice(b"\0");
        let (base, cap) = (buf.as_ptr(), buf.capacity());
        let mut d = decoder(Version::V1_2);
        let Some(Item::Frame(f)) = d.decode(&mut buf).unwrap() else {
            panic!("no frame")
        };
        assert_eq!(f.body.len(), 1024);
        assert!(
            !inside(&f.body, base, cap),
            "a 1 KiB body is a slice of the 16 KiB read buffer"
        );
        // A frame of FRAME_COPY_BELOW_BYTES or more is split off, not copied.
        let big = crate::FRAME_COPY_BELOW_BYTES;
        let mut buf = BytesMut::with_capacity(big + 64);
        buf.extend_from_slice(b"SEND\ndestination:/queue/a\n\n");
        buf.extend_from_slice(&vec![b'y'; big]);
        buf.extend_from_slice(b"\0");
        let (base, cap) = (buf.as_ptr(), buf.capacity());
        let Some(Item::Frame(f)) = d.decode(&mut buf).unwrap() else {
            panic!("no frame")
        };
        assert_eq!(f.body.len(), big);
        assert!(inside(&f.body, base, cap), "a large body was copied");
    }

    #[test]
    fn every_command_decodes_with_headers_and_empty_body() {
        for command in ALL_COMMANDS {
            let wire = format!("{}\nid:7\n\n\0", command.as_str());
            let frame = one_frame(Version::V1_2, wire.as_bytes());
            assert_eq!(frame.command, command);
            assert_eq!(
                frame.headers.to_vec(),
                vec![("id".to_owned(), "7".to_owned())]
            );
            assert!(frame.body.is_empty());
        }
    }

    #[test]
    fn commands_are_case_sensitive_and_unknown_ones_rejected() {
        assert_eq!(
            error(Version::V1_2, b"send\n\n\0"),
            DecodeError::UnknownCommand("send".into())
        );
        assert_eq!(
            error(Version::V1_2, b"FOO\r\n\n\0"),
            DecodeError::UnknownCommand("FOO".into())
        );
        assert_eq!(
            error(Version::V1_2, b" SEND\n\n\0"),
            DecodeError::UnknownCommand(" SEND".into())
        );
    }

    #[test]
    fn garbage_command_line_is_rejected_before_its_lf_arrives() {
        let mut d = decoder(Version::V1_2);
        let mut buf = BytesMut::from(&b"UNSUBSCRIBE\r"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None), "a valid prefix waits");
        buf.extend_from_slice(b"X");
        assert!(matches!(
            d.decode(&mut buf),
            Err(DecodeError::UnknownCommand(_))
        ));
    }

    #[test]
    fn crlf_line_endings_are_accepted_in_every_version() {
        for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
            let frame = one_frame(version, b"SEND\r\ndestination:/q/a\r\nx:\r\n\r\nhi\0");
            assert_eq!(frame.command, Command::Send);
            assert_eq!(frame.header("destination"), Some("/q/a"));
            assert_eq!(frame.header("x"), Some(""));
            assert_eq!(frame.body, Bytes::from_static(b"hi"));
        }
    }

    #[test]
    fn eols_between_frames_are_heartbeats_and_trailing_eols_stay_buffered() {
        let mut d = decoder(Version::V1_2);
        let mut buf = BytesMut::from(&b"\n\r\nSEND\n\nx\0\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(Item::HeartBeat)));
        assert_eq!(d.decode(&mut buf), Ok(Some(Item::HeartBeat)));
        assert!(matches!(d.decode(&mut buf), Ok(Some(Item::Frame(_)))));
        assert_eq!(
            &buf[..],
            b"\n",
            "the EOL after the NUL is not consumed with the frame"
        );
        assert_eq!(d.decode(&mut buf), Ok(Some(Item::HeartBeat)));
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn lone_cr_waits_for_its_lf() {
        let mut d = decoder(Version::V1_2);
        let mut buf = BytesMut::from(&b"\r"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 1);
        buf.extend_from_slice(b"\n");
        assert_eq!(d.decode(&mut buf), Ok(Some(Item::HeartBeat)));
        assert!(buf.is_empty());
    }

    #[test]
    fn content_length_body_may_contain_nul_bytes() {
        let frame = one_frame(Version::V1_2, b"SEND\ncontent-length:5\n\na\0b\0c\0");
        assert_eq!(frame.body, Bytes::from_static(b"a\0b\0c"));
        let empty = one_frame(Version::V1_2, b"SEND\ncontent-length:0\n\n\0");
        assert!(empty.body.is_empty());
    }

    #[test]
    fn body_without_content_length_ends_at_first_nul() {
        let mut d = decoder(Version::V1_2);
        let (items, rest) = decode_all(&mut d, b"SEND\n\nhello\0world\0");
        assert_eq!(
            items,
            vec![Item::Frame(Frame::new(Command::Send).with_body("hello"))]
        );
        // "world\0" is not a command: it stays buffered until its line ends.
        assert_eq!(&rest[..], b"world\0");
    }

    #[test]
    fn incomplete_frame_consumes_nothing() {
        let mut d = decoder(Version::V1_2);
        let whole = b"SEND\ncontent-length:3\n\nabc\0";
        let mut buf = BytesMut::new();
        for &b in &whole[..whole.len() - 1] {
            buf.extend_from_slice(&[b]);
            assert_eq!(d.decode(&mut buf), Ok(None));
        }
        assert_eq!(&buf[..], &whole[..whole.len() - 1]);
        buf.extend_from_slice(b"\0");
        assert!(matches!(d.decode(&mut buf), Ok(Some(Item::Frame(_)))));
        assert!(buf.is_empty());
    }

    #[test]
    fn escapes_are_decoded_in_1_2_and_1_1() {
        for version in [Version::V1_1, Version::V1_2] {
            let frame = one_frame(version, b"SEND\na\\cb:x\\\\y\\nz\\rw\n\n\0");
            assert_eq!(
                frame.headers.to_vec(),
                vec![("a:b".to_owned(), "x\\y\nz\rw".to_owned())],
                "{version}"
            );
        }
    }

    #[test]
    fn escapes_are_literal_in_1_0() {
        let frame = one_frame(Version::V1_0, b"SEND\na\\cb:x\\\\y\\t\n\n\0");
        assert_eq!(
            frame.headers.to_vec(),
            vec![("a\\cb".to_owned(), "x\\\\y\\t".to_owned())]
        );
    }

    #[test]
    fn handshake_frames_are_never_unescaped() {
        for command in ["CONNECT", "STOMP", "CONNECTED"] {
            let wire = format!("{command}\nlogin:bob\npasscode:a\\nb\\q:c\n\n\0");
            let frame = one_frame(Version::V1_2, wire.as_bytes());
            assert_eq!(frame.header("passcode"), Some("a\\nb\\q:c"), "{command}");
        }
    }

    #[test]
    fn undefined_escapes_are_errors() {
        for wire in [
            &b"SEND\na:b\\t\n\n\0"[..],
            b"SEND\na:b\\\n\n\0",
            b"SEND\na\\x:b\n\n\0",
        ] {
            assert!(
                matches!(error(Version::V1_2, wire), DecodeError::InvalidEscape(_)),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn repeated_headers_are_kept_in_order_and_first_wins() {
        let frame = one_frame(Version::V1_2, b"MESSAGE\nfoo:1\nbar:x\nfoo:2\n\n\0");
        assert_eq!(frame.header("foo"), Some("1"));
        assert_eq!(
            frame.headers.to_vec(),
            vec![
                ("foo".to_owned(), "1".to_owned()),
                ("bar".to_owned(), "x".to_owned()),
                ("foo".to_owned(), "2".to_owned()),
            ]
        );
    }

    #[test]
    fn first_content_length_decides_the_body() {
        let frame = one_frame(
            Version::V1_2,
            b"SEND\ncontent-length:2\ncontent-length:9\n\na\0\0",
        );
        assert_eq!(frame.body, Bytes::from_static(b"a\0"));
    }

    #[test]
    fn header_value_splits_on_first_colon() {
        let frame = one_frame(Version::V1_0, b"SEND\ndestination:/q:a:b\n\n\0");
        assert_eq!(frame.header("destination"), Some("/q:a:b"));
    }

    #[test]
    fn non_ascii_names_and_values_split_at_the_first_colon_in_every_path() {
        let wire = "SEND\nnäme:välue:ü\nx\\cy:ö\\nö\nplain:é\n\n\0".as_bytes();
        let frame = one_frame(Version::V1_2, wire);
        assert_eq!(
            frame.headers.to_vec(),
            [("näme", "välue:ü"), ("x:y", "ö\nö"), ("plain", "é")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        let frame = one_frame(Version::V1_0, "SEND\n näme\t: välue \n\n\0".as_bytes());
        assert_eq!(frame.header("näme"), Some("välue"));
        // A frame with more headers than the decoder sizes for at first still reads whole.
        let many: String = (0..40)
            .map(|i| format!("h{i}:{}\n", "v".repeat(i)))
            .collect();
        let frame = one_frame(Version::V1_2, format!("SEND\n{many}\n\0").as_bytes());
        assert_eq!(frame.headers.len(), 40);
        assert_eq!(frame.header("h39"), Some("v".repeat(39).as_str()));
    }

    #[test]
    fn version_1_0_trims_names_and_values() {
        let frame = one_frame(Version::V1_0, b"SEND\n destination : /queue/a \t\n\n\0");
        assert_eq!(frame.header("destination"), Some("/queue/a"));
        let kept = one_frame(Version::V1_2, b"SEND\ndestination: /queue/a \n\n\0");
        assert_eq!(
            kept.header("destination"),
            Some(" /queue/a "),
            "1.2 keeps spaces"
        );
    }

    #[test]
    fn header_line_without_colon_is_malformed() {
        assert_eq!(
            error(Version::V1_2, b"SEND\nnocolon\n\n\0"),
            DecodeError::MalformedHeader("nocolon".into())
        );
    }

    #[test]
    fn nul_inside_headers_is_malformed() {
        assert!(matches!(
            error(Version::V1_2, b"SEND\na:b\0c\n\n\0"),
            DecodeError::MalformedHeader(_)
        ));
        assert!(matches!(
            error(Version::V1_2, b"SEND\n\0\n"),
            DecodeError::MalformedHeader(_)
        ));
    }

    #[test]
    fn non_utf8_header_is_rejected() {
        assert_eq!(
            error(Version::V1_2, b"SEND\na:\xff\xfe\n\n\0"),
            DecodeError::InvalidUtf8
        );
        assert_eq!(
            error(Version::V1_0, b"SEND\n\xc3:x\n\n\0"),
            DecodeError::InvalidUtf8
        );
    }

    #[test]
    fn bad_content_length_is_rejected() {
        for value in [
            "-1",
            "abc",
            "",
            "+5",
            " 5",
            "1e3",
            "99999999999999999999999999",
        ] {
            let wire = format!("SEND\ncontent-length:{value}\n\n\0");
            assert_eq!(
                error(Version::V1_2, wire.as_bytes()),
                DecodeError::InvalidContentLength(value.into()),
                "{value:?}"
            );
        }
    }

    #[test]
    fn content_length_body_must_be_followed_by_nul() {
        assert_eq!(
            error(Version::V1_2, b"SEND\ncontent-length:2\n\nabc\0"),
            DecodeError::MissingNul
        );
    }

    #[test]
    fn header_line_limit_fails_before_the_line_ends() {
        let limits = Limits {
            header_line_bytes_max: 8,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::from(&b"SEND\nabc:1234\r"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None), "8 bytes + CR is still fine");
        buf.extend_from_slice(b"5");
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::HeaderLineTooLong { limit: 8 })
        );
        // And a terminated line over the limit.
        assert_eq!(
            error_with(limits, Version::V1_2, b"SEND\nabc:123456\n\n\0"),
            DecodeError::HeaderLineTooLong { limit: 8 }
        );
        // Exactly at the limit is fine.
        let mut d = Decoder::new(limits);
        let (items, _) = decode_all(&mut d, b"SEND\nabc:1234\n\n\0");
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn header_count_limit_is_enforced() {
        let limits = Limits {
            header_count_max: 2,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits);
        let (items, _) = decode_all(&mut d, b"SEND\na:1\nb:2\n\n\0");
        assert_eq!(items.len(), 1, "two headers are allowed");
        assert_eq!(
            error_with(limits, Version::V1_2, b"SEND\na:1\nb:2\nc:3\n"),
            DecodeError::TooManyHeaders { limit: 2 }
        );
    }

    #[test]
    fn frame_limit_fails_on_a_partial_frame() {
        let limits = Limits {
            frame_bytes_max: 32,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::from(&b"SEND\n\n"[..]);
        buf.extend_from_slice(&[b'x'; 26]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(None),
            "32 bytes buffered is within the limit"
        );
        buf.extend_from_slice(b"x");
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { limit: 32 })
        );
    }

    #[test]
    fn frame_limit_counts_the_nul_and_allows_exact_fit() {
        let limits = Limits {
            frame_bytes_max: 10,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits);
        let (items, _) = decode_all(&mut d, b"SEND\n\nabc\0");
        assert_eq!(items.len(), 1, "10 bytes including the NUL fit");
        assert_eq!(
            error_with(limits, Version::V1_2, b"SEND\n\nabcd\0"),
            DecodeError::FrameTooLarge { limit: 10 }
        );
    }

    #[test]
    fn frame_limit_fails_in_headers_too() {
        let limits = Limits {
            frame_bytes_max: 16,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::from(&b"SEND\na:1\nb:2\nc:3\nd"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { limit: 16 })
        );
    }

    #[test]
    fn announced_oversized_body_fails_before_it_arrives() {
        let limits = Limits {
            frame_bytes_max: 1000,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::from(&b"SEND\ncontent-length:1000\n\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { limit: 1000 })
        );
        let huge = format!("SEND\ncontent-length:{}\n\n", usize::MAX);
        assert_eq!(
            error_with(limits, Version::V1_2, huge.as_bytes()),
            DecodeError::FrameTooLarge { limit: 1000 }
        );
    }

    #[test]
    fn feeding_one_byte_at_a_time_gives_identical_items() {
        let stream: &[u8] = b"\nCONNECT\naccept-version:1.2\nhost:x\n\n\0\r\n\
            SEND\r\ndestination:/q/a\r\ncontent-length:3\r\n\r\na\0b\0\n\n\
            MESSAGE\nk\\cey:v\\nv\n\nbody\0\nACK\nid:1\n\n\0";
        for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
            let (whole, rest) = decode_all(&mut decoder(version), stream);
            assert!(rest.is_empty());
            assert_eq!(whole.len(), 9, "{whole:?}");
            for split in 0..=stream.len() {
                let mut d = decoder(version);
                let mut buf = BytesMut::from(&stream[..split]);
                let mut items = Vec::new();
                while let Some(item) = d.decode(&mut buf).unwrap() {
                    items.push(item);
                }
                buf.extend_from_slice(&stream[split..]);
                while let Some(item) = d.decode(&mut buf).unwrap() {
                    items.push(item);
                }
                assert_eq!(items, whole, "split at {split}");
            }
            let mut d = decoder(version);
            let mut buf = BytesMut::new();
            let mut items = Vec::new();
            for &b in stream {
                buf.extend_from_slice(&[b]);
                while let Some(item) = d.decode(&mut buf).unwrap() {
                    items.push(item);
                }
            }
            assert_eq!(items, whole, "byte at a time");
        }
    }

    #[test]
    fn scanning_a_body_fed_in_small_reads_is_linear() {
        let body_bytes = 1 << 20;
        let mut d = decoder(Version::V1_2);
        let mut buf = BytesMut::from(&b"SEND\ndestination:/q/a\n\n"[..]);
        let chunk = [b'x'; 7];
        while buf.len() < body_bytes {
            buf.extend_from_slice(&chunk);
            assert_eq!(d.decode(&mut buf), Ok(None));
        }
        buf.extend_from_slice(b"\0");
        let total = buf.len();
        assert!(matches!(d.decode(&mut buf), Ok(Some(Item::Frame(_)))));
        assert!(
            d.bytes_scanned <= 2 * total,
            "scanned {} bytes for a {total}-byte frame",
            d.bytes_scanned
        );
    }

    #[test]
    fn set_version_mid_frame_rereads_the_partial_frame() {
        let mut d = decoder(Version::V1_0);
        let mut buf = BytesMut::from(&b"SEND\na:x\\cy\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        d.set_version(Version::V1_2);
        buf.extend_from_slice(b"\n\0");
        let Ok(Some(Item::Frame(frame))) = d.decode(&mut buf) else {
            panic!("expected a frame");
        };
        assert_eq!(frame.header("a"), Some("x:y"));
    }

    #[test]
    fn shrunk_buffer_restarts_instead_of_panicking() {
        let mut d = decoder(Version::V1_2);
        let mut buf = BytesMut::from(&b"SEND\na:1\nb:2"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.clear();
        buf.extend_from_slice(b"\n");
        assert_eq!(d.decode(&mut buf), Ok(Some(Item::HeartBeat)));
    }

    #[test]
    fn error_leaves_the_decoder_at_the_start() {
        let mut d = decoder(Version::V1_2);
        let mut buf = BytesMut::from(&b"SEND\nbad\n\n\0"[..]);
        let first = d.decode(&mut buf);
        assert!(first.is_err());
        assert_eq!(d.decode(&mut buf), first, "same bytes, same error");
        d.reset();
        let mut fresh = BytesMut::from(&b"ACK\n\n\0"[..]);
        assert!(matches!(d.decode(&mut fresh), Ok(Some(Item::Frame(_)))));
    }
}
