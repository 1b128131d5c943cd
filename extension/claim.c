/*-------------------------------------------------------------------------
 * claim.c
 *	  The hot path: next-best-task distribution (iwd.next_task) and completion
 *	  (iwd.complete_task).
 *
 * The claim path must stay fast with millions of queued tasks and hundreds of
 * agents claiming at once, and no two agents may ever receive the same task.
 *
 * Design:
 * - Only open work lives in iwd.task (terminal tasks move to iwd.task_closed),
 *   and the universal queue is a partial index over queued rows in queue
 *   order (priority DESC, business_value DESC, due_at, created_at, id). The
 *   index stays as small as the backlog, whatever the history size.
 * - Claims read a second partial index in the same order, bucketed by the
 *   task's routing key (iwd.routing_key): "name:level" for a task that needs
 *   one skill, "first+second" (its first two skills) for one that needs
 *   several, '' for one that needs none. An agent can only take a task whose
 *   every required skill it has at the required level, so the task's key is
 *   always one of the agent's buckets ('', each of its skills at each level up
 *   to its own, each pair of its skills): the pick reads the head of those
 *   buckets (short index ranges) and merges them, instead of walking the whole
 *   universal queue past the work of other skills, of higher levels and of
 *   skill combinations the agent lacks. Only buckets some task has had are
 *   read: the claim enumerates them from the routing key registry
 *   (iwd.routing_keys, below), which each session remembers, looking up each
 *   of the agent's skills there rather than forming every pair of them, so
 *   that the cost of the buckets follows the keys that exist, not the square
 *   of the agent's skill count (bounded besides: IWD_AGENT_SKILLS_MAX).
 *   Only levels within a multi-skill bucket (and a third required skill) are
 *   left to the filter. An agent whose registered buckets number more than
 *   CLAIM_BUCKETS_MAX walks the universal queue instead: most work fits a
 *   generalist, so that walk is short.
 * - A claim is two statements: the agent's row lock, then one statement that
 *   counts what the agent holds per media type, picks the best few candidates
 *   that fit (media type with free capacity, requested agent, skills and
 *   levels through iwd.skills_met, a C function over the two jsonb skill
 *   maps), takes the first whose transaction-scoped lock on the task id it
 *   obtains (iwd._claim_lock: one of iwd's own locks, which no login can hold
 *   to stall claims: iwd.h), reserves it if it is still queued and records
 *   the event, in data-modifying CTEs of one prepared plan (each statement
 *   saved is an executor start-up, 20-40 us of a claim). Concurrent claimers
 *   thus skip each other's candidates without waiting. Only when no candidate
 *   could be reserved does it run again, with a wider window.
 *   Row locks (FOR UPDATE SKIP LOCKED) would do the same
 *   job, but a claimer that meets a row claimed after its snapshot locks the
 *   newest version before rejecting it and keeps that lock until it commits,
 *   which makes the completion of that task wait: these locks leave the
 *   rows alone. Concurrent claimers therefore never wait on each other and
 *   never share a task.
 * - The agent's own row is locked (FOR NO KEY UPDATE) for the duration of the
 *   claim. That serializes only claims of the same agent, so its capacity
 *   count cannot be overrun by two of its own sessions (the count reads the
 *   claim statement's snapshot, taken once the lock is held); there is no
 *   global hot row (no counters, no queue head row).
 * - Completion is one statement: the open row is deleted, its terminal copy
 *   inserted into iwd.task_closed and the event recorded, all in data-modifying
 *   CTEs of one prepared plan (no separate row lock, no PL/pgSQL). Anything
 *   unusual (unknown or closed task, an agent that does not exist or does
 *   not hold the task) falls back to the general transition, which raises
 *   the documented errors.
 * - An agent that declined a task (iwd.decline_task) is not offered it again
 *   for a while. The agent's row, which the claim reads anyway, holds the
 *   end of its latest decline: only while that lies ahead does the claim read
 *   the agent's declined tasks (one index probe) and leave them out of the
 *   pick, so an agent without declines costs no extra statement.
 * - We use SPI with plans prepared once per backend: the statements are plain
 *   SQL that the planner turns into index scans, and SPI keeps the trigger,
 *   constraint and visibility semantics of ordinary DML, which direct heap
 *   access would have to re-implement.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "claim.h"
#include "draft.h"
#include "guard.h"
#include "iwd.h"
#include "stats.h"

#define RESERVE_SECONDS_MAX (7 * 24 * 3600)
#define CLAIM_ATTEMPTS_MAX 8
/* candidates per skill bucket on the first pick (doubled on each new pick) */
#define CLAIM_WINDOW 4
/* an agent with more buckets than this walks the universal queue instead (a generalist fits most work) */
#define CLAIM_BUCKETS_MAX 128
/*
 * the most routing keys a session remembers (some 5 MB); claims in a database
 * whose tasks have made more walk the universal queue
 */
#define REGISTRY_CACHE_MAX 50000
/* skill levels are validated to 0..10 */
#define SKILL_LEVEL_MAX IWD_SKILL_LEVEL_MAX
/* who did a supervisor's completion, as iwd._check_actor bounds it */
#define ACTOR_BYTES_MAX 256

static SPIPlanPtr agent_plan = NULL;
static SPIPlanPtr pick_plan = NULL;
static SPIPlanPtr walk_plan = NULL;
static SPIPlanPtr complete_plan = NULL;
static SPIPlanPtr transition_plan = NULL;
static SPIPlanPtr declined_plan = NULL;

/*
 * Prepare and keep a plan for the life of the backend. The plan is generic
 * (planned once, replanned only when the tables' definitions or statistics
 * change): left to choose, the plan cache would plan the pick afresh on every
 * claim, since a generic plan with a LIMIT parameter is estimated dearer than
 * a custom one, and planning would cost more than the pick itself.
 */
