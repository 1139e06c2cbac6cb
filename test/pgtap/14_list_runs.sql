-- 14_list_runs.sql: list_runs (SPEC "Reading runs and metrics"): each filter
-- alone and combined, newest first (created_at DESC, run_id DESC), runs in
-- every state; cursors: paging with any page size lists every run exactly
-- once, page boundaries inside runs that share created_at, cursors kept
-- across finishes and new runs; tenant-scoped roles; the bound of
-- queue_engine.list_runs_max_scan and its continuation rows; and the cost
-- of a page with a history of 20,000 runs, in index tuples and buffers read
-- (never in time).
--
-- No enclosing transaction: each statement commits on its own, so runs
-- enqueued by different statements have different created_at (now()),
-- while those of one transaction or one enqueue_batch share theirs; the
-- statistics counters used for the cost are flushed between statements.
-- The database is a fresh one for this file (test/run_tests.sh).
SELECT plan(116);

\ir as_role.psql

-- The truth: run ids of queue_engine.runs (joined to its queue q and
-- tenant t) where cond holds, in list_runs' order.
CREATE FUNCTION pg_temp.truth(cond text) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
	res bigint[];
BEGIN
	EXECUTE 'SELECT coalesce(array_agg(r.run_id ORDER BY r.created_at DESC, r.run_id DESC), ''{}'')'
		 || '  FROM queue_engine.runs r JOIN queue_engine.queues q ON q.queue_id = r.queue_id'
		 || '  JOIN queue_engine.tenants t ON t.tenant_id = q.tenant_id WHERE ' || cond
	   INTO res;
	RETURN res;
END;
$$;

-- Page through list_runs(<args>, after => ..., page_size => page) from
-- cursor start to the end, following every cursor (continuation rows too).
-- ids: the runs listed, in order; pages: calls made; continuations:
-- continuation rows seen; problems: what broke the page rules (a page
-- longer than page_size, a continuation row that is not its page's last,
-- a continuation row with a column other than cursor set, a row without
-- cursor).
CREATE FUNCTION pg_temp.walk(args text, page int, start text DEFAULT NULL)
RETURNS TABLE (ids bigint[], pages int, continuations int, problems text[])
LANGUAGE plpgsql AS $$
DECLARE
	cur text := start;
	r record;
	n int;
	last_real boolean;
BEGIN
	ids := '{}';
	pages := 0;
	continuations := 0;
	problems := '{}';
	LOOP
		n := 0;
		last_real := true;
		pages := pages + 1;
		IF pages > 100000 THEN
			RAISE EXCEPTION 'walk(%, %): more than 100000 pages', args, page;
		END IF;
		FOR r IN EXECUTE format('SELECT l.* FROM queue_engine.list_runs(%s after => $1, page_size => $2)'
								' WITH ORDINALITY l ORDER BY l.ordinality',
								CASE WHEN args = '' THEN '' ELSE args || ', ' END)
			USING cur, page
		LOOP
			n := n + 1;
			IF NOT last_real THEN
				problems := problems || format('page %s: a row after its continuation row', pages);
			END IF;
			IF r.cursor IS NULL THEN
				problems := problems || format('page %s: row %s has no cursor', pages, n);
				RETURN NEXT;
				RETURN;
			END IF;
			IF r.run_id IS NULL THEN
				continuations := continuations + 1;
				last_real := false;
				IF num_nonnulls(r.queue, r.tenant, r.status, r.attempt, r.priority, r.concurrency_key,
								r.tags, r.created_at, r.started_at, r.finished_at) > 0 THEN
					problems := problems || format('page %s: a continuation row with columns set', pages);
				END IF;
			ELSE
				ids := ids || r.run_id;
			END IF;
			cur := r.cursor;
		END LOOP;
		IF n > page THEN
			problems := problems || format('page %s: %s rows for page_size %s', pages, n, page);
		END IF;
		EXIT WHEN n = 0 OR (last_real AND n < page);
	END LOOP;
	RETURN NEXT;
END;
$$;

-- The ids of one walk, and whether it kept the page rules without a continuation row.
CREATE FUNCTION pg_temp.ids(args text, page int, start text DEFAULT NULL) RETURNS bigint[]
LANGUAGE sql AS $$ SELECT ids FROM pg_temp.walk(args, page, start) $$;
CREATE FUNCTION pg_temp.clean(args text, page int) RETURNS text
LANGUAGE sql AS $$
	SELECT CASE WHEN continuations = 0 AND problems = '{}' THEN 'clean'
				ELSE format('%s continuation rows, problems %s', continuations, problems) END
	  FROM pg_temp.walk(args, page)
$$;

---------------------------------------------------------------------------
-- The runs: four queues of three tenants, a dropped queue, a queue dropped
-- and made again, a tenant without runs; 48 runs each enqueued by its own
-- statement (distinct created_at), with tags, keys, priorities and
-- payloads; then runs in one transaction and in one enqueue_batch (shared
-- created_at); then every state.
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('alpha');
SELECT queue_engine.create_queue('beta', concurrency_limit => 5);
SELECT queue_engine.create_queue('acme_q', tenant => 'acme');
SELECT queue_engine.create_queue('globex_q', tenant => 'globex');
SELECT queue_engine.create_queue('gone');
SELECT queue_engine.create_queue('reborn');
SELECT queue_engine.create_queue('quiet_q', tenant => 'quiet');

-- the dropped queue's runs: finished, then the queue dropped
SELECT queue_engine.enqueue('gone', '{"g": 1}') AS gone1 \gset
SELECT queue_engine.enqueue('gone', '{"g": 2}', tags => '{urgent}') AS gone2 \gset
SELECT queue_engine.cancel(:gone1), queue_engine.cancel(:gone2);
SELECT queue_engine.drop_queue('gone');
SELECT queue_engine.enqueue('reborn', '{"r": 1}') AS reborn1 \gset
SELECT queue_engine.cancel(:reborn1);
SELECT queue_engine.drop_queue('reborn');
SELECT queue_engine.create_queue('reborn');

