-- workload 13, the raw SQL of a list_runs page filtered by tag (scripts/qe_list_runs.sql): the newest
-- 50 finished runs with the tag through queue_engine.run_tags (tag, created_at, run_id), from the
-- position of bench_list_keys' row (c_at, c_id).  History only: pending runs are not read.
\set k random(0, :kmax)
WITH b AS (SELECT * FROM bench_list_keys WHERE kind = 'tag' AND k = :k AND pos = :pos)
SELECT f.run_id, f.queue_id, f.status, f.attempt, f.priority, f.concurrency_key, (f.meta).tags,
       t.created_at, f.started_at, f.finished_at
  FROM queue_engine.run_tags t
  JOIN queue_engine.finished_runs f ON f.run_id = t.run_id
 WHERE t.tag = (SELECT arg FROM b)
   AND (t.created_at, t.run_id) < ((SELECT c_at FROM b), (SELECT c_id FROM b))
 ORDER BY t.created_at DESC, t.run_id DESC
 LIMIT 50;
