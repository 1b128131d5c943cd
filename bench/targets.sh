#!/usr/bin/env bash
# The performance targets against their references, measured in the same run on the same server: the
# commit ceiling (single-row INSERT transactions), the hand-written queue and the COPY floor, at 16
# clients. Numbered as in issue 19: claim + complete (1), the agent loop in one round trip,
# complete_task(next => true) (2), WAL per cycle (3), capture (5); and claims during a reprioritization
# pass over the whole backlog. Prints a markdown section on stdout and draws bench/plots/cycles.png
# (cycles/s over time of every queue run, from pgbench's per-transaction logs) and bench/plots/wal.png
# (WAL per cycle) with gnuplot.
# IWD_BENCH_TARGET_SECONDS (15) per run, IWD_BENCH_TARGET_RUNS (3) runs, median; IWD_BENCH_NAIVE_LOOP=1
# adds the hand-written queue's loop in one transaction (a fixed agent per client: it slows down run by run,
# bench/analysis.md);
# IWD_BENCH_TARGET_BACKLOG (1000000); IWD_BENCH_REPRI_PAIRS (3) and IWD_BENCH_REPRI_WINDOW (12 s): the
# windows without and with a reprioritization pass.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${IWD_BENCH_TARGET_SECONDS:-15}
runs=${IWD_BENCH_TARGET_RUNS:-3}
big=${IWD_BENCH_TARGET_BACKLOG:-1000000}
small=10000
capture=100000
port=${IWD_BENCH_TARGET_PORT:-54344}
. bench/lib.sh
start_cluster targets "$port" "${bench_settings[@]}"
sql -f "$work/setup.sql" >/dev/null
sql -f "$work/naive_setup.sql" >/dev/null
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# the per-second rates of each run (for the plots): $series/NAME-RUN.tsv, "second  transactions"
series=bench/out/series
rm -rf "$series"; mkdir -p "$series"
# pgbench_run SCRIPT [SERIES] -> "tps first10 last10 p50 p99 walbytes fpi" (latencies in ms, from the
# per-transaction log, which also gives the per-second rates written to SERIES; WAL bytes per pgbench
# transaction from the WAL position's advance over the run, full-page images from pg_stat_wal)
pgbench_run() { # SCRIPT is a file of bench/core, or builtin:NAME for one of pgbench's own
    rm -f "$work"/pgbench_log.*
    local w0 w1 src=(-f "$work/$1")
    [[ $1 == builtin:* ]] && src=(-b "${1#builtin:}")
    w0=$(sql -c "SELECT pg_current_wal_lsn() || ' ' || wal_fpi FROM pg_stat_wal")
    # task_id: the task an agent loop's client holds (bench/core/complete_next.sql, naive_loop.sql)
    (cd "$work" && "${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -n -M prepared -c 16 -j 2 -T "$seconds" \
        -D task_id=0 -P 10 -l "${src[@]}" bench) > "$work/out.txt" 2>&1
    w1=$(sql -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${w0% *}') || ' ' || wal_fpi FROM pg_stat_wal")
    w0="0 ${w0#* }"
    [ -n "${2:-}" ] && cat "$work"/pgbench_log.* |
        awk '{c[$5]++; if (t0 == "" || $5 < t0) t0 = $5} END {for (s in c) print s - t0, c[s]}' | sort -n > "$2"
    local tps first last lat n wal
    tps=$(awk '/^tps = / {printf "%.0f", $3}' "$work/out.txt")
    first=$(awk '/^progress: / {print $4; exit}' "$work/out.txt")
    last=$(awk '/^progress: / {v=$4} END {print v}' "$work/out.txt")
    lat=$(cat "$work"/pgbench_log.* | awk '{print $3 / 1000}' | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.5)+1], a[int(NR*0.99)+1]}')
    n=$(awk -F': ' '/^number of transactions actually processed/ {split($2, a, "/"); print a[1]}' "$work/out.txt")
    wal=$(awk -v a="$w0" -v b="$w1" -v n="${n:-0}" 'BEGIN {split(a, x, " "); split(b, y, " ");
          if (n > 0) printf "%.0f %.2f", (y[1] - x[1]) / n, (y[2] - x[2]) / n; else print "0 0"}')
    echo "${tps:-0} ${first:-0} ${last:-0} ${lat:-0 0} $wal"
}

