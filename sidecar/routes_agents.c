/* iwd-sidecar routes of agents: their skills, capacity and state, and the next task an agent takes. */
#include "routes.h"

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/agents", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_agents()"},
    {.method = "GET", .pattern = "/agents/{id}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_agent($1)"},
    {.method = "PUT", .pattern = "/agents/{id}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.upsert_agent($2::jsonb || jsonb_build_object('id', $1::text))", .body_arg = true,
     .body_required = true},
    {.method = "DELETE", .pattern = "/agents/{id}", .auth = IWD_AUTH_WRITE, .sql = "SELECT iwd.delete_agent($1)"},
    {.method = "POST", .pattern = "/agents/{id}/state", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.set_agent_state($1, $2::jsonb->>'state')", .body_arg = true, .body_required = true,
     .required = "state"},
    {.method = "POST", .pattern = "/agents/{id}/next", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.next_task($1, coalesce(($2::jsonb->>'reserveSeconds')::int, 30))", .body_arg = true,
     .on_null = 204},
};

const iwd_route_table_t iwd_routes_agents = IWD_ROUTE_TABLE(routes);
