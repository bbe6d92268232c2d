#!/usr/bin/env bash
# flashsale Locust scenarios, in one command:
#
#   loadtests/locust/run.sh SCENARIO [DURATION]
#
# SCENARIO: stampede | browse | many_stores | retry_storm | abusive;  DURATION: 30s (default), 2m, ...
#
# 1. installs loadtests/locust/requirements.txt into loadtests/locust/.venv (pip) if needed;
# 2. starts the release binary (target/release/flashsale or FLASHSALE_BIN; it builds nothing)
#    on 127.0.0.1:18181 with a fresh private PostgreSQL in a temp dir under /tmp (or DATABASE_URL
#    if set) and a random operator token; waits for /readyz;
# 3. runs locust headless; reports go to loadtests/results/locust-<scenario>-<timestamp>/
#    (stats_*.csv, report.html, locust.log, records.json, audit.txt, metrics.txt, server.log);
# 4. audits the invariants (audit.py: no oversell, no lost order, no double purchase) through
#    the API and the database, stops the server with SIGTERM.
#
# Exit status: 0 all good; 1 an audit check failed (or the run could not be set up);
#              2 the audit passed but locust counted failed requests (see report.html).
# Knobs (environment): USERS=50 SPAWN_RATE=$USERS (abusive: USERS=5) LOCUST_LISTEN=127.0.0.1:18181
#   FLASHSALE_BIN=path DATABASE_URL=... FLASHSALE_STOCK=N FLASHSALE_STORES=N READY_TIMEOUT=120
#   STOP_TIMEOUT=60 KEEP_DATA=1 (keep the temp data dir) RESULTS_ROOT=dir LOCUST_ARGS="..." (extra)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=loadtests/server.sh
. "$HERE/../server.sh"
ROOT=$(cd "$HERE/../.." && pwd)
SCENARIOS="stampede browse many_stores retry_storm abusive"

