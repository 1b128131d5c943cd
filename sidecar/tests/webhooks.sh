#!/usr/bin/env bash
# iwd-sidecar webhooks end to end: a real PostgreSQL, the sidecar built with AddressSanitizer (one, then two
# replicas) and a real receiver (tests/receiver.py, over HTTP and HTTPS with a CA made here) that records
# every request. Checks the headers and the signature (verified with Python's hmac), the same delivery id
# on every attempt, 500 then 200, a receiver that never answers (and does not hold up another webhook), a
# redirect, per-task order, a rolled-back transaction, the events and filter of a webhook, the deliveries
# listing and a manual retry, failure after iwd.webhook_retry_for, HTTPS with and without IWD_CA_FILE,
# IWD_WEBHOOK_DENY_NETWORKS, kill -9 of the sidecar mid-delivery, two replicas attempting each delivery
# one at a time, a webhook created through one replica delivered by the other, a tenant's first webhook
# created with SQL found within seconds, and a deleted webhook's claimed deliveries never attempted after the
# deletion. Ends with "webhooks: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
suite=webhooks
# shellcheck source=../../scripts/lib.sh
. ../scripts/lib.sh
work=$(work_dir webhooks-test)
pg_port=$(free_port); http_port=$(free_port); http_port_b=$(free_port); metrics_port=$(free_port)
recv_port=$(free_port); tls_port=$(free_port)
admin_key="admin-key-for-webhook-tests"
export IWD_SECRET_KEY="server-secret-for-webhook-tests-0123456789"
recv_log=$work/received.jsonl
pids=(); replica_b=""

