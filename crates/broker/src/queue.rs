//! A message list with consumers: a queue, or one topic subscription.
//!
//! Everything about one list — its pending messages in priority order, its consumers and what
//! each holds unacknowledged — sits behind one mutex. Critical sections are short and never
//! wait on I/O: store writes are collected into a batch and submitted by the caller, and
//! messages that must move to the dead-letter queue are handed back as [`Effects`], so no code
//! path ever holds two list locks at once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use ferromq_store::{Batch, ListKey, MessageStore, Op};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::consumer::{ConsumerId, ConsumerOptions, Delivery, DeliverySink};
use crate::error::BrokerError;
use crate::message::Message;
use crate::selector_props::MessageProperties;

/// How many pending messages one dispatch pass may skip (because no consumer's selector wants
/// them) before it stops. Bounds the time a lock is held, like ActiveMQ's `maxPageSize`.
const DISPATCH_SKIP_MAX: usize = 10_000;
/// Messages read from the store per page-in call.
const PAGE_IN_BATCH: usize = 500;

/// What a list is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// A queue (or temporary queue).
    Queue,
    /// A durable topic subscription: keeps messages while its subscriber is away.
    DurableSubscription,
    /// A non-durable topic subscription: lives as long as its consumer.
    TopicSubscription,
}

/// Per-list policy, from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct ListPolicy {
    /// Memory the list may hold (pending + unacknowledged) before producers wait.
    pub memory_limit_bytes: u64,
    /// Deliveries after the first before a message is dead (`maximumRedeliveries`); -1 = never.
    pub maximum_redeliveries: i32,
}

/// Why a message left a list without being consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadCause {
    /// Redelivered more than `maximumRedeliveries` times.
    PoisonAck,
    /// Its `expires` time passed.
    Expired,
}

impl DeadCause {
    /// The text ActiveMQ puts in `dlqDeliveryFailureCause`.
    pub fn describe(self, max_redeliveries: i32) -> String {
        match self {
            DeadCause::PoisonAck => format!(
                "Delivery[{}] exceeds redelivery policy limit: maximumRedeliveries={}",
                max_redeliveries.saturating_add(1),
                max_redeliveries
            ),
            DeadCause::Expired => "expired".to_string(),
        }
    }
}

/// A message that left a list and must be dead-lettered or dropped by the broker.
#[derive(Debug)]
pub struct DeadMessage {
    /// The list's store key, if the list is persistent (the caller must dequeue it there).
    pub store_key: Option<ListKey>,
    /// The entry's sequence in that list.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Why.
    pub cause: DeadCause,
}

/// Side effects a list operation leaves for the caller, to run after the lock is released.
#[derive(Debug, Default)]
pub struct Effects {
    /// Messages to dead-letter or drop.
    pub dead: Vec<DeadMessage>,
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    msg: Arc<Message>,
    delivery_count: u32,
    bytes: u64,
    /// Set when the message came back from a network consumer that went away (see
    /// [`crate::NetworkRoute::pin_ms`]).
    pin: Option<Pin>,
}

/// A message kept for one remote broker: only a network consumer forwarding there may take it
/// before `until_ms`.
#[derive(Debug, Clone)]
struct Pin {
    target: Arc<str>,
    until_ms: u64,
}

impl Entry {
    fn key(&self) -> (Reverse<u8>, u64) {
        (Reverse(self.msg.priority), self.seq)
    }

    /// Whether the pin (if any) lets `slot` take this message at `now_ms`.
    fn pin_allows(&self, slot: &Slot, now_ms: u64) -> bool {
        match &self.pin {
            None => true,
            Some(p) if p.until_ms <= now_ms => true,
            Some(p) => slot
                .opts
                .network
                .as_ref()
                .is_some_and(|r| r.target == *p.target),
        }
    }
}

#[derive(Debug)]
struct Slot {
    id: ConsumerId,
    sink: Arc<dyn DeliverySink>,
    opts: ConsumerOptions,
    inflight: BTreeMap<u64, Entry>,
    /// Tags acknowledged inside a transaction not yet committed. They no longer count against
    /// prefetch (as in ActiveMQ), but stay here so ABORT can redeliver them.
    tx_acked: HashSet<u64>,
    /// The subset of `tx_acked` whose COMMIT batch is in flight: they leave only once it is
    /// durable, and come back for redelivery if it fails.
    committing: HashSet<u64>,
    /// Takes nothing more (see [`MessageList::quiesce_consumer`]).
    quiesced: bool,
}

impl Slot {
    fn has_capacity(&self) -> bool {
        !self.quiesced
            && (self.inflight.len() - self.tx_acked.len()) < self.opts.prefetch.max(1) as usize
    }

    /// `local_consumers`: whether the list has a consumer that is not a bridge (see
    /// [`crate::NetworkRoute::accepts`]).
    fn wants(&self, msg: &Message, local_consumers: bool) -> bool {
        if let Some(route) = &self.opts.network {
            if !route.accepts(msg, local_consumers) {
                return false;
            }
        }
        if self.opts.no_local
            && self.opts.connection != 0
            && msg.producer_connection == self.opts.connection
        {
            return false;
        }
        match &self.opts.selector {
            Some(sel) => sel.matches(&MessageProperties(msg)),
            None => true,
        }
    }
}

/// Counters for one list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListStats {
    /// Messages added.
    pub enqueued: u64,
    /// Messages acknowledged.
    pub dequeued: u64,
    /// Deliveries made (first and re-).
    pub dispatched: u64,
    /// Messages that expired.
    pub expired: u64,
    /// Messages that exceeded their redeliveries.
    pub poisoned: u64,
    /// Messages discarded because a non-durable subscriber fell too far behind.
    pub discarded: u64,
}

