/*-------------------------------------------------------------------------
 * score.c
 *	  Business-value scoring: category defaults, prioritization rules, aging
 *	  and SLA urgency.
 *
 * A task's priority at time t is recomputed from scratch, never incremented:
 *   p = explicit priority, else the category's;  bv likewise
 *   prioritization rules in scope order (global, department, process) adjust p, bv
 *   aging: p += step * floor((t - aging_from) / every), up to the category's max
 *   urgency: p += urgency step once t is within the urgency window before due
 * so a scheduler pass is idempotent, and the result at any t is exact. The
 * next time the score would change is stored as reprioritize_at (NULL: never).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "config.h"
#include "draft.h"
#include "iwd.h"
#include "score.h"

/* Apply an adjustment to a running value. */
static int64
Adjust(int64 value, AdjustOp op, int arg)
{
	switch (op)
	{
		case ADJ_SET:
			return arg;
		case ADJ_ADD:
			return value + arg;
		case ADJ_NONE:
			break;
	}
	return value;
}

/* Keep a score inside int4. */
static int64
ClampInt4(int64 v)
{
	return Min(Max(v, PG_INT32_MIN), PG_INT32_MAX);
}

/* Does a prioritization rule's scope (department, process) cover this task? */
static bool
InScope(RuleDef *rule, TaskDraft *draft)
{
	if (rule->department != NULL &&
		(draft->f[TF_DEPARTMENT].isnull || strcmp(rule->department, draft->f[TF_DEPARTMENT].text) != 0))
		return false;
	if (rule->process != NULL &&
		(draft->f[TF_PROCESS].isnull || strcmp(rule->process, draft->f[TF_PROCESS].text) != 0))
		return false;
	return true;
}

/* Apply the aging schedule; returns the next time aging changes p, or 0 for never. */
static TimestampTz
ApplyAging(CategoryDef *cat, TimestampTz aging_from, TimestampTz now, int64 *p)
{
	int64		every = (int64) cat->reprioritize_every_min * USECS_PER_MINUTE;
	int64		steps = now > aging_from ? (now - aging_from) / every : 0;
	int64		aged = *p + steps * cat->reprioritize_step;

	if (cat->has_reprioritize_max)
	{
		int64		cap = cat->reprioritize_max;

		if ((cat->reprioritize_step > 0 && *p >= cap) || (cat->reprioritize_step < 0 && *p <= cap))
			return 0;
		aged = cat->reprioritize_step > 0 ? Min(aged, cap) : Max(aged, cap);
		*p = aged;
		if (aged == cap)
			return 0;
	}
	else
		*p = aged;
	return aging_from + (steps + 1) * every;
}

/* Compute priority, business value and next reprioritization time at "now". */
void
ScoreTask(TaskDraft *draft, TimestampTz now)
{
	IwdConfig  *cfg = GetIwdConfig();
	CategoryDef *cat = draft->f[TF_CATEGORY].isnull ? NULL : FindCategory(cfg, draft->f[TF_CATEGORY].text);
	int64		p = cat ? cat->priority : 0;
	int64		bv = cat ? cat->business_value : 0;
	TimestampTz next = 0;

	if (!draft->f[TF_PRIORITY_OVERRIDE].isnull)
		p = draft->f[TF_PRIORITY_OVERRIDE].num;
	if (!draft->f[TF_BUSINESS_VALUE_OVERRIDE].isnull)
		bv = draft->f[TF_BUSINESS_VALUE_OVERRIDE].num;
	for (int r = 0; r < cfg->nprioritization; r++)
	{
		RuleDef    *rule = &cfg->prioritization[r];

		draft->f[TF_PRIORITY] = (FieldValue) {.num = ClampInt4(p)};
		draft->f[TF_BUSINESS_VALUE] = (FieldValue) {.num = ClampInt4(bv)};
		if (!InScope(rule, draft) || !RuleCondMatches(rule->cond, draft, now))
			continue;
		p = Adjust(p, rule->priority_op, rule->priority_arg);
		bv = Adjust(bv, rule->value_op, rule->value_arg);
	}
	if (cat != NULL && cat->reprioritize_every_min > 0 && cat->reprioritize_step != 0)
		next = ApplyAging(cat, draft->f[TF_AGING_FROM].ts, now, &p);
	if (cat != NULL && cat->urgency_within_min > 0 && cat->urgency_step != 0 && !draft->f[TF_DUE_AT].isnull)
	{
		TimestampTz urgent_at = draft->f[TF_DUE_AT].ts - (int64) cat->urgency_within_min * USECS_PER_MINUTE;

		if (now >= urgent_at)
			p += cat->urgency_step;
		else if (next == 0 || urgent_at < next)
			next = urgent_at;
	}
	draft->f[TF_PRIORITY] = (FieldValue) {.num = ClampInt4(p)};
	draft->f[TF_BUSINESS_VALUE] = (FieldValue) {.num = ClampInt4(bv)};
	draft->f[TF_REPRIORITIZE_AT] = (FieldValue) {.isnull = (next == 0), .ts = next};
}
