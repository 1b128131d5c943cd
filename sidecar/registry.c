/*
 * iwd-sidecar tenant registry (registry.h): which tenant an API key opens, looked up in the control
 * database and remembered.
 *
 * Redis is untrusted storage: it holds, per key index, the tenant's ccid, the key's kind and the registry
 * revision of the tenant, signed with an expiry; an entry that does not verify is ignored, counted as a
 * Redis error and looked up in PostgreSQL. No password or connection setting goes there: connection
 * settings come from the control database (kept by each thread for a minute, per revision). Each thread
 * also remembers the keys it looked up for a few seconds, unknown key indexes included, so that a repeated
 * one costs no lookup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "clock.h"
#include "iwd.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "redis.h"
#include "registry.h"
#include "secret.h"

#define CACHE_TTL_S 60 /* a signed Redis entry's life, and how long a thread keeps a tenant's settings */
/* how long a thread trusts what it looked up itself: a registry change made through another sidecar
 * replica reaches this one within this time (changes made through this one apply at once) */
#define LOCAL_CACHE_MS 5000
#define NEGATIVE_CACHE_MS 10000 /* how long an unknown key index is answered 401 without a lookup */
#define CACHE_ENTRY_VERSION 1
#define CLOCK_SKEW_S 5 /* how far apart the replicas' clocks may be (the expiry of a Redis entry is wall-clock time) */

/* Bumped by every registry change this process makes: every thread's remembered entries go stale. */
static uint64_t registry_generation;

/* --- the threads' own memory ----------------------------------------------------------------------- */

static uint64_t generation(void)
{
    return __atomic_load_n(&registry_generation, __ATOMIC_ACQUIRE);
}

/* A slot number from the first 8 hex digits of a key index. */
static unsigned long index_slot(const char *index, unsigned long slots)
{
    return strtoul((char[9]){index[0], index[1], index[2], index[3], index[4], index[5], index[6], index[7], 0},
                   NULL, 16) %
           slots;
}

/* Remember a key's tenant in the thread's own cache, for LOCAL_CACHE_MS; negative: the key is unknown. */
static void local_remember(iwd_thread_t *thread, const char *index, const iwd_tenant_t *tenant)
{
    iwd_key_cache_slot_t *slot = &thread->key_cache[index_slot(index, IWD_KEY_CACHE_SLOTS)];

    snprintf(slot->hash, sizeof(slot->hash), "%s", index);
    slot->unknown = tenant == NULL;
    if (tenant != NULL)
        slot->tenant = *tenant;
    slot->expires_ms = iwd_now_ms() + (tenant != NULL ? LOCAL_CACHE_MS : NEGATIVE_CACHE_MS);
    slot->generation = generation();
}

/* The thread's memory of a key: 1 known (tenant filled), 0 known to be unknown, -1 not remembered. */
static int local_recall(iwd_thread_t *thread, const char *index, iwd_tenant_t *tenant)
{
    iwd_key_cache_slot_t *slot = &thread->key_cache[index_slot(index, IWD_KEY_CACHE_SLOTS)];

    if (strcmp(slot->hash, index) != 0 || slot->expires_ms <= iwd_now_ms() || slot->generation != generation())
        return -1;
    if (slot->unknown)
        return 0;
    *tenant = slot->tenant;
    return 1;
}

/* The slot of a ccid in the thread's tenant settings. */
static iwd_tenant_cache_slot_t *tenant_slot(iwd_thread_t *thread, const char *ccid)
{
    unsigned long h = 5381;

    for (const char *p = ccid; *p != '\0'; p++)
        h = h * 33 + (unsigned char)*p;
    return &thread->tenant_cache[h % IWD_TENANT_CACHE_SLOTS];
}

static void tenant_remember(iwd_thread_t *thread, const iwd_tenant_t *tenant, const char *revision)
{
    iwd_tenant_cache_slot_t *slot = tenant_slot(thread, tenant->ccid);

    slot->tenant = *tenant;
    slot->tenant.read_only = false;
    snprintf(slot->revision, sizeof(slot->revision), "%s", revision);
    slot->expires_ms = iwd_now_ms() + CACHE_TTL_S * 1000;
    slot->generation = generation();
}

/* The settings of a tenant at a revision, when the thread has them. */
static bool tenant_recall(iwd_thread_t *thread, const char *ccid, const char *revision, iwd_tenant_t *tenant)
{
    iwd_tenant_cache_slot_t *slot = tenant_slot(thread, ccid);

    if (strcmp(slot->tenant.ccid, ccid) != 0 || strcmp(slot->revision, revision) != 0 ||
        slot->expires_ms <= iwd_now_ms() || slot->generation != generation())
        return false;
    *tenant = slot->tenant;
    return true;
}

