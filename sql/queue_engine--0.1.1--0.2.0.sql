-- queue_engine 0.1.1 -> 0.2.0: run storage 0.2 (issue 15).
--
-- A fresh CREATE EXTENSION runs queue_engine--0.1.0.sql and then each
-- update script in order, so a new install and an updated one have the
-- same objects by construction (TAP 007_upgrade and 011_upgrade_from_release
-- compare them).  Each section says what it changes and why.

\echo Use "ALTER EXTENSION queue_engine UPDATE TO '0.2.0'" to load this file. \quit

---------------------------------------------------------------------------
-- Section 1: count deltas in two segments, emptied by TRUNCATE.
--
-- queue_count_deltas becomes a table partitioned by segment (0 or 1).
-- Writers append to the current segment (a number in shared state, which
-- the segment column's default reads); maintenance folds both into
-- queue_counts and, once a segment has grown large while writers used the
-- other, folds it whole and truncates it.  So the rows folds delete do not
-- pile up while a long-open snapshot keeps VACUUM from removing them
-- (src/maintenance.c).  The 0.1 table becomes segment 0 with its rows, so
-- nothing pending is lost and its pg_dump mark stays.
---------------------------------------------------------------------------

CREATE FUNCTION queue_engine.count_delta_segment() RETURNS smallint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'qe_count_delta_segment_sql';

DO $$
DECLARE
	-- The view reads the deltas table by its name: taken before the rename
	-- (which a view follows) and given again once the name is the parent's.
	stats_view text := pg_catalog.pg_get_viewdef('queue_engine.queue_stats'::pg_catalog.regclass);
	stats_options text[] := (SELECT reloptions FROM pg_catalog.pg_class
							   WHERE oid = 'queue_engine.queue_stats'::pg_catalog.regclass);
BEGIN
	ALTER TABLE queue_engine.queue_count_deltas RENAME TO queue_count_deltas_0;
	ALTER TABLE queue_engine.queue_count_deltas_0 ADD COLUMN segment smallint NOT NULL DEFAULT 0;
	CREATE TABLE queue_engine.queue_count_deltas (
		queue_id			int NOT NULL,
		queued				int NOT NULL DEFAULT 0,
		delayed				int NOT NULL DEFAULT 0,
		executing			int NOT NULL DEFAULT 0,
		waiting				int NOT NULL DEFAULT 0,
		segment				smallint NOT NULL DEFAULT queue_engine.count_delta_segment()
	) PARTITION BY LIST (segment);
	ALTER TABLE queue_engine.queue_count_deltas
		ATTACH PARTITION queue_engine.queue_count_deltas_0 FOR VALUES IN (0);
	CREATE TABLE queue_engine.queue_count_deltas_1
		PARTITION OF queue_engine.queue_count_deltas FOR VALUES IN (1)
		WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
	EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW queue_engine.queue_stats%s AS %s',
							  CASE WHEN stats_options IS NULL THEN ''
							  ELSE ' WITH (' || pg_catalog.array_to_string(stats_options, ', ') || ')' END,
							  stats_view);
END;
$$;

-- The partitions hold the data; the parent is marked too, so that every
-- table of the extension is (pg_dump dumps no data of a partitioned table).
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queue_count_deltas', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queue_count_deltas_1', '');

