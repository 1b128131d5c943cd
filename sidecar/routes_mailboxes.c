/*
 * iwd-sidecar routes of email: mailboxes (PUT, GET, DELETE /mailboxes/{name}, GET /mailboxes), whose
 * passwords are sealed here (secret.c) before the body reaches the database, and a task's replies
 * (POST /tasks/{id}/reply, GET /tasks/{id}/replies). Each is one call of the extension's SQL API
 * (sql/email.sql); writing a mailbox or asking a reply wakes the poller (tenant_work.h), which does the IMAP
 * and SMTP work on its own thread (email.c).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "pg.h"
#include "routes.h"
#include "secret.h"
#include "tenant_work.h"

#define PASSWORD_BYTES_MAX 1024

/* A change that gives the poller work: it looks at the tenant at once. */
static void wake_poller(iwd_call_t *call)
{
    iwd_work_wake(IWD_WORK_EMAIL, &call->tenant);
}

/*
 * Take the password out of a server's settings (member of the body) and seal it: *sealed is NULL when
 * there is none (malloc'd otherwise); IWD_ERR when it is not a string of 1 to PASSWORD_BYTES_MAX bytes (the
 * request answered).
 */
static int take_password(iwd_call_t *call, json_t *body, const char *member, char **sealed)
{
    json_t *server = json_object_get(body, member), *password;

    *sealed = NULL;
    if (!json_is_object(server) || (password = json_object_get(server, "password")) == NULL)
        return IWD_OK;
    if (!json_is_string(password) || json_string_length(password) == 0 ||
        json_string_length(password) > PASSWORD_BYTES_MAX ||
        strlen(json_string_value(password)) != json_string_length(password)) {
        iwd_respond_error(call, 400, "mailbox field \"%s.password\" must be a string of 1 to %d bytes", member,
                          PASSWORD_BYTES_MAX);
        return IWD_ERR;
    }
    *sealed = iwd_secret_seal(json_string_value(password));
    json_object_del(server, "password");
    return IWD_OK;
}

/* PUT /mailboxes/{name}: the body without its passwords, the passwords sealed. */
static int on_mailbox_put(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    json_error_t err;
    json_t *body;
    char *imap_sealed = NULL, *smtp_sealed = NULL, *text;
    const char *values[4];
    int rc;

    if (req->entity.base == NULL || req->entity.len == 0)
        return iwd_respond_error(call, 400, "a JSON body is required");
    if (req->entity.len > iwd_conf.max_body_bytes)
        return iwd_respond_error(call, 413, "the body exceeds %zu bytes", iwd_conf.max_body_bytes);
    if (memchr(req->entity.base, '\0', req->entity.len) != NULL)
        return iwd_respond_error(call, 400, "malformed JSON: the body holds a NUL byte");
    if ((body = json_loadb(req->entity.base, req->entity.len, 0, &err)) == NULL)
        return iwd_respond_error(call, 400, "malformed JSON: %s (line %d, column %d)", err.text, err.line,
                                 err.column);
    if (!json_is_object(body)) {
        json_decref(body);
        return iwd_respond_error(call, 400, "a mailbox is a JSON object");
    }
    if (take_password(call, body, "imap", &imap_sealed) != IWD_OK ||
        take_password(call, body, "smtp", &smtp_sealed) != IWD_OK) {
        free(imap_sealed);
        json_decref(body);
        return IWD_OK;
    }
    json_object_set_new(body, "name", json_string(call->params[0]));
    text = json_dumps(body, JSON_COMPACT);
    values[0] = text;
    values[1] = imap_sealed;
    values[2] = smtp_sealed;
    wake_poller(call);
    rc = iwd_pg_call(call, "SELECT iwd.upsert_mailbox($1::jsonb, $2, $3)", 3, values, 200, 500);
    free(text);
    free(imap_sealed);
    free(smtp_sealed);
    json_decref(body);
    return rc;
}

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/mailboxes", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_mailboxes()"},
    {.method = "GET", .pattern = "/mailboxes/{name}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_mailbox($1)"},
    {.method = "PUT", .pattern = "/mailboxes/{name}", .auth = IWD_AUTH_WRITE, .handler = on_mailbox_put},
    {.method = "DELETE", .pattern = "/mailboxes/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT CASE WHEN iwd.delete_mailbox($1) THEN jsonb_build_object('name', $1::text, 'deleted', true) END"},
    {.method = "POST", .pattern = "/tasks/{id}/reply", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.reply_task($1::bigint, $2::jsonb, $3)", .body_arg = true, .body_required = true,
     .actor_arg = true, .success = 202, .before = wake_poller},
    {.method = "GET", .pattern = "/tasks/{id}/replies", .auth = IWD_AUTH_READ,
     .sql = "SELECT iwd.task_replies($1::bigint)"},
};

const iwd_route_table_t iwd_routes_mailboxes = IWD_ROUTE_TABLE(routes);
