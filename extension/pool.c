/*-------------------------------------------------------------------------
 * pool.c
 *	  The tenant registry in shared memory: one slot per database where iwd
 *	  is installed (at most iwd.max_databases), the announcements sessions
 *	  make at commit, and iwd.worker_stats().
 *
 * A session that writes iwd.task or iwd.task_event (a statement trigger)
 * announces at commit that its tenant is due within iwd.notify_interval:
 * its events wait to be announced, and what it wrote may fall due (a
 * reservation, a deferred task); the tenant's worker then reads the tenant's
 * next due time from the tables. The announcement is an atomic minimum in
 * the slot; the session wakes the slot's owner only when it is due sooner
 * than the owner means to look, so a stream of commits costs no wake-ups.
 * CREATE EXTENSION (the install script calls iwd._serve_database()) and
 * DROP EXTENSION announce themselves at commit too.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "iwd.h"
#include "pool.h"

IwdPool    *iwd_pool = NULL;
bool		iwd_is_worker = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static object_access_hook_type prev_object_access_hook = NULL;

/* what this transaction announces at commit */
typedef enum ExtensionChange
{
	EXTENSION_UNCHANGED,
	EXTENSION_CREATED,
	EXTENSION_DROPPED
} ExtensionChange;

static bool tasks_changed = false;
static ExtensionChange extension_change = EXTENSION_UNCHANGED;
static bool callback_registered = false;
/* the slot of this backend's database, remembered between commits */
static int	my_tenant = -1;

static Size
PoolSize(void)
{
	return add_size(offsetof(IwdPool, tenants), mul_size(sizeof(IwdTenant), iwd_max_databases));
}

/* Ask for the registry's shared memory. */
static void
pool_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(PoolSize());
}

