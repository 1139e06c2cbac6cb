# 016_wait_dequeue.pl: blocking dequeue, dequeue(..., wait => interval).
#
# Proves, on one cluster, first without shared_preload_libraries and then
# restarted with it (the engine reinstalled in between), with waiters in
# background psql sessions:
#  - a waiter blocked in dequeue(ARRAY['q'], wait => '30 s') does not return
#    while another session's enqueue is uncommitted, and returns that run
#    within 2 s of the commit;
#  - while it sleeps pg_stat_activity shows it with wait_event_type
#    'Extension', state 'active' and backend_xmin NULL (it holds back no
#    cleanup), and alter_queue, pause/resume_queue, create_queue,
#    CALL queue_engine.run_maintenance() and queue_engine.rotate_segments()
#    finish at once meanwhile (lock_timeout 10 s; each within 5 s);
#  - with nothing to start it returns no rows at its timeout: wait => '1 s'
#    after about 1 s (not before), wait => 0 and NULL at once;
#  - pg_cancel_backend and statement_timeout end the wait at once (57014),
#    and the session goes on working;
#  - a queue limited to 1 with a run executing and one queued: a waiter
#    sleeps, and completing the executing run wakes it with the queued one;
#  - a run delayed 1 s wakes a waiter once promoted (by the worker when
#    preloaded; by CALL queue_engine.run_maintenance() otherwise), never
#    before its run_at;
#  - dequeue(NULL, wait => ...) is woken by an enqueue into any queue (of
#    another tenant);
#  - two waiters and two enqueues (two commits, then one commit of two runs):
#    each waiter gets one run, no run is given twice;
#  - send_event waking a waiting run (waiting -> queued) wakes a waiter, which
#    gets the run with resume kind 'event';
#  - wait < 0 is 22023; wait > 0 in REPEATABLE READ or SERIALIZABLE is
#    refused (25000, as every dequeue there);
#  - at the end every run was handed out once (attempt 1), and
#    check_consistency(false) finds nothing.
#  - after an error raised inside one of a waiting dequeue's attempts (an
#    unknown queue, deterministically; a statement_timeout or cancel whose
#    SIGINT lands during an attempt, by chance) the session goes on working
#    (each attempt's subtransaction is ended before the error goes on).
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# How soon after the commit that makes a run startable a waiter must have
# it (loose: a loaded 2-core CI machine; the bench measures the real figure).
my $wake_bound = $ENV{QE_WAKE_BOUND_S} // 2.0;

my $node = PostgreSQL::Test::Cluster->new('wait');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
queue_engine.maintenance_interval = 200ms
log_line_prefix = '%m [%p] %b %e '
restart_after_crash = off
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', $_[0]); }

# The SQLSTATE of a statement ('ok' when it succeeded).
sub sqlstate
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY sqlstate\n$sql");
	return 'ok' if $rc == 0;
	return $1 if $err =~ /(?:ERROR|FATAL|PANIC):\s+([0-9A-Z]{5})/;
	return "rc=$rc: $err";
}

# ------------------------------------------------------------------ sessions

sub session
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->query_safe('\set VERBOSITY verbose');
	$s->{pid} = $s->query_safe('SELECT pg_backend_pid()');
	return $s;
}

# Sends a statement to a session without waiting for it.
my $seq = 0;
sub start_async
{
	my ($s, $sql) = @_;
	my $mark = 'qe_async_' . ++$seq;
	$s->{stdout} = '';
	$s->{stderr} = '';
	$s->{stdin} .= "$sql;\n\\echo '$mark'\n\\warn '$mark'\n";
	$s->{run}->pump_nb;
	return { s => $s, mark => $mark, t0 => time };
}

sub is_done
{
	my ($j) = @_;
	$j->{s}{run}->pump_nb;
	return $j->{s}{stdout} =~ /\Q$j->{mark}\E\n/ && $j->{s}{stderr} =~ /\Q$j->{mark}\E\n/;
}

