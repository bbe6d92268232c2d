"""What summary.py (bench.sh) and ab_summary.py (bench.sh --baseline) share: reading a
run folder (the phases' FSBENCH_RESULT JSON, env.txt, /metrics scrapes) and formatting
numbers for the Markdown tables."""
import json
import os
import re
import statistics


class Run:
    """One results folder, loadtests/results/<stamp>/."""

    def __init__(self, out):
        self.out = out
        self.env = {}
        try:
            with open(os.path.join(out, "env.txt")) as f:
                for line in f:
                    k, _, v = line.rstrip("\n").partition("=")
                    self.env[k] = v
        except OSError:
            pass
        self.rounds = int(self.env.get("rounds") or 1)

    def load(self, name):
        """The JSON file `name` of the run, or None."""
        try:
            with open(os.path.join(self.out, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def read_bytes(self, name):
        try:
            with open(os.path.join(self.out, name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def metric(self, fname, name):
        """Sum of the samples of `name` with outcome="committed" in the /metrics scrape
        `fname`; None if absent."""
        text = self.read_bytes(fname)
        if text is None:
            return None
        total, seen = 0.0, False
        pat = re.compile(r"^" + re.escape(name) + r"\{([^}]*)\}\s+(\S+)")
        for line in text.decode("utf-8", "replace").splitlines():
            m = pat.match(line)
            if m and re.search(r'(^|,)\s*outcome="committed"', m.group(1)):
                try:
                    total += float(m.group(2))
                    seen = True
                except ValueError:
                    pass
        return total if seen else None

    def orders_per_tx(self, before, after):
        """(orders per committed writer batch, orders, batches) between two scrapes."""
        b0 = self.metric(before, "flashsale_writer_batches_total")
        b1 = self.metric(after, "flashsale_writer_batches_total")
        o0 = self.metric(before, "flashsale_writer_orders_total")
        o1 = self.metric(after, "flashsale_writer_orders_total")
        if None in (b0, b1, o0, o1) or b1 <= b0:
            return None, None, None
        return (o1 - o0) / (b1 - b0), o1 - o0, b1 - b0

    def paired_ratio(self, phase, ref, rate, ref_rate=None):
        """The median over the rounds of phase/ref, each round against the ref round
        run right before it (robust to a round the shared machine slowed down), and
        the per-round ratios; None if a round is missing. rate(p) is the phase's
        figure, ref_rate(h) the reference's (default: ok_per_s, as for /healthz)."""
        ref_rate = ref_rate or (lambda h: h.get("ok_per_s"))
        ratios = []
        for r in range(1, self.rounds + 1):
            p, h = self.load(f"{phase}-r{r}.json"), self.load(f"{ref}-r{r}.json")
            if not p or not h or not ref_rate(h):
                return None, []
            ratios.append(rate(p) / ref_rate(h))
        return statistics.median(ratios), ratios


def n(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"


def ms(x):
    return "n/a" if x is None else (f"{x:.2f} ms" if x < 10 else f"{x:.1f} ms")


def us(x):
    return "n/a" if x is None else f"{x:.1f} µs"


def mark(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def others(res, skip):
    """The outcomes of a phase other than those in `skip`, most frequent first."""
    items = sorted(((k, v) for k, v in (res or {}).get("outcomes", {}).items() if k not in skip),
                   key=lambda kv: -kv[1])
    return ", ".join(f"{k}: {v:,}" for k, v in items) or "none"


def sock(res):
    e = (res or {}).get("socket_errors", {})
    return sum(e.values()) if e else 0


def ratio_cell(r, per_round):
    if r is None:
        return "n/a"
    if len(per_round) < 2:
        return f"{r:.3f}"
    return f"{r:.3f} (median; rounds " + ", ".join(f"{x:.2f}" for x in per_round) + ")"


def per(res, key, count="requests", scale=1e6):
    """res[key] / res[count] (times `scale`: µs for CPU seconds), None if missing."""
    if not res or res.get(key) is None or not res.get(count):
        return None
    return res[key] / res[count] * scale
