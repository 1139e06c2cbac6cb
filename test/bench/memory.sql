-- test/bench/memory.sql: one backend calls dequeue then complete (each its own
-- transaction) bench.calls times from one procedure's loop, topping the backlog up 10,000
-- runs at a time, and prints its private memory before, at the peak, and after.
-- Bounded in time: the loop stops at the next 10,000-call boundary after max_seconds.
-- "peak" is sampled inside the loop: memory that a call leaves in its caller's
-- context (here the procedure's SPI context) shows there, and is freed only when
-- the CALL ends, so before/after alone would miss it.
-- Then the procedure's own context ("SPI Proc") is compared with a raw baseline in the
-- same backend: spi_growth.calls iterations of the raw claim+ack (UPDATE ... RETURNING,
-- COMMIT, DELETE, COMMIT on raw_jobs) and as many of dequeue, COMMIT, complete, COMMIT,
-- each from the same kind of loop, with the bytes that context holds measured before
-- and after each loop.
-- Run by run.sh with: psql -v calls=N -v max_seconds=S -v spi_calls=M -f memory.sql
-- (output lines: before|.., after|.., peak|.. (ctx bytes, RssAnon kB, VmRSS-RssShmem kB),
-- half|.., end|.. (ctx bytes but the procedure's "SPI Proc", in the loop at the first
-- 10,000-call boundary past half the calls, and after its last call), calls|N,
-- spi|M|raw bytes|engine bytes (SPI Proc growth over M iterations)).
\set ON_ERROR_STOP 1
SET synchronous_commit = off;
SET client_min_messages = warning;
SELECT set_config('bench.calls', :'calls', false) \gset
SELECT set_config('bench.deadline', (clock_timestamp() + make_interval(secs => :'max_seconds'))::text, false) \gset

CREATE TEMP VIEW mem AS
SELECT (SELECT sum(total_bytes) FROM pg_backend_memory_contexts)::bigint AS ctx_bytes,
       (regexp_match(s, 'RssAnon:\s+(\d+)'))[1]::bigint AS rss_anon_kb,
       ((regexp_match(s, 'VmRSS:\s+(\d+)'))[1]::bigint
        - (regexp_match(s, 'RssShmem:\s+(\d+)'))[1]::bigint) AS rss_private_kb,
       -- without the procedure's own context, which grows by the same bytes per
       -- iteration in the raw loop (the spi lines below)
       (SELECT sum(total_bytes) FROM pg_backend_memory_contexts
         WHERE name <> 'SPI Proc')::bigint AS ctx_bytes_but_proc
  FROM pg_read_file('/proc/self/status') s;
CREATE TEMP TABLE mem_peak AS SELECT 0 AS calls, * FROM mem WITH NO DATA;
CREATE TEMP TABLE mem_calls (n int);

CREATE PROCEDURE pg_temp.loop(n int, sample boolean)
LANGUAGE plpgsql AS $$
DECLARE
	i int;
	rid bigint;
BEGIN
	FOR i IN 0 .. n - 1 LOOP
		IF i % 10000 = 0 THEN
			IF sample THEN
				INSERT INTO mem_peak SELECT i, * FROM mem;
				IF clock_timestamp() > current_setting('bench.deadline')::timestamptz THEN
					RAISE WARNING 'memory workload: stopped after % calls (time limit)', i;
					INSERT INTO mem_calls VALUES (i);
					COMMIT;
					RETURN;
				END IF;
			END IF;
			PERFORM count(*) FROM queue_engine.enqueue_batch('bench',
				array_fill('{"n": 1}'::jsonb, ARRAY[least(10000, n - i)]));
			PERFORM queue_engine.fold_counts(1000000);
			COMMIT;
		END IF;
		-- (a claim may come back empty while rotation's carry holds the
		-- rows locked: SKIP LOCKED; that call then completes nothing)
		SELECT d.run_id INTO rid FROM queue_engine.dequeue(ARRAY['bench'], 1) d;
		COMMIT;
		IF rid IS NOT NULL THEN
			PERFORM queue_engine.complete(rid);
		END IF;
		COMMIT;
	END LOOP;
	IF sample THEN
		INSERT INTO mem_peak SELECT n, * FROM mem;
		INSERT INTO mem_calls VALUES (n);
	END IF;
END $$;

-- Warm up caches and saved plans (every statement of the loop), then measure.
CALL pg_temp.loop(10000, true);
DELETE FROM mem_peak;
DELETE FROM mem_calls;
\pset format unaligned
\pset fieldsep '|'
\pset tuples_only on
SELECT 'before', * FROM mem;
CALL pg_temp.loop(current_setting('bench.calls')::int, true);
SELECT 'after', * FROM mem;
SELECT 'peak', max(ctx_bytes), max(rss_anon_kb), max(rss_private_kb) FROM mem_peak;
-- The contexts but the procedure's halfway through the loop and at its end:
-- what grows between them grows with the calls (a leak); caches filled
-- once, early, do not.
SELECT 'half', ctx_bytes_but_proc FROM mem_peak
 WHERE calls >= (SELECT max(n) / 2 FROM mem_calls) ORDER BY calls LIMIT 1;
SELECT 'end', ctx_bytes_but_proc FROM mem_peak ORDER BY calls DESC LIMIT 1;
SELECT 'calls', n FROM mem_calls;

-- SPI Proc growth, raw claim+ack against the engine, in this backend.
CREATE FUNCTION pg_temp.spi_proc_bytes() RETURNS bigint LANGUAGE sql AS
$$ SELECT coalesce(sum(total_bytes - free_bytes), 0)::bigint FROM pg_backend_memory_contexts
    WHERE name = 'SPI Proc' $$;
CREATE TEMP TABLE spi_growth (side text, before bigint, after bigint);
CREATE PROCEDURE pg_temp.spi_loop(side text, n int)
LANGUAGE plpgsql AS $$
DECLARE
	b bigint;
	rid bigint;
	ids bigint[];
BEGIN
	FOR i IN 1 .. n + 1000 LOOP
		-- The first 1,000 iterations warm plans and caches up.
		IF i = 1001 THEN
			b := pg_temp.spi_proc_bytes();
		END IF;
		IF side = 'raw' THEN
			WITH c AS (
				UPDATE raw_jobs SET locked_at = now()
				 WHERE id = ANY (ARRAY(SELECT id FROM raw_jobs WHERE locked_at IS NULL
										ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED))
				RETURNING id)
			SELECT coalesce(array_agg(id), '{}') INTO ids FROM c;
			COMMIT;
			DELETE FROM raw_jobs WHERE id = ANY (ids);
			COMMIT;
		ELSE
			SELECT d.run_id INTO rid FROM queue_engine.dequeue(ARRAY['bench'], 1) d;
			COMMIT;
			IF rid IS NOT NULL THEN
				PERFORM queue_engine.complete(rid);
			END IF;
			COMMIT;
		END IF;
	END LOOP;
	INSERT INTO spi_growth VALUES (side, b, pg_temp.spi_proc_bytes());
	COMMIT;
END $$;
INSERT INTO raw_jobs (payload) SELECT '{"n": 1}' FROM generate_series(1, :spi_calls + 1000);
SELECT count(*) FROM queue_engine.enqueue_batch('bench',
	array_fill('{"n": 1}'::jsonb, ARRAY[:spi_calls + 1000])) \gset
CALL pg_temp.spi_loop('raw', :spi_calls);
CALL pg_temp.spi_loop('engine', :spi_calls);
\pset format unaligned
\pset tuples_only on
SELECT 'spi', :spi_calls,
	   (SELECT after - before FROM spi_growth WHERE side = 'raw'),
	   (SELECT after - before FROM spi_growth WHERE side = 'engine');
