#!/usr/bin/env bash
# Moves a tenant's database to another PostgreSQL server, with a short pause of its writes (docs/operations.md,
# Moving a tenant). Reads go on throughout; writes are answered 503 with Retry-After while paused.
#   1. the source database is made read-only (default_transaction_read_only) and its sessions ended, so
#      that every change from then on waits: the sidecars' writes get 25006, answered 503 "retry";
#   2. pg_dump of the source, CREATE DATABASE and pg_restore (one transaction) on the target server; the
#      rows of both are compared;
#   3. the registry (iwd_control.tenant in the control database) names the new server, in one statement;
#   4. the source database refuses connections from then on (kept for a way back, unless --drop-source),
#      and with --redis the tenant's cached key entries are forgotten, so that every sidecar replica looks
#      the tenant up again at once (else within 60 s, the entries' life); a sidecar thread's own memory
#      of a key lasts 5 s.
# A failure before step 3 undoes step 1 and drops what step 2 created: the tenant stays where it was.
#
# Usage: scripts/move-tenant.sh --ccid CCID --control CONNINFO --source CONNINFO --target CONNINFO
#            --db-host HOSTS [--db-port PORT] [--target-db NAME] [--redis HOST:PORT] [--drop-source]
# Connection settings are libpq key=value strings (a later keyword wins: the script adds dbname= to them).
#   --control   the control database (IWD_CONTROL_DB), as a role that may update iwd_control.tenant
#   --source    the tenant's database on its current server, as a superuser
#   --target    any database of the target server (e.g. dbname=postgres), as a superuser; the server
#               must have the same iwd release installed and preloaded
#   --db-host   the new server as the sidecars reach it: provisioning's iwd.db.host (a host, or the list
#               host:port,host:port of a replicated server); --db-port: its port (5432) for hosts without one
#   --target-db the database's name on the target (the source's by default; a tenant login must be a
#               member of the new database's iwd_app_<name> role, which CREATE EXTENSION creates)
#   --redis     the sidecars' Redis (REDISCLI_AUTH holds its password when it has one)
set -euo pipefail

# usage [STATUS]: the usage text (on standard error unless STATUS is 0), then exit with STATUS (2)
usage() {
    local status=${1:-2}
    sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&"$([ "$status" = 0 ] && echo 1 || echo 2)"
    exit "$status"
}
die() { echo "move-tenant: $*" >&2; exit 1; }

ccid="" control="" source="" target="" db_host="" db_port=5432 target_db="" redis="" drop_source=false
while [ $# -gt 0 ]; do
    case "$1" in
        --ccid) ccid=${2:-}; shift 2 ;;
        --control) control=${2:-}; shift 2 ;;
        --source) source=${2:-}; shift 2 ;;
        --target) target=${2:-}; shift 2 ;;
        --db-host) db_host=${2:-}; shift 2 ;;
        --db-port) db_port=${2:-}; shift 2 ;;
        --target-db) target_db=${2:-}; shift 2 ;;
        --redis) redis=${2:-}; shift 2 ;;
        --drop-source) drop_source=true; shift ;;
        -h|--help) usage 0 ;;
        *) echo "move-tenant: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$ccid" ] && [ -n "$control" ] && [ -n "$source" ] && [ -n "$target" ] && [ -n "$db_host" ] || usage
[[ "$db_host" =~ ^[^[:space:],]+(,[^[:space:],]+)*$ ]] || die "--db-host must be a host or a comma-separated list"
[[ "$db_port" =~ ^[0-9]{1,5}$ ]] && [ "$db_port" -ge 1 ] && [ "$db_port" -le 65535 ] || die "--db-port must be 1 to 65535"

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir)
# q CONNINFO SQL [VAR=VALUE...]: one statement, unaligned, stops at an error; variables for :'VAR'
q() {
    local conninfo=$1 sql=$2; shift 2
    local vars=()
    for v in "$@"; do vars+=(-v "$v"); done
    "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 "${vars[@]}" -d "$conninfo" <<<"$sql"
}
now_ms() { date +%s%3N; }

# --- checks before anything changes ---------------------------------------------------------------------
registry_db=$(q "$control" "SELECT db_name FROM iwd_control.tenant WHERE ccid = :'ccid'" ccid="$ccid") ||
    die "cannot read the registry"
[ -n "$registry_db" ] || die "no tenant $ccid in the registry"
src_db=$(q "$source" "SELECT current_database()") || die "cannot reach the source database"
target_db=${target_db:-$src_db}
[ "$registry_db" = "$src_db" ] || die "the registry has tenant $ccid in database $registry_db, not $src_db"
[ "$(q "$source" "SELECT count(*) FROM pg_extension WHERE extname = 'iwd'")" = 1 ] || die "$src_db has no iwd"
[ "$(q "$target" "SELECT count(*) FROM pg_database WHERE datname = :'db'" db="$target_db")" = 0 ] ||
    die "database $target_db exists on the target server already"
