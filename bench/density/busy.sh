#!/usr/bin/env bash
# Busy tenants among many: IWD_BENCH_TENANTS (500) tenant databases on one server, 5 of them under full
# claim load (bench/core/claim_complete.sql, the matrix's workload over a backlog topped up to 20k before
# each window, one pgbench client each), IWD_BENCH_SECONDS (30) per window, the windows alternating,
# IWD_BENCH_RUNS (2) times:
#   alone          the busy tenants alone
#   psql           with a trickle in the 495 others (a task a minute each, reserved for 10 s and left to
#                  time out), each task written by a psql of its own (a new connection per task)
#   kept           the same trickle on kept connections (bench/density/trickle.py: one per tenant)
#   linger         the same with iwd.max_workers = IWD_BENCH_LINGER_WORKERS (200) and
#                  iwd.worker_idle_timeout = 11 s: the worker started to announce a task's events stays until
#                  its deadline 10 s later (one worker start per task instead of two), as no tenant waits
# and each trickle alone (no busy load), for its own CPU. The busy tenants' rate counts claims that got a
# task (tasks completed in the window); every reservation timeout of the trickle is compared with its
# deadline. CPU: the whole cluster (every PostgreSQL process, those that exited included) and the trickle's
# driver (its psql processes or trickle.py). Prints a markdown section (bench/RESULTS.md, "Density").
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
. bench/lib.sh
port=${IWD_BENCH_PORT:-54373}
tenants=${IWD_BENCH_TENANTS:-500}
seconds=${IWD_BENCH_SECONDS:-30}
runs=${IWD_BENCH_RUNS:-2}
busy=5
max_workers=${IWD_BENCH_MAX_WORKERS:-8}
linger_workers=${IWD_BENCH_LINGER_WORKERS:-200}
backlog=20000
start_cluster busy "$port" "max_worker_processes = $((linger_workers + 16))" "iwd.max_workers = $max_workers" \
    "iwd_dm.suspend = on" "max_connections = $((tenants + 100))" "shared_buffers = 512MB" "fsync = off" \
    "autovacuum_naptime = 10min"
# shellcheck source=bench/density/common.sh
. bench/density/common.sh
hz=$(getconf CLK_TCK)

starts() { q -d "$(tenant 1)" -c "SELECT iwd.worker_stats() ->> 'starts'"; }
completed() { # the busy tenants' completed tasks, in all
    local i total=0
    for i in $(seq 1 "$busy"); do
        total=$((total + $(q -d "$(tenant "$i")" -c "SELECT count(*) FROM iwd.task_closed WHERE status = 'completed'")))
    done
    echo "$total"
}
set_workers() { # set_workers MAX_WORKERS IDLE_TIMEOUT
    q -d postgres -c "ALTER SYSTEM SET iwd.max_workers = $1" -c "ALTER SYSTEM SET iwd.worker_idle_timeout = '$2'" \
        -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1
}

q -d postgres -c "CREATE DATABASE tpl"
q -d tpl -c "CREATE EXTENSION iwd" -c "SELECT iwd.upsert_agent('{\"id\": \"a1\", \"state\": \"ready\"}')" \
    -c "CREATE TABLE public.deadline (due timestamptz)" >/dev/null
q -d postgres -c "ALTER DATABASE tpl IS_TEMPLATE true"
for i in $(seq 1 "$tenants"); do echo "CREATE DATABASE $(tenant "$i") TEMPLATE tpl;"; done | q -d postgres
for i in $(seq 1 "$busy"); do
    q -d "$(tenant "$i")" -f "$work/setup.sql" >/dev/null
    q -d "$(tenant "$i")" -c "SELECT bench_queue_fill($backlog)" -c "VACUUM ANALYZE" >/dev/null
