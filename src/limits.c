/*-------------------------------------------------------------------------
 *
 * limits.c
 *	  Admission (dequeue.h): how many runs a queue may start now without
 *	  exceeding its tenant's, its own or a concurrency key's limit, and
 *	  the limit hints that let dequeue(NULL) pass a queue at its limit by.
 *
 *	  Limits are enforced without counter rows: a limited queue, tenant or
 *	  key is guarded by a transaction-level lock taken with NOWAIT (busy
 *	  means "someone else is starting runs there; skip it"), and its
 *	  executing runs are counted from a partial index whose size is bounded
 *	  by the limit itself.  Unlimited queues take no lock and touch no
 *	  shared row, so their dequeuers run fully in parallel.  A limited
 *	  queue is admitted in one of two ways (QeAdmission): side by side
 *	  under slot locks, or serialised under its exclusive lock.
 *
 *	  Limit hints.  A dequeuer that leaves a limited queue at its limit
 *	  marks it so when it commits, stamped with the queue's count of
 *	  finished executions it read before counting the executing runs.
 *	  Every transaction that takes runs out of executing (complete, fail,
 *	  cancel, rescue: run_state.c) adds to that count when it commits,
 *	  which voids the mark; so does a changed limit, a consistency check,
 *	  and age (QE_LIMIT_HINT_TTL_US, for anything done behind the engine's
 *	  back).  A void mark only means the queue's executing runs are
 *	  counted again, and a walk that counts a queue at its limit marks it
 *	  too.  The marks and counts live in dispatch_hints.c's shared table;
 *	  this file decides when to read and write them.
 *
 *-------------------------------------------------------------------------
 */
#include "dequeue.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "miscadmin.h"
#include "storage/lock.h"

/*
 * A queue limit up to this many is held by slots: each executing run of
 * the queue holds one slot number below the limit, taken under a lock of
 * its own, so dequeuers of one limited queue start runs side by side
 * instead of one transaction at a time.  Above it, starts are serialised.
 */
#define QE_MAX_SLOTTED_LIMIT 10000

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
bool
qe_tenant_lock(QeTenant *t)
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
bool
qe_tenant_lock_fresh(QeTenant *t)
{
	static SPIPlanPtr plan = NULL;

	if (!qe_tenant_lock(t))
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
		if (!qe_tenant_lock(t))
			return false;
		qe_queue_definitions_refresh();
	}
	return true;
}

/* Let a tenant's claim lock go when this call started nothing in it. */
void
qe_tenant_unlock_unclaimed(QeTenant *t)
{
	if (t->claimed > 0)
		return;
	if (t->held_share)
		qe_release_xact_lock(QE_LOCK_TENANT, (uint32) t->tenant_id, 0, ShareLock);
	if (t->held_exclusive)
		qe_release_xact_lock(QE_LOCK_TENANT, (uint32) t->tenant_id, 0, ExclusiveLock);
	t->held_share = t->held_exclusive = false;
}

/* Executing runs of one queue, or of all a tenant's queues. */
static int64
count_executing(bool tenant, int32 id)
{
	static SPIPlanPtr queue_plan = NULL;
	static SPIPlanPtr tenant_plan = NULL;
	Datum		values[1];

	qe_plan(&queue_plan,
			"SELECT count(*) FROM queue_engine.executing x WHERE x.queue_id = $1",
			1, (Oid[]) {INT4OID});
	qe_plan(&tenant_plan,
			"SELECT count(*) FROM queue_engine.executing x"
			" WHERE x.queue_id = ANY (ARRAY("
			"   SELECT q.queue_id FROM queue_engine.queues q WHERE q.tenant_id = $1))",
			1, (Oid[]) {INT4OID});
	values[0] = Int32GetDatum(id);
	/* Index scans, not bitmap ones: see read_queue_slots(). */
	qe_exec_in_order(tenant ? tenant_plan : queue_plan, values, NULL, 1);
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
			"SELECT x.queue_slot FROM queue_engine.executing x WHERE x.queue_id = $1",
			1, (Oid[]) {INT4OID});
	values[0] = Int32GetDatum(q->queue_id);

	/*
	 * By a plain index scan: it marks the entries of runs finished for good
	 * dead in the index as it passes them (kill_prior_tuple), so the next
	 * read skips them.  A bitmap scan, which the planner prefers for a
	 * queue whose executing rows it cannot tell apart from its finished
	 * ones, never marks them, and visits every dead row each time: until
	 * the segment's next rotation (seconds with the worker, minutes where
	 * run_maintenance comes from pg_cron), the read grew with every run
	 * the queue finished (workload 5 without preloading: 0.61).
	 */
	n = qe_exec_in_order(plan, values, NULL, 0);
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

	if (q->admission == QE_ADMIT_SLOTS)
		qe_release_xact_lock(QE_LOCK_QUEUE, (uint32) q->queue_id, 0, ShareLock);
	q->admission = QE_ADMIT_UNDECIDED;
	if (!qe_try_xact_lock(QE_LOCK_QUEUE, (uint32) q->queue_id, 0))
		return false;
	q->admission = QE_ADMIT_SERIALISED;
	if (q->assign_slots)
		q->running = read_queue_slots(q, q->slot_used, &out_of_range);
	else
		q->running = count_executing(false, q->queue_id);
	return true;
}

