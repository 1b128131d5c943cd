/*-------------------------------------------------------------------------
 * draft.c
 *	  The task's fields (task_fields: column, REST name, type, who may set
 *	  it), the draft that validation, classification and scoring work on, and
 *	  its conversion to and from a row of iwd.task.
 *
 * Rows are read and written by column name through the row type's
 * descriptor, so the draft follows iwd.task's declaration (sql/iwd.sql):
 * columns task_fields does not name are carried through unchanged.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "executor/executor.h"
#include "parser/parse_type.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#include "draft.h"

const TaskFieldDef task_fields[TF_COUNT] = {
	[TF_ID] = {"id", "id", FT_INT8, FI_READONLY},
	[TF_EXTERNAL_ID] = {"externalId", "external_id", FT_TEXT, FI_CREATE},
	[TF_CAPTURE_POINT] = {"capturePoint", "capture_point", FT_TEXT, FI_CREATE},
	[TF_MEDIA_TYPE] = {"mediaType", "media_type", FT_TEXT, FI_ANY},
	[TF_DEPARTMENT] = {"department", "department", FT_TEXT, FI_ANY},
	[TF_PROCESS] = {"process", "process", FT_TEXT, FI_ANY},
	[TF_CATEGORY] = {"category", "category", FT_TEXT, FI_ANY},
	[TF_QUEUE] = {"queue", "queue", FT_TEXT, FI_ANY},
	[TF_CUSTOMER_SEGMENT] = {"customerSegment", "customer_segment", FT_TEXT, FI_ANY},
	[TF_PRIORITY] = {"priority", "priority", FT_INT, FI_ANY},
	[TF_BUSINESS_VALUE] = {"businessValue", "business_value", FT_INT, FI_ANY},
	[TF_PRIORITY_OVERRIDE] = {NULL, "priority_override", FT_INT, FI_READONLY},
	[TF_BUSINESS_VALUE_OVERRIDE] = {NULL, "business_value_override", FT_INT, FI_READONLY},
	[TF_SUBJECT] = {"subject", "subject", FT_TEXT, FI_ANY},
	[TF_DESCRIPTION] = {"description", "description", FT_TEXT, FI_ANY},
	[TF_SKILLS] = {"skills", "skills", FT_SKILLS, FI_ANY},
	[TF_ATTRIBUTES] = {"attributes", "attributes", FT_OBJECT, FI_ANY},
	[TF_STATUS] = {"status", "status", FT_TEXT, FI_READONLY},
	[TF_CREATED_AT] = {"createdAt", "created_at", FT_TIMESTAMP, FI_READONLY},
	[TF_AGING_FROM] = {NULL, "aging_from", FT_TIMESTAMP, FI_READONLY},
	[TF_ACTIVATION_AT] = {"activationAt", "activation_at", FT_TIMESTAMP, FI_ANY},
	[TF_DUE_AT] = {"dueAt", "due_at", FT_TIMESTAMP, FI_ANY},
	[TF_EXPIRES_AT] = {"expiresAt", "expires_at", FT_TIMESTAMP, FI_ANY},
	[TF_ASSIGNED_TO] = {"assignedTo", "assigned_to", FT_TEXT, FI_READONLY},
	[TF_RESERVED_UNTIL] = {"reservedUntil", "reserved_until", FT_TIMESTAMP, FI_READONLY},
	[TF_ACCEPTED_AT] = {"acceptedAt", "accepted_at", FT_TIMESTAMP, FI_READONLY},
	[TF_HOLD_REASON] = {"holdReason", "hold_reason", FT_TEXT, FI_READONLY},
	[TF_ERROR_REASON] = {"errorReason", "error_reason", FT_TEXT, FI_READONLY},
	[TF_COMPLETED_AT] = {"completedAt", "completed_at", FT_TIMESTAMP, FI_READONLY},
	[TF_UPDATED_AT] = {"updatedAt", "updated_at", FT_TIMESTAMP, FI_READONLY},
	[TF_REPRIORITIZE_AT] = {"reprioritizeDateTime", "reprioritize_at", FT_TIMESTAMP, FI_READONLY},
	[TF_OVERDUE_FLAGGED] = {NULL, "overdue_flagged", FT_BOOL, FI_READONLY},
	[TF_CLASSIFIED_BY] = {"classifiedBy", "classified_by", FT_TEXT, FI_READONLY},
	[TF_CUSTOMER_ID] = {"customerId", "customer_id", FT_TEXT, FI_ANY},
	[TF_PRODUCT_TYPE] = {"productType", "product_type", FT_TEXT, FI_ANY},
	[TF_PRODUCT_SUBTYPE] = {"productSubtype", "product_subtype", FT_TEXT, FI_ANY},
	[TF_REQUESTED_AGENT] = {"requestedAgent", "requested_agent", FT_TEXT, FI_ANY},
	[TF_REQUESTED_SKILL] = {"requestedSkill", "requested_skill", FT_TEXT, FI_ANY},
	[TF_SOURCE_CREATED_AT] = {"sourceCreatedDateTime", "source_created_at", FT_TIMESTAMP, FI_ANY},
	[TF_SOURCE_DUE_AT] = {"sourceDueDateTime", "source_due_at", FT_TIMESTAMP, FI_ANY},
	[TF_SOURCE_PROCESS_TYPE] = {"sourceProcessType", "source_process_type", FT_TEXT, FI_ANY},
	[TF_RESULT_CODE] = {"resultCode", "result_code", FT_TEXT, FI_ANY},
};

/* Map an iwd.task row type's attribute numbers to task fields, cached per row type. */
typedef struct RowMap
{
	Oid			typid;
	int			natts;
	int			capacity;		/* entries allocated in field_of_att */
	int		   *field_of_att;	/* in TopMemoryContext */
} RowMap;