/* Attach to (or create) the registry. */
static void
pool_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	iwd_pool = ShmemInitStruct("iwd tenant registry", PoolSize(), &found);
	if (!found)
	{
		memset(iwd_pool, 0, PoolSize());
		SpinLockInit(&iwd_pool->mutex);
		pg_atomic_init_u32(&iwd_pool->launcher_procno, INVALID_PGPROCNO);
		pg_atomic_init_u32(&iwd_pool->rescan, 0);
		pg_atomic_init_u32(&iwd_pool->waiting, 0);
		pg_atomic_init_u32(&iwd_pool->deadlines_waiting, 0);
		iwd_pool->max_databases = iwd_max_databases;
		for (int i = 0; i < iwd_max_databases; i++)
		{
			IwdTenant  *t = &iwd_pool->tenants[i];

			pg_atomic_init_u32(&t->dboid, InvalidOid);
			pg_atomic_init_u32(&t->state, TENANT_FREE);
			pg_atomic_init_u64(&t->announced, (uint64) IWD_DUE_NONE);
			pg_atomic_init_u64(&t->wake_at, (uint64) IWD_DUE_NONE);
			pg_atomic_init_u32(&t->owner_procno, INVALID_PGPROCNO);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

static void PoolObjectAccess(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg);

/* Install the shared memory and DROP hooks when preloaded. */
void
PoolInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pool_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pool_shmem_startup;
	prev_object_access_hook = object_access_hook;
	object_access_hook = PoolObjectAccess;
}

/* The slot at index. */
IwdTenant *
PoolTenant(int index)
{
	return &iwd_pool->tenants[index];
}

/* The slot of dboid; -1 when the database has none. */
static int
FindTenant(Oid dboid)
{
	if (my_tenant >= 0 && pg_atomic_read_u32(&iwd_pool->tenants[my_tenant].dboid) == dboid)
		return my_tenant;
	for (int i = 0; i < iwd_pool->max_databases; i++)
		if (pg_atomic_read_u32(&iwd_pool->tenants[i].dboid) == dboid)
		{
			if (dboid == MyDatabaseId)
				my_tenant = i;
			return i;
		}
	return -1;
}

/*
 * The slot of dboid in state TENANT_NEW, taking a free one when it has none;
 * -1 when every slot is taken.
 */
int
PoolAllocate(Oid dboid)
{
	int			index;

	SpinLockAcquire(&iwd_pool->mutex);
	index = FindTenant(dboid);
	for (int i = 0; i < iwd_pool->max_databases && index < 0; i++)
	{
		IwdTenant  *t = &iwd_pool->tenants[i];

		if (pg_atomic_read_u32(&t->dboid) != InvalidOid)
			continue;
		t->report = REPORT_NONE;
		t->report_next_due = IWD_DUE_NONE;
		t->report_pass_at = IWD_DUE_NONE;
		t->step_due_known = false;
		t->announced_event = -1;
		t->vacuumed_at_event = -1;
		t->last_vacuum = 0;
		t->last_analyze = 0;
		t->last_expire = 0;
		t->expire_more = false;
		t->datname[0] = '\0';
		t->next_due = IWD_DUE_NONE;
		t->worker_pid = 0;
		t->datamart_pid = 0;
		t->starts = 0;
		t->failures = 0;
		pg_atomic_write_u64(&t->announced, (uint64) IWD_DUE_NONE);
		pg_atomic_write_u64(&t->wake_at, (uint64) IWD_DUE_NONE);
		pg_atomic_write_u32(&t->owner_procno, INVALID_PGPROCNO);
		pg_atomic_write_u32(&t->dboid, dboid);
		index = i;
	}
	if (index >= 0)
		pg_atomic_write_u32(&iwd_pool->tenants[index].state, TENANT_NEW);
	SpinLockRelease(&iwd_pool->mutex);
	return index;
}

/* Free a slot (the launcher, once its workers have stopped). */
void
PoolRelease(int index)
{
	IwdTenant  *t = &iwd_pool->tenants[index];

	SpinLockAcquire(&iwd_pool->mutex);
	pg_atomic_write_u32(&t->state, TENANT_FREE);
	pg_atomic_write_u32(&t->dboid, InvalidOid);
	SpinLockRelease(&iwd_pool->mutex);
}

/* Take the announcements made since the last take: their earliest due time. */
TimestampTz
PoolTake(IwdTenant *tenant)
{
	return (TimestampTz) pg_atomic_exchange_u64(&tenant->announced, (uint64) IWD_DUE_NONE);
}

/*
 * The owner of a slot publishes when it looks next (*wake), folding in what
 * was announced meanwhile. A session lowers "announced" and then reads
 * wake_at; the owner writes wake_at and then reads "announced": with a
 * barrier on each side, an announcement sooner than *wake either wakes the
 * owner or is folded in here.
 */
void
PoolPublishWake(IwdTenant *tenant, TimestampTz *wake)
{
	for (;;)
	{
		TimestampTz announced = PoolTake(tenant);

		if (announced < *wake)
			*wake = announced;
		pg_atomic_write_u64(&tenant->wake_at, (uint64) *wake);
		pg_memory_barrier();
		if ((TimestampTz) pg_atomic_read_u64(&tenant->announced) == IWD_DUE_NONE)
			return;
	}
}

/* Wake the slot's owner: its worker while one runs, else the launcher. */
void
PoolWake(IwdTenant *tenant)
{
	uint32		procno = pg_atomic_read_u32(&tenant->owner_procno);

	if (procno == INVALID_PGPROCNO)
		procno = pg_atomic_read_u32(&iwd_pool->launcher_procno);
	if (procno != INVALID_PGPROCNO)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/*
 * Has the iwd clock (iwd.simulated_time) been set or changed since *seen,
 * this process's last reading (NULL: none yet)? Due times a survey read in
 * the iwd clock and turned into server time are then wrong by the jump.
 */
bool
PoolClockChanged(char **seen)
{
	const char *now = iwd_simulated_time != NULL ? iwd_simulated_time : "";
	bool		changed = *seen != NULL && strcmp(*seen, now) != 0;

	if (*seen == NULL || changed)
	{
		if (*seen != NULL)
			pfree(*seen);
		*seen = MemoryContextStrdup(TopMemoryContext, now);
	}
	return changed;
}

/* Wake the launcher. */
static void
WakeLauncher(void)
{
	uint32		procno = pg_atomic_read_u32(&iwd_pool->launcher_procno);

	if (procno != INVALID_PGPROCNO)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/* Announce that dboid's tenant is due at due (an atomic minimum); wake its owner if that is sooner. */
static void
AnnounceDue(Oid dboid, TimestampTz due)
{
	int			index = FindTenant(dboid);
	IwdTenant  *t;
	uint64		current;

	if (index < 0)
		return;
	t = &iwd_pool->tenants[index];
	current = pg_atomic_read_u64(&t->announced);
	while ((TimestampTz) current > due &&
		   !pg_atomic_compare_exchange_u64(&t->announced, &current, (uint64) due))
		;
	pg_memory_barrier();
	current = pg_atomic_read_u64(&t->wake_at);
	while ((TimestampTz) current > due)
		if (pg_atomic_compare_exchange_u64(&t->wake_at, &current, (uint64) due))
		{
			PoolWake(t);
			break;
		}
}

/* At commit: a created extension asks for a probe, a dropped one for its release. */
static void
AnnounceExtension(ExtensionChange change)
{
	int			index;

	if (change == EXTENSION_DROPPED)
	{
		index = FindTenant(MyDatabaseId);
		if (index >= 0)
			pg_atomic_write_u32(&iwd_pool->tenants[index].state, TENANT_DROPPED);
	}
	else if (PoolAllocate(MyDatabaseId) < 0)
		pg_atomic_write_u32(&iwd_pool->rescan, 1);	/* the launcher logs it as over the limit */
	WakeLauncher();
}

/* Announce this transaction's changes once it has committed (its rows are then visible). */
static void
PoolXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (extension_change != EXTENSION_UNCHANGED)
				AnnounceExtension(extension_change);
			if (tasks_changed)
				AnnounceDue(MyDatabaseId, GetCurrentTimestamp() + (TimestampTz) iwd_notify_interval_ms * 1000);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			tasks_changed = false;
			extension_change = EXTENSION_UNCHANGED;
			break;
		default:
			break;
	}
}

static void
RegisterCallbackOnce(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(PoolXactCallback, NULL);
		callback_registered = true;
	}
}

