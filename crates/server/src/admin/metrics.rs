//! Prometheus `/metrics`, text exposition format 0.0.4.
//!
//! Everything is read when the scrape comes, from counters the broker, the store and the
//! connectors keep anyway ([`Broker::snapshot`], [`Broker::topic_subscriptions`],
//! [`MessageStore::usage_bytes`], the connection registry): serving metrics adds no work to the
//! message path.
//!
//! The text is rendered here rather than through `prometheus-client`: that crate's model is a
//! registry of long-lived metric objects updated as events happen, which is exactly the
//! per-message work this endpoint avoids; its scrape-time collector API would still mean
//! building every family on each scrape. The format needed is small — `# HELP`/`# TYPE` lines
//! and `name{label="value"} number` samples with escaped label values — and tests parse it.
//!
//! [`Broker::snapshot`]: ferromq_broker::Broker::snapshot
//! [`Broker::topic_subscriptions`]: ferromq_broker::Broker::topic_subscriptions
//! [`MessageStore::usage_bytes`]: ferromq_store::MessageStore::usage_bytes

use std::collections::BTreeMap;
use std::fmt::Write;

use ferromq_broker::ListSnapshot;
use ferromq_store::{CommitStatsSnapshot, Histogram, HistogramSnapshot};

use super::{LiveServer, Status};

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label value destinations beyond the series cap are summed under.
pub const OTHER_DESTINATION: &str = "_other";

/// Counters of one destination (a queue, or a topic summed over its subscriptions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationCounters {
    /// Messages not yet acknowledged: waiting plus delivered and unacknowledged.
    pub depth: u64,
    /// Delivered and not yet acknowledged.
    pub inflight: u64,
    /// Consumers attached.
    pub consumers: u64,
    /// Producers with the destination as their fixed destination (OpenWire; queues only).
    pub producers: u64,
    /// Subscriptions (topics only).
    pub subscriptions: u64,
    /// Message bytes held in memory.
    pub memory_bytes: u64,
    /// The memory windows of its lists (`policy.memory_limit_bytes`), summed.
    pub memory_limit_bytes: u64,
    /// Pending messages held only in the store (paged out past the memory window).
    pub paged_out: u64,
    /// Messages added (for a topic: copies added to its subscriptions).
    pub enqueued: u64,
    /// Messages acknowledged.
    pub dequeued: u64,
    /// Deliveries made, redeliveries included.
    pub dispatched: u64,
    /// Messages that expired.
    pub expired: u64,
    /// Messages that exceeded their redeliveries (sent to the DLQ or dropped).
    pub dead_lettered: u64,
    /// Messages discarded because a non-durable subscriber fell behind (topics).
    pub discarded: u64,
}

impl DestinationCounters {
    /// Adds one list's counters.
    pub fn add(&mut self, s: &ListSnapshot) {
        self.depth += s.pending + s.inflight;
        self.inflight += s.inflight;
        self.consumers += s.consumers;
        self.producers += s.producers;
        self.memory_bytes += s.memory_bytes;
        self.memory_limit_bytes += s.memory_limit_bytes;
        self.paged_out += s.paged_out;
        self.enqueued += s.stats.enqueued;
        self.dequeued += s.stats.dequeued;
        self.dispatched += s.stats.dispatched;
        self.expired += s.stats.expired;
        self.dead_lettered += s.stats.poisoned;
        self.discarded += s.stats.discarded;
    }

    fn merge(&mut self, o: &DestinationCounters) {
        self.depth += o.depth;
        self.inflight += o.inflight;
        self.consumers += o.consumers;
        self.producers += o.producers;
        self.subscriptions += o.subscriptions;
        self.memory_bytes += o.memory_bytes;
        self.memory_limit_bytes += o.memory_limit_bytes;
        self.paged_out += o.paged_out;
        self.enqueued += o.enqueued;
        self.dequeued += o.dequeued;
        self.dispatched += o.dispatched;
        self.expired += o.expired;
        self.dead_lettered += o.dead_lettered;
        self.discarded += o.discarded;
    }
}

