#!/usr/bin/env bash
# Event stream benchmark: IWD_BENCH_STREAMS (default 1,000) Server-Sent Event streams of one tenant held open
# on iwd-sidecar (the release build, IWD_THREADS = CPUs) by one Python asyncio client. Reports the sidecar's
# resident memory and open descriptors before and with the streams, its CPU over IWD_BENCH_IDLE_SECONDS
# (default 30) of idle streams (heartbeats every 15 s), then a burst of IWD_BENCH_TASKS (default 200) tasks
# created in one transaction: the time from its commit until every stream received every task.created, and
# the sidecar's CPU for it. Prints a markdown table on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/lib.sh
. scripts/lib.sh
streams=${IWD_BENCH_STREAMS:-1000}
idle_seconds=${IWD_BENCH_IDLE_SECONDS:-30}
tasks=${IWD_BENCH_TASKS:-200}
work=$(work_dir bench-streams)
pg_port=${IWD_BENCH_PG_PORT:-}
http_port=${IWD_BENCH_HTTP_PORT:-$(free_port)}
base="http://127.0.0.1:$http_port/iwd/v3"
key=bench-tenant-key-0001
client_pid=""
cleanup() {
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null
    sidecar_stop
    cluster_stop fast
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n $((streams * 2 + 1024))

cluster_init "$work/pg" "iwd.databases = 'tenant'
iwd_dm.suspend = on"
cluster_start
cluster_sql -d postgres -c "CREATE DATABASE control" -c "CREATE DATABASE tenant"
make -s -C sidecar >/dev/null
sidecar_launch "$work/sidecar.log" "$base/health/ready" \
    env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY=bench-admin-key \
    IWD_SECRET_KEY=bench-server-secret-0123456789abcdef IWD_LOG_LEVEL=warn IWD_THREADS="$(nproc)" \
    IWD_CONTROL_DB="host=$pg_dir port=$pg_port dbname=control user=$pg_superuser" IWD_METRICS_PORT=0 \
    sidecar/iwd-sidecar
curl -s --fail-with-body -X POST "$base/provisioning" -H 'x-api-key: bench-admin-key' \
    -d "{\"tenant\": {\"id\": \"bench\", \"ccid\": \"bench\"},
        \"iwd\": {\"db\": {\"host\": \"$pg_dir\", \"port\": $pg_port,
        \"database\": \"tenant\", \"user\": \"postgres\"}, \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$key\"}}}" >/dev/null
curl -s -o /dev/null -H "x-api-key: $key" "$base/tasks?limit=1" # the tenant's first call, as a client would

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$sidecar_pid/status"; }
fds() { find "/proc/$sidecar_pid/fd" -mindepth 1 | wc -l; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$sidecar_pid/stat"; }
hz=$(getconf CLK_TCK)
rss_before=$(rss_kb); fds_before=$(fds)

echo "streams bench: opening $streams streams" >&2
python3 - "$http_port" "$key" "$streams" "$tasks" "$work" >"$work/client.out" 2>&1 <<'PY' &
import asyncio, os, sys, time
port, key, n, expect, work = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
async def client(opened, done):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET /iwd/v3/events?types=task.created HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n".encode())
    await w.drain()
    buf, seen, first = b"", 0, True
    while seen < expect:
        chunk = await r.read(65536)
        if not chunk:
            break
        buf += chunk
        if first and b": iwd event stream" in buf:
            first = False
            opened.append(1)
        lines = buf.split(b"\n")
        buf = lines.pop()
        seen += sum(line.startswith(b"id: ") for line in lines)
    done.append(time.time())
    w.close()
async def main():
    opened, done = [], []
    tasks = [asyncio.create_task(client(opened, done)) for _ in range(n)]
    while len(opened) < n:
        await asyncio.sleep(0.05)
    open(os.path.join(work, "opened"), "w").write("")
    await asyncio.gather(*tasks)
    print(f"{len(done)} {max(done):.3f}")
asyncio.run(main())
PY
client_pid=$!
for _ in $(seq 1 1200); do [ -f "$work/opened" ] && break; sleep 0.1; done
[ -f "$work/opened" ] || { echo "the streams did not open" >&2; exit 1; }
sleep 2
rss_open=$(rss_kb); fds_open=$(fds)
echo "streams bench: $streams streams open; idle for $idle_seconds s" >&2
t0=$(cpu_ticks); sleep "$idle_seconds"; t1=$(cpu_ticks)
idle_cpu=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v s="$idle_seconds" 'BEGIN {printf "%.2f", 100 * t / hz / s}')

echo "streams bench: creating $tasks tasks" >&2
c0=$(cpu_ticks)
cluster_sql -d tenant -c "SELECT count(iwd.create_task(jsonb_build_object('externalId', 'S-' || g,
                                                                          'capturePoint', 'bench')))
                          FROM generate_series(1, $tasks) g" >/dev/null
start=$(date +%s.%N)
wait "$client_pid"; client_pid=""
c1=$(cpu_ticks)
read -r complete last <"$work/client.out"
burst_s=$(awk -v a="$start" -v b="$last" 'BEGIN {printf "%.2f", b - a}')
burst_cpu=$(awk -v t="$((c1 - c0))" -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}')

echo "| streams | RSS before / with the streams | per stream | open fds before / with" \
     "| CPU at idle (${idle_seconds} s)" \
     "| $tasks tasks committed at once: every stream had every event after | events written" \
     "| sidecar CPU for the burst | streams complete |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "| $streams | $((rss_before / 1024)) MB / $((rss_open / 1024)) MB" \
     "| $(( (rss_open - rss_before) / streams )) kB" \
     "| $fds_before / $fds_open | ${idle_cpu} % of one CPU | ${burst_s} s | $((streams * tasks)) | ${burst_cpu} s" \
     "| $complete / $streams |"
