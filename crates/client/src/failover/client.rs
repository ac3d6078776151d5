//! The failover client: one [`Client`] at a time, replaced when it fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ferromq_protocol::stomp::{Command, Frame};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backoff::{connect_order, AfterFailure, Backoff, XorShift64};
use super::cluster::{merge_cluster_header, CLUSTER_BROKERS_MAX, CLUSTER_HEADER};
use super::discovery::{self, Brokers};
use super::state::{Admit, Feed, Link, PendingSend, State, SubRecord, TxState};
use super::subscription::FailoverSubscription;
use super::uri::{BrokerUri, FailoverUri, UriError};
use super::{
    AUDIT_DEPTH_DEFAULT, DUPLICATE_ID_HEADER, PENDING_SENDS_MAX, PRODUCER_ID_HEADER,
    PRODUCER_SEQ_HEADER,
};
use crate::client::Client;
use crate::config::{AckMode, ClientConfig};
use crate::error::{ClientError, CloseReason};
use crate::frames;
use crate::message::ReceivedMessage;

/// How long the failover layer waits for the RECEIPT of a SEND: in effect forever, because
/// the URI's `timeout` bounds the application's wait and a dead connection fails the wait.
const SEND_RECEIPT_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Settings of a [`FailoverClient`] beyond the URI.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// Used for every connection: the same `client-id`, credentials and heart-beats each time.
    pub client: ClientConfig,
    /// Drop redeliveries of messages the application already consumed (ActiveMQ's
    /// `checkForDuplicates`). Default `true`.
    pub check_for_duplicates: bool,
    /// How many consumed message ids the audit remembers (ActiveMQ's `auditDepth`).
    /// Default [`AUDIT_DEPTH_DEFAULT`] (2048).
    pub audit_depth: usize,
    /// Seed for broker shuffling and the producer id; `None` seeds from the clock. Tests set it
    /// for determinism.
    pub seed: Option<u64>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig::from(ClientConfig::default())
    }
}

impl From<ClientConfig> for FailoverConfig {
    fn from(client: ClientConfig) -> Self {
        FailoverConfig {
            client,
            check_for_duplicates: true,
            audit_depth: AUDIT_DEPTH_DEFAULT,
            seed: None,
        }
    }
}

/// A STOMP client that survives the loss of its connection, like ActiveMQ's failover
/// transport. Clones share it; it ends on [`FailoverClient::disconnect`], when it gives up
/// reconnecting, or when every clone and [`FailoverSubscription`] has been dropped.
///
/// What survives a failover: subscriptions (same `id` and headers), and every message sent
/// with [`FailoverClient::send_with_receipt`] or [`FailoverClient::send_receipt_handle`] that
/// was not confirmed (resent in order with the same producer identity). What does not: open
/// transactions (their COMMIT fails with [`ClientError::TransactionRolledBack`]) and messages
/// sent with [`FailoverClient::send`] that were still in flight (no receipt, no resend).
#[derive(Debug, Clone)]
pub struct FailoverClient {
    handle: Arc<Handle>,
}

/// Dropping the last one stops the supervisor and closes the connection.
#[derive(Debug)]
struct Handle {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    /// The multicast listener of a `discovery:` URI; dropped with the last handle.
    _discovery: Option<ferromq_discovery::ListenerHandle>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The URI as parsed: its options, and the configured brokers.
    uri: FailoverUri,
    /// The brokers reconnects choose from: the configured ones, then those learned from the
    /// brokers' CONNECTED frames (see [`super::cluster`]) or discovered (see
    /// [`super::discovery`]). Only ever appended to, so an index into it stays valid.
    brokers: Arc<Brokers>,
    config: FailoverConfig,
    producer_id: String,
    next_seq: AtomicU64,
    next_sub: AtomicU64,
    /// Set by `disconnect`, so that the supervisor does not treat the close as a failure.
    closing: AtomicBool,
    state: Mutex<State>,
    link: watch::Sender<Link>,
    /// Held while frames whose order matters are queued (sends, subscriptions) and while a new
    /// connection is restored, so that resends go out before new sends and nothing interleaves.
    order: tokio::sync::Mutex<()>,
}

impl FailoverClient {
    /// Connects per `uri` (see [`FailoverUri::parse`]): tries the brokers in order (shuffled
    /// when `randomize`), passing over the list until one accepts or
    /// `startupMaxReconnectAttempts` (else `maxReconnectAttempts`) passes have failed.
    pub async fn connect(
        uri: &str,
        config: impl Into<FailoverConfig>,
    ) -> Result<FailoverClient, ClientError> {
        Self::connect_uri(FailoverUri::parse(uri)?, config.into()).await
    }

