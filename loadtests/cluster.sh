#!/usr/bin/env bash
# The cost of clustering: committed checkouts/s of one instance, then of three, each
# behind the shipped HAProxy (deploy/haproxy.cfg, its shard map kept by `flashsale
# haproxy-map`), all on one PostgreSQL, with wrk placing checkouts by product path
# (POST /api/v1/products/{id}/checkout) over many products. Reports for each the rate
# committed (orders counted in the database), the three-instance rate as a ratio of the
# single instance's, and the share of checkouts forwarded between instances (the sum of
# flashsale_cluster_forwards_total over the instances / checkouts). Targets: >= 0.7x,
# < 5 %. See loadtests/README.md, "Cluster".
#
#   bash loadtests/cluster.sh                 # release binary built if missing
#   ROUNDS=2 DURATION=20s bash loadtests/cluster.sh
#
# Everything listens on 127.0.0.1: HAProxy on $PORT_BASE, the instances on the next
# three ports, PostgreSQL on $PORT_BASE + 50.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=loadtests/server.sh
. "$HERE/server.sh"

DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-1}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PRODUCTS=${PRODUCTS:-256}
STOCK=${STOCK:-1000000}
PORT_BASE=${PORT_BASE:-18700}
# Extra settings for every instance, and for the instances of the three-instance phase
# only. Those three share this machine's cores, so each gets its share, as a deployment
# of several instances on one machine would size them (by default each instance runs a
# worker and an arbiter per core: three of them would run three threads per core).
# CLUSTER_INSTANCE_ENV= (empty) runs them with the defaults.
INSTANCE_ENV=${INSTANCE_ENV:-}
CLUSTER_INSTANCE_ENV=${CLUSTER_INSTANCE_ENV-FLASHSALE_HTTP_WORKERS=1 FLASHSALE_ARBITERS=1}
FLASHSALE_BIN=${FLASHSALE_BIN:-$ROOT/target/release/flashsale}
RESULTS_ROOT=${RESULTS_ROOT:-$HERE/results}
READY_TIMEOUT=${READY_TIMEOUT:-120}
# STATEMENTS=1: PostgreSQL loads pg_stat_statements, and each phase writes its costliest
# statements (by total time while wrk ran) to statements-rROUND-nN.txt in the results.
STATEMENTS=${STATEMENTS:-0}

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '[cluster %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}

if ! [[ $PRODUCTS =~ ^[1-9][0-9]*$ ]]; then die "PRODUCTS must be a positive integer"; fi
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then die "ROUNDS must be a positive integer"; fi
[[ $DURATION =~ ^[0-9]+s$ ]] || die "DURATION must be whole seconds like 20s"
for tool in wrk haproxy curl psql python3; do
  command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y $tool)"
done
pg_bin() {
  local found
  found=$(command -v "$1" || true)
  [[ -n $found ]] || found=$(compgen -G "/usr/lib/postgresql/*/bin/$1" | sort -V | tail -n 1 || true)
  [[ -n $found ]] || die "PostgreSQL's $1 not found (apt-get install -y postgresql)"
  echo "$found"
}
if [[ ! -x $FLASHSALE_BIN ]]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --bin flashsale) || die "cargo build --release failed"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$RESULTS_ROOT/$STAMP-cluster"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/flashsale-cluster.XXXXXX)
chmod 755 "$WORK"
RUN_ID="c${STAMP}-$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
ADMIN_TOKEN=$(python3 -c 'import secrets; print("op_" + secrets.token_hex(24))')
FRONT="http://127.0.0.1:$PORT_BASE"
PG_PORT=$((PORT_BASE + 50))
PG_PID="" HAPROXY_PID="" MAPPER_PID=""
INSTANCE_PIDS=()

