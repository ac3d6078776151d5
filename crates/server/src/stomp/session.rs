//! One STOMP connection: a reader that turns frames into broker calls, and a writer that sends
//! replies and deliveries.
//!
//! The reader owns the session state (subscriptions, transactions) and never waits on the disk:
//! a persistent SEND's store completion travels to the writer with the RECEIPT it guards, and the
//! writer sends the RECEIPT only once the completion resolves. The writer is the only task that
//! touches the socket's write half; it batches whatever is queued into one write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferromq_broker::{
    AckMode, AckScope, Broker, BrokerError, ConsumerHandle, ConsumerId, ConsumerOptions, Delivery,
    DeliverySink, DestinationKind, DurableName, Message, Selector, TxWork, DEFAULT_PRIORITY,
    MAX_PRIORITY,
};
use ferromq_protocol::stomp::{
    encode, encode_heartbeat, negotiate_version, Command, DecodeError, Decoder, Frame,
    FrameEncoder, HeaderWriter, HeartBeat, Item, Limits, Version,
};
use ferromq_store::Completion;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::Instrument;

use super::dest;
use crate::config::Config;
use crate::conn_buf;
use crate::conn_stream::{ClientStream, ReadHalf, WriteHalf};
use crate::network::demand::{self, BROKER_NAME_HEADER, DEMAND_DESTINATION};

/// The topic whose `read` permission grants a network bridge's demand feed.
const DEMAND_ADVISORY_TOPIC: &str = "ActiveMQ.Advisory.Consumer";

/// Demand feeds one connection may open (a bridge needs one).
const DEMAND_FEEDS_PER_CONNECTION_MAX: usize = 4;
/// How long a demand feed waits after a snapshot before sending the next one.
const DEMAND_COALESCE_MS: u64 = 20;

/// The versions this server speaks.
const SUPPORTED: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];
/// Replies queued for the writer before the reader stops reading (backpressure on a client
/// that sends faster than it reads its receipts).
const CONTROL_QUEUE_MAX: usize = 1024;
/// Most bytes the writer gathers into one socket write.
const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Headers the broker sets itself; a producer's values for them are not copied to messages.
pub(crate) const RESERVED_HEADERS: [&str; 13] = [
    "destination",
    "receipt",
    "transaction",
    "content-length",
    "persistent",
    "priority",
    "expires",
    "message-id",
    "timestamp",
    "redelivered",
    "subscription",
    "ack",
    "reply-to",
];

/// The ERROR frame's `message` when an administrator closes the connection.
const ADMIN_CLOSE_MESSAGE: &str = "closed by an administrator";

/// What every connection shares.
#[derive(Debug)]
pub struct ConnectorContext {
    /// The broker.
    pub broker: Arc<Broker>,
    /// The configuration.
    pub config: Arc<Config>,
    /// Flips to true on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// The group, when clients are to be told about it (`updateClusterClients`).
    pub cluster: Option<crate::cluster::ClusterView>,
    /// The open client connections, for the admin API.
    pub connections: crate::connections::Connections,
    /// What a SIGHUP reloads: `[security]` (users, rules) and the TLS certificate.
    pub live: Arc<crate::reload::LiveConfig>,
}

/// A frame-level failure: becomes an ERROR frame, then the connection closes.
#[derive(Debug)]
struct StompError {
    message: String,
    detail: String,
}

impl StompError {
    fn new(message: impl Into<String>) -> StompError {
        StompError {
            message: message.into(),
            detail: String::new(),
        }
    }

    fn with_detail(message: impl Into<String>, detail: impl Into<String>) -> StompError {
        StompError {
            message: message.into(),
            detail: detail.into(),
        }
    }
}

impl From<BrokerError> for StompError {
    fn from(e: BrokerError) -> Self {
        StompError::new(e.to_string())
    }
}

fn error_frame(message: &str, detail: &str, receipt: Option<&str>) -> Frame {
    // A header value cannot hold a line break in STOMP 1.0 (no escaping), so flatten it.
    let flat: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let mut f = Frame::new(Command::Error)
        .with_header("message", flat)
        .with_header("content-type", "text/plain");
    if let Some(r) = receipt {
        f.push_header("receipt-id", r);
    }
    if !detail.is_empty() {
        f.body = bytes::Bytes::from(detail.to_string());
    }
    f
}

/// What the reader asks of the writer.
#[derive(Debug)]
enum Out {
    Frame(Frame),
    /// Sends `receipt` once `completion` resolves; on a store failure sends an ERROR (whose
    /// message starts with `failed`) and closes.
    AfterStore {
        completion: Completion,
        receipt: Option<String>,
        failed: &'static str,
    },
    /// Sends the frame (if any), flushes and closes.
    Close(Option<Frame>),
    /// Takes every delivery already queued for the connection, writes those of open
    /// subscriptions and finishes the write (and its auto-acks); then answers with the
    /// deliveries of closed subscriptions, which were not written. An UNSUBSCRIBE waits for
    /// this so that it neither overtakes an auto-ack of a message already written nor lets a
    /// message out for the subscription after its RECEIPT.
    Barrier(oneshot::Sender<Vec<Delivery>>),
}

#[derive(Debug)]
struct SubInfo {
    id: String,
    ack_mode: AckMode,
    /// Set by UNSUBSCRIBE (after the consumer is quiesced): the writer no longer writes this
    /// subscription's deliveries but hands them back (see [`Out::Barrier`]).
    closed: AtomicBool,
    /// A network bridge's subscription: it gets the JMS bookkeeping headers too, so that a
    /// message keeps its JMS form across the bridge.
    network: bool,
}

#[derive(Debug)]
struct DeliveryOut {
    sub: Arc<SubInfo>,
    delivery: Delivery,
}

/// The broker's way into this connection: deliveries go to the writer. Unbounded, because the
/// broker calls it under a destination lock and must not wait; the consumer's prefetch bounds
/// how many deliveries can be queued here.
#[derive(Debug)]
struct Sink {
    sub: Arc<SubInfo>,
    tx: mpsc::UnboundedSender<DeliveryOut>,
}

impl DeliverySink for Sink {
    fn deliver(&self, delivery: Delivery) {
        // If the writer is gone the connection is closing; the session's cleanup returns the
        // message to its destination.
        let _ = self.tx.send(DeliveryOut {
            sub: self.sub.clone(),
            delivery,
        });
    }
}

