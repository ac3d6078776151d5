//! A subscription's message stream.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::ClientError;
use crate::frames;
use crate::message::ReceivedMessage;

/// An active subscription: the messages the broker dispatches to its `id`.
///
/// Dropping it without [`Subscription::unsubscribe`] discards further messages and queues an
/// UNSUBSCRIBE without a receipt (best effort), so the broker stops dispatching to it.
#[derive(Debug)]
pub struct Subscription {
    id: String,
    rx: mpsc::UnboundedReceiver<ReceivedMessage>,
    client: Client,
    active: bool,
}

impl Subscription {
    pub(crate) fn new(
        id: String,
        rx: mpsc::UnboundedReceiver<ReceivedMessage>,
        client: Client,
    ) -> Self {
        Subscription {
            id,
            rx,
            client,
            active: true,
        }
    }

    /// The subscription `id` header, which the broker echoes as `subscription` on MESSAGEs.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next message. Messages already received are still delivered after the connection
    /// closes; `None` means the connection is closed and nothing is left.
    pub async fn next(&mut self) -> Option<ReceivedMessage> {
        self.rx.recv().await
    }

    /// Like [`Subscription::next`], giving up with `None` after `d`.
    pub async fn next_timeout(&mut self, d: Duration) -> Option<ReceivedMessage> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }

    /// A message if one is already queued; never waits.
    pub fn try_next(&mut self) -> Option<ReceivedMessage> {
        self.rx.try_recv().ok()
    }

    /// Sends UNSUBSCRIBE with a receipt and waits for it.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.unsubscribe_with(&[]).await
    }

    /// Sends UNSUBSCRIBE with extra headers (e.g. `activemq.subscriptionName` to destroy a
    /// durable subscription) and a receipt, and waits for the receipt.
    pub async fn unsubscribe_with(mut self, headers: &[(&str, &str)]) -> Result<(), ClientError> {
        // From here on Drop must not send a second UNSUBSCRIBE, whatever happens below.
        self.active = false;
        let frame = frames::unsubscribe(&self.id, headers);
        let result = self.client.request(frame).await.map(drop);
        self.client.shared().remove_subscription(&self.id);
        result
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        self.client.shared().remove_subscription(&self.id);
        if !self.client.is_closed() {
            let frame = frames::unsubscribe(&self.id, &[]);
            if self.client.try_enqueue(frame).is_err() {
                tracing::debug!(subscription = %self.id, "could not queue UNSUBSCRIBE on drop");
            }
        }
    }
}
