//! The operations an administrator runs on queues, messages and durable subscriptions
//! (ActiveMQ's `QueueViewMBean.removeMessage`, `moveMessageTo`, `copyMessageTo`,
//! `retryMessages`, `BrokerViewMBean.removeQueue`, `DurableSubscriptionViewMBean.destroy`).
//!
//! Every removal goes through the store as a consumer's ack does (an `Op::Dequeue` of the
//! entry, or `Op::Purge` of a removed queue), and every message placed elsewhere goes through
//! [`Broker::place`], as a send does; a move submits the target's enqueue and the source's
//! dequeue in one atomic batch, so a crash leaves the message in exactly one of the two queues.
//! Each operation answers only once the store has confirmed it.

use std::sync::Arc;

use ferromq_store::{Batch, Op};

use super::{AfterWrite, Broker, DurableName};
use crate::destination::{Destination, DestinationKind};
use crate::error::BrokerError;
use crate::message::Message;
use crate::queue::{Effects, Lookup, MessageList, TakenEntry};

/// The header that names where a dead-lettered message was first sent (ActiveMQ's
/// `originalDestination`), set by the broker as it dead-letters.
const ORIGINAL_DESTINATION_HEADER: &str = "originalDestination";
/// The header that says why a message was dead-lettered.
const FAILURE_CAUSE_HEADER: &str = "dlqDeliveryFailureCause";

/// One durable subscription as [`Broker::durable_subscriptions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubscriptionSnapshot {
    /// The subscriber's JMS client id.
    pub client_id: String,
    /// The subscription name.
    pub name: String,
    /// The topic (or wildcard pattern) it subscribes to.
    pub topic: String,
    /// Its JMS selector, if any.
    pub selector: Option<String>,
    /// A consumer is attached now.
    pub active: bool,
    /// Messages waiting for it (paged-out ones included).
    pub pending: u64,
    /// Messages delivered to it and not yet acknowledged.
    pub inflight: u64,
}

/// What [`Broker::retry_all`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOutcome {
    /// Messages sent back to their original queues.
    pub retried: u64,
    /// Messages still in the queue afterwards: those beyond this call's bound, in flight, or
    /// that cannot be retried (no original destination, or a topic).
    pub remaining: u64,
}

impl Broker {
    /// An existing ordinary queue.
    fn existing_queue(&self, dest: &Destination) -> Result<Arc<MessageList>, BrokerError> {
        if dest.kind != DestinationKind::Queue {
            return Err(BrokerError::InvalidDestination(format!(
                "{dest}: not an ordinary queue"
            )));
        }
        self.queues
            .read()
            .get(&dest.key())
            .cloned()
            .ok_or_else(|| BrokerError::NotFound(format!("no such queue: {}", dest.name)))
    }

    /// Removes one waiting message of a queue (ActiveMQ's `removeMessage`). A message delivered
    /// and not yet acknowledged is refused (`InUse`): removing it behind its consumer's back
    /// would make that consumer's ack name nothing.
    pub async fn remove_message(&self, queue: &Destination, id: &str) -> Result<(), BrokerError> {
        let list = self.existing_queue(queue)?;
        let mut batch = Batch::new();
        let taken = list
            .take_pending(id, &mut batch)
            .map_err(|l| lookup_error(l, queue, id))?;
        let result = if batch.is_empty() {
            Ok(())
        } else {
            self.store.submit(batch).await
        };
        if let Err(e) = result {
            self.put_back(&list, vec![taken]);
            return Err(e.into());
        }
        Ok(())
    }

    /// Moves (or, with `copy`, copies) one waiting message to another queue (ActiveMQ's
    /// `moveMessageTo` / `copyMessageTo`); the target is created if need be. The copy keeps
    /// headers, body, priority, persistence and expiry, and has `to` as its destination; a
    /// moved message keeps its id, a copy gets a new one (two messages of one broker never
    /// share an id). A move's enqueue and dequeue are one atomic store batch. Returns the id
    /// of the message in the target.
    pub async fn move_message(
        &self,
        from: &Destination,
        id: &str,
        to: &Destination,
        copy: bool,
    ) -> Result<Arc<str>, BrokerError> {
        if to.kind != DestinationKind::Queue {
            return Err(BrokerError::InvalidDestination(format!(
                "{to}: the target must be an ordinary queue"
            )));
        }
        if from == to {
            return Err(BrokerError::InvalidDestination(format!(
                "{to}: the target is the queue the message is in"
            )));
        }
        let source = self.existing_queue(from)?;
        let target = self.queue_list(to)?;
        let mut batch = Batch::new();
        let (taken, original) = if copy {
            let m = source
                .peek_pending(id)
                .map_err(|l| lookup_error(l, from, id))?;
            (None, m)
        } else {
            let t = source
                .take_pending(id, &mut batch)
                .map_err(|l| lookup_error(l, from, id))?;
            let m = t.message().clone();
            (Some(t), m)
        };
        let mut m = (*original).clone();
        m.destination = to.clone();
        if copy {
            m.id = self.next_message_id();
        }
        let new_id = m.id.clone();
        let result = self
            .place_and_wait(vec![(target, Arc::new(m))], batch)
            .await;
        if let Err(e) = result {
            self.put_back(&source, taken.into_iter().collect());
            return Err(e);
        }
        Ok(new_id)
    }

