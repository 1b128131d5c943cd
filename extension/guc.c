/*-------------------------------------------------------------------------
 * guc.c
 *	  iwd.* configuration parameters and the iwd clock.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "iwd.h"
#include "pool.h"

#define IWD_INTERVAL_MS_DEFAULT 1000
#define IWD_INTERVAL_MS_MIN 10
#define IWD_INTERVAL_MS_MAX 3600000
#define IWD_NOTIFY_INTERVAL_MS_DEFAULT 100
#define IWD_VACUUM_THRESHOLD_DEFAULT 5000
#define IWD_VACUUM_THRESHOLD_MAX 100000000
#define IWD_BATCH_DEFAULT 1000
#define IWD_BATCH_MIN 1
#define IWD_BATCH_MAX 1000000
/* a scheduler batch takes milliseconds: a minute means it is stuck */
#define IWD_WORKER_STATEMENT_TIMEOUT_MS_DEFAULT 60000
/* the passes skip locked rows; a longer wait is a table lock a session forgot */
#define IWD_WORKER_LOCK_TIMEOUT_MS_DEFAULT 5000
/* with the launcher and iwd_dm.max_workers' 2, within PostgreSQL's default max_worker_processes (8) */
#define IWD_MAX_WORKERS_DEFAULT 4
#define IWD_MAX_WORKERS_MAX 1024
#define IWD_DM_MAX_WORKERS_DEFAULT 2
#define IWD_DM_MAX_WORKERS_MAX 1024
#define IWD_MAX_DATABASES_DEFAULT 1000
#define IWD_MAX_DATABASES_MAX 100000
#define IWD_WORKER_IDLE_TIMEOUT_MS_DEFAULT 5000
#define IWD_EVENT_RETENTION_DEFAULT "7 days"
#define IWD_WEBHOOK_RETRY_FOR_DEFAULT "24 hours"
#define IWD_DECLINE_FOR_DEFAULT "10 min"
#define IWD_DM_SERVICE_LEVEL_THRESHOLD_DEFAULT "20 s"

char	   *iwd_databases = NULL;
int			iwd_scheduler_interval_ms = IWD_INTERVAL_MS_DEFAULT;
int			iwd_batch_size = IWD_BATCH_DEFAULT;
char	   *iwd_simulated_time = NULL;
int			iwd_notify = IWD_NOTIFY_BATCH;
int			iwd_notify_interval_ms = IWD_NOTIFY_INTERVAL_MS_DEFAULT;
int			iwd_vacuum_threshold = IWD_VACUUM_THRESHOLD_DEFAULT;
int			iwd_pass_duty = 20;
int			iwd_worker_statement_timeout_ms = IWD_WORKER_STATEMENT_TIMEOUT_MS_DEFAULT;
int			iwd_worker_lock_timeout_ms = IWD_WORKER_LOCK_TIMEOUT_MS_DEFAULT;
int			iwd_max_workers = IWD_MAX_WORKERS_DEFAULT;
int			iwd_dm_max_workers = IWD_DM_MAX_WORKERS_DEFAULT;
int			iwd_max_databases = IWD_MAX_DATABASES_DEFAULT;
int			iwd_worker_idle_timeout_ms = IWD_WORKER_IDLE_TIMEOUT_MS_DEFAULT;
/* read by the SQL of the event feed and the webhook deliveries (sql/events.sql), through current_setting */
static char *iwd_event_retention = NULL;
static char *iwd_webhook_retry_for = NULL;
/* read by iwd.decline_task (sql/lifecycle.sql) */
static char *iwd_decline_for = NULL;
/* read by the Data Mart's aggregation (sql/datamart.sql, iwd_dm.service_level_threshold()) */
static char *iwd_dm_service_level_threshold = NULL;

static const struct config_enum_entry notify_modes[] = {
	{"off", IWD_NOTIFY_OFF, false},
	{"batch", IWD_NOTIFY_BATCH, false},
	{"event", IWD_NOTIFY_EVENT, false},
	{NULL, 0, false}
};

/*
 * Parse a timestamp with time zone without raising errors (timestamptz_in's
 * steps, returning false where it would raise).
 */
