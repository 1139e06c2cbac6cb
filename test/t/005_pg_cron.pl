# 005_pg_cron.pl: without preloading queue_engine, pg_cron runs
# CALL queue_engine.run_maintenance() and it does the background work.
#
# Proves, on a cluster of its own (shared_preload_libraries = 'pg_cron' only,
# queue_engine.maintenance_batch_size = 1000 in postgresql.conf):
#  - no queue_engine background process exists, and nothing maintains the runs
#    on its own (due runs stay as they are);
#  - a job scheduled with cron.schedule('* * * * *', 'CALL queue_engine.run_maintenance()')
#    succeeds (cron.job_run_details) within ~80 seconds (pg_cron 1.4 has minute
#    resolution) and, in that one call: expires 5,000 runs past their ttl in
#    batches committed one by one (>= 5 distinct transaction timestamps), promotes
#    a due delayed run, rescues a stalled run (its stall recorded), and repairs
#    (and logs) a corrupted queue_counts row; check_consistency(false) then finds 0.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.host = '@{[ $node->host ]}'
queue_engine.maintenance_batch_size = 1000
log_line_prefix = '%m [%p] %b %a '
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', @_); }

sql(q{
CREATE EXTENSION pg_cron;
CREATE EXTENSION queue_engine;
SELECT queue_engine.create_queue('work', retry_backoff => '0');
});
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'queue_engine%'}), '0',
	'no queue_engine background process without preloading');

my ($del, $stall) = split /\|/, sql(q{
SELECT queue_engine.enqueue('work', '{"k":"delay"}', delay => '1 hour'),
       queue_engine.enqueue('work', '{"k":"stall"}')});
is(sql(q{SELECT run_id FROM queue_engine.dequeue(ARRAY['work'], 1, lease => '1 hour')}), $stall,
	'stall candidate started');
is( sql(q{SELECT count(*) FROM queue_engine.enqueue_batch('work', array_fill('{"k":"ttl"}'::jsonb, ARRAY[5000]), ttl => '1 hour')}),
	'5000', '5000 runs with a ttl');
sql(qq{
BEGIN;
UPDATE queue_engine.runs SET expires_at = now() - interval '1 second' WHERE payload = '{"k":"ttl"}';
UPDATE queue_engine.runs SET run_at = now() - interval '1 second' WHERE run_id = $del;
UPDATE queue_engine.runs SET lease_expires_at = now() - interval '1 second' WHERE run_id = $stall;
UPDATE queue_engine.queue_counts SET queued = queued + 7;
COMMIT;});
sleep 2;
is( sql(qq{SELECT count(*) FILTER (WHERE status = 'queued' AND expires_at < now())
            || ':' || (SELECT status FROM queue_engine.runs WHERE run_id = $del)
            || ':' || (SELECT status FROM queue_engine.runs WHERE run_id = $stall)
             FROM queue_engine.runs}),
	'5000:delayed:executing', 'nothing maintains the runs on its own');

sql(q{SELECT cron.schedule('qe-maintenance', '* * * * *', 'CALL queue_engine.run_maintenance()')});
my $start = time;
my $status = '';
while (time - $start < 80)
{
	$status = sql(q{SELECT coalesce(string_agg(status, ',' ORDER BY runid), '') FROM cron.job_run_details});
	last if $status =~ /succeeded|failed/;
	sleep 1;
}
note(sprintf('waited %.0fs for pg_cron', time - $start));
like($status, qr/^succeeded/, 'the pg_cron job ran and succeeded');
is(sql(q{SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'}), '0', 'no failed job run');
note(sql(q{SELECT string_agg(status || ': ' || coalesce(return_message, ''), '; ') FROM cron.job_run_details}));

is( sql(q{SELECT count(*) FROM queue_engine.runs WHERE payload = '{"k":"ttl"}' AND status = 'expired'}),
	'5000', 'all 5000 runs past their ttl expired');
cmp_ok(
	sql(q{SELECT count(DISTINCT finished_at) FROM queue_engine.runs WHERE payload = '{"k":"ttl"}'}),
	'>=', 5, '... committed batch by batch (one transaction timestamp per batch of 1000)');
is(sql("SELECT status FROM queue_engine.runs WHERE run_id = $del"), 'queued', 'due delayed run promoted');
is( sql("SELECT status || ':' || (last_error->>'stalled') FROM queue_engine.runs WHERE run_id = $stall"),
	'queued:true', 'stalled run rescued, stall recorded');
is( sql(q{SELECT string_agg(check_name || '=' || found || '/' || repaired, ' ')
            FROM queue_engine.consistency_log}),
	'queue_counts=1/1', 'the corrupted count was repaired and logged');
is( sql(q{SELECT string_agg(check_name || '=' || found, ' ' ORDER BY check_name) FROM queue_engine.check_consistency(false)}),
	'children_waits_satisfied=0 executing_without_lease=0 lease_on_idle_run=0 orphan_idempotency_keys=0 queue_counts=0 ready_key_placement=0 runs_in_two_places=0 runs_of_unknown_queue=0 shared_queue_slots=0',
	'check_consistency(false) finds nothing afterwards');

sql(q{SELECT cron.unschedule('qe-maintenance')});
$node->stop;
done_testing();
