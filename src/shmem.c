/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory (with shared_preload_libraries only):
 *	  one request hook and one startup hook that size and set up each
 *	  part's structures: the dispatch hints, the worker's task schedule
 *	  and the prune cursor.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
qe_shmem_request(void)
{
	Size		size = qe_dispatch_hints_shmem_size();

	size = add_size(size, qe_worker_shmem_size());
	size = add_size(size, qe_maintenance_shmem_size());
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(size);
}

static void
qe_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	qe_dispatch_hints_shmem_init();
	qe_worker_shmem_init();
	qe_maintenance_shmem_init();
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
