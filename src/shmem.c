/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared state: the dispatch hints, the maintenance
 *	  cursors and the rescue horizon, and (preloaded only) the worker's
 *	  task schedule.  Each part sizes and initialises its own structures
 *	  through qe_shmem_struct(); this file decides where they live.
 *
 *	  With shared_preload_libraries they are in the main shared memory,
 *	  set up by the startup hook before any backend exists.
 *
 *	  Without it they are in one dynamic shared memory segment, pinned so
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
 *	  Only commit callbacks use the pointers as they are: a transaction
 *	  that has something to publish attached while recording it.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "miscadmin.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Set in _PG_init when preloaded (and inherited by every backend). */
static bool preloaded = false;

/* The parts' structures are in place in this process. */
static bool attached = false;

/* Without preloading: the main-shared-memory record of the segment. */
typedef struct QeShmemAnchor
{
	dsm_handle	handle;			/* DSM_HANDLE_INVALID: not created yet */
} QeShmemAnchor;

/* Without preloading, while attaching: where the next part goes. */
static char *dsm_base = NULL;
static Size dsm_used = 0;
static Size dsm_size = 0;
static bool dsm_existed = false;

/* Everything but the worker's schedule, which exists only when preloaded. */
static Size
shared_parts_size(void)
{
	return add_size(qe_dispatch_hints_shmem_size(),
					qe_maintenance_shmem_size());
}

static void
shared_parts_init(void)
{
	qe_dispatch_hints_shmem_init();
	qe_maintenance_shmem_init();
}

/*
 * A part's structure: the named one in the main shared memory when
 * preloaded, else the next piece of the segment.  *found says whether
 * another process set it up already.
 */
void *
qe_shmem_struct(const char *name, Size size, bool *found)
{
	void	   *place;

	if (preloaded)
		return ShmemInitStruct(name, size, found);
	Assert(dsm_base != NULL);
	if (dsm_used + MAXALIGN(size) > dsm_size)
		elog(ERROR, "queue_engine: shared state segment too small for \"%s\"", name);
	place = dsm_base + dsm_used;
	dsm_used += MAXALIGN(size);
	*found = dsm_existed;
	return place;
}

static void
qe_shmem_request(void)
{
	Size		size = shared_parts_size();

	size = add_size(size, qe_worker_shmem_size());
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
	shared_parts_init();
	qe_worker_shmem_init();
	LWLockRelease(AddinShmemInitLock);
	attached = true;
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
 * Make the shared state usable in this process; true once it is.  Not
 * preloaded, the first call attaches to the server's segment, creating it
 * if this is the first backend to need it; an error here fails the
 * statement, never lets it go on without the shared state.  Not for commit
 * callbacks.
 */
bool
qe_shmem_attach(void)
{
	QeShmemAnchor *anchor;
	dsm_segment *seg;
	bool		found;

	if (attached)
		return true;
	if (preloaded)
		return false;			/* startup hook not run (not a backend) */

	dsm_size = shared_parts_size();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	anchor = ShmemInitStruct("queue_engine shared state anchor",
							 sizeof(QeShmemAnchor), &found);
	if (!found)
		anchor->handle = DSM_HANDLE_INVALID;
	if (anchor->handle != DSM_HANDLE_INVALID)
	{
		seg = dsm_attach(anchor->handle);
		if (seg == NULL)
			elog(ERROR, "queue_engine: could not attach to the shared state segment");
		dsm_existed = true;
	}
	else
	{
		seg = dsm_create(dsm_size, 0);
		dsm_pin_segment(seg);
		dsm_existed = false;
	}
	/* Mapped for the rest of this backend's life, not this transaction's. */
	dsm_pin_mapping(seg);
	dsm_base = dsm_segment_address(seg);
	dsm_used = 0;
	shared_parts_init();
	/* Published only once set up: others wait on the lock until then. */
	if (!dsm_existed)
		anchor->handle = dsm_segment_handle(seg);
	LWLockRelease(AddinShmemInitLock);
	attached = true;
	return true;
}