bool
IwdParseTimestamptz(const char *str, TimestampTz *result)
{
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	struct pg_tm tt;
	fsec_t		fsec;
	int			tz;

	if (strlen(str) >= MAXDATELEN)
		return false;
	if (ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf) != 0 ||
		DecodeDateTime(field, ftype, nf, &dtype, &tt, &fsec, &tz) != 0 || dtype != DTK_DATE)
		return false;
	return tm2timestamp(&tt, fsec, &tz, result) == 0;
}

/* Reject a simulated time that does not parse, at SET time rather than at use. */
static bool
check_simulated_time(char **newval, void **extra, GucSource source)
{
	TimestampTz ts;

	if (*newval == NULL || (*newval)[0] == '\0' || IwdParseTimestamptz(*newval, &ts))
		return true;
	GUC_check_errdetail("\"%s\" is not a timestamp with time zone.", *newval);
	return false;
}

/*
 * Accept only a positive interval (what the event retention and the webhook
 * retry window are), at SET time rather than at use; parsed as interval_in
 * does, without raising.
 */
static bool
check_positive_interval(char **newval, void **extra, GucSource source)
{
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	struct pg_itm_in itm;
	Interval	span;

	if (*newval != NULL && strlen(*newval) < MAXDATELEN &&
		ParseDateTime(*newval, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf) == 0 &&
		DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, &itm) == 0 && dtype == DTK_DELTA &&
		itmin2interval(&itm, &span) == 0 &&
		(span.month > 0 || span.day > 0 || span.time > 0) && span.month >= 0 && span.day >= 0 && span.time >= 0)
		return true;
	GUC_check_errdetail("\"%s\" is not a positive interval (for example '7 days' or '90 s').",
						*newval == NULL ? "" : *newval);
	return false;
}

/*
 * Define every iwd.* parameter, iwd_dm.max_workers (the worker pool's cap on
 * Data Mart chains) and iwd_dm.service_level_threshold.
 */
