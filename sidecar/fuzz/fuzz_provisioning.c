/*
 * libFuzzer target: the provisioning body (iwd_provisioning_parse). Accepted requests must hold what
 * provisioning.h promises (a valid ccid, keys and strings within their bounds, a port in range), refusals
 * must name a reason and allocate nothing, and the same bytes must always get the same answer.
 */
#include <stdint.h>

#include "fuzz.h"
#include "provisioning.h"

static void check_bounded(const char *field, const char *value, size_t max, bool required)
{
    FUZZ_REQUIRE(value != NULL || !required, "%s missing", field);
    if (value != NULL)
        FUZZ_REQUIRE(strlen(value) <= max, "%s has %zu bytes, more than %zu", field, strlen(value), max);
}

static void check_key(const char *field, const char *key)
{
    size_t n = strlen(key);

    FUZZ_REQUIRE(n >= IWD_API_KEY_MIN && n <= IWD_API_KEY_MAX, "%s has %zu characters", field, n);
    for (size_t i = 0; i < n; i++)
        FUZZ_REQUIRE(key[i] > ' ' && key[i] < 0x7f, "%s holds byte 0x%02x", field, (unsigned char)key[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = fuzz_copy(data, size), err[512], err_again[512];
    iwd_provisioning_t out, again;
    int rc = iwd_provisioning_parse(body, size, &out, err, sizeof(err));
    int rc_again = iwd_provisioning_parse(body, size, &again, err_again, sizeof(err_again));

    FUZZ_REQUIRE(rc == IWD_OK || rc == IWD_ERR, "rc %d", rc);
    FUZZ_REQUIRE(rc == rc_again, "two answers to the same body");
    if (rc != IWD_OK) {
        static const iwd_provisioning_t empty;
        FUZZ_REQUIRE(err[0] != '\0', "a refusal without a message");
        FUZZ_REQUIRE(strcmp(err, err_again) == 0, "two messages for the same body");
        FUZZ_REQUIRE(memcmp(&out, &empty, sizeof(out)) == 0, "a refused request left fields behind");
    } else {
        FUZZ_REQUIRE(iwd_ccid_valid(out.ccid), "ccid \"%s\" accepted", out.ccid);
        FUZZ_REQUIRE(strlen(out.ccid) >= 1 && strlen(out.ccid) <= IWD_CCID_MAX, "ccid length");
        check_bounded("tenant.id", out.tenant_id, IWD_NAME_MAX, true);
        check_bounded("tenant.name", out.name, IWD_NAME_MAX, false);
        check_bounded("iwd.db.host", out.host, IWD_DB_HOST_MAX, true);
        check_bounded("iwd.db.database", out.database, IWD_DB_IDENT_MAX, true);
        check_bounded("iwd.db.user", out.user, IWD_DB_IDENT_MAX, true);
        check_bounded("iwd.db.password", out.password, IWD_DB_PASSWORD_MAX, false);
        check_bounded("iwd.url", out.iwd_url, IWD_URL_MAX, false);
        check_bounded("iwdEmail.url", out.email_url, IWD_URL_MAX, false);
        check_bounded("tenant.gws", out.gws, IWD_GWS_MAX, false);
        FUZZ_REQUIRE(out.port >= 1 && out.port <= 65535, "port %d", out.port);
        check_key("IWD_APIKEY_TENANT", out.tenant_key);
        if (out.dm_key != NULL) {
            check_key("IWD_APIKEY_IWDDM", out.dm_key);
            FUZZ_REQUIRE(strcmp(out.dm_key, out.tenant_key) != 0, "the two keys are equal");
        }
        FUZZ_REQUIRE(strcmp(out.ccid, again.ccid) == 0 && strcmp(out.tenant_key, again.tenant_key) == 0 &&
                         out.port == again.port && out.ssl == again.ssl,
                     "two readings of the same body");
        iwd_provisioning_free(&again);
        iwd_provisioning_free(&out);
    }
    free(body);
    return 0;
}
