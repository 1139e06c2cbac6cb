/*-------------------------------------------------------------------------
 *
 * maintenance.c
 *	  The time-based background work of SPEC "Background work", one task a
 *	  function: promote due delayed runs, expire runs past their ttl,
 *	  rescue executing runs whose lease passed, purge spent idempotency
 *	  keys, fold count deltas, delete finished runs past their retention
 *	  (and then dropped queues none of whose runs is left); and, in its
 *	  own file (rotation.c), rotate the run families' segments.  Each handles
 *	  at most a batch and returns how many it handled; run_maintenance()
 *	  repeats each until it comes back short, committing between batches.
 *	  All use SKIP LOCKED, so they are safe to run concurrently with
 *	  workers, with each other and with themselves.
 *
 *	  Runs move between the tables of storage 0.2 (segments.h, run_state.h)
 *	  in one statement each: the rows deleted from where they are, inserted
 *	  where they go.  Their statements are planned with enable_seqscan off
 *	  (qe_exec()), so that a plan made while a segment was empty stays an
 *	  index or TID scan once it has filled.
 *
 *-------------------------------------------------------------------------
 */
#include "metrics.h"
#include "run_state.h"
#include "segments.h"
#include "shmem.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "port/atomics.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "storage/lmgr.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(qe_promote_delayed);
PG_FUNCTION_INFO_V1(qe_expire_runs);
PG_FUNCTION_INFO_V1(qe_rescue_stalled);
PG_FUNCTION_INFO_V1(qe_purge_idempotency_keys);
PG_FUNCTION_INFO_V1(qe_fold_counts);
PG_FUNCTION_INFO_V1(qe_prune_finished_runs);
PG_FUNCTION_INFO_V1(qe_rotate_segments);
PG_FUNCTION_INFO_V1(qe_wake_waits);
PG_FUNCTION_INFO_V1(qe_prune_events);
PG_FUNCTION_INFO_V1(qe_run_maintenance);

/* Run a one-argument (the batch limit) task statement that returns a count. */
static int64
run_task(SPIPlanPtr *slot, const char *sql, int limit)
{
	Datum		values[1];

	qe_plan(slot, sql, 1, (Oid[]) {INT4OID});
	values[0] = Int32GetDatum(limit);
	qe_exec(*slot, values, NULL, 0);
	return qe_get_int64(0, 1);
}

/*
 * The runs the last statement moved, one a row: (queue_id, old status,
 * new status, priority, run_at, run_id), statuses as text, and for runs
 * made final their parent_run_id; reported to run_state.c (and waits.c).
 * Returns how many.
 */
static int64
report_moved_runs(void)
{
	uint64		n = SPI_processed;
	QeTransition *moves;

	if (n == 0)
		return 0;
	moves = palloc(sizeof(QeTransition) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		moves[i].queue_id = DatumGetInt32(qe_get(i, 1, &isnull));
		moves[i].from = qe_run_status_from_label(TextDatumGetCString(qe_get(i, 2, &isnull)));
		moves[i].to = qe_run_status_from_label(TextDatumGetCString(qe_get(i, 3, &isnull)));
		moves[i].nruns = 1;
		moves[i].key.priority = DatumGetInt32(qe_get(i, 4, &isnull));
		moves[i].key.run_at = DatumGetTimestampTz(qe_get(i, 5, &isnull));
		moves[i].key.run_id = DatumGetInt64(qe_get(i, 6, &isnull));
		moves[i].lease_expires_at = DT_NOEND;
	}
	qe_runs_transitioned(moves, (int) n);
	/* Runs made final, with a 7th column: their parents (waits.c). */
	qe_children_final_of_result(7);
	pfree(moves);
	return (int64) n;
}

/* Run a task plan that returns the runs it moved (as above). */
static int64
run_move_plan(SPIPlanPtr plan, int limit)
{
	Datum		values[1];

	values[0] = Int32GetDatum(limit);
	qe_exec(plan, values, NULL, 0);
	return report_moved_runs();
}

/* A promoted run keeps its key in the column if its queue q has a per-key limit. */
#define PROMOTED_KEYED "(q.key_concurrency_limit IS NOT NULL)"

/*
 * Delayed runs whose run_at has come become queued: picked from delayed
 * (through its run_at index; locked), then taken by ctid (the family has
 * no btree on run_id) and inserted into the current ready segment, in
 * run_id order so that runs with equal keys stay in the queue's tie order.
 * Between the two, the key placement lock of each queue with a keyed run
 * among them, so that the move reads the queue's per-key limit after any
 * change of it in flight has committed (src/README.md, "Keys").
 */
