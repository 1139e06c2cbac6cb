/*-------------------------------------------------------------------------
 *
 * queue_cache.c
 *	  A per-backend cache of queue definitions by name (ids, tenant,
 *	  limits, pause, run defaults), so that enqueue, and a dequeue naming
 *	  one queue, find their queue without a query; and the counter that
 *	  tells dequeue whether any definition changed since it last read one.
 *
 *	  The cache lives on PostgreSQL's own invalidation messages, not on a
 *	  flag of ours: statement triggers on queue_engine.queues and
 *	  queue_engine.tenants (any change, by the API or by hand) register a
 *	  relcache invalidation of the changed table, which PostgreSQL sends
 *	  to every backend when the change commits, however it commits (a
 *	  plain COMMIT, or COMMIT PREPARED of a two-phase transaction, whose
 *	  invalidations travel in its state file), and which dropping the
 *	  tables sends too (DROP EXTENSION).  Each backend's relcache callback
 *	  then voids the cache.  The messages go out after the commit is
 *	  visible and before the committer's locks are released, so a backend
 *	  that reads after processing them sees the change, and one that read
 *	  before it was visible drops what it read at its next call, which
 *	  processes pending messages first.
 *
 *	  The changing transaction itself reads the tables until it ends.
 *	  Works with or without shared_preload_libraries.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"
#include "run_state.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(qe_queue_definitions_changed);
PG_FUNCTION_INFO_V1(qe_definition_change_lock);
PG_FUNCTION_INFO_V1(qe_move_concurrency_keys);

typedef struct QeQueueCacheEntry
{
	char		name[QE_QUEUE_CACHE_NAME_MAX];	/* hash key */
	QeQueueDef	def;
} QeQueueCacheEntry;

static MemoryContext cache_cxt = NULL;	/* the table and its strings */
static HTAB *cache = NULL;

/*
 * Bumped by every invalidation of queues or tenants this backend
 * processes (and whenever it cannot tell which relation changed).
 */
static uint64 definitions_generation = 1;
static uint64 cache_generation = 0;

/* The tables whose invalidations void the cache; looked up again after one. */
static Oid	queues_relid = InvalidOid;
static Oid	tenants_relid = InvalidOid;
static bool callback_registered = false;

/* This transaction changed queues or tenants: bypass the cache till it ends. */
static LocalTransactionId changed_in_lxid = InvalidLocalTransactionId;

static void
definitions_invalidated(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == queues_relid || relid == tenants_relid)
	{
		definitions_generation++;
		queues_relid = tenants_relid = InvalidOid;
	}
}

/* Watch queues and tenants (the first call, and after each invalidation). */
static void
watch_definition_tables(void)
{
	Oid			nsp;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(definitions_invalidated, (Datum) 0);
		callback_registered = true;
	}
	if (OidIsValid(queues_relid) && OidIsValid(tenants_relid))
		return;
	nsp = get_namespace_oid("queue_engine", true);
	if (OidIsValid(nsp))
	{
		queues_relid = get_relname_relid("queues", nsp);
		tenants_relid = get_relname_relid("tenants", nsp);
	}
}

/*
 * A counter that moves whenever this backend processes a change to any
 * queue or tenant definition.  Process pending invalidations first
 * (qe_queue_definitions_refresh) when the answer must include changes
 * committed before a lock was taken.
 */
uint64
qe_queue_definitions_generation(void)
{
	watch_definition_tables();
	return definitions_generation;
}

/* Process the invalidations other backends' commits have sent so far. */
void
qe_queue_definitions_refresh(void)
{
	AcceptInvalidationMessages();
}

/*
 * queue_engine.queue_definitions_changed(): the statement trigger on
 * queues and tenants.
 */
Datum
qe_queue_definitions_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("queue_definitions_changed() must be called as a trigger"),
				 errhint("It is the statement trigger on queue_engine.queues and queue_engine.tenants.")));
	/* Sent to every backend at commit (or COMMIT PREPARED); here at once. */
	CacheInvalidateRelcache(trigdata->tg_relation);
	changed_in_lxid = QE_MYPROC_LXID;
	return PointerGetDatum(NULL);
}

