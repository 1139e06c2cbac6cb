# 003_consistency.pl: the consistency monitor finds, repairs and logs drift in
# the engine's own bookkeeping, on demand and from the background worker.
#
# Proves, on a cluster of its own (shared_preload_libraries = 'queue_engine'):
#  - after ordinary traffic (enqueue, delayed, dequeue, complete, fail, cancel,
#    idempotency keys) check_consistency(false) finds nothing and
#    consistency_log stays empty;
#  - four kinds of deliberate corruption (queue_counts drift in two states,
#    runs in two places: executing runs also in finished_runs and a queued run
#    twice in its ready segment, two executing runs sharing a slot, an
#    idempotency key whose run was deleted) are each found with the exact
#    count; check_consistency(false) changes nothing; check_consistency()
#    repairs all of them in one pass, logs each in consistency_log with a
#    detail, and a second check finds 0;
#  - the repairs work: queue_stats matches the runs, each run in two places
#    keeps the copy furthest along (the finished one; one queued copy) and
#    is finished or claimed once, the orphaned key can be
#    used again;
#  - with consistency_interval = 500ms the worker finds and repairs the same
#    corruption on its own, in one pass, within consistency_interval plus two
#    maintenance intervals (plus a fixed allowance), measured on the server
#    clock.
#  Since storage 0.2 executing_without_lease and lease_on_idle_run cannot find
#  anything (only executing has lease columns, NOT NULL; a queued run has no
#  lease): they are expected at 0 throughout.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $interval_ms = 200;
my $consistency_ms = 500;
my $slack_ms = $ENV{QE_TAP_SLACK_MS} // 400;

my $node = PostgreSQL::Test::Cluster->new('consistency');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_interval = ${interval_ms}ms
queue_engine.consistency_interval = '1h'
log_line_prefix = '%m [%p] %b %a '
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', @_); }

sub wait_for
{
	my ($query, $expected, $timeout) = @_;
	my $start = time;
	while (1)
	{
		my ($rc, $out, $err) = $node->psql('postgres', $query);
		return time - $start if $rc == 0 && $out eq $expected;
		return undef if time - $start > $timeout;
		usleep(20_000);
	}
}

my $check = q{SELECT string_agg(check_name || '=' || found || '/' || repaired, ' ' ORDER BY check_name)
  FROM queue_engine.check_consistency(%s)};
my $all_zero = 'children_waits_satisfied=0/0 executing_without_lease=0/0 lease_on_idle_run=0/0 orphan_idempotency_keys=0/0 queue_counts=0/0 ready_key_placement=0/0 runs_in_two_places=0/0 runs_of_unknown_queue=0/0 shared_queue_slots=0/0';

# Counts queue_stats shows, next to the counts of the runs themselves (one snapshot).
my $stats_vs_runs = q{
SELECT string_agg(format('%s:%s/%s/%s=%s/%s/%s', s.queue, s.queued, s.delayed, s.executing,
	   coalesce(a.queued, 0), coalesce(a.delayed, 0), coalesce(a.executing, 0)), ' ' ORDER BY s.queue)
  FROM queue_engine.queue_stats s
  JOIN queue_engine.queues q ON q.queue = s.queue AND q.dropped_at IS NULL
  LEFT JOIN (SELECT queue_id,
				count(*) FILTER (WHERE status = 'queued') AS queued,
				count(*) FILTER (WHERE status = 'delayed') AS delayed,
				count(*) FILTER (WHERE status = 'executing') AS executing
			   FROM queue_engine.runs GROUP BY queue_id) a ON a.queue_id = q.queue_id};

sub stats_match
{
	my $out = sql($stats_vs_runs);
	my @bad = grep { my ($l, $r) = /:(.*)=(.*)/; $l ne $r } split / /, $out;
	return (scalar(@bad) == 0, $out);
}

sql('CREATE EXTENSION queue_engine');

# ------------------------------------------------ healthy traffic: nothing found

sql(q{
SELECT queue_engine.create_queue('a', concurrency_limit => 10, retry_backoff => '0');
SELECT queue_engine.create_queue('b', key_concurrency_limit => 2);
SELECT queue_engine.enqueue('a', jsonb_build_object('i', i)) FROM generate_series(1, 20) i;
SELECT queue_engine.enqueue('b', '{}', concurrency_key => 'k' || (i % 3)) FROM generate_series(1, 20) i;
SELECT queue_engine.enqueue('b', '{}', delay => '1 hour') FROM generate_series(1, 3);
SELECT queue_engine.enqueue('b', '{}', idempotency_key => 'idem-' || i) FROM generate_series(1, 5) i;
SELECT count(queue_engine.complete(run_id)) FROM queue_engine.dequeue(ARRAY['a'], 3);
SELECT count(queue_engine.fail(run_id, '{"m":"x"}', retry_in => '0')) FROM queue_engine.dequeue(ARRAY['a'], 2);
SELECT count(*) FROM queue_engine.dequeue(ARRAY['a','b'], 6, lease => '1 hour');
SELECT queue_engine.cancel(max(run_id)) FROM queue_engine.runs WHERE status = 'queued';
});
# Let the worker fold the deltas, then look.
ok(defined wait_for('SELECT count(*) FROM queue_engine.queue_count_deltas', '0', 10),
	'worker folded the count deltas');