int64
qe_task_promote_delayed(int limit)
{
	static SPIPlanPtr pick_plan = NULL;
	static SPIPlanPtr plans[2] = {NULL, NULL};
	SPIPlanPtr	plan;
	Datum		values[2];
	Datum	   *tables;
	Datum	   *tids;
	uint64		n;

	qe_plan(&pick_plan,
			"SELECT x.tableoid, x.ctid,"
			"       CASE WHEN x.concurrency_key IS NOT NULL THEN x.queue_id END"
			"  FROM queue_engine.delayed x"
			" WHERE x.run_at <= now() AND " QE_SQL_STARTABLE
			" ORDER BY x.run_at LIMIT $1 FOR UPDATE SKIP LOCKED",
			1, (Oid[]) {INT4OID});
	values[0] = Int32GetDatum(limit);
	n = qe_exec(pick_plan, values, NULL, 0);
	if (n == 0)
		return 0;
	tables = palloc(sizeof(Datum) * n);
	tids = palloc(sizeof(Datum) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		keyed_queue;

		tables[i] = qe_get(i, 1, &isnull);
		tids[i] = datumCopy(qe_get(i, 2, &isnull), false, sizeof(ItemPointerData));
		keyed_queue = qe_get(i, 3, &isnull);
		if (!isnull)
			qe_lock_key_placement(DatumGetInt32(keyed_queue), false);
	}
	values[0] = PointerGetDatum(construct_array(tables, (int) n, OIDOID, sizeof(Oid),
												true, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(tids, (int) n, TIDOID,
												sizeof(ItemPointerData), false,
												TYPALIGN_SHORT));
	plan = qe_plan_segment(plans, QE_FAMILY_READY,
						   "WITH picked AS (SELECT * FROM unnest($1::oid[], $2::tid[]) AS p(t, c)),"
						   QE_SQL_TAKE_PICKED("delayed")
						   " INSERT INTO queue_engine.%1$s"
						   "        (run_id, run_at, queue_id, policy_id, priority, payload,"
						   "         concurrency_key, meta)"
						   " SELECT t.run_id, t.run_at, t.queue_id, t.policy_id, t.priority,"
						   "        t.payload, "
						   QE_SQL_READY_KEY_COLUMN(QE_SQL_KEY_OF("t"), PROMOTED_KEYED) ", "
						   QE_SQL_META_WITH_KEY("t.meta", QE_SQL_READY_KEY_META(QE_SQL_KEY_OF("t"), PROMOTED_KEYED))
						   "   FROM taken t LEFT JOIN queue_engine.queues q ON q.queue_id = t.queue_id"
						   "  ORDER BY t.run_id"
						   " RETURNING queue_id, 'delayed'::text, 'queued'::text,"
						   "           priority, run_at, run_id",
						   2, (Oid[]) {OIDARRAYOID, TIDARRAYOID});
	qe_exec(plan, values, NULL, 0);
	return report_moved_runs();
}

/*
 * The columns of a finished_runs row, in the order the statements below
 * write them.
 */
#define FINISHED_RUNS_COLUMNS \
	" (run_id, finished_at, run_at, started_at, queue_id, policy_id, priority," \
	"  attempt, status, payload, output, concurrency_key, worker, meta)"

/*
 * Runs of a pending family ("ready" or "delayed", whose runs are in state
 * "from") that never started and whose ttl passed become expired, as 0.1
 * made them: finished now, nothing else changed (no error is recorded; a
 * run that never started has no last_error of its own).  Read through the
 * family's expiry index, whose predicate the WHERE repeats.
 */
#define EXPIRE_SQL(family, from) \
	"WITH picked AS MATERIALIZED (" \
	"  SELECT x.tableoid AS t, x.ctid AS c FROM queue_engine." family " x" \
	"   WHERE (x.meta).attempt IS NULL AND (x.meta).expires_at IS NOT NULL" \
	"     AND (x.meta).expires_at <= now()" \
	"   ORDER BY (x.meta).expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)," \
	QE_SQL_TAKE_PICKED(family) \
	" INSERT INTO queue_engine.finished_runs" FINISHED_RUNS_COLUMNS \
	" SELECT t.run_id, now(), t.run_at, (t.meta).started_at, t.queue_id, t.policy_id," \
	"        t.priority, 0, 'expired', t.payload, NULL, " QE_SQL_KEY_OF("t") ", (t.meta).worker," \
	QE_SQL_META("NULL", "(t.meta).created_at", "(t.meta).expires_at", "NULL", "NULL", \
				"(t.meta).idempotency_key", "(t.meta).tags", "(t.meta).parent_run_id", \
				"(t.meta).max_attempts", "(t.meta).lease", "(t.meta).last_error", "NULL") \
	"   FROM taken t" \
	" RETURNING queue_id, '" from "'::text, status::text, priority, run_at, run_id," \
	"           (meta).parent_run_id"

/*
 * Runs that never started and whose ttl passed become expired: queued ones
 * first, then delayed ones, up to limit in all.
 */
int64
qe_task_expire_runs(int limit)
{
	static SPIPlanPtr ready_plan = NULL;
	static SPIPlanPtr delayed_plan = NULL;
	int64		n;

	qe_plan(&ready_plan, EXPIRE_SQL("ready", "queued"), 1, (Oid[]) {INT4OID});
	n = run_move_plan(ready_plan, limit);
	if (n < limit)
	{
		qe_plan(&delayed_plan, EXPIRE_SQL("delayed", "delayed"), 1, (Oid[]) {INT4OID});
		n += run_move_plan(delayed_plan, limit - (int) n);
	}
	return n;
}

/*
 * The rescue horizon (shared memory, preloaded only): no executing run's
 * lease passes before it, so until then the worker's rescue has nothing to
 * find and skips its scan, which reads every executing run (and, under a
 * long-open snapshot, every row version of one it keeps).
 *
 * Every transaction that grants a lease (dequeue, heartbeat: run_state.c)
 * lowers the horizon to that lease once it has committed, from the commit
 * callback (xact.c), which runs after the commit became visible.  The worker's rescue first
 * sets the horizon QE_RESCUE_HORIZON_MAX_S ahead, then scans, then lowers
 * it to the earliest lease it still sees: a lease its scan could not see
 * committed after the scan's snapshot, so its callback lowered the horizon
 * after the worker raised it, and is kept.  Leases changed by other means
 * (by hand, or by a prepared transaction committed elsewhere) are found by
 * the scan at least every QE_RESCUE_HORIZON_MAX_S, and at every
 * consistency pass, which sets the horizon back to "now".
 */
#define QE_RESCUE_HORIZON_MAX_S		60

/* The worker's consistency pass: the next rescue scans. */
void
qe_rescue_horizon_forget(void)
{
	if (qe_shmem_attach())
		pg_atomic_write_u64(&qe_shared->rescue_horizon, 0);
}

/*
 * The error a stall records as the attempt's (alias d: the executing row;
 * cap: the parameter with the byte cap, see below), as 0.1 recorded it.
 */
#define STALL_ERROR(cap) \
	"jsonb_build_object(" \
	"  'message', 'lease expired at ' || d.lease_expires_at || ' without a heartbeat'," \
	"  'stalled', true, 'attempt', d.attempt," \
	"  'worker', CASE WHEN octet_length(d.worker) <= " cap " THEN d.worker" \
	"                 WHEN octet_length(left(d.worker, " cap ")) <= " cap \
	"                 THEN left(d.worker, " cap ")" \
	"                 ELSE left(d.worker, " cap " / 4) END)" \
	" || CASE WHEN octet_length(d.worker) > " cap \
	"         THEN '{\"truncated\": true}'::jsonb ELSE '{}' END"

/*
 * Stalled runs that retry ($1 run ids, $2 their new run_at) leave executing
 * for the current segment of ready or delayed ($3: 'queued' or 'delayed',
 * as reported), as pending runs that started once: meta keeps the attempt,
 * started_at and worker of the stalled attempt, and its error.  created_at
 * is kept explicitly when it was run_at's, which the retry changes.
 */
/* A retried run keeps its key in the column when delayed, or its queue q is key-limited. */
#define RESCUED_KEYED "($3 = 'delayed' OR q.key_concurrency_limit IS NOT NULL)"
#define RESCUE_RETRY_SQL \
	"WITH d AS (" \
	"  DELETE FROM queue_engine.executing e" \
	"   USING unnest($1::bigint[], $2::timestamptz[]) AS u(run_id, run_at)" \
	"   WHERE e.run_id = u.run_id" \
	"  RETURNING e.*, u.run_at AS retry_at)" \
	" INSERT INTO queue_engine.%1$s" \
	"        (run_id, run_at, queue_id, policy_id, priority, payload, concurrency_key, meta)" \
	" SELECT d.run_id, d.retry_at, d.queue_id, d.policy_id, d.priority, d.payload," \
	"        " QE_SQL_READY_KEY_COLUMN("d.concurrency_key", RESCUED_KEYED) "," \
	QE_SQL_META("d.attempt", "nullif(coalesce((d.meta).created_at, d.run_at), d.retry_at)", \
				"(d.meta).expires_at", "d.started_at", "d.worker", \
				"(d.meta).idempotency_key", "(d.meta).tags", "(d.meta).parent_run_id", \
				"(d.meta).max_attempts", "(d.meta).lease", STALL_ERROR("$4"), \
				QE_SQL_READY_KEY_META("d.concurrency_key", RESCUED_KEYED)) \
	"   FROM d LEFT JOIN queue_engine.queues q ON q.queue_id = d.queue_id" \
	"  ORDER BY d.run_id" \
	" RETURNING queue_id, 'executing'::text, $3::text, priority, run_at, run_id"

/*
 * Executing runs whose lease passed without a heartbeat: the stall is
 * recorded as the attempt's error, and the run retries with the queue's
 * backoff (run_state.c, as fail() does), or fails when its attempts are
 * spent.  The rows stay locked from the first statement to the moves.
 * The worker name in the error (max_error_field_bytes, and the worker
 * limit for names stored before dequeue capped them) is cut on a
 * character boundary like any stored error's strings: to cap characters
 * when they fit in cap bytes, else to cap / 4 (no server encoding has
 * characters over 4 bytes).
 */
int64
qe_task_rescue_stalled(int limit)
{
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr retry_plans[2][2] = {{NULL, NULL}, {NULL, NULL}};
	static SPIPlanPtr fail_plan = NULL;
	static const QeFamily retry_families[2] = {QE_FAMILY_READY, QE_FAMILY_DELAYED};
	static const QeRunStatus retry_states[2] = {QE_RUN_QUEUED, QE_RUN_DELAYED};
	Datum		values[4];
	uint64		n;
	Datum	   *ids[3];			/* retry to ready, to delayed; fail */
	Datum	   *run_ats[2];
	int			counts[3] = {0, 0, 0};
	int32		cap = Min(qe_max_error_field_bytes, QE_MAX_WORKER_BYTES);
	int64		moved = 0;

	/* The stalled runs, locked, and what their retry depends on. */
	qe_plan(&due_plan,
			"WITH due AS ("
			"  SELECT x.run_id FROM queue_engine.executing x"
			"   WHERE x.lease_expires_at < now()"
			"   ORDER BY x.lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
			"SELECT e.run_id, e.attempt, " QE_SQL_MAX_ATTEMPTS("e", "p") ","
			"       q.retry_backoff, q.retry_backoff_max, e.queue_id,"
			"       e.concurrency_key IS NOT NULL"
			"  FROM due JOIN queue_engine.executing e ON e.run_id = due.run_id"
			"  JOIN queue_engine.queue_policies p ON p.policy_id = e.policy_id"
			"  JOIN queue_engine.queues q ON q.queue_id = e.queue_id",
			1, (Oid[]) {INT4OID});
	values[0] = Int32GetDatum(limit);
	n = qe_exec(due_plan, values, NULL, 0);
	if (n == 0)
		return 0;

	/* Each retries after the queue's backoff, or fails when spent. */
	for (int k = 0; k < 3; k++)
		ids[k] = palloc(sizeof(Datum) * n);
	for (int k = 0; k < 2; k++)
		run_ats[k] = palloc(sizeof(Datum) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int32		attempt = DatumGetInt32(qe_get(i, 2, &isnull));
		Datum		id = qe_get(i, 1, &isnull);

		if (attempt >= DatumGetInt32(qe_get(i, 3, &isnull)))
			ids[2][counts[2]++] = id;
		else
		{
			int64		delay_us =
				qe_retry_backoff_usecs(DatumGetIntervalP(qe_get(i, 4, &isnull)),
									   DatumGetIntervalP(qe_get(i, 5, &isnull)),
									   attempt);
			int			k = delay_us > 0 ? 1 : 0;

			run_ats[k][counts[k]] =
				TimestampTzGetDatum(GetCurrentTransactionStartTimestamp() + delay_us);
			ids[k][counts[k]++] = id;
			/* (the retry statements read the queue's per-key limit after this) */
			if (k == 0 && DatumGetBool(qe_get(i, 7, &isnull)))
				qe_lock_key_placement(DatumGetInt32(qe_get(i, 6, &isnull)), false);
		}
	}

	/* Retries: to the current segment of ready, or of delayed. */
	for (int k = 0; k < 2; k++)
	{
		if (counts[k] == 0)
			continue;
		values[0] = PointerGetDatum(construct_array(ids[k], counts[k], INT8OID, 8,
													true, TYPALIGN_DOUBLE));
		values[1] = PointerGetDatum(construct_array(run_ats[k], counts[k],
													TIMESTAMPTZOID, 8, true,
													TYPALIGN_DOUBLE));
		values[2] = CStringGetTextDatum(qe_run_status_labels[retry_states[k]]);
		values[3] = Int32GetDatum(cap);
		qe_exec(qe_plan_segment(retry_plans[k], retry_families[k], RESCUE_RETRY_SQL, 4,
								(Oid[]) {INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID, INT4OID}),
				values, NULL, 0);
		qe_metrics_rescuing = true;
		moved += report_moved_runs();
		qe_metrics_rescuing = false;
	}

	/* Spent: to finished_runs, failed, with the stall as the last error. */
	if (counts[2] > 0)
	{
		qe_plan(&fail_plan,
				"WITH d AS ("
				"  DELETE FROM queue_engine.executing e WHERE e.run_id = ANY ($1::bigint[])"
				"  RETURNING e.*)"
				" INSERT INTO queue_engine.finished_runs" FINISHED_RUNS_COLUMNS
				" SELECT d.run_id, now(), d.run_at, d.started_at, d.queue_id, d.policy_id,"
				"        d.priority, d.attempt, 'failed', d.payload, NULL, d.concurrency_key,"
				"        d.worker,"
				QE_SQL_META("NULL", "(d.meta).created_at", "(d.meta).expires_at", "NULL",
							"NULL", "(d.meta).idempotency_key", "(d.meta).tags",
							"(d.meta).parent_run_id", "(d.meta).max_attempts",
							"(d.meta).lease", STALL_ERROR("$2"), "NULL")
				"   FROM d"
				" RETURNING queue_id, 'executing'::text, status::text, priority, run_at, run_id,"
				"           (meta).parent_run_id",
				2, (Oid[]) {INT8ARRAYOID, INT4OID});
		values[0] = PointerGetDatum(construct_array(ids[2], counts[2], INT8OID, 8,
													true, TYPALIGN_DOUBLE));
		values[1] = Int32GetDatum(cap);
		qe_exec(fail_plan, values, NULL, 0);
		qe_metrics_rescuing = true;
		moved += report_moved_runs();
		qe_metrics_rescuing = false;
	}
	return moved;
}

/* The worker: scans only once the rescue horizon has passed. */
int64
qe_task_rescue_stalled_resume(int limit)
{
	static SPIPlanPtr plan = NULL;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz earliest;
	bool		isnull;
	int64		n;

	if (!qe_shmem_attach())
		return qe_task_rescue_stalled(limit);
	if ((TimestampTz) pg_atomic_read_u64(&qe_shared->rescue_horizon) > now)
		return 0;
	pg_atomic_write_u64(&qe_shared->rescue_horizon,
						(uint64) (now + QE_RESCUE_HORIZON_MAX_S * USECS_PER_SEC));
	n = qe_task_rescue_stalled(limit);

	/* A new snapshot: it sees this batch's rescues, and what came since. */
	qe_plan(&plan,
			"SELECT min(x.lease_expires_at) FROM queue_engine.executing x",
			0, NULL);
	qe_exec(plan, NULL, NULL, 0);
	earliest = DatumGetTimestampTz(qe_get(0, 1, &isnull));
	if (!isnull)
		qe_rescue_horizon_lower(earliest);
	return n;
}

/* Idempotency keys past their ttl are forgotten. */
int64
qe_task_purge_idempotency_keys(int limit)
{
	static SPIPlanPtr plan = NULL;

	return run_task(&plan,
					"WITH due AS ("
					"  SELECT k.tenant_id, k.idempotency_key FROM queue_engine.idempotency_keys k"
					"   WHERE k.expires_at <= now()"
					"   LIMIT $1 FOR UPDATE SKIP LOCKED),"
					" m AS ("
					"  DELETE FROM queue_engine.idempotency_keys k USING due"
					"   WHERE k.tenant_id = due.tenant_id"
					"     AND k.idempotency_key = due.idempotency_key"
					"  RETURNING 1)"
					"SELECT count(*) FROM m",
					limit);
}

/*
 * Count deltas live in two segment tables, the partitions
 * queue_count_deltas_0 and _1 of queue_count_deltas (list-partitioned on
 * its segment column).  Writers append to the current segment (a shared
 * number per database, qe_count_delta_segment(); the column's default
 * calls it, so SQL inserts into the parent land there too).  A fold adds
 * rows into queue_counts and deletes them, from both segments.
 *
 * Deleted rows stay on disk while a snapshot older than the fold is open,
 * and VACUUM cannot remove them; so a segment that has grown past
 * QE_DELTA_SEGMENT_PAGES is emptied by TRUNCATE instead, which does not
 * wait for snapshots: once the current segment is that large and the
 * other is not, the fold makes the other one current; the next fold finds
 * the large one not current, takes its lock without waiting (so no writer
 * is in it: writers hold their lock to commit), folds every row under the
 * lock, all committed, and truncates it.  If the lock is taken (a writer
 * of the last moment, or a reader of queue_stats in a long transaction),
 * the fold deletes instead and tries again next time.  A writer that read
 * the old current segment and inserts into the other after it was
 * truncated only leaves a row for the next fold: writers may use either
 * segment at any time, and the number is only where most of them go.
 *
 * Under a REPEATABLE READ or SERIALIZABLE snapshot taken before the lock,
 * rows committed in between would be invisible and truncated: only READ
 * COMMITTED folds truncate (the worker's and run_maintenance()'s do).
 */
#define QE_DELTA_SEGMENT_PAGES		32

static const char *const delta_segment_names[2] = {
	"queue_count_deltas_0", "queue_count_deltas_1"
};

/* The segment new count deltas of this database go to (0 or 1). */
int
qe_count_delta_segment(void)
{
	if (!qe_shmem_attach())
		return 0;
	return (int) (pg_atomic_read_u32(&qe_shared->delta_segment[MyDatabaseId % QE_DELTA_SEGMENT_SLOTS]) & 1);
}

/* queue_engine.count_delta_segment(): the segment column's default. */
PG_FUNCTION_INFO_V1(qe_count_delta_segment_sql);

Datum
qe_count_delta_segment_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16((int16) qe_count_delta_segment());
}