void
GucInit(void)
{
	DefineCustomStringVariable("iwd.databases",
							   "The only databases iwd's workers serve (comma-separated); empty: every database with iwd.",
							   NULL, &iwd_databases, "", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.max_workers",
							"Most scheduler workers running at once, for all tenant databases (0: none).",
							"A tenant's worker starts when something of it is due; tenants due while all run wait, "
							"earliest due first.",
							&iwd_max_workers, IWD_MAX_WORKERS_DEFAULT, 0, IWD_MAX_WORKERS_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd_dm.max_workers",
							"Most scheduled Data Mart chains running at once, for all tenant databases.",
							"The tenants whose schedule came wait for a free one, in turn.",
							&iwd_dm_max_workers, IWD_DM_MAX_WORKERS_DEFAULT, 0, IWD_DM_MAX_WORKERS_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.max_databases",
							"Most tenant databases iwd serves on this server (shared memory, set at start).",
							"A database beyond it is not served; that is logged and counted in iwd.worker_stats().",
							&iwd_max_databases, IWD_MAX_DATABASES_DEFAULT, 1, IWD_MAX_DATABASES_MAX,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.worker_idle_timeout",
							"How long a tenant's worker stays without work due or sessions writing before it exits.",
							NULL, &iwd_worker_idle_timeout_ms, IWD_WORKER_IDLE_TIMEOUT_MS_DEFAULT, 0, IWD_INTERVAL_MS_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.scheduler_interval",
							"Shortest time between two scheduler passes of a tenant (work due waits at most this long).",
							NULL, &iwd_scheduler_interval_ms, IWD_INTERVAL_MS_DEFAULT,
							IWD_INTERVAL_MS_MIN, IWD_INTERVAL_MS_MAX, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.batch_size",
							"Most tasks one scheduler step changes in one transaction.",
							NULL, &iwd_batch_size, IWD_BATCH_DEFAULT, IWD_BATCH_MIN, IWD_BATCH_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("iwd.simulated_time",
							   "When set, iwd uses this time as the current time (tests, replays, imports).",
							   NULL, &iwd_simulated_time, "", PGC_SUSET, 0,
							   check_simulated_time, NULL, NULL);
	DefineCustomEnumVariable("iwd.notify",
							 "How task events are announced on channel iwd_task_event: off, batch or event.",
							 "batch: the scheduler worker announces new events every iwd.notify_interval; "
							 "event: each transaction announces its own events (this serializes commits).",
							 &iwd_notify, IWD_NOTIFY_BATCH, notify_modes, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.notify_interval",
							"Time between two announcements of new task events in batch mode.",
							NULL, &iwd_notify_interval_ms, IWD_NOTIFY_INTERVAL_MS_DEFAULT,
							IWD_INTERVAL_MS_MIN, IWD_INTERVAL_MS_MAX, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.vacuum_threshold",
							"Task events after which the scheduler worker vacuums iwd.task and iwd.event_outbox (0: never).",
							"Claims leave dead entries at the head of the queue index; vacuuming soon keeps claims fast.",
							&iwd_vacuum_threshold, IWD_VACUUM_THRESHOLD_DEFAULT, 0, IWD_VACUUM_THRESHOLD_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.pass_duty",
							"Share of the time (percent) a long scheduler pass works; it rests the rest between batches.",
							"A pass that rescores or expires a whole backlog would otherwise take a CPU and the WAL "
							"for itself until it is done; at 20 it takes about five times as long and leaves claims most of both.",
							&iwd_pass_duty, 20, 1, 100, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.worker_statement_timeout",
							"Longest a transaction of the scheduler worker may run (0: no limit).",
							"A batch stopped by it ends the worker with an error; the launcher starts another after 5 s.",
							&iwd_worker_statement_timeout_ms, IWD_WORKER_STATEMENT_TIMEOUT_MS_DEFAULT, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd.worker_lock_timeout",
							"Longest the scheduler worker waits for a lock (0: no limit).",
							NULL, &iwd_worker_lock_timeout_ms, IWD_WORKER_LOCK_TIMEOUT_MS_DEFAULT, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("iwd.event_retention",
							   "How long published task events stay in the event feed (iwd.event_feed).",
							   "The scheduler worker deletes older ones in batches; a reader resuming before the "
							   "oldest kept event continues from it.",
							   &iwd_event_retention, IWD_EVENT_RETENTION_DEFAULT, PGC_USERSET, 0,
							   check_positive_interval, NULL, NULL);
	DefineCustomStringVariable("iwd.webhook_retry_for",
							   "How long a webhook delivery is retried before it is marked failed.",
							   "Counted from the delivery's creation, or from its last manual retry.",
							   &iwd_webhook_retry_for, IWD_WEBHOOK_RETRY_FOR_DEFAULT, PGC_USERSET, 0,
							   check_positive_interval, NULL, NULL);
	DefineCustomStringVariable("iwd.decline_for",
							   "How long a task an agent declined is not offered to that agent again.",
							   "The task goes back to the queue at once for every other agent.",
							   &iwd_decline_for, IWD_DECLINE_FOR_DEFAULT, PGC_USERSET, 0,
							   check_positive_interval, NULL, NULL);
	DefineCustomStringVariable("iwd_dm.service_level_threshold",
							   "The contact-centre service level's threshold: a task reserved within it of its creation "
							   "counts as answered in time.",
							   "The Data Mart's aggregates count, per interval, the tasks whose wait ended and those "
							   "reserved within it (sl_offered, sl_within).",
							   &iwd_dm_service_level_threshold, IWD_DM_SERVICE_LEVEL_THRESHOLD_DEFAULT, PGC_USERSET, 0,
							   check_positive_interval, NULL, NULL);
	MarkGUCPrefixReserved("iwd");
}

/* The current time as iwd sees it. */
TimestampTz
IwdNow(void)
{
	if (iwd_simulated_time != NULL && iwd_simulated_time[0] != '\0')
		return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
													   CStringGetDatum(iwd_simulated_time),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1)));
	return GetCurrentTransactionStartTimestamp();
}

PG_FUNCTION_INFO_V1(iwd_now);

/* SQL: iwd.now() */
Datum
iwd_now(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(IwdNow());
}
