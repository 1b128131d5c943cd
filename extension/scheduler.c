/*-------------------------------------------------------------------------
 * scheduler.c
 *	  The "iwd scheduler" background workers.
 *
 * One launcher (registered at preload) reads iwd.databases and keeps one
 * database worker alive per listed database. Each database worker calls
 * a scheduler pass every iwd.scheduler_interval: activation of deferred tasks,
 * expiry, overdue flags, reprioritization and reservation timeouts, each in
 * small batches committed separately so that no lock is held for long. The
 * workers run only on a primary; on a standby they wait for promotion, and
 * their first pass after start returns the reservations that timed out while
 * no scheduler ran. In iwd.notify = batch mode (the default) the database
 * worker also announces new task events every iwd.notify_interval, it
 * vacuums iwd.task after every iwd.vacuum_threshold events, and it starts the
 * Data Mart chain on its schedule, in a worker of its own (datamart.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/async.h"
#include "commands/vacuum.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/varlena.h"

#include "datamart.h"
#include "iwd.h"

#define LAUNCHER_RESTART_SECONDS 10
#define LAUNCHER_CHECK_MS 5000
#define MAX_SCHEDULED_DATABASES 64
#define VACUUM_MIN_INTERVAL_MS 1000
/* the vacuum of iwd.task refreshes its statistics at most this often */
#define ANALYZE_MIN_INTERVAL_MS 60000

PGDLLEXPORT void iwd_scheduler_launcher_main(Datum main_arg);
PGDLLEXPORT void iwd_scheduler_database_main(Datum main_arg);

typedef struct DatabaseWorker
{
	char		dbname[NAMEDATALEN];
	BackgroundWorkerHandle *handle;
} DatabaseWorker;

/* Register the launcher; without preloading there is no scheduler (iwd.tick() still works). */
void
SchedulerInit(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		return;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = LAUNCHER_RESTART_SECONDS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "iwd");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "iwd_scheduler_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "iwd scheduler launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "iwd scheduler launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * Register a dynamic worker of iwd running function in dbname (bgw_extra),
 * named "<type> <dbname>", notifying this process; false when no slot is free.
 */
bool
IwdStartDatabaseWorker(const char *function, const char *type, const char *dbname,
					   BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "iwd");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s %s", type, dbname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", type);
	strlcpy(worker.bgw_extra, dbname, BGW_EXTRALEN);
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/* Start the database worker for dbname; NULL when no worker slot is free. */
static BackgroundWorkerHandle *
StartDatabaseWorker(const char *dbname)
{
	BackgroundWorkerHandle *handle;

	if (!IwdStartDatabaseWorker("iwd_scheduler_database_main", "iwd scheduler", dbname, &handle))
	{
		ereport(WARNING,
				(errmsg("iwd scheduler: no background worker slot for database \"%s\"", dbname),
				 errhint("Raise max_worker_processes.")));
		return NULL;
	}
	return handle;
}

/* Is the worker behind handle still starting or running? */
static bool
WorkerAlive(BackgroundWorkerHandle *handle)
{
	pid_t		pid;

	return handle != NULL && GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED;
}

/* Make the set of database workers match iwd.databases. */
static int
SyncDatabaseWorkers(DatabaseWorker *workers, int nworkers)
{
	char	   *list = pstrdup(iwd_databases ? iwd_databases : "");
	List	   *names = NIL;
	DatabaseWorker next[MAX_SCHEDULED_DATABASES];
	int			nnext = 0;
	ListCell   *lc;

	if (!SplitIdentifierString(list, ',', &names))
	{
		ereport(WARNING, (errmsg("iwd scheduler: iwd.databases is not a valid list of names")));
		names = NIL;
	}
	foreach(lc, names)
	{
		const char *name = lfirst(lc);
		DatabaseWorker *w = &next[nnext];

		if (name[0] == '\0' || nnext == MAX_SCHEDULED_DATABASES)
			continue;
		strlcpy(w->dbname, name, NAMEDATALEN);
		w->handle = NULL;
		for (int i = 0; i < nworkers; i++)
			if (strcmp(workers[i].dbname, name) == 0 && workers[i].handle != NULL)
			{
				w->handle = workers[i].handle;
				workers[i].handle = NULL;
			}
		if (!WorkerAlive(w->handle))
			w->handle = StartDatabaseWorker(name);
		nnext++;
	}
	for (int i = 0; i < nworkers; i++)
		if (workers[i].handle != NULL)
			TerminateBackgroundWorker(workers[i].handle);
	memcpy(workers, next, sizeof(DatabaseWorker) * nnext);
	return nnext;
}

