# test/lib.sh: shared bash helpers (packages, build, throwaway clusters) for run_tests.sh, demo.sh and benchmarks; source it, don't run it.
# shellcheck shell=bash
#
# Functions:
#   qe_install_packages                 install missing Debian packages (apt-get update once)
#   qe_build_install [REPO]             make + make install the extension (PG 15's pg_config)
#   qe_cluster_start NAME [CONF...]     fresh cluster in $QE_CLUSTER_ROOT/queue_engine_NAME_cluster,
#                                       extra postgresql.conf lines as arguments; exports the env below
#   qe_cluster_env NAME                 re-export the env for an already started cluster
#   qe_cluster_stop NAME                stop + remove it (idempotent, never fails: safe in traps)
#   qe_cluster_stop_all                 stop every cluster this shell started
#   qe_on_exit CMD                      run CMD (a string for eval) at exit, before clusters stop
#   qe_exit_cleanup                     what the EXIT trap runs: qe_on_exit hooks, then qe_cluster_stop_all
#   qe_cluster_restart NAME             pg_ctl restart (e.g. after changing shared_preload_libraries)
#   qe_cluster_log_tail NAME [LINES]    print the end of its server log
#   qe_as_pg CMD...                     run CMD as the cluster owner (postgres when we are root)
#   qe_wait_ready [SECONDS]             wait until the exported cluster accepts connections (after a crash restart)
#   qe_psql [psql args...]              psql -X -v ON_ERROR_STOP=1 -q against the exported cluster
#   qe_createdb DB [EXTENSION...]       drop/create DB and CREATE EXTENSION each one in it
#   qe_log MSG / qe_die MSG             "==> MSG" on stderr / same and exit 1
#
# Exported by qe_cluster_start / qe_cluster_env (so psql, pg_regress, pg_prove, pgbench just work):
#   PGHOST (socket dir), PGPORT, PGUSER=postgres, PGDATABASE=postgres,
#   QE_CLUSTER_NAME, QE_CLUSTER_DIR, QE_CLUSTER_DATA, QE_CLUSTER_LOG
# Always set: QE_REPO_ROOT, QE_EXTENSION (from the repo's *.control), QE_PG_BIN (also first on PATH),
#   PG_CONFIG, QE_PG_OWNER (who runs initdb/pg_ctl: postgres when we are root)
#
# Knobs (environment): QE_CLUSTER_ROOT (default /tmp), QE_PORT_START (default 54321),
#   QE_KEEP_CLUSTER=1 (leave clusters running on exit, for debugging),
#   QE_NO_TRAP=1 (qe_cluster_start does not install its EXIT/INT/TERM traps; call qe_exit_cleanup yourself).
# If you set your own EXIT trap after qe_cluster_start, it replaces ours: register with qe_on_exit instead.

# Sourced from scripts that use `set -euo pipefail`; keep every helper safe under it.

