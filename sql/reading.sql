--
-- reading: list_runs, metrics() and dequeue's wait (SPEC "Reading runs and
-- metrics", "Waiting for work"): list_runs' rows on fixed data (newest
-- first, filters, pages through a tie, a continuation row), the metrics
-- lines that depend on neither the clock nor earlier tests, then every
-- error with its SQLSTATE, message and hint, and proof that the engine's
-- state did not change.  Runs are named by their concurrency_key, so that
-- the output shows neither ids nor times.
--
\set VERBOSITY default
\set SHOW_CONTEXT never
-- A fresh engine, whatever ran before in this database.
SET client_min_messages = warning;
DROP EXTENSION queue_engine CASCADE;
CREATE EXTENSION queue_engine;
RESET client_min_messages;
SET search_path = queue_engine, public;

-- public.state() and public.err(stmt) (sql/include/fingerprint.psql)
\getenv abs_srcdir PG_ABS_SRCDIR
\set fingerprint :abs_srcdir '/sql/include/fingerprint.psql'
\i :fingerprint

SELECT create_queue('rq');
SELECT create_queue('rq_acme', tenant => 'acme');
SELECT create_queue('rq_empty');
SELECT create_queue(E'odd"q\\x\ny', tenant => 'acme', concurrency_limit => 3);

---------------------------------------------------------------------------
-- The runs, oldest first: r1 .. r4 each by its own statement, t1 .. t3 in
-- one transaction (one created_at), r8 last; then r2 executing, r8
-- completed, r1 canceled, r4 delayed.
---------------------------------------------------------------------------
SELECT enqueue('rq', '{"n": 1}', concurrency_key => 'r1', tags => '{red}') AS r1 \gset
SELECT enqueue('rq', '{"n": 2}', concurrency_key => 'r2', priority => 5) AS r2 \gset
SELECT enqueue('rq_acme', '{"n": 3}', concurrency_key => 'r3', tags => '{red,blue}') AS r3 \gset
SELECT enqueue('rq', '{"n": 4}', concurrency_key => 'r4', delay => '1 hour') AS r4 \gset
BEGIN;
SELECT enqueue('rq', '{"n": 5}', concurrency_key => 't1', tags => '{tie}') AS t1 \gset
SELECT enqueue('rq', '{"n": 6}', concurrency_key => 't2', tags => '{tie}') AS t2 \gset
SELECT enqueue('rq', '{"n": 7}', concurrency_key => 't3', tags => '{tie,blue}') AS t3 \gset
COMMIT;
SELECT enqueue('rq', '{"n": 8}', concurrency_key => 'r8', priority => 4) AS r8 \gset
SELECT concurrency_key AS started FROM dequeue(ARRAY['rq']);
SELECT concurrency_key AS started FROM dequeue(ARRAY['rq']);
SELECT complete(:r8);
SELECT cancel(:r1);
SELECT created_at AS t1_at FROM get_run(:t1) \gset

---------------------------------------------------------------------------
-- list_runs: newest first (created_at, then run_id: t3, t2, t1 share
-- created_at); each column.
---------------------------------------------------------------------------
SELECT concurrency_key AS run, queue, tenant, status, attempt, priority, tags,
       started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished,
       cursor ~ '^r[0-9a-f]{32}$' AS cursor_ok
  FROM list_runs();
-- the columns are get_run's
SELECT count(*) AS rows,
       count(*) FILTER (WHERE ROW(l.queue, l.tenant, l.status, l.attempt, l.priority, l.concurrency_key, l.tags,
                                  l.created_at, l.started_at, l.finished_at)
                        IS NOT DISTINCT FROM ROW(g.queue, g.tenant, g.status, g.attempt, g.priority, g.concurrency_key,
                                                 g.tags, g.created_at, g.started_at, g.finished_at)) AS as_get_run
  FROM list_runs() l, LATERAL get_run(l.run_id) g;
-- filters
SELECT concurrency_key AS run, status FROM list_runs(tag => 'red');
SELECT concurrency_key AS run, status FROM list_runs(tag => 'blue');
SELECT concurrency_key AS run, status FROM list_runs(queue => 'rq', status => '{queued,delayed}');
SELECT concurrency_key AS run, status FROM list_runs(status => '{executing,completed,canceled}');
SELECT concurrency_key AS run, status FROM list_runs(tenant => 'acme');
SELECT concurrency_key AS run, status FROM list_runs(tenant => 'default', tag => 'tie', status => '{queued}');
SELECT concurrency_key AS run, status FROM list_runs(payload_contains => '{"n": 4}');
SELECT count(*) AS none FROM list_runs(tag => 'green');
SELECT count(*) AS none FROM list_runs(queue => 'rq_empty');
-- created_after is inclusive, created_before exclusive (t1's created_at: the tie's)
SELECT concurrency_key AS run FROM list_runs(created_after => :'t1_at');
SELECT concurrency_key AS run FROM list_runs(created_before => :'t1_at');
SELECT concurrency_key AS run FROM list_runs(created_after => :'t1_at', created_before => :'t1_at');

