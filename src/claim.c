/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  The claim (dequeue.h): the statements that turn a queue's queued runs
 *	  into executing ones, FOR UPDATE SKIP LOCKED, in priority order (from
 *	  the queue's ready hint on), or per concurrency key; and the rows
 *	  handed to dequeue()'s caller.  A claim picks rows of queue_engine.ready
 *	  (both segments, through the parent) with their locks, deletes them by
 *	  ctid and inserts them into the current executing segment, in one
 *	  statement; a claim that rolls back leaves them where they were.  How many runs may start, and which
 *	  slots they take, admission (limits.c) has decided before; the
 *	  claimed runs' move to executing is reported to run_state.c.
 *
 *-------------------------------------------------------------------------
 */
#include "dequeue.h"
#include "metrics.h"
#include "segments.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Column numbers of the claim statements' results (CLAIM_TAIL). */
#define CLAIM_RUN_ID		1
#define CLAIM_ATTEMPT		2
#define CLAIM_PAYLOAD		3
#define CLAIM_KEY			4
#define CLAIM_PRIORITY		5
#define CLAIM_LEASE_EXP		6
#define CLAIM_RUN_AT		7
#define CLAIM_SLOT			8
#define CLAIM_RESUME		9

/*
 * The move of the picked runs (CTE picked: t tableoid, c ctid, id run_id,
 * all locked) from ready into the current executing segment (%1$s), with
 * lease $3 (NULL: the run's), worker $4 and queue_slot SLOT, returning
 * what dequeue() hands out (CLAIM_* columns).
 */
#define CLAIM_MOVE(slot) QE_SQL_TAKE_PICKED("ready") CLAIM_INSERT(slot)

/*
 * The same, when every picked row is in the ready segment %2$s (CTE
 * picked: c ctid only): one DELETE rather than one per segment.
 */
#define CLAIM_MOVE_FROM_SEGMENT(slot) \
	" taken AS (DELETE FROM queue_engine.%2$s r" \
	"   WHERE r.ctid = ANY (ARRAY(SELECT c FROM picked)) RETURNING r.*)" \
	CLAIM_INSERT(slot)

/*
 * The insert of CTE taken's rows into executing segment %1$s (the key in
 * the column there, wherever it was in ready).
 */
#define CLAIM_INSERT(slot) \
	" INSERT INTO queue_engine.%1$s AS e" \
	"   (run_id, run_at, started_at, lease_expires_at, attempt_lease, queue_id," \
	"    policy_id, priority, attempt, queue_slot, payload, concurrency_key," \
	"    worker, meta)" \
	" SELECT r.run_id, r.run_at, now(), now() + coalesce($3, " QE_SQL_LEASE("r", "p") ")," \
	"        coalesce($3, " QE_SQL_LEASE("r", "p") "), r.queue_id, r.policy_id," \
	"        r.priority, " QE_SQL_CLAIM_ATTEMPT("r") ", " slot ", r.payload," \
	"        " QE_SQL_KEY_OF("r") ", $4," \
	"        CASE WHEN (r.meta).concurrency_key IS NULL THEN r.meta" \
	"             ELSE " QE_SQL_META_WITH_KEY("r.meta", "NULL") " END" \
	"   FROM taken r JOIN queue_engine.queue_policies p ON p.policy_id = r.policy_id" \
	" RETURNING e.run_id, e.attempt, e.payload, e.concurrency_key, e.priority," \
	"           e.lease_expires_at, e.run_at, e.queue_slot, (e.meta).resume"

/* A queued run may start unless it never started and its ttl passed. */
#define STARTABLE " AND " QE_SQL_STARTABLE

/* What a pick returns of each run it locked. */
#define PICK_COLUMNS "x.tableoid AS t, x.ctid AS c, x.run_id AS id"

/* Order of claimed rows: priority DESC, run_at, run_id (as in the queue). */
static int
cmp_claimed(const void *a, const void *b)
{
	HeapTuple	x = SPI_tuptable->vals[*(const int *) a];
	HeapTuple	y = SPI_tuptable->vals[*(const int *) b];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	int32		px = DatumGetInt32(SPI_getbinval(x, desc, CLAIM_PRIORITY, &isnull));
	int32		py = DatumGetInt32(SPI_getbinval(y, desc, CLAIM_PRIORITY, &isnull));
	TimestampTz tx,
				ty;
	int64		ix,
				iy;

	if (px != py)
		return (px > py) ? -1 : 1;
	tx = DatumGetTimestampTz(SPI_getbinval(x, desc, CLAIM_RUN_AT, &isnull));
	ty = DatumGetTimestampTz(SPI_getbinval(y, desc, CLAIM_RUN_AT, &isnull));
	if (tx != ty)
		return (tx < ty) ? -1 : 1;
	ix = DatumGetInt64(SPI_getbinval(x, desc, CLAIM_RUN_ID, &isnull));
	iy = DatumGetInt64(SPI_getbinval(y, desc, CLAIM_RUN_ID, &isnull));
	return (ix > iy) - (ix < iy);
}

/*
 * Hand the n runs the claim statement just returned to the caller, in queue
 * order (an UPDATE returns its rows in no particular order), tell admission
 * which slots they took, and report their move to executing.
 */
static void
emit_claimed(QeDequeueCall *call, QeCandidate *q, QeTenant *t, uint64 n)
{
	int		   *order = palloc(sizeof(int) * Max(n, 1));
	TimestampTz lease_min = DT_NOEND;

	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		slot = qe_get((int) i, CLAIM_SLOT, &isnull);

		/* The slots now held by started runs. */
		if (!isnull)
			qe_admit_slot_taken(q, DatumGetInt32(slot));
		order[i] = (int) i;
	}
	if (n > 1)
		qsort(order, n, sizeof(int), cmp_claimed);
	for (uint64 k = 0; k < n; k++)
	{
		int			i = order[k];
		Datum		values[9];
		bool		nulls[9];

		memset(nulls, 0, sizeof(nulls));
		values[0] = qe_get(i, CLAIM_RUN_ID, &nulls[0]);
		values[1] = CStringGetTextDatum(q->queue);
		values[2] = CStringGetTextDatum(t->tenant);
		values[3] = qe_get(i, CLAIM_ATTEMPT, &nulls[3]);
		values[4] = qe_get(i, CLAIM_PAYLOAD, &nulls[4]);
		values[5] = qe_get(i, CLAIM_KEY, &nulls[5]);
		values[6] = qe_get(i, CLAIM_PRIORITY, &nulls[6]);
		values[7] = qe_get(i, CLAIM_LEASE_EXP, &nulls[7]);
		if (!nulls[7] && DatumGetTimestampTz(values[7]) < lease_min)
			lease_min = DatumGetTimestampTz(values[7]);
		/* why a woken run woke (waits.c); NULL on a first start or a retry */
		values[8] = qe_get(i, CLAIM_RESUME, &nulls[8]);
		{
			bool		isnull;
			Datum		run_at = qe_get(i, CLAIM_RUN_AT, &isnull);

			/* (the statement's now(): the transaction's start) */
			if (!isnull)
				qe_metrics_observe(QE_HIST_START_DELAY,
								   GetCurrentTransactionStartTimestamp() -
								   DatumGetTimestampTz(run_at));
		}
		tuplestore_putvalues(call->store, call->desc, values, nulls);
	}
	pfree(order);
	qe_run_transitioned(q->queue_id, QE_RUN_QUEUED, QE_RUN_EXECUTING, (int32) n,
						NULL, lease_min);
}