/* Wait for the claims in flight in a tenant, and keep new ones out. */
static void
lock_tenant_for_change(HeapTuple tuple, TupleDesc desc)
{
	int			attnum = SPI_fnumber(desc, "tenant_id");
	bool		isnull;
	Datum		value;
	LOCKTAG		tag;

	if (attnum <= 0)
		elog(ERROR, "queue_engine: no tenant_id column in the changed table");
	value = heap_getattr(tuple, attnum, desc, &isnull);
	if (isnull)
		return;
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) DatumGetInt32(value), 0,
						 QE_LOCK_TENANT);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * queue_engine.definition_change_lock(): the row trigger after an UPDATE
 * of queues or tenants (a limit, a pause, a drop; through the API or by
 * hand).  It takes the tenant's claim lock in exclusive mode, waiting for
 * the dequeues that hold it (every claim holds it, see dequeue.c) to end,
 * and keeping new ones out until this transaction ends: so no run is
 * started under the old definition after the change commits, and a claim
 * that comes later reads the new one.
 */
Datum
qe_definition_change_lock(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("definition_change_lock() must be called as a row trigger on update"),
				 errhint("It is the row trigger on queue_engine.queues and queue_engine.tenants.")));
	desc = RelationGetDescr(trigdata->tg_relation);
	lock_tenant_for_change(trigdata->tg_trigtuple, desc);
	lock_tenant_for_change(trigdata->tg_newtuple, desc);
	return PointerGetDatum(NULL);
}

/*
 * queue_engine.move_concurrency_keys(): the row trigger after an UPDATE of
 * a queue that sets or clears its key_concurrency_limit.  A queued run's
 * key is in ready's concurrency_key column when its queue has a per-key
 * limit, else in meta (run_state.h, QE_SQL_KEY_OF; src/README.md, "Keys"):
 * this moves the keys of the queue's queued runs to their new place, in
 * the changing transaction.  It first takes the queue's name lock and key
 * placement lock exclusively, so the enqueues, retries and promotions in
 * flight (which hold one of them shared and placed keys by the old
 * definition) commit before the move reads, and later ones wait for this
 * transaction and read the new definition.  Delayed runs keep their keys
 * in the column: promotion places them.
 */
Datum
qe_move_concurrency_keys(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr to_column_plan = NULL;
	static SPIPlanPtr to_meta_plan = NULL;
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	bool		old_null;
	bool		new_null;
	bool		isnull;
	Datum		queue_id;
	Datum		name;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("move_concurrency_keys() must be called as a row trigger after update"),
				 errhint("It is the row trigger on queue_engine.queues.")));
	desc = RelationGetDescr(trigdata->tg_relation);
	(void) heap_getattr(trigdata->tg_trigtuple, SPI_fnumber(desc, "key_concurrency_limit"),
						desc, &old_null);
	(void) heap_getattr(trigdata->tg_newtuple, SPI_fnumber(desc, "key_concurrency_limit"),
						desc, &new_null);
	if (old_null == new_null)
		return PointerGetDatum(NULL);
	queue_id = heap_getattr(trigdata->tg_newtuple, SPI_fnumber(desc, "queue_id"), desc, &isnull);
	name = heap_getattr(trigdata->tg_newtuple, SPI_fnumber(desc, "queue"), desc, &isnull);
	qe_lock_queue_name(TextDatumGetCString(name), true);
	qe_lock_key_placement(DatumGetInt32(queue_id), true);

	SPI_connect();
	if (!new_null)
		qe_exec(qe_plan(&to_column_plan,
						"UPDATE queue_engine.ready x"
						"   SET concurrency_key = (x.meta).concurrency_key,"
						"       meta = " QE_SQL_META_WITH_KEY("x.meta", "NULL")
						" WHERE x.queue_id = $1 AND x.concurrency_key IS NULL"
						"   AND (x.meta).concurrency_key IS NOT NULL",
						1, (Oid[]) {INT4OID}),
				&queue_id, NULL, 0);
	else
	{
		/* These runs enter the order index, maybe before the ready hint. */
		QeReadyKey	first = {PG_INT32_MAX, DT_NOBEGIN, 0};

		qe_exec(qe_plan(&to_meta_plan,
						"UPDATE queue_engine.ready x"
						"   SET concurrency_key = NULL,"
						"       meta = " QE_SQL_META_WITH_KEY("x.meta", "x.concurrency_key")
						" WHERE x.queue_id = $1 AND x.concurrency_key IS NOT NULL",
						1, (Oid[]) {INT4OID}),
				&queue_id, NULL, 0);
		qe_ready_hint_lower(DatumGetInt32(queue_id), &first);
	}
	SPI_finish();
	return PointerGetDatum(NULL);
}

