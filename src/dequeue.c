/*-------------------------------------------------------------------------
 *
 * dequeue.c
 *	  Executing runs: dequeue().  Claims startable runs with FOR UPDATE
 *	  SKIP LOCKED, serving tenants and, within each tenant, queues in turn,
 *	  and never starting a run that would exceed its queue's, tenant's or
 *	  concurrency key's limit.
 *
 *	  Limits are enforced without counter rows: a limited queue, tenant or
 *	  key is guarded by a transaction-level lock taken with NOWAIT (busy
 *	  means "someone else is starting runs there; skip it"), and its
 *	  executing runs are counted from a partial index whose size is bounded
 *	  by the limit itself.  Unlimited queues take no lock and touch no
 *	  shared row, so their dequeuers run fully in parallel.
 *
 *-------------------------------------------------------------------------
 */
#include "run_state.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(qe_dequeue);

/* A queue that has queued runs and is not paused. */
typedef struct QeCandidate
{
	int32		queue_id;
	int32		tenant_index;	/* into the tenant array */
	char	   *queue;
	int32		limit;			/* 0: unlimited */
	int32		key_limit;		/* 0: unlimited */
	int64		running;		/* counted once under our lock; -1 unknown */
	uint64		exits_seen;		/* its limit hint's exit count, read before counting */
	bool		exhausted;		/* nothing more to get from it this call */
	bool		slot_mode;		/* starts side by side, each under a slot lock */
	bool		assign_slots;	/* new runs take slot numbers (limited queue) */
	bool	   *slot_used;		/* slot_mode: [limit] slots known taken */
	int		   *slots;			/* slot_mode: slots locked for the next claim */
	int			nslots;
} QeCandidate;

typedef struct QeTenant
{
	int32		tenant_id;
	char	   *tenant;
	int32		limit;
	int64		running;		/* -1 until counted */
	bool		locked_out;		/* its lock is busy, or nothing more is startable */
	bool		cycled;			/* all its startable queues visited once */
	bool		held_share;		/* its claim lock, in share mode ... */
	bool		held_exclusive; /* ... or exclusive mode, taken by this call */
	uint64		limit_generation;	/* definitions generation limit was read at */
	int64		claimed;		/* runs this call started in it */
} QeTenant;

/*
 * A queue limit up to this many is held by slots: each executing run of
 * the queue holds one slot number below the limit, taken under a lock of
 * its own, so dequeuers of one limited queue start runs side by side
 * instead of one transaction at a time.  Above it, starts are serialised.
 */
#define QE_MAX_SLOTTED_LIMIT 10000

/* Per-call state handed to the claim helpers. */
typedef struct QeDequeueCall
{
	Tuplestorestate *store;
	TupleDesc	desc;
	Datum		lease;
	bool		lease_null;
	Datum		worker;
	bool		worker_null;
	int			remaining;
} QeDequeueCall;

/*
 * Hold the tenant's claim lock before claiming from any of its queues:
 * shared, or exclusive when the tenant has a limit (its starts are then
 * serialised), taken without waiting (busy: skip the tenant).  A change
 * to a queue or tenant definition takes it exclusive and waits (the row
 * trigger on queues and tenants, qe_definition_change_lock), so when a
 * change commits no claim made under the old definition is still in
 * flight, and a claim that gets the lock after the change sees it once it
 * has processed the change's invalidation (refresh_definitions).
 */
static bool
lock_tenant_for_claims(QeTenant *t)
{
	int			mode = (t->limit > 0) ? ExclusiveLock : ShareLock;

	if (t->held_exclusive || (mode == ShareLock && t->held_share))
		return true;
	if (!qe_try_xact_lock_mode(QE_LOCK_TENANT, (uint32) t->tenant_id, 0, mode))
		return false;
	if (mode == ExclusiveLock)
		t->held_exclusive = true;
	else
		t->held_share = true;
	return true;
}

/*
 * Take the tenant's claim lock, then make sure its limit is the one
 * committed before the lock was had: re-read it when any definition
 * changed since it was read.  False when the lock is busy.
 */
static bool
lock_tenant_fresh(QeTenant *t)
{
	static SPIPlanPtr plan = NULL;

	if (!lock_tenant_for_claims(t))
		return false;
	qe_queue_definitions_refresh();
	while (qe_queue_definitions_generation() != t->limit_generation)
	{
		uint64		generation = qe_queue_definitions_generation();
		Datum		value = Int32GetDatum(t->tenant_id);
		bool		isnull;

		qe_plan(&plan,
				"SELECT coalesce(t.concurrency_limit, 0) FROM queue_engine.tenants t"
				" WHERE t.tenant_id = $1",
				1, (Oid[]) {INT4OID});
		if (qe_exec(plan, &value, NULL, 1) == 0)
			return false;
		t->limit = DatumGetInt32(qe_get(0, 1, &isnull));
		t->limit_generation = generation;
		/* A limit set meanwhile needs the lock in exclusive mode. */
		if (!lock_tenant_for_claims(t))
			return false;
		qe_queue_definitions_refresh();
	}
	return true;
}

/* Let a tenant's claim lock go when this call started nothing in it. */
static void
unlock_tenant_unclaimed(QeTenant *t)
{
	if (t->claimed > 0)
		return;
	if (t->held_share)
		qe_release_xact_lock(QE_LOCK_TENANT, (uint32) t->tenant_id, 0, ShareLock);
	if (t->held_exclusive)
		qe_release_xact_lock(QE_LOCK_TENANT, (uint32) t->tenant_id, 0, ExclusiveLock);
	t->held_share = t->held_exclusive = false;
}

/* Column numbers of the claim statements' results. */
#define CLAIM_RUN_ID		1
#define CLAIM_ATTEMPT		2
#define CLAIM_PAYLOAD		3
#define CLAIM_KEY			4
#define CLAIM_PRIORITY		5
#define CLAIM_LEASE_EXP		6

/* The SET and RETURNING parts both claim statements share. */
#define CLAIM_SET \
	"   SET status = 'executing', attempt = r.attempt + 1, started_at = now()," \
	"       attempt_lease = coalesce($3, r.lease)," \
	"       lease_expires_at = now() + coalesce($3, r.lease), worker = $4"
