-- 13_waits.sql: waits, events, sleeps, children, cancel_on and durable steps
-- (SPEC "Waits, events and children", "Durable steps").
BEGIN;
SELECT plan(314);

-- Enqueue one run on queue q (with cancel_on rules, a parent) and start it; returns its id.
CREATE FUNCTION pg_temp.started(q text, cancel_on jsonb DEFAULT NULL, parent bigint DEFAULT NULL,
                                key text DEFAULT NULL) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	id bigint := queue_engine.enqueue(q, concurrency_key => key, parent_run_id => parent, cancel_on => cancel_on,
	                                  priority => 1000000);
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

-- Dequeue from q and return "run_id/attempt/resume" of what started (or NULL).
CREATE FUNCTION pg_temp.next(q text) RETURNS text LANGUAGE sql AS $$
	SELECT d.run_id || '/' || d.attempt || '/' || coalesce(d.resume::text, 'NULL')
	  FROM queue_engine.dequeue(ARRAY[q], 1) d
$$;
CREATE FUNCTION pg_temp.expect(id bigint, attempt int, resume jsonb) RETURNS text LANGUAGE sql AS $$
	SELECT id || '/' || attempt || '/' || coalesce(resume::text, 'NULL')
$$;

-- Start a run on queue mt, make it wait for a fresh event name with this
-- match and condition, send that event with data: how many runs it woke
-- (the run is canceled afterwards); -1 when send_event raised an error,
-- -2 when wait_for_event did not wait.
CREATE FUNCTION pg_temp.woken_by(p_match jsonb, p_condition jsonpath, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	id bigint := pg_temp.started('mt');
	ev text := 'mt.' || id;
	st queue_engine.run_status;
	w bigint;
BEGIN
	BEGIN
		st := queue_engine.wait_for_event(id, 1, ev, match => p_match, condition => p_condition);
	EXCEPTION WHEN OTHERS THEN
		st := NULL;
	END;
	IF st IS DISTINCT FROM 'waiting' THEN
		PERFORM queue_engine.cancel(id);
		RETURN -2;	-- wait_for_event failed or did not wait
	END IF;
	BEGIN
		SELECT s.woken INTO w FROM queue_engine.send_event(ev, p_data) s;
	EXCEPTION WHEN OTHERS THEN
		w := -1;	-- send_event failed
	END;
	PERFORM queue_engine.cancel(id);
	RETURN w;
END;
$$;

-- send_event, as "event_id,woken,canceled", or "ERROR sqlstate: message".
CREATE FUNCTION pg_temp.try_send(ev text, data jsonb, tenant text, key text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	res text;
BEGIN
	SELECT s.event_id || ',' || s.woken || ',' || s.canceled INTO res
	  FROM queue_engine.send_event(ev, data, tenant => tenant, idempotency_key => key) s;
	RETURN res;
EXCEPTION WHEN OTHERS THEN
	RETURN 'ERROR ' || SQLSTATE || ': ' || SQLERRM;
END;
$$;

CREATE FUNCTION pg_temp.status(id bigint) RETURNS queue_engine.run_status LANGUAGE sql AS $$
	SELECT g.status FROM queue_engine.get_run(id) g
$$;

-- queue_stats next to the counts recomputed from the runs; one text row per live queue.
CREATE VIEW pg_temp.stats_vs_runs AS
SELECT s.queue,
       ROW(s.queued, s.delayed, s.executing, s.waiting)::text AS stats,
       (SELECT ROW(count(*) FILTER (WHERE r.status = 'queued'), count(*) FILTER (WHERE r.status = 'delayed'),
                   count(*) FILTER (WHERE r.status = 'executing'), count(*) FILTER (WHERE r.status = 'waiting'))::text
          FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
         WHERE q.queue = s.queue AND q.dropped_at IS NULL) AS actual
  FROM queue_engine.queue_stats s;

CREATE FUNCTION pg_temp.qstats(q text) RETURNS text LANGUAGE sql AS $$
	SELECT stats FROM pg_temp.stats_vs_runs WHERE queue = q
$$;

SELECT queue_engine.create_queue('one', concurrency_limit => 1) \gset
SELECT queue_engine.create_queue('free') \gset
SELECT queue_engine.create_queue('mt') \gset
SELECT queue_engine.create_queue('acme_q', tenant => 'acme') \gset

---------------------------------------------------------------------------
-- A wait frees the slot; the woken run resumes with the same attempt.
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('one', '{"n": 1}', priority => 5) AS o1 \gset
SELECT queue_engine.enqueue('one', '{"n": 2}') AS o2 \gset
SELECT is(pg_temp.next('one'), pg_temp.expect(:o1, 1, NULL), 'a first start has a NULL resume');
SELECT is(pg_temp.next('one'), NULL, 'the limit-1 queue is full');
SELECT is(queue_engine.wait_for_event(:o1, 1, 'paid', match => '{"order": 1}'), 'waiting'::queue_engine.run_status,
          'wait_for_event returns waiting');
SELECT is((SELECT ROW(g.status, g.attempt, g.lease_expires_at, g.finished_at)::text FROM queue_engine.get_run(:o1) g),
          ROW('waiting'::queue_engine.run_status, 1, NULL::timestamptz, NULL::timestamptz)::text,
          'the run is waiting, same attempt, without a lease');
SELECT is(pg_temp.qstats('one'), '(1,0,0,1)', 'queue_stats: executing -1, waiting +1');
SELECT is(pg_temp.next('one'), pg_temp.expect(:o2, 1, NULL), 'the next run of the limit-1 queue starts at once');
SELECT is(pg_temp.qstats('one'), '(0,0,1,1)', 'one executing, one waiting');
SELECT is((SELECT count(*)::int FROM queue_engine.waiting_runs WHERE run_id = :o1), 1, 'one waiting_runs row');
SELECT is((SELECT status FROM queue_engine.runs WHERE run_id = :o1), 'waiting'::queue_engine.run_status,
          'the runs view shows it waiting');

-- Fenced while waiting.
SELECT is(queue_engine.complete(:o1, '{"x": 1}', attempt => 1), false, 'waiting: complete of the attempt returns false');
SELECT is(queue_engine.complete(:o1), false, 'waiting: complete without attempt returns false');
SELECT is(queue_engine.fail(:o1, '{"message": "x"}', attempt => 1), NULL, 'waiting: fail returns NULL');
SELECT is(queue_engine.fail(:o1, '{"message": "x"}', attempt => 1, permanent => true), NULL, 'waiting: permanent fail returns NULL');
SELECT is(queue_engine.heartbeat(:o1, 1), NULL, 'waiting: heartbeat returns NULL');
SELECT is(queue_engine.save_step(:o1, 1, 's', '{}'), false, 'waiting: save_step returns false');
SELECT is(queue_engine.wait_for_event(:o1, 1, 'other'), NULL, 'waiting: wait_for_event returns NULL');
SELECT is(queue_engine.sleep(:o1, 1, duration => '1 hour'), NULL, 'waiting: sleep returns NULL');
SELECT is(queue_engine.wait_for_children(:o1, 1), NULL, 'waiting: wait_for_children returns NULL');
SELECT is((SELECT ROW(g.status, g.attempt, g.output, g.last_error, g.waiting_for->>'event')::text FROM queue_engine.get_run(:o1) g),
          ROW('waiting'::queue_engine.run_status, 1, NULL::jsonb, NULL::jsonb, 'paid')::text,
          'the fenced calls changed nothing, the wait is still the first');
SELECT is((SELECT count(*)::int FROM queue_engine.run_steps WHERE run_id = :o1), 0, 'no step was saved');

-- Woken by its event.
SELECT is((SELECT ROW(s.woken, s.canceled)::text FROM queue_engine.send_event('paid', '{"order": 2}') s), '(0,0)',
          'an event with other data wakes nothing');
SELECT s.event_id AS ev_paid FROM queue_engine.send_event('paid', '{"order": 1, "total": 9}') s \gset
SELECT is((SELECT ROW(g.status, g.attempt, g.priority, g.lease_expires_at, g.waiting_for)::text FROM queue_engine.get_run(:o1) g),
          ROW('queued'::queue_engine.run_status, 1, 5, NULL::timestamptz, NULL::jsonb)::text,
          'the matching event makes it queued, same attempt and priority, no waiting_for');
SELECT ok((SELECT g.run_at BETWEEN now() AND clock_timestamp() FROM queue_engine.get_run(:o1) g), 'run_at is the wake time');
SELECT is((SELECT count(*)::int FROM queue_engine.waiting_runs WHERE run_id = :o1), 0, 'its waiting_runs row is gone');
SELECT is(queue_engine.complete(:o1, attempt => 1), false, 'woken but not yet started: complete returns false');
SELECT is(pg_temp.next('one'), NULL, 'the queue is at its limit: the woken run waits for the slot');
SELECT is(queue_engine.complete(:o2, attempt => 1), true, 'the other run completes');
SELECT is(pg_temp.next('one'),
          pg_temp.expect(:o1, 1, jsonb_build_object('kind', 'event', 'event', 'paid', 'event_id', :ev_paid,
                                                   'data', '{"order": 1, "total": 9}'::jsonb)),
          'dequeue resumes it with the same attempt and the event as resume');
SELECT cmp_ok(queue_engine.heartbeat(:o1, 1), '>', now(), 'the resumed attempt heartbeats');
SELECT is(queue_engine.complete(:o1, '{"ok": true}', attempt => 1), true, 'and completes');

-- A key-limited queue: a waiting run's key is free too.
SELECT queue_engine.create_queue('keyed', key_concurrency_limit => 1) \gset
SELECT pg_temp.started('keyed', key => 'k') AS kk1 \gset
SELECT queue_engine.enqueue('keyed', concurrency_key => 'k') AS kk2 \gset
SELECT is(pg_temp.next('keyed'), NULL, 'the key is busy');
SELECT queue_engine.wait_for_event(:kk1, 1, 'k.go') \gset
SELECT is(pg_temp.next('keyed'), pg_temp.expect(:kk2, 1, NULL), 'a waiting run holds no key slot');
SELECT queue_engine.cancel(:kk1) \gset
SELECT queue_engine.cancel(:kk2) \gset

-- A wait uses up no attempt: max_attempts 1, three waits, still attempt 1.
SELECT queue_engine.create_queue('once', max_attempts => 1) \gset
SELECT pg_temp.started('once') AS w1 \gset
SELECT queue_engine.wait_for_event(:w1, 1, 'once.a') \gset
SELECT queue_engine.send_event('once.a') \gset
SELECT is(split_part(pg_temp.next('once'), '/', 2), '1', 'after wait 1: attempt 1');
SELECT queue_engine.sleep(:w1, 1, duration => '0') \gset
SELECT is(split_part(pg_temp.next('once'), '/', 2), '1', 'after wait 2 (a sleep): attempt 1');
SELECT queue_engine.wait_for_children(:w1, 1) \gset
SELECT is(split_part(pg_temp.next('once'), '/', 2), '1', 'after wait 3 (no children): attempt 1');
SELECT is(queue_engine.fail(:w1, '{"message": "last"}', attempt => 1), 'failed'::queue_engine.run_status,
          'its one attempt is still the one that fails');
-- A retried run keeps its attempt number across a wait.
SELECT queue_engine.create_queue('retry', retry_backoff => '0') \gset
SELECT pg_temp.started('retry') AS rt \gset
SELECT queue_engine.fail(:rt, '{"message": "once"}', attempt => 1) \gset
SELECT is(pg_temp.next('retry'), pg_temp.expect(:rt, 2, NULL), 'a retry has a NULL resume');
SELECT is(queue_engine.wait_for_event(:rt, 1, 'rt.go'), NULL, 'the stale attempt 1 cannot wait');
SELECT is(queue_engine.wait_for_event(:rt, 2, 'rt.go'), 'waiting'::queue_engine.run_status, 'attempt 2 waits');
SELECT queue_engine.send_event('rt.go') \gset
SELECT is(split_part(pg_temp.next('retry'), '/', 2), '2', 'and resumes as attempt 2');
SELECT is(queue_engine.complete(:rt, attempt => 2), true, 'attempt 2 completes');

---------------------------------------------------------------------------
-- match and condition
---------------------------------------------------------------------------
SELECT is(pg_temp.woken_by('{"a": {"b": {"c": 1}}}', NULL, '{"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4}'), 1::bigint,
          'match: nested object contained in larger data');
SELECT is(pg_temp.woken_by('{"a": {"b": {"c": 1}}}', NULL, '{"a": {"b": {"c": 2}}}'), 0::bigint,
          'match: nested value differs');
SELECT is(pg_temp.woken_by('{"a": {"b": 1}}', NULL, '{"b": 1}'), 0::bigint, 'match: same key at another depth');
SELECT is(pg_temp.woken_by('{"tags": ["x"]}', NULL, '{"tags": ["y", "x"]}'), 1::bigint, 'match: array element contained');
SELECT is(pg_temp.woken_by('{"tags": ["x", "z"]}', NULL, '{"tags": ["x", "y"]}'), 0::bigint, 'match: array element missing');
SELECT is(pg_temp.woken_by('{"items": [{"id": 2}]}', NULL, '{"items": [{"id": 1}, {"id": 2, "q": 5}]}'), 1::bigint,
          'match: object inside an array contained');
SELECT is(pg_temp.woken_by('{"n": 1}', NULL, '{"n": 1.0}'), 1::bigint, 'match: numbers compare by value (1 = 1.0)');
SELECT is(pg_temp.woken_by('{"n": 1}', NULL, '{"n": "1"}'), 0::bigint, 'match: number 1 is not string "1"');
SELECT is(pg_temp.woken_by('{"s": "1"}', NULL, '{"s": 1}'), 0::bigint, 'match: string "1" is not number 1');
SELECT is(pg_temp.woken_by('{"b": true}', NULL, '{"b": "true"}'), 0::bigint, 'match: true is not "true"');
SELECT is(pg_temp.woken_by('{"b": false}', NULL, '{"b": false}'), 1::bigint, 'match: false matches false');
SELECT is(pg_temp.woken_by('{"b": false}', NULL, '{"b": null}'), 0::bigint, 'match: false is not null');
SELECT is(pg_temp.woken_by('{"k": null}', NULL, '{"k": null, "x": 1}'), 1::bigint, 'match: null matches null');
SELECT is(pg_temp.woken_by('{"k": null}', NULL, '{"x": 1}'), 0::bigint, 'match: null does not match a missing key');
SELECT is(pg_temp.woken_by('{"k": null}', NULL, '{"k": 0}'), 0::bigint, 'match: null is not 0');
SELECT is(pg_temp.woken_by('{"s": "é"}', NULL, '{"s": "é", "t": "x"}'), 1::bigint, 'match: non-ASCII strings');
SELECT is(pg_temp.woken_by(NULL, NULL, '{"any": "thing"}'), 1::bigint, 'match NULL: any object');
SELECT is(pg_temp.woken_by(NULL, NULL, '[1, 2]'), 1::bigint, 'match NULL: an array');
SELECT is(pg_temp.woken_by(NULL, NULL, '"text"'), 1::bigint, 'match NULL: a string');
SELECT is(pg_temp.woken_by('{}', NULL, '{"x": 1}'), 1::bigint, 'match {}: any object');
SELECT is(pg_temp.woken_by('{}', NULL, '[1, 2]'), 1::bigint, 'match {}: an array too (= any data)');
SELECT is(pg_temp.woken_by('{}', NULL, 'null'), 1::bigint, 'match {}: JSON null data too');
SELECT is(pg_temp.woken_by('{"a": 1}', NULL, '[{"a": 1}]'), 0::bigint, 'match an object: an array of it is not it');

SELECT is(pg_temp.woken_by(NULL, '$.amount > 100', '{"amount": 150}'), 1::bigint, 'condition true');
SELECT is(pg_temp.woken_by(NULL, '$.amount > 100', '{"amount": 100}'), 0::bigint, 'condition false');
SELECT is(pg_temp.woken_by(NULL, '$.amount > 100', '{"amount": "150"}'), 0::bigint, 'condition on a string where a number is compared: false');
SELECT is(pg_temp.woken_by(NULL, '$.amount > 100', '{}'), 0::bigint, 'condition on a missing key: false');
SELECT is(pg_temp.woken_by(NULL, 'strict $.amount > 100', '{}'), 0::bigint, 'strict condition on a missing key (an error): false');
SELECT is(pg_temp.woken_by(NULL, '$.a / $.b > 1', '{"a": 1, "b": 0}'), 0::bigint, 'condition dividing by zero: false');
SELECT is(pg_temp.woken_by(NULL, '$.d.datetime() < "2020-01-01 00:00:00+00".datetime()', '{"d": "2021-06-01"}'), 0::bigint,
          'a condition comparing a date with a timestamptz (an error even when silent) is false, and send_event does not fail (-1)');
SELECT is(pg_temp.woken_by(NULL, '$.d.datetime() < "2020-01-01 00:00:00+00".datetime()', '{"d": "2019-06-01T00:00:00+00:00"}'), 1::bigint,
          'the same condition on comparable data is true');
SELECT is(pg_temp.woken_by(NULL, '$.user.name starts with "ad" && $.user.roles[*] == "ops"',
                           '{"user": {"name": "admin", "roles": ["dev", "ops"]}}'), 1::bigint, 'condition on nested objects and arrays');
SELECT is(pg_temp.woken_by(NULL, '$.ok == true', '{"ok": "true"}'), 0::bigint, 'condition: "true" is not true');
SELECT is(pg_temp.woken_by(NULL, '$.n == null', '{"n": null}'), 1::bigint, 'condition: null == null');
SELECT is(pg_temp.woken_by(NULL, 'exists($.x.y)', '{"x": {"y": false}}'), 1::bigint, 'condition: exists');
SELECT is(pg_temp.woken_by(NULL, '$.s like_regex "^a.c$"', '{"s": "abc"}'), 1::bigint, 'condition: like_regex');
SELECT is(pg_temp.woken_by(NULL, '$.amount > 100', '"text"'), 0::bigint, 'condition on scalar data: false');
SELECT is(pg_temp.woken_by('{"kind": "x"}', '$.amount > 100', '{"kind": "x", "amount": 5}'), 0::bigint,
          'match true, condition false: no wake');
SELECT is(pg_temp.woken_by('{"kind": "x"}', '$.amount > 100', '{"kind": "y", "amount": 500}'), 0::bigint,
          'condition true, match false: no wake');
SELECT is(pg_temp.woken_by('{"kind": "x"}', '$.amount > 100', '{"kind": "x", "amount": 500}'), 1::bigint,
          'both true: woken');

-- A wait a condition could not evaluate on still wakes on a later good event.
SELECT pg_temp.started('mt') AS cw \gset
SELECT queue_engine.wait_for_event(:cw, 1, 'cw', condition => '$.a / $.b > 1') \gset
SELECT is((SELECT ROW(s.woken, s.canceled)::text FROM queue_engine.send_event('cw', '{"a": 1, "b": 0}') s), '(0,0)',
          'send_event of data the condition errors on: woken 0, no error');
SELECT is((SELECT s.woken FROM queue_engine.send_event('cw', '{"a": 4, "b": 2}') s), 1::bigint, 'a good event wakes it');
SELECT queue_engine.cancel(:cw) \gset

-- One event wakes every matching wait; a wait is woken by one event only.
SELECT pg_temp.started('mt') AS f1 \gset
SELECT pg_temp.started('mt') AS f2 \gset
SELECT pg_temp.started('mt') AS f3 \gset
SELECT queue_engine.wait_for_event(:f1, 1, 'fan') \gset
SELECT queue_engine.wait_for_event(:f2, 1, 'fan', match => '{"k": 1}') \gset
SELECT queue_engine.wait_for_event(:f3, 1, 'fan', match => '{"k": 2}') \gset
SELECT s.event_id AS fan1, s.woken AS fan1_woken FROM queue_engine.send_event('fan', '{"k": 1}') s \gset
SELECT is(:fan1_woken::bigint, 2::bigint, 'one event wakes both matching waits');
SELECT is((SELECT s.woken FROM queue_engine.send_event('fan', '{"k": 1}') s), 0::bigint, 'the same event again wakes none');
SELECT is((SELECT array_agg(d.resume->'event_id' ORDER BY d.run_id) FROM queue_engine.dequeue(ARRAY['mt'], 10) d),
          ARRAY[to_jsonb(:fan1), to_jsonb(:fan1)], 'both resume with the first event');
SELECT is(pg_temp.status(:f3), 'waiting'::queue_engine.run_status, 'the third still waits');
SELECT count(queue_engine.cancel(r)) FROM unnest(ARRAY[:f1, :f2, :f3]::bigint[]) r \gset
-- Events sent before the wait (no lookback) and to a canceled wait wake nothing.
SELECT queue_engine.send_event('early') \gset
SELECT pg_temp.started('mt') AS e1 \gset
SELECT is(queue_engine.wait_for_event(:e1, 1, 'early'), 'waiting'::queue_engine.run_status,
          'no lookback: an event sent before the wait does not count');
SELECT queue_engine.cancel(:e1) \gset
SELECT is(pg_temp.status(:e1), 'canceled'::queue_engine.run_status, 'cancel of a waiting run cancels it');
SELECT is((SELECT count(*)::int FROM queue_engine.waiting_runs WHERE run_id = :e1), 0, 'and deletes its wait');
SELECT is((SELECT s.woken FROM queue_engine.send_event('early') s), 0::bigint, 'a canceled wait is woken by nothing');

---------------------------------------------------------------------------
-- lookback
---------------------------------------------------------------------------
SELECT s.event_id AS lb_old FROM queue_engine.send_event('lb', '{"v": 1}') s \gset
SELECT s.event_id AS lb_mid FROM queue_engine.send_event('lb', '{"v": 2}') s \gset
SELECT s.event_id AS lb_new FROM queue_engine.send_event('lb', '{"v": 3}') s \gset
-- (clock_timestamp(): a lookback counts back from the wait's own moment, and
-- this whole file is one transaction)
UPDATE queue_engine.events SET sent_at = clock_timestamp() - interval '10 minutes' WHERE event_id = :lb_old;
UPDATE queue_engine.events SET sent_at = clock_timestamp() - interval '5 minutes' WHERE event_id = :lb_mid;
SELECT pg_temp.started('mt') AS lb1 \gset
SELECT is(queue_engine.wait_for_event(:lb1, 1, 'lb', lookback => '10 minutes 1 second'), 'queued'::queue_engine.run_status,
          'lookback: an event just inside it satisfies the wait at once');
SELECT is(pg_temp.next('mt'),
          pg_temp.expect(:lb1, 1, jsonb_build_object('kind', 'event', 'event', 'lb', 'event_id', :lb_old, 'data', '{"v": 1}'::jsonb)),
          'the earliest matching event is the resume');
SELECT queue_engine.complete(:lb1) \gset
SELECT pg_temp.started('mt') AS lb2 \gset
SELECT is(queue_engine.wait_for_event(:lb2, 1, 'lb', lookback => '9 minutes 59 seconds'), 'queued'::queue_engine.run_status,
          'a shorter lookback: the next event inside it');
SELECT is((SELECT (d.resume->>'event_id')::bigint FROM queue_engine.dequeue(ARRAY['mt']) d), :lb_mid::bigint,
          'the event 10 minutes ago is outside 9m59s, the one 5 minutes ago is used');
SELECT queue_engine.complete(:lb2) \gset
SELECT pg_temp.started('mt') AS lb3 \gset
SELECT is(queue_engine.wait_for_event(:lb3, 1, 'lb', match => '{"v": 1}', lookback => '9 minutes 59 seconds'),
          'waiting'::queue_engine.run_status, 'the only matching event is just outside the lookback: waiting');
SELECT is((SELECT count(*)::int FROM queue_engine.waiting_runs WHERE run_id = :lb3), 1, 'a waiting_runs row');
SELECT queue_engine.cancel(:lb3) \gset
SELECT pg_temp.started('mt') AS lb4 \gset
SELECT is(queue_engine.wait_for_event(:lb4, 1, 'lb', condition => '$.v >= 2', lookback => '1 hour'), 'queued'::queue_engine.run_status,
          'lookback with a condition');
SELECT is((SELECT (d.resume->>'event_id')::bigint FROM queue_engine.dequeue(ARRAY['mt']) d), :lb_mid::bigint,
          'the earliest event meeting the condition');
SELECT queue_engine.complete(:lb4) \gset
SELECT pg_temp.started('mt') AS lb5 \gset
SELECT is(queue_engine.wait_for_event(:lb5, 1, 'lb', match => '{"v": 3}', lookback => '1 hour'), 'queued'::queue_engine.run_status,
          'lookback with a match: an event sent in this transaction counts');
SELECT is((SELECT (d.resume->>'event_id')::bigint FROM queue_engine.dequeue(ARRAY['mt']) d), :lb_new::bigint, 'the matching one');
SELECT queue_engine.complete(:lb5) \gset
SELECT s.event_id AS lb_acme FROM queue_engine.send_event('lb.acme', '{}', tenant => 'acme') s \gset
SELECT pg_temp.started('mt') AS lb6 \gset
SELECT is(queue_engine.wait_for_event(:lb6, 1, 'lb.acme', lookback => '1 hour'), 'waiting'::queue_engine.run_status,
          'lookback does not see another tenant''s events');
SELECT queue_engine.cancel(:lb6) \gset
-- In a limit-1 queue the satisfied run is the next to start.
SELECT pg_temp.started('one') AS lb7 \gset
SELECT queue_engine.enqueue('one', priority => -1) AS lb8 \gset
SELECT is(queue_engine.wait_for_event(:lb7, 1, 'lb', lookback => '1 hour'), 'queued'::queue_engine.run_status,
          'lookback in a limit-1 queue');
SELECT is(split_part(pg_temp.next('one'), '/', 1), :lb7::text, 'the satisfied run is startable at once');
SELECT queue_engine.cancel(:lb7) \gset
SELECT queue_engine.cancel(:lb8) \gset

---------------------------------------------------------------------------
-- Tenants
---------------------------------------------------------------------------
SELECT pg_temp.started('acme_q') AS ta \gset
SELECT pg_temp.started('mt') AS td \gset
SELECT queue_engine.wait_for_event(:ta, 1, 'tn') \gset
SELECT queue_engine.wait_for_event(:td, 1, 'tn') \gset
SELECT is((SELECT s.woken FROM queue_engine.send_event('tn', '{}', tenant => 'acme') s), 1::bigint,
          'an event to acme wakes only acme''s wait');
SELECT is(ROW(pg_temp.status(:ta), pg_temp.status(:td))::text, '(queued,waiting)', 'acme''s run is woken, default''s is not');
SELECT is((SELECT s.woken FROM queue_engine.send_event('tn') s), 1::bigint, 'an event to default wakes default''s wait');
SELECT count(queue_engine.cancel(r)) FROM unnest(ARRAY[:ta, :td]::bigint[]) r \gset
SELECT throws_ok($$SELECT * FROM queue_engine.send_event('tn', '{}', tenant => 'nope')$$, '42704', 'tenant "nope" does not exist',
                 'send_event to an unknown tenant');
SELECT is((SELECT count(*)::int FROM queue_engine.tenants WHERE tenant = 'nope'), 0, 'and creates no tenant');

---------------------------------------------------------------------------
-- Idempotent send
---------------------------------------------------------------------------
SELECT pg_temp.started('mt') AS i1 \gset
SELECT queue_engine.wait_for_event(:i1, 1, 'idem') \gset
SELECT s.event_id AS ik1, s.woken AS ik1_woken FROM queue_engine.send_event('idem', '{"n": 1}', idempotency_key => 'k1') s \gset
SELECT is(:ik1_woken::bigint, 1::bigint, 'the first send with a key wakes');
SELECT pg_temp.started('mt') AS i2 \gset
SELECT queue_engine.wait_for_event(:i2, 1, 'idem') \gset
SELECT queue_engine.enqueue('mt', cancel_on => '[{"event": "idem"}]') AS i3 \gset
SELECT count(*) AS events_before FROM queue_engine.events \gset
SELECT is((SELECT ROW(s.event_id, s.woken, s.canceled)::text FROM queue_engine.send_event('idem', '{"n": 2}', idempotency_key => 'k1') s),
          ROW(:ik1, 0, 0)::text, 'the same key again returns the first event_id, woken 0, canceled 0');
SELECT is((SELECT count(*)::int FROM queue_engine.events), :events_before::int, 'and stores no event');
SELECT is(ROW(pg_temp.status(:i2), pg_temp.status(:i3))::text, '(waiting,queued)', 'and wakes and cancels nothing');
SELECT isnt((SELECT s.event_id FROM queue_engine.send_event('idem', '{}', tenant => 'acme', idempotency_key => 'k1') s), :ik1::bigint,
            'the same key in another tenant is another event');
SELECT is(pg_temp.status(:i2), 'waiting'::queue_engine.run_status, '(which wakes nothing of default''s)');
-- Past event_retention the key is free again (even before prune_events deleted the event).
UPDATE queue_engine.events SET sent_at = now() - interval '25 hours' WHERE event_id = :ik1;
SELECT pg_temp.try_send('idem', '{"n": 3}', 'default', 'k1') AS ik2 \gset
SELECT unalike(:'ik2'::text, 'ERROR%', 'a key older than event_retention can be sent again (no error)');
SELECT isnt(split_part(:'ik2', ',', 1), :ik1::text, 'it makes a new event');
SELECT is(split_part(:'ik2', ',', 2) || ',' || split_part(:'ik2', ',', 3), '1,1', 'which wakes and cancels');
SELECT count(queue_engine.cancel(r)) FROM unnest(ARRAY[:i1, :i2]::bigint[]) r \gset

---------------------------------------------------------------------------
-- cancel_on
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('co', concurrency_limit => 1) \gset
SELECT pg_temp.started('co', '[{"event": "user.gone", "match": {"user": 1}}]') AS c_exec \gset
SELECT queue_engine.enqueue('co', cancel_on => '[{"event": "user.gone", "match": {"user": 1}}]') AS c_queued \gset
SELECT queue_engine.enqueue('co', delay => '1 hour', cancel_on => '[{"event": "x"}, {"event": "user.gone", "match": {"user": 1}}]') AS c_delayed \gset
SELECT queue_engine.enqueue('co', cancel_on => '[{"event": "user.gone", "match": {"user": 2}}]') AS c_other \gset
SELECT queue_engine.enqueue('co', cancel_on => '[{"event": "user.gone.not", "match": {"user": 1}}]') AS c_name \gset
SELECT pg_temp.started('mt', '[{"event": "user.gone", "match": {"user": 1}}]') AS c_wait \gset
SELECT queue_engine.wait_for_event(:c_wait, 1, 'never') \gset
SELECT pg_temp.started('mt', '[{"event": "user.gone"}]') AS c_done \gset
SELECT queue_engine.complete(:c_done) \gset
SELECT queue_engine.enqueue('acme_q', cancel_on => '[{"event": "user.gone"}]') AS c_acme \gset
SELECT is(pg_temp.qstats('co'), '(3,1,1,0)', 'co: 3 queued, 1 delayed, 1 executing');
SELECT s.event_id AS cev, s.woken AS cev_woken, s.canceled AS cev_canceled
  FROM queue_engine.send_event('user.gone', '{"user": 1, "by": "admin"}') s \gset
SELECT is(ROW(:cev_woken, :cev_canceled)::text, '(0,4)', 'the event cancels the executing, queued, delayed and waiting runs');
SELECT is((SELECT array_agg(pg_temp.status(r) ORDER BY o)
             FROM unnest(ARRAY[:c_exec, :c_queued, :c_delayed, :c_wait, :c_other, :c_name, :c_done, :c_acme]::bigint[])
                  WITH ORDINALITY u(r, o)),
          '{canceled,canceled,canceled,canceled,queued,queued,completed,queued}'::queue_engine.run_status[],
          'other match, other name, a final run and another tenant''s run are untouched');
SELECT is((SELECT g.last_error FROM queue_engine.get_run(:c_exec) g),
          jsonb_build_object('message', 'canceled: event user.gone', 'reason', 'event user.gone', 'canceled', true, 'event_id', :cev),
          'last_error of an event cancel');
SELECT is((SELECT count(*)::int FROM unnest(ARRAY[:c_exec, :c_queued, :c_delayed, :c_wait]::bigint[]) r, queue_engine.get_run(r) g
            WHERE g.finished_at IS NOT NULL AND g.lease_expires_at IS NULL
              AND (g.last_error->>'event_id')::bigint = :cev), 4, 'all four finished, without a lease, naming the event');
SELECT is((SELECT count(*)::int FROM queue_engine.waiting_runs WHERE run_id = :c_wait), 0, 'the canceled wait is gone');
SELECT is(pg_temp.qstats('co'), '(2,0,0,0)', 'co: the executing run''s slot is free');
SELECT is(split_part(pg_temp.next('co'), '/', 1), :c_other::text, 'the next run starts at once');
SELECT is(ROW(queue_engine.complete(:c_exec, attempt => 1), queue_engine.heartbeat(:c_exec, 1))::text, '(f,)',
          'the canceled worker can neither complete nor heartbeat');
SELECT is((SELECT ROW(s.woken, s.canceled)::text FROM queue_engine.send_event('user.gone', '{"user": 1}') s), '(0,0)',
          'sent again: nothing left to cancel');
SELECT is((SELECT s.canceled FROM queue_engine.send_event('user.gone', '{"user": 7}', tenant => 'acme') s), 1::bigint,
          'a rule without match: any data of its tenant cancels');
SELECT queue_engine.enqueue('co', cancel_on => '[{"event": "stop.any"}]') AS c_any \gset
SELECT is((SELECT s.canceled FROM queue_engine.send_event('stop.any', '[1, 2]') s), 1::bigint,
          'a rule without match: data that is not an object cancels too (any data)');
SELECT queue_engine.cancel(:c_any) \gset
SELECT count(*) FROM queue_engine.enqueue_batch('co', ARRAY['{}', '{}', '{}']::jsonb[], cancel_on => '[{"event": "batch.stop"}]') \gset
SELECT is((SELECT s.canceled FROM queue_engine.send_event('batch.stop') s), 3::bigint, 'enqueue_batch''s rules cancel each run');
-- A run that waits for an event also named in its cancel_on: canceled or woken, never both.
SELECT pg_temp.started('mt', '[{"event": "both"}]') AS c_both \gset
SELECT queue_engine.wait_for_event(:c_both, 1, 'both') \gset
SELECT is((SELECT s.canceled FROM queue_engine.send_event('both') s), 1::bigint,
          'a waiting run whose cancel_on names the event it waits for is canceled by it');
SELECT is(pg_temp.status(:c_both), 'canceled'::queue_engine.run_status, 'and stays canceled');
SELECT queue_engine.cancel(:c_both) \gset
SELECT count(queue_engine.cancel(r)) FROM unnest(ARRAY[:c_other, :c_name]::bigint[]) r \gset

---------------------------------------------------------------------------
-- sleep, timeouts, wake_waits, run_maintenance
---------------------------------------------------------------------------
SELECT pg_temp.started('mt') AS s1 \gset
SELECT is(queue_engine.sleep(:s1, 1, duration => '0'), 'queued'::queue_engine.run_status, 'sleep of 0 returns queued');
SELECT is(pg_temp.next('mt'), pg_temp.expect(:s1, 1, '{"kind": "sleep"}'), 'and resumes at once with kind sleep');
SELECT is(queue_engine.sleep(:s1, 1, until => now() - interval '1 second'), 'queued'::queue_engine.run_status,
          'sleep until a past moment returns queued');
SELECT is(pg_temp.next('mt'), pg_temp.expect(:s1, 1, '{"kind": "sleep"}'), 'and resumes at once');
SELECT is(queue_engine.sleep(:s1, 1, duration => '1 hour'), 'waiting'::queue_engine.run_status, 'sleep of an hour waits');
SELECT is((SELECT g.waiting_for - 'since' - 'until' FROM queue_engine.get_run(:s1) g), '{"kind": "sleep"}'::jsonb,
          'waiting_for of a sleep: kind, until and since');
SELECT ok((SELECT (g.waiting_for->>'since')::timestamptz BETWEEN now() AND clock_timestamp()
              AND (g.waiting_for->>'until')::timestamptz - (g.waiting_for->>'since')::timestamptz
                  BETWEEN interval '59 minutes 59 seconds' AND interval '1 hour'
             FROM queue_engine.get_run(:s1) g), 'since is the start of the wait, until an hour after it');
SELECT pg_temp.started('mt') AS s2 \gset
SELECT is(queue_engine.sleep(:s2, 1, until => now() + interval '1 day'), 'waiting'::queue_engine.run_status, 'sleep until tomorrow');
SELECT pg_temp.started('mt') AS s3 \gset
SELECT queue_engine.sleep(:s3, 1, duration => '2 hours') \gset
SELECT is(queue_engine.wake_waits(), 0::bigint, 'wake_waits: nothing due');
UPDATE queue_engine.waiting_runs SET wake_at = now() - interval '1 second' WHERE run_id IN (:s1, :s2, :s3);
SELECT is(queue_engine.wake_waits(2), 2::bigint, 'wake_waits(2) wakes 2 of the 3 due sleeps');
SELECT is(queue_engine.wake_waits(2), 1::bigint, 'then the third');
SELECT is(queue_engine.wake_waits(), 0::bigint, 'then none');
SELECT is((SELECT array_agg(d.run_id || ':' || d.attempt || ':' || d.resume::text ORDER BY d.run_id) FROM queue_engine.dequeue(ARRAY['mt'], 10) d),
          ARRAY[:s1 || ':1:{"kind": "sleep"}', :s2 || ':1:{"kind": "sleep"}', :s3 || ':1:{"kind": "sleep"}'],
          'all three resume with kind sleep and attempt 1');
-- timeouts
SELECT is(queue_engine.wait_for_event(:s1, 1, 'never', timeout => '1 hour'), 'waiting'::queue_engine.run_status, 'a wait with a timeout');
SELECT is((SELECT g.waiting_for - 'since' - 'timeout_at' FROM queue_engine.get_run(:s1) g),
          '{"kind": "event", "event": "never", "match": {}, "condition": null}'::jsonb, 'waiting_for of an event wait with a timeout');
SELECT ok((SELECT (g.waiting_for->>'since')::timestamptz BETWEEN now() AND clock_timestamp()
              AND (g.waiting_for->>'timeout_at')::timestamptz - (g.waiting_for->>'since')::timestamptz
                  BETWEEN interval '59 minutes 59 seconds' AND interval '1 hour'
             FROM queue_engine.get_run(:s1) g), 'timeout_at is an hour after since');
SELECT is(queue_engine.wait_for_event(:s2, 1, 'never', match => '{"k": null, "o": {"p": null}}', timeout => '0'),
          'waiting'::queue_engine.run_status, 'timeout 0 waits');
SELECT is((SELECT g.waiting_for->'match' FROM queue_engine.get_run(:s2) g), '{"k": null, "o": {"p": null}}'::jsonb,
          'waiting_for shows match as given, nulls included');
SELECT is(queue_engine.wait_for_event(:s3, 1, 'never', condition => '$.a > 1'), 'waiting'::queue_engine.run_status, 'no timeout');
SELECT is((SELECT g.waiting_for->>'condition' FROM queue_engine.get_run(:s3) g), '$.a > 1'::jsonpath::text, 'waiting_for shows the condition');
SELECT is(queue_engine.wake_waits(), 1::bigint, 'wake_waits times out the timeout-0 wait only');
SELECT is(ROW(pg_temp.status(:s1), pg_temp.status(:s2), pg_temp.status(:s3))::text, '(waiting,queued,waiting)',
          'the others still wait');
SELECT is((SELECT s.woken FROM queue_engine.send_event('never', '{"a": 5}') s), 2::bigint,
          'an event after the timeout wakes the other two, not the timed-out one again');
SELECT is((SELECT array_agg(d.resume ORDER BY d.run_id) FROM queue_engine.dequeue(ARRAY['mt'], 10) d WHERE d.run_id = :s2),
          ARRAY['{"kind": "timeout", "waited_for": "event"}'::jsonb], 'the timed-out run resumes with kind timeout');
SELECT count(*) FROM queue_engine.dequeue(ARRAY['mt'], 10) \gset
SELECT is(queue_engine.wait_for_event(:s1, 1, 'never', timeout => '1 day'), 'waiting'::queue_engine.run_status, 'wait again');
SELECT is(queue_engine.sleep(:s2, 1, duration => '1 day'), 'waiting'::queue_engine.run_status, 'sleep again');
UPDATE queue_engine.waiting_runs SET wake_at = now() - interval '1 second' WHERE run_id IN (:s1, :s2);
CALL queue_engine.run_maintenance();
SELECT is(ROW(pg_temp.status(:s1), pg_temp.status(:s2))::text, '(queued,queued)', 'run_maintenance wakes a due timeout and sleep');
SELECT is((SELECT array_agg(d.resume->>'kind' ORDER BY d.run_id) FROM queue_engine.dequeue(ARRAY['mt'], 10) d),
          ARRAY['timeout', 'sleep'], 'with their resumes');
SELECT count(queue_engine.complete(r)) FROM unnest(ARRAY[:s1, :s2, :s3]::bigint[]) r \gset

---------------------------------------------------------------------------
-- children
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('par', concurrency_limit => 1) \gset
SELECT queue_engine.create_queue('kid') \gset
SELECT pg_temp.started('par') AS p0 \gset
SELECT is(queue_engine.wait_for_children(:p0, 1), 'queued'::queue_engine.run_status, 'no children: queued at once');
SELECT is(pg_temp.next('par'), pg_temp.expect(:p0, 1, '{"kind": "children", "completed": 0, "failed": 0, "canceled": 0, "expired": 0}'),
          'resume with zero counts');
SELECT queue_engine.complete(:p0) \gset
SELECT pg_temp.started('par') AS p1 \gset
SELECT queue_engine.enqueue('kid', '{"k": 1}', parent_run_id => :p1) AS k1 \gset
SELECT queue_engine.enqueue('kid', '{"k": 2}', parent_run_id => :p1) AS k2 \gset
SELECT queue_engine.enqueue('kid', '{"k": 3}', parent_run_id => :p1, ttl => '1 minute') AS k3 \gset
SELECT queue_engine.enqueue('kid', '{"k": 4}', parent_run_id => :p1, delay => '1 hour') AS k4 \gset
SELECT queue_engine.enqueue('kid', '{"k": 5}', parent_run_id => :p1) AS k5 \gset
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = :k3;
SELECT queue_engine.expire_runs() \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['kid'], 10) \gset
SELECT is(queue_engine.wait_for_children(:p1, 1), 'waiting'::queue_engine.run_status, 'non-final children: waiting');
SELECT is((SELECT g.waiting_for - 'since' FROM queue_engine.get_run(:p1) g), '{"kind": "children", "timeout_at": null}'::jsonb,
          'waiting_for of a children wait without timeout');
SELECT ok((SELECT (g.waiting_for->>'since')::timestamptz BETWEEN now() AND clock_timestamp() FROM queue_engine.get_run(:p1) g),
          'since is the start of the wait');
SELECT is(pg_temp.qstats('par'), '(0,0,0,1)', 'the parent holds no slot');
SELECT queue_engine.complete(:k1, '{"r": 1}') \gset
SELECT queue_engine.fail(:k2, '{"message": "no"}', permanent => true) \gset
SELECT is(pg_temp.status(:p1), 'waiting'::queue_engine.run_status, 'still waiting while children are open');
SELECT queue_engine.cancel(:k4) \gset
SELECT is(pg_temp.status(:p1), 'waiting'::queue_engine.run_status, 'still waiting for the last one');
SELECT is(queue_engine.complete(:k5, '{"r": 5}'), true, 'the last child completes');
SELECT is(pg_temp.status(:p1), 'queued'::queue_engine.run_status, 'the parent is woken in that transaction');
SELECT is(pg_temp.next('par'), pg_temp.expect(:p1, 1, '{"kind": "children", "completed": 2, "failed": 1, "canceled": 1, "expired": 1}'),
          'resume counts every final state');
SELECT is((SELECT array_agg(ROW(c.run_id, c.status, c.output, c.last_error->>'message', c.finished_at IS NOT NULL)::text ORDER BY c.run_id)
             FROM queue_engine.child_runs(:p1) c),
          ARRAY[ROW(:k1, 'completed', '{"r": 1}', NULL, true)::text, ROW(:k2, 'failed', NULL, 'no', true)::text,
                ROW(:k3, 'expired', NULL, NULL, true)::text, ROW(:k4, 'canceled', NULL, NULL, true)::text,
                ROW(:k5, 'completed', '{"r": 5}', NULL, true)::text],
          'child_runs: status, output, error and finish of each child in run_id order');
SELECT is(queue_engine.wait_for_children(:p1, 1), 'queued'::queue_engine.run_status, 'all children final: queued at once');
SELECT is(pg_temp.next('par'), pg_temp.expect(:p1, 1, '{"kind": "children", "completed": 2, "failed": 1, "canceled": 1, "expired": 1}'),
          'with the same counts');
-- timeout
SELECT queue_engine.enqueue('kid', parent_run_id => :p1) AS k6 \gset
SELECT is(queue_engine.wait_for_children(:p1, 1, timeout => '0'), 'waiting'::queue_engine.run_status, 'a children wait with timeout 0');
SELECT ok((SELECT g.waiting_for ? 'timeout_at' FROM queue_engine.get_run(:p1) g), 'waiting_for has timeout_at');
SELECT is(queue_engine.wake_waits(), 1::bigint, 'times out at the next wake pass');
SELECT is(pg_temp.next('par'), pg_temp.expect(:p1, 1, '{"kind": "timeout", "waited_for": "children"}'), 'resume: timeout of children');
SELECT queue_engine.cancel(:k6) \gset
SELECT is(pg_temp.status(:p1), 'executing'::queue_engine.run_status, 'a child finishing later does not wake a run that is not waiting');
SELECT queue_engine.complete(:p1) \gset

-- child_runs paging
SELECT pg_temp.started('par') AS p2 \gset
SELECT min(id) AS c0, max(id) AS c100 FROM queue_engine.enqueue_batch('kid', array_fill('{}'::jsonb, ARRAY[101]), parent_run_id => :p2) id \gset
SELECT is((SELECT count(*)::int FROM queue_engine.child_runs(:p2)), 100, 'child_runs: a page is 100 by default');
SELECT is((SELECT array_agg(c.run_id - :c0 ORDER BY c.run_id) FROM queue_engine.child_runs(:p2, page_size => 3) c), ARRAY[0, 1, 2]::bigint[],
          'page_size 3: the first three');
SELECT is((SELECT array_agg(c.run_id - :c0) FROM queue_engine.child_runs(:p2, after_run_id => :c0 + 2, page_size => 3) c), ARRAY[3, 4, 5]::bigint[],
          'after_run_id is exclusive, pages in run_id order');
SELECT is((SELECT array_agg(c.run_id - :c0) FROM queue_engine.child_runs(:p2, after_run_id => :c0 + 98) c), ARRAY[99, 100]::bigint[],
          'the last page');
SELECT is((SELECT count(*)::int FROM queue_engine.child_runs(:p2, after_run_id => :c100)), 0, 'past the last child: nothing');
SELECT is((SELECT count(*)::int FROM queue_engine.child_runs(:p2, page_size => 1000)), 101, 'page_size 1000 is allowed');
SELECT throws_ok(format('SELECT * FROM queue_engine.child_runs(%s, page_size => 1001)', :p2), '22023', NULL, 'page_size 1001 is an error');
SELECT throws_ok(format('SELECT * FROM queue_engine.child_runs(%s, page_size => 0)', :p2), '22023', NULL, 'page_size 0 is an error');
SELECT throws_ok('SELECT * FROM queue_engine.child_runs(987654321)', 'P0002', NULL, 'child_runs of an unknown run');
SELECT is((SELECT count(*)::int FROM queue_engine.child_runs(:c0)), 0, 'a run without children has none');

-- cancel of a parent cascades to children and grandchildren
SELECT queue_engine.enqueue('kid', parent_run_id => :c0) AS g1 \gset
SELECT queue_engine.enqueue('kid', parent_run_id => :g1, delay => '1 hour') AS gg1 \gset
SELECT pg_temp.started('kid', parent => :c0 + 1) AS g2 \gset
SELECT queue_engine.wait_for_event(:g2, 1, 'never') \gset
SELECT pg_temp.started('kid', parent => :p2) AS k_exec \gset
SELECT pg_temp.started('kid', parent => :p2) AS k_done \gset
SELECT queue_engine.complete(:k_done, '{"kept": 1}') \gset
SELECT is(queue_engine.wait_for_children(:p2, 1), 'waiting'::queue_engine.run_status, 'the parent waits for its children');
SELECT is(queue_engine.cancel(:p2, 'stop'), true, 'cancel of the waiting parent');
SELECT is((SELECT count(*)::int FROM queue_engine.child_runs(:p2, page_size => 1000) c WHERE c.status = 'canceled'), 102,
          'every non-final child is canceled (101 queued, 1 executing)');
SELECT is((SELECT ROW(c.status, c.output)::text FROM queue_engine.child_runs(:p2, after_run_id => :k_done - 1, page_size => 1) c),
          ROW('completed', '{"kept": 1}')::text, 'the completed child stays completed');
SELECT is((SELECT array_agg(pg_temp.status(r) ORDER BY r) FROM unnest(ARRAY[:g1, :gg1, :g2]::bigint[]) r),
          '{canceled,canceled,canceled}'::queue_engine.run_status[], 'grandchildren (queued, waiting) and a great-grandchild (delayed) too');
SELECT is((SELECT array_agg(DISTINCT g.last_error->>'reason') FROM unnest(ARRAY[:c0, :g1, :gg1, :g2, :k_exec]::bigint[]) r,
                  queue_engine.get_run(r) g), ARRAY['parent canceled'], 'with reason "parent canceled"');
SELECT is((SELECT g.last_error->>'reason' FROM queue_engine.get_run(:p2) g), 'stop', 'the parent has its own reason');
SELECT is((SELECT count(*)::int FROM queue_engine.waiting_runs WHERE run_id IN (:p2, :g2)), 0, 'their waits are gone');
SELECT is((SELECT ROW(queue_engine.complete(:k_exec, attempt => 1), queue_engine.heartbeat(:k_exec, 1))::text), '(f,)',
          'the canceled executing child''s worker is fenced');

-- Every way a child becomes final wakes its waiting parent.
SELECT queue_engine.create_queue('kid2', max_attempts => 1) \gset
SELECT pg_temp.started('par') AS pe \gset
SELECT queue_engine.enqueue('kid2', parent_run_id => :pe, ttl => '1 hour') AS ce \gset
SELECT queue_engine.wait_for_children(:pe, 1) \gset
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = :ce;
SELECT queue_engine.expire_runs() \gset
SELECT is(pg_temp.next('par'), pg_temp.expect(:pe, 1, '{"kind": "children", "completed": 0, "failed": 0, "canceled": 0, "expired": 1}'),
          'a child expired by expire_runs wakes its parent');
SELECT pg_temp.started('kid2', parent => :pe) AS cr \gset
SELECT queue_engine.wait_for_children(:pe, 1) \gset
UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = :cr;
SELECT queue_engine.rescue_stalled() \gset
SELECT is(pg_temp.next('par'), pg_temp.expect(:pe, 1, '{"kind": "children", "completed": 0, "failed": 1, "canceled": 0, "expired": 1}'),
          'a child failed by rescue_stalled (its last attempt stalled) wakes its parent');
SELECT queue_engine.enqueue('kid2', parent_run_id => :pe, cancel_on => '[{"event": "kid.stop"}]') AS cc \gset
SELECT queue_engine.wait_for_children(:pe, 1) \gset
SELECT queue_engine.send_event('kid.stop') \gset
SELECT is(pg_temp.next('par'), pg_temp.expect(:pe, 1, '{"kind": "children", "completed": 0, "failed": 1, "canceled": 1, "expired": 1}'),
          'a child canceled by its cancel_on wakes its parent');
SELECT pg_temp.started('kid2', parent => :pe) AS cb \gset
SELECT queue_engine.wait_for_children(:pe, 1) \gset
SELECT queue_engine.complete_batch(ARRAY[:cb]::bigint[]) \gset
SELECT is(pg_temp.next('par'), pg_temp.expect(:pe, 1, '{"kind": "children", "completed": 1, "failed": 1, "canceled": 1, "expired": 1}'),
          'complete_batch of the last child wakes its parent');
SELECT pg_temp.started('kid2', parent => :pe) AS cf \gset
SELECT queue_engine.wait_for_children(:pe, 1) \gset
SELECT queue_engine.fail(:cf, '{"message": "last"}') \gset
SELECT is(pg_temp.next('par'), pg_temp.expect(:pe, 1, '{"kind": "children", "completed": 1, "failed": 2, "canceled": 1, "expired": 1}'),
          'a child failing its last attempt wakes its parent');
SELECT queue_engine.enqueue('kid2', parent_run_id => :pe) AS cd \gset
SELECT queue_engine.wait_for_children(:pe, 1) \gset
SELECT queue_engine.drop_queue('kid2', force => true) \gset
SELECT is(pg_temp.next('par'), pg_temp.expect(:pe, 1, '{"kind": "children", "completed": 1, "failed": 2, "canceled": 2, "expired": 1}'),
          'drop_queue(force) of the child''s queue wakes its parent');
SELECT is(queue_engine.complete(:pe, attempt => 1), true, 'the parent completes');

-- A deep chain of descendants is canceled to its leaf.
CREATE FUNCTION pg_temp.chain(q text, root bigint, depth int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	id bigint := root;
BEGIN
	FOR i IN 1 .. depth LOOP
		id := queue_engine.enqueue(q, parent_run_id => id);
	END LOOP;
	RETURN id;
END;
$$;
SELECT queue_engine.enqueue('kid') AS chain_root \gset
SELECT pg_temp.chain('kid', :chain_root, 500) AS chain_leaf \gset
SELECT is(queue_engine.cancel(:chain_root), true, 'cancel of the root of a 500-deep chain');
SELECT is(pg_temp.status(:chain_leaf), 'canceled'::queue_engine.run_status, 'its leaf is canceled');
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE run_id BETWEEN :chain_root AND :chain_leaf AND status <> 'canceled'), 0,
          'and every run between');

