#!/usr/bin/env bash
# flashsale benchmark: builds the release binary, starts it on its own port
# with a fresh private PostgreSQL (or DATABASE_URL), and measures with wrk:
#   1. hot-SKU checkout   committed checkouts/s, p50/p99, non-201s, orders/DB tx
#   2. /healthz           the reference; ratio checkout/healthz
#   2b. hot-SKU checkout with an order.created webhook subscriber (a local
#                         receiver, loadtests/webhook_receiver.py) in rounds
#                         alternating with the same phase without one: ratio
#                         with/without (target >= 0.8) and deliveries made
#   3. sell-out           10,000 units, 100,000 one-shot buyers: time to sell out,
#                         exactly-10,000 check; then refusals/s after sell-out vs
#                         /healthz
#   4. reads              one product page (product-get), the same with
#                         If-None-Match (product-304), a page of 50 products with
#                         gzip (list-50), each vs /healthz
# Every phase compared with /healthz runs in ROUNDS rounds alternating with its
# /healthz reference (DURATION/ROUNDS each); the rounds are merged. The summary
# also gives the server's and the private PostgreSQL's CPU per request in each phase.
# Results: a Markdown summary on stdout and in loadtests/results/<timestamp>/
# together with the raw wrk outputs, /metrics scrapes and the server log.
#
# Usage (from anywhere):   loadtests/bench.sh
# Knobs (environment):     see loadtests/README.md or `loadtests/bench.sh --help`
#   DURATION=15s ROUNDS=5 CONNECTIONS=256 THREADS=1 WARMUP=3s BENCH_LISTEN=127.0.0.1:18080
#   SELLOUT_STOCK=10000 SELLOUT_BUYERS=100000 SELLOUT_TIMEOUT=120s LIST_PRODUCTS=60
#   DATABASE_URL=... (else a private PostgreSQL in a fresh temp dir)
#   SKIP_BUILD=1 FLASHSALE_BIN=path READY_TIMEOUT=120 WRK_TIMEOUT=5s SETTLE_TIMEOUT=30
#   KEEP_DATA=1 RESULTS_ROOT=dir STRICT=1 (exit 1 when a target or check fails)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=loadtests/server.sh
. "$HERE/server.sh"
ROOT=$(cd "$HERE/.." && pwd)

DURATION=${DURATION:-15s}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-256}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-3s}
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

SERVER_PID=""
RECEIVER_PID=""
DATA_DIR=""
DONE_DIR=""
OUT=""

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '[bench %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; die "unexpected argument: $1 (all settings are environment variables)" ;;
esac

# ---------------------------------------------------------------- checks ----
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_duration() { [[ $1 =~ ^[0-9]+[smh]?$ ]]; }

is_pos() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0)); }

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
for v in DURATION SELLOUT_TIMEOUT WRK_TIMEOUT; do
  is_duration "${!v}" || die "$v must look like 15, 15s, 2m or 1h, got '${!v}'"
done
[[ $DURATION =~ ^0+[smh]?$ ]] && die "DURATION must be > 0"
is_pos "$ROUNDS" || die "ROUNDS must be a positive integer, got '$ROUNDS'"
seconds() {
  local n=${1%[smh]}
  case $1 in
    *m) echo $((n * 60)) ;;
    *h) echo $((n * 3600)) ;;
    *) echo "$n" ;;
  esac
}
ROUND_DURATION="$(($(seconds "$DURATION") / ROUNDS))s"
[[ $ROUND_DURATION != 0s ]] || die "DURATION ($DURATION) must be at least ROUNDS ($ROUNDS) seconds"
[[ $WARMUP =~ ^0+[smh]?$ ]] && WARMUP=0
[[ $WARMUP == 0 ]] || is_duration "$WARMUP" || die "WARMUP must look like 3s or 0, got '$WARMUP'"

# The load goes to this machine only: loopback addresses.
case "$BENCH_LISTEN" in
  127.*:[0-9]* | localhost:[0-9]*) ;;
  *) die "BENCH_LISTEN must be a loopback address with a port (127.x.x.x:PORT), got '$BENCH_LISTEN'" ;;
esac
BASE="http://$BENCH_LISTEN"

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

# ------------------------------------------------------------- lifecycle ----
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    log "stopping the server (SIGTERM to pid $SERVER_PID)"
    if ! stop_server "$SERVER_PID" "$STOP_TIMEOUT"; then
      warn "server did not exit ${STOP_TIMEOUT}s after SIGTERM; it was killed"
      KEEP_DATA=1
    elif [[ $SERVER_STATUS != 0 ]]; then
      warn "server exited with status $SERVER_STATUS after SIGTERM (the contract says 0)"
    fi
  fi
  if [[ -n $RECEIVER_PID ]]; then kill "$RECEIVER_PID" 2>/dev/null || true; fi
  if [[ -n $DONE_DIR ]]; then rm -rf "$DONE_DIR"; fi
  if [[ -n $DATA_DIR ]]; then
    if [[ $KEEP_DATA == 1 ]]; then
      log "kept the server's data dir: $DATA_DIR"
    else
      rm -rf "$DATA_DIR" || warn "could not remove $DATA_DIR"
    fi
  fi
  if [[ -n $OUT ]]; then log "results in $OUT"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

