//! One OpenWire connection: a reader that turns commands into broker calls, and a writer that
//! sends responses, dispatches and keep-alives.
//!
//! As in the STOMP connector, the reader owns the connection's state (consumers, transactions)
//! and never waits on the disk: a persistent send's store completion travels to the writer with
//! the `Response` it guards, and the writer answers only once the completion resolves — the JMS
//! client's `send()` returns when the message is durable. The writer is the only task that
//! touches the socket's write half.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use ferromq_broker::{
    AckMode, AckScope, Broker, BrokerError, ConsumerHandle, ConsumerOptions, Delivery,
    DeliverySink, Destination, DestinationKind, DurableName, Message, MessageProperties, Selector,
    TxWork,
};
use ferromq_protocol::openwire as ow;
use ferromq_store::{Completion, StoreError};
use ow::{Command, CommandHeader, MessageAck, PrimitiveMap, PrimitiveValue};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;

use super::convert::{self, Refused};
use super::{Live, Registry};
use crate::conn_buf;
use crate::conn_stream::{ClientStream, ReadHalf, WriteHalf};
use crate::stomp::ConnectorContext;

/// The newest OpenWire version this server speaks (ActiveMQ 5.17's).
const OPENWIRE_VERSION: u32 = 12;
/// The oldest client version accepted.
const OPENWIRE_VERSION_MIN: u32 = 9;
/// Replies queued for the writer before the reader stops reading (backpressure).
const CONTROL_QUEUE_MAX: usize = 1024;
/// Most bytes the writer gathers into one socket write.
const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Most messages one queue browser sees (ActiveMQ's `maxBrowsePageSize` default).
const BROWSE_MAX: usize = 400;
/// ActiveMQ's prefix of advisory topics. The JMS client always subscribes to the temporary
/// destination advisories; ferromq publishes none, so such consumers get nothing.
const ADVISORY_PREFIX: &str = "ActiveMQ.Advisory.";
/// ActiveMQ's `Message.getSize()` floor, used for ProducerAck sizes.
const MINIMUM_MESSAGE_SIZE: i32 = 1024;
/// Why an XA transaction fails.
const XA_REFUSED: &str = "XA transactions are not supported by ferromq";
/// `RemoveInfo.LAST_DELIVERED_UNKNOWN`.
const LAST_DELIVERED_UNKNOWN: i64 = -2;

/// Exception classes the JMS client knows how to rebuild (it instantiates only real
/// `Throwable` classes, since CVE-2023-46604).
const JMS_EXCEPTION: &str = "javax.jms.JMSException";
const INVALID_CLIENT_ID: &str = "javax.jms.InvalidClientIDException";
const INVALID_DESTINATION: &str = "javax.jms.InvalidDestinationException";
const INVALID_SELECTOR: &str = "javax.jms.InvalidSelectorException";
const SECURITY_EXCEPTION: &str = "java.lang.SecurityException";
const TX_EXCEPTION: &str = "javax.jms.TransactionRolledBackException";

/// A command the broker refuses: answered with an ExceptionResponse when the client waits for
/// an answer, otherwise with a ConnectionError and a close (an asynchronous send must not be
/// dropped silently).
#[derive(Debug)]
struct Refusal {
    class: &'static str,
    message: String,
}

impl Refusal {
    fn jms(message: impl Into<String>) -> Refusal {
        Refusal {
            class: JMS_EXCEPTION,
            message: message.into(),
        }
    }
}

impl From<BrokerError> for Refusal {
    fn from(e: BrokerError) -> Self {
        Refusal::jms(e.to_string())
    }
}

impl From<Refused> for Refusal {
    fn from(e: Refused) -> Self {
        Refusal::jms(e.0)
    }
}

fn broker_error(class: &str, message: &str) -> ow::BrokerError {
    ow::BrokerError {
        class_name: Some(class.to_string()),
        message: Some(message.to_string()),
        stack_trace: Vec::new(),
        cause: None,
    }
}

fn response(correlation_id: i32) -> Command {
    Command::Response(ow::Response {
        header: CommandHeader::default(),
        correlation_id,
    })
}

fn exception_response(correlation_id: i32, class: &str, message: &str) -> Command {
    Command::ExceptionResponse(ow::ExceptionResponse {
        header: CommandHeader::default(),
        correlation_id,
        exception: Some(broker_error(class, message)),
    })
}

fn connection_error(class: &str, message: &str) -> Command {
    Command::ConnectionError(ow::ConnectionError {
        header: CommandHeader::default(),
        exception: Some(broker_error(class, message)),
        connection_id: None,
    })
}

/// What the reader asks of the writer.
#[derive(Debug)]
enum Out {
    Cmd(Command),
    /// Once every completion resolves: a `Response` to `correlation` (if any) and a
    /// ProducerAck (if any); on a store failure an ExceptionResponse or ConnectionError, then
    /// the connection closes.
    AfterStore {
        completions: Vec<Completion>,
        correlation: Option<i32>,
        producer_ack: Option<(ow::ProducerId, i32)>,
        failed: &'static str,
    },
    /// The negotiated inactivity duration (ms, 0 = off).
    Negotiated {
        inactivity_ms: u64,
    },
    /// Sends the command (if any), flushes and closes.
    Close(Option<Command>),
}

/// One consumer as both halves see it.
#[derive(Debug)]
struct ConsumerState {
    id: ow::ConsumerId,
    /// The destination as the consumer named it (the dispatch's destination).
    dest: ow::Destination,
    /// Set once subscribed; the writer pauses a prefetch-0 consumer after each message.
    handle: OnceLock<ConsumerHandle>,
    /// What was dispatched and not yet acknowledged, in dispatch order: the client acks by
    /// MessageId, the broker by delivery tag.
    dispatched: Mutex<VecDeque<(ow::MessageId, u64)>>,
    /// Prefetch 0: the consumer takes a message only when it pulls.
    pull: bool,
    /// Deliveries handed to the sink (a pull checks whether one arrived).
    delivered: AtomicU64,
}

/// An advisory consumer, as the temp-destination registry sees it.
#[derive(Debug, Clone)]
pub(crate) struct AdvisoryWatcher {
    consumer: Arc<ConsumerState>,
    tx: mpsc::UnboundedSender<DeliveryOut>,
}

impl AdvisoryWatcher {
    fn send(&self, info: &ow::DestinationInfo, seq: i64) {
        let topic = match info.destination.as_ref().map(|d| d.kind) {
            Some(ow::DestinationKind::TempTopic) => "ActiveMQ.Advisory.TempTopic",
            _ => "ActiveMQ.Advisory.TempQueue",
        };
        let msg = ow::Message {
            kind: ow::MessageKind::Message,
            message_id: Some(ow::MessageId {
                text_view: None,
                producer_id: Some(ow::ProducerId {
                    connection_id: "ID:ferromq-advisory".into(),
                    value: 0,
                    session_id: 0,
                }),
                producer_sequence_id: seq,
                broker_sequence_id: 0,
            }),
            destination: Some(ow::Destination {
                kind: ow::DestinationKind::Topic,
                physical_name: topic.into(),
            }),
            data_structure: Some(Box::new(ow::DataStructure::Command(Box::new(
                Command::DestinationInfo(info.clone()),
            )))),
            ..Default::default()
        };
        let _ = self
            .tx
            .send(DeliveryOut::Advisory(self.consumer.clone(), Box::new(msg)));
    }
}

/// Numbers advisory messages (the client's duplicate audit wants increasing ids).
static ADVISORY_SEQ: AtomicU64 = AtomicU64::new(1);

fn next_advisory_seq() -> i64 {
    ADVISORY_SEQ.fetch_add(1, Ordering::Relaxed) as i64
}

#[derive(Debug)]
enum DeliveryOut {
    Message(Arc<ConsumerState>, Delivery),
    Advisory(Arc<ConsumerState>, Box<ow::Message>),
    Browse(Arc<ConsumerState>, Arc<Message>),
    /// A dispatch with no message: the end of a browse, or a pull that found nothing.
    End(Arc<ConsumerState>),
}

/// The broker's way into this connection. Unbounded because the broker calls it under a
/// destination lock; the consumer's prefetch bounds what can be queued here.
#[derive(Debug)]
struct Sink {
    consumer: Arc<ConsumerState>,
    tx: mpsc::UnboundedSender<DeliveryOut>,
}

impl DeliverySink for Sink {
    fn deliver(&self, delivery: Delivery) {
        self.consumer.delivered.fetch_add(1, Ordering::AcqRel);
        let _ = self
            .tx
            .send(DeliveryOut::Message(self.consumer.clone(), delivery));
    }
}

#[derive(Debug)]
struct Shared {
    version: AtomicU32,
    closed: AtomicBool,
    closed_notify: Notify,
}

impl Shared {
    fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.closed_notify.notify_waiters();
    }
}

