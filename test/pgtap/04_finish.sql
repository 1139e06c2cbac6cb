-- 04_finish.sql: heartbeat, complete, complete_batch, fail, cancel (SPEC "Executing").
BEGIN;
SELECT plan(116);

-- Enqueue one run on queue q and start it; returns its id.
CREATE FUNCTION pg_temp.started(q text, payload jsonb DEFAULT '{}') RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	id bigint := queue_engine.enqueue(q, payload);
	got bigint;
BEGIN
	-- Give it the best place in its queue so that it is the one started.
	UPDATE queue_engine.runs SET priority = 1000000 WHERE run_id = id;
	SELECT d.run_id INTO got FROM queue_engine.dequeue(ARRAY[q], 1) d;
	IF got IS DISTINCT FROM id THEN
		RAISE EXCEPTION 'started(%): dequeued % instead of %', q, got, id;
	END IF;
	UPDATE queue_engine.runs SET priority = 0 WHERE run_id = id;
	RETURN id;
END;
$$;

-- Byte length of the longest string anywhere in a jsonb value.
CREATE FUNCTION pg_temp.longest_string(j jsonb) RETURNS int LANGUAGE sql AS $$
	SELECT max(octet_length(v #>> '{}'))::int FROM jsonb_path_query(j, 'strict $.**') v
	 WHERE jsonb_typeof(v) = 'string'
$$;

SELECT queue_engine.create_queue('f1') \gset

---------------------------------------------------------------------------
-- complete
---------------------------------------------------------------------------
SELECT pg_temp.started('f1') AS c1 \gset
SELECT is(queue_engine.complete(:c1, '{"ok": 1}', attempt => 1), true, 'complete returns true');
SELECT is((SELECT ROW(g.status, g.output, g.finished_at, g.lease_expires_at)::text FROM queue_engine.get_run(:c1) g),
          ROW('completed'::queue_engine.run_status, '{"ok": 1}'::jsonb, now(), NULL::timestamptz)::text,
          'the run is completed with its output, finished now, lease cleared');
SELECT is(queue_engine.complete(:c1, '{"ok": 2}'), false, 'a second complete returns false');
SELECT is((SELECT g.output FROM queue_engine.get_run(:c1) g), '{"ok": 1}'::jsonb, 'and changes nothing');

SELECT queue_engine.enqueue('f1') AS cq \gset
SELECT is(queue_engine.complete(:cq), false, 'complete of a queued run returns false');
SELECT is((SELECT g.status FROM queue_engine.get_run(:cq) g), 'queued'::queue_engine.run_status, 'and leaves it queued');
SELECT queue_engine.cancel(:cq) \gset

SELECT pg_temp.started('f1') AS c2 \gset
SELECT is(queue_engine.complete(:c2, attempt => 2), false, 'complete of another attempt returns false');
SELECT is((SELECT g.status FROM queue_engine.get_run(:c2) g), 'executing'::queue_engine.run_status, 'and leaves it executing');
SELECT is(queue_engine.complete(:c2), true, 'complete without output');
SELECT is((SELECT g.output FROM queue_engine.get_run(:c2) g), NULL::jsonb, 'stores a NULL output');

SELECT throws_ok($$SELECT queue_engine.complete(987654321)$$, 'P0002', 'run 987654321 does not exist', 'complete of an unknown run');
SELECT throws_ok($$SELECT queue_engine.complete(NULL)$$, '22004', 'run_id must not be null', 'complete of NULL');

---------------------------------------------------------------------------
-- Fencing a stale attempt
---------------------------------------------------------------------------
SELECT pg_temp.started('f1') AS s1 \gset
SELECT is(queue_engine.fail(:s1, '{"message": "first"}', attempt => 1, retry_in => '0'), 'queued'::queue_engine.run_status,
          'fail with retry_in 0 returns queued');
SELECT is((SELECT ROW(g.status, g.attempt, g.run_at, g.lease_expires_at, g.last_error)::text FROM queue_engine.get_run(:s1) g),
          ROW('queued'::queue_engine.run_status, 1, now(), NULL::timestamptz, '{"message": "first"}'::jsonb)::text,
          'the run is queued at once with the error recorded and no lease');
SELECT is((SELECT d.attempt FROM queue_engine.dequeue(ARRAY['f1']) d), 2, 'the retry is attempt 2');
SELECT is(queue_engine.complete(:s1, '{"stale": true}', attempt => 1), false, 'complete of stale attempt 1 returns false');
SELECT is(queue_engine.heartbeat(:s1, 1), NULL::timestamptz, 'heartbeat of stale attempt 1 returns NULL');
SELECT is(queue_engine.fail(:s1, '{"message": "stale"}', attempt => 1), NULL::queue_engine.run_status,
          'fail of stale attempt 1 returns NULL');
SELECT is((SELECT ROW(g.status, g.attempt, g.output, g.last_error)::text FROM queue_engine.get_run(:s1) g),
          ROW('executing'::queue_engine.run_status, 2, NULL::jsonb, '{"message": "first"}'::jsonb)::text,
          'the stale calls changed nothing');
SELECT is(queue_engine.heartbeat(:s1, 2, extend => '10 minutes'), now() + interval '10 minutes',
          'heartbeat of the current attempt extends the lease');
SELECT is((SELECT g.lease_expires_at FROM queue_engine.get_run(:s1) g), now() + interval '10 minutes', 'the new lease is stored');
SELECT is(queue_engine.complete(:s1, '{"done": 2}', attempt => 2), true, 'complete of the current attempt returns true');
SELECT is(queue_engine.heartbeat(:s1, 2), NULL::timestamptz, 'heartbeat after complete returns NULL');
SELECT is(queue_engine.fail(:s1, '{"message": "late"}'), NULL::queue_engine.run_status, 'fail after complete returns NULL');
SELECT is((SELECT ROW(g.status, g.output, g.last_error)::text FROM queue_engine.get_run(:s1) g),
          ROW('completed'::queue_engine.run_status, '{"done": 2}'::jsonb, '{"message": "first"}'::jsonb)::text,
          'a completed run never changes again');

---------------------------------------------------------------------------
-- heartbeat
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('f1') AS hq \gset
SELECT is(queue_engine.heartbeat(:hq), NULL::timestamptz, 'heartbeat of a queued run returns NULL');
SELECT queue_engine.cancel(:hq) \gset
SELECT throws_ok($$SELECT queue_engine.heartbeat(987654321)$$, 'P0002', 'run 987654321 does not exist', 'heartbeat of an unknown run');
SELECT pg_temp.started('f1') AS h1 \gset
SELECT throws_ok(format('SELECT queue_engine.heartbeat(%s, extend => %L)', :h1, '0'), '22023',
                 'extend must be a positive interval: 00:00:00', 'heartbeat with a zero extend');
SELECT is(queue_engine.heartbeat(:h1), now() + interval '5 minutes', 'heartbeat without extend uses the queue lease the attempt got');
SELECT queue_engine.complete(:h1) \gset

---------------------------------------------------------------------------
-- complete_batch
---------------------------------------------------------------------------
SELECT pg_temp.started('f1') AS b1 \gset
SELECT pg_temp.started('f1') AS b2 \gset
SELECT pg_temp.started('f1') AS b3 \gset
SELECT is(queue_engine.complete_batch(ARRAY[:b1, :b2, :b3]::bigint[], ARRAY['{"n": 1}', NULL, '{"n": 3}']::jsonb[],
                                      ARRAY[1, 1, 2]), 2::bigint,
          'complete_batch completes the runs of matching attempts only');
SELECT is((SELECT array_agg(ROW(g.status, g.output)::text ORDER BY g.run_id)
             FROM unnest(ARRAY[:b1, :b2, :b3]::bigint[]) u(id), queue_engine.get_run(u.id) g),
          ARRAY[ROW('completed'::queue_engine.run_status, '{"n": 1}'::jsonb)::text,
                ROW('completed'::queue_engine.run_status, NULL::jsonb)::text,
                ROW('executing'::queue_engine.run_status, NULL::jsonb)::text],
          'outputs are stored by position; the fenced run is still executing');
SELECT is(queue_engine.complete_batch(ARRAY[:b1, :b2]::bigint[]), 0::bigint, 'completing them again completes none');
SELECT throws_ok(format('SELECT queue_engine.complete_batch(ARRAY[%s, 987654321]::bigint[])', :b3), 'P0002',
                 'run 987654321 does not exist', 'complete_batch with an unknown id is an error');
SELECT is((SELECT g.status FROM queue_engine.get_run(:b3) g), 'executing'::queue_engine.run_status,
          'and completed nothing');
SELECT throws_ok(format('SELECT queue_engine.complete_batch(ARRAY[%s, %s]::bigint[], ARRAY[%L]::jsonb[])', :b3, :b1, '{}'), '2202E',
                 'outputs has 1 elements but run_ids has 2', 'outputs must match run_ids');
SELECT throws_ok(format('SELECT queue_engine.complete_batch(ARRAY[%s]::bigint[], attempts => ARRAY[1, 1, 1])', :b3), '2202E',
                 'attempts has 3 elements but run_ids has 1', 'attempts must match run_ids');
SELECT throws_ok(format('SELECT queue_engine.complete_batch(ARRAY[%s, NULL]::bigint[])', :b3), '22004',
                 'run_ids must not contain nulls', 'run_ids with a NULL is an error');
SELECT throws_ok($$SELECT queue_engine.complete_batch(NULL)$$, '22004', 'run_ids must not be null', 'NULL run_ids is an error');
SELECT is(queue_engine.complete_batch(ARRAY[:b3]::bigint[]), 1::bigint, 'complete_batch without outputs or attempts');
SELECT is(queue_engine.complete_batch(ARRAY[]::bigint[]), 0::bigint, 'an empty complete_batch completes nothing');

---------------------------------------------------------------------------
-- fail: backoff, retry_in, permanent, exhausted attempts
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('fb', max_attempts => 10, retry_backoff => '10 seconds', retry_backoff_max => '1 minute') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('fb', array_fill('{}'::jsonb, ARRAY[30])) \gset
CREATE TEMP TABLE fb_result AS
SELECT d.run_id, d.attempt, queue_engine.fail(d.run_id, '{"message": "boom"}') AS status
  FROM queue_engine.dequeue(ARRAY['fb'], 30) d;
SELECT is((SELECT array_agg(DISTINCT status::text || '/' || attempt) FROM fb_result), ARRAY['delayed/1'],
          'fail of attempt 1 (of 10) returns delayed for all 30 runs');
SELECT is((SELECT count(*)::int FROM queue_engine.runs r JOIN fb_result USING (run_id)
            WHERE r.run_at BETWEEN now() + interval '8 seconds' AND now() + interval '12 seconds'), 30,
          'attempt 1: run_at = now() + 10s +-20%');
SELECT cmp_ok((SELECT count(DISTINCT r.run_at)::int FROM queue_engine.runs r JOIN fb_result USING (run_id)), '>', 1,
              'the backoff is jittered');
SELECT is((SELECT count(*)::int FROM queue_engine.runs r JOIN fb_result USING (run_id)
            WHERE r.status = 'delayed' AND r.last_error = '{"message": "boom"}' AND r.lease_expires_at IS NULL
              AND r.finished_at IS NULL), 30, 'the retrying runs are delayed, keep the error, and hold no lease');

-- Attempts 2 (retry_in 0) and 3 (backoff 10s * 2^2 = 40s).
UPDATE queue_engine.runs r SET run_at = now() - interval '1 second' FROM fb_result f WHERE r.run_id = f.run_id;
SELECT count(queue_engine.fail(d.run_id, '{"message": "again"}', retry_in => '0'))
  FROM queue_engine.dequeue(ARRAY['fb'], 30) d \gset
DELETE FROM fb_result;
INSERT INTO fb_result
SELECT d.run_id, d.attempt, queue_engine.fail(d.run_id, '{"message": "boom"}') FROM queue_engine.dequeue(ARRAY['fb'], 30) d;
SELECT is((SELECT array_agg(DISTINCT status::text || '/' || attempt) FROM fb_result), ARRAY['delayed/3'],
          'fail of attempt 3 returns delayed');
SELECT is((SELECT count(*)::int FROM queue_engine.runs r JOIN fb_result USING (run_id)
            WHERE r.run_at BETWEEN now() + interval '32 seconds' AND now() + interval '48 seconds'), 30,
          'attempt 3: run_at = now() + 10s * 2^2 +-20%');

-- Attempt 4: 10s * 2^3 = 80s is capped at 1 minute, then jittered.
UPDATE queue_engine.runs r SET run_at = now() - interval '1 second' FROM fb_result f WHERE r.run_id = f.run_id;
DELETE FROM fb_result;
INSERT INTO fb_result
SELECT d.run_id, d.attempt, queue_engine.fail(d.run_id, '{"message": "boom"}') FROM queue_engine.dequeue(ARRAY['fb'], 30) d;
SELECT is((SELECT array_agg(DISTINCT attempt) FROM fb_result), ARRAY[4], 'the runs are at attempt 4');
SELECT is((SELECT count(*)::int FROM queue_engine.runs r JOIN fb_result USING (run_id)
            WHERE r.run_at BETWEEN now() + interval '48 seconds' AND now() + interval '72 seconds'), 30,
          'attempt 4: backoff capped at retry_backoff_max (1 minute) +-20%');

-- Attempt 40 with a long backoff: capped, no overflow.
UPDATE queue_engine.runs r SET run_at = now() - interval '1 second', attempt = 39, max_attempts = 50
  FROM fb_result f WHERE r.run_id = f.run_id;
SELECT queue_engine.alter_queue('fb', retry_backoff => '1 hour', retry_backoff_max => '1 day') \gset
DELETE FROM fb_result;
INSERT INTO fb_result
SELECT d.run_id, d.attempt, queue_engine.fail(d.run_id, '{"message": "boom"}') FROM queue_engine.dequeue(ARRAY['fb'], 30) d;
SELECT is((SELECT count(*)::int FROM queue_engine.runs r JOIN fb_result USING (run_id)
            WHERE fb_result.attempt = 40 AND r.status = 'delayed'
              AND r.run_at BETWEEN now() + interval '0.8 day' AND now() + interval '1.2 day'), 30,
          'attempt 40 with a 1 hour backoff: capped at 1 day +-20%');

SELECT pg_temp.started('f1') AS r5 \gset
SELECT is(queue_engine.fail(:r5, '{"message": "later"}', retry_in => '5 minutes'), 'delayed'::queue_engine.run_status,
          'fail with retry_in returns delayed');
SELECT is((SELECT g.run_at FROM queue_engine.get_run(:r5) g), now() + interval '5 minutes', 'run_at is exactly now() + retry_in');
SELECT queue_engine.cancel(:r5) \gset

SELECT pg_temp.started('f1') AS rp \gset
SELECT is(queue_engine.fail(:rp, '{"message": "fatal"}', permanent => true), 'failed'::queue_engine.run_status,
          'permanent fail on attempt 1 of 3 returns failed');
SELECT is((SELECT ROW(g.status, g.finished_at, g.lease_expires_at, g.last_error)::text FROM queue_engine.get_run(:rp) g),
          ROW('failed'::queue_engine.run_status, now(), NULL::timestamptz, '{"message": "fatal"}'::jsonb)::text,
          'the failed run is finished now, with its error');
SELECT pg_temp.started('f1') AS rp2 \gset
SELECT is(queue_engine.fail(:rp2, '{"message": "fatal"}', retry_in => '0', permanent => true), 'failed'::queue_engine.run_status,
          'permanent wins over retry_in');

SELECT queue_engine.create_queue('f2', max_attempts => 2, retry_backoff => '0') \gset
SELECT pg_temp.started('f2') AS x1 \gset
SELECT is(queue_engine.fail(:x1, '{"message": "a1"}'), 'queued'::queue_engine.run_status,
          'a zero retry_backoff requeues at once');
SELECT is((SELECT d.attempt FROM queue_engine.dequeue(ARRAY['f2']) d), 2, 'attempt 2 of 2 starts');
SELECT is(queue_engine.fail(:x1, '{"message": "a2"}', retry_in => '0'), 'failed'::queue_engine.run_status,
          'fail of the last attempt returns failed, whatever retry_in says');
SELECT is((SELECT ROW(g.status, g.attempt, g.finished_at, g.last_error)::text FROM queue_engine.get_run(:x1) g),
          ROW('failed'::queue_engine.run_status, 2, now(), '{"message": "a2"}'::jsonb)::text,
          'attempts exhausted: failed with the last error');
SELECT is(queue_engine.cancel(:x1), false, 'cancel of a failed run returns false');

SELECT pg_temp.started('f1') AS bad \gset
SELECT throws_ok(format('SELECT queue_engine.fail(%s, %L, retry_in => %L)', :bad, '{}', '-1 second'), '22023',
                 'retry_in must not be negative: -00:00:01', 'negative retry_in is an error');
SELECT throws_ok(format('SELECT queue_engine.fail(%s, NULL)', :bad), '22004', 'error must not be null', 'NULL error is an error');
SELECT throws_ok($$SELECT queue_engine.fail(987654321, '{}')$$, 'P0002', 'run 987654321 does not exist', 'fail of an unknown run');
SELECT is((SELECT g.status FROM queue_engine.get_run(:bad) g), 'executing'::queue_engine.run_status, 'bad fail calls changed nothing');
SELECT queue_engine.enqueue('f1') AS fq \gset
SELECT is(queue_engine.fail(:fq, '{}'), NULL::queue_engine.run_status, 'fail of a queued run returns NULL');
SELECT queue_engine.cancel(:fq) \gset

---------------------------------------------------------------------------
-- Stored errors are trimmed
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('fe', max_attempts => 100) \gset
SELECT pg_temp.started('fe') AS e1 \gset
SELECT queue_engine.fail(:e1, jsonb_build_object('message', repeat('x', 10 * 1024 * 1024), 'code', 'E1'), retry_in => '0') \gset
SELECT cmp_ok((SELECT octet_length(g.last_error::text) FROM queue_engine.get_run(:e1) g), '<=', 65536,
              'a 10 MB error is stored in at most 65536 bytes');
SELECT is((SELECT ROW(g.last_error->'truncated', g.last_error->>'code', g.last_error->>'message' = repeat('x', 16384))::text
             FROM queue_engine.get_run(:e1) g),
          ROW('true'::jsonb, 'E1', true)::text,
          'the message is cut to max_error_field_bytes (16384), other fields kept, "truncated": true');

SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, jsonb_build_object('message', 'short', 'stack', repeat('s', 200000),
                                                 'details', jsonb_build_object('inner', jsonb_build_array(repeat('i', 100000), 'ok'))),
                         retry_in => '0') \gset
SELECT is((SELECT ROW(pg_temp.longest_string(g.last_error) <= 16384, g.last_error->>'message', g.last_error #>> '{details,inner,1}',
                      g.last_error->'truncated')::text
             FROM queue_engine.get_run(:e1) g),
          ROW(true, 'short', 'ok', 'true'::jsonb)::text, 'string values at any depth are cut; short ones kept');

SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, (SELECT jsonb_object_agg('f' || g, repeat('z', 100000)) FROM generate_series(1, 6) g),
                         retry_in => '0') \gset
