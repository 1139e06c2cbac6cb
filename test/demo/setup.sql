-- test/demo/setup.sql: tenants, queues, a starting backlog, and the demo's own bookkeeping (schema demo) for test/demo.sh.
-- Run with psql in a fresh database where CREATE EXTENSION queue_engine is done.

SET client_min_messages = warning;

---------------------------------------------------------------------------
-- Tenants and queues
---------------------------------------------------------------------------
-- acme: a transactional-email queue with no limit, and heavy reports (2 at a time).
SELECT queue_engine.create_queue('emails', tenant => 'acme',
	retry_backoff => '200 milliseconds', retry_backoff_max => '2 seconds');
SELECT queue_engine.create_queue('reports', tenant => 'acme', concurrency_limit => 2,
	retry_backoff => '300 milliseconds', retry_backoff_max => '3 seconds');

-- globex: at most 3 runs at once over the whole tenant; webhooks one at a
-- time per customer (concurrency key), invoices 2 at a time.
SELECT queue_engine.set_tenant_limit('globex', 3);
SELECT queue_engine.create_queue('webhooks', tenant => 'globex', key_concurrency_limit => 1,
	max_attempts => 5, retry_backoff => '250 milliseconds', retry_backoff_max => '2 seconds');
SELECT queue_engine.create_queue('invoices', tenant => 'globex', concurrency_limit => 2,
	retry_backoff => '200 milliseconds', retry_backoff_max => '2 seconds');

-- initech: one video at a time; thumbnails one at a time with a 2 s ttl, so
-- the ones stuck behind the limit for too long expire.
SELECT queue_engine.create_queue('videos', tenant => 'initech', concurrency_limit => 1,
	lease => '1 minute', retry_backoff => '500 milliseconds', retry_backoff_max => '2 seconds');
SELECT queue_engine.create_queue('thumbnails', tenant => 'initech', concurrency_limit => 1,
	ttl => '2 seconds', retry_backoff => '100 milliseconds', retry_backoff_max => '1 second');

-- umbrella: a paused queue with a 3 s ttl: nothing serves it, so every run expires.
SELECT queue_engine.create_queue('nightly', tenant => 'umbrella', ttl => '3 seconds');
SELECT queue_engine.pause_queue('nightly');

-- shop: waits, events, children and durable steps.  An order (orders, 2 at
-- a time) saves step "charge", sends its confirmation email as a child run
-- (notifications), then waits for the customer's reply (event email.reply
-- with its order_id; lookback, so a reply faster than the wait still counts;
-- a 2 s timeout, as some customers never answer); after a reply some sleep
-- 700 ms before shipping.  A batch (batches, 1 at a time) fans out 3-8 item
-- runs (items) as its children and waits for them.  Waiting runs hold no
-- slot, so more orders and batches are in flight than their limits.
SELECT queue_engine.create_queue('orders', tenant => 'shop', concurrency_limit => 2,
	max_attempts => 3, retry_backoff => '200 milliseconds', retry_backoff_max => '1 second');
SELECT queue_engine.create_queue('notifications', tenant => 'shop',
	retry_backoff => '100 milliseconds', retry_backoff_max => '1 second');
SELECT queue_engine.create_queue('batches', tenant => 'shop', concurrency_limit => 1,
	retry_backoff => '200 milliseconds', retry_backoff_max => '1 second');
SELECT queue_engine.create_queue('items', tenant => 'shop', max_attempts => 2,
	retry_backoff => '100 milliseconds', retry_backoff_max => '500 milliseconds');

---------------------------------------------------------------------------
-- The demo's bookkeeping
---------------------------------------------------------------------------
CREATE SCHEMA demo;

-- Order numbers (the match value each order waits for).
CREATE SEQUENCE demo.order_ids;