---------------------------------------------------------------------------
-- Woken runs take their place in their queue.
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('prio') \gset
SELECT queue_engine.enqueue('prio', priority => 5) AS hp \gset
SELECT count(*) FROM queue_engine.enqueue_batch('prio', array_fill('{}'::jsonb, ARRAY[4])) \gset
SELECT is(split_part(pg_temp.next('prio'), '/', 1), :hp::text, 'the priority-5 run starts first');
SELECT queue_engine.wait_for_event(:hp, 1, 'hp.go') \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['prio']) \gset
SELECT queue_engine.send_event('hp.go') \gset
SELECT is(split_part(pg_temp.next('prio'), '/', 1), :hp::text, 'woken by an event, it starts before the priority-0 runs queued before it');
SELECT queue_engine.sleep(:hp, 1, duration => '1 hour') \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['prio']) \gset
UPDATE queue_engine.waiting_runs SET wake_at = now() - interval '1 second' WHERE run_id = :hp;
SELECT queue_engine.wake_waits() \gset
SELECT is(split_part(pg_temp.next('prio'), '/', 1), :hp::text, 'woken by wake_waits, likewise');
SELECT queue_engine.cancel(:hp) \gset
-- In a paused queue a woken run waits for resume_queue.
SELECT queue_engine.create_queue('pz') \gset
SELECT pg_temp.started('pz') AS pz \gset
SELECT queue_engine.wait_for_event(:pz, 1, 'pz.go') \gset
SELECT queue_engine.pause_queue('pz') \gset
SELECT is((SELECT s.woken FROM queue_engine.send_event('pz.go') s), 1::bigint, 'an event wakes a run of a paused queue');
SELECT is(pg_temp.next('pz'), NULL, 'which does not start while paused');
SELECT queue_engine.resume_queue('pz') \gset
SELECT is(pg_temp.next('pz'), pg_temp.expect(:pz, 1, jsonb_build_object('kind', 'event', 'event', 'pz.go', 'event_id',
                                  (SELECT max(event_id) FROM queue_engine.events WHERE event = 'pz.go'), 'data', '{}'::jsonb)),
          'and starts once resumed');