# ------------------------------------------------------------- lifecycle ----
stop_pid() { # PID: SIGTERM, wait (bounded), SIGKILL
  [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
  stop_server "$1" 30 || log "pid $1 had to be killed"
}
stop_front() {
  stop_pid "$MAPPER_PID"
  stop_pid "$HAPROXY_PID"
  MAPPER_PID="" HAPROXY_PID=""
}
stop_instances() {
  local pid
  for pid in "${INSTANCE_PIDS[@]}"; do stop_pid "$pid"; done
  INSTANCE_PIDS=()
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_front
  stop_instances
  stop_pid "$PG_PID"
  rm -rf "$WORK"
  log "results in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One PostgreSQL for everything (as the postgres user when run as root: it refuses root).
start_postgres() {
  local as=() statements=()
  if [[ $STATEMENTS == 1 ]]; then
    statements=(-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all)
  fi
  if [[ $(id -u) == 0 ]]; then
    as=(runuser -u postgres --)
    chown postgres "$WORK"
  fi
  "${as[@]}" "$(pg_bin initdb)" -D "$WORK/pg" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -5 "$WORK/initdb.log")"
  "${as[@]}" "$(pg_bin postgres)" -D "$WORK/pg" -p "$PG_PORT" -k "$WORK" \
    -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB \
    "${statements[@]}" >"$OUT/postgres.log" 2>&1 &
  PG_PID=$!
  local deadline=$((SECONDS + 30))
  until psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc 'SELECT 1' postgres >/dev/null 2>&1; do
    kill -0 "$PG_PID" 2>/dev/null || die "PostgreSQL exited; see $OUT/postgres.log"
    ((SECONDS < deadline)) || die "PostgreSQL did not start within 30 s"
    sleep 0.2
  done
  log "PostgreSQL on 127.0.0.1:$PG_PORT (data in $WORK/pg)"
}

db_url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"; }
sql() { psql "$(db_url "$1")" -Atc "$2"; }

# start_instances N DB: N instances on the ports after PORT_BASE, each ready.
start_instances() {
  local n=$1 db=$2 i port extra=""
  if ((n > 1)); then extra=$CLUSTER_INSTANCE_ENV; fi
  for ((i = 1; i <= n; i++)); do
    port=$((PORT_BASE + i))
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" &&
      die "something already answers on 127.0.0.1:$port"
    # shellcheck disable=SC2086 # INSTANCE_ENV is a list of NAME=value words
    env DATABASE_URL="$(db_url "$db")" FLASHSALE_LISTEN="127.0.0.1:$port" \
      FLASHSALE_ADMIN_TOKEN="$ADMIN_TOKEN" FLASHSALE_SEED_DEMO=false \
      FLASHSALE_TRUSTED_PROXIES=127.0.0.1/32 RUST_LOG=warn $INSTANCE_ENV $extra \
      "$FLASHSALE_BIN" >"$OUT/$db-instance-$i.log" 2>&1 &
    INSTANCE_PIDS+=($!)
    wait_http "http://127.0.0.1:$port/readyz" "instance $i" "${INSTANCE_PIDS[-1]}"
  done
}

# wait_http URL WHAT [PID]: until URL answers 200.
wait_http() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true) == 200 ]]; do
    [[ -z ${3-} ]] || kill -0 "$3" 2>/dev/null || die "$2 exited; see its log in $OUT"
    ((SECONDS < deadline)) || die "$2 not ready within ${READY_TIMEOUT}s"
    sleep 0.2
  done
}

# cluster_view: GET /api/v1/cluster through HAProxy.
cluster_view() {
  curl -s --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "$FRONT/api/v1/cluster"
}

# wait_spread N: until the N instances hold every shard between them, each some.
wait_spread() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until cluster_view | python3 -c '
import json, sys
v = json.load(sys.stdin)
owners = set(v["shards"])
sys.exit(0 if None not in owners and len(owners) == int(sys.argv[1]) == len(v["instances"]) else 1)
' "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || die "the shards never spread over $1 instances"
    sleep 0.2
  done
}