static void
set_count_delta_segment(int segment)
{
	if (!qe_shmem_attach())
		return;
	pg_atomic_write_u32(&qe_shared->delta_segment[MyDatabaseId % QE_DELTA_SEGMENT_SLOTS],
						(uint32) segment);
}

/*
 * Count deltas of table added into queue_counts: up to limit rows, deleted
 * (all false), or every row, left for the caller's TRUNCATE (all true).
 * Returns the rows folded.
 */
static int64
fold_rows(SPIPlanPtr *plan, const char *table, bool all, int limit)
{
	Datum		value = Int32GetDatum(limit);

	if (*plan == NULL)
		qe_plan(plan,
				psprintf("WITH moved AS (%s),"
						 " s AS ("
						 "  SELECT queue_id, sum(queued) AS queued, sum(delayed) AS delayed,"
						 "         sum(executing) AS executing, sum(waiting) AS waiting"
						 "    FROM moved GROUP BY queue_id),"
						 " u AS ("
						 "  INSERT INTO queue_engine.queue_counts AS c"
						 "         (queue_id, queued, delayed, executing, waiting)"
						 "  SELECT queue_id, queued, delayed, executing, waiting FROM s"
						 "  ON CONFLICT (queue_id) DO UPDATE"
						 "     SET queued = c.queued + EXCLUDED.queued,"
						 "         delayed = c.delayed + EXCLUDED.delayed,"
						 "         executing = c.executing + EXCLUDED.executing,"
						 "         waiting = c.waiting + EXCLUDED.waiting)"
						 "SELECT count(*) FROM moved",
						 all ?
						 psprintf("SELECT * FROM queue_engine.%s WHERE $1 IS NOT NULL", table) :
						 psprintf("DELETE FROM queue_engine.%s"
								  " WHERE ctid = ANY (ARRAY("
								  "       SELECT ctid FROM queue_engine.%s"
								  "        LIMIT $1 FOR UPDATE SKIP LOCKED))"
								  " RETURNING *", table, table)),
				1, (Oid[]) {INT4OID});
	qe_exec(*plan, &value, NULL, 0);
	return qe_get_int64(0, 1);
}

