/*
 * libFuzzer target: routing. The input is "<method> <raw path and query>" (no space: a GET of the whole
 * input). The route found must take the request's method, its parameters must be the non-empty raw segments
 * decoded once (no NUL, nothing decoded twice or split again at an escaped '/'), and a path rebuilt from them
 * by percent-encoding must route to the same route with the same parameters; a request refused is refused
 * with 400, 404 or 405.
 */
#include <stdint.h>

#include "fuzz.h"

#include "routes.c"

static size_t count_params(const char *pattern)
{
    size_t n = 0;

    for (const char *p = pattern; *p != '\0'; p++)
        n += *p == '{';
    return n;
}

/*
 * Each parameter must be its raw segment decoded once by the reference decoder: the raw path (before '?',
 * one trailing '/' dropped) split at '/' here, independently of routes.c, against the prefix and pattern.
 */
static void check_params_raw(const iwd_route_t *r, const iwd_call_t *call, const char *path, size_t len)
{
    char pattern[256], *decoded = malloc(len + 1);
    const char *seg = path + 1, *end = path + len, *p = pattern + 1;
    int param = 0;

    snprintf(pattern, sizeof(pattern), "%s%s", IWD_API_PREFIX, r->pattern);
    if (len > 1 && path[len - 1] == '/')
        end--;
    while (*p != '\0' || seg <= end) {
        const char *seg_end = memchr(seg, '/', end - seg);
        size_t pattern_len = strcspn(p, "/");
        if (seg_end == NULL)
            seg_end = end;
        if (*p == '{') {
            long n = fuzz_reference_decode(seg, seg_end - seg, false, decoded);
            FUZZ_REQUIRE(n >= 0 && strlen(call->params[param]) == (size_t)n &&
                             memcmp(call->params[param], decoded, n) == 0,
                         "parameter %d is not its segment \"%.*s\" decoded once", param, (int)(seg_end - seg), seg);
            param++;
        }
        p += pattern_len + (p[pattern_len] == '/');
        seg = seg_end + 1;
        if (*p == '\0')
            break;
    }
    FUZZ_REQUIRE(seg > end, "the path has segments beyond the pattern %s", pattern);
    free(decoded);
}

/* The path of a route with these parameters, each percent-encoded, and the query (from '?') appended. */
static char *rebuild(const char *pattern, char **params, const char *query, size_t query_len, size_t *len)
{
    size_t size = strlen(IWD_API_PREFIX) + strlen(pattern) + query_len + 1;
    char *encoded[4], *out, *o;
    int k = 0;

    for (size_t i = 0; i < count_params(pattern); i++) {
        encoded[i] = fuzz_percent_encode(params[i], strlen(params[i]));
        size += strlen(encoded[i]);
    }
    o = out = malloc(size);
    o += sprintf(o, "%s", IWD_API_PREFIX);
    for (const char *p = pattern; *p != '\0';) {
        if (*p == '{') {
            o += sprintf(o, "%s", encoded[k]);
            free(encoded[k++]);
            p = strchr(p, '}') + 1;
        } else {
            *o++ = *p++;
        }
    }
    memcpy(o, query, query_len);
    o += query_len;
    *len = o - out;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data, *space = memchr(in, ' ', size);
    char *method = space != NULL ? fuzz_copy(in, space - in) : fuzz_copy("GET", 3);
    size_t method_len = space != NULL ? (size_t)(space - in) : 3;
    char *path = space != NULL ? fuzz_copy(space + 1, size - (space + 1 - in)) : fuzz_copy(in, size);
    size_t path_len = space != NULL ? size - (space + 1 - in) : size;
    h2o_req_t req;
    iwd_call_t call = {.req = &req};
    char message[256];
    int status;
    const iwd_route_t *r;

    fuzz_request_init(&req, method, method_len, path, path_len);
    r = resolve(&call, &status, message, sizeof(message));
    if (r == NULL) {
        FUZZ_REQUIRE(status == 400 || status == 404 || status == 405, "status %d", status);
        FUZZ_REQUIRE(message[0] != '\0', "an empty message");
        FUZZ_REQUIRE(call.nparams == 0, "%d parameters left on a refused request", call.nparams);
    } else {
        const char *query = req.query_at != SIZE_MAX ? path + req.query_at : "";
        size_t query_len = req.query_at != SIZE_MAX ? path_len - req.query_at : 0, again_len;
        char *params[4], *again_path, *again_method = fuzz_copy(method, method_len);
        h2o_req_t again;
        iwd_call_t again_call = {.req = &again};
        const iwd_route_t *again_route;

        FUZZ_REQUIRE(status == 0, "status %d with a route", status);
        FUZZ_REQUIRE(h2o_memis(method, method_len, r->method, strlen(r->method)), "route %s %s for another method",
                     r->method, r->pattern);
        FUZZ_REQUIRE((size_t)call.nparams == count_params(r->pattern), "%d parameters for %s", call.nparams,
                     r->pattern);
        FUZZ_REQUIRE(iwd_query_valid(&req), "a route for a malformed query");
        for (int i = 0; i < call.nparams; i++) {
            FUZZ_REQUIRE(call.params[i][0] != '\0', "an empty parameter");
            params[i] = call.params[i];
        }
        check_params_raw(r, &call, path, req.query_at != SIZE_MAX ? req.query_at : path_len);
        again_path = rebuild(r->pattern, params, query, query_len, &again_len);
        fuzz_request_init(&again, again_method, method_len, again_path, again_len);
        again_route = resolve(&again_call, &status, message, sizeof(message));
        FUZZ_REQUIRE(again_route == r, "%.*s routes elsewhere", (int)again_len, again_path);
        for (int i = 0; i < call.nparams; i++)
            FUZZ_REQUIRE(strcmp(again_call.params[i], call.params[i]) == 0, "parameter %d changed", i);
        fuzz_request_release(&again);
        free(again_path);
        free(again_method);
    }
    fuzz_request_release(&req);
    free(method);
    free(path);
    return 0;
}
