-- queue_engine 0.1.1 -> 0.2.0: run storage 0.2 (issue 15).
--
-- A fresh CREATE EXTENSION runs queue_engine--0.1.0.sql and then each
-- update script in order, so a new install and an updated one have the
-- same objects by construction (TAP 007_upgrade and 011_upgrade_from_release
-- compare them).  Each section says what it changes and why.

\echo Use "ALTER EXTENSION queue_engine UPDATE TO '0.2.0'" to load this file. \quit

---------------------------------------------------------------------------
-- Section 1: count deltas in two segments, emptied by TRUNCATE.
--
-- queue_count_deltas becomes a table partitioned by segment (0 or 1).
-- Writers append to the current segment (a number in shared state, which
-- the segment column's default reads); maintenance folds both into
-- queue_counts and, once a segment has grown large while writers used the
-- other, folds it whole and truncates it.  So the rows folds delete do not
-- pile up while a long-open snapshot keeps VACUUM from removing them
-- (src/maintenance.c).  The 0.1 table becomes segment 0 with its rows, so
-- nothing pending is lost and its pg_dump mark stays.
---------------------------------------------------------------------------

CREATE FUNCTION queue_engine.count_delta_segment() RETURNS smallint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'qe_count_delta_segment_sql';

DO $$
DECLARE
	-- The view reads the deltas table by its name: taken before the rename
	-- (which a view follows) and given again once the name is the parent's.
	stats_view text := pg_catalog.pg_get_viewdef('queue_engine.queue_stats'::pg_catalog.regclass);
	stats_options text[] := (SELECT reloptions FROM pg_catalog.pg_class
							   WHERE oid = 'queue_engine.queue_stats'::pg_catalog.regclass);
BEGIN
	ALTER TABLE queue_engine.queue_count_deltas RENAME TO queue_count_deltas_0;
	ALTER TABLE queue_engine.queue_count_deltas_0 ADD COLUMN segment smallint NOT NULL DEFAULT 0;
	CREATE TABLE queue_engine.queue_count_deltas (
		queue_id			int NOT NULL,
		queued				int NOT NULL DEFAULT 0,
		delayed				int NOT NULL DEFAULT 0,
		executing			int NOT NULL DEFAULT 0,
		waiting				int NOT NULL DEFAULT 0,
		segment				smallint NOT NULL DEFAULT queue_engine.count_delta_segment()
	) PARTITION BY LIST (segment);
	ALTER TABLE queue_engine.queue_count_deltas
		ATTACH PARTITION queue_engine.queue_count_deltas_0 FOR VALUES IN (0);
	CREATE TABLE queue_engine.queue_count_deltas_1
		PARTITION OF queue_engine.queue_count_deltas FOR VALUES IN (1)
		WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
	EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW queue_engine.queue_stats%s AS %s',
							  CASE WHEN stats_options IS NULL THEN ''
							  ELSE ' WITH (' || pg_catalog.array_to_string(stats_options, ', ') || ')' END,
							  stats_view);
END;
$$;

-- The partitions hold the data; the parent is marked too, so that every
-- table of the extension is (pg_dump dumps no data of a partitioned table).
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queue_count_deltas', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queue_count_deltas_1', '');

---------------------------------------------------------------------------
-- End of sections.  Privileges: nothing new for PUBLIC.
---------------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue_engine FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA queue_engine FROM PUBLIC;
