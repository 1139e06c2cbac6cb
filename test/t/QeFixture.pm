# QeFixture.pm: a live engine with runs in every state, and draining it, for
# the TAP tests that carry a database across a boundary (006_dump_restore:
# pg_dump/pg_restore; 007_upgrade: ALTER EXTENSION UPDATE).
#
#   my $f = QeFixture::populate($node, $db);   # queues, tenants, runs in every state
#   QeFixture::state_counts($node, $db)        # 'canceled=2 completed=2 ...'
#   QeFixture::drain($node, $db, $f)           # finish every run the fixture left open
#   QeFixture::consistency($node, $db)         # check_consistency(false), one line
#
# Only the 0.1.0 API is used, so the fixture also builds a 0.1.0 database.
# Time-based work is driven with the engine's own task functions
# (expire_runs, rescue_stalled, promote_delayed); the only waits are for
# moments that must really pass (a 1 ms TTL or lease, a 1 s delay).
package QeFixture;

use strict;
use warnings FATAL => 'all';
use Test::More;
use Time::HiRes qw(time usleep);

our $ALL_ZERO = 'executing_without_lease=0/0 lease_on_idle_run=0/0 '
  . 'orphan_idempotency_keys=0/0 queue_counts=0/0 runs_of_unknown_queue=0/0 shared_queue_slots=0/0';

sub populate
{
	my ($node, $db) = @_;
	my $sql = sub { return scalar $node->safe_psql($db, $_[0]) };

	$sql->(q{
SELECT queue_engine.set_tenant_limit('default', 5);
SELECT queue_engine.create_queue('plain');
SELECT queue_engine.create_queue('limited', tenant => 'acme', concurrency_limit => 2);
SELECT queue_engine.create_queue('keyed', tenant => 'acme', key_concurrency_limit => 1);
SELECT queue_engine.create_queue('other', tenant => 'globex', ttl => '1 hour',
                                 retry_backoff => '0', retry_backoff_max => '0');
SELECT queue_engine.set_tenant_limit('globex', 3);
SELECT queue_engine.create_queue('gone', tenant => 'initech');
});

	# 'gone': a finished run, then the queue is dropped (its row stays).
	$sql->(q{
SELECT queue_engine.enqueue('gone', '{"gone": 1}');
SELECT queue_engine.complete(run_id, attempt => attempt) FROM queue_engine.dequeue(ARRAY['gone']);
SELECT queue_engine.drop_queue('gone');
});

	# completed (one holding an idempotency key), failed, canceled (queued
	# and executing), and a retry that is delayed for a second.
	$sql->(q{
SELECT queue_engine.enqueue('plain', '{"done": 1}', idempotency_key => 'k-done');
SELECT queue_engine.complete(run_id, '{"ok": true}', attempt => attempt) FROM queue_engine.dequeue(ARRAY['plain']);
SELECT queue_engine.enqueue('plain', '{"fails": 1}');
SELECT queue_engine.fail(run_id, '{"message": "boom"}', attempt => attempt, permanent => true)
  FROM queue_engine.dequeue(ARRAY['plain']);
SELECT queue_engine.enqueue('plain', '{"retry": 1}');
SELECT queue_engine.fail(run_id, '{"message": "again"}', attempt => attempt, retry_in => '1 second')
  FROM queue_engine.dequeue(ARRAY['plain']);
SELECT queue_engine.enqueue('plain', '{"cancel": "executing"}');
SELECT queue_engine.cancel(run_id, 'changed my mind') FROM queue_engine.dequeue(ARRAY['plain']);
SELECT queue_engine.cancel(queue_engine.enqueue('plain', '{"cancel": "queued"}'), 'not needed');
});

	# expired: a 1 ms TTL, expired by the task (it never started).
	my $exp = $sql->(q{SELECT queue_engine.enqueue('other', '{"expires": 1}', ttl => '1 millisecond')});
	my $deadline = time + 10;
	usleep(5_000) while $sql->('SELECT queue_engine.expire_runs()') eq '0' && time < $deadline;

	# executing: one plain run, two runs filling 'limited' (its slots), one
	# run per key of 'keyed' with more behind each key, and one 'other' run
	# whose 1 ms lease has passed (stalled, not yet rescued).
	$sql->(q{
SELECT queue_engine.enqueue('plain', jsonb_build_object('i', i),
                            idempotency_key => CASE WHEN i <= 2 THEN 'k-queued-' || i END)
  FROM generate_series(1, 5) i;
SELECT count(*) FROM queue_engine.dequeue(ARRAY['plain'], 1, worker => 'before');
SELECT queue_engine.enqueue('limited', jsonb_build_object('i', i)) FROM generate_series(1, 4) i;
SELECT count(*) FROM queue_engine.dequeue(ARRAY['limited'], 10, worker => 'before');
SELECT queue_engine.enqueue('keyed', jsonb_build_object('i', i), concurrency_key => k)
  FROM unnest(ARRAY['a', 'a', 'b', 'b', 'c']) WITH ORDINALITY AS x(k, i);
SELECT count(*) FROM queue_engine.dequeue(ARRAY['keyed'], 10, worker => 'before');
SELECT queue_engine.enqueue('other', jsonb_build_object('i', i)) FROM generate_series(1, 3) i;
SELECT count(*) FROM queue_engine.dequeue(ARRAY['other'], 1, lease => '1 millisecond', worker => 'stalls');
});

	# delayed: two new runs due in a second (plus the retry above).
	$sql->(q{SELECT queue_engine.enqueue('plain', '{"later": 1}', delay => '1 second') FROM generate_series(1, 2)});

	my %f;
	$f{expired} = $exp;
	$f{executing} = [ map { [ split /\|/ ] } split /\n/,
		$sql->(q{SELECT run_id, attempt, worker FROM queue_engine.runs WHERE status = 'executing' ORDER BY run_id}) ];
	$f{idempotency} = { map { split /\|/ } split /\n/,
		$sql->(q{SELECT idempotency_key, run_id FROM queue_engine.idempotency_keys ORDER BY 1}) };
	return \%f;
}

