#!/usr/bin/env python3
"""Evaluates every dashboard panel query and every rule expression in a real Prometheus.

    python3 grafana/live_queries.py PROMETHEUS_URL INTERVAL_SECONDS AT_UNIX_TIME DASHBOARD...

Run by grafana/live_check.sh once a workload has been scraped. Each query is sent to
/api/v1/query at AT_UNIX_TIME (the end of the workload) and must return at least one
series; every query that returns none (or an error) is listed and the exit status is 1.
Python's standard library only.

Dashboards: every `expr` of every panel, also inside rows, hidden or not. Grafana's
variables are replaced as Grafana would for a dashboard showing the last 5 minutes,
INTERVAL_SECONDS being the scrape interval Grafana is told (the datasource's
timeInterval, its minimum step):
  $__interval = INTERVAL_SECONDS,
  $__rate_interval = max($__interval + INTERVAL_SECONDS, 4 x INTERVAL_SECONDS),
  $__range = 5m (and $__range_s, $__range_ms; $__interval_ms likewise);
  a dashboard variable of type `query` (label_values(...)) takes its default, where
  "All" is every value Prometheus has for it, as a regex alternation (what Grafana
  sends for a multi-value variable); `datasource` variables are not used in queries.
A variable the script cannot resolve is an error, not a silent pass.

Rules: taken from Prometheus's own /api/v1/rules (so exactly what it loaded from
grafana/alerts.yml, already parsed), each must be healthy, and its expression must
return a series. An alert expression is a condition, which returns nothing while all
is well, so the principle is: evaluate the series the condition is decided on.
  - `A <op> B` with a top-level comparison is evaluated as `A <op> bool B`: the same
    series, valued 1 where the alert would fire and 0 where not, so it is empty only
    when the data the alert needs is missing;
  - `absent(X)` (and `absent_over_time(X)`) is evaluated as `X`: the series whose
    absence it watches must be present;
  - conditions joined by `and`, `or` or `unless` at the top level are each turned so,
    and joined again by the same operator;
  - anything else is evaluated as written.
"""

import json
import math
import re
import sys
import urllib.parse
import urllib.request

PROMETHEUS, INTERVAL, AT = sys.argv[1], float(sys.argv[2]), sys.argv[3]
DASHBOARDS = sys.argv[4:]
RANGE_SECONDS = 300
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPERATORS = re.compile(r"\b(and|or|unless)\b")


def api(path, **params):
    url = f"{PROMETHEUS}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:  # 400 on a bad query: the body says why
        return json.load(e)


def duration(seconds):
    return f"{int(seconds * 1000)}ms" if seconds < 1 else f"{int(seconds)}s"


def builtins():
    interval = INTERVAL
    rate_interval = max(interval + INTERVAL, 4 * INTERVAL)
    return {
        "__rate_interval": duration(rate_interval),
        "__interval_ms": str(int(interval * 1000)),
        "__interval": duration(interval),
        "__range_ms": str(RANGE_SECONDS * 1000),
        "__range_s": str(RANGE_SECONDS),
        "__range": f"{RANGE_SECONDS}s",
    }


def variable_values(var):
    """The values of a `query` variable, from Prometheus, as Grafana would list them."""
    query = var.get("query")
    query = query.get("query", "") if isinstance(query, dict) else (query or "")
    m = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*",
                     query)
    if not m:
        raise ValueError(f"unsupported variable query {query!r}")
    selector, label = m.groups()
    params = {"match[]": [selector]} if selector else {}
    answer = api(f"/api/v1/label/{label}/values", **params)
    if answer.get("status") != "success":
        raise ValueError(f"{query}: {answer.get('error')}")
    return answer["data"]


def dashboard_variables(dash):
    """name -> replacement text, for the dashboard's own variables."""
    values = {}
    for var in dash.get("templating", {}).get("list", []):
        name, kind = var.get("name"), var.get("type")
        if kind == "datasource":
            continue
        current = var.get("current", {}).get("value")
        current = current if isinstance(current, list) else [current]
        if kind == "query":
            found = variable_values(var)
            if not found:
                raise ValueError(f"variable ${name}: {var.get('query')} has no values")
            chosen = found if "$__all" in current or not current[0] else current
            if "$__all" in current and var.get("allValue"):
                values[name] = var["allValue"]
                continue
        elif kind in ("custom", "constant", "textbox", "interval"):
            chosen = [c for c in current if c is not None] or [var.get("query", "")]
        else:
            raise ValueError(f"variable ${name} of type {kind!r} is not supported here")
        values[name] = chosen[0] if len(chosen) == 1 else "(" + "|".join(
            re.escape(str(c)) for c in chosen) + ")"
    return values


def substitute(expr, values):
    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise ValueError(f"unknown variable ${name}")
        return values[name]

    # $name, ${name} (optionally ${name:format}), [[name]]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", one, expr)


