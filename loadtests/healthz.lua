-- wrk script: GET /healthz, the reference for the ratios. It does the same
-- client-side work per response as checkout.lua (a Lua response() callback
-- counting outcomes), so a ratio compares the server, not wrk.
--
-- Environment: FS_PHASE (label echoed in the result line, default "healthz").
-- Prints one line "FSBENCH_RESULT {json}" from done().

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local fs = dofile(dir .. "common.lua")

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

wrk.method = "GET"
wrk.path = "/healthz"

outcomes = {}

function response(status, headers, body)
  fs.add(outcomes, fs.outcome(status, body))
end

function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("outcomes") or {}) do
      fs.add(all, k, v)
    end
  end
  local duration_s = summary.duration / 1e6
  fs.emit({
    phase = fs.env("FS_PHASE", "healthz"),
    threads = #threads,
    duration_s = duration_s,
    requests = summary.requests,
    requests_per_s = summary.requests / duration_s,
    ok = all["200"] or 0,
    ok_per_s = (all["200"] or 0) / duration_s,
    outcomes = all,
    latency_ms = fs.latency_ms(latency),
    socket_errors = fs.socket_errors(summary),
  })
end
