#!/usr/bin/env bash
# test/bench/run.sh: what `make bench` runs. queue_engine against the rawest
# SQL doing the same job, side by side in one cluster and one run; prints a
# table of throughputs and ratios (median of BENCH_RUNS runs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_RUNS=${BENCH_RUNS:-3}
BACKLOG=${BENCH_BACKLOG:-200000}

qe_install_packages
qe_build_install
# Stated settings: modest memory for a 2-core box; fsync and full_page_writes on.
qe_cluster_start bench \
  "shared_buffers = 1GB" "max_wal_size = 4GB" "checkpoint_timeout = 30min" \
  "max_connections = 50" "autovacuum_naptime = 10s"
qe_psql -f "$here/setup.sql" >/dev/null

results=$(mktemp)
qe_on_exit "rm -f '$results'"

# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# run_pgbench SCRIPT CLIENTS SYNC [BATCH] -> tps (median of BENCH_RUNS)
run_pgbench() {
  local script=$1 clients=$2 sync=$3 batch=${4:-1} prep=${5:-}
  local i tps all=()
  for ((i = 0; i < BENCH_RUNS; i++)); do
    [ -n "$prep" ] && $prep
    tps=$(PGOPTIONS="-c synchronous_commit=$sync" pgbench -n -M prepared -c "$clients" -j "$clients" \
            -T "$BENCH_SECONDS" -D batch="$batch" -f "$here/scripts/$script" 2>/dev/null |
          sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    all+=("${tps:-0}")
  done
  printf '%s\n' "${all[@]}" | median
}

refill() {
  empty
  qe_psql -c "INSERT INTO raw_jobs (payload) SELECT '{\"n\": 1}' FROM generate_series(1, $BACKLOG)" \
          -c "SELECT count(*) FROM queue_engine.enqueue_batch('bench', array_fill('{\"n\": 1}'::jsonb, ARRAY[$BACKLOG]))" \
          -c "SELECT queue_engine.fold_counts(1000000)" \
          -c "VACUUM ANALYZE raw_jobs" -c "VACUUM ANALYZE queue_engine.runs" >/dev/null
}
empty() {
  qe_psql -c "TRUNCATE raw_jobs" -c "TRUNCATE queue_engine.runs, queue_engine.queue_count_deltas" \
          -c "UPDATE queue_engine.queue_counts SET queued = 0, delayed = 0, executing = 0, waiting = 0" >/dev/null
}

row() {  # workload sync clients raw qe unit
  local ratio
  ratio=$(awk -v r="$4" -v q="$5" 'BEGIN { if (r > 0) printf "%.2f", q / r; else print "n/a" }')
  printf '%-34s %-4s %3s %12s %12s %7s\n' "$1" "$2" "$3" "$4" "$5" "$ratio" | tee -a "$results"
}

qe_log "bench: ${BENCH_RUNS} runs of ${BENCH_SECONDS}s each, median; backlog ${BACKLOG}"
printf '%-34s %-4s %3s %12s %12s %7s\n' workload sync cli "raw/s" "engine/s" ratio
for sync in on off; do
  for clients in 1 8; do
    empty
    raw=$(run_pgbench raw_enqueue.sql "$clients" "$sync")
    qe=$(run_pgbench qe_enqueue.sql "$clients" "$sync")
    row "1 enqueue (runs/s)" "$sync" "$clients" "$raw" "$qe"

    empty
    raw=$(run_pgbench raw_batch.sql "$clients" "$sync")
    qe=$(run_pgbench qe_batch.sql "$clients" "$sync")
    row "2 enqueue_batch 100 (batches/s)" "$sync" "$clients" "$raw" "$qe"

    raw=$(run_pgbench raw_claim_ack.sql "$clients" "$sync" 1 refill)
    qe=$(run_pgbench qe_dequeue_complete.sql "$clients" "$sync" 1 refill)
    row "3 dequeue 1 + complete (runs/s)" "$sync" "$clients" "$raw" "$qe"

    raw=$(run_pgbench raw_claim_ack.sql "$clients" "$sync" 10 refill)
    qe=$(run_pgbench qe_dequeue_complete_batch.sql "$clients" "$sync" 10 refill)
    row "4 dequeue 10 + complete_batch (tx/s)" "$sync" "$clients" "$raw" "$qe"
  done
done
