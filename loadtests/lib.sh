# shellcheck shell=bash
# Shared by loadtests/bench.sh and loadtests/ab.sh (sourced, not run): the settings and
# their checks, the servers' lifecycle (start, stop, clean-up trap), HTTP helpers, CPU
# and WAL accounting from /proc and PostgreSQL, and run_wrk, which runs one wrk phase
# against the current server and records what it cost.
#
# Several servers can be up at once (ab.sh runs two): launch_server LABEL registers one,
# use_server LABEL makes it the one that run_wrk, api, settle ... talk to (SERVER_PID,
# DATA_DIR, BASE, SERVER_LOG). The EXIT trap stops every registered server.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=loadtests/server.sh
. "$HERE/server.sh"
ROOT=$(cd "$HERE/.." && pwd)

DURATION=${DURATION:-15s}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-256}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-3s}
WAL_WARM=${WAL_WARM:-1024}
BENCH_LISTEN=${BENCH_LISTEN:-127.0.0.1:18080}
SELLOUT_STOCK=${SELLOUT_STOCK:-10000}
SELLOUT_BUYERS=${SELLOUT_BUYERS:-100000}
SELLOUT_TIMEOUT=${SELLOUT_TIMEOUT:-120s}
LIST_PRODUCTS=${LIST_PRODUCTS:-60}
READY_TIMEOUT=${READY_TIMEOUT:-120}
STOP_TIMEOUT=${STOP_TIMEOUT:-60}
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-30}
WRK_TIMEOUT=${WRK_TIMEOUT:-5s}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
STRICT=${STRICT:-0}
FLASHSALE_BIN=${FLASHSALE_BIN:-$ROOT/target/release/flashsale}
RESULTS_ROOT=${RESULTS_ROOT:-$HERE/results}

# The current server (see use_server) and the registry of all started ones.
SERVER_PID=""
DATA_DIR=""
BASE=""
SERVER_LOG=""
SERVERS=()
declare -A SRV_PID=() SRV_DATA=() SRV_BASE=() SRV_LOG=()
DONE_DIR=""
OUT=""
RECEIVER_PID=""

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '[bench %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- checks ----
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_duration() { [[ $1 =~ ^[0-9]+[smh]?$ ]]; }
is_pos() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0)); }
seconds() {
  local n=${1%[smh]}
  case $1 in
    *m) echo $((n * 60)) ;;
    *h) echo $((n * 3600)) ;;
    *) echo "$n" ;;
  esac
}
# The load goes to this machine only: loopback addresses.
check_listen() {
  case "$2" in
    127.*:[0-9]* | localhost:[0-9]*) ;;
    *) die "$1 must be a loopback address with a port (127.x.x.x:PORT), got '$2'" ;;
  esac
}

