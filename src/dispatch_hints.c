/*-------------------------------------------------------------------------
 *
 * dispatch_hints.c
 *	  Hints, in shared memory, that spare dequeue work it would otherwise
 *	  repeat on every call; each is a safe bound, never the truth itself,
 *	  and is lost (harmlessly) on restart:
 *	  - ready hints: where each queue's ready entries begin, a lower bound
 *	    on the (priority, run_at, run_id) of the queue's queued runs in the order
 *	    indexes of the ready segments (ready_0_order, ready_1_order), so
 *	    a claim can start its index scans there instead of at the queue's
 *	    first entry;
 *	  - limit hints: that a queue was at its concurrency limit and no run
 *	    of it has finished since, so dequeue(NULL) can pass it by without
 *	    probing its runs.
 *
 *	  Why: a claim deletes a queued run from its ready segment, which
 *	  leaves the run's entry in the order index behind.  Normally the next
 *	  scan that meets such an entry marks it dead and later scans skip it for
 *	  free; but while any snapshot older than the claim is open (a
 *	  long-running report, an idle-in-transaction session), the entry
 *	  cannot be marked dead, and every claim would walk and check every run
 *	  claimed since that snapshot began.  With the hint, that stretch is
 *	  walked once, by one backend, instead of by every claim.
 *
 *	  The invariant: every entry of queue Q in the order indexes that is,
 *	  or may still become, a queued run sorts at or after Q's hint.  It is kept by
 *	  two rules:
 *	  - Whoever adds a queued entry (enqueue, promotion, retry, rescue)
 *	    lowers the hint to the entry's key after inserting the entry and
 *	    before committing, and, if a walk is in progress, records the key
 *	    for the walker.
 *	  - A walk moves the hint forward only over entries whose heap tuples
 *	    are dead for good: deleted or updated away by a committed (or never
 *	    committed) transaction.  Runs being claimed, or being inserted, by
 *	    transactions still in progress stop the walk.  When the walk ends it
 *	    takes the lowest key recorded during it, if lower.
 *	  An entry added during a walk is either met by the walk (and stops
 *	  it) or recorded for it, because the adder records it after inserting
 *	  it and the walk reads the record after walking.
 *
 *	  Limit hints.  The same slot holds a queue's count of finished
 *	  executions and its mark "at its limit" (stamped with that count);
 *	  limits.c says when they are read and written, and why.
 *
 *	  The hints live in a small direct-mapped table; a queue whose slot
 *	  another queue took has no hints (scanned from its start, probed),
 *	  which is always correct.  Without shared_preload_libraries there is
 *	  no table and dequeue works as it would without hints.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"
#include "shmem.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/* Entries one walk checks at most; the next walk continues. */
#define QE_READY_WALK_MAX	2000

/*
 * A short claim explained by other claims looks from the queue's start at
 * most this often (qe_ready_hint_from_start_due()).
 */
#define QE_READY_FROM_START_US	(1 * USECS_PER_SEC)

/* A walk that has not reported for this long is taken over. */
#define QE_READY_WALK_STALE_US	(10 * USECS_PER_SEC)

/*
 * The ready segments and their order indexes, looked up once per backend
 * (and after DDL); and the runs view, whose relid names the installation.
 */
static Oid	runs_oid = InvalidOid;
static Oid	ready_oids[2] = {InvalidOid, InvalidOid};
static Oid	ready_order_oids[2] = {InvalidOid, InvalidOid};
static bool callback_registered = false;

/*
 * The relid of runs when this backend last looked in a transaction: hints
 * of an earlier installation (DROP and CREATE EXTENSION reuse queue ids)
 * are not this one's.
 */
static Oid	hints_epoch = InvalidOid;

static void
forget_oids(Datum arg, Oid relid)
{
	bool		ours = relid == InvalidOid || relid == runs_oid;

	for (int s = 0; s < 2; s++)
		ours = ours || relid == ready_oids[s] || relid == ready_order_oids[s];
	if (ours)
	{
		runs_oid = InvalidOid;
		for (int s = 0; s < 2; s++)
			ready_oids[s] = ready_order_oids[s] = InvalidOid;
	}
}

