# 001_worker.pl: the background launcher and its per-pass maintenance workers
# (shared_preload_libraries = 'queue_engine').
#
# Proves, on a cluster of its own:
#  - with the library preloaded but the extension not installed, the launcher
#    starts passes that exit quietly (nothing logged at WARNING or above), and
#    the worker starts working as soon as CREATE EXTENSION commits;
#  - the launcher shows in pg_stat_activity (backend_type 'queue_engine launcher',
#    attached to no database), maintenance backends as 'queue_engine maintenance'
#    in queue_engine.database; the launcher's short transactions show their
#    own xact_start, never one as old as the launcher;
#  - ttl expiry, delayed promotion and stall rescue (retry, and failed when the
#    attempts are spent) are done by a 'queue_engine maintenance' backend on its
#    own (no dequeue or maintenance call), within two maintenance intervals of
#    being due (a lease passing by itself, as the worker learnt it at commit)
#    (plus a fixed allowance, QE_TAP_SLACK_MS, for forking and connecting the
#    worker), measured on the server's clock by a trigger that logs every
#    status change with the backend type that made it;
#  - the worker alone deletes a run finished longer ago than
#    finished_run_retention (7 days by default) and keeps one just finished;
#    its next batches start where the last one stopped, a run finished
#    before that is pruned at the next consistency pass;
#  - a queue dropped longer ago than retention loses its queues and queue_counts
#    rows at the first consistency pass after its runs are gone, not before;
#  - a lease moved into the past by hand waits for the next consistency pass;
#    one a heartbeat shortened is rescued within two intervals of passing;
#  - count deltas stored behind where the last fold stopped are folded
#    without a consistency pass (by the 10 s round), and at once by one;
#  - pg_terminate_backend() of the launcher: it comes back with a new pid and works;
#  - SIGHUP: maintenance_interval = 1h stops passes (a due run stays delayed and no
#    worker starts), setting it back wakes the launcher at once; a reload that
#    arrives while a (long) pass is running takes effect right after it;
#  - maintenance_enabled = off stops passes, on resumes them at once;
#  - a worker whose task errors on every pass: the launcher carries on, passes
#    keep coming, and once the cause is gone the work gets done
#    and does not keep the other tasks of the pass from running;
#  - queue_engine.database names the served database: runs there are maintained,
#    runs in another database are not; DROP EXTENSION and DROP DATABASE (plain,
#    not FORCE) of the served database succeed promptly in the middle of a
#    several-second pass, the worker logs nothing for the dropped extension and
#    resumes after CREATE EXTENSION; pointing queue_engine.database elsewhere by
#    reload works, and while the database is gone the log stays quiet;
#  - a task whose call was slow (without a full batch) sits out the next passes
#    for 20 times as long, then works again.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# Maintenance interval under test, and what "within two intervals" allows on
# top for forking the worker and connecting it (a slow CI box gets more with
# QE_TAP_SLACK_MS).
my $interval_ms = 200;
my $slack_ms = $ENV{QE_TAP_SLACK_MS} // 400;
my $bound_s = (2 * $interval_ms + $slack_ms) / 1000.0;

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_interval = ${interval_ms}ms
queue_engine.consistency_interval = '1h'
max_worker_processes = 16
# The postmaster logs "starting background worker process" at DEBUG1: it counts passes.
log_min_messages = debug1
log_line_prefix = '%m [%p] %b %a '
});
$node->start;

# ---------------------------------------------------------------- helpers

sub sql { return scalar $node->safe_psql(@_); }

# Poll $query in $db until it returns $expected; seconds waited, or undef after $timeout s.
sub wait_for
{
	my ($db, $query, $expected, $timeout) = @_;
	my $start = time;
	while (1)
	{
		my ($rc, $out, $err) = $node->psql($db, $query);
		return time - $start if $rc == 0 && $out eq $expected;
		return undef if time - $start > $timeout;
		usleep(20_000);
	}
}

sub log_pos { return -s $node->logfile; }

sub log_since
{
	my ($pos) = @_;
	return PostgreSQL::Test::Utils::slurp_file($node->logfile, $pos);
}

# Lines at WARNING or above, except the FATAL a worker logs when a fast
# shutdown or pg_terminate_backend() stops it (those are expected).
sub bad_lines
{
	my ($text) = @_;
	return grep {
		/\b(WARNING|ERROR|FATAL|PANIC):/
		  && !/terminating background worker .* due to administrator command/
	} split /\n/, $text;
}

# How many maintenance passes the postmaster started in this log text.
sub passes_in
{
	my ($text, $db) = @_;
	$db //= 'postgres';
	my @l = grep { /starting background worker process "queue_engine maintenance for \Q$db\E"/ }
	  split /\n/, $text;
	return scalar @l;
}

sub launcher_pid
{
	return sql('postgres',
		q{SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity
		   WHERE backend_type = 'queue_engine launcher'});
}