# check_settings: dies with a clear message on a bad knob; sets ROUND_DURATION.
check_settings() {
  is_pos "$CONNECTIONS" || die "CONNECTIONS must be a positive integer, got '$CONNECTIONS'"
  is_pos "$THREADS" || die "THREADS must be a positive integer, got '$THREADS'"
  ((CONNECTIONS >= THREADS)) || die "CONNECTIONS ($CONNECTIONS) must be >= THREADS ($THREADS)"
  is_pos "$SELLOUT_STOCK" || die "SELLOUT_STOCK must be a positive integer, got '$SELLOUT_STOCK'"
  is_pos "$LIST_PRODUCTS" || die "LIST_PRODUCTS must be a positive integer, got '$LIST_PRODUCTS'"
  ((LIST_PRODUCTS >= 60)) || die "LIST_PRODUCTS must be >= 60 (list-50 needs more than one page), got $LIST_PRODUCTS"
  is_pos "$SELLOUT_BUYERS" || die "SELLOUT_BUYERS must be a positive integer, got '$SELLOUT_BUYERS'"
  ((SELLOUT_BUYERS >= THREADS)) || die "SELLOUT_BUYERS ($SELLOUT_BUYERS) must be >= THREADS ($THREADS)"
  is_uint "$READY_TIMEOUT" || die "READY_TIMEOUT must be whole seconds, got '$READY_TIMEOUT'"
  is_uint "$STOP_TIMEOUT" || die "STOP_TIMEOUT must be whole seconds, got '$STOP_TIMEOUT'"
  is_uint "$SETTLE_TIMEOUT" || die "SETTLE_TIMEOUT must be whole seconds, got '$SETTLE_TIMEOUT'"
  is_uint "$WAL_WARM" || die "WAL_WARM must be whole MiB (0: none), got '$WAL_WARM'"
  local v
  for v in DURATION SELLOUT_TIMEOUT WRK_TIMEOUT; do
    is_duration "${!v}" || die "$v must look like 15, 15s, 2m or 1h, got '${!v}'"
  done
  [[ $DURATION =~ ^0+[smh]?$ ]] && die "DURATION must be > 0"
  is_pos "$ROUNDS" || die "ROUNDS must be a positive integer, got '$ROUNDS'"
  ROUND_DURATION="$(($(seconds "$DURATION") / ROUNDS))s"
  [[ $ROUND_DURATION != 0s ]] || die "DURATION ($DURATION) must be at least ROUNDS ($ROUNDS) seconds"
  [[ $WARMUP =~ ^0+[smh]?$ ]] && WARMUP=0
  [[ $WARMUP == 0 ]] || is_duration "$WARMUP" || die "WARMUP must look like 3s or 0, got '$WARMUP'"
  check_listen BENCH_LISTEN "$BENCH_LISTEN"
}

# check_tools: curl, python3 and wrk (installed with apt-get when missing and root).
check_tools() {
  command -v curl >/dev/null || die "curl is required"
  command -v python3 >/dev/null || die "python3 is required"
  if ! command -v wrk >/dev/null; then
    log "wrk not found; installing the Debian package"
    if [[ $(id -u) -ne 0 ]]; then
      die "wrk is missing and this is not root: run 'sudo apt-get install -y wrk' first"
    fi
    if ! apt-get install -y wrk >&2; then
      apt-get update >&2 || die "apt-get update failed"
      apt-get install -y wrk >&2 || die "could not install wrk with apt-get"
    fi
  fi
  command -v wrk >/dev/null || die "wrk still not on PATH after installing"
}

# build_release DIR: cargo build --release in DIR (CARGO_TARGET_DIR as exported).
build_release() {
  command -v cargo >/dev/null || die "cargo not found (or set SKIP_BUILD=1 with a built FLASHSALE_BIN)"
  log "cargo build --release (in $1)"
  (cd "$1" && cargo build --release) || die "cargo build --release failed in $1"
}

# make_results_dir [SUFFIX]: OUT=$RESULTS_ROOT/<UTC stamp>[SUFFIX], made unique; also
# STAMP and RUN_ID (the run-unique prefix of idempotency keys and customer ids).
make_results_dir() {
  local suffix=${1-} n=1
  STAMP=$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$RESULTS_ROOT" || die "cannot create $RESULTS_ROOT"
  OUT="$RESULTS_ROOT/$STAMP$suffix"
  until mkdir "$OUT" 2>/dev/null; do
    [[ -d $RESULTS_ROOT ]] || die "cannot create a results dir under $RESULTS_ROOT"
    n=$((n + 1))
    OUT="$RESULTS_ROOT/$STAMP$suffix-$n"
  done
  RUN_ID="b${STAMP}-$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
}

# ------------------------------------------------------------- lifecycle ----
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$? label pid dir
  trap - EXIT INT TERM
  for label in "${SERVERS[@]}"; do
    pid=${SRV_PID[$label]}
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      log "stopping $(server_name "$label") (SIGTERM to pid $pid)"
      if ! stop_server "$pid" "$STOP_TIMEOUT"; then
        warn "$(server_name "$label") did not exit ${STOP_TIMEOUT}s after SIGTERM; it was killed"
        KEEP_DATA=1
      elif [[ $SERVER_STATUS != 0 ]]; then
        warn "$(server_name "$label") exited with status $SERVER_STATUS after SIGTERM (the contract says 0)"
      fi
    fi
  done
  stop_receiver
  if [[ -n $DONE_DIR ]]; then rm -rf "$DONE_DIR"; fi
  for label in "${SERVERS[@]}"; do
    dir=${SRV_DATA[$label]}
    [[ -n $dir ]] || continue
    if [[ $KEEP_DATA == 1 ]]; then
      log "kept the data dir of $(server_name "$label"): $dir"
    else
      rm -rf "$dir" || warn "could not remove $dir"
    fi
  done
  if [[ -n $OUT ]]; then log "results in $OUT"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# server_name LABEL: "the server" for bench.sh's only one, "server A" in ab.sh.
