-- 15_metrics.sql: metrics() (SPEC "Reading runs and metrics"): the output
-- is Prometheus text exposition format 0.0.4 (every line a # HELP, # TYPE
-- or sample, every sample's family typed, label values escaped); per queue
-- gauges equal queue_stats; each counter moves by exactly the runs that
-- did its thing, and work rolled back moves none; histograms are
-- cumulative; a tenant-scoped reader sees its tenants' queues only; the
-- xmin horizon holders; table health; consistency repairs.
--
-- No enclosing transaction: the counters are the server's (shared memory,
-- moved when a transaction commits), so each step commits and the tests
-- compare a scrape before it with one after it; counters are cumulative
-- since the server started, so only differences are compared.
SELECT plan(85);

\ir as_role.psql

-- Scrapes, parsed: one row per line.
--   kind: help, type, sample, comment, empty, or bad (not in the format)
--   name: the metric (family) name; labels: a sample's labels, unescaped;
--   value: a sample's value (text), a TYPE's type, a HELP's text.
CREATE TEMP TABLE scrape (tag text NOT NULL, n int NOT NULL, kind text NOT NULL, name text,
                          labels jsonb, value text, line text, PRIMARY KEY (tag, n));
-- queue_stats at the moment of each scrape
CREATE TEMP TABLE stats_at (tag text NOT NULL, tenant text, queue text, paused boolean, concurrency_limit int,
                            queued bigint, delayed bigint, executing bigint, waiting bigint, oldest_queued_at timestamptz,
                            taken_at timestamptz);

