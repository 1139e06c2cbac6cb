#!/usr/bin/env bash
# test/run_tests.sh: `make test` — installs packages, builds, then runs every test suite (pg_regress, isolation, pgTAP, TAP) on a throwaway cluster.
#
# Suites (each passes, fails or is skipped when it has no files yet):
#   docs       test/check_docs.sh: README.md documents every public function of the install scripts and
#              every setting of src/guc.c (no server needed)
#   install    CREATE EXTENSION in a fresh database, DROP and CREATE again; then CREATE EXTENSION
#              on a second cluster with shared_preload_libraries (the background-worker setup)
#   regress    sql/*.sql (not the install scripts) vs expected/, via `make installcheck`
#   isolation  test/isolation/specs/*.spec vs test/isolation/expected/, via `make installcheck`
#   nopreload  regress and isolation again on a second cluster without shared_preload_libraries
#              (the pg_cron setup: the shared state then lives in a dynamic shared memory segment)
#   pgtap      test/pgtap/*.sql, each in a fresh database with pgtap + the extension created, via pg_prove
#   tap        test/t/*.pl with PostgreSQL::Test::Cluster (their own clusters), via prove as postgres
#   clients    test/clients/run.sh: a worker loop (enqueue with idempotency keys, dequeue, heartbeat,
#              complete, fail and retry, wait_for_event woken by send_event, attempt fencing, counts,
#              check_consistency) from node-postgres and psycopg, each directly and through PgBouncer
#              in transaction pooling mode, against the shared cluster (skipped, saying why, when npm's
#              registry is out of reach)
#   compat     test/compat_check.sh --debian 17 18: every src/*.c compiled against PostgreSQL 17 and
#              18's server headers, downloaded from Debian's registry (skipped, saying why, without it)
# Last line: "N passed, N failed" (suites).
#
# Environment: QE_SUITE_TIMEOUT (seconds per suite command, default 1200),
#   QE_TEST_CONF (extra postgresql.conf lines for the shared cluster, newline separated),
#   QE_KEEP_CLUSTER=1 (leave the cluster up for debugging), plus test/lib.sh's knobs.
set -euo pipefail

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QE_REPO_ROOT"

QE_SUITE_TIMEOUT=${QE_SUITE_TIMEOUT:-1200}
SKIP=77                # a suite's exit code for "nothing to run yet"
MAX_DIFF_LINES=400     # keep CI logs readable when a whole expected file is off

declare -a RESULTS=()
PASSED=0
FAILED=0
SKIPPED=0

summary() {
  echo
  echo "===== test summary ====="
  local r
  for r in ${RESULTS[@]+"${RESULTS[@]}"}; do echo "  $r"; done
  [ "$SKIPPED" -eq 0 ] || echo "($SKIPPED suite(s) skipped: their output says why)"
  echo "$PASSED passed, $FAILED failed"
}

# Bounded so a hung test cannot eat CI's 90 minutes; timeout signals the whole process group.
bounded() { timeout -k 30 "$QE_SUITE_TIMEOUT" "$@"; }

show_file() {
  local f=$1
  if [ ! -s "$f" ]; then
    echo "(no $f: the failure is in the output above, e.g. a missing expected file or a connection error)"
    return 0
  fi
  echo "----- $f (first $MAX_DIFF_LINES lines) -----"
  head -n "$MAX_DIFF_LINES" "$f"
  echo "----- end of $f -----"
}

# make's own view of a Makefile variable, so the suites follow the Makefile's lists exactly.
make_var() {
  # shellcheck disable=SC2016 # $(...) is for make to expand
  make -s --no-print-directory -C "$QE_REPO_ROOT" PG_CONFIG="$PG_CONFIG" \
    --eval='qe-print-var: ; @echo $('"$1"')' qe-print-var
}

# README.md documents every public function and setting (no server needed).
suite_docs() {
  bash "$QE_REPO_ROOT/test/check_docs.sh"
}

