-- test/bench/setup.sql: the raw-SQL baseline table, the table the "write" holder of
-- workload 10 inserts into, and the engine's bench queue (run again for each preload mode).
DROP TABLE IF EXISTS raw_jobs;
CREATE TABLE raw_jobs (
	id			bigserial PRIMARY KEY,
	run_at		timestamptz NOT NULL DEFAULT now(),
	locked_at	timestamptz,
	payload		jsonb NOT NULL
);
CREATE INDEX raw_jobs_ready ON raw_jobs (run_at, id) WHERE locked_at IS NULL;
DROP TABLE IF EXISTS bench_unrelated;
CREATE TABLE bench_unrelated (
	id			bigserial PRIMARY KEY,
	note		text NOT NULL
);
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS queue_engine CASCADE;
CREATE EXTENSION queue_engine;
SELECT queue_engine.create_queue('bench');
