# shellcheck shell=bash disable=SC2034 # (its variables are for the benchmarks)
# Shared by the benchmark scripts: a throwaway PostgreSQL cluster that preloads iwd, from scripts/lib.sh.
#   start_cluster NAME PORT [postgresql.conf lines...]
# sets $work (the cluster's directory, also its socket directory, removed on exit; PORT empty: a free
# port), copies bench/core/*.sql into $work, and creates the database "bench".
# sql ARGS... runs psql on it (unaligned, tuples only, stop on error). The benchmarks' own client
# programs run as "${as_user[@]}" "$bindir/PROGRAM" -h "$work" -p PORT: as the invoking user, logged in
# as the cluster's superuser.

# shellcheck source=../scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
as_user=("${as_client[@]}")

# The settings of the claim benchmarks (matrix, targets, soak): one tenant database served by the
# scheduler worker, its Data Mart schedule suspended (the Data Mart has its own benchmark).
bench_settings=("iwd.databases = 'bench'" "iwd_dm.suspend = on" "shared_buffers = 512MB" "max_wal_size = 4GB"
                "checkpoint_timeout = 15min")

start_cluster() {
    local name=$1
    pg_port=$2
    shift 2
    work=$(work_dir "bench-$name")
    trap 'stop_cluster' EXIT
    cluster_init "$work" "$(printf '%s\n' "$@")" || exit 1
    bench_port=$pg_port
    cp bench/core/*.sql "$work/"
    chmod 644 "$work"/*.sql
    cluster_start || exit 1
    cluster_client createdb bench
}

stop_cluster() {
    sidecar_stop
    cluster_stop fast
    rm -rf "$work"
}

sql() { cluster_sql -d bench "$@"; }

median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# min_med_max VALUES...: "min / median / max" of a list of numbers
min_med_max() {
    printf '%s / %s / %s' "$(printf '%s\n' "$@" | sort -n | head -1)" "$(printf '%s\n' "$@" | median)" \
        "$(printf '%s\n' "$@" | sort -n | tail -1)"
}
