#!/usr/bin/env bash
# test/bench/run.sh: what `make bench` runs. queue_engine against the rawest
# SQL doing the same job (or against itself under an easier condition), side
# by side in one cluster and one run; prints one table of throughputs,
# latencies, sizes and ratios (each figure the median of BENCH_RUNS runs).
#
# Workloads (BENCH_WORKLOADS, space separated, default all):
#   1  enqueue, one run per transaction            raw INSERT vs enqueue
#   2  enqueue_batch of 100                        raw INSERT ... generate_series vs enqueue_batch
#   3  dequeue 1 + complete from a backlog         raw claim+ack vs dequeue + complete
#   4  dequeue 10 + complete_batch                 raw claim+ack of 10 vs dequeue 10 + complete_batch
#   5  8 workers on a queue with concurrency_limit 8 ("raw" = the same on an unlimited queue)
#   6  10,000 queues with concurrency_limit 1, 8 workers, dequeue(NULL, 1)
#      ("raw" = one unlimited queue with the same backlog, dequeue(NULL, 1))
#   7  latency of dequeue + complete at a fixed rate, 10k vs 1M backlog (ratio = p99 1M / p99 10k)
#   8  the same latency (dequeue(NULL, 1)) with 1M runs blocked behind queues at their
#      limit vs without (ratio = p99 with / p99 without)
#   9  on-disk bytes per pending run beyond its payload, raw_jobs vs the engine's schema
#   10 sustained mixed load (enqueue + dequeue + complete) at 70% of what the same script reaches unthrottled, for BENCH_SUSTAIN_SECONDS
#      with a REPEATABLE READ snapshot held open ("engine") vs without ("raw");
#      engine table sizes, then release + run_maintenance + VACUUM: do sizes stop growing?
#   11 a tenant-scoped role (producer and worker on the bench queue's tenant, among
#      BENCH_SCOPED_TENANTS granted tenants) vs the extension owner: enqueue, and dequeue 1 +
#      complete from a backlog, BENCH_SCOPED_CLIENTS clients ("raw" = the owner, "engine" =
#      the scoped role; owner and scoped runs alternate; ratio = scoped / owner)
#   mem one backend, BENCH_MEMORY_CALLS dequeue + complete calls from a procedure loop:
#       private memory before/peak/after; then the procedure's "SPI Proc" context's growth over
#       BENCH_MEMORY_SPI_CALLS iterations of the raw claim+ack loop vs the engine's
#   memclient one backend, BENCH_MEMORY_CALLS dequeue + complete calls as separate statements
#       from a client (how workers call): private memory before/after
#
# Knobs: BENCH_WORKLOADS, BENCH_SECONDS (5), BENCH_RUNS (3), BENCH_SYNCS ("on off"),
#   BENCH_BACKLOG (200000, workloads 3-5), BENCH_QUEUES (10000, workload 6),
#   BENCH_LATENCY_RATE (250 tx/s, workloads 7-8), BENCH_LATENCY_SECONDS (20: a p99 needs more
#   than the 1,250 transactions of 5 s), BENCH_BIG_BACKLOG (1000000, workload 7),
#   BENCH_BLOCKED_QUEUES (100) x BENCH_BLOCKED_RUNS (10000) (workload 8),
#   BENCH_SIZE_RUNS (100000, workload 9), BENCH_SUSTAIN_SECONDS (300), BENCH_SUSTAIN_RUNS
#   (BENCH_RUNS), BENCH_SUSTAIN_AFTER (max(10, SUSTAIN/5) s of load after the release),
#   BENCH_SUSTAIN_BACKLOG (10000), BENCH_SUSTAIN_RETENTION (30s: finished_run_retention during
#   workload 10, so that its steady state, where retention deletes what the load adds, comes within the run),
#   BENCH_SUSTAIN_WARMUP (60 s of unthrottled load before workload 10 measures its capacity,
#   so that retention is pruning by then), BENCH_MEMORY_CALLS (1000000),
#   BENCH_MEMORY_MAX_SECONDS (1800: the memory loop stops there),
#   BENCH_MEMORY_SPI_CALLS (20000), BENCH_SCOPED_CLIENTS ("1", workload 11),
#   BENCH_SCOPED_TENANTS (20, workload 11), BENCH_OUT (also write the table there, as markdown).
set -euo pipefail
shopt -s inherit_errexit   # a failing step inside $(...) stops the bench too
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SYNCS=${BENCH_SYNCS:-on off}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-1 2 3 4 5 6 7 8 9 10 11 mem memclient}
BACKLOG=${BENCH_BACKLOG:-200000}
BENCH_QUEUES=${BENCH_QUEUES:-10000}
BENCH_LATENCY_RATE=${BENCH_LATENCY_RATE:-250}
BENCH_LATENCY_SECONDS=${BENCH_LATENCY_SECONDS:-20}
BENCH_BIG_BACKLOG=${BENCH_BIG_BACKLOG:-1000000}
BENCH_BLOCKED_QUEUES=${BENCH_BLOCKED_QUEUES:-100}
BENCH_BLOCKED_RUNS=${BENCH_BLOCKED_RUNS:-10000}
BENCH_SIZE_RUNS=${BENCH_SIZE_RUNS:-100000}
BENCH_SUSTAIN_SECONDS=${BENCH_SUSTAIN_SECONDS:-300}
BENCH_SUSTAIN_RUNS=${BENCH_SUSTAIN_RUNS:-$BENCH_RUNS}
BENCH_SUSTAIN_AFTER=${BENCH_SUSTAIN_AFTER:-$(( BENCH_SUSTAIN_SECONDS / 5 > 10 ? BENCH_SUSTAIN_SECONDS / 5 : 10 ))}
BENCH_SUSTAIN_BACKLOG=${BENCH_SUSTAIN_BACKLOG:-10000}
BENCH_SUSTAIN_WARMUP=${BENCH_SUSTAIN_WARMUP:-60}
BENCH_SUSTAIN_RETENTION=${BENCH_SUSTAIN_RETENTION:-30s}
BENCH_MEMORY_CALLS=${BENCH_MEMORY_CALLS:-1000000}
BENCH_MEMORY_SPI_CALLS=${BENCH_MEMORY_SPI_CALLS:-20000}
BENCH_MEMORY_MAX_SECONDS=${BENCH_MEMORY_MAX_SECONDS:-1800}
BENCH_SCOPED_CLIENTS=${BENCH_SCOPED_CLIENTS:-1}
BENCH_SCOPED_TENANTS=${BENCH_SCOPED_TENANTS:-20}
BENCH_OUT=${BENCH_OUT:-}
SMALL_BACKLOG=10000   # workloads 7 and 8