static RowMap row_map;

/* Return the task field with this REST name, or -1. */
int
TaskFieldByJsonKey(const char *key, int len)
{
	for (int i = 0; i < TF_COUNT; i++)
	{
		const char *k = task_fields[i].json_key;

		if (k != NULL && (int) strlen(k) == len && strncmp(k, key, len) == 0)
			return i;
	}
	return -1;
}

/* Fill row_map for the tuple descriptor of the rows we read and write. */
static void
BuildRowMap(TupleDesc tupdesc)
{
	if (row_map.typid == tupdesc->tdtypeid && row_map.natts == tupdesc->natts)
		return;
	if (tupdesc->natts > row_map.capacity)
	{
		int		   *grown = MemoryContextAlloc(TopMemoryContext, sizeof(int) * tupdesc->natts);

		if (row_map.field_of_att != NULL)
			pfree(row_map.field_of_att);
		row_map.field_of_att = grown;
		row_map.capacity = tupdesc->natts;
	}
	for (int a = 0; a < tupdesc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, a);

		row_map.field_of_att[a] = -1;
		if (att->attisdropped)
			continue;
		for (int i = 0; i < TF_COUNT; i++)
			if (strcmp(task_fields[i].column, NameStr(att->attname)) == 0)
				row_map.field_of_att[a] = i;
	}
	row_map.typid = tupdesc->tdtypeid;
	row_map.natts = tupdesc->natts;
}

/* Set a text field of the draft (NULL clears it). */
void
DraftSetText(TaskDraft *draft, TaskField field, const char *value)
{
	draft->f[field].isnull = (value == NULL);
	draft->f[field].text = value ? pstrdup(value) : NULL;
	draft->f[field].given = true;
}

/*
 * Load the draft from a row (composite datum) of iwd.task or iwd.task_closed
 * (columns are matched by name); the row is kept for the columns task_fields
 * does not name.
 */
