#!/usr/bin/env python3
"""Turns the raw reports of scripts/bench-compare.sh into compare.md and compare.svg.

    python3 scripts/bench-compare-report.py WORK_DIR OUT_DIR

WORK_DIR holds meta.env, brokers.tsv, workloads.tsv, failures.tsv, the peers' config files and
raw/: NAME.BROKER.REP.json (ferromq-bench run --json reports; the backlog workload as e_fill,
e_drain and e_base) and fsync-T.REP.json (fsync-probe --json), each with .flushes (device flushes
of the data disk during it; absent without a flush counter) and, for runs, .wall_ns. Every figure
is the median of the repeats with min–max; ratios are ratios of medians. Standard library only;
the SVG is written by hand.
"""

import json
import math
import os
import re
import statistics
import sys
from html import escape

BROKER_LABEL = {"ferromq": "ferromq", "activemq": "ActiveMQ", "rabbitmq": "RabbitMQ"}
BROKER_COLOR = {"ferromq": "#d9480f", "activemq": "#1c7ed6", "rabbitmq": "#2b8a3e"}
ALL_BROKERS = ["ferromq", "activemq", "rabbitmq"]
PEERS = ["activemq", "rabbitmq"]

# Workload → (short label for the chart, what its throughput figure is, what its latency is,
# which fsync probe it is held against).
KIND = {
    "a1": ("a 1P", "receipted sends/s", "send→receipt", 1),
    "a16": ("a 16P", "receipted sends/s", "send→receipt", 16),
    "b64": ("b 4P w64", "receipted sends/s", "send→receipt", None),
    "a1_nc": ("a0 1P", "receipted sends/s", "send→receipt", 1),
    "a16_nc": ("a0 16P", "receipted sends/s", "send→receipt", 16),
    "c": ("c", "deliveries/s", "end-to-end (closed loop: backlog)", None),
    "c_rate": ("c' 5k/s", "deliveries/s (fixed rate)", "end-to-end (open loop)", None),
    "d": ("d 1→10", "deliveries/s (all subscribers)", "end-to-end (closed loop: backlog)", None),
    "d_rate": ("d' 1k/s→10", "deliveries/s (fixed rate)", "end-to-end (open loop)", None),
    "e": ("e drain", "drained msg/s", "—", None),
}
THROUGHPUT_ORDER = ["a1", "a16", "b64", "a1_nc", "a16_nc", "c", "d", "e"]
LATENCY_ORDER = ["a1", "a16", "b64", "a1_nc", "a16_nc", "c_rate", "d_rate", "c", "d"]
RATE_WORKLOADS = {"c_rate", "d_rate"}
# Persistent workloads: their throughput is receipted sends, and device flushes are reported.
PERSISTENT = ["a1", "a16", "b64", "a1_nc", "a16_nc"]
PERCENTILES = [("p50_us", "p50"), ("p99_us", "p99"), ("p99_9_us", "p99.9")]

RAW_RE = re.compile(r"^(?P<name>[A-Za-z0-9_]+)\.(?P<broker>[a-z0-9]+)\.(?P<rep>\d+)\.json$")
PROBE_RE = re.compile(r"^fsync-(?P<t>\d+)\.(?P<rep>\d+)\.json$")


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_int(path):
    try:
        with open(path, encoding="utf-8") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_tsv(path, cols):
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line:
                    parts = line.split("\t")
                    rows.append(parts + [""] * (cols - len(parts)))
    except OSError:
        pass
    return rows


def read_meta(path):
    meta = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                meta[k] = v
    except OSError:
        pass
    return meta


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def fmt_n(x):
    if x is None:
        return "—"
    if math.isinf(x):
        return "∞"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_3(x):
    return "—" if x is None else f"{x:.3f}"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.2f}×"


def fmt_us(x):
    if x is None:
        return "—"
    if x >= 10_000:
        return f"{x / 1000:,.0f} ms"
    if x >= 1000:
        return f"{x / 1000:.1f} ms"
    return f"{x:.0f} µs"


def fmt_us_range(lo, hi):
    """min–max of two latencies, the unit once when both share it."""
    a, b = fmt_us(lo), fmt_us(hi)
    ua, ub = a.rsplit(" ", 1), b.rsplit(" ", 1)
    if len(ua) == 2 and len(ub) == 2 and ua[1] == ub[1]:
        return f"{ua[0]}–{b}"
    return f"{a}–{b}"


def short_us(x):
    if x is None:
        return ""
    if x >= 1e6:
        v = x / 1e6
        return f"{v:.0f} s" if v >= 10 else f"{v:.1f} s"
    if x >= 1e3:
        v = x / 1e3
        return f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"
    return f"{x:.0f} µs"


def short(x):
    if x is None:
        return ""
    if x >= 1e6:
        return f"{x / 1e6:.1f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


# Repeats the script ran (meta.env `repeats`): a figure from fewer runs says so.
EXPECTED_REPEATS = {"n": None}


class Stat:
    """Median, min and max of the repeats' values of one figure (None values left out)."""

    def __init__(self, values):
        self.values = [v for v in values if v is not None]
        self.n = len(self.values)
        self.med = statistics.median(self.values) if self.values else None
        self.lo = min(self.values) if self.values else None
        self.hi = max(self.values) if self.values else None

    def fmt(self, f=fmt_n):
        """'median (min–max)'; just the value when all agree; '[n of N runs]' when runs are missing."""
        if self.med is None:
            return "—"
        if self.n == 1 or f(self.lo) == f(self.hi):
            text = f(self.med)
        elif f is fmt_us:
            text = f"{fmt_us(self.med)} ({fmt_us_range(self.lo, self.hi)})"
        else:
            text = f"{f(self.med)} ({f(self.lo)}–{f(self.hi)})"
        expected = EXPECTED_REPEATS["n"]
        if expected and self.n < expected:
            text += f" [{self.n} of {expected} runs]"
        return text