/*
 * Start the given queued runs of a queue (by ctid and run id; those
 * another worker has not locked or taken meanwhile).  In slot mode the
 * i-th run takes the queue's i-th locked slot.
 */
static uint64
claim_by_ids(QeDequeueCall *call, QeCandidate *q, QeTenant *t,
			 Datum *tids, Datum *ids, int nids)
{
	static SPIPlanPtr plans[2];
	SPIPlanPtr	plan;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	uint64		n;

	plan = qe_plan_segment(plans, QE_FAMILY_EXECUTING,
						   "WITH picked AS MATERIALIZED ("
						   "  SELECT " PICK_COLUMNS " FROM queue_engine.ready x"
						   "   WHERE x.ctid = ANY ($2) AND x.run_id = ANY ($6) AND x.queue_id = $1"
						   "   FOR UPDATE SKIP LOCKED),"
						   CLAIM_MOVE("($5::int[])[array_position($6, r.run_id)]"),
						   6, (Oid[]) {INT4OID, TIDARRAYOID, INTERVALOID, TEXTOID,
							   INT4ARRAYOID, INT8ARRAYOID});
	values[0] = Int32GetDatum(q->queue_id);
	values[1] = PointerGetDatum(construct_array(tids, nids, TIDOID,
												sizeof(ItemPointerData), false,
												TYPALIGN_SHORT));
	values[5] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8,
												true, TYPALIGN_DOUBLE));
	values[2] = call->lease;
	nulls[2] = call->lease_null ? 'n' : ' ';
	values[3] = call->worker;
	nulls[3] = call->worker_null ? 'n' : ' ';
	if (q->assign_slots)
	{
		Datum	   *slot_datums = palloc(sizeof(Datum) * Max(q->nslots, 1));

		for (int i = 0; i < q->nslots; i++)
			slot_datums[i] = Int32GetDatum(q->slots[i]);
		values[4] = PointerGetDatum(construct_array(slot_datums, q->nslots, INT4OID,
													4, true, TYPALIGN_INT));
	}
	else
		nulls[4] = 'n';
	n = qe_exec(plan, values, nulls, 0);
	emit_claimed(call, q, t, n);
	return n;
}

/*
 * The queued runs of queue $1 to claim, up to $2 of them, in priority
 * order, locked: CTE picked (PICK_COLUMNS).  The HINTED form starts at the
 * queue's ready hint (priority $5 from (run_at, run_id) ($6, $7) on, then lower
 * priorities), so it does not walk entries that claims left behind (see
 * dispatch_hints.c).
 */
#define PICKED_FROM_START \
	"picked AS MATERIALIZED (" \
	"  SELECT " PICK_COLUMNS " FROM queue_engine.ready x" \
	"   WHERE x.queue_id = $1 AND x.concurrency_key IS NULL" STARTABLE \
	"   ORDER BY x.priority DESC, x.run_at, x.run_id" \
	"   LIMIT $2 FOR UPDATE SKIP LOCKED)"
#define PICKED_HINTED \
	"at_hint AS (" \
	"  SELECT " PICK_COLUMNS " FROM queue_engine.ready x" \
	"   WHERE x.queue_id = $1 AND x.concurrency_key IS NULL" STARTABLE \
	"     AND x.priority = $5 AND (x.run_at, x.run_id) >= ($6, $7)" \
	"   ORDER BY x.run_at, x.run_id LIMIT $2 FOR UPDATE SKIP LOCKED)," \
	" lower_priority AS (" \
	"  SELECT " PICK_COLUMNS " FROM queue_engine.ready x" \
	"   WHERE x.queue_id = $1 AND x.concurrency_key IS NULL" STARTABLE \
	"     AND x.priority < $5" \
	"   ORDER BY x.priority DESC, x.run_at, x.run_id" \
	"   LIMIT $2 - (SELECT count(*) FROM at_hint) FOR UPDATE SKIP LOCKED)," \
	" picked AS MATERIALIZED (SELECT * FROM at_hint UNION ALL SELECT * FROM lower_priority)"

