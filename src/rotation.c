/*-------------------------------------------------------------------------
 *
 * rotation.c
 *	  The rotation of the run families' segments (segments.h): the
 *	  background task rotate_segments, which carries the live rows of the
 *	  segment of ready, delayed and executing that writers are not using
 *	  over to the current one and empties it with TRUNCATE, and which makes
 *	  the emptied segment current again once the current one is mostly
 *	  dead rows.  It owns the decision when to switch, the carrying and the
 *	  truncation; where writers insert is segments.c's.
 *
 *	  Why: a claim, a finish or a heartbeat deletes or updates a row of a
 *	  family, and the old version stays on disk and in every index for as
 *	  long as any snapshot older than the change is open (a report, an
 *	  idle-in-transaction session); VACUUM cannot remove it, and does not
 *	  run on segments at all (they are made with autovacuum off).  TRUNCATE
 *	  does not wait for snapshots, so a segment emptied by it sheds every
 *	  dead version and index entry at once, however old the oldest snapshot
 *	  is (PgQ rotates its event tables the same way).  See src/README.md,
 *	  "Run storage 0.2", Rotation; the count-delta segments of maintenance.c
 *	  work alike.
 *
 *	  A call handles the families in turn, and for each, with c the current
 *	  segment and o the other:
 *	  - Carry (ready and delayed only): up to a batch of o's live rows is
 *	    moved to c, in o's heap order, each row locked with FOR UPDATE SKIP
 *	    LOCKED, in the caller's transaction and without any table lock
 *	    beyond the usual.  Claims, promotions and expiry pick their rows
 *	    with SKIP LOCKED too, so none waits for the other; a run being
 *	    claimed is left where it is.  Executing rows are not carried this
 *	    way: heartbeat, complete and fail update or delete them by run_id
 *	    with a plain (waiting) statement, which, had the row moved while it
 *	    waited, would find its old version deleted and the run gone.
 *	  - Truncate: once a carry comes back short (nothing more it can move),
 *	    or right away for executing, o's AccessExclusiveLock is taken if it
 *	    is free within QE_ROTATION_LOCK_WAIT (lock_segment()): no
 *	    transaction then holds any lock on o, so every row in it is
 *	    committed (or aborted) and this statement's
 *	    snapshot, taken after the lock, sees every live one; all of them go
 *	    to c in one statement and o is truncated.  Every reader reads a
 *	    family through its parent, which locks both segments, so a
 *	    statement that comes for o meanwhile waits for the lock, and then
 *	    (its snapshot taken after its locks) finds its rows in c: a
 *	    complete() waiting behind the lock completes the carried row.  If
 *	    the lock is taken (by any reader or writer of the family, even one
 *	    idle in a transaction) the segment is tried again on the next call.
 *	  - Switch: when o is empty and c has grown to QE_RUN_SEGMENT_PAGES and
 *	    at least QE_RUN_SEGMENT_DEAD_RATIO times the pages its live rows
 *	    fill (estimated from a sample of its pages), o becomes current: new
 *	    rows go there, and the next calls carry what is still live in the
 *	    old one and truncate it.
 *
 *	  Writers may insert into either segment at any time (a statement
 *	  planned just before a switch inserts into the old one): a row
 *	  inserted into o before the truncation is carried by it (its writer
 *	  holds o's lock until it commits, so the truncation waits for the next
 *	  call), and one inserted after it simply lands in the emptied segment.
 *	  Nothing is lost either way; the current segment is only where most
 *	  rows go.
 *
 *	  Carrying is not a state change: a carried run keeps its state, its
 *	  counts and its limits; only the ready hints must hear of it, since
 *	  each carried ready row is a new index entry (dispatch_hints.c's rule:
 *	  whoever adds a queued entry lowers the queue's hint).
 *
 *	  TRUNCATE is not MVCC-safe: a REPEATABLE READ or SERIALIZABLE
 *	  snapshot taken before it sees the truncated segment empty, and the
 *	  carried rows (committed after it) not at all, so such a transaction
 *	  may find a family emptier than it is (a dequeue comes back short, a
 *	  get_run says no such run) but never loses or doubles a run.  For the
 *	  same reason a caller under such a snapshot must not truncate itself:
 *	  rows committed between its snapshot and the lock would be invisible
 *	  to the carry and truncated; so only READ COMMITTED calls truncate
 *	  (the worker's and run_maintenance()'s), and others only carry.
 *
 *	  Order.  Claims take runs in (priority, run_at, run_id) order, all
 *	  three in the ready order indexes, so where a row lies (segment, heap
 *	  position) never changes which run comes first; carrying keeps o's
 *	  heap order only to keep the index insertions sequential.
 *
 *	  Without a shared state the current segment reads 0 and a switch is
 *	  lost; a backend always has one (segments.c, shmem.c: it is attached
 *	  or the statement fails), so that case does not arise; were it to,
 *	  rotation would keep clearing segment 1 into 0 and never truncate 0.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* How long a rotation waits for a segment's lock (lock_timeout syntax). */
