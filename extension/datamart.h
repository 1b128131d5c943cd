/*-------------------------------------------------------------------------
 * datamart.h
 *	  The Data Mart schedule (datamart.c), checked by the launcher; the chain
 *	  runs in a worker of its own.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_DATAMART_H
#define IWD_DATAMART_H

#include "postgres.h"

#include "utils/timestamp.h"

extern void DatamartInit(void);
extern bool DatamartScheduled(TimestampTz now);

#endif							/* IWD_DATAMART_H */