declare -A result walinfo walmedian summary
measure() { # measure NAME SCRIPT [fill-sql [top-up-sql run every second during the runs]]
    local name=$1 script=$2 fill=${3:-} during=${4:-} topper
    local tps=() firsts=() lasts=() p50=() p99=() wals=() fpis=()
    for r in $(seq 1 "$runs"); do
        [ -n "$fill" ] && sql -c "$fill" >/dev/null
        # every run starts right after a checkpoint: each queue pays its full-page writes alike
        sql -c "CHECKPOINT" >/dev/null
        topper=""
        if [ -n "$during" ]; then
            ( while sleep 1; do sql -c "$during" >/dev/null 2>&1 || true; done ) &
            topper=$!
        fi
        read -r t f l a b w i <<<"$(pgbench_run "$script" "$series/$name-$r.tsv")"
        [ -n "$topper" ] && { kill "$topper" 2>/dev/null; wait "$topper" 2>/dev/null || true; }
        tps+=("$t"); firsts+=("$f"); lasts+=("$l"); p50+=("$a"); p99+=("$b"); wals+=("$w"); fpis+=("$i")
        echo -e "$name\t$r\t$t\t$w\t$i" >> "$series/runs.tsv"
        echo "targets: $name run $r: $t tps (first 10 s $f, last 10 s $l, p50 $a ms, p99 $b ms, WAL $w B and $i FPI per tx)" >&2
    done
    result[$name]="$(printf '%s\n' "${tps[@]}" | median) $(printf '%s\n' "${firsts[@]}" | median) $(printf '%s\n' "${lasts[@]}" | median) $(printf '%s\n' "${p50[@]}" | median) $(printf '%s\n' "${p99[@]}" | median)"
    walinfo[$name]="$(printf '%s\n' "${wals[@]}" | median) B, $(printf '%s\n' "${fpis[@]}" | median) FPI"
    walmedian[$name]="$(printf '%s\n' "${wals[@]}" | median) $(printf '%s\n' "${fpis[@]}" | median)"
    summary[$name]=$(min_med_max "${tps[@]}")
}

# capture (target 2): create_tasks of 100k tasks in batches of 1,000 against COPY of the same rows into a
# plain table with the same columns and indexes
# The same rows are also copied into a copy of each of the four tables a capture writes (task, key,
# search document, created event): what any capture writing them would at least cost.
sql -c "CREATE TABLE copy_floor (LIKE iwd.task INCLUDING ALL)" \
    -c "CREATE TABLE floor_task (LIKE iwd.task INCLUDING ALL)" -c "CREATE TABLE floor_key (LIKE iwd.task_key INCLUDING ALL)" \
    -c "CREATE TABLE floor_document (LIKE iwd.task_document INCLUDING ALL)" \
    -c "CREATE TABLE floor_event (LIKE iwd.task_event INCLUDING ALL)" >/dev/null