# Test objects in a database: a trigger that logs every status change with
# the server time and the backend type that made it, and a table of marks
# (the moment a test made something due, taken inside that transaction, so
# latencies measured from it are never underestimated).
sub install_in
{
	my ($db) = @_;
	sql($db, q{
CREATE EXTENSION queue_engine;
CREATE TABLE IF NOT EXISTS public.status_log (run_id bigint, old_status text, new_status text,
	at timestamptz, backend_type text);
-- Since 0.2 a run's status is the table it is in: a change of status is
-- an insert into another table (a carry by rotation, into the same
-- family, is none and is not logged).
CREATE OR REPLACE FUNCTION public.log_status() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
	status text := CASE WHEN TG_TABLE_NAME LIKE 'ready%' THEN 'queued'
						WHEN TG_TABLE_NAME LIKE 'delayed%' THEN 'delayed'
						WHEN TG_TABLE_NAME LIKE 'executing%' THEN 'executing'
						ELSE to_jsonb(NEW)->>'status' END;
	old_status text := (SELECT regexp_replace(l.new_status, '^enqueued as ', '')
						  FROM public.status_log l
						 WHERE l.run_id = NEW.run_id ORDER BY l.at DESC LIMIT 1);
BEGIN
	-- (a run's first row is its enqueue, not a change of status: logged
	-- apart, as 0.1's UPDATE trigger did not see it at all)
	IF old_status IS DISTINCT FROM status THEN
		INSERT INTO public.status_log VALUES (NEW.run_id, old_status,
			CASE WHEN old_status IS NULL THEN 'enqueued as ' || status ELSE status END,
			pg_catalog.clock_timestamp(),
			(SELECT a.backend_type FROM pg_catalog.pg_stat_activity a
			  WHERE a.pid = pg_catalog.pg_backend_pid()));
	END IF;
	RETURN NULL;
END $f$;
CREATE TABLE IF NOT EXISTS public.marks (name text PRIMARY KEY, at timestamptz);
});
	# The triggers lock the tables one by one while the worker's first pass
	# may already move runs between them (promotion locks delayed, then
	# ready): a deadlock the server breaks by failing one side.  Try again.
	for my $try (1 .. 5)
	{
		eval { sql($db, q{
DO $d$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['ready_0', 'ready_1', 'delayed_0', 'delayed_1',
							 'executing_0', 'executing_1', 'finished_runs'] LOOP
		EXECUTE format('CREATE TRIGGER runs_status_log AFTER INSERT ON queue_engine.%I'
					   ' FOR EACH ROW EXECUTE FUNCTION public.log_status()', t);
	END LOOP;
END $d$;
}); };
		last unless $@;
		die $@ unless $@ =~ /deadlock detected/ && $try < 5;
	}
}

# Seconds from mark $mark to the status change of run $id into $status (by
# the worker), or undef.
sub latency
{
	my ($db, $id, $status, $mark) = @_;
	return sql($db, qq{
SELECT round(extract(epoch FROM l.at - m.at)::numeric, 3)
  FROM public.status_log l, public.marks m
 WHERE l.run_id = $id AND l.new_status = '$status' AND m.name = '$mark'
 ORDER BY l.at LIMIT 1});
}

sub changed_by
{
	my ($db, $id, $status) = @_;
	return sql($db, qq{
SELECT coalesce(string_agg(DISTINCT coalesce(backend_type, '?'), ','), 'nobody')
  FROM public.status_log WHERE run_id = $id AND new_status = '$status'});
}

# A delayed run in $queue; returns its id.
sub delayed_run
{
	my ($db, $queue) = @_;
	return sql($db,
		qq{SELECT queue_engine.enqueue('$queue', '{}', delay => '1 hour')});
}

# Make delayed run $id due now, recording mark $mark in the same transaction.
sub make_due
{
	my ($db, $id, $mark) = @_;
	sql($db, qq{
BEGIN;
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE run_id = $id;
INSERT INTO public.marks VALUES ('$mark', clock_timestamp())
	ON CONFLICT (name) DO UPDATE SET at = EXCLUDED.at;
COMMIT;});
}

sub status_of
{
	my ($db, $id) = @_;
	return sql($db, "SELECT status FROM queue_engine.runs WHERE run_id = $id");
}

sub set_conf
{
	my ($name, $value) = @_;
	sql('postgres', "ALTER SYSTEM SET $name = '$value'");
	sql('postgres', 'SELECT pg_reload_conf()');
}

# $query gives $before for ten passes (consistency_interval is 1h), then
# $after once a consistency pass comes.
sub passed_over_until_consistency_pass
{
	my ($query, $before, $after, $what, $done) = @_;
	sleep 2;    # ten passes
	is(sql('postgres', $query), $before, "$what is passed over by the next passes");
	set_conf('queue_engine.consistency_interval', '200ms');
	ok(defined wait_for('postgres', $query, $after, 10), "the next consistency pass $done");
	set_conf('queue_engine.consistency_interval', '1h');
}

# ------------------------------------------------ not installed: quiet passes

my $pos = log_pos();
like(launcher_pid(), qr/^\d+$/,
	'exactly one queue_engine launcher runs before CREATE EXTENSION');
sleep 2;
my $text = log_since($pos);
cmp_ok(passes_in($text), '>=', 3,
	'passes keep starting while the extension is not installed');
is(join("\n", bad_lines($text)), '',
	'no WARNING/ERROR/FATAL logged while the extension is not installed');

# ------------------------------------------------ CREATE EXTENSION: work starts

install_in('postgres');
sql('postgres', q{
SELECT queue_engine.create_queue('work');
SELECT queue_engine.create_queue('stallq', lease => '1 hour', retry_backoff => '0');
SELECT queue_engine.create_queue('once', lease => '1 hour', max_attempts => 1);
});
my $first = delayed_run('postgres', 'work');
make_due('postgres', $first, 'first');
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $first",
		'queued', 10),
	'after CREATE EXTENSION the worker promotes a due run');