---------------------------------------------------------------------------
-- Pages of 2 through the tie: each page from the last row's cursor.
---------------------------------------------------------------------------
SELECT string_agg(concurrency_key, ',' ORDER BY n) AS page_1, (array_agg(cursor ORDER BY n DESC))[1] AS c1
  FROM list_runs(page_size => 2) WITH ORDINALITY l(run_id, queue, tenant, status, attempt, priority, concurrency_key,
                                                     tags, created_at, started_at, finished_at, cursor, n) \gset
SELECT :'page_1' AS page_1;
SELECT string_agg(concurrency_key, ',' ORDER BY n) AS page_2, (array_agg(cursor ORDER BY n DESC))[1] AS c2
  FROM list_runs(after => :'c1', page_size => 2) WITH ORDINALITY l(run_id, queue, tenant, status, attempt, priority, concurrency_key,
                                                                   tags, created_at, started_at, finished_at, cursor, n) \gset
SELECT :'page_2' AS page_2;
SELECT string_agg(concurrency_key, ',' ORDER BY n) AS page_3, (array_agg(cursor ORDER BY n DESC))[1] AS c3
  FROM list_runs(after => :'c2', page_size => 2) WITH ORDINALITY l(run_id, queue, tenant, status, attempt, priority, concurrency_key,
                                                                   tags, created_at, started_at, finished_at, cursor, n) \gset
SELECT :'page_3' AS page_3;
SELECT concurrency_key AS page_4 FROM list_runs(after => :'c3', page_size => 2);
-- page 2's cursor (t1's) after t3 was canceled and r9 came: the same runs after it
SELECT cancel(:t3);
SELECT enqueue('rq', '{"n": 9}', concurrency_key => 'r9') AS r9 \gset
SELECT concurrency_key AS run, status FROM list_runs(after => :'c2');
SELECT concurrency_key AS first_page FROM list_runs(page_size => 2);

---------------------------------------------------------------------------
-- The bound: with list_runs_max_scan 2, a page whose first 2 candidates
-- do not match ends with a continuation row (all NULL but cursor); its
-- cursor goes on.
---------------------------------------------------------------------------
SET queue_engine.list_runs_max_scan = 2;
SELECT concurrency_key AS run, run_id IS NULL AS continuation, queue, status, created_at, cursor IS NOT NULL AS has_cursor
  FROM list_runs(payload_contains => '{"n": 2}', page_size => 5);
SELECT cursor AS k1 FROM list_runs(payload_contains => '{"n": 2}', page_size => 5) \gset
SELECT concurrency_key AS run, run_id IS NULL AS continuation FROM list_runs(payload_contains => '{"n": 2}', after => :'k1', page_size => 5);
SELECT cursor AS k2 FROM list_runs(payload_contains => '{"n": 2}', after => :'k1', page_size => 5) \gset
SELECT concurrency_key AS run, run_id IS NULL AS continuation FROM list_runs(payload_contains => '{"n": 2}', after => :'k2', page_size => 5);
SELECT cursor AS k3 FROM list_runs(payload_contains => '{"n": 2}', after => :'k2', page_size => 5) \gset
-- (the match, then a continuation row: the bound came before the page was full)
SELECT concurrency_key AS run, run_id IS NULL AS continuation FROM list_runs(payload_contains => '{"n": 2}', after => :'k3', page_size => 5);
SELECT cursor AS k4 FROM list_runs(payload_contains => '{"n": 2}', after => :'k3', page_size => 5) WITH ORDINALITY WHERE ordinality = 2 \gset
SELECT concurrency_key AS run, run_id IS NULL AS continuation FROM list_runs(payload_contains => '{"n": 2}', after => :'k4', page_size => 5);
-- a filter its index applies needs no continuation, whatever the bound
SELECT concurrency_key AS run, run_id IS NULL AS continuation FROM list_runs(queue => 'rq', page_size => 3);
RESET queue_engine.list_runs_max_scan;

---------------------------------------------------------------------------
-- metrics(): the families, and the per-queue lines (a label value escaped)
---------------------------------------------------------------------------
SELECT line AS families FROM regexp_split_to_table(metrics(), E'\n') WITH ORDINALITY m(line, n)
 WHERE line LIKE '# TYPE %' ORDER BY n;
SELECT line AS queue_lines FROM regexp_split_to_table(metrics(), E'\n') WITH ORDINALITY m(line, n)
 WHERE line ~ '^queue_engine_(runs|concurrency_limit|queue_paused)\{' ORDER BY n;