def stat(values):
    return Stat(values)


def ratio(a, b):
    return a / b if a and b else None


class Run:
    """The figures of one repeat of one workload on one broker."""

    def __init__(self, name, rep, report, flushes):
        self.name = name
        self.rep = rep
        self.report = report
        c = report["conditions"]
        if name in PERSISTENT:
            self.throughput = report["sent"]["msgs_per_s"]
            self.lat = report.get("send_latency")
        else:
            self.throughput = report["delivered"]["msgs_per_s"]
            self.lat = report.get("end_to_end_latency")
        # Flushes are counted around the whole process (connects, warm-up, measurement, drain),
        # so they are divided by every message the run sent, warm-up included.
        self.sent_total = report.get("sent_total")
        self.flushes = flushes
        self.flushes_per_msg = flushes / self.sent_total if flushes is not None and self.sent_total else None
        if flushes is None or not self.sent_total:
            self.msgs_per_flush = None
        else:
            self.msgs_per_flush = self.sent_total / flushes if flushes else math.inf
        problems = []
        if report.get("undelivered_after_drain"):
            problems.append(f"{report['undelivered_after_drain']:,} undelivered")
        if report.get("unsent_behind_schedule"):
            problems.append(f"{report['unsent_behind_schedule']:,} unsent (behind schedule)")
        if report.get("stale_ignored"):
            problems.append(f"{report['stale_ignored']:,} stale")
        if name in RATE_WORKLOADS and c.get("rate_per_s"):
            expected = c["rate_per_s"] * (c["consumers"] if c.get("fan_out") else 1)
            if self.throughput < 0.95 * expected:
                problems.append(f"below the fixed rate ({expected:,.0f}/s): saturated")
        self.note = "; ".join(problems)

    def p(self, key):
        return self.lat.get(key) if self.lat else None


class Result:
    """The repeats of one workload on one broker: medians with min–max."""

    def __init__(self, name, runs):
        self.name = name
        self.runs = runs  # sorted by repeat
        self.tp = stat(r.throughput for r in runs)
        self.throughput = self.tp.med
        self.flushes_per_msg = stat(r.flushes_per_msg for r in runs)
        self.msgs_per_flush = stat(r.msgs_per_flush for r in runs)
        self.notes = [(r.rep, r.note) for r in runs if r.note]
        self.has_lat = any(r.lat for r in runs)

    def pstat(self, key):
        return stat(r.p(key) for r in runs_with_lat(self.runs))

    def p(self, key):
        return self.pstat(key).med


def runs_with_lat(runs):
    return [r for r in runs if r.lat]


class Backlog:
    """Workload e: one fill/drain/base cycle per repeat on one broker."""

    def __init__(self, cycles):
        self.name = "e"
        self.cycles = cycles
        self.markers = []  # drain time per cycle (s), from the marker's end-to-end latency
        self.rates = []
        for cy in cycles:
            mx = (cy["drain"].get("end_to_end_latency") or {}).get("max_us")
            cy["marker_s"] = mx / 1e6 if mx else None
            if mx:
                self.markers.append(mx / 1e6)
                self.rates.append(cy["drain"].get("stale_ignored", 0) / (mx / 1e6))
        self.diffs = [(cy["drain_wall"] - cy["base_wall"]) / 1e9 for cy in cycles
                      if cy.get("drain_wall") and cy.get("base_wall")]
        self.drained = [cy["drain"].get("stale_ignored", 0) for cy in cycles]
        self.filled = [(cy.get("fill") or {}).get("sent_total") for cy in cycles]
        self.fill_p99 = [((cy.get("fill") or {}).get("send_latency") or {}).get("p99_us") for cy in cycles]
        self.tp = stat(self.rates)
        self.throughput = self.tp.med
        self.notes = [(cy["rep"], f"drained {d:,} of {f:,}") for cy, d, f in zip(cycles, self.drained, self.filled)
                      if f is not None and d != f]
        self.has_lat = False

    def p(self, key):
        return None

    def pstat(self, key):
        return stat([])


