-- 03_dequeue.sql: dequeue() ordering, limits, fairness, ttl and delayed runs (SPEC "Executing").
BEGIN;
SELECT plan(78);

-- Cancel every open run, so a scenario with dequeue(NULL, ...) starts from an empty engine.
CREATE FUNCTION pg_temp.reset_runs() RETURNS bigint LANGUAGE sql AS $$
	SELECT count(queue_engine.cancel(run_id)) FROM queue_engine.runs
	 WHERE status IN ('delayed', 'queued', 'executing', 'waiting')
$$;

-- k single-run dequeues, each recorded in order in got.
CREATE TEMP TABLE got (n serial, run_id bigint, queue text, tenant text);
CREATE FUNCTION pg_temp.take(k int, qs text[] DEFAULT NULL) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	c int := 0;
	r record;
BEGIN
	FOR i IN 1..k LOOP
		FOR r IN SELECT * FROM queue_engine.dequeue(qs, 1) LOOP
			INSERT INTO got (run_id, queue, tenant) VALUES (r.run_id, r.queue, r.tenant);
			c := c + 1;
		END LOOP;
	END LOOP;
	RETURN c;
END;
$$;

-- Number of windows of w consecutive entries of got (in order) whose entries do NOT cover
-- every one of the given values of column col; 0 means every window served them all.
CREATE FUNCTION pg_temp.bad_windows(col text, w int, want text[]) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	res bigint;
BEGIN
	EXECUTE format($q$
		WITH g AS (SELECT row_number() OVER (ORDER BY n) AS i, %1$I AS v FROM got)
		SELECT count(*) FROM g s
		 WHERE s.i + %2$s - 1 <= (SELECT max(i) FROM g)
		   AND NOT (SELECT array_agg(DISTINCT g2.v) FROM g g2 WHERE g2.i BETWEEN s.i AND s.i + %2$s - 1) @> %3$L::text[]
	$q$, col, w, want) INTO res;
	RETURN res;
END;
$$;

---------------------------------------------------------------------------
-- What dequeue returns and records
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('d1', lease => '3 minutes') \gset
SELECT queue_engine.enqueue('d1', '{"job": 1}', concurrency_key => 'ck', priority => 3) AS a1 \gset
SELECT is((SELECT ROW(d.*)::text FROM queue_engine.dequeue(ARRAY['d1'], lease => '42 seconds', worker => 'w-1') d),
          ROW(:a1::bigint, 'd1', 'default', 1, '{"job": 1}'::jsonb, 'ck', 3, now() + interval '42 seconds', NULL::jsonb)::text,
          'dequeue returns run_id, queue, tenant, attempt 1, payload, key, priority, lease expiry, resume NULL');
SELECT is((SELECT ROW(g.status, g.attempt, g.started_at, g.lease_expires_at)::text FROM queue_engine.get_run(:a1) g),
          ROW('executing'::queue_engine.run_status, 1, now(), now() + interval '42 seconds')::text,
          'the run is executing, attempt 1, started now, leased for the given lease');
SELECT is((SELECT worker FROM queue_engine.runs WHERE run_id = :a1), 'w-1', 'the worker name is recorded');
SELECT is(queue_engine.heartbeat(:a1), now() + interval '42 seconds', 'heartbeat extends by the lease given to dequeue');
SELECT queue_engine.enqueue('d1') AS a2 \gset
SELECT is((SELECT d.lease_expires_at FROM queue_engine.dequeue(ARRAY['d1']) d), now() + interval '3 minutes',
          'without a lease argument the queue''s lease applies');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['d1'], 10)), 0,
          'executing runs are not returned again');
SELECT is((SELECT ROW(s.queued, s.executing)::text FROM queue_engine.queue_stats s WHERE s.queue = 'd1'),
          ROW(0::bigint, 2::bigint)::text, 'queue_stats counts the two executing runs');

---------------------------------------------------------------------------
-- Order within a queue: priority, then run_at, then run_id
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('pr') \gset
SELECT queue_engine.enqueue('pr', priority => 0) AS pa \gset
SELECT queue_engine.enqueue('pr', priority => 5) AS pb \gset
SELECT queue_engine.enqueue('pr', priority => 5) AS pc \gset
SELECT queue_engine.enqueue('pr', priority => -1) AS pd \gset
SELECT queue_engine.enqueue('pr', priority => 10) AS pe \gset
DELETE FROM got;
SELECT pg_temp.take(5, ARRAY['pr']) \gset
SELECT is((SELECT array_agg(run_id ORDER BY n) FROM got),
          ARRAY[:pe, :pb, :pc, :pa, :pd]::bigint[], 'single dequeues follow priority, then run id');

