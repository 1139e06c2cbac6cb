#!/usr/bin/env bash
# test/demo.sh: `make demo` — installs what is missing, builds and installs the extension, starts a throwaway cluster and runs a multi-tenant workload on it (pgbench workers, producers, maintenance, a concurrency sampler), then reports what happened.
#
# Scenario (test/demo/setup.sql):
#   acme      emails (no limit), reports (concurrency_limit 2)
#   globex    tenant limit 3: webhooks (key_concurrency_limit 1, one key per customer), invoices (limit 2)
#   initech   videos (limit 1), thumbnails (limit 1, ttl 2 s: the ones stuck behind the limit expire)
#   umbrella  nightly (paused, ttl 3 s: every run expires)
#   shop      orders (limit 2): save_step "charge", a child run in notifications (the confirmation
#             email), wait_for_event("email.reply", match order_id, lookback, 2 s timeout), some then
#             sleep 700 ms; batches (limit 1): items as child runs, wait_for_children
# Workers (test/demo/worker.pgbench) dequeue any queue, sleep the payload's work_ms, then complete,
# or fail ~10% of attempts (retried after the queue's short backoff). Producers
# (producer.pgbench) trigger runs at a fixed rate, shop_producer.pgbench the shop's orders and batches;
# replier.pgbench answers the orders' emails with send_event (some before the order waits, some never);
# maintenance.pgbench calls run_maintenance() every 0.5 s (it also wakes sleeps and timed-out waits);
# demo.sample() records what executes (and waits) every ~50 ms.
#
# Exit status: 0 when no queue, tenant or key limit was exceeded (sampled or exact overlap),
# check_consistency() found nothing, maintenance logged no repair, no worker was fenced off,
# runs did complete, and runs were woken by an event, a timeout, their children and a sleep, steps
# were saved, no completed order lacks its "charge" step and none was charged twice; 1 otherwise.
#
# Environment:
#   QE_DEMO_SECONDS   workload length (default 30; producers stop 5 s earlier)
#   QE_DEMO_WORKERS   worker clients (default 10)
#   QE_DEMO_RATE      producer transactions per second (default 40)
#   QE_DEMO_SHOP_RATE shop orders and batches per second (default 6)
#   QE_DEMO_BUILD=0   skip make + make install (the extension is installed already)
#   QE_DEMO_DB        database name (default queue_engine_demo; dropped and recreated)
#   QE_DEMO_EXISTING=1  skip packages, build and cluster: use the server PGHOST/PGPORT/PGUSER point at
#                     (the extension must already be installed there)
#   plus test/lib.sh's knobs (QE_KEEP_CLUSTER=1 keeps the cluster for a look afterwards).
set -euo pipefail

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QE_REPO_ROOT"

DEMO_DIR=$QE_REPO_ROOT/test/demo
DURATION=${QE_DEMO_SECONDS:-30}
WORKERS=${QE_DEMO_WORKERS:-10}
RATE=${QE_DEMO_RATE:-40}
SHOP_RATE=${QE_DEMO_SHOP_RATE:-6}
DB=${QE_DEMO_DB:-queue_engine_demo}
PRODUCE_FOR=$((DURATION > 10 ? DURATION - 5 : DURATION))

for v in DURATION WORKERS RATE SHOP_RATE; do
  case ${!v} in '' | *[!0-9]* | 0) qe_die "QE_DEMO_${v/DURATION/SECONDS} must be a positive integer, not '${!v}'" ;; esac
done

if [ "${QE_DEMO_EXISTING:-0}" = 1 ]; then
  qe_log "QE_DEMO_EXISTING=1: using the server at ${PGHOST:-?}:${PGPORT:-5432}, database $DB (no packages, build or cluster)"
  trap 'qe_exit_cleanup' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
else
  qe_install_packages
  [ "${QE_DEMO_BUILD:-1}" = 0 ] || qe_build_install
  qe_cluster_start demo
fi

WORK=$(mktemp -d /tmp/queue_engine_demo.XXXXXX)
qe_on_exit "rm -rf '$WORK'"
BG_PIDS=()
# Background clients this script started, by pid, before the cluster goes away.
stop_background() {
  local p
  for p in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do wait "$p" 2>/dev/null || true; done
  BG_PIDS=()
}
qe_on_exit stop_background

PSQL=(qe_psql -d "$DB")

qe_log "database $DB: CREATE EXTENSION $QE_EXTENSION, tenants, queues, starting backlog"
qe_createdb "$DB" "$QE_EXTENSION"
"${PSQL[@]}" -f "$DEMO_DIR/setup.sql" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; qe_die "setup failed"; }

