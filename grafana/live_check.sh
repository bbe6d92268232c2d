#!/usr/bin/env bash
# Every dashboard panel and every alert rule, against a real Prometheus scraping a real
# flashsale under a short workload: each query must return a series.
#
#   bash grafana/live_check.sh            # about 20 s
#
# 1. starts the flashsale binary (FLASHSALE_BIN, default target/debug/flashsale; it
#    builds nothing) on a free loopback port, with a fresh private PostgreSQL in a temp
#    dir (or DATABASE_URL if set: it makes its own stores there) and an operator token;
# 2. starts Debian's prometheus (/usr/bin/prometheus) with grafana/prometheus.yml,
#    rewritten to scrape that port every second (rules evaluated every second), and the
#    rules of grafana/alerts.yml;
# 3. drives grafana/live_workload.py (checkouts up to a sell-out, holds confirmed,
#    cancelled and expired, reads and 304s, listings, the waiting room, 4xx and 429s,
#    webhook deliveries where the binary has webhooks);
# 4. once Prometheus has scraped the end of it, grafana/live_queries.py evaluates every
#    panel query of grafana/dashboards/*.json and every loaded rule through
#    /api/v1/query, and fails listing each that returns no series (its doc says how
#    Grafana variables are filled in and how an alert condition is evaluated).
# Everything it started is stopped on exit, and its temp dir removed (KEEP_TMP=1 keeps
# it: server.log, prometheus.log, the derived prometheus.yml).
# Knobs: FLASHSALE_BIN, LIVE_LISTEN (flashsale, default a free port), LIVE_PROMETHEUS
#   (prometheus, default a free port), WORKLOAD_SECONDS (final mixed traffic, default 6),
#   READY_TIMEOUT (seconds, default 60), DASHBOARD_DIR (default grafana/dashboards).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=loadtests/server.sh
. loadtests/server.sh

SCRAPE_SECONDS=1
FLASHSALE_BIN=${FLASHSALE_BIN:-target/debug/flashsale}
# The server runs with its defaults (what the dashboards are for), whatever FLASHSALE_*
# settings this shell exports; only those set below apply.
while read -r setting; do unset "$setting"; done < <(compgen -e | grep '^FLASHSALE_' | grep -v '^FLASHSALE_BIN$')
WORKLOAD_SECONDS=${WORKLOAD_SECONDS:-6}
READY_TIMEOUT=${READY_TIMEOUT:-60}
started=$SECONDS

log() { printf '[live_check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

[[ -x $FLASHSALE_BIN ]] || die "no binary at $FLASHSALE_BIN: cargo build first (or set FLASHSALE_BIN)"
PROMETHEUS_BIN=$(command -v prometheus || echo /usr/bin/prometheus)
[[ -x $PROMETHEUS_BIN ]] || die "no prometheus: apt-get install prometheus (Debian's package)"
command -v promtool >/dev/null || die "no promtool: apt-get install prometheus"
LIVE_LISTEN=${LIVE_LISTEN:-127.0.0.1:$(free_port)}
LIVE_PROMETHEUS=${LIVE_PROMETHEUS:-127.0.0.1:$(free_port)}
BASE=http://$LIVE_LISTEN
PROM=http://$LIVE_PROMETHEUS

TMP=$(mktemp -d /tmp/flashsale-live.XXXXXX)
# PostgreSQL runs as the postgres user when started by root: it must be able to enter it.
chmod 755 "$TMP"
SERVER_PID="" PROM_PID="" phase=setup

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $PROM_PID ]]; then
        kill -TERM "$PROM_PID" 2>/dev/null || true
        wait "$PROM_PID" 2>/dev/null || true
    fi
    if [[ -n $SERVER_PID ]] && ! stop_server "$SERVER_PID" 20; then
        log "WARNING: flashsale did not stop within 20 s of SIGTERM; killed it"
    fi
    # A killed flashsale leaves its private PostgreSQL behind: stop that too.
    local pg_pid
    pg_pid=$(head -n 1 "$TMP/data/pgdata/postmaster.pid" 2>/dev/null || true)
    if [[ -n $pg_pid ]] && kill -0 "$pg_pid" 2>/dev/null; then
        kill -INT "$pg_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    if ((rc != 0)) && [[ $phase != queries ]]; then
        for f in server.log prometheus.log; do
            [[ -s $TMP/$f ]] && { log "last lines of $f:"; tail -n 15 "$TMP/$f" >&2; }
        done
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for URL PID WHAT: until URL answers 200, while PID lives, within READY_TIMEOUT.
wait_for() {
    local deadline=$((SECONDS + READY_TIMEOUT))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true) == 200 ]]; do
        kill -0 "$2" 2>/dev/null || die "$3 exited before it was ready"
        ((SECONDS < deadline)) || die "$3 was not ready within ${READY_TIMEOUT}s"
        sleep 0.2
    done
}

