/*
 * Provisioning (guarded by the cluster admin key): POST|PUT /iwd/v3/provisioning records a tenant,
 * prepares its database (CREATE EXTENSION iwd, default configuration) and stores its API keys hashed;
 * DELETE /iwd/v3/provisioning/{ccid} removes services or the whole tenant. The tenant database is
 * prepared before anything is recorded, and the registry is written in one transaction, so a failure
 * leaves nothing half-written; repeating a request is safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int iwd_on_provisioning_save(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    iwd_provisioning_t p;
    const char *ccid, *host, *database, *user, *tenant_key, *password, *dm_key;
    char port_s[16], conninfo[2048] = "", hash_t[65], hash_dm[65], *enc = NULL, err[256];
    bool ssl;
    long port;
    PGconn *tenant_db, *control;
    PGresult *res;
    int rc = 0;

    if (req->entity.len > iwd_conf.max_body_bytes)
        return iwd_respond_error(call, 413, "the body exceeds %zu bytes", iwd_conf.max_body_bytes);
    if (iwd_provisioning_parse(req->entity.base, req->entity.len, &p, err, sizeof(err)) != 0)
        return iwd_respond_error(call, 400, "%s", err);
    ccid = p.ccid;
    host = p.host;
    database = p.database;
    user = p.user;
    tenant_key = p.tenant_key;
    password = p.password;
    dm_key = p.dm_key;
    ssl = p.ssl;
    port = p.port;

    /* 1. the tenant database: reachable, extension installed, default configuration */
    {
        json_t *entry = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:b}", "kind", "tenant", "ccid", ccid, "host", host,
                                  "port", (int)port, "db", database, "user", user, "pw", "", "ssl", ssl);
        iwd_tenant_t t;
        char *text = json_dumps(entry, JSON_COMPACT);
        iwd_tenant_from_entry(&t, text);
        free(text);
        json_decref(entry);
        snprintf(conninfo, sizeof(conninfo), "%s", t.conninfo);
        if (password != NULL && *password != '\0') {
            /* the entry carries the password encrypted; here we need it in clear, once */
            char *quoted = malloc(2 * strlen(password) + 3), *o = quoted;
            *o++ = '\'';
            for (const char *c = password; *c; c++) {
                if (*c == '\'' || *c == '\\')
                    *o++ = '\\';
                *o++ = *c;
            }
            *o++ = '\'';
            *o = '\0';
            strncat(conninfo, " password=", sizeof(conninfo) - strlen(conninfo) - 1);
            strncat(conninfo, quoted, sizeof(conninfo) - strlen(conninfo) - 1);
            free(quoted);
        }
    }
    tenant_db = iwd_pg_connect(conninfo);
    if (PQstatus(tenant_db) != CONNECTION_OK) {
        rc = iwd_respond_error(call, 502, "the tenant database is not reachable: %s", PQerrorMessage(tenant_db));
        PQfinish(tenant_db);
        goto done;
    }
    res = PQexec(tenant_db, "CREATE EXTENSION IF NOT EXISTS iwd");
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        PQclear(res);
        res = PQexec(tenant_db, "SELECT iwd.seed_defaults()");
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = iwd_respond_error(call, 502, "the tenant database could not be prepared: %s",
                               PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                                                                                 : PQerrorMessage(tenant_db));
        PQclear(res);
        PQfinish(tenant_db);
        goto done;
    }
    PQclear(res);
    PQfinish(tenant_db);

    /* 2. the registry, in one transaction */
    if ((control = iwd_pg_control(call->thread)) == NULL) {
        rc = iwd_respond_error(call, 503, "the tenant registry is not reachable");
        goto done;
    }
    iwd_auth_forget_tenant(call->thread, ccid, control);
    iwd_sha256_hex(tenant_key, hash_t);
    if (dm_key != NULL)
        iwd_sha256_hex(dm_key, hash_dm);
    enc = password != NULL && *password != '\0' ? iwd_encrypt_secret(password) : NULL;
    snprintf(port_s, sizeof(port_s), "%ld", port);
    PQclear(PQexec(control, "BEGIN"));
    {
        const char *v[12] = {ccid, p.tenant_id, p.name, host, port_s, database, user, enc, ssl ? "true" : "false",
                             p.iwd_url, p.email_url, p.gws};
        const char *k[3] = {ccid, hash_t, dm_key != NULL ? hash_dm : NULL};
        const char *dup[3] = {host, port_s, database};
        const char *own[2] = {hash_t, dm_key != NULL ? hash_dm : hash_t};

        res = iwd_pg_exec(control, "control", "provision",
                          "SELECT ccid FROM iwd_control.tenant WHERE db_host = $1 AND db_port = $2::int AND db_name = $3",
                          3, dup);
        if (!control_ok(call, res))
            goto rollback;
        if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), ccid) != 0) {
            rc = iwd_respond_error(call, 409, "that database already serves tenant %s", PQgetvalue(res, 0, 0));
            goto rollback;
        }
        PQclear(res);
        res = iwd_pg_exec(control, "control", "provision",
                          "SELECT 1 FROM iwd_control.api_key WHERE key_hash IN ($1, $2) AND ccid <> $3",
                          3, (const char *[]){own[0], own[1], ccid});
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
                          " services = EXCLUDED.services, updated_at = now()",
                          12, v);
        if (!control_ok(call, res))
            goto rollback;
        PQclear(res);
        res = iwd_pg_exec(control, "control", "provision", "DELETE FROM iwd_control.api_key WHERE ccid = $1", 1, k);
        if (!control_ok(call, res))
            goto rollback;
        PQclear(res);
        res = iwd_pg_exec(control, "control", "provision",
                          "INSERT INTO iwd_control.api_key (key_hash, ccid, kind)"
                          " SELECT $2, $1, 'tenant' UNION ALL SELECT $3::text, $1, 'iwddm' WHERE $3::text IS NOT NULL",
                          3, k);
        if (!control_ok(call, res))
            goto rollback;
        PQclear(res);
        res = PQexec(control, "COMMIT");
        if (!control_ok(call, res))
            goto rollback;
        PQclear(res);
    }
    {
        char cache_key[128];
        snprintf(cache_key, sizeof(cache_key), "iwd:key:%s", hash_t);
        iwd_redis_del(call->thread, cache_key);
        if (dm_key != NULL) {
            snprintf(cache_key, sizeof(cache_key), "iwd:key:%s", hash_dm);
            iwd_redis_del(call->thread, cache_key);
        }
    }
    iwd_pg_drop_tenant(call->thread, ccid);
    /* again after the commit: a lookup between the first forgetting and the commit saw the old keys */
    iwd_auth_forget_tenant(call->thread, ccid, control);
    iwd_log(IWD_LOG_INFO, "tenant provisioned", "%s", ccid);
    rc = iwd_respond_json(call, 200, "{\"created\":true}", strlen("{\"created\":true}"));
    goto done;

