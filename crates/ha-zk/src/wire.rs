//! The replication protocol between a master and its slaves: length-prefixed binary frames.
//!
//! ```text
//! frame  = len:u32 (of type + body) | type:u8 | body
//! ```
//!
//! Every connection opens with a mutual challenge-response (see [`crate::auth`]): both sides
//! speak at once — the slave its `Hello` (or `Watch`) with its nonce, the master its
//! `Challenge` with its own — then the slave sends its `Proof` that it knows the security
//! token, and the master's `Welcome` carries the master's proof. The token itself never
//! crosses the wire.
//!
//! Slave -> master: `Hello`, `Proof`, then `Ack`s. Master -> slave: `Challenge`, `Welcome` (or
//! `Reject`), then either a full copy (`SnapshotBegin`, `SnapshotChunk`*, `SnapshotEnd`) or
//! nothing, then `Entry`s in log order.
//!
//! The liveness channel is a second connection, so that heartbeats never queue behind a burst
//! of entries: slave -> master `Watch` and `Proof` (after the same `Challenge`), then master ->
//! slave `Heartbeat`s, each answered by a `Pong` (see `docs/replication.md`, "Fast failover").
//! Every decode checks lengths against the frame, so a hostile or corrupt peer gets an
//! error, never a panic or an unbounded allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferromq_store::{Batch, Op, SubscriptionRecord};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted (a batch or a snapshot chunk); larger is a protocol error.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Protocol version sent in `Challenge`, `Hello` and `Watch`; a peer refuses any other.
/// Version 2: acks carry the acknowledged entry's epoch as well as its lsn.
/// Version 3: the liveness channel (`Watch`, `Heartbeat`, `Pong`).
/// Version 4: `SnapshotEnd.consistent_at` (full copies read while writers go on).
/// Version 5: mutual challenge-response (`Challenge`, `Proof`; nonces in `Hello` and `Watch`,
/// the master's proof in `Welcome`) instead of the token in clear.
pub const PROTOCOL_VERSION: u32 = 5;
/// Bytes of a handshake nonce (from the OS random generator).
pub const NONCE_LEN: usize = 32;
/// Bytes of a handshake proof (an HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// A handshake nonce.
pub type Nonce = [u8; NONCE_LEN];
/// A handshake proof.
pub type Proof = [u8; PROOF_LEN];

/// A log position: the epoch the entry was written in, and its log sequence number.
/// Ordered by epoch first (Raft's "more up to date" rule), then lsn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Position {
    /// The mastership epoch the entry was written in.
    pub epoch: u64,
    /// Log sequence number, contiguous across epochs.
    pub lsn: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.lsn)
    }
}

