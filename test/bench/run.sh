#!/usr/bin/env bash
# test/bench/run.sh: what `make bench` runs. queue_engine against the rawest
# SQL doing the same job (or against itself under an easier condition), side
# by side in one cluster and one run; prints one table of throughputs,
# latencies, sizes and ratios (each figure the median of BENCH_RUNS runs),
# then a summary of issue 15's targets, one line each: target, figures, bar,
# met / not met (each for every BENCH_PRELOAD mode).
#
# Workloads (BENCH_WORKLOADS, space separated, default all):
#   1  enqueue, one run per transaction            raw INSERT vs enqueue
#   2  enqueue_batch of 100                        raw INSERT ... generate_series vs enqueue_batch
#   3  dequeue 1 + complete from a backlog         raw claim+ack vs dequeue + complete
#   4  dequeue 10 + complete_batch                 raw claim+ack of 10 vs dequeue 10 + complete_batch
#      (1-4 each with BENCH_CLIENTS clients; targets: engine/raw at 8 clients, and 8 clients / 1 client
#      with sync off for 3 and 4, engine and raw)
#   5  8 workers on a queue with concurrency_limit 8 ("raw" = the same on an unlimited queue)
#   6  10,000 queues with concurrency_limit 1, 8 workers, dequeue(NULL, 1)
#      ("raw" = one unlimited queue with the same backlog, dequeue(NULL, 1))
#   7  latency of dequeue + complete at a fixed rate, 10k vs 1M backlog (ratio = p99 1M / p99 10k)
#   8  the same latency (dequeue(NULL, 1)) with 1M runs blocked behind queues at their
#      limit vs without (ratio = p99 with / p99 without)
#   9  on-disk bytes per pending run beyond its payload, raw_jobs vs the engine's schema
#   10 sustained mixed load (enqueue + dequeue + complete, 8 clients) at 70% of what the same script
#      reaches unthrottled, for BENCH_SUSTAIN_SECONDS, with no holder ("raw") and with each holder of
#      BENCH_HOLDERS ("engine"): "read" = a session in a REPEATABLE READ transaction that has read
#      (holds a snapshot), "write" = a session idle in transaction after an INSERT into an unrelated
#      table (holds an xid); unheld and held runs alternate. Once per finished_run_retention of
#      BENCH_SUSTAIN_RETENTIONS and per sync:
#        retention -1 (finished runs kept, the history grows alike): growth of the engine's tables
#          during the held run / during the unheld run (target <= 1.5);
#        any other retention: after the load, the holder released, BENCH_SUSTAIN_AFTER s more of the
#          same load, then CALL run_maintenance() and a plain VACUUM (never VACUUM FULL; autovacuum and
#          the worker run throughout): the engine's tables but the finished-run history
#          (BENCH_HISTORY_RELS), held run / unheld run treated the same way (target <= 1.1);
#        both: throughput held / unheld (>= 0.95) and p99 held / unheld (<= 1.5).
#   11 a tenant-scoped role (producer and worker on the bench queue's tenant, among
#      BENCH_SCOPED_TENANTS granted tenants) vs the extension owner: enqueue, and dequeue 1 +
#      complete from a backlog, BENCH_SCOPED_CLIENTS clients ("raw" = the owner, "engine" =
#      the scoped role; owner and scoped runs alternate; ratio = scoped / owner)
#   12 waits and events: BENCH_WAIT_RUNS runs waiting for 'order.paid', each with its own match
#      {"order_id": id}: p99 of send_event waking one (pgbench, 1 client, BENCH_WAIT_SENDS sends per run,
#      each naming a distinct waiting id) against the same with BENCH_WAIT_SMALL waiting (target: ratio
#      <= 1.25, p99 < 5 ms); an event matching nothing (same bars); the same with
#      BENCH_WAIT_OTHER_EVENTS other event names also waited for (ratio to without <= 1.25); one
#      send_event waking BENCH_WAIT_FANOUT runs waiting with the same match (< 1 s); the cycle
#      wait_for_event -> send_event -> dequeue (resume) -> complete, 8 clients, against the same
#      without the wait (each client enqueues into its own queue first; reported, no bar); bytes of
#      queue_engine.waiting_runs with its indexes per waiting run (reported, no bar). About 4-5
#      minutes per preload mode with both syncs.
#   13 runs list (issue 17): BENCH_LIST_RUNS finished runs (100 queues of 10 tenants, statuses, 30 days of
#      created_at, 20% tagged; written by a direct INSERT ... SELECT generate_series into finished_runs and
#      run_tags, which bypasses the API for speed: test/bench/list_runs.sql) and a pending backlog of 3,000
#      runs through the API, in a cluster of its own (kept between the preload modes; BENCH_LIST_REUSE=1
#      keeps it, filled, in BENCH_LIST_DIR between runs); then p50/p99 of one list_runs page of 50 (pgbench,
#      1 client, BENCH_LIST_SECONDS per run) for each filter of BENCH_LIST_KINDS (none, queue, tenant,
#      status failed, tag, a one-day time range, payload_contains) from each position of
#      BENCH_LIST_POSITIONS (the first page, page 5 following the cursors, a cursor in the middle of the
#      history), random queue/tenant/tag/day/customer each page; "raw" = the same page in plain SQL on
#      finished_runs (scripts/raw_list_*.sql; ratio = engine p99 / raw p99). Targets: p99 < 20 ms for each
#      single filter of queue, tenant, status, tag and time range.
#   14 metrics cost (issue 17): BENCH_METRICS_QUEUES queues over BENCH_METRICS_TENANTS tenants, each with a
#      few runs in various states made through the API; metrics() called back to back from one client
#      for BENCH_METRICS_SECONDS: ms per call, its output's size, the calling backend's CPU per call
#      (/proc), and % of one core at one call a second (= ms per call / 10; target < 1); "raw" =
#      SELECT * FROM queue_engine.queue_stats the same way.
#   15 blocking dequeue (issue 17; test/bench/wait_bench.py, Python 3 with psycopg2): enqueue-commit ->
#      run returned to a worker blocked in dequeue(wait => '10 s'), p50 and p99 over BENCH_WAIT_SAMPLES
#      (targets < 1 ms and < 5 ms), with each of BENCH_WAIT_WAITERS workers blocked on the queue, per sync;
#      "raw" = the same with a worker polling dequeue (no wait) every BENCH_WAIT_POLL_MS; then
#      BENCH_WAIT_IDLE_CONNS workers blocked in dequeue(wait => '10 s') in a loop on an empty queue for
#      BENCH_WAIT_IDLE_SECONDS: their backends' CPU as % of one core (target < 1), and backend_xmin NULL
#      in pg_stat_activity whenever one is seen asleep (target: no exception), and pg_cancel_backend ->
#      error of each.
#   mem one backend, BENCH_MEMORY_CALLS dequeue + complete calls from a procedure loop (target:
#       the memory contexts' growth over the second half of the calls, where a leak grows as in
#       the first and one-time caches, such as a saved plan per segment combination, do not):
#       private memory before/peak/after; then the procedure's "SPI Proc" context's growth over
#       BENCH_MEMORY_SPI_CALLS iterations of the raw claim+ack loop vs the engine's
#   memclient one backend, BENCH_MEMORY_CALLS dequeue + complete calls as separate statements
#       from a client (how workers call): private memory before/halfway/after (target as for mem)
#   soak enqueue + dequeue + complete, 8 clients, at 70% of capacity (measured as for 10) for
#       BENCH_SOAK_SECONDS with finished_run_retention BENCH_SOAK_RETENTION, per sync of
#       BENCH_SOAK_SYNCS: the engine's tables sampled every BENCH_SOAK_SAMPLE_SECONDS; flat = every
#       sample of the last 10 minutes (the last third when the soak is shorter than 30 minutes)
#       within +-10% of their mean; p99 per sample interval: median over the last third / median
#       over the first third <= 1.5 (not growing).
#
# Every workload runs once per mode of BENCH_PRELOAD: "on" = shared_preload_libraries includes
# the library (its worker maintains the bench database every second, dequeue has its shared-memory
# hints), "off" = not preloaded, and the bench itself calls CALL queue_engine.run_maintenance()
# every BENCH_MAINTENANCE_INTERVAL seconds (as pg_cron would); the same cluster is restarted
# between modes, and each mode's rows and targets are reported separately.
#
# Knobs: BENCH_WORKLOADS, BENCH_PRELOAD ("on off"), BENCH_SECONDS (5), BENCH_RUNS (3),
#   BENCH_SYNCS ("on off"), BENCH_CLIENTS ("1 8", workloads 1-4),
#   BENCH_BACKLOG (200000, workloads 3-5), BENCH_QUEUES (10000, workload 6),
#   BENCH_LATENCY_RATE (250 tx/s, workloads 7-8), BENCH_LATENCY_SECONDS (20: a p99 needs more
#   than the 1,250 transactions of 5 s), BENCH_BIG_BACKLOG (1000000, workload 7),
#   BENCH_BLOCKED_QUEUES (100) x BENCH_BLOCKED_RUNS (10000) (workload 8),
#   BENCH_SIZE_RUNS (100000, workload 9),
#   workload 10: BENCH_SUSTAIN_SECONDS (300), BENCH_SUSTAIN_RUNS (BENCH_RUNS), BENCH_HOLDERS
#   ("read write"), BENCH_SUSTAIN_RETENTIONS ("-1 $BENCH_SUSTAIN_RETENTION"),
#   BENCH_SUSTAIN_RETENTION (30s: the retention of the second mode, short so that its steady state,
#   where retention deletes what the load adds, comes within the run), BENCH_SUSTAIN_AFTER
#   (max(10, SUSTAIN/5) s of load after the release), BENCH_SUSTAIN_BACKLOG (10000),
#   BENCH_HISTORY_RELS ('^finished_runs$': a regular expression on the names of the engine's
#   tables that hold finished-run history, left out with their indexes and toast; since storage
#   0.2 that is finished_runs, and every other table counts: the ready, delayed and executing
#   segments, queue_count_deltas_*, idempotency_keys, queue_policies, queues, ...),
#   workloads 10 and soak: BENCH_SUSTAIN_WARMUP (60 s of unthrottled load before measuring the
#   capacity, so that retention is pruning by then), BENCH_SUSTAIN_CAPACITY_SECONDS (15: the
#   capacity is the median of BENCH_RUNS unthrottled runs this long),
#   soak: BENCH_SOAK_SECONDS (1800), BENCH_SOAK_RETENTION (60s), BENCH_SOAK_SYNCS ("off": the
#   highest rate), BENCH_SOAK_SAMPLE_SECONDS (60, or SOAK/15 when the soak is shorter than 15 min),
#   BENCH_MAINTENANCE_INTERVAL (1 s, BENCH_PRELOAD=off),
#   BENCH_MEMORY_CALLS (1000000), BENCH_MEMORY_MAX_SECONDS (1800: the memory loop stops there),
#   BENCH_MEMORY_SPI_CALLS (20000), BENCH_SCOPED_CLIENTS ("1", workload 11),
#   BENCH_SCOPED_TENANTS (20, workload 11),
#   workload 12: BENCH_WAIT_RUNS (250000), BENCH_WAIT_SMALL (1000), BENCH_WAIT_SENDS (1000: sends per
#   p99 run), BENCH_WAIT_OTHER_EVENTS (10000), BENCH_WAIT_FANOUT (10000), BENCH_WAIT_MAX_SECONDS (10:
#   fewer sends in a run, at least 50, when a 20-send probe says BENCH_WAIT_SENDS would take longer),
#   workload 13: BENCH_LIST_RUNS (10000000), BENCH_LIST_SECONDS (10: one latency run), BENCH_LIST_KINDS
#   ("none queue tenant status tag time payload"), BENCH_LIST_POSITIONS ("first page5 middle"),
#   BENCH_LIST_CHUNK (500000 rows per transaction of the fill), BENCH_LIST_REUSE (0; 1: the list cluster
#   lives in BENCH_LIST_DIR (/var/tmp/queue_engine_bench_list) and is reused, filled, by later runs while
#   BENCH_LIST_RUNS and the installed extension scripts are the same; an interrupted fill goes on),
#   workload 14: BENCH_METRICS_QUEUES (10000), BENCH_METRICS_TENANTS (100), BENCH_METRICS_SECONDS (20),
#   workload 15: BENCH_WAIT_SAMPLES (1000), BENCH_WAIT_WAITERS ("1 8"), BENCH_WAIT_POLL_MS (10),
#   BENCH_WAIT_IDLE_CONNS (100), BENCH_WAIT_IDLE_SECONDS (30),
#   BENCH_BUILD (1; 0: skip make + make install, the extension is installed already),
#   BENCH_OUT (also write both tables there, as markdown).
#
# Issue 15's targets only, shortened (about 40 minutes per preload mode on a 2-core machine; 1-4
# and 9 at their defaults, the holds and the soak shortened: a screening, not the measurement):
#   BENCH_PRELOAD=on BENCH_WORKLOADS="1 2 3 4 9 10 soak" BENCH_SUSTAIN_SECONDS=60 BENCH_SUSTAIN_RUNS=1 \
#   BENCH_SUSTAIN_AFTER=20 BENCH_SUSTAIN_WARMUP=30 BENCH_SUSTAIN_CAPACITY_SECONDS=10 \
#   BENCH_SOAK_SECONDS=240 make bench                (then the same with BENCH_PRELOAD=off)
# A quick smoke run of everything (about 10 minutes per preload mode; figures meaningless):
#   BENCH_SECONDS=2 BENCH_RUNS=1 BENCH_BACKLOG=20000 BENCH_QUEUES=500 BENCH_LATENCY_SECONDS=5 \
#   BENCH_BIG_BACKLOG=100000 BENCH_BLOCKED_QUEUES=10 BENCH_BLOCKED_RUNS=2000 BENCH_SIZE_RUNS=20000 \
#   BENCH_SUSTAIN_SECONDS=20 BENCH_SUSTAIN_AFTER=10 BENCH_SUSTAIN_WARMUP=5 \
#   BENCH_SUSTAIN_CAPACITY_SECONDS=5 BENCH_SOAK_SECONDS=60 BENCH_MEMORY_CALLS=20000 \
#   BENCH_MEMORY_SPI_CALLS=2000 make bench
set -euo pipefail
shopt -s inherit_errexit   # a failing step inside $(...) stops the bench too
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SYNCS=${BENCH_SYNCS:-on off}
BENCH_CLIENTS=${BENCH_CLIENTS:-1 8}
BENCH_PRELOAD=${BENCH_PRELOAD:-on off}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 mem memclient soak}
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
BENCH_SUSTAIN_CAPACITY_SECONDS=${BENCH_SUSTAIN_CAPACITY_SECONDS:-15}
BENCH_SUSTAIN_RETENTION=${BENCH_SUSTAIN_RETENTION:-30s}
BENCH_SUSTAIN_RETENTIONS=${BENCH_SUSTAIN_RETENTIONS:--1 $BENCH_SUSTAIN_RETENTION}
BENCH_HOLDERS=${BENCH_HOLDERS:-read write}
BENCH_HISTORY_RELS=${BENCH_HISTORY_RELS:-^finished_runs\$}
BENCH_SOAK_SECONDS=${BENCH_SOAK_SECONDS:-1800}
BENCH_SOAK_RETENTION=${BENCH_SOAK_RETENTION:-60s}
BENCH_SOAK_SYNCS=${BENCH_SOAK_SYNCS:-off}
BENCH_SOAK_SAMPLE_SECONDS=${BENCH_SOAK_SAMPLE_SECONDS:-$(( BENCH_SOAK_SECONDS >= 900 ? 60 : (BENCH_SOAK_SECONDS / 15 > 1 ? BENCH_SOAK_SECONDS / 15 : 1) ))}
BENCH_MAINTENANCE_INTERVAL=${BENCH_MAINTENANCE_INTERVAL:-1}
BENCH_MEMORY_CALLS=${BENCH_MEMORY_CALLS:-1000000}
BENCH_MEMORY_SPI_CALLS=${BENCH_MEMORY_SPI_CALLS:-20000}
BENCH_MEMORY_MAX_SECONDS=${BENCH_MEMORY_MAX_SECONDS:-1800}
BENCH_SCOPED_CLIENTS=${BENCH_SCOPED_CLIENTS:-1}
BENCH_SCOPED_TENANTS=${BENCH_SCOPED_TENANTS:-20}
BENCH_WAIT_RUNS=${BENCH_WAIT_RUNS:-250000}
BENCH_WAIT_SMALL=${BENCH_WAIT_SMALL:-1000}
BENCH_WAIT_SENDS=${BENCH_WAIT_SENDS:-1000}
BENCH_WAIT_OTHER_EVENTS=${BENCH_WAIT_OTHER_EVENTS:-10000}
BENCH_WAIT_FANOUT=${BENCH_WAIT_FANOUT:-10000}
BENCH_WAIT_MAX_SECONDS=${BENCH_WAIT_MAX_SECONDS:-10}
W12_RUNS=$BENCH_WAIT_RUNS W12_SMALL=$BENCH_WAIT_SMALL W12_SENDS=$BENCH_WAIT_SENDS
W12_OTHER=$BENCH_WAIT_OTHER_EVENTS W12_FANOUT=$BENCH_WAIT_FANOUT
BENCH_LIST_RUNS=${BENCH_LIST_RUNS:-10000000}
BENCH_LIST_SECONDS=${BENCH_LIST_SECONDS:-10}
BENCH_LIST_KINDS=${BENCH_LIST_KINDS:-none queue tenant status tag time payload}
BENCH_LIST_POSITIONS=${BENCH_LIST_POSITIONS:-first page5 middle}
BENCH_LIST_CHUNK=${BENCH_LIST_CHUNK:-500000}
BENCH_LIST_REUSE=${BENCH_LIST_REUSE:-0}
BENCH_LIST_DIR=${BENCH_LIST_DIR:-/var/tmp/queue_engine_bench_list}
BENCH_METRICS_QUEUES=${BENCH_METRICS_QUEUES:-10000}
BENCH_METRICS_TENANTS=${BENCH_METRICS_TENANTS:-100}
BENCH_METRICS_SECONDS=${BENCH_METRICS_SECONDS:-20}
BENCH_WAIT_SAMPLES=${BENCH_WAIT_SAMPLES:-1000}
BENCH_WAIT_WAITERS=${BENCH_WAIT_WAITERS:-1 8}
BENCH_WAIT_POLL_MS=${BENCH_WAIT_POLL_MS:-10}
BENCH_WAIT_IDLE_CONNS=${BENCH_WAIT_IDLE_CONNS:-100}
BENCH_WAIT_IDLE_SECONDS=${BENCH_WAIT_IDLE_SECONDS:-30}
BENCH_BUILD=${BENCH_BUILD:-1}
BENCH_OUT=${BENCH_OUT:-}
SMALL_BACKLOG=10000   # workloads 7 and 8
# Bars for "everything already met stays met" (the issue gives no figure; these are the
# bench's): workloads 5-6 engine / raw, 7-8 p99 ratio, mem growth of memory contexts.
STAYS_RATIO=0.8
STAYS_P99=1.5
STAYS_MEM_KB=1024