for w in $BENCH_WORKLOADS; do
  case $w in 1|2|3|4|5|6|7|8|9|10|11|mem|memclient) ;; *) qe_die "BENCH_WORKLOADS: unknown workload '$w' (1-11, mem, memclient)" ;; esac
done
want() { [[ " $BENCH_WORKLOADS " == *" $1 "* ]]; }

qe_install_packages
qe_build_install
# Stated settings: modest memory for a 2-core box; fsync and full_page_writes on;
# the library preloaded, as README recommends (its worker maintains the
# bench database every second, and dequeue has its shared-memory hints).
qe_cluster_start bench \
  "shared_buffers = 1GB" "max_wal_size = 4GB" "checkpoint_timeout = 30min" \
  "max_connections = 50" "autovacuum_naptime = 10s" \
  "shared_preload_libraries = '$QE_EXTENSION'"
qe_psql -f "$here/setup.sql" >/dev/null

work=$(mktemp -d)
results=$work/results.tsv
: >"$results"
qe_on_exit "rm -rf '$work'"

# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# pgb SYNC CLIENTS LOG PGBENCH-ARGS... -> "tps p50 p99" of one pgbench run (ms; "-" unless LOG=1).
# Latencies come from pgbench's per-transaction log (with -R they include the schedule lag).
pgb() {
  local sync=$1 clients=$2 log=$3 out rc=0 lat="- -" logargs=()
  shift 3
  rm -f "$work"/lat.* "$work/pgbench.err"
  [ "$log" != 1 ] || logargs=(-l --log-prefix="$work/lat")
  out=$(PGOPTIONS="-c synchronous_commit=$sync" pgbench -n -M prepared -c "$clients" -j "$clients" \
          ${logargs[@]+"${logargs[@]}"} "$@" 2>"$work/pgbench.err") || rc=$?
  if [ "$rc" -ne 0 ]; then
    qe_log "pgbench $* exited $rc: $(grep -v '^pgbench: warning' "$work/pgbench.err" | tail -n 3 | tr '\n' ' ')"
  fi
  if [ "$log" = 1 ]; then
    # time (µs) is the 3rd field; failed/skipped transactions are not numbers there.
    lat=$(cat "$work"/lat.* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ {print $3}' | sort -n |
          awk '{a[NR]=$1} END {
                 if (NR == 0) { print "- -"; exit }
                 i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
                 i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
                 printf "%.3f %.3f\n", a[i50] / 1000, a[i99] / 1000 }')
  fi
  echo "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1 | grep . || echo 0) $lat" \
       "$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | grep . || echo 0)"
}

# measure PREP SYNC CLIENTS LOG PGBENCH-ARGS... -> "tps p50 p99", each the median of
# BENCH_RUNS runs; PREP (a command line for eval, or "") runs before each run.
measure() {
  local prep=$1 sync=$2 clients=$3 log=$4 i tps p50 p99 all
  shift 4
  all=$work/measure
  : >"$all"
  for ((i = 0; i < BENCH_RUNS; i++)); do
    if [ -n "$prep" ]; then eval "$prep"; fi
    pgb "$sync" "$clients" "$log" "$@" >>"$all"
  done
  tps=$(awk '{print $1}' "$all" | median)
  if [ "$log" = 1 ]; then
    p50=$(awk '$2 != "-" {print $2}' "$all" | median)
    p99=$(awk '$3 != "-" {print $3}' "$all" | median)
  else
    p50=-; p99=-
  fi
  echo "$tps $p50 $p99"
}

