-- 10_rotation.sql: rotate_segments (src/rotation.c): the segment of each run
-- family that writers are not using is carried to the current one and
-- truncated; a large, mostly dead current segment is left for the other.
-- Runs keep their state, their claim order (ties included) and their
-- attempt; nothing is lost or doubled, in one call or in batches.
-- (One transaction: READ COMMITTED, and every lock is this session's, so
-- each truncation goes through; isolation rotation_* covers the others.)
BEGIN;
SELECT plan(37);

-- The three families.
CREATE TEMP TABLE families (family text);
INSERT INTO families VALUES ('ready'), ('delayed'), ('executing');

-- Rows that died in the family's current segment, grown to 128 pages or
-- more (so that a rotation finds it worth leaving).
CREATE FUNCTION pg_temp.fill_dead(family text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	seg text := family || '_' || queue_engine.current_segment(family);
BEGIN
	IF family = 'executing' THEN
		EXECUTE format('INSERT INTO queue_engine.%I SELECT -g, now(), now(), now(), ''1 min'','
					   ' 0, 0, 0, 1, NULL, ''{}'', NULL, NULL, NULL FROM generate_series(1, 20000) g', seg);
	ELSE
		EXECUTE format('INSERT INTO queue_engine.%I SELECT -g, now(), 0, 0, 0, ''{}'', NULL, NULL'
					   '  FROM generate_series(1, 20000) g', seg);
	END IF;
	EXECUTE format('DELETE FROM queue_engine.%I WHERE run_id < 0', seg);
	IF pg_relation_size(format('queue_engine.%I', seg)) < 128 * 8192 THEN
		RAISE EXCEPTION 'fill_dead(%): % has only % bytes', family, seg,
			pg_relation_size(format('queue_engine.%I', seg));
	END IF;
END;
$$;

-- The bytes of the segments that are not current, as text.
CREATE FUNCTION pg_temp.other_sizes() RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(family || '=' || pg_relation_size(format('queue_engine.%s_%s', family,
														1 - queue_engine.current_segment(family))),
					  ',' ORDER BY family)
	  FROM families
$$;

-- Where each run is: table (segment) per run id.
CREATE FUNCTION pg_temp.places() RETURNS TABLE (run_id bigint, place text) LANGUAGE sql AS $$
	SELECT run_id, tableoid::regclass::text FROM queue_engine.ready
	UNION ALL SELECT run_id, tableoid::regclass::text FROM queue_engine.delayed
	UNION ALL SELECT run_id, tableoid::regclass::text FROM queue_engine.executing
$$;

-- Runs claimed one by one from queue q, n times: their ids in claim order.
CREATE FUNCTION pg_temp.claim_order(q text, n int) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
	ids bigint[] := '{}';
	got bigint;
BEGIN
	FOR i IN 1..n LOOP
		SELECT d.run_id INTO got FROM queue_engine.dequeue(ARRAY[q], 1) d;
		ids := ids || got;
	END LOOP;
	RETURN ids;
END;
$$;

CREATE FUNCTION pg_temp.checks() RETURNS text[] LANGUAGE sql AS $$
	SELECT array_agg(check_name || '=' || found ORDER BY check_name)
	  FROM queue_engine.check_consistency(false) WHERE found <> 0
$$;

SELECT queue_engine.create_queue('rot_q');
SELECT queue_engine.create_queue('rot_x');

---------------------------------------------------------------------------
-- Nothing to do
---------------------------------------------------------------------------
-- 1-4
SELECT is(queue_engine.rotate_segments(), 0::bigint, 'empty families: nothing to rotate');
SELECT throws_ok($$SELECT queue_engine.rotate_segments(0)$$, '22023', 'batch_size must be positive: 0',
                 'batch_size 0 is an error');
SELECT throws_ok($$SELECT queue_engine.rotate_segments(NULL)$$, '22004', 'batch_size must not be null',
                 'NULL batch_size is an error');
SELECT is(queue_engine.rotate_segments(), 0::bigint, 'again');

---------------------------------------------------------------------------
-- Runs in every state in the first segment ("old")
---------------------------------------------------------------------------
-- Five runs with one key (one statement: equal priority and run_at), in run_id order.
CREATE TEMP TABLE tie_a AS
SELECT array_agg(id ORDER BY id) AS ids
  FROM queue_engine.enqueue_batch('rot_q', ARRAY['{"a": 1}', '{"a": 2}', '{"a": 3}', '{"a": 4}', '{"a": 5}']::jsonb[],
                                  priority => 5, run_at => now() - interval '2 minutes') AS id;
SELECT queue_engine.enqueue('rot_q', '{"low": 1}', priority => 1) AS low_old \gset
SELECT queue_engine.enqueue('rot_q', '{"later": 1}', delay => interval '1 hour') AS delayed_old \gset
SELECT queue_engine.enqueue('rot_x', '{"x": 1}') AS x1 \gset
SELECT queue_engine.enqueue('rot_x', '{"x": 2}') AS x2 \gset
SELECT queue_engine.enqueue('rot_x', '{"x": 3}') AS x3 \gset
SELECT count(*) AS started FROM queue_engine.dequeue(ARRAY['rot_x'], 3) \gset
SELECT queue_engine.complete(:x3, '{"done": 3}');

-- 5
SELECT is(:started::bigint, 3::bigint, 'three rot_x runs started');

---------------------------------------------------------------------------
-- The switch: every current segment grown large and dead
---------------------------------------------------------------------------
CREATE TEMP TABLE first_segments AS
SELECT family, queue_engine.current_segment(family) AS segment FROM families;
SELECT pg_temp.fill_dead(family) FROM families;
-- 6-8
SELECT is(pg_temp.other_sizes(), 'delayed=0,executing=0,ready=0', 'the other segments are empty');
SELECT is(queue_engine.rotate_segments(), 0::bigint, 'a switch carries nothing yet');
SELECT is((SELECT count(*) FROM first_segments WHERE queue_engine.current_segment(family) = 1 - segment),
          3::bigint, 'every family switched to its other segment');

---------------------------------------------------------------------------
-- Runs in the new current segment ("new")
---------------------------------------------------------------------------
CREATE TEMP TABLE tie_b AS
SELECT array_agg(id ORDER BY id) AS ids
  FROM queue_engine.enqueue_batch('rot_q', ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}']::jsonb[],
                                  priority => 5, run_at => now() - interval '1 minute') AS id;
