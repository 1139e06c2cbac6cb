# 008_schema_owner.pl: CREATE EXTENSION refuses a queue_engine schema that
# a non-superuser role created beforehand, and the normal paths still work.
#
# Proves, on a cluster of its own (PostgreSQL 15 behaviour first):
#  - CREATE EXTENSION creates schema queue_engine (the control file's
#    schema) when it is absent, owned by the installing role and not a
#    member of the extension; DROP EXTENSION leaves it behind, empty; a
#    second CREATE EXTENSION by the same role adopts it (reinstall works);
#  - a schema pre-created by a non-superuser makes CREATE EXTENSION (default
#    version and VERSION '0.1.0') fail with 42501, the message naming the
#    schema and its owner, DETAIL and HINT; nothing changed (no extension,
#    the schema still the role's and empty); after the HINT's ALTER SCHEMA
#    ... OWNER TO the installing role, it installs;
#  - a schema pre-created by another superuser is accepted, which is what
#    pg_restore does (CREATE SCHEMA, ALTER SCHEMA OWNER TO the dumped owner,
#    then CREATE EXTENSION): a dump whose schema belongs to another
#    superuser restores.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('schema_owner');
$node->init;
$node->start;

sub sql { my ($db, $q, @opt) = @_; return scalar $node->safe_psql($db, $q, @opt); }

my $schema_row = q{SELECT coalesce((SELECT format('%s owner=%s members=%s objects=%s', n.nspname,
         pg_get_userbyid(n.nspowner),
         (SELECT count(*) FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
             AND d.objid = n.oid AND d.deptype = 'e'),
         (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid)
       + (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = n.oid)
       + (SELECT count(*) FROM pg_type t WHERE t.typnamespace = n.oid))
  FROM pg_namespace n WHERE n.nspname = 'queue_engine'), 'absent')};
my $ext = q{SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'queue_engine'), 'none')};

$node->safe_psql('postgres', q{
CREATE ROLE alice LOGIN;
CREATE ROLE boss LOGIN SUPERUSER;
CREATE DATABASE plain;
CREATE DATABASE squat;
GRANT CREATE ON DATABASE squat TO alice;
CREATE DATABASE bosses;
});

# ------------------------------------------------ PostgreSQL 15: who makes and drops the schema

is(sql('plain', $schema_row), 'absent', 'a fresh database has no queue_engine schema');
sql('plain', 'CREATE EXTENSION queue_engine');
like(sql('plain', $schema_row), qr/^queue_engine owner=postgres members=0 objects=[1-9]/,
	'CREATE EXTENSION creates the schema, owned by the installing role, not an extension member');
sql('plain', 'DROP EXTENSION queue_engine');
is(sql('plain', $schema_row), 'queue_engine owner=postgres members=0 objects=0',
	'DROP EXTENSION leaves the schema behind, empty');
sql('plain', 'CREATE EXTENSION queue_engine');
is(sql('plain', $ext), sql('postgres', q{SELECT default_version FROM pg_available_extensions WHERE name = 'queue_engine'}),
	'a reinstall by the same role adopts its own schema');
sql('plain', q{SELECT queue_engine.create_queue('q'); SELECT queue_engine.enqueue('q')});
is(sql('plain', q{SELECT count(*) FROM queue_engine.dequeue(ARRAY['q'])}), '1', '... and works');

# ------------------------------------------------ a schema squatted by a non-superuser

sql('squat', 'CREATE SCHEMA queue_engine', extra_params => [ '-U', 'alice' ]);
is(sql('squat', $schema_row), 'queue_engine owner=alice members=0 objects=0', 'alice created schema queue_engine');
for my $create ('CREATE EXTENSION queue_engine', q{CREATE EXTENSION queue_engine VERSION '0.1.0'})
{
	my ($rc, $out, $err) = $node->psql('squat', "\\set VERBOSITY verbose\n$create");
	isnt($rc, 0, "$create fails");
	like($err, qr/ERROR:  42501: schema "queue_engine" is owned by role "alice", which is neither the installing role nor a superuser/,
		'... with insufficient_privilege, naming the schema and its owner');
	like($err, qr/DETAIL:  .*owner "alice" is not "postgres" \(the installing role\)/, '... a DETAIL with the owner');
	like($err, qr/HINT:  .*ALTER SCHEMA queue_engine OWNER TO postgres/, '... and a HINT how to fix it');
	is(sql('squat', $ext), 'none', '... no extension was created');
	is(sql('squat', $schema_row), 'queue_engine owner=alice members=0 objects=0', '... the schema is unchanged');
}
sql('squat', 'ALTER SCHEMA queue_engine OWNER TO postgres');
sql('squat', 'CREATE EXTENSION queue_engine');
isnt(sql('squat', $ext), 'none', 'after the HINT\'s ALTER SCHEMA ... OWNER TO, CREATE EXTENSION works');

# ------------------------------------------------ another superuser's schema: pg_restore's path

sql('bosses', 'CREATE SCHEMA queue_engine', extra_params => [ '-U', 'boss' ]);
sql('bosses', 'CREATE EXTENSION queue_engine');
is(sql('bosses', $ext), sql('plain', $ext), 'a schema owned by another superuser is accepted');
sql('bosses', q{SELECT queue_engine.create_queue('b'); SELECT queue_engine.enqueue('b', '{"kept": 1}')});
my $dump = $PostgreSQL::Test::Utils::tmp_check . '/bosses.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('bosses'), '-f', $dump ], 'pg_dump of it');
$node->safe_psql('postgres', 'CREATE DATABASE bosses_restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('bosses_restored'), $dump ],
	'pg_restore by postgres (the dump recreates the schema owned by boss first)');
like(sql('bosses_restored', $schema_row), qr/^queue_engine owner=boss /, '... the schema is boss\'s again');
is(sql('bosses_restored', q{SELECT payload FROM queue_engine.runs}), '{"kept": 1}', '... and the runs are back');

$node->stop;
done_testing();
