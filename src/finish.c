/*-------------------------------------------------------------------------
 *
 * finish.c
 *	  Ending and extending attempts: heartbeat(), complete(),
 *	  complete_batch(), fail() and cancel().  Every one is fenced by the
 *	  attempt number: a call for an attempt that is no longer executing
 *	  changes nothing and says so (false or NULL).
 *
 *	  Storage 0.2 (src/README.md): a heartbeat updates the lease of the
 *	  run's queue_engine.executing row in place; every other call moves the
 *	  run out of the table it is in, in one statement (DELETE ... RETURNING
 *	  feeding an INSERT): to finished_runs, or for a retry to the current
 *	  segment of ready or delayed.  Deleting the executing row frees the
 *	  run's concurrency slot in that same statement, since slots are the
 *	  executing rows themselves.
 *
 *-------------------------------------------------------------------------
 */
#include "metrics.h"
#include "run_state.h"
#include "segments.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

PG_FUNCTION_INFO_V1(qe_heartbeat);
PG_FUNCTION_INFO_V1(qe_complete);
PG_FUNCTION_INFO_V1(qe_complete_batch);
PG_FUNCTION_INFO_V1(qe_fail);
PG_FUNCTION_INFO_V1(qe_cancel);

/*
 * The executing run (alias e) is in one of the tenants of the int[]
 * parameter arr (a tenant-scoped role's, access.c; NULL: all).  The queue
 * is read only for a scoped role: OR evaluates its arms in order.
 */
#define IN_TENANTS(e, arr) \
	"(" arr "::int[] IS NULL OR EXISTS (SELECT 1 FROM queue_engine.queues q" \
	"  WHERE q.queue_id = " e ".queue_id AND q.tenant_id = ANY (" arr ")))"

/*
 * Move the executing rows that "using_where" (a DELETE's USING and WHERE
 * clauses, alias e) selects to finished_runs as status, with output and
 * last_error (SQL expressions over d, the deleted row, which also has the
 * columns "returning" adds).  meta keeps the run's other fields; its
 * attempt, started_at and worker are the row's columns there.  Returns
 * the queue_id and parent_run_id of each run moved (table: executing, a
 * segment of it, or waiting_runs, which has the columns used here).
 */
#define FINISH_EXECUTING(using_where, returning, status, output, last_error) \
	FINISH_EXECUTING_IN("executing", using_where, returning, status, output, last_error)
#define FINISH_EXECUTING_IN(table, using_where, returning, status, output, last_error) \
	"WITH d AS (DELETE FROM queue_engine." table " e " using_where \
	"            RETURNING e.*" returning ")" \
	" INSERT INTO queue_engine.finished_runs" \
	" SELECT d.run_id, now(), d.run_at, d.started_at, d.queue_id, d.policy_id," \
	"        d.priority, d.attempt, " status "::queue_engine.run_status, d.payload," \
	"        " output ", d.concurrency_key, d.worker, " \
	QE_SQL_META("NULL", "(d.meta).created_at", "(d.meta).expires_at", "NULL", "NULL", \
				"(d.meta).idempotency_key", "(d.meta).tags", "(d.meta).parent_run_id", \
				"(d.meta).max_attempts", "(d.meta).lease", last_error, "NULL") \
	"   FROM d" \
	" RETURNING queue_id, (meta).parent_run_id, started_at, finished_at"

/* The attempts' durations (started_at, finished_at: the 3rd and 4th columns). */
static void
observe_durations(uint64 n)
{
	for (uint64 i = 0; i < n; i++)
	{
		bool		started_null;
		bool		finished_null;
		Datum		started = qe_get(i, 3, &started_null);
		Datum		finished = qe_get(i, 4, &finished_null);

		if (!started_null && !finished_null)
			qe_metrics_observe(QE_HIST_RUN_DURATION,
							   DatumGetTimestampTz(finished) - DatumGetTimestampTz(started));
	}
}

static int64
require_run_id(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_id must not be null"),
				 errhint("Pass the run_id that dequeue() returned.")));
	return PG_GETARG_INT64(0);
}

/* heartbeat()'s update, of table (executing, or one of its segments). */
#define HEARTBEAT_IN(table) \
	"UPDATE queue_engine." table " e" \
	"   SET lease_expires_at = now() + coalesce($3, e.attempt_lease)" \
	" WHERE e.run_id = $1 AND ($2::int IS NULL OR e.attempt = $2)" \
	" RETURNING e.lease_expires_at"

static const Oid heartbeat_types[3] = {INT8OID, INT4OID, INTERVALOID};

