/*-------------------------------------------------------------------------
 *
 * dequeue.c
 *	  Executing runs: dequeue(), its scheduling (dequeue.h).  Checks the
 *	  arguments, resolves queue names, and serves tenants and, within each
 *	  tenant, queues in turn; for each queue it asks admission (limits.c)
 *	  how many runs may start, and the claim (claim.c) starts them with
 *	  FOR UPDATE SKIP LOCKED, never starting a run that would exceed its
 *	  queue's, tenant's or concurrency key's limit.
 *
 *-------------------------------------------------------------------------
 */
#include "dequeue.h"
#include "segments.h"
#include "wakeups.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

PG_FUNCTION_INFO_V1(qe_dequeue);

/*
 * Claim up to want runs from one queue, within its limits.  Marks the
 * queue exhausted when it can give nothing more in this call.
 */
static uint64
claim_from_queue(QeDequeueCall *call, QeCandidate *q, QeTenant *t, int want)
{
	int			admitted = qe_admit(q, t, want);
	uint64		n;

	if (admitted <= 0)
	{
		q->exhausted = true;
		return 0;
	}
	n = qe_claim(call, q, t, admitted);
	qe_admit_done(q, t, admitted, n);
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
		single_tenant->tenant_id = DatumGetInt32(qe_get(0, 3, &isnull));
		single_tenant->tenant = TextDatumGetCString(qe_get(0, 4, &isnull));
		single_tenant->limit = DatumGetInt32(qe_get(0, 7, &isnull));
		single_tenant->running = -1;
		*single_paused = DatumGetBool(qe_get(0, 8, &isnull));
	}
	return construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT);
}

/*
 * Are there delayed runs whose time has come?  A probe of each delayed
 * segment's run_at index, so that a dequeue pays for promoting only when
 * there is work; a segment with no pages (most of the time, for a queue
 * without delays) is passed without a look.  Not a statement: starting
 * one cost a dequeue more than the probe itself.  A guess either way is
 * harmless (the promotion decides by its own statement; maintenance
 * promotes what a dequeue did not).
 */
static bool
due_delayed_runs_exist(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			nsp = get_namespace_oid("queue_engine", false);
	bool		due = false;

	for (int s = 0; s < 2 && !due; s++)
	{
		const char *name = qe_segment_names[QE_FAMILY_DELAYED][s];
		Relation	rel = qe_try_open_table(name, AccessShareLock);
		char		index_name[NAMEDATALEN];
		Oid			index_oid;
		Relation	index;
		ScanKeyData key;
		IndexScanDesc scan;
		TupleTableSlot *slot;

		if (rel == NULL)
		{
			/* (no segments: the statement through the parent says why) */
			qe_plan(&plan,
					"SELECT 1 FROM queue_engine.delayed x WHERE x.run_at <= now() LIMIT 1",
					0, NULL);
			return qe_exec(plan, NULL, NULL, 1) > 0;
		}
		snprintf(index_name, sizeof(index_name), "%s_run_at", name);
		index_oid = get_relname_relid(index_name, nsp);
		if (RelationGetNumberOfBlocks(rel) == 0 || !OidIsValid(index_oid))
		{
			due = RelationGetNumberOfBlocks(rel) > 0;	/* (no index: say yes) */
			table_close(rel, NoLock);
			continue;
		}
		index = index_open(index_oid, AccessShareLock);
		ScanKeyInit(&key, 1, BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
					TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()));
		scan = qe_index_beginscan(rel, index,
								  ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot(),
								  1, 0);
		index_rescan(scan, &key, 1, NULL, 0);
		slot = table_slot_create(rel, NULL);
		due = index_getnext_slot(scan, ForwardScanDirection, slot);
		ExecDropSingleTupleTableSlot(slot);
		index_endscan(scan);
		index_close(index, NoLock);
		table_close(rel, NoLock);
	}
	return due;
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

/* Queues the walk below reads at a time once it has passed one by. */
#define QE_WALK_BATCH 16

/*
 * Does the queue have a queued run?  One probe of the ready order indexes
 * (ordered as they are, so that the plan reads each index from its start
 * rather than collecting all the queue's entries), and for a queue with a
 * per-key limit, whose keyed runs are only in _key, one of that if the
 * first found nothing.
 */
