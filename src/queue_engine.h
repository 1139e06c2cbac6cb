/*-------------------------------------------------------------------------
 *
 * queue_engine.h
 *	  Declarations shared by the queue_engine sources: GUC variables,
 *	  saved-plan and locking helpers, jsonb limits, and the background
 *	  tasks that both SQL and run_maintenance() call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef QUEUE_ENGINE_H
#define QUEUE_ENGINE_H

#include "postgres.h"

#include "executor/spi.h"
#include "storage/lockdefs.h"
#include "utils/array.h"
#include "utils/relcache.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "datatype/timestamp.h"

#include "compat.h"

/* Hard cap on a whole stored error (SPEC "fail"). */
#define QE_MAX_ERROR_BYTES	65536

/* Largest max_runs a single dequeue may ask for. */
#define QE_MAX_DEQUEUE_RUNS 10000

/*
 * Longest text values the engine stores or looks up, in bytes (README
 * "Limits"); longer ones are rejected with program_limit_exceeded.  The
 * SQL side (sql/queue_engine--0.1.0--0.1.1.sql, Section 3) repeats the
 * name limit.
 */
#define QE_MAX_NAME_BYTES		128 /* queue and tenant names */
#define QE_MAX_CONCURRENCY_KEY_BYTES 256
#define QE_MAX_IDEMPOTENCY_KEY_BYTES 1024
#define QE_MAX_WORKER_BYTES		1024
#define QE_MAX_TAGS				64
#define QE_MAX_TAG_BYTES		256
/* How much of a cancel reason is repeated in the stored error's message. */
#define QE_CANCEL_MESSAGE_REASON_BYTES 256

/*
 * Transaction-level locks that serialise starts against one limit.  They
 * live in the advisory lock space under our own field4 values, so they can
 * never collide with an application's pg_advisory_lock() calls (which use
 * field4 1 and 2).
 */
#define QE_LOCK_QUEUE		0x5145
#define QE_LOCK_TENANT		0x5146
#define QE_LOCK_KEY			0x5147
#define QE_LOCK_QUEUE_NAME	0x5148
#define QE_LOCK_QUEUE_SLOT	0x5149
#define QE_LOCK_KEY_PLACEMENT 0x514A
#define QE_LOCK_ROTATION	0x514B
#define QE_LOCK_EVENT_KEY	0x514C
#define QE_LOCK_EVENT_NAME	0x514D
#define QE_LOCK_PARENT		0x514E
#define QE_LOCK_PARENT_WAKE	0x514F

/* guc.c */
extern int	qe_max_payload_bytes;
extern int	qe_max_output_bytes;
extern int	qe_max_error_field_bytes;
extern int	qe_maintenance_batch_size;
extern char *qe_database;
extern int	qe_maintenance_interval_ms;
extern int	qe_consistency_interval_ms;
extern bool qe_maintenance_enabled;
extern int	qe_finished_run_retention_s;
extern int	qe_event_retention_s;
extern bool qe_require_attempt;
extern int	qe_list_runs_max_scan;
#define QE_METRICS_LABELS_QUEUE		0
#define QE_METRICS_LABELS_TENANT	1
extern int	qe_metrics_labels;
extern void qe_guc_init(void);

/* worker.c */
extern void qe_worker_register(void);

/* shmem.c (the shared struct itself: shmem.h) */
extern void qe_shmem_init(void);
extern bool qe_shmem_attach(void);

/* xact.c */
extern void qe_xact_callbacks_register(void);

/* spi_util.c */
extern SPIPlanPtr qe_plan(SPIPlanPtr *slot, const char *sql, int nargs,
						  const Oid *argtypes);
extern int	qe_pin_search_path(void);
extern void qe_unpin_search_path(int level);
extern SPIPlanPtr qe_plan_cursor(SPIPlanPtr *slot, const char *sql,
								 int nargs, const Oid *argtypes);
extern uint64 qe_exec(SPIPlanPtr plan, Datum *values, const char *nulls,
					  long count);
extern uint64 qe_exec_in_order(SPIPlanPtr plan, Datum *values,
							   const char *nulls, long count);
extern uint64 qe_exec_whole_tables(SPIPlanPtr plan, Datum *values,
								   const char *nulls, long count);
