/*
 * iwd-sidecar control database schema (control.h): the tenant registry's tables, created or migrated at
 * start by the first sidecar to take the advisory lock, the others waiting for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "control.h"
#include "iwd.h"
#include "log.h"
#include "secret.h"

#define MIGRATION_LOCK "4024" /* the advisory lock sidecars take in turn to migrate */

/* Run one statement of the migration; IWD_ERR (logged) when it fails. */
static int migrate_step(PGconn *conn, const char *sql, int nparams, const char *const *values)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

    if (!ok)
        iwd_log(IWD_LOG_ERROR, "control database migration failed", "%s", PQresultErrorMessage(res));
    PQclear(res);
    return ok ? IWD_OK : IWD_ERR;
}

/* Schema 2: API keys by index and salted hash, from the SHA-256 digests schema 1 stored. */
static int migrate_keys(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT key_hash FROM iwd_control.api_key");
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;

    ok = ok && migrate_step(conn,
                            "ALTER TABLE iwd_control.api_key ADD COLUMN key_index text, ADD COLUMN salt text,"
                            " ADD COLUMN verifier text",
                            0, NULL) == IWD_OK;
    for (int i = 0; ok && i < PQntuples(res); i++) {
        const char *digest = PQgetvalue(res, i, 0);
        char index[65], salt[33], verifier[65];
        const char *values[4] = {digest, index, salt, verifier};

        if (strlen(digest) != 64) {
            iwd_log(IWD_LOG_ERROR, "control database migration failed", "an api_key row is not a SHA-256 digest");
            ok = false;
            break;
        }
        iwd_secret_key_seal_digest(digest, index, salt, verifier);
        ok = migrate_step(conn,
                          "UPDATE iwd_control.api_key SET key_index = $2, salt = $3, verifier = $4 WHERE key_hash = $1",
                          4, values) == IWD_OK;
    }
    PQclear(res);
    if (!ok ||
        migrate_step(conn,
                     "ALTER TABLE iwd_control.api_key DROP COLUMN key_hash, ADD PRIMARY KEY (key_index),"
                     " ALTER COLUMN salt SET NOT NULL, ALTER COLUMN verifier SET NOT NULL",
                     0, NULL) != IWD_OK)
        return IWD_ERR;
    return migrate_step(conn, "UPDATE iwd_control.schema_version SET version = 2", 0, NULL);
}

/* Seal again under the current secret every password sealed under the admin key or the previous secret. */
static int reseal_passwords(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT ccid, db_password FROM iwd_control.tenant"
                                 " WHERE db_password IS NOT NULL AND db_password <> '' FOR UPDATE");
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;

    for (int i = 0; ok && i < PQntuples(res); i++) {
        bool current;
        char *plain = iwd_secret_open(PQgetvalue(res, i, 1), &current), *sealed;

        if (plain == NULL) {
            iwd_log(IWD_LOG_ERROR, "a tenant database password cannot be decrypted with IWD_SECRET_KEY,"
                                   " IWD_SECRET_KEY_PREVIOUS or IWD_ADMIN_API_KEY; provision the tenant again",
                    "%s", PQgetvalue(res, i, 0));
            continue;
        }
        if (!current) {
            const char *values[2] = {PQgetvalue(res, i, 0), sealed = iwd_secret_seal(plain)};
            ok = migrate_step(conn, "UPDATE iwd_control.tenant SET db_password = $2 WHERE ccid = $1", 2, values) ==
                 IWD_OK;
            free(sealed);
        }
        OPENSSL_cleanse(plain, strlen(plain));
        free(plain);
    }
    PQclear(res);
    return ok ? IWD_OK : IWD_ERR;
}

/*
 * The key that indexes API keys: read and opened, sealed again when an older secret sealed it; made at
 * the first start.
 */