/*
 * DROP EXTENSION iwd is announced at commit; DROP DATABASE at once, so that
 * the launcher stops the database's worker while DROP DATABASE waits for the
 * sessions connected to it to leave (a database it fails to drop is found
 * again by the launcher's next scan).
 */
static void
PoolObjectAccess(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access != OAT_DROP || iwd_pool == NULL)
		return;
	if (classId == ExtensionRelationId)
	{
		char	   *name = get_extension_name(objectId);

		if (name != NULL && strcmp(name, "iwd") == 0)
		{
			extension_change = EXTENSION_DROPPED;
			RegisterCallbackOnce();
		}
	}
	else if (classId == DatabaseRelationId)
	{
		int			index = FindTenant(objectId);

		if (index >= 0)
		{
			pg_atomic_write_u32(&iwd_pool->tenants[index].state, TENANT_DROPPED);
			WakeLauncher();
		}
	}
}

PG_FUNCTION_INFO_V1(iwd_tasks_changed);

/*
 * Trigger iwd._tasks_changed(), BEFORE INSERT OR UPDATE ... FOR EACH
 * STATEMENT on iwd.task and iwd.task_event: this transaction changes the
 * tenant's tasks; announced at commit. iwd's own workers announce nothing:
 * they read what they wrote.
 */
Datum
iwd_tasks_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("iwd._tasks_changed() must be called as a trigger")));
	if (iwd_pool != NULL && !iwd_is_worker && !tasks_changed)
	{
		tasks_changed = true;
		RegisterCallbackOnce();
	}
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(iwd_serve_database);

/* SQL: iwd._serve_database(), from the install script: serve this database once CREATE EXTENSION commits. */
Datum
iwd_serve_database(PG_FUNCTION_ARGS)
{
	if (iwd_pool != NULL)
	{
		extension_change = EXTENSION_CREATED;
		RegisterCallbackOnce();
	}
	PG_RETURN_VOID();
}

static const char *const state_names[] = {"free", "new", "served", "dropped"};

/* Append "key": timestamp or null. */
static void
AppendTimestamp(StringInfo buf, const char *key, TimestampTz ts)
{
	appendStringInfo(buf, ", \"%s\": ", key);
	if (ts == 0 || ts == IWD_DUE_NONE)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, timestamptz_to_str(ts));
}

PG_FUNCTION_INFO_V1(iwd_worker_stats);

/* SQL: iwd.worker_stats() RETURNS jsonb: the pool and every tenant database of this server. */
Datum
iwd_worker_stats(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	IwdPool    *p = iwd_pool;
	bool		first = true;

	if (p == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("iwd's workers are not running"),
				 errdetail("iwd is not in shared_preload_libraries."),
				 errhint("Add iwd to shared_preload_libraries and restart the server.")));
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"maxWorkers\": %d, \"maxDatabases\": %d, \"datamartMaxWorkers\": %d, "
					 "\"databases\": %d, \"databasesOverLimit\": %d, \"running\": %d, \"waiting\": %u, "
					 "\"deadlinesWaiting\": %u, "
					 "\"datamartRunning\": %d, \"starts\": " INT64_FORMAT ", \"failures\": " INT64_FORMAT
					 ", \"lateStarts\": " INT64_FORMAT ", \"maxStartDelayMs\": " INT64_FORMAT ", \"tenants\": [",
					 iwd_max_workers, p->max_databases, iwd_dm_max_workers, p->databases, p->over_limit,
					 p->running, pg_atomic_read_u32(&p->waiting), pg_atomic_read_u32(&p->deadlines_waiting),
					 p->datamart_running, p->starts, p->failures,
					 p->late_starts, p->max_start_delay_ms);
	for (int i = 0; i < p->max_databases; i++)
	{
		IwdTenant  *t = &p->tenants[i];
		uint32		state = pg_atomic_read_u32(&t->state);
		char		datname[NAMEDATALEN];

		if (pg_atomic_read_u32(&t->dboid) == InvalidOid || state == TENANT_FREE || state >= lengthof(state_names))
			continue;
		strlcpy(datname, t->datname, NAMEDATALEN);
		appendStringInfoString(&buf, first ? "{\"database\": " : ", {\"database\": ");
		escape_json(&buf, datname);
		appendStringInfo(&buf, ", \"state\": \"%s\"", state_names[state]);
		AppendTimestamp(&buf, "nextDueAt", t->next_due);
		if (t->worker_pid > 0)
			appendStringInfo(&buf, ", \"workerPid\": %d", t->worker_pid);
		else
			appendStringInfoString(&buf, ", \"workerPid\": null");
		if (t->datamart_pid > 0)
			appendStringInfo(&buf, ", \"datamartPid\": %d", t->datamart_pid);
		else
			appendStringInfoString(&buf, ", \"datamartPid\": null");
		appendStringInfo(&buf, ", \"starts\": " INT64_FORMAT ", \"failures\": " INT64_FORMAT "}",
						 t->starts, t->failures);
		first = false;
	}
	appendStringInfoString(&buf, "]}");
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