/*
 * Fold every row of one segment and TRUNCATE it; the caller holds its
 * AccessExclusiveLock, so every row is committed and this statement's
 * snapshot sees them all.  Returns the rows folded.
 */
static int64
truncate_segment(int segment)
{
	static SPIPlanPtr fold_plans[2] = {NULL, NULL};
	static SPIPlanPtr truncate_plans[2] = {NULL, NULL};
	int64		n;

	n = fold_rows(&fold_plans[segment], delta_segment_names[segment], true, 0);
	if (truncate_plans[segment] == NULL)
		qe_plan(&truncate_plans[segment],
				psprintf("TRUNCATE queue_engine.%s", delta_segment_names[segment]),
				0, NULL);
	qe_exec(truncate_plans[segment], NULL, NULL, 0);
	return n;
}

/*
 * One batch: up to limit deltas folded, from the segment writers are not
 * using first (truncated instead when large and free), then from the
 * current one; makes the other segment current when the current one has
 * grown large and the other has not.
 */
int64
qe_task_fold_counts(int limit)
{
	static SPIPlanPtr delete_plans[2] = {NULL, NULL};
	int			current = qe_count_delta_segment();
	int			other = 1 - current;
	Oid			oids[2];
	BlockNumber blocks[2];
	int64		n = 0;

	for (int i = 0; i < 2; i++)
	{
		Relation	rel = qe_try_open_table(delta_segment_names[i], AccessShareLock);

		if (rel == NULL)
		{
			/* A 0.1 schema (not updated yet): its one table, deleted from. */
			static SPIPlanPtr unsegmented_plan = NULL;

			return fold_rows(&unsegmented_plan, "queue_count_deltas", false, limit);
		}
		oids[i] = RelationGetRelid(rel);
		blocks[i] = RelationGetNumberOfBlocks(rel);
		/* Closed (lock kept): TRUNCATE refuses a table this session has open. */
		table_close(rel, NoLock);
	}

	if (!IsolationUsesXactSnapshot() &&
		blocks[other] >= QE_DELTA_SEGMENT_PAGES &&
		ConditionalLockRelationOid(oids[other], AccessExclusiveLock))
	{
		n += truncate_segment(other);
		blocks[other] = 0;
	}
	else
		n += fold_rows(&delete_plans[other], delta_segment_names[other], false, limit);
	if (n < limit)
		n += fold_rows(&delete_plans[current], delta_segment_names[current], false,
					   limit - (int) n);

	if (blocks[current] >= QE_DELTA_SEGMENT_PAGES &&
		blocks[other] < QE_DELTA_SEGMENT_PAGES)
		set_count_delta_segment(other);
	return n;
}

