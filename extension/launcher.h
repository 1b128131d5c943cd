/*-------------------------------------------------------------------------
 * launcher.h
 *	  The launcher (launcher.c): the static background worker that starts
 *	  the tenants' workers and the Data Mart chains when they are due.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_LAUNCHER_H
#define IWD_LAUNCHER_H

#include "postgres.h"

/* Register the launcher (from _PG_init, when iwd is preloaded). */
extern void LauncherInit(void);
/* The launcher's main function (bgw_function_name "iwd_scheduler_launcher_main"). */
extern PGDLLEXPORT void iwd_scheduler_launcher_main(Datum main_arg);

#endif							/* IWD_LAUNCHER_H */
