#!/usr/bin/env python3
"""Turns the summary of the backends bench into bench-results/backends.md and backends.svg.

    python3 scripts/bench-backends-report.py WORK_DIR OUT_DIR

WORK_DIR holds summary.json (written by crates/store/benches/backends.rs through
FERROMQ_BENCH_SUMMARY) and meta.env. Anything below the line NOTES_MARKER in an existing
OUT_DIR/backends.md (the written reading of the figures) is kept. Standard library only.
"""

import json
import math
import os
import sys
from html import escape

NOTES_MARKER = "<!-- notes: kept by scripts/bench-backends-report.py -->"
ORDER = ["memory", "journal", "journal-portable", "lsm", "sql-sqlite", "sql-postgres", "sql-mariadb"]
COLOR = {
    "memory": "#adb5bd",
    "journal": "#d9480f",
    "journal-portable": "#f08c00",
    "lsm": "#5f3dc4",
    "sql-sqlite": "#1c7ed6",
    "sql-postgres": "#0b7285",
    "sql-mariadb": "#2b8a3e",
}


def read_meta(path):
    meta = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    meta[k] = v
    except OSError:
        pass
    return meta


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:,.1f}"
    return f"{v:,.2f}"


def svg_chart(workloads, rates, backends):
    """One panel per workload, a horizontal bar per backend, log-scaled x axis."""
    width, label_w, bar_h, gap, panel_gap = 860, 150, 14, 3, 34
    rows = sum(len([b for b in backends if (b, w) in rates]) for w in workloads)
    height = 40 + rows * (bar_h + gap) + len(workloads) * panel_gap + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="10" y="18" font-size="14" font-weight="bold">'
        f"Store backends: operations per second (log scale)</text>",
    ]
    y = 40
    plot_w = width - label_w - 120
    for w in workloads:
        vals = [rates[(b, w)] for b in backends if (b, w) in rates]
        if not vals:
            continue
        lo = 10 ** math.floor(math.log10(max(min(vals), 1e-3)))
        hi = 10 ** math.ceil(math.log10(max(vals) * 1.01))
        span = math.log10(hi) - math.log10(lo) or 1.0
        out.append(f'<text x="10" y="{y + 2}" font-weight="bold">{escape(w)}</text>')
        y += 10
        for b in backends:
            if (b, w) not in rates:
                continue
            v = rates[(b, w)]
            frac = (math.log10(max(v, lo)) - math.log10(lo)) / span
            bw = max(1.0, frac * plot_w)
            out.append(f'<text x="{label_w - 6}" y="{y + bar_h - 3}" text-anchor="end">{escape(b)}</text>')
            out.append(
                f'<rect x="{label_w}" y="{y}" width="{bw:.1f}" height="{bar_h}" '
                f'fill="{COLOR.get(b, "#495057")}"/>'
            )
            out.append(f'<text x="{label_w + bw + 4:.1f}" y="{y + bar_h - 3}">{fmt(v)}</text>')
            y += bar_h + gap
        out.append(
            f'<text x="{label_w}" y="{y + 10}" fill="#868e96">axis {fmt(lo)} … {fmt(hi)} (log)</text>'
        )
        y += panel_gap - 10
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    work, out_dir = sys.argv[1], sys.argv[2]
    with open(os.path.join(work, "summary.json"), encoding="utf-8") as f:
        rows = json.load(f)
    meta = read_meta(os.path.join(work, "meta.env"))
    rates = {(r["backend"], r["workload"]): r["per_second"] for r in rows}
    workloads = []
    for r in rows:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
    present = {r["backend"] for r in rows}
    backends = [b for b in ORDER if b in present] + sorted(present - set(ORDER))

    md = [
        "# Store backends side by side (`cargo bench -p ferromq-store --bench backends`)",
        "",
        f"Run of {meta.get('started', '?')} by `scripts/bench-backends.sh`. Machine: "
        f"{meta.get('kernel', '?')}, {meta.get('cpus', '?')} CPUs, {meta.get('mem', '?')} RAM, "
        f"{meta.get('rustc', '?')}; data on `{meta.get('disk', '?')}`.",
        f"Servers (loopback, throwaway instances of `scripts/services.sh`, durable commits): "
        f"PostgreSQL {meta.get('postgres', '?')} (`synchronous_commit = on`), MariaDB "
        f"{meta.get('mariadb', '?')} (`innodb_flush_log_at_trx_commit = 1`); RocksDB "
        f"{meta.get('rocksdb', '?')} (Debian `librocksdb-dev`).",
        "",
        "Workloads (1 KiB messages; every confirmation is durable — fdatasync or the database's "
        "commit — before the writer sees it):",
        "",
        "- **enqueue, N writer(s)**: each writer thread submits one-message batches and waits for "
        "each confirmation (a STOMP producer with a receipt on every SEND). 16 writers let a "
        "backend group commits.",
        "- **load + ack, 16 consumers**: 16 threads read their queue in pages of 100 and ack every "
        "message in its own batch, waiting for each (client-individual acks).",
        f"- **recovery of {meta.get('recovery_messages', '?')} msgs**: open a store holding that many "
        "1 KiB messages in 10 queues, `recover()`, close — the figure is recoveries per second "
        "(its inverse is the time to recover).",
        "",
        "Figures are mean rates over criterion's measured iterations (10 samples, 3 s each).",
        "",
    ]
    header = "| backend | " + " | ".join(workloads) + " |"
    md.append(header)
    md.append("|---|" + "---|" * len(workloads))
    for b in backends:
        cells = []
        for w in workloads:
            v = rates.get((b, w))
            if v is None:
                cells.append("—")
            elif w.startswith("recovery"):
                cells.append(f"{fmt(v)}/s ({1.0 / v:.3f} s)" if v > 0 else "0")
            else:
                cells.append(fmt(v))
        md.append(f"| {b} | " + " | ".join(cells) + " |")
    md.append("")
    # io_uring against the portable write path, measured in the same run.
    ratios = []
    for w in workloads:
        a, p = rates.get(("journal", w)), rates.get(("journal-portable", w))
        if a and p:
            ratios.append(f"| {w} | {fmt(a)} | {fmt(p)} | {a / p:.2f}× |")
    if ratios:
        md += [
            "## Journal: io_uring write path vs portable (`pwrite` + `fdatasync`), same run",
            "",
            "| workload | io_uring | portable | ratio |",
            "|---|---|---|---|",
            *ratios,
            "",
        ]
    md += ["![throughput per backend](backends.svg)", ""]

    path = os.path.join(out_dir, "backends.md")
    notes = ""
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1]
    except OSError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n" + NOTES_MARKER + (notes if notes else "\n"))
    with open(os.path.join(out_dir, "backends.svg"), "w", encoding="utf-8") as f:
        f.write(svg_chart(workloads, rates, backends))


if __name__ == "__main__":
    main()
