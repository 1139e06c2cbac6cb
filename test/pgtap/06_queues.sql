-- 06_queues.sql: tenants and queues (SPEC "Tenants and queues", "Reading", "Errors").
BEGIN;
SELECT plan(106);

-- The DETAIL and HINT of the error sql raises.
CREATE FUNCTION pg_temp.err_detail(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	d text;
	h text;
BEGIN
	EXECUTE sql;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
	RETURN coalesce(d, '') || ' | ' || coalesce(h, '');
END;
$$;

CREATE FUNCTION pg_temp.settings(q text) RETURNS text LANGUAGE sql AS $$
	SELECT ROW(t.tenant, x.concurrency_limit, x.key_concurrency_limit, x.max_attempts, x.lease, x.retry_backoff,
	           x.retry_backoff_max, x.ttl, x.paused)::text
	  FROM queue_engine.queues x JOIN queue_engine.tenants t USING (tenant_id)
	 WHERE x.queue = q AND x.dropped_at IS NULL
$$;

---------------------------------------------------------------------------
-- create_queue
---------------------------------------------------------------------------
SELECT lives_ok($$SELECT queue_engine.create_queue('q1', concurrency_limit => 2, ttl => '1 hour')$$, 'create_queue');
SELECT is(pg_temp.settings('q1'), '(default,2,,3,00:05:00,00:00:01,01:00:00,01:00:00,f)', 'settings and defaults are stored');
SELECT lives_ok($$SELECT queue_engine.create_queue('q1', concurrency_limit => 2, ttl => '1 hour')$$,
                'creating it again with identical settings is a no-op');
SELECT lives_ok($$SELECT queue_engine.create_queue('q1', tenant => 'default', concurrency_limit => 2, max_attempts => 3,
                                                   lease => '300 seconds', retry_backoff => '1 second',
                                                   retry_backoff_max => '60 minutes', ttl => '3600 seconds')$$,
                'equal settings spelled differently are identical too');
SELECT is((SELECT count(*)::int FROM queue_engine.queues WHERE queue = 'q1'), 1, 'still one queue q1');
SELECT throws_ok($$SELECT queue_engine.create_queue('q1', concurrency_limit => 3)$$,
                 '42710', 'queue "q1" already exists with different settings', 'different settings conflict');
SELECT is(pg_temp.err_detail($$SELECT queue_engine.create_queue('q1', concurrency_limit => 3)$$),
          'Differing settings: concurrency_limit, ttl. | Use queue_engine.alter_queue() to change an existing queue.',
          'the conflict lists every differing setting and hints at alter_queue');
SELECT is(pg_temp.err_detail($$SELECT queue_engine.create_queue('q1', tenant => 'acme', concurrency_limit => 2, ttl => '1 hour')$$),
          'Differing settings: tenant. | Use queue_engine.alter_queue() to change an existing queue.',
          'another tenant is a differing setting');
SELECT is(pg_temp.settings('q1'), '(default,2,,3,00:05:00,00:00:01,01:00:00,01:00:00,f)', 'a conflicting create changes nothing');
SELECT lives_ok($$SELECT queue_engine.create_queue('q2', tenant => 'newt', key_concurrency_limit => 4, max_attempts => 9,
                                                   lease => '30 seconds', retry_backoff => '0', retry_backoff_max => '0')$$,
                'create_queue in a new tenant');
SELECT is(pg_temp.settings('q2'), '(newt,,4,9,00:00:30,00:00:00,00:00:00,,f)', 'the tenant is created with the queue');
SELECT is((SELECT ROW(s.tenant, s.paused, s.concurrency_limit, s.queued, s.delayed, s.executing, s.waiting, s.oldest_queued_at)::text
             FROM queue_engine.queue_stats s WHERE s.queue = 'q2'),
          '(newt,f,,0,0,0,0,)', 'a new queue shows in queue_stats, empty');

SELECT count(*) AS queues_before FROM queue_engine.queues \gset
SELECT throws_ok($$SELECT queue_engine.create_queue(NULL)$$, '22004', 'queue must not be null or empty', 'create_queue: NULL name');
SELECT throws_ok($$SELECT queue_engine.create_queue('')$$, '22004', 'queue must not be null or empty', 'create_queue: empty name');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', tenant => NULL)$$, '22004', 'tenant must not be null or empty',
                 'create_queue: NULL tenant');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', tenant => '')$$, '22004', 'tenant must not be null or empty',
                 'create_queue: empty tenant');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', concurrency_limit => 0)$$, '22023',
                 'concurrency_limit must be positive: 0', 'create_queue: zero concurrency_limit');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', concurrency_limit => -3)$$, '22023',
                 'concurrency_limit must be positive: -3', 'create_queue: negative concurrency_limit');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', key_concurrency_limit => -1)$$, '22023',
                 'key_concurrency_limit must be positive: -1', 'create_queue: negative key_concurrency_limit');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', max_attempts => 0)$$, '22023',
                 'max_attempts must be positive: 0', 'create_queue: zero max_attempts');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', max_attempts => NULL)$$, '22004',
                 'max_attempts must not be null', 'create_queue: NULL max_attempts');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', lease => '0')$$, '22023',
                 'lease must be a positive interval: 00:00:00', 'create_queue: zero lease');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', lease => NULL)$$, '22004',
                 'lease, retry_backoff and retry_backoff_max must not be null', 'create_queue: NULL lease');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', retry_backoff => NULL)$$, '22004',
                 'lease, retry_backoff and retry_backoff_max must not be null', 'create_queue: NULL retry_backoff');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', retry_backoff => '-1 second')$$, '22023',
                 'retry_backoff must not be negative: -00:00:01', 'create_queue: negative retry_backoff');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', retry_backoff_max => '-1 second')$$, '22023',
                 'retry_backoff_max must not be negative: -00:00:01', 'create_queue: negative retry_backoff_max');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', ttl => '0')$$, '22023',
                 'ttl must be a positive interval: 00:00:00', 'create_queue: zero ttl');