SELECT queue_engine.complete(:pz) \gset
-- Maintenance leaves waiting runs alone: a lease that ran out before the wait is not a stall.
SELECT pg_temp.started('pz') AS pz2 \gset
UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = :pz2;
SELECT queue_engine.wait_for_event(:pz2, 1, 'pz.never') \gset
SELECT is(queue_engine.rescue_stalled(), 0::bigint, 'rescue_stalled finds no stalled run');
SELECT is(queue_engine.expire_runs(), 0::bigint, 'expire_runs expires nothing');
SELECT is(queue_engine.promote_delayed(), 0::bigint, 'promote_delayed promotes nothing');
SELECT is(pg_temp.status(:pz2), 'waiting'::queue_engine.run_status, 'the run still waits');
SELECT is(queue_engine.complete_batch(ARRAY[:pz2]::bigint[]), 0::bigint, 'complete_batch of a waiting run completes nothing');
SELECT throws_ok($$SELECT queue_engine.drop_queue('pz')$$, '55006', NULL, 'drop_queue of a queue with a waiting run needs force');
SELECT queue_engine.drop_queue('pz', force => true) \gset
SELECT is((SELECT ROW(g.status, g.last_error->>'reason')::text FROM queue_engine.get_run(:pz2) g), '(canceled,"queue dropped")',
          'drop_queue(force) cancels the waiting run');
