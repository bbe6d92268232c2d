# shellcheck shell=bash
# Shared by loadtests/bench.sh, loadtests/cluster.sh and loadtests/locust/run.sh (sourced,
# not run): stopping a server, and CPU accounting from /proc.

# stop_server PID TIMEOUT_SECS
# SIGTERM, then up to TIMEOUT_SECS for the server to exit (it drains and commits what is in
# flight), then SIGKILL. Sets SERVER_STATUS to its exit status ("killed" if it had to be);
# returns 1 if it had to be killed. (Not for `$(…)`: only this shell can wait for its child.)
# shellcheck disable=SC2034 # SERVER_STATUS is read by the scripts that source this
stop_server() {
  local pid=$1 timeout=$2 waited=0
  SERVER_STATUS=0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((waited < timeout * 10)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    SERVER_STATUS=killed
    return 1
  fi
  wait "$pid" 2>/dev/null || SERVER_STATUS=$?
}

# -------------------------------------------------------- CPU accounting ---
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

# postmaster_pids PGDATA: the postmaster of the PostgreSQL whose data directory is PGDATA
# (from its postmaster.pid) and its children, the backends; nothing if it is not running.
postmaster_pids() {
  local pm
  [[ -r $1/postmaster.pid ]] || return 0
  pm=$(head -n 1 "$1/postmaster.pid")
  [[ $pm =~ ^[0-9]+$ ]] || return 0
  echo "$pm"
  pgrep -P "$pm" || true
}

# spent BEFORE AFTER: the ticks spent between two `cpu` readings by the processes
# in AFTER (all of them for one that started in between; one that ended in between
# is not counted).
spent() {
  awk 'NR == FNR { before[$1] = $2; next } { total += $2 - before[$1] } END { print total + 0 }' \
    <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}
