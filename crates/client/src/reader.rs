//! The reader task: decodes frames and routes them to whoever waits for them.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferromq_protocol::stomp::{Command, Decoder, Frame, Item};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{ClientError, CloseReason};
use crate::shared::Shared;

/// Spare capacity ensured before each read. The decoder's `frame_bytes_max` bounds how far the
/// buffer can grow while a frame is incomplete.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How many negotiated server heart-beat intervals of silence mean the connection is dead.
/// Two, as the spec suggests, tolerates one late beat plus network jitter.
const HEARTBEAT_SILENCE_FACTOR: u32 = 2;

/// Reads until the connection closes. `buf` holds whatever followed CONNECTED in the handshake
/// read; `heartbeat_expect_ms` is the negotiated interval at which the server beats (0: never).
pub(crate) async fn run<R: AsyncRead + Unpin>(
    mut socket: R,
    mut decoder: Decoder,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    heartbeat_expect_ms: u64,
) {
    let mut closed = shared.watch_closed();
    let silence_max = (heartbeat_expect_ms > 0)
        .then(|| Duration::from_millis(heartbeat_expect_ms) * HEARTBEAT_SILENCE_FACTOR);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Item::HeartBeat)) => tracing::trace!("heart-beat received"),
                Ok(Some(Item::Frame(frame))) => {
                    if !dispatch(&shared, frame) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "undecodable frame from server; closing");
                    shared.close(CloseReason::Decode(err));
                    return;
                }
            }
        }
        buf.reserve(READ_CHUNK_BYTES);
        let read = async {
            match silence_max {
                Some(limit) => tokio::time::timeout(limit, socket.read_buf(&mut buf)).await,
                None => Ok(socket.read_buf(&mut buf).await),
            }
        };
        let outcome = tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => return,
            outcome = read => outcome,
        };
        match outcome {
            Ok(Ok(0)) => {
                tracing::debug!("server closed the connection");
                shared.close(CloseReason::Eof);
                return;
            }
            Ok(Ok(n)) => tracing::trace!(bytes = n, "read"),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "read failed");
                shared.close(CloseReason::io(&err));
                return;
            }
            Err(_elapsed) => {
                tracing::warn!(
                    heartbeat_expect_ms,
                    "server silent for longer than the heart-beat contract allows; closing"
                );
                shared.close(CloseReason::HeartBeatTimeout);
                return;
            }
        }
    }
}

/// Routes one frame. Returns false when the connection is over.
fn dispatch(shared: &Shared, frame: Frame) -> bool {
    match frame.command {
        Command::Message => {
            tracing::trace!(
                subscription = frame.header("subscription").unwrap_or(""),
                "MESSAGE"
            );
            shared.route_message(frame);
            true
        }
        Command::Receipt => {
            match frame.header("receipt-id").map(str::to_owned) {
                Some(id) => {
                    tracing::trace!(receipt = %id, "RECEIPT");
                    if !shared.complete_receipt(&id, Ok(frame)) {
                        // Its waiter timed out or was dropped; nothing else to do.
                        tracing::debug!(receipt = %id, "RECEIPT nobody waits for");
                    }
                }
                None => tracing::warn!("RECEIPT without receipt-id; ignored"),
            }
            true
        }
        Command::Error => {
            let message = frame.header("message").unwrap_or_default().to_owned();
            let body = String::from_utf8_lossy(&frame.body).into_owned();
            tracing::warn!(%message, "ERROR from server; closing");
            if let Some(id) = frame.header("receipt-id") {
                shared.set_error_receipt_id(id);
                shared.complete_receipt(
                    id,
                    Err(ClientError::Server {
                        message: message.clone(),
                        body: body.clone(),
                    }),
                );
            }
            // The server closes after an ERROR; every other waiter fails with the same error.
            shared.close(CloseReason::Server { message, body });
            false
        }
        other => {
            tracing::warn!(command = %other, "unexpected frame from server; ignored");
            true
        }
    }
}
