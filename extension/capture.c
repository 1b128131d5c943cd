/*-------------------------------------------------------------------------
 * capture.c
 *	  The task pipeline: a task document becomes the row to store, and
 *	  capture stores it.
 *
 * iwd._prepare_task(input jsonb, current iwd.task, at timestamptz) is the one
 * entry point of capture and update: it validates the input (input.c),
 * merges it over the current row on update (draft.c), classifies
 * (classify.c), scores (score.c), decides the entry status and returns the
 * row to store; iwd._rescore is the scheduler's reprioritization step.
 * Neither writes anything.
 *
 * iwd.create_task and iwd._create_task capture one task: the key lookup
 * (a re-submission returns the existing task), the row prepared as above,
 * its id, and its four rows (key, task, search document, created event)
 * written by one statement of data-modifying CTEs, prepared once per
 * backend, with the search document, the event detail and the result
 * document computed here. The key's insertion decides between concurrent
 * submissions of one key: the loser writes nothing and returns the winner's
 * task. SPI keeps the triggers (the routing key, the outbox's transition
 * table) and constraints of ordinary DML.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/resowner.h"
#include "utils/typcache.h"

#include "capture.h"
#include "classify.h"
#include "draft.h"
#include "input.h"
#include "iwd.h"
#include "score.h"
#include "search.h"
#include "taskjson.h"

/* Fill what creation sets: times, defaults, status. */
static void
DraftCreateDefaults(TaskDraft *draft, TimestampTz now)
{
	Jsonb	   *empty = EmptyJsonbObject();

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

/*
 * Fill draft with the row to store: a new task from input when current is
 * NULL, otherwise input (NULL: re-classification only) as a patch over
 * current. Writes nothing.
 */
static void
PrepareTask(TaskDraft *draft, Jsonb *input, HeapTupleHeader current, TimestampTz now)
{
	bool		creating = current == NULL;
	char	   *old_category = NULL;
	bool		parked = false;

	memset(draft, 0, sizeof(*draft));
	DraftInit(draft);
	if (!creating)
	{
		DraftFromTuple(draft, current);
		if (!draft->f[TF_CATEGORY].isnull)
			old_category = pstrdup(draft->f[TF_CATEGORY].text);
		parked = DraftIsParked(draft);
	}
	else if (input == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a task must be a JSON object")));
	if (input != NULL)
		TaskDraftApplyInput(draft, input, creating);
	if (creating)
		DraftCreateDefaults(draft, now);
	else
		draft->f[TF_ERROR_REASON].isnull = true;

	ClassifyTask(draft, old_category, creating, now);
	ScoreTask(draft, now);
	if (creating || parked || !draft->f[TF_ERROR_REASON].isnull)
		DraftSetEntryStatus(draft, now);
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

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "iwd._prepare_task must return a row");
	tupdesc = BlessTupleDesc(tupdesc);
	PrepareTask(&draft, PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0),
				PG_ARGISNULL(1) ? NULL : PG_GETARG_HEAPTUPLEHEADER(1), now);
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

/*
 * The statements of capture, prepared once per backend for the row type of
 * iwd.task they were prepared with (the row is a parameter: prepared again
 * when the extension is re-created and the type is a new one).
 */
typedef struct CapturePlans
{
	Oid			task_type;
	SPIPlanPtr	find;			/* the task of a known key, as iwd.get_task returns it */
	SPIPlanPtr	write;			/* the four rows of a new task */
	SPIPlanPtr	batch_keys;		/* the keys of a batch of new tasks */
	SPIPlanPtr	batch_write;	/* the other three rows of each task of the batch */
} CapturePlans;

static CapturePlans capture_plans;

/* Prepare a statement of capture and keep it for the life of the backend. */
static SPIPlanPtr
KeepCapturePlan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "could not prepare capture statement: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/* The capture statements for iwd.task's row type task_type (inside SPI). */
static CapturePlans *
GetCapturePlans(Oid task_type)
{
	Oid			find_types[2] = {TEXTOID, TEXTOID};
	Oid			write_types[8] = {TEXTOID, TEXTOID, INT8OID, task_type, TSVECTOROID, TIMESTAMPTZOID, TEXTOID,
	JSONBOID};

	Oid			batch_key_types[3] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID};
	Oid			batch_write_types[6] = {get_array_type(task_type), INT8ARRAYOID, TSVECTORARRAYOID, TIMESTAMPTZOID,
	TEXTARRAYOID, JSONBARRAYOID};

	if (capture_plans.task_type == task_type)
		return &capture_plans;
	if (capture_plans.find != NULL)
		SPI_freeplan(capture_plans.find);
	if (capture_plans.write != NULL)
		SPI_freeplan(capture_plans.write);
	if (capture_plans.batch_keys != NULL)
		SPI_freeplan(capture_plans.batch_keys);
	if (capture_plans.batch_write != NULL)
		SPI_freeplan(capture_plans.batch_write);
	capture_plans = (CapturePlans) {0};
	/* every name qualified: capture runs under the caller's search_path (sql/security.sql) */
	capture_plans.find = KeepCapturePlan(
		"SELECT iwd.get_task(k.task_id) FROM iwd.task_key k "
		"WHERE k.capture_point OPERATOR(pg_catalog.=) $1 AND k.external_id OPERATOR(pg_catalog.=) $2",
		2, find_types);
	/* the key decides: when it is taken (concurrently), nothing else is written */
	capture_plans.write = KeepCapturePlan(
		"WITH k AS (INSERT INTO iwd.task_key (capture_point, external_id, task_id) VALUES ($1, $2, $3) "
		"           ON CONFLICT DO NOTHING RETURNING task_id), "
		"     t AS (INSERT INTO iwd.task SELECT ($4).* FROM k), "
		"     d AS (INSERT INTO iwd.task_document (task_id, document) SELECT k.task_id, $5 FROM k), "
		"     e AS (INSERT INTO iwd.task_event (task_id, at, event, status_after, detail) "
		"           SELECT k.task_id, $6, 'created', $7, $8 FROM k) "
		"SELECT k.task_id FROM k",
		8, write_types);
	capture_plans.batch_keys = KeepCapturePlan(
		"INSERT INTO iwd.task_key (capture_point, external_id, task_id) "
		"SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))",
		3, batch_key_types);
	capture_plans.batch_write = KeepCapturePlan(
		"WITH t AS (INSERT INTO iwd.task SELECT * FROM pg_catalog.unnest($1)), "
		"     d AS (INSERT INTO iwd.task_document (task_id, document) "
		"           SELECT * FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3))) "
		"INSERT INTO iwd.task_event (task_id, at, event, status_after, detail) "
		"SELECT e.id, $4, 'created', e.status, e.detail "
		"FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($5), pg_catalog.unnest($6)) e(id, status, detail)",
		6, batch_write_types);
	capture_plans.task_type = task_type;
	return &capture_plans;
}

