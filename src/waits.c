/*-------------------------------------------------------------------------
 *
 * waits.c
 *	  Waits, events and children (SPEC "Waits, events and children"):
 *	  wait_for_event(), sleep(), wait_for_children() move an executing run
 *	  to queue_engine.waiting_runs, giving up its slot and lease;
 *	  send_event() wakes the waits its event matches and cancels the runs
 *	  whose cancel_on rules it matches; the background task wake_waits
 *	  wakes sleeps and timeouts; a child's last sibling to finish wakes a
 *	  parent waiting for its children; child_runs() pages the children.
 *
 *	  Every wake is one move (wake_runs()): the waiting row deleted, a ready
 *	  row written into the current segment with meta.resume saying why, so
 *	  that the dequeue that starts it hands that out and goes on with the
 *	  same attempt (run_state.h, QE_SQL_CLAIM_ATTEMPT).
 *
 *	  Matching by index.  A wait's match (a JSON object, data @> match) is
 *	  filed under one anchor: the hash of one of its scalar leaves, path
 *	  included (0 when it has none).  Containment keeps every scalar leaf of
 *	  match, at the same path (array positions aside), in the data, so an
 *	  event finds every wait it may match among the waits filed under the
 *	  anchors of its own data's leaves (and 0): one probe of
 *	  waiting_runs_event per leaf, never the waits of other values.  The
 *	  condition (a jsonpath predicate) is evaluated only on waits whose
 *	  match holds, and an error evaluating it is false.
 *
 *	  No event is lost between a wait and a concurrent send: a waiter
 *	  takes its anchor's lock in RowExclusiveLock mode (and the event
 *	  name's shared), which conflicts with a sender's share lock but not
 *	  with other waiters; a sender takes each of its anchors' locks shared (or, with more anchors than
 *	  QE_EVENT_LOCK_ANCHORS, the name's exclusive), both before they read.
 *	  So a send that starts before a wait commits waits for it and then
 *	  sees it, and a wait whose lock comes after a send's sees that event
 *	  through lookback.
 *
 *-------------------------------------------------------------------------
 */
#include "run_state.h"
#include "segments.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(qe_wait_for_event);
PG_FUNCTION_INFO_V1(qe_send_event);
PG_FUNCTION_INFO_V1(qe_sleep);
PG_FUNCTION_INFO_V1(qe_wait_for_children);
PG_FUNCTION_INFO_V1(qe_child_runs);

/* A send with more distinct anchors locks the event name instead. */
#define QE_EVENT_LOCK_ANCHORS 64

/* ----------------------------------------------------------------
 * Anchors
 * ----------------------------------------------------------------
 */

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

static uint64
scalar_hash(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return UINT64CONST(0x6e756c6c);
		case jbvBool:
			return v->val.boolean ? UINT64CONST(0x74727565) : UINT64CONST(0x66616c73);
		case jbvString:
			return hash_bytes_extended((const unsigned char *) v->val.string.val,
									   v->val.string.len, 3);
		case jbvNumeric:
			/* equal numbers of different scales hash alike (1 = 1.0 in jsonb) */
			return DatumGetUInt64(DirectFunctionCall2(hash_numeric_extended,
													  NumericGetDatum(v->val.numeric),
													  Int64GetDatum(4)));
		default:
			return 5;
	}
}

/*
 * The anchors of a jsonb value's scalar leaves: path (object keys, with
 * a mark for "an element of an array", whatever its position) and value.
 * first_only: stop at the first (a wait's match is filed under it).
 * Returns how many, sorted and distinct, in *out.
 */
static int
leaf_anchors(Jsonb *jb, int64 **out, bool first_only)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	StringInfoData path;
	int		   *starts = palloc(sizeof(int) * 8);
	int			depth = 0;
	int			maxdepth = 8;
	int64	   *anchors = palloc(sizeof(int64) * 16);
	int			n = 0;
	int			cap = 16;

	initStringInfo(&path);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
			case WJB_BEGIN_ARRAY:
				if (depth == maxdepth)
				{
					maxdepth *= 2;
					starts = repalloc(starts, sizeof(int) * maxdepth);
				}
				starts[depth++] = path.len;
				if (tok == WJB_BEGIN_ARRAY && !v.val.array.rawScalar)
					appendStringInfoChar(&path, '\x02');
				break;
			case WJB_END_OBJECT:
			case WJB_END_ARRAY:
				path.len = starts[--depth];
				path.data[path.len] = '\0';
				break;
			case WJB_KEY:
				path.len = starts[depth - 1];
				appendStringInfoChar(&path, '\x01');
				appendBinaryStringInfo(&path, v.val.string.val, v.val.string.len);
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				{
					uint64		h = hash_combine64(hash_bytes_extended((const unsigned char *) path.data,
																	   path.len, 7),
												   scalar_hash(&v));

					if (h == 0)
						h = 1;		/* 0 is "no leaf" */
					if (n == cap)
					{
						cap *= 2;
						anchors = repalloc(anchors, sizeof(int64) * cap);
					}
					anchors[n++] = (int64) h;
					if (first_only)
					{
						*out = anchors;
						return n;
					}
				}
				break;
			default:
				break;
		}
	}
	if (n > 1)
	{
		int			k = 1;

		qsort(anchors, n, sizeof(int64), cmp_int64);
		for (int i = 1; i < n; i++)
			if (anchors[i] != anchors[k - 1])
				anchors[k++] = anchors[i];
		n = k;
	}
	*out = anchors;
	return n;
}

/* (tenant, event) hashed: the locks' ids. */
static uint64
event_name_hash(int32 tenant_id, text *event)
{
	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(event),
							   VARSIZE_ANY_EXHDR(event), (uint64) tenant_id);
}

static void
lock_event(uint32 kind, uint64 h, LOCKMODE mode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) h, (uint32) (h >> 32), kind);
	(void) LockAcquire(&tag, mode, false, false);
}

static void
lock_parent(uint32 kind, int64 run_id, LOCKMODE mode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) run_id,
						 (uint32) ((uint64) run_id >> 32), kind);
	(void) LockAcquire(&tag, mode, false, false);
}

/* ----------------------------------------------------------------
 * Input checks
 * ----------------------------------------------------------------
 */

static void
require_not_null(FunctionCallInfo fcinfo, int argno, const char *name,
				 const char *hint)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name),
				 errhint("%s", hint)));
}

/* An event name: not empty, at most 200 bytes. */
static text *
checked_event_name(FunctionCallInfo fcinfo, int argno)
{
	text	   *event;

	require_not_null(fcinfo, argno, "event",
					 "Pass the event's name, such as 'order.paid'.");
	event = PG_GETARG_TEXT_PP(argno);
	if (VARSIZE_ANY_EXHDR(event) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event name must not be empty"),
				 errhint("Pass the event's name, such as 'order.paid'.")));
	qe_check_text_bytes(PointerGetDatum(event), 200, "event name",
						"Use a shorter event name.");
	return event;
}