server_alive() {
  [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null
}

server_died() {
  warn "last lines of the server log ($OUT/server.log):"
  tail -n 40 "$OUT/server.log" >&2 || true
  SERVER_PID=""
  die "the server exited unexpectedly ($*)"
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

scrape_metrics() {
  curl -sS --max-time 10 "$BASE/metrics" >"$OUT/$1" 2>/dev/null || {
    warn "GET /metrics failed; orders per DB transaction will be n/a"
    : >"$OUT/$1"
  }
}

# etag_of PATH NAME -> the ETag of GET PATH (storefront key) on stdout, or
# nothing; the response headers go to $OUT/NAME.headers.
etag_of() {
  local path=$1 name=$2
  curl -sS -D "$OUT/$name.headers" -o /dev/null --max-time 10 \
    -H "Authorization: Bearer $PK" -H 'Accept: application/json' "$BASE$path" ||
    die "request failed: GET $path"
  sed -n 's/^[Ee][Tt][Aa][Gg]:[[:space:]]*//p' "$OUT/$name.headers" | tr -d '\r' | head -n 1
}

# check_status NAME PATH EXPECTED [CURL_ARGS ...]: one GET with the storefront
# key before a read phase; headers and body to $OUT/NAME.*, a warning (not an
# error: the phase counts every status) when the status differs.
check_status() {
  local name=$1 path=$2 expect=$3 code
  shift 3
  code=$(curl -sS -D "$OUT/$name.headers" -o "$OUT/$name.body" -w '%{http_code}' --max-time 10 \
    -H "Authorization: Bearer $PK" -H 'Accept: application/json' "$@" "$BASE$path") ||
    die "request failed: GET $path"
  [[ $code == "$expect" ]] || warn "GET $path answered $code before phase ${name%-check}, expected $expect"
}

# cpu PID ...: "PID TICKS" for each of these processes still running, TICKS being its
# user + system CPU time in clock ticks.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu() {
  local p stat
  local -a f
  for p in "$@"; do
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -r -a f <<<"${stat##*) }" # the fields after "(command) ", from field 3 on
    echo "$p $((f[11] + f[12]))"   # utime and stime: fields 14 and 15
  done
}

# spent BEFORE AFTER: the ticks spent between two `cpu` readings by the processes
# in AFTER (all of them for one that started in between; one that ended in between
# is not counted).
spent() {
  awk 'NR == FNR { before[$1] = $2; next } { total += $2 - before[$1] } END { print total + 0 }' \
    <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}

# db_pids: the private PostgreSQL's postmaster and its children (nothing with
# DATABASE_URL: an external server's CPU is not this machine's business).
db_pids() {
  [[ -n $DATA_DIR && -r $DATA_DIR/pgdata/postmaster.pid ]] || return 0
  local pm
  pm=$(head -n 1 "$DATA_DIR/pgdata/postmaster.pid")
  [[ $pm =~ ^[0-9]+$ ]] || return 0
  echo "$pm"
  pgrep -P "$pm" || true
}

# settle: waits (up to SETTLE_TIMEOUT seconds) until the server and the private
# PostgreSQL use less than 5% of a core over a second, so that a phase does not
# start while the last one's aftermath (cache housekeeping, autovacuum) still runs;
# that would slow down whichever round comes first.
settle() {
  local deadline=$((SECONDS + SETTLE_TIMEOUT)) before after
  while ((SECONDS < deadline)); do
    # shellcheck disable=SC2046 # one PID per word
    before=$(cpu "$SERVER_PID" $(db_pids))
    sleep 1
    # shellcheck disable=SC2046
    after=$(cpu "$SERVER_PID" $(db_pids))
    ((100 * $(spent "$before" "$after") < 5 * CLK_TCK)) && return 0
  done
  warn "server and database still busy ${SETTLE_TIMEOUT}s after the last phase; going on"
}

# run_wrk NAME SCRIPT DURATION [VAR=VALUE ...] -> $OUT/NAME.txt, $OUT/NAME.json
# The JSON also gets the CPU time the server (server_cpu_s) and the private
# PostgreSQL (db_cpu_s) spent while wrk ran.
run_wrk() {
  local name=$1 script=$2 dur=$3
  shift 3
  local out="$OUT/$name.txt"
  log "phase $name: wrk -t$THREADS -c$CONNECTIONS -d$dur -s $script"
  local rc=0 server0 server1 db0 db1
  # shellcheck disable=SC2046 # one PID per word
  server0=$(cpu "$SERVER_PID") db0=$(cpu $(db_pids))
  env FS_RUN="$RUN_ID" FS_PHASE="$name" "$@" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --timeout "$WRK_TIMEOUT" --latency \
    -s "$HERE/$script" "$BASE" >"$out" 2>&1 || rc=$?
  # shellcheck disable=SC2046
  server1=$(cpu "$SERVER_PID") db1=$(cpu $(db_pids))
  grep -v '^FSBENCH_RESULT ' "$out" | sed 's/^/    /' >&2 || true
  server_alive || server_died "during phase $name"
  ((rc == 0)) || die "wrk failed (exit $rc) in phase $name; see $out"
  { grep '^FSBENCH_RESULT ' "$out" || true; } | tail -n 1 | cut -d' ' -f2- >"$OUT/$name.json"
  [[ -s "$OUT/$name.json" ]] || die "no FSBENCH_RESULT line from $script in phase $name; see $out"
  python3 - "$OUT/$name.json" "$(spent "$server0" "$server1")" "$(spent "$db0" "$db1")" "$CLK_TCK" \
    "$([[ -n $DATA_DIR ]] && echo private || echo external)" <<'PY' ||
import json, sys
path, server, db, hz, database = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with open(path) as f:
    result = json.load(f)
result["server_cpu_s"] = server / hz
if database == "private":
    result["db_cpu_s"] = db / hz
with open(path, "w") as f:
    json.dump(result, f)
PY
    die "could not add the CPU times to $OUT/$name.json"
  sleep 1
}

# ------------------------------------------------------------------- run ----
if [[ $SKIP_BUILD != 1 ]]; then
  command -v cargo >/dev/null || die "cargo not found (or set SKIP_BUILD=1 with a built FLASHSALE_BIN)"
  log "cargo build --release (in $ROOT)"
  (cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
fi
[[ -x $FLASHSALE_BIN ]] || die "server binary not found or not executable: $FLASHSALE_BIN"

if curl -s -o /dev/null --max-time 2 "$BASE/"; then
  die "something already answers on $BENCH_LISTEN; stop it or set BENCH_LISTEN=127.0.0.1:OTHERPORT"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_ROOT" || die "cannot create $RESULTS_ROOT"
OUT="$RESULTS_ROOT/$STAMP"
suffix=1
until mkdir "$OUT" 2>/dev/null; do
  [[ -d $RESULTS_ROOT ]] || die "cannot create a results dir under $RESULTS_ROOT"
  suffix=$((suffix + 1))
  OUT="$RESULTS_ROOT/$STAMP-$suffix"
done
RUN_ID="b${STAMP}-$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
ADMIN_TOKEN=$(python3 -c 'import secrets; print("op_" + secrets.token_hex(24))')

# The webhook phase's receiver listens on loopback: allowed explicitly.
server_env=(FLASHSALE_LISTEN="$BENCH_LISTEN" FLASHSALE_ADMIN_TOKEN="$ADMIN_TOKEN"
  FLASHSALE_WEBHOOK_ALLOW_NETS=127.0.0.0/8)
if [[ -n ${DATABASE_URL:-} ]]; then
  log "using DATABASE_URL from the environment"
  db_desc="DATABASE_URL (external PostgreSQL)"
else
  unset DATABASE_URL
  DATA_DIR=$(mktemp -d /tmp/flashsale-bench.XXXXXX)
  chmod 755 "$DATA_DIR" # the private PostgreSQL may run as the postgres user
  server_env+=(FLASHSALE_DATA_DIR="$DATA_DIR")
  log "private PostgreSQL under $DATA_DIR"
  db_desc="private PostgreSQL (fresh temp dir)"
fi

log "starting $FLASHSALE_BIN on $BENCH_LISTEN (log: $OUT/server.log)"
env "${server_env[@]}" "$FLASHSALE_BIN" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true) == 200 ]]; do
  server_alive || server_died "before /readyz answered 200"
  ((SECONDS < deadline)) || die "GET /readyz did not answer 200 within ${READY_TIMEOUT}s; see $OUT/server.log"
  sleep 0.5