CREATE FUNCTION pg_temp.unescape(s text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT replace(replace(replace(replace(s, '\\', chr(1)), '\"', '"'), '\n', chr(10)), chr(1), '\')
$$;

CREATE FUNCTION pg_temp.parse(body text)
RETURNS TABLE (n int, kind text, name text, labels jsonb, value text, line text)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	lname constant text := '[a-zA-Z_][a-zA-Z0-9_]*';
	mname constant text := '[a-zA-Z_:][a-zA-Z0-9_:]*';
	lvalue constant text := '"(?:[^"\\\n]|\\[\\"n])*"';
	num constant text := '(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN)';
	pair text;
	lines text[];
	m text[];
	p text[];
	k int;
BEGIN
	pair := lname || '=' || lvalue;
	lines := string_to_array(body, E'\n');
	-- the body ends with a newline: nothing after it
	IF lines[cardinality(lines)] = '' THEN
		lines := lines[1:cardinality(lines) - 1];
	ELSE
		n := cardinality(lines) + 1;
		kind := 'bad';
		line := '(no newline at the end)';
		RETURN NEXT;
	END IF;
	FOR k IN 1 .. coalesce(cardinality(lines), 0) LOOP
		n := k;
		line := lines[k];
		name := NULL;
		labels := NULL;
		value := NULL;
		IF line = '' THEN
			kind := 'empty';
		ELSIF line ~ '^# HELP ' THEN
			m := regexp_match(line, '^# HELP (' || mname || ') ((?:[^\\]|\\[\\n])*)$');
			kind := CASE WHEN m IS NULL THEN 'bad' ELSE 'help' END;
			name := m[1];
			value := m[2];
		ELSIF line ~ '^# TYPE ' THEN
			m := regexp_match(line, '^# TYPE (' || mname || ') (counter|gauge|histogram|summary|untyped)$');
			kind := CASE WHEN m IS NULL THEN 'bad' ELSE 'type' END;
			name := m[1];
			value := m[2];
		ELSIF line ~ '^#' THEN
			kind := 'comment';
		ELSE
			m := regexp_match(line, '^(' || mname || ')(?:\{((?:' || pair || ')(?:,' || pair || ')*,?)?\})? ('
									|| num || ')(?: -?[0-9]+)?$');
			IF m IS NULL THEN
				kind := 'bad';
			ELSE
				kind := 'sample';
				name := m[1];
				value := m[3];
				labels := '{}';
				FOR p IN SELECT regexp_matches(coalesce(m[2], ''), '(' || lname || ')=("(?:[^"\\]|\\[\\"n])*")', 'g') LOOP
					IF labels ? p[1] THEN
						kind := 'bad';	-- a label named twice
					END IF;
					labels := labels || jsonb_build_object(p[1], pg_temp.unescape(substr(p[2], 2, length(p[2]) - 2)));
				END LOOP;
			END IF;
		END IF;
		RETURN NEXT;
	END LOOP;
END;
$$;

-- Take a scrape (as the current role) and queue_stats with it.
CREATE FUNCTION pg_temp.take(t text, body text DEFAULT NULL) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM scrape WHERE tag = t;
	DELETE FROM stats_at WHERE tag = t;
	INSERT INTO scrape SELECT t, p.* FROM pg_temp.parse(coalesce(body, queue_engine.metrics())) p;
	IF body IS NULL THEN
		INSERT INTO stats_at SELECT t, s.tenant, s.queue, s.paused, s.concurrency_limit, s.queued, s.delayed,
									s.executing, s.waiting, s.oldest_queued_at, clock_timestamp()
							   FROM queue_engine.queue_stats s;
	END IF;
END;
$$;

-- One sample's value (NULL when absent; an error when there are several).
CREATE FUNCTION pg_temp.v(t text, metric text, lbl jsonb DEFAULT '{}') RETURNS float8 LANGUAGE sql AS $$
	SELECT s.value::float8 FROM scrape s WHERE s.tag = t AND s.kind = 'sample' AND s.name = metric AND s.labels = lbl
$$;

-- The eight counters of a queue, as "enqueued,started,completed,failed,retried,expired,canceled,rescued":
-- their differences from scrape a to scrape b.
CREATE FUNCTION pg_temp.counters(a text, b text, tenant text, queue text) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg((coalesce(pg_temp.v(b, 'queue_engine_runs_' || c || '_total', l), 0)
					   - coalesce(pg_temp.v(a, 'queue_engine_runs_' || c || '_total', l), 0))::text, ',' ORDER BY o)
	  FROM unnest(ARRAY['enqueued', 'started', 'completed', 'failed', 'retried', 'expired', 'canceled', 'rescued'])
		   WITH ORDINALITY u(c, o),
		   jsonb_build_object('tenant', tenant, 'queue', queue) l
$$;

-- Differences of the histograms' _count between two scrapes: "start_delay,run_duration".
CREATE FUNCTION pg_temp.hist_counts(a text, b text) RETURNS text LANGUAGE sql AS $$
	SELECT (pg_temp.v(b, 'queue_engine_start_delay_seconds_count') - pg_temp.v(a, 'queue_engine_start_delay_seconds_count'))
		   || ',' ||
		   (pg_temp.v(b, 'queue_engine_run_duration_seconds_count') - pg_temp.v(a, 'queue_engine_run_duration_seconds_count'))
$$;

-- Where the per-queue gauges of a scrape differ from queue_stats taken with
-- it ('' when they agree): runs by status, paused, the concurrency limit
-- (only for queues with one), the oldest startable run's age (only for
-- queues with one, and its age then); and per-queue samples of queues that
-- queue_stats does not show.
CREATE FUNCTION pg_temp.gauge_mismatches(t text) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(string_agg(msg, '; '), '') FROM (
		SELECT format('%s/%s %s: metrics %s, queue_stats %s', s.tenant, s.queue, st.status,
					  pg_temp.v(t, 'queue_engine_runs', jsonb_build_object('tenant', s.tenant, 'queue', s.queue, 'status', st.status)),
					  st.n) AS msg
		  FROM stats_at s
		  CROSS JOIN LATERAL (VALUES ('queued', s.queued), ('delayed', s.delayed), ('executing', s.executing),
									 ('waiting', s.waiting)) st(status, n)
		 WHERE s.tag = t
		   AND pg_temp.v(t, 'queue_engine_runs', jsonb_build_object('tenant', s.tenant, 'queue', s.queue, 'status', st.status))
			   IS DISTINCT FROM st.n::float8
		UNION ALL
		SELECT format('%s/%s paused: metrics %s, queue_stats %s', s.tenant, s.queue,
					  pg_temp.v(t, 'queue_engine_queue_paused', jsonb_build_object('tenant', s.tenant, 'queue', s.queue)), s.paused)
		  FROM stats_at s
		 WHERE s.tag = t
		   AND pg_temp.v(t, 'queue_engine_queue_paused', jsonb_build_object('tenant', s.tenant, 'queue', s.queue))
			   IS DISTINCT FROM CASE WHEN s.paused THEN 1 ELSE 0 END::float8
		UNION ALL
		SELECT format('%s/%s concurrency_limit: metrics %s, queue_stats %s', s.tenant, s.queue,
					  pg_temp.v(t, 'queue_engine_concurrency_limit', jsonb_build_object('tenant', s.tenant, 'queue', s.queue)),
					  s.concurrency_limit)
		  FROM stats_at s
		 WHERE s.tag = t
		   AND pg_temp.v(t, 'queue_engine_concurrency_limit', jsonb_build_object('tenant', s.tenant, 'queue', s.queue))
			   IS DISTINCT FROM s.concurrency_limit::float8
		UNION ALL
		SELECT format('%s/%s oldest_startable_age_seconds: metrics %s, oldest_queued_at %s', s.tenant, s.queue, a.age,
					  s.oldest_queued_at)
		  FROM stats_at s
		  CROSS JOIN LATERAL (SELECT pg_temp.v(t, 'queue_engine_oldest_startable_age_seconds',
											   jsonb_build_object('tenant', s.tenant, 'queue', s.queue)) AS age) a
		 WHERE s.tag = t
		   AND CASE WHEN s.oldest_queued_at IS NULL THEN a.age IS NOT NULL
					ELSE a.age IS NULL OR a.age < 0
						 OR a.age > extract(epoch FROM s.taken_at - s.oldest_queued_at)::float8 + 1 END
		UNION ALL
		SELECT format('%s: a sample for %s/%s, a queue queue_stats does not show', x.name, x.labels->>'tenant', x.labels->>'queue')
		  FROM scrape x
		 WHERE x.tag = t AND x.kind = 'sample' AND x.labels ? 'queue'
		   AND NOT EXISTS (SELECT 1 FROM stats_at s WHERE s.tag = t AND s.tenant = x.labels->>'tenant'
													  AND s.queue = x.labels->>'queue')
		   AND x.name IN ('queue_engine_runs', 'queue_engine_concurrency_limit', 'queue_engine_queue_paused',
						  'queue_engine_oldest_startable_age_seconds')
	) m
$$;

-- What in a scrape breaks the exposition format ('' when nothing):
-- unparsable lines; a sample whose family has no # TYPE before it; a
-- family typed or described twice, or whose lines are not together; the
-- same series twice; histogram series without +Inf, with buckets that are
-- not cumulative, or _count different from the +Inf bucket.
CREATE FUNCTION pg_temp.format_problems(t text) RETURNS text LANGUAGE sql AS $$
	WITH s AS (
		SELECT x.*,
			   CASE WHEN x.kind <> 'sample' THEN x.name
					WHEN EXISTS (SELECT 1 FROM scrape y WHERE y.tag = t AND y.kind = 'type' AND y.name = x.name) THEN x.name
					WHEN x.name ~ '_(bucket|sum|count)$'
						 AND EXISTS (SELECT 1 FROM scrape y WHERE y.tag = t AND y.kind = 'type' AND y.value = 'histogram'
										AND y.name = regexp_replace(x.name, '_(bucket|sum|count)$', '')) THEN
						 regexp_replace(x.name, '_(bucket|sum|count)$', '')
					WHEN x.name ~ '_(sum|count)$'
						 AND EXISTS (SELECT 1 FROM scrape y WHERE y.tag = t AND y.kind = 'type' AND y.value = 'summary'
										AND y.name = regexp_replace(x.name, '_(sum|count)$', '')) THEN
						 regexp_replace(x.name, '_(sum|count)$', '')
			   END AS family
		  FROM scrape x WHERE x.tag = t
	), h AS (	-- histogram buckets, by series (labels without le)
		SELECT s.family, s.labels - 'le' AS series, s.labels->>'le' AS le, s.value::float8 AS v,
			   CASE WHEN s.labels->>'le' = '+Inf' THEN 'Infinity'::float8 ELSE (s.labels->>'le')::float8 END AS bound
		  FROM s JOIN scrape ty ON ty.tag = t AND ty.kind = 'type' AND ty.name = s.family AND ty.value = 'histogram'
		 WHERE s.kind = 'sample' AND s.name = s.family || '_bucket'
	)
	SELECT coalesce(string_agg(p, '; '), '') FROM (
		SELECT format('line %s is not in the format: %s', n, line) AS p FROM s WHERE kind = 'bad'
		UNION ALL
		SELECT format('line %s: sample %s has no # TYPE', n, name) FROM s WHERE kind = 'sample' AND family IS NULL
		UNION ALL
		SELECT format('line %s: sample %s before its # TYPE', s.n, s.name)
		  FROM s JOIN s ty ON ty.kind = 'type' AND ty.name = s.family
		 WHERE s.kind = 'sample' AND s.n < ty.n
		UNION ALL
		SELECT format('%s %s appears %s times', kind, name, count(*)) FROM s
		 WHERE kind IN ('type', 'help') GROUP BY kind, name HAVING count(*) > 1
		UNION ALL
		SELECT format('the lines of %s are not together (lines %s to %s, %s lines)', family, min(n), max(n), count(*))
		  FROM s WHERE family IS NOT NULL GROUP BY family HAVING max(n) - min(n) + 1 <> count(*)
		UNION ALL
		SELECT format('series %s%s appears %s times', name, labels, count(*)) FROM s
		 WHERE kind = 'sample' GROUP BY name, labels HAVING count(*) > 1
		UNION ALL
		SELECT format('histogram %s%s has no +Inf bucket', family, series) FROM h
		 GROUP BY family, series HAVING count(*) FILTER (WHERE le = '+Inf') <> 1
		UNION ALL
		SELECT format('histogram %s%s: bucket le=%s (%s) below the one before it (%s)', family, series, le, v, prev)
		  FROM (SELECT h.*, lag(v) OVER (PARTITION BY family, series ORDER BY bound) AS prev FROM h) b
		 WHERE v < prev
		UNION ALL
		SELECT format('histogram %s%s: _count %s, +Inf bucket %s', h.family, h.series, c.value, h.v)
		  FROM h LEFT JOIN s c ON c.kind = 'sample' AND c.name = h.family || '_count' AND c.labels = h.series
		 WHERE h.le = '+Inf' AND c.value::float8 IS DISTINCT FROM h.v
		UNION ALL
		SELECT format('histogram %s%s has no _sum', h.family, h.series)
		  FROM h
		 WHERE h.le = '+Inf'
		   AND NOT EXISTS (SELECT 1 FROM s c WHERE c.kind = 'sample' AND c.name = h.family || '_sum' AND c.labels = h.series)
	) problems
$$;

-- Whether a scrape has a family of this name and type.
CREATE FUNCTION pg_temp.has_family(t text, metric text, typ text) RETURNS boolean LANGUAGE sql AS $$
	SELECT EXISTS (SELECT 1 FROM scrape WHERE tag = t AND kind = 'type' AND name = metric AND value = typ)
$$;

---------------------------------------------------------------------------
-- Queues: mq (tenant mt, limit 10) takes every step; a queue named with a
-- quote, a backslash and a newline; a paused queue; a queue of another
-- tenant; an unlimited one.
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('mq', tenant => 'mt', concurrency_limit => 10);
SELECT queue_engine.create_queue(E'odd"q\\x\ny', tenant => 'mt');
SELECT queue_engine.create_queue('paused_q', tenant => 'mt');
SELECT queue_engine.pause_queue('paused_q');
SELECT queue_engine.create_queue('other_q', tenant => 'other');
SELECT queue_engine.create_queue('free_q');
SELECT queue_engine.enqueue(E'odd"q\\x\ny', '{}');
SELECT queue_engine.enqueue('paused_q', '{}');
SELECT queue_engine.enqueue('other_q', '{}');
SELECT queue_engine.enqueue('free_q', '{}', delay => '1 hour');

---------------------------------------------------------------------------
-- The format
---------------------------------------------------------------------------
SELECT pg_temp.take('first');
SELECT is(pg_temp.format_problems('first'), '', 'metrics() is in the Prometheus text format (0.0.4)');
SELECT is((SELECT count(*)::int FROM scrape WHERE tag = 'first' AND kind NOT IN ('help', 'type', 'sample', 'empty')), 0,
          'every line is a # HELP, a # TYPE or a sample (or empty)');
SELECT cmp_ok((SELECT count(*)::int FROM scrape WHERE tag = 'first' AND kind = 'sample'), '>', 20, 'with samples');
SELECT is((SELECT count(*)::int FROM scrape WHERE tag = 'first' AND kind IN ('type', 'sample') AND name !~ '^queue_engine_'), 0,
          'every metric is named queue_engine_*');
SELECT is((SELECT string_agg(name, ',') FROM scrape WHERE tag = 'first' AND kind = 'type' AND value = 'counter' AND name !~ '_total$'),
          NULL, 'every counter''s name ends in _total');
SELECT is((SELECT count(*)::int FROM scrape t WHERE t.tag = 'first' AND t.kind = 'type'
             AND NOT EXISTS (SELECT 1 FROM scrape h WHERE h.tag = 'first' AND h.kind = 'help' AND h.name = t.name)), 0,
          'every family has a # HELP');
SELECT ok(pg_temp.has_family('first', 'queue_engine_runs', 'gauge')
          AND pg_temp.has_family('first', 'queue_engine_concurrency_limit', 'gauge')
          AND pg_temp.has_family('first', 'queue_engine_queue_paused', 'gauge')
          AND pg_temp.has_family('first', 'queue_engine_oldest_startable_age_seconds', 'gauge'),
          'the per-queue gauges');
SELECT is((SELECT count(*)::int FROM unnest(ARRAY['enqueued', 'started', 'completed', 'failed', 'retried', 'expired',
                                                 'canceled', 'rescued']) c
            WHERE pg_temp.has_family('first', 'queue_engine_runs_' || c || '_total', 'counter')), 8, 'the eight run counters');
SELECT ok(pg_temp.has_family('first', 'queue_engine_start_delay_seconds', 'histogram')
          AND pg_temp.has_family('first', 'queue_engine_run_duration_seconds', 'histogram'), 'the two histograms');
SELECT ok(pg_temp.has_family('first', 'queue_engine_table_dead_tuples', 'gauge')
          AND pg_temp.has_family('first', 'queue_engine_table_live_tuples', 'gauge')
          AND pg_temp.has_family('first', 'queue_engine_table_bytes', 'gauge'), 'table health');
SELECT ok(pg_temp.has_family('first', 'queue_engine_xmin_horizon_age_seconds', 'gauge')
          AND pg_temp.has_family('first', 'queue_engine_xmin_horizon_age_xids', 'gauge'), 'the xmin horizon');
SELECT ok(pg_temp.has_family('first', 'queue_engine_consistency_repairs_total', 'counter')
          AND pg_temp.has_family('first', 'queue_engine_counters_since_timestamp_seconds', 'gauge'),
          'consistency repairs, and since when the counters count');
SELECT ok(position(E'queue="odd\\"q\\\\x\\ny"' IN queue_engine.metrics()) > 0,
          'a label value is escaped: \" for the quote, \\ for the backslash, \n for the newline');
SELECT is((SELECT count(*)::int FROM scrape WHERE tag = 'first' AND kind = 'sample' AND labels->>'queue' = E'odd"q\\x\ny'), 
          (SELECT count(*)::int FROM scrape WHERE tag = 'first' AND kind = 'sample' AND labels->>'queue' = 'paused_q'),
          'and parses back to the queue''s name, in as many samples as another queue has');
SELECT is(pg_temp.v('first', 'queue_engine_runs', jsonb_build_object('tenant', 'mt', 'queue', E'odd"q\\x\ny', 'status', 'queued')),
          1::float8, 'the odd queue''s queued run');
SELECT is(pg_temp.gauge_mismatches('first'), '', 'the per-queue gauges are queue_stats''');
SELECT is((SELECT string_agg(DISTINCT labels->>'status', ',' ORDER BY labels->>'status') FROM scrape
            WHERE tag = 'first' AND kind = 'sample' AND name = 'queue_engine_runs'),
          'delayed,executing,queued,waiting', 'queue_engine_runs: status queued, delayed, executing, waiting');

---------------------------------------------------------------------------
-- Counters move by exactly the runs of each step (which commits),
-- gauges follow queue_stats, histograms count starts and finishes
---------------------------------------------------------------------------
SELECT pg_temp.take('s0');
SELECT count(*) FROM queue_engine.enqueue_batch('mq', array_fill('{}'::jsonb, ARRAY[6]));
SELECT queue_engine.enqueue('mq', '{"one": true}');
SELECT pg_temp.take('s1');
SELECT is(pg_temp.counters('s0', 's1', 'mt', 'mq'), '7,0,0,0,0,0,0,0', 'enqueue 7: enqueued +7');
SELECT is(pg_temp.gauge_mismatches('s1'), '', 'gauges after the enqueues');

SELECT run_id AS r1 FROM queue_engine.dequeue(ARRAY['mq'], 1) \gset
SELECT run_id AS r2 FROM queue_engine.dequeue(ARRAY['mq'], 1) \gset
SELECT run_id AS r3 FROM queue_engine.dequeue(ARRAY['mq'], 1) \gset
SELECT run_id AS r4 FROM queue_engine.dequeue(ARRAY['mq'], 1) \gset
SELECT run_id AS r5 FROM queue_engine.dequeue(ARRAY['mq'], 1) \gset
SELECT pg_temp.take('s2');
SELECT is(pg_temp.counters('s1', 's2', 'mt', 'mq'), '0,5,0,0,0,0,0,0', 'dequeue 5: started +5');
SELECT is(pg_temp.hist_counts('s1', 's2'), '5,0', 'start delay observed 5 times');
SELECT is(pg_temp.gauge_mismatches('s2'), '', 'gauges after the dequeues');

SELECT queue_engine.complete(:r1);
SELECT queue_engine.complete(:r2, '{"x": 1}');
SELECT pg_temp.take('s3');
SELECT is(pg_temp.counters('s2', 's3', 'mt', 'mq'), '0,0,2,0,0,0,0,0', 'complete 2: completed +2');
SELECT is(pg_temp.hist_counts('s2', 's3'), '0,2', 'run duration observed 2 times');
SELECT is(pg_temp.gauge_mismatches('s3'), '', 'gauges after the completes');

SELECT queue_engine.fail(:r3, '{"message": "bad"}', permanent => true);
SELECT pg_temp.take('s4');
SELECT is(pg_temp.counters('s3', 's4', 'mt', 'mq'), '0,0,0,1,0,0,0,0', 'a permanent fail: failed +1');
SELECT is(pg_temp.hist_counts('s3', 's4'), '0,1', 'run duration observed for the fail');

SELECT queue_engine.fail(:r4, '{"message": "again"}', retry_in => '0');
SELECT pg_temp.take('s5');
SELECT is(pg_temp.counters('s4', 's5', 'mt', 'mq'), '0,0,0,0,1,0,0,0', 'a fail with a retry: retried +1, failed unchanged');
SELECT is(pg_temp.hist_counts('s4', 's5'), '0,1', 'run duration observed for the failed attempt');
SELECT is(pg_temp.gauge_mismatches('s5'), '', 'gauges after the fails');

SELECT queue_engine.cancel(:r5);
SELECT queue_engine.cancel(min(run_id)) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
 WHERE q.queue = 'mq' AND r.status = 'queued';
SELECT pg_temp.take('s6');
SELECT is(pg_temp.counters('s5', 's6', 'mt', 'mq'), '0,0,0,0,0,0,2,0', 'cancel an executing and a queued run: canceled +2');
SELECT is(pg_temp.hist_counts('s5', 's6'), '0,0', 'a cancel observes no run duration');
SELECT is(pg_temp.gauge_mismatches('s6'), '', 'gauges after the cancels');

-- a ttl expiry, by the expire task
SELECT queue_engine.enqueue('mq', '{"ttl": true}', ttl => '1 millisecond');
SELECT pg_sleep(0.01);
SELECT pg_temp.take('s7');
SELECT queue_engine.expire_runs();
SELECT pg_temp.take('s8');
SELECT is(pg_temp.counters('s6', 's7', 'mt', 'mq'), '1,0,0,0,0,0,0,0', 'the run with a ttl: enqueued +1');
SELECT is(pg_temp.counters('s7', 's8', 'mt', 'mq'), '0,0,0,0,0,1,0,0', 'its expiry: expired +1');

-- a stall: a short lease, then the rescue task
SELECT queue_engine.create_queue('stall_q', tenant => 'mt', max_attempts => 3);
SELECT queue_engine.enqueue('stall_q', '{"stall": true}') AS st1 \gset
SELECT count(*) FROM queue_engine.dequeue(ARRAY['stall_q'], 1, lease => '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT pg_temp.take('s9');
SELECT queue_engine.rescue_stalled();
SELECT pg_temp.take('s10');
SELECT is(pg_temp.counters('s9', 's10', 'mt', 'stall_q'), '0,0,0,0,1,0,0,1',
          'a stalled run rescued for another attempt: rescued +1 (and retried +1: it is retried)');
SELECT is((SELECT status::text FROM queue_engine.get_run(:st1)), 'delayed', 'the rescued run waits for its retry');
SELECT is(pg_temp.hist_counts('s9', 's10'), '0,0', 'a rescue observes no run duration');
SELECT is(pg_temp.gauge_mismatches('s10'), '', 'gauges after the rescue');

-- the other queues did not count any of it
SELECT is(pg_temp.counters('s0', 's10', 'other', 'other_q'), '0,0,0,0,0,0,0,0', 'another queue''s counters did not move');

---------------------------------------------------------------------------
-- Work rolled back moves no counter
---------------------------------------------------------------------------
BEGIN;
SELECT count(*) FROM queue_engine.enqueue_batch('mq', array_fill('{}'::jsonb, ARRAY[3]));
SAVEPOINT sp;
SELECT count(*) FROM queue_engine.enqueue_batch('mq', array_fill('{}'::jsonb, ARRAY[2]));
SELECT count(*) FROM queue_engine.dequeue(ARRAY['mq'], 2);
ROLLBACK TO SAVEPOINT sp;
COMMIT;
SELECT pg_temp.take('s11');
SELECT is(pg_temp.counters('s10', 's11', 'mt', 'mq'), '3,0,0,0,0,0,0,0',
          'ROLLBACK TO SAVEPOINT: the enqueues and the dequeue after the savepoint do not count');
SELECT is(pg_temp.hist_counts('s10', 's11'), '0,0', 'nor in the histograms');

BEGIN;
SELECT count(*) FROM queue_engine.enqueue_batch('mq', array_fill('{}'::jsonb, ARRAY[4]));
SELECT run_id AS rb FROM queue_engine.dequeue(ARRAY['mq'], 1) \gset
SELECT queue_engine.complete(:rb);
SELECT count(*) FROM queue_engine.dequeue(ARRAY['mq'], 1);
ROLLBACK;
SELECT pg_temp.take('s12');
SELECT is(pg_temp.counters('s11', 's12', 'mt', 'mq'), '0,0,0,0,0,0,0,0', 'a rolled back transaction counts nothing');
SELECT is(pg_temp.hist_counts('s11', 's12'), '0,0', 'nor in the histograms');

DO $$
BEGIN
	PERFORM queue_engine.enqueue('mq', '{"lost": true}');
	PERFORM count(*) FROM queue_engine.dequeue(ARRAY['mq'], 1);
	RAISE EXCEPTION 'undo';
EXCEPTION WHEN raise_exception THEN
	PERFORM queue_engine.enqueue('mq', '{"kept": true}');
END;
$$;
SELECT pg_temp.take('s13');
SELECT is(pg_temp.counters('s12', 's13', 'mt', 'mq'), '1,0,0,0,0,0,0,0',
          'a PL/pgSQL exception block undone: only the enqueue after it counts');
SELECT is(pg_temp.gauge_mismatches('s13'), '', 'gauges after it all');

---------------------------------------------------------------------------
-- Histograms and other values
---------------------------------------------------------------------------
SELECT is(pg_temp.format_problems('s13'), '', 'still in the format after every kind of step');
SELECT cmp_ok((SELECT count(*)::int FROM scrape WHERE tag = 's13' AND name = 'queue_engine_start_delay_seconds_bucket'), '>=', 3,
              'start delay: several buckets');
SELECT ok((SELECT bool_and((s.value::float8 >= 0) AND s.value::float8 <= pg_temp.v('s13', 'queue_engine_run_duration_seconds_count'))
             FROM scrape s WHERE s.tag = 's13' AND s.name = 'queue_engine_run_duration_seconds_bucket'),
          'run duration: buckets between 0 and _count');
SELECT cmp_ok(pg_temp.v('s13', 'queue_engine_run_duration_seconds_sum'), '>=', 0::float8, 'run duration: _sum >= 0');
SELECT ok(pg_temp.v('s13', 'queue_engine_counters_since_timestamp_seconds')
          BETWEEN extract(epoch FROM pg_postmaster_start_time())::float8 - 1 AND extract(epoch FROM now())::float8,
          'counters_since_timestamp_seconds: after the server started, before now');
SELECT is((SELECT count(*)::int FROM scrape WHERE tag = 's13' AND kind = 'sample' AND value::float8 < 0
             AND name NOT IN ('queue_engine_counters_since_timestamp_seconds')), 0, 'no negative sample');

---------------------------------------------------------------------------
-- Table health, consistency repairs
---------------------------------------------------------------------------
SELECT is((SELECT array_agg(DISTINCT labels->>'table' ORDER BY labels->>'table') FROM scrape WHERE tag = 's13' AND kind = 'sample' AND name = 'queue_engine_table_dead_tuples'),
          (SELECT array_agg(DISTINCT labels->>'table' ORDER BY labels->>'table') FROM scrape WHERE tag = 's13' AND kind = 'sample' AND name = 'queue_engine_table_bytes'),
          'dead tuples and bytes of the same tables');
SELECT cmp_ok((SELECT count(DISTINCT labels->>'table')::int FROM scrape WHERE tag = 's13' AND kind = 'sample' AND name = 'queue_engine_table_bytes'), '>=', 3,
              'of several tables');
SELECT is((SELECT string_agg(labels->>'table', ',' ORDER BY labels->>'table') FROM scrape
            WHERE tag = 's13' AND kind = 'sample' AND name = 'queue_engine_table_bytes'
              AND labels->>'table' IN ('finished_runs', 'queues', 'ready_0') AND value::float8 > 0),
          'finished_runs,queues,ready_0', 'the tables with rows have bytes');
SELECT is(pg_temp.v('s13', 'queue_engine_consistency_repairs_total'),
          (SELECT coalesce(sum(repaired), 0)::float8 FROM queue_engine.consistency_log), 'consistency repairs: none yet');
-- drift that check_consistency repairs
UPDATE queue_engine.queue_counts SET queued = queued + 5 WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'free_q');
SELECT count(*) FROM queue_engine.check_consistency(true);
SELECT pg_temp.take('repaired');
SELECT cmp_ok((SELECT sum(repaired)::float8 FROM queue_engine.consistency_log), '>', 0::float8, 'check_consistency repaired the drift');
SELECT is(pg_temp.v('repaired', 'queue_engine_consistency_repairs_total'),
          (SELECT sum(repaired)::float8 FROM queue_engine.consistency_log), 'queue_engine_consistency_repairs_total: the repairs of consistency_log');

---------------------------------------------------------------------------
-- Tenant-scoped readers
---------------------------------------------------------------------------
-- (roles are the cluster's: ones left by an earlier run of this file go first)
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['qe_m_mt', 'qe_m_none'] LOOP
		IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('DROP OWNED BY %I', r);
			EXECUTE format('DROP ROLE %I', r);
		END IF;
	END LOOP;
END $$;
CREATE ROLE qe_m_mt;
CREATE ROLE qe_m_none;
SELECT queue_engine.grant_tenant('qe_m_mt', 'mt', 'reader');
SELECT pg_temp.take('scoped', pg_temp.as_role('qe_m_mt', 'SELECT queue_engine.metrics()'));
SELECT is(pg_temp.format_problems('scoped'), '', 'a tenant-scoped reader''s scrape is in the format');
SELECT is((SELECT string_agg(DISTINCT labels->>'tenant', ',') FROM scrape WHERE tag = 'scoped' AND labels ? 'tenant'), 'mt',
          'it has its tenant''s samples only');
SELECT is((SELECT string_agg(DISTINCT labels->>'queue', ',' ORDER BY labels->>'queue') FROM scrape
            WHERE tag = 'scoped' AND kind = 'sample' AND name = 'queue_engine_runs'),
          (SELECT string_agg(queue, ',' ORDER BY queue) FROM queue_engine.queue_stats WHERE tenant = 'mt'),
          'every queue of its tenant');
SELECT is((SELECT count(*)::int FROM scrape WHERE tag = 'scoped' AND kind = 'sample' AND labels->>'queue' = 'other_q'), 0,
          'none of another tenant''s queue');
SELECT is(pg_temp.v('scoped', 'queue_engine_runs_enqueued_total', '{"tenant": "mt", "queue": "mq"}'),
          pg_temp.v('repaired', 'queue_engine_runs_enqueued_total', '{"tenant": "mt", "queue": "mq"}'),
          'its queues'' counters as the owner sees them');
SELECT is(pg_temp.as_role('qe_m_none', 'SELECT queue_engine.metrics()'), '42501: permission denied for schema queue_engine',
          'a role without access may not call metrics()');
SELECT queue_engine.grant_tenant('qe_m_none', '*', 'reader');
SELECT pg_temp.take('all', pg_temp.as_role('qe_m_none', 'SELECT queue_engine.metrics()'));
SELECT is((SELECT string_agg(DISTINCT labels->>'tenant', ',' ORDER BY labels->>'tenant') FROM scrape WHERE tag = 'all' AND labels ? 'tenant'),
          (SELECT string_agg(DISTINCT tenant, ',' ORDER BY tenant) FROM queue_engine.queue_stats),
          'a reader of every tenant sees every tenant''s queues');

---------------------------------------------------------------------------
-- The xmin horizon: every holder, 0 when none; a prepared
-- transaction and an idle-in-transaction session (through dblink) raise it
---------------------------------------------------------------------------
SELECT pg_temp.take('horizon');
SELECT is((SELECT string_agg(labels->>'holder', ',' ORDER BY labels->>'holder') FROM scrape
            WHERE tag = 'horizon' AND kind = 'sample' AND name = 'queue_engine_xmin_horizon_age_seconds'),
          'idle_in_transaction,prepared_transaction,transaction',
          'age in seconds of each holder with a start time (a replication slot has none)');
SELECT is((SELECT string_agg(labels->>'holder', ',' ORDER BY labels->>'holder') FROM scrape
            WHERE tag = 'horizon' AND kind = 'sample' AND name = 'queue_engine_xmin_horizon_age_xids'),
          'idle_in_transaction,prepared_transaction,replication_slot,transaction', 'age in xids of each holder');
SELECT is(pg_temp.v('horizon', 'queue_engine_xmin_horizon_age_xids', '{"holder": "replication_slot"}') = 0,
          NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE xmin IS NOT NULL OR catalog_xmin IS NOT NULL),
          'replication_slot: 0 when no slot holds the horizon');

SELECT current_setting('max_prepared_transactions')::int > 0 AS can_prepare \gset
\if :can_prepare
SELECT is(pg_temp.v('horizon', 'queue_engine_xmin_horizon_age_seconds', '{"holder": "prepared_transaction"}') = 0,
          NOT EXISTS (SELECT 1 FROM pg_prepared_xacts), 'prepared_transaction: 0 when there is none');
BEGIN;
SELECT txid_current() IS NOT NULL AS has_xid;
PREPARE TRANSACTION 'qe_pgtap_15_metrics';
SELECT pg_sleep(0.2);
SELECT txid_current() IS NOT NULL AS later_xid;
SELECT pg_temp.take('prepared');
SELECT cmp_ok(pg_temp.v('prepared', 'queue_engine_xmin_horizon_age_seconds', '{"holder": "prepared_transaction"}'), '>=', 0.1::float8,
              'a prepared transaction: its age in seconds');
SELECT cmp_ok(pg_temp.v('prepared', 'queue_engine_xmin_horizon_age_xids', '{"holder": "prepared_transaction"}'), '>', 0::float8,
              'and in xids');
ROLLBACK PREPARED 'qe_pgtap_15_metrics';
SELECT pg_temp.take('unprepared');
SELECT is(pg_temp.v('unprepared', 'queue_engine_xmin_horizon_age_seconds', '{"holder": "prepared_transaction"}') = 0,
          NOT EXISTS (SELECT 1 FROM pg_prepared_xacts), 'back to 0 once it is rolled back');
\else
SELECT skip('max_prepared_transactions = 0 on this server: no transaction can be prepared', 4);
\endif

SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'dblink') AS has_dblink \gset
\if :has_dblink
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT dblink_connect('qe_idle', format('host=%s port=%s dbname=%s user=%s',
                                       split_part(current_setting('unix_socket_directories'), ',', 1),
                                       current_setting('port'), current_database(), current_user));
