# 010_fuzz.pl: random calls from several clients at once; afterwards the
# engine's bookkeeping is exact and no limit was ever exceeded.
#
# On a cluster of its own (shared_preload_libraries = 'queue_engine', so the
# background worker does maintenance and consistency passes with repair in
# the middle of the load; track_commit_timestamp = on; max_prepared_transactions
# > 0):
#  - setup: tenants with and without limits, queues unlimited, limited (1-3),
#    key-limited, with a ttl, droppable; 1-2 s leases so stalls are rescued;
#  - 4 clients run the PL/pgSQL procedure fuzz_client(client, seed, iterations,
#    seconds) at once (bounded by QE_FUZZ_SECONDS, default 30): enqueue and
#    enqueue_batch (keys, priorities, delays, run_at, ttl, idempotency keys,
#    tags, parents), dequeue (named queues or NULL, max_runs 1-20) and then
#    complete / fail / heartbeat / complete_batch of what they hold, with the
#    right, a stale or no attempt, cancel, alter_queue (raise, lower, clear
#    limits), pause/resume, set_tenant_limit, drop_queue (force or not) and
#    create_queue again, each maintenance task (promote_delayed ...
#    prune_finished_runs, small and default batches), check_consistency(false),
#    and invalid calls (NULLs, zero, negative, huge, unknown ids and names)
#    each of which must fail with its documented SQLSTATE.  Every call runs in
#    its own BEGIN ... EXCEPTION block; a SQLSTATE the call may not raise
#    (XX000, a deadlock, a lock timeout, "the invalid call succeeded", ...) is
#    recorded in fuzz_unexpected and fails the test.  "Slow dequeues" keep their
#    transaction open for 50-350 ms (pg_sleep) while other clients lower or set
#    limits and dequeue: the race of issue 14 item 1.  Meanwhile this script
#    prepares (PREPARE TRANSACTION) dequeues and limit changes and commits or
#    rolls them back a moment later;
#  - afterwards: limits cleared, everything drained to a final state, counts
#    folded; check_consistency(false) finds 0 everywhere (and found 0 every time
#    a client ran it mid-load), consistency_log is empty (the worker never
#    repaired anything), nothing unexpected was raised, and the limit replay
#    (below) finds no breach.
#
# How "no limit exceeded" is checked, and why it cannot false-alarm.
#
#   The promise: a run never STARTS while its queue's (tenant's, key's)
#   executing count is at or above its limit.  Lowering a limit below the
#   executing count is allowed (those runs finish, nothing new starts until
#   under it), so comparing sampled counts against the current limit would
#   false-alarm, and so would comparing them with the count the lowering
#   transaction saw: a dequeue that read the old, higher limit and committed
#   after that count but before the lowering committed legitimately started
#   runs the lowering transaction never saw.
#
#   Instead every status change of every run and every change of a queue's or
#   tenant's limits is logged by row triggers (AFTER INSERT OR DELETE on the
#   executing segments, AFTER INSERT on finished_runs, AFTER INSERT OR UPDATE
#   on queues and tenants) in the
#   transaction that made it, whoever made it (clients, the maintenance
#   worker, prepared transactions).  With track_commit_timestamp each logged
#   change gets its transaction's commit time, and the changes are replayed in
#   commit order (within a transaction in statement order), keeping the
#   executing counts per queue, tenant and (queue, key).  A start is a breach
#   when the count it joins is already at or above the limit in force.
#
#   Commit order is the order in which a transaction's changes become visible,
#   up to one gap: the commit timestamp is taken just before the commit record
#   is written, visibility comes a little later.  Why that gap cannot make a
#   correct engine fail here:
#   - a run leaving 'executing' (complete, fail, cancel, rescue) that a dequeue
#     relied on was visible to it, so it committed, and took its timestamp,
#     before that dequeue did: the replay frees it first.  One the dequeue did
#     not see only makes the dequeue more careful than the replay;
#   - two starts under one limit are serialised by the engine's own locks
#     (slot, queue, tenant and key locks, held until commit and released
#     after the commit is visible), so the later one took its timestamp after
#     the earlier one's was taken: the replay counts them in that order;
#   - a limit raised (or a queue resumed) in the gap only makes the replay
#     more lenient.  For a lowered limit (or a pause, or a drop) the replay is
#     lenient on purpose: a start is judged against the HIGHEST limit in force
#     at any moment in the QE_FUZZ_TOLERANCE_MS (default 20 ms; the test
#     cluster runs without fsync, so the gap is microseconds) before its own
#     commit, so a dequeue that committed just before a concurrent lowering
#     became visible is never blamed for it;
#   - the triggers see every start and exit: a run moves between states by
#     SQL statements that delete it from one table and insert it into the
#     next (the engine's direct heap inserts are new runs into ready and
#     delayed, never 'executing'), and the rotation's moves of a run between
#     executing segments are told apart (same attempt);
#     the replay checks its own log (every exit has its start, and the counts
#     it ends with are the engine's own, 0 after the drain).
#   So a breach it reports is a start that committed, more than the tolerance
#   after the limit came into force, into a queue, tenant or key that was
#   already full: a real one.  Each breach is printed with the run, the
#   counts, the limit and the time since the limit last changed.
#
#   The replay also checks, exactly: no start in a paused or dropped queue
#   by a dequeue that began after the pause or drop committed (one already
#   open then is only counted: the README does not say it must see it), no
#   first attempt started after its ttl expired
#   (started_at against expires_at, as dequeue compares them), no attempt
#   beyond max_attempts, and that a final run never changes again.
#
# Knobs: QE_FUZZ_SEED (printed; the same seed gives each client the same random
# stream, though timing makes the calls diverge sooner or later), QE_FUZZ_SECONDS (30), QE_FUZZ_ITERATIONS
# (per client, 100000), QE_FUZZ_TOLERANCE_MS (20).
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

my $seed = $ENV{QE_FUZZ_SEED} // (int(time() * 1000) % 1_000_000_007);
my $seconds = $ENV{QE_FUZZ_SECONDS} // 30;
my $iterations = $ENV{QE_FUZZ_ITERATIONS} // 100_000;
my $tolerance_us = ($ENV{QE_FUZZ_TOLERANCE_MS} // 20) * 1000;
my $nclients = 4;
diag("010_fuzz: seed $seed (replay with QE_FUZZ_SEED=$seed), ${seconds}s, $nclients clients");
srand($seed);

my $node = PostgreSQL::Test::Cluster->new('fuzz');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_interval = 200ms
queue_engine.consistency_interval = 3s
queue_engine.finished_run_retention = 10s
queue_engine.max_payload_bytes = 4kB
queue_engine.max_output_bytes = 4kB
track_commit_timestamp = on
max_prepared_transactions = 10
max_connections = 40
deadlock_timeout = 200ms
log_line_prefix = '%m [%p] %b %a '
log_min_messages = warning
log_min_error_statement = panic
});
$node->start;

sub sql { return scalar $node->safe_psql('postgres', @_); }

