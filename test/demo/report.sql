-- test/demo/report.sql: what happened during the demo workload, printed by test/demo.sh after the workers stopped.
\pset footer off
\pset null '-'

\echo
\echo '=== Runs by state, per queue ==='
SELECT t.tenant, q.queue,
	   coalesce(q.concurrency_limit::text, '-') AS queue_limit,
	   coalesce(q.key_concurrency_limit::text, '-') AS key_limit,
	   coalesce(q.ttl::text, '-') AS ttl,
	   CASE WHEN q.paused THEN 'yes' ELSE '' END AS paused,
	   count(r.run_id) AS runs,
	   count(*) FILTER (WHERE r.status = 'completed') AS completed,
	   count(*) FILTER (WHERE r.status = 'failed') AS failed,
	   count(*) FILTER (WHERE r.status = 'expired') AS expired,
	   count(*) FILTER (WHERE r.status = 'queued') AS queued,
	   count(*) FILTER (WHERE r.status = 'delayed') AS delayed,
	   count(*) FILTER (WHERE r.status = 'executing') AS executing,
	   count(*) FILTER (WHERE r.status = 'canceled') AS canceled,
	   count(*) FILTER (WHERE r.attempt > 1) AS retried
  FROM queue_engine.queues q
  JOIN queue_engine.tenants t USING (tenant_id)
  LEFT JOIN queue_engine.runs r ON r.queue_id = q.queue_id
 GROUP BY t.tenant, q.queue, q.queue_id
 ORDER BY t.tenant, q.queue_id;

\echo '=== Highest concurrency seen vs limit ==='
\echo '  sampled: max executing in one snapshot of runs (every ~50 ms); counters: same from queue_stats;'
\echo '  exact: max overlap of the attempts workers logged (each interval inside the real slot time)'
SELECT level, name, coalesce("limit"::text, '-') AS "limit", sampled, counters, exact, verdict
  FROM demo.concurrency();

\echo '=== Retries, expiry, throughput ==='
WITH c AS (SELECT * FROM demo.control),
	 a AS (SELECT count(*) AS attempts,
				  count(*) FILTER (WHERE outcome = 'completed') AS completed_by_workers,
				  count(*) FILTER (WHERE outcome LIKE 'fail->%') AS failed_attempts,
				  count(*) FILTER (WHERE outcome LIKE '%rejected') AS rejected
			 FROM demo.attempts),
	 r AS (SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
				  count(*) FILTER (WHERE status = 'completed'
								   AND finished_at BETWEEN (SELECT started_at FROM c)
													   AND (SELECT finished_at FROM c)) AS completed_in_window,
				  count(*) FILTER (WHERE attempt > 1) AS retried_runs,
				  count(*) FILTER (WHERE attempt > 1 AND status = 'completed') AS completed_after_retry,
				  count(*) FILTER (WHERE status = 'failed') AS failed_for_good,
				  count(*) FILTER (WHERE status = 'expired') AS expired,
				  count(*) AS runs
			 FROM queue_engine.runs)
SELECT x.what, x.value
  FROM c, a, r,
	   LATERAL (VALUES
		('workload duration (s)', round(extract(epoch FROM c.finished_at - c.started_at), 1)::text),
		('runs triggered (seed + producers)', r.runs::text),
		('attempts finished by workers', a.attempts::text),
		('failed attempts (simulated errors)', a.failed_attempts::text),
		('runs retried (attempt > 1)', r.retried_runs::text),
		('  of which completed after a retry', r.completed_after_retry::text),
		('runs failed for good (attempts exhausted)', r.failed_for_good::text),
		('runs expired (ttl passed before a start)', r.expired::text),
		('runs completed', r.completed::text),
		('throughput (completed runs / s)',
			round(r.completed_in_window / greatest(extract(epoch FROM c.finished_at - c.started_at), 0.001), 1)::text),
		('complete/fail calls fenced off (expect 0)', a.rejected::text),
		('sampler snapshots', coalesce(c.samples, 0)::text)
	   ) x(what, value);

\echo '=== check_consistency(repair => false) after the run (every found should be 0) ==='
SELECT check_name, found, repaired FROM queue_engine.check_consistency(false);

\echo '=== consistency_log (repairs made by maintenance during the run; should be empty) ==='
SELECT count(*) AS repairs_logged, coalesce(string_agg(DISTINCT check_name, ', '), '-') AS checks
  FROM queue_engine.consistency_log;
