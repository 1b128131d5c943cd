/*-------------------------------------------------------------------------
 * taskjson.h
 *	  The task document (taskjson.c): a task row in the REST shape, the read
 *	  of one task by id, and the event document that embeds the task.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_TASKJSON_H
#define IWD_TASKJSON_H

#include "postgres.h"

#include "fmgr.h"
#include "utils/jsonb.h"

/* SQL: iwd.task_json(t iwd.task) RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_task_json(PG_FUNCTION_ARGS);
/* SQL: iwd._tasks_json(tasks iwd.task[]) RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_tasks_json(PG_FUNCTION_ARGS);
/* SQL: iwd.get_task(id bigint) RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_get_task(PG_FUNCTION_ARGS);
/* SQL: iwd._event_document(task_id bigint, type text, at timestamptz, agent text) RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_event_document(PG_FUNCTION_ARGS);

/* Append a key, or a string value, to a jsonb object under construction. */
extern void IwdJsonPushKey(JsonbParseState **state, const char *key);
extern void IwdJsonPushString(JsonbParseState **state, const char *str);

#endif							/* IWD_TASKJSON_H */
