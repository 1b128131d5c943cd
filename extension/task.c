/*-------------------------------------------------------------------------
 * task.c
 *	  Task documents: validation of REST-shaped input, the draft that
 *	  classification and scoring work on, and its conversion to and from a
 *	  row of iwd.task.
 *
 * iwd._prepare_task(input jsonb, current iwd.task, at timestamptz) is the one
 * entry point: it validates the input (every unknown key, wrong type or
 * malformed value is an error naming the field), merges it over the current
 * row on update, classifies, scores, and returns the row to store.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "utils/memutils.h"

#include "iwd.h"
#include "task.h"

#define SKILL_LEVEL_MIN 0
#define SKILL_LEVEL_MAX IWD_SKILL_LEVEL_MAX

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

/* Keys of the task document that are derived on output and ignored on input. */
static const char *const derived_keys[] = {"overdue"};

/* Map an iwd.task row type's attribute numbers to task fields, cached per row type. */
typedef struct RowMap
{
	Oid			typid;
	int			natts;
	int			field_of_att[64];
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
	if (tupdesc->natts > (int) lengthof(row_map.field_of_att))
		elog(ERROR, "iwd.task has too many columns");
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

/* Load the draft from a row (composite datum) of iwd.task. */
static void
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

/* Raise the error for a field of the wrong JSON type. */
static void
pg_attribute_noreturn()
wrong_type(const char *key, const char *expected)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("task field \"%s\" must be %s", key, expected)));
}

/* Return an integer JSON number as int64, or raise an error naming the field. */
static int64
JsonbIntValue(JsonbValue *v, const char *key, int64 min, int64 max)
{
	char	   *text;
	char	   *end;
	int64		n;

	if (v->type != jbvNumeric)
		wrong_type(key, "an integer");
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	errno = 0;
	n = strtoll(text, &end, 10);
	if (*end != '\0' || errno != 0)
		wrong_type(key, "an integer");
	if (n < min || n > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("task field \"%s\" is out of range", key),
				 errdetail("The value must be between " INT64_FORMAT " and " INT64_FORMAT ".", min, max)));
	return n;
}

/* Parse an ISO 8601 timestamp that names its zone, or raise an error naming the field. */
static TimestampTz
ParseTimestampWithZone(const char *s, const char *key)
{
	size_t		len = strlen(s);
	bool		zoned = len > 0 && (s[len - 1] == 'Z' || s[len - 1] == 'z');
	TimestampTz result = 0;

	for (size_t i = 10; !zoned && i < len; i++)
		if (s[i] == '+' || s[i] == '-')
			zoned = true;
	if (!zoned || !IwdParseTimestamptz(s, &result))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_DATETIME_FORMAT),
				 errmsg("task field \"%s\" must be an ISO 8601 timestamp with a time zone", key),
				 errdetail("Got \"%s\".", s)));
	return result;
}

/*
 * Raise 22023 when a value given for field is longer than max bytes; what
 * says whose field it is ("task field").
 */
void
CheckLength(const char *what, const char *field, int len, int max)
{
	if (len > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is longer than %d bytes", what, field, max),
				 errdetail("It has %d bytes.", len)));
}

/*
 * Raise 22023 when a map of names (skills, media types) has more than
 * max_count entries or a name longer than max_name bytes. Counting costs
 * nothing (the jsonb header holds it), so an oversized map is refused
 * before it is walked.
 */
void
CheckMapBounds(JsonbContainer *map, const char *what, const char *field, int max_count, int max_name)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (JsonContainerSize(map) > (uint32) max_count)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" has more than %d entries", what, field, max_count),
				 errdetail("It has %u.", JsonContainerSize(map))));
	it = JsonbIteratorInit(map);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_KEY && v.val.string.len > max_name)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"%s\" has a name longer than %d bytes", what, field, max_name),
					 errdetail("A name of %d bytes starts with \"%s\".", v.val.string.len,
							   pnstrdup(v.val.string.val, pg_mbcliplen(v.val.string.val, v.val.string.len, 32)))));
}