server_name() {
  if [[ $1 == server ]]; then echo "the server"; else echo "server $1"; fi
}

# use_server LABEL: the server that the helpers below talk to.
use_server() {
  SERVER_PID=${SRV_PID[$1]}
  DATA_DIR=${SRV_DATA[$1]}
  BASE=${SRV_BASE[$1]}
  SERVER_LOG=${SRV_LOG[$1]}
}

server_alive() {
  [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null
}

server_died() {
  warn "last lines of the server log ($SERVER_LOG):"
  tail -n 40 "$SERVER_LOG" >&2 || true
  die "the server exited unexpectedly ($*)"
}

# launch_server LABEL BIN LISTEN LOG: starts BIN on LISTEN with a random operator token
# (ADMIN_TOKEN, shared by all servers of the run) and a private PostgreSQL in a fresh
# temp dir, or DATABASE_URL if set; its output goes to LOG. Webhook URLs on loopback
# are allowed (FLASHSALE_WEBHOOK_ALLOW_NETS): the receiver of bench.sh's phase 2b
# (start_receiver) listens on 127.0.0.1. LABEL is "server" when
# there is only one. Then wait_ready LABEL (two servers can start at the same time).
launch_server() {
  local label=$1 bin=$2 listen=$3 log=$4 data="" name
  name=$(server_name "$label")
  [[ -x $bin ]] || die "server binary not found or not executable: $bin"
  if curl -s -o /dev/null --max-time 2 "http://$listen/"; then
    die "something already answers on $listen; stop it or choose another port (BENCH_LISTEN, BASELINE_LISTEN)"
  fi
  [[ -n ${ADMIN_TOKEN:-} ]] || ADMIN_TOKEN=$(python3 -c 'import secrets; print("op_" + secrets.token_hex(24))')
  local env_=(FLASHSALE_LISTEN="$listen" FLASHSALE_ADMIN_TOKEN="$ADMIN_TOKEN"
    FLASHSALE_WEBHOOK_ALLOW_NETS=127.0.0.0/8)
  if [[ -z ${DATABASE_URL:-} ]]; then
    data=$(mktemp -d /tmp/flashsale-bench.XXXXXX)
    chmod 755 "$data" # the private PostgreSQL may run as the postgres user
    env_+=(FLASHSALE_DATA_DIR="$data")
    log "private PostgreSQL of $name under $data"
  fi
  log "starting $name: $bin on $listen (log: $log)"
  # With DATABASE_URL unset in its environment, the server starts its private
  # PostgreSQL (FLASHSALE_DATA_DIR) and never meets someone else's database.
  if [[ -n $data ]]; then
    env -u DATABASE_URL "${env_[@]}" "$bin" >"$log" 2>&1 &
  else
    env "${env_[@]}" "$bin" >"$log" 2>&1 &
  fi
  SERVERS+=("$label")
  SRV_PID[$label]=$! SRV_DATA[$label]=$data SRV_BASE[$label]="http://$listen" SRV_LOG[$label]=$log
}

# wait_ready LABEL: waits up to READY_TIMEOUT for GET /readyz to answer 200; then
# use_server LABEL.
wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  use_server "$1"
  until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true) == 200 ]]; do
    server_alive || server_died "$(server_name "$1") exited before /readyz answered 200"
    ((SECONDS < deadline)) || die "GET /readyz did not answer 200 within ${READY_TIMEOUT}s; see $SERVER_LOG"
    sleep 0.5
  done
  log "$(server_name "$1") ready (pid $SERVER_PID)"
}

