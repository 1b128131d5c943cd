/*
 * iwd-sidecar authentication and tenant registry.
 *
 * Secrets. The keys the sidecar uses come from IWD_SECRET_KEY, which only sidecars hold: derived from
 * it (HKDF-SHA256, one label each), the key that seals tenant database passwords (AES-256-GCM) and the
 * key that signs what the sidecar caches in Redis (HMAC-SHA256); sealed by it, the random key that
 * indexes API keys (kept in the control database, so that rotating the secret leaves the index valid).
 * The admin key only guards provisioning. IWD_SECRET_KEY_PREVIOUS, during a rotation, still opens what
 * the previous secret sealed; at start every such secret is sealed again under the current one.
 *
 * API keys are never stored: a key is found by its index, HMAC(index key, SHA-256(key)), and confirmed
 * by a salted hash, HMAC(salt, SHA-256(key)), with a random salt per key.
 *
 * Redis is untrusted storage: it holds, per key index, the tenant's ccid, the key's kind and the
 * registry revision of the tenant, signed with an expiry; an entry that does not verify is ignored,
 * counted as a Redis error and looked up in PostgreSQL. No password or connection setting goes there:
 * connection settings come from the control database (kept by each thread for a minute, per revision).
 *
 * Failed authentications (unknown tenant keys, wrong admin keys) are counted per client address; an
 * address with too many within a minute is refused with 429 for a minute before any lookup. Unknown key
 * indexes are remembered briefly so that a repeated one costs no lookup.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "sidecar.h"

#define CACHE_TTL_S 60 /* a signed Redis entry's life, and how long a thread keeps a tenant's settings */
/* how long a thread trusts what it looked up itself: a registry change made through another sidecar
 * replica reaches this one within this time (changes made through this one apply at once) */
#define LOCAL_CACHE_MS 5000
#define NEGATIVE_CACHE_MS 10000 /* how long an unknown key index is answered 401 without a lookup */
#define FAILURE_WINDOW_MS 60000
#define BLOCK_MS 60000
#define ADDRESS_SLOTS 4096
#define CACHE_ENTRY_VERSION 1
#define CLOCK_SKEW_S 5 /* how far apart the replicas' clocks may be (the expiry of a Redis entry is wall-clock time) */
#define GCM_NONCE 12
#define GCM_TAG 16
#define SALT_BYTES 16
#define SECRET_PREFIX "v2:" /* a password sealed under a key derived from IWD_SECRET_KEY */

/* The keys derived from one server secret. */
typedef struct keyring {
    bool set;
    unsigned char password[32];  /* AES-256-GCM of tenant database passwords */
    unsigned char cache_mac[32]; /* HMAC of the Redis entries */
} keyring_t;

enum { CURRENT, PREVIOUS, NKEYRINGS };
static keyring_t keyrings[NKEYRINGS];
static pthread_once_t keyrings_once = PTHREAD_ONCE_INIT;

/* The key that indexes API keys: random, sealed in iwd_control.secret; loaded at start (iwd_auth_migrate). */
static unsigned char index_key[32];

/* Failed authentications of one client address. */
typedef struct address_slot {
    unsigned char addr[16];
    int failures;
    int64_t first_ms;
    int64_t blocked_until_ms;
} address_slot_t;

static address_slot_t addresses[ADDRESS_SLOTS];
static pthread_mutex_t addresses_lock = PTHREAD_MUTEX_INITIALIZER;

/* Bumped by every registry change this process makes: every thread's remembered entries go stale. */
static uint64_t registry_generation;

static const char hex_digits[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

void iwd_sha256_hex(const char *in, char out[65])
{
    unsigned char digest[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)in, strlen(in), digest);
    to_hex(digest, sizeof(digest), out);
}

/* HMAC-SHA256 of data under key, in hex. */
static void hmac_hex(const unsigned char *key, size_t key_len, const void *data, size_t len, char out[65])
{
    unsigned char mac[SHA256_DIGEST_LENGTH];
    unsigned int mac_len = sizeof(mac);

    if (HMAC(EVP_sha256(), key, (int)key_len, data, len, mac, &mac_len) == NULL)
        abort();
    to_hex(mac, sizeof(mac), out);
}