cleanup() {
    for pid in "${pids[@]}" $replica_b; do kill "$pid" 2>/dev/null; done
    servers_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

# start_sidecar [PORT [NAME=VALUE...]]: an ASan sidecar on PORT (default $http_port), settings overridden by
# the arguments; sets $sidecar_pid (its log: $work/sidecar-PORT.log)
start_sidecar() {
    local port=${1:-$http_port}
    [ $# -gt 0 ] && shift
    sidecar_launch "$work/sidecar-$port.log" "http://127.0.0.1:$port/iwd/v3/health/live" \
        env IWD_LISTEN=127.0.0.1 IWD_PORT="$port" IWD_ADMIN_API_KEY=$admin_key IWD_THREADS=2 \
        IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control user=postgres" IWD_REDIS_NODES= \
        IWD_METRICS_LISTEN=127.0.0.1 \
        IWD_METRICS_PORT="$([ "$port" = "$http_port" ] && echo "$metrics_port" || echo 0)" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 "$@" ./iwd-sidecar-asan
}

base="http://127.0.0.1:$http_port/iwd/v3" # req and json: scripts/lib.sh
key1=tenant-key-t1-0001; key2=tenant-key-t2-0001

# received NAME [JQ-FILTER]: the requests webhook NAME received (begin lines), through the filter
received() { jq -c --arg n "$1" "select(.ev == \"begin\" and .name == \$n) | ${2:-.}" "$recv_log" 2>/dev/null; }
# wait_until SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS
wait_until() {
    local limit=$1; shift
    for _ in $(seq 1 $((limit * 10))); do "$@" && return 0; sleep 0.1; done
    return 1
}
count_at_least() { [ "$(received "$1" | wc -l)" -ge "$2" ]; } # count_at_least NAME N
# delivery NAME FIELD [TENANT-KEY]: FIELD of the oldest delivery of webhook NAME (the first attempted)
delivery() { req GET "/webhooks/$1/deliveries?limit=1000" "${3:-$key1}"; json ".deliveries[-1].$2"; }
delivery_is() { [ "$(delivery "$1" "$2" "${4:-$key1}")" = "$3" ]; } # delivery_is NAME FIELD VALUE [KEY]
sidecar_log_clean() { ! grep -q -E 'AddressSanitizer|runtime error' "$work"/sidecar-*.log; }

# --- servers, a test CA, the receiver ---------------------------------------------------------------
make -s asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"
cluster_init "$work/pg" "listen_addresses = '127.0.0.1'
iwd.max_workers = 0
# no scheduler worker publishes here: each writing transaction announces its events on iwd_events
iwd.notify = event" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
for db in control t1 t2; do cluster_client createdb "$db" || fail_setup "createdb $db failed"; done
# t2's deliveries fail after 4 s of attempts rather than 24 h
cluster_sql -d postgres -c "ALTER DATABASE t2 SET iwd.webhook_retry_for = '4 s'" || fail_setup "cannot set the GUC"
(
    cd "$work" &&
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=iwd test CA" &&
    openssl req -newkey rsa:2048 -nodes -keyout receiver.key -out receiver.csr -subj "/CN=127.0.0.1" &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >receiver.ext &&
    openssl x509 -req -in receiver.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out receiver.pem -days 2 \
        -extfile receiver.ext
) >"$work/openssl.log" 2>&1 || fail_setup "cannot make the test CA: $(tail -3 "$work/openssl.log")"
server_launch receiver "$work/receiver.log" "http://127.0.0.1:$recv_port/" \
    python3 tests/receiver.py "$recv_log" "$recv_port" "$tls_port" "$work/receiver.pem" "$work/receiver.key"
launched=$?
pids+=("$server_pid")
[ "$launched" = 0 ] || fail_setup "the receiver did not start"
start_sidecar || fail_setup "the sidecar did not start"

# --- settings -----------------------------------------------------------------------------------------
help=$(./iwd-sidecar-asan --help)
check "--help documents IWD_CA_FILE and IWD_WEBHOOK_DENY_NETWORKS" "2" \
    "$(grep -c -E 'IWD_CA_FILE|IWD_WEBHOOK_DENY_NETWORKS' <<<"$help")"
for setting in IWD_WEBHOOK_DENY_NETWORKS=10.0.0.0/33 IWD_WEBHOOK_DENY_NETWORKS=300.1.1.1 \
               IWD_WEBHOOK_DENY_NETWORKS=fd00::/129 IWD_WEBHOOK_DENY_NETWORKS=10.0.0.0/ IWD_CA_FILE=/nonexistent \
               IWD_CA_FILE=$work/receiver.csr; do
    env "$setting" IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=$admin_key ./iwd-sidecar-asan >"$work/refused.log" 2>&1
    check "$setting is refused at start" "2" "$?"
done

# --- provisioning and configuration -------------------------------------------------------------------
prov() { # prov CCID DB KEY
    echo "{\"tenant\": {\"id\": \"$1\", \"name\": \"Tenant $1\", \"ccid\": \"$1\"},
           \"iwd\": {\"url\": \"http://iwd\", \"db\": {\"host\": \"127.0.0.1\", \"port\": $pg_port,
           \"database\": \"$2\", \"user\": \"postgres\", \"password\": \"pw\", \"ssl\": false},
           \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$3\"}}}"
}
req POST /provisioning "$admin_key" "$(prov t1 t1 $key1)"; check "tenant t1 provisioned" "200" "$code"
req POST /provisioning "$admin_key" "$(prov t2 t2 $key2)"; check "tenant t2 provisioned" "200" "$code"

recv="http://127.0.0.1:$recv_port/r"
hook() { # hook NAME URL [EXTRA-JSON-MEMBERS] [KEY]: PUT /webhooks/NAME with secret "secret-NAME"
    req PUT "/webhooks/$1" "${4:-$key1}" "{\"url\": \"$2\", \"secret\": \"secret-$1\"${3:+, $3}}"
}
hook bad "$recv/ok/bad" '"events": []'
check "events [] is a 400" "400" "$code"
hook bad "$recv/ok/bad" '"events": ["task.exploded"]'
check "an unknown event type is a 400 naming it" "400 yes" \
    "$code $(json .status.message | grep -q exploded && echo yes)"
req PUT /webhooks/bad $key1 "{\"url\": \"$recv/ok/bad\"}"
check "a new webhook without a secret is a 400" "400" "$code"
hook bad "ftp://127.0.0.1/x"
check "an ftp URL is a 400" "400" "$code"
hook bad "$recv/ok/bad" '"filter": {"colour": "red"}'
check "an unknown filter key is a 400" "400" "$code"
req PUT /webhooks/bad "" "{\"url\": \"$recv/ok/bad\", \"secret\": \"x\"}"
check "PUT without a key: 401" "401" "$code"
hook ok "$recv/ok/ok"
check "PUT /webhooks/ok: 200" "200" "$code"
check "the answer has no secret, hasSecret true" "null true" "$(json .secret) $(json .hasSecret)"
hook web-created "$recv/ok/web-created" '"events": ["task.created"], "filter": {"capturePoint": "web"}'
check "a webhook with events and a filter" "200 [\"task.created\"]" "$code $(jq -c .events <<<"$body")"
hook flaky "$recv/fail1/flaky"
hook hang "$recv/hang/hang"
hook redirect "$recv/redirect/redirect"
hook tls "https://127.0.0.1:$tls_port/r/ok/tls"
hook doomed "$recv/always500/doomed" "" $key2
check "a webhook of tenant t2" "200" "$code"
req GET /webhooks $key1
check "GET /webhooks lists the tenant's webhooks, no secrets" "flaky,hang,ok,redirect,tls,web-created 0" \
    "$(json '[.[].name] | join(",")') $(grep -c secret- <<<"$body")"
req GET /webhooks/ok $key1; check "GET /webhooks/ok" "200 $recv/ok/ok" "$code $(json .url)"
req GET /webhooks/nope $key1; check "GET an unknown webhook: 404" "404" "$code"
req GET /webhooks/doomed $key1; check "another tenant's webhook is not seen: 404" "404" "$code"

# --- deliveries ----------------------------------------------------------------------------------------
cluster_sql -d t1 -c "BEGIN; SELECT iwd.create_task('{\"externalId\": \"RB-1\", \"capturePoint\": \"web\",
    \"subject\": \"rolled back\"}'); ROLLBACK;" >/dev/null || fail_setup "the rolled-back capture failed"
req POST /tasks $key1 '{"externalId": "WEB-1", "capturePoint": "web", "subject": "from the web"}'
web_task=$(json .id)
req POST /tasks $key1 '{"externalId": "ERP-1", "capturePoint": "erp", "subject": "from the erp"}'
for action in hold resume hold resume cancel; do
    req POST "/tasks/$web_task/$action" $key1 '{"reason": "testing"}'
done
check "the task went through its actions" "200" "$code"
req POST /tasks $key2 '{"externalId": "T2-1", "capturePoint": "web", "subject": "tenant two"}'
wait_until 20 count_at_least ok 7
check "webhook ok got all 7 events" "7" "$(received ok | wc -l)"
hang_first=$(received hang .t | head -1)
ok_last=$(received ok .t | tail -1)
check "a receiver that never answers holds up no other webhook: all 7 arrive within its first attempt" "yes" \
    "$(python3 -c "print('yes' if $ok_last - ${hang_first:-0} < 9 and ${hang_first:-0} > 0 else 'no')")"
check "events of one task reach the webhook in order" \
    "task.created task.held task.resumed task.held task.resumed task.canceled" \
    "$(received ok ".body | fromjson | select(.taskId == $web_task) | .type" |
       tr -d '"' | tr '\n' ' ' | sed 's/ $//')"
check "event ids increase along the deliveries of one task" "yes" \
    "$(received ok ".body | fromjson | select(.taskId == $web_task) | .id" | python3 -c \
       'import sys; ids = [int(x) for x in sys.stdin]
print("yes" if ids == sorted(ids) and len(set(ids)) == len(ids) else ids)')"
check "a rolled-back transaction delivers nothing" "0" "$(grep -c 'RB-1' "$recv_log")"
check "the event document's fields" "true" "$(received ok '.body | fromjson' | head -1 |
    jq 'has("id") and has("type") and has("at") and has("taskId") and has("externalId") and has("capturePoint")
        and has("agent") and (.task | type == "object")')"

# the signature, verified as a receiver does (README, Webhooks)
cat >"$work/verify.py" <<'PY'
import hashlib, hmac, json, sys, time
bad = 0
for line in sys.stdin:
    r = json.loads(line)
    h = r["headers"]
    secret = ("secret-" + r["name"]).encode()
    ts = h["X-Iwd-Timestamp"]
    expected = "sha256=" + hmac.new(secret, ts.encode() + b"." + r["body"].encode(), hashlib.sha256).hexdigest()
    body = json.loads(r["body"])
    ok = (hmac.compare_digest(expected, h["X-Iwd-Signature"]) and abs(time.time() - int(ts)) < 300
          and h["Content-Type"] == "application/json" and h["X-Iwd-Event"] == body["type"]
          and len(h["X-Iwd-Delivery"]) == 36)
    bad += not ok
print(bad)
PY
check "every request is signed: HMAC-SHA256 of timestamp.body, with its headers" "0" \
    "$(received ok | python3 "$work/verify.py")"
req GET "/webhooks/ok/deliveries?limit=1000" $key1
check "the deliveries listing has the ids the receiver saw" \
    "$(received ok '.headers["X-Iwd-Delivery"]' | tr -d '"' | sort | tr '\n' ' ')" \
    "$(json '.deliveries[].id' | sort | tr '\n' ' ')"
check "all delivered, once each" "delivered:7 1" \
    "$(json '[.deliveries[].status] | group_by(.) | map("\(.[0]):\(length)") | join(",")') \
$(json '[.deliveries[].attempts] | max')"
check "the listing is newest first" "yes" \
    "$(json '[.deliveries[].eventId] | if . == (sort | reverse) then "yes" else . end')"
check "webhook web-created got only task.created of the web task" "WEB-1" \
    "$(received web-created '.body | fromjson | "\(.type) \(.externalId)"' | tr -d '"' | sed 's/task.created //' |
       tr '\n' ' ' | sed 's/ $//')"

