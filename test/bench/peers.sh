#!/usr/bin/env bash
# test/bench/peers.sh: queue_engine side by side with the rawest SQL and with two
# peers, graphile-worker and pg-boss, in one throwaway cluster and one run; each
# system through its own SQL, all with pgbench's simple protocol. Prints one table:
# rows = operation x clients x synchronous_commit, columns = raw, queue_engine,
# graphile-worker, pg-boss, in runs/s (a batch counts every run in it: one dequeue
# of 10 is 10 runs, one enqueue of 100 is 100), each the median of BENCH_RUNS runs
# of BENCH_SECONDS; then versions, date, machine and the exact command.
#
# Operations:
#   enqueue        one run per transaction
#   enqueue 100    one transaction of 100 runs
#   dequeue 1      claim 1 + complete it, from a backlog (two transactions, as workers do)
#   dequeue 10     claim 10 + complete the 10, from a backlog
# Runs of the four systems alternate (raw, queue_engine, graphile-worker, pg-boss, raw, ...)
# so that drift in the machine's speed falls on all of them. Before each dequeue run the
# system's backlog is rebuilt from empty (BENCH_PEERS_BACKLOG runs) and vacuumed; a figure
# marked "!" means a run emptied its backlog (raise BENCH_PEERS_BACKLOG).
#
# What each system runs (payload {"n": 1, "pad": "x" * 75} everywhere):
#   raw            scripts/raw_enqueue.sql, scripts/raw_batch.sql, scripts/raw_claim_ack.sql
#                  (batch 1 and 10; its :ids quoted for the simple protocol, see simple_variant)
#   queue_engine   scripts/qe_enqueue.sql, scripts/qe_batch.sql, scripts/qe_dequeue_complete.sql,
#                  scripts/qe_dequeue_complete_batch.sql (batch 10, :ids quoted likewise)
#   graphile-worker (peers/gw_*.sql; paths inside the npm package)
#     enqueue      select * from graphile_worker.add_job(identifier => ..., payload => ..., ...)
#                  as addJob sends it (dist/helpers.js makeAddJob)
#     enqueue 100  select * from graphile_worker.add_jobs(array(select json_populate_recordset(
#                  null::graphile_worker.job_spec, $1::json)), $2::boolean) (dist/helpers.js makeAddJobs)
#     dequeue 1    the worker's get_job: with j as (select ... from _private_jobs where is_available
#                  and run_at <= now() and task_id = any($2) and (job_queue_id is null or job_queue_id in
#                  (select ... _private_job_queues ... for update skip locked)) order by priority, run_at
#                  limit 1 for update skip locked), q as (update _private_job_queues ...) update
#                  _private_jobs set attempts = attempts + 1, locked_by, locked_at ... returning *
#                  (dist/sql/getJobs.js constructQuery, named-queue strategy 2, no flags, database time);
#                  then complete_job: delete from _private_jobs where id = $1 (dist/sql/completeJobs.js)
#     dequeue 10   get_job10: the same with limit 10 and the j_raw/distinct-on dedupe (getJobs.js,
#                  batchSize 10, what a worker pool with localQueue.size 10 issues); then complete_jobs:
#                  delete from _private_jobs using unnest($1::bigint[]) (completeJobs.js, batched
#                  completion, completeJobBatchDelay >= 0)
#   pg-boss (peers/boss_*.sql)
#     enqueue      send(): insert into pgboss.job_common (...) select ... from json_to_recordset($1)
#                  left join pgboss.queue ... on conflict do nothing returning id
#                  (dist/manager.js createJob -> dist/plans.js insertJobs, returnId true)
#     enqueue 100  insert(): the same statement without returning, 100 jobs in $1 (plans.js insertJobs)
#     dequeue 1    a worker's fetch: with next as (select id from job_common where name = $q and
#                  state < 'active' and not blocked and start_after <= job_now() order by priority
#                  desc, created_on limit 1 for update of j skip locked) update job_common set state =
#                  'active', started_on, heartbeat_on, retry_count ... returning ... (plans.js
#                  fetchNextJob); then complete: with results as (update job_common set completed_on,
#                  state = 'completed', output ... where name = $1 and id = any($2) and state = 'active'
#                  and (id || ':' || retry_count) = any($4) returning id) select count(*), array_agg(id)
#                  (plans.js completeJobs, fenced to the attempt, as work() completes)
#     dequeue 10   the same with limit 10 and the 10 ids (work() with batchSize 10)
# Where a claim returns rows, its final UPDATE ... RETURNING is wrapped in one more CTE that
# aggregates the ids for pgbench's \gset (as the raw and queue_engine scripts do); the rest
# of each statement is the peer's text with its parameters inlined. Each peer creates its
# schema with its own migration code (peers/schema.mjs: graphile-worker's runMigrations,
# pg-boss's start() + createQueue('bench')), default queue options; neither peer's
# background processes run during the bench. pg-boss keeps completed jobs (state
# 'completed') as it does until its retention deletes them; graphile-worker deletes them;
# raw deletes them; queue_engine keeps them until its finished_run_retention.
# test/bench/peers/capture.mjs drives both libraries once with a recorder on pg's query()
# and prints every statement they issue: run it (BENCH_PEERS_CAPTURE=1) after upgrading a
# peer and compare with peers/*.sql.
#
# Also (BENCH_PEERS_WAITS): while each system runs dequeue 1 and dequeue 10 at 1 and 8
# clients with synchronous_commit off, a psql session samples pg_stat_activity every
# BENCH_PEERS_SAMPLE_MS ms (\watch, one autocommit query per sample, so the sampler holds no
# snapshot) and the script tabulates the pgbench backends' statement (claim or completion),
# state and wait event per system; /proc/PID/schedstat gives each backend's share of time on
# a CPU and waiting for one, and the backends' and pgbench's CPU per run. With
# BENCH_PEERS_PERF=1 (root, perf installed) it also records the queue_engine run's pgbench
# backends (`perf record -g -p`, for half the run) and prints the top symbols.
#
# Knobs: BENCH_SECONDS (10), BENCH_RUNS (3), BENCH_SYNCS ("on off"), BENCH_PEERS_CLIENTS ("1 8"),
#   BENCH_PEERS_OPS ("enqueue batch dequeue1 dequeue10"; "" for no table), BENCH_PEERS_SYSTEMS ("raw qe gw boss"),
#   BENCH_PEERS_BACKLOG (300000: runs in each backlog before a dequeue run; the fastest
#   dequeue 10 must not empty it in BENCH_SECONDS), BENCH_PEERS_GRAPHILE_WORKER (version; default:
#   the newest 0.x >= 0.16 on npm), BENCH_PEERS_PG_BOSS (version; default: the newest 12.x on npm,
#   else the newest), BENCH_PEERS_NPM_DIR (where to npm install them; default a temporary dir,
#   deleted at exit; an existing dir that holds the wanted versions is reused),
#   BENCH_PEERS_WAITS ("dequeue1 dequeue10": operations sampled, sync off; "" for none),
#   BENCH_PEERS_WAITS_CLIENTS ("1 8": the client counts they are sampled at),
#   BENCH_PEERS_SAMPLE_MS (20), BENCH_PEERS_PERF (0), BENCH_PEERS_CAPTURE (0),
#   BENCH_PEERS_BUILD (1: make + make install the extension first, as run.sh does; 0 when the
#   caller already did), BENCH_OUT (also write the table there, as markdown).
# Needs node and npm (installs Debian's nodejs and npm when missing and we are root).
set -euo pipefail
shopt -s inherit_errexit   # a failing step inside $(...) stops the bench too
here=$(cd "$(dirname "$0")" && pwd)
peers=$here/peers
# shellcheck source=../lib.sh
. "$here/../lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SYNCS=${BENCH_SYNCS:-on off}
CLIENTS=${BENCH_PEERS_CLIENTS:-1 8}
OPS=${BENCH_PEERS_OPS-enqueue batch dequeue1 dequeue10}   # "" for the wait-event pass alone
SYSTEMS=${BENCH_PEERS_SYSTEMS:-raw qe gw boss}
BACKLOG=${BENCH_PEERS_BACKLOG:-300000}
WAITS=${BENCH_PEERS_WAITS-dequeue1 dequeue10}
WAITS_CLIENTS=${BENCH_PEERS_WAITS_CLIENTS:-1 8}
SAMPLE_MS=${BENCH_PEERS_SAMPLE_MS:-20}
PERF=${BENCH_PEERS_PERF:-0}
BENCH_OUT=${BENCH_OUT:-}
BATCH_ENQUEUE=100   # the size qe_batch.sql and raw_batch.sql are written for
command_line="$(printf '%q ' env ${BENCH_SECONDS:+BENCH_SECONDS=$BENCH_SECONDS} BENCH_RUNS="$BENCH_RUNS" \
  BENCH_SYNCS="$BENCH_SYNCS" BENCH_PEERS_CLIENTS="$CLIENTS" BENCH_PEERS_OPS="$OPS" BENCH_PEERS_SYSTEMS="$SYSTEMS" \
  BENCH_PEERS_BACKLOG="$BACKLOG" BENCH_PEERS_WAITS="$WAITS" BENCH_PEERS_WAITS_CLIENTS="$WAITS_CLIENTS" BENCH_PEERS_PERF="$PERF" \
  ${BENCH_PEERS_GRAPHILE_WORKER:+BENCH_PEERS_GRAPHILE_WORKER=$BENCH_PEERS_GRAPHILE_WORKER} \
  ${BENCH_PEERS_PG_BOSS:+BENCH_PEERS_PG_BOSS=$BENCH_PEERS_PG_BOSS} "test/bench/peers.sh")"