static SPIPlanPtr
KeepPlan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "could not prepare claim statement: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	return *slot;
}

/* Read a JSON number as an int (0 when it is not a number). */
static int
JsonbInt(JsonbValue *v)
{
	bool		err = false;
	int			n;

	if (v == NULL || v->type != jbvNumeric)
		return 0;
	n = numeric_int4_opt_error(v->val.numeric, &err);
	return err ? 0 : n;
}

/* Does an agent with these skill levels meet every required level? */
static bool
SkillsMet(Jsonb *required, Jsonb *agent)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue	key = {0};

	if (JB_ROOT_COUNT(required) == 0)
		return true;
	it = JsonbIteratorInit(&required->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = v;
		else if (tok == WJB_VALUE)
		{
			JsonbValue *have = getKeyJsonValueFromContainer(&agent->root, key.val.string.val,
															key.val.string.len, NULL);

			if (have == NULL || JsonbInt(have) < JsonbInt(&v))
				return false;
		}
	}
	return true;
}

PG_FUNCTION_INFO_V1(iwd_skills_met);

/* SQL: iwd.skills_met(required jsonb, agent jsonb) RETURNS boolean */
Datum
iwd_skills_met(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(SkillsMet(PG_GETARG_JSONB_P(0), PG_GETARG_JSONB_P(1)));
}

/* A skill level as a bucket level: 0..SKILL_LEVEL_MAX (the validated range). */
static int
BucketLevel(JsonbValue *v)
{
	int			level = JsonbInt(v);

	return level < 0 ? 0 : (level > SKILL_LEVEL_MAX ? SKILL_LEVEL_MAX : level);
}

/*
 * A routing key and the skills it names: the first required skill (NULL for
 * '') and, for a pair, the second.
 */
typedef struct RouteKey
{
	char	   *key;
	char	   *skill;
	char	   *paired_with;
} RouteKey;

/*
 * The routing key of a task's skill map: '' when it requires no skill;
 * "name:level" when it requires one; "first+second" (its first two skills in
 * jsonb key order) when it requires several.
 */
static RouteKey
RoutingKeyOf(Jsonb *skills)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue	first = {0};
	int			nkeys = 0;
	RouteKey	r = {.key = "", .skill = NULL, .paired_with = NULL};

	if (!JB_ROOT_IS_OBJECT(skills) || JB_ROOT_COUNT(skills) == 0)
		return r;
	it = JsonbIteratorInit(&skills->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY && ++nkeys == 2)
		{
			r.skill = pnstrdup(first.val.string.val, first.val.string.len);
			r.paired_with = pnstrdup(v.val.string.val, v.val.string.len);
			r.key = psprintf("%s+%s", r.skill, r.paired_with);
			return r;
		}
		if (tok == WJB_KEY)
			first = v;
		else if (tok == WJB_VALUE && JB_ROOT_COUNT(skills) == 1)
		{
			r.skill = pnstrdup(first.val.string.val, first.val.string.len);
			r.key = psprintf("%s:%d", r.skill, BucketLevel(&v));
			return r;
		}
	}
	return r;
}

/* The routing key of a task's skill map, as text. */
static text *
RoutingKey(Jsonb *skills)
{
	return cstring_to_text(RoutingKeyOf(skills).key);
}

PG_FUNCTION_INFO_V1(iwd_routing_key);

/* SQL: iwd.routing_key(skills jsonb) RETURNS text (the claim index's bucket) */
Datum
iwd_routing_key(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(RoutingKey(PG_GETARG_JSONB_P(0)));
}

/*
 * The registry of routing keys (iwd.routing_keys): every key a task has had,
 * with the skills it names, so that a pick reads only the agent's buckets
 * that may hold work (an agent with five skills at high levels has some sixty
 * buckets, most of them empty: each would cost an index descent). A BEFORE trigger on iwd.task adds the key of
 * every row written with new skills, in the writing transaction, so a task is
 * never visible without its key. Keys are never removed (the registry is
 * bounded by skills x levels and skill pairs, and a trigger forbids deletes).
 *
 * Each backend remembers the keys it has seen committed by other
 * transactions, which therefore exist for good, so that the trigger usually
 * costs a hash lookup; the memory is dropped when the registry's table is a
 * different one (the extension was re-created).
 */
/* the longest routing key: two skill names and "+" */
#define KNOWN_KEY_LEN (2 * IWD_SKILL_NAME_MAX + 2)

typedef struct KnownKey
{
	char		key[KNOWN_KEY_LEN];
} KnownKey;

static HTAB *known_keys = NULL;
static Oid	known_keys_relid = InvalidOid;
static SPIPlanPtr note_plan = NULL;
static SPIPlanPtr note_xmin_plan = NULL;

static SPIPlanPtr KeepPlan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes);