cap_rates=(); copy_rates=(); four_rates=()
for r in $(seq 1 "$runs"); do
    before=$(sql -c "SELECT coalesce(max(id), 0) FROM iwd.task")
    sql -c "CALL bench_capture_prepare($capture)" -c "CHECKPOINT" >/dev/null
    t0=$(ms); sql -c "CALL bench_capture()" >/dev/null; t_cap=$(( $(ms) - t0 ))
    sql -c "COPY (SELECT * FROM iwd.task WHERE id > $before) TO '$work/capture.copy'" -c "TRUNCATE copy_floor" \
        -c "CHECKPOINT" >/dev/null
    t0=$(ms); sql -c "COPY copy_floor FROM '$work/capture.copy'" >/dev/null; t_copy=$(( $(ms) - t0 ))
    sql -c "COPY (SELECT * FROM iwd.task_key WHERE task_id > $before) TO '$work/capture_key.copy'" \
        -c "COPY (SELECT * FROM iwd.task_document WHERE task_id > $before) TO '$work/capture_document.copy'" \
        -c "COPY (SELECT * FROM iwd.task_event WHERE task_id > $before) TO '$work/capture_event.copy'" \
        -c "TRUNCATE floor_task, floor_key, floor_document, floor_event" -c "CHECKPOINT" >/dev/null
    t0=$(ms)
    sql -c "COPY floor_task FROM '$work/capture.copy'" -c "COPY floor_key FROM '$work/capture_key.copy'" \
        -c "COPY floor_document FROM '$work/capture_document.copy'" -c "COPY floor_event FROM '$work/capture_event.copy'" >/dev/null
    t_four=$(( $(ms) - t0 ))
    cap_rates+=("$(awk -v n=$capture -v t=$t_cap 'BEGIN {printf "%.0f", n * 1000 / t}')")
    copy_rates+=("$(awk -v n=$capture -v t=$t_copy 'BEGIN {printf "%.0f", n * 1000 / t}')")
    four_rates+=("$(awk -v n=$capture -v t=$t_four 'BEGIN {printf "%.0f", n * 1000 / t}')")
    echo "targets: capture run $r: create_tasks ${cap_rates[-1]} tasks/s, COPY ${copy_rates[-1]} rows/s, COPY into the four tables ${four_rates[-1]} tasks/s" >&2
