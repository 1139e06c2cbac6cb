/*-------------------------------------------------------------------------
 *
 * wakeups.c
 *	  Blocking dequeue's sleep and its wakeups (SPEC "Waiting for work"):
 *	  a dequeue with wait that finds nothing startable takes a slot in the
 *	  shared waiter table (shmem.h, QeWaiters) saying which queues it waits
 *	  for, and sleeps on its own latch; a transaction that made runs of a
 *	  queue startable (an enqueue, a promotion, a retry, a wake) or let
 *	  runs leave executing (a slot freed) notes the queue and the number of
 *	  runs (qe_wakeup_note, from run_state.c), and when it commits picks as
 *	  many sleeping waiters of that queue as runs and sets their latches.
 *	  Nothing like LISTEN/NOTIFY: no queue of notifications, no lock taken
 *	  at commit by every notifier, and a commit that no one waits for costs
 *	  one atomic read.
 *
 *	  No wakeup is lost: a waiter takes its slot before the claim that
 *	  comes up empty, and a committer reads the table after its commit is
 *	  visible (the commit callback), so either the claim's snapshot sees
 *	  the commit or the committer sees the waiter.  A picked waiter that
 *	  then claims nothing (another worker was faster) sleeps again.
 *
 *-------------------------------------------------------------------------
 */
#include "wakeups.h"
#include "shmem.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

/* The queues this transaction made runs startable in, and how many. */
typedef struct WakeNote
{
	int32		queue_id;
	int32		nruns;
} WakeNote;

static WakeNote *notes = NULL;
static int	nnotes = 0;
static int	notes_cap = 0;

/* This backend's waiter slot while it waits, else -1. */
static int	my_slot = -1;

void
qe_wakeup_note(int32 queue_id, int32 nruns)
{
	/* (noted even when nobody sleeps now: someone may by the commit) */
	if (nruns <= 0 || !qe_shmem_attach())
		return;
	for (int i = nnotes - 1; i >= 0 && i >= nnotes - 8; i--)
		if (notes[i].queue_id == queue_id)
		{
			notes[i].nruns += nruns;
			return;
		}
	if (nnotes == notes_cap)
	{
		notes_cap = notes_cap == 0 ? 16 : notes_cap * 2;
		notes = notes == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(WakeNote) * notes_cap)
			: repalloc(notes, sizeof(WakeNote) * notes_cap);
	}
	notes[nnotes].queue_id = queue_id;
	notes[nnotes].nruns = nruns;
	nnotes++;
}

static bool
waits_for(const QeWaiter *w, int32 queue_id)
{
	if (w->database != MyDatabaseId)
		return false;
	if (w->nqueues == 0)
		return true;
	for (int q = 0; q < w->nqueues; q++)
		if (w->queue_ids[q] == queue_id)
			return true;
	return false;
}

/*
 * At the end of the transaction (xact.c; nothing here may fail): once
 * committed, wake the sleepers the notes are for; and a waiter whose
 * dequeue failed (a cancel, statement_timeout) gives its slot back.
 */
void
qe_wakeups_xact_end(bool committed)
{
	if (my_slot >= 0)
		qe_wait_end();
	if (committed && nnotes > 0 && qe_shared != NULL &&
		pg_atomic_read_u32(&qe_shared->waiters.sleeping) > 0)
	{
		QeWaiters *ws = &qe_shared->waiters;
		int			procnos[QE_WAITER_SLOTS];
		int			nprocs = 0;

		int			unpicked = 0;

		SpinLockAcquire(&ws->mutex);
		for (int s = 0; s < ws->high_water; s++)
			if (ws->slots[s].procno >= 0 && !ws->slots[s].woken)
				unpicked++;
		/* (stops once every sleeper is picked: a commit of many queues) */
		for (int i = 0; i < nnotes && unpicked > 0; i++)
		{
			int32		left = notes[i].nruns;

			for (int s = 0; s < ws->high_water && left > 0 && nprocs < lengthof(procnos); s++)
			{
				QeWaiter   *w = &ws->slots[s];

				if (w->procno < 0 || w->woken || !waits_for(w, notes[i].queue_id))
					continue;
				w->woken = true;
				procnos[nprocs++] = w->procno;
				left--;
				unpicked--;
			}
		}
		SpinLockRelease(&ws->mutex);
		for (int i = 0; i < nprocs; i++)
			SetLatch(&GetPGProcByNumber(procnos[i])->procLatch);
	}
	nnotes = 0;
}

