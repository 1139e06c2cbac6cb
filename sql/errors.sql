--
-- errors: every kind of bad input to every API function (SPEC "Errors").
-- Each case runs through err(), which prints the SQLSTATE, message, detail
-- and hint of the error, then whether the engine's state (runs, queues,
-- tenants, idempotency keys, counts, consistency log) is exactly as before.
--
\set VERBOSITY default
\set SHOW_CONTEXT never
-- A fresh engine, whatever ran before in this database.
SET client_min_messages = warning;
DROP EXTENSION queue_engine CASCADE;
CREATE EXTENSION queue_engine;
RESET client_min_messages;
SET search_path = queue_engine, public;

-- Everything the engine keeps, as one fingerprint. SECURITY DEFINER so that
-- err() also works for a role without privileges on queue_engine.
CREATE OR REPLACE FUNCTION public.state() RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT md5(concat_ws('|',
    (SELECT string_agg(r::text, ',' ORDER BY r.run_id) FROM queue_engine.runs r),
    (SELECT string_agg(q::text, ',' ORDER BY q.queue_id) FROM queue_engine.queues q),
    (SELECT string_agg(p::text, ',' ORDER BY p.policy_id) FROM queue_engine.queue_policies p),
    (SELECT string_agg(t::text, ',' ORDER BY t.tenant_id) FROM queue_engine.tenants t),
    (SELECT string_agg(k::text, ',' ORDER BY k.tenant_id, k.idempotency_key)
       FROM queue_engine.idempotency_keys k),
    (SELECT string_agg(c::text, ',' ORDER BY c.queue_id)
       FROM (SELECT queue_id, sum(queued) AS queued, sum(delayed) AS delayed,
                    sum(executing) AS executing, sum(waiting) AS waiting
               FROM (SELECT queue_id, queued, delayed, executing, waiting
                       FROM queue_engine.queue_counts
                     UNION ALL
                     SELECT queue_id, queued, delayed, executing, waiting
                       FROM queue_engine.queue_count_deltas) x
              GROUP BY queue_id) c),
    (SELECT count(*)::text FROM queue_engine.consistency_log)))
$$;

