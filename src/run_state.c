/*-------------------------------------------------------------------------
 *
 * run_state.c
 *	  The owner of the run's state machine (run_state.h): the state
 *	  labels, the retry backoff, and the bookkeeping of transitions.
 *
 *	  Every statement that changes runs' states (enqueue, the claim,
 *	  heartbeat, complete, fail, cancel, and the background tasks) reports
 *	  the moves it made to qe_runs_transitioned(), which, in the mover's
 *	  transaction:
 *	  - appends one count delta per queue (counts.c) for the states that
 *	    are counted (delayed, queued, executing, waiting);
 *	  - lowers the ready hint of every queue that got queued runs, after
 *	    they are in runs_queued and before commit (dispatch_hints.c);
 *	  - voids the limit hint of every queue whose runs left executing, at
 *	    commit (dispatch_hints.c);
 *	  - reports the earliest lease granted to the rescue horizon
 *	    (shmem.h, read by maintenance.c's rescue), at commit;
 *	  - counts the moves for metrics() (metrics.c), and notes the queues
 *	    whose runs became startable or left a slot, whose sleeping
 *	    dequeues the commit wakes (wakeups.c).
 *
 *	  The one move not reported here is check_consistency()'s cancel of
 *	  runs whose queue does not exist: its counts are left to the
 *	  queue_counts check that follows it, which reports and repairs them.
 *
 *-------------------------------------------------------------------------
 */
#include "run_state.h"
#include "metrics.h"
#include "shmem.h"
#include "wakeups.h"

#include "common/pg_prng.h"

const char *const qe_run_status_labels[QE_RUN_STATUS_COUNT] = {
	[QE_RUN_DELAYED] = "delayed",
	[QE_RUN_QUEUED] = "queued",
	[QE_RUN_EXECUTING] = "executing",
	[QE_RUN_WAITING] = "waiting",
	[QE_RUN_COMPLETED] = "completed",
	[QE_RUN_FAILED] = "failed",
	[QE_RUN_CANCELED] = "canceled",
	[QE_RUN_EXPIRED] = "expired",
};

QeRunStatus
qe_run_status_from_label(const char *label)
{
	for (int s = 0; s < QE_RUN_STATUS_COUNT; s++)
		if (strcmp(label, qe_run_status_labels[s]) == 0)
			return (QeRunStatus) s;
	elog(ERROR, "queue_engine: unknown run status \"%s\"", label);
	return QE_RUN_NONE;			/* keep the compiler quiet */
}

int64
qe_retry_backoff_usecs(const Interval *base, const Interval *cap, int attempt)
{
	int64		base_us = qe_interval_usecs(base);
	int64		cap_us = qe_interval_usecs(cap);
	int64		delay = base_us;
	int			shift = Max(attempt - 1, 0);

	for (int i = 0; i < shift && delay < cap_us; i++)
		delay *= 2;
	delay = Min(delay, cap_us);
	/* Jitter, so that runs failing together do not retry together. */
	return (int64) (delay * (0.8 + 0.4 * pg_prng_double(&pg_global_prng_state)));
}

/* The earliest lease this transaction granted, for its commit. */
static TimestampTz lease_granted_min = DT_NOEND;

/*
 * At the end of the transaction (xact.c): once committed (or prepared: a
 * horizon too early only makes the rescue scan sooner), the leases it
 * granted lower the rescue horizon.
 */
void
qe_run_state_xact_end(bool committed)
{
	if (committed && lease_granted_min != DT_NOEND)
		qe_rescue_horizon_lower(lease_granted_min);
	lease_granted_min = DT_NOEND;
}

static int
cmp_queue_id(const void *a, const void *b)
{
	int32		x = ((const QeTransition *) a)->queue_id;
	int32		y = ((const QeTransition *) b)->queue_id;

	return (x > y) - (x < y);
}

/* The count column a state is kept in, or -1 when it is not counted. */
static inline int
counted(QeRunStatus s)
{
	switch (s)
	{
		case QE_RUN_QUEUED:
			return 0;
		case QE_RUN_DELAYED:
			return 1;
		case QE_RUN_EXECUTING:
			return 2;
		case QE_RUN_WAITING:
			return 3;
		default:
			return -1;
	}
}

void
qe_runs_transitioned(QeTransition *moves, int nmoves)
{
	TimestampTz lease_min = DT_NOEND;

	/* Grouped by queue: one delta row and one hint change per queue. */
	if (nmoves > 1)
		qsort(moves, nmoves, sizeof(QeTransition), cmp_queue_id);
	for (int i = 0; i < nmoves;)
	{
		int32		queue_id = moves[i].queue_id;
		int32		delta[4] = {0, 0, 0, 0};
		bool		left_executing = false;
		bool		ready_valid = false;
		QeReadyKey	ready;

		for (; i < nmoves && moves[i].queue_id == queue_id; i++)
		{
			const QeTransition *m = &moves[i];
			int			c;

			if (m->from == m->to)
			{
				/* Nothing moved: a lease extended. */
			}
			else
			{
				if ((c = counted(m->from)) >= 0)
					delta[c] -= m->nruns;
				if ((c = counted(m->to)) >= 0)
					delta[c] += m->nruns;
				if (m->from == QE_RUN_EXECUTING)
					left_executing = true;
				qe_metrics_moved(queue_id, m->from, m->to, m->nruns);
				/* startable runs, or freed slots: a sleeping dequeue's cue */
				if (m->to == QE_RUN_QUEUED || m->from == QE_RUN_EXECUTING)
					qe_wakeup_note(queue_id, m->nruns);
				if (m->to == QE_RUN_QUEUED &&
					(!ready_valid || qe_ready_key_before(&m->key, &ready)))
				{
					ready = m->key;
					ready_valid = true;
				}
			}
			if (m->to == QE_RUN_EXECUTING && m->lease_expires_at < lease_min)
				lease_min = m->lease_expires_at;
		}
		qe_add_count_delta(queue_id, delta[0], delta[1], delta[2], delta[3]);
		if (left_executing)
			qe_limit_hint_exit(queue_id);
		if (ready_valid)
			qe_ready_hint_lower(queue_id, &ready);
	}
	if (lease_min < lease_granted_min && qe_shmem_attach())
		lease_granted_min = lease_min;
}

void
qe_run_transitioned(int32 queue_id, QeRunStatus from, QeRunStatus to,
					int32 nruns, const QeReadyKey *key,
					TimestampTz lease_expires_at)
{
	QeTransition move;

	if (to == QE_RUN_QUEUED && from != QE_RUN_QUEUED && key == NULL)
		elog(ERROR, "queue_engine: runs made queued without their ready key");
	move.queue_id = queue_id;
	move.from = from;
	move.to = to;
	move.nruns = nruns;
	if (key != NULL)
		move.key = *key;
	else
		memset(&move.key, 0, sizeof(move.key));
	move.lease_expires_at = lease_expires_at;
	qe_runs_transitioned(&move, 1);
}
