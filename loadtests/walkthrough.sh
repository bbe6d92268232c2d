#!/usr/bin/env bash
# The README's walk through flashsale, run as a test: every step names the status and the
# fields it expects, and the walk stops at the first answer that differs.
#
#   bash loadtests/walkthrough.sh
#       starts $FLASHSALE_BIN (default target/debug/flashsale) on a free port with a fresh
#       private PostgreSQL under /tmp, walks, stops it (CI runs it this way);
#   FLASHSALE_URL=http://127.0.0.1:8080 OPERATOR_TOKEN=op_… bash loadtests/walkthrough.sh
#       walks against a server you run (each walk makes its own store, so it can be
#       repeated); the audit step runs `cargo run --release --quiet -- audit` unless
#       FLASHSALE names the binary to run.
#
# The part between the two "walk" marker lines is the README's walk block, character for
# character: the test docs::the_readme_walk_is_the_script_ci_runs checks it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${FLASHSALE_URL:-}" ]; then
    bin=${FLASHSALE_BIN:-target/debug/flashsale}
    work=$(mktemp -d /tmp/flashsale-walk.XXXXXX)
    chmod 755 "$work" # as root, PostgreSQL runs as `postgres`, which must enter it
    export FLASHSALE_DATA_DIR=$work/data OPERATOR_TOKEN=op_walk_$RANDOM$RANDOM FLASHSALE=$bin
    FLASHSALE_LISTEN=127.0.0.1:0 FLASHSALE_ADMIN_TOKEN=$OPERATOR_TOKEN RUST_LOG=warn \
        "$bin" >"$work/server.log" 2>&1 &
    server=$!
    trap 'kill -TERM $server 2>/dev/null; wait $server; rm -rf "$work"' EXIT
    for _ in $(seq 600); do
        FLASHSALE_URL=$(sed -n 's/^flashsale listening on //p' "$work/server.log")
        [ -n "$FLASHSALE_URL" ] && break
        kill -0 $server 2>/dev/null || { cat "$work/server.log"; exit 1; }
        sleep 0.1
    done
    [ -n "$FLASHSALE_URL" ] || { echo "walk: the server did not start" >&2; exit 1; }
    export FLASHSALE_URL
fi