-- Run stmt; print "SQLSTATE: message", DETAIL, HINT (or "no error"), and
-- whether the state is unchanged.
CREATE OR REPLACE FUNCTION public.err(stmt text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
  before text := public.state();
  st text;
  msg text;
  det text;
  hnt text;
BEGIN
  BEGIN
    EXECUTE stmt;
    RETURN NEXT 'no error';
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RETURN NEXT st || ': ' || msg;
    IF det <> '' THEN RETURN NEXT 'DETAIL: ' || det; END IF;
    IF hnt <> '' THEN RETURN NEXT 'HINT: ' || hnt; END IF;
  END;
  RETURN NEXT CASE WHEN public.state() = before THEN 'state unchanged'
                   ELSE 'STATE CHANGED' END;
END;
$$;

-- Runs per status, shown before and after each group of errors.
CREATE OR REPLACE FUNCTION public.run_counts() RETURNS TABLE (status queue_engine.run_status, runs bigint)
LANGUAGE sql AS $$
  SELECT status, count(*) FROM queue_engine.runs GROUP BY status ORDER BY status
$$;

---------------------------------------------------------------------------
-- Fixture: a queue with one queued, one executing, one delayed and one
-- completed run; a limited queue; an empty queue; a dropped queue.
---------------------------------------------------------------------------
SELECT create_queue('q', lease => '5 minutes');
SELECT create_queue('q_limited', tenant => 'acme', concurrency_limit => 2,
                    max_attempts => 5, ttl => '1 hour');
SELECT create_queue('q_empty');
SELECT create_queue('q_dropped');
SELECT drop_queue('q_dropped');
SELECT enqueue('q', '{"n": "executing"}') AS r_exec \gset
SELECT enqueue('q', '{"n": "completed"}') AS r_done \gset
SELECT count(*) FROM dequeue(ARRAY['q'], 2);
SELECT complete(:r_done);
SELECT enqueue('q', '{"n": "queued"}', idempotency_key => 'key-1') AS r_queued \gset
SELECT enqueue('q', '{"n": "delayed"}', delay => '1 hour') AS r_delayed \gset
SELECT * FROM run_counts();
SELECT state() AS initial_state \gset

-- As psql shows an error (the rest go through err()):
SELECT enqueue('nope', '{}');
SELECT dequeue(max_runs => 0);
SELECT create_queue('q', concurrency_limit => 9);

---------------------------------------------------------------------------
-- create_queue
---------------------------------------------------------------------------
-- NULL or empty required arguments
SELECT * FROM err($$SELECT create_queue(NULL)$$);
SELECT * FROM err($$SELECT create_queue('')$$);
SELECT * FROM err($$SELECT create_queue('new', tenant => NULL)$$);
SELECT * FROM err($$SELECT create_queue('new', tenant => '')$$);
SELECT * FROM err($$SELECT create_queue('new', max_attempts => NULL)$$);
SELECT * FROM err($$SELECT create_queue('new', lease => NULL)$$);
SELECT * FROM err($$SELECT create_queue('new', retry_backoff => NULL)$$);
SELECT * FROM err($$SELECT create_queue('new', retry_backoff_max => NULL)$$);
-- zero and negative limits and attempts
SELECT * FROM err($$SELECT create_queue('new', concurrency_limit => 0)$$);
SELECT * FROM err($$SELECT create_queue('new', concurrency_limit => -1)$$);
SELECT * FROM err($$SELECT create_queue('new', key_concurrency_limit => 0)$$);
SELECT * FROM err($$SELECT create_queue('new', key_concurrency_limit => -3)$$);
SELECT * FROM err($$SELECT create_queue('new', max_attempts => 0)$$);
SELECT * FROM err($$SELECT create_queue('new', max_attempts => -1)$$);
-- zero and negative intervals
SELECT * FROM err($$SELECT create_queue('new', lease => '0')$$);
SELECT * FROM err($$SELECT create_queue('new', lease => '-1 minute')$$);
SELECT * FROM err($$SELECT create_queue('new', lease => '1 month -30 days')$$);
SELECT * FROM err($$SELECT create_queue('new', retry_backoff => '-1 second')$$);
SELECT * FROM err($$SELECT create_queue('new', retry_backoff_max => '-1 second')$$);
SELECT * FROM err($$SELECT create_queue('new', ttl => '0')$$);
SELECT * FROM err($$SELECT create_queue('new', ttl => '-1 hour')$$);
SELECT * FROM err($$SELECT create_queue('new', retry_backoff => '10 minutes',
                                             retry_backoff_max => '1 minute')$$);
-- conflicting re-create: the detail names every differing setting
SELECT * FROM err($$SELECT create_queue('q', concurrency_limit => 9)$$);
SELECT * FROM err($$SELECT create_queue('q', tenant => 'acme')$$);
SELECT * FROM err($$SELECT create_queue('q', lease => '5 minutes', max_attempts => 4)$$);
SELECT * FROM err($$SELECT create_queue('q_limited')$$);
SELECT * FROM err($$SELECT create_queue('q_limited', tenant => 'acme', concurrency_limit => 2,
                                        key_concurrency_limit => 1, max_attempts => 5,
                                        lease => '1 minute', retry_backoff => '2 seconds',
                                        retry_backoff_max => '2 hours', ttl => '2 hours')$$);
-- (identical re-create is no error)
SELECT * FROM err($$SELECT create_queue('q_limited', tenant => 'acme', concurrency_limit => 2,
                                        max_attempts => 5, ttl => '1 hour')$$);
SELECT count(*) AS queues_named_new FROM queues WHERE queue = 'new';
SELECT count(*) AS tenants FROM tenants;

---------------------------------------------------------------------------
-- alter_queue
---------------------------------------------------------------------------
SELECT * FROM err($$SELECT alter_queue(NULL)$$);
SELECT * FROM err($$SELECT alter_queue(NULL, concurrency_limit => 1)$$);
SELECT * FROM err($$SELECT alter_queue('nope', concurrency_limit => 1)$$);
SELECT * FROM err($$SELECT alter_queue('q_dropped', concurrency_limit => 1)$$);
SELECT * FROM err($$SELECT alter_queue('q', concurrency_limit => 0)$$);
SELECT * FROM err($$SELECT alter_queue('q', concurrency_limit => -1)$$);
SELECT * FROM err($$SELECT alter_queue('q', key_concurrency_limit => 0)$$);
SELECT * FROM err($$SELECT alter_queue('q', max_attempts => 0)$$);
SELECT * FROM err($$SELECT alter_queue('q', max_attempts => -2)$$);
SELECT * FROM err($$SELECT alter_queue('q', lease => '0')$$);
SELECT * FROM err($$SELECT alter_queue('q', lease => '-5 minutes')$$);
SELECT * FROM err($$SELECT alter_queue('q', retry_backoff => '-1 second')$$);
SELECT * FROM err($$SELECT alter_queue('q', retry_backoff_max => '-1 second')$$);
SELECT * FROM err($$SELECT alter_queue('q', ttl => '0')$$);
SELECT * FROM err($$SELECT alter_queue('q', ttl => '-1 day')$$);
-- the resulting backoff range must be ordered
SELECT * FROM err($$SELECT alter_queue('q', retry_backoff => '2 hours')$$);
SELECT * FROM err($$SELECT alter_queue('q', retry_backoff_max => '10 seconds', retry_backoff => '1 minute')$$);
-- clear: names of settable settings only; a bad name changes nothing,
-- including the valid changes in the same call
SELECT * FROM err($$SELECT alter_queue('q', concurrency_limit => 3, clear => ARRAY['bogus'])$$);
SELECT * FROM err($$SELECT alter_queue('q', clear => ARRAY['ttl', 'paused'])$$);
SELECT * FROM err($$SELECT alter_queue('q', clear => ARRAY['tenant'])$$);
SELECT * FROM err($$SELECT alter_queue('q', clear => ARRAY['queue'])$$);
SELECT * FROM err($$SELECT alter_queue('q', clear => ARRAY['']) $$);
SELECT * FROM err($$SELECT alter_queue('q', clear => ARRAY['Lease'])$$);
SELECT * FROM err($$SELECT alter_queue('q', clear => ARRAY[NULL]::text[])$$);
SELECT queue, concurrency_limit, max_attempts, lease, retry_backoff, retry_backoff_max, ttl
  FROM queues WHERE queue IN ('q', 'q_limited') ORDER BY queue;

---------------------------------------------------------------------------
-- pause_queue, resume_queue, drop_queue, set_tenant_limit
---------------------------------------------------------------------------
SELECT * FROM err($$SELECT pause_queue(NULL)$$);
SELECT * FROM err($$SELECT pause_queue('nope')$$);
SELECT * FROM err($$SELECT pause_queue('q_dropped')$$);
SELECT * FROM err($$SELECT resume_queue(NULL)$$);
SELECT * FROM err($$SELECT resume_queue('nope')$$);
SELECT * FROM err($$SELECT resume_queue('q_dropped')$$);
SELECT * FROM err($$SELECT drop_queue(NULL)$$);
SELECT * FROM err($$SELECT drop_queue(NULL, force => true)$$);
SELECT * FROM err($$SELECT drop_queue('nope')$$);
SELECT * FROM err($$SELECT drop_queue('nope', force => true)$$);
SELECT * FROM err($$SELECT drop_queue('q_dropped')$$);
-- open runs (queued, delayed, executing) without force
SELECT * FROM err($$SELECT drop_queue('q')$$);
SELECT * FROM err($$SELECT drop_queue('q', force => false)$$);
SELECT * FROM err($$SELECT drop_queue('q', force => NULL)$$);
SELECT queue, paused, dropped_at IS NULL AS live FROM queues WHERE queue = 'q';
SELECT * FROM err($$SELECT set_tenant_limit(NULL, 1)$$);
SELECT * FROM err($$SELECT set_tenant_limit('', 1)$$);
SELECT * FROM err($$SELECT set_tenant_limit('acme', 0)$$);
SELECT * FROM err($$SELECT set_tenant_limit('acme', -1)$$);
SELECT * FROM err($$SELECT set_tenant_limit('brand-new', 0)$$);
SELECT tenant, concurrency_limit FROM tenants ORDER BY tenant;

---------------------------------------------------------------------------
-- enqueue
---------------------------------------------------------------------------
SELECT * FROM err($$SELECT enqueue(NULL)$$);
SELECT * FROM err($$SELECT enqueue(NULL, '{}')$$);
SELECT * FROM err($$SELECT enqueue('q', NULL)$$);
SELECT * FROM err($$SELECT enqueue('q', '{}', priority => NULL)$$);
SELECT * FROM err($$SELECT enqueue('q', '{}', idempotency_key => 'k', idempotency_ttl => NULL)$$);
-- unknown or dropped queue
SELECT * FROM err($$SELECT enqueue('nope')$$);
SELECT * FROM err($$SELECT enqueue('nope', '{}', idempotency_key => 'key-1')$$);
SELECT * FROM err($$SELECT enqueue('')$$);
SELECT * FROM err($$SELECT enqueue('q_dropped')$$);
SELECT * FROM err($$SELECT enqueue('Q')$$);
-- run_at and delay together, bad moments and intervals
SELECT * FROM err($$SELECT enqueue('q', run_at => now(), delay => '1 minute')$$);
SELECT * FROM err($$SELECT enqueue('q', run_at => now() + interval '1 hour', delay => '0')$$);
SELECT * FROM err($$SELECT enqueue('q', run_at => 'infinity')$$);
SELECT * FROM err($$SELECT enqueue('q', run_at => '-infinity')$$);
SELECT * FROM err($$SELECT enqueue('q', delay => '-1 second')$$);
SELECT * FROM err($$SELECT enqueue('q', delay => '-1 day')$$);
SELECT * FROM err($$SELECT enqueue('q', ttl => '0')$$);
SELECT * FROM err($$SELECT enqueue('q', ttl => '-1 minute')$$);
SELECT * FROM err($$SELECT enqueue('q', max_attempts => 0)$$);
SELECT * FROM err($$SELECT enqueue('q', max_attempts => -1)$$);
SELECT * FROM err($$SELECT enqueue('q', idempotency_key => 'k', idempotency_ttl => '0')$$);
SELECT * FROM err($$SELECT enqueue('q', idempotency_key => 'k', idempotency_ttl => '-1 day')$$);
-- unknown parent run
SELECT * FROM err($$SELECT enqueue('q', parent_run_id => 999999999)$$);
SELECT * FROM err($$SELECT enqueue('q', idempotency_key => 'k', parent_run_id => 999999999)$$);
-- oversize payload (superuser setting)
SET queue_engine.max_payload_bytes = '1kB';
SHOW queue_engine.max_payload_bytes;
SELECT * FROM err($$SELECT enqueue('q', jsonb_build_object('data', repeat('x', 2000)))$$);
SELECT * FROM err($$SELECT enqueue('q', jsonb_build_object('data', repeat('x', 2000)),
                                   idempotency_key => 'big')$$);
SELECT * FROM err($$SELECT enqueue('nope', jsonb_build_object('data', repeat('x', 2000)))$$);
-- (a payload under the cap is accepted)
SELECT pg_column_size(jsonb_build_object('data', repeat('x', 900))) < 1024 AS fits;
BEGIN;
SELECT enqueue('q_empty', jsonb_build_object('data', repeat('x', 900))) > 0 AS accepted;
ROLLBACK;
RESET queue_engine.max_payload_bytes;
SELECT * FROM err($$SELECT enqueue('q', jsonb_build_object('data', repeat('x', 11 * 1024 * 1024)))$$);
SELECT count(*) AS idempotency_keys FROM idempotency_keys;

---------------------------------------------------------------------------
-- enqueue_batch
---------------------------------------------------------------------------
SELECT * FROM err($$SELECT enqueue_batch(NULL, ARRAY['{}']::jsonb[])$$);
SELECT * FROM err($$SELECT enqueue_batch('q', NULL)$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}', NULL, '{}']::jsonb[])$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY[NULL]::jsonb[])$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY[['{}', '{}'], ['{}', '{}']]::jsonb[])$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], priority => NULL)$$);
SELECT * FROM err($$SELECT enqueue_batch('nope', ARRAY['{}']::jsonb[])$$);
SELECT * FROM err($$SELECT enqueue_batch('nope', '{}'::jsonb[])$$);
SELECT * FROM err($$SELECT enqueue_batch('q_dropped', ARRAY['{}']::jsonb[])$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], run_at => now(), delay => '1 hour')$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], run_at => 'infinity')$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], delay => '-1 hour')$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], ttl => '0')$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], ttl => '-1 hour')$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], max_attempts => 0)$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], max_attempts => -7)$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], parent_run_id => 999999999)$$);
SET queue_engine.max_payload_bytes = '1kB';
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}', jsonb_build_object('data', repeat('x', 2000))])$$);
RESET queue_engine.max_payload_bytes;

