/*-------------------------------------------------------------------------
 * config.c
 *	  Per-backend cache of categories and rules, and the rule language.
 *
 * Every task creation and every reprioritization reads the categories and
 * rules, so each backend keeps them parsed in memory. A statement trigger on
 * the configuration tables sends a relcache invalidation for the table it
 * changed; every backend's callback then drops its copy, which is reloaded on
 * next use. The invalidation is transactional: other backends see the new
 * configuration exactly when it commits.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"

#include "config.h"
#include "draft.h"
#include "input.h"
#include "iwd.h"

#define CONFIG_RELATIONS 3

static MemoryContext config_cxt = NULL;
static IwdConfig *config = NULL;
static Oid	config_relids[CONFIG_RELATIONS];

/* Drop the cached configuration when one of its tables changes. */
static void
config_inval_callback(Datum arg, Oid relid)
{
	if (config == NULL)
		return;
	for (int i = 0; i < CONFIG_RELATIONS; i++)
		if (relid == InvalidOid || relid == config_relids[i])
			config = NULL;
}

/* Register the invalidation callback (once per backend). */
void
ConfigCacheInit(void)
{
	CacheRegisterRelcacheCallback(config_inval_callback, (Datum) 0);
}

/* Raise the error for an invalid rule. */
static void
pg_attribute_noreturn()
rule_error(const char *msg, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid rule: %s", msg),
			 detail ? errdetail("%s", detail) : 0));
}

/* Find key in a JSON object container; NULL when absent. */
static JsonbValue *
ObjectKey(JsonbContainer *obj, const char *key)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), NULL);
}

/* Convert a scalar JSON value to a rule value. */
static RuleValue
ScalarRuleValue(JsonbValue *v, bool timestamp_field)
{
	RuleValue	r = {.kind = RV_NULL};

	switch (v->type)
	{
		case jbvNull:
			break;
		case jbvString:
			r.kind = RV_STRING;
			r.str = pnstrdup(v->val.string.val, v->val.string.len);
			if (timestamp_field)
			{
				TimestampTz ts;

				if (!IwdParseTimestamptz(r.str, &ts))
					rule_error(psprintf("\"%s\" is not a timestamp with time zone", r.str), NULL);
				r.kind = RV_NUMBER;
				r.num = (double) ts / USECS_PER_SEC;
			}
			break;
		case jbvNumeric:
			r.kind = RV_NUMBER;
			r.num = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v->val.numeric)));
			break;
		case jbvBool:
			r.kind = RV_BOOL;
			r.b = v->val.boolean;
			break;
		default:
			rule_error("a condition value must be a string, number, boolean or null", NULL);
	}
	return r;
}

/* Resolve a condition's field name into a task field, virtual field and path. */
static void
ParseFieldRef(RuleCond *cond, const char *name)
{
	const char *dot = strchr(name, '.');
	int			len = dot ? dot - name : (int) strlen(name);

	cond->npath = 0;
	if (strcmp(name, "ageMinutes") == 0)
		cond->field = FIELD_AGE_MINUTES;
	else if (strcmp(name, "dueInMinutes") == 0)
		cond->field = FIELD_DUE_IN_MINUTES;
	else if (strcmp(name, "overdue") == 0)
		cond->field = FIELD_OVERDUE;
	else if ((cond->field = TaskFieldByJsonKey(name, len)) < 0 ||
			 (dot != NULL && cond->field != TF_ATTRIBUTES && cond->field != TF_SKILLS) ||
			 (dot == NULL && cond->field == TF_SKILLS))
		rule_error(psprintf("unknown field \"%s\" in condition", name),
				   "Use a task field (\"customerSegment\"), \"attributes.<path>\", \"skills.<name>\", "
				   "\"ageMinutes\", \"dueInMinutes\" or \"overdue\".");
	if (dot != NULL)
	{
		char	   *rest = pstrdup(dot + 1);
		char	   *part;

		cond->path = palloc(sizeof(char *) * (strlen(rest) + 1));
		for (part = strtok(rest, "."); part != NULL; part = strtok(NULL, "."))
			cond->path[cond->npath++] = part;
		if (cond->npath == 0)
			rule_error(psprintf("empty path in condition field \"%s\"", name), NULL);
	}
}