for o in $OPS $WAITS; do
  case $o in enqueue|batch|dequeue1|dequeue10) ;; *) qe_die "BENCH_PEERS_OPS/WAITS: unknown operation '$o' (enqueue batch dequeue1 dequeue10)" ;; esac
done
for s in $SYSTEMS; do
  case $s in raw|qe|gw|boss) ;; *) qe_die "BENCH_PEERS_SYSTEMS: unknown system '$s' (raw qe gw boss)" ;; esac
done
has() { [[ " $SYSTEMS " == *" $1 "* ]]; }

# --- packages, build, peers from npm ------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  QE_PACKAGES+=(nodejs npm)
fi
qe_install_packages
[ "${BENCH_PEERS_BUILD:-1}" = 0 ] || qe_build_install
command -v perf >/dev/null 2>&1 || [ "$PERF" = 0 ] || qe_die "BENCH_PEERS_PERF=1 needs perf (linux-perf)"

work=$(mktemp -d)
qe_on_exit "rm -rf '$work'"
npm_dir=${BENCH_PEERS_NPM_DIR:-$work/npm}
mkdir -p "$npm_dir"
npm_dir=$(cd "$npm_dir" && pwd)

# newest_version PACKAGE NODE-FILTER: the newest version npm lists that the filter
# (a JS expression over [major, minor, patch]) accepts; stable versions only.
newest_version() {
  local list
  list=$(qe_retry 3 npm view "$1" versions --json </dev/null)
  node -e '
    const keep = new Function("v", "return " + process.argv[1]);
    const vs = JSON.parse(require("fs").readFileSync(0, "utf8"))
      .filter((s) => /^\d+\.\d+\.\d+$/.test(s)).map((s) => s.split(".").map(Number));
    const ok = vs.filter(keep).length ? vs.filter(keep) : vs;
    ok.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
    console.log(ok[ok.length - 1].join("."));' "$2" <<<"$list"
}
gw_version=${BENCH_PEERS_GRAPHILE_WORKER:-}
boss_version=${BENCH_PEERS_PG_BOSS:-}
if has gw || has boss; then
  [ -n "$gw_version" ] || gw_version=$(newest_version graphile-worker 'v[0] === 0 && v[1] >= 16')
  [ -n "$boss_version" ] || boss_version=$(newest_version pg-boss 'v[0] === 12')
  installed() { node -p "require('$npm_dir/node_modules/$1/package.json').version" 2>/dev/null || true; }
  if [ "$(installed graphile-worker)" != "$gw_version" ] || [ "$(installed pg-boss)" != "$boss_version" ]; then
    qe_log "peers: npm install graphile-worker@$gw_version pg-boss@$boss_version in $npm_dir"
    [ -f "$npm_dir/package.json" ] || echo '{"name": "queue-engine-bench-peers", "private": true}' >"$npm_dir/package.json"
    # Their engines fields ask for a newer node than some distributions ship; npm only warns,
    # and the bench needs nothing of them but their migrations (peers/schema.mjs).
    (cd "$npm_dir" && qe_retry 3 npm install --no-audit --no-fund --loglevel=error \
       "graphile-worker@$gw_version" "pg-boss@$boss_version" pg </dev/null >&2)
  fi
  cp "$peers/schema.mjs" "$peers/capture.mjs" "$npm_dir/"