SELECT is((SELECT count(*)::int FROM queue_engine.waiting_runs WHERE run_id = :pz2), 0, 'and deletes its wait');
SELECT is((SELECT s.woken FROM queue_engine.send_event('pz.never') s), 0::bigint, 'which no event wakes');

-- A waiting run holds no tenant slot either.
SELECT queue_engine.create_queue('tl_a', tenant => 'tl') \gset
SELECT queue_engine.create_queue('tl_b', tenant => 'tl') \gset
SELECT queue_engine.set_tenant_limit('tl', 1) \gset
SELECT pg_temp.started('tl_a') AS tl1 \gset
SELECT queue_engine.enqueue('tl_b') AS tl2 \gset
SELECT is(pg_temp.next('tl_b'), NULL, 'the tenant is at its limit of 1');
SELECT queue_engine.wait_for_event(:tl1, 1, 'tl.go') \gset
SELECT is(pg_temp.next('tl_b'), pg_temp.expect(:tl2, 1, NULL), 'a waiting run frees its tenant''s slot');
SELECT is((SELECT s.woken FROM queue_engine.send_event('tl.go', tenant => 'tl') s), 1::bigint, 'woken');
SELECT is(pg_temp.next('tl_a'), NULL, 'the woken run waits for the tenant''s slot');
SELECT queue_engine.complete(:tl2) \gset
SELECT is(split_part(pg_temp.next('tl_a'), '/', 1), :tl1::text, 'and takes it when it is free');
SELECT queue_engine.complete(:tl1) \gset

