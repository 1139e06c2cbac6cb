# 014_waits_crash.pl: waits, their timeouts, events and cancel_on rules
# survive an immediate shutdown, and the worker wakes what is due after it.
#
# Proves, on a cluster of its own (shared_preload_libraries = 'queue_engine',
# maintenance_interval 200ms):
#  - runs waiting for events (with match, condition, no timeout, a long
#    timeout; one in another tenant), sleeping (until tomorrow), waiting for
#    their children, one with a cancel_on rule, and runs with short sleeps and
#    event timeouts (some due while the server is down, some due a few
#    seconds after it is back) are all 'waiting' before `pg_ctl -m immediate
#    stop` and are still 'waiting' after the restart, with the same
#    waiting_for, one waiting_runs row each, and queue_stats.waiting counting
#    them (the ones due while down may already have been woken by the
#    restarted worker: never before their moment);
#  - a wait_for_event() left uncommitted at the crash is gone: its run is still
#    executing attempt 1 and completes normally;
#  - a sleeping run holds no slot after the restart either: its limit-1
#    queue starts its other run;
#  - the worker alone (no wake_waits() or run_maintenance() call here) wakes the
#    sleeps and timeouts: never before they are due (their run_at, the wake
#    time, is at or after the due moment), and within two maintenance
#    intervals plus QE_TAP_SLACK_MS of being due, or of the restarted
#    launcher starting for those due while the server was down;
#  - after the restart an event wakes exactly its runs (match, condition and
#    tenant still applied), a cancel_on rule still cancels, a child's
#    completion wakes its parent, an event committed before the crash is
#    found by a wait with lookback, and its idempotency key still holds;
#  - every woken run resumes with the same attempt and the right resume, and
#    completes; check_consistency(false) finds nothing before and after, and
#    the worker repaired nothing (consistency_log empty).
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $interval_ms = 200;
my $slack_ms = $ENV{QE_TAP_SLACK_MS} // 400;
my $bound_s = (2 * $interval_ms + $slack_ms) / 1000.0;

# Durations of the short waits: due while the server is down, and due a few
# seconds after it is back.
my $down_s = 4;
my $soon_s = 11;

my $node = PostgreSQL::Test::Cluster->new('waits_crash');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_interval = ${interval_ms}ms
queue_engine.consistency_interval = '1h'
restart_after_crash = on
log_line_prefix = '%m [%p] %b %a '
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', @_); }

# Every check's findings, one line ('' when nothing found).
my $findings = q{SELECT coalesce(string_agg(check_name || '=' || found, ' ' ORDER BY check_name), '')
  FROM queue_engine.check_consistency(false) WHERE found <> 0};

sub launcher_start
{
	my $deadline = time + 60;
	while (time < $deadline)
	{
		my ($rc, $out) = $node->psql('postgres',
			q{SELECT backend_start FROM pg_stat_activity WHERE backend_type = 'queue_engine launcher'});
		return $out if $rc == 0 && $out ne '';
		usleep(100_000);
	}
	return undef;
}

# Calls a function for the run named $name (payload name), with its run_id
# and attempt; returns the result.
sub for_run
{
	my ($name, $call) = @_;
	return sql(qq{SELECT queue_engine.$call FROM queue_engine.runs WHERE payload->>'name' = '$name'});
}

sql(q{
CREATE EXTENSION queue_engine;
SELECT queue_engine.create_queue('w', lease => '1 hour');
SELECT queue_engine.create_queue('kids', lease => '1 hour');
SELECT queue_engine.create_queue('t2w', tenant => 't2', lease => '1 hour');
SELECT queue_engine.create_queue('one', concurrency_limit => 1, lease => '1 hour');
-- what each waiting run waited for before the crash
CREATE TABLE expect (name text PRIMARY KEY, run_id bigint NOT NULL, kind text, due timestamptz,
                     waiting_for jsonb NOT NULL);
CREATE TABLE early (event_id bigint);
});

