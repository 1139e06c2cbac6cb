/*-------------------------------------------------------------------------
 *
 * run_insert.c
 *	  Writing new pending runs into the current segment of ready or
 *	  delayed (segments.h): a heap insert plus the entries of each index
 *	  whose predicate the row meets, the way COPY and the catalogs insert
 *	  rows, instead of an INSERT statement per enqueue.  An INSERT would
 *	  set up an executor, open every index and compile every partial
 *	  index's predicate and expression on each call; here each segment
 *	  table's index metadata and compiled predicates and expressions are
 *	  kept per backend and rebuilt when a relcache invalidation says the
 *	  table or one of its indexes changed.  Also the run_meta datum of a
 *	  run (qe_form_run_meta).  The same for a run's row in finished_runs
 *	  (qe_insert_finished_run), which complete() writes without a statement
 *	  (finish.c), and for a run's row in an executing segment (qe_write_row),
 *	  which the claim writes without one (claim.c).
 *
 *	  The segment tables have no triggers, rules, row security, foreign
 *	  keys or CHECK constraints (the install script makes them so, and the
 *	  cache refuses a table that has any: someone's audit trigger then gets
 *	  a real INSERT), so a heap insert plus index entries is all an INSERT
 *	  would do.  NOT NULL columns are always given values by the callers.
 *
 *-------------------------------------------------------------------------
 */
#include "run_state.h"
#include "segments.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#define QE_MAX_RUN_INDEXES 16

/* Rows handed to heap_multi_insert at a time. */
#define QE_INSERT_GROUP 64

typedef struct QeRunIndex
{
	Oid			indexoid;
	IndexInfo  *info;
	ExprState  *predicate;		/* NULL: not a partial index */
	List	   *expressions;	/* ExprStates of its expression columns */
} QeRunIndex;

#define QE_MAX_CACHED_COLS Max(Max((int) QE_RUN_NCOLS, (int) QE_FIN_NCOLS), \
								   (int) QE_EXEC_NCOLS)

typedef struct QeRunTableCache
{
	bool		valid;
	bool		plain;			/* nothing but a heap insert and index entries */
	MemoryContext cxt;
	Oid			relid;
	Oid			seqoid;
	int			natts;
	int			nindexes;
	QeRunIndex	indexes[QE_MAX_RUN_INDEXES];
	int			ncols;			/* the columns callers name, in att */
	const char *const *colnames;
	AttrNumber	att[QE_MAX_CACHED_COLS];
} QeRunTableCache;

/* One per segment table: [delayed][segment]. */
static QeRunTableCache caches[2][2];
/* finished_runs */
static QeRunTableCache finished_cache;
/* The executing segments */
static QeRunTableCache executing_caches[2];
static bool callback_registered = false;

/* Column names, in the order of QeRunColumn. */
const char *const qe_run_column_names[QE_RUN_NCOLS] = {
	"run_id", "run_at", "queue_id", "policy_id", "priority", "payload",
	"concurrency_key", "meta"
};

/* finished_runs' column names, in the order of QeFinishedColumn. */
static const char *const finished_column_names[QE_FIN_NCOLS] = {
	"run_id", "finished_at", "run_at", "started_at", "queue_id", "policy_id",
	"priority", "attempt", "status", "payload", "output", "concurrency_key",
	"worker", "meta"
};

/* The executing segments' column names, in the order of QeExecutingColumn. */
const char *const qe_executing_column_names[QE_EXEC_NCOLS] = {
	"run_id", "run_at", "started_at", "lease_expires_at", "attempt_lease",
	"queue_id", "policy_id", "priority", "attempt", "queue_slot", "payload",
	"concurrency_key", "worker", "meta"
};

static void
invalidate_one(QeRunTableCache *cache, Oid relid)
{
	if (!cache->valid)
		return;
	if (relid == InvalidOid || relid == cache->relid)
		cache->valid = false;
	for (int i = 0; cache->valid && i < cache->nindexes; i++)
		if (relid == cache->indexes[i].indexoid)
			cache->valid = false;
}

static void
invalidate_cache(Datum arg, Oid relid)
{
	for (int d = 0; d < 2; d++)
		for (int k = 0; k < 2; k++)
			invalidate_one(&caches[d][k], relid);
	invalidate_one(&finished_cache, relid);
	for (int k = 0; k < 2; k++)
		invalidate_one(&executing_caches[k], relid);
}

