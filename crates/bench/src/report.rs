//! Reports: what was run, what was measured, as text for a person and JSON for scripts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::RunConfig;
use crate::durable_write_probe::DurableWriteReport;
use crate::stats::LatencySummary;

/// Said in every run report, so that a figure is never quoted without its method.
pub const OPEN_LOOP_NOTE: &str = "open loop at a fixed rate: latencies are measured from each \
message's scheduled send time (corrected for coordinated omission; includes the tool's ~1 ms \
timer granularity)";
/// The closed-loop counterpart of [`OPEN_LOOP_NOTE`].
pub const CLOSED_LOOP_NOTE: &str = "closed loop, as fast as possible: latencies are measured \
from the actual send time; no coordinated-omission correction applies (the producer only \
sends when the broker lets it)";

/// The workload as run.
#[derive(Debug, Clone, Serialize)]
pub struct RunConditions {
    /// Broker address of the producers.
    pub url: String,
    /// Broker address of the consumers (the same as `url` unless `--consume-url` was given).
    pub consume_url: String,
    /// The CONNECTED `server` header of the first producer connection.
    pub server: String,
    /// Negotiated STOMP version.
    pub stomp_version: String,
    /// STOMP virtual host.
    pub host: String,
    /// Destination names.
    pub destinations: Vec<String>,
    /// True for topics: every consumer subscribes to every destination.
    pub fan_out: bool,
    /// Producer connections.
    pub producers: u32,
    /// Consumer connections.
    pub consumers: u32,
    /// Body size.
    pub size_bytes: usize,
    /// `persistent:true` on every SEND.
    pub persistent: bool,
    /// A RECEIPT requested for every SEND.
    pub receipt: bool,
    /// Receipts in flight per producer.
    pub window: u32,
    /// Consumers' ack mode.
    pub ack: String,
    /// Total fixed rate in msg/s, or `None` for as fast as possible.
    pub rate_per_s: Option<f64>,
    /// How latencies are measured (open or closed loop).
    pub latency_method: String,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Measurement seconds.
    pub duration_s: f64,
    /// Per-operation timeout in seconds.
    pub timeout_s: f64,
}

impl RunConditions {
    /// The conditions of `cfg`, with what the broker told us.
    pub fn from_config(cfg: &RunConfig, server: String, stomp_version: String) -> Self {
        let a = &cfg.args;
        RunConditions {
            url: a.url.clone(),
            consume_url: cfg.consume_url.clone(),
            server,
            stomp_version,
            host: a.host.clone(),
            destinations: cfg.destination_names.clone(),
            fan_out: cfg.fan_out,
            producers: a.producers,
            consumers: a.consumers,
            size_bytes: a.size,
            persistent: a.persistent,
            receipt: a.receipt,
            window: a.window,
            ack: ferromq_client::AckMode::from(a.ack).to_string(),
            rate_per_s: a.rate,
            latency_method: if a.rate.is_some() {
                OPEN_LOOP_NOTE
            } else {
                CLOSED_LOOP_NOTE
            }
            .to_owned(),
            warmup_s: cfg.warmup.as_secs_f64(),
            duration_s: cfg.duration.as_secs_f64(),
            timeout_s: cfg.timeout.as_secs_f64(),
        }
    }
}

/// Messages counted in the measurement window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Messages in the window.
    pub messages: u64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Body megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
}

impl Throughput {
    /// `messages` of `size_bytes` over `seconds`.
    pub fn new(messages: u64, size_bytes: usize, seconds: f64) -> Self {
        let secs = if seconds > 0.0 {
            seconds
        } else {
            f64::INFINITY
        };
        let msgs_per_s = messages as f64 / secs;
        Throughput {
            messages,
            msgs_per_s,
            mb_per_s: msgs_per_s * size_bytes as f64 / 1e6,
        }
    }
}

/// The result of `ferromq-bench run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The workload.
    pub conditions: RunConditions,
    /// SENDs completed in the window (with receipts: queued; the receipt is in `send_latency`).
    pub sent: Throughput,
    /// Deliveries in the window (on a topic, each subscriber's copy counts).
    pub delivered: Throughput,
    /// SEND → RECEIPT, for messages sent in the window; `None` without `--receipt`.
    pub send_latency: Option<LatencySummary>,
    /// `bench-ts` (send time) → delivery, for messages sent in the window.
    pub end_to_end_latency: Option<LatencySummary>,
    /// Messages sent over the whole run (warm-up included).
    pub sent_total: u64,
    /// Deliveries of this run's messages over the whole run.
    pub delivered_total: u64,
    /// `sent_total` × deliveries per message (consumers on a topic, 1 on a queue).
    pub expected_deliveries: u64,
    /// Expected deliveries still missing when the drain ended.
    pub undelivered_after_drain: u64,
    /// Open loop only: scheduled messages never sent because the producer fell more than the
    /// timeout behind.
    pub unsent_behind_schedule: u64,
    /// Messages of earlier runs found on the destinations, acknowledged and ignored.
    pub stale_ignored: u64,
}

/// The result of `ferromq-bench fsync-probe`.
#[derive(Debug, Clone, Serialize)]
pub struct FsyncReport {
    /// Appending threads.
    pub threads: u32,
    /// Record size.
    pub size_bytes: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Directory of the file.
    pub dir: String,
    /// Records appended and made durable.
    pub records: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Records per second.
    pub records_per_s: f64,
    /// Syncs per second.
    pub syncs_per_s: f64,
    /// Mean records made durable by one sync (group-commit factor).
    pub records_per_sync: f64,
    /// Append → durable, per record.
    pub latency: Option<LatencySummary>,
    /// Duration of each `fdatasync` call.
    pub sync_latency: Option<LatencySummary>,
}