# 1. flashsale. Webhooks (where the binary has them) may reach the workload's receiver
# on this machine, and retry within seconds, so that failed deliveries are seen.
ADMIN_TOKEN=$(python3 -c 'import secrets; print("op_" + secrets.token_hex(24))')
# /metrics is protected as in production: Prometheus sends the token from the file that
# the shipped config names (metrics_token, beside it), the server requires it.
METRICS_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
(umask 077 && printf '%s\n' "$METRICS_TOKEN" >"$TMP/metrics_token")
log "starting $FLASHSALE_BIN on $LIVE_LISTEN"
FLASHSALE_LISTEN=$LIVE_LISTEN FLASHSALE_DATA_DIR=$TMP/data FLASHSALE_ADMIN_TOKEN=$ADMIN_TOKEN \
    FLASHSALE_SEED_DEMO=false FLASHSALE_METRICS_TOKEN=$METRICS_TOKEN FLASHSALE_WEBHOOK_ALLOW_NETS=127.0.0.1/32 \
    FLASHSALE_WEBHOOK_RETRY_SCHEDULE=1,1 "$FLASHSALE_BIN" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

# 2. Prometheus: the shipped config, faster and pointed at this flashsale. Each rewrite
# is checked, so that a change to prometheus.yml fails here instead of scraping nothing.
cp grafana/alerts.yml "$TMP/alerts.yml"
sed -E -e "s/^([[:space:]]*(scrape_interval|evaluation_interval|scrape_timeout):).*/\1 ${SCRAPE_SECONDS}s/" \
    -e "s/127\.0\.0\.1:8080/$LIVE_LISTEN/" grafana/prometheus.yml >"$TMP/prometheus.yml"
grep -q "\"$LIVE_LISTEN\"" "$TMP/prometheus.yml" || die "prometheus.yml: no target 127.0.0.1:8080 to point at $LIVE_LISTEN"
grep -q -- "- alerts.yml" "$TMP/prometheus.yml" || die "prometheus.yml: does not load alerts.yml"
promtool check config "$TMP/prometheus.yml" >"$TMP/promtool.log" 2>&1 ||
    { cat "$TMP/promtool.log" >&2; die "the derived prometheus.yml is invalid"; }
log "starting $PROMETHEUS_BIN on $LIVE_PROMETHEUS (scrape and rule interval ${SCRAPE_SECONDS}s)"
"$PROMETHEUS_BIN" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
    --web.listen-address="$LIVE_PROMETHEUS" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
PROM_PID=$!

wait_for "$BASE/readyz" "$SERVER_PID" flashsale
wait_for "$PROM/-/ready" "$PROM_PID" prometheus
log "both ready after $((SECONDS - started)) s"
metrics_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$BASE/metrics" || true; }
[[ $(metrics_status) == 401 ]] || die "/metrics answered without its token"
[[ $(metrics_status -H "Authorization: Bearer $METRICS_TOKEN") == 200 ]] || die "/metrics refused its token"

# 3. the workload
# Bounded: a server that hangs fails the check instead of stalling CI.
timeout $((WORKLOAD_SECONDS + 90)) python3 grafana/live_workload.py "$BASE" "$ADMIN_TOKEN" "$WORKLOAD_SECONDS" ||
    die "the workload failed or did not finish within $((WORKLOAD_SECONDS + 90)) s"
at=$(date +%s.%N)

# 4. Wait for a scrape after the workload's end and a rule evaluation after that, then ask.
deadline=$((SECONDS + 15))
until python3 - "$PROM" "$at" "$SCRAPE_SECONDS" <<'PY'
import json, sys, urllib.parse, urllib.request
prom, at, scrape = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
q = urllib.parse.quote('min(timestamp(up{job="flashsale"} == 1))')
with urllib.request.urlopen(f"{prom}/api/v1/query?query={q}", timeout=5) as r:
    result = json.load(r)["data"]["result"]
sys.exit(0 if result and float(result[0]["value"][1]) > at + scrape else 1)
PY
do
    ((SECONDS < deadline)) || die "Prometheus has not scraped flashsale since the workload ended"
    sleep 0.5
done
sleep "$SCRAPE_SECONDS"  # and one rule evaluation

shopt -s nullglob
dashboards=("${DASHBOARD_DIR:-grafana/dashboards}"/*.json)
((${#dashboards[@]} > 0)) || die "no dashboards in ${DASHBOARD_DIR:-grafana/dashboards}"
log "evaluating ${#dashboards[@]} dashboards and the loaded rules at $at"
# Grafana is told twice the real scrape interval (so $__rate_interval is 8 s, not 4 s):
# a scrape or two lost on a busy machine then cannot leave a rate() window with fewer
# than the two samples it needs.
phase=queries  # a failure from here on is a query's: the servers' logs would be noise
timeout 120 python3 grafana/live_queries.py "$PROM" "$((2 * SCRAPE_SECONDS))" "$at" "${dashboards[@]}"
log "passed in $((SECONDS - started)) s"