for w in $BENCH_WORKLOADS; do
  case $w in 1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|mem|memclient|soak) ;; *) qe_die "BENCH_WORKLOADS: unknown workload '$w' (1-15, mem, memclient, soak)" ;; esac
done
for p in $BENCH_PRELOAD; do
  case $p in on|off) ;; *) qe_die "BENCH_PRELOAD: unknown mode '$p' (on, off)" ;; esac
done
for k in $BENCH_LIST_KINDS; do
  case $k in none|queue|tenant|status|tag|time|payload) ;; *) qe_die "BENCH_LIST_KINDS: unknown filter '$k' (none queue tenant status tag time payload)" ;; esac
done
for k in $BENCH_LIST_POSITIONS; do
  case $k in first|page5|middle) ;; *) qe_die "BENCH_LIST_POSITIONS: unknown position '$k' (first page5 middle)" ;; esac
done
for h in $BENCH_HOLDERS; do
  case $h in read|write) ;; *) qe_die "BENCH_HOLDERS: unknown holder '$h' (read, write)" ;; esac
done
want() { [[ " $BENCH_WORKLOADS " == *" $1 "* ]]; }
has() { [[ " $1 " == *" $2 "* ]]; }   # has LIST WORD

qe_install_packages
# Workload 15's client: Debian's python3 with psycopg2 (or psycopg 3), installed when missing.
PYTHON=/usr/bin/python3
have_psycopg() { "$PYTHON" -c 'import psycopg2' 2>/dev/null || "$PYTHON" -c 'import psycopg' 2>/dev/null; }
if want 15 && ! have_psycopg; then
  if [ "$(id -u)" -eq 0 ]; then
    qe_log "packages: installing python3-psycopg2 (workload 15)"
    DEBIAN_FRONTEND=noninteractive qe_retry 3 apt-get -q -y -o DPkg::Lock::Timeout=600 \
      install --no-install-recommends python3-psycopg2 </dev/null >/dev/null || true
  fi
  have_psycopg || qe_log "workload 15 will be skipped: $PYTHON has neither psycopg2 nor psycopg (Debian python3-psycopg2)"
fi
[ "$BENCH_BUILD" = 0 ] || qe_build_install
# Stated settings: modest memory for a 2-core box; fsync and full_page_writes on;
# the library preloaded, as README recommends (its worker maintains the
# bench database every second, and dequeue has its shared-memory hints);
# BENCH_PRELOAD=off takes it out with ALTER SYSTEM and a restart.
# (workload 15 blocks BENCH_WAIT_IDLE_CONNS workers at once, beside the bench's own sessions)
qe_cluster_start bench \
  "shared_buffers = 1GB" "max_wal_size = 4GB" "checkpoint_timeout = 30min" \
  "max_connections = $(want 15 && echo $(( BENCH_WAIT_IDLE_CONNS + 30 > 50 ? BENCH_WAIT_IDLE_CONNS + 30 : 50 )) || echo 50)" \
  "autovacuum_naptime = 10s" \
  "shared_preload_libraries = '$QE_EXTENSION'"

work=$(mktemp -d)
results=$work/results.tsv
summary=$work/summary.tsv
: >"$results"
: >"$summary"
qe_on_exit "rm -rf '$work'"
PRELOAD=on   # the mode being measured: a column of every row and target

# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# pgb SYNC CLIENTS LOG PGBENCH-ARGS... -> "tps p50 p99" of one pgbench run (ms; "-" unless LOG=1).
# Latencies come from pgbench's per-transaction log (with -R they include the schedule lag).
pgb() {
  local sync=$1 clients=$2 log=$3 out rc=0 lat="- -" logargs=()
  shift 3
  rm -f "$work"/lat.* "$work/pgbench.err"
  [ "$log" != 1 ] || logargs=(-l --log-prefix="$work/lat")
  out=$(PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=$sync" pgbench -n -M prepared -c "$clients" -j "$clients" \
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
completed() { qe_psql -Atc "SELECT count(*) FROM queue_engine.finished_runs WHERE status = 'completed'"; }
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

# The tables runs are kept in (storage 0.2), for VACUUM and ANALYZE: the segments by name
# (VACUUM of an inheritance parent does not process its children), the parents too (ANALYZE
# of a parent gathers the statistics of the whole family, which plans through it use).
QE_RUN_TABLES="queue_engine.ready, queue_engine.ready_0, queue_engine.ready_1,
  queue_engine.delayed, queue_engine.delayed_0, queue_engine.delayed_1,
  queue_engine.executing, queue_engine.executing_0, queue_engine.executing_1, queue_engine.finished_runs"

# A fresh engine (no queues but 'bench', no runs) and an empty raw_jobs.
reset_engine() {
  maintenance_pause
  qe_psql -c "SET client_min_messages = warning" \
          -c "DROP EXTENSION IF EXISTS queue_engine CASCADE" -c "CREATE EXTENSION queue_engine" \
          -c "SELECT queue_engine.create_queue('bench')" -c "TRUNCATE raw_jobs" >/dev/null
  maintenance_resume
}
empty() {
  maintenance_pause
  # (TRUNCATE of a family's parent empties its segments too.)
  qe_psql -c "TRUNCATE raw_jobs" \
          -c "TRUNCATE queue_engine.ready, queue_engine.delayed, queue_engine.executing,
                       queue_engine.finished_runs, queue_engine.queue_count_deltas" \
          -c "UPDATE queue_engine.queue_counts SET queued = 0, delayed = 0, executing = 0, waiting = 0" >/dev/null
  maintenance_resume
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
  qe_psql -c "VACUUM ANALYZE $QE_RUN_TABLES" -c "CHECKPOINT" >/dev/null
}
refill() {  # workloads 3 and 4: BACKLOG runs in raw_jobs and in queue 'bench'
  empty
  qe_psql -c "INSERT INTO raw_jobs (payload) SELECT '{\"n\": 1}' FROM generate_series(1, $BACKLOG)" \
          -c "SELECT count(*) FROM queue_engine.enqueue_batch('bench', array_fill('{\"n\": 1}'::jsonb, ARRAY[$BACKLOG]))" \
          -c "SELECT queue_engine.fold_counts(1000000)" \
          -c "VACUUM ANALYZE raw_jobs" -c "VACUUM ANALYZE $QE_RUN_TABLES" >/dev/null
}
refill_queue() {  # refill_queue QUEUE: only BACKLOG runs in QUEUE
  empty
  enqueue_n "$1" "$BACKLOG"
  fold
  # A checkpoint after the refill's WAL, so that none starts inside the short
  # latency run that follows (both sides of workloads 7 and 8 get the same).
  qe_psql -c "VACUUM ANALYZE $QE_RUN_TABLES" -c "CHECKPOINT" >/dev/null
}
# Bytes of every table in the engine's schema, with indexes and toast.
engine_bytes() {
  qe_psql -Atc "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                 WHERE c.relnamespace = 'queue_engine'::regnamespace AND c.relkind IN ('r', 'p', 'm')"
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# Checkpoints so far (timed and requested).
checkpoints() { qe_psql -Atc "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"; }

# The engine's largest tables (with their indexes and toast), "name=MB ...".
largest_tables() {
  qe_psql -Atc "SELECT string_agg(c.relname || '=' || round(pg_total_relation_size(c.oid) / 1048576.0, 1),
                                  ' ' ORDER BY pg_total_relation_size(c.oid) DESC)
                  FROM (SELECT oid, relname FROM pg_class
                         WHERE relnamespace = 'queue_engine'::regnamespace AND relkind IN ('r', 'p', 'm')
                         ORDER BY pg_total_relation_size(oid) DESC LIMIT 8) c"
}

# Wait events of the pgbench backends, sampled every 0.5 s while a load runs
# (waits_start ... waits_stop), summed by waits_top: "count type:event ...".
waits_pid=
waits_start() {
  : >"$work/waits"
  ( while :; do
      # (a heavyweight lock wait also names the relation and what blocks it)
      "$QE_PG_BIN/psql" -X -Atc "SELECT coalesce(a.wait_event_type, 'CPU') || ':' || coalesce(a.wait_event, '-')
                                        || CASE WHEN a.wait_event_type = 'Lock' THEN
                                             '(' || coalesce((SELECT l.relation::regclass::text FROM pg_locks l
                                                               WHERE l.pid = a.pid AND NOT l.granted LIMIT 1), '?')
                                             || '<-' || coalesce((SELECT string_agg(DISTINCT
                                                                    coalesce(nullif(b.application_name, ''), b.backend_type)
                                                                    || '/' || left(regexp_replace(b.query, '\s+', ' ', 'g'), 30), '+')
                                                                  FROM pg_stat_activity b
                                                                 WHERE b.pid = ANY (pg_blocking_pids(a.pid))), '?') || ')'
                                           ELSE '' END
                                   FROM pg_stat_activity a WHERE a.application_name = 'pgbench' AND a.state = 'active'" \
        >>"$work/waits" 2>/dev/null || true
      sleep 0.5
    done ) &
  waits_pid=$!
}
waits_stop() {
  [ -n "$waits_pid" ] || return 0
  kill "$waits_pid" 2>/dev/null || true
  wait "$waits_pid" 2>/dev/null || true
  waits_pid=
}
waits_top() {
  sort "$work/waits" | uniq -c | sort -rn | head -12 | sed 's/^ *//' | paste -sd ';' -
}

# Engine bytes but the finished-run history: tables whose name matches BENCH_HISTORY_RELS
# (with their indexes and toast) left out.
engine_live_bytes() {
  qe_psql -Atc "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                 WHERE c.relnamespace = 'queue_engine'::regnamespace AND c.relkind IN ('r', 'p', 'm')
                   AND c.relname !~ '$BENCH_HISTORY_RELS'"
}

# A session holding back the xmin horizon: psql reading from a fifo, idle in transaction.
# holder_start KIND: "read" = REPEATABLE READ after a read (a snapshot: backend_xmin),
# "write" = READ COMMITTED after an INSERT into an unrelated table (an xid: backend_xid).
holder_fd=
holder_pid=
holder_start() {
  local kind=$1 fifo=$work/holder.fifo i sql check
  case $kind in
    read) sql="BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;" check="backend_xmin IS NOT NULL" ;;
    write) sql="BEGIN; INSERT INTO bench_unrelated (note) VALUES ('held');" check="backend_xid IS NOT NULL" ;;
  esac
  rm -f "$fifo"; mkfifo "$fifo"
  PGAPPNAME=bench_holder qe_psql <"$fifo" >/dev/null &
  holder_pid=$!
  exec {holder_fd}>"$fifo"
  echo "$sql" >&"$holder_fd"
  for ((i = 0; i < 100; i++)); do
    holder_holds "$check" && return 0
    sleep 0.1
  done
  qe_die "the $kind holder session did not start"
}
# holder_holds [CHECK]: the holder is still idle in its transaction (and CHECK holds)
holder_holds() {
  [ "$(qe_psql -Atc "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bench_holder'
                       AND state = 'idle in transaction' AND (${1:-true})")" = 1 ]
}
holder_release() {
  [ -n "$holder_fd" ] || return 0
  echo "COMMIT;" >&"$holder_fd"
  exec {holder_fd}>&-
  wait "$holder_pid" || true
  holder_fd='' holder_pid=''
}
qe_on_exit 'holder_release'
qe_on_exit 'waits_stop'