---------------------------------------------------------------------------
-- dequeue
---------------------------------------------------------------------------
SELECT * FROM err($$SELECT * FROM dequeue(max_runs => NULL)$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q'], NULL)$$);
SELECT * FROM err($$SELECT * FROM dequeue(max_runs => 0)$$);
SELECT * FROM err($$SELECT * FROM dequeue(max_runs => -1)$$);
SELECT * FROM err($$SELECT * FROM dequeue(max_runs => 10001)$$);
SELECT * FROM err($$SELECT * FROM dequeue(max_runs => 2147483647)$$);
-- (the bounds themselves are accepted)
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q_empty'], 1)$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q_empty'], 10000)$$);
SELECT * FROM err($$SELECT * FROM dequeue(lease => '0')$$);
SELECT * FROM err($$SELECT * FROM dequeue(lease => '-1 minute')$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['nope'])$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q', 'nope', 'q_limited'])$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q_dropped'])$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q', NULL])$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY[['q', 'q_limited']])$$);
-- snapshot isolation levels are refused
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM err($$SELECT * FROM dequeue()$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q'], 10)$$);
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q'])$$);
COMMIT;
SET default_transaction_isolation = 'repeatable read';
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q'])$$);
RESET default_transaction_isolation;
SELECT status, attempt FROM get_run(:r_queued);

---------------------------------------------------------------------------
-- heartbeat, complete, complete_batch
---------------------------------------------------------------------------
SELECT * FROM err($$SELECT heartbeat(NULL)$$);
SELECT * FROM err($$SELECT heartbeat(NULL, attempt => 1, extend => '1 minute')$$);
SELECT * FROM err($$SELECT heartbeat(999999999)$$);
SELECT * FROM err($$SELECT heartbeat(999999999, attempt => 1)$$);
SELECT * FROM err($$SELECT heartbeat(-1)$$);
SELECT * FROM err(format($$SELECT heartbeat(%s, extend => '0')$$, :r_exec));
SELECT * FROM err(format($$SELECT heartbeat(%s, extend => '-1 minute')$$, :r_exec));
SELECT * FROM err($$SELECT complete(NULL)$$);
SELECT * FROM err($$SELECT complete(NULL, '{}', 1)$$);
SELECT * FROM err($$SELECT complete(999999999)$$);
SELECT * FROM err($$SELECT complete(999999999, '{"ok": true}', attempt => 1)$$);
SET queue_engine.max_output_bytes = '1kB';
SHOW queue_engine.max_output_bytes;
SELECT * FROM err(format($$SELECT complete(%s, jsonb_build_object('data', repeat('x', 2000)))$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], ARRAY[jsonb_build_object('data', repeat('x', 2000))])$$, :r_exec));
RESET queue_engine.max_output_bytes;
SELECT * FROM err(format($$SELECT complete(%s, jsonb_build_object('data', repeat('x', 11 * 1024 * 1024)))$$, :r_exec));
SELECT * FROM err($$SELECT complete_batch(NULL)$$);
SELECT * FROM err($$SELECT complete_batch(NULL, ARRAY['{}']::jsonb[], ARRAY[1])$$);
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s, NULL])$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[[%s]])$$, :r_exec));
-- mismatched array lengths
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], outputs => ARRAY['{}', '{}']::jsonb[])$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s, %s], outputs => ARRAY['{}']::jsonb[])$$, :r_exec, :r_done));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], outputs => '{}')$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], attempts => ARRAY[1, 1])$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s, %s], attempts => ARRAY[1])$$, :r_exec, :r_done));
SELECT * FROM err($$SELECT complete_batch('{}', attempts => ARRAY[1])$$);
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], attempts => ARRAY[[1]])$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], outputs => ARRAY[['{}']]::jsonb[])$$, :r_exec));
-- an unknown id completes nothing, not even the valid ones
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s, 999999999])$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[999999999, %s], attempts => ARRAY[1, 1])$$, :r_exec));
SELECT status, attempt, output FROM get_run(:r_exec);