/* Look the relations up when an invalidation made us forget them. */
static void
lookup_oids(void)
{
	Oid			nsp;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_oids, (Datum) 0);
		callback_registered = true;
	}
	if (OidIsValid(runs_oid) && OidIsValid(ready_order_oids[1]))
		return;
	nsp = get_namespace_oid("queue_engine", true);
	if (!OidIsValid(nsp))
		return;
	for (int s = 0; s < 2; s++)
	{
		char		name[NAMEDATALEN];

		ready_oids[s] = get_relname_relid(qe_segment_names[QE_FAMILY_READY][s], nsp);
		snprintf(name, sizeof(name), "%s_order", qe_segment_names[QE_FAMILY_READY][s]);
		ready_order_oids[s] = get_relname_relid(name, nsp);
	}
	runs_oid = get_relname_relid("runs", nsp);
}

/* (at commit, in the callbacks below, the transaction's epoch holds) */
static inline void
refresh_epoch(void)
{
	if (IsTransactionState())
	{
		lookup_oids();
		hints_epoch = runs_oid;
	}
}

/* The installation's epoch (the runs relid), for other shared keys. */
Oid
qe_hints_epoch(void)
{
	refresh_epoch();
	return hints_epoch;
}

static inline QeReadyHintSlot *
slot_of(int32 queue_id)
{
	refresh_epoch();
	return &qe_shared->hints.slots[((uint32) queue_id + (uint32) MyDatabaseId * 2654435761U) %
						 QE_READY_HINT_SLOTS];
}

/* Does the slot hold this database's queue_id? */
static inline bool
slot_holds(QeReadyHintSlot *slot, int32 queue_id)
{
	return slot->queue_id == queue_id && slot->database == MyDatabaseId &&
		slot->epoch == hints_epoch;
}

/* Make the slot queue_id's, with no hints yet (mutex held). */
static void
take_slot(QeReadyHintSlot *slot, int32 queue_id)
{
	slot->database = MyDatabaseId;
	slot->epoch = hints_epoch;
	slot->queue_id = queue_id;
	slot->valid = false;
	slot->walk_id = 0;
	slot->from_start_at = 0;
	slot->at_limit = false;
	slot->exits++;				/* voids any count read for the slot's last queue */
}

/*
 * Queued entries were just added to queue_id's runs_queued (by the
 * current, uncommitted transaction), none sorting before *key.
 */
void
qe_ready_hint_lower(int32 queue_id, const QeReadyKey *key)
{
	QeReadyHintSlot *slot;

	if (!qe_shmem_attach())
		return;
	slot = slot_of(queue_id);
	SpinLockAcquire(&slot->mutex);
	if (slot_holds(slot, queue_id))
	{
		if (slot->valid && qe_ready_key_before(key, &slot->hint))
			slot->hint = *key;
		if (slot->walk_id != 0 &&
			(!slot->added_valid || qe_ready_key_before(key, &slot->added)))
		{
			slot->added_valid = true;
			slot->added = *key;
		}
	}
	SpinLockRelease(&slot->mutex);
}

/*
 * True when the heap tuple an index entry points to, and every later
 * version of it reached by HOT updates, is dead for good: deleted, or
 * updated into a version that left the index, by a transaction that
 * committed, or inserted by one that aborted.
 */
static bool
entry_dead_for_good(Relation heap, ItemPointer tid)
{
	BlockNumber block = ItemPointerGetBlockNumber(tid);
	OffsetNumber offnum = ItemPointerGetOffsetNumber(tid);
	Buffer		buffer = ReadBuffer(heap, block);
	Page		page;
	bool		dead = true;
	TransactionId prev_xmax = InvalidTransactionId;

	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buffer);
	for (int hops = 0; hops < MaxHeapTuplesPerPage; hops++)
	{
		ItemId		lp;
		HeapTupleData tuple;
		TransactionId dead_after;
		HTSV_Result state;

		if (offnum < FirstOffsetNumber || offnum > PageGetMaxOffsetNumber(page))
			break;				/* pruned away */
		lp = PageGetItemId(page, offnum);
		if (ItemIdIsRedirected(lp))
		{
			offnum = ItemIdGetRedirect(lp);
			continue;
		}
		if (!ItemIdIsNormal(lp))
			break;				/* dead or unused: pruned away */
		tuple.t_data = (HeapTupleHeader) PageGetItem(page, lp);
		tuple.t_len = ItemIdGetLength(lp);
		tuple.t_tableOid = RelationGetRelid(heap);
		ItemPointerSet(&tuple.t_self, block, offnum);
		/* A slot reused by an unrelated tuple ends the chain. */
		if (TransactionIdIsValid(prev_xmax) &&
			!TransactionIdEquals(prev_xmax, HeapTupleHeaderGetXmin(tuple.t_data)))
			break;
		state = HeapTupleSatisfiesVacuumHorizon(&tuple, buffer, &dead_after);
		if (state != HEAPTUPLE_DEAD && state != HEAPTUPLE_RECENTLY_DEAD)
		{
			dead = false;		/* live, or its inserter or updater is running */
			break;
		}
		if (!HeapTupleIsHotUpdated(&tuple))
			break;				/* its successor has index entries of its own */
		prev_xmax = HeapTupleHeaderGetUpdateXid(tuple.t_data);
		offnum = ItemPointerGetOffsetNumber(&tuple.t_data->t_ctid);
	}
	UnlockReleaseBuffer(buffer);
	return dead;
}