/*
 * The same picks from the ready segment %2$s alone (CTE picked: c ctid).
 * The hinted one reads only the hint's priority: when it comes up short,
 * the pick from the start follows.
 */
#define PICKED_FROM_START_IN_SEGMENT \
	"picked AS MATERIALIZED (" \
	"  SELECT x.ctid AS c FROM queue_engine.%2$s x" \
	"   WHERE x.queue_id = $1 AND x.concurrency_key IS NULL" STARTABLE \
	"   ORDER BY x.priority DESC, x.run_at, x.run_id" \
	"   LIMIT $2 FOR UPDATE SKIP LOCKED)"
#define PICKED_HINTED_IN_SEGMENT \
	"picked AS MATERIALIZED (" \
	"  SELECT x.ctid AS c FROM queue_engine.%2$s x" \
	"   WHERE x.queue_id = $1 AND x.concurrency_key IS NULL" STARTABLE \
	"     AND x.priority = $5 AND (x.run_at, x.run_id) >= ($6, $7)" \
	"   ORDER BY x.run_at, x.run_id LIMIT $2 FOR UPDATE SKIP LOCKED)"

/*
 * The queue_slot of each run a claim in order starts: none, or (a queue
 * whose runs hold slots) the i-th of the free slots admission locked ($8),
 * the claim taking at most as many runs as there are.
 */
#define SLOT_NONE	"NULL::int"
#define SLOT_NTH	"($8::int[])[row_number() OVER ()]"

/* The statements' parameter types ($1 .. $8). */
static const Oid claim_types[8] = {INT4OID, INT4OID, INTERVALOID, TEXTOID, INT4OID,
TIMESTAMPTZOID, INT8OID, INT4ARRAYOID};

/* The slots admission locked for q that no run took yet, as an int[]. */
static Datum
free_slots(QeCandidate *q)
{
	Datum	   *slots = palloc(sizeof(Datum) * Max(q->nslots, 1));
	int			n = 0;

	for (int i = 0; i < q->nslots; i++)
		if (!q->slot_used[q->slots[i]])
			slots[n++] = Int32GetDatum(q->slots[i]);
	return PointerGetDatum(construct_array(slots, n, INT4OID, 4, true, TYPALIGN_INT));
}

/* Which of a segment's claim statements. */
typedef enum QeSegmentClaim
{
	SEGMENT_CLAIM_HINTED,
	SEGMENT_CLAIM_FROM_START,
	SEGMENT_CLAIM_KINDS
} QeSegmentClaim;

/*
 * The claim without a statement.  Starting the executor for a claim
 * statement (a locking scan feeding a DELETE feeding an INSERT, and the
 * projections between) is most of what a dequeue costs, so the common case
 * (one ready segment holds the queue, READ COMMITTED, nothing on the tables
 * that a heap call would bypass) does what claim_in_segment()'s statement
 * does by hand: it walks the segment's order index from the queue's start
 * or its hint, and deletes each startable row with a heap delete that does
 * not wait, which is the statement's FOR UPDATE SKIP LOCKED without the
 * lock it writes first (a row another claim is deleting, or a cancel holds,
 * is passed over), then inserts the run's executing row (run_insert.c).
 * A row updated since the scan's snapshot (a priority changed by hand)
 * is passed over too, and the statement looks once more for what is left:
 * it follows the update and checks the row again.  Runs come out in the
 * index's order, which is the queue's.
 */

/* A policy's lease, looked up by claim_direct() (one per call and policy). */
typedef struct QePolicyLease
{
	int32		policy_id;		/* 0: none looked up yet */
	Interval	lease;
} QePolicyLease;

static void
policy_lease(QePolicyLease *memo, int32 policy_id, Snapshot snapshot)
{
	Relation	policies;
	Relation	pkey;
	Oid			pkeyoid;
	ScanKeyData key;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		isnull;

	if (memo->policy_id == policy_id)
		return;
	policies = qe_open_table("queue_policies", AccessShareLock);
	pkeyoid = get_relname_relid("queue_policies_pkey", RelationGetNamespace(policies));
	if (!OidIsValid(pkeyoid))
		elog(ERROR, "queue_engine: index queue_engine.queue_policies_pkey is missing");
	pkey = index_open(pkeyoid, AccessShareLock);
	slot = table_slot_create(policies, NULL);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(policy_id));
	scan = qe_index_beginscan(policies, pkey, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	if (!index_getnext_slot(scan, ForwardScanDirection, slot))
		elog(ERROR, "queue_engine: a queued run names policy %d, which does not exist",
			 policy_id);
	memo->lease = *DatumGetIntervalP(slot_getattr(slot,
												  get_attnum(RelationGetRelid(policies), "lease"),
												  &isnull));
	memo->policy_id = policy_id;
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, NoLock);
	table_close(policies, NoLock);
}

/* What claim_direct() works with. */
typedef struct QeDirectClaim
{
	QeDequeueCall *call;
	QeCandidate *q;
	QeTenant   *t;
	Relation	ready;
	AttrNumber	att[QE_RUN_NCOLS];	/* ready's columns */
	QeRowWriter *writer;		/* into the current executing segment */
	Snapshot	snapshot;
	CommandId	cid;
	TimestampTz now;
	const int  *slots;			/* free slots (nslots), in the order runs
								 * take them */
	int			nslots;
	QePolicyLease policy;
	int64		n;				/* runs started */
	TimestampTz lease_min;		/* the earliest lease they got */
	bool		look_again;
	bool		contended;		/* passed over a run another claim took */
} QeDirectClaim;

