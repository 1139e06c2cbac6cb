/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *	  Triggering runs: enqueue() and enqueue_batch().  Validates every
 *	  argument before writing, resolves the queue's defaults, applies
 *	  idempotency keys, and records the count delta in the same
 *	  transaction as the insert.
 *
 *-------------------------------------------------------------------------
 */
#include "run_state.h"

#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(qe_enqueue);
PG_FUNCTION_INFO_V1(qe_enqueue_batch);

/* What enqueue needs to know of a queue. */
typedef struct QeQueueInfo
{
	int32		queue_id;
	int32		tenant_id;
	int32		policy_id;
	int32		max_attempts;
	bool		key_limited;	/* has a per-key limit */
	bool		ttl_null;
	Datum		ttl;
} QeQueueInfo;

/* Options shared by enqueue and enqueue_batch, after validation. */
typedef struct QeEnqueueOptions
{
	char	   *queue;
	text	   *concurrency_key;
	int32		priority;
	TimestampTz run_at;
	bool		delayed;
	bool		has_expiry;
	TimestampTz expires_at;
	int32		max_attempts;	/* 0: the queue's */
	Datum		tags;
	bool		tags_null;
	int64		parent_run_id;
	bool		parent_null;
} QeEnqueueOptions;

static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *name, const char *hint)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name),
				 errhint("%s", hint)));
}

static QeQueueInfo
lookup_queue(const char *queue)
{
	const QeQueueDef *def;
	QeQueueInfo info;

	qe_lock_queue_name(queue, false);
	def = qe_queue_def(queue);
	if (def == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", queue),
				 errhint("Create it with queue_engine.create_queue().")));
	qe_access_require_queue(QE_NEED_PRODUCE, queue, def->tenant_id);
	info.queue_id = def->queue_id;
	info.tenant_id = def->tenant_id;
	info.policy_id = def->policy_id;
	info.max_attempts = def->max_attempts;
	info.key_limited = def->key_limit > 0;
	info.ttl_null = def->ttl_null;
	info.ttl = info.ttl_null ? (Datum) 0 : IntervalPGetDatum(&def->ttl);
	return info;
}

/*
 * Validate the options enqueue and enqueue_batch share.  The argument
 * numbers differ between the two; first_opt is that of concurrency_key.
 */
