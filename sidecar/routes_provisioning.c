/*
 * Provisioning (guarded by the cluster admin key): POST|PUT /iwd/v3/provisioning records a tenant,
 * prepares its database (CREATE EXTENSION iwd unless installed, default configuration) and stores its API
 * keys as an index and a salted hash (secret.c); DELETE /iwd/v3/provisioning/{ccid} removes services or the
 * whole tenant. The body is validated first (provisioning.c), the tenant database is prepared before anything
 * is recorded, and the registry is written in one transaction, so a failure leaves nothing half-written;
 * repeating a request is safe. Caches forget the tenant's old keys only once the change has committed,
 * so that no lookup made in between can cache what the change removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "config.h"
#include "iwd.h"
#include "log.h"
#include "pg.h"
#include "provisioning.h"
#include "registry.h"
#include "router.h"
#include "routes.h"
#include "secret.h"
#include "tenant.h"
#include "tenant_work.h"

#define UNAUTHORIZED "provisioning needs the cluster admin key in x-api-key"

/* The answer when the registry cannot be written: the control database's error logged, 503. */
static int registry_failed(iwd_call_t *call, PGresult *res)
{
    iwd_log(IWD_LOG_ERROR, "control database write failed", "%s", PQresultErrorMessage(res));
    PQclear(res);
    iwd_respond_error(call, 503, "the tenant registry could not be written");
    return IWD_ERR;
}

/* Run a statement of the registry's transaction; NULL after answering 503 when it fails. */
static PGresult *registry_exec(iwd_call_t *call, PGconn *control, const char *sql, int nparams,
                               const char *const *values)
{
    PGresult *res = iwd_pg_exec(control, "control", "provision", sql, nparams, values);
    ExecStatusType st = PQresultStatus(res);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    registry_failed(call, res);
    return NULL;
}

/* Run a statement whose result is not needed; IWD_ERR after answering 503 when it fails. */
static int registry_do(iwd_call_t *call, PGconn *control, const char *sql, int nparams, const char *const *values)
{
    PGresult *res = registry_exec(call, control, sql, nparams, values);

    if (res == NULL)
        return IWD_ERR;
    PQclear(res);
    return IWD_OK;
}

/* Reach the tenant database, install the extension and the default configuration; IWD_ERR after 4xx/5xx. */
static int prepare_database(iwd_call_t *call, const iwd_provisioning_t *p)
{
    iwd_tenant_t t;
    PGconn *db;
    PGresult *res;
    bool ok;

    if (iwd_tenant_settings(&t, p->ccid, p->host, p->port, p->database, p->user, p->password, p->ssl) != IWD_OK) {
        iwd_respond_error(call, 400, "the database settings (iwd.db) are too long together");
        return IWD_ERR;
    }
    db = iwd_pg_connect(t.conninfo);
    OPENSSL_cleanse(t.conninfo, sizeof(t.conninfo));
    if (PQstatus(db) != CONNECTION_OK) {
        iwd_respond_error(call, 502, "the tenant database is not reachable: %s", PQerrorMessage(db));
        PQfinish(db);
        return IWD_ERR;
    }
    /* installed already (by a superuser): the tenant's login, a member of iwd_app_<database>, needs no more */
    res = PQexec(db, "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'iwd'");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 0) {
        const char *su = PQparameterStatus(db, "is_superuser");

        PQclear(res);
        if (su == NULL || strcmp(su, "on") != 0) {
            iwd_respond_error(call, 409,
                              "the tenant database %s lacks the extension iwd and user %s may not install it:"
                              " a superuser runs CREATE EXTENSION iwd in it first",
                              p->database, p->user);
            PQfinish(db);
            return IWD_ERR;
        }
        res = PQexec(db, "CREATE EXTENSION IF NOT EXISTS iwd");
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            PQclear(res);
            res = PQexec(db, "SELECT iwd.seed_defaults()");
        }
    } else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        PQclear(res);
        res = PQexec(db, "SELECT iwd.seed_defaults()");
    }
    ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        iwd_respond_error(call, 502, "the tenant database could not be prepared: %s",
                          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) != NULL
                              ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                              : PQerrorMessage(db));
    PQclear(res);
    if (ok && p->gws != NULL) { /* tenant.gws: the tenant's router (its secrets sealed already) */
        const char *values[1] = {p->gws}, *state, *message;
        res = PQexecParams(db, "SELECT iwd.upsert_router($1::jsonb)", 1, NULL, values, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            iwd_respond_error(call, state != NULL && strncmp(state, "22", 2) == 0 ? 400 : 502, "tenant.gws: %s",
                              message != NULL ? message : PQerrorMessage(db));
            ok = false;
        }
        PQclear(res);
    }
    PQfinish(db);
    return ok ? IWD_OK : IWD_ERR;
}

