-- 05_maintenance.sql: background tasks callable from SQL, check_consistency and
-- run_maintenance (SPEC "Operating", "Background work").
BEGIN;
SELECT plan(115);

-- Enqueue one run on queue q and start it; returns its id.
CREATE FUNCTION pg_temp.started(q text, worker text DEFAULT NULL) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	id bigint := queue_engine.enqueue(q);
	got bigint;
BEGIN
	UPDATE queue_engine.runs SET priority = 1000000 WHERE run_id = id;
	SELECT d.run_id INTO got FROM queue_engine.dequeue(ARRAY[q], 1, worker => worker) d;
	IF got IS DISTINCT FROM id THEN
		RAISE EXCEPTION 'started(%): dequeued % instead of %', q, got, id;
	END IF;
	UPDATE queue_engine.runs SET priority = 0 WHERE run_id = id;
	RETURN id;
END;
$$;

-- queue_stats next to the counts recomputed from the runs; one text row per live queue.
CREATE VIEW pg_temp.stats_vs_runs AS
SELECT s.queue,
       ROW(s.queued, s.delayed, s.executing, s.waiting)::text AS stats,
       (SELECT ROW(count(*) FILTER (WHERE r.status = 'queued'), count(*) FILTER (WHERE r.status = 'delayed'),
                   count(*) FILTER (WHERE r.status = 'executing'), count(*) FILTER (WHERE r.status = 'waiting'))::text
          FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
         WHERE q.queue = s.queue AND q.dropped_at IS NULL) AS actual
  FROM queue_engine.queue_stats s;

CREATE FUNCTION pg_temp.checks(repair boolean) RETURNS text[] LANGUAGE sql AS $$
	SELECT array_agg(check_name || '=' || found || '/' || repaired ORDER BY check_name)
	  FROM queue_engine.check_consistency(repair)
$$;

---------------------------------------------------------------------------
-- promote_delayed
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('m1') \gset
SELECT queue_engine.enqueue('m1', delay => '1 hour') AS d1 \gset
SELECT queue_engine.enqueue('m1', delay => '1 hour') AS d2 \gset
SELECT queue_engine.enqueue('m1', delay => '1 hour') AS d3 \gset
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE run_id IN (:d1, :d2);
SELECT is(queue_engine.promote_delayed(), 2::bigint, 'promote_delayed promotes the 2 due runs');
SELECT is((SELECT array_agg(g.status ORDER BY g.run_id) FROM unnest(ARRAY[:d1, :d2, :d3]::bigint[]) u(id), queue_engine.get_run(u.id) g),
          ARRAY['queued', 'queued', 'delayed']::queue_engine.run_status[], 'due runs are queued, the other stays delayed');
SELECT is(queue_engine.promote_delayed(), 0::bigint, 'nothing more to promote');
SELECT count(*) FROM queue_engine.enqueue_batch('m1', array_fill('{}'::jsonb, ARRAY[3]), delay => '1 hour') \gset
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE status = 'delayed' AND run_id <> :d3;
SELECT is(ARRAY[queue_engine.promote_delayed(2), queue_engine.promote_delayed(2), queue_engine.promote_delayed(2)],
          ARRAY[2, 1, 0]::bigint[], 'promote_delayed(batch_size) handles at most batch_size runs a call');
SELECT throws_ok($$SELECT queue_engine.promote_delayed(0)$$, '22023', 'batch_size must be positive: 0', 'batch_size 0 is an error');
SELECT throws_ok($$SELECT queue_engine.promote_delayed(NULL)$$, '22004', 'batch_size must not be null', 'NULL batch_size is an error');
SELECT queue_engine.enqueue('m1', delay => '1 hour', ttl => '1 minute') AS d4 \gset
UPDATE queue_engine.runs SET run_at = now() - interval '2 seconds', expires_at = now() - interval '1 second' WHERE run_id = :d4;
SELECT is(queue_engine.promote_delayed(), 0::bigint, 'a due delayed run past its expiry is not promoted');
SELECT is(queue_engine.expire_runs(), 1::bigint, 'expire_runs expires it');
SELECT is((SELECT g.status FROM queue_engine.get_run(:d4) g), 'expired'::queue_engine.run_status, 'it is expired');

