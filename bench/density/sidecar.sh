#!/usr/bin/env bash
# Density, the sidecar: IWD_BENCH_TENANTS (500) tenant databases on one server, provisioned through the
# sidecar, and requests (GET /tasks?limit=1) round robin over all of them from IWD_BENCH_CLIENTS (32)
# keep-alive clients for IWD_BENCH_SECONDS (60), once per cap in IWD_BENCH_CAPS ("20 100")
# (IWD_PG_MAX_CONNECTIONS_PER_SERVER). The server's sessions of the sidecar are sampled every 100 ms from
# pg_stat_activity by application_name: the API's (iwd-sidecar, under the cap) and the metrics
# collector's (iwd-sidecar-collector, outside it). Reports requests answered, latency p50 / p99 / max,
# the peak of API sessions against the cap, evictions, waits that timed out, the sidecar's memory.
# Prints a markdown section (bench/RESULTS.md, "Density: the sidecar").
set -uo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
port=${IWD_BENCH_PORT:-54381}
tenants=${IWD_BENCH_TENANTS:-500}
clients=${IWD_BENCH_CLIENTS:-32}
seconds=${IWD_BENCH_SECONDS:-60}
caps=${IWD_BENCH_CAPS:-"20 100"}
threads=${IWD_BENCH_SIDECAR_THREADS:-$(nproc)}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port); metrics_port=$(free_port)
# the collector keeps a connection per tenant: room for it beside the API's cap and iwd's workers
start_cluster density-sidecar "$port" "listen_addresses = '127.0.0.1'" "max_connections = $((tenants + 300))" \
    "max_worker_processes = 16" "iwd.max_workers = 4" "iwd_dm.suspend = on" "shared_buffers = 512MB" "fsync = off" \
    "autovacuum_naptime = 10min"
# shellcheck source=bench/density/common.sh
. bench/density/common.sh
flock /tmp/iwd-sidecar-build.lock make -s -C sidecar iwd-sidecar >/dev/null || { echo "cannot build the sidecar" >&2; exit 1; }

q -d postgres -c "CREATE DATABASE tpl" -c "CREATE DATABASE control"
q -d tpl -c "CREATE EXTENSION iwd" -c "SELECT iwd.create_task('{\"externalId\": \"T-1\", \"capturePoint\": \"bench\"}')" >/dev/null
q -d postgres -c "ALTER DATABASE tpl IS_TEMPLATE true ALLOW_CONNECTIONS false"
# a template must have no session (the launcher's first worker probes it)
until [ "$(q -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'tpl'")" = 0 ]; do sleep 0.2; done
for i in $(seq 1 "$tenants"); do echo "CREATE DATABASE $(tenant "$i") TEMPLATE tpl;"; done | q -d postgres

start_sidecar() { # start_sidecar CAP
    IWD_LISTEN=127.0.0.1 IWD_PORT=$http_port IWD_ADMIN_API_KEY=bench-admin-key \
    IWD_SECRET_KEY=bench-server-secret-0123456789abcdef IWD_LOG_LEVEL=warn IWD_THREADS=$threads \
    IWD_CONTROL_DB="host=$work port=$bench_port dbname=control user=postgres" IWD_METRICS_LISTEN=127.0.0.1 \
    IWD_METRICS_PORT=$metrics_port IWD_METRICS_TTL_MS=60000 IWD_PG_MAX_CONNECTIONS_PER_SERVER=$1 \
    sidecar/iwd-sidecar >>"$work/sidecar.log" 2>&1 &
    sidecar_pid=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$http_port/iwd/v3/health/ready" >/dev/null && return; sleep 0.1; done
    echo "the sidecar did not start" >&2; exit 1
}
start_sidecar 20
provision() { # provision N
    local code body
    body=$(mktemp)
    code=$(curl -s -o "$body" -w '%{http_code}' -X POST "http://127.0.0.1:$http_port/iwd/v3/provisioning" \
        -H 'x-api-key: bench-admin-key' -d "{\"tenant\": {\"id\": \"$(tenant "$1")\", \"ccid\": \"$(tenant "$1")\"},
        \"iwd\": {\"db\": {\"host\": \"127.0.0.1\", \"port\": $bench_port, \"database\": \"$(tenant "$1")\",
        \"user\": \"postgres\"}, \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"bench-key-$(tenant "$1")-00000\"}}}")
    [ "$code" = 200 ] || echo "provisioning $(tenant "$1"): $code $(cat "$body")" >&2
    rm -f "$body"
}
export -f provision tenant
export http_port bench_port
seq 1 "$tenants" | xargs -P 4 -I{} bash -c 'provision {}'