# measure_runs PREP SYNC CLIENTS PGBENCH-ARGS... -> completed runs/s, the median of BENCH_RUNS
# runs. For dequeue workloads where a dequeue may come back empty (a queue at its
# limit): counts the runs completed, over pgbench's own measured duration.
completed() { qe_psql -Atc "SELECT count(*) FROM queue_engine.runs WHERE status = 'completed'"; }
measure_runs() {
  local prep=$1 sync=$2 clients=$3 i c0 c1 m tps tx all=$work/measure_runs
  shift 3
  : >"$all"
  for ((i = 0; i < BENCH_RUNS; i++)); do
    if [ -n "$prep" ]; then eval "$prep"; fi
    c0=$(completed)
    m=$(pgb "$sync" "$clients" 0 "$@"); read -r tps _ _ tx <<<"$m"
    c1=$(completed)
    awk -v c="$(( c1 - c0 ))" -v t="$tps" -v n="$tx" 'BEGIN { printf "%.1f %.1f\n", (n > 0 ? c * t / n : 0), t }' >>"$all"
  done
  qe_log "  $*: dequeue+complete tx/s $(awk '{print $2}' "$all" | median), completed runs/s $(awk '{print $1}' "$all" | median)"
  awk '{print $1}' "$all" | median
}

# run_pgbench SCRIPT CLIENTS SYNC [BATCH] [PREP] -> tps (median of BENCH_RUNS), workloads 1-4
run_pgbench() {
  local script=$1 clients=$2 sync=$3 batch=${4:-1} prep=${5:-}
  measure "$prep" "$sync" "$clients" 0 -T "$BENCH_SECONDS" -D batch="$batch" -f "$here/scripts/$script" |
    awk '{print $1}'
}

# run_pair RAW_SCRIPT QE_SCRIPT CLIENTS SYNC [BATCH] [PREP] -> "raw_tps engine_tps", each the
# median of BENCH_RUNS runs, raw and engine runs alternating so that drift in the
# machine's speed during the workload (noisy neighbours, checkpoints) falls on both.
run_pair() {
  local raw_script=$1 qe_script=$2 clients=$3 sync=$4 batch=${5:-1} prep=${6:-} i
  local pair=$work/pair
  : >"$pair.raw"; : >"$pair.qe"
  for ((i = 0; i < BENCH_RUNS; i++)); do
    BENCH_RUNS=1 run_pgbench "$raw_script" "$clients" "$sync" "$batch" "$prep" >>"$pair.raw"
    BENCH_RUNS=1 run_pgbench "$qe_script" "$clients" "$sync" "$batch" "$prep" >>"$pair.qe"
  done
  echo "$(median <"$pair.raw") $(median <"$pair.qe")"
}

# --- engine state -----------------------------------------------------------

# A fresh engine (no queues but 'bench', no runs) and an empty raw_jobs.
reset_engine() {
  qe_psql -c "SET client_min_messages = warning" \
          -c "DROP EXTENSION IF EXISTS queue_engine CASCADE" -c "CREATE EXTENSION queue_engine" \
          -c "SELECT queue_engine.create_queue('bench')" -c "TRUNCATE raw_jobs" >/dev/null
}
empty() {
  qe_psql -c "TRUNCATE raw_jobs" -c "TRUNCATE queue_engine.runs, queue_engine.queue_count_deltas" \
          -c "UPDATE queue_engine.queue_counts SET queued = 0, delayed = 0, executing = 0, waiting = 0" >/dev/null
}
# enqueue_n QUEUE N: N runs with a small payload, 100,000 per statement
enqueue_n() {
  local q=$1 n=$2 chunk
  while [ "$n" -gt 0 ]; do
    chunk=$(( n < 100000 ? n : 100000 ))
    qe_psql -c "SELECT count(*) FROM queue_engine.enqueue_batch('$q', array_fill('{\"n\": 1}'::jsonb, ARRAY[$chunk]))" >/dev/null
    n=$(( n - chunk ))
  done
}
fold() { qe_psql -c "SELECT queue_engine.fold_counts(10000000)" >/dev/null; }
# topup QUEUE N: bring QUEUE's queued runs back up to N, then vacuum
topup() {
  local q=$1 n=$2 have
  fold
  have=$(qe_psql -Atc "SELECT queued FROM queue_engine.queue_stats WHERE queue = '$q'")
  [ "${have:-0}" -ge "$n" ] || enqueue_n "$q" $(( n - ${have:-0} ))
  fold
  # A checkpoint after the refill's WAL, so that none starts inside the short
  # latency run that follows (both sides of workloads 7 and 8 get the same).
  qe_psql -c "VACUUM ANALYZE queue_engine.runs" -c "CHECKPOINT" >/dev/null
}
refill() {  # workloads 3 and 4: BACKLOG runs in raw_jobs and in queue 'bench'
  empty
  qe_psql -c "INSERT INTO raw_jobs (payload) SELECT '{\"n\": 1}' FROM generate_series(1, $BACKLOG)" \
          -c "SELECT count(*) FROM queue_engine.enqueue_batch('bench', array_fill('{\"n\": 1}'::jsonb, ARRAY[$BACKLOG]))" \
          -c "SELECT queue_engine.fold_counts(1000000)" \
          -c "VACUUM ANALYZE raw_jobs" -c "VACUUM ANALYZE queue_engine.runs" >/dev/null
}
refill_queue() {  # refill_queue QUEUE: only BACKLOG runs in QUEUE
  empty
  enqueue_n "$1" "$BACKLOG"
  fold
  # A checkpoint after the refill's WAL, so that none starts inside the short
  # latency run that follows (both sides of workloads 7 and 8 get the same).
  qe_psql -c "VACUUM ANALYZE queue_engine.runs" -c "CHECKPOINT" >/dev/null
}
# Bytes of every table in the engine's schema, with indexes and toast.
engine_bytes() {
  qe_psql -Atc "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                 WHERE c.relnamespace = 'queue_engine'::regnamespace AND c.relkind IN ('r', 'p', 'm')"
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# A session holding a snapshot open: psql reading from a fifo, idle in transaction.
snap_fd=
snap_pid=
snapshot_hold() {
  local fifo=$work/snapshot.fifo i
  rm -f "$fifo"; mkfifo "$fifo"
  PGAPPNAME=bench_snapshot qe_psql <"$fifo" >/dev/null &
  snap_pid=$!
  exec {snap_fd}>"$fifo"
  echo "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;" >&"$snap_fd"
  for ((i = 0; i < 100; i++)); do
    [ "$(qe_psql -Atc "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bench_snapshot'
                         AND state = 'idle in transaction' AND backend_xmin IS NOT NULL")" = 1 ] && return 0
    sleep 0.1
  done
  qe_die "the snapshot-holding session did not start"
}
snapshot_release() {
  [ -n "$snap_fd" ] || return 0
  echo "COMMIT;" >&"$snap_fd"
  exec {snap_fd}>&-
  wait "$snap_pid" || true
  snap_fd='' snap_pid=''
}
qe_on_exit 'snapshot_release'

# --- the table --------------------------------------------------------------

# Numbers: ≥ 100 as integers with thousands separators, smaller ones with 2 decimals.
fmt() {
  awk -v x="$1" 'BEGIN {
    if (x !~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) { print x; exit }
    if (x + 0 >= 100 || x + 0 <= -100) {
      s = sprintf("%.0f", x); neg = (s ~ /^-/); if (neg) s = substr(s, 2)
      o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
      print (neg ? "-" : "") s o
    } else printf "%.2f\n", x }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a > 0) printf "%.2f", b / a; else print "n/a" }'; }
