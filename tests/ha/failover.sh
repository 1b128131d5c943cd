#!/usr/bin/env bash
# Automatic failover under load: a pg_auto_failover formation (tests/ha/formation.sh: a monitor, a primary
# and a synchronous standby, iwd preloaded) holds the control database and a tenant's database; the sidecar
# (AddressSanitizer build) reaches both through libpq's multi-host form (target_session_attrs=read-write)
# while 16 REST clients (tests/faults/load.py) create, claim, accept and finish tasks, each logging every
# change it got a 2xx for. Each cycle kills the primary's machine (kill -9 of its keeper, postmaster and
# backends at once), then checks: the standby is promoted; the sidecar answers again (the window is
# reported); every acknowledged change is in place and no task was held by two agents
# (tests/faults/checks.sql); the reservations the dead primary's sessions held come back to the queue; the
# scheduler and the Data Mart run on the new primary and nothing of iwd on the standby; the old primary,
# its keeper restarted, rejoins as the synchronous standby.
# Usage: tests/ha/failover.sh [CYCLES]   (2 by default; make test-ha runs 5)
# Ends with "ha-failover: N passed, M failed".
set -uo pipefail
suite=ha-failover
cycles=${1:-2}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib.sh
. "$here/../../scripts/lib.sh"
top=$iwd_top
work=$(work_dir ha-failover)
# shellcheck source=formation.sh
. "$here/formation.sh"
redis_port=$(free_port); http_port=$(free_port)
admin_key="admin-key-for-failover-tests"
tenant_key="failover-tenant-key-0123456789abcdef"
tenant_db=tenant_ha
base="http://127.0.0.1:$http_port/iwd/v3"
load_pid=""
windows=()