/* A jsonb value as text for an error's detail: its first 200 bytes. */
static char *
detail_text(Jsonb *value)
{
	char	   *text = JsonbToCString(NULL, &value->root, VARSIZE(value));
	int			len = strlen(text);

	if (len <= 200)
		return text;
	return psprintf("%.*s...", pg_mbcliplen(text, len, 200), text);
}

/*
 * A match: a JSON object.  NULL for none or an empty one: any data (of
 * any type: an empty match holds for an event whose data is an array or a
 * scalar too, which containment alone would not say).
 */
static Jsonb *
checked_match(Jsonb *match, const char *what)
{
	if (match == NULL)
		return NULL;
	if (!JB_ROOT_IS_OBJECT(match))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what),
				 errdetail("%s is %s.", what, detail_text(match)),
				 errhint("Pass an object whose fields the event's data must contain, such as '{\"order_id\": 42}'.")));
	qe_check_jsonb_size(JsonbPGetDatum(match), qe_max_payload_bytes, what,
						"queue_engine.max_payload_bytes");
	if (JB_ROOT_COUNT(match) == 0)
		return NULL;
	return match;
}

/*
 * A condition must be a predicate (a comparison, a boolean combination of
 * them, exists, starts with, like_regex, is unknown, or true/false), so
 * that it says yes or no of each event; a path that selects items would
 * be false for every event.
 */
static void
check_condition(JsonPath *jp)
{
	JsonPathItem v;

	jspInit(&v, jp);
	switch (v.type)
	{
		case jpiAnd:
		case jpiOr:
		case jpiNot:
		case jpiIsUnknown:
		case jpiEqual:
		case jpiNotEqual:
		case jpiLess:
		case jpiGreater:
		case jpiLessOrEqual:
		case jpiGreaterOrEqual:
		case jpiExists:
		case jpiStartsWith:
		case jpiLikeRegex:
		case jpiBool:
			return;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("condition must be a jsonpath predicate"),
					 errdetail("condition is %s.",
							   DatumGetCString(DirectFunctionCall1(jsonpath_out,
																   PointerGetDatum(jp)))),
					 errhint("Write a test of the event's data, such as '$.amount > 100', not a path that selects items such as '$ ? (@.amount > 100)'.")));
	}
}

/*
 * Whether condition holds on data: jsonb_path_match in silent mode (a
 * missing key or a wrong type is false), and any other error evaluating
 * it is false too, so that a condition can never make send_event fail.
 * Canceling the statement is not such an error.
 */
static bool
condition_holds(Jsonb *data, Datum condition)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool result = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		LOCAL_FCINFO(fc, 4);
		Datum		r;

		InitFunctionCallInfoData(*fc, NULL, 4, InvalidOid, NULL, NULL);
		fc->args[0].value = JsonbPGetDatum(data);
		fc->args[0].isnull = false;
		fc->args[1].value = condition;
		fc->args[1].isnull = false;
		fc->args[2].value = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
		fc->args[2].isnull = false;
		fc->args[3].value = BoolGetDatum(true);
		fc->args[3].isnull = false;
		r = jsonb_path_match(fc);
		result = !fc->isnull && DatumGetBool(r);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED || edata->elevel > ERROR)
			ReThrowError(edata);
		FreeErrorData(edata);
		result = false;
	}
	PG_END_TRY();
	return result;
}

/* ----------------------------------------------------------------
 * Waking
 * ----------------------------------------------------------------
 */

/* A woken run keeps its key in ready's column if its queue q has a per-key limit. */
#define WOKEN_KEYED "(q.key_concurrency_limit IS NOT NULL)"

/*
 * Waiting runs $1 (with resumes $2, by position) to the current ready
 * segment (%1$s): queued now, same priority, the attempt that waited
 * (meta.attempt, with resume set: QE_SQL_CLAIM_ATTEMPT) and its start.
 */
#define WAKE_SQL \
	"WITH d AS (DELETE FROM queue_engine.waiting_runs w" \
	"            USING unnest($1::bigint[], $2::jsonb[]) AS u(run_id, resume)" \
	"            WHERE w.run_id = u.run_id" \
	"            RETURNING w.*, u.resume AS new_resume)" \
	" INSERT INTO queue_engine.%1$s" \
	" SELECT d.run_id, now(), d.queue_id, d.policy_id, d.priority, d.payload," \
	"        " QE_SQL_READY_KEY_COLUMN("d.concurrency_key", WOKEN_KEYED) "," \
	QE_SQL_META_R("d.attempt", "nullif(coalesce((d.meta).created_at, d.run_at), now())", \
				  "(d.meta).expires_at", "d.started_at", "d.worker", \
				  "(d.meta).idempotency_key", "(d.meta).tags", "(d.meta).parent_run_id", \
				  "(d.meta).max_attempts", "(d.meta).lease", "(d.meta).last_error", \
				  QE_SQL_READY_KEY_META("d.concurrency_key", WOKEN_KEYED), "d.new_resume") \
	"   FROM d LEFT JOIN queue_engine.queues q ON q.queue_id = d.queue_id" \
	" RETURNING queue_id, priority, run_at, run_id"

/*
 * Wake the waiting runs ids (n, sorted: rows are locked in this order)
 * with resumes; those another transaction woke or canceled meanwhile are
 * passed over.  Reports the moves; returns how many it woke.
 */
