#!/usr/bin/env bash
# Checks the monitoring files in grafana/:
#   - prometheus.yml and alerts.yml pass `promtool check`, and the alerts pass
#     their unit tests (alerts_test.yml);
#   - every dashboard is valid JSON and queries Prometheus through the
#     flashsale datasource;
#   - the metric names that dashboards and alerts query are printed, and must be
#     exactly those listed in metrics.txt (the list a Rust test compares with the
#     live /metrics).
# Run from the repository root: bash grafana/check.sh
# promtool comes from Debian's `prometheus` package, installed here if missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v promtool >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "check.sh: promtool is missing; run as root or apt-get install prometheus" >&2
        exit 1
    fi
    echo "== installing prometheus (for promtool)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends prometheus; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends prometheus
    fi
fi

echo "== promtool check config"
promtool check config grafana/prometheus.yml
echo "== promtool check rules"
promtool check rules grafana/alerts.yml
echo "== promtool test rules"
promtool test rules grafana/alerts_test.yml

echo "== dashboards parse"
for dashboard in grafana/dashboards/*.json; do
    python3 -m json.tool "$dashboard" >/dev/null
    echo "  OK: $dashboard"
done

used="$(mktemp)"
trap 'rm -f "$used"' EXIT

echo "== metrics queried"
python3 - "$used" grafana/alerts.yml grafana/dashboards/*.json <<'PY'
"""Print the metrics each panel and alert queries; write their union to argv[1]."""
import json
import re
import sys

DATASOURCE_UID = "flashsale-prometheus"
# Metric names are flashsale_*; any other name directly before a selector or a
# range ({ or [) is reported as foreign rather than silently ignored.
OURS = re.compile(r"\bflashsale_[a-z0-9_]+\b")
SELECTED = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")

errors = []
used = set()


def metrics_in(expr, where):
    expr = STRING.sub('""', expr)  # label values are not metric names
    names = set(OURS.findall(expr))
    for name in SELECTED.findall(expr):
        if not name.startswith("flashsale_"):
            errors.append(f"{where}: queries {name}, not a flashsale metric")
    if not names:
        errors.append(f"{where}: queries no flashsale metric: {expr.strip()}")
    used.update(names)
    return sorted(names)


def report(where, names):
    print(f"  {where}: {' '.join(names)}")


def check_alerts(path):
    """Reads the alert rules line by line (no YAML parser needed): `- alert:`
    starts a rule; `expr:` is one line or a block scalar (| or >)."""
    rules = []  # [name, expr lines, annotation keys]
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- alert:\s*(\S+)", line)
        if m:
            rules.append([m.group(1), [], set()])
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m and rules:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value[:1] in ("|", ">"):
                i += 1
                while i < len(lines) and (
                    not lines[i].strip()
                    or len(lines[i]) - len(lines[i].lstrip()) > indent
                ):
                    rules[-1][1].append(lines[i])
                    i += 1
                continue
            rules[-1][1].append(value.strip("\"'"))
        m = re.match(r"\s*(summary|description):", line)
        if m and rules:
            rules[-1][2].add(m.group(1))
        i += 1
    if not rules:
        errors.append(f"{path}: no alert rules found")
    for name, expr, annotations in rules:
        where = f"{path}: {name}"
        if not "".join(expr).strip():
            errors.append(f"{where}: no expr found")
            continue
        for key in ("summary", "description"):
            if key not in annotations:
                errors.append(f"{where}: no {key} annotation")
        report(where, metrics_in("\n".join(expr), where))


def check_datasource(ds, where):
    uid = ds.get("uid") if isinstance(ds, dict) else ds
    if uid not in ("${datasource}", DATASOURCE_UID):
        errors.append(f"{where}: datasource {uid!r}, not the flashsale one")


def check_dashboard(path):
    dash = json.load(open(path, encoding="utf-8"))
    name = f"{path} ({dash.get('title')})"
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dash:
            errors.append(f"{name}: no {key}")
    for var in dash.get("templating", {}).get("list", []):
        where = f"{name}: variable ${var.get('name')}"
        if var.get("type") == "datasource":
            default = var.get("current", {}).get("value")
            if default != DATASOURCE_UID:
                errors.append(f"{where}: defaults to {default!r}, not {DATASOURCE_UID}")
        elif var.get("type") == "query":
            check_datasource(var.get("datasource"), where)
            query = var.get("query")
            query = query.get("query", "") if isinstance(query, dict) else query
            report(where, metrics_in(query or "", where))
    panels = list(dash.get("panels", []))
    ids = set()
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
        where = f"{name}: {panel.get('title')!r}"
        if panel.get("id") in ids:
            errors.append(f"{where}: id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        check_datasource(panel.get("datasource"), where)
        names = set()
        for target in panel.get("targets", []):
            check_datasource(target.get("datasource"), where)
            names.update(metrics_in(target.get("expr", ""), where))
        if not panel.get("targets"):
            errors.append(f"{where}: no queries")
        report(where, sorted(names))


out, sources = sys.argv[1], sys.argv[2:]
for source in sources:
    if source.endswith(".json"):
        check_dashboard(source)
    else:
        check_alerts(source)
with open(out, "w", encoding="utf-8") as f:
    f.write("".join(f"{name}\n" for name in sorted(used)))
if errors:
    print("\n".join(f"ERROR: {e}" for e in errors), file=sys.stderr)
    sys.exit(1)
PY

echo "== grafana/metrics.txt matches what is queried"
if ! diff -u --label grafana/metrics.txt --label queried <(grep -v '^[[:space:]]*$' grafana/metrics.txt | LC_ALL=C sort -u) "$used"; then
    echo "check.sh: grafana/metrics.txt differs from the metrics queried above" >&2
    echo "  (- only in metrics.txt, + queried but not listed): update metrics.txt" >&2
    exit 1
fi
echo "  OK: $(wc -l <"$used") metrics"
echo "grafana/check.sh: all checks passed"