SELECT dblink_exec('qe_idle', 'BEGIN');
SELECT * FROM dblink('qe_idle', 'SELECT txid_current()') AS t(x bigint);
SELECT pg_sleep(0.2);
SELECT pg_temp.take('idle');
SELECT cmp_ok(pg_temp.v('idle', 'queue_engine_xmin_horizon_age_seconds', '{"holder": "idle_in_transaction"}'), '>=', 0.1::float8,
              'an idle-in-transaction session with an xid: its age in seconds');
SELECT cmp_ok(pg_temp.v('idle', 'queue_engine_xmin_horizon_age_xids', '{"holder": "idle_in_transaction"}'), '>', 0::float8,
              'and in xids');
SELECT dblink_exec('qe_idle', 'ROLLBACK');
SELECT dblink_disconnect('qe_idle');
SELECT pg_sleep(0.1);
SELECT pg_temp.take('not_idle');
SELECT is(pg_temp.v('not_idle', 'queue_engine_xmin_horizon_age_seconds', '{"holder": "idle_in_transaction"}'), 0::float8,
          'back to 0 once it ends');
\else
SELECT skip('dblink is not installed: no second session to leave idle in a transaction', 3);
\endif
SELECT is(pg_temp.format_problems('prepared') || pg_temp.format_problems('idle'), '', 'those scrapes are in the format too');

