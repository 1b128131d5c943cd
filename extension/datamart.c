/*-------------------------------------------------------------------------
 * datamart.c
 *	  The Data Mart schedule: iwd_dm.* parameters, a cron matcher, and the
 *	  scheduled execution chain, one transaction per batch (the SQL steps are
 *	  in sql/datamart.sql). The launcher checks the schedule once a minute
 *	  (launcher.c); each tenant's chain runs in a background worker of its own
 *	  ("iwd datamart"), at most iwd_dm.max_workers at once, so that a long load
 *	  (the first run over a large history, a backfill) never holds up the
 *	  scheduler passes, reservation timeouts and the vacuum of the hot table.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "pgtime.h"

#include "datamart.h"
#include "guard.h"
#include "iwd.h"
#include "pool.h"
#include "worker.h"

#define DM_BATCH_DEFAULT 10000
#define DM_BATCH_MIN 1
#define DM_BATCH_MAX 10000000
#define CRON_FIELDS 5
/* a batch of the chain is seconds; a first load or a backfill of years, minutes */
#define DM_STATEMENT_TIMEOUT_DEFAULT (30 * 60 * 1000)

static char *dm_schedule = NULL;
static bool dm_suspend = false;
static int	dm_batch_size = DM_BATCH_DEFAULT;
static char *dm_execution_chain = NULL;
static char *dm_time_zone = NULL;
static int	dm_statement_timeout_ms = DM_STATEMENT_TIMEOUT_DEFAULT;
static char *dm_log_file = NULL;

/* Field bounds: minute, hour, day of month, month, day of week (0 or 7 = Sunday). */
static const int cron_min[CRON_FIELDS] = {0, 0, 1, 1, 0};
static const int cron_max[CRON_FIELDS] = {59, 23, 31, 12, 7};

/*
 * Does one cron field ("*", "*\/n", "a", "a-b", "a-b/n", lists of those)
 * contain value? Returns -1 when the field is malformed.
 */
static int
CronFieldMatches(const char *field, int value, int lo, int hi)
{
	char	   *copy = pstrdup(field);
	char	   *save = NULL;
	int			result = 0;

	for (char *part = strtok_r(copy, ",", &save); part != NULL; part = strtok_r(NULL, ",", &save))
	{
		int			from = lo,
					to = hi,
					step = 1;
		char	   *slash = strchr(part, '/');
		char	   *end;

		if (slash != NULL)
		{
			*slash = '\0';
			step = strtol(slash + 1, &end, 10);
			if (*end != '\0' || step < 1)
				return -1;
		}
		if (strcmp(part, "*") != 0)
		{
			char	   *dash = strchr(part, '-');

			if (dash != NULL)
				*dash = '\0';
			from = strtol(part, &end, 10);
			if (*end != '\0' || end == part)
				return -1;
			to = from;
			if (dash != NULL)
			{
				to = strtol(dash + 1, &end, 10);
				if (*end != '\0' || end == dash + 1)
					return -1;
			}
			else if (slash != NULL)
				to = hi;
		}
		if (from < lo || to > hi || from > to)
			return -1;
		if (value >= from && value <= to && (value - from) % step == 0)
			result = 1;
	}
	return result;
}

/* Does the cron expression match this local time? -1 when malformed. */
static int
CronMatches(const char *expr, struct pg_tm *tm)
{
	char	   *copy = pstrdup(expr);
	char	   *save = NULL;
	char	   *fields[CRON_FIELDS];
	int			n = 0;
	int			values[CRON_FIELDS] = {tm->tm_min, tm->tm_hour, tm->tm_mday, tm->tm_mon, tm->tm_wday};
	int			result = 1;

	for (char *f = strtok_r(copy, " \t", &save); f != NULL; f = strtok_r(NULL, " \t", &save))
	{
		if (n == CRON_FIELDS)
			return -1;
		fields[n++] = f;
	}
	if (n != CRON_FIELDS)
		return -1;
	for (int i = 0; i < CRON_FIELDS; i++)
	{
		int			m = CronFieldMatches(fields[i], values[i], cron_min[i], cron_max[i]);

		/* Sunday is 0 or 7 */
		if (i == 4 && m == 0 && values[i] == 0)
			m = CronFieldMatches(fields[i], 7, cron_min[i], cron_max[i]);
		if (m < 0)
			return -1;
		result &= m;
	}
	return result;
}

