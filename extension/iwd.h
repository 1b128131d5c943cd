/*-------------------------------------------------------------------------
 * iwd.h
 *	  Shared declarations of the iwd extension: GUCs, the iwd clock, and the
 *	  per-subsystem entry points that _PG_init dispatches to.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_H
#define IWD_H

#include "postgres.h"
#include "storage/lock.h"
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

extern void GucInit(void);
extern void StatsInit(void);
extern void ConfigCacheInit(void);

/* The iwd clock: iwd.simulated_time when set, else the transaction start time. */
extern TimestampTz IwdNow(void);

/* guc.c: parse a timestamp with time zone; false where timestamptz_in would raise an error */
extern bool IwdParseTimestamptz(const char *str, TimestampTz *result);

/*
 * iwd.c: the search path of C code that runs SQL through SPI from a caller's
 * session ("pg_catalog, iwd", whatever the session's or the database's
 * search_path says); pushed and popped around the SPI work (an error pops it).
 */
extern void IwdPushSearchPath(void);
extern void IwdPopSearchPath(void);

/*
 * iwd.c: locks only iwd's own code can take. They live in the advisory lock
 * space (pg_locks shows locktype "advisory", classid = the class, objid = the
 * key, objsubid = IWD_LOCK_SPACE), under a field value that no SQL function
 * can set: pg_advisory_lock and its kin use 1 and 2. A login that can merely
 * connect cannot hold them and stall the claims or the Data Mart.
 */
#define IWD_LOCK_SPACE 3

typedef enum IwdLockClass
{
	IWD_LOCK_CLAIM = 1,			/* key: the task id a claimer is taking */
	IWD_LOCK_DM_CHAIN = 2		/* key: the Data Mart execution chain (datamart.c) */
} IwdLockClass;

extern LockAcquireResult IwdLock(IwdLockClass lock_class, uint32 key, bool session, bool wait);
extern void IwdUnlock(IwdLockClass lock_class, uint32 key, bool session);

#endif							/* IWD_H */