-- A child that waits is not final: its parent keeps waiting.
SELECT pg_temp.started('par') AS pw \gset
SELECT pg_temp.started('kid', parent => :pw) AS cw1 \gset
SELECT queue_engine.wait_for_event(:cw1, 1, 'cw1.go') \gset
SELECT is(queue_engine.wait_for_children(:pw, 1), 'waiting'::queue_engine.run_status, 'a waiting child keeps its parent waiting');
SELECT queue_engine.send_event('cw1.go') \gset
SELECT is(pg_temp.status(:pw), 'waiting'::queue_engine.run_status, 'so does a woken (queued) child');
-- A child finished behind the engine's back: check_consistency finds the parent and wakes it.
UPDATE queue_engine.runs SET status = 'completed', finished_at = now() WHERE run_id = :cw1;
SELECT is((SELECT found FROM queue_engine.check_consistency(false) WHERE check_name = 'children_waits_satisfied'), 1::bigint,
          'check_consistency finds the parent whose children are all final');
SELECT is((SELECT repaired FROM queue_engine.check_consistency(true) WHERE check_name = 'children_waits_satisfied'), 1::bigint,
          'and repairs it');
SELECT is(pg_temp.next('par'), pg_temp.expect(:pw, 1, '{"kind": "children", "completed": 1, "failed": 0, "canceled": 0, "expired": 0}'),
          'by waking it');