/* The indexes of a tenant's keys, its registry rows locked until the transaction ends. */
static PGresult *lock_keys(PGconn *control, const char *ccid)
{
    const char *v[1] = {ccid};

    return iwd_pg_exec(control, "control", "provision",
                       "SELECT key_index FROM iwd_control.api_key WHERE ccid = $1 FOR UPDATE", 1, v);
}

/* What the registry stores of a request besides its text: the keys' indexes and salted hashes, the password sealed. */
typedef struct sealed_request {
    char port[16];
    char *password; /* NULL when none */
    char index_t[65], salt_t[33], verifier_t[65];
    char index_dm[65], salt_dm[33], verifier_dm[65]; /* empty when there is no IWD_APIKEY_IWDDM */
} sealed_request_t;

static void seal_request(const iwd_provisioning_t *p, sealed_request_t *s)
{
    *s = (sealed_request_t){.password = p->password != NULL ? iwd_secret_seal(p->password) : NULL};
    snprintf(s->port, sizeof(s->port), "%d", p->port);
    iwd_secret_key_seal(p->tenant_key, s->index_t, s->salt_t, s->verifier_t);
    if (p->dm_key != NULL)
        iwd_secret_key_seal(p->dm_key, s->index_dm, s->salt_dm, s->verifier_dm);
}

/* The request takes nothing of another tenant: its database, its keys; IWD_ERR after answering 409 or 503. */
static int check_conflicts(iwd_call_t *call, PGconn *control, const iwd_provisioning_t *p, const sealed_request_t *s)
{
    const char *database[3] = {p->host, s->port, p->database};
    const char *keys[3] = {s->index_t, p->dm_key != NULL ? s->index_dm : s->index_t, p->ccid};
    PGresult *res;
    int rc = IWD_OK;

    res = registry_exec(call, control,
                        "SELECT ccid FROM iwd_control.tenant WHERE db_host = $1 AND db_port = $2::int AND db_name = $3",
                        3, database);
    if (res == NULL)
        return IWD_ERR;
    if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), p->ccid) != 0) {
        iwd_respond_error(call, 409, "that database already serves tenant %s", PQgetvalue(res, 0, 0));
        rc = IWD_ERR;
    }
    PQclear(res);
    if (rc != IWD_OK)
        return rc;
    res = registry_exec(call, control,
                        "SELECT 1 FROM iwd_control.api_key WHERE key_index IN ($1, $2) AND ccid <> $3", 3, keys);
    if (res == NULL)
        return IWD_ERR;
    if (PQntuples(res) > 0) {
        iwd_respond_error(call, 409, "an API key of this request belongs to another tenant");
        rc = IWD_ERR;
    }
    PQclear(res);
    return rc;
}

/* Record the tenant (a new row, or its row updated); IWD_ERR after answering 503. */
static int upsert_tenant(iwd_call_t *call, PGconn *control, const iwd_provisioning_t *p, const sealed_request_t *s)
{
    const char *v[12] = {p->ccid, p->tenant_id, p->name,     p->host,      s->port,   p->database,
                         p->user, s->password,  p->ssl ? "true" : "false", p->iwd_url, p->email_url, p->gws};

    return registry_do(call, control,
                       "INSERT INTO iwd_control.tenant (ccid, tenant_id, name, db_host, db_port, db_name, db_user,"
                       " db_password, db_ssl, iwd_url, email_url, gws, services)"
                       " VALUES ($1, $2, $3, $4, $5::int, $6, $7, $8, $9::boolean, $10, $11::text, $12::jsonb,"
                       " CASE WHEN $11::text IS NULL THEN '{iWD}'::text[] ELSE '{iWD,iWDEmail}' END)"
                       " ON CONFLICT (ccid) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name,"
                       " db_host = EXCLUDED.db_host, db_port = EXCLUDED.db_port, db_name = EXCLUDED.db_name,"
                       " db_user = EXCLUDED.db_user, db_password = EXCLUDED.db_password, db_ssl = EXCLUDED.db_ssl,"
                       " iwd_url = EXCLUDED.iwd_url, email_url = EXCLUDED.email_url, gws = EXCLUDED.gws,"
                       " services = EXCLUDED.services, updated_at = clock_timestamp()",
                       12, v);
}

/*
 * Replace the tenant's keys with the request's; *old_keys gets the indexes of the keys replaced, for the
 * caches to forget once the transaction has committed. IWD_ERR after answering 503.
 */
