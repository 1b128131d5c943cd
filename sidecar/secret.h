/*
 * iwd-sidecar secrets: everything sealed, signed or hashed with the keys derived from IWD_SECRET_KEY
 * (and IWD_SECRET_KEY_PREVIOUS during a rotation): tenant database passwords, the index and salted hash of
 * API keys, and the signature of Redis entries. No I/O: the control database's copy of the index key is
 * read and written by control.c.
 */
#ifndef IWD_SECRET_H
#define IWD_SECRET_H

#include <stdbool.h>
#include <stddef.h>

/* Seal a tenant database password under IWD_SECRET_KEY (malloc'd text). */
char *iwd_secret_seal(const char *plain);
/*
 * Open a sealed password (malloc'd); NULL when no key this sidecar holds opens it. *current says whether it
 * was sealed under the current secret (when not, the caller may seal it again): IWD_SECRET_KEY_PREVIOUS or,
 * before IWD_SECRET_KEY existed, the admin key sealed it.
 */
char *iwd_secret_open(const char *stored, bool *current);

/* The index of an API key: how the registry finds it. Needs the index key (iwd_secret_index_key_open). */
void iwd_secret_key_index(const char *key, char index[65]);
/* What the registry stores of a new key: its index, a random salt and the salted hash. */
void iwd_secret_key_seal(const char *key, char index[65], char salt[33], char verifier[65]);
/* The same from the key's SHA-256 digest in hex (what schema 1 of the control database stored). */
void iwd_secret_key_seal_digest(const char *digest, char index[65], char salt[33], char verifier[65]);
/* Whether key is the one whose salted hash is stored_verifier (in constant time). */
bool iwd_secret_key_verify(const char *key, const char *salt, const char *stored_verifier);

/*
 * Set the index key from its sealed copy, or make a new random one when sealed is NULL; *current says
 * whether the copy is sealed under the current secret (a new key is not sealed yet). IWD_ERR when the
 * copy cannot be opened.
 */
int iwd_secret_index_key_open(const char *sealed, bool *current);
/* The index key sealed under the current secret, to be stored (malloc'd). */
char *iwd_secret_index_key_seal(void);

/* The signature of a Redis entry's text (HMAC-SHA256 under the current secret's cache key), in hex. */
void iwd_secret_cache_mac(const void *data, size_t len, char out[65]);

#endif
