-- test/bench/list_runs.sql: workload 13's helpers (schema public, in the list cluster's database):
-- the fill of queue_engine.finished_runs (and queue_engine.run_tags) by a direct INSERT ... SELECT
-- generate_series, which bypasses the API for speed, a pending backlog through the API, and the
-- table of list_runs arguments and starting cursors the pgbench scripts read (scripts/qe_list_runs.sql,
-- scripts/raw_list_*.sql).  Run again before each use: every object is created if missing or replaced.
--
-- The history (bench_list_start + bench_list_fill_chunk): BENCH_LIST_RUNS finished runs in 100 queues
-- (lq_0 .. lq_99, skewed: lq_0 has about 10 % of the runs, lq_99 0.5 %) of 10 tenants (lt_0 .. lt_9,
-- queue lq_k in tenant lt_(k % 10)), each made with create_queue; run_ids reserved from the engine's
-- sequence in creation order; created_at spread evenly over 30 days ending an hour before the fill
-- started, a fifth of the runs in groups of 5 sharing one created_at (as one enqueue_batch); status
-- completed (95.5 %), failed (2 %), canceled (1.5 %), expired (1 %); 5 % delayed (run_at after
-- created_at, which then is in meta); 20 % tagged with one or two of tag_0 .. tag_49 (skewed: tag_0
-- the most common), each tag also a row of queue_engine.run_tags unless the engine writes those
-- itself; payload {"customer": "c<run % 100>", "order_id": n} (so {"customer": "c7"} matches 1 %).

-- (bench_list_page names list_runs, which a new cluster has not yet: its body is checked at use)
SET check_function_bodies = off;

CREATE TABLE IF NOT EXISTS bench_list_stamp (
	runs			bigint NOT NULL,			-- BENCH_LIST_RUNS of the fill
	done			bigint NOT NULL DEFAULT 0,	-- rows inserted so far (the fill restarts from there)
	ext_md5			text NOT NULL,				-- md5 of the installed extension scripts it was made with
	base_id			bigint NOT NULL,			-- run_id of fill row i is base_id + 1 + i
	t0				timestamptz NOT NULL,		-- created_at of the history: t0 .. t1
	t1				timestamptz NOT NULL,
	fill_seconds	numeric NOT NULL DEFAULT 0,
	tags_by_engine	boolean,					-- run_tags written by the engine itself (a trigger)
	pending			int NOT NULL DEFAULT 0,		-- pending runs made through the API after the fill
	filled_at		timestamptz
);

-- bench_list_start(n, md5): the queues (through create_queue), the run ids reserved, the stamp.
-- Expects a freshly created extension.
CREATE OR REPLACE PROCEDURE bench_list_start(n bigint, md5 text)
LANGUAGE plpgsql AS $$
DECLARE
	base bigint;
	t1 timestamptz := date_trunc('second', now()) - interval '1 hour';
BEGIN
	PERFORM queue_engine.create_queue('lq_' || k, tenant => 'lt_' || (k % 10)) FROM generate_series(0, 99) k;
	base := nextval('queue_engine.runs_run_id_seq');
	PERFORM setval('queue_engine.runs_run_id_seq', base + n + 1);
	DELETE FROM bench_list_stamp;
	INSERT INTO bench_list_stamp (runs, ext_md5, base_id, t0, t1)
		 VALUES (n, md5, base, t1 - interval '30 days', t1);
END
$$;

-- bench_list_fill_chunk(lo, hi): fill rows lo .. hi - 1 (run_ids base_id + 1 + lo ..), in one
-- transaction with the stamp's progress, so an interrupted fill goes on from the last chunk.
CREATE OR REPLACE PROCEDURE bench_list_fill_chunk(lo bigint, hi bigint)
LANGUAGE plpgsql AS $$
DECLARE
	s bench_list_stamp;
	qids int[];
	pols int[];
	span interval;
	cols text;
	vals text;
	by_engine boolean;