void iwd_registry_forget_local(void)
{
    __atomic_add_fetch(&registry_generation, 1, __ATOMIC_RELEASE);
}

/* --- Redis entries --------------------------------------------------------------------------------- */

/* The signature of a Redis entry: bound to its Redis key, the entry format and every field. */
static void entry_mac(const char *redis_key, const char *ccid, const char *kind,
                      const char *revision, long long expires, char out[65])
{
    char *text;
    int len = asprintf(&text, "iwd-key-cache%c%d%c%s%c%s%c%s%c%s%c%lld", 0, CACHE_ENTRY_VERSION, 0, redis_key, 0, ccid,
                       0, kind, 0, revision, 0, expires);

    if (len < 0)
        abort();
    iwd_secret_cache_mac(text, (size_t)len, out);
    free(text);
}

static void redis_key_of(const char *index, char out[80])
{
    snprintf(out, 80, "iwd:key:%s", index);
}

/* Cache a key's tenant in Redis: ccid, kind and revision, signed, with an expiry. */
static void entry_store(iwd_thread_t *thread, const char *index, const char *ccid, const char *kind,
                        const char *revision)
{
    char redis_key[80], mac[65], *text;
    long long expires = (long long)time(NULL) + CACHE_TTL_S;
    json_t *entry;

    redis_key_of(index, redis_key);
    entry_mac(redis_key, ccid, kind, revision, expires, mac);
    entry = json_pack("{s:i,s:s,s:s,s:s,s:I,s:s}", "v", CACHE_ENTRY_VERSION, "ccid", ccid, "kind", kind, "rev",
                      revision, "exp", (json_int_t)expires, "mac", mac);
    text = json_dumps(entry, JSON_COMPACT);
    iwd_redis_set(&thread->redis, redis_key, text, CACHE_TTL_S);
    free(text);
    json_decref(entry);
}

/*
 * A key's tenant from Redis, verified: true with ccid, kind and revision filled when the entry is there,
 * well-formed, signed by this secret for this key index and not expired. An entry that fails any of these
 * is counted as a Redis error and ignored.
 */
static bool entry_recall(iwd_thread_t *thread, const char *index, char ccid[IWD_CCID_SIZE], bool *read_only,
                         char revision[32])
{
    char redis_key[80], mac[65], *text;
    json_t *entry;
    const char *e_ccid, *e_kind, *e_rev, *e_mac;
    json_int_t version, expires;
    bool ok;

    redis_key_of(index, redis_key);
    if ((text = iwd_redis_get(&thread->redis, redis_key)) == NULL)
        return false;
    entry = json_loads(text, 0, NULL);
    free(text);
    ok = entry != NULL &&
         json_unpack(entry, "{s:I,s:s,s:s,s:s,s:I,s:s}", "v", &version, "ccid", &e_ccid, "kind", &e_kind, "rev",
                     &e_rev, "exp", &expires, "mac", &e_mac) == 0 &&
         version == CACHE_ENTRY_VERSION && strlen(e_mac) == 64 && strlen(e_ccid) < IWD_CCID_SIZE &&
         strlen(e_rev) < 32 && (strcmp(e_kind, "tenant") == 0 || strcmp(e_kind, "iwddm") == 0);
    if (ok) {
        entry_mac(redis_key, e_ccid, e_kind, e_rev, (long long)expires, mac);
        ok = CRYPTO_memcmp(mac, e_mac, 64) == 0 && expires > (json_int_t)time(NULL) &&
             expires <= (json_int_t)time(NULL) + CACHE_TTL_S + CLOCK_SKEW_S;
    }
    if (ok) {
        snprintf(ccid, IWD_CCID_SIZE, "%s", e_ccid);
        *read_only = strcmp(e_kind, "iwddm") == 0;
        snprintf(revision, 32, "%s", e_rev);
    } else {
        iwd_metrics_redis_error();
        iwd_log(IWD_LOG_WARN, "an unverifiable Redis entry was ignored", "%s", redis_key);
    }
    json_decref(entry);
    return ok;
}

/* --- the control database -------------------------------------------------------------------------- */

#define KEY_QUERY                                                                                                   \
    "SELECT k.kind, k.salt, k.verifier, t.ccid, t.db_host, t.db_port, t.db_name, t.db_user, t.db_password,"        \
    " t.db_ssl, (extract(epoch FROM t.updated_at) * 1000000)::bigint::text"                                          \
    " FROM iwd_control.api_key k JOIN iwd_control.tenant t USING (ccid)"                                             \
    " WHERE k.key_index = $1 AND 'iWD' = ANY (t.services)"

