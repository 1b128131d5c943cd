/*
 * iwd-sidecar authentication (auth.h): the admin key of provisioning, a tenant's API key (found through the
 * registry, registry.h), and the client addresses that fail too often.
 *
 * Failed authentications (unknown tenant keys, wrong admin keys) are counted per client address; an
 * address with too many within a minute is refused with 429 for a minute before any lookup.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "clock.h"
#include "config.h"
#include "metrics.h"
#include "registry.h"

#define FAILURE_WINDOW_MS 60000
#define BLOCK_MS 60000
#define ADDRESS_SLOTS 4096

/* Failed authentications of one client address. */
typedef struct address_slot {
    unsigned char addr[16];
    int failures;
    int64_t first_ms;
    int64_t blocked_until_ms;
} address_slot_t;

static address_slot_t addresses[ADDRESS_SLOTS];
static pthread_mutex_t addresses_lock = PTHREAD_MUTEX_INITIALIZER;

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

int iwd_auth_tenant(iwd_call_t *call, bool write)
{
    char *key = iwd_header(call->req, "x-api-key");

    if (key == NULL || *key == '\0')
        return iwd_respond_error(call, 401, "missing x-api-key header"), IWD_ERR;
    if (refuse_blocked(call) != IWD_OK)
        return IWD_ERR;
    switch (iwd_registry_find(call->thread, key, &call->tenant)) {
    case IWD_KEY_FOUND:
        break;
    case IWD_KEY_UNKNOWN:
        address_failed(call);
        return iwd_respond_error(call, 401, "unknown x-api-key"), IWD_ERR;
    case IWD_REGISTRY_UNAVAILABLE:
        return iwd_respond_error(call, 503, "the tenant registry is not reachable"), IWD_ERR;
    case IWD_ENTRY_UNUSABLE:
        return iwd_respond_error(call, 503, "this tenant's registry entry cannot be used; see the sidecar log"),
               IWD_ERR;
    }
    call->has_tenant = true;
    if (write && call->tenant.read_only)
        return iwd_respond_error(call, 403, "this key is read-only (IWD_APIKEY_IWDDM)"), IWD_ERR;
    return IWD_OK;
}
