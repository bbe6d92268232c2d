#!/usr/bin/env python3
"""The summary of an A/B run (loadtests/bench.sh --baseline REV, see ab.sh): for each
phase a Markdown table with A's figure, B's figure and B/A, and a table of the rounds;
on stdout and in OUT/summary.md, the numbers in OUT/summary.json.

Usage: ab_summary.py OUT STRICT    (STRICT=1: exit 1 when a check fails)
"""
import json
import os
import statistics
import sys

from report import Run, ms, n, others, per, sock, us

# What each phase counts as its result: (label of the rate, its short form, label of
# "per one", the outcome counted, a function of one round's or the merged JSON giving
# that count).
PHASES = {
    "checkout": ("committed checkouts/s (201)", "201s/s", "committed order", "201",
                 lambda res: res.get("created", 0)),
    "refusal": ("refusals/s (409 sold_out)", "409s/s", "refusal", "409 sold_out",
                lambda res: res.get("outcomes", {}).get("409 sold_out", 0)),
}
# A phase another helper adds to ab.sh without an entry here counts 201s.
DEFAULT_PHASE = PHASES["checkout"]
LABELS = ("A", "B")


def ratio(b, a):
    return None if a in (None, 0) or b is None else b / a


def x(r):
    return "n/a" if r is None else f"{r:.3f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def per_counted(res, key, counted, scale):
    """res[key] per counted result (CPU seconds: scale 1e6 for µs), None if missing."""
    if not res or res.get(key) is None or not counted:
        return None
    return res[key] / counted * scale


def phase_figures(run, phase):
    """Each server's figures for one phase (None where a file is missing)."""
    _, _, _, _, count = PHASES.get(phase, DEFAULT_PHASE)
    figures = {}
    for label in LABELS:
        merged = run.load(f"{phase}-{label}.json")
        ref = run.load(f"healthz-{phase}-{label}.json")
        rounds, refs = [], []
        for r in range(1, run.rounds + 1):
            rounds.append(run.load(f"{phase}-{label}-r{r}.json"))
            refs.append(run.load(f"healthz-{phase}-{label}-r{r}.json"))
        rates = [count(p) / p["duration_s"] if p and p.get("duration_s") else None for p in rounds]
        hz_rates = [h.get("ok_per_s") if h else None for h in refs]
        vs_hz = [ratio(p, h) for p, h in zip(rates, hz_rates)]
        counted = count(merged) if merged else None
        server = per_counted(merged, "server_cpu_s", counted, 1e6)
        db = per_counted(merged, "db_cpu_s", counted, 1e6)
        wal = per_counted(merged, "wal_bytes", counted, 1)
        tx, tx_orders, tx_batches = run.orders_per_tx(f"metrics-{phase}-{label}-before.txt",
                                                      f"metrics-{phase}-{label}-after.txt")
        lat = (merged or {}).get("latency_ms", {})
        figures[label] = {
            "rate": median(rates), "rates": rates, "counted": counted,
            "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"),
            "p99_rounds": [p["latency_ms"].get("p99") if p else None for p in rounds],
            "server_us": server, "db_us": db,
            "total_us": None if server is None or db is None else server + db,
            "wal_bytes": wal, "orders_per_tx": tx, "tx_orders": tx_orders, "tx_batches": tx_batches,
            "healthz_rate": median(hz_rates), "healthz_rates": hz_rates,
            "healthz_server_us": per(ref, "server_cpu_s"),
            "healthz_p99_ms": (ref or {}).get("latency_ms", {}).get("p99"),
            "vs_healthz": median(vs_hz), "vs_healthz_rounds": vs_hz,
            "others": others(merged, {PHASES.get(phase, DEFAULT_PHASE)[3]}) if merged else "n/a",
            "socket_errors": sock(merged),
        }
    a, b = figures["A"], figures["B"]
    paired = [ratio(rb, ra) for ra, rb in zip(a["rates"], b["rates"])]
    figures["paired_rate_ratio"] = median(paired)
    figures["paired_rate_ratios"] = paired
    return figures


