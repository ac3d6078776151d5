//! The writer task: batches queued frames into one write and keeps the heart-beat going.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferromq_protocol::stomp::{encode, encode_heartbeat, Frame, Version};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::CloseReason;
use crate::shared::Shared;

/// Frames encoded into one write at most, so one write never holds up the queue for long.
const BATCH_FRAMES_MAX: usize = 256;
/// Stop draining the queue once the batch buffer holds this many bytes.
const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// A buffer grown beyond this by one huge frame is released rather than kept for the
/// connection's lifetime.
const BUFFER_RETAIN_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Writes frames from `queue` until the connection closes or every handle is dropped.
///
/// `heartbeat_send_ms` is the negotiated interval at which the server wants to hear from us
/// (0: never); a heart-beat goes out only when nothing else was written for that long.
pub(crate) async fn run<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut queue: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
    version: Version,
    heartbeat_send_ms: u64,
) {
    let mut closed = shared.watch_closed();
    let heartbeat_every = (heartbeat_send_ms > 0).then(|| Duration::from_millis(heartbeat_send_ms));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut last_write = Instant::now();
    loop {
        // When heart-beats are off the timer branch is disabled; the far deadline is never used.
        let heartbeat_at = heartbeat_every.map(|every| last_write + every);
        let heartbeat_deadline =
            heartbeat_at.unwrap_or_else(|| last_write + Duration::from_secs(24 * 3600));
        tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => break,
            next = queue.recv() => {
                let Some(frame) = next else {
                    // Every Client, Subscription and the queue's senders are gone: nobody can
                    // use this connection any more.
                    shared.close(CloseReason::Local);
                    break;
                };
                encode(&frame, version, &mut buf);
                let mut frames = 1;
                while frames < BATCH_FRAMES_MAX && buf.len() < BATCH_BYTES_MAX {
                    match queue.try_recv() {
                        Ok(frame) => {
                            encode(&frame, version, &mut buf);
                            frames += 1;
                        }
                        Err(_) => break,
                    }
                }
                tracing::trace!(frames, bytes = buf.len(), "writing batch");
            }
            _ = tokio::time::sleep_until(heartbeat_deadline), if heartbeat_at.is_some() => {
                tracing::trace!("sending heart-beat");
                encode_heartbeat(&mut buf);
            }
        }
        let written = tokio::select! {
            biased;
            // A peer that stops reading would otherwise pin this task in `write_all` forever,
            // even after the reader declared the connection dead.
            _ = closed.wait_for(|c| *c) => break,
            // TLS holds records in rustls until flushed; on TCP the flush is a no-op.
            r = async {
                socket.write_all(&buf).await?;
                socket.flush().await
            } => r,
        };
        if let Err(err) = written {
            tracing::debug!(error = %err, "write failed");
            shared.close(CloseReason::io(&err));
            break;
        }
        last_write = Instant::now();
        buf.clear();
        if buf.capacity() > BUFFER_RETAIN_BYTES_MAX {
            buf = BytesMut::with_capacity(64 * 1024);
        }
    }
    // Best effort: the connection is over either way.
    let _ = socket.shutdown().await;
}