#define QUEUED_RUN_PROBE(table) \
	"SELECT 1 FROM (" \
	"  (SELECT 1 FROM queue_engine." table " x" \
	"    WHERE x.queue_id = $1 AND x.concurrency_key IS NULL" \
	"    ORDER BY x.priority DESC, x.run_at, x.run_id LIMIT 1)" \
	"  UNION ALL" \
	"  (SELECT 1 FROM queue_engine." table " x" \
	"    WHERE $2 AND x.queue_id = $1 AND x.concurrency_key IS NOT NULL" \
	"    ORDER BY x.concurrency_key LIMIT 1)) p LIMIT 1"

static bool
has_queued_run(int32 queue_id, bool key_limited)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr segment_plans[2];
	Datum		values[2];
	int			segment = qe_sole_segment(QE_FAMILY_READY);

	values[0] = Int32GetDatum(queue_id);
	values[1] = BoolGetDatum(key_limited);
	if (segment >= 0)
		return qe_exec_in_order(qe_plan_in_segment(segment_plans, QE_FAMILY_READY, segment,
												   QUEUED_RUN_PROBE("%1$s"),
												   2, (Oid[]) {INT4OID, BOOLOID}),
								values, NULL, 1) > 0;
	qe_plan(&plan, QUEUED_RUN_PROBE("ready"), 2, (Oid[]) {INT4OID, BOOLOID});
	return qe_exec_in_order(plan, values, NULL, 1) > 0;
}

/*
 * The next queue of a tenant, after its cursor and wrapping around, that
 * looks startable: unpaused, with a queued run, below its queue limit, and
 * not already found exhausted by this call.  One index walk over the
 * tenant's queues, read a queue at a time, that stops at the first such
 * queue, so its cost is the queues skipped, not all queues.  An unlimited
 * queue is probed for a queued run in the walk; a limited one is first
 * asked of admission (limits.c: from its limit hint, else counted), and
 * probed only when it is below its limit.
 */
