-- workload 14: one scrape, the whole text of metrics() fetched by the client.
SELECT queue_engine.metrics();
