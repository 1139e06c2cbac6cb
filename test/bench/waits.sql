-- test/bench/waits.sql: workload 12's helpers (in schema public, so they outlive reset_engine's
-- DROP EXTENSION): the sequences qe_send_event.sql draws order ids from, and bench_make_waits.
CREATE SEQUENCE IF NOT EXISTS bench_w12_small;
CREATE SEQUENCE IF NOT EXISTS bench_w12_big;
CREATE SEQUENCE IF NOT EXISTS bench_w12_none;

-- bench_make_waits(q, first_id, last_id, event, per_id_event, same_match): one run per id of
-- first_id .. last_id (payload {"order_id": id}) enqueued into q, dequeued and made to wait, 1,000
-- per transaction: wait_for_event(event, match {"order_id": id}); per_id_event: the event is named
-- event.<id> instead; same_match: every run waits with that match instead.  q must hold no
-- startable run beforehand (dequeue takes the queue's head).  Fails unless every run waits.
-- Ends with ANALYZE queue_engine.waiting_runs.
CREATE OR REPLACE PROCEDURE bench_make_waits(q text, first_id bigint, last_id bigint, event text,
											 per_id_event boolean DEFAULT false,
											 same_match jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
	lo bigint := first_id;
	hi bigint;
	want int;
	got int;
	tries int;
	r record;
	s queue_engine.run_status;
	bad bigint := 0;
BEGIN
	WHILE lo <= last_id LOOP
		hi := least(lo + 999, last_id);
		want := (hi - lo + 1)::int;
		PERFORM count(*) FROM queue_engine.enqueue_batch(q,
			ARRAY(SELECT jsonb_build_object('order_id', i) FROM generate_series(lo, hi) i ORDER BY i));
		COMMIT;
		got := 0;
		tries := 0;
		-- (a dequeue may come back short while rotation carries rows: ask again)
		WHILE got < want LOOP
			FOR r IN SELECT d.run_id, d.attempt, (d.payload->>'order_id')::bigint AS oid
					   FROM queue_engine.dequeue(ARRAY[q], want - got, lease => '1 day') d LOOP
				s := queue_engine.wait_for_event(r.run_id, r.attempt,
						CASE WHEN per_id_event THEN event || '.' || r.oid ELSE event END,
						coalesce(same_match, jsonb_build_object('order_id', r.oid)));
				IF s IS DISTINCT FROM 'waiting' THEN
					bad := bad + 1;
				END IF;
				got := got + 1;
			END LOOP;
			COMMIT;
			tries := tries + 1;
			IF got < want THEN
				IF tries > 200 THEN
					RAISE EXCEPTION 'bench_make_waits: only % of % runs of % dequeued', got, want, q;
				END IF;
				PERFORM pg_sleep(0.05);
			END IF;
		END LOOP;
		lo := hi + 1;
	END LOOP;
	IF bad > 0 THEN
		RAISE EXCEPTION 'bench_make_waits: % runs of % did not wait', bad, q;
	END IF;
	-- Statistics as autovacuum would leave them within a minute: without any, send_event's
	-- lookup reads every wait of the event name (see run.sh, workload 12).
	ANALYZE queue_engine.waiting_runs;
END
$$;

-- bench_clear_queue(q): cancel every run of q that is not final (waiting ones included).
CREATE OR REPLACE FUNCTION bench_clear_queue(q text) RETURNS bigint
LANGUAGE sql AS $$
	SELECT count(queue_engine.cancel(r.run_id))
	  FROM queue_engine.runs r
	 WHERE r.queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = q AND dropped_at IS NULL)
	   AND r.status IN ('queued', 'delayed', 'executing', 'waiting');
$$;