suite_install() {
  # The install script and the shared library load in a fresh database and drop cleanly, both
  # without preloading (the pg_cron setup) and with shared_preload_libraries (the worker setup);
  # every later suite depends on this, so its failure is the first thing to read.
  local ok=1 version workers="" i
  version=$(qe_createdb qe_install_check "$QE_EXTENSION" >&2 &&
    qe_psql -d qe_install_check -Atc "SELECT extversion FROM pg_extension WHERE extname = '$QE_EXTENSION'") || true
  if [ -n "$version" ] &&
     qe_psql -d qe_install_check -c "DROP EXTENSION \"$QE_EXTENSION\" CASCADE" -c "CREATE EXTENSION \"$QE_EXTENSION\""; then
    echo "install: not preloaded: CREATE EXTENSION $QE_EXTENSION ($version), DROP, CREATE again: ok"
  else
    echo "install: not preloaded: CREATE EXTENSION $QE_EXTENSION (or DROP and CREATE again) FAILED"
    ok=0
  fi
  qe_wait_ready 120 || true
  qe_psql -d postgres -c "DROP DATABASE IF EXISTS qe_install_check WITH (FORCE)" || true

  # This suite runs in a subshell, so its second cluster needs its own cleanup.
  trap 'qe_cluster_stop install_preload' EXIT
  qe_cluster_start install_preload "shared_preload_libraries = '$QE_EXTENSION'" || return 1
  if qe_psql -c "CREATE EXTENSION \"$QE_EXTENSION\""; then
    echo "install: shared_preload_libraries = '$QE_EXTENSION': CREATE EXTENSION: ok"
  else
    echo "install: shared_preload_libraries = '$QE_EXTENSION': CREATE EXTENSION FAILED"
    ok=0
  fi
  for i in $(seq 1 20); do
    workers=$(qe_psql -Atc "SELECT string_agg(DISTINCT backend_type, ', ') FROM pg_stat_activity WHERE backend_type LIKE '${QE_EXTENSION}%'" || true)
    [ -z "$workers" ] || break
    sleep 0.5
  done
  echo "install: background workers seen in pg_stat_activity: ${workers:-none (yet)}"
  if grep -qE 'terminated by signal|PANIC:' "$QE_CLUSTER_LOG"; then
    echo "install: the preloaded server crashed"
    ok=0
  fi
  [ "$ok" = 1 ] || qe_cluster_log_tail install_preload 60 2>&1
  [ "$ok" = 1 ]
}

suite_regress() {
  local tests
  tests=$(make_var REGRESS)
  if [ -z "$tests" ]; then echo "regress: no sql/*.sql tests yet, skipping"; return $SKIP; fi
  echo "regress: $tests"
  rm -rf results regression.diffs regression.out
  # ISOLATION= (empty on the command line) makes PGXS skip the isolation half; it runs as its own suite.
  if ! bounded make -C "$QE_REPO_ROOT" PG_CONFIG="$PG_CONFIG" installcheck ISOLATION=; then
    show_file regression.diffs
    return 1
  fi
}

suite_isolation() {
  local tests
  tests=$(make_var ISOLATION)
  if [ -z "$tests" ]; then echo "isolation: no test/isolation/specs/*.spec yet, skipping"; return $SKIP; fi
  echo "isolation: $tests"
  rm -rf output_iso
  if ! bounded make -C "$QE_REPO_ROOT" PG_CONFIG="$PG_CONFIG" installcheck REGRESS=; then
    show_file output_iso/regression.diffs
    return 1
  fi
}

suite_nopreload() {
  # Without preloading, the hints, cursors and rescue horizon live in a dynamic shared memory
  # segment the first backend creates (src/shmem.c): the same specs must hold there.
  trap 'qe_cluster_stop nopreload' EXIT
  qe_cluster_start nopreload "max_prepared_transactions = 10" || return 1
  echo "nopreload: regress and isolation on a cluster without shared_preload_libraries"
  suite_regress && suite_isolation
}