/*
 * Build a table's cache from the open table: the attribute numbers of the
 * ncols columns colnames names, its indexes, whether a heap insert will do.
 */
static void
build_cache(QeRunTableCache *cache, Relation rel, const char *const *colnames,
			int ncols)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexoids;
	ListCell   *lc;
	MemoryContext old;
	Oid			nsp = RelationGetNamespace(rel);

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(invalidate_cache, (Datum) 0);
		callback_registered = true;
	}
	if (cache->cxt == NULL)
		cache->cxt = AllocSetContextCreate(CacheMemoryContext,
										  "queue_engine run insert cache",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(cache->cxt);
	cache->valid = false;

	/*
	 * Insert triggers, rules, row security or CHECK constraints that someone
	 * added (to audit runs, say) need a real INSERT: use one then.
	 */
	cache->plain = !(rel->rd_rules != NULL || rel->rd_rel->relrowsecurity ||
					(desc->constr != NULL && desc->constr->num_check > 0) ||
					(rel->trigdesc != NULL &&
					 (rel->trigdesc->trig_insert_before_row ||
					  rel->trigdesc->trig_insert_after_row ||
					  rel->trigdesc->trig_insert_instead_row ||
					  rel->trigdesc->trig_insert_before_statement ||
					  rel->trigdesc->trig_insert_after_statement)));

	cache->relid = RelationGetRelid(rel);
	cache->natts = desc->natts;
	cache->ncols = ncols;
	cache->colnames = colnames;
	qe_column_numbers(rel, colnames, ncols, cache->att);
	cache->seqoid = get_relname_relid("runs_run_id_seq", nsp);
	if (!OidIsValid(cache->seqoid))
		elog(ERROR, "queue_engine: sequence queue_engine.runs_run_id_seq is missing");

	indexoids = RelationGetIndexList(rel);
	if (list_length(indexoids) > QE_MAX_RUN_INDEXES)
		cache->plain = false;
	cache->nindexes = 0;
	old = MemoryContextSwitchTo(cache->cxt);
	foreach(lc, indexoids)
	{
		Oid			indexoid = lfirst_oid(lc);
		Relation	index;
		QeRunIndex *entry;
		ListCell   *lc2;

		if (!cache->plain)
			break;
		index = index_open(indexoid, RowExclusiveLock);
		entry = &cache->indexes[cache->nindexes++];
		entry->indexoid = indexoid;
		entry->info = BuildIndexInfo(index);
		/* Exclusion or deferred indexes: leave them to INSERT. */
		if (entry->info->ii_ExclusionOps != NULL || !index->rd_index->indimmediate)
			cache->plain = false;
		entry->predicate = entry->info->ii_Predicate != NIL ?
			ExecInitQual(entry->info->ii_Predicate, NULL) : NULL;
		entry->expressions = NIL;
		foreach(lc2, entry->info->ii_Expressions)
			entry->expressions = lappend(entry->expressions,
										 ExecInitExpr(lfirst(lc2), NULL));
		index_close(index, NoLock);
	}
	MemoryContextSwitchTo(old);
	list_free(indexoids);
	cache->valid = true;
}

/*
 * Open the current segment of ready (or of delayed) for inserting, with a
 * valid cache.
 */
static Relation
open_segment(bool delayed, QeRunTableCache **cache_out)
{
	QeFamily	family = delayed ? QE_FAMILY_DELAYED : QE_FAMILY_READY;
	int			segment = qe_current_segment(family);
	QeRunTableCache *cache = &caches[delayed ? 1 : 0][segment];
	Relation	rel;

	/* By name: a cached relid could name a table dropped meanwhile. */
	rel = qe_open_table(qe_segment_names[family][segment], RowExclusiveLock);
	/* Taking the lock may have processed an invalidation. */
	if (!cache->valid || cache->relid != RelationGetRelid(rel))
		build_cache(cache, rel, qe_run_column_names, QE_RUN_NCOLS);
	*cache_out = cache;
	return rel;
}

/*
 * The same as an INSERT statement, for a segment table that has insert
 * triggers or anything else a heap insert would bypass.  SPI must be
 * connected.
 */
