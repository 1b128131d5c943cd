#!/usr/bin/env bash
# Scale-out by tenant: two PostgreSQL servers (A and B, iwd preloaded), tenants provisioned on each, one
# sidecar (AddressSanitizer build, Redis, its control database on A) serving all. A tenant under the load of
# 4 REST clients (tests/faults/load.py) moves from A to B with scripts/move-tenant.sh: no acknowledged change
# is lost (tests/faults/checks.sql on its new database), its keys keep working, the registry names B, new
# work lands on B, the old database refuses connections, and the other tenants are served throughout.
# Refused moves (unknown tenant, a database of that name on the target) change nothing.
# Ends with "ha-move: N passed, M failed".
set -uo pipefail
suite=ha-move
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib.sh
. "$here/../../scripts/lib.sh"
top=$iwd_top
work=$(work_dir ha-move)
redis_port=$(free_port); http_port=$(free_port)
admin_key="admin-key-for-tenant-move-tests"
base="http://127.0.0.1:$http_port/iwd/v3"
declare -A key=([m1]="move-tenant-key-m1-0123456789" [m2]="move-tenant-key-m2-0123456789"
                [m3]="move-tenant-key-m3-0123456789")
load_pid=""

# the two servers: lib.sh's cluster functions act on the one whose settings are in place
declare -A server_dir server_port
use() { pg_dir=${server_dir[$1]}; pg_port=${server_port[$1]}; pg_data=$pg_dir/data; pg_log=$pg_dir/log; }
on() { local s=$1; shift; use "$s"; cluster_sql "$@"; }