/* The tenant of a registry row of KEY_QUERY: its settings (password opened) and revision. */
static iwd_registry_result_t tenant_from_row(PGresult *res, iwd_tenant_t *tenant, char revision[32])
{
    const char *ccid = PQgetvalue(res, 0, 3), *sealed = PQgetvalue(res, 0, 8);
    char *password = NULL;
    bool current;
    int rc;

    if (*sealed != '\0' && (password = iwd_secret_open(sealed, &current)) == NULL) {
        iwd_log(IWD_LOG_ERROR, "a tenant database password cannot be decrypted with IWD_SECRET_KEY", "%.64s", ccid);
        return IWD_ENTRY_UNUSABLE;
    }
    rc = iwd_tenant_settings(tenant, ccid, PQgetvalue(res, 0, 4), atoi(PQgetvalue(res, 0, 5)), PQgetvalue(res, 0, 6),
                             PQgetvalue(res, 0, 7), password, strcmp(PQgetvalue(res, 0, 9), "t") == 0);
    if (password != NULL) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
    if (rc != IWD_OK) {
        iwd_log(IWD_LOG_ERROR, "a tenant's registry entry cannot be used (ccid or settings too long)", "%.64s", ccid);
        return IWD_ENTRY_UNUSABLE;
    }
    tenant->read_only = strcmp(PQgetvalue(res, 0, 0), "iwddm") == 0;
    snprintf(revision, 32, "%s", PQgetvalue(res, 0, 10));
    return IWD_KEY_FOUND;
}

/* Look a key up in the control database by its index, and confirm it by its salted hash. */
static iwd_registry_result_t registry_lookup(iwd_thread_t *thread, const char *key, const char *index,
                                          iwd_tenant_t *tenant, char revision[32])
{
    PGconn *control = iwd_pg_control(thread);
    PGresult *res;
    const char *values[1] = {index};
    iwd_registry_result_t result = IWD_KEY_UNKNOWN;

    if (control == NULL)
        return IWD_REGISTRY_UNAVAILABLE;
    res = iwd_pg_exec(control, "control", "auth", KEY_QUERY, 1, values);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        return IWD_REGISTRY_UNAVAILABLE;
    }
    if (PQntuples(res) == 1 && iwd_secret_key_verify(key, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2)))
        result = tenant_from_row(res, tenant, revision);
    PQclear(res);
    return result;
}

/* The key's tenant: Redis (verified) with the thread's settings of that tenant, else the control database. */
static iwd_registry_result_t resolve(iwd_thread_t *thread, const char *key, const char *index, iwd_tenant_t *tenant)
{
    char ccid[IWD_CCID_SIZE], revision[32];
    bool read_only;
    iwd_registry_result_t result;

    if (entry_recall(thread, index, ccid, &read_only, revision) && tenant_recall(thread, ccid, revision, tenant)) {
        tenant->read_only = read_only;
        return IWD_KEY_FOUND;
    }
    result = registry_lookup(thread, key, index, tenant, revision);
    if (result == IWD_KEY_FOUND) {
        tenant_remember(thread, tenant, revision);
        entry_store(thread, index, tenant->ccid, tenant->read_only ? "iwddm" : "tenant", revision);
    }
    return result;
}

void iwd_registry_forget_keys(iwd_thread_t *thread, PGresult *indexes)
{
    char redis_key[80];

    for (int i = 0; indexes != NULL && PQresultStatus(indexes) == PGRES_TUPLES_OK && i < PQntuples(indexes); i++) {
        redis_key_of(PQgetvalue(indexes, i, 0), redis_key);
        iwd_redis_del(&thread->redis, redis_key);
    }
    iwd_registry_forget_local();
}

iwd_registry_result_t iwd_registry_find(iwd_thread_t *thread, const char *key, iwd_tenant_t *tenant)
{
    char index[65];
    iwd_registry_result_t result;

    iwd_secret_key_index(key, index);
    switch (local_recall(thread, index, tenant)) {
    case 1:
        return IWD_KEY_FOUND;
    case 0:
        return IWD_KEY_UNKNOWN;
    }
    result = resolve(thread, key, index, tenant);
    if (result == IWD_KEY_FOUND)
        local_remember(thread, index, tenant);
    else if (result == IWD_KEY_UNKNOWN)
        local_remember(thread, index, NULL);
    return result;
}