/* Check that a task's skills object maps at most IWD_TASK_SKILLS_MAX names to levels 0..10. */
static void
ValidateSkills(JsonbContainer *skills, const char *key)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *skill = NULL;

	CheckMapBounds(skills, "task field", key, IWD_TASK_SKILLS_MAX, IWD_SKILL_NAME_MAX);
	it = JsonbIteratorInit(skills);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			skill = pnstrdup(v.val.string.val, v.val.string.len);
			if (v.val.string.len == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s must not contain an empty skill name", key)));
		}
		else if (tok == WJB_VALUE)
			JsonbIntValue(&v, psprintf("%s.%s", key, skill), SKILL_LEVEL_MIN, SKILL_LEVEL_MAX);
	}
}

PG_FUNCTION_INFO_V1(iwd_levels);

/*
 * SQL: iwd._levels(doc jsonb, key text, what text, hi int, max_count int, max_name int) RETURNS jsonb
 *
 * The object member doc -> key mapping at most max_count names (each 1 to
 * max_name bytes) to integer levels 0..hi; NULL when absent or null;
 * otherwise 22023 naming the field. One pass over the map (the check of the
 * configuration upserts: agent skills and capacity, category skills).
 */
Datum
iwd_levels(PG_FUNCTION_ARGS)
{
	Jsonb	   *doc = PG_GETARG_JSONB_P(0);
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *what = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int			hi = PG_GETARG_INT32(3);
	JsonbValue *map;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;

	if (JB_ROOT_IS_SCALAR(doc) || !JB_ROOT_IS_OBJECT(doc))
		PG_RETURN_NULL();
	map = getKeyJsonValueFromContainer(&doc->root, key, strlen(key), NULL);
	if (map == NULL || map->type == jbvNull)
		PG_RETURN_NULL();
	if (map->type != jbvBinary || !JsonContainerIsObject(map->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s field \"%s\" must be an object of levels", what, key)));
	CheckMapBounds(map->val.binary.data, psprintf("%s field", what), key, PG_GETARG_INT32(4), PG_GETARG_INT32(5));
	it = JsonbIteratorInit(map->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *text;
		char	   *end;
		long long	n;

		if (tok == WJB_KEY)
		{
			name = pnstrdup(v.val.string.val, v.val.string.len);
			if (name[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s field \"%s\" has an empty name", what, key)));
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		if (v.type != jbvNumeric)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s %s field \"%s\" must be an integer", what, key, name)));
		text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
		errno = 0;
		n = strtoll(text, &end, 10);
		if (*end != '\0' || errno != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s %s field \"%s\" must be an integer", what, key, name)));
		if (n < 0 || n > hi)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s %s field \"%s\" is out of range", what, key, name),
					 errdetail("The value must be between 0 and %d.", hi)));
	}
	PG_RETURN_JSONB_P(JsonbValueToJsonb(map));
}

/* Return a Jsonb of a container-valued JsonbValue. */
static Jsonb *
JsonbOfValue(JsonbValue *v)
{
	return JsonbValueToJsonb(v);
}

/* Return a new empty JSON object. */
static Jsonb *
EmptyObject(void)
{
	JsonbParseState *state = NULL;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/* The longest value a text field of a task takes, in bytes. */
static int
TextFieldMax(int field)
{
	if (field == TF_DESCRIPTION)
		return IWD_DESCRIPTION_MAX;
	if (field == TF_SUBJECT)
		return IWD_TEXT_MAX;
	return IWD_NAME_MAX;
}

/* Set one draft field from one key of the input document. */
static void
ApplyInputValue(TaskDraft *draft, int field, const char *key, JsonbValue *v)
{
	FieldValue *fv = &draft->f[field];

	fv->given = true;
	if (v->type == jbvNull)
	{
		/* null clears a field; skills and attributes become empty objects */
		fv->isnull = !(field == TF_SKILLS || field == TF_ATTRIBUTES);
		if (!fv->isnull)
			fv->json = EmptyObject();
		return;
	}
	fv->isnull = false;
	switch (task_fields[field].type)
	{
		case FT_TEXT:
			if (v->type != jbvString)
				wrong_type(key, "a string");
			CheckLength("task field", key, v->val.string.len, TextFieldMax(field));
			fv->text = pnstrdup(v->val.string.val, v->val.string.len);
			break;
		case FT_INT:
			fv->num = JsonbIntValue(v, key, PG_INT32_MIN, PG_INT32_MAX);
			break;
		case FT_TIMESTAMP:
			if (v->type != jbvString)
				wrong_type(key, "an ISO 8601 timestamp string");
			fv->ts = ParseTimestampWithZone(pnstrdup(v->val.string.val, v->val.string.len), key);
			break;
		case FT_SKILLS:
			if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
				wrong_type(key, "an object of skill levels");
			ValidateSkills(v->val.binary.data, key);
			fv->json = JsonbOfValue(v);
			break;
		case FT_OBJECT:
			if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
				wrong_type(key, "an object");
			fv->json = JsonbOfValue(v);
			if (VARSIZE(fv->json) - VARHDRSZ > IWD_ATTRIBUTES_MAX)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("task field \"%s\" is larger than %d bytes", key, IWD_ATTRIBUTES_MAX),
						 errdetail("It takes %d bytes as jsonb.", (int) (VARSIZE(fv->json) - VARHDRSZ))));
			break;
		case FT_INT8:
		case FT_BOOL:
			elog(ERROR, "task field \"%s\" is not writable", key);
	}
}