SELECT queue_engine.complete(:pw) \gset

-- The idempotency key of an event whose send rolled back is free.
SELECT pg_temp.started('mt') AS rk \gset
SELECT queue_engine.wait_for_event(:rk, 1, 'rk') \gset
SAVEPOINT before_send;
SELECT is((SELECT s.woken FROM queue_engine.send_event('rk', idempotency_key => 'rk-1') s), 1::bigint, 'a send wakes');
ROLLBACK TO SAVEPOINT before_send;
SELECT is(pg_temp.status(:rk), 'waiting'::queue_engine.run_status, 'rolled back: the run waits again');
SELECT is((SELECT count(*)::int FROM queue_engine.events WHERE idempotency_key = 'rk-1'), 0, 'and the event is gone');
SELECT is((SELECT s.woken FROM queue_engine.send_event('rk', idempotency_key => 'rk-1') s), 1::bigint,
          'the key sends again, and wakes');
SELECT queue_engine.cancel(:rk) \gset

---------------------------------------------------------------------------
-- durable steps
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('st', retry_backoff => '0') \gset
SELECT pg_temp.started('st') AS st \gset
SELECT is(queue_engine.save_step(:st, 1, 'b', '{"v": 1}'), true, 'save_step stores');
SELECT is(queue_engine.save_step(:st, 1, 'a'), true, 'a NULL result is a result');
SELECT is(queue_engine.save_step(:st, 1, 'b', '{"v": 2}'), false, 'a second save of a step returns false');
SELECT is(queue_engine.save_step(:st, 1, 'a', '{"v": 2}'), false, 'also over a NULL result');
SELECT is(queue_engine.save_step(:st, 2, 'c', '{}'), false, 'another attempt cannot save');
SELECT is((SELECT array_agg(ROW(s.step, s.result, s.saved_at BETWEEN now() AND clock_timestamp())::text) FROM queue_engine.get_steps(:st) s),
          ARRAY[ROW('b', '{"v": 1}', true)::text, ROW('a', NULL, true)::text], 'get_steps: first results, oldest first');
