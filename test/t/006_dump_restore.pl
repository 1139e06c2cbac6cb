# 006_dump_restore.pl: a live engine survives pg_dump (custom format) and
# pg_restore into a new database.
#
# Proves, on a cluster of its own (shared_preload_libraries = 'queue_engine'):
#  - every table and sequence of the extension is marked for pg_dump
#    (pg_extension_config_dump), so a table or sequence added later without
#    the mark fails here;
#  - after the restore every run (queued, delayed, executing, completed,
#    failed, canceled, expired; several tenants and queues, limited ones,
#    a dropped queue, idempotency keys), every queue, tenant (the default
#    tenant's limit included), idempotency key and count is identical, and
#    so is every sequence (run ids, tenant and queue ids, the tenant cursor);
#  - in the restored database new tenants and queues get fresh ids and
#    work: set_tenant_limit on a new tenant sets it, create_queue makes
#    queues (in a new tenant, in the default tenant, under a dropped
#    queue's name) that take runs;
#  - the restored limits hold (a full queue and full keys start nothing),
#    idempotency keys still return their runs, the run dequeued before the
#    dump completes with its attempt, the stalled one is rescued, and every
#    run drains; check_consistency(false) then finds nothing.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use QeFixture;

my $node = PostgreSQL::Test::Cluster->new('dump_restore');
$node->init;
# The worker serves the postgres database (no extension there); the tests
# drive every task by hand in their own databases.
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_enabled = off
});
$node->start;

sub sql { my ($db, $q) = @_; return scalar $node->safe_psql($db, $q); }

$node->safe_psql('postgres', 'CREATE DATABASE src');
sql('src', 'CREATE EXTENSION queue_engine');

# ------------------------------------------------ everything is marked for the dump

is( sql('src', q{
SELECT coalesce(string_agg(c.oid::regclass::text, ', ' ORDER BY c.relname), 'none')
  FROM pg_depend d
  JOIN pg_class c ON c.oid = d.objid
  JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
   AND d.deptype = 'e' AND e.extname = 'queue_engine'
   AND c.relkind IN ('r', 'p', 'S')
   AND c.oid <> ALL (e.extconfig)}),
	'none', 'every table and sequence of the extension is in pg_dump\'s data (extconfig)');
is( sql('src', q{
SELECT count(*) FROM pg_extension e, unnest(e.extconfig) AS x(cfg)
 WHERE e.extname = 'queue_engine' AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.cfg)}),
	'0', 'extconfig names no relation that is gone (0.1\'s runs table, dropped by the 0.2 update)');
is( sql('src', q{
SELECT coalesce(string_agg(c.relname || ': ' || x.cond, ', '), 'none')
  FROM pg_extension e,
       unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
  JOIN pg_class c ON c.oid = x.cfg
 WHERE e.extname = 'queue_engine' AND x.cond <> ''}),
	'none', 'no table is dumped only in part (the default tenant\'s row included)');

# ------------------------------------------------ a live source database

my $f = QeFixture::populate($node, 'src');
my $states = QeFixture::state_counts($node, 'src');
is($states, 'canceled=2 completed=2 delayed=3 executing=7 expired=1 failed=1 queued=10',
	'source: runs in every state');
# Move the dequeue(NULL) tenant cursor off its start.
sql('src', q{SELECT queue_engine.enqueue('other', '{"cursor": 1}')});
sql('src', q{SELECT queue_engine.complete(run_id, attempt => attempt) FROM queue_engine.dequeue(NULL, 1)});
is(QeFixture::consistency($node, 'src'), $QeFixture::ALL_ZERO, 'source: consistent');

# What must come back identical: every engine table, row by row, and every sequence.
my %fingerprint = (
	runs => 'SELECT md5(string_agg(r::text, \'|\' ORDER BY run_id)) FROM queue_engine.runs r',
	tenants => 'SELECT string_agg(t::text, \'|\' ORDER BY tenant_id) FROM queue_engine.tenants t',
	queues => 'SELECT string_agg(q::text, \'|\' ORDER BY queue_id) FROM queue_engine.queues q',
	idempotency_keys =>
	  'SELECT string_agg(k::text, \'|\' ORDER BY tenant_id, idempotency_key) FROM queue_engine.idempotency_keys k',
	queue_counts =>
	  'SELECT string_agg(c::text, \'|\' ORDER BY queue_id) FROM queue_engine.queue_counts c',
	queue_count_deltas => q{SELECT string_agg(format('%s:%s/%s/%s/%s', queue_id, q, d, e, w), '|' ORDER BY queue_id)
	  FROM (SELECT queue_id, sum(queued) q, sum(delayed) d, sum(executing) e, sum(waiting) w
	          FROM queue_engine.queue_count_deltas GROUP BY queue_id) s},
	queue_stats => 'SELECT string_agg(s::text, \'|\' ORDER BY queue) FROM queue_engine.queue_stats s',
	sequences => q{SELECT string_agg(format('%s=%s/%s', sequencename, last_value, coalesce(last_value, 0) > 0), ' '
	  ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'queue_engine'},
);
my %before = map { $_ => sql('src', $fingerprint{$_}) } keys %fingerprint;
like($before{tenants}, qr/\(1,default,5,/, 'source: the default tenant has limit 5');

# ------------------------------------------------ pg_dump -Fc, pg_restore into a new database

my $dump = $PostgreSQL::Test::Utils::tmp_check . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('src'), '-f', $dump ], 'pg_dump -Fc of the live database');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), $dump ],
	'pg_restore into a new database');

