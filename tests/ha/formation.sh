# shellcheck shell=bash disable=SC2034,SC2154 # (its variables are for the suites, $work theirs)
# A pg_auto_failover formation on this machine for the HA suites (sourced, not run): a monitor, then a
# primary and a synchronous standby of PostgreSQL 15 preloading iwd, each node a "pg_autoctl run" of its
# own (its keeper restarts and reconfigures PostgreSQL as the monitor assigns), on free loopback ports,
# as the postgres user, with pg_autoctl's files under $work/xdg. The caller sets $work (work_dir) and
# calls formation_stop from its EXIT trap: every process of the formation ends, even after a failure.
#
# Timeouts: pg_auto_failover's defaults take a dead primary for failed after 20 s without contact and
# then wait primary_demote_timeout (30 s) before the standby accepts writes, so that a primary cut off
# from the network has demoted itself first. Unless IWD_HA_DEFAULT_TIMEOUTS is set, the formation
# shortens both, consistently: the keepers demote themselves after 5 s without the monitor or a standby
# (network_partition_timeout), the monitor checks every second and promotes 10 s after it lost a primary.

monitor_port=$(free_port); node_ports=([1]=$(free_port) [2]=$(free_port))
formation_db=postgres

autoctl() {
    as_postgres env XDG_CONFIG_HOME="$work/xdg/config" XDG_DATA_HOME="$work/xdg/data" \
        XDG_RUNTIME_DIR="$work/xdg/run" PG_CONFIG="$PG_CONFIG" pg_autoctl "$@"
}
# monitor_sql SQL: a query on the monitor's database as the superuser
monitor_sql() { "$bindir/psql" -X -q -At -h 127.0.0.1 -p "$monitor_port" -U "$pg_superuser" -d pg_auto_failover -c "$1"; }
# node_sql N DB SQL...: psql on node N (1 or 2) directly
node_sql() {
    local n=$1 db=$2; shift 2
    "$bindir/psql" -X -q -At -h 127.0.0.1 -p "${node_ports[$n]}" -U "$pg_superuser" -d "$db" "$@"
}
# the conninfo of the formation's read-write node (libpq's multi-host form, as the sidecar uses it)
formation_conninfo() {
    echo "host=127.0.0.1,127.0.0.1 port=${node_ports[1]},${node_ports[2]} user=$pg_superuser dbname=$1 \
target_session_attrs=read-write connect_timeout=5"
}
# the formation's nodes as provisioning's iwd.db.host lists them
formation_hosts() { echo "127.0.0.1:${node_ports[1]},127.0.0.1:${node_ports[2]}"; }

# formation_pids NAME: the processes of a node: its "pg_autoctl run" and everything it started, and every
# process working in its data directory (PostgreSQL's: the postmaster, its backends and workers, and a
# backend forked just before its postmaster was killed, which no longer has that parent). One scan of /proc
# by one program: a process per entry would take seconds on a loaded machine.
formation_pids() {
    python3 - "$work/$1" <<'PY'
import os, sys
node = sys.argv[1]
parent, roots = {}, set()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open("/proc/%s/stat" % pid) as f:
            parent[pid] = f.read().rsplit(")", 1)[1].split()[1]
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            args = f.read().split(b"\0")
        if args[:4] == [b"pg_autoctl", b"run", b"--pgdata", node.encode()] or os.readlink("/proc/%s/cwd" % pid) == node:
            roots.add(pid)
    except OSError:
        pass
found, grew = set(roots), True
while grew:
    more = {p for p, pp in parent.items() if pp in found} - found
    found |= more
    grew = bool(more)
print("\n".join(sorted(found, key=int)))
PY
}

# node_run NAME: the node's pg_autoctl run in the background (its log appended to $work/NAME.log)
node_run() {
    as_postgres env XDG_CONFIG_HOME="$work/xdg/config" XDG_DATA_HOME="$work/xdg/data" \
        XDG_RUNTIME_DIR="$work/xdg/run" PG_CONFIG="$PG_CONFIG" \
        setsid pg_autoctl run --pgdata "$work/$1" >>"$work/$1.log" 2>&1 </dev/null &
}

# node_states: "node1=<reported>/<assigned> node2=..." from the monitor
node_states() {
    monitor_sql "SELECT string_agg(nodename || '=' || reportedstate || '/' || goalstate, ' ' ORDER BY nodename)
                 FROM pgautofailover.node" 2>/dev/null
}
# wait_states STATES SECONDS: until node_states prints STATES
wait_states() {
    for _ in $(seq 1 $(($2 * 5))); do
        [ "$(node_states)" = "$1" ] && return 0
        sleep 0.2
    done
    return 1
}
# primary_node: the number of the node the monitor holds for the primary (primary or wait_primary)
primary_node() {
    monitor_sql "SELECT substr(nodename, 5) FROM pgautofailover.node
                 WHERE reportedstate IN ('primary', 'wait_primary') AND goalstate IN ('primary', 'wait_primary')"
}

