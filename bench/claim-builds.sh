#!/usr/bin/env bash
# Builds of iwd side by side on the claim path: claim + complete (bench/core/claim_complete.sql) and the agent
# loop (complete_next.sql) against each build, the hand-written queue (naive_claim_complete.sql) for reference.
# Usage: bench/claim-builds.sh COMMIT... (two or more; HEAD for the checkout's last commit). Each build is made
# from its commit (git archive) and installed (DESTDIR) into a copy of this machine's PostgreSQL tree, the
# shared installation left alone; each gets a cluster of its own, made alike (IWD_BENCH_BACKLOG, 1000000,
# queued through create_tasks, the fill's events published, VACUUM ANALYZE), and all run at once. Then
# IWD_BENCH_ROUNDS (5) rounds, each: claim + complete against every build in turn (the order reversed every
# other round), the hand-written queue on the first build's cluster, the agent loop against every build; runs
# of IWD_BENCH_SECONDS (12) at 16 clients, each after a CHECKPOINT, topped up to the backlog first. Then one
# backend's CPU per cycle (utime + stime from /proc; each cycle its own transaction; 2,000 cycles after 300,
# builds alternating, IWD_BENCH_ROUNDS times). Prints a markdown table: medians (min-max), WAL and full-page
# images per cycle.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
[ $# -ge 2 ] || { echo "usage: bench/claim-builds.sh COMMIT COMMIT..." >&2; exit 2; }
backlog=${IWD_BENCH_BACKLOG:-1000000}
rounds=${IWD_BENCH_ROUNDS:-5}
seconds=${IWD_BENCH_SECONDS:-12}
# shellcheck source=bench/builds.sh
. bench/builds.sh
builds_init claim-builds || exit 1
# shellcheck source=bench/lib.sh
. bench/lib.sh
declare -A dirs ports
stop_all() {
    local where dir
    for where in "$trees"/*.where; do
        [ -f "$where" ] || continue
        read -r dir _ < "$where"
        as_postgres "$trees/$(basename "$where" .where)$pg_root/bin/pg_ctl" -D "$dir/data" -m fast -w stop \
            >/dev/null 2>&1
        rm -rf "$dir"
    done
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$trees"
}
trap stop_all EXIT


# prepare NAME: the build's cluster, filled; writes "DIR PORT" to $trees/NAME.where
prepare() (
    export PG_CONFIG=$trees/$1$pg_root/bin/pg_config
    # shellcheck disable=SC2034 # (the cluster functions of scripts/lib.sh run the programs of $bindir)
    bindir=$("$PG_CONFIG" --bindir)
    dir=$(work_dir "claim-builds-$1"); pg_port=$(free_port)
    cluster_init "$dir" "$(printf '%s\n' "${bench_settings[@]}")" >/dev/null && cluster_start || exit 1
    echo "$dir $pg_port" > "$trees/$1.where"
    cluster_client createdb bench
    cp bench/core/*.sql "$dir/" && chmod 644 "$dir"/*.sql
    cluster_client psql -qAtX -d bench -v ON_ERROR_STOP=1 -f "$dir/setup.sql" -f "$dir/naive_setup.sql" \
        -c "SELECT bench_queue_fill($backlog)" -c "SELECT naive_fill($backlog)" -c "CREATE FUNCTION bench_cycle(a int)
            RETURNS int LANGUAGE plpgsql AS \$\$ DECLARE id bigint := (iwd.next_task('agent' || a) ->> 'id')::bigint;
            BEGIN IF id IS NOT NULL THEN PERFORM iwd.complete_task(id, 'agent' || a); RETURN 1; END IF; RETURN 0;
            END \$\$" >/dev/null || exit 1
    # the fill's created events are published before any run (the publication would fall into the first runs)
    until [ "$(cluster_client psql -qAtX -d bench -c "SELECT count(*) FROM iwd.event_outbox")" -lt 100 ]; do
        sleep 5
    done
    cluster_client psql -qAtX -d bench -c "VACUUM ANALYZE" >/dev/null
)

# q NAME ARGS...: psql on the build's cluster
q() {
    local n=$1; shift
    PGHOST=${dirs[$n]} PGPORT=${ports[$n]} PGUSER=postgres "$trees/$n$pg_root/bin/psql" -qAtX -d bench \
        -v ON_ERROR_STOP=1 "$@"
}

# run NAME SCRIPT FILL: "cycles/s WAL-bytes FPI" per cycle of one pgbench run after FILL and a checkpoint
run() {
    local n=$1 w0 w1 c
    q "$n" -c "$3" -c "CHECKPOINT" >/dev/null
    w0=$(q "$n" -c "SELECT pg_current_wal_lsn() || ' ' || wal_fpi FROM pg_stat_wal")
    (cd "${dirs[$n]}" && PGHOST=${dirs[$n]} PGPORT=${ports[$n]} PGUSER=postgres "$trees/$n$pg_root/bin/pgbench" \
        -n -M prepared -c 16 -j 2 -T "$seconds" -D task_id=0 -f "${dirs[$n]}/$2" bench) >"${dirs[$n]}/out.txt" 2>&1
    w1=$(q "$n" -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${w0% *}') || ' ' || wal_fpi FROM pg_stat_wal")
    c=$(awk -F': ' '/^number of transactions actually processed/ {split($2, a, "/"); print a[1]}' "${dirs[$n]}/out.txt")
    awk -v a="${w0#* }" -v b="$w1" -v c="${c:-0}" '/^tps = / {t = $3} END {split(b, y, " ");
        printf "%.0f %.0f %.2f\n", t, (c > 0 ? y[1] / c : 0), (c > 0 ? (y[2] - a) / c : 0)}' "${dirs[$n]}/out.txt"
}

# cpu NAME: microseconds of one backend's CPU per claim + complete cycle
cpu() {
    q "$1" -f "$trees/cpu.sql" | tail -1
}

names=()
for i in $(seq 1 $#); do
    names+=("b$i")
    build "b$i" "${!i}" || exit 1
done
for n in "${names[@]}"; do prepare "$n" & done
wait
for n in "${names[@]}"; do
    [ -f "$trees/$n.where" ] || { echo "the cluster of $n was not prepared" >&2; exit 1; }
    read -r dirs[$n] ports[$n] < "$trees/$n.where"
    q "$n" -c "SELECT 1" >/dev/null || { echo "the cluster of $n does not answer" >&2; exit 1; }
done
{
    echo "SELECT pg_backend_pid() AS pid \\gset"
    echo "\\setenv IWD_BACKEND :pid"
    for i in $(seq 1 300); do echo "SELECT bench_cycle($(( i * 7 % 500 + 1 )));"; done
    echo "\\! awk '{print \$14 + \$15}' /proc/\$IWD_BACKEND/stat > $trees/ticks"
    for i in $(seq 1 2000); do echo "SELECT bench_cycle($(( i * 31 % 500 + 1 )));"; done
    echo "\\! awk -v t0=\$(cat $trees/ticks) '{print int((\$14 + \$15 - t0) * 10000 / 2000)}' /proc/\$IWD_BACKEND/stat"
} > "$trees/cpu.sql"

declare -A results
for r in $(seq 1 "$rounds"); do
    order=("${names[@]}")
    [ $((r % 2)) -eq 0 ] && mapfile -t order < <(printf '%s\n' "${names[@]}" | tac)
    for n in "${order[@]}"; do
        results[$n claim]+="$(run "$n" claim_complete.sql "SELECT bench_queue_fill($backlog)");"
    done
    results[naive]+="$(run "${names[0]}" naive_claim_complete.sql "SELECT naive_fill($backlog)");"
    for n in "${order[@]}"; do
        results[$n loop]+="$(run "$n" complete_next.sql "SELECT bench_queue_fill($backlog)");"
    done
    echo "claim-builds: round $r of $rounds done" >&2
done
for r in $(seq 1 "$rounds"); do
    for n in "${names[@]}"; do results[$n cpu]+="$(cpu "$n");"; done
done

# summary "RUNS" (t w f;...): "median (min-max) | median WAL B, median FPI"
summary() {
    local runs=${1%;}
    tr ';' '\n' <<<"$runs" | awk '{print $1}' | sort -n |
        awk '{a[NR] = $1} END {printf "%s (%s-%s)", a[int((NR + 1) / 2)], a[1], a[NR]}'
    printf ' | '
    printf '%s B, %s' "$(tr ';' '\n' <<<"$runs" | awk '{print $2}' | median)" \
        "$(tr ';' '\n' <<<"$runs" | awk '{print $3}' | median)"
}
echo "| build | claim + complete cycles/s | WAL per cycle, FPI | agent loop cycles/s | WAL per cycle, FPI |" \
    "CPU per cycle (µs) |"
echo "|---|---:|---:|---:|---:|---:|"
for i in $(seq 1 $#); do
    n=b$i
    echo "| ${!i} | $(summary "${results[$n claim]}") | $(summary "${results[$n loop]}") |" \
        "$(tr ';' '\n' <<<"${results[$n cpu]%;}" | median) |"
done
echo "| hand-written queue | $(summary "${results[naive]}") | | | |"