# Every check of check_consistency(false) that found something ('' when none did).
my $check = q{SELECT coalesce(string_agg(check_name || '=' || found, ' ' ORDER BY check_name)
  FILTER (WHERE found <> 0), '') || '/' || count(*) FROM queue_engine.check_consistency(false)};

# ---------------------------------------------------------------- setup

sql(q{
CREATE EXTENSION queue_engine;

-- The replay's log: every arrival of a run in executing or finished_runs and
-- every departure from executing (storage 0.2: a move between states is a
-- delete from one table and an insert into another), every queue/tenant
-- change.  Nothing is logged on ready and delayed: an insert trigger there
-- would make enqueue take its INSERT fallback instead of the direct heap
-- insert this test should exercise under load.
CREATE SEQUENCE fuzz_seq;
CREATE TABLE fuzz_trans (
	seq bigint NOT NULL DEFAULT nextval('public.fuzz_seq'),
	txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
	ev text NOT NULL, state text NOT NULL,
	run_id bigint, queue_id int, tenant_id int, ckey text,
	attempt int, max_attempts int,
	started_at timestamptz, expires_at timestamptz, worker text);
CREATE TABLE fuzz_defs (
	seq bigint NOT NULL DEFAULT nextval('public.fuzz_seq'),
	txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
	kind text NOT NULL, id int NOT NULL, qlimit int, klimit int, paused boolean);
CREATE FUNCTION fuzz_log_run() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	j jsonb;
BEGIN
	IF TG_OP = 'DELETE' THEN j := to_jsonb(OLD); ELSE j := to_jsonb(NEW); END IF;
	INSERT INTO public.fuzz_trans (ev, state, run_id, queue_id, tenant_id, ckey, attempt, max_attempts,
		started_at, expires_at, worker)
	SELECT CASE WHEN TG_OP = 'DELETE' THEN '-' ELSE '+' END, coalesce(j->>'status', 'executing'),
		(j->>'run_id')::bigint, (j->>'queue_id')::int, q.tenant_id, j->>'concurrency_key',
		(j->>'attempt')::int, coalesce((j->'meta'->>'max_attempts')::int, p.max_attempts),
		(j->>'started_at')::timestamptz, (j->'meta'->>'expires_at')::timestamptz, j->>'worker'
	  FROM (SELECT) x
	  LEFT JOIN queue_engine.queues q ON q.queue_id = (j->>'queue_id')::int
	  LEFT JOIN queue_engine.queue_policies p ON p.policy_id = (j->>'policy_id')::int;
	RETURN NULL;
END $$;
CREATE TRIGGER fuzz_log_run AFTER INSERT OR DELETE ON queue_engine.executing_0 FOR EACH ROW
	EXECUTE FUNCTION public.fuzz_log_run();
CREATE TRIGGER fuzz_log_run AFTER INSERT OR DELETE ON queue_engine.executing_1 FOR EACH ROW
	EXECUTE FUNCTION public.fuzz_log_run();
CREATE TRIGGER fuzz_log_run AFTER INSERT ON queue_engine.finished_runs FOR EACH ROW
	EXECUTE FUNCTION public.fuzz_log_run();
CREATE FUNCTION fuzz_log_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.fuzz_defs (kind, id, qlimit, klimit, paused)
	VALUES ('q', NEW.queue_id, NEW.concurrency_limit, NEW.key_concurrency_limit,
		NEW.paused OR NEW.dropped_at IS NOT NULL);
	RETURN NULL;
END $$;
CREATE TRIGGER fuzz_log_queue AFTER INSERT OR UPDATE ON queue_engine.queues FOR EACH ROW
	EXECUTE FUNCTION public.fuzz_log_queue();
CREATE FUNCTION fuzz_log_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.fuzz_defs (kind, id, qlimit) VALUES ('t', NEW.tenant_id, NEW.concurrency_limit);
	RETURN NULL;
END $$;
CREATE TRIGGER fuzz_log_tenant AFTER INSERT OR UPDATE ON queue_engine.tenants FOR EACH ROW
	EXECUTE FUNCTION public.fuzz_log_tenant();
-- 'default' existed before the trigger: log its (unlimited) state.
INSERT INTO fuzz_defs (kind, id, qlimit)
SELECT 't', tenant_id, concurrency_limit FROM queue_engine.tenants;

-- What the clients found.
CREATE TABLE fuzz_unexpected (client int, iteration int, call text, sqlstate text, message text,
	at timestamptz DEFAULT clock_timestamp());
CREATE TABLE fuzz_drift (client int, check_name text, found bigint, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE fuzz_calls (client int, call text, outcome text, n int);

-- The queues, and their creation settings (a dropped one is created again with them).
CREATE TABLE fuzz_qdef (queue text PRIMARY KEY, tenant text, lim int, klim int, lease interval,
	ttl interval, max_attempts int);
INSERT INTO fuzz_qdef VALUES
	('free',   'default', NULL, NULL, '2 s', NULL,   5),
	('lim1',   'default', 1,    NULL, '1 s', NULL,   4),
	('lim3',   'ta',      3,    NULL, '2 s', NULL,   3),
	('keyed',  'ta',      NULL, 1,    '1 s', NULL,   4),
	('keylim', 'tb',      3,    2,    '2 s', NULL,   3),
	('ttlq',   'tb',      NULL, NULL, '1 s', '1 s',  3),
	('tcq',    'tc',      NULL, NULL, '2 s', NULL,   5),
	('drop1',  'tc',      2,    NULL, '1 s', NULL,   3),
	('drop2',  'default', NULL, 1,    '2 s', '3 s',  2);
CREATE FUNCTION fuzz_create(name text) RETURNS void LANGUAGE sql AS $$
	SELECT queue_engine.create_queue(d.queue, tenant => d.tenant, concurrency_limit => d.lim,
		key_concurrency_limit => d.klim, max_attempts => d.max_attempts, lease => d.lease,
		retry_backoff => '100 ms', retry_backoff_max => '500 ms', ttl => d.ttl)
	  FROM public.fuzz_qdef d WHERE d.queue = name $$;
SELECT fuzz_create(queue) FROM fuzz_qdef ORDER BY queue;
SELECT queue_engine.set_tenant_limit('ta', 3), queue_engine.set_tenant_limit('tb', 2),
	queue_engine.set_tenant_limit('tc', NULL);

CREATE FUNCTION fuzz_pick(a anyarray) RETURNS anyelement LANGUAGE sql VOLATILE AS
	$$ SELECT a[1 + floor(random() * cardinality(a))::int] $$;

-- Invalid calls and the one SQLSTATE each must raise.  $1 is a queue that is
-- never dropped, $2 a run id (held, recent, or -1).
CREATE TABLE fuzz_invalid (name text, sql text, expect text);
INSERT INTO fuzz_invalid VALUES
	('enqueue_null_queue',   $q$SELECT queue_engine.enqueue(NULL)$q$, '22004'),
	('enqueue_unknown',      $q$SELECT queue_engine.enqueue('no such queue', '{}')$q$, '42704'),
	('enqueue_empty_name',   $q$SELECT queue_engine.enqueue('')$q$, '42704'),
	('enqueue_null_payload', $q$SELECT queue_engine.enqueue($1, NULL)$q$, '22004'),
	('enqueue_null_prio',    $q$SELECT queue_engine.enqueue($1, '{}', priority => NULL)$q$, '22004'),
	('enqueue_runat_delay',  $q$SELECT queue_engine.enqueue($1, run_at => now(), delay => '1 s')$q$, '22023'),
	('enqueue_neg_delay',    $q$SELECT queue_engine.enqueue($1, delay => '-1 s')$q$, '22023'),
	('enqueue_huge_delay',   $q$SELECT queue_engine.enqueue($1, delay => '200 years')$q$, '22023'),
	('enqueue_infinity',     $q$SELECT queue_engine.enqueue($1, run_at => 'infinity')$q$, '22023'),
	('enqueue_zero_ttl',     $q$SELECT queue_engine.enqueue($1, ttl => '0')$q$, '22023'),
	('enqueue_neg_attempts', $q$SELECT queue_engine.enqueue($1, max_attempts => -2147483648)$q$, '22023'),
	('enqueue_zero_idem_ttl', $q$SELECT queue_engine.enqueue($1, idempotency_key => 'x', idempotency_ttl => '0')$q$, '22023'),
	('enqueue_bad_parent',   $q$SELECT queue_engine.enqueue($1, parent_run_id => -$2 - 9223372036854775)$q$, 'P0002'),
	('enqueue_big_payload',  $q$SELECT queue_engine.enqueue($1, jsonb_build_object('x', repeat('x', 9000)))$q$, '54000'),
	('batch_null',           $q$SELECT queue_engine.enqueue_batch($1, NULL)$q$, '22004'),
	('batch_null_elem',      $q$SELECT queue_engine.enqueue_batch($1, ARRAY['{}', NULL]::jsonb[])$q$, '22004'),
	('batch_2d',             $q$SELECT queue_engine.enqueue_batch($1, ARRAY[['{}'], ['{}']]::jsonb[])$q$, '2202E'),
	('batch_unknown',        $q$SELECT queue_engine.enqueue_batch('nope', ARRAY['{}']::jsonb[])$q$, '42704'),
	('batch_big_payload',    $q$SELECT queue_engine.enqueue_batch($1, ARRAY['{}', jsonb_build_object('x', repeat('x', 9000))])$q$, '54000'),
	('dequeue_zero',         $q$SELECT * FROM queue_engine.dequeue(max_runs => 0)$q$, '22023'),
	('dequeue_huge',         $q$SELECT * FROM queue_engine.dequeue(ARRAY[$1], 2147483647)$q$, '22023'),
	('dequeue_null_max',     $q$SELECT * FROM queue_engine.dequeue(ARRAY[$1], NULL)$q$, '22004'),
	('dequeue_unknown',      $q$SELECT * FROM queue_engine.dequeue(ARRAY[$1, 'nope'])$q$, '42704'),
	('dequeue_neg_lease',    $q$SELECT * FROM queue_engine.dequeue(ARRAY[$1], 1, lease => '-1 s')$q$, '22023'),
	('complete_null',        $q$SELECT queue_engine.complete(NULL)$q$, '22004'),
	('complete_unknown',     $q$SELECT queue_engine.complete(-$2 - 9223372036854775)$q$, 'P0002'),
	('complete_big_output',  $q$SELECT queue_engine.complete($2, jsonb_build_object('x', repeat('x', 9000)))$q$, '54000'),
	('fail_null_error',      $q$SELECT queue_engine.fail($2, NULL)$q$, '22004'),
	('fail_neg_retry',       $q$SELECT queue_engine.fail($2, '{}', retry_in => '-1 s')$q$, '22023'),
	('heartbeat_unknown',    $q$SELECT queue_engine.heartbeat(-$2 - 9223372036854775)$q$, 'P0002'),
	('heartbeat_neg_extend', $q$SELECT queue_engine.heartbeat($2, extend => '-1 s')$q$, '22023'),
	('cancel_unknown',       $q$SELECT queue_engine.cancel(-$2 - 9223372036854775)$q$, 'P0002'),
	('cancel_null',          $q$SELECT queue_engine.cancel(NULL)$q$, '22004'),
	('batch_len_mismatch',   $q$SELECT queue_engine.complete_batch(ARRAY[$2, $2 + 1], attempts => ARRAY[1])$q$, '2202E'),
	('batch_complete_null',  $q$SELECT queue_engine.complete_batch(NULL)$q$, '22004'),
	('get_run_unknown',      $q$SELECT queue_engine.get_run(-$2 - 9223372036854775)$q$, 'P0002'),
	('alter_zero',           $q$SELECT queue_engine.alter_queue($1, concurrency_limit => 0)$q$, '22023'),
	('alter_neg_key',        $q$SELECT queue_engine.alter_queue($1, key_concurrency_limit => -1)$q$, '22023'),
	('alter_unknown',        $q$SELECT queue_engine.alter_queue('nope', concurrency_limit => 1)$q$, '42704'),
	('alter_bad_clear',      $q$SELECT queue_engine.alter_queue($1, clear => ARRAY['bogus'])$q$, '22023'),
	('alter_null_clear',     $q$SELECT queue_engine.alter_queue($1, clear => ARRAY[NULL]::text[])$q$, '22004'),
	('tenant_neg',           $q$SELECT queue_engine.set_tenant_limit('ta', -1)$q$, '22023'),
	('tenant_null',          $q$SELECT queue_engine.set_tenant_limit(NULL, 1)$q$, '22004'),
	('create_other_tenant',  $q$SELECT queue_engine.create_queue($1, tenant => 'elsewhere')$q$, '42710'),
	('create_zero',          $q$SELECT queue_engine.create_queue('fuzz new', concurrency_limit => 0)$q$, '22023'),
	('drop_unknown',         $q$SELECT queue_engine.drop_queue('nope', force => true)$q$, '42704'),
	('drop_null',            $q$SELECT queue_engine.drop_queue(NULL)$q$, '22004'),
	('pause_null',           $q$SELECT queue_engine.pause_queue(NULL)$q$, '22004'),
	('resume_unknown',       $q$SELECT queue_engine.resume_queue('nope')$q$, '42704');
});

# ---------------------------------------------------------------- the client

sql(<<'EOSQL');
CREATE PROCEDURE fuzz_client(client int, seed bigint, iterations int, seconds float8)
LANGUAGE plpgsql AS $proc$
DECLARE
	names constant text[] := ARRAY['free', 'lim1', 'lim3', 'keyed', 'keylim', 'ttlq', 'tcq', 'drop1', 'drop2'];
	fixed constant text[] := ARRAY['free', 'lim1', 'lim3', 'keyed', 'keylim', 'ttlq', 'tcq'];
	limq constant text[] := ARRAY['lim1', 'lim3', 'keylim', 'tcq', 'free', 'drop1'];
	keyq constant text[] := ARRAY['keyed', 'keylim', 'drop2', 'tcq'];
	tenants constant text[] := ARRAY['default', 'ta', 'tb', 'tc'];
	stop constant timestamptz := clock_timestamp() + seconds * interval '1 second';
	me constant text := 'c' || client;
	held_id bigint[] := '{}';		-- runs this client dequeued (maybe stalled and re-run since)
	held_att int[] := '{}';
	tx_runs bigint[] := '{}';		-- dequeued in the open transaction
	tx_calls int := 0;				-- calls made in the open transaction
	recent bigint[] := '{}';		-- run ids enqueued lately
	stats jsonb := '{}';
	call text;
	expect text[];
	fresh boolean;
	isolated boolean;
	p float8;
	x float8;
	j int;
	rid bigint;
	att int;
	a int;
	q text;
	qs text[];
	ids bigint[];
	atts int[];
	r record;
	inv record;
	st text;
	msg text;
BEGIN
	PERFORM setseed(((seed * 7919 + client * 104729) % 999983) / 999983.0);
	FOR i IN 1 .. iterations LOOP
		EXIT WHEN clock_timestamp() > stop;
		p := random() * 100;
		call := CASE WHEN p < 15 THEN 'enqueue' WHEN p < 21 THEN 'enqueue_batch'
			WHEN p < 38.5 THEN 'dequeue' WHEN p < 41 THEN 'slow_dequeue'
			WHEN p < 53 THEN 'complete' WHEN p < 58 THEN 'fail' WHEN p < 63 THEN 'heartbeat'
			WHEN p < 67 THEN 'complete_batch' WHEN p < 70 THEN 'cancel'
			WHEN p < 75 THEN 'alter_queue' WHEN p < 78 THEN 'set_tenant_limit'
			WHEN p < 79.5 THEN 'pause_queue' WHEN p < 82.5 THEN 'resume_queue'
			WHEN p < 84 THEN 'drop_queue' WHEN p < 90 THEN 'maintenance'
			WHEN p < 92 THEN 'check_consistency' WHEN p < 94 THEN 'get_run' ELSE 'invalid' END;
		IF call IN ('complete', 'fail', 'heartbeat', 'complete_batch') AND cardinality(held_id) = 0 THEN
			call := 'dequeue';
		END IF;
		j := NULL;
		ids := NULL;
		IF call IN ('complete', 'fail', 'heartbeat') THEN
			j := 1 + floor(random() * cardinality(held_id))::int;
			rid := held_id[j];
			att := held_att[j];
			-- the right attempt, a stale one, or none (unfenced)
			x := random();
			a := CASE WHEN x < 0.7 THEN att WHEN x < 0.85 THEN att - 1 END;
		ELSIF call = 'complete_batch' THEN
			SELECT array_agg(held_id[k]), array_agg(CASE WHEN random() < 0.85 THEN held_att[k] ELSE held_att[k] - 1 END)
			  INTO ids, atts
			  FROM (SELECT DISTINCT 1 + floor(random() * cardinality(held_id))::int AS k
					  FROM generate_series(1, 1 + floor(random() * 5)::int)) s;
		END IF;
		-- A call that may wait for another session's lock (a row lock, a queue
		-- name lock, ...) starts a fresh transaction: holding nothing, it can
		-- never close a wait cycle, so a deadlock would be the engine's own.
		-- Only dequeue (which never waits) and finishing runs dequeued in the
		-- same open transaction (whose row locks it holds) join one.
		fresh := call NOT IN ('dequeue', 'complete', 'fail', 'heartbeat', 'complete_batch')
			OR (j IS NOT NULL AND NOT rid = ANY (tx_runs))
			OR (ids IS NOT NULL AND NOT ids <@ tx_runs);
		isolated := call NOT IN ('enqueue', 'enqueue_batch', 'dequeue', 'complete', 'fail',
								 'heartbeat', 'complete_batch', 'get_run');
		IF fresh AND tx_calls > 0 THEN
			COMMIT;
			tx_calls := 0;
			tx_runs := '{}';
		END IF;

		st := NULL;
		expect := '{}';
		BEGIN
			CASE call
			WHEN 'enqueue' THEN
				expect := ARRAY['42704', 'P0002'];	-- queue dropped meanwhile; parent pruned
				q := CASE WHEN random() < 0.03 THEN 'nope' ELSE fuzz_pick(names) END;
				x := random();
				rid := queue_engine.enqueue(q, jsonb_build_object('c', client, 'i', i),
					concurrency_key => CASE WHEN random() < 0.6 THEN 'k' || floor(random() * 4) END,
					priority => floor(random() * 7)::int - 3,
					delay => CASE WHEN x < 0.15 THEN random() * interval '1.5 s' END,
					run_at => CASE WHEN x >= 0.15 AND x < 0.2 THEN now() + (random() - 0.3) * interval '1 s' END,
					ttl => CASE WHEN random() < 0.15 THEN interval '300 ms' + random() * interval '2 s' END,
					max_attempts => CASE WHEN random() < 0.2 THEN 1 + floor(random() * 4)::int END,
					idempotency_key => CASE WHEN random() < 0.15 THEN 'i' || floor(random() * 30) END,
					idempotency_ttl => CASE WHEN random() < 0.5 THEN interval '2 s' ELSE interval '1 day' END,
					tags => CASE WHEN random() < 0.2 THEN ARRAY['t' || floor(random() * 3)] END,
					parent_run_id => CASE WHEN random() < 0.1 THEN fuzz_pick(recent) END);
				recent := (recent || rid)[greatest(1, cardinality(recent) - 48):];
			WHEN 'enqueue_batch' THEN
				expect := ARRAY['42704', 'P0002'];
				q := fuzz_pick(names);
				x := random();
				FOR rid IN SELECT * FROM queue_engine.enqueue_batch(q,
						ARRAY(SELECT jsonb_build_object('c', client, 'i', i, 'b', g)
								FROM generate_series(1, 1 + floor(random() * 10)::int) g),
						concurrency_key => CASE WHEN random() < 0.5 THEN 'k' || floor(random() * 4) END,
						priority => floor(random() * 7)::int - 3,
						delay => CASE WHEN x < 0.15 THEN random() * interval '1.5 s' END,
						ttl => CASE WHEN random() < 0.15 THEN interval '300 ms' + random() * interval '2 s' END,
						max_attempts => CASE WHEN random() < 0.2 THEN 1 + floor(random() * 4)::int END,
						tags => CASE WHEN random() < 0.2 THEN ARRAY['t' || floor(random() * 3), 'b'] END,
						parent_run_id => CASE WHEN random() < 0.05 THEN fuzz_pick(recent) END)
				LOOP
					recent := (recent || rid)[greatest(1, cardinality(recent) - 48):];
				END LOOP;
			WHEN 'dequeue' THEN
				expect := ARRAY['42704'];
				qs := CASE WHEN random() < 0.4 THEN NULL
					ELSE ARRAY(SELECT fuzz_pick(names) FROM generate_series(1, 1 + floor(random() * 3)::int)) END;
				FOR r IN SELECT d.run_id, d.attempt FROM queue_engine.dequeue(qs, 1 + floor(random() * 20)::int,
						lease => CASE WHEN random() < 0.5 THEN interval '1 s' + random() * interval '1 s' END,
						worker => me) d
				LOOP
					held_id := held_id || r.run_id;
					held_att := held_att || r.attempt;
					tx_runs := tx_runs || r.run_id;
				END LOOP;
			WHEN 'slow_dequeue' THEN
				-- issue 14 item 1: this dequeue stays uncommitted while others
				-- change limits and dequeue
				expect := ARRAY['42704'];
				FOR r IN SELECT d.run_id, d.attempt FROM queue_engine.dequeue(ARRAY[fuzz_pick(limq || keyq)],
						1 + floor(random() * 3)::int, worker => me || ' slow') d
				LOOP
					held_id := held_id || r.run_id;
					held_att := held_att || r.attempt;
				END LOOP;
				PERFORM pg_sleep(0.05 + random() * 0.3);
			WHEN 'complete' THEN
				expect := ARRAY['P0002'];
				PERFORM queue_engine.complete(rid, CASE WHEN random() < 0.5 THEN jsonb_build_object('by', me) END,
					attempt => a);
			WHEN 'fail' THEN
				expect := ARRAY['P0002'];
				PERFORM queue_engine.fail(rid, CASE WHEN random() < 0.1 THEN to_jsonb(repeat('e', 20000))
						ELSE jsonb_build_object('message', 'fuzz', 'by', me) END, attempt => a,
					retry_in => CASE WHEN random() < 0.3 THEN interval '0' WHEN random() < 0.3 THEN random() * interval '500 ms' END,
					permanent => random() < 0.1);
			WHEN 'heartbeat' THEN
				expect := ARRAY['P0002'];
				PERFORM queue_engine.heartbeat(rid, attempt => a,
					extend => CASE WHEN random() < 0.5 THEN interval '1 s' END);
			WHEN 'complete_batch' THEN
				expect := ARRAY['P0002'];
				PERFORM queue_engine.complete_batch(ids, attempts => CASE WHEN random() < 0.8 THEN atts END);
			WHEN 'cancel' THEN
				expect := ARRAY['P0002'];
				PERFORM queue_engine.cancel(coalesce(fuzz_pick(recent || held_id), -1),
					CASE WHEN random() < 0.5 THEN 'fuzz' END);
			WHEN 'alter_queue' THEN
				expect := ARRAY['42704'];
				x := random();
				IF x < 0.45 THEN
					PERFORM queue_engine.alter_queue(fuzz_pick(limq), concurrency_limit => 1 + floor(random() * 3)::int);
				ELSIF x < 0.6 THEN
					PERFORM queue_engine.alter_queue(fuzz_pick(limq), clear => ARRAY['concurrency_limit']);
				ELSIF x < 0.8 THEN
					PERFORM queue_engine.alter_queue(fuzz_pick(keyq), key_concurrency_limit => 1 + floor(random() * 3)::int);
				ELSIF x < 0.9 THEN
					PERFORM queue_engine.alter_queue(fuzz_pick(keyq), clear => ARRAY['key_concurrency_limit']);
				ELSE
					PERFORM queue_engine.alter_queue(fuzz_pick(names), lease => interval '1 s' + random() * interval '1 s',
						ttl => CASE WHEN random() < 0.3 THEN interval '2 s' END, max_attempts => 2 + floor(random() * 3)::int);
				END IF;
			WHEN 'set_tenant_limit' THEN
				PERFORM queue_engine.set_tenant_limit(fuzz_pick(tenants),
					CASE WHEN random() < 0.35 THEN NULL ELSE 1 + floor(random() * 3)::int END);
			WHEN 'pause_queue' THEN
				expect := ARRAY['42704'];
				PERFORM queue_engine.pause_queue(fuzz_pick(names));
			WHEN 'resume_queue' THEN
				expect := ARRAY['42704'];
				PERFORM queue_engine.resume_queue(fuzz_pick(names));
			WHEN 'drop_queue' THEN
				expect := ARRAY['42704', '55006'];
				q := fuzz_pick(ARRAY['drop1', 'drop2']);
				PERFORM queue_engine.drop_queue(q, force => random() < 0.7);
			WHEN 'maintenance' THEN
				x := random() * 6;
				call := CASE WHEN x < 1 THEN 'promote_delayed' WHEN x < 2 THEN 'expire_runs'
					WHEN x < 3 THEN 'rescue_stalled' WHEN x < 4 THEN 'purge_idempotency_keys'
					WHEN x < 5 THEN 'fold_counts' ELSE 'prune_finished_runs' END;
				EXECUTE format('SELECT queue_engine.%I(%s)', call,
					CASE WHEN random() < 0.5 THEN (1 + floor(random() * 50))::text ELSE '' END);
			WHEN 'check_consistency' THEN
				FOR r IN SELECT * FROM queue_engine.check_consistency(false) c WHERE c.found <> 0 LOOP
					INSERT INTO fuzz_drift (client, check_name, found) VALUES (client, r.check_name, r.found);
				END LOOP;
			WHEN 'get_run' THEN
				expect := ARRAY['P0002'];
				PERFORM queue_engine.get_run(coalesce(fuzz_pick(recent), -1));
			WHEN 'invalid' THEN
				SELECT * INTO inv FROM fuzz_invalid ORDER BY random() LIMIT 1;
				call := 'invalid ' || inv.name;
				expect := ARRAY[inv.expect];
				EXECUTE inv.sql USING fuzz_pick(fixed), coalesce(fuzz_pick(held_id), fuzz_pick(recent), 1::bigint);
				RAISE EXCEPTION 'invalid call % succeeded', inv.name USING ERRCODE = 'FZ001';
			END CASE;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
			IF NOT st = ANY (expect) THEN
				INSERT INTO fuzz_unexpected (client, iteration, call, sqlstate, message)
				VALUES (client, i, call, st, msg);
			END IF;
		END;
		stats := jsonb_set(stats, ARRAY[call || ' ' || coalesce(st, 'ok')],
			to_jsonb(coalesce((stats ->> (call || ' ' || coalesce(st, 'ok')))::int, 0) + 1));

		-- What this client still holds (a finished run is let go whatever the outcome).
		IF call IN ('complete', 'fail') THEN
			held_id := held_id[:j - 1] || held_id[j + 1:];
			held_att := held_att[:j - 1] || held_att[j + 1:];
		ELSIF call = 'complete_batch' THEN
			SELECT coalesce(array_agg(h.id ORDER BY h.n), '{}'), coalesce(array_agg(h.att ORDER BY h.n), '{}')
			  INTO held_id, held_att
			  FROM unnest(held_id, held_att) WITH ORDINALITY h(id, att, n) WHERE NOT h.id = ANY (ids);
		END IF;
		IF cardinality(held_id) > 60 THEN		-- abandoned: their leases pass and they are rescued
			held_id := held_id[11:];
			held_att := held_att[11:];
		END IF;

		tx_calls := tx_calls + 1;
		IF isolated OR random() < 0.6 THEN
			COMMIT;
			tx_calls := 0;
			tx_runs := '{}';
		END IF;
		IF call = 'drop_queue' THEN
			-- and create it again (a no-op while it is still there)
			BEGIN
				st := NULL;
				PERFORM fuzz_create(q);
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
				IF st <> '42710' THEN	-- it exists with altered limits
					INSERT INTO fuzz_unexpected (client, iteration, call, sqlstate, message)
					VALUES (client, i, 'create_queue', st, msg);
				END IF;
			END;
			stats := jsonb_set(stats, ARRAY['create_queue ' || coalesce(st, 'ok')],
				to_jsonb(coalesce((stats ->> ('create_queue ' || coalesce(st, 'ok')))::int, 0) + 1));
			COMMIT;
		END IF;
	END LOOP;
	COMMIT;
	INSERT INTO fuzz_calls (client, call, outcome, n)
	SELECT client, left(k, length(k) - length(split_part(k, ' ', -1)) - 1), split_part(k, ' ', -1), v::int
	  FROM jsonb_each_text(stats) e(k, v);
	COMMIT;