/* Parse a comparison operator. */
static CondOp
ParseOp(const char *op)
{
	static const struct
	{
		const char *name;
		CondOp		op;
	}			ops[] = {
		{"=", OP_EQ}, {"==", OP_EQ}, {"!=", OP_NE}, {"<>", OP_NE}, {"<", OP_LT}, {"<=", OP_LE},
		{">", OP_GT}, {">=", OP_GE}, {"in", OP_IN}, {"notIn", OP_NOT_IN}, {"contains", OP_CONTAINS},
		{"startsWith", OP_STARTS_WITH}, {"exists", OP_EXISTS}
	};

	for (int i = 0; i < (int) lengthof(ops); i++)
		if (strcmp(ops[i].name, op) == 0)
			return ops[i].op;
	rule_error(psprintf("unknown operator \"%s\"", op),
			   "Operators: = != < <= > >= in notIn contains startsWith exists.");
}

/* Parse a leaf condition {"field","op","value"}. */
static void
ParseLeaf(RuleCond *cond, JsonbContainer *obj)
{
	JsonbValue *field = ObjectKey(obj, "field");
	JsonbValue *op = ObjectKey(obj, "op");
	JsonbValue *value = ObjectKey(obj, "value");
	bool		ts_field;

	if (field == NULL || field->type != jbvString)
		rule_error("a condition needs \"field\" (a string)", NULL);
	if (op == NULL || op->type != jbvString)
		rule_error("a condition needs \"op\" (a string)", NULL);
	cond->kind = COND_LEAF;
	ParseFieldRef(cond, pnstrdup(field->val.string.val, field->val.string.len));
	cond->op = ParseOp(pnstrdup(op->val.string.val, op->val.string.len));
	ts_field = cond->field >= 0 && cond->npath == 0 && task_fields[cond->field].type == FT_TIMESTAMP;
	if (cond->op == OP_IN || cond->op == OP_NOT_IN)
	{
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;

		if (value == NULL || value->type != jbvBinary || !JsonContainerIsArray(value->val.binary.data))
			rule_error("operators in and notIn need an array \"value\"", NULL);
		cond->values = palloc(sizeof(RuleValue) * (JsonContainerSize(value->val.binary.data) + 1));
		it = JsonbIteratorInit(value->val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_ELEM)
				cond->values[cond->nvalues++] = ScalarRuleValue(&v, ts_field);
		return;
	}
	cond->values = palloc(sizeof(RuleValue));
	cond->nvalues = 1;
	if (cond->op == OP_EXISTS)
	{
		cond->values[0] = (RuleValue) {.kind = RV_BOOL, .b = true};
		if (value != NULL && value->type != jbvBool)
			rule_error("operator exists takes a boolean \"value\"", NULL);
		if (value != NULL)
			cond->values[0].b = value->val.boolean;
		return;
	}
	if (value == NULL)
		rule_error("a condition needs a \"value\"", NULL);
	cond->values[0] = ScalarRuleValue(value, ts_field);
	if ((cond->op == OP_CONTAINS || cond->op == OP_STARTS_WITH) && cond->values[0].kind != RV_STRING)
		rule_error("operators contains and startsWith need a string \"value\"", NULL);
}

