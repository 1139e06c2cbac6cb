-- workload 12's baseline: qe_wait_cycle.sql without the wait: enqueue into the client's own queue
-- w12_c<client_id>, dequeue, complete.
SELECT queue_engine.enqueue('w12_c' || :client_id::text, '{"n": 1}');
SELECT coalesce(max(run_id), 0) AS rid, coalesce(max(attempt), 0) AS att
  FROM queue_engine.dequeue(ARRAY['w12_c' || :client_id::text], 1) \gset
\if :rid > 0
SELECT queue_engine.complete(:rid, attempt => :att);
\endif