SELECT is(queue_engine.fail(:st, '{"message": "x"}', attempt => 1), 'queued'::queue_engine.run_status, 'the attempt fails');
SELECT is(pg_temp.next('st'), pg_temp.expect(:st, 2, NULL), 'the retry starts');
SELECT is((SELECT array_agg(s.step) FROM queue_engine.get_steps(:st) s), ARRAY['b', 'a'], 'the steps are kept across the retry');
SELECT is(queue_engine.save_step(:st, 1, 'c'), false, 'the failed attempt cannot save');
SELECT is(queue_engine.save_step(:st, 2, 'b', '{"v": 3}'), false, 'the retry cannot overwrite');
SELECT is(queue_engine.save_step(:st, 2, 'c', '{"v": 3}'), true, 'the retry saves a new step');
SELECT queue_engine.wait_for_event(:st, 2, 'st.go') \gset
SELECT is(queue_engine.save_step(:st, 2, 'd'), false, 'no save while waiting');
SELECT queue_engine.send_event('st.go') \gset
SELECT is(split_part(pg_temp.next('st'), '/', 2), '2', 'resumed');
SELECT is((SELECT array_agg(s.step) FROM queue_engine.get_steps(:st) s), ARRAY['b', 'a', 'c'], 'the steps are kept across the wait');
SELECT is(queue_engine.save_step(:st, 2, 'd', '[1]'), true, 'the resumed attempt saves');
SELECT is(queue_engine.complete(:st, attempt => 2), true, 'completes');
SELECT is(queue_engine.save_step(:st, 2, 'e'), false, 'no save after complete');
SELECT is((SELECT array_agg(s.step) FROM queue_engine.get_steps(:st) s), ARRAY['b', 'a', 'c', 'd'], 'a finished run''s steps are readable');
SELECT throws_ok(format('SELECT queue_engine.save_step(%s, 2, NULL)', :st), '22004', NULL, 'step NULL');
SELECT throws_ok(format('SELECT queue_engine.save_step(%s, 2, %L)', :st, ''), '22023', NULL, 'step empty');
SET LOCAL queue_engine.max_output_bytes = '1kB';
SELECT pg_temp.started('st') AS st2 \gset
SELECT throws_ok(format('SELECT queue_engine.save_step(%s, 1, %L, jsonb_build_object(%L, repeat(%L, 2000)))', :st2, 's', 'd', 'x'),
                 '54000', NULL, 'a result over max_output_bytes');
SELECT is(queue_engine.save_step(:st2, 1, 's', jsonb_build_object('d', repeat('x', 900))), true, 'one under it is stored');
RESET queue_engine.max_output_bytes;
SELECT queue_engine.cancel(:st2) \gset
-- deleted with the run
SET LOCAL queue_engine.finished_run_retention = '1h';
UPDATE queue_engine.runs SET finished_at = now() - interval '2 hours' WHERE run_id = :st;
SELECT queue_engine.prune_finished_runs() \gset
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE run_id = :st), 0, 'retention deletes the run');
SELECT is((SELECT count(*)::int FROM queue_engine.run_steps WHERE run_id = :st), 0, 'and its steps');
SELECT is((SELECT count(*)::int FROM queue_engine.run_steps WHERE run_id = :st2), 1, 'another run''s steps stay');
RESET queue_engine.finished_run_retention;

---------------------------------------------------------------------------
-- Registration errors change nothing
---------------------------------------------------------------------------
SELECT pg_temp.started('mt') AS ex \gset
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(%s, NULL, %L)', :ex, 'e'), '22004', NULL, 'wait_for_event: attempt NULL');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(NULL, 1, %L)', 'e'), '22004', NULL, 'wait_for_event: run_id NULL');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(987654321, 1, %L)', 'e'), 'P0002', 'run 987654321 does not exist',
                 'wait_for_event: unknown run');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(%s, 1, %L)', :ex, ''), '22023', NULL, 'wait_for_event: empty event');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(%s, 1, %L, match => %L)', :ex, 'e', '[1]'), '22023',
                 'match must be a JSON object', 'wait_for_event: match an array');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(%s, 1, %L, match => %L)', :ex, 'e', '"x"'), '22023',
                 'match must be a JSON object', 'wait_for_event: match a string');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(%s, 1, %L, condition => %L)', :ex, 'e', '$.a'), '22023',
                 'condition must be a jsonpath predicate', 'wait_for_event: condition not a predicate');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(%s, 1, %L, condition => %L)', :ex, 'e', '$ ? (@.a > 1)'), '22023',
                 'condition must be a jsonpath predicate', 'wait_for_event: a filter is not a predicate');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(%s, 1, %L, timeout => %L)', :ex, 'e', '-1 second'), '22023', NULL,
                 'wait_for_event: negative timeout');
SELECT throws_ok(format('SELECT queue_engine.wait_for_event(%s, 1, %L, lookback => %L)', :ex, 'e', '-1 second'), '22023', NULL,
                 'wait_for_event: negative lookback');