/// Whether an ack means "received" or "durable in the slave's store".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// The slave has the entry in memory (`*_mem` sync modes).
    Mem,
    /// The slave's local store confirmed the entry (`*_disk` sync modes).
    Disk,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Master -> slave, first frame of every connection (written at accept, while the slave
    /// writes its `Hello` or `Watch`): the master's fresh nonce, which the slave's proof must
    /// cover (so that no recorded proof is accepted again).
    Challenge {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// The master's nonce.
        nonce: Nonce,
    },
    /// Slave -> master, first frame of the stream (written at connect, unasked): who I am and
    /// where my log ends. Worth nothing until the `Proof` that follows checks out.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// `broker.name` of the group.
        group: String,
        /// The epoch of the master the slave expects (from ZooKeeper).
        master_epoch: u64,
        /// The slave's last applied (and durable) position.
        last: Position,
        /// The slave's member name, for logs.
        member: String,
        /// The slave's nonce, which the master's proof must cover.
        nonce: Nonce,
    },
    /// Slave -> master, answering the `Challenge`: [`crate::auth::slave_proof`] over the
    /// slave's first frame and both nonces.
    Proof {
        /// The slave's proof.
        proof: Proof,
    },
    /// Master -> slave: accepted; entries follow.
    Welcome {
        /// The master's epoch.
        epoch: u64,
        /// [`crate::auth::master_proof`]: the slave checks it before it acts on anything the
        /// master sends.
        proof: Proof,
    },
    /// Master -> slave: refused (bad token, wrong group, stale epoch); the connection closes.
    Reject {
        /// Why.
        reason: String,
    },
    /// A log entry.
    Entry {
        /// Where it sits in the log.
        pos: Position,
        /// The batch, including the position record (see [`crate::position`]).
        batch: Batch,
    },
    /// A full copy starts: the slave wipes its store.
    SnapshotBegin {
        /// The position the copy is consistent at.
        pos: Position,
        /// Payload bytes that follow, for progress.
        total_bytes: u64,
    },
    /// Part of a full copy.
    SnapshotChunk {
        /// Ops to apply (subscriptions and enqueues).
        batch: Batch,
    },
    /// A full copy ends. The entries that follow continue the log after `pos` (the cut the
    /// copy was read from); the copy was read while writers went on, so the slave's store is
    /// consistent only once it has applied the entry at `consistent_at` (>= `pos`): until then
    /// it keeps its copy mark, reports no position and acknowledges nothing.
    SnapshotEnd {
        /// The cut: the next entry is `pos.lsn + 1`.
        pos: Position,
        /// The log position when the copy's read ended.
        consistent_at: Position,
    },
    /// Slave -> master: cumulative acknowledgement of every entry up to `pos`. The epoch names
    /// which entry: a master counts the ack only if its own entry at `pos.lsn` has that epoch
    /// (a bare lsn cannot tell two different entries at the same lsn apart).
    Ack {
        /// Received or durable.
        kind: AckKind,
        /// Highest entry acknowledged.
        pos: Position,
    },
    /// Slave -> master, first frame of the liveness channel (written at connect, followed by
    /// a `Proof` once the `Challenge` arrived; answered by `Welcome` or `Reject`).
    Watch {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// `broker.name` of the group.
        group: String,
        /// The epoch of the master the slave expects (from ZooKeeper).
        master_epoch: u64,
        /// The slave's stable member id.
        member: String,
        /// The slave's nonce.
        nonce: Nonce,
    },
    /// Master -> slave on the liveness channel, every heartbeat interval.
    Heartbeat {
        /// Increases by one per heartbeat of the connection.
        seq: u64,
    },
    /// Slave -> master: heartbeat `seq` was received. The master's lease counts from the time
    /// it *sent* that heartbeat, which the slave received no earlier: so the slave's patience,
    /// counted from its receipt, always outlasts the master's lease.
    Pong {
        /// The heartbeat answered.
        seq: u64,
    },
}

/// A malformed frame.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or closed.
    #[error("replication connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("malformed replication frame: {0}")]
    Malformed(&'static str),
    /// The frame announced is larger than [`MAX_FRAME`].
    #[error("replication frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A handshake frame of another protocol version (its layout may differ, so the rest of
    /// it is not read).
    #[error("the peer speaks replication protocol version {0}, this broker speaks version {PROTOCOL_VERSION}")]
    Version(u32),
    /// A `Hello` of the replication core's protocol in another version
    /// ([`crate::proto_wire::CORE_PROTOCOL_VERSION`]).
    #[error("the peer speaks replication core protocol version {0}, this broker speaks version {v}", v = crate::proto_wire::CORE_PROTOCOL_VERSION)]
    CoreVersion(u32),
}

const T_HELLO: u8 = 1;
const T_WELCOME: u8 = 2;
const T_REJECT: u8 = 3;
const T_ENTRY: u8 = 4;
const T_SNAP_BEGIN: u8 = 5;
const T_SNAP_CHUNK: u8 = 6;
const T_SNAP_END: u8 = 7;
const T_ACK: u8 = 8;
const T_WATCH: u8 = 9;
const T_HEARTBEAT: u8 = 10;
const T_PONG: u8 = 11;
const T_CHALLENGE: u8 = 12;
const T_PROOF: u8 = 13;

const OP_ENQ: u8 = 1;
const OP_DEQ: u8 = 2;
const OP_PUTSUB: u8 = 3;
const OP_DELSUB: u8 = 4;
const OP_PURGE: u8 = 5;

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s);
}

fn put_pos(b: &mut BytesMut, p: Position) {
    b.put_u64_le(p.epoch);
    b.put_u64_le(p.lsn);
}

