#!/usr/bin/env bash
# Sidecar benchmark: wrk (16 connections, 2 threads) against iwd-sidecar on a local PostgreSQL, for
# POST /tasks, GET /tasks/{id}, POST /agents/{id}/next and GET /metrics. Prints a markdown table of
# medians (IWD_BENCH_RUNS runs of IWD_BENCH_SECONDS each) on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)
bindir=$(/usr/lib/postgresql/15/bin/pg_config --bindir)
seconds=${IWD_BENCH_SECONDS:-10}
runs=${IWD_BENCH_RUNS:-3}
work=$(mktemp -d /tmp/iwd-bench-sidecar.XXXXXX)
chmod 755 "$work"
pg_port=${IWD_BENCH_PG_PORT:-54341}
http_port=${IWD_BENCH_HTTP_PORT:-54342}
as_user=()
if [ "$(id -u)" -eq 0 ]; then mkdir -p "$work/pg"; chown postgres: "$work/pg"; as_user=(runuser -u postgres --); else mkdir -p "$work/pg"; fi
cleanup() {
    [ -n "${sidecar_pid:-}" ] && kill "$sidecar_pid" 2>/dev/null
    "${as_user[@]}" "$bindir/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
sql() { "${as_user[@]}" "$bindir/psql" -X -q -At -h "$work/pg" -p "$pg_port" -v ON_ERROR_STOP=1 "$@"; }

"${as_user[@]}" "$bindir/initdb" -D "$work/pg/data" -A trust >/dev/null
cat >> "$work/pg/data/postgresql.conf" <<CONF
port = $pg_port
listen_addresses = ''
unix_socket_directories = '$work/pg'
shared_preload_libraries = 'iwd'
iwd.databases = 'tenant'
shared_buffers = 256MB
CONF
"${as_user[@]}" "$bindir/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w start >/dev/null
sql -d postgres -c "CREATE DATABASE control" -c "CREATE DATABASE tenant"
make -s -C sidecar >/dev/null
IWD_LISTEN=127.0.0.1 IWD_PORT=$http_port IWD_ADMIN_API_KEY=bench-admin-key IWD_LOG_LEVEL=${IWD_BENCH_LOG_LEVEL:-warn} IWD_THREADS=${IWD_BENCH_SIDECAR_THREADS:-16} \
IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control user=postgres" sidecar/iwd-sidecar >"$work/sidecar.log" 2>&1 &
sidecar_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$http_port/iwd/v3/health/ready" >/dev/null && break; sleep 0.1; done
curl -s --fail-with-body -X POST "http://127.0.0.1:$http_port/iwd/v3/provisioning" -H 'x-api-key: bench-admin-key' \
    -d "{\"tenant\": {\"id\": \"bench\", \"ccid\": \"bench\"}, \"iwd\": {\"db\": {\"host\": \"$work/pg\", \"port\": $pg_port,
        \"database\": \"tenant\", \"user\": \"postgres\"}, \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"bench-key\"}}}" >/dev/null
sql -d tenant -c "SELECT count(iwd.upsert_agent(jsonb_build_object('id', 'agent' || a, 'state', 'ready',
                  'capacity', jsonb_build_object('workitem', 1000)))) FROM generate_series(1, 500) a" >/dev/null
# a backlog for next_task and the tasks GET reads
sql -d tenant -c "SELECT count(*) FROM (SELECT iwd.create_tasks((SELECT jsonb_agg(jsonb_build_object(
                  'externalId', 'S' || (b * 1000 + i), 'capturePoint', 'seed')) FROM generate_series(1, 1000) i))
                  FROM generate_series(0, 99) b) s" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -A rate
# wrk_case NAME URL [SCRIPT]: median requests/s into rate[NAME]; a table row on stdout
wrk_case() {
    local name=$1 url=$2 script=${3:-}
    local rates=() lats=() errors=0 args=(-t 2 -c 16 -d "${seconds}s" --latency)
    [ -n "$script" ] && args+=(-s "bench/sidecar/$script.lua")
    for r in $(seq 1 "$runs"); do
        out=$(wrk "${args[@]}" "$url" 2>&1)
        rates+=("$(awk '/^Requests\/sec/ {print $2}' <<<"$out")")
        lats+=("$(awk '$1 == "50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")")
        errors=$((errors + $(awk '/Non-2xx or 3xx responses/ {print $NF}' <<<"$out" | tail -1 | grep -E '^[0-9]+$' || echo 0)))
        echo "sidecar bench: $name run $r: ${rates[-1]} req/s" >&2
    done
    rate[$name]=$(printf '%s\n' "${rates[@]}" | median)
    printf '| %s | %.0f | %.0f | %.0f | %.2f | %d |\n' "$name" "${rate[$name]}" \
        "$(printf '%s\n' "${rates[@]}" | sort -n | head -1)" "$(printf '%s\n' "${rates[@]}" | sort -n | tail -1)" \
        "$(printf '%s\n' "${lats[@]}" | median)" "$errors"
}
echo "| request | requests/s (median) | min | max | latency p50 ms | errors |"
echo "|---|---:|---:|---:|---:|---:|"
base="http://127.0.0.1:$http_port"
wrk_case '`POST /tasks`' "$base" post_task
wrk_case '`GET /tasks/{id}`' "$base" get_task
wrk_case '`POST /agents/{id}/next`' "$base" next_task
wrk_case '`GET /metrics`' "$base" metrics
# references: nginx serving a static file of a task's size, and create_task in SQL at the same concurrency
mkdir -p "$work/www"
curl -s -H 'x-api-key: bench-key' "$base/iwd/v3/tasks/1" > "$work/www/task.json"
cat > "$work/nginx.conf" <<NGINX
daemon on;
pid $work/nginx.pid;
error_log $work/nginx.err;
worker_processes 2;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:${IWD_BENCH_NGINX_PORT:-54345}; root $work/www; } }
NGINX
chmod -R a+rX "$work/www"
nginx -c "$work/nginx.conf" -e "$work/nginx.err"
wrk_case "nginx, static file of $(stat -c %s "$work/www/task.json") bytes" "http://127.0.0.1:${IWD_BENCH_NGINX_PORT:-54345}/task.json"
nginx -c "$work/nginx.conf" -e "$work/nginx.err" -s stop
cp bench/sidecar/create_task.sql "$work/"; chmod 644 "$work/create_task.sql"
sql_rates=()
for r in $(seq 1 "$runs"); do
    sql_rates+=("$("${as_user[@]}" "$bindir/pgbench" -h "$work/pg" -p "$pg_port" -n -M prepared -c 16 -j 2 -T "$seconds" \
        -f "$work/create_task.sql" tenant 2>&1 | awk '/^tps = / {print $3}')")
done
sql_create=$(printf '%s\n' "${sql_rates[@]}" | median)
echo
echo "| ratio | value | target |"
echo "|---|---:|---:|"
echo "| \`GET /tasks/{id}\` / nginx static file | $(awk -v a="${rate['`GET /tasks/{id}`']}" -v b="${rate["nginx, static file of $(stat -c %s "$work/www/task.json") bytes"]}" 'BEGIN {printf "%.2f", a / b}') | ≥ 0.30 |"
echo "| \`POST /tasks\` / SQL \`create_task\` at 16 clients ($(printf '%.0f' "$sql_create")/s) | $(awk -v a="${rate['`POST /tasks`']}" -v b="$sql_create" 'BEGIN {printf "%.2f", a / b}') | ≥ 0.60 |"
echo
echo "Sidecar resident memory after the runs: $(( $(awk '/VmRSS/ {print $2}' /proc/$sidecar_pid/status) / 1024 )) MB."
