#!/usr/bin/env bash
# iwd-sidecar end-to-end tests: a real PostgreSQL (temporary cluster preloading iwd), a real
# redis-server, a real prometheus-pushgateway and the sidecar built with AddressSanitizer, exercised
# over HTTP with curl. Every server is stopped at the end, even on failure.
# Ends with "sidecar: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
sidecar_dir=$(pwd)
suite=sidecar
# shellcheck source=../../scripts/lib.sh
. ../scripts/lib.sh
# shellcheck source=../../tests/openapi/proxy.sh
. ../tests/openapi/proxy.sh
work=$(work_dir sidecar-test)
pids=()
# the tests' own psql and createdb calls below: as the invoking user, logged in as the cluster's superuser
as_user=("${as_client[@]}")
pg_port=$(free_port); redis_port=$(free_port); http_port=$(free_port); push_port=$(free_port); dead_port=$(free_port)
admin_key="admin-key-for-tests"
secret_key="server-secret-for-tests-0123456789abcdef"
export IWD_SECRET_KEY=$secret_key   # every sidecar started here, unless a test says otherwise
metrics_port=$(free_port); metrics_url="http://127.0.0.1:$metrics_port/metrics"
metrics_ttl_ms=2000
base="http://127.0.0.1:$http_port/iwd/v3"

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    openapi_proxy_stop
    servers_stop immediate
    sleep 0.2
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT


start_sidecar() { # start_sidecar [NAME=VALUE...]: the settings below, overridden by the arguments
    IWD_LISTEN=127.0.0.1 IWD_PORT=$http_port IWD_ADMIN_API_KEY=$admin_key \
    IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control user=postgres" \
    IWD_REDIS_NODES="redis://127.0.0.1:$redis_port" IWD_REDIS_PASSWORD=redis-secret IWD_THREADS=2 \
    IWD_MAX_BODY_BYTES=4096 IWD_PUSHGATEWAY_URL="http://127.0.0.1:$push_port" IWD_PUSH_INTERVAL=1 \
    IWD_METRICS_TTL_MS=$metrics_ttl_ms IWD_METRICS_LISTEN=127.0.0.1 IWD_METRICS_PORT=$metrics_port \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:verify_asan_link_order=0 UBSAN_OPTIONS=print_stacktrace=1 \
    LD_PRELOAD="$work/recycle_guard.so" env "$@" ./iwd-sidecar-asan >>"$work/sidecar.log" 2>&1 &
    sidecar_pid=$!
    for _ in $(seq 1 100); do
        curl -sf "$base/health/live" >/dev/null && return 0
        sleep 0.1
    done
    echo "the sidecar did not start:"; cat "$work/sidecar.log"; return 1
}

make -s asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"
# every sidecar started by start_sidecar runs with tests/recycle_guard.c: it aborts when one of libh2o's
# per-thread buffer allocators is used by a second thread (a race that corrupts it only once in a while)
cc -std=gnu11 -Wall -Wextra -Werror -O1 -shared -fPIC -o "$work/recycle_guard.so" tests/recycle_guard.c -ldl -lpthread \
    || fail_setup "cannot build tests/recycle_guard.c"

# --- servers ---------------------------------------------------------------------------------------
cluster_init "$work/pg" "listen_addresses = '127.0.0.1'
iwd.max_workers = 0" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
for db in control tenant_a tenant_b; do
    cluster_client createdb "$db" || fail_setup "createdb $db failed"
done
redis_start "$work" redis-secret || fail_setup "redis-server did not start"
prometheus-pushgateway --web.listen-address="127.0.0.1:$push_port" >"$work/push.log" 2>&1 &
pids+=($!)
start_sidecar || fail_setup "sidecar start failed"
# every req (here and in tests/*.sh) through the proxy that checks it against openapi.yaml
openapi_proxy_start "$work/openapi" || fail_setup "the OpenAPI proxy did not start"

# --- command line ----------------------------------------------------------------------------------
help=$(./iwd-sidecar-asan --help)
missing=""
for v in IWD_LISTEN IWD_PORT IWD_CONTROL_DB IWD_ADMIN_API_KEY IWD_REDIS_NODES IWD_REDIS_PASSWORD IWD_REDIS_TLS \
         IWD_REDIS_CLUSTER IWD_THREADS IWD_MAX_BODY_BYTES IWD_LOG_LEVEL IWD_PUSHGATEWAY_URL IWD_PUSH_INTERVAL \
         IWD_METRICS_TTL_MS IWD_METRICS_LISTEN IWD_METRICS_PORT IWD_STATEMENT_TIMEOUT_MS IWD_LOCK_TIMEOUT_MS \
         IWD_WAITING_CALLS_PER_TENANT IWD_WAITING_CALLS_PER_THREAD IWD_SECRET_KEY IWD_SECRET_KEY_PREVIOUS \
         IWD_AUTH_FAILURE_LIMIT IWD_PG_IDLE_TIMEOUT_S IWD_PG_MAX_CONNECTIONS_PER_SERVER IWD_PG_PREPARE; do
    grep -q "$v" <<<"$help" || missing="$missing $v"
done
check "--help documents every environment variable" "" "$missing"
IWD_CONTROL_DB= ./iwd-sidecar-asan >/dev/null 2>&1
check "a missing IWD_CONTROL_DB is refused" "2" "$?"
for ttl in -1 0 x 3600001; do
    IWD_METRICS_TTL_MS=$ttl IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=$admin_key ./iwd-sidecar-asan >/dev/null 2>&1
    check "IWD_METRICS_TTL_MS=$ttl is refused" "2" "$?"
done
for setting in IWD_METRICS_PORT=65536 IWD_STATEMENT_TIMEOUT_MS=0 IWD_STATEMENT_TIMEOUT_MS=x IWD_LOCK_TIMEOUT_MS=99 \
               IWD_WAITING_CALLS_PER_TENANT=0 IWD_WAITING_CALLS_PER_THREAD=-1 IWD_PG_IDLE_TIMEOUT_S=0 \
               IWD_PG_MAX_CONNECTIONS_PER_SERVER=0 IWD_PG_MAX_CONNECTIONS_PER_SERVER=x IWD_PG_PREPARE=maybe; do
    env "$setting" IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=$admin_key ./iwd-sidecar-asan >/dev/null 2>&1
    check "$setting is refused" "2" "$?"
done

# --- health ----------------------------------------------------------------------------------------
req GET /health/live ""; check "health/live" "200" "$code"
check "health/live names the release the sidecar was built from (the top Makefile's EXTVERSION)" \
    "$(sed -n 's/^EXTVERSION *= *//p' ../Makefile)" "$(json .version)"
req GET /health/ready ""; check "health/ready with the control database up" "200" "$code"

# --- provisioning ----------------------------------------------------------------------------------
prov() { # prov CCID DB TENANT_KEY [DM_KEY] [PORT]
    local dm=""; [ -n "${4:-}" ] && dm=", \"IWD_APIKEY_IWDDM\": \"$4\""
    echo "{\"tenant\": {\"id\": \"$1\", \"name\": \"Tenant $1\", \"ccid\": \"$1\"},
           \"iwd\": {\"url\": \"http://iwd\", \"db\": {\"host\": \"127.0.0.1\", \"port\": ${5:-$pg_port},
           \"database\": \"$2\", \"user\": \"postgres\", \"password\": \"pw'x\", \"ssl\": false},
           \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$3\"$dm}}, \"iwdEmail\": {\"url\": \"http://mail\"}}"
}
req POST /provisioning "" "$(prov a tenant_a tenant-key-a-0001)"; check "provisioning without a key: 401" "401" "$code"
req POST /provisioning "wrong" "$(prov a tenant_a tenant-key-a-0001)"; check "provisioning with a tenant key: 401" "401" "$code"
req POST /provisioning "$admin_key" '{"tenant": {"id": "a"}, "iwd": {}}'
check "provisioning without tenant.ccid: 400" "400" "$code"
check "the error names the missing parameter" "tenant.ccid is required" "$(json .status.message)"
req POST /provisioning "$admin_key" "$(prov a tenant_a tenant-key-a-0001 | jq '.iwd.db.port = "x"')"
check "provisioning with a mistyped port: 400" "400" "$code"
req POST /provisioning "$admin_key" '{"tenant": '
check "provisioning with malformed JSON: 400" "400" "$code"
for ccid in "" "a b" "a/b" "a%0d%0aX" "$(printf 'a\r\nX-Injected: 1')" "$(head -c 65 /dev/zero | tr '\0' c)" "é"; do
    req POST /provisioning "$admin_key" "$(prov a tenant_a tenant-key-a-0001 | jq --arg c "$ccid" '.tenant.ccid = $c')"
    check "provisioning with the ccid $(jq -Rc . <<<"$ccid" | head -c 30): 400 naming tenant.ccid" "400 tenant.ccid" \
        "$code $(json .status.message | cut -d' ' -f1)"
done
req POST /provisioning "$admin_key" "$(prov a tenant_a short-key-15chr)"
check "a tenant key under 16 characters: 400 naming it" "400 iwd.apiKeys.IWD_APIKEY_TENANT must be at least 16 characters" \
    "$code $(json .status.message)"
req POST /provisioning "$admin_key" "$(prov a tenant_a tenant-key-a-0001 short-dm-key)"
check "a read-only key under 16 characters: 400 naming it" "400 iwd.apiKeys.IWD_APIKEY_IWDDM" \
    "$code $(json .status.message | cut -d' ' -f1)"
req POST /provisioning "$admin_key" "$(prov a tenant_a 'tenant key a 0001 with spaces')"
check "a tenant key with spaces: 400" "400" "$code"
req POST /provisioning "$admin_key" "$(prov a tenant_a tenant-key-a-0001 | jq '.iwd.db.port = "5432x"')"
check "a port with trailing characters: 400" "400 iwd.db.port" "$code $(json .status.message | cut -d' ' -f1)"
req POST /provisioning "$admin_key" "$(prov a tenant_a tenant-key-a-0001 | jq '.iwd.db = "x"')"
check "iwd.db not an object: 400" "400 iwd.db must be an object" "$code $(json .status.message)"
req POST /provisioning "$admin_key" "$(prov a tenant_a tenant-key-a-0001 | jq '.iwd.db.database = ("d" * 64)')"
check "a database name over 63 characters: 400" "400 iwd.db.database" "$code $(json .status.message | cut -d' ' -f1)"
req POST /provisioning "$admin_key" "$(prov z tenant_z tenant-key-z-0001 "" "$dead_port")"
check "provisioning an unreachable database: 502" "502" "$code"
check_match "the 502 gives the reason" "not reachable" "$(json .status.message)"
check "nothing was recorded for it" "0" \
    "$("${as_user[@]}" "$bindir/psql" -X -At -h "$work/pg" -p "$pg_port" control -c "SELECT count(*) FROM iwd_control.tenant WHERE ccid = 'z'")"