SELECT format('SELECT queue_engine.enqueue(%L, %L::jsonb, tags => %L::text[], concurrency_key => %L, priority => %s)',
              (ARRAY['alpha', 'beta', 'acme_q', 'globex_q'])[1 + i % 4],
              jsonb_build_object('i', i, 'color', (ARRAY['red', 'green', 'blue'])[1 + i % 3],
                                 'deep', jsonb_build_object('even', i % 2 = 0)),
              CASE i % 5 WHEN 0 THEN '{urgent,billing}' WHEN 1 THEN '{billing}' WHEN 2 THEN NULL
                         WHEN 3 THEN '{urgent}' ELSE '{urgent,urgent}' END,
              CASE WHEN i % 6 = 0 THEN 'k' || (i % 4) END,
              i % 3)
  FROM generate_series(1, 48) i
\gexec
SELECT queue_engine.enqueue('reborn', '{"r": 2}') AS reborn2 \gset

-- 7 runs in one transaction (3 enqueues and a batch of 4), and a batch of 5
BEGIN;
SELECT queue_engine.enqueue('alpha', '{"tie": 1}', tags => '{tie}');
SELECT queue_engine.enqueue('alpha', '{"tie": 2}', tags => '{tie}');
SELECT count(*) FROM queue_engine.enqueue_batch('alpha', ARRAY['{"tie": 3}', '{"tie": 4}', '{"tie": 5}', '{"tie": 6}']::jsonb[],
                                                tags => '{tie}');
SELECT queue_engine.enqueue('alpha', '{"tie": 7}', tags => '{tie}');
COMMIT;
SELECT count(*) FROM queue_engine.enqueue_batch('beta', array_fill('{"tie2": true}'::jsonb, ARRAY[5]), tags => '{tie2,urgent}');
SELECT queue_engine.enqueue('alpha', '{"last": true}', tags => '{urgent}') AS alpha_last \gset

-- every state: executing, completed, failed, a retry (delayed, attempt 1)
SELECT run_id AS x1 FROM queue_engine.dequeue(ARRAY['alpha'], 1) \gset
SELECT run_id AS x2 FROM queue_engine.dequeue(ARRAY['alpha'], 1) \gset
SELECT run_id AS x3 FROM queue_engine.dequeue(ARRAY['alpha'], 1) \gset
SELECT run_id AS x4 FROM queue_engine.dequeue(ARRAY['alpha'], 1) \gset
SELECT queue_engine.complete(:x1, '{"ok": true}');
SELECT queue_engine.fail(:x2, '{"message": "no"}', permanent => true);
SELECT queue_engine.fail(:x3, '{"message": "later"}', retry_in => '1 hour');
-- waiting for an event, and sleeping
SELECT run_id AS b1 FROM queue_engine.dequeue(ARRAY['beta'], 1) \gset
SELECT run_id AS b2 FROM queue_engine.dequeue(ARRAY['beta'], 1) \gset
SELECT queue_engine.wait_for_event(:b1, 1, 'never.sent');
SELECT run_id AS a1 FROM queue_engine.dequeue(ARRAY['acme_q'], 1) \gset
SELECT queue_engine.sleep(:a1, 1, duration => '1 hour');
-- canceled, delayed, expired
SELECT queue_engine.cancel(min(run_id)) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
 WHERE q.queue = 'acme_q' AND r.status = 'queued';
SELECT queue_engine.enqueue('globex_q', '{"later": 1}', delay => '1 hour', tags => '{billing}') AS d1 \gset
SELECT queue_engine.enqueue('globex_q', '{"later": 2}', run_at => now() + interval '2 hours') AS d2 \gset
SELECT queue_engine.enqueue('globex_q', '{"short": 1}', ttl => '1 millisecond', tags => '{urgent}') AS e1 \gset
SELECT pg_sleep(0.01);
SELECT queue_engine.expire_runs();

SELECT count(*) AS total FROM queue_engine.runs \gset
-- a run in the middle of the list, whose created_at bounds the time filters
SELECT run_id AS mid, created_at AS mid_at FROM queue_engine.runs WHERE payload = '{"i": 24, "color": "red", "deep": {"even": true}}' \gset
SELECT created_at AS late_at FROM queue_engine.runs WHERE payload = '{"i": 40, "color": "green", "deep": {"even": true}}' \gset

---------------------------------------------------------------------------
-- The data is what the tests need
---------------------------------------------------------------------------
SELECT is((SELECT array_agg(DISTINCT status ORDER BY status) FROM queue_engine.runs),
          enum_range(NULL::queue_engine.run_status), 'there are runs in every state');
SELECT is(pg_temp.truth('true'), pg_temp.ids('', 1000), 'list_runs() lists every run, newest first');
SELECT is(cardinality(pg_temp.ids('', 1000)), :total, 'every run once');
SELECT is((SELECT count(DISTINCT created_at)::int FROM queue_engine.runs WHERE payload ? 'tie'), 1,
          'the 7 runs of one transaction share created_at');
SELECT is((SELECT count(DISTINCT created_at)::int FROM queue_engine.runs WHERE payload ? 'tie2'), 1,
          'the 5 runs of one enqueue_batch share created_at');
SELECT cmp_ok((SELECT count(DISTINCT created_at)::int FROM queue_engine.runs WHERE payload ? 'i'), '>=', 40,
              'the 48 runs enqueued by separate statements have (nearly all) distinct created_at');

---------------------------------------------------------------------------
-- Each filter alone and combined, against queue_engine.runs
---------------------------------------------------------------------------
SELECT is(pg_temp.ids($$queue => 'alpha'$$, 1000), pg_temp.truth($$q.queue = 'alpha'$$), 'queue');
SELECT is(pg_temp.ids($$queue => 'acme_q'$$, 1000), pg_temp.truth($$q.queue = 'acme_q'$$), 'queue of another tenant');
SELECT is(pg_temp.ids($$queue => 'gone'$$, 1000), ARRAY[:gone2, :gone1]::bigint[], 'queue: a dropped queue''s runs by its name');
SELECT is(pg_temp.ids($$queue => 'reborn'$$, 1000), ARRAY[:reborn2, :reborn1]::bigint[],
          'queue: a queue dropped and made again lists the runs of both');