/*
 * The live queue named name, or NULL when there is none.  The result is
 * good until the next call.  SPI must be connected.
 */
const QeQueueDef *
qe_queue_def(const char *name)
{
	static SPIPlanPtr plan = NULL;
	QeQueueDef *def;
	QeQueueCacheEntry *entry = NULL;
	bool		use_cache;
	bool		isnull;
	Datum		value;
	uint64		generation;

	/* Changes committed before this statement: a flag check when none. */
	AcceptInvalidationMessages();
	generation = qe_queue_definitions_generation();
	use_cache = strlen(name) < QE_QUEUE_CACHE_NAME_MAX &&
		changed_in_lxid != QE_MYPROC_LXID;
	if (use_cache)
	{
		if (cache == NULL || generation != cache_generation)
		{
			HASHCTL		ctl;

			if (cache_cxt == NULL)
				cache_cxt = AllocSetContextCreate(CacheMemoryContext,
												  "queue_engine queue definitions",
												  ALLOCSET_SMALL_SIZES);
			else
				MemoryContextReset(cache_cxt);
			ctl.keysize = QE_QUEUE_CACHE_NAME_MAX;
			ctl.entrysize = sizeof(QeQueueCacheEntry);
			ctl.hcxt = cache_cxt;
			cache = hash_create("queue_engine queue definitions", 64, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
			cache_generation = generation;
		}
		entry = hash_search(cache, name, HASH_FIND, NULL);
		if (entry != NULL)
			return &entry->def;
	}

	qe_plan(&plan,
			"SELECT q.queue_id, q.tenant_id, t.tenant,"
			"       coalesce(q.concurrency_limit, 0), coalesce(q.key_concurrency_limit, 0),"
			"       coalesce(t.concurrency_limit, 0), q.paused, q.max_attempts, q.lease, q.ttl,"
			"       q.policy_id"
			"  FROM queue_engine.queues q"
			"  JOIN queue_engine.tenants t ON t.tenant_id = q.tenant_id"
			" WHERE q.queue = $1 AND q.dropped_at IS NULL",
			1, (Oid[]) {TEXTOID});
	value = CStringGetTextDatum(name);
	if (qe_exec(plan, &value, NULL, 1) == 0)
		return NULL;

	def = palloc(sizeof(QeQueueDef));
	def->queue_id = DatumGetInt32(qe_get(0, 1, &isnull));
	def->tenant_id = DatumGetInt32(qe_get(0, 2, &isnull));
	def->tenant = TextDatumGetCString(qe_get(0, 3, &isnull));
	def->limit = DatumGetInt32(qe_get(0, 4, &isnull));
	def->key_limit = DatumGetInt32(qe_get(0, 5, &isnull));
	def->tenant_limit = DatumGetInt32(qe_get(0, 6, &isnull));
	def->paused = DatumGetBool(qe_get(0, 7, &isnull));
	def->max_attempts = DatumGetInt32(qe_get(0, 8, &isnull));
	def->lease = *DatumGetIntervalP(qe_get(0, 9, &isnull));
	value = qe_get(0, 10, &def->ttl_null);
	if (!def->ttl_null)
		def->ttl = *DatumGetIntervalP(value);
	def->policy_id = DatumGetInt32(qe_get(0, 11, &isnull));

	/*
	 * Keep it only if no invalidation came while the query ran (taking its
	 * locks processes them): what it read may predate that change.
	 */
	if (use_cache && qe_queue_definitions_generation() == cache_generation)
	{
		char	   *tenant = MemoryContextStrdup(cache_cxt, def->tenant);

		entry = hash_search(cache, name, HASH_ENTER, NULL);
		entry->def = *def;
		entry->def.tenant = tenant;
		def = &entry->def;
	}
	return def;
}