req POST /provisioning "$admin_key" "$(prov a tenant_a tenant-key-a-0001 report-key-a-0001)"
check "provisioning tenant a" "200 true" "$code $(json .created)"
req PUT /provisioning "$admin_key" "$(prov a tenant_a tenant-key-a-0001 report-key-a-0001)"
check "provisioning again (PUT) is safe" "200 true" "$code $(json .created)"
req POST /provisioning "$admin_key" "$(prov b tenant_b tenant-key-b-0001 | jq 'del(.iwd.db.password)')"
check "provisioning tenant b (no password)" "200" "$code"
req POST /provisioning "$admin_key" "$(prov c tenant_b tenant-key-c-0001)"
check "a database serves one tenant only: 409" "409" "$code"
control_sql() { "${as_user[@]}" "$bindir/psql" -X -At -h "$work/pg" -p "$pg_port" control -c "$1"; }
sha_a=$(printf %s tenant-key-a-0001 | sha256sum | cut -d' ' -f1)
stored=$(control_sql "SELECT count(*) FROM iwd_control.api_key k
                      WHERE k::text LIKE '%tenant-key-a-0001%' OR k::text LIKE '%$sha_a%'
                      UNION ALL SELECT count(DISTINCT salt) FROM iwd_control.api_key WHERE ccid = 'a'
                      UNION ALL SELECT count(*) FROM iwd_control.tenant
                      WHERE db_password LIKE '%pw''x%' OR db_password NOT LIKE 'v2:%'" | tr '\n' ' ')
check "API keys are stored as an index and a salted hash (neither the key nor its SHA-256), passwords sealed" \
    "0 2 0 " "$stored"
check "the tenant database has the extension and defaults" "t" \
    "$("${as_user[@]}" "$bindir/psql" -X -At -h "$work/pg" -p "$pg_port" tenant_a -c "SELECT count(*) > 0 FROM iwd.category")"

# --- tasks -----------------------------------------------------------------------------------------
req POST /tasks tenant-key-a-0001 '{"externalId": "INV-1", "capturePoint": "erp", "subject": "Approve ACME invoice"}'
check "create a task: 201" "201" "$code"
id=$(json .id)
req POST /tasks tenant-key-a-0001 '{"externalId": "INV-1", "capturePoint": "erp", "subject": "again"}'
check "re-submitting returns the same task" "201 $id Approve ACME invoice" "$code $(json .id) $(json .subject)"
req POST /tasks/bulk tenant-key-a-0001 '[{"externalId": "B-1", "capturePoint": "erp"}, {"externalId": "B-2", "capturePoint": "erp"}]'
check "bulk create: 201 with two tasks" "201 2" "$code $(json length)"
req POST /tasks/bulk tenant-key-a-0001 '[{"externalId": "B-3", "capturePoint": "erp"}, {"capturePoint": "erp"}]'
check "bulk create is all or nothing and names the element" "400 tasks[1]" "$code $(json .status.message | cut -d: -f1)"
req POST /tasks tenant-key-a-0001 '{"externalId": "X", "capturePoint": "erp", "colour": "red"}'
check "an unknown task field: 400" "400" "$code"
check_match "the error names the field" "colour" "$(json .status.message)"
req POST /tasks tenant-key-a-0001 '{"externalId": "X", "capturePoint": "erp", "dueAt": "tomorrow"}'
check "a malformed timestamp: 400" "400" "$code"
req POST /tasks tenant-key-a-0001 '{"externalId": "X", '
check "malformed JSON: 400" "400" "$code"
req POST /tasks tenant-key-a-0001 ''
check "no body: 400" "400" "$code"
req POST /tasks tenant-key-a-0001 "{\"externalId\": \"BIG\", \"capturePoint\": \"erp\", \"description\": \"$(head -c 5000 /dev/zero | tr '\0' x)\"}"
check "a body over the limit: 413 in JSON" "413 413" "$code $(json .status.code)"
req GET "/tasks/$id" tenant-key-a-0001; check "get a task" "200 INV-1" "$code $(json .externalId)"
req GET /tasks/999999 tenant-key-a-0001; check "an unknown task: 404" "404" "$code"
req GET /tasks/abc tenant-key-a-0001; check "a malformed id: 400" "400" "$code"
reuse=$(curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{http_code}:%{num_connects} ' -H 'x-api-key: tenant-key-a-0001' \
    "$base/tasks/999999" "$base/tasks/abc" "$base/tasks/$id")
check "answers of any status keep the connection open" "404:1 400:0 200:0 " "$reuse"
req PATCH "/tasks/$id" tenant-key-a-0001 '{"subject": "Approve ACME invoice 42", "priority": 70}'
check "patch a task" "200 70" "$code $(json .priority)"
req PATCH "/tasks/$id" tenant-key-a-0001 '{"status": "completed"}'
check "patching a maintained field: 400" "400" "$code"
req POST "/tasks/$id/hold" tenant-key-a-0001 '{"reason": "waiting"}'; check "hold" "200 held waiting" "$code $(json .status) $(json .holdReason)"
req POST "/tasks/$id/hold" tenant-key-a-0001; check "an illegal transition: 409" "409" "$code"
check_match "the 409 names current and requested state" "cannot hold task $id: it is held" "$(json .status.message)"
req POST "/tasks/$id/resume" tenant-key-a-0001; check "resume" "200 queued" "$code $(json .status)"
req POST "/tasks/$id/reprioritize" tenant-key-a-0001 '{"priority": 90}'; check "reprioritize" "200 90" "$code $(json .priority)"
req GET "/tasks/$id/history" tenant-key-a-0001; check "history lists the events" "200 created" "$code $(json '.[0].event')"
req GET /tasks/999999/history tenant-key-a-0001; check "history of an unknown task: 404" "404" "$code"

# --- agents ----------------------------------------------------------------------------------------
req PUT /agents/a17 tenant-key-a-0001 '{"name": "Dana Ruiz", "skills": {"invoices": 5}, "capacity": {"workitem": 1}}'
check "put an agent" "200 not_ready" "$code $(json .state)"
req POST /agents/a17/next tenant-key-a-0001; check "a not_ready agent gets nothing: 204" "204" "$code"
req POST /agents/a17/state tenant-key-a-0001 '{}'; check "state without a state: 400" "400" "$code"
req POST /agents/a17/state tenant-key-a-0001 '{"state": "busy"}'; check "an invalid state: 400" "400" "$code"
req POST /agents/a17/state tenant-key-a-0001 '{"state": "ready"}'; check "set the agent ready" "200 ready" "$code $(json .state)"
req GET /agents/a17 tenant-key-a-0001; check "get the agent" "200 Dana Ruiz" "$code $(json .name)"
req POST /agents/a17/next tenant-key-a-0001 '{"reserveSeconds": 120}'
check "next best task: the highest priority" "200 $id assigned a17" "$code $(json .id) $(json .status) $(json .assignedTo)"
req POST /agents/a17/next tenant-key-a-0001; check "capacity reached: 204" "204" "$code"
req POST "/tasks/$id/accept" tenant-key-a-0001 '{}'; check "accept without an agent: 400" "400" "$code"
req POST "/tasks/$id/accept" tenant-key-a-0001 '{"agent": "a17"}'; check "accept" "200" "$code"
req POST "/tasks/$id/complete" tenant-key-a-0001 '{"agent": "a17"}'; check "complete" "200 completed" "$code $(json .status)"
# the agent's loop in one round trip: complete?next=true (a17's capacity is one work item)
req POST /tasks tenant-key-a-0001 '{"externalId": "loop-1", "capturePoint": "erp", "priority": 100}'
req POST /tasks tenant-key-a-0001 '{"externalId": "loop-2", "capturePoint": "erp", "priority": 100}'
req POST /agents/a17/next tenant-key-a-0001; held=$(json .id)
req POST "/tasks/$held/complete?next=maybe" tenant-key-a-0001 '{"agent": "a17"}'
check "complete?next=maybe: 400" "400" "$code"
req POST "/tasks/$held/complete?next=true" tenant-key-a-0001 '{}'; check "complete?next=true without an agent: 400" "400" "$code"
req POST "/tasks/$id/complete?next=true" tenant-key-a-0001 '{"agent": "a17"}'
check "complete?next=true of a task the agent does not hold: 409" "409" "$code"
req POST "/tasks/$held/complete?next=true" tenant-key-a-0001 '{"agent": "a17"}'
check "complete?next=true: the completed task and the agent's next, reserved for it" \
    "200 $held completed assigned a17" \
    "$code $(json .completed.id) $(json .completed.status) $(json .next.status) $(json .next.assignedTo)"
req POST "/tasks/$(json .next.id)/complete?next=false" tenant-key-a-0001 '{"agent": "a17"}'
check "complete?next=false: the task document" "200 completed null" "$code $(json .status) $(json .completed)"
req POST "/tasks/$id/restart" tenant-key-a-0001; check "restart" "200 queued" "$code $(json .status)"
req POST "/tasks/$id/cancel" tenant-key-a-0001 '{"reason": "duplicate"}'; check "cancel" "200 canceled" "$code $(json .status)"
b1=$(curl -s -H 'x-api-key: tenant-key-a-0001' "$base/tasks?limit=1" | jq -r '.tasks[0].id')
req POST "/tasks/$b1/reject" tenant-key-a-0001 '{"reason": "cannot"}'; check "reject" "200 rejected" "$code $(json .status)"
req GET /agents tenant-key-a-0001; check "list agents" "200 1" "$code $(json length)"
req GET /agents/nobody tenant-key-a-0001; check "an unknown agent: 404" "404" "$code"

# --- URL decoding: each path segment and query value is decoded exactly once, never cut short -------
req GET '/agents/a17%00zzz' tenant-key-a-0001; check "%00 in a path segment: 400 in JSON" "400 400" "$code $(json .status.code)"
req GET '/agents/a17%4' tenant-key-a-0001; check "a truncated escape at the end of the path: 400" "400" "$code"
req GET '/agents/a17%' tenant-key-a-0001; check "a lone % at the end of the path: 400" "400" "$code"
req GET '/agents/a17%zz' tenant-key-a-0001; check "a non-hexadecimal escape: 400" "400" "$code"
req PUT '/agents/x%2541' tenant-key-a-0001 '{"name": "Percent"}'
check "%2541 is decoded once: the id is %41 literally" "200 x%41" "$code $(json .id)"
req GET '/agents/x%2541' tenant-key-a-0001; check "and is found under the same escaped path" "200 x%41" "$code $(json .id)"
req GET '/agents/xA' tenant-key-a-0001; check "no agent xA was made of it" "404" "$code"
req PUT '/agents/y%2Fz' tenant-key-a-0001 '{"name": "Slash"}'
check "an escaped slash stays inside its segment" "200 y/z" "$code $(json .id)"
req POST '/agents/y%2Fz/state' tenant-key-a-0001 '{"state": "ready"}'
check "and the segment is not split again by routing" "200 y/z ready" "$code $(json .id) $(json .state)"
req PUT '/agents/p+q' tenant-key-a-0001 '{"name": "Plus"}'; check "a + in a path segment is a plus" "200 p+q" "$code $(json .id)"
req GET '/tasks?capturePoint=erp%00x' tenant-key-a-0001; check "%00 in a query value: 400 in JSON" "400 400" "$code $(json .status.code)"
req GET '/tasks?capturePoint=erp%4' tenant-key-a-0001; check "a truncated escape at the end of the query: 400" "400" "$code"
req GET '/tasks?capturePoint=%65rp&limit=1' tenant-key-a-0001; check "a query value is decoded" "200 erp" "$code $(json '.tasks[0].capturePoint')"
req GET '/tasks?capturePoint=%2565rp' tenant-key-a-0001; check "a query value is decoded once" "200 0" "$code $(json '.tasks | length')"
printf '7\0' >"$work/nul_body"   # jansson reads a number up to the NUL and accepts it
code=$(curl -s -o "$work/body" -w '%{http_code}' -X PUT -H 'x-api-key: tenant-key-a-0001' \
    -H 'content-type: application/json' --data-binary @"$work/nul_body" "$base/agents/nul")
check "a body holding a NUL byte is malformed JSON: 400" "400 malformed JSON: the body holds a NUL byte" \
    "$code $(jq -r .status.message "$work/body")"
for agent in x%2541 y%2Fz p+q; do curl -s -o /dev/null -X DELETE -H 'x-api-key: tenant-key-a-0001' "$base/agents/$agent"; done

# --- configuration ---------------------------------------------------------------------------------
req PUT /departments/Finance tenant-key-a-0001 '{"description": "Money"}'; check "put a department" "200 Finance" "$code $(json .name)"
req PUT /processes/Invoices tenant-key-a-0001 '{"department": "Finance"}'; check "put a process" "200" "$code"
req PUT /categories/Invoices tenant-key-a-0001 '{"department": "Finance", "priority": 50, "slaMinutes": 60}'
check "put a category" "200 50" "$code $(json .priority)"
req PUT /categories/Bad tenant-key-a-0001 '{"priority": "high"}'; check "an invalid category: 400" "400" "$code"
req PUT /rules/classification/big tenant-key-a-0001 '{"order": 1, "when": {"field": "attributes.amount", "op": ">", "value": 100}, "set": {"category": "Invoices"}}'
check "put a classification rule" "200 classification" "$code $(json .kind)"
req PUT /rules/prioritization/gold2 tenant-key-a-0001 '{"when": {}, "set": {"queue": "x"}}'; check "an invalid rule: 400" "400" "$code"
req GET /rules/classification tenant-key-a-0001; check "list rules of a kind" "200" "$code"
req GET /rules/classification/big tenant-key-a-0001; check "get a rule" "200 big" "$code $(json .name)"
req PUT /calendars/office tenant-key-a-0001 '{"timeZone": "Europe/Paris"}'; check "put a calendar" "200" "$code"
req GET /categories tenant-key-a-0001; check "list categories" "200" "$code"
req GET /departments/Finance tenant-key-a-0001; check "get a department" "200" "$code"
req DELETE /departments/Finance tenant-key-a-0001; check "a department in use cannot be deleted: 409" "409" "$code"
req DELETE /rules/classification/big tenant-key-a-0001; check "delete a rule" "200" "$code"
req DELETE /rules/classification/big tenant-key-a-0001; check "delete it again: 404" "404" "$code"
req POST /tasks tenant-key-a-0001 '{"externalId": "C-1", "capturePoint": "erp", "category": "Invoices"}'
check "the configuration applies to new tasks" "201 Finance" "$code $(json .department)"

# --- the queue, search, pagination -----------------------------------------------------------------
for i in 1 2 3 4 5; do
    curl -s -o /dev/null -H 'x-api-key: tenant-key-a-0001' -H 'content-type: application/json' \
        --data-binary "{\"externalId\": \"Q-$i\", \"capturePoint\": \"crm\", \"priority\": $i, \"subject\": \"Refund $i\"}" "$base/tasks"
done
req GET "/tasks?capturePoint=crm&limit=2" tenant-key-a-0001
check "the queue, filtered, in order" "200 Q-5 Q-4" "$code $(json '[.tasks[].externalId] | join(" ")')"
cursor=$(json .nextCursor)
req GET "/tasks?capturePoint=crm&limit=2&cursor=$cursor" tenant-key-a-0001
check "the next page" "200 Q-3 Q-2" "$code $(json '[.tasks[].externalId] | join(" ")')"
req GET "/tasks?capturePoint=crm&limit=2&cursor=$(json .nextCursor)" tenant-key-a-0001
check "the last page has no cursor" "Q-1 null" "$(json '[.tasks[].externalId] | join(" ")') $(json .nextCursor)"
req GET "/tasks?q=refund+3" tenant-key-a-0001; check "full-text search" "200 Q-3" "$code $(json '.tasks[0].externalId')"
req GET "/tasks?status=completed,canceled" tenant-key-a-0001; check "closed statuses on request" "200" "$code"
req GET "/tasks?colour=red" tenant-key-a-0001; check "an unknown query parameter: 400" "400" "$code"
req GET "/tasks?limit=0" tenant-key-a-0001; check "a bad limit: 400" "400" "$code"
req GET "/tasks?status=done" tenant-key-a-0001; check "an unknown status: 400" "400" "$code"
req GET /queue/stats tenant-key-a-0001; check "queue statistics" "200" "$code"

# --- concurrent SQL calls: more than a thread's connections per tenant, and broken connections -------
codes=$(seq 1 48 | xargs -P 48 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H 'x-api-key: tenant-key-a-0001' "$base/tasks/$id" | sort | uniq -c | tr -s ' ')
check "48 concurrent reads, more than the threads' connections: all answered" " 48 200" "$codes"
codes=$(seq 1 24 | xargs -P 24 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H 'x-api-key: tenant-key-a-0001' -H 'content-type: application/json' \
    --data-binary '{"externalId": "P-{}", "capturePoint": "parallel"}' "$base/tasks" | sort | uniq -c | tr -s ' ')
check "24 concurrent creations: all answered" " 24 201" "$codes"
seq 1 32 | xargs -P 32 -I{} curl -s -o /dev/null --max-time 0.01 -H 'x-api-key: tenant-key-a-0001' "$base/tasks/$id" 2>/dev/null
req GET "/tasks/$id" tenant-key-a-0001; check "clients that leave before their answer do no harm" "200" "$code"
"${as_user[@]}" "$bindir/psql" -X -q -At -h "$work/pg" -p "$pg_port" postgres \
    -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'tenant_a' AND application_name = 'iwd-sidecar'" >/dev/null
sleep 0.2
ok=0
for i in 1 2 3 4 5 6; do req GET "/tasks/$id" tenant-key-a-0001; [ "$code" = 200 ] && ok=$((ok + 1)); done
check "after the tenant's connections are terminated, requests reconnect" "6" "$ok"

# a database that refuses every connection, under concurrent calls on both threads: each call's failed
# connection wakes its thread's loop from a connector thread (loops set up on the main thread once
# shared its socket buffer allocator between the worker threads, and such a burst corrupted it)
"${as_user[@]}" "$bindir/psql" -X -q -At -h "$work/pg" -p "$pg_port" postgres \
    -c "ALTER DATABASE tenant_a ALLOW_CONNECTIONS false" \
    -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'tenant_a' AND application_name = 'iwd-sidecar'" >/dev/null
codes=$(python3 - "$http_port" "/iwd/v3/tasks/$id" <<'PY'
import collections, http.client, sys, threading
port, path, counts, lock = int(sys.argv[1]), sys.argv[2], collections.Counter(), threading.Lock()
def client():
    for _ in range(4):  # a few connections each, so that both threads' listeners get some
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(150):
                c.request("GET", path, headers={"x-api-key": "tenant-key-a-0001"})
                r = c.getresponse(); r.read()
                with lock: counts[r.status] += 1
            c.close()
        except Exception as e:
            with lock: counts[type(e).__name__] += 1
            return
ts = [threading.Thread(target=client) for _ in range(12)]
for t in ts: t.start()
for t in ts: t.join()
print(" ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=str)))
PY
)
"${as_user[@]}" "$bindir/psql" -X -q -At -h "$work/pg" -p "$pg_port" postgres -c "ALTER DATABASE tenant_a ALLOW_CONNECTIONS true" >/dev/null
check "7200 calls while the tenant's database refuses connections: all 503" "7200 503" "$codes"
req GET "/tasks/$id" tenant-key-a-0001; check "the database accepts connections again: served" "200" "$code"

# --- least privilege: a tenant whose login is a member of iwd_app_<database>, not a superuser ---------
su_sql() { "${as_user[@]}" "$bindir/psql" -X -At -q -v ON_ERROR_STOP=1 -h "$work/pg" -p "$pg_port" "$@"; }
for db in tenant_app tenant_bare; do
    "${as_user[@]}" "$bindir/createdb" -h "$work/pg" -p "$pg_port" "$db" || fail_setup "createdb $db failed"
done
su_sql tenant_app -c "CREATE EXTENSION iwd" -c "CREATE ROLE app_login LOGIN PASSWORD 'pw''x' IN ROLE iwd_app_tenant_app" \
    || fail_setup "cannot prepare tenant_app"
check "the application login is not a superuser" "f" "$(su_sql tenant_app -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'app_login'")"
req POST /provisioning "$admin_key" "$(prov q tenant_bare tenant-key-q-0001 | jq '.iwd.db.user = "app_login"')"
check "a login that may not install the extension, on a database without it: 409" "409" "$code"
check_match "the 409 names what is missing" "lacks the extension iwd.*CREATE EXTENSION iwd" "$(json .status.message)"
req POST /provisioning "$admin_key" "$(prov p tenant_app tenant-key-p-0001 | jq '.iwd.db.user = "app_login"')"
check "provisioning with a member of iwd_app_<database>, the extension installed" "200 true" "$code $(json .created)"
req POST /tasks tenant-key-p-0001 '{"externalId": "APP-1", "capturePoint": "erp", "subject": "Least privilege", "skills": {"apps": 1}}'
check "least privilege: create a task" "201" "$code"
app_task=$(json .id)
req GET /tasks tenant-key-p-0001; check "least privilege: list the tasks" "200 1" "$code $(json '.tasks | length')"
req PUT /agents/p1 tenant-key-p-0001 '{"name": "Least", "skills": {"apps": 5}, "capacity": {"workitem": 1}, "state": "ready"}'
check "least privilege: put an agent" "200" "$code"
req POST /agents/p1/next tenant-key-p-0001; check "least privilege: next task" "200 $app_task assigned" "$code $(json .id) $(json .status)"
req POST "/tasks/$app_task/complete" tenant-key-p-0001 '{"agent": "p1"}'
check "least privilege: complete" "200 completed" "$code $(json .status)"
req GET /queue/stats tenant-key-p-0001; check "least privilege: queue statistics" "200" "$code"
check_match "superuser sessions are warned about (tenant a)" '"tenant sessions run as a superuser".*"a: user postgres of database tenant_a' \
    "$(cat "$work/sidecar.log")"
check "the application login's sessions are not" "0" "$(grep '"tenant sessions run as a superuser"' "$work/sidecar.log" | grep -c '"p: ')"

# --- keys, tenants, routes -------------------------------------------------------------------------
req GET "/tasks/$id" tenant-key-b-0001; check "another tenant's task: 404" "404" "$code"
req GET /tasks tenant-key-b-0001; check "a tenant without a database password is served" "200" "$code"
req GET "/tasks/$id" ""; check "no key: 401" "401" "$code"
req GET "/tasks/$id" report-key-a-0001; check "the read-only key reads" "200" "$code"
req POST /tasks report-key-a-0001 '{"externalId": "RO", "capturePoint": "erp"}'; check "the read-only key cannot write: 403" "403" "$code"
req GET /nothing tenant-key-a-0001; check "an unknown route: 404" "404" "$code"
req DELETE "/tasks/$id" tenant-key-a-0001; check "a wrong method: 405" "405" "$code"
req GET "/tasks/$id" not-a-key; check "an unknown key: 401" "401" "$code"
check_match "errors are JSON with status.code and status.message" '^\{"status":\{"code":401,"message":".+"\}\}$' "$body"

# --- Redis is untrusted storage: what it holds is signed, bound to its key, and no secret -------------
redis() { redis-cli -p "$redis_port" -a redis-secret --no-auth-warning "$@"; }
for k in tenant-key-a-0001 report-key-a-0001; do curl -s -o /dev/null -H "x-api-key: $k" "$base/tasks/$id"; done
entries=$(for k in $(redis --scan --pattern 'iwd:key:*'); do redis get "$k"; echo; done)
check "Redis holds the keys' entries" "true" "$(jq -s 'length >= 2' <<<"$entries")"
check "no Redis entry holds a password or connection settings" "false" \
    "$(jq -s 'map(has("pw") or has("host") or has("port") or has("user") or has("db")) | any' <<<"$entries")"
check "no Redis value holds the password in clear" "0" "$(grep -c "pw'x" <<<"$entries")"
# the Redis key an unknown key is looked up under, seen on the wire
redis monitor >"$work/monitor" 2>&1 & monitor_pid=$!
for _ in $(seq 1 50); do grep -q '^OK' "$work/monitor" && break; sleep 0.1; done
req GET "/tasks/$id" forged-key-000000001; check "an unknown key: 401" "401" "$code"
for _ in $(seq 1 50); do grep -q '"GET" "iwd:key:' "$work/monitor" && break; sleep 0.1; done
kill "$monitor_pid"; wait "$monitor_pid" 2>/dev/null
forged_at=$(grep -o '"GET" "iwd:key:[0-9a-f]*"' "$work/monitor" | tail -1 | cut -d'"' -f4)
tenant_at="" ; report_at=""
for k in $(redis --scan --pattern 'iwd:key:*'); do
    [ "$k" = "$forged_at" ] && continue
    case "$(redis get "$k" | jq -r '.kind + "/" + .ccid')" in
        tenant/a) tenant_at=$k ;;
        iwddm/a) report_at=$k ;;
    esac
