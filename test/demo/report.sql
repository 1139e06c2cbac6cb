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
	   count(*) FILTER (WHERE r.status = 'waiting') AS waiting,
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

\echo '=== Waits, events, children and durable steps (tenant shop) ==='
\echo '  orders: charge (step), email as a child run, wait_for_event(email.reply, match order_id, lookback 1 min,'
\echo '  timeout 2 s), a third of the replied ones sleep 700 ms; batches: items as child runs, wait_for_children'
WITH a AS (SELECT * FROM demo.attempts),
	 m AS (SELECT * FROM demo.mailbox),
	 sc AS (SELECT * FROM demo.step_calls),
	 w AS (SELECT q.queue, max(s.executing) AS most
			 FROM demo.samples s JOIN queue_engine.queues q ON q.queue = s.queue
			WHERE s.source = 'waiting' GROUP BY q.queue),
	 e AS (SELECT q.queue, max(s.executing) AS most
			 FROM demo.samples s JOIN queue_engine.queues q ON q.queue = s.queue
			WHERE s.source = 'runs' AND s.level = 'queue' GROUP BY q.queue),
	 ch AS (SELECT c.status, count(*) AS n
			  FROM queue_engine.runs p
			  JOIN queue_engine.queues q ON q.queue_id = p.queue_id AND q.queue = 'batches',
			  LATERAL queue_engine.child_runs(p.run_id, page_size => 1000) c
			 GROUP BY c.status)
SELECT x.what, x.value
  FROM (VALUES
	('orders placed', (SELECT count(*) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
						WHERE q.queue = 'orders')::text),
	('  confirmation emails sent (child runs in notifications)', (SELECT count(*) FROM m)::text),
	('  replies sent (send_event email.reply)', (SELECT count(*) FROM m WHERE event_id IS NOT NULL)::text),
	('    that woke a waiting order at once', (SELECT count(*) FROM m WHERE woken > 0)::text),
	('    sent before the order waited (found by lookback: wait returned queued)',
		(SELECT count(*) FROM a WHERE outcome = 'wait_event->queued')::text),
	('  emails never answered', (SELECT count(*) FROM m WHERE ignored)::text),
	('waits begun: for an event / a sleep / children',
		(SELECT count(*) FILTER (WHERE outcome LIKE 'wait_event->%') || ' / ' ||
				count(*) FILTER (WHERE outcome LIKE 'sleep->%') || ' / ' ||
				count(*) FILTER (WHERE outcome LIKE 'wait_children->%') FROM a)),
	('runs resumed by dequeue, woken by an event', (SELECT count(*) FROM a WHERE resume_kind = 1)::text),
	('  ... by a timeout (no reply within 2 s)', (SELECT count(*) FROM a WHERE resume_kind = 2)::text),
	('  ... by their children (all final)', (SELECT count(*) FROM a WHERE resume_kind = 3)::text),
	('  ... by a timeout waiting for children', (SELECT count(*) FROM a WHERE resume_kind = 5)::text),
	('  ... from a sleep', (SELECT count(*) FROM a WHERE resume_kind = 4)::text),
	('runs still waiting', (SELECT count(*) FROM queue_engine.runs WHERE status = 'waiting')::text),
	('most orders waiting at once (sampled) / executing (limit 2)',
		coalesce((SELECT most FROM w WHERE queue = 'orders'), 0) || ' / ' || coalesce((SELECT most FROM e WHERE queue = 'orders'), 0)),
	('most batches waiting at once (sampled) / executing (limit 1)',
		coalesce((SELECT most FROM w WHERE queue = 'batches'), 0) || ' / ' || coalesce((SELECT most FROM e WHERE queue = 'batches'), 0)),
	('children of batches by state', coalesce((SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM ch), '-')),
	('steps saved (run_steps)', (SELECT count(*) FROM queue_engine.run_steps)::text),
	('  by step', coalesce((SELECT string_agg(step || ' ' || n, ', ' ORDER BY step)
							  FROM (SELECT step, count(*) AS n FROM queue_engine.run_steps GROUP BY step) x), '-')),
	('charge not repeated on a retry (save_step returned false)',
		(SELECT count(*) FROM sc WHERE step = 'charge' AND NOT stored)::text),
	('wait calls fenced off (expect 0)', (SELECT count(*) FROM a WHERE outcome = 'wait-rejected')::text)
	) x(what, value);

\echo '=== Waiting runs as get_run showed them during the workload (waiting_for; one per kind of wait) ==='
SELECT kind, queue, run_id, to_char(seen_at, 'HH24:MI:SS.MS') AS seen_at, waiting_for
  FROM demo.waiting_examples ORDER BY kind;

\echo '=== list_runs: the newest runs of the shop tenant (one page of 6; every state, newest first) ==='
SELECT run_id, queue, status, attempt, tags, to_char(created_at, 'HH24:MI:SS.US') AS created_at
  FROM queue_engine.list_runs(tenant => 'shop', page_size => 6);

\echo '=== list_runs: failed runs of any tenant, two pages of 3 joined by the cursor ==='
WITH p1 AS (SELECT * FROM queue_engine.list_runs(status => '{failed}', page_size => 3)),
     p2 AS (SELECT * FROM queue_engine.list_runs(status => '{failed}', page_size => 3,
                                                 after => (SELECT cursor FROM p1 ORDER BY created_at, run_id LIMIT 1)))
SELECT 1 AS page, run_id, queue, tenant, attempt FROM p1
UNION ALL SELECT 2, run_id, queue, tenant, attempt FROM p2 ORDER BY 1, 2 DESC;

\echo '=== metrics() (Prometheus text): counters of the busiest queues, the latency histograms, the horizon ==='
SELECT line FROM regexp_split_to_table(queue_engine.metrics(), E'\n') AS line
 WHERE line ~ '^queue_engine_runs_(enqueued|completed|failed|retried)_total\{tenant="(acme|shop)"'
    OR line ~ '^queue_engine_(start_delay|run_duration)_seconds_(sum|count)'
    OR line ~ '^queue_engine_start_delay_seconds_bucket\{le="(0.01|0.1|1)"'
    OR line ~ '^queue_engine_xmin_horizon_age_seconds'
    OR line ~ '^queue_engine_consistency_repairs_total';

\echo '=== check_consistency(repair => false) after the run (every found should be 0) ==='
SELECT check_name, found, repaired FROM queue_engine.check_consistency(false);

\echo '=== consistency_log (repairs made by maintenance during the run; should be empty) ==='
SELECT count(*) AS repairs_logged, coalesce(string_agg(DISTINCT check_name, ', '), '-') AS checks
  FROM queue_engine.consistency_log;
