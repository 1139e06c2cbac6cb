/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory (shmem.h), with
 *	  shared_preload_libraries only: one request hook and one startup hook
 *	  that size and set up the one struct, QeShared, which holds the
 *	  ready and limit hints, the rescue horizon, the fold and prune
 *	  cursors and the worker's task schedule.
 *
 *-------------------------------------------------------------------------
 */
#include "shmem.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

QeShared   *qe_shared = NULL;

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

	SpinLockInit(&shared->fold_cursor.mutex);
	shared->fold_cursor.dbid = InvalidOid;
	ItemPointerSet(&shared->fold_cursor.from, 0, 0);
	shared->fold_cursor.last_wrap = 0;
	shared->fold_cursor.wrap_folded = false;

	SpinLockInit(&shared->prune_cursor.mutex);
	shared->prune_cursor.dbid = InvalidOid;
	shared->prune_cursor.from = DT_NOBEGIN;

	SpinLockInit(&shared->task_schedule.mutex);
	for (int i = 0; i < QE_BACKGROUND_TASK_COUNT; i++)
		shared->task_schedule.next_due[i] = 0;
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
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = qe_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = qe_shmem_startup;
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
