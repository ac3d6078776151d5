//! Frames, commands and protocol versions.

use bytes::Bytes;
use std::fmt;

/// A STOMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no NACK, no heart-beats.
    V1_0,
    /// STOMP 1.1: header escaping (`\\`, `\n`, `\c`), NACK, heart-beats.
    V1_1,
    /// STOMP 1.2: adds `\r` escaping, CRLF line endings, the `ack` header on MESSAGE.
    V1_2,
}

impl Version {
    /// The version as it appears in `accept-version` and `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses `1.0`, `1.1` or `1.2`.
    pub fn parse(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP command, client or server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session.
    Connect,
    /// Client: open a session (1.1+ synonym of CONNECT).
    Stomp,
    /// Server: the session is open.
    Connected,
    /// Client: send a message to a destination.
    Send,
    /// Client: register a subscription.
    Subscribe,
    /// Client: remove a subscription.
    Unsubscribe,
    /// Client: acknowledge a message.
    Ack,
    /// Client: reject a message (1.1+).
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: roll a transaction back.
    Abort,
    /// Client: close the session gracefully.
    Disconnect,
    /// Server: a message for a subscription.
    Message,
    /// Server: a receipt for a client frame that carried a `receipt` header.
    Receipt,
    /// Server: an error; the server closes the connection after sending it.
    Error,
}

impl Command {
    /// The command as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses a command name (case-sensitive, as the spec requires).
    pub fn parse(s: &[u8]) -> Option<Command> {
        Some(match s {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"CONNECTED" => Command::Connected,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// True for CONNECT, STOMP and CONNECTED, whose headers are never escaped.
    pub fn is_handshake(self) -> bool {
        matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }

    /// True for the frames that may carry a body (SEND, MESSAGE, ERROR).
    pub fn allows_body(self) -> bool {
        matches!(self, Command::Send | Command::Message | Command::Error)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame's headers in wire order (repeats kept), unescaped.
///
/// Why not `Vec<(String, String)>`: a decoded MESSAGE or SEND carries ten-odd headers, and two
/// allocations per header were a fifth of a consumer's CPU (issue 16's profile of the load
/// tool). Every name and value lives in one `String`, with offsets beside it: decoding a frame
/// allocates at most twice, whatever its header count.
#[derive(Clone, Default)]
pub struct Headers {
    /// Names and values back to back; removed headers may leave dead text behind until the
    /// next [`Headers::retain`] that compacts.
    text: String,
    spans: Vec<Span>,
}

/// Where one header lives in [`Headers::text`]: the name is `start..mid`, the value `mid..end`.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    mid: usize,
    end: usize,
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Room for `count` headers of `text_bytes` bytes of names and values together.
    pub fn with_capacity(count: usize, text_bytes: usize) -> Headers {
        Headers {
            text: String::with_capacity(text_bytes),
            spans: Vec::with_capacity(count),
        }
    }

    /// The number of headers, repeats included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Appends a header (an earlier one of the same name still wins).
    pub fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let mid = self.text.len();
        self.text.push_str(value);
        self.spans.push(Span {
            start,
            mid,
            end: self.text.len(),
        });
    }

    /// Appends a header whose name and value are already in `text` after `start` (the decoder
    /// writes them there itself, unescaping on the way).
    pub(super) fn push_written(&mut self, start: usize, mid: usize) {
        self.spans.push(Span {
            start,
            mid,
            end: self.text.len(),
        });
    }

    /// The text the next header is to be appended to (see [`Headers::push_written`]).
    pub(super) fn text_mut(&mut self) -> &mut String {
        &mut self.text
    }

    /// The value of the first header with this name, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Name and value of each header, in order.
    pub fn iter(&self) -> HeaderIter<'_> {
        HeaderIter {
            text: &self.text,
            spans: self.spans.iter(),
        }
    }

    /// Keeps the headers for which `keep(name, value)` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let text = &self.text;
        self.spans
            .retain(|s| keep(&text[s.start..s.mid], &text[s.mid..s.end]));
        // Dead text is dropped only when it is most of the buffer: a frame that loses one
        // header of twelve keeps its allocation as it is.
        let live: usize = self.spans.iter().map(|s| s.end - s.start).sum();
        if live * 2 < self.text.len() {
            let mut text = String::with_capacity(live);
            for s in &mut self.spans {
                let start = text.len();
                text.push_str(&self.text[s.start..s.end]);
                *s = Span {
                    start,
                    mid: start + (s.mid - s.start),
                    end: text.len(),
                };
            }
            self.text = text;
        }
    }

    /// The headers as owned pairs (tests, and callers that keep them apart from the frame).
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal when they hold the same headers in the same order (dead text does not count).
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.push(n.as_ref(), v.as_ref());
        }
        h
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Headers`]: `(name, value)` in wire order.
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    text: &'a str,
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let s = self.spans.next()?;
        Some((&self.text[s.start..s.mid], &self.text[s.mid..s.end]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}

/// One STOMP frame: a command, headers in wire order (repeats kept), and a body.
///
/// Header names and values are stored unescaped. When a header is repeated, the first
/// occurrence is the one that counts ([`Frame::header`] returns it); the rest are kept so that a
/// relay can forward the frame unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// Headers in the order they appeared, unescaped.
    pub headers: Headers,
    /// The body; empty for frames without one.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Builder: appends a header.
    pub fn with_header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Frame {
        self.headers.push(name.as_ref(), value.as_ref());
        self
    }

    /// Builder: sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// Appends a header (keeps any earlier one of the same name, which still wins).
    pub fn push_header(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        self.headers.push(name.as_ref(), value.as_ref());
    }

    /// Replaces every header of this name by one with the given value.
    pub fn set_header(&mut self, name: &str, value: impl AsRef<str>) {
        self.headers.retain(|n, _| n != name);
        self.headers.push(name, value.as_ref());
    }

    /// Removes every header of this name.
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|n, _| n != name);
    }

    /// The value of the first header with this name, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(h: &Headers) -> Vec<(&str, &str)> {
        h.iter().collect()
    }

    #[test]
    fn headers_keep_wire_order_and_repeats_and_the_first_wins() {
        let mut h = Headers::new();
        h.push("a", "1");
        h.push("b", "");
        h.push("", "x");
        h.push("a", "2");
        assert_eq!(pairs(&h), [("a", "1"), ("b", ""), ("", "x"), ("a", "2")]);
        assert_eq!(h.len(), 4);
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.get("b"), Some(""));
        assert_eq!(h.get(""), Some("x"));
        assert_eq!(h.get("c"), None);
        assert_eq!(h.iter().len(), 4);
    }

    #[test]
    fn retain_removes_and_compacts_without_changing_what_is_left() {
        let mut h: Headers = (0..12)
            .map(|i| (format!("n{i}"), format!("value-{i}")))
            .collect();
        h.retain(|n, _| n != "n3");
        assert_eq!(h.len(), 11);
        assert_eq!(h.get("n3"), None);
        let before = h.text.len();
        // Removing most of them compacts the text; the survivors read the same.
        h.retain(|n, _| n == "n0" || n == "n11");
        assert!(h.text.len() < before, "dead text was dropped");
        assert_eq!(pairs(&h), [("n0", "value-0"), ("n11", "value-11")]);
        h.push("n12", "value-12");
        assert_eq!(h.get("n12"), Some("value-12"));
        assert_eq!(h.get("n11"), Some("value-11"));
    }

    #[test]
    fn set_and_remove_header_on_a_frame() {
        let mut f = Frame::new(Command::Send)
            .with_header("destination", "/queue/a")
            .with_header("x", "1")
            .with_header("x", "2");
        f.set_header("x", "3");
        assert_eq!(f.header("x"), Some("3"));
        assert_eq!(f.headers.len(), 2);
        f.remove_header("destination");
        assert_eq!(pairs(&f.headers), [("x", "3")]);
    }

    #[test]
    fn equality_ignores_dead_text() {
        let mut a: Headers = [("a", "1"), ("b", "2")].into_iter().collect();
        a.retain(|n, _| n == "a");
        let b: Headers = [("a", "1")].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, Headers::new());
        assert_eq!(format!("{a:?}"), r#"[("a", "1")]"#);
    }
}