fi

# --- cluster ------------------------------------------------------------------
# The same settings as run.sh: modest memory for a 2-core box; fsync and
# full_page_writes on; the library preloaded, as README recommends.
qe_cluster_start peers \
  "shared_buffers = 1GB" "max_wal_size = 4GB" "checkpoint_timeout = 30min" \
  "max_connections = 50" "autovacuum_naptime = 10s" \
  "shared_preload_libraries = '$QE_EXTENSION'"
qe_psql -f "$here/setup.sql" >/dev/null
if has gw || has boss; then
  qe_log "peers: graphile-worker and pg-boss create their schemas"
  (cd "$npm_dir" && node schema.mjs bench)
  if [ "${BENCH_PEERS_CAPTURE:-0}" = 1 ]; then
    qe_log "peers: the statements graphile-worker and pg-boss issue (capture.mjs)"
    (cd "$npm_dir" && node capture.mjs bench) >&2
    qe_psql -c "TRUNCATE graphile_worker._private_jobs" -c "TRUNCATE pgboss.job_common" >/dev/null
  fi
fi
pg_version=$(qe_psql -Atc "SHOW server_version")

# --- scripts --------------------------------------------------------------------
payload=$(sed -n "s/^SELECT queue_engine.enqueue('bench', '\(.*\)');$/\1/p" "$here/scripts/qe_enqueue.sql")
[ -n "$payload" ] || qe_die "could not read the payload from scripts/qe_enqueue.sql"