SELECT throws_ok($$SELECT queue_engine.create_queue('bad', retry_backoff => '5 seconds', retry_backoff_max => '1 second')$$, '22023',
                 'retry_backoff_max (00:00:01) is less than retry_backoff (00:00:05)', 'create_queue: retry_backoff_max below retry_backoff');
SELECT is(pg_temp.err_detail($$SELECT queue_engine.create_queue('bad', concurrency_limit => 0)$$),
          ' | Pass a limit of at least 1, or omit it for no limit.', 'a bad limit comes with a hint');
SELECT is((SELECT count(*) FROM queue_engine.queues), :queues_before::bigint, 'failed create_queue calls created nothing');

---------------------------------------------------------------------------
-- alter_queue
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('q1') AS old_run \gset
SELECT lives_ok($$SELECT queue_engine.alter_queue('q1', concurrency_limit => 5)$$, 'alter_queue one setting');
SELECT is(pg_temp.settings('q1'), '(default,5,,3,00:05:00,00:00:01,01:00:00,01:00:00,f)', 'only that setting changed');
SELECT queue_engine.alter_queue('q1', key_concurrency_limit => 2, max_attempts => 7, lease => '1 minute',
                                retry_backoff => '10 seconds', retry_backoff_max => '10 minutes', ttl => '2 hours') \gset
SELECT is(pg_temp.settings('q1'), '(default,5,2,7,00:01:00,00:00:10,00:10:00,02:00:00,f)', 'alter_queue every setting');
SELECT queue_engine.alter_queue('q1') \gset
SELECT is(pg_temp.settings('q1'), '(default,5,2,7,00:01:00,00:00:10,00:10:00,02:00:00,f)', 'NULL arguments leave settings unchanged');

SELECT queue_engine.enqueue('q1') AS new_run \gset
SELECT is((SELECT array_agg(ROW(g.max_attempts, g.expires_at)::text ORDER BY g.run_id)
             FROM unnest(ARRAY[:old_run, :new_run]::bigint[]) u(id), queue_engine.get_run(u.id) g),
          ARRAY[ROW(3, now() + interval '1 hour')::text, ROW(7, now() + interval '2 hours')::text],
          'max_attempts and ttl changes affect new runs only');
SELECT is((SELECT array_agg(lease ORDER BY run_id) FROM queue_engine.runs WHERE run_id IN (:old_run, :new_run)),
          ARRAY[interval '5 minutes', interval '1 minute'], 'a lease change affects new runs only');