done
check "the entries of both keys of tenant a are found" "yes yes yes" \
    "$([ -n "$forged_at" ] && echo yes) $([ -n "$tenant_at" ] && echo yes) $([ -n "$report_at" ] && echo yes)"
tenant_entry=$(redis get "$tenant_at")
redis_errors() { curl -s -H "x-api-key: $admin_key" "$base/metrics" | awk '/^iwd_redis_errors_total / {print $2}'; }
redis_errors_before=$(redis_errors)
redis set "$forged_at" "$tenant_entry" ex 60 >/dev/null                        # a copy of a valid entry
redis set "$report_at" "$(redis get "$report_at" | jq -c '.kind = "tenant"')" ex 60 >/dev/null   # read-only made write
redis set "$tenant_at" "$(jq -c --argjson p "$dead_port" '.ccid = "b" | .db = "tenant_b" | .port = $p' \
    <<<"$tenant_entry")" ex 60 >/dev/null                                         # pointed at another tenant and port
sleep 10.3   # past the threads' own memory of the keys (and of the unknown one), so lookups read Redis
req GET "/tasks/$id" forged-key-000000001; check "a forged Redis entry for an unknown key: still 401" "401" "$code"
req POST /tasks report-key-a-0001 '{"externalId": "RO-2", "capturePoint": "erp"}'
check "a read-only key's entry altered to write: still 403" "403" "$code"
req GET "/tasks/$id" tenant-key-a-0001
check "an entry pointed at another tenant, database and port is not used" "200 INV-1" "$code $(json .externalId)"
check_match "unverifiable entries are logged as ignored" "unverifiable Redis entry" "$(cat "$work/sidecar.log")"
check "and counted in iwd_redis_errors_total" "yes" \
    "$([ "$(redis_errors)" -ge $((${redis_errors_before:-0} + 3)) ] && echo yes || echo "no: $redis_errors_before, then $(redis_errors)")"

