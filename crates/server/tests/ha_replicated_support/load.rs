//! The load of the replicated fault tests: producers through ferromq-client's failover client
//! (receipted persistent sends, a window of receipts outstanding each, resends across
//! failovers), and consumers that record every MESSAGE frame as it came off the wire.
//!
//! Why the consumers do not use the failover client: its duplicate audit drops redeliveries
//! of messages the application acked, and it does not say which connection a message came on
//! nor confirm ACKs. A consumer here is a plain ferromq-client [`Client`] per connection that
//! moves to the next broker of the URI when its connection dies, records `deliver <id>
//! <message-id> <connection>` for every MESSAGE, and ACKs each one (client-individual) with a
//! receipt on the connection it came on, recording `acked` when the RECEIPT arrives. The
//! checker ([`super::check_wire_history`]) then sees every broker-level duplicate.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferromq_client::{
    AckMode, Client, ClientConfig, Command, FailoverClient, FailoverUri, Frame, Version,
};
use tokio::task::JoinSet;

use super::History;

/// A client config that notices a frozen broker within a couple of seconds.
pub fn quick_client() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.heart_beat.send_ms = 1000;
    c.heart_beat.recv_ms = 1000;
    c.receipt_timeout = Duration::from_secs(60);
    c
}

/// What [`LoadGen`] runs.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Producers, each one failover client.
    pub producers: usize,
    /// Receipted sends each producer keeps outstanding.
    pub window: usize,
    /// Consumers (client-individual, receipted ACKs).
    pub consumers: usize,
    /// Body size: the message's id, padded to this many bytes.
    pub msg_bytes: usize,
    pub destination: String,
    /// Sends per producer at most (`None`: until stopped).
    pub max_per_producer: Option<usize>,
    /// Pause after each send (zero: full speed).
    pub pace: Duration,
    /// Consume while producing; otherwise the consumers start at [`LoadGen::finish`] (the
    /// store then grows with every message: GiB-sized stores, full copies of them).
    pub consume_during: bool,
}

/// Producers and consumers running against a cluster, recording into a [`History`].
pub struct LoadGen {
    /// Send attempts.
    pub sent: Arc<AtomicUsize>,
    /// Receipts received for sends.
    pub confirmed: Arc<AtomicUsize>,
    /// Sends that failed (ERROR, or the client gave up): neither confirmed nor resent.
    pub failed: Arc<AtomicUsize>,
    /// Distinct messages (body ids) delivered.
    pub delivered: Arc<AtomicUsize>,
    /// MESSAGE frames received.
    pub frames: Arc<AtomicUsize>,
    /// ACKs whose receipt arrived.
    pub acks_confirmed: Arc<AtomicUsize>,
    /// Consumer connections made.
    pub connections: Arc<AtomicUsize>,
    /// The first few reasons sends failed, for the report.
    pub send_errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicUsize>,
    drain_quiet: Arc<Mutex<Duration>>,
    producers: Vec<tokio::task::JoinHandle<()>>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    /// Consumers not started yet (see [`LoadSpec::consume_during`]).
    waiting: Vec<Consumer>,
}

impl LoadGen {
    pub fn start(uri: &str, history: Arc<History>, spec: LoadSpec) -> LoadGen {
        LoadGen::start_split(uri, &[uri], history, spec)
    }

    /// [`LoadGen::start`] with the producers on `uri` and the consumers spread over
    /// `consume_uris` (consumer k on `consume_uris[k % len]`): a network of brokers moves the
    /// messages between them.
    pub fn start_split(
        uri: &str,
        consume_uris: &[&str],
        history: Arc<History>,
        spec: LoadSpec,
    ) -> LoadGen {
        let gen = LoadGen {
            sent: Arc::default(),
            confirmed: Arc::default(),
            failed: Arc::default(),
            delivered: Arc::default(),
            frames: Arc::default(),
            acks_confirmed: Arc::default(),
            connections: Arc::default(),
            send_errors: Arc::default(),
            stop: Arc::default(),
            produced: Arc::default(),
            drain_quiet: Arc::new(Mutex::new(Duration::from_secs(3))),
            producers: Vec::new(),
            consumers: Vec::new(),
            waiting: Vec::new(),
        };
        let addrs: Vec<Vec<String>> = consume_uris
            .iter()
            .map(|u| {
                FailoverUri::parse(u)
                    .expect("a failover URI")
                    .brokers
                    .iter()
                    .map(|b| b.addr.clone())
                    .collect()
            })
            .collect();
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let mut gen = gen;
        for k in 0..spec.producers {
            let p = Producer {
                k,
                uri: uri.to_string(),
                spec: spec.clone(),
                history: history.clone(),
                sent: gen.sent.clone(),
                confirmed: gen.confirmed.clone(),
                failed: gen.failed.clone(),
                errors: gen.send_errors.clone(),
                stop: gen.stop.clone(),
                produced: gen.produced.clone(),
            };
            gen.producers.push(tokio::spawn(p.run()));
        }
        for k in 0..spec.consumers {
            let c = Consumer {
                name: format!("c{k}"),
                addrs: addrs[k % addrs.len()].clone(),
                destination: spec.destination.clone(),
                history: history.clone(),
                seen: seen.clone(),
                delivered: gen.delivered.clone(),
                frames: gen.frames.clone(),
                acks_confirmed: gen.acks_confirmed.clone(),
                connections: gen.connections.clone(),
                confirmed: gen.confirmed.clone(),
                produced: gen.produced.clone(),
                producers: spec.producers,
                drain_quiet: gen.drain_quiet.clone(),
            };
            if spec.consume_during {
                gen.consumers.push(tokio::spawn(c.run()));
            } else {
                gen.waiting.push(c);
            }
        }
        gen
    }