static int64
wake_runs(int64 *ids, Jsonb **resumes, int n)
{
	static SPIPlanPtr keyed_plan = NULL;
	static SPIPlanPtr plans[2];
	Datum	   *id_datums;
	Datum	   *resume_datums;
	Datum		values[2];
	uint64		woken;
	QeTransition *moves;

	if (n == 0)
		return 0;
	id_datums = palloc(sizeof(Datum) * n);
	resume_datums = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		id_datums[i] = Int64GetDatum(ids[i]);
		resume_datums[i] = JsonbPGetDatum(resumes[i]);
	}
	values[0] = PointerGetDatum(construct_array(id_datums, n, INT8OID, 8, true,
												TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(resume_datums, n, JSONBOID, -1,
												false, TYPALIGN_INT));

	/* A keyed run into ready: the key placement lock first (limits.c). */
	qe_plan(&keyed_plan,
			"SELECT DISTINCT w.queue_id FROM queue_engine.waiting_runs w"
			" WHERE w.run_id = ANY ($1) AND w.concurrency_key IS NOT NULL",
			1, (Oid[]) {INT8ARRAYOID});
	if (qe_exec(keyed_plan, values, NULL, 0) > 0)
	{
		uint64		nq = SPI_processed;
		int32	   *queue_ids = palloc(sizeof(int32) * nq);

		for (uint64 i = 0; i < nq; i++)
		{
			bool		isnull;

			queue_ids[i] = DatumGetInt32(qe_get(i, 1, &isnull));
		}
		for (uint64 i = 0; i < nq; i++)
			qe_lock_key_placement(queue_ids[i], false);
	}

	woken = qe_exec(qe_plan_segment(plans, QE_FAMILY_READY, WAKE_SQL, 2,
									(Oid[]) {INT8ARRAYOID, JSONBARRAYOID}),
					values, NULL, 0);
	moves = palloc(sizeof(QeTransition) * Max(woken, 1));
	for (uint64 i = 0; i < woken; i++)
	{
		bool		isnull;

		moves[i].queue_id = DatumGetInt32(qe_get(i, 1, &isnull));
		moves[i].from = QE_RUN_WAITING;
		moves[i].to = QE_RUN_QUEUED;
		moves[i].nruns = 1;
		moves[i].key.priority = DatumGetInt32(qe_get(i, 2, &isnull));
		moves[i].key.run_at = DatumGetTimestampTz(qe_get(i, 3, &isnull));
		moves[i].key.run_id = DatumGetInt64(qe_get(i, 4, &isnull));
		moves[i].lease_expires_at = DT_NOEND;
	}
	qe_runs_transitioned(moves, (int) woken);
	return (int64) woken;
}

static Jsonb *
jsonb_of(const char *s)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s)));
}

/* {"kind": "event", "event": ..., "event_id": ..., "data": ...} */
static Jsonb *
event_resume(text *event, int64 event_id, Jsonb *data)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfoString(&s, "{\"kind\": \"event\", \"event\": ");
	escape_json(&s, text_to_cstring(event));
	appendStringInfo(&s, ", \"event_id\": " INT64_FORMAT ", \"data\": ", event_id);
	(void) JsonbToCString(&s, &data->root, VARSIZE(data));
	appendStringInfoChar(&s, '}');
	return jsonb_of(s.data);
}

/* ----------------------------------------------------------------
 * Children
 * ----------------------------------------------------------------
 */

static bool
has_unfinished_child(int64 parent)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	bool		isnull;

	qe_plan(&plan, "SELECT " QE_SQL_UNFINISHED_CHILD("$1"), 1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(parent);
	qe_exec(plan, values, NULL, 1);
	return DatumGetBool(qe_get(0, 1, &isnull));
}

/* {"kind": "children", "completed": n, ...} of parent's children now. */
static Jsonb *
children_resume(int64 parent)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	bool		isnull;

	qe_plan(&plan,
			"SELECT jsonb_build_object('kind', 'children',"
			"         'completed', count(*) FILTER (WHERE f.status = 'completed'),"
			"         'failed', count(*) FILTER (WHERE f.status = 'failed'),"
			"         'canceled', count(*) FILTER (WHERE f.status = 'canceled'),"
			"         'expired', count(*) FILTER (WHERE f.status = 'expired'))"
			"  FROM queue_engine.finished_runs f WHERE (f.meta).parent_run_id = $1",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(parent);
	qe_exec(plan, values, NULL, 1);
	return DatumGetJsonbPCopy(qe_get(0, 1, &isnull));
}

/* Whether run $1 waits for its children. */
static bool
waits_for_children(int64 run_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	qe_plan(&plan,
			"SELECT 1 FROM queue_engine.waiting_runs w WHERE w.run_id = $1 AND w.kind = 'children'",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(run_id);
	return qe_exec(plan, values, NULL, 1) == 1;
}

/*
 * Runs whose parents are parents[] (n, 0 for none) became final in this
 * transaction: wake each parent that waits for its children and has no
 * unfinished child left.  The parent lock, shared here and exclusive in
 * wait_for_children(), orders this against a parent starting to wait; the
 * wake lock, exclusive among the children of a waiting parent, against
 * its other children finishing at the same time (the later one then sees
 * the earlier one final).  The caller is connected to SPI.
 */
void
qe_children_final(int64 *parents, int n)
{
	if (n == 0)
		return;
	if (n > 1)
		qsort(parents, n, sizeof(int64), cmp_int64);
	for (int i = 0; i < n; i++)
	{
		int64		parent = parents[i];
		Jsonb	   *resume;

		if (parent == 0 || (i > 0 && parents[i - 1] == parent))
			continue;
		lock_parent(QE_LOCK_PARENT, parent, ShareLock);
		if (!waits_for_children(parent))
			continue;
		lock_parent(QE_LOCK_PARENT_WAKE, parent, ExclusiveLock);
		/* Statements from here on see what committed before the lock. */
		if (has_unfinished_child(parent))
			continue;
		resume = children_resume(parent);
		(void) wake_runs(&parent, &resume, 1);
	}
}

/*
 * The parents (column col of the last statement's n rows; NULL: none)
 * of runs it made final.
 */
void
qe_children_final_of_result(int col)
{
	uint64		n = SPI_processed;
	int64	   *parents;
	int			k = 0;

	if (n == 0 || SPI_tuptable == NULL || SPI_tuptable->tupdesc->natts < col)
		return;
	parents = palloc(sizeof(int64) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		d = qe_get(i, col, &isnull);

		if (!isnull)
			parents[k++] = DatumGetInt64(d);
	}
	qe_children_final(parents, k);
	pfree(parents);
}

/*
 * The unfinished children of run_id, for cancel's cascade (at most limit).
 */
int
qe_unfinished_children(int64 run_id, int64 **children)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	uint64		n;
	int64	   *ids;

	qe_plan(&plan,
			"SELECT x.run_id FROM queue_engine.executing x WHERE (x.meta).parent_run_id = $1"
			" UNION ALL SELECT x.run_id FROM queue_engine.waiting_runs x WHERE (x.meta).parent_run_id = $1"
			" UNION ALL SELECT x.run_id FROM queue_engine.ready x WHERE (x.meta).parent_run_id = $1"
			" UNION ALL SELECT x.run_id FROM queue_engine.delayed x WHERE (x.meta).parent_run_id = $1",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(run_id);
	n = qe_exec(plan, values, NULL, 0);
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
		ids[i] = qe_get_int64(i, 1);
	*children = ids;
	return (int) n;
}

/* ----------------------------------------------------------------
 * Beginning a wait
 * ----------------------------------------------------------------
 */

typedef enum WaitKind
{
	WAIT_EVENT,
	WAIT_SLEEP,
	WAIT_CHILDREN,
} WaitKind;

static const char *const wait_kind_names[] = {"event", "sleep", "children"};

typedef struct WaitRequest
{
	WaitKind	kind;
	text	   *event;			/* WAIT_EVENT */
	Jsonb	   *match;
	Datum		condition;
	bool		condition_null;
	int64		anchor;
	bool		wake_null;		/* wake_at: sleep's end, or the timeout */
	TimestampTz wake_at;
	bool		lookback;		/* events sent since lookback_from count */
	TimestampTz lookback_from;
} WaitRequest;

/* Returned by begin_wait() when the run is not executing that attempt. */
#define WAIT_NOT_EXECUTING (-1)

/*
 * The first event of the request's tenant and name sent since its
 * lookback_from that matches it, or 0; *data is its data.
 */
static int64
lookback_event(WaitRequest *req, int32 tenant_id, Jsonb **data)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];
	uint64		n;

	qe_plan(&plan,
			"SELECT e.event_id, e.data FROM queue_engine.events e"
			" WHERE e.tenant_id = $1 AND e.event = $2 AND e.sent_at >= $3"
			"   AND ($4::jsonb IS NULL OR e.data @> $4)"
			" ORDER BY e.sent_at, e.event_id",
			4, (Oid[]) {INT4OID, TEXTOID, TIMESTAMPTZOID, JSONBOID});
	values[0] = Int32GetDatum(tenant_id);
	values[1] = PointerGetDatum(req->event);
	values[2] = TimestampTzGetDatum(req->lookback_from);
	values[3] = req->match ? JsonbPGetDatum(req->match) : (Datum) 0;
	n = qe_exec(plan, values, req->match ? NULL : "   n", 0);
	if (n == 0)
		return 0;
	{
		SPITupleTable *tuptable = SPI_tuptable;

		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;
			Jsonb	   *d = DatumGetJsonbP(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc,
														 2, &isnull));

			if (req->condition_null || condition_holds(d, req->condition))
			{
				*data = d;
				return DatumGetInt64(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc,
												   1, &isnull));
			}
		}
	}
	return 0;
}

