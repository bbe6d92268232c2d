-- wrk script: POST /api/v1/products/{id}/checkout over many products (the path
-- names the product, so a router can place it), every request a new buyer
-- (fresh Idempotency-Key and customer_id, unique across wrk threads and runs).
-- Used by cluster.sh.
--
-- Environment (set by cluster.sh):
--   FS_PRODUCTS_FILE   file with one product id (prd_...) a line
--   FS_STOREFRONT_KEY  storefront key (pk_...)
--   FS_RUN             run-unique prefix for keys and customer ids
--   FS_PHASE           label echoed in the result line (default "cluster")
--
-- Prints one line "FSBENCH_RESULT {json}" from done() (see checkout.lua).

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local fs = dofile(dir .. "common.lua")

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

sent = 0
created = 0
outcomes = {}

local prefixes, products, tag

function init(args)
  products, prefixes = {}, {}
  local key = fs.env("FS_STOREFRONT_KEY")
  for line in io.lines(fs.env("FS_PRODUCTS_FILE")) do
    if line ~= "" then
      products[#products + 1] = line
      prefixes[#prefixes + 1] = fs.post_prefix("/api/v1/products/" .. line .. "/checkout", key)
    end
  end
  assert(#products > 0, "FS_PRODUCTS_FILE names no product")
  tag = fs.env("FS_RUN") .. "-" .. fs.env("FS_PHASE", "cluster") .. "-t" .. id .. "-"
end

function request()
  sent = sent + 1
  -- Each thread walks the products from its own offset: all of them stay busy.
  local i = (sent * 7 + id * 31) % #products + 1
  local k = tag .. sent
  return fs.checkout_request(prefixes[i], products[i], "idem-" .. k, "cust-" .. k)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  end
  fs.add(outcomes, fs.outcome(status, body))
end

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
    phase = fs.env("FS_PHASE", "cluster"),
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