static void
insert_runs_by_sql(QeRunTableCache *cache, Datum *values, bool *nulls,
				   bool delayed, Datum *payloads, int nrows,
				   const int64 *given_id, int64 *run_ids_out)
{
	static SPIPlanPtr plans[2][2];
	QeFamily	family = delayed ? QE_FAMILY_DELAYED : QE_FAMILY_READY;
	SPIPlanPtr	plan;
	char		n[QE_RUN_NCOLS];

	plan = qe_plan_segment(plans[delayed ? 1 : 0], family,
						   "INSERT INTO queue_engine.%1$s"
						   "  (run_id, run_at, queue_id, policy_id, priority, payload,"
						   "   concurrency_key, meta)"
						   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
						   QE_RUN_NCOLS,
						   (Oid[]) {INT8OID, TIMESTAMPTZOID, INT4OID, INT4OID, INT4OID,
							   JSONBOID, TEXTOID, qe_run_meta_type()});
	for (int c = 0; c < QE_RUN_NCOLS; c++)
		n[c] = nulls[c] ? 'n' : ' ';
	n[QE_RUN_RUN_ID] = ' ';
	n[QE_RUN_PAYLOAD] = ' ';
	for (int r = 0; r < nrows; r++)
	{
		int64		run_id = given_id != NULL ? *given_id : nextval_internal(cache->seqoid, false);

		values[QE_RUN_RUN_ID] = Int64GetDatum(run_id);
		values[QE_RUN_PAYLOAD] = payloads[r];
		qe_exec(plan, values, n, 0);
		run_ids_out[r] = run_id;
	}
}

/*
 * An index's key of a row (the scan tuple of econtext), like
 * FormIndexDatum but with the expressions compiled once in the cache.
 */
static void
form_index_key(QeRunIndex *entry, TupleTableSlot *slot, ExprContext *econtext,
			   Datum *key, bool *key_nulls)
{
	ListCell   *expr = list_head(entry->expressions);

	for (int k = 0; k < entry->info->ii_NumIndexAttrs; k++)
	{
		AttrNumber	attnum = entry->info->ii_IndexAttrNumbers[k];

		if (attnum != 0)
			key[k] = slot_getattr(slot, attnum, &key_nulls[k]);
		else
		{
			key[k] = ExecEvalExprSwitchContext((ExprState *) lfirst(expr),
											   econtext, &key_nulls[k]);
			expr = lnext(entry->expressions, expr);
		}
	}
}

/*
 * A table row (row, row_nulls: natts long) of the values (and nulls) of
 * the cache's columns, in their order; columns the callers do not name
 * keep their defaults: NULL.
 */
static void
table_row(QeRunTableCache *cache, Datum *values, bool *nulls, Datum *row,
		  bool *row_nulls)
{
	for (int a = 0; a < cache->natts; a++)
	{
		row[a] = (Datum) 0;
		row_nulls[a] = true;
	}
	for (int c = 0; c < cache->ncols; c++)
	{
		row[cache->att[c] - 1] = values[c];
		row_nulls[cache->att[c] - 1] = nulls[c];
	}
}

/*
 * The index entries of the row in slot, just inserted into rel.  An index
 * not open yet (NULL in indexes) is opened at its first entry.
 */
static void
insert_index_entries(QeRunTableCache *cache, Relation *indexes, Relation rel,
					 TupleTableSlot *slot, ExprContext *econtext)
{
	econtext->ecxt_scantuple = slot;
	for (int i = 0; i < cache->nindexes; i++)
	{
		QeRunIndex *entry = &cache->indexes[i];
		Datum		key[INDEX_MAX_KEYS];
		bool		key_nulls[INDEX_MAX_KEYS];

		if (!entry->info->ii_ReadyForInserts)
			continue;			/* being built concurrently, not yet ready */
		if (entry->predicate != NULL)
		{
			ResetExprContext(econtext);
			if (!ExecQual(entry->predicate, econtext))
				continue;
		}
		ResetExprContext(econtext);
		form_index_key(entry, slot, econtext, key, key_nulls);
		/* Opened (and locked) at its first entry: most runs skip two. */
		if (indexes[i] == NULL)
			indexes[i] = index_open(entry->indexoid, RowExclusiveLock);
		index_insert(indexes[i], key, key_nulls, &slot->tts_tid, rel,
					 entry->info->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 false, entry->info);
	}
}