/* HKDF-SHA256 of a server secret for one purpose. */
static void derive(const char *secret, const char *label, unsigned char out[32])
{
    static const char salt[] = "iwd-sidecar";
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t len = 32;

    if (ctx == NULL || EVP_PKEY_derive_init(ctx) <= 0 || EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) <= 0 ||
        EVP_PKEY_CTX_set1_hkdf_salt(ctx, (const unsigned char *)salt, sizeof(salt) - 1) <= 0 ||
        EVP_PKEY_CTX_set1_hkdf_key(ctx, (const unsigned char *)secret, (int)strlen(secret)) <= 0 ||
        EVP_PKEY_CTX_add1_hkdf_info(ctx, (const unsigned char *)label, (int)strlen(label)) <= 0 ||
        EVP_PKEY_derive(ctx, out, &len) <= 0 || len != 32)
        abort(); /* the KDF of the linked OpenSSL fails only when out of memory */
    EVP_PKEY_CTX_free(ctx);
}

static void keyring_derive(keyring_t *k, const char *secret)
{
    derive(secret, "iwd tenant database password encryption v1", k->password);
    derive(secret, "iwd registry cache signature v1", k->cache_mac);
    k->set = true;
}

static void keyrings_init(void)
{
    keyring_derive(&keyrings[CURRENT], iwd_conf.secret_key);
    if (iwd_conf.secret_key_previous != NULL && *iwd_conf.secret_key_previous != '\0')
        keyring_derive(&keyrings[PREVIOUS], iwd_conf.secret_key_previous);
}

static const keyring_t *keyring(int which)
{
    pthread_once(&keyrings_once, keyrings_init);
    return keyrings[which].set ? &keyrings[which] : NULL;
}

/* The key that sealed passwords before IWD_SECRET_KEY existed (derived from the admin key). */
static void legacy_password_key(unsigned char key[32])
{
    char *material;

    if (asprintf(&material, "iwd-db-password:%s", iwd_conf.admin_api_key) < 0)
        abort();
    SHA256((const unsigned char *)material, strlen(material), key);
    OPENSSL_cleanse(material, strlen(material));
    free(material);
}

/* --- passwords ----------------------------------------------------------------------------------- */

char *iwd_encrypt_secret(const char *plain)
{
    const unsigned char *key = keyring(CURRENT)->password;
    unsigned char nonce[GCM_NONCE], tag[GCM_TAG];
    size_t len = strlen(plain), prefix = strlen(SECRET_PREFIX);
    unsigned char *cipher = malloc(len + 1);
    char *out = malloc(prefix + 2 * (GCM_NONCE + GCM_TAG + len) + 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, total = 0;

    if (cipher == NULL || out == NULL || ctx == NULL || RAND_bytes(nonce, sizeof(nonce)) != 1 ||
        EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, cipher, &n, (const unsigned char *)plain, (int)len) != 1)
        abort();
    total = n;
    if (EVP_EncryptFinal_ex(ctx, cipher + total, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG, tag) != 1)
        abort();
    total += n;
    EVP_CIPHER_CTX_free(ctx);
    memcpy(out, SECRET_PREFIX, prefix);
    to_hex(nonce, GCM_NONCE, out + prefix);
    to_hex(tag, GCM_TAG, out + prefix + 2 * GCM_NONCE);
    to_hex(cipher, total, out + prefix + 2 * (GCM_NONCE + GCM_TAG));
    free(cipher);
    return out;
}

/* Open hex (nonce, tag, ciphertext) sealed under key; NULL when it does not authenticate. */
static char *open_sealed(const char *hex, const unsigned char key[32])
{
    size_t hex_len = strlen(hex), len;
    unsigned char *raw, *plain;
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
    ctx = EVP_CIPHER_CTX_new();
    ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) == 1 &&
         EVP_DecryptUpdate(ctx, plain, &n, raw + GCM_NONCE + GCM_TAG, (int)(len - GCM_NONCE - GCM_TAG)) == 1;
    total = n;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG, raw + GCM_NONCE) == 1 &&
         EVP_DecryptFinal_ex(ctx, plain + total, &n) == 1;
    EVP_CIPHER_CTX_free(ctx);
    free(raw);
    if (!ok) {
        free(plain);
        return NULL;
    }
    plain[total + n] = '\0';
    return (char *)plain;
}

