-- wrk: each request carries the next session's cookie (`cookies`, written above this by
-- bench/web.sh), so every session is in use at once; the summary adds p95 and the non-2xx.
local i = 0
request = function()
  i = i % #cookies + 1
  return wrk.format("GET", nil, { Cookie = cookies[i] })
end
done = function(summary, latency, requests)
  local ms = function(us) return string.format("%.1f ms", us / 1000) end
  io.write(string.format("requests %d in %.1f s (%.0f/s), non-2xx %d, errors %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("latency p50 %s  p95 %s  p99 %s  max %s\n",
    ms(latency:percentile(50)), ms(latency:percentile(95)), ms(latency:percentile(99)), ms(latency.max)))
end