/*
 * Insert runs: nrows rows whose values differ only in the payload (and the
 * run id, taken from the sequence unless run_ids[i] is given), into the
 * current segment of delayed or of ready.  values and nulls are indexed by
 * QeRunColumn; QE_RUN_RUN_ID and QE_RUN_PAYLOAD are filled in here.
 * Writes the new ids to run_ids_out.
 */
void
qe_insert_runs(Datum *values, bool *nulls, bool delayed,
			   Datum *payloads, int nrows, const int64 *given_id,
			   int64 *run_ids_out)
{
	QeRunTableCache *cache;
	Relation	rel = open_segment(delayed, &cache);
	TupleDesc	desc;
	Relation	indexes[QE_MAX_RUN_INDEXES];
	TupleTableSlot *slots[QE_INSERT_GROUP];
	ExprContext *econtext;
	Datum	   *row;
	bool	   *row_nulls;
	CommandId	cid;

	if (!cache->plain)
	{
		table_close(rel, NoLock);
		insert_runs_by_sql(cache, values, nulls, delayed, payloads, nrows,
						   given_id, run_ids_out);
		return;
	}
	desc = RelationGetDescr(rel);
	for (int r = 0; r < Min(nrows, QE_INSERT_GROUP); r++)
		slots[r] = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	econtext = CreateStandaloneExprContext();
	row = palloc(sizeof(Datum) * cache->natts);
	row_nulls = palloc(sizeof(bool) * cache->natts);
	cid = GetCurrentCommandId(true);
	for (int i = 0; i < cache->nindexes; i++)
		indexes[i] = NULL;

	table_row(cache, values, nulls, row, row_nulls);

	/*
	 * Rows go to the heap in groups (heap_multi_insert: one WAL record and
	 * one buffer lock per page rather than per row, as COPY does), then each
	 * row's index entries.
	 */
	for (int first = 0; first < nrows; first += QE_INSERT_GROUP)
	{
		int			n = Min(nrows - first, QE_INSERT_GROUP);

		for (int r = 0; r < n; r++)
		{
			int64		run_id;

			CHECK_FOR_INTERRUPTS();
			run_id = given_id != NULL ? *given_id : nextval_internal(cache->seqoid, false);
			row[cache->att[QE_RUN_RUN_ID] - 1] = Int64GetDatum(run_id);
			row_nulls[cache->att[QE_RUN_RUN_ID] - 1] = false;
			row[cache->att[QE_RUN_PAYLOAD] - 1] = payloads[first + r];
			row_nulls[cache->att[QE_RUN_PAYLOAD] - 1] = false;
			ExecStoreHeapTuple(heap_form_tuple(desc, row, row_nulls), slots[r], true);
			run_ids_out[first + r] = run_id;
		}
		if (n == 1)
		{
			HeapTuple	tuple = ExecFetchSlotHeapTuple(slots[0], false, NULL);

			heap_insert(rel, tuple, cid, 0, NULL);
			slots[0]->tts_tid = tuple->t_self;
		}
		else
			heap_multi_insert(rel, slots, n, cid, 0, NULL);

		for (int r = 0; r < n; r++)
		{
			insert_index_entries(cache, indexes, rel, slots[r], econtext);
			ExecClearTuple(slots[r]);
		}
	}

	for (int i = 0; i < cache->nindexes; i++)
		if (indexes[i] != NULL)
			index_close(indexes[i], NoLock);
	FreeExprContext(econtext, true);
	for (int r = 0; r < Min(nrows, QE_INSERT_GROUP); r++)
		ExecDropSingleTupleTableSlot(slots[r]);
	table_close(rel, NoLock);

	/* Later statements of the transaction see the runs, as after an INSERT. */
	CommandCounterIncrement();
}

/*
 * The attribute numbers (att, ncols long) of the columns of rel named
 * colnames, or an error naming the one it lacks.
 */
void
qe_column_numbers(Relation rel, const char *const *colnames, int ncols,
				  AttrNumber *att)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int c = 0; c < ncols; c++)
	{
		att[c] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute attr = TupleDescAttr(desc, a);

			if (!attr->attisdropped &&
				strcmp(NameStr(attr->attname), colnames[c]) == 0)
				att[c] = attr->attnum;
		}
		if (att[c] == InvalidAttrNumber)
			elog(ERROR, "queue_engine: queue_engine.%s has no column \"%s\"",
				 RelationGetRelationName(rel), colnames[c]);
	}
}