ROWFMT='%-58s %-4s %3s %14s %14s %9s %9s %9s\n'
# shellcheck disable=SC2059
header() { printf "$ROWFMT" workload sync cli raw engine ratio "p50 ms" "p99 ms"; }
# row WORKLOAD SYNC CLIENTS RAW ENGINE [RATIO [P50 P99]]; RATIO defaults to ENGINE/RAW
row() {
  local r=${6:-$(ratio "$4" "$5")} p50=${7:--} p99=${8:--}
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(fmt "$4")" "$(fmt "$5")" "$r" "$(fmt "$p50")" "$(fmt "$p99")" |
    tee -a "$results" | awk -F '\t' -v f="$ROWFMT" '{ printf f, $1, $2, $3, $4, $5, $6, $7, $8 }'
}

qe_log "bench: workloads ${BENCH_WORKLOADS}; ${BENCH_RUNS} runs of ${BENCH_SECONDS}s each, median; backlog ${BACKLOG}; sync ${BENCH_SYNCS}"
header

# --- workloads 1-4 ----------------------------------------------------------
if want 1 || want 2 || want 3 || want 4; then
  for sync in $BENCH_SYNCS; do
    for clients in 1 8; do
      if want 1; then
        empty
        read -r raw qe <<<"$(run_pair raw_enqueue.sql qe_enqueue.sql "$clients" "$sync")"
        row "1 enqueue (runs/s)" "$sync" "$clients" "$raw" "$qe"
      fi
      if want 2; then
        empty
        read -r raw qe <<<"$(run_pair raw_batch.sql qe_batch.sql "$clients" "$sync")"
        row "2 enqueue_batch 100 (batches/s)" "$sync" "$clients" "$raw" "$qe"
      fi
      if want 3; then
        read -r raw qe <<<"$(run_pair raw_claim_ack.sql qe_dequeue_complete.sql "$clients" "$sync" 1 refill)"
        row "3 dequeue 1 + complete (runs/s)" "$sync" "$clients" "$raw" "$qe"
      fi
      if want 4; then
        read -r raw qe <<<"$(run_pair raw_claim_ack.sql qe_dequeue_complete_batch.sql "$clients" "$sync" 10 refill)"
        row "4 dequeue 10 + complete_batch (tx/s)" "$sync" "$clients" "$raw" "$qe"
      fi
    done
  done
fi

# --- 5: concurrency_limit 8 with 8 workers, vs an unlimited queue ------------
if want 5; then
  reset_engine
  qe_psql -c "SELECT queue_engine.create_queue('limited8', concurrency_limit => 8)" >/dev/null
  for sync in $BENCH_SYNCS; do
    args=(-T "$BENCH_SECONDS" -f "$here/scripts/qe_dequeue_complete_q.sql")
    raw=$(measure_runs "refill_queue bench" "$sync" 8 -D queue=bench "${args[@]}")
    qe=$(measure_runs "refill_queue limited8" "$sync" 8 -D queue=limited8 "${args[@]}")
    row "5 limit 8, 8 workers, dequeue 1 + complete (runs/s)" "$sync" 8 "$raw" "$qe"
  done