rollback:
    PQclear(res);
    PQclear(PQexec(control, "ROLLBACK"));
done:
    free(enc);
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
    PGresult *res;
    const char *v[2] = {ccid, NULL};
    json_t *services;

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
    if ((control = iwd_pg_control(call->thread)) == NULL) {
        json_decref(services);
        return iwd_respond_error(call, 503, "the tenant registry is not reachable");
    }
    iwd_auth_forget_tenant(call->thread, ccid, control);
    if (whole) {
        res = iwd_pg_exec(control, "control", "deprovision", "DELETE FROM iwd_control.tenant WHERE ccid = $1", 1, v);
    } else {
        char *list = json_dumps(services, JSON_COMPACT);
        v[1] = list;
        res = iwd_pg_exec(control, "control", "deprovision",
                          "UPDATE iwd_control.tenant SET services = ARRAY(SELECT s FROM unnest(services) s"
                          " WHERE s NOT IN (SELECT jsonb_array_elements_text($2::jsonb))), updated_at = now()"
                          " WHERE ccid = $1",
                          2, v);
        free(list);
    }
    json_decref(services);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        PQclear(res);
        return iwd_respond_error(call, 503, "the tenant registry could not be written");
    }
    if (strcmp(PQcmdTuples(res), "0") == 0) {
        PQclear(res);
        return iwd_respond_error(call, 404, "unknown tenant %s", ccid);
    }
    PQclear(res);
    iwd_pg_drop_tenant(call->thread, ccid);
    iwd_auth_forget_tenant(call->thread, ccid, control);
    return iwd_respond_json(call, 200, "{\"deleted\":true}", strlen("{\"deleted\":true}"));
}