/// Appends the encoding of `batch`.
pub fn encode_batch(b: &mut BytesMut, batch: &Batch) {
    b.put_u32_le(batch.len() as u32);
    for op in batch {
        match op {
            Op::Enqueue { list, seq, payload } => {
                b.put_u8(OP_ENQ);
                put_str(b, list);
                b.put_u64_le(*seq);
                put_bytes(b, payload);
            }
            Op::Dequeue { list, seq } => {
                b.put_u8(OP_DEQ);
                put_str(b, list);
                b.put_u64_le(*seq);
            }
            Op::PutSubscription(r) => {
                b.put_u8(OP_PUTSUB);
                put_str(b, &r.list);
                put_str(b, &r.client_id);
                put_str(b, &r.name);
                put_str(b, &r.topic);
                match &r.selector {
                    Some(s) => {
                        b.put_u8(1);
                        put_str(b, s);
                    }
                    None => b.put_u8(0),
                }
                b.put_u8(u8::from(r.no_local));
            }
            Op::DeleteSubscription { list } => {
                b.put_u8(OP_DELSUB);
                put_str(b, list);
            }
            Op::Purge { list } => {
                b.put_u8(OP_PURGE);
                put_str(b, list);
            }
        }
    }
}

/// Decodes a whole buffer written by [`encode_batch`] (nothing may follow).
pub fn decode_batch_bytes(mut b: Bytes) -> Result<Batch, WireError> {
    let batch = decode_batch(&mut b)?;
    if b.has_remaining() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(batch)
}

/// Encoded size of a batch's payloads (for progress and ring accounting).
pub fn batch_bytes(batch: &Batch) -> usize {
    batch
        .iter()
        .map(|op| match op {
            Op::Enqueue { list, payload, .. } => list.len() + payload.len() + 16,
            Op::Dequeue { list, .. } => list.len() + 16,
            _ => 64,
        })
        .sum()
}