extern Portal qe_cursor_open(SPIPlanPtr plan, Datum *values, const char *nulls);
extern uint64 qe_cursor_fetch(Portal portal, long count);
extern Datum qe_get(int row, int col, bool *isnull);
extern int64 qe_get_int64(int row, int col);
extern bool qe_try_xact_lock(uint32 kind, uint32 id1, uint32 id2);
extern bool qe_try_xact_lock_mode(uint32 kind, uint32 id1, uint32 id2,
								  int lockmode);
extern void qe_release_xact_lock(uint32 kind, uint32 id1, uint32 id2,
								 int lockmode);
extern void qe_lock_queue_name(const char *queue, bool exclusive);
extern void qe_lock_key_placement(int32 queue_id, bool exclusive);
extern void qe_check_jsonb_size(Datum value, int limit, const char *what,
								const char *guc_name);
extern void qe_check_interval(Interval *value, const char *name,
							  bool allow_zero);
extern int64 qe_interval_usecs(const Interval *value);
extern void qe_check_run_exists(int64 run_id);
extern Relation qe_try_open_table(const char *relname, LOCKMODE lockmode);
extern Relation qe_open_table(const char *relname, LOCKMODE lockmode);
extern void qe_check_text_bytes(Datum value, int limit, const char *what,
								const char *hint);
extern void qe_check_text_array(Datum value, const char *name, int max_elems,
								int max_elem_bytes, const char *elem_noun,
								const char *dims_hint,
								const char *null_hint, const char *length_hint);
extern void qe_require_attempt_arg(FunctionCallInfo fcinfo, int argno,
								   const char *func, const char *arg,
								   const char *hint);

/* dispatch_hints.c: a position in the ready order indexes (ready_k_order) */
typedef struct QeReadyKey
{
	int32		priority;
	TimestampTz run_at;
	int64		run_id;
} QeReadyKey;

/* Order of ready runs within a queue: priority DESC, run_at, run_id. */
static inline bool
qe_ready_key_before(const QeReadyKey *a, const QeReadyKey *b)
{
	if (a->priority != b->priority)
		return a->priority > b->priority;
	if (a->run_at != b->run_at)
		return a->run_at < b->run_at;
	return a->run_id < b->run_id;
}
extern bool qe_ready_hint_get(int32 queue_id, QeReadyKey *key);
extern void qe_ready_hint_lower(int32 queue_id, const QeReadyKey *key);
extern Oid	qe_hints_epoch(void);
extern void qe_ready_hint_forget_all(void);
extern bool qe_ready_hint_from_start_due(int32 queue_id, bool contended);
/* ... and the limit-hint fields of a queue's slot, for limits.c */
extern bool qe_limit_hints_enabled(void);
extern uint64 qe_hint_exits(int32 queue_id);
extern void qe_hint_count_exit(int32 queue_id);
extern void qe_hint_count_exit_all(void);
extern void qe_hint_set_at_limit(int32 queue_id, int32 limit, uint64 exits);
extern bool qe_hint_at_limit(int32 queue_id, int32 limit, TimestampTz *since);

/* limits.c: limit hints (the rest of limits.c is in dequeue.h) */
extern uint64 qe_limit_hint_exits(int32 queue_id);
extern void qe_limit_hint_mark(int32 queue_id, int32 limit, uint64 exits);
extern void qe_limit_hint_exit(int32 queue_id);
extern void qe_limit_hint_exit_all(void);
extern void qe_limit_hints_xact_end(bool committed, bool prepared);
extern void qe_limit_hints_subxact_abort(void);

/* queue_cache.c: a live queue's definition */
#define QE_QUEUE_CACHE_NAME_MAX 128	/* longer names are looked up each time */
typedef struct QeQueueDef
{
	int32		queue_id;
	int32		tenant_id;
	char	   *tenant;
	int32		limit;			/* 0: none */
	int32		key_limit;		/* 0: none */
	int32		tenant_limit;	/* 0: none */
	bool		paused;
	int32		max_attempts;
	Interval	lease;
	bool		ttl_null;
	Interval	ttl;
	int32		policy_id;		/* max_attempts and lease, for new runs */
} QeQueueDef;
extern const QeQueueDef *qe_queue_def(const char *name);
extern uint64 qe_queue_definitions_generation(void);
extern void qe_queue_definitions_refresh(void);