ok(defined launcher_start(), 'launcher running');

# --------------------------------------------------------------- the waits

sql(q{
SELECT queue_engine.enqueue('w', jsonb_build_object('name', n),
		cancel_on => CASE WHEN n = 'stoppable' THEN '[{"event": "stop"}]'::jsonb END)
  FROM unnest(ARRAY['ev1', 'ev2', 'ev_long', 'sl_until', 'parent', 'stoppable', 'uncommitted',
                    'lb', 'to_down', 'sl_down', 'to_soon', 'sl_soon']) n;
SELECT queue_engine.enqueue('t2w', '{"name": "ev_t2"}');
SELECT queue_engine.enqueue('one', jsonb_build_object('name', n)) FROM unnest(ARRAY['one_a', 'one_b']) n;
});
is( sql(q{SELECT string_agg(payload->>'name', ',') FROM queue_engine.dequeue(ARRAY['one'], 5)}),
	'one_a', 'the limit-1 queue starts one run');
is(sql(q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['w', 't2w'], 20)}), '13', 'all 13 runs dequeued');
is( sql(q{SELECT string_agg(DISTINCT attempt::text, ',') FROM queue_engine.runs WHERE status = 'executing'}), '1',
	'each executing attempt 1');

my %st;
$st{ev1} = for_run('ev1', q{wait_for_event(run_id, attempt, 'order.paid', match => '{"order": 1}')});
$st{ev2} = for_run('ev2',
	q{wait_for_event(run_id, attempt, 'order.paid', match => '{"order": 2}', condition => '$.amount > 100')});
$st{ev_long} = for_run('ev_long', q{wait_for_event(run_id, attempt, 'never', timeout => '1 hour')});
$st{sl_until} = for_run('sl_until', q{sleep(run_id, attempt, until => now() + interval '1 day')});
$st{one_a} = for_run('one_a', q{sleep(run_id, attempt, until => now() + interval '1 day')});
$st{stoppable} = for_run('stoppable', q{wait_for_event(run_id, attempt, 'go')});
$st{ev_t2} = for_run('ev_t2', q{wait_for_event(run_id, attempt, 'order.paid', match => '{"order": 1}')});
my $child = sql(q{SELECT queue_engine.enqueue('kids', '{"name": "child"}', parent_run_id => run_id)
                    FROM queue_engine.runs WHERE payload->>'name' = 'parent'});
$st{parent} = for_run('parent', q{wait_for_children(run_id, attempt)});
is(join(',', map { "$_=$st{$_}" } sort keys %st),
	'ev1=waiting,ev2=waiting,ev_long=waiting,ev_t2=waiting,one_a=waiting,parent=waiting,sl_until=waiting,stoppable=waiting',
	'every wait function returned waiting');

# An event committed before the crash (a wait with lookback finds it after).
sql(q{INSERT INTO early SELECT event_id FROM queue_engine.send_event('early', '{"x": 1}', idempotency_key => 'k1')});

is(sql($findings), '', 'before the crash check_consistency(false) finds nothing');
is( sql(q{SELECT sum(waiting) || '/' || sum(executing) FROM queue_engine.queue_stats}),
	'8/6', 'queue_stats: 8 waiting, 6 executing');

# The short waits, last, then a wait left uncommitted (its transaction open at
# the crash), then at once the record of everything and the crash.
my $t0 = time;
$st{to_down} = for_run('to_down', qq{wait_for_event(run_id, attempt, 'never', timeout => '$down_s seconds')});
$st{sl_down} = for_run('sl_down', qq{sleep(run_id, attempt, duration => '$down_s seconds')});
$st{to_soon} = for_run('to_soon', qq{wait_for_event(run_id, attempt, 'never', timeout => '$soon_s seconds')});
$st{sl_soon} = for_run('sl_soon', qq{sleep(run_id, attempt, duration => '$soon_s seconds')});
# A wait left uncommitted at the crash.
my $open = $node->background_psql('postgres', on_error_stop => 0);
$open->query_safe('BEGIN');
is( $open->query_safe(q{SELECT queue_engine.wait_for_event(run_id, attempt, 'never')
                          FROM queue_engine.runs WHERE payload->>'name' = 'uncommitted'}),
	'waiting', 'an uncommitted wait_for_event in an open transaction');

