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
 *   skill combinations the agent lacks. Buckets no task has ever had are
 *   skipped: the pick joins the agent's buckets with the routing key
 *   registry (iwd.routing_keys, below) by hashing, so that an agent with some
 *   sixty buckets does not pay an index descent for each of its empty ones.
 *   Only levels within a multi-skill bucket (and a third required skill) are
 *   left to the filter. An agent with so many skills that its buckets number
 *   in the hundreds walks the universal queue instead: most work fits a
 *   generalist, so that walk is short.
 * - A claim picks, then updates. The pick returns the best few candidates
 *   that fit (media type with free capacity, requested agent, skills and
 *   levels through iwd.skills_met, a C function over the two jsonb skill
 *   maps); the claim walks them in order and takes the first whose
 *   transaction-scoped advisory lock it obtains (pg_try_advisory_xact_lock on
 *   the task id) and that is still queued when it updates it, so that
 *   concurrent claimers skip each other's candidates without waiting. Only
 *   when every candidate was taken does it pick again, with a wider window.
 *   Row locks (FOR UPDATE SKIP LOCKED) would do the same
 *   job, but a claimer that meets a row claimed after its snapshot locks the
 *   newest version before rejecting it and keeps that lock until it commits,
 *   which makes the completion of that task wait: advisory locks leave the
 *   rows alone. Concurrent claimers therefore never wait on each other and
 *   never share a task.
 * - The agent's own row is locked (FOR NO KEY UPDATE) for the duration of the
 *   claim. That serializes only claims of the same agent, so its capacity
 *   count cannot be overrun by two of its own sessions; there is no global
 *   hot row (no counters, no queue head row).
 * - Completion is one statement: the open row is deleted, its terminal copy
 *   inserted into iwd.task_closed and the event recorded, all in data-modifying
 *   CTEs of one prepared plan (no separate row lock, no PL/pgSQL). Anything
 *   unusual (unknown or closed task, task assigned to another agent) falls
 *   back to the general transition, which raises the documented errors.
 * - We use SPI with plans prepared once per backend: the statements are plain
 *   SQL that the planner turns into index scans, and SPI keeps the trigger,
 *   constraint and visibility semantics of ordinary DML, which direct heap
 *   access would have to re-implement.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "iwd.h"
#include "stats.h"

#define RESERVE_SECONDS_MAX (7 * 24 * 3600)
/* advisory lock class of the claim (the other key is the task id) */
#define CLAIM_LOCK_CLASS 1230003
#define CLAIM_ATTEMPTS_MAX 8
/* candidates per skill bucket on the first pick (doubled on each new pick) */
#define CLAIM_WINDOW 4
/* an agent with more buckets than this walks the universal queue instead (a generalist fits most work) */
#define CLAIM_BUCKETS_MAX 128
/* skill levels are validated to 0..10 */
#define SKILL_LEVEL_MAX 10

static SPIPlanPtr agent_plan = NULL;
static SPIPlanPtr load_plan = NULL;
static SPIPlanPtr pick_plan = NULL;
static SPIPlanPtr walk_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr complete_plan = NULL;
static SPIPlanPtr transition_plan = NULL;

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
 * The routing key of a task's skill map: '' when it requires no skill;
 * "name:level" when it requires one; "first+second" (its first two skills in
 * jsonb key order) when it requires several.
 */
static text *
RoutingKey(Jsonb *skills)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue	first = {0};
	int			nkeys = 0;

	if (!JB_ROOT_IS_OBJECT(skills) || JB_ROOT_COUNT(skills) == 0)
		return cstring_to_text("");
	it = JsonbIteratorInit(&skills->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY && ++nkeys == 2)
			return cstring_to_text(psprintf("%.*s+%.*s", first.val.string.len, first.val.string.val,
											v.val.string.len, v.val.string.val));
		if (tok == WJB_KEY)
			first = v;
		else if (tok == WJB_VALUE && JB_ROOT_COUNT(skills) == 1)
			return cstring_to_text(psprintf("%.*s:%d", first.val.string.len, first.val.string.val,
											BucketLevel(&v)));
	}
	return cstring_to_text("");
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
 * so that a pick reads only the agent's buckets that may hold work (an agent
 * with five skills at high levels has some sixty buckets, most of them empty:
 * each costs an index descent). A BEFORE trigger on iwd.task adds the key of
 * every row written with new skills, in the writing transaction, so a task is
 * never visible without its key. Keys are never removed (the registry is
 * bounded by skills x levels and skill pairs, and a trigger forbids deletes).
 *
 * Each backend remembers the keys it has seen committed by other
 * transactions, which therefore exist for good, so that the trigger usually
 * costs a hash lookup; the memory is dropped when the registry's table is a
 * different one (the extension was re-created).
 */
