/*-------------------------------------------------------------------------
 * score.h
 *	  Business-value scoring of a task draft (score.c).
 *-------------------------------------------------------------------------
 */
#ifndef IWD_SCORE_H
#define IWD_SCORE_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "draft.h"

/* Compute priority, business value and the next reprioritization time at "now". */
extern void ScoreTask(TaskDraft *draft, TimestampTz now);

#endif							/* IWD_SCORE_H */