/* How a segment's walk ended. */
typedef enum QeWalk
{
	WALK_EMPTY,					/* the queue has no entry there */
	WALK_MOVED,					/* *to set */
	WALK_FAILED					/* the segment could not be read */
} QeWalk;

/*
 * Walk queue_id's entries of one ready segment's order index from *from
 * (or from the start when from is NULL) over entries dead for good.  Sets
 * *to to the key of the first entry that is not (the walk stops there), or
 * of the last dead one when the walk ran out of entries or budget.
 */
static QeWalk
walk_segment(int segment, int32 queue_id, const QeReadyKey *from,
			 QeReadyKey *to)
{
	/*
	 * Copies: taking a lock processes invalidations, and one (a TRUNCATE by
	 * rotation, DDL) makes forget_oids() clear the statics.
	 */
	Oid			heap_oid;
	Oid			index_oid;
	Relation	heap;
	Relation	index;
	int			budget = QE_READY_WALK_MAX;
	bool		moved = false;
	bool		stopped = false;

	lookup_oids();
	heap_oid = ready_oids[segment];
	index_oid = ready_order_oids[segment];
	if (!OidIsValid(heap_oid) || !OidIsValid(index_oid))
		return WALK_FAILED;		/* someone dropped it: no hints then */
	/* (dropped while we waited for the lock: no hints either) */
	heap = try_relation_open(heap_oid, AccessShareLock);
	if (heap == NULL)
		return WALK_FAILED;
	index = try_index_open(index_oid, AccessShareLock);
	if (index == NULL)
	{
		table_close(heap, AccessShareLock);
		return WALK_FAILED;
	}

	/*
	 * From the hint on, in index order, as three ranges of plain scan keys:
	 * its priority and run_at from its run_id on, its priority after its
	 * run_at, then lower priorities.  Without a hint: the whole queue.
	 */
	for (int range = from != NULL ? 0 : 3; range < 4 && !stopped && budget > 0; range++)
	{
		ScanKeyData keys[4];
		int			nkeys = 1;
		IndexScanDesc scan;

		if (range == 3 && from != NULL)
			break;
		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
					Int32GetDatum(queue_id));
		if (range <= 1)
			ScanKeyInit(&keys[nkeys++], 2, BTEqualStrategyNumber, F_INT4EQ,
						Int32GetDatum(from->priority));
		if (range == 0)
		{
			ScanKeyInit(&keys[nkeys++], 3, BTEqualStrategyNumber,
						F_TIMESTAMPTZ_EQ, TimestampTzGetDatum(from->run_at));
			ScanKeyInit(&keys[nkeys++], 4, BTGreaterEqualStrategyNumber,
						F_INT8GE, Int64GetDatum(from->run_id));
		}
		else if (range == 1)
			ScanKeyInit(&keys[nkeys++], 3, BTGreaterStrategyNumber,
						F_TIMESTAMPTZ_GT, TimestampTzGetDatum(from->run_at));
		else if (range == 2)
			ScanKeyInit(&keys[nkeys++], 2, BTLessStrategyNumber, F_INT4LT,
						Int32GetDatum(from->priority));

		scan = qe_index_beginscan(heap, index, SnapshotAny, nkeys, 0);
		scan->xs_want_itup = true;
		index_rescan(scan, keys, nkeys, NULL, 0);
		while (budget-- > 0)
		{
			ItemPointer tid = index_getnext_tid(scan, ForwardScanDirection);
			bool		isnull;

			if (tid == NULL)
				break;
			to->priority = DatumGetInt32(index_getattr(scan->xs_itup, 2,
													   scan->xs_itupdesc, &isnull));
			to->run_at = DatumGetTimestampTz(index_getattr(scan->xs_itup, 3,
														   scan->xs_itupdesc, &isnull));
			to->run_id = DatumGetInt64(index_getattr(scan->xs_itup, 4,
													 scan->xs_itupdesc, &isnull));
			moved = true;
			if (!entry_dead_for_good(heap, tid))
			{
				stopped = true;
				break;
			}
		}
		index_endscan(scan);
	}
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	return moved ? WALK_MOVED : WALK_EMPTY;
}