is(changed_by('postgres', $first, 'queued'), 'queue_engine maintenance',
	'... and it was the maintenance worker that did it');

# ------------------------------------------------ pg_stat_activity

is( sql('postgres', q{
SELECT backend_type || ':' || coalesce(datname, '-') FROM pg_stat_activity
 WHERE backend_type LIKE 'queue_engine%' AND backend_type <> 'queue_engine maintenance'}),
	'queue_engine launcher:-',
	'pg_stat_activity shows one launcher, attached to no database');

# Catch a maintenance backend in the act, to see its backend_type there.
sql('postgres', q{
CREATE TABLE public.seen (backend_type text, datname text);
CREATE FUNCTION public.catch_workers(seconds float8) RETURNS bigint LANGUAGE plpgsql AS $f$
DECLARE stop timestamptz := clock_timestamp() + seconds * interval '1 second';
BEGIN
	WHILE clock_timestamp() < stop LOOP
		INSERT INTO public.seen SELECT backend_type, datname FROM pg_stat_activity
		 WHERE backend_type = 'queue_engine maintenance';
		PERFORM pg_stat_clear_snapshot();
		PERFORM pg_sleep(0.005);
	END LOOP;
	RETURN (SELECT count(*) FROM public.seen);
END $f$;
});
cmp_ok(sql('postgres', 'SELECT public.catch_workers(2)'), '>', 0,
	'maintenance backends show in pg_stat_activity as backend_type "queue_engine maintenance"');
is(sql('postgres', q{SELECT string_agg(DISTINCT datname, ',') FROM public.seen}),
	'postgres', '... connected to queue_engine.database');

# The launcher opens a short transaction before each pass (to look up the
# served database).  Its xact_start must be that transaction's start, not
# the launcher's own start time, or monitoring that alerts on old
# transactions would see one as old as the launcher.  Sample without pauses
# so its few-microsecond transactions get caught.
sql('postgres', q{
CREATE FUNCTION public.catch_launcher_xacts(seconds float8) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
	stop timestamptz := clock_timestamp() + seconds * interval '1 second';
	age float8;
	caught int := 0;
	oldest float8 := 0;
	up float8;
BEGIN
	SELECT extract(epoch FROM clock_timestamp() - backend_start) INTO up
	  FROM pg_stat_activity WHERE backend_type = 'queue_engine launcher';
	WHILE clock_timestamp() < stop LOOP
		PERFORM pg_stat_clear_snapshot();
		SELECT extract(epoch FROM clock_timestamp() - xact_start) INTO age
		  FROM pg_stat_activity
		 WHERE backend_type = 'queue_engine launcher' AND xact_start IS NOT NULL;
		IF FOUND THEN
			caught := caught + 1;
			oldest := greatest(oldest, age);
		END IF;
	END LOOP;
	RETURN caught || '|' || round(oldest::numeric, 3) || '|' || round(up::numeric, 1);
END $f$;
});
usleep(1_500_000);
my ($launcher_caught, $launcher_oldest, $launcher_up) =
  split /\|/, sql('postgres', 'SELECT public.catch_launcher_xacts(4)');
note("launcher caught in a transaction $launcher_caught times, oldest ${launcher_oldest}s, launcher up ${launcher_up}s");
cmp_ok($launcher_caught, '>', 0, "sampling caught the launcher inside its transactions ($launcher_caught times)");
cmp_ok($launcher_oldest, '<', 1,
	"the launcher's xact_start is its transaction's start, not its own (oldest ${launcher_oldest}s, up ${launcher_up}s)");

# ------------------------------------------------ expiry, promotion, rescue

my ($exp, $del, $stall, $last) = split /\|/, sql('postgres', q{
SELECT queue_engine.enqueue('work', '{"k":"expire"}', ttl => '1 hour'),
       queue_engine.enqueue('work', '{"k":"delay"}', delay => '1 hour'),
       queue_engine.enqueue('stallq', '{"k":"stall"}'),
       queue_engine.enqueue('once', '{"k":"last"}')});
