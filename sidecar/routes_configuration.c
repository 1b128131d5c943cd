/*
 * iwd-sidecar routes of the configuration: departments, processes, categories, business calendars and the
 * classification and prioritization rules.
 */
#include "routes.h"

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/departments", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_departments()"},
    {.method = "GET", .pattern = "/departments/{name}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_department($1)"},
    {.method = "PUT", .pattern = "/departments/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.upsert_department($2::jsonb || jsonb_build_object('name', $1::text))", .body_arg = true,
     .body_required = true},
    {.method = "DELETE", .pattern = "/departments/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.delete_department($1)"},
    {.method = "GET", .pattern = "/processes", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_processes()"},
    {.method = "GET", .pattern = "/processes/{name}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_process($1)"},
    {.method = "PUT", .pattern = "/processes/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.upsert_process($2::jsonb || jsonb_build_object('name', $1::text))", .body_arg = true,
     .body_required = true},
    {.method = "DELETE", .pattern = "/processes/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.delete_process($1)"},
    {.method = "GET", .pattern = "/categories", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_categories()"},
    {.method = "GET", .pattern = "/categories/{name}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_category($1)"},
    {.method = "PUT", .pattern = "/categories/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.upsert_category($2::jsonb || jsonb_build_object('name', $1::text))", .body_arg = true,
     .body_required = true},
    {.method = "DELETE", .pattern = "/categories/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.delete_category($1)"},
    {.method = "GET", .pattern = "/calendars", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_calendars()"},
    {.method = "GET", .pattern = "/calendars/{name}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_calendar($1)"},
    {.method = "PUT", .pattern = "/calendars/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.upsert_calendar($2::jsonb || jsonb_build_object('name', $1::text))", .body_arg = true,
     .body_required = true},
    {.method = "DELETE", .pattern = "/calendars/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.delete_calendar($1)"},
    {.method = "GET", .pattern = "/rules", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_rules()"},
    {.method = "GET", .pattern = "/rules/{kind}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_rules($1)"},
    {.method = "GET", .pattern = "/rules/{kind}/{name}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_rule($1, $2)"},
    {.method = "PUT", .pattern = "/rules/{kind}/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.upsert_rule($3::jsonb || jsonb_build_object('kind', $1::text, 'name', $2::text))",
     .body_arg = true, .body_required = true},
    {.method = "DELETE", .pattern = "/rules/{kind}/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.delete_rule($1, $2)"},
};

const iwd_route_table_t iwd_routes_configuration = IWD_ROUTE_TABLE(routes);
