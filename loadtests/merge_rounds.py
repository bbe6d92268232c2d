#!/usr/bin/env python3
"""Merges the FSBENCH_RESULT JSON of several wrk rounds of one phase into one result.

Usage: merge_rounds.py OUT.json ROUND1.json [ROUND2.json ...]

Counts add up; rates are recomputed from the summed counts and durations; latency
percentiles are the median over the rounds (max: the largest). bench.sh alternates a
phase with its /healthz reference in rounds, so that drift on a shared machine hits both
alike, and reports the merged figures.
"""
import json
import statistics
import sys

# rate field -> (count field, divided by)
RATES = {
    "requests_per_s": ("requests", "duration_s"),
    "ok_per_s": ("ok", "duration_s"),
    "created_per_s": ("created", "duration_s"),
    "transfer_per_s": ("bytes", "duration_s"),
    "mean_wire_bytes": ("bytes", "requests"),
    "mean_body_bytes": ("body_bytes", "answered"),
}
# Labels, the same in every round.
FIRST = {"phase", "path", "expect", "threads"}


def merge(rounds):
    out = {"rounds": len(rounds)}
    for key in rounds[0]:
        values = [r[key] for r in rounds if key in r]
        if key in FIRST or key in RATES:
            out[key] = values[0]
        elif key == "latency_ms":
            out[key] = {
                p: (max if p == "max" else statistics.median)([v[p] for v in values if p in v])
                for p in values[0]
            }
        elif isinstance(values[0], dict):
            summed = {}
            for v in values:
                for k, x in v.items():
                    summed[k] = summed.get(k, 0) + x
            out[key] = summed
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            out[key] = sum(values)
        else:
            out[key] = values[0]
    for rate, (count, per) in RATES.items():
        if rate in out and out.get(per):
            out[rate] = out.get(count, 0) / out[per]
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = []
    for path in sys.argv[2:]:
        with open(path) as f:
            rounds.append(json.load(f))
    with open(sys.argv[1], "w") as f:
        json.dump(merge(rounds), f)


if __name__ == "__main__":
    main()