SELECT is((SELECT ROW(octet_length(g.last_error::text) <= 65536, g.last_error->'truncated',
                      (SELECT count(*) FROM jsonb_object_keys(g.last_error)))::text
             FROM queue_engine.get_run(:e1) g),
          ROW(true, 'true'::jsonb, 7::bigint)::text,
          'six 100 kB fields: all kept, cut so the whole error fits 65536 bytes');

SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, (SELECT jsonb_build_object('items', jsonb_agg('item-' || g)) FROM generate_series(1, 100000) g),
                         retry_in => '0') \gset
SELECT is((SELECT ROW(octet_length(g.last_error::text) <= 65536, g.last_error->'truncated')::text
             FROM queue_engine.get_run(:e1) g),
          ROW(true, 'true'::jsonb)::text, 'an error of 100000 short strings is still stored within 65536 bytes');

SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, jsonb_build_object('message', 'ab' || repeat('€', 10000)), retry_in => '0') \gset
SELECT is((SELECT g.last_error->>'message' FROM queue_engine.get_run(:e1) g), 'ab' || repeat('€', 5460),
          'a multibyte message is cut on a character boundary (16382 of 16384 bytes)');
SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, jsonb_build_object('message', repeat('é', 10000)), retry_in => '0') \gset
SELECT is((SELECT g.last_error->>'message' FROM queue_engine.get_run(:e1) g), repeat('é', 8192),
          'a 2-byte character message is cut to exactly 16384 bytes');

