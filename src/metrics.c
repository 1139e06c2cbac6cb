/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  The engine's metrics: counters of what happened to runs and two
 *	  latency histograms, kept in the shared state (shmem.h) without a hot
 *	  row, and metrics(), which writes them with the per-queue gauges and
 *	  the health of the engine's tables in Prometheus' text format.
 *
 *	  A transaction counts what it does in backend memory, per
 *	  subtransaction (qe_metrics_moved from run_state.c, qe_metrics_observe
 *	  from the claim and the finish), and adds it to the shared atomics when
 *	  it commits, so rolled-back work counts nothing.  The counters start at
 *	  zero when the shared state is made (a server start, or the first use
 *	  after one without preloading) and are lost on restart, as Prometheus
 *	  expects of a counter (queue_engine_counters_since_timestamp_seconds
 *	  says when they started).
 *
 *-------------------------------------------------------------------------
 */
#include "metrics.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(qe_metrics);

/* Upper bounds of the histograms' buckets, in seconds (then +Inf). */
static const double bucket_bounds[QE_METRICS_HIST_BUCKETS] = {
	0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600
};

static const char *const counter_names[QE_COUNTER_KINDS] = {
	[QE_COUNT_ENQUEUED] = "enqueued",
	[QE_COUNT_STARTED] = "started",
	[QE_COUNT_COMPLETED] = "completed",
	[QE_COUNT_FAILED] = "failed",
	[QE_COUNT_RETRIED] = "retried",
	[QE_COUNT_EXPIRED] = "expired",
	[QE_COUNT_CANCELED] = "canceled",
	[QE_COUNT_RESCUED] = "rescued",
};

static const char *const counter_help[QE_COUNTER_KINDS] = {
	[QE_COUNT_ENQUEUED] = "Runs enqueued.",
	[QE_COUNT_STARTED] = "Attempts started by dequeue (a woken run's resume included).",
	[QE_COUNT_COMPLETED] = "Runs completed.",
	[QE_COUNT_FAILED] = "Runs failed for good (attempts spent, permanent, or a spent stall).",
	[QE_COUNT_RETRIED] = "Attempts that failed or stalled and were scheduled again.",
	[QE_COUNT_EXPIRED] = "Runs expired before their first start.",
	[QE_COUNT_CANCELED] = "Runs canceled.",
	[QE_COUNT_RESCUED] = "Executing runs whose lease passed, taken back by maintenance.",
};

/* Set by maintenance.c around the stall rescue's moves. */
bool		qe_metrics_rescuing = false;

/* What this transaction counted, per subtransaction and queue. */
typedef struct PendingCounts
{
	SubTransactionId subid;
	int32		queue_id;
	Oid			epoch;
	int64		counts[QE_COUNTER_KINDS];
} PendingCounts;

typedef struct PendingObservation
{
	SubTransactionId subid;
	QeHistogramKind kind;
	int64		usecs;
} PendingObservation;

static PendingCounts *pending = NULL;
static int	npending = 0;
static int	pending_cap = 0;
static PendingObservation *observations = NULL;
static int	nobservations = 0;
static int	observations_cap = 0;

static void *
grow(void *array, int *cap, Size elem)
{
	int			newcap = *cap == 0 ? 16 : *cap * 2;

	if (array == NULL)
		array = MemoryContextAlloc(TopMemoryContext, elem * newcap);
	else
		array = repalloc(array, elem * newcap);
	*cap = newcap;
	return array;
}

static void
count(int32 queue_id, QeCounterKind kind, int32 n)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	PendingCounts *p = NULL;

	/* a transaction mostly touches one queue, or a few in turn */
	for (int i = npending - 1; i >= 0 && i >= npending - 8; i--)
		if (pending[i].queue_id == queue_id && pending[i].subid == subid)
		{
			p = &pending[i];
			break;
		}
	if (p == NULL)
	{
		if (npending == pending_cap)
			pending = grow(pending, &pending_cap, sizeof(PendingCounts));
		p = &pending[npending++];
		memset(p, 0, sizeof(*p));
		p->subid = subid;
		p->queue_id = queue_id;
		p->epoch = qe_hints_epoch();
	}
	p->counts[kind] += n;
}