---------------------------------------------------------------------------
-- fail, cancel, get_run
---------------------------------------------------------------------------
SELECT * FROM err($$SELECT fail(NULL, '{}')$$);
SELECT * FROM err($$SELECT fail(NULL, NULL)$$);
SELECT * FROM err(format($$SELECT fail(%s, NULL)$$, :r_exec));
SELECT * FROM err(format($$SELECT fail(%s, NULL, attempt => 1)$$, :r_exec));
SELECT * FROM err($$SELECT fail(999999999, '{"message": "x"}')$$);
SELECT * FROM err(format($$SELECT fail(%s, '{}', retry_in => '-1 second')$$, :r_exec));
SELECT * FROM err(format($$SELECT fail(%s, '{}', retry_in => '-1 day', permanent => true)$$, :r_exec));
SELECT * FROM err($$SELECT cancel(NULL)$$);
SELECT * FROM err($$SELECT cancel(NULL, 'why')$$);
SELECT * FROM err($$SELECT cancel(999999999)$$);
SELECT * FROM err($$SELECT cancel(999999999, 'why')$$);
SELECT * FROM err($$SELECT get_run(NULL)$$);
SELECT * FROM err($$SELECT * FROM get_run(999999999)$$);
SELECT * FROM err($$SELECT * FROM get_run(0)$$);
SELECT status, attempt, last_error FROM get_run(:r_exec);

