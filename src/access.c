/*-------------------------------------------------------------------------
 *
 * access.c
 *	  Tenant-scoped roles (README "Roles and grants"): who may act on which
 *	  tenants, as granted in queue_engine.tenant_access by grant_tenant().
 *
 *	  The role checked is the one the session runs as, GetOuterUserId():
 *	  inside the SECURITY DEFINER API functions GetUserId() is the
 *	  extension owner.  Superusers and roles with the privileges of the
 *	  owner are unscoped and never checked; that answer is cached per
 *	  backend, and a call by the owner itself is recognised by comparing
 *	  two ids.  Every other role is scoped: it may act only on the tenants
 *	  granted to it, or to a role whose privileges it has, and the tenants
 *	  it may act on come from a per-backend cache of tenant_access.
 *
 *	  The cache is rebuilt (one heap scan of tenant_access) when the outer
 *	  user changes (SET ROLE), after tenant_access changes (a statement
 *	  trigger sends a relcache invalidation of the table, delivered to
 *	  every backend at commit, also of a prepared transaction, and to the
 *	  changing backend at its next command), and after a change of role
 *	  membership or attributes (syscache callbacks on pg_auth_members and
 *	  pg_authid).
 *
 *	  This file owns the cache, the checks the C API functions call (a
 *	  call at entry, or a filter of the tenants a function may see), and
 *	  the SQL-callable helpers the PL/pgSQL functions and the queue_stats
 *	  view use.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(qe_access_tenants_sql);
PG_FUNCTION_INFO_V1(qe_require_access_sql);
PG_FUNCTION_INFO_V1(qe_require_unscoped_sql);
PG_FUNCTION_INFO_V1(qe_tenant_access_changed);

/* One tenant's granted accesses (QE_ACCESS_* bits). */
typedef struct QeTenantMask
{
	int32		tenant_id;
	uint8		mask;
} QeTenantMask;

static bool callbacks_registered = false;

/* Unscoped or not: for which outer user and function owner. */
static bool unscoped_valid = false;
static Oid	unscoped_user = InvalidOid;
static Oid	unscoped_owner = InvalidOid;
static bool unscoped_answer = false;

/* The scoped role's tenants: for which outer user. */
static bool access_valid = false;
static Oid	access_user = InvalidOid;
static Oid	access_relid = InvalidOid;
static bool access_no_table = false;	/* 0.1.0 schema: nobody is scoped */
static uint8 access_all_mask = 0;	/* granted on tenant 0, "*" */
static QeTenantMask *access_tenants = NULL; /* sorted by tenant_id */
static int	access_ntenants = 0;
static ArrayType *access_arrays[16];	/* by need mask; NULL: not built */

static void
access_forget(void)
{
	access_valid = false;
	for (int i = 0; i < lengthof(access_arrays); i++)
	{
		if (access_arrays[i] != NULL)
			pfree(access_arrays[i]);
		access_arrays[i] = NULL;
	}
}

static void
access_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == access_relid)
	{
		access_forget();
		access_relid = InvalidOid;
	}
}

static void
access_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	unscoped_valid = false;
	access_forget();
}

static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	CacheRegisterRelcacheCallback(access_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, access_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, access_syscache_callback, (Datum) 0);
	callbacks_registered = true;
}

/*
 * Is the session's role unscoped: the function owner (the extension
 * owner, inside our SECURITY DEFINER functions), a superuser, or a role
 * with the owner's privileges?
 */
bool
qe_access_unscoped(void)
{
	Oid			outer = GetOuterUserId();
	Oid			owner = GetUserId();

	if (outer == owner)
		return true;
	if (unscoped_valid && unscoped_user == outer && unscoped_owner == owner)
		return unscoped_answer;
	register_callbacks();
	unscoped_answer = superuser_arg(outer) || has_privs_of_role(outer, owner);
	unscoped_user = outer;
	unscoped_owner = owner;
	unscoped_valid = true;
	return unscoped_answer;
}

static int
cmp_tenant_mask(const void *a, const void *b)
{
	int32		x = ((const QeTenantMask *) a)->tenant_id;
	int32		y = ((const QeTenantMask *) b)->tenant_id;

	return (x > y) - (x < y);
}