/* Validate the input document and merge it into the draft. */
void
TaskDraftApplyInput(TaskDraft *draft, Jsonb *input, bool creating)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	int			field = -1;

	if (!JB_ROOT_IS_OBJECT(input) || JB_ROOT_IS_SCALAR(input))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a task must be a JSON object")));
	it = JsonbIteratorInit(&input->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			field = TaskFieldByJsonKey(v.val.string.val, v.val.string.len);
			if (field < 0)
			{
				bool		derived = false;

				for (int i = 0; i < (int) lengthof(derived_keys); i++)
					derived |= strcmp(derived_keys[i], key) == 0;
				if (!derived)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("unknown key \"%s\" in task", key),
							 errhint("Free-form data belongs in \"attributes\".")));
			}
			else if (task_fields[field].input == FI_READONLY && field != TF_ID)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("task field \"%s\" cannot be set", key),
						 errdetail("It is maintained by iwd; use the lifecycle functions to change it.")));
			else if (task_fields[field].input == FI_CREATE && !creating)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("task field \"%s\" cannot be changed", key)));
		}
		else if (tok == WJB_VALUE && field >= 0 && field != TF_ID)
		{
			int			target = field;

			if (field == TF_PRIORITY)
				target = TF_PRIORITY_OVERRIDE;
			else if (field == TF_BUSINESS_VALUE)
				target = TF_BUSINESS_VALUE_OVERRIDE;
			ApplyInputValue(draft, target, key, &v);
		}
	}
	if (creating)
	{
		if (draft->f[TF_EXTERNAL_ID].isnull || draft->f[TF_EXTERNAL_ID].text[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("task field \"externalId\" is required")));
		if (draft->f[TF_CAPTURE_POINT].isnull || draft->f[TF_CAPTURE_POINT].text[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("task field \"capturePoint\" is required")));
	}
	if (!draft->f[TF_MEDIA_TYPE].isnull && draft->f[TF_MEDIA_TYPE].text[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("task field \"mediaType\" must not be empty")));
}

