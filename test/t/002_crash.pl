# 002_crash.pl: crashes lose nothing that committed and leave nothing half done.
#
# Proves, on a cluster of its own (shared_preload_libraries = 'queue_engine'):
#  1. A client backend SIGKILLed while its open transaction holds dequeued runs
#     (a concurrency-limited queue and a key-limited one) makes the postmaster
#     crash-restart; afterwards both runs are still 'queued' with attempt 0,
#     their slots are free (a limit-1 queue starts one again), the counts are
#     right (queue_stats, check_consistency(false) = 0, consistency_log empty,
#     so the worker did not silently repair anything), the launcher is back,
#     and the runs complete normally as attempt 1.
#  2. An immediate shutdown in the middle of a pgbench load (8 clients:
#     enqueuers, dequeue-then-complete workers, dequeue+complete-in-one-
#     transaction workers, dequeue(5)+complete_batch workers, failing workers,
#     and workers that abandon their run so its 1s lease stalls) over limited,
#     keyed, tenant-limited and unlimited queues. Each completion is recorded
#     in done(run_id, attempt) in the same transaction as complete(). While
#     loading, sampled limits are never exceeded and no statement errors.
#     After restart: every committed enqueue has its run and no run lacks one;
#     every completed run has exactly one done row for its final attempt;
#     queue_stats matches the runs. Then the worker (stall rescue) and a drain
#     loop finish everything: every run 'completed', each exactly once
#     (runs may have started several times, never completed twice),
#     check_consistency(false) finds 0 everywhere, consistency_log is empty,
#     queue_stats shows nothing left.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_interval = 100ms
queue_engine.consistency_interval = '1h'
restart_after_crash = on
max_connections = 40
log_line_prefix = '%m [%p] %b %a '
log_statement = none
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', @_); }

my $check = q{SELECT string_agg(check_name || '=' || found, ' ' ORDER BY check_name)
  FROM queue_engine.check_consistency(false)};
my $all_zero = 'children_waits_satisfied=0 executing_without_lease=0 lease_on_idle_run=0 orphan_idempotency_keys=0 queue_counts=0 ready_key_placement=0 runs_in_two_places=0 runs_of_unknown_queue=0 shared_queue_slots=0';

# queue_stats next to the runs' own counts, in one snapshot; returns (ok, text).
sub stats_match
{
	my $out = sql(q{
SELECT string_agg(format('%s:%s/%s/%s=%s/%s/%s', s.queue, s.queued, s.delayed, s.executing,
	   coalesce(a.queued, 0), coalesce(a.delayed, 0), coalesce(a.executing, 0)), ' ' ORDER BY s.queue)
  FROM queue_engine.queue_stats s
  JOIN queue_engine.queues q ON q.queue = s.queue AND q.dropped_at IS NULL
  LEFT JOIN (SELECT queue_id,
				count(*) FILTER (WHERE status = 'queued') AS queued,
				count(*) FILTER (WHERE status = 'delayed') AS delayed,
				count(*) FILTER (WHERE status = 'executing') AS executing
			   FROM queue_engine.runs GROUP BY queue_id) a ON a.queue_id = q.queue_id});
	my @bad = grep { my ($l, $r) = /:(.*)=(.*)/; $l ne $r } split / /, $out;
	return (scalar(@bad) == 0, $out);
}

sub launcher_pid
{
	return sql(q{SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity
	              WHERE backend_type = 'queue_engine launcher'});
}

sql(q{
CREATE EXTENSION queue_engine;
SELECT queue_engine.create_queue('one', concurrency_limit => 1);
SELECT queue_engine.create_queue('perkey', key_concurrency_limit => 1);
});

# ------------------------------------------------ 1. SIGKILL with dequeued runs

my ($r1, $r2) = split /\|/, sql(q{
SELECT queue_engine.enqueue('one', '{"n":1}'), queue_engine.enqueue('perkey', '{"n":2}', concurrency_key => 'k')});
ok(defined wait_launcher(), 'launcher running');
my $launcher = launcher_pid();

sub wait_launcher
{
	my $start = time;
	while (time - $start < 30)
	{
		my ($rc, $out) = $node->psql('postgres',
			q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'queue_engine launcher'});
		return $out if $rc == 0 && $out =~ /^\d+$/;
		usleep(100_000);
	}
	return undef;
}

my $victim = $node->background_psql('postgres', on_error_stop => 0);
my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');
$victim->query_safe('BEGIN');
is( $victim->query_safe(q{SELECT string_agg(run_id || ':' || attempt, ',' ORDER BY run_id)
                            FROM queue_engine.dequeue(ARRAY['one', 'perkey'], 10, lease => '1 hour')}),
	"$r1:1,$r2:1", 'victim session dequeued both runs in an open transaction');