/* Reject a malformed schedule when it is set. */
static bool
check_schedule(char **newval, void **extra, GucSource source)
{
	struct pg_tm tm = {0};

	tm.tm_mday = 1;
	tm.tm_mon = 1;
	if (*newval == NULL || CronMatches(*newval, &tm) < 0)
	{
		GUC_check_errdetail("iwd_dm.schedule takes five cron fields: minute hour day-of-month month day-of-week.");
		return false;
	}
	return true;
}

/*
 * The key of a chain's lock (IWD_LOCK_DM_CHAIN): its position in this list,
 * from 1; iwd_dm.prometheus_metrics finds the lock in pg_locks by it.
 */
static uint32
ChainKey(const char *chain)
{
	static const char *const chains[] = {"initialize", "intraday", "historical", "full"};

	for (int i = 0; i < (int) lengthof(chains); i++)
		if (chain != NULL && strcmp(chain, chains[i]) == 0)
			return i + 1;
	return 0;
}

/* Accept only the documented execution chains. */
static bool
check_chain(char **newval, void **extra, GucSource source)
{
	if (ChainKey(*newval) != 0)
		return true;
	GUC_check_errdetail("Chains: initialize, intraday, historical, full.");
	return false;
}

/* Accept only a known time zone. */
static bool
check_time_zone(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && pg_tzset(*newval) != NULL)
		return true;
	GUC_check_errdetail("\"%s\" is not a known time zone.", *newval ? *newval : "");
	return false;
}

/* Define the iwd_dm.* parameters (iwd_dm.max_workers, a cap of the worker pool, is guc.c's). */
void
DatamartInit(void)
{
	DefineCustomStringVariable("iwd_dm.schedule",
							   "When the scheduler runs the Data Mart execution chain (cron syntax).",
							   NULL, &dm_schedule, "*/15 * * * *", PGC_SIGHUP, 0, check_schedule, NULL, NULL);
	DefineCustomBoolVariable("iwd_dm.suspend", "Suspend the scheduled Data Mart runs.",
							 NULL, &dm_suspend, false, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iwd_dm.batch_size", "Events (or intervals) per Data Mart transaction.",
							NULL, &dm_batch_size, DM_BATCH_DEFAULT, DM_BATCH_MIN, DM_BATCH_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("iwd_dm.execution_chain",
							   "The chain the schedule runs: initialize, intraday, historical or full.",
							   NULL, &dm_execution_chain, "full", PGC_SIGHUP, 0, check_chain, NULL, NULL);
	DefineCustomStringVariable("iwd_dm.time_zone",
							   "The time zone in which Data Mart intervals are aligned.",
							   NULL, &dm_time_zone, "UTC", PGC_USERSET, 0, check_time_zone, NULL, NULL);
	DefineCustomIntVariable("iwd_dm.statement_timeout",
							"Longest a transaction of the scheduled Data Mart chain may run (0: no limit).",
							"A run stopped by it is recorded as failed; the next run resumes its work.",
							&dm_statement_timeout_ms, DM_STATEMENT_TIMEOUT_DEFAULT, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("iwd_dm.log_file",
							   "File the scheduled Data Mart chain logs its runs to, one JSON object per line (empty: none).",
							   "Relative to the data directory, or absolute (/dev/stderr: the server's standard error).",
							   &dm_log_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	MarkGUCPrefixReserved("iwd_dm");
}

/* One run of the scheduled chain, as its JSON-lines log (iwd_dm.log_file) names it. */
typedef struct DmRun
{
	const char *database;
	const char *chain;
	TimestampTz start;
} DmRun;

/* Append a JSON string member ,"name":"value" to buf. */
static void
JsonMember(StringInfo buf, const char *name, const char *value)
{
	appendStringInfo(buf, ",\"%s\":", name);
	escape_json(buf, value);
}

/* Milliseconds from since to now. */
static int64
ElapsedMs(TimestampTz since)
{
	return (GetCurrentTimestamp() - since) / 1000;
}

/*
 * Append one event of the run to iwd_dm.log_file as a JSON line: time (ISO
 * 8601, UTC), level, event, database, chain, pid, then fields (members already
 * rendered, each starting with a comma). One write per line with O_APPEND, so
 * that the runs of several databases never mix their lines. The log never
 * stops the chain: a file that cannot be written is reported in the server's
 * log and the run goes on.
 */
static void
DmLog(const DmRun *run, const char *level, const char *event, const char *fields)
{
	StringInfoData line;
	TimestampTz now = GetCurrentTimestamp();
	pg_time_t	secs = timestamptz_to_time_t(now);
	char		stamp[32];
	int			fd;

	if (dm_log_file == NULL || dm_log_file[0] == '\0')
		return;
	pg_strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", pg_gmtime(&secs));
	initStringInfo(&line);
	appendStringInfo(&line, "{\"time\":\"%s.%03dZ\"", stamp,
					 (int) ((now % USECS_PER_SEC + USECS_PER_SEC) % USECS_PER_SEC / 1000));
	JsonMember(&line, "level", level);
	JsonMember(&line, "event", event);
	JsonMember(&line, "database", run->database);
	JsonMember(&line, "chain", run->chain);
	appendStringInfo(&line, ",\"pid\":%d%s}\n", MyProcPid, fields);
	fd = OpenTransientFile(dm_log_file, O_WRONLY | O_APPEND | O_CREAT | PG_BINARY);
	if (fd < 0 || write(fd, line.data, line.len) != line.len)
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write the Data Mart log \"%s\": %m", dm_log_file)));
	if (fd >= 0)
		CloseTransientFile(fd);
	pfree(line.data);
}

