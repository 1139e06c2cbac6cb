/*-------------------------------------------------------------------------
 *
 * consistency.c
 *	  check_consistency(): recompute the engine's own bookkeeping from the
 *	  run tables of storage 0.2 (ready, delayed, executing, finished_runs:
 *	  run_state.h), report each kind of drift, repair it, and record every
 *	  repair in queue_engine.consistency_log.
 *
 *	  Each check is one statement, so what it compares (runs against
 *	  counts, leases, keys) is read in one snapshot, and a repair is a
 *	  correction that commutes with concurrent writers: it never needs to
 *	  lock out the workers.  A repair that changes a run's state moves it
 *	  between tables in that statement.  The checks read whole tables and
 *	  are planned with the caller's settings (qe_exec_whole_tables()), not
 *	  with the index scans every other engine statement is planned for.
 *
 *-------------------------------------------------------------------------
 */
#include "run_state.h"

#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(qe_check_consistency);

typedef struct QeCheck
{
	const char *name;
	const char *sql;			/* $1 = repair; returns found, repaired, detail */
	bool		repair_grants_leases;	/* to executing runs, already passed */
	bool		repair_adds_ready;	/* queued runs enter the order index */
	int64		(*repair_fn) (void);	/* repairs in C instead (returns how many) */
} QeCheck;

/*
 * A run's copies that a check deletes, by table (alias d: the extra copies,
 * with the copy's table t, row c, and place: 2 executing, 3 ready, 4
 * delayed), one CTE per family (the families have no common btree:
 * ready and delayed none on run_id at all); each returns run_id.
 */
#define DELETE_COPIES(cte, family, place) \
	" " cte " AS (" \
	"  DELETE FROM queue_engine." family " x USING extra d" \
	"   WHERE d.place = " place " AND x.tableoid = d.t AND x.ctid = d.c" \
	"  RETURNING x.run_id)"

/*
 * The unfinished runs of a family (alias x) of queues that do not exist,
 * deleted when $1 (repair), as the columns of a finished run (run_id,
 * run_at, started_at, queue_id, policy_id, priority, attempt, payload,
 * concurrency_key, worker, meta), for runs_of_unknown_queue.
 */
#define UNKNOWN_QUEUE_OF(x) \
	" WHERE $1 AND NOT EXISTS (SELECT 1 FROM queue_engine.queues q" \
	"                           WHERE q.queue_id = " x ".queue_id)"
#define DELETE_PENDING_OF_UNKNOWN_QUEUE(cte, family) \
	" " cte " AS (" \
	"  DELETE FROM queue_engine." family " x" UNKNOWN_QUEUE_OF("x") \
	"  RETURNING x.run_id, x.run_at, (x.meta).started_at AS started_at, x.queue_id," \
	"            x.policy_id, x.priority, " QE_SQL_ATTEMPT("x") " AS attempt, x.payload," \
	"            " QE_SQL_KEY_OF("x") " AS concurrency_key, (x.meta).worker AS worker, x.meta)"