Datum
qe_heartbeat(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr segment_plans[2];
	int			segment;
	bool		done;
	int64		run_id = require_run_id(fcinfo);
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	Datum		result;

	qe_require_attempt_arg(fcinfo, 1, "heartbeat", "attempt",
						   "Pass the attempt that dequeue() returned: heartbeat(run_id, attempt => 1).");
	if (!PG_ARGISNULL(2))
		qe_check_interval(PG_GETARG_INTERVAL_P(2), "extend", false);
	/* Another tenant's run: as if it were not executing (access.c). */
	if (!qe_access_run(QE_NEED_WORK, run_id))
		PG_RETURN_NULL();

	/*
	 * In place: the lease is in no index, so this is a HOT update.  On the
	 * one executing segment with pages first, as complete() does.
	 */
	SPI_connect();
	values[0] = Int64GetDatum(run_id);
	values[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	segment = qe_sole_segment(QE_FAMILY_EXECUTING);
	done = segment >= 0 &&
		qe_exec(qe_plan_in_segment(segment_plans, QE_FAMILY_EXECUTING, segment,
								   HEARTBEAT_IN("%1$s"), 3, heartbeat_types),
				values, nulls, 0) == 1;
	if (!done &&
		qe_exec(qe_plan(&plan, HEARTBEAT_IN("executing"), 3, heartbeat_types),
				values, nulls, 0) == 0)
	{
		qe_check_run_exists(run_id);
		SPI_finish();
		PG_RETURN_NULL();
	}
	result = qe_get(0, 1, &isnull);
	/* (its queue: only the lease moved, which knows no queue) */
	qe_run_transitioned(0, QE_RUN_EXECUTING, QE_RUN_EXECUTING, 1, NULL,
						DatumGetTimestampTz(result));
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * complete()'s move, from table (executing, or one of its segments).  When
 * one executing segment holds every row (qe_sole_segment()), the statement
 * on it alone: its plan is a third of the parent's (no scan of the parent
 * and the other segment, one DELETE target), and starting a plan is most
 * of what the call costs.  The run is then there, or not executing: the
 * other segment has no pages, and the one returned stays locked.  Should
 * it not be found anyway, the statement through the parent has the last
 * word.
 */
#define COMPLETE_ONE(table) \
	FINISH_EXECUTING_IN(table, "WHERE e.run_id = $1" \
						"  AND ($3::int IS NULL OR e.attempt = $3)" \
						"  AND " IN_TENANTS("e", "$4"), \
						"", "'completed'", "$2", "(d.meta).last_error")

static const Oid complete_types[4] = {INT8OID, JSONBOID, INT4OID, INT4ARRAYOID};

/*
 * complete() without a statement.  Starting the executor for COMPLETE_ONE
 * (a DELETE feeding an INSERT, a projection of every column and of meta's
 * fields) is most of what complete() costs, so the common case does what
 * that statement does by hand: the run's executing row is found by its
 * unique run_id index, deleted (in READ COMMITTED following a concurrent
 * heartbeat to the row's latest version and checking the attempt again,
 * as the statement's recheck would), and its finished_runs row inserted
 * (run_insert.c).  Whatever a heap delete and insert would bypass (a
 * trigger, a rule or row security on either table, a tenant-scoped role)
 * takes the statement instead, and so does a read-only transaction (the
 * statement refuses it; heap calls would not).
 */

/*
 * The finished_runs row (fin, fin_nulls) of the executing row in slot
 * (columns att), completed with output.
 */
static void
finished_row_of(TupleTableSlot *slot, const AttrNumber *att, Datum output,
				bool output_null, Oid status_type, Datum *fin, bool *fin_nulls,
				int64 *parent)
{
	static const struct
	{
		QeFinishedColumn fin;
		QeExecutingColumn exec;
	}			copied[] = {
		{QE_FIN_RUN_ID, QE_EXEC_RUN_ID}, {QE_FIN_RUN_AT, QE_EXEC_RUN_AT},
		{QE_FIN_STARTED_AT, QE_EXEC_STARTED_AT}, {QE_FIN_QUEUE_ID, QE_EXEC_QUEUE_ID},
		{QE_FIN_POLICY_ID, QE_EXEC_POLICY_ID}, {QE_FIN_PRIORITY, QE_EXEC_PRIORITY},
		{QE_FIN_ATTEMPT, QE_EXEC_ATTEMPT}, {QE_FIN_PAYLOAD, QE_EXEC_PAYLOAD},
		{QE_FIN_CONCURRENCY_KEY, QE_EXEC_CONCURRENCY_KEY}, {QE_FIN_WORKER, QE_EXEC_WORKER},
	};
	Datum		fields[QE_META_NFIELDS];
	bool		field_nulls[QE_META_NFIELDS];
	bool		meta_null;
	Datum		meta;

	for (int i = 0; i < lengthof(copied); i++)
		fin[copied[i].fin] = slot_getattr(slot, att[copied[i].exec],
										  &fin_nulls[copied[i].fin]);
	fin[QE_FIN_FINISHED_AT] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	fin_nulls[QE_FIN_FINISHED_AT] = false;
	fin[QE_FIN_STATUS] = DirectFunctionCall2(enum_in,
											 CStringGetDatum(qe_run_status_labels[QE_RUN_COMPLETED]),
											 ObjectIdGetDatum(status_type));
	fin_nulls[QE_FIN_STATUS] = false;
	fin[QE_FIN_OUTPUT] = output;
	fin_nulls[QE_FIN_OUTPUT] = output_null;

	/*
	 * meta keeps the run's other fields (FINISH_EXECUTING): its attempt,
	 * started_at, worker and key are the row's columns there.
	 */
	meta = slot_getattr(slot, att[QE_EXEC_META], &meta_null);
	qe_deform_run_meta(meta, meta_null, fields, field_nulls);
	*parent = field_nulls[QE_META_PARENT_RUN_ID] ? 0 :
		DatumGetInt64(fields[QE_META_PARENT_RUN_ID]);
	field_nulls[QE_META_ATTEMPT] = true;
	field_nulls[QE_META_RESUME] = true;
	field_nulls[QE_META_STARTED_AT] = true;
	field_nulls[QE_META_WORKER] = true;
	field_nulls[QE_META_CONCURRENCY_KEY] = true;
	fin[QE_FIN_META] = qe_form_run_meta(fields, field_nulls, &fin_nulls[QE_FIN_META]);
}

/*
 * Delete run_id's executing row of the attempt (any: attempt_null) from
 * the first of the nsegs executing segments segs that has it, under a
 * snapshot taken once they are locked (a rotation that carried it has
 * committed by then), and form its finished_runs row.  1: done; 0: not
 * there; -1: a segment needs a real DELETE (nothing done).
 */
static int
delete_executing(const int *segs, int nsegs, int64 run_id, bool attempt_null,
				 int32 attempt, Datum output, bool output_null,
				 Oid status_type, Datum *fin, bool *fin_nulls, int64 *parent)
{
	Relation	rels[2];
	Relation	indexes[2] = {NULL, NULL};
	Oid			nsp = get_namespace_oid("queue_engine", false);
	Snapshot	snapshot;
	CommandId	cid;
	int			result = 0;
	int			opened = 0;

	for (int k = 0; k < nsegs; k++)
	{
		char		name[NAMEDATALEN];
		Oid			indexoid;

		rels[k] = qe_try_open_table(qe_segment_names[QE_FAMILY_EXECUTING][segs[k]],
									RowExclusiveLock);
		if (rels[k] == NULL)
		{
			result = -1;		/* no segments: the statement says why */
			break;
		}
		opened++;
		snprintf(name, sizeof(name), "%s_id", qe_segment_names[QE_FAMILY_EXECUTING][segs[k]]);
		indexoid = get_relname_relid(name, nsp);
		if (!qe_plain_delete(rels[k]) || !OidIsValid(indexoid))
		{
			result = -1;
			break;
		}
		indexes[k] = index_open(indexoid, RowExclusiveLock);
	}

	/* As a statement would: see what this transaction did so far, anew. */
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	snapshot = GetActiveSnapshot();
	cid = GetCurrentCommandId(true);

	for (int k = 0; k < nsegs && result == 0; k++)
	{
		Relation	rel = rels[k];
		AttrNumber	att[QE_EXEC_NCOLS];
		ScanKeyData key;
		IndexScanDesc scan;
		TupleTableSlot *slot = table_slot_create(rel, NULL);
		bool		found;

		qe_column_numbers(rel, qe_executing_column_names, QE_EXEC_NCOLS, att);
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(run_id));
		scan = qe_index_beginscan(rel, indexes[k], snapshot, 1, 0);
		index_rescan(scan, &key, 1, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, slot);
		index_endscan(scan);

		while (found)
		{
			bool		isnull;
			ItemPointerData tid = slot->tts_tid;
			TM_FailureData tmfd;
			TM_Result	res;

			if (!attempt_null &&
				DatumGetInt32(slot_getattr(slot, att[QE_EXEC_ATTEMPT], &isnull)) != attempt)
				break;			/* another attempt: not this call's to end */
			res = table_tuple_delete(rel, &tid, cid, snapshot, InvalidSnapshot,
									 true, &tmfd, false);
			if (res == TM_Ok)
			{
				finished_row_of(slot, att, output, output_null, status_type,
								fin, fin_nulls, parent);
				result = 1;
				break;
			}
			if (res == TM_SelfModified || res == TM_Deleted)
			{
				if (res == TM_Deleted && IsolationUsesXactSnapshot())
					ereport(ERROR,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("could not serialize access due to concurrent delete")));
				break;			/* finished or moved meanwhile */
			}
			if (res != TM_Updated)
				elog(ERROR, "queue_engine: unexpected result %d deleting an executing run", (int) res);
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent update")));
			/* A heartbeat updated it: lock its latest version, check again. */
			res = table_tuple_lock(rel, &tid, snapshot, slot, cid, LockTupleExclusive,
								   LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
			if (res != TM_Ok)
				break;			/* deleted meanwhile */
		}
		ExecDropSingleTupleTableSlot(slot);
		if (result != 0)
			break;
	}
	PopActiveSnapshot();
	for (int k = 0; k < opened; k++)
	{
		if (indexes[k] != NULL)
			index_close(indexes[k], NoLock);
		table_close(rels[k], NoLock);
	}
	return result;
}