void
qe_metrics_moved(int32 queue_id, QeRunStatus from, QeRunStatus to, int32 n)
{
	if (from == to || n <= 0 || queue_id == 0)
		return;
	if (from == QE_RUN_NONE)
		count(queue_id, QE_COUNT_ENQUEUED, n);
	if (to == QE_RUN_EXECUTING)
		count(queue_id, QE_COUNT_STARTED, n);
	switch (to)
	{
		case QE_RUN_COMPLETED:
			count(queue_id, QE_COUNT_COMPLETED, n);
			break;
		case QE_RUN_FAILED:
			count(queue_id, QE_COUNT_FAILED, n);
			break;
		case QE_RUN_CANCELED:
			count(queue_id, QE_COUNT_CANCELED, n);
			break;
		case QE_RUN_EXPIRED:
			count(queue_id, QE_COUNT_EXPIRED, n);
			break;
		case QE_RUN_QUEUED:
		case QE_RUN_DELAYED:
			if (from == QE_RUN_EXECUTING)
				count(queue_id, QE_COUNT_RETRIED, n);
			break;
		default:
			break;
	}
	if (from == QE_RUN_EXECUTING && qe_metrics_rescuing)
		count(queue_id, QE_COUNT_RESCUED, n);
}

void
qe_metrics_observe(QeHistogramKind kind, int64 usecs)
{
	PendingObservation *o;

	if (nobservations == observations_cap)
		observations = grow(observations, &observations_cap, sizeof(PendingObservation));
	o = &observations[nobservations++];
	o->subid = GetCurrentSubTransactionId();
	o->kind = kind;
	o->usecs = Max(usecs, 0);
}

/* A queue's counters in the shared state, claimed if new; NULL: full. */
static QeQueueCounters *
counters_of(Oid epoch, int32 queue_id)
{
	QeMetricsShared *m = &qe_shared->metrics;
	uint32		h = ((uint32) queue_id * 2654435761U) ^ ((uint32) MyDatabaseId * 40503U) ^ (uint32) epoch;

	for (int i = 0; i < QE_METRICS_PROBES; i++)
	{
		QeQueueCounters *c = &m->queues[(h + i) % QE_METRICS_QUEUE_SLOTS];
		uint32		state = pg_atomic_read_u32(&c->state);

		if (state == 0)
		{
			uint32		expected = 0;

			if (!pg_atomic_compare_exchange_u32(&c->state, &expected, 1))
			{
				i--;			/* someone took it meanwhile: look again */
				continue;
			}
			c->database = MyDatabaseId;
			c->epoch = epoch;
			c->queue_id = queue_id;
			pg_write_barrier();
			pg_atomic_write_u32(&c->state, 2);
			return c;
		}
		if (state == 2)
		{
			pg_read_barrier();
			if (c->queue_id == queue_id && c->database == MyDatabaseId && c->epoch == epoch)
				return c;
		}
		/* state 1: being claimed by another; it may be this queue's, which
		 * then has two slots (metrics() adds them up) */
	}
	return NULL;
}

/* This database's histograms and overflow counters; NULL: all taken. */
static QeDatabaseMetrics *
database_metrics(bool claim)
{
	for (int i = 0; i < QE_METRICS_DATABASE_SLOTS; i++)
	{
		QeDatabaseMetrics *d = &qe_shared->metrics.databases[((uint32) MyDatabaseId + i) %
															  QE_METRICS_DATABASE_SLOTS];
		uint32		owner = pg_atomic_read_u32(&d->database);

		if (owner == MyDatabaseId)
			return d;
		if (owner == InvalidOid)
		{
			uint32		expected = InvalidOid;

			if (!claim)
				return NULL;	/* (slots are claimed in probe order) */
			if (pg_atomic_compare_exchange_u32(&d->database, &expected, MyDatabaseId) ||
				expected == MyDatabaseId)
				return d;
		}
	}
	return NULL;
}