END
$proc$;
EOSQL

# ---------------------------------------------------------------- the load

my @clients;
my $start = time;
for my $c (1 .. $nclients)
{
	my %h = (out => '', err => '');
	$h{run} = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
			'-h', $node->host, '-p', $node->port, '-d', 'postgres',
			'-c', "SET lock_timeout = '20s'",
			'-c', "CALL fuzz_client($c, $seed, $iterations, $seconds)"
		],
		'>', \$h{out}, '2>', \$h{err});
	push @clients, \%h;
}

# Meanwhile: prepared transactions (two-phase commit) that dequeue or change
# a limit, committed or rolled back a moment later.
my %prepared = (dequeue => 0, limit => 0, committed => 0, rolled_back => 0, failed => 0);
my @prepare_errors;
my $gid = 0;
while (time - $start < $seconds - 1)
{
	usleep(int(200_000 + rand(600_000)));
	$gid++;
	my @q = qw(lim1 lim3 keylim tcq drop1 keyed);
	my $q = $q[ int(rand(@q)) ];
	my ($what, $body);
	if (rand() < 0.6)
	{
		$what = 'dequeue';
		$body = "SELECT count(*) FROM queue_engine.dequeue(ARRAY['$q'], 2, worker => 'prepared')";
	}
	else
	{
		$what = 'limit';
		$body = rand() < 0.5
		  ? "SELECT queue_engine.alter_queue('$q', concurrency_limit => " . (1 + int(rand(3))) . ')'
		  : "SELECT queue_engine.set_tenant_limit('" . (qw(ta tb tc default))[ int(rand(4)) ] . "', "
		  . (rand() < 0.3 ? 'NULL' : 1 + int(rand(3))) . ')';
	}
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET lock_timeout = '5s'; BEGIN; $body; PREPARE TRANSACTION 'fuzz$gid';");
	if ($rc != 0 || $err =~ /ERROR/)
	{
		$prepared{failed}++;
		push @prepare_errors, "$what: $err" unless $err =~ /does not exist/;
		next;
	}
	$prepared{$what}++;
	usleep(int(50_000 + rand(400_000)));
	my $commit = rand() < 0.8;
	$node->safe_psql('postgres', ($commit ? 'COMMIT' : 'ROLLBACK') . " PREPARED 'fuzz$gid'");
	$prepared{ $commit ? 'committed' : 'rolled_back' }++;
}
for my $h (@clients)
{
	$h->{rc} = $h->{run}->finish ? 0 : $h->{run}->full_result;
}
my $load_s = time - $start;
for my $c (1 .. $nclients)
{
	my $h = $clients[ $c - 1 ];
	is($h->{rc}, 0, "client $c ran to its end") or diag("client $c: $h->{err}");
	is($h->{err}, '', "client $c printed no error");
}
is(sql('SELECT count(*) FROM pg_prepared_xacts'), '0', 'no prepared transaction left');
# One session for everything after the load (a psql per query is slow on a busy machine).
my $session = $node->background_psql('postgres');
sub bq { return scalar $session->query_safe(@_); }
is(join("\n", @prepare_errors), '', 'every PREPARE TRANSACTION of a dequeue or a limit change worked');