/// Deliveries outstanding for STOMP 1.0/1.1 clients, which ACK by `message-id`.
#[derive(Debug, Default)]
struct AckIndex {
    by_message_id: HashMap<String, Vec<(String, ConsumerId, u64)>>,
}

#[derive(Debug)]
struct Shared {
    version: AtomicU8,
    acks: Mutex<AckIndex>,
    temp_prefix: String,
    closed: AtomicBool,
    closed_notify: Notify,
}

impl Shared {
    fn version(&self) -> Version {
        match self.version.load(Ordering::Acquire) {
            2 => Version::V1_2,
            1 => Version::V1_1,
            _ => Version::V1_0,
        }
    }

    fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.closed_notify.notify_waiters();
    }
}

struct Subscription {
    handle: ConsumerHandle,
    info: Arc<SubInfo>,
}

#[derive(Default)]
struct Transaction {
    work: TxWork,
    frames: usize,
}

struct Session {
    ctx: Arc<ConnectorContext>,
    connection: u64,
    peer: SocketAddr,
    connected: bool,
    client_id: Option<String>,
    client_id_registered: bool,
    subs: HashMap<String, Subscription>,
    by_consumer: HashMap<ConsumerId, String>,
    txs: HashMap<String, Transaction>,
    ctl: mpsc::Sender<Out>,
    deliveries: mpsc::UnboundedSender<DeliveryOut>,
    shared: Arc<Shared>,
    decoder: Decoder,
    /// (send every, expect every) in ms, as negotiated on CONNECT.
    negotiated_hb: (u64, u64),
    closing: bool,
    /// Demand feeds of network bridges connected to this broker, by subscription id.
    demand_feeds: HashMap<String, tokio::task::AbortHandle>,
    /// Who logged in and their groups (for `[[security.authorization]]`).
    user: String,
    groups: Vec<String>,
    /// The `[security]` rules, as of the last reload this session has seen.
    security: crate::reload::SecurityView,
    /// The subject of the client's TLS certificate, when it presented one.
    peer_subject: Option<crate::dn::Dn>,
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve(stream: ClientStream, peer: SocketAddr, ctx: Arc<ConnectorContext>) {
    let connection = ctx.broker.next_connection_id();
    let span = tracing::info_span!("stomp", conn = connection, %peer);
    run(stream, peer, ctx, connection).instrument(span).await
}

async fn run(stream: ClientStream, peer: SocketAddr, ctx: Arc<ConnectorContext>, connection: u64) {
    let peer_subject = stream.peer_subject();
    let (mut rd, wr) = stream.into_split();
    let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE_MAX);
    let (dl_tx, dl_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        version: AtomicU8::new(0),
        acks: Mutex::new(AckIndex::default()),
        temp_prefix: ctx.broker.temp_prefix(connection),
        closed: AtomicBool::new(false),
        closed_notify: Notify::new(),
    });
    let limits = Limits {
        frame_bytes_max: ctx.config.stomp.max_frame_bytes,
        header_count_max: ctx.config.stomp.max_headers,
        header_line_bytes_max: ctx.config.stomp.max_header_line_bytes,
    };
    let (hb_tx, hb_rx) = watch::channel(0u64);
    let writer = tokio::spawn(
        writer(
            wr,
            ctl_rx,
            dl_rx,
            shared.clone(),
            ctx.broker.clone(),
            hb_rx,
            ctx.config.stomp.write_timeout_ms,
        )
        .in_current_span(),
    );
    let mut session = Session {
        ctx: ctx.clone(),
        connection,
        peer,
        connected: false,
        client_id: None,
        client_id_registered: false,
        subs: HashMap::new(),
        by_consumer: HashMap::new(),
        txs: HashMap::new(),
        ctl: ctl_tx,
        deliveries: dl_tx,
        shared: shared.clone(),
        decoder: Decoder::new(limits),
        negotiated_hb: (0, 0),
        closing: false,
        demand_feeds: HashMap::new(),
        user: String::new(),
        groups: Vec::new(),
        security: crate::reload::SecurityView::new(&ctx.live),
        peer_subject,
    };
    tracing::debug!("connection accepted");
    let reason = session.read_loop(&mut rd, hb_tx).await;
    tracing::debug!(reason, "connection closing");
    // Stop the writer first, so nothing more is written (and auto-acked) once the session's
    // subscriptions are gone and their messages are back on their destinations.
    let _ = session.ctl.send(Out::Close(None)).await;
    let left = writer.await.ok();
    session.cleanup(left);
}