class Probe:
    """The repeats of `fsync-probe --threads T`."""

    def __init__(self, t, reps):
        self.t = t
        self.reps = reps  # list of (report, device flushes or None)
        reports = [r for r, _ in reps]
        self.records_per_s = stat(r.get("records_per_s") for r in reports)
        self.syncs_per_s = stat(r.get("syncs_per_s") for r in reports)
        self.records_per_sync = stat(r.get("records_per_sync") for r in reports)
        self.p50 = stat((r.get("latency") or {}).get("p50_us") for r in reports)
        self.p99 = stat((r.get("latency") or {}).get("p99_us") for r in reports)
        per_flush = []
        for r, fl in reps:
            if fl is None or not r.get("records"):
                continue
            per_flush.append(r["records"] / fl if fl else math.inf)
        self.records_per_flush = stat(per_flush)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench-compare-report.py WORK_DIR OUT_DIR")
    work, out = sys.argv[1], sys.argv[2]
    meta = read_meta(os.path.join(work, "meta.env"))
    if meta.get("repeats", "").isdigit():
        EXPECTED_REPEATS["n"] = int(meta["repeats"])
    brokers = [r[0] for r in read_tsv(os.path.join(work, "brokers.tsv"), 3)]
    workloads = read_tsv(os.path.join(work, "workloads.tsv"), 3)
    failures = read_tsv(os.path.join(work, "failures.tsv"), 2)
    raw = os.path.join(work, "raw")

    # raw/NAME.BROKER.REP.json (+ .flushes, .wall_ns) and raw/fsync-T.REP.json (+ .flushes)
    files = {}
    probes_raw = {}
    try:
        names = sorted(os.listdir(raw))
    except OSError:
        names = []
    for fn in names:
        m = PROBE_RE.match(fn)
        if m:
            base = os.path.join(raw, fn[:-len(".json")])
            rep = load(base + ".json")
            if rep:
                probes_raw.setdefault(int(m["t"]), []).append((int(m["rep"]), rep, read_int(base + ".flushes")))
            continue
        m = RAW_RE.match(fn)
        if m:
            files.setdefault((m["name"], m["broker"]), {})[int(m["rep"])] = os.path.join(raw, fn[:-len(".json")])
    fsync = {t: Probe(t, [(r, fl) for _, r, fl in sorted(v, key=lambda x: x[0])]) for t, v in probes_raw.items()}

    res = {}
    servers = {}
    for name, _, _ in workloads:
        for b in brokers:
            if name == "e":
                cycles = []
                for rep, base in sorted((files.get(("e_drain", b)) or {}).items()):
                    drain = load(base + ".json")
                    if not drain:
                        continue
                    other = files.get(("e_base", b), {}).get(rep)
                    fill = files.get(("e_fill", b), {}).get(rep)
                    cycles.append({
                        "rep": rep,
                        "drain": drain,
                        "fill": load(fill + ".json") if fill else None,
                        "drain_wall": read_int(base + ".wall_ns"),
                        "base_wall": read_int(other + ".wall_ns") if other else None,
                    })
                    if drain["conditions"].get("server"):
                        servers.setdefault(b, drain["conditions"]["server"])
                if cycles:
                    res[(name, b)] = Backlog(cycles)
            else:
                runs = []
                for rep, base in sorted((files.get((name, b)) or {}).items()):
                    report = load(base + ".json")
                    if report:
                        runs.append(Run(name, rep, report, read_int(base + ".flushes")))
                        if report["conditions"].get("server"):
                            servers.setdefault(b, report["conditions"]["server"])
                if runs:
                    res[(name, b)] = Result(name, runs)

    md = render_md(meta, brokers, workloads, failures, fsync, res, servers, work)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "compare.md"), "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.join(out, "compare.svg"), "w", encoding="utf-8") as f:
        f.write(render_svg(meta, ALL_BROKERS, res, fsync))
    print(f"wrote {out}/compare.md and {out}/compare.svg", file=sys.stderr)


def cell_missing(b, brokers):
    return "failed" if b in brokers else "not run"


def render_summary(w, meta, brokers, fsync, res):
    """The project's goal table, computed from this run."""
    w("## Summary")
    w("")
    n = meta.get("repeats", "?")
    head = ("One run per broker and workload (`COMPARE_REPEATS=1`: no min–max); the ratio is ferromq's figure "
            "÷ ActiveMQ's." if n == "1" else
            f"Median of {n} repeats (min–max in brackets); the ratio is ferromq's median ÷ ActiveMQ's.")
    w(head + " \"msg/flush\": messages sent per device flush of the data disk (see "
      "[Device flushes](#device-flushes-per-message)); \"of probe\": the broker's median ÷ the median "
      "of the write+fdatasync probe with as many threads as producers, on the same disk.")
    w("")
    w("| workload | " + " | ".join(BROKER_LABEL[b] for b in ALL_BROKERS) + " | ferromq ÷ ActiveMQ | disk reference (fsync probe) |")
    w("|" + "---|" * (len(ALL_BROKERS) + 3))
    rows = [
        ("a1", "persistent, receipt per message (window 1), 1 producer → 1 consumer — receipted msg/s", 1),
        ("a16", "persistent, receipt per message (window 1), 16 producers → 1 consumer — receipted msg/s", 16),
        ("d", "non-persistent topic fan-out, 1 producer → 10 subscribers — deliveries/s", None),
        ("b64", "persistent, receipt window 64, 4 producers → 1 consumer — receipted msg/s", None),
        ("c", "non-persistent queue, 1 producer → 1 consumer — delivered msg/s", None),
    ]
    for name, label, t in rows:
        probe = fsync.get(t) if t else None
        cells = []
        for b in ALL_BROKERS:
            r = res.get((name, b))
            if r is None:
                cells.append(cell_missing(b, brokers))
                continue
            parts = [r.tp.fmt()]
            if t:
                parts.append(f"{r.msgs_per_flush.fmt() if r.msgs_per_flush.n else 'n/a'} msg/flush")
                pr = probe.records_per_s.med if probe else None
                parts.append(f"{100 * r.throughput / pr:.0f}% of probe" if pr and r.throughput else "probe n/a")
            cells.append("; ".join(parts))
        fr, ar = res.get((name, "ferromq")), res.get((name, "activemq"))
        rt = fmt_ratio(ratio(fr.throughput if fr else None, ar.throughput if ar else None))
        if t:
            if probe:
                ref = (f"{t}-thread write+fdatasync: {probe.records_per_s.fmt()} records/s; "
                       f"{probe.records_per_sync.fmt()} records/fdatasync; "
                       f"{probe.records_per_flush.fmt() if probe.records_per_flush.n else 'n/a'} records/device flush")
            else:
                ref = f"{t}-thread probe failed"
        else:
            ref = "—"
        w(f"| {label} ({name}) | " + " | ".join(cells) + f" | {rt} | {ref} |")
    w("")