#define QE_ROTATION_LOCK_WAIT "20ms"


/*
 * A segment is considered for a switch once it has this many pages (1 MB,
 * 5,000 to 10,000 pending runs of small payloads).  Small enough that a
 * rotation's locked step (carrying what is live in it) stays short, that
 * the dead entries a claim may walk between rotations stay few, and that
 * both segments of a family fit in shared buffers with their indexes;
 * large enough that at a few thousand claims a second the segments switch
 * every few seconds, not at every maintenance pass.
 */
#define QE_RUN_SEGMENT_PAGES		128

/*
 * ... and switched only when its pages are at least this many times what
 * its live rows fill: each rotation carries every live row once more, so
 * with a backlog of a million blocked runs a fixed size alone would copy
 * the million at every pass (and, the carried rows filling the new
 * segment past the size at once, back and forth for ever).  At 2, the
 * carrying costs at most one row copy per dead row reclaimed.  Not more:
 * until the switch, claims walk the dead rows' index entries, and
 * switching at 2 rather than 3 gave the sustained mixed load (a
 * 10,000-run backlog) about 9 % more throughput (test/bench/README.md,
 * 2026-12-07, second session).
 */
#define QE_RUN_SEGMENT_DEAD_RATIO	2

/* Pages the live-size estimate reads (worth_switching()). */
#define QE_RUN_SEGMENT_SAMPLE_PAGES 16

/* The columns of a ready or delayed row, in table order. */
#define PENDING_COLUMNS \
	"run_id, run_at, queue_id, policy_id, priority, payload, concurrency_key, meta"

/*
 * What a carrying statement returns, from its CTE "carried" (the inserted
 * rows' queue_id, priority, run_at): per queue the lowest key carried (in
 * the order index's order), and on every row the number carried.
 */
#define CARRIED_RESULT \
	"SELECT DISTINCT ON (queue_id) queue_id, priority, run_at, count(*) OVER ()"

/*
 * One batch of a pending family's other segment (%2$s) carried to the
 * current one (%1$s): up to $1 live rows after ctid $2 that no one holds,
 * in heap order, and (the last column) the last ctid carried.  The TID
 * range scan reads o forward from $2 and stops at the batch's end, so a
 * batch neither sorts nor rereads the pages earlier batches emptied.
 */
#define CARRY_BATCH_SQL \
	"WITH moved AS (" \
	"  DELETE FROM queue_engine.%2$s x" \
	"   WHERE x.ctid = ANY (ARRAY(SELECT y.ctid FROM queue_engine.%2$s y" \
	"                              WHERE y.ctid > $2 LIMIT $1 FOR UPDATE SKIP LOCKED))" \
	"  RETURNING x.ctid AS old_ctid, x.*)," \
	" carried AS (" \
	"  INSERT INTO queue_engine.%1$s (" PENDING_COLUMNS ")" \
	"  SELECT " PENDING_COLUMNS " FROM moved ORDER BY old_ctid" \
	"  RETURNING queue_id, priority, run_at)" \
	CARRIED_RESULT ", (SELECT max(old_ctid) FROM moved)" \
	"  FROM carried ORDER BY queue_id, priority DESC, run_at"

/*
 * Every live row of the other segment (%2$s), locked by the caller,
 * carried to the current one (%1$s) in heap order: all columns, the
 * segments of a family having the parent's and no others.
 */
