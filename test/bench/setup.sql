-- test/bench/setup.sql: the raw-SQL baseline table and the engine's bench queue.
DROP TABLE IF EXISTS raw_jobs;
CREATE TABLE raw_jobs (
	id			bigserial PRIMARY KEY,
	run_at		timestamptz NOT NULL DEFAULT now(),
	locked_at	timestamptz,
	payload		jsonb NOT NULL
);
CREATE INDEX raw_jobs_ready ON raw_jobs (run_at, id) WHERE locked_at IS NULL;
CREATE EXTENSION IF NOT EXISTS queue_engine;
SELECT queue_engine.create_queue('bench');
