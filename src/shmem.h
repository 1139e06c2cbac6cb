/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Everything queue_engine shares between backends, in one struct
 *	  (shmem.c sizes and initialises it, in the main shared memory when
 *	  preloaded, else in a dynamic shared memory segment; qe_shared points
 *	  at it once qe_shmem_attach() returned true).  All of it is a hint or
 *	  a schedule, rebuilt from the tables or harmlessly lost on restart.
 *
 *	  Locking rule: every part has its own spinlock (the ready-hint table
 *	  one per slot, plus one for walk ids) or is a single atomic (the
 *	  rescue horizon).  A spinlock is held only to copy a few fields in or
 *	  out, never across a call that can fail or wait, and never two at
 *	  once; so the parts never wait on each other, and transaction
 *	  callbacks may take them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef QE_SHMEM_H
#define QE_SHMEM_H

#include "queue_engine.h"

#include "port/atomics.h"
#include "storage/itemptr.h"
#include "storage/spin.h"

/*
 * Ready and limit hints (dispatch_hints.c, limits.c): a direct-mapped
 * table of slots by queue id, about 100 bytes each.
 */
#define QE_READY_HINT_SLOTS 4096

typedef struct QeReadyHintSlot
{
	slock_t		mutex;
	Oid			database;		/* queue ids are per database ... */
	Oid			epoch;			/* ... and per installation: runs' relid */
	int32		queue_id;		/* 0: free */
	bool		valid;			/* false: no bound, scan from the start */
	QeReadyKey	hint;
	uint64		walk_id;		/* 0: nobody is walking */
	TimestampTz walk_started;
	bool		added_valid;	/* an entry was added during the walk */
	QeReadyKey	added;			/* the lowest such entry */
	TimestampTz from_start_at;	/* a short claim last looked from the start */
	uint64		exits;			/* runs that left executing (committed) */
	bool		at_limit;		/* marked at its limit ... */
	uint64		at_limit_exits; /* ... when exits was this */
	int32		at_limit_limit; /* ... and the limit this */
	TimestampTz at_limit_since;
} QeReadyHintSlot;

typedef struct QeReadyHintTable
{
	slock_t		mutex;			/* for next_walk_id */
	uint64		next_walk_id;
	QeReadyHintSlot slots[QE_READY_HINT_SLOTS];
} QeReadyHintTable;

/*
 * The count-delta segment new deltas go to, per database (maintenance.c):
 * direct-mapped by database oid; databases that share a slot share the
 * number, which is harmless (it only says where most deltas go).
 */
#define QE_DELTA_SEGMENT_SLOTS 64

/* Where the worker's last prune of finished runs stopped (maintenance.c). */
typedef struct QePruneCursor
{
	slock_t		mutex;
	Oid			dbid;			/* database the cursor is for */
	TimestampTz from;			/* DT_NOBEGIN: from the oldest */
} QePruneCursor;

/* When each background task is next due in the worker's passes (worker.c). */
typedef struct QeTaskSchedule
{
	slock_t		mutex;
	TimestampTz next_due[QE_BACKGROUND_TASK_COUNT]; /* 0: every pass */
} QeTaskSchedule;

/*
 * When a consistency check last started in each database, by the worker
 * or by run_maintenance() (maintenance.c): direct-mapped by database oid
 * like the delta segments; a database that takes another's slot makes
 * that one's next check due at once.
 */
typedef struct QeConsistencyClock
{
	slock_t		mutex;
	Oid			dbid[QE_DELTA_SEGMENT_SLOTS];
	TimestampTz last_started[QE_DELTA_SEGMENT_SLOTS];	/* 0: none yet */
} QeConsistencyClock;

/*
 * Metrics (metrics.c): cumulative counters per queue and two latency
 * histograms per database, all atomics, since the shared state was made
 * (a server start).  A queue's counters live in the first free slot of a
 * probe sequence from its hash, claimed once and never freed (ids are
 * never reused in an installation); when QE_METRICS_PROBES slots are all
 * others', its counts go to its database's overflow counters.  Each
 * database's histograms and overflow counters are a slot of their own
 * table, found the same way (databases created since the start, up to
 * 1024).
 */