# simple_variant SCRIPT: a copy of SCRIPT whose array variable :ids is quoted. With
# -M prepared pgbench sends :ids as a parameter; with -M simple it pastes the text
# ({1,2,3}) into the statement, where it must be a quoted literal.
simple_variant() {
  local out=$work/simple_$1
  sed "s/(:ids)/(':ids')/g" "$here/scripts/$1" >"$out"
  if grep -q "[^']:ids" "$out"; then qe_die "simple_variant: unquoted :ids left in $1"; fi
  echo "$out"
}
raw_claim=$(simple_variant raw_claim_ack.sql)
qe_claim10=$(simple_variant qe_dequeue_complete_batch.sql)

# script SYSTEM OP -> "SCRIPT RUNS-PER-TRANSACTION [pgbench -D args...]"
gw_task_id=
script() {
  case $1:$2 in
    raw:enqueue)   echo "$here/scripts/raw_enqueue.sql 1" ;;
    raw:batch)     echo "$here/scripts/raw_batch.sql $BATCH_ENQUEUE" ;;
    raw:dequeue1)  echo "$raw_claim 1 -D batch=1" ;;
    raw:dequeue10) echo "$raw_claim 10 -D batch=10" ;;
    qe:enqueue)    echo "$here/scripts/qe_enqueue.sql 1" ;;
    qe:batch)      echo "$here/scripts/qe_batch.sql $BATCH_ENQUEUE" ;;
    qe:dequeue1)   echo "$here/scripts/qe_dequeue_complete.sql 1" ;;
    qe:dequeue10)  echo "$qe_claim10 10 -D batch=10" ;;
    gw:enqueue)    echo "$peers/gw_enqueue.sql 1" ;;
    gw:batch)      echo "$peers/gw_batch.sql $BATCH_ENQUEUE" ;;
    gw:dequeue1)   echo "$peers/gw_dequeue_complete.sql 1 -D task_id=$gw_task_id" ;;
    gw:dequeue10)  echo "$peers/gw_dequeue10_complete.sql 10 -D task_id=$gw_task_id" ;;
    boss:enqueue)  echo "$peers/boss_enqueue.sql 1" ;;
    boss:batch)    echo "$peers/boss_batch.sql $BATCH_ENQUEUE" ;;
    boss:dequeue1) echo "$peers/boss_dequeue_complete.sql 1" ;;
    boss:dequeue10) echo "$peers/boss_dequeue10_complete.sql 10" ;;
  esac
}
# The JSON arrays addJobs and insert() send for BATCH_ENQUEUE jobs (pgbench -D jobs=...).
json_repeat() { local i s=; for ((i = 0; i < BATCH_ENQUEUE; i++)); do s+="${s:+,}$1"; done; echo "[$s]"; }
gw_jobs=$(json_repeat "{\"identifier\":\"bench\",\"payload\":$payload}")
boss_jobs=$(json_repeat "{\"data\":$payload,\"__traceContext\":null}")