static int
bucket_of(int64 usecs)
{
	for (int b = 0; b < QE_METRICS_HIST_BUCKETS; b++)
		if ((double) usecs <= bucket_bounds[b] * 1e6)
			return b;
	return QE_METRICS_HIST_BUCKETS;
}

/* At the end of the transaction (xact.c): publish on commit, else forget. */
void
qe_metrics_xact_end(bool committed)
{
	if (committed && (npending > 0 || nobservations > 0) && qe_shared != NULL)
	{
		QeDatabaseMetrics *d = database_metrics(true);

		for (int i = 0; i < npending; i++)
		{
			QeQueueCounters *c = counters_of(pending[i].epoch, pending[i].queue_id);

			for (int k = 0; k < QE_COUNTER_KINDS; k++)
			{
				if (pending[i].counts[k] == 0)
					continue;
				if (c != NULL)
					pg_atomic_fetch_add_u64(&c->counts[k], pending[i].counts[k]);
				else if (d != NULL)
					pg_atomic_fetch_add_u64(&d->overflow[k], pending[i].counts[k]);
			}
		}
		for (int i = 0; i < nobservations && d != NULL; i++)
		{
			QeHistogram *h = &d->hist[observations[i].kind];

			pg_atomic_fetch_add_u64(&h->buckets[bucket_of(observations[i].usecs)], 1);
			pg_atomic_fetch_add_u64(&h->sum_us, (uint64) observations[i].usecs);
		}
	}
	npending = 0;
	nobservations = 0;
	qe_metrics_rescuing = false;	/* (a rescue that failed) */
}

/* A subtransaction ended: its counts go to its parent, or away. */
void
qe_metrics_subxact_end(bool committed, SubTransactionId subid,
					   SubTransactionId parent)
{
	int			kept = 0;

	for (int i = 0; i < npending; i++)
	{
		if (pending[i].subid == subid)
		{
			if (!committed)
				continue;
			pending[i].subid = parent;
		}
		pending[kept++] = pending[i];
	}
	npending = kept;
	kept = 0;
	for (int i = 0; i < nobservations; i++)
	{
		if (observations[i].subid == subid)
		{
			if (!committed)
				continue;
			observations[i].subid = parent;
		}
		observations[kept++] = observations[i];
	}
	nobservations = kept;
}

/* ---------- metrics() ---------- */

static void
append_label_value(StringInfo buf, const char *v)
{
	for (; *v; v++)
	{
		if (*v == '\\')
			appendStringInfoString(buf, "\\\\");
		else if (*v == '"')
			appendStringInfoString(buf, "\\\"");
		else if (*v == '\n')
			appendStringInfoString(buf, "\\n");
		else
			appendStringInfoChar(buf, *v);
	}
}