def render_md(meta, brokers, workloads, failures, fsync, res, servers, work):
    L = []
    w = L.append
    reps = meta.get("repeats", "?")
    w("# ferromq beside ActiveMQ and RabbitMQ (issue 8, items 2 and 3; issue 16, item 7)")
    w("")
    w(f"Generated by `scripts/bench-compare.sh` on {meta.get('date', '?')}: same machine, same "
      "load tool (`ferromq-bench`), same workloads; every workload repeated "
      f"{reps} times, interleaved (for each workload, for each repeat, the brokers one after the "
      "other), so that a slow patch of the shared VM hits every broker alike. Raw `--json` reports: `"
      + work + "/raw/` on the measuring machine (not committed).")
    w("")
    render_summary(w, meta, brokers, fsync, res)
    w("## Machine")
    w("")
    for k, label in [("cpu", "CPU"), ("memory", "Memory"), ("kernel", "Kernel"), ("os", "OS"),
                     ("virt", "Virtualisation"), ("disk", "Disk of every store and of the fsync probe")]:
        w(f"- {label}: {meta.get(k, '?')}")
    w(f"- Load average (1/5/15 min) before: {meta.get('load_before', '?')}, after: {meta.get('load_after', '?')}. "
      "Broker and load tool share the same cores (loopback); nothing else was meant to run, but this is a "
      "shared development VM, so other jobs may have competed for the CPUs and the disk.")
    w(f"- Each run: {meta.get('warmup', '?')} s warm-up + {meta.get('duration', '?')} s measured, 1 KiB bodies. "
      f"Every consumer acks each message with `ack:{meta.get('ack', 'client-individual')}` (one ACK frame per "
      "message, without a receipt, as real STOMP consumers do; the no-consumer workloads a0 have no acks). "
      f"{reps} repeat{'' if reps == '1' else 's'} per broker and workload, interleaved; every figure is the median of the repeats with "
      "min–max in brackets, every ratio a ratio of medians. Each repeat uses its own destination "
      "(`cmp.NAME.REP`), so each starts on an empty one. The peer baselines saw ~30% run-to-run fsync "
      "variation on this kind of disk: where the min–max ranges of two brokers overlap, the difference "
      "means little.")
    w("")
    w("## Versions")
    w("")
    w(f"- ferromq: {meta.get('ferromq_version', '?')}, git {meta.get('ferromq_rev', '?')}, "
      f"{meta.get('rustc', '?')}, `cargo build --release`; load tool {meta.get('bench_version', '?')}")
    w(f"- ActiveMQ: Debian `activemq` {meta.get('activemq_pkg', '?')} (CONNECTED server: "
      f"`{servers.get('activemq', '?')}`), {meta.get('java', '?')}")
    w(f"- RabbitMQ: Debian `rabbitmq-server` {meta.get('rabbitmq_pkg', '?')} with `rabbitmq_stomp` "
      f"(CONNECTED server: `{servers.get('rabbitmq', '?')}`), Erlang `erlang-base` {meta.get('erlang_pkg', '?')}")
    w("")
    w("## Configuration and durability of each broker")
    w("")
    w("What a RECEIPT for a `persistent:true` SEND promises differs, and the a- and b-workloads hinge on it:")
    w("")
    w("- **ferromq**: `ferromq serve`, store `journal`, `store.sync = \"always\"`, fresh data dir, "
      "STOMP on 127.0.0.1. Store, then dispatch: a persistent message is confirmed *and* dispatched "
      "only after the fdatasync of its group-commit batch, whether or not a consumer is waiting. A "
      "consumer's ACK without a receipt is written without a flush of its own and becomes durable with "
      "the next flush (`store.ack_sync_delay_ms`, default 100 ms).")
    w("- **ActiveMQ** (`scripts/services.sh start peers`): KahaDB defaults with "
      "`journalDiskSyncStrategy=\"always\"` spelled out (fsync per journal write batch), fresh store, "
      "`-Xms512m -Xmx512m` (Debian's default heap), STOMP transport `stomp://` on 127.0.0.1 with "
      "`transport.tcpNoDelay=true` (ferromq and RabbitMQ set TCP_NODELAY by default; without it "
      "Nagle's algorithm added ~5 ms to ActiveMQ's p50 delivery latency at 5,000 msg/s here), default "
      "prefetch. Receipt = the message is in the journal and fsynced — **or** a consumer acked it "
      "before it was stored: with `concurrentStoreAndDispatchQueues=true` (default) a message consumed "
      "at once is never written, so with a fast consumer (a, b) the receipt need not wait for a disk flush.")
    w("- **RabbitMQ** (`scripts/services.sh start peers`): own node `ferromqbench@localhost`, fresh Mnesia, "
      "classic queues; STOMP `/queue/` destinations are durable queues and `persistent:true` is "
      "delivery-mode 2. Receipt = publisher confirm = the message is fsynced to the message store "
      "(in batches) — **or** it was delivered and acked before it was written, in which case it is "
      "confirmed without touching the disk. Same caveat as ActiveMQ for (a, b) with a consumer.")
    w("- Neither peer can be configured to always fsync a message that a consumer took at once, so the "
      "a- and b-workloads with a consumer are *not* equally durable: ferromq always pays the fsync, the peers "
      "may not (the device flushes per message below show how often each did). The **a0** workloads (same, "
      "no consumer) remove that difference: there every broker's receipt "
      "means \"on disk\". ActiveMQ could be forced to store before dispatch "
      "(`concurrentStoreAndDispatchQueues=\"false\"`); that is not its default and was not used.")
    w("- Non-persistent (c, d) and the backlog (e) have no durability promise beyond the broker's memory "
      "(e uses persistent messages; drain speed is what is measured). ferromq's topic subscribers drop "
      "their oldest pending messages above `policy.topic_subscriber_memory_limit_bytes` (16 MiB); the "
      "peers block the producer instead (flow control). Undelivered messages are listed below.")
    amq = read_text(os.path.join(work, "activemq.xml"))
    rmq = read_text(os.path.join(work, "rabbitmq.conf"))
    if amq:
        w("")
        w("<details><summary>ActiveMQ activemq.xml</summary>")
        w("")
        w("```xml")
        w(amq)
        w("```")
        w("</details>")
    if rmq:
        w("")
        w("<details><summary>RabbitMQ rabbitmq.conf</summary>")
        w("")
        w("```")
        w(rmq)
        w("```")
        w("</details>")
    w("")

    # fsync reference
    w("## The physical reference: append + fdatasync on the same disk")
    w("")
    w("`ferromq-bench fsync-probe --size 1024` in the directory holding every broker's store "
      f"(T threads, leader/follower group commit), run once per repeat ({reps} times per thread count), "
      "the 1-thread probe just before the brokers' a1 runs of the same repeat, the 16-thread probe "
      "before a16's. Median (min–max).")
    w("")
    w("| threads | records/s | fdatasync/s | records per fdatasync | records per device flush | append→durable p50 | p99 |")
    w("|---|---|---|---|---|---|---|")
    for t in (1, 16):
        f = fsync.get(t)
        if f:
            rpf = f.records_per_flush.fmt() if f.records_per_flush.n else "n/a"
            w(f"| {t} | {f.records_per_s.fmt()} | {f.syncs_per_s.fmt()} | {f.records_per_sync.fmt()} | "
              f"{rpf} | {f.p50.fmt(fmt_us)} | {f.p99.fmt(fmt_us)} |")
        else:
            w(f"| {t} | failed | | | | | |")
    w("")

    # main table
    w("## Results")
    w("")
    w("Throughput: receipted sends/s for a, a0 and b, deliveries/s for c and d (on a topic every "
      "subscriber's copy counts), backlog drain rate for e; median (min–max) of the repeats. Ratios "
      "are ferromq's median ÷ the peer's (above 1: ferromq faster). For the fixed-rate rows c' and d' "
      "the throughput is the offered rate, so the cells give the p99 latency and the ratio column "
      "compares it instead (peer p99 ÷ ferromq p99: above 1, ferromq lower).")
    w("")
    hdr = "| workload | metric | " + " | ".join(BROKER_LABEL[b] for b in ALL_BROKERS)
    hdr += " | ferromq / ActiveMQ | ferromq / RabbitMQ | fraction of fsync probe (ferromq / ActiveMQ / RabbitMQ) |"
    w(hdr)
    w("|" + "---|" * (2 + len(ALL_BROKERS) + 3))
    for name, desc, _ in workloads:
        kind = KIND.get(name)
        if not kind:
            continue
        rates = name in RATE_WORKLOADS
        cells = []
        for b in ALL_BROKERS:
            r = res.get((name, b))
            if r is None:
                cells.append(cell_missing(b, brokers))
            elif rates:
                cells.append(f"p99 {r.pstat('p99_us').fmt(fmt_us)}")
            else:
                cells.append(r.tp.fmt())
        ratios = []
        fr = res.get((name, "ferromq"))
        for peer in PEERS:
            pr = res.get((name, peer))
            if not fr or not pr:
                ratios.append("—")
            elif rates:
                ratios.append(fmt_ratio(ratio(pr.p("p99_us"), fr.p("p99_us"))))
            else:
                ratios.append(fmt_ratio(ratio(fr.throughput, pr.throughput)))
        frac = "—"
        if kind[3]:
            probe = fsync.get(kind[3])
            if probe and probe.records_per_s.med:
                parts = []
                for b in ALL_BROKERS:
                    r = res.get((name, b))
                    parts.append(f"{r.throughput / probe.records_per_s.med:.2f}" if r and r.throughput else "—")
                frac = " / ".join(parts) + f" (of {kind[3]}-thread probe)"
        metric = "p99 end-to-end" if rates else kind[1]
        w(f"| {desc} | {metric} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {frac} |")
    w("")

    # reading the fsync fractions
    readings = []
    p1 = (fsync.get(1).records_per_s.med if fsync.get(1) else None)
    p16 = (fsync.get(16).records_per_s.med if fsync.get(16) else None)
    for name in ("a1", "a1_nc"):
        for b in ALL_BROKERS:
            r = res.get((name, b))
            if not (p1 and r and r.throughput and r.throughput > 1.05 * p1):
                continue
            fpm = r.flushes_per_msg.med
            head = f"{BROKER_LABEL[b]} in {name} ({r.throughput / p1:.2f} of the 1-thread probe"
            if fpm is not None and fpm < 0.9:
                readings.append(
                    f"{head}, {fpm:.2f} device flushes per message): one producer with one receipt in flight "
                    "cannot be group-committed, so part of its receipts did not wait for a flush of their own "
                    + ("(the consumer took the message before it was written)." if name == "a1" else "."))
            elif fpm is not None:
                readings.append(
                    f"{head}, yet {fpm:.2f} device flushes per message): every receipt did wait for a flush, "
                    "but its flushes were cheaper than the probe's write+fdatasync (the probe appends to a "
                    "growing file, whose fdatasync may also have to commit the file's new size; a broker's "
                    "journal may write into preallocated space), or the disk was faster during its runs than "
                    "during the probe's. "
                    "The probe is a reference, not a ceiling.")
            else:
                readings.append(
                    f"{head}; no flush count): one producer with one receipt in flight cannot be group-committed, "
                    "so either part of its receipts did not wait for a flush, or its flushes were cheaper than "
                    "the probe's.")
    for name in ("a16", "a16_nc"):
        r = res.get((name, "ferromq"))
        if p16 and r and r.throughput and r.throughput > 1.05 * p16:
            readings.append(
                f"ferromq in {name} ({r.throughput / p16:.2f} of the 16-thread probe): its journal puts more "
                "records into one fdatasync than the probe's simple leader/follower scheme; the probe is a "
                "floor for group commit, not a ceiling.")
    if readings:
        w("Reading the fsync fractions:")
        w("")
        for x in readings:
            w(f"- {x}")
        w("")

    # device flushes
    w("### Device flushes per message")
    w("")
    disk = meta.get("flush_disk") or "?"
    if meta.get("flush_counter") == "no":
        w(f"Not measured: `/proc/diskstats` has no flush counter (field 19) for `{disk}` on this kernel "
          "(or the data directory is not on a block device listed there): every cell is n/a.")
        w("")
    w(f"Flush requests completed on `/dev/{disk}` (`/proc/diskstats` field 19; the whole disk holding "
      "every broker's store) from just before to just after each run's `ferromq-bench` process "
      "(connects, warm-up, measurement, drain), divided by every message the run sent (`sent_total`, "
      "warm-up included), and its inverse, messages per flush; each the median (min–max) of the repeats' "
      "values. "
      "**The counter is disk-wide**: flushes of every other process on that disk count too — the other "
      "brokers idling beside the measured one (checkpoints, periodic syncs), and other jobs on this "
      "shared VM — so flushes per message can only be overstated (messages per flush understated), "
      "never the reverse. Values well below 1 with window 1 "
      "mean group commit (several producers' messages per flush) or messages that were never written "
      "(consumed before they were stored: ActiveMQ and RabbitMQ with a consumer).")
    idle = []
    for label, key in (("before the workloads", "idle_before"), ("after them", "idle_after")):
        fl, secs = meta.get(f"{key}_flushes"), meta.get(f"{key}_s")
        if fl and secs:
            try:
                idle.append(f"{int(fl) / float(secs):.1f} flushes/s {label}")
            except ValueError:
                pass
    if idle:
        w("")
        w(f"Background with every broker up and idle: {', '.join(idle)} (over {meta.get('idle_before_s', '?')} s each).")
    w("")
    w("| workload | " + " | ".join(BROKER_LABEL[b] for b in ALL_BROKERS) + " |")
    w("|" + "---|" * (1 + len(ALL_BROKERS)))
    desc_of = {n: d for n, d, _ in workloads}
    for name in PERSISTENT:
        if name not in desc_of:
            continue
        cells = []
        for b in ALL_BROKERS:
            r = res.get((name, b))
            if r is None:
                cells.append(cell_missing(b, brokers))
            elif not r.flushes_per_msg.n:
                cells.append("n/a")
            else:
                cells.append(f"{r.flushes_per_msg.fmt(fmt_3)} flushes/msg; {r.msgs_per_flush.fmt()} msg/flush")
        w(f"| {desc_of[name]} | " + " | ".join(cells) + " |")
    for t in (1, 16):
        f = fsync.get(t)
        if not f:
            continue
        rpf = f.records_per_flush
        dev = f"{rpf.fmt()} records per device flush" if rpf.n else "records per device flush n/a"
        w(f"| fsync probe, {t} thread{'s' if t > 1 else ''}: {f.records_per_sync.fmt()} records per fdatasync (the probe's own count); {dev} | | | |")
    w("")

    # latency table
    w("### Latency percentiles")
    w("")
    w("Send→receipt for a, a0 and b; end-to-end (send → delivery) otherwise; each percentile's median "
      "over the repeats (min–max). c and d are closed loop without receipts: the producer outruns the "
      "consumers and their end-to-end latency measures the queue that builds up, not the broker's "
      "per-message cost — c' and d' (open loop at a fixed rate, coordinated-omission corrected, ~1 ms "
      "timer granularity) are the latency figures.")
    w("")
    w("| workload | latency | percentile | " + " | ".join(BROKER_LABEL[b] for b in ALL_BROKERS) + " |")
    w("|" + "---|" * (3 + len(ALL_BROKERS)))
    for name in LATENCY_ORDER:
        if name not in desc_of:
            continue
        kind = KIND[name]
        for i, (key, plabel) in enumerate(PERCENTILES):
            cells = []
            for b in ALL_BROKERS:
                r = res.get((name, b))
                st = r.pstat(key) if r is not None and r.has_lat else None
                cells.append(st.fmt(fmt_us) if st and st.n else "—")
            first = i == 0
            w(f"| {desc_of[name] if first else ''} | {kind[2] if first else ''} | {plabel} | " + " | ".join(cells) + " |")
    w("")

    # backlog details
    w("### Backlog (e)")
    w("")
    w("`ferromq-bench` has no fill-then-drain mode, so the script runs one cycle per repeat and broker "
      f"({reps} per broker, interleaved like the other workloads) of: (1) fill: "
      "10,000 persistent messages with receipts (window 64) at a fixed 2,500 msg/s, no consumer; "
      "(2) drain: one consumer (`ack:client-individual`, prefetch window 1000: "
      "`activemq.prefetchSize:1000` for ferromq and ActiveMQ, `prefetch-count:1000` for RabbitMQ) "
      "subscribes to the backlog, then one marker message is sent behind it. The backlog arrives as "
      "`stale_ignored` (it belongs to the fill run); the marker's end-to-end latency is the drain "
      "time. The tool's clock starts after its producer has connected, so up to 1000 messages (the "
      "prefetch window) may already be on their way: the rate can be flattering by up to ~10%, for "
      "every broker alike. (3) the same run again on the empty queue; wall time (2) − (3) is a "
      "cross-check that also counts the pre-clock part (±10 ms: the tool polls its drain every 10 ms). "
      "Medians of the cycles, min–max in brackets; drain msg/s is drained ÷ drain time per cycle.")
    w("")
    w("| broker | cycles | filled per cycle | fill send→receipt p99 | drained per cycle | drain time (marker) | drain time (wall-clock cross-check) | drain msg/s |")
    w("|---|---|---|---|---|---|---|---|")

    def spread_ms(xs):
        return stat([x * 1000 for x in xs]).fmt(lambda v: f"{v:,.0f}") + (" ms" if xs else "")

    for b in ALL_BROKERS:
        r = res.get(("e", b))
        if not r:
            w(f"| {BROKER_LABEL[b]} | {cell_missing(b, brokers)} | | | | | | |")
            continue
        fills = ", ".join("?" if f is None else f"{f:,}" for f in r.filled)
        p99s = ", ".join(fmt_us(p) for p in r.fill_p99)
        drained = ", ".join(f"{d:,}" for d in r.drained)
        w(f"| {BROKER_LABEL[b]} | {len(r.cycles)} | {fills} | {p99s} | {drained} | {spread_ms(r.markers)} | "
          f"{spread_ms(r.diffs)} | {r.tp.fmt()} |")
    w("")

    # delivery check
    w("### Delivery check")
    w("")
    notes = [(n, b, rep, note) for (n, b), r in sorted(res.items()) for rep, note in r.notes]
    if notes:
        for n, b, rep, note in notes:
            w(f"- {n} on {BROKER_LABEL[b]}, repeat {rep}: {note}")
    else:
        w("- Every run delivered every message it sent (no undelivered, unsent or stale messages).")
    w("")
    if failures:
        w("## Failures")
        w("")
        for what, why in failures:
            w(f"- `{what}`: {why}")
        w("")
    missing = [b for b in ALL_BROKERS if b not in brokers]
    if missing:
        w("Not measured: " + ", ".join(BROKER_LABEL[b] for b in missing) + ".")
        w("")

    w("## Chart")
    w("")
    w("![throughput and p99 per broker per workload](compare.svg)")
    w("")
    w("## Commands")
    w("")
    w("```sh")
    w(f"scripts/bench-compare.sh   # builds, starts the peers (scripts/services.sh start peers) and ferromq, runs")
    w(f"# for each workload, for REP in 1..{reps}, for each broker (ferromq, ActiveMQ, RabbitMQ):")
    for name, desc, args in workloads:
        if name == "e":
            w("# e, one cycle per repeat of:")
            w("ferromq-bench run --url URL -d /queue/cmp.e --persistent --receipt --window 64 -p 1 -c 0 "
              "--rate 2500 --warmup 0 --duration 4   # fill")
            w("ferromq-bench run --url URL -d /queue/cmp.e --persistent -p 1 -c 1 --ack client-individual "
              "--subscribe-header PREFETCH_1000 --rate 1 --warmup 0 --duration 1 --timeout 60   # drain + marker, then again empty")
        else:
            if name == "a1":
                w("ferromq-bench fsync-probe --threads 1 --size 1024 --duration D --dir DATA_DISK   # before a1's brokers")
            if name == "a16":
                w("ferromq-bench fsync-probe --threads 16 --size 1024 --duration D --dir DATA_DISK   # before a16's brokers")
            w(f"ferromq-bench run --url URL {args.replace('{rep}', 'REP')}   # {name}")
    w("# RabbitMQ also gets: --host / --login guest --passcode guest")
    w("```")
    w("")
    return "\n".join(L)


