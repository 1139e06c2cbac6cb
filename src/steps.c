/*-------------------------------------------------------------------------
 *
 * steps.c
 *	  Durable steps (SPEC "Durable steps"): save_step() records the result
 *	  of a step of an executing run in the caller's transaction, fenced by
 *	  the attempt like complete(), the first result of a step kept;
 *	  get_steps() reads them back, oldest first.  A run's steps live in
 *	  queue_engine.run_steps until retention deletes the run
 *	  (maintenance.c's prune deletes them with it).
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(qe_save_step);
PG_FUNCTION_INFO_V1(qe_get_steps);

Datum
qe_save_step(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int64		run_id;
	bool		saved;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_id must not be null"),
				 errhint("Pass the run_id that dequeue() returned.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("attempt must not be null"),
				 errhint("Pass the attempt that dequeue() returned: save_step(run_id, attempt => 1, step => 'charge').")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("step must not be null"),
				 errhint("Name the step, such as 'charge_card'.")));
	if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("step name must not be empty"),
				 errhint("Name the step, such as 'charge_card'.")));
	qe_check_text_bytes(PG_GETARG_DATUM(2), 200, "step name", "Use a shorter step name.");
	if (!PG_ARGISNULL(3))
		qe_check_jsonb_size(PG_GETARG_DATUM(3), qe_max_output_bytes, "result",
							"queue_engine.max_output_bytes");
	run_id = PG_GETARG_INT64(0);
	/* Another tenant's run: as if it were not executing (access.c). */
	if (!qe_access_run(QE_NEED_WORK, run_id))
		PG_RETURN_BOOL(false);

	/*
	 * Only while the run executes that attempt: the executing row is locked
	 * (KEY SHARE: a heartbeat, which changes no key, goes on; a complete,
	 * fail or cancel waits for this transaction), so the step is never
	 * saved for an attempt that ended meanwhile.  A step saved already
	 * keeps its first result.
	 */
	SPI_connect();
	qe_plan(&plan,
			"WITH e AS (SELECT e.run_id FROM queue_engine.executing e"
			"            WHERE e.run_id = $1 AND e.attempt = $2 FOR KEY SHARE)"
			" INSERT INTO queue_engine.run_steps (run_id, saved_at, step, result)"
			" SELECT e.run_id, clock_timestamp(), $3, $4 FROM e"
			" ON CONFLICT (run_id, step) DO NOTHING"
			" RETURNING 1",
			4, (Oid[]) {INT8OID, INT4OID, TEXTOID, JSONBOID});
	values[0] = Int64GetDatum(run_id);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';
	saved = qe_exec(plan, values, nulls, 0) == 1;
	if (!saved)
		qe_check_run_exists(run_id);
	SPI_finish();
	PG_RETURN_BOOL(saved);
}

Datum
qe_get_steps(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[1];
	int64		run_id;
	uint64		n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_id must not be null"),
				 errhint("Pass the run's id.")));
	run_id = PG_GETARG_INT64(0);
	if (!qe_access_run(QE_NEED_READ, run_id))
		qe_access_run_not_found(run_id);
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	SPI_connect();
	qe_check_run_exists(run_id);
	qe_plan(&plan,
			"SELECT s.step, s.result, s.saved_at FROM queue_engine.run_steps s"
			" WHERE s.run_id = $1 ORDER BY s.saved_at, s.seq",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(run_id);
	n = qe_exec(plan, values, NULL, 0);
	for (uint64 i = 0; i < n; i++)
	{
		Datum		row[3];
		bool		nulls[3];

		for (int c = 0; c < 3; c++)
			row[c] = qe_get(i, c + 1, &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