# Without preloading, nothing runs the engine's time-based work: the bench calls
# run_maintenance() itself, every BENCH_MAINTENANCE_INTERVAL s (errors, e.g. while
# reset_engine has dropped the extension, are skipped).
# The loop pauses while the bench drops, creates or truncates the engine's tables
# (maintenance_pause / maintenance_resume): those take their locks in another order
# than a maintenance pass, and the two deadlocked.
maint_pid=
maintenance_loop_start() {
  rm -f "$work/maintenance.pause"
  ( while :; do
      if [ ! -e "$work/maintenance.pause" ]; then
        PGAPPNAME=bench_maintenance qe_psql -c "CALL queue_engine.run_maintenance()" >/dev/null 2>&1 || true
      fi
      sleep "$BENCH_MAINTENANCE_INTERVAL"
    done ) &
  maint_pid=$!
}
# maintenance_pause / maintenance_resume: nothing but the bench touches the engine's
# tables in between (its resets TRUNCATE and DROP them, which deadlocks with a
# rotation under way: it holds one segment's ACCESS EXCLUSIVE lock while it
# inserts into the other).  Preloaded, the worker is switched off and waited for
# until it sleeps (two looks 0.2 s apart, the reload delivered first); not
# preloaded, the bench's own maintenance loop pauses.
maintenance_pause() {
  if [ "${PRELOAD:-on}" = on ]; then
    qe_psql -c "ALTER SYSTEM SET queue_engine.maintenance_enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.2
    local idle=0
    while [ "$idle" -lt 2 ]; do
      if [ "$(qe_psql -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'queue_engine maintenance'
                               AND coalesce(wait_event, '') <> 'Extension'")" = 0 ]; then
        idle=$((idle + 1))
      else
        idle=0
      fi
      sleep 0.2
    done
  fi
  [ -n "$maint_pid" ] || return 0
  touch "$work/maintenance.pause"
  # a pass under way ends first
  while [ "$(qe_psql -Atc "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bench_maintenance'")" != 0 ]; do
    sleep 0.1
  done
}
maintenance_resume() {
  if [ "${PRELOAD:-on}" = on ]; then
    qe_psql -c "ALTER SYSTEM RESET queue_engine.maintenance_enabled" -c "SELECT pg_reload_conf()" >/dev/null
  fi
  rm -f "$work/maintenance.pause"
}
maintenance_loop_stop() {
  [ -n "$maint_pid" ] || return 0
  kill "$maint_pid" 2>/dev/null || true
  wait "$maint_pid" 2>/dev/null || true
  maint_pid=
}
qe_on_exit 'maintenance_loop_stop'

# set_retention VALUE: queue_engine.finished_run_retention for the worker and run_maintenance()
# (LOAD first: without preloading, a new session does not know the setting yet, and
# ALTER SYSTEM refuses settings it does not know.)
set_retention() {
  qe_psql -c "LOAD '$QE_EXTENSION'" -c "ALTER SYSTEM SET queue_engine.finished_run_retention = '$1'" \
          -c "SELECT pg_reload_conf()" >/dev/null
}
reset_retention() {
  qe_psql -c "LOAD '$QE_EXTENSION'" -c "ALTER SYSTEM RESET queue_engine.finished_run_retention" \
          -c "SELECT pg_reload_conf()" >/dev/null
}

# sustain_rate SYNC -> tx/s: 70 % of what the sustained script (enqueue + dequeue + complete)
# reaches unthrottled with 8 clients, from BENCH_SUSTAIN_BACKLOG runs, after BENCH_SUSTAIN_WARMUP s
# of the same load (for its first retention period the load prunes nothing, so a fresh
# cluster runs faster than the steady state the long runs are in, and 70 % of that would be
# near their real capacity); the median of BENCH_RUNS runs of BENCH_SUSTAIN_CAPACITY_SECONDS
# (one short run can come out a third high, and a rate near the real capacity puts both p99s in a queue).
sustain_rate() {
  local sync=$1 cap rate
  reset_engine
  enqueue_n bench "$BENCH_SUSTAIN_BACKLOG"
  qe_psql -c "VACUUM ANALYZE" >/dev/null
  pgb "$sync" 8 0 -T "$BENCH_SUSTAIN_WARMUP" -f "$here/scripts/qe_sustain.sql" >/dev/null
  read -r cap _ <<<"$(measure "" "$sync" 8 0 -T "$BENCH_SUSTAIN_CAPACITY_SECONDS" -f "$here/scripts/qe_sustain.sql")"
  rate=$(awk -v c="$cap" 'BEGIN { r = int(c * 0.7); print (r < 1 ? 1 : r) }')
  qe_log "sustained load (sync $sync): the script reaches $cap tx/s unthrottled; 70% = $rate tx/s"
  echo "$rate"
}

# --- workload 13's cluster -------------------------------------------------------
# The runs list has a cluster of its own, so that its 10,000,000 finished runs outlive the bench
# cluster's resets (setup.sql and reset_engine drop the extension): it is filled once and kept,
# stopped, between the preload modes; with BENCH_LIST_REUSE=1 it lives in BENCH_LIST_DIR and is
# kept between runs too. Same settings as the bench cluster.
W13_CONF=("shared_buffers = 1GB" "max_wal_size = 4GB" "checkpoint_timeout = 30min" "max_connections = 50"
          "autovacuum_naptime = 10s")
w13_dir=
# w13_up: start it (make it first if need be) with the preload mode being measured, and point
# PGHOST/PGPORT at it (w13_leave points them back at the bench cluster).
w13_up() {
  local line started=0 port
  if [ "$PRELOAD" = on ]; then line="shared_preload_libraries = '$QE_EXTENSION'"; else line="shared_preload_libraries = ''"; fi
  if [ -z "$w13_dir" ]; then
    if [ "$BENCH_LIST_REUSE" = 1 ]; then
      w13_dir=$BENCH_LIST_DIR
      [ ${#w13_dir} -le 90 ] || qe_die "BENCH_LIST_DIR $w13_dir is too long for a unix socket directory"
      if [ -f "$w13_dir/data/postmaster.pid" ]; then   # left running by a killed run
        qe_as_pg "$QE_PG_BIN/pg_ctl" -D "$w13_dir/data" stop -m fast -w -t 120 >/dev/null 2>&1 || true
      fi
      if [ ! -f "$w13_dir/data/PG_VERSION" ]; then
        qe_log "workload 13: a new kept cluster in $w13_dir"
        rm -rf "$w13_dir"
        mkdir -p "$w13_dir"
        chmod 0755 "$w13_dir"
        if [ "$(id -u)" -eq 0 ]; then chown "$QE_PG_OWNER": "$w13_dir"; fi
        qe_as_pg "$QE_PG_BIN/initdb" -D "$w13_dir/data" -U postgres --auth=trust -E UTF8 --no-locale \
          >"$w13_dir/initdb.log" 2>&1 || { cat "$w13_dir/initdb.log" >&2; qe_die "initdb failed in $w13_dir"; }
        printf '%s\n' "" "# added by test/bench/run.sh (workload 13)" "listen_addresses = ''" "fsync = on" \
          "timezone = 'UTC'" "log_timezone = 'UTC'" "lc_messages = 'C'" "log_line_prefix = '%m [%p] %q%b %a@%d '" \
          "log_min_messages = warning" "${W13_CONF[@]}" | qe_as_pg tee -a "$w13_dir/data/postgresql.conf" >/dev/null
      else
        qe_log "workload 13: the kept cluster in $w13_dir"
      fi
      qe_on_exit 'w13_stop'
    else
      qe_cluster_start bench_list "${W13_CONF[@]}" "$line"
      w13_dir=$QE_CLUSTER_DIR
      started=1
    fi
  fi
  if [ "$started" = 0 ]; then
    if [ "$BENCH_LIST_REUSE" = 1 ]; then
      port=$(qe_free_port)
      echo "$port" | qe_as_pg tee "$w13_dir/port" >/dev/null
      printf '%s\n' "port = $port" "unix_socket_directories = '$w13_dir'" | qe_as_pg tee -a "$w13_dir/data/postgresql.conf" >/dev/null
    fi
    echo "$line" | qe_as_pg tee -a "$w13_dir/data/postgresql.conf" >/dev/null
    if ! qe_as_pg "$QE_PG_BIN/pg_ctl" -D "$w13_dir/data" -l "$w13_dir/server.log" -w -t 300 start >/dev/null; then
      tail -n 40 "$w13_dir/server.log" >&2
      qe_die "workload 13: the list cluster in $w13_dir failed to start"
    fi
  fi
  export PGHOST=$w13_dir PGPORT
  PGPORT=$(cat "$w13_dir/port")
}
w13_stop() {
  [ -n "$w13_dir" ] && [ -f "$w13_dir/data/postmaster.pid" ] || return 0
  qe_as_pg "$QE_PG_BIN/pg_ctl" -D "$w13_dir/data" stop -m fast -w -t 300 >/dev/null 2>&1 || true
}
w13_leave() { w13_stop; qe_cluster_env bench; }

# The installed extension's scripts, which the kept history was made with.
ext_md5() { cat "$("$PG_CONFIG" --sharedir)/extension/$QE_EXTENSION"--*.sql | md5sum | cut -c1-32; }

# w13_fill: the history (BENCH_LIST_RUNS runs), the pending backlog, VACUUM ANALYZE; unless the
# cluster already holds all of it made with the same extension scripts. An interrupted fill goes on.
w13_fill() {
  local md5 runs done_ emd5 pend lo hi t0 t1 n0 secs
  md5=$(ext_md5)
  qe_psql -c "SET client_min_messages = warning" -f "$here/list_runs.sql" >/dev/null
  IFS='|' read -r runs done_ emd5 pend <<<"$(qe_psql -Atc "SELECT runs, done, ext_md5, pending FROM bench_list_stamp
                                                          WHERE EXISTS (SELECT 1 FROM pg_extension WHERE extname = '$QE_EXTENSION')")"
  # (the engine's time-based work must not prune the 30 days of history)
  qe_psql -c "LOAD '$QE_EXTENSION'" -c "ALTER SYSTEM SET queue_engine.finished_run_retention = -1" \
          -c "SELECT pg_reload_conf()" >/dev/null
  if [ "${runs:-}" != "$BENCH_LIST_RUNS" ] || [ "${emd5:-}" != "$md5" ]; then
    qe_log "workload 13: a new history of $(fmt "$BENCH_LIST_RUNS") finished runs (was: ${runs:-none}, scripts ${emd5:-none}, now $md5)"
    qe_psql -c "SET client_min_messages = warning" -c "DROP EXTENSION IF EXISTS $QE_EXTENSION CASCADE" \
            -c "CREATE EXTENSION $QE_EXTENSION" -c "CALL bench_list_start($BENCH_LIST_RUNS, '$md5')" >/dev/null
    done_=0 pend=0
  elif [ "$done_" -lt "$BENCH_LIST_RUNS" ]; then
    qe_log "workload 13: the fill goes on from row $(fmt "$done_")"
  else
    qe_log "workload 13: reusing the history made $(qe_psql -Atc "SELECT filled_at || ' in ' || round(fill_seconds) || ' s' FROM bench_list_stamp")"
  fi
  t0=$SECONDS n0=$done_
  while [ "$done_" -lt "$BENCH_LIST_RUNS" ]; do
    lo=$done_ hi=$(( done_ + BENCH_LIST_CHUNK < BENCH_LIST_RUNS ? done_ + BENCH_LIST_CHUNK : BENCH_LIST_RUNS ))
    t1=$SECONDS
    qe_psql -c "SET synchronous_commit = off" -c "CALL bench_list_fill_chunk($lo, $hi)" >/dev/null
    done_=$hi
    qe_psql -c "UPDATE bench_list_stamp SET fill_seconds = fill_seconds + $(( SECONDS - t1 ))" >/dev/null
    qe_log "workload 13: $(fmt "$done_") of $(fmt "$BENCH_LIST_RUNS") finished runs written ($(( SECONDS - t0 )) s)"
  done
  if [ "$pend" = 0 ]; then
    secs=$(( SECONDS - t0 ))
    [ "$n0" -ge "$BENCH_LIST_RUNS" ] || qe_log "workload 13: $(fmt $(( BENCH_LIST_RUNS - n0 ))) finished runs inserted in ${secs} s"
    t1=$SECONDS
    qe_psql -c "CALL bench_list_pending(30, 10)" -c "SELECT queue_engine.fold_counts(10000000)" >/dev/null
    qe_log "workload 13: pending backlog through the API ($(qe_psql -Atc "SELECT sum(queued) || ' queued, ' || sum(executing) || ' executing'
                                                                          FROM queue_engine.queue_stats WHERE queue LIKE 'lq\_%'")) in $(( SECONDS - t1 )) s"
    t1=$SECONDS
    qe_psql -c "VACUUM ANALYZE" >/dev/null
    qe_log "workload 13: VACUUM ANALYZE in $(( SECONDS - t1 )) s"
    qe_psql -c "UPDATE bench_list_stamp SET filled_at = now(), fill_seconds = fill_seconds + $(( SECONDS - t1 ))" >/dev/null
    qe_log "workload 13: fill done in $(( SECONDS - t0 )) s (this run); $(qe_psql -Atc "SELECT 'finished_runs ' || pg_size_pretty(pg_total_relation_size('queue_engine.finished_runs'))
                     || ', run_tags ' || coalesce(pg_size_pretty(pg_total_relation_size(to_regclass('queue_engine.run_tags'))), 'none')")"
  fi
}

# --- CPU of a pgbench backend ------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
# proc_ticks PID -> utime + stime of the process, in clock ticks
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'; }
# pgb_cpu SECONDS PGBENCH-ARGS... -> "tps p50 p99 cpu": one pgbench run of 1 client for SECONDS (sync
# on, latencies logged) and the share of one core its backend used (utime + stime from /proc over the
# run but its first and last second).
pgb_cpu() {
  local secs=$1 bg pid='' c0 c1 t0 t1 i tps p50 p99 out=$work/pgb_cpu
  shift
  # (a name of its own: the backend of the run before may not have left pg_stat_activity yet)
  local app=bench_cpu_$$_$RANDOM
  PGAPPNAME=$app pgb on 1 1 -T "$secs" "$@" >"$out" &
  bg=$!
  for ((i = 0; i < 200; i++)); do
    pid=$(qe_psql -Atc "SELECT pid FROM pg_stat_activity WHERE application_name = '$app' LIMIT 1")
    [ -z "$pid" ] || break
    sleep 0.05
  done
  sleep 1
  c0=$(proc_ticks "$pid") t0=$(date +%s.%N)
  sleep $(( secs > 3 ? secs - 2 : 1 ))
  c1=$(proc_ticks "$pid") t1=$(date +%s.%N)
  wait "$bg" || true
  read -r tps p50 p99 _ <"$out"
  echo "$tps $p50 $p99 $(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
                           'BEGIN { if (a == "" || b == "" || t1 <= t0) print "n/a"; else printf "%.4f", (b - a) / hz / (t1 - t0) }')"
}

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
# ratio_x A B: B / A unrounded (what a target's verdict is decided on), "n/a" without a positive A
ratio_x() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/ && b ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/ && a > 0) printf "%.6f", b / a; else print "n/a" }'; }
r3() { awk -v x="$1" 'BEGIN { if (x ~ /^-?[0-9.]+$/) printf "%.3f", x; else print x }'; }
ROWFMT='%-84s %-7s %-4s %3s %14s %14s %9s %9s %9s\n'
# shellcheck disable=SC2059
header() { printf "$ROWFMT" workload preload sync cli raw engine ratio "p50 ms" "p99 ms"; }
# row WORKLOAD SYNC CLIENTS RAW ENGINE [RATIO [P50 P99]]; RATIO defaults to ENGINE/RAW
row() {
  local r=${6:-$(ratio "$4" "$5")} p50=${7:--} p99=${8:--}
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$PRELOAD" "$2" "$3" "$(fmt "$4")" "$(fmt "$5")" "$r" "$(fmt "$p50")" "$(fmt "$p99")" |
    tee -a "$results" | awk -F '\t' -v f="$ROWFMT" '{ printf f, $1, $2, $3, $4, $5, $6, $7, $8, $9; fflush() }'
}