-- The oldest startable age is read again only when the queue's runs moved
-- (a per-connection cache): it follows every move, in each direction.
SELECT queue_engine.create_queue('age_q');
SELECT queue_engine.enqueue('age_q', '{}', run_at => now() - interval '100 seconds');
SELECT queue_engine.enqueue('age_q', '{}', run_at => now() - interval '50 seconds');
SELECT pg_temp.take('age1');
SELECT pg_temp.take('age2');
SELECT cmp_ok(pg_temp.v('age1', 'queue_engine_oldest_startable_age_seconds', '{"tenant": "default", "queue": "age_q"}'), '>=', 100::float8,
              'oldest startable age: the run enqueued 100 s in the past');
SELECT cmp_ok(pg_temp.v('age2', 'queue_engine_oldest_startable_age_seconds', '{"tenant": "default", "queue": "age_q"}'), '>=',
              pg_temp.v('age1', 'queue_engine_oldest_startable_age_seconds', '{"tenant": "default", "queue": "age_q"}'),
              'the next scrape without a move: the same run, older by the time between');
SELECT count(*) FROM queue_engine.dequeue(ARRAY['age_q']);
SELECT pg_temp.take('age3');
SELECT cmp_ok(pg_temp.v('age3', 'queue_engine_oldest_startable_age_seconds', '{"tenant": "default", "queue": "age_q"}'), '<', 100::float8,
              'after the oldest run was started: the next one''s age (about 50 s)');