/* The task of a known key in the REST shape, read with a new snapshot; NULL when the key is unknown. */
static Jsonb *
FindCapturedTask(CapturePlans *plans, const char *capture_point, const char *external_id)
{
	Datum		args[2] = {CStringGetTextDatum(capture_point), CStringGetTextDatum(external_id)};
	bool		isnull;
	Datum		result;

	if (SPI_execute_plan(plans->find, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up a task key: %s", SPI_result_code_string(SPI_result));
	if (SPI_processed == 0)
		return NULL;
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return NULL;
	return DatumGetJsonbP(SPI_datumTransfer(result, false, -1));
}

/* Push an integer field of the event detail (left out when unset). */
static void
PushDetailInt(JsonbParseState **state, const char *key, FieldValue *v)
{
	JsonbValue	n = {.type = jbvNumeric};

	if (v->isnull)
		return;
	n.val.numeric = int64_to_numeric(v->num);
	IwdJsonPushKey(state, key);
	pushJsonbValue(state, WJB_VALUE, &n);
}

/* Push a text field of the event detail (left out when unset). */
static void
PushDetailText(JsonbParseState **state, const char *key, FieldValue *v)
{
	if (v->isnull)
		return;
	IwdJsonPushKey(state, key);
	IwdJsonPushString(state, v->text);
}

/* The detail of a task's "created" event: priority, business value, category and error reason when set. */
static Jsonb *
CreatedDetail(TaskDraft *draft)
{
	JsonbParseState *state = NULL;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	PushDetailInt(&state, "priority", &draft->f[TF_PRIORITY]);
	PushDetailInt(&state, "businessValue", &draft->f[TF_BUSINESS_VALUE]);
	PushDetailText(&state, "category", &draft->f[TF_CATEGORY]);
	PushDetailText(&state, "errorReason", &draft->f[TF_ERROR_REASON]);
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/* The search document of the draft's text (iwd._document). */
static Datum
DraftDocument(TaskDraft *draft)
{
	LOCAL_FCINFO(call, 3);
	FieldValue *subject = &draft->f[TF_SUBJECT];
	FieldValue *description = &draft->f[TF_DESCRIPTION];
	FieldValue *attributes = &draft->f[TF_ATTRIBUTES];
	Datum		document;

	InitFunctionCallInfoData(*call, NULL, 3, InvalidOid, NULL, NULL);
	call->args[0] = (NullableDatum) {.value = subject->isnull ? (Datum) 0 : CStringGetTextDatum(subject->text),
	.isnull = subject->isnull};
	call->args[1] = (NullableDatum) {.value = description->isnull ? (Datum) 0 :
		CStringGetTextDatum(description->text), .isnull = description->isnull};
	call->args[2] = (NullableDatum) {.value = attributes->isnull ? (Datum) 0 : JsonbPGetDatum(attributes->json),
	.isnull = attributes->isnull};
	document = iwd_document(call);
	if (call->isnull)
		elog(ERROR, "iwd._document returned NULL");
	return document;
}

/* The row type of iwd.task. */
static Oid
TaskRowType(void)
{
	Oid			relid = get_relname_relid("task", get_namespace_oid("iwd", false));

	if (!OidIsValid(relid))
		elog(ERROR, "relation iwd.task does not exist");
	return get_rel_type_id(relid);
}

/*
 * Capture one task at "at": the existing task when its key is known
 * (*created false), otherwise the new task, stored with its key, search
 * document and created event (*created true). In the REST shape.
 */
static Jsonb *
CaptureTask(Jsonb *input, TimestampTz at, bool *created)
{
	JsonbValue *capture_point = NULL;
	JsonbValue *external_id = NULL;
	char	   *capture_point_text = NULL;
	char	   *external_id_text = NULL;
	CapturePlans *plans;
	TaskDraft	draft;
	TupleDesc	tupdesc;
	HeapTuple	row;
	Datum		args[8];
	Jsonb	   *result;
	int64		id;

	*created = false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plans = GetCapturePlans(TaskRowType());
	if (input != NULL && JB_ROOT_IS_OBJECT(input))
	{
		capture_point = getKeyJsonValueFromContainer(&input->root, "capturePoint", strlen("capturePoint"), NULL);
		external_id = getKeyJsonValueFromContainer(&input->root, "externalId", strlen("externalId"), NULL);
	}
	if (capture_point != NULL && capture_point->type == jbvString &&
		external_id != NULL && external_id->type == jbvString)
	{
		capture_point_text = pnstrdup(capture_point->val.string.val, capture_point->val.string.len);
		external_id_text = pnstrdup(external_id->val.string.val, external_id->val.string.len);
		result = FindCapturedTask(plans, capture_point_text, external_id_text);
		if (result != NULL)
		{
			SPI_finish();
			return result;
		}
	}
	PrepareTask(&draft, input, NULL, at);
	id = nextval_internal(get_relname_relid("task_id_seq", get_namespace_oid("iwd", false)), true);
	draft.f[TF_ID] = (FieldValue) {.num = id};
	draft.f[TF_UPDATED_AT] = (FieldValue) {.ts = at};
	tupdesc = lookup_rowtype_tupdesc(plans->task_type, -1);
	row = DraftToTuple(&draft, tupdesc);
	ReleaseTupleDesc(tupdesc);
	args[0] = CStringGetTextDatum(draft.f[TF_CAPTURE_POINT].text);
	args[1] = CStringGetTextDatum(draft.f[TF_EXTERNAL_ID].text);
	args[2] = Int64GetDatum(id);
	args[3] = HeapTupleGetDatum(row);
	args[4] = DraftDocument(&draft);
	args[5] = TimestampTzGetDatum(at);
	args[6] = CStringGetTextDatum(draft.f[TF_STATUS].text);
	args[7] = JsonbPGetDatum(CreatedDetail(&draft));
	if (SPI_execute_plan(plans->write, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not store a task: %s", SPI_result_code_string(SPI_result));
	if (SPI_processed == 0)
	{
		/* the key was taken concurrently: the winner's task */
		result = FindCapturedTask(plans, draft.f[TF_CAPTURE_POINT].text, draft.f[TF_EXTERNAL_ID].text);
		if (result == NULL)
			elog(ERROR, "task key (%s, %s) was taken but is not found",
				 draft.f[TF_CAPTURE_POINT].text, draft.f[TF_EXTERNAL_ID].text);
		SPI_finish();
		return result;
	}
	if (iwd_notify == IWD_NOTIFY_EVENT)
		Async_Notify("iwd_task_event", psprintf(INT64_FORMAT ":created", id));
	result = DatumGetJsonbP(SPI_datumTransfer(DirectFunctionCall1(iwd_task_json, HeapTupleGetDatum(row)),
											  false, -1));
	SPI_finish();
	*created = true;
	return result;
}

PG_FUNCTION_INFO_V1(iwd_create_task);

/*
 * SQL: iwd.create_task(task jsonb) RETURNS jsonb
 *
 * Capture a task at the iwd clock's time: the new task, or the existing one
 * when its (capturePoint, externalId) is known.
 */
Datum
iwd_create_task(PG_FUNCTION_ARGS)
{
	bool		created;

	PG_RETURN_JSONB_P(CaptureTask(PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0), IwdNow(), &created));
}

PG_FUNCTION_INFO_V1(iwd_create_task_at);

/*
 * SQL: iwd._create_task(task jsonb, at timestamptz, OUT created boolean, OUT result jsonb)
 *
 * Capture a task at "at" (create_tasks captures a batch at one time), telling
 * whether it is new.
 */
Datum
iwd_create_task_at(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	bool		created;
	Jsonb	   *result;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "iwd._create_task must return a row");
	tupdesc = BlessTupleDesc(tupdesc);
	result = CaptureTask(PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0),
						 PG_ARGISNULL(1) ? IwdNow() : PG_GETARG_TIMESTAMPTZ(1), &created);
	values[0] = BoolGetDatum(created);
	values[1] = JsonbPGetDatum(result);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* A text array of n C strings. */
static Datum
TextArray(char **strings, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(strings[i]);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* An array of n values of type typid. */
static Datum
ValueArray(Datum *elems, int n, Oid typid)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(typid, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, n, typid, typlen, typbyval, typalign));
}

/* A batch of new tasks on its way to storage: one entry per element, in input order. */
typedef struct CaptureBatch
{
	int			n;
	char	  **capture_points;
	char	  **external_ids;
	Datum	   *ids;
	Datum	   *rows;
	Datum	   *documents;
	char	  **statuses;
	Datum	   *details;
} CaptureBatch;

/* Is every element an object with a string capturePoint and externalId (the keys of new work)? */
static bool
BatchHasKeys(Jsonb *tasks)
{
	JsonbIterator *it = JsonbIteratorInit(&tasks->root);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		JsonbValue *capture_point;
		JsonbValue *external_id;

		if (tok != WJB_ELEM)
			continue;
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			return false;
		capture_point = getKeyJsonValueFromContainer(v.val.binary.data, "capturePoint", strlen("capturePoint"), NULL);
		external_id = getKeyJsonValueFromContainer(v.val.binary.data, "externalId", strlen("externalId"), NULL);
		if (capture_point == NULL || capture_point->type != jbvString ||
			external_id == NULL || external_id->type != jbvString)
			return false;
	}
	return true;
}

/* Prepare every element of tasks as a new task at "at", with its id, into batch (raises what input raises). */
static void
PrepareBatch(CaptureBatch *batch, Jsonb *tasks, TimestampTz at, Oid task_type)
{
	Oid			seq = get_relname_relid("task_id_seq", get_namespace_oid("iwd", false));
	TupleDesc	tupdesc = lookup_rowtype_tupdesc_copy(task_type, -1);
	JsonbIterator *it = JsonbIteratorInit(&tasks->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			i = 0;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		TaskDraft	draft;
		int64		id;

		if (tok != WJB_ELEM)
			continue;
		PrepareTask(&draft, JsonbValueToJsonb(&v), NULL, at);
		id = nextval_internal(seq, true);
		draft.f[TF_ID] = (FieldValue) {.num = id};
		draft.f[TF_UPDATED_AT] = (FieldValue) {.ts = at};
		batch->capture_points[i] = draft.f[TF_CAPTURE_POINT].text;
		batch->external_ids[i] = draft.f[TF_EXTERNAL_ID].text;
		batch->ids[i] = Int64GetDatum(id);
		batch->rows[i] = HeapTupleGetDatum(DraftToTuple(&draft, tupdesc));
		batch->documents[i] = DraftDocument(&draft);
		batch->statuses[i] = draft.f[TF_STATUS].text;
		batch->details[i] = JsonbPGetDatum(CreatedDetail(&draft));
		i++;
	}
}

/*
 * Prepare the batch and insert its keys, in a subtransaction: false (and
 * nothing written) when an element fails validation or a key is known,
 * repeated in the batch or taken concurrently (the insert waits for the
 * other transaction). A cancellation is raised, not taken for a refusal.
 */
static bool
TryBatchKeys(CapturePlans *plans, CaptureBatch *batch, Jsonb *tasks, TimestampTz at)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		Datum		args[3];

		PrepareBatch(batch, tasks, at, plans->task_type);
		args[0] = TextArray(batch->capture_points, batch->n);
		args[1] = TextArray(batch->external_ids, batch->n);
		args[2] = ValueArray(batch->ids, batch->n, INT8OID);
		if (SPI_execute_plan(plans->batch_keys, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not store task keys: %s", SPI_result_code_string(SPI_result));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
		if (error->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(error);
		FreeErrorData(error);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

PG_FUNCTION_INFO_V1(iwd_create_tasks_new);

/*
 * SQL: iwd._create_tasks_new(tasks jsonb, at timestamptz) RETURNS jsonb
 *
 * Capture a batch of new tasks set-wise: each element prepared here, then one
 * statement for the keys and one for the tasks, documents and events of the
 * whole batch. NULL (nothing written) when the batch is not plainly new work
 * (fewer than two elements, an element without capturePoint and externalId,
 * an invalid element, a known, repeated or concurrently taken key): the
 * caller then captures element by element, which names the failing element.
 */
Datum
iwd_create_tasks_new(PG_FUNCTION_ARGS)
{
	Jsonb	   *tasks;
	TimestampTz at;
	CapturePlans *plans;
	CaptureBatch batch;
	Datum		args[6];
	Datum		result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	tasks = PG_GETARG_JSONB_P(0);
	at = PG_GETARG_TIMESTAMPTZ(1);
	if (!JB_ROOT_IS_ARRAY(tasks) || JB_ROOT_IS_SCALAR(tasks) || JB_ROOT_COUNT(tasks) < 2 || !BatchHasKeys(tasks))
		PG_RETURN_NULL();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plans = GetCapturePlans(TaskRowType());
	batch.n = JB_ROOT_COUNT(tasks);
	batch.capture_points = palloc(sizeof(char *) * batch.n);
	batch.external_ids = palloc(sizeof(char *) * batch.n);
	batch.ids = palloc(sizeof(Datum) * batch.n);
	batch.rows = palloc(sizeof(Datum) * batch.n);
	batch.documents = palloc(sizeof(Datum) * batch.n);
	batch.statuses = palloc(sizeof(char *) * batch.n);
	batch.details = palloc(sizeof(Datum) * batch.n);
	if (!TryBatchKeys(plans, &batch, tasks, at))
	{
		SPI_finish();
		PG_RETURN_NULL();
	}
	args[0] = ValueArray(batch.rows, batch.n, plans->task_type);
	args[1] = ValueArray(batch.ids, batch.n, INT8OID);
	args[2] = ValueArray(batch.documents, batch.n, TSVECTOROID);
	args[3] = TimestampTzGetDatum(at);
	args[4] = TextArray(batch.statuses, batch.n);
	args[5] = ValueArray(batch.details, batch.n, JSONBOID);
	if (SPI_execute_plan(plans->batch_write, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store tasks: %s", SPI_result_code_string(SPI_result));
	if (iwd_notify == IWD_NOTIFY_EVENT)
		for (int i = 0; i < batch.n; i++)
			Async_Notify("iwd_task_event", psprintf(INT64_FORMAT ":created", DatumGetInt64(batch.ids[i])));
	/* in input order, as the ids ascend */
	result = SPI_datumTransfer(DirectFunctionCall1(iwd_tasks_json, args[0]), false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}
