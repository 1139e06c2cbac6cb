-- pg-boss: a worker's fetch of 10 (work() with batchSize 10: dist/plans.js fetchNextJob, limit 10)
-- then its complete of the 10 (dist/plans.js completeJobs, fenced), as boss_dequeue_complete.sql.
      WITH
      
      
      
      next AS (
        SELECT j.id
        FROM pgboss.job_common j
        WHERE j.name = 'bench'
          AND j.state < 'active'
          AND NOT j.blocked
          AND j.start_after <= pgboss.job_now()
        ORDER BY j.priority desc, j.created_on
        LIMIT 10
        FOR UPDATE OF j SKIP LOCKED
      )
      
      ,
      claimed AS (
      UPDATE pgboss.job_common j SET
        state = 'active',
        started_on = pgboss.job_now(),
        heartbeat_on = pgboss.job_now(),
        retry_count = CASE WHEN started_on IS NOT NULL THEN retry_count + 1 ELSE retry_count END
      FROM next
      WHERE name = 'bench' AND j.id = next.id
      
      
      RETURNING j.id, name, data, retry_count as "retryCount", expire_seconds as "expireInSeconds", heartbeat_seconds as "heartbeatSeconds", group_id as "groupId", group_tier as "groupTier", j.trace_context as "__traceContext"
      )
      SELECT count(*) AS n, coalesce(array_agg(id), '{}') AS ids,
             coalesce(array_agg(id::text || ':' || "retryCount"), '{}') AS fence
        FROM claimed \gset
\if :n > 0
    WITH results AS (
      UPDATE pgboss.job_common
      SET completed_on = pgboss.job_now(),
        state = 'completed',
        output = NULL::jsonb,
        blocked = blocked,
        pending_dependencies = pending_dependencies
      WHERE name = 'bench'
        AND id = ANY(':ids'::uuid[])
        AND state = 'active'
        AND state = 'active'
        AND (id::text || ':' || retry_count::text) = ANY(':fence'::text[])
      RETURNING id
    )
    SELECT COUNT(*), COALESCE(array_agg(id), '{}'::uuid[]) AS ids FROM results
  ;
\endif
