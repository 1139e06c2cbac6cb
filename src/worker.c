/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background workers (with shared_preload_libraries only).
 *
 *	  A launcher, attached to no database, wakes every
 *	  queue_engine.maintenance_interval and starts a short-lived
 *	  maintenance worker in queue_engine.database, which runs one pass of
 *	  the same tasks as CALL queue_engine.run_maintenance(), each batch its
 *	  own short transaction, and exits.  Nothing stays connected to the
 *	  database between passes, so DROP DATABASE and DROP EXTENSION are never
 *	  blocked, and no transaction is ever held across a sleep.
 *
 *	  A task whose last call was slow (more than QE_SLOW_TASK_MS while not
 *	  catching up on a full batch) sits out the next passes for
 *	  QE_SLOW_TASK_FACTOR times as long.  Its statements are slow then
 *	  because they wade through row versions an old snapshot keeps alive;
 *	  repeating them every pass would spend the CPU the queue needs, and
 *	  they find little to do.  The schedule lives in shared memory, since
 *	  every pass is a new process.
 *
 *-------------------------------------------------------------------------
 */
#include "shmem.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void qe_launcher_main(Datum arg);
PGDLLEXPORT void qe_maintenance_main(Datum arg);

/* bgw_main_arg flags for a maintenance worker */
#define QE_PASS_CONSISTENCY		0x1

/* A task call slower than this, not on a full batch, makes the task wait. */
#define QE_SLOW_TASK_MS		10
/* ... this many times as long as the call took. */
#define QE_SLOW_TASK_FACTOR 20

/* Is task i due in this pass? */
static bool
task_due(int i, TimestampTz now)
{
	TimestampTz due;

	SpinLockAcquire(&qe_shared->task_schedule.mutex);
	due = qe_shared->task_schedule.next_due[i];
	SpinLockRelease(&qe_shared->task_schedule.mutex);
	return now >= due;
}

/* The last call of task i took elapsed_us and ended the task's pass. */
static void
schedule_task(int i, int64 elapsed_us)
{
	TimestampTz due = 0;

	if (elapsed_us > QE_SLOW_TASK_MS * 1000)
		due = GetCurrentTimestamp() + elapsed_us * QE_SLOW_TASK_FACTOR;
	SpinLockAcquire(&qe_shared->task_schedule.mutex);
	qe_shared->task_schedule.next_due[i] = due;
	SpinLockRelease(&qe_shared->task_schedule.mutex);
}

void
qe_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "queue_engine");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "qe_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "queue_engine launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "queue_engine launcher");
	RegisterBackgroundWorker(&worker);
}

/* Start one maintenance pass and wait for it; false if none could start. */
static bool
run_pass(bool consistency)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_notify_pid = MyProcPid;
	worker.bgw_main_arg = Int32GetDatum(consistency ? QE_PASS_CONSISTENCY : 0);
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "queue_engine");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "qe_maintenance_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "queue_engine maintenance for %s",
			 qe_database);
	snprintf(worker.bgw_type, BGW_MAXLEN, "queue_engine maintenance");

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("queue_engine could not start a maintenance worker"),
				 errhint("You may need to increase \"max_worker_processes\".")));
		return false;
	}
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
		return false;
	/* Returns early only on postmaster death, which exits us anyway. */
	(void) WaitForBackgroundWorkerShutdown(handle);
	return true;
}

/*
 * Does queue_engine.database exist?  Says so in the log once when it goes
 * missing and once when it is back, instead of a failing worker per pass.
 */