log() { printf '[locust-run %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '[locust-run %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") usage >&2; die "name a scenario: $SCENARIOS" ;;
esac
SCENARIO=$1
DURATION=${2:-30s}
[[ " $SCENARIOS " == *" $SCENARIO "* ]] || die "unknown scenario '$SCENARIO'; choose one of: $SCENARIOS"
[[ $DURATION =~ ^[0-9]+[smh]?$ && ! $DURATION =~ ^0+[smh]?$ ]] || die "DURATION must look like 30s, 2m or 1h, got '$DURATION'"
(($# <= 2)) || die "too many arguments (settings are environment variables, see --help)"

if [[ $SCENARIO == abusive ]]; then USERS=${USERS:-5}; else USERS=${USERS:-50}; fi
SPAWN_RATE=${SPAWN_RATE:-$USERS}
LOCUST_LISTEN=${LOCUST_LISTEN:-127.0.0.1:18181}
READY_TIMEOUT=${READY_TIMEOUT:-120}
STOP_TIMEOUT=${STOP_TIMEOUT:-60}
KEEP_DATA=${KEEP_DATA:-0}
FLASHSALE_BIN=${FLASHSALE_BIN:-$ROOT/target/release/flashsale}
RESULTS_ROOT=${RESULTS_ROOT:-$ROOT/loadtests/results}
[[ $USERS =~ ^[1-9][0-9]*$ ]] || die "USERS must be a positive integer, got '$USERS'"
[[ $SPAWN_RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SPAWN_RATE must be a number, got '$SPAWN_RATE'"
case "$LOCUST_LISTEN" in
  127.*:[0-9]* | localhost:[0-9]*) ;;
  *) die "LOCUST_LISTEN must be a loopback address with a port (127.x.x.x:PORT), got '$LOCUST_LISTEN'" ;;
esac
BASE="http://$LOCUST_LISTEN"

command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"

# ------------------------------------------------------------------- venv ----
VENV=$HERE/.venv
STAMP=$VENV/.requirements.sha256
want=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
if [[ ! -x $VENV/bin/locust || ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
  log "installing $HERE/requirements.txt into $VENV"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt" >&2 || die "pip install -r requirements.txt failed"
  echo "$want" >"$STAMP"
fi
PY=$VENV/bin/python

# ----------------------------------------------------------------- server ----
if [[ ! -x $FLASHSALE_BIN ]]; then
  die "no server binary at $FLASHSALE_BIN: run 'cargo build --release' first (or set FLASHSALE_BIN)"
fi
if curl -s -o /dev/null --max-time 2 "$BASE/healthz"; then
  die "something already answers on $BASE: stop it or set LOCUST_LISTEN"
fi

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$RESULTS_ROOT/locust-$SCENARIO-$TS
mkdir -p "$OUT"
DATA_DIR=$(mktemp -d /tmp/flashsale-locust.XXXXXX)
# PostgreSQL runs as the postgres user when started by root: it must be able to enter the dir.
chmod 755 "$DATA_DIR"
ADMIN_TOKEN=$(python3 -c 'import secrets; print("op_" + secrets.token_hex(24))')
SERVER_PID=""

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    log "stopping the server (SIGTERM to pid $SERVER_PID)"
    if ! stop_server "$SERVER_PID" "$STOP_TIMEOUT"; then
      log "WARNING: the server did not exit ${STOP_TIMEOUT}s after SIGTERM; it was killed"
    else
      log "server exited with status $SERVER_STATUS"
    fi
  fi
  if [[ $KEEP_DATA == 1 ]]; then
    log "kept the data dir $DATA_DIR"
  else
    rm -rf "$DATA_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "results in $OUT"
if [[ -n ${DATABASE_URL:-} ]]; then
  log "starting $FLASHSALE_BIN on $LOCUST_LISTEN with DATABASE_URL"
else
  log "starting $FLASHSALE_BIN on $LOCUST_LISTEN with a private PostgreSQL in $DATA_DIR"
fi
FLASHSALE_LISTEN=$LOCUST_LISTEN FLASHSALE_DATA_DIR=$DATA_DIR FLASHSALE_ADMIN_TOKEN=$ADMIN_TOKEN \
  FLASHSALE_SEED_DEMO=false "$FLASHSALE_BIN" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true) == 200 ]]; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    tail -n 30 "$OUT/server.log" >&2 || true
    SERVER_PID=""
    die "the server exited before it was ready (log: $OUT/server.log)"
  fi
  ((SECONDS < deadline)) || die "the server was not ready within ${READY_TIMEOUT}s (log: $OUT/server.log)"
  sleep 0.25
done
log "server ready (pid $SERVER_PID)"

# ----------------------------------------------------------------- locust ----
log "locust: scenario $SCENARIO, $USERS users (spawn rate $SPAWN_RATE/s), $DURATION"
locust_rc=0
# shellcheck disable=SC2086 # LOCUST_ARGS is split on purpose
(cd "$HERE" && FLASHSALE_ADMIN_TOKEN=$ADMIN_TOKEN FLASHSALE_RECORDS=$OUT/records.json \
  "$VENV/bin/locust" -f "$HERE/locustfile.py" --scenario "$SCENARIO" \
  --headless --only-summary -u "$USERS" -r "$SPAWN_RATE" -t "$DURATION" --stop-timeout 15 \
  --csv "$OUT/stats" --html "$OUT/report.html" --host "$BASE" ${LOCUST_ARGS:-}) \
  >"$OUT/locust.log" 2>&1 || locust_rc=$?
# The summary locust prints at the end: the request table and the error report.
awk '/^Type +Name +# reqs/ && !t {p=1; t=1} /^Error report/ {p=1} p && /^$/ {p=0; print ""} p' "$OUT/locust.log" |
  head -n 60 >&2 || true
if ((locust_rc == 3)); then
  grep -i 'setup failed' "$OUT/locust.log" >&2 || true
  die "the locust setup failed (see $OUT/locust.log)"
fi
[[ -f $OUT/records.json ]] || die "locust wrote no records (exit $locust_rc; see $OUT/locust.log)"
curl -s --max-time 10 "$BASE/metrics" >"$OUT/metrics.txt" || true

# ------------------------------------------------------------------ audit ----
audit_args=(--records "$OUT/records.json" --base-url "$BASE" --self-test)
if [[ -z ${DATABASE_URL:-} ]]; then
  # The server may fall back to another dir (see its "data in ..." line) if postgres cannot enter ours.
  pg_dir=$(sed -n 's/.*started a private PostgreSQL; data in \(.*\)$/\1/p' "$OUT/server.log" | head -n 1)
  [[ -n $pg_dir && -f $pg_dir/pgdata/postmaster.pid ]] || pg_dir=$DATA_DIR
  audit_args+=(--data-dir "$pg_dir")
fi
log "auditing"
audit_rc=0
"$PY" "$HERE/audit.py" "${audit_args[@]}" 2>&1 | tee "$OUT/audit.txt" >&2 || audit_rc=$?

log "reports: $OUT/report.html, $OUT/stats_stats.csv, $OUT/audit.txt"
if ((audit_rc != 0)); then
  log "AUDIT FAILED"
  exit 1
fi
if ((locust_rc != 0)); then
  log "the audit passed, but locust counted failed requests (exit $locust_rc): see $OUT/report.html"
  exit 2
fi
log "all good"
