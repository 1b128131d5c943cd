/*-------------------------------------------------------------------------
 * worker.h
 *	  What every background worker of iwd shares (worker.c): starting one
 *	  for a tenant's database, connecting, and running a transaction of its
 *	  work.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_WORKER_H
#define IWD_WORKER_H

#include "postgres.h"

/* A dynamic worker of iwd running function(index) for a tenant's slot in the registry (see worker.c). */
struct BackgroundWorkerHandle;
extern bool IwdStartDatabaseWorker(const char *function, const char *type, int index, Oid dboid,
								   const char *datname, struct BackgroundWorkerHandle **handle);

/*
 * How iwd's workers connect and run SQL. They connect as the bootstrap
 * superuser (a background worker cannot log in as a NOLOGIN role) with their
 * own search_path (IWD_WORKER_SEARCH_PATH, which no database or role setting
 * overrides), and each transaction runs as the role iwd_worker (created by
 * the extension, granted only what the passes and the Data Mart write), with
 * a statement timeout when timeout_ms > 0.
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
extern bool IwdWorkerExtensionCurrent(void);
extern void IwdWorkerCommitTransaction(IwdWorkerTransaction *xact);

#endif							/* IWD_WORKER_H */
