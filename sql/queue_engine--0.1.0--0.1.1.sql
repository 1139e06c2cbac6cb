/* queue_engine--0.1.0--0.1.1.sql: 0.1.1, hardening (issue 14).  A fresh
 * CREATE EXTENSION runs queue_engine--0.1.0.sql and then this script, so a
 * new install and an upgraded one are the same by construction. */

\echo Use "ALTER EXTENSION queue_engine UPDATE TO '0.1.1'" to load this file. \quit

---------------------------------------------------------------------------
-- Section 1: limits and cached definitions (limit races, two-phase commit,
-- reinstall).
---------------------------------------------------------------------------

-- A change to a queue or tenant (limits, pause, drop; through the API or by
-- hand) waits for the claims in flight in its tenant and keeps new ones out
-- until it commits: every claim holds the tenant's claim lock (dequeue.c),
-- this takes it exclusive.  So no run starts under an old limit after a new
-- one commits.  (The statement triggers queues_changed and tenants_changed
-- now send PostgreSQL invalidations, which also reach sessions after COMMIT
-- PREPARED and after DROP EXTENSION: no SQL change was needed for that.)
CREATE FUNCTION queue_engine.definition_change_lock()
RETURNS trigger
AS 'MODULE_PATHNAME', 'qe_definition_change_lock'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER queues_change_lock
	AFTER UPDATE ON queue_engine.queues
	FOR EACH ROW EXECUTE FUNCTION queue_engine.definition_change_lock();
CREATE TRIGGER tenants_change_lock
	AFTER UPDATE ON queue_engine.tenants
	FOR EACH ROW EXECUTE FUNCTION queue_engine.definition_change_lock();


---------------------------------------------------------------------------
-- Section 2: dump and restore (sequences, ON CONFLICT), schema ownership.
---------------------------------------------------------------------------

-- pg_dump dumps an extension's objects as one CREATE EXTENSION and copies
-- only the data of the tables and sequences marked here.  0.1.0 marked the
-- tables and runs_run_id_seq, but not the identity sequences that number
-- tenants and queues: after a restore they started again at 1, so new
-- tenants and queues collided with restored ids.  PostgreSQL 15 accepts an
-- identity sequence here (it is a member of the extension like any other
-- sequence) and pg_dump then restores it with setval.  The tenant cursor of
-- dequeue(NULL) is kept too, so turns go on where they stopped.
SELECT pg_catalog.pg_extension_config_dump('queue_engine.tenants_tenant_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queues_queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.dequeue_tenant_cursor', '');

-- The default tenant: 0.1.0 left its row out of the dump (CREATE EXTENSION
-- inserts it, so restoring it too would collide), which lost its
-- concurrency limit.  Now every tenant row is dumped, and a restore's copy
-- of the default row replaces the one CREATE EXTENSION made: same id (both
-- are the first tenant), same name, no queue pointing at it yet.  Outside a
-- restore nothing inserts a second default row with the first one's id (the
-- id is generated always; only COPY or OVERRIDING SYSTEM VALUE can give it).
CREATE FUNCTION queue_engine.restore_default_tenant()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM queue_engine.tenants t
	 WHERE t.tenant = NEW.tenant AND t.tenant_id = NEW.tenant_id;
	RETURN NEW;
END;
$$;
CREATE TRIGGER tenants_restore_default
	BEFORE INSERT ON queue_engine.tenants
	FOR EACH ROW WHEN (NEW.tenant = 'default')
	EXECUTE FUNCTION queue_engine.restore_default_tenant();
SELECT pg_catalog.pg_extension_config_dump('queue_engine.tenants', '');

---------------------------------------------------------------------------
-- Section 3: caps and input checks.
---------------------------------------------------------------------------