/*
 * complete(run_id, output, attempt) by hand, for a caller that sees every
 * tenant.  Returns 1 (completed; *queue_id is its queue), 0 (not
 * executing, or another attempt), or -1: COMPLETE_ONE must do it (nothing
 * was done).
 */
static int
complete_direct(int64 run_id, Datum output, bool output_null, bool attempt_null,
				int32 attempt, int32 *queue_id, int64 *parent)
{
	Relation	finished = qe_open_finished_runs();
	Datum		fin[QE_FIN_NCOLS];
	bool		fin_nulls[QE_FIN_NCOLS];
	Oid			status_type;
	int			current;
	int			result;

	if (finished == NULL)
		return -1;
	status_type = TupleDescAttr(RelationGetDescr(finished),
								get_attnum(RelationGetRelid(finished), "status") - 1)->atttypid;

	/*
	 * On the current segment first, where runs started since the last
	 * switch are; then, locking both before a snapshot of its own, on both,
	 * as a statement through the parent would (rotation.c: a run the first
	 * look missed was in the other segment, or carried from it meanwhile).
	 */
	current = qe_current_segment(QE_FAMILY_EXECUTING);
	result = delete_executing((int[]) {current}, 1, run_id, attempt_null, attempt,
							  output, output_null, status_type, fin, fin_nulls, parent);
	if (result == 0)
		result = delete_executing((int[]) {0, 1}, 2, run_id, attempt_null, attempt,
								  output, output_null, status_type, fin, fin_nulls, parent);
	if (result != 1)
	{
		table_close(finished, NoLock);
		return result;
	}
	qe_insert_finished_run(finished, fin, fin_nulls);
	if (!fin_nulls[QE_FIN_STARTED_AT])
		qe_metrics_observe(QE_HIST_RUN_DURATION,
						   DatumGetTimestampTz(fin[QE_FIN_FINISHED_AT]) -
						   DatumGetTimestampTz(fin[QE_FIN_STARTED_AT]));
	/* Later statements of the transaction see the move, as after a statement. */
	CommandCounterIncrement();
	*queue_id = DatumGetInt32(fin[QE_FIN_QUEUE_ID]);
	return 1;
}

