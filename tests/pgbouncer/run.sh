#!/usr/bin/env bash
# The sidecar behind PgBouncer in transaction mode (docs/operations.md, PgBouncer), end to end: a real
# PostgreSQL (a temporary cluster preloading iwd, SCRAM passwords over TCP), Debian's pgbouncer started here
# on a free port with a throwaway configuration (transaction pooling, a pool of 2 server sessions per
# tenant, its users' SCRAM secrets taken from the cluster), a redis-server and the sidecar built with
# AddressSanitizer (IWD_PG_PREPARE=off), whose tenants' db.host/db.port are PgBouncer's. Tenants log in
# as their own application roles, never as a superuser.
# Checked: provisioning through the pool (and a wrong password refused), tasks created, claimed and
# completed for several tenants, concurrent calls of one tenant through fewer server sessions than the
# sidecar's connections (every one answered), the server sessions bounded by the pool, and the LISTEN
# caveat as it behaves: the event stream, its long-poll and the webhook dispatcher still get every event
# (from their own rounds rather than from a notification), and the router sync (against the router
# simulator, tests/router/sim.py) finds its connection pooled and runs on its interval without LISTEN.
# Ends with "pgbouncer: N passed, M failed".
# shellcheck disable=SC2034,SC2154 # ($suite: for summary; the servers' variables, $code: tests/lib.sh, scripts/lib.sh)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.." || exit 1
suite=pgbouncer
work=$(mktemp -d /tmp/iwd-pgbouncer-test.XXXXXX) && chmod 755 "$work" || exit 1
# shellcheck source=../lib.sh
. "$here/../lib.sh"
pids=()
pgb_port=$(free_port); recv_port=$(free_port)
pgb_dir=$work/pgbouncer
pool_size=2
tenants="p1 p2 p3"

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    [ -f "$pgb_dir/pgbouncer.pid" ] && kill "$(cat "$pgb_dir/pgbouncer.pid")" 2>/dev/null
    servers_stop immediate
    sleep 0.2
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

key() { echo "pgbouncer-key-$1-0001"; }
password() { echo "pw-of-$1-$secret_key" | sha256sum | cut -c1-24; }
# pgb_admin COMMAND: PgBouncer's admin console (SHOW ...), unaligned, comma-separated with a header
pgb_admin() {
    PGPASSWORD=admin-of-the-pool "$bindir/psql" -X -q -A -F, -h 127.0.0.1 -p "$pgb_port" -U pgb_admin \
        -d pgbouncer -c "$1"
}
# pool_column DB COLUMN: a column of SHOW POOLS for DB's pool (PgBouncer's view of it)
pool_column() {
    pgb_admin "SHOW POOLS" | awk -F, -v db="$1" -v col="$2" \
        'NR == 1 {for (i = 1; i <= NF; i++) c[$i] = i; next} $c["database"] == db {print $c[col]}'
}
# server_sessions DB: the tenant's sessions on PostgreSQL itself (pgbouncer's server connections)
server_sessions() {
    sql postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$1' AND usename = 'iwd_$1'"
}
prov() { # prov CCID PASSWORD: the registry entry of tenant CCID (database CCID, login iwd_CCID) behind PgBouncer
    jq -n --arg c "$1" --arg pw "$2" --arg k "$(key "$1")" --argjson p "$pgb_port" \
        '{tenant: {id: $c, name: ("Tenant " + $c), ccid: $c},
          iwd: {url: "http://iwd", db: {host: "127.0.0.1", port: $p, database: $c, user: ("iwd_" + $c),
                                        password: $pw, ssl: false},
                apiKeys: {IWD_APIKEY_TENANT: $k}}, iwdEmail: {url: "http://mail"}}'
}
# wait_for SECONDS COMMAND...: until COMMAND succeeds (polled every 0.2 s)
wait_for() {
    local n=$(($1 * 5)); shift
    for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.2; done
    return 1
}

