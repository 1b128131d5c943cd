#!/usr/bin/env bash
# The router sync end to end: a real PostgreSQL, the sidecar built with AddressSanitizer (one, then two
# replicas) and the router simulator (tests/router/sim.py, a separate process speaking the router protocol,
# its agents accepting and completing what they are offered). Checks the configuration (PUT/GET/DELETE
# /router, secrets sealed in the database and never returned, provisioning's tenant.gws), the flow (the best
# maxInFlight tasks submitted in queue order, offered -> reserved, accepted, completed in iwd with their
# history), the order the router receives submissions in (the queue's, even where the simulator would reorder
# requests sent side by side), the tasks the router holds kept from iwd's own agents (next_task) until it
# gives them back, displacement, the propagation of hold, cancel, complete, expire and reprioritize, the
# router's own reject and stop, a router that lost the cursor (410: the work items it holds retrieved one by
# one), each fault (router down, 5xx, slow answers, an expired token, invalid credentials:
# reported in GET /router and the metrics, retried without a tight loop, the API answering meanwhile), kill
# -9 of the sidecar mid-sync (no duplicate submission, no lost change), and two replicas (one syncs, the
# other takes over when it dies). Ends with "router: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
suite=router
# shellcheck source=../../scripts/lib.sh
. scripts/lib.sh
work=$(work_dir router-test)
pg_port=$(free_port); http_port=$(free_port); http_port_b=$(free_port); metrics_port=$(free_port)
sim_port=$(free_port)
admin_key="admin-key-for-router-tests"
export IWD_SECRET_KEY="server-secret-for-router-tests-0123456789"
key=tenant-key-router-0001
sim_pid=""; replica_b=""