# ---------------------------------------------------------------- drain

# A dequeue in REPEATABLE READ is refused (the one invalid call a client cannot
# make from inside its procedure).
my ($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM queue_engine.dequeue(ARRAY['free']); COMMIT;},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  25000/, 'dequeue in REPEATABLE READ is refused with 25000');

# Limits off, queues resumed, then everything to a final state.
bq(q{
SELECT queue_engine.alter_queue(queue, clear => ARRAY['concurrency_limit', 'key_concurrency_limit'])
  FROM queue_engine.queues WHERE dropped_at IS NULL;
SELECT queue_engine.resume_queue(queue) FROM queue_engine.queues WHERE dropped_at IS NULL AND paused;
SELECT queue_engine.set_tenant_limit(tenant, NULL) FROM queue_engine.tenants;
CREATE PROCEDURE fuzz_drain(seconds float8) LANGUAGE plpgsql AS $$
DECLARE
	stop timestamptz := clock_timestamp() + seconds * interval '1 second';
	ids bigint[];
	atts int[];
BEGIN
	LOOP
		PERFORM queue_engine.promote_delayed(), queue_engine.expire_runs(), queue_engine.rescue_stalled();
		SELECT array_agg(d.run_id), array_agg(d.attempt) INTO ids, atts
		  FROM queue_engine.dequeue(NULL, 500, worker => 'drain') d;
		IF ids IS NOT NULL THEN
			PERFORM queue_engine.complete_batch(ids, attempts => atts);
		END IF;
		COMMIT;
		EXIT WHEN clock_timestamp() > stop OR NOT EXISTS (SELECT 1 FROM queue_engine.runs
			WHERE status IN ('delayed', 'queued', 'executing', 'waiting'));
		IF ids IS NULL THEN PERFORM pg_sleep(0.05); END IF;
	END LOOP;
END $$;
});
my $drain_start = time;
bq('CALL fuzz_drain(30)');
my $drain_s = time - $drain_start;
is( bq(q{SELECT count(*) FROM queue_engine.runs WHERE status IN ('delayed', 'queued', 'executing', 'waiting')}),
	'0', sprintf('every run reached a final state (drain took %.1fs)', $drain_s));
