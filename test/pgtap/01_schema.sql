-- 01_schema.sql: the public surface of queue_engine (SPEC "Functions", "Run states",
-- "Reading", "Operating") and its privileges (README "Roles and grants").
BEGIN;
SELECT plan(147);

-- Every SPEC function: name, argument types, argument names with defaults, result.
CREATE TEMP TABLE api (name text, argtypes text[], args text, result text);
INSERT INTO api VALUES
('create_queue', ARRAY['text','text','integer','integer','integer','interval','interval','interval','interval'],
 'queue text, tenant text DEFAULT ''default''::text, concurrency_limit integer DEFAULT NULL::integer, key_concurrency_limit integer DEFAULT NULL::integer, max_attempts integer DEFAULT 3, lease interval DEFAULT ''00:05:00''::interval, retry_backoff interval DEFAULT ''00:00:01''::interval, retry_backoff_max interval DEFAULT ''01:00:00''::interval, ttl interval DEFAULT NULL::interval',
 'void'),
('alter_queue', ARRAY['text','integer','integer','integer','interval','interval','interval','interval','text[]'],
 'queue text, concurrency_limit integer DEFAULT NULL::integer, key_concurrency_limit integer DEFAULT NULL::integer, max_attempts integer DEFAULT NULL::integer, lease interval DEFAULT NULL::interval, retry_backoff interval DEFAULT NULL::interval, retry_backoff_max interval DEFAULT NULL::interval, ttl interval DEFAULT NULL::interval, clear text[] DEFAULT NULL::text[]',
 'void'),
('pause_queue', ARRAY['text'], 'queue text', 'void'),
('resume_queue', ARRAY['text'], 'queue text', 'void'),
('drop_queue', ARRAY['text','boolean'], 'queue text, force boolean DEFAULT false', 'void'),
('set_tenant_limit', ARRAY['text','integer'], 'tenant text, concurrency_limit integer', 'void'),
('enqueue', ARRAY['text','jsonb','text','integer','timestamp with time zone','interval','interval','integer','text','interval','text[]','bigint','jsonb'],
 'queue text, payload jsonb DEFAULT ''{}''::jsonb, concurrency_key text DEFAULT NULL::text, priority integer DEFAULT 0, run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, delay interval DEFAULT NULL::interval, ttl interval DEFAULT NULL::interval, max_attempts integer DEFAULT NULL::integer, idempotency_key text DEFAULT NULL::text, idempotency_ttl interval DEFAULT ''1 day''::interval, tags text[] DEFAULT NULL::text[], parent_run_id bigint DEFAULT NULL::bigint, cancel_on jsonb DEFAULT NULL::jsonb',
 'bigint'),
('enqueue_batch', ARRAY['text','jsonb[]','text','integer','timestamp with time zone','interval','interval','integer','text[]','bigint','jsonb'],
 'queue text, payloads jsonb[], concurrency_key text DEFAULT NULL::text, priority integer DEFAULT 0, run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, delay interval DEFAULT NULL::interval, ttl interval DEFAULT NULL::interval, max_attempts integer DEFAULT NULL::integer, tags text[] DEFAULT NULL::text[], parent_run_id bigint DEFAULT NULL::bigint, cancel_on jsonb DEFAULT NULL::jsonb',
 'SETOF bigint'),
('dequeue', ARRAY['text[]','integer','interval','text','interval'],
 'queues text[] DEFAULT NULL::text[], max_runs integer DEFAULT 1, lease interval DEFAULT NULL::interval, worker text DEFAULT NULL::text, wait interval DEFAULT NULL::interval',
 'TABLE(run_id bigint, queue text, tenant text, attempt integer, payload jsonb, concurrency_key text, priority integer, lease_expires_at timestamp with time zone, resume jsonb)'),
('heartbeat', ARRAY['bigint','integer','interval'],
 'run_id bigint, attempt integer DEFAULT NULL::integer, extend interval DEFAULT NULL::interval',
 'timestamp with time zone'),
('complete', ARRAY['bigint','jsonb','integer'],
 'run_id bigint, output jsonb DEFAULT NULL::jsonb, attempt integer DEFAULT NULL::integer', 'boolean'),
('complete_batch', ARRAY['bigint[]','jsonb[]','integer[]'],
 'run_ids bigint[], outputs jsonb[] DEFAULT NULL::jsonb[], attempts integer[] DEFAULT NULL::integer[]', 'bigint'),
