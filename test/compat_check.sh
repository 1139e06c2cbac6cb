#!/bin/bash
# Compile every src/*.c against other PostgreSQL versions' server headers
# (no linking, nothing installed, nothing fetched).  Not part of make test.
#
#   test/compat_check.sh [WHERE ...]
#
# Each WHERE is one of:
#   - a server include directory (it holds pg_config.h), e.g.
#     /usr/include/postgresql/17/server;
#   - a PostgreSQL source tree: configured here if it is not yet
#     (./configure --without-icu --without-readline --without-zlib) and
#     given its generated headers (make -C src/backend generated-headers);
#   - GITDIR@REF: a PostgreSQL git directory (bare is fine) and a branch or
#     tag, e.g. /work/.mirror/postgres+postgres/repo@REL_17_STABLE; its src/
#     is unpacked under $QE_COMPAT_WORK (default /tmp/qe_compat) and treated
#     as a source tree.
# Without arguments it checks every /usr/include/postgresql/*/server.
# With --debian V ... it first downloads postgresql-server-dev-V from
# Debian (trixie has 17, sid 18; no Debian release packages 16) and checks
# those headers: what `make test`'s compat suite runs.
#
# Getting headers without installing anything (Debian):
#   apt-get download postgresql-server-dev-17   # from a suite that has it
#   dpkg-deb -x postgresql-server-dev-17_*.deb /tmp/pghdr/17
#   test/compat_check.sh /tmp/pghdr/17/usr/include/postgresql/17/server
# or a source tree:  git archive REL_16_STABLE | tar -x -C /tmp/pgsrc/16
# (configure needs bison and flex only for a git checkout's full build, not
# for the headers).  A WHERE that is missing is skipped with a message.
#
# CC (default gcc) and the flags are those of PGXS plus the Makefile's
# PG_CFLAGS.  Exit status: 0 when nothing failed (skips do not fail).

set -u
cd "$(dirname "$0")/.." || exit 2

CC=${CC:-gcc}
WORK=${QE_COMPAT_WORK:-/tmp/qe_compat}
CFLAGS=(-O2 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare
	-Wno-missing-field-initializers -Wmissing-prototypes -Wpointer-arith
	-Wdeclaration-after-statement -Werror=vla -Wendif-labels
	-Wmissing-format-attribute -Wimplicit-fallthrough=3 -Wcast-function-type
	-Wformat-security -fno-strict-aliasing -fwrapv -fexcess-precision=standard
	-Wno-format-truncation -Wno-stringop-truncation -fPIC -D_GNU_SOURCE)
if [[ $CC == *clang* ]]; then
	# Headers configured for gcc; clang knows other warnings (and has
	# -Wmissing-variable-declarations, which PostgreSQL 17+ adds).
	CFLAGS=(-O2 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare
		-Wno-missing-field-initializers -Wmissing-prototypes -Wpointer-arith
		-Wdeclaration-after-statement -Wmissing-variable-declarations
		-Wno-ignored-attributes -Wno-unused-command-line-argument
		-Wno-compound-token-split-by-macro -fno-strict-aliasing -fwrapv
		-fPIC -D_GNU_SOURCE)
fi

passed=0 failed=0 skipped=0

skip() {
	echo "SKIP $1: $2"
	skipped=$((skipped + 1))
}

# Source tree -> its src/include, configured and with generated headers.
prepare_tree() {
	local tree=$1
	if [[ ! -f $tree/src/include/pg_config.h ]]; then
		echo "configuring $tree (log: $tree/qe_configure.log)" >&2
		(cd "$tree" && ./configure --without-icu --without-readline \
			--without-zlib >qe_configure.log 2>&1) || return 1
	fi
	if [[ ! -e $tree/src/include/catalog/pg_type_d.h ||
		! -e $tree/src/include/utils/fmgroids.h ]]; then
		make -C "$tree/src/backend" generated-headers \
			>"$tree/qe_generated_headers.log" 2>&1 || return 1
	fi
	echo "$tree/src/include"
}