struct Consumer {
    state: Arc<ConsumerState>,
    /// `None` for advisory consumers and browsers, which hold nothing in the broker.
    handle: Option<ConsumerHandle>,
}

#[derive(Default)]
struct Transaction {
    work: TxWork,
    ops: usize,
    /// Why the transaction can only roll back: one of its acks was not applied.
    rollback_only: Option<String>,
}

struct Session {
    ctx: Arc<ConnectorContext>,
    /// Who logged in and their groups (for `[[security.authorization]]`).
    user: String,
    groups: Vec<String>,
    /// The `[security]` rules, as of the last reload this session has seen.
    security: crate::reload::SecurityView,
    /// The subject of the client's TLS certificate, when it presented one.
    peer_subject: Option<crate::dn::Dn>,
    connection: u64,
    peer: SocketAddr,
    version: u32,
    connected: bool,
    client_id: Option<String>,
    client_id_registered: bool,
    consumers: HashMap<ow::ConsumerId, Consumer>,
    /// Producers and their `producerWindowSize` (ProducerAcks owed when above 0).
    producers: HashMap<ow::ProducerId, i32>,
    /// The fixed destination of each producer that has one, counted on the broker's queue
    /// (`Broker::producer_opened`) until the producer, its session or this connection closes.
    producer_dests: HashMap<ow::ProducerId, ferromq_broker::Destination>,
    txs: HashMap<ow::TransactionId, Transaction>,
    ctl: mpsc::Sender<Out>,
    deliveries: mpsc::UnboundedSender<DeliveryOut>,
    shared: Arc<Shared>,
    inactivity_ms: u64,
    map_limits: ow::MapLimits,
    closing: bool,
    registry: Arc<Registry>,
    /// The client's ConnectionId, once connected.
    ow_connection_id: Option<String>,
    /// Notified when a reconnecting client replaces this connection.
    kill: Arc<Notify>,
    /// Set to true once this connection has released everything.
    gone: watch::Sender<bool>,
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve(
    stream: ClientStream,
    peer: SocketAddr,
    ctx: Arc<ConnectorContext>,
    registry: Arc<Registry>,
) {
    let connection = ctx.broker.next_connection_id();
    let span = tracing::info_span!("openwire", conn = connection, %peer);
    run(stream, peer, ctx, connection, registry)
        .instrument(span)
        .await
}

fn our_wire_format(ctx: &ConnectorContext) -> Command {
    let cfg = &ctx.config.openwire;
    let mut p = PrimitiveMap::new();
    // Loose encoding without the marshal cache is all this server speaks; the client ANDs
    // these flags with its own, so it never uses the others.
    p.insert("TightEncodingEnabled", PrimitiveValue::Bool(false));
    p.insert("CacheEnabled", PrimitiveValue::Bool(false));
    p.insert("CacheSize", PrimitiveValue::Int(0));
    p.insert("SizePrefixDisabled", PrimitiveValue::Bool(false));
    p.insert("StackTraceEnabled", PrimitiveValue::Bool(false));
    p.insert("TcpNoDelayEnabled", PrimitiveValue::Bool(true));
    p.insert(
        "MaxInactivityDuration",
        PrimitiveValue::Long(cfg.max_inactivity_duration_ms as i64),
    );
    p.insert(
        "MaxInactivityDurationInitalDelay",
        PrimitiveValue::Long(10_000),
    );
    p.insert(
        "MaxFrameSize",
        PrimitiveValue::Long(cfg.max_frame_bytes as i64),
    );
    p.insert("ProviderName", PrimitiveValue::String("ferromq".into()));
    p.insert(
        "ProviderVersion",
        PrimitiveValue::String(env!("CARGO_PKG_VERSION").into()),
    );
    Command::WireFormatInfo(ow::WireFormatInfo {
        magic: ow::MAGIC,
        version: OPENWIRE_VERSION as i32,
        marshalled_properties: ow::map::encode_map(Some(&p)).ok(),
    })
}

async fn run(
    stream: ClientStream,
    peer: SocketAddr,
    ctx: Arc<ConnectorContext>,
    connection: u64,
    registry: Arc<Registry>,
) {
    let peer_subject = stream.peer_subject();
    let (mut rd, wr) = stream.into_split();
    let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE_MAX);
    let (dl_tx, dl_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        version: AtomicU32::new(OPENWIRE_VERSION),
        closed: AtomicBool::new(false),
        closed_notify: Notify::new(),
    });
    let writer = tokio::spawn(
        writer(
            wr,
            ctl_rx,
            dl_rx,
            shared.clone(),
            ctx.broker.clone(),
            ctx.config.openwire.write_timeout_ms,
        )
        .in_current_span(),
    );
    let mut session = Session {
        ctx: ctx.clone(),
        user: String::new(),
        groups: Vec::new(),
        security: crate::reload::SecurityView::new(&ctx.live),
        peer_subject,
        connection,
        peer,
        version: 0,
        connected: false,
        client_id: None,
        client_id_registered: false,
        consumers: HashMap::new(),
        producers: HashMap::new(),
        producer_dests: HashMap::new(),
        txs: HashMap::new(),
        ctl: ctl_tx,
        deliveries: dl_tx,
        shared: shared.clone(),
        inactivity_ms: 0,
        map_limits: ow::MapLimits::default(),
        closing: false,
        registry,
        ow_connection_id: None,
        kill: Arc::new(Notify::new()),
        gone: watch::channel(false).0,
    };
    // The broker speaks first, as ActiveMQ does: the client's negotiator waits for it.
    let _ = session.ctl.send(Out::Cmd(our_wire_format(&ctx))).await;
    tracing::debug!("connection accepted");
    let reason = session.read_loop(&mut rd).await;
    tracing::debug!(reason, "connection closing");
    let _ = session.ctl.send(Out::Close(None)).await;
    let _ = writer.await;
    session.cleanup();
}