# --- failed authentications: limited per client address, counted, without lookups ------------------
auth_queries() {
    curl -s -H "x-api-key: $admin_key" "$base/metrics" |
        awk '/^iwdTenantDB_db_(success|errors)_total\{db="control",command="auth"/ {n += $2} END {print n + 0}'
}
before=$(auth_queries)
for i in $(seq 1 1000); do
    printf 'url = "%s/tasks"\nheader = "x-api-key: random-%s-%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nnext\n' \
        "$base" "$RANDOM$RANDOM" "$i"
done >"$work/random-keys.curl"
codes=$(curl -s --interface 127.0.0.2 -K "$work/random-keys.curl" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
check "1,000 random keys from one address: 30 answered 401, then 429" " 30 401; 970 429;" "$codes"
check "the control database was asked at most once per failure before the limit" "yes" \
    "$([ $(($(auth_queries) - before)) -le 30 ] && echo yes || echo "no: $(($(auth_queries) - before)) lookups")"
retry=$(curl -s -D - -o "$work/body" --interface 127.0.0.2 -H 'x-api-key: tenant-key-a-0001' "$base/tasks/$id" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "retry-after" {print $2}')
check "the refused address gets 429 with Retry-After, even with a valid key" "429 yes" \
    "$(jq -r .status.code "$work/body") $([ "${retry:-0}" -ge 1 ] && [ "${retry:-0}" -le 60 ] && echo yes)"
check "a valid key from another address still works" "200" \
    "$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.3 -H 'x-api-key: tenant-key-a-0001' "$base/tasks/$id")"
check_match "refusals are counted in iwd_api_blacklist" '(^|
)iwd_api_blacklist [1-9][0-9]{2}' "$(curl -s -H "x-api-key: $admin_key" "$base/metrics")"
admin_codes=$(for i in $(seq 1 31); do
    curl -s -o /dev/null -w '%{http_code}\n' --interface 127.0.0.4 -H "x-api-key: wrong-admin-$i" -X DELETE \
        "$base/provisioning/a?deleteTenant=true"; done | sort | uniq -c | tr -s ' ' | tr '\n' ';')
check "wrong admin keys count too: 30 answered 401, then 429" " 30 401; 1 429;" "$admin_codes"
before=$(auth_queries)
for i in $(seq 1 10); do
    curl -s -o /dev/null --interface 127.0.0.5 -H 'x-api-key: the-same-unknown-key-01' "$base/tasks"
done
check "an unknown key asked again is answered from memory (at most one lookup per thread)" "yes" \
    "$([ $(($(auth_queries) - before)) -le 2 ] && echo yes || echo "no: $(($(auth_queries) - before)) lookups")"

# --- Redis: cache, outage, recovery ----------------------------------------------------------------
check_match "keys are cached in Redis" "iwd:key:" "$(redis-cli -p "$redis_port" -a redis-secret --no-auth-warning keys 'iwd:key:*' | head -1)"
redis-cli -p "$redis_port" -a redis-secret --no-auth-warning shutdown nosave >/dev/null 2>&1
sleep 5.3   # past the threads' own few-second memory of the keys, so lookups need Redis
ok=0
for i in 1 2 3 4 5 6; do req GET "/tasks/$id" tenant-key-a-0001; [ "$code" = 200 ] && ok=$((ok + 1)); done
req POST /tasks tenant-key-a-0001 '{"externalId": "R-1", "capturePoint": "erp"}'; [ "$code" = 201 ] && ok=$((ok + 1))
check "with Redis down, requests still succeed" "7" "$ok"
metrics=$(curl -s "$metrics_url")
check_match "the outage shows in the Redis metrics" "iwd_redis_errors_total [1-9]" "$metrics"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --requirepass redis-secret \
    --daemonize yes --logfile "$work/redis.log" --dir "$work" >/dev/null
ready=""
for _ in $(seq 1 100); do
    curl -s -o /dev/null -H 'x-api-key: tenant-key-a-0001' "$base/tasks/$id"
    ready=$(curl -s "$metrics_url" | awk '/^iwd_redis_connections_ready /{print $2}')
    [ "$ready" = 2 ] && break
    sleep 0.1
done
check "after Redis returns, every thread reconnects" "2" "$ready"
check_match "the time to reconnect is measured" "iwd_redis_duration_until_ready_count [1-9]" "$(curl -s "$metrics_url")"

# --- metrics and the Pushgateway -------------------------------------------------------------------
metrics=$(curl -s "$metrics_url")
promtool_out=$(promtool check metrics <<<"$metrics" 2>&1); rc=$?
unexpected=$(grep -v -E "^iwdTenantDB_db_[a-z_]+ metric names should be written in 'snake_case' not 'camelCase'$|use base unit \"seconds\" instead of \"milliseconds\"$|^iwd_api_(request_long|request_closed|blacklist) counter metrics should have \"_total\" suffix$" <<<"$promtool_out" | grep -v '^$')
check "promtool accepts /metrics (only the documented names' lint remarks)" "ok " "$([ $rc -eq 0 ] || [ $rc -eq 3 ] && echo ok) $unexpected"
for name in iwd_request_total iwd_success_total iwd_errors_total iwd_client_error_total iwd_server_error_total \
            iwd_api_request_total iwd_api_request_duration_milliseconds_bucket iwd_api_request_long iwd_api_blacklist \
            iwd_process_cpu_user_seconds_total iwd_process_cpu_system_seconds_total \
            iwd_process_virtual_memory_bytes iwd_process_heap_bytes iwd_process_max_fds \
            iwd_redis_connections_established iwd_redis_connections_reconnecting iwd_redis_connections_ready \
            iwd_redis_errors_total iwd_redis_duration_until_ready_count iwdTenantDB_db_connect_total \
            iwdTenantDB_db_request_total iwdTenantDB_db_success_total iwdTenantDB_db_errors_total \
            iwdTenantDB_db_request_duration_milliseconds_bucket iwd_process_cpu_seconds_total \
            iwd_process_resident_memory_bytes iwd_process_open_fds iwd_process_start_time_seconds \
            iwd_queue_tasks iwd_queue_oldest_task_age_seconds iwd_claims_total; do
    grep -q "^$name[ {]" <<<"$metrics" || missing_metrics="${missing_metrics:-} $name"
done
check "every documented metric is exported" "" "${missing_metrics:-}"
check_match "queue gauges per tenant" 'iwd_queue_tasks\{ccid="a",queue="general",media_type="workitem",status="queued"\} [0-9]+' "$metrics"
# Data Mart job metrics: a run of the full chain in tenant a shows in /metrics and is pushed
"${as_user[@]}" "$bindir/psql" -X -q -h "$work/pg" -p "$pg_port" tenant_a -c "SELECT iwd_dm.run('full')" >/dev/null
for _ in $(seq 1 50); do   # within IWD_METRICS_TTL_MS
    metrics=$(curl -s "$metrics_url")
    grep -Eq '^iwddm_job_last_success\{tenant="a",job="iwddm_metrics",execution_chain="full"\} [1-9]' <<<"$metrics" && break
    sleep 0.1
done
check_match "the Data Mart job metrics are appended" 'iwddm_job_last_success\{tenant="a",job="iwddm_metrics",execution_chain="full"\} [1-9]' "$metrics"
pushed=""
for _ in $(seq 1 50); do
    pushed=$(curl -s "http://127.0.0.1:$push_port/metrics" | grep -c 'iwddm_job_last_success{.*execution_chain="full".*tenant="a"')
    [ "$pushed" -ge 1 ] && break
    sleep 0.1
done
check "the job metrics are pushed to the Pushgateway" "1" "$pushed"

# the tenants' gauges: scrapes serve the collector's last reading, made every IWD_METRICS_TTL_MS
queued_a() { curl -s "$metrics_url" | awk '/^iwd_queue_tasks\{ccid="a",.*status="queued"\}/ {n += $2} END {print n + 0}'; }
sleep $((metrics_ttl_ms / 1000 + 1))
before=$(queued_a)
req POST /tasks tenant-key-a-0001 '{"externalId": "TTL-1", "capturePoint": "erp"}'
t0=$(date +%s%N); seen=never
while [ $((($(date +%s%N) - t0) / 1000000)) -lt $((3 * metrics_ttl_ms)) ]; do
    [ "$(queued_a)" = $((before + 1)) ] && { seen=$((($(date +%s%N) - t0) / 1000000)); break; }
    sleep 0.05
done
check "a new task shows in the queue gauges within IWD_METRICS_TTL_MS + 1 s" "201 ok" \
    "$code $([ "$seen" != never ] && [ "$seen" -le $((metrics_ttl_ms + 1000)) ] && echo ok || echo "after $seen ms")"
reads() { curl -s "$metrics_url" | awk '/^iwdTenantDB_db_success_total\{db="a",command="queue_stats"\}/ {print $2}'; }
r0=$(reads); t0=$(date +%s%N)
for _ in $(seq 1 30); do curl -s -o /dev/null "$metrics_url"; done
r1=$(reads); elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
check "30 scrapes read the tenant database no more often than the collector does" "ok" \
    "$([ $((r1 - r0)) -le $((elapsed_ms / metrics_ttl_ms + 1)) ] && echo ok || echo "$((r1 - r0)) reads in $elapsed_ms ms")"
parallel=$(for _ in 1 2 3 4 5 6 7 8; do curl -s "$metrics_url" | grep -c '^iwd_queue_tasks{ccid="a"' & done; wait)
check "concurrent scrapes all carry the queue gauges" "1 1 1 1 1 1 1 1" \
    "$(for n in $parallel; do [ "$n" -gt 0 ] && echo 1 || echo 0; done | tr '\n' ' ' | sed 's/ $//')"

# --- the OpenAPI document covers every route --------------------------------------------------------
undocumented=""
while read -r method path; do
    m=$(tr 'A-Z' 'a-z' <<<"$method")
    awk -v p="  $path:" -v m="    $m:" '$0 == p {inside = 1; next} /^  [^ ]/ {inside = 0} inside && $0 == m {found = 1} END {exit !found}' \
        openapi.yaml || undocumented="$undocumented $method $path;"
done < <(./iwd-sidecar-asan --routes)
check "openapi.yaml documents every registered route" "" "$undocumented"

# --- secrets: rotating the admin key or the server secret keeps every tenant served -----------------
restart_sidecar() { kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; start_sidecar; }
sealed_before=$(control_sql "SELECT db_password FROM iwd_control.tenant WHERE ccid = 'a'")
admin_key_was=$admin_key; admin_key="rotated-admin-key-for-tests"
restart_sidecar || fail_setup "sidecar restart failed"
req GET "/tasks/$id" tenant-key-a-0001
check "after rotating IWD_ADMIN_API_KEY a tenant with a database password is served" "200 INV-1" "$code $(json .externalId)"
req DELETE "/provisioning/nobody?deleteTenant=true" "$admin_key_was"; check "the old admin key no longer provisions" "401" "$code"
admin_key=$admin_key_was
export IWD_SECRET_KEY="rotated-server-secret-for-tests-0123456789" IWD_SECRET_KEY_PREVIOUS=$secret_key
restart_sidecar || fail_setup "sidecar restart failed"
sealed_after=$(control_sql "SELECT db_password FROM iwd_control.tenant WHERE ccid = 'a'")
check "a new IWD_SECRET_KEY (the old one as IWD_SECRET_KEY_PREVIOUS) seals the stored password again at start" \
    "yes" "$([ -n "$sealed_after" ] && [ "$sealed_after" != "$sealed_before" ] && echo yes)"
req GET "/tasks/$id" tenant-key-a-0001; check "the tenant is served under the new secret" "200 INV-1" "$code $(json .externalId)"
unset IWD_SECRET_KEY_PREVIOUS
restart_sidecar || fail_setup "sidecar restart failed"
req GET "/tasks/$id" tenant-key-a-0001; check "and once the previous secret is gone" "200 INV-1" "$code $(json .externalId)"
req GET "/tasks/$id" report-key-a-0001; check "a key unused during the rotation still works" "200" "$code"
IWD_PORT=$(free_port) IWD_METRICS_PORT=0 IWD_SECRET_KEY="a-secret-that-sealed-nothing-here-0123456789" \
    IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control user=postgres" IWD_ADMIN_API_KEY=$admin_key \
    timeout 20 ./iwd-sidecar-asan >"$work/wrong-secret.log" 2>&1
check "a sidecar whose IWD_SECRET_KEY did not seal the registry refuses to start" "1 1" \
    "$? $(grep -c 'index key cannot be opened' "$work/wrong-secret.log")"
for v in "" "short-secret" "$admin_key"; do
    IWD_SECRET_KEY=$v IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=$admin_key ./iwd-sidecar-asan >/dev/null 2>&1
    check "IWD_SECRET_KEY='$v' is refused (required, 32 characters, not the admin key)" "2" "$?"
done
for v in -1 x 100001; do
    IWD_AUTH_FAILURE_LIMIT=$v IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=$admin_key ./iwd-sidecar-asan >/dev/null 2>&1
    check "IWD_AUTH_FAILURE_LIMIT=$v is refused" "2" "$?"
done

# --- a control database of schema 1 (SHA-256 key digests, passwords sealed under the admin key) -------
"${as_user[@]}" "$bindir/createdb" -h "$work/pg" -p "$pg_port" control_v1
legacy_pw=$(python3 -c '
import hashlib, os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key = hashlib.sha256(("iwd-db-password:" + sys.argv[1]).encode()).digest()
nonce = os.urandom(12)
sealed = AESGCM(key).encrypt(nonce, b"pw\x27x", None)
print((nonce + sealed[-16:] + sealed[:-16]).hex())' "$admin_key")
"${as_user[@]}" "$bindir/psql" -X -q -At -h "$work/pg" -p "$pg_port" control_v1 -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE SCHEMA iwd_control;
CREATE TABLE iwd_control.schema_version (version int NOT NULL);
INSERT INTO iwd_control.schema_version VALUES (1);
CREATE TABLE iwd_control.tenant (ccid text PRIMARY KEY, tenant_id text, name text, db_host text NOT NULL,
    db_port int NOT NULL, db_name text NOT NULL, db_user text NOT NULL, db_password text,
    db_ssl boolean NOT NULL DEFAULT false, iwd_url text, email_url text, gws jsonb,
    services text[] NOT NULL DEFAULT '{iWD}', created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE iwd_control.api_key (key_hash text PRIMARY KEY,
    ccid text NOT NULL REFERENCES iwd_control.tenant ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('tenant', 'iwddm')));
INSERT INTO iwd_control.tenant (ccid, db_host, db_port, db_name, db_user, db_password)
    VALUES ('legacy', '127.0.0.1', $pg_port, 'tenant_a', 'postgres', '$legacy_pw');
INSERT INTO iwd_control.api_key VALUES ('$(printf %s legacy-tenant-key-0001 | sha256sum | cut -d' ' -f1)', 'legacy', 'tenant');
SQL
legacy_port=$(free_port)
IWD_LISTEN=127.0.0.1 IWD_PORT=$legacy_port IWD_METRICS_PORT=0 IWD_ADMIN_API_KEY=$admin_key IWD_THREADS=1 \
    IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control_v1 user=postgres" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 ./iwd-sidecar-asan >>"$work/sidecar.log" 2>&1 &
legacy_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$legacy_port/iwd/v3/health/live" >/dev/null && break; sleep 0.1; done
check "a key recorded by schema 1 works after the migration" "200 INV-1" \
    "$(curl -s -o "$work/body" -w '%{http_code}' -H 'x-api-key: legacy-tenant-key-0001' \
        "http://127.0.0.1:$legacy_port/iwd/v3/tasks/$id") $(jq -r .externalId "$work/body")"
kill "$legacy_pid"; wait "$legacy_pid" 2>/dev/null
check "schema 2: no digest kept, the password sealed under IWD_SECRET_KEY" "2 0 1 t" "$("${as_user[@]}" "$bindir/psql" \
    -X -At -h "$work/pg" -p "$pg_port" control_v1 -c "SELECT (SELECT version FROM iwd_control.schema_version),
        (SELECT count(*) FROM information_schema.columns WHERE table_name = 'api_key' AND column_name = 'key_hash'),
        (SELECT count(*) FROM iwd_control.api_key WHERE length(salt) = 32 AND length(verifier) = 64),
        (SELECT db_password LIKE 'v2:%' FROM iwd_control.tenant)" | tr '|\n' '  ' | sed 's/ $//')"

# --- ccids: one too long to hold whole is refused, never cut; an odd one is pushed encoded ----------
"${as_user[@]}" "$bindir/createdb" -h "$work/pg" -p "$pg_port" tenant_e
req POST /provisioning "$admin_key" "$(prov e tenant_e tenant-key-e-0001)"; check "provisioning tenant e" "200" "$code"
long_ccid=$(head -c 130 /dev/zero | tr '\0' e)
control_sql "BEGIN;
    UPDATE iwd_control.tenant SET db_name = 'moved_' || db_name WHERE ccid = 'e';
    INSERT INTO iwd_control.tenant (ccid, tenant_id, db_host, db_port, db_name, db_user, db_password, services)
        SELECT '$long_ccid', tenant_id, db_host, db_port, 'tenant_e', db_user, db_password, services
        FROM iwd_control.tenant WHERE ccid = 'e';
    UPDATE iwd_control.api_key SET ccid = '$long_ccid' WHERE ccid = 'e';
    DELETE FROM iwd_control.tenant WHERE ccid = 'e';
    COMMIT" >/dev/null
req GET /tasks tenant-key-e-0001
check "a tenant whose ccid (recorded before ccids were checked) is too long to hold whole: 503, not served" \
    "503 yes" "$code $(grep -q 'cannot be used' <<<"$body" && echo yes)"
control_sql "DELETE FROM iwd_control.tenant WHERE ccid = '$long_ccid';
    INSERT INTO iwd_control.tenant (ccid, db_host, db_port, db_name, db_user)
    VALUES ('odd ccid/x', 'localhost', $pg_port, 'tenant_a', 'postgres')" >/dev/null
pushed=""
for _ in $(seq 1 50); do
    pushed=$(curl -s "http://127.0.0.1:$push_port/metrics" | grep -c 'tenant="odd ccid/x"')
    [ "$pushed" -ge 1 ] && break
    sleep 0.1
done
check "a ccid with a space and a slash reaches the Pushgateway whole (base64url grouping key)" "yes" \
    "$([ "${pushed:-0}" -ge 1 ] && echo yes)"
control_sql "DELETE FROM iwd_control.tenant WHERE ccid = 'odd ccid/x'" >/dev/null

# --- deprovisioning --------------------------------------------------------------------------------
req DELETE /provisioning/a "$admin_key"; check "delete without service or deleteTenant: 400" "400" "$code"
req DELETE "/provisioning/nobody?deleteTenant=true" "$admin_key"; check "delete an unknown tenant: 404" "404" "$code"
req DELETE "/provisioning/a?service=iWD,iWDEmail" "$admin_key"; check "remove tenant a's services" "200" "$code"
req GET "/tasks/$id" tenant-key-a-0001; check "its key no longer works" "401" "$code"
req DELETE "/provisioning/b?deleteTenant=true" "$admin_key"; check "delete tenant b" "200" "$code"
req DELETE "/provisioning/b?deleteTenant=true" "$admin_key"; check "delete it again: 404" "404" "$code"
req GET /tasks tenant-key-b-0001; check "tenant b's key is gone" "401" "$code"

# --- a deleted tenant's key stops working at once, even when lookups raced the deletion --------------
"${as_user[@]}" "$bindir/createdb" -h "$work/pg" -p "$pg_port" tenant_d
req POST /provisioning "$admin_key" "$(prov d tenant_d tenant-key-d-0001)"; check "provisioning tenant d" "200" "$code"
req GET /tasks tenant-key-d-0001; check "tenant d's key works" "200" "$code"
control_sql "BEGIN; SELECT 1 FROM iwd_control.tenant WHERE ccid = 'd' FOR UPDATE; SELECT pg_sleep(2); COMMIT" \
    >/dev/null 2>&1 &
locker=$!
sleep 0.3
curl -s -o "$work/deleted" -w '%{http_code}' -X DELETE -H "x-api-key: $admin_key" \
    "$base/provisioning/d?deleteTenant=true" >"$work/delete-code" &
deleter=$!
sleep 0.3
racers=()
for _ in 1 2 3 4 5 6; do
    curl -s -o /dev/null --max-time 10 -H 'x-api-key: tenant-key-d-0001' "$base/tasks" & racers+=($!)
done
wait "$deleter" "$locker" "${racers[@]}"
check "the deletion waited for the lock and succeeded" "200" "$(cat "$work/delete-code")"
req GET /tasks tenant-key-d-0001; check "the deleted tenant's key: 401 at once" "401" "$code"

# --- limits: the metrics listener, metric labels, a tenant that never answers, timeouts, waiting calls ----
# Two tenants of their own (l, m), so that these blocks depend on nothing above.
psql_as() { "${as_user[@]}" "$bindir/psql" -X -q -At -h "$work/pg" -p "$pg_port" "$@"; }
for db in tenant_l tenant_m; do
    "${as_user[@]}" "$bindir/createdb" -h "$work/pg" -p "$pg_port" "$db" || fail_setup "createdb $db failed"
done
key_l=limits-key-l-0001; key_m=limits-key-m-0001
req POST /provisioning "$admin_key" "$(prov l tenant_l "$key_l")"; check "provisioning tenant l" "200" "$code"
req POST /provisioning "$admin_key" "$(prov m tenant_m "$key_m")"; check "provisioning tenant m" "200" "$code"

# over-long values: 400 in JSON before the database (path, query) or from it (body), never 500
long=$(head -c 3000 /dev/zero | tr '\0' x)
for call in "PUT /agents/$long" "GET /agents/$long" "GET /tasks/$long" "PUT /departments/$long" "GET /departments/$long" \
            "PUT /calendars/$long" "DELETE /processes/$long" "GET /rules/classification/$long" \
            "GET /tasks?department=$long" "GET /tasks?q=$long"; do
    req ${call% *} "${call#* }" "$key_l" '{}'
    check "${call:0:24}... (3 KB): 400 in JSON" "400 400" "$code $(json .status.code)"
done
req GET "/tasks/$(head -c 256 /dev/zero | tr '\0' 9)" "$key_l"
check "a path parameter of 256 bytes passes the sidecar's bound" "ok" "$([ "$code" != 400 ] || [[ "$(json .status.message)" != *"longer than"* ]] && echo ok)"
req POST /tasks "$key_l" "{\"externalId\": \"${long:0:2900}\", \"capturePoint\": \"erp\"}"
check "a task with a 2,900-byte externalId: 400, not 500" "400" "$code"
req POST /tasks "$key_l" "{\"externalId\": \"L-1\", \"capturePoint\": \"${long:0:2900}\"}"
check "a task with a 2,900-byte capturePoint: 400, not 500" "400" "$code"

req GET /metrics ""; check "on the API port, /metrics without a key: 401 in JSON" "401 401" "$code $(json .status.code)"
req GET /metrics "$key_l"; check "on the API port, /metrics with a tenant key: 401" "401" "$code"
req GET /metrics "$admin_key"; check "on the API port, /metrics with the admin key: 200" "200" "$code"
for _ in $(seq 1 $((3 * metrics_ttl_ms / 100))); do
    code=$(curl -s -o "$work/body" -w '%{http_code}' "$metrics_url"); body=$(cat "$work/body")
    grep -q '^iwd_tenant_metrics_up{ccid="l"} 1$' <<<"$body" && break
    sleep 0.1
done
check "the metrics port serves /metrics without a key" "200" "$code"
check_match "it lists the new tenant's gauges within IWD_METRICS_TTL_MS" 'iwd_tenant_metrics_up\{ccid="l"\} 1' "$body"
code=$(curl -s -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$metrics_port/iwd/v3/metrics")
check "the metrics port also answers the API's path" "200" "$code"
code=$(curl -s -o "$work/body" -w '%{http_code}' -H "x-api-key: $key_l" "http://127.0.0.1:$metrics_port/iwd/v3/tasks")
body=$(cat "$work/body"); check "the metrics port serves nothing else: 404 in JSON" "404 404" "$code $(json .status.code)"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$metrics_url"); check "POST on the metrics port: 405" "405" "$code"

# labels: methods outside HTTP's are "other"; 1,000 distinct queues make at most 100 queue series per tenant
psql_as tenant_l -c "SELECT count(iwd.create_task(jsonb_build_object('externalId', 'LBL-' || g, 'capturePoint', 'labels',
    'queue', 'queue-' || g, 'mediaType', 'media-' || g))) FROM generate_series(1, 1000) g" >/dev/null
