-- wrk script: POST /api/v1/checkout for one product, every request a new
-- buyer (fresh Idempotency-Key and customer_id, unique across wrk threads
-- and across runs). Used for the hot-SKU phase (stock too big to sell out)
-- and for the refusal phase (product already sold out, expecting 409).
--
-- Environment (set by bench.sh):
--   FS_PRODUCT_ID      product to buy (prd_...)
--   FS_STOREFRONT_KEY  storefront key (pk_...)
--   FS_RUN             run-unique prefix for keys and customer ids
--   FS_PHASE           label echoed in the result line (default "checkout")
--
-- Prints one line "FSBENCH_RESULT {json}" from done(): requests, duration,
-- counts by outcome ("201", "409 sold_out", "503 overloaded", ...),
-- committed (201) per second and wrk's latency percentiles.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local fs = dofile(dir .. "common.lua")

-- main state ---------------------------------------------------------------
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

-- thread state -------------------------------------------------------------
-- Globals (not locals) so that done() can read them with thread:get.
sent = 0
created = 0
outcomes = {}

local prefix, product, tag

function init(args)
  product = fs.env("FS_PRODUCT_ID")
  prefix = fs.post_prefix("/api/v1/checkout", fs.env("FS_STOREFRONT_KEY"))
  tag = fs.env("FS_RUN") .. "-" .. fs.env("FS_PHASE", "checkout") .. "-t" .. id .. "-"
end

-- Note: wrk calls request() once in the first thread before the run to check
-- that the request parses, and never sends it; its key is simply unused, so
-- "sent" can exceed "requests" by one.
function request()
  sent = sent + 1
  local k = tag .. sent
  return fs.checkout_request(prefix, product, "idem-" .. k, "cust-" .. k)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  end
  fs.add(outcomes, fs.outcome(status, body))
end

-- main state ---------------------------------------------------------------
function done(summary, latency, requests)
  local total_created, total_sent, all = 0, 0, {}
  for _, t in ipairs(threads) do
    total_created = total_created + (t:get("created") or 0)
    total_sent = total_sent + (t:get("sent") or 0)
    for k, v in pairs(t:get("outcomes") or {}) do
      fs.add(all, k, v)
    end
  end
  local duration_s = summary.duration / 1e6
  fs.emit({
    phase = fs.env("FS_PHASE", "checkout"),
    threads = #threads,
    duration_s = duration_s,
    requests = summary.requests,
    requests_per_s = summary.requests / duration_s,
    sent = total_sent,
    created = total_created,
    created_per_s = total_created / duration_s,
    outcomes = all,
    latency_ms = fs.latency_ms(latency),
    socket_errors = fs.socket_errors(summary),
  })
end
