//! The slave side: connect to the master of the current epoch, apply its stream (or a full
//! copy) to the local store in log order, and acknowledge what was received and what is durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_store::{Completion, MessageStore, Op, StoreError};
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, watch};

use crate::auth;
use crate::master::EntryRing;
use crate::position::{
    begin_copy_ops, copy_in_progress, end_copy_ops, lift_copy_mark_ops, position_ops, FENCED_LIST,
    MEMBER_ID_LIST, NO_POSITION,
};
use crate::staging::CopyStaging;
use crate::wire::{self, AckKind, Frame, Position, PROTOCOL_VERSION};
use crate::ZkError;

/// How long connecting to the master may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the slave waits for its store to confirm what it applied when it stops following.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Whom to follow, and as whom.
#[derive(Debug, Clone)]
pub struct FollowParams {
    /// The master's replication address, `host:port`.
    pub addr: String,
    /// The master's epoch, from ZooKeeper: any other master is refused.
    pub master_epoch: u64,
    /// `security_token`.
    pub token: String,
    /// `broker.name`.
    pub group: String,
    /// This member's name, for the master's logs.
    pub member: String,
    /// TLS on the connections to the master (`ha.tls_*`); `None`: plain TCP.
    pub tls: Option<crate::ReplicationTls>,
}

enum Ack {
    Mem(Position),
    Disk(Position),
}

struct Copy {
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
}

/// Follows the master until the connection ends, an error occurs, or `stop` turns true.
/// Returns the position that is durable in `store` when it returns (what the slave reports to
/// the election) and why it stopped.
pub async fn follow(
    store: &Arc<dyn MessageStore>,
    start: Position,
    p: &FollowParams,
    stop: &mut watch::Receiver<bool>,
) -> (Position, Result<(), ZkError>) {
    follow_with_ring(store, start, p, stop, None).await
}

/// [`follow`], keeping the entries received in `ring` (see [`EntryRing`]): the ring is reset
/// when it does not end at `start` and by every full copy, so it always ends at the last entry
/// applied, continuing the log of the store.
pub async fn follow_with_ring(
    store: &Arc<dyn MessageStore>,
    start: Position,
    p: &FollowParams,
    stop: &mut watch::Receiver<bool>,
    ring: Option<&Mutex<EntryRing>>,
) -> (Position, Result<(), ZkError>) {
    let f = follow_staged(store, start, p, stop, ring, None).await;
    (f.pos, f.result)
}

/// How following ended.
#[derive(Debug)]
pub struct Followed {
    /// The position durable in the live store (after an install: the installed copy's).
    pub pos: Position,
    /// Why following stopped.
    pub result: Result<(), ZkError>,
    /// A staged full copy replaced the live store, which is closed: reopen it.
    pub installed: bool,
}

/// [`follow_with_ring`], receiving full copies into `staging` (when given) instead of wiping
/// the live store: the live store and its position stay whole until the copy is consistent,
/// then the copy is installed in its place (the live store is closed, `installed` is set) and
/// the caller reopens it and follows again.
pub async fn follow_staged(
    store: &Arc<dyn MessageStore>,
    start: Position,
    p: &FollowParams,
    stop: &mut watch::Receiver<bool>,
    ring: Option<&Mutex<EntryRing>>,
    staging: Option<&dyn CopyStaging>,
) -> Followed {
    if let Some(r) = ring {
        let mut r = r.lock();
        if r.last() != start {
            r.reset(start);
        }
    }
    let durable = Arc::new(Mutex::new(start));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Option<Position>, Completion)>();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Ack>();
    let failed: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    // Confirms, in order, what the local store made durable; positions move only then.
    let driver = {
        let durable = durable.clone();
        let ack_tx = ack_tx.clone();
        let failed = failed.clone();
        tokio::spawn(async move {
            while let Some((pos, c)) = done_rx.recv().await {
                match c.await {
                    Ok(()) => {
                        if let Some(pos) = pos {
                            *durable.lock() = pos;
                            let _ = ack_tx.send(Ack::Disk(pos));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the slave's local store failed");
                        *failed.lock() = Some(e.to_string());
                        return;
                    }
                }
            }
        })
    };
    let result = run(
        store, start, p, stop, &done_tx, ack_tx, ack_rx, &failed, ring, staging,
    )
    .await;
    drop(done_tx);
    // Stop only once everything applied is durable (or has failed), so the position reported
    // to the election is one the store really holds.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, driver).await;
    let pos = *durable.lock();
    let result = match (result, drained) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(_)) => Err(ZkError::Replication(
            "the local store did not confirm in time".into(),
        )),
        (Ok(install), Ok(_)) => match failed.lock().take() {
            Some(e) => Err(ZkError::Replication(format!("local store: {e}"))),
            None => Ok(install),
        },
    };
    match (result, staging) {
        (Ok(Some(at)), Some(staging)) => {
            // The staged copy is complete, durable and closed: it replaces the live store.
            let installed = store.close().and_then(|()| staging.install());
            if let Some(r) = ring {
                r.lock().reset(at);
            }
            match installed {
                Ok(()) => {
                    tracing::info!(position = %at, "full copy consistent: installed in place of the live store");
                    Followed {
                        pos: at,
                        result: Ok(()),
                        installed: true,
                    }
                }
                // The live store is closed either way: the caller reopens whichever is there
                // (a crash-safe install leaves the old one or the new one, never a mix).
                Err(e) => Followed {
                    pos,
                    result: Err(ZkError::Store(e)),
                    installed: true,
                },
            }
        }
        (result, _) => Followed {
            pos,
            result: result.map(|_| ()),
            installed: false,
        },
    }
}