cleanup() {
    [ -n "$load_pid" ] && { touch "$work/stop"; wait "$load_pid" 2>/dev/null; }
    sidecar_stop
    redis_stop
    for s in A B; do [ -n "${server_dir[$s]:-}" ] && { use "$s"; cluster_stop immediate; }; done
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

acks() { cat "$work"/load/ack-*.csv 2>/dev/null | wc -l; }
acked_beyond() { [ "$(acks)" -gt "$1" ]; }
poll() { local s=$1; shift; for _ in $(seq 1 $((s * 5))); do "$@" && return 0; sleep 0.2; done; return 1; }
# status TENANT METHOD PATH [BODY]: the HTTP status of a call with the tenant's key
status() {
    local args=(-s -o "$work/body" -w '%{http_code}' -X "$2" -H "x-api-key: ${key[$1]}" "$base$3")
    [ $# -ge 4 ] && args+=(-H 'content-type: application/json' --data-binary "$4")
    curl "${args[@]}"
}
create() { status "$1" POST /tasks "{\"externalId\":\"$2\",\"capturePoint\":\"move\"}"; }
# where TENANT EXTERNAL-ID: the servers whose database of the tenant holds the task
where() {
    local s out=""
    for s in A B; do
        [ "$(on "$s" -d "tenant_$1" -c "SELECT count(*) FROM iwd.task_all WHERE external_id = '$2'" 2>/dev/null)" = 1 ] &&
            out="$out$s"
    done
    echo "${out:-none}"
}
m1_answers() { [ "$(status m1 GET '/tasks?limit=1')" = 200 ]; }

# --- two servers, Redis, the sidecar, three tenants --------------------------------------------------------
flock /tmp/iwd-sidecar-build.lock make -s -C "$top/sidecar" asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"
for s in A B; do
    pg_port=$(free_port)
    cluster_init "$work/$s" "listen_addresses = '127.0.0.1'
max_connections = 100
iwd.scheduler_interval = 100ms" || fail_setup "initdb of server $s failed"
    server_dir[$s]=$pg_dir; server_port[$s]=$pg_port
    cluster_start || fail_setup "server $s did not start"
done
on A -d postgres -c "CREATE DATABASE control" || fail_setup "createdb control failed"
redis_start "$work" "redis-secret-for-tenant-move-tests" || fail_setup "redis-server did not start"
sidecar_launch "$work/sidecar.log" "$base/health/live" \
    env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY="$admin_key" \
    IWD_SECRET_KEY="server-secret-for-tenant-move-tests-0123456789" \
    IWD_CONTROL_DB="host=127.0.0.1 port=${server_port[A]} dbname=control user=$pg_superuser" \
    IWD_REDIS_NODES="redis://127.0.0.1:$redis_port" IWD_REDIS_PASSWORD="$redis_password" IWD_THREADS=2 \
    IWD_METRICS_LISTEN=127.0.0.1 IWD_METRICS_PORT="$(free_port)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    "${IWD_SIDECAR_BIN:-$top/sidecar/iwd-sidecar-asan}" || fail_setup "the sidecar did not start"
provision() { # provision TENANT SERVER
    on "$2" -d postgres -c "CREATE DATABASE tenant_$1" || return 1
    local body
    body=$(jq -n --arg c "$1" --arg k "${key[$1]}" --argjson p "${server_port[$2]}" \
        '{tenant: {id: $c, name: ("Tenant " + $c), ccid: $c},
          iwd: {url: "http://iwd", db: {host: "127.0.0.1", port: $p, database: ("tenant_" + $c), user: "postgres"},
                apiKeys: {IWD_APIKEY_TENANT: $k}}}')
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $admin_key" -H 'content-type: application/json' \
        --data-binary "$body" "$base/provisioning")" = 200 ]
}
provision m1 A && provision m2 B && provision m3 A || fail_setup "provisioning failed"
for t in m1 m2 m3; do check "tenant $t serves a new task" "201" "$(create "$t" "$t-before")"; done
check "the tasks are where their tenants are" "A B A" "$(where m1 m1-before) $(where m2 m2-before) $(where m3 m3-before)"

move() { # move CCID TARGET-SERVER [ARGS...]: scripts/move-tenant.sh from server A
    local c=$1 s=$2; shift 2
    REDISCLI_AUTH=$redis_password "$top/scripts/move-tenant.sh" --ccid "$c" \
        --control "host=127.0.0.1 port=${server_port[A]} dbname=control user=$pg_superuser" \
        --source "host=127.0.0.1 port=${server_port[A]} dbname=tenant_$c user=$pg_superuser" \
        --target "host=127.0.0.1 port=${server_port[$s]} dbname=postgres user=$pg_superuser" \
        --db-host 127.0.0.1 --db-port "${server_port[$s]}" --redis "127.0.0.1:$redis_port" "$@"
}

# --- refused moves change nothing ----------------------------------------------------------------------------
out=$(move nobody B 2>&1); rc=$?
check "moving an unknown tenant is refused" "1 move-tenant: no tenant nobody in the registry" "$rc $out"
on B -d postgres -c "CREATE DATABASE tenant_m3"
out=$(move m3 B 2>&1); rc=$?
check "moving onto an existing database is refused" "1 move-tenant: database tenant_m3 exists on the target server already" \
    "$rc $out"
out=$(move m2 A --db-host "127.0.0.1, 127.0.0.2" 2>&1); rc=$?
check "a host list with a space is refused" "1 move-tenant: --db-host must be a host or a comma-separated list" "$rc $out"
check "and tenant m3 still takes writes on A" "201 A" "$(create m3 m3-after-refusal) $(where m3 m3-after-refusal)"

# --- the move under load -------------------------------------------------------------------------------------
mkdir -p "$work/load"
/usr/bin/python3 "$top/tests/faults/load.py" --base "$base" --key "${key[m1]}" --dsn "dbname=unused" \
    --rest-clients 4 --sql-clients 0 --seconds 600 --log-dir "$work/load" --stop-file "$work/stop" \
    >"$work/load.log" 2>&1 &
load_pid=$!
check "the load on m1 runs" "yes" "$(poll 60 acked_beyond 100 && echo yes)"
out=$(move m1 B 2>&1); rc=$?
echo "$out" | sed 's/^/# /'
check "scripts/move-tenant.sh moves m1 to server B" "0" "$rc"
acked_at_move=$(acks)
check "the registry names server B" "${server_port[B]} tenant_m1" \
    "$(on A -d control -c "SELECT db_port || ' ' || db_name FROM iwd_control.tenant WHERE ccid = 'm1'")"
check "m1's key keeps working" "yes" "$(poll 30 m1_answers && echo yes)"
check "m1's clients have their changes acknowledged again" "yes" "$(poll 60 acked_beyond $((acked_at_move + 50)) && echo yes)"
# a sidecar thread that looked the key up before the move keeps its answer up to 5 s (503 meanwhile: the old
# database refuses connections); capture is idempotent, so the same task is sent until one is answered
m1_creates() { [[ "$(create m1 m1-after)" =~ ^20[01]$ ]]; }
check "a new task of m1 lands on B" "yes B" "$(poll 30 m1_creates && echo yes) $(where m1 m1-after)"
check "m1's task from before the move is on B (A's copy is closed)" "B" "$(where m1 m1-before)"
check "the old database refuses connections" "f" \
    "$(on A -d postgres -c "SELECT datallowconn FROM pg_database WHERE datname = 'tenant_m1'")"
for t in m2 m3; do check "tenant $t is served during the move" "201" "$(create "$t" "$t-after")"; done
touch "$work/stop"; wait "$load_pid"; load_pid=""
check "the load ran to its end without an exception" "" "$(grep -m1 -E 'Traceback|Error' "$work/load.log")"
cat "$work"/load/ack-*.csv > "$work/acks.csv"
out=$(on B -d tenant_m1 -v since_event=0 -v since_ms=0 -f "$top/tests/faults/checks.sql" <"$work/acks.csv" 2>&1)
grep -q '|' <<<"$out" || check "the consistency checks ran" "" "$out"
while IFS='|' read -r name n; do check "after the move: $name" "0" "$n"; done < <(grep '|' <<<"$out")
grep '^# ' <<<"$out"
codes=$(cat "$work"/load/summary-*.json 2>/dev/null | jq -s -r 'map(.codes) | reduce .[] as $c ({};
    reduce ($c | to_entries[]) as $e (.; .[$e.key] += $e.value)) | to_entries | map("\(.key): \(.value)") | join(", ")')
echo "# $(acks) acknowledged changes of m1; answers seen by its clients: $codes"
echo "# the longest time without an acknowledged change of m1 (the pause its clients saw): $(cut -d, -f8 "$work/acks.csv" |
    sort -n | awk 'NR > 1 && $1 - last > gap {gap = $1 - last} {last = $1} END {print gap + 0}') ms"