-- Queue and tenant names are at most 128 bytes (README "Limits"; the C
-- side's QE_MAX_NAME_BYTES).  Longer ones are rejected where they come in,
-- and where they are looked up, with the message the C functions give.
CREATE FUNCTION queue_engine.check_name_length(what text, value text, hint text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF octet_length(value) > 128 THEN
		RAISE EXCEPTION '% "%..." is too long: % bytes', what, left(value, 20), octet_length(value)
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = 'The limit is 128 bytes.',
				  HINT = hint;
	END IF;
END;
$$;

-- ensure_tenant: a capped name; "*" is reserved (it means every tenant in
-- tenant grants); ON CONFLICT names its target, so that a clash of tenant
-- ids (an identity sequence behind its rows, as after a restore) is an
-- error saying so instead of a NULL id.
CREATE OR REPLACE FUNCTION queue_engine.ensure_tenant(tenant text)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	id int;
	constraint_name text;
BEGIN
	IF tenant IS NULL OR tenant = '' THEN
		RAISE EXCEPTION 'tenant must not be null or empty'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass a tenant name, or omit it to use ''default''.';
	END IF;
	PERFORM queue_engine.check_name_length('tenant name', tenant, 'Pass a shorter tenant name.');
	SELECT t.tenant_id INTO id FROM queue_engine.tenants t WHERE t.tenant = ensure_tenant.tenant;
	IF id IS NULL THEN
		IF tenant = '*' THEN
			RAISE EXCEPTION 'tenant name "*" is reserved'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'In tenant grants "*" stands for every tenant; pick another tenant name.';
		END IF;
		BEGIN
			INSERT INTO queue_engine.tenants (tenant) VALUES (ensure_tenant.tenant)
			ON CONFLICT (tenant) DO NOTHING;
		EXCEPTION WHEN unique_violation THEN
			GET STACKED DIAGNOSTICS constraint_name = CONSTRAINT_NAME;
			IF constraint_name IS DISTINCT FROM 'tenants_pkey' THEN
				RAISE;
			END IF;
			RAISE EXCEPTION 'cannot create tenant "%": its new tenant_id is already taken', tenant
				USING ERRCODE = 'unique_violation',
					  DETAIL = 'The identity sequence of queue_engine.tenants is behind the ids in the table, as after a restore that did not carry it.',
					  HINT = 'Move it past them: SELECT setval(pg_get_serial_sequence(''queue_engine.tenants'', ''tenant_id''), max(tenant_id)) FROM queue_engine.tenants;';
		END;
		SELECT t.tenant_id INTO id FROM queue_engine.tenants t WHERE t.tenant = ensure_tenant.tenant;
		IF id IS NULL THEN
			RAISE EXCEPTION 'cannot create tenant "%": no row was inserted and none is visible', tenant
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = 'A trigger or rule on queue_engine.tenants may have suppressed the insert, or another transaction created the tenant after this one''s snapshot.',
					  HINT = 'Check queue_engine.tenants for triggers and rules, or retry the transaction.';
		END IF;
	END IF;
	RETURN id;
END;
$$;

-- live_queue (every lookup by name: alter, pause, resume, drop): a name
-- over the limit is said to be one, rather than not to exist.
CREATE OR REPLACE FUNCTION queue_engine.live_queue(queue text, lock boolean DEFAULT false)
RETURNS queue_engine.queues LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	q queue_engine.queues;
BEGIN
	IF queue IS NULL THEN
		RAISE EXCEPTION 'queue must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the name of a queue made with create_queue().';
	END IF;
	PERFORM queue_engine.check_name_length('queue name', queue,
		'Pass the name of a queue made with create_queue().');
	IF lock THEN
		SELECT * INTO q FROM queue_engine.queues x
		 WHERE x.queue = live_queue.queue AND x.dropped_at IS NULL FOR UPDATE;
	ELSE
		SELECT * INTO q FROM queue_engine.queues x
		 WHERE x.queue = live_queue.queue AND x.dropped_at IS NULL;
	END IF;
	IF q.queue_id IS NULL THEN
		RAISE EXCEPTION 'queue "%" does not exist', queue
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with queue_engine.create_queue().';
	END IF;
	RETURN q;
END;
$$;

---------------------------------------------------------------------------
-- Section 4: tenant-scoped roles.
---------------------------------------------------------------------------

-- Who may act on which tenants (README "Roles and grants").  A role is
-- tenant-scoped unless it is a superuser or has the privileges of the
-- extension owner; a scoped role may act on the tenants granted here to
-- it, or to a role whose privileges it has.  tenant_id 0 is every tenant
-- ("*").  regrole, so that pg_dump and restore map role names.
CREATE TABLE queue_engine.tenant_access (
	role				regrole NOT NULL,
	tenant_id			int NOT NULL CHECK (tenant_id >= 0),
	access				text NOT NULL
		CHECK (access IN ('reader', 'producer', 'worker', 'admin')),
	PRIMARY KEY (role, tenant_id, access)
);
SELECT pg_catalog.pg_extension_config_dump('queue_engine.tenant_access', '');

-- Internal: any change to tenant_access (by grant_tenant or by hand) voids
-- every backend's cache of the tenants its role may act on (src/access.c).
CREATE FUNCTION queue_engine.tenant_access_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'qe_tenant_access_changed'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER tenant_access_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON queue_engine.tenant_access
	FOR EACH STATEMENT EXECUTE FUNCTION queue_engine.tenant_access_changed();

-- The tenant ids the calling role may act on with an access (one of
-- reader, producer, worker, admin, or an access that includes it); NULL
-- when it may act on every tenant.  The queue_stats view calls it, so
-- readers get EXECUTE on it.
CREATE FUNCTION queue_engine.access_tenants(access text)
RETURNS int[]
AS 'MODULE_PATHNAME', 'qe_access_tenants_sql'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Internal: 42501 naming what unless the calling role has the access on
-- the tenant (tenant_id NULL: a new tenant, which takes the access on "*").
CREATE FUNCTION queue_engine.require_access(tenant_id int, access text, what text)
RETURNS void
AS 'MODULE_PATHNAME', 'qe_require_access_sql'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

-- Internal: 42501 for a tenant-scoped caller.
CREATE FUNCTION queue_engine.require_unscoped(what text)
RETURNS void
AS 'MODULE_PATHNAME', 'qe_require_unscoped_sql'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

-- Internal: the privileges an access needs, as GRANT targets.  Every
-- access reads (get_run, queue_stats); admin includes producer and worker.
CREATE FUNCTION queue_engine.access_privileges(access text, every_tenant boolean)
RETURNS text[] LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT ARRAY['SCHEMA queue_engine',
			 'TABLE queue_engine.queue_stats',
			 'FUNCTION queue_engine.get_run(bigint)',
			 'FUNCTION queue_engine.access_tenants(text)']
	|| CASE WHEN every_tenant THEN ARRAY['TABLE queue_engine.consistency_log'] ELSE '{}' END
	|| CASE WHEN access IN ('producer', 'admin') THEN ARRAY[
			 'FUNCTION queue_engine.enqueue(text, jsonb, text, int, timestamptz, interval, interval, int, text, interval, text[], bigint)',
			 'FUNCTION queue_engine.enqueue_batch(text, jsonb[], text, int, timestamptz, interval, interval, int, text[], bigint)',
			 'FUNCTION queue_engine.cancel(bigint, text)'] ELSE '{}' END
	|| CASE WHEN access IN ('worker', 'admin') THEN ARRAY[
			 'FUNCTION queue_engine.dequeue(text[], int, interval, text)',
			 'FUNCTION queue_engine.heartbeat(bigint, int, interval)',
			 'FUNCTION queue_engine.complete(bigint, jsonb, int)',
			 'FUNCTION queue_engine.complete_batch(bigint[], jsonb[], int[])',
			 'FUNCTION queue_engine.fail(bigint, jsonb, int, interval, boolean)'] ELSE '{}' END
	|| CASE WHEN access = 'admin' THEN ARRAY[
			 'FUNCTION queue_engine.create_queue(text, text, int, int, int, interval, interval, interval, interval)',
			 'FUNCTION queue_engine.alter_queue(text, int, int, int, interval, interval, interval, interval, text[])',
			 'FUNCTION queue_engine.pause_queue(text)',
			 'FUNCTION queue_engine.resume_queue(text)',
			 'FUNCTION queue_engine.drop_queue(text, boolean)',
			 'FUNCTION queue_engine.set_tenant_limit(text, int)'] ELSE '{}' END;
$$;

-- Internal: the GRANT statement for one privilege target of access_privileges.
CREATE FUNCTION queue_engine.privilege_sql(target text, grant_it boolean, role name)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT format(CASE WHEN grant_it THEN 'GRANT %s ON %s TO %I' ELSE 'REVOKE %s ON %s FROM %I' END,
			  CASE split_part(target, ' ', 1) WHEN 'SCHEMA' THEN 'USAGE'
											  WHEN 'TABLE' THEN 'SELECT' ELSE 'EXECUTE' END,
			  target, role);
$$;

-- Internal: checks shared by grant_tenant and revoke_tenant; the role's oid.
CREATE FUNCTION queue_engine.check_grant_args(role name, tenant text, access text, access_required boolean)
RETURNS regrole LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result regrole;
BEGIN
	IF role IS NULL OR tenant IS NULL OR (access IS NULL AND access_required) THEN
		RAISE EXCEPTION '% must not be null',
			CASE WHEN role IS NULL THEN 'role' WHEN tenant IS NULL THEN 'tenant' ELSE 'access' END
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass a role name, a tenant name (or ''*'' for every tenant) and one of reader, producer, worker, admin.';
	END IF;
	IF access IS NOT NULL AND access NOT IN ('reader', 'producer', 'worker', 'admin') THEN
		RAISE EXCEPTION 'unknown access "%"', access
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass one of reader, producer, worker, admin.';
	END IF;
	SELECT r.oid::regrole INTO result FROM pg_roles r WHERE r.rolname = check_grant_args.role;
	IF result IS NULL THEN
		RAISE EXCEPTION 'role "%" does not exist', role
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with CREATE ROLE first.';
	END IF;
	RETURN result;
END;
$$;

CREATE FUNCTION queue_engine.grant_tenant(role name, tenant text, access text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	rid regrole;
	tid int;
	target text;
BEGIN
	PERFORM queue_engine.require_unscoped('grant_tenant()');
	rid := queue_engine.check_grant_args(role, tenant, access, true);
	-- A tenant granted before its first queue is made, as set_tenant_limit does.
	tid := CASE WHEN tenant = '*' THEN 0 ELSE queue_engine.ensure_tenant(tenant) END;
	INSERT INTO queue_engine.tenant_access (role, tenant_id, access)
	VALUES (rid, tid, access)
	ON CONFLICT DO NOTHING;
	FOREACH target IN ARRAY queue_engine.access_privileges(access, tid = 0) LOOP
		EXECUTE queue_engine.privilege_sql(target, true, role);
	END LOOP;
END;
$$;

CREATE FUNCTION queue_engine.revoke_tenant(role name, tenant text, access text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	rid regrole;
	tid int;
	needed text[] := '{}';
	target text;
	r record;
BEGIN
	PERFORM queue_engine.require_unscoped('revoke_tenant()');
	rid := queue_engine.check_grant_args(role, tenant, access, false);
	IF tenant = '*' THEN
		tid := 0;
	ELSE
		SELECT t.tenant_id INTO tid FROM queue_engine.tenants t WHERE t.tenant = revoke_tenant.tenant;
		IF tid IS NULL THEN
			RAISE EXCEPTION 'tenant "%" does not exist', tenant
				USING ERRCODE = 'undefined_object',
					  HINT = 'Pass the name of a tenant granted with grant_tenant(), or ''*'' for every tenant.';
		END IF;
	END IF;
	DELETE FROM queue_engine.tenant_access a
	 WHERE a.role = rid AND a.tenant_id = tid AND (access IS NULL OR a.access = access);
	-- Take back what no remaining grant of the role needs.
	FOR r IN SELECT a.access, a.tenant_id FROM queue_engine.tenant_access a WHERE a.role = rid LOOP
		needed := needed || queue_engine.access_privileges(r.access, r.tenant_id = 0);
	END LOOP;
	FOREACH target IN ARRAY queue_engine.access_privileges('admin', true) LOOP
		IF NOT target = ANY (needed) THEN
			EXECUTE queue_engine.privilege_sql(target, false, role);
		END IF;
	END LOOP;
END;
$$;

-- Reading: only the runs and queues of the caller's tenants.
CREATE OR REPLACE FUNCTION queue_engine.get_run(run_id bigint)
RETURNS queue_engine.run_info
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result queue_engine.run_info;
	allowed int[];
BEGIN
	IF get_run.run_id IS NULL THEN
		RAISE EXCEPTION 'run_id must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the id that enqueue() returned.';
	END IF;
	-- Another tenant's run is, to a tenant-scoped role, no run at all.
	allowed := queue_engine.access_tenants('reader');
	SELECT r.run_id, q.queue, t.tenant, r.status, r.attempt, r.max_attempts,
		   r.priority, r.concurrency_key, r.payload, r.created_at, r.run_at,
		   r.started_at, r.finished_at, r.expires_at, r.lease_expires_at,
		   r.last_error, r.output, r.tags, r.parent_run_id, r.idempotency_key
	  INTO result
	  FROM queue_engine.runs r
	  JOIN queue_engine.queues q ON q.queue_id = r.queue_id
	  JOIN queue_engine.tenants t ON t.tenant_id = r.tenant_id
	 WHERE r.run_id = get_run.run_id
	   AND (allowed IS NULL OR r.tenant_id = ANY (allowed));
	IF NOT FOUND THEN
		RAISE EXCEPTION 'run % does not exist', get_run.run_id
			USING ERRCODE = 'no_data_found',
				  HINT = 'The id may be wrong, or retention may have removed the run.';
	END IF;
	RETURN result;
END;
$$;

-- Administration: a tenant-scoped role administers its admin tenants only.
-- (create_queue and alter_queue also carry Section 3's input checks: the
-- queue name's length, a one-dimensional clear.)
CREATE OR REPLACE FUNCTION queue_engine.create_queue(
	queue text,
	tenant text DEFAULT 'default',
	concurrency_limit int DEFAULT NULL,
	key_concurrency_limit int DEFAULT NULL,
	max_attempts int DEFAULT 3,
	lease interval DEFAULT '5 minutes',
	retry_backoff interval DEFAULT '1 second',
	retry_backoff_max interval DEFAULT '1 hour',
	ttl interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	tid int;
	old queue_engine.queues;
	new_id int;
	diffs text[] := '{}';
BEGIN
	IF queue IS NULL OR queue = '' THEN
		RAISE EXCEPTION 'queue must not be null or empty'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass a queue name such as ''emails''.';
	END IF;
	PERFORM queue_engine.check_name_length('queue name', queue, 'Pass a shorter queue name.');
	IF max_attempts IS NULL THEN
		RAISE EXCEPTION 'max_attempts must not be null'
			USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit it to use 3.';
	END IF;
	IF lease IS NULL OR retry_backoff IS NULL OR retry_backoff_max IS NULL THEN
		RAISE EXCEPTION 'lease, retry_backoff and retry_backoff_max must not be null'
			USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit them to use the defaults.';
	END IF;
	PERFORM queue_engine.check_positive('concurrency_limit', concurrency_limit,
		'Pass a limit of at least 1, or omit it for no limit.');
	PERFORM queue_engine.check_positive('key_concurrency_limit', key_concurrency_limit,
		'Pass a limit of at least 1, or omit it for no limit.');
	PERFORM queue_engine.check_positive('max_attempts', max_attempts,
		'Pass at least 1 (1 means no retries).');
	PERFORM queue_engine.check_interval('lease', lease, false);
	PERFORM queue_engine.check_interval('retry_backoff', retry_backoff, true);
	PERFORM queue_engine.check_interval('retry_backoff_max', retry_backoff_max, true);
	PERFORM queue_engine.check_interval('ttl', ttl, false);
	IF retry_backoff_max < retry_backoff THEN
		RAISE EXCEPTION 'retry_backoff_max (%) is less than retry_backoff (%)', retry_backoff_max, retry_backoff
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Make retry_backoff_max at least retry_backoff.';
	END IF;

	-- A tenant-scoped role administers its admin tenants only; a new tenant
	-- takes admin on every tenant ("*").
	IF tenant IS NOT NULL THEN
		PERFORM queue_engine.require_access(
			(SELECT t.tenant_id FROM queue_engine.tenants t WHERE t.tenant = create_queue.tenant),
			'admin', format('tenant "%s"', tenant));
	END IF;
	tid := queue_engine.ensure_tenant(tenant);
	-- Serialise creators of the same name so the identical-settings check is exact.
	PERFORM pg_advisory_xact_lock(hashtext('queue_engine.create_queue'), hashtext(queue));

	SELECT * INTO old FROM queue_engine.queues q
	 WHERE q.queue = create_queue.queue AND q.dropped_at IS NULL;
	IF old.queue_id IS NOT NULL THEN
		IF old.tenant_id <> tid THEN diffs := array_append(diffs, 'tenant'); END IF;
		IF old.concurrency_limit IS DISTINCT FROM concurrency_limit THEN diffs := array_append(diffs, 'concurrency_limit'); END IF;
		IF old.key_concurrency_limit IS DISTINCT FROM key_concurrency_limit THEN diffs := array_append(diffs, 'key_concurrency_limit'); END IF;
		IF old.max_attempts <> max_attempts THEN diffs := array_append(diffs, 'max_attempts'); END IF;
		IF old.lease <> lease THEN diffs := array_append(diffs, 'lease'); END IF;
		IF old.retry_backoff <> retry_backoff THEN diffs := array_append(diffs, 'retry_backoff'); END IF;
		IF old.retry_backoff_max <> retry_backoff_max THEN diffs := array_append(diffs, 'retry_backoff_max'); END IF;
		IF old.ttl IS DISTINCT FROM ttl THEN diffs := array_append(diffs, 'ttl'); END IF;
		IF cardinality(diffs) = 0 THEN
			RETURN;
		END IF;
		RAISE EXCEPTION 'queue "%" already exists with different settings', queue
			USING ERRCODE = 'duplicate_object',
				  DETAIL = format('Differing settings: %s.', array_to_string(diffs, ', ')),
				  HINT = 'Use queue_engine.alter_queue() to change an existing queue.';
	END IF;

	INSERT INTO queue_engine.queues (queue, tenant_id, concurrency_limit, key_concurrency_limit,
									 max_attempts, lease, retry_backoff, retry_backoff_max, ttl)
	VALUES (queue, tid, concurrency_limit, key_concurrency_limit,
			max_attempts, lease, retry_backoff, retry_backoff_max, ttl)
	RETURNING queue_id INTO new_id;
	INSERT INTO queue_engine.queue_counts (queue_id) VALUES (new_id);
END;
$$;

CREATE OR REPLACE FUNCTION queue_engine.alter_queue(
	queue text,
	concurrency_limit int DEFAULT NULL,
	key_concurrency_limit int DEFAULT NULL,
	max_attempts int DEFAULT NULL,
	lease interval DEFAULT NULL,
	retry_backoff interval DEFAULT NULL,
	retry_backoff_max interval DEFAULT NULL,
	ttl interval DEFAULT NULL,
	clear text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	q queue_engine.queues;
	c text;
	settable constant text[] := ARRAY['concurrency_limit', 'key_concurrency_limit', 'max_attempts',
		'lease', 'retry_backoff', 'retry_backoff_max', 'ttl'];
BEGIN
	q := queue_engine.live_queue(queue);
	PERFORM queue_engine.require_access(q.tenant_id, 'admin', format('queue "%s"', queue));
	q := queue_engine.live_queue(queue, true);
	PERFORM queue_engine.check_positive('concurrency_limit', concurrency_limit,
		'Pass a limit of at least 1, or clear => ARRAY[''concurrency_limit''] for no limit.');
	PERFORM queue_engine.check_positive('key_concurrency_limit', key_concurrency_limit,
		'Pass a limit of at least 1, or clear => ARRAY[''key_concurrency_limit''] for no limit.');
	PERFORM queue_engine.check_positive('max_attempts', max_attempts,
		'Pass at least 1 (1 means no retries).');
	PERFORM queue_engine.check_interval('lease', lease, false);
	PERFORM queue_engine.check_interval('retry_backoff', retry_backoff, true);
	PERFORM queue_engine.check_interval('retry_backoff_max', retry_backoff_max, true);
	PERFORM queue_engine.check_interval('ttl', ttl, false);

	q.concurrency_limit := coalesce(concurrency_limit, q.concurrency_limit);
	q.key_concurrency_limit := coalesce(key_concurrency_limit, q.key_concurrency_limit);
	q.max_attempts := coalesce(max_attempts, q.max_attempts);
	q.lease := coalesce(lease, q.lease);
	q.retry_backoff := coalesce(retry_backoff, q.retry_backoff);
	q.retry_backoff_max := coalesce(retry_backoff_max, q.retry_backoff_max);
	q.ttl := coalesce(ttl, q.ttl);

	IF array_ndims(clear) > 1 THEN
		RAISE EXCEPTION 'clear must be a one-dimensional array, not %-dimensional', array_ndims(clear)
			USING ERRCODE = 'array_subscript_error',
				  HINT = format('Pass a plain array of names from: %s.', array_to_string(settable, ', '));
	END IF;
	FOREACH c IN ARRAY coalesce(clear, '{}') LOOP
		IF c IS NULL THEN
			RAISE EXCEPTION 'clear must not contain nulls'
				USING ERRCODE = 'null_value_not_allowed',
					  HINT = format('clear takes names from: %s.', array_to_string(settable, ', '));
		END IF;
		IF NOT c = ANY (settable) THEN
			RAISE EXCEPTION 'cannot clear unknown setting "%"', c
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = format('clear takes names from: %s.', array_to_string(settable, ', '));
		END IF;
		CASE c
			WHEN 'concurrency_limit' THEN q.concurrency_limit := NULL;
			WHEN 'key_concurrency_limit' THEN q.key_concurrency_limit := NULL;
			WHEN 'max_attempts' THEN q.max_attempts := 3;
			WHEN 'lease' THEN q.lease := interval '5 minutes';
			WHEN 'retry_backoff' THEN q.retry_backoff := interval '1 second';
			WHEN 'retry_backoff_max' THEN q.retry_backoff_max := interval '1 hour';
			WHEN 'ttl' THEN q.ttl := NULL;
		END CASE;
	END LOOP;

	IF q.retry_backoff_max < q.retry_backoff THEN
		RAISE EXCEPTION 'retry_backoff_max (%) is less than retry_backoff (%)', q.retry_backoff_max, q.retry_backoff
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Make retry_backoff_max at least retry_backoff.';
	END IF;

	UPDATE queue_engine.queues x
	   SET concurrency_limit = q.concurrency_limit,
		   key_concurrency_limit = q.key_concurrency_limit,
		   max_attempts = q.max_attempts, lease = q.lease,
		   retry_backoff = q.retry_backoff, retry_backoff_max = q.retry_backoff_max,
		   ttl = q.ttl
	 WHERE x.queue_id = q.queue_id;
END;
$$;

-- Internal: pause_queue and resume_queue, once (admin access, row lock).
CREATE FUNCTION queue_engine.set_queue_paused(queue text, paused boolean)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	q queue_engine.queues := queue_engine.live_queue(queue);
BEGIN
	PERFORM queue_engine.require_access(q.tenant_id, 'admin', format('queue "%s"', queue));
	q := queue_engine.live_queue(queue, true);
	UPDATE queue_engine.queues x SET paused = set_queue_paused.paused WHERE x.queue_id = q.queue_id;
END;
$$;

CREATE OR REPLACE FUNCTION queue_engine.pause_queue(queue text)
RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT queue_engine.set_queue_paused(queue, true) $$;

CREATE OR REPLACE FUNCTION queue_engine.resume_queue(queue text)
RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT queue_engine.set_queue_paused(queue, false) $$;

CREATE OR REPLACE FUNCTION queue_engine.set_tenant_limit(tenant text, concurrency_limit int)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	tid int;
BEGIN
	PERFORM queue_engine.check_positive('concurrency_limit', concurrency_limit,
		'Pass a limit of at least 1, or NULL to remove the tenant''s limit.');
	IF tenant IS NOT NULL THEN
		PERFORM queue_engine.require_access(
			(SELECT t.tenant_id FROM queue_engine.tenants t WHERE t.tenant = set_tenant_limit.tenant),
			'admin', format('tenant "%s"', tenant));
	END IF;
	tid := queue_engine.ensure_tenant(tenant);
	UPDATE queue_engine.tenants t SET concurrency_limit = set_tenant_limit.concurrency_limit
	 WHERE t.tenant_id = tid;
END;
$$;

CREATE OR REPLACE FUNCTION queue_engine.drop_queue(queue text, force boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	q queue_engine.queues;
	open_runs bigint;
	r record;
BEGIN
	-- Refuse before waiting for enqueues in flight (drop takes the name lock).
	q := queue_engine.live_queue(queue);
	PERFORM queue_engine.require_access(q.tenant_id, 'admin', format('queue "%s"', queue));
	PERFORM queue_engine.lock_queue_name(queue);
	q := queue_engine.live_queue(queue, true);
	SELECT count(*) INTO open_runs FROM queue_engine.runs x
	 WHERE x.queue_id = q.queue_id
	   AND x.status IN ('delayed', 'queued', 'executing', 'waiting');
	IF open_runs > 0 AND NOT coalesce(force, false) THEN
		RAISE EXCEPTION 'queue "%" still has % unfinished runs', queue, open_runs
			USING ERRCODE = 'object_in_use',
				  HINT = 'Wait for them to finish, or pass force => true to cancel them.';
	END IF;
	FOR r IN SELECT x.run_id FROM queue_engine.runs x
			  WHERE x.queue_id = q.queue_id
				AND x.status IN ('delayed', 'queued', 'executing', 'waiting')
	LOOP
		PERFORM queue_engine.cancel(r.run_id, 'queue dropped');
	END LOOP;
	UPDATE queue_engine.queues x SET dropped_at = now(), paused = true
	 WHERE x.queue_id = q.queue_id;
END;
$$;

-- queue_stats shows a tenant-scoped role its tenants' queues only.  A
-- security barrier, so that no function in the caller's own WHERE clause
-- sees the rows of other tenants before this filter drops them.
CREATE OR REPLACE VIEW queue_engine.queue_stats WITH (security_barrier) AS
SELECT t.tenant,
	   q.queue,
	   q.paused,
	   q.concurrency_limit,
	   (c.queued + coalesce(d.queued, 0))::bigint AS queued,
	   (c.delayed + coalesce(d.delayed, 0))::bigint AS delayed,
	   (c.executing + coalesce(d.executing, 0))::bigint AS executing,
	   (c.waiting + coalesce(d.waiting, 0))::bigint AS waiting,
	   least(o.oldest_queued, o.oldest_due) AS oldest_queued_at
  FROM queue_engine.queues q
  JOIN queue_engine.tenants t ON t.tenant_id = q.tenant_id
  JOIN queue_engine.queue_counts c ON c.queue_id = q.queue_id
  LEFT JOIN (SELECT queue_id,
					sum(queued) AS queued, sum(delayed) AS delayed,
					sum(executing) AS executing, sum(waiting) AS waiting
			   FROM queue_engine.queue_count_deltas
			  GROUP BY queue_id) d ON d.queue_id = q.queue_id
  -- Earliest run_at among startable runs: one index probe per distinct
  -- priority of the queue's queued runs (a loose index scan), plus the
  -- delayed runs already due (maintenance keeps those few).
  CROSS JOIN LATERAL (
	WITH RECURSIVE heads AS (
		(SELECT r.priority, r.run_at FROM queue_engine.runs r
		  WHERE r.queue_id = q.queue_id AND r.status = 'queued'
			AND (r.attempt > 0 OR r.expires_at IS NULL OR r.expires_at > now())
		  ORDER BY r.priority DESC, r.run_at, r.run_id LIMIT 1)
		UNION ALL
		SELECT n.priority, n.run_at
		  FROM heads h
		 CROSS JOIN LATERAL (
			SELECT r.priority, r.run_at FROM queue_engine.runs r
			 WHERE r.queue_id = q.queue_id AND r.status = 'queued'
			   AND r.priority < h.priority
			   AND (r.attempt > 0 OR r.expires_at IS NULL OR r.expires_at > now())
			 ORDER BY r.priority DESC, r.run_at, r.run_id LIMIT 1) n
	)
	SELECT (SELECT min(run_at) FROM heads) AS oldest_queued,
		   (SELECT min(r.run_at) FROM queue_engine.runs r
			 WHERE r.status = 'delayed' AND r.run_at <= now() AND r.queue_id = q.queue_id
			   AND (r.attempt > 0 OR r.expires_at IS NULL OR r.expires_at > now())) AS oldest_due
  ) o
 WHERE q.dropped_at IS NULL
   -- NULL: every tenant.  A sub-select, so evaluated once per query.
   AND coalesce(q.tenant_id = ANY ((SELECT queue_engine.access_tenants('reader'))::int[]), true);

-- Upgrade from 0.1.0: API functions and queue_stats used to be granted with
-- plain GRANTs (README's old producer, worker and monitor roles), and such
-- a role would now be scoped to no tenant.  Give each the matching access
-- on every tenant, so deployments keep working as before; the tables stay
-- as they were granted.  (A fresh install has no such roles.)
INSERT INTO queue_engine.tenant_access (role, tenant_id, access)
SELECT DISTINCT g.grantee::regrole, 0, g.access
  FROM (SELECT a.grantee, m.access, p.proowner AS owner
		  FROM pg_catalog.pg_proc p
		 CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
		  JOIN (VALUES ('get_run', 'reader'),
					   ('enqueue', 'producer'), ('enqueue_batch', 'producer'), ('cancel', 'producer'),
					   ('dequeue', 'worker'), ('heartbeat', 'worker'), ('complete', 'worker'),
					   ('complete_batch', 'worker'), ('fail', 'worker'),
					   ('create_queue', 'admin'), ('alter_queue', 'admin'), ('pause_queue', 'admin'),
					   ('resume_queue', 'admin'), ('drop_queue', 'admin'), ('set_tenant_limit', 'admin'))
			   AS m(proname, access) ON m.proname = p.proname
		 WHERE p.pronamespace = 'queue_engine'::regnamespace AND a.privilege_type = 'EXECUTE'
		UNION ALL
		SELECT a.grantee, 'reader', c.relowner
		  FROM pg_catalog.pg_class c
		 CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
		 WHERE c.oid = 'queue_engine.queue_stats'::regclass AND a.privilege_type = 'SELECT') g
  JOIN pg_catalog.pg_roles r ON r.oid = g.grantee
 WHERE g.grantee <> g.owner AND NOT r.rolsuper
ON CONFLICT DO NOTHING;
-- queue_stats calls access_tenants(), so its readers need to execute it.
DO $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT DISTINCT a.role::oid AS oid FROM queue_engine.tenant_access a LOOP
		EXECUTE format('GRANT EXECUTE ON FUNCTION queue_engine.access_tenants(text) TO %I',
					   (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = r.oid));
	END LOOP;
END;
$$;



---------------------------------------------------------------------------
-- End of sections.  Privileges: nothing new for PUBLIC.
---------------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue_engine FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA queue_engine FROM PUBLIC;