---------------------------------------------------------------------------
-- Limits (README "Limits"): text the engine stores or looks up is capped;
-- a value at the limit is accepted, one byte over is rejected (54000).
---------------------------------------------------------------------------
-- queue names: 128 bytes, counted in bytes (é is 2)
SELECT * FROM err($$SELECT create_queue(repeat('q', 129))$$);
SELECT * FROM err($$SELECT create_queue(repeat('q', 1024 * 1024))$$);
SELECT * FROM err($$SELECT create_queue('x' || repeat('é', 64))$$);
BEGIN;
SELECT * FROM err($$SELECT create_queue(repeat('q', 128))$$);
SELECT * FROM err($$SELECT create_queue(repeat('é', 64))$$);
SELECT octet_length(queue) FROM queues WHERE queue LIKE 'qqq%' OR queue LIKE 'é%' ORDER BY 1;
ROLLBACK;
-- tenant names: 128 bytes; "*" is reserved
SELECT * FROM err($$SELECT create_queue('new', tenant => repeat('t', 129))$$);
SELECT * FROM err($$SELECT set_tenant_limit(repeat('t', 129), 1)$$);
SELECT * FROM err($$SELECT set_tenant_limit(repeat('t', 1024 * 1024), 1)$$);
SELECT * FROM err($$SELECT create_queue('new', tenant => '*')$$);
SELECT * FROM err($$SELECT set_tenant_limit('*', 1)$$);
BEGIN;
SELECT * FROM err($$SELECT create_queue('new', tenant => repeat('t', 128))$$);
SELECT * FROM err($$SELECT set_tenant_limit('**', 1)$$);
SELECT octet_length(tenant) FROM tenants WHERE tenant LIKE 'ttt%' OR tenant = '**' ORDER BY 1;
ROLLBACK;
-- a new tenant whose identity id is taken (the sequence left behind its
-- rows, as by a restore) is an error saying so, not a NULL tenant id; so is
-- an insert that a trigger suppressed
SELECT setval(pg_get_serial_sequence('queue_engine.tenants', 'tenant_id'), 1) AS seq_moved_back;
SELECT * FROM err($$SELECT create_queue('new', tenant => 'restored')$$);
SELECT setval(pg_get_serial_sequence('queue_engine.tenants', 'tenant_id'), max(tenant_id)) > 1 AS seq_restored
  FROM tenants;
