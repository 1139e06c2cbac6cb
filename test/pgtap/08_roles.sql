-- 08_roles.sql: tenant-scoped roles (README "Roles and grants"): each kind of
-- scoped role allowed on its tenant and refused, or shown nothing, on another;
-- dequeue(NULL) serving only its tenants; queue_stats rows; membership through
-- a group role; revokes taking effect in the same session; the owner and roles
-- with its privileges unaffected; grant/revoke bad input.
BEGIN;
SELECT plan(91);

\ir as_role.psql

SELECT queue_engine.create_queue('qa1', tenant => 'ta');
SELECT queue_engine.create_queue('qa2', tenant => 'ta');
SELECT queue_engine.create_queue('qb', tenant => 'tb');
SELECT queue_engine.enqueue('qa1', '{"t": "a"}') AS ra \gset
SELECT queue_engine.enqueue('qb', '{"t": "b"}', idempotency_key => 'k1') AS rb \gset

CREATE ROLE qe_r_read;
CREATE ROLE qe_r_prod;
CREATE ROLE qe_r_work;
CREATE ROLE qe_r_admin;
CREATE ROLE qe_r_mon;
CREATE ROLE qe_r_group;
CREATE ROLE qe_r_member IN ROLE qe_r_group;
CREATE ROLE qe_r_noinherit NOINHERIT IN ROLE qe_r_group;
CREATE ROLE qe_r_ownerish IN ROLE postgres;
SELECT queue_engine.grant_tenant('qe_r_read', 'ta', 'reader');
SELECT queue_engine.grant_tenant('qe_r_prod', 'ta', 'producer');
SELECT queue_engine.grant_tenant('qe_r_work', 'ta', 'worker');
SELECT queue_engine.grant_tenant('qe_r_admin', 'ta', 'admin');
SELECT queue_engine.grant_tenant('qe_r_mon', '*', 'reader');
SELECT queue_engine.grant_tenant('qe_r_group', 'tb', 'worker');

-- 1-2: the table and what grant_tenant recorded
SELECT is((SELECT format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = 'queue_engine.tenant_access'::regclass AND attname = 'role'),
          'regrole', 'tenant_access.role is a regrole');
SELECT is((SELECT count(*)::int FROM pg_extension e, unnest(e.extconfig) c
            WHERE e.extname = 'queue_engine' AND c = 'queue_engine.tenant_access'::regclass),
          1, 'tenant_access is dumped by pg_dump (pg_extension_config_dump)');

-- 3-12: producer
SELECT isnt(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.enqueue('qa1', '{"by": "prod"}')$$),
            NULL, 'producer: enqueue into its tenant');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.enqueue('qa1', '{"by": "prod"}')$$) ~ '^[0-9]+$',
          true, 'producer: enqueue into its tenant returns a run id');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.enqueue('qb', '{}')$$),
          '42501: role "qe_r_prod" may not enqueue into queue "qb"', 'producer: enqueue into another tenant is refused');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT count(*) FROM queue_engine.enqueue_batch('qb', ARRAY['{}'::jsonb])$$),
          '42501: role "qe_r_prod" may not enqueue into queue "qb"', 'producer: enqueue_batch into another tenant is refused');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.enqueue('qb', '{}', idempotency_key => 'k1')$$),
          '42501: role "qe_r_prod" may not enqueue into queue "qb"', 'producer: cannot learn another tenant''s idempotency key');
SELECT isnt(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.enqueue('qa1', '{}', idempotency_key => 'k1')$$),
            :'rb', 'producer: the same key in its own tenant is its own run');
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'qb')),
          1, 'refused enqueues changed nothing');
SELECT is(pg_temp.as_role('qe_r_prod', format('SELECT queue_engine.cancel(%s)', :rb)),
          format('P0002: run %s does not exist', :rb), 'producer: cancel of another tenant''s run: no such run');
SELECT is(pg_temp.as_role('qe_r_prod', format('SELECT (queue_engine.get_run(%s)).status', :rb)),
          format('P0002: run %s does not exist', :rb), 'producer: get_run of another tenant''s run: no such run');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.dequeue()$$),
          '42501: permission denied for function dequeue', 'producer: no dequeue');
SELECT is(pg_temp.as_role('qe_r_prod', format($$SELECT queue_engine.enqueue('qa1', '{}', parent_run_id => %s)$$, :rb)),
          format('P0002: parent run %s does not exist', :rb), 'producer: another tenant''s run cannot be a parent (nor probed as one)');