/// Queues by name (`queue://` and `temp-queue://` lists of a broker snapshot).
pub fn queues(snapshot: &[ListSnapshot]) -> BTreeMap<String, (bool, DestinationCounters)> {
    let mut out = BTreeMap::new();
    for s in snapshot {
        let (name, temporary) = if let Some(n) = s.name.strip_prefix("queue://") {
            (n, false)
        } else if let Some(n) = s.name.strip_prefix("temp-queue://") {
            (n, true)
        } else {
            continue;
        };
        let mut c = DestinationCounters::default();
        c.add(s);
        out.insert(name.to_string(), (temporary, c));
    }
    out
}

/// Topics (and wildcard patterns) by name, summed over their subscriptions.
pub fn topics(
    subs: &[ferromq_broker::TopicSubscriptionSnapshot],
) -> BTreeMap<String, (u64, DestinationCounters)> {
    let mut out: BTreeMap<String, (u64, DestinationCounters)> = BTreeMap::new();
    for s in subs {
        let e = out.entry(s.topic.clone()).or_default();
        if s.durable {
            e.0 += 1;
        }
        e.1.subscriptions += 1;
        e.1.add(&s.list);
    }
    out
}

/// Keeps the first `max` destinations (by name) and sums the rest under
/// [`OTHER_DESTINATION`].
fn capped<'a>(
    all: impl Iterator<Item = (&'a String, DestinationCounters)>,
    max: usize,
) -> Vec<(String, DestinationCounters)> {
    let mut out: Vec<(String, DestinationCounters)> = Vec::new();
    let mut other: Option<DestinationCounters> = None;
    for (i, (name, c)) in all.enumerate() {
        if i < max {
            out.push((name.clone(), c));
        } else {
            other.get_or_insert_with(Default::default).merge(&c);
        }
    }
    if let Some(o) = other {
        out.push((OTHER_DESTINATION.to_string(), o));
    }
    out
}

/// Everything a scrape reports, gathered before rendering so that rendering is a pure function.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The broker's name, HA mode, role and epoch.
    pub status: Status,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
    /// Present while this process is master.
    pub master: Option<MasterScrape>,
    /// Present while this process is a replicating master.
    pub replication: Option<ferromq_ha::Replication>,
    /// Network bridges: connector name, connected now, messages forwarded, messages pulled.
    pub bridges: Vec<(String, bool, u64, u64)>,
    /// When the scrape was gathered: an ongoing suspension counts up to here. `None` (tests):
    /// it counts nothing yet.
    pub gathered_at: Option<std::time::SystemTime>,
}

