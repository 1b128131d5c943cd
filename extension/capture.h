/*-------------------------------------------------------------------------
 * capture.h
 *	  The task pipeline's SQL entry points (capture.c): input, classification
 *	  and scoring make the row of iwd.task to store; capture stores it.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_CAPTURE_H
#define IWD_CAPTURE_H

#include "postgres.h"

#include "fmgr.h"

/* SQL: iwd._prepare_task(input jsonb, current iwd.task, at timestamptz) RETURNS iwd.task */
extern PGDLLEXPORT Datum iwd_prepare_task(PG_FUNCTION_ARGS);
/* SQL: iwd._rescore(task iwd.task, at timestamptz) RETURNS iwd.task */
extern PGDLLEXPORT Datum iwd_rescore(PG_FUNCTION_ARGS);
/* SQL: iwd.create_task(task jsonb) RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_create_task(PG_FUNCTION_ARGS);
/* SQL: iwd._create_task(task jsonb, at timestamptz, OUT created boolean, OUT result jsonb) */
extern PGDLLEXPORT Datum iwd_create_task_at(PG_FUNCTION_ARGS);
/* SQL: iwd._create_tasks_new(tasks jsonb, at timestamptz) RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_create_tasks_new(PG_FUNCTION_ARGS);

#endif							/* IWD_CAPTURE_H */
