//! State shared by the caller-facing handles and the reader/writer tasks.
//!
//! The tasks hold this, not the [`Client`](crate::Client) handle, so that dropping every handle
//! closes the writer queue and with it the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use ferromq_protocol::stomp::Frame;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{ClientError, CloseReason};
use crate::message::ReceivedMessage;
use crate::RECEIPTS_PENDING_MAX;

/// Where the reader delivers the RECEIPT (or the failure) for one `receipt` id.
pub(crate) type ReceiptSender = oneshot::Sender<Result<Frame, ClientError>>;
/// The waiting side of a [`ReceiptSender`].
pub(crate) type ReceiptReceiver = oneshot::Receiver<Result<Frame, ClientError>>;

#[derive(Debug, Default)]
struct State {
    receipts: HashMap<String, ReceiptSender>,
    // Unbounded on purpose: a bounded channel would let one slow consumer block the reader and
    // with it every RECEIPT on the connection. The broker's prefetch bounds what is in flight.
    subscriptions: HashMap<String, mpsc::UnboundedSender<ReceivedMessage>>,
    close_reason: Option<CloseReason>,
    disconnecting: bool,
    /// The `receipt-id` of the ERROR frame that closed the connection, if it carried one: the
    /// failover layer must not resend the frame the server rejected.
    error_receipt_id: Option<String>,
}