/// Completes a staged copy once its last entry (`last`, submitted after everything else) is
/// durable: carries this member's own records over from the live store (its member id and
/// fences name the broker, not the data) and closes the staged store.
async fn finish_staged(
    live: &dyn MessageStore,
    staged: &dyn MessageStore,
    last: Completion,
) -> Result<(), StoreError> {
    last.await?;
    let mut carry = Vec::new();
    for list in [MEMBER_ID_LIST, FENCED_LIST] {
        let mut after = None;
        // Bounded: a member id is one record, fences one per epoch fenced.
        for _ in 0..1024 {
            let page = live.load(list, after, 1024)?;
            let Some(l) = page.last() else { break };
            after = Some(l.seq);
            carry.extend(page.into_iter().map(|m| Op::Enqueue {
                list: list.into(),
                seq: m.seq,
                payload: m.payload,
            }));
        }
    }
    if !carry.is_empty() {
        staged.submit(carry).await?;
    }
    staged.close()
}

#[allow(clippy::too_many_arguments)]
async fn run(
    store: &Arc<dyn MessageStore>,
    start: Position,
    p: &FollowParams,
    stop: &mut watch::Receiver<bool>,
    done_tx: &mpsc::UnboundedSender<(Option<Position>, Completion)>,
    ack_tx: mpsc::UnboundedSender<Ack>,
    mut ack_rx: mpsc::UnboundedReceiver<Ack>,
    failed: &Mutex<Option<String>>,
    ring: Option<&Mutex<EntryRing>>,
    staging: Option<&dyn CopyStaging>,
) -> Result<Option<Position>, ZkError> {
    let (rd, wr) = crate::tls::connect(
        &p.addr,
        p.tls.as_ref(),
        CONNECT_TIMEOUT,
        "connecting to the master",
    )
    .await?;
    // A store holding part of a copy has no position to stream from.
    let hello_last = if copy_in_progress(&**store).map_err(ZkError::Store)? {
        NO_POSITION
    } else {
        start
    };
    // Buffered: the master writes a burst of entries with one syscall; reading each frame
    // unbuffered cost two (length, then body) per entry.
    let mut rd = BufReader::with_capacity(256 * 1024, rd);
    let mut wr = BufWriter::new(wr);
    // Nothing the master sends is acted on before it proved the token: the store is untouched
    // until `handshake` returns.
    handshake(
        &mut rd,
        &mut wr,
        p,
        &auth::Opening {
            channel: auth::Channel::Stream,
            group: &p.group,
            member: &p.member,
            master_epoch: p.master_epoch,
            last: Some(hello_last),
        },
        CONNECT_TIMEOUT,
    )
    .await?;
    tracing::info!(master = %p.addr, epoch = p.master_epoch, position = %start, "Slave started: replicating from the master");
    // The start position is durable (read from the store, or drained before we got here). The
    // master counts it only if its own log holds that very entry (same epoch) and it agreed to
    // stream from there; before a full copy it is ignored.
    let _ = ack_tx.send(Ack::Disk(start));
    let writer = tokio::spawn(async move {
        while let Some(first) = ack_rx.recv().await {
            let (mut mem, mut disk): (Option<Position>, Option<Position>) = (None, None);
            // Positions along one connection's log grow in both epoch and lsn: max is the last.
            let mut note = |a: Ack| match a {
                Ack::Mem(p) => mem = Some(mem.map_or(p, |m| m.max(p))),
                Ack::Disk(p) => disk = Some(disk.map_or(p, |d| d.max(p))),
            };
            note(first);
            // Coalesce: only the highest of each kind matters (acks are cumulative).
            for _ in 0..4096 {
                match ack_rx.try_recv() {
                    Ok(a) => note(a),
                    Err(_) => break,
                }
            }
            let mut b = bytes::BytesMut::new();
            if let Some(pos) = mem {
                Frame::Ack {
                    kind: AckKind::Mem,
                    pos,
                }
                .encode(&mut b);
            }
            if let Some(pos) = disk {
                Frame::Ack {
                    kind: AckKind::Disk,
                    pos,
                }
                .encode(&mut b);
            }
            if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    });
    let mut applied = start;
    let mut copy: Option<Copy> = None;
    // After a full copy: the position whose entry makes the store consistent (the copy was
    // read while the master's writers went on). Until it is applied the copy mark stays, and
    // nothing is acknowledged.
    let mut settling: Option<Position> = None;
    // The store a staged copy goes to (see [`CopyStaging`]); the live one is left alone.
    let mut staged: Option<Arc<dyn MessageStore>> = None;
    let result = loop {
        if failed.lock().is_some() {
            break Ok(None);
        }
        let frame = tokio::select! {
            f = wire::read_frame(&mut rd) => f,
            _ = stop.changed() => break Ok(None),
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => break Err(e.into()),
        };
        match frame {
            Frame::Entry { pos, batch } => {
                if copy.is_some() || pos.lsn != applied.lsn + 1 || pos.epoch > p.master_epoch {
                    break Err(ZkError::Replication(format!(
                        "out-of-order entry {pos} after {applied} (master epoch {})",
                        p.master_epoch
                    )));
                }
                if let Some(st) = staged.as_ref().filter(|_| settling.is_some()) {
                    let c = st.submit(batch);
                    applied = pos;
                    let Some(at) = settling.filter(|at| pos.lsn >= at.lsn) else {
                        let _ = done_tx.send((None, c));
                        continue;
                    };
                    if pos != at {
                        break Err(ZkError::Replication(format!(
                            "entry {pos} where the copy said it would be consistent at {at}"
                        )));
                    }
                    match finish_staged(&**store, &**st, c).await {
                        Ok(()) => break Ok(Some(pos)),
                        Err(e) => break Err(ZkError::Store(e)),
                    }
                }
                if let Some(r) = ring {
                    r.lock().push(pos, batch.clone());
                }
                let c = store.submit(batch);
                applied = pos;
                match settling {
                    Some(at) if pos.lsn < at.lsn => {
                        // Part of settling the copy: durable, but no position yet.
                        let _ = done_tx.send((None, c));
                    }
                    Some(at) => {
                        if pos != at {
                            break Err(ZkError::Replication(format!(
                                "entry {pos} where the copy said it would be consistent at {at}"
                            )));
                        }
                        // The store now matches the master's at `pos`: lift the copy mark
                        // (after the entry, in store order) and only then acknowledge.
                        let _ = done_tx.send((None, c));
                        let _ = done_tx.send((Some(pos), store.submit(lift_copy_mark_ops())));
                        settling = None;
                        tracing::info!(position = %pos, "full copy consistent: following the master");
                        let _ = ack_tx.send(Ack::Mem(pos));
                    }
                    None => {
                        let _ = done_tx.send((Some(pos), c));
                        let _ = ack_tx.send(Ack::Mem(pos));
                    }
                }
            }
            Frame::SnapshotBegin { pos, total_bytes } if staging.is_some() => {
                tracing::info!(master_position = %pos, bytes = total_bytes, "receiving a full copy of the master's store (staged beside the live store, which keeps its position until the copy is installed)");
                if let Some(old) = staged.take() {
                    let _ = old.close();
                }
                match staging.map(|s| s.open_staged()) {
                    Some(Ok(s)) => staged = Some(s),
                    Some(Err(e)) => break Err(ZkError::Store(e)),
                    None => break Err(ZkError::Replication("no staging".into())),
                }
                let now = Instant::now();
                copy = Some(Copy {
                    total: total_bytes,
                    done: 0,
                    started: now,
                    last_log: now,
                });
            }
            Frame::SnapshotBegin { pos, total_bytes } => {
                tracing::info!(master_position = %pos, bytes = total_bytes, "receiving a full copy of the master's store");
                // Wipe everything and mark the copy, in one atomic batch: until the copy is
                // complete and durable this store claims no position at all (it reports none
                // to the election and asks any master for a full copy).
                let rec = match store.recover() {
                    Ok(r) => r,
                    Err(e) => break Err(ZkError::Store(e)),
                };
                if let Some(r) = ring {
                    r.lock().reset(NO_POSITION);
                }
                let wipe = begin_copy_ops(&rec, pos);
                let _ = done_tx.send((Some(Position::default()), store.submit(wipe)));
                let now = Instant::now();
                copy = Some(Copy {
                    total: total_bytes,
                    done: 0,
                    started: now,
                    last_log: now,
                });
            }
            Frame::SnapshotChunk { batch } => {
                let Some(c) = copy.as_mut() else {
                    break Err(ZkError::Replication("copy chunk outside a copy".into()));
                };
                c.done += batch
                    .iter()
                    .map(|op| match op {
                        Op::Enqueue { payload, .. } => payload.len() as u64,
                        _ => 0,
                    })
                    .sum::<u64>();
                if c.last_log.elapsed() >= Duration::from_secs(1) {
                    c.last_log = Instant::now();
                    log_progress(c);
                }
                let target = staged.as_ref().unwrap_or(store);
                let _ = done_tx.send((None, target.submit(batch)));
            }
            Frame::SnapshotEnd { pos, consistent_at } => {
                let Some(c) = copy.take() else {
                    break Err(ZkError::Replication("copy end outside a copy".into()));
                };
                log_progress(&c);
                if let Some(st) = staged.as_ref() {
                    // The entries after the cut continue the staged log; the live store and
                    // the ring keep the live log until the install.
                    let c = st.submit(position_ops(None, pos));
                    applied = pos;
                    if consistent_at == pos {
                        match finish_staged(&**store, &**st, c).await {
                            Ok(()) => break Ok(Some(pos)),
                            Err(e) => break Err(ZkError::Store(e)),
                        }
                    }
                    let _ = done_tx.send((None, c));
                    settling = Some(consistent_at);
                    tracing::info!(cut = %pos, %consistent_at, "full copy received: applying the writes made during it");
                    continue;
                }
                if consistent_at == pos {
                    let _ = done_tx.send((Some(pos), store.submit(end_copy_ops(pos))));
                    tracing::info!(position = %pos, "full copy consistent: following the master");
                } else {
                    // The entries after the cut carry position records that continue from it;
                    // the mark stays until the entry at `consistent_at`.
                    let _ = done_tx.send((None, store.submit(position_ops(None, pos))));
                    settling = Some(consistent_at);
                    tracing::info!(cut = %pos, %consistent_at, "full copy received: applying the writes made during it");
                }
                if let Some(r) = ring {
                    r.lock().reset(pos);
                }
                applied = pos;
            }
            Frame::Ack { .. }
            | Frame::Challenge { .. }
            | Frame::Proof { .. }
            | Frame::Hello { .. }
            | Frame::Welcome { .. }
            | Frame::Watch { .. }
            | Frame::Heartbeat { .. }
            | Frame::Pong { .. } => {
                break Err(ZkError::Replication(
                    "unexpected frame from the master".into(),
                ));
            }
            Frame::Reject { reason } => {
                break Err(ZkError::Replication(format!("master refused: {reason}")));
            }
        }
    };
    writer.abort();
    if let (Some(st), false) = (staged, matches!(result, Ok(Some(_)))) {
        // An unfinished staged copy: discarded (the next copy starts a fresh one).
        let _ = st.close();
    }
    result
}

/// The slave's side of the handshake (see [`crate::auth`]): writes `opening` at once (so a
/// peer that is not a master of this protocol — a TLS listener reached in plain TCP, an older
/// master — fails it at once instead of both sides waiting), answers the master's challenge
/// with its proof, and returns once the master welcomed it with the expected epoch and a valid
/// proof of its own. Any other outcome is an error, logged when the peer failed to prove the
/// token.
async fn handshake<R, W>(
    rd: &mut R,
    wr: &mut W,
    p: &FollowParams,
    opening: &auth::Opening<'_>,
    timeout: Duration,
) -> Result<(), ZkError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let what = match opening.channel {
        auth::Channel::Stream => "stream",
        auth::Channel::Watch => "watch",
    };
    let (first, slave_nonce) = auth::opening_frame(opening)?;
    wire::write_frame(wr, &first).await?;
    let master_nonce = match tokio::time::timeout(timeout, wire::read_frame(rd)).await {
        Err(_) => {
            return Err(ZkError::Replication(format!(
                "no challenge from the master at {} on the {what} in {timeout:?}",
                p.addr
            )))
        }
        Ok(Ok(Frame::Challenge { nonce, .. })) => nonce,
        Ok(Ok(Frame::Reject { reason })) => {
            return Err(ZkError::Replication(format!(
                "master refused the {what}: {reason}"
            )))
        }
        Ok(Ok(_)) => {
            return Err(ZkError::Replication(format!(
                "the master at {} opened the {what} without a challenge",
                p.addr
            )))
        }
        // A master of protocol version 4 or older cannot read the hello (its layout changed)
        // and hangs up; so does a TLS master reached in plain TCP.
        Ok(Err(wire::WireError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ZkError::Replication(format!(
                "the master at {} hung up before its challenge on the {what} (a master older \
                 than replication protocol version {PROTOCOL_VERSION}, or TLS on one side \
                 only?)",
                p.addr
            )))
        }
        Ok(Err(e)) => return Err(e.into()),
    };
    let proof = auth::slave_proof(&p.token, opening, &master_nonce, &slave_nonce)?;
    wire::write_frame(wr, &Frame::Proof { proof }).await?;
    match tokio::time::timeout(timeout, wire::read_frame(rd)).await {
        Err(_) => Err(ZkError::Replication(format!(
            "no welcome from the master on the {what}"
        ))),
        Ok(Ok(Frame::Welcome { epoch, proof })) => {
            if !auth::verify_master(
                &p.token,
                opening,
                &master_nonce,
                &slave_nonce,
                epoch,
                &proof,
            ) {
                tracing::warn!(master = %p.addr, channel = what, "the master did not prove it knows the security token: not following it (a different ha.security_token, or not this group's master)");
                return Err(ZkError::Replication(format!(
                    "authentication failed: the master at {} did not prove it knows the \
                     security token",
                    p.addr
                )));
            }
            if epoch != p.master_epoch {
                return Err(ZkError::Replication(format!(
                    "master answered with epoch {epoch}, expected {}",
                    p.master_epoch
                )));
            }
            Ok(())
        }
        Ok(Ok(Frame::Reject { reason })) => Err(ZkError::Replication(format!(
            "master refused the {what}: {reason}"
        ))),
        Ok(Ok(_)) => Err(ZkError::Replication(format!(
            "unexpected answer to the {what}'s proof"
        ))),
        Ok(Err(e)) => Err(e.into()),
    }
}