#define CLAIM_TAIL \
	" RETURNING r.run_id, r.attempt, r.payload, r.concurrency_key, r.priority," \
	"           r.lease_expires_at, r.run_at, r.queue_slot"
#define CLAIM_RUN_AT		7
#define CLAIM_SLOT			8

/* A queued run may start unless it never started and its ttl passed. */
#define STARTABLE " AND " QE_SQL_STARTABLE

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
 * order (an UPDATE returns its rows in no particular order), and report
 * their move to executing.
 */
static void
emit_claimed(QeDequeueCall *call, QeCandidate *q, QeTenant *t, uint64 n)
{
	int		   *order = palloc(sizeof(int) * Max(n, 1));
	TimestampTz lease_min = DT_NOEND;

	for (uint64 i = 0; i < n; i++)
		order[i] = (int) i;
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
		values[8] = (Datum) 0;
		nulls[8] = true;
		tuplestore_putvalues(call->store, call->desc, values, nulls);
	}
	pfree(order);
	qe_run_transitioned(q->queue_id, QE_RUN_QUEUED, QE_RUN_EXECUTING, (int32) n,
						NULL, lease_min);
}

/*
 * Start the given queued runs of a queue (those another worker has not
 * locked meanwhile).  In slot mode the i-th id takes the queue's i-th
 * locked slot.
 */
static uint64
claim_by_ids(QeDequeueCall *call, QeCandidate *q, QeTenant *t,
			 Datum *ids, int nids)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	uint64		n;

	qe_plan(&plan,
			"UPDATE queue_engine.runs r" CLAIM_SET ","
			"       queue_slot = ($5::int[])[array_position($2, r.run_id)]"
			"  WHERE r.run_id = ANY (ARRAY("
			"        SELECT x.run_id FROM queue_engine.runs x"
			"         WHERE x.run_id = ANY ($2) AND x.queue_id = $1"
			"           AND x.status = 'queued'"
			"         FOR UPDATE SKIP LOCKED))"
			CLAIM_TAIL,
			5, (Oid[]) {INT4OID, INT8ARRAYOID, INTERVALOID, TEXTOID, INT4ARRAYOID});
	values[0] = Int32GetDatum(q->queue_id);
	values[1] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8,
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
 * order, locked.  The HINTED form starts at the queue's ready hint
 * (priority $5 from (run_at, run_id) ($6, $7) on, then lower priorities),
 * so it does not
 * walk entries that claims left behind (see dispatch_hints.c).
 */
#define PICK_FROM_START \
	"SELECT x.run_id FROM queue_engine.runs x" \
	" WHERE x.queue_id = $1 AND x.status = 'queued'" STARTABLE \
	" ORDER BY x.priority DESC, x.run_at, x.run_id" \
	" LIMIT $2 FOR UPDATE SKIP LOCKED"
#define PICK_HINTED \
	"WITH at_hint AS (" \
	"  SELECT x.run_id FROM queue_engine.runs x" \
	"   WHERE x.queue_id = $1 AND x.status = 'queued'" STARTABLE \
	"     AND x.priority = $5 AND (x.run_at, x.run_id) >= ($6, $7)" \
	"   ORDER BY x.run_at, x.run_id LIMIT $2 FOR UPDATE SKIP LOCKED)," \
	" lower_priority AS (" \
	"  SELECT x.run_id FROM queue_engine.runs x" \
	"   WHERE x.queue_id = $1 AND x.status = 'queued'" STARTABLE \
	"     AND x.priority < $5" \
	"   ORDER BY x.priority DESC, x.run_at, x.run_id" \
	"   LIMIT $2 - (SELECT count(*) FROM at_hint) FOR UPDATE SKIP LOCKED)" \
	"SELECT run_id FROM at_hint UNION ALL SELECT run_id FROM lower_priority"

/* Claim up to want runs of an unkeyed queue in priority order. */
static uint64
claim_in_order(QeDequeueCall *call, QeCandidate *q, QeTenant *t, int want)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr hinted_plan = NULL;
	static SPIPlanPtr pick_plan = NULL;
	static SPIPlanPtr hinted_pick_plan = NULL;
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	uint64		n;
	QeReadyKey	hint;
	bool		hinted = qe_ready_hint_get(q->queue_id, &hint);

	/*
	 * A hinted claim that comes up short looks from the queue's start as
	 * well: a run moved before the hint behind the engine's back (its
	 * priority raised by an UPDATE, say) is then still found, at the
	 * latest once the runs after the hint are gone.
	 */
	values[0] = Int32GetDatum(q->queue_id);
	values[1] = Int32GetDatum(want);
	values[4] = Int32GetDatum(hint.priority);
	values[5] = TimestampTzGetDatum(hint.run_at);
	values[6] = Int64GetDatum(hint.run_id);
	if (q->assign_slots)
	{
		/* Lock the runs first, then start them with their slots. */
		Datum	   *ids;

		qe_plan(&pick_plan, PICK_FROM_START, 2, (Oid[]) {INT4OID, INT4OID});
		qe_plan(&hinted_pick_plan, PICK_HINTED, 7,
				(Oid[]) {INT4OID, INT4OID, INTERVALOID, TEXTOID, INT4OID, TIMESTAMPTZOID,
			INT8OID});
		n = 0;
		if (hinted)
		{
			nulls[2] = nulls[3] = 'n';
			n = qe_exec(hinted_pick_plan, values, nulls, 0);
		}
		/* (rows the hinted pick locked are ours: this pick sees them again) */
		if (n < (uint64) want)
			n = qe_exec(pick_plan, values, NULL, 0);
		if (n == 0)
			return 0;
		ids = palloc(sizeof(Datum) * n);
		for (uint64 i = 0; i < n; i++)
			ids[i] = Int64GetDatum(qe_get_int64(i, 1));
		return claim_by_ids(call, q, t, ids, (int) n);
	}

	qe_plan(&plan,
			"UPDATE queue_engine.runs r" CLAIM_SET ", queue_slot = NULL"
			"  WHERE r.run_id = ANY (ARRAY(" PICK_FROM_START "))"
			CLAIM_TAIL,
			4, (Oid[]) {INT4OID, INT4OID, INTERVALOID, TEXTOID});
	qe_plan(&hinted_plan,
			"UPDATE queue_engine.runs r" CLAIM_SET ", queue_slot = NULL"
			"  WHERE r.run_id = ANY (ARRAY(" PICK_HINTED "))"
			CLAIM_TAIL,
			7, (Oid[]) {INT4OID, INT4OID, INTERVALOID, TEXTOID, INT4OID, TIMESTAMPTZOID,
		INT8OID});
	values[2] = call->lease;
	nulls[2] = call->lease_null ? 'n' : ' ';
	values[3] = call->worker;
	nulls[3] = call->worker_null ? 'n' : ' ';
	n = 0;
	if (hinted)
	{
		n = qe_exec(hinted_plan, values, nulls, 0);
		emit_claimed(call, q, t, n);
	}
	if (n < (uint64) want)
	{
		/* (the runs just started are executing now: this scan skips them) */
		uint64		more;

		values[1] = Int32GetDatum(want - (int) n);
		more = qe_exec(plan, values, nulls, 0);
		emit_claimed(call, q, t, more);
		n += more;
	}
	return n;
}