-- 13-15: producer reads its own, cancels its own
SELECT is(pg_temp.as_role('qe_r_prod', format('SELECT (queue_engine.get_run(%s)).status', :ra)),
          'queued', 'producer: get_run of its tenant''s run');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT string_agg(queue, ',' ORDER BY queue) FROM queue_engine.queue_stats$$),
          'qa1,qa2', 'producer: queue_stats shows its tenant''s queues only');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.cancel(queue_engine.enqueue('qa2', '{}'))::text$$),
          'true', 'producer: cancel of its tenant''s run');

-- The owner starts rb (tenant tb) and ra (tenant ta).
SELECT count(*) FROM queue_engine.dequeue(ARRAY['qb']);
SELECT queue_engine.pause_queue('qa2');

-- 16-27: worker
SELECT is(pg_temp.as_role('qe_r_work', $$SELECT count(*) FROM queue_engine.dequeue(ARRAY['qb'])$$),
          '42501: role "qe_r_work" may not dequeue from queue "qb"', 'worker: dequeue naming another tenant''s queue is refused');
SELECT is(pg_temp.as_role('qe_r_work', $$SELECT count(*) FROM queue_engine.dequeue(ARRAY['qa1', 'qb'])$$),
          '42501: role "qe_r_work" may not dequeue from queue "qb"', 'worker: dequeue naming several queues, one of another tenant: refused');
SELECT queue_engine.enqueue('qb', '{"t": "b2"}') AS rb2 \gset
SELECT is(pg_temp.as_role('qe_r_work', $$SELECT string_agg(DISTINCT tenant, ',') FROM queue_engine.dequeue(NULL, 100)$$),
          'ta', 'worker: dequeue(NULL) serves its tenant only');
SELECT is((SELECT status::text FROM queue_engine.runs WHERE run_id = :rb2), 'queued',
          'worker: another tenant''s queued run was left alone');
SELECT is(pg_temp.as_role('qe_r_work', format('SELECT queue_engine.complete(%s)::text', :rb)),
          'false', 'worker: complete of another tenant''s run: false');
SELECT is(pg_temp.as_role('qe_r_work', format('SELECT coalesce(queue_engine.heartbeat(%s)::text, ''null'')', :rb)),
          'null', 'worker: heartbeat of another tenant''s run: NULL');
SELECT is(pg_temp.as_role('qe_r_work', format('SELECT coalesce(queue_engine.fail(%s, ''{}'')::text, ''null'')', :rb)),
          'null', 'worker: fail of another tenant''s run: NULL');
SELECT is(pg_temp.as_role('qe_r_work', format('SELECT queue_engine.complete_batch(ARRAY[%s, %s])::text', :rb, :ra)),
          '1', 'worker: complete_batch counts (and completes) its own runs only');
SELECT is((SELECT status::text FROM queue_engine.runs WHERE run_id = :rb), 'executing',
          'another tenant''s run is still executing');
SELECT is((SELECT status::text FROM queue_engine.runs WHERE run_id = :ra), 'completed',
          'its own run was completed');
SELECT is(pg_temp.as_role('qe_r_work', format('SELECT queue_engine.complete(%s)::text', 999999999)),
          'P0002: run 999999999 does not exist', 'worker: an unknown run is still unknown');
SELECT is(pg_temp.as_role('qe_r_work', $$SELECT queue_engine.enqueue('qa1', '{}')$$),
          '42501: permission denied for function enqueue', 'worker: no enqueue');

-- 28-41: admin
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.create_queue('qa3', tenant => 'ta')$$),
          'ok', 'admin: create_queue in its tenant');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.create_queue('qb2', tenant => 'tb')$$),
          '42501: role "qe_r_admin" may not administer tenant "tb"', 'admin: create_queue in another tenant is refused');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.create_queue('qc', tenant => 'tnew')$$),
          '42501: role "qe_r_admin" may not administer tenant "tnew"', 'admin: creating a tenant takes admin on *');
SELECT is((SELECT count(*)::int FROM queue_engine.tenants WHERE tenant = 'tnew'), 0, 'the refused create made no tenant');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.pause_queue('qb')$$),
          '42501: role "qe_r_admin" may not administer queue "qb"', 'admin: pause_queue of another tenant''s queue is refused');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.resume_queue('qb')$$),
          '42501: role "qe_r_admin" may not administer queue "qb"', 'admin: resume_queue refused');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.alter_queue('qb', concurrency_limit => 1)$$),
          '42501: role "qe_r_admin" may not administer queue "qb"', 'admin: alter_queue refused');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.drop_queue('qb', force => true)$$),
          '42501: role "qe_r_admin" may not administer queue "qb"', 'admin: drop_queue refused');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.set_tenant_limit('tb', 5)$$),
          '42501: role "qe_r_admin" may not administer tenant "tb"', 'admin: set_tenant_limit of another tenant refused');
