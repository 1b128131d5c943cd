/*
 * libFuzzer target: URL component decoding (iwd_url_decode) and the query string (iwd_query_valid,
 * iwd_query_param) on raw client bytes, checked against the reference decoder of fuzz.h.
 */
#include <stdbool.h>
#include <stdint.h>

#include "fuzz.h"

static void check_decode(const char *in, size_t len, bool plus_is_space)
{
    char *out = malloc(len + 1), *ref = malloc(len + 1);
    int rc = iwd_url_decode(in, len, plus_is_space, out);
    long ref_len = fuzz_reference_decode(in, len, plus_is_space, ref);

    FUZZ_REQUIRE((rc == IWD_OK) == (ref_len >= 0), "iwd_url_decode says %d, the reference %ld", rc, ref_len);
    if (rc == IWD_OK) {
        FUZZ_REQUIRE(strlen(out) == (size_t)ref_len, "decoded %zu bytes, expected %ld", strlen(out), ref_len);
        FUZZ_REQUIRE(memcmp(out, ref, ref_len) == 0, "decoded bytes differ from the reference");
    }
    free(out);
    free(ref);
}

/* The parameters checked per input: enough for any real query, and each check scans the whole query. */
#define CHECKED_PARAMS_MAX 32

/* Each parameter name of the query: when the query is valid, iwd_query_param finds the first value. */
static void check_query(const char *query, size_t len)
{
    size_t path_len = strlen("/iwd/v3/tasks?") + len;
    char *path = malloc(path_len > 0 ? path_len : 1), *method = fuzz_copy("GET", 3);
    h2o_req_t req;
    bool valid;
    int checked = 0;

    memcpy(path, "/iwd/v3/tasks?", strlen("/iwd/v3/tasks?"));
    memcpy(path + strlen("/iwd/v3/tasks?"), query, len);
    fuzz_request_init(&req, method, 3, path, path_len);
    FUZZ_REQUIRE(req.query_at == strlen("/iwd/v3/tasks"), "query_at %zu", req.query_at);
    valid = iwd_query_valid(&req);
    for (const char *p = query, *end = query + len; p < end && checked++ < CHECKED_PARAMS_MAX;) {
        const char *amp = memchr(p, '&', end - p), *stop = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', stop - p), *name_end = eq != NULL ? eq : stop;
        char *name = malloc(name_end - p + 1);
        memcpy(name, p, name_end - p);
        name[name_end - p] = '\0';
        if (strlen(name) == (size_t)(name_end - p)) {
            char *value = iwd_query_param(&req, name);
            char *ref = malloc(len + 1);
            long ref_len = -1;
            /* the first parameter of that name is the one returned */
            for (const char *f = query; f < end;) {
                const char *famp = memchr(f, '&', end - f), *fstop = famp != NULL ? famp : end;
                const char *feq = memchr(f, '=', fstop - f), *fname_end = feq != NULL ? feq : fstop;
                if ((size_t)(fname_end - f) == strlen(name) && memcmp(f, name, strlen(name)) == 0) {
                    const char *v = feq != NULL ? feq + 1 : fstop;
                    ref_len = fuzz_reference_decode(v, fstop - v, true, ref);
                    break;
                }
                f = fstop + 1;
            }
            if (valid)
                FUZZ_REQUIRE(value != NULL && ref_len >= 0, "a valid query lost parameter \"%s\"", name);
            if (value != NULL)
                FUZZ_REQUIRE(ref_len >= 0 && strlen(value) == (size_t)ref_len && memcmp(value, ref, ref_len) == 0,
                             "parameter \"%s\" decoded wrongly", name);
            free(ref);
        }
        free(name);
        p = stop + 1;
    }
    fuzz_request_release(&req);
    free(path);
    free(method);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;

    check_decode(in, size, false);
    check_decode(in, size, true);
    check_query(in, size);
    return 0;
}