fi

# --- 6: 10,000 queues with limit 1 vs one unlimited queue, dequeue(NULL, 1) ---
if want 6; then
  runs6=$(( BENCH_QUEUES * 10 ))
  fill6_raw() { empty; enqueue_n bench "$runs6"; fold; qe_psql -c "VACUUM ANALYZE queue_engine.runs" >/dev/null; }
  fill6() {
    empty
    # COMMIT now and then: enqueue locks its queue's name until commit.
    qe_psql -c "DO \$\$ BEGIN FOR i IN 1 .. $BENCH_QUEUES LOOP
                  PERFORM count(*) FROM queue_engine.enqueue_batch('lim1_' || i, array_fill('{\"n\": 1}'::jsonb, ARRAY[10]));
                  IF i % 500 = 0 THEN COMMIT; END IF;
                END LOOP; END \$\$" \
            -c "SELECT queue_engine.fold_counts(10000000)" -c "VACUUM ANALYZE queue_engine.runs" >/dev/null
  }
  args=(-T "$BENCH_SECONDS" -f "$here/scripts/qe_dequeue_any_complete.sql")
  declare -A raw6=()
  reset_engine
  for sync in $BENCH_SYNCS; do
    raw6[$sync]=$(measure_runs fill6_raw "$sync" 8 "${args[@]}")
  done
  t0=$SECONDS
  # COMMIT now and then: create_queue takes a lock per queue until commit.
  qe_psql -c "DO \$\$ BEGIN FOR i IN 1 .. $BENCH_QUEUES LOOP
                PERFORM queue_engine.create_queue('lim1_' || i, concurrency_limit => 1);
                IF i % 500 = 0 THEN COMMIT; END IF;
              END LOOP; END \$\$" >/dev/null
  qe_log "workload 6: created $BENCH_QUEUES queues in $(( SECONDS - t0 ))s"
  for sync in $BENCH_SYNCS; do
    qe=$(measure_runs fill6 "$sync" 8 "${args[@]}")
    row "6 $BENCH_QUEUES queues limit 1 x 10 runs, dequeue(NULL,1) (runs/s)" "$sync" 8 "${raw6[$sync]}" "$qe"
  done
fi

# --- 7: latency at a 10k and a 1M backlog -------------------------------------
if want 7; then
  reset_engine
  lat_args=(-T "$BENCH_LATENCY_SECONDS" -R "$BENCH_LATENCY_RATE" -D queue=bench -f "$here/scripts/qe_dequeue_complete_q.sql")
  declare -A p99_7=()
  for backlog in "$SMALL_BACKLOG" "$BENCH_BIG_BACKLOG"; do
    topup bench "$backlog"
    for sync in $BENCH_SYNCS; do
      m=$(measure "topup bench $backlog" "$sync" 1 1 "${lat_args[@]}"); read -r tps p50 p99 <<<"$m"
      if [ "$backlog" = "$SMALL_BACKLOG" ]; then r=-; p99_7[$sync]=$p99; else r=$(ratio "${p99_7[$sync]}" "$p99"); fi
      row "7 dequeue+complete latency, $(fmt "$backlog") backlog (tx/s)" "$sync" 1 - "$tps" "$r" "$p50" "$p99"
    done
  done
fi

# --- 8: the same latency with 1M runs blocked behind queues at their limit -----
if want 8; then
  reset_engine
  lat_args=(-T "$BENCH_LATENCY_SECONDS" -R "$BENCH_LATENCY_RATE" -f "$here/scripts/qe_dequeue_any_complete.sql")
  declare -A p99_8=()
  for blocked in 0 1; do
    if [ "$blocked" = 1 ]; then
      t0=$SECONDS
      qe_psql -c "DO \$\$ BEGIN FOR i IN 1 .. $BENCH_BLOCKED_QUEUES LOOP
                    PERFORM queue_engine.create_queue('blocked_' || i, concurrency_limit => 1);
                    PERFORM count(*) FROM queue_engine.enqueue_batch('blocked_' || i,
                      array_fill('{\"n\": 1}'::jsonb, ARRAY[$BENCH_BLOCKED_RUNS + 1]));
                    COMMIT;
                  END LOOP; END \$\$" \
              -c "DO \$\$ BEGIN FOR i IN 1 .. $BENCH_BLOCKED_QUEUES LOOP
                    PERFORM count(*) FROM queue_engine.dequeue(ARRAY['blocked_' || i], 1, lease => '1 day');
                    COMMIT;
                  END LOOP; END \$\$" \
              -c "SELECT queue_engine.fold_counts(10000000)" >/dev/null
      qe_log "workload 8: $BENCH_BLOCKED_QUEUES queues at their limit with $BENCH_BLOCKED_RUNS runs behind each, in $(( SECONDS - t0 ))s"
      label="8 latency dequeue(NULL,1), $(fmt $(( BENCH_BLOCKED_QUEUES * BENCH_BLOCKED_RUNS ))) runs blocked (tx/s)"
    else
      label="8 latency dequeue(NULL,1), no runs blocked (tx/s)"
    fi
    for sync in $BENCH_SYNCS; do
      m=$(measure "topup bench $SMALL_BACKLOG" "$sync" 1 1 "${lat_args[@]}"); read -r tps p50 p99 <<<"$m"
      if [ "$blocked" = 0 ]; then r=-; p99_8[$sync]=$p99; else r=$(ratio "${p99_8[$sync]}" "$p99"); fi
      row "$label" "$sync" 1 - "$tps" "$r" "$p50" "$p99"
    done
  done
  # The blocked runs really were left alone.
  qe_psql -Atc "SELECT sum(executing), sum(queued) FROM queue_engine.queue_stats WHERE queue LIKE 'blocked\_%'" |
    while IFS='|' read -r e q; do qe_log "workload 8: blocked queues now hold $e executing, $q queued runs"; done