SELECT is((SELECT row(q.paused, q.concurrency_limit, q.dropped_at IS NULL, t.concurrency_limit)::text
             FROM queue_engine.queues q JOIN queue_engine.tenants t USING (tenant_id) WHERE q.queue = 'qb'),
          '(f,,t,)', 'refused admin calls changed nothing');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.resume_queue('qa2')$$),
          'ok', 'admin: resume_queue in its tenant');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.alter_queue('qa2', concurrency_limit => 3)$$),
          'ok', 'admin: alter_queue in its tenant');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.set_tenant_limit('ta', 10)$$),
          'ok', 'admin: set_tenant_limit of its tenant');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.drop_queue('qa3')$$),
          'ok', 'admin: drop_queue in its tenant');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.enqueue('qa2', '{}') > 0$$),
          'true', 'admin: enqueue in its tenant');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT count(*) FROM queue_engine.dequeue(ARRAY['qa2'])$$),
          '1', 'admin: dequeue in its tenant');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.grant_tenant('qe_r_admin', 'tb', 'admin')$$),
          '42501: permission denied for function grant_tenant', 'admin: no grant_tenant');
GRANT EXECUTE ON FUNCTION queue_engine.grant_tenant(name, text, text), queue_engine.revoke_tenant(name, text, text),
      queue_engine.check_consistency(boolean), queue_engine.promote_delayed(int) TO qe_r_admin;
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.grant_tenant('qe_r_admin', 'tb', 'admin')$$),
          '42501: role "qe_r_admin" may not call grant_tenant()', 'grant_tenant refuses a scoped role even with EXECUTE');

-- 42-45: unscoped-only functions refuse scoped roles even with EXECUTE
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.revoke_tenant('qe_r_read', 'ta')$$),
          '42501: role "qe_r_admin" may not call revoke_tenant()', 'revoke_tenant refuses a scoped role');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT count(*) FROM queue_engine.check_consistency(false)$$),
          '42501: role "qe_r_admin" may not call check_consistency()', 'check_consistency refuses a scoped role');
SELECT is(pg_temp.as_role('qe_r_admin', $$SELECT queue_engine.promote_delayed()$$),
          '42501: role "qe_r_admin" may not call promote_delayed()', 'task functions refuse a scoped role');
SELECT is((SELECT count(*)::int FROM queue_engine.tenant_access WHERE role = 'qe_r_admin'::regrole), 1,
          'the refused grant changed nothing');

-- 46-49: reader
SELECT is(pg_temp.as_role('qe_r_read', format('SELECT (queue_engine.get_run(%s)).status', :ra)),
          'completed', 'reader: get_run of its tenant''s run');
SELECT is(pg_temp.as_role('qe_r_read', format('SELECT (queue_engine.get_run(%s)).status', :rb)),
          format('P0002: run %s does not exist', :rb), 'reader: get_run of another tenant''s run: no such run');
SELECT is(pg_temp.as_role('qe_r_read', $$SELECT string_agg(queue, ',' ORDER BY queue) FROM queue_engine.queue_stats$$),
          'qa1,qa2', 'reader: queue_stats shows its tenant''s queues');
SELECT is(pg_temp.as_role('qe_r_read', $$SELECT queue_engine.enqueue('qa1', '{}')$$),
          '42501: permission denied for function enqueue', 'reader: no enqueue');

