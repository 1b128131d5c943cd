/*
 * Provisioning (guarded by the cluster admin key): POST|PUT /iwd/v3/provisioning records a tenant,
 * prepares its database (CREATE EXTENSION iwd unless installed, default configuration) and stores its API keys as an
 * index and a salted hash (auth.c); DELETE /iwd/v3/provisioning/{ccid} removes services or the whole
 * tenant. The body is validated first (provisioning.c), the tenant database is prepared before anything
 * is recorded, and the registry is written in one transaction, so a failure leaves nothing half-written;
 * repeating a request is safe. Caches forget the tenant's old keys only once the change has committed,
 * so that no lookup made in between can cache what the change removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "provisioning.h"
#include "sidecar.h"

/* Run a control statement; false after answering 5xx. */
static bool control_ok(iwd_call_t *call, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return true;
    iwd_log(IWD_LOG_ERROR, "control database write failed", "%s", PQresultErrorMessage(res));
    iwd_respond_error(call, 503, "the tenant registry could not be written");
    return false;
}

/* Reach the tenant database, install the extension and the default configuration; false after 4xx/5xx. */
static bool prepare_database(iwd_call_t *call, const iwd_provisioning_t *p)
{
    iwd_tenant_t t;
    PGconn *db;
    PGresult *res;
    bool ok;

    if (iwd_tenant_settings(&t, p->ccid, p->host, p->port, p->database, p->user, p->password, p->ssl) != IWD_OK) {
        iwd_respond_error(call, 400, "the database settings (iwd.db) are too long together");
        return false;
    }
    db = iwd_pg_connect(t.conninfo);
    OPENSSL_cleanse(t.conninfo, sizeof(t.conninfo));
    if (PQstatus(db) != CONNECTION_OK) {
        iwd_respond_error(call, 502, "the tenant database is not reachable: %s", PQerrorMessage(db));
        PQfinish(db);
        return false;
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
            return false;
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
    PQfinish(db);
    return ok;
}

/* The indexes of a tenant's keys, its registry rows locked until the transaction ends. */
static PGresult *lock_keys(PGconn *control, const char *ccid)
{
    const char *v[1] = {ccid};

    return iwd_pg_exec(control, "control", "provision",
                       "SELECT key_index FROM iwd_control.api_key WHERE ccid = $1 FOR UPDATE", 1, v);
}

int iwd_on_provisioning_save(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    iwd_provisioning_t p;
    char port_s[16], err[256], *sealed = NULL;
    char index_t[65], salt_t[33], verifier_t[65], index_dm[65] = "", salt_dm[33] = "", verifier_dm[65] = "";
    PGconn *control;
    PGresult *res, *old_keys = NULL;
    int rc = 0;

    if (req->entity.len > iwd_conf.max_body_bytes)
        return iwd_respond_error(call, 413, "the body exceeds %zu bytes", iwd_conf.max_body_bytes);
    if (iwd_provisioning_parse(req->entity.base, req->entity.len, &p, err, sizeof(err)) != 0)
        return iwd_respond_error(call, 400, "%s", err);

    /* 1. the tenant database: reachable, extension installed, default configuration */
    if (!prepare_database(call, &p))
        goto done;

    /* 2. the registry, in one transaction */
    if ((control = iwd_pg_control(call->thread)) == NULL) {
        rc = iwd_respond_error(call, 503, "the tenant registry is not reachable");
        goto done;
    }
    iwd_key_seal(p.tenant_key, index_t, salt_t, verifier_t);
    if (p.dm_key != NULL)
        iwd_key_seal(p.dm_key, index_dm, salt_dm, verifier_dm);
    sealed = p.password != NULL ? iwd_encrypt_secret(p.password) : NULL;
    snprintf(port_s, sizeof(port_s), "%d", p.port);
    PQclear(PQexec(control, "BEGIN"));
    {
        const char *v[12] = {p.ccid, p.tenant_id, p.name, p.host, port_s, p.database, p.user, sealed,
                             p.ssl ? "true" : "false", p.iwd_url, p.email_url, p.gws};
        const char *k[7] = {p.ccid, index_t, salt_t, verifier_t, p.dm_key != NULL ? index_dm : NULL, salt_dm,
                            verifier_dm};
        const char *dup[3] = {p.host, port_s, p.database};
        const char *own[3] = {index_t, p.dm_key != NULL ? index_dm : index_t, p.ccid};

        res = iwd_pg_exec(control, "control", "provision",
                          "SELECT ccid FROM iwd_control.tenant"
                          " WHERE db_host = $1 AND db_port = $2::int AND db_name = $3",
                          3, dup);
        if (!control_ok(call, res))
            goto rollback;
        if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), p.ccid) != 0) {
            rc = iwd_respond_error(call, 409, "that database already serves tenant %s", PQgetvalue(res, 0, 0));
            goto rollback;
        }
        PQclear(res);
        res = iwd_pg_exec(control, "control", "provision",
                          "SELECT 1 FROM iwd_control.api_key WHERE key_index IN ($1, $2) AND ccid <> $3", 3, own);
        if (!control_ok(call, res))
            goto rollback;
        if (PQntuples(res) > 0) {
            rc = iwd_respond_error(call, 409, "an API key of this request belongs to another tenant");
            goto rollback;
        }
        PQclear(res);
        res = iwd_pg_exec(control, "control", "provision",
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
        if (!control_ok(call, res))
            goto rollback;
        PQclear(res);
        res = old_keys = lock_keys(control, p.ccid);
        if (!control_ok(call, res))
            goto rollback;
        res = iwd_pg_exec(control, "control", "provision", "DELETE FROM iwd_control.api_key WHERE ccid = $1", 1, k);
        if (!control_ok(call, res))
            goto rollback;
        PQclear(res);
        res = iwd_pg_exec(control, "control", "provision",
                          "INSERT INTO iwd_control.api_key (key_index, ccid, kind, salt, verifier)"
                          " SELECT $2, $1, 'tenant', $3, $4"
                          " UNION ALL SELECT $5::text, $1, 'iwddm', $6, $7 WHERE $5::text IS NOT NULL",
                          7, k);
        if (!control_ok(call, res))
            goto rollback;
        PQclear(res);
        res = PQexec(control, "COMMIT");
        if (!control_ok(call, res))
            goto rollback;
        PQclear(res);
    }
    iwd_auth_forget_keys(call->thread, old_keys);
    iwd_pg_drop_tenant(call->thread, p.ccid);
    iwd_log(IWD_LOG_INFO, "tenant provisioned", "%s", p.ccid);
    rc = iwd_respond_json(call, 200, "{\"created\":true}", strlen("{\"created\":true}"));
    goto done;