for i in $(seq 1 500); do echo "X$RANDOM$i"; done | xargs -P 8 -I{} curl -s -o /dev/null -X {} "$base/tasks"
other=""
for _ in $(seq 1 $((3 * metrics_ttl_ms / 100))); do
    metrics=$(curl -s "$metrics_url")
    other=$(awk '/^iwd_queue_tasks\{ccid="l",queue="other",media_type="other",status="queued"\}/ {print $2}' <<<"$metrics")
    [ -n "$other" ] && break
    sleep 0.1
done
check "the queues beyond the 100 largest are summed under queue=\"other\"" "900" "$other"
check "tenant l has 101 queue / media type pairs of series (x3 statuses)" "303" \
    "$(grep -c '^iwd_queue_tasks{ccid="l",' <<<"$metrics")"
check "500 requests with invented methods add one method label value, \"other\"" "GET POST other" \
    "$(grep -o '^iwd_api_request_total{method="[^"]*"' <<<"$metrics" | sed 's/.*method="//; s/"$//' | grep -E -v '^(PUT|DELETE|PATCH|HEAD)$' | LC_ALL=C sort -u | tr '\n' ' ' | sed 's/ $//')"
# (the documented label sets make a histogram of each route per status and tenant, and of each database
# per command: 16 samples each)
check_match "the exposition stays small: under 5,000 samples" "^[1-4]?[0-9]{1,3}$" "$(grep -vc '^#' <<<"$metrics")"
promtool check metrics <<<"$metrics" >/dev/null 2>&1; rc=$?
check "promtool parses it" "ok" "$([ $rc -eq 0 ] || [ $rc -eq 3 ] && echo ok)"

# a tenant server that accepts connections and never answers: scrapes and other tenants' requests stay fast
hang_port=$(free_port)
python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True: held.append(s.accept()[0])' "$hang_port" &
pids+=($!)
psql_as control -c "INSERT INTO iwd_control.tenant (ccid, tenant_id, name, db_host, db_port, db_name, db_user)
                    VALUES ('hung', 'hung', 'Hung', '127.0.0.1', $hang_port, 'tenant_hung', 'postgres')" >/dev/null
slowest_scrape=0; slowest_request=0; t_end=$(($(date +%s) + 2 * metrics_ttl_ms / 1000 + 3))
while [ "$(date +%s)" -lt "$t_end" ]; do
    ms=$(curl -s -o /dev/null -w '%{time_total}' "$metrics_url" | awk '{printf "%d", $1 * 1000}')
    [ "$ms" -gt "$slowest_scrape" ] && slowest_scrape=$ms
    ms=$(curl -s -o /dev/null -w '%{time_total}' -H "x-api-key: $key_m" "$base/tasks?limit=1" | awk '{printf "%d", $1 * 1000}')
    [ "$ms" -gt "$slowest_request" ] && slowest_request=$ms
    sleep 0.1
done
metrics=$(curl -s "$metrics_url")
check "the tenant that never answers is reported down" "0" \
    "$(awk '/^iwd_tenant_metrics_up\{ccid="hung"\}/ {print $2}' <<<"$metrics")"
check "the other tenants' gauges are still read" "1" "$(awk '/^iwd_tenant_metrics_up\{ccid="l"\}/ {print $2}' <<<"$metrics")"
# (a scrape or a request waiting on the hung server would take the collector's 2 s connect timeout or more;
# 1.5 s leaves room for a loaded machine)
check "meanwhile every scrape answered within 1.5 s" "ok" \
    "$([ "$slowest_scrape" -lt 1500 ] && echo ok || echo "$slowest_scrape ms")"
check "meanwhile another tenant's requests answered within 1.5 s" "ok" \
    "$([ "$slowest_request" -lt 1500 ] && echo ok || echo "$slowest_request ms")"
psql_as control -c "DELETE FROM iwd_control.tenant WHERE ccid = 'hung'" >/dev/null

# a tenant whose server stops answering: its calls wait for a connection opened off the loop, and
# another tenant on the same (single) thread is answered meanwhile
restart_with() { # restart_with [NAME=VALUE...]: the sidecar again, with these settings
    kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; start_sidecar "$@" || fail_setup "sidecar restart failed"
}
move_l() { # move_l PORT: tenant l's registry entry points at PORT; no cache remembers the old one
    psql_as control -c "UPDATE iwd_control.tenant SET db_port = $1, updated_at = now() WHERE ccid = 'l'" >/dev/null
    redis-cli -p "$redis_port" -a redis-secret --no-auth-warning flushall >/dev/null
}
move_l "$hang_port"
restart_with IWD_THREADS=1
req GET /tasks?limit=1 "$key_m"; check "tenant m, before" "200" "$code"
curl -s -o /dev/null -w '%{http_code} %{time_total}' -H "x-api-key: $key_l" "$base/agents" >"$work/silent" &
silent_pid=$!
sleep 0.5
ms=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H "x-api-key: $key_m" "$base/tasks?limit=1")
check "while a connection to tenant l's silent server is opened, tenant m on the same thread is answered at once" \
    "ok" "$(awk '$1 == 200 && $2 < 2 {print "ok"; next} {print}' <<<"$ms")"