cleanup() {
    for pid in $sim_pid $replica_b; do kill "$pid" 2>/dev/null; done
    servers_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

# start_sidecar [PORT [NAME=VALUE...]]: an ASan sidecar on PORT (default $http_port); sets $sidecar_pid
start_sidecar() {
    local port=${1:-$http_port}
    [ $# -gt 0 ] && shift
    sidecar_launch "$work/sidecar-$port.log" "http://127.0.0.1:$port/iwd/v3/health/live" \
        env IWD_LISTEN=127.0.0.1 IWD_PORT="$port" IWD_ADMIN_API_KEY=$admin_key IWD_THREADS=2 \
        IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control user=postgres" IWD_REDIS_NODES= \
        IWD_METRICS_LISTEN=127.0.0.1 \
        IWD_METRICS_PORT="$([ "$port" = "$http_port" ] && echo "$metrics_port" || echo 0)" \
        IWD_ROUTER_INTERVAL_MS=200 IWD_ROUTER_TIMEOUT_MS=1500 \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 "$@" sidecar/iwd-sidecar-asan
}
# start_sim [ARGS...]: the simulator on $sim_port, its state kept in $work/sim.json (a restart keeps it)
start_sim() {
    local launched
    server_launch "router simulator" "$work/sim.log" "http://127.0.0.1:$sim_port/sim/state" \
        python3 tests/router/sim.py --port "$sim_port" --state "$work/sim.json" "$@"; launched=$?
    sim_pid=$server_pid
    [ "$launched" = 0 ] || fail_setup "the simulator did not start"
}
stop_sim() { server_stop "$sim_pid"; sim_pid=""; }

base="http://127.0.0.1:$http_port/iwd/v3" # req and json: scripts/lib.sh
sim_url="http://127.0.0.1:$sim_port"

wait_until() { # wait_until SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS
    local limit=$1; shift
    for _ in $(seq 1 $((limit * 10))); do "$@" && return 0; sleep 0.1; done
    return 1
}
sql() { cluster_sql -d t1 -c "$1"; }
sql_is() { [ "$(cluster_sql -d "$1" -c "$3")" = "$2" ]; }          # sql_is DB VALUE QUERY
sql_at_least() { [ "$(cluster_sql -d "$1" -c "$3")" -ge "$2" ]; }  # sql_at_least DB N QUERY
sim() { curl -s "$sim_url/sim/state" | jq -r "$1"; }           # sim JQ: the simulator's state
sim_set() { curl -s -o /dev/null -X POST "$sim_url/sim/config" -d "$1"; }  # sim_set JSON: its switches
sim_item() { curl -s -o /dev/null -X POST "$sim_url/sim/items/$1" -d "$2"; } # sim_item ID JSON
task() { # task EXTERNAL-ID PRIORITY: a new task's id
    req POST /tasks "$key" "{\"externalId\": \"$1\", \"capturePoint\": \"router-test\", \"priority\": $2}"
    json .id
}
status_of() { sql "SELECT status FROM iwd.task_all WHERE id = $1"; }
status_is() { [ "$(status_of "$1")" = "$2" ]; }                 # status_is TASK STATUS
router_id_of() { sql "SELECT router_id FROM iwd.router_task WHERE task_id = $1"; }
sim_state_of() { sim ".items[\"$1\"].state"; }                  # sim_state_of ROUTER-ID
item_of_task() { sim "[.items[] | select(.taskId == $1)] | sort_by(.id | ltrimstr(\"wi-\") | tonumber) | last | .id"; }
item_state_is() { [ "$(sim_state_of "$(item_of_task "$1")")" = "$2" ]; } # item_state_is TASK STATE
router_status() { req GET /router "$key"; json ".status.$1"; }  # router_status FIELD
status_field_is() { [ "$(router_status "$1")" = "$2" ]; }
status_field_matches() { [[ "$(router_status "$1")" =~ $2 ]]; }
metrics() { curl -s "http://127.0.0.1:$metrics_port/metrics"; }
metric() { metrics | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; } # metric SERIES: its value
requests() { metric "iwd_router_requests_total{ccid=\"t1\",op=\"$1\",result=\"$2\"}"; } # requests OP RESULT
in_flight() { sql "SELECT count(*) FROM iwd.router_task WHERE state <> 'returned'"; }
duplicates() { sim '.counters.duplicatePosts'; }
# no task was submitted twice: every work item of the simulator belongs to another submission, and the
# work items of one task never overlap in time (checked through iwd's record: one live row per task)
sidecar_log_clean() { ! grep -q -E 'AddressSanitizer|runtime error' "$work"/sidecar-*.log; }

# --- servers ------------------------------------------------------------------------------------------
make -s -C sidecar asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"
cluster_init "$work/pg" "listen_addresses = '127.0.0.1'
iwd.max_workers = 0
iwd.notify = event" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
for db in control t1 t2; do cluster_client createdb "$db" || fail_setup "createdb $db failed"; done
start_sim --client-id router-client --client-secret router-secret --api-key router-api-key --agents 2 --mode none
start_sidecar || fail_setup "the sidecar did not start"

help=$(sidecar/iwd-sidecar-asan --help)
check "--help documents IWD_ROUTER_INTERVAL_MS, IWD_ROUTER_TIMEOUT_MS and IWD_GWS_*" "6" \
    "$(grep -c -E 'IWD_ROUTER_(INTERVAL|TIMEOUT)_MS|IWD_GWS_(URL|CLIENT_ID|CLIENT_SECRET|API_KEY)' <<<"$help")"
env IWD_GWS_URL=http://gws IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=$admin_key sidecar/iwd-sidecar-asan \
    >"$work/refused.log" 2>&1
check "IWD_GWS_URL without its client is refused at start" "2" "$?"
env IWD_ROUTER_INTERVAL_MS=10 IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=$admin_key sidecar/iwd-sidecar-asan \
    >"$work/refused.log" 2>&1
check "IWD_ROUTER_INTERVAL_MS below 50 is refused at start" "2" "$?"

prov() { # prov CCID DB KEY [GWS]
    echo "{\"tenant\": {\"id\": \"$1\", \"name\": \"Tenant $1\", \"ccid\": \"$1\"${4:+, \"gws\": $4}},
           \"iwd\": {\"url\": \"http://iwd\", \"db\": {\"host\": \"127.0.0.1\", \"port\": $pg_port,
           \"database\": \"$2\", \"user\": \"postgres\", \"password\": \"pw\", \"ssl\": false},
           \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$3\"}}}"
}
req POST /provisioning "$admin_key" "$(prov t1 t1 $key)"; check "tenant t1 provisioned" "200" "$code"

# --- configuration ------------------------------------------------------------------------------------
req GET /router "$key"
check "GET /router without a router: 404" "404" "$code"
req PUT /router "$key" '{"url": "ftp://x", "clientId": "c", "clientSecret": "s"}'
check_match "a router URL that is not http(s): 400 naming the field" '^400 router field "url" must be an http' \
    "$code $(json .status.message)"
req PUT /router "$key" '{"url": "http://x", "clientId": "c", "clientSecret": "s", "color": 1}'
check_match "an unknown key: 400 naming it" '^400 unknown key "color" in router' "$code $(json .status.message)"
req PUT /router "$key" '{"url": "http://x", "clientId": "c", "clientSecret": 5}'
check "a secret that is not a string: 400" "400" "$code"
long_secret=$(head -c 600 /dev/zero | tr '\0' s)
req PUT /router "$key" "{\"url\": \"http://x\", \"clientId\": \"c\", \"clientSecret\": \"$long_secret\"}"
check "a secret longer than 512 bytes: 400" "400" "$code"
req PUT /router "$key" '{"url": "http://x", "clientId": "c"}'
check_match "a new router without its client secret: 400" '^400 router field "clientSecret" is required' \
    "$code $(json .status.message)"
req PUT /router "$key" '{"url": "http://x", "clientId": "c", "clientSecret": "s", "maxInFlight": 0}'
check "maxInFlight 0: 400" "400" "$code"
# the router starts disabled: tasks are created before it syncs
req PUT /router "$key" "{\"url\": \"$sim_url/\", \"clientId\": \"router-client\", \"clientSecret\": \"router-secret\",
                          \"apiKey\": \"router-api-key\", \"maxInFlight\": 3, \"enabled\": false}"
check "PUT /router: 200" "200" "$code"
check "the answer has no secret, says which are set" "false false true true $sim_url 3" \
    "$(json '[has("clientSecret"), has("apiKey"), .hasClientSecret, .hasApiKey, .url, .maxInFlight] | join(" ")')"
check "the secrets are stored sealed, never in clear" "0 2" \
    "$(sql "SELECT count(*) FILTER (WHERE client_secret LIKE '%router-secret%' OR api_key LIKE '%router-api-key%'),
                   count(*) FILTER (WHERE client_secret LIKE 'v2:%') + count(*) FILTER (WHERE api_key LIKE 'v2:%')
            FROM iwd.router" | tr '|' ' ')"
req GET /router "$key"
check "GET /router: no secret" "200 false disabled" \
    "$code $(json 'has("clientSecret") or has("apiKey")') $(json .status.state)"

# --- the flow -----------------------------------------------------------------------------------------
ids=()
for p in 10 50 30 40 20; do ids+=("$(task "flow-$p" "$p")"); done # ids: p10 p50 p30 p40 p20
sleep 1
check "disabled: nothing submitted" "0" "$(sim '.counters.posts')"
req PUT /router "$key" "{\"url\": \"$sim_url\", \"clientId\": \"router-client\", \"maxInFlight\": 3, \"enabled\": true}"
check "PUT /router keeps the secrets when they are omitted" "200 true true" \
    "$code $(json .hasClientSecret) $(json .hasApiKey)"
wait_until 20 bash -c "[ \"\$(curl -s $sim_url/sim/state | jq '.items | length')\" -ge 3 ]"
sleep 1
check "the best maxInFlight tasks are submitted (the first of the queue)" "30 40 50" \
    "$(sim '[.items[] | .taskId] | map(tostring) | join(" ")' |
       sed "s/\b${ids[1]}\b/50/; s/\b${ids[3]}\b/40/; s/\b${ids[2]}\b/30/" | tr ' ' '\n' | sort | xargs)"
check "they stay queued in iwd, with their routerId" "queued queued queued 3" \
    "$(status_of "${ids[1]}") $(status_of "${ids[3]}") $(status_of "${ids[2]}") \
$(sql "SELECT count(router_id) FROM iwd.router_task")"
check "the simulator received the bearer token and the API key" "0" "$(sim '.counters.unauthorized')"
wait_until 10 status_field_is state syncing
check "GET /router: syncing, 3 in flight" "syncing 3" "$(router_status state) $(router_status inFlight)"
sim_set '{"mode": "complete", "stepSeconds": 0.3}'
all_completed() { for id in "${ids[@]}"; do status_is "$id" completed || return 1; done; }
wait_until 60 all_completed
check "every task is completed through the router" "completed completed completed completed completed" \
    "$(for id in "${ids[@]}"; do status_of "$id"; done | xargs)"
check "a completed task's history: reserved, accepted, completed by the router's agent" \
    "created: reserved:agent- accepted:agent- completed:agent-" \
    "$(sql "SELECT string_agg(event || ':' || regexp_replace(coalesce(actor, ''), '[0-9]+$', ''), ' ' ORDER BY id)
            FROM iwd.task_event WHERE task_id = ${ids[1]}")"
check "the router's agents are known to iwd, not ready (they pull nothing themselves)" "not_ready" \
    "$(sql "SELECT DISTINCT state FROM iwd.agent WHERE id LIKE 'agent-%'")"
check "the event feed carries task.reserved and task.completed of the router's work" "2" \
    "$(sql "SELECT count(DISTINCT type) FROM iwd.event_outbox
            WHERE task_id = ${ids[1]} AND type IN ('task.reserved', 'task.completed')")"
check "nothing submitted twice" "5 0" "$(sim '.items | length') $(duplicates)"
in_flight_gauge_is() { [ "$(metrics | grep -c "^iwd_router_in_flight{ccid=\"t1\"} $1\$")" = 1 ]; }
wait_until 10 in_flight_gauge_is 0
check "metrics: iwd_router_requests_total counts submissions, iwd_router_in_flight and iwd_router_lag_seconds" \
    "5 1 1" "$(metric 'iwd_router_requests_total{ccid="t1",op="submit",result="ok"}') \
$(curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -c '^iwd_router_in_flight{ccid="t1"} 0') \
$(curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -c '^iwd_router_lag_seconds{ccid="t1"}')"
check "GET /router: lastSyncAt set, no lastError" "true null" \
    "$(router_status 'lastSyncAt != null') $(router_status lastError)"

# --- submission order, and the tasks the router holds kept from iwd's own agents -------------------------
# submissions reach the router in queue order, best first, even where requests sent side by side would
# arrive in any order (the simulator holds each submission up to jitterSeconds before receiving it)
sim_set '{"mode": "none", "jitterSeconds": 0.05}'
req PUT /router "$key" "{\"url\": \"$sim_url\", \"clientId\": \"router-client\", \"maxInFlight\": 20,
                          \"enabled\": false}"
req POST /tasks/bulk "$key" \
    "$(jq -c -n '[range(30) | {externalId: "order-\(.)", capturePoint: "router-order", priority: ((. * 7) % 5)}]')"
check "30 tasks for the order test (priorities 0 to 4, ties in creation order)" "201" "$code"
order_min=$(sql "SELECT min(id) FROM iwd.task WHERE capture_point = 'router-order'")
req PUT /router "$key" "{\"url\": \"$sim_url\", \"clientId\": \"router-client\", \"maxInFlight\": 20}"
order_items() { sim "[.items[] | select(.taskId >= $order_min)] | length"; }
order_items_are() { [ "$(order_items)" = "$1" ]; }
wait_until 60 order_items_are 20
sleep 1
check "the best 20 reached the router in queue order" \
    "$(sql "SELECT string_agg(id::text, ' ' ORDER BY n) FROM (
                SELECT id, row_number() OVER (ORDER BY priority DESC, business_value DESC, due_at ASC NULLS LAST,
                                                       created_at, id) AS n
                FROM iwd.task WHERE capture_point = 'router-order') q WHERE n <= 20")" \
    "$(sim "[.items[] | select(.taskId >= $order_min)] | sort_by(.arrival) | map(.taskId | tostring) | join(\" \")")"
# an agent of iwd's own pulling next_task gets the best task the router does not hold, never one it holds
req PUT /agents/local-1 "$key" '{"capacity": {"workitem": 5}, "state": "ready"}'
check "an agent of iwd's own" "200" "$code"
req POST /agents/local-1/next "$key" '{}'
check "next_task does not take a task the router holds: the 21st of the queue" "200 $(sql "
    SELECT id FROM iwd.task WHERE capture_point = 'router-order'
    ORDER BY priority DESC, business_value DESC, due_at ASC NULLS LAST, created_at, id OFFSET 20 LIMIT 1")" \
    "$code $(json .id)"
held_ids=$(sql "SELECT string_agg(task_id::text, ',') FROM iwd.router_task
                WHERE state IN ('submitting', 'queued') AND task_id >= $order_min")
check "none of the tasks at the router was reserved in iwd" "0 20" \
    "$(sql "SELECT count(*) FILTER (WHERE status <> 'queued'), count(*) FROM iwd.task WHERE id IN ($held_ids)" |
       tr '|' ' ')"
given_back=$(sql "SELECT min(task_id) FROM iwd.router_task WHERE state = 'queued' AND task_id >= $order_min
                  AND task_id IN (SELECT id FROM iwd.task WHERE priority = (SELECT max(priority) FROM iwd.task
                                                                            WHERE capture_point = 'router-order'))")
sim_set '{"jitterSeconds": 0}'
sim_item "$(item_of_task "$given_back")" '{"state": "stopped"}'
wait_until 20 sql_is t1 returned "SELECT state FROM iwd.router_task WHERE task_id = $given_back"
req POST /agents/local-1/next "$key" '{}'
check "a task the router gave back (stopped there) is taken by iwd's agent again" "200 $given_back" \
    "$code $(json .id)"
# the order test's tasks leave: canceled, so stopped at the router
sql "SELECT count(iwd.cancel_task(id, 'order test over')) FROM iwd.task WHERE capture_point = 'router-order'" \
    >/dev/null
req PUT /agents/local-1 "$key" '{"capacity": {"workitem": 5}, "state": "not_ready"}'
req PUT /router "$key" "{\"url\": \"$sim_url\", \"clientId\": \"router-client\", \"maxInFlight\": 3}"
wait_until 30 sql_is t1 0 "SELECT count(*) FROM iwd.router_task WHERE state <> 'returned'"
check "the order test's tasks are stopped at the router" "0" "$(in_flight)"

# --- displacement -------------------------------------------------------------------------------------
# the agents take nothing now: what is submitted stays queued at the router
sim_set '{"mode": "none"}'
p10=$(task disp-10 10); p20=$(task disp-20 20); p30=$(task disp-30 30)
wait_until 20 item_state_is "$p10" queued
check "a full window: the three tasks are at the router" "queued queued queued 3" \
    "$(sim_state_of "$(item_of_task "$p10")") $(sim_state_of "$(item_of_task "$p20")") \
$(sim_state_of "$(item_of_task "$p30")") $(in_flight)"
posts0=$(sim '.counters.posts')
p90=$(task disp-90 90)
wait_until 20 item_state_is "$p90" queued
check "a better task arriving displaces the lowest: stopped at the router, the better one submitted" \
    "stopped queued queued queued" \
    "$(sim_state_of "$(item_of_task "$p10")") $(sim_state_of "$(item_of_task "$p90")") \
$(sim_state_of "$(item_of_task "$p20")") $(sim_state_of "$(item_of_task "$p30")")"
check "the displaced task stays queued in iwd, no longer at the router; still 3 in flight" "queued  3" \
    "$(status_of "$p10") $(router_id_of "$p10") $(in_flight)"
check "one submission for the one better task" "1" "$(($(sim '.counters.posts') - posts0))"

# --- propagation of iwd's actions -----------------------------------------------------------------------
req POST "/tasks/$p20/hold" "$key" '{"reason": "waiting for the customer"}'
wait_until 20 item_state_is "$p20" stopped
check "hold in iwd stops the task at the router" "200 stopped" "$code $(sim_state_of "$(item_of_task "$p20")")"
wait_until 20 item_state_is "$p10" queued
check "the place it left takes the displaced task again (a new submission)" "queued" \
    "$(sim_state_of "$(item_of_task "$p10")")"
req POST "/tasks/$p30/cancel" "$key" '{"reason": "duplicate"}'
wait_until 20 item_state_is "$p30" stopped
check "cancel in iwd stops it at the router" "200 stopped" "$code $(sim_state_of "$(item_of_task "$p30")")"
req POST "/tasks/$p90/complete" "$key" '{}'
wait_until 20 item_state_is "$p90" stopped
check "complete in iwd (a supervisor) stops it at the router" "200 stopped" \
    "$code $(sim_state_of "$(item_of_task "$p90")")"
old_item=$(item_of_task "$p10")
req POST "/tasks/$p10/reprioritize" "$key" '{"priority": 70}'
resubmitted() { # resubmitted TASK OLD-ITEM: the old work item stopped, one new one queued
    [ "$(sim "[.items[] | select(.taskId == $1 and .state == \"queued\")] | length")" = 1 ] &&
        [ "$(sim_state_of "$2")" = stopped ]
}
wait_until 20 resubmitted "$p10" "$old_item"
check "reprioritize in iwd: stopped and submitted again with the new priority" "stopped queued" \
    "$(sim_state_of "$old_item") $(sim_state_of "$(item_of_task "$p10")")"
req POST /tasks "$key" "{\"externalId\": \"exp-1\", \"capturePoint\": \"router-test\", \"priority\": 95,
                        \"expiresAt\": \"$(date -u -d '+3 seconds' +%Y-%m-%dT%H:%M:%SZ)\"}"
pexp=$(json .id)
wait_until 20 item_state_is "$pexp" queued
sleep 4
sql "SELECT iwd.tick()" >/dev/null
wait_until 20 item_state_is "$pexp" stopped
check "expiry in iwd stops it at the router" "expired stopped" \
    "$(status_of "$pexp") $(sim_state_of "$(item_of_task "$pexp")")"

# --- the router's own changes -----------------------------------------------------------------------------
sim_set '{"mode": "offer"}'
wait_until 20 status_is "$p10" assigned
check "offered at the router: reserved in iwd to that agent, without a reservation timeout" "assigned agent- " \
    "$(status_of "$p10") $(sql "SELECT regexp_replace(assigned_to, '[0-9]+$', '') || ' '
                                     || coalesce(reserved_until::text, '') FROM iwd.task WHERE id = $p10")"
item=$(item_of_task "$p10")
sim_set '{"mode": "none"}'
sim_item "$item" '{"state": "rejected"}'
wait_until 20 status_is "$p10" queued
check "rejected by the router: back to queued in iwd (never rejected), the event is task.declined" "queued declined" \
    "$(status_of "$p10") $(sql "SELECT event FROM iwd.task_event WHERE task_id = $p10 ORDER BY id DESC LIMIT 1")"
sleep 2
check "a task the router rejected is not submitted again at once" "$item" "$(item_of_task "$p10")"
p60=$(task stop-60 60)
wait_until 20 item_state_is "$p60" queued
sim_item "$(item_of_task "$p60")" '{"state": "stopped"}'
wait_until 20 sql_is t1 "" \
    "SELECT router_id FROM iwd.router_task WHERE task_id = $p60"
check "stopped by the router: still queued in iwd, no longer counted at the router" "queued " \
    "$(status_of "$p60") $(router_id_of "$p60")"
sim_set '{"mode": "accept"}'
# (the tasks rejected or stopped by the router just now are held back 30 s before they are submitted again)
wait_until 60 sql_at_least t1 1 \
    "SELECT count(*) FROM iwd.task WHERE status = 'assigned' AND accepted_at IS NOT NULL"
acc=$(sql "SELECT id FROM iwd.task WHERE status = 'assigned' AND accepted_at IS NOT NULL ORDER BY id LIMIT 1")
check "accepted at the router: accepted in iwd" "accepted" \
    "$(sql "SELECT event FROM iwd.task_event WHERE task_id = $acc AND event = 'accepted'")"
req POST "/tasks/$acc/cancel" "$key" '{}'
wait_until 20 item_state_is "$acc" stopped
check "cancel of a task accepted at the router stops it there" "200 canceled stopped" \
    "$code $(status_of "$acc") $(sim_state_of "$(item_of_task "$acc")")"

# --- a router that lost the cursor: the work items it holds retrieved one by one ---------------------------
sim_set '{"mode": "none"}'
pr=$(task retrieve-1 97)
wait_until 20 item_state_is "$pr" queued
retrieves0=$(sim '.counters.retrieves')
# offered to an agent, then the router forgets its journal: that change is not to be had from a pull
sim_item "$(item_of_task "$pr")" '{"state": "offered", "agent": "agent-9", "forgetJournal": true}'
wait_until 30 status_is "$pr" assigned
check "a pull answered 410 (cursor unknown): the work items retrieved, the offer applied in iwd" \
    "assigned agent-9 yes" \
    "$(status_of "$pr") $(sql "SELECT assigned_to FROM iwd.task WHERE id = $pr") \
$([ "$(sim '.counters.retrieves')" -gt "$retrieves0" ] && [ "$(sim '.counters.gone')" -ge 1 ] && echo yes || echo no)"
check "retrieve counted in the metrics" "yes" "$([ "$(requests retrieve ok)" -ge 1 ] && echo yes || echo no)"
cursor_past_horizon() { [ "$(sql "SELECT cursor FROM iwd.router")" -ge "$(sim '.horizon')" ]; }
wait_until 10 cursor_past_horizon
check "the pull goes on from the router's new cursor" "yes syncing" \
    "$(cursor_past_horizon && echo yes || echo no) $(router_status state)"
sim_item "$(item_of_task "$pr")" '{"state": "rejected"}'
wait_until 20 status_is "$pr" queued
check "the changes after it come through the pull again" "queued" "$(status_of "$pr")"
# a router that answers 410 even for the cursor it gave: a failed round (retried with back-off), not a loop
sim_set '{"alwaysGone": true}'
wait_until 20 status_field_matches lastError "410 for the cursor its own 410 gave"
pulls0=$(sim '.counters.pulls')
sleep 3
check "410 again for its own cursor: reported, retried with back-off (at most 12 pulls in 3 s)" "failing yes" \
    "$(router_status state) $(n=$(($(sim '.counters.pulls') - pulls0)); [ "$n" -le 12 ] && echo yes || echo "$n pulls")"
sim_set '{"alwaysGone": false}'
wait_until 30 status_field_is state syncing
check "the router keeping its cursor again: syncing" "syncing" "$(router_status state)"

# --- faults ---------------------------------------------------------------------------------------------
# live_twice: tasks with more than one work item live at the router at once (a duplicate submission)
live_twice() {
    sim '[.items[] | select(.state == "queued" or .state == "offered" or .state == "accepted") | .taskId]
         | group_by(.) | map(select(length > 1)) | length'
}
api_answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $key" "$base/tasks?limit=1")" = 200 ]; }
sim_set '{"mode": "complete", "stepSeconds": 0.1}'

# the router down (connection refused), then up again (a restart: its tokens are gone, its work items kept)
stop_sim
f1=$(task down-1 99)
wait_until 20 status_field_is state failing
check_match "router down: GET /router says failing with the reason" "not reachable" "$(router_status lastError)"
unreachable0=$(metric 'iwd_router_requests_total{ccid="t1",op="submit",result="unreachable"}')
sleep 6
unreachable1=$(metric 'iwd_router_requests_total{ccid="t1",op="submit",result="unreachable"}')
check "router down: retried with back-off, not in a tight loop (at most 6 attempts in 6 s)" "yes" \
    "$([ "$unreachable1" -ge 1 ] && [ $((unreachable1 - unreachable0)) -le 6 ] && echo yes ||
       echo "$unreachable0 -> $unreachable1")"
check "router down: the API answers meanwhile" "yes" "$(api_answers && echo yes || echo no)"
start_sim
wait_until 40 status_is "$f1" completed
check "router back: the task waiting is submitted and completed, the state syncing again" "completed syncing" \
    "$(status_of "$f1") $(router_status state)"
check "a restarted router's refused tokens were replaced" "yes" \
    "$([ "$(metric 'iwd_router_requests_total{ccid="t1",op="token",result="ok"}')" -ge 2 ] && echo yes || echo no)"

# 5xx answers
sim_set '{"fail5xx": -1}'
f2=$(task fail5xx-1 99)
wait_until 20 status_field_matches lastError "HTTP 503"
unavailable=$(($(metric 'iwd_router_requests_total{ccid="t1",op="submit",result="unavailable"}') + \
    $(metric 'iwd_router_requests_total{ccid="t1",op="pull",result="unavailable"}')))
check "5xx: reported in GET /router and counted as unavailable" "failing yes" \
    "$(router_status state) $([ "$unavailable" -ge 1 ] && echo yes || echo no)"
sim_set '{"fail5xx": 0}'
wait_until 40 status_is "$f2" completed
check "5xx over: the task is completed" "completed" "$(status_of "$f2")"

# slow answers (longer than IWD_ROUTER_TIMEOUT_MS)
sim_set '{"slowSeconds": 2.5}'
f3=$(task slow-1 99)
wait_until 30 status_field_matches lastError "no answer from the router within 1500 ms"
timeouts=$(($(metric 'iwd_router_requests_total{ccid="t1",op="submit",result="timeout"}') + \
    $(metric 'iwd_router_requests_total{ccid="t1",op="pull",result="timeout"}')))
check "slow router: timeouts reported and counted" "failing yes" \
    "$(router_status state) $([ "$timeouts" -ge 1 ] && echo yes || echo no)"
check "slow router: the API answers meanwhile" "yes" "$(api_answers && echo yes || echo no)"
sim_set '{"slowSeconds": 0}'
wait_until 40 status_is "$f3" completed
check "slow router over: the task is completed, a repeated submission made no second work item" "completed 0" \
    "$(status_of "$f3") $(live_twice)"

# an expired token: refused once, replaced, the round run again
tokens0=$(sim '.counters.tokens')
curl -s -o /dev/null -X POST "$sim_url/sim/expire-tokens"
f4=$(task token-1 99)
wait_until 40 status_is "$f4" completed
check "expired token: a new one fetched, the task completed" "completed yes" \
    "$(status_of "$f4") $([ "$(sim '.counters.tokens')" -gt "$tokens0" ] && echo yes || echo no)"
check "expired token: counted as unauthorized" "yes" \
    "$([ $(($(requests submit unauthorized) + $(requests pull unauthorized))) -ge 1 ] && echo yes || echo no)"

# invalid credentials: reported, retried with back-off; a PUT with the right secret resumes at once
sim_set '{"clientSecret": "rotated-secret"}'
curl -s -o /dev/null -X POST "$sim_url/sim/expire-tokens"
f5=$(task creds-1 99)
wait_until 20 status_field_matches lastError "refused the client credentials"
refused0=$(sim '.counters.tokensRefused')
sleep 6
refused1=$(sim '.counters.tokensRefused')
check "invalid credentials: reported and retried with back-off (at most 4 token requests in 6 s)" "failing yes" \
    "$(router_status state) $([ $((refused1 - refused0)) -le 4 ] && echo yes || echo "$refused0 -> $refused1")"
check "invalid credentials: counted" "yes" \
    "$([ "$(requests token unauthorized)" -ge 1 ] && echo yes || echo no)"
req PUT /router "$key" "{\"url\": \"$sim_url\", \"clientId\": \"router-client\", \"clientSecret\": \"rotated-secret\",
                          \"maxInFlight\": 3}"
wait_until 30 status_is "$f5" completed
check "the right secret set again: synced, the task completed" "completed syncing" \
    "$(status_of "$f5") $(router_status state)"
check "no task was ever live twice at the router" "0" "$(live_twice)"

# --- kill -9 of the sidecar mid-sync ------------------------------------------------------------------------
req PUT /router "$key" "{\"url\": \"$sim_url\", \"clientId\": \"router-client\", \"maxInFlight\": 8}"
sim_set '{"mode": "complete", "stepSeconds": 0.2, "agents": 4}'
posts0=$(sim '.counters.posts')
req POST /tasks/bulk "$key" \
    "$(jq -c -n '[range(40) | {externalId: "kill-\(.)", capturePoint: "router-kill", priority: (. % 7)}]')"
check "40 tasks for the kill test" "201" "$code"
wait_until 30 bash -c "[ \"\$(curl -s $sim_url/sim/state | jq .counters.posts)\" -ge $((posts0 + 10)) ]"
kill -9 "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null
start_sidecar || fail_setup "the sidecar did not start again"
wait_until 120 sql_is t1 40 \
    "SELECT count(*) FROM iwd.task_closed WHERE capture_point = 'router-kill' AND status = 'completed'"
check "after kill -9 mid-sync: every task completed" "40" \
    "$(sql "SELECT count(*) FROM iwd.task_closed WHERE capture_point = 'router-kill' AND status = 'completed'")"
kill_ids=$(sql "SELECT string_agg(id::text, ',') FROM iwd.task_closed WHERE capture_point = 'router-kill'")
check "no duplicate submission: one work item per task at the router" "0" \
    "$(sim "[.items[] | select(.state != \"stopped\") | select(.taskId as \$t | [$kill_ids] | any(. == \$t)) | .taskId]
            | group_by(.) | map(select(length > 1)) | length")"
check "no change lost or applied twice: one completed event per task, each work item completed" "40 40" \
    "$(sql "SELECT count(*), count(DISTINCT e.task_id) FROM iwd.task_event e JOIN iwd.task_closed c ON c.id = e.task_id
            WHERE c.capture_point = 'router-kill' AND e.event = 'completed'" | tr '|' ' ')"

# --- two replicas ------------------------------------------------------------------------------------------
sidecar_a=$sidecar_pid
start_sidecar "$http_port_b" || fail_setup "replica b did not start"
replica_b=$sidecar_pid; sidecar_pid=$sidecar_a
req POST /tasks/bulk "$key" \
    "$(jq -c -n '[range(20) | {externalId: "two-\(.)", capturePoint: "router-two", priority: 5}]')"
wait_until 60 sql_is t1 20 \
    "SELECT count(*) FROM iwd.task_closed WHERE capture_point = 'router-two'"
holder=$(router_status syncedBy)
check_match "two replicas: one holds the sync" "." "$holder"
check "two replicas: every task completed once, none live twice" "20 0" \
    "$(sql "SELECT count(*) FROM iwd.task_event e JOIN iwd.task_closed c ON c.id = e.task_id
            WHERE c.capture_point = 'router-two' AND e.event = 'completed'") $(live_twice)"
# the holder dies: the other takes over once its lease has passed
victim=$sidecar_a; survivor=$replica_b
if grep -q "replica $holder" "$work/sidecar-$http_port_b.log"; then victim=$replica_b; survivor=$sidecar_a; fi
kill -9 "$victim"; wait "$victim" 2>/dev/null
[ "$survivor" = "$replica_b" ] && base="http://127.0.0.1:$http_port_b/iwd/v3"
req POST /tasks/bulk "$key" \
    "$(jq -c -n '[range(10) | {externalId: "takeover-\(.)", capturePoint: "router-takeover", priority: 5}]')"
wait_until 60 sql_is t1 10 \
    "SELECT count(*) FROM iwd.task_closed WHERE capture_point = 'router-takeover'"
check "the replica holding the sync killed: the other takes over, every task completed" "10" \
    "$(sql "SELECT count(*) FROM iwd.task_closed WHERE capture_point = 'router-takeover' AND status = 'completed'")"
check_match "the sync is held by the survivor now" "." "$(router_status syncedBy | grep -v "^$holder\$")"
check "no task was ever live twice at the router" "0" "$(live_twice)"
# the survivor is stopped by the cleanup
sidecar_pid=$survivor; replica_b=""

# --- provisioning's tenant.gws ---------------------------------------------------------------------------
key2=tenant-key-router-0002
req POST /provisioning "$admin_key" \
    "$(prov t2 t2 $key2 '{"url": "http://x", "clientId": "c", "clientSecret": "s", "color": 1}')"
check_match "tenant.gws with an unknown key: 400 naming it" '^400 tenant.gws: unknown key "color"' \
    "$code $(json .status.message)"
req POST /provisioning "$admin_key" "$(prov t2 t2 $key2 '{"url": "http://x", "clientId": "c", "clientSecret": 7}')"
check_match "tenant.gws with a secret that is not a string: 400" '^400 tenant.gws: router field "clientSecret"' \
    "$code $(json .status.message)"
req POST /provisioning "$admin_key" "$(prov t2 t2 $key2 "{\"url\": \"$sim_url\", \"clientId\": \"router-client\",
    \"clientSecret\": \"rotated-secret\", \"apiKey\": \"router-api-key\", \"maxInFlight\": 2}")"
check "tenant t2 provisioned with tenant.gws" "200" "$code"
req GET /router "$key2"
check "tenant.gws configures the tenant's router (no secret returned)" "200 true true 2 false" \
    "$code $(json .hasClientSecret) $(json .hasApiKey) $(json .maxInFlight) $(json 'has("clientSecret")')"
check "the registry keeps tenant.gws with its secrets sealed, never in clear" "0 1" \
    "$(cluster_sql -d control -c "SELECT count(*) FILTER (WHERE gws::text LIKE '%rotated-secret%'
                                                               OR gws::text LIKE '%router-api-key%'),
                                         count(*) FILTER (WHERE gws->>'clientSecret' LIKE 'v2:%')
                                  FROM iwd_control.tenant WHERE ccid = 't2'" | tr '|' ' ')"
req POST /tasks "$key2" '{"externalId": "gws-1", "capturePoint": "router-test", "priority": 1}'
g1=$(json .id)
wait_until 40 sql_is t2 completed \
    "SELECT status FROM iwd.task_closed WHERE id = $g1"
check "a task of the tenant provisioned with tenant.gws is completed through the router" "completed" \
    "$(cluster_sql -d t2 -c "SELECT status FROM iwd.task_closed WHERE id = $g1")"
req DELETE /router "$key2"
check "DELETE /router" "200 true" "$code $(json .deleted)"
req GET /router "$key2"
check "after DELETE /router: 404" "404" "$code"

# --- IWD_GWS_* (Helm gws.*): the router of tenants provisioned without tenant.gws ----------------------------
sidecar_stop
base="http://127.0.0.1:$http_port/iwd/v3"
start_sidecar "$http_port" IWD_GWS_URL="$sim_url" IWD_GWS_CLIENT_ID=router-client IWD_GWS_CLIENT_SECRET=rotated-secret \
    IWD_GWS_API_KEY=router-api-key || fail_setup "the sidecar did not start with IWD_GWS_*"
cluster_client createdb t3 || fail_setup "createdb t3 failed"
key3=tenant-key-router-0003
req POST /provisioning "$admin_key" "$(prov t3 t3 $key3)"
check "tenant t3 provisioned without tenant.gws" "200" "$code"
req GET /router "$key3"
check "IWD_GWS_* configure its router" "200 $sim_url router-client true true" \
    "$code $(json .url) $(json .clientId) $(json .hasClientSecret) $(json .hasApiKey)"
req POST /provisioning "$admin_key" "$(prov t3 t3 $key3 '{"maxInFlight": 1}')"
req GET /router "$key3"
check "tenant.gws's members over IWD_GWS_*" "200 1 $sim_url" "$code $(json .maxInFlight) $(json .url)"
req POST /tasks "$key3" '{"externalId": "gws-default-1", "capturePoint": "router-test", "priority": 1}'
g3=$(json .id)
wait_until 40 sql_is t3 completed \
    "SELECT status FROM iwd.task_closed WHERE id = $g3"
check "its task is completed through that router" "completed" \
    "$(cluster_sql -d t3 -c "SELECT status FROM iwd.task_closed WHERE id = $g3")"

echo "sidecar log clean"
check "no sanitizer report" "yes" "$(sidecar_log_clean && echo yes || echo no)"
summary