/*
 * How many runs the queue may start now, at most want: within its tenant's
 * limit (under the tenant's lock, taken exclusive when the tenant has a
 * limit) and its own (slots or serialised, decided at its first claim in
 * this call).  For a queue whose runs take slots, the slots for them are
 * in q->slots.  Zero or less: none (the caller marks the queue exhausted).
 */
int
qe_admit(QeCandidate *q, QeTenant *t, int want)
{
	if (t->limit > 0)
	{
		if (t->locked_out)
			return 0;
		if (t->running < 0)
		{
			if (!qe_tenant_lock(t))
			{
				t->locked_out = true;
				return 0;
			}
			t->running = count_executing(true, t->tenant_id);
		}
		want = Min(want, t->limit - t->running);
	}
	if (q->limit <= 0)
	{
		q->admission = QE_ADMIT_UNLIMITED;
		return want;
	}
	if (q->admission == QE_ADMIT_UNDECIDED)
	{
		/*
		 * Slots when every executing run holds a slot below the limit
		 * (take_free_slots finds out, reading the slots once it holds some);
		 * otherwise (runs started before the limit was set or lowered)
		 * starts are serialised by the exclusive queue lock.
		 */
		q->assign_slots = (q->limit <= QE_MAX_SLOTTED_LIMIT);
		q->exits_seen = qe_limit_hint_exits(q->queue_id);
		if (q->assign_slots)
		{
			q->slot_used = palloc0(sizeof(bool) * q->limit);
			q->slots = palloc(sizeof(int) * q->limit);
			if (qe_try_xact_lock_mode(QE_LOCK_QUEUE, (uint32) q->queue_id, 0,
									  ShareLock))
			{
				q->admission = QE_ADMIT_SLOTS;
				q->running = 0; /* until take_free_slots reads the slots */
			}
		}
		if (q->admission != QE_ADMIT_SLOTS && !serialise_queue(q))
			return 0;
	}
	want = Min(want, q->limit - q->running);
	if (q->admission == QE_ADMIT_SLOTS && want > 0)
	{
		int			got = take_free_slots(q, want);

		if (got >= 0)
			want = got;
		else if (!serialise_queue(q))
			return 0;
		else
			want = Min(want, q->limit - q->running);
	}
	if (q->admission == QE_ADMIT_SERIALISED && q->assign_slots && want > 0)
	{
		/*
		 * The exclusive lock keeps every other starter out: free slots below
		 * the limit need no locks of their own.  There are enough, as
		 * running counts the slotless runs too.
		 */
		q->nslots = 0;
		for (int slot = 0; slot < q->limit && q->nslots < want; slot++)
			if (!q->slot_used[slot])
				q->slots[q->nslots++] = slot;
	}
	return want;
}

/* A run the claim started took this slot of the queue. */
void
qe_admit_slot_taken(QeCandidate *q, int32 slot)
{
	q->slot_used[slot] = true;
	last_slot_queue_id = q->queue_id;
	last_slot = slot;
}

/*
 * After the claim: started of the admitted runs did start.  Keeps the locks
 * of the slots now held by started runs only, counts the runs, and marks
 * the queue at its limit when it is.
 */