/// Pretty JSON of any report.
pub fn to_json<T: Serialize>(report: &T) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn latency_header(out: &mut String) {
    let _ = writeln!(
        out,
        "  {:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (µs)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
}

fn latency_row(out: &mut String, name: &str, s: Option<&LatencySummary>, missing: &str) {
    match s {
        Some(s) => {
            let _ = writeln!(
                out,
                "  {:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name, s.count, s.p50_us, s.p90_us, s.p99_us, s.p99_9_us, s.max_us
            );
        }
        None => {
            let _ = writeln!(out, "  {name:<18} {missing}");
        }
    }
}

/// The run report for a person.
pub fn run_text(r: &RunReport) -> String {
    let c = &r.conditions;
    let mut out = String::new();
    let dests = if c.destinations.len() == 1 {
        c.destinations[0].clone()
    } else {
        format!(
            "{} .. {} ({})",
            c.destinations[0],
            c.destinations[c.destinations.len() - 1],
            c.destinations.len()
        )
    };
    let _ = writeln!(
        out,
        "ferromq-bench run → {} (server {:?}, STOMP {})",
        c.url, c.server, c.stomp_version
    );
    if c.consume_url != c.url {
        let _ = writeln!(out, "  consumers on {}", c.consume_url);
    }
    let _ = writeln!(
        out,
        "  {} producer(s) → {} consumer(s) on {dests}{}; {} B bodies, {}, {}, ack {}",
        c.producers,
        c.consumers,
        if c.fan_out { " (fan-out)" } else { "" },
        c.size_bytes,
        if c.persistent {
            "persistent"
        } else {
            "non-persistent"
        },
        if c.receipt {
            format!("receipt window {}", c.window)
        } else {
            "no receipts".into()
        },
        c.ack
    );
    let _ = writeln!(
        out,
        "  rate: {}; {} s measured after {} s warm-up",
        match c.rate_per_s {
            Some(r) => format!("fixed {r} msg/s total"),
            None => "as fast as possible".into(),
        },
        c.duration_s,
        c.warmup_s
    );
    let _ = writeln!(out, "  latency method: {}", c.latency_method);
    let _ = writeln!(
        out,
        "  throughput: sent {:.0} msg/s ({:.2} MB/s), delivered {:.0} msg/s ({:.2} MB/s)",
        r.sent.msgs_per_s, r.sent.mb_per_s, r.delivered.msgs_per_s, r.delivered.mb_per_s
    );
    latency_header(&mut out);
    latency_row(
        &mut out,
        "send→receipt",
        r.send_latency.as_ref(),
        "(no receipts requested)",
    );
    latency_row(
        &mut out,
        "end-to-end",
        r.end_to_end_latency.as_ref(),
        "(nothing delivered in the window)",
    );
    let _ = writeln!(
        out,
        "  totals: sent {}, delivered {} of {} expected, undelivered after drain {}, unsent behind schedule {}, stale ignored {}",
        r.sent_total,
        r.delivered_total,
        r.expected_deliveries,
        r.undelivered_after_drain,
        r.unsent_behind_schedule,
        r.stale_ignored
    );
    out
}

/// The fsync probe report for a person.
pub fn fsync_text(r: &FsyncReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ferromq-bench fsync-probe: {} thread(s), {} B records, write + fdatasync with group commit, {:.2} s in {}",
        r.threads, r.size_bytes, r.duration_s, r.dir
    );
    let _ = writeln!(
        out,
        "  {:.0} records/s, {:.0} syncs/s, {:.2} records/sync ({} records, {} syncs)",
        r.records_per_s, r.syncs_per_s, r.records_per_sync, r.records, r.syncs
    );
    latency_header(&mut out);
    latency_row(&mut out, "append→durable", r.latency.as_ref(), "(none)");
    latency_row(&mut out, "fdatasync", r.sync_latency.as_ref(), "(none)");
    out
}

/// The durable-write probe report for a person.
pub fn durable_write_text(r: &DurableWriteReport) -> String {
    let mut out = String::new();
    let how = match (r.mode, r.preallocated) {
        (crate::durable_write_probe::WriteMode::DirectDsync, _) => {
            "O_DIRECT | O_DSYNC pwrite to a preallocated zero-filled file"
        }
        (_, true) => "pwrite + fdatasync per thread, overwriting a preallocated zero-filled file",
        (_, false) => "pwrite + fdatasync per thread, appending",
    };
    let _ = writeln!(
        out,
        "ferromq-bench fsync-probe --mode {}: {} in flight, {} B records ({} B written each), {how}, {:.2} s in {} ({})",
        r.mode.name(),
        r.in_flight,
        r.size_bytes,
        r.write_bytes,
        r.duration_s,
        r.dir,
        r.filesystem.as_deref().unwrap_or("filesystem unknown"),
    );
    if let Some(d) = &r.device {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "  device {}: fua {}, write_cache {}, logical/physical block {}/{} B, rotational {}",
            d.name,
            show(&d.fua),
            show(&d.write_cache),
            d.logical_block_bytes.map_or("?".into(), |b| b.to_string()),
            d.physical_block_bytes.map_or("?".into(), |b| b.to_string()),
            show(&d.rotational),
        );
    }
    let _ = writeln!(
        out,
        "  {:.0} writes/s, {:.2} MB/s payload, {:.2} MB/s written ({} writes)",
        r.writes_per_s, r.payload_mb_per_s, r.written_mb_per_s, r.writes
    );
    latency_header(&mut out);
    latency_row(&mut out, "write→durable", r.latency.as_ref(), "(none)");
    out
}