static bool
next_queue_of_tenant(int32 tenant_id, int32 after, Datum ids, bool ids_null,
					 int32 *exhausted, int nexhausted, QeCandidate *out)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum	   *ex = palloc(sizeof(Datum) * Max(nexhausted, 1));

	qe_plan_cursor(&plan,
				   "SELECT q.queue_id, q.queue, coalesce(q.concurrency_limit, 0),"
				   "       coalesce(q.key_concurrency_limit, 0)"
				   "  FROM queue_engine.queues q"
	/*
	 * LATERAL ... LIMIT 1: one probe per queue walked, never a semi-join;
	 * gated off for limited queues (a one-time filter on the outer row).
	 */
				   "  LEFT JOIN LATERAL (SELECT true AS queued FROM ("
				   "                      (SELECT 1 FROM queue_engine.ready x"
				   "                        WHERE x.queue_id = q.queue_id"
				   "                          AND x.concurrency_key IS NULL"
				   "                          AND q.concurrency_limit IS NULL"
				   "                        ORDER BY x.priority DESC, x.run_at, x.run_id"
				   "                        LIMIT 1)"
				   "                      UNION ALL"
				   "                      (SELECT 1 FROM queue_engine.ready x"
				   "                        WHERE x.queue_id = q.queue_id"
				   "                          AND x.concurrency_key IS NOT NULL"
				   "                          AND q.concurrency_limit IS NULL"
				   "                          AND q.key_concurrency_limit IS NOT NULL"
				   "                        ORDER BY x.concurrency_key LIMIT 1)) p"
				   "                      LIMIT 1) AS has_queued ON true"
				   " WHERE q.tenant_id = $1 AND q.queue_id > $2 AND q.queue_id <= $5"
				   "   AND q.dropped_at IS NULL AND NOT q.paused"
				   "   AND ($3::int[] IS NULL OR q.queue_id = ANY ($3))"
				   "   AND q.queue_id <> ALL ($4)"
	/*
	 * A limited queue marked at its limit is passed by here, before the
	 * lateral probe is rescanned for it: with many queues at their limit
	 * the walk costs an index entry each (admission below would refuse
	 * it from the same mark).
	 */
				   "   AND (q.concurrency_limit IS NULL"
				   "        OR NOT queue_engine.queue_at_limit_marked(q.queue_id, q.concurrency_limit))"
				   "   AND (q.concurrency_limit IS NOT NULL OR has_queued.queued)"
				   " ORDER BY q.tenant_id, q.queue_id",
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
		Portal		portal;
		long		batch = 1;

		values[1] = Int32GetDatum(pass == 0 ? after : 0);
		values[4] = Int32GetDatum(pass == 0 ? PG_INT32_MAX : after);
		portal = qe_cursor_open(plan, values, nulls);
		for (;;)
		{
			uint64		n;
			QeCandidate *found;

			CHECK_FOR_INTERRUPTS();

			/*
			 * The first queue is usually the one; once one was passed by,
			 * read on in batches (rows read past the one taken cost only
			 * their probes, and a limited queue's is gated off).
			 */
			n = qe_cursor_fetch(portal, batch);
			if (n == 0)
				break;
			batch = QE_WALK_BATCH;
			found = palloc0(sizeof(QeCandidate) * n);
			for (uint64 i = 0; i < n; i++)
			{
				bool		isnull;

				found[i].queue_id = DatumGetInt32(qe_get(i, 1, &isnull));
				found[i].queue = TextDatumGetCString(qe_get(i, 2, &isnull));
				found[i].limit = DatumGetInt32(qe_get(i, 3, &isnull));
				found[i].key_limit = DatumGetInt32(qe_get(i, 4, &isnull));
			}
			for (uint64 i = 0; i < n; i++)
			{
				/*
				 * At its limit (known from a mark, or counted and then
				 * marked), or nothing queued: pass it.
				 */
				if (found[i].limit > 0 &&
					(!qe_queue_below_limit_now(found[i].queue_id, found[i].limit) ||
					 !has_queued_run(found[i].queue_id, found[i].key_limit > 0)))
					continue;
				SPI_cursor_close(portal);
				*out = found[i];
				return true;
			}
			pfree(found);
		}
		SPI_cursor_close(portal);
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
	nrows = (int) qe_exec_in_order(tenants_plan, values, nulls, 0);
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
			if (!qe_tenant_lock_fresh(t))
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
				qe_tenant_unlock_unclaimed(t);
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

/*
 * One claim: the runs of the named queues (names NULL: any queue) that may
 * start now, up to call->remaining, into call's store.  *queue_ids gets
 * the ids the names resolved to (NULL for any queue), for a waiter.
 */
static void
dequeue_once(QeDequeueCall *call, ArrayType *names, int max_runs,
			 ArrayType **queue_ids)
{
	Datum		values[1] = {0};
	char		nulls[1] = {' '};
	QeCandidate single;
	QeTenant	single_tenant;
	bool		have_single = false;
	bool		single_paused = false;
	int			path_level;

	SPI_connect();

	*queue_ids = NULL;
	if (names != NULL)
	{
		/*
		 * One queue: resolve it, take its tenant's claim lock, and resolve
		 * it again if a definition changed before the lock was had (see
		 * qe_tenant_lock).  Changes keep coming only while someone
		 * keeps changing queues: then give up for this call.
		 */
		for (int tries = 0;; tries++)
		{
			uint64		generation = qe_queue_definitions_generation();
			ArrayType  *ids = resolve_queue_names(names, &single, &single_tenant,
												  &have_single, &single_paused);

			*queue_ids = ids;
			if (ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids)) == 0 ||
				(have_single && single_paused))
			{
				SPI_finish();
				return;
			}
			values[0] = PointerGetDatum(ids);
			if (!have_single)
				break;
			single_tenant.limit_generation = generation;
			if (tries == 10 || !qe_tenant_lock(&single_tenant))
			{
				SPI_finish();
				return;
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
		/*
		 * A limit's admission runs statements (its slots, its count): pin
		 * search_path once around them.  An unlimited, keyless queue's
		 * claim usually runs none (claim.c, claim_direct).
		 */
		bool		limited = single.limit > 0 || single.key_limit > 0 ||
			single_tenant.limit > 0;

		path_level = limited ? qe_pin_search_path() : 0;
		while (call->remaining > 0 && !single.exhausted)
		{
			CHECK_FOR_INTERRUPTS();
			call->remaining -= (int) claim_from_queue(call, &single, &single_tenant,
													  call->remaining);
		}
		qe_unpin_search_path(path_level);
		SPI_finish();
		return;
	}

	/* Its statements under one pin of search_path rather than one each. */
	path_level = qe_pin_search_path();
	dequeue_in_turn(call, nulls[0] == 'n' ? (Datum) 0 : values[0], nulls[0] == 'n');
	qe_unpin_search_path(path_level);
	SPI_finish();
}

/*
 * dequeue_once() in a subtransaction, kept if it started runs and rolled
 * back if not, so that an empty attempt lets go of every lock it took (a
 * sleeping waiter must block no rotation and no definition change).
 * Returns whether it started runs; *queue_ids as dequeue_once's, copied
 * into the caller's memory.
 */
static bool
dequeue_attempt(QeDequeueCall *call, ArrayType *names, int max_runs,
				int32 **queue_ids, int *nqueue_ids)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ArrayType  *ids;
	bool		started;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		dequeue_once(call, names, max_runs, &ids);
	}
	PG_CATCH();
	{
		/* (as PL/pgSQL's exception blocks: end the subtransaction, rethrow) */
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		ReThrowError(edata);
	}
	PG_END_TRY();
	started = call->remaining < max_runs;
	if (*queue_ids == NULL && ids != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(caller);

		*nqueue_ids = ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids));
		*queue_ids = palloc(sizeof(int32) * Max(*nqueue_ids, 1));
		memcpy(*queue_ids, ARR_DATA_PTR(ids), sizeof(int32) * *nqueue_ids);
		MemoryContextSwitchTo(old);
	}
	if (started)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	return started;
}