is(sql(sprintf($check, 'false')), $all_zero, 'healthy engine: check_consistency(false) finds nothing');
is(sql(sprintf($check, 'true')), $all_zero, 'healthy engine: check_consistency() finds nothing');
is(sql('SELECT count(*) FROM queue_engine.consistency_log'), '0', 'healthy engine: consistency_log empty');
my ($ok, $detail) = stats_match();
ok($ok, "queue_stats matches the runs: $detail");

# ------------------------------------------------ corrupt on purpose

# Executing and queued runs cannot lose or gain a lease since storage 0.2
# (see the header); the drift 0.2 can have instead is a run in two places,
# as a move that inserted without deleting would leave.  Returns the count
# rows corrupted, the executing runs also finished (two, comma separated),
# the queued run copied within its ready segment, the run deleted from
# under its idempotency key, the run given another's slot, and the ready
# segment the queued run keeps.
sub corrupt
{
	# The oldest queued run of 'a' and its segment: it is copied there again.
	my ($seg, $dup) = split /\|/, sql(q{
SELECT tableoid::regclass, run_id FROM queue_engine.ready
 WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'a' AND dropped_at IS NULL)
 ORDER BY run_id LIMIT 1});
	die "no queued run of 'a' to copy" unless defined $dup && $seg =~ /^queue_engine\.ready_([01])$/;
	# Into the same segment: the worker's rotation would carry a copy in
	# the other one over at any moment (pgTAP 05 copies across segments).
	my $other = $seg;
	my @r = split /\|/, sql(qq{
WITH
 -- the two newest executing runs of 'a' (limit 10): the later will take the other's slot
 a_slots AS (SELECT run_id, queue_slot FROM queue_engine.runs
              WHERE status = 'executing' AND queue_slot IS NOT NULL
                AND queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'a' AND dropped_at IS NULL)
              ORDER BY run_id DESC LIMIT 2),
 -- drift: 'a' counts 5 queued too many and 1 executing too few
 c AS (UPDATE queue_engine.queue_counts SET queued = queued + 5, executing = executing - 1
        WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'a' AND dropped_at IS NULL)
       RETURNING 1),
 -- the two oldest other executing runs of 'a' are also completed (a copy in finished_runs)
 e AS (INSERT INTO queue_engine.finished_runs
              (run_id, finished_at, run_at, started_at, queue_id, policy_id, priority,
               attempt, status, payload, output, concurrency_key, worker, meta)
       SELECT x.run_id, now(), x.run_at, x.started_at, x.queue_id, x.policy_id, x.priority,
              x.attempt, 'completed', x.payload, '{"copy": true}', x.concurrency_key, x.worker, x.meta
         FROM queue_engine.executing x
        WHERE x.run_id IN (SELECT run_id FROM queue_engine.executing
                            WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'a' AND dropped_at IS NULL)
                              AND run_id NOT IN (SELECT run_id FROM a_slots)
                            ORDER BY run_id LIMIT 2)
       RETURNING run_id),
 -- a queued run of 'a' is in its ready segment twice ('a' then counts 1 queued too few)
 l AS (INSERT INTO $other SELECT * FROM $seg WHERE run_id = $dup RETURNING run_id),
 -- the run an idempotency key names disappears ('b' then also counts 1 queued too many)
 k AS (DELETE FROM queue_engine.runs
        WHERE run_id = (SELECT min(k.run_id) FROM queue_engine.idempotency_keys k
                          JOIN queue_engine.runs r ON r.run_id = k.run_id AND r.status = 'queued')
       RETURNING run_id),
 s AS (UPDATE queue_engine.runs SET queue_slot = (SELECT queue_slot FROM a_slots ORDER BY run_id LIMIT 1)
        WHERE run_id = (SELECT max(run_id) FROM a_slots) AND (SELECT count(*) FROM a_slots) = 2
       RETURNING run_id)
SELECT (SELECT count(*) FROM c), (SELECT string_agg(run_id::text, ',' ORDER BY run_id) FROM e),
       (SELECT run_id FROM l), (SELECT run_id FROM k), (SELECT run_id FROM s)});
	return (@r, $seg);
}