/* A queued run considered by the keyed path. */
typedef struct QeHead
{
	int64		run_id;
	int32		priority;
	TimestampTz run_at;
	int			key;			/* index into the key array, -1: keyless */
} QeHead;

/* A concurrency key with queued runs, as seen by the keyed path. */
typedef struct QeKey
{
	text	   *key;
	uint32		hash;
	int			state;			/* KEY_UNLOCKED, KEY_LOCKED or KEY_REJECTED */
	int64		free;			/* slots left, once locked and counted */
} QeKey;

#define KEY_UNLOCKED	0
#define KEY_LOCKED		1
#define KEY_REJECTED	2

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

/*
 * The keyed heads query orders by concurrency_key first (constant within
 * it) so that the planner reads the per-key index rather than filtering the
 * queue's whole ready list; keyless heads have an index of their own.
 */

/* Append the heads SPI just returned (run_id, priority, run_at). */
static void
collect_heads(QeHead **heads, int *nheads, int *cap, int key)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		if (*nheads == *cap)
		{
			*cap *= 2;
			*heads = repalloc(*heads, sizeof(QeHead) * *cap);
		}
		(*heads)[*nheads].run_id = DatumGetInt64(qe_get(i, 1, &isnull));
		(*heads)[*nheads].priority = DatumGetInt32(qe_get(i, 2, &isnull));
		(*heads)[*nheads].run_at = DatumGetTimestampTz(qe_get(i, 3, &isnull));
		(*heads)[*nheads].key = key;
		(*nheads)++;
	}
}

static int64
count_key_executing(int32 queue_id, text *key)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2];

	qe_plan(&plan,
			"SELECT count(*) FROM queue_engine.runs x"
			" WHERE x.queue_id = $1 AND x.concurrency_key = $2"
			"   AND x.status = 'executing'",
			2, (Oid[]) {INT4OID, TEXTOID});
	values[0] = Int32GetDatum(queue_id);
	values[1] = PointerGetDatum(key);
	qe_exec(plan, values, NULL, 1);
	return qe_get_int64(0, 1);
}

static void
release_key_lock(int32 queue_id, QeKey *k)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) queue_id, k->hash, QE_LOCK_KEY);
	LockRelease(&tag, ExclusiveLock, false);
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
	static SPIPlanPtr nokey_heads_plan = NULL;
	Datum		values[4];
	int			cap = 16;
	int			nheads = 0;
	QeHead	   *heads = palloc(sizeof(QeHead) * cap);
	int			keycap = 16;
	int			nkeys = 0;
	QeKey	   *keys = palloc(sizeof(QeKey) * keycap);
	Datum	   *id_datums;
	int			take = 0;
	uint64		n;

	qe_plan(&first_key_plan,
			"SELECT x.concurrency_key FROM queue_engine.runs x"
			" WHERE x.queue_id = $1 AND x.status = 'queued'"
			"   AND x.concurrency_key IS NOT NULL"
			" ORDER BY x.concurrency_key LIMIT 1",
			1, (Oid[]) {INT4OID});
	qe_plan(&next_key_plan,
			"SELECT x.concurrency_key FROM queue_engine.runs x"
			" WHERE x.queue_id = $1 AND x.status = 'queued'"
			"   AND x.concurrency_key > $2"
			" ORDER BY x.concurrency_key LIMIT 1",
			2, (Oid[]) {INT4OID, TEXTOID});
	qe_plan(&key_heads_plan,
			"SELECT x.run_id, x.priority, x.run_at FROM queue_engine.runs x"
			" WHERE x.queue_id = $1 AND x.concurrency_key = $2"
			"   AND x.status = 'queued'" STARTABLE
			" ORDER BY x.concurrency_key, x.priority DESC, x.run_at, x.run_id LIMIT $3",
			3, (Oid[]) {INT4OID, TEXTOID, INT4OID});
	qe_plan(&nokey_heads_plan,
			"SELECT x.run_id, x.priority, x.run_at FROM queue_engine.runs x"
			" WHERE x.queue_id = $1 AND x.concurrency_key IS NULL"
			"   AND x.status = 'queued'" STARTABLE
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

		running = count_key_executing(q->queue_id, key);
		if (running >= q->key_limit)
			continue;
		values[1] = PointerGetDatum(key);
		values[2] = Int32GetDatum(Min(want, q->key_limit - running));
		qe_exec(key_heads_plan, values, NULL, 0);
		collect_heads(&heads, &nheads, &cap, nkeys - 1);
	}
	values[1] = Int32GetDatum(want);
	qe_exec(nokey_heads_plan, values, NULL, 0);
	collect_heads(&heads, &nheads, &cap, -1);
	if (nheads == 0)
		return 0;

	/* Phase 2: best heads first, locking each key as it is first used. */
	qsort(heads, nheads, sizeof(QeHead), cmp_head);
	id_datums = palloc(sizeof(Datum) * Min(want, nheads));
	for (int i = 0; i < nheads && take < want; i++)
	{
		QeKey	   *k;

		if (heads[i].key < 0)
		{
			id_datums[take++] = Int64GetDatum(heads[i].run_id);
			continue;
		}
		k = &keys[heads[i].key];
		if (k->state == KEY_UNLOCKED)
		{
			if (!qe_try_xact_lock(QE_LOCK_KEY, (uint32) q->queue_id, k->hash))
				k->state = KEY_REJECTED;
			else
			{
				k->free = q->key_limit - count_key_executing(q->queue_id, k->key);
				k->state = KEY_LOCKED;
				if (k->free <= 0)
				{
					release_key_lock(q->queue_id, k);
					k->state = KEY_REJECTED;
				}
			}
		}
		if (k->state == KEY_LOCKED && k->free > 0)
		{
			id_datums[take++] = Int64GetDatum(heads[i].run_id);
			k->free--;
		}
	}
	if (take == 0)
		return 0;
	return claim_by_ids(call, q, t, id_datums, take);
}

