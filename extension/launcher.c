/*-------------------------------------------------------------------------
 * launcher.c
 *	  The "iwd scheduler launcher": finds every database where iwd is
 *	  installed and starts a short-lived worker for a tenant when something
 *	  of it is due, at most iwd.max_workers at once, earliest deadline first.
 *
 * It connects to no database and reads the shared catalog pg_database
 * every few seconds: a database it does not know gets a slot in the
 * registry (pool.c) and a first worker, which reports whether iwd is
 * installed there (and returns the reservations that timed out while no
 * scheduler ran). CREATE EXTENSION announces its database at commit, so a
 * new tenant is served at once. A worker reports, as it exits, when its
 * tenant is next due; sessions announce at commit what they wrote. An idle
 * tenant costs no process. iwd.databases, when set, limits the databases
 * served. The Data Mart schedule is checked here, once a minute, and each
 * tenant's chain runs in a worker of its own (at most iwd_dm.max_workers).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/varlena.h"

#include "datamart.h"
#include "iwd.h"
#include "launcher.h"
#include "pool.h"
#include "worker.h"

#define LAUNCHER_RESTART_SECONDS 10
/* pg_database is read this often (new databases, dropped ones) */
#define SCAN_INTERVAL_MS 10000
/* a worker that failed is started again after this long */
#define RETRY_MS 5000
/* a worker that could not get a background worker slot tries again after this long */
#define NO_SLOT_RETRY_MS 1000
/* warnings that could repeat every loop are logged at most this often */
#define WARNING_INTERVAL_MS 60000

/* The launcher's own view of a slot (same index as the registry's). */
typedef struct TenantWork
{
	Oid			dboid;			/* InvalidOid: not tracked */
	TimestampTz next_due;		/* when anything is due: a deadline or an announcement */
	TimestampTz pass_due;		/* when its pass is due (a deadline; never before next_due) */
	TimestampTz started_due;	/* the due time the running worker was started for */
	BackgroundWorkerHandle *worker;
	BackgroundWorkerHandle *datamart;
	bool		adopted;		/* a worker of a previous launcher runs (no handle) */
	bool		releasing;		/* to be freed once its workers have stopped */
	bool		datamart_pending;
	bool		seen;			/* found by the last scan of pg_database */
} TenantWork;

typedef struct DatabaseEntry
{
	Oid			dboid;
	bool		logged;
} DatabaseEntry;

static TenantWork *work;
static int	nslots;
static HTAB *not_installed;		/* databases a worker found without iwd */
static HTAB *over_limit;		/* databases with iwd that found no free slot */
static TimestampTz last_scan = 0;
static TimestampTz last_no_slot_warning = 0;
static TimestampTz last_no_workers_warning = 0;
static int64 datamart_minute = -1;
static int	datamart_next = 0;	/* round robin start of the chains' queue */
static char *clock_seen = NULL; /* iwd.simulated_time as last read (PoolClockChanged) */

/* Register the launcher; without preloading there is no scheduler (iwd.tick() still works). */
void
LauncherInit(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		return;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = LAUNCHER_RESTART_SECONDS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "iwd");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "iwd_scheduler_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "iwd scheduler launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "iwd scheduler launcher");
	RegisterBackgroundWorker(&worker);
}

static bool
WorkerRunning(BackgroundWorkerHandle *handle, pid_t *pid)
{
	return handle != NULL && GetBackgroundWorkerPid(handle, pid) != BGWH_STOPPED;
}

/* Does the non-empty iwd.databases name this database? (names: the parsed list; NIL: every database) */
static bool
InFilter(List *names, const char *datname)
{
	ListCell   *lc;

	if (names == NIL)
		return true;
	foreach(lc, names)
		if (strcmp((const char *) lfirst(lc), datname) == 0)
			return true;
	return false;
}

/* iwd.databases as a list of names; NIL when empty (or, logged, malformed). */
static List *
FilterNames(void)
{
	List	   *names = NIL;

	if (!SplitIdentifierString(pstrdup(iwd_databases ? iwd_databases : ""), ',', &names))
	{
		ereport(WARNING, (errmsg("iwd scheduler: iwd.databases is not a valid list of names; every database is served")));
		return NIL;
	}
	return names;
}

/* Start tracking slot index for dboid. */
static void
Track(int index, Oid dboid)
{
	TenantWork *w = &work[index];

	memset(w, 0, sizeof(*w));
	w->dboid = dboid;
	/* a first worker returns the reservations that timed out while no scheduler ran: a deadline */
	w->next_due = GetCurrentTimestamp();
	w->pass_due = w->next_due;
	w->seen = true;
}