# start_front N: HAProxy from deploy/haproxy.cfg with our ports and the first N
# servers, and haproxy-map keeping its shard map; returns once the map is complete.
start_front() {
  local n=$1
  : >"$WORK/shards.map"
  awk -v port="$PORT_BASE" -v n="$n" -v sock="$WORK/admin.sock" -v map="$WORK/shards.map" '
    /^[[:space:]]*bind / { print "    bind 127.0.0.1:" port; next }
    /^[[:space:]]*server / {
      i = index("abcdefghij", $2)
      if (i > n) next
      print "    server " $2 " 127.0.0.1:" port + i
      next
    }
    { gsub("/run/haproxy/admin.sock", sock); gsub("/etc/haproxy/flashsale-shards.map", map); print }
  ' "$ROOT/deploy/haproxy.cfg" >"$WORK/haproxy.cfg"
  haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy -c failed on $WORK/haproxy.cfg"
  haproxy -db -f "$WORK/haproxy.cfg" >"$OUT/haproxy-$n.log" 2>&1 &
  HAPROXY_PID=$!
  wait_http "$FRONT/readyz" "HAProxy" "$HAPROXY_PID"
  wait_spread "$n"
  FLASHSALE_ADMIN_TOKEN="$ADMIN_TOKEN" RUST_LOG=warn "$FLASHSALE_BIN" haproxy-map \
    --cluster-url "$FRONT" --socket "$WORK/admin.sock" --map "$WORK/shards.map" \
    --every-ms 500 >"$OUT/haproxy-map-$n.log" 2>&1 &
  MAPPER_PID=$!
  local deadline=$((SECONDS + 30))
  until [[ $(wc -l <"$WORK/shards.map") == 256 ]]; do
    kill -0 "$MAPPER_PID" 2>/dev/null || die "haproxy-map exited; see $OUT/haproxy-map-$n.log"
    ((SECONDS < deadline)) || die "the shard map never named an owner for every shard"
    sleep 0.2
  done
}

