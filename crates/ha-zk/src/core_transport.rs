//! Connections between members running the replication core: TCP on the `ha.bind` address,
//! with mutual TLS when `ha.tls_*` is set ([`crate::tls`]: the group CA must have signed both
//! certificates), each opened by the [`crate::core_auth`] handshake, then
//! [`crate::proto_wire`] frames. The
//! transport decides nothing: it reports connections and frames to the driver as [`NetEvent`]s
//! and writes what the driver hands it, in order.
//!
//! Each connection has a reader task (frames → events; the end of the stream or any malformed
//! frame → `Closed`) and a writer task (a queue of messages, written in order, everything
//! queued at once in one write). The queue is not bounded here: the core bounds what it queues
//! to a follower (`inflight_bytes_max`), acks, pongs and progress reports are small, and a
//! full copy's chunks each hold a permit of the copy's budget ([`Outgoing::budget`]) that the
//! writer releases only once the chunk is written.
//! Inbound connection ids have the top bit set, so they never collide with the core's own
//! (member id, incarnation, counter) outbound ids.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::auth::nonce;
use crate::core_auth::{self, Handshake, Transcript};
use crate::proto::{ConnId, MemberId, Msg};
use crate::proto_wire::{self, Decoder};
use crate::tls::{self, Reader};
use crate::wire::{WireError, MAX_FRAME};
use crate::ReplicationTls;
use crate::ZkError;

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 256 * 1024;
/// The bit that marks an inbound connection id.
const INBOUND: u64 = 1 << 63;

/// A message queued on a connection.
#[derive(Debug)]
pub struct Outgoing {
    /// The message.
    pub msg: Msg,
    /// Released once the message is written to the socket: a sender that must not run ahead
    /// of the connection (a full copy) takes a permit per message.
    pub budget: Option<OwnedSemaphorePermit>,
}

impl From<Msg> for Outgoing {
    fn from(msg: Msg) -> Outgoing {
        Outgoing { msg, budget: None }
    }
}

/// A connection's queue of messages to write.
pub type Writer = mpsc::UnboundedSender<Outgoing>;

/// Who this member is to the others.
#[derive(Clone)]
pub struct Identity {
    /// The group.
    pub group: String,
    /// This member.
    pub me: MemberId,
    /// `ha.security_token`, shared by the group.
    pub token: String,
    /// Mutual TLS on every connection (`ha.tls_*`); `None` = plain TCP.
    pub tls: Option<ReplicationTls>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Identity")
            .field("group", &self.group)
            .field("me", &self.me)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// What the transport reports to the driver.
#[derive(Debug)]
pub enum NetEvent {
    /// An authenticated inbound connection from member `peer`.
    Accepted {
        /// The connection.
        conn: ConnId,
        /// The member the handshake proved.
        peer: MemberId,
        /// Where to queue its messages.
        writer: Writer,
    },
    /// An outbound connection (the driver's `Connect`) is authenticated and open.
    Connected {
        /// The connection.
        conn: ConnId,
        /// Where to queue its messages.
        writer: Writer,
    },
    /// A frame arrived.
    Received {
        /// On this connection.
        conn: ConnId,
        /// The message.
        msg: Msg,
    },
    /// The connection ended (or never opened).
    Closed {
        /// The connection.
        conn: ConnId,
    },
}

/// Accepts connections on `listener` for as long as the returned task runs (abort it to stop).
pub fn listen(
    listener: TcpListener,
    id: Identity,
    events: mpsc::Sender<NetEvent>,
) -> tokio::task::JoinHandle<()> {
    let next = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, addr)) = listener.accept().await else {
                // Out of descriptors, say: pause instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = INBOUND | next.fetch_add(1, Ordering::Relaxed);
            let (id, events) = (id.clone(), events.clone());
            tokio::spawn(async move {
                let opened = async {
                    let (rd, wr) =
                        tls::accept(stream, addr, id.tls.as_ref(), HANDSHAKE_TIMEOUT).await?;
                    accept(rd, wr, &id).await
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, opened).await {
                    Ok(Ok((peer, rd, wr))) => {
                        run(conn, rd, wr, events, move |writer| NetEvent::Accepted {
                            conn,
                            peer,
                            writer,
                        });
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%addr, error = %e, "refusing a replication connection")
                    }
                    Err(_) => {
                        tracing::warn!(%addr, "refusing a replication connection: the handshake timed out")
                    }
                }
            });
        }
    })
}