---------------------------------------------------------------------------
-- Section 2: run storage 0.2 (src/README.md, "Run storage 0.2").
--
-- 0.1 kept every run in one wide row of queue_engine.runs, updated in place
-- at each step; under a long-open snapshot every claim and finish left a
-- dead row version and index entries that VACUUM could not remove.  Now a
-- run lives in the table of where it is in its life:
--   ready      pending runs that may start (status queued);
--   delayed    pending runs waiting for run_at (first attempts, retries);
--   executing  runs a worker holds, with attempt, lease and slot;
--   finished_runs  the history, one row per run, written once.
-- ready, delayed and executing are each a parent with two segments (_0 and
-- _1, inheritance children): writers insert into the current segment, and
-- maintenance's rotation moves the other one's live rows over and empties
-- it with TRUNCATE, which needs no snapshot to end (maintenance.c).  The
-- parents hold no rows; statements read a family through its parent, so
-- both segments are read in one scan.
--
-- A pending row is 8 columns (so its null bitmap fits in the tuple
-- header) with one order index entry: what most runs lack is in one
-- composite column, meta, NULL for a plain run; what the queue gives every
-- run (max_attempts, lease at enqueue) is referenced through policy_id;
-- tenant_id is the queue's; status is where the row is.
--
-- queue_engine.runs becomes a view of them all with 0.1's columns, and
-- changes made to it by hand (tests, an operator's fix) are applied to the
-- row where it lives by INSTEAD OF triggers.
---------------------------------------------------------------------------

-- What a run has beyond its 8 pending columns; NULL fields are the common
-- case (attempt NULL: 0; created_at NULL: run_at; max_attempts and lease
-- NULL: the policy's).  A field of meta in executing_k and finished_runs
-- that the row has a column for (attempt, started_at, worker,
-- concurrency_key) is unused.  concurrency_key: a queued run's key when
-- its queue has no per-key limit (ready's column then stays NULL, so the
-- run is in the order index, which holds only runs whose column is NULL).
CREATE TYPE queue_engine.run_meta AS (
	attempt				int,
	created_at			timestamptz,
	expires_at			timestamptz,
	started_at			timestamptz,
	worker				text,
	idempotency_key		text,
	tags				text[],
	parent_run_id		bigint,
	max_attempts		int,
	lease				interval,
	last_error			jsonb,
	concurrency_key		text,
	resume				jsonb
);

-- What a queue gives its runs at enqueue (SPEC: a change to the queue
-- affects new runs only): a new row whenever max_attempts or lease change,
-- never updated; runs name theirs by policy_id.
CREATE SEQUENCE queue_engine.queue_policies_policy_id_seq AS int;
CREATE TABLE queue_engine.queue_policies (
	policy_id			int PRIMARY KEY DEFAULT nextval('queue_engine.queue_policies_policy_id_seq'),
	queue_id			int NOT NULL,
	max_attempts		int NOT NULL,
	lease				interval NOT NULL
);
ALTER SEQUENCE queue_engine.queue_policies_policy_id_seq OWNED BY queue_engine.queue_policies.policy_id;
CREATE INDEX queue_policies_queue ON queue_engine.queue_policies (queue_id);

ALTER TABLE queue_engine.queues ADD COLUMN policy_id int;

-- A queue's current policy, kept by trigger so that changes by hand count
-- too.  A row that already names a policy (pg_restore's copy of the table)
-- keeps it.
CREATE FUNCTION queue_engine.queue_policy_assign()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.policy_id IS NULL
	   OR (TG_OP = 'UPDATE' AND (NEW.max_attempts IS DISTINCT FROM OLD.max_attempts
								 OR NEW.lease IS DISTINCT FROM OLD.lease)) THEN
		INSERT INTO queue_engine.queue_policies (queue_id, max_attempts, lease)
			 VALUES (NEW.queue_id, NEW.max_attempts, NEW.lease)
		  RETURNING policy_id INTO NEW.policy_id;
	END IF;
	RETURN NEW;
END;
$$;
CREATE TRIGGER queues_policy
	BEFORE INSERT OR UPDATE ON queue_engine.queues
	FOR EACH ROW EXECUTE FUNCTION queue_engine.queue_policy_assign();
UPDATE queue_engine.queues SET policy_id = NULL;	-- the trigger gives each one
ALTER TABLE queue_engine.queues ALTER COLUMN policy_id SET NOT NULL;

-- The families.  Column order is alignment order (no padding).
CREATE TABLE queue_engine.ready (
	run_id				bigint NOT NULL,
	run_at				timestamptz NOT NULL,
	queue_id			int NOT NULL,
	policy_id			int NOT NULL,
	priority			int NOT NULL,
	payload				jsonb NOT NULL,
	concurrency_key		text,
	meta				queue_engine.run_meta,
	CONSTRAINT rows_in_segments_only CHECK (false) NO INHERIT
);
CREATE TABLE queue_engine.delayed (LIKE queue_engine.ready,
	CONSTRAINT rows_in_segments_only CHECK (false) NO INHERIT);
CREATE TABLE queue_engine.executing (
	run_id				bigint NOT NULL,
	run_at				timestamptz NOT NULL,
	started_at			timestamptz NOT NULL,
	lease_expires_at	timestamptz NOT NULL,
	attempt_lease		interval NOT NULL,
	queue_id			int NOT NULL,
	policy_id			int NOT NULL,
	priority			int NOT NULL,
	attempt				int NOT NULL,
	queue_slot			int,
	payload				jsonb NOT NULL,
	concurrency_key		text,
	worker				text,
	meta				queue_engine.run_meta,
	CONSTRAINT rows_in_segments_only CHECK (false) NO INHERIT
);

-- Segments.  No autovacuum: rotation empties them; and without VACUUM
-- filling the free space map, inserts only append, so index entries with
-- equal keys (the runs of one statement) are in run_id order, which is the
-- queue's tie order (SPEC) without run_id in the index.  The run_id BRIN
-- (for lookups by id, get_run and cancel) is summarised as pages fill.
DO $$
DECLARE
	k int;
	seg text;
BEGIN
	FOR k IN 0..1 LOOP
		seg := 'ready_' || k;
		EXECUTE format('CREATE TABLE queue_engine.%I () INHERITS (queue_engine.ready)'
					   ' WITH (autovacuum_enabled = false)', seg);
		-- The order index holds the runs whose concurrency_key column is
		-- NULL: every run of a queue without a per-key limit (its key, if
		-- any, is in meta) and the keyless runs of a queue with one; the
		-- keyed runs of such a queue are in _key alone.  So each run has
		-- one ordered entry, and a key-limited queue finds its keyless
		-- runs without walking its keyed ones.  run_id last: runs of one
		-- batch share (priority, run_at), and the ready hint must be able
		-- to point inside such a tie (dispatch_hints.c).  Fill factor 100:
		-- a queue's entries mostly arrive in key order at the end of its
		-- range, where a leaf split leaves the left page at the fill factor
		-- (nbtsplitloc.c), and claims only delete from it, so the default
		-- 10 % of room is rarely used (a higher priority or an overdue
		-- delayed run lands inside and splits a page instead); workload 9:
		-- 4 bytes a run.
		EXECUTE format('CREATE INDEX %I ON queue_engine.%I (queue_id, priority DESC, run_at, run_id)'
					   ' WITH (fillfactor = 100) WHERE concurrency_key IS NULL', seg || '_order', seg);
		EXECUTE format('CREATE INDEX %I ON queue_engine.%I (queue_id, concurrency_key, priority DESC, run_at)'
					   ' WITH (fillfactor = 100) WHERE concurrency_key IS NOT NULL', seg || '_key', seg);

		seg := 'delayed_' || k;
		EXECUTE format('CREATE TABLE queue_engine.%I () INHERITS (queue_engine.delayed)'
					   ' WITH (autovacuum_enabled = false)', seg);
		-- run_id last: a row by hand is found by (run_at, run_id), where a
		-- batch's runs share run_at (runs_change())
		EXECUTE format('CREATE INDEX %I ON queue_engine.%I (run_at, run_id)', seg || '_run_at', seg);

		FOREACH seg IN ARRAY ARRAY['ready_' || k, 'delayed_' || k] LOOP
			EXECUTE format('CREATE INDEX %I ON queue_engine.%I USING brin (run_id)'
						   ' WITH (pages_per_range = 4, autosummarize = on)', seg || '_id', seg);
			-- TTL: the never-started runs with a deadline.
			EXECUTE format('CREATE INDEX %I ON queue_engine.%I (((meta).expires_at))'
						   ' WHERE (meta).expires_at IS NOT NULL AND (meta).attempt IS NULL',
						   seg || '_expiry', seg);
		END LOOP;

		seg := 'executing_' || k;
		EXECUTE format('CREATE TABLE queue_engine.%I () INHERITS (queue_engine.executing)'
					   ' WITH (autovacuum_enabled = false)', seg);
		EXECUTE format('CREATE UNIQUE INDEX %I ON queue_engine.%I (run_id)', seg || '_id', seg);
		-- The slots that limits count.  Leases are not indexed, so a
		-- heartbeat is a HOT update.
		EXECUTE format('CREATE INDEX %I ON queue_engine.%I (queue_id, concurrency_key)',
					   seg || '_queue', seg);

		-- A parent's unfinished children (wait_for_children, child_runs,
		-- cancel's cascade): only child runs have entries.
		FOREACH seg IN ARRAY ARRAY['ready_' || k, 'delayed_' || k, 'executing_' || k] LOOP
			EXECUTE format('CREATE INDEX %I ON queue_engine.%I (((meta).parent_run_id), run_id)'
						   ' WHERE (meta).parent_run_id IS NOT NULL', seg || '_parent', seg);
		END LOOP;
	END LOOP;
END;
$$;

-- The history: written once when a run finishes, deleted by retention.
CREATE TABLE queue_engine.finished_runs (
	run_id				bigint NOT NULL,
	finished_at			timestamptz NOT NULL,
	run_at				timestamptz NOT NULL,
	started_at			timestamptz,
	queue_id			int NOT NULL,
	policy_id			int NOT NULL,
	priority			int NOT NULL,
	attempt				int NOT NULL,
	status				queue_engine.run_status NOT NULL,
	payload				jsonb NOT NULL,
	output				jsonb,
	concurrency_key		text,
	worker				text,
	meta				queue_engine.run_meta
);
CREATE UNIQUE INDEX finished_runs_id ON queue_engine.finished_runs (run_id);
CREATE INDEX finished_runs_finished_at ON queue_engine.finished_runs (finished_at);
CREATE INDEX finished_runs_queue ON queue_engine.finished_runs (queue_id);
CREATE INDEX finished_runs_parent ON queue_engine.finished_runs (((meta).parent_run_id), run_id)
	WHERE (meta).parent_run_id IS NOT NULL;

-- Waiting runs (src/waits.c): one row per run in state waiting, holding
-- the run (executing's columns but the lease's) and what it waits for.
-- Not segmented: a wait lasts long and is deleted once, so what a held
-- snapshot keeps of it is little, and VACUUM reclaims it.
--   kind 'event': event, match (jsonb, NULL for any data), condition
--     (jsonpath or NULL), anchor: the hash of one scalar leaf of match
--     (0: match has none), by which send_event finds the wait
--     (waiting_runs_event) without reading the waits of other values;
--   kind 'sleep': wake_at is the end of the sleep;
--   kind 'children': woken by the last child to finish.
-- wake_at: when the background task wakes it (sleep's end, or a timeout).
CREATE TABLE queue_engine.waiting_runs (
	run_id				bigint NOT NULL,
	run_at				timestamptz NOT NULL,
	started_at			timestamptz NOT NULL,
	since				timestamptz NOT NULL,
	wake_at				timestamptz,
	anchor				bigint NOT NULL DEFAULT 0,
	queue_id			int NOT NULL,
	policy_id			int NOT NULL,
	priority			int NOT NULL,
	attempt				int NOT NULL,
	tenant_id			int NOT NULL,
	payload				jsonb NOT NULL,
	kind				text NOT NULL CHECK (kind IN ('event', 'sleep', 'children')),
	event				text,
	match				jsonb,
	condition			jsonpath,
	concurrency_key		text,
	worker				text,
	meta				queue_engine.run_meta
);
CREATE UNIQUE INDEX waiting_runs_id ON queue_engine.waiting_runs (run_id);
CREATE INDEX waiting_runs_event ON queue_engine.waiting_runs (tenant_id, event, anchor)
	WHERE kind = 'event';
CREATE INDEX waiting_runs_wake ON queue_engine.waiting_runs (wake_at)
	WHERE wake_at IS NOT NULL;
CREATE INDEX waiting_runs_parent ON queue_engine.waiting_runs (((meta).parent_run_id), run_id)
	WHERE (meta).parent_run_id IS NOT NULL;
-- The runs waiting for their children (check_consistency reads them alone).
CREATE INDEX waiting_runs_children ON queue_engine.waiting_runs (run_id)
	WHERE kind = 'children';

-- Events, kept for queue_engine.event_retention (lookback, idempotency).
CREATE SEQUENCE queue_engine.events_event_id_seq;
CREATE TABLE queue_engine.events (
	event_id			bigint NOT NULL DEFAULT nextval('queue_engine.events_event_id_seq'),
	sent_at				timestamptz NOT NULL,
	tenant_id			int NOT NULL,
	event				text NOT NULL,
	data				jsonb NOT NULL,
	idempotency_key		text
);
ALTER SEQUENCE queue_engine.events_event_id_seq OWNED BY queue_engine.events.event_id;
CREATE INDEX events_lookback ON queue_engine.events (tenant_id, event, sent_at);
CREATE INDEX events_sent_at ON queue_engine.events (sent_at);
CREATE UNIQUE INDEX events_idempotency ON queue_engine.events (tenant_id, idempotency_key)
	WHERE idempotency_key IS NOT NULL;

-- enqueue(cancel_on => ...): one row per rule, found by send_event as
-- waits are (anchor; match NULL: any data).  A rule's rows are deleted
-- when it fires, and with the run by retention (prune_finished_runs).
CREATE TABLE queue_engine.cancel_rules (
	run_id				bigint NOT NULL,
	anchor				bigint NOT NULL,
	tenant_id			int NOT NULL,
	event				text NOT NULL,
	match				jsonb
);
CREATE INDEX cancel_rules_event ON queue_engine.cancel_rules (tenant_id, event, anchor);
CREATE INDEX cancel_rules_run ON queue_engine.cancel_rules (run_id);

-- Durable steps (src/steps.c): the first result saved per (run, step).
CREATE SEQUENCE queue_engine.run_steps_seq;
CREATE TABLE queue_engine.run_steps (
	run_id				bigint NOT NULL,
	saved_at			timestamptz NOT NULL,
	seq					bigint NOT NULL DEFAULT nextval('queue_engine.run_steps_seq'),
	step				text NOT NULL,
	result				jsonb,
	PRIMARY KEY (run_id, step)
);
ALTER SEQUENCE queue_engine.run_steps_seq OWNED BY queue_engine.run_steps.seq;

-- meta for a row, NULL when every field is (a row IS NULL when all its
-- fields are).
CREATE FUNCTION queue_engine.run_meta_or_null(m queue_engine.run_meta)
RETURNS queue_engine.run_meta
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN m IS NULL THEN NULL ELSE m END;

-- The segment of a family new rows go to (shared state; rotation moves it).
CREATE FUNCTION queue_engine.current_segment(family text)
RETURNS int
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'qe_current_segment_sql';

-- Move the 0.1 rows.  Runs whose max_attempts or lease differ from their
-- queue's current ones get policies of their own.
INSERT INTO queue_engine.queue_policies (queue_id, max_attempts, lease)
SELECT DISTINCT r.queue_id, r.max_attempts, r.lease
  FROM queue_engine.runs r
 WHERE NOT EXISTS (SELECT 1 FROM queue_engine.queues q
					 JOIN queue_engine.queue_policies p ON p.policy_id = q.policy_id
					WHERE q.queue_id = r.queue_id AND p.max_attempts = r.max_attempts
					  AND p.lease = r.lease);

CREATE FUNCTION queue_engine.upgrade_refuse_waiting(run_id bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'run % is in state waiting, which queue_engine 0.1 never made', run_id
		USING HINT = 'Finish or cancel it, then update again.';
END;
$$;
-- (In one statement: a table made here would become part of the extension.)
WITH moving AS (
	SELECT r.*,
		   (SELECT min(p.policy_id) FROM queue_engine.queue_policies p
			 WHERE p.queue_id = r.queue_id AND p.max_attempts = r.max_attempts
			   AND p.lease = r.lease) AS policy_id,
		   queue_engine.run_meta_or_null(ROW(
			   CASE WHEN r.status IN ('queued', 'delayed') THEN nullif(r.attempt, 0) END,
			   nullif(r.created_at, r.run_at),
			   r.expires_at,
			   CASE WHEN r.status IN ('queued', 'delayed') THEN r.started_at END,
			   CASE WHEN r.status IN ('queued', 'delayed') THEN r.worker END,
			   r.idempotency_key, r.tags, r.parent_run_id, NULL, NULL,
			   r.last_error,
			   CASE WHEN r.key_in_meta THEN r.concurrency_key END, NULL)::queue_engine.run_meta) AS meta
	  FROM (SELECT r.*,
				   -- a queued run's key is in meta when its queue has no per-key limit
				   r.status = 'queued' AND r.concurrency_key IS NOT NULL
				   AND NOT EXISTS (SELECT 1 FROM queue_engine.queues q
									WHERE q.queue_id = r.queue_id
									  AND q.key_concurrency_limit IS NOT NULL) AS key_in_meta
			  FROM queue_engine.runs r) r
	 WHERE CASE WHEN r.status = 'waiting'
				THEN queue_engine.upgrade_refuse_waiting(r.run_id) ELSE true END),
ready AS (
	INSERT INTO queue_engine.ready_0
	SELECT run_id, run_at, queue_id, policy_id, priority, payload,
		   CASE WHEN NOT key_in_meta THEN concurrency_key END, meta
	  FROM moving WHERE status = 'queued' ORDER BY run_id),
delayed AS (
	INSERT INTO queue_engine.delayed_0
	SELECT run_id, run_at, queue_id, policy_id, priority, payload, concurrency_key, meta
	  FROM moving WHERE status = 'delayed' ORDER BY run_id),
executing AS (
	INSERT INTO queue_engine.executing_0
	SELECT run_id, run_at, started_at, lease_expires_at, coalesce(attempt_lease, lease),
		   queue_id, policy_id, priority, attempt, queue_slot, payload, concurrency_key,
		   worker, meta
	  FROM moving WHERE status = 'executing' ORDER BY run_id)
INSERT INTO queue_engine.finished_runs
SELECT run_id, coalesce(finished_at, now()), run_at, started_at, queue_id, policy_id,
	   priority, attempt, status, payload, output, concurrency_key, worker, meta
  FROM moving WHERE status IN ('completed', 'failed', 'canceled', 'expired')
 ORDER BY finished_at, run_id;
DROP FUNCTION queue_engine.upgrade_refuse_waiting(bigint);

-- queue_stats, as in 0.1.1 (counts from queue_counts and the deltas), the
-- oldest startable run read from the ready order indexes.
CREATE OR REPLACE VIEW queue_engine.queue_stats WITH (security_barrier) AS
SELECT t.tenant,
	   q.queue,
	   q.paused,
	   q.concurrency_limit,
	   (c.queued + coalesce(d.queued, 0))::bigint AS queued,
	   (c.delayed + coalesce(d.delayed, 0))::bigint AS delayed,
	   (c.executing + coalesce(d.executing, 0))::bigint AS executing,
	   (c.waiting + coalesce(d.waiting, 0))::bigint AS waiting,
	   least(o.oldest_queued, dd.oldest_due) AS oldest_queued_at
  FROM queue_engine.queues q
  JOIN queue_engine.tenants t ON t.tenant_id = q.tenant_id
  JOIN queue_engine.queue_counts c ON c.queue_id = q.queue_id
  LEFT JOIN (SELECT queue_id,
					sum(queued) AS queued, sum(delayed) AS delayed,
					sum(executing) AS executing, sum(waiting) AS waiting
			   FROM queue_engine.queue_count_deltas
			  GROUP BY queue_id) d ON d.queue_id = q.queue_id
  -- Earliest run_at among startable runs: one index probe per distinct
  -- priority of the queue's ready runs in the order index (a loose index
  -- scan), and for a queue with a per-key limit one per distinct key and
  -- priority of its keyed runs; plus the delayed runs already due
  -- (maintenance keeps those few).
  CROSS JOIN LATERAL (
	WITH RECURSIVE heads AS (
		(SELECT r.priority, r.run_at FROM queue_engine.ready r
		  WHERE r.queue_id = q.queue_id AND r.concurrency_key IS NULL
			AND ((r.meta).attempt IS NOT NULL OR (r.meta).expires_at IS NULL OR (r.meta).expires_at > now())
		  ORDER BY r.priority DESC, r.run_at LIMIT 1)
		UNION ALL
		SELECT n.priority, n.run_at
		  FROM heads h
		 CROSS JOIN LATERAL (
			SELECT r.priority, r.run_at FROM queue_engine.ready r
			 WHERE r.queue_id = q.queue_id AND r.concurrency_key IS NULL AND r.priority < h.priority
			   AND ((r.meta).attempt IS NOT NULL OR (r.meta).expires_at IS NULL OR (r.meta).expires_at > now())
			 ORDER BY r.priority DESC, r.run_at LIMIT 1) n
	),
	keyed_heads AS (
		(SELECT r.concurrency_key AS k, r.priority, r.run_at FROM queue_engine.ready r
		  WHERE q.key_concurrency_limit IS NOT NULL
			AND r.queue_id = q.queue_id AND r.concurrency_key IS NOT NULL
			AND ((r.meta).attempt IS NOT NULL OR (r.meta).expires_at IS NULL OR (r.meta).expires_at > now())
		  ORDER BY r.concurrency_key, r.priority DESC, r.run_at LIMIT 1)
		UNION ALL
		SELECT n.k, n.priority, n.run_at
		  FROM keyed_heads h
		 CROSS JOIN LATERAL (
			-- the key's next priority, else the next key
			(SELECT r.concurrency_key AS k, r.priority, r.run_at FROM queue_engine.ready r
			  WHERE r.queue_id = q.queue_id AND r.concurrency_key = h.k AND r.priority < h.priority
				AND ((r.meta).attempt IS NOT NULL OR (r.meta).expires_at IS NULL OR (r.meta).expires_at > now())
			  ORDER BY r.concurrency_key, r.priority DESC, r.run_at LIMIT 1)
			UNION ALL
			(SELECT r.concurrency_key, r.priority, r.run_at FROM queue_engine.ready r
			  WHERE r.queue_id = q.queue_id AND r.concurrency_key > h.k
				AND ((r.meta).attempt IS NOT NULL OR (r.meta).expires_at IS NULL OR (r.meta).expires_at > now())
			  ORDER BY r.concurrency_key, r.priority DESC, r.run_at LIMIT 1)
			LIMIT 1) n
	)
	SELECT least((SELECT min(run_at) FROM heads),
				 (SELECT min(run_at) FROM keyed_heads)) AS oldest_queued
  ) o
  -- Delayed runs already due, per queue, in one pass over them (delayed
  -- has no queue index: a probe per queue read every due run of every
  -- queue, a second at 10,000 queues when maintenance lagged).
  LEFT JOIN (SELECT r.queue_id, min(r.run_at) AS oldest_due
			   FROM queue_engine.delayed r
			  WHERE r.run_at <= now()
				AND ((r.meta).attempt IS NOT NULL OR (r.meta).expires_at IS NULL OR (r.meta).expires_at > now())
			  GROUP BY r.queue_id) dd ON dd.queue_id = q.queue_id
 WHERE q.dropped_at IS NULL
   -- NULL: every tenant.  A sub-select, so evaluated once per query.
   AND coalesce(q.tenant_id = ANY ((SELECT queue_engine.access_tenants('reader'))::int[]), true);

-- The 0.1 table goes; its sequence stays (pg_dump keeps copying it), and
-- what was granted on the table is granted on the view that replaces it.
SELECT pg_catalog.set_config('qe_upgrade.runs_acl',
							 coalesce((SELECT relacl FROM pg_catalog.pg_class
									 WHERE oid = 'queue_engine.runs'::pg_catalog.regclass), '{}')::text,
							 true);
ALTER SEQUENCE queue_engine.runs_run_id_seq OWNED BY NONE;
-- (out of the extension first, which also takes it off the tables that
-- pg_dump copies the rows of)
ALTER EXTENSION queue_engine DROP TABLE queue_engine.runs;
DROP TABLE queue_engine.runs;

-- Every run, with 0.1's columns.
CREATE VIEW queue_engine.runs AS
SELECT u.run_id, u.queue_id, q.tenant_id, u.status, u.attempt,
	   coalesce((u.meta).max_attempts, p.max_attempts) AS max_attempts,
	   u.priority, u.run_at, (u.meta).expires_at, u.lease_expires_at,
	   coalesce((u.meta).lease, p.lease) AS lease, u.attempt_lease, u.queue_slot,
	   coalesce((u.meta).created_at, u.run_at) AS created_at, u.started_at,
	   u.finished_at, coalesce(u.concurrency_key, (u.meta).concurrency_key) AS concurrency_key,
	   u.worker, (u.meta).idempotency_key,
	   (u.meta).parent_run_id, (u.meta).tags, u.payload,
	   (u.meta).last_error, u.output
  FROM (SELECT r.run_id, r.queue_id, r.policy_id, 'queued'::queue_engine.run_status AS status,
			   coalesce((r.meta).attempt, 0) AS attempt, r.priority, r.run_at,
			   NULL::timestamptz AS lease_expires_at, NULL::interval AS attempt_lease,
			   NULL::int AS queue_slot, (r.meta).started_at, NULL::timestamptz AS finished_at,
			   r.concurrency_key, (r.meta).worker, r.payload, NULL::jsonb AS output, r.meta
		  FROM queue_engine.ready r
		UNION ALL
		SELECT r.run_id, r.queue_id, r.policy_id, 'delayed', coalesce((r.meta).attempt, 0),
			   r.priority, r.run_at, NULL, NULL, NULL, (r.meta).started_at, NULL,
			   r.concurrency_key, (r.meta).worker, r.payload, NULL, r.meta
		  FROM queue_engine.delayed r
		UNION ALL
		SELECT e.run_id, e.queue_id, e.policy_id, 'executing', e.attempt, e.priority,
			   e.run_at, e.lease_expires_at, e.attempt_lease, e.queue_slot, e.started_at,
			   NULL, e.concurrency_key, e.worker, e.payload, NULL, e.meta
		  FROM queue_engine.executing e
		UNION ALL
		SELECT w.run_id, w.queue_id, w.policy_id, 'waiting', w.attempt, w.priority,
			   w.run_at, NULL, NULL, NULL, w.started_at, NULL, w.concurrency_key, w.worker,
			   w.payload, NULL, w.meta
		  FROM queue_engine.waiting_runs w
		UNION ALL
		SELECT f.run_id, f.queue_id, f.policy_id, f.status, f.attempt, f.priority,
			   f.run_at, NULL, NULL, NULL, f.started_at, f.finished_at,
			   f.concurrency_key, f.worker, f.payload, f.output, f.meta
		  FROM queue_engine.finished_runs f) u
  LEFT JOIN queue_engine.queues q ON q.queue_id = u.queue_id
  LEFT JOIN queue_engine.queue_policies p ON p.policy_id = u.policy_id;

-- A change made to the view by hand: the row leaves the table it is in
-- and is written, changed, to the table of its (new) status, keeping its
-- policy unless max_attempts or lease were changed.  The engine's own
-- functions never come here: they move rows between the tables directly.
-- Count deltas and hints are not written (as for 0.1's changes by hand):
-- check_consistency repairs the counts, and a claim that finds nothing
-- after its hint also looks from the queue's start.
CREATE FUNCTION queue_engine.runs_change()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- every row by an index: never by reading a whole segment for each row
SET enable_seqscan = off
SET jit = off
AS $$
DECLARE
	old_policy int;
	p queue_engine.queue_policies;
	m queue_engine.run_meta;
	key_in_meta boolean;
	seg text;
BEGIN
	IF TG_OP <> 'INSERT' THEN
		-- By an index that names the row: ready and delayed have no btree
		-- on run_id (their BRIN cannot find a row once rows were moved by
		-- hand), but their order indexes end in run_id.
		-- Rotation may carry a ready or delayed row to the other segment
		-- (a delete and an insert) while this waits for its lock: then the
		-- row is gone, and the next statement (a new snapshot) finds the
		-- carried copy.  A row not found again was claimed, promoted or
		-- finished meanwhile: the change does not apply to it.
		FOR attempt IN 1 .. 3 LOOP
			IF OLD.status = 'queued' THEN
				-- in the order index, or (a key-limited queue's keyed run) by key
				DELETE FROM queue_engine.ready r
				 WHERE r.queue_id = OLD.queue_id AND r.priority = OLD.priority
				   AND r.run_at = OLD.run_at AND r.run_id = OLD.run_id
				   AND r.concurrency_key IS NULL
				RETURNING r.policy_id INTO old_policy;
				IF old_policy IS NULL AND OLD.concurrency_key IS NOT NULL THEN
					DELETE FROM queue_engine.ready r
					 WHERE r.queue_id = OLD.queue_id AND r.concurrency_key = OLD.concurrency_key
					   AND r.priority = OLD.priority AND r.run_at = OLD.run_at
					   AND r.run_id = OLD.run_id
					RETURNING r.policy_id INTO old_policy;
				END IF;
			ELSIF OLD.status = 'delayed' THEN
				DELETE FROM queue_engine.delayed r
				 WHERE r.run_at = OLD.run_at AND r.run_id = OLD.run_id
				RETURNING r.policy_id INTO old_policy;
			ELSIF OLD.status = 'executing' THEN
				DELETE FROM queue_engine.executing r WHERE r.run_id = OLD.run_id
				RETURNING r.policy_id INTO old_policy;
			ELSIF OLD.status = 'waiting' THEN
				DELETE FROM queue_engine.waiting_runs r WHERE r.run_id = OLD.run_id
				RETURNING r.policy_id INTO old_policy;
			ELSE
				DELETE FROM queue_engine.finished_runs r WHERE r.run_id = OLD.run_id
				RETURNING r.policy_id INTO old_policy;
			END IF;
			EXIT WHEN old_policy IS NOT NULL;
		END LOOP;
		IF old_policy IS NULL THEN
			RETURN NULL;		-- gone meanwhile: the change does not apply
		END IF;
		IF TG_OP = 'DELETE' THEN
			RETURN OLD;
		END IF;
	END IF;
	IF NEW.status = 'waiting' THEN
		RAISE EXCEPTION 'runs cannot be made waiting by hand'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = format('Run %s was given status %s.', NEW.run_id, NEW.status);
	END IF;
	SELECT * INTO p FROM queue_engine.queue_policies WHERE policy_id = old_policy;
	IF NOT FOUND OR p.max_attempts IS DISTINCT FROM NEW.max_attempts
	   OR p.lease IS DISTINCT FROM NEW.lease THEN
		SELECT pp.* INTO p FROM queue_engine.queues q
		  JOIN queue_engine.queue_policies pp ON pp.policy_id = q.policy_id
		 WHERE q.queue_id = NEW.queue_id;
	END IF;
	IF p.policy_id IS NULL THEN
		RAISE EXCEPTION 'queue % does not exist', NEW.queue_id
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'A run must belong to a queue of queue_engine.queues.';
	END IF;
	-- A queued run's key goes to meta when its queue has no per-key limit.
	key_in_meta := NEW.status = 'queued' AND NEW.concurrency_key IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM queue_engine.queues q
						 WHERE q.queue_id = NEW.queue_id AND q.key_concurrency_limit IS NOT NULL);
	m := ROW(CASE WHEN NEW.status IN ('queued', 'delayed') THEN nullif(NEW.attempt, 0) END,
			 nullif(NEW.created_at, NEW.run_at), NEW.expires_at,
			 CASE WHEN NEW.status IN ('queued', 'delayed') THEN NEW.started_at END,
			 CASE WHEN NEW.status IN ('queued', 'delayed') THEN NEW.worker END,
			 NEW.idempotency_key, NEW.tags, NEW.parent_run_id,
			 nullif(NEW.max_attempts, p.max_attempts), nullif(NEW.lease, p.lease),
			 NEW.last_error, CASE WHEN key_in_meta THEN NEW.concurrency_key END, NULL);
	m := queue_engine.run_meta_or_null(m);
	IF NEW.status IN ('queued', 'delayed') THEN
		seg := CASE WHEN NEW.status = 'queued' THEN 'ready' ELSE 'delayed' END;
		EXECUTE format('INSERT INTO queue_engine.%I VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
					   seg || '_' || queue_engine.current_segment(seg))
		  USING NEW.run_id, NEW.run_at, NEW.queue_id, p.policy_id, NEW.priority,
				NEW.payload, CASE WHEN NOT key_in_meta THEN NEW.concurrency_key END, m;
	ELSIF NEW.status = 'executing' THEN
		EXECUTE format('INSERT INTO queue_engine.%I VALUES ($1, $2, $3, $4, $5, $6, $7, $8,'
					   ' $9, $10, $11, $12, $13, $14)',
					   'executing_' || queue_engine.current_segment('executing'))
		  USING NEW.run_id, NEW.run_at, coalesce(NEW.started_at, now()),
				coalesce(NEW.lease_expires_at, now() + NEW.lease),
				coalesce(NEW.attempt_lease, NEW.lease), NEW.queue_id, p.policy_id,
				NEW.priority, NEW.attempt, NEW.queue_slot, NEW.payload,
				NEW.concurrency_key, NEW.worker, m;
	ELSE
		INSERT INTO queue_engine.finished_runs
		VALUES (NEW.run_id, coalesce(NEW.finished_at, now()), NEW.run_at, NEW.started_at,
				NEW.queue_id, p.policy_id, NEW.priority, NEW.attempt, NEW.status,
				NEW.payload, NEW.output, NEW.concurrency_key, NEW.worker, m);
	END IF;
	RETURN NEW;
END;
$$;
CREATE TRIGGER runs_change
	INSTEAD OF INSERT OR UPDATE OR DELETE ON queue_engine.runs
	FOR EACH ROW EXECUTE FUNCTION queue_engine.runs_change();

-- A queue row locked for a change (alter_queue, pause_queue,
-- resume_queue, drop_queue) is locked after the queue's name lock, taken
-- exclusive: the order drop_queue always had, and the one the trigger
-- below needs (it takes the name lock to move keys, which after the row
-- lock would deadlock with a drop_queue that holds the name and waits for
-- the row).  So these changes also wait for the enqueues into the queue
-- in flight, and hold new ones until they commit.
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
		PERFORM queue_engine.lock_queue_name(queue);
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

-- Setting or clearing a queue's per-key limit moves the keys of its
-- queued runs between ready's concurrency_key column and meta (src/README.md,
-- "Keys"), by the API or by hand.
CREATE FUNCTION queue_engine.move_concurrency_keys()
RETURNS trigger
AS 'MODULE_PATHNAME', 'qe_move_concurrency_keys'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER queues_key_placement
	AFTER UPDATE OF key_concurrency_limit ON queue_engine.queues
	FOR EACH ROW
	WHEN ((OLD.key_concurrency_limit IS NULL) <> (NEW.key_concurrency_limit IS NULL))
	EXECUTE FUNCTION queue_engine.move_concurrency_keys();

DO $$
DECLARE
	g record;
BEGIN
	FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable
			   FROM pg_catalog.aclexplode(pg_catalog.current_setting('qe_upgrade.runs_acl')::pg_catalog.aclitem[]) a
			  WHERE a.grantee <> (SELECT relowner FROM pg_catalog.pg_class
								   WHERE oid = 'queue_engine.runs'::pg_catalog.regclass) LOOP
		EXECUTE pg_catalog.format('GRANT %s ON queue_engine.runs TO %s%s', g.privilege_type,
								  CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
								  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
	END LOOP;
END;
$$;

-- pg_dump copies the rows of all of them (the parents hold none).
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queue_policies', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queue_policies_policy_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.finished_runs', '');
DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['ready', 'ready_0', 'ready_1', 'delayed', 'delayed_0', 'delayed_1',
							 'executing', 'executing_0', 'executing_1'] LOOP
		PERFORM pg_catalog.pg_extension_config_dump(('queue_engine.' || t)::regclass, '');
	END LOOP;
END;
$$;

-- The moved runs' BRIN ranges, summarized now rather than at the next
-- autosummarize.
SELECT pg_catalog.brin_summarize_new_values(i)
  FROM unnest(ARRAY['queue_engine.ready_0_id', 'queue_engine.delayed_0_id']::regclass[]) i;

---------------------------------------------------------------------------
-- Section 3: rotation of the segments (src/rotation.c).
--
-- A background task like the others (in run_maintenance and the worker's
-- passes), callable on its own: carries the live rows of the segment of
-- each family that writers are not using to the current one, empties it
-- with TRUNCATE, and switches the current segment once it is large and
-- mostly dead rows.
---------------------------------------------------------------------------

CREATE FUNCTION queue_engine.rotate_segments(batch_size int DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_rotate_segments'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Internal: dequeue(NULL)'s queue walk passes a queue marked (in shared
-- memory) at its limit by this filter, before probing it for a queued
-- run.  No SET clause: it runs once per limited queue walked, and runs no
-- query.
CREATE FUNCTION queue_engine.queue_at_limit_marked(queue_id int, concurrency_limit int)
RETURNS boolean
AS 'MODULE_PATHNAME', 'qe_queue_at_limit_marked'
LANGUAGE C VOLATILE;

---------------------------------------------------------------------------
-- Section 4: the hot path's functions without a SET clause.
--
-- A SET clause costs a GUC nest level and a parse of the value at every
-- call, about 9 % of an enqueue's instructions, while these functions' usual
-- path runs no SQL statement at all.  The library pins search_path itself
-- (to the same pg_catalog, pg_temp) around every statement it parses or
-- runs (src/spi_util.c, qe_pin_search_path), so what the clause guarded
-- stays guarded; pgTAP 12_search_path calls each of them under a hostile
-- search_path to show it.
---------------------------------------------------------------------------

ALTER FUNCTION queue_engine.dequeue(text[], int, interval, text) RESET search_path;
ALTER FUNCTION queue_engine.heartbeat(bigint, int, interval) RESET search_path;
ALTER FUNCTION queue_engine.complete(bigint, jsonb, int) RESET search_path;
ALTER FUNCTION queue_engine.complete_batch(bigint[], jsonb[], int[]) RESET search_path;
ALTER FUNCTION queue_engine.fail(bigint, jsonb, int, interval, boolean) RESET search_path;

---------------------------------------------------------------------------
-- Section 5: waits, events, children and durable steps (src/waits.c,
-- src/steps.c; the tables are made with the families above).
---------------------------------------------------------------------------

-- Who may call the enqueue functions now, for the new ones (below).
SELECT pg_catalog.set_config('qe_upgrade.enqueue_acl', coalesce(p.proacl::text, ''), true)
  FROM pg_catalog.pg_proc p
 WHERE p.oid = 'queue_engine.enqueue(text, jsonb, text, int, timestamptz, interval, interval, int, text, interval, text[], bigint)'::pg_catalog.regprocedure;
SELECT pg_catalog.set_config('qe_upgrade.enqueue_batch_acl', coalesce(p.proacl::text, ''), true)
  FROM pg_catalog.pg_proc p
 WHERE p.oid = 'queue_engine.enqueue_batch(text, jsonb[], text, int, timestamptz, interval, interval, int, text[], bigint)'::pg_catalog.regprocedure;

DROP FUNCTION queue_engine.enqueue(text, jsonb, text, int, timestamptz, interval, interval, int,
								   text, interval, text[], bigint);
DROP FUNCTION queue_engine.enqueue_batch(text, jsonb[], text, int, timestamptz, interval, interval,
										 int, text[], bigint);

-- (no SET clause: Section 4)
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
	parent_run_id bigint DEFAULT NULL,
	cancel_on jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_enqueue'
LANGUAGE C VOLATILE SECURITY DEFINER;

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
	parent_run_id bigint DEFAULT NULL,
	cancel_on jsonb DEFAULT NULL)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'qe_enqueue_batch'
LANGUAGE C VOLATILE SECURITY DEFINER;

CREATE FUNCTION queue_engine.wait_for_event(
	run_id bigint,
	attempt int,
	event text,
	match jsonb DEFAULT NULL,
	condition jsonpath DEFAULT NULL,
	timeout interval DEFAULT NULL,
	lookback interval DEFAULT NULL)
RETURNS queue_engine.run_status
AS 'MODULE_PATHNAME', 'qe_wait_for_event'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.send_event(
	event text,
	data jsonb DEFAULT '{}',
	tenant text DEFAULT 'default',
	idempotency_key text DEFAULT NULL)
RETURNS TABLE (event_id bigint, woken bigint, canceled bigint)
AS 'MODULE_PATHNAME', 'qe_send_event'
LANGUAGE C VOLATILE SECURITY DEFINER ROWS 1
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.sleep(
	run_id bigint,
	attempt int,
	until timestamptz DEFAULT NULL,
	duration interval DEFAULT NULL)
RETURNS queue_engine.run_status
AS 'MODULE_PATHNAME', 'qe_sleep'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.wait_for_children(
	run_id bigint,
	attempt int,
	timeout interval DEFAULT NULL)
RETURNS queue_engine.run_status
AS 'MODULE_PATHNAME', 'qe_wait_for_children'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.child_runs(
	run_id bigint,
	after_run_id bigint DEFAULT NULL,
	page_size int DEFAULT 100)
RETURNS TABLE (run_id bigint, status queue_engine.run_status, output jsonb,
			   last_error jsonb, finished_at timestamptz)
AS 'MODULE_PATHNAME', 'qe_child_runs'
LANGUAGE C VOLATILE SECURITY DEFINER ROWS 100
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.save_step(
	run_id bigint,
	attempt int,
	step text,
	result jsonb DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'qe_save_step'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.get_steps(run_id bigint)
RETURNS TABLE (step text, result jsonb, saved_at timestamptz)
AS 'MODULE_PATHNAME', 'qe_get_steps'
LANGUAGE C VOLATILE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, pg_temp;

-- Background tasks of their own (also in run_maintenance and the worker).
CREATE FUNCTION queue_engine.wake_waits(batch_size int DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_wake_waits'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION queue_engine.prune_events(batch_size int DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'qe_prune_events'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- get_run gains waiting_for: what a waiting run waits for, NULL otherwise.
ALTER TYPE queue_engine.run_info ADD ATTRIBUTE waiting_for jsonb;

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
		   r.last_error, r.output, r.tags, r.parent_run_id, r.idempotency_key,
		   CASE WHEN r.status = 'waiting' THEN
				(SELECT CASE w.kind
							WHEN 'event' THEN jsonb_build_object(
								'kind', w.kind, 'event', w.event,
								'match', coalesce(w.match, '{}'::jsonb),
								'condition', w.condition::text,
								'timeout_at', w.wake_at, 'since', w.since)
							WHEN 'sleep' THEN jsonb_build_object(
								'kind', w.kind, 'until', w.wake_at, 'since', w.since)
							ELSE jsonb_build_object(
								'kind', w.kind, 'timeout_at', w.wake_at, 'since', w.since) END
				   FROM queue_engine.waiting_runs w WHERE w.run_id = r.run_id) END
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

-- The privileges an access needs, with 0.2's functions.
CREATE OR REPLACE FUNCTION queue_engine.access_privileges(access text, every_tenant boolean)
RETURNS text[] LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT ARRAY['SCHEMA queue_engine',
			 'TABLE queue_engine.queue_stats',
			 'FUNCTION queue_engine.get_run(bigint)',
			 'FUNCTION queue_engine.child_runs(bigint, bigint, int)',
			 'FUNCTION queue_engine.get_steps(bigint)',
			 'FUNCTION queue_engine.list_runs(text, text, queue_engine.run_status[], text, timestamptz, timestamptz, jsonb, text, int)',
			 'FUNCTION queue_engine.metrics()',
			 'FUNCTION queue_engine.access_tenants(text)']
	|| CASE WHEN every_tenant THEN ARRAY['TABLE queue_engine.consistency_log'] ELSE '{}' END
	|| CASE WHEN access IN ('producer', 'admin') THEN ARRAY[
			 'FUNCTION queue_engine.enqueue(text, jsonb, text, int, timestamptz, interval, interval, int, text, interval, text[], bigint, jsonb)',
			 'FUNCTION queue_engine.enqueue_batch(text, jsonb[], text, int, timestamptz, interval, interval, int, text[], bigint, jsonb)',
			 'FUNCTION queue_engine.send_event(text, jsonb, text, text)',
			 'FUNCTION queue_engine.cancel(bigint, text)'] ELSE '{}' END
	|| CASE WHEN access IN ('worker', 'admin') THEN ARRAY[
			 'FUNCTION queue_engine.dequeue(text[], int, interval, text, interval)',
			 'FUNCTION queue_engine.heartbeat(bigint, int, interval)',
			 'FUNCTION queue_engine.complete(bigint, jsonb, int)',
			 'FUNCTION queue_engine.complete_batch(bigint[], jsonb[], int[])',
			 'FUNCTION queue_engine.fail(bigint, jsonb, int, interval, boolean)',
			 'FUNCTION queue_engine.wait_for_event(bigint, int, text, jsonb, jsonpath, interval, interval)',
			 'FUNCTION queue_engine.sleep(bigint, int, timestamptz, interval)',
			 'FUNCTION queue_engine.wait_for_children(bigint, int, interval)',
			 'FUNCTION queue_engine.save_step(bigint, int, text, jsonb)'] ELSE '{}' END
	|| CASE WHEN access = 'admin' THEN ARRAY[
			 'FUNCTION queue_engine.create_queue(text, text, int, int, int, interval, interval, interval, interval)',
			 'FUNCTION queue_engine.alter_queue(text, int, int, int, interval, interval, interval, interval, text[])',
			 'FUNCTION queue_engine.pause_queue(text)',
			 'FUNCTION queue_engine.resume_queue(text)',
			 'FUNCTION queue_engine.drop_queue(text, boolean)',
			 'FUNCTION queue_engine.set_tenant_limit(text, int)'] ELSE '{}' END;
$$;

SELECT pg_catalog.pg_extension_config_dump('queue_engine.waiting_runs', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.events', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.cancel_rules', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.run_steps', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.run_steps_seq', '');

---------------------------------------------------------------------------
-- Section 6: reading runs (list_runs), metrics, and waiting for work.
---------------------------------------------------------------------------

-- The history in list_runs' order (newest first: a run's created_at, then
-- run_id), per status, and per queue and status, so that a page of any
-- one filter is the head of a few ordered index scans whatever the size of
-- the history.  A run's created_at is coalesce((meta).created_at, run_at)
-- (meta keeps it only when it differs from run_at); list_runs writes the
-- expression exactly so, which is what lets the planner use these indexes.
-- finished_runs_queue (queue_id) is replaced by the wider one, which serves
-- its readers (a dropped queue's runs, by queue_id) as well.
DROP INDEX queue_engine.finished_runs_queue;
CREATE INDEX finished_runs_queue ON queue_engine.finished_runs
	(queue_id, status, (coalesce((meta).created_at, run_at)), run_id);
CREATE INDEX finished_runs_created ON queue_engine.finished_runs
	(status, (coalesce((meta).created_at, run_at)), run_id);

-- A tagged run's tags in list_runs' order: one row per tag, written by
-- enqueue (src/enqueue.c) and deleted by retention with the run
-- (src/maintenance.c), so that a page filtered by tag reads its page, not
-- every run with that tag.  Untagged runs cost nothing here.
CREATE TABLE queue_engine.run_tags (
	tag					text NOT NULL,
	created_at			timestamptz NOT NULL,
	run_id				bigint NOT NULL
);
CREATE INDEX run_tags_order ON queue_engine.run_tags (tag, created_at, run_id);
INSERT INTO queue_engine.run_tags (tag, created_at, run_id)
SELECT DISTINCT t.tag, r.created_at, r.run_id
  FROM queue_engine.runs r, unnest(r.tags) AS t(tag)
 WHERE t.tag IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('queue_engine.run_tags', '');

-- list_runs: see README "Listing runs".  A page is read in rounds: each
-- round takes the next k candidates in the list's order from the source
-- the filters choose (the tag's rows; else, per queue of the queue or
-- tenant filter, or per status without one, the history's index; plus the
-- unfinished runs of the statuses asked for) and keeps those that pass the
-- filters the source did not apply.  A page whose filters the source
-- applies entirely is one round of page_size candidates.  A round stops
-- the page at page_size rows; after queue_engine.list_runs_max_scan
-- candidates without a full page, the page ends with a continuation row
-- (every column NULL but cursor).
CREATE FUNCTION queue_engine.list_runs_page(
	in_queue text, in_tenant text, in_status queue_engine.run_status[], in_tag text,
	in_created_after timestamptz, in_created_before timestamptz,
	in_payload_contains jsonb, in_after text, in_page_size int)
RETURNS TABLE(run_id bigint, queue text, tenant text, status queue_engine.run_status,
			  attempt int, priority int, concurrency_key text, tags text[],
			  created_at timestamptz, started_at timestamptz, finished_at timestamptz,
			  cursor text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	-- the columns every source yields, in this order
	cols constant text :=
		'x.run_id, x.queue_id, %s::queue_engine.run_status AS status, %s AS attempt, x.priority,'
		' %s AS concurrency_key, (x.meta).tags AS tags,'
		' coalesce((x.meta).created_at, x.run_at) AS created_at, %s AS started_at,'
		' %s AS finished_at, x.payload';
	-- after the cursor ($3, $4) and from created_after ($5), newest first, k ($6) of them
	bounds constant text :=
		' (coalesce((x.meta).created_at, x.run_at), x.run_id) < ($3, $4)'
		' AND coalesce((x.meta).created_at, x.run_at) >= $5';
	head constant text :=
		' ORDER BY coalesce((x.meta).created_at, x.run_at) DESC, x.run_id DESC LIMIT $6';
	allowed int[];
	queue_ids int[];
	statuses queue_engine.run_status[];
	finished queue_engine.run_status[];
	max_scan int;
	k int;
	upper_at timestamptz := 'infinity';
	upper_id bigint := 0;
	lower_at timestamptz := coalesce(in_created_after, '-infinity');
	places text[] := '{}';
	pending_where text;
	-- a place's rows (c) as a source's: the key first, and whether it passes
	wrap constant text :=
		'SELECT c.run_id, c.created_at, c.queue_id, c.status, c.attempt, c.priority,'
		' c.concurrency_key, c.tags, c.started_at, c.finished_at, %2$s AS passes'
		' FROM (%1$s) c';
	payload_passes constant text := '($8 IS NULL OR c.payload @> $8)';
	source text;
	round_sql text;
	c record;
	got int;
	scanned int := 0;
	listed int := 0;
	post_filter boolean;
BEGIN
	IF in_page_size IS NULL THEN
		RAISE EXCEPTION 'page_size must not be null'
			USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit page_size for pages of 50 runs.';
	END IF;
	IF in_page_size < 1 OR in_page_size > 1000 THEN
		RAISE EXCEPTION 'page_size must be between 1 and 1000, not %', in_page_size
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Read more runs with more pages: pass the last row''s cursor as after.';
	END IF;
	IF array_position(in_status, NULL) IS NOT NULL THEN
		RAISE EXCEPTION 'status must not contain nulls'
			USING ERRCODE = 'null_value_not_allowed', DETAIL = format('status is %s.', in_status),
				  HINT = 'Leave nulls out, or pass NULL instead of the array for every status.';
	END IF;
	IF in_after IS NOT NULL THEN
		IF in_after !~ '^r[0-9a-f]{32}$' THEN
			RAISE EXCEPTION 'invalid cursor "%"', in_after
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Pass as after the cursor column of a row list_runs returned, unchanged.';
		END IF;
		upper_id := ('x' || substr(in_after, 18, 16))::bit(64)::bigint;
		upper_at := timestamptz 'epoch'
			+ (('x' || substr(in_after, 2, 16))::bit(64)::bigint / 1000000) * interval '1 second'
			+ (('x' || substr(in_after, 2, 16))::bit(64)::bigint % 1000000) * interval '1 microsecond';
	END IF;
	-- in_created_before is an upper bound of the same key: (in_created_before, -1)
	-- comes before every run created at in_created_before (run ids are positive)
	IF in_created_before IS NOT NULL AND (in_created_before, -1::bigint) < (upper_at, upper_id) THEN
		upper_at := in_created_before;
		upper_id := -1;
	END IF;
	max_scan := greatest(coalesce(nullif(current_setting('queue_engine.list_runs_max_scan', true), '')::int, 10000), 1);

	-- Another tenant's runs, queues and tenants are, to a tenant-scoped
	-- role, none at all (as for get_run).
	allowed := queue_engine.access_tenants('reader');
	IF in_tenant IS NOT NULL THEN
		SELECT array_agg(q.queue_id ORDER BY q.queue_id) INTO queue_ids
		  FROM queue_engine.tenants t
		  LEFT JOIN queue_engine.queues q ON q.tenant_id = t.tenant_id
		 WHERE t.tenant = in_tenant AND (allowed IS NULL OR t.tenant_id = ANY (allowed))
		   AND (in_queue IS NULL OR q.queue = in_queue);
		IF NOT FOUND OR queue_ids IS NULL THEN
			IF NOT EXISTS (SELECT 1 FROM queue_engine.tenants t WHERE t.tenant = in_tenant
							 AND (allowed IS NULL OR t.tenant_id = ANY (allowed))) THEN
				RAISE EXCEPTION 'tenant "%" does not exist', in_tenant
					USING ERRCODE = 'undefined_object', HINT = 'Pass the name of a tenant that has queues.';
			END IF;
			IF in_queue IS NOT NULL THEN
				RAISE EXCEPTION 'queue "%" does not exist', in_queue
					USING ERRCODE = 'undefined_object', DETAIL = format('Tenant "%s" has no queue of that name.', in_tenant),
						  HINT = 'Check the queue''s name and tenant in queue_stats.';
			END IF;
		END IF;
		queue_ids := array_remove(queue_ids, NULL);
	ELSIF in_queue IS NOT NULL THEN
		SELECT array_agg(q.queue_id ORDER BY q.queue_id) INTO queue_ids
		  FROM queue_engine.queues q
		 WHERE q.queue = in_queue AND (allowed IS NULL OR q.tenant_id = ANY (allowed));
		IF queue_ids IS NULL THEN
			RAISE EXCEPTION 'queue "%" does not exist', in_queue
				USING ERRCODE = 'undefined_object', HINT = 'Check the queue''s name in queue_stats.';
		END IF;
	ELSIF allowed IS NOT NULL THEN
		SELECT coalesce(array_agg(q.queue_id ORDER BY q.queue_id), '{}') INTO queue_ids
		  FROM queue_engine.queues q WHERE q.tenant_id = ANY (allowed);
	END IF;

	IF queue_ids = '{}' THEN
		RETURN;					-- a tenant without queues
	END IF;
	statuses := coalesce(in_status, enum_range(NULL::queue_engine.run_status));
	SELECT coalesce(array_agg(DISTINCT s), '{}') INTO finished FROM unnest(statuses) s
	 WHERE s::text IN ('completed', 'failed', 'canceled', 'expired');

	-- The source: candidates ordered by (created_at, run_id) descending,
	-- after the bound, k ($6) of them, each with whether it passes the
	-- filters its place did not apply.  Every place yields the same
	-- columns (cols), wrapped as wrap says.
	pending_where := CASE WHEN queue_ids IS NOT NULL THEN 'x.queue_id = ANY ($1) AND ' ELSE '' END
		|| CASE WHEN in_tag IS NOT NULL THEN '(x.meta).tags @> ARRAY[$7] AND ' ELSE '' END;
	-- the unfinished runs (no index in this order: their number is the
	-- backlog's, not the history's); queued ones of the filtered queues by
	-- the order index (runs without a key column) and the key index
	IF 'queued' = ANY (statuses) THEN
		places := places || format(wrap, format('SELECT %s FROM queue_engine.ready x WHERE x.concurrency_key IS NULL AND %s %s %s',
			format(cols, '''queued''', 'coalesce((x.meta).attempt, 0)', '(x.meta).concurrency_key', '(x.meta).started_at', 'NULL::timestamptz'),
			pending_where, bounds, head), payload_passes);
		places := places || format(wrap, format('SELECT %s FROM queue_engine.ready x WHERE x.concurrency_key IS NOT NULL AND %s %s %s',
			format(cols, '''queued''', 'coalesce((x.meta).attempt, 0)', 'x.concurrency_key', '(x.meta).started_at', 'NULL::timestamptz'),
			pending_where, bounds, head), payload_passes);
	END IF;
	IF 'delayed' = ANY (statuses) THEN
		places := places || format(wrap, format('SELECT %s FROM queue_engine.delayed x WHERE %s %s %s',
			format(cols, '''delayed''', 'coalesce((x.meta).attempt, 0)', 'x.concurrency_key', '(x.meta).started_at', 'NULL::timestamptz'),
			pending_where, bounds, head), payload_passes);
	END IF;
	IF in_tag IS NOT NULL THEN
		-- the tag's rows, newest first, each run looked up by its run_id
		-- where a unique index has it (finished, executing, waiting); a
		-- queued or delayed run (ready and delayed have no btree on run_id)
		-- passes in its place above instead, which sorts first in the tie
		-- of the two (passes DESC)
		places := places || format(
			'SELECT t.run_id, t.created_at, c.queue_id, c.status, c.attempt, c.priority,'
			'       c.concurrency_key, c.tags, c.started_at, c.finished_at,'
			'       c.run_id IS NOT NULL AND c.status = ANY ($2)'
			'       AND ($1 IS NULL OR c.queue_id = ANY ($1)) AND %s AS passes'
			'  FROM (SELECT t.run_id, t.created_at FROM queue_engine.run_tags t'
			'         WHERE t.tag = $7 AND (t.created_at, t.run_id) < ($3, $4) AND t.created_at >= $5'
			'         ORDER BY t.created_at DESC, t.run_id DESC LIMIT $6) t'
			'  LEFT JOIN LATERAL ('
			'   SELECT %s FROM queue_engine.finished_runs x WHERE x.run_id = t.run_id'
			'   UNION ALL SELECT %s FROM queue_engine.executing x WHERE x.run_id = t.run_id'
			'   UNION ALL SELECT %s FROM queue_engine.waiting_runs x WHERE x.run_id = t.run_id) c ON true',
			payload_passes,
			format(cols, 'x.status', 'x.attempt', 'x.concurrency_key', 'x.started_at', 'x.finished_at'),
			format(cols, '''executing''', 'x.attempt', 'x.concurrency_key', 'x.started_at', 'NULL::timestamptz'),
			format(cols, '''waiting''', 'x.attempt', 'x.concurrency_key', 'x.started_at', 'NULL::timestamptz'));
		post_filter := true;
	ELSE
		-- the history: per queue and status, or per status
		IF cardinality(finished) > 0 THEN
			places := places || format(wrap, format(
				'SELECT c.* FROM %s unnest($9::queue_engine.run_status[]) s(st)'
				' CROSS JOIN LATERAL (SELECT %s FROM queue_engine.finished_runs x'
				'  WHERE %s x.status = s.st AND %s %s) c',
				CASE WHEN queue_ids IS NOT NULL THEN 'unnest($1::int[]) q(id) CROSS JOIN' ELSE '' END,
				format(cols, 'x.status', 'x.attempt', 'x.concurrency_key', 'x.started_at', 'x.finished_at'),
				CASE WHEN queue_ids IS NOT NULL THEN 'x.queue_id = q.id AND' ELSE '' END,
				bounds, head), payload_passes);
		END IF;
		IF 'executing' = ANY (statuses) THEN
			places := places || format(wrap, format('SELECT %s FROM queue_engine.executing x WHERE %s %s %s',
				format(cols, '''executing''', 'x.attempt', 'x.concurrency_key', 'x.started_at', 'NULL::timestamptz'),
				pending_where, bounds, head), payload_passes);
		END IF;
		IF 'waiting' = ANY (statuses) THEN
			places := places || format(wrap, format('SELECT %s FROM queue_engine.waiting_runs x WHERE %s %s %s',
				format(cols, '''waiting''', 'x.attempt', 'x.concurrency_key', 'x.started_at', 'NULL::timestamptz'),
				pending_where, bounds, head), payload_passes);
		END IF;
		post_filter := in_payload_contains IS NOT NULL;
	END IF;
	IF cardinality(places) = 0 THEN
		RETURN;
	END IF;
	source := '(' || array_to_string(places, ') UNION ALL (') || ')'
		' ORDER BY created_at DESC, run_id DESC, passes DESC LIMIT $6';
	round_sql := 'SELECT s.*, q.queue, tn.tenant FROM (' || source || ') s'
		' LEFT JOIN queue_engine.queues q ON q.queue_id = s.queue_id'
		' LEFT JOIN queue_engine.tenants tn ON tn.tenant_id = q.tenant_id'
		' ORDER BY s.created_at DESC, s.run_id DESC, s.passes DESC';

	-- Rounds: all of the page at once when the source applies every filter,
	-- else candidates in rounds of a few hundred, up to max_scan of them.
	k := CASE WHEN post_filter THEN least(greatest(in_page_size * 4, 200), max_scan) ELSE in_page_size END;
	LOOP
		got := 0;
		FOR c IN EXECUTE round_sql
			USING queue_ids, statuses, upper_at, upper_id, lower_at, k, in_tag,
				  in_payload_contains, finished
		LOOP
			got := got + 1;
			scanned := scanned + 1;
			upper_at := c.created_at;
			upper_id := c.run_id;
			IF c.passes THEN
				run_id := c.run_id;
				queue := c.queue;
				tenant := c.tenant;
				status := c.status;
				attempt := c.attempt;
				priority := c.priority;
				concurrency_key := c.concurrency_key;
				tags := c.tags;
				created_at := c.created_at;
				started_at := c.started_at;
				finished_at := c.finished_at;
				cursor := 'r' || lpad(to_hex((extract(epoch FROM c.created_at) * 1000000)::bigint), 16, '0')
					|| lpad(to_hex(c.run_id), 16, '0');
				RETURN NEXT;
				listed := listed + 1;
				EXIT WHEN listed = in_page_size;
			END IF;
		END LOOP;
		-- a full page, or the source has no more
		EXIT WHEN listed = in_page_size OR got < k;
		IF scanned >= max_scan THEN
			-- the bound: a continuation row, to go on from where this stopped
			run_id := NULL; queue := NULL; tenant := NULL; status := NULL; attempt := NULL;
			priority := NULL; concurrency_key := NULL; tags := NULL; created_at := NULL;
			started_at := NULL; finished_at := NULL;
			cursor := 'r' || lpad(to_hex((extract(epoch FROM upper_at) * 1000000)::bigint), 16, '0')
				|| lpad(to_hex(upper_id), 16, '0');
			RETURN NEXT;
			EXIT;
		END IF;
		k := least(k, max_scan - scanned);
	END LOOP;
END;
$fn$;

-- The function users call: list_runs_page under SPEC's names (PL/pgSQL
-- cannot take arguments named like its result columns).
CREATE FUNCTION queue_engine.list_runs(
	queue text DEFAULT NULL,
	tenant text DEFAULT NULL,
	status queue_engine.run_status[] DEFAULT NULL,
	tag text DEFAULT NULL,
	created_after timestamptz DEFAULT NULL,
	created_before timestamptz DEFAULT NULL,
	payload_contains jsonb DEFAULT NULL,
	after text DEFAULT NULL,
	page_size int DEFAULT 50)
RETURNS TABLE(run_id bigint, queue text, tenant text, status queue_engine.run_status,
			  attempt int, priority int, concurrency_key text, tags text[],
			  created_at timestamptz, started_at timestamptz, finished_at timestamptz,
			  cursor text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM queue_engine.list_runs_page($1, $2, $3, $4, $5, $6, $7, $8, $9) $$;

-- metrics(): the engine's metrics in Prometheus' text format (README
-- "Monitoring"); reads only, so it works on a hot standby.
-- (jit off: its statements read every queue, which the planner may judge
-- worth compiling at each call, a second of CPU for 10,000 queues)
CREATE FUNCTION queue_engine.metrics()
RETURNS text
AS 'MODULE_PATHNAME', 'qe_metrics'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off;

-- dequeue gains wait (SPEC "Waiting for work"): re-made, with the grants
-- of the old one (below).  No SET clause: Section 4.
SELECT pg_catalog.set_config('qe_upgrade.dequeue_acl', coalesce(p.proacl::text, ''), true)
  FROM pg_catalog.pg_proc p
 WHERE p.oid = 'queue_engine.dequeue(text[], int, interval, text)'::pg_catalog.regprocedure;
DROP FUNCTION queue_engine.dequeue(text[], int, interval, text);
CREATE FUNCTION queue_engine.dequeue(
	queues text[] DEFAULT NULL,
	max_runs int DEFAULT 1,
	lease interval DEFAULT NULL,
	worker text DEFAULT NULL,
	wait interval DEFAULT NULL)
RETURNS TABLE (
	run_id bigint, queue text, tenant text, attempt int, payload jsonb,
	concurrency_key text, priority int, lease_expires_at timestamptz,
	resume jsonb)
AS 'MODULE_PATHNAME', 'qe_dequeue'
LANGUAGE C VOLATILE SECURITY DEFINER ROWS 1;

---------------------------------------------------------------------------
-- End of sections.  Privileges: nothing new for PUBLIC.
---------------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue_engine FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA queue_engine FROM PUBLIC;

-- Roles keep what they could call: EXECUTE on the re-made enqueue
-- functions and dequeue for whoever had it on the old ones, and on each new function
-- for whoever may call its kin (send_event: enqueue; the wait functions
-- and save_step: complete; child_runs, get_steps, list_runs and metrics:
-- get_run), so the
-- update widens no role's rights.
DO $$
DECLARE
	g record;
BEGIN
	FOR g IN SELECT f.fn, a.grantee
			   FROM (VALUES ('enqueue(text, jsonb, text, int, timestamptz, interval, interval, int, text, interval, text[], bigint, jsonb)',
							 pg_catalog.current_setting('qe_upgrade.enqueue_acl')),
							('enqueue_batch(text, jsonb[], text, int, timestamptz, interval, interval, int, text[], bigint, jsonb)',
							 pg_catalog.current_setting('qe_upgrade.enqueue_batch_acl')),
							('dequeue(text[], int, interval, text, interval)',
							 pg_catalog.current_setting('qe_upgrade.dequeue_acl'))) f(fn, acl),
					LATERAL pg_catalog.aclexplode(nullif(f.acl, '')::pg_catalog.aclitem[]) a
			  WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> 0
				AND a.grantee <> (SELECT e.extowner FROM pg_catalog.pg_extension e
								   WHERE e.extname = 'queue_engine') LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION queue_engine.%s TO %s',
								  g.fn, g.grantee::regrole::text);
	END LOOP;
	FOR g IN SELECT f.fn, r.rolname
			   FROM (VALUES ('send_event(text, jsonb, text, text)', 'enqueue(text, jsonb, text, int, timestamptz, interval, interval, int, text, interval, text[], bigint, jsonb)'),
							('wait_for_event(bigint, int, text, jsonb, jsonpath, interval, interval)', 'complete(bigint, jsonb, int)'),
							('sleep(bigint, int, timestamptz, interval)', 'complete(bigint, jsonb, int)'),
							('wait_for_children(bigint, int, interval)', 'complete(bigint, jsonb, int)'),
							('save_step(bigint, int, text, jsonb)', 'complete(bigint, jsonb, int)'),
							('child_runs(bigint, bigint, int)', 'get_run(bigint)'),
							('get_steps(bigint)', 'get_run(bigint)'),
							('list_runs(text, text, queue_engine.run_status[], text, timestamptz, timestamptz, jsonb, text, int)', 'get_run(bigint)'),
							('metrics()', 'get_run(bigint)')) f(fn, kin),
					pg_catalog.pg_roles r
			  WHERE r.rolname NOT LIKE 'pg\_%' AND NOT r.rolsuper
				AND r.oid <> (SELECT e.extowner FROM pg_catalog.pg_extension e
							   WHERE e.extname = 'queue_engine')
				AND pg_catalog.has_function_privilege(r.oid, ('queue_engine.' || f.kin)::pg_catalog.regprocedure, 'EXECUTE') LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION queue_engine.%s TO %I', g.fn, g.rolname);
	END LOOP;
END;
$$;