Datum
qe_complete(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr segment_plans[2];
	int			segment;
	int64		run_id = require_run_id(fcinfo);
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		done;
	bool		isnull;
	int			direct;
	int32		queue_id = 0;
	int64		parent = 0;

	qe_require_attempt_arg(fcinfo, 2, "complete", "attempt",
						   "Pass the attempt that dequeue() returned: complete(run_id, output, attempt => 1).");
	if (!PG_ARGISNULL(1))
		qe_check_jsonb_size(PG_GETARG_DATUM(1), qe_max_output_bytes, "output",
							"queue_engine.max_output_bytes");

	SPI_connect();
	values[0] = Int64GetDatum(run_id);
	values[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[3] = PointerGetDatum(qe_access_tenant_array(QE_NEED_WORK));
	nulls[3] = values[3] == (Datum) 0 ? 'n' : ' ';
	direct = -1;
	if (nulls[3] == 'n' && !XactReadOnly)
		direct = complete_direct(run_id, values[1], nulls[1] == 'n', nulls[2] == 'n',
								 nulls[2] == 'n' ? 0 : DatumGetInt32(values[2]),
								 &queue_id, &parent);
	done = direct == 1;
	if (direct < 0)
	{
		segment = qe_sole_segment(QE_FAMILY_EXECUTING);
		if (segment >= 0)
			done = qe_exec(qe_plan_in_segment(segment_plans, QE_FAMILY_EXECUTING, segment,
											  COMPLETE_ONE("%1$s"), 4, complete_types),
						   values, nulls, 0) == 1;
		if (!done)
			done = qe_exec(qe_plan(&plan, COMPLETE_ONE("executing"), 4, complete_types),
						   values, nulls, 0) == 1;
		if (done)
		{
			queue_id = DatumGetInt32(qe_get(0, 1, &isnull));
			observe_durations(1);
			qe_children_final_of_result(2);
		}
	}
	if (done)
	{
		qe_run_transitioned(queue_id, QE_RUN_EXECUTING, QE_RUN_COMPLETED, 1, NULL, DT_NOEND);
		/* a child run: its parent may be waiting for it (waits.c) */
		if (parent != 0)
			qe_children_final(&parent, 1);
	}
	else
		qe_check_run_exists(run_id);
	SPI_finish();
	PG_RETURN_BOOL(done);
}

/* Elements of a one-dimensional array argument, or an error naming it. */
static int
array_length_checked(ArrayType *arr, const char *name)
{
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", name),
				 errhint("Pass a plain array such as ARRAY[1, 2, 3].")));
	return ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
}

/*
 * One more run of queue_id went from executing to completed: runs of one
 * queue in a row are one move (a batch is almost always from one queue).
 */
static void
add_completed(QeTransition *moves, int *nmoves, int32 queue_id)
{
	if (*nmoves > 0 && moves[*nmoves - 1].queue_id == queue_id)
	{
		moves[*nmoves - 1].nruns++;
		return;
	}
	moves[*nmoves].queue_id = queue_id;
	moves[*nmoves].from = QE_RUN_EXECUTING;
	moves[*nmoves].to = QE_RUN_COMPLETED;
	moves[*nmoves].nruns = 1;
	moves[*nmoves].lease_expires_at = DT_NOEND;
	(*nmoves)++;
}

/*
 * The n runs the last statement completed, whose queue ids are its first
 * result column, went from executing to completed.
 */
static void
report_completed(int64 n)
{
	QeTransition *moves = palloc(sizeof(QeTransition) * Max(n, 1));
	int			nmoves = 0;

	for (int64 i = 0; i < n; i++)
	{
		bool		isnull;
		int32		queue_id = DatumGetInt32(qe_get(i, 1, &isnull));

		add_completed(moves, &nmoves, queue_id);
	}
	qe_runs_transitioned(moves, nmoves);
	observe_durations((uint64) n);
	qe_children_final_of_result(2);
}

/*
 * complete_batch() by hand (complete_direct() for each id in turn, a run
 * id given twice completed once), for a caller that sees every tenant.
 * Returns how many it completed; *done says whether it did them all, or
 * left the rest (every id it did not complete) to COMPLETE_BATCH.
 */
static int64
complete_batch_direct(ArrayType *ids, ArrayType *outputs, ArrayType *attempts,
					  bool *done)
{
	Datum	   *id_elems;
	Datum	   *output_elems = NULL;
	bool	   *output_nulls = NULL;
	Datum	   *attempt_elems = NULL;
	int			nids;
	int			n;
	QeTransition *moves;
	int			nmoves = 0;
	int64		completed = 0;
	int64	   *parents;
	int			nparents = 0;

	deconstruct_array(ids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &id_elems, NULL, &nids);
	if (outputs != NULL)
		deconstruct_array(outputs, JSONBOID, -1, false, TYPALIGN_INT,
						  &output_elems, &output_nulls, &n);
	if (attempts != NULL)
		deconstruct_array(attempts, INT4OID, 4, true, TYPALIGN_INT,
						  &attempt_elems, NULL, &n);
	moves = palloc(sizeof(QeTransition) * nids);
	parents = palloc(sizeof(int64) * nids);
	*done = true;
	for (int i = 0; i < nids; i++)
	{
		int32		queue_id;
		int64		parent = 0;
		int			r = complete_direct(DatumGetInt64(id_elems[i]),
										output_elems != NULL ? output_elems[i] : (Datum) 0,
										output_elems == NULL || output_nulls[i],
										attempt_elems == NULL,
										attempt_elems != NULL ? DatumGetInt32(attempt_elems[i]) : 0,
										&queue_id, &parent);

		if (r < 0)
		{
			*done = false;		/* the statement completes the rest */
			break;
		}
		if (r == 0)
			continue;
		completed++;
		add_completed(moves, &nmoves, queue_id);
		if (parent != 0)
			parents[nparents++] = parent;
	}
	qe_runs_transitioned(moves, nmoves);
	qe_children_final(parents, nparents);
	pfree(moves);
	return completed;
}