/*
 * finished_runs, open for inserting, with a valid cache; NULL when a row
 * must go there by an INSERT statement (someone's trigger on it, say), or
 * there is no such table (a 0.1 schema: the statement says what to do).
 */
Relation
qe_open_finished_runs(void)
{
	Relation	rel = qe_try_open_table("finished_runs", RowExclusiveLock);

	if (rel == NULL)
		return NULL;
	if (!finished_cache.valid || finished_cache.relid != RelationGetRelid(rel))
		build_cache(&finished_cache, rel, finished_column_names, QE_FIN_NCOLS);
	if (!finished_cache.plain)
	{
		table_close(rel, NoLock);
		return NULL;
	}
	return rel;
}

/*
 * Insert one row into finished_runs (rel, from qe_open_finished_runs()),
 * values and nulls indexed by QeFinishedColumn, with its index entries, as
 * an INSERT would; closes rel.
 */
void
qe_insert_finished_run(Relation rel, Datum *values, bool *nulls)
{
	QeRunTableCache *cache = &finished_cache;
	Relation	indexes[QE_MAX_RUN_INDEXES];
	Datum	   *row = palloc(sizeof(Datum) * cache->natts);
	bool	   *row_nulls = palloc(sizeof(bool) * cache->natts);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
	ExprContext *econtext = CreateStandaloneExprContext();
	HeapTuple	tuple;

	Assert(cache->valid && cache->relid == RelationGetRelid(rel));
	table_row(cache, values, nulls, row, row_nulls);
	ExecStoreHeapTuple(heap_form_tuple(RelationGetDescr(rel), row, row_nulls), slot, true);
	tuple = ExecFetchSlotHeapTuple(slot, false, NULL);
	/* toasts the payload and output as INSERT would (or copies another table's) */
	heap_insert(rel, tuple, GetCurrentCommandId(true), 0, NULL);
	slot->tts_tid = tuple->t_self;
	for (int i = 0; i < cache->nindexes; i++)
		indexes[i] = NULL;
	insert_index_entries(cache, indexes, rel, slot, econtext);
	for (int i = 0; i < cache->nindexes; i++)
		if (indexes[i] != NULL)
			index_close(indexes[i], NoLock);
	FreeExprContext(econtext, true);
	ExecDropSingleTupleTableSlot(slot);
	pfree(row);
	pfree(row_nulls);
	table_close(rel, NoLock);
}

/*
 * Deleting from rel is a heap delete and nothing else: no trigger, rule or
 * row security that a DELETE statement would apply.
 */
bool
qe_plain_delete(Relation rel)
{
	return !(rel->rd_rules != NULL || rel->rd_rel->relrowsecurity ||
			 (rel->trigdesc != NULL &&
			  (rel->trigdesc->trig_delete_before_row ||
			   rel->trigdesc->trig_delete_after_row ||
			   rel->trigdesc->trig_delete_instead_row ||
			   rel->trigdesc->trig_delete_before_statement ||
			   rel->trigdesc->trig_delete_after_statement)));
}

/* Rows written into one table through its cache (qe_open_executing()). */
struct QeRowWriter
{
	QeRunTableCache *cache;
	Relation	rel;
	Relation	indexes[QE_MAX_RUN_INDEXES];
	TupleTableSlot *slot;
	ExprContext *econtext;
	Datum	   *row;
	bool	   *row_nulls;
};

/*
 * Executing segment segment, open for inserting rows as an INSERT would
 * (qe_write_row()); NULL when rows must go there by an INSERT statement
 * (someone's trigger on it, say) or the table is missing.
 */