/// What only a serving master reports.
#[derive(Debug, Clone, Default)]
pub struct MasterScrape {
    /// Store backend kind.
    pub store_kind: &'static str,
    /// Bytes of message data in the store.
    pub store_usage_bytes: u64,
    /// `store.store_usage_limit` (0 = none).
    pub store_usage_limit_bytes: u64,
    /// Per-destination memory limit (`policy.memory_limit_bytes`).
    pub destination_memory_limit_bytes: u64,
    /// Open connections per protocol, and accepted since start.
    pub connections: Vec<(&'static str, u64, u64)>,
    /// Queues by name.
    pub queues: Vec<(String, DestinationCounters)>,
    /// Topics by name.
    pub topics: Vec<(String, DestinationCounters)>,
    /// The store's group-commit statistics, when it keeps them.
    pub commit: Option<CommitStatsSnapshot>,
}

impl Scrape {
    /// Reads a scrape from a master's broker and connection registry.
    pub fn gather(
        status: Status,
        uptime_seconds: f64,
        live: Option<&LiveServer>,
        destinations_max: usize,
    ) -> Scrape {
        let master = live.map(|l| {
            let b = &l.broker;
            let conns = l.connections.snapshot();
            let connections = ["stomp", "openwire"]
                .into_iter()
                .map(|p| {
                    let open = conns.iter().filter(|c| c.protocol == p).count() as u64;
                    (p, open, l.connections.accepted_total(p))
                })
                .collect();
            let q = queues(&b.snapshot());
            let t = topics(&b.topic_subscriptions());
            MasterScrape {
                store_kind: b.store().kind(),
                store_usage_bytes: b.store().usage_bytes(),
                store_usage_limit_bytes: b.config().store_usage_limit_bytes,
                destination_memory_limit_bytes: b.config().destination_memory_limit_bytes,
                connections,
                queues: capped(q.iter().map(|(n, (_, c))| (n, *c)), destinations_max),
                topics: capped(t.iter().map(|(n, (_, c))| (n, *c)), destinations_max),
                commit: b.store().commit_stats(),
            }
        });
        use std::sync::atomic::Ordering::Relaxed;
        let replication = status.replication.read();
        let bridges = status
            .bridges
            .snapshot()
            .into_iter()
            .map(|b| {
                (
                    b.connector,
                    b.stats.connected.load(Relaxed),
                    b.stats.forwarded.load(Relaxed),
                    b.stats.pulled.load(Relaxed),
                )
            })
            .collect();
        Scrape {
            status,
            uptime_seconds,
            master,
            replication,
            bridges,
            gathered_at: Some(std::time::SystemTime::now()),
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut o = Out::default();
        let s = &self.status;
        o.family(
            "ferromq_info",
            "gauge",
            "Always 1; labels name the broker, its version and HA mode.",
        );
        o.sample(
            "ferromq_info",
            &[
                ("broker", &s.broker),
                ("version", env!("CARGO_PKG_VERSION")),
                ("ha_mode", &s.ha_mode),
            ],
            1.0,
        );
        o.family(
            "ferromq_uptime_seconds",
            "gauge",
            "Seconds since the process started.",
        );
        o.sample("ferromq_uptime_seconds", &[], self.uptime_seconds);
        o.family(
            "ferromq_role",
            "gauge",
            "1 for the role this broker is in now (starting, slave, master, deposed).",
        );
        o.sample("ferromq_role", &[("role", &s.role)], 1.0);
        o.family(
            "ferromq_master",
            "gauge",
            "1 while this broker is the serving master, else 0.",
        );
        o.sample(
            "ferromq_master",
            &[],
            if self.master.is_some() { 1.0 } else { 0.0 },
        );
        o.family(
            "ferromq_ha_epoch",
            "gauge",
            "The mastership epoch (0 when not master or without HA).",
        );
        o.sample("ferromq_ha_epoch", &[], s.epoch as f64);
        failover_families(&mut o, &s.failover, self.gathered_at);
        if let Some(r) = &self.replication {
            replication_families(&mut o, r);
        }
        if !self.bridges.is_empty() {
            bridge_families(&mut o, &self.bridges);
        }
        let Some(m) = &self.master else {
            return o.text;
        };
        o.family(
            "ferromq_store_usage_bytes",
            "gauge",
            "Bytes of message data the store holds.",
        );
        o.sample(
            "ferromq_store_usage_bytes",
            &[("store", m.store_kind)],
            m.store_usage_bytes as f64,
        );
        o.family(
            "ferromq_store_usage_limit_bytes",
            "gauge",
            "store.store_usage_limit: producers of persistent messages wait above it (0 = none).",
        );
        o.sample(
            "ferromq_store_usage_limit_bytes",
            &[],
            m.store_usage_limit_bytes as f64,
        );
        o.family(
            "ferromq_destination_memory_limit_bytes",
            "gauge",
            "policy.memory_limit_bytes: per-destination memory before producer flow control.",
        );
        o.sample(
            "ferromq_destination_memory_limit_bytes",
            &[],
            m.destination_memory_limit_bytes as f64,
        );
        o.family(
            "ferromq_connections",
            "gauge",
            "Client connections open now.",
        );
        for (p, open, _) in &m.connections {
            o.sample("ferromq_connections", &[("protocol", p)], *open as f64);
        }
        o.family(
            "ferromq_connections_accepted_total",
            "counter",
            "Client connections accepted since this broker became master.",
        );
        for (p, _, total) in &m.connections {
            o.sample(
                "ferromq_connections_accepted_total",
                &[("protocol", p)],
                *total as f64,
            );
        }
        if let Some(c) = &m.commit {
            commit_families(&mut o, c);
        }
        destination_families(&mut o, "queue", &m.queues);
        destination_families(&mut o, "topic", &m.topics);
        o.text
    }
}

/// The failover history (kept across restarts, so these counters reset only with the history
/// file). Reasons are free text (they carry durations), so they stay out of the labels
/// (unbounded series) and are served by `/api/v1/ha` instead.
fn failover_families(o: &mut Out, f: &super::Failover, now: Option<std::time::SystemTime>) {
    o.family(
        "ferromq_ha_became_master_total",
        "counter",
        "Times this broker became master and served clients.",
    );
    o.sample("ferromq_ha_became_master_total", &[], f.masterships as f64);
    o.family(
        "ferromq_ha_lost_mastership_total",
        "counter",
        "Times this broker lost mastership (stepped down, lost its lock, store failed).",
    );
    o.sample("ferromq_ha_lost_mastership_total", &[], f.losses as f64);
    let secs = |t: std::time::SystemTime| super::unix_ms(t) as f64 / 1000.0;
    if let Some(b) = &f.last_became_master {
        o.family(
            "ferromq_ha_last_became_master_timestamp_seconds",
            "gauge",
            "Unix time this broker last became master.",
        );
        o.sample(
            "ferromq_ha_last_became_master_timestamp_seconds",
            &[],
            secs(b.at),
        );
        if let Some(d) = b.takeover {
            o.family(
                "ferromq_ha_last_takeover_seconds",
                "gauge",
                "The last takeover: seconds from seeing the previous master gone (or starting to compete, with none) to serving clients.",
            );
            o.sample("ferromq_ha_last_takeover_seconds", &[], d.as_secs_f64());
        }
    }
    if let Some(l) = &f.last_lost {
        o.family(
            "ferromq_ha_last_lost_mastership_timestamp_seconds",
            "gauge",
            "Unix time this broker last lost mastership.",
        );
        o.sample(
            "ferromq_ha_last_lost_mastership_timestamp_seconds",
            &[],
            secs(l.at),
        );
    }
    o.family(
        "ferromq_ha_suspensions_total",
        "counter",
        "Times this broker, as master, was suspended: confirming and dispatching nothing while its HA coordination (ZooKeeper, the heartbeat lease) was unreachable.",
    );
    o.sample("ferromq_ha_suspensions_total", &[], f.suspensions as f64);
    o.family(
        "ferromq_ha_suspended",
        "gauge",
        "1 while this broker is a suspended master, else 0.",
    );
    o.sample(
        "ferromq_ha_suspended",
        &[],
        if f.suspended_now() { 1.0 } else { 0.0 },
    );
    o.family(
        "ferromq_ha_suspended_seconds_total",
        "counter",
        "Seconds this broker spent suspended as master, an ongoing suspension counted up to the scrape.",
    );
    o.sample(
        "ferromq_ha_suspended_seconds_total",
        &[],
        f.suspended_total(now.unwrap_or(std::time::UNIX_EPOCH))
            .as_secs_f64(),
    );
}

fn replication_families(o: &mut Out, r: &ferromq_ha::Replication) {
    o.family(
        "ferromq_replication_last_lsn",
        "gauge",
        "The last replication log position this master assigned.",
    );
    o.sample("ferromq_replication_last_lsn", &[], r.last_lsn as f64);
    o.family(
        "ferromq_replication_slaves",
        "gauge",
        "Slaves connected to this master and streaming.",
    );
    o.sample("ferromq_replication_slaves", &[], r.slaves.len() as f64);
    o.family(
        "ferromq_replication_lag_entries",
        "gauge",
        "Log entries this master assigned that the slave has not acknowledged (as ha.sync counts).",
    );
    // One series per connected slave: at most ha.replicas - 1.
    for sl in &r.slaves {
        o.sample(
            "ferromq_replication_lag_entries",
            &[("slave", &sl.member)],
            sl.lag_entries as f64,
        );
    }
}

fn bridge_families(o: &mut Out, bridges: &[(String, bool, u64, u64)]) {
    o.family(
        "ferromq_bridge_connected",
        "gauge",
        "1 while the network bridge has a connection up, 0 while it is connecting.",
    );
    for (name, connected, _, _) in bridges {
        let v = if *connected { 1.0 } else { 0.0 };
        o.sample("ferromq_bridge_connected", &[("bridge", name)], v);
    }
    o.family(
        "ferromq_bridge_forwarded_total",
        "counter",
        "Messages the bridge sent to its remote broker and the remote confirmed.",
    );
    for (name, _, forwarded, _) in bridges {
        o.sample(
            "ferromq_bridge_forwarded_total",
            &[("bridge", name)],
            *forwarded as f64,
        );
    }
    o.family(
        "ferromq_bridge_pulled_total",
        "counter",
        "Duplex bridges: messages pulled from the remote broker and stored here.",
    );
    for (name, _, _, pulled) in bridges {
        o.sample(
            "ferromq_bridge_pulled_total",
            &[("bridge", name)],
            *pulled as f64,
        );
    }
}

/// Buckets rendered for batches per group: `le` 1 to 4096 (the journal's group bound), then
/// `+Inf`.
const GROUP_BUCKETS: std::ops::RangeInclusive<usize> = 0..=12;

/// Buckets rendered for messages per group: `le` 1 to 65536 (4096 batches can be transactions
/// of many messages each), then `+Inf`.
const MESSAGE_BUCKETS: std::ops::RangeInclusive<usize> = 0..=16;

/// Buckets rendered for durations kept in nanoseconds: `le` 2^10 ns (about 1 µs) to 2^35 ns
/// (about 34 s), then `+Inf`. Fixed, so every scrape has the same series.
const SECONDS_BUCKETS: std::ops::RangeInclusive<usize> = 10..=35;

fn commit_families(o: &mut Out, c: &CommitStatsSnapshot) {
    o.histogram(
        "ferromq_store_group_commit_size",
        "Client batches made durable by one store sync: one per send, receipted ack or transaction, however many messages it holds (messages: ferromq_store_group_commit_messages).",
        &c.group_batches,
        GROUP_BUCKETS,
        1.0,
    );
    o.histogram(
        "ferromq_store_group_commit_messages",
        "Messages (enqueues) made durable by one store sync, counted over the same syncs as ferromq_store_group_commit_size; acks count 0.",
        &c.group_messages,
        MESSAGE_BUCKETS,
        1.0,
    );
    o.histogram(
        "ferromq_store_sync_seconds",
        "Duration of one store sync (journal: fdatasync; lsm: the WAL write and sync; sql: the group's transaction).",
        &c.sync_ns,
        SECONDS_BUCKETS,
        1e9,
    );
    o.histogram(
        "ferromq_store_commit_wait_seconds",
        "From a batch's submission to the store until it is durable and confirmed.",
        &c.commit_wait_ns,
        SECONDS_BUCKETS,
        1e9,
    );
}

type Field = fn(&DestinationCounters) -> u64;

fn destination_families(o: &mut Out, kind: &str, all: &[(String, DestinationCounters)]) {
    let mut families: Vec<(&str, &str, &str, Field)> = vec![
        (
            "depth",
            "gauge",
            "Messages not yet acknowledged (waiting plus in flight).",
            |c| c.depth,
        ),
        (
            "inflight",
            "gauge",
            "Messages delivered and not yet acknowledged.",
            |c| c.inflight,
        ),
        ("consumers", "gauge", "Consumers attached.", |c| c.consumers),
        (
            "memory_bytes",
            "gauge",
            "Message bytes held in memory.",
            |c| c.memory_bytes,
        ),
        (
            "paged_out",
            "gauge",
            "Waiting messages held only in the store (paged out past the memory window).",
            |c| c.paged_out,
        ),
        (
            "enqueued_total",
            "counter",
            "Messages added since this broker became master.",
            |c| c.enqueued,
        ),
        (
            "dequeued_total",
            "counter",
            "Messages acknowledged since this broker became master.",
            |c| c.dequeued,
        ),
        (
            "dispatched_total",
            "counter",
            "Deliveries made, redeliveries included.",
            |c| c.dispatched,
        ),
        ("expired_total", "counter", "Messages that expired.", |c| {
            c.expired
        }),
        (
            "dead_lettered_total",
            "counter",
            "Messages that exceeded their redeliveries.",
            |c| c.dead_lettered,
        ),
    ];
    if kind == "queue" {
        families.push((
            "producers",
            "gauge",
            "OpenWire producers with the queue as their fixed destination.",
            |c| c.producers,
        ));
    }
    if kind == "topic" {
        families.push((
            "subscriptions",
            "gauge",
            "Subscriptions bound to the topic.",
            |c| c.subscriptions,
        ));
        families.push((
            "discarded_total",
            "counter",
            "Messages discarded because a non-durable subscriber fell behind.",
            |c| c.discarded,
        ));
    }
    for (suffix, ty, help, field) in families {
        let name = format!("ferromq_{kind}_{suffix}");
        o.family(&name, ty, help);
        for (dest, c) in all {
            o.sample(&name, &[("destination", dest)], field(c) as f64);
        }
    }
}

#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, ty: &str, help: &str) {
        // HELP text escapes only `\` and newline in this format.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {ty}");
    }