# --- state of each system ---------------------------------------------------------
qe_sql() { qe_psql -c "SET client_min_messages = warning" "$@" >/dev/null; }
vacuum_schema() {  # VACUUM ANALYZE every table of schema $1
  qe_psql -Atc "SELECT format('VACUUM ANALYZE %s;', c.oid::regclass) FROM pg_class c
                 WHERE c.relnamespace = '$1'::regnamespace AND c.relkind = 'r'" |
    qe_psql >/dev/null
}
# empty SYSTEM: no job of any kind left
empty() {
  case $1 in
    raw)  qe_sql -c "TRUNCATE raw_jobs" ;;
    # Through the extension's public face only: its storage is what issue 15 changes.
    qe)   qe_sql -c "DROP EXTENSION IF EXISTS $QE_EXTENSION CASCADE" -c "CREATE EXTENSION $QE_EXTENSION" \
                 -c "SELECT queue_engine.create_queue('bench')" ;;
    gw)   qe_sql -c "TRUNCATE graphile_worker._private_jobs" ;;
    boss) qe_sql -c "TRUNCATE pgboss.job_common" ;;
  esac
}
# fill SYSTEM N: N jobs of the bench payload, each through the system's own bulk path
fill() {
  local n=$2
  case $1 in
    raw)  qe_sql -c "INSERT INTO raw_jobs (payload) SELECT '$payload' FROM generate_series(1, $n)" ;;
    qe)   qe_sql -c "SELECT count(*) FROM queue_engine.enqueue_batch('bench', array_fill('$payload'::jsonb, ARRAY[$n]))" \
                 -c "CALL queue_engine.run_maintenance()" ;;
    gw)   qe_sql -c "SELECT count(*) FROM graphile_worker.add_jobs(array(
                       SELECT ('bench', '$payload'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
                         FROM generate_series(1, $n)))" ;;
    # insert()'s statement (boss_batch.sql) with the n jobs built in SQL for its $1
    boss) sed -e '/^--/d' -e "s/':jobs'::text::json/(SELECT json_agg(json_build_object('data', '$payload'::jsonb))::text FROM generate_series(1, $n))::json/" \
              "$peers/boss_batch.sql" | qe_psql >/dev/null ;;
  esac
}
schema_of() { case $1 in raw) echo public ;; qe) echo queue_engine ;; gw) echo graphile_worker ;; boss) echo pgboss ;; esac; }
prepare() {  # prepare SYSTEM OP: the state a run of OP starts from
  empty "$1"
  case $2 in dequeue*) fill "$1" "$BACKLOG" ;; esac
  vacuum_schema "$(schema_of "$1")"
  qe_sql -c "CHECKPOINT"
}

# A first job makes graphile-worker's task row for 'bench'; get_job takes its id.
if has gw; then
  fill gw 1
  gw_task_id=$(qe_psql -Atc "SELECT id FROM graphile_worker._private_tasks WHERE identifier = 'bench'")
  empty gw
fi

# --- measuring --------------------------------------------------------------------
# pgb SYSTEM OP SYNC CLIENTS -> "RUNS/S FLAG" for one pgbench run; FLAG is "!" when the
# run may have emptied its backlog, "-" otherwise; "err 0" when pgbench failed.
pgb() {
  local sys=$1 op=$2 sync=$3 clients=$4 file per dargs_line out rc=0 tps tx
  local -a dargs=()
  read -r file per dargs_line <<<"$(script "$sys" "$op")"
  # shellcheck disable=SC2206  # only "-D name=value" words without spaces
  dargs=(${dargs_line:-})
  case $sys:$op in
    gw:batch)   dargs+=(-D "jobs=$gw_jobs") ;;
    boss:batch) dargs+=(-D "jobs=$boss_jobs") ;;
  esac
  out=$(PGOPTIONS="-c synchronous_commit=$sync" pgbench -n -M simple -c "$clients" -j "$clients" \
          -T "$BENCH_SECONDS" ${dargs[@]+"${dargs[@]}"} -f "$file" 2>"$work/pgbench.err") || rc=$?
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  if [ "$rc" -ne 0 ] || [ -z "$tps" ] || grep -q '^number of failed transactions: [1-9]' <<<"$out"; then
    qe_log "pgbench $sys $op sync=$sync clients=$clients exited $rc: $(grep -v '^pgbench: warning' "$work/pgbench.err" | tail -n 3 | tr '\n' ' ')"
    echo "err 0"; return 0
  fi
  awk -v t="$tps" -v p="$per" -v n="$tx" -v b="$BACKLOG" -v o="$op" \
    'BEGIN { printf "%.1f %s\n", t * p, (o ~ /^dequeue/ && n * p >= b) ? "!" : "-" }'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "err"} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }
# Numbers: integers with thousands separators.
fmt() {
  awk -v x="$1" 'BEGIN {
    if (x !~ /^[0-9]+(\.[0-9]+)?$/) { print x; exit }
    s = sprintf("%.0f", x); o = ""
    while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
    print s o }'
}
label() {
  case $1 in
    enqueue) echo "enqueue, 1 per transaction" ;; batch) echo "enqueue, batch of $BATCH_ENQUEUE" ;;
    dequeue1) echo "dequeue 1 + complete" ;; dequeue10) echo "dequeue 10 + complete the 10" ;;
  esac
}
name_of() { case $1 in raw) echo raw ;; qe) echo queue_engine ;; gw) echo graphile-worker ;; boss) echo pg-boss ;; esac; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