/*
 * Open a stored password; *current says whether it was sealed under the current secret (when not, the
 * caller seals it again). NULL when no key this sidecar holds opens it.
 */
static char *open_password(const char *stored, bool *current)
{
    size_t prefix = strlen(SECRET_PREFIX);
    unsigned char legacy[32];
    char *plain;

    *current = false;
    if (strncmp(stored, SECRET_PREFIX, prefix) != 0) {
        legacy_password_key(legacy);
        plain = open_sealed(stored, legacy);
        OPENSSL_cleanse(legacy, sizeof(legacy));
        return plain;
    }
    if ((plain = open_sealed(stored + prefix, keyring(CURRENT)->password)) != NULL) {
        *current = true;
        return plain;
    }
    return keyring(PREVIOUS) != NULL ? open_sealed(stored + prefix, keyring(PREVIOUS)->password) : NULL;
}

char *iwd_decrypt_secret(const char *stored)
{
    bool current;

    return open_password(stored, &current);
}

/* --- API keys ------------------------------------------------------------------------------------ */

/* The index of an API key: HMAC(index key, SHA-256(key)), of its hex digest. */
static void key_index_of(const char *digest_hex, char out[65])
{
    hmac_hex(index_key, sizeof(index_key), digest_hex, 64, out);
}

/* The salted hash that confirms a key: HMAC(salt, SHA-256(key)). */
static void verifier_of(const char *digest_hex, const char *salt_hex, char out[65])
{
    hmac_hex((const unsigned char *)salt_hex, strlen(salt_hex), digest_hex, 64, out);
}

void iwd_key_index(const char *key, char index[65])
{
    char digest[65];

    iwd_sha256_hex(key, digest);
    key_index_of(digest, index);
}

void iwd_key_seal(const char *key, char index[65], char salt[2 * SALT_BYTES + 1], char verifier[65])
{
    unsigned char raw[SALT_BYTES];
    char digest[65];

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        abort();
    to_hex(raw, sizeof(raw), salt);
    iwd_sha256_hex(key, digest);
    key_index_of(digest, index);
    verifier_of(digest, salt, verifier);
}

/* --- connection settings ------------------------------------------------------------------------- */

/* Append name='value' (libpq quoting) to a conninfo buffer; false when it does not fit. */
static bool conninfo_add(char *buf, size_t size, const char *name, const char *value)
{
    size_t o = strlen(buf);
    int n = snprintf(buf + o, size - o, "%s%s='", o ? " " : "", name);

    if (n < 0 || (size_t)n >= size - o)
        return false;
    o += n;
    for (const char *p = value; *p != '\0'; p++) {
        if (o + 3 >= size)
            return false;
        if (*p == '\'' || *p == '\\')
            buf[o++] = '\\';
        buf[o++] = *p;
    }
    if (o + 2 > size)
        return false;
    buf[o++] = '\'';
    buf[o] = '\0';
    return true;
}

int iwd_tenant_settings(iwd_tenant_t *tenant, const char *ccid, const char *host, int port, const char *db,
                        const char *user, const char *password, bool ssl)
{
    char port_s[16];
    char *c = tenant->conninfo;
    size_t size = sizeof(tenant->conninfo);

    /* a ccid that does not fit would make two tenants one in the pool of connections */
    if (strlen(ccid) >= sizeof(tenant->ccid))
        return IWD_ERR;
    snprintf(tenant->ccid, sizeof(tenant->ccid), "%s", ccid);
    snprintf(port_s, sizeof(port_s), "%d", port);
    c[0] = '\0';
    if (!conninfo_add(c, size, "host", host) || !conninfo_add(c, size, "port", port_s) ||
        !conninfo_add(c, size, "dbname", db) || !conninfo_add(c, size, "user", user) ||
        (password != NULL && *password != '\0' && !conninfo_add(c, size, "password", password)) ||
        !conninfo_add(c, size, "sslmode", ssl ? "require" : "prefer") ||
        !conninfo_add(c, size, "connect_timeout", "5") || !conninfo_add(c, size, "application_name", "iwd-sidecar")) {
        OPENSSL_cleanse(c, size);
        return IWD_ERR;
    }
    return IWD_OK;
}