SELECT queue_engine.create_queue('pr2') \gset
SELECT queue_engine.enqueue('pr2', priority => 0) AS qa \gset
SELECT queue_engine.enqueue('pr2', priority => 5) AS qb \gset
SELECT queue_engine.enqueue('pr2', priority => 5) AS qc \gset
SELECT queue_engine.enqueue('pr2', priority => -1) AS qd \gset
SELECT queue_engine.enqueue('pr2', priority => 10) AS qe \gset
SELECT set_eq($$SELECT run_id FROM queue_engine.dequeue(ARRAY['pr2'], 2)$$,
              ARRAY[:qe, :qb]::bigint[], 'a batch of 2 takes the two best runs');
SELECT set_eq($$SELECT run_id FROM queue_engine.dequeue(ARRAY['pr2'], 2)$$,
              ARRAY[:qc, :qa]::bigint[], 'the next batch takes the next two');

SELECT queue_engine.create_queue('ro') \gset
SELECT queue_engine.enqueue('ro', run_at => now() - interval '1 minute') AS x1 \gset
SELECT queue_engine.enqueue('ro', run_at => now() - interval '3 minutes') AS x2 \gset
SELECT queue_engine.enqueue('ro', run_at => now() - interval '2 minutes') AS x3 \gset
SELECT queue_engine.enqueue('ro', run_at => now() - interval '3 minutes') AS x4 \gset
SELECT queue_engine.enqueue('ro', priority => 1) AS x5 \gset
DELETE FROM got;
SELECT pg_temp.take(5, ARRAY['ro']) \gset
SELECT is((SELECT array_agg(run_id ORDER BY n) FROM got),
          ARRAY[:x5, :x2, :x4, :x3, :x1]::bigint[], 'priority first, then earlier run_at, then lower id');

-- The key-limited path keeps the same order: priority, then run id, skipping keys at their limit.
SELECT queue_engine.create_queue('kq', key_concurrency_limit => 2) \gset
SELECT queue_engine.enqueue('kq', '{"n": "k1p0a"}', concurrency_key => 'k1', priority => 0) \gset
SELECT queue_engine.enqueue('kq', '{"n": "k1p9"}', concurrency_key => 'k1', priority => 9) \gset
SELECT queue_engine.enqueue('kq', '{"n": "k1p0b"}', concurrency_key => 'k1', priority => 0) \gset
SELECT queue_engine.enqueue('kq', '{"n": "k1p3"}', concurrency_key => 'k1', priority => 3) \gset
SELECT queue_engine.enqueue('kq', '{"n": "k2p5"}', concurrency_key => 'k2', priority => 5) \gset
SELECT queue_engine.enqueue('kq', '{"n": "nokey1"}', priority => 1) \gset
SELECT queue_engine.enqueue('kq', '{"n": "nokey7"}', priority => 7) \gset
DELETE FROM got;
SELECT pg_temp.take(7, ARRAY['kq']) \gset
SELECT is((SELECT array_agg(r.payload->>'n' ORDER BY got.n) FROM got JOIN queue_engine.runs r USING (run_id)),
          ARRAY['k1p9', 'nokey7', 'k2p5', 'k1p3', 'nokey1'],
          'key limit 2: priority order across keys; k1 stops at 2 executing');

---------------------------------------------------------------------------
-- Paused queues
---------------------------------------------------------------------------
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('pa') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('pa', ARRAY['{}', '{}']::jsonb[]) \gset
SELECT queue_engine.pause_queue('pa') \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['pa'], 10)), 0, 'a paused queue starts nothing');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(NULL, 10)), 0, 'dequeue(NULL) skips a paused queue');
SELECT queue_engine.resume_queue('pa') \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['pa'], 10)), 2, 'a resumed queue starts its runs');