/* complete_batch()'s move, from table (as COMPLETE_ONE). */
#define COMPLETE_BATCH(table) \
	FINISH_EXECUTING_IN(table, "USING unnest($1::bigint[], $2::jsonb[], $3::int[])" \
						"      AS u(run_id, output, attempt)" \
						" WHERE e.run_id = u.run_id" \
						"   AND (u.attempt IS NULL OR e.attempt = u.attempt)" \
						"   AND " IN_TENANTS("e", "$4"), \
						", u.output AS new_output", "'completed'", "d.new_output", \
						"(d.meta).last_error")

static const Oid complete_batch_types[4] = {INT8ARRAYOID, JSONBARRAYOID, INT4ARRAYOID,
INT4ARRAYOID};

Datum
qe_complete_batch(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr segment_plans[2];
	static SPIPlanPtr missing_plan = NULL;
	int			segment;
	ArrayType  *ids;
	int			nids;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int64		completed = 0;
	bool		direct_done = false;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_ids must not be null"),
				 errhint("Pass the run_ids that dequeue() returned.")));
	ids = PG_GETARG_ARRAYTYPE_P(0);
	nids = array_length_checked(ids, "run_ids");
	if (array_contains_nulls(ids))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_ids must not contain nulls"),
				 errhint("Pass only the run_ids that dequeue() returned.")));
	if (!PG_ARGISNULL(1))
	{
		ArrayType  *outputs = PG_GETARG_ARRAYTYPE_P(1);
		Datum	   *elems;
		bool	   *enulls;
		int			n;

		if (array_length_checked(outputs, "outputs") != nids)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("outputs has %d elements but run_ids has %d",
							array_length_checked(outputs, "outputs"), nids),
					 errhint("Pass one output per run id, or NULL for none.")));
		deconstruct_array(outputs, JSONBOID, -1, false, TYPALIGN_INT,
						  &elems, &enulls, &n);
		for (int i = 0; i < n; i++)
		{
			char		what[64];

			if (enulls[i])
				continue;
			snprintf(what, sizeof(what), "outputs[%d]", i + 1);
			qe_check_jsonb_size(elems[i], qe_max_output_bytes, what,
								"queue_engine.max_output_bytes");
		}
	}
	qe_require_attempt_arg(fcinfo, 2, "complete_batch", "attempts",
						   "Pass the attempts that dequeue() returned, one per run id: complete_batch(run_ids, attempts => ARRAY[1, 1]).");
	if (!PG_ARGISNULL(2) &&
		array_length_checked(PG_GETARG_ARRAYTYPE_P(2), "attempts") != nids)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("attempts has %d elements but run_ids has %d",
						array_length_checked(PG_GETARG_ARRAYTYPE_P(2), "attempts"), nids),
				 errhint("Pass one attempt per run id, or NULL to skip fencing.")));
	if (!PG_ARGISNULL(2) && array_contains_nulls(PG_GETARG_ARRAYTYPE_P(2)))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("attempts must not contain nulls"),
				 errhint("Pass the attempt dequeue() returned for every run id, or NULL instead of the whole array to skip fencing.")));
	if (nids == 0)
		PG_RETURN_INT64(0);

	/*
	 * A run id given twice is deleted once (a row deleted by this
	 * statement is passed over), so it is completed and counted once, as
	 * with 0.1's UPDATE ... FROM.
	 */
	SPI_connect();
	values[0] = PointerGetDatum(ids);
	values[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[3] = PointerGetDatum(qe_access_tenant_array(QE_NEED_WORK));
	nulls[3] = values[3] == (Datum) 0 ? 'n' : ' ';
	if (nulls[3] == 'n' && !XactReadOnly)
		completed = complete_batch_direct(ids, nulls[1] == 'n' ? NULL : DatumGetArrayTypeP(values[1]),
										  nulls[2] == 'n' ? NULL : DatumGetArrayTypeP(values[2]),
										  &direct_done);
	/* (one segment alone first, as in complete(); the rest through the parent) */
	segment = direct_done ? -1 : qe_sole_segment(QE_FAMILY_EXECUTING);
	if (segment >= 0)
	{
		int64		n = (int64) qe_exec(qe_plan_in_segment(segment_plans, QE_FAMILY_EXECUTING,
														   segment, COMPLETE_BATCH("%1$s"),
														   4, complete_batch_types),
									   values, nulls, 0);

		report_completed(n);
		completed += n;
	}
	if (!direct_done && completed < nids)
	{
		int64		n = (int64) qe_exec(qe_plan(&plan, COMPLETE_BATCH("executing"),
											   4, complete_batch_types),
									   values, nulls, 0);

		report_completed(n);
		completed += n;
	}

	/* Only on the slow path: is any id not a run at all? */
	if (completed < nids)
	{
		qe_plan(&missing_plan,
				"SELECT u.id FROM unnest($1::bigint[]) AS u(id)"
				" WHERE NOT EXISTS (" QE_SQL_RUN_PLACES("u.id") ")"
				" LIMIT 1",
				1, (Oid[]) {INT8ARRAYOID});
		if (qe_exec(missing_plan, values, NULL, 1) == 1)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("run %lld does not exist", (long long) qe_get_int64(0, 1)),
					 errhint("Pass only ids returned by dequeue(); nothing was completed.")));
	}
	SPI_finish();
	PG_RETURN_INT64(completed);
}

