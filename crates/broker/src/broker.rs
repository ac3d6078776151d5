//! The broker: destinations, routing, subscriptions, transactions and dead-lettering.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferromq_store::{Batch, Completion, MessageStore, Op, SubscriptionRecord};
use parking_lot::{Mutex, RwLock};

use crate::config::BrokerConfig;
use crate::consumer::{ConsumerId, ConsumerOptions, DeliverySink};
use crate::dedup::{DupCache, DupKey, DupToken, DupVerdict, DUPLICATE_ID_HEADER, DUP_LIST_PREFIX};
use crate::destination::{wildcard_matches, Destination, DestinationKind};
use crate::error::BrokerError;
use crate::message::Message;
use crate::network::{Demand, NetworkRoute};
use crate::queue::{AckScope, DeadCause, Effects, ListKind, ListPolicy, ListSnapshot, MessageList};

mod admin;
use crate::selector_props::MessageProperties;
pub use admin::{DurableSubscriptionSnapshot, RetryOutcome};

/// Milliseconds since the Unix epoch; injectable so tests control expiry.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// A durable subscription's identity: the connection's `client-id` and the subscription name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DurableName {
    /// The JMS client id.
    pub client_id: String,
    /// The subscription name (`activemq.subscriptionName`).
    pub name: String,
}

impl DurableName {
    fn list_key(&self) -> String {
        format!("durable://{}:{}", self.client_id, self.name)
    }
}

/// One subscription bound to a topic (or a topic wildcard).
#[derive(Debug)]
struct TopicBinding {
    pattern: String,
    selector: Option<Arc<ferromq_selector::Selector>>,
    no_local: bool,
    /// The subscriber's connection, for `no_local`; 0 (none) for a recovered durable
    /// subscription until it is reattached. A durable subscription follows the connection that
    /// last attached to it.
    connection: AtomicU64,
    list: Arc<MessageList>,
    /// A bridge's subscription: messages it must not forward never enter its list.
    network: Option<Arc<NetworkRoute>>,
}

impl TopicBinding {
    fn wants(&self, msg: &Message) -> bool {
        if let Some(route) = &self.network {
            // Topic messages are never replayed: every subscriber has its own copy.
            if !route.accepts(msg, true) {
                return false;
            }
        }
        if self.no_local {
            let connection = self.connection.load(Ordering::Relaxed);
            if connection != 0 && msg.producer_connection == connection {
                return false;
            }
        }
        match &self.selector {
            Some(s) => s.matches(&MessageProperties(msg)),
            None => true,
        }
    }
}

#[derive(Debug, Default)]
struct Topics {
    /// Bindings by exact topic name.
    exact: HashMap<String, Vec<Arc<TopicBinding>>>,
    /// Bindings whose pattern has wildcards; checked against every published topic.
    wildcard: Vec<Arc<TopicBinding>>,
}

impl Topics {
    fn add(&mut self, b: Arc<TopicBinding>) {
        if crate::destination::is_wildcard(&b.pattern) {
            self.wildcard.push(b);
        } else {
            self.exact.entry(b.pattern.clone()).or_default().push(b);
        }
    }

    fn remove(&mut self, list: &Arc<MessageList>) {
        self.wildcard.retain(|b| !Arc::ptr_eq(&b.list, list));
        for v in self.exact.values_mut() {
            v.retain(|b| !Arc::ptr_eq(&b.list, list));
        }
        self.exact.retain(|_, v| !v.is_empty());
    }

    fn matching(&self, topic: &str) -> Vec<Arc<TopicBinding>> {
        let mut out: Vec<Arc<TopicBinding>> = self.exact.get(topic).cloned().unwrap_or_default();
        out.extend(
            self.wildcard
                .iter()
                .filter(|b| wildcard_matches(&b.pattern, topic))
                .cloned(),
        );
        out
    }

    fn count(&self) -> usize {
        self.wildcard.len() + self.exact.values().map(Vec::len).sum::<usize>()
    }
}

#[derive(Debug)]
struct Durable {
    record: SubscriptionRecord,
    binding: Arc<TopicBinding>,
    list: Arc<MessageList>,
    active: Option<ConsumerId>,
}

/// What a consumer is attached to; returned by [`Broker::subscribe`] and passed back to ack.
#[derive(Debug, Clone)]
pub struct ConsumerHandle {
    /// The consumer's id (as in [`crate::Delivery::consumer`]).
    pub id: ConsumerId,
    list: Arc<MessageList>,
    binding: Binding,
}

#[derive(Debug, Clone)]
enum Binding {
    Queue,
    Topic,
    Durable(String),
}

impl ConsumerHandle {
    /// The name of the list it consumes from.
    pub fn list_name(&self) -> &str {
        self.list.name()
    }
}

/// One topic subscription as [`Broker::topic_subscriptions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSubscriptionSnapshot {
    /// The topic name or wildcard pattern it subscribes to (without `topic://`).
    pub topic: String,
    /// A durable subscription (kept while its consumer is away).
    pub durable: bool,
    /// A network bridge's subscription.
    pub network: bool,
    /// Its list's counters.
    pub list: ListSnapshot,
}

/// Work buffered in a transaction, applied atomically by [`Broker::commit`].
#[derive(Debug, Default)]
pub struct TxWork {
    /// Messages sent in the transaction, in order.
    pub sends: Vec<Message>,
    /// Deliveries acknowledged in the transaction, per consumer.
    pub acks: Vec<(ConsumerHandle, Vec<u64>)>,
}

/// What waits for the outcome of one store write besides the messages it places.
#[derive(Debug, Default)]
struct AfterWrite {
    /// Duplicate ids first seen in this write: durable with it, or forgotten if it fails.
    dups: Vec<DupToken>,
    /// Transactional acks committed by this write, per list and consumer.
    acks: Vec<(Arc<MessageList>, ConsumerId, Vec<u64>)>,
    /// Writes of originals (of resends in this write) still in flight: the write is confirmed
    /// only once they are durable too, and fails with them.
    originals: Vec<Completion>,
}