bq(q{DO $$ BEGIN WHILE queue_engine.fold_counts() >= 10000 LOOP END LOOP; END $$});
my ($found, $nchecks) = split m{/}, bq($check);
is($found, '', "check_consistency(repair => false) finds nothing in any of its $nchecks checks");
is(bq('SELECT count(*) FROM queue_engine.consistency_log'), '0',
	'consistency_log is empty (the worker never repaired anything during the load)');
is( bq(q{SELECT coalesce(string_agg(format('client %s: %s=%s at %s', client, check_name, found, at), '; '), '')
            FROM fuzz_drift}),
	'', 'check_consistency(false) in the middle of the load found nothing');
is( bq(q{SELECT coalesce(sum(executing), 0) || '/' || coalesce(sum(queued), 0) || '/' || coalesce(sum(delayed), 0)
            FROM queue_engine.queue_stats}),
	'0/0/0', 'queue_stats: nothing executing, queued or delayed');

# ---------------------------------------------------------------- unexpected errors

my $unexpected = bq(q{
SELECT coalesce(string_agg(format('%s x%s (%s), e.g. client %s iteration %s: %s', call, n, sqlstate,
								  client, iteration, message), E'\n' ORDER BY n DESC), '')
  FROM (SELECT call, sqlstate, count(*) AS n, min(client) AS client, min(iteration) AS iteration,
			   min(message) AS message
		  FROM fuzz_unexpected GROUP BY call, sqlstate) u});
