#!/usr/bin/env bash
# test/bench/callgrind.sh: instructions per call, counted by valgrind's
# callgrind in a single-user backend: repeatable whatever else the machine
# is doing (pgbench figures on this 2-core box move by 10 % between runs).
# Counts, per call: enqueue, and dequeue 1 + complete in one statement, as
# the extension owner and as a tenant-scoped role (producer and worker on
# the queue's tenant; on a build without grant_tenant, a role with plain
# GRANTs), each the difference between N calls and none.
#
# Usage (as root): bash test/bench/callgrind.sh            # the installed build
#   QE_PG_BIN=/opt/other/usr/lib/postgresql/15/bin bash test/bench/callgrind.sh
#   (a private server tree with another build installed, to compare builds)
# Knobs: CG_CALLS (2000), CG_DIR (/tmp/queue_engine_callgrind), CG_PRELOAD (on: the
# library in shared_preload_libraries; off: loaded at first use, without shared memory).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
for tool in valgrind bc; do
  command -v "$tool" >/dev/null || apt-get -q -y install --no-install-recommends "$tool" </dev/null >/dev/null
done
CG_CALLS=${CG_CALLS:-2000}
CG_DIR=${CG_DIR:-/tmp/queue_engine_callgrind}
CG_PRELOAD=${CG_PRELOAD:-on}
preload=queue_engine; [ "$CG_PRELOAD" = on ] || preload=""
rm -rf "$CG_DIR"; mkdir -p "$CG_DIR"; chmod 777 "$CG_DIR"
B=$QE_PG_BIN
data=$CG_DIR/data
qe_as_pg "$B/initdb" -D "$data" -A trust >/dev/null
cat >>"$data/postgresql.conf" <<CONF
shared_preload_libraries = '$preload'
queue_engine.maintenance_enabled = off
listen_addresses = ''
unix_socket_directories = '$CG_DIR'
CONF
qe_as_pg "$B/pg_ctl" -D "$data" -l "$CG_DIR/server.log" -w start >/dev/null
p() { "$B/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CG_DIR" -U postgres -d postgres "$@"; }
p -c "CREATE EXTENSION queue_engine" -c "SELECT queue_engine.create_queue('q')" \
  -c "SELECT count(*) FROM queue_engine.enqueue_batch('q', array_fill(jsonb_build_object(), ARRAY[$((CG_CALLS + 10))]))" \
  -c "CREATE ROLE cg_scoped" \
  -c "CREATE TABLE raw_jobs (id bigserial PRIMARY KEY, run_at timestamptz NOT NULL DEFAULT now(),
                             locked_at timestamptz, payload jsonb NOT NULL)" \
  -c "CREATE INDEX raw_jobs_ready ON raw_jobs (run_at, id) WHERE locked_at IS NULL" >/dev/null
if [ "$(p -c "SELECT count(*) FROM pg_proc WHERE proname = 'grant_tenant'")" = 1 ]; then
  p -c "SELECT queue_engine.grant_tenant('cg_scoped', 'default', 'producer')" \
    -c "SELECT queue_engine.grant_tenant('cg_scoped', 'default', 'worker')" >/dev/null
  role_kind="tenant-scoped role"
else
  p -c "GRANT USAGE ON SCHEMA queue_engine TO cg_scoped" \
    -c "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA queue_engine TO cg_scoped" >/dev/null
  role_kind="role with GRANTs (no grant_tenant in this build)"
fi
p -c "VACUUM ANALYZE" >/dev/null
qe_as_pg "$B/pg_ctl" -D "$data" -w stop >/dev/null
version=$(qe_as_pg "$B/postgres" --single -D "$data" postgres <<<"SELECT extversion FROM pg_extension WHERE extname = 'queue_engine';" 2>/dev/null | sed -n 's/.*extversion = "\(.*\)".*/\1/p')

# count NAME SQL-FILE -> instructions of a single-user backend running it
count() {
  local copy=$CG_DIR/run
  rm -rf "$copy"; cp -a "$data" "$copy"
  qe_as_pg valgrind --tool=callgrind --callgrind-out-file="$CG_DIR/cg.$1" \
    "$B/postgres" --single -D "$copy" postgres <"$2" >"$CG_DIR/out.$1" 2>"$CG_DIR/err.$1"
  if grep -q 'ERROR' "$CG_DIR/out.$1"; then qe_die "$1: $(grep -m1 ERROR "$CG_DIR/out.$1")"; fi
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$CG_DIR/err.$1"
}
gen() {  # gen FILE ROLE STATEMENT
  { [ -z "$2" ] || echo "SET ROLE $2;"; for _ in $(seq 1 "$CG_CALLS"); do echo "$3"; done; } >"$1"
  chmod 644 "$1"
}
# genp FILE STATEMENT: PREPAREd once, EXECUTEd each call (as pgbench -M prepared does)
genp() {
  { echo "PREPARE p AS $2"; for _ in $(seq 1 "$CG_CALLS"); do echo "EXECUTE p;"; done; } >"$1"
  chmod 644 "$1"
}
enq="SELECT queue_engine.enqueue('q');"
raw="INSERT INTO raw_jobs (payload) VALUES ('{}');"
dc="SELECT queue_engine.complete(d.run_id, NULL, d.attempt) FROM queue_engine.dequeue(ARRAY['q'], 1) d;"
: >"$CG_DIR/none.sql"; echo "SET ROLE cg_scoped;" >"$CG_DIR/none_scoped.sql"; chmod 644 "$CG_DIR"/*.sql
gen "$CG_DIR/enq.sql" "" "$enq"; gen "$CG_DIR/enq_scoped.sql" cg_scoped "$enq"
gen "$CG_DIR/raw.sql" "" "$raw"; gen "$CG_DIR/dc.sql" "" "$dc"; gen "$CG_DIR/dc_scoped.sql" cg_scoped "$dc"
genp "$CG_DIR/enq_p.sql" "$enq"; genp "$CG_DIR/raw_p.sql" "$raw"
base=$(count none "$CG_DIR/none.sql"); base_scoped=$(count none_scoped "$CG_DIR/none_scoped.sql")
per() { echo $((($(count "$1" "$CG_DIR/$1.sql") - $2) / CG_CALLS)); }
e=$(per enq "$base"); es=$(per enq_scoped "$base_scoped")
r=$(per raw "$base"); d=$(per dc "$base"); ds=$(per dc_scoped "$base_scoped")
ep=$(per enq_p "$base"); rp=$(per raw_p "$base")
echo "queue_engine $version ($B), preload $CG_PRELOAD, $CG_CALLS calls each; instructions per call (callgrind):"
printf '%-34s %12s %12s %8s\n' call owner "scoped" ratio
printf '%-34s %12d %12d %8.3f\n' "enqueue" "$e" "$es" "$(echo "$es / $e" | bc -l)"
printf '%-34s %12d %12d %8.3f\n' "dequeue 1 + complete" "$d" "$ds" "$(echo "$ds / $d" | bc -l)"
echo "(scoped: a $role_kind)"
printf '%-34s %12s %12s %8s\n' "vs the raw baseline" raw engine "raw/eng"
printf '%-34s %12d %12d %8.3f\n' "INSERT vs enqueue" "$r" "$e" "$(echo "$r / $e" | bc -l)"
printf '%-34s %12d %12d %8.3f\n' "  both prepared (PREPARE/EXECUTE)" "$rp" "$ep" "$(echo "$rp / $ep" | bc -l)"
