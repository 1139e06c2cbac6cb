-- 09_roles_upgrade.sql: ALTER EXTENSION UPDATE from 0.1.0 keeps the roles
-- of the old README (plain GRANTs) working, as access on every tenant ('*').
BEGIN;
SELECT plan(7);

SET client_min_messages = warning;
DROP EXTENSION queue_engine CASCADE;
CREATE EXTENSION queue_engine VERSION '0.1.0';
RESET client_min_messages;
SELECT queue_engine.create_queue('up_q', tenant => 'up_t');

-- The 0.1.0 README's roles.
CREATE ROLE qe_u_producer;
GRANT USAGE ON SCHEMA queue_engine TO qe_u_producer;
GRANT EXECUTE ON FUNCTION
	queue_engine.enqueue(text, jsonb, text, int, timestamptz, interval, interval, int, text, interval, text[], bigint),
	queue_engine.enqueue_batch(text, jsonb[], text, int, timestamptz, interval, interval, int, text[], bigint)
  TO qe_u_producer;
CREATE ROLE qe_u_worker;
GRANT USAGE ON SCHEMA queue_engine TO qe_u_worker;
GRANT EXECUTE ON FUNCTION
	queue_engine.dequeue(text[], int, interval, text),
	queue_engine.complete(bigint, jsonb, int)
  TO qe_u_worker;
CREATE ROLE qe_u_monitor;
GRANT USAGE ON SCHEMA queue_engine TO qe_u_monitor;
GRANT SELECT ON queue_engine.queue_stats TO qe_u_monitor;

-- (to 0.2.0 through 0.1.1, which brought the tenant access; the 0.2.0
-- library does not run on a 0.1.x schema)
ALTER EXTENSION queue_engine UPDATE;

\ir as_role.psql

-- 1-4
SELECT is((SELECT string_agg(format('%s %s %s', role, tenant_id, access), ', ' ORDER BY role::text, access)
             FROM queue_engine.tenant_access),
          'qe_u_monitor 0 reader, qe_u_producer 0 producer, qe_u_worker 0 worker',
          'each old role got the matching access on every tenant, and nobody else any');
SELECT is(pg_temp.as_role('qe_u_producer', $$SELECT queue_engine.enqueue('up_q', '{}') > 0$$),
          'true', 'old producer role still enqueues into any tenant');
SELECT is(pg_temp.as_role('qe_u_worker', $$SELECT count(*) FROM queue_engine.dequeue(ARRAY['up_q'])$$),
          '1', 'old worker role still dequeues from any tenant');
SELECT is(pg_temp.as_role('qe_u_monitor', $$SELECT string_agg(queue, ',') FROM queue_engine.queue_stats$$),
          'up_q', 'old monitor role still reads queue_stats');
-- 5-7: the update added no privilege beyond what the view needs
SELECT ok(NOT has_function_privilege('qe_u_producer', 'queue_engine.get_run(bigint)', 'EXECUTE'),
          'the update widened no role''s functions (producer has no get_run)');
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'queue_engine'), '0.2.0', 'updated (through 0.1.1) to 0.2.0');
SELECT is(pg_temp.as_role('qe_u_producer', $$SELECT queue_engine.grant_tenant('qe_u_producer', 'up_t', 'admin')$$),
          '42501: permission denied for function grant_tenant', 'old roles cannot grant');

SELECT * FROM finish();
ROLLBACK;
