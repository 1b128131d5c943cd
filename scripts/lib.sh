# shellcheck shell=bash disable=SC2034,SC2154 # (its variables are for the scripts that source it, $suite theirs)
# Shared by make run, the test suites and the benchmarks (sourced, not run): the PostgreSQL programs of
# $PG_CONFIG, free loopback ports, a throwaway cluster preloading iwd, a redis-server, the sidecar, and
# the check helpers with the result line "SUITE: N passed, M failed".
#
# PostgreSQL refuses to run as root, so as root the server programs (initdb, pg_ctl, pg_basebackup) run
# as the "postgres" user, from "/" and on files under a directory it can reach (a work directory under
# /tmp, or make run's state directory): never on the checkout, which may sit in a directory postgres
# cannot enter (a clone under /root). The clients (psql, createdb, pg_dump, pgbench, the sidecar) run as
# the invoking user and log in as "postgres", the cluster's superuser whoever runs it (initdb -U
# postgres, trust authentication), so they read the checkout's files themselves.
#
# A script sets $suite (the name on its result line) before sourcing when it counts checks. Every
# function works under set -e too (make run and the benchmarks use it).

iwd_top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# the top Makefile's pg_config (make exports PG_CONFIG to the scripts it runs), unless told otherwise
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir) || { echo "$PG_CONFIG does not run: set PG_CONFIG or run make deps" >&2; exit 1; }
pg_superuser=postgres
# as_client: the prefix of a client program given its own -h and -p (psql, createdb, pg_dump...)
as_client=(env PGUSER="$pg_superuser")
passed=0; failed=0
sidecar_pid=""; redis_port=""; redis_password=""; pg_data=""

# free_port: a TCP port nobody listens on
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# as_postgres COMMAND...: runs a server program as the cluster's owner: "postgres" when root, else the
# invoking user; from "/", so that a checkout postgres cannot enter is never its working directory
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# owned_by_postgres DIR...: makes the directories and hands them to the cluster's owner
owned_by_postgres() {
    mkdir -p "$@" || return 1
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$@"; fi
}

# work_dir NAME: a fresh directory /tmp/iwd-NAME.XXXXXX that postgres can enter (mode 0755)
work_dir() {
    local dir
    dir=$(mktemp -d "/tmp/iwd-$1.XXXXXX") || return 1
    chmod 755 "$dir" && echo "$dir"
}

# --- the cluster -----------------------------------------------------------------------------------
# cluster_init DIR [CONF [INITDB-ARGS...]]: a new cluster: its data in DIR/data, its socket in DIR, its
# log DIR/log; on port $pg_port (a free one unless set), listening on no TCP address, preloading iwd,
# then CONF (postgresql.conf lines, which may override these) appended.
cluster_init() {
    local conf=${2:-}
    pg_dir=$1
    pg_data=$pg_dir/data
    pg_log=$pg_dir/log
    pg_port=${pg_port:-$(free_port)}
    owned_by_postgres "$pg_dir" || return 1
    chmod 755 "$pg_dir"
    as_postgres "$bindir/initdb" -D "$pg_data" -A trust -U "$pg_superuser" "${@:3}" >"$pg_dir/initdb.log" 2>&1 ||
        { cat "$pg_dir/initdb.log"; return 1; }
    cat >>"$pg_data/postgresql.conf" <<CONF
port = $pg_port
listen_addresses = ''
unix_socket_directories = '$pg_dir'
shared_preload_libraries = 'iwd'
$conf
CONF
}

# cluster_start [PG_CTL-ARGS...]: starts the cluster and waits (at most 120 s) until it accepts
# connections; on failure shows the end of its log
cluster_start() {
    as_postgres "$bindir/pg_ctl" -D "$pg_data" -l "$pg_log" -w -t 120 "$@" start >/dev/null 2>&1 ||
        { echo "PostgreSQL did not start:"; tail -n 20 "$pg_log"; return 1; }
}

# cluster_stop [MODE]: stops the cluster if it runs (MODE: fast, the default, or immediate)
cluster_stop() {
    [ -n "$pg_data" ] && [ -f "$pg_data/postmaster.pid" ] || return 0
    as_postgres "$bindir/pg_ctl" -D "$pg_data" -m "${1:-fast}" -w stop >/dev/null 2>&1
}

# cluster_client PROGRAM ARGS...: a client program of $bindir connected to the cluster as its superuser
cluster_client() {
    local program=$1; shift
    PGHOST=$pg_dir PGPORT=$pg_port PGUSER=$pg_superuser "$bindir/$program" "$@"
}