QE_PG_MAJOR=15
# QE_PG_BIN may point at a private copy of the server tree (pg_config finds its
# share and lib directories relative to itself), e.g. for tests side by side.
QE_PG_BIN=${QE_PG_BIN:-/usr/lib/postgresql/${QE_PG_MAJOR}/bin}
# Debian's /usr/bin/pg_config picks the newest installed server; pin 15.
PG_CONFIG=${QE_PG_BIN}/pg_config
QE_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QE_CLUSTER_ROOT=${QE_CLUSTER_ROOT:-/tmp}
QE_PORT_START=${QE_PORT_START:-54321}
QE_STARTED_CLUSTERS=()
QE_EXIT_HOOKS=()
# The extension name comes from the control file, so these scripts also work on a scratch copy.
QE_EXTENSION=queue_engine
for _qe_ctl in "$QE_REPO_ROOT"/*.control; do
  [ -e "$_qe_ctl" ] && QE_EXTENSION=$(basename "$_qe_ctl" .control)
  break
done
unset _qe_ctl
export QE_PG_BIN PG_CONFIG QE_REPO_ROOT QE_EXTENSION
case ":$PATH:" in *":$QE_PG_BIN:"*) ;; *) export PATH="$QE_PG_BIN:$PATH" ;; esac

QE_PACKAGES=(
  build-essential make perl
  postgresql-15 postgresql-server-dev-15
  postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
  postgresql-15-cron libipc-run-perl
  util-linux coreutils procps
  curl xz-utils ca-certificates
)

qe_log() { printf '==> %s\n' "$*" >&2; }
qe_die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

# Who owns clusters: initdb refuses root, so root hands them to postgres.
if [ "$(id -u)" -eq 0 ]; then QE_PG_OWNER=postgres; else QE_PG_OWNER=$(id -un); fi
export QE_PG_OWNER

# Run a command as the cluster owner, from / (root's cwd may be unreadable to postgres).
qe_as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u "$QE_PG_OWNER" -- "$@")
  else
    (cd / && "$@")
  fi
}

qe_install_packages() {
  local missing=() p status
  for p in "${QE_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    qe_log "packages: all ${#QE_PACKAGES[@]} present"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    printf '==> ERROR: missing Debian packages: %s\n    run as root, or: sudo apt-get install -y %s\n' \
      "${missing[*]}" "${missing[*]}" >&2
    exit 1
  fi
  qe_log "packages: installing ${missing[*]}"
  # No stdin in CI: never let apt/debconf prompt; wait for a concurrent dpkg instead of failing.
  export DEBIAN_FRONTEND=noninteractive
  local apt_opts=(-q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  qe_retry 3 apt-get "${apt_opts[@]}" update </dev/null
  qe_retry 3 apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" </dev/null
}

# A registry that times out once should not fail a 90-minute CI run.
qe_retry() {
  local tries=$1 i=1
  shift
  until "$@"; do
    [ "$i" -lt "$tries" ] || return 1
    qe_log "retrying in $((i * 10))s: $*"
    sleep $((i * 10)); i=$((i + 1))
  done
}

qe_build_install() {
  local repo=${1:-$QE_REPO_ROOT}
  qe_log "build: make -C $repo"
  make -C "$repo" PG_CONFIG="$PG_CONFIG" -j"$(nproc)"
  qe_log "install: make -C $repo install"
  make -C "$repo" PG_CONFIG="$PG_CONFIG" install
}

qe_cluster_dir() { printf '%s/queue_engine_%s_cluster\n' "$QE_CLUSTER_ROOT" "$1"; }

# A port nobody listens on (TCP) and no socket file uses in the usual places.
qe_free_port() {
  local p=$QE_PORT_START
  while [ "$p" -lt $((QE_PORT_START + 1000)) ]; do
    if ! compgen -G "$QE_CLUSTER_ROOT/queue_engine_*_cluster/.s.PGSQL.$p" >/dev/null \
       && [ ! -e "/var/run/postgresql/.s.PGSQL.$p" ] && [ ! -e "/tmp/.s.PGSQL.$p" ] \
       && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return 0
    fi
    p=$((p + 1))
  done
  qe_die "no free port in $QE_PORT_START..$((QE_PORT_START + 999))"
}

qe_cluster_env() {
  local name=$1 dir
  dir=$(qe_cluster_dir "$name")
  [ -f "$dir/port" ] || qe_die "cluster $name is not started ($dir/port missing)"
  export QE_CLUSTER_NAME=$name QE_CLUSTER_DIR=$dir QE_CLUSTER_DATA=$dir/data QE_CLUSTER_LOG=$dir/server.log
  PGPORT=$(cat "$dir/port")
  export PGHOST=$dir PGPORT PGUSER=postgres PGDATABASE=postgres
  # These would override PGHOST/PGPORT or redirect connections elsewhere.
  unset PGHOSTADDR PGSERVICE PGSERVICEFILE PGPASSWORD PGSSLMODE PGOPTIONS
}

qe_cluster_log_tail() {
  local log; log=$(qe_cluster_dir "$1")/server.log
  if [ -r "$log" ]; then
    echo "----- last ${2:-60} lines of $log -----" >&2
    tail -n "${2:-60}" "$log" >&2
    echo "----- end of $log -----" >&2
  fi
  return 0
}

qe_cluster_stop() {
  local name=$1 dir
  dir=$(qe_cluster_dir "$name")
  [ -d "$dir" ] || return 0
  if [ "${QE_KEEP_CLUSTER:-0}" = 1 ]; then
    qe_log "cluster $name kept running (QE_KEEP_CLUSTER=1): PGHOST=$dir PGPORT=$(cat "$dir/port" 2>/dev/null || echo ?) log $dir/server.log"
    return 0
  fi
  if [ -f "$dir/data/postmaster.pid" ]; then
    qe_as_pg "$QE_PG_BIN/pg_ctl" -D "$dir/data" stop -m fast -w -t 60 >/dev/null 2>&1 \
      || qe_as_pg "$QE_PG_BIN/pg_ctl" -D "$dir/data" stop -m immediate -w -t 30 >/dev/null 2>&1 \
      || true
  fi
  rm -rf "$dir" || true
  local keep=() n
  for n in ${QE_STARTED_CLUSTERS[@]+"${QE_STARTED_CLUSTERS[@]}"}; do [ "$n" = "$name" ] || keep+=("$n"); done
  QE_STARTED_CLUSTERS=(${keep[@]+"${keep[@]}"})
  return 0
}

qe_cluster_stop_all() {
  local n
  for n in ${QE_STARTED_CLUSTERS[@]+"${QE_STARTED_CLUSTERS[@]}"}; do qe_cluster_stop "$n"; done
  return 0
}

qe_on_exit() { QE_EXIT_HOOKS+=("$1"); }

qe_exit_cleanup() {
  local h
  for h in ${QE_EXIT_HOOKS[@]+"${QE_EXIT_HOOKS[@]}"}; do eval "$h" || true; done
  QE_EXIT_HOOKS=()
  qe_cluster_stop_all
}

qe_install_traps() {
  [ -z "${QE_TRAP_SET:-}" ] || return 0
  # INT/TERM go through exit so the EXIT trap runs exactly once.
  trap 'qe_exit_cleanup' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  QE_TRAP_SET=1
}

qe_cluster_start() {
  local name=${1:?usage: qe_cluster_start NAME [postgresql.conf lines...]}
  shift
  case $name in *[!A-Za-z0-9_-]*) qe_die "cluster name '$name': use letters, digits, _ and - only" ;; esac
  local dir port line
  dir=$(qe_cluster_dir "$name")
  [ -x "$QE_PG_BIN/initdb" ] || qe_die "$QE_PG_BIN/initdb missing: run qe_install_packages first"
  id "$QE_PG_OWNER" >/dev/null 2>&1 || qe_die "user $QE_PG_OWNER does not exist (it comes with postgresql-common)"

  # A stale cluster of the same name (killed run) would hold the port and the data dir.
  QE_KEEP_CLUSTER=0 qe_cluster_stop "$name"
  mkdir -p "$dir"
  chmod 0755 "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown "$QE_PG_OWNER": "$dir"; fi
  port=$(qe_free_port)
  # Unix socket paths are limited to 107 bytes.
  [ ${#dir} -le 90 ] || qe_die "socket dir $dir is too long for a unix socket; set a shorter QE_CLUSTER_ROOT"

  qe_log "cluster $name: initdb in $dir/data"
  # -U postgres: the superuser is always 'postgres' whoever runs this; C collation keeps test output stable.
  if ! qe_as_pg "$QE_PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale \
        >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    qe_die "initdb failed for cluster $name"
  fi

  {
    echo ""
    echo "# added by test/lib.sh qe_cluster_start"
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '$dir'"
    echo "port = $port"
    echo "fsync = on"
    echo "max_connections = 100"
    echo "shared_buffers = '256MB'"
    echo "timezone = 'UTC'"
    echo "log_timezone = 'UTC'"
    echo "lc_messages = 'C'"
    echo "log_line_prefix = '%m [%p] %q%b %a@%d '"
    echo "log_min_messages = warning"
    for line in "$@"; do echo "$line"; done
  } | qe_as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
  echo "$port" | qe_as_pg tee "$dir/port" >/dev/null

  QE_STARTED_CLUSTERS+=("$name")
  [ "${QE_NO_TRAP:-0}" = 1 ] || qe_install_traps

  qe_log "cluster $name: starting on socket $dir port $port; server log: $dir/server.log"
  if ! qe_as_pg "$QE_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 start >/dev/null; then
    qe_cluster_log_tail "$name" 80
    qe_die "cluster $name failed to start"
  fi
  qe_cluster_env "$name"
}

qe_cluster_restart() {
  local name=$1 dir
  dir=$(qe_cluster_dir "$name")
  if ! qe_as_pg "$QE_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 -m fast restart >/dev/null; then
    qe_cluster_log_tail "$name" 80
    qe_die "cluster $name failed to restart"
  fi
}

qe_wait_ready() {
  local deadline=$((SECONDS + ${1:-60}))
  until "$QE_PG_BIN/pg_isready" -q; do
    [ "$SECONDS" -lt "$deadline" ] || { qe_log "cluster at $PGHOST:$PGPORT not ready after ${1:-60}s"; return 1; }
    sleep 0.5
  done
}

qe_psql() { "$QE_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

qe_createdb() {
  local db=${1:?usage: qe_createdb DB [EXTENSION...]} ext
  shift
  # Explicit returns: callers often use this in `if`, where set -e does not apply.
  qe_psql -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || return 1
  qe_psql -d postgres -c "CREATE DATABASE \"$db\"" || return 1
  for ext in "$@"; do
    qe_psql -d "$db" -c "CREATE EXTENSION IF NOT EXISTS \"$ext\" CASCADE" || return 1
  done
}