SELECT throws_ok(format('SELECT queue_engine.sleep(%s, 1)', :ex), '22023', 'exactly one of until and duration must be given', 'sleep: neither');
SELECT throws_ok(format('SELECT queue_engine.sleep(%s, 1, until => now(), duration => %L)', :ex, '1 hour'), '22023',
                 'exactly one of until and duration must be given', 'sleep: both');
SELECT throws_ok(format('SELECT queue_engine.sleep(%s, 1, duration => %L)', :ex, '-1 second'), '22023', NULL, 'sleep: negative duration');
SELECT throws_ok(format('SELECT queue_engine.sleep(%s, NULL, duration => %L)', :ex, '1 second'), '22004', NULL, 'sleep: attempt NULL');
SELECT throws_ok(format('SELECT queue_engine.wait_for_children(%s, NULL)', :ex), '22004', NULL, 'wait_for_children: attempt NULL');
SELECT throws_ok(format('SELECT queue_engine.wait_for_children(%s, 1, timeout => %L)', :ex, '-1 second'), '22023', NULL,
                 'wait_for_children: negative timeout');
SELECT throws_ok('SELECT queue_engine.wait_for_children(987654321, 1)', 'P0002', 'run 987654321 does not exist', 'wait_for_children: unknown run');
SELECT throws_ok($$SELECT * FROM queue_engine.send_event(NULL)$$, '22004', NULL, 'send_event: event NULL');
SELECT throws_ok($$SELECT * FROM queue_engine.send_event('')$$, '22023', NULL, 'send_event: event empty');
SELECT throws_ok($$SELECT * FROM queue_engine.send_event('e', NULL)$$, '22004', NULL, 'send_event: data NULL');
SET LOCAL queue_engine.max_payload_bytes = '1kB';
SELECT throws_ok($$SELECT * FROM queue_engine.send_event('e', jsonb_build_object('d', repeat('x', 2000)))$$, '54000', NULL,
                 'send_event: data over max_payload_bytes');
RESET queue_engine.max_payload_bytes;
SELECT throws_ok($$SELECT queue_engine.enqueue('mt', cancel_on => '{"event": "x"}')$$, '22023', NULL, 'cancel_on: not an array');
SELECT throws_ok($$SELECT queue_engine.enqueue('mt', cancel_on => '[1]')$$, '22023', NULL, 'cancel_on: element not an object');
SELECT throws_ok($$SELECT queue_engine.enqueue('mt', cancel_on => '[{"match": {}}]')$$, '22023', NULL, 'cancel_on: event missing');
SELECT throws_ok($$SELECT queue_engine.enqueue('mt', cancel_on => '[{"event": 1}]')$$, '22023', NULL, 'cancel_on: event not a string');
SELECT throws_ok($$SELECT queue_engine.enqueue('mt', cancel_on => '[{"event": ""}]')$$, '22023', NULL, 'cancel_on: event empty');
SELECT throws_ok($$SELECT queue_engine.enqueue('mt', cancel_on => '[{"event": "x", "match": [1]}]')$$, '22023', NULL,
                 'cancel_on: match not an object');
SELECT throws_ok($$SELECT queue_engine.enqueue('mt', cancel_on => '[{"event": "x", "when": 1}]')$$, '22023', NULL, 'cancel_on: unknown key');
SELECT throws_ok($$SELECT queue_engine.enqueue_batch('mt', ARRAY['{}']::jsonb[], cancel_on => '[{"event": ""}]')$$, '22023', NULL,
                 'enqueue_batch: bad cancel_on');
SELECT throws_ok($$SELECT queue_engine.enqueue('mt', parent_run_id => 987654321)$$, 'P0002', 'parent run 987654321 does not exist',
                 'enqueue: unknown parent');
SELECT is((SELECT ROW(g.status, g.attempt, g.waiting_for)::text FROM queue_engine.get_run(:ex) g),
          ROW('executing'::queue_engine.run_status, 1, NULL::jsonb)::text, 'after all these errors the run still executes');
SELECT is((SELECT count(*)::int FROM queue_engine.waiting_runs WHERE run_id = :ex), 0, 'without a wait');
SELECT is(pg_temp.qstats('mt'), '(0,0,1,0)', 'and queue mt holds just it');
SELECT queue_engine.complete(:ex) \gset

---------------------------------------------------------------------------
-- prune_events, queue_stats, check_consistency
---------------------------------------------------------------------------
SELECT is(current_setting('queue_engine.event_retention'), '1d', 'event_retention defaults to 1 day');
UPDATE queue_engine.events SET sent_at = now() - interval '25 hours'
 WHERE event_id = (SELECT max(event_id) FROM queue_engine.events);
SELECT count(*) AS old_events FROM queue_engine.events WHERE sent_at < now() - interval '1 day' \gset
SELECT is(queue_engine.prune_events(), :old_events::bigint, 'prune_events deletes the events older than a day');
SELECT is((SELECT count(*)::int FROM queue_engine.events WHERE sent_at < now() - interval '1 day'), 0, 'none is left');
SET LOCAL queue_engine.event_retention = '1h';
SELECT count(*) AS events_now FROM queue_engine.events \gset
UPDATE queue_engine.events SET sent_at = now() - interval '61 minutes'
 WHERE event_id IN (SELECT event_id FROM queue_engine.events ORDER BY event_id LIMIT 3);
UPDATE queue_engine.events SET sent_at = now() - interval '59 minutes'
 WHERE event_id IN (SELECT event_id FROM queue_engine.events ORDER BY event_id OFFSET 3 LIMIT 1);
SELECT is(queue_engine.prune_events(2), 2::bigint, 'prune_events(2): a batch of 2 of the 3 past a 1 hour retention');
SELECT is(queue_engine.prune_events(), 1::bigint, 'then the third');
SELECT is((SELECT count(*)::int FROM queue_engine.events), :events_now - 3, 'the event 59 minutes old and newer ones stay');
UPDATE queue_engine.events SET sent_at = now() - interval '2 hours'
 WHERE event_id = (SELECT min(event_id) FROM queue_engine.events);
CALL queue_engine.run_maintenance();
SELECT is((SELECT count(*)::int FROM queue_engine.events), :events_now - 4, 'run_maintenance prunes events too');
RESET queue_engine.event_retention;

-- Matching by index: 2,000 runs wait on one event name, each for its own
-- value; an event reads the waits filed under its data's values, not all
-- 2,000 (this transaction's index reads, pg_stat_get_xact_tuples_returned).
SELECT queue_engine.create_queue('many') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('many',
         (SELECT array_agg(jsonb_build_object('i', i)) FROM generate_series(1, 2000) i)) \gset
SELECT count(queue_engine.wait_for_event(d.run_id, d.attempt, 'many.paid',
                                         jsonb_build_object('order_id', (d.payload->>'i')::int)))
  FROM queue_engine.dequeue(ARRAY['many'], 2000) d \gset
CREATE TEMP TABLE idx_reads AS
SELECT pg_stat_get_xact_tuples_returned('queue_engine.waiting_runs_event'::regclass) AS n;
SELECT is((SELECT woken FROM queue_engine.send_event('many.paid', '{"order_id": 1234, "note": "x"}')),
          1::bigint, '2,000 waits on one name: the event wakes its one run');
SELECT cmp_ok(pg_stat_get_xact_tuples_returned('queue_engine.waiting_runs_event'::regclass)
              - (SELECT n FROM idx_reads), '<=', 3::bigint,
              '... reading at most 3 entries of waiting_runs_event, not 2,000');
SELECT is((SELECT woken FROM queue_engine.send_event('many.paid', '{"order_id": 99999}')),
          0::bigint, 'an event that matches nothing wakes nothing');
SELECT is((SELECT count(*)::int FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
            WHERE q.queue = 'many' AND r.status = 'waiting'), 1999, 'the other 1,999 still wait');
-- An event with more scalars than the per-anchor locks take (64): it locks
-- the event name instead, and still wakes exactly its wait.
SELECT is((SELECT woken FROM queue_engine.send_event('many.paid',
             (SELECT jsonb_object_agg('f' || i, i) FROM generate_series(1, 100) i)
             || '{"order_id": 1500}'::jsonb)),
          1::bigint, 'an event of 101 scalars wakes its one run (name lock path)');
-- cancel_on rules go with their run when retention deletes it.
SELECT queue_engine.enqueue('many', '{}', cancel_on => '[{"event": "gone", "match": {"k": 1}}]') AS ruled \gset
SELECT is((SELECT count(*)::int FROM queue_engine.cancel_rules WHERE run_id = :ruled), 1, 'a run with a cancel_on rule');
SELECT queue_engine.cancel(:ruled) \gset
SET LOCAL queue_engine.finished_run_retention = '1h';
UPDATE queue_engine.runs SET finished_at = now() - interval '2 hours' WHERE run_id = :ruled;
SELECT queue_engine.prune_finished_runs() \gset
SELECT is((SELECT count(*)::int FROM queue_engine.cancel_rules WHERE run_id = :ruled), 0,
          'retention deletes the run''s cancel_on rules with it');
RESET queue_engine.finished_run_retention;

SELECT is((SELECT count(*)::int FROM pg_temp.stats_vs_runs WHERE stats IS DISTINCT FROM actual), 0,
          'queue_stats counts (waiting included) match the runs');
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE status = 'waiting'),
          (SELECT count(*)::int FROM queue_engine.waiting_runs), 'one waiting_runs row per waiting run');
SELECT is((SELECT array_agg(check_name || '=' || found ORDER BY check_name) FILTER (WHERE found <> 0)
             FROM queue_engine.check_consistency(false)), NULL::text[], 'check_consistency(false) finds nothing');

SELECT * FROM finish();
ROLLBACK;