static uint8
access_bit(const char *access)
{
	if (strcmp(access, "reader") == 0)
		return QE_ACCESS_READER;
	if (strcmp(access, "producer") == 0)
		return QE_ACCESS_PRODUCER;
	if (strcmp(access, "worker") == 0)
		return QE_ACCESS_WORKER;
	if (strcmp(access, "admin") == 0)
		return QE_ACCESS_ADMIN;
	return 0;
}

/*
 * Load the outer user's tenants from tenant_access: the rows of every role
 * whose privileges it has (INHERIT membership, as for table privileges).
 * One heap scan with a fresh snapshot; the table is small (a row per
 * grant).
 */
static void
access_load(Oid outer)
{
	Relation	rel;
	TableScanDesc scan;
	Snapshot	snap;
	HeapTuple	tup;
	MemoryContext old;
	QeTenantMask *rows = NULL;
	int			nrows = 0;
	int			cap = 0;
	int			n = 0;

	access_forget();
	access_all_mask = 0;
	if (access_tenants != NULL)
		pfree(access_tenants);
	access_tenants = NULL;
	access_ntenants = 0;
	access_no_table = false;

	if (!OidIsValid(access_relid))
	{
		Oid			nsp = get_namespace_oid("queue_engine", true);

		if (OidIsValid(nsp))
			access_relid = get_relname_relid("tenant_access", nsp);
	}
	if (!OidIsValid(access_relid))
	{
		/* Not updated to 0.1.1 yet: no grants exist, 0.1.0 behaviour. */
		access_no_table = true;
		access_user = outer;
		access_valid = true;
		return;
	}

	/* Valid from here: an invalidation during the scan makes us reload. */
	access_valid = true;
	access_user = outer;
	rel = table_open(access_relid, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Oid			role;
		int32		tenant_id;
		uint8		bit;

		role = DatumGetObjectId(heap_getattr(tup, 1, RelationGetDescr(rel), &isnull));
		if (isnull || !has_privs_of_role(outer, role))
			continue;
		tenant_id = DatumGetInt32(heap_getattr(tup, 2, RelationGetDescr(rel), &isnull));
		if (isnull)
			continue;
		bit = access_bit(TextDatumGetCString(heap_getattr(tup, 3, RelationGetDescr(rel),
														  &isnull)));
		if (tenant_id == 0)
		{
			access_all_mask |= bit;
			continue;
		}
		if (nrows == cap)
		{
			cap = Max(16, cap * 2);
			rows = rows == NULL ? palloc(sizeof(QeTenantMask) * cap)
				: repalloc(rows, sizeof(QeTenantMask) * cap);
		}
		rows[nrows].tenant_id = tenant_id;
		rows[nrows].mask = bit;
		nrows++;
	}
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);

	/* One entry per tenant, sorted, in long-lived memory. */
	if (nrows > 0)
	{
		qsort(rows, nrows, sizeof(QeTenantMask), cmp_tenant_mask);
		old = MemoryContextSwitchTo(TopMemoryContext);
		access_tenants = palloc(sizeof(QeTenantMask) * nrows);
		MemoryContextSwitchTo(old);
		for (int i = 0; i < nrows; i++)
		{
			if (n > 0 && access_tenants[n - 1].tenant_id == rows[i].tenant_id)
				access_tenants[n - 1].mask |= rows[i].mask;
			else
				access_tenants[n++] = rows[i];
		}
		access_ntenants = n;
	}
}

/* The scoped outer user's cache, loaded if stale. */
static void
access_ensure(void)
{
	Oid			outer = GetOuterUserId();

	register_callbacks();
	if (!access_valid || access_user != outer)
		access_load(outer);
}

