-- Prints one JSON line at the end of a wrk run: requests, errors, duration and latency percentiles
-- in microseconds (wrk's own summary has no p99.9).
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests":%d,"errors":%d,"duration_us":%d,"p50":%d,"p99":%d,"p999":%d,"max":%d}\n',
    summary.requests, errors, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