/*
 * Fill the tenant from its registry row as the control database gives it,
 * {"kind","ccid","host","port","db","user","pw","ssl"} (pw as stored, sealed).
 */
int iwd_tenant_from_entry(iwd_tenant_t *tenant, const char *text)
{
    json_t *e = json_loads(text, 0, NULL), *pw_value = NULL;
    const char *kind, *ccid, *host, *db, *user;
    int port, ssl, rc;
    char *password = NULL;

    if (e == NULL)
        return IWD_ERR;
    if (json_unpack(e, "{s:s,s:s,s:s,s:i,s:s,s:s,s?o,s:b}", "kind", &kind, "ccid", &ccid, "host", &host, "port",
                    &port, "db", &db, "user", &user, "pw", &pw_value, "ssl", &ssl) != 0) {
        json_decref(e);
        return IWD_ERR;
    }
    if (json_is_string(pw_value) && json_string_length(pw_value) > 0 &&
        (password = iwd_decrypt_secret(json_string_value(pw_value))) == NULL) {
        iwd_log(IWD_LOG_ERROR, "a tenant database password cannot be decrypted with IWD_SECRET_KEY", "%s", ccid);
        json_decref(e);
        return IWD_ERR;
    }
    rc = iwd_tenant_settings(tenant, ccid, host, port, db, user, password, ssl);
    tenant->read_only = strcmp(kind, "iwddm") == 0;
    if (password != NULL) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
    json_decref(e);
    return rc;
}

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

void iwd_auth_forget_local(void)
{
    __atomic_add_fetch(&registry_generation, 1, __ATOMIC_RELEASE);
}

/* --- Redis entries --------------------------------------------------------------------------------- */