    /// Waits (bounded) until at least `n` sends were confirmed.
    pub async fn wait_confirmed(&self, n: usize, timeout: Duration) -> bool {
        wait_count(&self.confirmed, n, timeout).await
    }

    /// Stops (or lets finish) the producers, then waits until the consumers have every
    /// confirmed message and nothing more came for `quiet` (so that late redeliveries show).
    /// Panics if that takes longer than `timeout`.
    pub async fn finish(self, stop_producing: bool, quiet: Duration, timeout: Duration) {
        if stop_producing {
            self.stop.store(true, Ordering::SeqCst);
        }
        *self.drain_quiet.lock().unwrap() = quiet;
        let deadline = Instant::now() + timeout;
        let mut consumers = self.consumers;
        consumers.extend(self.waiting.into_iter().map(|c| tokio::spawn(c.run())));
        for p in self.producers {
            tokio::time::timeout_at(deadline.into(), p)
                .await
                .expect("producer stuck")
                .unwrap();
        }
        for c in consumers {
            tokio::time::timeout_at(deadline.into(), c)
                .await
                .expect("consumer stuck")
                .unwrap();
        }
    }
}

async fn wait_count(counter: &AtomicUsize, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if counter.load(Ordering::SeqCst) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// The body of message `id`: the id, then a space and filler up to `bytes`.
fn body(id: &str, bytes: usize) -> String {
    let mut b = String::with_capacity(bytes.max(id.len()));
    b.push_str(id);
    if bytes > id.len() {
        b.push(' ');
        while b.len() < bytes {
            b.push('x');
        }
    }
    b
}

/// A send's body id and outcome (why it failed).
type Sent = (String, Result<(), String>);

struct Producer {
    k: usize,
    uri: String,
    spec: LoadSpec,
    history: Arc<History>,
    sent: Arc<AtomicUsize>,
    confirmed: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    /// Producers done.
    produced: Arc<AtomicUsize>,
}

impl Producer {
    async fn run(self) {
        let p = FailoverClient::connect(&self.uri, quick_client())
            .await
            .unwrap();
        let mut inflight: JoinSet<Sent> = JoinSet::new();
        let max = self.spec.max_per_producer.unwrap_or(usize::MAX);
        let mut i = 0;
        while i < max && !self.stop.load(Ordering::SeqCst) {
            while inflight.len() >= self.spec.window.max(1) {
                self.settle(inflight.join_next().await);
            }
            let id = format!("p{}-{i}", self.k);
            i += 1;
            self.history.record("send", &id);
            self.sent.fetch_add(1, Ordering::SeqCst);
            let handle = tokio::time::timeout(
                Duration::from_secs(120),
                p.send_receipt_handle(
                    &self.spec.destination,
                    body(&id, self.spec.msg_bytes),
                    &[("persistent", "true")],
                ),
            )
            .await;
            match handle {
                Ok(Ok(r)) => {
                    inflight.spawn(async move {
                        let r = match tokio::time::timeout(Duration::from_secs(180), r.wait()).await
                        {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(format!("receipt wait: {e}")),
                            Err(_) => Err("receipt wait: none within 180 s".to_string()),
                        };
                        (id, r)
                    });
                }
                // Not resent under another producer sequence: the broker could not tell the
                // copy from a new message. Unconfirmed: delivered or not, both are allowed.
                Ok(Err(e)) => self.failed(format!("send: {e}")),
                Err(_) => self.failed("could not queue the send within 120 s".into()),
            }
            if !self.spec.pace.is_zero() {
                tokio::time::sleep(self.spec.pace).await;
            }
        }
        while let Some(r) = inflight.join_next().await {
            self.settle(Some(r));
        }
        self.produced.fetch_add(1, Ordering::SeqCst);
        let _ = p.disconnect().await;
    }

    fn settle(&self, r: Option<Result<Sent, tokio::task::JoinError>>) {
        match r {
            Some(Ok((id, Ok(())))) => {
                self.history.record("confirm", &id);
                self.confirmed.fetch_add(1, Ordering::SeqCst);
            }
            Some(Ok((_, Err(e)))) => self.failed(e),
            Some(Err(e)) => self.failed(e.to_string()),
            None => {}
        }
    }

    fn failed(&self, why: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 5 {
            errors.push(why);
        }
    }
}

struct Consumer {
    name: String,
    addrs: Vec<String>,
    destination: String,
    history: Arc<History>,
    seen: Arc<Mutex<HashSet<String>>>,
    delivered: Arc<AtomicUsize>,
    frames: Arc<AtomicUsize>,
    acks_confirmed: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    confirmed: Arc<AtomicUsize>,
    produced: Arc<AtomicUsize>,
    producers: usize,
    drain_quiet: Arc<Mutex<Duration>>,
}

/// Receipted ACKs a consumer keeps in flight.
const ACKS_INFLIGHT_MAX: usize = 512;

impl Consumer {
    /// True once every producer is done, every confirmed message was delivered and nothing
    /// arrived for the drain's quiet spell.
    fn drained(&self, idle_since: Instant) -> bool {
        self.produced.load(Ordering::SeqCst) >= self.producers
            && self.delivered.load(Ordering::SeqCst) >= self.confirmed.load(Ordering::SeqCst)
            && idle_since.elapsed() >= *self.drain_quiet.lock().unwrap()
    }

    async fn connect(&self, next: &mut usize) -> Client {
        loop {
            for _ in 0..self.addrs.len() {
                let addr = &self.addrs[*next % self.addrs.len()];
                let c = tokio::time::timeout(
                    Duration::from_secs(3),
                    Client::connect(addr, quick_client()),
                )
                .await;
                if let Ok(Ok(c)) = c {
                    return c;
                }
                *next += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run(self) {
        let mut next = 0usize;
        let mut n_conn = 0usize;
        let mut idle_since = Instant::now();
        let acks = Arc::new(tokio::sync::Semaphore::new(ACKS_INFLIGHT_MAX));
        'connections: loop {
            let c = self.connect(&mut next).await;
            n_conn += 1;
            self.connections.fetch_add(1, Ordering::SeqCst);
            let conn = format!("{}.{n_conn}", self.name);
            let sub = c
                .subscribe(
                    &self.destination,
                    AckMode::ClientIndividual,
                    &[("id", "load")],
                )
                .await;
            let Ok(mut sub) = sub else {
                continue;
            };
            loop {
                let Some(m) = sub.next_timeout(Duration::from_millis(250)).await else {
                    if self.drained(idle_since) {
                        break 'connections;
                    }
                    if c.is_closed() {
                        // The broker went (or stepped down): find the master again.
                        continue 'connections;
                    }
                    continue;
                };
                idle_since = Instant::now();
                self.frames.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(m.body());
                let id = text.split(' ').next().unwrap_or("").to_string();
                let mid = m.message_id().unwrap_or("-").to_string();
                self.history.record_fields("deliver", &[&id, &mid, &conn]);
                if self.seen.lock().unwrap().insert(id) {
                    self.delivered.fetch_add(1, Ordering::SeqCst);
                }
                let Some(frame) = ack_frame(&c, &m) else {
                    continue;
                };
                let permit = acks.clone().acquire_owned().await.unwrap();
                let (c2, h, acked, conn) = (
                    c.clone(),
                    self.history.clone(),
                    self.acks_confirmed.clone(),
                    conn.clone(),
                );
                tokio::spawn(async move {
                    // An ACK lost with its connection is fine: the message comes again.
                    if c2.request(frame).await.is_ok() {
                        h.record_fields("acked", &[&mid, &conn]);
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    drop(permit);
                });
            }
        }
        // Outstanding ACK receipts land before the history is judged.
        let _ = acks.acquire_many(ACKS_INFLIGHT_MAX as u32).await;
    }
}

/// The ACK of `m` in the negotiated version's shape (the `receipt` header is added by
/// [`Client::request`]).
fn ack_frame(c: &Client, m: &ferromq_client::ReceivedMessage) -> Option<Frame> {
    let mut f = Frame::new(Command::Ack);
    match c.version() {
        Version::V1_2 => f.push_header("id", m.ack_id()?),
        _ => {
            f.push_header("message-id", m.message_id()?);
            f.push_header("subscription", m.subscription()?);
        }
    }
    Some(f)
}
