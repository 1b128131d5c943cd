#!/usr/bin/env bash
# Density: many tenant databases on one server, served by the bounded pool of workers.
#   IWD_BENCH_TENANTS (500) tenant databases made from a template holding iwd, found by the launcher.
#   1. idle: CPU of the whole cluster (every PostgreSQL process, those that exited included) over
#      IWD_BENCH_IDLE_SECONDS (60), with the Data Mart schedule suspended, with PostgreSQL's default
#      autovacuum_naptime (1 min: an autovacuum worker visits one of the databases every 0.12 s) and with
#      10 min; the launcher's own CPU and iwd's worker starts meanwhile; then one scheduled Data Mart
#      round of every tenant (schedule '* * * * *' for one minute): its CPU, to spread over the real
#      schedule (every 15 minutes by default); memory (PSS) of the launcher and of a tenant's worker.
#   2. CREATE EXTENSION to served: IWD_BENCH_NEW (10) new databases, each timed until the launcher
#      reports it served (its first worker started and done).
#   3. trickle: every tenant gets a task a minute for IWD_BENCH_TRICKLE_MINUTES (2), each reserved for
#      10 s and left to time out, plus a task deferred by 10 s; lateness of every reservation timeout and
#      activation against its deadline (p50 / p99 / max), CPU of the cluster meanwhile.
# Prints a markdown section (bench/RESULTS.md, "Density").
set -uo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh
port=${IWD_BENCH_PORT:-54371}
tenants=${IWD_BENCH_TENANTS:-500}
idle_seconds=${IWD_BENCH_IDLE_SECONDS:-60}
new_databases=${IWD_BENCH_NEW:-10}
trickle_minutes=${IWD_BENCH_TRICKLE_MINUTES:-2}
max_workers=${IWD_BENCH_MAX_WORKERS:-4}
start_cluster density "$port" "max_worker_processes = 16" "iwd.max_workers = $max_workers" "iwd_dm.suspend = on" \
    "max_connections = 200" "shared_buffers = 512MB" "fsync = off"
# shellcheck source=bench/density/common.sh
. bench/density/common.sh
now_ms() { echo $(($(date +%s%N) / 1000000)); }
postmaster=$(head -1 "$work/data/postmaster.pid")
ticks=$(getconf CLK_TCK)

# percent_of_core TICKS SECONDS
percent_of_core() { awk -v t="$1" -v s="$2" -v hz="$ticks" 'BEGIN {printf "%.2f", 100 * t / hz / s}'; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null; }
served_count() {
    q -d monitor -c "SELECT count(*) FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t WHERE t->>'state' = 'served'"
}

q -d postgres -c "CREATE DATABASE tpl" -c "CREATE DATABASE monitor"
q -d tpl -c "CREATE EXTENSION iwd" -c "SELECT iwd.upsert_agent('{\"id\": \"a1\", \"state\": \"ready\"}')" \
    -c "CREATE TABLE public.deadline (what text, due timestamptz)" >/dev/null
q -d monitor -c "CREATE EXTENSION iwd"
q -d postgres -c "ALTER DATABASE tpl IS_TEMPLATE true"
created=$(now_ms)
for i in $(seq 1 "$tenants"); do echo "CREATE DATABASE $(tenant "$i") TEMPLATE tpl;"; done | q -d postgres
create_s=$(awk -v ms=$(($(now_ms) - created)) 'BEGIN {printf "%.0f", ms / 1000}')
found=$(now_ms)
while [ "$(served_count)" -lt $((tenants + 1)) ]; do sleep 0.5; done
found_s=$(awk -v ms=$(($(now_ms) - found)) 'BEGIN {printf "%.1f", ms / 1000}')
sleep 10
launcher=$(pgrep -f 'iwd scheduler launcher' | head -1)