/*
 * Where the worker's last prune stopped (shared memory, preloaded only):
 * the finished_at of the newest run it deleted, less
 * QE_PRUNE_CURSOR_MARGIN_S, since a run finished by a transaction that
 * commits later carries an older finished_at.  The worker's next batch
 * starts there instead of at the oldest entry of the finished_at index of
 * finished_runs: while a long-open snapshot keeps the entries of deleted
 * runs from being cleaned up, every batch would otherwise walk all of them
 * again (hundreds of thousands after a few minutes of load).  The worker forgets the cursor
 * at each of its consistency passes, so a run that finished before it
 * (in a long transaction) is pruned by the next full walk.
 */
#define QE_PRUNE_CURSOR_MARGIN_S	1

/*
 * Start this database's consistency check now if it is due (always, when
 * force): none has started here since the server started, or the last
 * one started queue_engine.consistency_interval ago or more (0: every
 * call).  The start is recorded before the check runs, so two passes at
 * once do not both check, and a check that fails is tried again only an
 * interval later, like the worker's.  Why run_maintenance() asks: a check
 * reads the unfinished runs whole under one snapshot (0.75 s for 200,000
 * queued runs); run every second by a scheduler, it kept a snapshot open
 * most of the time, and a limited queue's slot reads then walked every
 * run it had finished meanwhile (workload 5 without preloading, 0.49).
 */
