#!/usr/bin/env bash
# A/B benchmark, run by `loadtests/bench.sh --baseline [REV]` (REV: any git revision,
# default main). A is REV's release binary, built in a git worktree under
# BASELINE_DIR with its own, reused CARGO_TARGET_DIR; B is the current tree's
# (cargo build --release unless SKIP_BUILD=1). Both servers run at once, each on its
# own port with its own private PostgreSQL in a fresh temp dir, and get the same wrk
# load in turns, round by round: A, B, A, B ... Each turn is a /healthz reference
# round, then the phase's round, on the same server.
#   checkout   the hot SKU: committed checkouts/s, p50/p99, CPU per committed order
#              (server and PostgreSQL, from /proc), WAL bytes per order, orders/DB tx
#   refusal    checkouts of a product sold out just before (AB_SOLDOUT_STOCK units):
#              refusals/s, p50/p99, CPU per refusal
# The summary gives each figure for A and for B and the ratio B/A; the A/A check
# (REV = the current commit) shows the noise floor.
#
# Knobs (environment), besides bench.sh's DURATION ROUNDS CONNECTIONS THREADS WARMUP
# BENCH_LISTEN SKIP_BUILD FLASHSALE_BIN READY_TIMEOUT STOP_TIMEOUT SETTLE_TIMEOUT
# WRK_TIMEOUT SELLOUT_TIMEOUT KEEP_DATA RESULTS_ROOT STRICT (see loadtests/README.md):
#   BASELINE_LISTEN=127.0.0.1:<BENCH_LISTEN port + 1>   where A listens (B: BENCH_LISTEN)
#   BASELINE_DIR=target/bench-baseline   worktree, target dir and binaries by commit
#   BASELINE_BIN=path                    use this binary as A instead of building REV
#   AB_PHASES="checkout refusal"         the phases, in order
#   AB_SOLDOUT_STOCK=1000                units sold out before the refusal rounds
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=loadtests/lib.sh
. "$HERE/lib.sh"

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *) die "unexpected argument: $1 (usage: loadtests/bench.sh --baseline [REV]; settings are environment variables)" ;;
esac

