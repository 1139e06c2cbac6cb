/*-------------------------------------------------------------------------
 *
 * spi_util.c
 *	  Small helpers every part uses: saved SPI plans, result access, the
 *	  non-blocking limit locks, and checks of sizes and intervals.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"
#include "run_state.h"

#include "access/detoast.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class_d.h"
#include "catalog/pg_type_d.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "jit/jit.h"
#include "nodes/makefuncs.h"
#include "optimizer/cost.h"
#include "mb/pg_wchar.h"
#include "storage/lock.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/array.h"
#include "utils/builtins.h"

/*
 * Is the installed schema 0.1's (queue_engine.runs a table, no ready)?
 * Asked only when a statement named a table that does not exist.
 */
static bool
schema_before_0_2(void)
{
	Oid			nsp = get_namespace_oid("queue_engine", true);
	Oid			runs;

	if (!OidIsValid(nsp) || OidIsValid(get_relname_relid("ready", nsp)))
		return false;
	runs = get_relname_relid("runs", nsp);
	return OidIsValid(runs) && get_rel_relkind(runs) == RELKIND_RELATION;
}

/*
 * search_path while the engine's statements are parsed and run: its SQL
 * is schema-qualified, but operators, functions and types named without a
 * schema would otherwise resolve through the caller's path (a schema put
 * before pg_catalog could shadow "="), and pg_temp last keeps temporary
 * objects out.  Most functions pin it with a SET clause; the hot ones
 * (enqueue, dequeue, complete, ...: src/README.md, "The hot path") have
 * none, since a SET clause costs a GUC nest level and a parse of the
 * value at every call (about 9,500 instructions, 9 % of an enqueue) while
 * their usual path runs no statement: for them the statement pins the path,
 * here (prepare_kept(), exec_planned(), qe_cursor_fetch()), or a caller
 * that runs several (dequeue's turns) pins it once around them.
 */
#define QE_SEARCH_PATH "pg_catalog, pg_temp"

/*
 * Pin search_path to QE_SEARCH_PATH unless it already is that.  Returns
 * the GUC nest level to hand to qe_unpin_search_path(), 0 when nothing was
 * pinned.  An error before the unpin needs nothing: the abort of the
 * (sub)transaction that catches it pops the level, as for a SET clause.
 */
int
qe_pin_search_path(void)
{
	int			level;

	if (namespace_search_path != NULL &&
		strcmp(namespace_search_path, QE_SEARCH_PATH) == 0)
		return 0;
	level = NewGUCNestLevel();
	(void) set_config_option("search_path", QE_SEARCH_PATH,
							 superuser() ? PGC_SUSET : PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return level;
}

/* Put back the caller's search_path (level: from qe_pin_search_path()). */
void
qe_unpin_search_path(int level)
{
	if (level > 0)
		AtEOXact_GUC(true, level);
}

/*
 * Prepare sql once per backend and keep the plan, parsed with search_path
 * pinned (QE_SEARCH_PATH), so a plan never resolves to a caller's objects.
 */
static SPIPlanPtr
prepare_kept(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *argtypes,
			 int options)
{
	SPIPlanPtr	plan;

	int			path_level;

	if (*slot != NULL)
		return *slot;

	/*
	 * Always the generic plan: the engine's statements are written so that
	 * one plan fits every parameter value, and re-planning each call (what
	 * the default custom-plan heuristics can settle on) costs more than the
	 * statement itself.
	 */
	{
		MemoryContext context = CurrentMemoryContext;

		path_level = qe_pin_search_path();
		PG_TRY();
		{
			plan = SPI_prepare_cursor(sql, nargs, (Oid *) argtypes,
									  CURSOR_OPT_GENERIC_PLAN | options);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(context);
			if ((geterrcode() == ERRCODE_UNDEFINED_TABLE ||
				 geterrcode() == ERRCODE_UNDEFINED_COLUMN) && schema_before_0_2())
			{
				FlushErrorState();
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("queue_engine's schema is older than its library"),
						 errdetail("The library is version 0.2.0; the schema in this database has no table queue_engine.ready yet."),
						 errhint("Run ALTER EXTENSION queue_engine UPDATE.")));
			}
			PG_RE_THROW();
		}
		PG_END_TRY();
		qe_unpin_search_path(path_level);
	}
	if (plan == NULL)
		elog(ERROR, "queue_engine: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "queue_engine: SPI_keepplan failed");
	*slot = plan;
	return plan;
}