static uint8
tenant_mask(int32 tenant_id)
{
	int			lo = 0,
				hi = access_ntenants - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (access_tenants[mid].tenant_id == tenant_id)
			return access_tenants[mid].mask;
		if (access_tenants[mid].tenant_id < tenant_id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return 0;
}

/*
 * May the session's role act on the tenant with one of the accesses in
 * need (QE_NEED_*)?  A tenant_id of 0 asks about every tenant ("*").
 */
bool
qe_access_tenant(uint8 need, int32 tenant_id)
{
	if (qe_access_unscoped())
		return true;
	access_ensure();
	if (access_no_table || (access_all_mask & need) != 0)
		return true;
	return tenant_id != 0 && (tenant_mask(tenant_id) & need) != 0;
}

static const char *
need_verb(uint8 need)
{
	switch (need)
	{
		case QE_NEED_PRODUCE:
			return "enqueue into";
		case QE_NEED_WORK:
			return "dequeue from";
		case QE_NEED_ADMIN:
			return "administer";
		default:
			return "read";
	}
}

static const char *
need_access(uint8 need)
{
	switch (need)
	{
		case QE_NEED_PRODUCE:
			return "producer";
		case QE_NEED_WORK:
			return "worker";
		case QE_NEED_ADMIN:
			return "admin";
		default:
			return "reader";
	}
}

/* 42501 unless the session's role may act on the queue's tenant. */
void
qe_access_require_queue(uint8 need, const char *queue, int32 tenant_id)
{
	if (qe_access_tenant(need, tenant_id))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not %s queue \"%s\"",
					GetUserNameFromId(GetOuterUserId(), false),
					need_verb(need), queue),
			 errdetail("The role has no %s access to the queue's tenant.",
					   need_access(need)),
			 errhint("The extension owner grants it with queue_engine.grant_tenant(role, tenant, '%s').",
					 need_access(need))));
}

/* 42501 unless the session's role is unscoped. */
void
qe_access_require_unscoped(const char *what)
{
	if (qe_access_unscoped())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not call %s",
					GetUserNameFromId(GetOuterUserId(), false), what),
			 errdetail("Only superusers and roles with the privileges of the extension owner may; tenant-scoped roles may not."),
			 errhint("Call it as the extension owner.")));
}

/*
 * The tenants the session's role may act on with one of the accesses in
 * need, as an int[] in the current memory context; NULL when it may act on
 * every tenant (unscoped, or granted "*").  A copy: an invalidation while
 * the caller's statement runs frees the cached array.
 */
ArrayType *
qe_access_tenant_array(uint8 need)
{
	Datum	   *ids;
	int			n = 0;
	MemoryContext old;

	if (qe_access_unscoped())
		return NULL;
	access_ensure();
	if (access_no_table || (access_all_mask & need) != 0)
		return NULL;
	need &= 15;
	if (access_arrays[need] != NULL)
		return (ArrayType *) pg_detoast_datum_copy((struct varlena *) access_arrays[need]);
	ids = palloc(sizeof(Datum) * Max(access_ntenants, 1));
	for (int i = 0; i < access_ntenants; i++)
		if (access_tenants[i].mask & need)
			ids[n++] = Int32GetDatum(access_tenants[i].tenant_id);
	old = MemoryContextSwitchTo(TopMemoryContext);
	access_arrays[need] = construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT);
	MemoryContextSwitchTo(old);
	pfree(ids);
	return (ArrayType *) pg_detoast_datum_copy((struct varlena *) access_arrays[need]);
}

/*
 * Is the run visible to the session's role with one of the accesses in
 * need?  An unknown run is "visible": the caller reports it as unknown.
 * Scoped roles only pay for the probe: the run is in one of the four
 * tables of storage 0.2, looked up by run_id in each (executing and
 * finished_runs by their unique btree, first, as they are cheaper and
 * hold most runs a worker or reader names; ready and delayed by their
 * BRIN), stopping at the first found; its tenant is its queue's.
 */
