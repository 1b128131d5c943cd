/*-------------------------------------------------------------------------
 * iwd.h
 *	  Shared declarations of the iwd extension: the parameters and the iwd
 *	  clock (guc.c).
 *-------------------------------------------------------------------------
 */
#ifndef IWD_H
#define IWD_H

#include "postgres.h"

#include "fmgr.h"
#include "utils/timestamp.h"

/* GUCs (guc.c) */
extern char *iwd_databases;
extern int	iwd_scheduler_interval_ms;
extern int	iwd_batch_size;
extern char *iwd_simulated_time;
extern int	iwd_notify;
extern int	iwd_notify_interval_ms;
extern int	iwd_vacuum_threshold;
extern int	iwd_pass_duty;
extern int	iwd_worker_statement_timeout_ms;
extern int	iwd_worker_lock_timeout_ms;

/* iwd.notify: how task events are announced on channel iwd_task_event */
typedef enum IwdNotifyMode
{
	IWD_NOTIFY_OFF,
	IWD_NOTIFY_BATCH,			/* the scheduler worker announces new events */
	IWD_NOTIFY_EVENT			/* each event, by the transaction that writes it */
} IwdNotifyMode;

/* Define the parameters (from _PG_init). */
extern void GucInit(void);

/* The iwd clock: iwd.simulated_time when set, else the transaction start time. */
extern TimestampTz IwdNow(void);
/* SQL: iwd.now() RETURNS timestamptz */
extern PGDLLEXPORT Datum iwd_now(PG_FUNCTION_ARGS);

/* guc.c: parse a timestamp with time zone; false where timestamptz_in would raise an error */
extern bool IwdParseTimestamptz(const char *str, TimestampTz *result);

#endif							/* IWD_H */
