/*-------------------------------------------------------------------------
 * stats.h
 *	  Cumulative per-database counters in shared memory.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_STATS_H
#define IWD_STATS_H

#include "postgres.h"

#include "fmgr.h"

typedef enum StatKind
{
	STAT_CLAIMS,
	STAT_RESERVATION_TIMEOUTS,
	STAT_KINDS
} StatKind;

/* Request the counters' shared memory (from _PG_init). */
extern void StatsInit(void);
extern void StatsCount(StatKind kind, int64 n);

/* SQL: iwd._counters(OUT claims bigint, OUT reservation_timeouts bigint) */
extern PGDLLEXPORT Datum iwd_counters(PG_FUNCTION_ARGS);
/* SQL: iwd._count(kind text, n bigint) RETURNS void */
extern PGDLLEXPORT Datum iwd_count(PG_FUNCTION_ARGS);

#endif							/* IWD_STATS_H */