fi

# --- 9: on-disk bytes per pending run ------------------------------------------
if want 9; then
  # A 100-byte payload: {"pad": "x...x"} is 100 characters as text.
  payload="jsonb_build_object('pad', repeat('x', 89))"
  psize=$(qe_psql -Atc "SELECT pg_column_size($payload)")
  all=$work/sizes
  : >"$all"
  for ((i = 0; i < BENCH_RUNS; i++)); do
    reset_engine
    qe_psql -c "INSERT INTO raw_jobs (payload) SELECT $payload FROM generate_series(1, $BENCH_SIZE_RUNS)" \
            -c "DO \$\$ DECLARE n int := $BENCH_SIZE_RUNS; BEGIN
                  WHILE n > 0 LOOP
                    PERFORM count(*) FROM queue_engine.enqueue_batch('bench',
                      array_fill($payload, ARRAY[least(n, 10000)]));
                    n := n - 10000;
                  END LOOP; END \$\$" \
            -c "SELECT queue_engine.fold_counts(10000000)" -c "VACUUM" >/dev/null
    rawb=$(qe_psql -Atc "SELECT pg_total_relation_size('raw_jobs')")
    qeb=$(engine_bytes)
    echo "$(( rawb / BENCH_SIZE_RUNS - psize )) $(( qeb / BENCH_SIZE_RUNS - psize ))" >>"$all"
  done
  raw=$(awk '{print $1}' "$all" | median)
  qe=$(awk '{print $2}' "$all" | median)
  row "9 bytes per pending run beyond its ${psize} B payload" - - "$raw" "$qe"
fi

