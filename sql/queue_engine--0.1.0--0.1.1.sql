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

-- create_queue: as in 0.1.0, with the queue name capped.
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

-- alter_queue: as in 0.1.0, with clear one-dimensional (FOREACH would
-- accept '{{ttl}}' element by element).
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

---------------------------------------------------------------------------
-- Section 4: tenant-scoped roles.
---------------------------------------------------------------------------



---------------------------------------------------------------------------
-- End of sections.  Privileges: nothing new for PUBLIC.
---------------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue_engine FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA queue_engine FROM PUBLIC;