void
qe_admit_done(QeCandidate *q, QeTenant *t, int admitted, uint64 started)
{
	if (q->assign_slots)
	{
		for (int i = 0; q->admission == QE_ADMIT_SLOTS && i < q->nslots; i++)
			if (!q->slot_used[q->slots[i]])
				qe_release_xact_lock(QE_LOCK_QUEUE_SLOT, (uint32) q->queue_id,
									 (uint32) q->slots[i], ExclusiveLock);
		q->nslots = 0;
	}
	if (started < (uint64) admitted)
		q->exhausted = true;
	if (q->admission == QE_ADMIT_SLOTS || q->admission == QE_ADMIT_SERIALISED)
	{
		q->running += started;
		if (q->running >= q->limit)
			qe_limit_hint_mark(q->queue_id, q->limit, q->exits_seen);
	}
	if (t->running >= 0)
		t->running += started;
	t->claimed += started;
}

/* Executing runs of one concurrency key of a queue. */
int64
qe_key_executing(int32 queue_id, text *key)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2];

	qe_plan(&plan,
			"SELECT count(*) FROM queue_engine.executing x"
			" WHERE x.queue_id = $1 AND x.concurrency_key = $2",
			2, (Oid[]) {INT4OID, TEXTOID});
	values[0] = Int32GetDatum(queue_id);
	values[1] = PointerGetDatum(key);
	qe_exec(plan, values, NULL, 1);
	return qe_get_int64(0, 1);
}

/*
 * Lock a concurrency key of a queue for starts, without waiting, and count
 * its executing runs under the lock: how many more may start (the lock
 * kept), or 0 when the lock is busy or the key full (the lock let go).
 */
int64
qe_key_admit(int32 queue_id, uint32 key_hash, text *key, int32 key_limit)
{
	int64		room;

	if (!qe_try_xact_lock(QE_LOCK_KEY, (uint32) queue_id, key_hash))
		return 0;
	room = key_limit - qe_key_executing(queue_id, key);
	if (room > 0)
		return room;
	qe_release_xact_lock(QE_LOCK_KEY, (uint32) queue_id, key_hash, ExclusiveLock);
	return 0;
}

/*
 * Limit hints.
 */

/*
 * A limit mark older than this is void (the queue is counted again), for
 * runs finished behind the engine's back; check_consistency() voids all.
 */
#define QE_LIMIT_HINT_TTL_US	(60 * USECS_PER_SEC)

/* Limit-hint changes a transaction keeps for its commit. */
#define QE_PENDING_MAX		64

typedef struct QePendingMark
{
	int32		queue_id;
	int32		limit;
	uint64		exits;
	int			nest_level;
} QePendingMark;

static int32 pending_exits[QE_PENDING_MAX];
static int	npending_exits = 0;
static bool pending_exits_overflow = false;
static QePendingMark pending_marks[QE_PENDING_MAX];
static int	npending_marks = 0;

/*
 * At the end of the transaction (xact.c; must not fail: spinlocks only).
 * Commit publishes what it did: its exits void the queues' marks, and its
 * marks are set unless an exit came meanwhile.  Prepare publishes the
 * exits (voiding a mark is always safe) but not the marks, which would
 * hold even if the prepared transaction later rolled back.  Abort forgets
 * both.
 */
void
qe_limit_hints_xact_end(bool committed, bool prepared)
{
	if (committed || prepared)
	{
		for (int i = 0; i < npending_exits; i++)
			qe_hint_count_exit(pending_exits[i]);
		if (pending_exits_overflow)
			qe_hint_count_exit_all();
	}
	if (committed)
		for (int i = 0; i < npending_marks; i++)
			qe_hint_set_at_limit(pending_marks[i].queue_id, pending_marks[i].limit,
								 pending_marks[i].exits);
	npending_exits = 0;
	pending_exits_overflow = false;
	npending_marks = 0;
}

/* A rolled-back subtransaction's marks go (its exits may stay: harmless). */
void
qe_limit_hints_subxact_abort(void)
{
	int			level = GetCurrentTransactionNestLevel();
	int			kept = 0;

	for (int i = 0; i < npending_marks; i++)
		if (pending_marks[i].nest_level < level)
			pending_marks[kept++] = pending_marks[i];
	npending_marks = kept;
}

