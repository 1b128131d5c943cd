#!/usr/bin/env bash
# The cost of the event outbox (sql/events.sql) on capture and on claim + complete: the same workloads with
# the outbox trigger on iwd.task_event enabled and disabled, alternating within each run, on one server
# whose scheduler worker publishes the outbox to the event feed (no webhooks). pgbench -M prepared,
# IWD_BENCH_OUTBOX_CLIENTS ("1 16") clients, IWD_BENCH_OUTBOX_RUNS (7) runs of IWD_BENCH_OUTBOX_SECONDS (3) s
# per cell; the queue is topped up to 10k tasks before every claim run. Prints a markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
clients_list=${IWD_BENCH_OUTBOX_CLIENTS:-"1 16"}
runs=${IWD_BENCH_OUTBOX_RUNS:-7}
seconds=${IWD_BENCH_OUTBOX_SECONDS:-3}
# shellcheck source=bench/lib.sh
. bench/lib.sh
start_cluster outbox "${IWD_BENCH_OUTBOX_PORT:-}" "${bench_settings[@]}" "max_connections = 100"
sql -f "$work/setup.sql" >/dev/null
sql -c "SELECT bench_queue_fill(10000)" -c "VACUUM ANALYZE" >/dev/null
out=$(mktemp -d /tmp/iwd-outbox-results.XXXXXX)
trap 'stop_cluster; rm -rf "$out"' EXIT

# outbox MODE: the outbox trigger on (enable) or off (disable)
outbox() { sql -c "ALTER TABLE iwd.task_event ${1^^} TRIGGER task_event_outbox" >/dev/null; }
# pgbench_tps SCRIPT CLIENTS: transactions per second of one run
pgbench_tps() {
    cluster_client pgbench -n -M prepared -c "$2" -j 2 -T "$seconds" -f "$work/$1" bench > "$out/pgbench.log" 2>&1
    sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$out/pgbench.log" | awk '{printf "%.0f\n", $1}'
}

: > "$out/results.tsv"
for r in $(seq 1 "$runs"); do
    for clients in $clients_list; do
        # odd runs measure without the outbox first, even runs with it first
        modes="disable enable"; [ $((r % 2)) -eq 0 ] && modes="enable disable"
        for mode in $modes; do
            outbox "$mode"
            capture=$(pgbench_tps create_one.sql "$clients")
            sql -c "CALL bench_queue_topup(10000)" >/dev/null
            claim=$(pgbench_tps claim_complete.sql "$clients")
            echo -e "$clients\t$mode\t$r\t$capture\t$claim" >> "$out/results.tsv"
            echo "outbox bench: run $r, $clients clients, outbox ${mode}d: capture $capture/s," \
                 "claim + complete $claim/s" >&2
        done
    done
done
published=$(sql -c "SELECT count(*) FROM iwd.event_feed")
waiting=$(sql -c "SELECT count(*) FROM iwd.event_outbox")

# column COLUMN CLIENTS MODE: the values of one cell, one per line
column() { awk -v k="$1" -v c="$2" -v m="$3" '$1 == c && $2 == m {print $k}' "$out/results.tsv"; }
echo "$runs runs of $seconds s per cell, pgbench \`-M prepared -j 2\`; the outbox off then on in odd runs, on then off"
echo "in even runs."
echo "Capture: \`iwd.create_task\`, one task per transaction (bench/core/create_one.sql). Claim + complete:"
echo "one \`iwd.next_task\` and one \`iwd.complete_task\` transaction per cycle (bench/core/claim_complete.sql),"
echo "10k queued."
echo "With the outbox on, the scheduler worker published $published events to the feed during the runs"
echo "($waiting still waiting at the end)."
echo
echo "| workload | clients | outbox off: min / median / max per s | outbox on: min / median / max per s |"
echo "|---|---:|---:|---:|"
for clients in $clients_list; do
    for k in 4 5; do
        name=$([ "$k" = 4 ] && echo "capture (tasks/s)" || echo "claim + complete (cycles/s)")
        # shellcheck disable=SC2046
        echo "| $name | $clients | $(min_med_max $(column "$k" "$clients" disable)) |" \
             "$(min_med_max $(column "$k" "$clients" enable)) |"
    done
done
echo
echo "| ratio on / off | clients | of the medians | run by run |"
echo "|---|---:|---:|---:|"
for clients in $clients_list; do
    for k in 4 5; do
        name=$([ "$k" = 4 ] && echo "capture" || echo "claim + complete")
        off=$(column "$k" "$clients" disable | median); on=$(column "$k" "$clients" enable | median)
        by_run=$(paste <(column "$k" "$clients" enable) <(column "$k" "$clients" disable) |
                 awk '{printf "%.2f ", $1 / $2}')
        echo "| $name | $clients | $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.2f", a / b}') | ${by_run% } |"
    done
done