/* Parse a condition tree (in the current memory context); depth counts the enclosing "all", "any", "not". */
static RuleCond *
ParseCondContainer(JsonbContainer *obj, int depth)
{
	RuleCond   *cond = palloc0(sizeof(RuleCond));
	JsonbValue *all,
			   *any,
			   *not;

	if (!JsonContainerIsObject(obj))
		rule_error("a condition must be a JSON object", NULL);
	if (depth > IWD_CONDITION_DEPTH_MAX)
		rule_error(psprintf("conditions nest deeper than %d levels", IWD_CONDITION_DEPTH_MAX), NULL);
	all = ObjectKey(obj, "all");
	any = ObjectKey(obj, "any");
	not = ObjectKey(obj, "not");
	if (JsonContainerSize(obj) == 0)
		cond->kind = COND_ALL;
	else if (all != NULL || any != NULL)
	{
		JsonbValue *list = all ? all : any;
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;

		if (JsonContainerSize(obj) != 1)
			rule_error("\"all\" and \"any\" must stand alone in their object", NULL);
		if (list->type != jbvBinary || !JsonContainerIsArray(list->val.binary.data))
			rule_error("\"all\" and \"any\" take an array of conditions", NULL);
		cond->kind = all ? COND_ALL : COND_ANY;
		cond->children = palloc(sizeof(RuleCond *) * (JsonContainerSize(list->val.binary.data) + 1));
		it = JsonbIteratorInit(list->val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok != WJB_ELEM)
				continue;
			if (v.type != jbvBinary)
				rule_error("a condition must be a JSON object", NULL);
			cond->children[cond->nchildren++] = ParseCondContainer(v.val.binary.data, depth + 1);
		}
	}
	else if (not != NULL)
	{
		if (JsonContainerSize(obj) != 1 || not->type != jbvBinary)
			rule_error("\"not\" takes one condition object and stands alone", NULL);
		cond->kind = COND_NOT;
		cond->nchildren = 1;
		cond->children = palloc(sizeof(RuleCond *));
		cond->children[0] = ParseCondContainer(not->val.binary.data, depth + 1);
	}
	else
		ParseLeaf(cond, obj);
	return cond;
}

/* Parse a rule condition into cxt; raises 22023 on an invalid condition. */
RuleCond *
ParseRuleCond(Jsonb *cond, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	RuleCond   *result;

	if (JB_ROOT_IS_SCALAR(cond) || !JB_ROOT_IS_OBJECT(cond))
		rule_error("\"when\" must be a JSON object", NULL);
	result = ParseCondContainer(&cond->root, 0);
	MemoryContextSwitchTo(old);
	return result;
}

/* Check a rule's "set.skills": the bounds of a task's skills, levels 0..10. */
static void
CheckRuleSkills(JsonbContainer *skills)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;

	CheckMapBounds(skills, "invalid rule:", "skills", IWD_TASK_SKILLS_MAX, IWD_SKILL_NAME_MAX);
	it = JsonbIteratorInit(skills);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		bool		err = false;
		int			level;

		if (tok == WJB_KEY)
		{
			name = pnstrdup(v.val.string.val, v.val.string.len);
			if (name[0] == '\0')
				rule_error("\"skills\" must not contain an empty skill name", NULL);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		level = v.type == jbvNumeric ? numeric_int4_opt_error(v.val.numeric, &err) : -1;
		if (v.type != jbvNumeric || err || level < 0 || level > IWD_SKILL_LEVEL_MAX ||
			!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v.val.numeric),
											  NumericGetDatum(int64_to_numeric(level)))))
			rule_error(psprintf("\"skills.%s\" must be an integer level", name),
					   psprintf("Levels are 0 to %d.", IWD_SKILL_LEVEL_MAX));
	}
}

/* Parse a priority adjustment: 50, "=50", "+10" or "-5". */
static void
ParseAdjust(JsonbValue *v, const char *key, AdjustOp *op, int *arg)
{
	char	   *s;
	char	   *end;
	long		n;

	if (v->type == jbvNumeric)
	{
		bool		err = false;

		*op = ADJ_SET;
		*arg = numeric_int4_opt_error(v->val.numeric, &err);
		if (err)
			rule_error(psprintf("\"%s\" is out of range", key), NULL);
		return;
	}
	if (v->type != jbvString || v->val.string.len < 2)
		rule_error(psprintf("\"%s\" must be an integer or a string \"=N\", \"+N\" or \"-N\"", key), NULL);
	s = pnstrdup(v->val.string.val, v->val.string.len);
	errno = 0;
	n = strtol(s + 1, &end, 10);
	if (*end != '\0' || errno != 0 || n > PG_INT32_MAX || n < 0 || !isdigit((unsigned char) s[1]) ||
		(s[0] != '=' && s[0] != '+' && s[0] != '-'))
		rule_error(psprintf("\"%s\" must be an integer or a string \"=N\", \"+N\" or \"-N\"", key),
				   psprintf("Got \"%s\".", s));
	*op = s[0] == '=' ? ADJ_SET : ADJ_ADD;
	*arg = s[0] == '-' ? (int) -n : (int) n;
}