# --- walk begins ---
S=${FLASHSALE_URL:-http://127.0.0.1:8080}; B=$S/api/v1
: "${OPERATOR_TOKEN:?export OPERATOR_TOKEN=op_… as the server printed it}"
# The binary, for the audit: `cargo run` here, or the one $FLASHSALE names.
flashsale() { if [ -n "${FLASHSALE:-}" ]; then "$FLASHSALE" "$@"; else cargo run --release --quiet -- "$@"; fi; }
W=$(mktemp -d)   # the last answer: $W/headers, $W/body

# call STATUS CHECK CURL-ARGS…: prints the answer's body; fails (and says so) unless its
# status is STATUS and the jq expression CHECK holds on it ("-": no body to check).
call() {
  local want=$1 check=$2 got; shift 2
  got=$(curl -sS -o "$W/body" -D "$W/headers" -w '%{http_code}' "$@") || return 1
  if [ "$got" != "$want" ] || { [ "$check" != - ] && ! jq -e "$check" "$W/body" >/dev/null; }; then
    echo "walk: wanted $want and $check, got $got: $(cat "$W/body")" >&2; return 1
  fi
  cat "$W/body"; echo
}

# 1. The operator opens a store; its two keys are shown only in this answer.
STORE=$(call 201 '.plan == "pro"' $B/stores -H "Authorization: Bearer $OPERATOR_TOKEN" \
  --json '{"name":"Acme","plan":"pro"}')
SK=$(jq -r .api_keys.admin <<<"$STORE")        # back office: everything in the store
PK=$(jq -r .api_keys.storefront <<<"$STORE")   # storefront: read, checkout

# 2. Three products: on sale now; with a 10-minute payment hold; a drop opening in 5 s,
#    behind a waiting room.
PRODUCT=$(call 201 '.status == "live"' $B/products -H "Authorization: Bearer $SK" \
  --json '{"sku":"SNK-001","name":"Limited sneaker","price_cents":12900,"currency":"EUR","stock":50,"max_per_customer":2}' | jq -r .id)
HELD=$(call 201 '.hold_seconds == 600' $B/products -H "Authorization: Bearer $SK" \
  --json '{"sku":"TIX-001","name":"Concert ticket","price_cents":5000,"currency":"EUR","stock":10,"hold_seconds":600}' | jq -r .id)
STARTS=$(date -u -d '+5 seconds' +%Y-%m-%dT%H:%M:%SZ)
DROP=$(call 201 '.status == "scheduled"' $B/products -H "Authorization: Bearer $SK" \
  --json '{"sku":"DROP-001","name":"Drop","price_cents":9900,"currency":"EUR","stock":100,"sale_starts_at":"'$STARTS'","waiting_room":{"opens_seconds_before":300,"admit_per_second":50}}' | jq -r .id)

# 3. Checkout. 201 means the order is committed in PostgreSQL.
BUY='{"product_id":"'$PRODUCT'","quantity":1,"customer_id":"alice","consent":{"terms_version":"2026-01","marketing":false}}'
ORDER=$(call 201 '.status == "confirmed"' $B/checkout -H "Authorization: Bearer $PK" \
  -H 'Idempotency-Key: alice-1' --json "$BUY" | jq -r .id)
# The same key and body again (a lost answer, a double click): the same order, not a new one.
call 201 ".id == \"$ORDER\"" $B/checkout -H "Authorization: Bearer $PK" -H 'Idempotency-Key: alice-1' --json "$BUY"
grep -i '^idempotent-replayed: true' $W/headers
# The same key with another body is refused.
call 422 '.code == "idempotency_key_reused"' $B/checkout -H "Authorization: Bearer $PK" \
  -H 'Idempotency-Key: alice-1' --json "${BUY/\"quantity\":1/\"quantity\":2}"

# 4. The product page, from memory, with an ETag; asked again with it: 304, no body.
#    Then more stock, and a new price (no read after the PATCH shows the old one).
call 200 '.stock_available <= 49' $B/products/$PRODUCT -H "Authorization: Bearer $PK"
ETAG=$(sed -n 's/^etag: //Ip' $W/headers | tr -d '\r')
call 304 - $B/products/$PRODUCT -H "Authorization: Bearer $PK" -H "If-None-Match: $ETAG"
call 200 '.stock_total == 75' $B/products/$PRODUCT/restock -H "Authorization: Bearer $SK" --json '{"quantity":25}'
call 200 '.price_cents == 9900' -X PATCH $B/products/$PRODUCT -H "Authorization: Bearer $SK" --json '{"price_cents":9900}'

# 5. Holds: a checkout of TIX-001 reserves stock until expires_at; the back office
#    confirms it once paid, or cancels it (the stock goes back on sale).
hold() { call 201 '.status == "reserved" and .expires_at != null' $B/checkout -H "Authorization: Bearer $PK" \
  -H "Idempotency-Key: $1" --json '{"product_id":"'$HELD'","quantity":1,"customer_id":"'$1'","consent":{"terms_version":"2026-01","marketing":true}}' | jq -r .id; }
PAID=$(hold bob); UNPAID=$(hold carol)
call 200 '.status == "confirmed"' $B/orders/$PAID/confirm -H "Authorization: Bearer $SK" --json '{"payment_reference":"pay_123"}'
call 200 '.status == "cancelled"' -X POST $B/orders/$UNPAID/cancel -H "Authorization: Bearer $SK"
call 409 '.code == "order_cancelled"' $B/orders/$UNPAID/confirm -H "Authorization: Bearer $SK" --json '{"payment_reference":"pay_124"}'
call 200 '.items | length == 1' "$B/orders?status=confirmed&product_id=$HELD&limit=20" -H "Authorization: Bearer $SK"
# Each order's history (consent, every status change, which key, from where), from PostgreSQL:
flashsale audit $PAID | tee $W/audit
grep -q 'status=confirmed' $W/audit

# 6. The drop calendar (default: the next 7 days), then the waiting room: checkout needs
#    a token; a buyer joins, waits for the start, and once admitted gets one.
call 200 ".items[0].id == \"$DROP\"" $B/drops -H "Authorization: Bearer $PK"
DROP_BUY='{"product_id":"'$DROP'","quantity":1,"customer_id":"dave","consent":{"terms_version":"2026-01","marketing":false}}'
call 409 '.code == "waiting_room_token_required"' $B/checkout -H "Authorization: Bearer $PK" -H 'Idempotency-Key: dave-1' --json "$DROP_BUY"
TICKET=$(call 202 '.ticket != null' $B/products/$DROP/queue -H "Authorization: Bearer $PK" --json '{"customer_id":"dave"}' | jq -r .ticket)
sleep 6   # past the start: those who joined before it are shuffled, then let in at 50/s
TOKEN=$(call 200 '.status == "admitted"' $B/products/$DROP/queue/$TICKET -H "Authorization: Bearer $PK" | jq -r .token)
call 201 '.status == "confirmed"' $B/checkout -H "Authorization: Bearer $PK" -H 'Idempotency-Key: dave-2' \
  -H "Waiting-Room-Token: $TOKEN" --json "$DROP_BUY"

# 7. What the service saw: checkouts by outcome, on the Prometheus endpoint.
curl -sS $S/metrics | grep '^flashsale_checkouts_total'
# --- walk ends ---
echo "walk: every step answered as the README says"