static void
family(StringInfo buf, const char *name, const char *type, const char *help)
{
	appendStringInfo(buf, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The columns of the per-queue statement below. */
enum
{
	Q_TENANT = 2, Q_QUEUE, Q_PAUSED, Q_LIMIT, Q_QUEUED, Q_DELAYED,
	Q_EXECUTING, Q_WAITING, Q_OLDEST_AGE
};

/* name{tenant="...",queue="..." */
static void
queue_sample(StringInfo buf, const char *name, char **labels, int row)
{
	appendStringInfo(buf, "%s{tenant=\"", name);
	append_label_value(buf, labels[row * 2]);
	appendStringInfoString(buf, "\",queue=\"");
	append_label_value(buf, labels[row * 2 + 1]);
	appendStringInfoChar(buf, '"');
}

/* A live queue's id by its name. */
typedef struct QueueIdByName
{
	char		name[QE_MAX_NAME_BYTES + 1];
	int32		queue_id;
} QueueIdByName;

static void
write_queue_metrics(StringInfo buf)
{
	static SPIPlanPtr ids_plan = NULL;
	static SPIPlanPtr plan = NULL;
	HTAB	   *ids;
	static const char *const states[4] = {"queued", "delayed", "executing", "waiting"};
	uint64		n;
	char	  **labels;
	int64	   *counts;			/* per row, QE_COUNTER_KINDS each */
	bool	   *has_counts;
	Oid			epoch = qe_hints_epoch();

	/*
	 * The live queues' ids by name (names of live queues are unique), for
	 * queue_stats' rows, which name their queue; a join in SQL was planned
	 * as a nested loop over 10,000 names each way.
	 */
	qe_plan(&ids_plan,
			"SELECT q.queue, q.queue_id FROM queue_engine.queues q WHERE q.dropped_at IS NULL",
			0, NULL);
	n = qe_exec_whole_tables(ids_plan, NULL, NULL, 0);
	{
		HASHCTL		ctl;

		ctl.keysize = QE_MAX_NAME_BYTES + 1;
		ctl.entrysize = sizeof(QueueIdByName);
		ctl.hcxt = CurrentMemoryContext;
		ids = hash_create("queue_engine metrics queue ids", Max(n, 16), &ctl,
						  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		char	   *name = TextDatumGetCString(qe_get(r, 1, &isnull));
		QueueIdByName *e;

		if (strlen(name) > QE_MAX_NAME_BYTES)
			continue;
		e = hash_search(ids, name, HASH_ENTER, NULL);
		e->queue_id = DatumGetInt32(qe_get(r, 2, &isnull));
	}

	/* queue_stats filters by the caller's tenants (access.c) */
	qe_plan(&plan,
			"SELECT 0, s.tenant, s.queue, s.paused, s.concurrency_limit,"
			"       s.queued, s.delayed, s.executing, s.waiting,"
			"       extract(epoch FROM clock_timestamp() - s.oldest_queued_at)::float8"
			"  FROM queue_engine.queue_stats s"
			" ORDER BY s.tenant, s.queue",
			0, NULL);
	n = qe_exec_whole_tables(plan, NULL, NULL, 0);
	labels = palloc(sizeof(char *) * 2 * Max(n, 1));
	counts = palloc0(sizeof(int64) * QE_COUNTER_KINDS * Max(n, 1));
	has_counts = palloc0(sizeof(bool) * Max(n, 1));
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		QueueIdByName *e;
		int32		queue_id;
		uint32		h;

		labels[r * 2] = TextDatumGetCString(qe_get(r, Q_TENANT, &isnull));
		labels[r * 2 + 1] = TextDatumGetCString(qe_get(r, Q_QUEUE, &isnull));
		e = strlen(labels[r * 2 + 1]) > QE_MAX_NAME_BYTES ? NULL :
			hash_search(ids, labels[r * 2 + 1], HASH_FIND, NULL);
		if (e == NULL)
			continue;			/* (dropped meanwhile) */
		queue_id = e->queue_id;
		h = ((uint32) queue_id * 2654435761U) ^ ((uint32) MyDatabaseId * 40503U) ^ (uint32) epoch;
		/* every slot of the queue's probe sequence that is its */
		for (int i = 0; i < QE_METRICS_PROBES; i++)
		{
			QeQueueCounters *c = &qe_shared->metrics.queues[(h + i) % QE_METRICS_QUEUE_SLOTS];
			uint32		state = pg_atomic_read_u32(&c->state);

			if (state == 0)
				break;
			if (state != 2)
				continue;
			pg_read_barrier();
			if (c->queue_id != queue_id || c->database != MyDatabaseId || c->epoch != epoch)
				continue;
			has_counts[r] = true;
			for (int k = 0; k < QE_COUNTER_KINDS; k++)
				counts[r * QE_COUNTER_KINDS + k] += (int64) pg_atomic_read_u64(&c->counts[k]);
		}
	}

	family(buf, "queue_engine_runs", "gauge", "Runs of the queue in each unfinished state.");
	for (uint64 r = 0; r < n; r++)
		for (int s = 0; s < 4; s++)
		{
			bool		isnull;

			queue_sample(buf, "queue_engine_runs", labels, r);
			appendStringInfo(buf, ",status=\"%s\"} " INT64_FORMAT "\n", states[s],
							 DatumGetInt64(qe_get(r, Q_QUEUED + s, &isnull)));
		}
	family(buf, "queue_engine_concurrency_limit", "gauge",
		   "The queue's concurrency limit (queues with one).");
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		Datum		v = qe_get(r, Q_LIMIT, &isnull);

		if (isnull)
			continue;
		queue_sample(buf, "queue_engine_concurrency_limit", labels, r);
		appendStringInfo(buf, "} %d\n", DatumGetInt32(v));
	}
	family(buf, "queue_engine_queue_paused", "gauge", "1 when the queue is paused.");
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;

		queue_sample(buf, "queue_engine_queue_paused", labels, r);
		appendStringInfo(buf, "} %d\n", DatumGetBool(qe_get(r, Q_PAUSED, &isnull)) ? 1 : 0);
	}
	family(buf, "queue_engine_oldest_startable_age_seconds", "gauge",
		   "Age of the queue's oldest startable run, from when it could start (queues with one).");
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		Datum		v = qe_get(r, Q_OLDEST_AGE, &isnull);

		if (isnull)
			continue;
		queue_sample(buf, "queue_engine_oldest_startable_age_seconds", labels, r);
		appendStringInfo(buf, "} %.6f\n", Max(DatumGetFloat8(v), 0.0));
	}
	for (int k = 0; k < QE_COUNTER_KINDS; k++)
	{
		char		name[64];

		snprintf(name, sizeof(name), "queue_engine_runs_%s_total", counter_names[k]);
		family(buf, name, "counter", counter_help[k]);
		for (uint64 r = 0; r < n; r++)
		{
			if (!has_counts[r])
				continue;
			queue_sample(buf, name, labels, r);
			appendStringInfo(buf, "} " INT64_FORMAT "\n", counts[r * QE_COUNTER_KINDS + k]);
		}
	}
}