/*
 * Start the queued run in slot (a row of ready the order index led to) if
 * it is startable and no one else has it; false when passed over.
 */
static bool
claim_row(QeDirectClaim *c, TupleTableSlot *slot)
{
	Datum		exec[QE_EXEC_NCOLS];
	bool		exec_nulls[QE_EXEC_NCOLS];
	Datum		fields[QE_META_NFIELDS];
	bool		field_nulls[QE_META_NFIELDS];
	Datum		out[9];
	bool		out_nulls[9];
	bool		isnull;
	bool		meta_null;
	Datum		meta;
	Interval   *lease;
	ItemPointerData tid;
	TM_FailureData tmfd;
	TM_Result	res;

	(void) slot_getattr(slot, c->att[QE_RUN_CONCURRENCY_KEY], &isnull);
	if (!isnull)
		return false;			/* not the order index's (it is partial) */
	meta = slot_getattr(slot, c->att[QE_RUN_META], &meta_null);
	qe_deform_run_meta(meta, meta_null, fields, field_nulls);
	/* QE_SQL_STARTABLE */
	if (field_nulls[QE_META_ATTEMPT] && !field_nulls[QE_META_EXPIRES_AT] &&
		!(DatumGetTimestampTz(fields[QE_META_EXPIRES_AT]) > c->now))
		return false;

	tid = slot->tts_tid;
	res = table_tuple_delete(c->ready, &tid, c->cid, c->snapshot, InvalidSnapshot,
							 false, &tmfd, false);
	if (res == TM_Updated)
		c->look_again = true;
	if (res == TM_BeingModified || res == TM_Deleted)
		c->contended = true;
	if (res != TM_Ok)
	{
		if (res != TM_BeingModified && res != TM_Updated &&
			res != TM_Deleted && res != TM_SelfModified)
			elog(ERROR, "queue_engine: unexpected result %d claiming a queued run",
				 (int) res);
		return false;			/* another claim's, a cancel's, or gone */
	}

	/* CLAIM_INSERT's row */
	if (!c->call->lease_null)
		lease = DatumGetIntervalP(c->call->lease);
	else if (!field_nulls[QE_META_LEASE])
		lease = DatumGetIntervalP(fields[QE_META_LEASE]);
	else
	{
		policy_lease(&c->policy,
					 DatumGetInt32(slot_getattr(slot, c->att[QE_RUN_POLICY_ID], &isnull)),
					 c->snapshot);
		lease = &c->policy.lease;
	}
	memset(exec_nulls, 0, sizeof(exec_nulls));
	exec[QE_EXEC_RUN_ID] = slot_getattr(slot, c->att[QE_RUN_RUN_ID], &isnull);
	exec[QE_EXEC_RUN_AT] = slot_getattr(slot, c->att[QE_RUN_RUN_AT], &isnull);
	exec[QE_EXEC_STARTED_AT] = TimestampTzGetDatum(c->now);
	exec[QE_EXEC_LEASE_EXPIRES_AT] =
		DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(c->now),
							IntervalPGetDatum(lease));
	exec[QE_EXEC_ATTEMPT_LEASE] = IntervalPGetDatum(lease);
	exec[QE_EXEC_QUEUE_ID] = slot_getattr(slot, c->att[QE_RUN_QUEUE_ID], &isnull);
	exec[QE_EXEC_POLICY_ID] = slot_getattr(slot, c->att[QE_RUN_POLICY_ID], &isnull);
	exec[QE_EXEC_PRIORITY] = slot_getattr(slot, c->att[QE_RUN_PRIORITY], &isnull);
	/* QE_SQL_CLAIM_ATTEMPT: a woken run goes on with the attempt that waited */
	exec[QE_EXEC_ATTEMPT] = Int32GetDatum((field_nulls[QE_META_ATTEMPT] ? 0 :
										   DatumGetInt32(fields[QE_META_ATTEMPT])) +
										  (field_nulls[QE_META_RESUME] ? 1 : 0));
	exec_nulls[QE_EXEC_QUEUE_SLOT] = c->n >= c->nslots;
	exec[QE_EXEC_QUEUE_SLOT] = c->n < c->nslots ? Int32GetDatum(c->slots[c->n]) : (Datum) 0;
	exec[QE_EXEC_PAYLOAD] = slot_getattr(slot, c->att[QE_RUN_PAYLOAD], &isnull);
	/* a payload stored apart: handed out whole (its ready copy is deleted) */
	if (VARATT_IS_EXTERNAL(DatumGetPointer(exec[QE_EXEC_PAYLOAD])))
		exec[QE_EXEC_PAYLOAD] =
			PointerGetDatum(detoast_external_attr((struct varlena *)
												  DatumGetPointer(exec[QE_EXEC_PAYLOAD])));
	/* the key goes back to the column (QE_SQL_KEY_OF), meta keeps the rest */
	exec[QE_EXEC_CONCURRENCY_KEY] = fields[QE_META_CONCURRENCY_KEY];
	exec_nulls[QE_EXEC_CONCURRENCY_KEY] = field_nulls[QE_META_CONCURRENCY_KEY];
	exec[QE_EXEC_WORKER] = c->call->worker;
	exec_nulls[QE_EXEC_WORKER] = c->call->worker_null;
	if (field_nulls[QE_META_CONCURRENCY_KEY])
	{
		exec[QE_EXEC_META] = meta;
		exec_nulls[QE_EXEC_META] = meta_null;
	}
	else
	{
		field_nulls[QE_META_CONCURRENCY_KEY] = true;
		exec[QE_EXEC_META] = qe_form_run_meta(fields, field_nulls,
											  &exec_nulls[QE_EXEC_META]);
	}
	qe_write_row(c->writer, exec, exec_nulls);
	qe_metrics_observe(QE_HIST_START_DELAY,
					   c->now - DatumGetTimestampTz(exec[QE_EXEC_RUN_AT]));

	/* the slot admission gave it, and what dequeue() returns of it */
	if (!exec_nulls[QE_EXEC_QUEUE_SLOT])
		qe_admit_slot_taken(c->q, c->slots[c->n]);
	if (DatumGetTimestampTz(exec[QE_EXEC_LEASE_EXPIRES_AT]) < c->lease_min)
		c->lease_min = DatumGetTimestampTz(exec[QE_EXEC_LEASE_EXPIRES_AT]);
	memset(out_nulls, 0, sizeof(out_nulls));
	out[0] = exec[QE_EXEC_RUN_ID];
	out[1] = CStringGetTextDatum(c->q->queue);
	out[2] = CStringGetTextDatum(c->t->tenant);
	out[3] = exec[QE_EXEC_ATTEMPT];
	out[4] = exec[QE_EXEC_PAYLOAD];
	out[5] = exec[QE_EXEC_CONCURRENCY_KEY];
	out_nulls[5] = exec_nulls[QE_EXEC_CONCURRENCY_KEY];
	out[6] = exec[QE_EXEC_PRIORITY];
	out[7] = exec[QE_EXEC_LEASE_EXPIRES_AT];
	out[8] = fields[QE_META_RESUME];
	out_nulls[8] = field_nulls[QE_META_RESUME];
	tuplestore_putvalues(c->call->store, c->call->desc, out, out_nulls);
	c->n++;
	return true;
}

