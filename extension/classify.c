/*-------------------------------------------------------------------------
 * classify.c
 *	  Classification: rules assign department, process, category, queue and
 *	  skills; the category then supplies defaults and the SLA due time.
 *
 * Fields the source system set explicitly are never overridden by a rule.
 * Matching rules apply in order and the first one to set a field wins.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/builtins.h"

#include "classify.h"
#include "config.h"
#include "draft.h"
#include "iwd.h"

/*
 * Apply the matching classification rules, in order, to the fields the input
 * left open; the first rule that sets a field wins, so a catch-all rule with
 * a high order acts as the default.
 */
static void
ApplyClassificationRules(IwdConfig *cfg, TaskDraft *draft, TimestampTz now)
{
	for (int r = 0; r < cfg->nclassification; r++)
	{
		RuleDef    *rule = &cfg->classification[r];

		if (!RuleCondMatches(rule->cond, draft, now))
			continue;
		for (int s = 0; s < rule->nsets; s++)
		{
			TaskField	field = rule->set_fields[s];

			if (draft->f[field].given)
				continue;
			if (field == TF_SKILLS)
				draft->f[field] = (FieldValue) {.given = true, .json = rule->set_json[s]};
			else
				DraftSetText(draft, field, rule->set_text[s]);
			if (field == TF_CATEGORY)
				DraftSetText(draft, TF_CLASSIFIED_BY, rule->name);
		}
	}
}

/*
 * Take a field from the (new) category unless the input or a rule set it;
 * a field the category leaves empty is cleared, so nothing of a previous
 * category survives a change of category.
 */
static void
DefaultText(TaskDraft *draft, TaskField field, const char *value)
{
	if (!draft->f[field].given)
		DraftSetText(draft, field, value);
}

/* Add business minutes to start in a calendar (iwd.business_time_add). */
static TimestampTz
BusinessTimeAdd(TimestampTz start, int minutes, const char *calendar)
{
	Oid			argtypes[3] = {TIMESTAMPTZOID, INT4OID, TEXTOID};
	Datum		args[3] = {TimestampTzGetDatum(start), Int32GetDatum(minutes), CStringGetTextDatum(calendar)};
	TimestampTz result;
	bool		isnull;

	SPI_connect();
	if (SPI_execute_with_args("SELECT iwd.business_time_add($1, $2, $3)", 3, argtypes, args, NULL, true, 1)
		!= SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not compute a business due time");
	result = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return result;
}

/* Compute the due time from the source's due time or the category SLA. */
static void
ApplyDueTime(TaskDraft *draft, CategoryDef *cat, bool creating)
{
	FieldValue *due = &draft->f[TF_DUE_AT];
	bool		source_changed = draft->f[TF_SOURCE_CREATED_AT].given || draft->f[TF_SOURCE_DUE_AT].given;
	TimestampTz start;

	if (due->given || !(creating || draft->category_changed || source_changed))
		return;
	if (!draft->f[TF_SOURCE_DUE_AT].isnull)
	{
		*due = (FieldValue) {.ts = draft->f[TF_SOURCE_DUE_AT].ts};
		return;
	}
	if (cat == NULL || cat->sla_minutes <= 0)
	{
		if (creating || draft->category_changed)
			due->isnull = true;
		return;
	}
	start = draft->f[TF_SOURCE_CREATED_AT].isnull ? draft->f[TF_CREATED_AT].ts
		: draft->f[TF_SOURCE_CREATED_AT].ts;
	if (cat->calendar != NULL)
		*due = (FieldValue) {.ts = BusinessTimeAdd(start, cat->sla_minutes, cat->calendar)};
	else
		*due = (FieldValue) {.ts = start + (TimestampTz) cat->sla_minutes * USECS_PER_MINUTE};
	draft->f[TF_OVERDUE_FLAGGED] = (FieldValue) {.num = 0};
}

/*
 * Classify the task: run the rules (unless its category was given explicitly),
 * then take the category's defaults. old_category is the category before an
 * update (NULL on create). An unknown category named by the input is an error;
 * one named by a rule puts the task in errorHeld with the reason.
 */
void
ClassifyTask(TaskDraft *draft, const char *old_category, bool creating, TimestampTz now)
{
	IwdConfig  *cfg = GetIwdConfig();
	CategoryDef *cat;
	FieldValue *category = &draft->f[TF_CATEGORY];

	if (!category->given && (category->isnull || !draft->f[TF_CLASSIFIED_BY].isnull))
	{
		category->isnull = true;
		draft->f[TF_CLASSIFIED_BY].isnull = true;
		ApplyClassificationRules(cfg, draft, now);
	}
	draft->category_changed = creating ||
		(old_category == NULL) != category->isnull ||
		(old_category != NULL && strcmp(old_category, category->text) != 0);
	cat = category->isnull ? NULL : FindCategory(cfg, category->text);
	if (!category->isnull && cat == NULL)
	{
		if (draft->f[TF_CLASSIFIED_BY].isnull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown category \"%s\"", category->text),
					 errhint("Create it with iwd.upsert_category() first.")));
		DraftSetText(draft, TF_ERROR_REASON,
					 psprintf("classification rule \"%s\" named unknown category \"%s\"",
							  draft->f[TF_CLASSIFIED_BY].text, category->text));
	}
	if (cat != NULL && draft->category_changed)
	{
		DefaultText(draft, TF_DEPARTMENT, cat->department);
		DefaultText(draft, TF_PROCESS, cat->process);
		DefaultText(draft, TF_QUEUE, cat->queue);
		DefaultText(draft, TF_MEDIA_TYPE, cat->media_type);
		if (!draft->f[TF_SKILLS].given)
			draft->f[TF_SKILLS] = (FieldValue) {.json = cat->skills};
	}
	if (draft->f[TF_MEDIA_TYPE].isnull)
		DraftSetText(draft, TF_MEDIA_TYPE, "workitem");
	ApplyDueTime(draft, cat, creating);
}