---------------------------------------------------------------------------
-- expire_runs
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('m2') \gset
SELECT queue_engine.enqueue('m2', ttl => '1 minute') AS x_q \gset
SELECT queue_engine.enqueue('m2', delay => '1 hour', ttl => '1 minute') AS x_d \gset
SELECT queue_engine.enqueue('m2', ttl => '1 minute') AS x_s \gset
SELECT queue_engine.enqueue('m2', ttl => '1 hour') AS x_f \gset
SELECT queue_engine.enqueue('m2') AS x_n \gset
UPDATE queue_engine.runs SET priority = 10 WHERE run_id = :x_s;
SELECT count(*) FROM queue_engine.dequeue(ARRAY['m2'], 1) \gset
SELECT queue_engine.fail(:x_s, '{"message": "retry"}', retry_in => '0') \gset
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id IN (:x_q, :x_d, :x_s);
SELECT is(queue_engine.expire_runs(), 2::bigint, 'expire_runs expires the queued and the delayed run past their ttl');
SELECT is((SELECT array_agg(g.status ORDER BY g.run_id) FROM unnest(ARRAY[:x_q, :x_d, :x_s, :x_f, :x_n]::bigint[]) u(id),
                  queue_engine.get_run(u.id) g),
          ARRAY['expired', 'expired', 'queued', 'queued', 'queued']::queue_engine.run_status[],
          'a started run, a run within its ttl and a run without ttl are not expired');
SELECT is((SELECT count(*)::int FROM unnest(ARRAY[:x_q, :x_d]::bigint[]) u(id), queue_engine.get_run(u.id) g
            WHERE g.finished_at = now() AND g.attempt = 0), 2, 'expired runs are finished now, never started');
SELECT is(queue_engine.expire_runs(), 0::bigint, 'nothing more to expire');
SELECT is(queue_engine.cancel(:x_q), false, 'an expired run is final: cancel returns false');

---------------------------------------------------------------------------
-- rescue_stalled
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('m3', max_attempts => 2, retry_backoff => '10 seconds') \gset
SELECT pg_temp.started('m3', 'w-9') AS s1 \gset
SELECT pg_temp.started('m3') AS s2 \gset
UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = :s1;
SELECT is(queue_engine.rescue_stalled(), 1::bigint, 'rescue_stalled rescues the run whose lease passed');
SELECT is((SELECT ROW(g.status, g.attempt, g.lease_expires_at,
                      g.run_at BETWEEN now() + interval '8 seconds' AND now() + interval '12 seconds')::text
             FROM queue_engine.get_run(:s1) g),
          ROW('delayed'::queue_engine.run_status, 1, NULL::timestamptz, true)::text,
          'the stalled run retries after the backoff (10s +-20%), without a lease');
SELECT is((SELECT g.last_error - 'message' FROM queue_engine.get_run(:s1) g),
          '{"stalled": true, "attempt": 1, "worker": "w-9"}'::jsonb, 'the stall is the attempt''s error: stalled, attempt, worker');
SELECT matches((SELECT g.last_error->>'message' FROM queue_engine.get_run(:s1) g),
               '^lease expired at .* without a heartbeat$', 'the stall error has a message');
SELECT is(ROW(queue_engine.heartbeat(:s1, 1), queue_engine.complete(:s1, attempt => 1))::text,
          ROW(NULL::timestamptz, false)::text, 'the stalled attempt''s heartbeat/complete return NULL/false');
SELECT is((SELECT g.status FROM queue_engine.get_run(:s2) g), 'executing'::queue_engine.run_status,
          'a run within its lease is left alone');
UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = :s2;
SELECT cmp_ok(queue_engine.heartbeat(:s2), '>', now(), 'a heartbeat renews an expired lease before rescue');
SELECT is(queue_engine.rescue_stalled(), 0::bigint, 'so it is not rescued');

UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE run_id = :s1;
SELECT is((SELECT d.attempt FROM queue_engine.dequeue(ARRAY['m3']) d), 2, 'the rescued run starts attempt 2');
UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = :s1;
SELECT is(queue_engine.rescue_stalled(), 1::bigint, 'the last attempt stalls too');
SELECT is((SELECT ROW(g.status, g.attempt, g.finished_at, g.lease_expires_at, g.last_error->'stalled', g.last_error->'attempt')::text
             FROM queue_engine.get_run(:s1) g),
          ROW('failed'::queue_engine.run_status, 2, now(), NULL::timestamptz, 'true'::jsonb, '2'::jsonb)::text,
          'attempts exhausted: failed, with the stall as its error');

SELECT queue_engine.create_queue('m3z', retry_backoff => '0') \gset
SELECT pg_temp.started('m3z') AS sz \gset
UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = :sz;
SELECT is(queue_engine.rescue_stalled(), 1::bigint, 'rescue with a zero backoff');
SELECT is((SELECT g.status FROM queue_engine.get_run(:sz) g), 'queued'::queue_engine.run_status, 'requeues at once');

-- A run deep into its attempts with a long backoff: the backoff is capped, never overflows.
SELECT queue_engine.create_queue('m4', max_attempts => 100, retry_backoff => '1 hour', retry_backoff_max => '1 hour') \gset
SELECT pg_temp.started('m4') AS s4 \gset
UPDATE queue_engine.runs SET attempt = 33, lease_expires_at = now() - interval '1 second' WHERE run_id = :s4;
SELECT lives_ok($$SELECT queue_engine.rescue_stalled()$$, 'rescue_stalled of attempt 33 (of 100) with retry_backoff 1 hour');
SELECT is((SELECT ROW(g.status, g.run_at BETWEEN now() + interval '48 minutes' AND now() + interval '72 minutes')::text
             FROM queue_engine.get_run(:s4) g),
          ROW('delayed'::queue_engine.run_status, true)::text, 'it retries after retry_backoff_max (1 hour) +-20%');
