//! The STOMP workload: N producers and M consumers (one connection each) over K destinations.
//!
//! Timeline, on one clock (nanoseconds since the run's start, shared by producers and
//! consumers in this process, which is what makes end-to-end latency meaningful):
//!
//! ```text
//! 0 ── warm-up ── warmup_end ── measurement window ── end ── drain (bounded) ── stop
//! ```
//!
//! - Throughput counts sends that completed and deliveries that arrived inside the window.
//! - Latencies are recorded for messages whose send time (scheduled time at a fixed rate,
//!   actual time otherwise) lies in the window, however late they complete; the drain lets
//!   the slowest of them arrive, for at most the timeout without progress.
//! - Every message carries `bench-run` (this run's id: messages left over from an earlier run
//!   are acknowledged and ignored) and `bench-ts` (its send time on the run's clock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferromq_client::{AckMode, Client, ClientConfig, Limits, ReceiptHandle, Subscription};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cli::RunConfig;
use crate::error::BenchError;
use crate::report::{RunConditions, RunReport, Throughput};
use crate::schedule::OpenLoopSchedule;
use crate::stats::LatencyHistogram;

/// Header carrying the run id.
pub const RUN_HEADER: &str = "bench-run";
/// Header carrying the send time in ns on the run's clock.
pub const TS_HEADER: &str = "bench-ts";
/// How often the drain checks whether every message arrived.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Extra frame room beyond the body for headers.
const FRAME_HEADROOM_BYTES: usize = 64 * 1024;

/// The run's clock: nanoseconds since its start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `ns` after the start.
    pub fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

/// The measurement window on the run's clock, `[start_ns, end_ns)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// End of warm-up.
    pub start_ns: u64,
    /// End of measurement.
    pub end_ns: u64,
}

impl Window {
    /// True when `ns` lies in the window.
    pub fn contains(&self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }
}

/// Live counters for the progress line and the drain.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages sent (all phases).
    pub sent: AtomicU64,
    /// Deliveries of this run's messages (all phases).
    pub delivered: AtomicU64,
    /// Messages from earlier runs, acknowledged and ignored.
    pub stale: AtomicU64,
    /// Receipts outstanding over all producers.
    pub receipts_in_flight: AtomicU64,
}

#[derive(Debug)]
struct ProducerOutcome {
    sent_in_window: u64,
    send_latency: LatencyHistogram,
    unsent_behind_schedule: u64,
}

#[derive(Debug)]
struct ConsumerOutcome {
    delivered_in_window: u64,
    end_to_end_latency: LatencyHistogram,
}

/// What every producer task needs.
#[derive(Debug, Clone)]
struct Shared {
    cfg: Arc<RunConfig>,
    clock: Clock,
    window: Window,
    run_id: Arc<str>,
    counters: Arc<Counters>,
}

fn client_err(what: impl Into<String>) -> impl FnOnce(ferromq_client::ClientError) -> BenchError {
    let what = what.into();
    move |source| BenchError::Client { what, source }
}