echo
IFS='|' read -r n_tenants n_queues < <("${PSQL[@]}" -Atc "
  SELECT count(DISTINCT tenant_id), count(*) FROM queue_engine.queues WHERE dropped_at IS NULL")
echo "queue_engine demo: $n_tenants tenants, $n_queues queues, $WORKERS workers, producers at $RATE/s and shop orders at $SHOP_RATE/s for ${PRODUCE_FOR}s, ${DURATION}s in all"
"${PSQL[@]}" -c "\pset footer off" -c "
SELECT t.tenant, coalesce(t.concurrency_limit::text, '-') AS tenant_limit, q.queue,
       coalesce(q.concurrency_limit::text, '-') AS queue_limit,
       coalesce(q.key_concurrency_limit::text, '-') AS key_limit,
       coalesce(q.ttl::text, '-') AS ttl, CASE WHEN q.paused THEN 'paused' ELSE '' END AS state,
       s.queued AS backlog
  FROM queue_engine.queues q JOIN queue_engine.tenants t USING (tenant_id)
  JOIN queue_engine.queue_stats s ON s.queue = q.queue
 ORDER BY t.tenant, q.queue_id"

# The sampler runs until demo.control.stop (or a safety deadline).
"${PSQL[@]}" -c "CALL demo.sample($((DURATION + 120)))" >"$WORK/sampler.log" 2>&1 &
SAMPLER_PID=$!
BG_PIDS+=("$SAMPLER_PID")
"${PSQL[@]}" -c "UPDATE demo.control SET started_at = clock_timestamp()"

PGBENCH=("$QE_PG_BIN/pgbench" -n)
"${PGBENCH[@]}" -c "$WORKERS" -j 2 -T "$DURATION" -f "$DEMO_DIR/worker.pgbench" "$DB" >"$WORK/workers.log" 2>&1 &
WORKERS_PID=$!
BG_PIDS+=("$WORKERS_PID")
"${PGBENCH[@]}" -c 2 -j 1 -R "$RATE" -T "$PRODUCE_FOR" -f "$DEMO_DIR/producer.pgbench" "$DB" >"$WORK/producers.log" 2>&1 &
PRODUCERS_PID=$!
BG_PIDS+=("$PRODUCERS_PID")
"${PGBENCH[@]}" -c 1 -T "$DURATION" -f "$DEMO_DIR/maintenance.pgbench" "$DB" >"$WORK/maintenance.log" 2>&1 &
MAINT_PID=$!
BG_PIDS+=("$MAINT_PID")
"${PGBENCH[@]}" -c 1 -R "$SHOP_RATE" -T "$PRODUCE_FOR" -f "$DEMO_DIR/shop_producer.pgbench" "$DB" >"$WORK/shop.log" 2>&1 &
SHOP_PID=$!
BG_PIDS+=("$SHOP_PID")
"${PGBENCH[@]}" -c 1 -R 25 -T "$DURATION" -f "$DEMO_DIR/replier.pgbench" "$DB" >"$WORK/replier.log" 2>&1 &
REPLIER_PID=$!
BG_PIDS+=("$REPLIER_PID")

qe_log "workload running for ${DURATION}s"
start=$SECONDS
next=$((start + 5))
while kill -0 "$WORKERS_PID" 2>/dev/null || kill -0 "$PRODUCERS_PID" 2>/dev/null || kill -0 "$MAINT_PID" 2>/dev/null \
      || kill -0 "$SHOP_PID" 2>/dev/null || kill -0 "$REPLIER_PID" 2>/dev/null; do
  sleep 1
  if [ "$SECONDS" -ge "$next" ] && kill -0 "$WORKERS_PID" 2>/dev/null; then
    next=$((next + 5))
    "${PSQL[@]}" -Atc "
      SELECT format('  t=%2ss  completed %-5s executing %-3s waiting %-3s queued %-5s delayed %-4s expired %-4s failed %s',
                    $((SECONDS - start)),
                    count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'executing'),
                    count(*) FILTER (WHERE status = 'waiting'),
                    count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'delayed'),
                    count(*) FILTER (WHERE status = 'expired'), count(*) FILTER (WHERE status = 'failed'))
        FROM queue_engine.runs" || true
    # one waiting run of each kind of wait, as get_run shows it (for the report)
    "${PSQL[@]}" -qc "
      INSERT INTO demo.waiting_examples (kind, run_id, queue, waiting_for)
      SELECT DISTINCT ON (g.waiting_for->>'kind') g.waiting_for->>'kind', w.run_id, q.queue, g.waiting_for
        FROM (SELECT run_id, queue_id FROM queue_engine.runs WHERE status = 'waiting' ORDER BY run_id LIMIT 50) w
        JOIN queue_engine.queues q USING (queue_id), LATERAL queue_engine.get_run(w.run_id) g
       WHERE g.waiting_for IS NOT NULL
       ORDER BY g.waiting_for->>'kind', w.run_id
      ON CONFLICT (kind) DO NOTHING" >/dev/null 2>&1 || true
  fi
done

