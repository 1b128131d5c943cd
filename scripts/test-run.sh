#!/usr/bin/env bash
# make run from a checkout the postgres user cannot enter (as a newcomer's clone under /root is): a copy of
# this checkout as built (without .git, .iwd and .tools) in a fresh 0700 directory under /tmp; scripts/run.sh start there, on free ports, must start the cluster (as root: kept under
# /var/lib/iwd/, linked from .iwd/cluster), load the demo and serve it over SQL and REST; stop must stop
# it, a second start must find the same cluster and demo again, remove must delete them.
# Ends with "run: N passed, M failed".
set -uo pipefail
suite=run
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
work=$(mktemp -d /tmp/iwd-run-test.XXXXXX) || fail_setup "no work directory"   # mode 0700: postgres stays out
checkout="$work/iwd"
export IWD_PG_PORT IWD_PORT IWD_METRICS_PORT
IWD_PG_PORT=$(free_port); IWD_PORT=$(free_port); IWD_METRICS_PORT=$(free_port)
cleanup() {
    [ -x "$checkout/scripts/run.sh" ] && "$checkout/scripts/run.sh" remove >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

# run.sh ARGS...: the copy's scripts/run.sh, its output in $work/run.log
run() { "$checkout/scripts/run.sh" "$@" >"$work/run.log" 2>&1; }
demo_tasks() { cluster_sql -d iwd_demo -c "SELECT count(*) FROM iwd.task_all WHERE external_id LIKE 'DEMO-%'" 2>&1; }
rest_status() {
    curl -s -o /dev/null -w '%{http_code}' -H 'x-api-key: demo-tenant-api-key' \
        "http://127.0.0.1:$IWD_PORT/iwd/v3/tasks?limit=1"
}

mkdir "$checkout"
tar -C "$iwd_top" --exclude=./.git --exclude=./.iwd --exclude=./.tools -cf - . | tar -C "$checkout" -xf - ||
    fail_setup "cannot copy the checkout"
ls "$checkout"/sql/iwd--*.sql >/dev/null 2>&1 || fail_setup "the install script is not built: run make first"
sidecar=no
[ -x "$checkout/sidecar/iwd-sidecar" ] && sidecar=yes
if [ "$(id -u)" -eq 0 ]; then
    check "the postgres user cannot enter the copy" "denied" \
        "$(runuser -u postgres -- test -x "$checkout" 2>/dev/null && echo entered || echo denied)"
fi

run start
check "scripts/run.sh start succeeds" "0" "$?" || cat "$work/run.log"
pg_dir=$(readlink -f "$checkout/.iwd/cluster")
pg_port=$IWD_PG_PORT   # (for cluster_sql)
if [ "$(id -u)" -eq 0 ]; then
    check_match "as root the cluster lives under /var/lib/iwd/, linked from .iwd/cluster" \
        "^/var/lib/iwd/iwd-[0-9a-f]{8}$" "$pg_dir"
    check "owned by postgres" "postgres" "$(stat -c %U "$pg_dir/data")"
else
    check "the cluster lives in .iwd/cluster" "$checkout/.iwd/cluster" "$pg_dir"
fi
check "the demo is loaded" "10000" "$(demo_tasks)"
check "the demo's queue is served" "t" \
    "$(cluster_sql -d iwd_demo -c "SELECT count(*) = 10 FROM iwd.queue('{}', 10)" 2>&1)"
if [ "$sidecar" = yes ]; then
    check "the sidecar serves the demo tenant" "200" "$(rest_status)"
    check "the server secret is kept in .iwd/, for the invoking user only" "600" \
        "$(stat -c %a "$checkout/.iwd/secret-key")"
fi

run stop
check "scripts/run.sh stop succeeds" "0" "$?" || cat "$work/run.log"
check "the cluster is stopped" "no" "$([ -f "$pg_dir/data/postmaster.pid" ] && echo yes || echo no)"
[ "$sidecar" = yes ] && check "the sidecar is stopped" "000" "$(rest_status)"

run start
check "a second start succeeds" "0" "$?" || cat "$work/run.log"
check "it finds the same cluster and demo (nothing is loaded again)" "0 10000" \
    "$(grep -c 'Loading the demo' "$work/run.log") $(demo_tasks)"
[ "$sidecar" = yes ] && check "the sidecar serves the demo tenant again" "200" "$(rest_status)"

run remove
check "scripts/run.sh remove succeeds" "0" "$?" || cat "$work/run.log"
check "the cluster and .iwd/ are deleted" "no no" \
    "$([ -e "$pg_dir" ] && echo yes || echo no) $([ -e "$checkout/.iwd" ] && echo yes || echo no)"
summary
