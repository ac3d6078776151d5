//! Waiting for a RECEIPT.

use std::sync::Arc;

use ferromq_protocol::stomp::Frame;
use tokio::time::Instant;

use crate::error::ClientError;
use crate::shared::{ReceiptReceiver, Shared};

/// A frame that was queued with a `receipt` header and whose RECEIPT has not been awaited yet.
///
/// Holding many of these pipelines sends: each costs one map entry, not a round trip. Dropping
/// one without waiting forgets the receipt.
#[derive(Debug)]
pub struct ReceiptHandle {
    id: String,
    rx: Option<ReceiptReceiver>,
    shared: Arc<Shared>,
    deadline: Instant,
}

impl ReceiptHandle {
    pub(crate) fn new(
        id: String,
        rx: ReceiptReceiver,
        shared: Arc<Shared>,
        deadline: Instant,
    ) -> Self {
        ReceiptHandle {
            id,
            rx: Some(rx),
            shared,
            deadline,
        }
    }

    /// Moves the deadline, so that time spent waiting for room in the writer queue does not
    /// count against the receipt timeout.
    pub(crate) fn restart_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = deadline;
        self
    }

    /// The `receipt` header value the frame was sent with.
    pub fn receipt_id(&self) -> &str {
        &self.id
    }

    /// Waits for the RECEIPT. Fails with the server's error if it answered with an ERROR, with
    /// the connection's fate if it closed first, and with `Timeout("receipt")` once the
    /// configured `receipt_timeout` (counted from when the frame was queued) has passed.
    pub async fn wait(self) -> Result<(), ClientError> {
        self.wait_frame().await.map(drop)
    }

    /// Like [`ReceiptHandle::wait`], returning the RECEIPT frame.
    pub(crate) async fn wait_frame(mut self) -> Result<Frame, ClientError> {
        let Some(rx) = self.rx.take() else {
            return Err(ClientError::Closed);
        };
        match tokio::time::timeout_at(self.deadline, rx).await {
            Ok(Ok(result)) => result,
            // `Shared::close` answers every waiter before dropping it, so this only happens if
            // the waiter was forgotten; report the connection's state.
            Ok(Err(_dropped)) => Err(self
                .shared
                .close_reason()
                .map_or(ClientError::Closed, |r| r.to_error())),
            Err(_elapsed) => {
                tracing::debug!(receipt = %self.id, "receipt timed out");
                Err(ClientError::Timeout("receipt"))
            }
        }
    }
}

impl Drop for ReceiptHandle {
    fn drop(&mut self) {
        // Removes the waiter when it timed out or was abandoned; a no-op once answered.
        self.shared.forget_receipt(&self.id);
    }
}
