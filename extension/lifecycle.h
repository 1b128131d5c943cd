/*-------------------------------------------------------------------------
 * lifecycle.h
 *	  The task state machine (lifecycle.c).
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

#endif							/* IWD_LIFECYCLE_H */
