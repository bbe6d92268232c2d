-- wrk script: GET one read path with the storefront key, for the read phases
-- (product-get, product-304, list-50). It does the same client-side work per
-- response as healthz.lua (a Lua response() callback counting outcomes), plus
-- two cheap counters (body bytes, gzip-encoded responses).
--
-- Environment (set by bench.sh):
--   FS_PATH            request path, e.g. /api/v1/products/prd_... or
--                      /api/v1/products?limit=50
--   FS_STOREFRONT_KEY  storefront key (pk_...)
--   FS_IF_NONE_MATCH   optional: sent as If-None-Match (an ETag, quotes included)
--   FS_ACCEPT_ENCODING optional: sent as Accept-Encoding (e.g. gzip)
--   FS_EXPECT          the status that counts as success (default 200; 304
--                      for the conditional GET)
--   FS_PHASE           label echoed in the result line (default "read")
--
-- Prints one line "FSBENCH_RESULT {json}" from done(): requests, duration,
-- counts by outcome ("200", "304", "429 rate_limited", ...), successes per
-- second, bytes (wire: status line + headers + body, from wrk) and body bytes
-- per response, gzip-encoded responses, and wrk's latency percentiles.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local fs = dofile(dir .. "common.lua")

-- main state ---------------------------------------------------------------
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

-- The request is the same every time: let wrk build it once.
wrk.method = "GET"
wrk.path = fs.env("FS_PATH")
wrk.headers["Authorization"] = "Bearer " .. fs.env("FS_STOREFRONT_KEY")
wrk.headers["Accept"] = "application/json"
do
  local inm = os.getenv("FS_IF_NONE_MATCH")
  if inm and inm ~= "" then
    wrk.headers["If-None-Match"] = inm
  end
  local ae = os.getenv("FS_ACCEPT_ENCODING")
  if ae and ae ~= "" then
    wrk.headers["Accept-Encoding"] = ae
  end
end

-- thread state -------------------------------------------------------------
-- Globals (not locals) so that done() can read them with thread:get.
outcomes = {}
body_bytes = 0
gzipped = 0

function response(status, headers, body)
  fs.add(outcomes, fs.outcome(status, body))
  if body then
    body_bytes = body_bytes + #body
  end
  local ce = headers["content-encoding"] or headers["Content-Encoding"]
  if ce == "gzip" then
    gzipped = gzipped + 1
  end
end

-- main state ---------------------------------------------------------------
function done(summary, latency, requests)
  local all, total_body, total_gzip = {}, 0, 0
  for _, t in ipairs(threads) do
    total_body = total_body + (t:get("body_bytes") or 0)
    total_gzip = total_gzip + (t:get("gzipped") or 0)
    for k, v in pairs(t:get("outcomes") or {}) do
      fs.add(all, k, v)
    end
  end
  local expect = fs.env("FS_EXPECT", "200")
  local duration_s = summary.duration / 1e6
  local answered = 0
  for _, v in pairs(all) do
    answered = answered + v
  end
  local result = {
    phase = fs.env("FS_PHASE", "read"),
    path = fs.env("FS_PATH"),
    expect = tonumber(expect),
    threads = #threads,
    duration_s = duration_s,
    requests = summary.requests,
    requests_per_s = summary.requests / duration_s,
    ok = all[expect] or 0,
    ok_per_s = (all[expect] or 0) / duration_s,
    outcomes = all,
    answered = answered,
    bytes = summary.bytes,
    transfer_per_s = summary.bytes / duration_s,
    body_bytes = total_body,
    gzipped = total_gzip,
    latency_ms = fs.latency_ms(latency),
    socket_errors = fs.socket_errors(summary),
  }
  if summary.requests > 0 then
    result.mean_wire_bytes = summary.bytes / summary.requests
  end
  if answered > 0 then
    result.mean_body_bytes = total_body / answered
  end
  fs.emit(result)
end