/*
 * Move run_id, executing attempt, to waiting for req; wake it at once if
 * the wait is already satisfied.  Returns the run's state (waiting or
 * queued), or WAIT_NOT_EXECUTING (nothing changed).
 */
static int
begin_wait(int64 run_id, int32 attempt, WaitRequest *req)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr move_plan = NULL;
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int32		queue_id;
	int32		tenant_id;
	Jsonb	   *resume = NULL;

	/* Another tenant's run: as if it were not executing (access.c). */
	if (!qe_access_run(QE_NEED_WORK, run_id))
		return WAIT_NOT_EXECUTING;

	SPI_connect();
	qe_plan(&find_plan,
			"SELECT e.attempt, q.tenant_id FROM queue_engine.executing e"
			"  JOIN queue_engine.queues q ON q.queue_id = e.queue_id"
			" WHERE e.run_id = $1",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(run_id);
	if (qe_exec(find_plan, values, NULL, 1) == 0)
	{
		qe_check_run_exists(run_id);
		SPI_finish();
		return WAIT_NOT_EXECUTING;
	}
	if (DatumGetInt32(qe_get(0, 1, &isnull)) != attempt)
	{
		SPI_finish();
		return WAIT_NOT_EXECUTING;
	}
	tenant_id = DatumGetInt32(qe_get(0, 2, &isnull));

	/* Before the move, as senders and children lock before they read. */
	if (req->kind == WAIT_EVENT)
	{
		uint64		name = event_name_hash(tenant_id, req->event);

		lock_event(QE_LOCK_EVENT_NAME, name, ShareLock);
		/* (RowExclusiveLock: conflicts with senders' share, not with other waiters) */
		lock_event(QE_LOCK_EVENT_KEY, hash_combine64(name, (uint64) req->anchor),
				   RowExclusiveLock);
	}
	else if (req->kind == WAIT_CHILDREN)
		lock_parent(QE_LOCK_PARENT, run_id, ExclusiveLock);

	/*
	 * The move: the executing row (and with it the slot and the lease) out,
	 * the waiting row in.  The attempt is checked again on the row the
	 * DELETE locks: a rescue or cancel meanwhile leaves nothing to move.
	 */
	qe_plan(&move_plan,
			"WITH d AS (DELETE FROM queue_engine.executing e"
			"            WHERE e.run_id = $1 AND e.attempt = $2 RETURNING e.*)"
			" INSERT INTO queue_engine.waiting_runs"
			"   (run_id, run_at, started_at, since, wake_at, anchor, queue_id, policy_id,"
			"    priority, attempt, tenant_id, payload, kind, event, match, condition,"
			"    concurrency_key, worker, meta)"
			" SELECT d.run_id, d.run_at, d.started_at, clock_timestamp(), $3, $4, d.queue_id,"
			"        d.policy_id, d.priority, d.attempt, $5, d.payload, $6, $7, $8, $9,"
			"        d.concurrency_key, d.worker, d.meta"
			"   FROM d"
			" RETURNING queue_id",
			9, (Oid[]) {INT8OID, INT4OID, TIMESTAMPTZOID, INT8OID, INT4OID, TEXTOID,
				TEXTOID, JSONBOID, JSONPATHOID});
	values[0] = Int64GetDatum(run_id);
	values[1] = Int32GetDatum(attempt);
	values[2] = TimestampTzGetDatum(req->wake_at);
	nulls[2] = req->wake_null ? 'n' : ' ';
	values[3] = Int64GetDatum(req->anchor);
	values[4] = Int32GetDatum(tenant_id);
	values[5] = CStringGetTextDatum(wait_kind_names[req->kind]);
	values[6] = req->event ? PointerGetDatum(req->event) : (Datum) 0;
	nulls[6] = req->event ? ' ' : 'n';
	values[7] = req->match ? JsonbPGetDatum(req->match) : (Datum) 0;
	nulls[7] = req->match ? ' ' : 'n';
	values[8] = req->condition;
	nulls[8] = req->condition_null ? 'n' : ' ';
	if (qe_exec(move_plan, values, nulls, 1) == 0)
	{
		SPI_finish();
		return WAIT_NOT_EXECUTING;	/* finished, canceled or rescued meanwhile */
	}
	queue_id = DatumGetInt32(qe_get(0, 1, &isnull));
	qe_run_transitioned(queue_id, QE_RUN_EXECUTING, QE_RUN_WAITING, 1, NULL, DT_NOEND);

	/* Satisfied already? */
	switch (req->kind)
	{
		case WAIT_EVENT:
			if (req->lookback)
			{
				Jsonb	   *data = NULL;
				int64		event_id = lookback_event(req, tenant_id, &data);

				if (event_id != 0)
					resume = event_resume(req->event, event_id, data);
			}
			break;
		case WAIT_SLEEP:
			if (req->wake_at <= GetCurrentTimestamp())
				resume = jsonb_of("{\"kind\": \"sleep\"}");
			break;
		case WAIT_CHILDREN:
			if (!has_unfinished_child(run_id))
				resume = children_resume(run_id);
			break;
	}
	if (resume != NULL)
		(void) wake_runs(&run_id, &resume, 1);
	SPI_finish();
	return resume != NULL ? QE_RUN_QUEUED : QE_RUN_WAITING;
}

