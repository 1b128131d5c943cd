/*-------------------------------------------------------------------------
 * scheduler.c
 *	  The "iwd scheduler" background workers.
 *
 * A tenant's worker is started by the launcher (launcher.c) when something
 * of its tenant is due, and exits when nothing is due for a while. It runs
 * the scheduler pass: activation of deferred tasks, expiry, overdue flags,
 * reprioritization and reservation timeouts, each in small batches committed
 * separately so that no lock is held for long. The launcher runs only on a
 * primary (on a standby, after promotion), and the first worker of each
 * tenant returns the reservations that timed out while no scheduler ran. In
 * iwd.notify = batch mode (the default) the worker also announces new task
 * events iwd.notify_interval after they are written, and it vacuums
 * iwd.task after every iwd.vacuum_threshold events. On the same surveys it
 * publishes the tenant's task events to the event feed and the webhooks
 * (sql/events.sql), which a sidecar does sooner when one runs. How a worker is
 * started, connects and runs its transactions: worker.c.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
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
#include "catalog/pg_type.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/varlena.h"

#include "iwd.h"
#include "pool.h"
#include "scheduler.h"
#include "worker.h"

#define VACUUM_MIN_INTERVAL_MS 1000
#define PASS_ALL_STEPS ((1 << IWD_PASS_STEPS) - 1)
/*
 * What the event feed no longer keeps (iwd.event_retention, 7 days unless
 * set) is deleted at most this often per tenant (or every retention period
 * when that is shorter), unless a deletion filled its batch: planning it in
 * every short-lived worker cost as much as the publication itself.
 */
#define EXPIRE_INTERVAL_MS 60000
/* the vacuum of iwd.task refreshes its statistics at most this often */
#define ANALYZE_MIN_INTERVAL_MS 60000

/*
 * Is iwd installed in this database, at this library's release? (inside a
 * transaction, SPI connected; a database still at an earlier release is left
 * alone until it is updated: IwdWorkerExtensionCurrent)
 */
static bool
IwdInstalled(void)
{
	return IwdWorkerExtensionCurrent();
}

/*
 * Run one batch of the scheduler steps in "steps" (iwd._tick_steps' bits) in
 * its own transaction; returns whether a step filled its batch (more work is
 * waiting). Does nothing when iwd is not installed in this database.
 */