is($unexpected, '', 'no call raised a SQLSTATE it must not raise (XX000, deadlock, no error for invalid input, ...)');

# ---------------------------------------------------------------- the limit replay

# (A psql of its own: the background session would copy the whole log into the test's log.)
# The log as status changes (old, new): a start is an attempt's first
# arrival in executing, an exit its last departure from it (later arrivals
# and earlier departures of the same attempt are the segment rotation moving
# it), to the final state it arrived in within the same transaction, or to
# 'pending' (queued or delayed, which are not logged); an arrival in
# finished_runs from a pending state is a change too.  The old status is
# the run's previous change in commit order ('pending' before its first).
# A finished run moved back to pending is seen when it starts again.
my $events = sql(q{
WITH fuzz_moves AS (
	SELECT t.*, (extract(epoch FROM pg_xact_commit_timestamp(t.txid::text::xid)) * 1000000)::bigint AS ts,
		   CASE WHEN t.ev = '-'
				THEN coalesce((SELECT f.state FROM fuzz_trans f
								WHERE f.txid = t.txid AND f.run_id = t.run_id AND f.ev = '+'
								  AND f.state <> 'executing' LIMIT 1), 'pending')
				ELSE t.state END AS new_status
	  FROM fuzz_trans t
	 WHERE (t.ev = '+' AND t.state = 'executing'
			AND NOT EXISTS (SELECT 1 FROM fuzz_trans o
							 WHERE o.run_id = t.run_id AND o.attempt = t.attempt AND o.ev = '+'
							   AND o.state = 'executing' AND o.seq < t.seq))
		OR (t.ev = '-'
			AND NOT EXISTS (SELECT 1 FROM fuzz_trans o
							 WHERE o.run_id = t.run_id AND o.attempt = t.attempt AND o.ev = '-'
							   AND o.seq > t.seq))
		OR (t.ev = '+' AND t.state <> 'executing'
			AND NOT EXISTS (SELECT 1 FROM fuzz_trans o
							 WHERE o.txid = t.txid AND o.run_id = t.run_id AND o.ev = '-')))
SELECT e.kind, (extract(epoch FROM pg_xact_commit_timestamp(e.txid::text::xid)) * 1000000)::bigint, e.txid, e.seq,
	   e.a, e.b, e.c, e.d, e.e, e.f, e.g, e.h, e.i, e.j
  FROM (SELECT 'r' AS kind, txid, seq, run_id::text AS a, queue_id::text AS b, tenant_id::text AS c,
			   coalesce(ckey, '') AS d,
			   coalesce(lag(new_status) OVER (PARTITION BY run_id ORDER BY ts, txid, seq), 'pending') AS e,
			   new_status AS f,
			   (attempt > max_attempts)::text AS g,
			   (attempt = 1 AND expires_at IS NOT NULL AND started_at >= expires_at)::text AS h,
			   coalesce(worker, '') AS i,
			   (extract(epoch FROM started_at) * 1000000)::bigint AS j
		  FROM fuzz_moves
		UNION ALL
		SELECT kind, txid, seq, id::text, NULL, NULL, NULL, NULL,
			   coalesce(qlimit::text, ''), coalesce(klimit::text, ''), coalesce(paused::text, 'false'), NULL, NULL
		  FROM fuzz_defs) e
 ORDER BY 2, 3, 4});