static const QeCheck checks[QE_CHECK_COUNT] = {
	/*
	 * Unfinished runs must belong to a queue that exists (a run enqueued
	 * into a queue that was deleted behind the engine's back, or by a
	 * session that knew the queue before the extension was dropped and
	 * created again, could never start); repaired by canceling them: each
	 * moves from its table to finished_runs, canceled now, as 0.1 made it
	 * (attempt, started_at and worker kept, the cancel as last_error).  A
	 * run already in finished_runs as well (runs_in_two_places) keeps that
	 * row: its other copy is only deleted.  Reads ready, delayed and
	 * executing, never the history; first, so that the counts check below
	 * sees the repair.
	 */
	{"runs_of_unknown_queue",
		"WITH open AS ("
		"  SELECT run_id, queue_id FROM queue_engine.ready"
		"  UNION ALL SELECT run_id, queue_id FROM queue_engine.delayed"
		"  UNION ALL SELECT run_id, queue_id FROM queue_engine.executing"
		"  UNION ALL SELECT run_id, queue_id FROM queue_engine.waiting_runs),"
		" bad AS ("
		"  SELECT o.run_id, o.queue_id FROM open o"
		"   WHERE NOT EXISTS (SELECT 1 FROM queue_engine.queues q WHERE q.queue_id = o.queue_id)),"
		DELETE_PENDING_OF_UNKNOWN_QUEUE("gone_ready", "ready") ","
		DELETE_PENDING_OF_UNKNOWN_QUEUE("gone_delayed", "delayed") ","
		" gone_executing AS ("
		"  DELETE FROM queue_engine.executing x" UNKNOWN_QUEUE_OF("x")
		"  RETURNING x.run_id, x.run_at, x.started_at, x.queue_id, x.policy_id,"
		"            x.priority, x.attempt, x.payload, x.concurrency_key, x.worker, x.meta),"
		" gone_waiting AS ("
		"  DELETE FROM queue_engine.waiting_runs x" UNKNOWN_QUEUE_OF("x")
		"  RETURNING x.run_id, x.run_at, x.started_at, x.queue_id, x.policy_id,"
		"            x.priority, x.attempt, x.payload, x.concurrency_key, x.worker, x.meta),"
		" gone AS ("
		"  SELECT * FROM gone_ready UNION ALL SELECT * FROM gone_delayed"
		"  UNION ALL SELECT * FROM gone_executing UNION ALL SELECT * FROM gone_waiting),"
		" fix AS ("
		"  INSERT INTO queue_engine.finished_runs"
		"         (run_id, finished_at, run_at, started_at, queue_id, policy_id, priority,"
		"          attempt, status, payload, output, concurrency_key, worker, meta)"
		"  SELECT g.run_id, now(), g.run_at, g.started_at, g.queue_id, g.policy_id,"
		"         g.priority, g.attempt, 'canceled', g.payload, NULL, g.concurrency_key,"
		"         g.worker,"
		QE_SQL_META("NULL", "(g.meta).created_at", "(g.meta).expires_at", "NULL", "NULL",
					"(g.meta).idempotency_key", "(g.meta).tags", "(g.meta).parent_run_id",
					"(g.meta).max_attempts", "(g.meta).lease",
					"jsonb_build_object('message', 'canceled: its queue does not exist',"
					" 'reason', 'queue does not exist', 'canceled', true)", "NULL")
		"    FROM gone g"
		"  ON CONFLICT (run_id) DO NOTHING)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(DISTINCT run_id) FROM gone),"
		"       (SELECT jsonb_agg(jsonb_build_object('run_id', run_id, 'queue_id', queue_id))"
		"          FROM (SELECT * FROM bad LIMIT 100) b)"},

	/*
	 * A run is in one place: one row in one of ready, delayed, executing
	 * and finished_runs, in one segment of its family.  A move that
	 * inserted without deleting (a bug, or a table changed by hand) would
	 * leave two; each would be claimed, counted and finished on its own.
	 * Repaired by keeping the copy furthest along the run's life and
	 * deleting the others: finished_runs (final), then executing (a worker
	 * may hold it; if none does, its lease passes and rescue retries it),
	 * then ready (promotion moves delayed runs there), then delayed, then
	 * waiting (a woken run's row that stayed behind); of two
	 * copies in one family, the one in the family's current segment (where
	 * rotation moves rows to), then the lower (segment, ctid).  Detail: the
	 * run ids with their places ("ready_0", "finished_runs", ...), the
	 * copy kept first.  Before queue_counts, which then counts the rows
	 * that are left, so one pass leaves the counts right.  Reads the three
	 * unfinished families whole and finished_runs by run_id.
	 */
	{"runs_in_two_places",
		"WITH cur AS ("
		"  SELECT ('queue_engine.' || f || '_' || queue_engine.current_segment(f))"
		"         ::pg_catalog.regclass::pg_catalog.oid AS t"
		"    FROM unnest(ARRAY['ready', 'delayed', 'executing']) f),"
		" open AS MATERIALIZED ("
		"  SELECT x.run_id, x.tableoid AS t, x.ctid AS c, 2 AS place FROM queue_engine.executing x"
		"  UNION ALL SELECT x.run_id, x.tableoid, x.ctid, 3 FROM queue_engine.ready x"
		"  UNION ALL SELECT x.run_id, x.tableoid, x.ctid, 4 FROM queue_engine.delayed x"
		"  UNION ALL SELECT x.run_id, x.tableoid, x.ctid, 5 FROM queue_engine.waiting_runs x),"
		" copies AS ("
		"  SELECT o.run_id, o.t, o.c, o.place, o.t IN (SELECT t FROM cur) AS in_current"
		"    FROM open o"
		"  UNION ALL"
		"  SELECT f.run_id, f.tableoid, f.ctid, 1, true FROM queue_engine.finished_runs f"
		"   WHERE f.run_id IN (SELECT run_id FROM open)),"
		" ranked AS ("
		"  SELECT p.*, count(*) OVER (PARTITION BY p.run_id) AS n,"
		"         row_number() OVER (PARTITION BY p.run_id"
		"                            ORDER BY p.place, p.in_current DESC, p.t, p.c) AS nth"
		"    FROM copies p),"
		" dup AS (SELECT * FROM ranked WHERE n > 1),"
		" extra AS (SELECT * FROM dup WHERE $1 AND nth > 1),"
		DELETE_COPIES("fix_executing", "executing", "2") ","
		DELETE_COPIES("fix_ready", "ready", "3") ","
		DELETE_COPIES("fix_delayed", "delayed", "4") ","
		DELETE_COPIES("fix_waiting", "waiting_runs", "5")
		"SELECT (SELECT count(DISTINCT run_id) FROM dup),"
		"       (SELECT count(DISTINCT run_id)"
		"          FROM (SELECT run_id FROM fix_executing UNION ALL SELECT run_id FROM fix_ready"
		"                UNION ALL SELECT run_id FROM fix_delayed"
		"                UNION ALL SELECT run_id FROM fix_waiting) f),"
		"       (SELECT jsonb_agg(jsonb_build_object('run_id', run_id, 'places', places)"
		"                         ORDER BY run_id)"
		"          FROM (SELECT d.run_id, jsonb_agg(r.relname::text ORDER BY d.nth) AS places"
		"                  FROM dup d JOIN pg_catalog.pg_class r ON r.oid = d.t"
		"                 GROUP BY d.run_id ORDER BY d.run_id LIMIT 100) b)"},
	/*
	 * Per-queue counts by state (queue_counts plus pending deltas) against
	 * the runs in each state's table; repaired by appending a correcting
	 * delta.
	 */
	{"queue_counts",
		"WITH actual AS ("
		"  SELECT queue_id, 'queued' AS state, count(*) AS n FROM queue_engine.ready"
		"   GROUP BY queue_id"
		"  UNION ALL SELECT queue_id, 'delayed', count(*) FROM queue_engine.delayed"
		"   GROUP BY queue_id"
		"  UNION ALL SELECT queue_id, 'executing', count(*) FROM queue_engine.executing"
		"   GROUP BY queue_id"
		"  UNION ALL SELECT queue_id, 'waiting', count(*) FROM queue_engine.waiting_runs"
		"   GROUP BY queue_id),"
		" recorded AS ("
		"  SELECT c.queue_id, s.state, sum(s.n) AS n"
		"    FROM (SELECT queue_id, queued, delayed, executing, waiting FROM queue_engine.queue_counts"
		"          UNION ALL"
		"          SELECT queue_id, queued, delayed, executing, waiting FROM queue_engine.queue_count_deltas) c,"
		"         LATERAL (VALUES ('queued', c.queued), ('delayed', c.delayed),"
		"                         ('executing', c.executing), ('waiting', c.waiting)) s(state, n)"
		"   GROUP BY c.queue_id, s.state),"
		" diff AS ("
		"  SELECT coalesce(a.queue_id, r.queue_id) AS queue_id,"
		"         coalesce(a.state, r.state) AS state,"
		"         coalesce(r.n, 0)::bigint AS recorded, coalesce(a.n, 0)::bigint AS actual"
		"    FROM actual a FULL JOIN recorded r"
		"      ON a.queue_id = r.queue_id AND a.state = r.state"
		"   WHERE coalesce(a.n, 0) <> coalesce(r.n, 0)),"
		" fix AS ("
		"  INSERT INTO queue_engine.queue_count_deltas (queue_id, queued, delayed, executing, waiting)"
		"  SELECT queue_id,"
		"         CASE state WHEN 'queued' THEN actual - recorded ELSE 0 END,"
		"         CASE state WHEN 'delayed' THEN actual - recorded ELSE 0 END,"
		"         CASE state WHEN 'executing' THEN actual - recorded ELSE 0 END,"
		"         CASE state WHEN 'waiting' THEN actual - recorded ELSE 0 END"
		"    FROM diff WHERE $1"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM diff), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(jsonb_build_object('queue_id', queue_id, 'state', state,"
		"                         'recorded', recorded, 'actual', actual)) FROM diff)"},

	/*
	 * Executing runs must hold a lease, or stall rescue can never find
	 * them; repaired by giving them one that has already expired.  (The
	 * columns of executing are NOT NULL, so only a table changed by hand
	 * can have such runs.)
	 */
	{"executing_without_lease", .repair_grants_leases = true, .sql =
		"WITH bad AS ("
		"  SELECT run_id FROM queue_engine.executing"
		"   WHERE lease_expires_at IS NULL OR started_at IS NULL),"
		" fix AS ("
		"  UPDATE queue_engine.executing r"
		"     SET lease_expires_at = coalesce(r.lease_expires_at, now()),"
		"         started_at = coalesce(r.started_at, now())"
		"    FROM bad WHERE $1 AND r.run_id = bad.run_id"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(run_id) FROM (SELECT run_id FROM bad LIMIT 100) b)"},

	/*
	 * Only executing runs hold a lease.  Since storage 0.2 only the table
	 * executing has a lease column: a queued, delayed or finished run
	 * cannot hold one, and there is nothing to read.  Kept (never finding
	 * anything) so that the checks and their names stay as they were.
	 */
	{"lease_on_idle_run",
		"SELECT 0::bigint, 0::bigint, NULL::jsonb WHERE $1 IS NOT NULL"},

	/*
	 * Two executing runs of a queue never hold the same slot, or the queue
	 * could run more than its limit; repaired by taking the slot from all
	 * but the earliest, which makes the queue's starts one transaction at a
	 * time until those runs finish.
	 */
	{"shared_queue_slots",
		"WITH bad AS ("
		"  SELECT r.run_id FROM queue_engine.executing r"
		"   WHERE r.queue_slot IS NOT NULL"
		"     AND EXISTS (SELECT 1 FROM queue_engine.executing o"
		"                  WHERE o.queue_id = r.queue_id"
		"                    AND o.queue_slot = r.queue_slot AND o.run_id < r.run_id)),"
		" fix AS ("
		"  UPDATE queue_engine.executing r SET queue_slot = NULL"
		"    FROM bad WHERE $1 AND r.run_id = bad.run_id"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(run_id) FROM (SELECT run_id FROM bad LIMIT 100) b)"},

	/*
	 * Idempotency keys must name a run, in whichever table it is;
	 * repaired by forgetting the key.
	 */
	{"orphan_idempotency_keys",
		"WITH bad AS ("
		"  SELECT k.tenant_id, k.idempotency_key, k.run_id FROM queue_engine.idempotency_keys k"
		"   WHERE NOT EXISTS (SELECT 1 FROM queue_engine.finished_runs r WHERE r.run_id = k.run_id)"
		"     AND NOT EXISTS (SELECT 1 FROM queue_engine.executing r WHERE r.run_id = k.run_id)"
		"     AND NOT EXISTS (SELECT 1 FROM queue_engine.ready r WHERE r.run_id = k.run_id)"
		"     AND NOT EXISTS (SELECT 1 FROM queue_engine.delayed r WHERE r.run_id = k.run_id)"
		"     AND NOT EXISTS (SELECT 1 FROM queue_engine.waiting_runs r WHERE r.run_id = k.run_id)),"
		" fix AS ("
		"  DELETE FROM queue_engine.idempotency_keys k USING bad"
		"   WHERE $1 AND k.tenant_id = bad.tenant_id AND k.idempotency_key = bad.idempotency_key"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(jsonb_build_object('tenant_id', tenant_id, 'key', idempotency_key,"
		"                         'run_id', run_id)) FROM (SELECT * FROM bad LIMIT 100) b)"},

	/*
	 * A queued run's concurrency key is in ready's column when its queue
	 * has a per-key limit (so that the limit sees it: _key), else in meta
	 * (so that the run is in the order index); never in both.  Setting or
	 * clearing the limit moves the keys (qe_move_concurrency_keys), but a
	 * retry or a promotion that read the queue just before such a change
	 * may commit just after its move.  A misplaced run is never started
	 * past its key's limit (claim.c passes over keyed runs in the order
	 * index) but may wait until this check, which moves the key.
	 */
	{"ready_key_placement", .repair_adds_ready = true, .sql =
		"WITH bad AS ("
		"  SELECT r.tableoid AS t, r.ctid AS c, r.run_id,"
		"         q.key_concurrency_limit IS NOT NULL AS keyed"
		"    FROM queue_engine.ready r"
		"    LEFT JOIN queue_engine.queues q ON q.queue_id = r.queue_id"
		"   WHERE (r.concurrency_key IS NOT NULL AND (r.meta).concurrency_key IS NOT NULL)"
		"      OR CASE WHEN q.key_concurrency_limit IS NOT NULL"
		"              THEN (r.meta).concurrency_key IS NOT NULL"
		"              ELSE r.concurrency_key IS NOT NULL END),"
		" fix AS ("
		"  UPDATE queue_engine.ready x"
		"     SET concurrency_key = " QE_SQL_READY_KEY_COLUMN(QE_SQL_KEY_OF("x"), "b.keyed") ","
		"         meta = " QE_SQL_META_WITH_KEY("x.meta", QE_SQL_READY_KEY_META(QE_SQL_KEY_OF("x"), "b.keyed"))
		"    FROM bad b WHERE $1 AND x.tableoid = b.t AND x.ctid = b.c"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(run_id ORDER BY run_id) FROM (SELECT run_id FROM bad LIMIT 100) b)"},

	/*
	 * A run waiting for its children is woken by the last of them to
	 * finish (waits.c), so none waits with every child final: a wait whose
	 * last children finished together under REPEATABLE READ (each saw the
	 * other unfinished), or a child finished by hand, would.  Repaired by
	 * waking it, with the children's counts.
	 */
	{"children_waits_satisfied", .repair_fn = qe_wake_satisfied_parents, .sql =
		"WITH bad AS ("
		"  SELECT w.run_id FROM queue_engine.waiting_runs w"
		"   WHERE $1 IS NOT NULL AND w.kind = 'children' AND NOT (" QE_SQL_UNFINISHED_CHILD("w.run_id") "))"
		"SELECT (SELECT count(*) FROM bad), 0::bigint,"
		"       (SELECT jsonb_agg(run_id ORDER BY run_id) FROM (SELECT run_id FROM bad LIMIT 100) b)"},
};

/* Run every check; SPI must be connected.  Logs each drift found. */
void
qe_run_consistency_checks(bool repair, QeCheckResult *results)
{
	static SPIPlanPtr plans[QE_CHECK_COUNT];
	static SPIPlanPtr log_plan = NULL;

	/* Limit hints are voided too: runs may have been finished by hand. */
	qe_limit_hint_exit_all();

	qe_plan(&log_plan,
			"INSERT INTO queue_engine.consistency_log (check_name, found, repaired, detail)"
			" VALUES ($1, $2, $3, $4)",
			4, (Oid[]) {TEXTOID, INT8OID, INT8OID, JSONBOID});

	for (int i = 0; i < QE_CHECK_COUNT; i++)
	{
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};
		bool		isnull;
		Datum		detail;

		qe_plan(&plans[i], checks[i].sql, 1, (Oid[]) {BOOLOID});
		values[0] = BoolGetDatum(repair);
		qe_exec_whole_tables(plans[i], values, NULL, 1);
		results[i].check_name = checks[i].name;
		results[i].found = qe_get_int64(0, 1);
		results[i].repaired = qe_get_int64(0, 2);
		detail = qe_get(0, 3, &isnull);
		if (detail != (Datum) 0 && !isnull)
			detail = PointerGetDatum(DatumGetJsonbPCopy(detail));
		if (repair && results[i].found > 0 && checks[i].repair_fn != NULL)
			results[i].repaired = checks[i].repair_fn();

		/*
		 * A repaired run holds a lease that has passed (by now()): rescue
		 * it soon.  Only leases moved, which know no queue.
		 */
		/* Runs entered the order index behind their queues' ready hints. */
		if (results[i].repaired > 0 && checks[i].repair_adds_ready)
			qe_ready_hint_forget_all();
		if (results[i].repaired > 0 && checks[i].repair_grants_leases)
			qe_run_transitioned(0, QE_RUN_EXECUTING, QE_RUN_EXECUTING,
								(int32) results[i].repaired, NULL,
								GetCurrentTransactionStartTimestamp());

		if (results[i].found > 0)
		{
			values[0] = CStringGetTextDatum(checks[i].name);
			values[1] = Int64GetDatum(results[i].found);
			values[2] = Int64GetDatum(results[i].repaired);
			values[3] = detail;
			nulls[3] = isnull ? 'n' : ' ';
			qe_exec(log_plan, values, nulls, 0);
			ereport(LOG,
					(errmsg("queue_engine: consistency check \"%s\" found " INT64_FORMAT " and repaired " INT64_FORMAT,
							checks[i].name, results[i].found, results[i].repaired)));
		}
	}
}

Datum
qe_check_consistency(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	QeCheckResult results[QE_CHECK_COUNT];
	bool		repair;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("repair must not be null"),
				 errhint("Pass true to repair drift, false only to report it.")));
	repair = PG_GETARG_BOOL(0);
	qe_access_require_unscoped("check_consistency()");

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	/*
	 * Claims start where the ready hints say; a run made queued behind the
	 * engine's back (an UPDATE by hand) is passed over while runs after the
	 * hint remain, so forget them all: claims rebuild them.  Only when
	 * called by hand: after a forget, while an old snapshot keeps many dead
	 * entries, claims walk them all once more, which the worker's periodic
	 * check should not cause every few minutes.
	 */
	qe_ready_hint_forget_all();
	SPI_connect();
	qe_run_consistency_checks(repair, results);
	SPI_finish();

	for (int i = 0; i < QE_CHECK_COUNT; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(results[i].check_name);
		values[1] = Int64GetDatum(results[i].found);
		values[2] = Int64GetDatum(results[i].repaired);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
