//! One network bridge: forwards messages from this broker to one remote broker (or to whichever
//! member of an HA group is master, for `masterslave:`) where the remote has consumers.
//!
//! A bridge is a STOMP client of the remote broker. Per connection it
//! 1. subscribes to the remote's demand feed ([`super::demand`]) and learns the remote's name
//!    from the first snapshot;
//! 2. for every destination with remote demand that passes the connector's filters and
//!    `consumer_ttl` (and for every statically included destination), attaches a **network
//!    consumer** here: lower priority than local consumers, prefetch `prefetch_size`, and a
//!    [`NetworkRoute`] that keeps from it every message it must not forward (loops,
//!    `message_ttl`), so that nothing it takes has to be dropped;
//! 3. sends what those consumers receive to the remote with a receipt, the broker path
//!    extended and `_AMQ_DUPL_ID` set to this broker's message id, and acknowledges a message
//!    here only once its RECEIPT came — the remote confirms a persistent message only once it
//!    is stored. Sends are pipelined (up to the prefetch in flight); receipts are awaited in
//!    order by a separate task.
//!
//! When the connection ends, every network consumer is detached, so whatever was in flight
//! returns to its queue — kept there for this remote alone for `in_flight_pin_ms` — and is
//! sent again on the next connection (to the remote's new master, after a failover); the
//! remote's duplicate detection drops the copies it already stored (it remembers the id with
//! the message, persistently), so a bridge, broker or master that dies mid-forward loses
//! nothing and the resend creates no duplicate. When the remote's demand for a destination
//! goes while the connection stays, its network consumer is quiesced and detached only once
//! the remote confirmed everything it held.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_broker::{
    extended_path, wildcard_matches, AckMode, Broker, ConsumerHandle, ConsumerOptions, Delivery,
    DeliverySink, Demand, Destination, DestinationKind, Message, NetworkRoute, BROKER_PATH_HEADER,
    DEFAULT_PRIORITY, DUPLICATE_ID_HEADER, MAX_PRIORITY, NETWORK_CONSUMER_PRIORITY_BASE,
};
use ferromq_client::{
    Client, ClientConfig, ClientError, HeartBeat, ReceiptHandle, ReceivedMessage,
};
use tokio::sync::{mpsc, watch};

use super::config::NetworkConnectorConfig;
use super::demand::{self, BROKER_NAME_HEADER, DEMAND_DESTINATION};

/// Extra hops a queue message may make, beyond `message_ttl`, when no local consumer is left
/// for it (see [`NetworkRoute::max_replays`]).
pub const DEFAULT_MAX_REPLAYS: u32 = 3;

/// How often a bridge checks whether its retiring network consumers are drained.
const RETIRE_CHECK: Duration = Duration::from_millis(50);

/// A bridge's counters, shown by `ferromq status`.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Messages sent to the remote and confirmed by it.
    pub forwarded: AtomicU64,
    /// Connections made.
    pub connects: AtomicU64,
    /// Network consumers attached now.
    pub consumers: AtomicU64,
    /// Duplex: messages pulled from the remote and stored here.
    pub pulled: AtomicU64,
    /// Whether a connection is up now.
    pub connected: std::sync::atomic::AtomicBool,
    /// The remote broker's name, once learned.
    pub remote: parking_lot::Mutex<String>,
}

/// What a bridge needs.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// The connector it belongs to.
    pub connector: NetworkConnectorConfig,
    /// `host:port` to try in order (one for `static:`, the group for `masterslave:`).
    pub addrs: Vec<String>,
    /// This broker's name (`broker.name`), the hop it adds to the broker path.
    pub local_name: String,
}

/// Why a bridge's connection ended.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The STOMP connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The remote broke the demand protocol.
    #[error("remote broker sent a bad demand snapshot: {0}")]
    Demand(String),
    /// The remote closed the demand feed.
    #[error("remote broker closed the connection")]
    Closed,
    /// A message pulled from the remote (duplex) could not be stored here.
    #[error("cannot store a message pulled from the remote broker: {0}")]
    Store(String),
}

struct Sink(mpsc::UnboundedSender<Delivery>);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BridgeSink")
    }
}

impl DeliverySink for Sink {
    fn deliver(&self, delivery: Delivery) {
        // A closed channel means the connection is being torn down; detaching the consumer
        // returns the message to its queue.
        let _ = self.0.send(delivery);
    }
}