/* A retried run (d, of queue q) keeps its key in the column: delayed ($4), or key-limited. */
#define RETRY_KEYED "($4 OR q.key_concurrency_limit IS NOT NULL)"

Datum
qe_fail(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr failed_plan = NULL;
	static SPIPlanPtr retry_plans[QE_FAMILY_DELAYED + 1][2];
	int64		run_id = require_run_id(fcinfo);
	Datum		values[4];
	bool		isnull;
	bool		permanent;
	int32		attempt;
	int32		max_attempts;
	int32		queue_id;
	int32		priority;
	bool		keyed;
	Interval   *backoff;
	Interval   *backoff_max;
	QeRunStatus new_status;
	TimestampTz run_at = GetCurrentTransactionStartTimestamp();
	TimestampTz started_at;
	Jsonb	   *error;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("error must not be null"),
				 errhint("Pass the error as jsonb, such as '{\"message\": \"timeout\"}'.")));
	qe_require_attempt_arg(fcinfo, 2, "fail", "attempt",
						   "Pass the attempt that dequeue() returned: fail(run_id, error, attempt => 1).");
	if (!PG_ARGISNULL(3))
		qe_check_interval(PG_GETARG_INTERVAL_P(3), "retry_in", true);
	permanent = PG_ARGISNULL(4) ? false : PG_GETARG_BOOL(4);
	/* Another tenant's run: as if it were not executing (access.c). */
	if (!qe_access_run(QE_NEED_WORK, run_id))
		PG_RETURN_NULL();

	/*
	 * Lock the executing row first (FOR UPDATE: it is deleted below), so
	 * that the choice between retry and failure is made on the attempt a
	 * concurrent complete() or cancel() can no longer take.  No row: not
	 * executing (or no run at all: an error).
	 */
	SPI_connect();
	qe_plan(&lock_plan,
			"SELECT e.attempt, " QE_SQL_MAX_ATTEMPTS("e", "p") ", e.queue_id,"
			"       q.retry_backoff, q.retry_backoff_max, e.priority,"
			"       e.concurrency_key IS NOT NULL, e.started_at"
			"  FROM queue_engine.executing e"
			"  JOIN queue_engine.queue_policies p ON p.policy_id = e.policy_id"
			"  JOIN queue_engine.queues q ON q.queue_id = e.queue_id"
			" WHERE e.run_id = $1"
			"   FOR UPDATE OF e",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(run_id);
	if (qe_exec(lock_plan, values, NULL, 1) == 0)
	{
		qe_check_run_exists(run_id);
		SPI_finish();
		PG_RETURN_NULL();
	}

	attempt = DatumGetInt32(qe_get(0, 1, &isnull));
	if (!PG_ARGISNULL(2) && PG_GETARG_INT32(2) != attempt)
	{
		SPI_finish();
		PG_RETURN_NULL();
	}
	max_attempts = DatumGetInt32(qe_get(0, 2, &isnull));
	queue_id = DatumGetInt32(qe_get(0, 3, &isnull));
	backoff = DatumGetIntervalP(qe_get(0, 4, &isnull));
	backoff_max = DatumGetIntervalP(qe_get(0, 5, &isnull));
	priority = DatumGetInt32(qe_get(0, 6, &isnull));
	keyed = DatumGetBool(qe_get(0, 7, &isnull));
	started_at = DatumGetTimestampTz(qe_get(0, 8, &isnull));

	if (permanent || attempt >= max_attempts)
		new_status = QE_RUN_FAILED;
	else
	{
		int64		delay_us;

		if (!PG_ARGISNULL(3))
			delay_us = qe_interval_usecs(PG_GETARG_INTERVAL_P(3));
		else
			delay_us = qe_retry_backoff_usecs(backoff, backoff_max, attempt);
		run_at += delay_us;
		new_status = delay_us > 0 ? QE_RUN_DELAYED : QE_RUN_QUEUED;
	}

	error = qe_trim_error(PG_GETARG_JSONB_P(1), qe_max_error_field_bytes,
						  QE_MAX_ERROR_BYTES);

	/*
	 * $1 run_id, $2 the error, $3 the retry's run_at, $4 whether the retry
	 * is delayed (unused when failed).
	 */
	values[0] = Int64GetDatum(run_id);
	values[1] = JsonbPGetDatum(error);
	values[2] = TimestampTzGetDatum(run_at);
	values[3] = BoolGetDatum(new_status == QE_RUN_DELAYED);
	if (new_status == QE_RUN_FAILED)
	{
		qe_exec(qe_plan(&failed_plan,
						FINISH_EXECUTING("WHERE e.run_id = $1", "", "'failed'", "NULL", "$2"),
						3, (Oid[]) {INT8OID, JSONBOID, TIMESTAMPTZOID}),
				values, NULL, 0);
		qe_children_final_of_result(2);
	}
	else
	{
		QeFamily	family = new_status == QE_RUN_QUEUED ? QE_FAMILY_READY : QE_FAMILY_DELAYED;

		/*
		 * Back to pending, into the current segment of ready or delayed
		 * (same columns): meta carries the failed attempt (its number,
		 * start and worker) and the error, and keeps the run's other
		 * fields.  created_at is written out when run_at moves away from
		 * it.  The key stays in the column unless the run is queued in a
		 * queue without a per-key limit (run_state.h, QE_SQL_KEY_OF), as
		 * the statement reads the queue after the key placement lock.
		 */
		if (keyed)
			qe_lock_key_placement(queue_id, false);
		qe_exec(qe_plan_segment(retry_plans[family], family,
								"WITH d AS (DELETE FROM queue_engine.executing e"
								"            WHERE e.run_id = $1 RETURNING e.*)"
								" INSERT INTO queue_engine.%1$s"
								" SELECT d.run_id, $3, d.queue_id, d.policy_id, d.priority,"
								"        d.payload, "
								QE_SQL_READY_KEY_COLUMN("d.concurrency_key", RETRY_KEYED) ", "
								QE_SQL_META("nullif(d.attempt, 0)",
											"nullif(coalesce((d.meta).created_at, d.run_at), $3)",
											"(d.meta).expires_at", "d.started_at", "d.worker",
											"(d.meta).idempotency_key", "(d.meta).tags",
											"(d.meta).parent_run_id", "(d.meta).max_attempts",
											"(d.meta).lease", "$2",
											QE_SQL_READY_KEY_META("d.concurrency_key", RETRY_KEYED))
								"   FROM d LEFT JOIN queue_engine.queues q ON q.queue_id = d.queue_id",
								4, (Oid[]) {INT8OID, JSONBOID, TIMESTAMPTZOID, BOOLOID}),
				values, NULL, 0);
	}
	{
		QeReadyKey	key = {priority, run_at, run_id};

		qe_run_transitioned(queue_id, QE_RUN_EXECUTING, new_status, 1, &key,
							DT_NOEND);
	}
	qe_metrics_observe(QE_HIST_RUN_DURATION, GetCurrentTransactionStartTimestamp() - started_at);
	SPI_finish();

	/* run_status is an enum: return its label's OID via the input function. */
	PG_RETURN_DATUM(DirectFunctionCall2(enum_in,
										CStringGetDatum(qe_run_status_labels[new_status]),
										ObjectIdGetDatum(get_fn_expr_rettype(fcinfo->flinfo))));
}