SELECT is(pg_temp.ids($$tenant => 'acme'$$, 1000), pg_temp.truth($$t.tenant = 'acme'$$), 'tenant');
SELECT is(pg_temp.ids($$tenant => 'default'$$, 1000), pg_temp.truth($$t.tenant = 'default'$$), 'tenant default (with dropped queues)');
SELECT is(pg_temp.ids($$tenant => 'quiet'$$, 1000), '{}'::bigint[], 'tenant without runs: none');
SELECT is(pg_temp.ids($$queue => 'acme_q', tenant => 'acme'$$, 1000), pg_temp.truth($$q.queue = 'acme_q'$$),
          'queue and its tenant');
SELECT is(pg_temp.ids($$status => '{queued}'$$, 1000), pg_temp.truth($$r.status = 'queued'$$), 'status queued');
SELECT is(pg_temp.ids($$status => '{delayed}'$$, 1000), pg_temp.truth($$r.status = 'delayed'$$), 'status delayed');
SELECT is(pg_temp.ids($$status => '{executing}'$$, 1000), pg_temp.truth($$r.status = 'executing'$$), 'status executing');
SELECT is(pg_temp.ids($$status => '{waiting}'$$, 1000), pg_temp.truth($$r.status = 'waiting'$$), 'status waiting');
SELECT is(pg_temp.ids($$status => '{completed,failed,canceled,expired}'$$, 1000),
          pg_temp.truth($$r.status IN ('completed', 'failed', 'canceled', 'expired')$$), 'status: the final ones');
SELECT is(pg_temp.ids($$status => '{waiting,queued,expired}'$$, 1000),
          pg_temp.truth($$r.status IN ('waiting', 'queued', 'expired')$$), 'status: any of the array');
SELECT is(pg_temp.ids($$status => '{}'$$, 1000), '{}'::bigint[], 'status: an empty array lists nothing');
SELECT is(pg_temp.ids($$tag => 'urgent'$$, 1000), pg_temp.truth($$'urgent' = ANY (r.tags)$$),
          'tag (a run whose tags name it twice is listed once)');
SELECT is(pg_temp.ids($$tag => 'billing'$$, 1000), pg_temp.truth($$'billing' = ANY (r.tags)$$), 'another tag');
SELECT is(pg_temp.ids($$tag => 'no such tag'$$, 1000), '{}'::bigint[], 'an unused tag: none');
SELECT is(pg_temp.ids(format('created_after => %L', :'mid_at'), 1000),
          pg_temp.truth(format('r.created_at >= %L', :'mid_at')), 'created_after');
SELECT ok(:mid = ANY (pg_temp.ids(format('created_after => %L', :'mid_at'), 1000)), 'created_after is inclusive');
SELECT is(pg_temp.ids(format('created_before => %L', :'mid_at'), 1000),
          pg_temp.truth(format('r.created_at < %L', :'mid_at')), 'created_before');
SELECT ok(NOT :mid = ANY (pg_temp.ids(format('created_before => %L', :'mid_at'), 1000)), 'created_before is exclusive');
SELECT is(pg_temp.ids(format('created_after => %L, created_before => %L', :'mid_at', :'late_at'), 1000),
          pg_temp.truth(format('r.created_at >= %L AND r.created_at < %L', :'mid_at', :'late_at')), 'a time range');
SELECT is(pg_temp.ids(format('created_after => %L, created_before => %L', :'mid_at', :'mid_at'), 1000),
          '{}'::bigint[], 'an empty time range');
SELECT is(pg_temp.ids($$payload_contains => '{"color": "red"}'$$, 1000),
          pg_temp.truth($$r.payload @> '{"color": "red"}'$$), 'payload_contains');
SELECT is(pg_temp.ids($$payload_contains => '{"deep": {"even": true}}'$$, 1000),
          pg_temp.truth($$r.payload @> '{"deep": {"even": true}}'$$), 'payload_contains, nested');
SELECT is(pg_temp.ids($$queue => 'alpha', status => '{queued,executing,delayed}', tag => 'urgent'$$, 1000),
          pg_temp.truth($$q.queue = 'alpha' AND r.status IN ('queued', 'executing', 'delayed') AND 'urgent' = ANY (r.tags)$$),
          'queue, status and tag');
SELECT is(pg_temp.ids($$tenant => 'default', tag => 'billing', payload_contains => '{"color": "green"}'$$, 1000),
          pg_temp.truth($$t.tenant = 'default' AND 'billing' = ANY (r.tags) AND r.payload @> '{"color": "green"}'$$),
          'tenant, tag and payload_contains');
SELECT is(pg_temp.ids(format('queue => %L, status => %L, created_after => %L, created_before => %L', 'beta', '{queued,waiting}', :'mid_at', :'late_at'), 1000),
          pg_temp.truth(format('q.queue = %L AND r.status IN (%L, %L) AND r.created_at >= %L AND r.created_at < %L',
                               'beta', 'queued', 'waiting', :'mid_at', :'late_at')),
          'queue, status and a time range');
SELECT is(pg_temp.ids(format('status => %L, tag => %L, created_before => %L, payload_contains => %L', '{queued}', 'urgent', :'late_at', '{"deep": {"even": false}}'), 1000),
          pg_temp.truth(format('r.status = %L AND %L = ANY (r.tags) AND r.created_at < %L AND r.payload @> %L',
                               'queued', 'urgent', :'late_at', '{"deep": {"even": false}}')),
          'status, tag, created_before and payload_contains');
SELECT is(pg_temp.ids($$tenant => 'acme', status => '{waiting,canceled}'$$, 1000),
          pg_temp.truth($$t.tenant = 'acme' AND r.status IN ('waiting', 'canceled')$$), 'tenant and status');

---------------------------------------------------------------------------
-- The rows: each column as get_run has it; every state included
---------------------------------------------------------------------------
SELECT is((SELECT count(*)::int
             FROM queue_engine.list_runs(page_size => 1000) l
             LEFT JOIN LATERAL queue_engine.get_run(l.run_id) g ON true
            WHERE ROW(l.queue, l.tenant, l.status, l.attempt, l.priority, l.concurrency_key, l.tags,
                      l.created_at, l.started_at, l.finished_at)
                  IS DISTINCT FROM ROW(g.queue, g.tenant, g.status, g.attempt, g.priority, g.concurrency_key,
                                       g.tags, g.created_at, g.started_at, g.finished_at)),
          0, 'every column of every row is what get_run says');