/*
 * Claim up to want runs of q from ready segment ready_segment by hand: from
 * the hint (priority hint->priority from (run_at, run_id) on) or, hint
 * NULL, from the queue's start; each taking one of the free slots that
 * admission locked in a queue whose runs hold slots.  Returns how many it
 * started (handed out, reported), or -1 when the statement must do it
 * (nothing was done).  *look_again: it passed over a row a concurrent
 * update changed, which the statement should look at.  *contended: it
 * passed over a run another transaction holds or has just deleted (a
 * concurrent claim's, most likely).
 */
static int64
claim_direct(QeDequeueCall *call, QeCandidate *q, QeTenant *t,
			 const QeReadyKey *hint, int ready_segment, int want,
			 bool *look_again, bool *contended)
{
	const char *segment_name = qe_segment_names[QE_FAMILY_READY][ready_segment];
	QeDirectClaim c = {.call = call,.q = q,.t = t,.lease_min = DT_NOEND};
	int		   *slots = palloc(sizeof(int) * Max(q->nslots, 1));
	Relation	order;
	Oid			orderoid;
	TupleTableSlot *slot;
	char		name[NAMEDATALEN];

	*look_again = false;
	*contended = false;
	if (XactIsoLevel != XACT_READ_COMMITTED || XactReadOnly)
		return -1;				/* the statement: its errors, its rechecks */
	/* In a queue whose runs hold slots, the i-th run takes the i-th free one. */
	if (q->assign_slots)
	{
		for (int i = 0; i < q->nslots; i++)
			if (!q->slot_used[q->slots[i]])
				slots[c.nslots++] = q->slots[i];
		want = Min(want, c.nslots);
	}
	c.slots = slots;
	c.ready = qe_try_open_table(segment_name, RowExclusiveLock);
	if (c.ready == NULL)
		return -1;
	snprintf(name, sizeof(name), "%s_order", segment_name);
	orderoid = get_relname_relid(name, RelationGetNamespace(c.ready));
	if (!qe_plain_delete(c.ready) || !OidIsValid(orderoid) ||
		(c.writer = qe_open_executing(qe_current_segment(QE_FAMILY_EXECUTING))) == NULL)
	{
		table_close(c.ready, NoLock);
		return -1;
	}
	order = index_open(orderoid, AccessShareLock);
	qe_column_numbers(c.ready, qe_run_column_names, QE_RUN_NCOLS, c.att);
	slot = table_slot_create(c.ready, NULL);
	c.now = GetCurrentTransactionStartTimestamp();

	/* As a statement would: see what this transaction did so far, anew. */
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	c.snapshot = GetActiveSnapshot();
	c.cid = GetCurrentCommandId(true);

	/*
	 * From the hint: its tie (priority and run_at equal, run_id from the
	 * hint's on), then the rest of its priority; from the start: the whole
	 * queue.  (A scan key on run_at alone would walk every entry of a batch,
	 * one run_at, that claims left behind.)
	 */
	for (int pass = 0; pass < (hint != NULL ? 2 : 1) && c.n < want; pass++)
	{
		ScanKeyData keys[4];
		int			nkeys = 1;
		IndexScanDesc scan;

		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
					Int32GetDatum(q->queue_id));
		if (hint != NULL)
		{
			ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT4EQ,
						Int32GetDatum(hint->priority));
			if (pass == 0)
			{
				ScanKeyInit(&keys[2], 3, BTEqualStrategyNumber, F_TIMESTAMPTZ_EQ,
							TimestampTzGetDatum(hint->run_at));
				ScanKeyInit(&keys[3], 4, BTGreaterEqualStrategyNumber, F_INT8GE,
							Int64GetDatum(hint->run_id));
				nkeys = 4;
			}
			else
			{
				ScanKeyInit(&keys[2], 3, BTGreaterStrategyNumber, F_TIMESTAMPTZ_GT,
							TimestampTzGetDatum(hint->run_at));
				nkeys = 3;
			}
		}
		scan = qe_index_beginscan(c.ready, order, c.snapshot, nkeys, 0);
		index_rescan(scan, keys, nkeys, NULL, 0);
		while (c.n < want && index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			CHECK_FOR_INTERRUPTS();
			(void) claim_row(&c, slot);
		}
		index_endscan(scan);
	}

	ExecDropSingleTupleTableSlot(slot);
	PopActiveSnapshot();
	index_close(order, NoLock);
	qe_close_writer(c.writer);
	table_close(c.ready, NoLock);
	/* Later statements of the transaction see the moves, as after a statement. */
	CommandCounterIncrement();
	qe_run_transitioned(q->queue_id, QE_RUN_QUEUED, QE_RUN_EXECUTING, (int32) c.n,
						NULL, c.lease_min);
	*look_again = c.look_again;
	*contended = c.contended;
	return c.n;
}