/// The broker. Shared by every connection (`Arc<Broker>`); knows nothing of sockets or of
/// which store backend it runs on.
pub struct Broker {
    /// Itself, for tasks that finish work after a store confirmation.
    this: std::sync::Weak<Broker>,
    cfg: BrokerConfig,
    store: Arc<dyn MessageStore>,
    clock: Clock,
    tags: Arc<AtomicU64>,
    message_seq: AtomicU64,
    consumer_seq: AtomicU64,
    connection_seq: AtomicU64,
    boot_id: u64,
    queues: RwLock<HashMap<String, Arc<MessageList>>>,
    topics: RwLock<Topics>,
    durables: Mutex<HashMap<String, Durable>>,
    temp_owners: Mutex<HashMap<String, u64>>,
    client_ids: Mutex<HashSet<String>>,
    dups: DupCache,
    /// Shared with every list (see [`Broker::set_dispatch_paused`]).
    dispatch_paused: Arc<std::sync::atomic::AtomicBool>,
    /// Set by [`Broker::stop_waiting_producers`]: sends blocked by producer flow control end
    /// with [`BrokerError::Stopping`] instead of holding the shutdown up.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Every attached consumer's demand, for the bridges of a network (see [`Broker::demand`]).
    demand: Mutex<HashMap<ConsumerId, Demand>>,
    /// Bumped on every change of `demand`.
    demand_version: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("name", &self.cfg.name)
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens a broker on `store`, recovering its queues and durable subscriptions.
    pub fn open(
        cfg: BrokerConfig,
        store: Arc<dyn MessageStore>,
        clock: Clock,
    ) -> Result<Arc<Broker>, BrokerError> {
        let boot_id = clock();
        let cfg_id_cache_size = cfg.id_cache_size;
        let broker = Arc::new_cyclic(|this| Broker {
            this: this.clone(),
            cfg,
            store,
            clock,
            tags: Arc::new(AtomicU64::new(1)),
            message_seq: AtomicU64::new(1),
            consumer_seq: AtomicU64::new(1),
            connection_seq: AtomicU64::new(1),
            boot_id,
            queues: RwLock::new(HashMap::new()),
            topics: RwLock::new(Topics::default()),
            durables: Mutex::new(HashMap::new()),
            temp_owners: Mutex::new(HashMap::new()),
            client_ids: Mutex::new(HashSet::new()),
            dups: DupCache::new(cfg_id_cache_size),
            dispatch_paused: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            stopping: tokio::sync::watch::channel(false).0,
            demand: Mutex::new(HashMap::new()),
            demand_version: tokio::sync::watch::channel(0).0,
        });
        broker.recover()?;
        Ok(broker)
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.cfg
    }

