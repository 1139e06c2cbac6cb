/*-------------------------------------------------------------------------
 *
 * consistency.c
 *	  check_consistency(): recompute the engine's own bookkeeping from the
 *	  runs, report each kind of drift, repair it, and record every repair
 *	  in queue_engine.consistency_log.
 *
 *	  Each check is one statement, so what it compares (runs against
 *	  counts, leases, keys) is read in one snapshot, and a repair is a
 *	  correction that commutes with concurrent writers: it never needs to
 *	  lock out the workers.
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
} QeCheck;

static const QeCheck checks[QE_CHECK_COUNT] = {
	/*
	 * Unfinished runs must belong to a queue that exists (a run enqueued
	 * into a queue that was deleted behind the engine's back, or by a
	 * session that knew the queue before the extension was dropped and
	 * created again, could never start); repaired by canceling them.  Read
	 * through the unfinished states' partial indexes, never the history;
	 * first, so that the counts check below sees the repair.
	 */
	{"runs_of_unknown_queue",
		"WITH open AS ("
		"  SELECT run_id, queue_id FROM queue_engine.runs WHERE status = 'queued'"
		"  UNION ALL SELECT run_id, queue_id FROM queue_engine.runs WHERE status = 'delayed'"
		"  UNION ALL SELECT run_id, queue_id FROM queue_engine.runs WHERE status = 'executing'"
		"  UNION ALL SELECT run_id, queue_id FROM queue_engine.runs WHERE status = 'waiting'),"
		" bad AS ("
		"  SELECT o.run_id, o.queue_id FROM open o"
		"   WHERE NOT EXISTS (SELECT 1 FROM queue_engine.queues q WHERE q.queue_id = o.queue_id)),"
		" fix AS ("
		"  UPDATE queue_engine.runs r"
		"     SET status = 'canceled', finished_at = now(), lease_expires_at = NULL,"
		"         queue_slot = NULL,"
		"         last_error = jsonb_build_object('message', 'canceled: its queue does not exist',"
		"                                         'reason', 'queue does not exist', 'canceled', true)"
		"    FROM bad WHERE $1 AND r.run_id = bad.run_id"
		"     AND r.status IN " QE_SQL_UNFINISHED
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(jsonb_build_object('run_id', run_id, 'queue_id', queue_id))"
		"          FROM (SELECT * FROM bad LIMIT 100) b)"},

	/*
	 * Per-queue counts by state (queue_counts plus pending deltas) against
	 * the runs; repaired by appending a correcting delta.
	 */
	{"queue_counts",
		"WITH actual AS ("
		"  SELECT queue_id, 'queued' AS state, count(*) AS n FROM queue_engine.runs"
		"   WHERE status = 'queued' GROUP BY queue_id"
		"  UNION ALL SELECT queue_id, 'delayed', count(*) FROM queue_engine.runs"
		"   WHERE status = 'delayed' GROUP BY queue_id"
		"  UNION ALL SELECT queue_id, 'executing', count(*) FROM queue_engine.runs"
		"   WHERE status = 'executing' GROUP BY queue_id"
		"  UNION ALL SELECT queue_id, 'waiting', count(*) FROM queue_engine.runs"
		"   WHERE status = 'waiting' GROUP BY queue_id),"
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
	 * them; repaired by giving them one that has already expired.
	 */
	{"executing_without_lease", .repair_grants_leases = true, .sql =
		"WITH bad AS ("
		"  SELECT run_id FROM queue_engine.runs"
		"   WHERE status = 'executing' AND (lease_expires_at IS NULL OR started_at IS NULL)),"
		" fix AS ("
		"  UPDATE queue_engine.runs r"
		"     SET lease_expires_at = coalesce(r.lease_expires_at, now()),"
		"         started_at = coalesce(r.started_at, now())"
		"    FROM bad WHERE $1 AND r.run_id = bad.run_id AND r.status = 'executing'"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(run_id) FROM (SELECT run_id FROM bad LIMIT 100) b)"},

	/*
	 * Only executing runs hold a lease; repaired by clearing stray ones.
	 * Runs that may still start are read through their states' partial
	 * indexes, one branch per state; finished runs are not read at all:
	 * they never change again, nothing reads their lease, and scanning
	 * them would read the whole history every pass.
	 */
	{"lease_on_idle_run",
		"WITH bad AS ("
		"  SELECT run_id FROM queue_engine.runs"
		"   WHERE status = 'queued' AND lease_expires_at IS NOT NULL"
		"  UNION ALL SELECT run_id FROM queue_engine.runs"
		"   WHERE status = 'delayed' AND lease_expires_at IS NOT NULL"
		"  UNION ALL SELECT run_id FROM queue_engine.runs"
		"   WHERE status = 'waiting' AND lease_expires_at IS NOT NULL),"
		" fix AS ("
		"  UPDATE queue_engine.runs r SET lease_expires_at = NULL"
		"    FROM bad WHERE $1 AND r.run_id = bad.run_id AND r.status <> 'executing'"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(run_id) FROM (SELECT run_id FROM bad LIMIT 100) b)"},

	/*
	 * Two executing runs of a queue never hold the same slot, or the queue
	 * could run more than its limit; repaired by taking the slot from all
	 * but the earliest, which makes the queue's starts one transaction at a
	 * time until those runs finish.
	 */
	{"shared_queue_slots",
		"WITH bad AS ("
		"  SELECT r.run_id FROM queue_engine.runs r"
		"   WHERE r.status = 'executing' AND r.queue_slot IS NOT NULL"
		"     AND EXISTS (SELECT 1 FROM queue_engine.runs o"
		"                  WHERE o.queue_id = r.queue_id AND o.status = 'executing'"
		"                    AND o.queue_slot = r.queue_slot AND o.run_id < r.run_id)),"
		" fix AS ("
		"  UPDATE queue_engine.runs r SET queue_slot = NULL"
		"    FROM bad WHERE $1 AND r.run_id = bad.run_id AND r.status = 'executing'"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(run_id) FROM (SELECT run_id FROM bad LIMIT 100) b)"},

	/* Idempotency keys must name a run; repaired by forgetting the key. */
	{"orphan_idempotency_keys",
		"WITH bad AS ("
		"  SELECT k.tenant_id, k.idempotency_key, k.run_id FROM queue_engine.idempotency_keys k"
		"   WHERE NOT EXISTS (SELECT 1 FROM queue_engine.runs r WHERE r.run_id = k.run_id)),"
		" fix AS ("
		"  DELETE FROM queue_engine.idempotency_keys k USING bad"
		"   WHERE $1 AND k.tenant_id = bad.tenant_id AND k.idempotency_key = bad.idempotency_key"
		"  RETURNING 1)"
		"SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM fix),"
		"       (SELECT jsonb_agg(jsonb_build_object('tenant_id', tenant_id, 'key', idempotency_key,"
		"                         'run_id', run_id)) FROM (SELECT * FROM bad LIMIT 100) b)"},
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
		qe_exec(plans[i], values, NULL, 1);
		results[i].check_name = checks[i].name;
		results[i].found = qe_get_int64(0, 1);
		results[i].repaired = qe_get_int64(0, 2);
		detail = qe_get(0, 3, &isnull);

		/*
		 * A repaired run holds a lease that has passed (by now()): rescue
		 * it soon.  Only leases moved, which know no queue.
		 */
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