/* counts.c */
extern void qe_add_count_delta(int32 queue_id, int32 queued, int32 delayed,
							   int32 executing, int32 waiting);

/*
 * run_insert.c: the columns of a pending run (queue_engine.ready and
 * delayed), in table order, and the fields of its meta
 */
typedef enum QeRunColumn
{
	QE_RUN_RUN_ID,
	QE_RUN_RUN_AT,
	QE_RUN_QUEUE_ID,
	QE_RUN_POLICY_ID,
	QE_RUN_PRIORITY,
	QE_RUN_PAYLOAD,
	QE_RUN_CONCURRENCY_KEY,
	QE_RUN_META,
	QE_RUN_NCOLS
} QeRunColumn;
extern const char *const qe_run_column_names[QE_RUN_NCOLS];
typedef enum QeMetaField
{
	QE_META_ATTEMPT,
	QE_META_CREATED_AT,
	QE_META_EXPIRES_AT,
	QE_META_STARTED_AT,
	QE_META_WORKER,
	QE_META_IDEMPOTENCY_KEY,
	QE_META_TAGS,
	QE_META_PARENT_RUN_ID,
	QE_META_MAX_ATTEMPTS,
	QE_META_LEASE,
	QE_META_LAST_ERROR,
	QE_META_CONCURRENCY_KEY,
	QE_META_RESUME,
	QE_META_NFIELDS
} QeMetaField;
/* finished_runs' columns (run_insert.c) */
typedef enum QeFinishedColumn
{
	QE_FIN_RUN_ID,
	QE_FIN_FINISHED_AT,
	QE_FIN_RUN_AT,
	QE_FIN_STARTED_AT,
	QE_FIN_QUEUE_ID,
	QE_FIN_POLICY_ID,
	QE_FIN_PRIORITY,
	QE_FIN_ATTEMPT,
	QE_FIN_STATUS,
	QE_FIN_PAYLOAD,
	QE_FIN_OUTPUT,
	QE_FIN_CONCURRENCY_KEY,
	QE_FIN_WORKER,
	QE_FIN_META,
	QE_FIN_NCOLS
} QeFinishedColumn;
/* The executing segments' columns (run_insert.c, claim.c) */
typedef enum QeExecutingColumn
{
	QE_EXEC_RUN_ID,
	QE_EXEC_RUN_AT,
	QE_EXEC_STARTED_AT,
	QE_EXEC_LEASE_EXPIRES_AT,
	QE_EXEC_ATTEMPT_LEASE,
	QE_EXEC_QUEUE_ID,
	QE_EXEC_POLICY_ID,
	QE_EXEC_PRIORITY,
	QE_EXEC_ATTEMPT,
	QE_EXEC_QUEUE_SLOT,
	QE_EXEC_PAYLOAD,
	QE_EXEC_CONCURRENCY_KEY,
	QE_EXEC_WORKER,
	QE_EXEC_META,
	QE_EXEC_NCOLS
} QeExecutingColumn;
extern const char *const qe_executing_column_names[QE_EXEC_NCOLS];
typedef struct QeRowWriter QeRowWriter;
extern bool qe_plain_delete(Relation rel);
extern QeRowWriter *qe_open_executing(int segment);
extern void qe_write_row(QeRowWriter *w, Datum *values, bool *nulls);
extern void qe_close_writer(QeRowWriter *w);
extern void qe_column_numbers(Relation rel, const char *const *colnames,
							  int ncols, AttrNumber *att);
extern Relation qe_open_finished_runs(void);
extern void qe_insert_finished_run(Relation rel, Datum *values, bool *nulls);
/* A run_meta datum of the given fields, or NULL (*isnull) when all are. */
extern Oid	qe_run_meta_type(void);
extern Datum qe_form_run_meta(Datum *fields, bool *nulls, bool *isnull);
extern void qe_deform_run_meta(Datum meta, bool meta_null, Datum *fields,
							   bool *nulls);
extern void qe_insert_runs(Datum *values, bool *nulls, bool delayed,
						   Datum *payloads, int nrows, const int64 *given_id,
						   int64 *run_ids_out);

