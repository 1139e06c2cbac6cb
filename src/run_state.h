/*-------------------------------------------------------------------------
 *
 * run_state.h
 *	  The run's state machine: its states, the SQL that names sets of
 *	  them, the retry backoff, and the one routine that does the
 *	  bookkeeping every transition implies (run_state.c).
 *
 *	  A statement that moves runs from one state to another reports what
 *	  it moved as QeTransition records to qe_runs_transitioned(), which
 *	  writes the count deltas, lowers the ready hints, voids the limit
 *	  hints and reports granted leases to the rescue horizon.  No other
 *	  code does any of these for a state change.
 *
 *-------------------------------------------------------------------------
 */
#ifndef QE_RUN_STATE_H
#define QE_RUN_STATE_H

#include "queue_engine.h"

/* The states, in the order of the SQL enum queue_engine.run_status. */
typedef enum QeRunStatus
{
	QE_RUN_DELAYED,
	QE_RUN_QUEUED,
	QE_RUN_EXECUTING,
	QE_RUN_WAITING,
	QE_RUN_COMPLETED,
	QE_RUN_FAILED,
	QE_RUN_CANCELED,
	QE_RUN_EXPIRED,
	QE_RUN_STATUS_COUNT,
	QE_RUN_NONE = QE_RUN_STATUS_COUNT	/* not a run yet: enqueue's "from" */
} QeRunStatus;

/* Finished: final, never changes again, counted nowhere. */
#define QE_RUN_FINISHED(s) ((s) >= QE_RUN_COMPLETED && (s) <= QE_RUN_EXPIRED)

/* The labels, indexed by QeRunStatus. */
extern const char *const qe_run_status_labels[QE_RUN_STATUS_COUNT];
extern QeRunStatus qe_run_status_from_label(const char *label);

/*
 * Where a run is (storage 0.2, src/README.md): its state is the table its
 * row is in.  queued: queue_engine.ready; delayed: queue_engine.delayed;
 * executing: queue_engine.executing (each a parent of two segments, read
 * through the parent, inserted into the current segment: segments.h);
 * waiting: queue_engine.waiting_runs (not segmented: waits.c);
 * finished: queue_engine.finished_runs, whose status column says how.
 * queue_engine.runs is a view of them all for people and tests; the engine
 * never reads or writes it.
 */
#define QE_SQL_FINISHED		"('completed', 'failed', 'canceled', 'expired')"

/*
 * Where run id is, one row per table holding it (so at most one row: a
 * move is one statement, and this reads all the tables with one
 * snapshot): its status and queue.  The unique indexes first; ready and
 * delayed are found through their run_id BRIN.
 */
#define QE_SQL_RUN_PLACES(id) \
	"SELECT 'executing' AS status, x.queue_id FROM queue_engine.executing x WHERE x.run_id = " id \
	" UNION ALL SELECT x.status::text, x.queue_id FROM queue_engine.finished_runs x WHERE x.run_id = " id \
	" UNION ALL SELECT 'queued', x.queue_id FROM queue_engine.ready x WHERE x.run_id = " id \
	" UNION ALL SELECT 'delayed', x.queue_id FROM queue_engine.delayed x WHERE x.run_id = " id \
	" UNION ALL SELECT 'waiting', x.queue_id FROM queue_engine.waiting_runs x WHERE x.run_id = " id

/*
 * Whether run id (an SQL expression) has a child that is not final: one
 * probe of each unfinished place's parent index.
 */
#define QE_SQL_UNFINISHED_CHILD(id) \
	"EXISTS (SELECT 1 FROM queue_engine.executing x WHERE (x.meta).parent_run_id = " id ")" \
	" OR EXISTS (SELECT 1 FROM queue_engine.ready x WHERE (x.meta).parent_run_id = " id ")" \
	" OR EXISTS (SELECT 1 FROM queue_engine.delayed x WHERE (x.meta).parent_run_id = " id ")" \
	" OR EXISTS (SELECT 1 FROM queue_engine.waiting_runs x WHERE (x.meta).parent_run_id = " id ")"

/*
 * A pending run's fields that live in meta (alias x): attempts started so
 * far (meta.attempt NULL: none), the effective max_attempts and lease
 * (meta overrides, else the run's policy p), created_at.
 */
#define QE_SQL_ATTEMPT(x)		"coalesce((" x ".meta).attempt, 0)"

/*
 * A run's concurrency key (alias x): in the concurrency_key column, or,
 * for a queued run of a queue without a per-key limit, in meta (the
 * column then stays NULL, which puts the run in the order index:
 * src/README.md, "Keys").  Executing and finished rows and delayed ones
 * always have it in the column.
 */
