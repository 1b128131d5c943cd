/*-------------------------------------------------------------------------
 * taskjson.c
 *	  The task document: a row of iwd.task or iwd.task_closed in the REST
 *	  shape (iwd.task_json, iwd._tasks_json), iwd.get_task, the read by id
 *	  behind GET /tasks/{id}, and the event document that embeds the task
 *	  (iwd._event_document, for the outbox of sql/events.sql).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

#include "draft.h"
#include "iwd.h"
#include "taskjson.h"

/* Append a key to a JSON object under construction (taskjson.h). */
void
IwdJsonPushKey(JsonbParseState **state, const char *key)
{
	JsonbValue	k = {.type = jbvString};

	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &k);
}

/* Append a string value (taskjson.h). */
void
IwdJsonPushString(JsonbParseState **state, const char *str)
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
			IwdJsonPushString(state, v->text);
			return;
		case FT_TIMESTAMP:
			IwdJsonPushString(state, IsoTimestamp(v->ts));
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
			IwdJsonPushKey(state, "overdue");
			pushJsonbValue(state, WJB_VALUE, &overdue);
			continue;
		}
		if (i >= TF_CUSTOMER_ID && draft.f[i].isnull)
			continue;
		IwdJsonPushKey(state, task_fields[i].json_key);
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

/* Push a text column of a task row as a JSON string (null when NULL). */
static void
PushColumn(JsonbParseState **state, HeapTupleHeader rec, const char *column)
{
	JsonbValue	null = {.type = jbvNull};
	bool		isnull;
	Datum		value = GetAttributeByName(rec, column, &isnull);

	if (isnull)
		pushJsonbValue(state, WJB_VALUE, &null);
	else
		IwdJsonPushString(state, TextDatumGetCString(value));
}

PG_FUNCTION_INFO_V1(iwd_event_document);

/*
 * SQL: iwd._event_document(task_id bigint, type text, at timestamptz, agent text) RETURNS jsonb
 *
 * A task event's document without its id: type, at, taskId, externalId,
 * capturePoint, agent and task, the task document as it is now (the outbox
 * trigger runs after the change), read as iwd.get_task reads it; NULL when
 * the task does not exist. Built in one pass: the task is pushed into the
 * event rather than built as a document and taken apart again, which would
 * cost the outbox, and so every capture and claim, half as much again.
 */
Datum
iwd_event_document(PG_FUNCTION_ARGS)
{
	JsonbParseState *state = NULL;
	JsonbValue	task_id = {.type = jbvNumeric};
	JsonbValue	null = {.type = jbvNull};
	HeapTupleHeader rec;
	Datum		row;
	int64		id;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	id = PG_GETARG_INT64(0);
	if (!FetchTaskRow("task", id, &row) && !FetchTaskRow("task_closed", id, &row))
		PG_RETURN_NULL();
	rec = DatumGetHeapTupleHeader(row);
	task_id.val.numeric = int64_to_numeric(id);
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	IwdJsonPushKey(&state, "type");
	IwdJsonPushString(&state, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	IwdJsonPushKey(&state, "at");
	IwdJsonPushString(&state, IsoTimestamp(PG_GETARG_TIMESTAMPTZ(2)));
	IwdJsonPushKey(&state, "taskId");
	pushJsonbValue(&state, WJB_VALUE, &task_id);
	IwdJsonPushKey(&state, "externalId");
	PushColumn(&state, rec, "external_id");
	IwdJsonPushKey(&state, "capturePoint");
	PushColumn(&state, rec, "capture_point");
	IwdJsonPushKey(&state, "agent");
	if (PG_ARGISNULL(3))
		pushJsonbValue(&state, WJB_VALUE, &null);
	else
		IwdJsonPushString(&state, text_to_cstring(PG_GETARG_TEXT_PP(3)));
	IwdJsonPushKey(&state, "task");
	PushTask(&state, rec);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));
}
