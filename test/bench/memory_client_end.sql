-- test/bench/memory_client_end.sql: the end of the client-driven memory
-- check: the same backend's private memory after the calls.
SELECT sum(total_bytes) AS contexts_bytes FROM pg_backend_memory_contexts \gset after_
\! awk '/^(RssAnon|VmRSS|RssShmem):/ {v[$1] = $2} END {printf "after|%d|%d\n", v["RssAnon:"], v["VmRSS:"] - v["RssShmem:"]}' /proc/$QE_MEM_PID/status
\echo after_contexts|:after_contexts_bytes
SELECT 'completed|' || count(*) FROM queue_engine.finished_runs WHERE status = 'completed';
