# 011_upgrade_from_release.pl: a server that ran the real 0.1.0 release is
# given the current build and ALTER EXTENSION queue_engine UPDATE; nothing
# is lost, in flight or at rest.
#
# 007_upgrade starts from today's copy of the 0.1.0 install script run by
# today's library.  This test starts from what a 0.1.0 user has: the
# library and scripts of release 0.1.0, built from this repository's own
# history, a cluster that has been running them, then the current build's
# files installed over them.
#
#  - The release is the commit of tag v0.1.0, or commit f3ece46 when the tag
#    is absent (a CI clone without tags); in a shallow clone that has
#    neither, the test is skipped.  QE_REPO_ROOT names the repository
#    (test/run_tests.sh exports it; the TAP copy has no .git).  It is
#    exported with git archive (the repository stays read-only: TAP runs as
#    postgres in a root-owned checkout, hence safe.directory).
#  - A private copy of the server tree of the current installation (its
#    bin, lib and share; pg_config and the server are relocatable), so the
#    release can be installed and replaced without touching the tree other
#    tests use.  The release is built with make against it, as postgres.
#  - Two clusters on that tree, with and without shared_preload_libraries
#    (the worker setup and the pg_cron setup).  In each: runs in every state
#    (QeFixture's: queued, delayed, executing with live leases and one
#    stalled, completed, failed, canceled, expired by TTL, idempotency
#    keys, a limited queue, a keyed queue, tenant limits, a dropped queue),
#    plus a paused queue, a run delayed by an hour and a run whose TTL
#    passes during the upgrade.
#  - Both stopped; the current build's queue_engine.so, control file and
#    scripts copied from the current installation over the release's;
#    started.  Before the update the new library refuses the 0.1.0 schema
#    with a clear error (SQLSTATE 55000, hint: ALTER EXTENSION ... UPDATE)
#    and changes nothing; then ALTER EXTENSION queue_engine UPDATE to the
#    control file's default_version.
#  - Then: every run, key, queue, tenant and queue_stats row unchanged (the
#    0.1.0 columns); the executing runs heartbeat and complete with their
#    attempt, a wrong attempt gets what it got from 0.1.0; idempotency keys
#    return what they returned from 0.1.0; run_maintenance promotes the
#    delayed runs that are due and no other, expires the run whose TTL
#    passed and no other, rescues the stalled run only; a full queue and
#    full keys start nothing, and draining everything by several dequeues a
#    round never exceeds a queue, key or tenant limit; the paused queue
#    starts nothing until resumed; check_consistency(false) finds nothing.
#  - The updated database has the same objects as a fresh CREATE EXTENSION
#    in another database of the same cluster (pg_dump --binary-upgrade and
#    the catalogs, QeFixture::schema_dump and ::catalog).
use strict;
use warnings FATAL => 'all';

use File::Basename qw(dirname);
use File::Copy qw(copy);
use File::Path qw(make_path remove_tree);
use Digest::MD5;
use IO::File;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use QeFixture;

my $RELEASE = '0.1.0';
my $RELEASE_TAG = 'v0.1.0';
my $RELEASE_COMMIT = 'f3ece460f6ff096689fe6f52f5f6970b0f89e919';
my $EXT = 'queue_engine';

# ------------------------------------------------ the release's commit

my $repo = $ENV{QE_REPO_ROOT};
plan skip_all => 'QE_REPO_ROOT names no directory (test/run_tests.sh exports it: the git checkout to take '
  . "$RELEASE from)"
  unless defined $repo && -d $repo;

# git in the checkout, whoever owns it; (ok, stdout, stderr).
sub git
{
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run([ 'git', '-c', 'safe.directory=*', '-C', $repo, @_ ], '<', \undef, '>', \$out, '2>', \$err);
	};
	$err = $@ if $@;
	chomp $out;
	return ($ok, $out, $err);
}

