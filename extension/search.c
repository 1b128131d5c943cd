/*-------------------------------------------------------------------------
 * search.c
 *	  The full-text search document of a task (iwd._document), bounded
 *	  whatever the task holds; sql/queue.sql searches it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "draft.h"
#include "search.h"

/* Append at most max bytes of t to buf, cut at a character boundary. */
static void
AppendPrefix(StringInfo buf, text *t, int max)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	appendBinaryStringInfo(buf, s, len <= max ? len : pg_mbcliplen(s, len, max));
}

/* The string and number values of a jsonb document, up to max bytes of them, separated by spaces. */
static text *
JsonbValuesPrefix(Jsonb *doc, int max)
{
	StringInfoData buf;
	JsonbIterator *it = JsonbIteratorInit(&doc->root);
	JsonbValue	v;
	JsonbIteratorToken tok;

	initStringInfo(&buf);
	while (buf.len < max && (tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		text	   *value;

		if (tok != WJB_VALUE && tok != WJB_ELEM)
			continue;
		if (v.type == jbvString)
			value = cstring_to_text_with_len(v.val.string.val, v.val.string.len);
		else if (v.type == jbvNumeric)
			value = cstring_to_text(DatumGetCString(DirectFunctionCall1(numeric_out,
																		 NumericGetDatum(v.val.numeric))));
		else
			continue;
		AppendPrefix(&buf, value, max - buf.len);
		appendStringInfoChar(&buf, ' ');
	}
	return cstring_to_text_with_len(buf.data, buf.len);
}

PG_FUNCTION_INFO_V1(iwd_document);

/*
 * SQL: iwd._document(subject text, description text, attributes jsonb) RETURNS tsvector
 *
 * The full-text search document of a task ('simple' configuration): the
 * first IWD_DOCUMENT_TEXT_MAX bytes of subject and description, and the
 * string and number values of attributes (those of a document larger than
 * IWD_ATTRIBUTES_MAX, which only plain SQL can store, up to that many bytes).
 * Its lexemes stay below a third of tsvector's 1 MB whatever the task holds,
 * so that search never makes a capture fail.
 */
Datum
iwd_document(PG_FUNCTION_ARGS)
{
	static Oid	simple = InvalidOid;
	static Datum filter = (Datum) 0;
	StringInfoData buf;
	Datum		document;

	if (!OidIsValid(simple))
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		filter = DirectFunctionCall1(jsonb_in, CStringGetDatum("[\"string\", \"numeric\"]"));
		MemoryContextSwitchTo(old);
		simple = get_ts_config_oid(list_make2(makeString("pg_catalog"), makeString("simple")), false);
	}
	initStringInfo(&buf);
	if (!PG_ARGISNULL(0))
		AppendPrefix(&buf, PG_GETARG_TEXT_PP(0), IWD_DOCUMENT_TEXT_MAX);
	appendStringInfoChar(&buf, ' ');
	if (!PG_ARGISNULL(1))
		AppendPrefix(&buf, PG_GETARG_TEXT_PP(1), IWD_DOCUMENT_TEXT_MAX - buf.len);
	document = DirectFunctionCall2(to_tsvector_byid, ObjectIdGetDatum(simple),
								   PointerGetDatum(cstring_to_text_with_len(buf.data, buf.len)));
	if (!PG_ARGISNULL(2))
	{
		Jsonb	   *attributes = PG_GETARG_JSONB_P(2);
		Datum		values;

		if (VARSIZE(attributes) - VARHDRSZ <= IWD_ATTRIBUTES_MAX)
			values = DirectFunctionCall3(jsonb_to_tsvector_byid, ObjectIdGetDatum(simple),
										 JsonbPGetDatum(attributes), filter);
		else
			values = DirectFunctionCall2(to_tsvector_byid, ObjectIdGetDatum(simple),
										 PointerGetDatum(JsonbValuesPrefix(attributes, IWD_ATTRIBUTES_MAX)));
		document = DirectFunctionCall2(tsvector_concat, document, values);
	}
	PG_RETURN_DATUM(document);
}
