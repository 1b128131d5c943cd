/*-------------------------------------------------------------------------
 * classify.h
 *	  Classification of a task draft (classify.c).
 *-------------------------------------------------------------------------
 */
#ifndef IWD_CLASSIFY_H
#define IWD_CLASSIFY_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "draft.h"

/*
 * Run the classification rules (unless the category was given), take the
 * category's defaults and compute the due time. old_category: the category
 * before an update (NULL on create).
 */
extern void ClassifyTask(TaskDraft *draft, const char *old_category, bool creating, TimestampTz now);

#endif							/* IWD_CLASSIFY_H */