suite_pgtap() {
  local files=() f db n=0 bad=0 rc
  for f in test/pgtap/*.sql; do [ -e "$f" ] && files+=("$f"); done
  if [ ${#files[@]} -eq 0 ]; then echo "pgtap: no test/pgtap/*.sql yet, skipping"; return $SKIP; fi
  for f in "${files[@]}"; do
    n=$((n + 1))
    # A fresh database per file: no test sees another's queues, runs or settings.
    db=qe_pgtap_$(basename "$f" .sql | tr -c 'A-Za-z0-9_\n' '_')
    echo "pgtap: $f in fresh database $db"
    # An earlier file may have crashed the server: let it finish recovery first.
    qe_wait_ready 120 || true
    if ! qe_createdb "$db" pgtap "$QE_EXTENSION"; then
      echo "pgtap: could not create $db with pgtap and $QE_EXTENSION"
      bad=$((bad + 1)); continue
    fi
    rc=0
    bounded pg_prove --psql-bin "$QE_PG_BIN/psql" --failures --comments -d "$db" "$f" || rc=$?
    if [ "$rc" -eq 0 ]; then
      qe_psql -d postgres -c "DROP DATABASE \"$db\" WITH (FORCE)" || true
    else
      [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || echo "pgtap: $f timed out after ${QE_SUITE_TIMEOUT}s"
      bad=$((bad + 1))
    fi
  done
  echo "pgtap: $((n - bad))/$n files passed"
  [ "$bad" -eq 0 ]
}

suite_tap() {
  local files=() f tmp rc=0
  for f in test/t/*.pl; do [ -e "$f" ] && files+=("$f"); done
  if [ ${#files[@]} -eq 0 ]; then echo "tap: no test/t/*.pl yet, skipping"; return $SKIP; fi
  # TAP clusters run initdb, which refuses root: run as postgres in a copy it owns,
  # so nothing is ever written into the (root-owned) source tree.
  tmp=$(mktemp -d "${QE_CLUSTER_ROOT}/queue_engine_tap.XXXXXX")
  tar -C "$QE_REPO_ROOT" --exclude=./.git --exclude=./results --exclude=./output_iso \
      --exclude=./tmp_check -cf - . | tar -C "$tmp" -xf -
  [ "$(id -u)" -ne 0 ] || chown -R "$QE_PG_OWNER": "$tmp"
  echo "tap: ${files[*]} (as $QE_PG_OWNER, in $tmp)"
  # env -u: the shared cluster's settings must not leak into the tests' own clusters.
  # QE_REPO_ROOT: the checkout with .git, which the copy lacks (011 builds 0.1.0 from its history).
  local as_owner=()
  [ "$(id -u)" -ne 0 ] || as_owner=(runuser -u "$QE_PG_OWNER" --)
  bounded ${as_owner[@]+"${as_owner[@]}"} env -C "$tmp" \
      -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGHOSTADDR -u PGSERVICE \
      PATH="$QE_PG_BIN:/usr/local/bin:/usr/bin:/bin" \
      PERL5LIB="$tmp/test/t:$(dirname "$PG_CONFIG")/../lib/pgxs/src/test/perl${PERL5LIB:+:$PERL5LIB}" \
      PG_REGRESS="$(dirname "$PG_CONFIG")/../lib/pgxs/src/test/regress/pg_regress" \
      TESTDIR="$tmp" top_builddir="$tmp" PG_CONFIG="$PG_CONFIG" \
      QE_REPO_ROOT="$QE_REPO_ROOT" \
      prove --timer "${files[@]}" || rc=$?
  # A segfault or abort in a node is a bug even when the test reconnected and passed.
  if [ "$rc" -eq 0 ] && grep -lE 'terminated by signal (6|7|11)' "$tmp"/tmp_check/log/*.log 2>/dev/null; then
    echo "tap: a test node's server crashed (signal 6, 7 or 11): see the log(s) named above"
    grep -hE -A1 'terminated by signal (6|7|11)' "$tmp"/tmp_check/log/*.log | head -n 20
    echo "tap: left $tmp for inspection"
    return 1
  fi
  if [ "$rc" -ne 0 ]; then
    # The tests' own logs and their nodes' server logs only exist in tmp_check/log: show the failed ones.
    local log t
    for log in "$tmp"/tmp_check/log/regress_log_*; do
      [ -f "$log" ] || continue
      grep -qE 'not ok|Looks like|Bail out|died|Dubious' "$log" || continue
      t=${log##*/regress_log_}
      for f in "$log" "$tmp"/tmp_check/log/"$t"_*.log; do
        [ -f "$f" ] || continue
        echo "----- last 80 lines of $f -----"
        tail -n 80 "$f"
      done
    done
    echo "tap: left $tmp for inspection"
    return 1
  fi
  rm -rf "$tmp"
}