/*
 * Take a waiter slot for this backend, for the given queue ids (n 0: any
 * queue).  False when the table is full: the caller then polls.
 */
bool
qe_wait_begin(const int32 *queue_ids, int n)
{
	QeWaiters *ws;

	if (!qe_shmem_attach())
		return false;
	ws = &qe_shared->waiters;
	if (my_slot >= 0)
		qe_wait_end();
	SpinLockAcquire(&ws->mutex);
	for (int s = 0; s < QE_WAITER_SLOTS; s++)
	{
		QeWaiter   *w = &ws->slots[s];

		if (w->procno >= 0)
			continue;
		w->procno = QE_MY_PROCNO;
		w->database = MyDatabaseId;
		w->nqueues = n > QE_WAITER_QUEUES ? 0 : n;	/* many: any queue */
		for (int q = 0; q < w->nqueues; q++)
			w->queue_ids[q] = queue_ids[q];
		w->woken = false;
		if (s >= ws->high_water)
			ws->high_water = s + 1;
		my_slot = s;
		break;
	}
	SpinLockRelease(&ws->mutex);
	if (my_slot < 0)
		return false;
	pg_atomic_fetch_add_u32(&ws->sleeping, 1);
	return true;
}

/* Whether two waiters may wait for a run of the same queue. */
static bool
interests_meet(const QeWaiter *a, const QeWaiter *b)
{
	if (a->database != b->database)
		return false;
	if (a->nqueues == 0 || b->nqueues == 0)
		return true;
	for (int i = 0; i < a->nqueues; i++)
		for (int j = 0; j < b->nqueues; j++)
			if (a->queue_ids[i] == b->queue_ids[j])
				return true;
	return false;
}

/*
 * Give the slot back.  A pick this waiter got while it was awake (between
 * two sleeps, claiming) was meant for a run it may not have taken: it is
 * passed on to a sleeper of a queue it waited for, so that no run waits for
 * a timeout while someone sleeps (at worst a sleeper wakes for nothing).
 */
void
qe_wait_end(void)
{
	QeWaiters *ws;
	int			pass_to = -1;

	if (my_slot < 0 || qe_shared == NULL)
		return;
	ws = &qe_shared->waiters;
	SpinLockAcquire(&ws->mutex);
	if (ws->slots[my_slot].woken)
	{
		for (int s = 0; s < ws->high_water; s++)
		{
			QeWaiter   *w = &ws->slots[s];

			if (s == my_slot || w->procno < 0 || w->woken ||
				!interests_meet(&ws->slots[my_slot], w))
				continue;
			w->woken = true;
			pass_to = w->procno;
			break;
		}
	}
	ws->slots[my_slot].procno = -1;
	while (ws->high_water > 0 && ws->slots[ws->high_water - 1].procno < 0)
		ws->high_water--;
	SpinLockRelease(&ws->mutex);
	pg_atomic_fetch_sub_u32(&ws->sleeping, 1);
	my_slot = -1;
	if (pass_to >= 0)
		SetLatch(&GetPGProcByNumber(pass_to)->procLatch);
}

/*
 * Sleep until a committer picks this waiter, the latch is set otherwise
 * (an interrupt: a cancel or statement_timeout is raised here), or
 * timeout_ms passes.  The slot stays taken; the pick is cleared, so the
 * next sleep waits for a new one.
 */
void
qe_wait_sleep(long timeout_ms)
{
	QeWaiters *ws = &qe_shared->waiters;
	bool		woken;

	SpinLockAcquire(&ws->mutex);
	woken = ws->slots[my_slot].woken;
	SpinLockRelease(&ws->mutex);
	if (!woken)
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout_ms, 1), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	SpinLockAcquire(&ws->mutex);
	ws->slots[my_slot].woken = false;
	SpinLockRelease(&ws->mutex);
	CHECK_FOR_INTERRUPTS();
}