SELECT queue_engine.enqueue('age_q', '{}', run_at => now() - interval '500 seconds');
SELECT pg_temp.take('age4');
SELECT cmp_ok(pg_temp.v('age4', 'queue_engine_oldest_startable_age_seconds', '{"tenant": "default", "queue": "age_q"}'), '>=', 500::float8,
              'an older run enqueued: its age');
SELECT count(*) FROM queue_engine.dequeue(ARRAY['age_q'], 10);
SELECT pg_temp.take('age5');
SELECT is((SELECT count(*)::int FROM scrape p
            WHERE p.tag = 'age5' AND p.name = 'queue_engine_oldest_startable_age_seconds' AND p.labels->>'queue' = 'age_q'), 0,
          'no startable run left: no age line');

-- queue_engine.metrics_labels = tenant: the same figures summed per tenant.
SELECT pg_temp.take('per_queue');
SET queue_engine.metrics_labels = tenant;
SELECT pg_temp.take('per_tenant');
RESET queue_engine.metrics_labels;
SELECT is(pg_temp.format_problems('per_tenant'), '', 'per tenant: in the format');
SELECT is((SELECT count(*)::int FROM scrape WHERE tag = 'per_tenant' AND kind = 'sample' AND labels ? 'queue'), 0,
          'per tenant: no queue label anywhere');