rc_workers=0 rc_producers=0 rc_maint=0 rc_shop=0 rc_replier=0
wait "$WORKERS_PID" || rc_workers=$?
wait "$PRODUCERS_PID" || rc_producers=$?
wait "$MAINT_PID" || rc_maint=$?
wait "$SHOP_PID" || rc_shop=$?
wait "$REPLIER_PID" || rc_replier=$?
"${PSQL[@]}" -c "UPDATE demo.control SET finished_at = clock_timestamp(), stop = true"
rc_sampler=0
wait "$SAMPLER_PID" || rc_sampler=$?
BG_PIDS=()

problems=()
for part in workers producers maintenance shop replier sampler; do
  case $part in
    workers) rc=$rc_workers ;; producers) rc=$rc_producers ;; maintenance) rc=$rc_maint ;; sampler) rc=$rc_sampler ;;
    shop) rc=$rc_shop ;; replier) rc=$rc_replier ;;
  esac
  if [ "$rc" -ne 0 ]; then
    problems+=("$part exited with status $rc")
    echo "----- $part log (exit status $rc) -----" >&2
    tail -n 40 "$WORK/$part.log" >&2
  fi
done
echo
for part in workers producers maintenance shop replier; do
  processed=$(sed -n 's/^number of transactions actually processed: *//p' "$WORK/$part.log" | head -n1)
  failed=$(sed -n 's/^number of failed transactions: *//p' "$WORK/$part.log" | head -n1)
  printf '  pgbench %-12s transactions: %s%s\n' "$part" "${processed:-?}" "${failed:+, failed: $failed}"
done

# One last pass, as the scheduler would make: marks what expired since the last one.
"${PSQL[@]}" -c "CALL queue_engine.run_maintenance()"

"${PSQL[@]}" -f "$DEMO_DIR/report.sql"

IFS='|' read -r violations drift repairs fenced completed < <("${PSQL[@]}" -Atc "
  SELECT (SELECT count(*) FROM demo.concurrency() WHERE verdict = 'VIOLATION'),
         (SELECT coalesce(sum(found), 0) FROM queue_engine.check_consistency(false)),
         (SELECT count(*) FROM queue_engine.consistency_log),
         (SELECT count(*) FROM demo.attempts WHERE outcome LIKE '%rejected'),
         (SELECT count(*) FROM queue_engine.runs WHERE status = 'completed')")

[ "${violations:-1}" -eq 0 ] || problems+=("$violations limit violation(s)")
[ "${drift:-1}" -eq 0 ] || problems+=("check_consistency found $drift drift")
[ "${repairs:-1}" -eq 0 ] || problems+=("consistency_log has $repairs repair(s) from maintenance during the run")
[ "${fenced:-1}" -eq 0 ] || problems+=("$fenced complete/fail call(s) fenced off although nothing stalled or was canceled")
[ "${completed:-0}" -gt 0 ] || problems+=("no run completed")

# Waits, events, children and steps (test/demo/report.sql shows the same figures).
IFS='|' read -r by_event by_timeout by_children by_sleep steps uncharged twice unknown_resume < <("${PSQL[@]}" -Atc "
  SELECT count(*) FILTER (WHERE resume_kind = 1), count(*) FILTER (WHERE resume_kind IN (2, 5)),
         count(*) FILTER (WHERE resume_kind = 3), count(*) FILTER (WHERE resume_kind = 4),
         (SELECT count(*) FROM queue_engine.run_steps),
         (SELECT count(*) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
           WHERE q.queue = 'orders' AND r.status = 'completed'
             AND NOT EXISTS (SELECT FROM queue_engine.get_steps(r.run_id) s WHERE s.step = 'charge')),
         (SELECT count(*) FROM (SELECT run_id FROM demo.step_calls WHERE step = 'charge' AND stored
                                 GROUP BY run_id HAVING count(*) > 1) x),
         count(*) FILTER (WHERE resume_kind = 9)
    FROM demo.attempts")
[ "${by_event:-0}" -gt 0 ] || problems+=("no run was woken by an event")
[ "${by_timeout:-0}" -gt 0 ] || problems+=("no wait timed out")
[ "${by_children:-0}" -gt 0 ] || problems+=("no run was woken by its children")
[ "${by_sleep:-0}" -gt 0 ] || problems+=("no run was woken from a sleep")
[ "${steps:-0}" -gt 0 ] || problems+=("no step was saved")
[ "${uncharged:-1}" -eq 0 ] || problems+=("$uncharged completed order(s) without a charge step")
[ "${twice:-1}" -eq 0 ] || problems+=("$twice order(s) charged twice (save_step stored the step twice)")
[ "${unknown_resume:-1}" -eq 0 ] || problems+=("$unknown_resume resume value(s) of an unknown kind")

echo
if [ ${#problems[@]} -eq 0 ]; then
  echo "demo: OK (no limit exceeded, consistency clean, $completed runs completed; woken: $by_event by an event," \
       "$by_timeout by a timeout, $by_children by their children, $by_sleep from a sleep; $steps steps saved)"
  exit 0
fi
printf 'demo: FAILED: %s\n' "${problems[@]}"
exit 1