static int replace_keys(iwd_call_t *call, PGconn *control, const iwd_provisioning_t *p, const sealed_request_t *s,
                        PGresult **old_keys)
{
    const char *k[7] = {p->ccid, s->index_t, s->salt_t, s->verifier_t, p->dm_key != NULL ? s->index_dm : NULL,
                        s->salt_dm, s->verifier_dm};
    PGresult *res = lock_keys(control, p->ccid);

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return registry_failed(call, res);
    *old_keys = res;
    if (registry_do(call, control, "DELETE FROM iwd_control.api_key WHERE ccid = $1", 1, k) != IWD_OK)
        return IWD_ERR;
    return registry_do(call, control,
                       "INSERT INTO iwd_control.api_key (key_index, ccid, kind, salt, verifier)"
                       " SELECT $2, $1, 'tenant', $3, $4"
                       " UNION ALL SELECT $5::text, $1, 'iwddm', $6, $7 WHERE $5::text IS NOT NULL",
                       7, k);
}

/*
 * Write the tenant into the registry in one transaction: nothing of another tenant taken, the tenant's
 * row, its keys. IWD_ERR after answering (rolled back).
 */
static int write_registry(iwd_call_t *call, PGconn *control, const iwd_provisioning_t *p, const sealed_request_t *s,
                          PGresult **old_keys)
{
    PGresult *res;

    PQclear(PQexec(control, "BEGIN"));
    if (check_conflicts(call, control, p, s) != IWD_OK || upsert_tenant(call, control, p, s) != IWD_OK ||
        replace_keys(call, control, p, s, old_keys) != IWD_OK) {
        PQclear(PQexec(control, "ROLLBACK"));
        return IWD_ERR;
    }
    res = PQexec(control, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        registry_failed(call, res);
        PQclear(PQexec(control, "ROLLBACK"));
        return IWD_ERR;
    }
    PQclear(res);
    return IWD_OK;
}

/* POST|PUT /provisioning: the body validated, the tenant database prepared, then the registry written. */
static int on_provisioning_save(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    iwd_provisioning_t p;
    sealed_request_t sealed;
    PGconn *control;
    PGresult *old_keys = NULL;
    char err[256];

    if (req->entity.len > iwd_conf.max_body_bytes)
        return iwd_respond_error(call, 413, "the body exceeds %zu bytes", iwd_conf.max_body_bytes);
    if (iwd_provisioning_parse(req->entity.base, req->entity.len, &p, err, sizeof(err)) != IWD_OK)
        return iwd_respond_error(call, 400, "%s", err);
    if (p.gws != NULL || iwd_conf.gws_url != NULL) {
        /* tenant.gws over IWD_GWS_*: its secrets sealed before the tenant database or the registry hold them */
        char *sealed_gws = iwd_router_seal_config(p.gws, p.gws != NULL ? strlen(p.gws) : 0, true, err, sizeof(err));
        if (sealed_gws == NULL && err[0] != '\0') {
            iwd_provisioning_free(&p);
            return iwd_respond_error(call, 400, "tenant.gws: %s", err);
        }
        free(p.gws);
        p.gws = sealed_gws;
    }
    if (prepare_database(call, &p) != IWD_OK) {
        iwd_provisioning_free(&p);
        return IWD_OK;
    }
    if ((control = iwd_pg_control(call->thread)) == NULL) {
        iwd_provisioning_free(&p);
        return iwd_respond_error(call, 503, "the tenant registry is not reachable");
    }
    seal_request(&p, &sealed);
    if (write_registry(call, control, &p, &sealed, &old_keys) == IWD_OK) {
        /* after the commit: a lookup made before it may have cached the keys again */
        iwd_registry_forget_keys(call->thread, old_keys);
        iwd_pg_drop_tenant(call->thread, p.ccid);
        iwd_log(IWD_LOG_INFO, "tenant provisioned", "%s", p.ccid);
        if (p.gws != NULL) {
            iwd_tenant_t t;
            if (iwd_tenant_settings(&t, p.ccid, p.host, p.port, p.database, p.user, p.password, p.ssl) == IWD_OK)
                iwd_work_wake(IWD_WORK_ROUTER, &t);
            OPENSSL_cleanse(&t, sizeof(t));
        }
        iwd_respond_json(call, 200, "{\"created\":true}", strlen("{\"created\":true}"));
    }
    PQclear(old_keys);
    free(sealed.password);
    iwd_provisioning_free(&p);
    return IWD_OK;
}

/*
 * The services a DELETE removes, as a JSON array text (malloc'd; "[]" with *whole set when the whole
 * tenant goes); NULL after answering 400.
 */
