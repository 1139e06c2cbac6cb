# 003_consistency.pl: the consistency monitor finds, repairs and logs drift in
# the engine's own bookkeeping, on demand and from the background worker.
#
# Proves, on a cluster of its own (shared_preload_libraries = 'queue_engine'):
#  - after ordinary traffic (enqueue, delayed, dequeue, complete, fail, cancel,
#    idempotency keys) check_consistency(false) finds nothing and
#    consistency_log stays empty;
#  - four kinds of deliberate corruption (queue_counts drift in two states,
#    executing runs without a lease, a lease on a queued run, an idempotency
#    key whose run was deleted) are each found with the exact count;
#    check_consistency(false) changes nothing; check_consistency() repairs all of
#    them, logs each in consistency_log with a detail, and a second check finds 0;
#  - the repairs work: queue_stats matches the runs, the lease-less runs get
#    rescued by the worker, the orphaned key can be used again;
#  - with consistency_interval = 500ms the worker finds and repairs the same
#    corruption on its own, within consistency_interval plus two maintenance
#    intervals (plus a fixed allowance), measured on the server clock.
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
my $all_zero = 'executing_without_lease=0/0 lease_on_idle_run=0/0 orphan_idempotency_keys=0/0 queue_counts=0/0 runs_in_two_places=0/0 runs_of_unknown_queue=0/0 shared_queue_slots=0/0';

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