/* Log a step of the run: what it did, the tables it wrote, the rows it counted, its batches and duration. */
static void
DmLogStep(const DmRun *run, const char *step, const char *tables, int64 rows, int batches, TimestampTz since)
{
	StringInfoData fields;

	initStringInfo(&fields);
	JsonMember(&fields, "step", step);
	appendStringInfo(&fields, ",\"tables\":[%s],\"rows\":" INT64_FORMAT ",\"batches\":%d,\"duration_ms\":" INT64_FORMAT,
					 tables, rows, batches, ElapsedMs(since));
	DmLog(run, "info", "step", fields.data);
	pfree(fields.data);
}

/* Run one SQL step in its own transaction; returns its integer result (0 when none). */
static int64
RunStep(const char *sql, const char *chain)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		args[2] = {CStringGetTextDatum(chain), Int32GetDatum(dm_batch_size)};
	int64		result = 0;
	bool		isnull = true;
	IwdWorkerTransaction xact;

	IwdWorkerStartTransaction(&xact, dm_statement_timeout_ms, 0);
	IwdWorkerRequireRole(&xact);
	pgstat_report_activity(STATE_RUNNING, sql);
	if (SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "iwd Data Mart step failed: %s", sql);
	if (SPI_processed == 1 && SPI_tuptable->tupdesc->natts == 1 &&
		SPI_gettypeid(SPI_tuptable->tupdesc, 1) == INT4OID)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		result = isnull ? 0 : DatumGetInt32(d);
	}
	IwdWorkerCommitTransaction(&xact);
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

/*
 * Take the chain's lock for the whole run (a session lock: the run is many
 * transactions); false when another run of this chain holds it. It is one of
 * iwd's own locks (iwd.h): a login that takes advisory locks cannot hold it.
 */
static bool
TryChainLock(const char *chain)
{
	bool		locked;

	StartTransactionCommand();
	locked = IwdLock(IWD_LOCK_DM_CHAIN, ChainKey(chain), true, false) != LOCKACQUIRE_NOT_AVAIL;
	CommitTransactionCommand();
	return locked;
}

