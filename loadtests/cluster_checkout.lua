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
  fs.count_response(status, body)
end

function done(summary, latency, requests)
  fs.emit_checkouts(threads, fs.env("FS_PHASE", "cluster"), summary, latency)
end
