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
