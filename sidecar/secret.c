/*
 * iwd-sidecar secrets (secret.h).
 *
 * The keys the sidecar uses come from IWD_SECRET_KEY, which only sidecars hold: derived from it
 * (HKDF-SHA256, one label each), the key that seals tenant database passwords (AES-256-GCM) and the key
 * that signs what the sidecar caches in Redis (HMAC-SHA256); sealed by it, the random key that indexes API
 * keys (kept in the control database, so that rotating the secret leaves the index valid). The admin key
 * only guards provisioning. IWD_SECRET_KEY_PREVIOUS, during a rotation, still opens what the previous
 * secret sealed; at start every such secret is sealed again under the current one (control.c).
 *
 * API keys are never stored: a key is found by its index, HMAC(index key, SHA-256(key)), and confirmed by
 * a salted hash, HMAC(salt, SHA-256(key)), with a random salt per key.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "config.h"
#include "iwd.h"
#include "secret.h"

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

/* The key that indexes API keys: random, sealed in iwd_control.secret; loaded at start (control.c). */
static unsigned char index_key[32];

static const char hex_digits[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

/* SHA-256 of a string, in hex. */
static void sha256_hex(const char *in, char out[65])
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

char *iwd_secret_seal(const char *plain)
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

char *iwd_secret_open(const char *stored, bool *current)
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

void iwd_secret_key_index(const char *key, char index[65])
{
    char digest[65];

    sha256_hex(key, digest);
    key_index_of(digest, index);
}

void iwd_secret_key_seal_digest(const char *digest, char index[65], char salt[2 * SALT_BYTES + 1], char verifier[65])
{
    unsigned char raw[SALT_BYTES];

    if (RAND_bytes(raw, sizeof(raw)) != 1)
        abort();
    to_hex(raw, sizeof(raw), salt);
    key_index_of(digest, index);
    verifier_of(digest, salt, verifier);
}

void iwd_secret_key_seal(const char *key, char index[65], char salt[2 * SALT_BYTES + 1], char verifier[65])
{
    char digest[65];

    sha256_hex(key, digest);
    iwd_secret_key_seal_digest(digest, index, salt, verifier);
}

bool iwd_secret_key_verify(const char *key, const char *salt, const char *stored_verifier)
{
    char digest[65], verifier[65];

    sha256_hex(key, digest);
    verifier_of(digest, salt, verifier);
    return strlen(stored_verifier) == 64 && CRYPTO_memcmp(verifier, stored_verifier, 64) == 0;
}

int iwd_secret_index_key_open(const char *sealed, bool *current)
{
    char *plain;

    if (sealed == NULL) {
        if (RAND_bytes(index_key, sizeof(index_key)) != 1)
            abort();
        *current = false;
        return IWD_OK;
    }
    if ((plain = iwd_secret_open(sealed, current)) != NULL && strlen(plain) == 64 &&
        h2o_hex_decode(index_key, plain, 64) == 0) {
        OPENSSL_cleanse(plain, strlen(plain));
        free(plain);
        return IWD_OK;
    }
    free(plain);
    return IWD_ERR;
}

char *iwd_secret_index_key_seal(void)
{
    char hex[65], *sealed;

    to_hex(index_key, sizeof(index_key), hex);
    sealed = iwd_secret_seal(hex);
    OPENSSL_cleanse(hex, sizeof(hex));
    return sealed;
}

/* --- Redis entries -------------------------------------------------------------------------------- */

void iwd_secret_cache_mac(const void *data, size_t len, char out[65])
{
    hmac_hex(keyring(CURRENT)->cache_mac, sizeof(keyring(CURRENT)->cache_mac), data, len, out);
}