sql(q{
INSERT INTO expect
SELECT r.payload->>'name', r.run_id, g.waiting_for->>'kind',
       coalesce((g.waiting_for->>'timeout_at')::timestamptz, (g.waiting_for->>'until')::timestamptz),
       g.waiting_for
  FROM queue_engine.runs r, queue_engine.get_run(r.run_id) g
 WHERE r.status = 'waiting'});
my $n_waits = sql('SELECT count(*) FROM expect');
my $n_rows = sql('SELECT count(*) FROM queue_engine.waiting_runs');
my $stats_waiting = sql('SELECT sum(waiting) FROM queue_engine.queue_stats');

$node->stop('immediate');
eval { $open->quit };
my $down_for = time - $t0;

is(join(',', map { "$_=$st{$_}" } qw(to_down sl_down to_soon sl_soon)),
	'to_down=waiting,sl_down=waiting,to_soon=waiting,sl_soon=waiting', 'the short waits returned waiting');
is("$n_waits/$n_rows/$stats_waiting", '12/12/12',
	'before the crash: 12 runs waiting, one waiting_runs row each, queue_stats.waiting 12');
cmp_ok($down_for, '<', $down_s, sprintf('the server went down %.2fs after the short waits began', $down_for));

# Stay down until the $down_s waits are due.
usleep(int(($down_s + 1 - (time - $t0)) * 1e6)) if time - $t0 < $down_s + 1;
$node->start;

# --------------------------------------------------------------- after restart

# What was not due yet is exactly as before; what fell due while down is
# still waiting as before, or was woken by the worker after the restart.
is( sql(q{
SELECT coalesce(string_agg(e.name || ':' || g.status || ':' || coalesce(g.waiting_for::text, '-'), ' '
                           ORDER BY e.name), '')
  FROM expect e, queue_engine.get_run(e.run_id) g
 WHERE NOT ((g.status = 'waiting' AND g.waiting_for = e.waiting_for)
            OR (e.due <= now() AND g.status = 'queued'))}),
	'', 'every wait survived: waiting with the same waiting_for (or due, and woken)');
is( sql(q{SELECT string_agg(e.name, ',' ORDER BY e.name) FROM expect e, queue_engine.get_run(e.run_id) g
           WHERE g.status = 'waiting' AND e.due IS NOT NULL AND e.due > now()}),
	'ev_long,one_a,sl_soon,sl_until,to_soon', 'the timed waits not yet due are still waiting');
is( sql(q{SELECT (SELECT count(*) FROM queue_engine.waiting_runs) = (SELECT count(*) FROM queue_engine.runs WHERE status = 'waiting')
             AND (SELECT sum(waiting) FROM queue_engine.queue_stats) = (SELECT count(*) FROM queue_engine.runs WHERE status = 'waiting')}),
	't', 'one waiting_runs row per waiting run, queue_stats.waiting counts them');
is( sql(q{SELECT g.status || ':' || g.attempt || ':' || (g.waiting_for IS NULL) || ':' || (g.lease_expires_at > now())
            FROM queue_engine.runs r, queue_engine.get_run(r.run_id) g WHERE r.payload->>'name' = 'uncommitted'}),
	'executing:1:true:true', 'the uncommitted wait is gone: the run is executing attempt 1, leased');
is(sql($findings), '', 'after the restart check_consistency(false) finds nothing');
is( sql(q{SELECT string_agg(payload->>'name', ',') FROM queue_engine.dequeue(ARRAY['one'], 5)}),
	'one_b', "the sleeping run holds no slot: the limit-1 queue starts its other run");