/* Register a routing key unless this backend knows it is registered. */
static void
NoteRoutingKey(Oid relid, RouteKey route)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	const char *key = route.key;
	bool		isnull;
	TransactionId xmin;

	if (known_keys == NULL || known_keys_relid != relid)
	{
		HASHCTL		ctl = {.keysize = KNOWN_KEY_LEN, .entrysize = sizeof(KnownKey)};

		if (known_keys != NULL)
			hash_destroy(known_keys);
		known_keys = hash_create("iwd routing keys", 256, &ctl, HASH_ELEM | HASH_STRINGS);
		known_keys_relid = relid;
	}
	if (strlen(key) < KNOWN_KEY_LEN && hash_search(known_keys, key, HASH_FIND, NULL) != NULL)
		return;
	args[0] = CStringGetTextDatum(key);
	args[1] = route.skill ? CStringGetTextDatum(route.skill) : (Datum) 0;
	args[2] = route.paired_with ? CStringGetTextDatum(route.paired_with) : (Datum) 0;
	nulls[1] = route.skill ? ' ' : 'n';
	nulls[2] = route.paired_with ? ' ' : 'n';
	SPI_connect();
	IwdPushSearchPath();
	if (SPI_execute_plan(KeepPlan(&note_plan,
								  "INSERT INTO iwd.routing_keys (key, skill, paired_with) VALUES ($1, $2, $3) "
								  "ON CONFLICT DO NOTHING",
								  3, types), args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not register a routing key");
	/*
	 * Already there: remember it, unless this transaction wrote it (it would
	 * be gone if this transaction or that subtransaction rolled back).
	 */
	if (SPI_processed == 0 && strlen(key) < KNOWN_KEY_LEN &&
		SPI_execute_plan(KeepPlan(&note_xmin_plan, "SELECT xmin FROM iwd.routing_keys WHERE key = $1",
								  1, types), args, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (!isnull && !TransactionIdIsCurrentTransactionId(xmin))
			hash_search(known_keys, key, HASH_ENTER, NULL);
	}
	IwdPopSearchPath();
	SPI_finish();
}

PG_FUNCTION_INFO_V1(iwd_note_routing_key);

/*
 * Trigger (BEFORE INSERT OR UPDATE OF skills ON iwd.task, FOR EACH ROW):
 * register the routing key of the row being written.
 */
Datum
iwd_note_routing_key(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	tupdesc;
	int			attnum;
	bool		isnull;
	Datum		skills;
	Oid			relid;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "iwd._note_routing_key must run as a BEFORE ... FOR EACH ROW trigger");
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : trigdata->tg_trigtuple;
	tupdesc = RelationGetDescr(trigdata->tg_relation);
	attnum = SPI_fnumber(tupdesc, "skills");
	if (attnum <= 0)
		elog(ERROR, "iwd._note_routing_key: the table has no column \"skills\"");
	skills = heap_getattr(tuple, attnum, tupdesc, &isnull);
	relid = get_relname_relid("routing_keys", RelationGetNamespace(trigdata->tg_relation));
	if (!OidIsValid(relid))
		elog(ERROR, "iwd._note_routing_key: the routing key registry is missing");
	NoteRoutingKey(relid, isnull ? (RouteKey) {.key = ""} : RoutingKeyOf(DatumGetJsonbP(skills)));
	return PointerGetDatum(tuple);
}

/*
 * The claim's memory of the registry: for each skill that starts a routing
 * key, the levels at which it is registered alone and the skills it is
 * registered in a pair with (sorted). Loaded from iwd.routing_keys on the
 * first claim and again after it changes: a row added to the registry sends a
 * relcache invalidation of its table (trigger routing_keys_changed) at
 * commit, which every backend receives before its next statement. A key
 * committed in the instant between its task becoming visible and that
 * message being sent is missed by claims made in that instant only. A
 * registry of more than REGISTRY_CACHE_MAX keys is not remembered, so that a
 * tenant inventing skills cannot grow every session's memory: its claims walk
 * the universal queue.
 */
typedef struct RegisteredSkill
{
	char		name[IWD_SKILL_NAME_MAX + 1];	/* hash key (a longer name is cut, and shares) */
	uint32		levels;			/* bit l: "name:l" is registered */
	int			npaired;
	int			paired_cap;
	char	  **paired;			/* "name+paired[i]" is registered */
} RegisteredSkill;

static MemoryContext registry_cxt = NULL;
static HTAB *registry = NULL;
static bool registry_valid = false;
static uint64 registry_invalidations = 0;
static bool registry_has_empty = false;
static bool registry_too_large = false;
static Oid	registry_relid = InvalidOid;
static SPIPlanPtr registry_plan = NULL;

static void ClaimRelcacheCallback(Datum arg, Oid relid);

/* Register the claim's relcache callback once per backend (callback slots are few). */
static void
ClaimRegisterCallback(void)
{
	static bool registered = false;

	if (!registered)
		CacheRegisterRelcacheCallback(ClaimRelcacheCallback, (Datum) 0);
	registered = true;
}

/* Order of the paired skill names (qsort and bsearch over char * elements). */
static int
ComparePaired(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* (Re)load the registry from iwd.routing_keys (inside the claim's SPI connection). */
static void
LoadRegistry(void)
{
	HASHCTL		ctl = {.keysize = IWD_SKILL_NAME_MAX + 1, .entrysize = sizeof(RegisteredSkill)};
	HASH_SEQ_STATUS seq;
	RegisteredSkill *entry;
	uint64		invalidations = registry_invalidations;
	uint64		nrows;

	if (registry_cxt == NULL)
	{
		registry_cxt = AllocSetContextCreate(TopMemoryContext, "iwd routing key registry", ALLOCSET_DEFAULT_SIZES);
		ClaimRegisterCallback();
	}
	MemoryContextReset(registry_cxt);
	registry = NULL;
	registry_has_empty = false;
	registry_valid = false;
	registry_relid = get_relname_relid("routing_keys", get_namespace_oid("iwd", false));
	if (SPI_execute_plan(KeepPlan(&registry_plan, "SELECT key, skill, paired_with FROM iwd.routing_keys", 0, NULL),
						 NULL, NULL, true, REGISTRY_CACHE_MAX + 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the routing key registry");
	registry_too_large = SPI_processed > REGISTRY_CACHE_MAX;
	nrows = registry_too_large ? 0 : SPI_processed;
	ctl.hcxt = registry_cxt;
	registry = hash_create("iwd routing key registry", Max(nrows, 64), &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (uint64 i = 0; i < nrows; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		char	   *key = SPI_getvalue(row, SPI_tuptable->tupdesc, 1);
		char	   *skill = SPI_getvalue(row, SPI_tuptable->tupdesc, 2);
		char	   *paired_with = SPI_getvalue(row, SPI_tuptable->tupdesc, 3);
		bool		found;

		if (skill == NULL)
		{
			registry_has_empty = true;
			continue;
		}
		entry = hash_search(registry, skill, HASH_ENTER, &found);
		if (!found)
		{
			entry->levels = 0;
			entry->npaired = entry->paired_cap = 0;
			entry->paired = NULL;
		}
		if (paired_with == NULL)
		{
			/* "skill:level" (a row written by hand that is not is left out) */
			size_t		len = strlen(skill);
			int			level = strncmp(key, skill, len) == 0 && key[len] == ':' ? atoi(key + len + 1) : -1;

			if (level >= 0 && level <= SKILL_LEVEL_MAX)
				entry->levels |= (uint32) 1 << level;
			continue;
		}
		if (entry->npaired == entry->paired_cap)
		{
			entry->paired_cap = entry->paired_cap == 0 ? 4 : entry->paired_cap * 2;
			entry->paired = entry->paired == NULL ?
				MemoryContextAlloc(registry_cxt, sizeof(char *) * entry->paired_cap) :
				repalloc(entry->paired, sizeof(char *) * entry->paired_cap);
		}
		entry->paired[entry->npaired++] = MemoryContextStrdup(registry_cxt, paired_with);
	}
	hash_seq_init(&seq, registry);
	while ((entry = hash_seq_search(&seq)) != NULL)
		if (entry->npaired > 1)
			qsort(entry->paired, entry->npaired, sizeof(char *), ComparePaired);
	/* kept unless an invalidation arrived while the rows were read (an error leaves it to reload too) */
	registry_valid = registry_invalidations == invalidations;
}

/* Does the agent list this skill? */
static bool
AgentHasSkill(Jsonb *skills, const char *name)
{
	return getKeyJsonValueFromContainer(&skills->root, name, strlen(name), NULL) != NULL;
}

/*
 * The registered buckets an agent with these skills may find work in, or
 * NULL when they number more than CLAIM_BUCKETS_MAX (the claim then walks the
 * universal queue): '' (tasks needing no skill); for each of its skills at
 * level L, that skill required alone at a registered level 0..L; and each
 * registered pair of two of its skills (tasks needing several, whose levels
 * the pick checks). The cost is one lookup per skill of the agent plus, for
 * each, the shorter of its registered pairs and the agent's skills: never
 * the agent's pair cross product, and never more than the registry holds.
 */
static ArrayType *
AgentBuckets(Jsonb *skills)
{
	size_t		nskills = JB_ROOT_IS_OBJECT(skills) ? JB_ROOT_COUNT(skills) : 0;
	Datum	   *keys = palloc(sizeof(Datum) * (CLAIM_BUCKETS_MAX + 1));
	char	  **names = palloc(sizeof(char *) * (nskills + 1));
	int		   *levels = palloc(sizeof(int) * (nskills + 1));
	size_t		k = 0;
	int			n = 0;

	if (!registry_valid)
		LoadRegistry();
	if (registry_too_large)
		return NULL;
	if (registry_has_empty)
		keys[n++] = CStringGetTextDatum("");
	if (nskills > 0)
	{
		JsonbIterator *it = JsonbIteratorInit(&skills->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE && k < nskills)
		{
			if (tok == WJB_KEY)
				names[k] = pnstrdup(v.val.string.val, v.val.string.len);
			else if (tok == WJB_VALUE)
				levels[k++] = BucketLevel(&v);
		}
	}
	for (size_t i = 0; i < k; i++)
	{
		RegisteredSkill *entry = hash_search(registry, names[i], HASH_FIND, NULL);

		if (entry == NULL)
			continue;
		for (int level = 0; level <= levels[i]; level++)
		{
			if ((entry->levels & ((uint32) 1 << level)) == 0)
				continue;
			if (n == CLAIM_BUCKETS_MAX)
				return NULL;
			keys[n++] = CStringGetTextDatum(psprintf("%s:%d", names[i], level));
		}
		for (size_t j = 0; j < (size_t) entry->npaired && j < k; j++)
		{
			/* the pair's second skill: from the registered list or from the agent's, whichever is shorter */
			const char *second = NULL;

			if ((size_t) entry->npaired <= k)
				second = AgentHasSkill(skills, entry->paired[j]) ? entry->paired[j] : NULL;
			else if (bsearch(&names[j], entry->paired, entry->npaired, sizeof(char *), ComparePaired) != NULL)
				second = names[j];
			if (second == NULL)
				continue;
			if (n == CLAIM_BUCKETS_MAX)
				return NULL;
			keys[n++] = CStringGetTextDatum(psprintf("%s+%s", names[i], second));
		}
	}
	return construct_array(keys, n, TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * The agent's capacity (row 0 of the agent query) as two arrays for the claim
 * statement: the media types it lists and the number of tasks of each it may
 * hold (a value that is not a number: none). The statement counts what the
 * agent holds with a snapshot taken after the agent's row is locked, so that
 * a claim of the same agent committed while this one waited for the lock is
 * counted.
 */
static void
AgentCapacity(Jsonb *capacity, ArrayType **media, ArrayType **limits)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	Datum	   *names = palloc(sizeof(Datum) * (JB_ROOT_COUNT(capacity) + 1));
	Datum	   *counts = palloc(sizeof(Datum) * (JB_ROOT_COUNT(capacity) + 1));
	int			n = 0;

	it = JsonbIteratorInit(&capacity->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			names[n] = PointerGetDatum(cstring_to_text_with_len(v.val.string.val, v.val.string.len));
		else if (tok == WJB_VALUE)
			counts[n++] = Int32GetDatum(JsonbInt(&v));
	}
	*media = construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT);
	*limits = construct_array(counts, n, INT4OID, sizeof(int32), true, TYPALIGN_INT);
}

/* Send the event notification listeners wait for. */
static void
NotifyTaskEvent(int64 task_id, const char *event)
{
	if (iwd_notify == IWD_NOTIFY_EVENT)
		Async_Notify("iwd_task_event", psprintf(INT64_FORMAT ":%s", task_id, event));
}

/* The tasks the agent declined that are still kept from it (a bigint[]), or NULL when none. */
static ArrayType *
DeclinedTasks(Datum agent, TimestampTz now)
{
	Oid			types[2] = {TEXTOID, TIMESTAMPTZOID};
	Datum		args[2] = {agent, TimestampTzGetDatum(now)};
	bool		isnull;
	Datum		ids;

	if (SPI_execute_plan(KeepPlan(&declined_plan,
								  "SELECT array_agg(task_id) FROM iwd.task_decline WHERE agent = $1 AND until > $2",
								  2, types), args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the agent's declined tasks");
	ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? NULL : DatumGetArrayTypePCopy(ids);
}

/*
 * The claim statement: from the agent's capacity, the media types it may take
 * more of (f); the best queued tasks that fit (p: the pick, below); the first
 * of them whose claimer's lock this session obtains (w: iwd._claim_lock, one
 * of iwd's own locks, transaction-scoped, not waited for); its reservation,
 * if it is still queued (u), and its event (e). The result: how many
 * candidates the pick found, and the reserved task's id and document (NULL
 * when none was reserved). Parameters: $1 agent, $2 and $3 its capacity (media
 * types and limits), $4 its skills, $5 its buckets, $6 the window, $7 the
 * tasks it declined (or NULL), $8 the reservation's end, $9 now.
 *
 * A task fits when its media type has free capacity, it is not requested for
 * another agent and the agent meets its skills; a task the tenant's external
 * router holds (submitted, not given back: sql/router.sql, iwd.router_task)
 * is not taken: one probe of router_task_held_idx per row read (OFFSET 0 keeps
 * it a probe, never a scan of what the router holds per row, whatever the
 * statistics say), and none when the router holds no task (one probe per
 * claim of the same index, in the same snapshot: a tenant without a router
 * pays only that). An agent with no free capacity reads no task (a gating
 * condition on f).
 */
#define CLAIM_FREE_MEDIA \
	"WITH f AS MATERIALIZED (SELECT ARRAY(SELECT c.m FROM unnest($2, $3) AS c(m, cap) " \
	"WHERE (SELECT count(*) FROM iwd.task l WHERE l.assigned_to = $1 AND l.status = 'assigned' " \
	"AND l.media_type = c.m) < c.cap) AS media), "
#define CLAIM_FITS \
	"q.status = 'queued' AND q.media_type = ANY ((SELECT f.media FROM f)::text[]) " \
	"AND (q.requested_agent IS NULL OR q.requested_agent = $1) AND iwd.skills_met(q.skills, $4) " \
	"AND ($7 IS NULL OR q.id <> ALL ($7)) " \
	"AND ((SELECT h.task_id FROM iwd.router_task h WHERE h.state IN ('submitting', 'queued') " \
	"ORDER BY h.task_id LIMIT 1) IS NULL " \
	"OR NOT EXISTS (SELECT 1 FROM iwd.router_task h WHERE h.task_id = q.id " \
	"AND h.state IN ('submitting', 'queued') OFFSET 0)) "
#define CLAIM_HAS_CAPACITY "(SELECT cardinality(f.media) FROM f) > 0 "
#define CLAIM_ORDER(t) \
	"ORDER BY " t ".priority DESC, " t ".business_value DESC, " t ".due_at ASC NULLS LAST, " t ".created_at, " \
	t ".id LIMIT $6"
#define CLAIM_TAKE \
	"w AS (SELECT p.id FROM p WHERE iwd._claim_lock(p.id) LIMIT 1), " \
	"u AS (UPDATE iwd.task t SET status = 'assigned', assigned_to = $1, reserved_until = $8, accepted_at = NULL, " \
	"updated_at = $9 WHERE t.id = (SELECT w.id FROM w) AND t.status = 'queued' " \
	"RETURNING t.id, iwd.task_json(t) AS task), " \
	"e AS (INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, status_after, detail) " \
	"SELECT u.id, $9, 'reserved', $1, 'queued', 'assigned', jsonb_build_object('reservedUntil', $8) FROM u) " \
	"SELECT (SELECT count(*) FROM p)::int, (SELECT u.id FROM u), (SELECT u.task FROM u)"

/*
 * The pick over the agent's buckets: the head of each (the claim index's
 * order within the bucket), merged.
 */
static const char *const claim_pick_sql =
CLAIM_FREE_MEDIA
"p AS MATERIALIZED (SELECT c.id FROM unnest($5) AS s(k) CROSS JOIN LATERAL ("
"SELECT q.id, q.priority, q.business_value, q.due_at, q.created_at FROM iwd.task q "
"WHERE iwd.routing_key(q.skills) = s.k AND " CLAIM_FITS CLAIM_ORDER("q") ") c "
"WHERE " CLAIM_HAS_CAPACITY CLAIM_ORDER("c") "), "
CLAIM_TAKE;

/* The pick of an agent with very many buckets: a walk of the universal queue, where most tasks fit it. */
static const char *const claim_walk_sql =
CLAIM_FREE_MEDIA
"p AS MATERIALIZED (SELECT q.id FROM iwd.task q WHERE " CLAIM_FITS "AND " CLAIM_HAS_CAPACITY CLAIM_ORDER("q") "), "
CLAIM_TAKE;

/* true while this session runs a claim statement: the only time iwd._claim_lock takes a lock */
static bool claim_running = false;

/* Run a claim statement; SPI_OK_SELECT on success. */
static int
RunClaim(SPIPlanPtr plan, Datum *args, const char *nulls)
{
	bool		was_running = claim_running;
	int			rc;

	claim_running = true;
	PG_TRY();
	{
		rc = SPI_execute_plan(plan, args, nulls, false, 0);
	}
	PG_FINALLY();
	{
		claim_running = was_running;
	}
	PG_END_TRY();
	return rc;
}

PG_FUNCTION_INFO_V1(iwd_claim_lock);

/*
 * SQL: iwd._claim_lock(id bigint) RETURNS boolean
 *
 * Take the claimer's lock on a task for the claim statement; false when
 * another claimer holds it. Outside a claim it refuses, so that no login can
 * hold claimers' locks to stall claims.
 */
Datum
iwd_claim_lock(PG_FUNCTION_ARGS)
{
	if (!claim_running)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("iwd._claim_lock runs only inside a claim"),
				 errdetail("It takes a claimer's lock on a task for iwd.next_task and iwd.complete_task.")));
	PG_RETURN_BOOL(IwdLock(IWD_LOCK_CLAIM, (uint32) PG_GETARG_INT64(0), false, false) != LOCKACQUIRE_NOT_AVAIL);
}

/*
 * Claim the best task for the agent; NULL datum when none fits. Two
 * statements: the agent's row lock, then the claim statement, whose snapshot
 * (taken after the lock) sees every claim of the same agent that committed
 * before it.
 */
static Datum
ClaimTask(const char *agent, int reserve_seconds, bool *found)
{
	Oid			agent_types[1] = {TEXTOID};
	Oid			claim_types[9] = {TEXTOID, TEXTARRAYOID, INT4ARRAYOID, JSONBOID, TEXTARRAYOID, INT4OID,
	INT8ARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		agent_arg[1] = {CStringGetTextDatum(agent)};
	TimestampTz now = IwdNow();
	TimestampTz until = now + (int64) reserve_seconds * USECS_PER_SEC;
	bool		isnull;
	char	   *state;
	Jsonb	   *skills;
	ArrayType  *media;
	ArrayType  *limits;
	ArrayType  *buckets;
	ArrayType  *declined = NULL;
	Datum		declined_until;
	bool		has_declines;
	Datum		claim_args[9];
	char		claim_nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPIPlanPtr	plan;
	int64		task_id;
	Datum		task;

	*found = false;
	if (SPI_execute_plan(KeepPlan(&agent_plan,
								  "SELECT state, skills, capacity, declined_until FROM iwd.agent WHERE id = $1 "
								  "FOR NO KEY UPDATE",
								  1, agent_types), agent_arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read agent");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("agent \"%s\" does not exist", agent)));
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(state, "ready") != 0)
		return (Datum) 0;
	skills = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	/* only plain SQL can store more (iwd.upsert_agent refuses them) */
	if (JB_ROOT_IS_OBJECT(skills) && JB_ROOT_COUNT(skills) > IWD_AGENT_SKILLS_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("agent \"%s\" has more than %d skills", agent, IWD_AGENT_SKILLS_MAX),
				 errdetail("It has %u.", JB_ROOT_COUNT(skills))));
	declined_until = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
	has_declines = !isnull && DatumGetTimestampTz(declined_until) > now;
	AgentCapacity(DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)),
				  &media, &limits);
	if (ArrayGetNItems(ARR_NDIM(media), ARR_DIMS(media)) == 0)
		return (Datum) 0;
	/* only while the agent's latest decline lasts: one index probe */
	if (has_declines)
		declined = DeclinedTasks(agent_arg[0], now);
	buckets = AgentBuckets(skills);
	/* no registered bucket fits: every queued task's key is registered, so none fits */
	if (buckets != NULL && ArrayGetNItems(ARR_NDIM(buckets), ARR_DIMS(buckets)) == 0)
		return (Datum) 0;
	plan = buckets == NULL ? KeepPlan(&walk_plan, claim_walk_sql, 9, claim_types) :
		KeepPlan(&pick_plan, claim_pick_sql, 9, claim_types);
	claim_args[0] = agent_arg[0];
	claim_args[1] = PointerGetDatum(media);
	claim_args[2] = PointerGetDatum(limits);
	claim_args[3] = JsonbPGetDatum(skills);
	claim_args[4] = PointerGetDatum(buckets);
	claim_nulls[4] = buckets == NULL ? 'n' : ' ';
	claim_args[6] = PointerGetDatum(declined);
	claim_nulls[6] = declined == NULL ? 'n' : ' ';
	claim_args[7] = TimestampTzGetDatum(until);
	claim_args[8] = TimestampTzGetDatum(now);
	for (int attempt = 0, window = CLAIM_WINDOW;; attempt++, window *= 2)
	{
		int			ncandidates;

		claim_args[5] = Int32GetDatum(window);
		if (RunClaim(plan, claim_args, claim_nulls) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not claim a task");
		ncandidates = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		task_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (!isnull)
			break;

		/*
		 * None reserved: every candidate was being taken by others, or the
		 * one locked was taken between the statement's snapshot and its
		 * update. Look again, further down, unless the pick found fewer than
		 * it could (nothing else fits).
		 */
		if (attempt == CLAIM_ATTEMPTS_MAX || ncandidates < window)
			return (Datum) 0;
	}
	task = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	task = SPI_datumTransfer(task, false, -1);

	NotifyTaskEvent(task_id, "reserved");
	StatsCount(STAT_CLAIMS, 1);
	*found = true;
	return task;
}

/*
 * The plan settings iwd.next_task runs under (its SET clause, sql/iwd.sql):
 * the claim's statements are planned, and planned again after a change of
 * statistics, under them, whichever function runs the claim.
 */
static const char *const claim_plan_settings[][2] = {
	{"enable_sort", "off"},
	{"enable_bitmapscan", "off"},
	{"enable_nestloop", "off"},
	{"jit", "off"},
};

/*
 * Claim as iwd.next_task does, under its plan settings (for a claim made by
 * another function: iwd.complete_task with next). The settings end with the
 * call, as a function's SET clause does, or with the transaction on error.
 */
static Datum
ClaimUnderPlanSettings(const char *agent, int reserve_seconds, bool *found)
{
	int			nest_level = NewGUCNestLevel();
	Datum		task;

	for (int i = 0; i < (int) lengthof(claim_plan_settings); i++)
		(void) set_config_option(claim_plan_settings[i][0], claim_plan_settings[i][1], PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	task = ClaimTask(agent, reserve_seconds, found);
	AtEOXact_GUC(true, nest_level);
	return task;
}

PG_FUNCTION_INFO_V1(iwd_next_task);

/*
 * SQL: iwd.next_task(agent text, reserve_seconds int DEFAULT 30) RETURNS jsonb
 *
 * Reserve the next best task for a ready agent; NULL when nothing fits.
 */
Datum
iwd_next_task(PG_FUNCTION_ARGS)
{
	char	   *agent = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			reserve_seconds = PG_GETARG_INT32(1);
	bool		found;
	Datum		task;

	if (reserve_seconds <= 0 || reserve_seconds > RESERVE_SECONDS_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reserve_seconds must be between 1 and %d", RESERVE_SECONDS_MAX)));
	SPI_connect();
	IwdPushSearchPath();
	task = ClaimTask(agent, reserve_seconds, &found);
	IwdPopSearchPath();
	SPI_finish();
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(task);
}

/*
 * The terminal copy completion writes into iwd.task_closed: every column of
 * that table, taken by name from the row deleted from iwd.task, except those
 * completion sets (below). The column list is the table's own descriptor
 * (sql/iwd.sql declares the task row once, and iwd.task_closed from it), so
 * a column added to the task is carried over without a change here. The
 * statement is built once per backend and again when iwd.task_closed's
 * definition changes (a relcache invalidation), before its plan is used.
 */
typedef struct CompletedValue
{
	const char *column;
	const char *value;			/* SQL over d (the deleted row), $2 (agent), $3 (time) */
} CompletedValue;

static const CompletedValue completed_values[] = {
	{"status", "'completed'"},
	{"assigned_to", "coalesce($2, d.assigned_to)"},
	{"reserved_until", "NULL"},
	{"hold_reason", "NULL"},
	{"completed_at", "$3"},
	{"updated_at", "$3"},
};

static char *complete_sql = NULL;
static bool complete_sql_valid = false;
static Oid	task_closed_relid = InvalidOid;

/*
 * Relcache callback (InvalidOid: everything may have changed): forget the
 * routing key registry when its table changes, and build the completion
 * statement again when iwd.task_closed does.
 */
static void
ClaimRelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == registry_relid)
	{
		registry_valid = false;
		registry_invalidations++;
	}
	if (relid == InvalidOid || relid == task_closed_relid)
		complete_sql_valid = false;
}

/* The value completion writes into a column of iwd.task_closed. */
static const char *
CompletedValueOf(const char *column)
{
	for (int i = 0; i < (int) lengthof(completed_values); i++)
		if (strcmp(completed_values[i].column, column) == 0)
			return completed_values[i].value;
	return psprintf("d.%s", quote_identifier(column));
}

/*
 * The completion statement for the current definition of iwd.task_closed;
 * the kept plan is dropped when the statement changes.
 */
static const char *
CompleteSql(void)
{
	StringInfoData columns;
	StringInfoData values;
	Relation	rel;
	TupleDesc	tupdesc;
	char	   *sql;

	if (complete_sql_valid)
		return complete_sql;
	ClaimRegisterCallback();
	task_closed_relid = get_relname_relid("task_closed", get_namespace_oid("iwd", false));
	if (!OidIsValid(task_closed_relid))
		elog(ERROR, "relation iwd.task_closed does not exist");
	rel = table_open(task_closed_relid, AccessShareLock);
	tupdesc = RelationGetDescr(rel);
	initStringInfo(&columns);
	initStringInfo(&values);
	for (int a = 0; a < tupdesc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, a);

		if (att->attisdropped)
			continue;
		appendStringInfo(&columns, "%s%s", columns.len > 0 ? ", " : "", quote_identifier(NameStr(att->attname)));
		appendStringInfo(&values, "%s%s", values.len > 0 ? ", " : "", CompletedValueOf(NameStr(att->attname)));
	}
	/* the lock is kept until the end of the transaction, as the statement's own is */
	table_close(rel, NoLock);
	sql = psprintf("WITH d AS (DELETE FROM iwd.task t WHERE t.id = $1 "
				   "AND ($2 IS NULL OR (t.status = 'assigned' AND t.assigned_to = $2 "
				   "AND EXISTS (SELECT 1 FROM iwd.agent a WHERE a.id = $2))) RETURNING t.*), "
				   "c AS (INSERT INTO iwd.task_closed (%s) SELECT %s FROM d RETURNING *), "
				   "e AS (INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, "
				   "status_after) SELECT d.id, $3, 'completed', coalesce($2, $4), d.status, 'completed' FROM d) "
				   "SELECT iwd.task_json(ROW(c.*)::iwd.task) FROM c",
				   columns.data, values.data);
	if (complete_sql == NULL || strcmp(sql, complete_sql) != 0)
	{
		if (complete_plan != NULL)
			SPI_freeplan(complete_plan);
		complete_plan = NULL;
		if (complete_sql != NULL)
			pfree(complete_sql);
		complete_sql = MemoryContextStrdup(TopMemoryContext, sql);
	}
	complete_sql_valid = true;
	return complete_sql;
}

/* A jsonb document as a value to push (its container, not unpacked). */
static void
JsonbBinaryValue(JsonbValue *v, Jsonb *jb)
{
	v->type = jbvBinary;
	v->val.binary.data = &jb->root;
	v->val.binary.len = VARSIZE(jb) - VARHDRSZ;
}

/* A completion with next: {"completed": <task or null>, "next": <task or null>}. */
static Datum
CompletedAndNext(Datum completed, bool completed_null, Datum next, bool next_found)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int member = 0; member < 2; member++)
	{
		bool		null = member == 0 ? completed_null : !next_found;
		Datum		doc = member == 0 ? completed : next;

		v.type = jbvString;
		v.val.string.val = member == 0 ? "completed" : "next";
		v.val.string.len = strlen(v.val.string.val);
		pushJsonbValue(&state, WJB_KEY, &v);
		if (null)
			v.type = jbvNull;
		else
			JsonbBinaryValue(&v, DatumGetJsonbP(doc));
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	return JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));
}