fn log_progress(c: &Copy) {
    let secs = c.started.elapsed().as_secs_f64().max(1e-3);
    let rate = c.done as f64 / 1024.0 / secs;
    let pct = if c.total == 0 {
        100.0
    } else {
        c.done as f64 * 100.0 / c.total as f64
    };
    let remaining = if rate > 0.0 {
        (c.total.saturating_sub(c.done)) as f64 / 1024.0 / rate
    } else {
        0.0
    };
    tracing::info!(
        "Replaying recovery log: {pct:.2}% done ({}/{} bytes) @ {rate:.2} kb/s, {remaining:.2} secs remaining.",
        c.done,
        c.total
    );
}

/// Keeps a liveness channel to the master (fast failover): answers each of its heartbeats and
/// stores in `heard` the boot time (nanoseconds) at which the last one arrived. Returns when the
/// connection fails or the master refuses; the caller decides, from `heard`, when the master
/// has been silent too long.
pub async fn watch_master(
    p: &FollowParams,
    heard: &std::sync::atomic::AtomicU64,
    connect_timeout: Duration,
) -> Result<(), ZkError> {
    use std::sync::atomic::Ordering;
    let (mut rd, mut wr) = crate::tls::connect(
        &p.addr,
        p.tls.as_ref(),
        connect_timeout,
        "watching the master",
    )
    .await?;
    // No heartbeat counts before the master proved the token: a listener that does not know
    // it cannot keep this slave from fencing a silent master.
    handshake(
        &mut rd,
        &mut wr,
        p,
        &auth::Opening {
            channel: auth::Channel::Watch,
            group: &p.group,
            member: &p.member,
            master_epoch: p.master_epoch,
            last: None,
        },
        connect_timeout,
    )
    .await?;
    loop {
        match wire::read_frame(&mut rd).await? {
            Frame::Heartbeat { seq } => {
                let now = crate::liveness::boottime().as_nanos() as u64;
                heard.fetch_max(now, Ordering::SeqCst);
                wire::write_frame(&mut wr, &Frame::Pong { seq }).await?;
            }
            _ => return Err(ZkError::Replication("unexpected frame on the watch".into())),
        }
    }
}