static bool
RunTickBatch(int steps)
{
	bool		more = false;
	IwdWorkerTransaction xact;

	IwdWorkerStartTransaction(&xact, iwd_worker_statement_timeout_ms, iwd_worker_lock_timeout_ms);
	pgstat_report_activity(STATE_RUNNING, "iwd scheduler pass");
	if (IwdInstalled())
	{
		bool		isnull;

		IwdWorkerRequireRole(&xact);
		if (SPI_execute(psprintf("SELECT (iwd._tick_steps(iwd.now(), current_setting('iwd.batch_size')::int, %d)"
								 " ->> 'more')::boolean", steps), false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "iwd scheduler: the scheduler pass failed");
		more = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	IwdWorkerCommitTransaction(&xact);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return more;
}

/* How often the event feed's expiry runs: EXPIRE_INTERVAL_MS, or iwd.event_retention when shorter. */
static int64
ExpireIntervalMs(void)
{
	const char *retention = GetConfigOption("iwd.event_retention", true, false);
	Interval   *span;
	int64		ms;

	if (retention == NULL)
		return EXPIRE_INTERVAL_MS;
	span = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(retention),
												 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	ms = (span->time + (span->day + (int64) span->month * DAYS_PER_MONTH) * USECS_PER_DAY) / 1000;
	return Max(Min(ms, EXPIRE_INTERVAL_MS), 0);
}

/* What a worker reads of its tenant after its work: see SurveyTenant. */
typedef struct TenantSurvey
{
	bool		installed;
	bool		events_waiting; /* the publication left events (a full batch, or a sidecar publishes) */
	int64		last_event;
	TimestampTz next_due;		/* server time (IWD_DUE_NONE: nothing due) */
	TimestampTz step_due[IWD_PASS_STEPS];	/* the same per scheduler step */
} TenantSurvey;

/* Read iwd._next_due_steps() (the iwd clock) into the survey's due times (server time). */
static void
ReadStepDue(Datum steps, TenantSurvey *survey)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	TimestampTz offset = GetCurrentTimestamp() - IwdNow();

	deconstruct_array(DatumGetArrayTypeP(steps), TIMESTAMPTZOID, sizeof(TimestampTz), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &elems, &nulls, &n);
	if (n != IWD_PASS_STEPS)
		elog(ERROR, "iwd scheduler: iwd._next_due_steps() returned %d due times, not %d", n, IWD_PASS_STEPS);
	for (int i = 0; i < IWD_PASS_STEPS; i++)
	{
		survey->step_due[i] = nulls[i] ? IWD_DUE_NONE : DatumGetTimestampTz(elems[i]) + offset;
		survey->next_due = Min(survey->next_due, survey->step_due[i]);
	}
}

/*
 * Publish the tenant's committed task events (iwd.publish_events: the event
 * feed and the webhooks' deliveries) and, every EXPIRE_INTERVAL_MS, delete
 * one batch of what the feed no longer keeps (iwd._expire_events), so that
 * events go out with no sidecar running (when a sidecar is publishing,
 * iwd.publish_events returns at once); then read whether iwd is installed, the last event id and when
 * each scheduler step is next due (iwd._next_due_steps(), in the iwd clock,
 * turned into server time). One transaction for both: a worker started for
 * one task's events runs no other. In
 * batch mode of iwd.notify, announce the events written since the last
 * announcement with one NOTIFY iwd_task_event "events:<first id>:<last id>".
 * Announcing from here rather than from each writing transaction matters:
 * PostgreSQL serializes the commits of notifying transactions. The first
 * survey after the server's start only takes the current position.
 */
static void
SurveyTenant(IwdTenant *tenant, TenantSurvey *survey)
{
	IwdWorkerTransaction xact;

	IwdWorkerStartTransaction(&xact, iwd_worker_statement_timeout_ms, iwd_worker_lock_timeout_ms);
	pgstat_report_activity(STATE_RUNNING, "iwd scheduler: event publication, announcements, next due time");
	survey->installed = IwdInstalled();
	survey->events_waiting = false;
	survey->last_event = tenant->announced_event;
	survey->next_due = IWD_DUE_NONE;
	for (int i = 0; i < IWD_PASS_STEPS; i++)
		survey->step_due[i] = IWD_DUE_NONE;
	if (survey->installed)
	{
		bool		isnull;
		bool		expire = tenant->expire_more ||
			TimestampDifferenceExceeds(tenant->last_expire, GetCurrentTimestamp(), (int) ExpireIntervalMs());

		IwdWorkerRequireRole(&xact);
		if (SPI_execute(psprintf("SELECT iwd.publish_events(%d), %s",
								 iwd_batch_size, expire ? psprintf("iwd._expire_events(%d)", iwd_batch_size) :
								 "0::bigint"), false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "iwd scheduler: the event publication failed");
		if (expire)
		{
			tenant->last_expire = GetCurrentTimestamp();
			tenant->expire_more = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
															  &isnull)) >= iwd_batch_size;
		}
		/*
		 * A statement of its own, after the publication: in the same one, the
		 * outbox would be read in the snapshot from before the publication
		 * emptied it, and every publication would be followed by another.
		 */
		if (SPI_execute("SELECT coalesce(max(id), 0), iwd._next_due_steps(), EXISTS (SELECT FROM iwd.event_outbox)"
						" FROM iwd.task_event", false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "iwd scheduler: reading the next due time failed");
		survey->last_event = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		ReadStepDue(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull), survey);
		survey->events_waiting = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3,
															&isnull));
		memcpy(tenant->step_due, survey->step_due, sizeof(tenant->step_due));
		tenant->step_due_known = true;
		if (iwd_notify == IWD_NOTIFY_BATCH && tenant->announced_event >= 0 &&
			survey->last_event > tenant->announced_event)
			Async_Notify("iwd_task_event", psprintf("events:" INT64_FORMAT ":" INT64_FORMAT,
													tenant->announced_event + 1, survey->last_event));
	}
	IwdWorkerCommitTransaction(&xact);
	pgstat_report_activity(STATE_IDLE, NULL);
	tenant->announced_event = survey->last_event;
}

/*
 * Vacuum iwd.task and the event outbox. Every claim leaves a dead entry at
 * the head of the queue index (the claimed row version), and every later
 * claim walks over those entries until VACUUM removes them: left to
 * autovacuum, which visits a
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
 * it evaluates are C functions of iwd. The outbox (iwd.event_outbox) takes
 * a row per event and its publication deletes it: until a vacuum records the
 * freed space, new rows go to new pages, and every publication reads the
 * growing table (it has no index to read instead), so it is vacuumed along.
 */
static void
VacuumHotTables(bool analyze)
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
	stmt->rels = list_make2(makeVacuumRelation(makeRangeVar("iwd", "task", -1), InvalidOid, NIL),
							makeVacuumRelation(makeRangeVar("iwd", "event_outbox", -1), InvalidOid, NIL));
	stmt->is_vacuumcmd = true;
	PortalContext = portal_cxt;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "iwd scheduler: vacuum iwd.task and iwd.event_outbox");
	ExecVacuum(make_parsestate(NULL), stmt, true);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	PortalContext = old_portal;
	MemoryContextSwitchTo(old);
	MemoryContextDelete(portal_cxt);
}

