-- wrk script: Connect JSON (HTTP/1.1) for SendLoginCode / VerifyLoginCode.
-- Env (read in init): BENCH_PAIRS = file of "username<TAB>orgId[<TAB>code]" lines,
-- BENCH_PATH = RPC path, BENCH_ONCE = "1" to use every line once (verify) and stop.
-- Prints one line "BENCHJSON {...}" from done().
local threads = {}
local counter = 0
function now_ns()
  local f = io.popen("date +%s%N")
  local t = tonumber(f:read("*l"))
  f:close()
  return t
end

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  nthreads = tonumber(os.getenv("BENCH_THREADS"))
  path = os.getenv("BENCH_PATH")
  once = os.getenv("BENCH_ONCE") == "1"
  bodies = {}
  local i = 0
  for line in io.lines(os.getenv("BENCH_PAIRS")) do
    if i % nthreads == tid - 1 then
      local u, o, c = line:match("([^\t]+)\t([^\t]+)\t?([^\t]*)")
      if c ~= nil and c ~= "" then
        bodies[#bodies + 1] = '{"username":"' .. u .. '","orgId":"' .. o .. '","code":"' .. c .. '"}'
      else
        bodies[#bodies + 1] = '{"username":"' .. u .. '","orgId":"' .. o .. '"}'
      end
    end
    i = i + 1
  end
  idx = 0
  got = 0
  -- wrk's own duration is always -d; a one-pass run times itself (ns, per thread).
  t_start = now_ns()
  t_end = 0
  s200 = 0; s401 = 0; s429 = 0; sother = 0; extra = 0
  hdrs = { ["content-type"] = "application/json" }
end

function request()
  idx = idx + 1
  if once and idx > #bodies then
    -- Every line sent: stop this thread (responses still in flight on its other
    -- connections are dropped, at most its connections minus one).
    if t_end == 0 then
      t_end = now_ns()
      wrk.thread:stop()
    end
    return wrk.format("GET", "/bench-exhausted") -- a 404, not counted
  end
  local b = bodies[((idx - 1) % #bodies) + 1]
  return wrk.format("POST", path, hdrs, b)
end

function response(status, headers, body)
  if once and status == 404 then
    extra = extra + 1
  else
    got = got + 1
    if status == 200 then s200 = s200 + 1
    elseif status == 401 then s401 = s401 + 1
    elseif status == 429 then s429 = s429 + 1
    else sother = sother + 1 end
  end
end

function done(summary, latency, requests)
  local t = { s200 = 0, s401 = 0, s429 = 0, sother = 0, extra = 0 }
  local t0, t1 = nil, 0
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
    local a, b = th:get("t_start"), th:get("t_end")
    if t0 == nil or a < t0 then t0 = a end
    if b == 0 then t1 = nil elseif t1 ~= nil and b > t1 then t1 = b end
  end
  local duration = summary.duration
  if os.getenv("BENCH_ONCE") == "1" and t1 ~= nil then duration = math.floor((t1 - t0) / 1000) end
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"s200":%d,"s401":%d,"s429":%d,"sother":%d,"extra":%d,"sock_errors":%d}\n',
    summary.requests, duration, latency:percentile(50), latency:percentile(99), t.s200, t.s401, t.s429, t.sother, t.extra,
    e.connect + e.read + e.write + e.timeout))
end