is( sql(q{SELECT executing || '/' || waiting FROM queue_engine.queue_stats WHERE queue = 'one'}),
	'1/1', '... and counts 1 executing, 1 waiting');

my $launcher = launcher_start();
ok(defined $launcher, 'the launcher is back');

# Events after the restart: match, condition and tenant still apply.
is(sql(q{SELECT woken || '/' || canceled FROM queue_engine.send_event('order.paid', '{"order": 2, "amount": 50}')}),
	'0/0', 'order 2 with amount 50: the condition is false, nothing woken');
is(sql(q{SELECT woken || '/' || canceled FROM queue_engine.send_event('order.paid', '{"order": 1, "amount": 50}')}),
	'1/0', "order 1 in tenant default: wakes ev1 only (not t2's run)");
is(sql(q{SELECT woken || '/' || canceled FROM queue_engine.send_event('order.paid', '{"order": 2, "amount": 150}')}),
	'1/0', 'order 2 with amount 150 wakes ev2');
is( sql(q{SELECT woken || '/' || canceled
            FROM queue_engine.send_event('order.paid', '{"order": 1}', tenant => 't2')}),
	'1/0', "order 1 in tenant t2 wakes t2's run");
is(sql(q{SELECT woken || '/' || canceled FROM queue_engine.send_event('stop', '{}')}),
	'0/1', 'the cancel_on rule still cancels its waiting run');
is( sql(q{SELECT r.status || ':' || (r.last_error->>'reason') FROM queue_engine.runs r WHERE payload->>'name' = 'stoppable'}),
	'canceled:event stop', '... which is canceled by event stop');
# The child completes: its parent is woken.
is( sql(q{SELECT queue_engine.complete(run_id, '{"child": true}', attempt => attempt)
            FROM queue_engine.dequeue(ARRAY['kids'], 1)}),
	't', 'the child completes');
# The event from before the crash: found by a wait with lookback; its idempotency key holds.
is(for_run('lb', q{wait_for_event(run_id, attempt, 'early', lookback => '1 hour')}),
	'queued', 'a wait with lookback finds the event committed before the crash at once');
is( sql(q{SELECT (event_id = (SELECT event_id FROM early)) || '/' || woken || '/' || canceled
            FROM queue_engine.send_event('early', '{"x": 2}', idempotency_key => 'k1')}),
	'true/0/0', 'its idempotency key still returns the first event_id, doing nothing');

# The worker alone wakes the sleeps and timeouts.
my $deadline = time + $soon_s + 30;
my $left;
while (time < $deadline)
{
	$left = sql(q{SELECT coalesce(string_agg(e.name, ',' ORDER BY e.name), '')
                    FROM expect e JOIN queue_engine.runs r USING (run_id)
                   WHERE e.name IN ('to_down', 'sl_down', 'to_soon', 'sl_soon') AND r.status = 'waiting'});
	last if $left eq '';
	usleep(50_000);
}
is($left, '', 'the worker woke every short sleep and timeout');
my $timing = sql(qq{
SELECT string_agg(format('%s:%s:%s', e.name,
         CASE WHEN r.run_at < e.due THEN 'early'
              WHEN r.run_at <= greatest(e.due, '$launcher'::timestamptz) + $bound_s * interval '1 second' THEN 'ok'
              ELSE 'late' END,
         round(extract(epoch FROM r.run_at - greatest(e.due, '$launcher'::timestamptz))::numeric, 3)),
         ' ' ORDER BY e.name)
  FROM expect e JOIN queue_engine.runs r USING (run_id)
 WHERE e.name IN ('to_down', 'sl_down', 'to_soon', 'sl_soon')});
