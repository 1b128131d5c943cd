/*-------------------------------------------------------------------------
 * lifecycle.c
 *	  The task state machine: which operation is legal from which status, and
 *	  the status it leads to. Every lifecycle function checks here first.
 *	  Also the row of a task that closes, as the scheduler's expiry copies it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/typcache.h"

#include "iwd.h"
#include "lifecycle.h"

#define S_NEW (1 << 0)
#define S_QUEUED (1 << 1)
#define S_ASSIGNED (1 << 2)
#define S_HELD (1 << 3)
#define S_ERROR_HELD (1 << 4)
#define S_COMPLETED (1 << 5)
#define S_CANCELED (1 << 6)
#define S_REJECTED (1 << 7)
#define S_EXPIRED (1 << 8)
#define S_OPEN (S_NEW | S_QUEUED | S_ASSIGNED | S_HELD | S_ERROR_HELD)
#define S_TERMINAL (S_COMPLETED | S_CANCELED | S_REJECTED | S_EXPIRED)

static const char *const status_names[] = {
	"new", "queued", "assigned", "held", "errorHeld", "completed", "canceled", "rejected", "expired"
};

typedef struct Transition
{
	const char *op;
	int			from;
	const char *to;				/* NULL: the status does not change */
} Transition;

static const Transition transitions[] = {
	{"hold", S_NEW | S_QUEUED | S_ASSIGNED | S_ERROR_HELD, "held"},
	{"resume", S_HELD | S_ERROR_HELD, "queued"},
	{"activate", S_HELD, "queued"},
	{"cancel", S_OPEN, "canceled"},
	{"complete", S_OPEN, "completed"},
	{"reject", S_OPEN, "rejected"},
	{"restart", S_TERMINAL, "new"},
	{"reserve", S_QUEUED, "assigned"},
	{"accept", S_ASSIGNED, NULL},
	{"timeout", S_ASSIGNED, "queued"},
	{"expire", S_NEW | S_QUEUED | S_HELD | S_ERROR_HELD, "expired"},
	{"update", S_OPEN, NULL},
	{"reprioritize", S_OPEN, NULL},
};

/* Return the status bit of a status name (0 when unknown). */
static int
StatusBit(const char *status)
{
	for (int i = 0; i < (int) lengthof(status_names); i++)
		if (strcmp(status_names[i], status) == 0)
			return 1 << i;
	return 0;
}

/* List the statuses of a mask, for error details. */
static char *
StatusList(int mask)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < (int) lengthof(status_names); i++)
		if (mask & (1 << i))
			appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", status_names[i]);
	return buf.data;
}

PG_FUNCTION_INFO_V1(iwd_check_transition);

/*
 * SQL: iwd._check_transition(id bigint, status text, op text) RETURNS text
 *
 * The status operation op leads to from status, or SQLSTATE 55000 naming the
 * current and requested state when it is not allowed.
 */
Datum
iwd_check_transition(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	char	   *status = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *op = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int			bit = StatusBit(status);

	for (int i = 0; i < (int) lengthof(transitions); i++)
	{
		const Transition *t = &transitions[i];

		if (strcmp(t->op, op) != 0)
			continue;
		if ((t->from & bit) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot %s task " INT64_FORMAT ": it is %s", op, id, status),
					 t->to ? errdetail("A task goes to %s only from: %s.", t->to, StatusList(t->from))
					 : errdetail("Allowed from: %s.", StatusList(t->from))));
		PG_RETURN_TEXT_P(cstring_to_text(t->to ? t->to : status));
	}
	elog(ERROR, "unknown task operation \"%s\"", op);
}

PG_FUNCTION_INFO_V1(iwd_is_terminal);

/* SQL: iwd.is_terminal(status text): completed, canceled, rejected or expired. */
Datum
iwd_is_terminal(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL((StatusBit(text_to_cstring(PG_GETARG_TEXT_PP(0))) & S_TERMINAL) != 0);
}

/* The columns a closing task's row changes, set to the status and to the time. */
static const char *const closed_columns[] = {"status", "completed_at", "updated_at"};

PG_FUNCTION_INFO_V1(iwd_closed_row);

/*
 * SQL: iwd._closed_row(t iwd.task, status text, at timestamptz) RETURNS iwd.task
 *
 * The task's row as it is stored when it closes with this status at "at":
 * status, completed_at and updated_at set, every other column as it was.
 * Columns are found by name, so the row follows iwd.task's declaration.
 */
Datum
iwd_closed_row(PG_FUNCTION_ARGS)
{
	HeapTupleHeader rec = PG_GETARG_HEAPTUPLEHEADER(0);
	TupleDesc	tupdesc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(rec), HeapTupleHeaderGetTypMod(rec));
	HeapTupleData tuple;
	int			columns[lengthof(closed_columns)];
	Datum		values[lengthof(closed_columns)];
	bool		nulls[lengthof(closed_columns)] = {false};
	HeapTuple	closed;

	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = rec;
	for (int i = 0; i < (int) lengthof(closed_columns); i++)
	{
		columns[i] = SPI_fnumber(tupdesc, closed_columns[i]);
		if (columns[i] <= 0)
			elog(ERROR, "iwd._closed_row: the row has no column \"%s\"", closed_columns[i]);
		values[i] = i == 0 ? PG_GETARG_DATUM(1) : PG_GETARG_DATUM(2);
	}
	closed = heap_modify_tuple_by_cols(&tuple, tupdesc, lengthof(closed_columns), columns, values, nulls);
	ReleaseTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(closed));
}