impl Session {
    async fn read_loop(&mut self, rd: &mut ReadHalf) -> &'static str {
        // Memory only while there is something to decode (`conn_buf`).
        let mut buf = BytesMut::new();
        let mut decoder = ow::Decoder::new(self.ctx.config.openwire.max_frame_bytes);
        let mut shutdown = self.ctx.shutdown.clone();
        let connect_timeout = Duration::from_millis(self.ctx.config.openwire.connect_timeout_ms);
        let kill = self.kill.clone();
        // An administrator's `DELETE /api/v1/connections/{id}`.
        let admin_close = self.ctx.connections.close_signal("openwire", self.peer);
        loop {
            loop {
                if self.closing {
                    return "closed by the session";
                }
                let frame = match decoder.decode(&mut buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(error = %e, "closing connection after a malformed frame");
                        let msg = format!("Malformed OpenWire frame: {e}");
                        let _ = self
                            .ctl
                            .send(Out::Close(Some(connection_error(JMS_EXCEPTION, &msg))))
                            .await;
                        return "malformed frame";
                    }
                };
                let version = if self.version == 0 {
                    OPENWIRE_VERSION
                } else {
                    self.version
                };
                let cmd = match ow::decode_command(&frame, version) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::info!(error = %e, data_type = frame.data_type, "closing connection after an undecodable command");
                        let msg = format!(
                            "Cannot decode OpenWire command of type {}: {e}",
                            frame.data_type
                        );
                        let _ = self
                            .ctl
                            .send(Out::Close(Some(connection_error(JMS_EXCEPTION, &msg))))
                            .await;
                        return "undecodable command";
                    }
                };
                self.on_command(cmd).await;
            }
            let deadline = if self.version == 0 {
                Some(connect_timeout)
            } else if self.inactivity_ms > 0 {
                // The client writes at least every third of the duration.
                Some(Duration::from_millis(
                    self.inactivity_ms + self.inactivity_ms / 2,
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
                _ = kill.notified() => return "replaced by the same client reconnecting",
                _ = admin_close.notified() => {
                    // As ActiveMQ's ConnectionViewMBean.stop: the client learns why, then the
                    // transport closes (a failover client reconnects).
                    tracing::info!("connection closed by an administrator");
                    let why = "closed by an administrator";
                    let _ = self.ctl.send(Out::Close(Some(connection_error(JMS_EXCEPTION, why)))).await;
                    return "closed by an administrator";
                }
                _ = timeout => {
                    let why = if self.version == 0 {
                        "no WireFormatInfo from the client within the connect timeout"
                    } else {
                        "Channel was inactive for too (>30000) long"
                    };
                    tracing::info!(why, "closing silent connection");
                    let _ = self.ctl.send(Out::Close(Some(connection_error(JMS_EXCEPTION, why)))).await;
                    return "silent peer";
                }
                _ = shutdown.changed() => {
                    let cmd = Command::ShutdownInfo(ow::ShutdownInfo::default());
                    let _ = self.ctl.send(Out::Close(Some(cmd))).await;
                    return "broker shutting down";
                }
            }
        }
    }

    async fn send_out(&self, out: Out) {
        let _ = self.ctl.send(out).await;
    }

    async fn respond(&self, header: &CommandHeader) {
        if header.response_required {
            self.send_out(Out::Cmd(response(header.command_id))).await;
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        let header = cmd.header().copied().unwrap_or_default();
        let result = self.handle(cmd).await;
        if let Err(r) = result {
            if header.response_required {
                tracing::debug!(class = r.class, message = %r.message, "command refused");
                self.send_out(Out::Cmd(exception_response(
                    header.command_id,
                    r.class,
                    &r.message,
                )))
                .await;
            } else {
                tracing::info!(class = r.class, message = %r.message, "closing connection after a refused asynchronous command");
                self.send_out(Out::Close(Some(connection_error(r.class, &r.message))))
                    .await;
                self.closing = true;
            }
        }
    }

    async fn handle(&mut self, cmd: Command) -> Result<(), Refusal> {
        self.security.refresh(&self.ctx.live);
        if self.version == 0 && !matches!(cmd, Command::WireFormatInfo(_)) {
            return Err(Refusal::jms("The first command must be WireFormatInfo"));
        }
        match cmd {
            Command::WireFormatInfo(w) => self.on_wire_format(w).await,
            Command::ConnectionInfo(c) => self.on_connection_info(c).await,
            Command::ShutdownInfo(_) => {
                self.closing = true;
                Ok(())
            }
            // A failover client sends ConnectionControl before its ConnectionInfo; keep-alives
            // and the like may come at any time.
            Command::SessionInfo(_)
            | Command::ProducerInfo(_)
            | Command::ConsumerInfo(_)
            | Command::Message(_)
            | Command::MessageAck(_)
            | Command::MessagePull(_)
            | Command::TransactionInfo(_)
            | Command::RemoveInfo(_)
            | Command::DestinationInfo(_)
            | Command::RemoveSubscriptionInfo(_)
                if !self.connected =>
            {
                Err(Refusal::jms(
                    "Not connected: the first command after WireFormatInfo must be ConnectionInfo",
                ))
            }
            Command::SessionInfo(s) => {
                self.respond(&s.header).await;
                Ok(())
            }
            Command::ProducerInfo(p) => {
                let max = self.ctx.config.openwire.max_producers;
                if self.producers.len() >= max {
                    return Err(Refusal::jms(format!(
                        "Producer limit of {max} per connection reached"
                    )));
                }
                if let Some(id) = p.producer_id {
                    if let Some(d) = &p.destination {
                        let dest = crate::openwire::convert::to_broker_dest(d);
                        self.ctx.broker.producer_opened(&dest);
                        if let Some(old) = self.producer_dests.insert(id.clone(), dest) {
                            // The same producer announced again: counted once.
                            self.ctx.broker.producer_closed(&old);
                        }
                    }
                    self.producers.insert(id, p.window_size);
                }
                self.respond(&p.header).await;
                Ok(())
            }
            Command::ConsumerInfo(c) => self.on_consumer_info(c).await,
            Command::Message(m) => self.on_message(*m).await,
            Command::MessageAck(a) => self.on_ack(a).await,
            Command::MessagePull(p) => self.on_pull(p).await,
            Command::TransactionInfo(t) => self.on_transaction(t).await,
            Command::RemoveInfo(r) => self.on_remove(r).await,
            Command::DestinationInfo(d) => self.on_destination_info(d).await,
            Command::RemoveSubscriptionInfo(r) => self.on_remove_subscription(r).await,
            Command::KeepAliveInfo(k) => {
                if k.header.response_required {
                    self.send_out(Out::Cmd(Command::KeepAliveInfo(
                        ow::KeepAliveInfo::default(),
                    )))
                    .await;
                }
                Ok(())
            }
            Command::ConnectionControl(c) => {
                self.respond(&c.header).await;
                Ok(())
            }
            Command::ConsumerControl(c) => {
                self.respond(&c.header).await;
                Ok(())
            }
            Command::FlushCommand(c) => {
                self.respond(&c.header).await;
                Ok(())
            }
            Command::ControlCommand(c) => {
                self.respond(&c.header).await;
                Ok(())
            }
            Command::BrokerInfo(_) => Err(Refusal::jms(
                "Network connectors from ActiveMQ brokers are not supported by ferromq",
            )),
            // Answers and server-side commands a client has no reason to send: ignored.
            other => {
                tracing::debug!(data_type = other.type_id(), "ignoring unexpected command");
                Ok(())
            }
        }
    }

    async fn on_wire_format(&mut self, w: ow::WireFormatInfo) -> Result<(), Refusal> {
        if &w.magic != b"ActiveMQ" {
            self.closing = true;
            return Err(Refusal::jms("Not an OpenWire client (bad magic)"));
        }
        if self.version != 0 {
            // A renegotiation: nothing to change for a loose-only server.
            return Ok(());
        }
        let theirs = u32::try_from(w.version).unwrap_or(0);
        if theirs < OPENWIRE_VERSION_MIN {
            self.closing = true;
            return Err(Refusal::jms(format!(
                "OpenWire version {theirs} is not supported (ferromq speaks {OPENWIRE_VERSION_MIN} to {OPENWIRE_VERSION})"
            )));
        }
        let version = theirs.min(OPENWIRE_VERSION);
        let props = w
            .properties(&self.map_limits)
            .map_err(|e| Refusal::jms(format!("Invalid WireFormatInfo properties: {e}")))?;
        let their_inactivity = Some(&props)
            .and_then(|p| match p.get("MaxInactivityDuration") {
                Some(PrimitiveValue::Long(v)) => Some(*v),
                Some(PrimitiveValue::Int(v)) => Some(i64::from(*v)),
                _ => None,
            })
            .unwrap_or(0)
            .max(0) as u64;
        let ours = self.ctx.config.openwire.max_inactivity_duration_ms;
        self.inactivity_ms = if ours == 0 || their_inactivity == 0 {
            0
        } else {
            ours.min(their_inactivity)
        };
        self.version = version;
        self.shared.version.store(version, Ordering::Release);
        self.send_out(Out::Negotiated {
            inactivity_ms: self.inactivity_ms,
        })
        .await;
        let name = &self.ctx.broker.config().name;
        let info = ow::BrokerInfo {
            broker_id: Some(ow::BrokerId {
                value: format!("ID:{name}"),
            }),
            broker_url: self
                .ctx
                .config
                .openwire_listen_addr()
                .map(|a| format!("tcp://{a}")),
            broker_name: Some(name.clone()),
            ..Default::default()
        };
        self.send_out(Out::Cmd(Command::BrokerInfo(info))).await;
        tracing::debug!(
            version,
            inactivity_ms = self.inactivity_ms,
            "wire format negotiated"
        );
        Ok(())
    }

    async fn on_connection_info(&mut self, c: ow::ConnectionInfo) -> Result<(), Refusal> {
        if self.connected {
            // The same connection again (a client replaying its state): already set up.
            self.respond(&c.header).await;
            return Ok(());
        }
        let security = self.security.get();
        if security.authentication_required() {
            let login = c.user_name.as_deref().unwrap_or("");
            let pass = c.password.as_deref().unwrap_or("");
            let subject = self.peer_subject.as_ref();
            let Some((user, groups)) = crate::security::login(security, subject, login, pass).await
            else {
                let cert = subject.map(ToString::to_string).unwrap_or_default();
                tracing::warn!(login, peer = %self.peer, certificate = %cert, "authentication failed");
                return Err(Refusal {
                    class: SECURITY_EXCEPTION,
                    message: format!("User name [{login}] or password is invalid."),
                });
            };
            self.user = user;
            self.groups = groups;
        }
        let ow_id = c
            .connection_id
            .as_ref()
            .map(|i| i.value.clone())
            .unwrap_or_default();
        if let Some(cid) = c.client_id.as_deref().filter(|c| !c.is_empty()) {
            if let Err(e) = self.ctx.broker.register_client_id(cid) {
                // The same client (same ConnectionId) on a new socket: its old connection is
                // stale. Close it, wait until it has given everything back, then take over.
                let stale = self
                    .registry
                    .get(cid)
                    .filter(|l| !ow_id.is_empty() && l.connection_id == ow_id);
                let Some(stale) = stale else {
                    return Err(Refusal {
                        class: INVALID_CLIENT_ID,
                        message: e.to_string(),
                    });
                };
                tracing::info!(
                    client_id = cid,
                    "replacing the stale connection of a reconnecting client"
                );
                stale.kill.notify_one();
                let mut gone = stale.gone.clone();
                let released =
                    tokio::time::timeout(Duration::from_secs(10), gone.wait_for(|g| *g)).await;
                if released.is_err() {
                    return Err(Refusal {
                        class: INVALID_CLIENT_ID,
                        message: format!("{e} (its old connection did not close in time)"),
                    });
                }
                self.ctx
                    .broker
                    .register_client_id(cid)
                    .map_err(|e| Refusal {
                        class: INVALID_CLIENT_ID,
                        message: e.to_string(),
                    })?;
            }
            self.client_id = Some(cid.to_string());
            self.client_id_registered = true;
            self.registry.insert(
                cid,
                Live {
                    connection_id: ow_id.clone(),
                    kill: self.kill.clone(),
                    gone: self.gone.subscribe(),
                },
            );
        }
        self.ow_connection_id = Some(ow_id);
        self.connected = true;
        let login = if self.user.is_empty() {
            c.user_name.as_deref()
        } else {
            Some(self.user.as_str())
        };
        self.ctx
            .connections
            .identify("openwire", self.peer, login, self.client_id.as_deref());
        tracing::debug!(
            client_id = self.client_id.as_deref().unwrap_or(""),
            failover_reconnect = c.failover_reconnect,
            "connected"
        );
        // `updateClusterClients`: tell the failover transport the group's other brokers.
        if let Some(cluster) = &self.ctx.cluster {
            let brokers = cluster.openwire_value();
            if !brokers.is_empty() {
                let control = ow::ConnectionControl {
                    connected_brokers: Some(brokers),
                    ..Default::default()
                };
                self.respond(&c.header).await;
                self.send_out(Out::Cmd(Command::ConnectionControl(control)))
                    .await;
                return Ok(());
            }
        }
        self.respond(&c.header).await;
        Ok(())
    }

    fn destination(&self, d: Option<&ow::Destination>, what: &str) -> Result<Destination, Refusal> {
        let d = d.ok_or_else(|| Refusal {
            class: INVALID_DESTINATION,
            message: format!("{what} without a destination"),
        })?;
        if d.physical_name.is_empty() {
            return Err(Refusal {
                class: INVALID_DESTINATION,
                message: format!("{what}: the destination name is empty"),
            });
        }
        if d.physical_name.contains(',') {
            return Err(Refusal {
                class: INVALID_DESTINATION,
                message: format!(
                    "Composite destinations ({}) are not supported by ferromq",
                    d.physical_name
                ),
            });
        }
        Ok(convert::to_broker_dest(d))
    }

    /// Refuses what `[[security.authorization]]` does not allow (a `SecurityException`, which
    /// the JMS client throws as `JMSSecurityException`): `action`, and creating a queue that
    /// does not exist yet (`admin`).
    fn authorize(&self, dest: &Destination, action: crate::authz::Action) -> Result<(), Refusal> {
        let broker = &self.ctx.broker;
        self.security
            .get()
            .authz
            .check_use(&self.user, &self.groups, dest, action, || {
                broker.queue_exists(dest)
            })
            .map_err(|reason| {
                tracing::warn!(user = %self.user, %reason, "not authorized");
                Refusal {
                    class: SECURITY_EXCEPTION,
                    message: reason,
                }
            })
    }

    async fn on_message(&mut self, m: ow::Message) -> Result<(), Refusal> {
        let destination = self.destination(m.destination.as_ref(), "Message")?;
        self.authorize(&destination, crate::authz::Action::Write)?;
        let size = MINIMUM_MESSAGE_SIZE
            .saturating_add(m.content.as_ref().map_or(0, |c| c.len() as i32))
            .saturating_add(
                m.marshalled_properties
                    .as_ref()
                    .map_or(0, |p| p.len() as i32),
            );
        let msg = convert::inbound(
            &m,
            destination,
            self.ctx.broker.next_message_id(),
            self.ctx.broker.now_ms(),
            self.connection,
            &self.map_limits,
        )?;
        if let Some(tx @ ow::TransactionId::Xa(_)) = &m.transaction_id {
            // Part of an XA branch, which can never commit: dropped like a rolled-back send.
            tracing::debug!(?tx, "dropping a send in an XA transaction");
            if m.header.response_required {
                return Err(Refusal::jms(XA_REFUSED));
            }
            return Ok(());
        }
        if let Some(tx) = &m.transaction_id {
            let max = self.ctx.config.openwire.max_transaction_ops;
            let t = self.txs.get_mut(tx).ok_or_else(|| Refusal {
                class: TX_EXCEPTION,
                message: "Transaction not started (no TransactionInfo BEGIN)".into(),
            })?;
            if t.ops >= max {
                return Err(Refusal::jms(format!(
                    "Transaction exceeds the limit of {max} sends and acks"
                )));
            }
            t.ops += 1;
            t.work.sends.push(msg);
            self.respond(&m.header).await;
            return Ok(());
        }
        let completion = self.ctx.broker.send(msg).await?;
        // The producer's window (async sends with `producerWindowSize`) frees up once the
        // message is taken, as ActiveMQ does it.
        let producer_ack = match (&m.producer_id, m.header.response_required) {
            (Some(p), false) if self.producers.get(p).is_some_and(|w| *w > 0) => {
                Some((p.clone(), size))
            }
            _ => None,
        };
        self.send_out(Out::AfterStore {
            completions: vec![completion],
            correlation: m.header.response_required.then_some(m.header.command_id),
            producer_ack,
            failed: "Message not stored",
        })
        .await;
        Ok(())
    }

    async fn on_consumer_info(&mut self, c: ow::ConsumerInfo) -> Result<(), Refusal> {
        let id = c
            .consumer_id
            .clone()
            .ok_or_else(|| Refusal::jms("ConsumerInfo without a consumer id"))?;
        if self.consumers.contains_key(&id) {
            // A failover client replays its consumers; this connection has it already.
            self.respond(&c.header).await;
            return Ok(());
        }
        if self.consumers.len() >= self.ctx.config.openwire.max_consumers {
            return Err(Refusal::jms(format!(
                "Consumer limit of {} per connection reached",
                self.ctx.config.openwire.max_consumers
            )));
        }
        let ow_dest = c.destination.clone().ok_or_else(|| Refusal {
            class: INVALID_DESTINATION,
            message: "ConsumerInfo without a destination".into(),
        })?;
        let pull = c.prefetch_size == 0;
        let state = Arc::new(ConsumerState {
            id: id.clone(),
            dest: ow_dest.clone(),
            handle: OnceLock::new(),
            dispatched: Mutex::new(VecDeque::new()),
            pull,
            delivered: AtomicU64::new(0),
        });
        if ow_dest.physical_name.starts_with(ADVISORY_PREFIX) {
            // The broker answers advisory consumers itself, but they are topics like any
            // other for `[[security.authorization]]`: ActiveMQ's AuthorizationBroker asks
            // `read` of each one (a composite names several), so a rule set that does not
            // grant `ActiveMQ.Advisory.>` refuses the JMS client's temp-destination watcher
            // just as ActiveMQ does.
            for name in ow_dest.physical_name.split(',').map(str::trim) {
                self.authorize(&Destination::topic(name), crate::authz::Action::Read)?;
            }
            self.respond(&c.header).await;
            if ow_dest.physical_name.contains("Advisory.Temp") {
                let watcher = AdvisoryWatcher {
                    consumer: state.clone(),
                    tx: self.deliveries.clone(),
                };
                let mut t = self.registry.temps.lock();
                for (_, info) in &t.live {
                    watcher.send(info, next_advisory_seq());
                }
                t.watchers.push((self.connection, watcher));
            }
            self.consumers.insert(
                id,
                Consumer {
                    state,
                    handle: None,
                },
            );
            return Ok(());
        }
        let destination = self.destination(Some(&ow_dest), "ConsumerInfo")?;
        self.authorize(&destination, crate::authz::Action::Read)?;
        let selector = match c.selector.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(Arc::new(Selector::parse(s).map_err(|e| Refusal {
                class: INVALID_SELECTOR,
                message: format!("Invalid selector [{s}]: {e}"),
            })?)),
            None => None,
        };
        if c.browser {
            if !destination.kind.is_queue() {
                return Err(Refusal {
                    class: INVALID_DESTINATION,
                    message: "Only queues can be browsed".into(),
                });
            }
            self.consumers.insert(
                id,
                Consumer {
                    state: state.clone(),
                    handle: None,
                },
            );
            self.respond(&c.header).await;
            let now = self.ctx.broker.now_ms();
            for m in self.ctx.broker.browse(&destination, BROWSE_MAX) {
                if m.is_expired(now) {
                    continue;
                }
                if let Some(sel) = &selector {
                    if !sel.matches(&MessageProperties(&m)) {
                        continue;
                    }
                }
                let _ = self.deliveries.send(DeliveryOut::Browse(state.clone(), m));
            }
            let _ = self.deliveries.send(DeliveryOut::End(state));
            return Ok(());
        }
        let durable = match c.subscription_name.as_deref().filter(|n| !n.is_empty()) {
            None => None,
            Some(name) => {
                if destination.kind != DestinationKind::Topic {
                    return Err(Refusal {
                        class: INVALID_DESTINATION,
                        message: format!("Durable subscription {name} needs a topic"),
                    });
                }
                let client_id = self.client_id.clone().ok_or_else(|| Refusal {
                    class: INVALID_CLIENT_ID,
                    message: "Durable subscriptions need a client id".into(),
                })?;
                Some(DurableName {
                    client_id,
                    name: name.to_string(),
                })
            }
        };
        let opts = ConsumerOptions {
            // The JMS client acknowledges every message (auto-ack too) by MessageId.
            ack_mode: AckMode::ClientIndividual,
            prefetch: if pull {
                1
            } else {
                u32::try_from(c.prefetch_size).unwrap_or(1).max(1)
            },
            selector,
            exclusive: c.exclusive,
            no_local: c.no_local,
            connection: self.connection,
            priority: c.priority as i8,
            network: None,
        };
        let sink = Arc::new(Sink {
            consumer: state.clone(),
            tx: self.deliveries.clone(),
        });
        let (handle, completion) = self
            .ctx
            .broker
            .subscribe(&destination, opts, durable, sink)?;
        if pull {
            // Until the first pull. Anything dispatched while subscribing is kept by the
            // client and handed out on its first receive.
            self.ctx.broker.quiesce(&handle);
        }
        let _ = state.handle.set(handle.clone());
        self.consumers.insert(
            id,
            Consumer {
                state,
                handle: Some(handle),
            },
        );
        self.send_out(Out::AfterStore {
            completions: vec![completion],
            correlation: c.header.response_required.then_some(c.header.command_id),
            producer_ack: None,
            failed: "Subscription not stored",
        })
        .await;
        Ok(())
    }

    async fn on_pull(&mut self, p: ow::MessagePull) -> Result<(), Refusal> {
        let Some(c) = p.consumer_id.as_ref().and_then(|id| self.consumers.get(id)) else {
            return Ok(());
        };
        let (Some(handle), true) = (c.handle.clone(), c.state.pull) else {
            return Ok(());
        };
        let state = c.state.clone();
        let before = state.delivered.load(Ordering::Acquire);
        // Dispatch happens inside resume, so a message that was there is on its way now.
        self.ctx.broker.resume(&handle);
        if state.delivered.load(Ordering::Acquire) != before {
            return Ok(());
        }
        match p.timeout {
            // receiveNoWait: nothing now means nothing.
            t if t < 0 => {
                self.ctx.broker.quiesce(&handle);
                let _ = self.deliveries.send(DeliveryOut::End(state));
            }
            // receive(): wait for the next message, however long.
            0 => {}
            t => {
                let broker = self.ctx.broker.clone();
                let tx = self.deliveries.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(t as u64)).await;
                    if state.delivered.load(Ordering::Acquire) == before {
                        broker.quiesce(&handle);
                        let _ = tx.send(DeliveryOut::End(state));
                    }
                });
            }
        }
        Ok(())
    }

    async fn on_ack(&mut self, a: MessageAck) -> Result<(), Refusal> {
        // Only these two remove messages; the client's acknowledge() (or its commit) relies
        // on them, so one the broker does not apply must never be answered OK.
        let consuming = matches!(a.ack_type, MessageAck::STANDARD | MessageAck::INDIVIDUAL);
        let Some(c) = a.consumer_id.as_ref().and_then(|id| self.consumers.get(id)) else {
            if consuming {
                // ActiveMQ refuses this too ("The subscription does not exist"): whatever the
                // ack names was returned for redelivery when its consumer went away.
                return self.ack_not_applied(
                    &a,
                    "Unknown consumer: the subscription does not exist on this connection; its messages will be redelivered".into(),
                );
            }
            self.respond(&a.header).await;
            return Ok(());
        };
        let Some(handle) = c.handle.clone() else {
            // An advisory consumer or a browser: the broker holds nothing for it.
            self.respond(&a.header).await;
            return Ok(());
        };
        // Resolved under the lock, without awaiting (the guard is not Send).
        let tags: Vec<u64> = match a.last_message_id.as_ref() {
            None => Vec::new(),
            Some(last) => take_acked(&mut c.state.dispatched.lock(), &a, last),
        };
        if tags.is_empty() {
            if consuming {
                // An ack for what this connection does not hold (a failover client replaying
                // an ack sent to the old master, which may or may not have stored it): this
                // broker cannot say it is durable, so the client's acknowledge() must fail.
                return self.ack_not_applied(
                    &a,
                    "Unmatched acknowledge: the message was not delivered to this consumer on this connection; unless an earlier acknowledge was stored, it will be redelivered".into(),
                );
            }
            self.respond(&a.header).await;
            return Ok(());
        }
        if a.ack_type == MessageAck::POISON {
            let mut refused = None;
            for tag in tags {
                if let Err(e) = self.ctx.broker.poison(&handle, tag) {
                    refused.get_or_insert(e);
                }
            }
            if let Some(e) = refused {
                // The delivery is back for redelivery (or gone with its destination): the
                // client's redelivery policy sees it again.
                if a.header.response_required {
                    return Err(Refusal::jms(format!("Poison acknowledge not applied: {e}")));
                }
                tracing::debug!(error = %e, "poison acknowledge not applied");
                return Ok(());
            }
            self.respond(&a.header).await;
            return Ok(());
        }
        if let Some(ow::TransactionId::Xa(_)) = &a.transaction_id {
            // An ack in an XA branch, which can never commit: the messages stay unacknowledged.
            if a.header.response_required {
                return Err(Refusal::jms(XA_REFUSED));
            }
            return Ok(());
        }
        if let Some(txid) = &a.transaction_id {
            let max = self.ctx.config.openwire.max_transaction_ops;
            let t = self.txs.get_mut(txid).ok_or_else(|| Refusal {
                class: TX_EXCEPTION,
                message: "Transaction not started (no TransactionInfo BEGIN)".into(),
            })?;
            if t.ops.saturating_add(tags.len()) > max {
                return Err(Refusal::jms(format!(
                    "Transaction exceeds the limit of {max} sends and acks"
                )));
            }
            let mut marked = Vec::with_capacity(tags.len());
            let mut refused = None;
            for tag in tags {
                match self
                    .ctx
                    .broker
                    .ack(&handle, AckScope::Individual(tag), true)
                {
                    Ok((covered, _)) => marked.extend(covered),
                    Err(e) => {
                        refused.get_or_insert(e);
                    }
                }
            }
            t.ops += marked.len();
            t.work.acks.push((handle, marked));
            if let Some(e) = refused {
                return self.ack_not_applied(&a, format!("Acknowledge not applied: {e}"));
            }
            self.respond(&a.header).await;
            return Ok(());
        }
        let mut completions = Vec::with_capacity(tags.len());
        let mut refused = None;
        for tag in tags {
            match self.ctx.broker.ack_with(
                &handle,
                AckScope::Individual(tag),
                false,
                a.header.response_required,
            ) {
                Ok((_, completion)) => completions.push(completion),
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        if let Some(e) = refused {
            // The broker no longer holds the delivery (its destination was deleted, or its
            // consumer detached): nothing was removed for it, so nothing is durable to
            // report. Whatever the ack covered that was applied stays applied; an exception
            // only costs the client a redelivery it can tell (at-least-once).
            return self.ack_not_applied(&a, format!("Acknowledge not applied: {e}"));
        }
        if a.header.response_required {
            self.send_out(Out::AfterStore {
                completions,
                correlation: Some(a.header.command_id),
                producer_ack: None,
                failed: "Acknowledgement not stored",
            })
            .await;
        }
        Ok(())
    }

    /// A consuming ack the broker did not apply. A client waiting for the answer gets an
    /// ExceptionResponse (its acknowledge() throws); an ack in a local transaction makes the
    /// transaction roll back at COMMIT, since a commit without it would be reported durable
    /// while its messages come back. An asynchronous ack has nobody to tell: the messages are
    /// redelivered, which at-least-once delivery allows, so the connection stays open.
    fn ack_not_applied(&mut self, a: &MessageAck, why: String) -> Result<(), Refusal> {
        if let Some(t) = a
            .transaction_id
            .as_ref()
            .and_then(|id| self.txs.get_mut(id))
        {
            t.rollback_only.get_or_insert_with(|| why.clone());
        }
        if a.header.response_required {
            return Err(Refusal::jms(why));
        }
        tracing::debug!(ack_type = a.ack_type, reason = %why, "asynchronous acknowledge not applied");
        Ok(())
    }

    async fn on_transaction(&mut self, t: ow::TransactionInfo) -> Result<(), Refusal> {
        let id = t
            .transaction_id
            .clone()
            .ok_or_else(|| Refusal::jms("TransactionInfo without a transaction id"))?;
        if matches!(id, ow::TransactionId::Xa(_)) {
            // The client begins an XA branch asynchronously: refusing that would only close
            // the connection. Its first synchronous step (end, prepare, commit) gets the reason.
            if t.transaction_type == ow::TransactionInfo::BEGIN && !t.header.response_required {
                return Ok(());
            }
            return Err(Refusal::jms(XA_REFUSED));
        }
        match t.transaction_type {
            ow::TransactionInfo::BEGIN => {
                if self.txs.len() >= self.ctx.config.openwire.max_transactions {
                    return Err(Refusal::jms(format!(
                        "Transaction limit of {} per connection reached",
                        self.ctx.config.openwire.max_transactions
                    )));
                }
                self.txs.entry(id).or_default();
                self.respond(&t.header).await;
                Ok(())
            }
            ow::TransactionInfo::COMMIT_ONE_PHASE => {
                let tx = self.txs.remove(&id).ok_or_else(|| Refusal {
                    class: TX_EXCEPTION,
                    message: "Unknown transaction".into(),
                })?;
                if let Some(why) = tx.rollback_only {
                    // Its marked acks go back for redelivery, as at ROLLBACK.
                    self.ctx.broker.rollback(tx.work);
                    return Err(Refusal {
                        class: TX_EXCEPTION,
                        message: format!("Transaction rolled back: {why}"),
                    });
                }
                let completion = self.ctx.broker.commit(tx.work).await?;
                self.send_out(Out::AfterStore {
                    completions: vec![completion],
                    correlation: t.header.response_required.then_some(t.header.command_id),
                    producer_ack: None,
                    failed: "Transaction not committed",
                })
                .await;
                Ok(())
            }
            ow::TransactionInfo::ROLLBACK => {
                if let Some(tx) = self.txs.remove(&id) {
                    self.ctx.broker.rollback(tx.work);
                }
                self.respond(&t.header).await;
                Ok(())
            }
            other => Err(Refusal::jms(format!(
                "Transaction operation {other} (XA) is not supported by ferromq"
            ))),
        }
    }

    /// Detaches a consumer. `last_delivered` is RemoveInfo's `lastDeliveredSequenceId`: the
    /// broker sequence (our delivery tag) of the last message the application got; what was
    /// dispatched after it sat in the client's prefetch buffer and goes back uncounted, as in
    /// ActiveMQ (-1: nothing reached the application; -2: unknown, everything counts).
    fn remove_consumer(&mut self, id: &ow::ConsumerId, last_delivered: i64) -> Option<Completion> {
        let c = self.consumers.remove(id)?;
        if let Some(h) = &c.handle {
            let unseen: Vec<u64> = {
                let d = c.state.dispatched.lock();
                match last_delivered {
                    LAST_DELIVERED_UNKNOWN => Vec::new(),
                    l if l < 0 => d.iter().map(|(_, t)| *t).collect(),
                    l => match d.iter().position(|(_, t)| *t as i64 == l) {
                        Some(p) => d.iter().skip(p + 1).map(|(_, t)| *t).collect(),
                        None => Vec::new(),
                    },
                }
            };
            if !unseen.is_empty() {
                self.ctx.broker.uncount(h, &unseen);
            }
        }
        if c.handle.is_none() {
            self.registry
                .temps
                .lock()
                .watchers
                .retain(|(_, w)| !Arc::ptr_eq(&w.consumer, &c.state));
        }
        c.state.dispatched.lock().clear();
        c.handle.map(|h| self.ctx.broker.unsubscribe(&h, false))
    }

    async fn on_remove(&mut self, r: ow::RemoveInfo) -> Result<(), Refusal> {
        match r.object_id.as_deref() {
            Some(ow::DataStructure::ConsumerId(id)) => {
                let id = id.clone();
                drop(self.remove_consumer(&id, r.last_delivered_sequence_id));
            }
            Some(ow::DataStructure::SessionId(s)) => {
                let ids: Vec<ow::ConsumerId> = self
                    .consumers
                    .keys()
                    .filter(|c| c.connection_id == s.connection_id && c.session_id == s.value)
                    .cloned()
                    .collect();
                for id in ids {
                    drop(self.remove_consumer(&id, LAST_DELIVERED_UNKNOWN));
                }
                self.producers.retain(|p, _| {
                    !(p.connection_id == s.connection_id && p.session_id == s.value)
                });
                let closed: Vec<ow::ProducerId> = self
                    .producer_dests
                    .keys()
                    .filter(|p| p.connection_id == s.connection_id && p.session_id == s.value)
                    .cloned()
                    .collect();
                for p in closed {
                    self.forget_producer(&p);
                }
            }
            Some(ow::DataStructure::ProducerId(p)) => {
                self.producers.remove(p);
                let p = p.clone();
                self.forget_producer(&p);
            }
            Some(ow::DataStructure::ConnectionId(_)) => {
                // The client closes: everything it held goes back, its id is free again.
                self.release();
            }
            _ => {}
        }
        self.respond(&r.header).await;
        Ok(())
    }

    async fn on_destination_info(&mut self, d: ow::DestinationInfo) -> Result<(), Refusal> {
        let dest = self.destination(d.destination.as_ref(), "DestinationInfo")?;
        if dest.kind.is_temporary() {
            match d.operation_type {
                ow::DestinationInfo::ADD => {
                    if !self.ctx.broker.temp_exists(&dest) {
                        self.ctx
                            .broker
                            .create_temp_named(dest.kind, self.connection, &dest.name);
                    }
                    self.advertise_temp(d.clone(), true);
                }
                ow::DestinationInfo::REMOVE => {
                    self.ctx.broker.delete_temp(&dest, self.connection);
                    self.advertise_temp(d.clone(), false);
                }
                _ => {}
            }
        }
        self.respond(&d.header).await;
        Ok(())
    }

    async fn on_remove_subscription(
        &mut self,
        r: ow::RemoveSubscriptionInfo,
    ) -> Result<(), Refusal> {
        let client_id = r
            .client_id
            .clone()
            .or_else(|| self.client_id.clone())
            .ok_or_else(|| Refusal {
                class: INVALID_CLIENT_ID,
                message: "Removing a durable subscription needs a client id".into(),
            })?;
        let name = r
            .subscription_name
            .clone()
            .ok_or_else(|| Refusal::jms("RemoveSubscriptionInfo without a subscription name"))?;
        let completion = self
            .ctx
            .broker
            .destroy_durable(&DurableName { client_id, name })?;
        self.send_out(Out::AfterStore {
            completions: vec![completion],
            correlation: r.header.response_required.then_some(r.header.command_id),
            producer_ack: None,
            failed: "Unsubscribe not stored",
        })
        .await;
        Ok(())
    }

    /// Records a temporary destination's creation or removal and tells every advisory consumer.
    fn advertise_temp(&self, mut info: ow::DestinationInfo, add: bool) {
        info.header = CommandHeader::default();
        info.operation_type = if add {
            ow::DestinationInfo::ADD
        } else {
            ow::DestinationInfo::REMOVE
        };
        let mut t = self.registry.temps.lock();
        t.live.retain(|(_, i)| i.destination != info.destination);
        if add {
            t.live.push((self.connection, info.clone()));
        }
        for (_, w) in &t.watchers {
            w.send(&info, next_advisory_seq());
        }
    }

    /// Gives back everything the connection holds: transactions roll back, unacknowledged
    /// messages return to their destinations, temporary destinations and the client id go.
    fn release(&mut self) {
        for (_, t) in self.txs.drain() {
            self.ctx.broker.rollback(t.work);
        }
        let ids: Vec<ow::ConsumerId> = self.consumers.keys().cloned().collect();
        for id in ids {
            drop(self.remove_consumer(&id, LAST_DELIVERED_UNKNOWN));
        }
        let cid = if self.client_id_registered {
            self.client_id.as_deref()
        } else {
            None
        };
        if let (Some(c), Some(o)) = (cid, &self.ow_connection_id) {
            self.registry.remove(c, o);
        }
        // This connection's temporary destinations go with it; its advisory consumers too.
        let gone: Vec<ow::DestinationInfo> = {
            let mut t = self.registry.temps.lock();
            t.watchers.retain(|(c, _)| *c != self.connection);
            let mine = t
                .live
                .iter()
                .filter(|(c, _)| *c == self.connection)
                .map(|(_, i)| i.clone())
                .collect();
            mine
        };
        for info in gone {
            self.advertise_temp(info, false);
        }
        self.ctx.broker.connection_closed(self.connection, cid);
        self.client_id_registered = false;
    }

    /// Uncounts a closed producer on its destination.
    fn forget_producer(&mut self, id: &ow::ProducerId) {
        if let Some(dest) = self.producer_dests.remove(id) {
            self.ctx.broker.producer_closed(&dest);
        }
    }

    fn cleanup(&mut self) {
        let ids: Vec<ow::ProducerId> = self.producer_dests.keys().cloned().collect();
        for id in ids {
            self.forget_producer(&id);
        }
        self.release();
        self.gone.send_replace(true);
        tracing::debug!(peer = %self.peer, "connection closed");
    }
}

/// Takes the dispatched messages an ack covers out of `d` and returns their delivery tags.
fn take_acked(
    d: &mut VecDeque<(ow::MessageId, u64)>,
    a: &MessageAck,
    last: &ow::MessageId,
) -> Vec<u64> {
    let same = |x: &ow::MessageId, y: &ow::MessageId| {
        x.producer_sequence_id == y.producer_sequence_id && x.producer_id == y.producer_id
    };
    let Some(end) = d.iter().position(|(id, _)| same(id, last)) else {
        // Already acknowledged, or returned to the broker by a consumer close.
        tracing::debug!(
            ack_type = a.ack_type,
            "ack for a message not dispatched to this consumer"
        );
        return Vec::new();
    };
    match a.ack_type {
        MessageAck::DELIVERED | MessageAck::REDELIVERED => Vec::new(),
        MessageAck::INDIVIDUAL => d.remove(end).map(|(_, t)| t).into_iter().collect(),
        MessageAck::STANDARD => d.drain(..=end).map(|(_, t)| t).collect(),
        // POISON, UNMATCHED, EXPIRED: the range first..=last.
        _ => {
            let start = a
                .first_message_id
                .as_ref()
                .and_then(|f| d.iter().position(|(id, _)| same(id, f)))
                .filter(|s| *s <= end)
                .unwrap_or(end);
            d.drain(start..=end).map(|(_, t)| t).collect()
        }
    }
}

fn dispatch_command(
    consumer: &ConsumerState,
    message: Option<ow::Message>,
    redelivery_counter: i32,
) -> Command {
    Command::MessageDispatch(ow::MessageDispatch {
        header: CommandHeader::default(),
        consumer_id: Some(consumer.id.clone()),
        destination: Some(consumer.dest.clone()),
        message: message.map(Box::new),
        redelivery_counter,
    })
}

/// Encodes `cmd`; false when it cannot be (the connection then closes).
fn encode_into(cmd: &Command, version: u32, buf: &mut BytesMut) -> bool {
    match ow::encode_command(cmd, version) {
        Ok(bytes) => {
            buf.extend_from_slice(&bytes);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, data_type = cmd.type_id(), "cannot encode command; closing");
            false
        }
    }
}