SELECT queue_engine.cancel(:s4) \gset

---------------------------------------------------------------------------
-- purge_idempotency_keys
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('m1', idempotency_key => 'p1') AS p1 \gset
SELECT queue_engine.enqueue('m1', idempotency_key => 'p2') \gset
SELECT queue_engine.enqueue('m1', idempotency_key => 'p3') \gset
UPDATE queue_engine.idempotency_keys SET expires_at = now() - interval '1 second' WHERE idempotency_key IN ('p1', 'p2');
SELECT is(queue_engine.purge_idempotency_keys(), 2::bigint, 'purge_idempotency_keys removes the 2 expired keys');
SELECT is((SELECT array_agg(idempotency_key) FROM queue_engine.idempotency_keys), ARRAY['p3'], 'the live key stays');
SELECT is((SELECT g.idempotency_key FROM queue_engine.get_run(:p1) g), 'p1', 'the run keeps its key');
SELECT is(queue_engine.purge_idempotency_keys(), 0::bigint, 'nothing more to purge');

---------------------------------------------------------------------------
-- fold_counts
---------------------------------------------------------------------------
CREATE TEMP TABLE stats_before AS SELECT * FROM queue_engine.queue_stats;
SELECT count(*) AS deltas FROM queue_engine.queue_count_deltas \gset
SELECT cmp_ok(:deltas::int, '>', 0, 'the workload above left count deltas');
SELECT is(queue_engine.fold_counts(), :deltas::bigint, 'fold_counts folds every delta');
SELECT is((SELECT count(*)::int FROM queue_engine.queue_count_deltas), 0, 'no deltas are left');
SELECT set_eq($$SELECT * FROM queue_engine.queue_stats$$, $$SELECT * FROM stats_before$$, 'queue_stats is unchanged by folding');
SELECT is((SELECT count(*)::int FROM pg_temp.stats_vs_runs WHERE stats IS DISTINCT FROM actual), 0,
          'queue_stats equals the runs after folding');
SELECT count(*) FROM queue_engine.enqueue_batch('m1', array_fill('{}'::jsonb, ARRAY[2])) \gset
SELECT queue_engine.enqueue('m2') \gset
SELECT queue_engine.enqueue('m3') \gset
SELECT is(ARRAY[queue_engine.fold_counts(2), queue_engine.fold_counts(2), queue_engine.fold_counts(2)], ARRAY[2, 1, 0]::bigint[],
          'fold_counts(batch_size) folds at most batch_size deltas a call');
SELECT is((SELECT count(*)::int FROM pg_temp.stats_vs_runs WHERE stats IS DISTINCT FROM actual), 0,
          'queue_stats equals the runs after folding in batches');

---------------------------------------------------------------------------
-- prune_finished_runs (queue_engine.finished_run_retention)
---------------------------------------------------------------------------
SET LOCAL queue_engine.finished_run_retention = '1h';
SELECT queue_engine.create_queue('m6', ttl => '1 hour') \gset
SELECT queue_id AS m6_id FROM queue_engine.queues WHERE queue = 'm6' \gset
SELECT pg_temp.started('m6') AS f_done \gset
SELECT queue_engine.complete(:f_done) \gset
SELECT pg_temp.started('m6') AS f_failed \gset
SELECT queue_engine.fail(:f_failed, '{"message": "x"}', permanent => true) \gset
SELECT queue_engine.enqueue('m6', idempotency_key => 'prune-me') AS f_canceled \gset
SELECT queue_engine.cancel(:f_canceled) \gset
SELECT queue_engine.enqueue('m6') AS f_expired \gset
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = :f_expired;
SELECT queue_engine.expire_runs() \gset
SELECT pg_temp.started('m6') AS f_recent \gset
SELECT queue_engine.complete(:f_recent) \gset
SELECT queue_engine.enqueue('m6', idempotency_key => 'keep-me') AS f_open \gset
SELECT is((SELECT array_agg(g.status ORDER BY g.run_id)
             FROM unnest(ARRAY[:f_done, :f_failed, :f_canceled, :f_expired, :f_recent, :f_open]::bigint[]) u(id),
                  queue_engine.get_run(u.id) g),
          ARRAY['completed', 'failed', 'canceled', 'expired', 'completed', 'queued']::queue_engine.run_status[],
          'one run in each final state, one recent, one open');
-- Two hours ago for the four old ones; the recent one 59 minutes ago; the open
-- one was created and due long ago but has not finished.
UPDATE queue_engine.runs SET finished_at = now() - interval '2 hours'
 WHERE run_id IN (:f_done, :f_failed, :f_canceled, :f_expired);