# --- 10: sustained load with and without a held snapshot -------------------------
if want 10; then
  # Retention short enough for the steady state to come within the run (the
  # worker and run_maintenance() read it; the default is 7 days).
  qe_psql -c "ALTER SYSTEM SET queue_engine.finished_run_retention = '$BENCH_SUSTAIN_RETENTION'" \
          -c "SELECT pg_reload_conf()" >/dev/null
  qe_log "workload 10: finished_run_retention = $BENCH_SUSTAIN_RETENTION"
  for sync in $BENCH_SYNCS; do
    # Capacity: the same script (enqueue + dequeue + complete) unthrottled,
    # 8 clients, without a snapshot, from the same backlog.
    reset_engine
    enqueue_n bench "$BENCH_SUSTAIN_BACKLOG"
    qe_psql -c "VACUUM ANALYZE" >/dev/null
    # Warm up first: for its first retention period the load prunes nothing, so
    # a fresh cluster runs faster than the steady state the 5-minute runs are
    # in, and 70 % of that would be near their real capacity.
    pgb "$sync" 8 0 -T "$BENCH_SUSTAIN_WARMUP" -f "$here/scripts/qe_sustain.sql" >/dev/null
    # The median of BENCH_RUNS runs of 15 s: one short run can come out a third
    # high, and a rate near the real capacity puts both p99s in a queue.
    read -r cap _ <<<"$(measure "" "$sync" 8 0 -T 15 -f "$here/scripts/qe_sustain.sql")"
    rate=$(awk -v c="$cap" 'BEGIN { r = int(c * 0.7); print (r < 1 ? 1 : r) }')
    qe_log "workload 10 (sync $sync): $BENCH_SUSTAIN_RUNS x ${BENCH_SUSTAIN_SECONDS}s at $rate tx/s (70% of the $cap tx/s the same script reaches unthrottled), with and without a held snapshot"
    sus_args=(-T "$BENCH_SUSTAIN_SECONDS" -R "$rate" -f "$here/scripts/qe_sustain.sql")
    all=$work/sustain
    : >"$all"
    for ((i = 0; i < BENCH_SUSTAIN_RUNS; i++)); do
      for held in 0 1; do
        reset_engine
        enqueue_n bench "$BENCH_SUSTAIN_BACKLOG"
        qe_psql -c "VACUUM ANALYZE" >/dev/null
        s0=$(engine_bytes)
        [ "$held" = 0 ] || snapshot_hold
        m=$(pgb "$sync" 8 1 "${sus_args[@]}"); read -r tps p50 p99 _ <<<"$m"
        s1=$(engine_bytes)
        echo "$held $tps $p50 $p99 $s0 $s1" >>"$all"
      done
      # After the last run: release, maintain, vacuum; then the same load again.
      if [ "$i" = $(( BENCH_SUSTAIN_RUNS - 1 )) ]; then
        snapshot_release
        qe_psql -c "CALL queue_engine.run_maintenance()" -c "VACUUM" >/dev/null
        a0=$(engine_bytes)
        pgb "$sync" 8 0 -T "$BENCH_SUSTAIN_AFTER" -R "$rate" -f "$here/scripts/qe_sustain.sql" >/dev/null
        qe_psql -c "CALL queue_engine.run_maintenance()" -c "VACUUM" >/dev/null
        a1=$(engine_bytes)
      else
        snapshot_release
      fi
    done
    col() { awk -v h="$1" -v c="$2" '$1 == h {print $c}' "$all" | median; }
    row "10 sustained 70% load, raw=no snapshot, engine=held (tx/s)" "$sync" 8 "$(col 0 2)" "$(col 1 2)" \
        "$(ratio "$(col 0 2)" "$(col 1 2)")" "$(col 1 3)" "$(col 1 4)"
    row "10 sustained p99 ms, raw=no snapshot, engine=held" "$sync" 8 "$(col 0 4)" "$(col 1 4)"
    row "10 engine tables MB, start->end of ${BENCH_SUSTAIN_SECONDS}s" "$sync" 8 \
        "$(mb "$(col 0 5)")->$(mb "$(col 0 6)")" "$(mb "$(col 1 5)")->$(mb "$(col 1 6)")" \
        "$(ratio "$(col 0 6)" "$(col 1 6)")"
    # Growth per second of load: held snapshot, no snapshot, and after the release.
    g_without=$(awk -v a="$(col 0 5)" -v b="$(col 0 6)" -v t="$BENCH_SUSTAIN_SECONDS" 'BEGIN { printf "%.3f", (b - a) / 1048576 / t }')
    g_after=$(awk -v a="$a0" -v b="$a1" -v t="$BENCH_SUSTAIN_AFTER" 'BEGIN { printf "%.3f", (b - a) / 1048576 / t }')
    # Flat (within 1% or 256 kB): stopped. Otherwise compare with the growth of the same load
    # without a snapshot (the engine keeps finished runs, so some growth is expected).
    verdict=$(awk -v a="$a0" -v b="$a1" -v g="$g_after" -v w="$g_without" 'BEGIN {
      if (b - a <= a * 0.01 || b - a <= 262144) print "stopped";
      else if (g <= w * 1.1) print "as unheld";
      else print "growing" }')
    qe_log "workload 10 (sync $sync): after release + maintenance + VACUUM: $(mb "$a0") MB, after ${BENCH_SUSTAIN_AFTER}s more load + VACUUM: $(mb "$a1") MB ($g_after MB/s; without a snapshot the load grew the tables $g_without MB/s)"
    row "10 after release+maintenance+VACUUM, +${BENCH_SUSTAIN_AFTER}s load: MB, MB/s" "$sync" 8 \
        "+$g_without/s" "$(mb "$a0")->$(mb "$a1") +$g_after/s" "$verdict"
  done
  qe_psql -c "ALTER SYSTEM RESET queue_engine.finished_run_retention" -c "SELECT pg_reload_conf()" >/dev/null
fi

# --- 11: a tenant-scoped role vs the extension owner --------------------------
# The same scripts as workloads 1 and 3, run as the owner (postgres) and as a
# role scoped to BENCH_SCOPED_TENANTS tenants (producer and worker on 'default',
# the bench queue's, and reader on the others), alternating owner and scoped
# runs; the state is reset before each run as the owner.
if want 11; then
  reset_engine
  qe_psql -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS bench_scoped" \
          -c "CREATE ROLE bench_scoped LOGIN" \
          -c "SELECT queue_engine.grant_tenant('bench_scoped', 'default', 'producer')" \
          -c "SELECT queue_engine.grant_tenant('bench_scoped', 'default', 'worker')" \
          -c "SELECT queue_engine.grant_tenant('bench_scoped', 'scoped_' || i, 'reader')
                FROM generate_series(2, $BENCH_SCOPED_TENANTS) i" >/dev/null
  scoped_pair() {  # scoped_pair SCRIPT CLIENTS SYNC PREP -> "owner_tps scoped_tps"
    local script=$1 clients=$2 sync=$3 prep=$4 i pair=$work/scoped
    : >"$pair.owner"; : >"$pair.scoped"
    for ((i = 0; i < BENCH_RUNS; i++)); do
      $prep
      BENCH_RUNS=1 run_pgbench "$script" "$clients" "$sync" >>"$pair.owner"
      $prep
      PGUSER=bench_scoped BENCH_RUNS=1 run_pgbench "$script" "$clients" "$sync" >>"$pair.scoped"
    done
    echo "$(median <"$pair.owner") $(median <"$pair.scoped")"
  }
  for sync in $BENCH_SYNCS; do
    for clients in $BENCH_SCOPED_CLIENTS; do
      read -r raw qe <<<"$(scoped_pair qe_enqueue.sql "$clients" "$sync" empty)"
      row "11 enqueue, scoped role vs owner (runs/s)" "$sync" "$clients" "$raw" "$qe"
      read -r raw qe <<<"$(scoped_pair qe_dequeue_complete.sql "$clients" "$sync" refill)"
      row "11 dequeue 1 + complete, scoped role vs owner (runs/s)" "$sync" "$clients" "$raw" "$qe"
    done
  done
  qe_psql -c "SELECT queue_engine.revoke_tenant('bench_scoped', t.tenant) FROM queue_engine.tenants t
               WHERE t.tenant = 'default' OR t.tenant LIKE 'scoped_%'" -c "DROP ROLE bench_scoped" >/dev/null