/*
 * Both segments walked (each with its own budget); *to is the lower of
 * where they ended.  A segment with no entry bounds nothing: entries added
 * to it later lower the hint themselves.  Returns false (the hint stays)
 * when no segment had an entry or one could not be read.
 */
static bool
walk_dead_entries(int32 queue_id, const QeReadyKey *from, QeReadyKey *to)
{
	bool		moved = false;

	for (int s = 0; s < 2; s++)
	{
		QeReadyKey	end;

		switch (walk_segment(s, queue_id, from, &end))
		{
			case WALK_FAILED:
				return false;	/* a segment not walked bounds nothing */
			case WALK_EMPTY:
				continue;
			case WALK_MOVED:
				break;
		}
		if (!moved || qe_ready_key_before(&end, to))
			*to = end;
		moved = true;
	}
	return moved;
}

/* walk_dead_entries(), giving the walk up if it fails. */
static bool
walk_or_release(QeReadyHintSlot *slot, int32 queue_id, uint64 walk_id,
				const QeReadyKey *from, QeReadyKey *to)
{
	volatile bool moved = false;

	PG_TRY();
	{
		moved = walk_dead_entries(queue_id, from, to);
	}
	PG_CATCH();
	{
		SpinLockAcquire(&slot->mutex);
		if (slot_holds(slot, queue_id) && slot->walk_id == walk_id)
			slot->walk_id = 0;
		SpinLockRelease(&slot->mutex);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return moved;
}

/*
 * The key to claim queue_id's runs from, first moved forward over dead
 * entries unless another backend is doing that right now.  Returns false
 * when there is no hint (scan from the queue's start).
 */
bool
qe_ready_hint_get(int32 queue_id, QeReadyKey *key)
{
	QeReadyHintSlot *slot;
	uint64		walk_id;
	bool		from_valid;
	QeReadyKey	from;
	QeReadyKey	to;
	TimestampTz now = GetCurrentTimestamp();
	bool		valid;

	if (!qe_shmem_attach())
		return false;
	slot = slot_of(queue_id);

	SpinLockAcquire(&qe_shared->hints.mutex);
	walk_id = qe_shared->hints.next_walk_id++;
	SpinLockRelease(&qe_shared->hints.mutex);

	SpinLockAcquire(&slot->mutex);
	if (!slot_holds(slot, queue_id))
	{
		/* Take the slot; the queue it held loses its hints. */
		take_slot(slot, queue_id);
	}
	if (slot->walk_id != 0 && now - slot->walk_started < QE_READY_WALK_STALE_US)
		walk_id = 0;			/* somebody else is walking: use the hint as is */
	else
	{
		slot->walk_id = walk_id;
		slot->walk_started = now;
		slot->added_valid = false;
	}
	from_valid = slot->valid;
	from = slot->hint;
	SpinLockRelease(&slot->mutex);

	if (walk_id == 0)
	{
		*key = from;
		return from_valid;
	}

	if (walk_or_release(slot, queue_id, walk_id, from_valid ? &from : NULL, &to))
	{
		SpinLockAcquire(&slot->mutex);
		if (slot_holds(slot, queue_id) && slot->walk_id == walk_id)
		{
			/* Entries added meanwhile may sort before where the walk ended. */
			if (slot->added_valid && qe_ready_key_before(&slot->added, &to))
				to = slot->added;
			slot->valid = true;
			slot->hint = to;
		}
		SpinLockRelease(&slot->mutex);
	}

	SpinLockAcquire(&slot->mutex);
	if (slot_holds(slot, queue_id) && slot->walk_id == walk_id)
		slot->walk_id = 0;
	valid = slot_holds(slot, queue_id) && slot->valid;
	*key = slot->hint;
	SpinLockRelease(&slot->mutex);
	return valid;
}

/*
 * Should a hinted claim of queue_id that came up short look from the
 * queue's start as well (claim.c)?  Always, unless it passed over runs
 * other claims took (contended), which explains the shortfall: then only
 * if no claim of the queue has looked from its start for
 * QE_READY_FROM_START_US.  A run moved before the hint by hand is so
 * still found within that time once the runs after the hint are gone.
 */
bool
qe_ready_hint_from_start_due(int32 queue_id, bool contended)
{
	QeReadyHintSlot *slot;
	TimestampTz now = GetCurrentTimestamp();
	bool		due = true;

	if (!qe_shmem_attach())
		return true;
	slot = slot_of(queue_id);
	SpinLockAcquire(&slot->mutex);
	if (slot_holds(slot, queue_id))
	{
		if (contended && now - slot->from_start_at < QE_READY_FROM_START_US)
			due = false;
		else
			slot->from_start_at = now;
	}
	SpinLockRelease(&slot->mutex);
	return due;
}

/*
 * Forget every hint (claims scan from each queue's start until walks set
 * them again), and void the walks in progress.
 */
void
qe_ready_hint_forget_all(void)
{
	if (!qe_shmem_attach())
		return;
	for (int i = 0; i < QE_READY_HINT_SLOTS; i++)
	{
		QeReadyHintSlot *slot = &qe_shared->hints.slots[i];

		SpinLockAcquire(&slot->mutex);
		slot->valid = false;
		slot->walk_id = 0;
		SpinLockRelease(&slot->mutex);
	}
}

/*
 * The limit hints' fields of a queue's slot; limits.c decides when to read
 * and write them.
 */

/* Is there a table?  Notes the transaction's installation for the callers' commit. */
bool
qe_limit_hints_enabled(void)
{
	if (!qe_shmem_attach())
		return false;
	refresh_epoch();
	return true;
}

/* The queue's count of finished executions (the slot taken if need be). */
uint64
qe_hint_exits(int32 queue_id)
{
	QeReadyHintSlot *slot = slot_of(queue_id);
	uint64		exits;

	SpinLockAcquire(&slot->mutex);
	if (!slot_holds(slot, queue_id))
		take_slot(slot, queue_id);
	exits = slot->exits;
	SpinLockRelease(&slot->mutex);
	return exits;
}

/* Runs of queue_id left executing (at commit: must not fail). */
void
qe_hint_count_exit(int32 queue_id)
{
	QeReadyHintSlot *slot = slot_of(queue_id);

	SpinLockAcquire(&slot->mutex);
	if (slot_holds(slot, queue_id))
		slot->exits++;
	SpinLockRelease(&slot->mutex);
}

/* Runs of queues not named left executing (at commit: must not fail). */
void
qe_hint_count_exit_all(void)
{
	for (int i = 0; i < QE_READY_HINT_SLOTS; i++)
	{
		QeReadyHintSlot *slot = &qe_shared->hints.slots[i];

		SpinLockAcquire(&slot->mutex);
		slot->exits++;
		SpinLockRelease(&slot->mutex);
	}
}

/*
 * Mark queue_id at this limit, unless its count of finished executions
 * moved past exits (at commit: must not fail).
 */
void
qe_hint_set_at_limit(int32 queue_id, int32 limit, uint64 exits)
{
	QeReadyHintSlot *slot = slot_of(queue_id);

	SpinLockAcquire(&slot->mutex);
	if (!slot_holds(slot, queue_id))
		take_slot(slot, queue_id);
	if (slot->exits == exits)
	{
		slot->at_limit = true;
		slot->at_limit_exits = exits;
		slot->at_limit_limit = limit;
		slot->at_limit_since = GetCurrentTimestamp();
	}
	SpinLockRelease(&slot->mutex);
}

/*
 * Is queue_id marked at exactly this limit, with no execution finished
 * since?  Sets *since to when it was marked.
 */
bool
qe_hint_at_limit(int32 queue_id, int32 limit, TimestampTz *since)
{
	QeReadyHintSlot *slot = slot_of(queue_id);
	bool		at_limit = false;

	SpinLockAcquire(&slot->mutex);
	if (slot_holds(slot, queue_id) && slot->at_limit &&
		slot->at_limit_exits == slot->exits && slot->at_limit_limit == limit)
	{
		at_limit = true;
		*since = slot->at_limit_since;
	}
	SpinLockRelease(&slot->mutex);
	return at_limit;
}
