#!/usr/bin/env bash
# flashsale benchmark: builds the release binary, starts it on its own port
# with a fresh private PostgreSQL (or DATABASE_URL), and measures with wrk:
#   1. hot-SKU checkout   committed checkouts/s, p50/p99, non-201s, orders/DB tx
#   2. /healthz           the reference; ratio checkout/healthz
#   3. sell-out           10,000 units, 100,000 one-shot buyers: time to sell out,
#                         exactly-10,000 check; then refusals/s after sell-out vs
#                         a fresh /healthz run
# Results: a Markdown summary on stdout and in loadtests/results/<timestamp>/
# together with the raw wrk outputs, /metrics scrapes and the server log.
#
# Usage (from anywhere):   loadtests/bench.sh
# Knobs (environment):     see loadtests/README.md or `loadtests/bench.sh --help`
#   DURATION=15s CONNECTIONS=256 THREADS=1 WARMUP=3s BENCH_LISTEN=127.0.0.1:18080
#   SELLOUT_STOCK=10000 SELLOUT_BUYERS=100000 SELLOUT_TIMEOUT=120s
#   DATABASE_URL=... (else a private PostgreSQL in a fresh temp dir)
#   SKIP_BUILD=1 FLASHSALE_BIN=path READY_TIMEOUT=120 WRK_TIMEOUT=5s
#   KEEP_DATA=1 RESULTS_ROOT=dir STRICT=1 (exit 1 when a target or check fails)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-256}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-3s}
BENCH_LISTEN=${BENCH_LISTEN:-127.0.0.1:18080}
SELLOUT_STOCK=${SELLOUT_STOCK:-10000}
SELLOUT_BUYERS=${SELLOUT_BUYERS:-100000}
SELLOUT_TIMEOUT=${SELLOUT_TIMEOUT:-120s}
READY_TIMEOUT=${READY_TIMEOUT:-120}
STOP_TIMEOUT=${STOP_TIMEOUT:-60}
WRK_TIMEOUT=${WRK_TIMEOUT:-5s}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
STRICT=${STRICT:-0}
FLASHSALE_BIN=${FLASHSALE_BIN:-$ROOT/target/release/flashsale}
RESULTS_ROOT=${RESULTS_ROOT:-$HERE/results}

SERVER_PID=""
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
is_pos "$SELLOUT_BUYERS" || die "SELLOUT_BUYERS must be a positive integer, got '$SELLOUT_BUYERS'"
((SELLOUT_BUYERS >= THREADS)) || die "SELLOUT_BUYERS ($SELLOUT_BUYERS) must be >= THREADS ($THREADS)"
is_uint "$READY_TIMEOUT" || die "READY_TIMEOUT must be whole seconds, got '$READY_TIMEOUT'"
is_uint "$STOP_TIMEOUT" || die "STOP_TIMEOUT must be whole seconds, got '$STOP_TIMEOUT'"
for v in DURATION SELLOUT_TIMEOUT WRK_TIMEOUT; do
  is_duration "${!v}" || die "$v must look like 15, 15s, 2m or 1h, got '${!v}'"