async fn writer(
    mut wr: WriteHalf,
    mut ctl: mpsc::Receiver<Out>,
    mut deliveries: mpsc::UnboundedReceiver<DeliveryOut>,
    shared: Arc<Shared>,
    broker: Arc<Broker>,
    write_timeout_ms: u64,
) {
    // Grows with what is written; a large one is let go after its write (`conn_buf`).
    let mut buf = BytesMut::new();
    let write_timeout = (write_timeout_ms > 0).then(|| Duration::from_millis(write_timeout_ms));
    let mut keepalive_ms = 0u64;
    let mut last_write = tokio::time::Instant::now();
    let mut close = false;
    'outer: while !close {
        let idle = async {
            if keepalive_ms == 0 {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(last_write + Duration::from_millis(keepalive_ms)).await
            }
        };
        tokio::select! {
            biased;
            out = ctl.recv() => match out {
                Some(o) => close = handle_out(o, &mut buf, &shared, &mut keepalive_ms).await,
                None => break 'outer,
            },
            Some(d) = deliveries.recv() => close = !push_delivery(d, &mut buf, &shared, &broker),
            _ = idle => {
                let ka = Command::KeepAliveInfo(ow::KeepAliveInfo::default());
                close = !encode_into(&ka, shared.version.load(Ordering::Acquire), &mut buf);
            }
        }
        while !close && buf.len() < WRITE_BATCH_BYTES_MAX {
            if let Ok(o) = ctl.try_recv() {
                close = handle_out(o, &mut buf, &shared, &mut keepalive_ms).await;
            } else if let Ok(d) = deliveries.try_recv() {
                close = !push_delivery(d, &mut buf, &shared, &broker);
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
    }
    let _ = wr.shutdown().await;
    shared.set_closed();
}

/// Returns true when the connection must close after this.
async fn handle_out(out: Out, buf: &mut BytesMut, shared: &Shared, keepalive_ms: &mut u64) -> bool {
    let version = shared.version.load(Ordering::Acquire);
    match out {
        Out::Cmd(c) => !encode_into(&c, version, buf),
        Out::Negotiated { inactivity_ms } => {
            // Write something at least every third of the duration, as ActiveMQ's monitor does.
            *keepalive_ms = inactivity_ms / 3;
            false
        }
        Out::AfterStore {
            completions,
            correlation,
            producer_ack,
            failed,
        } => {
            let mut result = Ok(());
            for c in completions {
                if let Err(e) = c.await {
                    result = Err(e);
                    break;
                }
            }
            match result {
                Ok(()) => {
                    if let Some(corr) = correlation {
                        if !encode_into(&response(corr), version, buf) {
                            return true;
                        }
                    }
                    if let Some((producer_id, size)) = producer_ack {
                        let ack = Command::ProducerAck(ow::ProducerAck {
                            header: CommandHeader::default(),
                            producer_id: Some(producer_id),
                            size,
                        });
                        if !encode_into(&ack, version, buf) {
                            return true;
                        }
                    }
                    false
                }
                Err(e @ StoreError::Indeterminate(_)) => {
                    // Neither answer: the write may survive on the replicas. A failover client
                    // resends it, with the same MessageId, to the next master.
                    tracing::warn!(error = %e, "closing the connection without an answer: {failed}");
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "store write failed: {failed}");
                    let msg = format!("{failed}: {e}");
                    let cmd = match correlation {
                        Some(corr) => exception_response(corr, JMS_EXCEPTION, &msg),
                        None => connection_error(JMS_EXCEPTION, &msg),
                    };
                    encode_into(&cmd, version, buf);
                    true
                }
            }
        }
        Out::Close(c) => {
            if let Some(c) = c {
                encode_into(&c, version, buf);
            }
            true
        }
    }
}

