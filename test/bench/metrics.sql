-- test/bench/metrics.sql: workload 14's helper (schema public, so it outlives reset_engine's DROP
-- EXTENSION): bench_metrics_fill.

-- bench_metrics_fill(nq, nt): nq queues mq_1 .. mq_<nq> over nt tenants (mt_0 .. mt_<nt-1>), all
-- through the API, 500 queues per transaction: each queue made by create_queue (every 10th with
-- concurrency_limit 2), 5 runs enqueued (enqueue_batch) and every 3rd queue one more delayed an hour;
-- then up to 3 dequeued (lease 1 day): the first completed, the second failed (permanently in even
-- queues, else retried: delayed again), the third left executing (every 7th queue: made to wait for
-- an event instead); every 20th queue paused at the end.  So the counts, the counters and both
-- histograms have values in every queue.
CREATE OR REPLACE PROCEDURE bench_metrics_fill(nq int, nt int)
LANGUAGE plpgsql AS $$
DECLARE
	i int;
	k int;
	q text;
	r record;
	s queue_engine.run_status;
BEGIN
	FOR i IN 1 .. nq LOOP
		q := 'mq_' || i;
		PERFORM queue_engine.create_queue(q, tenant => 'mt_' || (i % nt),
										  concurrency_limit => CASE WHEN i % 10 = 0 THEN 2 END);
		PERFORM count(*) FROM queue_engine.enqueue_batch(q, array_fill('{"n": 1}'::jsonb, ARRAY[5]));
		IF i % 3 = 0 THEN
			PERFORM queue_engine.enqueue(q, '{"n": 2}', delay => '1 hour');
		END IF;
		IF i % 500 = 0 THEN
			COMMIT;
		END IF;
	END LOOP;
	COMMIT;
	FOR i IN 1 .. nq LOOP
		q := 'mq_' || i;
		k := 0;
		FOR r IN SELECT d.run_id, d.attempt FROM queue_engine.dequeue(ARRAY[q], 3, lease => '1 day') d LOOP
			k := k + 1;
			IF k = 1 THEN
				PERFORM queue_engine.complete(r.run_id);
			ELSIF k = 2 THEN
				PERFORM queue_engine.fail(r.run_id, '{"message": "bench"}', permanent => i % 2 = 0);
			ELSIF i % 7 = 0 THEN
				s := queue_engine.wait_for_event(r.run_id, r.attempt, 'bench.never', NULL);
			END IF;
		END LOOP;
		IF i % 20 = 0 THEN
			PERFORM queue_engine.pause_queue(q);
		END IF;
		IF i % 500 = 0 THEN
			COMMIT;
		END IF;
	END LOOP;
END
$$;