/// Runs a bridge until `shutdown` flips: connects, serves, reconnects with the connector's
/// back-off.
pub async fn run(
    broker: Arc<Broker>,
    spec: BridgeSpec,
    stats: Arc<BridgeStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let c = &spec.connector;
    let initial = Duration::from_millis(c.initial_reconnect_delay_ms);
    let max = Duration::from_millis(c.max_reconnect_delay_ms);
    let mut delay = initial;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut connected = None;
        let config = match client_config(c) {
            Ok(config) => config,
            Err(e) => {
                // Checked at start; a CA file removed since then ends up here.
                tracing::warn!(bridge = %c.name, error = %e, "cannot set up TLS for the bridge");
                tokio::select! {
                    _ = tokio::time::sleep(max) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        for addr in &spec.addrs {
            // `ssl://host:port` as given; plain `host:port` (or a discovered `tcp://…`).
            let url = if addr.contains("://") {
                addr.clone()
            } else {
                format!("tcp://{addr}")
            };
            match Client::connect(&url, config.clone()).await {
                Ok(client) => {
                    connected = Some((addr.clone(), client));
                    break;
                }
                Err(e) => tracing::debug!(bridge = %c.name, %addr, error = %e, "cannot connect"),
            }
        }
        if let Some((addr, client)) = connected {
            stats.connects.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let mut conn = Connection::new(&broker, &spec, stats.clone());
            let result = conn.serve(&client, &mut shutdown).await;
            conn.teardown();
            drop(client);
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(bridge = %c.name, %addr, error = %e, "network bridge down; reconnecting")
                }
            }
            // A connection that lived a while starts the back-off afresh.
            if started.elapsed() > max {
                delay = initial;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        if c.use_exponential_back_off {
            delay = delay.mul_f64(c.back_off_multiplier).min(max);
        }
    }
}

/// How a bridge connects: its login at the remote (`user_name`, `password`) and TLS for
/// `ssl://` addresses (`tls_ca`, `tls_cert`, `tls_key`).
fn client_config(c: &super::NetworkConnectorConfig) -> Result<ClientConfig, String> {
    Ok(ClientConfig {
        login: (!c.user_name.is_empty()).then(|| c.user_name.clone()),
        passcode: (!c.user_name.is_empty()).then(|| c.password.0.clone()),
        tls: c.tls_client_config()?,
        // Heart-beats both ways: a peer that vanishes without a FIN (power cut, partition) is
        // noticed within seconds and its in-flight messages return to their queues.
        heart_beat: HeartBeat {
            send_ms: 1000,
            recv_ms: 1000,
        },
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
}

/// One connection's state.
struct Connection<'a> {
    broker: &'a Arc<Broker>,
    spec: &'a BridgeSpec,
    stats: Arc<BridgeStats>,
    remote: Option<String>,
    consumers: BTreeMap<Destination, ConsumerHandle>,
    /// Network consumers whose remote demand went, quiesced until what they hold is
    /// confirmed by the remote.
    retiring: Vec<ConsumerHandle>,
    deliveries_tx: mpsc::UnboundedSender<Delivery>,
    deliveries_rx: Option<mpsc::UnboundedReceiver<Delivery>>,
    connection_id: u64,
    /// Duplex: the subscriptions on the remote that pull messages here, by destination (the
    /// task reading each; aborting it drops the subscription, which unsubscribes).
    pulls: BTreeMap<Destination, tokio::task::AbortHandle>,
}

impl<'a> Connection<'a> {
    fn new(broker: &'a Arc<Broker>, spec: &'a BridgeSpec, stats: Arc<BridgeStats>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Connection {
            broker,
            spec,
            stats,
            remote: None,
            consumers: BTreeMap::new(),
            retiring: Vec::new(),
            deliveries_tx: tx,
            deliveries_rx: Some(rx),
            connection_id: broker.next_connection_id(),
            pulls: BTreeMap::new(),
        }
    }

    async fn serve(
        &mut self,
        client: &Client,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), BridgeError> {
        let name = &self.spec.connector.name;
        let mut feed = client
            .subscribe(DEMAND_DESTINATION, ferromq_client::AckMode::Auto, &[])
            .await?;
        let Some(mut deliveries) = self.deliveries_rx.take() else {
            return Err(BridgeError::Closed);
        };
        // Receipts are awaited in send order by their own task, so that sending never waits
        // for the disk of the remote; a failed receipt ends the connection.
        let (pending_tx, mut pending_rx) = mpsc::unbounded_channel::<(Delivery, ReceiptHandle)>();
        let broker = self.broker.clone();
        let stats = self.stats.clone();
        let mut acker = tokio::spawn(async move {
            while let Some((delivery, receipt)) = pending_rx.recv().await {
                receipt.wait().await?;
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                // The remote holds it now; removing it here may complete later: if this
                // broker dies first, the message is sent again and the remote drops the copy.
                drop(broker.ack_delivery(&delivery));
            }
            Ok::<(), ClientError>(())
        });
        // Duplex: messages pulled from the remote are stored here, then acknowledged there
        // once durable — in order, by their own task, like the receipts above.
        let duplex = self.spec.connector.duplex;
        let (pull_tx, mut pull_rx) = mpsc::unbounded_channel::<ReceivedMessage>();
        let (stored_tx, mut stored_rx) =
            mpsc::unbounded_channel::<(ferromq_store::Completion, ReceivedMessage)>();
        let ack_client = client.clone();
        let pulled_stats = self.stats.clone();
        let mut store_acker = tokio::spawn(async move {
            while let Some((stored, m)) = stored_rx.recv().await {
                stored
                    .await
                    .map_err(|e| BridgeError::Store(e.to_string()))?;
                ack_client.ack(&m, None).await?;
                pulled_stats.pulled.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), BridgeError>(())
        });
        let mut local_changes = self.broker.watch_demand();
        let mut retire_tick = tokio::time::interval(RETIRE_CHECK);
        retire_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = shutdown.changed() => break Ok(()),
                _ = retire_tick.tick(), if !self.retiring.is_empty() => self.retire_drained(),
                _ = local_changes.changed(), if duplex && self.remote.is_some() => {
                    if let Err(e) = self.reconcile_pull(client, &pull_tx).await {
                        break Err(e);
                    }
                }
                m = pull_rx.recv(), if duplex => {
                    let Some(m) = m else { break Err(BridgeError::Closed) };
                    match self.store_pulled(&m).await {
                        Ok(stored) => {
                            let _ = stored_tx.send((stored, m));
                        }
                        Err(e) => break Err(e),
                    }
                }
                r = &mut store_acker, if duplex => {
                    break match r {
                        Ok(Ok(())) => Err(BridgeError::Closed),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(BridgeError::Closed),
                    };
                }
                m = feed.next() => {
                    let Some(m) = m else { break Err(BridgeError::Closed) };
                    let Some(remote) = m.header(BROKER_NAME_HEADER) else {
                        break Err(BridgeError::Demand("no broker-name header".into()));
                    };
                    if remote == self.spec.local_name {
                        break Err(BridgeError::Demand(format!(
                            "the remote broker has this broker's name {remote:?}; a broker cannot bridge to itself"
                        )));
                    }
                    let first = self.remote.is_none();
                    if first {
                        tracing::info!(bridge = %name, remote, duplex, "network bridge established");
                    }
                    self.remote = Some(remote.to_string());
                    if first {
                        *self.stats.remote.lock() = remote.to_string();
                        self.stats.connected.store(true, Ordering::Relaxed);
                    }
                    match demand::decode(m.body()) {
                        Ok(d) => self.reconcile(&d),
                        Err(e) => break Err(BridgeError::Demand(e)),
                    }
                    if first && duplex {
                        if let Err(e) = self.reconcile_pull(client, &pull_tx).await {
                            break Err(e);
                        }
                    }
                }
                d = deliveries.recv() => {
                    let Some(d) = d else { break Err(BridgeError::Closed) };
                    match self.forward(client, &d).await {
                        Ok(Some(receipt)) => {
                            let _ = pending_tx.send((d, receipt));
                        }
                        Ok(None) => drop(self.broker.ack_delivery(&d)),
                        Err(e) => break Err(e.into()),
                    }
                }
                r = &mut acker => {
                    break match r {
                        Ok(Ok(())) => Err(BridgeError::Closed),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err(BridgeError::Closed),
                    };
                }
            }
        };
        acker.abort();
        store_acker.abort();
        self.stats.connected.store(false, Ordering::Relaxed);
        result
    }

    /// Sends one delivery on; `None` when it is not to be forwarded (a topic message on an
    /// excluded destination matched through a wildcard demand) and may be acknowledged here.
    async fn forward(
        &self,
        client: &Client,
        d: &Delivery,
    ) -> Result<Option<ReceiptHandle>, ClientError> {
        let msg = &d.message;
        if self.excluded(&msg.destination) {
            return Ok(None);
        }
        let dest = match msg.destination.kind {
            DestinationKind::Queue => format!("/queue/{}", msg.destination.name),
            DestinationKind::Topic => format!("/topic/{}", msg.destination.name),
            // Never attached to temporary destinations.
            DestinationKind::TempQueue | DestinationKind::TempTopic => return Ok(None),
        };
        let path = extended_path(msg, &self.spec.local_name);
        let priority = msg.priority.to_string();
        let expires = msg.expires_ms.to_string();
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(msg.headers.len() + 5);
        headers.push(("persistent", if msg.persistent { "true" } else { "false" }));
        headers.push(("priority", &priority));
        if msg.expires_ms != 0 {
            headers.push(("expires", &expires));
        }
        headers.push((BROKER_PATH_HEADER, &path));
        // This broker's message id is unique and survives its restarts and failovers (it is
        // stored with the message), so a resend after any failure carries the same id.
        headers.push((DUPLICATE_ID_HEADER, &msg.id));
        for (n, v) in &msg.headers {
            if n != BROKER_PATH_HEADER && n != DUPLICATE_ID_HEADER {
                headers.push((n, v));
            }
        }
        client
            .send_receipt_handle(&dest, msg.body.clone(), &headers)
            .await
            .map(Some)
    }

    /// Attaches and detaches network consumers to match the remote's demand.
    fn reconcile(&mut self, remote_demand: &[Demand]) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let want = self.wanted(&remote, &self.spec.local_name, remote_demand);
        let gone: Vec<Destination> = self
            .consumers
            .keys()
            .filter(|d| !want.contains_key(*d))
            .cloned()
            .collect();
        for dest in gone {
            if let Some(h) = self.consumers.remove(&dest) {
                tracing::debug!(bridge = %self.spec.connector.name, %dest, "remote demand gone");
                // What it holds may be on its way: it is detached once the remote confirmed it
                // (see `retire_drained`), so that nothing comes back here to go out again.
                self.broker.quiesce(&h);
                self.retiring.push(h);
            }
        }
        for (dest, path) in want {
            if self.consumers.contains_key(&dest) {
                continue;
            }
            let c = &self.spec.connector;
            let priority = self.priority(&path);
            let route = self.route(&remote, path);
            let opts = ConsumerOptions {
                ack_mode: AckMode::ClientIndividual,
                prefetch: c.prefetch_size.max(1),
                connection: self.connection_id,
                priority,
                network: Some(Arc::new(route)),
                ..ConsumerOptions::default()
            };
            let sink = Arc::new(Sink(self.deliveries_tx.clone()));
            match self.broker.subscribe(&dest, opts, None, sink) {
                Ok((h, _)) => {
                    tracing::debug!(bridge = %c.name, %dest, "network consumer attached");
                    self.consumers.insert(dest, h);
                }
                Err(e) => {
                    tracing::warn!(bridge = %c.name, %dest, error = %e, "cannot attach a network consumer")
                }
            }
        }
        self.stats
            .consumers
            .store(self.consumers.len() as u64, Ordering::Relaxed);
    }

    /// Destination → demand path (`from` first) of every destination that `to` should forward
    /// to `from`, given `from`'s demand: this broker to the remote (`from` = remote) or, for
    /// duplex, the remote to this broker (`from` = this broker).
    fn wanted(
        &self,
        from: &str,
        to: &str,
        demand: &[Demand],
    ) -> BTreeMap<Destination, Vec<String>> {
        let c = &self.spec.connector;
        let consumer_ttl = ttl(c.effective_consumer_ttl());
        let mut want: BTreeMap<Destination, Vec<String>> = BTreeMap::new();
        if !c.static_bridge {
            for d in demand {
                let mut path = Vec::with_capacity(d.path.len() + 1);
                path.push(from.to_string());
                path.extend(d.path.iter().cloned());
                let hops = u32::try_from(path.len()).unwrap_or(u32::MAX);
                if path.iter().any(|b| b == to) || hops > consumer_ttl {
                    continue;
                }
                let dest = &d.destination;
                // A queue wildcard consumer pulls from many queues; the bridge cannot attach
                // to "every queue matching" (ActiveMQ neither, without virtual destinations).
                if dest.kind == DestinationKind::Queue && dest.is_wildcard() {
                    continue;
                }
                if self.excluded(dest) || !self.dynamically_included(dest) {
                    continue;
                }
                if c.suppress_duplicate_queue_subscriptions
                    && dest.kind == DestinationKind::Queue
                    && path.len() > 1
                {
                    continue;
                }
                // Conduit: one network consumer per destination, on the shortest route.
                match want.get(dest) {
                    Some(p) if p.len() <= path.len() => {}
                    _ => {
                        want.insert(dest.clone(), path);
                    }
                }
            }
        }
        for s in &c.statically_included_destinations {
            if let Some(dest) = parse_filter(s) {
                want.entry(dest).or_insert_with(|| vec![from.to_string()]);
            }
        }
        want
    }

    /// A network consumer's priority: below every local consumer, one lower per further hop
    /// (`decrease_network_consumer_priority`), or 0.
    fn priority(&self, demand_path: &[String]) -> i8 {
        if self.spec.connector.decrease_network_consumer_priority {
            let hops = i8::try_from(demand_path.len().saturating_sub(1)).unwrap_or(i8::MAX);
            NETWORK_CONSUMER_PRIORITY_BASE.saturating_sub(hops)
        } else {
            0
        }
    }

    fn route(&self, target: &str, demand_path: Vec<String>) -> NetworkRoute {
        let c = &self.spec.connector;
        NetworkRoute {
            target: target.to_string(),
            demand_path,
            message_ttl: ttl(c.effective_message_ttl()),
            max_replays: if c.replay_when_no_consumers {
                c.max_replays
            } else {
                0
            },
            pin_ms: c.in_flight_pin_ms,
        }
    }

    /// Duplex: subscribes on the remote, as a network consumer forwarding here, to every
    /// destination with demand here, and drops the subscriptions whose demand is gone.
    async fn reconcile_pull(
        &mut self,
        client: &Client,
        pull_tx: &mpsc::UnboundedSender<ReceivedMessage>,
    ) -> Result<(), BridgeError> {
        let Some(remote) = self.remote.clone() else {
            return Ok(());
        };
        let local = self.spec.local_name.clone();
        let want = self.wanted(&local, &remote, &self.broker.demand());
        self.pulls.retain(|dest, task| {
            let keep = want.contains_key(dest);
            if !keep {
                task.abort();
            }
            keep
        });
        for (dest, path) in want {
            if self.pulls.contains_key(&dest) {
                continue;
            }
            let stomp_dest = match dest.kind {
                DestinationKind::Queue => format!("/queue/{}", dest.name),
                DestinationKind::Topic => format!("/topic/{}", dest.name),
                DestinationKind::TempQueue | DestinationKind::TempTopic => continue,
            };
            let priority = self.priority(&path).to_string();
            let prefetch = self.spec.connector.prefetch_size.max(1).to_string();
            let route = self.route(&local, path);
            let route_headers = demand::route_headers(&route);
            let mut headers: Vec<(&str, &str)> = route_headers
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            headers.push(("activemq.priority", &priority));
            headers.push(("activemq.prefetchSize", &prefetch));
            let mut sub = client
                .subscribe(
                    &stomp_dest,
                    ferromq_client::AckMode::ClientIndividual,
                    &headers,
                )
                .await?;
            let tx = pull_tx.clone();
            let task = tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if tx.send(m).is_err() {
                        break;
                    }
                }
            });
            tracing::debug!(bridge = %self.spec.connector.name, %dest, "duplex: pulling from the remote");
            self.pulls.insert(dest, task.abort_handle());
        }
        Ok(())
    }

    /// Duplex: stores a message pulled from the remote here, with the hop added to its path and
    /// the remote's message id as its duplicate id (a redelivery after a lost ACK is dropped).
    async fn store_pulled(
        &self,
        m: &ReceivedMessage,
    ) -> Result<ferromq_store::Completion, BridgeError> {
        let remote = self.remote.as_deref().unwrap_or("");
        let msg = pulled_message(self.broker, m, remote, self.connection_id)
            .map_err(BridgeError::Demand)?;
        self.broker
            .send(msg)
            .await
            .map_err(|e| BridgeError::Store(e.to_string()))
    }

    fn excluded(&self, dest: &Destination) -> bool {
        self.spec
            .connector
            .excluded_destinations
            .iter()
            .filter_map(|f| parse_filter(f))
            .any(|f| f.kind == dest.kind && wildcard_matches(&f.name, &dest.name))
    }

    fn dynamically_included(&self, dest: &Destination) -> bool {
        let list = &self.spec.connector.dynamically_included_destinations;
        list.is_empty()
            || list
                .iter()
                .filter_map(|f| parse_filter(f))
                .any(|f| f.kind == dest.kind && wildcard_matches(&f.name, &dest.name))
    }

    /// Detaches the retiring network consumers whose sends were all confirmed.
    fn retire_drained(&mut self) {
        let broker = self.broker;
        self.retiring.retain(|h| {
            let drained = broker.inflight(h) == 0;
            if drained {
                drop(broker.unsubscribe(h, false));
            }
            !drained
        });
    }

    /// Detaches every network consumer: what they held returns to its queue (kept for this
    /// remote for `in_flight_pin_ms`: it may have stored some of it already).
    fn teardown(&mut self) {
        for (_, task) in std::mem::take(&mut self.pulls) {
            task.abort();
        }
        for (_, h) in std::mem::take(&mut self.consumers) {
            drop(self.broker.unsubscribe(&h, false));
        }
        for h in std::mem::take(&mut self.retiring) {
            drop(self.broker.unsubscribe(&h, false));
        }
        self.stats.consumers.store(0, Ordering::Relaxed);
    }
}

