#!/usr/bin/env python3
"""Turns the raw reports of scripts/bench-compare.sh into compare.md and compare.svg.

    python3 scripts/bench-compare-report.py WORK_DIR OUT_DIR

WORK_DIR holds meta.env, brokers.tsv, workloads.tsv, failures.tsv, raw/*.json (ferromq-bench
--json reports) and the peers' config files. Standard library only; the SVG is written by hand.
"""

import json
import math
import os
import statistics
import sys
from html import escape

BROKER_LABEL = {"ferromq": "ferromq", "activemq": "ActiveMQ", "rabbitmq": "RabbitMQ"}
BROKER_COLOR = {"ferromq": "#d9480f", "activemq": "#1c7ed6", "rabbitmq": "#2b8a3e"}
PEERS = ["activemq", "rabbitmq"]

# Workload → (short label for the chart, what its throughput figure is, what its latency is,
# which fsync probe it is held against).
KIND = {
    "a1": ("a 1P", "receipted sends/s", "send→receipt", 1),
    "a16": ("a 16P", "receipted sends/s", "send→receipt", 16),
    "a1_nc": ("a0 1P", "receipted sends/s", "send→receipt", 1),
    "a16_nc": ("a0 16P", "receipted sends/s", "send→receipt", 16),
    "c": ("c", "deliveries/s", "end-to-end (closed loop: backlog)", None),
    "c_rate": ("c' 5k/s", "deliveries/s (fixed rate)", "end-to-end (open loop)", None),
    "d": ("d 1→10", "deliveries/s (all subscribers)", "end-to-end (closed loop: backlog)", None),
    "d_rate": ("d' 1k/s→10", "deliveries/s (fixed rate)", "end-to-end (open loop)", None),
    "e": ("e drain", "drained msg/s", "—", None),
}
THROUGHPUT_ORDER = ["a1", "a16", "a1_nc", "a16_nc", "c", "d", "e"]
LATENCY_ORDER = ["a1", "a16", "a1_nc", "a16_nc", "c_rate", "d_rate", "c", "d"]
RATE_WORKLOADS = {"c_rate", "d_rate"}


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


def fmt_n(x):
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


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


