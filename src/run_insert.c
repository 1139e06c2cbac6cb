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
 *	  run (qe_form_run_meta).
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
	AttrNumber	att[QE_RUN_NCOLS];
} QeRunTableCache;

/* One per segment table: [delayed][segment]. */
static QeRunTableCache caches[2][2];
static bool callback_registered = false;

/* Column names, in the order of QeRunColumn. */
static const char *const run_column_names[QE_RUN_NCOLS] = {
	"run_id", "run_at", "queue_id", "policy_id", "priority", "payload",
	"concurrency_key", "meta"
};

static void
invalidate_cache(Datum arg, Oid relid)
{
	for (int d = 0; d < 2; d++)
		for (int k = 0; k < 2; k++)
		{
			QeRunTableCache *cache = &caches[d][k];

			if (!cache->valid)
				continue;
			if (relid == InvalidOid || relid == cache->relid)
				cache->valid = false;
			for (int i = 0; cache->valid && i < cache->nindexes; i++)
				if (relid == cache->indexes[i].indexoid)
					cache->valid = false;
		}
}

/* Build a segment table's cache from the open table. */
static void
build_cache(QeRunTableCache *cache, Relation rel)
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
	for (int c = 0; c < QE_RUN_NCOLS; c++)
	{
		cache->att[c] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute attr = TupleDescAttr(desc, a);

			if (!attr->attisdropped &&
				strcmp(NameStr(attr->attname), run_column_names[c]) == 0)
				cache->att[c] = attr->attnum;
		}
		if (cache->att[c] == InvalidAttrNumber)
			elog(ERROR, "queue_engine: queue_engine.%s has no column \"%s\"",
				 RelationGetRelationName(rel), run_column_names[c]);
	}
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
		build_cache(cache, rel);
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
		indexes[i] = index_open(cache->indexes[i].indexoid, RowExclusiveLock);

	/* Columns the callers do not name keep their defaults: NULL. */
	for (int a = 0; a < cache->natts; a++)
	{
		row[a] = (Datum) 0;
		row_nulls[a] = true;
	}
	for (int c = 0; c < QE_RUN_NCOLS; c++)
	{
		row[cache->att[c] - 1] = values[c];
		row_nulls[cache->att[c] - 1] = nulls[c];
	}

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
			econtext->ecxt_scantuple = slots[r];
			for (int i = 0; i < cache->nindexes; i++)
			{
				QeRunIndex *entry = &cache->indexes[i];
				Datum		key[INDEX_MAX_KEYS];
				bool		key_nulls[INDEX_MAX_KEYS];

				if (!entry->info->ii_ReadyForInserts)
					continue;	/* being built concurrently, not yet ready */
				if (entry->predicate != NULL)
				{
					ResetExprContext(econtext);
					if (!ExecQual(entry->predicate, econtext))
						continue;
				}
				ResetExprContext(econtext);
				form_index_key(entry, slots[r], econtext, key, key_nulls);
				index_insert(indexes[i], key, key_nulls, &slots[r]->tts_tid, rel,
							 entry->info->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
							 false, entry->info);
			}
			ExecClearTuple(slots[r]);
		}
	}

	for (int i = 0; i < cache->nindexes; i++)
		index_close(indexes[i], NoLock);
	FreeExprContext(econtext, true);
	for (int r = 0; r < Min(nrows, QE_INSERT_GROUP); r++)
		ExecDropSingleTupleTableSlot(slots[r]);
	table_close(rel, NoLock);

	/* Later statements of the transaction see the runs, as after an INSERT. */
	CommandCounterIncrement();
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