my ($is_repo, undef, $git_err) = git('rev-parse', '--git-dir');
plan skip_all => "$repo is not a git repository, or git is missing ($git_err)" unless $is_repo;
my ($commit, $found_by);
for my $ref ([ "tag $RELEASE_TAG", "refs/tags/$RELEASE_TAG" ], [ "commit $RELEASE_COMMIT", $RELEASE_COMMIT ])
{
	my ($ok, $id) = git('rev-parse', '--verify', '--quiet', "$ref->[1]^{commit}");
	if ($ok && $id =~ /^[0-9a-f]{40}$/)
	{
		($commit, $found_by) = ($id, $ref->[0]);
		last;
	}
}
plan skip_all => "neither tag $RELEASE_TAG nor commit $RELEASE_COMMIT is in $repo (a shallow clone?)"
  unless defined $commit;
note("release $RELEASE: $commit (by $found_by)");

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $log = "$PostgreSQL::Test::Utils::log_path/011_release_build.log";

# Runs a command, its output into the build log; dies with the log's end.
sub run_logged
{
	my @cmd = @_;
	PostgreSQL::Test::Utils::append_to_file($log, "\n\$ @cmd\n");
	my $ok = IPC::Run::run(\@cmd, '<', \undef, '>>', $log, '2>>', $log);
	return if $ok;
	my @lines = split /\n/, PostgreSQL::Test::Utils::slurp_file($log);
	diag(join("\n", @lines[ ($#lines > 40 ? $#lines - 40 : 0) .. $#lines ]));
	die "failed: @cmd (log: $log)";
}

my $src = "$tmp/release";
mkdir $src or die "mkdir $src: $!";
{
	my ($git_err, $tar_err) = ('', '');
	my $ok = IPC::Run::run([ 'git', '-c', 'safe.directory=*', '-C', $repo, 'archive', '--format=tar', $commit ],
		'<', \undef, '2>', \$git_err, '|', [ 'tar', '-x', '-C', $src ], '2>', \$tar_err);
	ok($ok, "release $RELEASE exported from $found_by with git archive") or die "git archive: $git_err$tar_err";
}
like(PostgreSQL::Test::Utils::slurp_file("$src/$EXT.control"), qr/^default_version = '\Q$RELEASE\E'$/m,
	"the release's control file says $RELEASE");

# ------------------------------------------------ a private server tree

# The current build, as test/run_tests.sh installed it.
my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
sub pg_config_of
{
	my ($bin, $what) = @_;
	my ($out, $err);
	IPC::Run::run([ $bin, "--$what" ], '>', \$out, '2>', \$err) or die "$bin --$what: $err";
	chomp $out;
	return $out;
}
my %cur = map { $_ => pg_config_of($pg_config, $_) } qw(bindir pkglibdir sharedir includedir);

# The same paths under $root: pg_config and postgres find their lib and
# share directories relative to their own bin directory, so a copy placed
# this way is an installation of its own.  Headers are only read: linked.
my $root = "$tmp/pg";
for my $dir (@cur{qw(bindir pkglibdir sharedir)})
{
	make_path(dirname("$root$dir"));
	run_logged('cp', '-a', $dir, "$root$dir");
}
make_path(dirname("$root$cur{includedir}"));
symlink($cur{includedir}, "$root$cur{includedir}") or die "symlink: $!";
my $priv_config = "$root$cur{bindir}/pg_config";
is(pg_config_of($priv_config, 'pkglibdir'), "$root$cur{pkglibdir}", 'the private server tree is its own installation');
my %priv = map { $_ => "$root$cur{$_}" } qw(pkglibdir sharedir);

# Installs one build's files into the private tree, first removing the
# other build's (what a package upgrade does).  From a directory: the
# library, control file and scripts.
sub remove_engine_files
{
	unlink("$priv{pkglibdir}/$EXT.so", "$priv{pkglibdir}/bitcode/$EXT.index.bc",
		glob("$priv{sharedir}/extension/$EXT.control $priv{sharedir}/extension/$EXT--*.sql"));
	remove_tree("$priv{pkglibdir}/bitcode/$EXT");
}

# The release: built and installed with its own Makefile.  PG_CFLAGS= drops
# its -Werror (a newer compiler must not fail an old release's build),
# with_llvm=no its JIT bitcode (JIT is not tested here) and COPT=-O0 the
# optimiser: the same code, built in a quarter of the time, only to write
# the data the update must keep.
remove_engine_files();
my $t0 = time;
my @make = ('make', '-C', $src, "PG_CONFIG=$priv_config", 'PG_CFLAGS=', 'COPT=-O0', 'with_llvm=no');
run_logged(@make, '-j4');
run_logged(@make, 'install');
note(sprintf('release %s built and installed in %.1f s', $RELEASE, time - $t0));

# ------------------------------------------------ clusters on the release

my $install_path = dirname("$root$cur{bindir}");
my @variants = (
	{ name => 'preload', conf => "shared_preload_libraries = '$EXT'\n$EXT.maintenance_enabled = off\n" },
	{ name => 'no_preload', conf => '' });
my $db = 'upgraded';

for my $v (@variants)
{
	my $node = $v->{node} = PostgreSQL::Test::Cluster->new("release_$v->{name}", install_path => $install_path);
	$node->init;
	# The worker is off: the test drives every task itself.
	$node->append_conf('postgresql.conf', $v->{conf});
	$node->start;
}

sub sql { my ($v, $q) = @_; return scalar $v->{node}->safe_psql($db, $q); }

# One psql call as the user sees it: exit code, output and error text.
sub call
{
	my ($v, $q) = @_;
	my ($rc, $out, $err) = $v->{node}->psql($db, $q);
	return "rc=$rc out=$out err=$err";
}

my $EXECUTING_BEFORE = q{SELECT run_id, attempt, worker FROM queue_engine.runs
 WHERE status = 'executing' AND worker = 'before' ORDER BY run_id};

for my $v (@variants)
{
	my ($node, $label) = ($v->{node}, "$RELEASE, $v->{name}");
	is( $node->safe_psql('postgres', q{SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'}),
		$priv{pkglibdir}, "$label: the server runs from the private tree");
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	sql($v, "CREATE EXTENSION $EXT");
	is(sql($v, "SELECT extversion FROM pg_extension WHERE extname = '$EXT'"), $RELEASE, "$label: installed");

	my $f = $v->{fixture} = QeFixture::populate($node, $db);
	# More than the fixture has: a paused queue with runs (one holding an
	# idempotency key), more runs behind the full 'limited' queue, a run due
	# in an hour and a queued run whose 1 s TTL passes during the upgrade.
	sql($v, q{
SELECT queue_engine.create_queue('paused', tenant => 'acme');
SELECT queue_engine.enqueue('paused', jsonb_build_object('i', i),
                            idempotency_key => CASE WHEN i = 1 THEN 'k-paused' END)
  FROM generate_series(1, 3) i;
SELECT queue_engine.pause_queue('paused');
SELECT queue_engine.enqueue('limited', jsonb_build_object('more', i)) FROM generate_series(1, 4) i;
});
	$v->{far} = sql($v, q{SELECT queue_engine.enqueue('plain', '{"far": 1}', delay => '1 hour')});
	$v->{ttl} = sql($v, q{SELECT queue_engine.enqueue('plain', '{"ttl": 1}', ttl => '1 second')});
	is( QeFixture::state_counts($node, $db),
		'canceled=2 completed=2 delayed=4 executing=7 expired=1 failed=1 queued=18',
		"$label: runs in every state");
	is( sql($v, q{SELECT string_agg(queue, ',' ORDER BY queue) FROM queue_engine.queues
	              WHERE paused AND dropped_at IS NULL}), 'paused', "$label: one live queue paused");
	is(sql($v, q{SELECT count(*) FROM queue_engine.check_consistency(false) WHERE found <> 0}),
		'0', "$label: check_consistency(false) finds nothing");

	# What 0.1.0 answers to calls that change nothing: a wrong attempt, and
	# enqueues under existing idempotency keys.
	my @held = map { [ split /\|/ ] } split /\n/, sql($v, $EXECUTING_BEFORE);
	$v->{held} = \@held;
	$v->{wrong_attempt_sql} = "SELECT queue_engine.complete($held[0][0], attempt => $held[0][1] + 1)";
	$v->{wrong_attempt} = call($v, $v->{wrong_attempt_sql});
	$v->{key_sql} = q{
SELECT string_agg(k || '=' || queue_engine.enqueue(q, '{"again": true}', idempotency_key => k), ' ' ORDER BY k)
  FROM (VALUES ('plain', 'k-done'), ('plain', 'k-queued-1'), ('plain', 'k-queued-2'), ('paused', 'k-paused')) v(q, k)};
	$v->{keys} = call($v, $v->{key_sql});
	like($v->{keys}, qr/^rc=0 out=k-done=\d+ k-paused=\d+ k-queued-1=\d+ k-queued-2=\d+ err=$/,
		"$label: idempotency keys return their runs");

	$v->{states} = QeFixture::state_counts($node, $db);
	$v->{before} = QeFixture::fingerprints($node, $db);
	$v->{open} = sql($v, q{SELECT string_agg(run_id || ':' || status || ':' || attempt, ' ' ORDER BY run_id)
	                         FROM queue_engine.runs WHERE status IN ('queued', 'delayed', 'executing')});
	$node->stop;
}

# ------------------------------------------------ the current build over it

remove_engine_files();
my $ext_dir = "$cur{sharedir}/extension";
for my $file ("$cur{pkglibdir}/$EXT.so", "$ext_dir/$EXT.control", glob("$ext_dir/$EXT--*.sql"))
{
	my $to = $file =~ /\.so$/ ? $priv{pkglibdir} : "$priv{sharedir}/extension";
	copy($file, $to) or die "copy $file $to: $!";
}
is( Digest::MD5->new->addfile(IO::File->new("$priv{pkglibdir}/$EXT.so", 'r'))->hexdigest,
	Digest::MD5->new->addfile(IO::File->new("$cur{pkglibdir}/$EXT.so", 'r'))->hexdigest,
	'the current build\'s library is installed in the private tree');
my ($new_version) = PostgreSQL::Test::Utils::slurp_file("$ext_dir/$EXT.control") =~ /^default_version = '([^']+)'$/m;
isnt($new_version, $RELEASE, "the current build's default version ($new_version) is an update from $RELEASE");

# Every limit a run holds while executing, and what exceeds one.
my $LIMIT_BREACHES = q{
SELECT coalesce(string_agg(breach, '; ' ORDER BY breach), '') FROM (
  SELECT format('queue %s: %s executing, limit %s', q.queue, count(*), q.concurrency_limit)
    FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
   WHERE r.status = 'executing'
   GROUP BY q.queue, q.concurrency_limit HAVING count(*) > q.concurrency_limit
  UNION ALL
  SELECT format('queue %s key %s: %s executing, limit %s', q.queue, r.concurrency_key, count(*),
                q.key_concurrency_limit)
    FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
   WHERE r.status = 'executing' AND r.concurrency_key IS NOT NULL
   GROUP BY q.queue, r.concurrency_key, q.key_concurrency_limit HAVING count(*) > q.key_concurrency_limit
  UNION ALL
  SELECT format('tenant %s: %s executing, limit %s', t.tenant, count(*), t.concurrency_limit)
    FROM queue_engine.runs r JOIN queue_engine.tenants t USING (tenant_id)
   WHERE r.status = 'executing'
   GROUP BY t.tenant, t.concurrency_limit HAVING count(*) > t.concurrency_limit) b(breach)};

# Completes runs with their attempts; how many complete() accepted.
sub complete_all
{
	my ($v, $runs, $output) = @_;
	return 0 unless @$runs;
	my $ids = join(',', map { $_->[0] } @$runs);
	my $attempts = join(',', map { $_->[1] } @$runs);
	return sql($v, qq{
SELECT count(*) FILTER (WHERE queue_engine.complete(id, '$output', attempt => a))
  FROM unnest('{$ids}'::bigint[], '{$attempts}'::int[]) u(id, a)});
}

sub rows { return [ map { [ split /\|/ ] } split /\n/, $_[0] ]; }

for my $v (@variants)
{
	my ($node, $f, $label) = ($v->{node}, $v->{fixture}, "$new_version, $v->{name}");
	$node->start;
	is(sql($v, "SELECT extversion FROM pg_extension WHERE extname = '$EXT'"), $RELEASE,
		"$v->{name}: the current library starts on the $RELEASE schema");
	# Until the update runs, the new library refuses the old schema with a
	# clear error (README, "0.1.x to 0.2.0"), and changes nothing.
	for my $call ('SELECT count(*) FROM queue_engine.check_consistency(false)',
		$v->{wrong_attempt_sql}, $v->{key_sql},
		q{SELECT count(*) FROM queue_engine.dequeue(NULL, 10)})
	{
		my ($rc0, $out0, $err0) = $node->psql($db, $call,
			extra_params => [ '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose' ]);
		like($err0, qr/55000: queue_engine's schema is older than its library.*HINT:  Run ALTER EXTENSION queue_engine UPDATE/s,
			"$v->{name}: on the $RELEASE schema, the new library asks for the update ("
			  . substr($call, 0, 40) . '...)');
	}
	is(QeFixture::fingerprints($node, $db)->{runs}, $v->{before}{runs}, "$v->{name}: ... and nothing changed");

	my ($rc, $out, $err) = $node->psql($db, "ALTER EXTENSION $EXT UPDATE");
	is($rc, 0, "$label: ALTER EXTENSION $EXT UPDATE") or diag($err);
	is(sql($v, "SELECT extversion FROM pg_extension WHERE extname = '$EXT'"), $new_version, "$label: updated");

	# ---- every run in its state, with its fields
	my $after = QeFixture::fingerprints($node, $db);
	for my $what (sort keys %{ $v->{before} })
	{
		is($after->{$what}, $v->{before}{$what}, "$label: $what unchanged");
	}
	is(QeFixture::state_counts($node, $db), $v->{states}, "$label: as many runs in each state");
	is(QeFixture::consistency($node, $db), $QeFixture::ALL_ZERO, "$label: check_consistency(false) finds nothing");

	# ---- calls that change nothing answer as 0.1.0 did
	is(call($v, $v->{wrong_attempt_sql}), $v->{wrong_attempt},
		"$label: a wrong attempt is refused as by $RELEASE ($v->{wrong_attempt})");
	is(call($v, $v->{key_sql}), $v->{keys}, "$label: idempotency keys return the runs they returned in $RELEASE");
	is(QeFixture::state_counts($node, $db), $v->{states}, "$label: ... and add no run");
	is(sql($v, q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['limited', 'keyed', 'paused'], 10, worker => 'after')}),
		'0', "$label: the full queue, the full keys and the paused queue start nothing");

	# ---- leases held across the upgrade
	my $held = $v->{held};
	is( sql($v, 'SELECT count(*) FROM (VALUES ' . join(',', map { "($_->[0], $_->[1])" } @$held) . ') v(id, a)'
			  . ' WHERE queue_engine.heartbeat(id, attempt => a) > now()'),
		scalar(@$held), "$label: every run dequeued before the update heartbeats with its attempt");

	# ---- time-driven work, by run_maintenance: the 1 s delays and TTL
	# have passed (they were set before the stop), the hour has not.
	$node->poll_query_until($db, qq{
SELECT bool_and(CASE WHEN run_id = $v->{ttl} THEN expires_at <= now() ELSE run_at <= now() END)
  FROM queue_engine.runs WHERE run_id = $v->{ttl} OR (status = 'delayed' AND run_id <> $v->{far})})
	  or die 'the delays and the TTL never passed';
	my ($stalled) = grep { $_->[2] eq 'stalls' } @{ $f->{executing} };
	my %expect;
	for my $run (split / /, $v->{open})
	{
		my ($id, $status) = split /:/, $run;
		$expect{$id} =
			$id == $v->{ttl} ? 'expired'
		  : $id == $v->{far} ? 'delayed'
		  : $id == $stalled->[0] ? 'queued'
		  : $status eq 'delayed' ? 'queued'
		  :                        $status;
	}
	sql($v, 'CALL queue_engine.run_maintenance()');
	my %now = map { split /\|/ } split /\n/, sql($v, 'SELECT run_id, status FROM queue_engine.runs WHERE run_id IN ('
		  . join(',', sort keys %expect) . ')');
	is( join(' ', map { "$_:$now{$_}" } sort { $a <=> $b } keys %now),
		join(' ', map { "$_:$expect{$_}" } sort { $a <=> $b } keys %expect),
		"$label: run_maintenance promotes the due runs, expires the one past its TTL, rescues the stalled one, nothing else");

	# ---- the runs dequeued before the update finish with their attempt
	is(complete_all($v, $held, '{"after": true}'), scalar(@$held),
		"$label: every run dequeued before the update completes with its attempt (" . scalar(@$held) . ' runs)');
	is(sql($v, "SELECT queue_engine.complete($stalled->[0], attempt => $stalled->[1])"), 'f',
		"$label: the rescued run's old attempt is fenced off");

	# ---- drain by several dequeues a round; limits hold throughout
	my $OPEN = qq{SELECT count(*) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
	              WHERE r.status IN ('queued', 'delayed', 'executing', 'waiting')
	                AND q.queue <> 'paused' AND r.run_id <> $v->{far}};
	my ($completed, $rounds, $peak, $breaches, $deadline) = (scalar(@$held), 0, 0, '', time + 60);
	while (sql($v, $OPEN) ne '0' && time < $deadline)
	{
		$rounds++;
		for my $queues (q{ARRAY['limited']}, q{ARRAY['limited', 'keyed']}, 'NULL', 'NULL')
		{
			sql($v, "SELECT count(*) FROM queue_engine.dequeue($queues, 100, worker => 'after')");
		}
		my $b = sql($v, $LIMIT_BREACHES);
		$breaches .= "round $rounds: $b\n" if $b ne '';
		my $in_limited = sql($v, q{SELECT count(*) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
		                           WHERE q.queue = 'limited' AND r.status = 'executing'});
		$peak = $in_limited if $in_limited > $peak;
		my $claimed = rows(sql($v, q{SELECT run_id, attempt FROM queue_engine.runs
		                              WHERE status = 'executing' AND worker = 'after'}));
		$completed += complete_all($v, $claimed, '{"drained": true}');
		usleep(50_000) unless @$claimed;
	}
	is(sql($v, $OPEN), '0', "$label: every open run outside the paused queue was dequeued and completed");
	is($breaches, '', "$label: no queue, key or tenant limit exceeded in $rounds rounds of 4 dequeues");
	is($peak, 2, "$label: the limited queue ran at its limit of 2, never above");

	# ---- the paused queue stays paused until resumed
	is( sql($v, q{SELECT string_agg(r.status::text, ',') FROM queue_engine.runs r
	              JOIN queue_engine.queues q USING (queue_id) WHERE q.queue = 'paused'}),
		'queued,queued,queued', "$label: the paused queue's runs waited");
	sql($v, q{SELECT queue_engine.resume_queue('paused')});
	my $resumed = rows(sql($v, q{SELECT run_id, attempt FROM queue_engine.dequeue(ARRAY['paused'], 10, worker => 'after')}));
	is(scalar(@$resumed), 3, "$label: resumed, it starts its runs");
	$completed += complete_all($v, $resumed, '{"resumed": true}');

	# ---- the run due in an hour is still delayed; cancel it
	is(sql($v, "SELECT status FROM queue_engine.runs WHERE run_id = $v->{far}"), 'delayed',
		"$label: the run due in an hour is still delayed");
	is(sql($v, "SELECT queue_engine.cancel($v->{far}, 'test over')"), 't', "$label: ... and cancels");

	my $was_open = scalar(my @was_open = split / /, $v->{open});
	is($completed, $was_open - 2,
		"$label: each of the $was_open runs open at the update completed once, but the expired and the canceled one");
	is(QeFixture::consistency($node, $db), $QeFixture::ALL_ZERO,
		"$label: drained, check_consistency(false) finds nothing");
	is(sql($v, 'SELECT count(*) FROM queue_engine.consistency_log'), '0', "$label: consistency_log empty");

	# ---- the same objects as a fresh install
	$node->safe_psql('postgres', 'CREATE DATABASE fresh');
	$node->safe_psql('fresh', "CREATE EXTENSION $EXT");
	QeFixture::same_text(QeFixture::schema_dump($node, $db), QeFixture::schema_dump($node, 'fresh'),
		"$label: the schema equals a fresh install's (pg_dump --schema-only --binary-upgrade, normalised)");
	QeFixture::same_text(QeFixture::catalog($node, $db), QeFixture::catalog($node, 'fresh'),
		"$label: the catalog entries equal a fresh install's");
	my $fresh_catalog = QeFixture::catalog($node, 'fresh');
	$node->safe_psql('fresh', 'GRANT SELECT ON queue_engine.runs TO pg_monitor');
	isnt(QeFixture::catalog($node, 'fresh'), $fresh_catalog, "$label: the catalog comparison sees a grant made by hand");

	$node->stop;
}

done_testing();
