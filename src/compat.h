/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PostgreSQL version difference queue_engine cares about, in one
 *	  place.  Built and tested on PostgreSQL 15; compile-checked against
 *	  the 16, 17 and 18 headers (test/compat_check.sh).
 *
 *-------------------------------------------------------------------------
 */
#ifndef QE_COMPAT_H
#define QE_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000
#error "queue_engine requires PostgreSQL 15 or later"
#endif

/* PostgreSQL 18 wants a name and version in the module magic. */
#if PG_VERSION_NUM >= 180000
#define QE_MODULE_MAGIC PG_MODULE_MAGIC_EXT(.name = "queue_engine", .version = "0.2.0")
#else
#define QE_MODULE_MAGIC PG_MODULE_MAGIC
#endif

/*
 * ConditionalLockDatabaseObject() came with minor releases 15.7 and 16.3
 * (and 17.0).  Older minors get the same steps here, as lmgr.c has them.
 */
#if PG_VERSION_NUM < 150007 || \
	(PG_VERSION_NUM >= 160000 && PG_VERSION_NUM < 160003)
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/inval.h"

static inline bool
ConditionalLockDatabaseObject(Oid classid, Oid objid, uint16 objsubid,
							  LOCKMODE lockmode)
{
	LOCKTAG		tag;
	LOCALLOCK  *locallock;
	LockAcquireResult res;

	SET_LOCKTAG_OBJECT(tag, MyDatabaseId, classid, objid, objsubid);
	res = LockAcquireExtended(&tag, lockmode, false, true, true, &locallock);
	if (res == LOCKACQUIRE_NOT_AVAIL)
		return false;
	if (res != LOCKACQUIRE_ALREADY_CLEAR)
	{
		AcceptInvalidationMessages();
		MarkLockClear(locallock);
	}
	return true;
}
#endif

/* PostgreSQL 17 moved PGPROC.lxid into PGPROC.vxid. */
#if PG_VERSION_NUM >= 170000
#define QE_MYPROC_LXID (MyProc->vxid.lxid)
#else
#define QE_MYPROC_LXID (MyProc->lxid)
#endif

/* PostgreSQL 18 added an instrumentation argument to index_beginscan(). */
#if PG_VERSION_NUM >= 180000
#define qe_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan(heap, index, snapshot, NULL, nkeys, norderbys)
#else
#define qe_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan(heap, index, snapshot, nkeys, norderbys)
#endif


/* This backend's PGPROC number (for another backend to set its latch). */
#if PG_VERSION_NUM >= 170000
#define QE_MY_PROCNO MyProcNumber
#else
#define QE_MY_PROCNO (MyProc->pgprocno)
#endif

/*
 * Move now() and statement_timestamp() to the present, for a dequeue that
 * slept: the claim that follows gets its lease and started_at from when it
 * starts the run, and judges ttls and due runs by the time it is.
 * PostgreSQL's one setter is the parallel worker's, whose only check is an
 * assertion; in an assertion-enabled build the clock is left alone.
 */
#ifdef USE_ASSERT_CHECKING
#define qe_restart_transaction_clock() ((void) 0)
#else
#define qe_restart_transaction_clock() \
	SetParallelStartTimestamps(GetCurrentTimestamp(), GetCurrentTimestamp())
#endif

#endif							/* QE_COMPAT_H */
