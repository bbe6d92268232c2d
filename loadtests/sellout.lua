-- wrk script: the sell-out. FS_TOTAL buyers (default 100000), each sending
-- exactly one checkout (quantity 1, fresh Idempotency-Key and customer_id)
-- for a product with FS_STOCK units (default 10000).
--
-- wrk has no request-count limit, so each thread sends its share of the
-- buyers and then stops itself:
--   * thread i (1..FS_THREADS) owns floor(total/threads) buyers, plus one if
--     i <= total % threads;
--   * once it has sent its share, further request() calls (connections that
--     are free while the last checkouts are still in flight) get a cheap
--     GET /healthz filler; fillers answer 200, which a checkout never does,
--     so response() tells them apart by status;
--   * when all of its checkouts are answered, it calls wrk.thread:stop()
--     and drops a marker file in FS_DONE_DIR; the last thread to finish
--     sends SIGINT to wrk itself, which ends wrk's sleep(duration) early
--     (-d is only the upper bound).
-- A checkout lost to a socket error is never answered; then the thread runs
-- until -d and the result shows answered < total.
--
-- Time to sell out = (wall-clock time of the FS_STOCK-th 201, over all
-- threads) - (first request of any thread), from LuaJIT ffi gettimeofday.
--
-- Environment: FS_PRODUCT_ID, FS_STOREFRONT_KEY, FS_RUN, FS_TOTAL, FS_STOCK,
-- FS_THREADS (must equal wrk -t), FS_DONE_DIR (optional), FS_PHASE.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local fs = dofile(dir .. "common.lua")

-- main state ---------------------------------------------------------------
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

-- thread state -------------------------------------------------------------
sent = 0          -- checkouts sent by this thread
answered = 0      -- checkouts answered (any status)
fillers = 0       -- /healthz fillers answered
share = 0
outcomes = {}
created_ms = {}   -- wall-clock ms of every 201 this thread saw
first_ms = -1     -- first request() of this thread
last_ms = -1      -- last checkout answer of this thread
finished = false

local prefix, product, tag, filler, done_dir, nthreads

function init(args)
  local total = tonumber(fs.env("FS_TOTAL", "100000"))
  nthreads = tonumber(fs.env("FS_THREADS", "1"))
  share = math.floor(total / nthreads)
  if id <= total % nthreads then
    share = share + 1
  end
  product = fs.env("FS_PRODUCT_ID")
  prefix = fs.post_prefix("/api/v1/checkout", fs.env("FS_STOREFRONT_KEY"))
  tag = fs.env("FS_RUN") .. "-" .. fs.env("FS_PHASE", "sellout") .. "-t" .. id .. "-"
  done_dir = os.getenv("FS_DONE_DIR")
  if done_dir == "" then
    done_dir = nil
  end
  filler = wrk.format("GET", "/healthz")
end

-- wrk calls request() once in the first thread's state before any thread
-- runs, only to check that the request parses (script_verify_request); that
-- request is never sent. Hand it a filler so that no buyer is lost.
local verified = false

function request()
  if not verified and id == 1 then
    verified = true
    return filler
  end
  if first_ms < 0 then
    first_ms = fs.now_ms()
  end
  if sent >= share then
    return filler
  end
  sent = sent + 1
  local k = tag .. sent
  return fs.checkout_request(prefix, product, "idem-" .. k, "cust-" .. k)
end

local function all_finished()
  for i = 1, nthreads do
    local f = io.open(done_dir .. "/done." .. i, "r")
    if not f then
      return false
    end
    f:close()
  end
  return true
end

local function finish()
  finished = true
  wrk.thread:stop()
  if done_dir then
    local f = io.open(done_dir .. "/done." .. id, "w")
    if f then
      f:write("done\n")
      f:close()
    end
    if all_finished() then
      fs.interrupt_wrk()
    end
  end
end

function response(status, headers, body)
  if finished then
    return
  end
  if status == 200 then
    fillers = fillers + 1
    return
  end
  local now = fs.now_ms()
  answered = answered + 1
  last_ms = now
  if status == 201 then
    created_ms[#created_ms + 1] = now
  end
  fs.add(outcomes, fs.outcome(status, body))
  if answered >= share then
    finish()
  end
end

-- main state ---------------------------------------------------------------
function done(summary, latency, requests)
  local stock = tonumber(fs.env("FS_STOCK", "10000"))
  local expected_threads = tonumber(fs.env("FS_THREADS", "1"))
  local all, times = {}, {}
  local start, last = math.huge, -1
  local total_sent, total_answered, total_fillers, total_share = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + (t:get("sent") or 0)
    total_answered = total_answered + (t:get("answered") or 0)
    total_fillers = total_fillers + (t:get("fillers") or 0)
    total_share = total_share + (t:get("share") or 0)
    for k, v in pairs(t:get("outcomes") or {}) do
      fs.add(all, k, v)
    end
    for _, ms in ipairs(t:get("created_ms") or {}) do
      times[#times + 1] = ms
    end
    local f, l = t:get("first_ms") or -1, t:get("last_ms") or -1
    if f >= 0 and f < start then
      start = f
    end
    if l > last then
      last = l
    end
  end
  table.sort(times)
  local result = {
    phase = fs.env("FS_PHASE", "sellout"),
    threads = #threads,
    threads_expected = expected_threads,
    stock = stock,
    buyers = total_share,
    sent = total_sent,
    answered = total_answered,
    fillers = total_fillers,
    created = #times,
    outcomes = all,
    sold_out = #times >= stock,
    wrk_duration_s = summary.duration / 1e6,
    latency_ms_all_requests = fs.latency_ms(latency),
    socket_errors = fs.socket_errors(summary),
  }
  if start < math.huge then
    if #times >= stock and stock > 0 then
      result.sellout_ms = times[stock] - start
    end
    if #times > 0 then
      result.last_201_ms = times[#times] - start
    end
    if last >= 0 then
      result.all_answered_ms = last - start
      result.answered_per_s = total_answered / ((last - start) / 1000)
    end
  end
  fs.emit(result)
end