done
log "server ready (pid $SERVER_PID)"

# ----------------------------------------------------------------- setup ----
store=$(api POST /api/v1/stores "$ADMIN_TOKEN" 201 '{"name":"bench","plan":"enterprise"}')
SK=$(json_get api_keys.admin <<<"$store")
PK=$(json_get api_keys.storefront <<<"$store")
hot=$(api POST /api/v1/products "$SK" 201 \
  '{"sku":"hot-1","name":"Hot","price_cents":1000,"currency":"EUR","stock":1000000000}')
HOT_ID=$(json_get id <<<"$hot")
sell=$(api POST /api/v1/products "$SK" 201 \
  "{\"sku\":\"sellout-1\",\"name\":\"Sell-out\",\"price_cents\":1000,\"currency\":\"EUR\",\"stock\":$SELLOUT_STOCK}")
SELL_ID=$(json_get id <<<"$sell")
# The read phases use a product of their own: nobody buys it, so its
# representation (and ETag) does not change while checkouts run on the others.
readp=$(api POST /api/v1/products "$SK" 201 \
  '{"sku":"read-1","name":"Read","description":"Product page for the read phases","price_cents":1500,"currency":"EUR","stock":1000}')
READ_ID=$(json_get id <<<"$readp")
# Filler catalogue for list-50: LIST_PRODUCTS more products, so that
# GET /api/v1/products?limit=50 returns a full page with a next cursor.
log "creating $LIST_PRODUCTS products for the list-50 phase"
for ((i = 1; i <= LIST_PRODUCTS; i++)); do
  api POST /api/v1/products "$SK" 201 "$(printf \
    '{"sku":"list-%04d","name":"List product %d","description":"Catalogue filler %d for the list-50 phase","price_cents":%d,"currency":"EUR","stock":100}' \
    "$i" "$i" "$i" $((500 + i)))" >/dev/null
done
log "store ready: hot product $HOT_ID, sell-out product $SELL_ID ($SELLOUT_STOCK units)," \
  "read product $READ_ID, $LIST_PRODUCTS list products"