# How many runs are in each state, e.g. 'canceled=2 completed=2 delayed=3 ...'.
sub state_counts
{
	my ($node, $db) = @_;
	return scalar $node->safe_psql($db, q{
SELECT string_agg(status || '=' || n, ' ' ORDER BY status::text)
  FROM (SELECT status, count(*) AS n FROM queue_engine.runs GROUP BY status) s});
}

sub consistency
{
	my ($node, $db) = @_;
	return scalar $node->safe_psql($db, q{
SELECT string_agg(check_name || '=' || found || '/' || repaired, ' ' ORDER BY check_name)
  FROM queue_engine.check_consistency(false)});
}

# Finish every run: the stalled run is rescued, the other runs dequeued
# before (the fixture's executing runs) are completed with their attempt,
# then everything else is dequeued and completed until no run is open.
# Returns how many runs the drain completed.
sub drain
{
	my ($node, $db, $f, $label) = @_;
	my $sql = sub { return scalar $node->safe_psql($db, $_[0]) };
	my @stalled = grep { $_->[2] eq 'stalls' } @{ $f->{executing} };
	my @held = grep { $_->[2] ne 'stalls' } @{ $f->{executing} };

	is($sql->('SELECT queue_engine.rescue_stalled()'), scalar(@stalled),
		"$label: rescue_stalled() retries the run whose lease passed");
	my @done = map { $sql->("SELECT queue_engine.complete($_->[0], '{\"after\": true}', attempt => $_->[1])") } @held;
	is(join(',', @done), join(',', map { 't' } @held),
		"$label: every run dequeued before completes with its attempt (" . scalar(@held) . ' runs)');
	is( $sql->("SELECT queue_engine.complete($stalled[0][0], attempt => $stalled[0][1])"), 'f',
		"$label: the rescued run's old attempt is fenced off");

	my $completed = scalar @held;
	my $deadline = time + 30;
	while (time < $deadline)
	{
		my $open = $sql->(q{SELECT count(*) FROM queue_engine.runs
		                    WHERE status IN ('queued', 'delayed', 'executing', 'waiting')});
		last if $open eq '0';
		$sql->('SELECT queue_engine.promote_delayed()');
		my $n = $sql->(q{
SELECT count(*) FILTER (WHERE queue_engine.complete(d.run_id, '{"drained": true}', attempt => d.attempt))
  FROM queue_engine.dequeue(NULL, 100, worker => 'drain') d});
		$completed += $n;
		# Nothing startable yet: a delayed run is not due.
		usleep(50_000) if $n == 0;
	}
	is( $sql->(q{SELECT count(*) FROM queue_engine.runs
	             WHERE status IN ('queued', 'delayed', 'executing', 'waiting')}),
		'0', "$label: every open run was dequeued and completed");
	return $completed;
}

1;
