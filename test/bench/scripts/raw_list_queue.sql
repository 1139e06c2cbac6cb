-- workload 13, the raw SQL of a list_runs page filtered by queue (scripts/qe_list_runs.sql): the newest 50
-- finished runs matching, in list_runs' order, from the position of bench_list_keys' row (c_at, c_id).
-- History only: pending runs are not read.
\set k random(0, :kmax)
WITH b AS (SELECT * FROM bench_list_keys WHERE kind = 'queue' AND k = :k AND pos = :pos)
SELECT f.run_id, f.queue_id, f.status, f.attempt, f.priority, f.concurrency_key, (f.meta).tags,
       coalesce((f.meta).created_at, f.run_at) AS created_at, f.started_at, f.finished_at
  FROM queue_engine.finished_runs f
 WHERE f.queue_id = (SELECT q.queue_id FROM queue_engine.queues q WHERE q.queue = (SELECT arg FROM b) AND q.dropped_at IS NULL)
   AND (coalesce((f.meta).created_at, f.run_at), f.run_id) < ((SELECT c_at FROM b), (SELECT c_id FROM b))
 ORDER BY coalesce((f.meta).created_at, f.run_at) DESC, f.run_id DESC
 LIMIT 50;