/// Pending receipts, subscription channels and the connection's fate.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    closed_tx: watch::Sender<bool>,
    next_id: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            closed_tx: watch::channel(false).0,
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, and the state stays consistent at every
        // step, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A number unique on this connection, for receipt and subscription ids.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a waiter for a fresh receipt id. Done before the frame is queued so that the
    /// RECEIPT cannot overtake the registration.
    pub(crate) fn register_receipt(&self) -> Result<(String, ReceiptReceiver), ClientError> {
        let id = format!("rcpt-{}", self.next_id());
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        // Checked under the same lock `close` drains with, so no waiter is ever orphaned.
        if let Some(reason) = &state.close_reason {
            return Err(reason.to_error());
        }
        if state.receipts.len() >= RECEIPTS_PENDING_MAX {
            return Err(ClientError::TooManyPendingReceipts {
                limit: RECEIPTS_PENDING_MAX,
            });
        }
        state.receipts.insert(id.clone(), tx);
        Ok((id, rx))
    }

    /// Drops the waiter for `id` (timed out, abandoned, or its frame was never queued).
    pub(crate) fn forget_receipt(&self, id: &str) {
        self.lock().receipts.remove(id);
    }

    /// Hands `result` to the waiter for `id`. False when nobody waits (any more).
    pub(crate) fn complete_receipt(&self, id: &str, result: Result<Frame, ClientError>) -> bool {
        let waiter = self.lock().receipts.remove(id);
        match waiter {
            // A waiter that gave up between our lookup and this send is harmless.
            Some(tx) => tx.send(result).is_ok(),
            None => false,
        }
    }

    /// Opens the channel for subscription `id`. Done before SUBSCRIBE is queued because the
    /// broker may dispatch messages before it sends the RECEIPT.
    pub(crate) fn register_subscription(
        &self,
        id: &str,
    ) -> Result<mpsc::UnboundedReceiver<ReceivedMessage>, ClientError> {
        let mut state = self.lock();
        if let Some(reason) = &state.close_reason {
            return Err(reason.to_error());
        }
        if state.subscriptions.contains_key(id) {
            return Err(ClientError::DuplicateSubscription(id.to_owned()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        state.subscriptions.insert(id.to_owned(), tx);
        Ok(rx)
    }

    /// Closes the channel for subscription `id`; later messages for it are dropped.
    pub(crate) fn remove_subscription(&self, id: &str) {
        self.lock().subscriptions.remove(id);
    }

    /// Delivers a MESSAGE to the subscription named by its `subscription` header.
    pub(crate) fn route_message(&self, frame: Frame) {
        let state = self.lock();
        let target = match frame.header("subscription") {
            Some(id) => state.subscriptions.get(id),
            // Some STOMP 1.0 servers omit the header; with one subscription there is no doubt.
            None if state.subscriptions.len() == 1 => state.subscriptions.values().next(),
            None => None,
        };
        match target {
            Some(tx) => {
                if tx.send(ReceivedMessage { frame }).is_err() {
                    tracing::debug!("MESSAGE for a subscription being dropped; discarded");
                }
            }
            None => tracing::warn!(
                subscription = frame.header("subscription").unwrap_or("<none>"),
                message_id = frame.header("message-id").unwrap_or("<none>"),
                "MESSAGE for no known subscription; discarded"
            ),
        }
    }

    /// Records the `receipt-id` of the ERROR that is about to close the connection.
    pub(crate) fn set_error_receipt_id(&self, id: &str) {
        self.lock().error_receipt_id = Some(id.to_owned());
    }

    /// The `receipt-id` of the ERROR that closed the connection, if any.
    pub(crate) fn error_receipt_id(&self) -> Option<String> {
        self.lock().error_receipt_id.clone()
    }

    /// Marks that this side sent DISCONNECT, so the server closing the socket is not a failure.
    pub(crate) fn set_disconnecting(&self) {
        self.lock().disconnecting = true;
    }

    /// Ends the connection: the first reason wins; every pending receipt fails with it, every
    /// subscription channel is closed (its receiver drains what is queued, then sees `None`),
    /// and both tasks are told to stop.
    pub(crate) fn close(&self, reason: CloseReason) {
        let (receipts, subscriptions, reason) = {
            let mut state = self.lock();
            if state.close_reason.is_some() {
                return;
            }
            let reason = match reason {
                CloseReason::Eof if state.disconnecting => CloseReason::Local,
                other => other,
            };
            state.close_reason = Some(reason.clone());
            (
                std::mem::take(&mut state.receipts),
                std::mem::take(&mut state.subscriptions),
                reason,
            )
        };
        match &reason {
            CloseReason::Local => tracing::debug!("connection closed"),
            other => tracing::debug!(reason = ?other, "connection closed"),
        }
        for (_, tx) in receipts {
            let _ = tx.send(Err(reason.to_error()));
        }
        drop(subscriptions);
        self.closed_tx.send_replace(true);
    }

    /// True once [`Shared::close`] started. Read from the close reason, which is set before any
    /// pending receipt is failed: a waiter woken by that failure must see the connection closed
    /// (the failover client resends what a closed connection lost, and fails only what the
    /// broker refused). The watch below is only set after the receipts are failed, so reading
    /// it here let a receipt lost with its connection look like a refusal.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().close_reason.is_some()
    }

    /// Why the connection ended, once it has.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close_reason.clone()
    }

    /// A receiver that turns `true` when the connection closes.
    pub(crate) fn watch_closed(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The failover client decides "lost with its connection, resend" versus "refused, fail"
    /// by asking `is_closed` the moment a receipt fails. `close` fails every pending receipt in
    /// a loop (a producer window per producer: hundreds), so a waiter woken by the first of them
    /// runs while the loop goes on; it must already see the connection closed.
    #[test]
    fn a_receipt_failed_by_close_sees_the_connection_closed() {
        let shared = Arc::new(Shared::new());
        let (_, first) = shared.register_receipt().unwrap();
        // The rest keep `close` busy after the first waiter is woken.
        let rest: Vec<_> = (0..50_000)
            .map(|_| shared.register_receipt().unwrap().1)
            .collect();
        let observer = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let failed = first.blocking_recv().unwrap().is_err();
                (failed, shared.is_closed())
            })
        };
        // Give the observer time to block on its receipt (it works either way, this only makes
        // the window the old code had easy to hit).
        std::thread::sleep(std::time::Duration::from_millis(50));
        shared.close(CloseReason::Eof);
        let (failed, closed_when_woken) = observer.join().unwrap();
        assert!(failed, "close must fail a pending receipt");
        assert!(
            closed_when_woken,
            "a receipt failed by close was seen while the connection still looked open"
        );
        drop(rest);
    }
}
