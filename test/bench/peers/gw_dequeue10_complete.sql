-- graphile-worker: a worker pool's batched get_job (localQueue size 10: dist/sql/getJobs.js
-- constructQuery with batchSize 10) then the batched complete_jobs (completeJobBatchDelay >= 0:
-- dist/sql/completeJobs.js, jobs without a named queue). The claim's final UPDATE ... RETURNING *
-- is wrapped in a CTE that hands the ids to pgbench, returning jobs.* for * as in
-- gw_dequeue_complete.sql; nothing else in the statement changes.
with j_raw as (
  select jobs.job_queue_id, jobs.priority, jobs.run_at, jobs.id
    from "graphile_worker"._private_jobs as jobs
    where jobs.is_available = true
    and run_at <= now()
    and task_id = any('{:task_id}'::int[])
    and (
      jobs.job_queue_id is null
      or
      jobs.job_queue_id in (
        select id
        from "graphile_worker"._private_job_queues as job_queues
        where job_queues.is_available = true
        for update
        skip locked
      )
    )
    order by priority asc, run_at asc
    limit 10
    for update
    skip locked
),
j as (
  select distinct on (job_queue_id, case when job_queue_id is null then id end)
      job_queue_id, priority, run_at, id
    from j_raw
    order by job_queue_id, case when job_queue_id is null then id end, priority asc, run_at asc
),
q as (
  update "graphile_worker"._private_job_queues as job_queues
    set
      locked_by = 'pool-pgbench'::text,
      locked_at = now()
    from j
    where job_queues.id = j.job_queue_id
),
claimed as (
  update "graphile_worker"._private_jobs as jobs
    set
      attempts = jobs.attempts + 1,
      locked_by = 'pool-pgbench'::text,
      locked_at = now()
    from j
    where jobs.id = j.id
    returning jobs.*
)
select count(*) as n, coalesce(array_agg(id), '{}') as ids from claimed \gset
\if :n > 0
delete from "graphile_worker"._private_jobs as jobs
using unnest(':ids'::bigint[]) n(n)
where id = n;
\endif
