/*-------------------------------------------------------------------------
 *
 * queue_engine.c
 *	  Module entry point: the module magic and _PG_init, which only hands
 *	  off to each part's own initialisation.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "fmgr.h"
#include "miscadmin.h"

QE_MODULE_MAGIC;

PGDLLEXPORT void _PG_init(void);

void
_PG_init(void)
{
	qe_guc_init();
	qe_xact_callbacks_register();

	/*
	 * The SQL API works without preloading; the workers need it, and the
	 * shared state is then in a segment of its own (shmem.c).
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		qe_worker_register();
		qe_shmem_init();
	}
}