static void
write_histograms(StringInfo buf)
{
	static const char *const names[QE_HISTOGRAM_KINDS] = {
		[QE_HIST_START_DELAY] = "queue_engine_start_delay_seconds",
		[QE_HIST_RUN_DURATION] = "queue_engine_run_duration_seconds",
	};
	static const char *const help[QE_HISTOGRAM_KINDS] = {
		[QE_HIST_START_DELAY] = "Time from when a run could start (run_at) to its start by dequeue.",
		[QE_HIST_RUN_DURATION] = "Time from an attempt's start to its complete() or fail().",
	};
	QeDatabaseMetrics *d = database_metrics(false);

	for (int h = 0; h < QE_HISTOGRAM_KINDS; h++)
	{
		uint64		cumulative = 0;

		family(buf, names[h], "histogram", help[h]);
		for (int b = 0; b <= QE_METRICS_HIST_BUCKETS; b++)
		{
			cumulative += d ? pg_atomic_read_u64(&d->hist[h].buckets[b]) : 0;
			if (b < QE_METRICS_HIST_BUCKETS)
				appendStringInfo(buf, "%s_bucket{le=\"%g\"} " UINT64_FORMAT "\n",
								 names[h], bucket_bounds[b], cumulative);
			else
				appendStringInfo(buf, "%s_bucket{le=\"+Inf\"} " UINT64_FORMAT "\n",
								 names[h], cumulative);
		}
		appendStringInfo(buf, "%s_sum %.6f\n%s_count " UINT64_FORMAT "\n",
						 names[h], d ? (double) pg_atomic_read_u64(&d->hist[h].sum_us) / 1e6 : 0.0,
						 names[h], cumulative);
	}
	family(buf, "queue_engine_runs_unattributed_total", "counter",
		   "Counts of queues that found no free counter slot (more than 16384 queues since the start).");
	for (int k = 0; k < QE_COUNTER_KINDS; k++)
		appendStringInfo(buf, "queue_engine_runs_unattributed_total{event=\"%s\"} " UINT64_FORMAT "\n",
						 counter_names[k], d ? pg_atomic_read_u64(&d->overflow[k]) : 0);
	family(buf, "queue_engine_counters_since_timestamp_seconds", "gauge",
		   "When the counters and histograms started from zero (a server start).");
	appendStringInfo(buf, "queue_engine_counters_since_timestamp_seconds %.3f\n",
					 (double) (qe_shared->metrics.since - SetEpochTimestamp()) / 1e6);
}