# Where each run is: "table:run_id" for every row of the given runs, in order.
sub places
{
	my ($runs) = @_;
	return sql(qq{
SELECT string_agg(x.tableoid::regclass::text || ':' || x.run_id, ' ' ORDER BY x.run_id, x.tableoid::regclass::text)
  FROM (SELECT tableoid, run_id FROM queue_engine.executing
        UNION ALL SELECT tableoid, run_id FROM queue_engine.finished_runs
        UNION ALL SELECT tableoid, run_id FROM queue_engine.ready
        UNION ALL SELECT tableoid, run_id FROM queue_engine.delayed) x
 WHERE x.run_id IN ($runs)});
}

# What places() shows once the runs corrupt() put in two places keep the right copy.
sub kept
{
	my ($finished, $dup, $dup_seg) = @_;
	my %at = ((map { $_ => 'queue_engine.finished_runs' } split /,/, $finished), $dup => $dup_seg);
	return join ' ', map { "$at{$_}:$_" } sort { $a <=> $b } keys %at;
}

# Run ids in more than one row of the run tables.
my $in_two_places = q{
SELECT count(*) FROM (SELECT run_id FROM queue_engine.executing UNION ALL SELECT run_id FROM queue_engine.finished_runs
                      UNION ALL SELECT run_id FROM queue_engine.ready UNION ALL SELECT run_id FROM queue_engine.delayed) x
 GROUP BY run_id HAVING count(*) > 1};

# A second executing run of 'a' for each of the two that get a finished copy.
sql(q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['a'], 4, lease => '1 hour')});
my ($c, $finished, $dup, $orphan_run, $shared, $dup_seg) = corrupt();
is($c, 1, 'queue_counts row corrupted');
like($shared, qr/^\d+$/, "executing run $shared shares another run's slot");
like($finished, qr/^\d+,\d+$/, "two executing runs are also finished ($finished)");
like($dup, qr/^\d+$/, "queued run $dup is in its ready segment twice");
like($orphan_run, qr/^\d+$/, "run $orphan_run deleted from under its idempotency key");
my $orphan_key = sql("SELECT idempotency_key FROM queue_engine.idempotency_keys WHERE run_id = $orphan_run");
my $want = 'children_waits_satisfied=0/0 executing_without_lease=0/0 lease_on_idle_run=0/0 orphan_idempotency_keys=1/%d queue_counts=3/%d ready_key_placement=0/0 runs_in_two_places=3/%d runs_of_unknown_queue=0/0 shared_queue_slots=1/%d';
my $places_before = places("$finished,$dup");

is(sql(sprintf($check, 'false')), sprintf($want, 0, 0, 0, 0),
	'check_consistency(false) finds each kind of drift, exact counts, repairs nothing');
is(sql(sprintf($check, 'false')), sprintf($want, 0, 0, 0, 0),
	'... and really changed nothing (same findings again)');
is(places("$finished,$dup"), $places_before, '... every copy of the runs in two places is still there');
my $log_before = sql('SELECT count(*) FROM queue_engine.consistency_log WHERE repaired > 0');
is($log_before, '0', 'no repair logged by check_consistency(false)');

my $t0 = sql('SELECT clock_timestamp()');
is(sql(sprintf($check, 'true')), sprintf($want, 1, 3, 3, 1),
	'check_consistency() finds and repairs all of it');
is(sql(sprintf($check, 'false')), $all_zero, 'a second check finds nothing');
is( sql(qq{
SELECT string_agg(check_name || '=' || found || '/' || repaired || ':' || (detail IS NOT NULL), ' ' ORDER BY check_name)
  FROM queue_engine.consistency_log WHERE logged_at >= '$t0' AND repaired > 0}),
	'orphan_idempotency_keys=1/1:true queue_counts=3/3:true runs_in_two_places=3/3:true shared_queue_slots=1/1:true',
	'each repair is logged in consistency_log with its detail');
like( sql(qq{SELECT detail::text FROM queue_engine.consistency_log
             WHERE logged_at >= '$t0' AND check_name = 'orphan_idempotency_keys'}),
	qr/"run_id": $orphan_run\b/, 'the orphan key detail names the deleted run');
(my $dup_kept = $dup_seg) =~ s/^queue_engine\.//;
my %want_places = ((map { $_ => '"finished_runs", "executing_[01]"' } split /,/, $finished),
	$dup => qq{"$dup_kept", "$dup_kept"});
my $want_detail = join ', ', map { qq(\\{"places": \\[$want_places{$_}\\], "run_id": $_\\}) }
  sort { $a <=> $b } keys %want_places;
like( sql(qq{SELECT detail::text FROM queue_engine.consistency_log
             WHERE logged_at >= '$t0' AND check_name = 'runs_in_two_places'}),
	qr/^\[$want_detail\]$/,
	'the runs_in_two_places detail names each run with its places, the copy kept first');