static void
read_options(FunctionCallInfo fcinfo, int first_opt, int tags_arg,
			 QeEnqueueOptions *opt, Interval **ttl_out)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	int			a_key = first_opt,
				a_prio = first_opt + 1,
				a_run_at = first_opt + 2,
				a_delay = first_opt + 3,
				a_ttl = first_opt + 4,
				a_attempts = first_opt + 5;

	require_arg(fcinfo, 0, "queue", "Pass the name of a queue made with create_queue().");
	qe_check_text_bytes(PG_GETARG_DATUM(0), QE_MAX_NAME_BYTES, "queue name",
						"Pass the name of a queue made with create_queue().");
	opt->queue = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(a_key))
		qe_check_text_bytes(PG_GETARG_DATUM(a_key), QE_MAX_CONCURRENCY_KEY_BYTES,
							"concurrency_key",
							"Pass a shorter key that identifies the group, such as an id or a hash of it.");
	opt->concurrency_key = PG_ARGISNULL(a_key) ? NULL : PG_GETARG_TEXT_PP(a_key);

	require_arg(fcinfo, a_prio, "priority", "Omit priority to use 0; higher starts sooner.");
	opt->priority = PG_GETARG_INT32(a_prio);

	if (!PG_ARGISNULL(a_run_at) && !PG_ARGISNULL(a_delay))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run_at and delay cannot both be given"),
				 errhint("Pass run_at for a moment, or delay for an interval from now, not both.")));
	opt->run_at = now;
	if (!PG_ARGISNULL(a_run_at))
	{
		opt->run_at = PG_GETARG_TIMESTAMPTZ(a_run_at);
		if (TIMESTAMP_NOT_FINITE(opt->run_at))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("run_at must be finite"),
					 errhint("Pass a real moment, or omit run_at to run now.")));
	}
	else if (!PG_ARGISNULL(a_delay))
	{
		Interval   *delay = PG_GETARG_INTERVAL_P(a_delay);

		qe_check_interval(delay, "delay", true);
		opt->run_at = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
															  TimestampTzGetDatum(now),
															  IntervalPGetDatum(delay)));
	}
	opt->delayed = opt->run_at > now;

	*ttl_out = NULL;
	if (!PG_ARGISNULL(a_ttl))
	{
		*ttl_out = PG_GETARG_INTERVAL_P(a_ttl);
		qe_check_interval(*ttl_out, "ttl", false);
	}

	opt->max_attempts = 0;
	if (!PG_ARGISNULL(a_attempts))
	{
		opt->max_attempts = PG_GETARG_INT32(a_attempts);
		if (opt->max_attempts <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_attempts must be positive: %d", opt->max_attempts),
					 errhint("Pass at least 1, or omit it to use the queue's max_attempts.")));
	}

	if (!PG_ARGISNULL(tags_arg))
		qe_check_text_array(PG_GETARG_DATUM(tags_arg), "tags", QE_MAX_TAGS,
							QE_MAX_TAG_BYTES, "tag",
							"Pass tags as a plain array such as ARRAY['billing', 'eu'].",
							"Leave nulls out of tags, or pass NULL instead of the whole array for no tags.",
							"Use fewer and shorter tags; keep other data in the payload.");
	opt->tags_null = PG_ARGISNULL(tags_arg);
	opt->tags = opt->tags_null ? (Datum) 0 : PG_GETARG_DATUM(tags_arg);
	opt->parent_null = PG_ARGISNULL(tags_arg + 1);
	opt->parent_run_id = opt->parent_null ? 0 : PG_GETARG_INT64(tags_arg + 1);
}

/* Fill in what comes from the queue: attempts, ttl and hence expiry. */
static void
apply_queue_defaults(QeEnqueueOptions *opt, QeQueueInfo *info, Interval *ttl)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	/* A run keeps max_attempts only when it overrides its policy's. */
	if (opt->max_attempts == info->max_attempts)
		opt->max_attempts = 0;
	if (ttl == NULL && !info->ttl_null)
		ttl = DatumGetIntervalP(info->ttl);
	opt->has_expiry = (ttl != NULL);
	if (ttl != NULL)
		opt->expires_at = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
																  TimestampTzGetDatum(Max(now, opt->run_at)),
																  IntervalPGetDatum(ttl)));
	if (!opt->parent_null)
	{
		static SPIPlanPtr plan = NULL;
		Datum		values[1];

		qe_plan(&plan, QE_SQL_RUN_PLACES("$1") " LIMIT 1",
				1, (Oid[]) {INT8OID});
		values[0] = Int64GetDatum(opt->parent_run_id);
		/* (another tenant's run does not exist for a scoped role: access.c) */
		if (qe_exec(plan, values, NULL, 1) == 0 ||
			!qe_access_run(QE_NEED_READ, opt->parent_run_id))
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("parent run %lld does not exist", (long long) opt->parent_run_id),
					 errhint("Pass as parent_run_id the id of an existing run, or omit it.")));
	}
}

/*
 * Claim an idempotency key for a new run id, or return the id of the live
 * run that already holds it (found = true).
 */
