//! Test harness shared by the broker's integration tests: a broker on a `MemoryStore` with an
//! injected clock, a collecting delivery sink, and message builders.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ferromq_broker::{
    AckMode, Broker, BrokerConfig, Clock, ConsumerHandle, ConsumerOptions, Delivery, DeliverySink,
    Destination, DurableName, ListSnapshot, Message, Selector, DEFAULT_PRIORITY,
};
use ferromq_store::{
    Batch, Completer, Completion, MemoryStore, MessageStore, Recovery, StoreError, StoredMessage,
};

/// The fixed start of test time (ms since the epoch).
pub const T0_MS: u64 = 1_700_000_000_000;

/// Collects deliveries in arrival order.
#[derive(Debug, Default)]
pub struct Collector(Mutex<Vec<Delivery>>);

impl DeliverySink for Collector {
    fn deliver(&self, delivery: Delivery) {
        self.0.lock().unwrap().push(delivery);
    }
}

impl Collector {
    /// A new, empty collector behind an `Arc` (as `subscribe` wants it).
    pub fn new() -> Arc<Collector> {
        Arc::new(Collector::default())
    }

    /// Removes and returns everything delivered so far.
    pub fn take(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The bodies delivered so far (without removing them).
    pub fn bodies(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(body).collect()
    }

    /// How many deliveries are held.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// The body of a delivery as text.
pub fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.body.to_vec()).unwrap()
}

/// The bodies of a list of deliveries.
pub fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(body).collect()
}

/// A broker, its store and its clock.
pub struct Fixture {
    pub broker: Arc<Broker>,
    pub store: Arc<MemoryStore>,
    pub now_ms: Arc<AtomicU64>,
    pub cfg: BrokerConfig,
}

impl Fixture {
    /// A broker with the default configuration.
    pub fn new() -> Fixture {
        Fixture::with_config(BrokerConfig::default())
    }

    /// A broker with `cfg`, on a fresh store, at time [`T0_MS`].
    pub fn with_config(cfg: BrokerConfig) -> Fixture {
        let store = Arc::new(MemoryStore::new());
        let now_ms = Arc::new(AtomicU64::new(T0_MS));
        let broker = Broker::open(cfg.clone(), store.clone(), clock(&now_ms)).unwrap();
        Fixture {
            broker,
            store,
            now_ms,
            cfg,
        }
    }

    /// Simulates a broker restart on the same store: the old broker is dropped, the store closed
    /// and reopened, and a new broker recovers from it. The clock moves on so message ids differ.
    pub fn restart(self) -> Fixture {
        let Fixture {
            broker,
            store,
            now_ms,
            cfg,
        } = self;
        store.close().unwrap();
        drop(broker);
        store.reopen();
        now_ms.fetch_add(1_000, Ordering::SeqCst);
        let broker = Broker::open(cfg.clone(), store.clone(), clock(&now_ms)).unwrap();
        Fixture {
            broker,
            store,
            now_ms,
            cfg,
        }
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The current test time.
    pub fn now(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    /// A non-persistent message with default priority and no expiry.
    pub fn msg(&self, dest: &Destination, body: &str) -> Message {
        Message {
            id: self.broker.next_message_id(),
            destination: dest.clone(),
            headers: Vec::new(),
            body: Bytes::from(body.to_string()),
            persistent: false,
            priority: DEFAULT_PRIORITY,
            timestamp_ms: self.now(),
            expires_ms: 0,
            producer_connection: 0,
            wire: Default::default(),
        }
    }

    /// A persistent message.
    pub fn pmsg(&self, dest: &Destination, body: &str) -> Message {
        Message {
            persistent: true,
            ..self.msg(dest, body)
        }
    }

    /// Sends and waits for the store to confirm.
    pub async fn send(&self, m: Message) {
        self.broker.send(m).await.unwrap().await.unwrap();
    }

    /// Sends a non-persistent message with this body.
    pub async fn send_body(&self, dest: &Destination, body: &str) {
        self.send(self.msg(dest, body)).await;
    }

    /// Subscribes a fresh collector (non-durable).
    pub fn subscribe(
        &self,
        dest: &Destination,
        opts: ConsumerOptions,
    ) -> (ConsumerHandle, Arc<Collector>) {
        let sink = Collector::new();
        let (h, c) = self
            .broker
            .subscribe(dest, opts, None, sink.clone())
            .unwrap();
        c.wait_blocking().unwrap();
        (h, sink)
    }

    /// Subscribes a fresh collector to a durable subscription.
    pub fn subscribe_durable(
        &self,
        topic: &Destination,
        name: &DurableName,
        opts: ConsumerOptions,
    ) -> (ConsumerHandle, Arc<Collector>) {
        let sink = Collector::new();
        let (h, c) = self
            .broker
            .subscribe(topic, opts, Some(name.clone()), sink.clone())
            .unwrap();
        c.wait_blocking().unwrap();
        (h, sink)
    }

    /// The snapshot of one list, by name.
    pub fn list(&self, name: &str) -> ListSnapshot {
        self.broker
            .snapshot()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no list named {name}"))
    }

    /// The bodies the store holds for a list, in sequence order.
    pub fn stored_bodies(&self, list: &str) -> Vec<String> {
        self.store
            .load(list, None, 10_000)
            .unwrap()
            .iter()
            .map(|m| {
                let msg = Message::decode(&m.payload).unwrap();
                String::from_utf8(msg.body.to_vec()).unwrap()
            })
            .collect()
    }

    /// The decoded messages the store holds for a list.
    pub fn stored_messages(&self, list: &str) -> Vec<Message> {
        self.store
            .load(list, None, 10_000)
            .unwrap()
            .iter()
            .map(|m| Message::decode(&m.payload).unwrap())
            .collect()
    }

    /// The lists the store reports at recovery, with their message counts.
    pub fn stored_lists(&self) -> Vec<(String, u64)> {
        self.store
            .recover()
            .unwrap()
            .lists
            .into_iter()
            .map(|l| (l.list, l.count))
            .collect()
    }
}

/// A clock reading `now_ms`.
pub fn clock(now_ms: &Arc<AtomicU64>) -> Clock {
    let now_ms = now_ms.clone();
    Arc::new(move || now_ms.load(Ordering::SeqCst))
}

/// Consumer options with an ack mode and a prefetch.
pub fn opts(ack_mode: AckMode, prefetch: u32) -> ConsumerOptions {
    ConsumerOptions {
        ack_mode,
        prefetch,
        ..ConsumerOptions::default()
    }
}

/// Client-individual options with this prefetch.
pub fn individual(prefetch: u32) -> ConsumerOptions {
    opts(AckMode::ClientIndividual, prefetch)
}

/// Options with a selector.
pub fn with_selector(mut o: ConsumerOptions, selector: &str) -> ConsumerOptions {
    o.selector = Some(Arc::new(Selector::parse(selector).unwrap()));
    o
}

/// A durable subscription name.
pub fn durable(client_id: &str, name: &str) -> DurableName {
    DurableName {
        client_id: client_id.to_string(),
        name: name.to_string(),
    }
}

/// A header value of a delivery's message.
pub fn header<'a>(d: &'a Delivery, name: &str) -> Option<&'a str> {
    d.message.header(name)
}

