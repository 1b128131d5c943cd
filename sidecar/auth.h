/*
 * iwd-sidecar authentication: who may call a route. Provisioning and the API port's metrics take the admin
 * key; tenant routes take a tenant's API key (x-api-key), read-only for its IWD_APIKEY_IWDDM.
 */
#ifndef IWD_AUTH_H
#define IWD_AUTH_H

#include <stdbool.h>

#include "http.h"

/* Authenticate a tenant route's key, filling call->tenant; IWD_ERR after answering 401, 403, 429 or 503. */
int iwd_auth_tenant(iwd_call_t *call, bool write);
/* Whether the request carries the admin key (a wrong one counts as a failure of the client's address). */
bool iwd_auth_admin(iwd_call_t *call);
/* Authenticate an admin route; IWD_ERR after answering 429, or 401 with message. */
int iwd_auth_admin_request(iwd_call_t *call, const char *message);

#endif
