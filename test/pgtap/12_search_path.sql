-- 12_search_path.sql: the hot functions (enqueue, enqueue_batch, dequeue, heartbeat,
-- complete, complete_batch, fail) carry no SET search_path clause (sql/
-- queue_engine--0.1.1--0.2.0.sql, section 4); the library pins search_path itself around
-- each statement it parses or runs (src/spi_util.c, qe_pin_search_path).  Here a caller
-- whose search_path puts a schema of look-alike operators and functions before pg_catalog
-- calls each of them down the paths that do run statements (a queue not cached yet, an
-- idempotency key, a parent run, dequeue's tenant turns and queue walk): none of the
-- look-alikes is called, the results are right, and the caller's search_path is as it was.
-- Last, the same session drops and makes the extension again: tables opened by their last
-- OID are found by name once that OID is gone.
BEGIN;
SELECT plan(14);

CREATE SCHEMA evil;
CREATE TABLE evil.calls (what text NOT NULL);
GRANT ALL ON SCHEMA evil TO PUBLIC;
GRANT ALL ON evil.calls TO PUBLIC;

-- For each type and comparison: a function that records its call and answers right, and an
-- operator of the same name in schema evil.  Put before pg_catalog in search_path, it is
-- what an unqualified "=" (say) resolves to.
DO $do$
DECLARE
	t record;
	o record;
	fname text;
BEGIN
	FOR t IN SELECT * FROM (VALUES ('int4', 'integer'), ('int8', 'bigint'), ('text', 'text'),
								   ('timestamptz', 'timestamp with time zone'), ('bool', 'boolean')) v(short, full_name) LOOP
		FOR o IN SELECT * FROM (VALUES ('=', 'eq'), ('<>', 'ne'), ('<', 'lt'), ('<=', 'le'),
									   ('>', 'gt'), ('>=', 'ge')) v(op, name) LOOP
			fname := t.short || o.name;
			EXECUTE format($f$CREATE FUNCTION evil.%I(a %s, b %s) RETURNS boolean LANGUAGE plpgsql AS $b$
							BEGIN
								INSERT INTO evil.calls VALUES (%L);
								RETURN a OPERATOR(pg_catalog.%s) b;
							END $b$$f$, fname, t.full_name, t.full_name, o.op || ' ' || t.short, o.op);
			EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.%I)',
						   o.op, t.full_name, t.full_name, fname);
		END LOOP;
	END LOOP;
END;
$do$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO evil.calls VALUES ('now()');
	RETURN pg_catalog.now();
END $$;

-- A queue of each of two tenants, made in this transaction, so that no backend has them
-- cached yet, and a parent run.
SELECT queue_engine.create_queue('sp_a', 'sp_tenant_a');
SELECT queue_engine.create_queue('sp_b', 'sp_tenant_b', concurrency_limit => 5);
SELECT queue_engine.create_queue('sp_lim', concurrency_limit => 2);
SELECT queue_engine.create_queue('sp_key', key_concurrency_limit => 1);
CREATE TEMP TABLE parent AS SELECT queue_engine.enqueue('sp_a', '{"parent": true}') AS run_id;

-- 1: the look-alikes work: a statement of the caller's resolves to them.
SET search_path = evil, pg_catalog, public;
SELECT 1::bigint = 1::bigint AS shadowed;
RESET search_path;
SELECT is((SELECT count(*)::int FROM evil.calls), 1, 'a caller''s own "=" resolves to the look-alike first');
TRUNCATE evil.calls;