results=$work/results   # lines: op clients sync system runs/s flag
: >"$results"
load_start=$(loadavg)
qe_log "peers: ${BENCH_RUNS} runs of ${BENCH_SECONDS}s each, median; backlog ${BACKLOG}; sync ${BENCH_SYNCS}; clients ${CLIENTS}; load average ${load_start}"
for sync in $BENCH_SYNCS; do
  for clients in $CLIENTS; do
    for op in $OPS; do
      for ((i = 0; i < BENCH_RUNS; i++)); do
        for sys in $SYSTEMS; do
          prepare "$sys" "$op"
          read -r v flag <<<"$(pgb "$sys" "$op" "$sync" "$clients")"
          echo "$op $clients $sync $sys $v $flag" >>"$results"
        done
      done
      line="$(label "$op") sync=$sync clients=$clients:"
      for sys in $SYSTEMS; do
        line+=" $(name_of "$sys") $(awk -v o="$op" -v c="$clients" -v s="$sync" -v y="$sys" \
                 '$1 == o && $2 == c && $3 == s && $4 == y && $5 != "err" {print $5}' "$results" | median)"
      done
      qe_log "$line (load $(loadavg))"
    done
  done
done
load_end=$(loadavg)

# --- wait events and CPU -------------------------------------------------------------------
# sample_waits SYSTEM OP CLIENTS: one run of OP, sync off, while a psql session samples the
# pgbench backends in pg_stat_activity; appends "system op clients statement|state|wait"
# lines to $waits, and the CPU of backends and client (schedstat) to $work/sched.
waits=$work/waits
: >"$waits"
: >"$work/sched"
# schedsum PID... -> "RUN_NS WAIT_NS" summed over every thread of the processes
schedsum() {
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done |
    awk '{ r += $1; w += $2 } END { printf "%.0f %.0f\n", r, w }'
}
# client_pid: the pgbench process connected to this cluster (its environment names our socket directory)
client_pid() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = pgbench ] || continue
    if tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "PGHOST=$PGHOST"; then basename "$p"; return 0; fi
  done
}
# backend_pids SEPARATOR CLIENTS: the pgbench backends, once all CLIENTS are connected (5 s at most)
backend_pids() {
  local k pids=
  for ((k = 0; k < 50; k++)); do
    pids=$(qe_psql -Atc "SELECT string_agg(pid::text, '$1') FROM pg_stat_activity WHERE application_name = 'pgbench'")
    [ "$(tr "$1" ' ' <<<"$pids" | wc -w)" -lt "$2" ] || break
    sleep 0.1
  done
  echo "$pids"
}
sample_waits() {
  local sys=$1 op=$2 clients=$3 sampler_pid perf_pid='' sched_pid v flag
  prepare "$sys" "$op"
  # Which statement of the loop each backend is in (or, idle, last ran): the claim or the
  # completion (pgbench keeps a script's leading comments in the statement text).
  printf '%s\n' "SELECT CASE WHEN query ~* '^(\\s*--[^\\n]*\\n)*\\s*(delete|with results|select queue_engine\\.complete)'
                        THEN 'complete' ELSE 'claim' END || '|' || coalesce(state, '-') || '|'
                   || coalesce(wait_event_type || ':' || wait_event, 'CPU')
                   FROM pg_stat_activity WHERE application_name = 'pgbench'" \
                "\\watch $(awk -v m="$SAMPLE_MS" 'BEGIN { printf "%.3f", m / 1000 }')" >"$work/sampler.sql"
  # psql itself in the background (not a function: $! must be its pid, to stop it).
  PGAPPNAME=bench_sampler "$QE_PG_BIN/psql" -X -At -f "$work/sampler.sql" >"$work/samples" 2>/dev/null &
  sampler_pid=$!
  if [ "$PERF" = 1 ] && [ "$sys" = qe ]; then
    # The pgbench backends only (other clusters share the machine), from 1 s into the run.
    (sleep 1
     pids=$(backend_pids , "$clients")
     [ -z "$pids" ] || perf record -g -q -p "$pids" -o "$work/perf.$op.$clients.data" -- sleep $(( BENCH_SECONDS / 2 > 1 ? BENCH_SECONDS / 2 : 1 )) \
       >/dev/null 2>&1) &
    perf_pid=$!
  fi
  # CPU time and run-queue wait (/proc/PID/schedstat) of the backends and of the pgbench
  # client, from about 1 s into the run to 2 s before its end: on 2 cores, is a backend waiting
  # for a lock or for a CPU, and how much CPU does a run take?
  (sleep 1
   bpids=$(backend_pids ' ' "$clients")
   cpid=$(client_pid)
   t0=$(date +%s%N); b0=$(schedsum $bpids); c0=$(schedsum $cpid)
   sleep $(( BENCH_SECONDS > 4 ? BENCH_SECONDS - 3 : 1 ))
   t1=$(date +%s%N); b1=$(schedsum $bpids); c1=$(schedsum $cpid)
   # Only if every process was still there (a loaded machine may have ended the run first).
   for p in $bpids $cpid; do [ -d "/proc/$p" ] || exit 0; done
   echo "$(( t1 - t0 )) $(wc -w <<<"$bpids") $b0 $b1 $c0 $c1" >"$work/sched.one") &
  sched_pid=$!
  read -r v flag <<<"$(pgb "$sys" "$op" off "$clients")"
  wait "$sched_pid" || true
  { kill "$sampler_pid"; wait "$sampler_pid"; } 2>/dev/null || true
  if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
  [ ! -s "$work/sched.one" ] || echo "$sys $op $clients $v $(cat "$work/sched.one")" >>"$work/sched"
  rm -f "$work/sched.one"
  if [ "$flag" = "!" ]; then flag=" (the backlog may have run out)"; else flag=; fi
  qe_log "waits: $(name_of "$sys") $(label "$op") $clients clients sync off: $(fmt "$v") runs/s$flag, $(wc -l <"$work/samples") backend samples"
  # (the line psql was writing when it was stopped may be cut short)
  awk -v s="$sys" -v o="$op" -v c="$clients" '/^(claim|complete)\|[a-z ()-]+\|[A-Za-z]+(:[A-Za-z0-9_]+)?$/ { print s, o, c, $0 }' \
    "$work/samples" >>"$waits"
}
if [ -n "$WAITS" ]; then
  load_waits=$(loadavg)
  for op in $WAITS; do
    for clients in $WAITS_CLIENTS; do
      for sys in $SYSTEMS; do sample_waits "$sys" "$op" "$clients"; done
    done
  done