/*
 * The queue's count of finished executions, read before counting its
 * executing runs, for qe_limit_hint_mark().
 */
uint64
qe_limit_hint_exits(int32 queue_id)
{
	if (!qe_limit_hints_enabled())
		return 0;
	return qe_hint_exits(queue_id);
}

/*
 * This transaction leaves queue_id at its limit; exits is what
 * qe_limit_hint_exits() said before the executing runs were counted.
 * Takes effect at commit, unless a run of the queue finished meanwhile.
 */
void
qe_limit_hint_mark(int32 queue_id, int32 limit, uint64 exits)
{
	if (npending_marks == QE_PENDING_MAX || !qe_limit_hints_enabled())
		return;					/* no mark: the queue is probed, as always */
	pending_marks[npending_marks].queue_id = queue_id;
	pending_marks[npending_marks].limit = limit;
	pending_marks[npending_marks].exits = exits;
	pending_marks[npending_marks].nest_level = GetCurrentTransactionNestLevel();
	npending_marks++;
}

/* This transaction takes a run of queue_id out of executing. */
void
qe_limit_hint_exit(int32 queue_id)
{
	if (!qe_limit_hints_enabled())
		return;
	for (int i = 0; i < npending_exits; i++)
		if (pending_exits[i] == queue_id)
			return;
	if (npending_exits < QE_PENDING_MAX)
		pending_exits[npending_exits++] = queue_id;
	else
		pending_exits_overflow = true;
}

/* This transaction takes runs of queues it cannot name out of executing. */
void
qe_limit_hint_exit_all(void)
{
	if (!qe_limit_hints_enabled())
		return;
	pending_exits_overflow = true;
}

/* Is queue_id marked at exactly this limit, and the mark still good? */
static bool
marked_at_limit(int32 queue_id, int32 limit)
{
	TimestampTz since = 0;

	return qe_hint_at_limit(queue_id, limit, &since) &&
		GetCurrentTimestamp() - since < QE_LIMIT_HINT_TTL_US;
}

/*
 * May the queue start a run as far as its own limit (> 0) goes?
 * dequeue(NULL)'s queue walk asks it of every limited queue it passes.  A
 * queue marked at its limit is answered from the mark; otherwise its
 * executing runs are counted (few: the limit bounds them), and a queue
 * found at its limit is marked when this transaction commits, so the next
 * walks pass it by.  SPI must be connected.
 */
bool
qe_queue_below_limit_now(int32 queue_id, int32 limit)
{
	uint64		exits;

	if (qe_limit_hints_enabled() && marked_at_limit(queue_id, limit))
		return false;
	exits = qe_limit_hint_exits(queue_id);	/* before counting */
	if (count_executing(false, queue_id) >= limit)
	{
		qe_limit_hint_mark(queue_id, limit, exits);
		return false;
	}
	return true;
}

/*
 * queue_engine.queue_at_limit_marked(queue_id, concurrency_limit): is the
 * queue marked at this limit, the mark still good?  The filter of
 * dequeue(NULL)'s queue walk (dequeue.c): a queue so marked is passed by
 * at its index entry, before the walk's probe for a queued run, where
 * qe_queue_below_limit_now() would refuse it from the same mark.  No SPI,
 * no SET clause: it runs once per limited queue walked.
 */
PG_FUNCTION_INFO_V1(qe_queue_at_limit_marked);

Datum
qe_queue_at_limit_marked(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(qe_limit_hints_enabled() &&
				   marked_at_limit(PG_GETARG_INT32(0), PG_GETARG_INT32(1)));
}

/*
 * queue_engine.queue_below_limit(queue_id, concurrency_limit): the same,
 * from SQL (NULL limit: none).  dequeue() no longer calls it.
 */
PG_FUNCTION_INFO_V1(qe_queue_below_limit);

Datum
qe_queue_below_limit(PG_FUNCTION_ARGS)
{
	int32		queue_id;
	bool		below;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue_id must not be null"),
				 errhint("queue_below_limit() is internal to dequeue(); pass a queue's id.")));
	queue_id = PG_GETARG_INT32(0);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(true);	/* no limit */
	SPI_connect();
	below = qe_queue_below_limit_now(queue_id, PG_GETARG_INT32(1));
	SPI_finish();
	PG_RETURN_BOOL(below);
}