def render_svg(meta, all_brokers, res, fsync):
    W, PH = 1000, 330
    top = 70
    H = top + 2 * PH + 56
    s = []
    a = s.append
    a(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
      'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">')
    a(f'<rect width="{W}" height="{H}" fill="white"/>')
    a(f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">'
      'ferromq vs ActiveMQ 5.17 vs RabbitMQ 3.10 — same machine, same load tool</text>')
    a(f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555" font-size="10">'
      f'{escape(meta.get("date", ""))}; {escape(meta.get("cpu", ""))}; 1 KiB bodies; '
      f'{escape(meta.get("warmup", "?"))} s warm-up + {escape(meta.get("duration", "?"))} s; ack client-individual; '
      f'median of {escape(meta.get("repeats", "?"))} repeats, whiskers min–max; log scales</text>')
    # legend
    lx = W / 2 - 310
    for i, b in enumerate(all_brokers):
        x = lx + i * 110
        a(f'<rect x="{x}" y="50" width="12" height="12" fill="{BROKER_COLOR[b]}"/>')
        a(f'<text x="{x + 16}" y="60">{BROKER_LABEL[b]}</text>')
    a(f'<line x1="{lx + 330}" y1="56" x2="{lx + 350}" y2="56" stroke="black" stroke-dasharray="4,3"/>')
    a(f'<text x="{lx + 354}" y="60">fsync probe, same concurrency (records/s; append→durable p99)</text>')

    def panel(y0, title, order, value, spread, label, refs):
        left, right = 80, W - 20
        ph = PH - 80
        pt = y0 + 30
        vals = [value(res.get((n, b))) for n in order for b in all_brokers]
        vals += [x for n in order for b in all_brokers for x in spread(res.get((n, b)))]
        vals = [v for v in vals if v] + [r for r in refs.values() if r]
        if not vals:
            a(f'<text x="{left}" y="{pt + 20}">no data</text>')
            return
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals) * 1.5))
        def y(v):
            return pt + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
        a(f'<text x="{left}" y="{y0 + 18}" font-size="13" font-weight="bold">{escape(title)}</text>')
        d = lo
        while d <= hi * 1.0001:
            yy = y(d)
            a(f'<line x1="{left}" y1="{yy:.1f}" x2="{right}" y2="{yy:.1f}" stroke="#ddd"/>')
            a(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#444">{label(d)}</text>')
            d *= 10
        a(f'<line x1="{left}" y1="{pt}" x2="{left}" y2="{pt + ph}" stroke="#444"/>')
        gw = (right - left) / len(order)
        bw = gw * 0.8 / len(all_brokers)
        for gi, n in enumerate(order):
            gx = left + gi * gw + gw * 0.1
            for bi, b in enumerate(all_brokers):
                v = value(res.get((n, b)))
                x = gx + bi * bw
                if v:
                    yy = y(v)
                    a(f'<rect x="{x:.1f}" y="{yy:.1f}" width="{bw - 2:.1f}" height="{pt + ph - yy:.1f}" '
                      f'fill="{BROKER_COLOR[b]}"><title>{BROKER_LABEL[b]} {n}: {label(v)}</title></rect>')
                    smin, smax = spread(res.get((n, b)))
                    top_y = yy
                    if smin and smax and smax > smin:
                        # min–max of the repeats
                        cx = x + (bw - 2) / 2
                        top_y = min(yy, y(smax))
                        a(f'<line x1="{cx:.1f}" y1="{y(smin):.1f}" x2="{cx:.1f}" y2="{y(smax):.1f}" stroke="#222"/>')
                        for yv in (y(smin), y(smax)):
                            a(f'<line x1="{cx - 3:.1f}" y1="{yv:.1f}" x2="{cx + 3:.1f}" y2="{yv:.1f}" stroke="#222"/>')
                    a(f'<text x="{x + (bw - 2) / 2:.1f}" y="{top_y - 3:.1f}" text-anchor="middle" font-size="8">'
                      f'{label(v)}</text>')
                else:
                    a(f'<text x="{x + (bw - 2) / 2:.1f}" y="{pt + ph - 4:.1f}" text-anchor="middle" '
                      'font-size="9" fill="#999">n/a</text>')
            if refs.get(n):
                yy = y(refs[n])
                a(f'<line x1="{gx - 2:.1f}" y1="{yy:.1f}" x2="{gx + gw * 0.8 + 2:.1f}" y2="{yy:.1f}" '
                  'stroke="black" stroke-dasharray="4,3"/>')
            a(f'<text x="{gx + gw * 0.4:.1f}" y="{pt + ph + 16}" text-anchor="middle">{escape(KIND[n][0])}</text>')
        a(f'<line x1="{left}" y1="{pt + ph}" x2="{right}" y2="{pt + ph}" stroke="#444"/>')

    f1 = fsync[1].records_per_s.med if fsync.get(1) else None
    f16 = fsync[16].records_per_s.med if fsync.get(16) else None
    panel(top, "Throughput (msg/s; higher is better) — a/b: receipted sends, a0: same without consumer, "
          "c/d: deliveries, e: backlog drain", THROUGHPUT_ORDER,
          lambda r: r.throughput if r else None,
          lambda r: (r.tp.lo, r.tp.hi) if r else (None, None), short,
          {"a1": f1, "a1_nc": f1, "a16": f16, "a16_nc": f16})
    p1 = fsync[1].p99.med if fsync.get(1) else None
    p16 = fsync[16].p99.med if fsync.get(16) else None

    def p99_spread(r):
        if not r:
            return (None, None)
        st = r.pstat("p99_us")
        return (st.lo, st.hi)

    panel(top + PH, "p99 latency (lower is better) — a/a0/b: send→receipt; c'/d': end-to-end at a fixed rate; "
          "c/d: closed loop (backlog)", LATENCY_ORDER,
          lambda r: r.p("p99_us") if r else None, p99_spread, short_us,
          {"a1": p1, "a1_nc": p1, "a16": p16, "a16_nc": p16})
    a(f'<text x="20" y="{H - 46}" fill="#555">a = persistent queue, receipt window 1, 1 or 16 producers → 1 consumer '
      '(acks client-individual); b = same with receipt window 64, 4 producers;</text>')
    a(f'<text x="20" y="{H - 30}" fill="#555">a0 = a without consumer (receipt = on disk for every broker); '
      'c = non-persistent queue 1→1;</text>')
    a(f'<text x="20" y="{H - 14}" fill="#555">d = non-persistent topic 1→10 subscribers; c\', d\' = same at a fixed rate '
      '(open loop); e = 10,000-message persistent backlog drained by 1 consumer. Details: compare.md.</text>')
    a("</svg>")
    return "\n".join(s) + "\n"


if __name__ == "__main__":
    main()