is(sql(q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['one', 'perkey'], 10)}), '0',
	'meanwhile nobody else can start them');
my $pos = -s $node->logfile;
kill 'KILL', $victim_pid;
eval { $victim->quit };
ok($node->poll_query_until('postgres', 'SELECT 1', '1'), 'server accepts connections again');
my $log = slurp_file($node->logfile, $pos);
like($log, qr/server process \(PID $victim_pid\) was terminated by signal 9/,
	'the postmaster saw the backend killed by SIGKILL');
like($log, qr/all server processes terminated; reinitializing/, '... and crash-restarted');

is( sql(qq{SELECT string_agg(status || ':' || attempt || ':' || (lease_expires_at IS NULL), ',' ORDER BY run_id)
             FROM queue_engine.runs WHERE run_id IN ($r1, $r2)}),
	'queued:0:true,queued:0:true', 'after the crash both runs are queued, attempt 0, no lease');
my ($ok, $detail) = stats_match();
ok($ok, "queue_stats matches the runs: $detail");
is(sql($check), $all_zero, 'check_consistency(false) finds nothing');
my $new_launcher = wait_launcher();
ok(defined $new_launcher && $new_launcher ne $launcher, 'the launcher is back (new pid)');
sleep 1;    # its first pass runs a consistency check: it must find nothing either
is(sql('SELECT count(*) FROM queue_engine.consistency_log'), '0', 'consistency_log is empty');
is( sql(q{SELECT string_agg(run_id || ':' || attempt, ',' ORDER BY run_id)
            FROM queue_engine.dequeue(ARRAY['one', 'perkey'], 10)}),
	"$r1:1,$r2:1", 'both runs start again as attempt 1 (limit slots free)');
is(sql("SELECT queue_engine.complete($r1, attempt => 1) AND queue_engine.complete($r2, attempt => 1)"),
	't', 'and complete normally');
is(sql("SELECT string_agg(status::text, ',') FROM queue_engine.runs WHERE run_id IN ($r1, $r2)"),
	'completed,completed', 'both completed');

# ------------------------------------------------ 2. immediate shutdown under load