SELECT queue_engine.enqueue('rot_q', '{"later": 2}', delay => interval '2 hours') AS delayed_new \gset
SELECT queue_engine.enqueue('rot_x', '{"x": 4}') AS x4 \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['rot_x'], 1);

-- 9: runs in both segments of every family
SELECT is((SELECT count(DISTINCT place) FROM pg_temp.places()), 6::bigint,
          'runs in both segments of ready, delayed and executing');

CREATE TEMP TABLE runs_before AS SELECT * FROM queue_engine.runs;
CREATE TEMP TABLE live_old AS
SELECT count(*) AS n FROM pg_temp.places() p
 WHERE p.place IN (SELECT format('queue_engine.%s_%s', family, 1 - queue_engine.current_segment(family))
                     FROM families);

---------------------------------------------------------------------------
-- Rotation in one call: every old segment carried and truncated
---------------------------------------------------------------------------
-- 10-17
SELECT is(queue_engine.rotate_segments(), (SELECT n + 3 FROM live_old),
          'one call carries every live row of the old segments and truncates the three');
SELECT is(pg_temp.other_sizes(), 'delayed=0,executing=0,ready=0', 'the old segments are empty (0 bytes)');
SELECT is((SELECT count(DISTINCT place) FROM pg_temp.places()), 3::bigint,
          'every run is in the current segment of its family');
SELECT is((SELECT count(*) FROM (SELECT * FROM runs_before EXCEPT ALL SELECT * FROM queue_engine.runs) x), 0::bigint,
          'no run lost or changed');
SELECT is((SELECT count(*) FROM (SELECT * FROM queue_engine.runs EXCEPT ALL SELECT * FROM runs_before) x), 0::bigint,
          'no run doubled or added');
SELECT is(pg_temp.checks(), NULL, 'check_consistency finds nothing to repair');
SELECT is(queue_engine.rotate_segments(), 0::bigint, 'then nothing is left to do');
SELECT is((SELECT count(*) FROM first_segments WHERE queue_engine.current_segment(family) = 1 - segment),
          3::bigint, 'and nothing switches back (the current segments are small)');