    /// The store backend in use.
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.store
    }

    /// Milliseconds since the epoch by the broker's clock.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// A new connection id (for `noLocal`, temporary destinations and logs).
    pub fn next_connection_id(&self) -> u64 {
        self.connection_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A new message id, unique across restarts: `ID:<broker>-<boot ms>-<n>`.
    pub fn next_message_id(&self) -> Arc<str> {
        let n = self.message_seq.fetch_add(1, Ordering::Relaxed);
        format!("ID:{}-{}-{}", self.cfg.name, self.boot_id, n).into()
    }

    fn recover(&self) -> Result<(), BrokerError> {
        let started = std::time::Instant::now();
        let rec = self.store.recover()?;
        for sub in rec.subscriptions {
            let selector = match &sub.selector {
                Some(s) => match ferromq_selector::Selector::parse(s) {
                    Ok(sel) => Some(Arc::new(sel)),
                    Err(e) => {
                        tracing::error!(subscription = %sub.list, error = %e, "stored durable subscription has an invalid selector; it will receive every message");
                        None
                    }
                },
                None => None,
            };
            let list = self.new_list(sub.list.clone(), ListKind::DurableSubscription, true);
            let binding = Arc::new(TopicBinding {
                pattern: sub.topic.clone(),
                selector,
                no_local: sub.no_local,
                connection: AtomicU64::new(0),
                list: list.clone(),
                network: None,
            });
            self.topics.write().add(binding.clone());
            self.durables.lock().insert(
                sub.list.clone(),
                Durable {
                    record: sub,
                    binding,
                    list,
                    active: None,
                },
            );
        }
        let mut messages = 0u64;
        for info in rec.lists {
            if let Some(dest_key) = info.list.strip_prefix(DUP_LIST_PREFIX) {
                let mut after = None;
                loop {
                    let page = self.store.load(&info.list, after, 10_000)?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.seq);
                    for m in page {
                        let id = String::from_utf8_lossy(&m.payload).into_owned();
                        self.dups.restore(dest_key, m.seq, id);
                    }
                }
                continue;
            }
            let list = if let Some(d) = self.durables.lock().get(&info.list) {
                d.list.clone()
            } else if let Some(dest) = Destination::from_key(&info.list) {
                if dest.kind != DestinationKind::Queue {
                    tracing::warn!(list = %info.list, "store holds messages for a non-queue destination; ignoring them");
                    continue;
                }
                self.queue_list(&dest)?
            } else {
                tracing::warn!(list = %info.list, "store holds messages for an unknown list (a deleted durable subscription?); ignoring them");
                continue;
            };
            // Nothing is read now: consumers page the backlog in as they drain it.
            list.recover_stored(info.count, info.max_seq);
            messages += info.count;
        }
        let trimmed = self.dups.finish_restore();
        if !trimmed.is_empty() {
            drop(self.store.submit(trimmed));
        }
        tracing::info!(
            messages,
            durable_subscriptions = self.durables.lock().len(),
            store = self.store.kind(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "broker state recovered"
        );
        Ok(())
    }

    fn policy(&self, kind: ListKind) -> ListPolicy {
        ListPolicy {
            memory_limit_bytes: match kind {
                ListKind::TopicSubscription => self.cfg.topic_subscriber_memory_limit_bytes,
                _ => self.cfg.destination_memory_limit_bytes,
            },
            maximum_redeliveries: self.cfg.maximum_redeliveries,
        }
    }

    fn new_list(&self, name: String, kind: ListKind, persistent: bool) -> Arc<MessageList> {
        let store_key = persistent.then(|| name.clone());
        MessageList::new(
            name,
            kind,
            store_key,
            self.policy(kind),
            self.tags.clone(),
            Some(self.store.clone()),
            self.dispatch_paused.clone(),
        )
    }

    fn destination_count(&self) -> usize {
        self.queues.read().len() + self.topics.read().count()
    }

    /// The list of a queue, created on first use (temporary queues must exist already).
    fn queue_list(&self, dest: &Destination) -> Result<Arc<MessageList>, BrokerError> {
        let key = dest.key();
        if let Some(q) = self.queues.read().get(&key) {
            return Ok(q.clone());
        }
        if dest.kind == DestinationKind::TempQueue {
            return Err(BrokerError::NoSuchDestination(dest.to_string()));
        }
        if dest.name.is_empty() || dest.is_wildcard() {
            return Err(BrokerError::InvalidDestination(format!(
                "{dest}: queue names must be non-empty and without wildcards"
            )));
        }
        if self.destination_count() >= self.cfg.max_destinations {
            return Err(BrokerError::Limit(format!(
                "destination limit of {} reached",
                self.cfg.max_destinations
            )));
        }
        let mut w = self.queues.write();
        Ok(w.entry(key.clone())
            .or_insert_with(|| self.new_list(key, ListKind::Queue, true))
            .clone())
    }

    /// Creates a temporary destination owned by `connection`; it is deleted when the
    /// connection closes ([`Broker::connection_closed`]).
    pub fn create_temp(
        &self,
        kind: DestinationKind,
        connection: u64,
        local_name: &str,
    ) -> Destination {
        let name = format!("{}{}", self.temp_prefix(connection), local_name);
        self.create_temp_named(kind, connection, &name)
    }

    /// Creates a temporary destination with the exact name a client chose (OpenWire clients
    /// name theirs after their connection id), owned by `connection`.
    pub fn create_temp_named(
        &self,
        kind: DestinationKind,
        connection: u64,
        name: &str,
    ) -> Destination {
        let dest = Destination {
            kind,
            name: name.into(),
        };
        let key = dest.key();
        self.temp_owners.lock().insert(key.clone(), connection);
        if kind == DestinationKind::TempQueue {
            self.queues
                .write()
                .entry(key.clone())
                .or_insert_with(|| self.new_list(key, ListKind::Queue, false));
        }
        dest
    }

    /// True when a temporary destination exists.
    pub fn temp_exists(&self, dest: &Destination) -> bool {
        self.temp_owners.lock().contains_key(&dest.key())
    }

    /// Deletes a temporary destination `connection` owns (OpenWire's DestinationInfo remove);
    /// false when it owns no such destination.
    pub fn delete_temp(&self, dest: &Destination, connection: u64) -> bool {
        let key = dest.key();
        {
            let mut t = self.temp_owners.lock();
            if t.get(&key) != Some(&connection) {
                return false;
            }
            t.remove(&key);
        }
        if let Some(list) = self.queues.write().remove(&key) {
            list.close();
        }
        true
    }

    /// Forgets a closed connection: deletes its temporary destinations and frees its client id.
    pub fn connection_closed(&self, connection: u64, client_id: Option<&str>) {
        let owned: Vec<String> = {
            let mut t = self.temp_owners.lock();
            let keys: Vec<String> = t
                .iter()
                .filter(|(_, c)| **c == connection)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &keys {
                t.remove(k);
            }
            keys
        };
        for k in owned {
            if let Some(list) = self.queues.write().remove(&k) {
                list.close();
            }
        }
        if let Some(id) = client_id {
            self.client_ids.lock().remove(id);
        }
    }

    /// Registers a connection's `client-id`; a second live connection with the same id is
    /// refused, as in ActiveMQ (`InvalidClientIDException`).
    pub fn register_client_id(&self, client_id: &str) -> Result<(), BrokerError> {
        if self.client_ids.lock().insert(client_id.to_string()) {
            Ok(())
        } else {
            Err(BrokerError::InUse(format!(
                "Broker: {} - Client: {} already connected",
                self.cfg.name, client_id
            )))
        }
    }

    /// Sends a message. Waits while the destination is over its memory limit (producer flow
    /// control) or the store over its usage limit. The returned completion resolves when the
    /// message is durable (at once for a non-persistent message).
    pub async fn send(&self, msg: Message) -> Result<Completion, BrokerError> {
        let msg = Arc::new(msg);
        let lists: Vec<Arc<MessageList>> = match msg.destination.kind {
            DestinationKind::Queue | DestinationKind::TempQueue => {
                vec![self.queue_list(&msg.destination)?]
            }
            DestinationKind::Topic | DestinationKind::TempTopic => {
                if msg.destination.kind == DestinationKind::TempTopic
                    && !self.temp_exists(&msg.destination)
                {
                    return Err(BrokerError::NoSuchDestination(msg.destination.to_string()));
                }
                if msg.destination.is_wildcard() || msg.destination.name.is_empty() {
                    return Err(BrokerError::InvalidDestination(format!(
                        "{}: cannot publish to an empty or wildcard topic",
                        msg.destination
                    )));
                }
                self.topics
                    .read()
                    .matching(&msg.destination.name)
                    .into_iter()
                    .filter(|b| b.wants(&msg))
                    .map(|b| b.list.clone())
                    .collect()
            }
        };
        // A persistent message never fills memory (past the window it is paged), but it needs
        // room in the store — once, however many lists it goes to.
        let stored = |l: &Arc<MessageList>| msg.persistent && l.store_key().is_some();
        if lists.iter().any(stored) {
            self.wait_for_store_space(msg.size_bytes()).await?;
        }
        for list in &lists {
            if !stored(list) && list.kind() != ListKind::TopicSubscription {
                self.wait_for_space(list).await?;
            }
        }
        let mut batch = Batch::new();
        let mut after = AfterWrite::default();
        let keep = self.dedup(std::slice::from_ref(&msg), &mut batch, &mut after)?;
        if keep.first() == Some(&false) {
            // A resend: confirmed when (and as) its original is.
            return Ok(after
                .originals
                .pop()
                .unwrap_or_else(|| Completion::ready(Ok(()))));
        }
        let items = lists.into_iter().map(|l| (l, msg.clone())).collect();
        self.place(items, batch, after).await
    }

    /// Duplicate detection for the messages of one write: whether to keep each. A message whose
    /// id was seen is dropped; if its original's write is still in flight, that write's
    /// completion goes to `after.originals`, so the resend is confirmed only once the original
    /// is durable. New ids are remembered as pending until this write settles (`after.dups`),
    /// and `batch` gets the ops that persist them with their messages.
    fn dedup(
        &self,
        msgs: &[Arc<Message>],
        batch: &mut Batch,
        after: &mut AfterWrite,
    ) -> Result<Vec<bool>, BrokerError> {
        let mut keep = vec![true; msgs.len()];
        if !self.dups.enabled() {
            return Ok(keep);
        }
        let mut keys = Vec::new();
        let mut which = Vec::new();
        for (i, msg) in msgs.iter().enumerate() {
            if let Some(id) = msg.header(DUPLICATE_ID_HEADER) {
                keys.push(DupKey {
                    dest_key: msg.destination.key(),
                    id,
                    persist: msg.persistent && !msg.destination.kind.is_temporary(),
                });
                which.push(i);
            }
        }
        if keys.is_empty() {
            return Ok(keep);
        }
        let verdicts = self.dups.check(&keys, batch).map_err(|e| {
            BrokerError::Limit(format!(
                "too many resends of duplicate id {} wait for its original to be stored",
                e.id
            ))
        })?;
        for ((i, verdict), key) in which.into_iter().zip(verdicts).zip(&keys) {
            match verdict {
                DupVerdict::New(token) => after.dups.push(token),
                DupVerdict::Duplicate => {
                    keep[i] = false;
                    tracing::info!(
                        destination = %msgs[i].destination,
                        duplicate_id = key.id,
                        "duplicate message dropped (already stored): acknowledging the producer without storing it again"
                    );
                }
                DupVerdict::InFlight(original) => {
                    keep[i] = false;
                    after.originals.push(original);
                    tracing::info!(
                        destination = %msgs[i].destination,
                        duplicate_id = key.id,
                        "duplicate message dropped (original being stored): acknowledging the producer once the original is durable"
                    );
                }
            }
        }
        Ok(keep)
    }

    /// Settles what waited for a write: duplicate ids and committed acks.
    fn settle(
        &self,
        dups: Vec<DupToken>,
        acks: Vec<(Arc<MessageList>, ConsumerId, Vec<u64>)>,
        result: &Result<(), ferromq_store::StoreError>,
        now: u64,
        fx: &mut Effects,
    ) {
        for token in dups {
            self.dups.settle(token, result);
        }
        for (list, consumer, tags) in acks {
            list.finish_commit_acks(consumer, &tags, result.is_ok(), now, fx);
        }
    }

    /// Puts messages on lists. Every store write (plus `batch`, e.g. a transaction's acks)
    /// goes in one atomic batch submitted before any message is placed. Non-persistent messages
    /// are dispatched at once; persistent ones take their place at once but are dispatched only
    /// when the store confirms them (store, then dispatch), and messages for paging lists are
    /// handed over only then too, because until then the store cannot read them back. Returns
    /// the completion the producer's receipt waits for; never waits for the disk itself.
    async fn place(
        &self,
        items: Vec<(Arc<MessageList>, Arc<Message>)>,
        mut batch: Batch,
        after: AfterWrite,
    ) -> Result<Completion, BrokerError> {
        let AfterWrite {
            dups,
            acks,
            originals,
        } = after;
        let mut reserved = Vec::with_capacity(items.len());
        // A topic message goes to many lists: encode it once (items of one message are
        // adjacent).
        let mut encoded: Option<(Arc<Message>, bytes::Bytes)> = None;
        for (list, msg) in items {
            let stored = msg.persistent && list.store_key().is_some();
            let r = list.reserve(stored);
            if stored {
                let payload = match &encoded {
                    Some((m, p)) if Arc::ptr_eq(m, &msg) => p.clone(),
                    _ => {
                        let p = msg.encode();
                        encoded = Some((msg.clone(), p.clone()));
                        p
                    }
                };
                if let Some(k) = list.store_key() {
                    batch.push(Op::Enqueue {
                        list: k.clone(),
                        seq: r.seq,
                        payload,
                    });
                }
            }
            reserved.push((list, msg, r));
        }
        let completion = if batch.is_empty() {
            Completion::ready(Ok(()))
        } else {
            self.store.submit(batch)
        };
        let now = self.now_ms();
        let mut fx = Effects::default();
        if completion.is_ready() {
            // A store that confirms synchronously (or nothing to store, or a store that refuses
            // at once): decide now.
            let result = completion.await;
            for (list, msg, r) in reserved {
                match (result.is_ok(), r.paged) {
                    (true, true) => list.insert_stored(r.seq, now, &mut fx),
                    (true, false) => list.insert(r.seq, msg, now, &mut fx),
                    (false, true) => list.abandon(r.seq),
                    (false, false) => {}
                }
            }
            self.settle(dups, acks, &result, now, &mut fx);
            self.process_effects(fx);
            result?;
            return Ok(join_originals(originals));
        }
        // The write is in flight. Messages keep their places now (so order holds) but are
        // dispatched only once the store confirms them — store, then dispatch: a consumer never
        // gets a message a crash could still take back, which after a failover would come again
        // as a resend with a new message id. The producer's receipt waits for the same moment.
        // Paged messages are handed over then too. None of this blocks the connection.
        let mut confirm = Vec::with_capacity(reserved.len());
        for (list, msg, r) in reserved {
            if !r.paged {
                list.insert_undurable(r.seq, msg, now, &mut fx);
            }
            confirm.push((list, r));
        }
        self.process_effects(fx);
        let (completer, confirmed) = Completion::pair();
        let broker = self.this.clone();
        tokio::spawn(async move {
            let result = completion.await;
            if let Some(broker) = broker.upgrade() {
                let now = broker.now_ms();
                let mut fx = Effects::default();
                for (list, r) in confirm {
                    match (result.is_ok(), r.paged) {
                        (true, true) => list.insert_stored(r.seq, now, &mut fx),
                        (true, false) => list.mark_durable(r.seq, now, &mut fx),
                        (false, true) => list.abandon(r.seq),
                        (false, false) => list.abandon_undurable(r.seq, now, &mut fx),
                    }
                }
                broker.settle(dups, acks, &result, now, &mut fx);
                broker.process_effects(fx);
            }
            completer.complete(match result {
                Ok(()) => all_ok(originals).await,
                Err(e) => Err(e),
            });
        });
        Ok(confirmed)
    }

    async fn wait_for_store_space(&self, bytes: u64) -> Result<(), BrokerError> {
        let limit = self.cfg.store_usage_limit_bytes;
        if limit == 0 || self.store.usage_bytes().saturating_add(bytes) <= limit {
            return Ok(());
        }
        let limit_ms = self.cfg.send_fail_if_no_space_after_timeout_ms;
        let started = tokio::time::Instant::now();
        tracing::warn!(
            usage_bytes = self.store.usage_bytes(),
            limit_bytes = limit,
            "Usage Manager Store is Full: stopping producers of persistent messages until consumers free space (producer flow control)"
        );
        // The store has no space notification; poll it. Producers only get here when the
        // store is full, so the poll costs nothing on the normal path.
        while self.store.usage_bytes().saturating_add(bytes) > limit {
            if self.is_stopping() {
                return Err(BrokerError::Stopping);
            }
            if limit_ms > 0 && started.elapsed() >= Duration::from_millis(limit_ms) {
                return Err(BrokerError::ResourceExhausted(format!(
                    "Usage Manager Store is Full ({} of {} bytes): send failed after {} ms (sendFailIfNoSpaceAfterTimeout)",
                    self.store.usage_bytes(),
                    limit,
                    limit_ms
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = self.stopped() => {}
            }
        }
        Ok(())
    }

    async fn wait_for_space(&self, list: &MessageList) -> Result<(), BrokerError> {
        let limit_ms = self.cfg.send_fail_if_no_space_after_timeout_ms;
        let deadline =
            (limit_ms > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(limit_ms));
        let mut warned = false;
        loop {
            // Register interest before checking, so a notification between the check and the
            // wait is not lost.
            let freed = list.space_notify().notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if list.has_space() || list.is_closed() {
                return Ok(());
            }
            if self.is_stopping() {
                return Err(BrokerError::Stopping);
            }
            if !warned {
                warned = true;
                tracing::info!(destination = list.name(), "memory limit reached: producer flow control is blocking sends until consumers free space");
            }
            let freed = async {
                tokio::select! {
                    _ = freed => {}
                    _ = self.stopped() => {}
                }
            };
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, freed).await.is_err() {
                        return Err(BrokerError::ResourceExhausted(format!(
                            "Usage Manager memory limit reached on {}: send failed after {} ms (sendFailIfNoSpaceAfterTimeout)",
                            list.name(),
                            limit_ms
                        )));
                    }
                }
                // Re-check at least every second in case a wakeup raced with the check.
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), freed).await;
                }
            }
        }
    }

    /// Attaches a consumer. For a topic, `durable` makes it a durable subscription (created or
    /// reattached). The completion resolves once a new durable subscription is stored.
    pub fn subscribe(
        &self,
        dest: &Destination,
        opts: ConsumerOptions,
        durable: Option<DurableName>,
        sink: Arc<dyn DeliverySink>,
    ) -> Result<(ConsumerHandle, Completion), BrokerError> {
        let id = self.consumer_seq.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut fx = Effects::default();
        let demand_path = opts
            .network
            .as_ref()
            .map(|r| r.demand_path.clone())
            .unwrap_or_default();
        let result = match dest.kind {
            DestinationKind::Queue | DestinationKind::TempQueue => {
                if durable.is_some() {
                    return Err(BrokerError::InvalidDestination(format!(
                        "{dest}: durable subscriptions are for topics"
                    )));
                }
                // A queue removed by an administrator between the lookup and the attach is
                // closed: look it up again (a new list by then). Bounded, since each retry
                // needs another removal to race with.
                let mut attempts = 0;
                let list = loop {
                    let list = self.queue_list(dest)?;
                    if list.add_consumer(id, sink.clone(), opts.clone(), now, &mut fx) {
                        break list;
                    }
                    attempts += 1;
                    if attempts >= 3 {
                        return Err(BrokerError::InUse(format!(
                            "{dest} is being removed; subscribe again"
                        )));
                    }
                };
                (
                    ConsumerHandle {
                        id,
                        list,
                        binding: Binding::Queue,
                    },
                    Completion::ready(Ok(())),
                )
            }
            DestinationKind::Topic | DestinationKind::TempTopic => {
                if dest.kind == DestinationKind::TempTopic && !self.temp_exists(dest) {
                    return Err(BrokerError::NoSuchDestination(dest.to_string()));
                }
                if dest.name.is_empty() {
                    return Err(BrokerError::InvalidDestination("empty topic name".into()));
                }
                if self.destination_count() >= self.cfg.max_destinations {
                    return Err(BrokerError::Limit(format!(
                        "destination limit of {} reached",
                        self.cfg.max_destinations
                    )));
                }
                match durable {
                    None => {
                        let list = self.new_list(
                            format!("{}#{}", dest.key(), id),
                            ListKind::TopicSubscription,
                            false,
                        );
                        self.topics.write().add(Arc::new(TopicBinding {
                            pattern: dest.name.to_string(),
                            selector: opts.selector.clone(),
                            no_local: opts.no_local,
                            connection: AtomicU64::new(opts.connection),
                            list: list.clone(),
                            network: opts.network.clone(),
                        }));
                        // The binding applies noLocal when the message is published; the list
                        // must not filter again or what it holds could never be delivered.
                        let opts = ConsumerOptions {
                            no_local: false,
                            ..opts
                        };
                        // A new list: not closed, so the consumer attaches.
                        list.add_consumer(id, sink, opts, now, &mut fx);
                        (
                            ConsumerHandle {
                                id,
                                list,
                                binding: Binding::Topic,
                            },
                            Completion::ready(Ok(())),
                        )
                    }
                    Some(name) => {
                        self.subscribe_durable(id, dest, name, opts, sink, now, &mut fx)?
                    }
                }
            }
        };
        self.process_effects(fx);
        if matches!(dest.kind, DestinationKind::Queue | DestinationKind::Topic) {
            self.demand.lock().insert(
                id,
                Demand {
                    destination: dest.clone(),
                    path: demand_path,
                },
            );
            self.demand_version.send_modify(|v| *v += 1);
        }
        Ok(result)
    }

    /// Where consumers are: one entry per distinct (destination, path) of the consumers
    /// attached now, sorted. Bridges advertise it to the brokers that forward to this one.
    pub fn demand(&self) -> Vec<Demand> {
        let mut out: Vec<Demand> = self.demand.lock().values().cloned().collect();
        out.sort();
        out.dedup();
        out
    }

    /// Stops dispatching to a consumer that keeps what it holds (see
    /// [`MessageList::quiesce_consumer`]); it no longer counts as demand.
    pub fn quiesce(&self, handle: &ConsumerHandle) {
        if self.demand.lock().remove(&handle.id).is_some() {
            self.demand_version.send_modify(|v| *v += 1);
        }
        let mut fx = Effects::default();
        handle
            .list
            .quiesce_consumer(handle.id, self.now_ms(), &mut fx);
        self.process_effects(fx);
    }

    /// Undoes [`Broker::quiesce`]: the consumer takes messages again (a prefetch-0 OpenWire
    /// consumer is quiesced between pulls).
    pub fn resume(&self, handle: &ConsumerHandle) {
        let mut fx = Effects::default();
        handle
            .list
            .resume_consumer(handle.id, self.now_ms(), &mut fx);
        self.process_effects(fx);
    }

    /// Marks deliveries a consumer holds as never seen by its application (see
    /// [`MessageList::uncount`]); call before [`Broker::unsubscribe`].
    pub fn uncount(&self, handle: &ConsumerHandle, tags: &[u64]) {
        handle.list.uncount(handle.id, tags);
    }

    /// How many deliveries a consumer holds unacknowledged (0 once it is gone).
    pub fn inflight(&self, handle: &ConsumerHandle) -> usize {
        handle.list.consumer_inflight(handle.id).unwrap_or(0)
    }

    /// Changes whenever [`Broker::demand`] may have changed.
    pub fn watch_demand(&self) -> tokio::sync::watch::Receiver<u64> {
        self.demand_version.subscribe()
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe_durable(
        &self,
        id: ConsumerId,
        dest: &Destination,
        name: DurableName,
        opts: ConsumerOptions,
        sink: Arc<dyn DeliverySink>,
        now: u64,
        fx: &mut Effects,
    ) -> Result<(ConsumerHandle, Completion), BrokerError> {
        if dest.kind != DestinationKind::Topic {
            return Err(BrokerError::InvalidDestination(format!(
                "{dest}: durable subscriptions need a (non-temporary) topic"
            )));
        }
        let key = name.list_key();
        let selector_text = opts.selector.as_ref().map(|s| s.as_str().to_string());
        let mut durables = self.durables.lock();
        let mut completion = Completion::ready(Ok(()));
        if let Some(d) = durables.get(&key) {
            if d.active.is_some() {
                return Err(BrokerError::InUse(format!(
                    "Durable consumer is in use for client: {} and subscriptionName: {}",
                    name.client_id, name.name
                )));
            }
            if d.record.topic != *dest.name
                || d.record.selector != selector_text
                || d.record.no_local != opts.no_local
            {
                // JMS: subscribing under an existing name with another topic or selector
                // replaces the subscription, dropping what it held.
                tracing::info!(subscription = %key, "durable subscription changed topic or selector; recreating it");
                let old = durables.remove(&key);
                if let Some(old) = old {
                    self.topics.write().remove(&old.list);
                    old.list.close();
                }
            }
        }
        let d = match durables.get_mut(&key) {
            Some(d) => d,
            None => {
                let record = SubscriptionRecord {
                    list: key.clone(),
                    client_id: name.client_id.clone(),
                    name: name.name.clone(),
                    topic: dest.name.to_string(),
                    selector: selector_text,
                    no_local: opts.no_local,
                };
                completion = self.store.submit(vec![
                    Op::DeleteSubscription { list: key.clone() },
                    Op::PutSubscription(record.clone()),
                ]);
                let list = self.new_list(key.clone(), ListKind::DurableSubscription, true);
                let binding = Arc::new(TopicBinding {
                    pattern: dest.name.to_string(),
                    selector: opts.selector.clone(),
                    no_local: opts.no_local,
                    connection: AtomicU64::new(opts.connection),
                    list: list.clone(),
                    network: None,
                });
                self.topics.write().add(binding.clone());
                durables.entry(key.clone()).or_insert(Durable {
                    record,
                    binding,
                    list,
                    active: None,
                })
            }
        };
        d.active = Some(id);
        // noLocal follows the connection now attached (a reconnecting client gets a new one).
        d.binding
            .connection
            .store(opts.connection, Ordering::Relaxed);
        let list = d.list.clone();
        drop(durables);
        // The binding applies noLocal when the message is published; the list must not filter
        // again, or messages stored while another connection was attached would be stranded.
        let opts = ConsumerOptions {
            no_local: false,
            ..opts
        };
        // A durable subscription's list is closed only with the subscription, which an
        // attached consumer keeps alive; nothing to retry.
        list.add_consumer(id, sink, opts, now, fx);
        Ok((
            ConsumerHandle {
                id,
                list,
                binding: Binding::Durable(key),
            },
            completion,
        ))
    }

    /// Detaches a consumer; its unacknowledged messages are redelivered to others. With
    /// `destroy_durable`, a durable subscription is deleted with everything it holds.
    pub fn unsubscribe(&self, handle: &ConsumerHandle, destroy_durable: bool) -> Completion {
        let now = self.now_ms();
        let mut fx = Effects::default();
        if self.demand.lock().remove(&handle.id).is_some() {
            self.demand_version.send_modify(|v| *v += 1);
        }
        handle.list.remove_consumer(handle.id, now, &mut fx);
        let mut completion = Completion::ready(Ok(()));
        match &handle.binding {
            Binding::Queue => {}
            Binding::Topic => {
                self.topics.write().remove(&handle.list);
                handle.list.close();
            }
            Binding::Durable(key) => {
                let mut durables = self.durables.lock();
                if let Some(d) = durables.get_mut(key) {
                    if d.active == Some(handle.id) {
                        d.active = None;
                    }
                    if destroy_durable && d.active.is_none() {
                        durables.remove(key);
                        drop(durables);
                        self.topics.write().remove(&handle.list);
                        handle.list.close();
                        completion = self
                            .store
                            .submit(vec![Op::DeleteSubscription { list: key.clone() }]);
                    }
                }
            }
        }
        self.process_effects(fx);
        completion
    }

    /// Deletes an inactive durable subscription by name (ActiveMQ's `removeSubscription`).
    pub fn destroy_durable(&self, name: &DurableName) -> Result<Completion, BrokerError> {
        let key = name.list_key();
        let mut durables = self.durables.lock();
        match durables.get(&key) {
            None => Ok(Completion::ready(Ok(()))),
            Some(d) if d.active.is_some() => Err(BrokerError::InUse(format!(
                "Durable consumer is in use for client: {} and subscriptionName: {}",
                name.client_id, name.name
            ))),
            Some(_) => {
                let d = durables.remove(&key);
                drop(durables);
                if let Some(d) = d {
                    self.topics.write().remove(&d.list);
                    d.list.close();
                }
                Ok(self
                    .store
                    .submit(vec![Op::DeleteSubscription { list: key }]))
            }
        }
    }

    /// Acknowledges deliveries outside a transaction (or marks them inside one). Returns the
    /// tags covered and a completion that resolves when the removal is durable.
    pub fn ack(
        &self,
        handle: &ConsumerHandle,
        scope: AckScope,
        transacted: bool,
    ) -> Result<(Vec<u64>, Completion), BrokerError> {
        self.ack_with(handle, scope, transacted, true)
    }

    /// [`Broker::ack`], saying whether the client waits for the removal to be durable (a
    /// RECEIPT, a synchronous JMS ack). When it does not, the removal is submitted lazily
    /// ([`MessageStore::submit_lazy`]): it rides on the next synced group, or the store's
    /// `ack_sync_delay_ms`, instead of paying a flush of its own; a crash before that makes
    /// the message come back as a redelivery, which at-least-once delivery allows (as
    /// ActiveMQ's KahaDB, which syncs an ack only when the client asked for a response).
    pub fn ack_with(
        &self,
        handle: &ConsumerHandle,
        scope: AckScope,
        transacted: bool,
        durable: bool,
    ) -> Result<(Vec<u64>, Completion), BrokerError> {
        let mut batch = Batch::new();
        let mut fx = Effects::default();
        let tags = handle.list.ack(
            handle.id,
            scope,
            transacted,
            self.now_ms(),
            &mut batch,
            &mut fx,
        )?;
        let completion = if batch.is_empty() {
            Completion::ready(Ok(()))
        } else if durable {
            self.store.submit(batch)
        } else {
            self.store.submit_lazy(batch)
        };
        self.process_effects(fx);
        Ok((tags, completion))
    }

    /// Acknowledges the deliveries of one socket write on behalf of their auto-ack consumers:
    /// as [`Broker::ack_delivery`] for each, but the removals go to the store as one lazy batch
    /// (one submission, one slot in the group commit) instead of one per message.
    pub fn ack_deliveries(&self, deliveries: &[crate::Delivery]) -> Completion {
        let mut batch = Batch::new();
        let mut fx = Effects::default();
        let now = self.now_ms();
        for d in deliveries {
            let Some(list) = d.source.upgrade() else {
                continue;
            };
            // An error means the consumer is gone and the delivery was already returned.
            let _ = list.ack(
                d.consumer,
                AckScope::Individual(d.tag),
                false,
                now,
                &mut batch,
                &mut fx,
            );
        }
        self.process_effects(fx);
        if batch.is_empty() {
            Completion::ready(Ok(()))
        } else {
            // Nobody waits for an auto-ack: a crash that loses it redelivers the messages.
            self.store.submit_lazy(batch)
        }
    }

    /// Acknowledges one delivery on behalf of an auto-ack consumer, once the session has
    /// written it to the client. A delivery whose consumer is gone is ignored: it was already
    /// returned for redelivery.
    pub fn ack_delivery(&self, delivery: &crate::Delivery) -> Completion {
        let Some(list) = delivery.source.upgrade() else {
            return Completion::ready(Ok(()));
        };
        let mut batch = Batch::new();
        let mut fx = Effects::default();
        let r = list.ack(
            delivery.consumer,
            AckScope::Individual(delivery.tag),
            false,
            self.now_ms(),
            &mut batch,
            &mut fx,
        );
        self.process_effects(fx);
        match r {
            // Nobody waits for an auto-ack: a crash that loses it redelivers the message.
            Ok(_) if !batch.is_empty() => self.store.submit_lazy(batch),
            _ => Completion::ready(Ok(())),
        }
    }

    /// The prefix of the names of temporary destinations that `connection` owns.
    pub fn temp_prefix(&self, connection: u64) -> String {
        format!("ID:{}-{}-{}:", self.cfg.name, self.boot_id, connection)
    }

    /// Rejects a delivery: redelivered, or dead-lettered past `maximumRedeliveries`.
    pub fn nack(&self, handle: &ConsumerHandle, tag: u64) -> Result<(), BrokerError> {
        let mut fx = Effects::default();
        handle.list.nack(handle.id, tag, self.now_ms(), &mut fx)?;
        self.process_effects(fx);
        Ok(())
    }

    /// Dead-letters a delivery at once (OpenWire's poison ack: the client's redelivery policy
    /// gave up on it).
    pub fn poison(&self, handle: &ConsumerHandle, tag: u64) -> Result<(), BrokerError> {
        let mut fx = Effects::default();
        handle.list.poison(handle.id, tag, self.now_ms(), &mut fx)?;
        self.process_effects(fx);
        Ok(())
    }

    /// Commits a transaction: every send and ack becomes durable in one atomic store batch.
    pub async fn commit(&self, tx: TxWork) -> Result<Completion, BrokerError> {
        // Resolve every send's targets before touching anything: a commit that fails (a
        // deleted temporary destination) must leave its acks uncommitted, so the session can
        // still roll them back for redelivery.
        let mut resolved: Vec<(Arc<Message>, Vec<Arc<MessageList>>)> = Vec::new();
        for msg in tx.sends {
            let msg = Arc::new(msg);
            if msg.destination.kind.is_queue() {
                let list = self.queue_list(&msg.destination)?;
                resolved.push((msg, vec![list]));
            } else {
                if msg.destination.kind == DestinationKind::TempTopic
                    && !self.temp_exists(&msg.destination)
                {
                    return Err(BrokerError::NoSuchDestination(msg.destination.to_string()));
                }
                let lists: Vec<Arc<MessageList>> = self
                    .topics
                    .read()
                    .matching(&msg.destination.name)
                    .into_iter()
                    .filter(|b| b.wants(&msg))
                    .map(|b| b.list.clone())
                    .collect();
                resolved.push((msg, lists));
            }
        }
        // Only once the whole commit is known to be possible are duplicate ids remembered.
        let mut batch = Batch::new();
        let mut after = AfterWrite::default();
        let msgs: Vec<Arc<Message>> = resolved.iter().map(|(m, _)| m.clone()).collect();
        let keep = self.dedup(&msgs, &mut batch, &mut after)?;
        let mut items: Vec<(Arc<MessageList>, Arc<Message>)> = Vec::new();
        for ((msg, lists), keep) in resolved.into_iter().zip(keep) {
            if keep {
                items.extend(lists.into_iter().map(|l| (l, msg.clone())));
            }
        }
        // The acked messages stay held until the batch is durable: removed then, redelivered
        // if it fails.
        for (handle, tags) in &tx.acks {
            let committing = handle.list.prepare_commit_acks(handle.id, tags, &mut batch);
            if !committing.is_empty() {
                after
                    .acks
                    .push((handle.list.clone(), handle.id, committing));
            }
        }
        self.place(items, batch, after).await
    }

    /// Rolls a transaction back: sends are discarded, acked messages are redelivered.
    pub fn rollback(&self, tx: TxWork) {
        let now = self.now_ms();
        let mut fx = Effects::default();
        for (handle, tags) in &tx.acks {
            handle.list.rollback_acks(handle.id, tags, now, &mut fx);
        }
        self.process_effects(fx);
    }

    /// Moves expired messages out of every list. Call periodically.
    pub fn expire_sweep(&self) {
        let now = self.now_ms();
        let mut fx = Effects::default();
        for list in self.all_lists() {
            list.expire(now, &mut fx);
        }
        self.process_effects(fx);
    }

    /// Stops (`true`) or resumes handing messages to consumers. Paused, the broker still
    /// accepts, stores and acknowledges; messages wait in their lists, consumers stay
    /// subscribed, and on resume everything pending goes out in its usual order, once.
    pub fn set_dispatch_paused(&self, paused: bool) {
        let was = self.dispatch_paused.swap(paused, Ordering::SeqCst);
        if was && !paused {
            let now = self.now_ms();
            let mut fx = Effects::default();
            for list in self.all_lists() {
                list.redispatch(now, &mut fx);
            }
            self.process_effects(fx);
        }
    }

    /// The broker is stopping: every send waiting for space (producer flow control, memory or
    /// store) and every later one that would wait ends with [`BrokerError::Stopping`], so that
    /// a producer blocked on a full destination does not hold a graceful shutdown up forever
    /// (ActiveMQ's `stop()` likewise fails the blocked `send`s).
    pub fn stop_waiting_producers(&self) {
        self.stopping.send_replace(true);
    }

    /// Waits until [`Broker::stop_waiting_producers`] (never returns before).
    async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Whether dispatch is paused (see [`Broker::set_dispatch_paused`]).
    pub fn dispatch_paused(&self) -> bool {
        self.dispatch_paused.load(Ordering::SeqCst)
    }

    fn all_lists(&self) -> Vec<Arc<MessageList>> {
        let mut lists: Vec<Arc<MessageList>> = self.queues.read().values().cloned().collect();
        let topics = self.topics.read();
        lists.extend(topics.wildcard.iter().map(|b| b.list.clone()));
        lists.extend(topics.exact.values().flatten().map(|b| b.list.clone()));
        lists
    }

    /// A snapshot of every queue and subscription, sorted by name.
    pub fn snapshot(&self) -> Vec<ListSnapshot> {
        let mut v: Vec<ListSnapshot> = self.all_lists().iter().map(|l| l.snapshot()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A producer with `dest` as its fixed destination opened (OpenWire's `ProducerInfo`);
    /// counted on the queue, which it creates if need be, as ActiveMQ does. Topics keep no
    /// per-topic state, so their producers are not counted; nor are those of a destination
    /// that cannot be used (the producer finds out when it sends).
    pub fn producer_opened(&self, dest: &Destination) {
        if dest.kind.is_queue() {
            if let Ok(list) = self.queue_list(dest) {
                list.producer_opened();
            }
        }
    }

    /// A producer counted by [`Broker::producer_opened`] closed.
    pub fn producer_closed(&self, dest: &Destination) {
        if dest.kind.is_queue() {
            if let Some(list) = self.queues.read().get(&dest.key()) {
                list.producer_closed();
            }
        }
    }

    /// Whether the broker has this queue (authorisation: creating one needs `admin`).
    pub fn queue_exists(&self, dest: &Destination) -> bool {
        self.queues.read().contains_key(&dest.key())
    }

    /// A snapshot of one queue; `None` when the broker has no such queue. For the admin API:
    /// it locks that queue's state once, like a browse.
    pub fn queue_snapshot(&self, dest: &Destination) -> Option<ListSnapshot> {
        let list = self.queues.read().get(&dest.key()).cloned()?;
        Some(list.snapshot())
    }

    /// Every topic subscription (durable or not) with the topic pattern it is bound to, sorted
    /// by pattern then list name. For the admin API and metrics: read at request time, nothing
    /// is counted on the publish path.
    pub fn topic_subscriptions(&self) -> Vec<TopicSubscriptionSnapshot> {
        let bindings: Vec<Arc<TopicBinding>> = {
            let topics = self.topics.read();
            topics
                .wildcard
                .iter()
                .chain(topics.exact.values().flatten())
                .cloned()
                .collect()
        };
        let durables: HashSet<String> = self.durables.lock().keys().cloned().collect();
        let mut v: Vec<TopicSubscriptionSnapshot> = bindings
            .iter()
            .map(|b| TopicSubscriptionSnapshot {
                topic: b.pattern.clone(),
                durable: durables.contains(b.list.name()),
                network: b.network.is_some(),
                list: b.list.snapshot(),
            })
            .collect();
        v.sort_by(|a, b| (&a.topic, &a.list.name).cmp(&(&b.topic, &b.list.name)));
        v
    }

    /// The pending messages of a queue, in delivery order (a queue browser).
    pub fn browse(&self, dest: &Destination, max: usize) -> Vec<Arc<Message>> {
        match self.queues.read().get(&dest.key()) {
            Some(l) => l.browse(max),
            None => Vec::new(),
        }
    }

    /// Removes every pending message of a queue. Returns how many.
    pub fn purge(&self, dest: &Destination) -> Result<(u64, Completion), BrokerError> {
        let Some(list) = self.queues.read().get(&dest.key()).cloned() else {
            return Ok((0, Completion::ready(Ok(()))));
        };
        let mut batch = Batch::new();
        let n = list.purge(&mut batch);
        let c = if batch.is_empty() {
            Completion::ready(Ok(()))
        } else {
            self.store.submit(batch)
        };
        Ok((n, c))
    }

    /// Dead-letters or drops what left a list (ActiveMQ's `SharedDeadLetterStrategy`).
    fn process_effects(&self, fx: Effects) {
        let mut work = fx.dead;
        // Bounded: a message dead-lettered from the DLQ is dropped, so this terminates.
        while let Some(dead) = work.pop() {
            let from_dlq = dead.message.destination.kind == DestinationKind::Queue
                && *dead.message.destination.name == *self.cfg.dead_letter_queue;
            let keep = !from_dlq
                && (dead.message.persistent || self.cfg.process_non_persistent)
                && (dead.cause != DeadCause::Expired || self.cfg.process_expired);
            let mut batch = Batch::new();
            if let Some(k) = &dead.store_key {
                if dead.message.persistent {
                    batch.push(Op::Dequeue {
                        list: k.clone(),
                        seq: dead.seq,
                    });
                }
            }
            if !keep {
                tracing::debug!(message_id = %dead.message.id, cause = ?dead.cause, "dropping dead message");
                if !batch.is_empty() {
                    drop(self.store.submit(batch));
                }
                continue;
            }
            let dlq_dest = Destination::queue(&self.cfg.dead_letter_queue);
            let dlq = match self.queue_list(&dlq_dest) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the dead-letter queue; dropping dead message");
                    continue;
                }
            };
            let mut m = (*dead.message).clone();
            m.headers
                .retain(|(n, _)| n != "dlqDeliveryFailureCause" && n != "originalDestination");
            m.headers.push((
                "dlqDeliveryFailureCause".into(),
                dead.cause.describe(self.cfg.maximum_redeliveries),
            ));
            m.headers.push((
                "originalDestination".into(),
                dead.message.destination.to_string(),
            ));
            m.destination = dlq_dest;
            // An expired message must not expire again in the DLQ (ActiveMQ clears it too).
            m.expires_ms = 0;
            let seq = dlq.reserve_seq();
            if m.persistent {
                if let Some(k) = dlq.store_key() {
                    batch.insert(
                        0,
                        Op::Enqueue {
                            list: k.clone(),
                            seq,
                            payload: m.encode(),
                        },
                    );
                }
            }
            if !batch.is_empty() {
                // The DLQ enqueue and the source dequeue go in one atomic batch: a crash
                // leaves the message in exactly one of the two places.
                drop(self.store.submit(batch));
            }
            tracing::debug!(message_id = %m.id, cause = ?dead.cause, "message sent to the dead-letter queue");
            let mut fx = Effects::default();
            dlq.insert(seq, Arc::new(m), self.now_ms(), &mut fx);
            work.extend(fx.dead);
        }
    }
}

/// Resolves `Ok` once every one of `originals` has; with the first failure otherwise.
async fn all_ok(originals: Vec<Completion>) -> Result<(), ferromq_store::StoreError> {
    for c in originals {
        c.await?;
    }
    Ok(())
}

/// A completion for a write that is already durable but confirms resends of originals that
/// may still be in flight.
fn join_originals(mut originals: Vec<Completion>) -> Completion {
    match originals.len() {
        0 => Completion::ready(Ok(())),
        1 => originals.pop().unwrap_or_else(|| Completion::ready(Ok(()))),
        _ => {
            let (completer, completion) = Completion::pair();
            tokio::spawn(async move { completer.complete(all_ok(originals).await) });
            completion
        }
    }
}