# cluster_sql ARGS...: psql on the cluster (unaligned, tuples only, quiet, stops at the first error)
cluster_sql() { cluster_client psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# cluster_wait: until the server accepts queries again (after a crash and its recovery), at most 60 s
cluster_wait() {
    for _ in $(seq 1 600); do
        cluster_sql -d postgres -c 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

postmaster_pid() { head -1 "$pg_data/postmaster.pid" 2>/dev/null; }

# --- Redis and the sidecar ------------------------------------------------------------------------
# redis_start DIR PASSWORD: a redis-server on $redis_port (a free one unless set), loopback only, no
# persistence, its pid file and log in DIR
redis_start() {
    redis_dir=$1
    redis_password=$2
    redis_port=${redis_port:-$(free_port)}
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --requirepass "$redis_password" \
        --daemonize yes --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log" --dir "$redis_dir" \
        >/dev/null || return 1
    for _ in $(seq 1 50); do [ -s "$redis_dir/redis.pid" ] && return 0; sleep 0.1; done
    return 1
}
redis_cli() { redis-cli -p "$redis_port" -a "$redis_password" --no-auth-warning "$@"; }
redis_stop() { [ -n "$redis_port" ] && redis_cli shutdown nosave >/dev/null 2>&1; return 0; }

# server_launch NAME LOG URL COMMAND...: starts COMMAND (a server a suite needs: the sidecar, a webhook
# receiver, a router simulator) in the background, its output appended to LOG, and waits (at most 20 s)
# until URL answers, with any HTTP status (with server_answer_ok=1 set: a success); sets $server_pid
server_launch() {
    local name=$1 log=$2 url=$3 ok=(); shift 3
    [ "${server_answer_ok:-0}" = 1 ] && ok=(-f)
    "$@" >>"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 200); do
        curl -s "${ok[@]}" -o /dev/null "$url" && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the $name did not start:"; tail -n 5 "$log"; return 1
}
# server_stop PID: stops a server that server_launch started (SIGTERM, 5 s at most), if it runs
server_stop() {
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$1" 2>/dev/null || wait "$1" 2>/dev/null
    return 0
}
# sidecar_launch LOG URL COMMAND...: starts COMMAND (an iwd-sidecar, its settings in the environment) as
# server_launch does, until URL answers with a success; sets $sidecar_pid
sidecar_launch() {
    local rc
    server_answer_ok=1 server_launch sidecar "$@"; rc=$?
    sidecar_pid=$server_pid
    return $rc
}
sidecar_stop() { server_stop "$sidecar_pid"; sidecar_pid=""; }

# servers_stop [MODE]: the sidecar, Redis and the cluster (MODE as cluster_stop's), whichever run
servers_stop() {
    sidecar_stop
    redis_stop
    cluster_stop "${1:-fast}"
}

# one_tenant_servers SUITE DB CCID KEY: what a sidecar suite of one tenant runs against: a cluster in
# $work/pg (no scheduler worker) with the databases control and DB, Redis, the AddressSanitizer build of
# the sidecar (started from sidecar/) on $http_port with $admin_key, and the tenant CCID on DB with the
# tenant key KEY provisioned; fails the suite's setup otherwise.
one_tenant_servers() {
    local db
    cluster_init "$work/pg" "listen_addresses = '127.0.0.1'
iwd.max_workers = 0" || fail_setup "initdb failed"
    cluster_start || fail_setup "PostgreSQL did not start"
    for db in control "$2"; do cluster_client createdb "$db" || fail_setup "createdb $db failed"; done
    redis_start "$work" redis-secret || fail_setup "redis-server did not start"
    IWD_LISTEN=127.0.0.1 IWD_PORT=$http_port IWD_ADMIN_API_KEY=$admin_key \
        IWD_SECRET_KEY="server-secret-for-$1-0123456789abcdef" \
        IWD_CONTROL_DB="host=127.0.0.1 port=$pg_port dbname=control user=postgres" \
        IWD_REDIS_NODES="redis://127.0.0.1:$redis_port" IWD_REDIS_PASSWORD=redis-secret IWD_THREADS=2 \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:verify_asan_link_order=0 UBSAN_OPTIONS=print_stacktrace=1 \
        sidecar_launch "$work/sidecar.log" "http://127.0.0.1:$http_port/iwd/v3/health/live" ./iwd-sidecar-asan ||
        fail_setup "sidecar start failed"
    req POST /provisioning "$admin_key" "{\"tenant\": {\"id\": \"$3\", \"name\": \"Tenant $3\", \"ccid\": \"$3\"},
        \"iwd\": {\"url\": \"http://iwd\", \"db\": {\"host\": \"127.0.0.1\", \"port\": $pg_port, \"database\": \"$2\",
        \"user\": \"postgres\", \"password\": \"pw\", \"ssl\": false}, \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$4\"}}}"
    [ "$code" = 200 ] || fail_setup "provisioning: $code $body"
}

# --- REST ------------------------------------------------------------------------------------------
# req METHOD PATH KEY [BODY]: a request to $base (the API's /iwd/v3) with KEY as x-api-key when not empty
# and BODY as JSON; sets $code and $body (the answer is kept in $work/body). Through the validating proxy
# of sidecar/openapi.yaml when IWD_OPENAPI_PROXY is set (tests/openapi/proxy.sh).
req() {
    local args=(-s -o "$work/body" -w '%{http_code}' -X "$1" "$base$2")
    [ -n "${IWD_OPENAPI_PROXY:-}" ] && args+=(--proxy "$IWD_OPENAPI_PROXY" --noproxy '')
    [ -n "$3" ] && args+=(-H "x-api-key: $3")
    [ $# -ge 4 ] && args+=(-H 'content-type: application/json' --data-binary "$4")
    code=$(curl "${args[@]}")
    body=$(cat "$work/body")
}
# json FILTER: jq -r of the last answer's body
json() { jq -r "$1" <<<"$body"; }

# --- checks ----------------------------------------------------------------------------------------
check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1"
    else failed=$((failed + 1)); echo "not ok - $1: expected '$2', got '$3'"; return 1; fi
}
check_match() { # check_match NAME REGEX ACTUAL
    if [[ "$3" =~ $2 ]]; then passed=$((passed + 1)); echo "ok - $1"
    else failed=$((failed + 1)); echo "not ok - $1: '${3:0:300}' does not match /$2/"; return 1; fi
}
# summary: the result line; succeeds when no check failed
summary() { echo "$suite: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; }
# fail_setup MESSAGE: a step the checks need failed: counted as a failure, and the suite ends
fail_setup() { echo "$1"; failed=$((failed + 1)); summary; exit 1; }
