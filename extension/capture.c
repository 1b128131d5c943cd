/*-------------------------------------------------------------------------
 * capture.c
 *	  The task pipeline: a task document becomes the row to store.
 *
 * iwd._prepare_task(input jsonb, current iwd.task, at timestamptz) is the one
 * entry point of capture and update: it validates the input (input.c),
 * merges it over the current row on update (draft.c), classifies
 * (classify.c), scores (score.c), decides the entry status and returns the
 * row to store; iwd._rescore is the scheduler's reprioritization step.
 * Neither writes anything.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"

#include "capture.h"
#include "classify.h"
#include "draft.h"
#include "input.h"
#include "iwd.h"
#include "score.h"

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