[ "$(q "$target" "SELECT default_version FROM pg_available_extensions WHERE name = 'iwd'")" = \
  "$(q "$source" "SELECT extversion FROM pg_extension WHERE extname = 'iwd'")" ] ||
    die "the target server does not have the source's iwd release"
case ",$(q "$target" "SHOW shared_preload_libraries" | tr -d ' ')," in
    *,iwd,*) ;;
    *) die "the target server does not preload iwd (shared_preload_libraries)" ;;
esac
# key=value conninfos: a later keyword wins, so these reach another database of the same server
target_conninfo="$target dbname='${target_db//\'/\\\'}'"
source_admin="$source dbname=postgres"

tmp=$(mktemp -d /tmp/iwd-move.XXXXXX)
paused=false created=false moved=false
undo() {
    if ! $moved; then
        $created && q "$target" "DROP DATABASE IF EXISTS :\"db\"" db="$target_db" >/dev/null 2>&1
        $paused && q "$source_admin" "ALTER DATABASE :\"db\" RESET default_transaction_read_only" db="$src_db" >/dev/null 2>&1 &&
            echo "move-tenant: not moved; $src_db accepts writes again" >&2
    fi
    rm -rf "$tmp"
}
trap undo EXIT

# end_sessions DB CONNINFO [SINCE]: the sessions of DB that started before SINCE (every other one without it)
# ended, and gone (at most 60 s); later ones started with the database's new settings
end_sessions() {
    local sql="SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :'db'
               AND pid <> pg_backend_pid() AND backend_start <= coalesce(nullif(:'since', '')::timestamptz, 'infinity')"
    for _ in $(seq 1 300); do
        [ "$(q "$2" "$sql" db="$1" since="${3:-}")" = 0 ] && return 0
        sleep 0.2
    done
    die "sessions of $1 do not end"
}

# --- 1. the pause ----------------------------------------------------------------------------------------
t_pause=$(now_ms)
q "$source_admin" "ALTER DATABASE :\"db\" SET default_transaction_read_only = on" db="$src_db" >/dev/null
paused=true
end_sessions "$src_db" "$source_admin" "$(q "$source_admin" "SELECT clock_timestamp()")"
echo "move-tenant: $src_db paused (read-only)"

# --- 2. the copy -----------------------------------------------------------------------------------------
"$bindir/pg_dump" -Fc -f "$tmp/tenant.dump" -d "$source" || die "pg_dump failed"
q "$target" "CREATE DATABASE :\"db\"" db="$target_db" >/dev/null
created=true
"$bindir/pg_restore" --exit-on-error --single-transaction -d "$target_conninfo" "$tmp/tenant.dump" ||
    die "pg_restore failed"
counts="SELECT (SELECT count(*) FROM iwd.task_all) || ' tasks, ' || (SELECT count(*) FROM iwd.task_event) || ' events, '
               || (SELECT coalesce(max(id), 0) FROM iwd.task_event) || ' last event, '
               || (SELECT count(*) FROM iwd.agent) || ' agents, ' || (SELECT count(*) FROM iwd.category) || ' categories'"
before=$(q "$source" "$counts")
after=$(q "$target_conninfo" "$counts")
[ "$before" = "$after" ] || die "the copy differs: source $before, target $after"
echo "move-tenant: copied to $target_db ($after)"

# --- 3. the registry -------------------------------------------------------------------------------------
q "$control" "UPDATE iwd_control.tenant SET db_host = :'host', db_port = :'port'::int, db_name = :'db', updated_at = now()
              WHERE ccid = :'ccid'" host="$db_host" port="$db_port" db="$target_db" ccid="$ccid" >/dev/null ||
    die "the registry could not be updated"
moved=true
t_moved=$(now_ms)

# --- 4. the source closed, the caches told -----------------------------------------------------------------
q "$source_admin" "ALTER DATABASE :\"db\" WITH ALLOW_CONNECTIONS false" db="$src_db" >/dev/null
end_sessions "$src_db" "$source_admin"
if [ -n "$redis" ]; then
    # the sidecars' Redis entries of the tenant's keys (registry.c: "iwd:key:<key index>")
    for index in $(q "$control" "SELECT key_index FROM iwd_control.api_key WHERE ccid = :'ccid'" ccid="$ccid"); do
        redis-cli -h "${redis%:*}" -p "${redis##*:}" --no-auth-warning DEL "iwd:key:$index" >/dev/null ||
            echo "move-tenant: warning: Redis entries not deleted; sidecars follow within 60 s" >&2
    done
fi
if $drop_source; then
    q "$source_admin" "DROP DATABASE :\"db\"" db="$src_db" >/dev/null
    echo "move-tenant: $src_db dropped"
else
    echo "move-tenant: $src_db kept, closed to connections (DROP DATABASE it once the move is confirmed)"
fi
echo "move-tenant: tenant $ccid moved to $target_db on $db_host; writes paused $((t_moved - t_pause)) ms"
