-- workload 12: one run through dequeue, wait_for_event, send_event (which wakes it), dequeue (which
-- resumes it) and complete, enqueued first in the client's own queue w12_c<client_id> (so that the
-- second dequeue gets that run); qe_enqueue_dequeue_complete_own.sql is the same without the wait.
SELECT queue_engine.enqueue('w12_c' || :client_id::text, '{"n": 1}');
SELECT coalesce(max(run_id), 0) AS rid, coalesce(max(attempt), 0) AS att
  FROM queue_engine.dequeue(ARRAY['w12_c' || :client_id::text], 1) \gset
\if :rid > 0
SELECT queue_engine.wait_for_event(:rid, :att, 'cycle.go', jsonb_build_object('run', :rid::bigint));
SELECT woken FROM queue_engine.send_event('cycle.go', jsonb_build_object('run', :rid::bigint));
SELECT coalesce(max(run_id), 0) AS rid, coalesce(max(attempt), 0) AS att
  FROM queue_engine.dequeue(ARRAY['w12_c' || :client_id::text], 1) \gset
\if :rid > 0
SELECT queue_engine.complete(:rid, attempt => :att);
\endif
\endif
