-- Deliveries per minute over the last hour, with capture-to-delivery latency.
SELECT flow, minute, delivered, p50_latency_ms, p99_latency_ms
FROM batisync.throughput
ORDER BY minute DESC, flow;
