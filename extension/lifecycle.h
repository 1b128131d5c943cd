/*-------------------------------------------------------------------------
 * lifecycle.h
 *	  The task state machine (lifecycle.c), and the row of a task that closes.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_LIFECYCLE_H
#define IWD_LIFECYCLE_H

#include "postgres.h"

#include "fmgr.h"

/* SQL: iwd._check_transition(id bigint, status text, op text) RETURNS text */
extern PGDLLEXPORT Datum iwd_check_transition(PG_FUNCTION_ARGS);
/* SQL: iwd.is_terminal(status text) RETURNS boolean */
extern PGDLLEXPORT Datum iwd_is_terminal(PG_FUNCTION_ARGS);
/* SQL: iwd._closed_row(t iwd.task, status text, at timestamptz) RETURNS iwd.task */
extern PGDLLEXPORT Datum iwd_closed_row(PG_FUNCTION_ARGS);

#endif							/* IWD_LIFECYCLE_H */
