/*-------------------------------------------------------------------------
 * search.h
 *	  The full-text search document of a task (search.c).
 *-------------------------------------------------------------------------
 */
#ifndef IWD_SEARCH_H
#define IWD_SEARCH_H

#include "postgres.h"

#include "fmgr.h"

/* SQL: iwd._document(subject text, description text, attributes jsonb) RETURNS tsvector */
extern PGDLLEXPORT Datum iwd_document(PG_FUNCTION_ARGS);

#endif							/* IWD_SEARCH_H */
