# 013_rotation_crash.pl: a crash in the middle of a segment rotation (run
# storage 0.2, src/rotation.c) loses and doubles nothing.
#
# Proves, on a cluster of its own (preloaded, the worker's maintenance off so
# that every rotation step is the test's own call):
#  1. 3,000 live runs in a ready segment of 20,000 rows, the family switched
#     to the other segment.  An immediate shutdown while one session has
#     carried 500 of them in an open transaction and another has claimed 5
#     in an open transaction: after the restart all 3,000 are queued, once
#     each (same ids), queue_stats matches the rows, check_consistency(false)
#     finds nothing (the shared state, rebuilt empty, agrees with the
#     tables).  Rotation then finishes: every run in the current segment,
#     the other one truncated to no pages.
#  2. The family switched again and rotated to the end (carried, truncated,
#     committed), then an immediate shutdown: after the restart the same
#     3,000 runs, nothing found by check_consistency, and dequeue hands them
#     out in id order (one enqueue_batch: same priority and run_at), each
#     completed exactly once.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('rotation_crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_enabled = off
queue_engine.consistency_interval = '1h'
restart_after_crash = on
log_line_prefix = '%m [%p] %b %a '
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', @_); }

my $check = q{SELECT string_agg(check_name || '=' || found, ' ' ORDER BY check_name)
  FROM queue_engine.check_consistency(false)};
my $all_zero = 'children_waits_satisfied=0 executing_without_lease=0 lease_on_idle_run=0 orphan_idempotency_keys=0 queue_counts=0 ready_key_placement=0 runs_in_two_places=0 runs_of_unknown_queue=0 shared_queue_slots=0';

# The queued runs: count, sum and ends of their ids.
my $queued_ids = q{SELECT count(*) || ':' || sum(run_id) || ':' || min(run_id) || ':' || max(run_id)
  FROM queue_engine.runs WHERE status = 'queued'};
# Rows and pages of each ready segment, and which is current.
my $where = q{SELECT format('current=%s ready_0=%s/%s ready_1=%s/%s', queue_engine.current_segment('ready'),
	(SELECT count(*) FROM queue_engine.ready_0), pg_relation_size('queue_engine.ready_0') / 8192,
	(SELECT count(*) FROM queue_engine.ready_1), pg_relation_size('queue_engine.ready_1') / 8192)};
my $stats = q{SELECT s.queued || '/' || s.executing FROM queue_engine.queue_stats s WHERE s.queue = 'r'};

# enqueue_and_drain($n): 20,000 runs of 100-byte payloads enqueued in one
# batch, then $n thousand runs of queue r dequeued and completed.
sub enqueue_and_drain
{
	my ($n) = @_;
	sql(qq{
SELECT count(*) FROM queue_engine.enqueue_batch('r',
	array_fill(jsonb_build_object('pad', repeat('x', 89)), ARRAY[20000]));
DO \$\$
BEGIN
	FOR i IN 1 .. $n LOOP
		PERFORM queue_engine.complete_batch(ARRAY(SELECT run_id FROM queue_engine.dequeue(ARRAY['r'], 1000)));
	END LOOP;
END \$\$;
});
}

sql(q{CREATE EXTENSION queue_engine; SELECT queue_engine.create_queue('r');});
enqueue_and_drain(17);
my $ids = sql($queued_ids);
like($ids, qr/^3000:/, '3,000 runs left queued of 20,000');
my $before = sql(q{SELECT queue_engine.current_segment('ready')});
is(sql(q{SELECT queue_engine.rotate_segments()}), '0', 'rotate_segments: nothing to carry yet');
is(sql(q{SELECT queue_engine.current_segment('ready')}), 1 - $before,
	'... and the family switched (the segment is large and mostly dead)');

# ------------------------------------------------ 1. crash with a carry and a claim in flight

my $carrier = $node->background_psql('postgres', on_error_stop => 0);
$carrier->query_safe('BEGIN');
is($carrier->query_safe('SELECT queue_engine.rotate_segments(500)'), '500',
	'a session carried 500 runs in an open transaction');
my $claimer = $node->background_psql('postgres', on_error_stop => 0);
$claimer->query_safe('BEGIN');
is($claimer->query_safe(q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['r'], 5)}), '5',
	'another claimed 5 runs in an open transaction');
$node->stop('immediate');
eval { $carrier->quit };
eval { $claimer->quit };
$node->start;

is(sql($queued_ids), $ids, 'after the crash: the same 3,000 runs queued, once each');
is(sql($stats), '3000/0', 'queue_stats: 3,000 queued, none executing');
is(sql($check), $all_zero, 'check_consistency(false) finds nothing');

my $rounds = 0;
while ($rounds++ < 20)
{
	sql(q{SELECT queue_engine.rotate_segments()});
	last if sql($where) =~ /current=(\d) .*ready_\g1=3000\/\d+/ && sql($where) =~ /ready_\d=0\/0/;
}
like(sql($where), qr/^current=(\d) (?:ready_0=3000\/\d+ ready_1=0\/0|ready_0=0\/0 ready_1=3000\/\d+)$/,
	'rotation then finishes: every run in one segment, the other truncated') or diag(sql($where));
my ($cur) = sql($where) =~ /^current=(\d)/;
like(sql($where), qr/ready_$cur=3000/, '... the current one');
is(sql($queued_ids), $ids, '... the same runs');
is(sql($check), $all_zero, '... and check_consistency(false) finds nothing');

# ------------------------------------------------ 2. crash after a whole rotation committed

# Make the current segment large and mostly dead again, switch, carry, truncate.
enqueue_and_drain(20);
$ids = sql($queued_ids);
like($ids, qr/^3000:/, '20,000 more enqueued, 20,000 completed: 3,000 left');
my $was = sql(q{SELECT queue_engine.current_segment('ready')});
$rounds = 0;
while ($rounds++ < 20)
{
	sql(q{SELECT queue_engine.rotate_segments()});
	last if sql(q{SELECT queue_engine.current_segment('ready')}) ne $was
	  && sql($where) =~ /ready_$was=0\/0/;
}
like(sql($where), qr/current=${\(1 - $was)} .*ready_$was=0\/0/,
	'switched, carried and truncated') or diag(sql($where));
$node->stop('immediate');
$node->start;

is(sql($queued_ids), $ids, 'after the crash: the same 3,000 runs');
is(sql($stats), '3000/0', 'queue_stats agrees');
is(sql($check), $all_zero, 'check_consistency(false) finds nothing');
is( sql(q{
CREATE TABLE got (n serial, run_id bigint);
DO $$
BEGIN
	FOR i IN 1 .. 4 LOOP
		WITH d AS (SELECT run_id FROM queue_engine.dequeue(ARRAY['r'], 1000))
		INSERT INTO got (run_id) SELECT run_id FROM d;
	END LOOP;
END $$;
SELECT count(*) = 3000 AND bool_and(ok) FROM (
	SELECT run_id > coalesce(lag(run_id) OVER (ORDER BY n), 0) AS ok FROM got) x}),
	't', 'dequeue hands them out in id order');
is( sql(q{SELECT queue_engine.complete_batch(ARRAY(SELECT run_id FROM got))}),
	'3000', 'each completes');
is( sql(q{SELECT count(*) || '/' || count(DISTINCT run_id) FROM queue_engine.finished_runs WHERE status = 'completed'}),
	'40000/40000', 'every run of both batches completed exactly once');
is(sql($check), $all_zero, 'check_consistency(false) finds nothing at the end');

$node->stop;
done_testing();
