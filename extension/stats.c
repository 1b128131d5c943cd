/*-------------------------------------------------------------------------
 * stats.c
 *	  Cumulative counters per database (claims, reservation timeouts) kept in
 *	  shared memory since server start, for the sidecar's metrics.
 *
 * Counting must not add a hot row to the claim path, so the counters are
 * atomics in shared memory rather than table rows.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"

#include "iwd.h"
#include "pool.h"
#include "stats.h"

typedef struct DatabaseStats
{
	pg_atomic_uint32 dboid;
	pg_atomic_uint64 counts[STAT_KINDS];
} DatabaseStats;

/* one entry per database, as many as the tenant registry's slots (iwd.max_databases) */
typedef struct IwdStats
{
	slock_t		mutex;
	int			ndatabases;
	DatabaseStats db[FLEXIBLE_ARRAY_MEMBER];
} IwdStats;

static Size
StatsSize(void)
{
	return add_size(offsetof(IwdStats, db), mul_size(sizeof(DatabaseStats), iwd_max_databases));
}

static IwdStats *stats = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Ask for our shared memory. */
static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(StatsSize());
}

/* Attach to (or create) the counters. */
static void
stats_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("iwd stats", StatsSize(), &found);
	if (!found)
	{
		SpinLockInit(&stats->mutex);
		stats->ndatabases = iwd_max_databases;
		for (int i = 0; i < stats->ndatabases; i++)
		{
			pg_atomic_init_u32(&stats->db[i].dboid, InvalidOid);
			for (int k = 0; k < STAT_KINDS; k++)
				pg_atomic_init_u64(&stats->db[i].counts[k], 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared memory hooks when preloaded. */
void
StatsInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

/* The counters of this database, taking a free slot on first use; NULL when full or not preloaded. */
static DatabaseStats *
MyDatabaseStats(void)
{
	DatabaseStats *result = NULL;

	if (stats == NULL)
		return NULL;
	for (int i = 0; i < stats->ndatabases; i++)
		if (pg_atomic_read_u32(&stats->db[i].dboid) == MyDatabaseId)
			return &stats->db[i];
	SpinLockAcquire(&stats->mutex);
	for (int i = 0; i < stats->ndatabases && result == NULL; i++)
	{
		uint32		oid = pg_atomic_read_u32(&stats->db[i].dboid);

		if (oid == MyDatabaseId || oid == InvalidOid)
		{
			pg_atomic_write_u32(&stats->db[i].dboid, MyDatabaseId);
			result = &stats->db[i];
		}
	}
	SpinLockRelease(&stats->mutex);
	return result;
}

/* Add n to one counter of this database. */
void
StatsCount(StatKind kind, int64 n)
{
	DatabaseStats *db = MyDatabaseStats();

	if (db != NULL && n > 0)
		pg_atomic_fetch_add_u64(&db->counts[kind], (uint64) n);
}

PG_FUNCTION_INFO_V1(iwd_counters);

/* SQL: iwd._counters(OUT claims bigint, OUT reservation_timeouts bigint) */
Datum
iwd_counters(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[STAT_KINDS];
	bool		nulls[STAT_KINDS] = {false};
	DatabaseStats *db = MyDatabaseStats();

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "iwd._counters must return a row");
	for (int k = 0; k < STAT_KINDS; k++)
		values[k] = Int64GetDatum(db ? (int64) pg_atomic_read_u64(&db->counts[k]) : 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

PG_FUNCTION_INFO_V1(iwd_count);

/* SQL: iwd._count(kind text, n bigint): add to a counter (the scheduler's timeouts). */
Datum
iwd_count(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strcmp(kind, "claims") == 0)
		StatsCount(STAT_CLAIMS, PG_GETARG_INT64(1));
	else if (strcmp(kind, "reservation_timeouts") == 0)
		StatsCount(STAT_RESERVATION_TIMEOUTS, PG_GETARG_INT64(1));
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown counter \"%s\"", kind)));
	PG_RETURN_VOID();
}