SELECT is((SELECT count(*)::int
             FROM queue_engine.list_runs(tag => 'urgent', page_size => 1000) l
             LEFT JOIN LATERAL queue_engine.get_run(l.run_id) g ON true
            WHERE ROW(l.queue, l.tenant, l.status, l.attempt, l.priority, l.concurrency_key, l.tags,
                      l.created_at, l.started_at, l.finished_at)
                  IS DISTINCT FROM ROW(g.queue, g.tenant, g.status, g.attempt, g.priority, g.concurrency_key,
                                       g.tags, g.created_at, g.started_at, g.finished_at)),
          0, 'and so when listed by tag');
SELECT is((SELECT array_agg(DISTINCT status ORDER BY status) FROM queue_engine.list_runs(page_size => 1000)),
          enum_range(NULL::queue_engine.run_status), 'runs in every state are listed');
SELECT is((SELECT ROW(count(DISTINCT cursor), count(*) FILTER (WHERE cursor IS NULL))::text
             FROM queue_engine.list_runs(page_size => 1000)),
          ROW(:total, 0)::text, 'every row has a cursor of its own');

---------------------------------------------------------------------------
-- Paging: page sizes 1, 2, 7 and 1000 list every run exactly once,
-- in order, with full pages and no continuation row
---------------------------------------------------------------------------
SELECT is(pg_temp.ids('', 1), pg_temp.truth('true'), 'page_size 1: every run once, in order');
SELECT is(pg_temp.ids('', 2), pg_temp.truth('true'), 'page_size 2');
SELECT is(pg_temp.ids('', 7), pg_temp.truth('true'), 'page_size 7');
SELECT is(pg_temp.ids('', 1000), pg_temp.truth('true'), 'page_size 1000');
SELECT is(pg_temp.clean('', 1) || pg_temp.clean('', 7), 'cleanclean', 'pages of page_size rows but the last, no continuation rows');
SELECT is((SELECT pages FROM pg_temp.walk('', 7)), :total / 7 + 1, 'page_size 7: as many pages as it takes (the last one short or empty)');
SELECT is(pg_temp.ids($$tag => 'urgent'$$, 2), pg_temp.truth($$'urgent' = ANY (r.tags)$$), 'tag, page_size 2');
SELECT is(pg_temp.ids($$tag => 'urgent'$$, 1), pg_temp.truth($$'urgent' = ANY (r.tags)$$), 'tag, page_size 1');
SELECT is(pg_temp.ids($$status => '{queued,delayed}'$$, 7), pg_temp.truth($$r.status IN ('queued', 'delayed')$$), 'status, page_size 7');
SELECT is(pg_temp.ids($$tenant => 'default'$$, 2), pg_temp.truth($$t.tenant = 'default'$$), 'tenant, page_size 2');
SELECT is(pg_temp.ids(format('created_after => %L', :'mid_at'), 1), pg_temp.truth(format('r.created_at >= %L', :'mid_at')),
          'created_after, page_size 1');
SELECT is(pg_temp.ids($$payload_contains => '{"color": "blue"}'$$, 2), pg_temp.truth($$r.payload @> '{"color": "blue"}'$$),
          'payload_contains, page_size 2');

---------------------------------------------------------------------------
-- Page boundaries between runs that share created_at
---------------------------------------------------------------------------
SELECT is(pg_temp.ids($$queue => 'alpha'$$, 2), pg_temp.truth($$q.queue = 'alpha'$$),
          'queue of the 7 tied runs, page_size 2 (boundaries inside the tie)');
SELECT is(pg_temp.ids($$queue => 'alpha'$$, 3), pg_temp.truth($$q.queue = 'alpha'$$), 'page_size 3');
SELECT is(pg_temp.ids($$tag => 'tie'$$, 2), pg_temp.truth($$'tie' = ANY (r.tags)$$), 'by tag, every page inside the tie, page_size 2');
SELECT is(pg_temp.ids($$tag => 'tie'$$, 1), pg_temp.truth($$'tie' = ANY (r.tags)$$), 'page_size 1');
SELECT is(pg_temp.ids($$tag => 'tie2'$$, 3), pg_temp.truth($$'tie2' = ANY (r.tags)$$), 'the enqueue_batch tie, page_size 3');
SELECT is(pg_temp.ids($$queue => 'beta', status => '{queued}'$$, 4), pg_temp.truth($$q.queue = 'beta' AND r.status = 'queued'$$),
          'the batch tie inside a status filter, page_size 4');
SELECT l.cursor AS tie_cursor FROM queue_engine.list_runs(tag => 'tie', page_size => 3) WITH ORDINALITY l WHERE l.ordinality = 3 \gset
SELECT is((SELECT array_agg(run_id ORDER BY ordinality) FROM queue_engine.list_runs(tag => 'tie', page_size => 3) WITH ORDINALITY),
          (pg_temp.truth($$'tie' = ANY (r.tags)$$))[1:3], 'first page of the tie: its 3 highest run ids');
SELECT is((SELECT array_agg(run_id ORDER BY ordinality) FROM queue_engine.list_runs(tag => 'tie', after => :'tie_cursor', page_size => 3) WITH ORDINALITY),
          (pg_temp.truth($$'tie' = ANY (r.tags)$$))[4:6], 'the next page: the next 3, inside the same created_at');
SELECT is((SELECT array_agg(run_id ORDER BY ordinality) FROM queue_engine.list_runs(queue => 'alpha', after => :'tie_cursor', page_size => 3) WITH ORDINALITY),
          (SELECT array_agg(x ORDER BY o) FROM unnest(pg_temp.truth($$q.queue = 'alpha'$$)) WITH ORDINALITY u(x, o)
            WHERE o > array_position(pg_temp.truth($$q.queue = 'alpha'$$), (pg_temp.truth($$'tie' = ANY (r.tags)$$))[3])
              AND o <= array_position(pg_temp.truth($$q.queue = 'alpha'$$), (pg_temp.truth($$'tie' = ANY (r.tags)$$))[3]) + 3),
          'a cursor of one filter continues another filter''s list at the same place (it is the sort key)');