check() {
	local where=$1 inc tree gitdir ref version f out bad=0
	if [[ $where == *@* ]]; then
		gitdir=${where%@*} ref=${where##*@}
		if ! git --git-dir="$gitdir" rev-parse --verify -q "$ref^{commit}" >/dev/null 2>&1; then
			skip "$where" "no git directory with $ref there (get one with git clone --bare, or use a source tree or server headers)"
			return
		fi
		tree=$WORK/${ref//\//_}
		if [[ ! -f $tree/configure ]]; then
			mkdir -p "$tree"
			git --git-dir="$gitdir" archive "$ref" -- src config configure \
				configure.ac GNUmakefile.in Makefile aclocal.m4 |
				tar -x -C "$tree" || { skip "$where" "git archive failed"; return; }
		fi
		where=$tree
	fi
	if [[ -f $where/pg_config.h ]]; then
		inc=$where
	elif [[ -f $where/src/include/postgres.h ]]; then
		inc=$(prepare_tree "$where") || {
			echo "FAIL $where: could not configure it or make its generated headers (see its qe_*.log)"
			failed=$((failed + 1))
			return
		}
	else
		skip "$where" "neither server headers (pg_config.h) nor a PostgreSQL source tree"
		return
	fi
	version=$(sed -n 's/^#define PG_VERSION_NUM \([0-9]*\)/\1/p' "$inc/pg_config.h")
	out=$(mktemp -d)
	for f in src/*.c; do
		if ! "$CC" -c "${CFLAGS[@]}" -I src -I "$inc" "$f" \
			-o "$out/$(basename "$f" .c).o" 2>"$out/err"; then
			bad=1
			echo "  $f:"
			sed 's/^/    /' "$out/err" | head -20
		fi
	done
	rm -rf "$out"
	if [[ $bad == 0 ]]; then
		echo "ok   $version ($inc)"
		passed=$((passed + 1))
	else
		echo "FAIL $version ($inc)"
		failed=$((failed + 1))
	fi
}

# --debian V ...: headers of PostgreSQL V from the first Debian suite that
# packages them (Debian's registry, no install: dpkg-deb -x), unpacked
# under $WORK/debian.  Exit status 77 when none could be had (no network).
debian_headers() {
	local v suite pkgs file dir found=()
	local base=${QE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
	mkdir -p "$WORK/debian"
	for v in "$@"; do
		dir=$WORK/debian/$v
		if [[ -f $dir/usr/include/postgresql/$v/server/pg_config.h ]]; then
			found+=("$dir/usr/include/postgresql/$v/server")
			continue
		fi
		file=
		for suite in trixie forky sid; do
			pkgs=$WORK/debian/Packages-$suite
			if [[ ! -s $pkgs ]]; then
				curl -fsS --max-time 120 "$base/dists/$suite/main/binary-amd64/Packages.xz" |
					xz -dc >"$pkgs.tmp" 2>/dev/null && mv "$pkgs.tmp" "$pkgs"
				rm -f "$pkgs.tmp"
			fi
			[[ -s $pkgs ]] || continue
			file=$(awk -v p="postgresql-server-dev-$v" \
				'$1 == "Package:" { ok = ($2 == p) } ok && $1 == "Filename:" { print $2; exit }' "$pkgs")
			[[ -n $file ]] && break
		done
		if [[ -z $file ]]; then
			echo "SKIP $v: no postgresql-server-dev-$v in Debian's trixie, forky or sid (or no network)" >&2
			continue
		fi
		rm -rf "$dir" && mkdir -p "$dir"
		if curl -fsS --max-time 300 "$base/$file" -o "$dir/pkg.deb" &&
			dpkg-deb -x "$dir/pkg.deb" "$dir"; then
			echo "headers of $v: $base/$file" >&2
			found+=("$dir/usr/include/postgresql/$v/server")
		else
			echo "SKIP $v: could not download or unpack $base/$file" >&2
		fi
	done
	printf '%s\n' "${found[@]}"
}

if [[ ${1:-} == --debian ]]; then
	shift
	mapfile -t dirs < <(debian_headers "$@")
	if [[ ${#dirs[@]} == 0 ]]; then
		echo "compat_check: no headers could be had from Debian; nothing checked"
		exit 77
	fi
	set -- "${dirs[@]}"
fi

if [[ $# == 0 ]]; then
	shopt -s nullglob
	set -- /usr/include/postgresql/*/server
	shopt -u nullglob
	if [[ $# == 0 ]]; then
		echo "SKIP: no server headers under /usr/include/postgresql; pass directories (see the top of $0)"
		echo "compat_check: 0 passed, 0 failed, 1 skipped"
		exit 0
	fi
fi
command -v "$CC" >/dev/null || { echo "SKIP: no compiler $CC"; exit 0; }

for where in "$@"; do
	check "$where"
done
echo "compat_check: $passed passed, $failed failed, $skipped skipped"
[[ $failed == 0 ]]
