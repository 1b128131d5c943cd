/*-------------------------------------------------------------------------
 * input.h
 *	  Validation of client input: a task document merged into a draft, and
 *	  the bounds checks (lengths, maps of names) shared with the
 *	  configuration's input.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_INPUT_H
#define IWD_INPUT_H

#include "postgres.h"

#include "fmgr.h"
#include "utils/jsonb.h"

#include "draft.h"

/* Raise 22023 when a value given for field is longer than max bytes ("what": whose field it is). */
extern void CheckLength(const char *what, const char *field, int len, int max);
/* Raise 22023 when a map of names has more than max_count entries or a name longer than max_name bytes. */
extern void CheckMapBounds(JsonbContainer *map, const char *what, const char *field, int max_count, int max_name);
/* Validate a task document (a patch when !creating) and merge it into the draft. */
extern void TaskDraftApplyInput(TaskDraft *draft, Jsonb *input, bool creating);

/* SQL: iwd._levels(doc jsonb, key text, what text, hi int, max_count int, max_name int) RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_levels(PG_FUNCTION_ARGS);

#endif							/* IWD_INPUT_H */
