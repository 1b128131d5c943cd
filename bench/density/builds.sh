#!/usr/bin/env bash
# Two builds of iwd against the same trickle, alternating, in one run: what a trickle task costs the
# cluster and how late its reservation times out. Usage: bench/density/builds.sh BEFORE [AFTER]
# (commits; AFTER defaults to HEAD). Each build is made from its commit (git archive) and installed
# (DESTDIR) into a copy of this machine's PostgreSQL tree under a work directory, which PostgreSQL's
# relocatable paths make its own: the shared installation is left alone. Cases, each
# IWD_BENCH_ROUNDS (2) times per build, alternating, windows of IWD_BENCH_SECONDS (30):
#   cost    IWD_BENCH_TENANTS (100) tenant databases, the trickle alone at 4 tasks a second,
#           IWD_BENCH_COST_WORKERS (8) workers: the cluster's CPU per trickle task, worker starts per task
#   short   twice as many tenants, 10 tasks a second, iwd.max_workers = 3, and 2 backends spinning
#           (the CPUs saturated, as busy tenants keep them): the lateness of the reservation timeouts
# IWD_BENCH_CASES ("cost short") chooses the cases; max_worker_processes is the pool's size plus 24.
# Each task (bench/density/trickle.py on kept connections) is created, reserved for 10 s and left to
# time out; the lateness is read once every reservation has timed out. Prints a markdown table.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
before=${1:?usage: bench/density/builds.sh BEFORE [AFTER]}
after=${2:-HEAD}
tenants=${IWD_BENCH_TENANTS:-100}
rounds=${IWD_BENCH_ROUNDS:-2}
seconds=${IWD_BENCH_SECONDS:-30}
# shellcheck source=bench/builds.sh
. bench/builds.sh
builds_init builds || exit 1
trap '[ -z "${IWD_KEEP:-}" ] && rm -rf "$trees"' EXIT

build before "$before" && build after "$after" || exit 1

# measure NAME TENANTS RATE MAX_WORKERS SPINNERS: one case against build NAME (a cluster of its own);
# prints "ms_per_task starts_per_task timeouts tasks p50 p99 max"
measure() {
    local name=$1 n=$2 rate=$3 max_workers=$4 spinners=$5
    (
        export PG_CONFIG=$trees/$name$pg_root/bin/pg_config
        # shellcheck source=bench/lib.sh
        . bench/lib.sh
        start_cluster builds "" "max_worker_processes = $((max_workers + 24))" "iwd.max_workers = $max_workers" \
            "iwd_dm.suspend = on" \
            "max_connections = $((n + 50))" "fsync = off" "autovacuum_naptime = 10min" >/dev/null
        # shellcheck source=bench/density/common.sh
        . bench/density/common.sh
        q -d postgres -c "CREATE DATABASE tpl"
        q -d tpl -c "CREATE EXTENSION iwd" -c "SELECT iwd.upsert_agent('{\"id\": \"a1\", \"state\": \"ready\"}')" \
            -c "CREATE TABLE public.deadline (due timestamptz)" >/dev/null
        q -d postgres -c "ALTER DATABASE tpl IS_TEMPLATE true"
        for i in $(seq 1 "$n"); do echo "CREATE DATABASE $(tenant "$i") TEMPLATE tpl;"; done | q -d postgres
        # shellcheck disable=SC2046 # (one argument per database)
        coproc KEPT { PGUSER=$pg_superuser exec /usr/bin/python3 bench/density/trickle.py "$work" "$bench_port" \
            $(for i in $(seq 1 "$n"); do tenant "$i"; done); }
        read -r ready <&"${KEPT[0]}"
        [ "$ready" = ready ] || { echo "bench/density/trickle.py did not connect" >&2; exit 1; }
        sleep 15
        s0=$(q -d t001 -c "SELECT iwd.worker_stats() ->> 'starts'"); c0=$(cpu_ticks)
        spinning=()
        for _ in $(seq 1 "$spinners"); do
            q -d postgres -c "SET statement_timeout = '$((seconds + 10))s'" \
                -c "SELECT count(*) FROM generate_series(1, 10000000000)" >/dev/null 2>&1 &
            spinning+=($!)
        done
        echo "run $seconds $rate" >&"${KEPT[1]}"
        read -r reply <&"${KEPT[0]}"
        tasks=$(cut -d' ' -f2 <<<"$reply")
        [ ${#spinning[@]} -gt 0 ] && wait "${spinning[@]}"
        sleep 12
        c1=$(cpu_ticks); s1=$(q -d t001 -c "SELECT iwd.worker_stats() ->> 'starts'")
        for _ in $(seq 1 120); do # every reservation timed out before the lateness is read
            left=0
            for i in $(seq 1 "$n"); do
                left=$((left + $(q -d "$(tenant "$i")" -c "SELECT count(*) FROM iwd.task WHERE status = 'assigned'")))
            done
            [ "$left" -eq 0 ] && break
            sleep 1
        done
        lateness=$(for i in $(seq 1 "$n"); do
            q -d "$(tenant "$i")" -c "
                SELECT round(extract(epoch FROM e.at - d.due) * 1000)
                FROM (SELECT due, row_number() OVER (ORDER BY due) n FROM public.deadline) d
                JOIN (SELECT at, row_number() OVER (ORDER BY at) n FROM iwd.task_event
                      WHERE event = 'reservation_timeout') e USING (n)"
        done | sort -n)
        echo quit >&"${KEPT[1]}"
        pct() { awk -v p="$1" '{a[NR]=$1} END {i = int((NR * p + 99) / 100); if (i < 1) i = 1; print a[i] + 0}'; }
        hz=$(getconf CLK_TCK)
        echo "$(awk -v t=$((c1 - c0)) -v n="$tasks" -v hz="$hz" 'BEGIN {printf "%.1f", 1000 * t / hz / n}')" \
            "$(awk -v s=$((s1 - s0)) -v n="$tasks" 'BEGIN {printf "%.2f", s / n}')" "$(grep -c . <<<"$lateness")" \
            "$tasks" "$(pct 50 <<<"$lateness")" "$(pct 99 <<<"$lateness")" "$(pct 100 <<<"$lateness")"
    )
}

echo "| case | build | cluster CPU per trickle task (ms) | worker starts per task | timed out / tasks |" \
    "lateness p50 / p99 / max (ms) |"
echo "|---|---|---:|---:|---:|---:|"
for case in ${IWD_BENCH_CASES:-cost short}; do
    for _ in $(seq 1 "$rounds"); do
        for name in before after; do
            commit=$before; [ "$name" = after ] && commit=$after
            case $case in
                cost) row=$(measure "$name" "$tenants" 4 "${IWD_BENCH_COST_WORKERS:-8}" 0) ;;
                short) row=$(measure "$name" $((2 * tenants)) 10 3 2) ;;
            esac
            read -r ms starts seen tasks p50 p99 max <<<"$row"
            [ -n "$max" ] || { echo "the $case case failed against $name" >&2; exit 1; }
            echo "| $case | $name ($(git rev-parse --short "$commit")) | $ms | $starts | $seen / $tasks |" \
                "$p50 / $p99 / $max |"
        done
    done
done