BEGIN;
CREATE FUNCTION pg_temp.drop_row() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE TRIGGER drop_row BEFORE INSERT ON tenants FOR EACH ROW EXECUTE FUNCTION pg_temp.drop_row();
SELECT * FROM err($$SELECT create_queue('new', tenant => 'ghost')$$);
ROLLBACK;
-- a name over the limit given to a lookup says so (no live queue has it);
-- one at the limit is looked up
SELECT * FROM err($$SELECT alter_queue(repeat('q', 129), concurrency_limit => 1)$$);
SELECT * FROM err($$SELECT pause_queue(repeat('q', 129))$$);
SELECT * FROM err($$SELECT resume_queue(repeat('q', 129))$$);
SELECT * FROM err($$SELECT drop_queue(repeat('q', 1024 * 1024), force => true)$$);
SELECT * FROM err($$SELECT enqueue(repeat('q', 129))$$);
SELECT * FROM err($$SELECT enqueue(repeat('q', 1024 * 1024))$$);
SELECT * FROM err($$SELECT enqueue_batch(repeat('q', 129), ARRAY['{}']::jsonb[])$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY[repeat('q', 129)])$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q', repeat('q', 1024 * 1024)])$$);
SELECT * FROM err($$SELECT enqueue(repeat('q', 128))$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q_empty', repeat('q', 128)])$$);
-- concurrency_key: 256 bytes
SELECT * FROM err($$SELECT enqueue('q', concurrency_key => repeat('k', 257))$$);
SELECT * FROM err($$SELECT enqueue('q', concurrency_key => repeat('k', 1024 * 1024))$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], concurrency_key => repeat('k', 257))$$);
-- idempotency_key: 1024 bytes
SELECT * FROM err($$SELECT enqueue('q', idempotency_key => repeat('i', 1025))$$);
SELECT * FROM err($$SELECT enqueue('q', idempotency_key => repeat('i', 1024 * 1024))$$);
-- worker: 1024 bytes
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q_empty'], worker => repeat('w', 1025))$$);
SELECT * FROM err($$SELECT * FROM dequeue(worker => repeat('w', 10 * 1024 * 1024))$$);
SELECT * FROM err($$SELECT * FROM dequeue(ARRAY['q_empty'], worker => repeat('w', 1024))$$);
-- tags: at most 64, each at most 256 bytes, one-dimensional, no nulls
SELECT * FROM err($$SELECT enqueue('q', tags => (SELECT array_agg(i::text) FROM generate_series(1, 65) i))$$);
SELECT * FROM err($$SELECT enqueue('q', tags => ARRAY['a', repeat('t', 257)])$$);
SELECT * FROM err($$SELECT enqueue('q', tags => ARRAY[repeat('t', 10 * 1024 * 1024)])$$);
SELECT * FROM err($$SELECT enqueue('q', tags => '{{a,b},{c,d}}')$$);
SELECT * FROM err($$SELECT enqueue('q', tags => '{NULL}')$$);
SELECT * FROM err($$SELECT enqueue('q', tags => ARRAY['a', NULL])$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], tags => '{{a}}')$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], tags => '{NULL}')$$);
SELECT * FROM err($$SELECT enqueue_batch('q', ARRAY['{}']::jsonb[], tags => ARRAY[repeat('t', 257)])$$);
-- (every value at its limit is accepted and stored whole)
BEGIN;
SELECT enqueue('q_empty', concurrency_key => repeat('k', 256), idempotency_key => repeat('i', 1024),
               tags => (SELECT array_agg(repeat(i::text, 256 / length(i::text))) FROM generate_series(1, 64) i)
                       || '{}'::text[]) AS r_limits \gset
SELECT octet_length(concurrency_key) AS key_bytes, octet_length(idempotency_key) AS idem_bytes,
       cardinality(tags) AS tags, (SELECT max(octet_length(t)) FROM unnest(tags) t) AS longest_tag
  FROM get_run(:r_limits);
SELECT count(*) AS batch FROM enqueue_batch('q_empty', ARRAY['{}']::jsonb[], concurrency_key => repeat('k', 256),
                                            tags => ARRAY[repeat('t', 256)]);
ROLLBACK;
-- clear: one-dimensional, no nulls
SELECT * FROM err($$SELECT alter_queue('q', clear => '{{ttl}}')$$);
SELECT * FROM err($$SELECT alter_queue('q', clear => '{{ttl},{lease}}')$$);
SELECT * FROM err($$SELECT alter_queue('q', clear => '{ttl,NULL}')$$);
-- complete_batch: attempts without nulls (payloads and run_ids above)
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], attempts => ARRAY[NULL]::int[])$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s, %s], attempts => ARRAY[1, NULL])$$, :r_exec, :r_done));

-- A 10 MB cancel reason is stored once and trimmed like a stored error
-- (each string at most max_error_field_bytes, the whole under 64 kB); the
-- message repeats the first 256 bytes of the reason.
BEGIN;
SELECT cancel(:r_queued, repeat('R', 10 * 1024 * 1024));
SELECT pg_column_size(last_error) < 65536 AS stored_under_64kB,
       octet_length(last_error::text) < 65536 AS text_under_64kB,
       octet_length(last_error->>'reason') AS reason_bytes,
       octet_length(last_error->>'message') AS message_bytes,
       right(last_error->>'message', 5) AS message_end,
       last_error->'canceled' AS canceled, last_error->'truncated' AS truncated
  FROM runs WHERE run_id = :r_queued;
ROLLBACK;
BEGIN;
SELECT cancel(:r_queued, repeat('r', 256));
SELECT last_error->>'message' = 'canceled: ' || repeat('r', 256) AS whole_reason_in_message,
       last_error->>'reason' = repeat('r', 256) AS whole_reason, last_error ? 'truncated' AS truncated
  FROM runs WHERE run_id = :r_queued;