#define QE_SQL_KEY_OF(x)		"coalesce(" x ".concurrency_key, (" x ".meta).concurrency_key)"

/*
 * Where a run entering ready puts its key (an SQL expression), given
 * keyed, an SQL boolean saying whether its queue has a per-key limit: the
 * column's value, and meta's.
 */
#define QE_SQL_READY_KEY_COLUMN(key, keyed) "CASE WHEN " keyed " THEN " key " END"
#define QE_SQL_READY_KEY_META(key, keyed)	"CASE WHEN NOT " keyed " THEN " key " END"
#define QE_SQL_MAX_ATTEMPTS(x, p) "coalesce((" x ".meta).max_attempts, " p ".max_attempts)"
#define QE_SQL_LEASE(x, p)		"coalesce((" x ".meta).lease, " p ".lease)"

/*
 * A pending run (alias x) may start unless it never started and its ttl
 * passed.
 */
#define QE_SQL_STARTABLE_OF(x) \
	"((" x ".meta).attempt IS NOT NULL OR (" x ".meta).expires_at IS NULL" \
	" OR (" x ".meta).expires_at > now())"
#define QE_SQL_STARTABLE QE_SQL_STARTABLE_OF("x")

/*
 * meta built from its fields, in the type's order, NULL when all are
 * (each argument an SQL expression).
 */
#define QE_SQL_META_R(attempt, created_at, expires_at, started_at, worker, \
					idempotency_key, tags, parent_run_id, max_attempts, lease, \
					last_error, concurrency_key, resume) \
	"queue_engine.run_meta_or_null(ROW(" attempt ", " created_at ", " \
	expires_at ", " started_at ", " worker ", " idempotency_key ", " tags \
	", " parent_run_id ", " max_attempts ", " lease ", " last_error \
	", " concurrency_key ", " resume ")::queue_engine.run_meta)"

/*
 * The same without resume (why a woken run woke, for the dequeue that
 * starts it: waits.c): every move but a wake and a claim clears it.
 */
#define QE_SQL_META(attempt, created_at, expires_at, started_at, worker, \
					idempotency_key, tags, parent_run_id, max_attempts, lease, \
					last_error, concurrency_key) \
	QE_SQL_META_R(attempt, created_at, expires_at, started_at, worker, \
				  idempotency_key, tags, parent_run_id, max_attempts, lease, \
				  last_error, concurrency_key, "NULL")

/* meta m (an SQL expression) with its concurrency_key replaced by key. */
#define QE_SQL_META_WITH_KEY(m, key) \
	QE_SQL_META_R("(" m ").attempt", "(" m ").created_at", "(" m ").expires_at", \
				  "(" m ").started_at", "(" m ").worker", "(" m ").idempotency_key", \
				  "(" m ").tags", "(" m ").parent_run_id", "(" m ").max_attempts", \
				  "(" m ").lease", "(" m ").last_error", key, "(" m ").resume")

/*
 * A claimed run's attempt (alias x, a ready row): one more than those
 * started so far, or, for a run woken from a wait, the same (a wait uses
 * up no attempt: the attempt that waited goes on).
 */
#define QE_SQL_CLAIM_ATTEMPT(x) \
	"(" QE_SQL_ATTEMPT(x) " + CASE WHEN (" x ".meta).resume IS NULL THEN 1 ELSE 0 END)"

/*
 * Runs that made one move: nruns runs of queue_id went from one state to
 * another (from == to: a lease extended).  For runs that became queued,
 * key is the lowest (priority, run_at, run_id) among them; for runs that
 * became or stay executing, lease_expires_at is the earliest lease granted
 * (DT_NOEND: none).
 */
typedef struct QeTransition
{
	int32		queue_id;
	QeRunStatus from;
	QeRunStatus to;
	int32		nruns;
	QeReadyKey	key;
	TimestampTz lease_expires_at;
} QeTransition;

/*
 * The bookkeeping of the moves the current transaction just made (in
 * place: moves may be reordered).
 */
extern void qe_runs_transitioned(QeTransition *moves, int nmoves);

/* One move of nruns runs (key and lease may be NULL / DT_NOEND). */
extern void qe_run_transitioned(int32 queue_id, QeRunStatus from,
								QeRunStatus to, int32 nruns,
								const QeReadyKey *key,
								TimestampTz lease_expires_at);

/* At transaction end (xact.c). */
extern void qe_run_state_xact_end(bool committed);

/*
 * Retry delay of a failed attempt: retry_backoff * 2^(attempt-1), capped at
 * retry_backoff_max, with +-20% jitter.
 */
extern int64 qe_retry_backoff_usecs(const Interval *base, const Interval *cap,
									int attempt);

#endif							/* QE_RUN_STATE_H */
