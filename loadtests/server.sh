# shellcheck shell=bash
# Shared by loadtests/bench.sh and loadtests/locust/run.sh (sourced, not run).

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
