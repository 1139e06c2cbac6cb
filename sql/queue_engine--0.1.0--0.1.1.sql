/* queue_engine--0.1.0--0.1.1.sql: 0.1.1, hardening (issue 14).  A fresh
 * CREATE EXTENSION runs queue_engine--0.1.0.sql and then this script, so a
 * new install and an upgraded one are the same by construction. */

\echo Use "ALTER EXTENSION queue_engine UPDATE TO '0.1.1'" to load this file. \quit

---------------------------------------------------------------------------
-- Section 1: limits and cached definitions (limit races, two-phase commit,
-- reinstall).
---------------------------------------------------------------------------

-- A change to a queue or tenant (limits, pause, drop; through the API or by
-- hand) waits for the claims in flight in its tenant and keeps new ones out
-- until it commits: every claim holds the tenant's claim lock (dequeue.c),
-- this takes it exclusive.  So no run starts under an old limit after a new
-- one commits.  (The statement triggers queues_changed and tenants_changed
-- now send PostgreSQL invalidations, which also reach sessions after COMMIT
-- PREPARED and after DROP EXTENSION: no SQL change was needed for that.)
CREATE FUNCTION queue_engine.definition_change_lock()
RETURNS trigger
AS 'MODULE_PATHNAME', 'qe_definition_change_lock'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER queues_change_lock
	AFTER UPDATE ON queue_engine.queues
	FOR EACH ROW EXECUTE FUNCTION queue_engine.definition_change_lock();
CREATE TRIGGER tenants_change_lock
	AFTER UPDATE ON queue_engine.tenants
	FOR EACH ROW EXECUTE FUNCTION queue_engine.definition_change_lock();


---------------------------------------------------------------------------
-- Section 2: dump and restore (sequences, ON CONFLICT), schema ownership.
---------------------------------------------------------------------------



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