/* run_id and attempt, both required, of a wait function. */
static void
wait_args(FunctionCallInfo fcinfo, const char *func, int64 *run_id, int32 *attempt)
{
	require_not_null(fcinfo, 0, "run_id", "Pass the run_id that dequeue() returned.");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("attempt must not be null"),
				 errhint("Pass the attempt that dequeue() returned: %s(run_id, attempt => 1, ...).",
						 func)));
	*run_id = PG_GETARG_INT64(0);
	*attempt = PG_GETARG_INT32(1);
}

/* Begin the wait; what a wait function returns: the run's state, or NULL. */
static Datum
wait_result(FunctionCallInfo fcinfo, int64 run_id, int32 attempt, WaitRequest *req)
{
	int			status = begin_wait(run_id, attempt, req);

	if (status == WAIT_NOT_EXECUTING)
		PG_RETURN_NULL();
	return DirectFunctionCall2(enum_in, CStringGetDatum(qe_run_status_labels[status]),
							   ObjectIdGetDatum(get_fn_expr_rettype(fcinfo->flinfo)));
}

/* The moment interval arg (checked: not negative) from now, or NULL. */
static bool
deadline_arg(FunctionCallInfo fcinfo, int argno, const char *name, TimestampTz *at)
{
	Interval   *iv;

	if (PG_ARGISNULL(argno))
		return false;
	iv = PG_GETARG_INTERVAL_P(argno);
	qe_check_interval(iv, name, true);
	*at = GetCurrentTimestamp() + qe_interval_usecs(iv);
	return true;
}

Datum
qe_wait_for_event(PG_FUNCTION_ARGS)
{
	WaitRequest req;
	int64		run_id;
	int32		attempt;
	int64	   *anchors;

	wait_args(fcinfo, "wait_for_event", &run_id, &attempt);
	memset(&req, 0, sizeof(req));
	req.kind = WAIT_EVENT;
	req.event = checked_event_name(fcinfo, 2);
	req.match = checked_match(PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3), "match");
	req.condition_null = PG_ARGISNULL(4);
	if (!req.condition_null)
	{
		check_condition(PG_GETARG_JSONPATH_P(4));
		req.condition = PG_GETARG_DATUM(4);
	}
	req.wake_null = !deadline_arg(fcinfo, 5, "timeout", &req.wake_at);
	if (!PG_ARGISNULL(6))
	{
		Interval   *lookback = PG_GETARG_INTERVAL_P(6);

		qe_check_interval(lookback, "lookback", true);
		req.lookback = true;
		req.lookback_from = GetCurrentTimestamp() - qe_interval_usecs(lookback);
	}
	req.anchor = req.match != NULL && leaf_anchors(req.match, &anchors, true) > 0 ?
		anchors[0] : 0;

	return wait_result(fcinfo, run_id, attempt, &req);
}

Datum
qe_sleep(PG_FUNCTION_ARGS)
{
	WaitRequest req;
	int64		run_id;
	int32		attempt;

	wait_args(fcinfo, "sleep", &run_id, &attempt);
	if (PG_ARGISNULL(2) == PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("exactly one of until and duration must be given"),
				 errdetail(PG_ARGISNULL(2) ? "Neither was given." : "Both were given."),
				 errhint("Pass until => a timestamptz, or duration => an interval such as '1 hour'.")));
	memset(&req, 0, sizeof(req));
	req.kind = WAIT_SLEEP;
	req.condition_null = true;
	req.wake_null = false;
	if (!PG_ARGISNULL(2))
	{
		req.wake_at = PG_GETARG_TIMESTAMPTZ(2);
		if (TIMESTAMP_NOT_FINITE(req.wake_at))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("until must be a finite timestamp: %s",
							DatumGetCString(DirectFunctionCall1(timestamptz_out,
																TimestampTzGetDatum(req.wake_at)))),
					 errhint("Pass a moment such as now() + interval '1 day'.")));
	}
	else
		(void) deadline_arg(fcinfo, 3, "duration", &req.wake_at);

	return wait_result(fcinfo, run_id, attempt, &req);
}

Datum
qe_wait_for_children(PG_FUNCTION_ARGS)
{
	WaitRequest req;
	int64		run_id;
	int32		attempt;

	wait_args(fcinfo, "wait_for_children", &run_id, &attempt);
	memset(&req, 0, sizeof(req));
	req.kind = WAIT_CHILDREN;
	req.condition_null = true;
	req.wake_null = !deadline_arg(fcinfo, 2, "timeout", &req.wake_at);

	return wait_result(fcinfo, run_id, attempt, &req);
}

/* ----------------------------------------------------------------
 * send_event
 * ----------------------------------------------------------------
 */

static int32
tenant_id_of(text *tenant)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	bool		isnull;

	qe_plan(&plan, "SELECT t.tenant_id FROM queue_engine.tenants t WHERE t.tenant = $1",
			1, (Oid[]) {TEXTOID});
	values[0] = PointerGetDatum(tenant);
	if (qe_exec(plan, values, NULL, 1) == 0 ||
		!qe_access_tenant(QE_NEED_PRODUCE, DatumGetInt32(qe_get(0, 1, &isnull))))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("tenant \"%s\" does not exist", text_to_cstring(tenant)),
				 errhint("Events are sent to a tenant that has queues: pass its name as tenant => ..., or create a queue in it first.")));
	return DatumGetInt32(qe_get(0, 1, &isnull));
}

/*
 * The event of an idempotency key sent within the retention, or 0; a
 * row of the key that old is deleted (its key is free again).
 */
static int64
event_of_key(int32 tenant_id, text *key)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];

	qe_plan(&plan,
			"WITH old AS (DELETE FROM queue_engine.events e"
			"              WHERE e.tenant_id = $1 AND e.idempotency_key = $2"
			"                AND e.sent_at < clock_timestamp() - make_interval(secs => $3))"
			"SELECT e.event_id FROM queue_engine.events e"
			" WHERE e.tenant_id = $1 AND e.idempotency_key = $2"
			"   AND e.sent_at >= clock_timestamp() - make_interval(secs => $3)",
			3, (Oid[]) {INT4OID, TEXTOID, FLOAT8OID});
	values[0] = Int32GetDatum(tenant_id);
	values[1] = PointerGetDatum(key);
	values[2] = Float8GetDatum((double) qe_event_retention_s);
	return qe_exec(plan, values, NULL, 1) == 1 ? qe_get_int64(0, 1) : 0;
}