SET LOCAL queue_engine.max_error_field_bytes = 100;
SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, jsonb_build_object('message', repeat('m', 500)), retry_in => '0') \gset
SELECT is((SELECT g.last_error FROM queue_engine.get_run(:e1) g),
          jsonb_build_object('message', repeat('m', 100), 'truncated', true),
          'queue_engine.max_error_field_bytes sets the cut');
RESET queue_engine.max_error_field_bytes;

SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, '"boom"', retry_in => '0') \gset
SELECT is((SELECT g.last_error FROM queue_engine.get_run(:e1) g), '{"message": "boom"}'::jsonb,
          'a string error is stored as {"message": ...}');
SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, '[1, "two"]', retry_in => '0') \gset
SELECT is((SELECT g.last_error FROM queue_engine.get_run(:e1) g), '{"message": "[1, \"two\"]"}'::jsonb,
          'an array error is stored as {"message": <its text>}');
SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, '42', retry_in => '0') \gset
SELECT is((SELECT g.last_error FROM queue_engine.get_run(:e1) g), '{"message": "42"}'::jsonb,
          'a number error is stored as {"message": "42"}');
SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, to_jsonb(repeat('y', 10 * 1024 * 1024)), retry_in => '0') \gset
SELECT is((SELECT g.last_error FROM queue_engine.get_run(:e1) g),
          jsonb_build_object('message', repeat('y', 16384), 'truncated', true),
          'a 10 MB string error becomes a cut message with "truncated": true');
SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fe']) d \gset
SELECT queue_engine.fail(:e1, '{"message": "x", "code": 42, "nested": {"a": [1, "b", null]}}', retry_in => '0') \gset
SELECT is((SELECT g.last_error FROM queue_engine.get_run(:e1) g),
          '{"message": "x", "code": 42, "nested": {"a": [1, "b", null]}}'::jsonb,
          'a small object error is stored unchanged, without "truncated"');

---------------------------------------------------------------------------
-- cancel
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('cl', concurrency_limit => 1) \gset
SELECT queue_engine.enqueue('cl') AS k1 \gset
SELECT queue_engine.enqueue('cl') AS k2 \gset
SELECT is((SELECT array_agg(run_id) FROM queue_engine.dequeue(ARRAY['cl'], 5)), ARRAY[:k1]::bigint[], 'limit 1: the first run starts');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['cl'], 5)), 0, 'and the second waits');
SELECT is(queue_engine.cancel(:k1, 'stop'), true, 'cancel of an executing run returns true');
SELECT is((SELECT array_agg(run_id) FROM queue_engine.dequeue(ARRAY['cl'], 5)), ARRAY[:k2]::bigint[],
          'its slot is free at once: the next run starts');
SELECT is((SELECT ROW(g.status, g.finished_at, g.lease_expires_at, g.last_error)::text FROM queue_engine.get_run(:k1) g),
          ROW('canceled'::queue_engine.run_status, now(), NULL::timestamptz,
              '{"message": "canceled: stop", "reason": "stop", "canceled": true}'::jsonb)::text,
          'the canceled run is finished, without a lease, with the reason');