impl Session {
    async fn read_loop(&mut self, rd: &mut ReadHalf, hb_tx: watch::Sender<u64>) -> &'static str {
        // Memory only while there is something to decode (`conn_buf`).
        let mut buf = BytesMut::new();
        let mut shutdown = self.ctx.shutdown.clone();
        // An administrator's `DELETE /api/v1/connections/{id}`.
        let admin_close = self.ctx.connections.close_signal("stomp", self.peer);
        let connect_timeout = Duration::from_millis(self.ctx.config.stomp.connect_timeout_ms);
        let grace = self.ctx.config.stomp.heart_beat_grace_multiplier.max(1.0);
        loop {
            // Handle every complete frame already buffered.
            loop {
                if self.closing {
                    return "closed by the session";
                }
                match self.decoder.decode(&mut buf) {
                    Ok(Some(Item::HeartBeat)) => {}
                    Ok(Some(Item::Frame(frame))) => {
                        let receipt = frame.header("receipt").map(str::to_owned);
                        let was_connected = self.connected;
                        if let Err(e) = self.handle(frame).await {
                            tracing::info!(error = %e.message, "closing connection after protocol error");
                            let f = error_frame(&e.message, &e.detail, receipt.as_deref());
                            let _ = self.ctl.send(Out::Close(Some(f))).await;
                            return "protocol error";
                        }
                        if self.connected && !was_connected {
                            let _ = hb_tx.send(self.negotiated_hb.0);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(error = %e, "closing connection after malformed frame");
                        let msg = decode_error_message(&e);
                        let f = error_frame(&msg, "", None);
                        let _ = self.ctl.send(Out::Close(Some(f))).await;
                        return "malformed frame";
                    }
                }
            }
            let deadline = if !self.connected {
                Some(connect_timeout)
            } else if self.negotiated_hb.1 > 0 {
                Some(Duration::from_millis(
                    (self.negotiated_hb.1 as f64 * grace) as u64,
                ))
            } else {
                None
            };
            conn_buf::release_if_empty(&mut buf);
            let read = conn_buf::read_some(rd, &mut buf);
            let closed = self.shared.closed_notify.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.shared.closed.load(Ordering::Acquire) {
                return "writer closed";
            }
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = read => match r {
                    Ok(0) => return "peer closed the connection",
                    Ok(_) => {}
                    Err(_) => return "read error",
                },
                _ = &mut closed => return "writer closed",
                _ = timeout => {
                    let why = if self.connected {
                        "no heart-beat or frame from the client within the negotiated interval"
                    } else {
                        "no CONNECT frame within the connect timeout"
                    };
                    tracing::info!(why, "closing silent connection");
                    let _ = self.ctl.send(Out::Close(Some(error_frame(why, "", None)))).await;
                    return "silent peer";
                }
                _ = admin_close.notified() => {
                    tracing::info!("connection closed by an administrator");
                    let f = error_frame(ADMIN_CLOSE_MESSAGE, "", None);
                    let _ = self.ctl.send(Out::Close(Some(f))).await;
                    return "closed by an administrator";
                }
                _ = shutdown.changed() => return "broker shutting down",
            }
        }
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), StompError> {
        tracing::trace!(command = %frame.command, "frame");
        self.security.refresh(&self.ctx.live);
        match frame.command {
            Command::Connect | Command::Stomp => self.on_connect(frame).await,
            _ if !self.connected => Err(StompError::new(format!(
                "Not connected: the first frame must be CONNECT or STOMP, got {}",
                frame.command
            ))),
            Command::Send => self.on_send(frame).await,
            Command::Subscribe => self.on_subscribe(frame).await,
            Command::Unsubscribe => self.on_unsubscribe(frame).await,
            Command::Ack => self.on_ack(frame, false).await,
            Command::Nack => self.on_ack(frame, true).await,
            Command::Begin => self.on_begin(frame).await,
            Command::Commit => self.on_commit(frame).await,
            Command::Abort => self.on_abort(frame).await,
            Command::Disconnect => {
                self.receipt_now(&frame).await;
                let _ = self.ctl.send(Out::Close(None)).await;
                self.closing = true;
                Ok(())
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                Err(StompError::new(format!(
                    "Unknown STOMP action: {} is a server frame",
                    frame.command
                )))
            }
        }
    }

    async fn receipt_now(&self, frame: &Frame) {
        if let Some(r) = frame.header("receipt") {
            let _ = self
                .ctl
                .send(Out::Frame(
                    Frame::new(Command::Receipt).with_header("receipt-id", r),
                ))
                .await;
        }
    }

    /// Receipts `frame` once `completion` resolves `Ok`; otherwise the client gets an ERROR
    /// saying `failed` (what did not happen) and the connection closes.
    async fn receipt_after(&self, frame: &Frame, completion: Completion, failed: &'static str) {
        let _ = self
            .ctl
            .send(Out::AfterStore {
                completion,
                receipt: frame.header("receipt").map(str::to_owned),
                failed,
            })
            .await;
    }

    async fn on_connect(&mut self, frame: Frame) -> Result<(), StompError> {
        if self.connected {
            return Err(StompError::new("Already connected"));
        }
        let accept = frame.header("accept-version");
        let Some(version) = negotiate_version(accept, &SUPPORTED) else {
            let _ = self
                .ctl
                .send(Out::Close(Some(
                    error_frame("Supported protocol versions are 1.0,1.1,1.2", "", None)
                        .with_header("version", "1.0,1.1,1.2"),
                )))
                .await;
            self.closing = true;
            return Ok(());
        };
        let security = self.security.get();
        if security.authentication_required() {
            let login = frame.header("login").unwrap_or("");
            let pass = frame.header("passcode").unwrap_or("");
            let subject = self.peer_subject.as_ref();
            let Some((user, groups)) = crate::security::login(security, subject, login, pass).await
            else {
                let cert = subject.map(ToString::to_string).unwrap_or_default();
                tracing::warn!(login, peer = %self.peer, certificate = %cert, "authentication failed");
                return Err(StompError::new(format!(
                    "User name [{login}] or password is invalid."
                )));
            };
            self.user = user;
            self.groups = groups;
        }
        if let Some(cid) = frame.header("client-id").filter(|c| !c.is_empty()) {
            self.ctx.broker.register_client_id(cid)?;
            self.client_id = Some(cid.to_string());
            self.client_id_registered = true;
        }
        let login = if self.user.is_empty() {
            frame.header("login")
        } else {
            Some(self.user.as_str())
        };
        self.ctx
            .connections
            .identify("stomp", self.peer, login, self.client_id.as_deref());
        let peer_hb = match (version, frame.header("heart-beat")) {
            (Version::V1_0, _) | (_, None) => HeartBeat::default(),
            (_, Some(h)) => HeartBeat::parse(h).map_err(|e| StompError::new(e.to_string()))?,
        };
        let min = self.ctx.config.stomp.heart_beat_min_ms;
        // Offer what the client asks for, but never faster than `heart_beat_min_ms`.
        let local = HeartBeat {
            send_ms: if peer_hb.recv_ms > 0 {
                peer_hb.recv_ms.max(min)
            } else {
                0
            },
            recv_ms: if peer_hb.send_ms > 0 {
                peer_hb.send_ms.max(min)
            } else {
                0
            },
        };
        let (send_ms, expect_ms) = HeartBeat::negotiate(local, peer_hb);
        self.negotiated_hb = (send_ms, expect_ms);
        self.decoder.set_version(version);
        self.shared.version.store(
            match version {
                Version::V1_0 => 0,
                Version::V1_1 => 1,
                Version::V1_2 => 2,
            },
            Ordering::Release,
        );
        self.connected = true;
        let mut reply = Frame::new(Command::Connected)
            .with_header("server", concat!("ferromq/", env!("CARGO_PKG_VERSION")))
            .with_header(
                "session",
                format!("ID:{}-{}", self.ctx.broker.config().name, self.connection),
            );
        if accept.is_some() {
            reply.push_header("version", version.as_str());
            reply.push_header("heart-beat", local.to_header());
        }
        if let Some(cluster) = &self.ctx.cluster {
            reply.push_header(crate::cluster::CLUSTER_HEADER, cluster.header_value());
        }
        tracing::debug!(%version, login = frame.header("login").unwrap_or(""), client_id = self.client_id.as_deref().unwrap_or(""), "connected");
        let _ = self.ctl.send(Out::Frame(reply)).await;
        Ok(())
    }

    fn destination(
        &self,
        frame: &Frame,
        what: &str,
    ) -> Result<ferromq_broker::Destination, StompError> {
        let d = frame.header("destination").ok_or_else(|| {
            StompError::new(format!("{what} received without a Destination specified!"))
        })?;
        let parsed = dest::parse(d).map_err(StompError::new)?;
        Ok(dest::resolve(&self.ctx.broker, self.connection, parsed))
    }

    /// Refuses what `[[security.authorization]]` does not allow: `action`, and creating a
    /// queue that does not exist yet (`admin`).
    fn authorize(
        &self,
        dest: &ferromq_broker::Destination,
        action: crate::authz::Action,
    ) -> Result<(), StompError> {
        let broker = &self.ctx.broker;
        let checked =
            self.security
                .get()
                .authz
                .check_use(&self.user, &self.groups, dest, action, || {
                    broker.queue_exists(dest)
                });
        checked.map_err(|reason| {
            tracing::warn!(user = %self.user, %reason, "not authorized");
            StompError::new(reason)
        })
    }

    async fn on_send(&mut self, frame: Frame) -> Result<(), StompError> {
        let destination = self.destination(&frame, "SEND")?;
        self.authorize(&destination, crate::authz::Action::Write)?;
        let persistent = self.ctx.config.broker.persistent_delivery
            || frame
                .header("persistent")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let priority = match frame.header("priority") {
            None => DEFAULT_PRIORITY,
            Some(p) => p
                .trim()
                .parse::<i64>()
                .map_err(|_| StompError::new(format!("Invalid priority header: {p}")))?
                .clamp(0, i64::from(MAX_PRIORITY)) as u8,
        };
        let expires_ms = match frame.header("expires") {
            None => 0,
            Some(e) => {
                let v = e
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| StompError::new(format!("Invalid expires header: {e}")))?;
                v.max(0) as u64
            }
        };
        let mut headers: Vec<(String, String)> = Vec::with_capacity(frame.headers.len());
        for (n, v) in &frame.headers {
            if RESERVED_HEADERS.contains(&n) || headers.iter().any(|(h, _)| h == n) {
                continue;
            }
            headers.push((n.to_owned(), v.to_owned()));
        }
        // ActiveMQ's mapping for JMS consumers: `amq-msg-type` decides, else a frame with
        // `content-length` is a BytesMessage and one without a TextMessage.
        let bytes_body = match frame.header("amq-msg-type") {
            Some(t) => t.eq_ignore_ascii_case("bytes"),
            None => frame.header("content-length").is_some(),
        };
        // A bridge's SEND carries the message as its origin stored it: no re-marking (its
        // framing always has `content-length`).
        let bridged = frame.header(ferromq_broker::BROKER_PATH_HEADER).is_some();
        if bytes_body
            && !bridged
            && !headers
                .iter()
                .any(|(n, _)| n == crate::openwire::JMS_KIND_HEADER)
        {
            headers.push((crate::openwire::JMS_KIND_HEADER.into(), "bytes".into()));
        }
        if let Some(r) = frame.header("reply-to") {
            // A reply-to naming this connection's temporary destination is rewritten to its
            // broker-wide name, so that whoever replies reaches it.
            let rendered = match dest::parse(r) {
                Ok(d @ dest::StompDest::LocalTemp(..)) => {
                    let resolved = dest::resolve(&self.ctx.broker, self.connection, d);
                    dest::render_global(&resolved)
                }
                _ => r.to_string(),
            };
            headers.push(("reply-to".into(), rendered));
        }
        let msg = Message {
            id: self.ctx.broker.next_message_id(),
            destination,
            headers,
            body: frame.body.clone(),
            persistent,
            priority,
            timestamp_ms: self.ctx.broker.now_ms(),
            expires_ms,
            producer_connection: self.connection,
            wire: Default::default(),
        };
        if let Some(tx) = frame.header("transaction") {
            let max = self.ctx.config.stomp.max_transaction_frames;
            let t = self
                .txs
                .get_mut(tx)
                .ok_or_else(|| StompError::new(format!("Invalid transaction id: {tx}")))?;
            if t.frames >= max {
                return Err(StompError::new(format!(
                    "Transaction {tx} exceeds the limit of {max} frames"
                )));
            }
            t.frames += 1;
            t.work.sends.push(msg);
            self.receipt_now(&frame).await;
            return Ok(());
        }
        let completion = self.ctx.broker.send(msg).await?;
        self.receipt_after(&frame, completion, "Message not stored")
            .await;
        Ok(())
    }

    async fn on_subscribe(&mut self, frame: Frame) -> Result<(), StompError> {
        let dest_header = frame.header("destination").unwrap_or("").to_string();
        if dest_header == DEMAND_DESTINATION {
            return self.on_demand_subscribe(frame).await;
        }
        let destination = self.destination(&frame, "SUBSCRIBE")?;
        self.authorize(&destination, crate::authz::Action::Read)?;
        let id = match (frame.header("id"), self.shared.version()) {
            (Some(id), _) => id.to_string(),
            // STOMP 1.0 makes the id optional; ActiveMQ then names the subscription after
            // its destination.
            (None, Version::V1_0) => dest_header.clone(),
            (None, _) => return Err(StompError::new("SUBSCRIBE received without an id header")),
        };
        if self.subs.contains_key(&id) {
            return Err(StompError::new(format!(
                "Duplicate subscription id: {id} is already in use on this connection"
            )));
        }
        if self.subs.len() >= self.ctx.config.stomp.max_subscriptions {
            return Err(StompError::new(format!(
                "Subscription limit of {} per connection reached",
                self.ctx.config.stomp.max_subscriptions
            )));
        }
        let ack_mode = match frame.header("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            other => {
                return Err(StompError::new(format!(
                    "Unsupported ack mode: {other} (expected auto, client or client-individual)"
                )))
            }
        };
        let selector = match frame.header("selector").filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(Arc::new(Selector::parse(s).map_err(|e| {
                StompError::with_detail(format!("Invalid selector: {s}"), e.to_string())
            })?)),
            None => None,
        };
        let policy = &self.ctx.config.policy;
        let default_prefetch = if destination.kind.is_queue() {
            policy.queue_prefetch
        } else {
            policy.topic_prefetch
        };
        let prefetch = match frame.header("activemq.prefetchSize") {
            Some(p) => p
                .trim()
                .parse::<u32>()
                .map_err(|_| StompError::new(format!("Invalid activemq.prefetchSize: {p}")))?
                .max(1),
            None => default_prefetch,
        };
        let flag = |name: &str| {
            frame
                .header(name)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        let priority = match frame.header("activemq.priority") {
            Some(p) => p
                .trim()
                .parse::<i64>()
                .map_err(|_| StompError::new(format!("Invalid activemq.priority: {p}")))?
                .clamp(i64::from(i8::MIN), i64::from(i8::MAX)) as i8,
            None => 0,
        };
        let opts = ConsumerOptions {
            ack_mode,
            prefetch,
            selector,
            exclusive: flag("activemq.exclusive"),
            no_local: flag("activemq.noLocal"),
            connection: self.connection,
            priority,
            // A duplex bridge pulling messages to its broker.
            network: demand::route_from_headers(|n| frame.header(n))
                .map_err(StompError::new)?
                .map(Arc::new),
        };
        let durable_name = frame
            .header("activemq.subscriptionName")
            .or_else(|| frame.header("durable-subscription-name"))
            .filter(|n| !n.is_empty());
        let durable = match durable_name {
            None => None,
            Some(name) => {
                if destination.kind != DestinationKind::Topic {
                    return Err(StompError::new(format!(
                        "Durable subscription {name} needs a /topic/ destination"
                    )));
                }
                let client_id = self.client_id.clone().ok_or_else(|| {
                    StompError::new("Durable subscriptions need a client-id header on CONNECT")
                })?;
                Some(DurableName {
                    client_id,
                    name: name.to_string(),
                })
            }
        };
        let info = Arc::new(SubInfo {
            id: id.clone(),
            ack_mode,
            closed: AtomicBool::new(false),
            network: opts.network.is_some(),
        });
        let sink = Arc::new(Sink {
            sub: info.clone(),
            tx: self.deliveries.clone(),
        });
        let (handle, completion) = self
            .ctx
            .broker
            .subscribe(&destination, opts, durable, sink)?;
        self.by_consumer.insert(handle.id, id.clone());
        self.subs.insert(id, Subscription { handle, info });
        self.receipt_after(&frame, completion, "Subscription not stored")
            .await;
        Ok(())
    }

    /// A network bridge asks where this broker's consumers are: it gets the whole demand now
    /// and again after every change, until it unsubscribes or disconnects.
    async fn on_demand_subscribe(&mut self, frame: Frame) -> Result<(), StompError> {
        // The feed says which destinations have consumers: with authorization rules, only a
        // user who may read consumer advisories gets it (ActiveMQ's network connector user
        // needs `ActiveMQ.Advisory.>` for the same reason).
        self.authorize(
            &ferromq_broker::Destination::topic(DEMAND_ADVISORY_TOPIC),
            crate::authz::Action::Read,
        )?;
        let id = frame
            .header("id")
            .ok_or_else(|| StompError::new("SUBSCRIBE received without an id header"))?
            .to_string();
        if self.subs.contains_key(&id) || self.demand_feeds.contains_key(&id) {
            return Err(StompError::new(format!(
                "Duplicate subscription id: {id} is already in use on this connection"
            )));
        }
        if self.demand_feeds.len() >= DEMAND_FEEDS_PER_CONNECTION_MAX {
            return Err(StompError::new(format!(
                "At most {DEMAND_FEEDS_PER_CONNECTION_MAX} demand subscriptions per connection"
            )));
        }
        self.receipt_now(&frame).await;
        let broker = self.ctx.broker.clone();
        let ctl = self.ctl.clone();
        let name = broker.config().name.clone();
        let mut changes = broker.watch_demand();
        let sub = id.clone();
        let task = tokio::spawn(
            async move {
                let mut n: u64 = 0;
                loop {
                    changes.borrow_and_update();
                    n += 1;
                    let frame = Frame::new(Command::Message)
                        .with_header("subscription", &sub)
                        .with_header("destination", DEMAND_DESTINATION)
                        .with_header("message-id", format!("demand-{n}"))
                        .with_header(BROKER_NAME_HEADER, &name)
                        .with_body(demand::encode(&broker.demand()));
                    if ctl.send(Out::Frame(frame)).await.is_err() {
                        return;
                    }
                    // Coalesces a burst of changes (a client attaching many consumers) into
                    // one snapshot.
                    tokio::time::sleep(Duration::from_millis(DEMAND_COALESCE_MS)).await;
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        tracing::debug!(subscription = %id, "network demand feed opened");
        self.demand_feeds.insert(id, task.abort_handle());
        Ok(())
    }

    async fn on_unsubscribe(&mut self, frame: Frame) -> Result<(), StompError> {
        let id = match (frame.header("id"), frame.header("destination")) {
            (Some(id), _) => id.to_string(),
            (None, Some(d)) if self.shared.version() == Version::V1_0 => d.to_string(),
            _ => return Err(StompError::new("UNSUBSCRIBE received without an id header")),
        };
        let destroy = frame
            .header("activemq.subscriptionName")
            .or_else(|| frame.header("durable-subscription-name"))
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        if let Some(feed) = self.demand_feeds.remove(&id) {
            feed.abort();
            self.receipt_now(&frame).await;
            return Ok(());
        }
        let completion = match self.subs.remove(&id) {
            Some(sub) => {
                self.by_consumer.remove(&sub.handle.id);
                self.close_subscription(&sub).await;
                self.forget_acks(&sub.info.id);
                self.ctx.broker.unsubscribe(&sub.handle, destroy.is_some())
            }
            None => match (destroy, &self.client_id) {
                // ActiveMQ lets a client remove an inactive durable subscription by name.
                (Some(name), Some(client_id)) => self.ctx.broker.destroy_durable(&DurableName {
                    client_id: client_id.clone(),
                    name,
                })?,
                _ => {
                    return Err(StompError::new(format!(
                        "No subscription matched: no subscription with id {id}"
                    )))
                }
            },
        };
        self.receipt_after(&frame, completion, "Unsubscribe not stored")
            .await;
        Ok(())
    }

    /// Gets a subscription ready to be detached: no more deliveries for it, what the writer
    /// already wrote is auto-acked (for `ack:auto`), and what it had not written yet goes back
    /// uncounted — the client never saw it, so it is neither redelivered nor a step towards
    /// the DLQ.
    async fn close_subscription(&self, sub: &Subscription) {
        self.ctx.broker.quiesce(&sub.handle);
        sub.info.closed.store(true, Ordering::Release);
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Out::Barrier(tx)).await.is_err() {
            // The writer is gone; `run` returns what it left to `cleanup`.
            return;
        }
        if let Ok(unwritten) = rx.await {
            let tags: Vec<u64> = unwritten
                .iter()
                .filter(|d| d.consumer == sub.handle.id)
                .map(|d| d.tag)
                .collect();
            if !tags.is_empty() {
                self.ctx.broker.uncount(&sub.handle, &tags);
            }
        }
    }

    fn forget_acks(&self, sub_id: &str) {
        let mut idx = self.shared.acks.lock();
        idx.by_message_id.retain(|_, v| {
            v.retain(|(s, _, _)| s != sub_id);
            !v.is_empty()
        });
    }

    /// Finds the delivery an ACK/NACK names: STOMP 1.2 by `id` (our `ack` header,
    /// `<consumer>:<tag>`), 1.0/1.1 by `message-id` (and `subscription` when given).
    fn find_delivery(&self, frame: &Frame) -> Result<(ConsumerId, u64), StompError> {
        if self.shared.version() == Version::V1_2 {
            let id = frame.header("id").ok_or_else(|| {
                StompError::new(format!("{} received without an id header", frame.command))
            })?;
            let parsed = id
                .split_once(':')
                .and_then(|(c, t)| Some((c.parse::<u64>().ok()?, t.parse::<u64>().ok()?)));
            return parsed.ok_or_else(|| {
                StompError::new(format!(
                    "Unexpected {} received for message-id [{id}]",
                    frame.command
                ))
            });
        }
        let mid = frame.header("message-id").ok_or_else(|| {
            StompError::new(format!(
                "{} received without a message-id header",
                frame.command
            ))
        })?;
        let sub = frame.header("subscription");
        let idx = self.shared.acks.lock();
        idx.by_message_id
            .get(mid)
            .and_then(|v| {
                v.iter()
                    .find(|(s, _, _)| sub.is_none_or(|want| want == s))
                    .map(|(_, c, t)| (*c, *t))
            })
            .ok_or_else(|| {
                StompError::new(format!(
                    "Unexpected {} received for message-id [{mid}]",
                    frame.command
                ))
            })
    }

    async fn on_ack(&mut self, frame: Frame, nack: bool) -> Result<(), StompError> {
        if nack && self.shared.version() == Version::V1_0 {
            return Err(StompError::new("NACK is not part of STOMP 1.0"));
        }
        let (consumer, tag) = self.find_delivery(&frame)?;
        let unexpected = || {
            StompError::new(format!(
                "Unexpected {} received: no outstanding delivery {consumer}:{tag} on this connection",
                frame.command
            ))
        };
        let sub_id = self
            .by_consumer
            .get(&consumer)
            .ok_or_else(unexpected)?
            .clone();
        let sub = self.subs.get(&sub_id).ok_or_else(unexpected)?;
        let handle = sub.handle.clone();
        let scope = match sub.info.ack_mode {
            AckMode::Client => AckScope::Cumulative(tag),
            AckMode::ClientIndividual | AckMode::Auto => AckScope::Individual(tag),
        };
        if nack {
            self.ctx
                .broker
                .nack(&handle, tag)
                .map_err(|_| unexpected())?;
            self.forget_delivery(&sub_id, consumer, |t| t == tag);
            self.receipt_now(&frame).await;
            return Ok(());
        }
        let tx = frame.header("transaction").map(str::to_owned);
        if let Some(tx) = &tx {
            let max = self.ctx.config.stomp.max_transaction_frames;
            let t = self
                .txs
                .get(tx)
                .ok_or_else(|| StompError::new(format!("Invalid transaction id: {tx}")))?;
            if t.frames >= max {
                return Err(StompError::new(format!(
                    "Transaction {tx} exceeds the limit of {max} frames"
                )));
            }
        }
        let (tags, completion) = self
            .ctx
            .broker
            .ack_with(
                &handle,
                scope,
                tx.is_some(),
                frame.header("receipt").is_some(),
            )
            .map_err(|_| unexpected())?;
        let max_tag = tags.iter().copied().max().unwrap_or(tag);
        match scope {
            AckScope::Cumulative(_) => self.forget_delivery(&sub_id, consumer, |t| t <= max_tag),
            AckScope::Individual(_) => self.forget_delivery(&sub_id, consumer, |t| t == tag),
        }
        if let Some(tx) = tx {
            if let Some(t) = self.txs.get_mut(&tx) {
                t.frames += 1;
                t.work.acks.push((handle, tags));
            }
            self.receipt_now(&frame).await;
        } else {
            self.receipt_after(&frame, completion, "Acknowledgement not stored")
                .await;
        }
        Ok(())
    }

    fn forget_delivery(&self, sub_id: &str, consumer: ConsumerId, covered: impl Fn(u64) -> bool) {
        if self.shared.version() == Version::V1_2 {
            return;
        }
        let mut idx = self.shared.acks.lock();
        idx.by_message_id.retain(|_, v| {
            v.retain(|(s, c, t)| !(s == sub_id && *c == consumer && covered(*t)));
            !v.is_empty()
        });
    }

    fn tx_name<'a>(&self, frame: &'a Frame) -> Result<&'a str, StompError> {
        frame
            .header("transaction")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                StompError::new(format!(
                    "{} received without a transaction header",
                    frame.command
                ))
            })
    }

    async fn on_begin(&mut self, frame: Frame) -> Result<(), StompError> {
        let tx = self.tx_name(&frame)?.to_string();
        if self.txs.contains_key(&tx) {
            return Err(StompError::new(format!(
                "Transaction {tx} is already started"
            )));
        }
        if self.txs.len() >= self.ctx.config.stomp.max_transactions {
            return Err(StompError::new(format!(
                "Transaction limit of {} per connection reached",
                self.ctx.config.stomp.max_transactions
            )));
        }
        self.txs.insert(tx, Transaction::default());
        self.receipt_now(&frame).await;
        Ok(())
    }

    async fn on_commit(&mut self, frame: Frame) -> Result<(), StompError> {
        let tx = self.tx_name(&frame)?.to_string();
        let t = self
            .txs
            .remove(&tx)
            .ok_or_else(|| StompError::new(format!("Invalid transaction id: {tx}")))?;
        let completion = self.ctx.broker.commit(t.work).await?;
        self.receipt_after(&frame, completion, "Transaction not committed")
            .await;
        Ok(())
    }

    async fn on_abort(&mut self, frame: Frame) -> Result<(), StompError> {
        let tx = self.tx_name(&frame)?.to_string();
        let t = self
            .txs
            .remove(&tx)
            .ok_or_else(|| StompError::new(format!("Invalid transaction id: {tx}")))?;
        self.ctx.broker.rollback(t.work);
        self.receipt_now(&frame).await;
        Ok(())
    }

    /// Gives back everything the connection held: open transactions roll back, unacknowledged
    /// deliveries return to their destinations, temporary destinations and the client id go.
    ///
    /// `left` is what the writer did not write: deliveries still queued for the connection (and
    /// any handed back for closed subscriptions). They go back uncounted.
    fn cleanup(&mut self, left: Option<WriterLeft>) {
        for (_, feed) in self.demand_feeds.drain() {
            feed.abort();
        }
        for (_, t) in self.txs.drain() {
            self.ctx.broker.rollback(t.work);
        }
        // No more deliveries to this connection: after this, the queue below holds all that
        // was handed to it and not written.
        for sub in self.subs.values() {
            self.ctx.broker.quiesce(&sub.handle);
        }
        if let Some(WriterLeft {
            mut deliveries,
            mut unwritten,
        }) = left
        {
            while let Ok(d) = deliveries.try_recv() {
                unwritten.push(d.delivery);
            }
            let mut by_consumer: HashMap<ConsumerId, Vec<u64>> = HashMap::new();
            for d in unwritten {
                by_consumer.entry(d.consumer).or_default().push(d.tag);
            }
            for sub in self.subs.values() {
                if let Some(tags) = by_consumer.get(&sub.handle.id) {
                    self.ctx.broker.uncount(&sub.handle, tags);
                }
            }
        }
        for (_, sub) in self.subs.drain() {
            drop(self.ctx.broker.unsubscribe(&sub.handle, false));
        }
        let cid = if self.client_id_registered {
            self.client_id.as_deref()
        } else {
            None
        };
        self.ctx.broker.connection_closed(self.connection, cid);
        tracing::debug!(peer = %self.peer, "connection closed");
    }
}

