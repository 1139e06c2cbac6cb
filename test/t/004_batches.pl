# 004_batches.pl: a large backlog is worked off by the background worker in
# short batched transactions.
#
# Proves, on a cluster of its own (shared_preload_libraries = 'queue_engine',
# maintenance_batch_size = 1000):
#  - 100,000 queued runs whose ttl passes at once, and 20,000 delayed runs that
#    become due at once, are all expired / promoted by the worker alone;
#  - meanwhile (sampled from pg_stat_activity every ~50ms) no queue_engine
#    backend ever had a transaction open for more than 2 seconds, and the
#    sampling did catch the worker inside its transactions (the check is not vacuous);
#  - the expiries were committed in batches of at most 1000: at least 100
#    distinct transaction timestamps (finished_at = now() of the batch), none
#    shared by more than 1000 runs;
#  - a maintenance worker terminated mid-backlog does not stop the work: the
#    launcher (same pid) starts the next pass and the backlog still drains;
#  - at the end queue_stats shows 0 queued / 0 delayed in the expiring queue and
#    20,000 queued / 0 delayed in the promoted one, and check_consistency(false)
#    finds nothing.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $n_expire = 100_000;
my $n_promote = 20_000;
my $batch = 1000;
my $max_xact_s = 2.0;

my $node = PostgreSQL::Test::Cluster->new('batches');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_interval = 100ms
queue_engine.maintenance_batch_size = $batch
queue_engine.consistency_interval = '1h'
log_line_prefix = '%m [%p] %b %a '
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', @_); }

sql(q{
CREATE EXTENSION queue_engine;
SELECT queue_engine.create_queue('e');
SELECT queue_engine.create_queue('p');
});
is( sql(qq{SELECT count(*) FROM queue_engine.enqueue_batch('e', array_fill('{}'::jsonb, ARRAY[$n_expire]), ttl => '1 hour')}),
	$n_expire, "$n_expire runs with a 1 hour ttl enqueued");
is( sql(qq{SELECT count(*) FROM queue_engine.enqueue_batch('p', array_fill('{}'::jsonb, ARRAY[$n_promote]), delay => '1 hour')}),
	$n_promote, "$n_promote delayed runs enqueued");
sleep 1;
is( sql(q{SELECT string_agg(status || '=' || n, ' ' ORDER BY status) FROM
	(SELECT status, count(*) n FROM queue_engine.runs GROUP BY status) s}),
	"delayed=$n_promote queued=$n_expire", 'nothing is due yet, nothing happens');

my $launcher = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'queue_engine launcher'});
like($launcher, qr/^\d+$/, 'launcher running');

# All due at once, in one statement each.
sql(qq{
BEGIN;
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE status = 'queued';
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE status = 'delayed';
COMMIT;});

my $monitor = $node->background_psql('postgres');
my $sample = q{
SELECT coalesce(round(max(extract(epoch FROM clock_timestamp() - xact_start))::numeric, 3), -1),
       count(*) FILTER (WHERE xact_start IS NOT NULL),
       coalesce(string_agg(pid::text, ',') FILTER (WHERE backend_type = 'queue_engine maintenance'
                                                     AND query LIKE 'queue_engine: expire_runs%'), '')
  FROM pg_stat_activity WHERE backend_type LIKE 'queue_engine%'};
my $remaining = q{SELECT count(*) FROM queue_engine.runs
  WHERE status = 'delayed' OR (status = 'queued' AND expires_at IS NOT NULL)};

my ($max_age, $caught, $samples, $killed, $left) = (0, 0, 0, undef, -1);
my $start = time;
while (time - $start < 120)
{
	my ($age, $in_xact, $expiring) = split /\|/, $monitor->query_safe($sample);
	$samples++;
	$max_age = $age if $age > $max_age;
	$caught++ if $in_xact > 0;

	# Once the worker is well into the backlog, terminate it mid-pass.
	if (!defined $killed && $expiring =~ /^(\d+)/)
	{
		my $done = sql(q{SELECT count(*) FROM queue_engine.runs WHERE status = 'expired'});
		if ($done >= $n_expire / 5)
		{
			$killed = $1;
			sql("SELECT pg_terminate_backend($killed)");
			note("terminated maintenance worker $killed after $done expiries");
		}
	}
	if ($samples % 10 == 0)
	{
		$left = $monitor->query_safe($remaining);
		last if $left == 0;
	}
	usleep(50_000);
}
$monitor->quit;
my $took = time - $start;
note(sprintf('backlog drained in %.1fs, %d samples, worker caught in a transaction %d times, longest transaction %.3fs',
		$took, $samples, $caught, $max_age));

is($left, 0, 'the worker drained the whole backlog');
cmp_ok($max_age, '<', $max_xact_s,
	"no queue_engine backend held a transaction open longer than ${max_xact_s}s (longest ${max_age}s)");
cmp_ok($caught, '>=', 3, "the sampling caught the worker inside its transactions ($caught times)");
ok(defined $killed, 'a maintenance worker was terminated mid-backlog');
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'queue_engine launcher'}), $launcher,
	'the launcher survived it (same pid)');

is( sql(q{SELECT string_agg(q.queue || ':' || r.status || '=' || r.n, ' ' ORDER BY q.queue, r.status)
  FROM (SELECT queue_id, status, count(*) n FROM queue_engine.runs GROUP BY 1, 2) r
  JOIN queue_engine.queues q USING (queue_id)}),
	"e:expired=$n_expire p:queued=$n_promote",
	"all $n_expire expired, all $n_promote promoted");
my ($batches, $largest) = split /\|/, sql(q{
SELECT count(*), max(n) FROM (SELECT finished_at, count(*) n FROM queue_engine.runs
                               WHERE status = 'expired' GROUP BY finished_at) b});
cmp_ok($batches, '>=', $n_expire / $batch, "expiries committed in $batches transactions");
cmp_ok($largest, '<=', $batch, "none larger than maintenance_batch_size ($largest)");
is(sql(q{SELECT count(*) FROM queue_engine.runs WHERE status = 'expired' AND finished_at IS NULL}), '0',
	'every expired run has finished_at');

# Counts: let the worker fold what is left, then compare.
ok( $node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM queue_engine.queue_count_deltas'),
	'worker folded the count deltas');
is( sql(q{SELECT string_agg(queue || ':' || queued || '/' || delayed || '/' || executing, ' ' ORDER BY queue)
            FROM queue_engine.queue_stats}),
	"e:0/0/0 p:$n_promote/0/0", 'queue_stats: 0 queued in e, every promoted run counted as queued in p');
is( sql(q{SELECT string_agg(check_name || '=' || found, ' ' ORDER BY check_name) FROM queue_engine.check_consistency(false)}),
	'children_waits_satisfied=0 executing_without_lease=0 lease_on_idle_run=0 orphan_idempotency_keys=0 queue_counts=0 ready_key_placement=0 runs_in_two_places=0 runs_of_unknown_queue=0 shared_queue_slots=0',
	'check_consistency(false) finds nothing');
my @errors = grep { /\b(ERROR|PANIC|WARNING):/ } split /\n/, slurp_file($node->logfile);
is(join("\n", @errors), '', 'no ERROR/WARNING in the server log');

$node->stop;
done_testing();