SELECT is(ROW(queue_engine.complete(:k1), queue_engine.heartbeat(:k1), queue_engine.fail(:k1, '{}'))::text,
          ROW(false, NULL::timestamptz, NULL::queue_engine.run_status)::text,
          'the canceled attempt''s complete/heartbeat/fail return false/NULL/NULL');
SELECT is(queue_engine.cancel(:k1), false, 'cancel of a canceled run returns false');
SELECT is((SELECT g.status FROM queue_engine.get_run(:k1) g), 'canceled'::queue_engine.run_status, 'it stays canceled');

SELECT queue_engine.enqueue('cl') AS kq \gset
SELECT queue_engine.enqueue('cl', delay => '1 hour') AS kd \gset
SELECT is(ROW(queue_engine.cancel(:kq), queue_engine.cancel(:kd))::text, ROW(true, true)::text,
          'cancel of a queued and a delayed run returns true');
SELECT is((SELECT array_agg(g.status ORDER BY g.run_id) FROM unnest(ARRAY[:kq, :kd]::bigint[]) u(id), queue_engine.get_run(u.id) g),
          ARRAY['canceled', 'canceled']::queue_engine.run_status[], 'both are canceled');
SELECT queue_engine.complete(:k2) \gset
SELECT is(queue_engine.cancel(:k2), false, 'cancel of a completed run returns false');
SELECT is((SELECT g.status FROM queue_engine.get_run(:k2) g), 'completed'::queue_engine.run_status, 'it stays completed');
SELECT throws_ok($$SELECT queue_engine.cancel(987654321)$$, 'P0002', 'run 987654321 does not exist', 'cancel of an unknown run');
SELECT throws_ok($$SELECT queue_engine.cancel(NULL)$$, '22004', 'run_id must not be null', 'cancel of NULL');

