/*-------------------------------------------------------------------------
 *
 * finish.c
 *	  Ending and extending attempts: heartbeat(), complete(),
 *	  complete_batch(), fail() and cancel().  Every one is fenced by the
 *	  attempt number: a call for an attempt that is no longer executing
 *	  changes nothing and says so (false or NULL).  Finishing an attempt
 *	  frees its concurrency slot in the same statement, since slots are the
 *	  executing runs themselves.
 *
 *-------------------------------------------------------------------------
 */
#include "run_state.h"

#include "catalog/pg_type_d.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(qe_heartbeat);
PG_FUNCTION_INFO_V1(qe_complete);
PG_FUNCTION_INFO_V1(qe_complete_batch);
PG_FUNCTION_INFO_V1(qe_fail);
PG_FUNCTION_INFO_V1(qe_cancel);

/*
 * "The run is executing", for statements that find their run by id.  The
 * IS TRUE hides the condition from the planner's partial-index matching:
 * as a plain status = 'executing' it would pick the small runs_executing
 * index and walk every executing run (and, while an old snapshot is open,
 * every finished one still in that index) instead of one primary-key probe.
 */
#define EXECUTING_BY_ID "(r.status = 'executing') IS TRUE"

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

Datum
qe_heartbeat(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
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

	SPI_connect();
	qe_plan(&plan,
			"UPDATE queue_engine.runs r"
			"   SET lease_expires_at = now() + coalesce($3, r.attempt_lease, r.lease)"
			" WHERE r.run_id = $1 AND " EXECUTING_BY_ID
			"   AND ($2::int IS NULL OR r.attempt = $2)"
			" RETURNING r.lease_expires_at",
			3, (Oid[]) {INT8OID, INT4OID, INTERVALOID});
	values[0] = Int64GetDatum(run_id);
	values[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	if (qe_exec(plan, values, nulls, 0) == 0)
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

Datum
qe_complete(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64		run_id = require_run_id(fcinfo);
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		done;
	bool		isnull;

	qe_require_attempt_arg(fcinfo, 2, "complete", "attempt",
						   "Pass the attempt that dequeue() returned: complete(run_id, output, attempt => 1).");
	if (!PG_ARGISNULL(1))
		qe_check_jsonb_size(PG_GETARG_DATUM(1), qe_max_output_bytes, "output",
							"queue_engine.max_output_bytes");

	SPI_connect();
	qe_plan(&plan,
			"UPDATE queue_engine.runs r"
			"   SET status = 'completed', output = $2, finished_at = now(),"
			"       lease_expires_at = NULL"
			" WHERE r.run_id = $1 AND " EXECUTING_BY_ID
			"   AND ($3::int IS NULL OR r.attempt = $3)"
	/* A tenant-scoped role's tenants ($4; NULL: all): access.c */
			"   AND ($4::int[] IS NULL OR r.tenant_id = ANY ($4))"
			" RETURNING r.queue_id",
			4, (Oid[]) {INT8OID, JSONBOID, INT4OID, INT4ARRAYOID});
	values[0] = Int64GetDatum(run_id);
	values[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[3] = PointerGetDatum(qe_access_tenant_array(QE_NEED_WORK));
	nulls[3] = values[3] == (Datum) 0 ? 'n' : ' ';
	done = qe_exec(plan, values, nulls, 0) == 1;
	if (done)
	{
		qe_run_transitioned(DatumGetInt32(qe_get(0, 1, &isnull)),
							QE_RUN_EXECUTING, QE_RUN_COMPLETED, 1, NULL, DT_NOEND);
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
 * The n runs the last statement completed, whose queue ids are its first
 * result column, went from executing to completed; runs of one queue are
 * one move (a batch is almost always from one queue).
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

		if (nmoves > 0 && moves[nmoves - 1].queue_id == queue_id)
		{
			moves[nmoves - 1].nruns++;
			continue;
		}
		moves[nmoves].queue_id = queue_id;
		moves[nmoves].from = QE_RUN_EXECUTING;
		moves[nmoves].to = QE_RUN_COMPLETED;
		moves[nmoves].nruns = 1;
		moves[nmoves].lease_expires_at = DT_NOEND;
		nmoves++;
	}
	qe_runs_transitioned(moves, nmoves);
}

Datum
qe_complete_batch(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr missing_plan = NULL;
	ArrayType  *ids;
	int			nids;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int64		completed = 0;

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

	SPI_connect();
	qe_plan(&plan,
			"UPDATE queue_engine.runs r"
			"   SET status = 'completed', output = u.output, finished_at = now(),"
			"       lease_expires_at = NULL"
			"  FROM unnest($1::bigint[], $2::jsonb[], $3::int[])"
			"       AS u(run_id, output, attempt)"
			" WHERE r.run_id = u.run_id AND " EXECUTING_BY_ID
			"   AND (u.attempt IS NULL OR r.attempt = u.attempt)"
	/* A tenant-scoped role's tenants ($4; NULL: all): access.c */
			"   AND ($4::int[] IS NULL OR r.tenant_id = ANY ($4))"
			" RETURNING r.queue_id",
			4, (Oid[]) {INT8ARRAYOID, JSONBARRAYOID, INT4ARRAYOID, INT4ARRAYOID});
	values[0] = PointerGetDatum(ids);
	values[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[3] = PointerGetDatum(qe_access_tenant_array(QE_NEED_WORK));
	nulls[3] = values[3] == (Datum) 0 ? 'n' : ' ';
	completed = (int64) qe_exec(plan, values, nulls, 0);
	report_completed(completed);

	/* Only on the slow path: is any id not a run at all? */
	if (completed < nids)
	{
		qe_plan(&missing_plan,
				"SELECT u.id FROM unnest($1::bigint[]) AS u(id)"
				" WHERE NOT EXISTS (SELECT 1 FROM queue_engine.runs r WHERE r.run_id = u.id)"
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

Datum
qe_fail(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	int64		run_id = require_run_id(fcinfo);
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	bool		permanent;
	int32		attempt;
	int32		max_attempts;
	int32		queue_id;
	int32		priority;
	Interval   *backoff;
	Interval   *backoff_max;
	QeRunStatus new_status;
	TimestampTz run_at = GetCurrentTransactionStartTimestamp();
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

	SPI_connect();
	qe_plan(&lock_plan,
			"SELECT r.status::text, r.attempt, r.max_attempts, r.queue_id,"
			"       q.retry_backoff, q.retry_backoff_max, r.priority"
			"  FROM queue_engine.runs r"
			"  JOIN queue_engine.queues q ON q.queue_id = r.queue_id"
			" WHERE r.run_id = $1"
			"   FOR NO KEY UPDATE OF r",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(run_id);
	if (qe_exec(lock_plan, values, NULL, 1) == 0)
		qe_check_run_exists(run_id);

	attempt = DatumGetInt32(qe_get(0, 2, &isnull));
	if (qe_run_status_from_label(TextDatumGetCString(qe_get(0, 1, &isnull))) !=
		QE_RUN_EXECUTING ||
		(!PG_ARGISNULL(2) && PG_GETARG_INT32(2) != attempt))
	{
		SPI_finish();
		PG_RETURN_NULL();
	}
	max_attempts = DatumGetInt32(qe_get(0, 3, &isnull));
	queue_id = DatumGetInt32(qe_get(0, 4, &isnull));
	backoff = DatumGetIntervalP(qe_get(0, 5, &isnull));
	backoff_max = DatumGetIntervalP(qe_get(0, 6, &isnull));
	priority = DatumGetInt32(qe_get(0, 7, &isnull));

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

	/* $4: the retry's run_at, or NULL when the run failed for good. */
	qe_plan(&update_plan,
			"UPDATE queue_engine.runs r"
			"   SET status = $2::queue_engine.run_status, last_error = $3,"
			"       run_at = coalesce($4, r.run_at),"
			"       finished_at = CASE WHEN $4 IS NULL THEN now() END,"
			"       lease_expires_at = NULL"
			" WHERE r.run_id = $1",
			4, (Oid[]) {INT8OID, TEXTOID, JSONBOID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(qe_run_status_labels[new_status]);
	values[2] = JsonbPGetDatum(error);
	values[3] = TimestampTzGetDatum(run_at);
	nulls[3] = new_status == QE_RUN_FAILED ? 'n' : ' ';
	qe_exec(update_plan, values, nulls, 0);
	{
		QeReadyKey	key = {priority, run_at, run_id};

		qe_run_transitioned(queue_id, QE_RUN_EXECUTING, new_status, 1, &key,
							DT_NOEND);
	}
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

Datum
qe_cancel(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	int64		run_id = require_run_id(fcinfo);
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	QeRunStatus status;
	int32		queue_id;
	Jsonb	   *error = NULL;

	if (!PG_ARGISNULL(1))
		error = cancel_error(PG_GETARG_TEXT_PP(1));

	/* Another tenant's run: as if it did not exist (access.c). */
	if (!qe_access_run(QE_NEED_PRODUCE, run_id))
		qe_access_run_not_found(run_id);

	SPI_connect();
	qe_plan(&lock_plan,
			"SELECT r.status::text, r.queue_id FROM queue_engine.runs r"
			" WHERE r.run_id = $1 FOR NO KEY UPDATE",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(run_id);
	if (qe_exec(lock_plan, values, NULL, 1) == 0)
		qe_check_run_exists(run_id);
	status = qe_run_status_from_label(TextDatumGetCString(qe_get(0, 1, &isnull)));
	queue_id = DatumGetInt32(qe_get(0, 2, &isnull));
	if (QE_RUN_FINISHED(status))
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}

	qe_plan(&update_plan,
			"UPDATE queue_engine.runs r"
			"   SET status = 'canceled', finished_at = now(), lease_expires_at = NULL,"
			"       last_error = coalesce($2, r.last_error)"
			" WHERE r.run_id = $1",
			2, (Oid[]) {INT8OID, JSONBOID});
	values[1] = error == NULL ? (Datum) 0 : JsonbPGetDatum(error);
	nulls[1] = error == NULL ? 'n' : ' ';
	qe_exec(update_plan, values, nulls, 0);
	qe_run_transitioned(queue_id, status, QE_RUN_CANCELED, 1, NULL, DT_NOEND);
	SPI_finish();
	PG_RETURN_BOOL(true);
}
