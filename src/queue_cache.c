/*-------------------------------------------------------------------------
 *
 * queue_cache.c
 *	  A per-backend cache of queue definitions by name (ids, tenant,
 *	  limits, pause, run defaults), so that enqueue, and a dequeue naming
 *	  one queue, find their queue without a query.
 *
 *	  The cache is valid while a shared generation number is unchanged.
 *	  Statement triggers on queue_engine.queues and queue_engine.tenants
 *	  (any change, by the API or by hand) make the changing transaction
 *	  bump it just before and again just after its commit becomes visible:
 *	  a backend that read the number before the second bump can only have
 *	  cached what a snapshot from before the commit shows, and drops it at
 *	  its next call.  The changing transaction itself bypasses the cache
 *	  until it ends.  Without shared_preload_libraries there is no shared
 *	  number, and every call queries.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(qe_queue_definitions_changed);

typedef struct QeQueueCacheShared
{
	pg_atomic_uint64 generation;
} QeQueueCacheShared;

typedef struct QeQueueCacheEntry
{
	char		name[QE_QUEUE_CACHE_NAME_MAX];	/* hash key */
	QeQueueDef	def;
} QeQueueCacheEntry;

static QeQueueCacheShared *shared = NULL;

static MemoryContext cache_cxt = NULL;	/* the table and its strings */
static HTAB *cache = NULL;
static uint64 cache_generation = 0;

/* This transaction changed queues or tenants: bump at commit, bypass till then. */
static bool change_pending = false;
static LocalTransactionId changed_in_lxid = InvalidLocalTransactionId;
static bool callback_registered = false;

Size
qe_queue_cache_shmem_size(void)
{
	return MAXALIGN(sizeof(QeQueueCacheShared));
}

/* Called by shmem.c's startup hook, under AddinShmemInitLock. */
void
qe_queue_cache_shmem_init(void)
{
	bool		found;

	shared = ShmemInitStruct("queue_engine queue cache",
							 sizeof(QeQueueCacheShared), &found);
	if (!found)
		pg_atomic_init_u64(&shared->generation, 1);
}

static void
queue_cache_xact_callback(XactEvent event, void *arg)
{
	if (!change_pending)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			pg_atomic_fetch_add_u64(&shared->generation, 1);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			pg_atomic_fetch_add_u64(&shared->generation, 1);
			change_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			change_pending = false;
			break;
		default:
			break;
	}
}

/*
 * queue_engine.queue_definitions_changed(): the statement trigger on
 * queues and tenants.
 */
Datum
qe_queue_definitions_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("queue_definitions_changed() must be called as a trigger"),
				 errhint("It is the statement trigger on queue_engine.queues and queue_engine.tenants.")));
	if (shared != NULL)
	{
		if (!callback_registered)
		{
			RegisterXactCallback(queue_cache_xact_callback, NULL);
			callback_registered = true;
		}
		change_pending = true;
		changed_in_lxid = MyProc->lxid;
	}
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

	use_cache = shared != NULL && strlen(name) < QE_QUEUE_CACHE_NAME_MAX &&
		changed_in_lxid != MyProc->lxid;
	if (use_cache)
	{
		uint64		generation = pg_atomic_read_u64(&shared->generation);

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
			/* Read before the query below: a later change voids what it reads. */
			cache_generation = generation;
		}
		entry = hash_search(cache, name, HASH_FIND, NULL);
		if (entry != NULL)
			return &entry->def;
	}

	qe_plan(&plan,
			"SELECT q.queue_id, q.tenant_id, t.tenant,"
			"       coalesce(q.concurrency_limit, 0), coalesce(q.key_concurrency_limit, 0),"
			"       coalesce(t.concurrency_limit, 0), q.paused, q.max_attempts, q.lease, q.ttl"
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
	if (use_cache)
	{
		char	   *tenant = MemoryContextStrdup(cache_cxt, def->tenant);

		entry = hash_search(cache, name, HASH_ENTER, NULL);
		entry->def = *def;
		entry->def.tenant = tenant;
		def = &entry->def;
	}
	return def;
}