SPIPlanPtr
qe_plan(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *argtypes)
{
	return prepare_kept(slot, sql, nargs, argtypes, 0);
}

/*
 * The same, for a statement read through a cursor a row at a time, of
 * whose rows the caller usually wants only the first few: planned for a
 * fast start.
 */
SPIPlanPtr
qe_plan_cursor(SPIPlanPtr *slot, const char *sql, int nargs,
			   const Oid *argtypes)
{
	return prepare_kept(slot, sql, nargs, argtypes, CURSOR_OPT_FAST_PLAN);
}

/* How exec_planned() has the planner plan a statement (when it must). */
typedef enum QePlanning
{
	QE_PLANNING_WHOLE_TABLES,	/* the caller's settings */
	QE_PLANNING_INDEX_SCANS,	/* no sequential scans, no JIT */
	QE_PLANNING_INDEX_ORDER		/* nor bitmap scans */
} QePlanning;

/*
 * Run a saved plan, or open a cursor on one, planning it (if it must be:
 * the first run, or after an invalidation such as a segment's TRUNCATE)
 * with enable_seqscan and jit off.  A generic plan made while a segment
 * was empty would read it by a sequential scan for as long as it is kept
 * (src/README.md, "Plans"); and the empty parents' disabled scans cost
 * 1e10, which would make every statement look worth compiling.
 *
 * A statement that must read an index in order and stop at its first rows
 * (ORDER BY ... LIMIT over many rows: the tenants with a queue, the
 * tenant's queue walk, a queue's first queued run) is planned with bitmap
 * scans off as well.  Before autovacuum has analysed a table of 10,000 new
 * queues, the planner guesses that few match and may pick a bitmap scan
 * of them all and a sort, which every dequeue of that backend then runs
 * in full (workload 6 fell to a sixth, intermittently: whether the
 * backends planned before or after the analyse).  Sorts stay allowed: an
 * inheritance parent (the families' empty parents) has no index, so a
 * statement through it needs one, and with sorts off the planner would
 * rather sort everything than sort the empty parent for a merge (pgTAP
 * 07_cost).
 *
 * The planner variables are set around the call and put back however it
 * ends: far cheaper than the functions' SET clauses were (a GUC nest level
 * and two settings parsed and undone at every call: 2.2 % of an enqueue's
 * instructions, 1.3 % of a dequeue + complete's, test/bench/README.md).
 */
static uint64
exec_planned(SPIPlanPtr plan, Datum *values, const char *nulls, long count,
			 Portal *portal, QePlanning planning)
{
	bool		seqscan = enable_seqscan;
	bool		bitmapscan = enable_bitmapscan;
	bool		jit = jit_enabled;
	volatile int rc = 0;
	int			path_level = qe_pin_search_path();

	if (planning != QE_PLANNING_WHOLE_TABLES)
	{
		enable_seqscan = false;
		jit_enabled = false;
	}
	if (planning == QE_PLANNING_INDEX_ORDER)
		enable_bitmapscan = false;
	PG_TRY();
	{
		if (portal != NULL)
			*portal = SPI_cursor_open(NULL, plan, values, nulls, false);
		else
			rc = SPI_execute_plan(plan, values, nulls, false, count);
	}
	PG_FINALLY();
	{
		enable_seqscan = seqscan;
		enable_bitmapscan = bitmapscan;
		jit_enabled = jit;
	}
	PG_END_TRY();
	qe_unpin_search_path(path_level);
	if (rc < 0)
		elog(ERROR, "queue_engine: SPI_execute_plan failed: %s",
			 SPI_result_code_string(rc));
	return portal != NULL ? 0 : SPI_processed;
}