# sample the server's sessions of the sidecar every 100 ms, over one session of its own
sample() { # sample FILE: "api collector" lines until killed
    echo "SELECT count(*) FILTER (WHERE application_name = 'iwd-sidecar') || ' ' ||
                 count(*) FILTER (WHERE application_name = 'iwd-sidecar-collector')
          FROM pg_stat_activity WHERE datname ~ '^t[0-9]+\$' \\watch 0.1" | q -d postgres >"$1" 2>/dev/null
}
metric() { curl -s "http://127.0.0.1:$metrics_port/metrics" | awk -v n="$1" -v l="$2" 'index($0, n "{" l) == 1 {s += $2} END {print s + 0}'; }

rows=()
for cap in $caps; do
    kill "$sidecar_pid" 2>/dev/null; wait "$sidecar_pid" 2>/dev/null
    start_sidecar "$cap"
    sample "$work/sessions-$cap" &
    sampler=$!
    echo "density sidecar: cap $cap, $clients clients, ${seconds}s round robin over $tenants tenants" >&2
    read -r n bad rps p50 p99 pmax < <(python3 - "$http_port" "$clients" "$seconds" "$tenants" <<'PY'
import http.client, itertools, sys, threading, time
port, clients, seconds, tenants = (int(a) for a in sys.argv[1:5])
turn, lock, lat, bad = itertools.count(), threading.Lock(), [], [0]
end = time.monotonic() + seconds
def client():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    mine = []
    while time.monotonic() < end:
        t = next(turn) % tenants + 1
        start = time.perf_counter()
        try:
            c.request("GET", "/iwd/v3/tasks?limit=1", headers={"x-api-key": "bench-key-t%03d-00000" % t})
            r = c.getresponse(); r.read(); ok = r.status == 200
        except Exception:
            ok = False; c.close(); c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine.append((time.perf_counter() - start) * 1000)
        if not ok:
            with lock: bad[0] += 1
    with lock: lat.extend(mine)
ts = [threading.Thread(target=client) for _ in range(clients)]
started = time.monotonic()
for t in ts: t.start()
for t in ts: t.join()
lat.sort()
pick = lambda p: lat[min(len(lat) - 1, int(len(lat) * p / 100))]
print(len(lat), bad[0], "%.0f" % (len(lat) / (time.monotonic() - started)), "%.1f" % pick(50), "%.1f" % pick(99),
      "%.1f" % lat[-1])
PY
)
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
    peak_api=$(awk '{print $1}' "$work/sessions-$cap" | sort -n | tail -1)
    peak_collector=$(awk '{print $2}' "$work/sessions-$cap" | sort -n | tail -1)
    samples=$(grep -c . "$work/sessions-$cap")
    evicted=$(metric iwd_pg_server_connections_closed_total 'server="127.0.0.1:'"$bench_port"'",reason="evicted"')
    timeouts=$(metric iwd_pg_server_wait_timeouts_total 'server="127.0.0.1:'"$bench_port"'"')
    rss=$(($(awk '/^VmRSS/ {print $2}' "/proc/$sidecar_pid/status") / 1024))
    rows+=("| $cap | $n | $bad | $rps | $p50 / $p99 / $pmax | $peak_api ($samples samples) | $evicted | $timeouts | $peak_collector | $rss MB |")
done

cat <<MD
## Density: the sidecar

\`bench/density/sidecar.sh\`: $tenants tenant databases on one server (made from a template holding iwd),
provisioned through the sidecar (\`IWD_THREADS=$threads\`, release build), then \`GET /tasks?limit=1\` round
robin over all $tenants tenants from $clients keep-alive clients (Python) for $seconds s, once per
\`IWD_PG_MAX_CONNECTIONS_PER_SERVER\`. Sessions sampled every 100 ms in \`pg_stat_activity\`: the API's
(\`iwd-sidecar\`, under the cap) and the metrics collector's (\`iwd-sidecar-collector\`, outside it).

| cap | requests | not 200 | requests/s | latency p50 / p99 / max ms | API sessions, peak | evicted | waits timed out | collector sessions, peak | sidecar RSS |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${rows[@]}")
MD