/*
 * The runs of tenant_id's waits or cancel rules (table, alias w) on event
 * $2 filed under one of the anchors $3 and whose match holds for data $4:
 * one index probe per anchor.  (LATERAL with OFFSET 0 keeps the probe a
 * parameterized scan on all three columns: planned as one scan with
 * "anchor = ANY ($3)", the generic plan filtered on anchor and read every
 * entry of the event name.)
 */
#define MATCHING_SQL(table, cols, extra) \
	"SELECT " cols " FROM unnest($3::bigint[]) AS a(anchor)," \
	"  LATERAL (SELECT w.* FROM queue_engine." table " w" \
	"            WHERE w.tenant_id = $1 AND w.event = $2 AND w.anchor = a.anchor" extra \
	"           OFFSET 0) w" \
	" WHERE (w.match IS NULL OR $4 @> w.match)"

Datum
qe_send_event(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr waits_plan = NULL;
	static SPIPlanPtr rules_plan = NULL;
	static SPIPlanPtr rules_done_plan = NULL;
	text	   *event = checked_event_name(fcinfo, 0);
	Jsonb	   *data;
	text	   *tenant;
	int32		tenant_id;
	int64		event_id;
	int64		woken = 0;
	int64		canceled = 0;
	int64	   *anchors;
	int			nanchors;
	uint64		name;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum		out[3];
	bool		out_nulls[3] = {false, false, false};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	require_not_null(fcinfo, 1, "data", "Pass the event's data as a jsonb value, such as '{}'.");
	data = PG_GETARG_JSONB_P(1);
	qe_check_jsonb_size(JsonbPGetDatum(data), qe_max_payload_bytes, "data",
						"queue_engine.max_payload_bytes");
	require_not_null(fcinfo, 2, "tenant", "Pass the tenant's name, or omit it for 'default'.");
	tenant = PG_GETARG_TEXT_PP(2);
	if (!PG_ARGISNULL(3))
		qe_check_text_bytes(PG_GETARG_DATUM(3), 1000, "idempotency_key",
							"Use a shorter key, such as a hash of it.");
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	SPI_connect();
	tenant_id = tenant_id_of(tenant);
	if (!PG_ARGISNULL(3) &&
		(event_id = event_of_key(tenant_id, PG_GETARG_TEXT_PP(3))) != 0)
	{
		/* Sent already: nothing more. */
		SPI_finish();
		goto done;
	}

	/*
	 * The locks first (see the file header): a wait still uncommitted on
	 * one of this data's anchors is waited for, and then seen.
	 */
	nanchors = leaf_anchors(data, &anchors, false);
	anchors = repalloc(anchors, sizeof(int64) * (nanchors + 1));
	anchors[nanchors++] = 0;
	name = event_name_hash(tenant_id, event);
	if (nanchors > QE_EVENT_LOCK_ANCHORS)
		lock_event(QE_LOCK_EVENT_NAME, name, ExclusiveLock);
	else
		for (int i = 0; i < nanchors; i++)
			lock_event(QE_LOCK_EVENT_KEY, hash_combine64(name, (uint64) anchors[i]),
					   ShareLock);

	qe_plan(&insert_plan,
			"INSERT INTO queue_engine.events (sent_at, tenant_id, event, data, idempotency_key)"
			" VALUES (clock_timestamp(), $1, $2, $3, $4)"
			" ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
			" RETURNING event_id",
			4, (Oid[]) {INT4OID, TEXTOID, JSONBOID, TEXTOID});
	values[0] = Int32GetDatum(tenant_id);
	values[1] = PointerGetDatum(event);
	values[2] = JsonbPGetDatum(data);
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';
	if (qe_exec(insert_plan, values, nulls, 1) == 0)
	{
		/* The same key, sent by a transaction that committed meanwhile. */
		event_id = event_of_key(tenant_id, PG_GETARG_TEXT_PP(3));
		SPI_finish();
		goto done;
	}
	event_id = qe_get_int64(0, 1);

	values[0] = Int32GetDatum(tenant_id);
	values[1] = PointerGetDatum(event);
	{
		Datum	   *ad = palloc(sizeof(Datum) * nanchors);

		for (int i = 0; i < nanchors; i++)
			ad[i] = Int64GetDatum(anchors[i]);
		values[2] = PointerGetDatum(construct_array(ad, nanchors, INT8OID, 8, true,
													TYPALIGN_DOUBLE));
	}
	values[3] = JsonbPGetDatum(data);

	/* The waits it matches: conditions are checked here, on those alone. */
	qe_plan(&waits_plan,
			MATCHING_SQL("waiting_runs", "w.run_id, w.condition", " AND w.kind = 'event'")
			" ORDER BY w.run_id",
			4, (Oid[]) {INT4OID, TEXTOID, INT8ARRAYOID, JSONBOID});
	if (qe_exec(waits_plan, values, NULL, 0) > 0)
	{
		SPITupleTable *tuptable = SPI_tuptable;
		uint64		n = SPI_processed;
		int64	   *ids = palloc(sizeof(int64) * n);
		Jsonb	  **resumes = palloc(sizeof(Jsonb *) * n);
		Jsonb	   *resume = event_resume(event, event_id, data);
		int			k = 0;

		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;
			Datum		condition = SPI_getbinval(tuptable->vals[i], tuptable->tupdesc,
												  2, &isnull);

			if (isnull || condition_holds(data, condition))
			{
				ids[k] = DatumGetInt64(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc,
													 1, &isnull));
				resumes[k++] = resume;
			}
		}
		woken = wake_runs(ids, resumes, k);
	}

	/* The runs whose cancel_on it matches. */
	qe_plan(&rules_plan,
			"SELECT DISTINCT r.run_id FROM (" MATCHING_SQL("cancel_rules", "w.run_id", "") ") r"
			" ORDER BY r.run_id",
			4, (Oid[]) {INT4OID, TEXTOID, INT8ARRAYOID, JSONBOID});
	if (qe_exec(rules_plan, values, NULL, 0) > 0)
	{
		uint64		n = SPI_processed;
		int64	   *ids = palloc(sizeof(int64) * n);
		Datum	   *id_datums = palloc(sizeof(Datum) * n);
		Jsonb	   *error;
		StringInfoData s;

		for (uint64 i = 0; i < n; i++)
		{
			ids[i] = qe_get_int64(i, 1);
			id_datums[i] = Int64GetDatum(ids[i]);
		}
		initStringInfo(&s);
		appendStringInfoString(&s, "{\"message\": ");
		escape_json(&s, psprintf("canceled: event %s", text_to_cstring(event)));
		appendStringInfoString(&s, ", \"reason\": ");
		escape_json(&s, psprintf("event %s", text_to_cstring(event)));
		appendStringInfo(&s, ", \"canceled\": true, \"event_id\": " INT64_FORMAT "}", event_id);
		error = jsonb_of(s.data);
		for (uint64 i = 0; i < n; i++)
			if (qe_cancel_run(ids[i], error))
				canceled++;
		/* Their rules have done their work. */
		qe_plan(&rules_done_plan,
				"DELETE FROM queue_engine.cancel_rules r WHERE r.run_id = ANY ($1)",
				1, (Oid[]) {INT8ARRAYOID});
		values[4] = PointerGetDatum(construct_array(id_datums, n, INT8OID, 8, true,
													TYPALIGN_DOUBLE));
		qe_exec(rules_done_plan, &values[4], NULL, 0);
	}
	SPI_finish();