wait_until 10 delivery_is flaky status delivered
flaky_id=$(delivery flaky id)
check "500 then 200: delivered after 2 attempts" "delivered 2" "$(delivery flaky status) $(delivery flaky attempts)"
check "the receiver saw the same X-Iwd-Delivery on both attempts" "2" \
    "$(received flaky "select(.headers[\"X-Iwd-Delivery\"] == \"$flaky_id\")" | wc -l)"
check "the retry is signed too" "0" "$(received flaky | python3 "$work/verify.py")"

wait_until 10 delivery_is redirect lastStatus 302
check "a redirect is a failed attempt, not followed" "pending 302 0" \
    "$(delivery redirect status) $(delivery redirect lastStatus) $(grep -c 'redirect-redirected' "$recv_log")"
check "its error says so" "HTTP 302: redirects are not followed" "$(delivery redirect lastError)"

wait_until 15 delivery_is tls attempts 1
check "https without IWD_CA_FILE: the test CA is not trusted" "yes 0" \
    "$(delivery tls lastError | grep -q -i certificate && echo yes) $(received tls | wc -l)"

wait_until 15 delivery_is hang attempts 1
check "a receiver that never answers: the attempt ends after 10 s" "no answer within 10 s" "$(delivery hang lastError)"

wait_until 20 delivery_is doomed status failed "$key2"
check "t2 (iwd.webhook_retry_for 4 s): failing deliveries become failed" "failed yes" \
    "$(delivery doomed status "$key2") $([ "$(delivery doomed attempts "$key2")" -ge 2 ] && echo yes)"
req GET "/webhooks/doomed/deliveries?status=failed" $key2
doomed_id=$(json '.deliveries[0].id')
check "?status=failed lists it" "1 $doomed_id" "$(json '.deliveries | length') $(delivery doomed id $key2)"
req GET "/webhooks/doomed/deliveries?status=delivered" $key2
check "?status=delivered does not" "0" "$(json '.deliveries | length')"
for bad in "status=bogus" "limit=0" "limit=1001" "limit=x" "colour=red" "cursor=abc"; do
    req GET "/webhooks/doomed/deliveries?$bad" $key2
    check "deliveries?$bad: 400" "400" "$code"
done
req GET "/webhooks/ok/deliveries?limit=3" $key1
next=$(json .next)
req GET "/webhooks/ok/deliveries?limit=3&cursor=$next" $key1
check "the next page continues after the cursor" "3 yes" \
    "$(json '.deliveries | length') $([ "$(json '.deliveries[0].eventId')" -lt "$next" ] && echo yes)"
req GET /webhooks/nope/deliveries $key1; check "deliveries of an unknown webhook: 404" "404" "$code"

hook doomed "$recv/ok/doomed" "" $key2 # the receiver is fixed; the secret is kept
req POST "/webhooks/doomed/deliveries/$doomed_id/retry" $key2
check "a manual retry makes the failed delivery pending" "200 pending" "$code $(json .status)"
wait_until 10 delivery_is doomed status delivered "$key2"
check "and it is delivered, with the kept secret and the same id" "delivered 0 $doomed_id" \
    "$(delivery doomed status $key2) $(received doomed | tail -1 | python3 "$work/verify.py") \
$(received doomed '.id' | tail -1 | tr -d '"')"
req POST "/webhooks/doomed/deliveries/$doomed_id/retry" $key2
check "retrying a delivered delivery: 409" "409" "$code"
req POST "/webhooks/doomed/deliveries/00000000-0000-0000-0000-000000000000/retry" $key2
check "retrying an unknown delivery: 404" "404" "$code"
req POST "/webhooks/doomed/deliveries/not-a-uuid/retry" $key2
check "retrying a malformed id: 400" "400" "$code"

metrics=$(curl -s "http://127.0.0.1:$metrics_port/metrics")
check_match "iwd_webhook_deliveries_total counts deliveries per tenant, webhook and result" \
    'iwd_webhook_deliveries_total\{ccid="t1",webhook="ok",result="delivered"\} 7' "$metrics"
check_match "failed attempts are counted as retry" \
    'iwd_webhook_deliveries_total\{ccid="t1",webhook="flaky",result="retry"\} [1-9]' "$metrics"
check_match "iwd_webhook_pending per tenant and webhook" \
    'iwd_webhook_pending\{ccid="t1",webhook="hang"\} [1-9]' "$metrics"

req DELETE /webhooks/redirect $key1; check "DELETE /webhooks/redirect" "200 true" "$code $(json .deleted)"
req DELETE /webhooks/redirect $key1; check "DELETE again: 404" "404" "$code"
req DELETE /webhooks/hang $key1

# --- HTTPS with the test CA ----------------------------------------------------------------------------
sidecar_stop
start_sidecar "$http_port" IWD_CA_FILE="$work/ca.pem" || fail_setup "the sidecar did not start with IWD_CA_FILE"
req GET "/webhooks/tls/deliveries?status=pending&limit=1000" $key1
for id in $(json '.deliveries[].id'); do req POST "/webhooks/tls/deliveries/$id/retry" $key1; done
tls_done() {
    req GET "/webhooks/tls/deliveries?status=delivered&limit=1000" $key1; [ "$(json '.deliveries | length')" = 7 ]
}
wait_until 20 tls_done
check "https with IWD_CA_FILE: the retried deliveries are delivered over TLS, signed" "7 true 0" \
    "$(json '.deliveries | length') $(received tls .tls | sort -u) $(received tls | python3 "$work/verify.py")"
check "the system's CAs are still trusted beside IWD_CA_FILE" "yes" \
    "$(grep -q 'webhooks trust IWD_CA_FILE' "$work/sidecar-$http_port.log" && echo yes)"

# --- IWD_WEBHOOK_DENY_NETWORKS ---------------------------------------------------------------------------
sidecar_stop
start_sidecar "$http_port" IWD_WEBHOOK_DENY_NETWORKS="10.0.0.0/8, 127.0.0.0/8" ||
    fail_setup "no sidecar with a deny list"
hook denied "$recv/ok/denied"
req POST /tasks $key1 '{"externalId": "DENY-1", "capturePoint": "erp", "subject": "to a denied address"}'
wait_until 10 delivery_is denied attempts 1
check "IWD_WEBHOOK_DENY_NETWORKS=127.0.0.0/8 refuses the resolved address" \
    "the address 127.0.0.1 is in IWD_WEBHOOK_DENY_NETWORKS 0" \
    "$(delivery denied lastError) $(received denied | wc -l)"
hook localhost-denied "http://localhost:$recv_port/r/ok/localhost-denied"
req POST /tasks $key1 '{"externalId": "DENY-2", "capturePoint": "erp", "subject": "by name"}'
wait_until 10 delivery_is localhost-denied attempts 1
check "a name that resolves into a denied network is refused too" "yes 0" \
    "$(delivery localhost-denied lastError | grep -q 'IWD_WEBHOOK_DENY_NETWORKS' && echo yes) \
$(received localhost-denied | wc -l)"
req DELETE /webhooks/denied $key1; req DELETE /webhooks/localhost-denied $key1

# --- kill -9 mid-delivery, then two replicas -------------------------------------------------------------
sidecar_stop
start_sidecar || fail_setup "the sidecar did not start again"
hook held "$recv/hold/held" '"filter": {"capturePoint": "kill"}'
req POST /tasks $key1 '{"externalId": "KILL-1", "capturePoint": "kill", "subject": "killed mid-delivery"}'
wait_until 10 count_at_least held 1
kill -9 "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; sidecar_pid=""
killed_at=$(date +%s)
start_sidecar || fail_setup "the sidecar did not restart after kill -9"
a_pid=$sidecar_pid
start_sidecar "$http_port_b" IWD_LOG_LEVEL=debug || fail_setup "replica b did not start"
replica_b=$sidecar_pid; sidecar_pid=$a_pid
hook pair "$recv/brief/pair" '"events": ["task.created"], "filter": {"capturePoint": "pair"}'
for i in $(seq 1 20); do
    req POST /tasks $key1 "{\"externalId\": \"PAIR-$i\", \"capturePoint\": \"pair\", \"subject\": \"pair $i\"}"
done
pair_done() {
    req GET "/webhooks/pair/deliveries?status=delivered&limit=1000" $key1; [ "$(json '.deliveries | length')" = 20 ]
}
wait_until 40 pair_done
check "two replicas: all 20 deliveries delivered" "20" "$(json '.deliveries | length')"
cat >"$work/overlap.py" <<'PY'
import json, sys
spans = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["name"] != sys.argv[2]:
        continue
    spans.setdefault(r["id"], []).append((r["t"], r["ev"]))
overlaps = 0
for events in spans.values():
    depth = 0
    for _, ev in sorted(events, key=lambda e: (e[0], e[1] == "begin")):
        depth += 1 if ev == "begin" else -1
        overlaps += depth > 1
print(overlaps, len(spans))
PY
check "two replicas: no delivery attempted twice at the same time" "0 20" \
    "$(python3 "$work/overlap.py" "$recv_log" pair)"
wait_until 90 delivery_is held status delivered
check "kill -9 mid-delivery: delivered after the lease ran out (within 75 s)" "delivered yes" \
    "$(delivery held status) $([ $(($(date +%s) - killed_at)) -le 75 ] && echo yes)"
check "the receiver saw one delivery id on every attempt, attempts one at a time" "1 yes 0 1" \
    "$(received held .id | sort -u | wc -l) $([ "$(received held | wc -l)" -ge 2 ] && echo yes) \
$(python3 "$work/overlap.py" "$recv_log" held)"
check "and that id is the delivery's" "$(delivery held id)" "$(received held .id | head -1 | tr -d '"')"

# a webhook change made through one replica reaches the other at once (NOTIFY on the control database), not
# at its next probe of the tenant (5 minutes): replica b has probed a new tenant and found no webhook when
# one is created through replica a; b delivers its events once a is gone
key3=tenant-key-t3-0001
cluster_client createdb t3 || fail_setup "createdb t3 failed"
req POST /provisioning "$admin_key" "$(prov t3 t3 $key3)"; check "tenant t3 provisioned" "200" "$code"
b_log=$work/sidecar-$http_port_b.log
b_said() { grep -q -F "\"msg\":\"$1\",\"detail\":\"$2\"" "$b_log"; } # b_said MESSAGE DETAIL
wait_until 40 b_said "a tenant probed for webhooks" "t3: none"
check "replica b probed tenant t3 and found no webhook" "yes" \
    "$(b_said "a tenant probed for webhooks" "t3: none" && echo yes)"
hook news "$recv/ok/news" '"events": ["task.created"]' $key3
check "a webhook of t3 created through replica a" "200" "$code"
wait_until 15 b_said "webhook delivery starts for a tenant" "t3"
check "replica b starts delivering for t3 within 15 s" "yes" \
    "$(b_said "webhook delivery starts for a tenant" "t3" && echo yes)"
sidecar_stop
base="http://127.0.0.1:$http_port_b/iwd/v3"
req POST /tasks $key3 '{"externalId": "NEWS-1", "capturePoint": "news", "subject": "through replica b"}'
check "a task of t3 created through replica b" "201" "$code"
wait_until 30 count_at_least news 1
check "replica b delivered t3's event" "1" "$(received news | wc -l)"

# a tenant's first webhook created with SQL in its database (no replica told) is found within seconds: the
# server's count of webhook changes (iwd.webhook_changes) moved, read every second, not at the next probe
key4=tenant-key-t4-0001
cluster_client createdb t4 || fail_setup "createdb t4 failed"
req POST /provisioning "$admin_key" "$(prov t4 t4 $key4)"; check "tenant t4 provisioned" "200" "$code"
wait_until 40 b_said "a tenant probed for webhooks" "t4: none"
check "replica b probed tenant t4 and found no webhook" "yes" \
    "$(b_said "a tenant probed for webhooks" "t4: none" && echo yes)"
cluster_sql -d t4 -c "SELECT iwd.upsert_webhook('{\"name\": \"sql-made\", \"url\": \"$recv/ok/sql-made\",
    \"secret\": \"secret-sql-made\", \"events\": [\"task.created\"]}')" >/dev/null
check "a webhook of t4 created with SQL in its database" "0" "$?"
wait_until 30 b_said "webhook delivery starts for a tenant" "t4"
check "replica b starts delivering for t4 within 30 s (its next probe would be in 5 minutes)" "yes" \
    "$(b_said "webhook delivery starts for a tenant" "t4" && echo yes)"
req POST /tasks $key4 '{"externalId": "SQL-1", "capturePoint": "sql", "subject": "to a webhook made with SQL"}'
wait_until 30 count_at_least sql-made 1
check "the webhook made with SQL got the task's event, signed" "1 0" \
    "$(received sql-made | wc -l) $(received sql-made | python3 "$work/verify.py")"

# a deleted webhook's deliveries stop at once: with 8 attempts in flight to a receiver that never answers
# (the most per webhook), the other 4 deliveries claimed wait in the sender; none is attempted after the
# deletion returns, whether by REST (the replica that serves it) or by SQL (NOTIFY iwd_webhooks)
for how in rest sql; do
    name=stopped-$how
    hook "$name" "$recv/hang/$name" "\"filter\": {\"capturePoint\": \"$name\"}" $key4
    for i in $(seq 1 12); do
        req POST /tasks $key4 "{\"externalId\": \"$name-$i\", \"capturePoint\": \"$name\", \"subject\": \"s\"}"
    done
    wait_until 30 count_at_least "$name" 8
    in_flight=$(received "$name" | wc -l)
    if [ "$how" = rest ]; then
        req DELETE "/webhooks/$name" $key4; deleted="$code"
    else
        deleted=$(cluster_sql -d t4 -c "SELECT iwd.delete_webhook('$name')")
    fi
    deleted_at=$(date +%s.%N)
    sleep 16 # the attempts in flight time out after 10 s: a delivery left waiting would start then
    check "deleted by $how with 8 attempts in flight: no delivery of it attempted after the deletion" \
        "8 $([ $how = rest ] && echo 200 || echo t) 0" \
        "$in_flight $deleted $(received "$name" "select(.t > $deleted_at)" | wc -l)"
done

# a burst: 150 tasks created, held and resumed in one transaction (450 events at once, 150 claimable at first):
# a round that claimed a backlog is followed by rounds that claim beside it on a second connection, and each
# task's events still reach the webhook in order, once each
hook burst "$recv/ok/burst" '"filter": {"capturePoint": "burst"}' $key4
cluster_sql -d t4 -c "BEGIN;
    CREATE TEMP TABLE burst AS SELECT (iwd.create_task(jsonb_build_object('externalId', 'BURST-' || g,
        'capturePoint', 'burst')) ->> 'id')::bigint AS id FROM generate_series(1, 150) g;
    SELECT count(iwd.hold_task(id)) FROM burst;
    SELECT count(iwd.resume_task(id)) FROM burst;
    COMMIT;" >/dev/null || fail_setup "the burst failed"
wait_until 60 count_at_least burst 450
check "the burst's 450 events delivered once each" "450 450" \
    "$(received burst | wc -l) $(received burst .id | sort -u | wc -l)"
check "in task order: created, held, resumed for each of the 150 tasks" "150" \
    "$(received burst '.body | fromjson | [.taskId, .type]' | jq -s -r 'to_entries |
       map({at: .key, task: .value[0], type: .value[1]}) | group_by(.task) |
       map(sort_by(.at) | map(.type) | join(" ")) | map(select(. == "task.created task.held task.resumed")) |
       length')"
check "the burst was claimed beside the rounds too" "yes" \
    "$(grep -q '"msg":"deliveries claimed beside the round","detail":"t4: ' "$b_log" && echo yes)"

kill "$replica_b"; wait "$replica_b" 2>/dev/null; replica_b=""
sidecar_stop
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "yes" "$(sidecar_log_clean && echo yes)"
check "every log line is a JSON object" "0" "$(cat "$work"/sidecar-*.log | grep -v '^{.*}$' | grep -c .)"
summary
