# 007_upgrade.pl: ALTER EXTENSION queue_engine UPDATE on a live 0.1.0
# database keeps every run and loses nothing in flight, and leaves the same
# schema as a fresh install.
#
# Proves, on a cluster of its own (shared_preload_libraries = 'queue_engine'):
#  - a database made with CREATE EXTENSION queue_engine VERSION '0.1.0'
#    updates to the default version, and then takes tenants, queues
#    (limited, keyed, dropped) and runs in every state (queued, delayed,
#    executing, completed, failed, canceled, expired; idempotency keys):
#    the stalled run is rescued, limits hold, everything drains, and
#    check_consistency(false) finds nothing (that the update keeps the
#    runs of a live 0.1.0 database is 011's: since 0.2.0 the current
#    library does not serve a 0.1.x schema, so only the 0.1.0 release can
#    make them);
#  - the updated database's schema equals a fresh CREATE EXTENSION's:
#    pg_dump --schema-only --binary-upgrade of both (plain --schema-only
#    prints an extension as one CREATE EXTENSION; binary-upgrade mode lists
#    every member object, its grants and its extension membership), with
#    OIDs, xids and sequence positions taken out; and the same tables and
#    sequences are marked for pg_dump, with the same conditions; and the
#    catalogs agree too (QeFixture::catalog: members, routines with their
#    signatures and definitions, columns, indexes, triggers, types, ...).
# It compares the two paths, not a list of objects, so it keeps holding as
# later sections of the update script add objects.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use QeFixture;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'queue_engine'
queue_engine.maintenance_enabled = off
});
$node->start;

sub sql { my ($db, $q) = @_; return scalar $node->safe_psql($db, $q); }

my $default_version = sql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'queue_engine'});
isnt($default_version, '0.1.0', "the default version ($default_version) is an update from 0.1.0");

# ------------------------------------------------ a 0.1.0 database, updated

# Since 0.2.0 the current library refuses a 0.1.x schema (it asks for the
# update), so runs cannot be made here before the update: 011 makes them
# with the 0.1.0 release itself and shows that the update keeps every one.
$node->safe_psql('postgres', 'CREATE DATABASE upgraded');
sql('upgraded', q{CREATE EXTENSION queue_engine VERSION '0.1.0'});
is(sql('upgraded', q{SELECT extversion FROM pg_extension WHERE extname = 'queue_engine'}), '0.1.0',
	'installed 0.1.0');
my ($rc, $out, $err) = $node->psql('upgraded', 'ALTER EXTENSION queue_engine UPDATE');
is($rc, 0, 'ALTER EXTENSION queue_engine UPDATE') or diag($err);
is(sql('upgraded', q{SELECT extversion FROM pg_extension WHERE extname = 'queue_engine'}), $default_version,
	"updated to $default_version");
my $f = QeFixture::populate($node, 'upgraded');
is(QeFixture::state_counts($node, 'upgraded'),
	'canceled=2 completed=2 delayed=3 executing=7 expired=1 failed=1 queued=10',
	'updated: runs in every state');
is(QeFixture::consistency($node, 'upgraded'), $QeFixture::ALL_ZERO, 'updated: consistent');

# ------------------------------------------------ the engine works on

is(sql('upgraded', q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['limited'], 10)}), '0',
	'updated: a queue at its limit (2 executing) starts nothing');
($rc, $out, $err) = $node->psql('upgraded', q{
SELECT queue_engine.set_tenant_limit('newco', 1);
SELECT queue_engine.create_queue('fresh', tenant => 'newco');
SELECT count(queue_engine.enqueue('fresh', jsonb_build_object('i', i))) FROM generate_series(1, 3) i;
});
is($rc, 0, 'updated: new tenants and queues take runs') or diag($err);
is( sql('upgraded', q{SELECT queue_engine.enqueue('plain', '{}', idempotency_key => 'k-queued-1')}),
	$f->{idempotency}{'k-queued-1'}, 'updated: an idempotency key returns its run');

my $open = sql('upgraded', q{SELECT count(*) FROM queue_engine.runs WHERE status IN ('queued', 'delayed', 'executing', 'waiting')});
my $n = QeFixture::drain($node, 'upgraded', $f, 'updated');
is($n, $open, "updated: each of the $open open runs completed once");
is(QeFixture::consistency($node, 'upgraded'), $QeFixture::ALL_ZERO,
	'updated and drained: check_consistency(false) finds nothing');
is(sql('upgraded', 'SELECT count(*) FROM queue_engine.consistency_log'), '0', 'updated: consistency_log empty');

# ------------------------------------------------ same schema as a fresh install

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
sql('fresh', 'CREATE EXTENSION queue_engine');

sub schema_of { return QeFixture::schema_dump($node, $_[0]); }
my ($upgraded_schema, $fresh_schema) = (schema_of('upgraded'), schema_of('fresh'));
cmp_ok(scalar(() = $fresh_schema =~ /^ALTER EXTENSION queue_engine ADD /mg), '>', 40,
	'the binary-upgrade dump lists the extension\'s members');
like($fresh_schema, qr/^CREATE TABLE queue_engine\.ready_0 /m, '... with their definitions');
like($fresh_schema, qr/^CREATE VIEW queue_engine\.runs AS/m, '... runs among them, a view since 0.2');
QeFixture::same_text($upgraded_schema, $fresh_schema,
	'updated schema equals a fresh install\'s (pg_dump --schema-only --binary-upgrade, normalised)');
QeFixture::same_text(QeFixture::catalog($node, 'upgraded'), QeFixture::catalog($node, 'fresh'),
	'updated catalog entries equal a fresh install\'s (members, routines, columns, indexes, triggers, types, ...)');
# The comparison sees a difference in what it compares (here a grant).
sql('fresh', 'GRANT SELECT ON queue_engine.runs TO pg_monitor');
isnt(schema_of('fresh'), $fresh_schema, 'the comparison sees a grant made by hand');
sql('fresh', 'REVOKE SELECT ON queue_engine.runs FROM pg_monitor');
is(schema_of('fresh'), $fresh_schema, '... and its revoke');
my $config = q{SELECT string_agg(format('%s:%s', x.cfg::regclass, x.cond), ' ' ORDER BY x.cfg::regclass::text)
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(cfg, cond) WHERE e.extname = 'queue_engine'};
is(sql('upgraded', $config), sql('fresh', $config), 'the same tables and sequences are marked for pg_dump');
# A table dropped by an update (0.1's runs) must leave extconfig too: pg_dump
# skips an OID it cannot find, but --binary-upgrade carries it into the new
# cluster, where a later relation may get it.
my $dangling = q{SELECT count(*) FROM pg_extension e, unnest(e.extconfig) AS x(cfg)
  WHERE e.extname = 'queue_engine' AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.cfg)};
is(sql('upgraded', $dangling), '0', 'updated: no relation marked for pg_dump is gone');
is(sql('fresh', $dangling), '0', 'fresh: no relation marked for pg_dump is gone');
is( sql('upgraded', q{SELECT string_agg(format('%s=%s', nspname, pg_get_userbyid(nspowner)), ' ')
                        FROM pg_namespace WHERE nspname = 'queue_engine'}),
	sql('fresh', q{SELECT string_agg(format('%s=%s', nspname, pg_get_userbyid(nspowner)), ' ')
                     FROM pg_namespace WHERE nspname = 'queue_engine'}),
	'the schema has the same owner');

$node->stop;
done_testing();