# --- and back, dropping the copy on B ------------------------------------------------------------------------
on A -d postgres -c "DROP DATABASE tenant_m1" || check "the closed copy on A is dropped" "" "failed"
tasks_on_b=$(on B -d tenant_m1 -c "SELECT count(*) || ' tasks, ' || (SELECT count(*) FROM iwd.task_event) || ' events'
                                   FROM iwd.task_all")
out=$(REDISCLI_AUTH=$redis_password "$top/scripts/move-tenant.sh" --ccid m1 \
    --control "host=127.0.0.1 port=${server_port[A]} dbname=control user=$pg_superuser" \
    --source "host=127.0.0.1 port=${server_port[B]} dbname=tenant_m1 user=$pg_superuser" \
    --target "host=127.0.0.1 port=${server_port[A]} dbname=postgres user=$pg_superuser" \
    --db-host 127.0.0.1 --db-port "${server_port[A]}" --redis "127.0.0.1:$redis_port" --drop-source 2>&1); rc=$?
check "m1 moves back to A, the copy on B dropped" "0 0" \
    "$rc $(on B -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = 'tenant_m1'")"
check "m1's key works on A again" "yes" "$(poll 30 m1_answers && echo yes)"
check "m1's tasks and history are all back on A" "$tasks_on_b" \
    "$(on A -d tenant_m1 -c "SELECT count(*) || ' tasks, ' || (SELECT count(*) FROM iwd.task_event) || ' events'
                             FROM iwd.task_all")"

kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; sidecar_pid=""
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "0" \
    "$(grep -c -E 'AddressSanitizer|runtime error' "$work/sidecar.log")"
summary