-- The engine's calls, under the hostile search_path; results kept in temporary tables and
-- checked after RESET (pgTAP's own functions would resolve to the look-alikes).
SET search_path = evil, pg_catalog, public;
CREATE TEMP TABLE got (step text, value text);
INSERT INTO pg_temp.got
SELECT 'enqueue', queue_engine.enqueue('sp_a', '{"n": 1}', idempotency_key => 'sp-key-1',
									   parent_run_id => (SELECT run_id FROM pg_temp.parent))::text;
INSERT INTO pg_temp.got
SELECT 'enqueue again', queue_engine.enqueue('sp_a', '{"n": 2}', idempotency_key => 'sp-key-1')::text;
INSERT INTO pg_temp.got
SELECT 'enqueue_batch', count(*)::text FROM queue_engine.enqueue_batch('sp_b', ARRAY['{"n": 3}', '{"n": 4}', '{"n": 5}']::jsonb[]);
INSERT INTO pg_temp.got SELECT 'path after enqueues', current_setting('search_path');
CREATE TEMP TABLE claimed AS SELECT d.run_id, d.attempt, d.queue FROM queue_engine.dequeue(NULL, 4) d;
INSERT INTO pg_temp.got SELECT 'path after dequeue', current_setting('search_path');
INSERT INTO pg_temp.got
SELECT 'heartbeat', count(*)::text FROM pg_temp.claimed c, LATERAL queue_engine.heartbeat(c.run_id, c.attempt, '10 minutes') h;
INSERT INTO pg_temp.got
SELECT 'complete', count(*)::text
  FROM (SELECT queue_engine.complete(c.run_id, '{"ok": true}', c.attempt)
		  FROM (SELECT * FROM pg_temp.claimed ORDER BY run_id LIMIT 1) c) x;
INSERT INTO pg_temp.got
SELECT 'fail', count(*)::text
  FROM (SELECT queue_engine.fail(c.run_id, '{"error": "x"}', c.attempt)
		  FROM (SELECT * FROM pg_temp.claimed ORDER BY run_id OFFSET 1 LIMIT 1) c) x;
INSERT INTO pg_temp.got
SELECT 'complete_batch', queue_engine.complete_batch((SELECT array_agg(run_id ORDER BY run_id) FROM (SELECT run_id FROM pg_temp.claimed ORDER BY run_id OFFSET 2) c),
								   NULL,
								   (SELECT array_agg(attempt ORDER BY run_id) FROM (SELECT run_id, attempt FROM pg_temp.claimed ORDER BY run_id OFFSET 2) c))::text;
-- One queue with a limit (its admission reads slots), one with a per-key limit (the keyed claim).
INSERT INTO pg_temp.got SELECT 'enqueue limited', count(*)::text
  FROM queue_engine.enqueue_batch('sp_lim', ARRAY['{}', '{}', '{}']::jsonb[]);
INSERT INTO pg_temp.got SELECT 'enqueue keyed', count(*)::text
  FROM queue_engine.enqueue_batch('sp_key', ARRAY['{}', '{}']::jsonb[], concurrency_key => 'k');
INSERT INTO pg_temp.got SELECT 'dequeue limited', count(*)::text FROM queue_engine.dequeue(ARRAY['sp_lim'], 3);
INSERT INTO pg_temp.got SELECT 'dequeue keyed', count(*)::text FROM queue_engine.dequeue(ARRAY['sp_key'], 2);
INSERT INTO pg_temp.got SELECT 'path at the end', current_setting('search_path');
RESET search_path;

-- 2-12
SELECT is((SELECT array_agg(what ORDER BY what) FROM evil.calls), NULL,
		  'no look-alike operator or function was called by the engine');
SELECT isnt((SELECT value FROM got WHERE step = 'enqueue'), NULL, 'enqueue with an idempotency key and a parent run returned an id');
SELECT is((SELECT value FROM got WHERE step = 'enqueue again'), (SELECT value FROM got WHERE step = 'enqueue'),
		  'the same idempotency key returned the same run');
SELECT is((SELECT value FROM got WHERE step = 'enqueue_batch'), '3', 'enqueue_batch returned 3 ids');
SELECT is((SELECT count(*)::int FROM claimed), 4, 'dequeue(NULL, 4) claimed 4 runs');
SELECT is((SELECT array_agg(DISTINCT queue ORDER BY queue) FROM claimed), ARRAY['sp_a', 'sp_b'],
		  'dequeue(NULL) took its turns between both tenants');
SELECT is((SELECT value FROM got WHERE step = 'heartbeat'), '4', 'heartbeat extended the 4 leases');
SELECT is((SELECT array_agg(value ORDER BY step) FROM got WHERE step IN ('complete', 'fail', 'complete_batch')),
		  ARRAY['1', '2', '1'], 'complete, complete_batch and fail each did their part');
SELECT is((SELECT array_agg(status::text ORDER BY run_id) FROM queue_engine.runs WHERE run_id IN (SELECT run_id FROM claimed)),
		  ARRAY['completed', 'delayed', 'completed', 'completed'],
		  'the runs are completed, and the failed one delayed until its retry');
SELECT is((SELECT array_agg(DISTINCT value) FROM got WHERE step LIKE 'path %'), ARRAY['evil, pg_catalog, public'],
		  'the caller''s search_path is unchanged after each call');

SELECT is((SELECT array_agg(value ORDER BY step) FROM got WHERE step LIKE 'dequeue %'), ARRAY['1', '2'],
		  'a limited queue started up to its limit (2) and a key-limited one one run of its key');

-- 13-14: tables are opened by the OID they had last time (spi_util.c, qe_try_open_table):
-- after DROP and CREATE EXTENSION in this same session every table has a new OID, and the
-- engine finds them by name again.
SET client_min_messages = warning;
DROP EXTENSION queue_engine CASCADE;
CREATE EXTENSION queue_engine;
RESET client_min_messages;
SELECT queue_engine.create_queue('sp_again');
SELECT is((SELECT count(*)::int FROM (SELECT queue_engine.enqueue('sp_again', '{"again": true}')) e), 1,
		  'enqueue works after the extension was dropped and made again in the same session');
SELECT is((SELECT queue_engine.complete(d.run_id, NULL, d.attempt) FROM queue_engine.dequeue(ARRAY['sp_again'], 1) d),
		  true, '... and so do dequeue and complete');

SELECT * FROM finish();
ROLLBACK;
