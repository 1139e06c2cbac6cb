# QeFixture.pm: a live engine with runs in every state, and draining it, for
# the TAP tests that carry a database across a boundary (006_dump_restore:
# pg_dump/pg_restore; 007_upgrade and 011_upgrade_from_release: ALTER
# EXTENSION UPDATE).
#
#   my $f = QeFixture::populate($node, $db);   # queues, tenants, runs in every state
#   QeFixture::state_counts($node, $db)        # 'canceled=2 completed=2 ...'
#   QeFixture::drain($node, $db, $f)           # finish every run the fixture left open
#   QeFixture::consistency($node, $db)         # check_consistency(false), one line
#   QeFixture::fingerprints($node, $db)        # { runs => md5, queues => ..., ... } (0.1.0 columns)
#   QeFixture::schema_dump($node, $db)         # pg_dump --schema-only --binary-upgrade, normalised
#   QeFixture::catalog($node, $db)             # the extension's objects from the catalogs, one a line
#   QeFixture::same_text($got, $want, $name)   # is() for long texts: a unified diff when they differ
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
use IPC::Run;
use PostgreSQL::Test::Utils;

our $ALL_ZERO = 'children_waits_satisfied=0/0 executing_without_lease=0/0 lease_on_idle_run=0/0 '
  . 'orphan_idempotency_keys=0/0 queue_counts=0/0 ready_key_placement=0/0 runs_in_two_places=0/0 runs_of_unknown_queue=0/0 shared_queue_slots=0/0';

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

# What a run, key, queue, tenant and queue_stats row held in 0.1.0: only the
# 0.1.0 columns, so columns that later updates add do not count.  A run's
# attempt_lease and queue_slot count while it executes only: 0.1 left them
# on a run after its attempt ended (unused), and since 0.2 (runs is a view
# of the table a run is in) only executing runs have them.
our %FINGERPRINT = (
	runs => q{SELECT md5(string_agg(format('%s', ROW(run_id, queue_id, tenant_id, status, attempt, max_attempts,
	  priority, run_at, expires_at, lease_expires_at, lease,
	  CASE WHEN status = 'executing' THEN attempt_lease END, CASE WHEN status = 'executing' THEN queue_slot END,
	  created_at, started_at,
	  finished_at, concurrency_key, worker, idempotency_key, parent_run_id, tags, payload, last_error, output)),
	  '|' ORDER BY run_id)) FROM queue_engine.runs},
	idempotency_keys => q{SELECT string_agg(format('%s', ROW(tenant_id, idempotency_key, run_id, expires_at)), '|'
	  ORDER BY tenant_id, idempotency_key) FROM queue_engine.idempotency_keys},
	queues => q{SELECT string_agg(format('%s', ROW(queue_id, queue, tenant_id, concurrency_limit, key_concurrency_limit,
	  max_attempts, lease, retry_backoff, retry_backoff_max, ttl, paused, created_at, dropped_at)), '|'
	  ORDER BY queue_id) FROM queue_engine.queues},
	tenants => q{SELECT string_agg(format('%s', ROW(tenant_id, tenant, concurrency_limit, created_at)), '|'
	  ORDER BY tenant_id) FROM queue_engine.tenants},
	queue_stats => q{SELECT string_agg(format('%s', ROW(tenant, queue, paused, concurrency_limit, queued, delayed,
	  executing, waiting, oldest_queued_at)), '|' ORDER BY queue) FROM queue_engine.queue_stats},
);

sub fingerprints
{
	my ($node, $db) = @_;
	return { map { $_ => scalar $node->safe_psql($db, $FINGERPRINT{$_}) } keys %FINGERPRINT };
}

