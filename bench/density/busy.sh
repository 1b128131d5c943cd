#!/usr/bin/env bash
# Busy tenants among many: IWD_BENCH_TENANTS (500) tenant databases on one server, 5 of them under full
# claim load (bench/core/claim_complete.sql, the matrix's workload with a 10k backlog, one pgbench client
# each), measured IWD_BENCH_SECONDS (30) alone and IWD_BENCH_SECONDS with a trickle of work in the 495
# others (a task a minute each, reserved for 10 s and left to time out), alternating, IWD_BENCH_RUNS (2)
# times. The busy tenants' claim rate with the trickle against without; every reservation timeout of the
# trickle against its deadline. Prints a markdown section (bench/RESULTS.md, "Density").
set -uo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
port=${IWD_BENCH_PORT:-54373}
tenants=${IWD_BENCH_TENANTS:-500}
seconds=${IWD_BENCH_SECONDS:-30}
runs=${IWD_BENCH_RUNS:-2}
busy=5
max_workers=${IWD_BENCH_MAX_WORKERS:-8}
start_cluster busy "$port" "max_worker_processes = 16" "iwd.max_workers = $max_workers" "iwd_dm.suspend = on" "max_connections = 200" \
    "shared_buffers = 512MB" "fsync = off"
q() { "${as_user[@]}" "$bindir/psql" -X -q -At -h "$work" -p "$bench_port" -v ON_ERROR_STOP=1 "$@"; }
tenant() { printf 't%03d' "$1"; }

q -d postgres -c "CREATE DATABASE tpl"
q -d tpl -c "CREATE EXTENSION iwd" -c "SELECT iwd.upsert_agent('{\"id\": \"a1\", \"state\": \"ready\"}')" \
    -c "CREATE TABLE public.deadline (due timestamptz)" >/dev/null
q -d postgres -c "ALTER DATABASE tpl IS_TEMPLATE true"
for i in $(seq 1 "$tenants"); do echo "CREATE DATABASE $(tenant "$i") TEMPLATE tpl;"; done | q -d postgres
for i in $(seq 1 "$busy"); do
    q -d "$(tenant "$i")" -f "$work/setup.sql" >/dev/null
    q -d "$(tenant "$i")" -c "SELECT bench_queue_fill(10000)" -c "VACUUM ANALYZE" >/dev/null
done
sleep 15

# busy_run: the 5 busy tenants' cycles/s in all over one window
busy_run() {
    local pids=() i total=0
    for i in $(seq 1 "$busy"); do
        q -d "$(tenant "$i")" -c "SELECT bench_queue_fill(10000)" >/dev/null
    done
    for i in $(seq 1 "$busy"); do
        "${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -n -M prepared -c 1 -j 1 -T "$seconds" \
            -f "$work/claim_complete.sql" "$(tenant "$i")" > "$work/pgbench-$i.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    for i in $(seq 1 "$busy"); do
        total=$((total + $(sed -nE 's/^tps = ([0-9]+).*/\1/p' "$work/pgbench-$i.log")))
    done
    echo "$total"
}
# trickle: a task a minute in each of the other tenants, spread over the window
trickle() {
    local gap i end=$(($(date +%s) + seconds))
    gap=$(awk -v n=$((tenants - busy)) 'BEGIN {printf "%.3f", 60 / n}')
    i=$((busy + 1))
    while [ "$(date +%s)" -lt "$end" ]; do
        q -d "$(tenant "$i")" -c "SELECT iwd.create_task('{\"externalId\": \"R$i-$(date +%s%N)\", \"capturePoint\": \"bench\"}')" \
            -c "INSERT INTO public.deadline SELECT (iwd.next_task('a1', 10) ->> 'reservedUntil')::timestamptz" >/dev/null &
        i=$((i + 1)); [ "$i" -gt "$tenants" ] && i=$((busy + 1))
        sleep "$gap"
    done
    wait
}
alone=(); along=()
for r in $(seq 1 "$runs"); do
    alone+=("$(busy_run)")
    trickle &
    trickler=$!
    along+=("$(busy_run)")
    wait "$trickler"
done
sleep 15
lateness=$(for i in $(seq $((busy + 1)) "$tenants"); do
    q -d "$(tenant "$i")" -c "
        SELECT round(extract(epoch FROM e.at - d.due) * 1000)
        FROM (SELECT due, row_number() OVER (ORDER BY due) n FROM public.deadline) d
        JOIN (SELECT at, row_number() OVER (ORDER BY at) n FROM iwd.task_event WHERE event = 'reservation_timeout') e USING (n)"
done)
expected=$(for i in $(seq $((busy + 1)) "$tenants"); do q -d "$(tenant "$i")" -c "SELECT count(*) FROM public.deadline"; done |
           awk '{s += $1} END {print s}')
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i = int((NR * p + 99) / 100); if (i < 1) i = 1; print a[i] + 0}'; }
ratio=$(awk -v a="$(printf '%s\n' "${along[@]}" | median)" -v b="$(printf '%s\n' "${alone[@]}" | median)" \
        'BEGIN {printf "%.2f", a / b}')
cat <<MD
\`bench/density/busy.sh\`: $tenants tenant databases, $busy of them under full claim load (one pgbench client
each, claim + complete over a 10k backlog), $runs × $seconds s alone and with a trickle in the other
$((tenants - busy)) (a task a minute each, reserved for 10 s and left to time out), \`iwd.max_workers = $max_workers\`
(each busy tenant keeps a worker while it writes: the pool must hold them and room for the others).

| measure | value |
|---|---:|
| the $busy busy tenants' claim + complete cycles/s in all, alone (each window) | ${alone[*]} |
| the same with the trickle in the others (each window) | ${along[*]} |
| with / alone (medians) | ${ratio} |
| trickle reservations timed out / made | $(grep -c . <<<"$lateness") / $expected |
| their lateness after the deadline, p50 / p99 / max | $(pct 50 <<<"$lateness") / $(pct 99 <<<"$lateness") / $(pct 100 <<<"$lateness") ms |
MD