sql(q{
SELECT queue_engine.create_queue(q, max_attempts => 1000, retry_backoff => '50ms',
	retry_backoff_max => '200ms', concurrency_limit => l, key_concurrency_limit => kl, tenant => t)
  FROM (VALUES ('lim', 3, NULL, 'default'), ('keyed', NULL, 1, 'default'),
               ('free', NULL, NULL, 'default'), ('t2a', NULL, NULL, 't2'), ('t2b', NULL, NULL, 't2'))
       v(q, l, kl, t);
SELECT queue_engine.set_tenant_limit('t2', 2);
CREATE TABLE enq (run_id bigint NOT NULL);
CREATE TABLE done (run_id bigint NOT NULL, attempt int NOT NULL, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION pick_queue(i int) RETURNS text LANGUAGE sql IMMUTABLE
	AS $$ SELECT (ARRAY['lim', 'keyed', 'free', 't2a', 't2b'])[1 + i % 5] $$;
-- dequeue up to n runs, then complete each with complete_batch, recording completions
CREATE FUNCTION work_batch(n int, lease interval) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	r record;
	ids bigint[] := '{}';
	atts int[] := '{}';
BEGIN
	FOR r IN SELECT * FROM queue_engine.dequeue(NULL, n, lease => lease, worker => 'batch') LOOP
		ids := ids || r.run_id;
		atts := atts || r.attempt;
	END LOOP;
	FOR i IN 1 .. cardinality(ids) LOOP
		IF queue_engine.complete_batch(ARRAY[ids[i]], attempts => ARRAY[atts[i]]) = 1 THEN
			INSERT INTO done (run_id, attempt) VALUES (ids[i], atts[i]);
		END IF;
	END LOOP;
	RETURN cardinality(ids);
END $$;
-- the final drain: batches until nothing is left or time is up, committing each
CREATE PROCEDURE drain(seconds float8) LANGUAGE plpgsql AS $$
DECLARE
	stop timestamptz := clock_timestamp() + seconds * interval '1 second';
	n int;
BEGIN
	LOOP
		n := work_batch(50, '1 second');
		COMMIT;
		EXIT WHEN clock_timestamp() > stop OR NOT EXISTS (SELECT 1 FROM queue_engine.runs
			WHERE status IN ('delayed', 'queued', 'executing', 'waiting'));
		IF n = 0 THEN PERFORM pg_sleep(0.05); END IF;
	END LOOP;
END $$;
INSERT INTO enq
SELECT queue_engine.enqueue(pick_queue(i), jsonb_build_object('i', i), concurrency_key => 'k' || (i % 17))
  FROM generate_series(1, 4000) i;
});
my $initial = sql('SELECT count(*) FROM queue_engine.runs WHERE status = \'queued\'');
is($initial, 4000, '4000 runs enqueued over limited, keyed, tenant-limited and unlimited queues');

my $dir = PostgreSQL::Test::Utils::tempdir;
my %scripts = (
	# more runs arrive during the load
	'enqueue.sql' => q{
\set i random(1, 1000000)
INSERT INTO enq SELECT queue_engine.enqueue(pick_queue(:i), '{}', concurrency_key => 'k' || (:i % 17));
},
	# dequeue, "work", then complete in a second transaction
	'work.sql' => q{
SELECT coalesce(max(run_id), 0) AS rid, coalesce(max(attempt), 0) AS att
  FROM queue_engine.dequeue(NULL, 1, lease => '1 second', worker => 'work') \gset
\sleep 2 ms
INSERT INTO done (run_id, attempt) SELECT :rid, :att
 WHERE CASE WHEN :rid > 0 THEN queue_engine.complete(:rid, attempt => :att) ELSE false END;
},
	# dequeue and complete in one transaction
	'worktx.sql' => q{
BEGIN;
SELECT coalesce(max(run_id), 0) AS rid, coalesce(max(attempt), 0) AS att
  FROM queue_engine.dequeue(NULL, 1, lease => '1 second', worker => 'worktx') \gset
\sleep 1 ms
INSERT INTO done (run_id, attempt) SELECT :rid, :att
 WHERE CASE WHEN :rid > 0 THEN queue_engine.complete(:rid, attempt => :att) ELSE false END;
COMMIT;
},
	'batch.sql' => q{
SELECT work_batch(5, '1 second');
},
	# fail (retried after a short backoff)
	'fail.sql' => q{
SELECT coalesce(max(run_id), 0) AS rid, coalesce(max(attempt), 0) AS att
  FROM queue_engine.dequeue(NULL, 1, lease => '1 second', worker => 'fail') \gset
SELECT CASE WHEN :rid > 0 THEN queue_engine.fail(:rid, '{"message":"bench"}', attempt => :att) END;
},
	# a worker that dies: the run stalls until its 1s lease passes
	'abandon.sql' => q{
SELECT count(*) FROM queue_engine.dequeue(NULL, 1, lease => '1 second', worker => 'abandon');
},
);
my @files;
my %weight = ('enqueue.sql' => 3, 'work.sql' => 6, 'worktx.sql' => 4, 'batch.sql' => 2,
	'fail.sql' => 1, 'abandon.sql' => 1);
for my $f (sort keys %scripts)
{
	PostgreSQL::Test::Utils::append_to_file("$dir/$f", $scripts{$f});
	push @files, '-f', "$dir/$f\@$weight{$f}";
}

$pos = -s $node->logfile;
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '8', '-j', '2', '-T', '120', @files,
		'-h', $node->host, '-p', $node->port, 'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);

# While loading, sample the limits; stop when about half the work is done.
my $limits = q{
SELECT coalesce(max(n) FILTER (WHERE what = 'lim'), 0) || ':' || coalesce(max(n) FILTER (WHERE what = 'key'), 0)
       || ':' || coalesce(max(n) FILTER (WHERE what = 't2'), 0)
  FROM (SELECT 'lim' AS what, count(*) AS n FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
         WHERE r.status = 'executing' AND q.queue = 'lim'
        UNION ALL
        SELECT 'key', count(*) FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
         WHERE r.status = 'executing' AND q.queue = 'keyed' GROUP BY r.concurrency_key
        UNION ALL
        SELECT 't2', count(*) FROM queue_engine.runs r JOIN queue_engine.tenants t USING (tenant_id)
         WHERE r.status = 'executing' AND t.tenant = 't2') s};
my $sampler = $node->background_psql('postgres');
my ($max_lim, $max_key, $max_t2, $samples, $done) = (0, 0, 0, 0, 0);
my $start = time;
while (time - $start < 30)
{
	my ($l, $k, $t) = split /:/, $sampler->query_safe($limits);
	$max_lim = $l if $l > $max_lim;
	$max_key = $k if $k > $max_key;
	$max_t2 = $t if $t > $max_t2;
	$samples++;
	if ($samples % 5 == 0)
	{
		$done = $sampler->query_safe('SELECT count(*) FROM done');
		last if $done >= 2000 && time - $start >= 3;
	}
	usleep(30_000);
}
$sampler->quit;
note(sprintf('load ran %.1fs before the shutdown, %d completions recorded, %d samples',
		time - $start, $done, $samples));
cmp_ok($done, '>', 0, 'the load made progress before the shutdown');
my $pending = sql(q{SELECT count(*) FROM queue_engine.runs WHERE status IN ('queued', 'delayed', 'executing')});
cmp_ok($pending, '>', 0, "work was still pending at the shutdown ($pending runs)");
cmp_ok($max_lim, '<=', 3, "queue limit 3 never exceeded in the samples (max $max_lim)");
cmp_ok($max_key, '<=', 1, "key limit 1 never exceeded in the samples (max $max_key)");
cmp_ok($max_t2, '<=', 2, "tenant limit 2 never exceeded in the samples (max $max_t2)");

$node->stop('immediate');
eval { $bench->finish; };
eval { $bench->kill_kill; };
my $load_log = slurp_file($node->logfile, $pos);
my @load_errors = grep { /\b(ERROR|PANIC):/ } split /\n/, $load_log;
is(join("\n", @load_errors[0 .. ($#load_errors < 9 ? $#load_errors : 9)]), '',
	'no statement failed during the load (deadlock, constraint, limit error, ...)');
like($load_log, qr/received immediate shutdown request/, 'the server went down by immediate shutdown');
$node->start;
# Right after restart, before anything else runs: what committed is all there.
is( sql(q{SELECT count(*) FROM enq e
           FULL JOIN (SELECT r.run_id FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
                       WHERE q.queue NOT IN ('one', 'perkey')) r ON r.run_id = e.run_id
           WHERE e.run_id IS NULL OR r.run_id IS NULL}),
	'0', 'every committed enqueue has its run, and every run its committed enqueue');
is( sql(q{SELECT count(*) FROM (SELECT run_id, count(*) FROM done GROUP BY run_id HAVING count(*) > 1) d}),
	'0', 'no run was completed twice before the shutdown');
is( sql(q{SELECT count(*) FROM queue_engine.runs r JOIN enq USING (run_id)
            LEFT JOIN done d ON d.run_id = r.run_id
           WHERE (r.status = 'completed') <> (d.run_id IS NOT NULL)
              OR (d.run_id IS NOT NULL AND d.attempt <> r.attempt)}),
	'0', 'completed runs are exactly those with a done row, for their final attempt');
($ok, $detail) = stats_match();
ok($ok, "after restart queue_stats matches the runs: $detail");
is(sql($check), $all_zero, 'after restart check_consistency(false) finds nothing');
my $stalled = sql(q{SELECT count(*) FROM queue_engine.runs WHERE status = 'executing'});
note("$stalled runs were executing at the shutdown");

# Drain: the worker rescues stalled runs (1s leases), the loop completes everything.
$start = time;
sql('CALL drain(120)');
note(sprintf('drained in %.1fs', time - $start));
my $total = sql('SELECT count(*) FROM enq');
is( sql(q{SELECT string_agg(status || '=' || n, ' ') FROM
	(SELECT r.status, count(*) n FROM queue_engine.runs r JOIN enq USING (run_id) GROUP BY r.status) s}),
	"completed=$total", "all $total enqueued runs completed");
is( sql(q{SELECT count(*) FROM (SELECT run_id FROM done GROUP BY run_id HAVING count(*) > 1) d}),
	'0', 'no run completed twice');
is( sql(q{SELECT count(DISTINCT d.run_id) || '/' || count(*) FROM enq JOIN done d USING (run_id)}),
	"$total/$total", 'exactly one done row per run');
is( sql(q{SELECT count(*) FROM done d JOIN queue_engine.runs r USING (run_id) WHERE d.attempt <> r.attempt}),
	'0', 'each done row is for the attempt that completed the run');
cmp_ok(sql(q{SELECT count(*) FROM queue_engine.runs r JOIN enq USING (run_id) WHERE r.attempt > 1}),
	'>', 0, 'some runs were started more than once (failed or stalled), still completed once');
is(sql($check), $all_zero, 'check_consistency(false) finds nothing');
is(sql('SELECT count(*) FROM queue_engine.consistency_log'), '0',
	'consistency_log is empty (the worker never had anything to repair)');
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM queue_engine.queue_count_deltas'),
	'the worker folded the count deltas');
is( sql(q{SELECT sum(queued) || '/' || sum(delayed) || '/' || sum(executing) FROM queue_engine.queue_stats}),
	'0/0/0', 'queue_stats shows nothing queued, delayed or executing');
($ok, $detail) = stats_match();
ok($ok, "queue_stats matches the runs: $detail");

$node->stop;
done_testing();