my $qnames = bq(q{SELECT string_agg(q.queue_id || '=' || q.queue, ' ') FROM queue_engine.queues q});
my %qname = map { split /=/ } split / /, $qnames;
my $tnames = bq(q{SELECT string_agg(tenant_id || '=' || tenant, ' ') FROM queue_engine.tenants});
my %tname = map { split /=/ } split / /, $tnames;

my (%hist, %exec_q, %exec_t, %exec_k);
my (%breach, @examples, @log_problems);
my (%race, %lowered);
my ($starts, $exits, $limit_changes, $no_ts, $paused_open_across) = (0, 0, 0, 0, 0);
my %final = map { $_ => 1 } qw(completed failed canceled expired);

# When the queue's current pause (or drop) began, as seen at $ts.
sub paused_since
{
	my ($key, $ts) = @_;
	my $h = $hist{$key};
	my $since;
	for (my $i = $#$h; $i >= 0; $i--)
	{
		next if $h->[$i][0] > $ts;
		last if $h->[$i][3] ne 'true';
		$since = $h->[$i][0];
	}
	return $since;
}

# The limit in force for a start committed at $ts: the highest one in force at
# any moment in [$ts - tolerance, $ts] (undef: unlimited).  $field: 0 queue
# limit, 1 key limit, 2 paused (true only if paused throughout).
sub lenient
{
	my ($key, $field, $ts) = @_;
	my $h = $hist{$key} or return $field == 2 ? 0 : undef;
	my ($max, $seen_unlimited, $all_paused) = (undef, 0, 1);
	for (my $i = $#$h; $i >= 0; $i--)
	{
		my ($t, @v) = @{ $h->[$i] };
		next if $t > $ts;
		my $v = $v[$field];
		if ($field == 2) { $all_paused &&= ($v eq 'true'); }
		elsif ($v eq '') { $seen_unlimited = 1; }
		elsif (!defined $max || $v > $max) { $max = $v; }
		last if $t <= $ts - $tolerance_us;
	}
	return $all_paused if $field == 2;
	return $seen_unlimited ? undef : $max;
}

# How long before $ts the queue's or tenant's settings last changed, and
# whether the starting transaction ($began: its now(), i.e. started_at) was
# already open then: "open across" is the race of issue 14 item 1 (a dequeue
# still uncommitted while the limit is set or lowered); "began after" would
# be a different bug (e.g. a stale cached limit).
sub last_change
{
	my ($key, $ts, $began) = @_;
	my $h = $hist{$key} or return 'never changed';
	for (my $i = $#$h; $i >= 0; $i--)
	{
		my $t = $h->[$i][0];
		next if $t > $ts;
		my $open = $began < $t;
		return sprintf('settings last changed %.1f ms before; the dequeue %s that', ($ts - $t) / 1000.0,
			$open ? 'was open across' : 'began after');
	}
	return 'never changed';
}

for my $line (split /\n/, $events)
{
	my ($kind, $ts, $txid, $seq, @f) = split /\|/, $line, -1;
	if ($ts eq '') { $no_ts++; next; }
	if ($kind eq 'q' || $kind eq 't')
	{
		my ($id, undef, undef, undef, undef, $lim, $klim, $paused) = @f;
		push @{ $hist{"$kind$id"} }, [ $ts, $lim, $klim, $paused ];
		$limit_changes++;
		my $n = $kind eq 'q' ? $exec_q{$id} : $exec_t{$id};
		$lowered{$kind eq 'q' ? 'queue' : 'tenant'}++ if $lim ne '' && ($n // 0) > $lim;
		next;
	}
	my ($run, $qid, $tid, $key, $old, $new, $too_many, $expired, $worker, $began) = @f;
	# (a dropped queue's row is deleted once retention removed its runs)
	$qname{$qid} //= "#$qid (dropped)";
	push @log_problems, "run $run changed from final state $old to $new" if $final{$old};
	if ($new eq 'executing')
	{
		$starts++;
		my @why;
		my $ql = lenient("q$qid", 0, $ts);
		push @why, "queue $qname{$qid}: $exec_q{$qid} executing, limit $ql ("
		  . last_change("q$qid", $ts, $began) . ')'
		  if defined $ql && ($exec_q{$qid} // 0) >= $ql;
		my $tl = lenient("t$tid", 0, $ts);
		push @why, "tenant $tname{$tid}: $exec_t{$tid} executing, limit $tl ("
		  . last_change("t$tid", $ts, $began) . ')'
		  if defined $tl && ($exec_t{$tid} // 0) >= $tl;
		my $kl = $key eq '' ? undef : lenient("q$qid", 1, $ts);
		push @why, "key $qname{$qid}/$key: $exec_k{$qid}{$key} executing, key limit $kl ("
		  . last_change("q$qid", $ts, $began) . ')'
		  if defined $kl && ($exec_k{$qid}{$key} // 0) >= $kl;
		for my $w (@why)
		{
			my ($what) = $w =~ /^(\w+)/;
			$breach{"$what limit"}++;
		}
		if (lenient("q$qid", 2, $ts))
		{
			# Only a dequeue that began after the pause (or drop) committed is
			# held to it: whether one already open must see it is not promised.
			my $since = paused_since("q$qid", $ts);
			if ($began > $since)
			{
				push @why, sprintf('queue %s paused or dropped %.1f ms before, and the dequeue began after that',
					$qname{$qid}, ($ts - $since) / 1000.0);
				$breach{'start in a paused or dropped queue'}++;
			}
			else
			{
				$paused_open_across++;
			}
		}
		if ($too_many eq 'true')  { push @why, 'attempt beyond max_attempts'; $breach{'attempts'}++; }
		if ($expired eq 'true')   { push @why, 'first attempt started after its ttl'; $breach{'ttl'}++; }
		if (@why)
		{
			push @examples, "run $run (worker '$worker', tx $txid): " . join('; ', @why);
			$race{ (grep { /began after/ } @why) ? 'began after' : 'open across' }++;
		}
		$exec_q{$qid}++;
		$exec_t{$tid}++;
		$exec_k{$qid}{$key}++ if $key ne '';
	}
	if ($old eq 'executing')
	{
		$exits++;
		$exec_q{$qid}--;
		$exec_t{$tid}--;
		$exec_k{$qid}{$key}-- if $key ne '';
		push @log_problems, "run $run left executing without a logged start" if $exec_q{$qid} < 0;
	}
}
my @left = grep { $exec_q{$_} != 0 } keys %exec_q;
push @log_problems, "$no_ts logged changes have no commit timestamp" if $no_ts;
push @log_problems, 'the replay ends with executing runs in queues ' . join(',', map { $qname{$_} } @left)
  . ' (the engine has none)' if @left;
is(join("\n", @log_problems[ 0 .. ($#log_problems < 9 ? $#log_problems : 9) ]), '',
	"the replay's log is complete and no final run changed ($starts starts, $exits exits, $limit_changes queue/tenant changes)");

for my $what ('queue limit', 'tenant limit', 'key limit', 'start in a paused or dropped queue', 'ttl', 'attempts')
{
	is($breach{$what} // 0, 0, "replay: no breach ($what)");
}
if (@examples)
{
	diag(scalar(@examples) . " breaching starts (seed $seed), first ones:");
	diag("  $_") for @examples[ 0 .. ($#examples < 14 ? $#examples : 14) ];
}

# ---------------------------------------------------------------- summary

my $calls = bq(q{
SELECT string_agg(format('  %-36s %6s  %s', call, total, outcomes), E'\n' ORDER BY call)
  FROM (SELECT call, sum(n) AS total,
			   string_agg(outcome || '=' || n, ' ' ORDER BY n DESC) AS outcomes
		  FROM (SELECT call, outcome, sum(n)::int AS n FROM fuzz_calls GROUP BY call, outcome) o
		 GROUP BY call) c});
my $errors = bq(q{
SELECT coalesce(string_agg(outcome || '=' || n, ' ' ORDER BY n DESC), 'none')
  FROM (SELECT outcome, sum(n) AS n FROM fuzz_calls WHERE outcome <> 'ok' GROUP BY outcome) e});
my $runs = bq(q{SELECT sum(n) || ' runs left (after pruning), ' || string_agg(status || '=' || n, ' ')
  FROM (SELECT status, count(*) n FROM queue_engine.runs GROUP BY status) s});
diag(sprintf("010_fuzz summary (seed %d): load %.1fs, drain %.1fs", $seed, $load_s, $drain_s));
diag("calls per function (outcome=count):\n$calls");
diag("errors by SQLSTATE: $errors");
diag("prepared transactions: "
	  . join(' ', map { "$_=$prepared{$_}" } sort keys %prepared));
diag("replay: $starts starts, $exits exits, $limit_changes queue/tenant changes, limits set below the executing count: "
	  . (%lowered ? join(' ', map { "$_=$lowered{$_}" } sort keys %lowered) : 'none'));
diag("breaching starts: "
	  . (%breach ? join(' ', map { "$_=$breach{$_}" } sort keys %breach) : 'none')
	  . (%race ? '; the dequeue ' . join(', ', map { "$_ the last change: $race{$_}" } sort keys %race) : ''));
diag("runs: $runs");
diag("starts committed into a queue paused or dropped while their dequeue was open (not counted as breaches): "
	  . $paused_open_across);

cmp_ok($starts, '>', 500, 'the load started runs');

$session->quit;
$node->stop;
done_testing();