BEGIN
	SELECT * INTO STRICT s FROM bench_list_stamp;
	IF s.done <> lo THEN
		RAISE EXCEPTION 'bench_list_fill_chunk: the fill is at row %, not %', s.done, lo;
	END IF;
	SELECT array_agg(q.queue_id ORDER BY substr(q.queue, 4)::int),
		   array_agg(q.policy_id ORDER BY substr(q.queue, 4)::int)
	  INTO qids, pols
	  FROM queue_engine.queues q
	 WHERE q.queue ~ '^lq_[0-9]+$' AND q.dropped_at IS NULL;
	IF coalesce(array_length(qids, 1), 0) <> 100 THEN
		RAISE EXCEPTION 'bench_list_fill_chunk: % queues lq_*, expected 100', coalesce(array_length(qids, 1), 0);
	END IF;
	span := s.t1 - s.t0;

	INSERT INTO queue_engine.finished_runs
		(run_id, finished_at, run_at, started_at, queue_id, policy_id, priority, attempt, status,
		 payload, output, concurrency_key, worker, meta)
	SELECT s.base_id + 1 + r.i,
		   coalesce(b.started, b.run_at) + make_interval(secs => 0.05 + r.udur ^ 3 * 600),
		   b.run_at, b.started, qids[r.qx + 1], pols[r.qx + 1],
		   CASE WHEN r.uprio < 0.05 THEN 10 ELSE 0 END,
		   CASE WHEN b.started IS NULL THEN 0 WHEN a.st = 'failed' THEN 3 WHEN r.udur < 0.05 THEN 2 ELSE 1 END,
		   a.st,
		   jsonb_build_object('customer', 'c' || (r.i % 100), 'order_id', r.i),
		   NULL, NULL,
		   CASE WHEN b.started IS NOT NULL THEN 'worker-' || (r.i % 8) END,
		   CASE WHEN t.tags IS NOT NULL OR b.run_at <> r.created OR a.st = 'failed' THEN
				jsonb_populate_record(NULL::queue_engine.run_meta, jsonb_strip_nulls(jsonb_build_object(
					'created_at', CASE WHEN b.run_at <> r.created THEN r.created END,
					'tags', t.tags,
					'last_error', CASE WHEN a.st = 'failed' THEN '{"message": "bench failure"}'::jsonb END)))
		   END
	  FROM (SELECT i,
				   -- a fifth of the runs in groups of 5 with one created_at
				   s.t0 + span * ((CASE WHEN (i / 5) % 5 = 0 THEN i - i % 5 ELSE i END)::float8 / s.runs) AS created,
				   floor(100 * random() ^ 2)::int AS qx,
				   random() AS ust, random() AS udelay, random() AS ustart, random() AS udur,
				   random() AS utag, random() AS utag1, random() AS utag2, random() AS uprio
			  FROM generate_series(lo, hi - 1) i) r
	 CROSS JOIN LATERAL (SELECT CASE WHEN r.ust < 0.02 THEN 'failed' WHEN r.ust < 0.035 THEN 'canceled'
									 WHEN r.ust < 0.045 THEN 'expired' ELSE 'completed'
								END::queue_engine.run_status AS st) a
	 CROSS JOIN LATERAL (SELECT run_at,
								-- expired runs and half the canceled ones never started
								CASE WHEN a.st = 'expired' OR (a.st = 'canceled' AND r.ustart < 0.5) THEN NULL
									 ELSE run_at + make_interval(secs => r.ustart * 30) END AS started
						   FROM (SELECT CASE WHEN r.udelay < 0.05
											 THEN r.created + make_interval(secs => 60 + r.udelay * 72000)
											 ELSE r.created END AS run_at) x) b
	 CROSS JOIN LATERAL (SELECT CASE WHEN r.utag < 0.2 THEN
								  ARRAY['tag_' || floor(50 * r.utag1 ^ 2)::int]
								  || CASE WHEN r.utag < 0.06 AND floor(50 * r.utag2 ^ 2) <> floor(50 * r.utag1 ^ 2)
										  THEN ARRAY['tag_' || floor(50 * r.utag2 ^ 2)::int] ELSE '{}' END
								END AS tags) t
	 ORDER BY r.i;

	-- run_tags: one row per tag of each tagged run, unless the engine wrote them itself (looked at
	-- after the first chunk).
	IF to_regclass('queue_engine.run_tags') IS NOT NULL THEN
		by_engine := s.tags_by_engine;
		IF by_engine IS NULL THEN
			EXECUTE 'SELECT EXISTS (SELECT 1 FROM queue_engine.run_tags WHERE run_id > $1)'
			   INTO by_engine USING s.base_id;
			UPDATE bench_list_stamp SET tags_by_engine = by_engine;
		END IF;
		IF NOT by_engine THEN
			-- the columns the bench knows how to fill, in the table's order; any other is left to its default
			SELECT string_agg(quote_ident(c.attname), ', ' ORDER BY c.attnum),
				   string_agg(CASE c.attname
								WHEN 'tag' THEN 'g.tag'
								WHEN 'created_at' THEN 'coalesce((f.meta).created_at, f.run_at)'
								WHEN 'run_id' THEN 'f.run_id'
								WHEN 'queue_id' THEN 'f.queue_id'
								WHEN 'tenant_id' THEN 'q.tenant_id'
								WHEN 'status' THEN 'f.status'
								WHEN 'finished_at' THEN 'f.finished_at'
								WHEN 'run_at' THEN 'f.run_at' END, ', ' ORDER BY c.attnum)
			  INTO cols, vals
			  FROM pg_attribute c
			 WHERE c.attrelid = 'queue_engine.run_tags'::regclass AND c.attnum > 0 AND NOT c.attisdropped
			   AND c.attname IN ('tag', 'created_at', 'run_id', 'queue_id', 'tenant_id', 'status', 'finished_at', 'run_at');
			EXECUTE format('INSERT INTO queue_engine.run_tags (%s)
							SELECT %s FROM queue_engine.finished_runs f
							  JOIN queue_engine.queues q ON q.queue_id = f.queue_id
							 CROSS JOIN LATERAL unnest((f.meta).tags) g(tag)
							 WHERE f.run_id > $1 AND f.run_id <= $2 AND (f.meta).tags IS NOT NULL', cols, vals)
			  USING s.base_id + lo, s.base_id + hi;
		END IF;
	END IF;
	UPDATE bench_list_stamp SET done = hi;
END
$$;

-- bench_list_pending(per_queue, executing_per_queue): a pending backlog through the API, per queue
-- of lq_*: per_queue runs enqueued (enqueue_batch; a fifth of the queues' runs tagged), then
-- executing_per_queue of them dequeued with a 30-day lease (so they stay executing).
CREATE OR REPLACE PROCEDURE bench_list_pending(per_queue int, executing_per_queue int)
LANGUAGE plpgsql AS $$
DECLARE
	k int;
	n int;
BEGIN
	FOR k IN 0 .. 99 LOOP
		PERFORM count(*) FROM queue_engine.enqueue_batch('lq_' || k,
			ARRAY(SELECT jsonb_build_object('customer', 'c' || (j % 100), 'order_id', -j)
					FROM generate_series(1, per_queue) j),
			tags => CASE WHEN k % 5 = 0 THEN ARRAY['tag_' || (k % 50)] END);
		COMMIT;
		n := 0;
		WHILE n < executing_per_queue LOOP
			n := n + (SELECT count(*) FROM queue_engine.dequeue(ARRAY['lq_' || k], executing_per_queue - n,
																 lease => '30 days'));
			COMMIT;
		END LOOP;
	END LOOP;
	UPDATE bench_list_stamp SET pending = 100 * per_queue;
END
$$;

-- bench_list_page(kind, arg, lo, hi, after, page_size): one list_runs page of the filter kind
-- (none, queue, tenant, status, tag, time, payload) with its argument arg (time: lo .. hi).
CREATE OR REPLACE FUNCTION bench_list_page(kind text, arg text, lo timestamptz, hi timestamptz,
										   after text, page_size int)
RETURNS TABLE (run_id bigint, created_at timestamptz, cursor text)
LANGUAGE sql AS $$
	SELECT l.run_id, l.created_at, l.cursor
	  FROM queue_engine.list_runs(
			 queue => CASE WHEN kind = 'queue' THEN arg END,
			 tenant => CASE WHEN kind = 'tenant' THEN arg END,
			 status => CASE WHEN kind = 'status' THEN ARRAY[arg]::queue_engine.run_status[] END,
			 tag => CASE WHEN kind = 'tag' THEN arg END,
			 created_after => lo, created_before => hi,
			 payload_contains => CASE WHEN kind = 'payload' THEN arg::jsonb END,
			 after => after, page_size => page_size) l
$$;

-- The pgbench scripts' arguments: one row per (kind, k, pos); pos first = page 1 (no cursor),
-- page5 = the cursor at the end of page 4 (following the cursors of pages 1-4 of 50), middle = the
-- cursor of the newest run created before the middle of the history (of the day, for kind time).
-- c_at, c_id: the same position as a sort key, for the raw SQL (the last run the engine returned
-- there; 'infinity' for the first page).
CREATE TABLE IF NOT EXISTS bench_list_keys (
	kind			text NOT NULL,
	k				int NOT NULL,
	pos				text NOT NULL,
	arg				text,
	lo				timestamptz,
	hi				timestamptz,
	cursor			text,
	c_at			timestamptz NOT NULL,
	c_id			bigint NOT NULL,
	PRIMARY KEY (kind, k, pos)
);

-- bench_list_keys_build(): refill bench_list_keys from the stamp's t0 .. t1.  Returns the
-- continuation rows met on the way (pages that reached list_runs_max_scan).
CREATE OR REPLACE FUNCTION bench_list_keys_build()
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	s bench_list_stamp;
	a record;
	p record;
	mid timestamptz;
	cur text;
	at timestamptz;
	id bigint;
	page int;
	cont bigint := 0;
BEGIN
	SELECT * INTO STRICT s FROM bench_list_stamp;
	TRUNCATE bench_list_keys;
	mid := s.t0 + (s.t1 - s.t0) / 2;
	FOR a IN
		SELECT 'none' AS kind, 0 AS k, NULL AS arg, NULL::timestamptz AS lo, NULL::timestamptz AS hi
		UNION ALL SELECT 'queue', k, 'lq_' || k, NULL, NULL FROM generate_series(0, 99) k
		UNION ALL SELECT 'tenant', k, 'lt_' || k, NULL, NULL FROM generate_series(0, 9) k
		UNION ALL SELECT 'status', 0, 'failed', NULL, NULL
		UNION ALL SELECT 'tag', k, 'tag_' || k, NULL, NULL FROM generate_series(0, 49) k
		-- one day each, days 10 .. 19 of the 30
		UNION ALL SELECT 'time', k, NULL, s.t0 + (10 + k) * interval '1 day', s.t0 + (11 + k) * interval '1 day'
					FROM generate_series(0, 9) k
		UNION ALL SELECT 'payload', k, jsonb_build_object('customer', 'c' || k)::text, NULL, NULL
					FROM generate_series(0, 99) k
	LOOP
		INSERT INTO bench_list_keys VALUES (a.kind, a.k, 'first', a.arg, a.lo, a.hi, NULL,
											'infinity', 9223372036854775807);
		-- page 5: follow the cursors of pages 1 .. 4
		cur := NULL; at := 'infinity'; id := 9223372036854775807;
		FOR page IN 1 .. 4 LOOP
			FOR p IN SELECT * FROM bench_list_page(a.kind, a.arg, a.lo, a.hi, cur, 50) LOOP
				cur := p.cursor;
				IF p.run_id IS NULL THEN
					cont := cont + 1;
				ELSE
					at := p.created_at; id := p.run_id;
				END IF;
			END LOOP;
		END LOOP;
		INSERT INTO bench_list_keys VALUES (a.kind, a.k, 'page5', a.arg, a.lo, a.hi, cur, at, id);
		-- the middle: the newest run created before it (following continuations, if a page
		-- reached list_runs_max_scan first, up to 100 pages)
		cur := NULL; at := 'infinity'; id := 9223372036854775807;
		FOR page IN 1 .. 100 LOOP
			SELECT * INTO p FROM bench_list_page(a.kind, a.arg, a.lo,
												 CASE WHEN a.kind = 'time' THEN a.lo + interval '12 hours' ELSE mid END,
												 cur, 1);
			EXIT WHEN NOT FOUND;
			cur := p.cursor;
			IF p.run_id IS NOT NULL THEN
				at := p.created_at; id := p.run_id;
				EXIT;
			END IF;
			cont := cont + 1;
			-- (if it stays a continuation, the raw SQL starts at the middle itself)
			at := CASE WHEN a.kind = 'time' THEN a.lo + interval '12 hours' ELSE mid END;
		END LOOP;
		INSERT INTO bench_list_keys VALUES (a.kind, a.k, 'middle', a.arg, a.lo, a.hi, cur, at, id);
	END LOOP;
	ANALYZE bench_list_keys;
	RETURN cont;
END
$$;