---------------------------------------------------------------------------
-- A cursor stays valid after runs finish and new runs come
---------------------------------------------------------------------------
SELECT l.cursor AS c5, l.created_at AS c5_at, l.run_id AS c5_id
  FROM queue_engine.list_runs(queue => 'alpha', page_size => 5) WITH ORDINALITY l WHERE l.ordinality = 5 \gset
CREATE TEMP TABLE before_changes AS
SELECT pg_temp.truth(format('q.queue = %L AND (r.created_at, r.run_id) < (%L::timestamptz, %s)', 'alpha', :'c5_at', :c5_id)) AS ids;
-- the executing run completes; the two oldest queued runs of alpha are canceled,
-- two more are started; three new runs come
SELECT queue_engine.complete(:x4);
SELECT queue_engine.cancel(r.run_id) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
 WHERE q.queue = 'alpha' AND r.status = 'queued' ORDER BY r.created_at, r.run_id LIMIT 2;
SELECT count(*) FROM queue_engine.dequeue(ARRAY['alpha'], 2);
SELECT queue_engine.enqueue('alpha', '{"new": 1}') AS n1 \gset
SELECT queue_engine.enqueue('alpha', '{"new": 2}') AS n2 \gset
SELECT queue_engine.enqueue('alpha', '{"new": 3}') AS n3 \gset
SELECT is(pg_temp.ids($$queue => 'alpha'$$, 3, :'c5'), (SELECT ids FROM before_changes),
          'from the cursor: the same runs as before the changes, in the same order');
SELECT is(pg_temp.ids($$queue => 'alpha'$$, 3, :'c5'),
          pg_temp.truth(format('q.queue = %L AND (r.created_at, r.run_id) < (%L::timestamptz, %s)', 'alpha', :'c5_at', :c5_id)),
          'and what the runs are now');
SELECT is((SELECT count(*)::int FROM queue_engine.list_runs(queue => 'alpha', after => :'c5', page_size => 1000)
            WHERE run_id IN (:n1, :n2, :n3)), 0, 'the new runs are not after the cursor');
SELECT is((SELECT array_agg(run_id ORDER BY ordinality) FROM queue_engine.list_runs(queue => 'alpha', page_size => 3) WITH ORDINALITY),
          ARRAY[:n3, :n2, :n1]::bigint[], 'a new first page starts with the new runs, newest first');
SELECT is((SELECT count(*)::int FROM queue_engine.list_runs(queue => 'alpha', status => '{canceled}', after => :'c5', page_size => 1000)),
          (SELECT count(*)::int FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
            WHERE q.queue = 'alpha' AND r.status = 'canceled'), 'the runs canceled since are listed as canceled after the cursor');
SELECT is(pg_temp.ids('', 5, :'c5'), pg_temp.truth(format('(r.created_at, r.run_id) < (%L::timestamptz, %s)', :'c5_at', :c5_id)),
          'the same cursor without the filter: every older run of every queue');

---------------------------------------------------------------------------
-- Tenant-scoped roles see their tenants' runs only
---------------------------------------------------------------------------
-- (roles are the cluster's: ones left by an earlier run of this file go first)
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['qe_l_acme', 'qe_l_two', 'qe_l_all', 'qe_l_none'] LOOP
		IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('DROP OWNED BY %I', r);
			EXECUTE format('DROP ROLE %I', r);
		END IF;
	END LOOP;
END $$;
CREATE ROLE qe_l_acme;
CREATE ROLE qe_l_two;
CREATE ROLE qe_l_all;
CREATE ROLE qe_l_none;
SELECT queue_engine.grant_tenant('qe_l_acme', 'acme', 'reader');
SELECT queue_engine.grant_tenant('qe_l_two', 'acme', 'reader');
SELECT queue_engine.grant_tenant('qe_l_two', 'globex', 'worker');
SELECT queue_engine.grant_tenant('qe_l_all', '*', 'reader');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT array_to_string(pg_temp.ids('', 2), ',')$$),
          array_to_string(pg_temp.truth($$t.tenant = 'acme'$$), ','), 'acme reader: list_runs() lists acme''s runs only');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT array_to_string(pg_temp.ids('tag => ''urgent''', 2), ',')$$),
          array_to_string(pg_temp.truth($$t.tenant = 'acme' AND 'urgent' = ANY (r.tags)$$), ','), 'acme reader: by tag, acme''s only');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT array_to_string(pg_temp.ids('status => ''{waiting,queued}''', 1000), ',')$$),
          array_to_string(pg_temp.truth($$t.tenant = 'acme' AND r.status IN ('waiting', 'queued')$$), ','), 'acme reader: by status');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT array_to_string(pg_temp.ids('tenant => ''acme''', 1000), ',')$$),
          array_to_string(pg_temp.truth($$t.tenant = 'acme'$$), ','), 'acme reader: its tenant by name');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT count(*) FROM queue_engine.list_runs(queue => 'globex_q')$$),
          '42704: queue "globex_q" does not exist', 'acme reader: another tenant''s queue does not exist');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT count(*) FROM queue_engine.list_runs(queue => 'alpha', tag => 'urgent')$$),
          '42704: queue "alpha" does not exist', 'acme reader: nor a default tenant''s queue');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT count(*) FROM queue_engine.list_runs(tenant => 'globex')$$),
          '42704: tenant "globex" does not exist', 'acme reader: another tenant does not exist');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT count(*) FROM queue_engine.list_runs(queue => 'gone')$$),
          '42704: queue "gone" does not exist', 'acme reader: nor another tenant''s dropped queue');
SELECT is(pg_temp.as_role('qe_l_two', $$SELECT array_to_string(pg_temp.ids('', 7), ',')$$),
          array_to_string(pg_temp.truth($$t.tenant IN ('acme', 'globex')$$), ','), 'a role of two tenants: both tenants'' runs');
SELECT is(pg_temp.as_role('qe_l_all', $$SELECT array_to_string(pg_temp.ids('', 7), ',')$$),
          array_to_string(pg_temp.truth('true'), ','), 'a reader of every tenant: every run');
SELECT is(pg_temp.as_role('qe_l_none', $$SELECT count(*) FROM queue_engine.list_runs()$$),
          '42501: permission denied for schema queue_engine', 'a role without access may not call it');