static char *services_to_remove(iwd_call_t *call, bool *whole)
{
    char *service = iwd_query_param(call->req, "service");
    char *delete_tenant = iwd_query_param(call->req, "deleteTenant");
    json_t *services;
    char *list;

    *whole = delete_tenant != NULL && strcmp(delete_tenant, "true") == 0;
    if (delete_tenant != NULL && strcmp(delete_tenant, "true") != 0 && strcmp(delete_tenant, "false") != 0) {
        iwd_respond_error(call, 400, "deleteTenant must be true or false");
        return NULL;
    }
    if (!*whole && (service == NULL || *service == '\0')) {
        iwd_respond_error(call, 400, "give service=iWD,iWDEmail or deleteTenant=true");
        return NULL;
    }
    services = json_array();
    if (!*whole) {
        char *save = NULL;
        for (char *s = strtok_r(service, ",", &save); s != NULL; s = strtok_r(NULL, ",", &save)) {
            if (strcmp(s, "iWD") != 0 && strcmp(s, "iWDEmail") != 0) {
                json_decref(services);
                iwd_respond_error(call, 400, "unknown service \"%s\" (iWD, iWDEmail)", s);
                return NULL;
            }
            json_array_append_new(services, json_string(s));
        }
    }
    list = json_dumps(services, JSON_COMPACT);
    json_decref(services);
    return list;
}

/*
 * Remove the tenant (whole) or the services of list from the registry, in one transaction; *keys gets the
 * indexes of the tenant's keys, for the caches to forget once it has committed. The status to answer:
 * 200, 404 (no such tenant) or 503.
 */
static int remove_from_registry(PGconn *control, const char *ccid, bool whole, const char *list, PGresult **keys)
{
    const char *v[2] = {ccid, list};
    PGresult *res;
    int status = 200;

    PQclear(PQexec(control, "BEGIN"));
    *keys = lock_keys(control, ccid);
    if (whole)
        res = iwd_pg_exec(control, "control", "deprovision", "DELETE FROM iwd_control.tenant WHERE ccid = $1", 1, v);
    else
        res = iwd_pg_exec(control, "control", "deprovision",
                          "UPDATE iwd_control.tenant SET services = ARRAY(SELECT s FROM unnest(services) s"
                          " WHERE s NOT IN (SELECT jsonb_array_elements_text($2::jsonb))),"
                          " updated_at = clock_timestamp()"
                          " WHERE ccid = $1",
                          2, v);
    if (PQresultStatus(*keys) != PGRES_TUPLES_OK || PQresultStatus(res) != PGRES_COMMAND_OK)
        status = 503;
    else if (strcmp(PQcmdTuples(res), "0") == 0)
        status = 404;
    PQclear(res);
    res = PQexec(control, status == 200 ? "COMMIT" : "ROLLBACK");
    if (status == 200 && PQresultStatus(res) != PGRES_COMMAND_OK)
        status = 503;
    PQclear(res);
    return status;
}

/* DELETE /provisioning/{ccid}?service=iWD,iWDEmail or ?deleteTenant=true. */
static int on_provisioning_delete(iwd_call_t *call)
{
    const char *ccid = call->params[0];
    PGconn *control;
    PGresult *keys;
    char *list;
    bool whole;
    int status;

    if ((list = services_to_remove(call, &whole)) == NULL)
        return IWD_OK;
    if ((control = iwd_pg_control(call->thread)) == NULL) {
        free(list);
        return iwd_respond_error(call, 503, "the tenant registry is not reachable");
    }
    status = remove_from_registry(control, ccid, whole, list, &keys);
    free(list);
    if (status == 200) {
        /* after the commit: a lookup made before it may have cached the keys again */
        iwd_registry_forget_keys(call->thread, keys);
        iwd_pg_drop_tenant(call->thread, ccid);
    }
    PQclear(keys);
    if (status == 503)
        return iwd_respond_error(call, 503, "the tenant registry could not be written");
    if (status == 404)
        return iwd_respond_error(call, 404, "unknown tenant %s", ccid);
    return iwd_respond_json(call, 200, "{\"deleted\":true}", strlen("{\"deleted\":true}"));
}

static const iwd_route_t routes[] = {
    {.method = "POST", .pattern = "/provisioning", .auth = IWD_AUTH_ADMIN, .unauthorized = UNAUTHORIZED,
     .handler = on_provisioning_save},
    {.method = "PUT", .pattern = "/provisioning", .auth = IWD_AUTH_ADMIN, .unauthorized = UNAUTHORIZED,
     .handler = on_provisioning_save},
    {.method = "DELETE", .pattern = "/provisioning/{ccid}", .auth = IWD_AUTH_ADMIN, .unauthorized = UNAUTHORIZED,
     .handler = on_provisioning_delete},
};

const iwd_route_table_t iwd_routes_provisioning = IWD_ROUTE_TABLE(routes);