/* Executing runs of one queue, or of all a tenant's queues. */
static int64
count_executing(bool tenant, int32 id)
{
	static SPIPlanPtr queue_plan = NULL;
	static SPIPlanPtr tenant_plan = NULL;
	Datum		values[1];

	qe_plan(&queue_plan,
			"SELECT count(*) FROM queue_engine.runs x"
			" WHERE x.queue_id = $1 AND x.status = 'executing'",
			1, (Oid[]) {INT4OID});
	qe_plan(&tenant_plan,
			"SELECT count(*) FROM queue_engine.runs x"
			" WHERE x.status = 'executing' AND x.queue_id = ANY (ARRAY("
			"   SELECT q.queue_id FROM queue_engine.queues q WHERE q.tenant_id = $1))",
			1, (Oid[]) {INT4OID});
	values[0] = Int32GetDatum(id);
	qe_exec(tenant ? tenant_plan : queue_plan, values, NULL, 1);
	return qe_get_int64(0, 1);
}

/*
 * The slots of a limited queue's executing runs, read with a fresh
 * snapshot: marks them in used[] and returns how many runs execute.
 * *out_of_range says that some run holds no slot below the limit (it
 * started before the queue had this limit, or above a lowered one).
 */
static int64
read_queue_slots(QeCandidate *q, bool *used, bool *out_of_range)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	uint64		n;

	qe_plan(&plan,
			"SELECT x.queue_slot FROM queue_engine.runs x"
			" WHERE x.queue_id = $1 AND x.status = 'executing'",
			1, (Oid[]) {INT4OID});
	values[0] = Int32GetDatum(q->queue_id);
	n = qe_exec(plan, values, NULL, 0);
	memset(used, 0, sizeof(bool) * q->limit);
	*out_of_range = false;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int32		slot = DatumGetInt32(qe_get((int) i, 1, &isnull));

		if (isnull || slot < 0 || slot >= q->limit || used[slot])
			*out_of_range = true;
		else
			used[slot] = true;
	}
	return (int64) n;
}

/*
 * The slot this backend's last start in a limited queue took: when the
 * worker has finished that run, it is the slot most likely free for the
 * worker's next dequeue, and other workers are unlikely to try it first.
 */
static int32 last_slot_queue_id = 0;
static int	last_slot = -1;

/*
 * Lock up to want free slots of a queue in slot mode, without waiting: a
 * slot whose lock is busy is being taken by another dequeue right now.
 * The slots are locked first and read after, with a fresh snapshot: a run
 * that took a slot committed before we got its lock (its starter held the
 * lock until then), so the read sees it, and we let that slot go and try
 * the ones the read shows free.  Up to QE_SLOT_ROUNDS rounds, each of
 * which locked a slot.  The first round starts at the slot this backend
 * used last (else at slot 0), so that workers of one queue that keep
 * dequeuing each try their own slot first.  Returns how many slots are ours for the next claim
 * (q->slots), or -1 when some executing run holds no slot below the limit
 * (having let go of every slot): the caller must serialise starts then.
 */
#define QE_SLOT_ROUNDS 4

static int
take_free_slots(QeCandidate *q, int want)
{
	bool	   *now_used = palloc(sizeof(bool) * q->limit);
	bool	   *held = palloc0(sizeof(bool) * q->limit);
	bool		out_of_range = false;
	int64		running = q->running;
	int			first;

	if (last_slot_queue_id == q->queue_id && last_slot >= 0 && last_slot < q->limit)
		first = last_slot;
	else
		first = 0;

	q->nslots = 0;
	for (int round = 0; round < QE_SLOT_ROUNDS && q->nslots < want; round++)
	{
		int			locked = 0;
		int			kept = 0;

		for (int i = 0; i < q->limit && q->nslots < want; i++)
		{
			int			slot = (first + i) % q->limit;

			if (q->slot_used[slot] || held[slot])
				continue;
			if (qe_try_xact_lock_mode(QE_LOCK_QUEUE_SLOT, (uint32) q->queue_id,
									  (uint32) slot, ExclusiveLock))
			{
				q->slots[q->nslots++] = slot;
				held[slot] = true;
				locked++;
			}
		}
		if (locked == 0)
			break;

		running = read_queue_slots(q, now_used, &out_of_range);
		for (int i = 0; i < q->nslots; i++)
		{
			if (now_used[q->slots[i]] || out_of_range)
			{
				qe_release_xact_lock(QE_LOCK_QUEUE_SLOT, (uint32) q->queue_id,
									 (uint32) q->slots[i], ExclusiveLock);
				held[q->slots[i]] = false;
			}
			else
				q->slots[kept++] = q->slots[i];
		}
		memcpy(q->slot_used, now_used, sizeof(bool) * q->limit);
		q->nslots = kept;
		q->running = running;
		if (out_of_range)
			return -1;
	}
	return (int) Min((int64) q->nslots, q->limit - running);
}

/*
 * Serialise a limited queue's starts: the exclusive queue lock (without
 * waiting) keeps every other starter out, and the executing runs are
 * counted under it.  False when another dequeue holds the queue.
 */
static bool
serialise_queue(QeCandidate *q)
{
	bool		out_of_range;

	if (q->slot_mode)
	{
		qe_release_xact_lock(QE_LOCK_QUEUE, (uint32) q->queue_id, 0, ShareLock);
		q->slot_mode = false;
	}
	if (!qe_try_xact_lock(QE_LOCK_QUEUE, (uint32) q->queue_id, 0))
		return false;
	if (q->assign_slots)
		q->running = read_queue_slots(q, q->slot_used, &out_of_range);
	else
		q->running = count_executing(false, q->queue_id);
	return true;
}