/// A store whose writes complete only when the test says so, one submitted batch at a time in
/// submission order. A batch reaches the inner memory store only when released with `Ok`, so a
/// failed write leaves nothing behind, as a real store's failed batch does (and unlike a real
/// store, later batches may still succeed: the broker must not rely on the store dying).
#[derive(Debug, Default)]
pub struct HeldStore {
    inner: MemoryStore,
    held: Mutex<VecDeque<(Batch, Completer)>>,
}

impl HeldStore {
    /// How many submitted batches wait for their outcome.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Completes the oldest held batch with `result` (applying it first when `Ok`).
    pub fn release_next(&self, result: Result<(), StoreError>) {
        self.release_nth(0, result)
    }

    /// Completes the held batch at `index` (0 = oldest) with `result`, out of order.
    pub fn release_nth(&self, index: usize, result: Result<(), StoreError>) {
        let (batch, completer) = self
            .held
            .lock()
            .unwrap()
            .remove(index)
            .expect("no held batch at that index");
        if result.is_ok() {
            self.inner.submit(batch).wait_blocking().unwrap();
        }
        completer.complete(result);
    }

    /// Releases every held batch with `Ok`.
    pub fn release_all(&self) {
        while self.held() > 0 {
            self.release_next(Ok(()));
        }
    }

    /// The bodies the store holds (durably) for a list, in sequence order.
    pub fn stored_bodies(&self, list: &str) -> Vec<String> {
        self.inner
            .load(list, None, 10_000)
            .unwrap()
            .iter()
            .map(|m| {
                let msg = Message::decode(&m.payload).unwrap();
                String::from_utf8(msg.body.to_vec()).unwrap()
            })
            .collect()
    }
}

impl MessageStore for HeldStore {
    fn kind(&self) -> &'static str {
        "held"
    }
    fn submit(&self, batch: Batch) -> Completion {
        let (completer, completion) = Completion::pair();
        self.held.lock().unwrap().push_back((batch, completer));
        completion
    }
    fn recover(&self) -> Result<Recovery, StoreError> {
        self.inner.recover()
    }
    fn load(&self, l: &str, a: Option<u64>, m: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.load(l, a, m)
    }
    fn usage_bytes(&self) -> u64 {
        self.inner.usage_bytes()
    }
    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}

/// A broker on a [`HeldStore`], at time [`T0_MS`].
pub fn held_broker(cfg: BrokerConfig) -> (Arc<Broker>, Arc<HeldStore>) {
    let store = Arc::new(HeldStore::default());
    let now_ms = Arc::new(AtomicU64::new(T0_MS));
    let broker = Broker::open(cfg, store.clone(), clock(&now_ms)).unwrap();
    (broker, store)
}

/// A persistent message from `broker`'s id sequence.
pub fn persistent(broker: &Broker, dest: &Destination, body: &str) -> Message {
    Message {
        id: broker.next_message_id(),
        destination: dest.clone(),
        headers: Vec::new(),
        body: Bytes::from(body.to_string()),
        persistent: true,
        priority: DEFAULT_PRIORITY,
        timestamp_ms: T0_MS,
        expires_ms: 0,
        producer_connection: 1,
        wire: Default::default(),
    }
}

/// Polls a completion once, without waiting: `true` if it has already resolved. Only meaningful
/// where nothing can resolve it meanwhile (its store write is held by a [`HeldStore`]).
pub fn resolved_now(c: &mut Completion) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(c).poll(&mut cx), Poll::Ready(_))
}

/// Lets spawned confirmation tasks run (they need no I/O, only turns of the runtime).
pub async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}
