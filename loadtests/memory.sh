#!/usr/bin/env bash
# Resident memory per product (the 1,000,000-product target: under 1 GiB, and an idle
# activated product at most 1 KiB):
#
#   loadtests/memory.sh [N]
#
# Starts the binary (FLASHSALE_BIN, default target/release/flashsale, else
# target/debug/flashsale; it builds nothing) on 127.0.0.1:18283 with a fresh private
# PostgreSQL in a temp dir, FLASHSALE_PRODUCT_IDLE_SECS=${IDLE_SECS:-15} and
# FLASHSALE_PRODUCT_COMPACT_SECS=${COMPACT_SECS:-10}, then runs loadtests/memory.py: N
# products (default 20000) created, each read once, VmRSS before, after the reads and
# once the idle products compacted or passivated, per product and extrapolated, and the
# run's peak. SEED=sql creates the products with one INSERT through psql on the private
# PostgreSQL (the reads still go over HTTP): the way to run N=1000000.
# IDLE_SECS=0 never passivates: "settled" is then an activated product left idle (its
# actor compacted to its page and gate); with COMPACT_SECS=0 as well, its actor stays.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=loadtests/server.sh
. "$HERE/server.sh"
ROOT=$(cd "$HERE/.." && pwd)
N=${1:-20000}
LISTEN=${MEM_LISTEN:-127.0.0.1:18283}
IDLE_SECS=${IDLE_SECS:-15}
COMPACT_SECS=${COMPACT_SECS:-10}
BIN=${FLASHSALE_BIN:-$ROOT/target/release/flashsale}
[ -x "$BIN" ] || BIN=$ROOT/target/debug/flashsale
[ -x "$BIN" ] || { echo "memory.sh: build flashsale first" >&2; exit 1; }
DATA=$(mktemp -d /tmp/flashsale-mem-XXXXXX)
OPERATOR="op_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
FLASHSALE_LISTEN=$LISTEN FLASHSALE_DATA_DIR=$DATA FLASHSALE_ADMIN_TOKEN=$OPERATOR \
  FLASHSALE_SEED_DEMO=false FLASHSALE_PRODUCT_IDLE_SECS=$IDLE_SECS \
  FLASHSALE_PRODUCT_COMPACT_SECS=$COMPACT_SECS RUST_LOG=warn \
  "$BIN" >"$DATA/server.log" 2>&1 &
PID=$!
# As root the private PostgreSQL lives in a fallback folder named in the log (a
# million-product run leaves 1.7 GB there): removed with the data folder.
cleanup() {
  stop_server "$PID" 30 || true
  local root
  root=$(sed -n 's/.*started a private PostgreSQL; data in \(\/tmp\/flashsale-[0-9a-f]*\)$/\1/p' "$DATA/server.log" 2>/dev/null | head -1)
  [ -n "$root" ] && rm -rf "$root"
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 240); do
  curl -fs "http://$LISTEN/readyz" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$DATA/server.log" >&2; exit 1; }
  sleep 0.5
done
DB_URL=
if [ "${SEED:-api}" = sql ]; then
  # The private PostgreSQL the binary started: its folder is in the log, its port in
  # postmaster.pid (line 4), its password beside it.
  PGROOT=$(sed -n 's/.*started a private PostgreSQL; data in \(.*\)$/\1/p' "$DATA/server.log" | head -1)
  PGPORT=$(sed -n 4p "$PGROOT/pgdata/postmaster.pid")
  DB_URL="postgres://postgres:$(cat "$PGROOT/password")@127.0.0.1:$PGPORT/flashsale"
fi
echo "memory.sh: $BIN, N=$N, FLASHSALE_PRODUCT_IDLE_SECS=$IDLE_SECS, FLASHSALE_PRODUCT_COMPACT_SECS=$COMPACT_SECS, SEED=${SEED:-api}"
# The idle (or compaction) time, the actors' check interval and the catalog sweep, with
# margin.
WAIT=$((IDLE_SECS > COMPACT_SECS ? IDLE_SECS : COMPACT_SECS))
BASE="http://$LISTEN" OPERATOR=$OPERATOR PID=$PID DB_URL=$DB_URL SEED=${SEED:-api} IDLE_WAIT=$((WAIT * 2 + 10)) \
  python3 "$HERE/memory.py" "$N"
