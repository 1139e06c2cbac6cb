/*-------------------------------------------------------------------------
 *
 * counts.c
 *	  Count bookkeeping on the hot path: appends one row for a state change
 *	  to the current segment of queue_engine.queue_count_deltas (the
 *	  partition queue_count_deltas_0 or _1, see maintenance.c for why two),
 *	  by a direct heap insert rather than a SQL statement.  The partitions
 *	  have no indexes, no triggers and no constraints but their partition
 *	  bound, which the segment column set here meets, so a heap insert is
 *	  all an INSERT would do, at a fraction of the executor's cost.  The row
 *	  belongs to the caller's transaction (and subtransaction) like any
 *	  other write.
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

/* Columns of a segment, in table order (a 0.1 schema's table lacks the last). */
#define DELTA_NATTS 6
#define DELTA_NATTS_UNSEGMENTED 5

static const char *const segment_names[2] = {
	"queue_count_deltas_0", "queue_count_deltas_1"
};

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
	bool		nulls[DELTA_NATTS] = {false, false, false, false, false, false};
	HeapTuple	tuple;
	int			segment;
	int			natts;

	if (queued == 0 && delayed == 0 && executing == 0 && waiting == 0)
		return;

	/* By name each time: cheap, and always right after DROP/CREATE EXTENSION. */
	segment = qe_count_delta_segment();
	rel = qe_try_open_table(segment_names[segment], RowExclusiveLock);
	natts = DELTA_NATTS;
	if (rel == NULL)
	{
		/* A 0.1 schema, not updated yet: its one table. */
		rel = qe_open_table("queue_count_deltas", RowExclusiveLock);
		natts = DELTA_NATTS_UNSEGMENTED;
	}
	if (RelationGetDescr(rel)->natts != natts)
		elog(ERROR, "queue_engine: queue_engine.%s has an unexpected shape",
			 RelationGetRelationName(rel));

	values[0] = Int32GetDatum(queue_id);
	values[1] = Int32GetDatum(queued);
	values[2] = Int32GetDatum(delayed);
	values[3] = Int32GetDatum(executing);
	values[4] = Int32GetDatum(waiting);
	values[5] = Int16GetDatum((int16) segment);
	tuple = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	simple_heap_insert(rel, tuple);
	heap_freetuple(tuple);

	/* Keep the lock to the end of the transaction, as INSERT would. */
	table_close(rel, NoLock);
}