    /// Sends one message of a dead-letter queue back to its original queue (ActiveMQ's
    /// `retryMessage`): the `originalDestination` and `dlqDeliveryFailureCause` headers go,
    /// and it starts again with a delivery count of 0. Returns its original queue.
    pub async fn retry_message(
        &self,
        queue: &Destination,
        id: &str,
    ) -> Result<Destination, BrokerError> {
        let list = self.existing_queue(queue)?;
        let peeked = list
            .peek_pending(id)
            .map_err(|l| lookup_error(l, queue, id))?;
        let to = retry_target(&peeked, queue)
            .map_err(|why| BrokerError::InvalidDestination(format!("message {id} {why}")))?;
        let target = self.queue_list(&to)?;
        let mut batch = Batch::new();
        let taken = list
            .take_pending(id, &mut batch)
            .map_err(|l| lookup_error(l, queue, id))?;
        let m = retried_copy(taken.message(), &to);
        if let Err(e) = self
            .place_and_wait(vec![(target, Arc::new(m))], batch)
            .await
        {
            self.put_back(&list, vec![taken]);
            return Err(e);
        }
        Ok(to)
    }

    /// Sends up to `max` waiting messages of a dead-letter queue back to their original
    /// queues, in delivery order, in one atomic store batch (ActiveMQ's `retryMessages`).
    /// Messages that cannot be retried (no `originalDestination`, or a topic) stay. Bounded so
    /// that one request holds the queue's lock and builds a store batch of bounded size; call
    /// again while `remaining` shrinks.
    pub async fn retry_all(
        &self,
        queue: &Destination,
        max: usize,
    ) -> Result<RetryOutcome, BrokerError> {
        let list = self.existing_queue(queue)?;
        let mut batch = Batch::new();
        let taken = list.take_pending_where(max, |m| retry_target(m, queue).is_ok(), &mut batch);
        let mut items = Vec::with_capacity(taken.len());
        let mut failure = None;
        for t in &taken {
            // Picked only if it has a target: the `Err` arm never runs, but is no reason to
            // panic either.
            let Ok(to) = retry_target(t.message(), queue) else {
                continue;
            };
            match self.queue_list(&to) {
                Ok(target) => items.push((target, Arc::new(retried_copy(t.message(), &to)))),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            self.put_back(&list, taken);
            return Err(e);
        }
        let retried = items.len() as u64;
        if let Err(e) = self.place_and_wait(items, batch).await {
            self.put_back(&list, taken);
            return Err(e);
        }
        Ok(RetryOutcome {
            retried,
            remaining: list.snapshot().pending,
        })
    }

    /// Removes a queue and every message it holds, in memory and in the store (ActiveMQ's
    /// `removeQueue`). Refused (`InUse`) while consumers are attached, as ActiveMQ's
    /// `removeDestination` does: closing them behind their back would leave their clients
    /// waiting on a queue that no longer exists. Returns how many messages it held. A producer
    /// that sends to the name afterwards creates the queue anew.
    pub async fn remove_queue(&self, dest: &Destination) -> Result<u64, BrokerError> {
        if dest.kind != DestinationKind::Queue {
            return Err(BrokerError::InvalidDestination(format!(
                "{dest}: not an ordinary queue"
            )));
        }
        let (list, held) = {
            let mut queues = self.queues.write();
            let key = dest.key();
            let list = queues
                .get(&key)
                .cloned()
                .ok_or_else(|| BrokerError::NotFound(format!("no such queue: {}", dest.name)))?;
            // Closed under the registry's write lock: nobody finds the list between the check
            // for consumers and its removal (a consumer that found it earlier sees it closed
            // and looks the queue up again).
            let held = list.close_if_unused().map_err(|consumers| {
                BrokerError::InUse(format!(
                    "queue {} has {consumers} consumer(s) attached: close them first",
                    dest.name
                ))
            })?;
            queues.remove(&key);
            (list, held)
        };
        if let Some(k) = list.store_key() {
            self.store
                .submit(vec![Op::Purge { list: k.clone() }])
                .await?;
        }
        tracing::info!(queue = %dest, messages = held, "queue removed by an administrator");
        Ok(held)
    }

    /// Whether a topic can be removed. ferromq keeps no state for a topic beyond its
    /// subscriptions, so there is nothing to remove but them: `NotFound` when none is bound to
    /// the exact name, `InUse` naming its durable subscriptions or counting its subscribers.
    pub fn remove_topic(&self, name: &str) -> Result<(), BrokerError> {
        let bound: Vec<_> = self
            .topic_subscriptions()
            .into_iter()
            .filter(|s| s.topic == name)
            .collect();
        if bound.is_empty() {
            return Err(BrokerError::NotFound(format!(
                "no such topic: {name} (a topic exists only while it has subscriptions)"
            )));
        }
        let mut durables: Vec<String> = self
            .durables
            .lock()
            .values()
            .filter(|d| d.record.topic == name)
            .map(|d| format!("{}/{}", d.record.client_id, d.record.name))
            .collect();
        durables.sort();
        if !durables.is_empty() {
            return Err(BrokerError::InUse(format!(
                "topic {name} has durable subscriptions: {}; delete them first",
                durables.join(", ")
            )));
        }
        Err(BrokerError::InUse(format!(
            "topic {name} has {} subscriber(s) connected: close their connections first",
            bound.len()
        )))
    }

    /// Every durable subscription, sorted by client id then name.
    pub fn durable_subscriptions(&self) -> Vec<DurableSubscriptionSnapshot> {
        let mut v: Vec<DurableSubscriptionSnapshot> = self
            .durables
            .lock()
            .values()
            .map(|d| {
                let s = d.list.snapshot();
                DurableSubscriptionSnapshot {
                    client_id: d.record.client_id.clone(),
                    name: d.record.name.clone(),
                    topic: d.record.topic.clone(),
                    selector: d.record.selector.clone(),
                    active: d.active.is_some(),
                    pending: s.pending,
                    inflight: s.inflight,
                }
            })
            .collect();
        v.sort_by(|a, b| (&a.client_id, &a.name).cmp(&(&b.client_id, &b.name)));
        v
    }

    /// Destroys an inactive durable subscription with everything it holds
    /// (`DurableSubscriptionViewMBean.destroy`): `NotFound` if there is none, `InUse` while a
    /// consumer is attached. Answers once the store has the removal.
    pub async fn destroy_subscription(&self, name: &DurableName) -> Result<(), BrokerError> {
        if !self.durables.lock().contains_key(&name.list_key()) {
            return Err(BrokerError::NotFound(format!(
                "no durable subscription {} of client {}",
                name.name, name.client_id
            )));
        }
        self.destroy_durable(name)?.await?;
        Ok(())
    }

    /// Places messages as a send does (store, then dispatch), with `batch` (the sources'
    /// dequeues) in the same atomic store write, and waits until it is durable.
    async fn place_and_wait(
        &self,
        items: Vec<(Arc<MessageList>, Arc<Message>)>,
        batch: Batch,
    ) -> Result<(), BrokerError> {
        let completion = self.place(items, batch, AfterWrite::default()).await?;
        completion.await?;
        Ok(())
    }

    /// Gives taken entries back to their list after their removal failed to become durable.
    fn put_back(&self, list: &MessageList, taken: Vec<TakenEntry>) {
        let now = self.now_ms();
        let mut fx = Effects::default();
        for t in taken {
            list.restore(t, now, &mut fx);
        }
        self.process_effects(fx);
    }
}

/// The error for a message that cannot be taken from `queue`.
fn lookup_error(l: Lookup, queue: &Destination, id: &str) -> BrokerError {
    match l {
        Lookup::NotFound => BrokerError::NotFound(format!(
            "no message {id} waiting in queue {} (consumed, removed, or never there)",
            queue.name
        )),
        Lookup::Busy(why) => BrokerError::InUse(format!("message {id} cannot be taken: {why}")),
        Lookup::PagedOut => BrokerError::NotFound(format!(
            "no message {id} among the messages of queue {} in memory; the queue has messages paged out to the store, which per-message operations reach only once consumers page them in",
            queue.name
        )),
    }
}

/// The queue a dead-lettered message goes back to, or why it cannot.
fn retry_target(m: &Message, current: &Destination) -> Result<Destination, &'static str> {
    let original = m
        .header(ORIGINAL_DESTINATION_HEADER)
        .ok_or("has no originalDestination header (it was not dead-lettered)")?;
    let dest = Destination::from_key(original).ok_or("has an unreadable originalDestination")?;
    if dest.kind != DestinationKind::Queue {
        // A topic would deliver it again to every subscriber, not just the one that failed.
        return Err("was dead-lettered from a topic subscription; only queues can be retried");
    }
    if dest == *current {
        return Err("has this queue as its original destination");
    }
    Ok(dest)
}

/// A dead-lettered message as it goes back to `to`.
fn retried_copy(m: &Message, to: &Destination) -> Message {
    let mut m = m.clone();
    m.headers
        .retain(|(n, _)| n != ORIGINAL_DESTINATION_HEADER && n != FAILURE_CAUSE_HEADER);
    m.destination = to.clone();
    m
}