impl Frame {
    /// Encodes the frame with its length prefix.
    pub fn encode(&self, b: &mut BytesMut) {
        let start = b.len();
        b.put_u32_le(0);
        match self {
            Frame::Challenge { version, nonce } => {
                b.put_u8(T_CHALLENGE);
                b.put_u32_le(*version);
                b.put_slice(nonce);
            }
            Frame::Hello {
                version,
                group,
                master_epoch,
                last,
                member,
                nonce,
            } => {
                b.put_u8(T_HELLO);
                b.put_u32_le(*version);
                put_str(b, group);
                b.put_u64_le(*master_epoch);
                put_pos(b, *last);
                put_str(b, member);
                b.put_slice(nonce);
            }
            Frame::Proof { proof } => {
                b.put_u8(T_PROOF);
                b.put_slice(proof);
            }
            Frame::Welcome { epoch, proof } => {
                b.put_u8(T_WELCOME);
                b.put_u64_le(*epoch);
                b.put_slice(proof);
            }
            Frame::Reject { reason } => {
                b.put_u8(T_REJECT);
                put_str(b, reason);
            }
            Frame::Entry { pos, batch } => {
                b.put_u8(T_ENTRY);
                put_pos(b, *pos);
                encode_batch(b, batch);
            }
            Frame::SnapshotBegin { pos, total_bytes } => {
                b.put_u8(T_SNAP_BEGIN);
                put_pos(b, *pos);
                b.put_u64_le(*total_bytes);
            }
            Frame::SnapshotChunk { batch } => {
                b.put_u8(T_SNAP_CHUNK);
                encode_batch(b, batch);
            }
            Frame::SnapshotEnd { pos, consistent_at } => {
                b.put_u8(T_SNAP_END);
                put_pos(b, *pos);
                put_pos(b, *consistent_at);
            }
            Frame::Ack { kind, pos } => {
                b.put_u8(T_ACK);
                b.put_u8(match kind {
                    AckKind::Mem => 0,
                    AckKind::Disk => 1,
                });
                put_pos(b, *pos);
            }
            Frame::Watch {
                version,
                group,
                master_epoch,
                member,
                nonce,
            } => {
                b.put_u8(T_WATCH);
                b.put_u32_le(*version);
                put_str(b, group);
                b.put_u64_le(*master_epoch);
                put_str(b, member);
                b.put_slice(nonce);
            }
            Frame::Heartbeat { seq } => {
                b.put_u8(T_HEARTBEAT);
                b.put_u64_le(*seq);
            }
            Frame::Pong { seq } => {
                b.put_u8(T_PONG);
                b.put_u64_le(*seq);
            }
        }
        let len = (b.len() - start - 4) as u32;
        b[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes one frame body (type byte first, length prefix already removed).
    pub fn decode(mut body: Bytes) -> Result<Frame, WireError> {
        let r = &mut body;
        let t = get_u8(r)?;
        let f = match t {
            T_CHALLENGE => Frame::Challenge {
                version: get_version(r)?,
                nonce: get_array(r)?,
            },
            T_HELLO => Frame::Hello {
                version: get_version(r)?,
                group: get_str(r)?,
                master_epoch: get_u64(r)?,
                last: get_pos(r)?,
                member: get_str(r)?,
                nonce: get_array(r)?,
            },
            T_PROOF => Frame::Proof {
                proof: get_array(r)?,
            },
            T_WELCOME => Frame::Welcome {
                epoch: get_u64(r)?,
                proof: get_array(r)?,
            },
            T_REJECT => Frame::Reject {
                reason: get_str(r)?,
            },
            T_ENTRY => Frame::Entry {
                pos: get_pos(r)?,
                batch: decode_batch(r)?,
            },
            T_SNAP_BEGIN => Frame::SnapshotBegin {
                pos: get_pos(r)?,
                total_bytes: get_u64(r)?,
            },
            T_SNAP_CHUNK => Frame::SnapshotChunk {
                batch: decode_batch(r)?,
            },
            T_SNAP_END => {
                let pos = get_pos(r)?;
                let consistent_at = get_pos(r)?;
                if consistent_at < pos {
                    return Err(WireError::Malformed("a copy consistent before its cut"));
                }
                Frame::SnapshotEnd { pos, consistent_at }
            }
            T_ACK => Frame::Ack {
                kind: match get_u8(r)? {
                    0 => AckKind::Mem,
                    1 => AckKind::Disk,
                    _ => return Err(WireError::Malformed("ack kind")),
                },
                pos: get_pos(r)?,
            },
            T_WATCH => Frame::Watch {
                version: get_version(r)?,
                group: get_str(r)?,
                master_epoch: get_u64(r)?,
                member: get_str(r)?,
                nonce: get_array(r)?,
            },
            T_HEARTBEAT => Frame::Heartbeat { seq: get_u64(r)? },
            T_PONG => Frame::Pong { seq: get_u64(r)? },
            _ => return Err(WireError::Malformed("frame type")),
        };
        if r.has_remaining() {
            return Err(WireError::Malformed("trailing bytes"));
        }
        Ok(f)
    }
}

pub(crate) fn need(r: &Bytes, n: usize) -> Result<(), WireError> {
    if r.remaining() < n {
        Err(WireError::Malformed("truncated"))
    } else {
        Ok(())
    }
}

pub(crate) fn get_u8(r: &mut Bytes) -> Result<u8, WireError> {
    need(r, 1)?;
    Ok(r.get_u8())
}

pub(crate) fn get_u32(r: &mut Bytes) -> Result<u32, WireError> {
    need(r, 4)?;
    Ok(r.get_u32_le())
}

pub(crate) fn get_u64(r: &mut Bytes) -> Result<u64, WireError> {
    need(r, 8)?;
    Ok(r.get_u64_le())
}

/// The version leading a handshake frame; another version's layout may differ, so the frame
/// is refused here with a typed error instead of being misread.
fn get_version(r: &mut Bytes) -> Result<u32, WireError> {
    match get_u32(r)? {
        PROTOCOL_VERSION => Ok(PROTOCOL_VERSION),
        v => Err(WireError::Version(v)),
    }
}

/// A fixed-size field (nonce, proof): no length prefix, the size is the protocol's.
fn get_array<const N: usize>(r: &mut Bytes) -> Result<[u8; N], WireError> {
    need(r, N)?;
    let mut a = [0u8; N];
    r.copy_to_slice(&mut a);
    Ok(a)
}

pub(crate) fn get_pos(r: &mut Bytes) -> Result<Position, WireError> {
    Ok(Position {
        epoch: get_u64(r)?,
        lsn: get_u64(r)?,
    })
}

pub(crate) fn get_bytes(r: &mut Bytes) -> Result<Bytes, WireError> {
    let n = get_u32(r)? as usize;
    need(r, n)?;
    Ok(r.split_to(n))
}

fn get_str(r: &mut Bytes) -> Result<String, WireError> {
    let b = get_bytes(r)?;
    String::from_utf8(b.to_vec()).map_err(|_| WireError::Malformed("string is not UTF-8"))
}

fn decode_batch(r: &mut Bytes) -> Result<Batch, WireError> {
    let n = get_u32(r)? as usize;
    // Every op takes at least 5 bytes: a count larger than that is a lie, not an allocation.
    if n > r.remaining() / 5 {
        return Err(WireError::Malformed("op count"));
    }
    let mut batch = Vec::with_capacity(n);
    for _ in 0..n {
        let op = match get_u8(r)? {
            OP_ENQ => Op::Enqueue {
                list: get_str(r)?,
                seq: get_u64(r)?,
                payload: get_bytes(r)?,
            },
            OP_DEQ => Op::Dequeue {
                list: get_str(r)?,
                seq: get_u64(r)?,
            },
            OP_PUTSUB => Op::PutSubscription(SubscriptionRecord {
                list: get_str(r)?,
                client_id: get_str(r)?,
                name: get_str(r)?,
                topic: get_str(r)?,
                selector: match get_u8(r)? {
                    0 => None,
                    1 => Some(get_str(r)?),
                    _ => return Err(WireError::Malformed("selector flag")),
                },
                no_local: get_u8(r)? != 0,
            }),
            OP_DELSUB => Op::DeleteSubscription { list: get_str(r)? },
            OP_PURGE => Op::Purge { list: get_str(r)? },
            _ => return Err(WireError::Malformed("op type")),
        };
        batch.push(op);
    }
    Ok(batch)
}

/// Reads one frame.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, WireError> {
    let len = r.read_u32_le().await? as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    if len == 0 {
        return Err(WireError::Malformed("empty frame"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Frame::decode(Bytes::from(buf))
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), WireError> {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    w.write_all(&b).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        assert_eq!(len, b.len() - 4);
        let back = Frame::decode(b.freeze().slice(4..)).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn every_frame_round_trips() {
        for f in handshake_frames() {
            roundtrip(f);
        }
        roundtrip(Frame::Heartbeat { seq: 77 });
        roundtrip(Frame::Pong { seq: u64::MAX });
        roundtrip(Frame::Reject {
            reason: "no".into(),
        });
        roundtrip(Frame::Entry {
            pos: Position { epoch: 2, lsn: 5 },
            batch: vec![
                Op::Enqueue {
                    list: "queue://a".into(),
                    seq: 1,
                    payload: Bytes::from_static(b"hello"),
                },
                Op::Dequeue {
                    list: "queue://a".into(),
                    seq: 1,
                },
                Op::PutSubscription(SubscriptionRecord {
                    list: "durable://c:n".into(),
                    client_id: "c".into(),
                    name: "n".into(),
                    topic: "t".into(),
                    selector: Some("x > 1".into()),
                    no_local: true,
                }),
                Op::DeleteSubscription {
                    list: "durable://c:n".into(),
                },
                Op::Purge {
                    list: "queue://b".into(),
                },
            ],
        });
        roundtrip(Frame::SnapshotBegin {
            pos: Position { epoch: 1, lsn: 2 },
            total_bytes: 3,
        });
        roundtrip(Frame::SnapshotChunk { batch: vec![] });
        roundtrip(Frame::SnapshotEnd {
            pos: Position { epoch: 1, lsn: 2 },
            consistent_at: Position { epoch: 1, lsn: 9 },
        });
        roundtrip(Frame::Ack {
            kind: AckKind::Disk,
            pos: Position { epoch: 4, lsn: 99 },
        });
    }

    #[test]
    fn truncated_and_hostile_frames_are_errors_not_panics() {
        let mut b = BytesMut::new();
        Frame::Entry {
            pos: Position::default(),
            batch: vec![Op::Purge { list: "q".into() }],
        }
        .encode(&mut b);
        let body = b.freeze().slice(4..);
        for cut in 0..body.len() {
            assert!(Frame::decode(body.slice(..cut)).is_err(), "cut at {cut}");
        }
        // An op count far beyond the bytes present must not allocate for it.
        let mut h = BytesMut::new();
        h.put_u8(T_SNAP_CHUNK);
        h.put_u32_le(u32::MAX);
        assert!(Frame::decode(h.freeze()).is_err());
        assert!(Frame::decode(Bytes::from_static(&[200])).is_err());
    }

    /// One of each handshake frame, with nonces and proofs that differ byte by byte.
    fn handshake_frames() -> Vec<Frame> {
        let n = |k: u8| -> [u8; 32] { std::array::from_fn(|i| k.wrapping_add(i as u8)) };
        vec![
            Frame::Challenge {
                version: PROTOCOL_VERSION,
                nonce: n(1),
            },
            Frame::Hello {
                version: PROTOCOL_VERSION,
                group: "g".into(),
                master_epoch: 7,
                last: Position { epoch: 3, lsn: 9 },
                member: "m-1".into(),
                nonce: n(40),
            },
            Frame::Proof { proof: n(80) },
            Frame::Watch {
                version: PROTOCOL_VERSION,
                group: "g".into(),
                master_epoch: 9,
                member: "b-1".into(),
                nonce: n(120),
            },
            Frame::Welcome {
                epoch: 4,
                proof: n(200),
            },
        ]
    }

    fn body(f: &Frame) -> Bytes {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        b.freeze().slice(4..)
    }

    #[test]
    fn truncated_or_extended_handshake_frames_are_malformed() {
        for f in handshake_frames() {
            let body = body(&f);
            for cut in 0..body.len() {
                assert!(
                    matches!(
                        Frame::decode(body.slice(..cut)),
                        Err(WireError::Malformed(_))
                    ),
                    "{f:?} cut at {cut}"
                );
            }
            let mut longer = BytesMut::from(&body[..]);
            longer.put_u8(0);
            assert!(
                matches!(
                    Frame::decode(longer.freeze()),
                    Err(WireError::Malformed("trailing bytes"))
                ),
                "{f:?} with a trailing byte"
            );
        }
    }

    #[test]
    fn a_handshake_frame_of_another_version_is_a_version_error() {
        // What a version 4 slave sends first: its hello (with the token in clear) and its
        // watch. The layout differs, so only the version is read.
        let mut old_hello = BytesMut::new();
        old_hello.put_u8(T_HELLO);
        old_hello.put_u32_le(4);
        put_str(&mut old_hello, "token");
        put_str(&mut old_hello, "g");
        old_hello.put_u64_le(1);
        put_pos(&mut old_hello, Position::default());
        put_str(&mut old_hello, "m");
        assert!(matches!(
            Frame::decode(old_hello.freeze()),
            Err(WireError::Version(4))
        ));
        let mut old_watch = BytesMut::new();
        old_watch.put_u8(T_WATCH);
        old_watch.put_u32_le(4);
        put_str(&mut old_watch, "token");
        assert!(matches!(
            Frame::decode(old_watch.freeze()),
            Err(WireError::Version(4))
        ));
        // A newer peer, on every handshake frame.
        for f in handshake_frames() {
            let mut b = BytesMut::from(&body(&f)[..]);
            if matches!(f, Frame::Welcome { .. } | Frame::Proof { .. }) {
                continue; // carry no version: they answer frames that did
            }
            b[1..5].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
            let e = Frame::decode(b.freeze()).unwrap_err();
            assert!(matches!(e, WireError::Version(v) if v == PROTOCOL_VERSION + 1));
            assert!(e.to_string().contains("protocol version"), "{e}");
        }
    }

    /// A small deterministic generator (xorshift), so that a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn mutated_and_random_frames_decode_or_fail_without_panicking() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoded = 0usize;
        for f in handshake_frames() {
            let body = body(&f);
            // Every byte replaced by several values: a typed result, never a panic; whatever
            // decodes encodes back to the same bytes (the codec has one encoding per frame).
            for i in 0..body.len() {
                for v in [0u8, 1, 0x7f, 0xff, rng.next() as u8] {
                    let mut m = BytesMut::from(&body[..]);
                    m[i] = v;
                    let m = m.freeze();
                    if let Ok(back) = Frame::decode(m.clone()) {
                        decoded += 1;
                        let mut again = BytesMut::new();
                        back.encode(&mut again);
                        assert_eq!(&again[4..], &m[..], "{back:?}");
                    }
                }
            }
        }
        assert!(
            decoded > 0,
            "no mutation kept a valid frame: the check above checked nothing"
        );
        // Random bodies led by each frame type.
        for _ in 0..20_000 {
            let len = (rng.next() % 96) as usize;
            let mut b = BytesMut::with_capacity(len + 1);
            b.put_u8((rng.next() % 15) as u8);
            for _ in 0..len {
                b.put_u8(rng.next() as u8);
            }
            let _ = Frame::decode(b.freeze());
        }
    }
}