done:
	out[0] = Int64GetDatum(event_id);
	out[1] = Int64GetDatum(woken);
	out[2] = Int64GetDatum(canceled);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, out_nulls);
	return (Datum) 0;
}

/* ----------------------------------------------------------------
 * cancel_on
 * ----------------------------------------------------------------
 */

static void
bad_rule(int index, Jsonb *rules, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("cancel_on[%d] is invalid: %s", index, what),
			 errdetail("cancel_on is %s.", detail_text(rules)),
			 errhint("Pass an array of rules such as '[{\"event\": \"order.canceled\", \"match\": {\"order_id\": 42}}]'.")));
}

/*
 * Check cancel_on (an array of {"event": name, "match": object}) and
 * return its rules: event names and matches (NULL match: any data).
 */
int
qe_cancel_on_rules(Jsonb *rules, char ***events, Jsonb ***matches)
{
	int			n;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_ARRAY(rules) || JB_ROOT_IS_SCALAR(rules))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cancel_on must be a JSON array of rules"),
				 errdetail("cancel_on is %s.", detail_text(rules)),
				 errhint("Pass an array of rules such as '[{\"event\": \"order.canceled\", \"match\": {\"order_id\": 42}}]'.")));
	n = JB_ROOT_COUNT(rules);
	if (n > 100)
		bad_rule(101, rules, "at most 100 rules");
	*events = palloc0(sizeof(char *) * Max(n, 1));
	*matches = palloc0(sizeof(Jsonb *) * Max(n, 1));
	it = JsonbIteratorInit(&rules->root);
	tok = JsonbIteratorNext(&it, &v, true);	/* WJB_BEGIN_ARRAY */
	for (int i = 0; i < n; i++)
	{
		JsonbValue *event;
		JsonbValue *match;
		JsonbValue	key;
		int			nkeys;

		tok = JsonbIteratorNext(&it, &v, true);
		if (tok != WJB_ELEM || v.type != jbvBinary ||
			!JsonContainerIsObject(v.val.binary.data))
			bad_rule(i, rules, "a rule must be an object");
		nkeys = JsonContainerSize(v.val.binary.data);
		key.type = jbvString;
		key.val.string.val = "event";
		key.val.string.len = 5;
		event = findJsonbValueFromContainer(v.val.binary.data, JB_FOBJECT, &key);
		if (event == NULL || event->type != jbvString || event->val.string.len == 0)
			bad_rule(i, rules, "\"event\" must be a non-empty string");
		if (event->val.string.len > 200)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("cancel_on[%d] event name of %d bytes exceeds 200 bytes",
							i, event->val.string.len),
					 errhint("Use a shorter event name.")));
		(*events)[i] = pnstrdup(event->val.string.val, event->val.string.len);
		key.val.string.val = "match";
		key.val.string.len = 5;
		match = findJsonbValueFromContainer(v.val.binary.data, JB_FOBJECT, &key);
		if (match != NULL && match->type != jbvNull)
		{
			if (match->type != jbvBinary || !JsonContainerIsObject(match->val.binary.data))
				bad_rule(i, rules, "\"match\" must be an object");
			(*matches)[i] = JsonbValueToJsonb(match);
		}
		if (nkeys != 1 + (match != NULL ? 1 : 0))
			bad_rule(i, rules, "a rule has only \"event\" and \"match\"");
	}
	return n;
}

/* Register the checked rules for runs ids (n) of tenant_id. */
void
qe_cancel_on_register(const int64 *ids, int nids, int32 tenant_id,
					  char **events, Jsonb **matches, int nrules)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *run_ids = palloc(sizeof(Datum) * nids * nrules);
	Datum	   *anchors = palloc(sizeof(Datum) * nids * nrules);
	Datum	   *event_names = palloc(sizeof(Datum) * nids * nrules);
	Datum	   *match_values = palloc(sizeof(Datum) * nids * nrules);
	bool	   *match_nulls = palloc(sizeof(bool) * nids * nrules);
	int			dims[1];
	int			lbs[1] = {1};
	Datum		values[5];
	int			k = 0;

	for (int r = 0; r < nrules; r++)
	{
		Jsonb	   *match = checked_match(matches[r], "cancel_on match");
		int64	   *a;
		int64		anchor = match != NULL && leaf_anchors(match, &a, true) > 0 ? a[0] : 0;

		for (int i = 0; i < nids; i++)
		{
			run_ids[k] = Int64GetDatum(ids[i]);
			anchors[k] = Int64GetDatum(anchor);
			event_names[k] = CStringGetTextDatum(events[r]);
			match_values[k] = match ? JsonbPGetDatum(match) : (Datum) 0;
			match_nulls[k] = match == NULL;
			k++;
		}
	}
	qe_plan(&plan,
			"INSERT INTO queue_engine.cancel_rules (run_id, anchor, tenant_id, event, match)"
			" SELECT u.run_id, u.anchor, $5, u.event, u.match"
			"   FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::jsonb[])"
			"        AS u(run_id, anchor, event, match)",
			5, (Oid[]) {INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, INT4OID});
	values[0] = PointerGetDatum(construct_array(run_ids, k, INT8OID, 8, true, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(anchors, k, INT8OID, 8, true, TYPALIGN_DOUBLE));
	values[2] = PointerGetDatum(construct_array(event_names, k, TEXTOID, -1, false, TYPALIGN_INT));
	dims[0] = k;
	values[3] = PointerGetDatum(construct_md_array(match_values, match_nulls, 1, dims, lbs,
												   JSONBOID, -1, false, TYPALIGN_INT));
	values[4] = Int32GetDatum(tenant_id);
	qe_exec(plan, values, NULL, 0);
}