done
[[ $DURATION =~ ^0+[smh]?$ ]] && die "DURATION must be > 0"
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
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local waited=0
    while kill -0 "$SERVER_PID" 2>/dev/null && ((waited < STOP_TIMEOUT * 10)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      warn "server did not exit ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
      KEEP_DATA=1
    fi
    local src=0
    wait "$SERVER_PID" 2>/dev/null || src=$?
    if ((src != 0)); then
      warn "server exited with status $src after SIGTERM (the contract says 0)"
    fi
  fi
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

# run_wrk NAME SCRIPT DURATION [VAR=VALUE ...] -> $OUT/NAME.txt, $OUT/NAME.json
run_wrk() {
  local name=$1 script=$2 dur=$3
  shift 3
  local out="$OUT/$name.txt"
  log "phase $name: wrk -t$THREADS -c$CONNECTIONS -d$dur -s $script"
  local rc=0
  env FS_RUN="$RUN_ID" FS_PHASE="$name" "$@" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --timeout "$WRK_TIMEOUT" --latency \
    -s "$HERE/$script" "$BASE" >"$out" 2>&1 || rc=$?
  grep -v '^FSBENCH_RESULT ' "$out" | sed 's/^/    /' >&2 || true
  server_alive || server_died "during phase $name"
  ((rc == 0)) || die "wrk failed (exit $rc) in phase $name; see $out"
  { grep '^FSBENCH_RESULT ' "$out" || true; } | tail -n 1 | cut -d' ' -f2- >"$OUT/$name.json"
  [[ -s "$OUT/$name.json" ]] || die "no FSBENCH_RESULT line from $script in phase $name; see $out"
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

server_env=(FLASHSALE_LISTEN="$BENCH_LISTEN" FLASHSALE_ADMIN_TOKEN="$ADMIN_TOKEN")
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
log "store ready: hot product $HOT_ID, sell-out product $SELL_ID ($SELLOUT_STOCK units)"

{
  echo "date_utc=$STAMP"
  echo "git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
  echo "git_dirty=$(if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1) ]]; then echo yes; else echo no; fi)"
  echo "duration=$DURATION"
  echo "connections=$CONNECTIONS"
  echo "threads=$THREADS"
  echo "warmup=$WARMUP"
  echo "sellout_stock=$SELLOUT_STOCK"
  echo "sellout_buyers=$SELLOUT_BUYERS"
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

# 1 + 2: /healthz reference, then the hot SKU with /metrics around it.
run_wrk healthz healthz.lua "$DURATION"
scrape_metrics metrics-before-checkout.txt
run_wrk checkout checkout.lua "$DURATION" "${checkout_env[@]}" FS_PRODUCT_ID="$HOT_ID"
scrape_metrics metrics-after-checkout.txt

# 3: sell-out, exactly SELLOUT_BUYERS checkouts.
DONE_DIR=$(mktemp -d /tmp/flashsale-bench-done.XXXXXX)
run_wrk sellout sellout.lua "$SELLOUT_TIMEOUT" "${checkout_env[@]}" FS_PRODUCT_ID="$SELL_ID" \
  FS_TOTAL="$SELLOUT_BUYERS" FS_STOCK="$SELLOUT_STOCK" FS_THREADS="$THREADS" FS_DONE_DIR="$DONE_DIR"
sleep 1.2 # GET /stock may lag by up to 1 s
api GET "/api/v1/products/$SELL_ID/stock" "$PK" 200 >"$OUT/sellout-stock.json"

# Refusals after the sell-out, against a /healthz run right before.
run_wrk healthz-refusal healthz.lua "$DURATION"
run_wrk refusal checkout.lua "$DURATION" "${checkout_env[@]}" FS_PRODUCT_ID="$SELL_ID"
sleep 1.2
api GET "/api/v1/products/$SELL_ID/stock" "$PK" 200 >"$OUT/refusal-stock.json"

# --------------------------------------------------------------- summary ----
summary_rc=0
python3 - "$OUT" "$SELLOUT_STOCK" "$SELLOUT_BUYERS" "$STRICT" <<'PY' || summary_rc=$?
import json, os, re, sys

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
co_rate = co["created_per_s"] if co else None
hz_rate = hz["ok_per_s"] if hz else None
ratio = co_rate / hz_rate if co_rate is not None and hz_rate else None
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
for name, res in (("healthz", hz), ("checkout", co), ("sellout", so), ("healthz-refusal", hz2), ("refusal", rf)):
    if res and sock(res):
        warnings.append(f"{name}: wrk socket errors {res['socket_errors']}")

refused = rf["outcomes"].get("409 sold_out", 0) if rf else None
ref_rate = refused / rf["duration_s"] if rf else None
hz2_rate = hz2["ok_per_s"] if hz2 else None
ref_ratio = ref_rate / hz2_rate if ref_rate is not None and hz2_rate else None

t_hot = mark(None if co_rate is None else co_rate >= 20000)
t_ratio = mark(None if ratio is None else ratio >= 0.35)
t_p99 = mark(None if p99 is None else p99 < 50)
t_ref = mark(None if ref_ratio is None else ref_ratio >= 0.8)
t_sold = mark(so is not None and sold_exactly)
for label, t in (("hot SKU >= 20,000 checkouts/s", t_hot), ("checkout/healthz >= 0.35", t_ratio),
                 ("p99 < 50 ms", t_p99), ("refusals/healthz >= 0.8", t_ref),
                 (f"exactly {stock:,} sold", t_sold)):
    if t != "PASS":
        failures.append(f"{label}: {t}")

lines = [
    f"### flashsale benchmark {env.get('date_utc', '')}",
    "",
    f"git `{env.get('git_rev')}`{' (dirty)' if env.get('git_dirty') == 'yes' else ''}, "
    f"{env.get('cpus')} CPUs, {env.get('wrk')}; wrk -t{env.get('threads')} -c{env.get('connections')}, "
    f"{env.get('duration')} per phase; {env.get('database')}.",
    "",
    "| measure | result | target | |",
    "|---|---|---|---|",
    f"| hot SKU: committed checkouts/s (201) | {n(co_rate)} | >= 20,000 | {t_hot} |",
    f"| hot SKU: latency p50 / p99 | {ms(p50)} / {ms(p99)} | p99 < 50 ms | {t_p99} |",
    f"| hot SKU: non-201 responses | {others(co, {'201'})} | | |",
    f"| hot SKU: mean orders per DB transaction | {per_tx_s} | | |",
    f"| /healthz: requests/s, p50 / p99 | {n(hz_rate)}, {ms(hz and hz['latency_ms']['p50'])} / {ms(hz and hz['latency_ms']['p99'])} | | |",
    f"| ratio checkout / healthz | {n(ratio, 3)} | >= 0.35 | {t_ratio} |",
    f"| sell-out: time to the {stock:,}th 201 ({buyers:,} buyers) | {ms(so and so.get('sellout_ms'))} | | |",
    f"| sell-out: all {buyers:,} buyers answered after | {ms(so and so.get('all_answered_ms'))} | | |",
    f"| sell-out: 201s / stock_available after | {n(created)} / {n(avail)} | exactly {stock:,} / 0 | {t_sold} |",
    f"| sell-out: other responses | {others(so, {'201'})} | | |",
    f"| after sell-out: refusals/s (409 sold_out) | {n(ref_rate)} (p99 {ms(rf and rf['latency_ms']['p99'])}) | | |",
    f"| after sell-out: /healthz requests/s just before | {n(hz2_rate)} | | |",
    f"| ratio refusals / healthz | {n(ref_ratio, 3)} | >= 0.8 | {t_ref} |",
]
if rf and others(rf, {"409 sold_out"}) != "none":
    lines.append(f"| after sell-out: other responses | {others(rf, {'409 sold_out'})} | | |")
if warnings:
    lines += ["", "Warnings:"] + [f"- {w}" for w in warnings]
text = "\n".join(lines) + "\n"

with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump({"env": env, "checkout_per_s": co_rate, "healthz_per_s": hz_rate, "ratio": ratio,
               "p50_ms": p50, "p99_ms": p99, "orders_per_tx": per_tx,
               "sellout_ms": so and so.get("sellout_ms"), "sellout_created": created,
               "sellout_stock_available": avail, "refusals_per_s": ref_rate,
               "healthz_before_refusal_per_s": hz2_rate, "refusal_ratio": ref_ratio,
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
