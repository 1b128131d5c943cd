#!/usr/bin/env bash
# Runs iwd's libFuzzer targets under AddressSanitizer and UndefinedBehaviorSanitizer.
#   scripts/fuzz.sh          the short run of make test: FUZZ_SECONDS (default 12) per sidecar target and
#                            FUZZ_SQL_SECONDS (default 60) for the SQL target, from the seed corpus
#   scripts/fuzz.sh long     make fuzz: FUZZ_SECONDS (default 180) and FUZZ_SQL_SECONDS (default 600), each
#                            target growing its corpus in <dir>/build/corpus/ from one long run to the next
#   scripts/fuzz.sh replay TARGET FILE...   runs a target on saved inputs (a reproducer), with its cluster
# FUZZ_RUNS=N stops each target after N inputs (before its time is up). FUZZ_TARGETS="fuzz_url fuzz_sql"
# picks targets. FUZZ_SQL_MEMORY_MB (default 512) bounds a backend's private memory. Targets: sidecar/fuzz/
# (fuzz_url, fuzz_route, fuzz_body, fuzz_provisioning, fuzz_redis: the sidecar's parsers in-process) and
# regress/fuzz/fuzz_sql (a client of a throwaway cluster preloading iwd).
# A target passes when it ran to its end with no crash and at least FUZZ_MIN_EXECS (default 1000) inputs;
# a crash leaves its input in sidecar/fuzz/crashes/ or regress/fuzz/crashes/, with the command replaying
# it. IWD_KEEP=1 keeps the logs and the cluster's directory. Ends with the executions per target and in
# total, then "fuzz: N passed, M failed".
set -uo pipefail
caller=$(pwd)
cd "$(dirname "$0")/.." || exit 1
top=$(pwd)
mode=${1:-short}
case "$mode" in
    replay) ;;
    short) seconds=${FUZZ_SECONDS:-12}; sql_seconds=${FUZZ_SQL_SECONDS:-60} ;;
    long) seconds=${FUZZ_SECONDS:-180}; sql_seconds=${FUZZ_SQL_SECONDS:-600} ;;
    *) echo "usage: scripts/fuzz.sh [short|long] | scripts/fuzz.sh replay TARGET FILE..." >&2; exit 2 ;;