# --- the targets of issue 15 -------------------------------------------------

# meets VALUE OP BAR -> "met" / "not met" (OP is >=, <= or <); "n/a" when VALUE is no number
meets() {
  awk -v v="$1" -v op="$2" -v b="$3" 'BEGIN {
    if (v !~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/) { print "n/a"; exit }
    ok = (op == "<=") ? (v + 0 <= b + 0) : (op == "<") ? (v + 0 < b + 0) : (v + 0 >= b + 0)
    print (ok ? "met" : "not met") }'
}
# target TARGET FIGURES OP BAR VALUE: one line of the summary; the verdict is VALUE OP BAR
target() {
  local v
  v=$(meets "$5" "$3" "$4")
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$PRELOAD" "$2" "$3 $4" "$v" >>"$summary"
  qe_log "target [preload $PRELOAD] $1: $2 (bar $3 $4): $v"
}
# run_workloads: every selected workload, once, in the cluster as it is (PRELOAD says how).
run_workloads() {
  # --- workloads 1-4 ----------------------------------------------------------
  if want 1 || want 2 || want 3 || want 4; then
    declare -A r14=()   # r14[workload sync clients raw|qe] = runs/s (batches/s, tx/s)
    for sync in $BENCH_SYNCS; do
      for clients in $BENCH_CLIENTS; do
        if want 1; then
          empty
          read -r raw qe <<<"$(run_pair raw_enqueue.sql qe_enqueue.sql "$clients" "$sync")"
          row "1 enqueue (runs/s)" "$sync" "$clients" "$raw" "$qe"
          r14[1 $sync $clients raw]=$raw r14[1 $sync $clients qe]=$qe
        fi
        if want 2; then
          empty
          read -r raw qe <<<"$(run_pair raw_batch.sql qe_batch.sql "$clients" "$sync")"
          row "2 enqueue_batch 100 (batches/s)" "$sync" "$clients" "$raw" "$qe"
          r14[2 $sync $clients raw]=$raw r14[2 $sync $clients qe]=$qe
        fi
        if want 3; then
          read -r raw qe <<<"$(run_pair raw_claim_ack.sql qe_dequeue_complete.sql "$clients" "$sync" 1 refill)"
          row "3 dequeue 1 + complete (runs/s)" "$sync" "$clients" "$raw" "$qe"
          r14[3 $sync $clients raw]=$raw r14[3 $sync $clients qe]=$qe
        fi
        if want 4; then
          read -r raw qe <<<"$(run_pair raw_claim_ack.sql qe_dequeue_complete_batch.sql "$clients" "$sync" 10 refill)"
          row "4 dequeue 10 + complete_batch (tx/s)" "$sync" "$clients" "$raw" "$qe"
          r14[4 $sync $clients raw]=$raw r14[4 $sync $clients qe]=$qe
        fi
      done
    done
    # Targets: engine / raw at 8 clients; 8 clients / 1 client with sync off (dequeue paths).
    what14=([1]="enqueue vs raw INSERT" [2]="enqueue_batch 100 vs raw multi-row INSERT"
            [3]="dequeue 1 + complete vs raw claim+ack" [4]="dequeue 10 + complete_batch vs raw claim+ack of 10")
    bar14=([1]=0.9 [2]=0.8 [3]=0.9 [4]=0.9)
    for sync in $BENCH_SYNCS; do
      has "$BENCH_CLIENTS" 8 || break
      for w in 1 2 3 4; do
        want "$w" || continue
        raw=${r14[$w $sync 8 raw]} qe=${r14[$w $sync 8 qe]} x=$(ratio_x "${r14[$w $sync 8 raw]}" "${r14[$w $sync 8 qe]}")
        target "$w ${what14[$w]}, 8 clients, sync $sync" "engine $(fmt "$qe"), raw $(fmt "$raw"): $(r3 "$x")" ">=" "${bar14[$w]}" "$x"
      done
    done
    if has "$BENCH_SYNCS" off && has "$BENCH_CLIENTS" 1 && has "$BENCH_CLIENTS" 8; then
      for w in 3 4; do
        want "$w" || continue
        x=$(ratio_x "${r14[$w off 1 qe]}" "${r14[$w off 8 qe]}") xr=$(ratio_x "${r14[$w off 1 raw]}" "${r14[$w off 8 raw]}")
        target "$w ${what14[$w]%% vs *}: 8 clients / 1 client, sync off" \
          "engine $(fmt "${r14[$w off 1 qe]}") -> $(fmt "${r14[$w off 8 qe]}"): $(r3 "$x"); raw $(fmt "${r14[$w off 1 raw]}") -> $(fmt "${r14[$w off 8 raw]}"): $(r3 "$xr")" \
          ">=" 1.0 "$x"
      done
    fi
  fi

  # --- 5: concurrency_limit 8 with 8 workers, vs an unlimited queue ------------
  if want 5; then
    reset_engine
    qe_psql -c "SELECT queue_engine.create_queue('limited8', concurrency_limit => 8)" >/dev/null
    for sync in $BENCH_SYNCS; do
      args=(-T "$BENCH_SECONDS" -f "$here/scripts/qe_dequeue_complete_q.sql")
      # Raw and engine runs alternate (as run_pair's do): with sync on, the disk's
      # flush speed drifts by 2x within minutes here, and would fall on one side.
      : >"$work/w5.raw"; : >"$work/w5.qe"
      for ((i = 0; i < BENCH_RUNS; i++)); do
        BENCH_RUNS=1 measure_runs "refill_queue bench" "$sync" 8 -D queue=bench "${args[@]}" >>"$work/w5.raw"
        BENCH_RUNS=1 measure_runs "refill_queue limited8" "$sync" 8 -D queue=limited8 "${args[@]}" >>"$work/w5.qe"
      done
      raw=$(median <"$work/w5.raw") qe=$(median <"$work/w5.qe")
      row "5 limit 8, 8 workers, dequeue 1 + complete (runs/s)" "$sync" 8 "$raw" "$qe"
      x=$(ratio_x "$raw" "$qe")
      target "5 stays met: concurrency_limit 8 with 8 workers / unlimited queue, sync $sync" \
        "engine $(fmt "$qe"), unlimited $(fmt "$raw") runs/s: $(r3 "$x")" ">=" "$STAYS_RATIO" "$x"
    done
  fi

  # --- 6: 10,000 queues with limit 1 vs one unlimited queue, dequeue(NULL, 1) ---
  if want 6; then
    runs6=$(( BENCH_QUEUES * 10 ))
    fill6_raw() { empty; enqueue_n bench "$runs6"; fold; qe_psql -c "VACUUM ANALYZE $QE_RUN_TABLES" >/dev/null; }
    fill6() {
      empty
      # COMMIT now and then: enqueue locks its queue's name until commit.
      qe_psql -c "DO \$\$ BEGIN FOR i IN 1 .. $BENCH_QUEUES LOOP
                    PERFORM count(*) FROM queue_engine.enqueue_batch('lim1_' || i, array_fill('{\"n\": 1}'::jsonb, ARRAY[10]));
                    IF i % 500 = 0 THEN COMMIT; END IF;
                  END LOOP; END \$\$" \
              -c "SELECT queue_engine.fold_counts(10000000)" -c "VACUUM ANALYZE $QE_RUN_TABLES" >/dev/null
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
      x=$(ratio_x "${raw6[$sync]}" "$qe")
      target "6 stays met: $BENCH_QUEUES queues with limit 1 / one unlimited queue, sync $sync" \
        "engine $(fmt "$qe"), one queue $(fmt "${raw6[$sync]}") runs/s: $(r3 "$x")" ">=" "$STAYS_RATIO" "$x"
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
        if [ "$backlog" != "$SMALL_BACKLOG" ]; then
          x=$(ratio_x "${p99_7[$sync]}" "$p99")
          target "7 stays met: p99 of dequeue + complete, $(fmt "$backlog") / $(fmt "$SMALL_BACKLOG") backlog, sync $sync" \
            "$(fmt "$p99") / $(fmt "${p99_7[$sync]}") ms: $(r3 "$x")" "<=" "$STAYS_P99" "$x"
        fi
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
        if [ "$blocked" = 1 ]; then
          x=$(ratio_x "${p99_8[$sync]}" "$p99")
          target "8 stays met: p99 of dequeue(NULL,1), $(fmt $(( BENCH_BLOCKED_QUEUES * BENCH_BLOCKED_RUNS ))) runs blocked / none, sync $sync" \
            "$(fmt "$p99") / $(fmt "${p99_8[$sync]}") ms: $(r3 "$x")" "<=" "$STAYS_P99" "$x"
        fi
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
      # What both sides take with no runs at all (the engine's empty segments,
      # queue and tenant tables, each index's metapage; the raw table's two
      # index metapages) is not a cost per run: the target counts what the
      # runs add, and the whole-install figure is reported beside it.
      raw0=$(qe_psql -Atc "SELECT pg_total_relation_size('raw_jobs')")
      qe0=$(engine_bytes)
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
      echo "$(( (rawb - raw0) / BENCH_SIZE_RUNS - psize )) $(( (qeb - qe0) / BENCH_SIZE_RUNS - psize ))" \
           "$(( rawb / BENCH_SIZE_RUNS - psize )) $(( qeb / BENCH_SIZE_RUNS - psize ))" >>"$all"
    done
    raw=$(awk '{print $1}' "$all" | median)
    qe=$(awk '{print $2}' "$all" | median)
    rawt=$(awk '{print $3}' "$all" | median)
    qet=$(awk '{print $4}' "$all" | median)
    row "9 bytes per pending run beyond its ${psize} B payload" - - "$raw" "$qe"
    row "9 the same with the empty install's bytes shared out" - - "$rawt" "$qet"
    target "9 bytes per pending run beyond its ${psize} B payload ($(fmt "$BENCH_SIZE_RUNS") runs)" \
      "engine $qe B, raw $raw B (with the empty install: $qet B, raw $rawt B)" "<=" 100 "$qe"
  fi

  # --- 10: sustained load with and without a session holding the xmin horizon ---------
  # Per retention of BENCH_SUSTAIN_RETENTIONS and per sync: the capacity, then
  # BENCH_SUSTAIN_RUNS rounds of one unheld run and one run per holder of BENCH_HOLDERS,
  # each from a fresh engine with the same backlog. With a retention other than -1,
  # each run continues after the load: the holder released, BENCH_SUSTAIN_AFTER s more
  # of the same load, CALL run_maintenance() and a plain VACUUM, then the size of the
  # engine's tables but the finished-run history (unheld runs get the same).
  if want 10; then
    for retention in $BENCH_SUSTAIN_RETENTIONS; do
      set_retention "$retention"
      qe_log "workload 10: finished_run_retention = $retention"
      if [ "$retention" = -1 ]; then rlabel="kept"; else rlabel="retention $retention"; fi
      for sync in $BENCH_SYNCS; do
        rate=$(sustain_rate "$sync")
        qe_log "workload 10 (sync $sync, $rlabel): $BENCH_SUSTAIN_RUNS x ${BENCH_SUSTAIN_SECONDS}s at $rate tx/s, unheld and held by: $BENCH_HOLDERS"
        sus_args=(-T "$BENCH_SUSTAIN_SECONDS" -R "$rate" -f "$here/scripts/qe_sustain.sql")
        all=$work/sustain
        : >"$all"
        for ((i = 0; i < BENCH_SUSTAIN_RUNS; i++)); do
          for holder in none $BENCH_HOLDERS; do
            reset_engine
            enqueue_n bench "$BENCH_SUSTAIN_BACKLOG"
            # A checkpoint first, so that every run starts as far from the next
            # one (max_wal_size) and none inherits the one before's.
            qe_psql -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
            s0=$(engine_bytes)
            c0=$(checkpoints)
            [ "$holder" = none ] || holder_start "$holder"
            waits_start
            m=$(pgb "$sync" 8 1 "${sus_args[@]}"); read -r tps p50 p99 _ <<<"$m"
            waits_stop
            s1=$(engine_bytes)
            qe_log "workload 10 (sync $sync, $rlabel, holder $holder): wait events of the load's backends (samples): $(waits_top); checkpoints during the load: $(( $(checkpoints) - c0 ))"
            qe_log "workload 10 (sync $sync, $rlabel, holder $holder): largest tables at the end (MB): $(largest_tables)"
            if [ "$holder" != none ] && ! holder_holds; then
              qe_die "workload 10: the $holder holder was no longer idle in its transaction at the end of the load"
            fi
            holder_release
            a1=-
            if [ "$retention" != -1 ]; then
              pgb "$sync" 8 0 -T "$BENCH_SUSTAIN_AFTER" -R "$rate" -f "$here/scripts/qe_sustain.sql" >/dev/null
              qe_psql -c "CALL queue_engine.run_maintenance()" -c "VACUUM" >/dev/null
              a1=$(engine_live_bytes)
              qe_log "workload 10 (sync $sync, $rlabel, holder $holder): largest tables after the release (MB): $(largest_tables)"
            fi
            qe_log "workload 10 (sync $sync, $rlabel, holder $holder): $tps tx/s, p50 $p50 ms, p99 $p99 ms, tables $(mb "$s0") -> $(mb "$s1") MB$([ "$a1" = - ] || echo ", but history after release + ${BENCH_SUSTAIN_AFTER}s + maintenance + VACUUM $(mb "$a1") MB")"
            echo "$holder $tps $p50 $p99 $s0 $s1 $a1" >>"$all"
          done
        done
        col() { awk -v h="$1" -v c="$2" '$1 == h && $c != "-" {print $c}' "$all" | median; }
        growth() { awk -v h="$1" '$1 == h {print $6 - $5}' "$all" | median; }
        for holder in $BENCH_HOLDERS; do
          hl="10 $rlabel, $holder holder"
          tu=$(col none 2) th=$(col "$holder" 2) pu=$(col none 4) ph=$(col "$holder" 4)
          row "$hl: 70% load (tx/s; raw = unheld)" "$sync" 8 "$tu" "$th" "$(ratio "$tu" "$th")" "$(col "$holder" 3)" "$ph"
          row "$hl: p99 ms (raw = unheld)" "$sync" 8 "$pu" "$ph"
          gu=$(growth none) gh=$(growth "$holder")
          row "$hl: tables MB start->end of ${BENCH_SUSTAIN_SECONDS}s (ratio of growth)" "$sync" 8 \
              "$(mb "$(col none 5)")->$(mb "$(col none 6)")" "$(mb "$(col "$holder" 5)")->$(mb "$(col "$holder" 6)")" \
              "$(ratio "$gu" "$gh")"
          x=$(ratio_x "$tu" "$th")
          target "10 held snapshot ($holder holder, $rlabel), sync $sync: throughput held / unheld" \
            "$(fmt "$th") / $(fmt "$tu") tx/s at a $rate tx/s schedule: $(r3 "$x")" ">=" 0.95 "$x"
          x=$(ratio_x "$pu" "$ph")
          target "10 held snapshot ($holder holder, $rlabel), sync $sync: p99 held / unheld" \
            "$(fmt "$ph") / $(fmt "$pu") ms: $(r3 "$x")" "<=" 1.5 "$x"
          if [ "$retention" = -1 ]; then
            x=$(ratio_x "$gu" "$gh")
            target "10 held snapshot ($holder holder, finished runs kept), sync $sync: table growth held / unheld" \
              "+$(mb "$gh") / +$(mb "$gu") MB in ${BENCH_SUSTAIN_SECONDS}s: $(r3 "$x")" "<=" 1.5 "$x"
          else
            lu=$(col none 7) lh=$(col "$holder" 7)
            row "$hl: tables but history MB after release+${BENCH_SUSTAIN_AFTER}s+maintenance+VACUUM" "$sync" 8 \
                "$(mb "$lu")" "$(mb "$lh")"
            x=$(ratio_x "$lu" "$lh")
            target "10 after the release ($holder holder, $rlabel), sync $sync: tables but history, held / unheld run" \
              "$(mb "$lh") / $(mb "$lu") MB after ${BENCH_SUSTAIN_AFTER}s more load, run_maintenance and plain VACUUM (no VACUUM FULL): $(r3 "$x")" \
              "<=" 1.1 "$x"
          fi
        done
      done
    done
    reset_retention
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

  # --- 12: waits and events ------------------------------------------------------
  # Runs waiting for 'order.paid', each for its own {"order_id": id}. send_event latency
  # (pgbench, 1 client, BENCH_WAIT_SENDS sends per run, p99 the median of BENCH_RUNS runs;
  # each send names a distinct waiting id, drawn from a sequence and permuted):
  #   small: BENCH_WAIT_SMALL + BENCH_WAIT_SENDS + 20 waiting (the queue cleared and refilled
  #          before each run, so BENCH_WAIT_SMALL still wait at its end);
  #   big:   BENCH_WAIT_RUNS waiting (made once, 1,000 per transaction);
  #   none:  beside the big set, an event whose match value no run waits for;
  #   other: the big set, and BENCH_WAIT_OTHER_EVENTS runs waiting for as many other event names.
  # Then one send_event waking BENCH_WAIT_FANOUT runs waiting with the same match (psql's
  # \timing, the median of BENCH_RUNS), the cycle enqueue + dequeue + wait_for_event +
  # send_event + dequeue (resume) + complete with 8 clients against enqueue + dequeue +
  # complete (each client in its own queue; completed runs/s, runs alternating), and the
  # bytes of queue_engine.waiting_runs with its indexes per waiting run.
  if want 12; then
    # (qe_send_event.sql permutes ids by multiplying by 7919, a prime: a bijection unless it divides n)
    if [ $(( W12_RUNS % 7919 )) -eq 0 ] || [ $(( (W12_SMALL + W12_SENDS + 20) % 7919 )) -eq 0 ]; then
      qe_die "BENCH_WAIT_RUNS and BENCH_WAIT_SMALL + BENCH_WAIT_SENDS + 20 must not be multiples of 7919"
    fi
    reset_engine
    qe_psql -f "$here/waits.sql" \
            -c "SELECT queue_engine.create_queue(q) FROM unnest(ARRAY['w12_small', 'w12_big', 'w12_other', 'w12_fan']) q" \
            -c "SELECT queue_engine.create_queue('w12_c' || i) FROM generate_series(0, 7) i" >/dev/null
    waiting() { qe_psql -Atc "SELECT count(*) FROM queue_engine.waiting_runs"; }
    wal() { qe_psql -Atc "SELECT wal_bytes || ' ' || wal_fpi FROM pg_stat_wal"; }
    # After each set of waits is made: vacuumed and analyzed (so that autovacuum does not start
    # on them inside a timed run; bench_make_waits has analyzed waiting_runs already), the count
    # deltas folded, and a second for the worker's (or the maintenance loop's) pass over what the
    # making left to do.
    w12_settle() {
      qe_psql -c "VACUUM ANALYZE queue_engine.waiting_runs, queue_engine.events, $QE_RUN_TABLES" >/dev/null
      fold
      sleep 1
    }
    # make_waits QUEUE FIRST LAST EVENT [PER_ID_EVENT [SAME_MATCH]]
    make_waits() {
      qe_psql -c "CALL bench_make_waits('$1', $2, $3, '$4', ${5:-false}, ${6:-NULL})" >/dev/null
    }
    small_first=100000001   # ids of the small set: apart from the big set's 1 .. BENCH_WAIT_RUNS
    small_n=$(( W12_SMALL + W12_SENDS + 20 ))   # (20: w12_phase's probe)
    w12_prep_small() {
      qe_psql -c "SELECT bench_clear_queue('w12_small')" -c "SELECT setval('bench_w12_small', 1, false)" >/dev/null
      make_waits w12_small "$small_first" $(( small_first + small_n - 1 )) order.paid
      w12_settle
    }
    declare -A p99_12=() tps_12=()
    # w12_phase KEY SYNC SEQ BASE N EXPECT(1|0) PREP: BENCH_RUNS runs, each PREP, then 20 sends (a
    # probe: a send_event slow enough that W12_SENDS would take over BENCH_WAIT_MAX_SECONDS gets
    # fewer, at least 50, logged), then W12_SENDS sends timed; each run's wakes checked against EXPECT.
    w12_phase() {
      local key=$1 sync=$2 seq=$3 base=$4 n=$5 expect=$6 prep=$7 i b a m all=$work/w12_phase sends ptps w0 w1
      local args=(-D event=order.paid -D seq="$seq" -D base="$base" -D n="$n" -f "$here/scripts/qe_send_event.sql")
      : >"$all"
      for ((i = 0; i < BENCH_RUNS; i++)); do
        if [ -n "$prep" ]; then eval "$prep"; fi
        # Every run right after a checkpoint, so that each pays for the same
        # full-page images (a checkpoint inside one run doubled its p99).
        qe_psql -c "CHECKPOINT" >/dev/null
        b=$(waiting)
        read -r ptps _ <<<"$(pgb "$sync" 1 0 -t 20 "${args[@]}")"
        sends=$(awk -v t="$ptps" -v s="$W12_SENDS" -v m="$BENCH_WAIT_MAX_SECONDS" \
                  'BEGIN { if (t + 0 <= 0 || s / t <= m) print s; else { k = int(m * t); print (k < 50 ? 50 : k) } }')
        [ "$sends" = "$W12_SENDS" ] ||
          qe_log "workload 12 ($key, sync $sync): send_event at $ptps/s in a probe: $sends sends instead of $W12_SENDS"
        w0=$(wal)
        m=$(BENCH_RUNS=1 measure "" "$sync" 1 1 -t "$sends" "${args[@]}")
        w1=$(wal)
        a=$(waiting)
        if [ $(( b - a )) -ne $(( expect * (sends + 20) )) ]; then
          qe_log "workload 12 ($key, sync $sync): $(( sends + 20 )) sends woke $(( b - a )) runs, expected $(( expect * (sends + 20) )) ($b -> $a waiting)"
          w12_wrong=$(( w12_wrong + 1 ))
        fi
        # (WAL bytes and full-page images per send: with sync on, what the commit flushes)
        echo "$m $sends $(awk -v a="$w0" -v b="$w1" -v n="$sends" 'BEGIN { split(a, x, " "); split(b, y, " ");
                                printf "%.0f %.2f", (y[1] - x[1]) / n, (y[2] - x[2]) / n }')" >>"$all"
      done
      qe_log "workload 12 ($key, sync $sync): tps p50 p99 sends WAL-bytes/send FPI/send per run: $(paste -sd ';' "$all"); waiting now $(waiting)"
      tps_12[$key $sync]=$(awk '{print $1}' "$all" | median)
      p50_12[$key $sync]=$(awk '{print $2}' "$all" | median)
      p99_12[$key $sync]=$(awk '{print $3}' "$all" | median)
      n_12[$key $sync]=$(awk '{print $4}' "$all" | median)
    }
    declare -A p50_12=() n_12=()
    w12_wrong=0
    t0=$SECONDS
    # (no timed checkpoint within the workload: checkpoint_timeout is 30 min)
    qe_psql -c "CHECKPOINT" >/dev/null
    # small
    for sync in $BENCH_SYNCS; do
      w12_phase small "$sync" bench_w12_small "$small_first" "$small_n" 1 w12_prep_small
    done
    qe_psql -c "SELECT bench_clear_queue('w12_small')" >/dev/null
    # big
    t1=$SECONDS
    make_waits w12_big 1 "$W12_RUNS" order.paid
    w12_settle
    nwait=$(waiting)
    wbytes=$(qe_psql -Atc "SELECT pg_total_relation_size('queue_engine.waiting_runs')")
    psize=$(qe_psql -Atc "SELECT pg_column_size('{\"order_id\": 123456}'::jsonb)")
    qe_log "workload 12: $(fmt "$W12_RUNS") runs made to wait in $(( SECONDS - t1 ))s; waiting_runs $(mb "$wbytes") MB for $nwait waiting; largest: $(largest_tables)"
    qe_psql -c "SELECT setval('bench_w12_big', 1, false)" -c "SELECT setval('bench_w12_none', 1, false)" >/dev/null
    for sync in $BENCH_SYNCS; do
      w12_phase big "$sync" bench_w12_big 1 "$W12_RUNS" 1 ""
      w12_phase none "$sync" bench_w12_none -2000000000 1000000000 0 ""
    done
    # other event names
    t1=$SECONDS
    make_waits w12_other 1 "$W12_OTHER" other true
    w12_settle
    qe_log "workload 12: $(fmt "$W12_OTHER") runs waiting for as many other event names, made in $(( SECONDS - t1 ))s"
    for sync in $BENCH_SYNCS; do
      w12_phase other "$sync" bench_w12_big 1 "$W12_RUNS" 1 ""
    done
    # fan-out: one event, BENCH_WAIT_FANOUT waits with the same match
    declare -A fan_12=()
    for sync in $BENCH_SYNCS; do
      : >"$work/w12_fan"
      for ((i = 0; i < BENCH_RUNS; i++)); do
        qe_psql -c "SELECT bench_clear_queue('w12_fan')" >/dev/null
        make_waits w12_fan 1 "$W12_FANOUT" batch.done false "'{\"batch\": 1}'"
        w12_settle
        out=$(PGOPTIONS="-c synchronous_commit=$sync" qe_psql -At -c '\timing on' \
                -c "SELECT woken FROM queue_engine.send_event('batch.done', '{\"batch\": 1, \"note\": \"all of them\"}')")
        woke=$(head -n 1 <<<"$out")
        ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out")
        if [ "$woke" != "$W12_FANOUT" ]; then
          qe_log "workload 12 (fan-out, sync $sync): send_event woke '$woke', expected $W12_FANOUT"
          w12_wrong=$(( w12_wrong + 1 ))
        fi
        echo "${ms:-n/a}" >>"$work/w12_fan"
      done
      qe_log "workload 12 (fan-out, sync $sync): ms per run: $(paste -sd ' ' "$work/w12_fan")"
      fan_12[$sync]=$(grep -v n/a "$work/w12_fan" | median)
    done
    qe_psql -c "SELECT bench_clear_queue('w12_fan')" >/dev/null
    # the cycle, with 8 clients, against the same without the wait
    declare -A cyc_12=() own_12=()
    for sync in $BENCH_SYNCS; do
      : >"$work/w12.own"; : >"$work/w12.cyc"
      for ((i = 0; i < BENCH_RUNS; i++)); do
        BENCH_RUNS=1 measure_runs "" "$sync" 8 -T "$BENCH_SECONDS" -f "$here/scripts/qe_enqueue_dequeue_complete_own.sql" >>"$work/w12.own"
        BENCH_RUNS=1 measure_runs "" "$sync" 8 -T "$BENCH_SECONDS" -f "$here/scripts/qe_wait_cycle.sql" >>"$work/w12.cyc"
      done
      own_12[$sync]=$(median <"$work/w12.own") cyc_12[$sync]=$(median <"$work/w12.cyc")
    done
    qe_log "workload 12: $(( SECONDS - t0 ))s; waiting at the end: $(waiting)"

    # --- rows and targets
    sm=$(fmt "$W12_SMALL") bg=$(fmt "$W12_RUNS") ot=$(fmt "$W12_OTHER") fo=$(fmt "$W12_FANOUT")
    # (a note when a phase's runs had fewer sends than BENCH_WAIT_SENDS: too slow)
    w12_n() { [ "${n_12[$1 $2]}" = "$W12_SENDS" ] || echo " [$(fmt "${n_12[$1 $2]}") sends a run]"; }
    for sync in $BENCH_SYNCS; do
      row "12 send_event waking 1 of $sm waiting (+$(fmt $(( W12_SENDS + 20 ))) woken in the run) (sends/s)$(w12_n small "$sync")" "$sync" 1 - \
          "${tps_12[small $sync]}" - "${p50_12[small $sync]}" "${p99_12[small $sync]}"
      row "12 send_event waking 1 of $bg waiting (sends/s; ratio = p99 / $sm waiting)$(w12_n big "$sync")" "$sync" 1 - \
          "${tps_12[big $sync]}" "$(ratio "${p99_12[small $sync]}" "${p99_12[big $sync]}")" "${p50_12[big $sync]}" "${p99_12[big $sync]}"
      row "12 send_event matching nothing, $bg waiting (sends/s; ratio = p99 / $sm waiting)$(w12_n none "$sync")" "$sync" 1 - \
          "${tps_12[none $sync]}" "$(ratio "${p99_12[small $sync]}" "${p99_12[none $sync]}")" "${p50_12[none $sync]}" "${p99_12[none $sync]}"
      row "12 send_event waking 1 of $bg, + $ot other event names waiting (sends/s; ratio = p99 / without)$(w12_n other "$sync")" "$sync" 1 - \
          "${tps_12[other $sync]}" "$(ratio "${p99_12[big $sync]}" "${p99_12[other $sync]}")" "${p50_12[other $sync]}" "${p99_12[other $sync]}"
      row "12 one send_event waking $fo runs waiting with the same match (ms)" "$sync" 1 - "${fan_12[$sync]}" -
      row "12 wait+send_event+dequeue(resume)+complete vs plain (enqueue+dequeue+complete both, runs/s)" "$sync" 8 \
          "${own_12[$sync]}" "${cyc_12[$sync]}"
    done
    row "12 bytes per waiting run: waiting_runs + indexes / waiting ($(fmt "$nwait"); payload ${psize} B)" - - - \
        "$(( wbytes / (nwait > 0 ? nwait : 1) ))" -
    for sync in $BENCH_SYNCS; do
      p=${p99_12[big $sync]}
      target "12 send_event waking 1 of $bg waiting runs (each its own order_id), sync $sync: p99 ms" \
        "$(fmt "$p") ms (p50 $(fmt "${p50_12[big $sync]}"))" "<" 5 "$p"
      x=$(ratio_x "${p99_12[small $sync]}" "$p")
      target "12 p99 of send_event, $bg / $sm waiting, sync $sync" \
        "$(fmt "$p") / $(fmt "${p99_12[small $sync]}") ms: $(r3 "$x")" "<=" 1.25 "$x"
      p=${p99_12[none $sync]}
      target "12 send_event matching nothing, $bg waiting, sync $sync: p99 ms" "$(fmt "$p") ms" "<" 5 "$p"
      x=$(ratio_x "${p99_12[small $sync]}" "$p")
      target "12 p99 of send_event matching nothing, $bg waiting / waking 1 of $sm, sync $sync" \
        "$(fmt "$p") / $(fmt "${p99_12[small $sync]}") ms: $(r3 "$x")" "<=" 1.25 "$x"
      p=${p99_12[other $sync]}
      target "12 send_event waking 1 of $bg with $ot other event names waiting, sync $sync: p99 ms" "$(fmt "$p") ms" "<" 5 "$p"
      x=$(ratio_x "${p99_12[big $sync]}" "$p")
      target "12 p99 of send_event with / without $ot other event names waiting, sync $sync" \
        "$(fmt "$p") / $(fmt "${p99_12[big $sync]}") ms: $(r3 "$x")" "<=" 1.25 "$x"
      target "12 one send_event waking $fo runs in one transaction, sync $sync: ms" \
        "$(fmt "${fan_12[$sync]}") ms" "<" 1000 "${fan_12[$sync]}"
      qe_log "workload 12 (sync $sync): cycle $(fmt "${cyc_12[$sync]}") runs/s vs plain $(fmt "${own_12[$sync]}"): $(ratio "${own_12[$sync]}" "${cyc_12[$sync]}")"
    done
    x=$w12_wrong
    target "12 every send woke exactly the runs it should (runs with a wrong count)" "$x" "<=" 0 "$x"
  fi

  # --- 13: list_runs over BENCH_LIST_RUNS finished runs ------------------------------
  # In a cluster of its own (w13_up); the fill is made once (or reused, w13_fill), the argument
  # table of the scripts rebuilt each time (bench_list_keys_build). Per filter of BENCH_LIST_KINDS
  # and position of BENCH_LIST_POSITIONS: BENCH_RUNS latency runs of BENCH_LIST_SECONDS each (1
  # client, pgbench's per-transaction log) of the engine's page and of the raw SQL's, alternating;
  # p50 and p99 the medians of the runs'.
  if want 13; then
    w13_up
    t0=$SECONDS
    w13_fill
    cont=$(qe_psql -Atc "SELECT bench_list_keys_build()")
    qe_log "workload 13: bench_list_keys built in $(( SECONDS - t0 ))s since the start of the workload; continuation rows met: $cont"
    qe_log "workload 13: $(qe_psql -Atc "SELECT count(*) || ' finished runs (' || string_agg(DISTINCT status::text, ',') || ')' FROM queue_engine.finished_runs") in $(qe_psql -Atc "SELECT count(*) FROM queue_engine.queues WHERE queue LIKE 'lq\_%'") queues; run_tags rows: $(qe_psql -Atc "SELECT CASE WHEN to_regclass('queue_engine.run_tags') IS NULL THEN 'no table' ELSE (xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM queue_engine.run_tags', false, true, '')))[1]::text END")"
    qe_log "workload 13: indexes: $(qe_psql -Atc "SELECT string_agg(indexrelid::regclass || ' ' || pg_size_pretty(pg_relation_size(indexrelid)), ', ')
                                                   FROM pg_index WHERE indrelid IN ('queue_engine.finished_runs'::regclass, coalesce(to_regclass('queue_engine.run_tags'), 0))")"
    raw_tag=raw_list_tag.sql
    [ -n "$(qe_psql -Atc "SELECT to_regclass('queue_engine.run_tags')")" ] || raw_tag=raw_list_tag_meta.sql
    declare -A kmax13=([none]=0 [queue]=99 [tenant]=9 [status]=0 [tag]=49 [time]=9 [payload]=99)
    declare -A what13=([none]="no filter" [queue]="queue (random of 100)" [tenant]="tenant (random of 10)"
                       [status]="status failed" [tag]="tag (random of 50)" [time]="created in one day (random of 10)"
                       [payload]="payload_contains (1% of runs)")
    declare -A where13=([first]="first page" [page5]="page 5 by cursors" [middle]="from a cursor mid-history")
    nruns=$(fmt "$BENCH_LIST_RUNS")
    for kind in $BENCH_LIST_KINDS; do
      # what a page returns (k = 0), each position: rows, and continuation rows
      qe_log "workload 13 ($kind): rows / continuation rows of k=0's pages: $(qe_psql -Atc "SELECT string_agg(b.pos || ' ' || n.rows || '/' || n.cont, ', ' ORDER BY b.pos)
          FROM bench_list_keys b, LATERAL (SELECT count(*) AS rows, count(*) FILTER (WHERE p.run_id IS NULL) AS cont
                                             FROM bench_list_page(b.kind, b.arg, b.lo, b.hi, b.cursor, 50) p) n
         WHERE b.kind = '$kind' AND b.k = 0")"
      if [ "$kind" = tag ]; then raw_script=$raw_tag; else raw_script=raw_list_$kind.sql; fi
      for pos in $BENCH_LIST_POSITIONS; do
        args=(-T "$BENCH_LIST_SECONDS" -D kind="$kind" -D kmax="${kmax13[$kind]}" -D pos="$pos")
        : >"$work/w13.raw"; : >"$work/w13.qe"
        for ((i = 0; i < BENCH_RUNS; i++)); do
          pgb on 1 1 "${args[@]}" -f "$here/scripts/$raw_script" >>"$work/w13.raw"
          pgb on 1 1 "${args[@]}" -f "$here/scripts/qe_list_runs.sql" >>"$work/w13.qe"
        done
        col13() { awk -v c="$2" '$c != "-" { print $c }' "$work/w13.$1" | median; }
        rt=$(col13 raw 1) r50=$(col13 raw 2) r99=$(col13 raw 3) rn=$(col13 raw 4)
        et=$(col13 qe 1) e50=$(col13 qe 2) e99=$(col13 qe 3) en=$(col13 qe 4)
        qe_log "workload 13 ($kind, $pos): engine $et pages/s p50 $e50 p99 $e99 ms ($en pages a run); raw $rt pages/s p50 $r50 p99 $r99 ms ($rn a run)"
        row "13 list_runs, $nruns finished: ${what13[$kind]}, ${where13[$pos]} (p99 ms; raw = plain SQL)" - 1 \
            "$r99" "$e99" "$(ratio "$r99" "$e99")" "$e50" "$e99"
        case $kind in
          queue|tenant|status|tag|time)
            target "13 list_runs page of 50 filtered by ${what13[$kind]}, ${where13[$pos]}, $nruns finished runs: p99 ms" \
              "$(fmt "$e99") ms (p50 $(fmt "$e50"); raw SQL $(fmt "$r99"))" "<" 20 "$e99" ;;
        esac
      done
    done
    w13_leave
  fi

  # --- 14: metrics() with BENCH_METRICS_QUEUES queues ---------------------------------
  if want 14; then
    reset_engine
    qe_psql -f "$here/metrics.sql" >/dev/null
    t0=$SECONDS
    qe_psql -c "CALL bench_metrics_fill($BENCH_METRICS_QUEUES, $BENCH_METRICS_TENANTS)" >/dev/null
    fold
    qe_psql -c "VACUUM ANALYZE" >/dev/null
    qe_log "workload 14: $(fmt "$BENCH_METRICS_QUEUES") queues with their runs made through the API in $(( SECONDS - t0 ))s: $(qe_psql -Atc "SELECT sum(queued) || ' queued, ' || sum(delayed) || ' delayed, ' || sum(executing) || ' executing, ' || sum(waiting) || ' waiting' FROM queue_engine.queue_stats"), $(qe_psql -Atc "SELECT count(*) FROM queue_engine.finished_runs") finished"
    read -r mbytes mlines <<<"$(qe_psql -Atc "SELECT octet_length(m) || ' ' || (length(m) - length(replace(m, E'\n', ''))) FROM (SELECT queue_engine.metrics() AS m) x")"
    qe_log "workload 14: metrics() is $(fmt "$mbytes") bytes, $(fmt "$mlines") lines; samples per metric: $(qe_psql -Atc "SELECT string_agg(n || ' ' || c, ', ' ORDER BY c DESC, n) FROM (SELECT substring(l FROM '^[a-z_]+') AS n, count(*) AS c FROM regexp_split_to_table(queue_engine.metrics(), E'\n') l WHERE l !~ '^#' AND l <> '' GROUP BY 1) x")"
    tbytes=$(PGOPTIONS="-c queue_engine.metrics_labels=tenant" qe_psql -Atc "SELECT octet_length(queue_engine.metrics())")
    : >"$work/w14.raw"; : >"$work/w14.qe"; : >"$work/w14.qet"
    for ((i = 0; i < BENCH_RUNS; i++)); do
      pgb_cpu "$BENCH_METRICS_SECONDS" -f "$here/scripts/raw_queue_stats.sql" >>"$work/w14.raw"
      pgb_cpu "$BENCH_METRICS_SECONDS" -f "$here/scripts/qe_metrics.sql" >>"$work/w14.qe"
      # the same with queue_engine.metrics_labels = tenant (per-tenant sums)
      PGOPTIONS="-c queue_engine.metrics_labels=tenant" \
        pgb_cpu "$BENCH_METRICS_SECONDS" -f "$here/scripts/qe_metrics.sql" >>"$work/w14.qet"
    done
    qe_log "workload 14: tps p50 p99 cpu-share per run: queue_stats $(paste -sd ';' "$work/w14.raw"); metrics() $(paste -sd ';' "$work/w14.qe"); metrics() per tenant $(paste -sd ';' "$work/w14.qet")"
    col14() { awk -v c="$2" '$c != "-" && $c != "n/a" { print $c }' "$work/w14.$1" | median; }
    # ms per call = 1000 / calls per second (one client, back to back); the backend's CPU per call = its share of a core x that
    ms14() { awk -v t="$1" 'BEGIN { if (t + 0 > 0) printf "%.3f", 1000 / t; else print "n/a" }'; }
    cpu14() { awk -v t="$1" -v s="$2" 'BEGIN { if (t + 0 > 0 && s ~ /^[0-9.]+$/) printf "%.3f", s * 1000 / t; else print "n/a" }'; }
    rms=$(ms14 "$(col14 raw 1)") qms=$(ms14 "$(col14 qe 1)")
    rcpu=$(cpu14 "$(col14 raw 1)" "$(col14 raw 4)") qcpu=$(cpu14 "$(col14 qe 1)" "$(col14 qe 4)")
    nq=$(fmt "$BENCH_METRICS_QUEUES")
    row "14 metrics() with $nq queues, back to back: ms per call (raw = SELECT * FROM queue_stats)" - 1 \
        "$rms" "$qms" "$(ratio "$rms" "$qms")" "$(col14 qe 2)" "$(col14 qe 3)"
    row "14 metrics() with $nq queues: the backend's CPU ms per call (raw = queue_stats)" - 1 "$rcpu" "$qcpu"
    row "14 metrics() with $nq queues: output bytes (raw = lines)" - 1 "$mlines" "$mbytes" -
    pct14() { awk -v m="$1" 'BEGIN { if (m ~ /^[0-9.]+$/) printf "%.3f", m / 10; else print "n/a" }'; }
    row "14 metrics() once a second with $nq queues: % of one core (ms per call / 10; raw = queue_stats)" - 1 \
        "$(pct14 "$rms")" "$(pct14 "$qms")"
    target "14 metrics() called every second with $nq queues: % of one core (ms per call / 10)" \
      "$(pct14 "$qms") % ($(fmt "$qms") ms a call, $(fmt "$qcpu") ms of the backend's CPU; $(fmt "$mbytes") bytes; queue_stats $(fmt "$rms") ms)" \
      "<" 1 "$(pct14 "$qms")"
    tms=$(ms14 "$(col14 qet 1)") tcpu=$(cpu14 "$(col14 qet 1)" "$(col14 qet 4)")
    row "14 metrics() per tenant (metrics_labels = tenant) with $nq queues: ms per call (raw = queue_stats)" - 1 \
        "$rms" "$tms" "$(ratio "$rms" "$tms")" "$(col14 qet 2)" "$(col14 qet 3)"
    target "14 metrics() per tenant called every second with $nq queues: % of one core (ms per call / 10)" \
      "$(pct14 "$tms") % ($(fmt "$tms") ms a call, $(fmt "$tcpu") ms of the backend's CPU; $(fmt "$tbytes") bytes)" \
      "<" 1 "$(pct14 "$tms")"
  fi

  # --- 15: blocking dequeue: wake-up latency, idle cost ------------------------------
  if want 15; then
    if ! have_psycopg; then
      qe_log "workload 15 skipped: $PYTHON has neither psycopg2 nor psycopg"
    else
      reset_engine
      qe_psql -c "SELECT queue_engine.create_queue(q) FROM unnest(ARRAY['w15', 'w15_idle']) q" >/dev/null
      declare -A p50_15=() p99_15=()
      for sync in $BENCH_SYNCS; do
        for waiters in poll $BENCH_WAIT_WAITERS; do
          if [ "$waiters" = poll ]; then wargs=(--waiters 1 --mode poll --poll-ms "$BENCH_WAIT_POLL_MS"); else wargs=(--waiters "$waiters" --mode block); fi
          : >"$work/w15"
          for ((i = 0; i < BENCH_RUNS; i++)); do
            qe_psql -c "CHECKPOINT" >/dev/null
            PGOPTIONS="-c synchronous_commit=$sync" "$PYTHON" "$here/wait_bench.py" latency w15 \
              --samples "$BENCH_WAIT_SAMPLES" "${wargs[@]}" >>"$work/w15" || qe_log "workload 15: wait_bench.py latency ${wargs[*]} failed"
          done
          qe_log "workload 15 (sync $sync, ${wargs[*]}): n p50 p99 mean max commit-p50 commit-p99 lost cancel-max-ms per run: $(paste -sd ';' "$work/w15")"
          n=$(awk '{ print $1 }' "$work/w15" | median) p50=$(awk '{ print $2 }' "$work/w15" | median)
          p99=$(awk '{ print $3 }' "$work/w15" | median) c50=$(awk '{ print $6 }' "$work/w15" | median)
          p50_15[$waiters $sync]=$p50 p99_15[$waiters $sync]=$p99
          if [ "$waiters" = poll ]; then
            label="15 enqueue commit -> run returned, a worker polling dequeue every ${BENCH_WAIT_POLL_MS} ms (ms; COMMIT itself p50 $(fmt "$c50"))"
            row "$label" "$sync" 1 - "$p99" - "$p50" "$p99"
          else
            label="15 enqueue commit -> run returned, $waiters worker(s) blocked in dequeue(wait => '10 s') (ms p99; raw = polling; COMMIT itself p50 $(fmt "$c50"))"
            row "$label" "$sync" "$waiters" "${p99_15[poll $sync]:--}" "$p99" "$(ratio "${p99_15[poll $sync]:-}" "$p99")" "$p50" "$p99"
          fi
        done
        for waiters in $BENCH_WAIT_WAITERS; do
          p50=${p50_15[$waiters $sync]} p99=${p99_15[$waiters $sync]}
          target "15 enqueue commit -> run returned to $waiters worker(s) blocked in dequeue(wait => '10 s'), sync $sync: p50 ms" \
            "$(fmt "$p50") ms (polling every ${BENCH_WAIT_POLL_MS} ms: $(fmt "${p50_15[poll $sync]}"))" "<" 1 "$p50"
          target "15 enqueue commit -> run returned to $waiters worker(s) blocked in dequeue(wait => '10 s'), sync $sync: p99 ms" \
            "$(fmt "$p99") ms (polling every ${BENCH_WAIT_POLL_MS} ms: $(fmt "${p99_15[poll $sync]}"))" "<" 5 "$p99"
        done
      done
      # idle: BENCH_WAIT_IDLE_CONNS workers blocked on an empty queue
      out=$("$PYTHON" "$here/wait_bench.py" idle w15_idle --conns "$BENCH_WAIT_IDLE_CONNS" --seconds "$BENCH_WAIT_IDLE_SECONDS") ||
        qe_log "workload 15: wait_bench.py idle failed"
      read -r cpu ticks secs samples minasleep xminbad seen cancelms scpu ccpu <<<"${out:-n/a - - - - - - - - -}"
      qe_log "workload 15 (idle): ${BENCH_WAIT_IDLE_CONNS} workers for ${secs}s: their backends ${cpu}% of one core ($ticks ticks), the whole server ${scpu}%, the client ${ccpu}%; $samples samples of pg_stat_activity, at least $minasleep asleep in each, $seen seen asleep, backend_xmin set while asleep: $xminbad; pg_cancel_backend -> error at most ${cancelms} ms"
      nc=$BENCH_WAIT_IDLE_CONNS
      row "15 $nc workers blocked in dequeue(wait => '10 s') on an empty queue: % of one core (raw = the whole server)" - "$nc" "$scpu" "$cpu" -
      row "15 $nc workers blocked: seen asleep / with backend_xmin set while asleep ($samples samples)" - "$nc" "$seen" "$xminbad" -
      row "15 pg_cancel_backend of a worker asleep in dequeue -> its error, max of $nc (ms)" - "$nc" - "$cancelms" -
      target "15 $nc workers blocked in dequeue(wait => '10 s') while idle: % of one core (their backends, ${secs}s)" \
        "$cpu % (the whole server: $scpu %)" "<" 1 "$cpu"
      target "15 $nc workers blocked in dequeue: observations of one asleep with backend_xmin set (of $samples samples; $seen of $nc seen asleep)" \
        "$xminbad" "<=" 0 "$( [ "$seen" = "$nc" ] && echo "$xminbad" || echo "n/a")"
    fi
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
      [ "$c" != 2 ] || whole="$(fmt "$before") -> $(fmt "$after")"
    done
    # The second half: memory that grows with the calls (a leak) grows there as in
    # the first; what is cached once (a saved plan per statement and segment
    # combination, met as the segments rotate) is filled by then.  Both samples
    # are taken in the loop, without the procedure's own context (its growth per
    # iteration is the raw loop's: the SPI Proc row).
    half=$(( $(get half 2) / 1024 )) end=$(( $(get end 2) / 1024 )) mem_growth=$(( end - half ))
    row "mem: contexts but the procedure's kB halfway->end, the second half of $n calls ($(printf '%+d' "$mem_growth"))" off 1 "$half" "$end"
    mem_fig="$(fmt "$half") -> $(fmt "$end") kB (whole run, after the CALL: $whole)"
    target "mem stays met: memory contexts growth over the second half of $n dequeue + complete calls in one CALL (kB)" \
      "$mem_growth: $mem_fig" "<=" "$STAYS_MEM_KB" "$mem_growth"
    # Bytes the procedure's SPI context gains per iteration (two write transactions each).
    per_iter() { awk -v b="$1" -v n="$2" 'BEGIN { printf "%.1f", b / n }'; }
    row "mem: SPI Proc bytes per dequeue+complete iteration, $(fmt "$(get spi 2)") in one CALL" off 1 \
      "$(per_iter "$(get spi 3)" "$(get spi 2)")" "$(per_iter "$(get spi 4)" "$(get spi 2)")"
  fi

  # --- memclient: the same, called the way a worker calls (one statement each) ---
  # One psql session (one backend) runs BENCH_MEMORY_CALLS separate dequeue and
  # complete statements, topping the backlog up 10,000 runs at a time; its private
  # memory is read before (after a warm-up), halfway and after, from the same session.
  if want memclient; then
    reset_engine
    pairs=$(( BENCH_MEMORY_CALLS / 2 ))
    qe_psql -c "SELECT queue_engine.create_queue('bench_mem')" \
            -c "SELECT count(*) FROM queue_engine.enqueue_batch('bench_mem', array_fill('{\"n\": 1}'::jsonb, ARRAY[1000]))" >/dev/null
    t0=$SECONDS
    out=$( { cat "$here/memory_client.sql"
             seq 1 "$pairs" | awk -v half=$(( pairs / 2 )) '{
                 # the backlog topped up 10,000 runs at a time, as in mem
                 if (NR % 10000 == 1)
                   print "SELECT count(*) FROM queue_engine.enqueue_batch('"'"'bench_mem'"'"', array_fill('"'"'{\"n\": 1}'"'"'::jsonb, ARRAY[10000])) \\gset"
                 # (a dequeue may come back empty while rotation carries the rows it would take)
                 print "SELECT coalesce(max(run_id), 0) AS rid FROM queue_engine.dequeue(ARRAY['"'"'bench_mem'"'"'], 1) \\gset"
                 print "SELECT queue_engine.complete(:rid) WHERE :rid > 0;"
                 if (NR == half) {
                   print "SELECT sum(total_bytes) AS contexts_bytes FROM pg_backend_memory_contexts \\gset half_"
                   print "\\echo half_contexts|:half_contexts_bytes" } }'
             cat "$here/memory_client_end.sql"; } | qe_psql -X -At -q | grep -E '^(before|after|half|completed)' )
    get() { awk -F '|' -v w="$1" -v c="$2" '$1 == w {print $c}' <<<"$out"; }
    qe_log "memclient: $(( pairs * 2 )) calls in $(( SECONDS - t0 ))s, $(get completed 2) runs completed"
    n=$(fmt "$(( pairs * 2 ))")
    b=$(( $(get before_contexts 2) / 1024 )) a=$(( $(get after_contexts 2) / 1024 ))
    h=$(( $(get half_contexts 2) / 1024 ))
    row "memclient: contexts kB before->after $n calls ($(printf '%+d' $(( a - b ))))" off 1 "$b" "$a"
    row "memclient: contexts kB halfway->after, the second half of $n calls ($(printf '%+d' $(( a - h ))))" off 1 "$h" "$a"
    target "mem stays met: memory contexts growth over the second half of $n dequeue + complete statements from a client (kB)" \
      "$(( a - h )): $(fmt "$h") -> $(fmt "$a") kB (whole run $(fmt "$b") -> $(fmt "$a"))" "<=" "$STAYS_MEM_KB" "$(( a - h ))"
    b=$(get before 2) a=$(get after 2)
    row "memclient: RssAnon kB before->after $n calls ($(printf '%+d' $(( a - b ))))" off 1 "$b" "$a"
    b=$(get before 3) a=$(get after 3)
    row "memclient: VmRSS-RssShmem kB before->after $n calls ($(printf '%+d' $(( a - b ))))" off 1 "$b" "$a"
  fi

  # --- soak: BENCH_SOAK_SECONDS at 70 % of capacity, retention BENCH_SOAK_RETENTION -----
  # The engine's tables sampled every BENCH_SOAK_SAMPLE_SECONDS from a background loop;
  # latencies from pgbench's per-transaction log, p99 per sample interval.
  if want soak; then
    set_retention "$BENCH_SOAK_RETENTION"
    window=$(( BENCH_SOAK_SECONDS >= 1800 ? 600 : BENCH_SOAK_SECONDS / 3 ))
    for sync in $BENCH_SOAK_SYNCS; do
      rate=$(sustain_rate "$sync")
      reset_engine
      enqueue_n bench "$BENCH_SUSTAIN_BACKLOG"
      qe_psql -c "VACUUM ANALYZE" >/dev/null
      samples=$work/soak_sizes
      : >"$samples"
      t0=$SECONDS
      ( while :; do
          b=$(engine_bytes 2>/dev/null) || b=-
          echo "$(( SECONDS - t0 )) $b" >>"$samples"
          sleep "$BENCH_SOAK_SAMPLE_SECONDS"
        done ) &
      sampler=$!
      qe_log "soak (sync $sync): ${BENCH_SOAK_SECONDS}s at $rate tx/s, retention $BENCH_SOAK_RETENTION, sizes every ${BENCH_SOAK_SAMPLE_SECONDS}s"
      m=$(pgb "$sync" 8 1 -T "$BENCH_SOAK_SECONDS" -R "$rate" -f "$here/scripts/qe_sustain.sql"); read -r tps p50 p99 _ <<<"$m"
      kill "$sampler" 2>/dev/null || true
      wait "$sampler" 2>/dev/null || true
      echo "$(( SECONDS - t0 )) $(engine_bytes)" >>"$samples"
      row "soak ${BENCH_SOAK_SECONDS}s at 70% load, retention $BENCH_SOAK_RETENTION (tx/s)" "$sync" 8 - "$tps" - "$p50" "$p99"
      # Sizes: every sample of the last $window s within +-10 % of their mean.
      read -r n mean lo hi first last <<<"$(awk -v from=$(( BENCH_SOAK_SECONDS - window )) '$1 >= from && $2 ~ /^[0-9]+$/ {
          n++; s += $2; if (n == 1 || $2 < lo) lo = $2; if (n == 1 || $2 > hi) hi = $2; if (n == 1) f = $2; l = $2 }
        END { if (n == 0) print "0 - - - - -"; else printf "%d %.0f %d %d %d %d\n", n, s / n, lo, hi, f, l }' "$samples")"
      qe_log "soak (sync $sync): engine tables MB by elapsed s: $(awk '$2 ~ /^[0-9]+$/ { printf "%s:%.1f ", $1, $2 / 1048576 }' "$samples")"
      dev=$(awk -v m="$mean" -v lo="$lo" -v hi="$hi" 'BEGIN { if (m !~ /^[0-9]+$/ || m == 0) { print "n/a"; exit }
              d1 = (hi - m) / m; d2 = (m - lo) / m; printf "%.4f", (d1 > d2 ? d1 : d2) }')
      row "soak engine tables MB, last ${window}s: first->last (min..max)" "$sync" 8 - \
          "$(mb "$first")->$(mb "$last") ($(mb "$lo")..$(mb "$hi"))" "+-$(awk -v d="$dev" 'BEGIN { if (d ~ /^[0-9.]+$/) printf "%.1f%%", d * 100; else print d }')"
      target "soak ${BENCH_SOAK_SECONDS}s, sync $sync: engine tables flat over the last ${window}s (largest deviation from their mean)" \
        "$n samples, mean $(mb "$mean") MB, $(mb "$lo")..$(mb "$hi") MB, first $(mb "$first") last $(mb "$last"): $(awk -v d="$dev" 'BEGIN { if (d ~ /^[0-9.]+$/) printf "%.1f %%", d * 100; else print d }')" \
        "<=" 0.10 "$dev"
      # p99 per interval: the transaction log's end times (epoch s, 5th field) in buckets of
      # BENCH_SOAK_SAMPLE_SECONDS from the first one; the last, partial bucket left out.
      nb=$(( BENCH_SOAK_SECONDS / BENCH_SOAK_SAMPLE_SECONDS ))
      per=$work/soak_p99
      e0=$(cat "$work"/lat.* | awk '$3 ~ /^[0-9]+$/ && (m == "" || $5 < m) { m = $5 } END { print m + 0 }')
      cat "$work"/lat.* | awk -v e0="$e0" -v b="$BENCH_SOAK_SAMPLE_SECONDS" '$3 ~ /^[0-9]+$/ { print int(($5 - e0) / b), $3 }' |
        sort -k1,1n -k2,2n |
        awk -v nb="$nb" 'function flush() { if (n > 0 && k < nb) { i = int(n * 0.99); if (i < n * 0.99) i++; printf "%d %.3f %d\n", k, v[i] / 1000, n } n = 0 }
                         $1 != k && NR > 1 { flush() } { k = $1; v[++n] = $2 } END { flush() }' >"$per"
      qe_log "soak (sync $sync): p99 ms per ${BENCH_SOAK_SAMPLE_SECONDS}s: $(awk '{ printf "%s ", $2 }' "$per")"
      third=$(( nb / 3 > 0 ? nb / 3 : 1 ))
      pf=$(awk -v t="$third" '$1 < t { print $2 }' "$per" | median)
      pl=$(awk -v t="$third" -v nb="$nb" '$1 >= nb - t { print $2 }' "$per" | median)
      x=$(ratio_x "$pf" "$pl")
      row "soak p99 ms per ${BENCH_SOAK_SAMPLE_SECONDS}s, median: first third -> last third" "$sync" 8 "$pf" "$pl"
      target "soak ${BENCH_SOAK_SECONDS}s, sync $sync: p99 per ${BENCH_SOAK_SAMPLE_SECONDS}s not growing (median last third / first third)" \
        "$(fmt "$pl") / $(fmt "$pf") ms: $(r3 "$x")" "<=" 1.5 "$x"
    done
    reset_retention
  fi

}