def panel_queries(path):
    """(where, expr) for every target of every panel of a dashboard."""
    dash = json.load(open(path, encoding="utf-8"))
    values = {**builtins(), **dashboard_variables(dash)}
    panels = list(dash.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # rows carry their panels when collapsed
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            if expr.strip():
                where = f"{path}: {panel.get('title')!r} [{target.get('refId', '?')}]"
                try:
                    yield where, substitute(expr, values)
                except ValueError as e:
                    yield where, e


def top_level(expr):
    """The comparisons outside (), {}, [] and strings, as (position, operator), and
    whether a set operator (and, or, unless) joins the expression at that level."""
    depth, i, found, outside = 0, 0, [], []
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            end = expr.index(c, i + 1)
            while c != "`" and expr[end - 1] == "\\":
                end = expr.index(c, end + 1)
            i = end + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            outside.append(c)
            for op in COMPARISONS:
                if expr.startswith(op, i):
                    found.append((i, op))
                    outside.append(expr[i + 1:i + len(op)])
                    i += len(op) - 1
                    break
        else:
            outside.append(" ")
        i += 1
    return found, bool(SET_OPERATORS.search("".join(outside)))


def split_set_operators(expr):
    """`expr` cut at its top-level set operators (and, or, unless): the parts and the
    operators between them."""
    depth, i, start, parts, ops = 0, 0, 0, [], []
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            end = expr.index(c, i + 1)
            while c != "`" and expr[end - 1] == "\\":
                end = expr.index(c, end + 1)
            i = end + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            m = re.match(r"\s(and|or|unless)\s", expr[i:])
            if m:
                parts.append(expr[start:i])
                ops.append(m.group(1))
                i += m.end()
                start = i
                continue
        i += 1
    parts.append(expr[start:])
    return parts, ops


def underlying(expr):
    """The series an alert condition is decided on (see the module's doc)."""
    expr = expr.strip()
    parts, ops = split_set_operators(expr)
    if ops:
        # Each condition joined by a set operator is decided on its own series.
        out = underlying(parts[0])
        for op, part in zip(ops, parts[1:]):
            out += f" {op} {underlying(part)}"
        return out
    m = re.fullmatch(r"absent(?:_over_time)?\((.*)\)", expr, re.S)
    if m:
        inner = m.group(1).strip()
        return re.sub(r"\[[^\[\]]*\]$", "", inner) if expr.startswith("absent_over") else inner
    comparisons, set_operator = top_level(expr)
    if len(comparisons) == 1 and not set_operator:
        pos, op = comparisons[0]
        rest = expr[pos + len(op):].lstrip()
        if not rest.startswith("bool"):
            return f"{expr[:pos].rstrip()} {op} bool {rest}"
    return expr


def rule_queries(failures):
    answer = api("/api/v1/rules")
    groups = answer.get("data", {}).get("groups", [])
    if not groups:
        failures.append(f"rules: Prometheus loaded none ({answer.get('error', 'no groups')})")
    for group in groups:
        for rule in group["rules"]:
            where = f"rule {group['name']}/{rule['name']}"
            if rule.get("health") == "err":
                failures.append(f"{where}: unhealthy: {rule.get('lastError')}")
            yield where, underlying(rule["query"])


def evaluate(where, expr, failures):
    if isinstance(expr, ValueError):
        failures.append(f"{where}: {expr}")
        return
    answer = api("/api/v1/query", query=expr, time=AT)
    if answer.get("status") != "success":
        failures.append(f"{where}: error {answer.get('error')}\n      {expr}")
        return
    result = answer["data"]["result"]
    if answer["data"]["resultType"] == "scalar":
        result = [{"value": result}]
    if not result:
        failures.append(f"{where}: no series\n      {expr}")
        return
    values = [float(r["value"][1]) for r in result]
    shown = ", ".join(f"{v:g}" for v in values[:4]) + (", ..." if len(values) > 4 else "")
    note = "  (all NaN: no events in the window)" if all(math.isnan(v) for v in values) else ""
    print(f"  OK {len(result):>3} series [{shown}]{note}  {where}")


def main():
    failures, count = [], 0
    # The check itself must be able to fail: a query for a metric nobody serves is empty.
    canary = api("/api/v1/query", query="flashsale_live_check_no_such_metric", time=AT)
    if canary.get("status") != "success" or canary["data"]["result"]:
        sys.exit(f"live_queries: the canary query did not come back empty: {canary}")
    queries = []
    for path in DASHBOARDS:
        try:
            queries.extend(panel_queries(path))
        except (ValueError, OSError, json.JSONDecodeError) as e:
            failures.append(f"{path}: {e}")
    queries.extend(rule_queries(failures))
    for where, expr in queries:
        evaluate(where, expr, failures)
        count += 1
    if failures:
        print(f"live_queries: {len(failures)} of {count} queries failed:", file=sys.stderr)
        print("\n".join(f"  FAIL {f}" for f in failures), file=sys.stderr)
        print("  (what to do about each: grafana/README.md, \"Keeping it green\")",
              file=sys.stderr)
        sys.exit(1)
    print(f"live_queries: all {count} queries returned series")


if __name__ == "__main__":
    main()
