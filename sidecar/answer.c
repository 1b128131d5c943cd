/* iwd-sidecar answers to SQL calls (answer.h). */
#include <stdio.h>
#include <string.h>

#include "answer.h"
#include "log.h"

#define RETRY_AFTER_S 1 /* what a 503 tells the client to wait */

int iwd_answer_status(const PGresult *res)
{
    const char *code = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (code == NULL)
        return 503;
    if (strcmp(code, "P0002") == 0)
        return 404;
    if (strcmp(code, "55000") == 0 || strncmp(code, "23", 2) == 0 || strcmp(code, "40001") == 0 ||
        strcmp(code, "40P01") == 0)
        return 409;
    if (strcmp(code, "42501") == 0)
        return 403;
    /* 54: a program limit (an index row or a tsvector too large for a value the client sent) */
    if (strncmp(code, "22", 2) == 0 || strcmp(code, "42P02") == 0 || strncmp(code, "54", 2) == 0)
        return 400;
    if (strcmp(code, "57014") == 0) /* canceled: IWD_STATEMENT_TIMEOUT_MS */
        return 504;
    /* 25006: the database is read-only for now (a standby being promoted, a tenant being moved) */
    if (strncmp(code, "08", 2) == 0 || strncmp(code, "57P", 3) == 0 || strncmp(code, "53", 2) == 0 ||
        strcmp(code, "55P03") == 0 || strcmp(code, "25006") == 0) /* 55P03: IWD_LOCK_TIMEOUT_MS */
        return 503;
    return 500;
}

/* Tell the client of a 503 when to try again. */
static void retry_later(iwd_call_t *call)
{
    char *seconds = h2o_mem_alloc_pool(&call->req->pool, 16);
    int n = snprintf(seconds, 16, "%d", RETRY_AFTER_S);

    h2o_add_header(&call->req->pool, &call->req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, seconds, n);
}

void iwd_answer_error(iwd_call_t *call, int status, const char *message)
{
    if (status == 503)
        retry_later(call);
    iwd_respond_error(call, status, "%s", message);
}

void iwd_answer_result(iwd_call_t *call, PGresult *res, int success_status, int null_status)
{
    int status;
    const char *msg, *detail;

    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if ((PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) && null_status == 204)
            iwd_respond_json(call, 204, "", 0);
        else if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
            iwd_respond_error(call, null_status, "not found");
        else
            iwd_respond_json(call, success_status, PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0));
        return;
    }
    status = iwd_answer_status(res);
    msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    if (status == 503)
        retry_later(call);
    if (status >= 500)
        iwd_log(IWD_LOG_ERROR, "database call failed", "%s: %s", call->tenant.ccid,
                res != NULL ? PQresultErrorMessage(res) : "the connection broke");
    if (status == 500)
        iwd_respond_error(call, 500, "internal error");
    else if (msg == NULL)
        iwd_respond_error(call, status, "the tenant database is not reachable");
    else if (detail != NULL)
        iwd_respond_error(call, status, "%s: %s", msg, detail);
    else
        iwd_respond_error(call, status, "%s", msg);
}