/*
 * Claim up to want runs from one queue, within its limits.  Marks the
 * queue exhausted when it can give nothing more in this call.
 */
static uint64
claim_from_queue(QeDequeueCall *call, QeCandidate *q, QeTenant *t, int want)
{
	uint64		n;

	if (t->limit > 0)
	{
		if (t->locked_out)
		{
			q->exhausted = true;
			return 0;
		}
		if (t->running < 0)
		{
			if (!lock_tenant_for_claims(t))
			{
				t->locked_out = true;
				q->exhausted = true;
				return 0;
			}
			t->running = count_executing(true, t->tenant_id);
		}
		want = Min(want, t->limit - t->running);
	}
	if (q->limit > 0)
	{
		if (q->running < 0)
		{
			/*
			 * Slot mode when every executing run holds a slot below the
			 * limit (take_free_slots finds out, reading the slots once it
			 * holds some); otherwise (runs started before the limit was set
			 * or lowered) starts are serialised by the exclusive queue lock.
			 */
			q->slot_mode = false;
			q->assign_slots = (q->limit <= QE_MAX_SLOTTED_LIMIT);
			q->exits_seen = qe_limit_hint_exits(q->queue_id);
			if (q->assign_slots)
			{
				q->slot_used = palloc0(sizeof(bool) * q->limit);
				q->slots = palloc(sizeof(int) * q->limit);
				if (qe_try_xact_lock_mode(QE_LOCK_QUEUE, (uint32) q->queue_id, 0,
										  ShareLock))
				{
					q->slot_mode = true;
					q->running = 0; /* until take_free_slots reads the slots */
				}
			}
			if (!q->slot_mode && !serialise_queue(q))
			{
				q->exhausted = true;
				return 0;
			}
		}
		want = Min(want, q->limit - q->running);
		if (q->slot_mode && want > 0)
		{
			int			got = take_free_slots(q, want);

			if (got >= 0)
				want = got;
			else if (!serialise_queue(q))
			{
				q->exhausted = true;
				return 0;
			}
			else
				want = Min(want, q->limit - q->running);
		}
		if (!q->slot_mode && q->assign_slots && want > 0)
		{
			/*
			 * Serialised (the exclusive lock keeps every other starter
			 * out): free slots below the limit need no locks of their own.
			 * There are enough, as running counts the slotless runs too.
			 */
			q->nslots = 0;
			for (int slot = 0; slot < q->limit && q->nslots < want; slot++)
				if (!q->slot_used[slot])
					q->slots[q->nslots++] = slot;
		}
	}
	if (want <= 0)
	{
		q->exhausted = true;
		return 0;
	}

	if (q->key_limit > 0)
		n = claim_keyed(call, q, t, want);
	else
		n = claim_in_order(call, q, t, want);

	if (q->assign_slots)
	{
		/* Keep the locks of the slots now held by started runs only. */
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;
			Datum		slot = qe_get((int) i, CLAIM_SLOT, &isnull);

			if (!isnull)
			{
				q->slot_used[DatumGetInt32(slot)] = true;
				last_slot_queue_id = q->queue_id;
				last_slot = DatumGetInt32(slot);
			}
		}
		for (int i = 0; q->slot_mode && i < q->nslots; i++)
			if (!q->slot_used[q->slots[i]])
				qe_release_xact_lock(QE_LOCK_QUEUE_SLOT, (uint32) q->queue_id,
									 (uint32) q->slots[i], ExclusiveLock);
		q->nslots = 0;
	}

	if (n < (uint64) want)
		q->exhausted = true;
	if (q->running >= 0)
		q->running += n;
	if (q->limit > 0 && q->running >= q->limit)
		qe_limit_hint_mark(q->queue_id, q->limit, q->exits_seen);
	if (t->running >= 0)
		t->running += n;
	t->claimed += n;
	return n;
}

/*
 * Resolve queue names to ids; an unknown name is an error.  When the names
 * come down to a single queue, *single is filled in from it (paused queues
 * excepted: *single_paused says so), so that the caller can claim from it
 * without looking for eligible queues and taking a turn.
 */
