#!/usr/bin/env bash
# Sidecar benchmark: wrk (16 connections, 2 threads) against iwd-sidecar on a local PostgreSQL, for
# POST /tasks, GET /tasks/{id}, POST /agents/{id}/next and GET /metrics, and for reference nginx serving
# a static file of a task's size and create_task in SQL (pgbench) at the same concurrency. Each of the
# IWD_BENCH_RUNS runs measures every case for IWD_BENCH_SECONDS, a case right after its reference, since
# the load of a shared box drifts. Then GET /tasks/{id} runs on until the sidecar has served
# IWD_BENCH_TOTAL_REQUESTS (1,000,000) requests in all, and its resident memory is read from /proc.
# Prints markdown tables on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/lib.sh
. scripts/lib.sh
seconds=${IWD_BENCH_SECONDS:-10}
runs=${IWD_BENCH_RUNS:-3}
# as many sidecar threads as the box has CPUs: its SQL calls are asynchronous, more threads only add switches
sidecar_threads=${IWD_BENCH_SIDECAR_THREADS:-$(nproc)}
work=$(work_dir bench-sidecar)
pg_port=${IWD_BENCH_PG_PORT:-}
http_port=${IWD_BENCH_HTTP_PORT:-$(free_port)}
cleanup() {
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
    IWD_SECRET_KEY=bench-server-secret-0123456789abcdef IWD_LOG_LEVEL="${IWD_BENCH_LOG_LEVEL:-warn}" \
    IWD_THREADS="$sidecar_threads" IWD_CONTROL_DB="host=$pg_dir port=$pg_port dbname=control user=$pg_superuser" \
    IWD_METRICS_PORT=0 sidecar/iwd-sidecar
curl -s --fail-with-body -X POST "http://127.0.0.1:$http_port/iwd/v3/provisioning" -H 'x-api-key: bench-admin-key' \
    -d "{\"tenant\": {\"id\": \"bench\", \"ccid\": \"bench\"}, \"iwd\": {\"db\": {\"host\": \"$pg_dir\", \"port\": $pg_port,
        \"database\": \"tenant\", \"user\": \"postgres\"}, \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"bench-tenant-key-0001\"}}}" >/dev/null
sql -d tenant -c "SELECT count(iwd.upsert_agent(jsonb_build_object('id', 'agent' || a, 'state', 'ready',
                  'capacity', jsonb_build_object('workitem', 1000)))) FROM generate_series(1, 500) a" >/dev/null
# a backlog for next_task and the tasks GET reads
sql -d tenant -c "SELECT count(*) FROM (SELECT iwd.create_tasks((SELECT jsonb_agg(jsonb_build_object(
                  'externalId', 'S' || (b * 1000 + i), 'capturePoint', 'seed')) FROM generate_series(1, 1000) i))
                  FROM generate_series(0, 99) b) s" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
base="http://127.0.0.1:$http_port"
nginx_port=${IWD_BENCH_NGINX_PORT:-$(free_port)}
sidecar_requests=0
declare -A rates lats non2xx socket
# wrk_output_counts OUTPUT: "requests non-2xx socket-errors" of one wrk run
wrk_output_counts() {
    awk '/ requests in / {n = $1} /Non-2xx or 3xx responses/ {bad = $NF}
         /Socket errors:/ {gsub(/,/, ""); sock = $4 + $6 + $8 + $10}
         END {printf "%d %d %d\n", n, bad, sock}' <<<"$1"
}
# wrk_run CASE URL [SCRIPT]: one wrk run; its rate, p50 latency and errors are added to the case's lists
wrk_run() {
    local name=$1 url=$2 script=${3:-} out n bad sock args=(-t 2 -c 16 -d "${seconds}s" --latency)
    [ -n "$script" ] && args+=(-s "bench/sidecar/$script.lua")
    out=$(wrk "${args[@]}" "$url" 2>&1)
    rates[$name]+="$(awk '/^Requests\/sec/ {print $2}' <<<"$out") "
    lats[$name]+="$(awk '$1 == "50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out") "
    read -r n bad sock < <(wrk_output_counts "$out")
    non2xx[$name]=$((${non2xx[$name]:-0} + bad)); socket[$name]=$((${socket[$name]:-0} + sock))
    [[ "$url" == "$base"* ]] && sidecar_requests=$((sidecar_requests + n))
    echo "sidecar bench: $name: $(awk '/^Requests\/sec/ {print $2}' <<<"$out") req/s" >&2
}
# sql_run CASE: one pgbench run of create_task in SQL at the same concurrency
sql_run() {
    rates[$1]+="$(cluster_client pgbench -n -M prepared -c 16 -j 2 -T "$seconds" \
        -f "$work/create_task.sql" tenant 2>&1 | awk '/^tps = / {print $3}') "
    echo "sidecar bench: $1: $(awk '{print $NF}' <<<"${rates[$1]}") tps" >&2
}
list() { tr ' ' '\n' <<<"$1" | grep .; }
rate_of() { list "${rates[$1]}" | median; }
# ratio_per_run A B: A/B of each run, the two measured back to back
ratio_per_run() { paste <(list "${rates[$1]}") <(list "${rates[$2]}") | awk '{printf "%s%.2f", (NR > 1 ? ", " : ""), $1 / $2}'; }