/* Parse a rule's "set" into the rule (in cxt); raises 22023 when invalid. */
void
ParseRuleEffect(RuleDef *rule, Jsonb *effect, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	if (JB_ROOT_IS_SCALAR(effect) || !JB_ROOT_IS_OBJECT(effect) || JB_ROOT_COUNT(effect) == 0)
		rule_error("\"set\" must be a non-empty JSON object", NULL);
	rule->set_fields = palloc(sizeof(TaskField) * JB_ROOT_COUNT(effect));
	rule->set_text = palloc0(sizeof(char *) * JB_ROOT_COUNT(effect));
	rule->set_json = palloc0(sizeof(Jsonb *) * JB_ROOT_COUNT(effect));
	it = JsonbIteratorInit(&effect->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		if (!rule->classification)
		{
			if (strcmp(key, "priority") == 0)
				ParseAdjust(&v, key, &rule->priority_op, &rule->priority_arg);
			else if (strcmp(key, "businessValue") == 0)
				ParseAdjust(&v, key, &rule->value_op, &rule->value_arg);
			else
				rule_error(psprintf("a prioritization rule cannot set \"%s\"", key),
						   "It sets \"priority\" and \"businessValue\".");
			continue;
		}
		if (strcmp(key, "skills") == 0)
		{
			if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
				rule_error("\"skills\" must be an object of skill levels", NULL);
			CheckRuleSkills(v.val.binary.data);
			rule->set_fields[rule->nsets] = TF_SKILLS;
			rule->set_json[rule->nsets++] = JsonbValueToJsonb(&v);
			continue;
		}
		if (strcmp(key, "category") != 0 && strcmp(key, "department") != 0 && strcmp(key, "process") != 0 &&
			strcmp(key, "queue") != 0 && strcmp(key, "customerSegment") != 0 && strcmp(key, "mediaType") != 0)
			rule_error(psprintf("a classification rule cannot set \"%s\"", key),
					   "It sets category, department, process, queue, customerSegment, mediaType and skills.");
		if (v.type != jbvString || v.val.string.len == 0)
			rule_error(psprintf("\"%s\" must be a non-empty string", key), NULL);
		CheckLength("invalid rule:", key, v.val.string.len, IWD_NAME_MAX);
		rule->set_fields[rule->nsets] = TaskFieldByJsonKey(key, strlen(key));
		rule->set_text[rule->nsets++] = pnstrdup(v.val.string.val, v.val.string.len);
	}
	MemoryContextSwitchTo(old);
}

/* Copy a nullable text column of the current SPI row into the cache. */
static char *
SpiText(HeapTuple tuple, int col)
{
	char	   *s = SPI_getvalue(tuple, SPI_tuptable->tupdesc, col);

	return s ? MemoryContextStrdup(config_cxt, s) : NULL;
}

/* Read an int column of the current SPI row (0 when NULL). */
static int
SpiInt(HeapTuple tuple, int col, bool *isnull)
{
	bool		null;
	Datum		d = SPI_getbinval(tuple, SPI_tuptable->tupdesc, col, &null);

	if (isnull)
		*isnull = null;
	return null ? 0 : DatumGetInt32(d);
}

