#!/usr/bin/env bash
# make bench: the performance suite. Starts its own PostgreSQL clusters and measures claim + complete
# (iwd.next_task then iwd.complete_task, two transactions) with pgbench at 1, 4 and 16 clients over
# backlogs of 10k and 100k queued tasks, then the sidecar (bench/sidecar/run.sh), the event outbox's cost
# (bench/outbox/run.sh), the targets against their references at 1M queued (bench/targets.sh) and the Data
# Mart (bench/datamart/run.sh); writes
# bench/RESULTS.md, with the last soak run (bench/soak-results.md, make bench-soak) and the analysis
# (bench/analysis.md) appended. Prints how long each section and the whole took (also in RESULTS.md).
# Environment: IWD_BENCH_BACKLOGS ("10000 100000"), IWD_BENCH_CLIENTS ("1 4 16"),
#              IWD_BENCH_SECONDS (2), IWD_BENCH_RUNS (3), IWD_BENCH_PORT (54340) for that matrix;
#              IWD_BENCH_SIDECAR_RUNS (3), IWD_BENCH_SIDECAR_SECONDS (5) for the sidecar; IWD_BENCH_OUTBOX_RUNS
#              (3 here) for the outbox; bench/outbox/run.sh, bench/targets.sh and bench/datamart/run.sh read
#              their own others.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
port=${IWD_BENCH_PORT:-54340}
backlogs=${IWD_BENCH_BACKLOGS:-"10000 100000"}
clients_list=${IWD_BENCH_CLIENTS:-"1 4 16"}
seconds=${IWD_BENCH_SECONDS:-2}
runs=${IWD_BENCH_RUNS:-3}
out="$top/bench/out"
mkdir -p "$out"
. bench/lib.sh
bench_t0=$(date +%s)
: > "$out/timing.tsv"
lap() { # lap NAME: records the seconds since the previous lap (or the start) under NAME
    local now
    now=$(date +%s)
    echo -e "$1\t$((now - ${lap_t:-$bench_t0}))" >> "$out/timing.tsv"
    echo "bench: $1 took $((now - ${lap_t:-$bench_t0})) s" >&2
    lap_t=$now
}
start_cluster claim "$port" "${bench_settings[@]}" "max_connections = 100"
settings="shared_buffers=512MB, max_wal_size=4GB, checkpoint_timeout=15min, synchronous_commit=on, fsync=on, the scheduler worker running (the Data Mart schedule suspended except in the soak)"
sql -f "$work/setup.sql" >/dev/null


results="$out/claim.tsv"
: > "$results"
for backlog in $backlogs; do
    echo "bench: filling the queue to $backlog tasks..."
    start=$(date +%s.%N)
    sql -c "SELECT bench_queue_fill($backlog)" >/dev/null
    fill_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
    echo -e "fill\t$backlog\t0\t$fill_s" >> "$results"
    sql -c "VACUUM ANALYZE" >/dev/null
    for clients in $clients_list; do
        rates=()
        for r in $(seq 1 "$runs"); do
            sql -c "SELECT bench_queue_fill($backlog)" >/dev/null
            "${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -n -M prepared -c "$clients" -j 2 \
                -T "$seconds" -f "$work/claim_complete.sql" bench > "$out/pgbench-$backlog-$clients-$r.log" 2>&1
            tps=$(grep -E '^tps = ' "$out/pgbench-$backlog-$clients-$r.log" | sed -E 's/tps = ([0-9.]+).*/\1/')
            lat=$(grep -E '^latency average' "$out/pgbench-$backlog-$clients-$r.log" | sed -E 's/.*= ([0-9.]+) ms/\1/')
            echo -e "run\t$backlog\t$clients\t$tps\t$lat" >> "$results"
            rates+=("$tps")
            echo "bench: backlog $backlog, $clients clients, run $r: $tps cycles/s (latency $lat ms)"
        done
    done
done
lap "claim matrix"

