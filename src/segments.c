/*-------------------------------------------------------------------------
 *
 * segments.c
 *	  The run families' segments (segments.h): their names, and the
 *	  segment new rows of each family go to, a number per database and
 *	  family in the shared state (shmem.h).  Lost on restart, which is
 *	  harmless: it only says where most rows go.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"
#include "shmem.h"

#include "access/table.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/rel.h"

const char *const qe_family_names[QE_FAMILY_COUNT] = {
	[QE_FAMILY_READY] = "ready",
	[QE_FAMILY_DELAYED] = "delayed",
	[QE_FAMILY_EXECUTING] = "executing",
};

const char *const qe_segment_names[QE_FAMILY_COUNT][2] = {
	[QE_FAMILY_READY] = {"ready_0", "ready_1"},
	[QE_FAMILY_DELAYED] = {"delayed_0", "delayed_1"},
	[QE_FAMILY_EXECUTING] = {"executing_0", "executing_1"},
};

static pg_atomic_uint32 *
family_slot(void)
{
	return &qe_shared->family_segment[MyDatabaseId % QE_DELTA_SEGMENT_SLOTS];
}

int
qe_current_segment(QeFamily family)
{
	if (!qe_shmem_attach())
		return 0;
	return (int) ((pg_atomic_read_u32(family_slot()) >> family) & 1);
}

void
qe_set_current_segment(QeFamily family, int segment)
{
	pg_atomic_uint32 *slot;
	uint32		old;

	if (!qe_shmem_attach())
		return;
	slot = family_slot();
	old = pg_atomic_read_u32(slot);
	for (;;)
	{
		uint32		new = (old & ~(1U << family)) | ((uint32) (segment & 1) << family);

		if (pg_atomic_compare_exchange_u32(slot, &old, new))
			break;
	}
}

int
qe_sole_segment(QeFamily family)
{
	BlockNumber blocks[2];

	for (int i = 0; i < 2; i++)
	{
		Relation	rel = qe_try_open_table(qe_segment_names[family][i], AccessShareLock);

		/* (no segments: the statement through the parent says why) */
		if (rel == NULL)
			return -1;
		blocks[i] = RelationGetNumberOfBlocks(rel);
		table_close(rel, NoLock);
	}
	if (blocks[0] > 0 && blocks[1] > 0)
		return -1;
	if (blocks[0] == 0 && blocks[1] == 0)
		return qe_current_segment(family);
	return blocks[0] > 0 ? 0 : 1;
}

SPIPlanPtr
qe_plan_in_segment(SPIPlanPtr plans[2], QeFamily family, int segment,
				   const char *sql_fmt, int nargs, const Oid *argtypes)
{
	if (plans[segment] == NULL)
	{
		char	   *sql = psprintf(sql_fmt, qe_segment_names[family][segment]);

		qe_plan(&plans[segment], sql, nargs, argtypes);
		pfree(sql);
	}
	return plans[segment];
}

SPIPlanPtr
qe_plan_segment(SPIPlanPtr plans[2], QeFamily family, const char *sql_fmt,
				int nargs, const Oid *argtypes)
{
	return qe_plan_in_segment(plans, family, qe_current_segment(family),
							  sql_fmt, nargs, argtypes);
}

/* queue_engine.current_segment(family text): for SQL (runs_change()). */
PG_FUNCTION_INFO_V1(qe_current_segment_sql);

Datum
qe_current_segment_sql(PG_FUNCTION_ARGS)
{
	char	   *family = text_to_cstring(PG_GETARG_TEXT_PP(0));

	for (int f = 0; f < QE_FAMILY_COUNT; f++)
		if (strcmp(family, qe_family_names[f]) == 0)
			PG_RETURN_INT32(qe_current_segment((QeFamily) f));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown run family \"%s\"", family),
			 errhint("The families are ready, delayed and executing.")));
	PG_RETURN_NULL();
}
