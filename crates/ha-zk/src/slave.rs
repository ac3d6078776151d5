//! The slave side: connect to the master of the current epoch, apply its stream (or a full
//! copy) to the local store in log order, and acknowledge what was received and what is durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_store::{Completion, MessageStore, Op};
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, watch};

use crate::master::EntryRing;
use crate::position::{begin_copy_ops, copy_in_progress, end_copy_ops, NO_POSITION};
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
        store, start, p, stop, &done_tx, ack_tx, ack_rx, &failed, ring,
    )
    .await;
    drop(done_tx);
    // Stop only once everything applied is durable (or has failed), so the position reported
    // to the election is one the store really holds.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, driver).await;
    let pos = *durable.lock();
    let result = match (result, drained) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(_)) => Err(ZkError::Replication(
            "the local store did not confirm in time".into(),
        )),
        (Ok(()), Ok(_)) => match failed.lock().take() {
            Some(e) => Err(ZkError::Replication(format!("local store: {e}"))),
            None => Ok(()),
        },
    };
    (pos, result)
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
) -> Result<(), ZkError> {
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
    wire::write_frame(
        &mut wr,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            token: p.token.clone(),
            group: p.group.clone(),
            master_epoch: p.master_epoch,
            last: hello_last,
            member: p.member.clone(),
        },
    )
    .await?;
    match tokio::time::timeout(CONNECT_TIMEOUT, wire::read_frame(&mut rd)).await {
        Err(_) => return Err(ZkError::Replication("no welcome from the master".into())),
        Ok(Ok(Frame::Welcome { epoch })) if epoch == p.master_epoch => {}
        Ok(Ok(Frame::Welcome { epoch })) => {
            return Err(ZkError::Replication(format!(
                "master answered with epoch {epoch}, expected {}",
                p.master_epoch
            )))
        }
        Ok(Ok(Frame::Reject { reason })) => {
            return Err(ZkError::Replication(format!("master refused: {reason}")))
        }
        Ok(Ok(_)) => return Err(ZkError::Replication("unexpected first frame".into())),
        Ok(Err(e)) => return Err(e.into()),
    }
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
    let result = loop {
        if failed.lock().is_some() {
            break Ok(());
        }
        let frame = tokio::select! {
            f = wire::read_frame(&mut rd) => f,
            _ = stop.changed() => break Ok(()),
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
                if let Some(r) = ring {
                    r.lock().push(pos, batch.clone());
                }
                let c = store.submit(batch);
                let _ = done_tx.send((Some(pos), c));
                applied = pos;
                let _ = ack_tx.send(Ack::Mem(pos));
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
                let _ = done_tx.send((None, store.submit(batch)));
            }
            Frame::SnapshotEnd { pos } => {
                let Some(c) = copy.take() else {
                    break Err(ZkError::Replication("copy end outside a copy".into()));
                };
                log_progress(&c);
                let _ = done_tx.send((Some(pos), store.submit(end_copy_ops(pos))));
                if let Some(r) = ring {
                    r.lock().reset(pos);
                }
                applied = pos;
                tracing::info!(position = %pos, "full copy applied");
            }
            Frame::Ack { .. }
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
    result
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
    wire::write_frame(
        &mut wr,
        &Frame::Watch {
            version: PROTOCOL_VERSION,
            token: p.token.clone(),
            group: p.group.clone(),
            master_epoch: p.master_epoch,
            member: p.member.clone(),
        },
    )
    .await?;
    match tokio::time::timeout(connect_timeout, wire::read_frame(&mut rd)).await {
        Err(_) => return Err(ZkError::Replication("no welcome on the watch".into())),
        Ok(Ok(Frame::Welcome { epoch })) if epoch == p.master_epoch => {}
        Ok(Ok(Frame::Reject { reason })) => {
            return Err(ZkError::Replication(format!(
                "master refused the watch: {reason}"
            )))
        }
        Ok(Ok(_)) => return Err(ZkError::Replication("unexpected answer to a watch".into())),
        Ok(Err(e)) => return Err(e.into()),
    }
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