/* Stop serving a slot: its workers are stopped, the slot freed once they are gone. */
static void
Release(int index)
{
	TenantWork *w = &work[index];
	pid_t		pid;

	if (w->dboid == InvalidOid)
		return;
	w->releasing = true;
	if (WorkerRunning(w->worker, &pid))
		TerminateBackgroundWorker(w->worker);
	if (WorkerRunning(w->datamart, &pid))
		TerminateBackgroundWorker(w->datamart);
	if (w->worker == NULL && w->datamart == NULL && !w->adopted)
	{
		memset(w, 0, sizeof(*w));
		PoolRelease(index);
	}
}

/* Log, once per database, that one more tenant found no free slot. */
static void
OverLimit(Oid dboid, const char *datname)
{
	bool		found;
	DatabaseEntry *e = hash_search(over_limit, &dboid, HASH_ENTER, &found);

	if (!found)
		ereport(WARNING,
				(errmsg("iwd scheduler: database \"%s\" is not served: iwd.max_databases (%d) databases are served already",
						datname, nslots),
				 errhint("Raise iwd.max_databases (a restart) or move tenant databases to another server.")));
	e->logged = true;
}

/*
 * Read pg_database (a shared catalog, readable without a database): track
 * the databases to serve, probe the ones not known yet, release the ones
 * dropped or no longer in iwd.databases.
 */
static void
ScanDatabases(void)
{
	List	   *names = FilterNames();
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	HASH_SEQ_STATUS seq;
	DatabaseEntry *e;
	int			over = 0;

	for (int i = 0; i < nslots; i++)
		work[i].seen = false;
	hash_seq_init(&seq, over_limit);
	while ((e = hash_seq_search(&seq)) != NULL)
		e->logged = false;
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		const char *datname = NameStr(db->datname);
		int			index;

		if (db->datistemplate || !db->datallowconn || database_is_invalid_form(db))
			continue;
		index = -1;
		for (int i = 0; i < nslots && index < 0; i++)
			if (pg_atomic_read_u32(&PoolTenant(i)->dboid) == db->oid)
				index = i;
		if (!InFilter(names, datname))
		{
			if (index >= 0)
			{
				if (work[index].dboid != db->oid)
					Track(index, db->oid);
				Release(index);
			}
			continue;
		}
		if (index < 0)
		{
			if (hash_search(not_installed, &db->oid, HASH_FIND, NULL) != NULL)
				continue;
			index = PoolAllocate(db->oid);
			if (index < 0)
			{
				OverLimit(db->oid, datname);
				over++;
				continue;
			}
		}
		if (work[index].dboid != db->oid)
			Track(index, db->oid);
		work[index].seen = true;
		strlcpy(PoolTenant(index)->datname, datname, NAMEDATALEN);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	/* forget the databases dropped since */
	hash_seq_init(&seq, over_limit);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (!e->logged)
			hash_search(over_limit, &e->dboid, HASH_REMOVE, NULL);
	iwd_pool->over_limit = over;
	/* slots of databases gone (or announced by a database dropped since) */
	for (int i = 0; i < nslots; i++)
	{
		Oid			dboid = pg_atomic_read_u32(&PoolTenant(i)->dboid);

		if (dboid == InvalidOid || work[i].seen)
			continue;
		if (work[i].dboid != dboid)
			Track(i, dboid);
		Release(i);
	}
	last_scan = GetCurrentTimestamp();
}

/*
 * Does a slot need the scan first? One announced by CREATE EXTENSION in a
 * database the launcher has not met yet (its name is unknown), or a CREATE
 * EXTENSION that found every slot taken.
 */
static bool
NeedScan(void)
{
	if (pg_atomic_exchange_u32(&iwd_pool->rescan, 0) != 0)
	{
		HASH_SEQ_STATUS seq;
		DatabaseEntry *e;

		/* which database it was is not known: probe again every one without iwd */
		hash_seq_init(&seq, not_installed);
		while ((e = hash_seq_search(&seq)) != NULL)
			hash_search(not_installed, &e->dboid, HASH_REMOVE, NULL);
		return true;
	}
	for (int i = 0; i < nslots; i++)
	{
		Oid			dboid = pg_atomic_read_u32(&PoolTenant(i)->dboid);

		if (dboid != InvalidOid && work[i].dboid != dboid)
			return true;
	}
	return false;
}