#define CARRY_ALL_SQL \
	"WITH carried AS (" \
	"  INSERT INTO queue_engine.%1$s SELECT * FROM queue_engine.%2$s x ORDER BY x.ctid" \
	"  RETURNING queue_id, priority, run_at)" \
	CARRIED_RESULT \
	"  FROM carried ORDER BY queue_id, priority DESC, run_at"

/* Saved plans, per family and per segment carried from (or measured). */
static SPIPlanPtr carry_batch_plans[QE_FAMILY_COUNT][2];
static SPIPlanPtr carry_all_plans[QE_FAMILY_COUNT][2];
static SPIPlanPtr truncate_plans[QE_FAMILY_COUNT][2];

/*
 * Where this backend's last batch out of a segment stopped: the next one
 * starts after it, so run_maintenance()'s batches walk a segment once
 * rather than from its start each time.  Tied to the segment's file, so a
 * TRUNCATE (a new file) starts it over; reset when a batch reaches the
 * end, so that rows passed over (held by a claim then) are looked at
 * again by a later call.  Only ever a starting point: a row before it is
 * carried by the truncation all the same.
 */
typedef struct CarryCursor
{
	Oid			relfilenode;
	ItemPointerData after;
} CarryCursor;

static CarryCursor cursors[QE_FAMILY_COUNT][2];

/*
 * The saved plan of a statement over segments of a family: sql_fmt names
 * them as %1$s and %2$s (name1, name2).
 */
static SPIPlanPtr
segment_plan(SPIPlanPtr *slot, const char *sql_fmt, const char *name1,
			 const char *name2, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		char	   *sql = psprintf(sql_fmt, name1, name2);

		qe_plan(slot, sql, nargs, argtypes);
		pfree(sql);
	}
	return *slot;
}

/*
 * The result of a carrying statement (CARRIED_RESULT): lower each queue's
 * ready hint to its lowest carried key when the family is ready; returns
 * how many rows were carried.
 */
static int64
carried_rows(QeFamily family)
{
	bool		isnull;

	if (SPI_processed == 0)
		return 0;
	if (family == QE_FAMILY_READY)
	{
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			QeReadyKey	key;

			key.priority = DatumGetInt32(qe_get((int) i, 2, &isnull));
			key.run_at = DatumGetTimestampTz(qe_get((int) i, 3, &isnull));
			/* Before any run with that key: ties are in heap order now. */
			key.run_id = 0;
			qe_ready_hint_lower(DatumGetInt32(qe_get((int) i, 1, &isnull)), &key);
		}
	}
	return qe_get_int64(0, 4);
}

/*
 * Up to limit live rows of a pending family's other segment carried to
 * the current one, from where this backend's last batch stopped.  Returns
 * how many; fewer than limit when it reached the segment's end.
 */
static int64
carry_batch(QeFamily family, int from, Oid relfilenode, int limit)
{
	CarryCursor *cursor = &cursors[family][from];
	Datum		values[2];
	bool		isnull;
	int64		n;

	if (cursor->relfilenode != relfilenode)
	{
		cursor->relfilenode = relfilenode;
		ItemPointerSet(&cursor->after, 0, InvalidOffsetNumber);
	}
	values[0] = Int32GetDatum(limit);
	values[1] = PointerGetDatum(&cursor->after);
	qe_exec(segment_plan(&carry_batch_plans[family][from], CARRY_BATCH_SQL,
						 qe_segment_names[family][1 - from], qe_segment_names[family][from],
						 2, (Oid[]) {INT4OID, TIDOID}),
			values, NULL, 0);
	n = carried_rows(family);
	if (n >= limit)
		ItemPointerCopy((ItemPointer) DatumGetPointer(qe_get(0, 5, &isnull)), &cursor->after);
	else
		ItemPointerSet(&cursor->after, 0, InvalidOffsetNumber);
	return n;
}

/*
 * Every live row of the other segment carried to the current one, and the
 * segment truncated; the caller holds its AccessExclusiveLock.  Returns
 * the rows carried plus one (the segment).
 */
static int64
carry_all_and_truncate(QeFamily family, int from)
{
	int64		n;

	qe_exec(segment_plan(&carry_all_plans[family][from], CARRY_ALL_SQL,
						 qe_segment_names[family][1 - from], qe_segment_names[family][from],
						 0, NULL),
			NULL, NULL, 0);
	n = carried_rows(family);
	qe_exec(segment_plan(&truncate_plans[family][from], "TRUNCATE queue_engine.%1$s",
						 qe_segment_names[family][from], qe_segment_names[family][from],
						 0, NULL),
			NULL, NULL, 0);
	return n + 1;
}