static ArrayType *
resolve_queue_names(ArrayType *names, QeCandidate *single, QeTenant *single_tenant,
					bool *have_single, bool *single_paused)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	Datum	   *ids;
	uint64		n;
	int			ndistinct = 0;

	if (ARR_NDIM(names) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("queues must be a one-dimensional array"),
				 errhint("Pass ARRAY['emails', 'reports'], or NULL for every queue.")));
	{
		ArrayIterator it = array_create_iterator(names, 0, NULL);
		Datum		name;
		bool		isnull;

		/* No live queue has a longer name: say so, not "does not exist". */
		while (array_iterate(it, &name, &isnull))
			if (!isnull)
				qe_check_text_bytes(name, QE_MAX_NAME_BYTES, "queue name",
									"Pass the names of queues made with create_queue().");
		array_free_iterator(it);
	}
	qe_plan(&plan,
			"SELECT u.name, q.queue_id, q.tenant_id, t.tenant,"
			"       coalesce(q.concurrency_limit, 0),"
			"       coalesce(q.key_concurrency_limit, 0),"
			"       coalesce(t.concurrency_limit, 0), q.paused"
			"  FROM unnest($1::text[]) WITH ORDINALITY AS u(name, n)"
			"  LEFT JOIN queue_engine.queues q"
			"    ON q.queue = u.name AND q.dropped_at IS NULL"
			"  LEFT JOIN queue_engine.tenants t ON t.tenant_id = q.tenant_id"
			" ORDER BY u.n",
			1, (Oid[]) {TEXTARRAYOID});
	values[0] = PointerGetDatum(names);
	if (ARR_NDIM(names) == 1 && ARR_DIMS(names)[0] == 1 && !array_contains_nulls(names))
	{
		/* The common case of one name: the cached definition, or one probe. */
		int			ind = ARR_LBOUND(names)[0];
		bool		isnull;
		Datum		value;
		const QeQueueDef *def;
		char	   *name;

		value = array_get_element(PointerGetDatum(names), 1, &ind, -1, -1,
								  false, TYPALIGN_INT, &isnull);
		name = TextDatumGetCString(value);
		def = qe_queue_def(name);
		if (def == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("queue \"%s\" does not exist", name),
					 errhint("Create it with queue_engine.create_queue(), or fix the name passed to dequeue().")));
		qe_access_require_queue(QE_NEED_WORK, name, def->tenant_id);
		memset(single, 0, sizeof(QeCandidate));
		memset(single_tenant, 0, sizeof(QeTenant));
		single->queue_id = def->queue_id;
		single->queue = name;
		single->limit = def->limit;
		single->key_limit = def->key_limit;
		single->running = -1;
		single_tenant->tenant_id = def->tenant_id;
		single_tenant->tenant = pstrdup(def->tenant);
		single_tenant->limit = def->tenant_limit;
		single_tenant->running = -1;
		*single_paused = def->paused;
		*have_single = true;
		ids = palloc(sizeof(Datum));
		ids[0] = Int32GetDatum(def->queue_id);
		return construct_array(ids, 1, INT4OID, 4, true, TYPALIGN_INT);
	}
	else
		n = qe_exec(plan, values, NULL, 0);
	ids = palloc(sizeof(Datum) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		name_null;
		bool		id_null;
		bool		tenant_null;
		Datum		name = qe_get(i, 1, &name_null);
		Datum		id = qe_get(i, 2, &id_null);

		if (name_null)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("queues[%d] must not be null", (int) i + 1),
					 errhint("Pass queue names, or NULL instead of the whole array for every queue.")));
		if (id_null)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("queue \"%s\" does not exist", TextDatumGetCString(name)),
					 errhint("Create it with queue_engine.create_queue(), or fix the name passed to dequeue().")));
		qe_access_require_queue(QE_NEED_WORK, TextDatumGetCString(name),
								DatumGetInt32(qe_get(i, 3, &tenant_null)));
		ids[i] = id;
		if (i == 0 || DatumGetInt32(id) != DatumGetInt32(ids[0]))
			ndistinct++;
	}
	*have_single = (ndistinct == 1);
	if (*have_single)
	{
		bool		isnull;

		memset(single, 0, sizeof(QeCandidate));
		memset(single_tenant, 0, sizeof(QeTenant));
		single->queue_id = DatumGetInt32(ids[0]);
		single->queue = TextDatumGetCString(qe_get(0, 1, &isnull));
		single->limit = DatumGetInt32(qe_get(0, 5, &isnull));
		single->key_limit = DatumGetInt32(qe_get(0, 6, &isnull));
		single->running = -1;
		single_tenant->tenant_id = DatumGetInt32(qe_get(0, 3, &isnull));
		single_tenant->tenant = TextDatumGetCString(qe_get(0, 4, &isnull));
		single_tenant->limit = DatumGetInt32(qe_get(0, 7, &isnull));
		single_tenant->running = -1;
		*single_paused = DatumGetBool(qe_get(0, 8, &isnull));
	}
	return construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT);
}

/*
 * Are there delayed runs whose time has come?  A probe of the delayed
 * index, so that a dequeue pays for promoting only when there is work.
 */
static bool
due_delayed_runs_exist(void)
{
	static SPIPlanPtr plan = NULL;

	qe_plan(&plan,
			"SELECT 1 FROM queue_engine.runs x"
			" WHERE x.status = 'delayed' AND x.run_at <= now() LIMIT 1",
			0, NULL);
	return qe_exec(plan, NULL, NULL, 1) > 0;
}

/*
 * Where each tenant's turn among its queues stands, in this backend: the
 * queue it was last served from.  Tenants take turns through a shared
 * cursor (below); a tenant's queues take turns through this one, so one
 * worker's consecutive dequeues visit a tenant's queues in order.
 */
typedef struct QeTenantCursor
{
	int32		tenant_id;		/* hash key */
	int32		last_queue_id;
} QeTenantCursor;

static HTAB *tenant_cursors = NULL;

static QeTenantCursor *
tenant_cursor(int32 tenant_id)
{
	bool		found;
	QeTenantCursor *c;

	if (tenant_cursors == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int32);
		ctl.entrysize = sizeof(QeTenantCursor);
		ctl.hcxt = TopMemoryContext;
		tenant_cursors = hash_create("queue_engine tenant cursors", 64, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	c = hash_search(tenant_cursors, &tenant_id, HASH_ENTER, &found);
	if (!found)
		c->last_queue_id = 0;
	return c;
}

/*
 * The next queue of a tenant, after its cursor and wrapping around, that
 * looks startable: unpaused, with a queued run, below its queue limit, and
 * not already found exhausted by this call.  One index walk over the
 * tenant's queues that stops at the first such queue, so its cost is the
 * queues skipped, not all queues.
 */
static bool
next_queue_of_tenant(int32 tenant_id, int32 after, Datum ids, bool ids_null,
					 int32 *exhausted, int nexhausted, QeCandidate *out)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum	   *ex = palloc(sizeof(Datum) * Max(nexhausted, 1));

	qe_plan(&plan,
			"SELECT q.queue_id, q.queue, coalesce(q.concurrency_limit, 0),"
			"       coalesce(q.key_concurrency_limit, 0)"
			"  FROM queue_engine.queues q"
	/* LATERAL ... LIMIT 1: one probe per queue walked, never a semi-join. */
			" CROSS JOIN LATERAL (SELECT 1 FROM queue_engine.runs x"
			"                      WHERE x.queue_id = q.queue_id AND x.status = 'queued'"
			"                      ORDER BY x.priority DESC, x.run_at, x.run_id"
			"                      LIMIT 1) AS has_queued"
			" WHERE q.tenant_id = $1 AND q.queue_id > $2 AND q.queue_id <= $5"
			"   AND q.dropped_at IS NULL AND NOT q.paused"

			"   AND ($3::int[] IS NULL OR q.queue_id = ANY ($3))"
			"   AND q.queue_id <> ALL ($4)"
	/* At its limit (known from a mark, or counted and then marked): pass it. */
			"   AND queue_engine.queue_below_limit(q.queue_id, q.concurrency_limit)"
			" ORDER BY q.tenant_id, q.queue_id LIMIT 1",
			5, (Oid[]) {INT4OID, INT4OID, INT4ARRAYOID, INT4ARRAYOID, INT4OID});
	for (int i = 0; i < nexhausted; i++)
		ex[i] = Int32GetDatum(exhausted[i]);
	values[0] = Int32GetDatum(tenant_id);
	values[2] = ids;
	nulls[2] = ids_null ? 'n' : ' ';
	values[3] = PointerGetDatum(construct_array(ex, nexhausted, INT4OID, 4, true,
												TYPALIGN_INT));
	/* After the cursor first, then from the start up to it. */
	for (int pass = 0; pass < 2; pass++)
	{
		bool		isnull;

		values[1] = Int32GetDatum(pass == 0 ? after : 0);
		values[4] = Int32GetDatum(pass == 0 ? PG_INT32_MAX : after);
		if (qe_exec(plan, values, nulls, 1) == 0)
			continue;
		memset(out, 0, sizeof(QeCandidate));
		out->queue_id = DatumGetInt32(qe_get(0, 1, &isnull));
		out->queue = TextDatumGetCString(qe_get(0, 2, &isnull));
		out->limit = DatumGetInt32(qe_get(0, 3, &isnull));
		out->key_limit = DatumGetInt32(qe_get(0, 4, &isnull));
		out->running = -1;
		return true;
	}
	return false;
}

