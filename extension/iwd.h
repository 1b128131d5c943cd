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

/* scheduler.c: a dynamic worker of iwd for a tenant's slot in the registry (see there) */
struct BackgroundWorkerHandle;
extern bool IwdStartDatabaseWorker(const char *function, const char *type, int index, Oid dboid,
								   const char *datname, struct BackgroundWorkerHandle **handle);
extern bool IwdParseTimestamptz(const char *str, TimestampTz *result);

/*
 * scheduler.c: how iwd's workers connect and run SQL. They connect as the
 * bootstrap superuser (a background worker cannot log in as a NOLOGIN role)
 * with their own search_path (IWD_WORKER_SEARCH_PATH, which no database or
 * role setting overrides), and each transaction runs as the role iwd_worker
 * (created by the extension, granted only what the passes and the Data Mart
 * write), with a statement timeout when timeout_ms > 0.
 */
#define IWD_WORKER_ROLE "iwd_worker"
#define IWD_WORKER_SEARCH_PATH "pg_catalog, iwd, iwd_dm, pg_temp"

typedef struct IwdWorkerTransaction
{
	Oid			saved_user;
	int			saved_context;
	bool		as_worker_role; /* false when the role does not exist */
	bool		timeout_armed;
} IwdWorkerTransaction;

extern const char *IwdWorkerConnect(void);
extern void IwdWorkerStartTransaction(IwdWorkerTransaction *xact, int timeout_ms, int lock_timeout_ms);
extern void IwdWorkerRequireRole(IwdWorkerTransaction *xact);
extern void IwdWorkerCommitTransaction(IwdWorkerTransaction *xact);

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