done
cap_rate=$(printf '%s\n' "${cap_rates[@]}" | median); copy_rate=$(printf '%s\n' "${copy_rates[@]}" | median)
four_rate=$(printf '%s\n' "${four_rates[@]}" | median)
# the template of one capture's four rows for capture_floor_one.sql: the last task captured above
floor_columns=$(sql -c "SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
                        WHERE attrelid = 'iwd.task'::regclass AND attnum > 2 AND NOT attisdropped")
sql -c "DROP TABLE copy_floor" -c "TRUNCATE floor_task, floor_key, floor_document, floor_event" \
    -c "CREATE SEQUENCE floor_id START 1000000000" \
    -c "CREATE TEMPORARY TABLE last_captured AS SELECT max(id) AS id FROM iwd.task" \
    -c "CREATE TABLE floor_template AS SELECT $floor_columns FROM iwd.task WHERE id = (SELECT id FROM last_captured)" \
    -c "CREATE TABLE floor_template_document AS SELECT document FROM iwd.task_document WHERE task_id = (SELECT id FROM last_captured)" \
    -c "CREATE TABLE floor_template_event AS SELECT detail FROM iwd.task_event WHERE task_id = (SELECT id FROM last_captured) AND event = 'created'" \
    >/dev/null
sed "s/@COLUMNS@/$floor_columns/" bench/core/capture_floor_one.sql > "$work/capture_floor_one.sql"
chmod 644 "$work/capture_floor_one.sql"

echo "targets: filling the queues..." >&2
sql -c "SELECT bench_queue_fill($big)" >/dev/null
sql -c "SELECT naive_fill($big)" -c "VACUUM ANALYZE" >/dev/null
measure ceiling ceiling.sql
# pgbench's built-in TPC-B-like transaction for reference (scale 16: one branch per client)
"${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -i -q -s 16 bench >/dev/null 2>&1
seconds=10 measure tpcb builtin:tpcb-like  # a reference, steady from the start: shorter runs
sql -c "DROP TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history" >/dev/null
measure create_one create_one.sql
seconds=10 measure create_floor capture_floor_one.sql  # a floor, steady from the start: shorter runs
sql -c "DROP TABLE floor_task, floor_key, floor_document, floor_event, floor_template, floor_template_document,
                   floor_template_event" -c "DROP SEQUENCE floor_id" >/dev/null
measure naive naive_claim_complete.sql "SELECT naive_fill($big)"
measure iwd_big claim_complete.sql "SELECT bench_queue_fill($big)"
# target 2: the agent's loop in one round trip, and the hand-written queue's loop in one transaction
measure iwd_next complete_next.sql "SELECT bench_queue_fill($big)"
[ "${IWD_BENCH_NAIVE_LOOP:-0}" = 1 ] && measure naive_loop naive_loop.sql "SELECT naive_fill($big)"

# reprioritization (target 3): one claim run of 2 x IWD_BENCH_REPRI_PAIRS windows of
# IWD_BENCH_REPRI_WINDOW seconds, alternately without and with a pass. For a window with the pass the
# iwd clock jumps 31 minutes ahead, past every queued task's next reprioritization, so the scheduler
# rescores the backlog (in batches of iwd.batch_size); for a window without it the clock is set back
# to real time and nothing is due (rescored tasks are due again only a period after the jump), so the
# pass stops. The claim rate of each window (its first seconds skipped, while the scheduler takes up
# the change) is compared as median with against median without: interleaving the windows in one run
# keeps the noise of the shared machine out of the ratio. After the run the clock jumps once more and
# the rest of the pass runs unloaded until nothing is due.
repri_pairs=${IWD_BENCH_REPRI_PAIRS:-3}
repri_window=${IWD_BENCH_REPRI_WINDOW:-12}
repri_skip=3
set_clock() { # set_clock ahead|real
    if [ "$1" = ahead ]; then
        sql -c "ALTER SYSTEM SET iwd.simulated_time = '$(sql -c "SELECT now() + interval '31 minutes'")'" \
            -c "SELECT pg_reload_conf()" >/dev/null
    else
        sql -c "ALTER SYSTEM RESET iwd.simulated_time" -c "SELECT pg_reload_conf()" >/dev/null
    fi
}
still_due="SELECT count(*) FROM iwd.task WHERE reprioritize_at <= iwd.now() AND status <> 'assigned'"
sql -c "SELECT bench_queue_fill($big)" -c "CHECKPOINT" >/dev/null
due=$(sql -c "SELECT count(*) FROM iwd.task WHERE status <> 'assigned' AND reprioritize_at IS NOT NULL")
(cd "$work" && "${as_user[@]}" "$bindir/pgbench" -h "$work" -p "$port" -n -M prepared -c 16 -j 2 \
    -T $((2 * repri_pairs * repri_window)) -P 1 -f "$work/claim_complete.sql" bench) > "$work/repri.txt" 2>&1 &
bench_pid=$!
t0=$(ms)
for w in $(seq 0 $((2 * repri_pairs - 1))); do
    if [ $((w % 2)) -eq 1 ]; then set_clock ahead; else set_clock real; fi
    # the windows keep to the run's clock, whatever set_clock took
    sleep "$(awk -v e=$(( t0 + (w + 1) * repri_window * 1000 - $(ms) )) 'BEGIN {printf "%.3f", (e > 0) ? e / 1000 : 0}')"
done
wait "$bench_pid" || true
set_clock real
# window_rates PARITY: the mean claim rate of each window of that parity (0 without, 1 with the pass)
window_rates() {
    awk -v w="$repri_window" -v k="$repri_skip" -v p="$1" '/^progress: / {
            t = $2 + 0; i = int((t - 0.5) / w); if (i % 2 == p && t - i * w > k) {s[i] += $4; n[i]++}}
        END {for (i in s) printf "%.1f\n", s[i] / n[i]}' "$work/repri.txt"
}
with_rates=$(window_rates 1); without_rates=$(window_rates 0)
repri_with=$(echo "$with_rates" | median); repri_without=$(echo "$without_rates" | median)
# the rest of the pass, unloaded and without rests (iwd.pass_duty 100), so that it completes sooner
sql -c "ALTER SYSTEM SET iwd.pass_duty = 100" >/dev/null
set_clock ahead
left_after_run=$(sql -c "$still_due")
t0=$(ms); pass_ms=""
while [ -z "$pass_ms" ]; do
    [ "$(sql -c "$still_due")" = 0 ] && pass_ms=$(( $(ms) - t0 ))
    [ $(( $(ms) - t0 )) -gt 300000 ] && pass_ms="> 300000" && break
    sleep 1