esac
min_execs=${FUZZ_MIN_EXECS:-1000}
sql_memory_mb=${FUZZ_SQL_MEMORY_MB:-512}
SHARED_AND_CODE_MB=512 # a backend's address space beyond its private memory: shared buffers, libraries
targets=${FUZZ_TARGETS:-fuzz_url fuzz_route fuzz_body fuzz_provisioning fuzz_redis fuzz_sql}
if [ "$mode" = replay ]; then
    [ $# -ge 3 ] || { echo "usage: scripts/fuzz.sh replay TARGET FILE..." >&2; exit 2; }
    targets=$2
    replay_files=()
    for f in "${@:3}"; do [[ "$f" = /* ]] && replay_files+=("$f") || replay_files+=("$caller/$f"); done
fi
suite=fuzz
# shellcheck source=lib.sh
. scripts/lib.sh
work=$(work_dir fuzz)
total_execs=0
summary=()

cleanup() {
    cluster_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

command -v clang >/dev/null || fail_setup "clang is missing: run make deps"
sidecar_targets=$(tr ' ' '\n' <<<"$targets" | grep -v '^fuzz_sql$' | sed 's|^|build/|' | tr '\n' ' ')
if [ -n "${sidecar_targets// /}" ]; then
    make -s -j"$(nproc)" -C sidecar/fuzz $sidecar_targets >"$work/build.log" 2>&1 ||
        { cat "$work/build.log"; fail_setup "cannot build sidecar/fuzz"; }
fi
if grep -qw fuzz_sql <<<"$targets"; then
    make -s -C regress/fuzz >"$work/build.log" 2>&1 ||
        { cat "$work/build.log"; fail_setup "cannot build regress/fuzz"; }
fi

# A throwaway cluster preloading iwd, with the fixtures the SQL fuzzer expects.
start_cluster() {
    cluster_init "$work/pg" "iwd.max_workers = 0
fsync = off
log_min_messages = warning
log_min_error_statement = panic" || return 1
    # the backends' address space is bounded, so that a statement wanting more memory fails (53200, which
    # fuzz_sql reports) instead of being missed between two readings of the backend's memory
    as_postgres bash -c 'ulimit -v "$1" && exec "$2/pg_ctl" -D "$3" -l "$4" -w start' _ \
        $(((sql_memory_mb + SHARED_AND_CODE_MB) * 1024)) "$bindir" "$pg_data" "$pg_log" >/dev/null || return 1
    cluster_client createdb fuzz || return 1
    cluster_client psql -X -q -v ON_ERROR_STOP=1 fuzz \
        -f regress/fuzz/fixtures.sql >"$work/fixtures.log" 2>&1 || { cat "$work/fixtures.log"; return 1; }
    sql_conninfo="host=$pg_dir port=$pg_port dbname=fuzz user=$pg_superuser application_name=fuzz_sql"
}

# run_target NAME DIR SECONDS [ENV...]: one libFuzzer run, its verdict and its count of executions.
run_target() {
    local name=$1 dir=$2 secs=$3; shift 3
    local corpus crashes=$top/$dir/crashes log=$work/$name.log rc execs args max_len
    if [ "$mode" = long ]; then
        corpus=$top/$dir/build/corpus/$name
        mkdir -p "$corpus"
    else
        corpus=$work/corpus/$name
        mkdir -p "$corpus"
    fi
    cp -n "$top/$dir/corpus/$name"/* "$corpus"/ 2>/dev/null
    mkdir -p "$crashes"
    # the SQL documents may be long enough to pass the extension's length limits (index rows hold ~2.7 kB)
    max_len=4096; [ "$name" = fuzz_sql ] && max_len=8192
    args=(-max_total_time="$secs" -print_final_stats=1 -max_len="$max_len" -timeout=30 -rss_limit_mb=2048
          -artifact_prefix="$crashes/$name-")
    [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
    env "$@" "$top/$dir/build/$name" "${args[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)
    execs=${execs:-0}
    total_execs=$((total_execs + execs))
    summary+=("$(printf '%-18s %12s executions in %4s s' "$name" "$execs" "$secs")")
    if [ "$rc" -eq 0 ] && [ "$execs" -ge "$min_execs" ]; then
        passed=$((passed + 1)); echo "ok - $name: $execs executions in $secs s, no crash"
    else
        failed=$((failed + 1))
        echo "not ok - $name: exit status $rc after $execs executions (at least $min_execs needed)"
        grep -E -A25 'ERROR: AddressSanitizer|runtime error|property violated|fuzz_sql:|ERROR: libFuzzer' "$log" |
            head -n 60
        for f in $(grep -o "Test unit written to [^ ]*" "$log" | awk '{print $NF}'); do
            echo "  reproducer: $f"
            echo "  replay it:  scripts/fuzz.sh replay $name $f"
        done
    fi
}

# replay: run the target once on each file (a reproducer, a corpus entry) and show what it does
if [ "$mode" = replay ]; then
    if [ "$targets" = fuzz_sql ]; then
        start_cluster || fail_setup "the throwaway cluster did not start"
        IWD_FUZZ_CONNINFO="$sql_conninfo" IWD_FUZZ_MEMORY_MB="$sql_memory_mb" regress/fuzz/build/fuzz_sql \
            "${replay_files[@]}"
    else
        "sidecar/fuzz/build/$targets" "${replay_files[@]}"
    fi
    exit
fi

for target in $targets; do
    case "$target" in
        fuzz_sql)
            start_cluster || fail_setup "the throwaway cluster did not start"
            run_target fuzz_sql regress/fuzz "$sql_seconds" IWD_FUZZ_CONNINFO="$sql_conninfo" \
                IWD_FUZZ_MEMORY_MB="$sql_memory_mb"
            alive=$(cluster_client psql -X -At -c 'SELECT 1' "$sql_conninfo" 2>&1)
            crashed=$(grep -cE 'terminated by signal|was terminated by exception|PANIC' "$pg_log")
            if [ "$alive" = 1 ] && [ "$crashed" -eq 0 ]; then
                passed=$((passed + 1)); echo "ok - fuzz_sql: the server is alive and no backend crashed"
            else
                failed=$((failed + 1)); echo "not ok - fuzz_sql: server alive: '$alive', backend crashes: $crashed"
                grep -E -B2 -A5 'terminated by signal|PANIC' "$pg_log" | head -n 40
            fi
            ;;
        *) run_target "$target" sidecar/fuzz "$seconds" ;;
    esac
done

for line in "${summary[@]}"; do echo "  $line"; done
echo "  total              $(printf '%12s' "$total_execs") executions"
summary
