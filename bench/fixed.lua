-- wrk script for a request that never changes (the ceilings): GET /healthz, or
-- POST of BENCH_BODY as Connect JSON when BENCH_METHOD=POST. Prints BENCHJSON.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
if wrk.method == "POST" then
  wrk.body = os.getenv("BENCH_BODY") or "{}"
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"s200":%d,"s401":0,"s429":0,"sother":%d,"extra":0,"sock_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.requests - e.status, e.status,
    e.connect + e.read + e.write + e.timeout))
end
