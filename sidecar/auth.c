/*
 * iwd-sidecar authentication and tenant registry. API keys are stored as SHA-256 hashes only; a tenant
 * database password is stored encrypted (AES-256-GCM, key derived from IWD_ADMIN_API_KEY). A key that
 * fails authentication repeatedly is refused for a while (blacklist).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "sidecar.h"

#define CACHE_TTL_S 60
/* how long a thread trusts what it looked up itself: a registry change made through another sidecar
 * replica reaches this one within this time (changes made through this one apply at once) */
#define LOCAL_CACHE_MS 5000
#define BLACKLIST_FAILURES 5
#define BLACKLIST_WINDOW_MS 60000
#define BLACKLIST_MS 60000
#define BLACKLIST_SLOTS 1024
#define GCM_NONCE 12
#define GCM_TAG 16

typedef struct failure_slot {
    char hash[65];
    int failures;
    int64_t first_ms;
    int64_t blocked_until_ms;
} failure_slot_t;

static failure_slot_t failures[BLACKLIST_SLOTS];
static pthread_mutex_t failures_lock = PTHREAD_MUTEX_INITIALIZER;

void iwd_sha256_hex(const char *in, char out[65])
{
    unsigned char digest[SHA256_DIGEST_LENGTH];

    static const char hex[] = "0123456789abcdef";

    SHA256((const unsigned char *)in, strlen(in), digest);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) { /* every request hashes its key: no printf */
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0xf];
    }
    out[64] = '\0';
}

/* The slot of a key hash in the failure table (by hash prefix). */
static failure_slot_t *slot_of(const char *hash)
{
    unsigned long h = strtoul((char[9]){hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7], 0},
                              NULL, 16);
    return &failures[h % BLACKLIST_SLOTS];
}

static bool blacklisted(const char *hash)
{
    failure_slot_t *s;
    bool blocked;

    pthread_mutex_lock(&failures_lock);
    s = slot_of(hash);
    blocked = strcmp(s->hash, hash) == 0 && s->blocked_until_ms > iwd_now_ms();
    pthread_mutex_unlock(&failures_lock);
    return blocked;
}

static void record_failure(const char *hash)
{
    failure_slot_t *s;
    int64_t now = iwd_now_ms();

    pthread_mutex_lock(&failures_lock);
    s = slot_of(hash);
    if (strcmp(s->hash, hash) != 0 || now - s->first_ms > BLACKLIST_WINDOW_MS) {
        snprintf(s->hash, sizeof(s->hash), "%s", hash);
        s->failures = 0;
        s->first_ms = now;
        s->blocked_until_ms = 0;
    }
    if (++s->failures >= BLACKLIST_FAILURES)
        s->blocked_until_ms = now + BLACKLIST_MS;
    pthread_mutex_unlock(&failures_lock);
}

/* Derive the secret-encryption key from the admin key. */
static void secret_key(unsigned char key[32])
{
    char *material;

    if (asprintf(&material, "iwd-db-password:%s", iwd_conf.admin_api_key) < 0)
        abort();
    SHA256((const unsigned char *)material, strlen(material), key);
    free(material);
}

char *iwd_encrypt_secret(const char *plain)
{
    unsigned char key[32], nonce[GCM_NONCE], tag[GCM_TAG];
    size_t len = strlen(plain);
    unsigned char *cipher = malloc(len + 1);
    char *hex = malloc(2 * (GCM_NONCE + GCM_TAG + len) + 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, total = 0;

    secret_key(key);
    RAND_bytes(nonce, sizeof(nonce));
    EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce);
    EVP_EncryptUpdate(ctx, cipher, &n, (const unsigned char *)plain, (int)len);
    total = n;
    EVP_EncryptFinal_ex(ctx, cipher + total, &n);
    total += n;
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG, tag);
    EVP_CIPHER_CTX_free(ctx);
    for (int i = 0; i < GCM_NONCE; i++)
        sprintf(hex + 2 * i, "%02x", nonce[i]);
    for (int i = 0; i < GCM_TAG; i++)
        sprintf(hex + 2 * (GCM_NONCE + i), "%02x", tag[i]);
    for (int i = 0; i < total; i++)
        sprintf(hex + 2 * (GCM_NONCE + GCM_TAG + i), "%02x", cipher[i]);
    hex[2 * (GCM_NONCE + GCM_TAG + total)] = '\0';
    OPENSSL_cleanse(key, sizeof(key));
    free(cipher);
    return hex;
}

