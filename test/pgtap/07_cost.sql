-- 07_cost: the work one dequeue does does not grow with the runs waiting
-- behind limits, nor with the number of queues that have work.  Measured in buffers touched (EXPLAIN ANALYZE BUFFERS of
-- the call, which counts the function's own queries), not in time.
BEGIN;
SELECT plan(6);

CREATE FUNCTION pg_temp.dequeue_buffers(queues text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	plan json;
BEGIN
	EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM queue_engine.dequeue(%L::text[], 1)', queues)
	   INTO plan;
	RETURN (plan->0->'Plan'->>'Shared Hit Blocks')::bigint
		 + (plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END;
$$;

-- Queues whose runs all wait behind a limit: a queue at its limit, a key at
-- its limit, a tenant at its limit.  Each has one executing run.
SELECT queue_engine.create_queue('full_queue', concurrency_limit => 1);
SELECT queue_engine.create_queue('full_key', key_concurrency_limit => 1);
SELECT queue_engine.create_queue('full_tenant', tenant => 't_full');
SELECT queue_engine.set_tenant_limit('t_full', 1);
SELECT queue_engine.create_queue('free');
SELECT count(*) FROM queue_engine.enqueue_batch('full_queue', ARRAY['{}']::jsonb[]);
SELECT count(*) FROM queue_engine.enqueue_batch('full_key', ARRAY['{}']::jsonb[], concurrency_key => 'k');
SELECT count(*) FROM queue_engine.enqueue_batch('full_tenant', ARRAY['{}']::jsonb[]);
SELECT count(*) FROM queue_engine.dequeue(ARRAY['full_queue', 'full_key', 'full_tenant'], 10);

-- A few runs waiting behind the limits: the baseline.
SELECT count(*)
  FROM unnest(ARRAY['full_queue', 'full_key', 'full_tenant']) q,
       LATERAL queue_engine.enqueue_batch(q, array_fill('{}'::jsonb, ARRAY[10]),
                                          concurrency_key => CASE q WHEN 'full_key' THEN 'k' END);
SELECT count(*) FROM queue_engine.enqueue_batch('free', array_fill('{}'::jsonb, ARRAY[10]));
-- (a first call plans the engine's statements; measure the second)
SELECT pg_temp.dequeue_buffers(NULL) AS warmup \gset
SELECT pg_temp.dequeue_buffers(NULL) AS small \gset

SELECT is((SELECT queue FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
            WHERE r.status = 'executing' ORDER BY r.started_at DESC, r.run_id DESC LIMIT 1),
          'free', 'with few runs behind limits, dequeue(NULL) serves the free queue');

-- 20,000 more runs behind each limit.
SELECT count(*)
  FROM unnest(ARRAY['full_queue', 'full_key', 'full_tenant']) q,
       LATERAL queue_engine.enqueue_batch(q, array_fill('{}'::jsonb, ARRAY[20000]),
                                          concurrency_key => CASE q WHEN 'full_key' THEN 'k' END);
-- Statistics of the run tables, as if someone ran ANALYZE (the segments
-- have no autovacuum, so nothing else gives them any; a relation listed
-- alone, since ANALYZE of an inheritance parent does not analyze its
-- children): the replanned statements must stay cheap too.
-- The engine itself never analyzes the segments (their plans hold without
-- statistics); a DBA's ANALYZE must not make them worse.
ANALYZE queue_engine.ready, queue_engine.ready_0, queue_engine.ready_1,
        queue_engine.delayed, queue_engine.delayed_0, queue_engine.delayed_1,
        queue_engine.executing, queue_engine.executing_0, queue_engine.executing_1;
SELECT pg_temp.dequeue_buffers(NULL) AS warmup \gset
SELECT pg_temp.dequeue_buffers(NULL) AS large \gset

SELECT is((SELECT count(*) FROM queue_engine.runs WHERE status = 'executing' AND queue_id =
            (SELECT queue_id FROM queue_engine.queues WHERE queue = 'free')), 4::bigint,
          'with 60,000 runs behind limits, every dequeue(NULL) still serves the free queue');
SELECT cmp_ok(:large::bigint, '<=', :small::bigint + 30,
              format('buffers touched do not grow with runs behind limits (%s with 30, %s with 60,030)', :small, :large));
-- For scale: reading the blocked runs would touch hundreds of pages (the
-- 60,030 ready runs take about 500 heap pages and 500 index pages in
-- storage 0.2).
SELECT cmp_ok((SELECT (pg_total_relation_size('queue_engine.ready_0') + pg_total_relation_size('queue_engine.ready_1')) / 8192),
              '>', :large::bigint * 5,
              'the ready segments and their indexes are far larger than what one dequeue touches');

-- Many queues with work: dequeue(NULL) does not list them all (tenants and
-- queues take turns through cursors), so 1,000 more queues with a run each
-- cost what one does, give or take the fixed cost of serving a queue for
-- the first time (with the library preloaded, its first claim also walks
-- its ready entries to set the queue's ready hint, and its limit hint slot
-- is taken): a bound of 45 buffers more, where listing the 1,000 queues
-- would touch thousands.
DO $$
BEGIN
	FOR i IN 1..1000 LOOP
		PERFORM queue_engine.create_queue('many_' || i);
		PERFORM queue_engine.enqueue('many_' || i);
	END LOOP;
END $$;
ANALYZE queue_engine.queues;
SELECT pg_temp.dequeue_buffers(NULL) AS warmup \gset
SELECT pg_temp.dequeue_buffers(NULL) AS many \gset
SELECT cmp_ok(:many::bigint, '<=', :small::bigint + 45,
              format('buffers touched do not grow with queues that have work (%s with 1 such queue, %s with 1,001)', :small, :many));
SELECT is((SELECT count(DISTINCT queue_id)::int FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
            WHERE r.status = 'executing' AND q.queue LIKE 'many\_%'), 2,
          'and the two dequeues served two different queues');

SELECT * FROM finish();
ROLLBACK;