fn decode_error_message(e: &DecodeError) -> String {
    match e {
        DecodeError::UnknownCommand(c) => format!("Unknown STOMP action: {c}"),
        other => format!("Malformed frame: {other}"),
    }
}

/// The `message-id` a STOMP consumer sees: a JMS producer's JMSMessageID when the message has
/// one (as ActiveMQ shows it), else the broker's id.
fn stomp_message_id(m: &Message) -> String {
    m.header(crate::openwire::JMS_ID_HEADER)
        .map_or_else(|| m.id.to_string(), str::to_owned)
}

/// Appends a delivery as a MESSAGE frame to the write buffer, without building a `Frame`.
///
/// The per-delivery headers (`subscription`, `ack`, `redelivered`) are written each time; the
/// rest of the header block is the same for every subscriber, so for a topic message it is
/// encoded once per variant and kept on the message (`Message::wire`): a fan-out to N
/// subscribers escapes and formats the message's headers once, not N times. Queue messages
/// (one delivery each) are encoded directly, with no cache to keep in memory.
fn encode_message(d: &DeliveryOut, version: Version, temp_prefix: &str, out: &mut BytesMut) {
    let m = &d.delivery.message;
    out.reserve(m.body.len() + 256);
    let mut fe = FrameEncoder::new(out, Command::Message, version);
    fe.header("subscription", &d.sub.id);
    if version == Version::V1_2 {
        fe.header("ack", &ack_id(d.delivery.consumer, d.delivery.tag));
    }
    fe.header(
        "redelivered",
        if d.delivery.redelivered {
            "true"
        } else {
            "false"
        },
    );
    let network = d.sub.network;
    let cached = wire_slot(m, version, network).and_then(|slot| {
        m.wire.get_or_encode(slot, || {
            let mut block = BytesMut::with_capacity(256);
            let mut hw = HeaderWriter::new(&mut block, Command::Message, version);
            message_headers(&mut hw, m, network, temp_prefix);
            block.freeze()
        })
    });
    match cached {
        Some(block) => fe.header_block(block),
        None => message_headers(fe.header_writer(), m, network, temp_prefix),
    }
    fe.finish(&m.body);
}

