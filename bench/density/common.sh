# Helpers of the density benchmarks (run.sh, busy.sh, builds.sh, sidecar.sh), sourced after bench/lib.sh's
# start_cluster: q runs psql on the benchmark's cluster, tenant names the i-th tenant database, cpu_ticks
# reads the cluster's CPU time.
# shellcheck shell=bash
q() { "${as_user[@]}" "$bindir/psql" -X -q -At -h "$work" -p "$bench_port" -v ON_ERROR_STOP=1 "$@"; }
tenant() { printf 't%03d\n' "$1"; }
# cpu_ticks: CPU time (clock ticks) of the postmaster and every child alive, plus what the postmaster
# collected from the children that exited (the short-lived workers, the psql sessions' backends)
cpu_ticks() {
    local total pid postmaster
    postmaster=$(head -1 "$work/data/postmaster.pid")
    total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat")
    for pid in $(pgrep -P "$postmaster"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
