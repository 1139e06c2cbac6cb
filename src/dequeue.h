/*-------------------------------------------------------------------------
 *
 * dequeue.h
 *	  The claim path's shared types.  A dequeue reads as three steps, one
 *	  file each:
 *	  - dequeue.c, scheduling: the SQL entry point and its arguments, name
 *	    resolution, and the tenants' and queues' turns;
 *	  - limits.c, admission: how many runs a queue may start now under
 *	    its tenant's, its own and its keys' limits (locks, counts, slots,
 *	    limit hints);
 *	  - claim.c, the claim: the statements that turn queued runs into
 *	    executing ones, and the rows handed to the caller.
 *
 *-------------------------------------------------------------------------
 */
#ifndef QE_DEQUEUE_H
#define QE_DEQUEUE_H

#include "run_state.h"

#include "funcapi.h"

/*
 * How a limited queue's starts are admitted in this call, decided when the
 * call first claims from it.
 */
typedef enum QeAdmission
{
	QE_ADMIT_UNDECIDED,			/* not claimed from yet (or turned away) */
	QE_ADMIT_UNLIMITED,			/* no queue limit: no lock, nothing counted */
	QE_ADMIT_SLOTS,				/* side by side: the queue lock shared, and a
								 * lock of its own for each slot taken */
	QE_ADMIT_SERIALISED			/* one starter at a time: the queue lock
								 * exclusive */
} QeAdmission;

/* A queue that has queued runs and is not paused. */
typedef struct QeCandidate
{
	int32		queue_id;
	char	   *queue;
	int32		limit;			/* 0: unlimited */
	int32		key_limit;		/* 0: unlimited */
	QeAdmission admission;
	int64		running;		/* SLOTS, SERIALISED: its executing runs */
	uint64		exits_seen;		/* its limit hint's exit count, read before
								 * counting */
	bool		exhausted;		/* nothing more to get from it this call */
	bool		assign_slots;	/* new runs take slot numbers (a limit up to
								 * QE_MAX_SLOTTED_LIMIT) */
	bool	   *slot_used;		/* assign_slots: [limit] slots known taken */
	int		   *slots;			/* assign_slots: slots for the next claim */
	int			nslots;
} QeCandidate;

typedef struct QeTenant
{
	int32		tenant_id;
	char	   *tenant;
	int32		limit;
	int64		running;		/* -1 until counted */
	bool		locked_out;		/* its lock is busy, or nothing more is
								 * startable */
	bool		cycled;			/* all its startable queues visited once */
	bool		held_share;		/* its claim lock, in share mode ... */
	bool		held_exclusive; /* ... or exclusive mode, taken by this call */
	uint64		limit_generation;	/* definitions generation limit was read
									 * at */
	int64		claimed;		/* runs this call started in it */
} QeTenant;

/* Per-call state handed to the claim. */
typedef struct QeDequeueCall
{
	Tuplestorestate *store;
	TupleDesc	desc;
	Datum		lease;
	bool		lease_null;
	Datum		worker;
	bool		worker_null;
	int			remaining;
} QeDequeueCall;

/* limits.c: the tenant's claim lock */
extern bool qe_tenant_lock(QeTenant *t);
extern bool qe_tenant_lock_fresh(QeTenant *t);
extern void qe_tenant_unlock_unclaimed(QeTenant *t);

/* limits.c: a queue's admission around one claim */
extern int	qe_admit(QeCandidate *q, QeTenant *t, int want);
extern void qe_admit_slot_taken(QeCandidate *q, int32 slot);
extern void qe_admit_done(QeCandidate *q, QeTenant *t, int admitted,
						  uint64 started);

/* limits.c: a concurrency key's admission */
extern int64 qe_key_executing(int32 queue_id, text *key);
extern int64 qe_key_admit(int32 queue_id, uint32 key_hash, text *key,
						  int32 key_limit);

/* limits.c: may the queue start a run as far as its own limit goes? */
extern bool qe_queue_below_limit_now(int32 queue_id, int32 limit);

/* claim.c */
extern uint64 qe_claim(QeDequeueCall *call, QeCandidate *q, QeTenant *t,
					   int want);

#endif							/* QE_DEQUEUE_H */
