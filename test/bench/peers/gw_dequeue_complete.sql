-- graphile-worker: a worker's get_job then complete_job, as the worker issues them
-- (dist/sql/getJobs.js constructQuery with batchSize 1; dist/sql/completeJobs.js, one job
-- without a named queue). The claim's final UPDATE ... RETURNING * is wrapped in a CTE that
-- hands its id to pgbench, and returns jobs.* where the worker has * (the rest is j's 4 columns
-- again, which would make "id" ambiguous in the wrapper); nothing else in the statement changes.
with j as (
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
    limit 1
    for update
    skip locked
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
select coalesce(max(id), 0) as jid from claimed \gset
\if :jid > 0
delete from "graphile_worker"._private_jobs as jobs
where id = :jid::bigint;
\endif