---------------------------------------------------------------------------
-- Queue limit
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('ql', concurrency_limit => 2) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('ql', array_fill('{}'::jsonb, ARRAY[5])) \gset
CREATE TEMP TABLE ql_started AS SELECT run_id FROM queue_engine.dequeue(ARRAY['ql'], 10);
SELECT is((SELECT count(*)::int FROM ql_started), 2, 'a queue with concurrency_limit 2 starts 2');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['ql'], 10)), 0, 'and no more while 2 execute');
SELECT queue_engine.complete((SELECT min(run_id) FROM ql_started)) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['ql'], 10)), 1, 'completing one frees one slot');
SELECT is((SELECT count(*)::int FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
            WHERE q.queue = 'ql' AND r.status = 'executing'), 2, 'never more than 2 executing');

---------------------------------------------------------------------------
-- Key limit
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('qk', key_concurrency_limit => 1) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('qk', ARRAY['{}', '{}']::jsonb[], concurrency_key => 'k1') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('qk', ARRAY['{}', '{}']::jsonb[], concurrency_key => 'k2') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('qk', ARRAY['{}', '{}']::jsonb[]) \gset
CREATE TEMP TABLE qk_started AS SELECT run_id, concurrency_key FROM queue_engine.dequeue(ARRAY['qk'], 10);
SELECT is((SELECT array_agg(coalesce(concurrency_key, '-') ORDER BY concurrency_key NULLS FIRST) FROM qk_started),
          ARRAY['-', '-', 'k1', 'k2'], 'key limit 1: one run per key starts, keyless runs are not key-limited');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['qk'], 10)), 0, 'nothing more while each key is at its limit');
SELECT queue_engine.complete((SELECT run_id FROM qk_started WHERE concurrency_key = 'k1')) \gset
SELECT is((SELECT array_agg(concurrency_key) FROM queue_engine.dequeue(ARRAY['qk'], 10)), ARRAY['k1'],
          'completing k1''s run lets exactly the next k1 run start');

---------------------------------------------------------------------------
-- Tenant limit
---------------------------------------------------------------------------
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('tla', tenant => 'tl') \gset
SELECT queue_engine.create_queue('tlb', tenant => 'tl') \gset
SELECT queue_engine.create_queue('free', tenant => 'free') \gset
SELECT queue_engine.set_tenant_limit('tl', 2) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('tla', array_fill('{}'::jsonb, ARRAY[3])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('tlb', array_fill('{}'::jsonb, ARRAY[3])) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(NULL, 10)), 2, 'tenant limit 2: 2 runs start across its queues');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['tla', 'tlb'], 10)), 0, 'nothing more while the tenant is at its limit');
SELECT count(*) FROM queue_engine.enqueue_batch('free', array_fill('{}'::jsonb, ARRAY[2])) \gset
SELECT is((SELECT array_agg(tenant) FROM queue_engine.dequeue(NULL, 10)), ARRAY['free', 'free'],
          'a tenant at its limit does not stop another tenant');
SELECT queue_engine.set_tenant_limit('tl', NULL) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(NULL, 10)), 4, 'removing the tenant limit lets the rest start');

