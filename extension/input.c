/*-------------------------------------------------------------------------
 * input.c
 *	  Validation of a task document sent by a client (REST shape, camelCase
 *	  keys) and its merge into the draft: every unknown key, wrong type,
 *	  malformed or oversized value is an error naming the field. Also the
 *	  bounds checks the configuration's input shares (names, maps of levels).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "draft.h"
#include "input.h"
#include "iwd.h"

#define SKILL_LEVEL_MIN 0
#define SKILL_LEVEL_MAX IWD_SKILL_LEVEL_MAX

/* Keys of the task document that are derived on output and ignored on input. */
static const char *const derived_keys[] = {"overdue"};

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
			fv->json = EmptyJsonbObject();
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
