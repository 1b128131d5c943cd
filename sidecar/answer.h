/*
 * iwd-sidecar answers: a request answered from the result of its SQL call, or with an error that says when
 * to retry. The one place that maps a SQLSTATE to an HTTP status.
 */
#ifndef IWD_ANSWER_H
#define IWD_ANSWER_H

#include <libpq-fe.h>

#include "http.h"

/*
 * Answer from an SQL call's result: its one jsonb value with success_status; a NULL (or no row) with
 * null_status (204 without a body, else "not found"); an error with the status of its SQLSTATE and its
 * message and detail (a 500 says only "internal error": the log has the rest).
 */
void iwd_answer_result(iwd_call_t *call, PGresult *res, int success_status, int null_status);

/* Answer an error; a 503 tells the client when to retry (Retry-After). */
void iwd_answer_error(iwd_call_t *call, int status, const char *message);

/* The HTTP status of a failed SQL call, from its SQLSTATE (503 when there is none: the connection broke). */
int iwd_answer_status(const PGresult *res);

#endif