def phase_table(run, phase, f):
    rate_label, short, one, counted, _ = PHASES.get(phase, DEFAULT_PHASE)
    a, b = f["A"], f["B"]

    def row(label, key, fmt, note="", floor=None):
        # Below `floor` on both sides a figure is noise (say PostgreSQL's CPU per
        # refusal: its background work, not the refusals), and so would be its ratio.
        r = x(ratio(b[key], a[key]))
        if floor is not None and a[key] is not None and b[key] is not None \
                and max(a[key], b[key]) < floor:
            r = f"– (both under {floor:g})"
        return f"| {label} | {fmt(a[key])} | {fmt(b[key])} | {r}{note} |"

    def by(unit):
        return lambda v: "n/a" if v is None else f"{v:,.0f} {unit}"

    paired = f["paired_rate_ratios"]
    paired_note = ""
    if len(paired) > 1 and None not in paired:
        paired_note = (f" (per round: {', '.join(f'{r:.2f}' for r in paired)}; "
                       f"median {f['paired_rate_ratio']:.3f})")
    lines = [
        f"#### {phase}",
        "",
        "| measure | A (baseline) | B (current) | B/A |",
        "|---|---|---|---|",
        row(f"{rate_label}, median of {run.rounds} rounds", "rate", n, paired_note),
        row("latency p50 (median of rounds)", "p50_ms", ms),
        row("latency p99 (median of rounds)", "p99_ms", ms),
        f"| responses other than {counted} | {a['others']} | {b['others']} | |",
        row(f"server CPU per {one}", "server_us", us, floor=1),
        row(f"PostgreSQL CPU per {one}", "db_us", us, floor=1),
        row(f"server + PostgreSQL CPU per {one}", "total_us", us, floor=1),
        row(f"WAL per {one}", "wal_bytes", by("B"), floor=10),
    ]
    if a["orders_per_tx"] is not None or b["orders_per_tx"] is not None:
        lines.append(row("orders per DB transaction (writer metrics)", "orders_per_tx",
                         lambda v: "n/a" if v is None else f"{v:.1f}"))
    lines += [
        row("/healthz requests/s, same rounds (median)", "healthz_rate", n),
        row("server CPU per /healthz request", "healthz_server_us", us),
        row(f"{phase} / healthz (median of per-round ratios)", "vs_healthz", x),
        "",
        f"| round | A {short} | B {short} | B/A | A p99 | B p99 | A /healthz/s | B /healthz/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in range(run.rounds):
        lines.append(
            f"| {r + 1} | {n(a['rates'][r])} | {n(b['rates'][r])} | {x(paired[r])} | "
            f"{ms(a['p99_rounds'][r])} | {ms(b['p99_rounds'][r])} | "
            f"{n(a['healthz_rates'][r])} | {n(b['healthz_rates'][r])} |")
    return lines


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, strict = sys.argv[1], sys.argv[2] == "1"
    run = Run(out)
    env = run.env
    phases = env.get("phases", "").split()
    warnings, results = [], {}
    lines = [
        f"### flashsale A/B benchmark {env.get('date_utc', '')}",
        "",
        f"A = baseline `{env.get('baseline_rev')}` (`{env.get('baseline_sha', '')[:12]}`), "
        f"B = current tree `{env.get('git_rev')}`{' (dirty)' if env.get('git_dirty') == 'yes' else ''}; "
        f"{env.get('cpus')} CPUs, {env.get('wrk')}; wrk -t{env.get('threads')} -c{env.get('connections')}; "
        f"per phase {run.rounds} rounds of {env.get('round_duration')} per binary, in turns A, B, A, B …, "
        f"each turn a /healthz round then the phase's round on the same server; "
        f"{env.get('database')}. Throughput and latency: median of the rounds; CPU and WAL: "
        f"totals over the rounds divided by the count.",
    ]
    for phase in phases:
        f = phase_figures(run, phase)
        results[phase] = f
        lines += [""] + phase_table(run, phase, f)
        for label in LABELS:
            if f[label]["socket_errors"]:
                warnings.append(f"{phase} on {label}: {f[label]['socket_errors']} wrk socket errors")
            if f[label]["counted"] is None:
                warnings.append(f"{phase} on {label}: no results")
        if phase == "refusal":
            for label in LABELS:
                res = run.load(f"refusal-{label}.json") or {}
                extra = res.get("outcomes", {}).get("201", 0)
                if extra:
                    warnings.append(f"refusal on {label}: {extra:,} checkouts answered 201 on a "
                                    "sold-out product (OVERSELL)")
    for label in LABELS:
        sold = run.load(f"sellout-{label}.json")
        if sold and sold.get("created") != int(env.get("soldout_stock") or 0):
            warnings.append(f"sell-out before the refusal rounds on {label}: {sold.get('created')} "
                            f"checkouts answered 201, expected {env.get('soldout_stock')}")
    if "checkout" in results:
        # issue 15's targets, meant against cd6a62d; with another baseline they only
        # say how B compares with it.
        a, b = results["checkout"]["A"], results["checkout"]["B"]
        cpu_r, rate_r = ratio(b["total_us"], a["total_us"]), results["checkout"]["paired_rate_ratio"]
        lines += ["", "Against the baseline (issue 15's targets apply with A = `cd6a62d`):",
                  "", "| measure | value | target |", "|---|---|---|",
                  f"| B/A server + PostgreSQL CPU per committed order | {x(cpu_r)} | <= 0.5 |",
                  f"| B/A committed checkouts/s (median of per-round ratios) | {x(rate_r)} | >= 1.6 |",
                  f"| B p99 at {env.get('connections')} connections | {ms(b['p99_ms'])} | <= 30 ms |"]
    if warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in warnings]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump({"env": env, "phases": results, "warnings": warnings}, fh, indent=2)
    print(text)
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    sys.exit(1 if strict and warnings else 0)


if __name__ == "__main__":
    main()