---------------------------------------------------------------------------
-- Output size limit
---------------------------------------------------------------------------
SELECT '{"data": "' || repeat('o', 200) || '"}' AS bigo \gset
SELECT pg_column_size(:'bigo'::jsonb) AS bigosz \gset
SELECT pg_temp.started('f1') AS o1 \gset
SELECT pg_temp.started('f1') AS o2 \gset
SELECT set_config('queue_engine.max_output_bytes', (:bigosz - 1)::text, true) \gset
SELECT throws_ok(format('SELECT queue_engine.complete(%s, %L::jsonb)', :o1, :'bigo'), '54000',
                 format('output of %s bytes exceeds queue_engine.max_output_bytes (%s bytes)', :bigosz, :bigosz - 1),
                 'an output over max_output_bytes is refused');
SELECT throws_ok(format('SELECT queue_engine.complete_batch(ARRAY[%s, %s]::bigint[], ARRAY[%L, %L]::jsonb[])', :o1, :o2, '{}', :'bigo'),
                 '54000', format('outputs[2] of %s bytes exceeds queue_engine.max_output_bytes (%s bytes)', :bigosz, :bigosz - 1),
                 'complete_batch refuses an output over max_output_bytes');
SELECT is((SELECT array_agg(g.status) FROM unnest(ARRAY[:o1, :o2]::bigint[]) u(id), queue_engine.get_run(u.id) g),
          ARRAY['executing', 'executing']::queue_engine.run_status[], 'refused outputs complete nothing');