/*
 * dequeue() over several queues, or all: tenants in turn, and each
 * tenant's queues in turn.
 *
 * The tenants' turn is a shared cursor, the sequence dequeue_tenant_cursor
 * holding the tenant last served (a sequence: updated in place, never a
 * row version, so no bloat and no row lock).  A dequeue serves the first
 * tenant after it, in tenant id order and wrapping around, that has a
 * startable queue, and moves the cursor there: while T tenants have
 * startable runs, T consecutive single-run dequeues serve each of them
 * once, and a tenant at its limit, or with nothing startable, is passed
 * over without taking a turn.  Within the tenant the queue comes the same
 * way from the tenant's cursor (tenant_cursor above).
 *
 * Finding the next startable queue walks past the ones that are not, so a
 * dequeue's cost grows with the queues passed over (those at their limit,
 * or empty), never with the runs waiting in them, and not with the number
 * of queues that have work.  A batch (max_runs > 1) takes one run per
 * tenant per round, then shares what is left among the tenants that still
 * have work.
 */
static void
dequeue_in_turn(QeDequeueCall *call, Datum ids, bool ids_null)
{
	static SPIPlanPtr tenants_plan = NULL;
	static SPIPlanPtr cursor_plan = NULL;
	static SPIPlanPtr set_cursor_plan = NULL;
	Datum		values[1];
	char		nulls[1] = {' '};
	QeTenant   *tenants;
	int			nrows;
	int			ntenants;
	int			start = 0;
	int64		cursor;
	int32		served_tenant = -1;
	QeCandidate *cands;
	int			ncands = 0;
	int			candcap = 8;
	int32	   *exhausted;
	int			nexhausted = 0;
	int			excap = 8;
	int			active;
	int			share;
	uint64		generation;

	/* The tenants that have a live, unpaused queue (among those asked for). */
	qe_plan(&tenants_plan,
			"SELECT t.tenant_id, t.tenant, coalesce(t.concurrency_limit, 0)"
			"  FROM queue_engine.tenants t"
	/* LATERAL ... LIMIT 1: one index probe per tenant, not a scan of queues. */
			" CROSS JOIN LATERAL (SELECT 1 FROM queue_engine.queues q"
			"                      WHERE q.tenant_id = t.tenant_id AND q.dropped_at IS NULL"
			"                        AND NOT q.paused"
			"                        AND ($1::int[] IS NULL OR q.queue_id = ANY ($1))"
			"                      ORDER BY q.tenant_id, q.queue_id LIMIT 1) AS has_queue"
			" ORDER BY t.tenant_id",
			1, (Oid[]) {INT4ARRAYOID});
	values[0] = ids;
	nulls[0] = ids_null ? 'n' : ' ';
	generation = qe_queue_definitions_generation();
	nrows = (int) qe_exec(tenants_plan, values, nulls, 0);
	tenants = palloc0(sizeof(QeTenant) * Max(nrows, 1));
	ntenants = 0;
	for (int i = 0; i < nrows; i++)
	{
		bool		isnull;
		int32		tenant_id = DatumGetInt32(qe_get(i, 1, &isnull));

		/* A tenant-scoped role is served its worker tenants only. */
		if (!qe_access_tenant(QE_NEED_WORK, tenant_id))
			continue;
		tenants[ntenants].tenant_id = tenant_id;
		tenants[ntenants].tenant = TextDatumGetCString(qe_get(i, 2, &isnull));
		tenants[ntenants].limit = DatumGetInt32(qe_get(i, 3, &isnull));
		tenants[ntenants].running = -1;
		tenants[ntenants].limit_generation = generation;
		ntenants++;
	}
	if (ntenants == 0)
		return;

	qe_plan(&cursor_plan,
			"SELECT last_value FROM queue_engine.dequeue_tenant_cursor", 0, NULL);
	qe_exec(cursor_plan, NULL, NULL, 1);
	cursor = qe_get_int64(0, 1);
	while (start < ntenants && tenants[start].tenant_id <= cursor)
		start++;

	cands = palloc(sizeof(QeCandidate) * candcap);
	exhausted = palloc(sizeof(int32) * excap);
	active = ntenants;
	while (call->remaining > 0 && active > 0)
	{
		bool		progress = false;

		for (int k = 0; k < ntenants && call->remaining > 0; k++)
		{
			QeTenant   *t = &tenants[(start + k) % ntenants];
			QeTenantCursor *tc;
			bool		got;

			if (t->locked_out)	/* done: nothing more from this tenant */
				continue;
			/*
			 * Its queues are walked under its claim lock, so the walk reads
			 * their definitions as last committed.
			 */
			if (!lock_tenant_fresh(t))
			{
				t->locked_out = true;
				active--;
				continue;
			}
			tc = tenant_cursor(t->tenant_id);
			got = false;
			for (;;)
			{
				QeCandidate found;
				QeCandidate *q = NULL;
				uint64		n;

				CHECK_FOR_INTERRUPTS();
				if (t->limit > 0 && t->running >= t->limit)
					break;
				if (!next_queue_of_tenant(t->tenant_id, tc->last_queue_id, ids, ids_null,
										  exhausted, nexhausted, &found))
					break;
				/*
				 * Keep what this call learnt of a queue (counts, slots).
				 * Meeting a queue again means the tenant's startable queues
				 * have all had one run: from then on they share the rest.
				 */
				for (int c = 0; c < ncands; c++)
					if (cands[c].queue_id == found.queue_id)
						q = &cands[c];
				if (q != NULL)
					t->cycled = true;
				else
				{
					if (ncands == candcap)
					{
						candcap *= 2;
						cands = repalloc(cands, sizeof(QeCandidate) * candcap);
					}
					cands[ncands] = found;
					q = &cands[ncands++];
				}
				share = 1;
				if (t->cycled)
				{
					int			open = 0;

					for (int c = 0; c < ncands; c++)
						if (!cands[c].exhausted)
							open++;
					share = Max(1, call->remaining / Max(open, 1));
				}
				n = claim_from_queue(call, q, t, share);
				tc->last_queue_id = q->queue_id;
				if (q->exhausted)
				{
					if (nexhausted == excap)
					{
						excap *= 2;
						exhausted = repalloc(exhausted, sizeof(int32) * excap);
					}
					exhausted[nexhausted++] = q->queue_id;
				}
				if (n > 0)
				{
					call->remaining -= (int) n;
					served_tenant = t->tenant_id;
					progress = got = true;
					break;
				}
				if (t->locked_out)
					break;
			}
			if (!got)
			{
				/* Nothing startable in this tenant for the rest of the call. */
				if (!t->locked_out)
				{
					t->locked_out = true;
					active--;
				}
				/* (so a walk over many tenants holds few locks) */
				unlock_tenant_unclaimed(t);
			}
		}
		if (!progress)
			break;
	}

	if (served_tenant >= 0)
	{
		qe_plan(&set_cursor_plan,
				"SELECT setval('queue_engine.dequeue_tenant_cursor', $1)",
				1, (Oid[]) {INT8OID});
		values[0] = Int64GetDatum((int64) served_tenant);
		qe_exec(set_cursor_plan, values, NULL, 1);
	}
}