done
sql -c "ALTER SYSTEM RESET iwd.pass_duty" >/dev/null
set_clock real
echo "targets: reprioritization of $due tasks: claims/s with the pass $(min_med_max $with_rates), without $(min_med_max $without_rates) (min / median / max); $left_after_run due after the run, the rest of the pass took ${pass_ms} ms unloaded (iwd.pass_duty 100)" >&2
sql -c "DELETE FROM iwd.task WHERE status = 'queued' AND id NOT IN (SELECT id FROM iwd.task WHERE status = 'queued' LIMIT $small)" -c "VACUUM ANALYZE iwd.task" >/dev/null
# a small backlog drains in seconds at this rate: it is topped up every second during the runs
measure iwd_small claim_complete.sql "SELECT bench_queue_fill($small)" "CALL bench_queue_topup($small)"

read -r c_tps _ <<<"${result[ceiling]}"
read -r one_tps _ <<<"${result[create_one]}"
read -r floor_tps _ <<<"${result[create_floor]}"
read -r n_tps n_first n_last _ <<<"${result[naive]}"
read -r b_tps b_first b_last b_p50 b_p99 <<<"${result[iwd_big]}"
read -r s_tps _ <<<"${result[iwd_small]}"
read -r x_tps x_first x_last _ <<<"${result[iwd_next]}"
read -r l_tps _ <<<"${result[naive_loop]:-0}"
read -r n_wal n_fpi <<<"${walmedian[naive]}"
read -r b_wal b_fpi <<<"${walmedian[iwd_big]}"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {ok = (op == ">=") ? (v >= t) : (v <= t); print ok ? "met" : "**not met**"}'; }
# pgbench counts one cycle (claim + complete, two transactions) as one "transaction" in both queue scripts
cycles_vs_ceiling=$(awk -v a="$b_tps" -v c="$c_tps" 'BEGIN {printf "%.2f", 2 * a / c}')

# the plots (gnuplot): cycles/s over time of every run of the queues, and WAL per cycle (medians)
plots=bench/plots
mkdir -p "$plots"
plot_cmd=""
color=1
for name in naive iwd_big iwd_next naive_loop; do
    case $name in
        naive) title="hand-written queue, claim + complete" ;;
        iwd_big) title="iwd, claim + complete" ;;
        iwd_next) title="iwd, complete_task(next => true)" ;;
        naive_loop) title="hand-written queue, loop in one transaction" ;;
    esac
    for r in $(seq 1 "$runs"); do
        f="$series/$name-$r.tsv"
        [ -s "$f" ] || continue
        # the first and last seconds are cut short by the run's start and end
        tail -n +2 "$f" | head -n -1 > "$f.plot"
        t="notitle"; [ "$r" = 1 ] && t="title '$title'"
        plot_cmd="$plot_cmd${plot_cmd:+, }'$f.plot' using 1:2 with lines linecolor $color $t"
    done
    color=$((color + 1))
done
for name in naive iwd_big iwd_next naive_loop iwd_small; do
    read -r w i <<<"${walmedian[$name]:-0 0}"
    printf '%s\t%s\t%s\n' "$name" "$w" "$i"