/* Run a saved plan; any failure is an internal error. */
uint64
qe_exec(SPIPlanPtr plan, Datum *values, const char *nulls, long count)
{
	return exec_planned(plan, values, nulls, count, NULL, QE_PLANNING_INDEX_SCANS);
}

/*
 * The same with the caller's planner settings, for statements that read
 * whole tables (check_consistency's checks).
 */
uint64
qe_exec_whole_tables(SPIPlanPtr plan, Datum *values, const char *nulls, long count)
{
	return exec_planned(plan, values, nulls, count, NULL, QE_PLANNING_WHOLE_TABLES);
}

/*
 * The same, for a statement that reads an index in order and stops at its
 * first rows: planned without bitmap scans (exec_planned()).
 */
uint64
qe_exec_in_order(SPIPlanPtr plan, Datum *values, const char *nulls, long count)
{
	return exec_planned(plan, values, nulls, count, NULL, QE_PLANNING_INDEX_ORDER);
}

/* Open an unnamed cursor on a saved plan (qe_plan_cursor()). */
Portal
qe_cursor_open(SPIPlanPtr plan, Datum *values, const char *nulls)
{
	Portal		portal = NULL;

	(void) exec_planned(plan, values, nulls, 0, &portal, QE_PLANNING_INDEX_ORDER);
	return portal;
}

/*
 * Fetch count more rows of a cursor (qe_cursor_open()) into SPI_tuptable,
 * with search_path pinned: a function its statement calls may be parsed
 * only now.  Returns SPI_processed.
 */
uint64
qe_cursor_fetch(Portal portal, long count)
{
	int			path_level = qe_pin_search_path();

	SPI_cursor_fetch(portal, true, count);
	qe_unpin_search_path(path_level);
	return SPI_processed;
}

Datum
qe_get(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 col, isnull);
}

int64
qe_get_int64(int row, int col)
{
	bool		isnull;
	Datum		d = qe_get(row, col, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * Try to take a transaction-level lock guarding one limit without waiting.
 * Concurrent dequeuers never block each other: a caller that cannot get
 * the lock skips that queue, tenant or key for now.
 */
bool
qe_try_xact_lock(uint32 kind, uint32 id1, uint32 id2)
{
	return qe_try_xact_lock_mode(kind, id1, id2, ExclusiveLock);
}

bool
qe_try_xact_lock_mode(uint32 kind, uint32 id1, uint32 id2, int lockmode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, id1, id2, kind);
	return LockAcquire(&tag, lockmode, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/* Give back a lock taken with qe_try_xact_lock_mode before the transaction ends. */
void
qe_release_xact_lock(uint32 kind, uint32 id1, uint32 id2, int lockmode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, id1, id2, kind);
	LockRelease(&tag, lockmode, false);
}

/*
 * Lock a queue name for the transaction: shared by enqueuers, exclusive by
 * drop_queue, so a drop waits for enqueues in flight (and then sees their
 * runs), and an enqueue behind a drop waits and then finds the queue gone.
 */
void
qe_lock_queue_name(const char *queue, bool exclusive)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId,
						 hash_bytes((const unsigned char *) queue, strlen(queue)),
						 0, QE_LOCK_QUEUE_NAME);
	(void) LockAcquire(&tag, exclusive ? ExclusiveLock : ShareLock, false, false);
}

/*
 * Lock where a queue's queued runs keep their keys (src/README.md, "Keys")
 * for the transaction: shared by a retry or promotion into the queue's
 * ready runs, which then reads the queue's per-key limit with a new
 * snapshot; exclusive by the change of that limit, which moves the keys.
 * (Enqueues hold the queue's name lock instead, which the change also
 * takes.)
 */
void
qe_lock_key_placement(int32 queue_id, bool exclusive)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) queue_id, 0, QE_LOCK_KEY_PLACEMENT);
	(void) LockAcquire(&tag, exclusive ? ExclusiveLock : ShareLock, false, false);
}