static int load_index_key(PGconn *conn)
{
    PGresult *res;
    char *sealed;
    bool current;
    int rc;

    if (migrate_step(conn,
                     "CREATE TABLE IF NOT EXISTS iwd_control.secret (name text PRIMARY KEY, sealed text NOT NULL)", 0,
                     NULL) != IWD_OK)
        return IWD_ERR;
    res = PQexec(conn, "SELECT sealed FROM iwd_control.secret WHERE name = 'key_index' FOR UPDATE");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        iwd_log(IWD_LOG_ERROR, "control database migration failed", "%s", PQresultErrorMessage(res));
        PQclear(res);
        return IWD_ERR;
    }
    if (iwd_secret_index_key_open(PQntuples(res) == 0 ? NULL : PQgetvalue(res, 0, 0), &current) != IWD_OK) {
        iwd_log(IWD_LOG_ERROR, "the API key index key cannot be opened: IWD_SECRET_KEY (or IWD_SECRET_KEY_PREVIOUS)"
                               " is not the secret that sealed it", NULL);
        PQclear(res);
        return IWD_ERR;
    }
    PQclear(res);
    if (current)
        return IWD_OK;
    sealed = iwd_secret_index_key_seal();
    rc = migrate_step(conn,
                      "INSERT INTO iwd_control.secret VALUES ('key_index', $1)"
                      " ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed",
                      1, (const char *[]){sealed});
    free(sealed);
    return rc;
}

/* Schema 2 (keys by index and salted hash) and passwords resealed, in one transaction. */
static int migrate_secrets(PGconn *conn)
{
    PGresult *res;
    bool ok;

    if (migrate_step(conn, "BEGIN", 0, NULL) != IWD_OK)
        return IWD_ERR;
    if (load_index_key(conn) != IWD_OK) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return IWD_ERR;
    }
    res = PQexec(conn, "SELECT version FROM iwd_control.schema_version");
    ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    if (ok && atoi(PQgetvalue(res, 0, 0)) < 2)
        ok = migrate_keys(conn) == IWD_OK;
    PQclear(res);
    ok = ok && reseal_passwords(conn) == IWD_OK && migrate_step(conn, "COMMIT", 0, NULL) == IWD_OK;
    if (!ok) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return IWD_ERR;
    }
    return IWD_OK;
}

int iwd_control_migrate(PGconn *conn)
{
    static const char *const steps[] = {
        "CREATE SCHEMA IF NOT EXISTS iwd_control",
        "CREATE TABLE IF NOT EXISTS iwd_control.schema_version (version int NOT NULL)",
        "CREATE TABLE IF NOT EXISTS iwd_control.tenant ("
        " ccid text PRIMARY KEY, tenant_id text, name text,"
        " db_host text NOT NULL, db_port int NOT NULL, db_name text NOT NULL, db_user text NOT NULL,"
        " db_password text, db_ssl boolean NOT NULL DEFAULT false,"
        " iwd_url text, email_url text, gws jsonb,"
        " services text[] NOT NULL DEFAULT '{iWD}',"
        " created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE UNIQUE INDEX IF NOT EXISTS tenant_database_idx ON iwd_control.tenant (db_host, db_port, db_name)",
        "CREATE TABLE IF NOT EXISTS iwd_control.api_key ("
        " key_hash text PRIMARY KEY,"
        " ccid text NOT NULL REFERENCES iwd_control.tenant ON DELETE CASCADE,"
        " kind text NOT NULL CHECK (kind IN ('tenant', 'iwddm')))",
        "INSERT INTO iwd_control.schema_version SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM iwd_control.schema_version)",
    };
    int rc = IWD_OK;

    PQclear(PQexec(conn, "SELECT pg_advisory_lock(" MIGRATION_LOCK ")"));
    for (size_t i = 0; rc == IWD_OK && i < sizeof(steps) / sizeof(steps[0]); i++)
        rc = migrate_step(conn, steps[i], 0, NULL);
    if (rc == IWD_OK)
        rc = migrate_secrets(conn);
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATION_LOCK ")"));
    return rc;
}