/*
 * The stored form of a cancel reason: {"message": "canceled: <reason>",
 * "reason": <reason>, "canceled": true}, trimmed like any stored error.
 * The message repeats only the start of a long reason, so the reason is
 * stored once.
 */
static Jsonb *
cancel_error(text *reason_text)
{
	const char *reason = VARDATA_ANY(reason_text);
	int			len = VARSIZE_ANY_EXHDR(reason_text);
	int			head = pg_mbcliplen(reason, len, QE_CANCEL_MESSAGE_REASON_BYTES);
	StringInfoData message;
	JsonbParseState *state = NULL;
	JsonbValue	key;
	JsonbValue	val;
	JsonbValue *res;

	initStringInfo(&message);
	appendStringInfoString(&message, "canceled: ");
	appendBinaryStringInfo(&message, reason, head);
	if (head < len)
		appendStringInfoString(&message, "...");

	/*
	 * Longer than trimming keeps anyway: cut before building the jsonb (a
	 * few bytes over the cap, so that trimming still cuts and says so).
	 */
	if (len > qe_max_error_field_bytes + MAX_MULTIBYTE_CHAR_LEN)
		len = pg_mbcliplen(reason, len,
						   qe_max_error_field_bytes + MAX_MULTIBYTE_CHAR_LEN);

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	key.type = jbvString;
	val.type = jbvString;
	key.val.string.val = "message";
	key.val.string.len = 7;
	val.val.string.val = message.data;
	val.val.string.len = message.len;
	pushJsonbValue(&state, WJB_KEY, &key);
	pushJsonbValue(&state, WJB_VALUE, &val);
	key.val.string.val = "reason";
	key.val.string.len = 6;
	val.val.string.val = (char *) reason;
	val.val.string.len = len;
	pushJsonbValue(&state, WJB_KEY, &key);
	pushJsonbValue(&state, WJB_VALUE, &val);
	key.val.string.val = "canceled";
	key.val.string.len = 8;
	val.type = jbvBool;
	val.val.boolean = true;
	pushJsonbValue(&state, WJB_KEY, &key);
	pushJsonbValue(&state, WJB_VALUE, &val);
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return qe_trim_error(JsonbValueToJsonb(res), qe_max_error_field_bytes,
						 QE_MAX_ERROR_BYTES);
}

/*
 * Move a pending run ($1) of family "ready" or "delayed" to finished_runs
 * as canceled, with last_error $2 if given (else the one it has): its
 * attempt, started_at and worker (of a retried run's last attempt) become
 * the row's columns.  No btree on run_id there: the row is found through
 * the BRIN, locked, and deleted by ctid (segments.h).
 */
#define CANCEL_PENDING(family) \
	"WITH picked AS MATERIALIZED (" \
	"  SELECT x.tableoid AS t, x.ctid AS c FROM queue_engine." family " x" \
	"   WHERE x.run_id = $1 FOR UPDATE)," \
	QE_SQL_TAKE_PICKED(family) \
	" INSERT INTO queue_engine.finished_runs" \
	" SELECT k.run_id, now(), k.run_at, (k.meta).started_at, k.queue_id, k.policy_id," \
	"        k.priority, " QE_SQL_ATTEMPT("k") ", 'canceled'::queue_engine.run_status," \
	"        k.payload, NULL," \
	"        " QE_SQL_KEY_OF("k") ", (k.meta).worker, " \
	QE_SQL_META("NULL", "(k.meta).created_at", "(k.meta).expires_at", "NULL", "NULL", \
				"(k.meta).idempotency_key", "(k.meta).tags", "(k.meta).parent_run_id", \
				"(k.meta).max_attempts", "(k.meta).lease", \
				"coalesce($2, (k.meta).last_error)", "NULL") \
	"   FROM taken k" \
	" RETURNING queue_id, (meta).parent_run_id"