rollback:
    if (res != old_keys)
        PQclear(res);
    PQclear(PQexec(control, "ROLLBACK"));
done:
    PQclear(old_keys);
    free(sealed);
    iwd_provisioning_free(&p);
    return rc;
}

int iwd_on_provisioning_delete(iwd_call_t *call)
{
    const char *ccid = call->params[0];
    char *service = iwd_query_param(call->req, "service");
    char *delete_tenant = iwd_query_param(call->req, "deleteTenant");
    bool whole = delete_tenant != NULL && strcmp(delete_tenant, "true") == 0;
    PGconn *control;
    PGresult *res, *keys;
    const char *v[2] = {ccid, NULL};
    json_t *services;
    char *list = NULL;
    int status = 200;

    if (delete_tenant != NULL && strcmp(delete_tenant, "true") != 0 && strcmp(delete_tenant, "false") != 0)
        return iwd_respond_error(call, 400, "deleteTenant must be true or false");
    if (!whole && (service == NULL || *service == '\0'))
        return iwd_respond_error(call, 400, "give service=iWD,iWDEmail or deleteTenant=true");
    services = json_array();
    if (!whole) {
        char *save = NULL;
        for (char *s = strtok_r(service, ",", &save); s != NULL; s = strtok_r(NULL, ",", &save)) {
            if (strcmp(s, "iWD") != 0 && strcmp(s, "iWDEmail") != 0) {
                json_decref(services);
                return iwd_respond_error(call, 400, "unknown service \"%s\" (iWD, iWDEmail)", s);
            }
            json_array_append_new(services, json_string(s));
        }
    }
    list = json_dumps(services, JSON_COMPACT);
    json_decref(services);
    if ((control = iwd_pg_control(call->thread)) == NULL) {
        free(list);
        return iwd_respond_error(call, 503, "the tenant registry is not reachable");
    }
    PQclear(PQexec(control, "BEGIN"));
    keys = lock_keys(control, ccid);
    if (whole) {
        res = iwd_pg_exec(control, "control", "deprovision", "DELETE FROM iwd_control.tenant WHERE ccid = $1", 1, v);
    } else {
        v[1] = list;
        res = iwd_pg_exec(control, "control", "deprovision",
                          "UPDATE iwd_control.tenant SET services = ARRAY(SELECT s FROM unnest(services) s"
                          " WHERE s NOT IN (SELECT jsonb_array_elements_text($2::jsonb))),"
                          " updated_at = clock_timestamp()"
                          " WHERE ccid = $1",
                          2, v);
    }
    free(list);
    if (PQresultStatus(keys) != PGRES_TUPLES_OK || PQresultStatus(res) != PGRES_COMMAND_OK)
        status = 503;
    else if (strcmp(PQcmdTuples(res), "0") == 0)
        status = 404;
    PQclear(res);
    res = PQexec(control, status == 200 ? "COMMIT" : "ROLLBACK");
    if (status == 200 && PQresultStatus(res) != PGRES_COMMAND_OK)
        status = 503;
    PQclear(res);
    if (status == 200) {
        /* after the commit: a lookup made before it may have cached the keys again */
        iwd_auth_forget_keys(call->thread, keys);
        iwd_pg_drop_tenant(call->thread, ccid);
    }
    PQclear(keys);
    if (status == 503)
        return iwd_respond_error(call, 503, "the tenant registry could not be written");
    if (status == 404)
        return iwd_respond_error(call, 404, "unknown tenant %s", ccid);
    return iwd_respond_json(call, 200, "{\"deleted\":true}", strlen("{\"deleted\":true}"));
}