    /// [`FailoverClient::connect`] with a parsed URI.
    pub async fn connect_uri(
        uri: FailoverUri,
        config: FailoverConfig,
    ) -> Result<FailoverClient, ClientError> {
        if uri.brokers.is_empty() && uri.discovery.is_none() {
            return Err(UriError::NoBrokers(String::new()).into());
        }
        // The brokers' addresses lose their scheme; TLS follows `config.client.tls`, which an
        // `ssl://` broker needs.
        if config.client.tls.is_none() {
            if let Some(b) = uri.brokers.iter().find(|b| crate::tls::is_tls_addr(&b.uri)) {
                return Err(ClientError::Tls(format!(
                    "{} is a TLS address: set ClientConfig::tls (the CLI's --tls-ca) to the CA \
                     that signed the broker's certificate",
                    b.uri
                )));
            }
        }
        let brokers = Brokers::new(uri.brokers.clone(), config.client.tls.is_some());
        // Listening before the first connect: the discovered brokers are the list it tries.
        let discovery = match &uri.discovery {
            Some(cfg) => Some(discovery::start(cfg, brokers.clone())?),
            None => None,
        };
        let mut rng = config
            .seed
            .map_or_else(XorShift64::from_entropy, XorShift64::new);
        let producer_id = format!("ferromq-{:016x}", rng.next_u64());
        let mut backoff = Backoff::new(&uri.options);
        let (client, index, connected_to) = if uri.failover {
            first_connect(&uri, &brokers, &config, &mut backoff, &mut rng).await?
        } else {
            // A plain URI: one attempt, and its own error.
            let client = Client::connect(&uri.brokers[0].addr, config.client.clone()).await?;
            (client, 0, uri.brokers[0].clone())
        };
        backoff.on_connected();
        tracing::info!(producer_id = %producer_id, "Successfully connected to {connected_to}");
        if uri.failover && uri.options.update_uris_supported {
            brokers.append_with(|all| learn_cluster(all, &client, &connected_to));
        }
        let state = State::new(config.audit_depth, config.check_for_duplicates);
        let inner = Arc::new(Inner {
            uri,
            brokers,
            config,
            producer_id,
            next_seq: AtomicU64::new(1),
            next_sub: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            state: Mutex::new(state),
            link: watch::channel(Link::Up {
                client: client.clone(),
                generation: 1,
            })
            .0,
            order: tokio::sync::Mutex::new(()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let supervisor = Supervisor {
            inner: inner.clone(),
            client,
            generation: 1,
            index,
            backoff,
            rng,
            shutdown: shutdown_rx,
        };
        tokio::spawn(supervisor.run());
        Ok(FailoverClient {
            handle: Arc::new(Handle {
                inner,
                shutdown,
                _discovery: discovery,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// This client's producer id, sent as [`PRODUCER_ID_HEADER`] on every message.
    pub fn producer_id(&self) -> &str {
        &self.inner().producer_id
    }

    /// The brokers a reconnect chooses from now: the configured ones in the order given, then
    /// those learned from the brokers (`updateURIsSupported`) or discovered (`discovery:`), in
    /// the order learned, less discovered ones reported down.
    pub fn brokers(&self) -> Vec<BrokerUri> {
        self.inner().brokers()
    }

    /// True while a connection is up (false while reconnecting, and after the end).
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner().link.borrow(), Link::Up { client, .. } if !client.is_closed())
    }

    /// The connection in use now, if one is up. Its handle stops working at the next failover.
    pub fn current(&self) -> Option<Client> {
        match &*self.inner().link.borrow() {
            Link::Up { client, .. } => Some(client.clone()),
            _ => None,
        }
    }

    /// The number of the connection in use: 1 after connect, +1 per failover; 0 while none
    /// is up.
    pub fn connection_count(&self) -> u64 {
        let link = self.inner().link.borrow();
        link.generation().unwrap_or(0)
    }

    /// Resolves when the client ends: `None` after [`FailoverClient::disconnect`], the reason
    /// otherwise (for example [`ClientError::ReconnectFailed`]).
    pub async fn closed(&self) -> Option<ClientError> {
        let mut rx = self.inner().link.subscribe();
        let link = rx
            .wait_for(|l| matches!(l, Link::Failed { .. } | Link::Closed))
            .await
            .map(|l| l.clone())
            .unwrap_or(Link::Closed);
        match link {
            Link::Closed => None,
            other => other.terminal_error(),
        }
    }

    /// Sends without a receipt, waiting (up to `timeout`) for a connection if there is none.
    /// A message in flight when the connection fails may be lost: use
    /// [`FailoverClient::send_with_receipt`] for messages that must arrive.
    pub async fn send(
        &self,
        destination: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let inner = self.inner();
        let deadline = inner.deadline();
        let frame = frames::send(destination, body.into(), headers);
        let transaction = frame.header("transaction").map(str::to_owned);
        let mut stamped: Option<Frame> = None;
        let mut after = None;
        loop {
            let (client, generation) = inner.wait_link(after, deadline).await?;
            let guard = inner.order.lock().await;
            if inner.link_generation() != Some(generation) {
                after = Some(generation);
                continue;
            }
            if let Some(tx) = &transaction {
                inner.check_transaction(tx, generation)?;
            }
            let frame = stamped
                .get_or_insert_with(|| inner.stamp(frame.clone()))
                .clone();
            let result = client.enqueue(frame).await;
            drop(guard);
            match result {
                Ok(()) => return Ok(()),
                Err(_) if client.is_closed() => after = Some(generation),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends with a receipt and waits until the broker confirms it, across failovers: the
    /// message is resent to each new connection until one confirms it. Fails after `timeout`
    /// (the message is then no longer resent and may or may not have been stored).
    pub async fn send_with_receipt(
        &self,
        destination: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        self.send_receipt_handle(destination, body, headers)
            .await?
            .wait()
            .await
    }

    /// Queues a receipted send and returns without waiting for its confirmation, so that many
    /// can be in flight; [`FailoverReceipt::wait`] collects the outcome.
    pub async fn send_receipt_handle(
        &self,
        destination: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<FailoverReceipt, ClientError> {
        let inner = self.inner();
        let deadline = inner.deadline();
        let frame = frames::send(destination, body.into(), headers);
        let transaction = frame.header("transaction").map(str::to_owned);
        let mut after = None;
        loop {
            let (client, generation) = inner.wait_link(after, deadline).await?;
            let guard = inner.order.lock().await;
            if inner.link_generation() != Some(generation) {
                after = Some(generation);
                continue;
            }
            if let Some(tx) = &transaction {
                inner.check_transaction(tx, generation)?;
            }
            let (done_tx, done_rx) = oneshot::channel();
            let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
            let frame = inner.stamp_with(frame, seq);
            {
                let mut st = inner.lock();
                if st.pending.len() >= PENDING_SENDS_MAX {
                    return Err(ClientError::TooManyPendingReceipts {
                        limit: PENDING_SENDS_MAX,
                    });
                }
                st.pending.insert(
                    seq,
                    PendingSend {
                        frame: frame.clone(),
                        done: Some(done_tx),
                        sent: None,
                        transaction,
                    },
                );
            }
            let receipt = FailoverReceipt {
                rx: done_rx,
                guard: PendingGuard {
                    inner: inner.clone(),
                    seq,
                },
                deadline,
            };
            // From here the message is tracked: if this transmission fails with the
            // connection, the supervisor resends it.
            inner.transmit(&client, generation, seq, frame).await;
            drop(guard);
            return Ok(receipt);
        }
    }

    /// Subscribes with a generated `id` (or the `id` in `headers`), and returns once the
    /// broker confirmed it. After a failover the same SUBSCRIBE (same `id` and headers, so a
    /// durable subscription resumes under its name) is sent to the new connection.
    pub async fn subscribe(
        &self,
        destination: &str,
        ack: AckMode,
        headers: &[(&str, &str)],
    ) -> Result<FailoverSubscription, ClientError> {
        let inner = self.inner();
        let deadline = inner.deadline();
        let id = match headers.iter().find(|(n, _)| *n == "id") {
            Some((_, id)) => (*id).to_owned(),
            None => format!("fsub-{}", inner.next_sub.fetch_add(1, Ordering::Relaxed)),
        };
        let mut owned: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| *n != "id")
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        owned.insert(0, ("id".to_owned(), id.clone()));
        let (feeds_tx, feeds_rx) = mpsc::unbounded_channel();
        let mut after = None;
        let (client, handle, subscription) = loop {
            let (client, generation) = inner.wait_link(after, deadline).await?;
            let guard = inner.order.lock().await;
            if inner.link_generation() != Some(generation) {
                after = Some(generation);
                continue;
            }
            {
                let mut st = inner.lock();
                if st.subscriptions.contains_key(&id) {
                    return Err(ClientError::DuplicateSubscription(id));
                }
                st.subscriptions.insert(
                    id.clone(),
                    SubRecord {
                        destination: destination.to_owned(),
                        ack,
                        headers: owned.clone(),
                        feeds: feeds_tx.clone(),
                        generation: Some(generation),
                        unacked: Default::default(),
                    },
                );
            }
            // From here the FailoverSubscription owns the record: its Drop removes it.
            let subscription = FailoverSubscription::new(id.clone(), ack, feeds_rx, self.clone());
            let handle = match inner.subscribe_on(&client, generation, &id).await {
                Ok(handle) => handle,
                // The supervisor re-creates it on the next connection.
                Err(_) if client.is_closed() => return Ok(subscription),
                Err(e) => return Err(e),
            };
            drop(guard);
            break (client, handle, subscription);
        };
        let receipt_id = handle.receipt_id().to_owned();
        match handle.wait_frame().await {
            Ok(_) => {
                tracing::debug!(subscription = %id, destination, %ack, "subscribed");
                Ok(subscription)
            }
            Err(_) if client.is_closed() && !rejected(&client, &receipt_id) => Ok(subscription),
            Err(e) => Err(e),
        }
    }

    /// Acknowledges `msg`. The message id enters the consumer audit, so a redelivery of it
    /// after a failover is dropped (and acknowledged again). An ACK for a message that arrived
    /// on an earlier connection is not sent: that delivery no longer exists on the broker.
    pub async fn ack(
        &self,
        msg: &ReceivedMessage,
        transaction: Option<&str>,
    ) -> Result<(), ClientError> {
        self.settle(Command::Ack, msg, transaction).await
    }

    /// Rejects `msg`. Not sent for a message that arrived on an earlier connection (the broker
    /// redelivers it anyway).
    pub async fn nack(
        &self,
        msg: &ReceivedMessage,
        transaction: Option<&str>,
    ) -> Result<(), ClientError> {
        self.settle(Command::Nack, msg, transaction).await
    }

    async fn settle(
        &self,
        command: Command,
        msg: &ReceivedMessage,
        transaction: Option<&str>,
    ) -> Result<(), ClientError> {
        let inner = self.inner();
        let link = inner.link.borrow().clone();
        if let Some(e) = link.terminal_error() {
            return Err(e);
        }
        let current = link.generation();
        let arrived_on = {
            let mut st = inner.lock();
            if let Some(tx) = transaction {
                if let Some(t) = st.transactions.get(tx) {
                    if Some(t.generation) != current {
                        return Err(ClientError::TransactionRolledBack {
                            transaction: tx.to_owned(),
                        });
                    }
                }
            }
            let (settled, arrived_on) = st.settle(msg);
            if command == Command::Ack {
                match transaction.and_then(|tx| st.transactions.get_mut(tx)) {
                    Some(t) => t.acked.extend(settled),
                    None => {
                        for id in &settled {
                            st.audit.record(id);
                        }
                    }
                }
            }
            arrived_on
        };
        let Link::Up { client, generation } = link else {
            return Ok(());
        };
        if arrived_on != Some(generation) {
            tracing::debug!(
                message_id = msg.message_id().unwrap_or(""),
                %command,
                "not sent: the message arrived on an earlier connection"
            );
            return Ok(());
        }
        let result = match command {
            Command::Nack => client.nack(msg, transaction).await,
            _ => client.ack(msg, transaction).await,
        };
        match result {
            // The broker redelivers it on the next connection; the audit takes it from there.
            Err(_) if client.is_closed() => Ok(()),
            other => other,
        }
    }

    /// Begins transaction `tx` and waits for the receipt. If the connection fails before the
    /// transaction commits, the COMMIT fails with [`ClientError::TransactionRolledBack`].
    pub async fn begin(&self, tx: &str) -> Result<(), ClientError> {
        let inner = self.inner();
        let (client, generation) = inner.wait_link(None, inner.deadline()).await?;
        inner.lock().transactions.insert(
            tx.to_owned(),
            TxState {
                generation,
                acked: Vec::new(),
            },
        );
        match client.begin(tx).await {
            Ok(()) => Ok(()),
            // The transaction is void with the connection; COMMIT reports it.
            Err(_) if client.is_closed() => Ok(()),
            Err(e) => {
                inner.lock().transactions.remove(tx);
                Err(e)
            }
        }
    }

    /// Commits transaction `tx`. Fails with [`ClientError::TransactionRolledBack`] if the
    /// connection it was begun on was lost (begin it again and redo its work), and with
    /// [`ClientError::TransactionInDoubt`] if the connection was lost during the COMMIT.
    pub async fn commit(&self, tx: &str) -> Result<(), ClientError> {
        let inner = self.inner();
        let state = inner.lock().transactions.remove(tx);
        let rolled_back = || ClientError::TransactionRolledBack {
            transaction: tx.to_owned(),
        };
        let link = inner.link.borrow().clone();
        let (client, generation) = match state.as_ref() {
            Some(t) => match link {
                Link::Up { client, generation } if generation == t.generation => {
                    (client, generation)
                }
                Link::Failed { .. } | Link::Closed => {
                    return Err(link.terminal_error().unwrap_or(ClientError::Closed))
                }
                _ => return Err(rolled_back()),
            },
            // Not begun through this client: let the broker judge it.
            None => inner.wait_link(None, inner.deadline()).await?,
        };
        let handle = client
            .start_request(frames::transaction(Command::Commit, tx))
            .await;
        let result = match handle {
            Ok(handle) => {
                let receipt_id = handle.receipt_id().to_owned();
                match handle.wait_frame().await {
                    Ok(_) => Ok(()),
                    Err(_) if client.is_closed() && !rejected(&client, &receipt_id) => {
                        Err(ClientError::TransactionInDoubt {
                            transaction: tx.to_owned(),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            // Never queued: the broker never saw the COMMIT, so the transaction died with
            // the connection.
            Err(_) if client.is_closed() => Err(rolled_back()),
            Err(e) => Err(e),
        };
        if result.is_ok() {
            if let Some(t) = state {
                let mut st = inner.lock();
                for id in &t.acked {
                    st.audit.record(id);
                }
            }
        }
        tracing::debug!(transaction = tx, generation, ok = result.is_ok(), "commit");
        result
    }

    /// Rolls back transaction `tx`. A transaction already void because of a failover is
    /// simply forgotten.
    pub async fn abort(&self, tx: &str) -> Result<(), ClientError> {
        let inner = self.inner();
        let state = inner.lock().transactions.remove(tx);
        let link = inner.link.borrow().clone();
        let client = match (link, state) {
            (Link::Up { client, generation }, Some(t)) if generation == t.generation => client,
            (_, Some(_)) => return Ok(()),
            (Link::Up { client, .. }, None) => client,
            (other, None) => return Err(other.terminal_error().unwrap_or(ClientError::Closed)),
        };
        match client.abort(tx).await {
            // The broker aborts a connection's open transactions when it goes away.
            Err(_) if client.is_closed() => Ok(()),
            other => other,
        }
    }

    /// Sends DISCONNECT, waits for its receipt and ends the client: no reconnect follows.
    /// Sends still waiting for confirmation then fail with [`ClientError::Closed`].
    pub async fn disconnect(self) -> Result<(), ClientError> {
        let inner = self.inner().clone();
        if inner.closing.swap(true, Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        let link = inner.link.borrow().clone();
        let result = match link {
            Link::Up { client, .. } => client.disconnect().await,
            Link::Connecting => Ok(()),
            other => Err(other.terminal_error().unwrap_or(ClientError::Closed)),
        };
        inner.end(Link::Closed, || ClientError::Closed);
        result
    }
}

/// True when the ERROR that closed `client`'s connection answered `receipt_id`: the server
/// rejected that frame, so it must not be sent again.
fn rejected(client: &Client, receipt_id: &str) -> bool {
    client.shared().error_receipt_id().as_deref() == Some(receipt_id)
}

/// The outcome of a receipted send, across failovers.
#[derive(Debug)]
pub struct FailoverReceipt {
    rx: oneshot::Receiver<Result<(), ClientError>>,
    guard: PendingGuard,
    deadline: Option<Instant>,
}

impl FailoverReceipt {
    /// This message's producer sequence number ([`PRODUCER_SEQ_HEADER`]).
    pub fn seq(&self) -> u64 {
        self.guard.seq
    }

    /// Waits until a broker confirms the message, or the `timeout` (counted from the send)
    /// passes, or the client gives up reconnecting. Dropping the receipt without waiting
    /// stops tracking the message: it is no longer resent.
    pub async fn wait(mut self) -> Result<(), ClientError> {
        let outcome = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, &mut self.rx).await,
            None => Ok((&mut self.rx).await),
        };
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) => Err(ClientError::Closed),
            Err(_elapsed) => Err(ClientError::Timeout("failover timeout")),
        }
    }
}

/// Removes a pending send when its waiter gives up, so that it is not resent.
#[derive(Debug)]
struct PendingGuard {
    inner: Arc<Inner>,
    seq: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.inner.lock().pending.remove(&self.seq);
    }
}

impl Inner {
    fn brokers(&self) -> Vec<BrokerUri> {
        self.brokers.snapshot().usable()
    }

    /// Adds the brokers `client`'s broker advertised, if `updateURIsSupported`.
    fn learn_cluster(&self, client: &Client, from: &BrokerUri) {
        if !self.uri.options.update_uris_supported {
            return;
        }
        self.brokers
            .append_with(|all| learn_cluster(all, client, from));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it and every step leaves the state consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn deadline(&self) -> Option<Instant> {
        self.uri.options.send_timeout().map(|d| Instant::now() + d)
    }

    fn link_generation(&self) -> Option<u64> {
        self.link.borrow().generation()
    }

    /// Waits (until `deadline`) for a connection other than `after`.
    async fn wait_link(
        &self,
        after: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<(Client, u64), ClientError> {
        let mut rx = self.link.subscribe();
        let ready = |l: &Link| match l {
            Link::Up { generation, .. } => Some(*generation) != after,
            Link::Connecting => false,
            Link::Failed { .. } | Link::Closed => true,
        };
        let link = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, rx.wait_for(ready))
                .await
                .map_err(|_| ClientError::Timeout("failover timeout"))?
                .map(|l| l.clone()),
            None => rx.wait_for(ready).await.map(|l| l.clone()),
        }
        .map_err(|_| ClientError::Closed)?;
        match link {
            Link::Up { client, generation } => Ok((client, generation)),
            other => Err(other.terminal_error().unwrap_or(ClientError::Closed)),
        }
    }

    /// Fails with `TransactionRolledBack` unless `tx` (if begun here) lives on `generation`.
    fn check_transaction(&self, tx: &str, generation: u64) -> Result<(), ClientError> {
        match self.lock().transactions.get(tx) {
            Some(t) if t.generation != generation => Err(ClientError::TransactionRolledBack {
                transaction: tx.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn stamp(&self, frame: Frame) -> Frame {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.stamp_with(frame, seq)
    }

    /// Adds the producer identity. An application-chosen `_AMQ_DUPL_ID` is kept, so that an
    /// application can retry a timed-out send under the same identity.
    fn stamp_with(&self, mut frame: Frame, seq: u64) -> Frame {
        frame.set_header(PRODUCER_ID_HEADER, self.producer_id.as_str());
        frame.set_header(PRODUCER_SEQ_HEADER, seq.to_string());
        if frame.header(DUPLICATE_ID_HEADER).is_none() {
            frame.push_header(DUPLICATE_ID_HEADER, format!("{}:{seq}", self.producer_id));
        }
        frame
    }

    /// Sends pending message `seq` on `client` and watches for its receipt. Failures caused
    /// by the connection leave it pending for the supervisor to resend.
    async fn transmit(self: &Arc<Self>, client: &Client, generation: u64, seq: u64, frame: Frame) {
        match client.start_request_with(frame, SEND_RECEIPT_WAIT).await {
            Ok(handle) => {
                let receipt_id = handle.receipt_id().to_owned();
                if let Some(p) = self.lock().pending.get_mut(&seq) {
                    p.sent = Some((generation, receipt_id.clone()));
                }
                let inner = self.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let result = handle.wait_frame().await.map(drop);
                    inner.on_receipt(seq, generation, &client, &receipt_id, result);
                });
            }
            Err(_) if client.is_closed() => {}
            Err(e) => {
                if let Some(p) = self.lock().pending.remove(&seq) {
                    p.finish(Err(e));
                }
            }
        }
    }

    fn on_receipt(
        &self,
        seq: u64,
        generation: u64,
        client: &Client,
        receipt_id: &str,
        result: Result<(), ClientError>,
    ) {
        let mut st = self.lock();
        let Some(pending) = st.pending.get(&seq) else {
            return;
        };
        let entry = match result {
            // Confirmed by whichever connection: done.
            Ok(()) => st.pending.remove(&seq).map(|p| (p, Ok(()))),
            Err(e) => {
                let ours = pending.sent.as_ref().map(|(g, _)| *g) == Some(generation);
                let lost_with_connection = client.is_closed() && !rejected(client, receipt_id);
                if !ours || lost_with_connection {
                    // A newer transmission decides, or the supervisor resends it.
                    None
                } else {
                    st.pending.remove(&seq).map(|p| (p, Err(e)))
                }
            }
        };
        drop(st);
        if let Some((pending, result)) = entry {
            tracing::trace!(seq, ok = result.is_ok(), "send settled");
            pending.finish(result);
        }
    }

    /// Registers subscription `id` on `client` (a new feed for its stream) and queues its
    /// SUBSCRIBE. Called with `order` held.
    async fn subscribe_on(
        &self,
        client: &Client,
        generation: u64,
        id: &str,
    ) -> Result<crate::receipt::ReceiptHandle, ClientError> {
        let (frame, feeds) = {
            let mut st = self.lock();
            let Some(sub) = st.subscriptions.get_mut(id) else {
                return Err(ClientError::Closed);
            };
            sub.generation = Some(generation);
            let headers: Vec<(&str, &str)> = sub
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            (
                frames::subscribe(&sub.destination, id, sub.ack, &headers),
                sub.feeds.clone(),
            )
        };
        let rx = client.shared().register_subscription(id)?;
        // The subscription may be gone already; then nobody reads the feed.
        let _ = feeds.send(Feed {
            generation,
            client: client.clone(),
            rx,
        });
        client.start_request(frame).await
    }

    /// Called when a connection is lost: operations wait for the next one, and receipted sends
    /// inside transactions fail (the transaction died with the connection).
    fn on_connection_lost(&self, generation: u64, client: &Client) {
        let rejected_receipt = client.shared().error_receipt_id();
        let mut failed = Vec::new();
        {
            let mut st = self.lock();
            self.link.send_replace(Link::Connecting);
            let doomed: Vec<u64> = st
                .pending
                .iter()
                .filter(|(_, p)| {
                    p.transaction.is_some()
                        || (p.sent.as_ref().is_some_and(|(g, r)| {
                            *g == generation && Some(r) == rejected_receipt.as_ref()
                        }))
                })
                .map(|(seq, _)| *seq)
                .collect();
            for seq in doomed {
                if let Some(p) = st.pending.remove(&seq) {
                    failed.push(p);
                }
            }
        }
        let reason = client.shared().close_reason();
        for p in failed {
            let err = match &p.transaction {
                Some(tx) => ClientError::TransactionRolledBack {
                    transaction: tx.clone(),
                },
                None => reason
                    .as_ref()
                    .map_or(ClientError::Closed, CloseReason::to_error),
            };
            p.finish(Err(err));
        }
    }

    /// Replays the session on a new connection: every subscription, then every unconfirmed
    /// send in order; then publishes the connection. Holds `order` throughout.
    async fn restore(
        self: &Arc<Self>,
        client: &Client,
        generation: u64,
    ) -> Result<(), ClientError> {
        let _order = self.order.lock().await;
        let ids: Vec<String> = self.lock().subscriptions.keys().cloned().collect();
        let mut receipts = Vec::with_capacity(ids.len());
        for id in &ids {
            receipts.push(self.subscribe_on(client, generation, id).await?);
        }
        for receipt in receipts {
            receipt.wait_frame().await?;
        }
        let resend: Vec<(u64, Frame)> = self
            .lock()
            .pending
            .iter()
            .filter(|(_, p)| p.transaction.is_none())
            .map(|(seq, p)| (*seq, p.frame.clone()))
            .collect();
        for (seq, frame) in &resend {
            tracing::debug!(seq, "resending unconfirmed message");
            self.transmit(client, generation, *seq, frame.clone()).await;
        }
        if client.is_closed() {
            return Err(client
                .shared()
                .close_reason()
                .map_or(ClientError::Closed, |r| r.to_error()));
        }
        tracing::debug!(
            subscriptions = ids.len(),
            resent = resend.len(),
            generation,
            "session restored"
        );
        self.link.send_replace(Link::Up {
            client: client.clone(),
            generation,
        });
        Ok(())
    }

    /// Ends the client: every waiting send fails with `error()`, every subscription stream
    /// ends once drained, transactions are forgotten.
    fn end(&self, link: Link, error: impl Fn() -> ClientError) {
        let (pending, subscriptions) = {
            let mut st = self.lock();
            self.link.send_replace(link);
            st.transactions.clear();
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.subscriptions),
            )
        };
        drop(subscriptions);
        for (_, p) in pending {
            p.finish(Err(error()));
        }
    }

    /// Decides about a message for subscription `sub_id` that arrived on `generation`;
    /// acknowledges dropped duplicates when that is safe.
    pub(crate) fn admit(
        &self,
        sub_id: &str,
        generation: u64,
        client: &Client,
        msg: ReceivedMessage,
    ) -> Option<ReceivedMessage> {
        let verdict = self.lock().admit(sub_id, generation, &msg);
        match verdict {
            Admit::Deliver => Some(msg),
            Admit::Duplicate { ack_now } => {
                tracing::debug!(
                    subscription = sub_id,
                    message_id = msg.message_id().unwrap_or(""),
                    "dropping redelivery of a message already consumed"
                );
                if ack_now {
                    let sent = frames::ack(Command::Ack, client.version(), &msg, None)
                        .and_then(|frame| client.try_enqueue(frame));
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "could not acknowledge the duplicate");
                    }
                }
                None
            }
        }
    }

    /// Forgets subscription `id`; if it is subscribed on the current connection, stops it
    /// there without waiting (for `Drop`).
    pub(crate) fn drop_subscription(&self, id: &str) {
        let record = self.lock().subscriptions.remove(id);
        let Some(record) = record else { return };
        if let Link::Up { client, generation } = &*self.link.borrow() {
            if record.generation == Some(*generation) && !client.is_closed() {
                client.shared().remove_subscription(id);
                if client.try_enqueue(frames::unsubscribe(id, &[])).is_err() {
                    tracing::debug!(subscription = %id, "could not queue UNSUBSCRIBE on drop");
                }
            }
        }
    }

    /// Sends UNSUBSCRIBE for `id` with a receipt on the connection it is subscribed on,
    /// following it across failovers, then forgets it.
    pub(crate) async fn unsubscribe(
        &self,
        id: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let deadline = self.deadline();
        let mut after = None;
        let result = loop {
            let (client, generation) = match self.wait_link(after, deadline).await {
                Ok(link) => link,
                Err(e) => break Err(e),
            };
            let subscribed_here = self
                .lock()
                .subscriptions
                .get(id)
                .is_some_and(|s| s.generation == Some(generation));
            if !subscribed_here {
                // Restore has not reached it yet, or it is gone.
                if !self.lock().subscriptions.contains_key(id) {
                    break Ok(());
                }
                after = Some(generation);
                continue;
            }
            client.shared().remove_subscription(id);
            match client.request(frames::unsubscribe(id, headers)).await {
                Ok(_) => break Ok(()),
                Err(_) if client.is_closed() => after = Some(generation),
                Err(e) => break Err(e),
            }
        };
        self.lock().subscriptions.remove(id);
        result
    }
}

/// The first connect: passes over the broker list until one accepts or the limit is reached.
/// Returns the client, and the index in the list and URI of its broker.
async fn first_connect(
    uri: &FailoverUri,
    brokers: &Brokers,
    config: &FailoverConfig,
    backoff: &mut Backoff,
    rng: &mut XorShift64,
) -> Result<(Client, usize, BrokerUri), ClientError> {
    loop {
        let mut available = brokers.watch_available();
        let snapshot = brokers.snapshot();
        let order = pass_order(&snapshot, uri.options.randomize, None, rng);
        let mut last_error = no_broker_error(&order);
        for index in order {
            let broker = &snapshot.all[index];
            match Client::connect(&broker.addr, config.client.clone()).await {
                Ok(client) => return Ok((client, index, broker.clone())),
                Err(e) => {
                    tracing::debug!(uri = %broker, error = %e, "Connect fail");
                    last_error = format!("{broker}: {e}");
                }
            }
        }
        match backoff.on_pass_failed() {
            AfterFailure::Retry { delay, warn } => {
                if warn {
                    tracing::warn!(
                        attempts = backoff.failures(),
                        "Failed to connect to {:?} after: {} attempt(s) continuing to retry.",
                        broker_list(&snapshot.usable()),
                        backoff.failures()
                    );
                }
                wait_or_available(delay, &mut available).await;
            }
            AfterFailure::GiveUp { attempts } => {
                tracing::error!(
                    "Failed to connect to {:?} after: {attempts} attempt(s)",
                    broker_list(&snapshot.usable())
                );
                return Err(ClientError::ReconnectFailed {
                    attempts,
                    last_error,
                });
            }
        }
    }
}

/// The order of one pass: [`connect_order`] over the whole list, less the brokers that may
/// not be tried (discovered ones reported down).
fn pass_order(
    snapshot: &discovery::Snapshot,
    randomize: bool,
    last_failed: Option<usize>,
    rng: &mut XorShift64,
) -> Vec<usize> {
    connect_order(snapshot.all.len(), randomize, last_failed, rng)
        .into_iter()
        .filter(|i| snapshot.usable.get(*i).copied().unwrap_or(false))
        .collect()
}

/// The error of a pass that tried nothing (a `discovery:` client before any broker was
/// advertised), else empty.
fn no_broker_error(order: &[usize]) -> String {
    if order.is_empty() {
        "no broker known yet (none discovered, or all reported down)".to_owned()
    } else {
        String::new()
    }
}

/// Waits `delay`, or less if a broker becomes available meanwhile (discovered, or learned).
async fn wait_or_available(delay: Duration, available: &mut watch::Receiver<u64>) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        // Disabled if the sender were gone (it lives as long as the list), never a busy loop.
        Ok(()) = available.changed() => {
            tracing::debug!("a broker became available: retrying now");
        }
    }
}

fn broker_list(brokers: &[BrokerUri]) -> Vec<&str> {
    brokers.iter().map(|b| b.uri.as_str()).collect()
}

/// Merges the [`CLUSTER_HEADER`] of `client`'s CONNECTED frame (from broker `from`) into
/// `brokers`, logging what it learned and what it ignored.
fn learn_cluster(brokers: &mut Vec<BrokerUri>, client: &Client, from: &BrokerUri) {
    let Some(value) = client.connected_header(CLUSTER_HEADER) else {
        return;
    };
    let outcome = merge_cluster_header(brokers, &value);
    if !outcome.malformed.is_empty() {
        // One line per connect, however bad the header: a few examples and the count.
        let examples: Vec<&str> = outcome
            .malformed
            .iter()
            .take(4)
            .map(String::as_str)
            .collect();
        tracing::warn!(
            uri = %from,
            malformed = outcome.malformed.len(),
            "ignoring malformed broker URIs in the {CLUSTER_HEADER} header: {examples:?}"
        );
    }
    if outcome.over_limit > 0 {
        tracing::warn!(
            uri = %from,
            ignored = outcome.over_limit,
            "broker list full ({CLUSTER_BROKERS_MAX} brokers); ignoring advertised brokers"
        );
    }
    for added in &outcome.added {
        tracing::info!(uri = %from, "Adding new broker connection URL: {added}");
    }
}

/// The task that watches the connection and replaces it when it fails.
struct Supervisor {
    inner: Arc<Inner>,
    client: Client,
    generation: u64,
    /// The broker `client` is connected to.
    index: usize,
    backoff: Backoff,
    rng: XorShift64,
    shutdown: watch::Receiver<bool>,
}

impl Supervisor {
    async fn run(mut self) {
        loop {
            let ended = tokio::select! {
                ended = self.client.closed() => ended,
                _ = self.shutdown.wait_for(|s| *s) => {
                    // Every handle is gone: nobody can use this client any more.
                    self.client.shared().close(CloseReason::Local);
                    self.inner.end(Link::Closed, || ClientError::Closed);
                    return;
                }
            };
            let Some(error) = ended else {
                // Closed on purpose (disconnect).
                self.inner.end(Link::Closed, || ClientError::Closed);
                return;
            };
            if self.inner.closing.load(Ordering::SeqCst) {
                self.inner.end(Link::Closed, || ClientError::Closed);
                return;
            }
            // For the log only; the list only grows, so `index` is always in it.
            let broker = self
                .inner
                .brokers
                .get(self.index)
                .map_or_else(String::new, |b| b.uri);
            self.inner.on_connection_lost(self.generation, &self.client);
            if !self.inner.uri.failover {
                let last_error = error.to_string();
                self.inner.end(
                    Link::Failed {
                        attempts: 0,
                        last_error: last_error.clone(),
                    },
                    || ClientError::ReconnectFailed {
                        attempts: 0,
                        last_error: last_error.clone(),
                    },
                );
                return;
            }
            tracing::warn!(
                uri = %broker,
                error = %error,
                "Transport failed, attempting to automatically reconnect"
            );
            if !self.reconnect().await {
                return;
            }
        }
    }

    /// Passes over the broker list until a connection is up and restored (true), or the
    /// client gives up or is shut down (false, after ending it).
    async fn reconnect(&mut self) -> bool {
        let mut wait = self.backoff.on_connection_lost();
        let mut available = self.inner.brokers.watch_available();
        loop {
            if !wait.is_zero() {
                tracing::debug!(
                    wait_ms = wait.as_millis() as u64,
                    "Waiting before attempting connection"
                );
                tokio::select! {
                    _ = wait_or_available(wait, &mut available) => {}
                    _ = self.shutdown.wait_for(|s| *s) => {
                        self.inner.end(Link::Closed, || ClientError::Closed);
                        return false;
                    }
                }
            }
            if self.inner.closing.load(Ordering::SeqCst) {
                self.inner.end(Link::Closed, || ClientError::Closed);
                return false;
            }
            // One pass tries the brokers known when it starts; what a broker advertises during
            // the pass is tried from the next one on.
            available = self.inner.brokers.watch_available();
            let snapshot = self.inner.brokers.snapshot();
            let order = pass_order(
                &snapshot,
                self.inner.uri.options.randomize,
                Some(self.index),
                &mut self.rng,
            );
            let mut last_error = no_broker_error(&order);
            for index in order {
                let broker = &snapshot.all[index];
                let generation = self.generation + 1;
                let attempt = async {
                    let client =
                        Client::connect(&broker.addr, self.inner.config.client.clone()).await?;
                    // Before the restore publishes the connection, so that `brokers()` already
                    // shows what this broker advertised once the client is up again.
                    self.inner.learn_cluster(&client, broker);
                    match self.inner.restore(&client, generation).await {
                        Ok(()) => Ok(client),
                        Err(e) => {
                            client.shared().close(CloseReason::Local);
                            Err(e)
                        }
                    }
                };
                match attempt.await {
                    Ok(client) => {
                        self.client = client;
                        self.generation = generation;
                        self.index = index;
                        self.backoff.on_connected();
                        tracing::info!(generation, "Successfully reconnected to {broker}");
                        return true;
                    }
                    Err(e) => {
                        tracing::debug!(uri = %broker, error = %e, "Connect fail");
                        last_error = format!("{broker}: {e}");
                    }
                }
            }
            match self.backoff.on_pass_failed() {
                AfterFailure::Retry { delay, warn } => {
                    if warn {
                        tracing::warn!(
                            "Failed to connect to {:?} after: {} attempt(s) continuing to retry.",
                            broker_list(&snapshot.usable()),
                            self.backoff.failures()
                        );
                    }
                    wait = delay;
                }
                AfterFailure::GiveUp { attempts } => {
                    tracing::error!(
                        "Failed to connect to {:?} after: {attempts} attempt(s)",
                        broker_list(&snapshot.usable())
                    );
                    let err = last_error.clone();
                    self.inner.end(
                        Link::Failed {
                            attempts,
                            last_error,
                        },
                        || ClientError::ReconnectFailed {
                            attempts,
                            last_error: err.clone(),
                        },
                    );
                    return false;
                }
            }
        }
    }
}