/* The launcher: keeps one worker per database of iwd.databases. */
void
iwd_scheduler_launcher_main(Datum main_arg)
{
	DatabaseWorker *workers = palloc0(sizeof(DatabaseWorker) * MAX_SCHEDULED_DATABASES);
	int			nworkers = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		nworkers = SyncDatabaseWorkers(workers, nworkers);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_CHECK_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Connect the worker to dbname as the bootstrap superuser, with the search
 * path of iwd's workers: a setting of the database or role (ALTER DATABASE
 * ... SET search_path, which the database's owner may run) is overridden, so
 * that names in the worker's SQL never resolve to objects planted there.
 */
void
IwdWorkerConnect(const char *dbname)
{
	BackgroundWorkerInitializeConnection(dbname, NULL, 0);
	SetConfigOption("search_path", IWD_WORKER_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * Start a transaction of the worker's work, SPI connected with a snapshot,
 * run as the role iwd_worker when it exists; timeout_ms (when > 0) bounds the
 * transaction, lock_timeout_ms (0: none) each lock wait. A background worker
 * runs no statement_timeout of its own (that is the client protocol's), so
 * it is armed here.
 */
void
IwdWorkerStartTransaction(IwdWorkerTransaction *xact, int timeout_ms, int lock_timeout_ms)
{
	Oid			role;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SetConfigOption("lock_timeout", psprintf("%d", lock_timeout_ms), PGC_SUSET, PGC_S_OVERRIDE);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	GetUserIdAndSecContext(&xact->saved_user, &xact->saved_context);
	role = get_role_oid(IWD_WORKER_ROLE, true);
	xact->as_worker_role = OidIsValid(role);
	/* SECURITY_LOCAL_USERID_CHANGE: no SET ROLE back to the session's superuser from here */
	if (xact->as_worker_role)
		SetUserIdAndSecContext(role, xact->saved_context | SECURITY_LOCAL_USERID_CHANGE);
	xact->timeout_armed = timeout_ms > 0;
	if (xact->timeout_armed)
		enable_timeout_after(STATEMENT_TIMEOUT, timeout_ms);
}

/* Refuse to run iwd's SQL when the role iwd_worker is missing (the work would run as superuser). */
void
IwdWorkerRequireRole(IwdWorkerTransaction *xact)
{
	if (!xact->as_worker_role)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", IWD_WORKER_ROLE),
				 errdetail("iwd's background workers run their work as this role, never as a superuser."),
				 errhint("Create it again (CREATE ROLE iwd_worker NOLOGIN) and grant it what README, Security, Roles lists.")));
}

/* Commit what IwdWorkerStartTransaction started, as the session's own user again. */
void
IwdWorkerCommitTransaction(IwdWorkerTransaction *xact)
{
	if (xact->timeout_armed)
		disable_timeout(STATEMENT_TIMEOUT, false);
	SetUserIdAndSecContext(xact->saved_user, xact->saved_context);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* Is iwd installed in this database? (inside a transaction, SPI connected) */
static bool
IwdInstalled(void)
{
	return SPI_execute("SELECT 1 FROM pg_extension WHERE extname = 'iwd'", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1;
}

/*
 * Run one batch of every scheduler step in its own transaction; returns
 * whether a step filled its batch (more work is waiting). Does nothing when
 * iwd is not installed in this database.
 */
static bool
RunTickBatch(void)
{
	bool		more = false;
	IwdWorkerTransaction xact;

	IwdWorkerStartTransaction(&xact, iwd_worker_statement_timeout_ms, iwd_worker_lock_timeout_ms);
	pgstat_report_activity(STATE_RUNNING, "iwd scheduler pass");
	if (IwdInstalled())
	{
		bool		isnull;

		IwdWorkerRequireRole(&xact);
		if (SPI_execute("SELECT (iwd._tick_batch(iwd.now(), current_setting('iwd.batch_size')::int)"
						" ->> 'more')::boolean", false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "iwd scheduler: the scheduler pass failed");
		more = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	IwdWorkerCommitTransaction(&xact);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return more;
}

/*
 * Batch mode of iwd.notify: announce the events written since the last
 * announcement with one NOTIFY iwd_task_event "events:<first id>:<last id>"
 * (when notify; the position also paces the vacuum of iwd.task).
 * Announcing from here rather than from each writing transaction matters:
 * PostgreSQL serializes the commits of notifying transactions. Returns the
 * last event id announced; the first call only takes the current position.
 */
static int64
AnnounceNewEvents(int64 announced, bool notify)
{
	int64		last = announced;
	IwdWorkerTransaction xact;

	IwdWorkerStartTransaction(&xact, iwd_worker_statement_timeout_ms, iwd_worker_lock_timeout_ms);
	if (IwdInstalled() &&
		SPI_execute("SELECT coalesce(max(id), 0) FROM iwd.task_event", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;

		last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (notify && announced >= 0 && last > announced)
			Async_Notify("iwd_task_event",
						 psprintf("events:" INT64_FORMAT ":" INT64_FORMAT, announced + 1, last));
	}
	IwdWorkerCommitTransaction(&xact);
	return last;
}

/*
 * Vacuum iwd.task. Every claim leaves a dead entry at the head of the queue
 * index (the claimed row version), and every later claim walks over those
 * entries until VACUUM removes them: left to autovacuum, which visits a
 * database once per autovacuum_naptime and waits for a fraction of the table
 * to be dead, the head grows by thousands of entries per second and claims
 * slow down steadily. Index cleanup is forced (the automatic bypass would keep
 * exactly these entries), truncation is off (its exclusive lock would stall
 * claims), locked tables are skipped, and statistics are refreshed on the way
 * when "analyze" is set (a queue's size changes fast, but not every second:
 * sampling the table costs far more than the vacuum, and new statistics make
 * every session replan its statements on iwd.task). It runs as the worker's
 * superuser, not as iwd_worker: PostgreSQL 15 lets only a table's owner (or a
 * superuser) vacuum it. It runs no SQL of its own, and the index expressions
 * it evaluates are C functions of iwd.
 */
static void
VacuumTaskTable(bool analyze)
{
	MemoryContext portal_cxt = AllocSetContextCreate(TopMemoryContext, "iwd vacuum", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old_portal = PortalContext;
	MemoryContext old = MemoryContextSwitchTo(portal_cxt);
	VacuumStmt *stmt = makeNode(VacuumStmt);

	stmt->options = list_make3(makeDefElem("index_cleanup", NULL, -1),
							   makeDefElem("truncate", (Node *) makeString("false"), -1),
							   makeDefElem("skip_locked", NULL, -1));
	if (analyze)
		stmt->options = lappend(stmt->options, makeDefElem("analyze", NULL, -1));
	stmt->rels = list_make1(makeVacuumRelation(makeRangeVar("iwd", "task", -1), InvalidOid, NIL));
	stmt->is_vacuumcmd = true;
	PortalContext = portal_cxt;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "iwd scheduler: vacuum iwd.task");
	ExecVacuum(make_parsestate(NULL), stmt, true);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	PortalContext = old_portal;
	MemoryContextSwitchTo(old);
	MemoryContextDelete(portal_cxt);
}

/* A database worker: scheduler passes every iwd.scheduler_interval, event announcements in between. */
void
iwd_scheduler_database_main(Datum main_arg)
{
	char		dbname[NAMEDATALEN];
	MemoryContext loop_cxt;
	TimestampTz last_pass = 0;
	TimestampTz last_vacuum = 0;
	TimestampTz last_analyze = 0;
	int64		announced = -1;
	int64		vacuumed_at_event = -1;
	int64		datamart_minute = -1;
	bool		pass_more = false;

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	IwdWorkerConnect(dbname);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "iwd scheduler loop", ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("iwd scheduler started for database \"%s\"", dbname)));

	for (;;)
	{
		MemoryContext old;
		long		wait_ms = iwd_scheduler_interval_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!RecoveryInProgress())
		{
			old = MemoryContextSwitchTo(loop_cxt);
			/*
			 * One batch of the pass per loop: a long pass (a whole backlog to
			 * rescore or expire) rests between batches, iwd.pass_duty percent of
			 * the time working, and the announcements, the vacuum and the Data
			 * Mart schedule go on in between.
			 */
			if (pass_more || TimestampDifferenceExceeds(last_pass, GetCurrentTimestamp(), iwd_scheduler_interval_ms))
			{
				TimestampTz started = GetCurrentTimestamp();
				long		secs;
				int			usecs;

				if (!pass_more)
					last_pass = started;
				pass_more = RunTickBatch();
				if (pass_more)
				{
					TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
					wait_ms = (secs * 1000 + usecs / 1000) * (100 - iwd_pass_duty) / iwd_pass_duty;
				}
			}
			if (iwd_notify == IWD_NOTIFY_BATCH || iwd_vacuum_threshold > 0)
			{
				announced = AnnounceNewEvents(announced, iwd_notify == IWD_NOTIFY_BATCH);
				wait_ms = Min(wait_ms, iwd_notify_interval_ms);
			}
			if (vacuumed_at_event < 0)
				vacuumed_at_event = announced;
			if (iwd_vacuum_threshold > 0 && announced - vacuumed_at_event >= iwd_vacuum_threshold &&
				TimestampDifferenceExceeds(last_vacuum, GetCurrentTimestamp(), VACUUM_MIN_INTERVAL_MS))
			{
				bool		analyze = TimestampDifferenceExceeds(last_analyze, GetCurrentTimestamp(),
																 ANALYZE_MIN_INTERVAL_MS);

				VacuumTaskTable(analyze);
				last_vacuum = GetCurrentTimestamp();
				if (analyze)
					last_analyze = last_vacuum;
				vacuumed_at_event = announced;
			}
			DatamartTick(&datamart_minute, dbname);
			MemoryContextSwitchTo(old);
			MemoryContextReset(loop_cxt);
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