/*
 * Is the current segment, of blocks pages, worth leaving: large, and
 * mostly dead rows?  The space its live rows take is estimated from
 * QE_RUN_SEGMENT_SAMPLE_PAGES pages spread evenly over it (claims empty a
 * segment from its front, so the first pages alone would say "all dead").
 * Live means visible to a dirty snapshot: committed and not deleted, or
 * inserted or deleted by a transaction still running.  An MVCC snapshot
 * would count the rows of an enqueue_batch still in progress as dead, and
 * switch (and then carry them all) for nothing.
 */
static bool
worth_switching(QeFamily family, int current, BlockNumber blocks)
{
	Relation	rel;
	SnapshotData dirty;
	BufferAccessStrategy strategy;
	BlockNumber step;
	BlockNumber sampled = 0;
	double		live_bytes = 0;
	double		live_pages;

	if (blocks < QE_RUN_SEGMENT_PAGES)
		return false;
	InitDirtySnapshot(dirty);
	strategy = GetAccessStrategy(BAS_BULKREAD);
	rel = qe_open_table(qe_segment_names[family][current], AccessShareLock);
	step = Max(blocks / QE_RUN_SEGMENT_SAMPLE_PAGES, 1);
	for (BlockNumber blk = step / 2; blk < blocks; blk += step)
	{
		Buffer		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blk, RBM_NORMAL, strategy);
		Page		page;
		OffsetNumber maxoff;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			ItemId		item = PageGetItemId(page, off);
			HeapTupleData tuple;

			if (!ItemIdIsNormal(item))
				continue;
			tuple.t_data = (HeapTupleHeader) PageGetItem(page, item);
			tuple.t_len = ItemIdGetLength(item);
			tuple.t_tableOid = RelationGetRelid(rel);
			ItemPointerSet(&tuple.t_self, blk, off);
			if (HeapTupleSatisfiesVisibility(&tuple, &dirty, buf))
				live_bytes += MAXALIGN(tuple.t_len) + sizeof(ItemIdData);
		}
		UnlockReleaseBuffer(buf);
		sampled++;
	}
	table_close(rel, NoLock);
	FreeAccessStrategy(strategy);
	live_pages = live_bytes / Max(sampled, 1) * blocks / BLCKSZ;
	return blocks >= QE_RUN_SEGMENT_DEAD_RATIO * live_pages;
}

/*
 * This backend's backoff from waiting for a family's segment lock
 * (seconds, and until when); reset by a rotation that got the lock.
 */
#define QE_ROTATION_BACKOFF_MAX_S 30
static int	lock_wait_backoff[QE_FAMILY_COUNT];
static TimestampTz lock_wait_after[QE_FAMILY_COUNT];

/*
 * Take a segment's AccessExclusiveLock, waiting at most
 * QE_ROTATION_LOCK_WAIT for it (unless !wait).  Not waiting at all would
 * almost never get it under load: every claim and finish locks both segments of the
 * family it reads, and the lock is free only at an instant when none is
 * running.  Queued for it, this call makes the statements that come for
 * the family meanwhile wait behind it for that long at most (and for the
 * carry and TRUNCATE after).  A subtransaction, so that a timeout only
 * gives the segment up until the next call.
 */
static bool
lock_segment(Oid relid, bool wait)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool locked = false;

	if (ConditionalLockRelationOid(relid, AccessExclusiveLock))
		return true;
	if (!wait)
		return false;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		int			level = NewGUCNestLevel();

		(void) set_config_option("lock_timeout", QE_ROTATION_LOCK_WAIT,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		LockRelationOid(relid, AccessExclusiveLock);
		AtEOXact_GUC(true, level);
		ReleaseCurrentSubTransaction();
		locked = true;
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
		/*
		 * A deadlock too: a session of the user's own that holds the
		 * segment and queues for it exclusively (LOCK TABLE) while this
		 * call waits.  Given up until the next call, as for a timeout.
		 */
		if (error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE &&
			error->sqlerrcode != ERRCODE_T_R_DEADLOCK_DETECTED)
			ReThrowError(error);
		FreeErrorData(error);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;
	return locked;
}

