/*-------------------------------------------------------------------------
 *
 * metrics.h
 *	  Counting for metrics() (metrics.c): what transactions do to runs,
 *	  published at commit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef QE_METRICS_H
#define QE_METRICS_H

#include "run_state.h"
#include "shmem.h"

/* nruns runs of queue_id moved (run_state.c). */
extern void qe_metrics_moved(int32 queue_id, QeRunStatus from, QeRunStatus to,
							 int32 nruns);

/* One latency, in microseconds (the claim, complete and fail). */
extern void qe_metrics_observe(QeHistogramKind kind, int64 usecs);

/* Moves reported while it is set are stall rescues (maintenance.c). */
extern bool qe_metrics_rescuing;

/* At transaction and subtransaction end (xact.c). */
extern void qe_metrics_xact_end(bool committed);
extern void qe_metrics_subxact_end(bool committed, SubTransactionId subid,
								   SubTransactionId parent);

#endif							/* QE_METRICS_H */