/* Record the end of a slot's scheduler worker: its report decides when the tenant is due next. */
static void
WorkerEnded(int index, TimestampTz now)
{
	TenantWork *w = &work[index];
	IwdTenant  *t = PoolTenant(index);
	TimestampTz announced = PoolTake(t);

	if (w->worker != NULL)
		pfree(w->worker);
	w->worker = NULL;
	w->adopted = false;
	t->worker_pid = 0;
	if (pg_atomic_read_u32(&t->state) == TENANT_NEW)
	{
		/* CREATE EXTENSION committed meanwhile */
		w->next_due = now;
		w->pass_due = now;
	}
	else if (t->report == REPORT_DONE)
	{
		w->pass_due = t->report_pass_at;
		w->next_due = Min(Min(t->report_next_due, announced), w->pass_due);
	}
	else if (t->report == REPORT_NOT_INSTALLED)
	{
		Oid			dboid = w->dboid;

		(void) hash_search(not_installed, &dboid, HASH_ENTER, NULL);
		Release(index);
	}
	else
	{
		t->failures++;
		iwd_pool->failures++;
		w->next_due = now + (TimestampTz) RETRY_MS * 1000;
		w->pass_due = w->next_due;
	}
}

/*
 * The iwd clock was set or changed (iwd.simulated_time): every tenant
 * without a worker is due for a survey now, its due times being known in
 * the old clock (a running worker surveys again by itself).
 */
static void
ClockChanged(TimestampTz now)
{
	for (int i = 0; i < nslots; i++)
	{
		TenantWork *w = &work[i];

		if (w->dboid != InvalidOid && !w->releasing && w->worker == NULL && !w->adopted)
			w->next_due = Min(w->next_due, now);
	}
}

/* Look at every tracked slot's workers; free the slots released whose workers have stopped. */
static void
ReapWorkers(TimestampTz now)
{
	for (int i = 0; i < nslots; i++)
	{
		TenantWork *w = &work[i];
		IwdTenant  *t = PoolTenant(i);
		pid_t		pid = 0;

		if (w->dboid == InvalidOid)
			continue;
		if (w->worker != NULL)
		{
			if (GetBackgroundWorkerPid(w->worker, &pid) == BGWH_STOPPED)
				WorkerEnded(i, now);
			else
				t->worker_pid = pid;
		}
		else if (w->adopted && pg_atomic_read_u32(&t->owner_procno) == INVALID_PGPROCNO)
			WorkerEnded(i, now);
		if (w->datamart != NULL)
		{
			if (GetBackgroundWorkerPid(w->datamart, &pid) == BGWH_STOPPED)
			{
				pfree(w->datamart);
				w->datamart = NULL;
				t->datamart_pid = 0;
			}
			else
				t->datamart_pid = pid;
		}
		if (w->releasing && w->worker == NULL && !w->adopted && w->datamart == NULL)
		{
			memset(w, 0, sizeof(*w));
			PoolRelease(i);
		}
	}
}

/* Fold the announcements of the slots without a worker into their due times. */
static void
FoldAnnouncements(TimestampTz now)
{
	for (int i = 0; i < nslots; i++)
	{
		TenantWork *w = &work[i];
		IwdTenant  *t = PoolTenant(i);
		uint32		state = pg_atomic_read_u32(&t->state);

		if (w->dboid == InvalidOid || w->releasing)
			continue;
		if (state == TENANT_DROPPED)
		{
			Oid			dboid = w->dboid;

			/* DROP EXTENSION: not probed again until a CREATE EXTENSION announces it */
			(void) hash_search(not_installed, &dboid, HASH_ENTER, NULL);
			Release(i);
			continue;
		}
		if (w->worker != NULL || w->adopted)
			continue;
		if (state == TENANT_NEW)
		{
			Oid			dboid = w->dboid;

			(void) hash_search(not_installed, &dboid, HASH_REMOVE, NULL);
			w->next_due = Min(w->next_due, now);
			w->pass_due = Min(w->pass_due, now);
		}
		PoolPublishWake(t, &w->next_due);
		t->next_due = w->next_due;
	}
}

/* Start a dynamic worker of iwd for slot index: function(index), in the slot's database. */
static bool
StartWorker(int index, const char *function, const char *type, BackgroundWorkerHandle **handle)
{
	IwdTenant  *t = PoolTenant(index);
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	bool		started = IwdStartDatabaseWorker(function, type, index, work[index].dboid, t->datname, handle);

	MemoryContextSwitchTo(old);
	if (!started)
	{
		*handle = NULL;
		if (TimestampDifferenceExceeds(last_no_slot_warning, GetCurrentTimestamp(), WARNING_INTERVAL_MS))
		{
			ereport(WARNING,
					(errmsg("iwd scheduler: no background worker slot for database \"%s\"", t->datname),
					 errhint("Raise max_worker_processes above 1 + iwd.max_workers + iwd_dm.max_workers "
							 "(and what else uses background workers).")));
			last_no_slot_warning = GetCurrentTimestamp();
		}
	}
	return started;
}

