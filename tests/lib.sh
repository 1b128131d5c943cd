# shellcheck shell=bash disable=SC2034,SC2154 # (its variables are for the suites, $work theirs)
# Shared by the fault and hostile-input suites (sourced, not run): scripts/lib.sh's cluster, Redis and
# sidecar (built with AddressSanitizer) with the settings both suites use, each on a free loopback port,
# plus the tenant provisioning and the process readings they share. The caller sets $work (a fresh
# directory from work_dir) and $suite (the name printed on the result line) before sourcing, and calls
# servers_stop from its EXIT trap.

# shellcheck source=../scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
top=$iwd_top
pg_port=$(free_port); redis_port=$(free_port); http_port=$(free_port); metrics_port=$(free_port)
admin_key="admin-key-for-hardening-tests"
secret_key="server-secret-for-hardening-tests-0123456789"
redis_password="redis-secret-for-hardening-tests"
base="http://127.0.0.1:$http_port/iwd/v3"
metrics_url="http://127.0.0.1:$metrics_port/metrics"

# sql DB ARGS...: psql as the superuser over the cluster's socket, errors to stderr
sql() { local db=$1; shift; cluster_sql -d "$db" "$@"; }

# pg_init CONF: the suites' cluster in $work/pg (TCP on the loopback for the sidecar's tenant sessions),
# with CONF appended to postgresql.conf
pg_init() {
    cluster_init "$work/pg" "listen_addresses = '127.0.0.1'
max_connections = 200
$1"
}

# sidecar_start [ENV=VALUE...]: the ASan build (or $IWD_SIDECAR_BIN) on $http_port, extra settings as environment
# assignments
sidecar_start() {
    sidecar_launch "$work/sidecar.log" "$base/health/live" \
        env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY="$admin_key" IWD_SECRET_KEY="$secret_key" \
        IWD_CONTROL_DB="host=$pg_dir port=$pg_port dbname=control user=$pg_superuser" \
        IWD_REDIS_NODES="redis://127.0.0.1:$redis_port" IWD_REDIS_PASSWORD="$redis_password" IWD_THREADS=2 \
        IWD_METRICS_LISTEN=127.0.0.1 IWD_METRICS_PORT="$metrics_port" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 "$@" \
        "${IWD_SIDECAR_BIN:-$top/sidecar/iwd-sidecar-asan}"
}

# provision CCID DB KEY: a tenant through the admin API (the database is created first)
provision() {
    sql postgres -c "CREATE DATABASE $2" || return 1
    local body
    body=$(jq -n --arg c "$1" --arg d "$2" --arg k "$3" --argjson p "$pg_port" \
        '{tenant: {id: $c, name: ("Tenant " + $c), ccid: $c},
          iwd: {url: "http://iwd", db: {host: "127.0.0.1", port: $p, database: $d, user: "postgres", ssl: false},
                apiKeys: {IWD_APIKEY_TENANT: $k}}, iwdEmail: {url: "http://mail"}}')
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $admin_key" -H 'content-type: application/json' \
        --data-binary "$body" "$base/provisioning")" = 200 ]
}

build_sidecar() { flock /tmp/iwd-sidecar-build.lock make -s -C "$top/sidecar" asan >/dev/null; }

# children PID: the processes whose parent is PID (from /proc: procps may be missing)
children() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(sed 's/.*) //' "$p/stat" 2>/dev/null | cut -d' ' -f2)" = "$1" ] && echo "${p#/proc/}"
    done
}

# rss_kb PID: resident memory of a process in kB
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