# node_create N CONF: node N's data directory (initdb preloading iwd, then CONF), registered with the
# monitor: the first becomes the primary, the second its standby (pg_basebackup of the primary's data
# directory, the settings included)
node_create() {
    local n=$1 pgdata=$work/node$1
    if [ "$n" = 1 ]; then
        as_postgres "$bindir/initdb" -D "$pgdata" -A trust -U "$pg_superuser" >"$work/initdb.log" 2>&1 ||
            { cat "$work/initdb.log"; return 1; }
    fi
    autoctl create postgres --pgdata "$pgdata" --pgport "${node_ports[$n]}" --pgctl "$bindir/pg_ctl" \
        --hostname 127.0.0.1 --listen 127.0.0.1 --name "node$n" --auth trust --no-ssl --dbname "$formation_db" \
        --monitor "postgres://autoctl_node@127.0.0.1:$monitor_port/pg_auto_failover" >>"$work/node$n.log" 2>&1 ||
        { tail -n 20 "$work/node$n.log"; return 1; }
    [ -z "${IWD_HA_DEFAULT_TIMEOUTS:-}" ] &&
        { autoctl config set --pgdata "$pgdata" timeout.network_partition_timeout 5 >/dev/null || return 1; }
    if [ "$n" = 1 ]; then
        # after pg_auto_failover's settings (the include on the first line): iwd preloaded beside its
        # pg_stat_statements, and sizes for a shared test machine rather than its tuning for this one
        cat >>"$pgdata/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_stat_statements,iwd'
shared_buffers = '128MB'
wal_keep_size = '256MB'
max_connections = 200
log_min_messages = warning
# a node pg_rewind cannot bring back is copied again by pg_basebackup, which waits for a spread checkpoint
# (0.9 of checkpoint_timeout: 4.5 minutes with the default)
checkpoint_timeout = '30s'
$2
CONF
    fi
}

# formation_start CONF: the monitor, the primary and its synchronous standby, all running; CONF is
# appended to the nodes' postgresql.conf
formation_start() {
    owned_by_postgres "$work" "$work/xdg" "$work/xdg/config" "$work/xdg/data" "$work/xdg/run" || return 1
    chmod 700 "$work/xdg/run"
    autoctl create monitor --pgdata "$work/monitor" --pgport "$monitor_port" --pgctl "$bindir/pg_ctl" \
        --hostname 127.0.0.1 --auth trust --no-ssl >>"$work/monitor.log" 2>&1 || { tail -n 20 "$work/monitor.log"; return 1; }
    # the loopback only (create monitor has no --listen; its default is every address)
    autoctl config set --pgdata "$work/monitor" postgresql.listen_addresses 127.0.0.1 >/dev/null || return 1
    node_run monitor
    for _ in $(seq 1 300); do monitor_sql "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
    if [ -z "${IWD_HA_DEFAULT_TIMEOUTS:-}" ]; then
        monitor_sql "ALTER SYSTEM SET pgautofailover.health_check_period = 1000" >/dev/null &&
        monitor_sql "ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 1000" >/dev/null &&
        monitor_sql "ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000" >/dev/null &&
        monitor_sql "ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 5000" >/dev/null &&
        monitor_sql "ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 10000" >/dev/null &&
        monitor_sql "SELECT pg_reload_conf()" >/dev/null || return 1
    fi
    node_create 1 "$1" || return 1
    node_run node1
    wait_states "node1=single/single" 120 || { echo "node1 did not start: $(node_states)"; return 1; }
    node_create 2 || return 1
    node_run node2
    wait_states "node1=primary/primary node2=secondary/secondary" 180 ||
        { echo "the standby did not join: $(node_states)"; return 1; }
}

# node_kill N: kill -9 of every process of node N (its keeper too: the machine is gone), again until none
# is left (at most 30 s); $killed_ms: when the first signals were sent (epoch ms)
node_kill() {
    local pids
    killed_ms=""
    for _ in $(seq 1 60); do
        pids=$(formation_pids "node$1")
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null
        [ -n "$killed_ms" ] || killed_ms=$(date +%s%3N)
        sleep 0.5
    done
    return 1
}

# formation_stop: every node stopped, then whatever of the formation still runs killed
formation_stop() {
    local name pids
    for name in node1 node2 monitor; do
        [ -d "$work/$name" ] && timeout 30 autoctl stop --pgdata "$work/$name" --immediate >/dev/null 2>&1
    done
    sleep 1
    for name in node1 node2 monitor; do
        pids=$(formation_pids "$name")
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    done
    return 0
}