# references: nginx serving a static file of a task's size, and create_task in SQL at the same concurrency
mkdir -p "$work/www"
curl -s -H 'x-api-key: bench-tenant-key-0001' "$base/iwd/v3/tasks/1" > "$work/www/task.json"
cat > "$work/nginx.conf" <<NGINX
daemon on;
pid $work/nginx.pid;
error_log $work/nginx.err;
worker_processes 2;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$nginx_port; root $work/www; } }
NGINX
chmod -R a+rX "$work/www"
nginx -c "$work/nginx.conf" -e "$work/nginx.err"
cp bench/sidecar/create_task.sql "$work/"; chmod 644 "$work/create_task.sql"
post='`POST /tasks`'; get='`GET /tasks/{id}`'; next='`POST /agents/{id}/next`'; metrics='`GET /metrics`'
static="nginx, static file of $(stat -c %s "$work/www/task.json") bytes"; sql='SQL `create_task`, pgbench'
# each run measures every case, a case right after its reference: on a shared box the load drifts
for r in $(seq 1 "$runs"); do
    wrk_run "$post" "$base" post_task
    sql_run "$sql"
    wrk_run "$get" "$base" get_task
    wrk_run "$static" "http://127.0.0.1:$nginx_port/task.json"
    wrk_run "$next" "$base" next_task
    wrk_run "$metrics" "$base" metrics
done
nginx -c "$work/nginx.conf" -e "$work/nginx.err" -s stop

echo "iwd-sidecar with IWD_THREADS=$sidecar_threads on $(nproc) CPUs; wrk -t 2 -c 16; $runs runs of ${seconds} s per case," \
     "each case right after its reference."
echo
echo "| request | requests/s (median) | min | max | latency p50 ms | non-2xx | socket errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for name in "$post" "$get" "$next" "$metrics" "$static"; do
    printf '| %s | %.0f | %.0f | %.0f | %.2f | %d | %d |\n' "$name" "$(rate_of "$name")" \
        "$(list "${rates[$name]}" | sort -n | head -1)" "$(list "${rates[$name]}" | sort -n | tail -1)" \
        "$(list "${lats[$name]}" | median)" "${non2xx[$name]}" "${socket[$name]}"
done
printf '| %s | %.0f | %.0f | %.0f | | | |\n' "$sql" "$(rate_of "$sql")" \
    "$(list "${rates[$sql]}" | sort -n | head -1)" "$(list "${rates[$sql]}" | sort -n | tail -1)"
echo
echo "| ratio | of the medians | run by run | target |"
echo "|---|---:|---:|---:|"
echo "| \`GET /tasks/{id}\` / nginx static file | $(awk -v a="$(rate_of "$get")" -v b="$(rate_of "$static")" 'BEGIN {printf "%.2f", a / b}') | $(ratio_per_run "$get" "$static") | ≥ 0.30 |"
echo "| \`POST /tasks\` / SQL \`create_task\` at 16 clients | $(awk -v a="$(rate_of "$post")" -v b="$(rate_of "$sql")" 'BEGIN {printf "%.2f", a / b}') | $(ratio_per_run "$post" "$sql") | ≥ 0.60 |"
# memory after many requests: GET /tasks/{id} until the sidecar has served total_requests in all
total_requests=${IWD_BENCH_TOTAL_REQUESTS:-1000000}
soak_non2xx=0; soak_socket=0
while [ "$sidecar_requests" -lt "$total_requests" ]; do
    soak_seconds=$(awk -v left=$((total_requests - sidecar_requests)) -v r="$(rate_of "$get")" \
        'BEGIN {s = int(left / (r > 1000 ? r : 1000) * 1.1) + 1; print (s > 600 ? 600 : s)}')
    echo "sidecar bench: $sidecar_requests requests so far; GET /tasks/{id} for ${soak_seconds}s more" >&2
    out=$(wrk -t 2 -c 16 -d "${soak_seconds}s" -s bench/sidecar/get_task.lua "$base" 2>&1)
    read -r n bad sock < <(wrk_output_counts "$out")
    sidecar_requests=$((sidecar_requests + n)); soak_non2xx=$((soak_non2xx + bad)); soak_socket=$((soak_socket + sock))
done
echo
echo "Sidecar memory after $sidecar_requests requests (wrk's counts, every case above plus a \`GET /tasks/{id}\` soak" \
     "with $soak_non2xx non-2xx and $soak_socket socket errors):" \
     "VmRSS $(( $(awk '/^VmRSS/ {print $2}' /proc/$sidecar_pid/status) / 1024 )) MB," \
     "VmHWM $(( $(awk '/^VmHWM/ {print $2}' /proc/$sidecar_pid/status) / 1024 )) MB (target < 64 MB)."