/// Awaits `fut` for at most `t`, naming the operation in the error.
async fn bounded<T>(
    t: Duration,
    what: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, BenchError> {
    tokio::time::timeout(t, fut)
        .await
        .map_err(|_| BenchError::Timeout(format!("{} took longer than {t:?}", what())))
}

fn client_config(cfg: &RunConfig) -> ClientConfig {
    let limits = Limits {
        frame_bytes_max: Limits::default()
            .frame_bytes_max
            .max(cfg.args.size + FRAME_HEADROOM_BYTES),
        ..Limits::default()
    };
    ClientConfig {
        host: cfg.args.host.clone(),
        login: cfg.args.login.clone(),
        passcode: cfg.args.passcode.clone(),
        connect_timeout: cfg.timeout,
        receipt_timeout: cfg.timeout,
        limits,
        tls: cfg.tls.clone(),
        ..ClientConfig::default()
    }
}

/// Opens `count` connections to `url` (producers go to `--url`, consumers to
/// `--consume-url`, which may be another broker of a network).
async fn connect_all(
    cfg: &RunConfig,
    url: &str,
    count: u32,
    role: &str,
) -> Result<Vec<Client>, BenchError> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let url = url.to_owned();
            let config = client_config(cfg);
            let what = format!("{role} {i}: connect to {url}");
            tokio::spawn(async move {
                Client::connect(&url, config)
                    .await
                    .map_err(client_err(what))
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    for t in tasks {
        clients.push(t.await.map_err(|e| BenchError::Worker(e.to_string()))??);
    }
    Ok(clients)
}

/// Runs the workload and returns the report. Every phase is bounded: the run ends after
/// warm-up + duration + the drain, or with an error once any broker operation exceeds the
/// timeout.
pub async fn run(cfg: RunConfig, progress: bool) -> Result<RunReport, BenchError> {
    let cfg = Arc::new(cfg);
    let run_id: Arc<str> = Arc::from(make_run_id().as_str());
    let counters = Arc::new(Counters::default());

    let consumers = connect_all(&cfg, &cfg.consume_url, cfg.args.consumers, "consumer").await?;
    let mut subscriptions: Vec<(Client, Subscription)> = Vec::new();
    let sub_headers: Vec<(&str, &str)> = cfg
        .subscribe_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let ack: AckMode = cfg.args.ack.into();
    for (i, client) in consumers.iter().enumerate() {
        for d in cfg.consumer_destinations(i as u32) {
            let dest = &cfg.destination_names[d];
            let sub = client
                .subscribe(dest, ack, &sub_headers)
                .await
                .map_err(client_err(format!("consumer {i}: subscribe to {dest}")))?;
            subscriptions.push((client.clone(), sub));
        }
    }
    let producers = connect_all(&cfg, &cfg.args.url, cfg.args.producers, "producer").await?;
    let server = producers
        .first()
        .and_then(Client::server)
        .unwrap_or_default();
    let version = producers
        .first()
        .map(|c| c.version().to_string())
        .unwrap_or_default();

    let clock = Clock::start();
    let warmup_ns = duration_ns(cfg.warmup);
    let window = Window {
        start_ns: warmup_ns,
        end_ns: warmup_ns.saturating_add(duration_ns(cfg.duration)),
    };
    let shared = Shared {
        cfg: cfg.clone(),
        clock,
        window,
        run_id,
        counters: counters.clone(),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let consumer_tasks: Vec<JoinHandle<Result<ConsumerOutcome, BenchError>>> = subscriptions
        .into_iter()
        .map(|(client, sub)| tokio::spawn(consume(shared.clone(), client, sub, stop_rx.clone())))
        .collect();
    let progress_task = progress.then(|| tokio::spawn(progress_loop(shared.clone())));

    let schedules = cfg
        .args
        .rate
        .map(|rate| OpenLoopSchedule::split(0, window.end_ns, rate, cfg.args.producers));
    let producer_tasks: Vec<JoinHandle<Result<ProducerOutcome, BenchError>>> = producers
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let schedule = schedules.as_ref().and_then(|s| s.get(i).cloned());
            tokio::spawn(produce(shared.clone(), i, client.clone(), schedule))
        })
        .collect();

    let result = finish(&shared, producer_tasks, consumer_tasks, &stop_tx).await;
    let _ = stop_tx.send(true);
    if let Some(t) = progress_task {
        t.abort();
    }
    for client in producers.into_iter().chain(consumers) {
        // Best effort: a broker that does not answer DISCONNECT must not hold the report.
        let _ = tokio::time::timeout(cfg.timeout, client.disconnect()).await;
    }
    let (p, c, undelivered) = result?;

    let mut send_latency = LatencyHistogram::new();
    let mut sent_in_window = 0;
    let mut unsent = 0;
    for o in &p {
        send_latency.merge(&o.send_latency);
        sent_in_window += o.sent_in_window;
        unsent += o.unsent_behind_schedule;
    }
    let mut e2e = LatencyHistogram::new();
    let mut delivered_in_window = 0;
    for o in &c {
        e2e.merge(&o.end_to_end_latency);
        delivered_in_window += o.delivered_in_window;
    }
    let seconds = cfg.duration.as_secs_f64();
    let sent_total = counters.sent.load(Ordering::Relaxed);
    Ok(RunReport {
        conditions: RunConditions::from_config(&cfg, server, version),
        sent: Throughput::new(sent_in_window, cfg.args.size, seconds),
        delivered: Throughput::new(delivered_in_window, cfg.args.size, seconds),
        send_latency: send_latency.summary(),
        end_to_end_latency: e2e.summary(),
        sent_total,
        delivered_total: counters.delivered.load(Ordering::Relaxed),
        expected_deliveries: sent_total.saturating_mul(cfg.deliveries_per_message()),
        undelivered_after_drain: undelivered,
        unsent_behind_schedule: unsent,
        stale_ignored: counters.stale.load(Ordering::Relaxed),
    })
}

type Outcomes = (Vec<ProducerOutcome>, Vec<ConsumerOutcome>, u64);

/// Waits for the producers, drains, stops the consumers and collects every outcome.
async fn finish(
    shared: &Shared,
    producer_tasks: Vec<JoinHandle<Result<ProducerOutcome, BenchError>>>,
    consumer_tasks: Vec<JoinHandle<Result<ConsumerOutcome, BenchError>>>,
    stop_tx: &watch::Sender<bool>,
) -> Result<Outcomes, BenchError> {
    let mut producer_outcomes = Vec::with_capacity(producer_tasks.len());
    let mut first_error = None;
    for t in producer_tasks {
        match t.await {
            Ok(Ok(o)) => producer_outcomes.push(o),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(BenchError::Worker(e.to_string()));
            }
        }
    }
    if let Some(e) = first_error {
        let _ = stop_tx.send(true);
        return Err(e);
    }

    // Drain: wait until every expected delivery arrived, a consumer failed, or nothing
    // arrived for the timeout.
    let c = &shared.counters;
    let expected = c
        .sent
        .load(Ordering::Relaxed)
        .saturating_mul(shared.cfg.deliveries_per_message());
    let mut last = c.delivered.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    loop {
        let now_delivered = c.delivered.load(Ordering::Relaxed);
        if now_delivered >= expected || consumer_tasks.iter().any(JoinHandle::is_finished) {
            break;
        }
        if now_delivered != last {
            last = now_delivered;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= shared.cfg.timeout {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let undelivered = expected.saturating_sub(c.delivered.load(Ordering::Relaxed));
    let _ = stop_tx.send(true);

    let mut consumer_outcomes = Vec::with_capacity(consumer_tasks.len());
    for t in consumer_tasks {
        // A consumer stops at its next message or at the stop signal, whichever comes first;
        // an ACK in progress is bounded by the timeout.
        let joined = bounded(shared.cfg.timeout * 2, || "consumer shutdown".into(), t).await?;
        consumer_outcomes.push(joined.map_err(|e| BenchError::Worker(e.to_string()))??);
    }
    Ok((producer_outcomes, consumer_outcomes, undelivered))
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn make_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{}", nanos, std::process::id())
}

/// One producer: sends until the window ends (closed loop) or its schedule ends (open loop).
async fn produce(
    shared: Shared,
    index: usize,
    client: Client,
    mut schedule: Option<OpenLoopSchedule>,
) -> Result<ProducerOutcome, BenchError> {
    let cfg = &shared.cfg;
    let t = cfg.timeout;
    let timeout_ns = duration_ns(t);
    let body = Bytes::from(vec![b'x'; cfg.args.size]);
    let names = &cfg.destination_names;
    let window_permits = Arc::new(Semaphore::new(cfg.args.window as usize));
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = cfg.args.receipt.then(|| {
        tokio::spawn(collect_receipts(
            shared.clone(),
            index,
            rx,
            window_permits.clone(),
        ))
    });

    let mut sent_in_window = 0u64;
    let mut unsent_behind_schedule = 0u64;
    let mut k = 0usize;
    loop {
        let ts = match schedule.as_mut() {
            Some(s) => {
                let Some(due) = s.peek() else { break };
                let now = shared.clock.now_ns();
                if due > now {
                    tokio::time::sleep_until(shared.clock.at(due)).await;
                } else if now > shared.window.end_ns.saturating_add(timeout_ns) {
                    // Hopelessly behind: stop rather than run on unbounded past the window.
                    unsent_behind_schedule = s.remaining();
                    break;
                }
                match s.take_due(due.max(shared.clock.now_ns())) {
                    Some(due) => due,
                    None => break,
                }
            }
            None => {
                let now = shared.clock.now_ns();
                if now >= shared.window.end_ns {
                    break;
                }
                now
            }
        };
        let dest = &names[(index + k) % names.len()];
        let ts_value = ts.to_string();
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(3 + cfg.send_headers.len());
        if cfg.args.persistent {
            headers.push(("persistent", "true"));
        }
        headers.push((RUN_HEADER, &shared.run_id));
        headers.push((TS_HEADER, &ts_value));
        headers.extend(
            cfg.send_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );

        if cfg.args.receipt {
            let permit = match bounded(
                t,
                || format!("producer {index}: waiting for a receipt window slot"),
                window_permits.clone().acquire_owned(),
            )
            .await?
            {
                Ok(p) => p,
                // Closed by the collector after a failed receipt: report its error below.
                Err(_) => break,
            };
            let handle = bounded(
                t,
                || format!("producer {index}: SEND"),
                client.send_receipt_handle(dest, body.clone(), &headers),
            )
            .await?
            .map_err(client_err(format!("producer {index}: SEND to {dest}")))?;
            shared
                .counters
                .receipts_in_flight
                .fetch_add(1, Ordering::Relaxed);
            if tx.send((handle, ts, permit)).is_err() {
                break;
            }
        } else {
            bounded(
                t,
                || format!("producer {index}: SEND"),
                client.send(dest, body.clone(), &headers),
            )
            .await?
            .map_err(client_err(format!("producer {index}: SEND to {dest}")))?;
        }
        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        if shared.window.contains(shared.clock.now_ns()) {
            sent_in_window += 1;
        }
        k = k.wrapping_add(1);
    }
    drop(tx);
    let send_latency = match collector {
        // Every receipt wait is bounded by the client's receipt timeout.
        Some(c) => c.await.map_err(|e| BenchError::Worker(e.to_string()))??,
        None => LatencyHistogram::new(),
    };
    Ok(ProducerOutcome {
        sent_in_window,
        send_latency,
        unsent_behind_schedule,
    })
}

/// Awaits receipts in send order (a broker answers one connection's frames in order) and
/// frees a window slot for each.
async fn collect_receipts(
    shared: Shared,
    index: usize,
    mut rx: mpsc::UnboundedReceiver<(ReceiptHandle, u64, OwnedSemaphorePermit)>,
    permits: Arc<Semaphore>,
) -> Result<LatencyHistogram, BenchError> {
    let mut hist = LatencyHistogram::new();
    while let Some((handle, ts, permit)) = rx.recv().await {
        let result = handle.wait().await;
        let now = shared.clock.now_ns();
        shared
            .counters
            .receipts_in_flight
            .fetch_sub(1, Ordering::Relaxed);
        if let Err(source) = result {
            permits.close();
            return Err(BenchError::Client {
                what: format!("producer {index}: RECEIPT"),
                source,
            });
        }
        if shared.window.contains(ts) {
            hist.record_ns(now.saturating_sub(ts));
        }
        drop(permit);
    }
    Ok(hist)
}

/// One subscription of one consumer connection.
async fn consume(
    shared: Shared,
    client: Client,
    mut sub: Subscription,
    mut stop: watch::Receiver<bool>,
) -> Result<ConsumerOutcome, BenchError> {
    let t = shared.cfg.timeout;
    let acks = shared.cfg.args.ack != crate::cli::AckArg::Auto;
    let mut hist = LatencyHistogram::new();
    let mut delivered_in_window = 0u64;
    loop {
        if *stop.borrow() {
            break;
        }
        let msg = tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() { break; }
                continue;
            }
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else {
            let reason = tokio::time::timeout(t, client.closed())
                .await
                .ok()
                .flatten();
            return Err(BenchError::Client {
                what: format!("subscription {}: connection closed", sub.id()),
                source: reason.unwrap_or(ferromq_client::ClientError::Closed),
            });
        };
        let now = shared.clock.now_ns();
        if acks {
            bounded(t, || "ACK".into(), client.ack(&msg, None))
                .await?
                .map_err(client_err("ACK"))?;
        }
        if msg.header(RUN_HEADER) != Some(&*shared.run_id) {
            shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if shared.window.contains(now) {
            delivered_in_window += 1;
        }
        if let Some(ts) = msg.header(TS_HEADER).and_then(|v| v.parse::<u64>().ok()) {
            if shared.window.contains(ts) {
                hist.record_ns(now.saturating_sub(ts));
            }
        }
    }
    drop(sub);
    Ok(ConsumerOutcome {
        delivered_in_window,
        end_to_end_latency: hist,
    })
}

/// Prints one line a second to stderr until aborted.
async fn progress_loop(shared: Shared) {
    let c = &shared.counters;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_sent, mut last_delivered) = (0, 0);
    loop {
        tick.tick().await;
        let now = shared.clock.now_ns();
        let phase = if now < shared.window.start_ns {
            "warm-up"
        } else if now < shared.window.end_ns {
            "measure"
        } else {
            "drain"
        };
        let sent = c.sent.load(Ordering::Relaxed);
        let delivered = c.delivered.load(Ordering::Relaxed);
        eprintln!(
            "[{:6.1}s {phase:7}] sent {:>9} msg/s  delivered {:>9} msg/s  total sent {sent} delivered {delivered}  receipts in flight {}  stale {}",
            now as f64 / 1e9,
            sent - last_sent,
            delivered - last_delivered,
            c.receipts_in_flight.load(Ordering::Relaxed),
            c.stale.load(Ordering::Relaxed),
        );
        last_sent = sent;
        last_delivered = delivered;
    }
}