SELECT is((SELECT string_agg(x, ',' ORDER BY x) FROM (
             SELECT t.labels->>'tenant' || ' ' || t.name || ' ' || coalesce(t.labels->>'status', '') || ' ' ||
                    (t.value::float8 = (SELECT sum(q.value::float8) FROM scrape q
                                          WHERE q.tag = 'per_queue' AND q.kind = 'sample' AND q.name = t.name
                                            AND q.labels->>'tenant' = t.labels->>'tenant'
                                            AND (q.labels->>'status') IS NOT DISTINCT FROM (t.labels->>'status')))::text AS x
               FROM scrape t
              WHERE t.tag = 'per_tenant' AND t.kind = 'sample'
                AND (t.name = 'queue_engine_runs' OR t.name LIKE 'queue_engine_runs\_%\_total' ESCAPE '\')
                AND t.name <> 'queue_engine_runs_unattributed_total') y
            WHERE x NOT LIKE '% true'), NULL,
          'per tenant: each runs gauge and counter is the sum of its queues''');
SELECT is((SELECT count(*)::int FROM scrape t
            WHERE t.tag = 'per_tenant' AND t.kind = 'sample' AND t.name = 'queue_engine_oldest_startable_age_seconds'
              AND t.value::float8 < (SELECT max(q.value::float8) FROM scrape q
                                      WHERE q.tag = 'per_queue' AND q.kind = 'sample' AND q.name = t.name
                                        AND q.labels->>'tenant' = t.labels->>'tenant') - 1), 0,
          'per tenant: the oldest age is the greatest of its queues''');

SELECT * FROM finish();

-- The roles go (they are the cluster's, not this database's).
SELECT queue_engine.revoke_tenant('qe_m_mt', 'mt'), queue_engine.revoke_tenant('qe_m_none', '*');
DROP OWNED BY qe_m_mt, qe_m_none;
DROP ROLE qe_m_mt, qe_m_none;