# ------------------------------------------------------------ HTTP helpers ---
# api METHOD PATH TOKEN EXPECTED_STATUS [JSON_BODY] -> response body on stdout
api() {
  local method=$1 path=$2 token=$3 expect=$4 body=${5-}
  local tmp code
  tmp=$(mktemp)
  local args=(-sS -o "$tmp" -w '%{http_code}' --max-time 30 -X "$method"
    -H "Authorization: Bearer $token" -H 'Accept: application/json')
  if [[ -n $body ]]; then
    args+=(-H 'Content-Type: application/json' --data-binary "$body")
  fi
  if ! code=$(curl "${args[@]}" "$BASE$path"); then
    rm -f "$tmp"
    die "request failed: $method $path"
  fi
  if [[ $code != "$expect" ]]; then
    local got
    got=$(head -c 2000 "$tmp")
    rm -f "$tmp"
    die "$method $path answered $code, expected $expect: $got"
  fi
  cat "$tmp"
  rm -f "$tmp"
}

# json_get KEY.PATH < json  -> the value (strings unquoted)
json_get() {
  python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(v if isinstance(v, str) else json.dumps(v))
' "$1" || die "could not read '$1' from a JSON response"
}

# create_store [NAME [SK_VAR PK_VAR]]: as operator, a store NAME (default bench) on the
# enterprise plan; sets SK_VAR (default SK: the admin key) and PK_VAR (default PK: the
# storefront key).
create_store() {
  local name=${1:-bench} sk_var=${2:-SK} pk_var=${3:-PK} store key
  store=$(api POST /api/v1/stores "$ADMIN_TOKEN" 201 "{\"name\":\"$name\",\"plan\":\"enterprise\"}")
  key=$(json_get api_keys.admin <<<"$store")
  printf -v "$sk_var" '%s' "$key"
  key=$(json_get api_keys.storefront <<<"$store")
  printf -v "$pk_var" '%s' "$key"
}

# create_product SKU NAME STOCK [ADMIN_KEY] -> the new product's id on stdout (admin
# key: ADMIN_KEY, default SK)
create_product() {
  local made
  made=$(api POST /api/v1/products "${4:-$SK}" 201 \
    "{\"sku\":\"$1\",\"name\":\"$2\",\"price_cents\":1000,\"currency\":\"EUR\",\"stock\":$3}")
  json_get id <<<"$made"
}

# start_receiver LOG: starts loadtests/webhook_receiver.py on 127.0.0.1 (any port), its
# output to LOG (one `got <event id>` line per delivery); waits up to 10 s for it to
# listen, then sets RECEIVER_URL. The EXIT trap stops it (stop_receiver).
start_receiver() {
  local log=$1 deadline=$((SECONDS + 10))
  python3 "$HERE/webhook_receiver.py" 127.0.0.1 0 >"$log" 2>&1 &
  RECEIVER_PID=$!
  until grep -q '^listening ' "$log" 2>/dev/null; do
    kill -0 "$RECEIVER_PID" 2>/dev/null || die "the webhook receiver exited; see $log"
    ((SECONDS < deadline)) || die "the webhook receiver did not start; see $log"
    sleep 0.2
  done
  RECEIVER_URL=$(sed -n 's/^listening //p' "$log" | head -n 1)
  log "webhook receiver at $RECEIVER_URL (pid $RECEIVER_PID, log: $log)"
}

# stop_receiver: stops the webhook receiver, if one runs.
stop_receiver() {
  if [[ -n $RECEIVER_PID ]]; then
    kill "$RECEIVER_PID" 2>/dev/null || true
    wait "$RECEIVER_PID" 2>/dev/null || true
    RECEIVER_PID=""
  fi
}

scrape_metrics() {
  curl -sS --max-time 10 "$BASE/metrics" >"$OUT/$1" 2>/dev/null || {
    warn "GET /metrics failed; orders per DB transaction will be n/a"
    : >"$OUT/$1"
  }
}

# -------------------------------------------------- CPU and WAL accounting ---
# (cpu and spent: in server.sh.)