bool
qe_consistency_check_start(bool force)
{
	QeConsistencyClock *clock;
	int			slot = MyDatabaseId % QE_DELTA_SEGMENT_SLOTS;
	TimestampTz now = GetCurrentTimestamp();
	bool		due;

	if (!qe_shmem_attach())
		return true;
	clock = &qe_shared->consistency_clock;
	SpinLockAcquire(&clock->mutex);
	due = force || qe_consistency_interval_ms == 0 ||
		clock->dbid[slot] != MyDatabaseId ||
		TimestampDifferenceExceeds(clock->last_started[slot], now,
								   qe_consistency_interval_ms);
	if (due)
	{
		clock->dbid[slot] = MyDatabaseId;
		clock->last_started[slot] = now;
	}
	SpinLockRelease(&clock->mutex);
	return due;
}

/* The worker's consistency pass: the next prune walks from the oldest. */
void
qe_prune_cursor_forget(void)
{
	if (!qe_shmem_attach())
		return;
	SpinLockAcquire(&qe_shared->prune_cursor.mutex);
	qe_shared->prune_cursor.dbid = InvalidOid;
	qe_shared->prune_cursor.from = DT_NOBEGIN;
	SpinLockRelease(&qe_shared->prune_cursor.mutex);
}

static TimestampTz
prune_cursor_get(void)
{
	TimestampTz from = DT_NOBEGIN;

	if (!qe_shmem_attach())
		return from;
	SpinLockAcquire(&qe_shared->prune_cursor.mutex);
	if (qe_shared->prune_cursor.dbid == MyDatabaseId)
		from = qe_shared->prune_cursor.from;
	SpinLockRelease(&qe_shared->prune_cursor.mutex);
	return from;
}

static void
prune_cursor_advance(TimestampTz newest_deleted)
{
	TimestampTz from = newest_deleted - QE_PRUNE_CURSOR_MARGIN_S * USECS_PER_SEC;

	if (!qe_shmem_attach())
		return;
	SpinLockAcquire(&qe_shared->prune_cursor.mutex);
	if (qe_shared->prune_cursor.dbid != MyDatabaseId || qe_shared->prune_cursor.from < from)
	{
		qe_shared->prune_cursor.dbid = MyDatabaseId;
		qe_shared->prune_cursor.from = from;
	}
	SpinLockRelease(&qe_shared->prune_cursor.mutex);
}

/*
 * Finished runs whose finished_at is older than
 * queue_engine.finished_run_retention are deleted, oldest first (from
 * finished_at "from" on), with the idempotency keys that still name them:
 * a retry with the same key then makes a new run rather than returning an
 * id get_run no longer knows.  Final runs never change again, so nothing
 * but this task touches them.  Sets *newest to the latest finished_at
 * deleted.
 */
