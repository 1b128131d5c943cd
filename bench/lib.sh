# Shared by the benchmark scripts: a throwaway PostgreSQL cluster that preloads iwd.
#   start_cluster NAME PORT [postgresql.conf lines...]
# sets $work (the cluster's directory, also its socket directory, removed on exit), $bindir and
# $as_user, copies bench/core/*.sql into $work, and creates the database "bench".
# sql ARGS... runs psql on it (unaligned, tuples only, stop on error).

# The settings of the claim benchmarks (matrix, targets, soak): one tenant database served by the
# scheduler worker, its Data Mart schedule suspended (the Data Mart has its own benchmark).
bench_settings=("iwd.databases = 'bench'" "iwd_dm.suspend = on" "shared_buffers = 512MB" "max_wal_size = 4GB"
                "checkpoint_timeout = 15min")

start_cluster() {
    local name=$1 port=$2; shift 2
    bindir=$(/usr/lib/postgresql/15/bin/pg_config --bindir)
    bench_port=$port
    work=$(mktemp -d "/tmp/iwd-bench-$name.XXXXXX")
    chmod 755 "$work"
    cp bench/core/*.sql "$work/"
    chmod 644 "$work"/*.sql
    as_user=()
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$work"
        as_user=(runuser -u postgres --)
    fi
    trap 'stop_cluster' EXIT
    "${as_user[@]}" "$bindir/initdb" -D "$work/data" -A trust >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$work'"
        echo "shared_preload_libraries = 'iwd'"
        printf '%s\n' "$@"
    } >> "$work/data/postgresql.conf"
    "${as_user[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
    "${as_user[@]}" "$bindir/createdb" -h "$work" -p "$port" bench
}

stop_cluster() {
    [ -n "${sidecar_pid:-}" ] && kill "$sidecar_pid" 2>/dev/null
    "${as_user[@]}" "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$work"
}

sql() { "${as_user[@]}" "$bindir/psql" -X -q -At -h "$work" -p "$bench_port" -v ON_ERROR_STOP=1 -d bench "$@"; }

median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# min_med_max VALUES...: "min / median / max" of a list of numbers
min_med_max() {
    printf '%s / %s / %s' "$(printf '%s\n' "$@" | sort -n | head -1)" "$(printf '%s\n' "$@" | median)" \
        "$(printf '%s\n' "$@" | sort -n | tail -1)"
}