static bool
served_database_exists(void)
{
	static bool reported_missing = false;
	bool		exists;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	/*
	 * A heap scan of pg_database: attached to no database, the launcher can
	 * read shared catalogs but not their indexes' relcache entries.
	 */
	exists = false;

	/*
	 * Without a fresh statement timestamp the transaction would inherit the
	 * launcher's start time as its xact_start, and pg_stat_activity would
	 * show a transaction as old as the launcher.
	 */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		if (strcmp(NameStr(((Form_pg_database) GETSTRUCT(tuple))->datname),
				   qe_database) == 0)
		{
			exists = true;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	if (!exists && !reported_missing)
		ereport(LOG,
				(errmsg("queue_engine: database \"%s\" does not exist; waiting for it",
						qe_database),
				 errhint("Create it, or set queue_engine.database to the database with CREATE EXTENSION queue_engine.")));
	else if (exists && reported_missing)
		ereport(LOG,
				(errmsg("queue_engine: database \"%s\" exists again; maintaining it",
						qe_database)));
	reported_missing = !exists;
	return exists;
}

void
qe_launcher_main(Datum arg)
{
	TimestampTz last_consistency = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/*
	 * Connect to no database (shared catalogs only), like the logical
	 * replication launcher: it shows in pg_stat_activity and handles
	 * barriers, yet never keeps a database busy.
	 */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("queue_engine launcher");

	ereport(LOG,
			(errmsg("queue_engine launcher started for database \"%s\"",
					qe_database)));

	for (;;)
	{
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (qe_maintenance_enabled && served_database_exists())
		{
			bool		consistency;

			now = GetCurrentTimestamp();
			consistency = TimestampDifferenceExceeds(last_consistency, now,
													 qe_consistency_interval_ms);
			if (run_pass(consistency) && consistency)
				last_consistency = now;
		}

		/* A reload that came during the pass sets the sleep too. */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 qe_maintenance_interval_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Is someone dropping this database?  DROP DATABASE holds an access
 * exclusive lock on it while it waits for other sessions to leave, so a
 * lock attempt that fails at once says so.
 */
static bool
database_being_dropped(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, MyDatabaseId, 0);
	if (LockAcquire(&tag, AccessShareLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		return true;
	LockRelease(&tag, AccessShareLock, false);
	return false;
}

/*
 * Begin a short transaction for one batch.  False (and nothing open) when
 * the pass should end: the extension is not installed, or is being
 * dropped, or the database is.  Holding a share lock on the extension for
 * the batch makes DROP EXTENSION wait for it rather than pull the tables
 * out from under it.
 */
static bool
begin_batch(const char *activity)
{
	Oid			extoid;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!database_being_dropped())
	{
		extoid = get_extension_oid("queue_engine", true);
		if (OidIsValid(extoid) &&
			ConditionalLockDatabaseObject(ExtensionRelationId, extoid, 0,
										  AccessShareLock) &&
			get_extension_oid("queue_engine", true) == extoid)
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			pgstat_report_activity(STATE_RUNNING, activity);
			SPI_connect();
			return true;
		}
	}
	CommitTransactionCommand();
	return false;
}

static void
end_batch(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* After an error in a batch: report it, roll the batch back, carry on. */
static void
recover_from_error(void)
{
	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(TopMemoryContext);
	EmitErrorReport();
	AbortCurrentTransaction();
	FlushErrorState();
	pgstat_report_activity(STATE_IDLE, NULL);
	RESUME_INTERRUPTS();
}

void
qe_maintenance_main(Datum arg)
{
	int			flags = DatumGetInt32(arg);

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(qe_database, NULL, 0);
	pgstat_report_appname("queue_engine maintenance");

	/* Every plan is schema-qualified; pin search_path all the same. */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * A consistency pass also prunes from the oldest finished run and scans
	 * for stalled runs.
	 */
	if (flags & QE_PASS_CONSISTENCY)
	{
		qe_prune_cursor_forget();
		qe_rescue_horizon_forget();
	}

	for (int i = 0; i < QE_BACKGROUND_TASK_COUNT; i++)
	{
		char		activity[64];

		snprintf(activity, sizeof(activity), "queue_engine: %s",
				 qe_background_tasks[i].name);
		if (!task_due(i, GetCurrentTimestamp()))
			continue;
		for (;;)
		{
			volatile int64 n = 0;
			volatile bool failed = false;
			TimestampTz started = GetCurrentTimestamp();

			CHECK_FOR_INTERRUPTS();
			if (!begin_batch(activity))
				proc_exit(0);	/* not installed, or being dropped: quietly */

			/*
			 * A task that fails is reported and skipped for this pass, so one
			 * bad batch never keeps the other tasks from running.
			 */
			PG_TRY();
			{
				n = qe_background_tasks[i].resumed(qe_maintenance_batch_size);
				end_batch();
			}
			PG_CATCH();
			{
				recover_from_error();
				failed = true;
			}
			PG_END_TRY();

			if (failed)
				break;
			if (n > 0)
				elog(DEBUG1, "queue_engine: %s handled " INT64_FORMAT,
					 qe_background_tasks[i].name, n);
			if (n < qe_maintenance_batch_size)
			{
				schedule_task(i, GetCurrentTimestamp() - started);
				break;
			}
		}
	}

	if ((flags & QE_PASS_CONSISTENCY) &&
		begin_batch("queue_engine: check_consistency"))
	{
		/* Recorded, so that run_maintenance() does not check again soon. */
		(void) qe_consistency_check_start(true);
		PG_TRY();
		{
			QeCheckResult results[QE_CHECK_COUNT];

			qe_run_consistency_checks(true, results);
			end_batch();
			/* Its repairs may have given runs an expired lease. */
			qe_rescue_horizon_forget();
		}
		PG_CATCH();
		{
			recover_from_error();
		}
		PG_END_TRY();
	}
	proc_exit(0);
}