/// A snapshot of a list for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSnapshot {
    /// The list's name.
    pub name: String,
    /// Messages waiting for a consumer.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub inflight: u64,
    /// Consumers attached.
    pub consumers: u64,
    /// Producers with this list's destination as their fixed destination (OpenWire).
    pub producers: u64,
    /// Bytes held in memory.
    pub memory_bytes: u64,
    /// The list's memory window (`policy.memory_limit_bytes`); 0 = unbounded.
    pub memory_limit_bytes: u64,
    /// Pending messages held only in the store, not in memory (paged out past the memory
    /// window; read back as consumers drain the list). Counted in `pending` too.
    pub paged_out: u64,
    /// Counters.
    pub stats: ListStats,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    pending: BTreeMap<(Reverse<u8>, u64), Entry>,
    memory_bytes: u64,
    consumers: Vec<Slot>,
    rr: usize,
    stats: ListStats,
    closed: bool,
    paging: Paging,
    /// Seqs of pending persistent messages whose store write is not confirmed yet. Dispatch
    /// stops at the first of them: a consumer never sees a message the broker could still lose
    /// (a failover would then make its producer resend it, and the consumer see it twice).
    undurable: BTreeSet<u64>,
    /// Deliveries, by tag, whose consumer left while the commit of their ack was in flight.
    /// Neither redelivered (the removal may already be durable) nor forgotten (it may fail):
    /// [`MessageList::finish_commit_acks`] decides.
    committing_orphans: HashMap<u64, Entry>,
    /// The earliest `until_ms` of a pinned pending message: the expiry sweep dispatches again
    /// once it has passed, so that a message whose pin lapsed does not wait for other traffic.
    pin_deadline: Option<u64>,
}

/// Bounded memory for persistent lists (KahaDB's store cursor).
///
/// While `active`, a persistent message whose seq is above `high` is in memory only if it is in
/// `resident_above`; every other one lives in the store alone (`stored_only` of them) and is
/// read back ("paged in") as consumers drain the list. Invariant: every persistent message
/// with seq <= `high` is in memory, already consumed, or still to be inserted resident.
#[derive(Debug, Default)]
struct Paging {
    active: bool,
    high: u64,
    stored_only: u64,
    /// Seqs reserved while paging and not yet inserted. Their store writes may not be visible
    /// to `load` yet, so a page-in never moves `high` to or past the lowest of them.
    outstanding: BTreeSet<u64>,
    /// Seqs above `high` that are in memory anyway (inserted resident while paging); page-in
    /// skips them.
    resident_above: BTreeSet<u64>,
}

/// A reserved position in a list, from [`MessageList::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The message's sequence in the list.
    pub seq: u64,
    /// The list is paging: once the store confirms the message, insert it with
    /// [`MessageList::insert_stored`] instead of holding it in memory.
    pub paged: bool,
}

/// A pending message taken out of a list by the admin API (see
/// [`MessageList::take_pending`]); given back with [`MessageList::restore`].
#[derive(Debug)]
pub struct TakenEntry(Entry);

impl TakenEntry {
    /// The message.
    pub fn message(&self) -> &Arc<Message> {
        &self.0.msg
    }
}

/// Why a message asked for by id cannot be taken from a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Not in the list (consumed, removed, or never there).
    NotFound,
    /// In the list but not available now; the reason.
    Busy(&'static str),
    /// Not among the messages in memory, and the list has messages paged out to the store.
    PagedOut,
}

/// A message list.
#[derive(Debug)]
pub struct MessageList {
    name: String,
    kind: ListKind,
    store_key: Option<ListKey>,
    policy: ListPolicy,
    tags: Arc<AtomicU64>,
    /// Itself, so deliveries can carry a way back for acknowledgement.
    this: Weak<MessageList>,
    /// Where paged-out messages are read back from (persistent lists only).
    store: Option<Arc<dyn MessageStore>>,
    state: Mutex<State>,
    space: Notify,
    /// The broker's dispatch gate, shared by every list: while set, nothing is handed to a
    /// consumer (a suspended HA master must not deliver what another master may deliver too).
    dispatch_paused: Arc<AtomicBool>,
    /// Producers with this list as their fixed destination (OpenWire's `ProducerInfo`), for
    /// status only: outside `state`, changed when a producer opens or closes, never per message.
    producers: AtomicU64,
}

/// Which deliveries an ACK covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckScope {
    /// Exactly this tag.
    Individual(u64),
    /// This tag and every earlier one of the same consumer (STOMP `client` mode).
    Cumulative(u64),
}

impl MessageList {
    /// A new, empty list. `store_key` is `Some` when persistent messages must be stored.
    pub fn new(
        name: String,
        kind: ListKind,
        store_key: Option<ListKey>,
        policy: ListPolicy,
        tags: Arc<AtomicU64>,
        store: Option<Arc<dyn MessageStore>>,
        dispatch_paused: Arc<AtomicBool>,
    ) -> Arc<MessageList> {
        let store = store.filter(|_| store_key.is_some());
        Arc::new_cyclic(|this| MessageList {
            name,
            kind,
            store_key,
            policy,
            tags,
            this: this.clone(),
            store,
            state: Mutex::new(State {
                next_seq: 1,
                pending: BTreeMap::new(),
                memory_bytes: 0,
                consumers: Vec::new(),
                rr: 0,
                stats: ListStats::default(),
                closed: false,
                paging: Paging::default(),
                undurable: BTreeSet::new(),
                committing_orphans: HashMap::new(),
                pin_deadline: None,
            }),
            space: Notify::new(),
            dispatch_paused,
            producers: AtomicU64::new(0),
        })
    }

