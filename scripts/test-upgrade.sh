#!/usr/bin/env bash
# The upgrade test: a tenant database installed at the previous release (the Makefile's UPGRADE_FROM,
# its install script as released kept in regress/upgrade/) and updated with ALTER EXTENSION iwd UPDATE
# must end up with the same catalog as a fresh install of EXTVERSION, its work intact and usable.
#   1. A throwaway cluster runs the previous release's library (built from its release commit, cached in
#      /tmp/iwd-<version>-<commit>): database A gets the previous release and some work through its
#      SQL API (regress/upgrade/data-<version>.sql).
#   2. The cluster restarts on the installed (current) library with workers: the launcher leaves A alone
#      until it is updated, saying so in the log; A is updated; B gets a fresh install; their catalogs
#      (regress/upgrade/catalog.sql) must be identical, A's work (regress/upgrade/state.sql) unchanged and
#      usable (claim, complete, a Data Mart run), and A served by a worker.
#   3. The comparison must see a difference: database C, a fresh install with one function and one column
#      default altered.
# Needs `make install` first; installs the previous release's script in the extension directory for the
# run. Ends with "upgrade: N passed, M failed".
set -uo pipefail
suite=upgrade
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$iwd_top" || exit 1
from=$(sed -n 's/^UPGRADE_FROM *= *//p' Makefile)
to=$(sed -n 's/^EXTVERSION *= *//p' Makefile)
# the commit that released $from (its install script: regress/upgrade/iwd--$from.sql)
from_commit=e381c4d
extdir=$("$PG_CONFIG" --sharedir)/extension
work=$(work_dir upgrade) || fail_setup "no work directory"
cleanup() {
    cluster_stop immediate
    rm -f "$extdir/iwd--$from.sql" "$extdir/iwd--$from.control"
    rm -rf "$work"
}
trap cleanup EXIT

[ -f "$extdir/iwd--$to.sql" ] && [ -f "$extdir/iwd--$from--$to.sql" ] ||
    fail_setup "iwd $to and its upgrade script are not installed: run make install"
make -s "sql/iwd--$to.sql" "sql/iwd--$from--$to.sql" || fail_setup "the SQL scripts do not build"
for f in iwd--$to.sql iwd--$from--$to.sql; do
    cmp -s "sql/$f" "$extdir/$f" || echo "warning: the installed $f is not this tree's (make install)"
done

# --- the previous release's library --------------------------------------------------------------------
lib_from=/tmp/iwd-$from-$from_commit
if [ ! -f "$lib_from/iwd.so" ]; then
    git cat-file -e "$from_commit^{commit}" 2>/dev/null ||
        fail_setup "commit $from_commit (release $from) is not in this clone: fetch the full history"
    mkdir -p "$work/src-$from" &&
        git archive "$from_commit" Makefile iwd.control extension | tar -x -C "$work/src-$from" ||
        fail_setup "could not extract release $from"
    echo "building the library of release $from ($from_commit)"
    make -C "$work/src-$from" -s PG_CONFIG="$PG_CONFIG" iwd.so >"$work/build-$from.log" 2>&1 ||
        { tail -n 20 "$work/build-$from.log"; fail_setup "the library of release $from does not build"; }
    mkdir -p "$lib_from.new" && cp "$work/src-$from/iwd.so" "$lib_from.new/" && chmod -R a+rX "$lib_from.new" &&
        rm -rf "$lib_from" && mv "$lib_from.new" "$lib_from" || fail_setup "could not keep the library of $from"
fi

# the install script kept in regress/upgrade/ is the one the release built: its Makefile's recipe, sql/iwd.sql
# then the other parts in name order
released_parts=$(git ls-tree --name-only "$from_commit" sql/ | grep -E '^sql/[a-z][^/]*\.sql$' | grep -v '^sql/iwd--' |
                 grep -vx sql/iwd.sql | LC_ALL=C sort)
check "regress/upgrade/iwd--$from.sql is the install script release $from built" "" \
    "$(for f in sql/iwd.sql $released_parts; do git show "$from_commit:$f"; done |
       diff - "regress/upgrade/iwd--$from.sql" | head -n 5)"