ROLLBACK;
BEGIN;
SELECT cancel(:r_queued, repeat('é', 200));
SELECT octet_length(last_error->>'message') AS message_bytes, right(last_error->>'message', 4) AS message_end,
       last_error->>'reason' = repeat('é', 200) AS whole_reason, last_error ? 'truncated' AS truncated
  FROM runs WHERE run_id = :r_queued;
ROLLBACK;
BEGIN;
SET LOCAL queue_engine.max_error_field_bytes = '1kB';
SELECT cancel(:r_queued, 'why: ' || repeat('é', 1000));
SELECT octet_length(last_error->>'reason') AS reason_bytes, last_error->'truncated' AS truncated
  FROM runs WHERE run_id = :r_queued;
ROLLBACK;

-- A stall error names the worker, trimmed the same way: a worker name
-- stored before dequeue capped it (10 MB, set by hand here) is cut to the
-- worker limit, one at the limit is kept whole, and max_error_field_bytes
-- applies (on a character boundary).
BEGIN;
UPDATE runs SET worker = repeat('W', 10 * 1024 * 1024), lease_expires_at = now() - interval '1 second'
 WHERE run_id = :r_exec;
SELECT rescue_stalled();
SELECT status, pg_column_size(last_error) < 65536 AS stored_under_64kB,
       octet_length(last_error::text) < 65536 AS text_under_64kB,
       octet_length(last_error->>'worker') AS worker_bytes, last_error->'truncated' AS truncated,
       last_error->'stalled' AS stalled
  FROM runs WHERE run_id = :r_exec;
ROLLBACK;
BEGIN;
SELECT run_id = :r_queued AS claimed FROM dequeue(ARRAY['q'], worker => repeat('w', 1024));
UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = :r_queued;
SELECT rescue_stalled();
SELECT last_error->>'worker' = repeat('w', 1024) AS whole_worker, last_error ? 'truncated' AS truncated
  FROM runs WHERE run_id = :r_queued;
ROLLBACK;
BEGIN;
SET LOCAL queue_engine.max_error_field_bytes = 100;
UPDATE runs SET worker = 'w-' || repeat('é', 100), lease_expires_at = now() - interval '1 second'
 WHERE run_id = :r_exec;
SELECT rescue_stalled();
SELECT octet_length(last_error->>'worker') <= 100 AS worker_within_cap,
       left(last_error->>'worker', 3) AS worker_start, last_error->'truncated' AS truncated
  FROM runs WHERE run_id = :r_exec;
ROLLBACK;

---------------------------------------------------------------------------
-- queue_engine.require_attempt: omitting attempt is an error naming the
-- function (a worker whose attempt was rescued would act on the new one).
---------------------------------------------------------------------------
SHOW queue_engine.require_attempt;
SET queue_engine.require_attempt = on;
SELECT * FROM err(format($$SELECT heartbeat(%s)$$, :r_exec));
SELECT * FROM err(format($$SELECT heartbeat(%s, extend => '1 minute')$$, :r_exec));
SELECT * FROM err(format($$SELECT complete(%s)$$, :r_exec));
SELECT * FROM err(format($$SELECT complete(%s, '{"ok": true}')$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s])$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], outputs => ARRAY['{}']::jsonb[])$$, :r_exec));
SELECT * FROM err(format($$SELECT fail(%s, '{"message": "x"}')$$, :r_exec));
SELECT * FROM err(format($$SELECT fail(%s, '{}', permanent => true)$$, :r_exec));
-- (with attempt they work as before: a stale attempt changes nothing)
SELECT * FROM err(format($$SELECT heartbeat(%s, attempt => 99)$$, :r_exec));
SELECT * FROM err(format($$SELECT complete(%s, attempt => 99)$$, :r_exec));
SELECT * FROM err(format($$SELECT complete_batch(ARRAY[%s], attempts => ARRAY[99])$$, :r_exec));
SELECT * FROM err(format($$SELECT fail(%s, '{}', attempt => 99)$$, :r_exec));
BEGIN;
SELECT heartbeat(:r_exec, attempt => 1) IS NOT NULL AS extended;
SELECT complete(:r_exec, attempt => 1) AS completed;
ROLLBACK;
RESET queue_engine.require_attempt;

---------------------------------------------------------------------------
-- Operating: check_consistency and the maintenance tasks
---------------------------------------------------------------------------
SELECT * FROM err($$SELECT * FROM check_consistency(NULL)$$);
SELECT * FROM err($$SELECT promote_delayed(NULL)$$);
SELECT * FROM err($$SELECT promote_delayed(0)$$);
SELECT * FROM err($$SELECT expire_runs(NULL)$$);
SELECT * FROM err($$SELECT expire_runs(-1)$$);
SELECT * FROM err($$SELECT rescue_stalled(NULL)$$);
SELECT * FROM err($$SELECT rescue_stalled(0)$$);
SELECT * FROM err($$SELECT purge_idempotency_keys(NULL)$$);
SELECT * FROM err($$SELECT purge_idempotency_keys(0)$$);
SELECT * FROM err($$SELECT fold_counts(NULL)$$);
SELECT * FROM err($$SELECT fold_counts(0)$$);
SELECT * FROM err($$SELECT prune_finished_runs(NULL)$$);
SELECT * FROM err($$SELECT prune_finished_runs(0)$$);
SELECT * FROM err($$SET queue_engine.finished_run_retention = -2$$);
SELECT * FROM err($$SET queue_engine.finished_run_retention = 'a week'$$);