    /// Hands pending messages to consumers with room: called when the dispatch gate reopens,
    /// since nothing else may happen on an idle list to trigger a dispatch.
    pub fn redispatch(&self, now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        self.dispatch(&mut st, now_ms, fx);
    }

    /// The list's name (`queue://orders`, `durable://client:sub`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What kind of list it is.
    pub fn kind(&self) -> ListKind {
        self.kind
    }

    /// The store key, when persistent messages of this list are stored.
    pub fn store_key(&self) -> Option<&ListKey> {
        self.store_key.as_ref()
    }

    /// Reserves the sequence number of the next message (not stored, or stored by the caller).
    pub fn reserve_seq(&self) -> u64 {
        self.reserve(false).seq
    }

    /// Reserves the sequence number of the next message. The message is inserted later, after
    /// its store write was submitted, so that no ack of it can ever reach the store before its
    /// enqueue does. `stored` says the caller writes it to the store; when the list's memory
    /// window is full such a message is not held in memory but paged (see [`Reservation`]).
    pub fn reserve(&self, stored: bool) -> Reservation {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let paged = stored
            && self.store.is_some()
            && (st.paging.active || st.memory_bytes >= self.policy.memory_limit_bytes);
        if paged {
            if !st.paging.active {
                tracing::debug!(list = %self.name, "memory window full: paging further persistent messages to the store");
                st.paging.active = true;
                st.paging.high = seq - 1;
            }
            st.paging.outstanding.insert(seq);
        }
        Reservation { seq, paged }
    }

    /// Gives up a paged reservation whose store write failed.
    pub fn abandon(&self, seq: u64) {
        self.state.lock().paging.outstanding.remove(&seq);
    }

    /// Recovery: the store holds `count` messages of this list, the highest with `max_seq`.
    /// None is read now; consumers page them in as they drain the list, so start-up does not
    /// depend on the size of the backlog.
    pub fn recover_stored(&self, count: u64, max_seq: u64) {
        let mut st = self.state.lock();
        st.next_seq = st.next_seq.max(max_seq.saturating_add(1));
        if count > 0 && self.store.is_some() {
            st.paging.active = true;
            st.paging.high = 0;
            st.paging.stored_only += count;
        }
    }

    /// Inserts a paged message once the store has confirmed it: it stays in the store only
    /// until consumers need it.
    pub fn insert_stored(&self, seq: u64, now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        st.paging.outstanding.remove(&seq);
        if st.closed {
            return;
        }
        st.paging.stored_only += 1;
        st.stats.enqueued += 1;
        self.dispatch(&mut st, now_ms, fx);
    }

    /// Whether the list may take more messages without exceeding its memory limit.
    pub fn has_space(&self) -> bool {
        self.state.lock().memory_bytes < self.policy.memory_limit_bytes
    }

    /// Notified when memory was freed (a hint: callers re-check [`MessageList::has_space`]).
    pub fn space_notify(&self) -> &Notify {
        &self.space
    }

    /// Inserts a message (already stored if persistent) and dispatches.
    ///
    /// A non-durable topic subscription that is over its memory limit drops its oldest pending
    /// message to make room (a subscriber that cannot keep up must not stall the publisher or
    /// every other subscriber); queues and durable subscriptions never drop — their producers
    /// wait before calling this (producer flow control).
    pub fn insert(&self, seq: u64, msg: Arc<Message>, now_ms: u64, fx: &mut Effects) {
        self.insert_inner(seq, msg, false, now_ms, fx)
    }

    /// Inserts a message whose store write is still in flight: it keeps its place but is not
    /// dispatched until [`MessageList::mark_durable`] (or removed by
    /// [`MessageList::abandon_undurable`] if the write fails).
    pub fn insert_undurable(&self, seq: u64, msg: Arc<Message>, now_ms: u64, fx: &mut Effects) {
        self.insert_inner(seq, msg, true, now_ms, fx)
    }

    /// The store confirmed `seq`: it may now be dispatched.
    pub fn mark_durable(&self, seq: u64, now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        if st.undurable.remove(&seq) {
            self.dispatch(&mut st, now_ms, fx);
        }
    }

    /// The store write of `seq` failed: the message is not kept (its producer gets the error).
    pub fn abandon_undurable(&self, seq: u64, now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        if !st.undurable.remove(&seq) {
            return;
        }
        let key = st.pending.keys().find(|k| k.1 == seq).copied();
        if let Some(e) = key.and_then(|k| st.pending.remove(&k)) {
            st.memory_bytes -= e.bytes;
            st.stats.enqueued = st.stats.enqueued.saturating_sub(1);
        }
        self.dispatch(&mut st, now_ms, fx);
    }

    fn insert_inner(
        &self,
        seq: u64,
        msg: Arc<Message>,
        undurable: bool,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let bytes = msg.size_bytes();
        let mut st = self.state.lock();
        if st.closed {
            return;
        }
        if undurable {
            st.undurable.insert(seq);
        }
        if self.kind == ListKind::TopicSubscription {
            while st.memory_bytes + bytes > self.policy.memory_limit_bytes {
                let Some((_, old)) = st.pending.pop_first() else {
                    break;
                };
                st.memory_bytes -= old.bytes;
                st.stats.discarded += 1;
                if st.stats.discarded.is_power_of_two() {
                    tracing::warn!(
                        subscription = %self.name,
                        discarded = st.stats.discarded,
                        "slow non-durable topic subscriber: discarding oldest pending messages"
                    );
                }
            }
        }
        st.next_seq = st.next_seq.max(seq + 1);
        st.paging.outstanding.remove(&seq);
        if st.paging.active && seq > st.paging.high {
            st.paging.resident_above.insert(seq);
        }
        st.memory_bytes += bytes;
        st.stats.enqueued += 1;
        let entry = Entry {
            seq,
            msg,
            delivery_count: 0,
            bytes,
            pin: None,
        };
        st.pending.insert(entry.key(), entry);
        self.dispatch(&mut st, now_ms, fx);
    }