# its install script, loading "iwd" through dynamic_library_path (the previous library while it is first
# on the path) instead of $libdir/iwd
cp "regress/upgrade/iwd--$from.sql" "$extdir/iwd--$from.sql" &&
    echo "module_pathname = 'iwd'" >"$extdir/iwd--$from.control" ||
    fail_setup "could not install the scripts of $from in $extdir"

# the cluster's settings per phase (postgresql.conf includes this file)
phase_conf() { printf '%s\n' "$@" >"$pg_data/phase.conf" && chmod 644 "$pg_data/phase.conf"; }
cluster_init "$work/cluster" "include_if_exists 'phase.conf'" || fail_setup "initdb failed"
phase_conf "dynamic_library_path = '$lib_from:\$libdir'" "timezone = 'UTC'"
cluster_start || fail_setup "the cluster did not start on the library of $from"
sql() { local db=$1; shift; cluster_sql -d "$db" "$@"; }

# --- 1. database A at the previous release, with work ----------------------------------------------------
a=iwd_upgrade_a; b=iwd_upgrade_b; c=iwd_upgrade_c
for db in $a $b $c; do cluster_client createdb "$db" || fail_setup "createdb $db failed"; done
check "A: CREATE EXTENSION iwd VERSION '$from' runs on the library of $from" "$from iwd" \
    "$(sql $a -c "CREATE EXTENSION iwd VERSION '$from'" \
              -c "SELECT extversion || ' ' || (SELECT probin FROM pg_proc WHERE oid = 'iwd.now()'::regprocedure)
                  FROM pg_extension WHERE extname = 'iwd'" 2>&1)"
out=$(sql $a -f "regress/upgrade/data-$from.sql" 2>&1)
check "A: the work done through the SQL API of $from (a task in each state)" \
    "t queued queued queued T1-assigned completed rejected queued queued queued queued canceled held t t" \
    "$(tr '\n' ' ' <<<"$out" | sed 's/ $//')"
sql $a -f regress/upgrade/state.sql >"$work/state-before.txt" 2>&1
check "A: its tasks, history, routing keys and Data Mart facts read" "7 tasks, 1 completed per day" \
    "$(grep -c '^task [0-9]' "$work/state-before.txt") tasks, $(sed -n 's/^completed per day //p' \
        "$work/state-before.txt") completed per day"

# --- 2. the current library; A is updated ------------------------------------------------------------------
cluster_stop || fail_setup "the cluster did not stop"
phase_conf "timezone = 'UTC'" "iwd.max_workers = 2" "iwd.scheduler_interval = 200"
log_from=$(wc -l <"$pg_log")
cluster_start || fail_setup "the cluster did not start on the installed library"
check "B: a fresh CREATE EXTENSION iwd installs $to" "$to" \
    "$(sql $b -c "CREATE EXTENSION iwd" -c "SELECT extversion FROM pg_extension WHERE extname = 'iwd'" 2>&1)"
skip_line=""
for _ in $(seq 1 300); do
    skip_line=$(tail -n +"$log_from" "$pg_log" | grep -m1 "database \"$a\" has iwd $from")
    [ -n "$skip_line" ] && break
    sleep 0.1
done
check_match "the launcher leaves A, still at $from, unserved and says so" "not served until ALTER EXTENSION" \
    "${skip_line:-no such log line}" && echo "   $skip_line"
check "no worker failed on A's old schema" "0" "$(sql $b -c "SELECT iwd.worker_stats() ->> 'failures'" 2>&1)"
check "A: ALTER EXTENSION iwd UPDATE TO '$to'" "$to" \
    "$(sql $a -c "ALTER EXTENSION iwd UPDATE TO '$to'" -c "SELECT extversion FROM pg_extension WHERE extname = 'iwd'" \
       2>&1)"

# catalog NAME DB: the catalog of DB in $work/catalog-NAME.txt
catalog() { sql "$2" -f regress/upgrade/catalog.sql >"$work/catalog-$1.txt" 2>&1; }
catalog updated $a; catalog fresh $b
check "the fresh catalog is read ($(grep -c '^function ' "$work/catalog-fresh.txt") functions)" "0" \
    "$(grep -c 'ERROR' "$work/catalog-fresh.txt")"