suite_clients() {
  # Real drivers against the shared cluster, directly and through PgBouncer (its own databases).
  local rc=0
  bounded bash test/clients/run.sh || rc=$?
  return "$rc"
}

suite_compat() {
  local rc=0
  bounded bash test/compat_check.sh --debian 17 18 || rc=$?
  return "$rc"
}

run_suite() {
  local name=$1 fn=$2 rc start
  echo
  echo "===== suite: $name ====="
  start=$SECONDS
  qe_wait_ready 120 || true
  # A subshell with its own `set -e`: a failing command fails this suite, not the whole run.
  set +e
  ( set -e; "$fn" )
  rc=$?
  set -e
  local took="$((SECONDS - start))s"
  if [ "$rc" -eq 0 ]; then
    PASSED=$((PASSED + 1)); RESULTS+=("PASS  $name ($took)")
  elif [ "$rc" -eq $SKIP ]; then
    SKIPPED=$((SKIPPED + 1)); RESULTS+=("SKIP  $name (nothing to run: its output says why)")
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    FAILED=$((FAILED + 1)); RESULTS+=("FAIL  $name (timed out after ${QE_SUITE_TIMEOUT}s)")
  else
    FAILED=$((FAILED + 1)); RESULTS+=("FAIL  $name (exit $rc, $took)")
  fi
  echo "===== suite $name: ${RESULTS[-1]%% *} ====="
}

qe_install_packages

set +e
( set -e; qe_build_install "$QE_REPO_ROOT" )
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  FAILED=1; RESULTS+=("FAIL  build (make / make install exit $rc; no suite could run)")
  summary
  exit 1
fi

# The shared cluster preloads the library, as the README recommends: claims
# then use the shared-memory ready hints (dequeue_ready_hint.spec needs them).
# Its worker maintains the postgres database, which no suite uses.
# Two-phase commit is on for prepared_change.spec.
conf=("shared_preload_libraries = '$QE_EXTENSION'" "max_prepared_transactions = 10")
if [ -n "${QE_TEST_CONF:-}" ]; then mapfile -t -O 2 conf <<<"$QE_TEST_CONF"; fi
qe_cluster_start tests ${conf[@]+"${conf[@]}"}

run_suite docs suite_docs
run_suite install suite_install
run_suite regress suite_regress
run_suite isolation suite_isolation
run_suite nopreload suite_nopreload
run_suite pgtap suite_pgtap
run_suite tap suite_tap
run_suite clients suite_clients
run_suite compat suite_compat

# A backend crash can hide behind a test that "passed" on reconnect; the server log tells.
crashes=$(grep -E 'terminated by signal (6|7|11)|PANIC:|TRAP:' "$QE_CLUSTER_LOG" || true)
if [ -n "$crashes" ]; then
  echo
  echo "===== server log shows crashes ====="
  printf '%s\n' "$crashes" | head -n 40
  qe_cluster_log_tail tests 100 2>&1
  FAILED=$((FAILED + 1)); RESULTS+=("FAIL  server log (backend crash in $QE_CLUSTER_LOG)")
elif [ "$FAILED" -gt 0 ]; then
  qe_cluster_log_tail tests 60 2>&1
fi

summary
[ "$FAILED" -eq 0 ]