SELECT is(pg_temp.as_role('qe_l_acme', $$SELECT array_to_string(pg_temp.ids('payload_contains => ''{"color": "red"}''', 1), ',')$$),
          array_to_string(pg_temp.truth($$t.tenant = 'acme' AND r.payload @> '{"color": "red"}'$$), ','),
          'acme reader: by payload, page_size 1');

---------------------------------------------------------------------------
-- The bound: list_runs_max_scan candidates a page, then a
-- continuation row, and the continuation cursors reach every match once
---------------------------------------------------------------------------
SELECT queue_engine.create_queue('hay');
SELECT queue_engine.enqueue('hay', jsonb_build_object('needle', true, 'n', i)) FROM generate_series(1, 3) i;
SELECT queue_engine.enqueue('hay', '{"needle": true, "n": 4}', tags => '{sharp}');
SELECT queue_engine.enqueue('hay', '{"needle": true, "n": 5}');
SELECT count(*) FROM queue_engine.enqueue_batch('hay', array_fill('{"hay": 1}'::jsonb, ARRAY[150]), tags => '{sharp}');
SELECT count(*) FROM queue_engine.enqueue_batch('hay', array_fill('{"hay": 2}'::jsonb, ARRAY[150]));
SELECT count(*) FROM queue_engine.enqueue_batch('hay', array_fill('{"hay": 3}'::jsonb, ARRAY[60]), tags => '{sharp}');
SET queue_engine.list_runs_max_scan = 100;
SELECT is((SELECT array_agg(ROW(l.run_id, l.queue, l.status, l.created_at, l.cursor IS NOT NULL)::text)
             FROM queue_engine.list_runs(payload_contains => '{"needle": true}', page_size => 10) l),
          ARRAY[ROW(NULL::bigint, NULL::text, NULL::queue_engine.run_status, NULL::timestamptz, true)::text],
          'max_scan 100, no match among the newest 100 candidates: the page is one continuation row');
SELECT is((SELECT num_nonnulls(l.queue, l.tenant, l.status, l.attempt, l.priority, l.concurrency_key, l.tags,
                               l.created_at, l.started_at, l.finished_at)
             FROM queue_engine.list_runs(payload_contains => '{"needle": true}', page_size => 10) l),
          0, 'every column of the continuation row but cursor is NULL');
SELECT is(pg_temp.ids($$payload_contains => '{"needle": true}'$$, 10),
          pg_temp.truth($$r.payload @> '{"needle": true}'$$), 'following the continuation cursors reaches every match once, in order');
SELECT cmp_ok((SELECT continuations FROM pg_temp.walk($$payload_contains => '{"needle": true}'$$, 10)), '>=', 3,
              'through a continuation row for each 100 candidates (360 newer runs)');
SELECT is((SELECT problems FROM pg_temp.walk($$payload_contains => '{"needle": true}'$$, 10)), '{}'::text[],
          'every continuation row is its page''s last, pages never longer than page_size');
SELECT is(pg_temp.ids($$queue => 'hay', payload_contains => '{"needle": true}'$$, 2),
          pg_temp.truth($$q.queue = 'hay' AND r.payload @> '{"needle": true}'$$), 'the same with a queue filter, page_size 2');
SELECT is(pg_temp.ids($$tag => 'sharp', payload_contains => '{"needle": true}'$$, 3),
          pg_temp.truth($$'sharp' = ANY (r.tags) AND r.payload @> '{"needle": true}'$$), 'with a tag filter');
SELECT is(pg_temp.ids($$tag => 'sharp', status => '{executing}'$$, 3), '{}'::bigint[],
          'tag and a status no tagged run has: no runs (through continuation rows)');
SELECT is(pg_temp.ids($$payload_contains => '{"color": "red"}'$$, 7), pg_temp.truth($$r.payload @> '{"color": "red"}'$$),
          'matches spread over the list, page_size 7');
SELECT is(pg_temp.ids($$tag => 'urgent', status => '{queued}'$$, 3), pg_temp.truth($$'urgent' = ANY (r.tags) AND r.status = 'queued'$$),
          'tag and status (checked on candidates), page_size 3');
SET queue_engine.list_runs_max_scan = 1;
SELECT is(pg_temp.ids($$payload_contains => '{}'$$, 5), pg_temp.truth('true'),
          'max_scan 1, a filter every run passes: every run once');
SELECT is(pg_temp.ids($$queue => 'hay'$$, 50), pg_temp.truth($$q.queue = 'hay'$$),
          'a queue filter alone needs no bound: every run once');
SELECT is((SELECT continuations FROM pg_temp.walk($$queue => 'hay'$$, 50)), 0,
          'and never a continuation row, even with max_scan 1');
RESET queue_engine.list_runs_max_scan;