/// `consumer:tag`, the 1.2 `ack` header's value.
fn ack_id(consumer: u64, tag: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(24);
    let _ = write!(s, "{consumer}:{tag}");
    s
}

/// The `Message::wire` slot of a delivery's shared header block, or `None` when the block
/// must not be shared: a queue message (delivered once, a cache would only cost memory) or one
/// that names a temporary destination (rendered differently for its owner's connection).
fn wire_slot(m: &Message, version: Version, network: bool) -> Option<usize> {
    if m.destination.kind.is_queue() || m.destination.kind.is_temporary() {
        return None;
    }
    if m.header("reply-to").is_some_and(
        |v| matches!(dest::parse(v), Ok(dest::StompDest::Named(dst)) if dst.kind.is_temporary()),
    ) {
        return None;
    }
    let v = match version {
        Version::V1_0 => 0,
        Version::V1_1 => 1,
        Version::V1_2 => 2,
    };
    let slot = v * 2 + usize::from(network);
    (slot < ferromq_broker::WIRE_CACHE_SLOTS).then_some(slot)
}

/// The MESSAGE headers every subscriber of a message sees alike: id, destination, the
/// broker's fields and the application headers (the JMS form of a message only for bridges).
fn message_headers(hw: &mut HeaderWriter<'_>, m: &Message, network: bool, temp_prefix: &str) {
    hw.header("message-id", &stomp_message_id(m));
    hw.header("destination", &dest::render(&m.destination, temp_prefix));
    if m.persistent {
        hw.header("persistent", "true");
    }
    hw.header_u64("priority", u64::from(m.priority));
    hw.header_u64("timestamp", m.timestamp_ms);
    hw.header_u64("expires", m.expires_ms);
    for (n, v) in &m.headers {
        if !network && n.starts_with(crate::openwire::JMS_HEADER_PREFIX) {
            // The JMS form of the message (body type, typed properties) is for JMS consumers.
            continue;
        }
        if n == "reply-to" {
            // Our own temporary destinations come back by their local names.
            match dest::parse(v) {
                Ok(dest::StompDest::Named(dst)) if dst.kind.is_temporary() => {
                    hw.header(n, &dest::render(&dst, temp_prefix));
                }
                _ => hw.header(n, v),
            }
        } else {
            hw.header(n, v);
        }
    }
}