---------------------------------------------------------------------------
-- Privileges: nothing is granted to PUBLIC, and the size caps are
-- superuser settings.
---------------------------------------------------------------------------
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_qe_errors_nobody;
DROP ROLE IF EXISTS regress_qe_errors_producer;
DROP ROLE IF EXISTS regress_qe_errors_worker;
DROP ROLE IF EXISTS regress_qe_errors_monitor;
RESET client_min_messages;
CREATE ROLE regress_qe_errors_nobody;
SET ROLE regress_qe_errors_nobody;
SELECT * FROM err($$SELECT queue_engine.enqueue('q')$$);
SELECT * FROM err($$SELECT * FROM queue_engine.dequeue()$$);
SELECT * FROM err($$SELECT * FROM queue_engine.queue_stats$$);
SELECT * FROM err($$SELECT count(*) FROM queue_engine.runs$$);
SELECT * FROM err($$SET queue_engine.max_payload_bytes = '100MB'$$);
SELECT * FROM err($$SET queue_engine.max_output_bytes = '100MB'$$);
SELECT * FROM err($$SET queue_engine.max_error_field_bytes = '64kB'$$);
SELECT * FROM err($$SET queue_engine.finished_run_retention = -1$$);
-- (require_attempt is the application's own choice: any role may set it)
SELECT * FROM err($$SET queue_engine.require_attempt = on$$);
RESET queue_engine.require_attempt;
RESET ROLE;
DROP ROLE regress_qe_errors_nobody;

-- The roles of README "Roles and grants": each may do its part only.
CREATE ROLE regress_qe_errors_producer;
CREATE ROLE regress_qe_errors_worker;
CREATE ROLE regress_qe_errors_monitor;
SELECT queue_engine.grant_tenant(r.role, t.tenant, r.access)
  FROM queue_engine.queues q JOIN queue_engine.tenants t USING (tenant_id),
       (VALUES ('regress_qe_errors_producer', 'producer'), ('regress_qe_errors_worker', 'worker')) r(role, access)
 WHERE q.queue = 'q_empty' AND q.dropped_at IS NULL;
SELECT queue_engine.grant_tenant('regress_qe_errors_monitor', '*', 'reader');

SET ROLE regress_qe_errors_producer;
BEGIN;
SELECT queue_engine.enqueue('q_empty', '{}') > 0 AS enqueued;
SELECT count(*) AS batch FROM queue_engine.enqueue_batch('q_empty', ARRAY['{}', '{}']::jsonb[]);
ROLLBACK;
SELECT * FROM err($$SELECT * FROM queue_engine.dequeue(ARRAY['q_empty'])$$);
SELECT * FROM err($$SELECT queue_engine.create_queue('new')$$);
SELECT * FROM err($$SELECT * FROM queue_engine.get_run(1)$$);
SELECT * FROM err($$SELECT count(*) FROM queue_engine.runs$$);
SELECT * FROM err($$SELECT * FROM queue_engine.queue_stats$$);
RESET ROLE;

SET ROLE regress_qe_errors_worker;
SELECT * FROM err($$SELECT * FROM queue_engine.dequeue(ARRAY['q_empty'], 10)$$);
SELECT * FROM err($$SELECT queue_engine.enqueue('q_empty')$$);
SELECT * FROM err($$SELECT queue_engine.cancel(1)$$);
SELECT * FROM err($$SELECT queue_engine.drop_queue('q_empty')$$);
SELECT * FROM err($$CALL queue_engine.run_maintenance()$$);
SELECT * FROM err($$UPDATE queue_engine.runs SET status = 'queued'$$);
RESET ROLE;

SET ROLE regress_qe_errors_monitor;
-- (README: reader on '*' is all a dashboard needs)
SELECT * FROM err($$SELECT * FROM queue_engine.queue_stats$$);
SELECT * FROM err($$SELECT queue_engine.enqueue('q_empty')$$);
SELECT * FROM err($$SELECT count(*) FROM queue_engine.runs$$);
RESET ROLE;

SELECT queue_engine.revoke_tenant(a.role::text, CASE a.tenant_id WHEN 0 THEN '*' ELSE t.tenant END)
  FROM queue_engine.tenant_access a LEFT JOIN queue_engine.tenants t USING (tenant_id);
DROP OWNED BY regress_qe_errors_producer, regress_qe_errors_worker, regress_qe_errors_monitor;
DROP ROLE regress_qe_errors_producer;
DROP ROLE regress_qe_errors_worker;
DROP ROLE regress_qe_errors_monitor;

-- Nothing above changed the engine's state.
SELECT * FROM run_counts();
SELECT state() = :'initial_state' AS state_unchanged;
SELECT * FROM check_consistency(false);
SELECT count(*) AS log_rows FROM consistency_log;