char *iwd_decrypt_secret(const char *hex)
{
    size_t hex_len = strlen(hex), len;
    unsigned char key[32], *raw, *plain;
    EVP_CIPHER_CTX *ctx;
    int n = 0, total;
    bool ok;

    if (hex_len % 2 != 0 || hex_len < 2 * (GCM_NONCE + GCM_TAG))
        return NULL;
    len = hex_len / 2;
    raw = malloc(len);
    if (h2o_hex_decode(raw, hex, hex_len) != 0) {
        free(raw);
        return NULL;
    }
    plain = malloc(len - GCM_NONCE - GCM_TAG + 1);
    secret_key(key);
    ctx = EVP_CIPHER_CTX_new();
    EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw);
    EVP_DecryptUpdate(ctx, plain, &n, raw + GCM_NONCE + GCM_TAG, (int)(len - GCM_NONCE - GCM_TAG));
    total = n;
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG, raw + GCM_NONCE);
    ok = EVP_DecryptFinal_ex(ctx, plain + total, &n) == 1;
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(key, sizeof(key));
    free(raw);
    if (!ok) {
        free(plain);
        return NULL;
    }
    plain[total + n] = '\0';
    return (char *)plain;
}

bool iwd_auth_admin(iwd_call_t *call)
{
    char *key = iwd_header(call->req, "x-api-key");
    size_t n = strlen(iwd_conf.admin_api_key);

    return key != NULL && strlen(key) == n && CRYPTO_memcmp(key, iwd_conf.admin_api_key, n) == 0;
}

/* Append name='value' (libpq quoting) to a conninfo buffer. */
static void conninfo_add(char *buf, size_t size, const char *name, const char *value)
{
    size_t o = strlen(buf);

    o += snprintf(buf + o, o < size ? size - o : 0, "%s%s='", o ? " " : "", name);
    for (const char *p = value; *p != '\0' && o + 3 < size; p++) {
        if (*p == '\'' || *p == '\\')
            buf[o++] = '\\';
        buf[o++] = *p;
    }
    if (o + 2 < size) {
        buf[o++] = '\'';
        buf[o] = '\0';
    }
}

/* Fill the tenant from its cached registry entry {"kind","ccid","host","port","db","user","pw","ssl"}. */
int iwd_tenant_from_entry(iwd_tenant_t *tenant, const char *text)
{
    json_t *e = json_loads(text, 0, NULL);
    const char *kind, *ccid, *host, *db, *user, *pw = NULL;
    json_t *pw_value = NULL;
    int port, ssl;
    char port_s[16], *password = NULL;

    if (e == NULL)
        return IWD_ERR;
    if (json_unpack(e, "{s:s,s:s,s:s,s:i,s:s,s:s,s?o,s:b}", "kind", &kind, "ccid", &ccid, "host", &host, "port",
                    &port, "db", &db, "user", &user, "pw", &pw_value, "ssl", &ssl) != 0) {
        json_decref(e);
        return IWD_ERR;
    }
    if (json_is_string(pw_value))
        pw = json_string_value(pw_value);
    if (pw != NULL && *pw != '\0' && (password = iwd_decrypt_secret(pw)) == NULL) {
        json_decref(e);
        return IWD_ERR;
    }
    snprintf(tenant->ccid, sizeof(tenant->ccid), "%s", ccid);
    tenant->read_only = strcmp(kind, "iwddm") == 0;
    tenant->conninfo[0] = '\0';
    snprintf(port_s, sizeof(port_s), "%d", port);
    conninfo_add(tenant->conninfo, sizeof(tenant->conninfo), "host", host);
    conninfo_add(tenant->conninfo, sizeof(tenant->conninfo), "port", port_s);
    conninfo_add(tenant->conninfo, sizeof(tenant->conninfo), "dbname", db);
    conninfo_add(tenant->conninfo, sizeof(tenant->conninfo), "user", user);
    if (password != NULL) {
        conninfo_add(tenant->conninfo, sizeof(tenant->conninfo), "password", password);
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
    conninfo_add(tenant->conninfo, sizeof(tenant->conninfo), "sslmode", ssl ? "require" : "prefer");
    conninfo_add(tenant->conninfo, sizeof(tenant->conninfo), "connect_timeout", "5");
    conninfo_add(tenant->conninfo, sizeof(tenant->conninfo), "application_name", "iwd-sidecar");
    json_decref(e);
    return IWD_OK;
}

/* Bumped by every registry change this process makes: every thread's remembered entries go stale. */
static uint64_t registry_generation;

/* The thread's slot for a key hash. */
static iwd_key_cache_slot_t *local_slot(iwd_thread_t *thread, const char *hash)
{
    unsigned long h = strtoul((char[9]){hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7], 0},
                              NULL, 16);
    return &thread->key_cache[h % IWD_KEY_CACHE_SLOTS];
}

/* Remember a key's tenant in the thread's own cache, for LOCAL_CACHE_MS. */
static void local_remember(iwd_thread_t *thread, const char *hash, const iwd_tenant_t *tenant)
{
    iwd_key_cache_slot_t *slot = local_slot(thread, hash);

    snprintf(slot->hash, sizeof(slot->hash), "%s", hash);
    slot->tenant = *tenant;
    slot->expires_ms = iwd_now_ms() + LOCAL_CACHE_MS;
    slot->generation = __atomic_load_n(&registry_generation, __ATOMIC_ACQUIRE);
}

