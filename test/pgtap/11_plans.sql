-- 11_plans.sql: the engine's statements keep their index-ordered plans whatever the
-- statistics say (spi_util.c, exec_planned): a dequeue over many queues that autovacuum
-- has not analysed yet reads a few of them, not all (before: a bitmap scan and a sort of
-- every queue in each dequeue, workload 6 at a sixth of its speed).
BEGIN;
SELECT plan(2);
CREATE FUNCTION pg_temp.queues_read() RETURNS bigint LANGUAGE sql AS $$
	SELECT pg_stat_get_xact_tuples_returned('queue_engine.queues'::regclass)
	     + pg_stat_get_xact_tuples_fetched('queue_engine.queues'::regclass)
	     + (SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid)) FROM pg_index i
	         WHERE i.indrelid = 'queue_engine.queues'::regclass)
$$;
SELECT count(queue_engine.create_queue('pq_' || i, concurrency_limit => 1)) FROM generate_series(1, 3000) i \gset
SELECT count(queue_engine.enqueue('pq_' || i, '{}')) FROM generate_series(1, 3000) i \gset
SELECT count(*) FROM queue_engine.dequeue(NULL, 1) \gset
SELECT pg_temp.queues_read() AS before \gset
SELECT count(*) FROM queue_engine.dequeue(NULL, 1) \gset
SELECT count(*) FROM queue_engine.dequeue(NULL, 1) \gset
SELECT pg_temp.queues_read() - :before AS used \gset
SELECT cmp_ok(:used::bigint, '<', 300::bigint, 'two more dequeue(NULL, 1) over 3,000 unanalysed queues read few of them (' || :used || ')');
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE status = 'executing'), 3, 'and each started a run');
SELECT * FROM finish();
ROLLBACK;