/* The signature of a Redis entry: bound to its Redis key, the entry format and every field. */
static void entry_mac(const keyring_t *k, const char *redis_key, const char *ccid, const char *kind,
                      const char *revision, long long expires, char out[65])
{
    char *text;
    int len = asprintf(&text, "iwd-key-cache%c%d%c%s%c%s%c%s%c%s%c%lld", 0, CACHE_ENTRY_VERSION, 0, redis_key, 0, ccid,
                       0, kind, 0, revision, 0, expires);

    if (len < 0)
        abort();
    hmac_hex(k->cache_mac, sizeof(k->cache_mac), text, (size_t)len, out);
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
    entry_mac(keyring(CURRENT), redis_key, ccid, kind, revision, expires, mac);
    entry = json_pack("{s:i,s:s,s:s,s:s,s:I,s:s}", "v", CACHE_ENTRY_VERSION, "ccid", ccid, "kind", kind, "rev",
                      revision, "exp", (json_int_t)expires, "mac", mac);
    text = json_dumps(entry, JSON_COMPACT);
    iwd_redis_set(thread, redis_key, text, CACHE_TTL_S);
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
    if ((text = iwd_redis_get(thread, redis_key)) == NULL)
        return false;
    entry = json_loads(text, 0, NULL);
    free(text);
    ok = entry != NULL &&
         json_unpack(entry, "{s:I,s:s,s:s,s:s,s:I,s:s}", "v", &version, "ccid", &e_ccid, "kind", &e_kind, "rev",
                     &e_rev, "exp", &expires, "mac", &e_mac) == 0 &&
         version == CACHE_ENTRY_VERSION && strlen(e_mac) == 64 && strlen(e_ccid) < IWD_CCID_SIZE &&
         strlen(e_rev) < 32 && (strcmp(e_kind, "tenant") == 0 || strcmp(e_kind, "iwddm") == 0);
    if (ok) {
        entry_mac(keyring(CURRENT), redis_key, e_ccid, e_kind, e_rev, (long long)expires, mac);
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

enum lookup_result { FOUND, UNKNOWN, UNAVAILABLE, UNUSABLE };

#define KEY_QUERY                                                                                                   \
    "SELECT k.kind, k.salt, k.verifier, t.ccid, t.db_host, t.db_port, t.db_name, t.db_user, t.db_password,"        \
    " t.db_ssl, (extract(epoch FROM t.updated_at) * 1000000)::bigint::text"                                          \
    " FROM iwd_control.api_key k JOIN iwd_control.tenant t USING (ccid)"                                             \
    " WHERE k.key_index = $1 AND 'iWD' = ANY (t.services)"

/* The tenant of a registry row of KEY_QUERY: its settings (password opened) and revision. */
static enum lookup_result tenant_from_row(PGresult *res, iwd_tenant_t *tenant, char revision[32])
{
    const char *ccid = PQgetvalue(res, 0, 3), *sealed = PQgetvalue(res, 0, 8);
    char *password = NULL;
    bool current;
    int rc;

    if (*sealed != '\0' && (password = open_password(sealed, &current)) == NULL) {
        iwd_log(IWD_LOG_ERROR, "a tenant database password cannot be decrypted with IWD_SECRET_KEY", "%.64s", ccid);
        return UNUSABLE;
    }
    rc = iwd_tenant_settings(tenant, ccid, PQgetvalue(res, 0, 4), atoi(PQgetvalue(res, 0, 5)), PQgetvalue(res, 0, 6),
                             PQgetvalue(res, 0, 7), password, strcmp(PQgetvalue(res, 0, 9), "t") == 0);
    if (password != NULL) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
    if (rc != IWD_OK) {
        iwd_log(IWD_LOG_ERROR, "a tenant's registry entry cannot be used (ccid or settings too long)", "%.64s", ccid);
        return UNUSABLE;
    }
    tenant->read_only = strcmp(PQgetvalue(res, 0, 0), "iwddm") == 0;
    snprintf(revision, 32, "%s", PQgetvalue(res, 0, 10));
    return FOUND;
}

/* Look a key up in the control database by its index, and confirm it by its salted hash. */
static enum lookup_result registry_lookup(iwd_thread_t *thread, const char *key, const char *index,
                                          iwd_tenant_t *tenant, char revision[32])
{
    PGconn *control = iwd_pg_control(thread);
    PGresult *res;
    char digest[65], verifier[65];
    const char *values[1] = {index};
    enum lookup_result result = UNKNOWN;

    if (control == NULL)
        return UNAVAILABLE;
    res = iwd_pg_exec(control, "control", "auth", KEY_QUERY, 1, values);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        return UNAVAILABLE;
    }
    if (PQntuples(res) == 1) {
        iwd_sha256_hex(key, digest);
        verifier_of(digest, PQgetvalue(res, 0, 1), verifier);
        if (strlen(PQgetvalue(res, 0, 2)) == 64 && CRYPTO_memcmp(verifier, PQgetvalue(res, 0, 2), 64) == 0)
            result = tenant_from_row(res, tenant, revision);
    }
    PQclear(res);
    return result;
}

/* --- failed authentications per client address ----------------------------------------------------- */

/* The client's address as 16 bytes (IPv4 mapped into IPv6). */
static void client_address(iwd_call_t *call, unsigned char out[16])
{
    struct sockaddr_storage ss;
    socklen_t len = call->req->conn->callbacks->get_peername(call->req->conn, (struct sockaddr *)&ss);

    memset(out, 0, 16);
    if (len > 0 && ss.ss_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    } else if (len > 0 && ss.ss_family == AF_INET6) {
        memcpy(out, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    }
}

static address_slot_t *address_slot(const unsigned char addr[16])
{
    unsigned long h = 5381;

    for (int i = 0; i < 16; i++)
        h = h * 33 + addr[i];
    return &addresses[h % ADDRESS_SLOTS];
}

/* Milliseconds the client's address stays refused; 0 when it is not. */
static int64_t address_blocked(iwd_call_t *call)
{
    unsigned char addr[16];
    address_slot_t *s;
    int64_t left = 0, now = iwd_now_ms();

    if (iwd_conf.auth_failure_limit == 0)
        return 0;
    client_address(call, addr);
    pthread_mutex_lock(&addresses_lock);
    s = address_slot(addr);
    if (memcmp(s->addr, addr, 16) == 0 && s->blocked_until_ms > now)
        left = s->blocked_until_ms - now;
    pthread_mutex_unlock(&addresses_lock);
    return left;
}

/*
 * Count a failed authentication of the client's address. A slot holding another address that is
 * refused keeps it until its time is out (a newcomer cannot free an attacker).
 */
static void address_failed(iwd_call_t *call)
{
    unsigned char addr[16];
    address_slot_t *s;
    int64_t now = iwd_now_ms();

    if (iwd_conf.auth_failure_limit == 0)
        return;
    client_address(call, addr);
    pthread_mutex_lock(&addresses_lock);
    s = address_slot(addr);
    if (memcmp(s->addr, addr, 16) != 0) {
        if (s->blocked_until_ms > now) {
            pthread_mutex_unlock(&addresses_lock);
            return;
        }
        *s = (address_slot_t){.first_ms = now};
        memcpy(s->addr, addr, 16);
    }
    if (now - s->first_ms > FAILURE_WINDOW_MS && s->blocked_until_ms <= now) {
        s->failures = 0;
        s->first_ms = now;
    }
    if (++s->failures >= iwd_conf.auth_failure_limit && s->blocked_until_ms <= now)
        s->blocked_until_ms = now + BLOCK_MS;
    pthread_mutex_unlock(&addresses_lock);
}

/* Answer 429 with Retry-After when the client's address is refused; IWD_ERR then. */
static int refuse_blocked(iwd_call_t *call)
{
    int64_t left = address_blocked(call);
    char *seconds;

    if (left == 0)
        return IWD_OK;
    iwd_metrics_blacklist();
    seconds = h2o_mem_alloc_pool(&call->req->pool, 24);
    snprintf(seconds, 24, "%lld", (long long)((left + 999) / 1000));
    h2o_add_header(&call->req->pool, &call->req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, seconds, strlen(seconds));
    iwd_respond_error(call, 429, "too many failed authentications from this address; retry in %s s", seconds);
    return IWD_ERR;
}

/* --- the requests ---------------------------------------------------------------------------------- */

static bool admin_key_matches(iwd_call_t *call)
{
    char *key = iwd_header(call->req, "x-api-key");
    size_t n = strlen(iwd_conf.admin_api_key);

    return key != NULL && strlen(key) == n && CRYPTO_memcmp(key, iwd_conf.admin_api_key, n) == 0;
}

bool iwd_auth_admin(iwd_call_t *call)
{
    if (address_blocked(call) > 0)
        return false;
    if (admin_key_matches(call))
        return true;
    if (iwd_header(call->req, "x-api-key") != NULL)
        address_failed(call);
    return false;
}

int iwd_auth_admin_request(iwd_call_t *call, const char *message)
{
    if (refuse_blocked(call) != IWD_OK)
        return IWD_ERR;
    if (iwd_auth_admin(call))
        return IWD_OK;
    iwd_respond_error(call, 401, "%s", message);
    return IWD_ERR;
}

/* The key's tenant: Redis (verified) with the thread's settings of that tenant, else the control database. */
static enum lookup_result resolve(iwd_thread_t *thread, const char *key, const char *index, iwd_tenant_t *tenant)
{
    char ccid[IWD_CCID_SIZE], revision[32];
    bool read_only;
    enum lookup_result result;

    if (entry_recall(thread, index, ccid, &read_only, revision) && tenant_recall(thread, ccid, revision, tenant)) {
        tenant->read_only = read_only;
        return FOUND;
    }
    result = registry_lookup(thread, key, index, tenant, revision);
    if (result == FOUND) {
        tenant_remember(thread, tenant, revision);
        entry_store(thread, index, tenant->ccid, tenant->read_only ? "iwddm" : "tenant", revision);
    }
    return result;
}

int iwd_auth_tenant(iwd_call_t *call, bool write)
{
    char *key = iwd_header(call->req, "x-api-key");
    char index[65];
    int known;

    if (key == NULL || *key == '\0')
        return iwd_respond_error(call, 401, "missing x-api-key header"), IWD_ERR;
    if (refuse_blocked(call) != IWD_OK)
        return IWD_ERR;
    iwd_key_index(key, index);
    known = local_recall(call->thread, index, &call->tenant);
    if (known < 0) {
        switch (resolve(call->thread, key, index, &call->tenant)) {
        case FOUND:
            known = 1;
            local_remember(call->thread, index, &call->tenant);
            break;
        case UNKNOWN:
            known = 0;
            local_remember(call->thread, index, NULL);
            break;
        case UNAVAILABLE:
            return iwd_respond_error(call, 503, "the tenant registry is not reachable"), IWD_ERR;
        case UNUSABLE:
            return iwd_respond_error(call, 503, "this tenant's registry entry cannot be used; see the sidecar log"),
                   IWD_ERR;
        }
    }
    if (known == 0) {
        address_failed(call);
        return iwd_respond_error(call, 401, "unknown x-api-key"), IWD_ERR;
    }
    call->has_tenant = true;
    if (write && call->tenant.read_only)
        return iwd_respond_error(call, 403, "this key is read-only (IWD_APIKEY_IWDDM)"), IWD_ERR;
    return IWD_OK;
}

void iwd_auth_forget_keys(iwd_thread_t *thread, PGresult *indexes)
{
    char redis_key[80];

    for (int i = 0; indexes != NULL && PQresultStatus(indexes) == PGRES_TUPLES_OK && i < PQntuples(indexes); i++) {
        redis_key_of(PQgetvalue(indexes, i, 0), redis_key);
        iwd_redis_del(thread, redis_key);
    }
    iwd_auth_forget_local();
}

/* --- the control schema ---------------------------------------------------------------------------- */

/* Run one statement of the migration; false (logged) when it fails. */
static bool migrate_step(PGconn *conn, const char *sql, int nparams, const char *const *values)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

    if (!ok)
        iwd_log(IWD_LOG_ERROR, "control database migration failed", "%s", PQresultErrorMessage(res));
    PQclear(res);
    return ok;
}

/* Schema 2: API keys by index and salted hash, from the SHA-256 digests schema 1 stored. */
static bool migrate_keys(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT key_hash FROM iwd_control.api_key");
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;

    ok = ok && migrate_step(conn,
                            "ALTER TABLE iwd_control.api_key ADD COLUMN key_index text, ADD COLUMN salt text,"
                            " ADD COLUMN verifier text",
                            0, NULL);
    for (int i = 0; ok && i < PQntuples(res); i++) {
        const char *digest = PQgetvalue(res, i, 0);
        unsigned char raw[SALT_BYTES];
        char index[65], salt[2 * SALT_BYTES + 1], verifier[65];
        const char *values[4] = {digest, index, salt, verifier};

        if (strlen(digest) != 64 || RAND_bytes(raw, sizeof(raw)) != 1) {
            iwd_log(IWD_LOG_ERROR, "control database migration failed", "an api_key row is not a SHA-256 digest");
            ok = false;
            break;
        }
        to_hex(raw, sizeof(raw), salt);
        key_index_of(digest, index);
        verifier_of(digest, salt, verifier);
        ok = migrate_step(conn,
                          "UPDATE iwd_control.api_key SET key_index = $2, salt = $3, verifier = $4 WHERE key_hash = $1",
                          4, values);
    }
    PQclear(res);
    return ok &&
           migrate_step(conn,
                        "ALTER TABLE iwd_control.api_key DROP COLUMN key_hash, ADD PRIMARY KEY (key_index),"
                        " ALTER COLUMN salt SET NOT NULL, ALTER COLUMN verifier SET NOT NULL",
                        0, NULL) &&
           migrate_step(conn, "UPDATE iwd_control.schema_version SET version = 2", 0, NULL);
}

/* Seal again under the current secret every password sealed under the admin key or the previous secret. */
static bool reseal_passwords(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT ccid, db_password FROM iwd_control.tenant"
                                 " WHERE db_password IS NOT NULL AND db_password <> '' FOR UPDATE");
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;

    for (int i = 0; ok && i < PQntuples(res); i++) {
        bool current;
        char *plain = open_password(PQgetvalue(res, i, 1), &current), *sealed;

        if (plain == NULL) {
            iwd_log(IWD_LOG_ERROR, "a tenant database password cannot be decrypted with IWD_SECRET_KEY,"
                                   " IWD_SECRET_KEY_PREVIOUS or IWD_ADMIN_API_KEY; provision the tenant again",
                    "%s", PQgetvalue(res, i, 0));
            continue;
        }
        if (!current) {
            const char *values[2] = {PQgetvalue(res, i, 0), sealed = iwd_encrypt_secret(plain)};
            ok = migrate_step(conn, "UPDATE iwd_control.tenant SET db_password = $2 WHERE ccid = $1", 2, values);
            free(sealed);
        }
        OPENSSL_cleanse(plain, strlen(plain));
        free(plain);
    }
    PQclear(res);
    return ok;
}