/* Build the iwd.task row for the draft. */
static HeapTuple
DraftToTuple(TaskDraft *draft, TupleDesc tupdesc)
{
	Datum	   *values = palloc0(sizeof(Datum) * tupdesc->natts);
	bool	   *nulls = palloc(sizeof(bool) * tupdesc->natts);

	BuildRowMap(tupdesc);
	for (int a = 0; a < tupdesc->natts; a++)
	{
		int			i = row_map.field_of_att[a];
		FieldValue *v;

		nulls[a] = true;
		if (i < 0)
			continue;
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
static void
DraftInit(TaskDraft *draft)
{
	for (int i = 0; i < TF_COUNT; i++)
		draft->f[i].isnull = true;
}

/* Fill what creation sets: times, defaults, status. */
static void
DraftCreateDefaults(TaskDraft *draft, TimestampTz now)
{
	Jsonb	   *empty = EmptyObject();

	draft->f[TF_CREATED_AT] = (FieldValue) {.ts = now};
	draft->f[TF_AGING_FROM] = (FieldValue) {.ts = now};
	draft->f[TF_OVERDUE_FLAGGED] = (FieldValue) {.num = 0};
	if (draft->f[TF_ATTRIBUTES].isnull)
		draft->f[TF_ATTRIBUTES] = (FieldValue) {.json = empty};
	if (draft->f[TF_SKILLS].isnull && !draft->f[TF_SKILLS].given)
		draft->f[TF_SKILLS] = (FieldValue) {.json = empty};
}

/* Decide the status of a task that has just been (re)classified. */
static void
DraftSetEntryStatus(TaskDraft *draft, TimestampTz now)
{
	if (!draft->f[TF_ERROR_REASON].isnull)
		DraftSetText(draft, TF_STATUS, "errorHeld");
	else if (!draft->f[TF_ACTIVATION_AT].isnull && draft->f[TF_ACTIVATION_AT].ts > now)
		DraftSetText(draft, TF_STATUS, "held");
	else
		DraftSetText(draft, TF_STATUS, "queued");
}

/*
 * Is the task waiting for (re)classification to decide its status: restarted
 * (new), parked by an error (errorHeld) or deferred until its activation time
 * (held without a supervisor's reason)?
 */
static bool
DraftIsParked(TaskDraft *draft)
{
	const char *status = draft->f[TF_STATUS].isnull ? "new" : draft->f[TF_STATUS].text;

	return strcmp(status, "new") == 0 || strcmp(status, "errorHeld") == 0 ||
		(strcmp(status, "held") == 0 && draft->f[TF_HOLD_REASON].isnull);
}

PG_FUNCTION_INFO_V1(iwd_prepare_task);

/*
 * SQL: iwd._prepare_task(input jsonb, current iwd.task, at timestamptz) RETURNS iwd.task
 *
 * current IS NULL: a new task from input. Otherwise input is a patch (may be
 * NULL for re-classification only) over current. Never writes anything.
 */
Datum
iwd_prepare_task(PG_FUNCTION_ARGS)
{
	TaskDraft	draft;
	TupleDesc	tupdesc;
	TimestampTz now = PG_ARGISNULL(2) ? IwdNow() : PG_GETARG_TIMESTAMPTZ(2);
	bool		creating = PG_ARGISNULL(1);
	char	   *old_category = NULL;
	bool		parked = false;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "iwd._prepare_task must return a row");
	tupdesc = BlessTupleDesc(tupdesc);
	memset(&draft, 0, sizeof(draft));
	DraftInit(&draft);
	if (!creating)
	{
		DraftFromTuple(&draft, PG_GETARG_HEAPTUPLEHEADER(1));
		if (!draft.f[TF_CATEGORY].isnull)
			old_category = pstrdup(draft.f[TF_CATEGORY].text);
		parked = DraftIsParked(&draft);
	}
	else if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a task must be a JSON object")));
	if (!PG_ARGISNULL(0))
		TaskDraftApplyInput(&draft, PG_GETARG_JSONB_P(0), creating);
	if (creating)
		DraftCreateDefaults(&draft, now);
	else
		draft.f[TF_ERROR_REASON].isnull = true;

	ClassifyTask(&draft, old_category, creating, now);
	ScoreTask(&draft, now);
	if (creating || parked || !draft.f[TF_ERROR_REASON].isnull)
		DraftSetEntryStatus(&draft, now);
	PG_RETURN_DATUM(HeapTupleGetDatum(DraftToTuple(&draft, tupdesc)));
}

PG_FUNCTION_INFO_V1(iwd_rescore);

/*
 * SQL: iwd._rescore(task iwd.task, at timestamptz) RETURNS iwd.task
 *
 * The task with priority, business value and next reprioritization time
 * recomputed at "at" (the scheduler's reprioritization step).
 */
Datum
iwd_rescore(PG_FUNCTION_ARGS)
{
	TaskDraft	draft;
	TupleDesc	tupdesc;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "iwd._rescore must return a row");
	tupdesc = BlessTupleDesc(tupdesc);
	memset(&draft, 0, sizeof(draft));
	DraftInit(&draft);
	DraftFromTuple(&draft, PG_GETARG_HEAPTUPLEHEADER(0));
	ScoreTask(&draft, PG_GETARG_TIMESTAMPTZ(1));
	PG_RETURN_DATUM(HeapTupleGetDatum(DraftToTuple(&draft, tupdesc)));
}

/* Append a key to a JSON object under construction. */
static void
PushKey(JsonbParseState **state, const char *key)
{
	JsonbValue	k = {.type = jbvString};

	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &k);
}

