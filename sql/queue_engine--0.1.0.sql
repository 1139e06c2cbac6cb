/* queue_engine--0.1.0.sql: install script (schema, tables, API functions, grants) */

\echo Use "CREATE EXTENSION queue_engine" to load this file. \quit

-- Pre-install check (added in 0.1.1; creates nothing).  CREATE EXTENSION
-- creates schema queue_engine (the control file's schema) when it is absent,
-- but silently adopts one that already exists, and DROP EXTENSION leaves the
-- schema behind.  A schema that another, non-superuser role created
-- beforehand would leave that role owning the schema of every run: it could
-- grant it to PUBLIC or drop the engine's tables.  So the schema must belong
-- to the installing role (as after CREATE EXTENSION made it, or after a DROP
-- EXTENSION by the same role) or to a superuser (who can do all that anyway;
-- pg_restore recreates the schema with its original owner, often another
-- superuser, before it runs CREATE EXTENSION).
DO $schema_check$
DECLARE
	owner_name name;
	owner_is_superuser boolean;
BEGIN
	SELECT r.rolname, r.rolsuper INTO owner_name, owner_is_superuser
	  FROM pg_catalog.pg_namespace n
	  JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
	 WHERE n.nspname = 'queue_engine';
	IF owner_name <> current_user AND NOT owner_is_superuser THEN
		RAISE EXCEPTION 'schema "queue_engine" is owned by role "%", which is neither the installing role nor a superuser', owner_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('Schema "queue_engine" existed before CREATE EXTENSION and its owner "%s" is not "%s" (the installing role); that owner could grant the engine''s tables to anyone or drop every run.', owner_name, current_user),
				  HINT = format('Check what the schema holds, then drop it (DROP SCHEMA queue_engine CASCADE) or give it to the installing role (ALTER SCHEMA queue_engine OWNER TO %s), and run CREATE EXTENSION queue_engine again.', quote_ident(current_user));
	END IF;
END
$schema_check$;

-- Run lifecycle states (SPEC "Run states").
CREATE TYPE queue_engine.run_status AS ENUM (
	'delayed', 'queued', 'executing', 'waiting',
	'completed', 'failed', 'canceled', 'expired'
);

-- Isolation and limit groups.
CREATE TABLE queue_engine.tenants (
	tenant_id			int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	tenant				text NOT NULL UNIQUE,
	concurrency_limit	int CHECK (concurrency_limit > 0),
	created_at			timestamptz NOT NULL DEFAULT now()
);
INSERT INTO queue_engine.tenants (tenant) VALUES ('default');

-- Queues. A dropped queue keeps its row (dropped_at set) so that its
-- finished runs still resolve their queue name; its name becomes free again.
-- Maintenance deletes the row once retention has removed all its runs.
CREATE TABLE queue_engine.queues (
	queue_id			int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	queue				text NOT NULL,
	tenant_id			int NOT NULL REFERENCES queue_engine.tenants,
	concurrency_limit	int CHECK (concurrency_limit > 0),
	key_concurrency_limit int CHECK (key_concurrency_limit > 0),
	max_attempts		int NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
	lease				interval NOT NULL DEFAULT '5 minutes',
	retry_backoff		interval NOT NULL DEFAULT '1 second',
	retry_backoff_max	interval NOT NULL DEFAULT '1 hour',
	ttl					interval,
	paused				boolean NOT NULL DEFAULT false,
	created_at			timestamptz NOT NULL DEFAULT now(),
	dropped_at			timestamptz
);
CREATE UNIQUE INDEX queues_live_name ON queue_engine.queues (queue)
	WHERE dropped_at IS NULL;
-- Dropped queues, which maintenance deletes once none of their runs is left.
CREATE INDEX queues_dropped ON queue_engine.queues (dropped_at)
	WHERE dropped_at IS NOT NULL;
-- A tenant's live queues in turn order (dequeue walks them from a cursor).
CREATE INDEX queues_tenant ON queue_engine.queues (tenant_id, queue_id);

CREATE SEQUENCE queue_engine.runs_run_id_seq AS bigint;

-- Every run, from enqueue until retention removes it. No foreign keys:
-- an FK check would take a KEY SHARE lock on the queue row for every
-- enqueue, and the engine's C functions already guarantee validity.
-- The partial indexes are the engine's "ready entries", "delayed list",
-- "slots" (executing runs per queue and key, also scanned for leases).
CREATE TABLE queue_engine.runs (
	run_id				bigint NOT NULL DEFAULT nextval('queue_engine.runs_run_id_seq') PRIMARY KEY,
	queue_id			int NOT NULL,
	tenant_id			int NOT NULL,
	status				queue_engine.run_status NOT NULL,
	attempt				int NOT NULL DEFAULT 0,
	max_attempts		int NOT NULL,
	priority			int NOT NULL DEFAULT 0,
	run_at				timestamptz NOT NULL,
	expires_at			timestamptz,
	lease_expires_at	timestamptz,
	lease				interval NOT NULL,
	attempt_lease		interval,
	queue_slot			int,			-- slot of a limited queue held while executing
	created_at			timestamptz NOT NULL,
	started_at			timestamptz,
	finished_at			timestamptz,
	concurrency_key		text,
	worker				text,
	idempotency_key		text,
	parent_run_id		bigint,
	tags				text[],
	payload				jsonb NOT NULL,
	last_error			jsonb,
	output				jsonb
);
ALTER SEQUENCE queue_engine.runs_run_id_seq OWNED BY queue_engine.runs.run_id;

CREATE INDEX runs_queued ON queue_engine.runs (queue_id, priority DESC, run_at, run_id)
	WHERE status = 'queued';
-- For queues with a key limit: keyed runs key by key, and keyless runs
-- apart, so neither lookup walks the other kind.  (Keyless runs are kept
-- out of the key index: NULL keys make every comparison there slow.)
CREATE INDEX runs_queued_key ON queue_engine.runs (queue_id, concurrency_key, priority DESC, run_at, run_id)
	WHERE status = 'queued' AND concurrency_key IS NOT NULL;
CREATE INDEX runs_queued_nokey ON queue_engine.runs (queue_id, priority DESC, run_at, run_id)
	WHERE status = 'queued' AND concurrency_key IS NULL;
CREATE INDEX runs_delayed ON queue_engine.runs (run_at)
	WHERE status = 'delayed';
-- Executing runs: the slots that limits count, and what stall rescue scans
-- for passed leases.  Leases are deliberately not indexed: a heartbeat then
-- changes no indexed column and is a HOT update, and rescue reads only the
-- executing runs, which are few next to the backlog.
CREATE INDEX runs_executing ON queue_engine.runs (queue_id, concurrency_key)
	WHERE status = 'executing';
CREATE INDEX runs_expiry ON queue_engine.runs (expires_at)
	WHERE status IN ('queued', 'delayed') AND attempt = 0 AND expires_at IS NOT NULL;
-- Waiting runs per queue: what the consistency check counts in that state,
-- without reading the whole table (which holds every finished run).
CREATE INDEX runs_waiting ON queue_engine.runs (queue_id)
	WHERE status = 'waiting';
-- Finished runs by when they finished: what retention deletes, oldest
-- first.  Entries are made when a run finishes, an update that is never
-- HOT anyway (its status leaves the partial indexes above).
CREATE INDEX runs_finished ON queue_engine.runs (finished_at)
	WHERE status IN ('completed', 'failed', 'canceled', 'expired');

-- Idempotency keys, unique per tenant while live.
CREATE TABLE queue_engine.idempotency_keys (
	tenant_id			int NOT NULL,
	idempotency_key		text NOT NULL,
	run_id				bigint NOT NULL,
	expires_at			timestamptz NOT NULL,
	PRIMARY KEY (tenant_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry ON queue_engine.idempotency_keys (expires_at);

-- Per-queue run counts by state. Writers never update these rows: each
-- transaction appends a delta row instead (no hot row, no lock), and
-- maintenance folds the deltas into queue_counts.
CREATE TABLE queue_engine.queue_counts (
	queue_id			int PRIMARY KEY,
	queued				bigint NOT NULL DEFAULT 0,
	delayed				bigint NOT NULL DEFAULT 0,
	executing			bigint NOT NULL DEFAULT 0,
	waiting				bigint NOT NULL DEFAULT 0
);
CREATE TABLE queue_engine.queue_count_deltas (
	queue_id			int NOT NULL,
	queued				int NOT NULL DEFAULT 0,
	delayed				int NOT NULL DEFAULT 0,
	executing			int NOT NULL DEFAULT 0,
	waiting				int NOT NULL DEFAULT 0
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);

-- Repairs made by check_consistency (SPEC "Operating").
CREATE TABLE queue_engine.consistency_log (
	logged_at			timestamptz NOT NULL DEFAULT now(),
	check_name			text NOT NULL,
	found				bigint NOT NULL,
	repaired			bigint NOT NULL,
	detail				jsonb
);

-- The tenant dequeue(NULL) served last: tenants take turns after it.  A
-- sequence, so moving it updates one value in place: no row version, no
-- row lock, no bloat under a long-held snapshot.
CREATE SEQUENCE queue_engine.dequeue_tenant_cursor AS bigint MINVALUE 0 START 0;

---------------------------------------------------------------------------
-- Reading
---------------------------------------------------------------------------

CREATE VIEW queue_engine.queue_stats AS
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
 WHERE q.dropped_at IS NULL;

-- get_run's row type: a named type, because a function's argument and
-- result columns cannot share the name run_id.
CREATE TYPE queue_engine.run_info AS (
	run_id bigint, queue text, tenant text, status queue_engine.run_status,
	attempt int, max_attempts int, priority int, concurrency_key text,
	payload jsonb, created_at timestamptz, run_at timestamptz,
	started_at timestamptz, finished_at timestamptz, expires_at timestamptz,
	lease_expires_at timestamptz, last_error jsonb, output jsonb,
	tags text[], parent_run_id bigint, idempotency_key text);

CREATE FUNCTION queue_engine.get_run(run_id bigint)
RETURNS queue_engine.run_info
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result queue_engine.run_info;
BEGIN
	IF get_run.run_id IS NULL THEN
		RAISE EXCEPTION 'run_id must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the id that enqueue() returned.';
	END IF;
	SELECT r.run_id, q.queue, t.tenant, r.status, r.attempt, r.max_attempts,
		   r.priority, r.concurrency_key, r.payload, r.created_at, r.run_at,
		   r.started_at, r.finished_at, r.expires_at, r.lease_expires_at,
		   r.last_error, r.output, r.tags, r.parent_run_id, r.idempotency_key
	  INTO result
	  FROM queue_engine.runs r
	  JOIN queue_engine.queues q ON q.queue_id = r.queue_id
	  JOIN queue_engine.tenants t ON t.tenant_id = r.tenant_id
	 WHERE r.run_id = get_run.run_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'run % does not exist', get_run.run_id
			USING ERRCODE = 'no_data_found',
				  HINT = 'The id may be wrong, or retention may have removed the run.';
	END IF;
	RETURN result;
END;
$$;

---------------------------------------------------------------------------
-- Tenants and queues (administrative, not on the hot path)
---------------------------------------------------------------------------

CREATE FUNCTION queue_engine.check_positive(name text, value int, hint text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF value IS NOT NULL AND value <= 0 THEN
		RAISE EXCEPTION '% must be positive: %', name, value
			USING ERRCODE = 'invalid_parameter_value', HINT = hint;
	END IF;
END;
$$;

CREATE FUNCTION queue_engine.check_interval(name text, value interval, allow_zero boolean)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF value IS NOT NULL AND value < interval '0' AND allow_zero THEN
		RAISE EXCEPTION '% must not be negative: %', name, value
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Make %s zero or more, such as ''1 second''.', name);
	END IF;
	IF value IS NOT NULL AND NOT allow_zero AND value <= interval '0' THEN
		RAISE EXCEPTION '% must be a positive interval: %', name, value
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Make %s greater than zero, such as ''30 seconds''.', name);
	END IF;
	IF value > interval '100 years' THEN
		RAISE EXCEPTION '% must be at most 100 years: %', name, value
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Pass a shorter %s.', name);
	END IF;
END;
$$;

CREATE FUNCTION queue_engine.ensure_tenant(tenant text)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	id int;
BEGIN
	IF tenant IS NULL OR tenant = '' THEN
		RAISE EXCEPTION 'tenant must not be null or empty'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass a tenant name, or omit it to use ''default''.';
	END IF;
	SELECT t.tenant_id INTO id FROM queue_engine.tenants t WHERE t.tenant = ensure_tenant.tenant;
	IF id IS NULL THEN
		INSERT INTO queue_engine.tenants (tenant) VALUES (ensure_tenant.tenant)
		ON CONFLICT DO NOTHING;
		SELECT t.tenant_id INTO id FROM queue_engine.tenants t WHERE t.tenant = ensure_tenant.tenant;
	END IF;
	RETURN id;
END;
$$;

CREATE FUNCTION queue_engine.live_queue(queue text, lock boolean DEFAULT false)
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

CREATE FUNCTION queue_engine.create_queue(
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

CREATE FUNCTION queue_engine.alter_queue(
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

CREATE FUNCTION queue_engine.pause_queue(queue text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	q queue_engine.queues := queue_engine.live_queue(queue, true);
BEGIN
	UPDATE queue_engine.queues x SET paused = true WHERE x.queue_id = q.queue_id;
END;
$$;

CREATE FUNCTION queue_engine.resume_queue(queue text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	q queue_engine.queues := queue_engine.live_queue(queue, true);
BEGIN
	UPDATE queue_engine.queues x SET paused = false WHERE x.queue_id = q.queue_id;
END;
$$;

CREATE FUNCTION queue_engine.set_tenant_limit(tenant text, concurrency_limit int)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	tid int;
BEGIN
	PERFORM queue_engine.check_positive('concurrency_limit', concurrency_limit,
		'Pass a limit of at least 1, or NULL to remove the tenant''s limit.');
	tid := queue_engine.ensure_tenant(tenant);
	UPDATE queue_engine.tenants t SET concurrency_limit = set_tenant_limit.concurrency_limit
	 WHERE t.tenant_id = tid;
END;
$$;

---------------------------------------------------------------------------
-- The run lifecycle, in C (src/)
---------------------------------------------------------------------------

CREATE FUNCTION queue_engine.enqueue(
	queue text,
	payload jsonb DEFAULT '{}',
	concurrency_key text DEFAULT NULL,
	priority int DEFAULT 0,
	run_at timestamptz DEFAULT NULL,
	delay interval DEFAULT NULL,
	ttl interval DEFAULT NULL,
	max_attempts int DEFAULT NULL,
	idempotency_key text DEFAULT NULL,
	idempotency_ttl interval DEFAULT '1 day',
	tags text[] DEFAULT NULL,
	parent_run_id bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_enqueue'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.enqueue_batch(
	queue text,
	payloads jsonb[],
	concurrency_key text DEFAULT NULL,
	priority int DEFAULT 0,
	run_at timestamptz DEFAULT NULL,
	delay interval DEFAULT NULL,
	ttl interval DEFAULT NULL,
	max_attempts int DEFAULT NULL,
	tags text[] DEFAULT NULL,
	parent_run_id bigint DEFAULT NULL)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'qe_enqueue_batch'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.dequeue(
	queues text[] DEFAULT NULL,
	max_runs int DEFAULT 1,
	lease interval DEFAULT NULL,
	worker text DEFAULT NULL)
RETURNS TABLE (
	run_id bigint, queue text, tenant text, attempt int, payload jsonb,
	concurrency_key text, priority int, lease_expires_at timestamptz,
	resume jsonb)
AS 'MODULE_PATHNAME', 'qe_dequeue'
LANGUAGE C VOLATILE SECURITY DEFINER ROWS 1
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.heartbeat(
	run_id bigint,
	attempt int DEFAULT NULL,
	extend interval DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'qe_heartbeat'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.complete(
	run_id bigint,
	output jsonb DEFAULT NULL,
	attempt int DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'qe_complete'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.complete_batch(
	run_ids bigint[],
	outputs jsonb[] DEFAULT NULL,
	attempts int[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_complete_batch'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.fail(
	run_id bigint,
	error jsonb,
	attempt int DEFAULT NULL,
	retry_in interval DEFAULT NULL,
	permanent boolean DEFAULT false)
RETURNS queue_engine.run_status
AS 'MODULE_PATHNAME', 'qe_fail'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.cancel(
	run_id bigint,
	reason text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'qe_cancel'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Exclusive lock on a queue name for the transaction; enqueue takes it
-- shared, so drop_queue waits for enqueues in flight.
CREATE FUNCTION queue_engine.lock_queue_name(queue text)
RETURNS void
AS 'MODULE_PATHNAME', 'qe_lock_queue_name_sql'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.drop_queue(queue text, force boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	q queue_engine.queues;
	open_runs bigint;
	r record;
BEGIN
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

---------------------------------------------------------------------------
-- Operating
---------------------------------------------------------------------------

CREATE FUNCTION queue_engine.check_consistency(repair boolean DEFAULT true)
RETURNS TABLE (check_name text, found bigint, repaired bigint)
AS 'MODULE_PATHNAME', 'qe_check_consistency'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Each background task, callable on its own; each handles at most
-- batch_size runs and returns how many it handled (call until 0).
CREATE FUNCTION queue_engine.promote_delayed(batch_size int DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_promote_delayed'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.expire_runs(batch_size int DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_expire_runs'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.rescue_stalled(batch_size int DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_rescue_stalled'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.purge_idempotency_keys(batch_size int DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_purge_idempotency_keys'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.fold_counts(batch_size int DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_fold_counts'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.prune_finished_runs(batch_size int DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_prune_finished_runs'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Internal: any change to queues or tenants (by the API or by hand) voids
-- the queue definitions that backends cache, when it commits.
CREATE FUNCTION queue_engine.queue_definitions_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'qe_queue_definitions_changed'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER queues_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON queue_engine.queues
	FOR EACH STATEMENT EXECUTE FUNCTION queue_engine.queue_definitions_changed();
CREATE TRIGGER tenants_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON queue_engine.tenants
	FOR EACH STATEMENT EXECUTE FUNCTION queue_engine.queue_definitions_changed();

-- Internal: dequeue(NULL)'s queue walk asks it whether a queue may start a
-- run as far as its own limit goes (from a shared-memory mark when the queue
-- is known to be at its limit, else by counting its executing runs).  No SET
-- clause: it runs once per queue walked, and its one query is qualified.
CREATE FUNCTION queue_engine.queue_below_limit(queue_id int, concurrency_limit int)
RETURNS boolean
AS 'MODULE_PATHNAME', 'qe_queue_below_limit'
LANGUAGE C VOLATILE;

-- Not SECURITY DEFINER: such a procedure could not commit between batches.
CREATE PROCEDURE queue_engine.run_maintenance()
AS 'MODULE_PATHNAME', 'qe_run_maintenance'
LANGUAGE C;

---------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; see README "Roles and grants".
---------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue_engine FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON SCHEMA queue_engine FROM PUBLIC;

-- Keep queue state in pg_dump output.
SELECT pg_catalog.pg_extension_config_dump('queue_engine.tenants', 'WHERE tenant <> ''default''');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queues', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.runs', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.runs_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queue_counts', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queue_count_deltas', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.consistency_log', '');
