/*
 * libFuzzer target: the JSON body of the SQL routes (iwd_route_body in routes.c, the tables in routes_*.c). The
 * first input byte picks a route that takes a body, the rest is the body. What is accepted must reach SQL whole
 * (no NUL cutting the text short), parse as JSON, and carry the route's required member; what is refused gets
 * 400 or 413.
 */
#include <stdint.h>

#include "fuzz.h"

#include "routes.c"

#define FUZZ_MAX_BODY_BYTES 4096

#define FUZZ_MAX_BODY_ROUTES 256

static const iwd_route_t *body_routes[FUZZ_MAX_BODY_ROUTES];
static size_t nbody_routes;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    iwd_conf.max_body_bytes = FUZZ_MAX_BODY_BYTES;
    for (size_t t = 0; t < NTABLES; t++)
        for (size_t i = 0; i < tables[t]->n; i++)
            if (tables[t]->routes[i].body_arg && nbody_routes < FUZZ_MAX_BODY_ROUTES)
                body_routes[nbody_routes++] = &tables[t]->routes[i];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const iwd_route_t *r;
    char *method, *path, *body, *text, message[1024];
    h2o_req_t req;
    int status;

    if (size == 0)
        return 0;
    r = body_routes[data[0] % nbody_routes];
    method = fuzz_copy(r->method, strlen(r->method));
    path = fuzz_copy(r->pattern, strlen(r->pattern));
    body = fuzz_copy(data + 1, size - 1);
    fuzz_request_init(&req, method, strlen(r->method), path, strlen(r->pattern));
    req.entity = h2o_iovec_init(size > 1 ? body : NULL, size - 1);
    text = iwd_route_body(&req, r->body_required, r->required, &status, message, sizeof(message));
    if (text == NULL) {
        FUZZ_REQUIRE(status == 400 || status == 413, "status %d", status);
        FUZZ_REQUIRE(message[0] != '\0', "an empty message");
        FUZZ_REQUIRE(status != 413 || size - 1 > FUZZ_MAX_BODY_BYTES, "413 for %zu bytes", size - 1);
    } else {
        json_t *doc = json_loads(text, JSON_DECODE_ANY, NULL);
        FUZZ_REQUIRE(status == 0, "status %d with a body", status);
        FUZZ_REQUIRE(size > 1 || (!r->body_required && strcmp(text, "{}") == 0), "an empty body accepted");
        FUZZ_REQUIRE(size == 1 || strlen(text) == size - 1, "%zu of %zu bytes reach SQL", strlen(text), size - 1);
        FUZZ_REQUIRE(doc != NULL, "the text SQL receives is not JSON");
        if (r->required != NULL) {
            json_t *member = json_object_get(doc, r->required);
            FUZZ_REQUIRE(json_is_string(member) && json_string_length(member) > 0, "no \"%s\"", r->required);
        }
        json_decref(doc);
    }
    fuzz_request_release(&req);
    free(method);
    free(path);
    free(body);
    return 0;
}