SELECT set_config('queue_engine.max_output_bytes', :'bigosz', true) \gset
SELECT is(queue_engine.complete(:o1, :'bigo'::jsonb), true, 'an output of exactly max_output_bytes is accepted');
RESET queue_engine.max_output_bytes;
SELECT queue_engine.complete(:o2) \gset

---------------------------------------------------------------------------
-- complete() writes finished_runs by hand (finish.c, complete_direct): the
-- row is what the statement writes, and a trigger someone adds to
-- finished_runs or to an executing segment gets a real statement.
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('fd', max_attempts => 5, lease => '7 minutes') \gset
SELECT queue_engine.enqueue('fd', jsonb_build_object('big', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)),
                            idempotency_key => 'fd-1', tags => ARRAY['t1', 't2'], max_attempts => 4) AS d1 \gset
SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fd'], 1, worker => 'w-a') d \gset
SELECT queue_engine.fail(:d1, '{"message": "first try"}', retry_in => '0') \gset
SELECT d.attempt FROM queue_engine.dequeue(ARRAY['fd'], 1, worker => 'w-b') d \gset
SELECT is(queue_engine.complete(:d1, '{"done": true}', attempt => 2), true, 'a retried run with a toasted payload completes');
SELECT is((SELECT ROW(g.status, g.attempt, g.max_attempts, g.output, g.last_error->>'message', g.idempotency_key, g.tags,
                      g.finished_at, g.started_at IS NOT NULL, g.lease_expires_at,
                      length(g.payload->>'big'), g.payload = jsonb_build_object('big', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)))::text
             FROM queue_engine.get_run(:d1) g),
          ROW('completed'::queue_engine.run_status, 2, 4, '{"done": true}'::jsonb, 'first try', 'fd-1', ARRAY['t1', 't2'],
              now(), true, NULL::timestamptz, 128000, true)::text,
          'its finished row keeps attempt, max_attempts, last error, idempotency key, tags and the whole payload');
SELECT is((SELECT ROW(f.worker, (f.meta).attempt, (f.meta).started_at, (f.meta).worker, (f.meta).concurrency_key)::text
             FROM queue_engine.finished_runs f WHERE f.run_id = :d1),
          ROW('w-b', NULL::int, NULL::timestamptz, NULL::text, NULL::text)::text,
          'the worker is the column, and meta holds no attempt, start, worker or key of its own');
SELECT pg_temp.started('fd') AS d2 \gset
SELECT queue_engine.complete(:d2) \gset
SELECT is((SELECT f.meta IS NULL FROM queue_engine.finished_runs f WHERE f.run_id = :d2), true,
          'a run with nothing in meta is finished with meta NULL');
SELECT is((SELECT count(*)::int FROM queue_engine.idempotency_keys WHERE idempotency_key = 'fd-1'), 1,
          'the idempotency key stays taken after complete');

CREATE TEMP TABLE finish_log (what text, run_id bigint);
CREATE FUNCTION pg_temp.log_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO finish_log VALUES (TG_OP || ' ' || TG_TABLE_NAME, CASE WHEN TG_OP = 'DELETE' THEN OLD.run_id ELSE NEW.run_id END);
	RETURN NULL;
END $$;
CREATE TRIGGER finish_log AFTER INSERT ON queue_engine.finished_runs
	FOR EACH ROW EXECUTE FUNCTION pg_temp.log_finish();
SELECT pg_temp.started('fd') AS d3 \gset
SELECT pg_temp.started('fd') AS d4 \gset
SELECT is(queue_engine.complete(:d3, '{"n": 3}'), true, 'complete with an insert trigger on finished_runs');
SELECT is(queue_engine.complete_batch(ARRAY[:d4]::bigint[], ARRAY['{"n": 4}']::jsonb[]), 1::bigint,
          'complete_batch with an insert trigger on finished_runs');
SELECT is((SELECT array_agg(what || ' ' || run_id ORDER BY run_id) FROM finish_log),
          ARRAY['INSERT finished_runs ' || :d3, 'INSERT finished_runs ' || :d4],
          'the trigger fired for both');