PG_FUNCTION_INFO_V1(qe_lock_queue_name_sql);

/* lock_queue_name(queue): the exclusive side, for drop_queue(). */
Datum
qe_lock_queue_name_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	qe_lock_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	PG_RETURN_VOID();
}

/* Size of a jsonb as stored, without detoasting or serialising it. */
void
qe_check_jsonb_size(Datum value, int limit, const char *what,
					const char *guc_name)
{
	Size		size = toast_raw_datum_size(value);

	if (size > (Size) limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s of %zu bytes exceeds %s (%d bytes)",
						what, size, guc_name, limit),
				 errhint("Store large data elsewhere and pass a reference, or ask a superuser to raise %s.",
						 guc_name)));
}

void
qe_check_interval(Interval *value, const char *name, bool allow_zero)
{
	/* In double precision first: huge intervals would wrap an int64. */
	double		approx = (double) value->time +
		(double) value->day * USECS_PER_DAY +
		(double) value->month * DAYS_PER_MONTH * USECS_PER_DAY;
	int64		usecs;

	if (approx > 100.0 * DAYS_PER_YEAR * USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most 100 years: %s", name,
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(value)))),
				 errhint("Pass a shorter %s.", name)));
	usecs = approx < 0 ? -1 : qe_interval_usecs(value);

	if (usecs < 0 && allow_zero)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative: %s", name,
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(value)))),
				 errhint("Make %s zero or more, such as '1 second'.", name)));
	if (usecs <= 0 && !allow_zero)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a positive interval: %s", name,
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(value)))),
				 errhint("Make %s greater than zero, such as '30 seconds'.", name)));
}

/* An interval in microseconds, with months as 30 days (as justify does). */
int64
qe_interval_usecs(const Interval *value)
{
	return value->time +
		(int64) value->day * USECS_PER_DAY +
		(int64) value->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/* Error out unless run_id names an existing run. */
void
qe_check_run_exists(int64 run_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8OID};
	Datum		values[1];

	qe_plan(&plan,
			QE_SQL_RUN_PLACES("$1") " LIMIT 1",
			1, types);
	values[0] = Int64GetDatum(run_id);
	if (qe_exec(plan, values, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("run %lld does not exist", (long long) run_id),
				 errhint("Pass an id returned by enqueue() or dequeue(); retention may have removed old runs.")));
}

/*
 * The engine's tables opened so far, each with the OID and schema it had
 * then, so that the next open can go by OID: a third of the instructions
 * of a lookup by name, and the hot path opens two or three tables a call.
 */
typedef struct QeKnownTable
{
	char		name[NAMEDATALEN];
	Oid			relid;
	Oid			nsp;
} QeKnownTable;

#define QE_MAX_KNOWN_TABLES 32

static QeKnownTable known_tables[QE_MAX_KNOWN_TABLES];
static int	n_known_tables = 0;

/*
 * Open one of the engine's tables, locked, or NULL when it does not exist.
 * By the OID it had last time if it still has it: the check comes after
 * the lock, so a table dropped meanwhile (DROP EXTENSION committed while
 * this waited for the lock) or renamed fails it, and is looked up by name.
 * By name, looking up and locking are done together (RangeVarGetRelid's
 * retry loop), so the OID found is the table's when the lock is had.
 */