---------------------------------------------------------------------------
-- A queue at its limit does not stop other queues
---------------------------------------------------------------------------
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('la', concurrency_limit => 1) \gset
SELECT queue_engine.create_queue('lb') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('la', array_fill('{}'::jsonb, ARRAY[4])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('lb', array_fill('{}'::jsonb, ARRAY[3])) \gset
SELECT is((SELECT array_agg(queue ORDER BY queue) FROM queue_engine.dequeue(NULL, 10)), ARRAY['la', 'lb', 'lb', 'lb'],
          'dequeue(NULL, 10): one from the limited queue, all from the other');
SELECT count(*) FROM queue_engine.enqueue_batch('lb', array_fill('{}'::jsonb, ARRAY[4])) \gset
DELETE FROM got;
SELECT pg_temp.take(4) \gset
SELECT is((SELECT array_agg(queue ORDER BY n) FROM got), ARRAY['lb', 'lb', 'lb', 'lb'],
          'every single-run dequeue(NULL, 1) returns a run of the other queue while la is at its limit');

---------------------------------------------------------------------------
-- Fairness across tenants
---------------------------------------------------------------------------
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('fa', tenant => 'A') \gset
SELECT queue_engine.create_queue('fb', tenant => 'B') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('fa', array_fill('{}'::jsonb, ARRAY[1000])) \gset
SELECT queue_engine.enqueue('fb') AS fb1 \gset
DELETE FROM got;
SELECT pg_temp.take(2) \gset
SELECT ok((SELECT :fb1::bigint = ANY (array_agg(run_id)) FROM got),
          'A has 1000 ready runs, B 1: B''s run is returned within 2 single-run dequeues');

SELECT count(*) FROM queue_engine.enqueue_batch('fb', array_fill('{}'::jsonb, ARRAY[3])) \gset
DELETE FROM got;
SELECT pg_temp.take(6) \gset
SELECT is(pg_temp.bad_windows('tenant', 2, ARRAY['A', 'B']), 0::bigint,
          'A (backlog) and B (3 runs): every 2 consecutive dequeues serve both');
SELECT is((SELECT count(*)::int FROM got WHERE tenant = 'B'), 3, 'B got its 3 runs in 6 dequeues');

SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('fc', tenant => 'C') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('fa', array_fill('{}'::jsonb, ARRAY[100])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('fb', array_fill('{}'::jsonb, ARRAY[10])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('fc', array_fill('{}'::jsonb, ARRAY[5])) \gset
DELETE FROM got;
SELECT pg_temp.take(3) \gset
SELECT is((SELECT count(DISTINCT tenant)::int FROM got), 3, '3 tenants with runs: 3 consecutive dequeue(NULL, 1) serve 3 distinct tenants');
SELECT pg_temp.take(9) \gset
SELECT is(pg_temp.bad_windows('tenant', 3, ARRAY['A', 'B', 'C']), 0::bigint,
          'every window of 3 consecutive single-run dequeues serves all 3 tenants');

-- A tenant whose only queue is at its limit has no startable runs: the other
-- two tenants must still each be served in every 2 consecutive dequeues.
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('fx', tenant => 'X', concurrency_limit => 1) \gset
SELECT queue_engine.create_queue('fy', tenant => 'Y') \gset
SELECT queue_engine.create_queue('fz', tenant => 'Z') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('fx', array_fill('{}'::jsonb, ARRAY[50])) \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['fx'], 1) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('fy', array_fill('{}'::jsonb, ARRAY[20])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('fz', array_fill('{}'::jsonb, ARRAY[20])) \gset
DELETE FROM got;
SELECT pg_temp.take(8) \gset
SELECT is((SELECT count(*)::int FROM got WHERE tenant = 'X'), 0, 'the tenant at its queue limit gets nothing');
SELECT is(pg_temp.bad_windows('tenant', 2, ARRAY['Y', 'Z']), 0::bigint,
          'with X blocked by its limit, Y and Z are each served in every 2 consecutive dequeues');

---------------------------------------------------------------------------
-- Fairness across the queues of one tenant
---------------------------------------------------------------------------
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('m1', tenant => 'M') \gset
SELECT queue_engine.create_queue('m2', tenant => 'M') \gset
SELECT queue_engine.create_queue('m3', tenant => 'M') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m1', array_fill('{}'::jsonb, ARRAY[100])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m2', array_fill('{}'::jsonb, ARRAY[10])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m3', array_fill('{}'::jsonb, ARRAY[5])) \gset
DELETE FROM got;
SELECT pg_temp.take(9) \gset
SELECT is(pg_temp.bad_windows('queue', 3, ARRAY['m1', 'm2', 'm3']), 0::bigint,
          'one tenant, 3 queues: every 3 consecutive dequeues serve all 3 queues');

-- Two tenants, one with 2 queues: both tenants alternate, and N's queues alternate within N.
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('n1', tenant => 'N') \gset
SELECT queue_engine.create_queue('n2', tenant => 'N') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('n1', array_fill('{}'::jsonb, ARRAY[50])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('n2', array_fill('{}'::jsonb, ARRAY[50])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m1', array_fill('{}'::jsonb, ARRAY[50])) \gset
DELETE FROM got;
SELECT pg_temp.take(8) \gset
SELECT is(pg_temp.bad_windows('tenant', 2, ARRAY['M', 'N']), 0::bigint, 'tenants M and N alternate');
SELECT is((SELECT array_agg(DISTINCT queue ORDER BY queue) FROM got WHERE tenant = 'N'), ARRAY['n1', 'n2'],
          'N''s turns go to both of its queues');
SELECT is((SELECT count(*) FILTER (WHERE queue = 'n1') - count(*) FILTER (WHERE queue = 'n2') FROM got), 0::bigint,
          'N''s 4 turns are split 2 and 2 between its queues');

-- Likewise within a tenant: with m1 at its limit, m2 and m3 are each served in every 2 dequeues.
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.alter_queue('m1', concurrency_limit => 1) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m1', array_fill('{}'::jsonb, ARRAY[50])) \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['m1'], 1) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m2', array_fill('{}'::jsonb, ARRAY[20])) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m3', array_fill('{}'::jsonb, ARRAY[20])) \gset
DELETE FROM got;
SELECT pg_temp.take(8) \gset
SELECT is(pg_temp.bad_windows('queue', 2, ARRAY['m2', 'm3']), 0::bigint,
          'with m1 blocked by its limit, m2 and m3 are each served in every 2 consecutive dequeues');

-- Priority does not order runs across queues.
SELECT pg_temp.reset_runs() \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m2', array_fill('{}'::jsonb, ARRAY[10]), priority => 100) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('m3', array_fill('{}'::jsonb, ARRAY[10]), priority => -100) \gset
DELETE FROM got;
SELECT pg_temp.take(4) \gset
SELECT is((SELECT count(*) FILTER (WHERE queue = 'm3') FROM got), 2::bigint,
          'a high priority in one queue does not starve another queue');

---------------------------------------------------------------------------
-- TTL: a run past its expiry is never started, even before expire_runs
---------------------------------------------------------------------------
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('ex') \gset
SELECT queue_engine.enqueue('ex', ttl => '1 minute') AS e_exp \gset
SELECT queue_engine.enqueue('ex') AS e_ok \gset
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = :e_exp;
SELECT is((SELECT array_agg(run_id) FROM queue_engine.dequeue(ARRAY['ex'], 10)), ARRAY[:e_ok]::bigint[],
          'a queued run past its expiry is not started; the other run is');
SELECT is((SELECT g.status FROM queue_engine.get_run(:e_exp) g), 'queued'::queue_engine.run_status,
          'it is still queued until expire_runs marks it');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(NULL, 10)), 0, 'dequeue(NULL) does not start it either');

SELECT queue_engine.create_queue('exk', key_concurrency_limit => 1) \gset
SELECT queue_engine.enqueue('exk', concurrency_key => 'k', ttl => '1 minute') AS ek1 \gset
SELECT queue_engine.enqueue('exk', ttl => '1 minute') AS ek2 \gset
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id IN (:ek1, :ek2);
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['exk'], 10)), 0,
          'a key-limited queue does not start expired runs (keyed or keyless)');