/* The aggregate tables a chain's levels write (iwd_dm._chain_levels), as JSON strings. */
static const char *
ChainAggregates(const char *chain)
{
	if (strcmp(chain, "intraday") == 0)
		return "\"iwd_dm.agg_15min\"";
	if (strcmp(chain, "historical") == 0)
		return "\"iwd_dm.agg_hour\",\"iwd_dm.agg_day\",\"iwd_dm.agg_week\",\"iwd_dm.agg_month\"";
	if (strcmp(chain, "full") == 0)
		return "\"iwd_dm.agg_15min\",\"iwd_dm.agg_hour\",\"iwd_dm.agg_day\",\"iwd_dm.agg_week\",\"iwd_dm.agg_month\"";
	return "";
}

#define DM_LOAD_TABLES "\"iwd_dm.task_fact\",\"iwd_dm.dirty\""
#define DM_DIMENSION_TABLES "\"iwd_dm.dim_department\",\"iwd_dm.dim_process\",\"iwd_dm.dim_category\"," \
	"\"iwd_dm.dim_queue\",\"iwd_dm.dim_media_type\",\"iwd_dm.dim_customer_segment\",\"iwd_dm.dim_capture_point\"," \
	"\"iwd_dm.dim_agent\",\"iwd_dm.dim_status\",\"iwd_dm.dim_interval\",\"iwd_dm.dim_date\""

/*
 * Run the scheduled chain: one transaction per batch; a failure is recorded in
 * iwd_dm.job_status. Each run, its steps and its end are logged to
 * iwd_dm.log_file (DmLog).
 */