/// Encodes one dispatch; false when the connection must close.
fn push_delivery(d: DeliveryOut, buf: &mut BytesMut, shared: &Shared, broker: &Broker) -> bool {
    let version = shared.version.load(Ordering::Acquire);
    match d {
        DeliveryOut::Message(consumer, delivery) => {
            let redeliveries = delivery.delivery_count.saturating_sub(1) as i32;
            let mut msg = convert::outbound(&delivery.message, redeliveries);
            // The client reports the last one its application got by this number
            // (RemoveInfo.lastDeliveredSequenceId).
            if let Some(id) = msg.message_id.as_mut() {
                id.broker_sequence_id = delivery.tag as i64;
            }
            if let Some(id) = msg.message_id.clone() {
                consumer.dispatched.lock().push_back((id, delivery.tag));
            }
            if consumer.pull {
                // One message per pull: no more until the client asks again.
                if let Some(h) = consumer.handle.get() {
                    broker.quiesce(h);
                }
            }
            encode_into(
                &dispatch_command(&consumer, Some(msg), redeliveries),
                version,
                buf,
            )
        }
        DeliveryOut::Advisory(consumer, message) => encode_into(
            &dispatch_command(&consumer, Some(*message), 0),
            version,
            buf,
        ),
        DeliveryOut::Browse(consumer, message) => {
            let msg = convert::outbound(&message, 0);
            encode_into(&dispatch_command(&consumer, Some(msg), 0), version, buf)
        }
        DeliveryOut::End(consumer) => {
            encode_into(&dispatch_command(&consumer, None, 0), version, buf)
        }
    }
}