/*
 * A tenant's rank among those due: its deadline, or its announcement
 * IWD_ANNOUNCEMENT_SLACK_MS later when that is sooner (pool.h).
 */
static TimestampTz
Rank(const TenantWork *w)
{
	return Min(w->pass_due, w->next_due + (TimestampTz) IWD_ANNOUNCEMENT_SLACK_MS * 1000);
}

static int
CompareRank(const void *a, const void *b)
{
	TimestampTz ra = Rank(&work[*(const int *) a]);
	TimestampTz rb = Rank(&work[*(const int *) b]);

	return ra < rb ? -1 : ra > rb ? 1 : 0;
}

/*
 * Start a worker for the tenants due, earliest deadline first (Rank), up to
 * iwd.max_workers running; publish how many wait, and how many of them with
 * a deadline due (the running workers make way for those after a slice).
 */
static void
StartDueWorkers(TimestampTz now)
{
	int		   *due = palloc(sizeof(int) * nslots);
	int			ndue = 0;
	int			running = 0;
	int			started = 0;
	int			deadlines = 0;

	for (int i = 0; i < nslots; i++)
	{
		TenantWork *w = &work[i];

		if (w->dboid == InvalidOid || w->releasing)
			continue;
		if (w->worker != NULL || w->adopted)
			running++;
		else if (w->next_due <= now)
			due[ndue++] = i;
	}
	qsort(due, ndue, sizeof(int), CompareRank);
	for (int k = 0; k < ndue && running < iwd_max_workers; k++)
	{
		int			i = due[k];
		TenantWork *w = &work[i];
		IwdTenant  *t = PoolTenant(i);
		int64		delay_ms = (now - w->next_due) / 1000;

		/* a first worker (a probe) has no deadline: its wait is not a late start */
		bool		probe = pg_atomic_read_u32(&t->state) == TENANT_NEW;

		t->report = REPORT_NONE;
		pg_atomic_write_u32(&t->state, TENANT_SERVED);
		/* everything committed before this point is in the worker's snapshot */
		(void) PoolTake(t);
		pg_atomic_write_u64(&t->wake_at, (uint64) IWD_DUE_NONE);
		if (!StartWorker(i, "iwd_scheduler_database_main", "iwd scheduler", &w->worker))
		{
			w->next_due = now + (TimestampTz) NO_SLOT_RETRY_MS * 1000;
			break;
		}
		w->started_due = w->next_due;
		t->starts++;
		iwd_pool->starts++;
		if (!probe && delay_ms > IWD_LATE_START_MS)
			iwd_pool->late_starts++;
		if (!probe)
			iwd_pool->max_start_delay_ms = Max(iwd_pool->max_start_delay_ms, delay_ms);
		running++;
		started++;
	}
	for (int k = started; k < ndue; k++)
		if (work[due[k]].pass_due <= now)
			deadlines++;
	pg_atomic_write_u32(&iwd_pool->waiting, ndue - started);
	pg_atomic_write_u32(&iwd_pool->deadlines_waiting, deadlines);
	iwd_pool->running = running;
	if (ndue > started)
	{
		/* the workers that linger without work due make way (scheduler.c) */
		for (int i = 0; i < nslots; i++)
			if (work[i].dboid != InvalidOid && (work[i].worker != NULL || work[i].adopted))
				PoolWake(PoolTenant(i));
		if (iwd_max_workers == 0 &&
			TimestampDifferenceExceeds(last_no_workers_warning, now, WARNING_INTERVAL_MS))
		{
			ereport(WARNING,
					(errmsg("iwd scheduler: iwd.max_workers is 0; %d tenant databases wait for a worker",
							ndue - started)));
			last_no_workers_warning = now;
		}
	}
	pfree(due);
}

/*
 * The Data Mart schedule, once a minute: a tenant whose chain is still
 * running skips this run (logged); the others queue for a chain worker, at
 * most iwd_dm.max_workers at once, in turn.
 */