static int64
prune_finished_runs(int limit, TimestampTz from, TimestampTz *newest)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];
	bool		isnull;
	int64		n;

	if (qe_finished_run_retention_s < 0)
		return 0;				/* kept forever */
	qe_plan(&plan,
			"WITH due AS ("
			"  SELECT f.run_id FROM queue_engine.finished_runs f"
			"   WHERE f.finished_at < now() - make_interval(secs => $2)"
			"     AND f.finished_at >= $3"
			"   ORDER BY f.finished_at LIMIT $1 FOR UPDATE SKIP LOCKED),"
			" m AS ("
			"  DELETE FROM queue_engine.finished_runs f USING due"
			"   WHERE f.run_id = due.run_id"
			"  RETURNING f.run_id, f.queue_id, (f.meta).idempotency_key AS idempotency_key,"
			"            f.finished_at, (f.meta).tags AS tags,"
			"            coalesce((f.meta).created_at, f.run_at) AS created_at),"
			/* The key's tenant is the run's queue's. */
			" k AS ("
			"  DELETE FROM queue_engine.idempotency_keys k"
			"   USING m JOIN queue_engine.queues q ON q.queue_id = m.queue_id"
			"   WHERE m.idempotency_key IS NOT NULL AND k.tenant_id = q.tenant_id"
			"     AND k.idempotency_key = m.idempotency_key AND k.run_id = m.run_id),"
			/* A run's steps and cancel_on rules go with it (waits.c, steps.c). */
			" s AS (DELETE FROM queue_engine.run_steps s USING m WHERE s.run_id = m.run_id),"
			" r AS (DELETE FROM queue_engine.cancel_rules r USING m WHERE r.run_id = m.run_id),"
			/* its tags' rows, by their index (list_runs) */
			" t AS (DELETE FROM queue_engine.run_tags t USING m, unnest(m.tags) g(tag)"
			"       WHERE t.tag = g.tag AND t.created_at = m.created_at AND t.run_id = m.run_id)"
			"SELECT count(*), max(finished_at) FROM m",
			3, (Oid[]) {INT4OID, FLOAT8OID, TIMESTAMPTZOID});
	values[0] = Int32GetDatum(limit);
	values[1] = Float8GetDatum((double) qe_finished_run_retention_s);
	values[2] = TimestampTzGetDatum(from);
	qe_exec(plan, values, NULL, 0);
	n = qe_get_int64(0, 1);
	*newest = n > 0 ? DatumGetTimestampTz(qe_get(0, 2, &isnull)) : DT_NOBEGIN;
	return n;
}

/*
 * Delete the rows of dropped queues (and their queue_counts rows) once
 * none of their runs is left.  After drop_queue no run of the queue can
 * start or finish again (it finished or canceled them all, and enqueue
 * no longer finds the name), so every run of it finished by dropped_at;
 * once retention has passed since then and no finished run of it that old
 * remains (one probe of finished_runs' queue index when pruning has caught
 * up), none remains at all.  Folded counts must be zero too, so a drop whose cancel
 * deltas are not folded yet waits for a later pass.  Called when a prune
 * comes back short; returns how many queues it deleted.
 */
/* Queues dropped longer ago than retention ($1, in seconds). */
#define DROPPED_PAST_RETENTION \
	" q.dropped_at IS NOT NULL AND q.dropped_at < now() - make_interval(secs => $1)"

static int64
forget_dropped_queues(void)
{
	static SPIPlanPtr probe_plan = NULL;
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	if (qe_finished_run_retention_s < 0)
		return 0;				/* their runs are kept forever */

	/*
	 * Probe first: a DELETE on queues fires the statement trigger that voids
	 * every connection's cached queue definitions, even when it deletes
	 * nothing.
	 */
	qe_plan(&probe_plan,
			"SELECT count(*) FROM (SELECT 1 FROM queue_engine.queues q"
			"                       WHERE" DROPPED_PAST_RETENTION " LIMIT 1) due",
			1, (Oid[]) {FLOAT8OID});
	values[0] = Float8GetDatum((double) qe_finished_run_retention_s);
	qe_exec(probe_plan, values, NULL, 1);
	if (qe_get_int64(0, 1) == 0)
		return 0;

	qe_plan(&plan,
			"WITH gone AS ("
			"  DELETE FROM queue_engine.queues q"
			"   WHERE" DROPPED_PAST_RETENTION
			"     AND NOT EXISTS (SELECT 1 FROM queue_engine.finished_runs f"
			"          WHERE f.queue_id = q.queue_id AND f.finished_at <= q.dropped_at)"
			"     AND NOT EXISTS (SELECT 1 FROM queue_engine.queue_counts c"
			"          WHERE c.queue_id = q.queue_id AND (c.queued <> 0 OR c.delayed <> 0"
			"            OR c.executing <> 0 OR c.waiting <> 0))"
			"  RETURNING q.queue_id),"
			" counts AS ("
			"  DELETE FROM queue_engine.queue_counts c USING gone"
			"   WHERE c.queue_id = gone.queue_id),"
			/* A fold racing the delete can bring a zero row back: drop those too. */
			" stray AS ("
			"  DELETE FROM queue_engine.queue_counts c"
			"   WHERE c.queued = 0 AND c.delayed = 0 AND c.executing = 0 AND c.waiting = 0"
			"     AND NOT EXISTS (SELECT 1 FROM queue_engine.queues q"
			"                      WHERE q.queue_id = c.queue_id))"
			"SELECT count(*) FROM gone",
			1, (Oid[]) {FLOAT8OID});
	qe_exec(plan, values, NULL, 0);
	return qe_get_int64(0, 1);
}

/*
 * By hand and run_maintenance(): every finished run past retention, then,
 * once that comes back short, the dropped queues with no run left.
 */
int64
qe_task_prune_finished_runs(int limit)
{
	TimestampTz newest;
	int64		n;

	n = prune_finished_runs(limit, DT_NOBEGIN, &newest);
	if (n < limit)
		(void) forget_dropped_queues();
	return n;
}

/*
 * From the shared prune cursor on; once a batch comes back short, the
 * dropped queues with no run left, either every time or only after a
 * prune from the oldest run.
 */
static int64
prune_from_cursor(int limit, bool dropped_every_time)
{
	TimestampTz from = prune_cursor_get();
	TimestampTz newest;
	int64		n;

	n = prune_finished_runs(limit, from, &newest);
	if (n > 0)
		prune_cursor_advance(newest);
	if (n < limit && (dropped_every_time || from == DT_NOBEGIN))
		(void) forget_dropped_queues();
	return n;
}

