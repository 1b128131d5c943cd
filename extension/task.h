/*-------------------------------------------------------------------------
 * task.h
 *	  The task draft: one task's fields while it is validated, classified and
 *	  scored, before it becomes (or updates) a row of iwd.task.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_TASK_H
#define IWD_TASK_H

#include "postgres.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

typedef enum TaskField
{
	TF_ID,
	TF_EXTERNAL_ID,
	TF_CAPTURE_POINT,
	TF_MEDIA_TYPE,
	TF_DEPARTMENT,
	TF_PROCESS,
	TF_CATEGORY,
	TF_QUEUE,
	TF_CUSTOMER_SEGMENT,
	TF_PRIORITY,
	TF_BUSINESS_VALUE,
	TF_PRIORITY_OVERRIDE,
	TF_BUSINESS_VALUE_OVERRIDE,
	TF_SUBJECT,
	TF_DESCRIPTION,
	TF_SKILLS,
	TF_ATTRIBUTES,
	TF_STATUS,
	TF_CREATED_AT,
	TF_AGING_FROM,
	TF_ACTIVATION_AT,
	TF_DUE_AT,
	TF_EXPIRES_AT,
	TF_ASSIGNED_TO,
	TF_RESERVED_UNTIL,
	TF_ACCEPTED_AT,
	TF_HOLD_REASON,
	TF_ERROR_REASON,
	TF_COMPLETED_AT,
	TF_UPDATED_AT,
	TF_REPRIORITIZE_AT,
	TF_OVERDUE_FLAGGED,
	TF_CLASSIFIED_BY,
	/* extended attributes: in the task document only when set */
	TF_CUSTOMER_ID,
	TF_PRODUCT_TYPE,
	TF_PRODUCT_SUBTYPE,
	TF_REQUESTED_AGENT,
	TF_REQUESTED_SKILL,
	TF_SOURCE_CREATED_AT,
	TF_SOURCE_DUE_AT,
	TF_SOURCE_PROCESS_TYPE,
	TF_RESULT_CODE,
	TF_COUNT
} TaskField;

typedef enum FieldType
{
	FT_TEXT,
	FT_INT,
	FT_INT8,
	FT_TIMESTAMP,
	FT_SKILLS,
	FT_OBJECT,
	FT_BOOL
} FieldType;

/* Who may set a field from a task document. */
typedef enum FieldInput
{
	FI_READONLY,				/* computed by iwd; an error in input */
	FI_CREATE,					/* only when the task is created */
	FI_ANY						/* on create and update */
} FieldInput;

typedef struct TaskFieldDef
{
	const char *json_key;		/* REST / rule name, NULL when not in input */
	const char *column;			/* iwd.task column */
	FieldType	type;
	FieldInput	input;
} TaskFieldDef;

extern const TaskFieldDef task_fields[TF_COUNT];

typedef struct FieldValue
{
	bool		isnull;
	bool		given;			/* set by the input or a rule in this pass */
	char	   *text;
	int64		num;
	TimestampTz ts;
	Jsonb	   *json;
} FieldValue;

typedef struct TaskDraft
{
	FieldValue	f[TF_COUNT];
	bool		category_changed;
} TaskDraft;

extern int	TaskFieldByJsonKey(const char *key, int len);
extern void TaskDraftApplyInput(TaskDraft *draft, Jsonb *input, bool creating);
extern void DraftSetText(TaskDraft *draft, TaskField field, const char *value);

/* classify.c and score.c */
extern void ClassifyTask(TaskDraft *draft, const char *old_category, bool creating, TimestampTz now);
extern void ScoreTask(TaskDraft *draft, TimestampTz now);

#endif							/* IWD_TASK_H */