fi

# --- report -------------------------------------------------------------------------------
report() {
  local sync clients op sys v flags cells
  if [ -n "$OPS" ]; then report_table; fi
  report_waits
  report_versions
}
report_table() {
  local sync clients op sys v flags cells
  echo "## queue_engine and its peers, pgbench simple protocol (runs/s, median of $BENCH_RUNS runs of ${BENCH_SECONDS}s)"
  echo
  printf '| operation | clients | synchronous_commit |'
  for sys in $SYSTEMS; do printf ' %s |' "$(name_of "$sys")"; done
  printf '\n|---|---:|---|'
  for sys in $SYSTEMS; do printf -- '---:|'; done
  echo
  for op in $OPS; do
    for clients in $CLIENTS; do
      for sync in $BENCH_SYNCS; do
        cells=
        for sys in $SYSTEMS; do
          v=$(awk -v o="$op" -v c="$clients" -v s="$sync" -v y="$sys" \
                '$1 == o && $2 == c && $3 == s && $4 == y && $5 != "err" {print $5}' "$results" | median)
          flags=$(awk -v o="$op" -v c="$clients" -v s="$sync" -v y="$sys" \
                '$1 == o && $2 == c && $3 == s && $4 == y && ($6 == "!" || $5 == "err") {n++} END {print n + 0}' "$results")
          if [ "$flags" -gt 0 ]; then v="$(fmt "$v") !$flags"; else v=$(fmt "$v"); fi
          cells+=" $v |"
        done
        echo "| $(label "$op") | $clients | $sync |$cells"
      done
    done
  done
  echo
  # 8 clients against 1 (the issue's "8 clients at least as fast as 1 client").
  if [[ " $CLIENTS " == *" 1 "* && " $CLIENTS " == *" 8 "* ]]; then
    printf '| 8 clients / 1 client | synchronous_commit |'
    for sys in $SYSTEMS; do printf ' %s |' "$(name_of "$sys")"; done
    printf '\n|---|---|'; for sys in $SYSTEMS; do printf -- '---:|'; done; echo
    for op in $OPS; do
      for sync in $BENCH_SYNCS; do
        cells=
        for sys in $SYSTEMS; do
          cells+=" $(awk -v o="$op" -v s="$sync" -v y="$sys" '
              $1 == o && $3 == s && $4 == y && $5 != "err" { v[$2] = v[$2] " " $5 }
              END { print v[1] "|" v[8] }' "$results" | {
                IFS='|' read -r one eight
                a=$(tr ' ' '\n' <<<"$one" | grep . | median); b=$(tr ' ' '\n' <<<"$eight" | grep . | median)
                awk -v a="$a" -v b="$b" 'BEGIN { if (a + 0 > 0 && b ~ /^[0-9.]+$/) printf "%.2f", b / a; else print "n/a" }'
              }) |"
        done
        echo "| $(label "$op") | $sync |$cells"
      done
    done
    echo
  fi
  echo "\"!N\": in N of the runs pgbench failed or the backlog ($(fmt "$BACKLOG") runs) may have run out; raise BENCH_PEERS_BACKLOG."
  echo
}
report_waits() {
  local op clients sys
  if [ -s "$waits" ]; then
    echo "### Wait events of the pgbench backends, synchronous_commit off (share of samples, one every ${SAMPLE_MS} ms; load average at the start ${load_waits})"
    echo
    echo "Statement: the claim or the completion the backend is running (or, when idle, last ran)."
    echo "active|CPU: running, or waiting for a CPU, with no wait event; idle|Client:ClientRead: waiting for pgbench's next statement."
    echo
    for op in $WAITS; do
      for clients in $WAITS_CLIENTS; do
        echo "$(label "$op"), $clients clients:"
        echo
        printf '| statement \\| state \\| wait event |'; for sys in $SYSTEMS; do printf ' %s |' "$(name_of "$sys")"; done
        printf '\n|---|'; for sys in $SYSTEMS; do printf -- '---:|'; done; echo
        awk -v o="$op" -v c="$clients" -v systems="$SYSTEMS" '
          $2 == o && $3 == c { key = $4; for (i = 5; i <= NF; i++) key = key " " $i; n[$1, key]++; total[$1]++; keys[key] = 1 }
          END {
            ns = split(systems, sy, " ")
            for (k in keys) {
              line = sprintf("| %s |", k); show = 0
              for (i = 1; i <= ns; i++) { v = (total[sy[i]] ? 100 * n[sy[i], k] / total[sy[i]] : 0); if (v >= 0.5) show = 1; line = line sprintf(" %.1f%% |", v) }
              if (show) print line
            }
          }' "$waits" | sort
        echo
      done
    done
    echo "(rows under 0.5 % for every system left out)"
    echo
  fi
  if [ -s "$work/sched" ]; then
    echo "### CPU of the same runs (/proc/PID/schedstat, from about 1 s after the start to 2 s before the end; a run whose processes ended first is left out)"
    echo
    echo "Per backend: share of wall time on a CPU and waiting for one (run queue); per run: backend and pgbench CPU time."
    echo
    echo "| operation | clients | system | runs/s | backend on CPU | backend waiting for a CPU | backend CPU µs per run | pgbench CPU µs per run |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|"
    while read -r sys op clients v dt nb br0 bw0 br1 bw1 cr0 _ cr1 _; do
      awk -v l="$(label "$op")" -v n="$(name_of "$sys")" -v c="$clients" -v v="$v" -v dt="$dt" -v nb="$nb" \
          -v br=$(( br1 - br0 )) -v bw=$(( bw1 - bw0 )) -v cr=$(( cr1 - cr0 )) \
        'BEGIN { if (nb < 1 || dt < 1 || v !~ /^[0-9.]+$/ || v == 0) exit
                 runs = v * dt / 1e9
                 printf "| %s | %s | %s | %.0f | %.0f%% | %.0f%% | %.0f | %.0f |\n", l, c, n, v,
                        100 * br / dt / nb, 100 * bw / dt / nb, br / 1000 / runs, cr / 1000 / runs }'
    done <"$work/sched"
    echo
  fi
}
report_versions() {
  echo "Versions: queue_engine $(qe_psql -Atc "SELECT extversion FROM pg_extension WHERE extname = '$QE_EXTENSION'") (git $(git -C "$QE_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))$(has gw && echo ", graphile-worker $gw_version")$(has boss && echo ", pg-boss $boss_version") (npm), node $(node -v 2>/dev/null || echo '-'), PostgreSQL $pg_version."
  echo "Machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo); load average ${load_start} at the start, ${load_end} at the end of the table."
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Cluster: shared_buffers 1GB, fsync on, the library preloaded (as test/bench/run.sh)."
  echo "Command: $command_line"
}
report | tee "$work/report.md"
[ -z "$BENCH_OUT" ] || cp "$work/report.md" "$BENCH_OUT"

for op in $WAITS; do
  for clients in $WAITS_CLIENTS; do
    [ "$PERF" = 1 ] && [ -s "$work/perf.$op.$clients.data" ] || continue
    echo
    echo "### perf: top symbols of the pgbench backends, queue_engine, $(label "$op"), $clients clients, sync off (perf record -g -p, $(( BENCH_SECONDS / 2 > 1 ? BENCH_SECONDS / 2 : 1 )) s)"
    echo
    perf report -i "$work/perf.$op.$clients.data" --no-children --sort dso,symbol -g none --stdio 2>/dev/null |
      grep -v '^#' | grep '%' | sed 's/ *$//' | head -n 30
  done
done