for my $what (sort keys %fingerprint)
{
	is(sql('dst', $fingerprint{$what}), $before{$what}, "restored: $what identical");
}
is(QeFixture::consistency($node, 'dst'), $QeFixture::ALL_ZERO, 'restored: consistent');

# ------------------------------------------------ new tenants and queues get fresh ids and work

my ($max_tenant, $max_queue) = split /\|/,
  sql('dst', 'SELECT (SELECT max(tenant_id) FROM queue_engine.tenants), (SELECT max(queue_id) FROM queue_engine.queues)');
my ($rc, $out, $err) = $node->psql('dst', q{
SELECT queue_engine.set_tenant_limit('newco', 1);
SELECT queue_engine.create_queue('fresh', tenant => 'newer', concurrency_limit => 1);
SELECT queue_engine.create_queue('fresh_default');
SELECT queue_engine.create_queue('gone', tenant => 'initech');
SELECT queue_engine.create_queue('newco_q', tenant => 'newco');
});
is($rc, 0, 'restored: set_tenant_limit and create_queue succeed') or diag($err);
is( sql('dst', q{SELECT string_agg(format('%s:%s', tenant, concurrency_limit), ' ' ORDER BY tenant_id)
                   FROM queue_engine.tenants WHERE tenant IN ('newco', 'newer')}),
	'newco:1 newer:', 'restored: set_tenant_limit created the new tenant with its limit');
is( sql('dst', qq{SELECT count(*) FROM queue_engine.tenants WHERE tenant IN ('newco', 'newer') AND tenant_id > $max_tenant}),
	'2', 'restored: new tenants get fresh ids');
is( sql('dst', qq{SELECT string_agg(queue, ',' ORDER BY queue_id) FROM queue_engine.queues WHERE queue_id > $max_queue}),
	'fresh,fresh_default,gone,newco_q', 'restored: new queues get fresh ids');
is( sql('dst', q{SELECT string_agg(format('%s=%s', q.queue, t.tenant), ' ' ORDER BY q.queue_id)
                   FROM queue_engine.queues q JOIN queue_engine.tenants t USING (tenant_id)
                  WHERE q.queue IN ('fresh', 'fresh_default', 'newco_q')}),
	'fresh=newer fresh_default=default newco_q=newco', 'restored: each new queue is in its tenant');
my $new_runs = sql('dst', q{
SELECT count(queue_engine.enqueue(q, jsonb_build_object('new', i)))
  FROM unnest(ARRAY['fresh', 'fresh_default', 'gone', 'newco_q']) q, generate_series(1, 3) i});
is($new_runs, '12', 'restored: the new queues take runs');
like(sql('dst', q{SELECT queue_engine.enqueue('plain', '{"after": 1}')}), qr/^\d+$/, 'restored: old queues take runs');
cmp_ok(sql('dst', q{SELECT max(run_id) FROM queue_engine.runs}), '>',
	sql('src', q{SELECT max(run_id) FROM queue_engine.runs}), 'restored: new runs get fresh ids');

# ------------------------------------------------ restored limits and keys hold

is(sql('dst', q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['limited'], 10)}), '0',
	'restored: a queue at its limit (2 executing) starts nothing');
is(sql('dst', q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['keyed'], 10)}), '0',
	'restored: keys at their limit start nothing');
for my $key (sort keys %{ $f->{idempotency} })
{
	is( sql('dst', qq{SELECT queue_engine.enqueue('plain', '{}', idempotency_key => '$key')}),
		$f->{idempotency}{$key}, "restored: idempotency key $key returns its run");
}

# ------------------------------------------------ drain

my $open = sql('dst', q{SELECT count(*) FROM queue_engine.runs WHERE status IN ('queued', 'delayed', 'executing', 'waiting')});
my $n = QeFixture::drain($node, 'dst', $f, 'restored');
is($n, $open, "restored: each of the $open open runs completed once");
is(QeFixture::consistency($node, 'dst'), $QeFixture::ALL_ZERO, 'restored and drained: check_consistency(false) finds nothing');
is(sql('dst', 'SELECT count(*) FROM queue_engine.consistency_log'), '0', 'restored: consistency_log empty');
is( sql('dst', q{SELECT count(*) FROM queue_engine.queue_stats WHERE queued + delayed + executing + waiting > 0}),
	'0', 'restored: queue_stats shows nothing open');

$node->stop;
done_testing();