UPDATE queue_engine.runs SET finished_at = now() - interval '59 minutes' WHERE run_id = :f_recent;
UPDATE queue_engine.runs SET created_at = now() - interval '3 days', run_at = now() - interval '3 days'
 WHERE run_id = :f_open;
SELECT queue_engine.fold_counts() \gset
CREATE TEMP TABLE stats_before_prune AS SELECT * FROM queue_engine.queue_stats;
SELECT is(queue_engine.prune_finished_runs(3), 3::bigint, 'a batch of 3 deletes 3 of the 4 runs finished 2 hours ago');
SELECT is(queue_engine.prune_finished_runs(), 1::bigint, 'the next batch deletes the fourth');
SELECT is(queue_engine.prune_finished_runs(), 0::bigint, 'nothing more is past the 1 hour retention');
SELECT is((SELECT array_agg(run_id ORDER BY run_id) FROM queue_engine.runs WHERE queue_id = :m6_id),
          ARRAY[:f_recent, :f_open]::bigint[], 'the run finished 59 minutes ago and the open run stay');
SELECT throws_ok(format('SELECT * FROM queue_engine.get_run(%s)', :f_done), 'P0002', NULL,
                 'get_run of a deleted run says it does not exist');
SELECT is((SELECT array_agg(idempotency_key) FROM queue_engine.idempotency_keys
            WHERE idempotency_key IN ('prune-me', 'keep-me')),
          ARRAY['keep-me'], 'the deleted run''s idempotency key went with it; the open run''s stays');
SELECT isnt(queue_engine.enqueue('m6', idempotency_key => 'prune-me'), :f_canceled::bigint,
            'the same key now makes a new run');
SELECT is(queue_engine.enqueue('m6', idempotency_key => 'keep-me'), :f_open::bigint,
          'the live key still returns its run');
SELECT queue_engine.fold_counts() \gset
SELECT is((SELECT queued FROM queue_engine.queue_stats WHERE queue = 'm6'),
          (SELECT queued + 1 FROM stats_before_prune WHERE queue = 'm6'),
          'counts are untouched by pruning (one more queued: the new run)');
UPDATE queue_engine.runs SET finished_at = now() - interval '10 years' WHERE run_id = :f_recent;
SET LOCAL queue_engine.finished_run_retention = -1;
SELECT is(queue_engine.prune_finished_runs(), 0::bigint, 'retention -1 keeps finished runs forever');
SET LOCAL queue_engine.finished_run_retention = '1h';
CALL queue_engine.run_maintenance();
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE run_id = :f_recent), 0,
          'run_maintenance prunes as well');
-- run_maintenance prunes from where the last prune stopped (a cursor in the
-- shared state, as the worker's), and from the oldest when its consistency
-- check is due: a run that finished before the cursor waits for that call.
SET LOCAL queue_engine.consistency_interval = '1h';
SELECT pg_temp.started('m6') AS h_newer \gset
SELECT queue_engine.complete(:h_newer) \gset
UPDATE queue_engine.runs SET finished_at = now() - interval '90 minutes' WHERE run_id = :h_newer;
CALL queue_engine.run_maintenance();
SELECT pg_temp.started('m6') AS h_older \gset
SELECT queue_engine.complete(:h_older) \gset
UPDATE queue_engine.runs SET finished_at = now() - interval '2 hours' WHERE run_id = :h_older;
CALL queue_engine.run_maintenance();
SELECT is((SELECT array_agg(run_id ORDER BY run_id) FROM queue_engine.runs
            WHERE run_id IN (:h_newer, :h_older)),
          ARRAY[:h_older]::bigint[],
          'run_maintenance pruned the run finished 90 minutes ago and, within consistency_interval, not one finished before it');
SET LOCAL queue_engine.consistency_interval = 0;
CALL queue_engine.run_maintenance();
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE run_id = :h_older), 0,
          'the call whose consistency check is due prunes it, from the oldest');
SET LOCAL queue_engine.consistency_interval = '1h';

-- A dropped queue's row goes once retention has removed all its runs.
SELECT queue_engine.create_queue('m7') \gset
SELECT queue_id AS m7_id FROM queue_engine.queues WHERE queue = 'm7' \gset
SELECT pg_temp.started('m7') AS g_done \gset
SELECT queue_engine.complete(:g_done) \gset
SELECT queue_engine.enqueue('m7') AS g_open \gset
SELECT queue_engine.drop_queue('m7', force => true) \gset
SELECT queue_engine.fold_counts() \gset
SELECT is(queue_engine.prune_finished_runs(), 0::bigint, 'a queue dropped just now: its runs are within retention');
SELECT is((SELECT count(*)::int FROM queue_engine.queues WHERE queue_id = :m7_id), 1,
          'so the dropped queue''s row stays, and its runs name their queue');
