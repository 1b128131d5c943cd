/*-------------------------------------------------------------------------
 * datamart.h
 *	  The Data Mart schedule (datamart.c), run by the scheduler's database worker.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_DATAMART_H
#define IWD_DATAMART_H

#include "postgres.h"

extern void DatamartInit(void);
extern void DatamartTick(int64 *last_minute, MemoryContext cxt);

#endif							/* IWD_DATAMART_H */
