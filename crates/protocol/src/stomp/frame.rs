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
    pub headers: Vec<(String, String)>,
    /// The body; empty for frames without one.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Builder: appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Builder: sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// Appends a header (keeps any earlier one of the same name, which still wins).
    pub fn push_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.headers.push((name.into(), value.into()));
    }

    /// Replaces every header of this name by one with the given value.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Removes every header of this name.
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| n != name);
    }

    /// The value of the first header with this name, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