{
  echo "date_utc=$STAMP"
  echo "git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
  echo "git_dirty=$(if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1) ]]; then echo yes; else echo no; fi)"
  echo "duration=$DURATION"
  echo "rounds=$ROUNDS"
  echo "connections=$CONNECTIONS"
  echo "threads=$THREADS"
  echo "warmup=$WARMUP"
  echo "sellout_stock=$SELLOUT_STOCK"
  echo "sellout_buyers=$SELLOUT_BUYERS"
  echo "list_products=$LIST_PRODUCTS"
  echo "listen=$BENCH_LISTEN"
  echo "database=$db_desc"
  echo "cpus=$(nproc 2>/dev/null || echo '?')"
  echo "wrk=$(wrk -v 2>&1 | head -n 1 | sed "s/ Copyright.*//" || true)"
  echo "run_id=$RUN_ID"
} >"$OUT/env.txt"

# ---------------------------------------------------------------- phases ----
checkout_env=(FS_STOREFRONT_KEY="$PK")

if [[ $WARMUP != 0 ]]; then
  run_wrk warmup checkout.lua "$WARMUP" "${checkout_env[@]}" FS_PRODUCT_ID="$HOT_ID"
fi

# Each measured phase runs in ROUNDS rounds that alternate with its /healthz reference
# (healthz, phase, healthz, phase, ...), DURATION/ROUNDS each; NAME.json merges the
# rounds NAME-r1.json ... (loadtests/merge_rounds.py). On a shared machine the capacity
# drifts from one run to the next; alternating makes the drift hit both sides alike.
in_rounds() {
  local r fn name files
  settle
  for ((r = 1; r <= ROUNDS; r++)); do
    for fn in "$@"; do "$fn" "$r"; done
  done
  for fn in "$@"; do
    name=${fn#phase_}
    name=${name//_/-}
    files=()
    for ((r = 1; r <= ROUNDS; r++)); do files+=("$OUT/$name-r$r.json"); done
    python3 "$HERE/merge_rounds.py" "$OUT/$name.json" "${files[@]}" ||
      die "could not merge the rounds of phase $name"
  done
}
phase_healthz() { run_wrk "healthz-r$1" healthz.lua "$ROUND_DURATION"; }
phase_checkout() {
  run_wrk "checkout-r$1" checkout.lua "$ROUND_DURATION" "${checkout_env[@]}" FS_PRODUCT_ID="$HOT_ID"
}
phase_healthz_refusal() { run_wrk "healthz-refusal-r$1" healthz.lua "$ROUND_DURATION"; }
phase_refusal() {
  run_wrk "refusal-r$1" checkout.lua "$ROUND_DURATION" "${checkout_env[@]}" FS_PRODUCT_ID="$SELL_ID"
}
phase_healthz_read() { run_wrk "healthz-read-r$1" healthz.lua "$ROUND_DURATION"; }
phase_product_get() {
  run_wrk "product-get-r$1" read.lua "$ROUND_DURATION" "${read_env[@]}" FS_PATH="$READ_PATH"
}
phase_product_304() {
  run_wrk "product-304-r$1" read.lua "$ROUND_DURATION" "${read_env[@]}" FS_PATH="$READ_PATH" \
    FS_IF_NONE_MATCH="$ETAG" FS_EXPECT=304
}
phase_list_50() {
  run_wrk "list-50-r$1" read.lua "$ROUND_DURATION" "${read_env[@]}" FS_PATH="$LIST_PATH" \
    FS_ACCEPT_ENCODING=gzip
}

# 1 + 2: /healthz reference and the hot SKU, with /metrics around them.
scrape_metrics metrics-before-checkout.txt
in_rounds phase_healthz phase_checkout
scrape_metrics metrics-after-checkout.txt

# 2b: the hot SKU with an order.created subscriber, in rounds alternating with the
# same phase on a store without one (each store its own hot product).
RECEIVER_LOG="$OUT/webhook-receiver.log"
python3 "$HERE/webhook_receiver.py" 127.0.0.1 0 >"$RECEIVER_LOG" 2>&1 &
RECEIVER_PID=$!
deadline=$((SECONDS + 10))
until grep -q '^listening ' "$RECEIVER_LOG" 2>/dev/null; do
  ((SECONDS < deadline)) || die "the webhook receiver did not start; see $RECEIVER_LOG"
  sleep 0.2
done
RECEIVER_URL=$(sed -n 's/^listening //p' "$RECEIVER_LOG" | head -n 1)
hooked=$(api POST /api/v1/stores "$ADMIN_TOKEN" 201 '{"name":"bench-hooked","plan":"enterprise"}')
HSK=$(json_get api_keys.admin <<<"$hooked")
HPK=$(json_get api_keys.storefront <<<"$hooked")
api POST /api/v1/webhooks "$HSK" 201 "{\"url\":\"$RECEIVER_URL/hook\",\"events\":[\"order.created\"]}" >/dev/null
hhot=$(api POST /api/v1/products "$HSK" 201 \
  '{"sku":"hot-hooked","name":"Hot (hooked)","price_cents":1000,"currency":"EUR","stock":1000000000}')
HHOT_ID=$(json_get id <<<"$hhot")
phase_checkout_plain() {
  run_wrk "checkout-plain-r$1" checkout.lua "$ROUND_DURATION" "${checkout_env[@]}" FS_PRODUCT_ID="$HOT_ID"
}
phase_checkout_hooked() {
  run_wrk "checkout-hooked-r$1" checkout.lua "$ROUND_DURATION" FS_STOREFRONT_KEY="$HPK" FS_PRODUCT_ID="$HHOT_ID"
}
in_rounds phase_checkout_plain phase_checkout_hooked
scrape_metrics metrics-after-webhooks.txt
# Deliveries catch up after the load (bounded wait), then the receiver stops.
hooked_created=$(python3 -c 'import json,sys; print(sum(json.load(open(f)).get("created", 0) for f in sys.argv[1:]))' "$OUT"/checkout-hooked-r*.json 2>/dev/null || echo 0)
deadline=$((SECONDS + 60))
while (( $(grep -c '^got ' "$RECEIVER_LOG" || true) < hooked_created && SECONDS < deadline )); do sleep 1; done
echo "created=$hooked_created delivered=$(grep -c '^got ' "$RECEIVER_LOG" || true) distinct=$(grep '^got ' "$RECEIVER_LOG" | sort -u | wc -l)" >"$OUT/webhook-deliveries.txt"
kill "$RECEIVER_PID" 2>/dev/null || true
RECEIVER_PID=""

# 3: sell-out, exactly SELLOUT_BUYERS checkouts.
DONE_DIR=$(mktemp -d /tmp/flashsale-bench-done.XXXXXX)
run_wrk sellout sellout.lua "$SELLOUT_TIMEOUT" "${checkout_env[@]}" FS_PRODUCT_ID="$SELL_ID" \
  FS_TOTAL="$SELLOUT_BUYERS" FS_STOCK="$SELLOUT_STOCK" FS_THREADS="$THREADS" FS_DONE_DIR="$DONE_DIR"
sleep 1.2 # GET /stock may lag by up to 1 s
api GET "/api/v1/products/$SELL_ID/stock" "$PK" 200 >"$OUT/sellout-stock.json"

# Refusals after the sell-out, against /healthz in the same rounds.
in_rounds phase_healthz_refusal phase_refusal
sleep 1.2
api GET "/api/v1/products/$SELL_ID/stock" "$PK" 200 >"$OUT/refusal-stock.json"

# 6-9: reads from memory, against /healthz in the same rounds.
read_env=(FS_STOREFRONT_KEY="$PK")
READ_PATH="/api/v1/products/$READ_ID"
LIST_PATH="/api/v1/products?limit=50"
# The product's current ETag, before the rounds of the conditional phase.
ETAG=$(etag_of "$READ_PATH" product-304-before)
[[ -n $ETAG ]] || warn "GET $READ_PATH sent no ETag; product-304 will send no If-None-Match"
printf '%s\n' "$ETAG" >"$OUT/product-304-etag.txt"
check_status product-304-check "$READ_PATH" 304 -H "If-None-Match: $ETAG"
check_status list-50-check "$LIST_PATH" 200 -H 'Accept-Encoding: gzip'
in_rounds phase_healthz_read phase_product_get phase_product_304 phase_list_50
etag_of "$READ_PATH" product-304-after >"$OUT/product-304-etag-after.txt"

# --------------------------------------------------------------- summary ----
summary_rc=0
python3 - "$OUT" "$SELLOUT_STOCK" "$SELLOUT_BUYERS" "$STRICT" <<'PY' || summary_rc=$?
import json, os, re, statistics, sys

out, stock, buyers, strict = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"

def load(name):
    path = os.path.join(out, name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

env = {}
with open(os.path.join(out, "env.txt")) as f:
    for line in f:
        k, _, v = line.rstrip("\n").partition("=")
        env[k] = v

def metric(fname, name):
    """Sum of the samples of `name` with outcome="committed"; None if absent."""
    try:
        text = open(os.path.join(out, fname)).read()
    except OSError:
        return None
    total, seen = 0.0, False
    pat = re.compile(r'^' + re.escape(name) + r'\{([^}]*)\}\s+(\S+)')
    for line in text.splitlines():
        m = pat.match(line)
        if m and re.search(r'(^|,)\s*outcome="committed"', m.group(1)):
            try:
                total += float(m.group(2))
                seen = True
            except ValueError:
                pass
    return total if seen else None

hz, co, so = load("healthz.json"), load("checkout.json"), load("sellout.json")
hz2, rf = load("healthz-refusal.json"), load("refusal.json")
hz3, pg = load("healthz-read.json"), load("product-get.json")
p304, ls = load("product-304.json"), load("list-50.json")
stock1, stock2 = load("sellout-stock.json") or {}, load("refusal-stock.json") or {}

warnings, failures = [], []

def n(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"

def ms(x):
    return "n/a" if x is None else (f"{x:.2f} ms" if x < 10 else f"{x:.1f} ms")

def mark(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")

def others(res, skip):
    items = sorted(((k, v) for k, v in (res or {}).get("outcomes", {}).items() if k not in skip),
                   key=lambda kv: -kv[1])
    return ", ".join(f"{k}: {v:,}" for k, v in items) or "none"

def sock(res):
    e = (res or {}).get("socket_errors", {})
    return sum(e.values()) if e else 0

# 1 + 2
rounds = int(env.get("rounds") or 1)

def paired_ratio(phase, ref, rate):
    """The median over the rounds of phase/ref, each round against the /healthz round
    run right before it (robust to a round the shared machine slowed down), and the
    per-round ratios; None if a round is missing."""
    ratios = []
    for r in range(1, rounds + 1):
        p, h = load(f"{phase}-r{r}.json"), load(f"{ref}-r{r}.json")
        if not p or not h or not h.get("ok_per_s"):
            return None, []
        ratios.append(rate(p) / h["ok_per_s"])
    return statistics.median(ratios), ratios

def ratio_cell(r, per_round):
    if r is None:
        return "n/a"
    if len(per_round) < 2:
        return f"{r:.3f}"
    return f"{r:.3f} (median; rounds " + ", ".join(f"{x:.2f}" for x in per_round) + ")"

co_rate = co["created_per_s"] if co else None
hz_rate = hz["ok_per_s"] if hz else None
ratio, ratio_rounds = paired_ratio("checkout", "healthz", lambda p: p["created_per_s"])
p50 = co["latency_ms"]["p50"] if co else None
p99 = co["latency_ms"]["p99"] if co else None
b0 = metric("metrics-before-checkout.txt", "flashsale_writer_batches_total")
b1 = metric("metrics-after-checkout.txt", "flashsale_writer_batches_total")
o0 = metric("metrics-before-checkout.txt", "flashsale_writer_orders_total")
o1 = metric("metrics-after-checkout.txt", "flashsale_writer_orders_total")
per_tx = None
if None not in (b0, b1, o0, o1) and b1 > b0:
    per_tx = (o1 - o0) / (b1 - b0)
per_tx_s = "n/a" if per_tx is None else f"{per_tx:.1f} ({n(o1 - o0)} orders / {n(b1 - b0)} transactions)"

# 2b: checkouts/s with an order.created subscriber vs without, paired per round
def paired(phase, ref, rate):
    ratios = []
    for r in range(1, rounds + 1):
        p, h = load(f"{phase}-r{r}.json"), load(f"{ref}-r{r}.json")
        if not p or not h or not rate(h):
            return None, []
        ratios.append(rate(p) / rate(h))
    return statistics.median(ratios), ratios
ck_plain, ck_hooked = load("checkout-plain.json"), load("checkout-hooked.json")
hook_ratio, hook_rounds = paired("checkout-hooked", "checkout-plain", lambda p: p["created_per_s"])
hook_deliv = {}
try:
    hook_deliv = dict(kv.split("=") for kv in open(os.path.join(out, "webhook-deliveries.txt")).read().split())
except OSError:
    warnings.append("no webhook-deliveries.txt")
t_hook = mark(None if hook_ratio is None else hook_ratio >= 0.8)

# 3
created = so["created"] if so else None
answered = so["answered"] if so else None
avail, status = stock1.get("stock_available"), stock1.get("status")
sold_exactly = so is not None and created == stock and avail == 0
if so is None:
    warnings.append("sell-out phase produced no result")
else:
    if created != stock:
        warnings.append(f"sell-out: {created:,} checkouts answered 201, expected exactly {stock:,}")
    if avail != 0:
        warnings.append(f"sell-out: GET /stock says stock_available={avail}, expected 0")
    if status not in (None, "sold_out"):
        warnings.append(f"sell-out: GET /stock says status={status!r}, expected 'sold_out'")
    if answered != buyers:
        warnings.append(f"sell-out: only {answered:,} of {buyers:,} checkouts were answered "
                        f"({sock(so)} socket errors); wrk ran until SELLOUT_TIMEOUT")
    if so.get("threads") != so.get("threads_expected"):
        warnings.append("sell-out: wrk thread count differs from FS_THREADS; shares are wrong")
if rf is not None:
    extra = rf["outcomes"].get("201", 0)
    if extra:
        warnings.append(f"refusal phase: {extra:,} checkouts answered 201 on a sold-out product (OVERSELL)")
    if stock2.get("stock_available") not in (None, 0):
        warnings.append(f"after refusal phase: stock_available={stock2.get('stock_available')}, expected 0")
for name, res in (("healthz", hz), ("checkout", co), ("sellout", so), ("healthz-refusal", hz2), ("refusal", rf),
                  ("healthz-read", hz3), ("product-get", pg), ("product-304", p304), ("list-50", ls)):
    if res and sock(res):
        warnings.append(f"{name}: wrk socket errors {res['socket_errors']}")

refused = rf["outcomes"].get("409 sold_out", 0) if rf else None
ref_rate = refused / rf["duration_s"] if rf else None
hz2_rate = hz2["ok_per_s"] if hz2 else None
ref_ratio, ref_ratio_rounds = paired_ratio(
    "refusal", "healthz-refusal", lambda p: p["outcomes"].get("409 sold_out", 0) / p["duration_s"])

# 6-9: reads against /healthz in the same rounds
hz3_rate = hz3["ok_per_s"] if hz3 else None

def read_phase(name, res, target):
    rate = res["ok_per_s"] if res else None
    r, per_round = paired_ratio(name, "healthz-read", lambda p: p["ok_per_s"])
    return rate, r, per_round, mark(None if r is None else r >= target)

pg_rate, pg_ratio, pg_rounds, t_pg = read_phase("product-get", pg, 0.8)
p304_rate, p304_ratio, p304_rounds, t_304 = read_phase("product-304", p304, 0.8)
ls_rate, ls_ratio, ls_rounds, t_ls = read_phase("list-50", ls, 0.5)

def lat(res):
    return f"{ms(res and res['latency_ms']['p50'])} / {ms(res and res['latency_ms']['p99'])}"

def read_text(name):
    try:
        with open(os.path.join(out, name), "rb") as f:
            return f.read()
    except OSError:
        return None

etag_before = (read_text("product-304-etag.txt") or b"").decode().strip()
etag_after = (read_text("product-304-etag-after.txt") or b"").decode().strip()
if p304 is not None:
    if not etag_before:
        warnings.append("product-304: the product page had no ETag; no If-None-Match was sent")
    elif etag_after != etag_before:
        warnings.append(f"product-304: the ETag changed during the phase ({etag_before} -> {etag_after or 'none'})")

# list-50: what one response looked like (from the curl before the rounds)
ls_items, ls_cursor, ls_encoding, ls_status = None, None, None, None
hdrs = read_text("list-50-check.headers")
if hdrs is not None:
    for line in hdrs.decode("latin-1").splitlines():
        if line.startswith("HTTP/"):
            ls_status = line.split()[1] if len(line.split()) > 1 else None
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-encoding":
            ls_encoding = v.strip()
body = read_text("list-50-check.body")
if ls is not None and ls_status not in (None, "200"):
    warnings.append(f"list-50: GET ?limit=50 answered {ls_status} before the rounds, expected 200")
elif body is not None:
    try:
        if ls_encoding == "gzip":
            import gzip
            body = gzip.decompress(body)
        doc = json.loads(body)
        ls_items, ls_cursor = len(doc.get("items", [])), doc.get("next_cursor")
    except (OSError, ValueError, AttributeError, EOFError):
        pass
if ls is not None:
    if ls_items is not None and ls_items != 50:
        warnings.append(f"list-50: GET ?limit=50 returned {ls_items} items, expected 50")
    if ls_items == 50 and ls_cursor is None:
        warnings.append("list-50: next_cursor is null although the store has more than 50 products")
ls_gz = f"{ls['gzipped']:,} of {ls['answered']:,} responses gzip" if ls else "n/a"
ls_size = "n/a"
if ls and ls.get("mean_wire_bytes") is not None:
    ls_size = (f"{n(ls['mean_wire_bytes'])} B on the wire (wrk transfer/s ÷ requests/s: headers + body), "
               f"{n(ls.get('mean_body_bytes'))} B body; {ls_gz}")
if ls_items is not None:
    ls_size += f"; {ls_items} items, next_cursor {'set' if ls_cursor else 'null'}"

t_hot = mark(None if co_rate is None else co_rate >= 20000)
t_ratio = mark(None if ratio is None else ratio >= 0.35)
t_p99 = mark(None if p99 is None else p99 < 50)
t_ref = mark(None if ref_ratio is None else ref_ratio >= 0.8)
t_sold = mark(so is not None and sold_exactly)
for label, t in (("hot SKU >= 20,000 checkouts/s", t_hot), ("checkout/healthz >= 0.35", t_ratio),
                 ("p99 < 50 ms", t_p99), ("refusals/healthz >= 0.8", t_ref),
                 ("checkout with/without webhook subscriber >= 0.8", t_hook),
                 (f"exactly {stock:,} sold", t_sold), ("product-get/healthz >= 0.8", t_pg),
                 ("product-304/healthz >= 0.8", t_304), ("list-50/healthz >= 0.5", t_ls)):
    if t != "PASS":
        failures.append(f"{label}: {t}")

lines = [
    f"### flashsale benchmark {env.get('date_utc', '')}",
    "",
    f"git `{env.get('git_rev')}`{' (dirty)' if env.get('git_dirty') == 'yes' else ''}, "
    f"{env.get('cpus')} CPUs, {env.get('wrk')}; wrk -t{env.get('threads')} -c{env.get('connections')}, "
    f"{env.get('duration')} per phase in {env.get('rounds')} rounds alternating with /healthz "
    f"(ratios and latency: median of the rounds); {env.get('database')}.",
    "",
    "| measure | result | target | |",
    "|---|---|---|---|",
    f"| hot SKU: committed checkouts/s (201) | {n(co_rate)} | >= 20,000 | {t_hot} |",
    f"| hot SKU: latency p50 / p99 | {ms(p50)} / {ms(p99)} | p99 < 50 ms | {t_p99} |",
    f"| hot SKU: non-201 responses | {others(co, {'201'})} | | |",
    f"| hot SKU: mean orders per DB transaction | {per_tx_s} | | |",
    f"| /healthz: requests/s, p50 / p99 | {n(hz_rate)}, {ms(hz and hz['latency_ms']['p50'])} / {ms(hz and hz['latency_ms']['p99'])} | | |",
    f"| ratio checkout / healthz | {ratio_cell(ratio, ratio_rounds)} | >= 0.35 | {t_ratio} |",
    f"| hot SKU without / with an order.created subscriber: checkouts/s | {n(ck_plain and ck_plain['created_per_s'])} / {n(ck_hooked and ck_hooked['created_per_s'])} | | |",
    f"| ratio with / without subscriber | {ratio_cell(hook_ratio, hook_rounds)} | >= 0.8 | {t_hook} |",
    f"| webhook: orders created with subscriber / delivered (distinct) | {hook_deliv.get('created', 'n/a')} / {hook_deliv.get('distinct', 'n/a')} | all | |",
    f"| sell-out: time to the {stock:,}th 201 ({buyers:,} buyers) | {ms(so and so.get('sellout_ms'))} | | |",
    f"| sell-out: all {buyers:,} buyers answered after | {ms(so and so.get('all_answered_ms'))} | | |",
    f"| sell-out: 201s / stock_available after | {n(created)} / {n(avail)} | exactly {stock:,} / 0 | {t_sold} |",
    f"| sell-out: other responses | {others(so, {'201'})} | | |",
    f"| after sell-out: refusals/s (409 sold_out) | {n(ref_rate)} (p99 {ms(rf and rf['latency_ms']['p99'])}) | | |",
    f"| after sell-out: /healthz requests/s, same rounds | {n(hz2_rate)} | | |",
    f"| ratio refusals / healthz | {ratio_cell(ref_ratio, ref_ratio_rounds)} | >= 0.8 | {t_ref} |",
]
if rf and others(rf, {"409 sold_out"}) != "none":
    lines.append(f"| after sell-out: other responses | {others(rf, {'409 sold_out'})} | | |")
lines += [
    f"| reads: /healthz requests/s, same rounds, p50 / p99 | {n(hz3_rate)}, {lat(hz3)} | | |",
    f"| product-get: requests/s (200), p50 / p99 | {n(pg_rate)}, {lat(pg)} | | |",
    f"| product-get: non-200 responses | {others(pg, {'200'})} | | |",
    f"| ratio product-get / healthz | {ratio_cell(pg_ratio, pg_rounds)} | >= 0.8 | {t_pg} |",
    f"| product-304: 304s/s (If-None-Match), p50 / p99 | {n(p304_rate)}, {lat(p304)} | | |",
    f"| product-304: non-304 responses | {others(p304, {'304'})} | | |",
    f"| ratio product-304 / healthz | {ratio_cell(p304_ratio, p304_rounds)} | >= 0.8 | {t_304} |",
    f"| list-50: requests/s (200, gzip), p50 / p99 | {n(ls_rate)}, {lat(ls)} | | |",
    f"| list-50: non-200 responses | {others(ls, {'200'})} | | |",
    f"| list-50: mean response size | {ls_size} | | |",
    f"| ratio list-50 / healthz | {ratio_cell(ls_ratio, ls_rounds)} | >= 0.5 | {t_ls} |",
]
# Where the CPU went: the server's and the private PostgreSQL's CPU time while wrk ran,
# per request (per 201 for the hot SKU), and the server's against its /healthz rounds.
def cpu_per(res, key, count="requests"):
    if not res or res.get(key) is None or not res.get(count):
        return None
    return res[key] / res[count] * 1e6

def us(x):
    return "n/a" if x is None else f"{x:.1f} µs"

lines += ["", "CPU per request while the phase ran (`/proc`; wrk's own CPU not counted):", "",
          "| phase | server | × its /healthz rounds | private PostgreSQL |", "|---|---|---|---|"]
cpu = {}
for label, res, count, ref in (("/healthz (hot-SKU rounds)", hz, "requests", None),
                               ("hot SKU, per 201", co, "created", hz),
                               ("/healthz (refusal rounds)", hz2, "requests", None),
                               ("refusal", rf, "requests", hz2),
                               ("/healthz (read rounds)", hz3, "requests", None),
                               ("product-get", pg, "requests", hz3),
                               ("product-304", p304, "requests", hz3),
                               ("list-50", ls, "requests", hz3)):
    server, db = cpu_per(res, "server_cpu_s", count), cpu_per(res, "db_cpu_s", count)
    base = cpu_per(ref, "server_cpu_s")
    factor = f"{server / base:.2f}" if server is not None and base else ""
    cpu[label] = {"server_us": server, "db_us": db, "vs_healthz": server / base if factor else None}
    lines.append(f"| {label} | {us(server)} | {factor} | {us(db) if db is not None else 'n/a'} |")
if warnings:
    lines += ["", "Warnings:"] + [f"- {w}" for w in warnings]
text = "\n".join(lines) + "\n"

with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump({"env": env, "checkout_per_s": co_rate, "healthz_per_s": hz_rate, "ratio": ratio,
               "p50_ms": p50, "p99_ms": p99, "orders_per_tx": per_tx,
               "checkout_plain_per_s": ck_plain and ck_plain["created_per_s"],
               "checkout_hooked_per_s": ck_hooked and ck_hooked["created_per_s"],
               "webhook_ratio": hook_ratio, "webhook_deliveries": hook_deliv,
               "sellout_ms": so and so.get("sellout_ms"), "sellout_created": created,
               "sellout_stock_available": avail, "refusals_per_s": ref_rate,
               "healthz_before_refusal_per_s": hz2_rate, "refusal_ratio": ref_ratio,
               "healthz_before_reads_per_s": hz3_rate,
               "product_get_per_s": pg_rate, "product_get_ratio": pg_ratio,
               "product_304_per_s": p304_rate, "product_304_ratio": p304_ratio,
               "list_50_per_s": ls_rate, "list_50_ratio": ls_ratio,
               "list_50_mean_wire_bytes": ls and ls.get("mean_wire_bytes"),
               "list_50_mean_body_bytes": ls and ls.get("mean_body_bytes"),
               "cpu_per_request": cpu,
               "warnings": warnings, "failed_targets": failures}, f, indent=2)
print(text)
for w in warnings:
    print(f"WARNING: {w}", file=sys.stderr)
sys.exit(1 if strict and (failures or warnings) else 0)
PY
if ((summary_rc != 0)); then
  if [[ $STRICT == 1 ]]; then
    log "STRICT=1: a target was missed or a check failed"
  else
    die "could not write the summary"
  fi
fi
exit "$summary_rc"
