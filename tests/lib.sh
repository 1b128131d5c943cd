# Shared by the fault and hostile-input suites (sourced, not run): a throwaway PostgreSQL cluster
# preloading iwd, a redis-server and the sidecar built with AddressSanitizer, each on a free loopback
# port, plus the check helpers. The caller sets $work (a fresh directory) and $suite (the name printed
# on the result line) before sourcing, and calls servers_stop from its EXIT trap.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir=$(/usr/lib/postgresql/15/bin/pg_config --bindir)
passed=0; failed=0
as_user=()
mkdir -p "$work/pg"
chmod 755 "$work"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$work/pg"
    as_user=(runuser -u postgres --)
fi

# free_port: a TCP port nobody listens on
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port); redis_port=$(free_port); http_port=$(free_port); metrics_port=$(free_port)
admin_key="admin-key-for-hardening-tests"
secret_key="server-secret-for-hardening-tests-0123456789"
redis_password="redis-secret-for-hardening-tests"
base="http://127.0.0.1:$http_port/iwd/v3"
metrics_url="http://127.0.0.1:$metrics_port/metrics"
sidecar_pid=""

check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1"
    else failed=$((failed + 1)); echo "not ok - $1: expected '$2', got '$3'"; return 1; fi
}
check_match() { # check_match NAME REGEX ACTUAL
    if [[ "$3" =~ $2 ]]; then passed=$((passed + 1)); echo "ok - $1"
    else failed=$((failed + 1)); echo "not ok - $1: '${3:0:300}' does not match /$2/"; return 1; fi
}
fail_setup() { echo "$1"; echo "$suite: $passed passed, $((failed + 1)) failed"; exit 1; }

# sql DB ARGS...: psql as the superuser over the cluster's socket, errors to stderr
sql() { local db=$1; shift; "${as_user[@]}" "$bindir/psql" -X -q -At -h "$work/pg" -p "$pg_port" -v ON_ERROR_STOP=1 -d "$db" "$@"; }

# pg_init CONF: initdb, with CONF appended to postgresql.conf
pg_init() {
    "${as_user[@]}" "$bindir/initdb" -D "$work/pg/data" -A trust >/dev/null || return 1
    cat >> "$work/pg/data/postgresql.conf" <<CONF
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work/pg'
shared_preload_libraries = 'iwd'
max_connections = 200
$1
CONF
}
pg_start() { "${as_user[@]}" "$bindir/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -t 120 start >>"$work/pg_ctl.log" 2>&1; }
postmaster_pid() { head -1 "$work/pg/data/postmaster.pid" 2>/dev/null; }
# pg_wait: until the server accepts queries again (after a crash and its recovery), at most 60 s
pg_wait() {
    for _ in $(seq 1 600); do
        sql postgres -c 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

redis_start() {
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --requirepass "$redis_password" \
        --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log" --dir "$work" >/dev/null
    for _ in $(seq 1 50); do [ -s "$work/redis.pid" ] && return 0; sleep 0.1; done
    return 1
}
redis_cli() { redis-cli -p "$redis_port" -a "$redis_password" --no-auth-warning "$@"; }

# sidecar_start [ENV=VALUE...]: the ASan build (or $IWD_SIDECAR_BIN) on $http_port, extra settings as environment
# assignments
sidecar_start() {
    env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY="$admin_key" IWD_SECRET_KEY="$secret_key" \
        IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control user=postgres" \
        IWD_REDIS_NODES="redis://127.0.0.1:$redis_port" IWD_REDIS_PASSWORD="$redis_password" IWD_THREADS=2 \
        IWD_METRICS_LISTEN=127.0.0.1 IWD_METRICS_PORT="$metrics_port" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 "$@" \
        "${IWD_SIDECAR_BIN:-$top/sidecar/iwd-sidecar-asan}" >>"$work/sidecar.log" 2>&1 &
    sidecar_pid=$!
    for _ in $(seq 1 200); do
        curl -sf "$base/health/live" >/dev/null && return 0
        kill -0 "$sidecar_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the sidecar did not start:"; tail -5 "$work/sidecar.log"; return 1
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

servers_stop() {
    [ -n "$sidecar_pid" ] && kill "$sidecar_pid" 2>/dev/null
    redis_cli shutdown nosave >/dev/null 2>&1
    "${as_user[@]}" "$bindir/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1
    sleep 0.2
}

# children PID: the processes whose parent is PID (from /proc: procps may be missing)
children() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(sed 's/.*) //' "$p/stat" 2>/dev/null | cut -d' ' -f2)" = "$1" ] && echo "${p#/proc/}"
    done
}

# rss_kb PID: resident memory of a process in kB
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