#define KNOWN_KEY_LEN 128

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
NoteRoutingKey(Oid relid, const char *key)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
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
	SPI_connect();
	if (SPI_execute_plan(KeepPlan(&note_plan,
								  "INSERT INTO iwd.routing_keys (key) VALUES ($1) ON CONFLICT DO NOTHING",
								  1, types), args, NULL, false, 0) != SPI_OK_INSERT)
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
	NoteRoutingKey(relid, isnull ? "" : text_to_cstring(RoutingKey(DatumGetJsonbP(skills))));
	return PointerGetDatum(tuple);
}

/*
 * The buckets an agent with these skills reads: '' (tasks needing no skill);
 * for each of its skills at level L, that skill required alone at levels
 * 0..L; and each pair of its skills (tasks needing several, whose levels the
 * pick checks).
 */
static ArrayType *
AgentBuckets(Jsonb *skills)
{
	int			nskills = JB_ROOT_IS_OBJECT(skills) ? JB_ROOT_COUNT(skills) : 0;
	Datum	   *keys = palloc(sizeof(Datum) * (nskills * (SKILL_LEVEL_MAX + 1) + nskills * nskills + 1));
	JsonbValue *names = palloc(sizeof(JsonbValue) * (nskills + 1));
	int			n = 0;
	int			k = 0;

	keys[n++] = CStringGetTextDatum("");
	if (nskills > 0)
	{
		JsonbIterator *it = JsonbIteratorInit(&skills->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
				names[k] = v;
			else if (tok == WJB_VALUE)
			{
				for (int level = 0; level <= BucketLevel(&v); level++)
					keys[n++] = CStringGetTextDatum(psprintf("%.*s:%d", names[k].val.string.len,
															 names[k].val.string.val, level));
				k++;
			}
		}
		/* the keys come in jsonb order, the order RoutingKey names a pair in */
		for (int i = 0; i < k; i++)
			for (int j = i + 1; j < k; j++)
				keys[n++] = CStringGetTextDatum(psprintf("%.*s+%.*s", names[i].val.string.len,
														 names[i].val.string.val, names[j].val.string.len,
														 names[j].val.string.val));
	}
	return construct_array(keys, n, TEXTOID, -1, false, TYPALIGN_INT);
}

