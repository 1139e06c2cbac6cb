-- graphile-worker: addJob (graphile-worker/dist/helpers.js, makeAddJob), its parameters inlined.
        select * from "graphile_worker".add_job(
          identifier => 'bench'::text,
          payload => '{"n": 1, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'::json,
          queue_name => NULL::text,
          run_at => NULL::timestamptz,
          max_attempts => NULL::int,
          job_key => NULL::text,
          priority => NULL::int,
          flags => NULL::text[],
          job_key_mode => NULL::text
        );
