#!/usr/bin/env bash
# Router sync benchmark: IWD_BENCH_TASKS tasks (default 2000) are queued in a tenant database, then its router
# (tests/router/sim.py, IWD_BENCH_AGENTS agents, default 50, accepting and completing each offer at once) is
# enabled with maxInFlight IWD_BENCH_IN_FLIGHT (default 200) and iwd-sidecar syncs every
# IWD_ROUTER_INTERVAL_MS (default here 100). Reports the rate tasks were submitted (the router received the
# last one), the rate they came back completed (the last one completed in iwd), each from the moment the router
# was enabled, and the lag between a change at the router (its changedAt) and iwd applying it (the history
# event's time) at p50 / p99 / max, over every offered, accepted and completed change, and how many work items
# the router received out of queue order (each after one that comes later in the queue). Prints a markdown table
# row on stdout; progress goes to stderr. IWD_BENCH_SIDECAR: the sidecar binary to measure (default the release
# build, sidecar/iwd-sidecar, made here), e.g. a build of an earlier commit to compare with.
set -euo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=../../scripts/lib.sh
. scripts/lib.sh
tasks=${IWD_BENCH_TASKS:-2000}
agents=${IWD_BENCH_AGENTS:-50}
in_flight=${IWD_BENCH_IN_FLIGHT:-200}
interval=${IWD_ROUTER_INTERVAL_MS:-100}
work=$(work_dir bench-router)
pg_port=${IWD_BENCH_PG_PORT:-}
http_port=$(free_port); sim_port=$(free_port)
sim_pid=""
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null
    sidecar_stop
    cluster_stop fast
    rm -rf "$work"
}
trap cleanup EXIT
sql() { cluster_sql "$@"; }
admin_key=bench-admin-key-0001
key=bench-tenant-key-0001

cluster_init "$work/pg" "listen_addresses = '127.0.0.1'
iwd.databases = 'tenant'
iwd_dm.suspend = on
shared_buffers = 256MB"
cluster_start
sql -d postgres -c "CREATE DATABASE control" -c "CREATE DATABASE tenant"
sidecar_bin=${IWD_BENCH_SIDECAR:-sidecar/iwd-sidecar}
[ -n "${IWD_BENCH_SIDECAR:-}" ] || make -s -C sidecar >/dev/null
python3 tests/router/sim.py --port "$sim_port" --state "$work/sim.json" --client-id bench --client-secret bench-secret \
    --agents "$agents" --mode complete --step-seconds 0 >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$sim_port/sim/state" && break; sleep 0.1; done
sidecar_launch "$work/sidecar.log" "http://127.0.0.1:$http_port/iwd/v3/health/live" \
    env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY=$admin_key IWD_METRICS_PORT=0 IWD_REDIS_NODES= \
    IWD_SECRET_KEY=bench-secret-key-0123456789-0123456789 IWD_ROUTER_INTERVAL_MS="$interval" \
    IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control user=postgres" "$sidecar_bin"
base="http://127.0.0.1:$http_port/iwd/v3"
curl -sf -o /dev/null -H "x-api-key: $admin_key" -H 'content-type: application/json' "$base/provisioning" -d "{
    \"tenant\": {\"id\": \"bench\", \"name\": \"bench\", \"ccid\": \"bench\"},
    \"iwd\": {\"url\": \"http://iwd\", \"db\": {\"host\": \"127.0.0.1\", \"port\": $pg_port, \"database\": \"tenant\",
              \"user\": \"postgres\", \"password\": \"pw\", \"ssl\": false},
              \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$key\"}}}"
put_router() { # put_router ENABLED
    curl -sf -o /dev/null -X PUT -H "x-api-key: $key" -H 'content-type: application/json' "$base/router" -d "{
        \"url\": \"http://127.0.0.1:$sim_port\", \"clientId\": \"bench\", \"clientSecret\": \"bench-secret\",
        \"maxInFlight\": $in_flight, \"enabled\": $1}"
}
put_router false
echo "queueing $tasks tasks" >&2
sql -d tenant -c "SELECT count(iwd.create_task(jsonb_build_object('externalId', 'b' || g, 'capturePoint', 'bench',
                                                                  'priority', g % 100)))
                  FROM generate_series(1, $tasks) g" >/dev/null
now_ms() { date +%s%3N; }
start=$(now_ms)
put_router true
submitted_ms=""
while :; do
    posts=$(curl -s "http://127.0.0.1:$sim_port/sim/state" | jq '.items | length')
    [ -z "$submitted_ms" ] && [ "$posts" -ge "$tasks" ] && submitted_ms=$(($(now_ms) - start))
    done_n=$(sql -d tenant -c "SELECT count(*) FROM iwd.task_closed WHERE status = 'completed'")
    [ "$done_n" -ge "$tasks" ] && break
    [ $(($(now_ms) - start)) -gt 900000 ] && { echo "not completed within 15 min: $done_n" >&2; exit 1; }
    echo "submitted $posts, completed $done_n" >&2
    sleep 1
done
completed_ms=$(($(now_ms) - start))
[ -z "$submitted_ms" ] && submitted_ms=$completed_ms
kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true; sim_pid=""   # SIGTERM: its state saved
# the lag of every change the router made that iwd recorded: the history event minus the router's changedAt
python3 - "$work/sim.json" >"$work/changes.csv" <<'EOF'
import json, sys
state = json.load(open(sys.argv[1]))["state"]
for seq, item, st, agent, version, at in state["journal"]:
    if st in ("offered", "accepted", "completed"):
        print("%s,%s,%s" % (state["items"][item]["taskId"], st, at))
EOF
sql -d tenant -c "CREATE TABLE router_change (task_id bigint, state text, at timestamptz)"
sql -d tenant -c "\copy router_change FROM '$work/changes.csv' CSV"
lags=$(sql -d tenant -c "
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 3) || ' / ' ||
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 3) || ' / ' ||
           round(max(s)::numeric, 3) || ' s'
    FROM (SELECT extract(epoch FROM e.at - c.at) AS s
          FROM router_change c
          JOIN iwd.task_event e ON e.task_id = c.task_id
           AND e.event = CASE c.state WHEN 'offered' THEN 'reserved' ELSE c.state END) x")
dupes=$(python3 -c "
import json, collections
s = json.load(open('$work/sim.json'))['state']
print(sum(1 for n in collections.Counter(i['taskId'] for i in s['items'].values()).values() if n > 1))")
# received out of queue order: work items the router received after one that comes later in the queue (all
# tasks are queued before the router is enabled, in one statement: queue order is priority, then task id)
unordered=$(python3 -c "
import json
s = json.load(open('$work/sim.json'))['state']
keys = [(-i['priority'], i['taskId']) for i in sorted(s['items'].values(), key=lambda i: i['seq'])]
print(sum(1 for a, b in zip(keys, keys[1:]) if b < a))")
echo "| tasks | agents | maxInFlight | interval | submitted (tasks/s) | synced back completed (tasks/s) |" \
     "lag p50 / p99 / max | tasks submitted twice | received out of queue order |"
echo "|---|---|---|---|---|---|---|---|---|"
awk -v n="$tasks" -v a="$agents" -v m="$in_flight" -v i="$interval" -v s="$submitted_ms" -v c="$completed_ms" \
    -v l="$lags" -v d="$dupes" -v u="$unordered" \
    'BEGIN {printf "| %d | %d | %d | %d ms | %.0f | %.0f | %s | %d | %d |\n", n, a, m, i, n * 1000 / s, n * 1000 / c,
            l, d, u}'