check "A updated from $from has the catalog of a fresh install of $to" "0" \
    "$(diff "$work/catalog-fresh.txt" "$work/catalog-updated.txt" | grep -c '^[<>]')" ||
    { echo "differences (- fresh install, + updated):"
      diff -u "$work/catalog-fresh.txt" "$work/catalog-updated.txt" | head -n 200; }

sql $a -f regress/upgrade/state.sql >"$work/state-after.txt" 2>&1
check "A: every task, event, routing key and Data Mart fact is kept" "" \
    "$(diff "$work/state-before.txt" "$work/state-after.txt")"
check "A: every routing key names its skills (key=skill/paired with: a pair, single skills, none)" \
    "=-/- claims+invoices=claims/invoices claims:2=claims/- invoices:2=invoices/- invoices:3=invoices/-" \
    "$(sql $a -c "SELECT string_agg(key || '=' || coalesce(skill, '-') || '/' || coalesce(paired_with, '-'), ' '
                                    ORDER BY key) FROM iwd.routing_keys" 2>&1)"
check "A: the queued task is claimed, accepted and completed after the update" "T4-queued completed" \
    "$(sql $a -c "SELECT t.external_id || ' ' || (iwd.complete_task(t.id, 'a1') ->> 'status')
                  FROM (SELECT (iwd.accept_task((iwd.next_task('a1', 60) ->> 'id')::bigint, 'a1') ->> 'id')::bigint
                        AS id) c JOIN iwd.task t ON t.id = c.id" 2>&1)"
check "A: a new task with a pair of skills is captured and claimed" "T8-new a1" \
    "$(sql $a -c "SELECT iwd.create_task('{\"externalId\": \"T8-new\", \"capturePoint\": \"erp\", \"priority\": 99,
                                           \"skills\": {\"invoices\": 1, \"claims\": 2}}') IS NOT NULL" \
              -c "SELECT (r ->> 'externalId') || ' ' || (r ->> 'assignedTo') FROM iwd.next_task('a1', 60) r" \
       2>&1 | tail -n 1)"
check "A: the Data Mart's full chain runs: a fact per task, both completions counted" \
    "8 facts of 8 tasks, 2 completed" \
    "$(sql $a -c "SELECT iwd_dm.run('full') IS NOT NULL" \
              -c "SELECT (SELECT count(*) FROM iwd_dm.task_fact) || ' facts of ' || (SELECT count(*) FROM iwd.task_all)
                         || ' tasks, ' || (SELECT sum(completed) FROM iwd_dm.agg_day) || ' completed'" 2>&1 |
       tail -n 1)"
served=""
for _ in $(seq 1 300); do
    served=$(sql $b -c "SELECT t ->> 'starts' FROM jsonb_array_elements(iwd.worker_stats() -> 'tenants') t
                              WHERE t ->> 'database' = '$a' AND (t ->> 'starts')::int > 0" 2>/dev/null)
    [ -n "$served" ] && break
    sleep 0.1
done
check "A is served by a worker once updated" "1" "$([ -n "$served" ] && echo 1 || echo 0)"
check "no worker failed" "0" "$(sql $b -c "SELECT iwd.worker_stats() ->> 'failures'" 2>&1)"

# --- 3. the comparison sees a difference ------------------------------------------------------------------
sql $c -c "CREATE EXTENSION iwd" -c "ALTER FUNCTION iwd.get_task(bigint) COST 1234" \
    -c "ALTER TABLE iwd.agent ALTER COLUMN name SET DEFAULT 'someone'" >/dev/null 2>&1 ||
    fail_setup "C: the altered fresh install failed"
catalog altered $c
diff "$work/catalog-fresh.txt" "$work/catalog-altered.txt" >"$work/altered.diff"
check "a fresh install with one function altered differs from B in that function" "2" \
    "$(grep -cE '^[<>] function iwd\.get_task\(bigint\) ' "$work/altered.diff")"
check "... and in the column default altered" "1" "$(grep -cE "^> column iwd\.agent #[0-9]+ name .*default 'someone'" \
    "$work/altered.diff")"
summary
