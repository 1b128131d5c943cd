/*-------------------------------------------------------------------------
 * guard.h
 *	  The two guards every subsystem's C code shares (guard.c): the search
 *	  path of the SQL it runs, and locks that only iwd can take.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_GUARD_H
#define IWD_GUARD_H

#include "postgres.h"

#include "storage/lock.h"

/*
 * The search path of C code that runs SQL through SPI from a caller's
 * session ("pg_catalog, iwd", whatever the session's or the database's
 * search_path says); pushed and popped around the SPI work (an error pops it).
 */
extern void IwdPushSearchPath(void);
extern void IwdPopSearchPath(void);

/*
 * Locks only iwd's own code can take. They live in the advisory lock
 * space (pg_locks shows locktype "advisory", classid = the class, objid = the
 * key, objsubid = IWD_LOCK_SPACE), under a field value that no SQL function
 * can set: pg_advisory_lock and its kin use 1 and 2. A login that can merely
 * connect cannot hold them and stall the claims or the Data Mart.
 */
#define IWD_LOCK_SPACE 3

typedef enum IwdLockClass
{
	IWD_LOCK_CLAIM = 1,			/* key: the task id a claimer is taking */
	IWD_LOCK_DM_CHAIN = 2,		/* key: the Data Mart execution chain (datamart.c) */
	IWD_LOCK_EVENTS = 3			/* key 0: the publication of task events (events.c) */
} IwdLockClass;

extern LockAcquireResult IwdLock(IwdLockClass lock_class, uint32 key, bool session, bool wait);
extern void IwdUnlock(IwdLockClass lock_class, uint32 key, bool session);

#endif							/* IWD_GUARD_H */