# TODO(storage 0.2): two of these drifts cannot be made any more.  An
# executing run is a row of executing, whose lease_expires_at is NOT NULL
# (the runs view's trigger stores now() + lease when given NULL), and a
# queued run is a row of ready, which has no lease (the trigger drops it).
# So CTEs e and l below change nothing, and executing_without_lease and
# lease_on_idle_run find 0.  Adapt them, $want and the worker's expected
# list below to the checks check_consistency makes in 0.2
# (src/consistency.c), e.g. a drift 0.2 can have instead (a run in two
# tables at once?).  Until then the expectations are 0.1's.
sub corrupt
{
	return split /\|/, sql(q{
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
 -- two executing runs lose their lease
 e AS (UPDATE queue_engine.runs SET lease_expires_at = NULL
        WHERE run_id IN (SELECT run_id FROM queue_engine.runs WHERE status = 'executing' AND lease_expires_at IS NOT NULL
                            AND run_id NOT IN (SELECT run_id FROM a_slots)
                          ORDER BY run_id LIMIT 2)
       RETURNING run_id),
 -- a queued run gets a lease
 l AS (UPDATE queue_engine.runs SET lease_expires_at = now() + interval '1 hour'
        WHERE run_id = (SELECT min(run_id) FROM queue_engine.runs WHERE status = 'queued'
                          AND queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'a' AND dropped_at IS NULL))
       RETURNING run_id),
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
}

my ($c, $no_lease, $idle, $orphan_run, $shared) = corrupt();
is($c, 1, 'queue_counts row corrupted');
like($shared, qr/^\d+$/, "executing run $shared shares another run's slot");
like($no_lease, qr/^\d+,\d+$/, "two executing runs lost their lease ($no_lease)");
like($idle, qr/^\d+$/, "queued run $idle got a lease");
like($orphan_run, qr/^\d+$/, "run $orphan_run deleted from under its idempotency key");
my $orphan_key = sql("SELECT idempotency_key FROM queue_engine.idempotency_keys WHERE run_id = $orphan_run");
my $want = 'executing_without_lease=2/%d lease_on_idle_run=1/%d orphan_idempotency_keys=1/%d queue_counts=3/%d runs_in_two_places=0/0 runs_of_unknown_queue=0/0 shared_queue_slots=1/%d';

is(sql(sprintf($check, 'false')), sprintf($want, 0, 0, 0, 0, 0),
	'check_consistency(false) finds each kind of drift, exact counts, repairs nothing');
is(sql(sprintf($check, 'false')), sprintf($want, 0, 0, 0, 0, 0),
	'... and really changed nothing (same findings again)');
my $log_before = sql('SELECT count(*) FROM queue_engine.consistency_log WHERE repaired > 0');
is($log_before, '0', 'no repair logged by check_consistency(false)');

my $t0 = sql('SELECT clock_timestamp()');
is(sql(sprintf($check, 'true')), sprintf($want, 2, 1, 1, 3, 1),
	'check_consistency() finds and repairs all of it');
is(sql(sprintf($check, 'false')), $all_zero, 'a second check finds nothing');
is( sql(qq{
SELECT string_agg(check_name || '=' || found || '/' || repaired || ':' || (detail IS NOT NULL), ' ' ORDER BY check_name)
  FROM queue_engine.consistency_log WHERE logged_at >= '$t0' AND repaired > 0}),
	'executing_without_lease=2/2:true lease_on_idle_run=1/1:true orphan_idempotency_keys=1/1:true queue_counts=3/3:true shared_queue_slots=1/1:true',
	'each repair is logged in consistency_log with its detail');
like( sql(qq{SELECT detail::text FROM queue_engine.consistency_log
             WHERE logged_at >= '$t0' AND check_name = 'orphan_idempotency_keys'}),
	qr/"run_id": $orphan_run\b/, 'the orphan key detail names the deleted run');

($ok, $detail) = stats_match();
ok($ok, "after repair queue_stats matches the runs: $detail");
is(sql("SELECT lease_expires_at IS NULL FROM queue_engine.runs WHERE run_id = $idle"), 't',
	'stray lease on the queued run cleared');
is(sql("SELECT queue_slot IS NULL OR status <> 'executing' FROM queue_engine.runs WHERE run_id = $shared"), 't',
	'the run that shared a slot holds none now');
ok( defined wait_for(
		"SELECT string_agg(status::text || (lease_expires_at IS NULL), ',') FROM queue_engine.runs WHERE run_id IN ($no_lease)",
		'queuedtrue,queuedtrue', 10),
	'runs that had lost their lease were given an expired one, and the worker rescued them');
my $new_run = sql("SELECT queue_engine.enqueue('b', '{}', idempotency_key => '$orphan_key')");
isnt($new_run, $orphan_run, "the orphaned idempotency key makes a new run ($new_run) again");
is(sql("SELECT (queue_engine.get_run($new_run)).status"), 'queued', '... which exists');

# ------------------------------------------------ the worker does it on its own

sql("ALTER SYSTEM SET queue_engine.consistency_interval = '${consistency_ms}ms'");
sql('SELECT pg_reload_conf()');
sleep 1;
# Make sure there are executing runs with leases to corrupt again.
sql(q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['a'], 2, lease => '1 hour')});
my $mark = sql('SELECT clock_timestamp()');
($c, $no_lease, $idle, $orphan_run, $shared) = corrupt();
ok($c == 1 && $no_lease =~ /,/ && $idle =~ /^\d+$/ && $orphan_run =~ /^\d+$/ && $shared =~ /^\d+$/,
	'corrupted again');
my $t = wait_for(qq{
SELECT string_agg(DISTINCT check_name, ',' ORDER BY check_name)
  FROM queue_engine.consistency_log WHERE logged_at >= '$mark' AND repaired > 0},
	'executing_without_lease,lease_on_idle_run,orphan_idempotency_keys,queue_counts,shared_queue_slots', 15);
ok(defined $t, 'the worker found and repaired every kind of drift on its own');
my $bound_s = ($consistency_ms + 2 * $interval_ms + $slack_ms) / 1000.0;
my $lat = sql(qq{
SELECT round(extract(epoch FROM max(logged_at) - '$mark'::timestamptz)::numeric, 3)
  FROM queue_engine.consistency_log WHERE logged_at >= '$mark' AND repaired > 0});
ok($lat ne '' && $lat <= $bound_s,
	sprintf('... within consistency_interval + two maintenance intervals (took %ss, bound %.3fs)', $lat, $bound_s));
ok(defined wait_for("SELECT count(*) FROM queue_engine.runs WHERE status = 'executing' AND lease_expires_at IS NULL", '0', 5),
	'no executing run is left without a lease');
is(sql("SELECT count(*) FROM queue_engine.runs WHERE status <> 'executing' AND lease_expires_at IS NOT NULL"), '0',
	'no idle run is left with a lease');
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