wait "$silent_pid"
check "tenant l's call: 503 once the connect timeout (5 s) has passed" "503 ok" \
    "$(awk '{print $1, ($2 >= 4.5 && $2 < 8 ? "ok" : $2 " s")}' "$work/silent")"
move_l "$pg_port"
# a server that stops answering mid-session: a statement prepared on first use is sent like the call,
# so the loop does not wait for it either
restart_with IWD_THREADS=1
req GET /agents "$key_l"; check "tenant l again on its own server" "200" "$code"
req GET /tasks?limit=1 "$key_m"; check "tenant m, before" "200" "$code"
backends=$(psql_as postgres -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = 'tenant_l' AND application_name = 'iwd-sidecar'")
kill -STOP $backends
curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $key_l" "$base/tasks?limit=1" >"$work/stopped" &
stopped_pid=$!
sleep 0.5
ms=$(curl -s --max-time 3 -o /dev/null -w '%{http_code} %{time_total}' -H "x-api-key: $key_m" "$base/tasks?limit=1")
kill -CONT $backends
check "while tenant l's server does not answer a preparation, tenant m on the same thread is answered at once" \
    "ok" "$(awk '$1 == 200 && $2 < 2 {print "ok"; next} {print}' <<<"$ms")"
wait "$stopped_pid"
check "tenant l's call is answered once its server goes on" "200" "$(cat "$work/stopped")"
# a server that never answers a call: past IWD_STATEMENT_TIMEOUT_MS and 5 s, 504 and a new connection
restart_with IWD_THREADS=1 IWD_STATEMENT_TIMEOUT_MS=1000 IWD_MAX_BODY_BYTES=20000000
req GET /agents "$key_l"; check "tenant l, before its server stops" "200" "$code"
backends=$(psql_as postgres -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = 'tenant_l' AND application_name = 'iwd-sidecar'")
kill -STOP $backends
t0=$(date +%s%N)
code=$(curl -s --max-time 12 -o "$work/body" -w '%{http_code}' -H "x-api-key: $key_l" "$base/agents"); body=$(cat "$work/body")
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
kill -CONT $backends
check "a call its server never answers: 504 in JSON after IWD_STATEMENT_TIMEOUT_MS + 5 s" "504 504 ok" \
    "$code $(json .status.code) $([ "$elapsed_ms" -ge 5900 ] && [ "$elapsed_ms" -lt 9000 ] && echo ok || echo "$elapsed_ms ms")"
req GET /agents "$key_l"; check "the next call gets a new connection" "200" "$code"
# a 16 MB call to a server that reads nothing: the loop writes what the socket takes, never waits
req GET /tasks?limit=1 "$key_m"; check "tenant m, before" "200" "$code"
req PUT /agents/small "$key_l" '{"name": "Small"}'; check "the agent upsert is prepared on tenant l's connection" "200" "$code"
python3 -c 'import sys; sys.stdout.write("{\"name\": \"" + "n" * 16000000 + "\"}")' >"$work/big.json"
backends=$(psql_as postgres -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = 'tenant_l' AND application_name = 'iwd-sidecar'")
kill -STOP $backends
curl -s --max-time 15 -o /dev/null -w '%{http_code}' -X PUT -H "x-api-key: $key_l" -H 'content-type: application/json' \
    --data-binary @"$work/big.json" "$base/agents/big" >"$work/big.code" &
big_pid=$!
sleep 2
ms=$(curl -s --max-time 3 -o /dev/null -w '%{http_code} %{time_total}' -H "x-api-key: $key_m" "$base/tasks?limit=1")
check "while a 16 MB call waits for a server that reads nothing, tenant m on the same thread is answered at once" \
    "ok" "$(awk '$1 == 200 && $2 < 2 {print "ok"; next} {print}' <<<"$ms")"
wait "$big_pid"
kill -CONT $backends
check "the 16 MB call: 504 at its deadline" "504" "$(cat "$work/big.code")"

# statement and lock timeouts, and the bound on calls waiting for a connection: one thread, so that
# tenant m shares it with tenant l's backlog. The database's own settings cannot lift the timeouts.
psql_as postgres -c "ALTER DATABASE tenant_l SET statement_timeout = 0" -c "ALTER DATABASE tenant_l SET lock_timeout = 0" \
    -c "ALTER DATABASE tenant_l SET search_path = public" >/dev/null
restart_with IWD_THREADS=1 IWD_STATEMENT_TIMEOUT_MS=3000 IWD_LOCK_TIMEOUT_MS=60000 IWD_WAITING_CALLS_PER_TENANT=4
lock_agents() { # lock_agents SECONDS: hold an exclusive lock on tenant l's agents, in the background
    psql_as tenant_l -c "BEGIN" -c "LOCK TABLE iwd.agent IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep($1)" \
        -c "COMMIT" >/dev/null &
    lock_pid=$!
    for _ in $(seq 1 50); do
        [ "$(psql_as tenant_l -c "SELECT count(*) FROM pg_locks WHERE relation = 'iwd.agent'::regclass AND mode = 'AccessExclusiveLock' AND granted")" = 1 ] && return
        sleep 0.1
    done
}
api_backends_l() { # the backends of the sidecar's API sessions in tenant l's database
    psql_as postgres -c "SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity
                         WHERE datname = 'tenant_l' AND application_name = 'iwd-sidecar'"
}
req GET /agents "$key_l"; check "tenant l's agents, before the lock" "200" "$code"
req GET /tasks?limit=1 "$key_m"; check "tenant m, before" "200" "$code"
c0=$(api_backends_l)
lock_agents 13
t0=$(date +%s%N); req GET /agents "$key_l"; elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
check "a call that runs past IWD_STATEMENT_TIMEOUT_MS: 504 in JSON" "504 504" "$code $(json .status.code)"
check_match "its message says why" "statement timeout" "$(json .status.message)"
check "it is answered after about IWD_STATEMENT_TIMEOUT_MS" "ok" \
    "$([ "$elapsed_ms" -ge 2900 ] && [ "$elapsed_ms" -lt 6000 ] && echo ok || echo "$elapsed_ms ms")"
req GET /tasks "$key_l"; check "the same connection serves the next call" "200 $c0" "$code $(api_backends_l)"
seq 1 30 | xargs -P 30 -I{} curl -s -o /dev/null -w '%{http_code} %header{retry-after}\n' -H "x-api-key: $key_l" \
    "$base/agents" >"$work/flood" &
flood_pid=$!
sleep 0.5
ms=$(curl -s -o "$work/body" -w '%{http_code} %{time_total}' -H "x-api-key: $key_m" "$base/tasks?limit=1")
check "while tenant l's calls wait, tenant m on the same thread is answered at once" "ok" \
    "$(awk '$1 == 200 && $2 < 2 {print "ok"; next} {print}' <<<"$ms")"
wait "$flood_pid"
refused=$(grep -c '^503 1$' "$work/flood"); timed_out=$(grep -c '^504 $' "$work/flood")
check "30 concurrent slow calls, 8 connections + 4 waiting: the rest refused 503 with Retry-After" "30 ok" \
    "$((refused + timed_out)) $([ "$refused" -ge 18 ] && echo ok || echo "$refused refused")"
check_match "refusals are counted per tenant" 'iwd_waiting_calls_refused_total\{ccid="l"\} [1-9]' "$(curl -s "$metrics_url")"
wait "$lock_pid"
restart_with IWD_THREADS=1 IWD_STATEMENT_TIMEOUT_MS=10000 IWD_LOCK_TIMEOUT_MS=500
lock_agents 3
code=$(curl -s -o "$work/body" -D "$work/headers" -w '%{http_code}' -H "x-api-key: $key_l" "$base/agents"); body=$(cat "$work/body")
check "a call that waits for a lock past IWD_LOCK_TIMEOUT_MS: 503 in JSON" "503 503" "$code $(json .status.code)"
check_match "its message says why" "lock timeout" "$(json .status.message)"
check "with Retry-After" "1" "$(grep -ci '^retry-after: 1' "$work/headers")"
wait "$lock_pid"
restart_with

# --- connections per database server: a cap shared by every thread, waiting, eviction, idle timeout -----
# Six tenants of their own (d1..d6) on the one server; a sampler counts the sidecar's API sessions
# (application_name iwd-sidecar: the collector and the Pushgateway name theirs apart).
for i in 1 2 3 4 5 6; do
    "${as_user[@]}" "$bindir/createdb" -h "$work/pg" -p "$pg_port" "dens_$i" || fail_setup "createdb dens_$i failed"
    req POST /provisioning "$admin_key" "$(prov "d$i" "dens_$i" "density-key-d$i-0001")"
    [ "$code" = 200 ] || fail_setup "provisioning d$i: $code $body"
done
# The sidecar's API sessions on the server, as "ALL OPEN": ALL as pg_stat_activity lists them, OPEN those of
# them whose connection the sidecar has not closed (the server's end of the socket, read from /proc/net/tcp
# at once after the query, is not in CLOSE_WAIT): a connection the sidecar closed stays in pg_stat_activity
# until its backend gets round to exiting, which on a loaded machine can overlap the one opened in its place.
api_sessions() {
    python3 - "$pg_port" "${as_user[@]}" "$bindir/psql" -X -q -At -h "$work/pg" -p "$pg_port" postgres -c \
        "SELECT client_port FROM pg_stat_activity WHERE datname LIKE 'dens\\_%' AND application_name = 'iwd-sidecar'" \
        <<'PY'
import subprocess, sys
pg_port, command = int(sys.argv[1]), sys.argv[2:]
out = subprocess.run(command, capture_output=True, text=True).stdout
ports = [int(p) for p in out.split() if p.isdigit()]
closing = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        rows = open(table).read().splitlines()[1:]
    except OSError:
        continue
    states = {}
    for row in rows:
        f = row.split()
        local, remote = int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16)
        if local == pg_port:
            states[remote] = f[3]
    closing |= {p for p in ports if states.get(p) == "08"}
print(len(ports), len([p for p in ports if p not in closing]))
PY
}
server_label="127.0.0.1:$pg_port"
slots_metric() { # slots_metric NAME [LABELS]: the value of one of the server's series on the metrics listener
    curl -s "$metrics_url" |
        awk -v name="$1" -v labels="{server=\"$server_label\"${2:+,$2}}" '$1 == name labels {print $2}'
}
round_robin() { # round_robin CLIENTS REQUESTS: each client (keep-alive) GETs /tasks of d1..d6 in turn
    python3 - "$http_port" "$1" "$2" <<'PY'
import collections, http.client, sys, threading
port, clients, requests = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
counts, lock = collections.Counter(), threading.Lock()
def client(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for n in range(requests):
        tenant = (k + n) % 6 + 1
        try:
            c.request("GET", "/iwd/v3/tasks?limit=1", headers={"x-api-key": f"density-key-d{tenant}-0001"})
            r = c.getresponse(); r.read(); status = r.status
        except Exception as e:
            status = type(e).__name__; c.close(); c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with lock: counts[status] += 1
ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
for t in ts: t.start()
for t in ts: t.join()
print(" ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=str)))
PY
}
restart_with IWD_PG_MAX_CONNECTIONS_PER_SERVER=2 IWD_PG_IDLE_TIMEOUT_S=2
( seen=0 peak=0
  while :; do
      read -r all open < <(api_sessions)
      [ "${all:-0}" -gt "$seen" ] && seen=$all
      [ "${open:-0}" -gt "$peak" ] && peak=$open
      echo "$seen $peak" >"$work/peak"; sleep 0.05
  done ) &
sampler_pid=$!
echo "0 0" >"$work/peak"
codes=$(round_robin 12 40)
kill "$sampler_pid"; wait "$sampler_pid" 2>/dev/null
check "480 requests round robin over 6 tenants, 12 clients, a cap of 2 connections: all answered" "480 200" "$codes"
read -r seen peak <"$work/peak"
check "the server never saw more than 2 API sessions of the sidecar open (sampled every 50 ms)" "ok" \
    "$([ "$seen" -ge 1 ] && [ "$peak" -le 2 ] && echo ok || echo "listed $seen, open $peak")"
check "iwd_pg_server_connections never passes the cap" "ok" \
    "$(v=$(slots_metric iwd_pg_server_connections); [ -n "$v" ] && [ "$v" -le 2 ] && echo ok || echo "'$v'")"
check "iwd_pg_server_connections_max is the cap" "2" "$(slots_metric iwd_pg_server_connections_max)"
positive() { [ "${1:-0}" -gt 0 ] && echo ok || echo "'$1'"; }
check "idle connections of other tenants were closed to make room (evicted)" "ok" \
    "$(positive "$(slots_metric iwd_pg_server_connections_closed_total 'reason="evicted"')")"
collector_sessions() {
    psql_as postgres -c "SELECT count(*) FROM pg_stat_activity
                         WHERE datname LIKE 'dens\_%' AND application_name = 'iwd-sidecar-collector'"
}
# the collector reads every 2 s the tenants served within the idle timeout (2 s here): keep all six busy
# until a reading has found them, rather than hope that one falls within 2 s of the run above
for _ in $(seq 1 30); do
    round_robin 1 6 >/dev/null; [ "$(collector_sessions)" = 6 ] && break; sleep 0.2
done
check "the collector keeps a connection to each tenant the API serves" "6" "$(collector_sessions)"
sleep 3.5
check "after IWD_PG_IDLE_TIMEOUT_S (2 s) without calls, no API session is left (listed, open)" "0 0" "$(api_sessions)"
for _ in $(seq 1 40); do [ "$(collector_sessions)" = 0 ] && break; sleep 0.2; done
check "nor a collector session: an idle tenant is read over a connection closed after its reading" "0" \
    "$(collector_sessions)"
check "the idle tenants' gauges are those of their last reading" "6" \
    "$(curl -s "$metrics_url" | grep -c '^iwd_tenant_metrics_up{ccid="d[1-6]"} 1$')"
check "the idle timeout is counted" "ok" \
    "$(positive "$(slots_metric iwd_pg_server_connections_closed_total 'reason="idle_timeout"')")"
req GET "/tasks?limit=1" density-key-d3-0001
check "a tenant is served again after its connection closed idle" "200" "$code"
check "nothing waits for a slot any more" "0" "$(slots_metric iwd_pg_server_waiting_calls)"
check_match "iwd's pool of workers is exported per server (iwd.worker_stats())" \
    "iwd_pool_databases_over_limit\{server=\"$server_label\"\} 0" "$(curl -s "$metrics_url")"
check_match "with the databases it serves" "iwd_pool_databases\{server=\"$server_label\"\} [1-9]" \
    "$(curl -s "$metrics_url")"
check_match "and the databases waiting with a deadline due (deadlinesWaiting)" \
    "iwd_pool_databases_deadline_waiting\{server=\"$server_label\"\} [0-9]+" "$(curl -s "$metrics_url")"

# the bound on waiting calls with a cap of 1: one call holds the server's only slot (a lock keeps it),
# four calls of other tenants wait for it (IWD_WAITING_CALLS_PER_THREAD), the rest are refused at once;
# of those waiting, the first gets the slot when it frees, the others 503 after IWD_STATEMENT_TIMEOUT_MS
restart_with IWD_THREADS=1 IWD_PG_MAX_CONNECTIONS_PER_SERVER=1 IWD_WAITING_CALLS_PER_THREAD=4 \
    IWD_STATEMENT_TIMEOUT_MS=2000
lock_pids=()
for i in 1 2 3 4 5 6; do
    psql_as "dens_$i" -c "BEGIN" -c "LOCK TABLE iwd.agent IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(8)" \
        -c "COMMIT" >/dev/null &
    lock_pids+=($!)
done
for _ in $(seq 1 50); do
    [ "$(psql_as postgres -c "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                              WHERE d.datname LIKE 'dens\_%' AND l.mode = 'AccessExclusiveLock' AND l.granted
                              AND l.locktype = 'relation'")" -ge 6 ] && break
    sleep 0.1
done
timeouts_before=$(slots_metric iwd_pg_server_wait_timeouts_total)
curl -s -o "$work/first" -w '%{http_code}\n' -H "x-api-key: density-key-d1-0001" "$base/agents" >"$work/first_code" &
first_pid=$!
sleep 0.5
k=0
wait_pids=()
for i in 2 3 4 5 6 2 3 4 5; do
    k=$((k + 1))
    curl -s -o "$work/wait_$k" -w '%{http_code} %header{retry-after}\n' -H "x-api-key: density-key-d$i-0001" \
        "$base/agents" >>"$work/waits" &
    wait_pids+=($!)
done
sleep 0.3
check "calls waiting for the server's slot are counted" "4" "$(slots_metric iwd_pg_server_waiting_calls)"
wait "$first_pid"
for pid in "${wait_pids[@]}" "${lock_pids[@]}"; do wait "$pid"; done
messages=$(cat "$work"/wait_* | jq -r 'select(.status.code == 503) | .status.message')
refused=$(grep -c 'too many calls are waiting' <<<"$messages")
timed_out=$(grep -c 'became free in time' <<<"$messages")
check "beyond IWD_WAITING_CALLS_PER_THREAD, calls are refused at once: 503 in JSON" "5" "$refused"
check "waiting calls that get no slot within IWD_STATEMENT_TIMEOUT_MS: 503 in JSON" "ok" \
    "$([ "$timed_out" -ge 2 ] && [ "$timed_out" -le 3 ] && echo ok || echo "$timed_out")"
check "every 503 says when to retry" "$(grep -c '^503 ' "$work/waits")" "$(grep -c '^503 1$' "$work/waits")"
check "the waits that timed out are counted" "$timed_out" \
    "$(( $(slots_metric iwd_pg_server_wait_timeouts_total) - ${timeouts_before:-0} ))"

# IWD_PG_PREPARE=off (PgBouncer in transaction mode): calls go as unnamed statements, none is prepared
psql_as postgres -c "ALTER DATABASE dens_1 SET log_min_duration_statement = 0" >/dev/null
log_from=$(stat -c %s "$work/pg/log")
restart_with
for _ in 1 2 3; do req GET "/tasks?limit=1" density-key-d1-0001; done
new_log=$(tail -c +"$log_from" "$work/pg/log")
check "by default a route's statement is prepared once per connection" "ok" \
    "$(grep -q 'execute s[0-9]*: ' <<<"$new_log" && echo ok || echo 'no execute s<N> in the log')"
log_from=$(stat -c %s "$work/pg/log")
restart_with IWD_PG_PREPARE=off
for _ in 1 2 3; do req GET "/tasks?limit=1" density-key-d1-0001; done
check "IWD_PG_PREPARE=off: served" "200" "$code"
new_log=$(tail -c +"$log_from" "$work/pg/log")
check "IWD_PG_PREPARE=off: no statement prepared, each call unnamed" "0 ok" \
    "$(grep -c 'execute s[0-9]*: ' <<<"$new_log") $(grep -q 'execute <unnamed>: ' <<<"$new_log" && echo ok)"
psql_as postgres -c "ALTER DATABASE dens_1 RESET log_min_duration_statement" >/dev/null
restart_with

# --- webhooks: a suite with servers of its own (tests/webhooks.sh), its checks counted here -----------
tests/webhooks.sh >"$work/webhooks.log" 2>&1; cat "$work/webhooks.log"
read -r wp wf < <(sed -n 's/^webhooks: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$work/webhooks.log")
passed=$((passed + ${wp:-0})); failed=$((failed + ${wf:-1}))

# --- the event stream (tests/events.sh: a cluster and a sidecar of its own; its checks count here) ----
tests/events.sh 2>&1 | tee "$work/events.log" | grep -v '^events: '
events_result=$(grep -E '^events: [0-9]+ passed, [0-9]+ failed$' "$work/events.log" | tail -n 1)
if [ -n "$events_result" ]; then
    read -r _ events_passed _ events_failed _ <<<"$events_result"
    passed=$((passed + events_passed)); failed=$((failed + events_failed))
else
    failed=$((failed + 1)); echo "not ok - tests/events.sh printed no result line"
fi

# --- decline and batch actions (tests/actions.sh: a cluster and a sidecar of its own; its checks count here)
tests/actions.sh 2>&1 | tee "$work/actions.log" | grep -v '^actions: '
actions_result=$(grep -E '^actions: [0-9]+ passed, [0-9]+ failed$' "$work/actions.log" | tail -n 1)
if [ -n "$actions_result" ]; then
    read -r _ actions_passed _ actions_failed _ <<<"$actions_result"
    passed=$((passed + actions_passed)); failed=$((failed + actions_failed))
else
    failed=$((failed + 1)); echo "not ok - tests/actions.sh printed no result line"
fi

# --- who did a supervisor's action (tests/actor.sh: a cluster and a sidecar of its own; its checks count here)
tests/actor.sh >"$work/actor.log" 2>&1; cat "$work/actor.log"
read -r ap af < <(sed -n 's/^actor: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$work/actor.log")
passed=$((passed + ${ap:-0})); failed=$((failed + ${af:-1}))

# --- the REST traffic against the OpenAPI document -------------------------------------------------
openapi_proxy_check
openapi_proxy_stop

# --- shutdown and sanitizers -----------------------------------------------------------------------
kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; sidecar_pid=""
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "0" \
    "$(grep -c -E 'AddressSanitizer|runtime error' "$work/sidecar.log")"
check "each of libh2o's buffer allocators used by one thread only" "0" "$(grep -c recycle_guard "$work/sidecar.log")"
check "every log line is a JSON object" "0" "$(grep -v '^{.*}$' "$work/sidecar.log" | grep -c .)"

summary