/// A TTL option (-1 = unlimited) as a hop bound.
fn ttl(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// `/queue/NAME`, `/topic/NAME`, `queue://NAME` or `topic://NAME` (checked by the config).
pub fn parse_filter(f: &str) -> Option<Destination> {
    let (kind, name) = if let Some(n) = f.strip_prefix("/queue/") {
        (DestinationKind::Queue, n)
    } else if let Some(n) = f.strip_prefix("/topic/") {
        (DestinationKind::Topic, n)
    } else if let Some(n) = f.strip_prefix("queue://") {
        (DestinationKind::Queue, n)
    } else if let Some(n) = f.strip_prefix("topic://") {
        (DestinationKind::Topic, n)
    } else {
        return None;
    };
    Some(match kind {
        DestinationKind::Queue => Destination::queue(name),
        _ => Destination::topic(name),
    })
}

/// MESSAGE headers the remote sets for the delivery, not part of the message.
const DELIVERY_HEADERS: [&str; 12] = [
    "subscription",
    "message-id",
    "destination",
    "ack",
    "persistent",
    "priority",
    "timestamp",
    "expires",
    "redelivered",
    "content-length",
    BROKER_PATH_HEADER,
    DUPLICATE_ID_HEADER,
];

/// The message a duplex bridge stores here for a MESSAGE pulled from `remote`.
fn pulled_message(
    broker: &Broker,
    m: &ReceivedMessage,
    remote: &str,
    connection: u64,
) -> Result<Message, String> {
    let dest_header = m.destination().unwrap_or("");
    let destination = parse_filter(dest_header)
        .filter(|d| !d.name.is_empty() && !d.is_wildcard())
        .ok_or_else(|| format!("pulled message with destination {dest_header:?}"))?;
    let id = m
        .message_id()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| "pulled message without a message-id".to_string())?;
    let priority = m
        .header("priority")
        .and_then(|p| p.trim().parse::<u8>().ok())
        .unwrap_or(DEFAULT_PRIORITY)
        .min(MAX_PRIORITY);
    let expires_ms = m
        .header("expires")
        .and_then(|e| e.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let persistent = m
        .header("persistent")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let path = match m.header(BROKER_PATH_HEADER).filter(|p| !p.is_empty()) {
        Some(p) => format!("{p},{remote}"),
        None => remote.to_string(),
    };
    let mut headers: Vec<(String, String)> = Vec::with_capacity(m.frame.headers.len());
    for (n, v) in &m.frame.headers {
        if DELIVERY_HEADERS.contains(&n) || headers.iter().any(|(h, _)| h == n) {
            continue;
        }
        headers.push((n.to_owned(), v.to_owned()));
    }
    headers.push((BROKER_PATH_HEADER.to_string(), path));
    headers.push((DUPLICATE_ID_HEADER.to_string(), id.to_string()));
    Ok(Message {
        id: broker.next_message_id(),
        destination,
        headers,
        body: m.body().clone(),
        persistent,
        priority,
        timestamp_ms: broker.now_ms(),
        expires_ms,
        producer_connection: connection,
        wire: Default::default(),
    })
}
