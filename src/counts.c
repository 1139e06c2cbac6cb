/*-------------------------------------------------------------------------
 *
 * counts.c
 *	  Count bookkeeping on the hot path: appends one row to
 *	  queue_engine.queue_count_deltas for a state change, by a direct heap
 *	  insert rather than a SQL statement.  The table has no indexes, no
 *	  triggers and no constraints, so a heap insert is all an INSERT would
 *	  do, at a fraction of the executor's cost.  The row belongs to the
 *	  caller's transaction (and subtransaction) like any other write.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

/* Columns of queue_count_deltas, in table order. */
#define DELTA_NATTS 5

/*
 * Record counts changed by one statement for one queue.  Nothing is written
 * when every delta is zero.
 */
void
qe_add_count_delta(int32 queue_id, int32 queued, int32 delayed,
				   int32 executing, int32 waiting)
{
	Relation	rel;
	Datum		values[DELTA_NATTS];
	bool		nulls[DELTA_NATTS] = {false, false, false, false, false};
	HeapTuple	tuple;

	if (queued == 0 && delayed == 0 && executing == 0 && waiting == 0)
		return;

	/* By name each time: cheap, and always right after DROP/CREATE EXTENSION. */
	rel = qe_open_table("queue_count_deltas", RowExclusiveLock);
	if (RelationGetDescr(rel)->natts != DELTA_NATTS)
		elog(ERROR, "queue_engine: queue_engine.queue_count_deltas has an unexpected shape");

	values[0] = Int32GetDatum(queue_id);
	values[1] = Int32GetDatum(queued);
	values[2] = Int32GetDatum(delayed);
	values[3] = Int32GetDatum(executing);
	values[4] = Int32GetDatum(waiting);
	tuple = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	simple_heap_insert(rel, tuple);
	heap_freetuple(tuple);

	/* Keep the lock to the end of the transaction, as INSERT would. */
	table_close(rel, NoLock);
}
