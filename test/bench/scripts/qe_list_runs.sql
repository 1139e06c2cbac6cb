-- workload 13: one list_runs page of 50, filter :kind (none, queue, tenant, status, tag, time, payload)
-- with a random argument k of 0 .. :kmax, from position :pos (first, page5, middle): the arguments and
-- the starting cursor are bench_list_keys' row (test/bench/list_runs.sql).
\set k random(0, :kmax)
SELECT l.*
  FROM bench_list_keys b,
       LATERAL queue_engine.list_runs(
         queue => CASE WHEN b.kind = 'queue' THEN b.arg END,
         tenant => CASE WHEN b.kind = 'tenant' THEN b.arg END,
         status => CASE WHEN b.kind = 'status' THEN ARRAY[b.arg]::queue_engine.run_status[] END,
         tag => CASE WHEN b.kind = 'tag' THEN b.arg END,
         created_after => b.lo, created_before => b.hi,
         payload_contains => CASE WHEN b.kind = 'payload' THEN b.arg::jsonb END,
         after => b.cursor, page_size => 50) l
 WHERE b.kind = :kind AND b.k = :k AND b.pos = :pos;