/*
 * Before a waiter sleeps: keep back no one's cleanup.  The empty attempt
 * released its own snapshots; the statement's (the caller's SELECT) is
 * still registered but reads nothing more, and the catalog snapshot is
 * dropped, so the backend's xmin is cleared, as between transactions; the
 * next snapshot (the next attempt's) sets it afresh.
 */
static void
release_xmin(void)
{
	InvalidateCatalogSnapshot();
	MyProc->xmin = InvalidTransactionId;
}

Datum
qe_dequeue(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	QeDequeueCall call;
	int			max_runs;
	int64		wait_us = 0;
	ArrayType  *names;

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
	/* wait (a 0.1 schema's dequeue has no such argument) */
	if (PG_NARGS() > 4 && !PG_ARGISNULL(4))
	{
		qe_check_interval(PG_GETARG_INTERVAL_P(4), "wait", true);
		wait_us = qe_interval_usecs(PG_GETARG_INTERVAL_P(4));
	}

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
	names = PG_ARGISNULL(0) ? NULL : PG_GETARG_ARRAYTYPE_P(0);

	if (wait_us <= 0)
	{
		ArrayType  *ids;

		dequeue_once(&call, names, max_runs, &ids);
		return (Datum) 0;
	}

	/*
	 * Waiting for work (src/README.md, "Blocking dequeue"): attempt; if
	 * nothing started, take a waiter slot and attempt again (a commit
	 * before the slot was taken is seen by that attempt, one after it
	 * wakes us), then sleep until woken or the deadline, and so on.
	 */
	{
		TimestampTz deadline = GetCurrentTimestamp() + wait_us;
		int32	   *queue_ids = NULL;
		int			nqueue_ids = 0;
		bool		waiter = false;
		bool		polling = false;

		for (;;)
		{
			TimestampTz now;

			if (dequeue_attempt(&call, names, max_runs, &queue_ids, &nqueue_ids))
				break;
			now = GetCurrentTimestamp();
			if (now >= deadline)
				break;
			if (!waiter && !polling)
			{
				/* names that resolved to no queue: there is nothing to wait for */
				if (names != NULL && nqueue_ids == 0 && queue_ids != NULL)
					polling = true;
				else if (qe_wait_begin(queue_ids, names == NULL ? 0 : nqueue_ids))
				{
					waiter = true;
					continue;
				}
				polling = true; /* every slot taken: look again now and then */
			}
			release_xmin();
			if (waiter)
				qe_wait_sleep((long) Min((deadline - now + 999) / 1000, (int64) INT_MAX));
			else
			{
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 (long) Min((deadline - now + 999) / 1000, 50), PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
			qe_restart_transaction_clock();
		}
		if (waiter)
			qe_wait_end();
	}
	return (Datum) 0;
}