SELECT right(metrics(), 1) = E'\n' AS ends_with_newline;

---------------------------------------------------------------------------
-- Errors.  Each changes nothing.
---------------------------------------------------------------------------
SELECT state() AS initial_state \gset
-- page_size
SELECT * FROM err($$SELECT count(*) FROM list_runs(page_size => NULL)$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(page_size => 0)$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(page_size => -1)$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(page_size => 1001)$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(page_size => 1000)$$);
-- unknown queue and tenant; a queue of another tenant
SELECT * FROM err($$SELECT count(*) FROM list_runs(queue => 'nope')$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(tenant => 'nope')$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(queue => 'rq', tenant => 'acme')$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(queue => 'nope', tenant => 'nope')$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(queue => '')$$);
-- nulls in status; an unknown status
SELECT * FROM err($$SELECT count(*) FROM list_runs(status => ARRAY[NULL]::run_status[])$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(status => ARRAY['queued', NULL]::run_status[])$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(status => '{running}')$$);
-- malformed cursors
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => '')$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'x')$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'r')$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'r' || repeat('0', 31))$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'r' || repeat('0', 33))$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'R' || repeat('0', 32))$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'r' || repeat('A', 32))$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'r' || repeat('g', 32))$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => ' r' || repeat('0', 32))$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'r' || repeat('0', 32) || E'\n')$$);
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => '2024-01-01 00:00:00+00,5')$$);
-- a well-formed cursor from before any run: no error, nothing after it
SELECT * FROM err($$SELECT count(*) FROM list_runs(after => 'r' || repeat('0', 32))$$);
-- list_runs_max_scan
SELECT * FROM err($$SET queue_engine.list_runs_max_scan = 0$$);
SELECT * FROM err($$SET queue_engine.list_runs_max_scan = 'many'$$);
-- dequeue's wait
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['rq_empty'], wait => '-1 s')$$);
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['rq_empty'], wait => '-1 microsecond')$$);
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['rq_empty'], wait => '1 month -31 days')$$);
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['nope'], wait => '1 s')$$);
-- an error of a waiting dequeue leaves the session as any error does
SELECT count(*) FROM dequeue(ARRAY['nope'], wait => '1 s');
SELECT 1 AS session_usable;
BEGIN;
SELECT count(*) AS in_a_transaction FROM list_runs(queue => 'rq_empty');
COMMIT;
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['rq_empty'], wait => '0')$$);
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['rq_empty'], wait => NULL)$$);
-- (a short wait with nothing to claim: no rows at its end)
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['rq_empty'], wait => '10 milliseconds')$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['rq_empty'], wait => '1 s')$$);
SELECT * FROM err($$SELECT count(*) FROM dequeue(ARRAY['rq_empty'], wait => '-1 s')$$);
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM err($$SELECT count(*) FROM dequeue(wait => '1 s')$$);
COMMIT;
-- roles: without access; scoped to another tenant
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_qe_reading_nobody;
DROP ROLE IF EXISTS regress_qe_reading_acme;
RESET client_min_messages;
CREATE ROLE regress_qe_reading_nobody;
CREATE ROLE regress_qe_reading_acme;
SELECT queue_engine.grant_tenant('regress_qe_reading_acme', 'acme', 'reader');
SELECT state() AS initial_state \gset
SET ROLE regress_qe_reading_nobody;
SELECT * FROM err($$SELECT count(*) FROM queue_engine.list_runs()$$);
SELECT * FROM err($$SELECT queue_engine.metrics()$$);
RESET ROLE;
SET ROLE regress_qe_reading_acme;
SELECT * FROM err($$SELECT count(*) FROM queue_engine.list_runs(queue => 'rq')$$);
SELECT * FROM err($$SELECT count(*) FROM queue_engine.list_runs(tenant => 'default')$$);
SELECT * FROM err($$SELECT string_agg(concurrency_key, ',') FROM queue_engine.list_runs()$$);
SELECT * FROM err($$SELECT string_agg(concurrency_key, ',') FROM queue_engine.list_runs(tag => 'blue')$$);
SELECT * FROM err($$SELECT count(*) FROM queue_engine.dequeue(ARRAY['rq_acme'], wait => '1 s')$$);
SELECT line AS acme_reader_lines FROM regexp_split_to_table(queue_engine.metrics(), E'\n') WITH ORDINALITY m(line, n)
 WHERE line ~ '^queue_engine_runs\{' ORDER BY n;
RESET ROLE;
SELECT queue_engine.revoke_tenant('regress_qe_reading_acme', 'acme');
DROP ROLE regress_qe_reading_nobody;
DROP ROLE regress_qe_reading_acme;

-- nothing above changed anything
SELECT state() = :'initial_state' AS state_unchanged;
SELECT * FROM check_consistency(false);