Relation
qe_try_open_table(const char *relname, LOCKMODE lockmode)
{
	QeKnownTable *known = NULL;
	Relation	rel;

	for (int i = 0; i < n_known_tables; i++)
		if (strcmp(known_tables[i].name, relname) == 0)
		{
			known = &known_tables[i];
			break;
		}
	if (known != NULL && OidIsValid(known->relid))
	{
		rel = try_relation_open(known->relid, lockmode);
		if (rel != NULL)
		{
			if (RelationGetNamespace(rel) == known->nsp &&
				strcmp(RelationGetRelationName(rel), relname) == 0 &&
				(rel->rd_rel->relkind == RELKIND_RELATION ||
				 rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE))
				return rel;
			relation_close(rel, lockmode);
		}
	}

	rel = table_openrv_extended(makeRangeVar("queue_engine", pstrdup(relname), -1),
								lockmode, true);
	if (known == NULL && n_known_tables < QE_MAX_KNOWN_TABLES &&
		strlen(relname) < NAMEDATALEN)
	{
		known = &known_tables[n_known_tables++];
		snprintf(known->name, NAMEDATALEN, "%s", relname);
	}
	if (known != NULL)
	{
		known->relid = rel != NULL ? RelationGetRelid(rel) : InvalidOid;
		known->nsp = rel != NULL ? RelationGetNamespace(rel) : InvalidOid;
	}
	return rel;
}

Relation
qe_open_table(const char *relname, LOCKMODE lockmode)
{
	Relation	rel;

	rel = qe_try_open_table(relname, lockmode);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table queue_engine.%s does not exist", relname),
				 errdetail("The queue_engine extension was dropped from this database, or is being dropped."),
				 errhint("Create it again with CREATE EXTENSION queue_engine.")));
	return rel;
}

/*
 * Reject a text value longer than limit bytes (README "Limits"), measured
 * without detoasting it.  The message shows the start of the value only (20
 * characters, as queue_engine.check_name_length() does).
 */
static void
check_text_bytes(Datum value, int limit, const char *what, const char *noun,
				 const char *hint)
{
	Size		len = toast_raw_datum_size(value) - VARHDRSZ;
	text	   *head;
	int			headlen;

	if (len <= (Size) limit)
		return;
	head = DatumGetTextPSlice(value, 0, 20 * MAX_MULTIBYTE_CHAR_LEN);
	headlen = pg_mbcharcliplen(VARDATA_ANY(head), VARSIZE_ANY_EXHDR(head), 20);
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s \"%.*s...\" is too long: %zu bytes",
					what, headlen, VARDATA_ANY(head), len),
			 noun ? errdetail("The limit is %d bytes per %s.", limit, noun) :
			 errdetail("The limit is %d bytes.", limit),
			 errhint("%s", hint)));
}

void
qe_check_text_bytes(Datum value, int limit, const char *what,
					const char *hint)
{
	check_text_bytes(value, limit, what, NULL, hint);
}

/*
 * Check a text[] argument: one-dimensional (2202E), no NULL elements
 * (22004), at most max_elems elements (0: any number) of at most
 * max_elem_bytes bytes each (54000; elem_noun names one in the detail).
 */
void
qe_check_text_array(Datum value, const char *name, int max_elems,
					int max_elem_bytes, const char *elem_noun,
					const char *dims_hint,
					const char *null_hint, const char *length_hint)
{
	ArrayType  *arr = DatumGetArrayTypeP(value);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array, not %d-dimensional",
						name, ARR_NDIM(arr)),
				 errhint("%s", dims_hint)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s[%d] must not be null", name, i + 1),
					 errhint("%s", null_hint)));
	if (max_elems > 0 && n > max_elems)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s has too many elements: %d", name, n),
				 errdetail("The limit is %d elements.", max_elems),
				 errhint("%s", length_hint)));
	for (int i = 0; i < n; i++)
	{
		char		what[64];

		snprintf(what, sizeof(what), "%s[%d]", name, i + 1);
		check_text_bytes(elems[i], max_elem_bytes, what, elem_noun,
						 length_hint);
	}
}

/*
 * With queue_engine.require_attempt on, a call that omits its attempt (and
 * so would act on whatever attempt is current) is an error.
 */
void
qe_require_attempt_arg(FunctionCallInfo fcinfo, int argno, const char *func,
					   const char *arg, const char *hint)
{
	if (qe_require_attempt && PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s() requires %s while queue_engine.require_attempt is on",
						func, arg),
				 errdetail("Without %s, %s() acts on whatever attempt of the run is current, even one started after this worker's lease expired.",
						   arg, func),
				 errhint("%s", hint)));
}