# db_pids [DATA_DIR]: the private PostgreSQL's postmaster and its children (nothing
# with DATABASE_URL: an external server's CPU is not this machine's business).
db_pids() {
  local dir=${1-$DATA_DIR}
  [[ -n $dir ]] || return 0
  postmaster_pids "$dir/pgdata"
}

# settle_pids: what settle waits for: every started server and its private PostgreSQL
# (with two servers up, the idle one's background work would slow down the other).
settle_pids() {
  local label
  for label in "${SERVERS[@]}"; do
    echo "${SRV_PID[$label]}"
    db_pids "${SRV_DATA[$label]}"
  done
}

# settle: waits (up to SETTLE_TIMEOUT seconds) until the servers and their private
# PostgreSQLs use less than 5% of a core over a second, so that a phase does not
# start while the last one's aftermath (cache housekeeping, autovacuum) still runs;
# that would slow down whichever round comes first.
settle() {
  local deadline=$((SECONDS + SETTLE_TIMEOUT)) before after
  while ((SECONDS < deadline)); do
    # shellcheck disable=SC2046 # one PID per word
    before=$(cpu $(settle_pids))
    sleep 1
    # shellcheck disable=SC2046
    after=$(cpu $(settle_pids))
    ((100 * $(spent "$before" "$after") < 5 * CLK_TCK)) && return 0
  done
  warn "servers and databases still busy ${SETTLE_TIMEOUT}s after the last phase; going on"
}

# db_sql SQL ...: runs each SQL (one psql -c apiece) as the superuser of the current
# server's private PostgreSQL and prints the rows; nothing, and status 1, with
# DATABASE_URL, without psql or without an answer within DB_SQL_TIMEOUT seconds (600).
# Its port is line 4 of postmaster.pid; the server keeps the superuser's password
# beside pgdata/.
db_sql() {
  [[ -n $DATA_DIR && -r $DATA_DIR/password && -r $DATA_DIR/pgdata/postmaster.pid ]] || return 1
  command -v psql >/dev/null || return 1
  local port sql args=()
  port=$(sed -n 4p "$DATA_DIR/pgdata/postmaster.pid")
  [[ $port =~ ^[0-9]+$ ]] || return 1
  for sql in "$@"; do args+=(-c "$sql"); done
  PGPASSWORD=$(<"$DATA_DIR/password") PGCONNECT_TIMEOUT=5 timeout "${DB_SQL_TIMEOUT:-600}" \
    psql -qAtX -h 127.0.0.1 -p "$port" -U postgres -d postgres "${args[@]}" 2>/dev/null
}

# wal_lsn: the private PostgreSQL's current WAL insert position (like 0/1A2B3C4D), or
# nothing (DATABASE_URL, no psql, no answer within 10 s).
wal_lsn() {
  DB_SQL_TIMEOUT=10 db_sql 'SELECT pg_current_wal_insert_lsn()' || true
}

# steady_wal: brings the current server's private PostgreSQL to a long-running
# database's state before anything is measured: WAL_WARM MiB of WAL written (a table
# made and dropped), then a CHECKPOINT, which keeps those segments for reuse. A fresh
# initdb has none: every 16 MiB of WAL then costs a new segment, zero-filled and
# fsynced while the batches in flight wait (at 20,000 orders/s, one every 0.8 s, each a
# 30-70 ms stall of every COMMIT in PostgreSQL's log), where a database that has been
# up recycles its old segments. Nothing with DATABASE_URL or WAL_WARM=0.
steady_wal() {
  ((WAL_WARM > 0)) && [[ -n $DATA_DIR ]] || return 0
  log "steady-state WAL: $WAL_WARM MiB written and dropped, then CHECKPOINT ($SERVER_LOG's database)"
  # About 1,000 rows of 1 kB make a MiB of WAL.
  db_sql "CREATE TABLE bench_wal_warm AS SELECT repeat('x', 1000) AS pad FROM generate_series(1, $((WAL_WARM * 1000)))" \
    "DROP TABLE bench_wal_warm" "CHECKPOINT" >/dev/null ||
    warn "could not prepare the WAL of $SERVER_LOG's database; its first rounds may stall on new WAL segments"
}

