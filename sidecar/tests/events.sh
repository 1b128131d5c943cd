#!/usr/bin/env bash
# The event stream GET /iwd/v3/events end to end: a real PostgreSQL (a temporary cluster preloading iwd, no
# scheduler worker, so that only the sidecar publishes), a real redis-server and the sidecar built with
# AddressSanitizer; clients are curl and small Python programs. Run on its own or by tests/run.sh.
# Ends with "events: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
suite=events
# shellcheck source=../../scripts/lib.sh
. ../scripts/lib.sh
work=$(work_dir events-test)
pids=()
http_port=$(free_port); metrics_port=$(free_port)
base="http://127.0.0.1:$http_port/iwd/v3"
metrics_url="http://127.0.0.1:$metrics_port/metrics"
admin_key="admin-key-for-events"
key_e="events-key-e-0001"; key_f="events-key-f-0001"
ulimit -n 8192 2>/dev/null || true # 1,000 streams and their clients

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for f in "$work"/*.stream; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done # streams a failed check left
    servers_stop immediate
    sleep 0.2
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

tenant_sql() { cluster_sql -d tenant_e "$@"; }

start_sidecar() { # start_sidecar [NAME=VALUE...]: the settings below, overridden by the arguments
    IWD_LISTEN=127.0.0.1 IWD_PORT=$http_port IWD_ADMIN_API_KEY=$admin_key \
    IWD_SECRET_KEY=server-secret-for-events-0123456789abcdef \
    IWD_CONTROL_DB="host=127.0.0.1 port=$pg_port dbname=control user=postgres" \
    IWD_REDIS_NODES="redis://127.0.0.1:$redis_port" IWD_REDIS_PASSWORD=redis-secret IWD_THREADS=2 \
    IWD_METRICS_LISTEN=127.0.0.1 IWD_METRICS_PORT=$metrics_port IWD_EVENTS_HEARTBEAT_S=1 \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:verify_asan_link_order=0 UBSAN_OPTIONS=print_stacktrace=1 \
    LD_PRELOAD="$work/recycle_guard.so" env "$@" ./iwd-sidecar-asan >>"$work/sidecar.log" 2>&1 &
    sidecar_pid=$!
    for _ in $(seq 1 100); do
        curl -sf "$base/health/live" >/dev/null && return 0
        sleep 0.1
    done
    echo "the sidecar did not start:"; tail -n 20 "$work/sidecar.log"; return 1
}
restart_sidecar() { kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; start_sidecar "$@"; }
metric() { curl -s "$metrics_url" | awk -v m="$1" '$1 == m {print $2}'; }

# stream NAME [CURL-ARGS...]: an SSE client in the background, its output in $work/NAME.sse
stream() {
    local name=$1; shift
    curl -sN -H "x-api-key: $key_e" "$@" >"$work/$name.sse" 2>/dev/null &
    echo $! >"$work/$name.stream"
    for _ in $(seq 1 200); do grep -q '^: iwd event stream' "$work/$name.sse" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
stop_stream() { # stop_stream NAME: the client ends; its pid file goes with it
    kill "$(cat "$work/$1.stream")" 2>/dev/null; wait "$(cat "$work/$1.stream")" 2>/dev/null; rm -f "$work/$1.stream"
}
# ids NAME: the event ids a stream received, one line
ids() { awk '/^id: / {printf "%s%s", sep, $2; sep = " "}' "$work/$1.sse"; }
# wait_events NAME N: until the stream holds N events (at most 30 s)
wait_events() {
    for _ in $(seq 1 300); do [ "$(grep -c '^id: ' "$work/$1.sse")" -ge "$2" ] && return 0; sleep 0.1; done
    return 1
}
# feed_ids AFTER [WHERE]: the ids the tenant's feed holds after AFTER, one line
feed_ids() {
    tenant_sql -c "SELECT coalesce(string_agg(id::text, ' ' ORDER BY id), '') FROM iwd.event_feed
                   WHERE id > $1 ${2:+AND $2}"
}
head_id() { tenant_sql -c "SELECT iwd.events_head()"; }
# same_ids EXPECTED ACTUAL: "ok", or the counts and the first difference (the lists may be long)
same_ids() {
    python3 -c 'import sys
e, a = sys.argv[1].split(), sys.argv[2].split()
d = next((i for i in range(min(len(e), len(a))) if e[i] != a[i]), min(len(e), len(a)))
print("ok" if e == a else f"{len(e)} expected, {len(a)} got, first difference at {d}: {e[d:d+3]} / {a[d:d+3]}")' \
        "$1" "$2"
}
# published AFTER N: until the feed holds N events after AFTER (the hub publishes them; at most 30 s)
published() {
    for _ in $(seq 1 300); do [ "$(feed_ids "$1" | wc -w)" -ge "$2" ] && return 0; sleep 0.1; done
    return 1
}

make -s asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"
cc -std=gnu11 -Wall -Wextra -Werror -O1 -shared -fPIC -o "$work/recycle_guard.so" tests/recycle_guard.c -ldl -lpthread \
    || fail_setup "cannot build tests/recycle_guard.c"

# --- settings --------------------------------------------------------------------------------------
help=$(./iwd-sidecar-asan --help)
missing=""
for v in IWD_MAX_STREAMS IWD_MAX_STREAMS_PER_TENANT IWD_EVENTS_HEARTBEAT_S IWD_EVENTS_BUFFER_BYTES \
         IWD_EVENTS_MEMORY_BYTES; do
    grep -q "$v " <<<"$help" || missing="$missing $v"
done
check "--help documents the event stream's settings" "" "$missing"
for setting in IWD_MAX_STREAMS=0 IWD_MAX_STREAMS=x IWD_MAX_STREAMS_PER_TENANT=-1 IWD_EVENTS_HEARTBEAT_S=0 \
               IWD_EVENTS_HEARTBEAT_S=16 IWD_EVENTS_BUFFER_BYTES=4095 IWD_EVENTS_MEMORY_BYTES=65535; do
    env "$setting" IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=$admin_key \
        IWD_SECRET_KEY=server-secret-for-events-0123456789abcdef ./iwd-sidecar-asan >/dev/null 2>&1
    check "$setting is refused" "2" "$?"
done

# --- servers ---------------------------------------------------------------------------------------
cluster_init "$work/pg" "listen_addresses = '127.0.0.1'
iwd.max_workers = 0
# no scheduler worker publishes here: each writing transaction announces its events on iwd_events
iwd.notify = event
max_connections = 200" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
for db in control tenant_e tenant_f; do cluster_client createdb "$db" || fail_setup "createdb $db failed"; done
redis_start "$work" redis-secret || fail_setup "redis-server did not start"
start_sidecar || fail_setup "sidecar start failed"
prov() { # prov CCID DB KEY
    echo "{\"tenant\": {\"id\": \"$1\", \"name\": \"Tenant $1\", \"ccid\": \"$1\"},
           \"iwd\": {\"url\": \"http://iwd\", \"db\": {\"host\": \"127.0.0.1\", \"port\": $pg_port,
           \"database\": \"$2\", \"user\": \"postgres\", \"password\": \"pw\", \"ssl\": false},
           \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$3\"}}}"
}
for t in e f; do
    k="events-key-$t-0001"
    req POST /provisioning "$admin_key" "$(prov "$t" "tenant_$t" "$k")"
    [ "$code" = 200 ] || fail_setup "provisioning $t: $code $body"
done
req PUT /agents/ev1 "$key_e" '{"name": "Eve", "capacity": {"workitem": 1}, "state": "ready"}'
[ "$code" = 200 ] || fail_setup "agent: $code $body"

# --- the live stream: created, reserved and completed events of tasks made over REST, in order -------
stream live "$base/events" || fail_setup "the stream did not open"
check_match "the stream answers text/event-stream" "200 text/event-stream" \
    "$(curl -s -m 1 -o /dev/null -w '%{http_code} %{content_type}' -H "x-api-key: $key_e" "$base/events")"
all_types=$(tenant_sql -c "SELECT array_to_string(iwd.event_types(), ',')")
check "every type of iwd.event_types() is known to ?types=" "200" \
    "$(curl -s -m 1 -o /dev/null -w '%{http_code}' -H "x-api-key: $key_e" "$base/events?types=$all_types")"
req POST /tasks "$key_e" '{"externalId": "EV-1", "capturePoint": "erp", "subject": "first"}'; task1=$(json .id)
req POST /agents/ev1/next "$key_e" '{"reserveSeconds": 120}'
check "the agent reserves the task" "200 $task1" "$code $(json .id)"
req POST "/tasks/$task1/complete" "$key_e" '{"agent": "ev1"}'; check "the task completes" "200" "$code"
wait_events live 3
types=$(awk '/^event: / {printf "%s%s", sep, $2; sep = " "}' "$work/live.sse")
check "created, reserved and completed arrive in order" "task.created task.reserved task.completed" \
    "$(tr ' ' '\n' <<<"$types" | grep -E 'created|reserved|completed' | tr '\n' ' ' | sed 's/ $//')"
check "the ids are the feed's, increasing" "$(feed_ids 0)" "$(ids live)"
bad_frames=$(python3 - "$work/live.sse" <<'PY'
import json, sys
bad, frames = 0, open(sys.argv[1]).read().split("\n\n")
for f in frames:
    lines = [l for l in f.split("\n") if l and not l.startswith(":")]
    if not lines:
        continue
    fields = dict(l.split(": ", 1) for l in lines)
    doc = json.loads(fields["data"])
    ok = (list(fields) == ["id", "event", "data"] and doc["id"] == int(fields["id"]) and doc["type"] == fields["event"]
          and doc["taskId"] == doc["task"]["id"] and "at" in doc and "externalId" in doc and "agent" in doc)
    bad += not ok
print(bad)
PY
)
check "every frame is id, event, data; data is the event document with the same id and type" "0" "$bad_frames"
check "the completed event's document holds the task after the event" "completed ev1" \
    "$(grep '^data: .*"task.completed"' "$work/live.sse" | head -1 | cut -c7- | jq -r '"\(.task.status) \(.agent)"')"

# --- heartbeats ------------------------------------------------------------------------------------
before=$(grep -c '^: heartbeat' "$work/live.sse")
sleep 3.5
check "an idle stream sends a comment every IWD_EVENTS_HEARTBEAT_S (1 s here)" "ok" \
    "$([ $(($(grep -c '^: heartbeat' "$work/live.sse") - before)) -ge 2 ] && echo ok)"

# --- resume after a disconnect: Last-Event-ID and ?after= get exactly the missed events -------------
last=$(ids live | awk '{print $NF}')
stop_stream live
for i in 1 2 3; do req POST /tasks "$key_e" "{\"externalId\": \"EV-R$i\", \"capturePoint\": \"erp\"}"; done
published "$last" 3
missed=$(feed_ids "$last")
check "three events were missed" "3" "$(wc -w <<<"$missed")"
stream resume_header "$base/events" -H "Last-Event-ID: $last"
wait_events resume_header 3
check "Last-Event-ID: exactly the missed events" "$missed" "$(ids resume_header)"
stream resume_query "$base/events?after=$last"
wait_events resume_query 3
check "?after=: exactly the missed events" "$missed" "$(ids resume_query)"
stream resume_both "$base/events?after=0" -H "Last-Event-ID: $last"
wait_events resume_both 3
check "Last-Event-ID wins over the URL's after (what a reconnecting EventSource sends)" "$missed" "$(ids resume_both)"
req POST /tasks "$key_e" '{"externalId": "EV-R4", "capturePoint": "erp"}'
wait_events resume_query 4
check "after the catch-up the stream goes on live, without a gap or a duplicate" "$(feed_ids "$last")" \
    "$(ids resume_query)"
for s in resume_header resume_query resume_both; do stop_stream "$s"; done

# a catch-up longer than one page (1,000 events), with events committed while it runs
from=$(head_id)
tenant_sql -c "SELECT count(iwd.create_task(jsonb_build_object('externalId', 'BULK-' || g, 'capturePoint', 'sql')))
               FROM generate_series(1, 1500) g" >/dev/null
tenant_sql -c "SELECT iwd.publish_events()" >/dev/null
stream long "$base/events?after=$from&types=task.created"
for i in 1 2 3; do req POST /tasks "$key_e" "{\"externalId\": \"EV-L$i\", \"capturePoint\": \"erp\"}"; done
wait_events long 1503
sleep 0.5
check "a catch-up of 1,503 events over two pages and the live feed: each once, in order" \
    "ok" "$(same_ids "$(feed_ids "$from" "type = 'task.created'")" "$(ids long)")"
stop_stream long

# --- filters ---------------------------------------------------------------------------------------
stream completed "$base/events?types=task.completed"
stream capture_x "$base/events?capturePoint=xcp,ycp"
req POST /tasks "$key_e" '{"externalId": "EV-X", "capturePoint": "xcp"}'; task_x=$(json .id)
req POST /tasks "$key_e" '{"externalId": "EV-Y", "capturePoint": "erp"}'; task_y=$(json .id)
req POST "/tasks/$task_y/cancel" "$key_e" '{"reason": "test"}'
req POST /agents/ev1/next "$key_e" '{"reserveSeconds": 120}'; reserved=$(json .id)
req POST "/tasks/$reserved/complete" "$key_e" '{"agent": "ev1"}'
wait_events completed 1
sleep 1
check "?types=task.completed: only completed events" "task.completed" \
    "$(awk '/^event: / {print $2}' "$work/completed.sse" | sort -u | tr '\n' ' ' | sed 's/ $//')"
wait_events capture_x 1
check "?capturePoint=xcp,ycp: only events of tasks captured there" "$task_x" \
    "$(grep '^data: ' "$work/capture_x.sse" | cut -c7- | jq -r .taskId | sort -u | tr '\n' ' ' | sed 's/ $//')"
stop_stream completed; stop_stream capture_x
stream catch_up_filtered "$base/events?after=$last&types=task.canceled"
wait_events catch_up_filtered 1
sleep 0.5
check "filters apply to the catch-up too" "$(feed_ids "$last" "type = 'task.canceled'")" "$(ids catch_up_filtered)"
stop_stream catch_up_filtered

bad() { # bad NAME QUERY [CURL-ARGS...]: a 400 in JSON
    local name=$1 query=$2; shift 2
    body=$(curl -s -m 5 -w ' %{http_code}' -H "x-api-key: $key_e" "$@" "$base/events$query")
    check_match "$name: 400 naming it" "^\{\"status\":\{\"code\":400,\"message\":\".+\"\}\} 400$" "$body"
}
bad "an unknown type" "?types=task.created,task.exploded"
bad "an empty types" "?types="
bad "an unknown query parameter" "?colour=red"
bad "a negative after" "?after=-1"
bad "a non-numeric after" "?after=x"
bad "a malformed Last-Event-ID" "" -H "Last-Event-ID: abc"
bad "limit on the SSE form" "?limit=5"
bad "limit 0 on the JSON form" "?limit=0" -H 'Accept: application/json'
bad "limit 1001 on the JSON form" "?limit=1001" -H 'Accept: application/json'
bad "a negative wait" "?wait=-1" -H 'Accept: application/json'
check "no key: 401" "401" "$(curl -s -o /dev/null -w '%{http_code}' "$base/events")"

# --- a rolled-back transaction announces nothing --------------------------------------------------
stream rollback "$base/events"
tenant_sql -c "BEGIN" -c "SELECT iwd.create_task('{\"externalId\": \"ROLLED-BACK\", \"capturePoint\": \"sql\"}')" \
    -c "ROLLBACK" >/dev/null
req POST /tasks "$key_e" '{"externalId": "AFTER-ROLLBACK", "capturePoint": "erp"}'
wait_events rollback 1
sleep 0.5
check "after a rollback, the stream gets the next committed task and nothing of the rolled-back one" \
    "AFTER-ROLLBACK" \
    "$(grep '^data: ' "$work/rollback.sse" | cut -c7- | jq -r .externalId | tr '\n' ' ' | sed 's/ $//')"
check "the event documents (of the outbox and the feed) hold nothing of it" "0" \
    "$(tenant_sql -c "SELECT count(*) FROM iwd.event_document WHERE doc->>'externalId' = 'ROLLED-BACK'")"
stop_stream rollback

# --- the hub's connection dies: it comes back by itself and the streams miss nothing ------------------
stream reconnect "$base/events"
from=$(head_id)
cluster_sql -d postgres -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                            WHERE application_name = 'iwd-sidecar-events'" >/dev/null
for i in 1 2 3; do req POST /tasks "$key_e" "{\"externalId\": \"EV-RC$i\", \"capturePoint\": \"erp\"}"; done
wait_events reconnect 3
published "$from" 3
check "after its hub's connection was terminated, the stream gets every event, once" "$(feed_ids "$from")" \
    "$(ids reconnect)"
check_match "the lost connection is logged" '"an event hub lost its database connection"' "$(cat "$work/sidecar.log")"
stop_stream reconnect

# --- the JSON form and its long-poll --------------------------------------------------------------
poll() { # poll QUERY: sets $body, $code and $took (ms)
    local t0; t0=$(date +%s%3N)
    body=$(curl -s -m 40 -w '\n%{http_code}' -H "x-api-key: $key_e" -H 'Accept: application/json' "$base/events$1")
    code=$(tail -n 1 <<<"$body"); body=$(sed '$d' <<<"$body")
    took=$(($(date +%s%3N) - t0))
}
head=$(head_id)
poll "?after=$last&limit=2&wait=20"
check "JSON: events after \`after\` are answered at once, at most limit of them" \
    "200 $(feed_ids "$last" | cut -d' ' -f1-2) $(feed_ids "$last" | cut -d' ' -f2)" \
    "$code $(jq -r '[.events[].id] | join(" ")' <<<"$body") $(jq -r .next <<<"$body")"
check "JSON: at once, not after the wait (20 s)" "ok" "$([ "$took" -lt 5000 ] && echo ok || echo "$took ms")"
poll "?after=$head&wait=2"
check "JSON: nothing after \`after\`: {events: [], next: after} when the wait ends" "200 0 $head" \
    "$code $(jq '.events | length' <<<"$body") $(jq -r .next <<<"$body")"
check "JSON: after about the wait (2 s)" "ok" \
    "$([ "$took" -ge 1900 ] && [ "$took" -lt 10000 ] && echo ok || echo "$took ms")"
poll "?after=$head"
check "JSON without wait: answered at once, empty" "200 0 $head" \
    "$code $(jq '.events | length' <<<"$body") $(jq -r .next <<<"$body")"
( sleep 1; curl -s -o /dev/null -X POST -H "x-api-key: $key_e" -H 'content-type: application/json' \
    --data-binary '{"externalId": "EV-WAKE", "capturePoint": "erp"}' "$base/tasks" ) &
poll "?after=$head&wait=20"
check "JSON: a parked long-poll is answered by the first event that comes" "200 EV-WAKE" \
    "$code $(jq -r '.events[0].externalId' <<<"$body")"
check "JSON: when it comes (1 s in), not at the end of the wait (20 s)" "ok" \
    "$([ "$took" -lt 10000 ] && echo ok || echo "$took ms")"
check "JSON: next is the event's id" "$(jq -r '.events[-1].id' <<<"$body")" "$(jq -r .next <<<"$body")"
# event ids of 19 digits (the feed's sequence moved far on): a parked long-poll's answer holds them whole
tenant_sql -c "SELECT setval('iwd.event_feed_id_seq', 9000000000000000000)" >/dev/null
head=$(head_id)
( sleep 1; curl -s -o /dev/null -X POST -H "x-api-key: $key_e" -H 'content-type: application/json' \
    --data-binary '{"externalId": "EV-BIG", "capturePoint": "erp"}' "$base/tasks" ) &
poll "?after=$head&wait=20"
big_next() { # the first event's externalId and next of a JSON answer (python, not jq: jq reads numbers as doubles)
    python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["events"][0]["externalId"], d["next"])' "$1"
}
check "JSON: a 19-digit event id in a long-poll's answer" "200 EV-BIG 9000000000000000001" "$code $(big_next "$body")"
poll "?types=task.completed&wait=1"
check "JSON without after starts from now: nothing old" "200 0" "$code $(jq '.events | length' <<<"$body")"

# --- limits: IWD_MAX_STREAMS and IWD_MAX_STREAMS_PER_TENANT, 503 in JSON ------------------------------
restart_sidecar IWD_MAX_STREAMS=3 IWD_MAX_STREAMS_PER_TENANT=2
stream l1 "$base/events"; stream l2 "$base/events"
body=$(curl -s -m 5 -D "$work/headers" -w ' %{http_code}' -H "x-api-key: $key_e" "$base/events")
check_match "a tenant's third stream beyond IWD_MAX_STREAMS_PER_TENANT=2: 503 in JSON" \
    '^\{"status":\{"code":503,"message":"this tenant holds its most event streams.*"\}\} 503$' "$body"
check "with Retry-After" "1" "$(awk 'tolower($1) == "retry-after:" {print $2}' "$work/headers" | tr -d '\r')"
curl -sN -H "x-api-key: $key_f" "$base/events" >"$work/f1.sse" 2>/dev/null &
echo $! >"$work/f1.stream"
sleep 0.5
check "another tenant still gets one" "ok" "$(grep -q '^: iwd event stream' "$work/f1.sse" && echo ok)"
body=$(curl -s -m 5 -w ' %{http_code}' -H "x-api-key: $key_f" "$base/events")
check_match "beyond IWD_MAX_STREAMS=3: 503 in JSON" \
    '^\{"status":\{"code":503,"message":"this sidecar holds.*"\}\} 503$' "$body"
poll "?wait=5"
check "a long-poll that would wait counts as a stream" "503" "$code"
check "iwd_events_streams_open counts them" "3" "$(metric iwd_events_streams_open)"
check "refusals are counted" "3" \
    "$(curl -s "$metrics_url" | awk '/^iwd_events_streams_refused_total/ {n += $2} END {print n}')"
stop_stream l1
for _ in $(seq 1 50); do [ "$(metric iwd_events_streams_open)" = 2 ] && break; sleep 0.1; done
check "a stream whose client left frees its place (noticed by its next write, a heartbeat at the latest)" "2" \
    "$(metric iwd_events_streams_open)"
stop_stream l2; stop_stream f1

# --- a client that does not read is fed from the database, then disconnected: never buffered without bound ---
restart_sidecar IWD_EVENTS_BUFFER_BYTES=65536
python3 - "$http_port" "$key_e" "$work/slow.go" >"$work/slow.out" 2>&1 <<'PY' &
import os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(f"GET /iwd/v3/events HTTP/1.1\r\nHost: x\r\nx-api-key: {sys.argv[2]}\r\n\r\n".encode())
for _ in range(600):  # reads nothing until the test has seen the stream dropped (at most 2 minutes)
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.2)
s.settimeout(5)
total = 0
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            print("closed", total)
            break
        total += len(chunk)
except ConnectionResetError:
    print("closed", total)
except socket.timeout:
    print("open", total)
PY
slow_pid=$!
sleep 1
fast_from=$(head_id)
stream fast "$base/events"
tenant_sql -c "SELECT count(iwd.create_task(jsonb_build_object('externalId', 'SLOW-' || g, 'capturePoint', 'sql',
               'subject', repeat('word ', 800)))) FROM generate_series(1, 3000) g" >/dev/null
dropped() { curl -s "$metrics_url" | awk '/^iwd_events_streams_dropped_total/ {n += $2} END {print n + 0}'; }
for _ in $(seq 1 300); do [ "$(dropped)" = 0 ] || break; sleep 0.2; done
check "the slow client is dropped and counted in iwd_events_streams_dropped_total" "1" "$(dropped)"
check_match "the drop is logged" '"an event stream was closed".*took nothing' "$(cat "$work/sidecar.log")"
touch "$work/slow.go"
wait "$slow_pid"
check_match "the slow client finds its connection closed once it reads" "^closed [0-9]+$" "$(cat "$work/slow.out")"
req POST /tasks "$key_e" '{"externalId": "EV-AFTER-SLOW", "capturePoint": "erp"}'
wait_events fast 3001
check "a stream that reads keeps up with the burst, falling back to the database when behind: each event once" \
    "ok" "$(same_ids "$(feed_ids "$fast_from")" "$(ids fast)")"
stop_stream fast

# --- IWD_EVENTS_MEMORY_BYTES: what all streams hold unsent together is bounded ----------------------------
# three clients that read nothing hold what h2o is writing to them; beyond the bound a new stream is refused,
# a stream that reads falls back to the database and waits; once the three are dropped, streams open again
# and the reader gets every event
restart_sidecar IWD_EVENTS_MEMORY_BYTES=65536
python3 - "$http_port" "$key_e" "$work/mem.go" >"$work/mem.out" 2>&1 <<'PY' &
import os, socket, sys, time
streams = []
for _ in range(3):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.sendall(f"GET /iwd/v3/events HTTP/1.1\r\nHost: x\r\nx-api-key: {sys.argv[2]}\r\n\r\n".encode())
    streams.append(s)
for _ in range(600):  # reads nothing until the test is done with them (at most 2 minutes)
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.2)
for s in streams:
    s.close()
PY
mem_pid=$!
sleep 1
mem_from=$(head_id)
stream memfast "$base/events"
tenant_sql -c "SELECT count(iwd.create_task(jsonb_build_object('externalId', 'MEM-' || g, 'capturePoint', 'sql',
               'subject', repeat('word ', 800)))) FROM generate_series(1, 3000) g" >/dev/null
memory_refused() {
    body=$(curl -s -m 5 -w ' %{http_code}' -H "x-api-key: $key_e" -H 'accept: application/json' \
           "$base/events?wait=1")
    grep -q 'IWD_EVENTS_MEMORY_BYTES.* 503$' <<<"$body"
}
for _ in $(seq 1 60); do memory_refused && break; sleep 0.1; done
check_match "beyond IWD_EVENTS_MEMORY_BYTES a new stream is refused: 503 in JSON" \
    '^\{"status":\{"code":503,"message":"the event streams of this sidecar hold.*IWD_EVENTS_MEMORY_BYTES.*"\}\} 503$' \
    "$body"
memory_open() {
    code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -H "x-api-key: $key_e" -H 'accept: application/json' \
           "$base/events?wait=1")
    [ "$code" = 200 ]
}
for _ in $(seq 1 120); do memory_open && break; sleep 0.5; done
check "once the clients that read nothing are dropped, streams open again" "200" "$code"
wait_events memfast 3000
check "the stream that reads got every event once, in order" "ok" \
    "$(same_ids "$(feed_ids "$mem_from")" "$(ids memfast)")"
touch "$work/mem.go"
wait "$mem_pid"
stop_stream memfast

# --- 1,000 concurrent streams held open while tasks flow ----------------------------------------------
restart_sidecar
python3 - "$http_port" "$key_e" 1000 50 "$work/thousand.ready" >"$work/thousand.out" 2>&1 <<'PY' &
import asyncio, sys
port, key, n, expect, ready = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
async def client(opened):
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    w.write(f"GET /iwd/v3/events?types=task.created HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n".encode())
    await w.drain()
    buf, seen, first = b"", set(), True
    while len(seen) < expect:
        chunk = await r.read(65536)
        if not chunk:
            break
        buf += chunk
        if first and b": iwd event stream" in buf:
            first = False
            opened.append(1)
        for line in buf.split(b"\n"):
            if line.startswith(b"id: "):
                seen.add(int(line[4:]))
        buf = buf[buf.rfind(b"\n") + 1:]
    w.close()
    return sorted(seen)
async def main():
    opened = []
    tasks = [asyncio.create_task(client(opened)) for _ in range(n)]
    while len(opened) < n:
        await asyncio.sleep(0.1)
    open(ready, "w").write("ready\n")
    results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    complete = sum(1 for r in results if len(r) == expect)
    same = len({tuple(r) for r in results}) == 1
    print(f"{complete} {'same' if same else 'different'}")
asyncio.run(main())
PY
thousand_pid=$!
for _ in $(seq 1 600); do [ -f "$work/thousand.ready" ] && break; sleep 0.1; done
check "1,000 streams open" "1000" "$(metric iwd_events_streams_open)"
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$sidecar_pid/status"); fds=$(find "/proc/$sidecar_pid/fd" -mindepth 1 | wc -l)
threads=$(awk '/^Threads/ {print $2}' "/proc/$sidecar_pid/status")
echo "# 1,000 open streams (AddressSanitizer build): RSS ${rss_kb} kB, ${fds} open fds, ${threads} threads"
check "one database connection feeds them all (the hub's), besides the API's" "1" \
    "$(cluster_sql -d postgres -c "SELECT count(*) FROM pg_stat_activity
                                    WHERE application_name = 'iwd-sidecar-events'")"
creators=()
for i in $(seq 1 50); do
    curl -s -o /dev/null -X POST -H "x-api-key: $key_e" -H 'content-type: application/json' \
        --data-binary "{\"externalId\": \"K-$i\", \"capturePoint\": \"erp\"}" "$base/tasks" &
    creators+=($!)
    if [ $((i % 10)) -eq 0 ]; then wait "${creators[@]}"; creators=(); fi
done
wait_for() { for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; return 1; }
wait_for "$thousand_pid"
check "each of the 1,000 streams received the 50 new tasks, the same ids" "1000 same" "$(cat "$work/thousand.out")"
for _ in $(seq 1 50); do [ "$(metric iwd_events_streams_open)" = 0 ] && break; sleep 0.1; done
check "the closed streams leave nothing open (each noticed by its next write)" "0" "$(metric iwd_events_streams_open)"
fds_after=$(find "/proc/$sidecar_pid/fd" -mindepth 1 | wc -l)
echo "# after they closed: ${fds_after} open fds"
check "their descriptors are closed" "ok" "$([ "$fds_after" -lt 100 ] && echo ok || echo "$fds_after fds")"

# --- a hub finds the server's connection slots held by idle API connections: one is closed for it --------
restart_sidecar IWD_PG_MAX_CONNECTIONS_PER_SERVER=2 IWD_PG_IDLE_TIMEOUT_S=600
# a call of tenant e and one of tenant f: their connections stay, idle, and hold the server's two slots
req GET "/tasks?limit=1" "$key_e"; req GET "/tasks?limit=1" "events-key-f-0001"
check "two idle API connections hold the server's two slots" "2" \
    "$(cluster_sql -d postgres -c "SELECT count(*) FROM pg_stat_activity
                                    WHERE application_name = 'iwd-sidecar' AND datname LIKE 'tenant_%'")"
head=$(head_id)
stream slots "$base/events?after=$head" || echo "# the stream did not open"
req POST /tasks "$key_e" '{"externalId": "SLOT-1", "capturePoint": "erp"}'
for _ in $(seq 1 200); do grep -q '"SLOT-1"' "$work/slots.sse" && break; sleep 0.1; done

# --- a long-poll whose hub connects late -------------------------------------------------------------------
# tenant e's hub holds the only hub slot (half the cap of 2), so tenant f's long-poll reads the feed while its
# hub waits for one; an event published after that read is before the head f's hub takes once e's hub has
# gone (15 s after its last stream): the long-poll reads once more and answers it, rather than waiting 30 s
# and answering nothing
head_f=$(cluster_sql -d tenant_f -c "SELECT iwd.events_head()")
curl -s -m 60 -H "x-api-key: $key_f" -H 'accept: application/json' "$base/events?after=$head_f&wait=30" \
    >"$work/late.json" &
late_pid=$!
late_read() { # the long-poll's read is answered: f's API connection is idle after it
    [ "$(cluster_sql -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'tenant_f'
            AND application_name = 'iwd-sidecar' AND state = 'idle' AND query LIKE '%events_after%'")" -ge 1 ]
}
for _ in $(seq 1 300); do late_read && break; sleep 0.1; done
check "a long-poll of tenant f read the feed while its hub waits for a connection slot" "yes yes" \
    "$(late_read && echo yes) $(grep -q '"an event hub waits for a connection slot","detail":"f:' \
                                 "$work/sidecar.log" && echo yes)"
cluster_sql -d tenant_f -c "SELECT iwd.create_task('{\"externalId\": \"LATE-1\", \"capturePoint\": \"erp\"}')" \
    >/dev/null
cluster_sql -d tenant_f -c "SELECT iwd.publish_events()" >/dev/null
stop_stream slots
# e's hub has no stream left: its connection ended now frees the slot at once, unless e's hub takes it again
# first (then it goes when e's hub closes, 15 s later)
cluster_sql -d postgres -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                            WHERE datname = 'tenant_e' AND application_name = 'iwd-sidecar-events'" >/dev/null
wait "$late_pid"
check "the event published between its read and its hub's head is answered when the hub joins" "LATE-1" \
    "$(jq -r '[.events[].externalId] | join(",")' "$work/late.json" 2>/dev/null)"
check "with the per-server cap held by idle API connections, a stream still gets the new task's event" \
    "yes" "$(grep -q '"SLOT-1"' "$work/slots.sse" && echo yes || echo "no (the hub got no connection slot)")"

# --- shutdown and sanitizers ---------------------------------------------------------------------------
kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; sidecar_pid=""
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "0" \
    "$(grep -c -E 'AddressSanitizer|runtime error' "$work/sidecar.log")"
check "each of libh2o's buffer allocators used by one thread only" "0" "$(grep -c recycle_guard "$work/sidecar.log")"

summary