done > "$series/wal.tsv"
gnuplot <<GNUPLOT
set terminal pngcairo size 1000,500 font 'sans,10' noenhanced
set output '$plots/cycles.png'
set title 'Cycles/s over time, 16 clients, $big queued ($runs runs each, one line per run)'
set xlabel 'seconds into the run'
set ylabel 'cycles/s'
set yrange [0:*]
set key outside bottom center horizontal
plot $plot_cmd
set output '$plots/wal.png'
set title 'WAL per cycle (medians of $runs runs; full-page images per cycle above the bars)'
set datafile separator '\t'
set style data histograms
set style fill solid 0.6 border -1
set boxwidth 0.6
unset key
set xlabel ''
set ylabel 'WAL bytes per cycle'
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set bmargin 4
set xtics ("hand-written queue\nclaim + complete" 0, "iwd\nclaim + complete" 1, "iwd\ncomplete_task(next)" 2, \
           "hand-written queue\nloop in one transaction" 3, "iwd, $small queued\nclaim + complete" 4)
plot '$series/wal.tsv' using 2 linecolor 3, '' using 0:2:(sprintf('%.2f FPI', \$3)) with labels offset 0,1
GNUPLOT

echo "| run (16 clients, $big queued unless noted) | per second: min / median / max | WAL per pgbench transaction (median) |"
echo "|---|---:|---:|"
echo "| commit ceiling: single-row INSERT transactions | ${summary[ceiling]} | ${walinfo[ceiling]} |"
echo "| pgbench's built-in tpcb-like transactions (scale 16), for reference | ${summary[tpcb]} | ${walinfo[tpcb]} |"
echo "| single \`create_task\` transactions | ${summary[create_one]} | ${walinfo[create_one]} |"
echo "| what one capture writes (task, key, document, event rows copied in one statement) | ${summary[create_floor]} | ${walinfo[create_floor]} |"
echo "| \`create_tasks\`, $capture tasks in batches of 1,000 (tasks/s) | $(min_med_max "${cap_rates[@]}") | |"
echo "| COPY floor: the same rows into a copy of iwd.task (rows/s) | $(min_med_max "${copy_rates[@]}") | |"
echo "| COPY of the same tasks' rows into copies of the four tables a capture writes (tasks/s) | $(min_med_max "${four_rates[@]}") | |"
echo "| hand-written queue: claim + complete cycles | ${summary[naive]} | ${walinfo[naive]} |"
echo "| iwd: claim + complete cycles | ${summary[iwd_big]} | ${walinfo[iwd_big]} |"
echo "| iwd: claim + complete cycles, $small queued (topped up every second) | ${summary[iwd_small]} | ${walinfo[iwd_small]} |"
echo "| iwd: agent loop, \`complete_task(id, agent, next => true)\` cycles (one transaction each) | ${summary[iwd_next]} | ${walinfo[iwd_next]} |"
[ -n "${summary[naive_loop]:-}" ] &&
    echo "| hand-written queue: agent loop, complete + claim in one transaction | ${summary[naive_loop]} | ${walinfo[naive_loop]} |"