SELECT queue_engine.alter_queue('q1', clear => ARRAY['ttl', 'max_attempts', 'lease']) \gset
SELECT is(pg_temp.settings('q1'), '(default,5,2,3,00:05:00,00:00:10,00:10:00,,f)', 'clear puts ttl, max_attempts, lease to defaults');
SELECT queue_engine.alter_queue('q1', clear => ARRAY['concurrency_limit', 'key_concurrency_limit', 'retry_backoff', 'retry_backoff_max']) \gset
SELECT is(pg_temp.settings('q1'), '(default,,,3,00:05:00,00:00:01,01:00:00,,f)', 'clear makes the queue unlimited with default backoff');
SELECT throws_ok($$SELECT queue_engine.alter_queue('q1', clear => ARRAY['bogus'])$$, '22023',
                 'cannot clear unknown setting "bogus"', 'alter_queue: clear of an unknown setting');
SELECT throws_ok($$SELECT queue_engine.alter_queue('q1', clear => ARRAY['tenant'])$$, '22023',
                 'cannot clear unknown setting "tenant"', 'alter_queue: tenant cannot be cleared');
SELECT throws_ok($$SELECT queue_engine.alter_queue('nope', concurrency_limit => 1)$$, '42704',
                 'queue "nope" does not exist', 'alter_queue: unknown queue');
SELECT throws_ok($$SELECT queue_engine.alter_queue(NULL, concurrency_limit => 1)$$, '22004',
                 'queue must not be null', 'alter_queue: NULL queue');
SELECT throws_ok($$SELECT queue_engine.alter_queue('q1', concurrency_limit => 0)$$, '22023',
                 'concurrency_limit must be positive: 0', 'alter_queue: zero concurrency_limit');
SELECT throws_ok($$SELECT queue_engine.alter_queue('q1', key_concurrency_limit => 0)$$, '22023',
                 'key_concurrency_limit must be positive: 0', 'alter_queue: zero key_concurrency_limit');
SELECT throws_ok($$SELECT queue_engine.alter_queue('q1', max_attempts => -1)$$, '22023',
                 'max_attempts must be positive: -1', 'alter_queue: negative max_attempts');
SELECT throws_ok($$SELECT queue_engine.alter_queue('q1', lease => '-1 minute')$$, '22023',
                 'lease must be a positive interval: -00:01:00', 'alter_queue: negative lease');
SELECT throws_ok($$SELECT queue_engine.alter_queue('q1', ttl => '0')$$, '22023',
                 'ttl must be a positive interval: 00:00:00', 'alter_queue: zero ttl');
SELECT throws_ok($$SELECT queue_engine.alter_queue('q1', retry_backoff => '2 hours')$$, '22023',
                 'retry_backoff_max (01:00:00) is less than retry_backoff (02:00:00)', 'alter_queue: retry_backoff above retry_backoff_max');
SELECT is(pg_temp.settings('q1'), '(default,,,3,00:05:00,00:00:01,01:00:00,,f)', 'failed alter_queue calls changed nothing');

---------------------------------------------------------------------------
-- pause_queue, resume_queue
---------------------------------------------------------------------------
SELECT queue_engine.pause_queue('q1') \gset
SELECT is((SELECT paused FROM queue_engine.queue_stats WHERE queue = 'q1'), true, 'pause_queue: paused');
SELECT lives_ok($$SELECT queue_engine.pause_queue('q1')$$, 'pausing a paused queue is fine');
SELECT queue_engine.resume_queue('q1') \gset
SELECT is((SELECT paused FROM queue_engine.queue_stats WHERE queue = 'q1'), false, 'resume_queue: not paused');
SELECT throws_ok($$SELECT queue_engine.pause_queue('nope')$$, '42704', 'queue "nope" does not exist', 'pause_queue: unknown queue');
SELECT throws_ok($$SELECT queue_engine.resume_queue('nope')$$, '42704', 'queue "nope" does not exist', 'resume_queue: unknown queue');
SELECT throws_ok($$SELECT queue_engine.pause_queue(NULL)$$, '22004', 'queue must not be null', 'pause_queue: NULL queue');

---------------------------------------------------------------------------
-- drop_queue
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('dq') \gset
SELECT queue_engine.enqueue('dq', '{"n": "done"}') AS dq_done \gset
SELECT queue_engine.enqueue('dq', '{"n": "exec"}') AS dq_exec \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['dq'], 2) \gset
SELECT queue_engine.complete(:dq_done) \gset
SELECT queue_engine.enqueue('dq', '{"n": "queued"}') AS dq_queued \gset
SELECT queue_engine.enqueue('dq', '{"n": "delayed"}', delay => '1 hour') AS dq_delayed \gset
SELECT throws_ok($$SELECT queue_engine.drop_queue('dq')$$, '55006', 'queue "dq" still has 3 unfinished runs',
                 'drop_queue refuses while runs are open');