# Start the two to stall with a 4 s lease (their queues' is 1 hour): the
# worker learns of the lease when the dequeue commits, and rescues them
# once it passes; the mark 'lease_due' is when it does.
is( sql('postgres', q{
WITH d AS (SELECT * FROM queue_engine.dequeue(ARRAY['stallq','once'], 10, lease => '4 seconds')),
     m AS (INSERT INTO public.marks SELECT 'lease_due', max(lease_expires_at) FROM d)
SELECT count(*) FROM d}),
	2, 'two runs started for the stall test');
is(sql('postgres', "SELECT string_agg(status::text || attempt, ',' ORDER BY run_id) FROM queue_engine.runs WHERE run_id IN ($stall, $last)"),
	'executing1,executing1', 'both executing, attempt 1');
sleep 1;    # let any pass that was running finish; none of these is due yet
is( sql('postgres', "SELECT string_agg(status::text, ',' ORDER BY run_id) FROM queue_engine.runs WHERE run_id IN ($exp, $del, $stall, $last)"),
	'queued,delayed,executing,executing',
	'nothing happens to runs that are not due');

sql('postgres', qq{
BEGIN;
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = $exp;
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE run_id = $del;
INSERT INTO public.marks VALUES ('due', clock_timestamp());
COMMIT;});

my %want = ($exp => 'expired', $del => 'queued', $stall => 'queued', $last => 'failed');
my %what = ($exp => 'ttl expiry', $del => 'delayed promotion', $stall => 'stall rescue (retry)',
	$last => 'stall rescue (attempts spent: failed)');
ok( defined wait_for('postgres',
		"SELECT string_agg(status::text, ',' ORDER BY run_id) FROM queue_engine.runs WHERE run_id IN ($exp, $del, $stall, $last)",
		'expired,queued,queued,failed', 10),
	'worker alone: expired, promoted, rescued, failed');
