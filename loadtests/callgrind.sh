#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: what a request costs the
# server from socket to socket, every thread of the process included (HTTP workers,
# actors, the order writer, the database driver), PostgreSQL excluded (a child process,
# not traced). Unlike CPU time, an instruction count does not depend on what else runs
# on the machine, so two binaries measured at different times compare fairly.
#
# For each binary given (default: the current tree's release binary), one server under
# callgrind with a private PostgreSQL; instrumentation is on only while wrk runs a
# phase, and each phase is dumped on its own:
#   healthz    GET /healthz, the reference
#   checkout   the hot SKU (never sells out): instructions per committed checkout
#   refusal    a product sold out just before: instructions per refusal
# Prints one line per binary and phase: requests, 201s, instructions per request and
# per 201 (less the server's idle work over as long: an idle dump comes first), and the
# mean batch size (orders per write transaction) the phase ran at;
# the dumps (callgrind_annotate them for the call tree) stay in the results dir.
#
# Usage:   loadtests/callgrind.sh [BIN ...]
# Knobs:   CG_SECONDS=8 CG_CONNECTIONS=32 CG_LISTEN=127.0.0.1:18090 CG_SOLDOUT_STOCK=200
#          RESULTS_ROOT=dir (default loadtests/results)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=loadtests/lib.sh
. "$HERE/lib.sh"

export CG_SECONDS=${CG_SECONDS:-8}
CG_CONNECTIONS=${CG_CONNECTIONS:-32}
CG_LISTEN=${CG_LISTEN:-127.0.0.1:18090}
CG_SOLDOUT_STOCK=${CG_SOLDOUT_STOCK:-200}
check_listen CG_LISTEN "$CG_LISTEN"
is_pos "$CG_SECONDS" || die "CG_SECONDS must be a positive integer"
is_pos "$CG_CONNECTIONS" || die "CG_CONNECTIONS must be a positive integer"
command -v valgrind >/dev/null || die "valgrind is required (apt-get install valgrind)"
check_tools
# The server answers slowly under valgrind: give it time.
READY_TIMEOUT=${READY_TIMEOUT:-300}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
CONNECTIONS=$CG_CONNECTIONS

BINS=("$@")
((${#BINS[@]} > 0)) || BINS=("$FLASHSALE_BIN")
make_results_dir -callgrind

# batches METRICS_TEXT: "<orders> <batches>" committed so far, from /metrics.
batches() {
  awk '/^flashsale_writer_batch_size_sum/ { s = $2 } /^flashsale_writer_batch_size_count/ { c = $2 }
    END { printf "%d %d\n", s, c }' <<<"$1"
}

# counted LABEL PHASE CMD ...: runs CMD with callgrind counting; the dump goes to
# $OUT/callgrind.LABEL.PHASE.
counted() {
  local label=$1 phase=$2
  shift 2
  callgrind_control -z "$SERVER_PID" >/dev/null
  callgrind_control -i on "$SERVER_PID" >/dev/null
  "$@"
  callgrind_control -i off "$SERVER_PID" >/dev/null
  callgrind_control -d "$phase" "$SERVER_PID" >/dev/null
  # The dump is written as callgrind.out.PID.N (N: the dump's number).
  sleep 1
  mv "$(ls -t "$OUT/cg-$label/callgrind.out.$SERVER_PID".* | head -n 1)" "$OUT/callgrind.$label.$phase"
}

# measure LABEL PHASE SCRIPT [VAR=VALUE ...]: one wrk phase with callgrind counting,
# less what the server does meanwhile without requests (its probes and timers: the
# idle dump, as long as a phase), which would otherwise count as requests' work.
measure() {
  local label=$1 phase=$2 script=$3 before after
  shift 3
  settle
  before=$(batches "$(curl -sS --max-time 30 "$BASE/metrics")")
  counted "$label" "$phase" run_wrk "$label-$phase" "$script" "${CG_SECONDS}s" "$@"
  after=$(batches "$(curl -sS --max-time 30 "$BASE/metrics")")
  python3 - "$OUT/$label-$phase.json" "$OUT/callgrind.$label.$phase" "$before" "$after" "$label" \
    "$phase" "$OUT/summary.txt" "$OUT/callgrind.$label.idle" <<'PY'
import json, os, re, sys

def totals(path):
    for line in open(path, errors="replace"):
        m = re.match(r"^totals:\s*(\d+)", line)
        if m:
            return int(m.group(1))
    return 0

result = json.load(open(sys.argv[1]))
# The idle rate over the phase's own duration is taken off.
idle_s = float(os.environ["CG_SECONDS"])
idle = totals(sys.argv[8]) / idle_s * result.get("duration_s", idle_s)
ir = max(totals(sys.argv[2]) - idle, 0)
(o0, b0), (o1, b1) = (map(int, s.split()) for s in sys.argv[3:5])
requests = result.get("requests", 0)
created = result.get("created", 0)
batch = (o1 - o0) / (b1 - b0) if b1 > b0 else 0
line = (f"{sys.argv[5]:>8} {sys.argv[6]:<9} requests {requests:>6}  201s {created:>6}  "
      f"Ir/request {ir / max(requests, 1):>10,.0f}  Ir/201 {ir / created if created else 0:>10,.0f}  "
      f"orders/batch {batch:.1f}")
print(line)
with open(sys.argv[7], "a") as f:
    print(line, file=f)
PY
}

i=0
for bin in "${BINS[@]}"; do
  i=$((i + 1))
  label="bin$i"
  [[ -x $bin ]] || die "not an executable: $bin"
  mkdir -p "$OUT/cg-$label"
  wrapper="$OUT/cg-$label/run.sh"
  # Started through a wrapper so that launch_server's environment reaches it; exec
  # keeps the pid, which callgrind_control and the CPU accounting use.
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no --trace-children=no --callgrind-out-file=%s/callgrind.out.%%p %s\n' \
    "$OUT/cg-$label" "$bin" >"$wrapper"
  chmod +x "$wrapper"
  log "$label: $bin"
  launch_server "$label" "$wrapper" "$CG_LISTEN" "$OUT/server-$label.log"
  wait_ready "$label"
  create_store
  hot=$(create_product hot-1 Hot 1000000000)
  sold=$(create_product soldout-1 "Sold out" "$CG_SOLDOUT_STOCK")
  env_=(FS_STOREFRONT_KEY="$PK")
  # Warm up (JIT-free, but caches, pools and actors start), then sell the product out.
  run_wrk "$label-warmup" checkout.lua 3s "${env_[@]}" FS_PRODUCT_ID="$hot" >/dev/null
  DONE_DIR=$(mktemp -d /tmp/flashsale-cg-done.XXXXXX)
  run_wrk "$label-sellout" sellout.lua 120s "${env_[@]}" FS_PRODUCT_ID="$sold" \
    FS_TOTAL=$((2 * CG_SOLDOUT_STOCK)) FS_STOCK="$CG_SOLDOUT_STOCK" FS_THREADS="$THREADS" \
    FS_DONE_DIR="$DONE_DIR"
  rm -rf "$DONE_DIR"
  DONE_DIR=""
  settle
  counted "$label" idle sleep "$CG_SECONDS"
  measure "$label" healthz healthz.lua
  measure "$label" checkout checkout.lua "${env_[@]}" FS_PRODUCT_ID="$hot"
  measure "$label" refusal checkout.lua "${env_[@]}" FS_PRODUCT_ID="$sold"
  stop_server "$SERVER_PID" "$STOP_TIMEOUT" || warn "$label did not stop in time"
done
log "summary in $OUT/summary.txt"