SELECT is(pg_temp.err_detail($$SELECT queue_engine.drop_queue('dq')$$),
          ' | Wait for them to finish, or pass force => true to cancel them.', 'and hints at force');
SELECT is((SELECT count(*)::int FROM queue_engine.queue_stats WHERE queue = 'dq'), 1, 'the refused queue is still there');
SELECT is((SELECT array_agg(g.status ORDER BY g.run_id) FROM unnest(ARRAY[:dq_done, :dq_exec, :dq_queued, :dq_delayed]::bigint[]) u(id),
                  queue_engine.get_run(u.id) g),
          ARRAY['completed', 'executing', 'queued', 'delayed']::queue_engine.run_status[], 'and its runs are untouched');
SELECT lives_ok($$SELECT queue_engine.drop_queue('dq', force => true)$$, 'drop_queue with force');
SELECT is((SELECT array_agg(g.status ORDER BY g.run_id) FROM unnest(ARRAY[:dq_done, :dq_exec, :dq_queued, :dq_delayed]::bigint[]) u(id),
                  queue_engine.get_run(u.id) g),
          ARRAY['completed', 'canceled', 'canceled', 'canceled']::queue_engine.run_status[],
          'force canceled the open runs; the finished run is kept');
SELECT is((SELECT g.last_error->>'reason' FROM queue_engine.get_run(:dq_exec) g), 'queue dropped', 'the cancel says why');
SELECT is(queue_engine.complete(:dq_exec), false, 'the executing run''s worker gets false from complete');
SELECT is((SELECT count(*)::int FROM queue_engine.queue_stats WHERE queue = 'dq'), 0, 'a dropped queue leaves queue_stats');
SELECT is((SELECT array_agg(g.queue || ':' || (g.payload->>'n') ORDER BY g.run_id)
             FROM unnest(ARRAY[:dq_done, :dq_exec]::bigint[]) u(id), queue_engine.get_run(u.id) g),
          ARRAY['dq:done', 'dq:exec'], 'the dropped queue''s runs are still readable with get_run');
SELECT throws_ok($$SELECT queue_engine.enqueue('dq')$$, '42704', 'queue "dq" does not exist', 'enqueue to the dropped queue');
SELECT throws_ok($$SELECT * FROM queue_engine.dequeue(ARRAY['dq'])$$, '42704', 'queue "dq" does not exist', 'dequeue from the dropped queue');
SELECT throws_ok($$SELECT queue_engine.pause_queue('dq')$$, '42704', 'queue "dq" does not exist', 'pause_queue of the dropped queue');
SELECT throws_ok($$SELECT queue_engine.drop_queue('dq')$$, '42704', 'queue "dq" does not exist', 'dropping it again');
SELECT throws_ok($$SELECT queue_engine.drop_queue('nope')$$, '42704', 'queue "nope" does not exist', 'drop_queue: unknown queue');

SELECT lives_ok($$SELECT queue_engine.create_queue('dq', concurrency_limit => 1, tenant => 'other')$$,
                'the name is free again, with any settings');
SELECT queue_engine.enqueue('dq', '{"n": "new"}') AS dq_new \gset
SELECT is((SELECT ROW(s.tenant, s.concurrency_limit, s.queued, s.delayed, s.executing)::text FROM queue_engine.queue_stats s WHERE s.queue = 'dq'),
          '(other,1,1,0,0)', 'the new queue starts with its own counts');
SELECT is((SELECT array_agg(ROW(g.queue, g.tenant, g.status)::text ORDER BY g.run_id)
             FROM unnest(ARRAY[:dq_exec, :dq_new]::bigint[]) u(id), queue_engine.get_run(u.id) g),
          ARRAY['(dq,default,canceled)', '(dq,other,queued)'], 'old and new runs each resolve to their own queue');
SELECT is((SELECT array_agg(run_id) FROM queue_engine.dequeue(ARRAY['dq'], 10)), ARRAY[:dq_new]::bigint[],
          'dequeue of the new queue returns only the new run');

