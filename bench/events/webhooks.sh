#!/usr/bin/env bash
# Webhook delivery benchmark: tasks are created by pgbench (create_task in SQL, IWD_BENCH_CLIENTS clients,
# default 16, for IWD_BENCH_SECONDS, default 30) while iwd-sidecar delivers their task.created events to
# one local receiver (sidecar/tests/receiver.py, answering 200 at once). Reports the capture rate, the rate
# events reached the receiver during the capture and until the last one, the backlog when the capture
# ended and how long it took to drain, and the delivery latency (arrival at the receiver minus the event's
# time) at p50 / p99 / max. Prints a markdown table on stdout; progress goes to stderr.
#
# IWD_BENCH_RATES (e.g. "300 900 0"): capture rates in tasks/s (pgbench -R; 0: as fast as it goes), one
# case each, default "0". IWD_BENCH_SIDECARS (e.g. "before=/tmp/old/iwd-sidecar after=sidecar/iwd-sidecar"):
# the sidecar builds to compare, each run at every rate on the same cluster, alternating, so that their
# ratios are measured in one run; default "sidecar=sidecar/iwd-sidecar" (built here).
set -euo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=../../scripts/lib.sh
. scripts/lib.sh
seconds=${IWD_BENCH_SECONDS:-30}
clients=${IWD_BENCH_CLIENTS:-16}
rates=${IWD_BENCH_RATES:-0}
sidecars=${IWD_BENCH_SIDECARS:-sidecar=sidecar/iwd-sidecar}
work=$(work_dir bench-webhooks)
pg_port=${IWD_BENCH_PG_PORT:-}
receiver_pid=""
cleanup() {
    [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null
    sidecar_stop
    cluster_stop fast
    rm -rf "$work"
}
trap cleanup EXIT
sql() { cluster_sql "$@"; }

cluster_init "$work/pg" "iwd.databases = 'tenant'
iwd_dm.suspend = on
shared_buffers = 256MB"
cluster_start
sql -d postgres -c "CREATE DATABASE control" -c "CREATE DATABASE tenant"
[ -z "${IWD_BENCH_SIDECARS:-}" ] && make -s -C sidecar >/dev/null
cp bench/sidecar/create_task.sql "$work/"
chmod 644 "$work/create_task.sql"
tenant_key=bench-tenant-key-0001
provisioned=""
cases=0

# one_case NAME BINARY RATE: a fresh webhook on a fresh sidecar; pgbench at RATE; one table row on stdout
one_case() {
    local name=$1 binary=$2 rate=$3 http_port recv_port api start end tps created before log
    local -a limit=()
    http_port=$(free_port)
    recv_port=$(free_port)
    cases=$((cases + 1))
    log="$work/received-$cases-$name-$rate.jsonl"
    touch "$log"
    sidecar_launch "$work/sidecar-$name.log" "http://127.0.0.1:$http_port/iwd/v3/health/ready" \
        env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY=bench-admin-key \
        IWD_SECRET_KEY=bench-server-secret-0123456789abcdef IWD_LOG_LEVEL=warn IWD_THREADS="$(nproc)" \
        IWD_CONTROL_DB="host=$pg_dir port=$pg_port dbname=control user=$pg_superuser" IWD_METRICS_PORT=0 \
        "$binary"
    api="http://127.0.0.1:$http_port/iwd/v3"
    if [ -z "$provisioned" ]; then
        curl -s --fail-with-body -X POST "$api/provisioning" -H 'x-api-key: bench-admin-key' \
            -d "{\"tenant\": {\"id\": \"bench\", \"ccid\": \"bench\"}, \"iwd\": {\"db\": {\"host\": \"$pg_dir\",
                \"port\": $pg_port, \"database\": \"tenant\", \"user\": \"postgres\"},
                \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$tenant_key\"}}}" >/dev/null
        provisioned=yes
    fi
    python3 sidecar/tests/receiver.py "$log" "$recv_port" &
    receiver_pid=$!
    for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$recv_port/" && break; sleep 0.1; done
    curl -s --fail-with-body -X PUT "$api/webhooks/bench" -H "x-api-key: $tenant_key" \
        -d "{\"url\": \"http://127.0.0.1:$recv_port/r/bench/bench\", \"secret\": \"bench-secret\"}" >/dev/null
    [ "$rate" != 0 ] && limit=(-R "$rate")
    before=$(sql -d tenant -c "SELECT count(*) FROM iwd.task_event WHERE event = 'created'")
    echo "webhooks bench: $name, $clients clients create tasks for $seconds s at rate ${rate/#0/unlimited}" >&2
    start=$(date +%s.%N)
    tps=$(cluster_client pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" "${limit[@]}" \
          -f "$work/create_task.sql" tenant 2>&1 | awk '/^tps = / {print $3}')
    end=$(date +%s.%N)
    created=$(( $(sql -d tenant -c "SELECT count(*) FROM iwd.task_event WHERE event = 'created'") - before ))
    echo "webhooks bench: $created tasks created ($tps tps); waiting for their deliveries" >&2
    for _ in $(seq 1 3000); do
        [ "$(wc -l <"$log")" -ge "$created" ] && break
        sleep 0.1
    done
    python3 - "$log" "$start" "$end" "$created" "$clients" "$name" "$rate" <<'PY'
import datetime, json, sys
path, clients, name, rate = sys.argv[1], sys.argv[5], sys.argv[6], sys.argv[7]
start, end, created = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(line) for line in open(path)]
def at(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
lat = sorted(r["t"] - at(r["at"]) for r in rows)
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
during = sum(1 for r in rows if r["t"] <= end)
last = max((r["t"] for r in rows), default=end)
ids = [r["id"] for r in rows]
capture = created / (end - start)
print("| %s | %s | %s | %.0f | %.0f | %.2f | %d | %.1f s | %.0f | %.3f / %.3f / %.3f s | %d / %d | %d |" % (
    name, rate if rate != "0" else "unlimited", clients, capture, during / (end - start),
    (during / (end - start)) / capture, created - during, max(0.0, last - end), len(rows) / (last - start),
    pct(0.5), pct(0.99), lat[-1] if lat else float("nan"), len(set(ids)), created, len(ids) - len(set(ids))))
PY
    curl -s -o /dev/null -X DELETE "$api/webhooks/bench" -H "x-api-key: $tenant_key"
    kill "$receiver_pid" 2>/dev/null
    wait "$receiver_pid" 2>/dev/null || true
    receiver_pid=""
    sidecar_stop
}

echo "| sidecar | pgbench rate | clients | capture (tasks/s) | delivered during capture (events/s) |" \
     "delivered / captured | backlog at end of capture | drained after | all delivered (events/s) |" \
     "latency p50 / p99 / max | received / created | duplicates |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for rate in $rates; do
    for entry in $sidecars; do
        one_case "${entry%%=*}" "${entry#*=}" "$rate"
    done
done
