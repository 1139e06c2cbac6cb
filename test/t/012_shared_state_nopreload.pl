# 012_shared_state_nopreload.pl: the shared state without
# shared_preload_libraries (src/shmem.c: a pinned dynamic shared memory
# segment that the first backend needing it creates).
#
# Proves, on a cluster of its own without preloading:
#  1. The first call that needs the shared state creates it once for the
#     server (the 4-byte anchor in pg_shmem_allocations); backends started
#     later attach to the same segment: a ready hint one backend set spares
#     the next backend's claim the walk over claimed entries that a held
#     snapshot keeps (the claim reads few index entries), which it could not
#     without the shared hint.
#  2. A crash (a backend SIGKILLed in the middle of a transaction that
#     dequeued runs) resets the main shared memory; afterwards the anchor is
#     gone until a backend needs it again, no hint of the old server
#     survives (the runs the dead transaction held are started again, in
#     order), the counts are right (queue_stats against the runs,
#     check_consistency finds nothing, the consistency log is empty), and
#     the count-delta segments fold as before.
#  3. The consistency clock (when run_maintenance last checked, per
#     database) is shared too: with consistency_interval = 1h, a new
#     session's run_maintenance right after another's does not check (drift
#     made meanwhile stays, check_consistency still finds it); after a
#     restart the first run_maintenance checks and repairs it.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use QeFixture;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->append_conf('postgresql.conf', q{
restart_after_crash = on
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', $_[0]); }

my $anchor = q{SELECT count(*) FROM pg_shmem_allocations
                WHERE name = 'queue_engine shared state anchor'};

sql('CREATE EXTENSION queue_engine');
is(sql($anchor), '0', 'before any call needs it, there is no shared state');
sql(q{SELECT queue_engine.create_queue('hq')});
sql(q{SELECT count(*) FROM queue_engine.enqueue_batch('hq',
        (SELECT array_agg(jsonb_build_object('n', g) ORDER BY g) FROM generate_series(1, 600) g))});
is(sql($anchor), '1', 'an enqueue created it: the anchor is in pg_shmem_allocations');

# ------------------------------------------------ 1. one segment, shared by every backend

# A held snapshot keeps the entries of claimed runs in the ready order
# indexes (ready_0_order, ready_1_order).
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$holder->query_safe('SELECT count(*) FROM queue_engine.queues');

# 500 claims and completions, each its own transaction and backend.
for my $i (1 .. 5)
{
	sql(q{SELECT count(queue_engine.complete(run_id, attempt => attempt))
	        FROM queue_engine.dequeue(ARRAY['hq'], 100)});
}
# Another new backend: with the shared hint its claim starts past the
# entries claimed before the last walk (the last batch's 100 entries may
# still lie after the hint); with no hint it would read all 500.
my $reads = sql(q{
SELECT pg_stat_get_xact_tuples_returned('queue_engine.ready_0_order'::regclass)
       + pg_stat_get_xact_tuples_returned('queue_engine.ready_1_order'::regclass)
  FROM (SELECT payload->>'n' AS n FROM queue_engine.dequeue(ARRAY['hq'])) d
 WHERE d.n = '501'});
ok(defined $reads && $reads ne '' && $reads < 250,
	"a new backend's claim starts at the shared hint, not before 500 claimed entries (read $reads entries)");
is(sql($anchor), '1', 'still one anchor: every backend attached to the same segment');
$holder->query_safe('COMMIT');
$holder->quit;

# ------------------------------------------------ 2. a crash resets it

my $victim = $node->background_psql('postgres', on_error_stop => 0);
my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');
$victim->query_safe('BEGIN');
is($victim->query_safe(q{SELECT string_agg(payload->>'n', ',' ORDER BY run_id)
                           FROM queue_engine.dequeue(ARRAY['hq'], 3, lease => '1 hour')}),
	'502,503,504', 'a session dequeued three runs in an open transaction');
kill 'KILL', $victim_pid;
$victim->{run}->finish;
ok( $node->poll_query_until('postgres', 'SELECT 1', '1'),
	'the server restarted after the crash');

is(sql($anchor), '0', 'after the crash the anchor is gone until a backend needs it');
is(sql(q{SELECT string_agg(payload->>'n', ',' ORDER BY run_id)
           FROM queue_engine.dequeue(ARRAY['hq'], 3)}),
	'502,503,504', 'the runs the dead transaction held start again, in order (no stale hint)');
is(sql($anchor), '1', 'the dequeue made a new segment');
is(sql(q{SELECT count(queue_engine.complete(run_id)) FROM queue_engine.runs
          WHERE status = 'executing'}), '4', 'they complete, and so does run 501 that part 1 started');

is(sql(q{
SELECT s.queued || '/' || s.executing || '/' || s.delayed
  FROM queue_engine.queue_stats s WHERE s.queue = 'hq'}),
	sql(q{
SELECT count(*) FILTER (WHERE status = 'queued') || '/' || count(*) FILTER (WHERE status = 'executing')
       || '/' || count(*) FILTER (WHERE status = 'delayed')
  FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id) WHERE q.queue = 'hq'}),
	'queue_stats matches the runs');
sql('CALL queue_engine.run_maintenance()');
is(sql('SELECT count(*) FROM queue_engine.queue_count_deltas'), '0',
	'maintenance folds every count delta after the restart');
is(QeFixture::consistency($node, 'postgres'), $QeFixture::ALL_ZERO,
	'check_consistency finds nothing');
is(sql('SELECT count(*) FROM queue_engine.consistency_log'), '0', 'the consistency log is empty');
is(sql(q{SELECT count(*) FROM queue_engine.runs WHERE status = 'queued'}), '96',
	'the rest of the backlog is still queued');

# ------------------------------------------------ 3. the consistency clock

$node->append_conf('postgresql.conf', "queue_engine.consistency_interval = '1h'");
$node->reload;
sql(q{UPDATE queue_engine.queue_counts SET queued = queued + 5
       WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'hq')});
sql('CALL queue_engine.run_maintenance()');
is(sql('SELECT count(*) FROM queue_engine.consistency_log'), '0',
	"within consistency_interval another session's run_maintenance does not check again");
is(sql(q{SELECT found FROM queue_engine.check_consistency(false) WHERE check_name = 'queue_counts'}), '1',
	'... so the drift made meanwhile is still there, and check_consistency finds it');
$node->restart;
sql('CALL queue_engine.run_maintenance()');
is(sql(q{SELECT string_agg(check_name || '=' || found || '/' || repaired, ' ' ORDER BY logged_at)
           FROM queue_engine.consistency_log}), 'queue_counts=1/0 queue_counts=1/1',
	'after a restart the first run_maintenance checks, and repairs and logs it (after the report of check_consistency(false))');

$node->stop;
done_testing();