SELECT queue_engine.create_queue('dq2') \gset
SELECT queue_engine.enqueue('dq2') AS dq2_run \gset
SELECT queue_engine.cancel(:dq2_run) \gset
SELECT lives_ok($$SELECT queue_engine.drop_queue('dq2')$$, 'a queue with only finished runs drops without force');
SELECT is((SELECT count(*)::int FROM queue_engine.queues WHERE queue = 'dq2' AND dropped_at IS NULL), 0, 'it is dropped');

---------------------------------------------------------------------------
-- set_tenant_limit
---------------------------------------------------------------------------
SELECT queue_engine.set_tenant_limit('tx', 3) \gset
SELECT is((SELECT concurrency_limit FROM queue_engine.tenants WHERE tenant = 'tx'), 3, 'set_tenant_limit sets (and creates) the tenant');
SELECT queue_engine.set_tenant_limit('tx', 5) \gset
SELECT is((SELECT concurrency_limit FROM queue_engine.tenants WHERE tenant = 'tx'), 5, 'set_tenant_limit changes it');
SELECT queue_engine.set_tenant_limit('tx', NULL) \gset
SELECT is((SELECT concurrency_limit FROM queue_engine.tenants WHERE tenant = 'tx'), NULL::int, 'NULL removes the limit');
SELECT throws_ok($$SELECT queue_engine.set_tenant_limit('tx', 0)$$, '22023', 'concurrency_limit must be positive: 0',
                 'set_tenant_limit: zero');
SELECT throws_ok($$SELECT queue_engine.set_tenant_limit(NULL, 2)$$, '22004', 'tenant must not be null or empty',
                 'set_tenant_limit: NULL tenant');
SELECT is((SELECT count(*)::int FROM queue_engine.tenants WHERE tenant = 'tx'), 1, 'one tenant tx');

---------------------------------------------------------------------------
-- get_run and queue_stats
---------------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM queue_engine.get_run(NULL)$$, '22004', 'run_id must not be null', 'get_run: NULL');
SELECT throws_ok($$SELECT * FROM queue_engine.get_run(987654321)$$, 'P0002', 'run 987654321 does not exist', 'get_run: unknown run');

SELECT queue_engine.create_queue('os') \gset
SELECT is((SELECT oldest_queued_at FROM queue_engine.queue_stats WHERE queue = 'os'), NULL::timestamptz,
          'oldest_queued_at of an empty queue is NULL');
SELECT queue_engine.enqueue('os', run_at => now() - interval '5 minutes', priority => 5) \gset
SELECT queue_engine.enqueue('os', run_at => now() - interval '10 minutes', priority => -1) \gset
SELECT queue_engine.enqueue('os', run_at => now() - interval '1 minute', priority => 0) \gset
SELECT queue_engine.enqueue('os', delay => '1 hour') \gset
SELECT is((SELECT oldest_queued_at FROM queue_engine.queue_stats WHERE queue = 'os'), now() - interval '10 minutes',
          'oldest_queued_at is the earliest run_at of the queued runs, whatever their priority');
SELECT queue_engine.enqueue('os', delay => '1 hour') AS os_due \gset
UPDATE queue_engine.runs SET run_at = now() - interval '20 minutes' WHERE run_id = :os_due;
SELECT is((SELECT oldest_queued_at FROM queue_engine.queue_stats WHERE queue = 'os'), now() - interval '20 minutes',
          'a due delayed run counts as startable');
SELECT is((SELECT ROW(s.queued, s.delayed)::text FROM queue_engine.queue_stats s WHERE s.queue = 'os'), '(3,2)',
          'queue_stats counts queued and delayed runs');

SELECT queue_engine.create_queue('os2') \gset
SELECT queue_engine.enqueue('os2', run_at => now() - interval '30 minutes', ttl => '1 minute') AS os2_exp \gset
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = :os2_exp;
SELECT is((SELECT oldest_queued_at FROM queue_engine.queue_stats WHERE queue = 'os2'), NULL::timestamptz,
          'a run past its ttl is not startable, so it is not the oldest startable run');

-- Where a queued run's key is kept (src/README.md, "Keys"): in ready's column
-- for a queue with a per-key limit, else in meta (so the run has one ordered
-- entry); moved when the limit is set or cleared, repaired when misplaced.
SELECT queue_engine.create_queue('kp');
SELECT queue_engine.enqueue('kp', '{"n": 1}', concurrency_key => 'a') AS kp1 \gset
SELECT queue_engine.enqueue('kp', '{"n": 2}') AS kp2 \gset
SELECT queue_engine.enqueue('kp', '{"n": 3}', concurrency_key => 'a', delay => '1 hour') AS kp3 \gset
SELECT is((SELECT ROW(concurrency_key, (meta).concurrency_key)::text FROM queue_engine.ready WHERE run_id = :kp1),
          '(,a)', 'a queued run of a queue without a per-key limit keeps its key in meta');