/* The key's tenant from the thread's own cache (parsed and decrypted already); false when not there. */
static bool local_recall(iwd_thread_t *thread, const char *hash, iwd_tenant_t *tenant)
{
    iwd_key_cache_slot_t *slot = local_slot(thread, hash);

    if (strcmp(slot->hash, hash) != 0 || slot->expires_ms <= iwd_now_ms() ||
        slot->generation != __atomic_load_n(&registry_generation, __ATOMIC_ACQUIRE))
        return false;
    *tenant = slot->tenant;
    return true;
}

/* Look a key hash up in Redis, then in the control database (caching what it finds in Redis). */
static char *registry_entry(iwd_thread_t *thread, const char *hash, bool *unavailable)
{
    char cache_key[128], *entry;
    PGconn *control;
    PGresult *res;
    const char *values[1] = {hash};

    *unavailable = false;
    snprintf(cache_key, sizeof(cache_key), "iwd:key:%s", hash);
    if ((entry = iwd_redis_get(thread, cache_key)) != NULL)
        return entry;
    if ((control = iwd_pg_control(thread)) == NULL) {
        *unavailable = true;
        return NULL;
    }
    res = iwd_pg_exec(control, "control", "auth",
                      "SELECT json_build_object('kind', k.kind, 'ccid', t.ccid, 'host', t.db_host, 'port', t.db_port,"
                      " 'db', t.db_name, 'user', t.db_user, 'pw', t.db_password, 'ssl', t.db_ssl)::text"
                      " FROM iwd_control.api_key k JOIN iwd_control.tenant t USING (ccid)"
                      " WHERE k.key_hash = $1 AND 'iWD' = ANY (t.services)",
                      1, values);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *unavailable = true;
        PQclear(res);
        return NULL;
    }
    if (PQntuples(res) == 1) {
        entry = strdup(PQgetvalue(res, 0, 0));
        iwd_redis_set(thread, cache_key, entry, CACHE_TTL_S);
    }
    PQclear(res);
    return entry;
}

/*
 * Authenticate the request's key: the thread's own memory of it (a few seconds), Redis, then the control
 * database.
 */
int iwd_auth_tenant(iwd_call_t *call, bool write)
{
    char *key = iwd_header(call->req, "x-api-key");
    char hash[65], *entry;
    bool unavailable;

    if (key == NULL || *key == '\0')
        return iwd_respond_error(call, 401, "missing x-api-key header"), IWD_ERR;
    iwd_sha256_hex(key, hash);
    if (blacklisted(hash)) {
        iwd_metrics_blacklist();
        return iwd_respond_error(call, 429, "too many failed authentications with this key; retry later"), IWD_ERR;
    }
    if (!local_recall(call->thread, hash, &call->tenant)) {
        entry = registry_entry(call->thread, hash, &unavailable);
        if (entry == NULL) {
            if (unavailable)
                return iwd_respond_error(call, 503, "the tenant registry is not reachable"), IWD_ERR;
            record_failure(hash);
            return iwd_respond_error(call, 401, "unknown x-api-key"), IWD_ERR;
        }
        if (iwd_tenant_from_entry(&call->tenant, entry) != IWD_OK) {
            free(entry);
            return iwd_respond_error(call, 500, "the tenant registry entry is unreadable"), IWD_ERR;
        }
        free(entry);
        local_remember(call->thread, hash, &call->tenant);
    }
    call->has_tenant = true;
    if (write && call->tenant.read_only)
        return iwd_respond_error(call, 403, "this key is read-only (IWD_APIKEY_IWDDM)"), IWD_ERR;
    return IWD_OK;
}

/* Forget every key the threads of this process remember (provisioning changed the registry). */
static void local_forget_all(iwd_thread_t *thread)
{
    __atomic_add_fetch(&registry_generation, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < IWD_KEY_CACHE_SLOTS; i++)
        thread->key_cache[i].hash[0] = '\0';
}

void iwd_auth_forget_tenant(iwd_thread_t *thread, const char *ccid, PGconn *control)
{
    local_forget_all(thread);
    const char *values[1] = {ccid};
    PGresult *res = iwd_pg_exec(control, "control", "forget",
                                "SELECT key_hash FROM iwd_control.api_key WHERE ccid = $1", 1, values);

    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        for (int i = 0; i < PQntuples(res); i++) {
            char cache_key[128];
            snprintf(cache_key, sizeof(cache_key), "iwd:key:%s", PQgetvalue(res, i, 0));
            iwd_redis_del(thread, cache_key);
        }
    PQclear(res);
}
