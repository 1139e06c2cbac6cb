#!/usr/bin/env bash
# test/clients/run.sh: real clients drive a complete worker loop against the installed extension:
# node-postgres (worker_loop.js) and psycopg (worker_loop.py), each directly and through
# PgBouncer in transaction pooling mode (pgbouncer.ini). `make test`'s suite `clients`.
#
# Usage: test/clients/run.sh   against the server in PGHOST/PGPORT/PGUSER (e.g. after
#   `. test/lib.sh; qe_cluster_env NAME`); it creates one database per client run
#   (qe_clients_<driver>_<direct|pgbouncer>) with the extension, and drops them when all passed.
# Installs what is missing (pgbouncer, python3-psycopg2, nodejs/npm; the `pg` package with npm
# into $QE_CLIENTS_WORK, default $QE_CLUSTER_ROOT/queue_engine_clients, reused by later runs).
# Exit: 0 all passed, 1 a failure, 77 skipped (npm's registry or apt unreachable: it says why).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
source "$HERE/../lib.sh"
SKIP=77
CLIENT_TIMEOUT=${QE_CLIENT_TIMEOUT:-60}   # seconds per client run
WORK=${QE_CLIENTS_WORK:-$QE_CLUSTER_ROOT/queue_engine_clients}
PYTHON=/usr/bin/python3                   # Debian's, where python3-psycopg2 lives

log() { printf 'clients: %s\n' "$*"; }
skip() { log "SKIP: $*"; exit $SKIP; }

if [ -z "${PGHOST:-}" ] || [ -z "${PGPORT:-}" ]; then
  qe_die "PGHOST and PGPORT must name the server under test (e.g. . test/lib.sh; qe_cluster_env NAME)"
fi
SERVER_HOST=$PGHOST SERVER_PORT=$PGPORT
export PGUSER=${PGUSER:-postgres}