/// What the writer leaves behind unwritten when it ends.
struct WriterLeft {
    deliveries: mpsc::UnboundedReceiver<DeliveryOut>,
    /// Deliveries of closed subscriptions not yet handed back by a barrier.
    unwritten: Vec<Delivery>,
}

/// Deliveries written or set aside in the current write, and who waits for it.
#[derive(Default)]
struct Pending {
    /// Auto-ack deliveries in the write buffer, acknowledged once it is handed to the socket.
    auto_acks: Vec<Delivery>,
    /// Deliveries of closed subscriptions, not written.
    unwritten: Vec<Delivery>,
    /// Barriers answered once the write is done.
    barriers: Vec<oneshot::Sender<Vec<Delivery>>>,
}

#[allow(clippy::too_many_arguments)]
async fn writer(
    mut wr: WriteHalf,
    mut ctl: mpsc::Receiver<Out>,
    mut deliveries: mpsc::UnboundedReceiver<DeliveryOut>,
    shared: Arc<Shared>,
    broker: Arc<Broker>,
    mut heartbeat: watch::Receiver<u64>,
    write_timeout_ms: u64,
) -> WriterLeft {
    // Grows with what is written; a large one is let go after its write (`conn_buf`).
    let mut buf = BytesMut::new();
    let mut pending = Pending::default();
    let mut hb_ms = 0u64;
    let write_timeout = (write_timeout_ms > 0).then(|| Duration::from_millis(write_timeout_ms));
    let mut close = false;
    // Heart-beats are due `hb_ms` after the last byte written, however busy the writer is
    // with work that writes nothing (a receipt-less SEND's store completion).
    let mut last_write = tokio::time::Instant::now();
    let mut hb_open = true;
    'outer: while !close {
        let idle = async {
            if hb_ms == 0 {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(last_write + Duration::from_millis(hb_ms)).await
            }
        };
        tokio::select! {
            biased;
            out = ctl.recv() => match out {
                Some(o) => close = handle_ctl(o, &mut buf, &shared, &mut deliveries, &mut pending).await,
                None => break 'outer,
            },
            Some(d) = deliveries.recv() => push_delivery(d, &mut buf, &shared, &mut pending),
            r = heartbeat.changed(), if hb_open => {
                match r {
                    Ok(()) => hb_ms = *heartbeat.borrow(),
                    // The reader is gone; the Close it sends next ends this loop.
                    Err(_) => hb_open = false,
                }
                continue 'outer;
            }
            _ = idle => encode_heartbeat(&mut buf),
        }
        // Gather whatever else is ready into the same write.
        while !close && buf.len() < WRITE_BATCH_BYTES_MAX {
            if let Ok(o) = ctl.try_recv() {
                close = handle_ctl(o, &mut buf, &shared, &mut deliveries, &mut pending).await;
            } else if let Ok(d) = deliveries.try_recv() {
                push_delivery(d, &mut buf, &shared, &mut pending);
            } else {
                break;
            }
        }
        if !buf.is_empty() {
            // TLS holds records in rustls until flushed; on TCP the flush is a no-op.
            let write = async {
                wr.write_all(&buf).await?;
                wr.flush().await
            };
            let ok = match write_timeout {
                Some(t) => match tokio::time::timeout(t, write).await {
                    Ok(r) => r.is_ok(),
                    Err(_) => {
                        tracing::warn!(timeout_ms = write_timeout_ms, "slow consumer: the client did not read its data within the write timeout; closing");
                        false
                    }
                },
                None => write.await.is_ok(),
            };
            if !ok {
                break 'outer;
            }
            conn_buf::written(&mut buf);
            last_write = tokio::time::Instant::now();
        }
        // Auto-ack only what has actually been handed to the socket.
        if !pending.auto_acks.is_empty() {
            drop(broker.ack_deliveries(&pending.auto_acks));
            pending.auto_acks.clear();
        }
        for b in pending.barriers.drain(..) {
            let _ = b.send(std::mem::take(&mut pending.unwritten));
        }
    }
    let _ = wr.shutdown().await;
    shared.set_closed();
    WriterLeft {
        deliveries,
        unwritten: pending.unwritten,
    }
}

