/*-------------------------------------------------------------------------
 * guard.c
 *	  The two guards every subsystem's C code shares: the search path of the
 *	  SQL it runs, and locks that only iwd can take.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/lock.h"

#include "guard.h"

/*
 * Resolve names as "pg_catalog, iwd" until IwdPopSearchPath: the SQL that C
 * code runs must not reach objects that the caller's search_path (or one a
 * database owner set for everyone) puts first. An override costs no GUC save
 * and restore, and plans cached under it stay valid from call to call. An
 * error pops it with the (sub)transaction.
 */
void
IwdPushSearchPath(void)
{
	OverrideSearchPath path = {0};

	path.schemas = list_make1_oid(get_namespace_oid("iwd", false));
	path.addCatalog = true;
	path.addTemp = false;
	PushOverrideSearchPath(&path);
	list_free(path.schemas);
}

/* End what IwdPushSearchPath began. */
void
IwdPopSearchPath(void)
{
	PopOverrideSearchPath();
}

/* Take one of iwd's own locks (iwd.h); LOCKACQUIRE_NOT_AVAIL when !wait and it is held elsewhere. */
LockAcquireResult
IwdLock(IwdLockClass lock_class, uint32 key, bool session, bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) lock_class, key, IWD_LOCK_SPACE);
	return LockAcquire(&tag, ExclusiveLock, session, !wait);
}

/* Release one of iwd's own locks taken with IwdLock. */
void
IwdUnlock(IwdLockClass lock_class, uint32 key, bool session)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) lock_class, key, IWD_LOCK_SPACE);
	LockRelease(&tag, ExclusiveLock, session);
}
