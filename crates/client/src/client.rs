//! The connection handle: handshake, sending, receipts, acknowledgements, transactions.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferromq_protocol::stomp::{encode, Command, Decoder, Frame, HeartBeat, Item, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{AckMode, ClientConfig};
use crate::error::{ClientError, CloseReason};
use crate::frames;
use crate::message::ReceivedMessage;
use crate::receipt::ReceiptHandle;
use crate::shared::Shared;
use crate::subscription::Subscription;
use crate::{reader, writer, OUTGOING_QUEUE_FRAMES_MAX};

/// Read size used during the handshake.
const HANDSHAKE_READ_BYTES: usize = 8 * 1024;

/// A STOMP connection. Clones share the connection; it closes on [`Client::disconnect`], on a
/// server ERROR or socket failure, or when every clone and [`Subscription`] has been dropped.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
    version: Version,
    connected_headers: Vec<(String, String)>,
    receipt_timeout: Duration,
    heartbeat_send_ms: u64,
    heartbeat_expect_ms: u64,
}

impl Client {
    /// Opens a TCP connection to `addr` (`host:port` or `tcp://host:port`; `ssl://host:port`
    /// or `stomp+ssl://host:port` for TLS; a `?query` suffix as in ActiveMQ URIs is ignored),
    /// runs the TLS handshake when `config.tls` is set, sends CONNECT and waits for CONNECTED,
    /// all within `config.connect_timeout`.
    pub async fn connect(addr: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let target = parse_addr(addr)?;
        if config.tls.is_none() && crate::tls::is_tls_addr(addr) {
            return Err(ClientError::Tls(format!(
                "{addr} is a TLS address: set ClientConfig::tls (the CLI's --tls-ca) to the CA \
                 that signed the broker's certificate"
            )));
        }
        let span = tracing::debug_span!("stomp_client", addr = %target);
        let connect_timeout = config.connect_timeout;
        match tokio::time::timeout(
            connect_timeout,
            Self::connect_inner(target, config, span.clone()).instrument(span),
        )
        .await
        {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout("connect")),
        }
    }

    async fn connect_inner(
        target: String,
        config: ClientConfig,
        span: tracing::Span,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(&target).await?;
        // The writer batches frames itself; Nagle would only add latency to receipts.
        stream.set_nodelay(true)?;
        match config.tls.clone() {
            None => {
                let (r, w) = stream.into_split();
                Self::handshake(r, w, config, span).await
            }
            Some(tls) => {
                let name = crate::tls::server_name(&target)?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, stream)
                    .await
                    .map_err(|e| ClientError::Tls(format!("handshake with {target}: {e}")))?;
                let (r, w) = tokio::io::split(stream);
                Self::handshake(r, w, config, span).await
            }
        }
    }

    /// The STOMP handshake on a connected socket's halves, then the reader and writer tasks.
    async fn handshake<R, W>(
        mut read_half: R,
        mut write_half: W,
        config: ClientConfig,
        span: tracing::Span,
    ) -> Result<Client, ClientError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut out = BytesMut::new();
        // CONNECT headers are never escaped, whatever version is negotiated later.
        encode(&frames::connect(&config), Version::V1_0, &mut out);
        write_half.write_all(&out).await?;
        write_half.flush().await?;

        let mut decoder = Decoder::new(config.limits);
        let mut buf = BytesMut::with_capacity(HANDSHAKE_READ_BYTES);
        let reply = loop {
            match decoder.decode(&mut buf)? {
                Some(Item::Frame(frame)) => break frame,
                Some(Item::HeartBeat) => continue,
                None => {
                    buf.reserve(HANDSHAKE_READ_BYTES);
                    if read_half.read_buf(&mut buf).await? == 0 {
                        return Err(ClientError::Closed);
                    }
                }
            }
        };
        match reply.command {
            Command::Connected => {}
            Command::Error => {
                return Err(ClientError::Server {
                    message: reply.header("message").unwrap_or_default().to_owned(),
                    body: String::from_utf8_lossy(&reply.body).into_owned(),
                })
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected CONNECTED in reply to CONNECT, got {other}"
                )))
            }
        }
        // A server that sends no `version` header speaks STOMP 1.0.
        let version = match reply.header("version") {
            None => Version::V1_0,
            Some(v) => Version::parse(v).ok_or_else(|| {
                ClientError::Protocol(format!("CONNECTED has unknown version {v:?}"))
            })?,
        };
        let server_heartbeat = match reply.header("heart-beat") {
            None => HeartBeat::default(),
            Some(v) => HeartBeat::parse(v).map_err(|e| ClientError::Protocol(e.to_string()))?,
        };
        let (heartbeat_send_ms, heartbeat_expect_ms) =
            HeartBeat::negotiate(config.heart_beat, server_heartbeat);
        decoder.set_version(version);
        tracing::debug!(
            %version,
            session = reply.header("session").unwrap_or(""),
            server = reply.header("server").unwrap_or(""),
            heartbeat_send_ms,
            heartbeat_expect_ms,
            "connected"
        );

        let shared = Arc::new(Shared::new());
        let (queue, queue_rx) = mpsc::channel(OUTGOING_QUEUE_FRAMES_MAX);
        tokio::spawn(
            writer::run(
                write_half,
                queue_rx,
                shared.clone(),
                version,
                heartbeat_send_ms,
            )
            .instrument(span.clone()),
        );
        tokio::spawn(
            reader::run(read_half, decoder, buf, shared.clone(), heartbeat_expect_ms)
                .instrument(span),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                queue,
                shared,
                version,
                connected_headers: reply.headers.to_vec(),
                receipt_timeout: config.receipt_timeout,
                heartbeat_send_ms,
                heartbeat_expect_ms,
            }),
        })
    }

    /// The negotiated STOMP version.
    pub fn version(&self) -> Version {
        self.inner.version
    }

    /// The CONNECTED `session` header.
    pub fn session(&self) -> Option<String> {
        self.connected_header("session")
    }

    /// The CONNECTED `server` header.
    pub fn server(&self) -> Option<String> {
        self.connected_header("server")
    }

    /// Every header of the CONNECTED frame, in wire order.
    pub fn connected_headers(&self) -> Vec<(String, String)> {
        self.inner.connected_headers.clone()
    }

    /// The negotiated heart-beat intervals in ms, `(we send every, we expect every)`; 0 is off.
    pub fn heart_beat_ms(&self) -> (u64, u64) {
        (self.inner.heartbeat_send_ms, self.inner.heartbeat_expect_ms)
    }

    /// The first CONNECTED header named `name`.
    pub(crate) fn connected_header(&self, name: &str) -> Option<String> {
        self.inner
            .connected_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// Sends a SEND frame without a receipt. Returns once the frame is queued for the writer;
    /// the queue is bounded, so a fast producer waits here for the socket. Delivery is only
    /// confirmed by [`Client::send_with_receipt`].
    pub async fn send(
        &self,
        destination: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        self.enqueue(frames::send(destination, body.into(), headers))
            .await
    }

    /// Sends with a `receipt` header and waits for the RECEIPT (an ERROR fails it).
    pub async fn send_with_receipt(
        &self,
        destination: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        self.send_receipt_handle(destination, body, headers)
            .await?
            .wait()
            .await
    }

    /// Sends with a `receipt` header and returns without waiting, so that many sends can be in
    /// flight; [`ReceiptHandle::wait`] collects the outcome.
    pub async fn send_receipt_handle(
        &self,
        destination: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<ReceiptHandle, ClientError> {
        self.start_request(frames::send(destination, body.into(), headers))
            .await
    }

    /// Subscribes with a generated `id` (or the `id` in `headers`, if given) and a receipt, and
    /// returns once the broker confirmed the subscription.
    pub async fn subscribe(
        &self,
        destination: &str,
        ack: AckMode,
        headers: &[(&str, &str)],
    ) -> Result<Subscription, ClientError> {
        let id = match headers.iter().find(|(n, _)| *n == "id") {
            Some((_, id)) => (*id).to_owned(),
            None => format!("sub-{}", self.inner.shared.next_id()),
        };
        let rx = self.inner.shared.register_subscription(&id)?;
        // From here the Subscription owns the channel: if the request fails, its Drop removes
        // the channel again (and tries to UNSUBSCRIBE, in case the broker did subscribe).
        let subscription = Subscription::new(id.clone(), rx, self.clone());
        self.request(frames::subscribe(destination, &id, ack, headers))
            .await?;
        tracing::debug!(subscription = %id, destination, %ack, "subscribed");
        Ok(subscription)
    }

    /// Acknowledges `msg` (without a receipt), in the form the negotiated version requires:
    /// 1.2 sends `id` = the MESSAGE's `ack` header; 1.1 `message-id` and `subscription`;
    /// 1.0 `message-id`.
    pub async fn ack(
        &self,
        msg: &ReceivedMessage,
        transaction: Option<&str>,
    ) -> Result<(), ClientError> {
        let frame = frames::ack(Command::Ack, self.inner.version, msg, transaction)?;
        self.enqueue(frame).await
    }

    /// Rejects `msg` (without a receipt). Fails with `Unsupported` on STOMP 1.0.
    pub async fn nack(
        &self,
        msg: &ReceivedMessage,
        transaction: Option<&str>,
    ) -> Result<(), ClientError> {
        let frame = frames::ack(Command::Nack, self.inner.version, msg, transaction)?;
        self.enqueue(frame).await
    }

    /// Starts transaction `tx` and waits for the receipt.
    pub async fn begin(&self, tx: &str) -> Result<(), ClientError> {
        self.request(frames::transaction(Command::Begin, tx))
            .await
            .map(drop)
    }

    /// Commits transaction `tx` and waits for the receipt.
    pub async fn commit(&self, tx: &str) -> Result<(), ClientError> {
        self.request(frames::transaction(Command::Commit, tx))
            .await
            .map(drop)
    }

    /// Rolls back transaction `tx` and waits for the receipt.
    pub async fn abort(&self, tx: &str) -> Result<(), ClientError> {
        self.request(frames::transaction(Command::Abort, tx))
            .await
            .map(drop)
    }

    /// Queues `frame` as it is, for tests of unusual frames. Returns once queued.
    pub async fn send_frame(&self, frame: Frame) -> Result<(), ClientError> {
        self.enqueue(frame).await
    }

    /// Sets a fresh `receipt` header on `frame` (replacing any), sends it and returns the
    /// RECEIPT frame.
    pub async fn request(&self, frame: Frame) -> Result<Frame, ClientError> {
        self.start_request(frame).await?.wait_frame().await
    }

    /// Sends DISCONNECT with a receipt, waits for it and closes the connection for every clone.
    /// A server that closes the socket instead of answering counts as success.
    pub async fn disconnect(self) -> Result<(), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.inner.shared.set_disconnecting();
        let result = self.request(Frame::new(Command::Disconnect)).await;
        self.inner.shared.close(CloseReason::Local);
        match result {
            Ok(_) | Err(ClientError::Closed) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// Resolves when the connection ends. Returns what ended it: `None` for a close this side
    /// asked for (`disconnect`, or the server closing after our DISCONNECT), `Server` for an
    /// ERROR frame, `Closed` for the server dropping the connection unannounced, and `Io`,
    /// `Decode` or `Timeout("server heart-beat")` for the other failures.
    pub async fn closed(&self) -> Option<ClientError> {
        let mut closed = self.inner.shared.watch_closed();
        // Only errors if the sender is gone, which cannot happen while `self` holds `Shared`.
        let _ = closed.wait_for(|c| *c).await;
        self.inner.shared.close_reason().and_then(|r| r.outcome())
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Queues a frame for the writer, waiting while the queue is full.
    pub(crate) async fn enqueue(&self, frame: Frame) -> Result<(), ClientError> {
        if let Some(reason) = self.inner.shared.close_reason() {
            return Err(reason.to_error());
        }
        tracing::trace!(command = %frame.command, "queue frame");
        self.inner
            .queue
            .send(frame)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Queues a frame without waiting; for `Drop` impls, which cannot await.
    pub(crate) fn try_enqueue(&self, frame: Frame) -> Result<(), ClientError> {
        self.inner
            .queue
            .try_send(frame)
            .map_err(|_| ClientError::Closed)
    }

    /// Registers a receipt waiter, stamps `frame` with its id and queues it.
    pub(crate) async fn start_request(&self, frame: Frame) -> Result<ReceiptHandle, ClientError> {
        self.start_request_with(frame, self.inner.receipt_timeout)
            .await
    }

    /// [`Client::start_request`] with a receipt timeout of its own.
    pub(crate) async fn start_request_with(
        &self,
        mut frame: Frame,
        receipt_timeout: Duration,
    ) -> Result<ReceiptHandle, ClientError> {
        let (id, rx) = self.inner.shared.register_receipt()?;
        frame.set_header("receipt", id.as_str());
        // The handle exists before the frame is queued so that its Drop forgets the receipt
        // if queueing fails.
        let handle = ReceiptHandle::new(
            id,
            rx,
            self.inner.shared.clone(),
            Instant::now() + receipt_timeout,
        );
        self.enqueue(frame).await?;
        Ok(handle.restart_deadline(Instant::now() + receipt_timeout))
    }
}

/// Accepts `host:port`, `tcp://host:port` and `stomp://host:port`, ignoring an ActiveMQ-style
/// `?option=...` suffix.
pub(crate) fn parse_addr(addr: &str) -> Result<String, ClientError> {
    let invalid = || ClientError::InvalidAddress(addr.to_owned());
    let rest = addr.trim();
    let rest = rest
        .strip_prefix("tcp://")
        .or_else(|| rest.strip_prefix("stomp://"))
        .or_else(|| {
            crate::tls::TLS_SCHEMES
                .iter()
                .find_map(|s| rest.strip_prefix(s))
        })
        .unwrap_or(rest);
    let rest = rest.split(['?', '/']).next().unwrap_or_default();
    let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    Ok(rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_host_port_and_uri_form_are_accepted() {
        assert_eq!(parse_addr("localhost:61613").unwrap(), "localhost:61613");
        assert_eq!(
            parse_addr("tcp://10.0.0.1:61613").unwrap(),
            "10.0.0.1:61613"
        );
        assert_eq!(
            parse_addr("tcp://broker:61613?wireFormat.maxFrameSize=1").unwrap(),
            "broker:61613"
        );
        assert_eq!(parse_addr("[::1]:61613").unwrap(), "[::1]:61613");
        for bad in [
            "localhost",
            "tcp://:61613",
            "host:notaport",
            "host:70000",
            "",
        ] {
            assert!(
                matches!(parse_addr(bad), Err(ClientError::InvalidAddress(_))),
                "{bad:?} accepted"
            );
        }
    }
}