void
DraftFromTuple(TaskDraft *draft, HeapTupleHeader rec)
{
	TupleDesc	tupdesc;
	HeapTupleData tuple;
	Datum	   *values;
	bool	   *nulls;

	tupdesc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(rec), HeapTupleHeaderGetTypMod(rec));
	BuildRowMap(tupdesc);
	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = rec;
	values = palloc(sizeof(Datum) * tupdesc->natts);
	nulls = palloc(sizeof(bool) * tupdesc->natts);
	heap_deform_tuple(&tuple, tupdesc, values, nulls);
	draft->row_typid = tupdesc->tdtypeid;
	draft->row_natts = tupdesc->natts;
	draft->row_values = values;
	draft->row_nulls = nulls;

	for (int a = 0; a < tupdesc->natts; a++)
	{
		int			i = row_map.field_of_att[a];
		FieldValue *v;

		if (i < 0)
			continue;
		v = &draft->f[i];
		v->isnull = nulls[a];
		if (nulls[a])
			continue;
		switch (task_fields[i].type)
		{
			case FT_TEXT:
				v->text = TextDatumGetCString(values[a]);
				break;
			case FT_INT:
				v->num = DatumGetInt32(values[a]);
				break;
			case FT_INT8:
				v->num = DatumGetInt64(values[a]);
				break;
			case FT_TIMESTAMP:
				v->ts = DatumGetTimestampTz(values[a]);
				break;
			case FT_SKILLS:
			case FT_OBJECT:
				v->json = DatumGetJsonbPCopy(values[a]);
				break;
			case FT_BOOL:
				v->num = DatumGetBool(values[a]);
				break;
		}
	}
	ReleaseTupleDesc(tupdesc);
}

/*
 * The default of column attnum of the table whose row type is typid,
 * evaluated now (isnull when it has none): what an INSERT that leaves the
 * column out would store.
 */
static Datum
ColumnDefault(Oid typid, int attnum, bool *isnull)
{
	Relation	rel = table_open(typeidTypeRelid(typid), AccessShareLock);
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	Node	   *expr = build_column_default(rel, attnum);
	Datum		value = (Datum) 0;

	*isnull = true;
	if (expr != NULL)
	{
		EState	   *estate = CreateExecutorState();
		ExprState  *state = ExecPrepareExpr((Expr *) expr, estate);

		value = ExecEvalExprSwitchContext(state, GetPerTupleExprContext(estate), isnull);
		if (!*isnull)
			value = datumCopy(value, att->attbyval, att->attlen);
		FreeExecutorState(estate);
	}
	/* the lock is kept until the end of the transaction, as an INSERT's would be */
	table_close(rel, NoLock);
	return value;
}

/*
 * Build the iwd.task row for the draft. A column task_fields does not name
 * keeps its value from the row the draft was loaded from, or takes its
 * default when there is none (a new task).
 */
HeapTuple
DraftToTuple(TaskDraft *draft, TupleDesc tupdesc)
{
	Datum	   *values = palloc0(sizeof(Datum) * tupdesc->natts);
	bool	   *nulls = palloc(sizeof(bool) * tupdesc->natts);
	bool		same_row = draft->row_values != NULL && draft->row_typid == tupdesc->tdtypeid;

	BuildRowMap(tupdesc);
	for (int a = 0; a < tupdesc->natts; a++)
	{
		int			i = row_map.field_of_att[a];
		FieldValue *v;

		nulls[a] = true;
		if (i < 0 && TupleDescAttr(tupdesc, a)->attisdropped)
			continue;
		if (i < 0 && same_row && a < draft->row_natts)
		{
			values[a] = draft->row_values[a];
			nulls[a] = draft->row_nulls[a];
			continue;
		}
		if (i < 0)
		{
			values[a] = ColumnDefault(tupdesc->tdtypeid, a + 1, &nulls[a]);
			continue;
		}
		v = &draft->f[i];
		if (v->isnull)
			continue;
		nulls[a] = false;
		switch (task_fields[i].type)
		{
			case FT_TEXT:
				values[a] = CStringGetTextDatum(v->text);
				break;
			case FT_INT:
				values[a] = Int32GetDatum((int32) v->num);
				break;
			case FT_INT8:
				values[a] = Int64GetDatum(v->num);
				break;
			case FT_TIMESTAMP:
				values[a] = TimestampTzGetDatum(v->ts);
				break;
			case FT_SKILLS:
			case FT_OBJECT:
				values[a] = JsonbPGetDatum(v->json);
				break;
			case FT_BOOL:
				values[a] = BoolGetDatum(v->num != 0);
				break;
		}
	}
	return heap_form_tuple(tupdesc, values, nulls);
}

/* Give a new draft the values a task starts with. */
void
DraftInit(TaskDraft *draft)
{
	for (int i = 0; i < TF_COUNT; i++)
		draft->f[i].isnull = true;
}

/* Return a new empty JSON object. */
Jsonb *
EmptyJsonbObject(void)
{
	JsonbParseState *state = NULL;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}