#define QE_METRICS_QUEUE_SLOTS 16384
#define QE_METRICS_PROBES 64
#define QE_METRICS_HIST_BUCKETS 15	/* + the +Inf one */

typedef enum QeCounterKind
{
	QE_COUNT_ENQUEUED,
	QE_COUNT_STARTED,
	QE_COUNT_COMPLETED,
	QE_COUNT_FAILED,
	QE_COUNT_RETRIED,
	QE_COUNT_EXPIRED,
	QE_COUNT_CANCELED,
	QE_COUNT_RESCUED,
	QE_COUNTERS_SHOWN,			/* the above are metrics()'s counters */
	QE_COUNT_READY_MOVES = QE_COUNTERS_SHOWN,	/* moves into or out of queued or
												 * delayed: a queue whose count
												 * did not move has the same
												 * oldest startable run */
	QE_COUNTER_KINDS
} QeCounterKind;

typedef enum QeHistogramKind
{
	QE_HIST_START_DELAY,		/* startable -> started */
	QE_HIST_RUN_DURATION,		/* started -> completed or failed */
	QE_HISTOGRAM_KINDS
} QeHistogramKind;

typedef struct QeQueueCounters
{
	pg_atomic_uint32 state;		/* 0 free, 1 being claimed, 2 in use */
	Oid			database;
	Oid			epoch;			/* the runs relid (reinstalls reuse ids) */
	int32		queue_id;
	pg_atomic_uint64 counts[QE_COUNTER_KINDS];
} QeQueueCounters;

typedef struct QeHistogram
{
	pg_atomic_uint64 buckets[QE_METRICS_HIST_BUCKETS + 1];	/* not cumulative */
	pg_atomic_uint64 sum_us;
} QeHistogram;

typedef struct QeDatabaseMetrics
{
	pg_atomic_uint32 database;	/* InvalidOid: free; claimed once */
	QeHistogram hist[QE_HISTOGRAM_KINDS];
	pg_atomic_uint64 overflow[QE_COUNTER_KINDS];
} QeDatabaseMetrics;

/* Databases with histograms: open addressing, claimed once, never freed. */
#define QE_METRICS_DATABASE_SLOTS 1024

typedef struct QeMetricsShared
{
	TimestampTz since;			/* when the counters started */
	QeQueueCounters queues[QE_METRICS_QUEUE_SLOTS];
	QeDatabaseMetrics databases[QE_METRICS_DATABASE_SLOTS];
} QeMetricsShared;

/*
 * Sleeping dequeues (wakeups.c): one slot per sleeping backend, which says
 * what it waits for; a transaction that made runs startable sets the
 * latches of as many matching sleepers as runs, at commit.  One spinlock
 * for the table, held while a slot is taken or freed or while a committer
 * picks sleepers (a scan up to high_water, only when someone sleeps).
 */
#define QE_WAITER_SLOTS 512
#define QE_WAITER_QUEUES 16

typedef struct QeWaiter
{
	int			procno;			/* -1: free */
	Oid			database;
	int			nqueues;		/* 0: any queue of the database */
	int32		queue_ids[QE_WAITER_QUEUES];
	bool		woken;			/* picked by a committer since it slept */
} QeWaiter;

typedef struct QeWaiters
{
	slock_t		mutex;
	pg_atomic_uint32 sleeping;	/* slots in use (read without the lock) */
	int			high_water;		/* slots in use are below it */
	QeWaiter	slots[QE_WAITER_SLOTS];
} QeWaiters;

typedef struct QeShared
{
	QeReadyHintTable hints;
	/* No executing run's lease passes before it (a TimestampTz). */
	pg_atomic_uint64 rescue_horizon;
	pg_atomic_uint32 delta_segment[QE_DELTA_SEGMENT_SLOTS];
	/* Bit f: the current segment of run family f (segments.c). */
	pg_atomic_uint32 family_segment[QE_DELTA_SEGMENT_SLOTS];
	QePruneCursor prune_cursor;
	QeTaskSchedule task_schedule;
	QeConsistencyClock consistency_clock;
	QeMetricsShared metrics;
	QeWaiters waiters;
} QeShared;

extern QeShared *qe_shared;

/* Lower the rescue horizon to to, if it is later (lock-free). */
extern void qe_rescue_horizon_lower(TimestampTz to);

#endif							/* QE_SHMEM_H */