build_sidecar || fail_setup "cannot build iwd-sidecar-asan"
command -v pgbouncer >/dev/null || fail_setup "pgbouncer is not installed (scripts/deps.sh)"

# --- the cluster: SCRAM over TCP, trust on its socket for the test's own superuser calls -------------
pg_init "iwd.max_workers = 2
password_encryption = 'scram-sha-256'" || fail_setup "initdb failed"
{ echo "host all all 127.0.0.1/32 scram-sha-256"; cat "$pg_data/pg_hba.conf"; } >"$work/hba" ||
    fail_setup "cannot read pg_hba.conf"
cat "$work/hba" >"$pg_data/pg_hba.conf" || fail_setup "cannot write pg_hba.conf"
cluster_start || fail_setup "PostgreSQL did not start"
sql postgres -c "CREATE DATABASE control" || fail_setup "createdb control failed"
# as the docs advise: a superuser installs the extension, the tenant's login is a member of iwd_app_<db>
for t in $tenants; do
    if ! sql postgres -c "CREATE DATABASE $t" || ! sql "$t" -c "CREATE EXTENSION iwd" ||
        ! sql "$t" -c "CREATE ROLE iwd_$t LOGIN PASSWORD '$(password "$t")' IN ROLE iwd_app_$t"; then
        fail_setup "cannot prepare tenant database $t"
    fi
done