/*
 * Cancel one run (not its children): true when this call canceled it,
 * false when it is final (or gone); an unknown run is an error when
 * must_exist.
 */
static bool
cancel_one(int64 run_id, Jsonb *error, bool must_exist)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr move_plans[QE_RUN_WAITING + 1];
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	bool		isnull;
	QeRunStatus status;
	int32		queue_id;

	values[0] = Int64GetDatum(run_id);
	values[1] = error == NULL ? (Datum) 0 : JsonbPGetDatum(error);
	nulls[1] = error == NULL ? 'n' : ' ';

	/*
	 * Find the run's table, then move it out of there (the move locks the
	 * row, waiting for a claim, complete, fail, heartbeat or wake that
	 * holds it).  If the move finds nothing, the run left that table after
	 * the look (a concurrent move committed): look again, with a new
	 * snapshot, and cancel it where it went, or return false if it
	 * finished.  0.1 got the same outcome by following the one row's
	 * update chain.
	 */
	for (;;)
	{
		qe_plan(&find_plan, QE_SQL_RUN_PLACES("$1") " LIMIT 1", 1, (Oid[]) {INT8OID});
		if (qe_exec(find_plan, values, NULL, 1) == 0)
		{
			if (must_exist)
				qe_access_run_not_found(run_id);
			return false;
		}
		status = qe_run_status_from_label(TextDatumGetCString(qe_get(0, 1, &isnull)));
		if (QE_RUN_FINISHED(status))
			return false;
		if (status == QE_RUN_QUEUED)
			qe_plan(&move_plans[status], CANCEL_PENDING("ready"),
					2, (Oid[]) {INT8OID, JSONBOID});
		else if (status == QE_RUN_DELAYED)
			qe_plan(&move_plans[status], CANCEL_PENDING("delayed"),
					2, (Oid[]) {INT8OID, JSONBOID});
		else if (status == QE_RUN_WAITING)
			qe_plan(&move_plans[status],
					FINISH_EXECUTING_IN("waiting_runs", "WHERE e.run_id = $1", "", "'canceled'",
										"NULL", "coalesce($2, (d.meta).last_error)"),
					2, (Oid[]) {INT8OID, JSONBOID});
		else
			qe_plan(&move_plans[status],
					FINISH_EXECUTING("WHERE e.run_id = $1", "", "'canceled'", "NULL",
									 "coalesce($2, (d.meta).last_error)"),
					2, (Oid[]) {INT8OID, JSONBOID});
		if (qe_exec(move_plans[status], values, nulls, 0) == 1)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	queue_id = DatumGetInt32(qe_get(0, 1, &isnull));
	qe_children_final_of_result(2);
	qe_run_transitioned(queue_id, status, QE_RUN_CANCELED, 1, NULL, DT_NOEND);
	return true;
}

/*
 * Cancel run_id wherever it is, with last_error error (NULL: the one it
 * has), then its unfinished children and theirs, each with last_error
 * {"message": "canceled: parent canceled", "reason": "parent canceled",
 * "canceled": true, "parent_run_id": its parent}.  True when run_id itself was canceled; false
 * when it was final already.  An unknown run is an error.  The caller is
 * connected to SPI.
 */
bool
qe_cancel_run(int64 run_id, Jsonb *error)
{
	/* A worklist of (run, its parent) pairs: the cascade, depth first. */
	int64	   *pending = palloc(sizeof(int64) * 32);
	int			npending = 0;
	int			cap = 32;

	if (!cancel_one(run_id, error, true))
		return false;			/* final already: its children are on their own */
	pending[npending++] = run_id;
	while (npending > 0)
	{
		int64		parent = pending[--npending];
		int64	   *children;
		int			nchildren = qe_unfinished_children(parent, &children);
		Jsonb	   *child_error;
		StringInfoData s;

		if (nchildren == 0)
			continue;
		initStringInfo(&s);
		appendStringInfo(&s, "{\"message\": \"canceled: parent canceled\", \"reason\": \"parent canceled\","
						 " \"canceled\": true, \"parent_run_id\": " INT64_FORMAT "}", parent);
		child_error = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data)));
		for (int c = 0; c < nchildren; c++)
		{
			if (!cancel_one(children[c], child_error, false))
				continue;
			if (npending == cap)
			{
				cap *= 2;
				pending = repalloc(pending, sizeof(int64) * cap);
			}
			pending[npending++] = children[c];
		}
	}
	return true;
}

Datum
qe_cancel(PG_FUNCTION_ARGS)
{
	int64		run_id = require_run_id(fcinfo);
	Jsonb	   *error = NULL;
	bool		canceled;

	if (!PG_ARGISNULL(1))
		error = cancel_error(PG_GETARG_TEXT_PP(1));

	/* Another tenant's run: as if it did not exist (access.c). */
	if (!qe_access_run(QE_NEED_PRODUCE, run_id))
		qe_access_run_not_found(run_id);

	SPI_connect();
	canceled = qe_cancel_run(run_id, error);
	SPI_finish();
	PG_RETURN_BOOL(canceled);
}