class Result:
    """The figures of one workload on one broker."""

    def __init__(self, name, report, fill=None):
        self.name = name
        self.report = report
        self.fill = fill
        self.throughput = None
        self.lat = None  # latency summary used for p50/p99
        self.note = ""
        if name == "e":
            # report = list of cycles: dicts with drain, base, fill reports and wall times.
            cycles = report
            self.cycles = cycles
            self.report = cycles[0]["drain"]
            markers = [cy["drain"]["end_to_end_latency"]["max_us"] / 1e6 for cy in cycles
                       if (cy["drain"].get("end_to_end_latency") or {}).get("max_us")]
            diffs = [(cy["drain_wall"] - cy["base_wall"]) / 1e9 for cy in cycles
                     if cy.get("drain_wall") and cy.get("base_wall")]
            self.drained = [cy["drain"].get("stale_ignored", 0) for cy in cycles]
            self.filled = [(cy.get("fill") or {}).get("sent_total") for cy in cycles]
            self.fill_p99 = [((cy.get("fill") or {}).get("send_latency") or {}).get("p99_us") for cy in cycles]
            self.markers = markers
            self.diffs = diffs
            if markers:
                self.drain_s = statistics.median(markers)
                self.throughput = statistics.median(self.drained) / self.drain_s
            bad = [f"cycle {i + 1}: drained {d} of {f}" for i, (d, f) in enumerate(zip(self.drained, self.filled))
                   if f is not None and d != f]
            self.note = "; ".join(bad)
            return
        c = report["conditions"]
        if name in ("a1", "a16", "a1_nc", "a16_nc"):
            self.throughput = report["sent"]["msgs_per_s"]
            self.lat = report.get("send_latency")
        else:
            self.throughput = report["delivered"]["msgs_per_s"]
            self.lat = report.get("end_to_end_latency")
        if report and name != "e":
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


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench-compare-report.py WORK_DIR OUT_DIR")
    work, out = sys.argv[1], sys.argv[2]
    meta = read_meta(os.path.join(work, "meta.env"))
    brokers = [r[0] for r in read_tsv(os.path.join(work, "brokers.tsv"), 3)]
    workloads = read_tsv(os.path.join(work, "workloads.tsv"), 3)
    failures = read_tsv(os.path.join(work, "failures.tsv"), 2)
    raw = os.path.join(work, "raw")
    fsync = {t: load(os.path.join(raw, f"fsync-{t}.json")) for t in (1, 16)}

    res = {}
    servers = {}
    for name, _, _ in workloads:
        for b in brokers:
            if name == "e":
                cycles = []
                for i in (1, 2, 3):
                    drain = load(os.path.join(raw, f"e_drain_{i}.{b}.json"))
                    if not drain:
                        continue
                    cycles.append({
                        "drain": drain,
                        "base": load(os.path.join(raw, f"e_base_{i}.{b}.json")),
                        "fill": load(os.path.join(raw, f"e_fill_{i}.{b}.json")),
                        "drain_wall": read_int(os.path.join(raw, f"e_drain_{i}.{b}.wall_ns")),
                        "base_wall": read_int(os.path.join(raw, f"e_base_{i}.{b}.wall_ns")),
                    })
                rep = cycles[0]["drain"] if cycles else None
                if cycles:
                    res[(name, b)] = Result(name, cycles)
            else:
                rep = load(os.path.join(raw, f"{name}.{b}.json"))
                if rep:
                    res[(name, b)] = Result(name, rep)
            if rep and rep["conditions"].get("server"):
                servers.setdefault(b, rep["conditions"]["server"])

    all_brokers = ["ferromq", "activemq", "rabbitmq"]
    md = render_md(meta, brokers, all_brokers, workloads, failures, fsync, res, servers, work)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "compare.md"), "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.join(out, "compare.svg"), "w", encoding="utf-8") as f:
        f.write(render_svg(meta, all_brokers, res, fsync))
    print(f"wrote {out}/compare.md and {out}/compare.svg", file=sys.stderr)


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def render_md(meta, brokers, all_brokers, workloads, failures, fsync, res, servers, work):
    L = []
    w = L.append
    w("# ferromq beside ActiveMQ and RabbitMQ (issue 8, items 2 and 3)")
    w("")
    w(f"Generated by `scripts/bench-compare.sh` on {meta.get('date', '?')}: one run, same machine, same "
      "load tool (`ferromq-bench`), same workloads, brokers one after the other inside each workload. "
      "Raw `--json` reports: `" + work + "/raw/` on the measuring machine (not committed).")
    w("")
    w("## Machine")
    w("")
    for k, label in [("cpu", "CPU"), ("memory", "Memory"), ("kernel", "Kernel"), ("os", "OS"),
                     ("virt", "Virtualisation"), ("disk", "Disk of every store and of the fsync probe")]:
        w(f"- {label}: {meta.get(k, '?')}")
    w(f"- Load average (1/5/15 min) before: {meta.get('load_before', '?')}, after: {meta.get('load_after', '?')}. "
      "Broker and load tool share the same cores (loopback); nothing else was meant to run, but this is a "
      "shared development VM, so other jobs may have competed for the CPUs and the disk.")
    w(f"- Each run: {meta.get('warmup', '?')} s warm-up + {meta.get('duration', '?')} s measured, 1 KiB bodies, "
      "`ack:auto`, one run per broker and workload (no repeats). The peer baselines saw ~30% run-to-run "
      "fsync variation on this kind of disk, so differences under ~20–30% mean nothing.")
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
    w("What a RECEIPT for a `persistent:true` SEND promises differs, and the a-workloads hinge on it:")
    w("")
    w("- **ferromq**: `ferromq serve`, store `journal`, `store.sync = \"always\"`, fresh data dir, "
      "STOMP on 127.0.0.1. Store, then dispatch: a persistent message is confirmed *and* dispatched "
      "only after the fdatasync of its group-commit batch, whether or not a consumer is waiting.")
    w("- **ActiveMQ** (`scripts/services.sh start peers`): KahaDB defaults with "
      "`journalDiskSyncStrategy=\"always\"` spelled out (fsync per journal write batch), fresh store, "
      "`-Xms512m -Xmx512m` (Debian's default heap), STOMP transport `stomp://` on 127.0.0.1 with "
      "`transport.tcpNoDelay=true` (ferromq and RabbitMQ set TCP_NODELAY by default; without it "
      "Nagle's algorithm added ~5 ms to ActiveMQ's p50 delivery latency at 5,000 msg/s here), default "
      "prefetch. Receipt = the message is in the journal and fsynced — **or** a consumer acked it "
      "before it was stored: with `concurrentStoreAndDispatchQueues=true` (default) a message consumed "
      "at once is never written, so with a fast consumer (a) the receipt need not wait for a disk flush.")
    w("- **RabbitMQ** (`scripts/services.sh start peers`): own node `ferromqbench@localhost`, fresh Mnesia, "
      "classic queues; STOMP `/queue/` destinations are durable queues and `persistent:true` is "
      "delivery-mode 2. Receipt = publisher confirm = the message is fsynced to the message store "
      "(in batches) — **or** it was delivered and acked before it was written, in which case it is "
      "confirmed without touching the disk. Same caveat as ActiveMQ for (a) with a consumer.")
    w("- Neither peer can be configured to always fsync a message that a consumer took at once, so the "
      "a-workloads with a consumer are *not* equally durable: ferromq always pays the fsync, the peers may "
      "not. The **a0** workloads (same, no consumer) remove that difference: there every broker's receipt "
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
      "(T threads, leader/follower group commit).")
    w("")
    w("| threads | records/s | fdatasync/s | records per sync | append→durable p50 / p99 |")
    w("|---|---|---|---|---|")
    for t in (1, 16):
        f = fsync.get(t)
        if f:
            lat = f.get("latency") or {}
            w(f"| {t} | {fmt_n(f['records_per_s'])} | {fmt_n(f['syncs_per_s'])} | "
              f"{f['records_per_sync']:.2f} | {fmt_us(lat.get('p50_us'))} / {fmt_us(lat.get('p99_us'))} |")
        else:
            w(f"| {t} | failed | | | |")
    w("")

    # main table
    w("## Results")
    w("")
    w("Throughput: receipted sends/s for a and a0, deliveries/s for c and d (on a topic every "
      "subscriber's copy counts), backlog drain rate for e. Ratios are ferromq ÷ peer (above 1: "
      "ferromq faster). For the fixed-rate rows c' and d' the throughput is the offered rate and "
      "the ratio column compares p99 latency instead (peer p99 ÷ ferromq p99: above 1, ferromq lower).")
    w("")
    hdr = "| workload | metric | " + " | ".join(BROKER_LABEL[b] for b in all_brokers)
    hdr += " | ferromq / ActiveMQ | ferromq / RabbitMQ | fraction of fsync probe (ferromq / ActiveMQ / RabbitMQ) |"
    w(hdr)
    w("|" + "---|" * (2 + len(all_brokers) + 3))
    for name, desc, _ in workloads:
        kind = KIND.get(name)
        if not kind:
            continue
        rates = RATE_WORKLOADS.__contains__(name)
        cells = []
        for b in all_brokers:
            r = res.get((name, b))
            if r is None:
                cells.append("failed" if b in brokers else "not run")
            elif rates:
                cells.append(f"p99 {fmt_us(r.p('p99_us'))}")
            else:
                cells.append(fmt_n(r.throughput))
        ratios = []
        fr = res.get((name, "ferromq"))
        for peer in PEERS:
            pr = res.get((name, peer))
            if not fr or not pr:
                ratios.append("—")
            elif rates:
                a, b_ = fr.p("p99_us"), pr.p("p99_us")
                ratios.append(fmt_ratio(b_ / a) if a and b_ else "—")
            else:
                ratios.append(fmt_ratio(fr.throughput / pr.throughput) if fr.throughput and pr.throughput else "—")
        frac = "—"
        if kind[3]:
            probe = fsync.get(kind[3])
            if probe and probe.get("records_per_s"):
                parts = []
                for b in all_brokers:
                    r = res.get((name, b))
                    parts.append(f"{r.throughput / probe['records_per_s']:.2f}" if r and r.throughput else "—")
                frac = " / ".join(parts) + f" (of {kind[3]}-thread probe)"
        metric = "p99 end-to-end" if rates else kind[1]
        w(f"| {desc} | {metric} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {frac} |")
    w("")

    # reading the fsync fractions
    readings = []
    for name, probe_t in (("a1", 1), ("a1_nc", 1)):
        probe = (fsync.get(probe_t) or {}).get("records_per_s")
        for b in all_brokers:
            r = res.get((name, b))
            if probe and r and r.throughput and r.throughput > 1.05 * probe:
                readings.append(
                    f"{BROKER_LABEL[b]} in {name} ({r.throughput / probe:.2f} of the 1-thread probe): one producer "
                    "with one receipt in flight cannot be group-committed, so above 1.0 at least part of its "
                    "receipts did not wait for a disk flush (the consumer took the message before it was written).")
    for name in ("a16", "a16_nc"):
        probe = (fsync.get(16) or {}).get("records_per_s")
        for b in all_brokers:
            r = res.get((name, b))
            if probe and r and r.throughput and r.throughput > 1.05 * probe and b == "ferromq":
                readings.append(
                    f"ferromq in {name} ({r.throughput / probe:.2f} of the 16-thread probe): its journal puts more "
                    "records into one fdatasync than the probe's simple leader/follower scheme; the probe is a "
                    "floor for group commit, not a ceiling.")
    if readings:
        w("Reading the fsync fractions:")
        w("")
        for x in readings:
            w(f"- {x}")
        w("")

    # latency table
    w("### Latency percentiles (p50 / p99 / p99.9)")
    w("")
    w("Send→receipt for a and a0; end-to-end (send → delivery) otherwise. c and d are closed loop "
      "without receipts: the producer outruns the consumers and their end-to-end latency measures "
      "the queue that builds up, not the broker's per-message cost — c' and d' (open loop at a fixed "
      "rate, coordinated-omission corrected, ~1 ms timer granularity) are the latency figures.")
    w("")
    w("| workload | latency | " + " | ".join(BROKER_LABEL[b] for b in all_brokers) + " |")
    w("|" + "---|" * (2 + len(all_brokers)))
    for name in LATENCY_ORDER:
        kind = KIND[name]
        desc = next((d for n, d, _ in workloads if n == name), name)
        cells = []
        for b in all_brokers:
            r = res.get((name, b))
            if r is None or r.lat is None:
                cells.append("—")
            else:
                cells.append(f"{fmt_us(r.p('p50_us'))} / {fmt_us(r.p('p99_us'))} / {fmt_us(r.p('p99_9_us'))}")
        w(f"| {desc} | {kind[2]} | " + " | ".join(cells) + " |")
    w("")

    # backlog details
    w("### Backlog (e)")
    w("")
    w("`ferromq-bench` has no fill-then-drain mode, so the script runs three cycles of: (1) fill: "
      "10,000 persistent messages with receipts (window 64) at a fixed 2,500 msg/s, no consumer; "
      "(2) drain: one consumer (`ack:client-individual`, prefetch window 1000: "
      "`activemq.prefetchSize:1000` for ferromq and ActiveMQ, `prefetch-count:1000` for RabbitMQ) "
      "subscribes to the backlog, then one marker message is sent behind it. The backlog arrives as "
      "`stale_ignored` (it belongs to the fill run); the marker's end-to-end latency is the drain "
      "time. The tool's clock starts after its producer has connected, so up to 1000 messages (the "
      "prefetch window) may already be on their way: the rate can be flattering by up to ~10%, for "
      "every broker alike. (3) the same run again on the empty queue; wall time (2) − (3) is a "
      "cross-check that also counts the pre-clock part (±10 ms: the tool polls its drain every 10 ms). "
      "Medians of the cycles, min–max in brackets.")
    w("")
    w("| broker | cycles | filled per cycle | fill send→receipt p99 | drained per cycle | drain time (marker) | drain time (wall-clock cross-check) | drain msg/s |")
    w("|---|---|---|---|---|---|---|---|")

    def spread(xs, scale=1000, unit="ms"):
        if not xs:
            return "—"
        m = statistics.median(xs) * scale
        return f"{m:,.0f} {unit} ({min(xs) * scale:,.0f}–{max(xs) * scale:,.0f})"

    for b in all_brokers:
        r = res.get(("e", b))
        if not r:
            w(f"| {BROKER_LABEL[b]} | failed | | | | | | |")
            continue
        fills = ", ".join("?" if f is None else f"{f:,}" for f in r.filled)
        p99s = ", ".join(fmt_us(p) for p in r.fill_p99)
        drained = ", ".join(f"{d:,}" for d in r.drained)
        w(f"| {BROKER_LABEL[b]} | {len(r.cycles)} | {fills} | {p99s} | {drained} | {spread(r.markers)} | "
          f"{spread(r.diffs)} | {fmt_n(r.throughput)} |")
    w("")

    # delivery check
    w("### Delivery check")
    w("")
    notes = [(n, b, r.note) for (n, b), r in sorted(res.items()) if r.note]
    if notes:
        for n, b, note in notes:
            w(f"- {n} on {BROKER_LABEL[b]}: {note}")
    else:
        w("- Every run delivered every message it sent (no undelivered, unsent or stale messages).")
    w("")
    if failures:
        w("## Failures")
        w("")
        for what, why in failures:
            w(f"- `{what}`: {why}")
        w("")
    missing = [b for b in all_brokers if b not in brokers]
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
    w("scripts/bench-compare.sh   # builds, starts the peers (scripts/services.sh start peers) and ferromq, runs:")
    for name, desc, args in workloads:
        if name == "e":
            w("# e, three cycles of:")
            w("ferromq-bench run --url URL -d /queue/cmp.e --persistent --receipt --window 64 -p 1 -c 0 "
              "--rate 2500 --warmup 0 --duration 4   # fill")
            w("ferromq-bench run --url URL -d /queue/cmp.e --persistent -p 1 -c 1 --ack client-individual "
              "--subscribe-header PREFETCH_1000 --rate 1 --warmup 0 --duration 1 --timeout 60   # drain + marker, then again empty")
        else:
            w(f"ferromq-bench run --url URL {args}   # {name}")
    w("ferromq-bench fsync-probe --threads 1|16 --size 1024 --duration D --dir DATA_DISK")
    w("# RabbitMQ also gets: --host / --login guest --passcode guest")
    w("```")
    w("")
    return "\n".join(L)