---------------------------------------------------------------------------
-- Cost: a page of 50 with a history of 20,000 finished runs (inserted
-- into queue_engine.finished_runs and run_tags directly, as enqueue and a
-- finish would have written them) reads a page, not the history.
-- Measured twice: as index and heap tuples read (pg_stat_user_indexes
-- idx_tup_read + pg_stat_user_tables seq_tup_read over queue_engine's
-- relations, counters flushed before each reading), and as buffers
-- touched (EXPLAIN (ANALYZE, BUFFERS) of the call, which counts the
-- function's own queries), once with 400 runs of history and once with
-- 20,000.
---------------------------------------------------------------------------

-- Index tuples read by index scans plus heap tuples read by sequential scans
-- of the engine's relations, as the shared statistics have them now, in
-- three groups: history (finished_runs, run_tags and their indexes),
-- unfinished (the ready, delayed, executing and waiting_runs tables and
-- their indexes), all (every relation of queue_engine).
CREATE TEMP TABLE reads (step text PRIMARY KEY, history bigint, unfinished bigint, total bigint);
CREATE FUNCTION pg_temp.snap(step text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_stat_clear_snapshot();
	INSERT INTO reads
	SELECT step,
		   coalesce(sum(n) FILTER (WHERE tbl IN ('finished_runs', 'run_tags')), 0),
		   coalesce(sum(n) FILTER (WHERE tbl ~ '^(ready|delayed|executing)(_[0-9]+)?$' OR tbl = 'waiting_runs'), 0),
		   coalesce(sum(n), 0)
	  FROM (SELECT i.relname AS tbl, i.idx_tup_read AS n FROM pg_stat_user_indexes i WHERE i.schemaname = 'queue_engine'
			UNION ALL
			SELECT t.relname, t.seq_tup_read FROM pg_stat_user_tables t WHERE t.schemaname = 'queue_engine') x;
END;
$$;
-- what was read between two snapshots
CREATE FUNCTION pg_temp.read(a text, b text, grp text) RETURNS bigint LANGUAGE sql AS $$
	SELECT CASE grp WHEN 'history' THEN y.history - x.history WHEN 'unfinished' THEN y.unfinished - x.unfinished
					ELSE y.total - x.total END
	  FROM reads x, reads y WHERE x.step = a AND y.step = b
$$;
CREATE FUNCTION pg_temp.page_buffers(args text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	plan json;
BEGIN
	EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM queue_engine.list_runs(%s)', args) INTO plan;
	RETURN (plan->0->'Plan'->>'Shared Hit Blocks')::bigint + (plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END;
$$;
-- tuples read by one call, in a table of results (each step its own
-- statement, so that the backend flushes its counters in between)
CREATE TEMP TABLE cost (what text PRIMARY KEY, args text, small_tuples bigint, small_buffers bigint,
                        large_tuples bigint, large_buffers bigint, rows int);
CREATE FUNCTION pg_temp.measure(what text, args text, size text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SELECT count(*) FROM queue_engine.list_runs(%s)', measure.args);  -- plans the statements
	PERFORM pg_temp.page_buffers(measure.args);
	IF size = 'small' THEN
		INSERT INTO cost (what, args, small_buffers) VALUES (measure.what, measure.args, pg_temp.page_buffers(measure.args));
	ELSE
		UPDATE cost SET large_buffers = pg_temp.page_buffers(measure.args) WHERE cost.what = measure.what;
	END IF;
END;
$$;

-- The history: 5 queues of 2 tenants (h_a, h_b, h_c of tenant h1; h_d,
-- h_e of h2), every final status, a quarter tagged h_tag, created over the
-- 30 days before the runs above.
SELECT queue_engine.create_queue(q, tenant => t) FROM (VALUES ('h_a', 'h1'), ('h_b', 'h1'), ('h_c', 'h1'), ('h_d', 'h2'), ('h_e', 'h2')) v(q, t);
CREATE FUNCTION pg_temp.add_history(n int, seed int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM setseed(seed / 1000.0);
	CREATE TEMP TABLE h ON COMMIT DROP AS
	SELECT nextval('queue_engine.runs_run_id_seq') AS run_id,
		   now() - interval '1 day' - random() * interval '30 days' AS created_at,
		   (ARRAY['h_a', 'h_b', 'h_c', 'h_d', 'h_e'])[1 + (i % 5)] AS queue,
		   (ARRAY['completed', 'completed', 'completed', 'completed', 'completed', 'completed',
				  'failed', 'failed', 'canceled', 'expired'])[1 + (i / 5) % 10]::queue_engine.run_status AS status,
		   CASE WHEN i % 4 = 0 THEN ARRAY['h_tag', 'other'] END AS tags,
		   jsonb_build_object('i', i, 'h', true) AS payload
	  FROM generate_series(1, n) i;
	INSERT INTO queue_engine.finished_runs
	SELECT h.run_id, h.created_at + interval '1 minute', h.created_at,
		   CASE WHEN h.status <> 'expired' THEN h.created_at + interval '1 second' END,
		   q.queue_id, q.policy_id, 0, CASE WHEN h.status = 'expired' THEN 0 ELSE 1 END, h.status, h.payload,
		   NULL, NULL, NULL,
		   CASE WHEN h.tags IS NOT NULL THEN
				ROW(NULL, NULL, NULL, NULL, NULL, NULL, h.tags, NULL, NULL, NULL, NULL, NULL, NULL)::queue_engine.run_meta END
	  FROM h JOIN queue_engine.queues q ON q.queue = h.queue AND q.dropped_at IS NULL
	 ORDER BY h.created_at;
	INSERT INTO queue_engine.run_tags (tag, created_at, run_id)
	SELECT g.tag, h.created_at, h.run_id FROM h, unnest(h.tags) g(tag) ORDER BY h.created_at;
END;
$$;
SELECT pg_temp.add_history(400, 1);
ANALYZE queue_engine.finished_runs, queue_engine.run_tags;
SELECT min(created_at) + (max(created_at) - min(created_at)) / 3 AS win_from,
       min(created_at) + (max(created_at) - min(created_at)) * 2 / 3 AS win_to
  FROM queue_engine.runs WHERE payload ? 'h' \gset

-- the filters measured: each alone, and a second page (after the first's cursor)
SELECT pg_temp.measure('queue', $$queue => 'h_a', page_size => 50$$, 'small');
SELECT pg_temp.measure('tenant', $$tenant => 'h1', page_size => 50$$, 'small');
SELECT pg_temp.measure('status', $$status => '{failed}', page_size => 50$$, 'small');
SELECT pg_temp.measure('tag', $$tag => 'h_tag', page_size => 50$$, 'small');
SELECT pg_temp.measure('time range', format('created_after => %L, created_before => %L, page_size => 50', :'win_from', :'win_to'), 'small');
SELECT pg_temp.measure('queue and status', $$queue => 'h_b', status => '{completed}', page_size => 50$$, 'small');
SELECT pg_temp.measure('queue, page 2',
                       format('queue => %L, after => %L, page_size => 50', 'h_a',
                              (SELECT cursor FROM queue_engine.list_runs(queue => 'h_a', page_size => 50) WITH ORDINALITY WHERE ordinality = 50)),
                       'small');

SELECT pg_temp.add_history(19600, 2);
ANALYZE queue_engine.finished_runs, queue_engine.run_tags;
SELECT count(*) AS history FROM queue_engine.finished_runs f JOIN queue_engine.queues q USING (queue_id) WHERE q.queue LIKE 'h\__' \gset
SELECT pg_temp.measure(what, args, 'large') FROM cost;

-- The history is there
SELECT is(:history::bigint, 20000::bigint, 'a history of 20,000 finished runs');

-- Buffers do not grow with the history
SELECT cmp_ok(large_buffers, '<=', small_buffers * 2 + 60,
              format('%s: buffers touched do not grow with the history (%s with 400 runs, %s with 20,000)',
                     what, small_buffers, large_buffers))
  FROM cost ORDER BY what;

-- Tuples read by a page of 50, each call measured in statements of
-- its own (pending statistics are flushed when the backend goes idle, and
-- pg_stat_force_next_flush() makes it flush at once)
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('t0');
SELECT count(*) FROM queue_engine.list_runs(queue => 'h_a', page_size => 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('t1');
SELECT count(*) FROM queue_engine.list_runs(tenant => 'h1', page_size => 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('t2');
SELECT count(*) FROM queue_engine.list_runs(status => '{failed}', page_size => 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('t3');
SELECT count(*) FROM queue_engine.list_runs(tag => 'h_tag', page_size => 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('t4');
SELECT count(*) FROM queue_engine.list_runs(created_after => :'win_from', created_before => :'win_to', page_size => 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('t5');
SELECT count(*) FROM queue_engine.list_runs(queue => 'h_b', status => '{completed}', page_size => 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('t6');
SELECT count(*) FROM queue_engine.list_runs(queue => 'h_a', page_size => 50,
                                            after => (SELECT cursor FROM queue_engine.list_runs(queue => 'h_a', page_size => 50) WITH ORDINALITY WHERE ordinality = 50));
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('t7');
SELECT cmp_ok(pg_temp.read('t0', 't1', 'history'), '<', 1000::bigint,
              format('queue: a page of 50 reads %s tuples of the history of 20,000', pg_temp.read('t0', 't1', 'history')));
SELECT cmp_ok(pg_temp.read('t1', 't2', 'history'), '<', 1000::bigint, format('tenant: %s', pg_temp.read('t1', 't2', 'history')));
SELECT cmp_ok(pg_temp.read('t2', 't3', 'history'), '<', 1000::bigint, format('status: %s', pg_temp.read('t2', 't3', 'history')));
SELECT cmp_ok(pg_temp.read('t3', 't4', 'history'), '<', 1000::bigint, format('tag: %s', pg_temp.read('t3', 't4', 'history')));
SELECT cmp_ok(pg_temp.read('t4', 't5', 'history'), '<', 1000::bigint, format('time range: %s', pg_temp.read('t4', 't5', 'history')));
SELECT cmp_ok(pg_temp.read('t5', 't6', 'history'), '<', 1000::bigint, format('queue and status: %s', pg_temp.read('t5', 't6', 'history')));
SELECT cmp_ok(pg_temp.read('t6', 't7', 'history'), '<', 2000::bigint,
              format('queue, first and second page: %s', pg_temp.read('t6', 't7', 'history')));
-- The unfinished runs (about 420, most of them queued in hay) are not in
-- list_runs' order, but a queue's or a tenant's are found by their queue
-- (list_runs' comment: "a queue's are found by its index"), and a tagged run by its id.
SELECT cmp_ok(pg_temp.read('t0', 't1', 'unfinished'), '<=', 50::bigint,
              format('queue (none of its runs unfinished): %s tuples of other queues'' unfinished runs read',
                     pg_temp.read('t0', 't1', 'unfinished')));
SELECT cmp_ok(pg_temp.read('t1', 't2', 'unfinished'), '<=', 50::bigint,
              format('tenant (none of its runs unfinished): %s tuples of other tenants'' unfinished runs read',
                     pg_temp.read('t1', 't2', 'unfinished')));
SELECT cmp_ok(pg_temp.read('t3', 't4', 'total'), '<', 2000::bigint,
              format('tag: %s tuples in all (its runs looked up by id, not by reading every unfinished run for each)',
                     pg_temp.read('t3', 't4', 'total')));

-- payload_contains reads about list_runs_max_scan candidates a
-- page: none of the 20,000 matches, so a page examines max_scan of them
-- and ends with a continuation row
SET queue_engine.list_runs_max_scan = 1000;
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('p0');
CREATE TEMP TABLE pc AS SELECT * FROM queue_engine.list_runs(payload_contains => '{"nowhere": true}', page_size => 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('p1');
CREATE TEMP TABLE pcs AS SELECT * FROM queue_engine.list_runs(status => '{completed}', payload_contains => '{"nowhere": true}', page_size => 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.snap('p2');
SELECT is((SELECT ROW(count(*), count(cursor), count(run_id))::text FROM pc), '(1,1,0)',
          'payload_contains matching nothing: the page is one continuation row');
SELECT is((SELECT ROW(count(*), count(cursor), count(run_id))::text FROM pcs), '(1,1,0)',
          'and with a status filter too');
SELECT cmp_ok(pg_temp.read('p0', 'p1', 'history'), '<', 20000::bigint / 2,
              format('payload_contains: the page read %s tuples of the history, far from its 20,000', pg_temp.read('p0', 'p1', 'history')));
SELECT cmp_ok(pg_temp.read('p1', 'p2', 'history'), '<=', 1000::bigint + 200,
              format('payload_contains with status completed: %s tuples, about list_runs_max_scan (1000)',
                     pg_temp.read('p1', 'p2', 'history')));
SELECT is(pg_temp.ids($$queue => 'h_c', payload_contains => '{"i": 7}'$$, 50),
          pg_temp.truth($$q.queue = 'h_c' AND r.payload @> '{"i": 7}'$$),
          'the continuation cursors reach the matches deep in the history');
RESET queue_engine.list_runs_max_scan;

SELECT * FROM finish();

-- The roles go (they are the cluster's, not this database's).
SELECT queue_engine.revoke_tenant(r, t)
  FROM (VALUES ('qe_l_acme', 'acme'), ('qe_l_two', 'acme'), ('qe_l_two', 'globex'), ('qe_l_all', '*')) v(r, t);
DROP OWNED BY qe_l_acme, qe_l_two, qe_l_all, qe_l_none;
DROP ROLE qe_l_acme, qe_l_two, qe_l_all, qe_l_none;