---------------------------------------------------------------------------
-- Rotation in batches: switched back, carried 2 rows a call
---------------------------------------------------------------------------
SELECT pg_temp.fill_dead(family) FROM families;
-- 18-19
SELECT is(queue_engine.rotate_segments(2), 0::bigint, 'a switch again');
SELECT is((SELECT count(*) FROM first_segments WHERE queue_engine.current_segment(family) = segment),
          3::bigint, 'back to the first segments');

CREATE TEMP TABLE batches (i serial, n bigint);
DO $$
DECLARE
	got bigint;
BEGIN
	FOR k IN 1..100 LOOP
		got := queue_engine.rotate_segments(2);
		INSERT INTO batches (n) VALUES (got);
		EXIT WHEN got < 2;
	END LOOP;
END;
$$;
-- 20-27
SELECT is((SELECT n FROM batches WHERE i = 1), 2::bigint, 'a batch of 2 carries 2 rows');
SELECT cmp_ok((SELECT count(*) FROM batches), '<', 100::bigint, 'the batches come to an end');
SELECT is((SELECT sum(n)::bigint FROM batches),
          (SELECT count(*) + 3 FROM queue_engine.ready) + (SELECT count(*) FROM queue_engine.delayed)
            + (SELECT count(*) FROM queue_engine.executing),
          'the batches carried every live row once and truncated the three segments');
SELECT is(queue_engine.rotate_segments(2), 0::bigint, 'nothing is left after the last short batch');
SELECT is(pg_temp.other_sizes(), 'delayed=0,executing=0,ready=0', 'the old segments are empty again');
SELECT is((SELECT count(*) FROM (SELECT * FROM runs_before EXCEPT ALL SELECT * FROM queue_engine.runs) x), 0::bigint,
          'no run lost or changed by the batches');
SELECT is((SELECT count(*) FROM (SELECT * FROM queue_engine.runs EXCEPT ALL SELECT * FROM runs_before) x), 0::bigint,
          'no run doubled by the batches');
SELECT is(pg_temp.checks(), NULL, 'check_consistency finds nothing to repair after the batches');

---------------------------------------------------------------------------
-- The carried runs work as before
---------------------------------------------------------------------------
-- 28: claims in priority and run_at order, equal keys in run_id order
SELECT is(pg_temp.claim_order('rot_q', 10),
          (SELECT a.ids || b.ids || :low_old::bigint || NULL::bigint FROM tie_a a, tie_b b),
          'claims come in priority, run_at order, equal keys in run_id order, then nothing (delayed)');
-- 29-33: executing runs carried twice keep their attempt, lease and slot
SELECT is((SELECT array_agg(attempt ORDER BY run_id) FROM queue_engine.runs WHERE queue_id =
            (SELECT queue_id FROM queue_engine.queues WHERE queue = 'rot_x') AND status = 'executing'),
          ARRAY[1, 1, 1], 'the carried executing runs are still executing, attempt 1');
SELECT isnt(queue_engine.heartbeat(:x1, 1), NULL, 'a carried executing run can be heartbeated with its attempt');
SELECT is(queue_engine.complete(:x1, '{"done": 1}', 1), true, 'and completed with its attempt');
SELECT is(queue_engine.fail(:x2, '{"e": 1}', 1, permanent => true), 'failed'::queue_engine.run_status,
          'another one fails with its attempt');
SELECT is(queue_engine.complete(:x4, '{"done": 4}', 1), true, 'the run started in the new segment completes');
-- 34-35: the delayed runs are still delayed, with their run_at
SELECT is((SELECT array_agg(run_id ORDER BY run_id) FROM queue_engine.runs WHERE status = 'delayed'),
          ARRAY[:delayed_old, :delayed_new]::bigint[], 'both delayed runs are still delayed');
SELECT is((SELECT count(*) FROM queue_engine.runs r JOIN runs_before b USING (run_id)
            WHERE r.status = 'delayed' AND r.run_at = b.run_at), 2::bigint, 'with their run_at');
-- 36-37: final states
SELECT is((SELECT array_agg(status::text || ':' || run_id ORDER BY run_id) FROM queue_engine.runs
            WHERE run_id IN (:x1, :x2, :x3, :x4)),
          ARRAY['completed:' || :x1, 'failed:' || :x2, 'completed:' || :x3, 'completed:' || :x4],
          'rot_x runs finished as told');
SELECT is(pg_temp.checks(), NULL, 'check_consistency finds nothing to repair at the end');

SELECT * FROM finish();
ROLLBACK;