PG_FUNCTION_INFO_V1(iwd_complete_task);

/*
 * SQL: iwd.complete_task(id bigint, agent text DEFAULT NULL, actor text DEFAULT NULL,
 *                        next boolean DEFAULT false, reserve_seconds int DEFAULT 30) RETURNS jsonb
 *
 * Complete an open task. An agent, when given, must exist and hold the task
 * (assigned to it), and is recorded as the event's actor; without one it is
 * a supervisor's completion, from any open status, recorded with actor (who
 * did it, NULL when unknown). The 0.1.0 signature, without actor, is served
 * too until the extension is updated.
 *
 * With next (an agent's loop in one round trip) the agent's next task is
 * then reserved in the same transaction, as iwd.next_task(agent,
 * reserve_seconds) would reserve it after the completion's commit (the
 * completed task no longer counts against the agent's capacity), and the
 * result is {"completed": <task>, "next": <task or null>}. A completion that
 * fails reserves nothing: the error ends the transaction.
 */
Datum
iwd_complete_task(PG_FUNCTION_ARGS)
{
	Oid			types[4] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		has_actor = PG_NARGS() > 2 && !PG_ARGISNULL(2);
	bool		isnull;
	Datum		task;
	bool		next = false;
	int			reserve_seconds = 0;
	Datum		next_task = (Datum) 0;
	bool		next_found = false;

	/* next and reserve_seconds: checked before anything is done */
	if (PG_NARGS() > 4)
	{
		if (PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("next must not be null"),
					 errdetail("It is true to reserve the agent's next task after the completion, else false.")));
		next = PG_GETARG_BOOL(3);
		if (next && PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("next requires an agent"),
					 errdetail("A completion without an agent (a supervisor's) names no agent to give a task.")));
		if (next && (PG_ARGISNULL(4) || PG_GETARG_INT32(4) <= 0 || PG_GETARG_INT32(4) > RESERVE_SECONDS_MAX))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("reserve_seconds must be between 1 and %d", RESERVE_SECONDS_MAX)));
		if (next)
			reserve_seconds = PG_GETARG_INT32(4);
	}

	args[0] = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	args[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	args[2] = TimestampTzGetDatum(IwdNow());
	args[3] = has_actor ? PG_GETARG_DATUM(2) : (Datum) 0;
	if (PG_ARGISNULL(0))
		nulls[0] = 'n';
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	if (!has_actor)
		nulls[3] = 'n';
	else if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)) > ACTOR_BYTES_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("actor is longer than %d bytes", ACTOR_BYTES_MAX),
				 errdetail("It has %d bytes.", (int) VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)))));
	SPI_connect();
	IwdPushSearchPath();
	if (!PG_ARGISNULL(0) &&
		SPI_execute_plan(KeepPlan(&complete_plan, CompleteSql(), 4, types), args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not complete a task");
	if (!PG_ARGISNULL(0) && SPI_processed == 1)
		NotifyTaskEvent(DatumGetInt64(args[0]), "completed");
	else
	{
		/* not an open task this agent may complete: the general path says why */
		if (SPI_execute_plan(KeepPlan(&transition_plan,
									  "SELECT iwd._transition($1, 'complete', 'completed', $2, '{}', NULL, $4)",
									  4, types), args, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not complete a task");
	}
	task = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	task = isnull ? (Datum) 0 : SPI_datumTransfer(task, false, -1);
	/*
	 * The claim sees the completion: its statements take snapshots of their
	 * own, and its read-only one (the agent's declined tasks) reads the
	 * active snapshot, taken here after it.
	 */
	if (next)
	{
		CommandCounterIncrement();
		PushActiveSnapshot(GetTransactionSnapshot());
		next_task = ClaimUnderPlanSettings(text_to_cstring(PG_GETARG_TEXT_PP(1)), reserve_seconds, &next_found);
		PopActiveSnapshot();
	}
	IwdPopSearchPath();
	SPI_finish();
	if (next)
		PG_RETURN_DATUM(CompletedAndNext(task, isnull, next_task, next_found));
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(task);
}