('fail', ARRAY['bigint','jsonb','integer','interval','boolean'],
 'run_id bigint, error jsonb, attempt integer DEFAULT NULL::integer, retry_in interval DEFAULT NULL::interval, permanent boolean DEFAULT false',
 'queue_engine.run_status'),
('cancel', ARRAY['bigint','text'], 'run_id bigint, reason text DEFAULT NULL::text', 'boolean'),
('get_run', ARRAY['bigint'], 'run_id bigint', 'queue_engine.run_info'),
('check_consistency', ARRAY['boolean'], 'repair boolean DEFAULT true',
 'TABLE(check_name text, found bigint, repaired bigint)'),
('promote_delayed', ARRAY['integer'], 'batch_size integer DEFAULT 1000', 'bigint'),
('expire_runs', ARRAY['integer'], 'batch_size integer DEFAULT 1000', 'bigint'),
('rescue_stalled', ARRAY['integer'], 'batch_size integer DEFAULT 1000', 'bigint'),
('purge_idempotency_keys', ARRAY['integer'], 'batch_size integer DEFAULT 1000', 'bigint'),
('fold_counts', ARRAY['integer'], 'batch_size integer DEFAULT 10000', 'bigint'),
('prune_finished_runs', ARRAY['integer'], 'batch_size integer DEFAULT 1000', 'bigint'),
('grant_tenant', ARRAY['name','text','text'], 'role name, tenant text, access text', 'void'),
('revoke_tenant', ARRAY['name','text','text'], 'role name, tenant text, access text DEFAULT NULL::text', 'void'),
('access_tenants', ARRAY['text'], 'access text', 'integer[]'),
('wait_for_event', ARRAY['bigint','integer','text','jsonb','jsonpath','interval','interval'],
 'run_id bigint, attempt integer, event text, match jsonb DEFAULT NULL::jsonb, condition jsonpath DEFAULT NULL::jsonpath, timeout interval DEFAULT NULL::interval, lookback interval DEFAULT NULL::interval',
 'queue_engine.run_status'),
('send_event', ARRAY['text','jsonb','text','text'],
 'event text, data jsonb DEFAULT ''{}''::jsonb, tenant text DEFAULT ''default''::text, idempotency_key text DEFAULT NULL::text',
 'TABLE(event_id bigint, woken bigint, canceled bigint)'),
('sleep', ARRAY['bigint','integer','timestamp with time zone','interval'],
 'run_id bigint, attempt integer, until timestamp with time zone DEFAULT NULL::timestamp with time zone, duration interval DEFAULT NULL::interval',
 'queue_engine.run_status'),
('wait_for_children', ARRAY['bigint','integer','interval'],
 'run_id bigint, attempt integer, timeout interval DEFAULT NULL::interval', 'queue_engine.run_status'),
('child_runs', ARRAY['bigint','bigint','integer'],
 'run_id bigint, after_run_id bigint DEFAULT NULL::bigint, page_size integer DEFAULT 100',
 'TABLE(run_id bigint, status queue_engine.run_status, output jsonb, last_error jsonb, finished_at timestamp with time zone)'),
('save_step', ARRAY['bigint','integer','text','jsonb'],
 'run_id bigint, attempt integer, step text, result jsonb DEFAULT NULL::jsonb', 'boolean'),
('get_steps', ARRAY['bigint'], 'run_id bigint',
 'TABLE(step text, result jsonb, saved_at timestamp with time zone)'),
('wake_waits', ARRAY['integer'], 'batch_size integer DEFAULT 1000', 'bigint'),
('prune_events', ARRAY['integer'], 'batch_size integer DEFAULT 1000', 'bigint'),
('list_runs', ARRAY['text','text','queue_engine.run_status[]','text','timestamp with time zone','timestamp with time zone','jsonb','text','integer'],
 'queue text DEFAULT NULL::text, tenant text DEFAULT NULL::text, status queue_engine.run_status[] DEFAULT NULL::queue_engine.run_status[], tag text DEFAULT NULL::text, created_after timestamp with time zone DEFAULT NULL::timestamp with time zone, created_before timestamp with time zone DEFAULT NULL::timestamp with time zone, payload_contains jsonb DEFAULT NULL::jsonb, after text DEFAULT NULL::text, page_size integer DEFAULT 50',
 'TABLE(run_id bigint, queue text, tenant text, status queue_engine.run_status, attempt integer, priority integer, concurrency_key text, tags text[], created_at timestamp with time zone, started_at timestamp with time zone, finished_at timestamp with time zone, cursor text)'),