done
trickle_dbs=$(for i in $(seq $((busy + 1)) "$tenants"); do tenant "$i"; done)
# shellcheck disable=SC2086 # (one argument per database)
coproc KEPT { PGUSER=$pg_superuser exec /usr/bin/python3 bench/density/trickle.py "$work" "$port" $trickle_dbs; }
read -r ready <&"${KEPT[0]}"
[ "$ready" = ready ] || { echo "bench/density/trickle.py did not connect" >&2; exit 1; }
sleep 15

# busy_start: the 5 busy tenants' pgbench clients, in the background ($busy_pids)
busy_start() {
    local i
    busy_pids=()
    for i in $(seq 1 "$busy"); do
        "${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -n -M prepared -c 1 -j 1 -T "$seconds" \
            -f "$work/claim_complete.sql" "$(tenant "$i")" >"$work/pgbench-$i.log" 2>&1 &
        busy_pids+=($!)
    done
}
# psql_trickle: a task a minute in each of the other tenants for the window, a psql each; prints the CPU
# seconds of its psql processes
psql_trickle() {
    local gap i end=$(($(date +%s) + seconds))
    gap=$(awk -v n=$((tenants - busy)) 'BEGIN {printf "%.3f", 60 / n}')
    i=$((busy + 1))
    while [ "$(date +%s)" -lt "$end" ]; do
        q -d "$(tenant "$i")" \
            -c "SELECT iwd.create_task('{\"externalId\": \"R$i-$(date +%s%N)\", \"capturePoint\": \"bench\"}')" \
            -c "INSERT INTO public.deadline SELECT (iwd.next_task('a1', 10) ->> 'reservedUntil')::timestamptz" \
            >/dev/null &
        i=$((i + 1)); [ "$i" -gt "$tenants" ] && i=$((busy + 1))
        sleep "$gap"
    done
    wait
    # the psql processes, reaped by this subshell
    awk -v hz="$hz" '{printf "%.2f", ($16 + $17) / hz}' "/proc/$BASHPID/stat"
}
# window MODE: one window; appends "MODE rate cluster_cpu_s driver_cpu_s starts tasks t0 t1" to $work/windows
window() {
    local mode=$1 i c0 c1 s0 s1 t0 t1 done0 done1 driver=0 tasks=0 rate=0 reply fills cpu
    if [ "$mode" != psql-only ] && [ "$mode" != kept-only ] && [ "$mode" != linger-only ]; then
        fills=()
        for i in $(seq 1 "$busy"); do
            q -d "$(tenant "$i")" -c "SELECT bench_queue_fill($backlog)" >/dev/null &
            fills+=($!)
        done
        wait "${fills[@]}"
    fi
    case $mode in *linger*) set_workers "$linger_workers" 11s ;; esac
    done0=$(completed); s0=$(starts); c0=$(cpu_ticks); t0=$(date +%s)
    case $mode in alone | psql | kept | linger) busy_start ;; *) busy_pids=() ;; esac
    case $mode in
        psql | psql-only) driver=$(psql_trickle) ;;
        kept | linger | kept-only | linger-only)
            echo "run $seconds" >&"${KEPT[1]}"
            read -r reply <&"${KEPT[0]}"
            tasks=$(cut -d' ' -f2 <<<"$reply"); driver=$(cut -d' ' -f3 <<<"$reply") ;;
    esac
    [ ${#busy_pids[@]} -gt 0 ] && wait "${busy_pids[@]}"
    t1=$(date +%s); c1=$(cpu_ticks); s1=$(starts); done1=$(completed)
    case $mode in *linger*) set_workers "$max_workers" 5s ;; esac
    case $mode in alone | psql | kept | linger) rate=$(((done1 - done0) / seconds)) ;; esac
    case $mode in psql | psql-only) tasks=$((seconds * (tenants - busy) / 60)) ;; esac
    cpu=$(awk -v t=$((c1 - c0)) -v hz="$hz" 'BEGIN {printf "%.1f", t / hz}')
    echo "$mode $rate $cpu $driver $((s1 - s0)) $tasks $t0 $t1" \
        >>"$work/windows"
}
for _ in $(seq 1 "$runs"); do
    for mode in alone psql kept linger psql-only kept-only linger-only; do window "$mode"; done