/*
 * Claim from ready segment ready_segment alone, inserting into the current
 * executing segment (by hand, or by a statement); hand the runs out.
 * *contended: the claim by hand passed over runs other claims had.
 */
static uint64
claim_in_segment(QeDequeueCall *call, QeCandidate *q, QeTenant *t,
				 QeSegmentClaim kind, int ready_segment,
				 Datum *values, const char *nulls, bool *contended)
{
	/* [kind][slotted][ready segment][executing segment] */
	static SPIPlanPtr plans[SEGMENT_CLAIM_KINDS][2][2][2];
	static const char *const sql[SEGMENT_CLAIM_KINDS][2] = {
		[SEGMENT_CLAIM_HINTED] = {
			"WITH " PICKED_HINTED_IN_SEGMENT "," CLAIM_MOVE_FROM_SEGMENT(SLOT_NONE),
			"WITH " PICKED_HINTED_IN_SEGMENT "," CLAIM_MOVE_FROM_SEGMENT(SLOT_NTH)},
		[SEGMENT_CLAIM_FROM_START] = {
			"WITH " PICKED_FROM_START_IN_SEGMENT "," CLAIM_MOVE_FROM_SEGMENT(SLOT_NONE),
			"WITH " PICKED_FROM_START_IN_SEGMENT "," CLAIM_MOVE_FROM_SEGMENT(SLOT_NTH)},
	};
	int			executing_segment;
	int			slotted = q->assign_slots ? 1 : 0;
	SPIPlanPtr *plan;
	int			want = DatumGetInt32(values[1]);
	QeReadyKey	hint = {.priority = DatumGetInt32(values[4]),
		.run_at = DatumGetTimestampTz(values[5]),.run_id = DatumGetInt64(values[6])};
	int64		direct;
	bool		look_again;
	uint64		n;

	/* By hand first; the statement when that cannot, or to look again. */
	direct = claim_direct(call, q, t, kind == SEGMENT_CLAIM_HINTED ? &hint : NULL,
						  ready_segment, want, &look_again, contended);
	if (direct >= 0 && (!look_again || direct == want))
		return (uint64) direct;
	if (direct > 0)
	{
		values[1] = Int32GetDatum(want - (int) direct);
		if (slotted)
			values[7] = free_slots(q);
	}
	direct = Max(direct, 0);

	executing_segment = qe_current_segment(QE_FAMILY_EXECUTING);
	plan = &plans[kind][slotted][ready_segment][executing_segment];
	if (*plan == NULL)
	{
		char	   *text = psprintf(sql[kind][slotted],
									qe_segment_names[QE_FAMILY_EXECUTING][executing_segment],
									qe_segment_names[QE_FAMILY_READY][ready_segment]);

		qe_plan(plan, text, 8, claim_types);
		pfree(text);
	}
	n = qe_exec(*plan, values, nulls, 0);
	emit_claimed(call, q, t, n);
	return n + (uint64) direct;
}

/*
 * Claim up to want runs of an unkeyed queue in priority order; in a queue
 * whose runs hold slots, each started run takes one of the free slots
 * admission locked (SLOT_NTH).
 */
