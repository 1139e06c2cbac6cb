/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The queue_engine.* configuration parameters.  Size caps are superuser
 *	  settings so that an application cannot lift its own limits.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "utils/guc.h"
#include "utils/memutils.h"

int			qe_max_payload_bytes = 10 * 1024 * 1024;
int			qe_max_output_bytes = 10 * 1024 * 1024;
int			qe_max_error_field_bytes = 16384;
int			qe_maintenance_batch_size = 1000;
char	   *qe_database = NULL;
int			qe_maintenance_interval_ms = 1000;
int			qe_consistency_interval_ms = 60000;
bool		qe_maintenance_enabled = true;
int			qe_event_retention_s = 24 * 3600;
int			qe_finished_run_retention_s = 7 * 24 * 3600;
bool		qe_require_attempt = false;
int			qe_list_runs_max_scan = 10000;
int			qe_metrics_labels = QE_METRICS_LABELS_QUEUE;

static const struct config_enum_entry metrics_labels_options[] = {
	{"queue", QE_METRICS_LABELS_QUEUE, false},
	{"tenant", QE_METRICS_LABELS_TENANT, false},
	{NULL, 0, false}
};

void
qe_guc_init(void)
{
	DefineCustomIntVariable("queue_engine.max_payload_bytes",
							"Largest payload a run may carry, measured on the stored jsonb.",
							NULL,
							&qe_max_payload_bytes,
							10 * 1024 * 1024, 1, MaxAllocSize / 2,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("queue_engine.max_output_bytes",
							"Largest output complete() accepts, measured on the stored jsonb.",
							NULL,
							&qe_max_output_bytes,
							10 * 1024 * 1024, 1, MaxAllocSize / 2,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("queue_engine.max_error_field_bytes",
							"Longest string value kept in a stored error; longer ones are cut.",
							"The whole stored error is also capped at 64kB.",
							&qe_max_error_field_bytes,
							16384, 64, QE_MAX_ERROR_BYTES,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("queue_engine.maintenance_batch_size",
							"Most runs one maintenance batch (one transaction) handles.",
							NULL,
							&qe_maintenance_batch_size,
							1000, 1, 1000000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("queue_engine.database",
							   "Database whose runs the background worker maintains.",
							   NULL,
							   &qe_database,
							   "postgres",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("queue_engine.maintenance_interval",
							"Time between the background worker's maintenance passes.",
							NULL,
							&qe_maintenance_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("queue_engine.consistency_interval",
							"Time between consistency checks, the worker's and run_maintenance()'s.",
							"0 checks at every pass.",
							&qe_consistency_interval_ms,
							60000, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("queue_engine.maintenance_enabled",
							 "Whether the background worker does its maintenance passes.",
							 NULL,
							 &qe_maintenance_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("queue_engine.finished_run_retention",
							"How long finished runs stay readable before maintenance deletes them.",
							"Counted from finished_at; -1 keeps them forever.",
							&qe_finished_run_retention_s,
							7 * 24 * 3600, -1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("queue_engine.event_retention",
							"How long sent events are kept (for lookback and idempotency keys) before maintenance deletes them.",
							"Counted from the send; keep it at least as long as the longest lookback in use.",
							&qe_event_retention_s,
							24 * 3600, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("queue_engine.require_attempt",
							 "Makes heartbeat, complete, complete_batch and fail without attempt an error.",
							 "Without attempt they act on whatever attempt is current, even one started after this worker's lease was rescued.",
							 &qe_require_attempt,
							 false,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	/* Read by list_runs (SQL), which defaults to the same without the library. */
	DefineCustomIntVariable("queue_engine.list_runs_max_scan",
							"Most candidate runs one list_runs page examines for filters its index cannot apply.",
							"A page that reaches it before it is full ends with a continuation row (run_id NULL, cursor set).",
							&qe_list_runs_max_scan,
							10000, 1, 10000000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("queue_engine.metrics_labels",
							 "Whether metrics() shows the per-queue series per queue or summed per tenant.",
							 "tenant: for installations with more queues than Prometheus should keep series of.",
							 &qe_metrics_labels,
							 QE_METRICS_LABELS_QUEUE, metrics_labels_options,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("queue_engine");
}