# run_wrk NAME SCRIPT DURATION [VAR=VALUE ...] -> $OUT/NAME.txt, $OUT/NAME.json
# The JSON also gets the CPU time the server (server_cpu_s), the private PostgreSQL
# (db_cpu_s) and wrk itself (client_cpu_s) spent while wrk ran, and the WAL written
# (wal_bytes). wrk shares the machine's cores: a request that costs wrk more (a Lua-built
# body, a body to match) leaves less CPU to the server, whatever the server spends.
run_wrk() {
  local name=$1 script=$2 dur=$3
  shift 3
  local out="$OUT/$name.txt"
  log "phase $name: wrk -t$THREADS -c$CONNECTIONS -d$dur -s $script ($BASE)"
  local rc=0 server0 server1 db0 db1 wal0 wal1 client TIMEFORMAT='%U %S'
  wal0=$(wal_lsn)
  # shellcheck disable=SC2046 # one PID per word
  server0=$(cpu "$SERVER_PID") db0=$(cpu $(db_pids))
  { time env FS_RUN="$RUN_ID" FS_PHASE="$name" "$@" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --timeout "$WRK_TIMEOUT" --latency \
    -s "$HERE/$script" "$BASE" >"$out" 2>&1; } 2>"$OUT/$name.time" || rc=$?
  client=$(awk '{ print $1 + $2 }' "$OUT/$name.time")
  # shellcheck disable=SC2046
  server1=$(cpu "$SERVER_PID") db1=$(cpu $(db_pids))
  wal1=$(wal_lsn)
  grep -v '^FSBENCH_RESULT ' "$out" | sed 's/^/    /' >&2 || true
  server_alive || server_died "during phase $name"
  ((rc == 0)) || die "wrk failed (exit $rc) in phase $name; see $out"
  { grep '^FSBENCH_RESULT ' "$out" || true; } | tail -n 1 | cut -d' ' -f2- >"$OUT/$name.json"
  [[ -s "$OUT/$name.json" ]] || die "no FSBENCH_RESULT line from $script in phase $name; see $out"
  python3 - "$OUT/$name.json" "$(spent "$server0" "$server1")" "$(spent "$db0" "$db1")" "$CLK_TCK" \
    "$([[ -n $DATA_DIR ]] && echo private || echo external)" "$wal0" "$wal1" \
    "${client:-0}" <<'PY' ||
import json, sys
path, server, db, hz, database = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with open(path) as f:
    result = json.load(f)
result["server_cpu_s"] = server / hz
result["client_cpu_s"] = float(sys.argv[8])
if database == "private":
    result["db_cpu_s"] = db / hz

def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)

try:
    result["wal_bytes"] = lsn(sys.argv[7]) - lsn(sys.argv[6])
except ValueError:
    pass  # no WAL position (DATABASE_URL or psql missing): no wal_bytes
with open(path, "w") as f:
    json.dump(result, f)
PY
    die "could not add the CPU times to $OUT/$name.json"
  sleep 1
}

# write_env [KEY=VALUE ...]: $OUT/env.txt, the run's settings (read by the summaries),
# then the caller's own lines.
write_env() {
  {
    echo "date_utc=$STAMP"
    echo "git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "git_dirty=$(if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1) ]]; then echo yes; else echo no; fi)"
    echo "duration=$DURATION"
    echo "rounds=$ROUNDS"
    echo "connections=$CONNECTIONS"
    echo "threads=$THREADS"
    echo "warmup=$WARMUP"
    echo "wal_warm_mib=$WAL_WARM"
    echo "sellout_stock=$SELLOUT_STOCK"
    echo "sellout_buyers=$SELLOUT_BUYERS"
    echo "list_products=$LIST_PRODUCTS"
    echo "listen=$BENCH_LISTEN"
    echo "cpus=$(nproc 2>/dev/null || echo '?')"
    echo "wrk=$(wrk -v 2>&1 | head -n 1 | sed "s/ Copyright.*//" || true)"
    echo "run_id=$RUN_ID"
    printf '%s\n' "$@"
  } >"$OUT/env.txt"
}