BASELINE_REV=${BASELINE_REV:-main}
BASELINE_DIR=${BASELINE_DIR:-$ROOT/target/bench-baseline}
BASELINE_BIN=${BASELINE_BIN:-}
AB_PHASES=${AB_PHASES:-checkout refusal}
AB_SOLDOUT_STOCK=${AB_SOLDOUT_STOCK:-1000}
check_settings
port=${BENCH_LISTEN##*:}
BASELINE_LISTEN=${BASELINE_LISTEN:-${BENCH_LISTEN%:*}:$((port + 1))}
check_listen BASELINE_LISTEN "$BASELINE_LISTEN"
[[ $BASELINE_LISTEN != "$BENCH_LISTEN" ]] || die "BASELINE_LISTEN must differ from BENCH_LISTEN ($BENCH_LISTEN)"
is_pos "$AB_SOLDOUT_STOCK" || die "AB_SOLDOUT_STOCK must be a positive integer, got '$AB_SOLDOUT_STOCK'"
read -r -a PHASES <<<"$AB_PHASES"
((${#PHASES[@]} > 0)) || die "AB_PHASES is empty"
if [[ -n ${DATABASE_URL:-} ]]; then
  die "an A/B run needs a private PostgreSQL per binary (each runs its own migrations): unset DATABASE_URL"
fi
check_tools

# ---------------------------------------------------------------- phases ----
# A phase NAME is ab_round_NAME LABEL ROUND (one wrk round named NAME-LABEL-rROUND on
# the current server), optionally ab_prepare_NAME LABEL (once per server, before the
# rounds). ab_summary.py's PHASES says what a phase counts; add a phase there too.
declare -A AB_SK=() AB_PK=() AB_HOT=() AB_SOLD=()

# shellcheck disable=SC2317 # called by name from ab_phase
ab_round_checkout() {
  run_wrk "checkout-$1-r$2" checkout.lua "$ROUND_DURATION" FS_STOREFRONT_KEY="${AB_PK[$1]}" \
    FS_PRODUCT_ID="${AB_HOT[$1]}"
}

# Sells out a product of AB_SOLDOUT_STOCK units with twice as many one-shot buyers,
# then checks that GET /stock says 0 left.
# shellcheck disable=SC2317 # called by name from ab_phase
ab_prepare_refusal() {
  local label=$1 stock
  SK=${AB_SK[$label]}
  AB_SOLD[$label]=$(create_product "soldout-1" "Sold out" "$AB_SOLDOUT_STOCK")
  DONE_DIR=$(mktemp -d /tmp/flashsale-bench-done.XXXXXX)
  run_wrk "sellout-$label" sellout.lua "$SELLOUT_TIMEOUT" FS_STOREFRONT_KEY="${AB_PK[$label]}" \
    FS_PRODUCT_ID="${AB_SOLD[$label]}" FS_TOTAL=$((2 * AB_SOLDOUT_STOCK)) FS_STOCK="$AB_SOLDOUT_STOCK" \
    FS_THREADS="$THREADS" FS_DONE_DIR="$DONE_DIR"
  rm -rf "$DONE_DIR"
  DONE_DIR=""
  sleep 1.2 # GET /stock may lag by up to 1 s
  api GET "/api/v1/products/${AB_SOLD[$label]}/stock" "${AB_PK[$label]}" 200 >"$OUT/sellout-$label-stock.json"
  stock=$(json_get stock_available <"$OUT/sellout-$label-stock.json")
  [[ $stock == 0 ]] || die "server $label: the sold-out product has stock_available $stock, expected 0"
}

# shellcheck disable=SC2317 # called by name from ab_phase
ab_round_refusal() {
  run_wrk "refusal-$1-r$2" checkout.lua "$ROUND_DURATION" FS_STOREFRONT_KEY="${AB_PK[$1]}" \
    FS_PRODUCT_ID="${AB_SOLD[$1]}"
}

for p in "${PHASES[@]}"; do
  declare -F "ab_round_$p" >/dev/null || die "unknown phase '$p' in AB_PHASES (known: checkout refusal)"
done

# ab_phase NAME: prepares both servers, then ROUNDS rounds of (A: /healthz, NAME; B:
# /healthz, NAME), each turn after the servers and databases went quiet; /metrics of
# both around the rounds; merges each server's rounds into NAME-LABEL.json and
# healthz-NAME-LABEL.json.
ab_phase() {
  local phase=$1 r label kind files
  for label in A B; do
    use_server "$label"
    if declare -F "ab_prepare_$phase" >/dev/null; then "ab_prepare_$phase" "$label"; fi
    scrape_metrics "metrics-$phase-$label-before.txt"
  done
  for ((r = 1; r <= ROUNDS; r++)); do
    for label in A B; do
      use_server "$label"
      settle
      run_wrk "healthz-$phase-$label-r$r" healthz.lua "$ROUND_DURATION"
      "ab_round_$phase" "$label" "$r"
    done
  done
  for label in A B; do
    use_server "$label"
    scrape_metrics "metrics-$phase-$label-after.txt"
    for kind in "$phase" "healthz-$phase"; do
      files=()
      for ((r = 1; r <= ROUNDS; r++)); do files+=("$OUT/$kind-$label-r$r.json"); done
      python3 "$HERE/merge_rounds.py" "$OUT/$kind-$label.json" "${files[@]}" ||
        die "could not merge the rounds of $kind on server $label"
    done
  done
}

# ---------------------------------------------------------------- builds ----
# build_baseline SHA: sets A_BIN to REV's release binary. Kept by commit in
# BASELINE_DIR/bin, so a second run with the same REV builds nothing; else built in
# the git worktree BASELINE_DIR/flashsale-baseline (made once, then checked out at
# SHA) with CARGO_TARGET_DIR=BASELINE_DIR/target, which is kept between runs and
# seeded from the current tree's target/release the first time (the dependencies are
# the same build, so only what changed is compiled).
build_baseline() {
  local sha=$1 dir wt target cached top
  mkdir -p "$BASELINE_DIR/bin" || die "cannot create $BASELINE_DIR"
  dir=$(cd "$BASELINE_DIR" && pwd -P)
  wt=$dir/flashsale-baseline target=$dir/target cached=$dir/bin/flashsale-$sha
  # Two runs at once must not check out or build in the same worktree.
  exec 9>"$dir/lock"
  flock -w 1800 9 || die "another bench run held $dir/lock for 30 minutes"
  if [[ -x $cached ]]; then
    log "baseline ${sha:0:12}: reusing $cached (built before)"
  else
    # Only a directory that is itself the top of a worktree is reused: git -C on
    # anything else inside this repository would check out in the current tree.
    top=$(git -C "$wt" rev-parse --show-toplevel 2>/dev/null || true)
    if [[ -d $wt && $top == "$wt" ]]; then
      log "baseline ${sha:0:12}: checking out in $wt"
      git -C "$wt" checkout -q --detach --force "$sha" || die "git checkout $sha failed in $wt"
      git -C "$wt" clean -fdq || die "git clean failed in $wt"
    else
      log "baseline ${sha:0:12}: git worktree add $wt"
      rm -rf "$wt"
      git -C "$ROOT" worktree prune
      git -C "$ROOT" worktree add -q --detach --force "$wt" "$sha" || die "git worktree add failed"
    fi
    if [[ ! -d $target/release && -d $ROOT/target/release ]]; then
      log "seeding $target/release from $ROOT/target/release"
      mkdir -p "$target"
      cp -a "$ROOT/target/release" "$target/" || die "could not copy $ROOT/target/release"
    fi
    CARGO_TARGET_DIR=$target build_release "$wt"
    { cp "$target/release/flashsale" "$cached.tmp" && mv "$cached.tmp" "$cached"; } ||
      die "could not keep the baseline binary as $cached"
  fi
  exec 9>&-
  A_BIN=$cached
}

# ------------------------------------------------------------------- run ----
BASELINE_SHA=$(git -C "$ROOT" rev-parse --verify --quiet "$BASELINE_REV^{commit}") ||
  die "'$BASELINE_REV' is not a git revision of $ROOT"
[[ $SKIP_BUILD == 1 ]] || build_release "$ROOT"
B_BIN=$FLASHSALE_BIN
[[ -x $B_BIN ]] || die "server binary not found or not executable: $B_BIN"
if [[ -n $BASELINE_BIN ]]; then
  [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN is not an executable: $BASELINE_BIN"
  A_BIN=$BASELINE_BIN
else
  build_baseline "$BASELINE_SHA"
fi

make_results_dir -ab
launch_server A "$A_BIN" "$BASELINE_LISTEN" "$OUT/server-A.log"
launch_server B "$B_BIN" "$BENCH_LISTEN" "$OUT/server-B.log"
wait_ready A
wait_ready B
for label in A B; do
  use_server "$label"
  create_store
  AB_SK[$label]=$SK AB_PK[$label]=$PK
  AB_HOT[$label]=$(create_product hot-1 Hot 1000000000)
done
write_env "database=private PostgreSQL per server (fresh temp dirs)" \
  "mode=ab" "phases=${PHASES[*]}" "round_duration=$ROUND_DURATION" \
  "baseline_rev=$BASELINE_REV" "baseline_sha=$BASELINE_SHA" \
  "baseline_bin=$A_BIN$([[ -n $BASELINE_BIN ]] && echo ' (BASELINE_BIN)')" \
  "baseline_listen=$BASELINE_LISTEN" "current_bin=$B_BIN" "soldout_stock=$AB_SOLDOUT_STOCK"

for label in A B; do
  use_server "$label"
  steady_wal
done
if [[ $WARMUP != 0 ]]; then
  for label in A B; do
    use_server "$label"
    run_wrk "warmup-$label" checkout.lua "$WARMUP" FS_STOREFRONT_KEY="${AB_PK[$label]}" \
      FS_PRODUCT_ID="${AB_HOT[$label]}"
  done
fi
for p in "${PHASES[@]}"; do ab_phase "$p"; done

summary_rc=0
python3 "$HERE/ab_summary.py" "$OUT" "$STRICT" || summary_rc=$?
if ((summary_rc != 0)); then
  [[ $STRICT == 1 ]] || die "could not write the summary"
  log "STRICT=1: a check failed"
fi
exit "$summary_rc"