echo
echo "| measure | value | target | |"
echo "|---|---:|---:|---|"
echo "| hand-written queue, cycles/s (first / last 10 s) | $n_tps ($n_first / $n_last) | | |"
echo "| iwd claim + complete, cycles/s (first / last 10 s) | $b_tps ($b_first / $b_last) | | |"
echo "| **1** iwd / hand-written queue | $(ratio "$b_tps" "$n_tps") | ≥ 1.0 | $(verdict "$(ratio "$b_tps" "$n_tps")" 1.0 ">=") |"
echo "| (1) iwd transactions / commit ceiling | $cycles_vs_ceiling | | |"
echo "| (1) steadiness: last 10 s / first 10 s | $(ratio "$b_last" "$b_first") | ≥ 0.90 | $(verdict "$(ratio "$b_last" "$b_first")" 0.9 ">=") |"
echo "| (1) $big vs $small queued ($b_tps / $s_tps) | $(ratio "$b_tps" "$s_tps") | ≥ 0.80 | $(verdict "$(ratio "$b_tps" "$s_tps")" 0.8 ">=") |"
echo "| (1) latency p99 / p50 ($b_p99 / $b_p50 ms) | $(ratio "$b_p99" "$b_p50") | ≤ 4 | $(verdict "$(ratio "$b_p99" "$b_p50")" 4 "<=") |"
echo "| **2** agent loop: \`complete_task(next => true)\` cycles/s ($x_tps; first / last 10 s $x_first / $x_last) / hand-written queue's cycles/s ($n_tps) | $(ratio "$x_tps" "$n_tps") | ≥ 1.5 | $(verdict "$(ratio "$x_tps" "$n_tps")" 1.5 ">=") |"
[ -n "${summary[naive_loop]:-}" ] &&
    echo "| (2) agent loop / the hand-written queue's loop in one transaction ($l_tps) | $(ratio "$x_tps" "$l_tps") | | |"
echo "| **3** WAL per cycle: iwd / hand-written queue ($b_wal / $n_wal B) | $(ratio "$b_wal" "$n_wal") | ≤ 2 | $(verdict "$(ratio "$b_wal" "$n_wal")" 2 "<=") |"
echo "| **3** full-page images per iwd cycle | $b_fpi | ≤ 0.5 | $(verdict "$b_fpi" 0.5 "<=") |"
echo "| **5** create_tasks, $capture tasks in batches of 1,000 (tasks/s) / COPY floor ($copy_rate rows/s) | $cap_rate / $copy_rate = $(ratio "$cap_rate" "$copy_rate") | ≥ 0.40 | $(verdict "$(ratio "$cap_rate" "$copy_rate")" 0.4 ">=") |"
echo "| (5) COPY of a capture's rows into the four tables it writes / COPY floor | $four_rate / $copy_rate = $(ratio "$four_rate" "$copy_rate") | | the most any capture writing them can reach |"
echo "| **5** single create_task tx/s / commit ceiling | $one_tps / $c_tps = $(ratio "$one_tps" "$c_tps") | ≥ 0.45 | $(verdict "$(ratio "$one_tps" "$c_tps")" 0.45 ">=") |"
echo "| (5) transactions writing one capture's four rows / commit ceiling | $floor_tps / $c_tps = $(ratio "$floor_tps" "$c_tps") | | the most any single capture writing them can reach |"
echo "| reprioritization pass over $due queued tasks | $((due - left_after_run)) rescored during the claim run, the other $left_after_run in ${pass_ms} ms after it (unloaded, iwd.pass_duty 100) | completes | $( [[ "$pass_ms" =~ ^[0-9]+$ ]] && echo met || echo '**not met**') |"
echo "| reprioritization: claims/s with the pass / without: medians of $repri_pairs windows each (min / median / max of each) | with $(min_med_max $with_rates), without $(min_med_max $without_rates): $(ratio "$repri_with" "$repri_without") | ≥ 0.80 | $(verdict "$(ratio "$repri_with" "$repri_without")" 0.8 ">=") |"
echo
echo "Medians of $runs runs of $seconds s (the capture floor and tpcb-like: 10 s); every run starts right after a"
echo "CHECKPOINT. Targets are numbered as in issue 19; rows in parentheses are references and earlier targets kept."
echo "WAL per cycle is the WAL position's advance over a run (every process's WAL) divided by its cycles. The"
echo "reprioritization: one claim run of $((2 * repri_pairs)) windows of $repri_window s, without and with the pass in"
echo "turn (each window's first $repri_skip s skipped), median of the windows each way."
echo
echo "![Cycles/s over time: iwd and the hand-written queue](plots/cycles.png)"
echo
echo "![WAL per cycle](plots/wal.png)"
