/*-------------------------------------------------------------------------
 * datamart.h
 *	  The Data Mart schedule (datamart.c), checked by the scheduler's database
 *	  worker; the chain runs in a worker of its own.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_DATAMART_H
#define IWD_DATAMART_H

#include "postgres.h"

extern void DatamartInit(void);
extern void DatamartTick(int64 *last_minute, const char *dbname);

#endif							/* IWD_DATAMART_H */