-- 50: a function in the caller's WHERE clause never sees other tenants' rows (security barrier)
CREATE TABLE pg_temp.seen (queue text);
GRANT INSERT ON pg_temp.seen TO qe_r_read;
CREATE FUNCTION pg_temp.peek(q text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN
	INSERT INTO pg_temp.seen VALUES (q);
	RETURN true;
END;
$$;
SELECT pg_temp.as_role('qe_r_read', $$SELECT count(*) FROM queue_engine.queue_stats WHERE pg_temp.peek(queue)$$);
SELECT is((SELECT string_agg(DISTINCT queue, ',' ORDER BY queue) FROM pg_temp.seen), 'qa1,qa2',
          'queue_stats is a security barrier: the caller''s function saw its own rows only');

-- 51-55: monitor (reader on every tenant), as README recommends
SELECT is(pg_temp.as_role('qe_r_mon', $$SELECT string_agg(queue, ',' ORDER BY queue) FROM queue_engine.queue_stats$$),
          'qa1,qa2,qb', 'monitor: queue_stats shows every queue');
SELECT is(pg_temp.as_role('qe_r_mon', $$SELECT count(*)::text FROM queue_engine.consistency_log$$),
          '0', 'monitor: reads consistency_log (README Monitoring)');
SELECT is(pg_temp.as_role('qe_r_mon', $$SELECT * FROM queue_engine.queue_stats ORDER BY queued DESC LIMIT 1$$) !~ '^42501',
          true, 'monitor: README''s queue_stats query');
SELECT is(pg_temp.as_role('qe_r_mon', format('SELECT (queue_engine.get_run(%s)).status', :rb)),
          'executing', 'monitor: get_run of any tenant''s run');
SELECT is(pg_temp.as_role('qe_r_mon', $$SELECT count(*) FROM queue_engine.runs$$),
          '42501: permission denied for view runs', 'monitor: the runs view stays the owner''s');

-- 56-60: through a group role
SELECT is(pg_temp.as_role('qe_r_member', $$SELECT string_agg(queue, ',') FROM queue_engine.dequeue(ARRAY['qb'])$$),
          'qb', 'member of a worker group: dequeue from the group''s tenant');
SELECT is(pg_temp.as_role('qe_r_member', $$SELECT count(*) FROM queue_engine.dequeue(ARRAY['qa1'])$$),
          '42501: role "qe_r_member" may not dequeue from queue "qa1"', 'member of a worker group: not from other tenants');
GRANT EXECUTE ON FUNCTION queue_engine.dequeue(text[], int, interval, text, interval) TO qe_r_noinherit;
GRANT USAGE ON SCHEMA queue_engine TO qe_r_noinherit;
SELECT is(pg_temp.as_role('qe_r_noinherit', $$SELECT count(*) FROM queue_engine.dequeue(ARRAY['qb'])$$),
          '42501: role "qe_r_noinherit" may not dequeue from queue "qb"', 'a NOINHERIT member does not get the group''s tenants');
SELECT queue_engine.enqueue('qb', '{}');
REVOKE qe_r_group FROM qe_r_member;
GRANT EXECUTE ON FUNCTION queue_engine.dequeue(text[], int, interval, text, interval) TO qe_r_member;
GRANT USAGE ON SCHEMA queue_engine TO qe_r_member;
SELECT is(pg_temp.as_role('qe_r_member', $$SELECT count(*) FROM queue_engine.dequeue(ARRAY['qb'])$$),
          '42501: role "qe_r_member" may not dequeue from queue "qb"', 'leaving the group takes effect at once');
SELECT is(pg_temp.as_role('qe_r_member', $$SELECT count(*)::text FROM queue_engine.dequeue()$$),
          '0', 'no grants: dequeue(NULL) serves no tenant');

-- 61-68: revokes take effect in the same session
SELECT queue_engine.grant_tenant('qe_r_prod', 'tb', 'producer');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.enqueue('qb', '{}') > 0$$),
          'true', 'a new grant takes effect at once');
SELECT queue_engine.revoke_tenant('qe_r_prod', 'tb', 'producer');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT queue_engine.enqueue('qb', '{}')$$),
          '42501: role "qe_r_prod" may not enqueue into queue "qb"', 'a revoke takes effect at once');
SELECT ok(has_function_privilege('qe_r_prod', 'queue_engine.enqueue(text, jsonb, text, int, timestamptz, interval, interval, int, text, interval, text[], bigint, jsonb)', 'EXECUTE'),
          'revoke keeps EXECUTE that a remaining grant needs');
SELECT queue_engine.grant_tenant('qe_r_prod', 'tb', 'reader');
SELECT queue_engine.revoke_tenant('qe_r_prod', 'ta');
SELECT ok(NOT has_function_privilege('qe_r_prod', 'queue_engine.enqueue(text, jsonb, text, int, timestamptz, interval, interval, int, text, interval, text[], bigint, jsonb)', 'EXECUTE'),
          'revoke takes back EXECUTE that no remaining grant needs');
SELECT ok(has_function_privilege('qe_r_prod', 'queue_engine.get_run(bigint)', 'EXECUTE')
          AND has_table_privilege('qe_r_prod', 'queue_engine.queue_stats', 'SELECT'),
          'revoke keeps what the remaining reader grant needs');
SELECT is(pg_temp.as_role('qe_r_prod', $$SELECT string_agg(queue, ',' ORDER BY queue) FROM queue_engine.queue_stats$$),
          'qb', 'queue_stats follows the grants');