{
    echo "# Benchmark results"
    echo
    echo "Written by \`make bench\` (bench/run.sh) on $(date -u +%Y-%m-%d). Machine: $(nproc) CPUs"\
         "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"\
         "$(free -g | awk '/Mem:/ {print $2}') GB RAM; $("$bindir/postgres" --version)."
    echo "Settings: $settings. The claim matrix below is $runs runs of $seconds s per cell (a survey of backlogs and"
    echo "clients; the targets section measures the protocol of each target against its references);"
    echo "the machine is shared, so compare figures of one run of the script, not across runs."
    echo
    echo "## Claim + complete"
    echo
    echo "One cycle = \`iwd.next_task(agent)\` then \`iwd.complete_task(id, agent)\`, two transactions, pgbench"
    echo "\`-M prepared -j 2\`, 500 ready agents picked at random (1-5 skills each, levels 1-10), tasks needing"
    echo "1-2 of 50 skills, 20 categories, 10 % due within the hour. Before each run the queue is topped up to"
    echo "the backlog size through \`iwd.create_tasks\`. The 1M backlog is measured under Targets."
    echo
    echo "| backlog (queued tasks) | clients | cycles/s (median) | min | max | latency ms (median) |"
    echo "|---:|---:|---:|---:|---:|---:|"
    for backlog in $backlogs; do
        for clients in $clients_list; do
            vals=$(awk -v b="$backlog" -v c="$clients" '$1 == "run" && $2 == b && $3 == c {print $4}' "$results")
            lats=$(awk -v b="$backlog" -v c="$clients" '$1 == "run" && $2 == b && $3 == c {print $5}' "$results")
            printf '| %s | %s | %.0f | %.0f | %.0f | %.2f |\n' "$backlog" "$clients" \
                "$(echo "$vals" | median)" "$(echo "$vals" | sort -n | head -1)" "$(echo "$vals" | sort -n | tail -1)" \
                "$(echo "$lats" | median)"
        done
    done
    echo
    echo "## Capture"
    echo
    echo "| backlog filled | seconds | tasks/s |"
    echo "|---:|---:|---:|"
    awk '$1 == "fill" {printf "| %d | %.1f | %.0f |\n", $2, $4, $2 / $4}' "$results"
    echo
    echo "## Sidecar"
    echo
    echo "wrk, 16 connections, 2 threads, against \`iwd-sidecar\` (2 worker threads: one per CPU) on a local PostgreSQL with a"
    echo "100k-task backlog and 500 agents (\`bench/sidecar/run.sh\`); medians of ${IWD_BENCH_SIDECAR_RUNS:-3} runs of ${IWD_BENCH_SIDECAR_SECONDS:-5} s."
    echo
    IWD_BENCH_RUNS=${IWD_BENCH_SIDECAR_RUNS:-3} IWD_BENCH_SECONDS=${IWD_BENCH_SIDECAR_SECONDS:-5} bench/sidecar/run.sh
    lap sidecar
    echo
    echo "## Events out: the outbox's cost"
    echo
    echo "\`bench/outbox/run.sh\`: capture and claim + complete with the event outbox's trigger disabled and enabled,"
    echo "same server, alternating; the tenant's scheduler worker publishes the outbox to the event feed meanwhile."
    echo
    IWD_BENCH_OUTBOX_RUNS=${IWD_BENCH_OUTBOX_RUNS:-3} bench/outbox/run.sh
    lap outbox
    echo
    echo "## Targets"
    echo
    echo "\`bench/targets.sh\`: claim + complete against the commit ceiling and a hand-written queue, same server, same run."
    echo
    bench/targets.sh
    lap targets
    echo
    echo "## Data Mart"
    echo
    echo "\`bench/datamart/run.sh\`: $(( ${IWD_BENCH_DM_TASKS:-250000} * 4 )) task events over 30 simulated days"
    echo "(${IWD_BENCH_DM_TASKS:-250000} tasks: created, reserved, accepted, finished), written into the history; then"
    echo "\`iwd_dm.run('full')\` from an empty Data Mart and the reference (one \`INSERT … SELECT … GROUP BY\` of a daily"
    echo "aggregate from the same events, each joined to its task), repeated; then 10k new events and"
    echo "\`iwd_dm.run('intraday')\`, repeated."
    echo
    IWD_BENCH_DM_TASKS=${IWD_BENCH_DM_TASKS:-250000} bench/datamart/run.sh
    lap "Data Mart"
    echo
    echo "## Duration"
    echo
    total=$(( $(date +%s) - bench_t0 ))
    echo "This run of \`make bench\` took $((total / 60)) min $((total % 60)) s (target: under 25 minutes); by section:"
    awk -F'\t' '{printf "%s%s %d s", (NR > 1 ? ", " : ""), $1, $2} END {print "."}' "$out/timing.tsv"
    echo
    echo "## Soak (make bench-soak)"
    echo
    if [ -f bench/soak-results.md ]; then cat bench/soak-results.md; else echo "Not run yet: \`make bench-soak\`."; fi
    echo
    cat bench/analysis.md
} > "$out/RESULTS.md.new"
# The sections written above replace theirs in bench/RESULTS.md; the sections other benchmarks wrote there
# (webhooks, router, density, ...) are kept where they are; a new section goes before the analysis.
python3 - bench/RESULTS.md "$out/RESULTS.md.new" > "$out/RESULTS.md.merged" <<'PY'
import sys

def sections(path):
    head, parts = [], []
    try:
        lines = open(path, encoding='utf-8').read().split('\n')
    except FileNotFoundError:
        lines = []
    for line in lines:
        if line.startswith('## '):
            parts.append([line, [line]])
        elif parts:
            parts[-1][1].append(line)
        else:
            head.append(line)
    return head, parts

_, old = sections(sys.argv[1])
head, new = sections(sys.argv[2])
written = {name: body for name, body in new}
out = [part for part in old]
for name, body in new:
    if name not in {n for n, _ in old}:
        at = next((i for i, (n, _) in enumerate(out) if n == '## Analysis'), len(out))
        out.insert(at, [name, body])
print('\n'.join(head + [line for name, body in out for line in written.get(name, body)]), end='')
PY
mv "$out/RESULTS.md.merged" bench/RESULTS.md
cat bench/RESULTS.md
total=$(( $(date +%s) - bench_t0 ))
echo "bench: make bench took $((total / 60)) min $((total % 60)) s"