/*
 * run_maintenance(): from where the last batch of anyone's stopped (the
 * cursor is forgotten when the call's consistency check is due, as at
 * the worker's consistency pass), then the dropped queues, as by hand.
 * Called every second by a scheduler under a long-open snapshot, a walk
 * from the oldest entry at every batch took 0.25-0.7 s a batch, kept the
 * call's rotation (the last task) from running for tens of seconds, and
 * claims then walked two untruncated ready segments: workload 10 without
 * preloading fell from 2,500 to 380 claims a second.
 */
int64
qe_task_prune_finished_runs_maintenance(int limit)
{
	return prune_from_cursor(limit, true);
}

/*
 * The worker: from where its last batch stopped.  Dropped queues are
 * looked at only by a prune from the oldest run (the first after a
 * consistency pass), so as not to probe for them every second.
 */
int64
qe_task_prune_finished_runs_resume(int limit)
{
	return prune_from_cursor(limit, false);
}

static int
batch_arg(FunctionCallInfo fcinfo)
{
	int			limit;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("batch_size must not be null"),
				 errhint("Omit batch_size to use the default.")));
	limit = PG_GETARG_INT32(0);
	if (limit <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be positive: %d", limit),
				 errhint("Pass at least 1.")));
	return limit;
}

/* The SQL-callable wrappers: one batch each, in the caller's transaction. */
#define QE_TASK_WRAPPER(sqlname, task) \
Datum \
sqlname(PG_FUNCTION_ARGS) \
{ \
	int			limit = batch_arg(fcinfo); \
	int64		n; \
\
	qe_access_require_unscoped(&(#sqlname "()")[3]);	/* without "qe_" */ \
	SPI_connect(); \
	n = task(limit); \
	SPI_finish(); \
	PG_RETURN_INT64(n); \
}

QE_TASK_WRAPPER(qe_promote_delayed, qe_task_promote_delayed)
QE_TASK_WRAPPER(qe_expire_runs, qe_task_expire_runs)
QE_TASK_WRAPPER(qe_rescue_stalled, qe_task_rescue_stalled)
QE_TASK_WRAPPER(qe_purge_idempotency_keys, qe_task_purge_idempotency_keys)
QE_TASK_WRAPPER(qe_fold_counts, qe_task_fold_counts)
QE_TASK_WRAPPER(qe_prune_finished_runs, qe_task_prune_finished_runs)
QE_TASK_WRAPPER(qe_rotate_segments, qe_task_rotate_segments_nowait)
QE_TASK_WRAPPER(qe_wake_waits, qe_task_wake_waits)
QE_TASK_WRAPPER(qe_prune_events, qe_task_prune_events)

/* The worker and run_maintenance() call these. */
const QeBackgroundTask qe_background_tasks[QE_BACKGROUND_TASK_COUNT] = {
	{"expire_runs", qe_task_expire_runs, qe_task_expire_runs},
	{"promote_delayed", qe_task_promote_delayed, qe_task_promote_delayed},
	{"rescue_stalled", qe_task_rescue_stalled, qe_task_rescue_stalled_resume},
	{"wake_waits", qe_task_wake_waits, qe_task_wake_waits},
	{"purge_idempotency_keys", qe_task_purge_idempotency_keys, qe_task_purge_idempotency_keys},
	{"fold_counts", qe_task_fold_counts, qe_task_fold_counts},
	{"prune_finished_runs", qe_task_prune_finished_runs_maintenance, qe_task_prune_finished_runs_resume},
	{"prune_events", qe_task_prune_events, qe_task_prune_events},
	/* Last: the runs the tasks above moved out need no carrying. */
	{"rotate_segments", qe_task_rotate_segments, qe_task_rotate_segments},
};

/*
 * CALL queue_engine.run_maintenance(): every task until it has nothing
 * left, then a consistency check if one is due in this database
 * (qe_consistency_check_start()).  Called by CALL outside a transaction
 * block it commits after every batch, so no transaction grows with the
 * backlog; inside one (or via SELECT) it runs atomically.  The tasks'
 * statements are planned for index scans (qe_exec()); the consistency
 * check reads whole tables and plans with the caller's settings.
 */
Datum
qe_run_maintenance(PG_FUNCTION_ARGS)
{
	bool		nonatomic;
	int			limit = qe_maintenance_batch_size;
	int			guc_level;
	bool		check;
	QeCheckResult results[QE_CHECK_COUNT];

	nonatomic = fcinfo->context != NULL &&
		IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;

	/*
	 * Decided first, as the worker decides its consistency pass: a call that
	 * checks also prunes from the oldest finished run.
	 */
	check = qe_consistency_check_start(false);
	if (check)
		qe_prune_cursor_forget();

	SPI_connect_ext(nonatomic ? SPI_OPT_NONATOMIC : 0);
	guc_level = qe_pin_search_path();
	for (int i = 0; i < QE_BACKGROUND_TASK_COUNT; i++)
	{
		for (;;)
		{
			int64		n;
			TimestampTz started = GetCurrentTimestamp();

			CHECK_FOR_INTERRUPTS();
			n = qe_background_tasks[i].by_hand(limit);
			elog(DEBUG1, "queue_engine: %s: " INT64_FORMAT " in %.1f ms",
				 qe_background_tasks[i].name, n,
				 (GetCurrentTimestamp() - started) / 1000.0);
			if (nonatomic)
			{
				/* Commit ends the pin with the transaction; pin it again. */
				SPI_commit();
				guc_level = qe_pin_search_path();
			}
			if (n < limit)
				break;
		}
	}
	if (check)
		qe_run_consistency_checks(true, results);
	SPI_finish();
	qe_unpin_search_path(guc_level);

	PG_RETURN_VOID();
}