SELECT queue_engine.enqueue('ex', delay => '1 hour', ttl => '1 minute') AS e_dexp \gset
UPDATE queue_engine.runs SET run_at = now() - interval '2 seconds', expires_at = now() - interval '1 second' WHERE run_id = :e_dexp;
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['ex'], 10)), 0,
          'a due delayed run past its expiry is not started');

-- A retry is not subject to the ttl.
SELECT queue_engine.enqueue('ex', ttl => '1 minute') AS e_retry \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['ex'], 1) \gset
SELECT queue_engine.fail(:e_retry, '{"message": "x"}', retry_in => '0') \gset
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = :e_retry;
SELECT is((SELECT ROW(d.run_id, d.attempt)::text FROM queue_engine.dequeue(ARRAY['ex'], 10) d),
          ROW(:e_retry::bigint, 2)::text, 'a run that already started is retried past its expiry');

---------------------------------------------------------------------------
-- Delayed runs
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('dq') \gset
SELECT queue_engine.enqueue('dq', delay => '1 hour') AS dl \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['dq'], 10)), 0, 'a delayed run is not started before run_at');
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE run_id = :dl;
SELECT is((SELECT array_agg(run_id) FROM queue_engine.dequeue(ARRAY['dq'], 10)), ARRAY[:dl]::bigint[],
          'a delayed run past run_at starts before maintenance promoted it');
SELECT is((SELECT ROW(g.status, g.attempt)::text FROM queue_engine.get_run(:dl) g),
          ROW('executing'::queue_engine.run_status, 1)::text, 'and it is executing');