# ---- packages ------------------------------------------------------------------------------
missing=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
"$PYTHON" -c 'import psycopg2' 2>/dev/null || "$PYTHON" -c 'import psycopg' 2>/dev/null || missing+=(python3-psycopg2)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# Only when there is no npm at all: NodeSource's nodejs bundles it and conflicts with Debian's.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || skip "missing Debian packages ${missing[*]} and not root to install them"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! { apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" </dev/null \
         || { apt-get "${apt_opts[@]}" update </dev/null &&
              apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" </dev/null; }; } >"$QE_CLUSTER_ROOT/queue_engine_clients_apt.log" 2>&1; then
    tail -n 15 "$QE_CLUSTER_ROOT/queue_engine_clients_apt.log"
    skip "apt-get could not install ${missing[*]} (log above)"
  fi
  # The Debian package starts its own pgbouncer on port 6432 where there is an init system; not ours.
fi
PGBOUNCER=$(command -v pgbouncer 2>/dev/null || echo /usr/sbin/pgbouncer)

# ---- node-postgres from npm -----------------------------------------------------------------
mkdir -p "$WORK/node"
cp "$HERE/package.json" "$HERE/worker_loop.js" "$WORK/node/"
if [ -f "$WORK/node/node_modules/pg/package.json" ] && cmp -s "$HERE/package.json" "$WORK/node/package.json.installed"; then
  log "node-postgres: reusing $WORK/node/node_modules"
else
  log "node-postgres: npm install in $WORK/node ($(npm config get registry 2>/dev/null || echo '?'))"
  if ! (cd "$WORK/node" && timeout 90 npm install --no-audit --no-fund --no-package-lock --loglevel=error \
           --fetch-retries=1 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=5000) \
       >"$WORK/npm.log" 2>&1; then
    tail -n 15 "$WORK/npm.log"
    skip "npm install of 'pg' from $(npm config get registry 2>/dev/null) failed, so node-postgres cannot be tested: the registry is most likely not reachable from here (npm's output above, full log $WORK/npm.log)"
  fi
  cp "$HERE/package.json" "$WORK/node/package.json.installed"
fi

# ---- PgBouncer ------------------------------------------------------------------------------
BOUNCER_VERSION=$("$PGBOUNCER" --version | awk 'NR == 1 { print $2 }')
BDIR=$(mktemp -d "$QE_CLUSTER_ROOT/queue_engine_clients_bouncer.XXXXXX")
chmod 0755 "$BDIR"
[ "$(id -u)" -ne 0 ] || chown "$QE_PG_OWNER": "$BDIR"
stop_bouncer() {
  if [ -f "$BDIR/pgbouncer.pid" ]; then
    local pid; pid=$(cat "$BDIR/pgbouncer.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$BDIR"
}
trap stop_bouncer EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# max_prepared_statements (named prepared statements in transaction mode) came with 1.21.
if printf '%s\n' 1.21.0 "$BOUNCER_VERSION" | sort -V -C; then
  BOUNCER_PREPARED=1
  prepared_line="max_prepared_statements = 100"
else
  BOUNCER_PREPARED=0
  prepared_line="; max_prepared_statements needs PgBouncer >= 1.21 (this is $BOUNCER_VERSION): unnamed statements only"
fi
BPORT=$(QE_PORT_START=$((PGPORT + 100)) qe_free_port)
sed -e "s|@SERVER_HOST@|$SERVER_HOST|g" -e "s|@SERVER_PORT@|$SERVER_PORT|g" \
    -e "s|@LISTEN_PORT@|$BPORT|g" -e "s|@WORK_DIR@|$BDIR|g" \
    -e "s|@PREPARED_STATEMENTS@|$prepared_line|" "$HERE/pgbouncer.ini" >"$BDIR/pgbouncer.ini"
echo "\"$PGUSER\" \"\"" >"$BDIR/userlist.txt"
[ "$(id -u)" -ne 0 ] || chown "$QE_PG_OWNER": "$BDIR"/*
log "pgbouncer $BOUNCER_VERSION: pool_mode = transaction on 127.0.0.1:$BPORT -> $SERVER_HOST:$SERVER_PORT" \
    "(named prepared statements through it: $([ "$BOUNCER_PREPARED" = 1 ] && echo "yes, max_prepared_statements = 100" || echo "no, needs >= 1.21"))"
if ! qe_as_pg "$PGBOUNCER" -d -q "$BDIR/pgbouncer.ini"; then
  cat "$BDIR/pgbouncer.log" 2>/dev/null || true
  qe_die "pgbouncer did not start"
fi

# ---- databases ------------------------------------------------------------------------------
RUNS=(node:direct python:direct node:pgbouncer python:pgbouncer)
for r in "${RUNS[@]}"; do
  qe_createdb "qe_clients_${r%%:*}_${r##*:}" "$QE_EXTENSION" >/dev/null
done
# Give each pooled database its two server connections (two overlapping transactions), so
# the clients' transactions (server_round_robin) really alternate between two server sessions.
bouncer_psql() { PGHOST=127.0.0.1 PGPORT=$BPORT "$QE_PG_BIN/psql" -X -q -At "$@"; }
for r in "${RUNS[@]}"; do
  [ "${r##*:}" = pgbouncer ] || continue
  db="qe_clients_${r/:/_}" n=0
  for _ in 1 2 3 4 5; do
    bouncer_psql -d "$db" -c 'SELECT pg_sleep(0.6)' >/dev/null 2>&1 & sleeper=$!
    sleep 0.2
    bouncer_psql -d "$db" -c 'SELECT 1' >/dev/null 2>&1 || true
    wait "$sleeper" || true
    n=$(bouncer_psql -d pgbouncer -c 'SHOW SERVERS' 2>/dev/null | awk -F'|' -v db="$db" '$3 == db' | wc -l) || n=0
    [ "$n" -lt 2 ] || break
  done
  [ "$n" -ge 2 ] || { tail -n 20 "$BDIR/pgbouncer.log" 2>/dev/null || true; qe_die "pgbouncer did not open 2 server connections to $db (has $n)"; }
done

# ---- the clients ----------------------------------------------------------------------------
declare -a SUMMARY=()
failed=0
for r in "${RUNS[@]}"; do
  drv=${r%%:*} via=${r##*:} label=${r/:/_}
  envs=(PGDATABASE="qe_clients_$label" QE_CLIENT_LABEL="$label" PGUSER="$PGUSER")
  if [ "$via" = direct ]; then
    envs+=(PGHOST="$SERVER_HOST" PGPORT="$SERVER_PORT" QE_NAMED_STATEMENTS=1 QE_VIA_POOLER=0)
  else
    envs+=(PGHOST=127.0.0.1 PGPORT="$BPORT" QE_NAMED_STATEMENTS="$BOUNCER_PREPARED" QE_VIA_POOLER=1)
  fi
  if [ "$drv" = node ]; then cmd=(node "$WORK/node/worker_loop.js"); else cmd=("$PYTHON" "$HERE/worker_loop.py"); fi
  echo
  log "---- $drv $via ----"
  out=$(env "${envs[@]}" timeout -k 10 "$CLIENT_TIMEOUT" "${cmd[@]}" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out"
  if [ "$rc" -eq 0 ] && printf '%s\n' "$out" | grep -q '^PASS '; then
    SUMMARY+=("PASS  $drv via $via: $(printf '%s\n' "$out" | head -n 1 | sed 's/^[^:]*: //')")
  else
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then log "$drv $via timed out after ${CLIENT_TIMEOUT}s"; fi
    SUMMARY+=("FAIL  $drv via $via (exit $rc)")
    failed=$((failed + 1))
  fi
done

if [ "$failed" -gt 0 ] && [ -s "$BDIR/pgbouncer.log" ]; then
  echo "----- last 30 lines of $BDIR/pgbouncer.log -----"
  tail -n 30 "$BDIR/pgbouncer.log"
fi
if [ "$failed" -eq 0 ]; then
  stop_bouncer   # first, so its pooled server connections are gone
  for r in "${RUNS[@]}"; do
    qe_psql -d postgres -c "DROP DATABASE IF EXISTS \"qe_clients_${r/:/_}\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
fi

echo
echo "clients summary: pgbouncer $BOUNCER_VERSION (pool_mode = transaction, named prepared statements through it:" \
     "$([ "$BOUNCER_PREPARED" = 1 ] && echo yes || echo "no: max_prepared_statements needs >= 1.21"))"
for s in "${SUMMARY[@]}"; do echo "  $s"; done
echo "clients: $(( ${#RUNS[@]} - failed )) passed, $failed failed"
[ "$failed" -eq 0 ]