-- Dropped (and its runs finished) 2 hours ago; one run still there.
UPDATE queue_engine.queues SET dropped_at = now() - interval '2 hours' WHERE queue_id = :m7_id;
UPDATE queue_engine.runs SET finished_at = now() - interval '2 hours' WHERE run_id = :g_open;
SELECT is(queue_engine.prune_finished_runs(1), 1::bigint, 'a batch of 1 deletes one of its runs');
SELECT is((SELECT count(*)::int FROM queue_engine.queues WHERE queue_id = :m7_id), 1,
          'a full batch leaves dropped queues alone');
SET LOCAL queue_engine.finished_run_retention = -1;
SELECT is(queue_engine.prune_finished_runs(), 0::bigint, 'retention -1 prunes nothing');
SELECT is((SELECT count(*)::int FROM queue_engine.queues WHERE queue_id = :m7_id), 1,
          'and keeps dropped queues too');
SET LOCAL queue_engine.finished_run_retention = '1h';
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE run_id = :g_done), 1,
          'one run of the queue is left ...');
UPDATE queue_engine.runs SET finished_at = now() - interval '3 hours' WHERE run_id = :g_done;
UPDATE queue_engine.queue_counts SET queued = 1 WHERE queue_id = :m7_id;
SELECT is(queue_engine.prune_finished_runs(), 1::bigint, '... and pruned by the next call');
SELECT is((SELECT count(*)::int FROM queue_engine.queues WHERE queue_id = :m7_id), 1,
          'a dropped queue whose folded counts are not zero stays (its deltas are not folded yet)');
UPDATE queue_engine.queue_counts SET queued = 0 WHERE queue_id = :m7_id;
-- A zero counts row naming no queue (a fold racing an earlier delete).
INSERT INTO queue_engine.queue_counts (queue_id) VALUES (-7);
SELECT is(queue_engine.prune_finished_runs(), 0::bigint, 'nothing left to prune');
SELECT is((SELECT count(*)::int FROM queue_engine.queues WHERE queue_id = :m7_id)
          + (SELECT count(*)::int FROM queue_engine.queue_counts WHERE queue_id = :m7_id), 0,
          'then the dropped queue''s row and its counts row are deleted');
SELECT is((SELECT count(*)::int FROM queue_engine.queue_counts WHERE queue_id = -7), 0,
          'and a zero counts row naming no queue goes with them');
SELECT is((SELECT count(*)::int FROM queue_engine.queues WHERE queue = 'm6'), 1,
          'live queues stay');