/// Opens connection `conn` to `to` at `address`; reports `Connected` or `Closed`.
pub fn connect(
    conn: ConnId,
    to: MemberId,
    address: Option<String>,
    id: Identity,
    events: mpsc::Sender<NetEvent>,
) {
    tokio::spawn(async move {
        let opened = async {
            let address = address.ok_or_else(|| {
                ZkError::Replication(format!("member {to} has no registered address"))
            })?;
            // TCP and TLS within the connect timeout, then our handshake within its own.
            let (rd, wr) = tls::connect(
                &address,
                id.tls.as_ref(),
                CONNECT_TIMEOUT,
                "replication connection",
            )
            .await?;
            tokio::time::timeout(HANDSHAKE_TIMEOUT, open(rd, wr, &id, to))
                .await
                .map_err(|_| ZkError::Replication(format!("handshake with {address} timed out")))?
        };
        match opened.await {
            Ok((rd, wr)) => {
                run(conn, rd, wr, events, move |writer| NetEvent::Connected {
                    conn,
                    writer,
                });
            }
            Err(e) => {
                tracing::debug!(member = to, error = %e, "no replication connection");
                let _ = events.send(NetEvent::Closed { conn }).await;
            }
        }
    });
}

/// Starts the reader and writer of an authenticated connection. The reader reports `opened`
/// (made with the writer's queue) before any frame, so that the driver never hears of a
/// frame on a connection it does not know yet.
fn run(
    conn: ConnId,
    mut rd: Reader,
    mut wr: tls::Writer,
    events: mpsc::Sender<NetEvent>,
    opened: impl FnOnce(Writer) -> NetEvent,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    // Whoever sees the end first reports it, once.
    let ended = Arc::new(AtomicBool::new(false));
    let first = opened(tx);
    let reader = tokio::spawn({
        let events = events.clone();
        let ended = ended.clone();
        async move {
            if events.send(first).await.is_err() {
                return;
            }
            let mut d = Decoder::new();
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match d.next_msg() {
                    Ok(Some(msg)) => {
                        if events.send(NetEvent::Received { conn, msg }).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(conn, error = %e, "malformed replication frame: closing");
                        break;
                    }
                }
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => d.feed(&buf[..n]),
                }
            }
            if !ended.swap(true, Ordering::SeqCst) {
                let _ = events.send(NetEvent::Closed { conn }).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut out = BytesMut::new();
        let mut failed = false;
        let mut permits = Vec::new();
        while let Some(m) = rx.recv().await {
            proto_wire::encode(&mut out, &m.msg);
            permits.extend(m.budget);
            // Everything already queued goes in the same write.
            while out.len() < READ_CHUNK {
                match rx.try_recv() {
                    Ok(m) => {
                        proto_wire::encode(&mut out, &m.msg);
                        permits.extend(m.budget);
                    }
                    Err(_) => break,
                }
            }
            if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                failed = true;
                break;
            }
            out.clear();
            // Written: the budget these held is free again.
            permits.clear();
        }
        // The socket failed, or the driver closed the connection (dropped its sender: it
        // knows, and hears nothing more). Either way the reader ends too.
        let _ = wr.shutdown().await;
        reader.abort();
        if !ended.swap(true, Ordering::SeqCst) && failed {
            let _ = events.send(NetEvent::Closed { conn }).await;
        }
    });
}