/*
 * One family: carry and truncate its other segment, or switch; budget (at
 * least 1) is how many rows a carry batch may move.  Returns rows carried plus
 * segments truncated.
 */
static int64
rotate_family(QeFamily family, int budget, bool wait)
{
	int			current = qe_current_segment(family);
	int			other = 1 - current;
	Oid			oids[2];
	Oid			relfilenodes[2];
	BlockNumber blocks[2];
	int64		n = 0;

	for (int i = 0; i < 2; i++)
	{
		Relation	rel = qe_open_table(qe_segment_names[family][i], AccessShareLock);

		oids[i] = RelationGetRelid(rel);
		relfilenodes[i] = RelationGetForm(rel)->relfilenode;
		blocks[i] = RelationGetNumberOfBlocks(rel);
		/* Closed (lock kept): TRUNCATE refuses a table this session has open. */
		table_close(rel, NoLock);
	}

	if (blocks[other] == 0)
	{
		if (!worth_switching(family, current, blocks[current]))
			return 0;
		qe_set_current_segment(family, other);
		/* The segment just left is cleared from the next call on. */
		return 0;
	}

	if (family != QE_FAMILY_EXECUTING)
	{
		n = carry_batch(family, other, relfilenodes[other], budget);
		if (n >= budget)
			return n;			/* more to carry: the next call goes on */
	}
	/*
	 * One rotator per family at a time takes the segment's lock.  Two that
	 * both hold it shared (opened above) and both queue for it exclusive
	 * would each wait for the other; PostgreSQL fails the second at once
	 * with "deadlock detected" (two run_maintenance() calls at once, or one
	 * beside the worker, did).  Busy: another pass is truncating this
	 * family; leave it to that one.
	 */
	if (!IsolationUsesXactSnapshot() &&
		qe_try_xact_lock_mode(QE_LOCK_ROTATION, (uint32) family, 0, ExclusiveLock))
	{
		TimestampTz now = GetCurrentTimestamp();
		bool		may_wait = wait && now >= lock_wait_after[family];

		if (lock_segment(oids[other], may_wait))
		{
			elog(DEBUG1, "queue_engine: truncating %s", qe_segment_names[family][other]);
			n += carry_all_and_truncate(family, other);
			lock_wait_backoff[family] = 0;
			lock_wait_after[family] = 0;
		}
		else if (may_wait)
		{
			elog(DEBUG1, "queue_engine: %s busy, backing off", qe_segment_names[family][other]);
			/*
			 * Someone holds the segment for longer than a claim does (a
			 * report, an idle transaction that read the runs): waiting
			 * every call would stall every claim each time.  Back off:
			 * 1 s, doubling, at most QE_ROTATION_BACKOFF_MAX_S; meanwhile
			 * only a free lock is taken.
			 */
			lock_wait_backoff[family] =
				Min(Max(lock_wait_backoff[family] * 2, 1), QE_ROTATION_BACKOFF_MAX_S);
			lock_wait_after[family] = now + lock_wait_backoff[family] * USECS_PER_SEC;
		}
	}
	return n;
}

/*
 * One batch of rotation over the families in turn: up to limit rows
 * carried (by batches; a truncation carries what is left, however many,
 * and a family's turn comes only while the batch is not spent), returning
 * the rows carried plus the segments truncated.  A switch counts for
 * nothing, so a call that has nothing to carry or truncate returns 0
 * and run_maintenance() moves on; the next call (or pass) clears the
 * segment it left.
 */
static int64
rotate_families(int limit, bool wait)
{
	int64		n = 0;

	/* Once the batch is spent, the families after wait for the next call. */
	for (int f = 0; f < QE_FAMILY_COUNT && n < limit; f++)
		n += rotate_family((QeFamily) f, limit - (int) n, wait);
	return n;
}

/* The task as the worker and run_maintenance() run it: locks waited for. */
int64
qe_task_rotate_segments(int limit)
{
	return rotate_families(limit, true);
}

/*
 * rotate_segments(), called by hand or by a test: takes a segment's lock
 * only if it is free, so that a caller never queues behind a long reader.
 */
int64
qe_task_rotate_segments_nowait(int limit)
{
	return rotate_families(limit, false);
}