static int64
claim_idempotency_key(int32 tenant_id, text *key, Interval *key_ttl,
					  bool *found)
{
	static SPIPlanPtr claim_plan = NULL;
	static SPIPlanPtr read_plan = NULL;
	Oid			types[3] = {INT4OID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[3];
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	qe_plan(&claim_plan,
			"INSERT INTO queue_engine.idempotency_keys AS k"
			"       (tenant_id, idempotency_key, run_id, expires_at)"
			" VALUES ($1, $2, nextval('queue_engine.runs_run_id_seq'), $3)"
			" ON CONFLICT (tenant_id, idempotency_key) DO UPDATE"
			"   SET run_id = EXCLUDED.run_id, expires_at = EXCLUDED.expires_at"
			" WHERE k.expires_at <= now()"
			" RETURNING run_id",
			3, types);
	values[0] = Int32GetDatum(tenant_id);
	values[1] = PointerGetDatum(key);
	values[2] = DirectFunctionCall2(timestamptz_pl_interval,
									TimestampTzGetDatum(now),
									IntervalPGetDatum(key_ttl));
	if (qe_exec(claim_plan, values, NULL, 1) == 1)
	{
		*found = false;
		return qe_get_int64(0, 1);
	}

	/* A live key: it was committed by now (ON CONFLICT waited for it). */
	qe_plan(&read_plan,
			"SELECT run_id FROM queue_engine.idempotency_keys"
			" WHERE tenant_id = $1 AND idempotency_key = $2",
			2, types);
	if (qe_exec(read_plan, values, NULL, 1) != 1)
		elog(ERROR, "queue_engine: idempotency key vanished while enqueuing");
	*found = true;
	return qe_get_int64(0, 1);
}

/* The column values every run of one enqueue call shares. */
static void
fill_run_values(Datum *values, bool *nulls, QeEnqueueOptions *opt,
				QeQueueInfo *info, text *idem_key)
{
	Datum		meta[QE_META_NFIELDS];
	bool		meta_nulls[QE_META_NFIELDS];
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	bool		key_in_meta;

	for (int c = 0; c < QE_RUN_NCOLS; c++)
	{
		values[c] = (Datum) 0;
		nulls[c] = false;
	}
	values[QE_RUN_RUN_AT] = TimestampTzGetDatum(opt->run_at);
	values[QE_RUN_QUEUE_ID] = Int32GetDatum(info->queue_id);
	values[QE_RUN_POLICY_ID] = Int32GetDatum(info->policy_id);
	values[QE_RUN_PRIORITY] = Int32GetDatum(opt->priority);
	/*
	 * The key: in the column for a delayed run or a queue with a per-key
	 * limit, else in meta (run_state.h, QE_SQL_KEY_OF).  The queue's limit
	 * cannot change meanwhile: setting or clearing it waits for this
	 * transaction's lock on the queue's name (lookup_queue()).
	 */
	key_in_meta = opt->concurrency_key != NULL && !opt->delayed && !info->key_limited;
	values[QE_RUN_CONCURRENCY_KEY] = PointerGetDatum(opt->concurrency_key);
	nulls[QE_RUN_CONCURRENCY_KEY] = (opt->concurrency_key == NULL || key_in_meta);

	/* What most runs lack, in meta (NULL fields: the common case). */
	for (int f = 0; f < QE_META_NFIELDS; f++)
	{
		meta[f] = (Datum) 0;
		meta_nulls[f] = true;
	}
	meta[QE_META_CREATED_AT] = TimestampTzGetDatum(now);
	meta_nulls[QE_META_CREATED_AT] = (now == opt->run_at);
	meta[QE_META_EXPIRES_AT] = TimestampTzGetDatum(opt->expires_at);
	meta_nulls[QE_META_EXPIRES_AT] = !opt->has_expiry;
	meta[QE_META_IDEMPOTENCY_KEY] = PointerGetDatum(idem_key);
	meta_nulls[QE_META_IDEMPOTENCY_KEY] = (idem_key == NULL);
	meta[QE_META_TAGS] = opt->tags;
	meta_nulls[QE_META_TAGS] = opt->tags_null;
	meta[QE_META_PARENT_RUN_ID] = Int64GetDatum(opt->parent_run_id);
	meta_nulls[QE_META_PARENT_RUN_ID] = opt->parent_null;
	meta[QE_META_MAX_ATTEMPTS] = Int32GetDatum(opt->max_attempts);
	meta_nulls[QE_META_MAX_ATTEMPTS] = (opt->max_attempts == 0);
	meta[QE_META_CONCURRENCY_KEY] = PointerGetDatum(opt->concurrency_key);
	meta_nulls[QE_META_CONCURRENCY_KEY] = !key_in_meta;
	values[QE_RUN_META] = qe_form_run_meta(meta, meta_nulls, &nulls[QE_RUN_META]);
}

/*
 * The nrows runs just inserted with these values (and run_ids) became
 * queued, or delayed: their ready key is their shared priority and
 * run_at and the lowest id.
 */
static void
report_enqueued(const Datum *values, bool delayed, const int64 *run_ids,
				int nrows)
{
	QeReadyKey	key;

	if (nrows == 0)
		return;
	key.priority = DatumGetInt32(values[QE_RUN_PRIORITY]);
	key.run_at = DatumGetTimestampTz(values[QE_RUN_RUN_AT]);
	key.run_id = run_ids[0];
	for (int r = 1; r < nrows; r++)
		key.run_id = Min(key.run_id, run_ids[r]);
	qe_run_transitioned(DatumGetInt32(values[QE_RUN_QUEUE_ID]), QE_RUN_NONE,
						delayed ? QE_RUN_DELAYED : QE_RUN_QUEUED, nrows, &key,
						DT_NOEND);
}

/*
 * A tagged run's rows of queue_engine.run_tags, one per distinct tag, in
 * list_runs' order (created_at, run_id), so that a page filtered by tag
 * reads only its page.  Only a 0.2 schema has the table: the caller passes
 * whether it is there (its function has the cancel_on argument).
 */
static void
register_tags(const QeEnqueueOptions *opt, const int64 *ids, int nids)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];

	if (opt->tags_null || nids == 0)
		return;
	qe_plan(&plan,
			"INSERT INTO queue_engine.run_tags (tag, created_at, run_id)"
			" SELECT t.tag, $2, r.id FROM (SELECT DISTINCT tag FROM unnest($1) tag) t,"
			"        unnest($3) r(id)",
			3, (Oid[]) {TEXTARRAYOID, TIMESTAMPTZOID, INT8ARRAYOID});
	values[0] = opt->tags;
	values[1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	values[2] = PointerGetDatum(construct_array((Datum *) ids, nids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	qe_exec(plan, values, NULL, 0);
}

Datum
qe_enqueue(PG_FUNCTION_ARGS)
{
	QeEnqueueOptions opt;
	QeQueueInfo info;
	Interval   *ttl;
	text	   *idem_key = NULL;
	int64		run_id = 0;
	bool		have_id = false;
	char	  **rule_events = NULL;
	Jsonb	  **rule_matches = NULL;
	int			nrules = 0;

	read_options(fcinfo, 2, 10, &opt, &ttl);
	/* cancel_on: checked here, registered with the run (waits.c) */
	if (PG_NARGS() > 12 && !PG_ARGISNULL(12))	/* (a 0.1 schema's has 12) */
		nrules = qe_cancel_on_rules(PG_GETARG_JSONB_P(12), &rule_events, &rule_matches);
	require_arg(fcinfo, 1, "payload", "Pass '{}' for an empty payload.");
	qe_check_jsonb_size(PG_GETARG_DATUM(1), qe_max_payload_bytes, "payload",
						"queue_engine.max_payload_bytes");
	if (!PG_ARGISNULL(8))
	{
		qe_check_text_bytes(PG_GETARG_DATUM(8), QE_MAX_IDEMPOTENCY_KEY_BYTES,
							"idempotency_key",
							"Pass a shorter key, such as a hash (md5 or sha256) of a long one.");
		idem_key = PG_GETARG_TEXT_PP(8);
		require_arg(fcinfo, 9, "idempotency_ttl",
					"Omit idempotency_ttl to keep the key for 1 day.");
		qe_check_interval(PG_GETARG_INTERVAL_P(9), "idempotency_ttl", false);
	}

	SPI_connect();
	info = lookup_queue(opt.queue);
	apply_queue_defaults(&opt, &info, ttl);

	if (idem_key != NULL)
	{
		bool		found;

		run_id = claim_idempotency_key(info.tenant_id, idem_key,
									   PG_GETARG_INTERVAL_P(9), &found);
		if (found)
		{
			SPI_finish();
			PG_RETURN_INT64(run_id);
		}
		have_id = true;
	}

	{
		Datum		values[QE_RUN_NCOLS];
		bool		nulls[QE_RUN_NCOLS];
		Datum		payload = PG_GETARG_DATUM(1);

		fill_run_values(values, nulls, &opt, &info, idem_key);
		qe_insert_runs(values, nulls, opt.delayed, &payload, 1,
					   have_id ? &run_id : NULL, &run_id);
		report_enqueued(values, opt.delayed, &run_id, 1);
		if (PG_NARGS() > 12)
			register_tags(&opt, &run_id, 1);
		if (nrules > 0)
			qe_cancel_on_register(&run_id, 1, info.tenant_id, rule_events,
								  rule_matches, nrules);
	}
	SPI_finish();
	PG_RETURN_INT64(run_id);
}

Datum
qe_enqueue_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	QeEnqueueOptions opt;
	QeQueueInfo info;
	Interval   *ttl;
	ArrayType  *payloads;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	int64	   *ids;
	char	  **rule_events = NULL;
	Jsonb	  **rule_matches = NULL;
	int			nrules = 0;

	read_options(fcinfo, 2, 8, &opt, &ttl);
	if (PG_NARGS() > 10 && !PG_ARGISNULL(10))
		nrules = qe_cancel_on_rules(PG_GETARG_JSONB_P(10), &rule_events, &rule_matches);
	require_arg(fcinfo, 1, "payloads", "Pass an array of jsonb payloads, one per run.");
	payloads = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(payloads) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("payloads must be a one-dimensional array, not %d-dimensional",
						ARR_NDIM(payloads)),
				 errhint("Pass ARRAY['{...}'::jsonb, ...].")));
	deconstruct_array(payloads, JSONBOID, -1, false, TYPALIGN_INT,
					  &elems, &elem_nulls, &nelems);
	for (int i = 0; i < nelems; i++)
	{
		char		what[64];

		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payloads[%d] must not be null", i + 1),
					 errhint("Pass '{}' for an empty payload.")));
		snprintf(what, sizeof(what), "payloads[%d]", i + 1);
		qe_check_jsonb_size(elems[i], qe_max_payload_bytes, what,
							"queue_engine.max_payload_bytes");
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	SPI_connect();
	info = lookup_queue(opt.queue);
	apply_queue_defaults(&opt, &info, ttl);
	if (nelems == 0)
	{
		SPI_finish();
		return (Datum) 0;
	}

	ids = palloc(sizeof(int64) * nelems);
	{
		Datum		values[QE_RUN_NCOLS];
		bool		nulls[QE_RUN_NCOLS];

		fill_run_values(values, nulls, &opt, &info, NULL);
		qe_insert_runs(values, nulls, opt.delayed, elems, nelems, NULL, ids);
		report_enqueued(values, opt.delayed, ids, nelems);
		if (PG_NARGS() > 10)
			register_tags(&opt, ids, nelems);
		if (nrules > 0)
			qe_cancel_on_register(ids, nelems, info.tenant_id, rule_events,
								  rule_matches, nrules);
	}

	/* Ids are taken in array order. */
	for (int i = 0; i < nelems; i++)
	{
		Datum		v = Int64GetDatum(ids[i]);
		bool		isnull = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &v, &isnull);
	}
	SPI_finish();
	return (Datum) 0;
}