---------------------------------------------------------------------------
-- alter_queue: limits apply at once to new starts
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('al', concurrency_limit => 3) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('al', array_fill('{}'::jsonb, ARRAY[8])) \gset
CREATE TEMP TABLE al_started AS SELECT run_id FROM queue_engine.dequeue(ARRAY['al'], 10);
SELECT is((SELECT count(*)::int FROM al_started), 3, 'limit 3: 3 start');
SELECT queue_engine.alter_queue('al', concurrency_limit => 1) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['al'], 10)), 0, 'lowered to 1 with 3 executing: nothing starts');
SELECT queue_engine.complete((SELECT min(run_id) FROM al_started)) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['al'], 10)), 0, '2 executing, limit 1: nothing starts');
SELECT queue_engine.complete((SELECT max(run_id) FROM al_started)) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['al'], 10)), 0, '1 executing, limit 1: nothing starts');
SELECT queue_engine.complete((SELECT run_id FROM al_started ORDER BY run_id OFFSET 1 LIMIT 1)) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['al'], 10)), 1, 'under the limit again: exactly 1 starts');
SELECT queue_engine.alter_queue('al', concurrency_limit => 3) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['al'], 10)), 2, 'raised to 3: 2 more start');
SELECT queue_engine.alter_queue('al', clear => ARRAY['concurrency_limit']) \gset
SELECT is((SELECT concurrency_limit FROM queue_engine.queue_stats WHERE queue = 'al'), NULL::int,
          'clear => concurrency_limit makes the queue unlimited');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['al'], 10)), 2, 'unlimited: the remaining 2 start');

---------------------------------------------------------------------------
-- Bad input
---------------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM queue_engine.dequeue(NULL, 0)$$,
                 '22023', 'max_runs must be between 1 and 10000: 0', 'max_runs 0 is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.dequeue(NULL, 10001)$$,
                 '22023', 'max_runs must be between 1 and 10000: 10001', 'max_runs over 10000 is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.dequeue(NULL, NULL)$$,
                 '22004', 'max_runs must not be null', 'NULL max_runs is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.dequeue(ARRAY['d1', 'nope'])$$,
                 '42704', 'queue "nope" does not exist', 'an unknown queue name is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.dequeue(ARRAY[NULL]::text[])$$,
                 '22004', 'queues[1] must not be null', 'a NULL queue name is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.dequeue(NULL, 1, lease => '0')$$,
                 '22023', 'lease must be a positive interval: 00:00:00', 'a zero lease is an error');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY[]::text[], 10)), 0, 'an empty queue list returns nothing');

-- dequeue refuses REPEATABLE READ and SERIALIZABLE (checked from a second session when dblink is available).
CREATE FUNCTION pg_temp.isolation_check(level text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	conn text;
	msg text;
	state text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'dblink') THEN
		RETURN skip('dblink is not available', 1);
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'dblink') THEN
		CREATE EXTENSION dblink;
	END IF;
	conn := format('dbname=%s user=%s port=%s host=%s', quote_literal(current_database()), quote_literal(current_user),
	               current_setting('port'), split_part(current_setting('unix_socket_directories'), ',', 1));
	BEGIN
		PERFORM dblink_connect('qe_iso', conn);
	EXCEPTION WHEN OTHERS THEN
		RETURN skip('cannot open a second session: ' || SQLERRM, 1);
	END;
	PERFORM dblink_exec('qe_iso', 'BEGIN ISOLATION LEVEL ' || level);
	BEGIN
		PERFORM * FROM dblink('qe_iso', 'SELECT run_id FROM queue_engine.dequeue()') AS t(run_id bigint);
		state := 'no error';
	EXCEPTION WHEN OTHERS THEN
		state := SQLSTATE;
		msg := SQLERRM;
	END;
	PERFORM dblink_disconnect('qe_iso');
	RETURN is(state || ': ' || coalesce(msg, ''),
	          format('25000: dequeue() cannot run in a %s transaction', level),
	          'dequeue in ' || level || ' is refused');
END;
$$;
SELECT pg_temp.isolation_check('REPEATABLE READ');
SELECT pg_temp.isolation_check('SERIALIZABLE');


---------------------------------------------------------------------------
-- dequeue() claims by hand (claim.c, claim_direct): the executing row and
-- what dequeue returns are what the claim statement gives, and a delete
-- trigger someone adds to a ready segment gets the statement.
---------------------------------------------------------------------------
SELECT pg_temp.reset_runs() \gset
SELECT queue_engine.create_queue('dh', lease => '7 minutes') \gset
SELECT queue_engine.enqueue('dh', jsonb_build_object('big', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)),
                            concurrency_key => 'k-1', tags => ARRAY['t1']) AS h1 \gset
