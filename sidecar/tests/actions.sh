#!/usr/bin/env bash
# The supervisors' and agents' actions the Workload Manager uses, end to end: decline (POST
# /tasks/{id}/decline) and batch actions (POST /tasks/batch), against a real PostgreSQL (a temporary cluster
# preloading iwd, no scheduler worker), a real redis-server and the sidecar built with AddressSanitizer.
# Run on its own or by tests/run.sh. Ends with "actions: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
suite=actions
# shellcheck source=../../scripts/lib.sh
. ../scripts/lib.sh
work=$(work_dir actions-test)
http_port=$(free_port)
base="http://127.0.0.1:$http_port/iwd/v3"
admin_key="admin-key-for-actions"
key="actions-key-a-0001"

cleanup() {
    servers_stop immediate
    sleep 0.2
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

tenant_sql() { cluster_sql -d tenant_a "$@"; }

make -s asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"

# --- servers ---------------------------------------------------------------------------------------
one_tenant_servers actions tenant_a ccid-a "$key"
for agent in ann bob; do
    req PUT "/agents/$agent" "$key" '{"capacity": {"workitem": 5}, "state": "ready"}'
    [ "$code" = 200 ] || fail_setup "agent $agent: $code $body"
done

# --- decline ---------------------------------------------------------------------------------------
req POST /tasks "$key" '{"externalId": "D-1", "capturePoint": "erp", "priority": 90}'; d1=$(json .id)
req POST /tasks "$key" '{"externalId": "D-2", "capturePoint": "erp", "priority": 80}'; d2=$(json .id)
req POST /agents/ann/next "$key" '{}'
check "ann is offered the first task" "200 $d1" "$code $(json .id)"
req POST "/tasks/$d1/decline" "$key" '{"agent": "ann", "reason": "not my supplier"}'
check "ann declines it: queued again" "200 queued null" "$code $(json .status) $(json .assignedTo)"
req GET "/tasks/$d1/history" "$key"
check "the history records the decline, its agent and reason" "declined ann not my supplier" \
    "$(json '.[] | select(.event == "declined") | "\(.event) \(.actor) \(.detail.reason)"')"
req POST /agents/ann/next "$key" '{}'
check "ann is offered the next task, not the declined one" "200 $d2" "$code $(json .id)"
req POST /agents/bob/next "$key" '{}'
check "bob is offered the declined task" "200 $d1" "$code $(json .id)"
req POST "/tasks/$d1/decline" "$key" '{"agent": "ann"}'
check "declining a task reserved to another agent: 409 and the API's message" \
    "409 cannot decline task $d1: it is assigned to \"bob\"" "$code $(json .status.message)"
req POST "/tasks/$d1/decline" "$key" '{"agent": "nobody"}'
check "an unknown agent: 404" "404" "$code"
req POST "/tasks/$d1/decline" "$key" '{"reason": "no agent"}'
check "no agent: 400" "400 body member \"agent\" is required (a non-empty string)" "$code $(json .status.message)"
req POST "/tasks/$d1/decline" "$key" "{\"agent\": \"bob\", \"reason\": \"$(head -c 1025 /dev/zero | tr '\0' x)\"}"
check "a reason over 1 KB: 400" "400 reason is longer than 1024 bytes: It has 1025 bytes." "$code $(json .status.message)"
req POST "/tasks/999999/decline" "$key" '{"agent": "bob"}'
check "an unknown task: 404" "404" "$code"

# --- batch actions ---------------------------------------------------------------------------------
ids=()
for i in 1 2 3 4 5; do
    req POST /tasks "$key" "{\"externalId\": \"B-$i\", \"capturePoint\": \"erp\", \"queue\": \"batch\", \"priority\": $i}"
    ids+=("$(json .id)")
done
req POST /tasks/batch "$key" '{"action": "hold", "filter": {"queue": "batch"}, "dryRun": true}'
check "a dry run counts the matching tasks and changes nothing" "200 5 5 0 true" \
    "$code $(json .matched) $(json .wouldChange) $(json .changed) $(json .dryRun)"
check "... nothing held" "0" "$(tenant_sql -c "SELECT count(*) FROM iwd.task WHERE status = 'held'")"
req POST /tasks/batch "$key" '{"action": "hold", "filter": {"queue": "batch"}, "args": {"reason": "audit"}}'
check "hold all matching the filter" "200 5 5" "$code $(json .matched) $(json .changed)"
check "each task's history records the hold with the actor (the tenant's ccid)" "5 ccid-a" \
    "$(tenant_sql -c "SELECT count(*) || ' ' || min(actor) FROM iwd.task_event WHERE event = 'held'
                       AND detail ->> 'reason' = 'audit'")"
req POST /tasks/batch "$key" "{\"action\": \"resume\", \"ids\": [${ids[0]}, ${ids[1]}, $d2, 999999]}"
check "resume by ids: two resumed, the others skipped with their reason" \
    "200 4 2 $d2:cannot resume a task that is assigned 999999:task does not exist" \
    "$code $(json .matched) $(json .changed) $(json '[.skipped[] | "\(.id):\(.reason)"] | join(" ")')"
req POST /tasks/batch "$key" "{\"action\": \"reprioritize\", \"ids\": [${ids[0]}], \"args\": {\"priority\": 99}}"
check "reprioritize" "200 1" "$code $(json .changed)"
req GET "/tasks?queue=batch&status=queued" "$key"
check "the queue order follows the new priority" "B-1 B-2" "$(json '[.tasks[].externalId] | join(" ")')"
req POST /tasks/batch "$key" '{"action": "cancel", "filter": {"queue": "batch"}}'
check "cancel all matching" "200 5 5" "$code $(json .matched) $(json .changed)"
req GET "/tasks/${ids[4]}" "$key"
check "a canceled task" "canceled" "$(json .status)"

# the single supervisor actions record who did them too
req POST /tasks "$key" '{"externalId": "S-1", "capturePoint": "erp"}'; s1=$(json .id)
req POST "/tasks/$s1/hold" "$key" '{"reason": "check"}'; check "hold one task" "200 held" "$code $(json .status)"
req POST "/tasks/$s1/resume" "$key"; check "resume it" "200 queued" "$code $(json .status)"
req POST "/tasks/$s1/reprioritize" "$key" '{"priority": 7}'; check "reprioritize it" "200 7" "$code $(json .priority)"
req POST "/tasks/$s1/cancel" "$key" '{}'; check "cancel it" "200 canceled" "$code $(json .status)"
req POST "/tasks/$s1/restart" "$key"; check "restart it" "200 queued" "$code $(json .status)"
req GET "/tasks/$s1/history" "$key"
check "each action's event names the tenant's ccid as its actor" \
    "held:ccid-a resumed:ccid-a reprioritized:ccid-a canceled:ccid-a restarted:ccid-a" \
    "$(json '[.[] | select(.event != "created") | "\(.event):\(.actor)"] | join(" ")')"

# the body's errors, each a 400 with a message
bad() { # bad NAME BODY EXPECTED-MESSAGE
    req POST /tasks/batch "$key" "$2"
    check "$1" "400 $3" "$code $(json .status.message)"
}
bad "an unknown action" '{"action": "delete", "ids": [1]}' \
    'unknown batch action "delete": Actions: hold, resume, cancel, reprioritize.'
either="a batch action needs either ids or a filter: ids: the tasks to act on; filter: every open task the queue \
filter matches ({} for all)."
bad "neither ids nor filter" '{"action": "hold"}' "$either"
bad "both ids and filter" '{"action": "hold", "ids": [1], "filter": {}}' "$either"
bad "an unknown member" '{"action": "hold", "ids": [1], "everything": true}' \
    'unknown key "everything" in the batch action'
bad "ids not integers" '{"action": "hold", "ids": ["1"]}' '"ids" must hold task ids (integers)'
bad "more than 10,000 ids" "{\"action\": \"hold\", \"ids\": [$(seq -s, 1 10001)]}" \
    'ids holds more than 10000 task ids: It holds 10001.'
bad "a bad filter field" '{"action": "hold", "filter": {"queue": 5}}' \
    'filter field "queue" must be a string or an array of strings'
bad "dryRun not a boolean" '{"action": "hold", "ids": [1], "dryRun": "yes"}' \
    'a batch action is {"action": string, "ids": [task id, ...] or "filter": {...}, "args": {...}, "dryRun": boolean}'
bad "reprioritize without a priority" '{"action": "reprioritize", "ids": [1]}' \
    'reprioritize needs a priority or a business value'
req POST /tasks/batch "$key" '{"action": '
check_match "malformed JSON: 400 with the parser's message" "^400 malformed JSON: " "$code $(json .status.message)"
req POST /tasks/batch "" '{"action": "hold", "ids": [1]}'
check "no key: 401" "401" "$code"

# --- shutdown and sanitizers -------------------------------------------------------------------------
sidecar_stop
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "0" \
    "$(grep -c -E 'AddressSanitizer|runtime error' "$work/sidecar.log")"

summary