-- One row per confirmation email an order sent (its child run), and how the
-- customer answered (test/demo/replier.pgbench): event_id and woken from
-- send_event, or ignored (no reply: the order's wait times out).
CREATE TABLE demo.mailbox (
	order_id		bigint PRIMARY KEY,
	run_id			bigint NOT NULL,
	child_run_id	bigint NOT NULL,
	sent_at			timestamptz NOT NULL DEFAULT clock_timestamp(),
	answered_at		timestamptz,
	ignored			boolean,
	event_id		bigint,
	woken			bigint
);

-- What get_run showed of a few runs while they waited (one per kind of wait),
-- recorded by test/demo.sh during the workload.
CREATE TABLE demo.waiting_examples (
	kind		text PRIMARY KEY,
	run_id		bigint NOT NULL,
	queue		text NOT NULL,
	seen_at		timestamptz NOT NULL DEFAULT clock_timestamp(),
	waiting_for	jsonb
);

-- Every save_step call the workers made, and whether it stored (false:
-- the step already had a result, e.g. "charge" on a retry).
CREATE TABLE demo.step_calls (
	run_id		bigint NOT NULL,
	attempt		int NOT NULL,
	step		text NOT NULL,
	stored		boolean
);

-- One row: when the workload ran, and the sampler's stop flag.
CREATE TABLE demo.control (
	stop		boolean NOT NULL DEFAULT false,
	started_at	timestamptz,
	finished_at	timestamptz,
	samples		int
);
INSERT INTO demo.control DEFAULT VALUES;

-- What the sampler saw executing, from the runs themselves ('runs') and
-- from the engine's counters ('queue_stats'), every ~50 ms.
CREATE TABLE demo.samples (
	sample_no	int NOT NULL,
	ts			timestamptz NOT NULL,
	source		text NOT NULL,			-- runs | queue_stats
	level		text NOT NULL,			-- queue | tenant | key
	tenant		text,
	queue		text,
	ckey		text,
	executing	bigint NOT NULL
);

-- One row per attempt a worker finished: t_start is taken right after its
-- dequeue committed, t_end inside the complete()/fail() transaction, so
-- [t_start, t_end] lies within the time the run really held its slot and
-- overlaps of these intervals never overstate concurrency.
CREATE TABLE demo.attempts (
	run_id		bigint NOT NULL,
	attempt		int NOT NULL,
	worker		int NOT NULL,
	t_start		timestamptz NOT NULL,
	t_end		timestamptz NOT NULL,
	outcome		text NOT NULL,			-- completed | fail->delayed | fail->queued | fail->failed | ...-rejected
										-- | wait_event->waiting|queued | sleep->... | wait_children->...
	resume_kind	int NOT NULL DEFAULT 0	-- why the attempt was (re)started: 0 first start or retry,
										-- 1 event, 2 timeout of an event wait, 3 children, 4 sleep,
										-- 5 timeout of a wait for children
);

-- The sampler: one statement (one snapshot) per sample, committing each,
-- until demo.control.stop or max_seconds.
CREATE PROCEDURE demo.sample(max_seconds numeric DEFAULT 300)
LANGUAGE plpgsql AS $$
DECLARE
	n int := 0;
	deadline timestamptz := clock_timestamp() + max_seconds * interval '1 second';
BEGIN
	LOOP
		EXIT WHEN clock_timestamp() > deadline OR (SELECT c.stop FROM demo.control c);
		n := n + 1;
		INSERT INTO demo.samples (sample_no, ts, source, level, tenant, queue, ckey, executing)
		WITH ex AS (
			SELECT t.tenant, q.queue, r.concurrency_key
			  FROM queue_engine.runs r
			  JOIN queue_engine.queues q ON q.queue_id = r.queue_id
			  JOIN queue_engine.tenants t ON t.tenant_id = r.tenant_id
			 WHERE r.status = 'executing'),
		st AS (
			SELECT s.tenant, s.queue, s.executing, s.waiting FROM queue_engine.queue_stats s)
		SELECT n, clock_timestamp(), 'runs', 'queue', min(tenant), queue, NULL, count(*)
		  FROM ex GROUP BY queue
		UNION ALL
		SELECT n, clock_timestamp(), 'runs', 'tenant', tenant, NULL, NULL, count(*)
		  FROM ex GROUP BY tenant
		UNION ALL
		SELECT n, clock_timestamp(), 'runs', 'key', min(tenant), queue, concurrency_key, count(*)
		  FROM ex WHERE concurrency_key IS NOT NULL GROUP BY queue, concurrency_key
		UNION ALL
		SELECT n, clock_timestamp(), 'queue_stats', 'queue', tenant, queue, NULL, executing
		  FROM st WHERE executing <> 0
		UNION ALL
		SELECT n, clock_timestamp(), 'queue_stats', 'tenant', tenant, NULL, NULL, sum(executing)
		  FROM st GROUP BY tenant HAVING sum(executing) <> 0
		UNION ALL
		-- (waiting runs: the executing column holds how many wait)
		SELECT n, clock_timestamp(), 'waiting', 'queue', tenant, queue, NULL, waiting
		  FROM st WHERE waiting <> 0;
		UPDATE demo.control SET samples = n;
		COMMIT;
		PERFORM pg_sleep(0.05);
	END LOOP;
END;
$$;

-- Highest concurrency per queue, tenant and concurrency key, three ways:
-- sampled from runs, sampled from queue_stats, and exact (max overlap of
-- the workers' attempt intervals), against the limit.
CREATE FUNCTION demo.concurrency()
RETURNS TABLE (level text, name text, "limit" int, sampled bigint, counters bigint,
			   exact bigint, verdict text)
LANGUAGE sql STABLE AS $$
	WITH subjects AS (
		SELECT 1 AS ord, 'queue' AS level, t.tenant, q.queue, NULL::text AS ckey,
			   q.concurrency_limit AS lim
		  FROM queue_engine.queues q JOIN queue_engine.tenants t USING (tenant_id)
		 WHERE q.dropped_at IS NULL
		UNION ALL
		SELECT 2, 'tenant', t.tenant, NULL, NULL, t.concurrency_limit
		  FROM queue_engine.tenants t
		 WHERE EXISTS (SELECT FROM queue_engine.queues q WHERE q.tenant_id = t.tenant_id)
		UNION ALL
		SELECT DISTINCT 3, 'key', t.tenant, q.queue, r.concurrency_key, q.key_concurrency_limit
		  FROM queue_engine.runs r
		  JOIN queue_engine.queues q ON q.queue_id = r.queue_id
		  JOIN queue_engine.tenants t ON t.tenant_id = r.tenant_id
		 WHERE q.key_concurrency_limit IS NOT NULL AND r.concurrency_key IS NOT NULL),
	iv AS (
		SELECT a.t_start, a.t_end, t.tenant, q.queue, r.concurrency_key AS ckey
		  FROM demo.attempts a
		  JOIN queue_engine.runs r ON r.run_id = a.run_id
		  JOIN queue_engine.queues q ON q.queue_id = r.queue_id
		  JOIN queue_engine.tenants t ON t.tenant_id = r.tenant_id),
	ev AS (
		SELECT 'queue' AS level, tenant, queue, NULL::text AS ckey, ts, d
		  FROM iv, LATERAL (VALUES (t_start, 1), (t_end, -1)) e(ts, d)
		UNION ALL
		SELECT 'tenant', tenant, NULL, NULL, ts, d
		  FROM iv, LATERAL (VALUES (t_start, 1), (t_end, -1)) e(ts, d)
		UNION ALL
		SELECT 'key', tenant, queue, ckey, ts, d
		  FROM iv, LATERAL (VALUES (t_start, 1), (t_end, -1)) e(ts, d)
		 WHERE ckey IS NOT NULL),
	running AS (
		-- at equal times ends (-1) count before starts: never overstate
		SELECT level, tenant, queue, ckey,
			   sum(d) OVER (PARTITION BY level, tenant, queue, ckey ORDER BY ts, d
							ROWS UNBOUNDED PRECEDING) AS c
		  FROM ev),
	exact AS (
		SELECT level, tenant, queue, ckey, max(c) AS m
		  FROM running GROUP BY level, tenant, queue, ckey),
	sampled AS (
		SELECT source, level, tenant, queue, ckey, max(executing) AS m
		  FROM demo.samples GROUP BY source, level, tenant, queue, ckey)
	SELECT s.level,
		   CASE s.level WHEN 'queue' THEN s.tenant || '/' || s.queue
						WHEN 'tenant' THEN s.tenant
						ELSE s.queue || ' key ' || s.ckey END,
		   s.lim,
		   coalesce(sr.m, 0),
		   CASE WHEN s.level <> 'key' THEN coalesce(sq.m, 0) END,	-- queue_stats has no per-key count
		   coalesce(e.m, 0),
		   CASE WHEN s.lim IS NULL THEN 'no limit'
				WHEN greatest(sr.m, sq.m, e.m) > s.lim THEN 'VIOLATION'
				ELSE 'OK' END
	  FROM subjects s
	  LEFT JOIN sampled sr ON sr.source = 'runs' AND sr.level = s.level
		   AND sr.tenant = s.tenant AND sr.queue IS NOT DISTINCT FROM s.queue
		   AND sr.ckey IS NOT DISTINCT FROM s.ckey
	  LEFT JOIN sampled sq ON sq.source = 'queue_stats' AND sq.level = s.level
		   AND sq.tenant = s.tenant AND sq.queue IS NOT DISTINCT FROM s.queue
		   AND sq.ckey IS NOT DISTINCT FROM s.ckey
	  LEFT JOIN exact e ON e.level = s.level
		   AND e.tenant = s.tenant AND e.queue IS NOT DISTINCT FROM s.queue
		   AND e.ckey IS NOT DISTINCT FROM s.ckey
	 ORDER BY s.ord, s.tenant, s.queue, length(s.ckey), s.ckey;
$$;

---------------------------------------------------------------------------
-- A starting backlog (producers add more while the workers run)
---------------------------------------------------------------------------
SELECT count(*) AS seeded_emails FROM queue_engine.enqueue_batch('emails',
	ARRAY(SELECT jsonb_build_object('template', 'welcome', 'to', 'user' || i || '@acme.test',
									'work_ms', 20 + (i * 37) % 60)
			FROM generate_series(1, 300) i));
SELECT count(*) AS seeded_reports FROM (
	SELECT queue_engine.enqueue('reports',
			jsonb_build_object('report', 'monthly-' || i, 'work_ms', 200 + (i * 53) % 400),
			priority => CASE WHEN i % 5 = 0 THEN 10 ELSE 0 END)
	  FROM generate_series(1, 30) i) x;
-- customer-1 is the hot customer: half the webhooks, still one at a time.
SELECT count(*) AS seeded_webhooks FROM (
	SELECT queue_engine.enqueue('webhooks',
			jsonb_build_object('event', 'order.created', 'n', i, 'work_ms', 50 + (i * 31) % 150),
			concurrency_key => 'customer-' || CASE WHEN i % 2 = 0 THEN 1 ELSE 2 + i % 5 END,
			idempotency_key => 'evt-seed-' || i)
	  FROM generate_series(1, 120) i) x;
SELECT count(*) AS seeded_invoices FROM queue_engine.enqueue_batch('invoices',
	ARRAY(SELECT jsonb_build_object('invoice', 1000 + i, 'work_ms', 100 + (i * 41) % 200)
			FROM generate_series(1, 40) i));
SELECT count(*) AS seeded_videos FROM queue_engine.enqueue_batch('videos',
	ARRAY(SELECT jsonb_build_object('video', 'clip-' || i, 'work_ms', 400 + (i * 67) % 500)
			FROM generate_series(1, 15) i));
SELECT count(*) AS seeded_thumbnails FROM queue_engine.enqueue_batch('thumbnails',
	ARRAY(SELECT jsonb_build_object('image', 'img-' || i, 'work_ms', 150 + (i * 29) % 150)
			FROM generate_series(1, 30) i));
SELECT count(*) AS seeded_nightly FROM queue_engine.enqueue_batch('nightly',
	ARRAY(SELECT jsonb_build_object('job', 'rollup-' || i, 'work_ms', 100)
			FROM generate_series(1, 20) i));
-- shop: a few orders and a batch waiting to start
SELECT count(*) AS seeded_orders FROM queue_engine.enqueue_batch('orders',
	ARRAY(SELECT jsonb_build_object('flow', 1, 'order_id', nextval('demo.order_ids'), 'work_ms', 20 + (i * 13) % 40)
			FROM generate_series(1, 10) i));
SELECT queue_engine.enqueue('batches', jsonb_build_object('flow', 2, 'items', 5, 'work_ms', 10)) AS seeded_batch;
