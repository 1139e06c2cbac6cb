/*-------------------------------------------------------------------------
 *
 * xact.c
 *	  The extension's one transaction callback and one subtransaction
 *	  callback, registered once per backend, which tell each part that
 *	  keeps state for the end of a transaction what became of it:
 *	  - run_state.c: the leases granted, for the rescue horizon;
 *	  - limits.c: the limit hints' pending exits and marks;
 *	  - metrics.c: the counts and latencies, published at commit;
 *	  - wakeups.c: the sleeping dequeues a commit wakes (and a failed
 *	    waiter's slot, given back).
 *	  Commit and prepare publish (each part says what it publishes on
 *	  prepare), abort forgets; nothing here may fail.
 *
 *-------------------------------------------------------------------------
 */
#include "metrics.h"
#include "run_state.h"
#include "wakeups.h"

#include "access/xact.h"

static void
xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			qe_run_state_xact_end(true);
			qe_limit_hints_xact_end(true, false);
			qe_metrics_xact_end(true);
			qe_wakeups_xact_end(true);
			break;
		case XACT_EVENT_PREPARE:
			qe_run_state_xact_end(true);
			qe_limit_hints_xact_end(false, true);
			/* counted as if committed; its runs wake no one until COMMIT PREPARED */
			qe_metrics_xact_end(true);
			qe_wakeups_xact_end(false);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			qe_run_state_xact_end(false);
			qe_limit_hints_xact_end(false, false);
			qe_metrics_xact_end(false);
			qe_wakeups_xact_end(false);
			break;
		default:
			break;
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		qe_limit_hints_subxact_abort();
		qe_metrics_subxact_end(false, mySubid, parentSubid);
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		qe_metrics_subxact_end(true, mySubid, parentSubid);
}

/* From _PG_init. */
void
qe_xact_callbacks_register(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}