cleanup() {
    [ -n "$load_pid" ] && { touch "$work/stop"; wait "$load_pid" 2>/dev/null; }
    sidecar_stop
    redis_stop
    formation_stop
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

now_ms() { date +%s%3N; }
acks() { cat "$work"/load/ack-*.csv 2>/dev/null | wc -l; }
# on_primary DB SQL...: psql through the multi-host conninfo (the node that accepts writes)
on_primary() {
    local db=$1; shift
    "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 "$(formation_conninfo "$db")" "$@"
}
# poll SECONDS COMMAND...: until COMMAND succeeds
poll() {
    local s=$1; shift
    for _ in $(seq 1 $((s * 5))); do "$@" && return 0; sleep 0.2; done
    return 1
}
tenant_answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $tenant_key" "$base/tasks?limit=1")" = 200 ]; }
writable() { [ "$(node_sql "$1" postgres -c "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool" 2>/dev/null)" = f ]; }
in_recovery() { [ "$(node_sql "$1" postgres -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = t ]; }
iwd_backends() { node_sql "$1" postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'iwd %'" 2>/dev/null; }
tenant_worker_seen() {
    [ "$(node_sql "$1" postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'iwd scheduler'
                                    AND datname = '$tenant_db'" 2>/dev/null)" -gt 0 ]
}
# a chain started on NODE after EPOCH and has not failed since (running or done: under synchronous
# replication a full chain over the load's events can take minutes, each batch waiting for the standby)
datamart_ran_after() { # datamart_ran_after NODE EPOCH
    [ "$(node_sql "$1" "$tenant_db" -c "SELECT coalesce(bool_or(last_start > to_timestamp($2)
                                                       AND (last_fail IS NULL OR last_fail < last_start)), false)
                                        FROM iwd_dm.job_status" 2>/dev/null)" = t ]
}
# no reservation past its deadline by more than the scheduler's interval and a margin for a loaded machine
stale_reservations() {
    on_primary "$tenant_db" -c "SELECT count(*) FROM iwd.task WHERE status = 'assigned' AND accepted_at IS NULL
                                AND reserved_until < now() - interval '10 seconds'" 2>/dev/null
}
rejoined() { # rejoined OLD NEW: the monitor holds OLD for the standby and NEW for the primary, both in place
    [ "$(monitor_sql "SELECT count(*) FROM pgautofailover.node WHERE (nodename, reportedstate, goalstate) IN
                      (('node$1', 'secondary', 'secondary'), ('node$2', 'primary', 'primary'))")" = 2 ]
}
no_stale_reservations() { [ "$(stale_reservations)" = 0 ]; }
synchronous() {
    [ -n "$(node_sql "$1" postgres -c "SELECT sync_state FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')" \
        2>/dev/null)" ]
}

# consistency NAME: tests/faults/checks.sql on the primary against every acknowledged change so far
consistency() {
    local out name n
    cat "$work"/load/ack-*.csv > "$work/acks.csv"
    out=$(on_primary "$tenant_db" -v since_event=0 -v since_ms=0 -f "$top/tests/faults/checks.sql" <"$work/acks.csv" 2>&1)
    if ! grep -q '|' <<<"$out"; then check "$1: the consistency checks ran" "" "$out"; return; fi
    while IFS='|' read -r name n; do check "$1: $name" "0" "$n"; done < <(grep '|' <<<"$out")
    grep '^# ' <<<"$out"
}

# --- the formation, Redis, the sidecar, the tenant -----------------------------------------------------
flock /tmp/iwd-sidecar-build.lock make -s -C "$top/sidecar" asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"
formation_start "iwd.scheduler_interval = 100ms
iwd_dm.schedule = '* * * * *'
iwd_dm.batch_size = 200" || fail_setup "the pg_auto_failover formation did not start"
check "the formation: a primary and a synchronous standby" "yes" "$(poll 60 synchronous 1 && echo yes)"
on_primary postgres -c "CREATE DATABASE control" -c "CREATE DATABASE $tenant_db" || fail_setup "createdb failed"
redis_start "$work" "redis-secret-for-failover-tests" || fail_setup "redis-server did not start"
sidecar_launch "$work/sidecar.log" "$base/health/live" \
    env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY="$admin_key" \
    IWD_SECRET_KEY="server-secret-for-failover-tests-0123456789" IWD_CONTROL_DB="$(formation_conninfo control)" \
    IWD_REDIS_NODES="redis://127.0.0.1:$redis_port" IWD_REDIS_PASSWORD="$redis_password" IWD_THREADS=2 \
    IWD_METRICS_LISTEN=127.0.0.1 IWD_METRICS_PORT="$(free_port)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    "${IWD_SIDECAR_BIN:-$top/sidecar/iwd-sidecar-asan}" || fail_setup "the sidecar did not start"
provisioning=$(jq -n --arg h "$(formation_hosts)" --arg d "$tenant_db" --arg k "$tenant_key" \
    '{tenant: {id: "ha", name: "Tenant ha", ccid: "ha"},
      iwd: {url: "http://iwd", db: {host: $h, database: $d, user: "postgres", ssl: false},
            apiKeys: {IWD_APIKEY_TENANT: $k}}}')
# admin ARGS...: curl with the admin key and a JSON body; prints the status, the answer in $work/body
admin() { curl -s -o "$work/body" -w '%{http_code}' -H "x-api-key: $admin_key" -H 'content-type: application/json' "$@"; }
check "the tenant provisioned with both nodes as its database hosts" "200" \
    "$(admin --data-binary "$provisioning" "$base/provisioning")" || cat "$work/body"
bad=$(jq '.iwd.db.host = "127.0.0.1:5432,127.0.0.1:99999"' <<<"$provisioning")
check "a host list with a bad port is refused" "400" "$(admin --data-binary "$bad" "$base/provisioning")"
check_match "and the error names it" "iwd.db.host: the port of entry 2" "$(jq -r .status.message "$work/body")"
poll 30 tenant_answers || fail_setup "the sidecar does not serve the tenant"

mkdir -p "$work/load"
/usr/bin/python3 "$top/tests/faults/load.py" --base "$base" --key "$tenant_key" --dsn "$(formation_conninfo "$tenant_db")" \
    --rest-clients 16 --sql-clients 0 --seconds 3600 --log-dir "$work/load" --stop-file "$work/stop" \
    >"$work/load.log" 2>&1 &
load_pid=$!
# acked_beyond N: more than N changes acknowledged
acked_beyond() { [ "$(acks)" -gt "$1" ]; }
check "the load runs (16 REST clients acknowledge changes)" "yes" "$(poll 60 acked_beyond 200 && echo yes)"

# --- the cycles ------------------------------------------------------------------------------------------
for cycle in $(seq 1 "$cycles"); do
    old=$(primary_node)
    [ "$old" = 1 ] || [ "$old" = 2 ] || { check "cycle $cycle: a primary to kill" "1 or 2" "'$old'"; break; }
    new=$((3 - old))
    echo "# $(date -u +%H:%M:%S) cycle $cycle of $cycles: node$old is the primary, $(acks) changes acknowledged"
    check "cycle $cycle: the primary has a synchronous standby before the kill" "yes" \
        "$(poll 120 synchronous "$old" && echo yes)"
    node_kill "$old" || check "cycle $cycle: every process of node$old is gone" "yes" "no"
    t0=$killed_ms
    acked_at_kill=$(acks)
    check "cycle $cycle: node$new is promoted (accepts writes)" "yes" "$(poll 180 writable "$new" && echo yes)"
    t_promoted=$(now_ms)
    poll 120 tenant_answers
    t_answer=$(now_ms)
    check "cycle $cycle: the sidecar serves the tenant again" "yes" "$(tenant_answers && echo yes)"
    check "cycle $cycle: the clients' changes are acknowledged again" "yes" \
        "$(poll 120 acked_beyond $((acked_at_kill + 50)) && echo yes)"
    windows+=($((t_answer - t0)))
    echo "# cycle $cycle: promoted $((t_promoted - t0)) ms after the kill, the sidecar answered after $((t_answer - t0)) ms"

    check "cycle $cycle: the new primary runs the tenant's scheduler worker" "yes" \
        "$(poll 60 tenant_worker_seen "$new" && echo yes)"
    check "cycle $cycle: the reservations of the dead primary's sessions come back to the queue" "0" \
        "$(poll 90 no_stale_reservations; stale_reservations)"

    node_run "node$old"
    check "cycle $cycle: node$old rejoins as the standby" "node$old=secondary/secondary in recovery" \
        "$(poll 300 rejoined "$old" "$new"; echo "$(node_states | grep -o "node$old=[a-z_/]*")" \
           "$(in_recovery "$old" && echo in recovery)")"
    check "cycle $cycle: replication to node$old is synchronous again" "yes" "$(poll 120 synchronous "$new" && echo yes)"
    check "cycle $cycle: a Data Mart chain starts on the new primary and does not fail (every minute)" "yes" \
        "$(poll 150 datamart_ran_after "$new" "$((t0 / 1000))" && echo yes)"
    seen=0
    for _ in $(seq 1 20); do
        n=$(iwd_backends "$old"); [ "$n" = 0 ] || { seen=$n; break; }; sleep 0.1
    done
    check "cycle $cycle: the standby node$old runs no iwd worker" "0" "$seen"
    consistency "cycle $cycle"
done

# --- the end ---------------------------------------------------------------------------------------------
touch "$work/stop"; wait "$load_pid"; load_pid=""
check "the load ran to its end without an exception" "" "$(grep -m1 -E 'Traceback|Error' "$work/load.log")"
consistency "the end"
kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; sidecar_pid=""
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "0" \
    "$(grep -c -E 'AddressSanitizer|runtime error' "$work/sidecar.log")"
codes=$(cat "$work"/load/summary-*.json 2>/dev/null | jq -s -r 'map(.codes) | reduce .[] as $c ({};
    reduce ($c | to_entries[]) as $e (.; .[$e.key] += $e.value)) | to_entries | map("\(.key): \(.value)") | join(", ")')
sorted=$(printf '%s\n' "${windows[@]}" | sort -n | tr '\n' ' ')
echo "# failover windows (kill to the sidecar's next 200), ms, sorted: $sorted"
echo "# $(acks) acknowledged changes over $cycles cycles; answers seen by the clients: $codes"
summary
