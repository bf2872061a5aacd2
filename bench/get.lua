-- wrk script for GET runs: prints one machine-readable line at the end.
-- BENCH requests duration_us p50_us p99_us errors non2xx_or_3xx p90_us
-- (p90 last: bench/tunnelload prints the first six fields alone).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(90)))
end
