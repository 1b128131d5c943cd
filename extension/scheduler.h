/*-------------------------------------------------------------------------
 * scheduler.h
 *	  A tenant's scheduler worker (scheduler.c), started by the launcher.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_SCHEDULER_H
#define IWD_SCHEDULER_H

#include "postgres.h"

/* The worker's main function (bgw_function_name "iwd_scheduler_database_main"), index: its tenant's slot. */
extern PGDLLEXPORT void iwd_scheduler_database_main(Datum main_arg);

#endif							/* IWD_SCHEDULER_H */
