-- wrk script for bench/run.sh. Configured by environment variables:
--   MODE   courier  POST /v1/sms, Kratos's JSON, a unique recipient and code per request
--          twilio   POST /2010-04-01/Accounts/$SID/Messages.json, the form the service sends
--          limited  POST /v1/sms, always the same recipient with a new code (429 after its burst)
--          malformed  POST /v1/sms with broken JSON (400)
--          unauth   POST /v1/sms without credentials (401)
--   RATE   total requests per second (0 or unset: as fast as possible)
--   BASE   first index of the recipient numbers this run uses (runs must not overlap:
--          the service deduplicates identical messages for 10 minutes)
--   LIMIT  end the run once a thread has sent this many requests (0 or unset: no limit)
--   AUTH   "Basic ..." header value; SID: the Twilio account sid (twilio mode)
--
-- Recipients are valid US numbers (libphonenumber): an area code from AREAS,
-- an exchange 200..999, four digits; request i gets number i, code i.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
  int getpid(void);
  int kill(int pid, int sig);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local AREAS = { "415", "212", "646", "312", "213", "310", "617", "206", "303", "512" }
local mode = os.getenv("MODE") or "courier"
local rate = tonumber(os.getenv("RATE") or "0") or 0
local base = tonumber(os.getenv("BASE") or "0") or 0
local limit = tonumber(os.getenv("LIMIT") or "0") or 0
local auth = os.getenv("AUTH") or ""
local sid = os.getenv("SID") or ""

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  -- tid is set by setup() before init() runs in the thread
  nthreads = tonumber(os.getenv("THREADS") or "1")
  counter = 0
  interval = 0
  if rate > 0 then
    interval = 1000 / (rate / nthreads)
  end
  next_slot = 0
end

function delay()
  if interval == 0 then
    return 0
  end
  -- Each request takes the next free slot of this thread's schedule (a fixed
  -- rate); a connection that is idle waits for its slot.
  local t = now_ms()
  if next_slot < t then
    next_slot = t
  end
  local wait = next_slot - t
  next_slot = next_slot + interval
  return math.floor(wait)
end

local function number(i)
  local area = AREAS[(i % #AREAS) + 1]
  local rest = math.floor(i / #AREAS)
  local line = rest % 10000
  local exchange = 200 + math.floor(rest / 10000) % 800
  return string.format("+1%s%03d%04d", area, exchange, line)
end

local function urlencode(s)
  return (s:gsub("[^%w%-_%.~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local json_headers = { ["Content-Type"] = "application/json", ["Authorization"] = auth }
local form_headers = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = auth }

local function kratos_message(to, code)
  return string.format(
    '{"recipient":"%s","body":"Your login code is: %s","template_type":"login_code_valid",'
      .. '"template_data":{"login_code":"%s","expires_in_minutes":15},"message_type":"sms"}',
    to, code, code)
end

local static = nil
if mode == "malformed" then
  static = wrk.format("POST", "/v1/sms", json_headers, '{"recipient": "+14155550100", "body": ')
elseif mode == "unauth" then
  static = wrk.format("POST", "/v1/sms", { ["Content-Type"] = "application/json" },
    kratos_message("+14155550100", "123456"))
end

function request()
  counter = counter + 1
  if limit > 0 and counter > limit and not stopped then
    -- wrk runs for its whole -d otherwise: SIGINT ends the run (its main
    -- thread gets the signal) and the results are still printed.
    stopped = true
    ffi.C.kill(ffi.C.getpid(), 2)
  end
  if static then
    return static
  end
  local i = base + tid + nthreads * counter
  local to = number(i)
  local code = string.format("%06d", i % 1000000)
  if mode == "limited" then
    -- One recipient, a new code each time: not a duplicate, so the
    -- recipient limiter (which comes after deduplication) answers.
    return wrk.format("POST", "/v1/sms", json_headers, kratos_message("+14155550100", code))
  end
  if mode == "twilio" then
    local form = "To=" .. urlencode(to) .. "&From=%2B15005550006&Body="
      .. urlencode("Your login code is: " .. code) .. "&ValidityPeriod=900"
    return wrk.format("POST", "/2010-04-01/Accounts/" .. sid .. "/Messages.json", form_headers, form)
  end
  return wrk.format("POST", "/v1/sms", json_headers, kratos_message(to, code))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d "
      .. "p50=%d p90=%d p99=%d p999=%d max=%d mean=%.1f\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
