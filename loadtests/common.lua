-- Shared helpers for the flashsale wrk scripts (loaded with dofile by the
-- phase scripts; never passed to wrk -s directly).
--
-- wrk 4.1 runs one LuaJIT state per wrk thread plus one "main" state:
--   setup(thread)        main state, once per thread, before the thread starts
--   init(args)           thread state
--   request()/response() thread state, hot path
--   done(summary, latency, requests)  main state, after all threads joined
-- Values move between states only through thread:set / thread:get (numbers,
-- strings, booleans and tables of those).
--
-- Everything a script needs from bench.sh arrives through environment
-- variables (FS_*), so the scripts can also be run by hand; see README.md.

local ffi = require("ffi")

ffi.cdef [[
struct fsb_timeval { long tv_sec; long tv_usec; };
int gettimeofday(struct fsb_timeval *tv, void *tz);
int getpid(void);
int kill(int pid, int sig);
]]

local M = {}

local tv = ffi.new("struct fsb_timeval")

-- Wall-clock milliseconds (fractional), comparable across wrk threads.
function M.now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end

function M.env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then
    if default == nil then
      error(name .. " must be set (bench.sh sets it)")
    end
    return default
  end
  return v
end

-- Ask wrk's main thread to stop early: its sleep(duration) is interrupted
-- by SIGINT, after which it joins the threads and prints the results as
-- usual. kill() on the process id is delivered to the main thread (the
-- thread-group leader) because it does not block SIGINT.
function M.interrupt_wrk()
  ffi.C.kill(ffi.C.getpid(), 2)
end

-- Raw request prefix for a JSON POST; Content-Length, the idempotency key
-- and the body are appended per request. Built once per thread in init():
-- much cheaper than wrk.format() on the hot path.
function M.post_prefix(path, bearer)
  local host = wrk.headers["Host"] or (wrk.host .. (wrk.port and (":" .. wrk.port) or ""))
  return "POST " .. path .. " HTTP/1.1\r\n"
    .. "Host: " .. host .. "\r\n"
    .. "Authorization: Bearer " .. bearer .. "\r\n"
    .. "Content-Type: application/json\r\n"
    .. "Accept: application/json\r\n"
end

function M.checkout_request(prefix, product_id, key, customer)
  local body = '{"product_id":"' .. product_id .. '","quantity":1,"customer_id":"'
    .. customer .. '","consent":{"terms_version":"v1","marketing":false}}'
  return prefix
    .. "Idempotency-Key: " .. key .. "\r\n"
    .. "Content-Length: " .. #body .. "\r\n\r\n"
    .. body
end

-- Outcome label for a response: "201", "409 sold_out", "503 overloaded", ...
-- Outcomes of bodies already seen: a flood of refusals is one body over and over,
-- and a table lookup costs the load generator less than a pattern match and a
-- concatenation per response (the refusal phase is compared with /healthz). Bounded:
-- past OUTCOMES_KEPT distinct bodies, the rest are matched each time.
local OUTCOMES_KEPT = 64
local known_outcomes, known_count = {}, 0

function M.outcome(status, body)
  if status == 201 or status == 200 then
    return status == 201 and "201" or "200"
  end
  local key = body or ""
  local known = known_outcomes[key]
  if known and known.status == status then
    return known.outcome
  end
  local code = body and body:match('"code"%s*:%s*"([^"]*)"')
  local outcome = code and (status .. " " .. code) or tostring(status)
  if known_count < OUTCOMES_KEPT then
    known_outcomes[key] = { status = status, outcome = outcome }
    known_count = known_count + 1
  end
  return outcome
end

function M.add(t, k, n)
  t[k] = (t[k] or 0) + (n or 1)
end

-- Minimal JSON encoder for the result line (numbers, strings, booleans,
-- nested tables; tables with only 1..n keys become arrays).
local function encode(v)
  local ty = type(v)
  if ty == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return "null"
    end
    if v == math.floor(v) and math.abs(v) < 1e15 then
      return string.format("%d", v)
    end
    return string.format("%.6f", v)
  elseif ty == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif ty == "boolean" then
    return tostring(v)
  elseif ty == "table" then
    local n = #v
    local count = 0
    for _ in pairs(v) do
      count = count + 1
    end
    local parts = {}
    if n > 0 and n == count then
      for i = 1, n do
        parts[i] = encode(v[i])
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do
      keys[#keys + 1] = tostring(k)
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local val = v[k]
      if val == nil then
        val = v[tonumber(k)]
      end
      parts[#parts + 1] = encode(k) .. ":" .. encode(val)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end
M.encode = encode

-- The line bench.sh looks for in wrk's output.
function M.emit(result)
  io.write("FSBENCH_RESULT " .. encode(result) .. "\n")
  io.flush()
end

-- Latency percentiles from wrk's latency stats object (microseconds -> ms).
function M.latency_ms(latency)
  return {
    p50 = latency:percentile(50) / 1000,
    p90 = latency:percentile(90) / 1000,
    p99 = latency:percentile(99) / 1000,
    max = latency.max / 1000,
    mean = latency.mean / 1000,
  }
end

function M.socket_errors(summary)
  local e = summary.errors or {}
  return {
    connect = e.connect or 0,
    read = e.read or 0,
    write = e.write or 0,
    timeout = e.timeout or 0,
  }
end

-- The checkout scripts' response() and done(): count the 201s and every
-- outcome per thread (globals `created` and `outcomes` of the thread state),
-- then sum them over `threads` and emit one result for phase `phase`.
function M.count_response(status, body)
  if status == 201 then
    created = created + 1
  end
  M.add(outcomes, M.outcome(status, body))
end

function M.emit_checkouts(threads, phase, summary, latency)
  local total_created, total_sent, all = 0, 0, {}
  for _, t in ipairs(threads) do
    total_created = total_created + (t:get("created") or 0)
    total_sent = total_sent + (t:get("sent") or 0)
    for k, v in pairs(t:get("outcomes") or {}) do
      M.add(all, k, v)
    end
  end
  local duration_s = summary.duration / 1e6
  M.emit({
    phase = phase,
    threads = #threads,
    duration_s = duration_s,
    requests = summary.requests,
    requests_per_s = summary.requests / duration_s,
    sent = total_sent,
    created = total_created,
    created_per_s = total_created / duration_s,
    outcomes = all,
    latency_ms = M.latency_ms(latency),
    socket_errors = M.socket_errors(summary),
  })
end

return M