# --- PgBouncer: transaction pooling; the sidecar's session settings set on the server connections -----
owned_by_postgres "$pgb_dir" || fail_setup "cannot make $pgb_dir"
{
    echo '"pgb_admin" "admin-of-the-pool"'
    sql postgres -c "SELECT format('\"%s\" \"%s\"', rolname, rolpassword) FROM pg_authid
                     WHERE rolname LIKE 'iwd\\_p%' AND rolcanlogin ORDER BY rolname"
} >"$pgb_dir/userlist.txt" || fail_setup "cannot write PgBouncer's auth_file"
# what the sidecar sends as the startup parameter "options" (its default IWD_STATEMENT_TIMEOUT_MS and
# IWD_LOCK_TIMEOUT_MS, its search_path), which PgBouncer refuses (ignored below)
session_settings="SET statement_timeout = 30000; SET lock_timeout = 10000; SET search_path = pg_catalog, iwd, pg_temp"
cat >"$pgb_dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pg_port connect_query='$session_settings'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgb_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $pgb_dir/userlist.txt
admin_users = pgb_admin
pool_mode = transaction
default_pool_size = $pool_size
max_client_conn = 200
ignore_startup_parameters = options
server_idle_timeout = 60
logfile = $pgb_dir/pgbouncer.log
pidfile = $pgb_dir/pgbouncer.pid
INI
chown postgres: "$pgb_dir"/*
as_postgres pgbouncer -d "$pgb_dir/pgbouncer.ini" >"$work/pgbouncer.out" 2>&1 ||
    fail_setup "pgbouncer did not start: $(cat "$work/pgbouncer.out")"
wait_for 20 pgb_admin "SHOW VERSION" >/dev/null 2>&1 ||
    fail_setup "PgBouncer does not answer: $(tail -n 5 "$pgb_dir/pgbouncer.log")"
check_match "PgBouncer answers on its admin console" "PgBouncer" "$(pgb_admin "SHOW VERSION")"
check "a tenant's login reaches its database through PgBouncer with its password" "iwd_p1 p1" \
    "$(PGPASSWORD=$(password p1) "$bindir/psql" -X -At -h 127.0.0.1 -p "$pgb_port" -U iwd_p1 -d p1 \
        -c "SELECT current_user || ' ' || current_database()" 2>&1)"
check "PgBouncer's server sessions carry the sidecar's session settings (connect_query)" \
    "30s 10s pg_catalog, iwd, pg_temp" \
    "$(PGPASSWORD=$(password p1) "$bindir/psql" -X -At -h 127.0.0.1 -p "$pgb_port" -U iwd_p1 -d p1 -c \
        "SELECT current_setting('statement_timeout') || ' ' || current_setting('lock_timeout') || ' ' ||
                current_setting('search_path')" 2>&1)"

# --- the sidecar, its tenants behind PgBouncer ------------------------------------------------------------
redis_start "$work" "$redis_password" || fail_setup "redis-server did not start"
sidecar_start IWD_PG_PREPARE=off IWD_PG_MAX_CONNECTIONS_PER_SERVER=24 || fail_setup "the sidecar did not start"

req POST /provisioning "$admin_key" "$(prov p1 wrong-password)"
check_match "provisioning with a password PgBouncer refuses: 502 naming the failure" \
    "^502 the tenant database is not reachable: .*authentication failed" "$code $(json .status.message)"
req GET /agents "$(key p1)"
check "the refused tenant's key is unknown" "401" "$code"
for t in $tenants; do
    req POST /provisioning "$admin_key" "$(prov "$t" "$(password "$t")")"
    check "tenant $t provisioned through PgBouncer" "200 true" "$code $(json .created)"
done

# --- tasks created, claimed and completed for each tenant -------------------------------------------------
for t in $tenants; do
    k=$(key "$t")
    req PUT /agents/a1 "$k" '{"name": "Agent One", "capacity": {"workitem": 10}, "state": "ready"}'
    check "$t: an agent" "200" "$code"
    created=""
    for i in 1 2 3 4 5; do
        req POST /tasks "$k" "{\"externalId\": \"$t-$i\", \"capturePoint\": \"erp\", \"priority\": $((i * 10))}"
        [ "$code" = 201 ] && created="$created $(json .id)"
    done
    check "$t: five tasks created" "5" "$(wc -w <<<"$created")"
    req POST /tasks "$k" "{\"externalId\": \"$t-1\", \"capturePoint\": \"erp\", \"priority\": 10}"
    check "$t: re-submitting an external id is idempotent" "$(cut -d' ' -f2 <<<"$created")" "$(json .id)"
    claimed=""
    for _ in 1 2 3 4 5; do
        req POST /agents/a1/next "$k" '{"reserveSeconds": 60}'
        [ "$code" = 200 ] || break
        id=$(json .id); claimed="$claimed $id"
        req POST "/tasks/$id/accept" "$k" '{"agent": "a1"}'; [ "$code" = 200 ] || break
        req POST "/tasks/$id/complete" "$k" '{"agent": "a1"}'; [ "$code" = 200 ] || break
    done
    check "$t: each task claimed once, in priority order, and completed" \
        "$(tr ' ' '\n' <<<"$created" | sort -rn | xargs)" "$(xargs <<<"$claimed")"
    req POST /agents/a1/next "$k" '{"reserveSeconds": 60}'
    check "$t: nothing left to claim" "204" "$code"
    req GET "/tasks?status=completed&limit=100" "$k"
    check "$t: the completed tasks are listed" "5" "$(json '.tasks | length')"
    req GET "/tasks/$(cut -d' ' -f2 <<<"$created")/history" "$k"
    check "$t: the history has the whole life of the first task" "created reserved accepted completed" \
        "$(json '[.[].event] | join(" ")')"
done

# --- LISTEN through transaction pooling: the event stream and the webhook dispatcher --------------------
# Their LISTEN runs in one transaction on some server session that then serves others: no notification
# reaches them through PgBouncer. They still get every event, from their own rounds (the stream's hub every
# 2 s, the dispatcher every second); what is checked here is that every event arrives, not when.
k=$(key p2)
curl -sN -H "x-api-key: $k" "$base/events?types=task.created,task.completed" >"$work/p2.sse" 2>/dev/null &
pids+=($!)
wait_for 20 grep -q '^: iwd event stream' "$work/p2.sse" || fail_setup "the event stream of p2 did not open"
python3 sidecar/tests/receiver.py "$work/receiver.log" "$recv_port" &
pids+=($!)
wait_for 10 curl -s -o /dev/null "http://127.0.0.1:$recv_port/" || fail_setup "the webhook receiver did not start"
req PUT /webhooks/crm "$k" "{\"url\": \"http://127.0.0.1:$recv_port/r/ok/crm\", \"secret\": \"crm-secret\",
                             \"events\": [\"task.created\"]}"
check "p2: a webhook through PgBouncer" "200" "$code"
streamed=""
for i in 1 2 3; do
    req POST /tasks "$k" "{\"externalId\": \"ev-$i\", \"capturePoint\": \"web\"}"
    streamed="$streamed $(json .id)"
done
id=$(json .id)
req POST /agents/a1/next "$k" '{"reserveSeconds": 60}'
req POST "/tasks/$(json .id)/complete" "$k" '{"agent": "a1"}'
check "p2: a streamed task claimed and completed" "200" "$code"
completed=$(json .id)
stream_has() { [ "$(grep -c '^event: task\.' "$work/p2.sse")" -ge 4 ]; }
wait_for 30 stream_has
check "the event stream through PgBouncer gets each event, once, in order" \
    "$(xargs -n1 printf 'task.created %s\n' <<<"$streamed")
task.completed $completed" \
    "$(awk '/^event: / {type = $2} /^data: / {print type, substr($0, 7)}' "$work/p2.sse" |
        while read -r type data; do echo "$type $(jq -r .taskId <<<"$data")"; done)"
delivered() { [ "$(jq -r 'select(.ev == "begin") | .id' "$work/receiver.log" 2>/dev/null | sort -u | wc -l)" -ge 3 ]; }
wait_for 30 delivered
check "the webhook dispatcher through PgBouncer delivers each created task" \
    "$(xargs -n1 <<<"$streamed" | sort -n | xargs)" \
    "$(jq -r 'select(.ev == "begin") | .body | fromjson | .taskId' "$work/receiver.log" 2>/dev/null | sort -nu | xargs)"
# the JSON long-poll of p3 parked until an event comes: answered with it. Its head is taken once p3's five
# earlier tasks are in the feed (published by its scheduler worker, no stream of p3 being open: how soon
# depends on the pool's workers), so that only the new task's event follows it.
k=$(key p3)
p3_published() {
    [ "$(curl -s -H "x-api-key: $k" -H 'accept: application/json' \
        "$base/events?after=0&types=task.created&limit=100" | jq '.events | length')" -ge 5 ]
}
waited_from=$SECONDS
p3_published || echo "# p3's earlier events not yet in the feed: $(sql p3 -c "SELECT count(*) FROM iwd.event_outbox") in" \
    "its outbox; the pool: $(sql p3 -c "SELECT iwd.worker_stats()")"
wait_for 60 p3_published
echo "# p3's earlier events were in the feed after $((SECONDS - waited_from)) s more"
check "p3: its earlier tasks' events are published with no stream open" "5" \
    "$(curl -s -H "x-api-key: $k" -H 'accept: application/json' \
        "$base/events?after=0&types=task.created&limit=100" | jq '.events | length')"
head=$(curl -s -H "x-api-key: $k" -H 'accept: application/json' "$base/events" | jq -r .next)
check_match "p3: the long-poll tells the feed's head" "^[0-9]+$" "$head"
curl -s -H "x-api-key: $k" -H 'accept: application/json' "$base/events?after=$head&wait=30&types=task.created" \
    >"$work/p3.poll" &
poll_pid=$!
pids+=("$poll_pid")
sleep 1
req POST /tasks "$k" '{"externalId": "poll-1", "capturePoint": "web"}'
polled=$(json .id)
wait "$poll_pid"
check "a long-poll through PgBouncer is answered with the event that came while it waited" "task.created $polled" \
    "$(jq -r '.events[] | "\(.type) \(.taskId)"' "$work/p3.poll" 2>&1 | xargs)"


# --- concurrent calls of one tenant: more sidecar connections than server sessions, every call answered ----
# PgBouncer hands each transaction to whichever of the pool's 2 server sessions is free: a statement
# prepared on one would be missing on the next (IWD_PG_PREPARE=off sends each call unnamed)
k=$(key p1)
(
    max=0
    while [ ! -f "$work/load.done" ]; do
        n=$(server_sessions p1); [ "${n:-0}" -gt "$max" ] && max=$n
        echo "$max" >"$work/sessions.max"; sleep 0.05
    done
) &
pids+=($!)
# shellcheck disable=SC2016 # (the command's own $1 and $2)
seq 1 240 | xargs -P 12 -I{} sh -c '
    if [ $(({} % 3)) -eq 0 ]; then
        curl -s -o /dev/null -w "%{http_code}\n" -H "x-api-key: $1" -H "content-type: application/json" \
            --data-binary "{\"externalId\": \"load-{}\", \"capturePoint\": \"erp\"}" "$2/tasks"
    else
        curl -s -o /dev/null -w "%{http_code}\n" -H "x-api-key: $1" "$2/tasks?limit=20"
    fi' _ "$k" "$base" >"$work/load.codes"
touch "$work/load.done"
check "240 concurrent calls of one tenant through PgBouncer: all answered 2xx" "240" \
    "$(grep -c '^20[01]$' "$work/load.codes")"
clients=$(pool_column p1 cl_active)
servers=$(( $(pool_column p1 sv_active) + $(pool_column p1 sv_idle) + $(pool_column p1 sv_used) ))
check "the sidecar's connections to p1 outnumber the pool's server sessions (transactions move between them)" \
    "ok" "$([ "${clients:-0}" -gt "$pool_size" ] && echo ok || echo "clients $clients, servers $servers")"
sleep 0.2
check "the tenant's sessions on PostgreSQL stay within PgBouncer's pool_size" "ok" \
    "$(m=$(cat "$work/sessions.max"); [ "$m" -ge 1 ] && [ "$m" -le "$pool_size" ] && echo ok || echo "max $m")"
req GET "/tasks?limit=1000&status=queued" "$k"
check "every task created under load is stored" "80" \
    "$(json '[.tasks[] | select(.externalId | startswith("load-"))] | length')"
conns=$(curl -s "$metrics_url" | grep "^iwd_pg_server_connections{server=\"[^\"]*:$pgb_port\"}" | cut -d" " -f2)
check "the sidecar counts its connections to PgBouncer within IWD_PG_MAX_CONNECTIONS_PER_SERVER" "ok" \
    "$([ -n "$conns" ] && [ "$conns" -ge 1 ] && [ "$conns" -le 24 ] && echo ok || echo "'$conns'")"

# --- the router sync through PgBouncer: its connection found pooled, no LISTEN, a round every interval ------
sim_port=$(free_port)
python3 tests/router/sim.py --port "$sim_port" --state "$work/sim.json" --client-id router-client \
    --client-secret router-secret --step-seconds 0.1 >"$work/sim.log" 2>&1 &
pids+=($!)
wait_for 10 curl -s -o /dev/null "http://127.0.0.1:$sim_port/sim/state" ||
    fail_setup "the router simulator did not start"
req PUT /router "$(key p3)" "{\"url\": \"http://127.0.0.1:$sim_port\", \"clientId\": \"router-client\",
                             \"clientSecret\": \"router-secret\", \"maxInFlight\": 5}"
check "p3: a router through PgBouncer" "200" "$code"
req POST /tasks "$(key p3)" '{"externalId": "routed-1", "capturePoint": "erp", "priority": 90}'
routed=$(json .id)
routed_is_completed() { req GET "/tasks/$routed" "$(key p3)"; [ "$(json .status)" = completed ]; }
wait_for 60 routed_is_completed
check "p3: a task submitted to the router, completed there and synced back through PgBouncer" "completed" \
    "$(json .status)"
check "the router sync found its connection pooled: it does not LISTEN, it runs every IWD_ROUTER_INTERVAL_MS" "1" \
    "$(grep -c 'router sync without LISTEN.*p3: ' "$work/sidecar.log")"

summary
