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
  fs.count_response(status, body)
end

-- main state ---------------------------------------------------------------
function done(summary, latency, requests)
  fs.emit_checkouts(threads, fs.env("FS_PHASE", "checkout"), summary, latency)
end
