#!/usr/bin/env bash
# Who did a supervisor's action: the x-iwd-user header names the person acting with a tenant key, and the
# events the action records name "<ccid>/<user>" as their actor (the ccid alone without the header), for the
# single actions and the batch ones; a header the sidecar cannot record is refused with 400 and changes
# nothing. Against a real PostgreSQL (a temporary cluster preloading iwd, no scheduler worker), a real
# redis-server and the sidecar built with AddressSanitizer. Run on its own or by tests/run.sh (whose
# validating proxy of sidecar/openapi.yaml it then goes through). Ends with "actor: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
suite=actor
# shellcheck source=../../scripts/lib.sh
. ../scripts/lib.sh
work=$(work_dir actor-test)
http_port=$(free_port)
base="http://127.0.0.1:$http_port/iwd/v3"
admin_key="admin-key-for-actor"
key="actor-key-u-0001"
ccid="ccid-u"

cleanup() {
    servers_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

make -s asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"

# --- servers ---------------------------------------------------------------------------------------
one_tenant_servers actor tenant_u "$ccid" "$key"

# act METHOD PATH BODY [HEADER...]: a request with the tenant key, a JSON body and the extra headers (each a
# curl -H argument); sets $code and $body as req does
act() {
    local args=(-s -o "$work/body" -w '%{http_code}' -X "$1" "$base$2" -H "x-api-key: $key"
                -H 'content-type: application/json' --data-binary "$3")
    local header
    shift 3
    [ -n "${IWD_OPENAPI_PROXY:-}" ] && args+=(--proxy "$IWD_OPENAPI_PROXY" --noproxy '')
    for header in "$@"; do args+=(-H "$header"); done
    code=$(curl "${args[@]}")
    body=$(cat "$work/body")
}
# last_event TASK: "<event> <actor>" of the task's last history entry
last_event() {
    req GET "/tasks/$1/history" "$key"
    json '.[-1] | "\(.event) \(.actor)"'
}
events_of() { req GET "/tasks/$1/history" "$key"; json 'length'; }
# new_task EXTERNAL-ID: the id of a new task (nothing when it could not be created)
new_task() {
    req POST /tasks "$key" "{\"externalId\": \"$1\", \"capturePoint\": \"erp\", \"subject\": \"Actor $1\"}"
    [ "$code" = 201 ] && json .id
}
# ids_or_fail ID...: the setup ends unless each is a task id
ids_or_fail() {
    local id
    for id in "$@"; do [[ $id =~ ^[0-9]+$ ]] || fail_setup "creating a task failed: $(cat "$work/body")"; done
}

user="x-iwd-user: Ann Smith"
t1=$(new_task A-1)
t2=$(new_task A-2)
ids_or_fail "$t1" "$t2"

# --- single actions: the user named, or the tenant alone ------------------------------------------------
act POST "/tasks/$t1/hold" '{"reason": "audit"}' "$user"
check "hold with x-iwd-user: 200 held" "200 held" "$code $(json .status)"
check "the history names the tenant and the user" "held $ccid/Ann Smith" "$(last_event "$t1")"
act POST "/tasks/$t1/resume" '{}'
check "resume without the header: 200" "200 queued" "$code $(json .status)"
check "the history names the tenant alone" "resumed $ccid" "$(last_event "$t1")"
act POST "/tasks/$t1/reprioritize" '{"priority": 70}' "$user"
check "reprioritize with x-iwd-user: the user recorded" "200 reprioritized $ccid/Ann Smith" \
    "$code $(last_event "$t1")"
act POST "/tasks/$t1/cancel" '{"reason": "duplicate"}' "x-iwd-user: b.lee"
check "cancel: another user recorded" "200 canceled $ccid/b.lee" "$code $(last_event "$t1")"
act POST "/tasks/$t1/restart" '{}' "$user"
check "restart: the user recorded" "200 restarted $ccid/Ann Smith" "$code $(last_event "$t1")"
act POST "/tasks/$t1/complete" '{}' "$user"
check "a supervisor's complete: the user recorded" "200 completed $ccid/Ann Smith" "$code $(last_event "$t1")"
act POST "/tasks/$t2/reject" '{"reason": "not ours"}' "$user"
check "a supervisor's reject: the user recorded" "200 rejected $ccid/Ann Smith" "$code $(last_event "$t2")"
sixty_four=$(printf 'u%.0s' $(seq 1 64))
act POST "/tasks/$t2/restart" '{}' "x-iwd-user: $sixty_four"
check "a 64-character user: accepted and recorded whole" "200 restarted $ccid/$sixty_four" \
    "$code $(last_event "$t2")"

# --- an agent's own action names the agent, whatever the header says ----------------------------------
req PUT /agents/ann "$key" '{"capacity": {"workitem": 5}, "state": "ready"}'
[ "$code" = 200 ] || fail_setup "agent ann: $code $body"
ids_or_fail "$(new_task A-3)"
req POST /agents/ann/next "$key" '{}'
check "ann is offered a task" "200" "$code"
offered=$(json .id)
act POST "/tasks/$offered/complete" '{"agent": "ann"}' "$user"
check "the agent's completion names the agent" "200 completed ann" "$code $(last_event "$offered")"

# --- headers the sidecar refuses: 400, and the task unchanged --------------------------------------------
t4=$(new_task A-4)
ids_or_fail "$t4"
before=$(events_of "$t4")
refused() { # refused NAME MESSAGE-REGEX HEADER...: a hold with these headers is refused and records nothing
    local name=$1 message=$2
    shift 2
    act POST "/tasks/$t4/hold" '{}' "$@"
    check_match "$name: 400" "^400 $message" "$code $(json .status.message)"
    check "$name: nothing recorded" "$before queued" "$(events_of "$t4") $(req GET "/tasks/$t4" "$key"; json .status)"
}
sixty_five=$(printf 'u%.0s' $(seq 1 65))
refused "an empty user" 'header x-iwd-user must be 1 to 64 characters' "x-iwd-user;"
refused "a 65-character user" 'header x-iwd-user must be 1 to 64 characters' "x-iwd-user: $sixty_five"
refused "a user with a slash" "header x-iwd-user must hold printable ASCII characters other than '/' only" \
    "x-iwd-user: ann/admin"
refused "a user with a tab" "header x-iwd-user must hold printable ASCII" $'x-iwd-user: ann\tsmith'
refused "a user outside ASCII" "header x-iwd-user must hold printable ASCII" "x-iwd-user: José"
# straight to the sidecar: the validating proxy would join the two into one header, "ann, bob"
IWD_OPENAPI_PROXY='' refused "the header given twice" 'header x-iwd-user is given more than once' \
    "x-iwd-user: ann" "x-iwd-user: bob"
act POST "/tasks/$t4/complete" '{}' "x-iwd-user: a/b"
check_match "complete with a refused user: 400" "^400 header x-iwd-user must hold" "$code $(json .status.message)"
check "and the task is not completed" "queued" "$(req GET "/tasks/$t4" "$key"; json .status)"

# --- batch actions: each task's history names the user ---------------------------------------------------
t5=$(new_task B-5)
t6=$(new_task B-6)
ids_or_fail "$t5" "$t6"
act POST /tasks/batch "{\"action\": \"hold\", \"ids\": [$t5, $t6], \"args\": {\"reason\": \"batch\"}}" "$user"
check "batch hold with x-iwd-user: 2 tasks held" "200 2" "$code $(json .changed)"
for t in "$t5" "$t6"; do
    check "task $t's history names the user" "held $ccid/Ann Smith" "$(last_event "$t")"
done
act POST /tasks/batch "{\"action\": \"resume\", \"ids\": [$t5, $t6]}"
check "batch resume without the header: the tenant alone" "200 resumed $ccid resumed $ccid" \
    "$code $(last_event "$t5") $(last_event "$t6")"
act POST /tasks/batch '{"action": "hold", "q": "actor", "filter": {"status": "queued"}}' "x-iwd-user: c.search"
check_match "batch hold by search with x-iwd-user: 200" "^200 [1-9]" "$code $(json .changed)"
check "a task it held names the user" "held $ccid/c.search" "$(last_event "$t5")"
act POST /tasks/batch '{"action": "resume", "q": "actor", "filter": {"status": "held"}}'
check "batch resume by search: 200" "200" "$code"
before=$(events_of "$t5")
act POST /tasks/batch "{\"action\": \"hold\", \"ids\": [$t5]}" "x-iwd-user: a/b"
check_match "a batch with a refused user: 400" "^400 header x-iwd-user must hold" "$code $(json .status.message)"
check "and holds nothing" "$before queued" "$(events_of "$t5") $(req GET "/tasks/$t5" "$key"; json .status)"

# --- the header on a route that records no actor is not read -----------------------------------------
act POST /tasks '{"externalId": "A-7", "capturePoint": "erp"}' "x-iwd-user: a/b"
check "a task created with any x-iwd-user: 201" "201" "$code"

# --- shutdown and sanitizers -------------------------------------------------------------------------
sidecar_stop
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "0" \
    "$(grep -c -E 'AddressSanitizer|runtime error' "$work/sidecar.log")"

summary