    /// A histogram family: cumulative `_bucket{le}` samples for the log2 buckets in `range`
    /// (upper bounds divided by `divisor`: 1e9 renders nanoseconds as seconds), `+Inf`, `_sum`
    /// (divided likewise) and `_count`.
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        h: &HistogramSnapshot,
        range: std::ops::RangeInclusive<usize>,
        divisor: f64,
    ) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let cumulative = h.cumulative();
        // Count from the same buckets as the `le` samples, so `+Inf` equals `_count`.
        let count = h.count();
        for i in range {
            // Division (not a multiplication by 1e-9) is correctly rounded, so a bound prints
            // as its shortest decimal: 2^10 ns is "0.000001024".
            let le = (Histogram::bucket_upper(i) as f64 / divisor).to_string();
            self.sample(&bucket, &[("le", &le)], cumulative[i] as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], count as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum as f64 / divisor);
        self.sample(&format!("{name}_count"), &[], count as f64);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the format wants it: `\`, `"` and newline escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_broker::ListStats;

    fn list(name: &str, pending: u64, enqueued: u64) -> ListSnapshot {
        ListSnapshot {
            name: name.into(),
            pending,
            inflight: 1,
            consumers: 2,
            producers: 1,
            memory_bytes: 10,
            memory_limit_bytes: 100,
            paged_out: 0,
            stats: ListStats {
                enqueued,
                dequeued: 3,
                ..ListStats::default()
            },
        }
    }

    /// One parsed sample: metric name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A small parser of the text format: each line a comment or `name{labels} value`.
    pub(crate) fn parse(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), vec![]),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = vec![];
                    let mut chars = body.chars().peekable();
                    while chars.peek().is_some() {
                        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                        assert_eq!(chars.next(), Some('"'), "{line}");
                        let mut v = String::new();
                        loop {
                            match chars.next().expect("unterminated label") {
                                '\\' => match chars.next().unwrap() {
                                    'n' => v.push('\n'),
                                    c => v.push(c),
                                },
                                '"' => break,
                                c => v.push(c),
                            }
                        }
                        labels.push((key, v));
                        if chars.peek() == Some(&',') {
                            chars.next();
                        }
                    }
                    (n.to_string(), labels)
                }
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "metric name {name:?}"
            );
            out.push((name, labels, value));
        }
        out
    }

    fn value(samples: &[Sample], name: &str, dest: &str) -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.iter().any(|(k, v)| k == "destination" && v == dest))
            .unwrap_or_else(|| panic!("no {name}{{destination={dest:?}}}"))
            .2
    }

    #[test]
    fn queues_beyond_the_cap_are_summed_under_other() {
        let snap = vec![
            list("queue://a", 5, 7),
            list("queue://b\"\\\n", 1, 1),
            list("queue://c", 2, 4),
            list("topic://t#1", 100, 100),
        ];
        let q = queues(&snap);
        let m = MasterScrape {
            store_kind: "memory",
            queues: capped(q.iter().map(|(n, (_, c))| (n, *c)), 2),
            ..MasterScrape::default()
        };
        let text = Scrape {
            status: Status {
                broker: "b1".into(),
                role: "master".into(),
                ..Status::default()
            },
            uptime_seconds: 1.5,
            master: Some(m),
            ..Scrape::default()
        }
        .render();
        let samples = parse(&text);
        assert_eq!(value(&samples, "ferromq_queue_depth", "a"), 6.0);
        // The awkward name survives escaping and parsing.
        assert_eq!(value(&samples, "ferromq_queue_depth", "b\"\\\n"), 2.0);
        // `c` is third: over the cap of 2.
        assert_eq!(value(&samples, "ferromq_queue_depth", "_other"), 3.0);
        assert_eq!(
            value(&samples, "ferromq_queue_enqueued_total", "_other"),
            4.0
        );
        assert!(!text.contains("destination=\"c\""), "{text}");
        assert!(text.contains("# TYPE ferromq_queue_enqueued_total counter\n"));
        assert!(text.contains("ferromq_master 1\n"));
        assert!(text.contains("ferromq_role{role=\"master\"} 1\n"));
    }

    #[test]
    fn commit_statistics_render_as_prometheus_histograms() {
        let stats = ferromq_store::CommitStats::default();
        for n in [1u64, 3, 3, 100] {
            stats.group_batches.record(n);
        }
        // One group of 3 batches stored a transaction of 50 messages.
        for n in [1u64, 3, 52, 100] {
            stats.group_messages.record(n);
        }
        stats.sync_ns.record(500); // under the lowest rendered bound (2^10 ns)
        stats.sync_ns.record(3_000_000); // 3 ms: le 2^22 ns
        let m = MasterScrape {
            store_kind: "journal",
            commit: Some(stats.snapshot()),
            ..MasterScrape::default()
        };
        let text = Scrape {
            master: Some(m),
            ..Scrape::default()
        }
        .render();
        assert!(text.contains("# TYPE ferromq_store_group_commit_size histogram\n"));
        let samples = parse(&text);
        let get = |name: &str, le: Option<&str>| {
            samples
                .iter()
                .find(|(n, l, _)| {
                    n == name && le.is_none_or(|le| l.iter().any(|(k, v)| k == "le" && v == le))
                })
                .unwrap_or_else(|| panic!("no {name} {le:?} in\n{text}"))
                .2
        };
        let size = "ferromq_store_group_commit_size_bucket";
        assert_eq!(get(size, Some("1")), 1.0);
        assert_eq!(get(size, Some("2")), 1.0);
        assert_eq!(get(size, Some("4")), 3.0);
        assert_eq!(get(size, Some("128")), 4.0);
        assert_eq!(get(size, Some("+Inf")), 4.0);
        assert_eq!(get("ferromq_store_group_commit_size_count", None), 4.0);
        assert_eq!(get("ferromq_store_group_commit_size_sum", None), 107.0);
        let msgs = "ferromq_store_group_commit_messages_bucket";
        assert_eq!(get(msgs, Some("4")), 2.0);
        assert_eq!(get(msgs, Some("64")), 3.0);
        assert_eq!(get(msgs, Some("65536")), 4.0);
        assert_eq!(get(msgs, Some("+Inf")), 4.0);
        assert_eq!(get("ferromq_store_group_commit_messages_sum", None), 156.0);
        let sync = "ferromq_store_sync_seconds_bucket";
        assert_eq!(get(sync, Some("0.000001024")), 1.0);
        assert_eq!(get(sync, Some("0.002097152")), 1.0);
        assert_eq!(get(sync, Some("0.004194304")), 2.0);
        assert_eq!(get("ferromq_store_sync_seconds_count", None), 2.0);
        assert!((get("ferromq_store_sync_seconds_sum", None) - 0.0030005).abs() < 1e-12);
        assert_eq!(get("ferromq_store_commit_wait_seconds_count", None), 0.0);
        // Buckets are cumulative: never decreasing with `le`.
        for family in [size, sync] {
            let values: Vec<f64> = samples
                .iter()
                .filter(|(n, _, _)| n == family)
                .map(|s| s.2)
                .collect();
            assert!(
                values.windows(2).all(|w| w[0] <= w[1]),
                "{family}: {values:?}"
            );
        }
    }

    #[test]
    fn replication_lag_is_one_series_per_slave() {
        let r = ferromq_ha::Replication {
            last_lsn: 100,
            slaves: vec![
                ferromq_ha::SlaveReplication {
                    member: "b2".into(),
                    acked_lsn: 90,
                    lag_entries: 10,
                    ..Default::default()
                },
                ferromq_ha::SlaveReplication {
                    member: "b3".into(),
                    acked_lsn: 100,
                    lag_entries: 0,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = Scrape {
            replication: Some(r),
            bridges: vec![("to-b".into(), true, 7, 0)],
            ..Scrape::default()
        }
        .render();
        let samples = parse(&text);
        let lag = |slave: &str| {
            samples
                .iter()
                .find(|(n, l, _)| {
                    n == "ferromq_replication_lag_entries"
                        && l == &vec![("slave".to_string(), slave.to_string())]
                })
                .unwrap_or_else(|| panic!("no lag for {slave}:\n{text}"))
                .2
        };
        assert_eq!(lag("b2"), 10.0);
        assert_eq!(lag("b3"), 0.0);
        assert!(text.contains("ferromq_replication_slaves 2\n"), "{text}");
        assert!(text.contains("ferromq_bridge_forwarded_total{bridge=\"to-b\"} 7\n"));
        assert!(text.contains("ferromq_bridge_connected{bridge=\"to-b\"} 1\n"));
    }

    #[test]
    fn a_slave_reports_its_role_and_no_destinations() {
        let text = Scrape {
            status: Status {
                role: "slave".into(),
                ..Status::default()
            },
            uptime_seconds: 0.0,
            master: None,
            ..Scrape::default()
        }
        .render();
        let samples = parse(&text);
        assert!(samples
            .iter()
            .any(|(n, _, v)| n == "ferromq_master" && *v == 0.0));
        assert!(!text.contains("ferromq_queue_"), "{text}");
        // Never master yet: the counters are there, at zero, and no timestamps.
        let get = |name: &str| samples.iter().find(|(n, _, _)| n == name).map(|s| s.2);
        assert_eq!(get("ferromq_ha_became_master_total"), Some(0.0));
        assert_eq!(get("ferromq_ha_lost_mastership_total"), Some(0.0));
        assert_eq!(get("ferromq_ha_last_became_master_timestamp_seconds"), None);
        assert_eq!(get("ferromq_ha_suspensions_total"), Some(0.0));
        assert_eq!(get("ferromq_ha_suspended"), Some(0.0));
        assert_eq!(get("ferromq_ha_suspended_seconds_total"), Some(0.0));
    }

    #[test]
    fn the_failover_history_is_exported() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut failover = crate::admin::Failover {
            masterships: 2,
            last_became_master: Some(crate::admin::BecameMaster {
                at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
                epoch: 5,
                reason: "acquired the lock".into(),
                takeover: Some(Duration::from_millis(1500)),
            }),
            losses: 1,
            last_lost: Some(crate::admin::LostMastership {
                at: UNIX_EPOCH + Duration::from_secs(1_699_999_000),
                epoch: 4,
                reason: "lost the lock".into(),
            }),
            ..Default::default()
        };
        // One suspension of 2 s that ended, and one going on for 0.5 s at the scrape.
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        failover.serving(false, t0);
        failover.serving(true, t0 + Duration::from_secs(2));
        failover.serving(false, t0 + Duration::from_secs(10));
        let text = Scrape {
            status: Status {
                role: "master".into(),
                failover,
                ..Status::default()
            },
            gathered_at: Some(t0 + Duration::from_millis(10_500)),
            ..Scrape::default()
        }
        .render();
        let samples = parse(&text);
        let get = |name: &str| {
            samples
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|s| s.2)
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        assert_eq!(get("ferromq_ha_became_master_total"), 2.0);
        assert_eq!(get("ferromq_ha_lost_mastership_total"), 1.0);
        assert_eq!(
            get("ferromq_ha_last_became_master_timestamp_seconds"),
            1_700_000_000.25
        );
        assert_eq!(get("ferromq_ha_last_takeover_seconds"), 1.5);
        assert_eq!(
            get("ferromq_ha_last_lost_mastership_timestamp_seconds"),
            1_699_999_000.0
        );
        assert!(text.contains("# TYPE ferromq_ha_became_master_total counter\n"));
        assert_eq!(get("ferromq_ha_suspensions_total"), 2.0);
        assert_eq!(get("ferromq_ha_suspended"), 1.0);
        assert_eq!(get("ferromq_ha_suspended_seconds_total"), 2.5);
        assert!(text.contains("# TYPE ferromq_ha_suspended_seconds_total counter\n"));
    }
}