async fn write_handshake<W: AsyncWrite + Unpin>(w: &mut W, h: &Handshake) -> Result<(), ZkError> {
    let mut b = BytesMut::new();
    core_auth::encode(&mut b, h);
    w.write_all(&b).await.map_err(WireError::from)?;
    // TLS buffers: the frame must leave now (the peer waits for it).
    w.flush().await.map_err(WireError::from)?;
    Ok(())
}

async fn read_handshake<R: AsyncRead + Unpin>(r: &mut R) -> Result<Handshake, ZkError> {
    let len = r.read_u32_le().await.map_err(WireError::from)? as usize;
    // A handshake frame is small; a large one is not this protocol.
    if len == 0 || len > MAX_FRAME.min(4_096) {
        return Err(WireError::Malformed("handshake frame length").into());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(WireError::from)?;
    Ok(core_auth::decode(Bytes::from(body))?)
}

/// The accepter's side; returns the proven peer.
async fn accept(
    mut rd: Reader,
    mut s: tls::Writer,
    id: &Identity,
) -> Result<(MemberId, Reader, tls::Writer), ZkError> {
    let an = nonce()?;
    write_handshake(&mut s, &Handshake::Challenge { nonce: an }).await?;
    let Handshake::Open {
        group,
        from,
        to,
        nonce: cn,
    } = read_handshake(&mut rd).await?
    else {
        return Err(ZkError::Replication("the peer did not open".into()));
    };
    let reject = |reason: String| Handshake::Reject { reason };
    if group != id.group || to != id.me || from == id.me {
        let why = format!(
            "this is member {} of group {:?}, not member {to} of {group:?}",
            id.me, id.group
        );
        write_handshake(&mut s, &reject(why.clone())).await?;
        return Err(ZkError::Replication(why));
    }
    let t = Transcript {
        group: &group,
        from,
        to,
        connector_nonce: &cn,
        accepter_nonce: &an,
    };
    let Handshake::Proof { proof } = read_handshake(&mut rd).await? else {
        return Err(ZkError::Replication("the peer sent no proof".into()));
    };
    if !t.verify_connector(&id.token, &proof) {
        // No proof of ours to a party that could not prove the token.
        write_handshake(&mut s, &reject("authentication failed".into())).await?;
        return Err(ZkError::Replication(format!(
            "member {from} failed authentication (security token)"
        )));
    }
    let mine = t.accepter_proof(&id.token)?;
    write_handshake(&mut s, &Handshake::Proof { proof: mine }).await?;
    Ok((from, rd, s))
}

/// The connector's side.
async fn open(
    mut rd: Reader,
    mut s: tls::Writer,
    id: &Identity,
    to: MemberId,
) -> Result<(Reader, tls::Writer), ZkError> {
    let cn = nonce()?;
    write_handshake(
        &mut s,
        &Handshake::Open {
            group: id.group.clone(),
            from: id.me,
            to,
            nonce: cn,
        },
    )
    .await?;
    let Handshake::Challenge { nonce: an } = read_handshake(&mut rd).await? else {
        return Err(ZkError::Replication("the peer sent no challenge".into()));
    };
    let t = Transcript {
        group: &id.group,
        from: id.me,
        to,
        connector_nonce: &cn,
        accepter_nonce: &an,
    };
    let proof = t.connector_proof(&id.token)?;
    write_handshake(&mut s, &Handshake::Proof { proof }).await?;
    match read_handshake(&mut rd).await? {
        Handshake::Proof { proof } if t.verify_accepter(&id.token, &proof) => Ok((rd, s)),
        Handshake::Proof { .. } => Err(ZkError::Replication(format!(
            "member {to} failed authentication (security token)"
        ))),
        Handshake::Reject { reason } => Err(ZkError::Replication(format!(
            "member {to} refused: {reason}"
        ))),
        _ => Err(ZkError::Replication("unexpected handshake frame".into())),
    }
}