static uint64
claim_in_order(QeDequeueCall *call, QeCandidate *q, QeTenant *t, int want)
{
	/* [slotted][executing segment] */
	static SPIPlanPtr plans[2][2];
	static SPIPlanPtr hinted_plans[2][2];
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	uint64		n = 0;
	QeReadyKey	hint;
	bool		hinted = qe_ready_hint_get(q->queue_id, &hint);
	int			slotted = q->assign_slots ? 1 : 0;
	int			sole;
	bool		contended = false;

	/*
	 * A hinted claim that comes up short looks from the queue's start as
	 * well: a run moved before the hint behind the engine's back (its
	 * priority raised by an UPDATE, say) is then still found, at the
	 * latest once the runs after the hint are gone.  That walk reads every
	 * entry before the hint, and while a long-open snapshot keeps them
	 * all (every run claimed since it began) it is the slowest part of a
	 * claim; so when the short claim is explained by runs that other
	 * claims took, it is left to one claim a second per queue
	 * (qe_ready_hint_from_start_due()).
	 */
	values[0] = Int32GetDatum(q->queue_id);
	values[1] = Int32GetDatum(want);
	values[2] = call->lease;
	nulls[2] = call->lease_null ? 'n' : ' ';
	values[3] = call->worker;
	nulls[3] = call->worker_null ? 'n' : ' ';
	values[4] = Int32GetDatum(hint.priority);
	values[5] = TimestampTzGetDatum(hint.run_at);
	values[6] = Int64GetDatum(hint.run_id);
	if (slotted)
		values[7] = free_slots(q);
	else
		nulls[7] = 'n';

	/*
	 * Usually one ready segment has every row (rotation empties the other
	 * by TRUNCATE): then statements on that segment alone, whose plans are
	 * a third the size of the parent's (no Merge Append over the parent
	 * and both segments, one DELETE), and starting a plan is most of what
	 * a claim costs.  Rows that reached the other segment meanwhile are
	 * looked for through the parent below.
	 */
	sole = qe_sole_segment(QE_FAMILY_READY);
	if (sole >= 0)
	{
		if (hinted)
			n = claim_in_segment(call, q, t, SEGMENT_CLAIM_HINTED, sole, values, nulls,
								 &contended);
		if (n < (uint64) want &&
			(!hinted || qe_ready_hint_from_start_due(q->queue_id, contended)))
		{
			values[1] = Int32GetDatum(want - (int) n);
			if (slotted && n > 0)
				values[7] = free_slots(q);
			n += claim_in_segment(call, q, t, SEGMENT_CLAIM_FROM_START, sole, values, nulls,
								  &contended);
		}
		if (n == (uint64) want || qe_sole_segment(QE_FAMILY_READY) == sole)
			return n;
		hinted = false;
	}
	if (hinted)
	{
		n = qe_exec(qe_plan_segment(hinted_plans[slotted], QE_FAMILY_EXECUTING,
									slotted ?
									"WITH " PICKED_HINTED "," CLAIM_MOVE(SLOT_NTH) :
									"WITH " PICKED_HINTED "," CLAIM_MOVE(SLOT_NONE),
									8, claim_types),
					values, nulls, 0);
		emit_claimed(call, q, t, n);
	}
	if (n < (uint64) want)
	{
		/* (the runs just started are executing now: this scan skips them) */
		uint64		more;

		values[1] = Int32GetDatum(want - (int) n);
		if (slotted)
			values[7] = free_slots(q);
		more = qe_exec(qe_plan_segment(plans[slotted], QE_FAMILY_EXECUTING,
									   slotted ?
									   "WITH " PICKED_FROM_START "," CLAIM_MOVE(SLOT_NTH) :
									   "WITH " PICKED_FROM_START "," CLAIM_MOVE(SLOT_NONE),
									   8, claim_types),
					   values, nulls, 0);
		emit_claimed(call, q, t, more);
		n += more;
	}
	return n;
}

/* A queued run considered by the keyed path. */
typedef struct QeHead
{
	ItemPointerData tid;		/* where it is in its ready segment */
	int64		run_id;
	int32		priority;
	TimestampTz run_at;
	int			key;			/* index into the key array, -1: keyless */
} QeHead;

/* Where the keyed path stands with a key's admission. */
typedef enum QeKeyState
{
	KEY_UNLOCKED,				/* not asked yet */
	KEY_LOCKED,					/* admitted: its lock held, free counted */
	KEY_REJECTED				/* lock busy, or key full */
} QeKeyState;

/* A concurrency key with queued runs, as seen by the keyed path. */
typedef struct QeKey
{
	text	   *key;
	uint32		hash;
	QeKeyState	state;
	int64		free;			/* slots left, once locked and counted */
} QeKey;

static int
cmp_head(const void *a, const void *b)
{
	const QeHead *x = a;
	const QeHead *y = b;

	if (x->priority != y->priority)
		return (x->priority > y->priority) ? -1 : 1;
	if (x->run_at != y->run_at)
		return (x->run_at < y->run_at) ? -1 : 1;
	return (x->run_id > y->run_id) - (x->run_id < y->run_id);
}

/* Append row of what SPI just returned (run_id, priority, run_at, ctid). */
static void
add_head(QeHead **heads, int *nheads, int *cap, uint64 row, int key)
{
	bool		isnull;

	if (*nheads == *cap)
	{
		*cap *= 2;
		*heads = repalloc(*heads, sizeof(QeHead) * *cap);
	}
	(*heads)[*nheads].run_id = DatumGetInt64(qe_get(row, 1, &isnull));
	(*heads)[*nheads].tid = *(ItemPointer) DatumGetPointer(qe_get(row, 4, &isnull));
	(*heads)[*nheads].priority = DatumGetInt32(qe_get(row, 2, &isnull));
	(*heads)[*nheads].run_at = DatumGetTimestampTz(qe_get(row, 3, &isnull));
	(*heads)[*nheads].key = key;
	(*nheads)++;
}

/* Every row of the last statement a head (key: index in keys[], -1 none). */
static void
collect_heads(QeHead **heads, int *nheads, int *cap, int key)
{
	for (uint64 i = 0; i < SPI_processed; i++)
		add_head(heads, nheads, cap, i, key);
}

/*
 * Claim up to want runs of a queue with a per-key limit.
 *
 * First, without locks, walk the distinct keys that have queued runs (one
 * index probe each, however many runs wait behind a key), and take the
 * heads of every key that looks under its limit, and of the keyless runs.
 * Then go through those heads in priority order and lock each key only
 * when a run of it is about to be taken, recounting under the lock; a key
 * that turns out full is let go at once.  So a dequeue holds locks only on
 * keys it starts runs of, never on keys it merely looked at.
 */
