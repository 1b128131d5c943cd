/*-------------------------------------------------------------------------
 * pool.h
 *	  The tenant registry in shared memory (pool.c), the launcher (launcher.c)
 *	  and the short-lived scheduler workers (scheduler.c) that serve every
 *	  database where iwd is installed from a bounded pool.
 *
 * One slot per tenant database. Sessions announce, at commit, that they
 * changed the tenant's tasks (something may fall due, events wait to be
 * announced); the slot's owner (the tenant's worker while one runs, else
 * the launcher) takes the announcements. A worker reports, as it exits, when
 * its tenant is next due; the launcher starts a worker then.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_POOL_H
#define IWD_POOL_H

#include "postgres.h"

#include "fmgr.h"
#include "port/atomics.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

/* a due time that never comes */
#define IWD_DUE_NONE PG_INT64_MAX
/* the scheduler pass's steps (iwd._next_due_steps(), the bits of iwd._tick_steps()) */
#define IWD_PASS_STEPS 5

typedef enum IwdTenantState
{
	TENANT_FREE = 0,			/* slot unused */
	TENANT_NEW,					/* announced (CREATE EXTENSION) or found: probe it now */
	TENANT_SERVED,				/* iwd is installed; a worker starts when it is due */
	TENANT_DROPPED				/* DROP EXTENSION committed: to be released */
} IwdTenantState;

/* What a worker reports as it exits (written by the worker, read by the launcher). */
typedef enum IwdWorkerReport
{
	REPORT_NONE = 0,			/* no report: the worker failed */
	REPORT_DONE,				/* report_next_due holds the tenant's next due time */
	REPORT_NOT_INSTALLED		/* the database has no iwd */
} IwdWorkerReport;

typedef struct IwdTenant
{
	pg_atomic_uint32 dboid;		/* InvalidOid: free */
	pg_atomic_uint32 state;		/* IwdTenantState */
	pg_atomic_uint64 announced; /* earliest due time announced and not yet taken */
	pg_atomic_uint64 wake_at;	/* when the owner looks next (writers wake it when sooner) */
	pg_atomic_uint32 owner_procno;	/* the process to wake: the worker, else the launcher */
	/* the tenant's worker (one at a time) keeps these across workers */
	int			report;
	TimestampTz report_next_due;
	TimestampTz report_pass_at; /* when its pass is due (a deadline): served first */
	bool		step_due_known; /* step_due holds a survey's reading */
	TimestampTz step_due[IWD_PASS_STEPS];	/* per step, server time */
	int64		announced_event;	/* last event id announced (-1: none yet) */
	int64		vacuumed_at_event;
	TimestampTz last_vacuum;
	TimestampTz last_analyze;
	TimestampTz last_expire;	/* the event feed's expiry (scheduler.c) */
	bool		expire_more;	/* it filled its batch: more is waiting */
	/* published by the launcher for iwd.worker_stats() */
	char		datname[NAMEDATALEN];
	TimestampTz next_due;
	int			worker_pid;
	int			datamart_pid;
	int64		starts;
	int64		failures;
} IwdTenant;

typedef struct IwdPool
{
	slock_t		mutex;			/* slot allocation */
	pg_atomic_uint32 launcher_procno;
	pg_atomic_uint32 rescan;	/* a CREATE EXTENSION found no free slot */
	int			max_databases;
	/* published by the launcher for iwd.worker_stats() */
	pg_atomic_uint32 waiting;	/* tenants due and waiting for a worker */
	pg_atomic_uint32 deadlines_waiting; /* those of them with a deadline due */
	int			running;
	int			datamart_running;
	int			databases;
	int			over_limit;
	int64		starts;
	int64		failures;
	int64		late_starts;	/* started more than IWD_LATE_START_MS after their due time */
	int64		max_start_delay_ms;
	IwdTenant	tenants[FLEXIBLE_ARRAY_MEMBER];
} IwdPool;

/* a worker that starts this long after its tenant fell due counts as late */
#define IWD_LATE_START_MS 1000
/*
 * With the pool short, the tenants due are served earliest deadline first;
 * an announcement (events to announce and publish, a survey of what sessions
 * wrote) ranks as a deadline this much later, so deadlines go first without
 * starving the announcements through which new deadlines become known.
 */
#define IWD_ANNOUNCEMENT_SLACK_MS 2000
/* when a tenant waits with a deadline due, a running worker makes way after this long */
#define IWD_DEADLINE_SLICE_MS 1000

/* GUCs (guc.c) */
extern int	iwd_max_workers;
extern int	iwd_dm_max_workers;
extern int	iwd_max_databases;
extern int	iwd_worker_idle_timeout_ms;

/* pool.c */
extern IwdPool *iwd_pool;
extern bool iwd_is_worker;
extern void PoolInit(void);
extern IwdTenant *PoolTenant(int index);
extern int	PoolAllocate(Oid dboid);
extern void PoolRelease(int index);
extern TimestampTz PoolTake(IwdTenant *tenant);
extern void PoolPublishWake(IwdTenant *tenant, TimestampTz *wake);
extern void PoolWake(IwdTenant *tenant);
extern bool PoolClockChanged(char **seen);

/* SQL: trigger iwd._tasks_changed() (BEFORE ... FOR EACH STATEMENT on iwd.task and iwd.task_event) */
extern PGDLLEXPORT Datum iwd_tasks_changed(PG_FUNCTION_ARGS);
/* SQL: iwd._serve_database() RETURNS void */
extern PGDLLEXPORT Datum iwd_serve_database(PG_FUNCTION_ARGS);
/* SQL: iwd.worker_stats() RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_worker_stats(PG_FUNCTION_ARGS);

#endif							/* IWD_POOL_H */