/* ----------------------------------------------------------------
 * child_runs
 * ----------------------------------------------------------------
 */

Datum
qe_child_runs(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64		run_id;
	int32		page_size;
	Datum		values[3];
	uint64		n;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	require_not_null(fcinfo, 0, "run_id", "Pass the parent run's id.");
	run_id = PG_GETARG_INT64(0);
	page_size = PG_ARGISNULL(2) ? 100 : PG_GETARG_INT32(2);
	if (page_size < 1 || page_size > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("page_size must be between 1 and 1000: %d", page_size),
				 errhint("Page through more children with after_run_id => the last run_id of the previous page.")));
	if (!qe_access_run(QE_NEED_READ, run_id))
		qe_access_run_not_found(run_id);
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	SPI_connect();
	qe_check_run_exists(run_id);

	/*
	 * Each place in run_id order from its parent index, merged: a page
	 * reads page_size entries, however many children the run has.
	 */
	qe_plan(&plan,
			"SELECT c.run_id, c.status, c.output, c.last_error, c.finished_at FROM ("
			"  SELECT x.run_id, 'executing'::queue_engine.run_status AS status, NULL::jsonb AS output,"
			"         (x.meta).last_error, NULL::timestamptz AS finished_at"
			"    FROM queue_engine.executing x WHERE (x.meta).parent_run_id = $1 AND x.run_id > $2"
			"  UNION ALL"
			"  SELECT x.run_id, 'waiting', NULL, (x.meta).last_error, NULL"
			"    FROM queue_engine.waiting_runs x WHERE (x.meta).parent_run_id = $1 AND x.run_id > $2"
			"  UNION ALL"
			"  SELECT x.run_id, 'queued', NULL, (x.meta).last_error, NULL"
			"    FROM queue_engine.ready x WHERE (x.meta).parent_run_id = $1 AND x.run_id > $2"
			"  UNION ALL"
			"  SELECT x.run_id, 'delayed', NULL, (x.meta).last_error, NULL"
			"    FROM queue_engine.delayed x WHERE (x.meta).parent_run_id = $1 AND x.run_id > $2"
			"  UNION ALL"
			"  SELECT x.run_id, x.status, x.output, (x.meta).last_error, x.finished_at"
			"    FROM queue_engine.finished_runs x WHERE (x.meta).parent_run_id = $1 AND x.run_id > $2"
			") c ORDER BY c.run_id LIMIT $3",
			3, (Oid[]) {INT8OID, INT8OID, INT4OID});
	values[0] = Int64GetDatum(run_id);
	values[1] = Int64GetDatum(PG_ARGISNULL(1) ? PG_INT64_MIN : PG_GETARG_INT64(1));
	values[2] = Int32GetDatum(page_size);
	n = qe_exec(plan, values, NULL, 0);
	for (uint64 i = 0; i < n; i++)
	{
		Datum		row[5];
		bool		nulls[5];

		for (int c = 0; c < 5; c++)
			row[c] = qe_get(i, c + 1, &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/* ----------------------------------------------------------------
 * Background tasks
 * ----------------------------------------------------------------
 */

/*
 * Wake up to limit sleeps and waits whose wake_at has passed: a sleep with
 * {"kind": "sleep"}, a wait with {"kind": "timeout", "waited_for": ...}.
 * Waits that a send or a cancel holds are passed over (they are theirs).
 */
int64
qe_task_wake_waits(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	uint64		n;
	int64	   *ids;
	Jsonb	  **resumes;
	Jsonb	   *sleep_resume = jsonb_of("{\"kind\": \"sleep\"}");
	Jsonb	   *event_timeout = jsonb_of("{\"kind\": \"timeout\", \"waited_for\": \"event\"}");
	Jsonb	   *children_timeout = jsonb_of("{\"kind\": \"timeout\", \"waited_for\": \"children\"}");

	qe_plan(&plan,
			"SELECT w.run_id, w.kind FROM queue_engine.waiting_runs w"
			" WHERE w.wake_at <= statement_timestamp()"
			" ORDER BY w.wake_at LIMIT $1 FOR UPDATE SKIP LOCKED",
			1, (Oid[]) {INT4OID});
	values[0] = Int32GetDatum(limit);
	n = qe_exec(plan, values, NULL, 0);
	if (n == 0)
		return 0;
	ids = palloc(sizeof(int64) * n);
	resumes = palloc(sizeof(Jsonb *) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		char	   *kind = TextDatumGetCString(qe_get(i, 2, &isnull));

		ids[i] = qe_get_int64(i, 1);
		resumes[i] = strcmp(kind, "sleep") == 0 ? sleep_resume :
			strcmp(kind, "event") == 0 ? event_timeout : children_timeout;
	}
	/* Sorted, as every waker locks them (they are locked already). */
	(void) wake_runs(ids, resumes, (int) n);
	return (int64) n;
}

/* Delete up to limit events sent more than event_retention ago. */
int64
qe_task_prune_events(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2];

	qe_plan(&plan,
			"WITH due AS (SELECT e.ctid FROM queue_engine.events e"
			"              WHERE e.sent_at < statement_timestamp() - make_interval(secs => $2)"
			"              ORDER BY e.sent_at LIMIT $1),"
			" d AS (DELETE FROM queue_engine.events e USING due WHERE e.ctid = due.ctid RETURNING 1)"
			"SELECT count(*) FROM d",
			2, (Oid[]) {INT4OID, FLOAT8OID});
	values[0] = Int32GetDatum(limit);
	values[1] = Float8GetDatum((double) qe_event_retention_s);
	qe_exec(plan, values, NULL, 1);
	return qe_get_int64(0, 1);
}

/*
 * check_consistency's repair of children_waits_satisfied: wake every run
 * waiting for its children that has no unfinished child left.
 */
int64
qe_wake_satisfied_parents(void)
{
	static SPIPlanPtr plan = NULL;
	uint64		n;
	int64	   *ids;
	Jsonb	  **resumes;

	qe_plan(&plan,
			"SELECT w.run_id FROM queue_engine.waiting_runs w"
			" WHERE w.kind = 'children' AND NOT (" QE_SQL_UNFINISHED_CHILD("w.run_id") ")"
			" ORDER BY w.run_id FOR UPDATE SKIP LOCKED",
			0, NULL);
	n = qe_exec(plan, NULL, NULL, 0);
	ids = palloc(sizeof(int64) * Max(n, 1));
	resumes = palloc(sizeof(Jsonb *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
		ids[i] = qe_get_int64(i, 1);
	for (uint64 i = 0; i < n; i++)
		resumes[i] = children_resume(ids[i]);
	return wake_runs(ids, resumes, (int) n);
}