/// A control message for the writer. Returns true when the connection must close after this.
async fn handle_ctl(
    out: Out,
    buf: &mut BytesMut,
    shared: &Shared,
    deliveries: &mut mpsc::UnboundedReceiver<DeliveryOut>,
    pending: &mut Pending,
) -> bool {
    let version = shared.version();
    match out {
        Out::Barrier(tx) => {
            // The subscription was quiesced before the barrier was sent: everything the broker
            // handed this connection for it is in the queue now.
            while let Ok(d) = deliveries.try_recv() {
                push_delivery(d, buf, shared, pending);
            }
            pending.barriers.push(tx);
            false
        }
        Out::Frame(f) => {
            encode(&f, version, buf);
            false
        }
        Out::AfterStore {
            completion,
            receipt,
            failed,
        } => match completion.await {
            Ok(()) => {
                if let Some(r) = receipt {
                    encode(
                        &Frame::new(Command::Receipt).with_header("receipt-id", r),
                        version,
                        buf,
                    );
                }
                false
            }
            Err(e @ ferromq_store::StoreError::Indeterminate(_)) => {
                // Neither RECEIPT nor ERROR: the write may survive on the replicas. Dropping
                // the connection is what a crash would look like, and a failover client then
                // resends it with its duplicate id to the next master.
                tracing::warn!(error = %e, "closing the connection without an answer: {failed}");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "store write failed: {failed}");
                let f = error_frame(&format!("{failed}: {e}"), "", receipt.as_deref());
                encode(&f, version, buf);
                true
            }
        },
        Out::Close(f) => {
            if let Some(f) = f {
                encode(&f, version, buf);
            }
            true
        }
    }
}

fn push_delivery(d: DeliveryOut, buf: &mut BytesMut, shared: &Shared, pending: &mut Pending) {
    if d.sub.closed.load(Ordering::Acquire) {
        pending.unwritten.push(d.delivery);
        return;
    }
    let version = shared.version();
    encode_message(&d, version, &shared.temp_prefix, buf);
    if d.sub.ack_mode == AckMode::Auto {
        pending.auto_acks.push(d.delivery);
    } else if version != Version::V1_2 {
        shared
            .acks
            .lock()
            .by_message_id
            .entry(stomp_message_id(&d.delivery.message))
            .or_default()
            .push((d.sub.id.clone(), d.delivery.consumer, d.delivery.tag));
    }
}