Datum
qe_dequeue(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	QeDequeueCall call;
	Datum		values[1];
	char		nulls[1] = {' '};
	int			max_runs;
	QeCandidate single;
	QeTenant	single_tenant;
	bool		have_single = false;
	bool		single_paused = false;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_runs must not be null"),
				 errhint("Omit max_runs to claim one run.")));
	max_runs = PG_GETARG_INT32(1);
	if (max_runs < 1 || max_runs > QE_MAX_DEQUEUE_RUNS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_runs must be between 1 and %d: %d",
						QE_MAX_DEQUEUE_RUNS, max_runs),
				 errhint("Claim runs in batches of at most %d.", QE_MAX_DEQUEUE_RUNS)));
	call.lease_null = PG_ARGISNULL(2);
	call.lease = call.lease_null ? (Datum) 0 : PG_GETARG_DATUM(2);
	if (!call.lease_null)
		qe_check_interval(PG_GETARG_INTERVAL_P(2), "lease", false);
	if (!PG_ARGISNULL(3))
		qe_check_text_bytes(PG_GETARG_DATUM(3), QE_MAX_WORKER_BYTES, "worker",
							"Pass a short name for the worker, such as its host and process id.");
	call.worker_null = PG_ARGISNULL(3);
	call.worker = call.worker_null ? (Datum) 0 : PG_GETARG_DATUM(3);

	/*
	 * Limits are counted with fresh snapshots after taking their locks; a
	 * transaction snapshot could miss runs another worker just started.
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("dequeue() cannot run in a %s transaction",
						XactIsoLevel == XACT_SERIALIZABLE ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errhint("Call dequeue() in a READ COMMITTED transaction.")));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	call.store = rsinfo->setResult;
	call.desc = rsinfo->setDesc;
	call.remaining = max_runs;

	SPI_connect();

	if (!PG_ARGISNULL(0))
	{
		/*
		 * One queue: resolve it, take its tenant's claim lock, and resolve
		 * it again if a definition changed before the lock was had (see
		 * lock_tenant_for_claims).  Changes keep coming only while someone
		 * keeps changing queues: then give up for this call.
		 */
		for (int tries = 0;; tries++)
		{
			uint64		generation = qe_queue_definitions_generation();
			ArrayType  *ids = resolve_queue_names(PG_GETARG_ARRAYTYPE_P(0),
												  &single, &single_tenant,
												  &have_single, &single_paused);

			if (ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids)) == 0 ||
				(have_single && single_paused))
			{
				SPI_finish();
				return (Datum) 0;
			}
			values[0] = PointerGetDatum(ids);
			if (!have_single)
				break;
			single_tenant.limit_generation = generation;
			if (tries == 10 || !lock_tenant_for_claims(&single_tenant))
			{
				SPI_finish();
				return (Datum) 0;
			}
			qe_queue_definitions_refresh();
			if (qe_queue_definitions_generation() == generation)
				break;
		}
	}
	else
		nulls[0] = 'n';

	/* Delayed runs that are due start now, even before maintenance runs. */
	if (due_delayed_runs_exist())
		qe_task_promote_delayed(Max(max_runs, 100));

	/*
	 * One queue named: no turns to take and nothing to choose between, so
	 * claim from it at once (its limits are checked under their locks as
	 * always).
	 */
	if (have_single)
	{
		while (call.remaining > 0 && !single.exhausted)
		{
			CHECK_FOR_INTERRUPTS();
			call.remaining -= (int) claim_from_queue(&call, &single, &single_tenant,
													 call.remaining);
		}
		SPI_finish();
		return (Datum) 0;
	}

	dequeue_in_turn(&call, nulls[0] == 'n' ? (Datum) 0 : values[0], nulls[0] == 'n');
	SPI_finish();
	return (Datum) 0;
}
