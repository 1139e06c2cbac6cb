--
-- waits: waits, events, sleeps, children and durable steps (SPEC "Waits,
-- events and children", "Durable steps"): every function's results, then
-- every error with its SQLSTATE, message and hint, and proof that the
-- engine's state did not change.  Output depends on neither the clock nor
-- ids: timestamps are compared with now() and clock_timestamp(), ids with
-- ids captured by \gset.
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

-- Enqueue one run on q (optionally with cancel_on or a parent) and start it
-- (at the best priority, then set back to 0 while it executes).
CREATE OR REPLACE FUNCTION public.started(q text, cancel_on jsonb DEFAULT NULL,
                                          parent bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  id bigint := queue_engine.enqueue(q, priority => 1000000, cancel_on => cancel_on, parent_run_id => parent);
  got bigint;
BEGIN
  SELECT d.run_id INTO got FROM queue_engine.dequeue(ARRAY[q], 1) d;
  IF got IS DISTINCT FROM id THEN
    RAISE EXCEPTION 'started(%): dequeued % instead of %', q, got, id;
  END IF;
  UPDATE queue_engine.runs SET priority = 0 WHERE run_id = id;
  RETURN id;
END;
$$;

-- A run's state in one line.
CREATE OR REPLACE FUNCTION public.run_line(id bigint) RETURNS text
LANGUAGE sql AS $$
  SELECT format('%s attempt %s%s%s%s', r.status, r.attempt,
                CASE WHEN r.lease_expires_at IS NOT NULL THEN ' leased' ELSE '' END,
                CASE WHEN r.finished_at IS NOT NULL THEN ' finished' ELSE '' END,
                CASE WHEN r.waiting_for IS NOT NULL THEN ' waiting for ' || (r.waiting_for->>'kind') ELSE '' END)
    FROM queue_engine.get_run(id) r
$$;

-- Counts of one queue as queue_stats shows them.
CREATE OR REPLACE FUNCTION public.qstats(q text) RETURNS TABLE (queued bigint, delayed bigint, executing bigint, waiting bigint)
LANGUAGE sql AS $$
  SELECT queued, delayed, executing, waiting FROM queue_engine.queue_stats WHERE queue = q
$$;

SELECT create_queue('w', concurrency_limit => 1);
SELECT create_queue('free');
SELECT create_queue('acme_q', tenant => 'acme');

---------------------------------------------------------------------------
-- wait_for_event: the run gives up its slot and lease; events that do not
-- match wake nothing; the matching one wakes it; it resumes with the same
-- attempt and the event as its resume.
---------------------------------------------------------------------------
SELECT enqueue('w', '{"n": 1}', priority => 3) AS a1 \gset
SELECT enqueue('w', '{"n": 2}') AS a2 \gset
SELECT run_id = :a1 AS is_a1, attempt, resume FROM dequeue(ARRAY['w']);
SELECT count(*) AS at_limit FROM dequeue(ARRAY['w']);
SELECT * FROM qstats('w');
SELECT waiting_for FROM get_run(:a1);
BEGIN;
SELECT wait_for_event(:a1, 1, 'order.paid', match => '{"order": {"id": 7}}',
                      condition => '$.amount > 100', timeout => '1 hour');
SELECT status, attempt, priority, lease_expires_at, started_at IS NOT NULL AS started,
       finished_at, waiting_for - 'since' - 'timeout_at' AS waiting_for,
       (waiting_for->>'since')::timestamptz BETWEEN now() AND clock_timestamp() AS since_now,
       (waiting_for->>'timeout_at')::timestamptz - (waiting_for->>'since')::timestamptz
         BETWEEN interval '59 minutes 59 seconds' AND interval '1 hour' AS timeout_hour_after
  FROM get_run(:a1);
COMMIT;
SELECT status, lease_expires_at FROM runs WHERE run_id = :a1;
SELECT count(*) AS waits FROM waiting_runs;
-- The slot is free: the next run of the limit-1 queue starts at once.
SELECT * FROM qstats('w');
SELECT run_id = :a2 AS is_a2, attempt, resume FROM dequeue(ARRAY['w']);
SELECT * FROM qstats('w');
-- While it waits, the attempt that waited is fenced off: false/NULL, no change.
SELECT state() AS before_fenced \gset
SELECT complete(:a1, '{"x": 1}', attempt => 1) AS complete, complete(:a1) AS complete_no_attempt,
       fail(:a1, '{"message": "x"}', attempt => 1) AS fail, heartbeat(:a1, 1) AS heartbeat,
       save_step(:a1, 1, 'step') AS save_step;
SELECT wait_for_event(:a1, 1, 'other') AS wait_again, sleep(:a1, 1, duration => '1 second') AS sleep,
       wait_for_children(:a1, 1) AS wait_for_children;
SELECT state() = :'before_fenced' AS state_unchanged, run_line(:a1);
-- Events that do not match wake nothing: another id, the condition false,
-- another name, another tenant.
SELECT event_id IS NOT NULL AS has_id, woken, canceled
  FROM send_event('order.paid', '{"order": {"id": 8}, "amount": 500}');
SELECT event_id IS NOT NULL AS has_id, woken, canceled
  FROM send_event('order.paid', '{"order": {"id": 7}, "amount": 50}');
SELECT event_id IS NOT NULL AS has_id, woken, canceled
  FROM send_event('order.paid', '{"order": {"id": 7}, "amount": "lots"}');
SELECT event_id IS NOT NULL AS has_id, woken, canceled
  FROM send_event('order.refunded', '{"order": {"id": 7}, "amount": 500}');
SELECT event_id IS NOT NULL AS has_id, woken, canceled
  FROM send_event('order.paid', '{"order": {"id": 7}, "amount": 500}', tenant => 'acme');
SELECT run_line(:a1);
-- The matching event (data containing more than match) wakes it.
SELECT event_id AS ev1, woken AS ev1_woken, canceled AS ev1_canceled
  FROM send_event('order.paid', '{"order": {"id": 7, "sku": "x"}, "amount": 150, "extra": [1]}') \gset
SELECT :ev1_woken AS woken, :ev1_canceled AS canceled;
SELECT status, attempt, priority, lease_expires_at, waiting_for, run_at <= now() AS startable
  FROM get_run(:a1);
SELECT count(*) AS waits FROM waiting_runs;
SELECT * FROM qstats('w');
-- Its queue is at its limit (a2 executes): it waits for the slot.
SELECT count(*) AS at_limit FROM dequeue(ARRAY['w']);
SELECT event_id IS NOT NULL AS has_id, woken, canceled
  FROM send_event('order.paid', '{"order": {"id": 7}, "amount": 999}');
SELECT complete(:a2, attempt => 1);
SELECT run_id = :a1 AS is_a1, attempt, resume - 'event_id' AS resume,
       (resume->>'event_id')::bigint = :ev1 AS event_id_ok
  FROM dequeue(ARRAY['w']);
SELECT run_line(:a1);
-- The resumed attempt is the same attempt: it works again.
SELECT heartbeat(:a1, 1) IS NOT NULL AS heartbeat, complete(:a1, '{"done": true}', attempt => 1) AS complete;
SELECT status, attempt, output FROM get_run(:a1);

-- match NULL and '{}' accept any data (an array too); a condition alone.
SELECT started('free') AS b1 \gset
SELECT started('free') AS b2 \gset
SELECT started('free') AS b3 \gset
SELECT wait_for_event(:b1, 1, 'ping');
SELECT wait_for_event(:b2, 1, 'ping', match => '{}');
SELECT wait_for_event(:b3, 1, 'ping', condition => 'exists($.who)');
SELECT waiting_for - 'since' AS waiting_for FROM get_run(:b3);
SELECT woken, canceled FROM send_event('ping', '[1, 2]');
SELECT run_line(:b1), run_line(:b2), run_line(:b3);
SELECT woken, canceled FROM send_event('ping', '{"who": null}');
SELECT run_line(:b3);
SELECT count(*) AS resumed, array_agg(DISTINCT attempt) AS attempts,
       array_agg(DISTINCT resume->>'kind') AS kinds
  FROM dequeue(ARRAY['free'], 10);
SELECT complete(r, attempt => 1) FROM unnest(ARRAY[:b1, :b2, :b3]::bigint[]) r;

-- Matching: containment over nested objects and arrays; numbers by value,
-- no coercion between numbers, strings, booleans and null; a missing key
-- is not null.
CREATE TEMP TABLE match_cases (n int, match jsonb, data jsonb);
INSERT INTO match_cases VALUES
  (1, '{"a": {"b": {"c": 1}}}', '{"a": {"b": {"c": 1, "d": 2}, "e": 3}}'),
  (2, '{"a": {"b": {"c": 1}}}', '{"a": {"b": {"c": 2}}}'),
  (3, '{"tags": ["x"]}', '{"tags": ["y", "x"]}'),
  (4, '{"tags": ["x", "z"]}', '{"tags": ["x", "y"]}'),
  (5, '{"n": 1}', '{"n": 1.0}'),
  (6, '{"n": 1}', '{"n": "1"}'),
  (7, '{"s": "true"}', '{"s": true}'),
  (8, '{"f": false}', '{"f": false}'),
  (9, '{"k": null}', '{"k": null}'),
  (10, '{"k": null}', '{}'),
  (11, '{"k": null}', '{"k": 0}'),
  (12, '{"a": [{"id": 2}]}', '{"a": [{"id": 1}, {"id": 2, "x": 0}]}');
CREATE TEMP TABLE match_runs AS
SELECT n, started('free') AS run_id FROM match_cases ORDER BY n;
SELECT n, wait_for_event(run_id, 1, 'm' || n, match => match) FROM match_runs JOIN match_cases USING (n) ORDER BY n;
SELECT n, (SELECT woken FROM send_event('m' || n, data)) AS woken FROM match_cases ORDER BY n;
SELECT n, run_line(run_id) FROM match_runs ORDER BY n;
SELECT count(*) AS resumed FROM dequeue(ARRAY['free'], 100);
SELECT count(cancel(run_id)) FROM match_runs WHERE (SELECT status FROM get_run(run_id)) = 'waiting';
SELECT count(complete(run_id)) FROM match_runs WHERE (SELECT status FROM get_run(run_id)) = 'executing';

-- Conditions: jsonpath predicates; one that cannot be evaluated on the data
-- (wrong type, missing key, strict mode, division by zero, a date compared
-- with a timestamp with time zone) is false and send_event does not fail.
CREATE TEMP TABLE cond_cases (n int, condition jsonpath, data jsonb);
INSERT INTO cond_cases VALUES
  (1, '$.amount > 100', '{"amount": 150}'),
  (2, '$.amount > 100', '{"amount": 100}'),
  (3, '$.amount > 100', '{"amount": "150"}'),
  (4, '$.amount > 100', '{}'),
  (5, 'strict $.amount > 100', '{}'),
  (6, '$.a / $.b > 1', '{"a": 1, "b": 0}'),
  (7, '$.d.datetime() < "2020-01-01 00:00:00+00".datetime()', '{"d": "2021-06-01"}'),
  (8, '$.items[*].price > 10', '{"items": [{"price": 5}, {"price": 20}]}'),
  (9, '$.user.name starts with "ad"', '{"user": {"name": "admin"}}'),
  (10, '$.ok == true && $.n == null', '{"ok": true, "n": null}'),
  (11, '$.ok == true', '{"ok": "true"}'),
  (12, '$.amount > 100', '[{"amount": 500}]'),
  (13, '$.amount > 100', '"text"');
CREATE TEMP TABLE cond_runs AS
SELECT n, started('free') AS run_id FROM cond_cases ORDER BY n;
SELECT n, wait_for_event(run_id, 1, 'c' || n, condition => condition) FROM cond_runs JOIN cond_cases USING (n) ORDER BY n;
SELECT n, (SELECT woken FROM send_event('c' || n, data)) AS woken FROM cond_cases ORDER BY n;
SELECT n, run_line(run_id) FROM cond_runs ORDER BY n;
-- the waits a condition could not evaluate still wake on a good event
SELECT (SELECT woken FROM send_event('c6', '{"a": 4, "b": 2}')) AS c6_woken,
       (SELECT woken FROM send_event('c7', '{"d": "2019-06-01T00:00:00+00:00"}')) AS c7_woken;
SELECT count(*) AS resumed FROM dequeue(ARRAY['free'], 100);
SELECT count(cancel(run_id)) FROM cond_runs WHERE (SELECT status FROM get_run(run_id)) = 'waiting';
SELECT count(complete(run_id)) FROM cond_runs WHERE (SELECT status FROM get_run(run_id)) = 'executing';

-- One event wakes every matching wait; a wait is woken by one event only.
SELECT started('free') AS m1 \gset
SELECT started('free') AS m2 \gset
SELECT wait_for_event(:m1, 1, 'fanout'), wait_for_event(:m2, 1, 'fanout', match => '{"k": 1}');
SELECT woken, canceled FROM send_event('fanout', '{"k": 1}');
SELECT woken, canceled FROM send_event('fanout', '{"k": 1}');
SELECT count(*) AS resumed FROM dequeue(ARRAY['free'], 10);
SELECT complete(:m1, attempt => 1), complete(:m2, attempt => 1);

-- Events belong to a tenant.
SELECT started('acme_q') AS t1 \gset
SELECT wait_for_event(:t1, 1, 'shared.name');
SELECT woken FROM send_event('shared.name');
SELECT run_line(:t1);
SELECT woken FROM send_event('shared.name', tenant => 'acme');
SELECT run_id = :t1 AS is_t1, attempt, resume->>'kind' AS kind, resume->'data' AS data
  FROM dequeue(ARRAY['acme_q']);
SELECT complete(:t1, attempt => 1);

---------------------------------------------------------------------------
-- lookback
---------------------------------------------------------------------------
SELECT event_id AS e_early FROM send_event('invoice.ready', '{"invoice": 1}') \gset
SELECT event_id AS e_late FROM send_event('invoice.ready', '{"invoice": 2}') \gset
-- without lookback, earlier events do not count
SELECT started('free') AS l0 \gset
SELECT wait_for_event(:l0, 1, 'invoice.ready');
SELECT run_line(:l0);
-- with it, the earliest matching one satisfies the wait at once
SELECT started('free') AS l1 \gset
SELECT wait_for_event(:l1, 1, 'invoice.ready', lookback => '1 hour');
SELECT status, attempt, lease_expires_at, waiting_for FROM get_run(:l1);
SELECT count(*) AS waits_of_l1 FROM waiting_runs WHERE run_id = :l1;
SELECT run_id = :l1 AS is_l1, attempt, resume - 'event_id' AS resume,
       (resume->>'event_id')::bigint = :e_early AS earliest
  FROM dequeue(ARRAY['free']);
SELECT complete(:l1, attempt => 1);
-- match and condition apply to the events looked back at
SELECT started('free') AS l2 \gset
SELECT wait_for_event(:l2, 1, 'invoice.ready', match => '{"invoice": 2}', lookback => '1 hour');
SELECT (resume->>'event_id')::bigint = :e_late AS matching_one, resume->'data' AS data FROM dequeue(ARRAY['free']);
SELECT complete(:l2, attempt => 1);
SELECT started('free') AS l3 \gset
SELECT wait_for_event(:l3, 1, 'invoice.ready', condition => '$.invoice > 1', lookback => '1 hour');
SELECT (resume->>'event_id')::bigint = :e_late AS matching_one FROM dequeue(ARRAY['free']);
SELECT complete(:l3, attempt => 1);
SELECT started('free') AS l4 \gset
SELECT wait_for_event(:l4, 1, 'invoice.ready', match => '{"invoice": 3}', lookback => '1 hour');
-- another tenant's event is not looked back at
SELECT event_id AS e_acme FROM send_event('acme.only', '{}', tenant => 'acme') \gset
SELECT started('free') AS l5 \gset
SELECT wait_for_event(:l5, 1, 'acme.only', lookback => '1 hour');
-- the boundary: an event sent 10 minutes ago is within 11 minutes, not 9
UPDATE events SET sent_at = now() - interval '10 minutes' WHERE event_id = :e_early;
SELECT started('free') AS l6 \gset
SELECT wait_for_event(:l6, 1, 'invoice.ready', match => '{"invoice": 1}', lookback => '9 minutes');
SELECT started('free') AS l7 \gset
SELECT wait_for_event(:l7, 1, 'invoice.ready', match => '{"invoice": 1}', lookback => '11 minutes');
SELECT run_line(:l6), run_line(:l7);
SELECT (resume->>'event_id')::bigint = :e_early AS e_early FROM dequeue(ARRAY['free']);
SELECT complete(:l7, attempt => 1);
-- the waits still open are woken by a new matching event
SELECT woken FROM send_event('invoice.ready', '{"invoice": 3}');
SELECT run_line(:l0), run_line(:l4), run_line(:l5), run_line(:l6);
SELECT count(*) AS resumed FROM dequeue(ARRAY['free'], 10);
SELECT count(complete(r, attempt => 1)) FROM unnest(ARRAY[:l0, :l4]::bigint[]) r;
SELECT cancel(:l5), cancel(:l6);

---------------------------------------------------------------------------
-- send_event: idempotency keys per tenant
---------------------------------------------------------------------------
SELECT started('free') AS i1 \gset
SELECT wait_for_event(:i1, 1, 'idem');
SELECT event_id AS k1, woken AS k1_woken FROM send_event('idem', '{"n": 1}', idempotency_key => 'key-1') \gset
SELECT :k1_woken AS woken;
SELECT run_id = :i1 AS is_i1, resume->>'kind' AS kind FROM dequeue(ARRAY['free']);
SELECT started('free') AS i2 \gset
SELECT wait_for_event(:i2, 1, 'idem');
SELECT count(*) AS events_before FROM events \gset
SELECT event_id = :k1 AS same_event, woken, canceled
  FROM send_event('idem', '{"n": 2}', idempotency_key => 'key-1');
SELECT count(*) - :events_before AS new_events FROM events;
SELECT run_line(:i2);
-- the same key in another tenant is another event
SELECT event_id <> :k1 AS other_event, woken FROM send_event('idem', '{}', tenant => 'acme', idempotency_key => 'key-1');
-- another key sends
SELECT event_id <> :k1 AS other_event, woken FROM send_event('idem', '{"n": 3}', idempotency_key => 'key-2');
SELECT run_line(:i2);
SELECT run_id = :i2 AS is_i2, resume->>'kind' AS kind FROM dequeue(ARRAY['free'], 10);
SELECT count(complete(r, attempt => 1)) FROM unnest(ARRAY[:i1, :i2]::bigint[]) r;

-- An event sent in a transaction that rolls back wakes nothing.
SELECT started('free') AS rb \gset
SELECT wait_for_event(:rb, 1, 'rolled.back');
BEGIN;
SELECT woken FROM send_event('rolled.back');
SELECT run_line(:rb);
ROLLBACK;
SELECT run_line(:rb);
SELECT cancel(:rb);
SELECT run_line(:rb), count(*) AS waits FROM waiting_runs WHERE run_id = :rb;

---------------------------------------------------------------------------
-- sleep
---------------------------------------------------------------------------
SELECT started('free') AS s1 \gset
SELECT sleep(:s1, 1, duration => '0');
SELECT run_line(:s1);
SELECT run_id = :s1 AS is_s1, attempt, resume FROM dequeue(ARRAY['free']);
SELECT complete(:s1, attempt => 1);
SELECT started('free') AS s2 \gset
SELECT sleep(:s2, 1, until => now() - interval '1 minute');
SELECT run_id = :s2 AS is_s2, attempt, resume FROM dequeue(ARRAY['free']);
SELECT complete(:s2, attempt => 1);
SELECT started('free') AS s3 \gset
BEGIN;
SELECT sleep(:s3, 1, duration => '1 hour');
SELECT waiting_for - 'since' - 'until' AS waiting_for,
       (waiting_for->>'until')::timestamptz - (waiting_for->>'since')::timestamptz
         BETWEEN interval '59 minutes 59 seconds' AND interval '1 hour' AS until_hour_after,
       (waiting_for->>'since')::timestamptz BETWEEN now() AND clock_timestamp() AS since_ok
  FROM get_run(:s3);
COMMIT;
SELECT * FROM qstats('free');
SELECT wake_waits() AS not_due;
SELECT run_line(:s3);
UPDATE waiting_runs SET wake_at = now() - interval '1 second' WHERE run_id = :s3;
SELECT wake_waits() AS woken;
SELECT status, waiting_for, run_at <= now() AS startable FROM get_run(:s3);
SELECT run_id = :s3 AS is_s3, attempt, resume FROM dequeue(ARRAY['free']);
SELECT complete(:s3, attempt => 1);
SELECT started('free') AS s4 \gset
BEGIN;
SELECT sleep(:s4, 1, until => now() + interval '1 day');
SELECT (waiting_for->>'until')::timestamptz = now() + interval '1 day' AS until_ok FROM get_run(:s4);
COMMIT;
-- run_maintenance wakes due sleeps too
UPDATE waiting_runs SET wake_at = now() - interval '1 second' WHERE run_id = :s4;
CALL run_maintenance();
SELECT run_line(:s4);
SELECT run_id = :s4 AS is_s4, attempt, resume FROM dequeue(ARRAY['free']);
SELECT complete(:s4, attempt => 1);

---------------------------------------------------------------------------
-- timeouts
---------------------------------------------------------------------------
SELECT started('free') AS to1 \gset
SELECT wait_for_event(:to1, 1, 'never', timeout => '0');
SELECT run_line(:to1);
SELECT wake_waits() AS woken;
SELECT run_line(:to1);
SELECT woken FROM send_event('never');
SELECT run_id = :to1 AS is_to1, attempt, resume FROM dequeue(ARRAY['free']);
SELECT complete(:to1, attempt => 1);
SELECT started('free') AS to2 \gset
SELECT wait_for_event(:to2, 1, 'never', timeout => '1 day');
UPDATE waiting_runs SET wake_at = now() - interval '1 second' WHERE run_id = :to2;
SELECT wake_waits() AS woken;
SELECT run_id = :to2 AS is_to2, resume FROM dequeue(ARRAY['free']);
SELECT complete(:to2, attempt => 1);
-- without a timeout a wait is never woken by wake_waits
SELECT started('free') AS to3 \gset
SELECT wait_for_event(:to3, 1, 'never');
SELECT coalesce(waiting_for->'timeout_at', 'null') AS timeout_at FROM get_run(:to3);
SELECT wake_waits() AS woken;
SELECT run_line(:to3);
SELECT cancel(:to3);
-- waiting_for shows match and condition as given
SELECT started('free') AS to4 \gset
SELECT wait_for_event(:to4, 1, 'shown', match => '{"k": null, "o": {"p": null, "q": [null]}}',
                      condition => 'strict $.a.b[*] ? (@ > 1) == 2');
SELECT waiting_for - 'since' AS waiting_for FROM get_run(:to4);
SELECT cancel(:to4);

---------------------------------------------------------------------------
-- children
---------------------------------------------------------------------------
SELECT create_queue('parents', concurrency_limit => 1);
SELECT create_queue('kids');
-- no children: satisfied at once
SELECT started('parents') AS p1 \gset
SELECT wait_for_children(:p1, 1);
SELECT child_runs.* FROM child_runs(:p1);
SELECT run_id = :p1 AS is_p1, attempt, resume FROM dequeue(ARRAY['parents']);
SELECT complete(:p1, attempt => 1);
-- children in every final state, one still executing
SELECT started('parents') AS p2 \gset
SELECT array_agg(id ORDER BY id) AS kids
  FROM enqueue_batch('kids', ARRAY['{"k": 1}', '{"k": 2}', '{"k": 3}', '{"k": 4}', '{"k": 5}']::jsonb[],
                     parent_run_id => :p2) id \gset
SELECT (:'kids'::bigint[])[1] AS k1, (:'kids'::bigint[])[2] AS k2, (:'kids'::bigint[])[3] AS k3,
       (:'kids'::bigint[])[4] AS k4, (:'kids'::bigint[])[5] AS k5 \gset
UPDATE runs SET expires_at = now() - interval '1 second' WHERE run_id = :k5;
SELECT expire_runs();
SELECT count(*) FROM dequeue(ARRAY['kids'], 10);
SELECT complete(:k1, '{"r": 1}'), fail(:k2, '{"message": "bad"}', permanent => true), cancel(:k3, 'not needed');
BEGIN;
SELECT wait_for_children(:p2, 1);
SELECT status, waiting_for - 'since' AS waiting_for, (waiting_for->>'since')::timestamptz BETWEEN now() AND clock_timestamp() AS since_now
  FROM get_run(:p2);
COMMIT;
SELECT * FROM qstats('parents');
SELECT run_id - :k1 AS child, status, output, last_error, finished_at IS NOT NULL AS finished
  FROM child_runs(:p2);
-- the last child to finish wakes the parent in its own transaction
BEGIN;
SELECT complete(:k4, '{"r": 4}');
SELECT run_line(:p2);
COMMIT;
SELECT run_id = :p2 AS is_p2, attempt, resume FROM dequeue(ARRAY['parents']);
-- all children already final: satisfied at once, with the counts
SELECT wait_for_children(:p2, 1);
SELECT run_id = :p2 AS is_p2, attempt, resume FROM dequeue(ARRAY['parents']);
SELECT complete(:p2, attempt => 1);
-- a canceled child wakes the parent too
SELECT started('parents') AS p3 \gset
SELECT enqueue('kids', parent_run_id => :p3) AS c1 \gset
SELECT wait_for_children(:p3, 1);
SELECT run_line(:p3);
SELECT cancel(:c1);
SELECT run_line(:p3);
SELECT run_id = :p3 AS is_p3, resume FROM dequeue(ARRAY['parents']);
-- a timeout
SELECT enqueue('kids', parent_run_id => :p3) AS c3 \gset
SELECT wait_for_children(:p3, 1, timeout => '0');
SELECT wake_waits() AS woken;
SELECT run_id = :p3 AS is_p3, resume FROM dequeue(ARRAY['parents']);
SELECT cancel(:c3);
SELECT complete(:p3, attempt => 1);

-- child_runs pages in run_id order
SELECT started('parents') AS p4 \gset
SELECT min(id) AS f FROM enqueue_batch('kids', array_fill('{}'::jsonb, ARRAY[5]), parent_run_id => :p4) id \gset
SELECT array_agg(run_id - :f ORDER BY run_id) AS page FROM child_runs(:p4);
SELECT array_agg(run_id - :f) AS page FROM child_runs(:p4, page_size => 2);
SELECT array_agg(run_id - :f) AS page FROM child_runs(:p4, after_run_id => :f + 1, page_size => 2);
SELECT array_agg(run_id - :f) AS page FROM child_runs(:p4, after_run_id => :f + 3, page_size => 2);
SELECT count(*) AS page FROM child_runs(:p4, after_run_id => :f + 4, page_size => 2);
SELECT array_agg(run_id - :f) AS page FROM child_runs(:p4, after_run_id => 0, page_size => 1000);
SELECT array_agg(run_id - :f) AS page FROM child_runs(:p4, page_size => 1);
SELECT count(*) AS children_of_a_child FROM child_runs(:f);

-- cancel of a parent cancels its non-final children and theirs
SELECT enqueue('kids', parent_run_id => :f) AS g1 \gset
SELECT enqueue('kids', parent_run_id => :g1, delay => '1 hour') AS gg1 \gset
SELECT started('kids', parent => :f + 1) AS g2 \gset
SELECT wait_for_event(:g2, 1, 'never');
SELECT started('kids', parent => :p4) AS k_done \gset
SELECT complete(:k_done, '{"kept": true}');
SELECT started('kids', parent => :p4) AS k_exec \gset
SELECT * FROM qstats('kids');
SELECT cancel(:p4, 'parent done');
SELECT run_id - :f AS child, status, output, last_error->>'reason' AS reason, last_error->'canceled' AS canceled
  FROM child_runs(:p4);
SELECT status, last_error->>'reason' AS reason, last_error->'canceled' AS canceled FROM get_run(:g1);
SELECT status, last_error->>'reason' AS reason, last_error->'canceled' AS canceled FROM get_run(:gg1);
SELECT status, last_error->>'reason' AS reason, waiting_for FROM get_run(:g2);
SELECT status, last_error FROM get_run(:p4);
SELECT complete(:k_exec, attempt => 1) AS canceled_child_complete;
SELECT * FROM qstats('kids');

---------------------------------------------------------------------------
-- cancel_on
---------------------------------------------------------------------------
SELECT create_queue('co', concurrency_limit => 1);
SELECT started('co', '[{"event": "user.deleted", "match": {"user": 1}}]') AS co_exec \gset
SELECT enqueue('co', cancel_on => '[{"event": "user.deleted", "match": {"user": 1}}]') AS co_queued \gset
SELECT enqueue('co', delay => '1 hour', cancel_on => '[{"event": "user.deleted", "match": {"user": 1}}]') AS co_delayed \gset
SELECT enqueue('co', cancel_on => '[{"event": "user.deleted", "match": {"user": 2}}]') AS co_other \gset
SELECT enqueue('co') AS co_plain \gset
SELECT started('free', '[{"event": "x"}, {"event": "user.deleted", "match": {"user": 1}}]') AS co_wait \gset
SELECT wait_for_event(:co_wait, 1, 'never');
SELECT started('free', '[{"event": "user.deleted"}]') AS co_done \gset
SELECT complete(:co_done);
SELECT * FROM qstats('co');
SELECT event_id AS cev, woken AS cev_woken, canceled AS cev_canceled
  FROM send_event('user.deleted', '{"user": 1, "by": "admin"}') \gset
SELECT :cev_woken AS woken, :cev_canceled AS canceled;
SELECT u.n, g.status, g.finished_at IS NOT NULL AS finished, g.last_error - 'event_id' AS last_error,
       (g.last_error->>'event_id')::bigint = :cev AS event_id_ok
  FROM unnest(ARRAY[:co_exec, :co_queued, :co_delayed, :co_other, :co_plain, :co_wait, :co_done]::bigint[])
       WITH ORDINALITY u(id, n), get_run(u.id) g ORDER BY u.n;
SELECT count(*) AS waits_of_co_wait FROM waiting_runs WHERE run_id = :co_wait;
-- the executing run's slot is free at once
SELECT * FROM qstats('co');
SELECT run_id = :co_other AS is_co_other FROM dequeue(ARRAY['co']);
SELECT complete(:co_exec, attempt => 1) AS canceled_worker_complete, heartbeat(:co_exec, 1) AS heartbeat;
-- again: nothing left to cancel
SELECT woken, canceled FROM send_event('user.deleted', '{"user": 1}');
-- a rule without match matches any data; enqueue_batch takes rules too
SELECT count(*) FROM enqueue_batch('co', ARRAY['{}', '{}']::jsonb[], cancel_on => '[{"event": "shutdown"}]');
SELECT enqueue('acme_q', cancel_on => '[{"event": "shutdown"}]') AS co_acme \gset
SELECT woken, canceled FROM send_event('shutdown', '"any data"');
SELECT run_line(:co_acme);
SELECT woken, canceled FROM send_event('shutdown', '{}', tenant => 'acme');
SELECT run_line(:co_acme), last_error->>'reason' AS reason FROM get_run(:co_acme);
-- an empty rule list cancels on nothing
SELECT enqueue('co', cancel_on => '[]') AS co_empty \gset
SELECT woken, canceled FROM send_event('shutdown');
SELECT run_line(:co_empty);
SELECT complete(:co_other, attempt => 1);
SELECT count(cancel(run_id)) FROM runs r JOIN queues q USING (queue_id)
 WHERE q.queue = 'co' AND r.status IN ('queued', 'delayed', 'executing');

---------------------------------------------------------------------------
-- durable steps
---------------------------------------------------------------------------
SELECT create_queue('steps', retry_backoff => '0');
SELECT started('steps') AS st \gset
SELECT save_step(:st, 1, 'fetch', '{"rows": 3}') AS saved;
SELECT save_step(:st, 1, 'fetch', '{"rows": 4}') AS saved_again;
SELECT save_step(:st, 2, 'other', '{}') AS wrong_attempt;
SELECT save_step(:st, 1, 'send') AS saved_null;
SELECT save_step(:st, 1, 'send', '{"late": 1}') AS saved_again;
SELECT step, result FROM get_steps(:st);
-- kept across a fail and retry
SELECT fail(:st, '{"message": "flaky"}', attempt => 1);
SELECT run_id = :st AS is_st, attempt, resume FROM dequeue(ARRAY['steps']);
SELECT step, result FROM get_steps(:st);
SELECT save_step(:st, 1, 'stale') AS stale_attempt, save_step(:st, 2, 'fetch', '{"rows": 5}') AS taken,
       save_step(:st, 2, 'notify', '{"sent": true}') AS saved;
-- kept across a wait and resume
SELECT wait_for_event(:st, 2, 'go');
SELECT save_step(:st, 2, 'while_waiting') AS while_waiting;
SELECT woken FROM send_event('go');
SELECT run_id = :st AS is_st, attempt, resume->>'kind' AS kind FROM dequeue(ARRAY['steps']);
SELECT save_step(:st, 2, 'after_resume', '[1, 2]') AS saved;
SELECT step, result FROM get_steps(:st);
SELECT bool_and(saved_at <= now()) AS saved_at_ok,
       array_agg(step ORDER BY saved_at, step) = array_agg(step) AS oldest_first
  FROM get_steps(:st);
SELECT complete(:st, attempt => 2);
SELECT save_step(:st, 2, 'after_complete') AS after_complete;
SELECT count(*) AS steps_of_finished_run FROM get_steps(:st);
SELECT started('steps') AS st_none \gset
SELECT count(*) AS none FROM get_steps(:st_none);
SELECT cancel(:st_none);
-- deleted with their run by retention
SET queue_engine.finished_run_retention = '1h';
UPDATE runs SET finished_at = now() - interval '2 hours' WHERE run_id = :st;
SELECT prune_finished_runs() >= 1 AS pruned;
SELECT count(*) AS runs_left FROM runs WHERE run_id = :st;
SELECT count(*) AS steps_left FROM run_steps WHERE run_id = :st;
RESET queue_engine.finished_run_retention;

---------------------------------------------------------------------------
-- event retention
---------------------------------------------------------------------------
SELECT count(*) AS events_kept FROM events \gset
SELECT prune_events() AS pruned;
UPDATE events SET sent_at = now() - interval '25 hours' WHERE event_id = :k1;
SELECT prune_events() AS pruned;
SELECT count(*) = :events_kept - 1 AS one_less FROM events;
-- the key is free again once its event is gone
SELECT event_id <> :k1 AS new_event FROM send_event('idem', '{}', idempotency_key => 'key-1');
SHOW queue_engine.event_retention;
SET queue_engine.event_retention = '1h';
UPDATE events SET sent_at = now() - interval '2 hours' WHERE event_id = :e_late;
CALL run_maintenance();
SELECT count(*) AS e_late_kept FROM events WHERE event_id = :e_late;
RESET queue_engine.event_retention;

---------------------------------------------------------------------------
-- Errors: each one changes nothing.
---------------------------------------------------------------------------
SELECT started('free') AS ex \gset
SELECT enqueue('free') AS eq \gset
SELECT state() AS initial_state \gset
-- wait_for_event
SELECT * FROM err($$SELECT wait_for_event(NULL, 1, 'e')$$);
SELECT * FROM err(format($$SELECT wait_for_event(%s, NULL, 'e')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, NULL)$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, '')$$, :ex));
SELECT * FROM err($$SELECT wait_for_event(999999999, 1, 'e')$$);
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', match => '[1]')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', match => '"x"')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', match => '1')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', match => 'null')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', condition => '$.a')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', condition => '$.a + 1')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', condition => '$ ? (@.a > 1)')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', timeout => '-1 second')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', lookback => '-1 second')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', timeout => '1 month -31 days')$$, :ex));
-- (not executing that attempt: NULL, nothing changes)
SELECT * FROM err(format($$SELECT wait_for_event(%s, 2, 'e')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e')$$, :eq));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e')$$, :co_done));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, repeat('e', 201))$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, repeat('é', 101))$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_event(%s, 1, 'e', match => jsonb_build_object('d', repeat('x', 11 * 1024 * 1024)))$$, :ex));
-- send_event
SELECT * FROM err($$SELECT * FROM send_event(NULL)$$);
SELECT * FROM err($$SELECT * FROM send_event(repeat('e', 201))$$);
SELECT * FROM err($$SELECT * FROM send_event('e', idempotency_key => repeat('k', 1001))$$);
SELECT * FROM err($$SELECT * FROM send_event('')$$);
SELECT * FROM err($$SELECT * FROM send_event('e', NULL)$$);
SELECT * FROM err($$SELECT * FROM send_event('e', '{}', tenant => 'nope')$$);
SELECT * FROM err($$SELECT * FROM send_event('e', '{}', tenant => NULL)$$);
SET queue_engine.max_payload_bytes = '1kB';
SELECT * FROM err($$SELECT * FROM send_event('e', jsonb_build_object('data', repeat('x', 2000)))$$);
SELECT * FROM err($$SELECT * FROM send_event('e', jsonb_build_object('data', repeat('x', 2000)), idempotency_key => 'big')$$);
RESET queue_engine.max_payload_bytes;
SELECT count(*) AS tenants_named_nope FROM tenants WHERE tenant = 'nope';
-- (names at their limits are accepted)
BEGIN;
SELECT woken FROM send_event(repeat('e', 200), idempotency_key => repeat('k', 1000));
SELECT wait_for_event(:ex, 1, repeat('é', 100));
SELECT woken FROM send_event(repeat('é', 100));
ROLLBACK;
-- sleep
SELECT * FROM err($$SELECT sleep(NULL, 1, duration => '1 second')$$);
SELECT * FROM err(format($$SELECT sleep(%s, NULL, duration => '1 second')$$, :ex));
SELECT * FROM err($$SELECT sleep(999999999, 1, duration => '1 second')$$);
SELECT * FROM err(format($$SELECT sleep(%s, 1)$$, :ex));
SELECT * FROM err(format($$SELECT sleep(%s, 1, until => now() + interval '1 hour', duration => '1 hour')$$, :ex));
SELECT * FROM err(format($$SELECT sleep(%s, 1, duration => '-1 second')$$, :ex));
SELECT * FROM err(format($$SELECT sleep(%s, 1, until => 'infinity')$$, :ex));
SELECT * FROM err(format($$SELECT sleep(%s, 1, until => '-infinity')$$, :ex));
SELECT * FROM err(format($$SELECT sleep(%s, 1, until => NULL, duration => NULL)$$, :ex));
SELECT * FROM err(format($$SELECT sleep(%s, 2, duration => '1 second')$$, :ex));
-- wait_for_children
SELECT * FROM err($$SELECT wait_for_children(NULL, 1)$$);
SELECT * FROM err(format($$SELECT wait_for_children(%s, NULL)$$, :ex));
SELECT * FROM err($$SELECT wait_for_children(999999999, 1)$$);
SELECT * FROM err(format($$SELECT wait_for_children(%s, 1, timeout => '-1 second')$$, :ex));
SELECT * FROM err(format($$SELECT wait_for_children(%s, 2)$$, :ex));
-- child_runs
SELECT * FROM err($$SELECT count(*) FROM child_runs(NULL)$$);
SELECT * FROM err($$SELECT count(*) FROM child_runs(999999999)$$);
SELECT * FROM err(format($$SELECT count(*) FROM child_runs(%s, page_size => 0)$$, :p4));
SELECT * FROM err(format($$SELECT count(*) FROM child_runs(%s, page_size => -1)$$, :p4));
SELECT * FROM err(format($$SELECT count(*) FROM child_runs(%s, page_size => 1001)$$, :p4));
SELECT * FROM err(format($$SELECT count(*) FROM child_runs(%s, page_size => 1000)$$, :p4));
-- save_step, get_steps
SELECT * FROM err($$SELECT save_step(NULL, 1, 's')$$);
SELECT * FROM err(format($$SELECT save_step(%s, NULL, 's')$$, :ex));
SELECT * FROM err($$SELECT save_step(999999999, 1, 's')$$);
SELECT * FROM err(format($$SELECT save_step(%s, 1, NULL)$$, :ex));
SELECT * FROM err(format($$SELECT save_step(%s, 1, '')$$, :ex));
SET queue_engine.max_output_bytes = '1kB';
SELECT * FROM err(format($$SELECT save_step(%s, 1, 's', jsonb_build_object('data', repeat('x', 2000)))$$, :ex));
RESET queue_engine.max_output_bytes;
SELECT * FROM err(format($$SELECT save_step(%s, 2, 's')$$, :ex));
SELECT * FROM err(format($$SELECT save_step(%s, 1, 's')$$, :eq));
SELECT * FROM err($$SELECT count(*) FROM get_steps(NULL)$$);
SELECT * FROM err($$SELECT count(*) FROM get_steps(999999999)$$);
-- cancel_on at enqueue and enqueue_batch
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '{"event": "x"}')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '"x"')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => 'null')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[1]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[null]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"event": "x"}, ["y"]]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{}]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"match": {}}]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"event": 1}]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"event": null}]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"event": ""}]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"event": "x", "match": [1]}]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"event": "x", "match": "y"}]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"event": "x", "matches": {}}]')$$);
SELECT * FROM err($$SELECT enqueue('free', cancel_on => '[{"event": "x", "match": {}, "extra": 1}]')$$);
SELECT * FROM err($$SELECT enqueue('free', idempotency_key => 'co-key', cancel_on => '[1]')$$);
SELECT * FROM err(format($$SELECT enqueue('free', cancel_on => %L)$$, jsonb_build_array(jsonb_build_object('event', repeat('e', 201)))));
SELECT * FROM err($$SELECT enqueue_batch('free', ARRAY['{}']::jsonb[], cancel_on => '{}')$$);
SELECT * FROM err($$SELECT enqueue_batch('free', ARRAY['{}']::jsonb[], cancel_on => '[{"event": ""}]')$$);
SELECT * FROM err($$SELECT enqueue_batch('free', ARRAY['{}']::jsonb[], cancel_on => '[{"event": "x", "foo": 1}]')$$);
-- parent_run_id
SELECT * FROM err($$SELECT enqueue('free', parent_run_id => 999999999)$$);
SELECT * FROM err($$SELECT enqueue_batch('free', ARRAY['{}']::jsonb[], parent_run_id => 999999999)$$);
-- maintenance tasks
SELECT * FROM err($$SELECT wake_waits(NULL)$$);
SELECT * FROM err($$SELECT wake_waits(0)$$);
SELECT * FROM err($$SELECT prune_events(NULL)$$);
SELECT * FROM err($$SELECT prune_events(0)$$);
SELECT * FROM err($$SET queue_engine.event_retention = -2$$);
SELECT * FROM err($$SET queue_engine.event_retention = 'a week'$$);
-- event_retention is a superuser setting
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_qe_waits_nobody;
RESET client_min_messages;
CREATE ROLE regress_qe_waits_nobody;
SET ROLE regress_qe_waits_nobody;
SELECT * FROM err($$SET queue_engine.event_retention = '1h'$$);
RESET ROLE;
DROP ROLE regress_qe_waits_nobody;
-- nothing above changed anything
SELECT state() = :'initial_state' AS state_unchanged;
SELECT run_line(:ex), run_line(:eq);

---------------------------------------------------------------------------
-- The end: counts match the runs, and the engine is consistent.
---------------------------------------------------------------------------
SELECT cancel(:ex), cancel(:eq);
SELECT s.queue, s.queued, s.delayed, s.executing, s.waiting,
       (SELECT count(*) FROM runs r JOIN queues q USING (queue_id)
         WHERE q.queue = s.queue AND r.status = 'waiting') AS waiting_runs
  FROM queue_stats s ORDER BY s.queue;
SELECT count(*) AS waits FROM waiting_runs;
SELECT * FROM check_consistency(false);