note("wake time after max(due, launcher start), seconds: $timing");
my %lat = map { my ($n, $v) = split /:/; ($n => $v) } split / /, $timing;
for my $n (qw(sl_down to_down))
{
	is($lat{$n}, 'ok', sprintf('%s (due while down) woken within %.2fs of the launcher starting, not before due', $n, $bound_s));
}
for my $n (qw(sl_soon to_soon))
{
	is($lat{$n}, 'ok', sprintf('%s woken within %.2fs of being due, not before', $n, $bound_s));
}
is( sql(q{SELECT string_agg(e.name, ',' ORDER BY e.name) FROM expect e JOIN queue_engine.runs r USING (run_id)
           WHERE r.status = 'waiting'}),
	'ev_long,one_a,sl_until', 'only the 1-hour timeout and the 1-day sleeps still wait');

# Every woken run resumes with the same attempt and the right resume, then completes.
# (an event's event_id is the stored event's, with that data; lb's is the one from before the crash)
my $resumed = sql(q{
WITH d AS (SELECT * FROM queue_engine.dequeue(ARRAY['w', 't2w'], 20))
SELECT string_agg(format('%s:%s:%s%s', d.payload->>'name', d.attempt, d.resume - 'event_id',
                         CASE WHEN d.resume->>'kind' = 'event' THEN
                           CASE WHEN EXISTS (SELECT 1 FROM queue_engine.events ev
                                              WHERE ev.event_id = (d.resume->>'event_id')::bigint
                                                AND ev.data = d.resume->'data')
                                     AND (d.payload->>'name' <> 'lb'
                                          OR (d.resume->>'event_id')::bigint = (SELECT event_id FROM early))
                                THEN ':id ok' ELSE ':id WRONG' END
                         ELSE '' END),
                  E'\n' ORDER BY d.payload->>'name')
  FROM d});
is($resumed, join("\n",
	'ev1:1:{"data": {"order": 1, "amount": 50}, "kind": "event", "event": "order.paid"}:id ok',
	'ev2:1:{"data": {"order": 2, "amount": 150}, "kind": "event", "event": "order.paid"}:id ok',
	'ev_t2:1:{"data": {"order": 1}, "kind": "event", "event": "order.paid"}:id ok',
	'lb:1:{"data": {"x": 1}, "kind": "event", "event": "early"}:id ok',
	'parent:1:{"kind": "children", "failed": 0, "expired": 0, "canceled": 0, "completed": 1}',
	'sl_down:1:{"kind": "sleep"}',
	'sl_soon:1:{"kind": "sleep"}',
	'to_down:1:{"kind": "timeout", "waited_for": "event"}',
	'to_soon:1:{"kind": "timeout", "waited_for": "event"}'),
	'every woken run resumes with attempt 1 and why it woke');
is( sql(q{SELECT count(*) FILTER (WHERE queue_engine.complete(run_id, attempt => attempt)) || '/' || count(*)
            FROM queue_engine.runs WHERE status = 'executing'}),
	'11/11', 'the resumed runs, the one whose wait was lost and one_b complete with their attempt');
is(sql(q{SELECT count(*) FILTER (WHERE queue_engine.cancel(run_id)) FROM queue_engine.runs WHERE status = 'waiting'}),
	'3', 'the three long waits are canceled');
is( sql(q{SELECT string_agg(status || '=' || n, ' ' ORDER BY status::text)
            FROM (SELECT status, count(*) AS n FROM queue_engine.runs GROUP BY status) s}),
	'canceled=4 completed=12', 'everything is final');
is(sql('SELECT count(*) FROM queue_engine.waiting_runs'), '0', 'no waiting_runs row left');
is( sql(q{SELECT sum(queued) || '/' || sum(delayed) || '/' || sum(executing) || '/' || sum(waiting)
            FROM queue_engine.queue_stats}),
	'0/0/0/0', 'queue_stats shows nothing left');
is(sql($findings), '', 'check_consistency(false) finds nothing');
is(sql('SELECT count(*) FROM queue_engine.consistency_log'), '0',
	'consistency_log is empty (the worker never had anything to repair)');

$node->stop;
done_testing();