/* The engine's tables, and what holds back the xmin horizon. */
static void
write_health(StringInfo buf)
{
	static SPIPlanPtr tables_plan = NULL;
	static SPIPlanPtr horizon_plan = NULL;
	static SPIPlanPtr repairs_plan = NULL;
	uint64		n;
	bool		isnull;

	qe_plan(&tables_plan,
			"SELECT s.relname::text, s.n_live_tup, s.n_dead_tup,"
			"       pg_catalog.pg_total_relation_size(s.relid)"
			"  FROM pg_catalog.pg_stat_user_tables s"
			" WHERE s.schemaname = 'queue_engine' ORDER BY s.relname",
			0, NULL);
	n = qe_exec_whole_tables(tables_plan, NULL, NULL, 0);
	family(buf, "queue_engine_table_dead_tuples", "gauge",
		   "Dead row versions in each of the engine's tables (VACUUM removes them once no snapshot needs them).");
	for (uint64 r = 0; r < n; r++)
		appendStringInfo(buf, "queue_engine_table_dead_tuples{table=\"%s\"} " INT64_FORMAT "\n",
						 TextDatumGetCString(qe_get(r, 1, &isnull)),
						 DatumGetInt64(qe_get(r, 3, &isnull)));
	family(buf, "queue_engine_table_live_tuples", "gauge", "Live rows in each of the engine's tables (estimate).");
	for (uint64 r = 0; r < n; r++)
		appendStringInfo(buf, "queue_engine_table_live_tuples{table=\"%s\"} " INT64_FORMAT "\n",
						 TextDatumGetCString(qe_get(r, 1, &isnull)),
						 DatumGetInt64(qe_get(r, 2, &isnull)));
	family(buf, "queue_engine_table_bytes", "gauge", "Size of each of the engine's tables with indexes and TOAST.");
	for (uint64 r = 0; r < n; r++)
		appendStringInfo(buf, "queue_engine_table_bytes{table=\"%s\"} " INT64_FORMAT "\n",
						 TextDatumGetCString(qe_get(r, 1, &isnull)),
						 DatumGetInt64(qe_get(r, 4, &isnull)));

	/*
	 * The oldest of each kind of holder: sessions in a transaction (running
	 * or idle in it) with an xmin or xid, replication slots, prepared
	 * transactions.  Seconds where the holder has a start time.
	 */
	qe_plan(&horizon_plan,
			"SELECT h.holder, max(h.seconds), max(h.xids) FROM ("
			" SELECT CASE WHEN a.state LIKE 'idle in transaction%' THEN 'idle_in_transaction'"
			"             ELSE 'transaction' END AS holder,"
			"        extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS seconds,"
			"        greatest(pg_catalog.age(a.backend_xmin), pg_catalog.age(a.backend_xid))::bigint AS xids"
			"   FROM pg_catalog.pg_stat_activity a"
			"  WHERE a.pid <> pg_catalog.pg_backend_pid()"
			"    AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)"
			" UNION ALL"
			" SELECT 'replication_slot', NULL,"
			"        greatest(pg_catalog.age(r.xmin), pg_catalog.age(r.catalog_xmin))::bigint"
			"   FROM pg_catalog.pg_replication_slots r"
			"  WHERE r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL"
			" UNION ALL"
			" SELECT 'prepared_transaction',"
			"        extract(epoch FROM clock_timestamp() - p.prepared)::float8,"
			"        pg_catalog.age(p.transaction)::bigint"
			"   FROM pg_catalog.pg_prepared_xacts p) h"
			" GROUP BY h.holder",
			0, NULL);
	n = qe_exec_whole_tables(horizon_plan, NULL, NULL, 0);
	{
		static const char *const holders[4] = {
			"transaction", "idle_in_transaction", "replication_slot", "prepared_transaction"
		};
		double		seconds[4] = {0, 0, 0, 0};
		int64		xids[4] = {0, 0, 0, 0};
		bool		has_seconds[4] = {true, true, false, true};

		for (uint64 r = 0; r < n; r++)
		{
			char	   *holder = TextDatumGetCString(qe_get(r, 1, &isnull));

			for (int h = 0; h < 4; h++)
				if (strcmp(holder, holders[h]) == 0)
				{
					Datum		v = qe_get(r, 2, &isnull);

					if (!isnull)
						seconds[h] = DatumGetFloat8(v);
					v = qe_get(r, 3, &isnull);
					if (!isnull)
						xids[h] = DatumGetInt64(v);
				}
		}
		family(buf, "queue_engine_xmin_horizon_age_seconds", "gauge",
			   "Age of the oldest holder of each kind that keeps back the xmin horizon (0: none).");
		for (int h = 0; h < 4; h++)
			if (has_seconds[h])
				appendStringInfo(buf, "queue_engine_xmin_horizon_age_seconds{holder=\"%s\"} %.3f\n",
								 holders[h], Max(seconds[h], 0.0));
		family(buf, "queue_engine_xmin_horizon_age_xids", "gauge",
			   "Transactions between the oldest xmin each kind of holder keeps and the next one (0: none).");
		for (int h = 0; h < 4; h++)
			appendStringInfo(buf, "queue_engine_xmin_horizon_age_xids{holder=\"%s\"} " INT64_FORMAT "\n",
							 holders[h], xids[h]);
	}

	qe_plan(&repairs_plan,
			"SELECT coalesce(sum(l.repaired), 0)::bigint FROM queue_engine.consistency_log l",
			0, NULL);
	qe_exec_whole_tables(repairs_plan, NULL, NULL, 1);
	family(buf, "queue_engine_consistency_repairs_total", "counter",
		   "Repairs check_consistency made to the engine's bookkeeping (consistency_log); 0 on a healthy engine.");
	appendStringInfo(buf, "queue_engine_consistency_repairs_total " INT64_FORMAT "\n",
					 qe_get_int64(0, 1));
}

/*
 * queue_engine.metrics() RETURNS text.  Reads only (so it works on a hot
 * standby): the per-queue gauges from queue_stats, the counters and
 * histograms from the shared state, table and horizon health from the
 * statistics views.  A tenant-scoped role sees its tenants' queues, and
 * none of the engine-wide parts.
 */
Datum
qe_metrics(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	text	   *result;
	MemoryContext caller = CurrentMemoryContext;

	qe_shmem_attach();
	initStringInfo(&buf);
	SPI_connect();
	write_queue_metrics(&buf);
	if (qe_access_unscoped())
	{
		write_histograms(&buf);
		write_health(&buf);
	}
	SPI_finish();
	MemoryContextSwitchTo(caller);
	result = cstring_to_text_with_len(buf.data, buf.len);
	PG_RETURN_TEXT_P(result);
}
