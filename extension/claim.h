/*-------------------------------------------------------------------------
 * claim.h
 *	  Distribution (claim.c): the claim of the next best task, completion,
 *	  and the routing keys of the claim index.
 *-------------------------------------------------------------------------
 */
#ifndef IWD_CLAIM_H
#define IWD_CLAIM_H

#include "postgres.h"

#include "fmgr.h"

/* SQL: iwd.next_task(agent text, reserve_seconds int DEFAULT 30) RETURNS jsonb */
extern PGDLLEXPORT Datum iwd_next_task(PG_FUNCTION_ARGS);
/*
 * SQL: iwd.complete_task(id bigint, agent text DEFAULT NULL, actor text DEFAULT NULL,
 *                        next boolean DEFAULT false, reserve_seconds int DEFAULT 30) RETURNS jsonb
 */
extern PGDLLEXPORT Datum iwd_complete_task(PG_FUNCTION_ARGS);
/* SQL: iwd._claim_lock(id bigint) RETURNS boolean (inside a claim only) */
extern PGDLLEXPORT Datum iwd_claim_lock(PG_FUNCTION_ARGS);
/* SQL: iwd.skills_met(required jsonb, agent jsonb) RETURNS boolean */
extern PGDLLEXPORT Datum iwd_skills_met(PG_FUNCTION_ARGS);
/* SQL: iwd.routing_key(skills jsonb) RETURNS text */
extern PGDLLEXPORT Datum iwd_routing_key(PG_FUNCTION_ARGS);
/* SQL: trigger iwd._note_routing_key() (BEFORE INSERT OR UPDATE OF skills ON iwd.task, FOR EACH ROW) */
extern PGDLLEXPORT Datum iwd_note_routing_key(PG_FUNCTION_ARGS);

#endif							/* IWD_CLAIM_H */