bool
qe_access_run(uint8 need, int64 run_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	bool		visible = true;

	if (qe_access_unscoped())
		return true;
	access_ensure();
	if (access_no_table || (access_all_mask & need) != 0)
		return true;
	SPI_connect();
	qe_plan(&plan,
			"SELECT q.tenant_id"
			"  FROM (SELECT e.queue_id FROM queue_engine.executing e WHERE e.run_id = $1"
			"        UNION ALL"
			"        SELECT f.queue_id FROM queue_engine.finished_runs f WHERE f.run_id = $1"
			"        UNION ALL"
			"        SELECT x.queue_id FROM queue_engine.ready x WHERE x.run_id = $1"
			"        UNION ALL"
			"        SELECT x.queue_id FROM queue_engine.delayed x WHERE x.run_id = $1"
			"        LIMIT 1) r"
			"  JOIN queue_engine.queues q ON q.queue_id = r.queue_id",
			1, (Oid[]) {INT8OID});
	values[0] = Int64GetDatum(run_id);
	if (qe_exec(plan, values, NULL, 1) == 1)
	{
		bool		isnull;

		visible = (tenant_mask(DatumGetInt32(qe_get(0, 1, &isnull))) & need) != 0;
	}
	SPI_finish();
	return visible;
}

/* P0002 "run N does not exist", as qe_check_run_exists says it. */
void
qe_access_run_not_found(int64 run_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("run %lld does not exist", (long long) run_id),
			 errhint("Pass an id returned by enqueue() or dequeue(); retention may have removed old runs.")));
}

static uint8
need_from_text(text *access_text)
{
	char	   *access = text_to_cstring(access_text);

	if (strcmp(access, "reader") == 0)
		return QE_NEED_READ;
	if (strcmp(access, "producer") == 0)
		return QE_NEED_PRODUCE;
	if (strcmp(access, "worker") == 0)
		return QE_NEED_WORK;
	if (strcmp(access, "admin") == 0)
		return QE_NEED_ADMIN;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown access \"%s\"", access),
			 errhint("Pass one of reader, producer, worker, admin.")));
	return 0;
}

/*
 * queue_engine.access_tenants(access text) RETURNS int[]: the tenant ids
 * the session's role may act on with that access, NULL for all.  What the
 * queue_stats view and get_run filter with.
 */
Datum
qe_access_tenants_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *arr;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("access must not be null"),
				 errhint("Pass one of reader, producer, worker, admin.")));
	arr = qe_access_tenant_array(need_from_text(PG_GETARG_TEXT_PP(0)));
	if (arr == NULL)
		PG_RETURN_NULL();
	PG_RETURN_ARRAYTYPE_P(arr);
}

/*
 * queue_engine.require_access(tenant_id int, access text, what text):
 * 42501 naming what (a queue or a tenant) unless the session's role has
 * the access on the tenant.  tenant_id NULL: a tenant that does not exist
 * yet, which only a role with the access on every tenant may create.
 */
Datum
qe_require_access_sql(PG_FUNCTION_ARGS)
{
	uint8		need;
	const char *what;
	int32		tenant_id;

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("access and what must not be null"),
				 errhint("Pass one of reader, producer, worker, admin, and what is acted on.")));
	need = need_from_text(PG_GETARG_TEXT_PP(1));
	what = text_to_cstring(PG_GETARG_TEXT_PP(2));
	tenant_id = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0);
	if (!qe_access_tenant(need, tenant_id))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not %s %s",
						GetUserNameFromId(GetOuterUserId(), false),
						need == QE_NEED_ADMIN ? "administer" : need_verb(need), what),
				 errdetail(PG_ARGISNULL(0)
						   ? "Creating a tenant takes %s access to every tenant (\"*\")."
						   : "The role has no %s access to that tenant.",
						   need_access(need)),
				 errhint("The extension owner grants it with queue_engine.grant_tenant(role, tenant, '%s').",
						 need_access(need))));
	PG_RETURN_VOID();
}

/* queue_engine.require_unscoped(what text): 42501 for a scoped role. */
Datum
qe_require_unscoped_sql(PG_FUNCTION_ARGS)
{
	qe_access_require_unscoped(PG_ARGISNULL(0) ? "this function"
							   : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/*
 * queue_engine.tenant_access_changed(): the statement trigger on
 * tenant_access.  A relcache invalidation of the table reaches every
 * backend when the change commits, and this one at its next command.
 */
Datum
qe_tenant_access_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tenant_access_changed() must be called as a trigger"),
				 errhint("It is the statement trigger on queue_engine.tenant_access.")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