/* Media types in which the agent (row 0 of the agent query) has free capacity. */
static ArrayType *
FreeMediaTypes(Jsonb *capacity, const char *agent)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(agent)};
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	Datum	   *media;
	int			nmedia = 0;
	char	   *name = NULL;

	if (SPI_execute_plan(KeepPlan(&load_plan,
								  "SELECT media_type, count(*)::int FROM iwd.task "
								  "WHERE assigned_to = $1 AND status = 'assigned' GROUP BY media_type",
								  1, argtypes), args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not count the agent's assigned tasks");
	media = palloc(sizeof(Datum) * (JB_ROOT_COUNT(capacity) + 1));
	it = JsonbIteratorInit(&capacity->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		int			used = 0;

		if (tok == WJB_KEY)
		{
			name = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			char	   *m = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

			if (strcmp(m, name) == 0)
				used = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		}
		if (used < JsonbInt(&v))
			media[nmedia++] = CStringGetTextDatum(name);
	}
	if (nmedia == 0)
		return NULL;
	return construct_array(media, nmedia, TEXTOID, -1, false, TYPALIGN_INT);
}

/* Send the event notification listeners wait for. */
static void
NotifyTaskEvent(int64 task_id, const char *event)
{
	if (iwd_notify == IWD_NOTIFY_EVENT)
		Async_Notify("iwd_task_event", psprintf(INT64_FORMAT ":%s", task_id, event));
}

/* Claim the best task for the agent; NULL datum when none fits. */
static Datum
ClaimTask(const char *agent, int reserve_seconds, bool *found)
{
	Oid			agent_types[1] = {TEXTOID};
	Oid			claim_types[6] = {TEXTOID, TEXTARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID, JSONBOID, INT8OID};
	Oid			pick_types[5] = {TEXTOID, TEXTARRAYOID, JSONBOID, TEXTARRAYOID, INT4OID};
	Datum		agent_arg[1] = {CStringGetTextDatum(agent)};
	TimestampTz now = IwdNow();
	TimestampTz until = now + (int64) reserve_seconds * USECS_PER_SEC;
	bool		isnull;
	char	   *state;
	Jsonb	   *skills;
	ArrayType  *media;
	ArrayType  *buckets;
	Datum		claim_args[6];
	int64		task_id;
	Datum		task;

	*found = false;
	if (SPI_execute_plan(KeepPlan(&agent_plan,
								  "SELECT state, skills, capacity FROM iwd.agent WHERE id = $1 FOR NO KEY UPDATE",
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
	media = FreeMediaTypes(DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3,
															 &isnull)), agent);
	if (media == NULL)
		return (Datum) 0;

	claim_args[0] = agent_arg[0];
	claim_args[1] = PointerGetDatum(media);
	claim_args[2] = TimestampTzGetDatum(until);
	claim_args[3] = TimestampTzGetDatum(now);
	claim_args[4] = JsonbPGetDatum(skills);
	buckets = AgentBuckets(skills);
	for (int attempt = 0, window = CLAIM_WINDOW;; attempt++, window *= 2)
	{
		Datum		pick_args[5] = {agent_arg[0], PointerGetDatum(media), JsonbPGetDatum(skills),
		PointerGetDatum(buckets), Int32GetDatum(window)};
		int			ncandidates;
		int64	   *candidates;
		bool		claimed = false;

		/*
		 * The best queued tasks that fit, from the head of each of the agent's
		 * buckets; for an agent with very many skills (hundreds of buckets), from
		 * the universal queue, where most tasks fit it.
		 */
		if (ARR_DIMS(buckets)[0] > CLAIM_BUCKETS_MAX)
		{
			if (SPI_execute_plan(KeepPlan(&walk_plan,
										  "SELECT q.id FROM iwd.task q WHERE q.status = 'queued' "
										  "AND q.media_type = ANY ($2) "
										  "AND (q.requested_agent IS NULL OR q.requested_agent = $1) "
										  "AND iwd.skills_met(q.skills, $3) "
										  "ORDER BY q.priority DESC, q.business_value DESC, q.due_at ASC NULLS LAST, "
										  "q.created_at, q.id LIMIT $5",
										  5, pick_types), pick_args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not pick a task");
		}
		else if (SPI_execute_plan(KeepPlan(&pick_plan,
									  "SELECT c.id FROM unnest($4) AS s(k) "
									  "JOIN iwd.routing_keys r ON r.key = s.k CROSS JOIN LATERAL ("
									  "SELECT q.id, q.priority, q.business_value, q.due_at, q.created_at "
									  "FROM iwd.task q WHERE q.status = 'queued' "
									  "AND iwd.routing_key(q.skills) = s.k "
									  "AND q.media_type = ANY ($2) "
									  "AND (q.requested_agent IS NULL OR q.requested_agent = $1) "
									  "AND iwd.skills_met(q.skills, $3) "
									  "ORDER BY q.priority DESC, q.business_value DESC, q.due_at ASC NULLS LAST, "
									  "q.created_at, q.id LIMIT $5) c "
									  "ORDER BY c.priority DESC, c.business_value DESC, c.due_at ASC NULLS LAST, "
									  "c.created_at, c.id LIMIT $5",
									  5, pick_types), pick_args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not pick a task");
		if (SPI_processed == 0)
			return (Datum) 0;
		ncandidates = (int) SPI_processed;
		candidates = palloc(sizeof(int64) * ncandidates);
		for (int i = 0; i < ncandidates; i++)
			candidates[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		for (int i = 0; i < ncandidates && !claimed; i++)
		{
			/* another claimer is taking it: next */
			if (!DatumGetBool(DirectFunctionCall2(pg_try_advisory_xact_lock_int4,
												  Int32GetDatum(CLAIM_LOCK_CLASS),
												  Int32GetDatum((int32) (candidates[i] % PG_INT32_MAX)))))
				continue;
			claim_args[5] = Int64GetDatum(candidates[i]);
			/* the reservation and its event, in one statement */
			if (SPI_execute_plan(KeepPlan(&claim_plan,
										  "WITH u AS (UPDATE iwd.task t SET status = 'assigned', assigned_to = $1, "
										  "reserved_until = $3, accepted_at = NULL, updated_at = $4 "
										  "WHERE t.id = $6 AND t.status = 'queued' "
										  "RETURNING t.id, iwd.task_json(t) AS task), "
										  "e AS (INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, "
										  "status_after, detail) SELECT u.id, $4, 'reserved', $1, 'queued', 'assigned', "
										  "jsonb_build_object('reservedUntil', $3) FROM u) "
										  "SELECT u.id, u.task FROM u",
										  6, claim_types), claim_args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not claim a task");
			/* 0 rows: another claimer took it between our snapshot and our update */
			claimed = SPI_processed == 1;
		}
		if (claimed)
			break;
		/* every candidate was taken by others meanwhile: look again, further down */
		if (attempt == CLAIM_ATTEMPTS_MAX || ncandidates < window)
			return (Datum) 0;
	}
	task_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	task = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	task = SPI_datumTransfer(task, false, -1);

	NotifyTaskEvent(task_id, "reserved");
	StatsCount(STAT_CLAIMS, 1);
	*found = true;
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
	task = ClaimTask(agent, reserve_seconds, &found);
	SPI_finish();
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(task);
}

/*
 * The terminal copy written by completion: the columns of iwd.task_closed and, in the same order, their
 * values. A column added to iwd.task must be added to both (regress/sql/install.sql lists the columns
 * and fails until it is; iwd._save_task and the expiry step of iwd._tick_batch copy them too).
 */
#define COMPLETED_COLUMNS \
	"id, external_id, capture_point, media_type, department, process, category, queue, " \
	"customer_segment, priority, business_value, priority_override, business_value_override, " \
	"subject, description, skills, attributes, status, created_at, aging_from, " \
	"activation_at, due_at, expires_at, assigned_to, reserved_until, accepted_at, hold_reason, " \
	"error_reason, completed_at, updated_at, reprioritize_at, overdue_flagged, classified_by, customer_id, " \
	"product_type, product_subtype, requested_agent, requested_skill, source_created_at, " \
	"source_due_at, source_process_type, result_code"
#define COMPLETED_COPY \
	"d.id, d.external_id, d.capture_point, d.media_type, d.department, d.process, d.category, d.queue, " \
	"d.customer_segment, d.priority, d.business_value, d.priority_override, d.business_value_override, " \
	"d.subject, d.description, d.skills, d.attributes, 'completed', d.created_at, d.aging_from, " \
	"d.activation_at, d.due_at, d.expires_at, coalesce($2, d.assigned_to), NULL, d.accepted_at, NULL, " \
	"d.error_reason, $3, $3, d.reprioritize_at, d.overdue_flagged, d.classified_by, d.customer_id, " \
	"d.product_type, d.product_subtype, d.requested_agent, d.requested_skill, d.source_created_at, " \
	"d.source_due_at, d.source_process_type, d.result_code"

PG_FUNCTION_INFO_V1(iwd_complete_task);

/*
 * SQL: iwd.complete_task(id bigint, agent text DEFAULT NULL) RETURNS jsonb
 *
 * Complete an open task; agent, when given, must be the one it is assigned to.
 */
Datum
iwd_complete_task(PG_FUNCTION_ARGS)
{
	Oid			types[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	Datum		task;

	args[0] = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	args[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	args[2] = TimestampTzGetDatum(IwdNow());
	if (PG_ARGISNULL(0))
		nulls[0] = 'n';
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	SPI_connect();
	if (!PG_ARGISNULL(0) &&
		SPI_execute_plan(KeepPlan(&complete_plan,
								  "WITH d AS (DELETE FROM iwd.task t WHERE t.id = $1 "
								  "AND ($2 IS NULL OR t.assigned_to IS NULL OR t.assigned_to = $2) RETURNING t.*), "
								  "c AS (INSERT INTO iwd.task_closed (" COMPLETED_COLUMNS ") SELECT " COMPLETED_COPY
								  " FROM d RETURNING *), "
								  "e AS (INSERT INTO iwd.task_event (task_id, at, event, actor, status_before, "
								  "status_after) SELECT d.id, $3, 'completed', $2, d.status, 'completed' FROM d) "
								  "SELECT iwd.task_json(ROW(c.*)::iwd.task) FROM c",
								  3, types), args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not complete a task");
	if (!PG_ARGISNULL(0) && SPI_processed == 1)
		NotifyTaskEvent(DatumGetInt64(args[0]), "completed");
	else
	{
		/* not an open task this agent may complete: the general path says why */
		if (SPI_execute_plan(KeepPlan(&transition_plan,
									  "SELECT iwd._transition($1, 'complete', 'completed', $2, '{}')",
									  3, types), args, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not complete a task");
	}
	task = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	task = isnull ? (Datum) 0 : SPI_datumTransfer(task, false, -1);
	SPI_finish();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(task);
}