static void
StartDatamartChains(TimestampTz now)
{
	int64		minute = now / USECS_PER_MINUTE;
	int			running = 0;
	pid_t		pid;

	if (minute != datamart_minute)
	{
		datamart_minute = minute;
		if (DatamartScheduled(now))
			for (int i = 0; i < nslots; i++)
			{
				TenantWork *w = &work[i];

				if (w->dboid == InvalidOid || w->releasing)
					continue;
				if (w->datamart_pending || WorkerRunning(w->datamart, &pid))
					ereport(LOG,
							(errmsg("iwd Data Mart chain of database \"%s\" is still running; this scheduled run is skipped",
									PoolTenant(i)->datname)));
				else
					w->datamart_pending = true;
			}
	}
	for (int i = 0; i < nslots; i++)
		if (work[i].datamart != NULL)
			running++;
	for (int k = 0; k < nslots && running < iwd_dm_max_workers; k++)
	{
		int			i = (datamart_next + k) % nslots;
		TenantWork *w = &work[i];

		if (w->dboid == InvalidOid || w->releasing || !w->datamart_pending ||
			pg_atomic_read_u32(&PoolTenant(i)->state) != TENANT_SERVED)
			continue;
		if (!StartWorker(i, "iwd_datamart_main", "iwd datamart", &w->datamart))
			break;
		w->datamart_pending = false;
		datamart_next = (i + 1) % nslots;
		running++;
	}
	iwd_pool->datamart_running = running;
}

/* How long the launcher may sleep: until the next due tenant, the next scan or the next minute. */
static long
SleepMs(TimestampTz now)
{
	TimestampTz wake = last_scan + (TimestampTz) SCAN_INTERVAL_MS * 1000;
	int			databases = 0;

	bool		pool_full = iwd_pool->running >= iwd_max_workers;

	for (int i = 0; i < nslots; i++)
	{
		TenantWork *w = &work[i];

		if (w->dboid == InvalidOid || w->releasing)
			continue;
		databases++;

		/*
		 * With every worker busy, the next one to exit wakes the launcher
		 * (bgw_notify_pid) for the tenants due already; one falling due later
		 * wakes it then all the same, to be counted as waiting: the running
		 * workers make way only for the tenants counted (scheduler.c).
		 */
		if (w->worker == NULL && !w->adopted && (!pool_full || w->next_due > now))
			wake = Min(wake, w->next_due);
		if (w->datamart_pending)
			wake = Min(wake, now + (TimestampTz) NO_SLOT_RETRY_MS * 1000);
	}
	iwd_pool->databases = databases;
	wake = Min(wake, (now / USECS_PER_MINUTE + 1) * USECS_PER_MINUTE);
	return wake <= now ? 0 : (long) ((wake - now + 999) / 1000);
}

/* A previous launcher's workers may still run: wait for them rather than start a second one. */
static void
AdoptWorkers(void)
{
	for (int i = 0; i < nslots; i++)
	{
		IwdTenant  *t = PoolTenant(i);
		Oid			dboid = pg_atomic_read_u32(&t->dboid);

		if (dboid == InvalidOid)
			continue;
		Track(i, dboid);
		work[i].adopted = pg_atomic_read_u32(&t->owner_procno) != INVALID_PGPROCNO;
	}
}

/* The launcher's loop. */
void
iwd_scheduler_launcher_main(Datum main_arg)
{
	HASHCTL		ctl;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	nslots = iwd_pool->max_databases;
	work = MemoryContextAllocZero(TopMemoryContext, sizeof(TenantWork) * nslots);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(DatabaseEntry);
	not_installed = hash_create("iwd databases without iwd", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	over_limit = hash_create("iwd databases over the limit", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "iwd launcher loop", ALLOCSET_DEFAULT_SIZES);
	AdoptWorkers();
	(void) PoolClockChanged(&clock_seen);
	pg_atomic_write_u32(&iwd_pool->launcher_procno, MyProc->pgprocno);

	for (;;)
	{
		TimestampTz now;
		MemoryContext old;
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(loop_cxt);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* a changed iwd.databases is followed at once */
			last_scan = 0;
			if (PoolClockChanged(&clock_seen))
				ClockChanged(GetCurrentTimestamp());
		}
		if (NeedScan() ||
			TimestampDifferenceExceeds(last_scan, GetCurrentTimestamp(), SCAN_INTERVAL_MS))
			ScanDatabases();
		now = GetCurrentTimestamp();
		ReapWorkers(now);
		FoldAnnouncements(now);
		StartDueWorkers(now);
		StartDatamartChains(now);
		sleep_ms = SleepMs(GetCurrentTimestamp());
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_cxt);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
