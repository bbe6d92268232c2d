#!/usr/bin/env bash
# The OpenAPI document against the API it describes: schemathesis (PyPI) as each role.
#
#   loadtests/schemathesis.sh [MAX_EXAMPLES]
#
# Starts the binary (FLASHSALE_BIN, default target/debug/flashsale; it builds nothing) on
# 127.0.0.1:18281 with a fresh private PostgreSQL in a temp dir (or DATABASE_URL), seeds a
# store with a live product, a drop and an order, then runs `st run` on
# /api/v1/openapi.json as the operator, the store's admin key and its storefront key, with
# the checks not_a_server_error, response_schema_conformance, status_code_conformance and
# content_type_conformance. MAX_EXAMPLES (default 10) bounds the cases per operation.
# Installs schemathesis with pip if `st` is missing. Exit status: 0 when every role passes.
# Knobs: ST_LISTEN=127.0.0.1:18281 FLASHSALE_BIN=path DATABASE_URL=... ST_ARGS="..." (extra)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=loadtests/server.sh
. "$HERE/server.sh"
ROOT=$(cd "$HERE/.." && pwd)
MAX_EXAMPLES=${1:-10}
ST_LISTEN=${ST_LISTEN:-127.0.0.1:18281}
FLASHSALE_BIN=${FLASHSALE_BIN:-$ROOT/target/debug/flashsale}
BASE="http://$ST_LISTEN"
log() { printf '[schemathesis %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v st >/dev/null 2>&1 || pip install -q schemathesis
[ -x "$FLASHSALE_BIN" ] || { log "no binary at $FLASHSALE_BIN (cargo build first)"; exit 1; }

DATA=$(mktemp -d /tmp/flashsale-st-XXXXXX)
OPERATOR="op_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
FLASHSALE_LISTEN=$ST_LISTEN FLASHSALE_DATA_DIR=$DATA FLASHSALE_ADMIN_TOKEN=$OPERATOR \
  FLASHSALE_SEED_DEMO=false FLASHSALE_RATE_PRO=0 FLASHSALE_CHECKOUT_RATE_PER_CUSTOMER=0 \
  FLASHSALE_CHECKOUT_RATE_PER_ADDRESS=0 RUST_LOG=warn \
  "$FLASHSALE_BIN" >"$DATA/server.log" 2>&1 &
PID=$!
cleanup() { stop_server "$PID" 30 || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 1 240); do
  curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$DATA/server.log" >&2; exit 1; }
  sleep 0.5
done
curl -fs "$BASE/readyz" >/dev/null || { log "not ready"; cat "$DATA/server.log" >&2; exit 1; }

api() { # METHOD PATH TOKEN [BODY] [EXTRA CURL ARGS...]
  local method=$1 path=$2 token=$3 body=${4:-}
  shift 4 || shift $#
  curl -fsS -X "$method" "$BASE$path" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' ${body:+-d "$body"} "$@"
}
STORE=$(api POST /api/v1/stores "$OPERATOR" '{"name":"Schemathesis","plan":"pro"}')
ADMIN=$(jq -r .api_keys.admin <<<"$STORE")
FRONT=$(jq -r .api_keys.storefront <<<"$STORE")
PRODUCT=$(api POST /api/v1/products "$ADMIN" \
  '{"sku":"st-1","name":"Sneaker","price_cents":100,"currency":"EUR","stock":1000000}' | jq -r .id)
SOON=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
api POST /api/v1/products "$ADMIN" \
  "{\"sku\":\"st-2\",\"name\":\"Drop\",\"price_cents\":100,\"currency\":\"EUR\",\"stock\":5,\"sale_starts_at\":\"$SOON\"}" >/dev/null
ORDER=$(api POST /api/v1/checkout "$FRONT" \
  "{\"product_id\":\"$PRODUCT\",\"quantity\":1,\"customer_id\":\"c1\",\"consent\":{\"terms_version\":\"1\",\"marketing\":false}}" \
  -H 'Idempotency-Key: seed-1' | jq -r .id)
STORE_ID=$(jq -r .id <<<"$STORE")
log "seeded store $STORE_ID, product $PRODUCT, order $ORDER"
# Real ids in the paths, so that the answers of found resources are checked too.
cat >"$DATA/schemathesis.toml" <<TOML
[[operations]]
include-path-regex = "^/api/v1/products/"
parameters = { "path.id" = "$PRODUCT" }
[[operations]]
include-path-regex = "^/api/v1/orders/"
parameters = { "path.id" = "$ORDER" }
[[operations]]
include-path-regex = "^/api/v1/stores/"
parameters = { "path.id" = "$STORE_ID" }
TOML

status=0
for role in operator admin storefront; do
  case $role in
    operator) token=$OPERATOR ;;
    admin) token=$ADMIN ;;
    storefront) token=$FRONT ;;
  esac
  log "st run as the $role (max $MAX_EXAMPLES examples per operation)"
  # shellcheck disable=SC2086 # ST_ARGS is a list of extra arguments
  if ! st --config-file "$DATA/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    -H "Authorization: Bearer $token" --max-examples "$MAX_EXAMPLES" --seed 13 \
    --request-timeout 15 ${ST_ARGS:-}; then
    log "FAILED as the $role"
    status=1
  fi
done
exit $status