SELECT queue_engine.revoke_tenant('qe_r_prod', 'tb', NULL);
SELECT ok(NOT has_schema_privilege('qe_r_prod', 'queue_engine', 'USAGE')
          AND NOT has_function_privilege('qe_r_prod', 'queue_engine.get_run(bigint)', 'EXECUTE')
          AND NOT has_table_privilege('qe_r_prod', 'queue_engine.queue_stats', 'SELECT'),
          'the last revoke takes back schema usage, get_run and queue_stats');
SELECT is((SELECT count(*)::int FROM queue_engine.tenant_access WHERE role = 'qe_r_prod'::regrole), 0,
          'the role has no grants left');

-- 69-72: the owner, and roles with its privileges, are unscoped
SELECT isnt(queue_engine.enqueue('qb', '{}'), NULL, 'owner: enqueue into any tenant');
SELECT is((SELECT count(*)::int FROM queue_engine.queue_stats), 3, 'owner: queue_stats shows every queue');
SELECT is(pg_temp.as_role('qe_r_ownerish', $$SELECT queue_engine.enqueue('qb', '{}') > 0$$),
          'true', 'a member of the owner role is unscoped');
SELECT is(pg_temp.as_role('qe_r_ownerish', $$SELECT count(*)::text FROM queue_engine.queue_stats$$),
          '3', 'a member of the owner role sees every queue');

-- 77-90: grant/revoke bad input
SELECT throws_ok($$SELECT queue_engine.grant_tenant('qe_no_such_role', 'ta', 'reader')$$,
                 '42704', 'role "qe_no_such_role" does not exist', 'grant_tenant: unknown role (42704)');
SELECT throws_ok($$SELECT queue_engine.grant_tenant('qe_r_read', 'ta', 'superuser')$$,
                 '22023', 'unknown access "superuser"', 'grant_tenant: unknown access (22023)');
SELECT throws_ok($$SELECT queue_engine.grant_tenant(NULL, 'ta', 'reader')$$,
                 '22004', 'role must not be null', 'grant_tenant: NULL role (22004)');
SELECT throws_ok($$SELECT queue_engine.grant_tenant('qe_r_read', NULL, 'reader')$$,
                 '22004', 'tenant must not be null', 'grant_tenant: NULL tenant (22004)');
SELECT throws_ok($$SELECT queue_engine.grant_tenant('qe_r_read', 'ta', NULL)$$,
                 '22004', 'access must not be null', 'grant_tenant: NULL access (22004)');
SELECT throws_ok($$SELECT queue_engine.grant_tenant('qe_r_read', '', 'reader')$$,
                 '22004', NULL, 'grant_tenant: empty tenant name (22004, from ensure_tenant)');
SELECT throws_ok($$SELECT queue_engine.revoke_tenant('qe_no_such_role', 'ta')$$,
                 '42704', 'role "qe_no_such_role" does not exist', 'revoke_tenant: unknown role (42704)');
SELECT throws_ok($$SELECT queue_engine.revoke_tenant('qe_r_read', 'ta', 'boss')$$,
                 '22023', 'unknown access "boss"', 'revoke_tenant: unknown access (22023)');
SELECT throws_ok($$SELECT queue_engine.revoke_tenant('qe_r_read', 'tenant_never_made')$$,
                 '42704', 'tenant "tenant_never_made" does not exist', 'revoke_tenant: unknown tenant (42704)');
SELECT throws_ok($$SELECT queue_engine.revoke_tenant('qe_r_read', NULL)$$,
                 '22004', 'tenant must not be null', 'revoke_tenant: NULL tenant (22004)');
SELECT is((SELECT count(*)::int FROM queue_engine.tenant_access WHERE role = 'qe_r_read'::regrole), 1,
          'bad grant/revoke calls changed nothing');
SELECT queue_engine.grant_tenant('qe_r_read', 'tnew2', 'reader');
SELECT is((SELECT count(*)::int FROM queue_engine.tenants WHERE tenant = 'tnew2'), 1,
          'grant_tenant of an unknown tenant creates it (as set_tenant_limit does)');
SELECT queue_engine.grant_tenant('qe_r_read', 'tnew2', 'reader');
SELECT is((SELECT count(*)::int FROM queue_engine.tenant_access WHERE role = 'qe_r_read'::regrole), 2,
          'granting twice is a no-op');
SELECT throws_ok($$SELECT queue_engine.access_tenants('boss')$$,
                 '22023', 'unknown access "boss"', 'access_tenants: unknown access (22023)');

SELECT * FROM finish();
ROLLBACK;
