/* queue_engine--0.1.0--0.1.1.sql: 0.1.1, hardening (issue 14).  A fresh
 * CREATE EXTENSION runs queue_engine--0.1.0.sql and then this script, so a
 * new install and an upgraded one are the same by construction. */

\echo Use "ALTER EXTENSION queue_engine UPDATE TO '0.1.1'" to load this file. \quit

---------------------------------------------------------------------------
-- Section 1: limits and cached definitions (limit races, two-phase commit,
-- reinstall).
---------------------------------------------------------------------------



---------------------------------------------------------------------------
-- Section 2: dump and restore (sequences, ON CONFLICT), schema ownership.
---------------------------------------------------------------------------

-- pg_dump dumps an extension's objects as one CREATE EXTENSION and copies
-- only the data of the tables and sequences marked here.  0.1.0 marked the
-- tables and runs_run_id_seq, but not the identity sequences that number
-- tenants and queues: after a restore they started again at 1, so new
-- tenants and queues collided with restored ids.  PostgreSQL 15 accepts an
-- identity sequence here (it is a member of the extension like any other
-- sequence) and pg_dump then restores it with setval.  The tenant cursor of
-- dequeue(NULL) is kept too, so turns go on where they stopped.
SELECT pg_catalog.pg_extension_config_dump('queue_engine.tenants_tenant_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.queues_queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('queue_engine.dequeue_tenant_cursor', '');

-- The default tenant: 0.1.0 left its row out of the dump (CREATE EXTENSION
-- inserts it, so restoring it too would collide), which lost its
-- concurrency limit.  Now every tenant row is dumped, and a restore's copy
-- of the default row replaces the one CREATE EXTENSION made: same id (both
-- are the first tenant), same name, no queue pointing at it yet.  Outside a
-- restore nothing inserts a second default row with the first one's id (the
-- id is generated always; only COPY or OVERRIDING SYSTEM VALUE can give it).
CREATE FUNCTION queue_engine.restore_default_tenant()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM queue_engine.tenants t
	 WHERE t.tenant = NEW.tenant AND t.tenant_id = NEW.tenant_id;
	RETURN NEW;
END;
$$;
CREATE TRIGGER tenants_restore_default
	BEFORE INSERT ON queue_engine.tenants
	FOR EACH ROW WHEN (NEW.tenant = 'default')
	EXECUTE FUNCTION queue_engine.restore_default_tenant();
SELECT pg_catalog.pg_extension_config_dump('queue_engine.tenants', '');

---------------------------------------------------------------------------
-- Section 3: caps and input checks.
---------------------------------------------------------------------------



---------------------------------------------------------------------------
-- Section 4: tenant-scoped roles.
---------------------------------------------------------------------------



---------------------------------------------------------------------------
-- End of sections.  Privileges: nothing new for PUBLIC.
---------------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue_engine FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA queue_engine FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA queue_engine FROM PUBLIC;