# The schema as pg_dump sees it, without what differs between any two
# databases.  Plain --schema-only prints an extension as one CREATE
# EXTENSION; binary-upgrade mode lists every member object, its grants and
# its extension membership.
sub schema_dump
{
	my ($node, $db) = @_;
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(
		[ $node->installed_command('pg_dump'), '--schema-only', '--binary-upgrade', '-d', $node->connstr($db) ],
		'>', \$stdout, '2>', \$stderr);
	die "pg_dump of $db failed: $stderr" unless $ok;
	my @keep = grep {
		!/^\\(un)?restrict /
		  && !/binary_upgrade_set_next_/                # OIDs, relfilenodes, attribute LSNs
		  && !/binary_upgrade_create_empty_extension/   # extconfig OIDs: compared by name instead
		  && !/relfrozenxid|relminmxid/
		  && !/^WHERE oid = '\d+';$/
		  && !/pg_catalog\.setval\(/                     # sequence positions: data
	} split /\n/, $stdout;
	return join("\n", @keep) . "\n";
}

# The extension's objects as the catalogs hold them, one sorted line each:
# every member object; routines with their signatures, results, privileges
# and definitions; relations, columns (in order), defaults, constraints,
# indexes, triggers, policies, sequences, views, inheritance (segments and
# partitions); types (enum labels in order); the tables and sequences
# marked for pg_dump and their conditions; the schema's owner and
# privileges.  Names only, no OIDs, so two databases compare line by line.
sub catalog
{
	my ($node, $db) = @_;
	return scalar $node->safe_psql($db, q{
WITH ext AS (SELECT oid, extconfig, extcondition, extrelocatable FROM pg_extension WHERE extname = 'queue_engine'),
     ns AS (SELECT oid, nspname, nspowner, nspacl FROM pg_namespace WHERE nspname = 'queue_engine'),
     rel AS (SELECT c.* FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns))
SELECT line FROM (
  SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d
   WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = (SELECT oid FROM ext) AND d.deptype = 'e'
  UNION ALL
  SELECT format('routine %s returns %s kind=%s acl=%s definition=%s', p.oid::regprocedure,
                pg_get_function_result(p.oid), p.prokind, p.proacl,
                md5(CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END))
    FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM ns)
  UNION ALL
  SELECT format('relation %s kind=%s persistence=%s rls=%s/%s options=%s acl=%s', relname, relkind,
                relpersistence, relrowsecurity, relforcerowsecurity, reloptions, relacl)
    FROM rel
  UNION ALL
  SELECT format('column %s #%s %s %s notnull=%s identity=%s generated=%s default=%s collation=%s acl=%s',
                c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
                format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated,
                pg_get_expr(ad.adbin, ad.adrelid), a.attcollation::regcollation, a.attacl)
    FROM rel c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
  UNION ALL
  SELECT format('constraint %s %s %s', coalesce(c.relname, t.typname), con.conname, pg_get_constraintdef(con.oid))
    FROM pg_constraint con
    LEFT JOIN pg_class c ON c.oid = con.conrelid
    LEFT JOIN pg_type t ON t.oid = con.contypid
   WHERE con.connamespace = (SELECT oid FROM ns)
  UNION ALL
  SELECT format('index %s', pg_get_indexdef(c.oid)) FROM rel c WHERE c.relkind IN ('i', 'I')
  UNION ALL
  SELECT format('trigger %s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_trigger t JOIN rel c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT format('policy %s %s cmd=%s permissive=%s roles=%s using=%s check=%s', c.relname, p.polname, p.polcmd,
                p.polpermissive, p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid),
                pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_policy p JOIN rel c ON c.oid = p.polrelid
  UNION ALL
  SELECT format('sequence %s %s start=%s increment=%s min=%s max=%s cache=%s cycle=%s', c.relname,
                s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
    FROM pg_sequence s JOIN rel c ON c.oid = s.seqrelid
  UNION ALL
  SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid)) FROM rel c WHERE c.relkind IN ('v', 'm')
  UNION ALL
  SELECT format('inherits %s from %s #%s bound=%s', c.relname, p.relname, i.inhseqno,
                pg_get_expr(c.relpartbound, c.oid))
    FROM pg_inherits i JOIN rel c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
  UNION ALL
  SELECT format('type %s type=%s labels=%s acl=%s', t.typname, t.typtype,
                (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                t.typacl)
    FROM pg_type t WHERE t.typnamespace = (SELECT oid FROM ns)
  UNION ALL
  SELECT format('event trigger %s on %s tags=%s function=%s enabled=%s', et.evtname, et.evtevent, et.evttags,
                et.evtfoid::regproc, et.evtenabled)
    FROM pg_event_trigger et
    JOIN pg_depend d ON d.classid = 'pg_event_trigger'::regclass AND d.objid = et.oid
                    AND d.refobjid = (SELECT oid FROM ext) AND d.deptype = 'e'
  UNION ALL
  SELECT format('dumped %s where=%s', x.cfg::regclass, x.cond)
    FROM ext, unnest(ext.extconfig, ext.extcondition) AS x(cfg, cond)
  UNION ALL
  SELECT format('schema %s owner=%s acl=%s', nspname, pg_get_userbyid(nspowner), nspacl) FROM ns
  UNION ALL
  SELECT format('extension relocatable=%s', extrelocatable) FROM ext
) lines(line)
ORDER BY line COLLATE "C"});
}

# is() for long texts (a schema, a catalog): on a difference, the unified
# diff instead of both texts whole.
sub same_text
{
	my ($got, $want, $name) = @_;
	return pass($name) if $got eq $want;
	fail($name);
	my $dir = PostgreSQL::Test::Utils::tempdir;
	PostgreSQL::Test::Utils::append_to_file("$dir/want", $want);
	PostgreSQL::Test::Utils::append_to_file("$dir/got", $got);
	my ($diff) = PostgreSQL::Test::Utils::run_command([ 'diff', '-u', "$dir/want", "$dir/got" ]);
	diag($diff);
	return 0;
}

1;
