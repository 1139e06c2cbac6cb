-- test/bench/memory_client.sql: the prelude of the client-driven memory
-- check (run.sh workload "memclient").  run.sh pipes this file, then
-- :calls/2 pairs of separate dequeue and complete statements, then
-- memory_client_end.sql, into one psql session: one backend, called the way
-- a worker calls it (one statement, one transaction at a time).
\set ON_ERROR_STOP 1
SET synchronous_commit = off;
SELECT pg_backend_pid() AS pid \gset
\setenv QE_MEM_PID :pid
-- Warm up: plans prepared, caches filled.
SELECT count(queue_engine.complete(run_id)) FROM queue_engine.dequeue(ARRAY['bench_mem'], 1);
SELECT count(queue_engine.complete(run_id)) FROM queue_engine.dequeue(ARRAY['bench_mem'], 1);
SELECT sum(total_bytes) AS contexts_bytes FROM pg_backend_memory_contexts \gset before_
\! awk '/^(RssAnon|VmRSS|RssShmem):/ {v[$1] = $2} END {printf "before|%d|%d\n", v["RssAnon:"], v["VmRSS:"] - v["RssShmem:"]}' /proc/$QE_MEM_PID/status
\echo before_contexts|:before_contexts_bytes
