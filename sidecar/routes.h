/*
 * iwd-sidecar routes: every route under /iwd/v3, one table per REST resource (routes_<resource>.c), and the
 * router (routes.c) that matches a request, checks its key and runs its route. Most routes are one call of
 * the extension's SQL API whose jsonb result is the response body: the table says which SQL, which
 * arguments and which statuses. A new resource is a new routes_<resource>.c with its table, listed in
 * routes.c.
 */
#ifndef IWD_ROUTES_H
#define IWD_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

typedef enum iwd_route_auth {
    IWD_AUTH_NONE,
    IWD_AUTH_ADMIN, /* the cluster admin key */
    IWD_AUTH_READ,  /* a tenant key, the read-only IWD_APIKEY_IWDDM included */
    IWD_AUTH_WRITE, /* a tenant's IWD_APIKEY_TENANT */
} iwd_route_auth_t;

/* A route, written with designated initializers: what is left out is NULL, false or the default. */
typedef struct iwd_route {
    const char *method;
    const char *pattern;        /* after /iwd/v3; "{x}" matches one segment */
    iwd_route_auth_t auth;
    const char *unauthorized;   /* an admin route's 401 message */
    int (*handler)(iwd_call_t *call); /* answers the request (IWD_OK); NULL for an SQL route */
    const char *sql;            /* $n arguments are text: path parameters first, then the body when body_arg */
    bool body_arg;              /* pass the body (a JSON object; "{}" when empty) as the last argument */
    bool body_required;
    bool actor_arg;             /* pass who calls (iwd_route_actor) as the last argument: a supervisor's action */
    int success;                /* status of a non-NULL result; 0: 200 */
    int on_null;                /* status of a NULL result; 0: 404 */
    const char *required;       /* a body member that must be a non-empty string */
    void (*before)(iwd_call_t *call); /* an SQL route's side effect, run as its call is sent (e.g. a wake-up) */
} iwd_route_t;

/* The routes of one resource. */
typedef struct iwd_route_table {
    const iwd_route_t *routes;
    size_t n;
} iwd_route_table_t;

#define IWD_ROUTE_TABLE(array) {(array), sizeof(array) / sizeof((array)[0])}

extern const iwd_route_table_t iwd_routes_health;         /* routes_health.c */
extern const iwd_route_table_t iwd_routes_provisioning;   /* routes_provisioning.c */
extern const iwd_route_table_t iwd_routes_tasks;          /* routes_tasks.c */
extern const iwd_route_table_t iwd_routes_agents;         /* routes_agents.c */
extern const iwd_route_table_t iwd_routes_configuration;  /* routes_configuration.c */
extern const iwd_route_table_t iwd_routes_events;         /* routes_events.c */
extern const iwd_route_table_t iwd_routes_webhooks;       /* routes_webhooks.c */
extern const iwd_route_table_t iwd_routes_mailboxes;      /* routes_mailboxes.c */
extern const iwd_route_table_t iwd_routes_router;         /* routes_router.c */
extern const iwd_route_table_t iwd_routes_keys;           /* routes_keys.c */
extern const iwd_route_table_t iwd_routes_reports;        /* routes_reports.c */

/* Route a request and answer it (now, or from the loop once its SQL call's result is in); IWD_OK. */
int iwd_route(iwd_call_t *call);

/*
 * The request body as a NUL-terminated JSON text for SQL ("{}" when empty and not required), holding member
 * (when not NULL) as a non-empty string; NULL when refused, with the status (400, 413) and the message of the
 * answer. What an SQL route with body_arg passes; a handler's body goes through it too.
 */
char *iwd_route_body(h2o_req_t *req, bool required, const char *member, int *status, char *message, size_t size);

/* The request header naming the person who acts with the key, and its longest value. */
#define IWD_USER_HEADER "x-iwd-user"
#define IWD_USER_BYTES_MAX 64

/*
 * Who performs a supervisor's action, recorded as the actor of the events it causes: the tenant's ccid, or
 * "<ccid>/<user>" when the request names its user in x-iwd-user (1 to 64 printable ASCII characters, no '/'
 * and no space at either end, given once), in the request pool. NULL when that header is refused, with the
 * message of the 400.
 */
const char *iwd_route_actor(iwd_call_t *call, char *message, size_t size);

/* Print every route, "METHOD /iwd/v3/pattern" a line (iwd-sidecar --routes). */
void iwd_print_routes(void);

#endif
