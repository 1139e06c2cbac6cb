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

static const char *const counter_names[QE_COUNTERS_SHOWN] = {
	[QE_COUNT_ENQUEUED] = "enqueued",
	[QE_COUNT_STARTED] = "started",
	[QE_COUNT_COMPLETED] = "completed",
	[QE_COUNT_FAILED] = "failed",
	[QE_COUNT_RETRIED] = "retried",
	[QE_COUNT_EXPIRED] = "expired",
	[QE_COUNT_CANCELED] = "canceled",
	[QE_COUNT_RESCUED] = "rescued",
};

static const char *const counter_help[QE_COUNTERS_SHOWN] = {
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
	if (from == QE_RUN_QUEUED || from == QE_RUN_DELAYED ||
		to == QE_RUN_QUEUED || to == QE_RUN_DELAYED)
		count(queue_id, QE_COUNT_READY_MOVES, n);
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

/*
 * This database's histograms and overflow counters; NULL: none yet (claim
 * false), or every slot is another database's (*full).
 */
static QeDatabaseMetrics *
database_metrics_of(bool claim, bool *full)
{
	*full = false;
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
	*full = true;
	return NULL;
}

static QeDatabaseMetrics *
database_metrics(bool claim)
{
	bool		full;

	return database_metrics_of(claim, &full);
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

/*
 * The live queues, as metrics() labels them: per backend, rebuilt when a
 * queue or tenant definition changes (the definitions generation of
 * queue_cache.c) or the engine is reinstalled, so that a call formats
 * 10,000 queues' lines from ready-made label strings.  In (tenant, queue)
 * order; by id and by name for the statements' rows.
 */
typedef struct QueueLabel
{
	int32		queue_id;		/* hash key (by_id) */
	int32		tenant_id;
	bool		paused;
	bool		limited;
	int32		concurrency_limit;
	char	   *name;
	char	   *labels;			/* {tenant="...",queue="..." (no closing brace) */
	int			labels_len;
	char	   *tenant_labels;	/* {tenant="..." (shared by the tenant's queues) */
	int			tenant_labels_len;
	/*
	 * The oldest startable run's run_at as last read, and the queue's count
	 * of moves into or out of queued and delayed then: while that count
	 * stands still, so does the oldest run (only a claim, cancel, expiry or
	 * an older run becoming startable changes it), and its age is the
	 * clock's.  A run past its ttl stops being startable without a move:
	 * its age shows until maintenance expires it (a pass).
	 */
	bool		age_known;
	uint64		age_moves;
	bool		has_oldest;
	TimestampTz oldest;
	/* this call's */
	int64		counts[4];		/* queued, delayed, executing, waiting */
	bool		has_age;
	double		age;
	bool		read_age;
	bool		has_counters;
	int64		counters[QE_COUNTER_KINDS];
} QueueLabel;

typedef struct QueueByName
{
	char		name[QE_MAX_NAME_BYTES + 1];	/* hash key */
	QueueLabel *queue;
} QueueByName;

static MemoryContext labels_cxt = NULL;
static HTAB *labels_by_id = NULL;
static HTAB *labels_by_name = NULL;
static QueueLabel **labels_order = NULL;
static int	nlabels = 0;
static uint64 labels_generation = 0;
static Oid	labels_epoch = InvalidOid;

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

static void
load_labels(void)
{
	static SPIPlanPtr plan = NULL;
	uint64		generation = qe_queue_definitions_generation();
	Oid			epoch = qe_hints_epoch();
	uint64		n;
	HASHCTL		ctl;
	MemoryContext old;

	if (labels_by_id != NULL && generation == labels_generation && epoch == labels_epoch)
		return;
	if (labels_cxt == NULL)
		labels_cxt = AllocSetContextCreate(CacheMemoryContext, "queue_engine metrics labels",
										   ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(labels_cxt);
	labels_by_id = NULL;
	qe_plan(&plan,
			"SELECT q.queue_id, q.tenant_id, t.tenant, q.queue, q.paused, q.concurrency_limit"
			"  FROM queue_engine.queues q JOIN queue_engine.tenants t ON t.tenant_id = q.tenant_id"
			" WHERE q.dropped_at IS NULL ORDER BY t.tenant, q.queue",
			0, NULL);
	n = qe_exec_whole_tables(plan, NULL, NULL, 0);

	old = MemoryContextSwitchTo(labels_cxt);
	ctl.keysize = sizeof(int32);
	ctl.entrysize = sizeof(QueueLabel);
	ctl.hcxt = labels_cxt;
	labels_by_id = hash_create("queue_engine metrics labels", Max(n, 16), &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = QE_MAX_NAME_BYTES + 1;
	ctl.entrysize = sizeof(QueueByName);
	labels_by_name = hash_create("queue_engine metrics labels by name", Max(n, 16), &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	labels_order = palloc(sizeof(QueueLabel *) * Max(n, 1));
	nlabels = 0;
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		int32		queue_id = DatumGetInt32(qe_get(r, 1, &isnull));
		char	   *tenant = TextDatumGetCString(qe_get(r, 3, &isnull));
		char	   *name = TextDatumGetCString(qe_get(r, 4, &isnull));
		Datum		limit = qe_get(r, 6, &isnull);
		QueueLabel *l = hash_search(labels_by_id, &queue_id, HASH_ENTER, NULL);
		StringInfoData lb;

		l->tenant_id = DatumGetInt32(qe_get(r, 2, &isnull));
		l->paused = DatumGetBool(qe_get(r, 5, &isnull));
		limit = qe_get(r, 6, &isnull);
		l->limited = !isnull;
		l->concurrency_limit = isnull ? 0 : DatumGetInt32(limit);
		l->name = name;
		l->age_known = false;
		initStringInfo(&lb);
		appendStringInfoString(&lb, "{tenant=\"");
		append_label_value(&lb, tenant);
		appendStringInfoString(&lb, "\",queue=\"");
		append_label_value(&lb, name);
		appendStringInfoChar(&lb, '"');
		l->labels = lb.data;
		l->labels_len = lb.len;
		/* in (tenant, queue) order: a tenant's queues follow each other */
		if (nlabels > 0 && labels_order[nlabels - 1]->tenant_id == l->tenant_id)
		{
			l->tenant_labels = labels_order[nlabels - 1]->tenant_labels;
			l->tenant_labels_len = labels_order[nlabels - 1]->tenant_labels_len;
		}
		else
		{
			initStringInfo(&lb);
			appendStringInfoString(&lb, "{tenant=\"");
			append_label_value(&lb, tenant);
			appendStringInfoChar(&lb, '"');
			l->tenant_labels = lb.data;
			l->tenant_labels_len = lb.len;
		}
		labels_order[nlabels++] = l;
		if (strlen(name) <= QE_MAX_NAME_BYTES)
			((QueueByName *) hash_search(labels_by_name, name, HASH_ENTER, NULL))->queue = l;
	}
	MemoryContextSwitchTo(old);
	labels_generation = generation;
	labels_epoch = epoch;
}

/* name{tenant="...",queue="..."<extra>} value */
static inline void
put_sample(StringInfo buf, const char *name, int name_len, const char *labels,
		   int labels_len, const char *extra, int64 value)
{
	char		num[MAXINT8LEN + 1];
	int			len = pg_lltoa(value, num);

	appendBinaryStringInfo(buf, name, name_len);
	appendBinaryStringInfo(buf, labels, labels_len);
	if (extra != NULL)
		appendStringInfoString(buf, extra);
	appendBinaryStringInfo(buf, "} ", 2);
	appendBinaryStringInfo(buf, num, len);
	appendStringInfoChar(buf, '\n');
}

#define NAME_LEN(s) s, (int) (sizeof(s) - 1)

static const char *const state_labels[4] = {
	",status=\"queued\"", ",status=\"delayed\"", ",status=\"executing\"", ",status=\"waiting\""
};

/* queue_engine.metrics_labels = queue: one series per queue */
static void
write_queue_lines(StringInfo buf, const bool *visible)
{
	family(buf, "queue_engine_runs", "gauge", "Runs of the queue in each unfinished state.");
	for (int i = 0; i < nlabels; i++)
		if (visible[i])
			for (int k = 0; k < 4; k++)
				put_sample(buf, NAME_LEN("queue_engine_runs"), labels_order[i]->labels,
						   labels_order[i]->labels_len, state_labels[k], labels_order[i]->counts[k]);
	family(buf, "queue_engine_concurrency_limit", "gauge",
		   "The queue's concurrency limit (queues with one).");
	for (int i = 0; i < nlabels; i++)
		if (visible[i] && labels_order[i]->limited)
			put_sample(buf, NAME_LEN("queue_engine_concurrency_limit"), labels_order[i]->labels,
					   labels_order[i]->labels_len, NULL, labels_order[i]->concurrency_limit);
	family(buf, "queue_engine_queue_paused", "gauge", "1 when the queue is paused.");
	for (int i = 0; i < nlabels; i++)
		if (visible[i])
			put_sample(buf, NAME_LEN("queue_engine_queue_paused"), labels_order[i]->labels,
					   labels_order[i]->labels_len, NULL, labels_order[i]->paused ? 1 : 0);
	family(buf, "queue_engine_oldest_startable_age_seconds", "gauge",
		   "Age of the queue's oldest startable run, from when it could start (queues with one).");
	for (int i = 0; i < nlabels; i++)
	{
		QueueLabel *l = labels_order[i];

		if (!visible[i] || !l->has_age)
			continue;
		appendStringInfoString(buf, "queue_engine_oldest_startable_age_seconds");
		appendBinaryStringInfo(buf, l->labels, l->labels_len);
		appendStringInfo(buf, "} %.6f\n", l->age);
	}
	for (int k = 0; k < QE_COUNTERS_SHOWN; k++)
	{
		char		name[64];
		int			name_len;

		name_len = snprintf(name, sizeof(name), "queue_engine_runs_%s_total", counter_names[k]);
		family(buf, name, "counter", counter_help[k]);
		for (int i = 0; i < nlabels; i++)
			if (visible[i] && labels_order[i]->has_counters)
				put_sample(buf, name, name_len, labels_order[i]->labels,
						   labels_order[i]->labels_len, NULL, labels_order[i]->counters[k]);
	}
}

/*
 * queue_engine.metrics_labels = tenant: one series per tenant, the sums of
 * its queues (the oldest age: the greatest), for installations with more
 * queues than a Prometheus wants series.
 */
static void
write_tenant_lines(StringInfo buf, const bool *visible)
{
	int			ntenants = 0;
	int		   *first = palloc(sizeof(int) * (nlabels + 1));	/* each tenant's first */

	for (int i = 0; i < nlabels; i++)
		if (visible[i] && (ntenants == 0 ||
						   labels_order[first[ntenants - 1]]->tenant_id != labels_order[i]->tenant_id))
			first[ntenants++] = i;
	first[ntenants] = nlabels;

#define TENANT(t) labels_order[first[t]]->tenant_labels, labels_order[first[t]]->tenant_labels_len
#define EACH_QUEUE(t, i) for (int i = first[t]; i < first[(t) + 1]; i++) if (visible[i])
	family(buf, "queue_engine_runs", "gauge", "Runs of the tenant's queues in each unfinished state.");
	for (int t = 0; t < ntenants; t++)
		for (int k = 0; k < 4; k++)
		{
			int64		sum = 0;

			EACH_QUEUE(t, i) sum += labels_order[i]->counts[k];
			put_sample(buf, NAME_LEN("queue_engine_runs"), TENANT(t), state_labels[k], sum);
		}
	family(buf, "queue_engine_queues_paused", "gauge", "Paused queues of the tenant.");
	for (int t = 0; t < ntenants; t++)
	{
		int64		paused = 0;

		EACH_QUEUE(t, i) paused += labels_order[i]->paused ? 1 : 0;
		put_sample(buf, NAME_LEN("queue_engine_queues_paused"), TENANT(t), NULL, paused);
	}
	family(buf, "queue_engine_oldest_startable_age_seconds", "gauge",
		   "Age of the oldest startable run of the tenant's queues, from when it could start (tenants with one).");
	for (int t = 0; t < ntenants; t++)
	{
		bool		any = false;
		double		age = 0;

		EACH_QUEUE(t, i)
		{
			if (!labels_order[i]->has_age)
				continue;
			age = any ? Max(age, labels_order[i]->age) : labels_order[i]->age;
			any = true;
		}
		if (!any)
			continue;
		appendStringInfoString(buf, "queue_engine_oldest_startable_age_seconds");
		appendBinaryStringInfo(buf, TENANT(t));
		appendStringInfo(buf, "} %.6f\n", age);
	}
	for (int k = 0; k < QE_COUNTERS_SHOWN; k++)
	{
		char		name[64];
		int			name_len;

		name_len = snprintf(name, sizeof(name), "queue_engine_runs_%s_total", counter_names[k]);
		family(buf, name, "counter", counter_help[k]);
		for (int t = 0; t < ntenants; t++)
		{
			int64		sum = 0;

			EACH_QUEUE(t, i) sum += labels_order[i]->counters[k];
			put_sample(buf, name, name_len, TENANT(t), NULL, sum);
		}
	}
#undef EACH_QUEUE
#undef TENANT
}

static void
write_queue_metrics(StringInfo buf)
{
	static SPIPlanPtr counts_plan = NULL;
	static SPIPlanPtr ages_plan = NULL;
	uint64		n;
	Oid			epoch = qe_hints_epoch();
	Datum	   *startable;
	int			nstartable = 0;
	bool		unscoped = qe_access_unscoped();

	load_labels();

	for (int i = 0; i < nlabels; i++)
	{
		QueueLabel *l = labels_order[i];

		memset(l->counts, 0, sizeof(l->counts));
		l->has_age = false;
		l->has_counters = false;
	}

	/* the counts: folded, plus the deltas not folded yet (as queue_stats) */
	qe_plan(&counts_plan,
			"SELECT c.queue_id, c.queued + coalesce(d.queued, 0), c.delayed + coalesce(d.delayed, 0),"
			"       c.executing + coalesce(d.executing, 0), c.waiting + coalesce(d.waiting, 0)"
			"  FROM queue_engine.queue_counts c"
			"  LEFT JOIN (SELECT x.queue_id, sum(x.queued) AS queued, sum(x.delayed) AS delayed,"
			"                    sum(x.executing) AS executing, sum(x.waiting) AS waiting"
			"               FROM queue_engine.queue_count_deltas x GROUP BY x.queue_id) d"
			"    ON d.queue_id = c.queue_id",
			0, NULL);
	n = qe_exec_whole_tables(counts_plan, NULL, NULL, 0);
	startable = palloc(sizeof(Datum) * Max(nlabels, 1));
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		int32		queue_id = DatumGetInt32(qe_get(r, 1, &isnull));
		QueueLabel *l = hash_search(labels_by_id, &queue_id, HASH_FIND, NULL);

		if (l == NULL)
			continue;			/* dropped */
		for (int k = 0; k < 4; k++)
			l->counts[k] = DatumGetInt64(qe_get(r, 2 + k, &isnull));
	}

	/* the counters of each queue's slots in the shared state */
	for (int i = 0; i < nlabels; i++)
	{
		QueueLabel *l = labels_order[i];
		uint32		h = ((uint32) l->queue_id * 2654435761U) ^ ((uint32) MyDatabaseId * 40503U) ^ (uint32) epoch;

		memset(l->counters, 0, sizeof(l->counters));
		for (int p = 0; p < QE_METRICS_PROBES; p++)
		{
			QeQueueCounters *c = &qe_shared->metrics.queues[(h + p) % QE_METRICS_QUEUE_SLOTS];
			uint32		state = pg_atomic_read_u32(&c->state);

			if (state == 0)
				break;
			if (state != 2)
				continue;
			pg_read_barrier();
			if (c->queue_id != l->queue_id || c->database != MyDatabaseId || c->epoch != epoch)
				continue;
			l->has_counters = true;
			for (int k = 0; k < QE_COUNTER_KINDS; k++)
				l->counters[k] += (int64) pg_atomic_read_u64(&c->counts[k]);
		}
	}

	/*
	 * The oldest startable run's age, read (queue_stats' probes: about
	 * 10 us a queue) only for queues with queued or delayed runs whose
	 * moves since the last read say it may have changed.  (A delayed run
	 * that comes due moves when maintenance or a dequeue promotes it: until
	 * then, at most a maintenance interval, a cached age leaves it out.)
	 * The counts of moves were read above, before this statement's
	 * snapshot.
	 */
	{
		/*
		 * Moves of a queue without a counter slot went to the database's
		 * overflow (or nowhere, when even the databases' table is full):
		 * then such queues' counts say nothing.  A database with no slot
		 * yet has counted nothing since the start.
		 */
		bool		full;
		QeDatabaseMetrics *d = database_metrics_of(false, &full);
		bool		lost = d != NULL ?
			pg_atomic_read_u64(&d->overflow[QE_COUNT_READY_MOVES]) > 0 : full;
		TimestampTz now = GetCurrentTimestamp();

		for (int i = 0; i < nlabels; i++)
		{
			QueueLabel *l = labels_order[i];

			l->read_age = false;
			if (l->counts[0] == 0 && l->counts[1] == 0)
				continue;
			if (!unscoped && !qe_access_tenant(QE_NEED_READ, l->tenant_id))
				continue;
			/* (this transaction's own moves are not published yet) */
			if (l->age_known && npending == 0 &&
				l->age_moves == (uint64) l->counters[QE_COUNT_READY_MOVES] &&
				(l->has_counters || !lost))
			{
				l->has_age = l->has_oldest;
				l->age = l->has_oldest ? Max((double) (now - l->oldest) / 1e6, 0.0) : 0;
				continue;
			}
			l->read_age = true;
			l->age_known = false;
			startable[nstartable++] = CStringGetTextDatum(l->name);
		}
	}
	if (nstartable > 0)
	{
		Datum		values[1];
		TimestampTz now;

		qe_plan(&ages_plan,
				"SELECT s.queue, s.oldest_queued_at FROM queue_engine.queue_stats s"
				" WHERE s.queue = ANY ($1)",
				1, (Oid[]) {TEXTARRAYOID});
		values[0] = PointerGetDatum(construct_array(startable, nstartable, TEXTOID, -1,
													false, TYPALIGN_INT));
		n = qe_exec_whole_tables(ages_plan, values, NULL, 0);
		now = GetCurrentTimestamp();
		for (uint64 r = 0; r < n; r++)
		{
			bool		isnull;
			char	   *name = TextDatumGetCString(qe_get(r, 1, &isnull));
			QueueByName *e = strlen(name) > QE_MAX_NAME_BYTES ? NULL :
				hash_search(labels_by_name, name, HASH_FIND, NULL);
			Datum		oldest = qe_get(r, 2, &isnull);
			QueueLabel *l;

			if (e == NULL || !e->queue->read_age)
				continue;
			l = e->queue;
			l->age_known = true;
			l->age_moves = (uint64) l->counters[QE_COUNT_READY_MOVES];
			l->has_oldest = !isnull;
			l->oldest = isnull ? 0 : DatumGetTimestampTz(oldest);
			l->has_age = l->has_oldest;
			l->age = l->has_oldest ? Max((double) (now - l->oldest) / 1e6, 0.0) : 0;
		}
	}

	/* the lines, family by family; a scoped role's tenants only */
	{
		bool	   *visible = palloc(sizeof(bool) * Max(nlabels, 1));

		for (int i = 0; i < nlabels; i++)
			visible[i] = unscoped || qe_access_tenant(QE_NEED_READ, labels_order[i]->tenant_id);
		/* about 900 bytes a queue: grown once, not by doubling */
		enlargeStringInfo(buf, Min((Size) nlabels * 900, MaxAllocSize / 2 - (Size) buf->len - 1));
		if (qe_metrics_labels == QE_METRICS_LABELS_TENANT)
			write_tenant_lines(buf, visible);
		else
			write_queue_lines(buf, visible);
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
	for (int k = 0; k < QE_COUNTERS_SHOWN; k++)
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

	qe_shmem_attach();
	/* built as the text it returns: a varlena header first, no copy at the end */
	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	SPI_connect();
	write_queue_metrics(&buf);
	if (qe_access_unscoped())
	{
		write_histograms(&buf);
		write_health(&buf);
	}
	SPI_finish();
	SET_VARSIZE(buf.data, buf.len);
	PG_RETURN_TEXT_P((text *) buf.data);
}