/* Read a jsonb column of the current SPI row, copied into the cache. */
static Jsonb *
SpiJsonb(HeapTuple tuple, int col)
{
	bool		null;
	Datum		d = SPI_getbinval(tuple, SPI_tuptable->tupdesc, col, &null);
	MemoryContext old;
	Jsonb	   *j;

	if (null)
		return NULL;
	old = MemoryContextSwitchTo(config_cxt);
	j = DatumGetJsonbPCopy(d);
	MemoryContextSwitchTo(old);
	return j;
}

/* Load the categories into the new configuration. */
static void
LoadCategories(IwdConfig *cfg)
{
	if (SPI_execute("SELECT name, department, process, priority, business_value, sla_minutes, calendar, "
					"skills, queue, media_type, reprioritize_step, reprioritize_every_min, reprioritize_max, "
					"urgency_within_min, urgency_step FROM iwd.category ORDER BY name", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read iwd.category");
	cfg->ncategories = SPI_processed;
	cfg->categories = MemoryContextAllocZero(config_cxt, sizeof(CategoryDef) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		CategoryDef *c = &cfg->categories[i];
		bool		null;

		c->name = SpiText(t, 1);
		c->department = SpiText(t, 2);
		c->process = SpiText(t, 3);
		c->priority = SpiInt(t, 4, NULL);
		c->business_value = SpiInt(t, 5, NULL);
		c->sla_minutes = SpiInt(t, 6, NULL);
		c->calendar = SpiText(t, 7);
		c->skills = SpiJsonb(t, 8);
		c->queue = SpiText(t, 9);
		c->media_type = SpiText(t, 10);
		c->reprioritize_step = SpiInt(t, 11, NULL);
		c->reprioritize_every_min = SpiInt(t, 12, NULL);
		c->reprioritize_max = SpiInt(t, 13, &null);
		c->has_reprioritize_max = !null;
		c->urgency_within_min = SpiInt(t, 14, NULL);
		c->urgency_step = SpiInt(t, 15, NULL);
	}
}

/* Load the enabled rules into the new configuration, in evaluation order. */
static void
LoadRules(IwdConfig *cfg)
{
	/* the operator qualified: this may run under a caller's search_path (iwd._prepare_task called directly) */
	if (SPI_execute("SELECT kind OPERATOR(pg_catalog.=) 'classification', name, ord, department, process, "
					"cond, effect FROM iwd.rule WHERE enabled ORDER BY kind, "
					"CASE WHEN process IS NOT NULL THEN 2 WHEN department IS NOT NULL THEN 1 ELSE 0 END, "
					"ord, name", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read iwd.rule");
	cfg->classification = MemoryContextAllocZero(config_cxt, sizeof(RuleDef) * (SPI_processed + 1));
	cfg->prioritization = MemoryContextAllocZero(config_cxt, sizeof(RuleDef) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		bool		null;
		bool		classification = DatumGetBool(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &null));
		RuleDef    *r = classification ? &cfg->classification[cfg->nclassification++]
			: &cfg->prioritization[cfg->nprioritization++];

		r->classification = classification;
		r->name = SpiText(t, 2);
		r->ord = SpiInt(t, 3, NULL);
		r->department = SpiText(t, 4);
		r->process = SpiText(t, 5);
		r->cond = ParseRuleCond(SpiJsonb(t, 6), config_cxt);
		ParseRuleEffect(r, SpiJsonb(t, 7), config_cxt);
	}
}

/* Remember the relations whose changes invalidate the cache. */
static void
WatchConfigRelations(void)
{
	Oid			nsp = get_namespace_oid("iwd", false);

	config_relids[0] = get_relname_relid("category", nsp);
	config_relids[1] = get_relname_relid("rule", nsp);
	config_relids[2] = get_relname_relid("calendar", nsp);
}

/* Return the current configuration, loading it when the cache is stale. */
IwdConfig *
GetIwdConfig(void)
{
	IwdConfig  *cfg;

	if (config != NULL)
		return config;
	if (config_cxt == NULL)
		config_cxt = AllocSetContextCreate(CacheMemoryContext, "iwd configuration",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(config_cxt);
	WatchConfigRelations();
	SPI_connect();
	cfg = MemoryContextAllocZero(config_cxt, sizeof(IwdConfig));
	PG_TRY();
	{
		LoadCategories(cfg);
		LoadRules(cfg);
	}
	PG_FINALLY();
	{
		SPI_finish();
	}
	PG_END_TRY();
	config = cfg;
	return config;
}

/* Return the category with this name, or NULL. */
CategoryDef *
FindCategory(IwdConfig *cfg, const char *name)
{
	int			lo = 0,
				hi = cfg->ncategories - 1;

	if (name == NULL)
		return NULL;
	/* loaded ORDER BY name; the database collation may differ from strcmp, so fall back */
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			c = strcmp(cfg->categories[mid].name, name);

		if (c == 0)
			return &cfg->categories[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	for (int i = 0; i < cfg->ncategories; i++)
		if (strcmp(cfg->categories[i].name, name) == 0)
			return &cfg->categories[i];
	return NULL;
}

/* The value of a JSON path below an object, as a rule value. */
static RuleValue
JsonPathValue(Jsonb *json, char **path, int npath)
{
	JsonbContainer *c = json ? &json->root : NULL;
	JsonbValue *v = NULL;

	for (int i = 0; i < npath; i++)
	{
		if (c == NULL || !JsonContainerIsObject(c))
			return (RuleValue) {.kind = RV_NULL};
		v = ObjectKey(c, path[i]);
		if (v == NULL)
			return (RuleValue) {.kind = RV_NULL};
		c = v->type == jbvBinary ? v->val.binary.data : NULL;
	}
	if (v == NULL || v->type == jbvBinary)
		return (RuleValue) {.kind = RV_NULL};
	return ScalarRuleValue(v, false);
}

/* The value of a condition's field for this task at "now". */
static RuleValue
FieldRuleValue(RuleCond *cond, TaskDraft *draft, TimestampTz now)
{
	FieldValue *f;

	switch (cond->field)
	{
		case FIELD_AGE_MINUTES:
			return (RuleValue) {.kind = RV_NUMBER,
				.num = floor((double) (now - draft->f[TF_CREATED_AT].ts) / USECS_PER_MINUTE)};
		case FIELD_DUE_IN_MINUTES:
			if (draft->f[TF_DUE_AT].isnull)
				return (RuleValue) {.kind = RV_NULL};
			return (RuleValue) {.kind = RV_NUMBER,
				.num = floor((double) (draft->f[TF_DUE_AT].ts - now) / USECS_PER_MINUTE)};
		case FIELD_OVERDUE:
			return (RuleValue) {.kind = RV_BOOL,
				.b = !draft->f[TF_DUE_AT].isnull && draft->f[TF_DUE_AT].ts < now};
	}
	f = &draft->f[cond->field];
	if (cond->npath > 0)
		return f->isnull ? (RuleValue) {.kind = RV_NULL} : JsonPathValue(f->json, cond->path, cond->npath);
	if (f->isnull)
		return (RuleValue) {.kind = RV_NULL};
	switch (task_fields[cond->field].type)
	{
		case FT_TEXT:
			return (RuleValue) {.kind = RV_STRING, .str = f->text};
		case FT_INT:
		case FT_INT8:
			return (RuleValue) {.kind = RV_NUMBER, .num = (double) f->num};
		case FT_TIMESTAMP:
			return (RuleValue) {.kind = RV_NUMBER, .num = (double) f->ts / USECS_PER_SEC};
		case FT_BOOL:
			return (RuleValue) {.kind = RV_BOOL, .b = f->num != 0};
		default:
			return (RuleValue) {.kind = RV_NULL};
	}
}

/* Read a rule value as a number (numeric strings count); false when it is not one. */
static bool
AsNumber(const RuleValue *v, double *out)
{
	char	   *end;

	if (v->kind == RV_NUMBER)
	{
		*out = v->num;
		return true;
	}
	if (v->kind != RV_STRING || v->str[0] == '\0')
		return false;
	*out = strtod(v->str, &end);
	return *end == '\0';
}

/* Compare a and b: <0, 0, >0, or false when they are not comparable. */
static bool
CompareValues(const RuleValue *a, const RuleValue *b, int *cmp)
{
	double		x,
				y;

	if (a->kind == RV_NULL || b->kind == RV_NULL)
		return false;
	if (a->kind == RV_STRING && b->kind == RV_STRING)
	{
		*cmp = strcmp(a->str, b->str);
		return true;
	}
	if (a->kind == RV_BOOL || b->kind == RV_BOOL)
	{
		if (a->kind != b->kind)
			return false;
		*cmp = (int) a->b - (int) b->b;
		return true;
	}
	if (!AsNumber(a, &x) || !AsNumber(b, &y))
		return false;
	*cmp = (x > y) - (x < y);
	return true;
}

/* Evaluate a leaf condition. */
static bool
LeafMatches(RuleCond *cond, TaskDraft *draft, TimestampTz now)
{
	RuleValue	v = FieldRuleValue(cond, draft, now);
	int			cmp = 0;
	bool		comparable;

	switch (cond->op)
	{
		case OP_EXISTS:
			return (v.kind != RV_NULL) == cond->values[0].b;
		case OP_IN:
		case OP_NOT_IN:
			for (int i = 0; i < cond->nvalues; i++)
				if (CompareValues(&v, &cond->values[i], &cmp) && cmp == 0)
					return cond->op == OP_IN;
			return cond->op == OP_NOT_IN;
		case OP_CONTAINS:
			return v.kind == RV_STRING && strstr(v.str, cond->values[0].str) != NULL;
		case OP_STARTS_WITH:
			return v.kind == RV_STRING &&
				strncmp(v.str, cond->values[0].str, strlen(cond->values[0].str)) == 0;
		default:
			break;
	}
	comparable = CompareValues(&v, &cond->values[0], &cmp);
	switch (cond->op)
	{
		case OP_EQ:
			return comparable && cmp == 0;
		case OP_NE:
			return !comparable || cmp != 0;
		case OP_LT:
			return comparable && cmp < 0;
		case OP_LE:
			return comparable && cmp <= 0;
		case OP_GT:
			return comparable && cmp > 0;
		case OP_GE:
			return comparable && cmp >= 0;
		default:
			return false;
	}
}

/* Does the condition hold for this task at "now"? */
bool
RuleCondMatches(RuleCond *cond, TaskDraft *draft, TimestampTz now)
{
	switch (cond->kind)
	{
		case COND_ALL:
			for (int i = 0; i < cond->nchildren; i++)
				if (!RuleCondMatches(cond->children[i], draft, now))
					return false;
			return true;
		case COND_ANY:
			for (int i = 0; i < cond->nchildren; i++)
				if (RuleCondMatches(cond->children[i], draft, now))
					return true;
			return false;
		case COND_NOT:
			return !RuleCondMatches(cond->children[0], draft, now);
		case COND_LEAF:
			return LeafMatches(cond, draft, now);
	}
	return false;
}

PG_FUNCTION_INFO_V1(iwd_validate_rule);

/* SQL: iwd._validate_rule(kind text, cond jsonb, effect jsonb): raises 22023 when invalid. */
Datum
iwd_validate_rule(PG_FUNCTION_ARGS)
{
	RuleDef		rule = {0};
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));

	rule.classification = strcmp(kind, "classification") == 0;
	if (!rule.classification && strcmp(kind, "prioritization") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid rule: \"kind\" must be \"classification\" or \"prioritization\"")));
	ParseRuleCond(PG_GETARG_JSONB_P(1), CurrentMemoryContext);
	ParseRuleEffect(&rule, PG_GETARG_JSONB_P(2), CurrentMemoryContext);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(iwd_config_changed);

/* Trigger: tell every backend that the configuration changed (statement level). */
Datum
iwd_config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "iwd._config_changed must be called as a trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