def render_svg(meta, all_brokers, res, fsync):
    W, PH = 1000, 330
    top = 70
    H = top + 2 * PH + 40
    s = []
    a = s.append
    a(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
      'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">')
    a(f'<rect width="{W}" height="{H}" fill="white"/>')
    a(f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">'
      'ferromq vs ActiveMQ 5.17 vs RabbitMQ 3.10 — same machine, same load tool</text>')
    a(f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">'
      f'{escape(meta.get("date", ""))}; {escape(meta.get("cpu", ""))}; 1 KiB bodies; '
      f'{escape(meta.get("warmup", "?"))} s warm-up + {escape(meta.get("duration", "?"))} s; log scales</text>')
    # legend
    lx = W / 2 - 310
    for i, b in enumerate(all_brokers):
        x = lx + i * 110
        a(f'<rect x="{x}" y="50" width="12" height="12" fill="{BROKER_COLOR[b]}"/>')
        a(f'<text x="{x + 16}" y="60">{BROKER_LABEL[b]}</text>')
    a(f'<line x1="{lx + 330}" y1="56" x2="{lx + 350}" y2="56" stroke="black" stroke-dasharray="4,3"/>')
    a(f'<text x="{lx + 354}" y="60">fsync probe, same concurrency (records/s; append→durable p99)</text>')

    def panel(y0, title, order, value, label, refs):
        left, right = 80, W - 20
        ph = PH - 80
        pt = y0 + 30
        vals = [value(res.get((n, b))) for n in order for b in all_brokers]
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
                    a(f'<text x="{x + (bw - 2) / 2:.1f}" y="{yy - 3:.1f}" text-anchor="middle" font-size="8">'
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

    f1 = (fsync.get(1) or {}).get("records_per_s")
    f16 = (fsync.get(16) or {}).get("records_per_s")
    panel(top, "Throughput (msg/s; higher is better) — a: receipted sends, a0: same without consumer, "
          "c/d: deliveries, e: backlog drain", THROUGHPUT_ORDER,
          lambda r: r.throughput if r else None, short,
          {"a1": f1, "a1_nc": f1, "a16": f16, "a16_nc": f16})
    p1 = ((fsync.get(1) or {}).get("latency") or {}).get("p99_us")
    p16 = ((fsync.get(16) or {}).get("latency") or {}).get("p99_us")
    panel(top + PH, "p99 latency (lower is better) — a/a0: send→receipt; c'/d': end-to-end at a fixed rate; "
          "c/d: closed loop (backlog)", LATENCY_ORDER,
          lambda r: r.p("p99_us") if r else None, short_us,
          {"a1": p1, "a1_nc": p1, "a16": p16, "a16_nc": p16})
    a(f'<text x="20" y="{H - 30}" fill="#555">a = persistent queue, receipt window 1, 1 or 16 producers → 1 consumer; '
      'a0 = same without consumer (receipt = on disk for every broker); c = non-persistent queue 1→1;</text>')
    a(f'<text x="20" y="{H - 14}" fill="#555">d = non-persistent topic 1→10 subscribers; c\', d\' = same at a fixed rate '
      '(open loop); e = 10,000-message persistent backlog drained by 1 consumer. Details: compare.md.</text>')
    a("</svg>")
    return "\n".join(s) + "\n"


if __name__ == "__main__":
    main()
