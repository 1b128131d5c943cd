#!/usr/bin/env bash
# Webhook delivery benchmark: tasks are created by pgbench (create_task in SQL, IWD_BENCH_CLIENTS clients,
# default 16, for IWD_BENCH_SECONDS, default 30) while iwd-sidecar delivers their task.created events to
# one local receiver (sidecar/tests/receiver.py, answering 200 at once). Reports the capture rate, the rate
# events reached the receiver during the capture and until the last one, the backlog when the capture
# ended and how long it took to drain, and the delivery latency (arrival at the receiver minus the event's
# time) at p50 / p99 / max. Prints a markdown table on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=../../scripts/lib.sh
. scripts/lib.sh
seconds=${IWD_BENCH_SECONDS:-30}
clients=${IWD_BENCH_CLIENTS:-16}
work=$(work_dir bench-webhooks)
pg_port=${IWD_BENCH_PG_PORT:-}
http_port=${IWD_BENCH_HTTP_PORT:-$(free_port)}
recv_port=$(free_port)
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
make -s -C sidecar >/dev/null
sidecar_launch "$work/sidecar.log" "http://127.0.0.1:$http_port/iwd/v3/health/ready" \
    env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY=bench-admin-key \
    IWD_SECRET_KEY=bench-server-secret-0123456789abcdef IWD_LOG_LEVEL=warn IWD_THREADS="$(nproc)" \
    IWD_CONTROL_DB="host=$pg_dir port=$pg_port dbname=control user=$pg_superuser" IWD_METRICS_PORT=0 \
    sidecar/iwd-sidecar
api="http://127.0.0.1:$http_port/iwd/v3"
tenant_key=bench-tenant-key-0001
curl -s --fail-with-body -X POST "$api/provisioning" -H 'x-api-key: bench-admin-key' \
    -d "{\"tenant\": {\"id\": \"bench\", \"ccid\": \"bench\"}, \"iwd\": {\"db\": {\"host\": \"$pg_dir\",
        \"port\": $pg_port, \"database\": \"tenant\", \"user\": \"postgres\"},
        \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$tenant_key\"}}}" >/dev/null
python3 sidecar/tests/receiver.py "$work/received.jsonl" "$recv_port" &
receiver_pid=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$recv_port/" && break; sleep 0.1; done
curl -s --fail-with-body -X PUT "$api/webhooks/bench" -H "x-api-key: $tenant_key" \
    -d "{\"url\": \"http://127.0.0.1:$recv_port/r/bench/bench\", \"secret\": \"bench-secret\"}" >/dev/null
cp bench/sidecar/create_task.sql "$work/"
chmod 644 "$work/create_task.sql"
touch "$work/received.jsonl"

echo "webhooks bench: $clients clients create tasks for $seconds s" >&2
start=$(date +%s.%N)
tps=$(cluster_client pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$work/create_task.sql" tenant 2>&1 |
      awk '/^tps = / {print $3}')
end=$(date +%s.%N)
created=$(sql -d tenant -c "SELECT count(*) FROM iwd.task_event WHERE event = 'created'")
echo "webhooks bench: $created tasks created ($tps tps); waiting for their deliveries" >&2
for _ in $(seq 1 3000); do
    [ "$(wc -l <"$work/received.jsonl")" -ge "$created" ] && break
    sleep 0.1
done

python3 - "$work/received.jsonl" "$start" "$end" "$created" "$clients" <<'PY'
import datetime, json, sys
path, clients = sys.argv[1], sys.argv[5]
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
print("| clients | capture (tasks/s) | delivered during capture (events/s) | delivered / captured | backlog at end "
      "of capture | drained after | all delivered (events/s) | latency p50 / p99 / max | received / created | "
      "duplicates |")
print("|---|---|---|---|---|---|---|---|---|---|")
print("| %s | %.0f | %.0f | %.2f | %d | %.1f s | %.0f | %.3f / %.3f / %.3f s | %d / %d | %d |" % (
    clients, capture, during / (end - start), (during / (end - start)) / capture, created - during,
    max(0.0, last - end), len(rows) / (last - start), pct(0.5), pct(0.99), lat[-1] if lat else float("nan"),
    len(set(ids)), created, len(ids) - len(set(ids))))
PY