/*
 * Vacuum iwd.task and the outbox once iwd.vacuum_threshold events were
 * written since the last vacuum, at most once a second (the position lives
 * in the tenant's slot, across workers); returns when to look again,
 * IWD_DUE_NONE when the events do not call for a vacuum.
 */
static TimestampTz
VacuumWhenDue(IwdTenant *tenant, int64 last_event)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		analyze;

	if (tenant->vacuumed_at_event < 0)
		tenant->vacuumed_at_event = last_event;
	if (iwd_vacuum_threshold <= 0 || last_event - tenant->vacuumed_at_event < iwd_vacuum_threshold)
		return IWD_DUE_NONE;
	if (!TimestampDifferenceExceeds(tenant->last_vacuum, now, VACUUM_MIN_INTERVAL_MS))
		return tenant->last_vacuum + (TimestampTz) VACUUM_MIN_INTERVAL_MS * 1000;
	analyze = TimestampDifferenceExceeds(tenant->last_analyze, now, ANALYZE_MIN_INTERVAL_MS);
	VacuumHotTables(analyze);
	tenant->last_vacuum = GetCurrentTimestamp();
	if (analyze)
		tenant->last_analyze = tenant->last_vacuum;
	tenant->vacuumed_at_event = last_event;
	return IWD_DUE_NONE;
}

/* On any exit: the tenant's announcements wake the launcher again. */
static void
Disown(int code, Datum arg)
{
	IwdTenant  *tenant = (IwdTenant *) DatumGetPointer(arg);

	pg_atomic_write_u32(&tenant->owner_procno, INVALID_PGPROCNO);
}

/*
 * Leave, reporting when the tenant is next due (with what was announced
 * since the last look: announcements made after the take below stay in the
 * slot for the launcher) and when its pass is (the deadlines: reservation
 * timeouts, activations, expiries, overdue flags, reprioritization), which
 * the launcher serves before announcements.
 */
static void
pg_attribute_noreturn()
WorkerExit(IwdTenant *tenant, IwdWorkerReport report, TimestampTz pass_at, TimestampTz next_due)
{
	TimestampTz announced;

	pg_atomic_write_u32(&tenant->owner_procno, INVALID_PGPROCNO);
	pg_memory_barrier();
	announced = PoolTake(tenant);
	tenant->report_next_due = Min(next_due, announced);
	tenant->report_pass_at = pass_at;
	pg_write_barrier();
	tenant->report = report;
	proc_exit(0);
}

/* The scheduler steps due at "now" by the tenant's last survey (iwd._tick_steps' bits); all when none is. */
static int
StepsDue(IwdTenant *tenant, TimestampTz now)
{
	int			steps = 0;

	for (int i = 0; i < IWD_PASS_STEPS; i++)
		if (tenant->step_due[i] <= now)
			steps |= 1 << i;
	return steps != 0 ? steps : PASS_ALL_STEPS;
}

/* The earliest of the tenant's step due times read by the last survey (kept in its slot across workers). */
static TimestampTz
KnownPassDue(IwdTenant *tenant)
{
	TimestampTz due = IWD_DUE_NONE;

	if (!tenant->step_due_known)
		return IWD_DUE_NONE;
	for (int i = 0; i < IWD_PASS_STEPS; i++)
		due = Min(due, tenant->step_due[i]);
	return due;
}

/*
 * A tenant's worker ("iwd scheduler <database>"), started by the launcher
 * when something of the tenant is due: it runs the scheduler steps due (at
 * most every iwd.scheduler_interval), announces the events sessions write,
 * vacuums iwd.task, and stays while work falls due or sessions write within
 * iwd.worker_idle_timeout; then it reports the tenant's next due time and
 * exits. It makes way sooner when other tenants wait for a worker: once it
 * has nothing due now, or has run longer than iwd.worker_idle_timeout, or,
 * when a tenant waits with a deadline due, a slice of IWD_DEADLINE_SLICE_MS
 * (a long pass resumes in a worker started after the deadline's).
 */