SELECT is((SELECT ROW(d.run_id, d.attempt, d.concurrency_key, d.lease_expires_at, d.resume IS NULL,
                      d.payload = jsonb_build_object('big', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)))::text
             FROM queue_engine.dequeue(ARRAY['dh'], 5, worker => 'w-h') d),
          ROW(:h1::bigint, 1, 'k-1', now() + interval '7 minutes', true, true)::text,
          'a run claimed by hand: attempt 1, its key, the policy''s lease, the whole toasted payload');
SELECT is((SELECT ROW(e.started_at, e.lease_expires_at, e.attempt_lease, e.attempt, e.worker, e.concurrency_key,
                      (e.meta).concurrency_key, (e.meta).tags, e.queue_slot)::text
             FROM queue_engine.executing e WHERE e.run_id = :h1),
          ROW(now(), now() + interval '7 minutes', interval '7 minutes', 1, 'w-h', 'k-1', NULL::text, ARRAY['t1'], NULL::int)::text,
          'its executing row: started now, the lease, the worker, the key back in its column, meta keeps the rest');
SELECT queue_engine.fail(:h1, '{"message": "again"}', retry_in => '0') \gset
SELECT is((SELECT ROW(d.attempt, d.lease_expires_at)::text FROM queue_engine.dequeue(ARRAY['dh'], 1, lease => '1 minute') d),
          ROW(2, now() + interval '1 minute')::text, 'a retried run: attempt 2, and the lease the caller asked for');
SELECT queue_engine.complete(:h1) \gset
SELECT queue_engine.enqueue('dh', '{"n": "expired"}', ttl => '1 hour') AS h2 \gset
UPDATE queue_engine.ready SET meta.expires_at = now() - interval '1 s' WHERE run_id = :h2;
SELECT queue_engine.enqueue('dh', '{"n": "live"}') AS h3 \gset
SELECT is((SELECT array_agg(d.run_id) FROM queue_engine.dequeue(ARRAY['dh'], 5) d), ARRAY[:h3]::bigint[],
          'a never-started run past its ttl is not claimed');
SELECT queue_engine.cancel(:h2) \gset
SELECT queue_engine.complete(:h3) \gset

CREATE TEMP TABLE claim_log (what text, run_id bigint);
CREATE FUNCTION pg_temp.log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO claim_log VALUES (TG_OP || ' ' || TG_TABLE_NAME, OLD.run_id);
	RETURN NULL;
END $$;
CREATE TRIGGER claim_log AFTER DELETE ON queue_engine.ready_0 FOR EACH ROW EXECUTE FUNCTION pg_temp.log_claim();
CREATE TRIGGER claim_log AFTER DELETE ON queue_engine.ready_1 FOR EACH ROW EXECUTE FUNCTION pg_temp.log_claim();
SELECT count(queue_engine.enqueue('dh', jsonb_build_object('n', i))) FROM generate_series(1, 3) i \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['dh'], 3)), 3, 'dequeue with a delete trigger on the ready segments');
SELECT is((SELECT count(*)::int FROM claim_log WHERE what LIKE 'DELETE ready_%'), 3, 'the trigger fired for each run');
DROP TRIGGER claim_log ON queue_engine.ready_0;
DROP TRIGGER claim_log ON queue_engine.ready_1;
SELECT count(queue_engine.enqueue('dh', jsonb_build_object('n', i))) FROM generate_series(1, 3) i \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['dh'], 3)), 3, 'once the triggers are gone, dequeue claims by hand again');
SELECT is((SELECT count(*)::int FROM claim_log), 3, 'and fires nothing');
SELECT is((SELECT count(*)::int FROM queue_engine.executing e JOIN queue_engine.queues q USING (queue_id) WHERE q.queue = 'dh'), 6,
          'all six runs are executing');

-- A read-only transaction cannot claim a run (the statement says so).
SELECT queue_engine.enqueue('dh', '{"n": "ro"}') \gset
SAVEPOINT read_only;
SET LOCAL transaction_read_only = on;
SELECT throws_ok($$SELECT * FROM queue_engine.dequeue(ARRAY['dh'])$$, '25006', NULL,
                 'dequeue in a read-only transaction is refused');
ROLLBACK TO SAVEPOINT read_only;
SELECT is((SELECT count(*)::int FROM queue_engine.ready r JOIN queue_engine.queues q USING (queue_id) WHERE q.queue = 'dh'), 1,
          'and its run stays queued');

SELECT * FROM finish();
ROLLBACK;