static void
RunScheduledChain(MemoryContext cxt, const char *dbname)
{
	char	   *chain = pstrdup(dm_execution_chain);
	bool		loads = strcmp(chain, "intraday") == 0 || strcmp(chain, "full") == 0;
	/* read after an error too */
	volatile int64 events = 0,
				intervals = 0;
	int64		n;
	int			batches;
	const char *volatile step = "start";
	TimestampTz since;
	DmRun		run = {dbname, chain, GetCurrentTimestamp()};

	if (!TryChainLock(chain))
	{
		ereport(LOG, (errmsg("iwd Data Mart chain \"%s\" is running in another session; this run is skipped",
							 chain)));
		DmLog(&run, "info", "run_skipped", ",\"reason\":\"the chain is running in another session\"");
		return;
	}
	DmLog(&run, "info", "run_start", psprintf(",\"batch_size\":%d", dm_batch_size));
	PG_TRY();
	{
		RunStep("SELECT iwd_dm._job($1, 'start')", chain);
		if (loads)
		{
			step = "load";
			since = GetCurrentTimestamp();
			RunStep("SELECT iwd_dm._mark_dirty(iwd.now(), iwd.now())", chain);
			for (batches = 1; (n = RunStep("SELECT iwd_dm._load_batch($2)", chain)) > 0; batches++)
				events += n;
			DmLogStep(&run, step, DM_LOAD_TABLES, events, batches, since);
		}
		step = "analyze";
		RunStep(psprintf("SELECT iwd_dm._analyze(" INT64_FORMAT ")", events), chain);
		if (strcmp(chain, "initialize") == 0 || strcmp(chain, "full") == 0)
		{
			step = "initialize";
			since = GetCurrentTimestamp();
			n = RunStep("SELECT iwd_dm._initialize()", chain);
			DmLogStep(&run, step, DM_DIMENSION_TABLES, n, 1, since);
		}
		step = "aggregate";
		since = GetCurrentTimestamp();
		for (batches = 1; (n = RunStep("SELECT iwd_dm._aggregate_batch(iwd_dm._chain_levels($1), $2)", chain)) > 0;
			 batches++)
			intervals += n;
		DmLogStep(&run, step, ChainAggregates(chain), intervals, batches, since);
		step = "success";
		RunStep(psprintf("SELECT iwd_dm._job($1, 'success', jsonb_build_object('chain', $1, 'status', 'succeeded', "
						 "'events', " INT64_FORMAT ", 'intervals', " INT64_FORMAT ", 'batchSize', $2))",
						 events, intervals), chain);
		DmLog(&run, "info", "run_end",
			  psprintf(",\"status\":\"succeeded\",\"events\":" INT64_FORMAT ",\"intervals\":" INT64_FORMAT
					   ",\"duration_ms\":" INT64_FORMAT, events, intervals, ElapsedMs(run.start)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		StringInfoData fields;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		disable_timeout(STATEMENT_TIMEOUT, false);
		AbortCurrentTransaction();
		ereport(LOG, (errmsg("iwd Data Mart chain \"%s\" failed: %s", chain, edata->message)));
		initStringInfo(&fields);
		appendStringInfoString(&fields, ",\"status\":\"failed\"");
		JsonMember(&fields, "step", step);
		JsonMember(&fields, "error", edata->message);
		JsonMember(&fields, "sqlstate", unpack_sql_state(edata->sqlerrcode));
		appendStringInfo(&fields, ",\"events\":" INT64_FORMAT ",\"intervals\":" INT64_FORMAT ",\"duration_ms\":"
						 INT64_FORMAT, events, intervals, ElapsedMs(run.start));
		DmLog(&run, "error", "run_end", fields.data);
		RunStep(psprintf("SELECT iwd_dm._job($1, 'fail', NULL, %s)", quote_literal_cstr(edata->message)), chain);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	IwdUnlock(IWD_LOCK_DM_CHAIN, ChainKey(chain), true);
}

PG_FUNCTION_INFO_V1(iwd_dm_lock_chain);

/*
 * SQL: iwd_dm._lock_chain(chain text) RETURNS void
 *
 * Hold the chain's lock until the end of the transaction, waiting for a run
 * in progress (iwd_dm.run: a chain in one transaction).
 */
Datum
iwd_dm_lock_chain(PG_FUNCTION_ARGS)
{
	char	   *chain = text_to_cstring(PG_GETARG_TEXT_PP(0));
	uint32		key = ChainKey(chain);

	if (key == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown execution chain \"%s\"", chain),
				 errhint("Chains: initialize, intraday, historical, full.")));
	(void) IwdLock(IWD_LOCK_DM_CHAIN, key, false, true);
	PG_RETURN_VOID();
}

/* Is the Data Mart installed here, at this library's release (IwdWorkerExtensionCurrent)? */
static bool
DatamartInstalled(void)
{
	bool		installed;

	IwdWorkerTransaction xact;

	IwdWorkerStartTransaction(&xact, iwd_worker_statement_timeout_ms, iwd_worker_lock_timeout_ms);
	installed = IwdWorkerExtensionCurrent();
	IwdWorkerCommitTransaction(&xact);
	return installed;
}

/*
 * Does the schedule (iwd_dm.schedule, in iwd_dm.time_zone as the server's
 * configuration sets them) match the minute of now, unless suspended? The
 * launcher asks once a minute.
 */
bool
DatamartScheduled(TimestampTz now)
{
	struct pg_tm tm;
	pg_tz	   *tz;
	pg_time_t	t;
	struct pg_tm *ltm;

	if (dm_suspend)
		return false;
	tz = pg_tzset(dm_time_zone ? dm_time_zone : "UTC");
	if (tz == NULL)
		return false;
	t = timestamptz_to_time_t(now);
	ltm = pg_localtime(&t, tz);
	if (ltm == NULL)
		return false;
	tm = *ltm;
	tm.tm_mon += 1;				/* pg_localtime months are 0-based */
	return CronMatches(dm_schedule, &tm) == 1;
}

/* The chain's worker: run the configured chain once in the database of bgw_extra (when installed), then exit. */
void
iwd_datamart_main(Datum main_arg)
{
	const char *dbname;
	MemoryContext cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	dbname = IwdWorkerConnect();
	if (!DatamartInstalled())
		proc_exit(0);
	cxt = AllocSetContextCreate(TopMemoryContext, "iwd datamart chain", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	ereport(LOG, (errmsg("iwd Data Mart chain \"%s\" started for database \"%s\"", dm_execution_chain, dbname)));
	RunScheduledChain(cxt, dbname);
	proc_exit(0);
}
