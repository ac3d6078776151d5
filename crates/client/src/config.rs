//! Connection settings and acknowledgement modes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ferromq_protocol::stomp::{HeartBeat, Limits};

/// How a connection identifies itself and what it negotiates.
#[derive(Clone)]
pub struct ClientConfig {
    /// The STOMP `host` header (the virtual host). Default `localhost`.
    pub host: String,
    /// The `login` header, if any.
    pub login: Option<String>,
    /// The `passcode` header, if any. Never printed by `Debug`.
    pub passcode: Option<String>,
    /// Sent as `client-id` on CONNECT; ActiveMQ keys durable topic subscriptions on it.
    pub client_id: Option<String>,
    /// The `accept-version` header. Default `1.0,1.1,1.2`.
    pub accept_version: String,
    /// The heart-beats this side offers: it can send every `send_ms` and wants to receive every
    /// `recv_ms`. Default 10 000 / 10 000 ms; `0,0` disables heart-beating.
    pub heart_beat: HeartBeat,
    /// Bound on TCP connect plus the CONNECT/CONNECTED exchange. Default 10 s.
    pub connect_timeout: Duration,
    /// How long a frame sent with a `receipt` header waits for its RECEIPT before the call fails
    /// with [`ClientError::Timeout`](crate::ClientError::Timeout). Default 30 s.
    pub receipt_timeout: Duration,
    /// Bounds on the frames the server may send us.
    pub limits: Limits,
    /// Extra headers appended to the CONNECT frame.
    pub extra_connect_headers: Vec<(String, String)>,
    /// TLS settings ([`tls::client_config`](crate::tls::client_config)): with them every
    /// connection (each broker of a failover list too) runs TLS; an `ssl://` or `stomp+ssl://`
    /// address needs them. Default none: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            host: "localhost".to_owned(),
            login: None,
            passcode: None,
            client_id: None,
            accept_version: "1.0,1.1,1.2".to_owned(),
            heart_beat: HeartBeat {
                send_ms: 10_000,
                recv_ms: 10_000,
            },
            connect_timeout: Duration::from_secs(10),
            receipt_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            extra_connect_headers: Vec::new(),
            tls: None,
        }
    }
}

// Hand-written so that a config logged with `{:?}` does not leak the passcode.
impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("login", &self.login)
            .field("passcode", &self.passcode.as_ref().map(|_| "<redacted>"))
            .field("client_id", &self.client_id)
            .field("accept_version", &self.accept_version)
            .field("heart_beat", &self.heart_beat)
            .field("connect_timeout", &self.connect_timeout)
            .field("receipt_timeout", &self.receipt_timeout)
            .field("limits", &self.limits)
            .field("extra_connect_headers", &self.extra_connect_headers)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The `ack` mode of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckMode {
    /// The broker considers a message consumed as soon as it is sent (`auto`).
    #[default]
    Auto,
    /// An ACK acknowledges the message and every earlier one on the subscription (`client`).
    Client,
    /// An ACK acknowledges exactly one message (`client-individual`).
    ClientIndividual,
}

impl AckMode {
    /// The value of the SUBSCRIBE `ack` header.
    pub fn as_header(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_header())
    }
}
