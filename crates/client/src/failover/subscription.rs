//! A subscription's message stream that continues across failovers.

use std::time::Duration;

use tokio::sync::mpsc;

use super::client::FailoverClient;
use super::state::Feed;
use crate::config::AckMode;
use crate::error::ClientError;
use crate::message::ReceivedMessage;

/// The messages of one subscription, from every connection in turn: what arrived on a lost
/// connection is delivered first, then what the re-created subscription receives. Redeliveries
/// of messages the application already consumed are dropped (see
/// [`FailoverConfig::check_for_duplicates`](super::FailoverConfig::check_for_duplicates)).
///
/// Dropping it without [`FailoverSubscription::unsubscribe`] forgets it (it is not re-created)
/// and queues an UNSUBSCRIBE without a receipt on the current connection.
#[derive(Debug)]
pub struct FailoverSubscription {
    id: String,
    ack: AckMode,
    feeds: mpsc::UnboundedReceiver<Feed>,
    current: Option<Feed>,
    client: FailoverClient,
    active: bool,
}

impl FailoverSubscription {
    pub(crate) fn new(
        id: String,
        ack: AckMode,
        feeds: mpsc::UnboundedReceiver<Feed>,
        client: FailoverClient,
    ) -> Self {
        FailoverSubscription {
            id,
            ack,
            feeds,
            current: None,
            client,
            active: true,
        }
    }

    /// The subscription `id`, the same on every connection.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The ack mode it was created with.
    pub fn ack_mode(&self) -> AckMode {
        self.ack
    }

    /// The next message. Waits through failovers; `None` once the client has ended and every
    /// message received has been delivered.
    pub async fn next(&mut self) -> Option<ReceivedMessage> {
        loop {
            if self.current.is_none() {
                self.current = Some(self.feeds.recv().await?);
            }
            let feed = self.current.as_mut()?;
            match feed.rx.recv().await {
                // That connection is over and drained: move to the next one.
                None => self.current = None,
                Some(msg) => {
                    let admitted =
                        self.client
                            .inner()
                            .admit(&self.id, feed.generation, &feed.client, msg);
                    if let Some(msg) = admitted {
                        return Some(msg);
                    }
                }
            }
        }
    }

    /// Like [`FailoverSubscription::next`], giving up with `None` after `d`.
    pub async fn next_timeout(&mut self, d: Duration) -> Option<ReceivedMessage> {
        tokio::time::timeout(d, self.next()).await.ok().flatten()
    }

    /// Sends UNSUBSCRIBE with a receipt and waits for it; the subscription is not re-created
    /// after a later failover.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.unsubscribe_with(&[]).await
    }

    /// [`FailoverSubscription::unsubscribe`] with extra headers (e.g.
    /// `activemq.subscriptionName` to destroy a durable subscription).
    pub async fn unsubscribe_with(mut self, headers: &[(&str, &str)]) -> Result<(), ClientError> {
        self.active = false;
        self.client.inner().unsubscribe(&self.id, headers).await
    }
}

impl Drop for FailoverSubscription {
    fn drop(&mut self) {
        if self.active {
            self.client.inner().drop_subscription(&self.id);
        }
    }
}
