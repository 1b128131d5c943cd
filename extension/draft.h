/*-------------------------------------------------------------------------
 * draft.h
 *	  The task's fields and its draft: one task's fields while it is
 *	  validated, classified and scored, before it becomes (or updates) a row
 *	  of iwd.task; the bounds on what a client may send.
 *
 * The task row itself is declared once, by CREATE TABLE iwd.task
 * (sql/iwd.sql). task_fields names the columns the draft works on and their
 * REST names; a column it does not name is carried through unchanged (its
 * default when a task is created), so a column added to iwd.task needs no
 * line here unless the task document or the rules are to see it.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_DRAFT_H
#define IWD_DRAFT_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/*
 * Bounds on what a client may send (README, Security: Limits). Beyond them,
 * input is refused with SQLSTATE 22023 naming the field and the limit, so
 * that no value reaches an index row size limit (54000), the full-text
 * search document's limits, or an unbounded claim.
 */
/* ids and names: task keys and classification fields, configuration names, agent ids, media types */
#define IWD_NAME_MAX 256
/* a skill name: a pair of them, with "+", makes a routing key */
#define IWD_SKILL_NAME_MAX 128
/* required skills of a task, a category or a classification rule's "set" */
#define IWD_TASK_SKILLS_MAX 64
/* skills of an agent: its claim reads only the buckets that exist, whatever the count */
#define IWD_AGENT_SKILLS_MAX 256
/* media types in an agent's capacity */
#define IWD_AGENT_MEDIA_MAX 64
/* a task's subject, a department's or process's description */
#define IWD_TEXT_MAX (16 * 1024)
/* a task's description (search indexes its beginning, see iwd._document) */
#define IWD_DESCRIPTION_MAX (4 * 1024 * 1024)
/* a task's attributes, in PostgreSQL's jsonb form */
#define IWD_ATTRIBUTES_MAX (64 * 1024)
/*
 * the text the search document indexes: the beginning of subject and
 * description, so that its lexemes stay far below tsvector's 1 MB
 */
#define IWD_DOCUMENT_TEXT_MAX (256 * 1024)
/* a hold, cancel or reject reason */
#define IWD_REASON_MAX 1024
/* nesting of a rule condition ("all", "any", "not") */
#define IWD_CONDITION_DEPTH_MAX 32
/* skill levels */
#define IWD_SKILL_LEVEL_MAX 10

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
	/* the row the draft was loaded from (DraftFromTuple), for the columns task_fields does not name */
	Oid			row_typid;
	int			row_natts;
	Datum	   *row_values;
	bool	   *row_nulls;
} TaskDraft;

extern int	TaskFieldByJsonKey(const char *key, int len);
extern void DraftInit(TaskDraft *draft);
extern void DraftSetText(TaskDraft *draft, TaskField field, const char *value);
extern void DraftFromTuple(TaskDraft *draft, HeapTupleHeader rec);
extern HeapTuple DraftToTuple(TaskDraft *draft, TupleDesc tupdesc);
extern Jsonb *EmptyJsonbObject(void);

#endif							/* IWD_DRAFT_H */
