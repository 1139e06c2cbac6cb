/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared state (shmem.h): the one struct, QeShared,
 *	  which holds the ready and limit hints, the rescue horizon, the
 *	  current count-delta segments, the prune cursor and the worker's task
 *	  schedule, and where it lives.
 *
 *	  With shared_preload_libraries it is in the main shared memory, set
 *	  up by the startup hook before any backend exists.
 *
 *	  Without it, it is in one dynamic shared memory segment, pinned so
 *	  that it lives until the server stops, which the first backend that
 *	  needs it creates.  Its handle is kept in a few bytes of the main
 *	  shared memory taken at run time (ShmemInitStruct works after startup
 *	  for small structures: the server keeps spare room for them), so every
 *	  backend of this server finds the same segment, and a restart (or a
 *	  crash, which resets the main shared memory) starts from a new one.
 *	  The hints are bounds that every writer must keep (an enqueue lowers
 *	  its queue's ready hint), so a backend attaches before its first write
 *	  that would touch them: every accessor calls qe_shmem_attach(), which
 *	  either attaches or fails the statement, and never goes on without.
 *	  Only transaction callbacks use qe_shared as it is: a transaction that
 *	  has something to publish attached while recording it.
 *
 *-------------------------------------------------------------------------
 */
#include "shmem.h"

#include "miscadmin.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

QeShared   *qe_shared = NULL;

/* Set in _PG_init when preloaded (and inherited by every backend). */
static bool preloaded = false;

/* Without preloading: the main-shared-memory record of the segment. */
typedef struct QeShmemAnchor
{
	dsm_handle	handle;			/* DSM_HANDLE_INVALID: not created yet */
	Size		size;			/* sizeof(QeShared) of the build that created it */
} QeShmemAnchor;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
qe_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(QeShared)));
}

static void
init_shared(QeShared *shared)
{
	SpinLockInit(&shared->hints.mutex);
	shared->hints.next_walk_id = 1;
	for (int i = 0; i < QE_READY_HINT_SLOTS; i++)
	{
		QeReadyHintSlot *slot = &shared->hints.slots[i];

		SpinLockInit(&slot->mutex);
		slot->database = InvalidOid;
		slot->epoch = InvalidOid;
		slot->queue_id = 0;
		slot->valid = false;
		slot->walk_id = 0;
		slot->added_valid = false;
		slot->exits = 0;
		slot->at_limit = false;
	}

	pg_atomic_init_u64(&shared->rescue_horizon, 0); /* scan at once */

	for (int i = 0; i < QE_DELTA_SEGMENT_SLOTS; i++)
	{
		pg_atomic_init_u32(&shared->delta_segment[i], 0);
		pg_atomic_init_u32(&shared->family_segment[i], 0);
	}

	SpinLockInit(&shared->prune_cursor.mutex);
	shared->prune_cursor.dbid = InvalidOid;
	shared->prune_cursor.from = DT_NOBEGIN;

	SpinLockInit(&shared->task_schedule.mutex);
	for (int i = 0; i < QE_BACKGROUND_TASK_COUNT; i++)
		shared->task_schedule.next_due[i] = 0;

	shared->metrics.since = GetCurrentTimestamp();
	for (int i = 0; i < QE_METRICS_QUEUE_SLOTS; i++)
	{
		QeQueueCounters *c = &shared->metrics.queues[i];

		pg_atomic_init_u32(&c->state, 0);
		for (int k = 0; k < QE_COUNTER_KINDS; k++)
			pg_atomic_init_u64(&c->counts[k], 0);
	}
	for (int i = 0; i < QE_METRICS_DATABASE_SLOTS; i++)
	{
		QeDatabaseMetrics *d = &shared->metrics.databases[i];

		pg_atomic_init_u32(&d->database, InvalidOid);
		for (int h = 0; h < QE_HISTOGRAM_KINDS; h++)
		{
			for (int b = 0; b <= QE_METRICS_HIST_BUCKETS; b++)
				pg_atomic_init_u64(&d->hist[h].buckets[b], 0);
			pg_atomic_init_u64(&d->hist[h].sum_us, 0);
		}
		for (int k = 0; k < QE_COUNTER_KINDS; k++)
			pg_atomic_init_u64(&d->overflow[k], 0);
	}

	SpinLockInit(&shared->waiters.mutex);
	pg_atomic_init_u32(&shared->waiters.sleeping, 0);
	shared->waiters.high_water = 0;
	for (int i = 0; i < QE_WAITER_SLOTS; i++)
		shared->waiters.slots[i].procno = -1;

	SpinLockInit(&shared->consistency_clock.mutex);
	for (int i = 0; i < QE_DELTA_SEGMENT_SLOTS; i++)
	{
		shared->consistency_clock.dbid[i] = InvalidOid;
		shared->consistency_clock.last_started[i] = 0;
	}
}

static void
qe_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	qe_shared = ShmemInitStruct("queue_engine", sizeof(QeShared), &found);
	if (!found)
		init_shared(qe_shared);
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries are loaded. */
void
qe_shmem_init(void)
{
	preloaded = true;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = qe_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = qe_shmem_startup;
}

/*
 * Make qe_shared usable in this process; true once it is.  Not preloaded,
 * the first call attaches to the server's segment, creating it if this is
 * the first backend to need it; an error here fails the statement, never
 * lets it go on without the shared state.  Not for transaction callbacks.
 */
bool
qe_shmem_attach(void)
{
	QeShmemAnchor *anchor;
	dsm_segment *seg;
	bool		found;

	if (qe_shared != NULL)
		return true;
	if (preloaded)
		return false;			/* not a backend of the server (no startup hook run) */

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	anchor = ShmemInitStruct("queue_engine shared state anchor",
							 sizeof(QeShmemAnchor), &found);
	if (!found)
		anchor->handle = DSM_HANDLE_INVALID;
	if (anchor->handle != DSM_HANDLE_INVALID)
	{
		/* A new build installed under a running server may share differently. */
		if (anchor->size != sizeof(QeShared))
		{
			LWLockRelease(AddinShmemInitLock);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("queue_engine's shared state was set up by another build of the library"),
					 errdetail("The segment holds %zu bytes; this build needs %zu.",
							   anchor->size, sizeof(QeShared)),
					 errhint("Restart the server after installing a new build of queue_engine.")));
		}
		seg = dsm_attach(anchor->handle);
		if (seg == NULL)
			elog(ERROR, "queue_engine: could not attach to the shared state segment");
		/* Mapped for the rest of this backend's life, not this transaction's. */
		dsm_pin_mapping(seg);
	}
	else
	{
		seg = dsm_create(MAXALIGN(sizeof(QeShared)), 0);
		dsm_pin_segment(seg);
		dsm_pin_mapping(seg);
		init_shared((QeShared *) dsm_segment_address(seg));
		/* Published only once set up: others wait on the lock until then. */
		anchor->size = sizeof(QeShared);
		anchor->handle = dsm_segment_handle(seg);
	}
	LWLockRelease(AddinShmemInitLock);
	qe_shared = (QeShared *) dsm_segment_address(seg);
	return true;
}

void
qe_rescue_horizon_lower(TimestampTz to)
{
	uint64		current;

	if (qe_shared == NULL)
		return;
	current = pg_atomic_read_u64(&qe_shared->rescue_horizon);
	while ((TimestampTz) current > to)
	{
		if (pg_atomic_compare_exchange_u64(&qe_shared->rescue_horizon,
										   &current, (uint64) to))
			break;
	}
}
