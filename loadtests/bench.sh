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
# /healthz reference (DURATION/ROUNDS each), 2b's two sides with each other; the
# rounds are merged. The summary
# also gives the server's and the private PostgreSQL's CPU per request in each phase.
# Results: a Markdown summary on stdout and in loadtests/results/<timestamp>/
# together with the raw wrk outputs, /metrics scrapes and the server log.
#
# Usage (from anywhere):   loadtests/bench.sh
#                          loadtests/bench.sh --baseline [REV]   (A/B: REV, default main,
#                          against the current tree, alternating round by round; ab.sh)
# Knobs (environment):     see loadtests/README.md or `loadtests/bench.sh --help`
#   DURATION=15s ROUNDS=5 CONNECTIONS=256 THREADS=1 WARMUP=3s BENCH_LISTEN=127.0.0.1:18080
#   WAL_WARM=1024 (MiB of WAL written and checkpointed first, as on a database that has
#   been up: see steady_wal in lib.sh; 0 for none)
#   SELLOUT_STOCK=10000 SELLOUT_BUYERS=100000 SELLOUT_TIMEOUT=120s LIST_PRODUCTS=60
#   DATABASE_URL=... (else a private PostgreSQL in a fresh temp dir)
#   SKIP_BUILD=1 FLASHSALE_BIN=path READY_TIMEOUT=120 WRK_TIMEOUT=5s SETTLE_TIMEOUT=30
#   KEEP_DATA=1 RESULTS_ROOT=dir STRICT=1 (exit 1 when a target or check fails)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --baseline=*) BASELINE_REV=${1#--baseline=} exec "$HERE/ab.sh" "${@:2}" ;;
  --baseline)
    if [[ -n ${2:-} && ${2:0:1} != - ]]; then
      BASELINE_REV=$2 exec "$HERE/ab.sh" "${@:3}"
    fi
    BASELINE_REV=main exec "$HERE/ab.sh" "${@:2}"
    ;;
  "") ;;
  *) usage >&2; echo "bench.sh: unexpected argument: $1 (settings are environment variables)" >&2; exit 1 ;;
esac

# shellcheck source=loadtests/lib.sh
. "$HERE/lib.sh"
check_settings
check_tools

# ------------------------------------------------------------------- run ----
[[ $SKIP_BUILD == 1 ]] || build_release "$ROOT"
[[ -x $FLASHSALE_BIN ]] || die "server binary not found or not executable: $FLASHSALE_BIN"

make_results_dir
if [[ -n ${DATABASE_URL:-} ]]; then
  log "using DATABASE_URL from the environment"
  db_desc="DATABASE_URL (external PostgreSQL)"
else
  db_desc="private PostgreSQL (fresh temp dir)"
fi
launch_server server "$FLASHSALE_BIN" "$BENCH_LISTEN" "$OUT/server.log"
wait_ready server

# ----------------------------------------------------------------- setup ----
create_store
HOT_ID=$(create_product hot-1 Hot 1000000000)
SELL_ID=$(create_product sellout-1 Sell-out "$SELLOUT_STOCK")
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

write_env "database=$db_desc"

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

# ---------------------------------------------------------------- phases ----
checkout_env=(FS_STOREFRONT_KEY="$PK")

steady_wal
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
phase_checkout_plain() {
  run_wrk "checkout-plain-r$1" checkout.lua "$ROUND_DURATION" "${checkout_env[@]}" FS_PRODUCT_ID="$HOT_ID"
}
phase_checkout_hooked() {
  run_wrk "checkout-hooked-r$1" checkout.lua "$ROUND_DURATION" FS_STOREFRONT_KEY="$HPK" FS_PRODUCT_ID="$HHOT_ID"
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
start_receiver "$RECEIVER_LOG"
create_store bench-hooked HSK HPK
HOOK_ID=$(api POST /api/v1/webhooks "$HSK" 201 "{\"url\":\"$RECEIVER_URL/hook\",\"events\":[\"order.created\"]}" | json_get id)
HHOT_ID=$(create_product hot-hooked "Hot (hooked)" 1000000000 "$HSK")
in_rounds phase_checkout_plain phase_checkout_hooked
scrape_metrics metrics-after-webhooks.txt
# Deliveries catch up after the load (bounded wait), then the receiver stops.
hooked_created=$(python3 -c 'import json,sys; print(sum(json.load(open(f)).get("created", 0) for f in sys.argv[1:]))' "$OUT"/checkout-hooked-r*.json 2>/dev/null || echo 0)
deadline=$((SECONDS + 60))
while (($(grep -c '^got ' "$RECEIVER_LOG" || true) < hooked_created && SECONDS < deadline)); do sleep 1; done
echo "created=$hooked_created delivered=$(grep -c '^got ' "$RECEIVER_LOG" || true) distinct=$(grep '^got ' "$RECEIVER_LOG" | sort -u | wc -l)" >"$OUT/webhook-deliveries.txt"
# The endpoint goes with its deliveries still pending, so that the phases below do not
# share the machine with their backlog (it took most of a core of PostgreSQL in them).
api DELETE "/api/v1/webhooks/$HOOK_ID" "$HSK" 204 >/dev/null
stop_receiver

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
python3 "$HERE/summary.py" "$OUT" "$SELLOUT_STOCK" "$SELLOUT_BUYERS" "$STRICT" || summary_rc=$?
if ((summary_rc != 0)); then
  if [[ $STRICT == 1 ]]; then
    log "STRICT=1: a target was missed or a check failed"
  else
    die "could not write the summary"
  fi
fi
exit "$summary_rc"