SELECT is((SELECT array_agg(f.output ORDER BY f.run_id) FROM queue_engine.finished_runs f WHERE f.run_id IN (:d3, :d4)),
          ARRAY['{"n": 3}', '{"n": 4}']::jsonb[], 'and the runs are finished with their outputs');
DROP TRIGGER finish_log ON queue_engine.finished_runs;

CREATE TRIGGER finish_log AFTER DELETE ON queue_engine.executing_0
	FOR EACH ROW EXECUTE FUNCTION pg_temp.log_finish();
CREATE TRIGGER finish_log AFTER DELETE ON queue_engine.executing_1
	FOR EACH ROW EXECUTE FUNCTION pg_temp.log_finish();
SELECT pg_temp.started('fd') AS d5 \gset
-- (started() moved the row through the runs view: a delete too)
TRUNCATE finish_log;
SELECT is(queue_engine.complete(:d5), true, 'complete with a delete trigger on the executing segments');
SELECT is((SELECT array_agg(run_id) FROM finish_log WHERE what LIKE 'DELETE executing_%'), ARRAY[:d5]::bigint[],
          'the delete trigger fired');
DROP TRIGGER finish_log ON queue_engine.executing_0;
DROP TRIGGER finish_log ON queue_engine.executing_1;
SELECT pg_temp.started('fd') AS d6 \gset
SELECT is(queue_engine.complete(:d6), true, 'once the triggers are gone, complete goes by hand again');
SELECT is((SELECT count(*)::int FROM finish_log), 1, 'and fires nothing');
SELECT is((SELECT g.status FROM queue_engine.get_run(:d6) g), 'completed'::queue_engine.run_status, 'and the run is completed');

-- A read-only transaction cannot complete a run (the statement says so).
SELECT pg_temp.started('fd') AS d9 \gset
SAVEPOINT read_only;
SET LOCAL transaction_read_only = on;
SELECT throws_ok(format('SELECT queue_engine.complete(%s)', :d9), '25006', NULL,
                 'complete in a read-only transaction is refused');
SELECT throws_ok(format('SELECT queue_engine.complete_batch(ARRAY[%s]::bigint[])', :d9), '25006', NULL,
                 'complete_batch in a read-only transaction is refused');
ROLLBACK TO SAVEPOINT read_only;
SELECT is((SELECT g.status FROM queue_engine.get_run(:d9) g), 'executing'::queue_engine.run_status,
          'and the run is still executing');

-- In the transaction that started it, and twice in one statement.
SELECT queue_engine.enqueue('fd') AS d7 \gset
SELECT is((SELECT array_agg(queue_engine.complete(d.run_id)) FROM queue_engine.dequeue(ARRAY['fd'], 1) d), ARRAY[true],
          'complete in the statement that dequeued the run');
SELECT pg_temp.started('fd') AS d8 \gset
SELECT is((SELECT array_agg(queue_engine.complete(:d8) ORDER BY i) FROM generate_series(1, 2) i), ARRAY[true, false],
          'a second complete of the run in the same statement returns false');

---------------------------------------------------------------------------
-- Bookkeeping after all of the above
---------------------------------------------------------------------------
SELECT is((SELECT array_agg(ROW(s.queue, s.queued, s.delayed, s.executing)::text ORDER BY s.queue) FROM queue_engine.queue_stats s),
          (SELECT array_agg(x.r ORDER BY x.queue) FROM
             (SELECT q.queue, ROW(q.queue,
                                  count(r.*) FILTER (WHERE r.status = 'queued'),
                                  count(r.*) FILTER (WHERE r.status = 'delayed'),
                                  count(r.*) FILTER (WHERE r.status = 'executing'))::text AS r
                FROM queue_engine.queues q LEFT JOIN queue_engine.runs r ON r.queue_id = q.queue_id
               WHERE q.dropped_at IS NULL GROUP BY q.queue) x),
          'queue_stats counts equal the runs');
SELECT is((SELECT array_agg(check_name || '=' || found ORDER BY check_name) FROM queue_engine.check_consistency(false)),
          ARRAY['children_waits_satisfied=0', 'executing_without_lease=0', 'lease_on_idle_run=0', 'orphan_idempotency_keys=0', 'queue_counts=0', 'ready_key_placement=0', 'runs_in_two_places=0', 'runs_of_unknown_queue=0', 'shared_queue_slots=0'],
          'check_consistency finds no drift');

SELECT * FROM finish();
ROLLBACK;
