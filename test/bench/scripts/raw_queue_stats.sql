-- workload 14's baseline: every row of queue_stats (per queue counts and oldest startable run).
SELECT * FROM queue_engine.queue_stats;