QeRowWriter *
qe_open_executing(int segment)
{
	QeRunTableCache *cache = &executing_caches[segment];
	Relation	rel = qe_try_open_table(qe_segment_names[QE_FAMILY_EXECUTING][segment],
										RowExclusiveLock);
	QeRowWriter *w;

	if (rel == NULL)
		return NULL;
	if (!cache->valid || cache->relid != RelationGetRelid(rel))
		build_cache(cache, rel, qe_executing_column_names, QE_EXEC_NCOLS);
	if (!cache->plain)
	{
		table_close(rel, NoLock);
		return NULL;
	}
	w = palloc(sizeof(QeRowWriter));
	w->cache = cache;
	w->rel = rel;
	for (int i = 0; i < cache->nindexes; i++)
		w->indexes[i] = index_open(cache->indexes[i].indexoid, RowExclusiveLock);
	w->slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
	w->econtext = CreateStandaloneExprContext();
	w->row = palloc(sizeof(Datum) * cache->natts);
	w->row_nulls = palloc(sizeof(bool) * cache->natts);
	return w;
}

/*
 * Insert one row (values and nulls in the order of the writer's columns)
 * with its index entries.
 */
void
qe_write_row(QeRowWriter *w, Datum *values, bool *nulls)
{
	HeapTuple	tuple;

	table_row(w->cache, values, nulls, w->row, w->row_nulls);
	ExecStoreHeapTuple(heap_form_tuple(RelationGetDescr(w->rel), w->row, w->row_nulls),
					   w->slot, true);
	tuple = ExecFetchSlotHeapTuple(w->slot, false, NULL);
	/* the command id of now: the caller may have advanced it since opening */
	heap_insert(w->rel, tuple, GetCurrentCommandId(true), 0, NULL);
	w->slot->tts_tid = tuple->t_self;
	insert_index_entries(w->cache, w->indexes, w->rel, w->slot, w->econtext);
	ExecClearTuple(w->slot);
}

/* Close the writer's table and indexes (keeping their locks). */
void
qe_close_writer(QeRowWriter *w)
{
	for (int i = 0; i < w->cache->nindexes; i++)
		index_close(w->indexes[i], NoLock);
	FreeExprContext(w->econtext, true);
	ExecDropSingleTupleTableSlot(w->slot);
	table_close(w->rel, NoLock);
	pfree(w->row);
	pfree(w->row_nulls);
	pfree(w);
}

/*
 * The fields of a run_meta datum (fields, nulls: QE_META_NFIELDS long, in
 * QeMetaField order); all NULL when meta is.
 */
void
qe_deform_run_meta(Datum meta, bool meta_null, Datum *fields, bool *nulls)
{
	HeapTupleHeader header;
	TupleDesc	desc;
	HeapTupleData tuple;

	for (int f = 0; f < QE_META_NFIELDS; f++)
	{
		fields[f] = (Datum) 0;
		nulls[f] = true;
	}
	if (meta_null)
		return;
	header = DatumGetHeapTupleHeader(meta);
	desc = lookup_rowtype_tupdesc(qe_run_meta_type(), -1);
	if (desc->natts != QE_META_NFIELDS)
		elog(ERROR, "queue_engine: type queue_engine.run_meta has %d fields, not %d",
			 desc->natts, QE_META_NFIELDS);
	tuple.t_len = HeapTupleHeaderGetDatumLength(header);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = header;
	heap_deform_tuple(&tuple, desc, fields, nulls);
	ReleaseTupleDesc(desc);
}

/* The type queue_engine.run_meta. */
Oid
qe_run_meta_type(void)
{
	Oid			relid = get_relname_relid("run_meta",
										  get_namespace_oid("queue_engine", false));
	Oid			typid = OidIsValid(relid) ? get_rel_type_id(relid) : InvalidOid;

	if (!OidIsValid(typid))
		elog(ERROR, "queue_engine: type queue_engine.run_meta is missing");
	return typid;
}

Datum
qe_form_run_meta(Datum *fields, bool *nulls, bool *isnull)
{
	TupleDesc	desc;
	HeapTuple	tuple;
	Datum		result;

	*isnull = true;
	for (int f = 0; f < QE_META_NFIELDS; f++)
		if (!nulls[f])
			*isnull = false;
	if (*isnull)
		return (Datum) 0;
	desc = lookup_rowtype_tupdesc(qe_run_meta_type(), -1);
	if (desc->natts != QE_META_NFIELDS)
		elog(ERROR, "queue_engine: type queue_engine.run_meta has %d fields, not %d",
			 desc->natts, QE_META_NFIELDS);
	tuple = heap_form_tuple(desc, fields, nulls);
	result = HeapTupleGetDatum(tuple);
	ReleaseTupleDesc(desc);
	return result;
}