# --- the preload modes --------------------------------------------------------
qe_log "bench: workloads ${BENCH_WORKLOADS}; ${BENCH_RUNS} runs of ${BENCH_SECONDS}s each, median; backlog ${BACKLOG}; sync ${BENCH_SYNCS}; clients ${BENCH_CLIENTS}; preload ${BENCH_PRELOAD}"
preloaded=on   # as the cluster started
for PRELOAD in $BENCH_PRELOAD; do
  if [ "$PRELOAD" != "$preloaded" ]; then
    # postgresql.conf's last line wins (ALTER SYSTEM would write '""' for an empty list).
    if [ "$PRELOAD" = on ]; then line="shared_preload_libraries = '$QE_EXTENSION'"; else line="shared_preload_libraries = ''"; fi
    echo "$line" | qe_as_pg tee -a "$QE_CLUSTER_DATA/postgresql.conf" >/dev/null
    qe_cluster_restart bench
    preloaded=$PRELOAD
  fi
  qe_log "preload $PRELOAD: shared_preload_libraries = '$(qe_psql -Atc "SHOW shared_preload_libraries")'"
  qe_psql -f "$here/setup.sql" >/dev/null
  [ "$PRELOAD" = on ] || maintenance_loop_start
  header
  run_workloads
  maintenance_loop_stop
done

# --- the final tables -----------------------------------------------------------
echo
echo "===== bench results ($(date -u '+%Y-%m-%d %H:%M UTC'); runs ${BENCH_RUNS} x ${BENCH_SECONDS}s, median) ====="
header
awk -F '\t' -v f="$ROWFMT" '{ printf f, $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$results"
echo
echo "===== targets of issues 15 and 17 (preload = shared_preload_libraries has the library) ====="
# The summary as a markdown table, so that it reads the same here and in BENCH_OUT.
summary_md() {
  echo "| target | preload | figures | bar | verdict |"
  echo "|---|---|---|---|---|"
  awk -F '\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }' "$summary"
}
summary_md
echo "targets: $(grep -c $'\tmet$' "$summary" || true) met, $(grep -c $'\tnot met$' "$summary" || true) not met, $(grep -c $'\tn/a$' "$summary" || true) n/a"
if [ -n "$BENCH_OUT" ]; then
  {
    echo "| workload | preload | sync commit | clients | raw | queue_engine | ratio | p50 ms | p99 ms |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk -F '\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$results"
    echo
    summary_md
  } >"$BENCH_OUT"
  qe_log "tables written to $BENCH_OUT"
fi