fi

# --- mem: one backend across BENCH_MEMORY_CALLS dequeue + complete calls ---------
if want mem; then
  reset_engine
  t0=$SECONDS
  out=$(qe_psql -v calls="$BENCH_MEMORY_CALLS" -v max_seconds="$BENCH_MEMORY_MAX_SECONDS" \
                -v spi_calls="$BENCH_MEMORY_SPI_CALLS" -f "$here/memory.sql")
  get() { awk -F '|' -v w="$1" -v c="$2" '$1 == w {print $c}' <<<"$out"; }
  qe_log "mem: $(get calls 2) dequeue + complete calls in $(( SECONDS - t0 ))s"
  n=$(fmt "$(get calls 2)")
  for m in "2 contexts kB" "3 RssAnon kB" "4 VmRSS-RssShmem kB"; do
    c=${m%% *} name=${m#* }
    before=$(get before "$c") after=$(get after "$c") peak=$(get peak "$c")
    if [ "$c" = 2 ]; then before=$(( before / 1024 )) after=$(( after / 1024 )) peak=$(( peak / 1024 )); fi
    row "mem: $name before->after $n calls ($(printf '%+d' $(( after - before ))), peak $(fmt "$peak"))" off 1 "$before" "$after"
  done
  # Bytes the procedure's SPI context gains per iteration (two write transactions each).
  per_iter() { awk -v b="$1" -v n="$2" 'BEGIN { printf "%.1f", b / n }'; }
  row "mem: SPI Proc bytes per dequeue+complete iteration, $(fmt "$(get spi 2)") in one CALL" off 1 \
    "$(per_iter "$(get spi 3)" "$(get spi 2)")" "$(per_iter "$(get spi 4)" "$(get spi 2)")"
fi

# --- memclient: the same, called the way a worker calls (one statement each) ---
# One psql session (one backend) runs BENCH_MEMORY_CALLS separate dequeue and
# complete statements; its private memory is read before (after a warm-up)
# and after, from the same session.
if want memclient; then
  reset_engine
  pairs=$(( BENCH_MEMORY_CALLS / 2 ))
  qe_psql -c "SELECT queue_engine.create_queue('bench_mem')" \
          -c "SELECT count(*) FROM queue_engine.enqueue_batch('bench_mem', array_fill('{\"n\": 1}'::jsonb, ARRAY[$(( pairs + 10 ))]))" >/dev/null
  t0=$SECONDS
  out=$( { cat "$here/memory_client.sql"
           seq 1 "$pairs" | awk '{ print "SELECT run_id AS rid FROM queue_engine.dequeue(ARRAY['"'"'bench_mem'"'"'], 1) \\gset"
                                  print "SELECT queue_engine.complete(:rid);" }'
           cat "$here/memory_client_end.sql"; } | qe_psql -X -At -q | grep -E '^(before|after|completed)' )
  get() { awk -F '|' -v w="$1" -v c="$2" '$1 == w {print $c}' <<<"$out"; }
  qe_log "memclient: $(( pairs * 2 )) calls in $(( SECONDS - t0 ))s, $(get completed 2) runs completed"
  n=$(fmt "$(( pairs * 2 ))")
  b=$(( $(get before_contexts 2) / 1024 )) a=$(( $(get after_contexts 2) / 1024 ))
  row "memclient: contexts kB before->after $n calls ($(printf '%+d' $(( a - b ))))" off 1 "$b" "$a"
  b=$(get before 2) a=$(get after 2)
  row "memclient: RssAnon kB before->after $n calls ($(printf '%+d' $(( a - b ))))" off 1 "$b" "$a"
  b=$(get before 3) a=$(get after 3)
  row "memclient: VmRSS-RssShmem kB before->after $n calls ($(printf '%+d' $(( a - b ))))" off 1 "$b" "$a"
fi

# --- the final table ----------------------------------------------------------
echo
echo "===== bench results ($(date -u '+%Y-%m-%d %H:%M UTC'); runs ${BENCH_RUNS} x ${BENCH_SECONDS}s, median) ====="
header
awk -F '\t' -v f="$ROWFMT" '{ printf f, $1, $2, $3, $4, $5, $6, $7, $8 }' "$results"
if [ -n "$BENCH_OUT" ]; then
  {
    echo "| workload | sync commit | clients | raw | queue_engine | ratio | p50 ms | p99 ms |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F '\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$results"
  } >"$BENCH_OUT"
  qe_log "table written to $BENCH_OUT"
fi