void
iwd_scheduler_database_main(Datum main_arg)
{
	IwdTenant  *tenant = PoolTenant(DatumGetInt32(main_arg));
	MemoryContext loop_cxt;
	TimestampTz started;
	TimestampTz last_activity;
	TimestampTz last_pass = 0;
	/*
	 * A worker started for a deadline the last survey found runs its steps
	 * at once, then surveys; a worker started to announce events (nothing of
	 * the pass due yet) or the tenant's first one surveys first.
	 */
	TimestampTz pass_at = KnownPassDue(tenant);
	TimestampTz survey_at = 0;
	bool		pass_more = false;
	int			pass_steps = PASS_ALL_STEPS;
	char	   *clock_seen = NULL;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	(void) IwdWorkerConnect();
	if (pg_atomic_read_u32(&tenant->dboid) != MyDatabaseId)
		proc_exit(0);
	pg_atomic_write_u32(&tenant->owner_procno, MyProc->pgprocno);
	before_shmem_exit(Disown, PointerGetDatum(tenant));
	started = GetCurrentTimestamp();
	last_activity = 0;
	(void) PoolClockChanged(&clock_seen);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "iwd scheduler loop", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		MemoryContext old;
		TimestampTz now;
		TimestampTz announced;
		TimestampTz wake;
		TimestampTz idle_at;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* the iwd clock jumped: the due times the last survey read are off by the jump */
			if (PoolClockChanged(&clock_seen))
				survey_at = 0;
		}
		old = MemoryContextSwitchTo(loop_cxt);
		now = GetCurrentTimestamp();
		announced = PoolTake(tenant);
		if (announced != IWD_DUE_NONE)
		{
			last_activity = now;
			survey_at = Min(survey_at, announced);
		}
		/*
		 * One batch of the pass per loop: a long pass (a whole backlog to
		 * rescore or expire) rests between batches, iwd.pass_duty percent of
		 * the time working, and the announcements and the vacuum go on in
		 * between.
		 */
		if (pass_more || now >= pass_at)
		{
			long		secs;
			int			usecs;

			if (!pass_more)
			{
				last_pass = now;
				pass_steps = StepsDue(tenant, now);
			}
			pass_more = RunTickBatch(pass_steps);
			survey_at = 0;
			if (pass_more)
			{
				TimestampDifference(now, GetCurrentTimestamp(), &secs, &usecs);
				pass_at = GetCurrentTimestamp() +
					(secs * USECS_PER_SEC + usecs) * (100 - iwd_pass_duty) / iwd_pass_duty;
			}
		}
		if (GetCurrentTimestamp() >= survey_at)
		{
			TenantSurvey survey;

			SurveyTenant(tenant, &survey);
			if (!survey.installed)
				WorkerExit(tenant, REPORT_NOT_INSTALLED, IWD_DUE_NONE, IWD_DUE_NONE);
			if (!pass_more)
				pass_at = survey.next_due == IWD_DUE_NONE ? IWD_DUE_NONE :
					Max(survey.next_due, last_pass + (TimestampTz) iwd_scheduler_interval_ms * 1000);
			survey_at = VacuumWhenDue(tenant, survey.last_event);
			if (survey.events_waiting)
				survey_at = Min(survey_at, GetCurrentTimestamp() +
								(TimestampTz) iwd_notify_interval_ms * 1000);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_cxt);

		now = GetCurrentTimestamp();
		/* sessions writing now keep the tenant active (a survey is due for them) */
		announced = PoolTake(tenant);
		if (announced != IWD_DUE_NONE)
		{
			last_activity = now;
			survey_at = Min(survey_at, announced);
		}
		wake = Min(pass_at, survey_at);
		/*
		 * Leave when idle. When other tenants wait, leave once nothing is due
		 * sooner than the next announcement could be (a tenant with a
		 * deadline further off makes way), or after iwd.worker_idle_timeout
		 * of work (a tenant whose sessions write all the time would otherwise
		 * keep its worker for good, and leaving at every pause would cost a
		 * worker's start per announcement), or after a slice when a tenant
		 * waits with a deadline due (a long pass or a busy tenant's
		 * announcements must not hold it back for seconds).
		 */
		if ((wake - now > (TimestampTz) iwd_worker_idle_timeout_ms * 1000 &&
			 now - last_activity > (TimestampTz) iwd_worker_idle_timeout_ms * 1000) ||
			(pg_atomic_read_u32(&iwd_pool->waiting) > 0 &&
			 (wake - now > (TimestampTz) Min(iwd_notify_interval_ms, iwd_scheduler_interval_ms) * 1000 ||
			  now - started > (TimestampTz) iwd_worker_idle_timeout_ms * 1000)) ||
			(pg_atomic_read_u32(&iwd_pool->deadlines_waiting) > 0 &&
			 now - started > (TimestampTz) IWD_DEADLINE_SLICE_MS * 1000))
			WorkerExit(tenant, REPORT_DONE, pass_at, wake);
		PoolPublishWake(tenant, &wake);
		/* what was announced while publishing is due for a survey */
		if (wake < Min(pass_at, survey_at))
		{
			last_activity = now;
			survey_at = wake;
		}
		/*
		 * Look again when the idle timeout after the last write runs out:
		 * with nothing due soon, that is when the worker leaves (sleeping
		 * until the next due time would keep it, and its slot, for as long).
		 */
		idle_at = last_activity + (TimestampTz) iwd_worker_idle_timeout_ms * 1000 + 1000;
		if (idle_at > now && idle_at < wake)
			wake = idle_at;
		if (wake > now)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 (long) Min((wake - now + 999) / 1000, (TimestampTz) INT_MAX), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