/* errors.c */
extern Jsonb *qe_trim_error(Jsonb *error, int field_cap, int total_cap);

/* maintenance.c: each handles at most limit items, returns how many */
extern int64 qe_task_promote_delayed(int limit);
extern int64 qe_task_expire_runs(int limit);
extern int64 qe_task_rescue_stalled(int limit);
extern int64 qe_task_purge_idempotency_keys(int limit);
extern int64 qe_task_fold_counts(int limit);
extern int qe_count_delta_segment(void);
extern int64 qe_task_rescue_stalled_resume(int limit);
extern void qe_rescue_horizon_forget(void);
extern int64 qe_task_prune_finished_runs(int limit);
extern int64 qe_task_prune_finished_runs_resume(int limit);
extern int64 qe_task_prune_finished_runs_maintenance(int limit);
extern void qe_prune_cursor_forget(void);
extern bool qe_consistency_check_start(bool force);

/* rotation.c: the run families' segments, carried and truncated */
extern int64 qe_task_rotate_segments(int limit);
extern int64 qe_task_wake_waits(int limit);
extern int64 qe_task_prune_events(int limit);
extern int64 qe_task_rotate_segments_nowait(int limit);
/*
 * The one table of background tasks, in the order a pass runs them:
 * run_maintenance() calls by_hand (each from the start, but the prune,
 * which goes on from the shared cursor until the call's consistency check
 * is due), the worker resumed (from its cursors and horizon).
 */
typedef int64 (*QeTaskFn) (int limit);
typedef struct QeBackgroundTask
{
	const char *name;
	QeTaskFn	by_hand;
	QeTaskFn	resumed;
} QeBackgroundTask;
#define QE_BACKGROUND_TASK_COUNT 9
extern const QeBackgroundTask qe_background_tasks[QE_BACKGROUND_TASK_COUNT];

/* waits.c: waits, events, children (finish.c cancels; enqueue.c registers cancel_on) */
extern void qe_children_final(int64 *parents, int n);
extern void qe_children_final_of_result(int col);
extern int	qe_unfinished_children(int64 run_id, int64 **children);
extern int64 qe_wake_satisfied_parents(void);
extern int	qe_cancel_on_rules(Jsonb *rules, char ***events, Jsonb ***matches);
extern void qe_cancel_on_register(const int64 *ids, int nids, int32 tenant_id,
								  char **events, Jsonb **matches, int nrules);

/* finish.c: cancel run_id wherever it is (and its unfinished children) */
extern bool qe_cancel_run(int64 run_id, Jsonb *error);

/* consistency.c */
typedef struct QeCheckResult
{
	const char *check_name;
	int64		found;
	int64		repaired;
} QeCheckResult;

#define QE_CHECK_COUNT 9
extern void qe_run_consistency_checks(bool repair, QeCheckResult *results);

/* access.c: tenant-scoped roles.  Granted accesses, as bits ... */
#define QE_ACCESS_READER	0x01
#define QE_ACCESS_PRODUCER	0x02
#define QE_ACCESS_WORKER	0x04
#define QE_ACCESS_ADMIN		0x08
/* ... and the grants that let a role do each kind of thing. */
#define QE_NEED_READ		(QE_ACCESS_READER | QE_ACCESS_PRODUCER | QE_ACCESS_WORKER | QE_ACCESS_ADMIN)
#define QE_NEED_PRODUCE		(QE_ACCESS_PRODUCER | QE_ACCESS_ADMIN)
#define QE_NEED_WORK		(QE_ACCESS_WORKER | QE_ACCESS_ADMIN)
#define QE_NEED_ADMIN		QE_ACCESS_ADMIN
extern bool qe_access_unscoped(void);
extern bool qe_access_tenant(uint8 need, int32 tenant_id);
extern void qe_access_require_queue(uint8 need, const char *queue,
									int32 tenant_id);
extern void qe_access_require_unscoped(const char *what);
extern ArrayType *qe_access_tenant_array(uint8 need);
extern bool qe_access_run(uint8 need, int64 run_id);
extern void qe_access_run_not_found(int64 run_id);

#endif							/* QUEUE_ENGINE_H */