# make_shop: a store (enterprise: no rate limits) with PRODUCTS products of STOCK units,
# made over one keep-alive connection; sets PK and writes the product ids to
# $WORK/products.
make_shop() {
  PK=$(python3 - "$FRONT" "$ADMIN_TOKEN" "$PRODUCTS" "$STOCK" "$RUN_ID" "$WORK/products" <<'PY'
import http.client, json, sys, urllib.parse
front, token, count, stock, run, out = sys.argv[1:]
url = urllib.parse.urlsplit(front)
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
def post(path, bearer, body):
    conn.request("POST", path, json.dumps(body),
                 {"Authorization": "Bearer " + bearer, "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 201:
        sys.exit(f"POST {path} answered {r.status}: {data[:500]!r}")
    return json.loads(data)
store = post("/api/v1/stores", token, {"name": "cluster", "plan": "enterprise"})
admin = store["api_keys"]["admin"]
with open(out, "w") as f:
    for i in range(int(count)):
        p = post("/api/v1/products", admin, {"sku": f"c-{run}-{i}", "name": f"Drop {i}",
                 "price_cents": 1000, "currency": "EUR", "stock": int(stock)})
        f.write(p["id"] + "\n")
print(store["api_keys"]["storefront"])
PY
  ) || die "could not make the store and its products"
}

forwards() { # sum of flashsale_cluster_forwards_total{result="forwarded"} over the instances
  local i total=0 n
  for ((i = 1; i <= ${#INSTANCE_PIDS[@]}; i++)); do
    n=$(curl -s --max-time 5 "http://127.0.0.1:$((PORT_BASE + i))/metrics" |
      awk '/^flashsale_cluster_forwards_total\{result="forwarded"\}/ { s += $2 } END { printf "%d", s }')
    total=$((total + n))
  done
  echo "$total"
}

# run_wrk PHASE DURATION: checkouts by path through HAProxy; the result JSON on stdout.
run_wrk() {
  FS_PRODUCTS_FILE="$WORK/products" FS_STOREFRONT_KEY="$PK" FS_RUN="$RUN_ID" FS_PHASE="$1" \
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "$2" --timeout 10s -s "$HERE/cluster_checkout.lua" \
    "$FRONT" >"$OUT/wrk-$1.txt" 2>&1 || die "wrk failed; see $OUT/wrk-$1.txt"
  grep '^FSBENCH_RESULT ' "$OUT/wrk-$1.txt" | sed 's/^FSBENCH_RESULT //'
}

# measure N ROUND: one phase with N instances on a fresh database; a JSON line.
measure() {
  local n=$1 round=$2 db="r${2}n$1" committed fwd0 fwd1 result
  sql postgres "CREATE DATABASE $db" >/dev/null
  log "round $round, $n instance(s): starting"
  start_instances "$n" "$db"
  start_front "$n"
  make_shop
  log "round $round, $n instance(s): warm-up $WARMUP, then $DURATION of checkouts by path"
  run_wrk "warm-r$round-n$n" "$WARMUP" >/dev/null
  sleep 1
  fwd0=$(forwards)
  # CPU of PostgreSQL (postmaster and backends) and of the instances while wrk runs.
  local pg0 pg1 inst0 inst1
  if [[ $STATEMENTS == 1 ]]; then
    sql "$db" "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()" >/dev/null
  fi
  # shellcheck disable=SC2046 # one PID per word
  pg0=$(cpu $(postmaster_pids "$WORK/pg")) inst0=$(cpu "${INSTANCE_PIDS[@]}")
  result=$(run_wrk "r$round-n$n" "$DURATION")
  # shellcheck disable=SC2046
  pg1=$(cpu $(postmaster_pids "$WORK/pg")) inst1=$(cpu "${INSTANCE_PIDS[@]}")
  if [[ $STATEMENTS == 1 ]]; then
    psql "$(db_url "$db")" -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
        round((total_exec_time / calls)::numeric, 3) AS mean_ms, rows, wal_records, wal_bytes,
        left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
      FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25" >"$OUT/statements-r$round-n$n.txt"
  fi
  sleep 1
  # The orders of this run's checkouts, by their Idempotency-Key (see cluster_checkout.lua).
  committed=$(sql "$db" "SELECT count(*) FROM orders WHERE idempotency_key LIKE 'idem-$RUN_ID-r$round-n$n-%'")
  fwd1=$(forwards)
  stop_front
  stop_instances
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
n, rnd, committed, fwd = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
hz = float(sys.argv[8])
print(json.dumps({
    "pg_cpu_s": int(sys.argv[6]) / hz, "instances_cpu_s": int(sys.argv[7]) / hz,
    "round": rnd, "instances": n, "duration_s": r["duration_s"], "checkouts": r["requests"],
    "committed": committed, "committed_per_s": committed / r["duration_s"],
    "forwarded": fwd, "forwarded_share": fwd / max(r["requests"], 1),
    "outcomes": r["outcomes"], "latency_ms": r["latency_ms"], "socket_errors": r["socket_errors"],
}))
' "$result" "$n" "$round" "$committed" "$((fwd1 - fwd0))" \
    "$(spent "$pg0" "$pg1")" "$(spent "$inst0" "$inst1")" "$CLK_TCK" | tee -a "$OUT/phases.jsonl"
}

start_postgres
for ((round = 1; round <= ROUNDS; round++)); do
  measure 1 "$round" >/dev/null
  measure 3 "$round" >/dev/null
done

python3 - "$OUT/phases.jsonl" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
phases = [json.loads(l) for l in open(sys.argv[1])]
def total(n, k):
    return sum(p[k] for p in phases if p["instances"] == n)
def per_order_us(p, k):
    return 1e6 * p[k] / max(p["committed"], 1)
print(f"{'round':>5} {'inst':>4} {'checkouts':>9} {'committed/s':>11} {'forwarded':>9} {'share':>7} "
      f"{'p50 ms':>7} {'p99 ms':>7} {'pg us/order':>11} {'inst us/order':>13}")
for p in phases:
    print(f"{p['round']:>5} {p['instances']:>4} {p['checkouts']:>9} {p['committed_per_s']:>11.0f} "
          f"{p['forwarded']:>9} {100 * p['forwarded_share']:>6.2f}% {p['latency_ms']['p50']:>7.1f} {p['latency_ms']['p99']:>7.1f} "
          f"{per_order_us(p, 'pg_cpu_s'):>11.0f} {per_order_us(p, 'instances_cpu_s'):>13.0f}")
one = total(1, "committed") / total(1, "duration_s")
three = total(3, "committed") / total(3, "duration_s")
share = total(3, "forwarded") / max(total(3, "checkouts"), 1)
ratio = three / one
print(f"1 instance: {one:.0f} committed/s; 3 instances: {three:.0f} committed/s; "
      f"ratio {ratio:.2f}x (target >= 0.70x): {'PASS' if ratio >= 0.7 else 'FAIL'}")
for k, what in (("pg_cpu_s", "PostgreSQL"), ("instances_cpu_s", "instances")):
    cost = [1e6 * total(n, k) / max(total(n, "committed"), 1) for n in (1, 3)]
    print(f"CPU per committed order, {what}: {cost[0]:.0f} us with 1 instance, "
          f"{cost[1]:.0f} us with 3 ({cost[1] / max(cost[0], 1e-9):.2f}x)")
print(f"forwarded with 3 instances: {100 * share:.2f} % of checkouts by path "
      f"(target < 5 %): {'PASS' if share < 0.05 else 'FAIL'}")
EOF