# Waits for it: { t => when its output came (client clock), out, err }, or
# undef after $timeout seconds.
sub finish_async
{
	my ($j, $timeout) = @_;
	my $deadline = time + ($timeout // 60);
	until (is_done($j))
	{
		return undef if time > $deadline;
		usleep(2_000);
	}
	my $t = time;
	my ($out, $err) = ($j->{s}{stdout}, $j->{s}{stderr});
	s/\Q$j->{mark}\E\n// for ($out, $err);
	chomp $out;
	$j->{s}{stdout} = '';
	$j->{s}{stderr} = '';
	return { t => $t, out => $out, err => $err, elapsed => $t - $j->{t0} };
}

# A dequeue that reports "run_id[:resume kind],...|seconds it took|server clock at its end";
# runs '-' when none.  (Its time is taken from the server's clock before the
# statement: a dequeue that waited restarts its transaction's clock, so
# statement_timestamp() is the moment it woke.)
sub wsql
{
	my ($queues, $wait, $max) = @_;
	$max //= 1;
	return qq{SELECT extract(epoch FROM clock_timestamp()) AS qe_t0 \\gset
SELECT coalesce(string_agg(d.run_id::text || coalesce(':' || (d.resume->>'kind'), ''), ',' ORDER BY d.run_id), '-')
       || '|' || round(extract(epoch FROM clock_timestamp()) - :qe_t0, 3)
       || '|' || round(extract(epoch FROM clock_timestamp()), 3)
  FROM queue_engine.dequeue($queues, $max, lease => '1 hour', worker => 'waiter', wait => $wait) d};
}

sub parse_w
{
	my ($r) = @_;
	return (undef, undef, undef) unless $r && $r->{out} =~ /^([^|]*)\|([0-9.]+)\|([0-9.]+)$/;
	return ($1, $2, $3);
}

my $mon;
# Polls pg_stat_activity until the session sleeps in the engine's wait:
# "wait_event_type|state|backend_xmin IS NULL|backend_xid IS NULL", or the last seen.
sub sleeping
{
	my ($s) = @_;
	my $deadline = time + 60;
	my $r = '';
	while (time < $deadline)
	{
		$r = $mon->query_safe(qq{
SELECT coalesce(wait_event_type, '-') || '|' || state || '|' || (backend_xmin IS NULL) || '|' || (backend_xid IS NULL)
  FROM pg_stat_activity WHERE pid = $s->{pid}});
		return $r if $r =~ /^Extension\|/;
		usleep(5_000);
	}
	return $r;
}

# '' when the session still answers a statement, else what it said.
sub unusable
{
	my ($s) = @_;
	my ($out, $failed) = eval { $s->query('SELECT 1') };
	my $err = $@ || $s->{stderr};
	$s->{stderr} = '';
	return (defined $out && $out eq '1' && !$failed) ? '' : ($err || 'no answer');
}

# Checks that a session goes on after an error (a session left broken is
# replaced by a new one, so the rest of the test runs).
sub goes_on
{
	my ($sref, $name) = @_;
	my $bad = unusable($$sref);
	is($bad, '', $name);
	if ($bad ne '')
	{
		eval { $$sref->quit };
		$$sref = session();
	}
}

sub now_epoch { my ($s) = @_; return $s->query_safe('SELECT round(extract(epoch FROM clock_timestamp()), 3)'); }

# ------------------------------------------------------------------ the scenarios

sub scenarios
{
	my ($p, $preloaded) = @_;

	sql(q{
DROP EXTENSION IF EXISTS queue_engine CASCADE;
CREATE EXTENSION queue_engine;
SELECT queue_engine.create_queue('q', lease => '1 hour');
SELECT queue_engine.create_queue('q2', lease => '1 hour');
SELECT queue_engine.create_queue('other', tenant => 't2', lease => '1 hour');
SELECT queue_engine.create_queue('lim', concurrency_limit => 1, lease => '1 hour');
SELECT queue_engine.create_queue('dq', lease => '1 hour');
SELECT queue_engine.create_queue('ev', lease => '1 hour');
});
	$mon = session();
	my $w1 = session();
	my $w2 = session();
	my $e = session();
	$e->query_safe(q{SET lock_timeout = '10s'});
	my %handed;    # run_id => how many times a waiter got it

	my $got = sub {
		my ($runs) = @_;
		$handed{ (split /:/)[0] }++ for grep { $_ ne '-' } split /,/, $runs // '';
	};

	# ---------------------------------------------- 1. woken by a commit, not before it

	my $job = start_async($w1, wsql(q{ARRAY['q']}, q{'30 s'}));
	my $st = sleeping($w1);
	like($st, qr/^Extension\|active\|true\|true$/,
		"$p: a waiter with nothing to start sleeps: wait_event_type Extension, active, backend_xmin NULL, no xid ($st)");
	$e->query_safe('BEGIN');
	my $id = $e->query_safe(q{SELECT queue_engine.enqueue('q', '{"t": 1}')});
	# A real second must pass to show that nothing happens in it.
	usleep(1_000_000);
	ok(!is_done($job), "$p: 1 s after an uncommitted enqueue the waiter has not returned");
	like(sleeping($w1), qr/^Extension\|/, "$p: ... it still sleeps");
	$e->query_safe('COMMIT');
	my $tc = now_epoch($e);
	my $tcl = time;
	my $r = finish_async($job, 60);
	my ($runs, $took, $end) = parse_w($r);
	$got->($runs);
	is($runs, $id, "$p: the waiter returns the run once the enqueue commits");
	ok(defined $end && $end - $tc < $wake_bound && $r->{t} - $tcl < $wake_bound,
		sprintf("$p: ... within %.1f s of the commit (server %.3f s, client %.3f s)",
			$wake_bound, ($end // 99) - $tc, ($r ? $r->{t} : 99) - $tcl));
	cmp_ok($took // 0, '>=', 1.0, "$p: ... having slept through the uncommitted second (${\($took // '?')} s)");
	# The claim after the sleep starts the run at the wake-up, not at the
	# waiter's statement start (before the run existed): its started_at
	# follows the run's creation and its lease runs from then.
	is($e->query_safe(qq{SELECT r.started_at >= r.created_at AND r.lease_expires_at = r.started_at + interval '1 hour'
  FROM queue_engine.get_run($id) r}), 't',
		"$p: ... started at the wake-up, after the run was created, with the whole lease from then");

	# ---------------------------------------------- 2. timeouts

	$job = start_async($w1, wsql(q{ARRAY['q']}, q{'1 s'}));
	$r = finish_async($job, 60);
	($runs, $took) = parse_w($r);
	is($runs, '-', "$p: wait => '1 s' with nothing to start returns no rows");
	ok(defined $took && $took >= 0.95 && $took < 3,
		"$p: ... after about 1 s (server ${\($took // '?')} s, client " . sprintf('%.3f', $r ? $r->{elapsed} : -1) . ' s)');
	for my $w ('0', 'NULL')
	{
		$job = start_async($w1, wsql(q{ARRAY['q']}, $w eq '0' ? q{'0'} : 'NULL'));
		$r = finish_async($job, 60);
		($runs, $took) = parse_w($r);
		ok(defined $runs && $runs eq '-' && $took < 0.5, "$p: wait => $w returns no rows at once (${\($took // '?')} s)");
	}

	# ---------------------------------------------- 3. a sleeping waiter blocks nobody; pg_cancel_backend

	$job = start_async($w1, wsql(q{ARRAY['q']}, q{'30 s'}));
	like(sleeping($w1), qr/^Extension\|active\|true\|true$/, "$p: a waiter sleeps");
	for my $call (
		q{SELECT queue_engine.alter_queue('q', concurrency_limit => 5)},
		q{SELECT queue_engine.alter_queue('q', clear => ARRAY['concurrency_limit'])},
		q{SELECT queue_engine.pause_queue('q')},
		q{SELECT queue_engine.resume_queue('q')},
		q{SELECT queue_engine.create_queue('q3')},
		q{CALL queue_engine.run_maintenance()},
		q{SELECT queue_engine.rotate_segments()},
		q{SELECT queue_engine.rotate_segments()})
	{
		my $t0 = time;
		my ($out, $failed) = $e->query($call);
		my $err = $e->{stderr};
		$e->{stderr} = '';
		my $dt = time - $t0;
		ok(!$failed && $dt < 5, sprintf("$p: while it sleeps, %s finishes (%.3f s)%s", $call, $dt, $failed ? ": $err" : ''));
	}
	ok(!is_done($job), "$p: ... and the waiter still waits");
	like(sleeping($w1), qr/^Extension\|active\|true\|true$/, "$p: ... asleep again, no xmin");
	my $t0 = time;
	is($mon->query_safe("SELECT pg_cancel_backend($w1->{pid})"), 't', "$p: pg_cancel_backend");
	$r = finish_async($job, 60);
	like($r ? $r->{err} : '', qr/57014/, "$p: ... ends the wait with 57014");
	ok($r && $r->{t} - $t0 < $wake_bound, sprintf("$p: ... at once (%.3f s)", $r ? $r->{t} - $t0 : -1));
	goes_on(\$w1, "$p: the session goes on after pg_cancel_backend");

	# ---------------------------------------------- 4. statement_timeout

	$w1->query_safe(q{SET statement_timeout = '1s'});
	$job = start_async($w1, wsql(q{ARRAY['q']}, q{'30 s'}));
	$r = finish_async($job, 60);
	like($r ? $r->{err} : '', qr/57014/, "$p: statement_timeout 1 s ends a 30 s wait with 57014");
	ok($r && $r->{elapsed} >= 0.9 && $r->{elapsed} < 1 + $wake_bound,
		sprintf("$p: ... at once when it passes (%.3f s)", $r ? $r->{elapsed} : -1));
	goes_on(\$w1, "$p: the session goes on after statement_timeout");
	$w1->query('RESET statement_timeout');
	$w1->{stderr} = '';

	# ---------------------------------------------- 5. a limited queue: a slot frees

	my ($lim_a, $lim_b) = split /\n/, sql(q{SELECT queue_engine.enqueue('lim', jsonb_build_object('i', i)) FROM generate_series(1, 2) i});
	my $started = sql(q{SELECT run_id || '|' || attempt FROM queue_engine.dequeue(ARRAY['lim'], 5, lease => '1 hour')});
	is($started, "$lim_a|1", "$p: the limit-1 queue starts one run of two");
	$job = start_async($w1, wsql(q{ARRAY['lim']}, q{'30 s'}));
	like(sleeping($w1), qr/^Extension\|/, "$p: a waiter on the full queue sleeps");
	ok(!is_done($job), "$p: ... without the queued run");
	is($e->query_safe("SELECT queue_engine.complete($lim_a, attempt => 1)"), 't', "$p: the executing run completes");
	$tc = now_epoch($e);
	$r = finish_async($job, 60);
	($runs, $took, $end) = parse_w($r);
	$got->($runs);
	is($runs, $lim_b, "$p: ... and the waiter gets the queued run");
	ok(defined $end && $end - $tc < $wake_bound, sprintf("$p: ... within %.1f s (%.3f s)", $wake_bound, ($end // 99) - $tc));

	# ---------------------------------------------- 6. a delayed run, promoted

	my ($dq, $run_at) = split /\|/, sql(q{
SELECT r || '|' || round(extract(epoch FROM g.run_at), 3)
  FROM queue_engine.enqueue('dq', '{"delayed": 1}', delay => '1 s') r, queue_engine.get_run(r) g});
	$job = start_async($w1, wsql(q{ARRAY['dq']}, q{'30 s'}));
	my $asleep = sleeping($w1);
	my $tcall;
	if ($preloaded)
	{
		$r = finish_async($job, 60);
	}
	else
	{
		# The run_at must really pass; then a maintenance call promotes it
		# (unless the waiter already took it at its run_at by itself).
		my $deadline = time + 60;
		usleep(20_000) until is_done($job) || now_epoch($mon) > $run_at + 0.2 || time > $deadline;
		if (!is_done($job))
		{
			$e->query_safe('CALL queue_engine.run_maintenance()');
			$tcall = now_epoch($e);
		}
		$r = finish_async($job, 60);
	}
	($runs, $took, $end) = parse_w($r);
	$got->($runs);
	like($asleep, qr/^Extension\|/, "$p: a waiter sleeps while the run is delayed");
	is($runs, $dq, "$p: the delayed run wakes the waiter");
	cmp_ok($end // 0, '>=', $run_at, "$p: ... not before its run_at");
	my $from = defined $tcall ? $tcall : $run_at;
	ok(defined $end && $end - $from < $wake_bound,
		sprintf("$p: ... within %.1f s of %s (%.3f s)", $wake_bound,
			$preloaded ? 'its run_at (the worker promotes it)' : 'CALL run_maintenance()', ($end // 99) - $from));

	# ---------------------------------------------- 7. any queue

	is(sql(q{SELECT count(*) FROM queue_engine.runs WHERE status IN ('queued', 'delayed')}), '0', "$p: nothing startable left");
	$job = start_async($w1, wsql('NULL', q{'30 s'}));
	like(sleeping($w1), qr/^Extension\|/, "$p: dequeue(NULL, wait => '30 s') sleeps");
	$id = $e->query_safe(q{SELECT queue_engine.enqueue('other', '{"any": 1}')});
	$tc = now_epoch($e);
	$r = finish_async($job, 60);
	($runs, $took, $end) = parse_w($r);
	$got->($runs);
	is($runs, $id, "$p: ... an enqueue into another tenant's queue wakes it with that run");
	ok(defined $end && $end - $tc < $wake_bound, sprintf("$p: ... within %.1f s (%.3f s)", $wake_bound, ($end // 99) - $tc));

	# ---------------------------------------------- 8. two waiters, two runs

	for my $how ('two commits', 'one commit of two runs')
	{
		my $a1 = start_async($w1, wsql(q{ARRAY['q2']}, q{'30 s'}));
		my $a2 = start_async($w2, wsql(q{ARRAY['q2']}, q{'30 s'}));
		like(sleeping($w1) . ' ' . sleeping($w2), qr/^Extension\|.* Extension\|/, "$p, $how: two waiters sleep");
		my $ids = $how eq 'two commits'
		  ? $e->query_safe(q{SELECT queue_engine.enqueue('q2', '{"n": 1}'); SELECT queue_engine.enqueue('q2', '{"n": 2}')})
		  : $e->query_safe(q{SELECT queue_engine.enqueue_batch('q2', ARRAY['{"n": 1}'::jsonb, '{"n": 2}'])});
		$tc = now_epoch($e);
		my @want = sort { $a <=> $b } split /\n/, $ids;
		my $r1 = finish_async($a1, 60);
		my $r2 = finish_async($a2, 60);
		my ($runs1, undef, $end1) = parse_w($r1);
		my ($runs2, undef, $end2) = parse_w($r2);
		$got->($_) for ($runs1, $runs2);
		is(join(',', sort { $a <=> $b } grep { defined && $_ ne '-' } map { split /,/, $_ // '' } $runs1, $runs2),
			join(',', @want), "$p, $how: each waiter gets one of the two runs, none twice ("
			  . ($runs1 // '?') . ' and ' . ($runs2 // '?') . ')');
		ok(defined $end1 && defined $end2 && $end1 - $tc < $wake_bound && $end2 - $tc < $wake_bound,
			sprintf("$p, $how: ... both within %.1f s (%.3f s, %.3f s)", $wake_bound, ($end1 // 99) - $tc, ($end2 // 99) - $tc));
	}

	# ---------------------------------------------- 9. send_event wakes a waiting run, and so a waiter

	my $ev = sql(q{SELECT queue_engine.enqueue('ev', '{"ev": 1}')});
	is( sql(qq{SELECT queue_engine.wait_for_event(run_id, attempt, 'go') FROM queue_engine.dequeue(ARRAY['ev'], 1, lease => '1 hour')}),
		'waiting', "$p: a run waits for event go");
	$job = start_async($w1, wsql(q{ARRAY['ev']}, q{'30 s'}));
	like(sleeping($w1), qr/^Extension\|/, "$p: a waiter on its queue sleeps");
	is($e->query_safe(q{SELECT woken FROM queue_engine.send_event('go', '{"x": 1}')}), '1', "$p: send_event wakes the run");
	$tc = now_epoch($e);
	$r = finish_async($job, 60);
	($runs, $took, $end) = parse_w($r);
	$got->($runs);
	is($runs, "$ev:event", "$p: ... and the waiter gets it, resumed by the event");
	ok(defined $end && $end - $tc < $wake_bound, sprintf("$p: ... within %.1f s (%.3f s)", $wake_bound, ($end // 99) - $tc));

	# ---------------------------------------------- 10. bad waits

	is(sqlstate(q{SELECT * FROM queue_engine.dequeue(ARRAY['q'], wait => '-1 s')}), '22023', "$p: wait < 0 is 22023");
	# An error inside the attempt: an unknown queue (42704).
	$job = start_async($w1, wsql(q{ARRAY['no_such_queue']}, q{'1 s'}));
	$r = finish_async($job, 60);
	like($r ? $r->{err} : '', qr/42704/, "$p: a waiting dequeue of an unknown queue is 42704");
	goes_on(\$w1, "$p: ... and the session goes on (no 25P02)");
	# (dequeue refuses REPEATABLE READ and SERIALIZABLE whatever its wait: 25000)
	for my $iso ('REPEATABLE READ', 'SERIALIZABLE')
	{
		is(sqlstate(qq{BEGIN ISOLATION LEVEL $iso; SELECT * FROM queue_engine.dequeue(ARRAY['q'], wait => '1 s'); COMMIT;}),
			'25000', "$p: wait > 0 in $iso is refused (25000) at once");
	}

	# ---------------------------------------------- the end

	my @twice = grep { $handed{$_} > 1 } sort keys %handed;
	is("@twice", '', "$p: no run was handed out twice (" . scalar(keys %handed) . ' runs)');
	is( sql(q{SELECT count(*) FILTER (WHERE attempt <> 1) || '/' || count(*) FROM queue_engine.runs WHERE status = 'executing'}),
		'0/' . scalar(keys %handed), "$p: every run executing was handed out by a waiter and started once");
	is( sql(q{SELECT coalesce(string_agg(check_name || '=' || found, ' ' ORDER BY check_name), '')
                FROM queue_engine.check_consistency(false) WHERE found <> 0}),
		'', "$p: check_consistency(false) finds nothing");
	$_->quit for ($w1, $w2, $e, $mon);
}

scenarios('no preload', 0);

$node->append_conf('postgresql.conf', q{shared_preload_libraries = 'queue_engine'});
$node->restart;
my $deadline = time + 60;
usleep(100_000)
  until sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'queue_engine launcher'}) eq '1'
  || time > $deadline;
scenarios('preloaded', 1);

unlike(slurp_file($node->logfile), qr/terminated by signal|PANIC:|TRAP:/, 'no crash in the server log');
$node->stop;
done_testing();