    /// Attaches a consumer and dispatches to it.
    pub fn add_consumer(
        &self,
        id: ConsumerId,
        sink: Arc<dyn DeliverySink>,
        opts: ConsumerOptions,
        now_ms: u64,
        fx: &mut Effects,
    ) -> bool {
        let mut st = self.state.lock();
        // A list closed meanwhile (a queue removed by an administrator) takes no consumer: the
        // caller attaches to the queue's new list instead.
        if st.closed {
            return false;
        }
        st.consumers.push(Slot {
            id,
            sink,
            opts,
            inflight: BTreeMap::new(),
            tx_acked: HashSet::new(),
            committing: HashSet::new(),
            quiesced: false,
        });
        self.dispatch(&mut st, now_ms, fx);
        true
    }

    /// Stops handing a consumer messages while it keeps (and may still acknowledge) what it
    /// holds; the others get what it would have had. A bridge whose remote demand went does
    /// this, and detaches the consumer once its sends are confirmed: detached earlier, the
    /// messages on their way would come back here and could go out a second time.
    pub fn quiesce_consumer(&self, id: ConsumerId, now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        if let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) {
            slot.quiesced = true;
        }
        self.dispatch(&mut st, now_ms, fx);
    }

    /// Undoes [`MessageList::quiesce_consumer`]: the consumer takes messages again.
    pub fn resume_consumer(&self, id: ConsumerId, now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        if let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) {
            slot.quiesced = false;
        }
        self.dispatch(&mut st, now_ms, fx);
    }

    /// Takes back the delivery count of deliveries a consumer holds that never reached its
    /// application (a JMS consumer's prefetched messages, on close): they will not count as
    /// redelivered, nor towards `maximumRedeliveries`.
    pub fn uncount(&self, id: ConsumerId, tags: &[u64]) {
        let mut st = self.state.lock();
        if let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) {
            for t in tags {
                if let Some(e) = slot.inflight.get_mut(t) {
                    e.delivery_count = e.delivery_count.saturating_sub(1);
                }
            }
        }
    }

    /// How many deliveries a consumer holds unacknowledged (`None`: no such consumer).
    pub fn consumer_inflight(&self, id: ConsumerId) -> Option<usize> {
        let st = self.state.lock();
        st.consumers
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.inflight.len())
    }

    /// Detaches a consumer. Everything it held unacknowledged (transactionally acked or not)
    /// goes back to the list for redelivery, in its original order.
    pub fn remove_consumer(&self, id: ConsumerId, now_ms: u64, fx: &mut Effects) -> bool {
        let mut st = self.state.lock();
        let Some(pos) = st.consumers.iter().position(|c| c.id == id) else {
            return false;
        };
        let slot = st.consumers.remove(pos);
        // A bridge's messages may be stored on its target already: keep them for it a while.
        let pin = slot
            .opts
            .network
            .as_ref()
            .filter(|r| r.pin_ms > 0)
            .map(|r| Pin {
                target: r.target.as_str().into(),
                until_ms: now_ms.saturating_add(r.pin_ms),
            });
        if let Some(p) = &pin {
            if !slot.inflight.is_empty() {
                st.pin_deadline = Some(st.pin_deadline.map_or(p.until_ms, |d| d.min(p.until_ms)));
            }
        }
        for (tag, mut entry) in slot.inflight {
            if slot.committing.contains(&tag) {
                st.committing_orphans.insert(tag, entry);
            } else {
                if pin.is_some() {
                    entry.pin = pin.clone();
                }
                self.requeue(&mut st, entry, fx);
            }
        }
        self.dispatch(&mut st, now_ms, fx);
        drop(st);
        self.space.notify_waiters();
        true
    }

    /// Acknowledges deliveries. Outside a transaction the messages are removed and their
    /// dequeue ops appended to `batch`; inside one they are only marked (see
    /// [`MessageList::commit_acks`] / [`MessageList::rollback_acks`]). Returns the tags covered.
    pub fn ack(
        &self,
        consumer: ConsumerId,
        scope: AckScope,
        transacted: bool,
        now_ms: u64,
        batch: &mut Batch,
        fx: &mut Effects,
    ) -> Result<Vec<u64>, BrokerError> {
        let mut st = self.state.lock();
        let st = &mut *st;
        let slot = st
            .consumers
            .iter_mut()
            .find(|c| c.id == consumer)
            .ok_or_else(|| BrokerError::UnknownDelivery(format!("consumer {consumer}")))?;
        let tags: Vec<u64> = match scope {
            AckScope::Individual(tag) => {
                if !slot.inflight.contains_key(&tag) || slot.tx_acked.contains(&tag) {
                    return Err(BrokerError::UnknownDelivery(tag.to_string()));
                }
                vec![tag]
            }
            AckScope::Cumulative(tag) => {
                if !slot.inflight.contains_key(&tag) || slot.tx_acked.contains(&tag) {
                    return Err(BrokerError::UnknownDelivery(tag.to_string()));
                }
                slot.inflight
                    .range(..=tag)
                    .map(|(t, _)| *t)
                    .filter(|t| !slot.tx_acked.contains(t))
                    .collect()
            }
        };
        if transacted {
            slot.tx_acked.extend(tags.iter().copied());
        } else {
            let mut freed = 0;
            for t in &tags {
                if let Some(e) = slot.inflight.remove(t) {
                    freed += e.bytes;
                    if e.msg.persistent {
                        if let Some(k) = &self.store_key {
                            batch.push(Op::Dequeue {
                                list: k.clone(),
                                seq: e.seq,
                            });
                        }
                    }
                }
            }
            st.memory_bytes -= freed;
            st.stats.dequeued += tags.len() as u64;
        }
        self.dispatch(st, now_ms, fx);
        if !transacted {
            self.space.notify_waiters();
        }
        Ok(tags)
    }

    /// Starts committing transactional acks: appends the dequeue ops of `tags` to `batch` and
    /// returns the tags now being committed. The messages stay held (not redelivered, still
    /// counted in memory) until [`MessageList::finish_commit_acks`] learns the batch's fate.
    pub fn prepare_commit_acks(
        &self,
        consumer: ConsumerId,
        tags: &[u64],
        batch: &mut Batch,
    ) -> Vec<u64> {
        let mut st = self.state.lock();
        let Some(slot) = st.consumers.iter_mut().find(|c| c.id == consumer) else {
            // The consumer went away before COMMIT: its messages were already returned to the
            // list for redelivery, which is the safe outcome.
            return Vec::new();
        };
        let mut committing = Vec::with_capacity(tags.len());
        for t in tags {
            if !slot.tx_acked.contains(t) || slot.committing.contains(t) {
                continue;
            }
            let Some(e) = slot.inflight.get(t) else {
                continue;
            };
            if e.msg.persistent {
                if let Some(k) = &self.store_key {
                    batch.push(Op::Dequeue {
                        list: k.clone(),
                        seq: e.seq,
                    });
                }
            }
            slot.committing.insert(*t);
            committing.push(*t);
        }
        committing
    }

    /// The commit batch of `tags` (from [`MessageList::prepare_commit_acks`]) is durable: the
    /// messages leave for good; or it failed: they are redelivered, as after ABORT, since the
    /// store still holds them.
    pub fn finish_commit_acks(
        &self,
        consumer: ConsumerId,
        tags: &[u64],
        durable: bool,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let mut done = Vec::with_capacity(tags.len());
        let mut slot = st.consumers.iter_mut().find(|c| c.id == consumer);
        for t in tags {
            let mut from_slot = None;
            if let Some(slot) = slot.as_deref_mut() {
                if slot.committing.remove(t) {
                    slot.tx_acked.remove(t);
                    from_slot = slot.inflight.remove(t);
                }
            }
            if let Some(e) = from_slot.or_else(|| st.committing_orphans.remove(t)) {
                done.push(e);
            }
        }
        if st.closed {
            return;
        }
        if durable {
            let freed: u64 = done.iter().map(|e| e.bytes).sum();
            st.memory_bytes = st.memory_bytes.saturating_sub(freed);
            st.stats.dequeued += done.len() as u64;
        } else {
            for e in done {
                self.requeue(st, e, fx);
            }
        }
        self.dispatch(st, now_ms, fx);
        self.space.notify_waiters();
    }

    /// Rolls transactional acks back: the messages are redelivered (ActiveMQ's ABORT).
    pub fn rollback_acks(&self, consumer: ConsumerId, tags: &[u64], now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(pos) = st.consumers.iter().position(|c| c.id == consumer) else {
            return;
        };
        let mut back = Vec::new();
        {
            let slot = &mut st.consumers[pos];
            for t in tags {
                // A tag whose commit is in flight belongs to that commit's outcome.
                if !slot.committing.contains(t) && slot.tx_acked.remove(t) {
                    if let Some(e) = slot.inflight.remove(t) {
                        back.push(e);
                    }
                }
            }
        }
        for e in back {
            self.requeue(st, e, fx);
        }
        self.dispatch(st, now_ms, fx);
    }

    /// Rejects one delivery: it is redelivered, or dead-lettered once it has exceeded
    /// `maximumRedeliveries`.
    pub fn nack(
        &self,
        consumer: ConsumerId,
        tag: u64,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<(), BrokerError> {
        let mut st = self.state.lock();
        let st = &mut *st;
        let entry = take_inflight(st, consumer, tag)?;
        self.requeue(st, entry, fx);
        self.dispatch(st, now_ms, fx);
        Ok(())
    }

    /// Dead-letters one delivery at once, whatever its delivery count: the client gave up on it
    /// (OpenWire's poison ack, sent once the client's own redelivery policy is exhausted).
    pub fn poison(
        &self,
        consumer: ConsumerId,
        tag: u64,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<(), BrokerError> {
        let mut st = self.state.lock();
        let st = &mut *st;
        let entry = take_inflight(st, consumer, tag)?;
        self.kill(st, entry, DeadCause::PoisonAck, fx);
        self.dispatch(st, now_ms, fx);
        Ok(())
    }

    /// Moves expired pending messages out (to `fx.dead`).
    pub fn expire(&self, now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let expired: Vec<_> = st
            .pending
            .iter()
            .filter(|(_, e)| e.msg.is_expired(now_ms))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(e) = st.pending.remove(&k) {
                self.kill(st, e, DeadCause::Expired, fx);
            }
        }
        if st.pin_deadline.is_some_and(|d| d <= now_ms) {
            st.pin_deadline = st
                .pending
                .values()
                .filter_map(|e| e.pin.as_ref())
                .map(|p| p.until_ms)
                .filter(|u| *u > now_ms)
                .min();
            self.dispatch(st, now_ms, fx);
        }
        if !fx.dead.is_empty() {
            self.space.notify_waiters();
        }
    }

    /// Removes every pending message (not those delivered and unacknowledged), appending
    /// dequeue ops for the stored ones. Returns how many were removed.
    pub fn purge(&self, batch: &mut Batch) -> u64 {
        let mut st = self.state.lock();
        let pending = std::mem::take(&mut st.pending);
        let mut n = pending.len() as u64;
        if st.paging.active {
            // Messages that live only in the store go with one purge record. (Deliveries in
            // flight lose their stored copy too; an ACK of them is then a no-op.)
            if let Some(k) = &self.store_key {
                batch.push(Op::Purge { list: k.clone() });
            }
            n += st.paging.stored_only;
            st.paging.stored_only = 0;
            st.paging.resident_above.clear();
            st.paging.active = !st.paging.outstanding.is_empty();
        }
        for (_, e) in pending {
            st.memory_bytes -= e.bytes;
            if e.msg.persistent {
                if let Some(k) = &self.store_key {
                    batch.push(Op::Dequeue {
                        list: k.clone(),
                        seq: e.seq,
                    });
                }
            }
        }
        drop(st);
        self.space.notify_waiters();
        n
    }

    /// Takes one pending message out of the list by its message id, for the admin API's
    /// remove, move and retry: the entry leaves memory now, and its dequeue op (when stored)
    /// goes to `batch`, so the caller removes it from the store exactly as an ack would. The
    /// caller puts it back with [`MessageList::restore`] if that write fails.
    ///
    /// Only pending messages in memory are found (what a browse shows; paged-out ones are read
    /// back first as far as the memory window allows): a message delivered and not yet
    /// acknowledged is refused rather than removed behind its consumer's back, and one still
    /// paged out beyond the window is reported as such. The scan is linear in the resident
    /// messages, which the memory window bounds.
    pub fn take_pending(&self, id: &str, batch: &mut Batch) -> Result<TakenEntry, Lookup> {
        let mut st = self.state.lock();
        // What a browse shows (see [`MessageList::browse`]).
        self.page_in(&mut st);
        let key = st
            .pending
            .iter()
            .find(|(_, e)| &*e.msg.id == id)
            .map(|(k, _)| *k);
        let Some(key) = key else {
            return Err(self.missing(&st, id));
        };
        if st.undurable.contains(&key.1) {
            return Err(Lookup::Busy("its store write is still in flight"));
        }
        let Some(entry) = st.pending.remove(&key) else {
            return Err(Lookup::NotFound);
        };
        st.memory_bytes -= entry.bytes;
        self.push_dequeue(&entry, batch);
        drop(st);
        self.space.notify_waiters();
        Ok(TakenEntry(entry))
    }

    /// Takes up to `max` pending messages for which `pick` is true, in delivery order (retry of
    /// a whole dead-letter queue). Reads paged-out messages in first, as far as the memory
    /// window allows. Dequeue ops go to `batch`, as in [`MessageList::take_pending`].
    pub fn take_pending_where(
        &self,
        max: usize,
        pick: impl Fn(&Message) -> bool,
        batch: &mut Batch,
    ) -> Vec<TakenEntry> {
        let mut st = self.state.lock();
        self.page_in(&mut st);
        let keys: Vec<(Reverse<u8>, u64)> = st
            .pending
            .iter()
            .filter(|(k, e)| !st.undurable.contains(&k.1) && pick(&e.msg))
            .take(max)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(entry) = st.pending.remove(&k) {
                st.memory_bytes -= entry.bytes;
                self.push_dequeue(&entry, batch);
                out.push(TakenEntry(entry));
            }
        }
        drop(st);
        self.space.notify_waiters();
        out
    }

    /// A pending message by id, left in place (the admin API's copy).
    pub fn peek_pending(&self, id: &str) -> Result<Arc<Message>, Lookup> {
        let mut st = self.state.lock();
        self.page_in(&mut st);
        match st.pending.values().find(|e| &*e.msg.id == id) {
            Some(e) => Ok(e.msg.clone()),
            None => Err(self.missing(&st, id)),
        }
    }

    /// Puts back an entry taken by [`MessageList::take_pending`] whose removal did not become
    /// durable: the store still holds it, so memory must too. Its delivery count is kept.
    pub fn restore(&self, taken: TakenEntry, now_ms: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        if st.closed {
            return;
        }
        let entry = taken.0;
        st.memory_bytes += entry.bytes;
        st.pending.insert(entry.key(), entry);
        self.dispatch(&mut st, now_ms, fx);
    }

    /// Why `id` is not among the pending messages.
    fn missing(&self, st: &State, id: &str) -> Lookup {
        let inflight = st
            .consumers
            .iter()
            .any(|c| c.inflight.values().any(|e| &*e.msg.id == id))
            || st.committing_orphans.values().any(|e| &*e.msg.id == id);
        if inflight {
            Lookup::Busy("it is in flight to a consumer (delivered, not yet acknowledged)")
        } else if st.paging.stored_only > 0 {
            Lookup::PagedOut
        } else {
            Lookup::NotFound
        }
    }

    fn push_dequeue(&self, entry: &Entry, batch: &mut Batch) {
        if entry.msg.persistent {
            if let Some(k) = &self.store_key {
                batch.push(Op::Dequeue {
                    list: k.clone(),
                    seq: entry.seq,
                });
            }
        }
    }

    /// Closes the list if no consumer is attached (the admin API's queue removal: ActiveMQ's
    /// `removeDestination` refuses too while a subscription is active). Returns the number of
    /// messages it held (pending, paged out included), or the number of consumers on refusal.
    pub fn close_if_unused(&self) -> Result<u64, u64> {
        let mut st = self.state.lock();
        if !st.consumers.is_empty() {
            return Err(st.consumers.len() as u64);
        }
        let n = st.pending.len() as u64 + st.paging.stored_only;
        st.closed = true;
        st.pending.clear();
        st.committing_orphans.clear();
        st.memory_bytes = 0;
        drop(st);
        self.space.notify_waiters();
        Ok(n)
    }

    /// Closes the list: it accepts nothing more and forgets its messages (a deleted temporary
    /// destination or subscription). Returns the consumers that were attached.
    pub fn close(&self) -> Vec<ConsumerId> {
        let mut st = self.state.lock();
        st.closed = true;
        st.pending.clear();
        st.committing_orphans.clear();
        st.memory_bytes = 0;
        let ids = st.consumers.drain(..).map(|c| c.id).collect();
        drop(st);
        self.space.notify_waiters();
        ids
    }

    /// True once [`MessageList::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// A producer whose fixed destination is this list opened.
    pub fn producer_opened(&self) {
        self.producers.fetch_add(1, Ordering::Relaxed);
    }

    /// A producer counted by [`MessageList::producer_opened`] closed.
    pub fn producer_closed(&self) {
        // Saturating: a close the list never saw open (it was recreated meanwhile) is ignored.
        let _ = self
            .producers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Counters and sizes.
    pub fn snapshot(&self) -> ListSnapshot {
        let st = self.state.lock();
        ListSnapshot {
            name: self.name.clone(),
            pending: st.pending.len() as u64 + st.paging.stored_only,
            inflight: st
                .consumers
                .iter()
                .map(|c| c.inflight.len() as u64)
                .sum::<u64>()
                + st.committing_orphans.len() as u64,
            consumers: st.consumers.len() as u64,
            producers: self.producers.load(Ordering::Relaxed),
            memory_bytes: st.memory_bytes,
            memory_limit_bytes: self.policy.memory_limit_bytes,
            paged_out: st.paging.stored_only,
            stats: st.stats,
        }
    }

    /// The pending messages in delivery order, up to `max` (a queue browser), paged-out ones
    /// read back first as far as the memory window allows.
    pub fn browse(&self, max: usize) -> Vec<Arc<Message>> {
        let mut st = self.state.lock();
        // Paged-out messages first come back into memory, as far as the memory window allows:
        // after a restart every stored message is paged out until something reads it in, and
        // a browse (or an administrator's operation on what it shows) must see them.
        self.page_in(&mut st);
        st.pending
            .values()
            .take(max)
            .map(|e| e.msg.clone())
            .collect()
    }

    /// Puts a message that came back from a consumer in its place, or kills it when it has
    /// been delivered more than `1 + maximumRedeliveries` times.
    fn requeue(&self, st: &mut State, entry: Entry, fx: &mut Effects) {
        let max = self.policy.maximum_redeliveries;
        if max >= 0 && entry.delivery_count > max as u32 {
            self.kill(st, entry, DeadCause::PoisonAck, fx);
        } else {
            st.pending.insert(entry.key(), entry);
        }
    }

    fn kill(&self, st: &mut State, entry: Entry, cause: DeadCause, fx: &mut Effects) {
        st.memory_bytes -= entry.bytes;
        match cause {
            DeadCause::Expired => st.stats.expired += 1,
            DeadCause::PoisonAck => st.stats.poisoned += 1,
        }
        fx.dead.push(DeadMessage {
            store_key: self.store_key.clone(),
            seq: entry.seq,
            message: entry.msg,
            cause,
        });
    }

    /// Reads paged-out messages back from the store while less than half the memory window
    /// is used. Runs under the list lock: pages are small (`PAGE_IN_BATCH`) and reads come from
    /// the page cache in the common case.
    fn page_in(&self, st: &mut State) {
        let (Some(store), Some(key)) = (&self.store, &self.store_key) else {
            return;
        };
        let window_low = self.policy.memory_limit_bytes / 2;
        // Below half the window, or with nothing pending at all (so a tiny window still makes
        // progress), read the next page.
        while st.paging.active
            && st.paging.stored_only > 0
            && (st.memory_bytes < window_low || st.pending.is_empty())
        {
            // Writes of seqs at or above `bound` may not be readable yet.
            let bound = st.paging.outstanding.first().copied().unwrap_or(u64::MAX);
            let page = match store.load(key, Some(st.paging.high), PAGE_IN_BATCH) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(list = %self.name, error = %e, "cannot page messages in from the store");
                    return;
                }
            };
            let mut progressed = false;
            for m in page {
                if m.seq >= bound {
                    break;
                }
                st.paging.high = m.seq;
                progressed = true;
                if st.paging.resident_above.remove(&m.seq) {
                    continue;
                }
                st.paging.stored_only = st.paging.stored_only.saturating_sub(1);
                match Message::decode(&m.payload) {
                    Ok(msg) => {
                        let bytes = msg.size_bytes();
                        st.memory_bytes += bytes;
                        let entry = Entry {
                            seq: m.seq,
                            msg: Arc::new(msg),
                            delivery_count: 0,
                            bytes,
                            pin: None,
                        };
                        st.pending.insert(entry.key(), entry);
                    }
                    Err(e) => {
                        tracing::error!(list = %self.name, seq = m.seq, error = %e, "stored message cannot be decoded; skipping it");
                    }
                }
            }
            let high = st.paging.high;
            st.paging.resident_above.retain(|s| *s > high);
            if !progressed {
                if st.paging.outstanding.is_empty() {
                    // The store has nothing more above `high`: whatever the count said is gone
                    // (purged or expired elsewhere). Trust the store.
                    if st.paging.stored_only > 0 {
                        tracing::warn!(list = %self.name, missing = st.paging.stored_only, "paged-out message count did not match the store; resetting it");
                    }
                    st.paging.stored_only = 0;
                }
                break;
            }
        }
        if st.paging.active && st.paging.stored_only == 0 && st.paging.outstanding.is_empty() {
            st.paging.active = false;
            st.paging.resident_above.clear();
        }
    }

    /// Hands pending messages to consumers with room, in priority then arrival order,
    /// round-robin among consumers (only the first exclusive consumer, if there is one).
    fn dispatch(&self, st: &mut State, now_ms: u64, fx: &mut Effects) {
        // Paused, messages simply stay pending in order; `redispatch` resumes from the front.
        if st.consumers.is_empty() || st.closed || self.dispatch_paused.load(Ordering::SeqCst) {
            return;
        }
        self.page_in(st);
        if st.pending.is_empty() {
            return;
        }
        let exclusive = st.consumers.iter().position(|c| c.opts.exclusive);
        let local_consumers = st.consumers.iter().any(|c| c.opts.network.is_none());
        let first_priority = st.consumers[0].opts.priority;
        let uniform = st
            .consumers
            .iter()
            .all(|c| c.opts.priority == first_priority);
        let mut cursor: Option<(Reverse<u8>, u64)> = None;
        let mut skipped = 0usize;
        loop {
            let any_room = match exclusive {
                Some(i) => st.consumers[i].has_capacity(),
                None => st.consumers.iter().any(Slot::has_capacity),
            };
            if !any_room || skipped >= DISPATCH_SKIP_MAX {
                return;
            }
            let next = match cursor {
                None => st.pending.iter().next(),
                Some(k) => st
                    .pending
                    .range((Bound::Excluded(k), Bound::Unbounded))
                    .next(),
            };
            let Some((&key, entry)) = next else {
                // Out of resident messages: read the next page, if any, and go on from the
                // front (a page may hold higher priorities than what was skipped).
                let before = st.pending.len();
                self.page_in(st);
                if st.pending.len() == before {
                    return;
                }
                cursor = None;
                continue;
            };
            if st.undurable.contains(&key.1) {
                // Not confirmed by the store yet: neither it nor anything after it goes out
                // (keeps each producer's order); `mark_durable` dispatches again.
                return;
            }
            if entry.msg.is_expired(now_ms) {
                if let Some(e) = st.pending.remove(&key) {
                    self.kill(st, e, DeadCause::Expired, fx);
                }
                continue;
            }
            let n = st.consumers.len();
            let chosen = match exclusive {
                Some(i) => {
                    let c = &st.consumers[i];
                    (c.has_capacity()
                        && entry.pin_allows(c, now_ms)
                        && c.wants(&entry.msg, local_consumers))
                    .then_some(i)
                }
                None => {
                    let fits = |i: usize| {
                        let c = &st.consumers[i];
                        c.has_capacity()
                            && entry.pin_allows(c, now_ms)
                            && c.wants(&entry.msg, local_consumers)
                    };
                    let mut order = (0..n).map(|off| (st.rr + off) % n);
                    if uniform {
                        order.find(|&i| fits(i))
                    } else {
                        // The highest priority with room wins; the first in round-robin order
                        // among equals, so equals still share the load.
                        let mut best: Option<usize> = None;
                        for i in order.filter(|&i| fits(i)) {
                            let better = match best {
                                None => true,
                                Some(b) => {
                                    st.consumers[i].opts.priority > st.consumers[b].opts.priority
                                }
                            };
                            if better {
                                best = Some(i);
                            }
                        }
                        best
                    }
                }
            };
            let Some(i) = chosen else {
                cursor = Some(key);
                skipped += 1;
                continue;
            };
            let Some(mut e) = st.pending.remove(&key) else {
                return;
            };
            e.delivery_count = e.delivery_count.saturating_add(1);
            e.pin = None;
            let tag = self.tags.fetch_add(1, Ordering::Relaxed);
            let delivery = Delivery {
                consumer: st.consumers[i].id,
                tag,
                message: e.msg.clone(),
                redelivered: e.delivery_count > 1,
                delivery_count: e.delivery_count,
                source: self.this.clone(),
            };
            st.consumers[i].inflight.insert(tag, e);
            st.consumers[i].sink.deliver(delivery);
            st.stats.dispatched += 1;
            st.rr = (i + 1) % n;
        }
    }
}

/// Takes delivery `tag` back from `consumer` (not while a transaction holds its ack).
fn take_inflight(st: &mut State, consumer: ConsumerId, tag: u64) -> Result<Entry, BrokerError> {
    let slot = st
        .consumers
        .iter_mut()
        .find(|c| c.id == consumer)
        .ok_or_else(|| BrokerError::UnknownDelivery(format!("consumer {consumer}")))?;
    if slot.tx_acked.contains(&tag) {
        return Err(BrokerError::UnknownDelivery(tag.to_string()));
    }
    slot.inflight
        .remove(&tag)
        .ok_or_else(|| BrokerError::UnknownDelivery(tag.to_string()))
}
