/*-------------------------------------------------------------------------
 * config.h
 *	  The per-backend cache of categories and rules, and the rule language.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_CONFIG_H
#define IWD_CONFIG_H

#include "postgres.h"
#include "fmgr.h"
#include "utils/jsonb.h"

#include "draft.h"

typedef struct CategoryDef
{
	char	   *name;
	char	   *department;
	char	   *process;
	int			priority;
	int			business_value;
	int			sla_minutes;	/* 0: no SLA */
	char	   *calendar;
	Jsonb	   *skills;
	char	   *queue;
	char	   *media_type;
	int			reprioritize_step;
	int			reprioritize_every_min; /* 0: never */
	bool		has_reprioritize_max;
	int			reprioritize_max;
	int			urgency_within_min; /* 0: none */
	int			urgency_step;
} CategoryDef;

typedef enum CondKind
{
	COND_ALL,
	COND_ANY,
	COND_NOT,
	COND_LEAF
} CondKind;

typedef enum CondOp
{
	OP_EQ,
	OP_NE,
	OP_LT,
	OP_LE,
	OP_GT,
	OP_GE,
	OP_IN,
	OP_NOT_IN,
	OP_CONTAINS,
	OP_STARTS_WITH,
	OP_EXISTS
} CondOp;

typedef enum RuleValueKind
{
	RV_NULL,
	RV_STRING,
	RV_NUMBER,
	RV_BOOL
} RuleValueKind;

typedef struct RuleValue
{
	RuleValueKind kind;
	const char *str;
	double		num;
	bool		b;
} RuleValue;

/* Virtual fields derived from the task and the time of evaluation. */
#define FIELD_AGE_MINUTES (-1)
#define FIELD_DUE_IN_MINUTES (-2)
#define FIELD_OVERDUE (-3)

typedef struct RuleCond
{
	CondKind	kind;
	int			nchildren;
	struct RuleCond **children;
	int			field;			/* TaskField or FIELD_* */
	int			npath;			/* path below attributes or skills */
	char	  **path;
	CondOp		op;
	int			nvalues;
	RuleValue  *values;
} RuleCond;

typedef enum AdjustOp
{
	ADJ_NONE,
	ADJ_SET,
	ADJ_ADD
} AdjustOp;

typedef struct RuleDef
{
	char	   *name;
	bool		classification;
	int			ord;
	char	   *department;		/* prioritization scope */
	char	   *process;
	RuleCond   *cond;
	/* classification effect: fields to set */
	int			nsets;
	TaskField  *set_fields;
	char	  **set_text;
	Jsonb	  **set_json;
	/* prioritization effect */
	AdjustOp	priority_op;
	int			priority_arg;
	AdjustOp	value_op;
	int			value_arg;
} RuleDef;

typedef struct IwdConfig
{
	int			ncategories;
	CategoryDef *categories;
	int			nclassification;
	RuleDef    *classification; /* by ord, name */
	int			nprioritization;
	RuleDef    *prioritization; /* global, department, process; each by ord */
} IwdConfig;

/* Register the cache's invalidation callback (from _PG_init). */
extern void ConfigCacheInit(void);
extern IwdConfig *GetIwdConfig(void);
extern CategoryDef *FindCategory(IwdConfig *config, const char *name);
extern RuleCond *ParseRuleCond(Jsonb *cond, MemoryContext cxt);
extern void ParseRuleEffect(RuleDef *rule, Jsonb *effect, MemoryContext cxt);
extern bool RuleCondMatches(RuleCond *cond, TaskDraft *draft, TimestampTz now);

/* SQL: iwd._validate_rule(kind text, cond jsonb, effect jsonb) RETURNS void (22023 when invalid) */
extern PGDLLEXPORT Datum iwd_validate_rule(PG_FUNCTION_ARGS);
/* SQL: trigger iwd._config_changed() (statement triggers on the configuration tables) */
extern PGDLLEXPORT Datum iwd_config_changed(PG_FUNCTION_ARGS);

#endif							/* IWD_CONFIG_H */