/*
 * The key that indexes API keys: read and opened, sealed again when an older secret sealed it; made at
 * the first start.
 */
static bool load_index_key(PGconn *conn)
{
    PGresult *res;
    char hex[65], *sealed, *plain;
    bool current, ok;

    if (!migrate_step(conn,
                      "CREATE TABLE IF NOT EXISTS iwd_control.secret (name text PRIMARY KEY, sealed text NOT NULL)", 0,
                      NULL))
        return false;
    res = PQexec(conn, "SELECT sealed FROM iwd_control.secret WHERE name = 'key_index' FOR UPDATE");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        iwd_log(IWD_LOG_ERROR, "control database migration failed", "%s", PQresultErrorMessage(res));
        PQclear(res);
        return false;
    }
    if (PQntuples(res) == 0) {
        if (RAND_bytes(index_key, sizeof(index_key)) != 1)
            abort();
        current = false;
    } else if ((plain = open_password(PQgetvalue(res, 0, 0), &current)) != NULL && strlen(plain) == 64 &&
               h2o_hex_decode(index_key, plain, 64) == 0) {
        OPENSSL_cleanse(plain, strlen(plain));
        free(plain);
    } else {
        iwd_log(IWD_LOG_ERROR, "the API key index key cannot be opened: IWD_SECRET_KEY (or IWD_SECRET_KEY_PREVIOUS)"
                               " is not the secret that sealed it", NULL);
        free(plain);
        PQclear(res);
        return false;
    }
    PQclear(res);
    if (current)
        return true;
    to_hex(index_key, sizeof(index_key), hex);
    sealed = iwd_encrypt_secret(hex);
    OPENSSL_cleanse(hex, sizeof(hex));
    ok = migrate_step(conn,
                      "INSERT INTO iwd_control.secret VALUES ('key_index', $1)"
                      " ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed",
                      1, (const char *[]){sealed});
    free(sealed);
    return ok;
}

int iwd_auth_migrate(PGconn *conn)
{
    PGresult *res;
    bool ok;

    if (!migrate_step(conn, "BEGIN", 0, NULL))
        return IWD_ERR;
    if (!load_index_key(conn)) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return IWD_ERR;
    }
    res = PQexec(conn, "SELECT version FROM iwd_control.schema_version");
    ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    if (ok && atoi(PQgetvalue(res, 0, 0)) < 2)
        ok = migrate_keys(conn);
    PQclear(res);
    ok = ok && reseal_passwords(conn) && migrate_step(conn, "COMMIT", 0, NULL);
    if (!ok) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return IWD_ERR;
    }
    return IWD_OK;
}