# 1. idle
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
starts() { q -d monitor -c "SELECT iwd.worker_stats()->>'starts'"; }
before=$(cpu_ticks); starts_before=$(starts); launcher_before=$(proc_ticks "$launcher")
sleep "$idle_seconds"
after=$(cpu_ticks); idle_starts=$(($(starts) - starts_before)); launcher_ticks=$(($(proc_ticks "$launcher") - launcher_before))
idle_pct=$(percent_of_core $((after - before)) "$idle_seconds")
launcher_pct=$(percent_of_core "$launcher_ticks" "$idle_seconds")
q -d postgres -c "ALTER SYSTEM SET autovacuum_naptime = '10min'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 2
before=$(cpu_ticks); sleep "$idle_seconds"; after=$(cpu_ticks)
idle_nap_pct=$(percent_of_core $((after - before)) "$idle_seconds")
q -d postgres -c "ALTER SYSTEM RESET autovacuum_naptime" -c "SELECT pg_reload_conf()" >/dev/null
idle_workers=$(q -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('iwd scheduler', 'iwd datamart')")
launcher_pss=$(pss_kb "$launcher")
cluster_pss=0
for pid in $postmaster $(pgrep -P "$postmaster"); do cluster_pss=$((cluster_pss + $(pss_kb "$pid" || echo 0))); done
# one Data Mart round: every tenant's chain, started by the schedule of one minute
q -d postgres -c "ALTER SYSTEM SET iwd_dm.schedule = '* * * * *'" -c "ALTER SYSTEM SET iwd_dm.suspend = off" \
    -c "SELECT pg_reload_conf()" >/dev/null
sleep $((60 - $(date +%S | sed 's/^0//') + 1))
before=$(cpu_ticks); round_start=$(now_ms)
q -d postgres -c "ALTER SYSTEM SET iwd_dm.suspend = on" -c "SELECT pg_reload_conf()" >/dev/null
while [ "$(q -d monitor -c "SELECT (iwd.worker_stats()->>'datamartRunning')::int")" -gt 0 ]; do sleep 0.5; done
sleep 1
while [ "$(q -d monitor -c "SELECT (iwd.worker_stats()->>'datamartRunning')::int")" -gt 0 ]; do sleep 0.5; done
after=$(cpu_ticks)
round_s=$(awk -v ms=$(($(now_ms) - round_start)) 'BEGIN {printf "%.0f", ms / 1000}')
round_cpu_s=$(awk -v t=$((after - before)) -v hz="$ticks" 'BEGIN {printf "%.1f", t / hz}')
round_runs=$(for i in $(seq 1 "$tenants"); do
    q -d "$(tenant "$i")" -c "SELECT count(*) FROM iwd_dm.job_status WHERE last_success IS NOT NULL"; done | awk '{s += $1} END {print s}')
dm_pct=$(awk -v c="$round_cpu_s" 'BEGIN {printf "%.2f", 100 * c / 900}')

# 2. CREATE EXTENSION to served
served_ms=()
for k in $(seq 1 "$new_databases"); do
    q -d postgres -c "CREATE DATABASE new$k"
    start=$(now_ms)
    q -d "new$k" -c "CREATE EXTENSION iwd"
    until [ "$(q -d monitor -c "SELECT count(*) FROM jsonb_array_elements(iwd.worker_stats()->'tenants') t
                               WHERE t->>'database' = 'new$k' AND (t->>'starts')::int > 0 AND t->>'workerPid' IS NULL")" = 1 ]; do
        sleep 0.02
    done
    served_ms+=($(($(now_ms) - start)))
done

# 3. trickle: one task a minute per tenant, spread over the minute
gap=$(awk -v n="$tenants" 'BEGIN {printf "%.3f", 60 / n}')
before=$(cpu_ticks); trickle_start=$(now_ms)
worker_pss=()
for m in $(seq 1 "$trickle_minutes"); do
    for i in $(seq 1 "$tenants"); do
        q -d "$(tenant "$i")" -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'R$m', 'capturePoint', 'bench'))" \
            -c "INSERT INTO public.deadline SELECT 'reservation', (iwd.next_task('a1', 10) ->> 'reservedUntil')::timestamptz" \
            -c "SELECT iwd.create_task(jsonb_build_object('externalId', 'D$m', 'capturePoint', 'bench', 'activationAt',
                    to_char(now() AT TIME ZONE 'UTC' + interval '10 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))" \
            -c "INSERT INTO public.deadline SELECT 'activation', activation_at FROM iwd.task WHERE external_id = 'D$m'" >/dev/null &
        if [ $((i % 50)) -eq 0 ]; then
            for pid in $(pgrep -f '^postgres: iwd scheduler ' | head -1); do worker_pss+=($(pss_kb "$pid")); done
        fi
        sleep "$gap"
    done
done
wait
sleep 15
after=$(cpu_ticks)
trickle_s=$(awk -v ms=$(($(now_ms) - trickle_start)) 'BEGIN {printf "%.0f", ms / 1000}')
trickle_pct=$(percent_of_core $((after - before)) "$trickle_s")
lateness=$(for i in $(seq 1 "$tenants"); do
    q -d "$(tenant "$i")" -c "
        SELECT 'r ' || round(extract(epoch FROM e.at - d.due) * 1000)
        FROM (SELECT due, row_number() OVER (ORDER BY due) n FROM public.deadline WHERE what = 'reservation') d
        JOIN (SELECT at, row_number() OVER (ORDER BY at) n FROM iwd.task_event WHERE event = 'reservation_timeout') e USING (n)
        UNION ALL
        SELECT 'a ' || round(extract(epoch FROM e.at - d.due) * 1000)
        FROM (SELECT due, row_number() OVER (ORDER BY due) n FROM public.deadline WHERE what = 'activation') d
        JOIN (SELECT at, row_number() OVER (ORDER BY at) n FROM iwd.task_event WHERE event = 'activated') e USING (n)"
done)
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i = int((NR * p + 99) / 100); if (i < 1) i = 1; print a[i] + 0}'; }
res=$(grep '^r ' <<<"$lateness" | cut -d' ' -f2); act=$(grep '^a ' <<<"$lateness" | cut -d' ' -f2)
res_n=$(grep -c . <<<"$res"); act_n=$(grep -c . <<<"$act")
expected=$((tenants * trickle_minutes))
stats=$(q -d monitor -c "SELECT (s->>'starts') || ' ' || (s->>'lateStarts') || ' ' || (s->>'maxStartDelayMs') || ' ' || (s->>'failures')
                         FROM iwd.worker_stats() s")
read -r starts late_starts max_delay failures <<<"$stats"
worker_pss_med=$(printf '%s\n' "${worker_pss[@]:-0}" | median)

cat <<MD
## Density

\`bench/density/run.sh\`: $tenants tenant databases (made from a template holding iwd: no CREATE EXTENSION
runs in them, the launcher finds them in pg_database), \`iwd.max_workers = $max_workers\`, default
\`iwd.scheduler_interval\` (1 s) and \`iwd.worker_idle_timeout\` (5 s), on the same 2 CPUs.

| measure | value |
|---|---:|
| creating the $tenants databases | ${create_s} s |
| all $tenants found and probed by the launcher (one first worker each) | ${found_s} s |
| idle, Data Mart suspended: CPU of the whole cluster over ${idle_seconds} s (autovacuum_naptime 1 min) | ${idle_pct} % of one core |
| the same with autovacuum_naptime = 10min | ${idle_nap_pct} % of one core |
| idle: iwd's launcher alone / iwd worker starts in ${idle_seconds} s / iwd workers running at the end | ${launcher_pct} % / ${idle_starts} / ${idle_workers} |
| memory (PSS): the launcher / a tenant's worker (median of samples) / the whole cluster idle | ${launcher_pss} kB / ${worker_pss_med} kB / $((cluster_pss / 1024)) MB |
| one scheduled Data Mart round, $round_runs of $tenants chains done (\`iwd_dm.max_workers\` 2) | ${round_s} s, ${round_cpu_s} CPU-s |
| that round spread over the default schedule (every 15 min) | ${dm_pct} % of one core |
| CREATE EXTENSION to served, $new_databases new databases (min / median / max) | $(min_med_max "${served_ms[@]}") ms |
| trickle: one task a minute per tenant for $trickle_minutes min (+15 s): CPU of the whole cluster | ${trickle_pct} % of one core |
| reservation timeouts seen / expected | $res_n / $expected |
| lateness of a reservation timeout after its deadline, p50 / p99 / max | $(pct 50 <<<"$res") / $(pct 99 <<<"$res") / $(pct 100 <<<"$res") ms |
| activations seen / expected | $act_n / $expected |
| lateness of an activation after its time, p50 / p99 / max | $(pct 50 <<<"$act") / $(pct 99 <<<"$act") / $(pct 100 <<<"$act") ms |
| worker starts in all / started more than 1 s after due / longest start delay / failed | $starts / $late_starts / ${max_delay} ms / $failures |
MD