/* Append a string value. */
static void
PushString(JsonbParseState **state, const char *str)
{
	JsonbValue	v = {.type = jbvString};

	v.val.string.val = (char *) str;
	v.val.string.len = strlen(str);
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* Write v as exactly width decimal digits. */
static char *
PutDigits(char *p, int v, int width)
{
	for (int i = width - 1; i >= 0; i--)
	{
		p[i] = '0' + v % 10;
		v /= 10;
	}
	return p + width;
}

/* A timestamp in the REST shape: ISO 8601 in UTC with a "Z", microseconds only when there are some. */
static char *
IsoTimestamp(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;
	char	   *buf;
	char	   *p;

	if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		return pstrdup(TIMESTAMP_IS_NOBEGIN(ts) ? "-infinity" : "infinity");
	if ((tm.tm_year < 0 || tm.tm_year > 9999) && fsec == 0)
		return psprintf("%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year, tm.tm_mon, tm.tm_mday,
						tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (tm.tm_year < 0 || tm.tm_year > 9999)
		return psprintf("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year, tm.tm_mon, tm.tm_mday,
						tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
	/* written by hand: this runs for every timestamp of every task document */
	buf = p = palloc(sizeof("YYYY-MM-DDTHH:MM:SS.ffffffZ"));
	p = PutDigits(p, tm.tm_year, 4);
	*p++ = '-';
	p = PutDigits(p, tm.tm_mon, 2);
	*p++ = '-';
	p = PutDigits(p, tm.tm_mday, 2);
	*p++ = 'T';
	p = PutDigits(p, tm.tm_hour, 2);
	*p++ = ':';
	p = PutDigits(p, tm.tm_min, 2);
	*p++ = ':';
	p = PutDigits(p, tm.tm_sec, 2);
	if (fsec != 0)
	{
		*p++ = '.';
		p = PutDigits(p, (int) fsec, 6);
	}
	*p++ = 'Z';
	*p = '\0';
	return buf;
}

/* Append the value of one draft field (JSON null when unset). */
static void
PushField(JsonbParseState **state, FieldValue *v, FieldType type)
{
	JsonbValue	jv = {.type = jbvNull};

	if (v->isnull)
	{
		pushJsonbValue(state, WJB_VALUE, &jv);
		return;
	}
	switch (type)
	{
		case FT_TEXT:
			PushString(state, v->text);
			return;
		case FT_TIMESTAMP:
			PushString(state, IsoTimestamp(v->ts));
			return;
		case FT_INT:
		case FT_INT8:
			jv.type = jbvNumeric;
			jv.val.numeric = int64_to_numeric(v->num);
			break;
		case FT_BOOL:
			jv.type = jbvBool;
			jv.val.boolean = v->num != 0;
			break;
		case FT_SKILLS:
		case FT_OBJECT:
			jv.type = jbvBinary;
			jv.val.binary.data = &v->json->root;
			jv.val.binary.len = VARSIZE(v->json) - VARHDRSZ;
			break;
	}
	pushJsonbValue(state, WJB_VALUE, &jv);
}

/*
 * The keys of a task document in the order jsonb stores object keys (shorter
 * first, then bytewise): task_fields indexes, -1 for "overdue". Pushed in this
 * order, a document's keys are found already sorted when the object is
 * closed, instead of being sorted for every document.
 */
static int	json_order[TF_COUNT + 1];
static int	json_order_n = -1;

static const char *
JsonOrderKey(int i)
{
	return i < 0 ? "overdue" : task_fields[i].json_key;
}

static int
JsonOrderCmp(const void *a, const void *b)
{
	const char *ka = JsonOrderKey(*(const int *) a);
	const char *kb = JsonOrderKey(*(const int *) b);
	size_t		la = strlen(ka);
	size_t		lb = strlen(kb);

	if (la != lb)
		return la < lb ? -1 : 1;
	return memcmp(ka, kb, la);
}

static void
JsonOrderInit(void)
{
	int			n = 0;

	if (json_order_n >= 0)
		return;
	for (int i = 0; i < TF_COUNT; i++)
		if (task_fields[i].json_key != NULL)
			json_order[n++] = i;
	json_order[n++] = -1;
	qsort(json_order, n, sizeof(int), JsonOrderCmp);
	json_order_n = n;
}

/*
 * Push the task in the REST shape onto a JSON value under construction:
 * every field with a REST name, extended attributes only when set, and
 * "overdue" derived from the due time and the completion time (or the iwd
 * clock). rec is a row of iwd.task or of iwd.task_closed (columns are matched
 * by name). Returns what pushJsonbValue returns for the end of the object.
 */
static JsonbValue *
PushTask(JsonbParseState **state, HeapTupleHeader rec)
{
	TaskDraft	draft;
	JsonbValue	overdue = {.type = jbvBool};
	FieldValue *due;
	FieldValue *completed;

	memset(&draft, 0, sizeof(draft));
	DraftInit(&draft);
	DraftFromTuple(&draft, rec);
	JsonOrderInit();
	due = &draft.f[TF_DUE_AT];
	completed = &draft.f[TF_COMPLETED_AT];
	overdue.val.boolean = !due->isnull && (completed->isnull ? IwdNow() : completed->ts) > due->ts;
	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
	for (int k = 0; k < json_order_n; k++)
	{
		int			i = json_order[k];

		if (i < 0)
		{
			PushKey(state, "overdue");
			pushJsonbValue(state, WJB_VALUE, &overdue);
			continue;
		}
		if (i >= TF_CUSTOMER_ID && draft.f[i].isnull)
			continue;
		PushKey(state, task_fields[i].json_key);
		PushField(state, &draft.f[i], task_fields[i].type);
	}
	return pushJsonbValue(state, WJB_END_OBJECT, NULL);
}

/* The task in the REST shape. */
static Jsonb *
TaskJson(HeapTupleHeader rec)
{
	JsonbParseState *state = NULL;

	return JsonbValueToJsonb(PushTask(&state, rec));
}

PG_FUNCTION_INFO_V1(iwd_tasks_json);

/*
 * SQL: iwd._tasks_json(tasks iwd.task[]) RETURNS jsonb
 *
 * The tasks in the REST shape, as one JSON array in the array's order: built
 * in one pass and serialized once (jsonb_agg over task_json would take every
 * document apart again to add it to the array).
 */
Datum
iwd_tasks_json(PG_FUNCTION_ARGS)
{
	ArrayType  *tasks = PG_GETARG_ARRAYTYPE_P(0);
	JsonbParseState *state = NULL;
	JsonbValue	null = {.type = jbvNull};
	JsonbValue *result;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	get_typlenbyvalalign(ARR_ELEMTYPE(tasks), &typlen, &typbyval, &typalign);
	deconstruct_array(tasks, ARR_ELEMTYPE(tasks), typlen, typbyval, typalign, &elems, &nulls, &n);
	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			pushJsonbValue(&state, WJB_ELEM, &null);
		else
			PushTask(&state, DatumGetHeapTupleHeader(elems[i]));
	}
	result = pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(result));
}

PG_FUNCTION_INFO_V1(iwd_task_json);

/* SQL: iwd.task_json(t iwd.task) RETURNS jsonb */
Datum
iwd_task_json(PG_FUNCTION_ARGS)
{
	PG_RETURN_JSONB_P(TaskJson(PG_GETARG_HEAPTUPLEHEADER(0)));
}

/*
 * The row of iwd.<relname> whose primary key is id, as a composite datum in
 * the current memory context, read through the primary key index with the
 * statement's snapshot; false when there is none. The caller needs SELECT on
 * the table, as a query would.
 */
static bool
FetchTaskRow(const char *relname, int64 id, Datum *row)
{
	Oid			relid = get_relname_relid(relname, get_namespace_oid("iwd", false));
	AclResult	acl;
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;
	bool		found;

	if (!OidIsValid(relid))
		elog(ERROR, "relation iwd.%s does not exist", relname);
	acl = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, relname);
	/* a direct read would bypass row-level policies: refuse rather than show rows a query would hide */
	if (check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("iwd.get_task does not read iwd.%s under row-level security", relname)));
	rel = table_open(relid, AccessShareLock);
	index = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(id));
	slot = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, index, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found)
		*row = ExecFetchSlotHeapTupleDatum(slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	/* the locks are kept until the end of the transaction, as a query's are */
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return found;
}

