-- graphile-worker: addJobs (graphile-worker/dist/helpers.js, makeAddJobs); :jobs is the JSON
-- array of job specs that addJobs sends (peers.sh builds it: :batch specs of the bench payload).
select *
from "graphile_worker".add_jobs(
  array(
    select json_populate_recordset(null::"graphile_worker".job_spec, ':jobs'::json)
  ),
  NULL::boolean
);
