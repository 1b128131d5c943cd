/*-------------------------------------------------------------------------
 * stats.h
 *	  Cumulative per-database counters in shared memory.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_STATS_H
#define IWD_STATS_H

typedef enum StatKind
{
	STAT_CLAIMS,
	STAT_RESERVATION_TIMEOUTS,
	STAT_KINDS
} StatKind;

extern void StatsCount(StatKind kind, int64 n);

#endif							/* IWD_STATS_H */