('metrics', ARRAY[]::text[], '', 'text');

-- 1
SELECT has_schema('queue_engine');
-- 2-3
SELECT has_enum('queue_engine', 'run_status', 'has enum run_status');
SELECT enum_has_labels('queue_engine', 'run_status',
       ARRAY['delayed', 'queued', 'executing', 'waiting', 'completed', 'failed', 'canceled', 'expired'],
       'run_status has exactly the SPEC labels, in order');

-- 4-37: has_function with argument types
SELECT has_function('queue_engine', name, argtypes, format('has function %s(%s)', name, array_to_string(argtypes, ', ')))
  FROM api ORDER BY name;
-- 38-71: argument names, types and defaults exactly
SELECT is(pg_get_function_arguments(format('queue_engine.%I(%s)', name, array_to_string(argtypes, ','))::regprocedure),
          args, format('%s arguments (names, types, defaults)', name))
  FROM api ORDER BY name;
-- 72-105: result types
SELECT is(pg_get_function_result(format('queue_engine.%I(%s)', name, array_to_string(argtypes, ','))::regprocedure),
          result, format('%s returns %s', name, result))
  FROM api ORDER BY name;

-- 106-108: run_maintenance() is a procedure without arguments
SELECT has_function('queue_engine', 'run_maintenance', ARRAY[]::name[], 'has run_maintenance()');
SELECT is_procedure('queue_engine', 'run_maintenance', ARRAY[]::name[], 'run_maintenance is a procedure');
SELECT is((SELECT count(*)::int FROM pg_proc WHERE pronamespace = 'queue_engine'::regnamespace
            AND proname = 'run_maintenance' AND pronargs = 0), 1, 'exactly one run_maintenance, no arguments');

-- 109: get_run's row has every SPEC field, in the SPEC's order
SELECT is((SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = 'queue_engine.run_info'::regclass AND attnum > 0 AND NOT attisdropped),
          ARRAY['run_id', 'queue', 'tenant', 'status', 'attempt', 'max_attempts', 'priority', 'concurrency_key',
                'payload', 'created_at', 'run_at', 'started_at', 'finished_at', 'expires_at', 'lease_expires_at',
                'last_error', 'output', 'tags', 'parent_run_id', 'idempotency_key', 'waiting_for'],
          'get_run row has every SPEC field');