for my $id ($exp, $del, $stall, $last)
{
	is(changed_by('postgres', $id, $want{$id}), 'queue_engine maintenance',
		"$what{$id} was done by the maintenance worker");
	my $lat = latency('postgres', $id, $want{$id},
		($id == $stall || $id == $last) ? 'lease_due' : 'due');
	ok(defined $lat && $lat ne '' && $lat <= $bound_s,
		sprintf('%s within two intervals (took %ss, bound %.3fs)',
			$what{$id}, $lat // '?', $bound_s));
}
is( sql('postgres', qq{
SELECT attempt || ':' || (last_error->>'stalled') || ':' || (lease_expires_at IS NULL)
  FROM queue_engine.runs WHERE run_id = $stall}),
	'1:true:true', 'rescued run keeps attempt 1, stall recorded as its error, lease cleared');
is(sql('postgres', "SELECT queue_engine.complete($stall, attempt => 1)"), 'f',
	'the stalled attempt can no longer complete');
is(sql('postgres', "SELECT run_id || ':' || attempt FROM queue_engine.dequeue(ARRAY['stallq'], 1)"), "$stall:2",
	'the rescued run starts again as attempt 2');
is(sql('postgres', "SELECT finished_at IS NOT NULL FROM queue_engine.runs WHERE run_id = $exp"),
	't', 'expired run has finished_at');

# The worker scans for stalled runs only once the earliest lease it knows
# of can have passed (at the latest 60 s after its last scan): a lease
# moved into the past by hand, not by dequeue or heartbeat, is passed over
# until then, or until the next consistency pass, which scans.
sql('postgres', qq{UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = $stall});
passed_over_until_consistency_pass(
	"SELECT status FROM queue_engine.runs WHERE run_id = $stall", 'executing', 'queued',
	'a lease moved into the past by hand', 'rescues it');

# A heartbeat that shortens a lease reports it too: the run, dequeued with
# its queue's 1-hour lease, is rescued soon after the 1 s the heartbeat
# gave it, not at the next full scan (up to 60 s) or consistency pass.
is(sql('postgres', "SELECT run_id || ':' || attempt FROM queue_engine.dequeue(ARRAY['stallq'], 1)"), "$stall:3",
	'the run starts again as attempt 3, with the 1-hour lease');
sql('postgres', qq{
WITH h AS (SELECT queue_engine.heartbeat($stall, extend => '1 second') AS lease)
INSERT INTO public.marks SELECT 'beat_due', lease FROM h});
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $stall", 'failed', 10),
	'a run whose heartbeat shortened its lease to 1 s is rescued (failed: its 3 attempts are spent)');
my $beat_lat = sql('postgres', qq{
SELECT round(extract(epoch FROM l.at - m.at)::numeric, 3)
  FROM public.status_log l, public.marks m
 WHERE l.run_id = $stall AND l.new_status = 'failed' AND m.name = 'beat_due'});
ok($beat_lat ne '' && $beat_lat >= 0 && $beat_lat <= $bound_s,
	sprintf('... within two intervals of that lease passing (took %ss, bound %.3fs)', $beat_lat, $bound_s));

# ------------------------------------------------ retention of finished runs

# The default finished_run_retention is 7 days: a run that finished 8 days
# ago is deleted by the worker alone, one that finished just now is kept.
sql('postgres', "UPDATE queue_engine.runs SET finished_at = now() - interval '8 days' WHERE run_id = $exp");
ok( defined wait_for('postgres', "SELECT count(*) FROM queue_engine.runs WHERE run_id = $exp", '0', 10),
	'worker alone: a run finished 8 days ago is deleted (retention 7 days)');
is(sql('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $last"), 'failed',
	'a run that finished just now is kept');

# The worker resumes pruning where its last batch stopped (less a 10 s
# margin), so a held snapshot's undeletable index entries are not walked
# again every pass.  A run with an older finished_at (as a long transaction
# that finished it would leave) waits for the next consistency pass, which
# walks from the oldest again.
sql('postgres', "UPDATE queue_engine.runs SET finished_at = now() - interval '9 days' WHERE run_id = $last");
passed_over_until_consistency_pass(
	"SELECT count(*) FROM queue_engine.runs WHERE run_id = $last", '1', '0',
	'a run finished before where the last prune stopped', 'prunes it');

# A dropped queue's row (and its counts row) goes once retention has removed
# its runs.  The worker looks for such queues only when a prune from the
# oldest comes back short, which it does after a consistency pass: a prune
# resumed at its cursor deletes the queue's run but leaves the row.
# First make sure the worker's prune cursor is set (a run pruned since the
# last consistency pass): with no cursor, the prune that deletes the
# dropped queue's run is one from the oldest, which removes the queue's
# rows in the same pass, as designed, and the check below would depend on
# when the last consistency pass happened to come.
sql('postgres', q{SELECT queue_engine.create_queue('gone_primer')});
my $primer = sql('postgres', q{SELECT queue_engine.enqueue('gone_primer')});
sql('postgres', "SELECT queue_engine.cancel($primer)");
sql('postgres',
	"UPDATE queue_engine.runs SET finished_at = now() - interval '8 days' WHERE run_id = $primer");
ok( defined wait_for('postgres', "SELECT count(*) FROM queue_engine.runs WHERE run_id = $primer", '0', 10),
	'worker alone: a run finished 8 days ago is pruned (the prune cursor is set)');
sql('postgres', q{SELECT queue_engine.create_queue('gone')});
my $gone_id = sql('postgres', q{SELECT queue_id FROM queue_engine.queues WHERE queue = 'gone'});
my $gone_run = sql('postgres', q{SELECT queue_engine.enqueue('gone')});
sql('postgres', q{SELECT queue_engine.drop_queue('gone', force => true)});
sql('postgres',
	"UPDATE queue_engine.runs SET finished_at = now() - interval '8 days' WHERE run_id = $gone_run");
sql('postgres',
	"UPDATE queue_engine.queues SET dropped_at = now() - interval '8 days' WHERE queue_id = $gone_id");
ok( defined wait_for('postgres', "SELECT count(*) FROM queue_engine.runs WHERE run_id = $gone_run", '0', 10),
	'worker alone: the canceled run of a queue dropped 8 days ago is deleted');
passed_over_until_consistency_pass(
	"SELECT (SELECT count(*) FROM queue_engine.queues WHERE queue_id = $gone_id)
	      + (SELECT count(*) FROM queue_engine.queue_counts WHERE queue_id = $gone_id)",
	'2', '0', "the dropped queue's rows, once its runs are gone,",
	'deletes its queues and queue_counts rows');

# ------------------------------------------------ count delta segments under a held snapshot

# Count deltas go to two segments (partitions of queue_count_deltas).  The
# worker folds them; while a snapshot is held open, the rows its folds
# delete cannot be vacuumed away, so the segment writers use grows: once
# past 32 pages the worker makes the other one current and, at its next
# pass, folds the large one whole and truncates it.  So both stay small
# without VACUUM (with the 0.1 single table they grew without bound).
sql('postgres', q{SELECT queue_engine.create_queue('foldq')});
my $wq = sql('postgres', q{
SELECT queue_id FROM queue_engine.queues WHERE queue = 'foldq' AND dropped_at IS NULL});
my $counted = sql('postgres', "SELECT delayed FROM queue_engine.queue_counts WHERE queue_id = $wq");
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$holder->query_safe('SELECT count(*) FROM queue_engine.queues');
my $segments_bytes = q{
SELECT max(pg_relation_size(c.oid)) FROM pg_class c
 WHERE c.oid IN ('queue_engine.queue_count_deltas_0'::regclass, 'queue_engine.queue_count_deltas_1'::regclass)};
for my $round (1 .. 3)
{
	sql('postgres', qq{
INSERT INTO queue_engine.queue_count_deltas (queue_id, delayed)
SELECT $wq, 1 FROM generate_series(1, 8000)});
	ok( defined wait_for('postgres', 'SELECT count(*) FROM queue_engine.queue_count_deltas', '0', 10),
		"snapshot held, round $round: the worker folds 8000 deltas");
}
my $small = wait_for('postgres', "SELECT ($segments_bytes) < 32 * 8192", 't', 10);
ok(defined $small,
	sprintf('... and, with the snapshot still held, both segments are back under 32 pages (after %.1fs)',
		$small // -1));
is(sql('postgres', "SELECT delayed FROM queue_engine.queue_counts WHERE queue_id = $wq"),
	$counted + 24000, 'every delta counted once');
$holder->query_safe('COMMIT');
$holder->quit;
# The made-up deltas are drift to the consistency check; put the count back.
sql('postgres', "INSERT INTO queue_engine.queue_count_deltas (queue_id, delayed) VALUES ($wq, -24000)");

# ------------------------------------------------ launcher killed: comes back

my $old_pid = launcher_pid();
ok(sql('postgres', "SELECT pg_terminate_backend($old_pid)") eq 't', 'launcher terminated');
my $t = wait_for('postgres',
	qq{SELECT count(*) = 1 AND bool_and(pid <> $old_pid) FROM pg_stat_activity
	    WHERE backend_type = 'queue_engine launcher'}, 't', 15);
ok(defined $t, sprintf('launcher comes back with a new pid (after %.1fs)', $t // -1));
my $after_kill = delayed_run('postgres', 'work');
make_due('postgres', $after_kill, 'after_kill');
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $after_kill", 'queued', 10),
	'the new launcher keeps maintaining');

# ------------------------------------------------ SIGHUP: interval

set_conf('queue_engine.maintenance_interval', '1h');
sleep 1;    # the launcher has reloaded by now (it sleeps at most one old interval first)
my $slow = delayed_run('postgres', 'work');
$pos = log_pos();
make_due('postgres', $slow, 'slow');
sleep 3;
is(status_of('postgres', $slow), 'delayed',
	'maintenance_interval = 1h after reload: a due run is not promoted within 3s');
is(passes_in(log_since($pos)), 0, '... and no maintenance pass started');
sql('postgres', "INSERT INTO public.marks VALUES ('fast', clock_timestamp())");
set_conf('queue_engine.maintenance_interval', "${interval_ms}ms");
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $slow", 'queued', 10),
	'interval set back: the run is promoted');
my $lat = latency('postgres', $slow, 'queued', 'fast');
ok($lat ne '' && $lat <= $bound_s,
	"... at once: the reload wakes the sleeping launcher (took ${lat}s)");

# A reload that arrives while a pass is running must not be lost: with a 1h
# interval, a long pass (many small batches), and the interval set back to
# 200ms during it, the launcher must not then sleep for an hour.
set_conf('queue_engine.maintenance_interval', '1h');
sleep 1;
sql('postgres', q{ALTER SYSTEM SET queue_engine.maintenance_batch_size = 20});
# Each expiry takes at least 0.5ms (a trigger on finished_runs, where an
# expired run goes), so the pass of 250 batches of 20 lasts seconds however
# fast the engine itself is (about 20 s on the 2-core VM, where a batch
# takes 25 ms on a quiet cluster and up to 80 ms in this test): the reload
# below surely lands inside it.  (20,000 runs made it about 100 s, close
# to the 120 s this test waits for the pass, and it failed once a batch
# cost a little more.)
sql('postgres', q{
SELECT count(*) FROM queue_engine.enqueue_batch('work',
	array_fill('{}'::jsonb, ARRAY[5000]), ttl => '1 hour');
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second'
 WHERE status = 'queued' AND expires_at IS NOT NULL;
CREATE FUNCTION public.slow_expiry() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.pg_sleep(0.0005); RETURN NULL; END $f$;
CREATE TRIGGER runs_slow_expiry AFTER INSERT ON queue_engine.finished_runs
	FOR EACH ROW WHEN (NEW.status = 'expired') EXECUTE FUNCTION public.slow_expiry();
});
# The reload wakes the launcher, which starts the long pass.
sql('postgres', 'SELECT pg_reload_conf()');
ok( defined wait_for('postgres',
		q{SELECT count(*) > 0 FROM queue_engine.runs WHERE status = 'expired' AND payload = '{}'},
		't', 10),
	'long pass started');
set_conf('queue_engine.maintenance_interval', "${interval_ms}ms");
usleep(300_000);
my $in_pass = sql('postgres',
	q{SELECT count(*) FROM queue_engine.runs WHERE status = 'queued' AND expires_at < now()});
cmp_ok($in_pass, '>', 0,
	"the reload arrived while the pass was running ($in_pass runs still to expire)");
ok( defined wait_for('postgres',
		q{SELECT count(*) FROM queue_engine.runs WHERE status = 'queued' AND expires_at < now()},
		'0', 120),
	'long pass finished');
sql('postgres', 'DROP TRIGGER runs_slow_expiry ON queue_engine.finished_runs');
sql('postgres', q{ALTER SYSTEM RESET queue_engine.maintenance_batch_size});   # no reload yet
my $lost = delayed_run('postgres', 'work');
make_due('postgres', $lost, 'lost');
$t = wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $lost", 'queued', 5);
ok(defined $t,
	'a reload during a pass takes effect after it (the launcher does not sleep the old 1h interval)');
# Wake it whatever happened above, so later tests start from a known state.
sql('postgres', 'SELECT pg_reload_conf()');
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $lost", 'queued', 10),
	'(launcher awake again)');

# ------------------------------------------------ maintenance_enabled

set_conf('queue_engine.maintenance_enabled', 'off');
sleep 1;
my $off = delayed_run('postgres', 'work');
$pos = log_pos();
make_due('postgres', $off, 'off');
sleep 3;
is(status_of('postgres', $off), 'delayed',
	'maintenance_enabled = off: a due run stays delayed for 3s');
is(passes_in(log_since($pos)), 0, '... and no maintenance pass started');
like(launcher_pid(), qr/^\d+$/, '... while the launcher stays up');
sql('postgres', "INSERT INTO public.marks VALUES ('on', clock_timestamp())");
set_conf('queue_engine.maintenance_enabled', 'on');
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $off", 'queued', 10),
	'maintenance_enabled = on: the run is promoted');
$lat = latency('postgres', $off, 'queued', 'on');
ok($lat ne '' && $lat <= $bound_s, "... at once (took ${lat}s)");

# ------------------------------------------------ a worker that errors comes back

# A trigger makes the worker's expiry of one run fail (only in the worker):
# the expired run is inserted into finished_runs.
sql('postgres', q{
CREATE FUNCTION public.poison() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
	IF NEW.payload ? 'poison' AND NEW.status = 'expired' THEN
		RAISE EXCEPTION 'poisoned run %', NEW.run_id;
	END IF;
	RETURN NEW;
END $f$;
CREATE TRIGGER runs_poison BEFORE INSERT ON queue_engine.finished_runs
	FOR EACH ROW EXECUTE FUNCTION public.poison();
});
my $poisoned = sql('postgres',
	q{SELECT queue_engine.enqueue('work', '{"poison":true}', ttl => '1 hour')});
my $behind = delayed_run('postgres', 'work');
$old_pid = launcher_pid();
$pos = log_pos();
sql('postgres', qq{
BEGIN;
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE run_id = $poisoned;
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE run_id = $behind;
INSERT INTO public.marks VALUES ('behind', clock_timestamp());
COMMIT;});
sleep 2;
$text = log_since($pos);
my @poison_errors = grep { /queue_engine maintenance .*ERROR:  poisoned run $poisoned/ } split /\n/, $text;
cmp_ok(scalar @poison_errors, '>=', 3,
	sprintf('the worker errors on every pass (%d errors in 2s)', scalar @poison_errors));
is(launcher_pid(), $old_pid, '... and the launcher carries on (same pid)');
is(status_of('postgres', $poisoned), 'queued', '... the poisoned run stays as it was');
is(status_of('postgres', $behind), 'queued',
	'an error in one task (expire_runs) does not stop the others (promote_delayed)');
sql('postgres', 'DROP TRIGGER runs_poison ON queue_engine.finished_runs');
ok( defined wait_for('postgres',
		"SELECT string_agg(status::text, ',' ORDER BY run_id) FROM queue_engine.runs WHERE run_id IN ($poisoned, $behind)",
		'expired,queued', 10),
	'once the cause is gone the next pass does all the work');

# ------------------------------------------------ served database, drops

sql('postgres', 'CREATE DATABASE qe_served');
install_in('qe_served');
sql('qe_served', q{SELECT queue_engine.create_queue('work')});
sql('postgres', q{ALTER SYSTEM SET queue_engine.database = 'qe_served'});
$node->restart;

my $here = delayed_run('qe_served', 'work');
my $there = delayed_run('postgres', 'work');
make_due('qe_served', $here, 'here');
make_due('postgres', $there, 'there');
ok(defined wait_for('qe_served', "SELECT status FROM queue_engine.runs WHERE run_id = $here", 'queued', 10),
	'queue_engine.database = qe_served: its due run is promoted');
sleep 1;
is(status_of('postgres', $there), 'delayed', '... and a due run in postgres is not');

# DROP EXTENSION / DROP DATABASE while the worker is busy there: a backlog of
# due runs and a trigger that makes each expiry take 2ms give a pass of
# several seconds (80 batches of 50, ~0.1s each), so a drop lands mid-pass.
sub busy_backlog
{
	my ($db, $n) = @_;
	sql('postgres', q{ALTER SYSTEM SET queue_engine.maintenance_batch_size = 50});
	sql('postgres', 'SELECT pg_reload_conf()');
	sql($db, qq{
SELECT count(*) FROM queue_engine.enqueue_batch('work', array_fill('{}'::jsonb, ARRAY[$n]), ttl => '1 hour');
CREATE OR REPLACE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS \$f\$
BEGIN PERFORM pg_catalog.pg_sleep(0.002); RETURN NULL; END \$f\$;
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE status = 'queued';
CREATE TRIGGER runs_slow AFTER INSERT ON queue_engine.finished_runs
	FOR EACH ROW EXECUTE FUNCTION public.slow();
});
	return wait_for($db,
		q{SELECT count(*) > 0 FROM queue_engine.runs WHERE status = 'expired'}, 't', 10);
}

ok(defined busy_backlog('qe_served', 4000), 'worker busy in qe_served');
$pos = log_pos();
my $start = time;
my ($rc, $out, $err) = $node->psql('qe_served', 'DROP EXTENSION queue_engine CASCADE');
my $took = time - $start;
$err =~ s/\s+/ /g;
is($rc, 0, "DROP EXTENSION while the worker is busy succeeds ($err)");
cmp_ok($took, '<', 3, sprintf('... promptly (%.2fs)', $took));
sleep 1;
$text = log_since($pos);
is(join("\n", grep { /queue_engine (maintenance|launcher)/ } bad_lines($text)), '',
	'the worker logs no WARNING/ERROR/FATAL when the extension is dropped under it');
cmp_ok(passes_in($text, 'qe_served'), '>=', 2, '... and passes go on (quietly) after the drop');

install_in('qe_served');
sql('qe_served', q{SELECT queue_engine.create_queue('work')});
my $again = delayed_run('qe_served', 'work');
make_due('qe_served', $again, 'again');
ok(defined wait_for('qe_served', "SELECT status FROM queue_engine.runs WHERE run_id = $again", 'queued', 10),
	'CREATE EXTENSION again: the worker resumes');

ok(defined busy_backlog('qe_served', 4000), 'worker busy in qe_served again');
$start = time;
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE qe_served');
$took = time - $start;
$err =~ s/\s+/ /g;
# Plain DROP DATABASE waits at most 5s for other sessions to leave, then fails.
is($rc, 0, "DROP DATABASE of the served database during a long pass succeeds ($err)");
cmp_ok($took, '<', 3, sprintf('... promptly (%.2fs)', $took));
if ($rc != 0)
{
	# Leave no database behind for what follows.
	$node->safe_psql('postgres', 'DROP DATABASE qe_served WITH (FORCE)');
}

# After the drop the server is healthy and the launcher still up.
$pos = log_pos();
sleep 1;
like(launcher_pid(), qr/^\d+$/, 'launcher still up after its database was dropped');
my @after = grep { /queue_engine/ } bad_lines(log_since($pos));
is(scalar @after, 0,
	'no queue_engine WARNING/ERROR/FATAL while the served database does not exist'
	  . (@after ? " (got e.g.: $after[0])" : ''));

# queue_engine.database is a reload setting: point it back at postgres.
sql('postgres', q{ALTER SYSTEM RESET queue_engine.database});
sql('postgres', q{ALTER SYSTEM RESET queue_engine.maintenance_batch_size});
sql('postgres', 'SELECT pg_reload_conf()');
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $there", 'queued', 10),
	'queue_engine.database changed by reload: the worker serves postgres again');
is(changed_by('postgres', $there, 'queued'), 'queue_engine maintenance', '... (the worker did it)');
$pos = log_pos();
sleep 1;
is(join("\n", bad_lines(log_since($pos))), '', 'and the log is quiet again');

# ------------------------------------------------ a slow task sits out passes
# A promotion that takes 0.5s (a trigger on the ready segments, which a
# promoted run is inserted into, sleeps) without filling a batch
# makes the promote task sit out the next passes for 20 times as long; a
# run that comes due meanwhile waits, then is promoted.
sql('postgres', q{
CREATE FUNCTION public.slow_promotion() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN PERFORM pg_catalog.pg_sleep(0.5); RETURN NULL; END $f$;
-- (only promotions insert into ready while it exists: the run below is
-- enqueued delayed, and made due through the view, which keeps it delayed)
CREATE TRIGGER runs_slow_promotion AFTER INSERT ON queue_engine.ready_0
	FOR EACH ROW EXECUTE FUNCTION public.slow_promotion();
CREATE TRIGGER runs_slow_promotion AFTER INSERT ON queue_engine.ready_1
	FOR EACH ROW EXECUTE FUNCTION public.slow_promotion();
});
my $slow_run = delayed_run('postgres', 'work');
make_due('postgres', $slow_run, 'slow');
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $slow_run", 'queued', 10),
	'a slow promotion (0.5s) is done by the worker');
sql('postgres', 'DROP TRIGGER runs_slow_promotion ON queue_engine.ready_0');
sql('postgres', 'DROP TRIGGER runs_slow_promotion ON queue_engine.ready_1');
my $waits = delayed_run('postgres', 'work');
make_due('postgres', $waits, 'waits');
sleep 2;
is(status_of('postgres', $waits), 'delayed',
	'after it the promote task sits out the next passes: a run due 2s ago (10 intervals) still waits');
ok(defined wait_for('postgres', "SELECT status FROM queue_engine.runs WHERE run_id = $waits", 'queued', 30),
	'... and is promoted once the task is due again');
my $waited = latency('postgres', $waits, 'queued', 'waits');
ok($waited ne '' && $waited >= 5 && $waited <= 15,
	"... about 20 x 0.5s after the slow call (took ${waited}s)");
is(changed_by('postgres', $waits, 'queued'), 'queue_engine maintenance', '... by the worker');

$node->stop;
done_testing();