static uint64
claim_keyed(QeDequeueCall *call, QeCandidate *q, QeTenant *t, int want)
{
	static SPIPlanPtr first_key_plan = NULL;
	static SPIPlanPtr next_key_plan = NULL;
	static SPIPlanPtr key_heads_plan = NULL;
	static SPIPlanPtr keyless_plan = NULL;
	Datum		values[4];
	int			cap = 16;
	int			nheads = 0;
	QeHead	   *heads = palloc(sizeof(QeHead) * cap);
	int			keycap = 16;
	int			nkeys = 0;
	QeKey	   *keys = palloc(sizeof(QeKey) * keycap);
	Datum	   *id_datums;
	Datum	   *tid_datums;
	int			take = 0;
	uint64		n;

	qe_plan(&first_key_plan,
			"SELECT x.concurrency_key FROM queue_engine.ready x"
			" WHERE x.queue_id = $1 AND x.concurrency_key IS NOT NULL"
			" ORDER BY x.concurrency_key LIMIT 1",
			1, (Oid[]) {INT4OID});
	qe_plan(&next_key_plan,
			"SELECT x.concurrency_key FROM queue_engine.ready x"
			" WHERE x.queue_id = $1 AND x.concurrency_key > $2"
			" ORDER BY x.concurrency_key LIMIT 1",
			2, (Oid[]) {INT4OID, TEXTOID});

	/*
	 * The keyed heads query orders by concurrency_key first (constant within
	 * it) so that the planner reads the per-key index rather than filtering
	 * the queue's whole ready list; keyless heads are the order index.
	 */
	qe_plan(&key_heads_plan,
			"SELECT x.run_id, x.priority, x.run_at, x.ctid FROM queue_engine.ready x"
			" WHERE x.queue_id = $1 AND x.concurrency_key = $2" STARTABLE
			" ORDER BY x.concurrency_key, x.priority DESC, x.run_at LIMIT $3",
			3, (Oid[]) {INT4OID, TEXTOID, INT4OID});
	/*
	 * Keyless heads: in a queue with a per-key limit, the order index holds
	 * exactly the keyless runs (keyed ones have their key in the column:
	 * src/README.md, "Keys").  A keyed run there with its key in meta was
	 * placed by a retry or promotion that raced with the limit being set;
	 * it is passed over (never started past its key's limit) until
	 * check_consistency moves its key.
	 */
	qe_plan(&keyless_plan,
			"SELECT x.run_id, x.priority, x.run_at, x.ctid FROM queue_engine.ready x"
			" WHERE x.queue_id = $1 AND x.concurrency_key IS NULL" STARTABLE
			"   AND (x.meta).concurrency_key IS NULL"
			" ORDER BY x.priority DESC, x.run_at, x.run_id LIMIT $2",
			2, (Oid[]) {INT4OID, INT4OID});

	/* Phase 1: candidate heads, no locks taken. */
	values[0] = Int32GetDatum(q->queue_id);
	for (;;)
	{
		bool		isnull;
		text	   *key;
		int64		running;

		CHECK_FOR_INTERRUPTS();
		if (nkeys == 0)
			n = qe_exec(first_key_plan, values, NULL, 1);
		else
		{
			values[1] = PointerGetDatum(keys[nkeys - 1].key);
			n = qe_exec(next_key_plan, values, NULL, 1);
		}
		if (n == 0)
			break;
		key = DatumGetTextPCopy(qe_get(0, 1, &isnull));
		if (nkeys == keycap)
		{
			keycap *= 2;
			keys = repalloc(keys, sizeof(QeKey) * keycap);
		}
		keys[nkeys].key = key;
		keys[nkeys].hash = hash_bytes((const unsigned char *) VARDATA_ANY(key),
									  VARSIZE_ANY_EXHDR(key));
		keys[nkeys].state = KEY_UNLOCKED;
		keys[nkeys].free = 0;
		nkeys++;

		running = qe_key_executing(q->queue_id, key);
		if (running >= q->key_limit)
			continue;
		values[1] = PointerGetDatum(key);
		values[2] = Int32GetDatum(Min(want, q->key_limit - running));
		qe_exec(key_heads_plan, values, NULL, 0);
		collect_heads(&heads, &nheads, &cap, nkeys - 1);
	}
	values[1] = Int32GetDatum(want);
	qe_exec(keyless_plan, values, NULL, 0);
	collect_heads(&heads, &nheads, &cap, -1);
	if (nheads == 0)
		return 0;

	/* Phase 2: best heads first, locking each key as it is first used. */
	qsort(heads, nheads, sizeof(QeHead), cmp_head);
	id_datums = palloc(sizeof(Datum) * Min(want, nheads));
	tid_datums = palloc(sizeof(Datum) * Min(want, nheads));
	for (int i = 0; i < nheads && take < want; i++)
	{
		QeKey	   *k;

		if (heads[i].key < 0)
		{
			tid_datums[take] = PointerGetDatum(&heads[i].tid);
			id_datums[take++] = Int64GetDatum(heads[i].run_id);
			continue;
		}
		k = &keys[heads[i].key];
		if (k->state == KEY_UNLOCKED)
		{
			k->free = qe_key_admit(q->queue_id, k->hash, k->key, q->key_limit);
			k->state = k->free > 0 ? KEY_LOCKED : KEY_REJECTED;
		}
		if (k->state == KEY_LOCKED && k->free > 0)
		{
			tid_datums[take] = PointerGetDatum(&heads[i].tid);
			id_datums[take++] = Int64GetDatum(heads[i].run_id);
			k->free--;
		}
	}
	if (take == 0)
		return 0;
	return claim_by_ids(call, q, t, tid_datums, id_datums, take);
}

/* Claim up to want runs of an admitted queue (want > 0). */
uint64
qe_claim(QeDequeueCall *call, QeCandidate *q, QeTenant *t, int want)
{
	if (q->key_limit > 0)
		return claim_keyed(call, q, t, want);
	return claim_in_order(call, q, t, want);
}