SELECT is((SELECT ROW(concurrency_key, (meta).concurrency_key)::text FROM queue_engine.delayed WHERE run_id = :kp3),
          '(a,)', 'a delayed run keeps its key in the column');
SELECT is((SELECT concurrency_key FROM queue_engine.get_run(:kp1)), 'a', 'get_run shows the key kept in meta');
SELECT queue_engine.alter_queue('kp', key_concurrency_limit => 1);
SELECT is((SELECT ROW(concurrency_key, (meta).concurrency_key, meta IS NULL)::text FROM queue_engine.ready WHERE run_id = :kp1),
          '(a,,t)', 'setting a per-key limit moves the key to the column (meta empty again)');
SELECT is((SELECT array_agg(concurrency_key ORDER BY run_id) FROM queue_engine.runs WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'kp')),
          ARRAY['a', NULL, 'a'], 'the runs view shows every key, wherever it is kept');
SELECT is((SELECT oldest_queued_at FROM queue_engine.queue_stats WHERE queue = 'kp'), now(),
          'queue_stats sees keyed and keyless runs of a key-limited queue');
UPDATE queue_engine.queues SET key_concurrency_limit = NULL WHERE queue = 'kp';
SELECT is((SELECT ROW(concurrency_key, (meta).concurrency_key)::text FROM queue_engine.ready WHERE run_id = :kp1),
          '(,a)', 'clearing it (here by hand) moves the key back to meta');
SELECT is((SELECT array_agg(ROW(run_id, concurrency_key)::text ORDER BY run_id) FROM queue_engine.dequeue(ARRAY['kp'], 5)),
          ARRAY[ROW(:kp1, 'a')::text, ROW(:kp2, NULL)::text], 'dequeue returns the key kept in meta');
SELECT is((SELECT ROW(concurrency_key, meta IS NULL)::text FROM queue_engine.executing WHERE run_id = :kp1),
          '(a,t)', 'an executing run has its key in the column');
SELECT is(queue_engine.fail(:kp1, '{"message": "again"}', retry_in => '0 seconds')::text, 'queued', 'a retried run is queued again');
SELECT is((SELECT ROW(concurrency_key, (meta).concurrency_key)::text FROM queue_engine.ready WHERE run_id = :kp1),
          '(,a)', 'and keeps its key in meta, its queue having no per-key limit');

-- A keyed run left in the order index of a key-limited queue (a retry that
-- raced with the limit being set): never started past its key's limit, found
-- and moved by check_consistency.
SELECT queue_engine.create_queue('kq1', key_concurrency_limit => 1);
SELECT queue_engine.enqueue('kq1', '{"n": 1}', concurrency_key => 'b') AS kq1a \gset
SELECT queue_engine.enqueue('kq1', '{"n": 2}', concurrency_key => 'b') AS kq1b \gset
UPDATE queue_engine.ready SET concurrency_key = NULL, meta.concurrency_key = 'b' WHERE run_id = :kq1b;
SELECT is((SELECT array_agg(run_id) FROM queue_engine.dequeue(ARRAY['kq1'], 5)), ARRAY[:kq1a::bigint],
          'a misplaced keyed run is not started while its key is at its limit');
SELECT is((SELECT found || '/' || repaired FROM queue_engine.check_consistency(false) WHERE check_name = 'ready_key_placement'),
          '1/0', 'check_consistency(false) finds the misplaced key');
SELECT is((SELECT found || '/' || repaired FROM queue_engine.check_consistency() WHERE check_name = 'ready_key_placement'),
          '1/1', 'check_consistency() moves it');
SELECT is((SELECT ROW(concurrency_key, meta IS NULL)::text FROM queue_engine.ready WHERE run_id = :kq1b),
          '(b,t)', 'to the column');
SELECT is(queue_engine.complete(:kq1a), true, 'its key''s running run completes');
SELECT is((SELECT array_agg(run_id) FROM queue_engine.dequeue(ARRAY['kq1'], 5)), ARRAY[:kq1b::bigint],
          'and the moved run starts');

SELECT * FROM finish();
ROLLBACK;