SELECT is(pg_temp.checks(false),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=0/0', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'the engine is consistent after pruning');

---------------------------------------------------------------------------
-- check_consistency on a healthy engine
---------------------------------------------------------------------------
SELECT is(pg_temp.checks(true),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=0/0', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'after a mixed workload every check finds 0');
SELECT is((SELECT count(*)::int FROM queue_engine.consistency_log), 0, 'and the log stays empty');

---------------------------------------------------------------------------
-- check_consistency finds, repairs and logs drift
---------------------------------------------------------------------------
SELECT queue_id AS m1_id FROM queue_engine.queues WHERE queue = 'm1' \gset
SELECT count(*) AS m1_queued FROM queue_engine.runs WHERE queue_id = :m1_id AND status = 'queued' \gset
UPDATE queue_engine.queue_counts SET queued = queued + 5 WHERE queue_id = :m1_id;
SELECT is((SELECT queued FROM queue_engine.queue_stats WHERE queue = 'm1'), :m1_queued + 5::bigint, 'the corrupted count shows');
SELECT is(pg_temp.checks(false),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=1/0', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'check_consistency(false) reports the drift without repairing');
SELECT is((SELECT queued FROM queue_engine.queue_stats WHERE queue = 'm1'), :m1_queued + 5::bigint, 'the count is still wrong');
SELECT is(pg_temp.checks(true),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=1/1', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'check_consistency(true) finds and repairs it');
SELECT is((SELECT queued FROM queue_engine.queue_stats WHERE queue = 'm1'), :m1_queued::bigint, 'queue_stats is right again');
SELECT is((SELECT count(*)::int FROM pg_temp.stats_vs_runs WHERE stats IS DISTINCT FROM actual), 0, 'every queue''s counts match the runs');
SELECT ok(EXISTS (SELECT 1 FROM queue_engine.consistency_log
                   WHERE check_name = 'queue_counts' AND found = 1 AND repaired = 1
                     AND detail @> jsonb_build_array(jsonb_build_object('queue_id', :m1_id, 'state', 'queued',
                                                                         'recorded', :m1_queued + 5, 'actual', :m1_queued))),
          'the repair is logged with what was recorded and what was actual');
SELECT is(pg_temp.checks(true),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=0/0', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'after the repair every check finds 0');

-- Drift in a pending delta is found as well.
INSERT INTO queue_engine.queue_count_deltas (queue_id, executing) VALUES (:m1_id, 3);
SELECT is(pg_temp.checks(true),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=1/1', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'a bogus delta is found and repaired');
SELECT is((SELECT count(*)::int FROM pg_temp.stats_vs_runs WHERE stats IS DISTINCT FROM actual), 0, 'counts match the runs again');

-- Leases.  Since storage 0.2 executing_without_lease and lease_on_idle_run
-- cannot find anything: only the table executing has lease columns, and they
-- are NOT NULL; a queued run is a row of ready, which has no lease.  Both
-- checks remain (and find 0 in every list of this file); this shows the
-- drift they looked for cannot be stored.
SELECT pg_temp.started('m1') AS l1 \gset
SELECT queue_engine.enqueue('m1') AS l2 \gset
SELECT throws_ok(format('UPDATE queue_engine.executing SET lease_expires_at = NULL WHERE run_id = %s', :l1),
                 '23502', NULL, 'an executing run cannot lose its lease (executing.lease_expires_at is NOT NULL)');
UPDATE queue_engine.runs SET lease_expires_at = NULL WHERE run_id = :l1;
UPDATE queue_engine.runs SET lease_expires_at = now() + interval '1 hour' WHERE run_id = :l2;
SELECT is((SELECT ROW(a.status, a.lease_expires_at IS NOT NULL, b.status, b.lease_expires_at)::text
             FROM queue_engine.get_run(:l1) a, queue_engine.get_run(:l2) b),
          ROW('executing'::queue_engine.run_status, true, 'queued'::queue_engine.run_status, NULL::timestamptz)::text,
          'through the runs view an executing run given no lease keeps one, and a queued run given one has none');

-- Runs in two places and keys.  l1 is executing and also finished (a copy
-- in finished_runs, as a completion that inserted without deleting would
-- leave), l2 is queued in both ready segments; an idempotency key names no
-- run.  The ready copy also makes m1's queued count one short of the rows.
-- l2's own row is in the current segment (enqueue inserts there): the copy
-- goes into the other, so the repair must delete the copy, not the original.
SELECT queue_engine.current_segment('ready') AS ready_cur \gset
SELECT tableoid::regclass::text AS l1_seg FROM queue_engine.executing WHERE run_id = :l1 \gset
SELECT tableoid::regclass::text AS l2_seg FROM queue_engine.ready WHERE run_id = :l2 \gset
SELECT 'queue_engine.ready_' || (1 - :ready_cur) AS l2_other \gset
INSERT INTO queue_engine.finished_runs
       (run_id, finished_at, run_at, started_at, queue_id, policy_id, priority,
        attempt, status, payload, output, concurrency_key, worker, meta)
SELECT e.run_id, now(), e.run_at, e.started_at, e.queue_id, e.policy_id, e.priority,
       e.attempt, 'completed', e.payload, '{"done": true}', e.concurrency_key, e.worker, e.meta
  FROM queue_engine.executing e WHERE e.run_id = :l1;
INSERT INTO :l2_other SELECT * FROM :l2_seg WHERE run_id = :l2;
INSERT INTO queue_engine.idempotency_keys (tenant_id, idempotency_key, run_id, expires_at)
VALUES (1, 'orphan', 987654321, now() + interval '1 day');
-- Where each copy of l1 and l2 is, in (table, run) order.
CREATE VIEW pg_temp.copies AS
SELECT string_agg(x.tableoid::regclass::text || ':' || x.run_id, ' ' ORDER BY x.tableoid::regclass::text, x.run_id) AS copies
  FROM (SELECT tableoid, run_id FROM queue_engine.executing
        UNION ALL SELECT tableoid, run_id FROM queue_engine.finished_runs
        UNION ALL SELECT tableoid, run_id FROM queue_engine.ready
        UNION ALL SELECT tableoid, run_id FROM queue_engine.delayed) x
 WHERE x.run_id IN (:l1, :l2);
SELECT count(*) AS log_before FROM queue_engine.consistency_log \gset
SELECT is(pg_temp.checks(false),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=1/0', 'queue_counts=1/0', 'ready_key_placement=0/0', 'runs_in_two_places=2/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'check_consistency(false) finds the two runs in two places, the orphan key and the queued count the extra copy makes');
SELECT is((SELECT copies FROM pg_temp.copies) || ' keys:' || (SELECT count(*) FROM queue_engine.idempotency_keys WHERE idempotency_key = 'orphan'),
          format('%s:%s queue_engine.finished_runs:%s queue_engine.ready_0:%s queue_engine.ready_1:%s keys:1',
                 :'l1_seg', :l1, :l1, :l2, :l2),
          'and changes nothing: both copies of each run and the key are still there');
SELECT is(pg_temp.checks(true),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=1/1', 'queue_counts=1/1', 'ready_key_placement=0/0', 'runs_in_two_places=2/2', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'check_consistency() finds and repairs the runs in two places and the key drift');
SELECT is((SELECT copies FROM pg_temp.copies),
          format('queue_engine.finished_runs:%s %s:%s', :l1, :'l2_seg', :l2),
          'each run keeps one copy: the executing and finished run its finished one, the queued run the one in the current segment');
SELECT is((SELECT ROW(a.status, a.output, b.status)::text
             FROM queue_engine.get_run(:l1) a, queue_engine.get_run(:l2) b),
          ROW('completed'::queue_engine.run_status, '{"done": true}'::jsonb, 'queued'::queue_engine.run_status)::text,
          'so the runs view shows l1 completed with its output and l2 queued');
SELECT is((SELECT count(*)::int FROM queue_engine.idempotency_keys WHERE idempotency_key = 'orphan'), 0, 'the orphan key is gone');
SELECT is((SELECT array_agg(check_name || '=' || found || '/' || repaired ORDER BY repaired > 0, check_name)
             FROM (SELECT * FROM queue_engine.consistency_log OFFSET :log_before) l),
          ARRAY['orphan_idempotency_keys=1/0', 'queue_counts=1/0', 'runs_in_two_places=2/0',
                'orphan_idempotency_keys=1/1', 'queue_counts=1/1', 'runs_in_two_places=2/2'],
          'each finding is logged, without and then with its repair');
SELECT is((SELECT detail FROM queue_engine.consistency_log WHERE check_name = 'runs_in_two_places' AND repaired > 0),
          jsonb_build_array(jsonb_build_object('run_id', :l1, 'places', jsonb_build_array('finished_runs', split_part(:'l1_seg', '.', 2))),
                            jsonb_build_object('run_id', :l2, 'places', jsonb_build_array(split_part(:'l2_seg', '.', 2),
                                                                                          split_part(:'l2_other', '.', 2)))),
          'the log names each repaired run with its places, the copy kept first');
SELECT is((SELECT count(*)::int FROM pg_temp.stats_vs_runs WHERE stats IS DISTINCT FROM actual), 0,
          'the same pass counts the runs as they are after the deleted copies: queue_stats matches the runs');
SELECT is(pg_temp.checks(false),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=0/0', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'after the repairs every check finds 0');
SELECT is(ROW(queue_engine.heartbeat(:l1), queue_engine.complete(:l1))::text, ROW(NULL::timestamptz, false)::text,
          'the finished run is not executing any more: its heartbeat and complete return NULL/false');
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['m1'], 1000) d WHERE d.run_id = :l2), 1,
          'the queued run is claimed once, not twice');
SELECT is((SELECT ROW(queue_engine.complete(:l2), queue_engine.complete(:l2))::text), ROW(true, false)::text,
          'and completed once');
-- Two executing runs of a limited queue sharing a slot.
SELECT queue_engine.create_queue('slotted', concurrency_limit => 3) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('slotted', array_fill('{}'::jsonb, ARRAY[3])) \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['slotted'], 3) \gset
SELECT is((SELECT array_agg(r.queue_slot ORDER BY r.queue_slot)
             FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
            WHERE q.queue = 'slotted' AND r.status = 'executing'),
          ARRAY[0, 1, 2], 'the runs of a queue with limit 3 hold slots 0, 1 and 2');
-- Slots in run order before the drift: the last run is given the first's.
SELECT array_agg(r.queue_slot ORDER BY r.run_id) AS slots_before
  FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
 WHERE q.queue = 'slotted' AND r.status = 'executing' \gset
UPDATE queue_engine.runs SET queue_slot = (:'slots_before'::int[])[1]
 WHERE run_id = (SELECT max(run_id) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
                  WHERE q.queue = 'slotted' AND r.status = 'executing');
SELECT is(pg_temp.checks(true),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=0/0', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=1/1'],
          'a slot held by two executing runs is found and repaired');
SELECT is((SELECT array_agg(r.queue_slot ORDER BY r.run_id) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
            WHERE q.queue = 'slotted' AND r.status = 'executing'),
          ARRAY[(:'slots_before'::int[])[1], (:'slots_before'::int[])[2], NULL],
          'the later run gives up the slot; the earlier keeps it');
-- A limit above 10,000 is not held by slots: starts are serialised and
-- counted, and the runs hold no slot.
SELECT queue_engine.create_queue('wide', concurrency_limit => 20000) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('wide', array_fill('{}'::jsonb, ARRAY[3])) \gset
SELECT is((SELECT count(*)::int FROM queue_engine.dequeue(ARRAY['wide'], 5)), 3,
          'a queue with limit 20,000 starts its runs');
SELECT is((SELECT count(*)::int FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
            WHERE q.queue = 'wide' AND r.status = 'executing' AND r.queue_slot IS NULL), 3,
          'without slots');
SELECT throws_ok($$SELECT * FROM queue_engine.check_consistency(NULL)$$, '22004', 'repair must not be null',
                 'check_consistency(NULL) is an error');

---------------------------------------------------------------------------
-- run_maintenance inside a transaction
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('m5', retry_backoff => '1 minute') \gset
SELECT queue_engine.enqueue('m5', delay => '1 hour') AS r_due \gset
SELECT queue_engine.enqueue('m5', ttl => '1 minute') AS r_ttl \gset
SELECT pg_temp.started('m5', 'w-5') AS r_stall \gset
SELECT queue_engine.enqueue('m5', idempotency_key => 'old') AS r_key \gset
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE run_id = :r_due;
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = :r_ttl;
UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = :r_stall;
UPDATE queue_engine.idempotency_keys SET expires_at = now() - interval '1 second' WHERE idempotency_key = 'old';
SELECT queue_id AS m5_id FROM queue_engine.queues WHERE queue = 'm5' \gset
UPDATE queue_engine.queue_counts SET delayed = delayed + 2 WHERE queue_id = :m5_id;
SELECT count(*) AS log_before2 FROM queue_engine.consistency_log \gset

-- Its consistency check is due: the interval is 0 (every call).
SET LOCAL queue_engine.consistency_interval = 0;
SELECT lives_ok('CALL queue_engine.run_maintenance()', 'run_maintenance runs inside a transaction');
SELECT is((SELECT array_agg(g.status ORDER BY g.run_id) FROM unnest(ARRAY[:r_due, :r_ttl, :r_stall]::bigint[]) u(id),
                  queue_engine.get_run(u.id) g),
          ARRAY['queued', 'expired', 'delayed']::queue_engine.run_status[],
          'it promoted the due run, expired the run past its ttl, rescued the stalled run');
SELECT is((SELECT g.last_error->'stalled' FROM queue_engine.get_run(:r_stall) g), 'true'::jsonb, 'the rescued run records the stall');
SELECT is((SELECT count(*)::int FROM queue_engine.idempotency_keys WHERE idempotency_key = 'old'), 0, 'it purged the expired key');
SELECT is((SELECT count(*)::int FROM queue_engine.queue_count_deltas WHERE queue_id <> :m5_id), 0,
          'it folded every delta (only the repair of m5 may leave its correcting delta)');
SELECT ok(EXISTS (SELECT 1 FROM (SELECT * FROM queue_engine.consistency_log OFFSET :log_before2) l
                   WHERE check_name = 'queue_counts' AND repaired = 1),
          'it repaired and logged the count drift');
SELECT is((SELECT count(*)::int FROM pg_temp.stats_vs_runs WHERE stats IS DISTINCT FROM actual), 0, 'counts match the runs');

-- Its consistency check follows queue_engine.consistency_interval, as the
-- worker's does: within the interval of the last check in this database
-- (the call above) run_maintenance leaves drift alone, and check_consistency
-- still finds it; once due, the next call repairs it.
SET LOCAL queue_engine.consistency_interval = '1h';
UPDATE queue_engine.queue_counts SET delayed = delayed + 3 WHERE queue_id = :m5_id;
SELECT count(*) AS log_before3 FROM queue_engine.consistency_log \gset
CALL queue_engine.run_maintenance();
SELECT is((SELECT count(*)::int FROM queue_engine.consistency_log), :log_before3,
          'within consistency_interval run_maintenance does not check again');
SELECT is((SELECT found FROM queue_engine.check_consistency(false) WHERE check_name = 'queue_counts'), 1::bigint,
          'the count drift is still there');
SET LOCAL queue_engine.consistency_interval = 0;
CALL queue_engine.run_maintenance();
SELECT ok(EXISTS (SELECT 1 FROM (SELECT * FROM queue_engine.consistency_log OFFSET :log_before3) l
                   WHERE check_name = 'queue_counts' AND repaired = 1),
          'once due, run_maintenance repairs and logs it');
SELECT is((SELECT count(*)::int FROM pg_temp.stats_vs_runs WHERE stats IS DISTINCT FROM actual), 0, 'counts match the runs again');

-- Batches smaller than the work: it repeats each task until done.
SET LOCAL queue_engine.maintenance_batch_size = 1;
SELECT count(*) FROM queue_engine.enqueue_batch('m5', array_fill('{}'::jsonb, ARRAY[5]), delay => '1 hour') \gset
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE status = 'delayed' AND queue_id = :m5_id
   AND run_id <> :r_stall;
CALL queue_engine.run_maintenance();
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE queue_id = :m5_id AND status = 'delayed'), 1,
          'with batch size 1 every due run was promoted (only the rescued run waits)');
SELECT is((SELECT count(*)::int FROM queue_engine.queue_count_deltas), 0, 'and every delta folded');
SELECT is(pg_temp.checks(false),
          ARRAY['children_waits_satisfied=0/0', 'executing_without_lease=0/0', 'lease_on_idle_run=0/0', 'orphan_idempotency_keys=0/0', 'queue_counts=0/0', 'ready_key_placement=0/0', 'runs_in_two_places=0/0', 'runs_of_unknown_queue=0/0', 'shared_queue_slots=0/0'],
          'the engine is consistent after maintenance');

SELECT * FROM finish();
ROLLBACK;
