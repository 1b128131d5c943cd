/*-------------------------------------------------------------------------
 * datamart.h
 *	  The Data Mart schedule (datamart.c), checked by the launcher; the chain
 *	  runs in a worker of its own.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_DATAMART_H
#define IWD_DATAMART_H

#include "postgres.h"

#include "fmgr.h"
#include "utils/timestamp.h"

extern void DatamartInit(void);
extern bool DatamartScheduled(TimestampTz now);
/* The Data Mart worker's main function (bgw_function_name "iwd_datamart_main"), index: its tenant's slot. */
extern PGDLLEXPORT void iwd_datamart_main(Datum main_arg);

/* SQL: iwd_dm._lock_chain(chain text) RETURNS void */
extern PGDLLEXPORT Datum iwd_dm_lock_chain(PG_FUNCTION_ARGS);

#endif							/* IWD_DATAMART_H */