/* Append at most max bytes of t to buf, cut at a character boundary. */
static void
AppendPrefix(StringInfo buf, text *t, int max)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	appendBinaryStringInfo(buf, s, len <= max ? len : pg_mbcliplen(s, len, max));
}

/* The string and number values of a jsonb document, up to max bytes of them, separated by spaces. */
static text *
JsonbValuesPrefix(Jsonb *doc, int max)
{
	StringInfoData buf;
	JsonbIterator *it = JsonbIteratorInit(&doc->root);
	JsonbValue	v;
	JsonbIteratorToken tok;

	initStringInfo(&buf);
	while (buf.len < max && (tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		text	   *value;

		if (tok != WJB_VALUE && tok != WJB_ELEM)
			continue;
		if (v.type == jbvString)
			value = cstring_to_text_with_len(v.val.string.val, v.val.string.len);
		else if (v.type == jbvNumeric)
			value = cstring_to_text(DatumGetCString(DirectFunctionCall1(numeric_out,
																		 NumericGetDatum(v.val.numeric))));
		else
			continue;
		AppendPrefix(&buf, value, max - buf.len);
		appendStringInfoChar(&buf, ' ');
	}
	return cstring_to_text_with_len(buf.data, buf.len);
}

PG_FUNCTION_INFO_V1(iwd_document);

/*
 * SQL: iwd._document(subject text, description text, attributes jsonb) RETURNS tsvector
 *
 * The full-text search document of a task ('simple' configuration): the
 * first IWD_DOCUMENT_TEXT_MAX bytes of subject and description, and the
 * string and number values of attributes (those of a document larger than
 * IWD_ATTRIBUTES_MAX, which only plain SQL can store, up to that many bytes).
 * Its lexemes stay below a third of tsvector's 1 MB whatever the task holds,
 * so that search never makes a capture fail.
 */
Datum
iwd_document(PG_FUNCTION_ARGS)
{
	static Oid	simple = InvalidOid;
	static Datum filter = (Datum) 0;
	StringInfoData buf;
	Datum		document;

	if (!OidIsValid(simple))
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		filter = DirectFunctionCall1(jsonb_in, CStringGetDatum("[\"string\", \"numeric\"]"));
		MemoryContextSwitchTo(old);
		simple = get_ts_config_oid(list_make2(makeString("pg_catalog"), makeString("simple")), false);
	}
	initStringInfo(&buf);
	if (!PG_ARGISNULL(0))
		AppendPrefix(&buf, PG_GETARG_TEXT_PP(0), IWD_DOCUMENT_TEXT_MAX);
	appendStringInfoChar(&buf, ' ');
	if (!PG_ARGISNULL(1))
		AppendPrefix(&buf, PG_GETARG_TEXT_PP(1), IWD_DOCUMENT_TEXT_MAX - buf.len);
	document = DirectFunctionCall2(to_tsvector_byid, ObjectIdGetDatum(simple),
								   PointerGetDatum(cstring_to_text_with_len(buf.data, buf.len)));
	if (!PG_ARGISNULL(2))
	{
		Jsonb	   *attributes = PG_GETARG_JSONB_P(2);
		Datum		values;

		if (VARSIZE(attributes) - VARHDRSZ <= IWD_ATTRIBUTES_MAX)
			values = DirectFunctionCall3(jsonb_to_tsvector_byid, ObjectIdGetDatum(simple),
										 JsonbPGetDatum(attributes), filter);
		else
			values = DirectFunctionCall2(to_tsvector_byid, ObjectIdGetDatum(simple),
										 PointerGetDatum(JsonbValuesPrefix(attributes, IWD_ATTRIBUTES_MAX)));
		document = DirectFunctionCall2(tsvector_concat, document, values);
	}
	PG_RETURN_DATUM(document);
}

PG_FUNCTION_INFO_V1(iwd_get_task);

/*
 * SQL: iwd.get_task(id bigint) RETURNS jsonb
 *
 * One task, open or closed, in the REST shape; SQLSTATE P0002 when there is
 * none. The read behind GET /tasks/{id}: two primary-key probes at most, no
 * executor and no planner, so that it costs little more than the protocol
 * round trip around it. Both probes use the same snapshot, so a task moving
 * to iwd.task_closed concurrently is found on one side or the other.
 */
Datum
iwd_get_task(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	Datum		row;

	if (!FetchTaskRow("task", id, &row) && !FetchTaskRow("task_closed", id, &row))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("task " INT64_FORMAT " does not exist", id)));
	PG_RETURN_JSONB_P(TaskJson(DatumGetHeapTupleHeader(row)));
}