done
echo quit >&"${KEPT[1]}"
sleep 15
# every trickle deadline with its reservation timeout: "due_epoch lateness_ms"
lateness=$(for i in $(seq $((busy + 1)) "$tenants"); do
    q -d "$(tenant "$i")" -c "
        SELECT extract(epoch FROM d.due)::bigint, round(extract(epoch FROM e.at - d.due) * 1000)
        FROM (SELECT due, row_number() OVER (ORDER BY due) n FROM public.deadline) d
        JOIN (SELECT at, row_number() OVER (ORDER BY at) n FROM iwd.task_event
              WHERE event = 'reservation_timeout') e USING (n)" |
        tr '|' ' '
done)
expected=$(for i in $(seq $((busy + 1)) "$tenants"); do
               q -d "$(tenant "$i")" -c "SELECT count(*) FROM public.deadline"
           done |
           awk '{s += $1} END {print s}')
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i = int((NR * p + 99) / 100); if (i < 1) i = 1; print a[i] + 0}'; }
column() { awk -v m="$1" -v c="$2" '$1 == m {print $c}' "$work/windows"; }
med() { column "$1" "$2" | median; }
# late MODE: the lateness of the deadlines of MODE's windows (a deadline is 10 s after its reservation)
late() {
    awk -v m="$1" 'NR == FNR {if ($1 == m) {s[++n] = $7 + 10; e[n] = $8 + 11}; next}
                   {for (i = 1; i <= n; i++) if ($1 >= s[i] && $1 <= e[i]) {print $2; next}}' \
        "$work/windows" - <<<"$lateness"
}
percent() { awk -v s="$1" -v w="$seconds" 'BEGIN {printf "%.1f", 100 * s / w}'; }
alone=$(med alone 2)
row() { # row MODE LABEL: the busy rate and the trickle's cost in MODE's windows
    local l
    l=$(late "$1")
    printf '| %s | %s | %s | %s %% | %s %% | %s | %s / %s / %s ms |\n' "$2" "$(column "$1" 2 | xargs)" \
        "$(awk -v a="$(med "$1" 2)" -v b="$alone" 'BEGIN {printf "%.2f", a / b}')" \
        "$(percent "$(med "$1-only" 3)")" "$(percent "$(med "$1-only" 4)")" \
        "$(awk -v s="$(med "$1-only" 5)" -v t="$(med "$1-only" 6)" 'BEGIN {printf "%.2f", t ? s / t : 0}')" \
        "$(pct 50 <<<"$l")" "$(pct 99 <<<"$l")" "$(pct 100 <<<"$l")"
}
cat <<MD
\`bench/density/busy.sh\`: $tenants tenant databases, $busy of them under full claim load (one pgbench client
each, claim + complete over a backlog topped up to ${backlog} before each window), windows of $seconds s
alternating $runs times; the trickle in the other $((tenants - busy)): a task a minute each, reserved for 10 s
and left to time out; \`iwd.max_workers = $max_workers\` unless said.

| busy tenants' claims/s (tasks completed, all 5) | each window | with / alone (medians) | trickle alone: cluster CPU | its driver's CPU | worker starts per task | trickle lateness p50 / p99 / max |
|---|---:|---:|---:|---:|---:|---:|
| alone | $(column alone 2 | xargs) | 1.00 | | | | |
$(row psql "trickle, a psql (new connection) per task")
$(row kept "trickle on kept connections")
$(row linger "kept, \`iwd.max_workers = $linger_workers\`, \`worker_idle_timeout = 11s\`: workers linger to the \
deadline")

Cluster CPU of the busy windows (% of one core, medians): alone $(percent "$(med alone 3)") %, psql \
$(percent "$(med psql 3)") %, kept $(percent "$(med kept 3)") %,
linger $(percent "$(med linger 3)") %. Trickle reservations timed out / made: $(grep -c . <<<"$lateness") / $expected.
MD
