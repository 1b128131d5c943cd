/*-------------------------------------------------------------------------
 * worker.c
 *	  What every background worker of iwd shares: how the launcher starts a
 *	  worker for a tenant's database (the scheduler's and the Data Mart's),
 *	  how the worker connects, and how it runs a transaction of its work as
 *	  the role iwd_worker with its timeouts.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "iwd.h"
#include "pool.h"
#include "worker.h"

#ifndef IWD_EXTVERSION
#error "IWD_EXTVERSION (the release) is not defined: build with the top Makefile"
#endif

/*
 * Register a dynamic worker of iwd running function(index) in database
 * dboid (bgw_extra), named "<type> <datname>", notifying this process;
 * false when no background worker slot is free.
 */
bool
IwdStartDatabaseWorker(const char *function, const char *type, int index, Oid dboid, const char *datname,
					   BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "iwd");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s %s", type, datname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", type);
	worker.bgw_main_arg = Int32GetDatum(index);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * Connect the worker to the database of its bgw_extra as the bootstrap
 * superuser, with the search path of iwd's workers: a setting of the
 * database or role (ALTER DATABASE ... SET search_path, which the database's
 * owner may run) is overridden, so that names in the worker's SQL never
 * resolve to objects planted there. Returns the database's name: its slot's
 * (bgw_main_arg), read from the catalog only when the slot serves another
 * database by now (a short-lived worker spares a transaction).
 */
const char *
IwdWorkerConnect(void)
{
	Oid			dboid;
	char	   *dbname;
	IwdTenant  *tenant;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	iwd_is_worker = true;
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", IWD_WORKER_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);
	tenant = PoolTenant(DatumGetInt32(MyBgworkerEntry->bgw_main_arg));
	if (pg_atomic_read_u32(&tenant->dboid) == MyDatabaseId && tenant->datname[0] != '\0')
		return MemoryContextStrdup(TopMemoryContext, tenant->datname);
	StartTransactionCommand();
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();
	return dbname;
}

/*
 * Start a transaction of the worker's work, SPI connected with a snapshot,
 * run as the role iwd_worker when it exists; timeout_ms (when > 0) bounds the
 * transaction, lock_timeout_ms (0: none) each lock wait. A background worker
 * runs no statement_timeout of its own (that is the client protocol's), so
 * it is armed here.
 */
void
IwdWorkerStartTransaction(IwdWorkerTransaction *xact, int timeout_ms, int lock_timeout_ms)
{
	Oid			role;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SetConfigOption("lock_timeout", psprintf("%d", lock_timeout_ms), PGC_SUSET, PGC_S_OVERRIDE);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	GetUserIdAndSecContext(&xact->saved_user, &xact->saved_context);
	role = get_role_oid(IWD_WORKER_ROLE, true);
	xact->as_worker_role = OidIsValid(role);
	/* SECURITY_LOCAL_USERID_CHANGE: no SET ROLE back to the session's superuser from here */
	if (xact->as_worker_role)
		SetUserIdAndSecContext(role, xact->saved_context | SECURITY_LOCAL_USERID_CHANGE);
	xact->timeout_armed = timeout_ms > 0;
	if (xact->timeout_armed)
		enable_timeout_after(STATEMENT_TIMEOUT, timeout_ms);
}

/* Refuse to run iwd's SQL when the role iwd_worker is missing (the work would run as superuser). */
void
IwdWorkerRequireRole(IwdWorkerTransaction *xact)
{
	if (!xact->as_worker_role)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", IWD_WORKER_ROLE),
				 errdetail("iwd's background workers run their work as this role, never as a superuser."),
				 errhint("Create it again (CREATE ROLE iwd_worker NOLOGIN) and grant it what README, Security, Roles lists.")));
}

/*
 * Is iwd installed in this database at the release of this library (the
 * Makefile's EXTVERSION)? Inside a worker transaction. After the server
 * restarts on a new release, a database not yet updated keeps the previous
 * release's tables and functions, which this library's SQL does not match:
 * it is left alone, said once per worker in the log, until ALTER EXTENSION
 * iwd UPDATE (whose script announces the database again).
 */
bool
IwdWorkerExtensionCurrent(void)
{
	static bool logged = false;
	char	   *version;

	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'iwd'", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		return false;
	version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (version != NULL && strcmp(version, IWD_EXTVERSION) == 0)
		return true;
	if (!logged)
		ereport(LOG,
				(errmsg("iwd: database \"%s\" has iwd %s, this server's library is %s: not served until "
						"ALTER EXTENSION iwd UPDATE", get_database_name(MyDatabaseId), version, IWD_EXTVERSION),
				 errhint("Run ALTER EXTENSION iwd UPDATE in this database.")));
	logged = true;
	return false;
}

/* Commit what IwdWorkerStartTransaction started, as the session's own user again. */
void
IwdWorkerCommitTransaction(IwdWorkerTransaction *xact)
{
	if (xact->timeout_armed)
		disable_timeout(STATEMENT_TIMEOUT, false);
	SetUserIdAndSecContext(xact->saved_user, xact->saved_context);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}