-- 110-111: queue_stats view
SELECT has_view('queue_engine', 'queue_stats', 'has view queue_stats');
SELECT is((SELECT array_agg(attname::text || ' ' || format_type(atttypid, atttypmod) ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = 'queue_engine.queue_stats'::regclass AND attnum > 0 AND NOT attisdropped),
          ARRAY['tenant text', 'queue text', 'paused boolean', 'concurrency_limit integer', 'queued bigint',
                'delayed bigint', 'executing bigint', 'waiting bigint', 'oldest_queued_at timestamp with time zone'],
          'queue_stats columns');

-- 112-115: consistency_log and tenant_access tables
SELECT has_table('queue_engine', 'consistency_log', 'has table consistency_log');
SELECT is((SELECT array_agg(attname::text || ' ' || format_type(atttypid, atttypmod) ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = 'queue_engine.consistency_log'::regclass AND attnum > 0 AND NOT attisdropped),
          ARRAY['logged_at timestamp with time zone', 'check_name text', 'found bigint', 'repaired bigint', 'detail jsonb'],
          'consistency_log columns');
SELECT has_table('queue_engine', 'tenant_access', 'has table tenant_access');
SELECT is((SELECT array_agg(attname::text || ' ' || format_type(atttypid, atttypmod) ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = 'queue_engine.tenant_access'::regclass AND attnum > 0 AND NOT attisdropped),
          ARRAY['role regrole', 'tenant_id integer', 'access text'],
          'tenant_access columns');

-- 116-118: search_path is pinned, API functions are SECURITY DEFINER
-- (queue_below_limit and queue_at_limit_marked excepted: the first's one
-- query is schema-qualified, the second runs none, and a SET
-- clause would cost a GUC save and restore on each of its calls, one per
-- queue that dequeue(NULL) walks past; count_delta_segment and
-- current_segment too: they run no query at all, and count_delta_segment is
-- the default of every count delta inserted by SQL; run_meta_or_null too: an
-- SQL function that names nothing (a row and IS NULL), which a SET clause
-- would keep from being inlined into the statements that build meta); and the hot
-- path's C functions, which pin the same search_path themselves around each statement
-- they run (12_search_path shows it under a hostile search_path): exactly these.
SELECT is((SELECT coalesce(array_agg(proname::text ORDER BY proname), '{}') FROM pg_proc
            WHERE pronamespace = 'queue_engine'::regnamespace AND prokind = 'f'
              AND proname NOT IN ('queue_below_limit', 'queue_at_limit_marked', 'count_delta_segment',
                                  'current_segment', 'run_meta_or_null')
              AND NOT coalesce(proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']),
          ARRAY['complete', 'complete_batch', 'dequeue', 'enqueue', 'enqueue_batch', 'fail', 'heartbeat'],
          'every function pins search_path = pg_catalog, pg_temp by a SET clause but the hot path''s, which pin it in C');
SELECT is((SELECT coalesce(array_agg(a.name ORDER BY a.name), '{}') FROM api a
            JOIN pg_proc p ON p.oid = format('queue_engine.%I(%s)', a.name, array_to_string(a.argtypes, ','))::regprocedure
            WHERE NOT p.prosecdef),
          '{}'::text[], 'every API function is SECURITY DEFINER');
SELECT isnt_definer('queue_engine', 'run_maintenance', ARRAY[]::name[], 'run_maintenance is not SECURITY DEFINER (so it can commit between batches)');

-- Roles for the privilege checks.
CREATE ROLE qe_t_nobody NOLOGIN;
CREATE ROLE qe_t_usage NOLOGIN;
GRANT USAGE ON SCHEMA queue_engine TO qe_t_usage;

-- Run sql as role r; returns 'ok' or 'SQLSTATE: message'.
CREATE FUNCTION pg_temp.as_role(r text, sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	res text;
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', r);
	BEGIN
		EXECUTE sql;
		res := 'ok';
	EXCEPTION WHEN OTHERS THEN
		res := SQLSTATE || ': ' || SQLERRM;
	END;
	RESET ROLE;
	RETURN res;
END;
$$;

SELECT queue_engine.create_queue('priv_q') \gset
SELECT queue_engine.enqueue('priv_q', '{"a": 1}') AS priv_run \gset

-- 119-124: nothing is granted to PUBLIC
SELECT ok(NOT has_schema_privilege('qe_t_nobody', 'queue_engine', 'USAGE'), 'PUBLIC has no USAGE on schema queue_engine');
SELECT is((SELECT coalesce(array_agg(p.oid::regprocedure::text ORDER BY 1), '{}') FROM pg_proc p
            WHERE p.pronamespace = 'queue_engine'::regnamespace
              AND has_function_privilege('qe_t_nobody', p.oid, 'EXECUTE')),
          '{}'::text[], 'PUBLIC can execute no function or procedure');
SELECT is((SELECT coalesce(array_agg(c.relname::text ORDER BY 1), '{}') FROM pg_class c
            WHERE c.relnamespace = 'queue_engine'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm')
              AND has_table_privilege('qe_t_usage', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')),
          '{}'::text[], 'PUBLIC has no privilege on any table or view');
SELECT is((WITH s AS MATERIALIZED (SELECT c.oid, c.relname FROM pg_class c
                     WHERE c.relnamespace = 'queue_engine'::regnamespace AND c.relkind = 'S')
            SELECT coalesce(array_agg(s.relname::text ORDER BY 1), '{}') FROM s
             WHERE has_sequence_privilege('qe_t_usage', s.oid, 'USAGE, SELECT, UPDATE')),
          '{}'::text[], 'PUBLIC has no privilege on any sequence');
SELECT is(pg_temp.as_role('qe_t_nobody', 'SELECT * FROM queue_engine.runs'),
          '42501: permission denied for schema queue_engine', 'a role without grants cannot read runs');
SELECT is(pg_temp.as_role('qe_t_nobody', 'SELECT queue_engine.enqueue(''priv_q'')'),
          '42501: permission denied for schema queue_engine', 'a role without grants cannot execute enqueue');

-- 125-127: schema USAGE alone gives nothing either
SELECT is(pg_temp.as_role('qe_t_usage', 'SELECT * FROM queue_engine.runs'),
          '42501: permission denied for view runs', 'USAGE alone: cannot read runs');
SELECT is(pg_temp.as_role('qe_t_usage', 'SELECT queue_engine.enqueue(''priv_q'')'),
          '42501: permission denied for function enqueue', 'USAGE alone: cannot execute enqueue');
SELECT is(pg_temp.as_role('qe_t_usage', 'SELECT * FROM queue_engine.get_run(' || :priv_run || ')'),
          '42501: permission denied for function get_run', 'USAGE alone: cannot execute get_run');

-- 128-130: size caps are superuser settings
SELECT is(pg_temp.as_role('qe_t_usage', 'SET queue_engine.max_payload_bytes = 1000000000'),
          '42501: permission denied to set parameter "queue_engine.max_payload_bytes"',
          'an application cannot lift max_payload_bytes');
SELECT is(pg_temp.as_role('qe_t_usage', 'SET queue_engine.max_output_bytes = 1000000000'),
          '42501: permission denied to set parameter "queue_engine.max_output_bytes"',
          'an application cannot lift max_output_bytes');
SELECT is(pg_temp.as_role('qe_t_usage', 'SET queue_engine.max_error_field_bytes = 65536'),
          '42501: permission denied to set parameter "queue_engine.max_error_field_bytes"',
          'an application cannot lift max_error_field_bytes');

-- 131-133: the README's roles work with exactly the documented grant_tenant calls
CREATE ROLE qe_t_producer NOLOGIN;
SELECT queue_engine.grant_tenant('qe_t_producer', 'default', 'producer');
CREATE ROLE qe_t_worker NOLOGIN;
SELECT queue_engine.grant_tenant('qe_t_worker', 'default', 'worker');
CREATE ROLE qe_t_monitor NOLOGIN;
SELECT queue_engine.grant_tenant('qe_t_monitor', '*', 'reader');

SELECT is(pg_temp.as_role('qe_t_producer',
          'SELECT queue_engine.enqueue(''priv_q'', ''{"by": "producer"}'', idempotency_key => ''p1'');'
          'SELECT * FROM queue_engine.enqueue_batch(''priv_q'', ARRAY[''{}'', ''{}'']::jsonb[])'),
          'ok', 'producer role (README grant_tenant) can enqueue and enqueue_batch');
SELECT is(pg_temp.as_role('qe_t_worker',
          'DO $x$ DECLARE r record; BEGIN
             FOR r IN SELECT * FROM queue_engine.dequeue(ARRAY[''priv_q''], 10) LOOP
               PERFORM queue_engine.heartbeat(r.run_id, r.attempt);
               PERFORM queue_engine.complete(r.run_id, ''{"ok": true}'', r.attempt);
             END LOOP; END $x$'),
          'ok', 'worker role (README grant_tenant) can dequeue, heartbeat and complete');
SELECT is(pg_temp.as_role('qe_t_monitor', 'SELECT * FROM queue_engine.queue_stats;'
                                          'SELECT * FROM queue_engine.consistency_log ORDER BY logged_at DESC LIMIT 20'),
          'ok', 'monitor role (README grant_tenant on *) can read queue_stats and consistency_log');

-- 134: the work above really happened (4 runs completed by the worker role)
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE status = 'completed' AND output = '{"ok": true}'),
          4, 'worker role completed the 4 runs');

-- 135: run_maintenance puts the caller's search_path back
SET search_path = public, pg_catalog;
CALL queue_engine.run_maintenance();
SELECT is(current_setting('search_path'), 'public, pg_catalog', 'run_maintenance restores the caller''s search_path');

-- The internal helpers refuse bad calls and change nothing.
SELECT throws_ok($$SELECT queue_engine.queue_below_limit(NULL, 1)$$, '22004',
                 'queue_id must not be null', 'queue_below_limit(NULL, ...) is refused (22004)');
SELECT is(queue_engine.queue_below_limit(-1, NULL), true, 'queue_below_limit with no limit: true');
SELECT is(queue_engine.queue_at_limit_marked(NULL, 1), false, 'queue_at_limit_marked(NULL, ...): false');
SELECT is(queue_engine.queue_at_limit_marked(-1, 1), false, 'queue_at_limit_marked of a queue never marked: false');
SELECT throws_ok($$SELECT queue_engine.queue_definitions_changed()$$, '39P01',
                 'queue_definitions_changed() must be called as a trigger',
                 'the trigger function cannot be called directly');
SELECT throws_ok($$SELECT queue_engine.tenant_access_changed()$$, '39P01',
                 'tenant_access_changed() must be called as a trigger',
                 'the tenant_access trigger function cannot be called directly');

SELECT * FROM finish();
ROLLBACK;