($ok, $detail) = stats_match();
ok($ok, "after repair queue_stats matches the runs: $detail");
is(sql("SELECT queue_slot IS NULL OR status <> 'executing' FROM queue_engine.runs WHERE run_id = $shared"), 't',
	'the run that shared a slot holds none now');
is(places("$finished,$dup"), kept($finished, $dup, $dup_seg),
	'each run in two places keeps one copy: the finished one, and one of the two queued ones');
is( sql(qq{SELECT string_agg(status || ':' || output::text || ':' || queue_engine.complete(run_id), ',' ORDER BY run_id)
             FROM queue_engine.runs WHERE run_id IN ($finished)}),
	'completed:{"copy": true}:false,completed:{"copy": true}:false',
	'the runs that were executing and finished are completed, once: complete() returns false');
sql("UPDATE queue_engine.runs SET priority = 1000000 WHERE run_id = $dup");
is(sql(q{SELECT string_agg(run_id::text, ',') FROM queue_engine.dequeue(ARRAY['a'], 1)}), $dup,
	'the queued run that was there twice is claimed ...');
is( sql(qq{SELECT string_agg(status::text, ',') FROM queue_engine.runs WHERE run_id = $dup}) . ' '
	  . sql(qq{SELECT count(*) FROM queue_engine.ready WHERE run_id = $dup}) . ' '
	  . sql(qq{SELECT queue_engine.complete($dup)::text || ',' || queue_engine.complete($dup)::text}),
	'executing 0 true,false', '... once: no copy is left queued, and it completes once');
my $new_run = sql("SELECT queue_engine.enqueue('b', '{}', idempotency_key => '$orphan_key')");
isnt($new_run, $orphan_run, "the orphaned idempotency key makes a new run ($new_run) again");
is(sql("SELECT (queue_engine.get_run($new_run)).status"), 'queued', '... which exists');

# ------------------------------------------------ the worker does it on its own

sql("ALTER SYSTEM SET queue_engine.consistency_interval = '${consistency_ms}ms'");
sql('SELECT pg_reload_conf()');
sleep 1;
# Make sure there are executing runs of 'a' to corrupt again.
sql(q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['a'], 4, lease => '1 hour')});
my $mark = sql('SELECT clock_timestamp()');
($c, $finished, $dup, $orphan_run, $shared, $dup_seg) = corrupt();
ok($c == 1 && $finished =~ /^\d+,\d+$/ && $dup =~ /^\d+$/ && $orphan_run =~ /^\d+$/ && $shared =~ /^\d+$/,
	'corrupted again');
my $t = wait_for(qq{
SELECT string_agg(DISTINCT check_name, ',' ORDER BY check_name)
  FROM queue_engine.consistency_log WHERE logged_at >= '$mark' AND repaired > 0},
	'orphan_idempotency_keys,queue_counts,runs_in_two_places,shared_queue_slots', 15);
ok(defined $t, 'the worker found and repaired every kind of drift on its own');
my $bound_s = ($consistency_ms + 2 * $interval_ms + $slack_ms) / 1000.0;
my $lat = sql(qq{
SELECT round(extract(epoch FROM max(logged_at) - '$mark'::timestamptz)::numeric, 3)
  FROM queue_engine.consistency_log WHERE logged_at >= '$mark' AND repaired > 0});
ok($lat ne '' && $lat <= $bound_s,
	sprintf('... within consistency_interval + two maintenance intervals (took %ss, bound %.3fs)', $lat, $bound_s));
# Give the worker time for another consistency pass: it must have nothing left to find.
usleep(($consistency_ms + 2 * $interval_ms + $slack_ms) * 1000);
is( sql(qq{SELECT count(DISTINCT logged_at) FROM queue_engine.consistency_log WHERE logged_at >= '$mark'}), '1',
	'the worker repaired all of it in one pass (its next pass found nothing)');
is(sql($in_two_places), '', 'no run is left in two places');
is(places("$finished,$dup"), kept($finished, $dup, $dup_seg), 'each kept the copy furthest along');
is(sql("SELECT count(*) FROM queue_engine.idempotency_keys k WHERE NOT EXISTS (SELECT 1 FROM queue_engine.runs r WHERE r.run_id = k.run_id)"),
	'0', 'no orphan idempotency key is left');
($ok, $detail) = stats_match();
ok($ok, "queue_stats matches the runs: $detail");
is(sql(sprintf($check, 'false')), $all_zero, 'check_consistency(false) finds nothing afterwards');
my @errors = grep { /\b(ERROR|FATAL|PANIC):/ && !/administrator command/ } split /\n/,
  slurp_file($node->logfile);
is(join("\n", @errors), '', 'no ERROR/FATAL in the server log');

$node->stop;
done_testing();
