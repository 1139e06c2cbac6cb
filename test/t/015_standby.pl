# 015_standby.pl: every reading function on a streaming hot standby, while
# the primary runs a load.
#
# Proves, with a primary (shared_preload_libraries = 'queue_engine', its
# background worker serving database qe) and a hot standby made from a base
# backup and fed by streaming replication (the library preloaded there too):
#  - runs in every state (queued, delayed, executing, waiting for an event
#    and for children, completed, failed, canceled, expired), children,
#    durable steps, tags, a paused queue, a limited one and a dropped one,
#    all created on the primary after the backup, are replayed on the
#    standby;
#  - while a pgbench load enqueues, completes and fails runs of another
#    queue on the primary, the standby answers get_run, list_runs (every
#    page, unfiltered and by queue), child_runs, get_steps, queue_stats and
#    metrics() again and again, each agreeing with what the primary said of
#    the runs the load does not touch; unfiltered pages are in order, with
#    no run twice and every run of before the load;
#  - once the load stops and the standby has replayed everything: get_run of
#    every run (and one of each state), every page of list_runs unfiltered
#    and with each filter (queue, a dropped queue, tenant, status, tag,
#    created_after, created_before, a range, payload_contains, several at
#    once; a page size that cuts a batch of runs sharing created_at) equal
#    the primary's pages, and the run ids equal the primary's runs picked
#    and ordered by hand (created_at DESC, run_id DESC); child_runs,
#    get_steps, queue_stats and the gauges of metrics() equal the primary's;
#    metrics() parses as the Prometheus text format;
#  - writing functions fail on the standby with the read-only error 25006
#    (maintenance tasks with 25006 or, having nothing to do, not at all),
#    and the standby stays up and in recovery;
#  - the standby's server log has no ERROR but those 25006 ones, and nothing
#    at WARNING or above from a queue_engine background process (a worker
#    must not try to write on a standby), and no crash.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run;

my $db = 'qe';
my $load_seconds = $ENV{QE_STANDBY_LOAD_SECONDS} // 8;
# pgbench transactions per second: enough to keep replay busy, few enough
# that reading every page of the history stays quick.
my $load_rate = 150;

# ------------------------------------------------------------------ nodes

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'queue_engine'
queue_engine.database = '$db'
queue_engine.maintenance_interval = 200ms
log_line_prefix = '%m [%p] %b %e '
log_min_messages = warning
});
$primary->start;
$primary->safe_psql('postgres', "CREATE DATABASE $db");
$primary->safe_psql($db, 'CREATE EXTENSION queue_engine');

$primary->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bk', has_streaming => 1);
$standby->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'queue_engine'
queue_engine.database = '$db'
queue_engine.maintenance_interval = 200ms
hot_standby = on
log_line_prefix = '%m [%p] %b %e '
log_min_messages = warning
});
$standby->start;

sub P { return scalar $primary->safe_psql($db, $_[0]); }
sub S { return scalar $standby->safe_psql($db, $_[0]); }

sub catchup
{
	$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
}

is($standby->safe_psql($db, 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

# ------------------------------------------------------------------ data on the primary

P(q{
SELECT queue_engine.create_queue('alpha', lease => '1 hour');
SELECT queue_engine.create_queue('beta', tenant => 'acme', concurrency_limit => 3, lease => '1 hour');
SELECT queue_engine.create_queue('gamma', tenant => 'globex', lease => '1 hour');
SELECT queue_engine.create_queue('kids', tenant => 'acme', lease => '1 hour');
SELECT queue_engine.create_queue('pz', lease => '1 hour');
SELECT queue_engine.create_queue('gone', tenant => 'initech');
SELECT queue_engine.create_queue('load', tenant => 'loadco', lease => '1 hour', max_attempts => 1);
});

# alpha: a batch of 30 sharing one created_at (tags red), then 10 one by one.
P(q{SELECT count(*) FROM queue_engine.enqueue_batch('alpha',
      (SELECT array_agg(jsonb_build_object('kind', 'batch', 'n', i) ORDER BY i) FROM generate_series(1, 30) i),
      tags => ARRAY['batch', 'red'])});
for my $i (1 .. 10)
{
	my $tags = $i % 2 ? q{ARRAY['blue']} : 'NULL';
	P(qq{SELECT queue_engine.enqueue('alpha', '{"kind": "single", "n": $i}', priority => $i % 3,
	        tags => $tags, concurrency_key => 'k' || ($i % 2))});
}
P(q{
SELECT queue_engine.complete(run_id, jsonb_build_object('done', run_id), attempt => attempt)
  FROM queue_engine.dequeue(ARRAY['alpha'], 5, worker => 'w1');
SELECT queue_engine.fail(run_id, '{"message": "boom"}', attempt => attempt, permanent => true)
  FROM queue_engine.dequeue(ARRAY['alpha'], 3, worker => 'w1');
SELECT queue_engine.cancel(run_id, 'while executing') FROM queue_engine.dequeue(ARRAY['alpha'], 2);
SELECT count(*) FROM queue_engine.dequeue(ARRAY['alpha'], 3, lease => '1 hour', worker => 'w2');
SELECT queue_engine.wait_for_event(run_id, attempt, 'order.paid', match => jsonb_build_object('order', run_id))
  FROM queue_engine.dequeue(ARRAY['alpha'], 2, worker => 'w3');
SELECT queue_engine.enqueue('alpha', '{"kind": "later"}', delay => '1 hour', tags => ARRAY['later']) FROM generate_series(1, 4);
});
P(q{SELECT queue_engine.cancel(queue_engine.enqueue('alpha', '{"kind": "canceled queued"}'), 'not needed')});

# beta (acme, limit 3): keys, steps, a retry delayed for an hour.
P(q{SELECT queue_engine.enqueue('beta', jsonb_build_object('customer', 'c' || (i % 3), 'i', i),
          concurrency_key => 'c' || (i % 3), tags => ARRAY['beta', 'k' || (i % 2)])
      FROM generate_series(1, 10) i});
my ($steps_run, $steps_att) = split /\|/, P(q{
SELECT run_id, attempt FROM queue_engine.dequeue(ARRAY['beta'], 1, lease => '1 hour', worker => 'stepper')});
P(qq{
SELECT queue_engine.save_step($steps_run, $steps_att, 'fetch', '{"rows": 10}');
SELECT queue_engine.save_step($steps_run, $steps_att, 'transform', '{"ok": true}');
SELECT queue_engine.save_step($steps_run, $steps_att, 'store', NULL);
});
my ($steps_done, $steps_done_att) = split /\|/, P(q{
SELECT run_id, attempt FROM queue_engine.dequeue(ARRAY['beta'], 1, worker => 'stepper')});
P(qq{
SELECT queue_engine.save_step($steps_done, $steps_done_att, 'only', '{"x": [1, 2, 3]}');
SELECT queue_engine.complete($steps_done, '{"steps": 1}', attempt => $steps_done_att);
SELECT queue_engine.fail(run_id, '{"message": "retry later"}', attempt => attempt, retry_in => '1 hour')
  FROM queue_engine.dequeue(ARRAY['beta'], 1);
SELECT count(*) FROM queue_engine.dequeue(ARRAY['beta'], 5, lease => '1 hour');
});

# gamma (globex): an expired run, runs with a customer to look for.
my $expired = P(q{SELECT queue_engine.enqueue('gamma', '{"customer": "c9"}', ttl => '1 millisecond')});
my $deadline = time + 30;
while (time < $deadline)
{
	last if P("SELECT status FROM queue_engine.runs WHERE run_id = $expired") eq 'expired';
	usleep(20_000);
	P('SELECT queue_engine.expire_runs()');
}
P(q{
SELECT queue_engine.enqueue('gamma', jsonb_build_object('customer', 'c' || (i % 2), 'deep', jsonb_build_object('v', i)),
                            tags => ARRAY['g'])
  FROM generate_series(1, 6) i;
SELECT queue_engine.complete(run_id, attempt => attempt) FROM queue_engine.dequeue(ARRAY['gamma'], 2);
});

# A parent in alpha with five children in kids: two completed, one failed, two
# queued; the parent waits for them.
my ($parent, $parent_att) = split /\|/, P(q{
SELECT r, 1 FROM queue_engine.enqueue('alpha', '{"kind": "parent"}', priority => 100, tags => ARRAY['parent']) r});
is(P(qq{SELECT run_id FROM queue_engine.dequeue(ARRAY['alpha'], 1, worker => 'parent')}), $parent, 'the parent starts');
P(qq{SELECT queue_engine.enqueue('kids', jsonb_build_object('child', i), parent_run_id => $parent, tags => ARRAY['child'])
       FROM generate_series(1, 5) i});
P(q{
SELECT queue_engine.complete(run_id, jsonb_build_object('child_out', run_id), attempt => attempt)
  FROM queue_engine.dequeue(ARRAY['kids'], 2);
SELECT queue_engine.fail(run_id, '{"message": "child failed"}', attempt => attempt, permanent => true)
  FROM queue_engine.dequeue(ARRAY['kids'], 1);
});
is(P("SELECT queue_engine.wait_for_children($parent, $parent_att)"), 'waiting', 'the parent waits for its children');

# A paused queue with runs; a dropped queue with a finished run.
P(q{
SELECT queue_engine.enqueue('pz', jsonb_build_object('p', i)) FROM generate_series(1, 3) i;
SELECT queue_engine.pause_queue('pz');
SELECT queue_engine.enqueue('gone', '{"gone": 1}', tags => ARRAY['red']);
SELECT queue_engine.complete(run_id, attempt => attempt) FROM queue_engine.dequeue(ARRAY['gone']);
SELECT queue_engine.drop_queue('gone');
});

is( P(q{SELECT string_agg(status::text, ',' ORDER BY status) FROM (SELECT DISTINCT status FROM queue_engine.runs) s}),
	'delayed,queued,executing,waiting,completed,failed,canceled,expired',
	'the primary has runs in every state');

my %one_of = map { split /\|/ } split /\n/,
  P(q{SELECT status, min(run_id) FROM queue_engine.runs GROUP BY status});

# ------------------------------------------------------------------ reading helpers

# Every page of list_runs(<args>) through one psql session: each row as
# "run_id|whole row" (a continuation row as "CONT|..."), and the page count.
sub list_all
{
	my ($session, $args, $page_size) = @_;
	my ($after, $pages, @rows) = ('NULL', 0);
	$args = $args eq '' ? '' : "$args, ";
	while (1)
	{
		die "list_runs($args): more than 5000 pages" if ++$pages > 5000;
		my $out = $session->query_safe(qq{
SELECT encode(convert_to(l.cursor, 'UTF8'), 'hex'), coalesce(l.run_id::text, 'CONT'), format('%s', l)
  FROM queue_engine.list_runs(${args}after => $after, page_size => $page_size) l});
		my @page = map { [ split /\|/, $_, 3 ] } grep { $_ ne '' } split /\n/, $out;
		last unless @page;
		push @rows, map { "$_->[1]|$_->[2]" } @page;
		$after = "convert_from(decode('$page[-1][0]', 'hex'), 'UTF8')";
		# (a page that ends with a continuation row may be short: go on)
		last if @page < $page_size && $page[-1][1] ne 'CONT';
	}
	return (\@rows, $pages);
}

# The run ids of such a listing (continuation rows left out).
sub ids_of
{
	my ($rows) = @_;
	return join(',', grep { $_ ne 'CONT' } map { (split /\|/, $_, 2)[0] } @$rows);
}

# The primary's runs picked and ordered by hand.
sub truth
{
	my ($where) = @_;
	return P(qq{
SELECT coalesce(string_agg(r.run_id::text, ',' ORDER BY r.created_at DESC, r.run_id DESC), '')
  FROM queue_engine.runs r
  JOIN queue_engine.queues q ON q.queue_id = r.queue_id
  JOIN queue_engine.tenants t ON t.tenant_id = r.tenant_id
 WHERE $where});
}

# get_run of the given runs, one text.
sub get_runs_sql
{
	my ($ids) = @_;
	return qq{SELECT md5(string_agg(format('%s', g), E'\\n' ORDER BY i))
	            FROM unnest('{$ids}'::bigint[]) i, queue_engine.get_run(i) g};
}

my $child_sql = qq{
SELECT string_agg(format('%s', c), E'\\n' ORDER BY c.run_id)
  FROM (SELECT * FROM queue_engine.child_runs($parent, page_size => 2)
        UNION ALL
        SELECT * FROM queue_engine.child_runs($parent, after_run_id =>
               (SELECT run_id FROM queue_engine.child_runs($parent, page_size => 2) ORDER BY run_id DESC LIMIT 1),
               page_size => 1000)) c};
my $steps_sql = qq{
SELECT string_agg(format('%s', s), E'\\n')
  FROM (SELECT * FROM queue_engine.get_steps($steps_run)
        UNION ALL SELECT * FROM queue_engine.get_steps($steps_done)) s};
my $stats_sql = q{
SELECT string_agg(format('%s', s), E'\n' ORDER BY s.queue) FROM queue_engine.queue_stats s};
my $static_stats_sql = q{
SELECT string_agg(format('%s', s), E'\n' ORDER BY s.queue) FROM queue_engine.queue_stats s WHERE s.queue <> 'load'};

# Checks a metrics() text against the Prometheus text format 0.0.4; returns
# the list of problems (empty when it parses).
sub metrics_problems
{
	my ($text) = @_;
	my (@bad, %type);
	my $label = qr/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"/;
	my $value = qr/(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN)/;
	my $samples = 0;
	for my $line (split /\n/, $text)
	{
		next if $line eq '';
		if ($line =~ /^#/)
		{
			if (my ($n, $t) = $line =~ /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$/)
			{
				push @bad, "bad type: $line" unless $t =~ /^(counter|gauge|histogram|summary|untyped)$/;
				push @bad, "two # TYPE lines for $n" if exists $type{$n};
				$type{$n} = $t;
			}
			elsif ($line !~ /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* /)
			{
				push @bad, "bad comment: $line" if $line =~ /^# (HELP|TYPE)/;
			}
			next;
		}
		if ($line !~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:$label(?:,$label)*,?)?\})? ($value)(?: -?[0-9]+)?$/)
		{
			push @bad, "bad sample: $line";
			next;
		}
		$samples++;
		my $name = $1;
		(my $family = $name) =~ s/_(bucket|sum|count)$//;
		push @bad, "no # TYPE for $name"
		  unless exists $type{$name} || (exists $type{$family} && $type{$family} =~ /histogram|summary/);
	}
	push @bad, 'no samples' unless $samples;
	return @bad;
}

# The samples of metrics() that the primary and a replica of it must agree
# on: the run gauges, limits and pause flags of the given queues (or all).
sub table_gauges
{
	my ($text, $skip_queue) = @_;
	my @l = grep { /^queue_engine_(runs|concurrency_limit|queue_paused)\{/ } split /\n/, $text;
	@l = grep { !/queue="\Q$skip_queue\E"/ } @l if defined $skip_queue;
	return join("\n", sort @l);
}

# ------------------------------------------------------------------ what the primary says

catchup();
my $static_ids = P(q{SELECT string_agg(run_id::text, ',' ORDER BY run_id) FROM queue_engine.runs});
my %want = (
	get_runs => P(get_runs_sql($static_ids)),
	children => P($child_sql),
	steps => P($steps_sql),
	stats => P($static_stats_sql),
	gauges => table_gauges(P('SELECT queue_engine.metrics()'), 'load'),
);
my $psess = $primary->background_psql($db);
my ($alpha_rows) = list_all($psess, q{queue => 'alpha'}, 7);
$want{alpha} = join("\n", @$alpha_rows);
is(ids_of($alpha_rows), truth(q{q.queue = 'alpha'}), "primary: list_runs(queue => 'alpha') pages agree with the runs");

# ------------------------------------------------------------------ reads on the standby under load

my $dir = PostgreSQL::Test::Utils::tempdir;
my %scripts = (
	'enq.sql' => q{SELECT queue_engine.enqueue('load', jsonb_build_object('r', random()), tags => ARRAY['load']);},
	'batch.sql' => q{SELECT count(*) FROM queue_engine.enqueue_batch('load', array_fill('{"b": 1}'::jsonb, ARRAY[5]), tags => ARRAY['load', 'b']);},
	'work.sql' => q{
SELECT coalesce(max(run_id), 0) AS rid, coalesce(max(attempt), 0) AS att
  FROM queue_engine.dequeue(ARRAY['load'], 1, lease => '1 hour', worker => 'bench') \gset
SELECT CASE WHEN :rid > 0 THEN queue_engine.complete(:rid, '{"ok": 1}', attempt => :att) END;
},
	'fail.sql' => q{
SELECT coalesce(max(run_id), 0) AS rid, coalesce(max(attempt), 0) AS att
  FROM queue_engine.dequeue(ARRAY['load'], 1, lease => '1 hour', worker => 'bench') \gset
SELECT CASE WHEN :rid > 0 THEN queue_engine.fail(:rid, '{"message": "bench"}', attempt => :att, permanent => true) END;
},
);
my %weight = ('enq.sql' => 4, 'batch.sql' => 1, 'work.sql' => 4, 'fail.sql' => 1);
my @files;
for my $f (sort keys %scripts)
{
	PostgreSQL::Test::Utils::append_to_file("$dir/$f", $scripts{$f});
	push @files, '-f', "$dir/$f\@$weight{$f}";
}
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '2', '-j', '2', '-T', $load_seconds, '-R', $load_rate, @files,
		'-h', $primary->host, '-p', $primary->port, $db
	],
	'>', \$bench_out, '2>', \$bench_err);

my $ssess = $standby->background_psql($db, on_error_stop => 0);
my ($rounds, $max_listed, $standby_load_seen, %bad) = (0, 0, 0);
my $t_end = time + $load_seconds;
while (time < $t_end || $rounds < 2)
{
	$rounds++;
	my ($out, $err);
	my $check = sub {
		my ($what, $sql, $want) = @_;
		my ($got, $e) = $ssess->query($sql);
		if ($e)
		{
			$bad{$what} //= "error: $ssess->{stderr}";
			$ssess->{stderr} = '';
		}
		elsif (defined $want && $got ne $want)
		{
			$bad{$what} //= "differs in round $rounds:\n$got\n--- want ---\n$want";
		}
		return $got;
	};
	$check->('get_run', get_runs_sql($static_ids), $want{get_runs});
	$check->('child_runs', $child_sql, $want{children});
	$check->('get_steps', $steps_sql, $want{steps});
	$check->('queue_stats', $static_stats_sql, $want{stats});
	my $m = $check->('metrics', 'SELECT queue_engine.metrics()');
	if (!exists $bad{metrics})
	{
		my @p = metrics_problems($m);
		$bad{metrics} = join("\n", @p) if @p;
		my $g = table_gauges($m, 'load');
		$bad{metrics_gauges} //= "round $rounds:\n$g\n--- want ---\n$want{gauges}" if $g ne $want{gauges};
	}
	my $rows = eval { (list_all($ssess, q{queue => 'alpha'}, 7))[0] };
	if (!$rows) { $bad{list_alpha} //= "error: $@"; $ssess->{stderr} = ''; }
	elsif (join("\n", @$rows) ne $want{alpha}) { $bad{list_alpha} //= "differs in round $rounds"; }
	# Every page, unfiltered: in order, nobody twice, every run from before the load.
	my $all = eval { (list_all($ssess, '', 50))[0] };
	if (!$all) { $bad{list_all} //= "error: $@"; $ssess->{stderr} = ''; }
	else
	{
		my @ids = grep { $_ ne 'CONT' } map { (split /\|/, $_, 2)[0] } @$all;
		my %seen;
		my @dup = grep { $seen{$_}++ } @ids;
		$bad{list_all} //= "round $rounds: listed twice: @dup" if @dup;
		my @missing = grep { !$seen{$_} } split /,/, $static_ids;
		$bad{list_all} //= "round $rounds: missing: @missing" if @missing;
		my $load_seen = grep { /,load,loadco,/ } @$all;
		$standby_load_seen = $load_seen if $load_seen > $standby_load_seen;
		$max_listed = @ids if @ids > $max_listed;
	}
	$check->('list_load', q{SELECT count(*) FROM queue_engine.list_runs(queue => 'load', page_size => 1000)});
	$check->('list_tag', q{SELECT count(*) FROM queue_engine.list_runs(tag => 'load', status => '{completed,failed}')});
}
my $bench_ok = $bench->finish;
ok($bench_ok && $bench_err !~ /ERROR|abort/i, 'the pgbench load ran without errors') or diag("$bench_out\n$bench_err");
my ($load_tx) = $bench_out =~ /number of transactions actually processed: (\d+)/;
note("load: " . ($load_tx // '?') . " transactions; $rounds rounds of reads on the standby, up to $max_listed runs listed");
cmp_ok($load_tx // 0, '>', 100, 'the load did some work');
cmp_ok($rounds, '>=', 2, 'several rounds of reads on the standby while the load ran');
cmp_ok($standby_load_seen, '>', 0, "the standby's listings showed runs of the load");
for my $what (qw(get_run child_runs get_steps queue_stats metrics metrics_gauges list_alpha list_all list_load list_tag))
{
	is($bad{$what}, undef, "under load, on the standby: $what works and agrees with the primary");
}

# ------------------------------------------------------------------ after the load: exactly the primary

# Nothing the worker does changes what the readers show now (no lease,
# delay or ttl is due): the standby, having replayed everything, must show
# exactly what the primary shows.
catchup();

my $all_ids = P(q{SELECT string_agg(run_id::text, ',' ORDER BY run_id) FROM queue_engine.runs});
is(S(get_runs_sql($all_ids)), P(get_runs_sql($all_ids)), 'get_run of every run: the same on the standby');
for my $st (qw(queued delayed executing waiting completed failed canceled expired))
{
	my $q = "SELECT format('%s', g) FROM queue_engine.get_run($one_of{$st}) g";
	my $p = P($q);
	like($p, qr/,$st,/, "primary: run $one_of{$st} is $st");
	is(S($q), $p, "get_run of a $st run: the same on the standby");
}
is(S(qq{SELECT format('%s', g) FROM queue_engine.get_run($parent) g}),
	P(qq{SELECT format('%s', g) FROM queue_engine.get_run($parent) g}), 'get_run of the parent (waiting for children)');

my @filters = (
	[ 'no filter', '', 'true' ],
	[ 'queue', q{queue => 'alpha'}, q{q.queue = 'alpha'} ],
	[ 'queue (the load)', q{queue => 'load'}, q{q.queue = 'load'} ],
	[ 'dropped queue', q{queue => 'gone'}, q{q.queue = 'gone'} ],
	[ 'tenant', q{tenant => 'acme'}, q{t.tenant = 'acme'} ],
	[ 'status', q{status => '{waiting}'}, q{r.status = 'waiting'} ],
	[ 'statuses', q{status => '{failed,canceled,expired}'}, q{r.status IN ('failed', 'canceled', 'expired')} ],
	[ 'tag', q{tag => 'red'}, q{r.tags @> ARRAY['red']} ],
	[ 'tag (the load)', q{tag => 'b'}, q{r.tags @> ARRAY['b']} ],
);
my ($mid) = P(q{SELECT created_at FROM queue_engine.runs WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'beta')
                ORDER BY run_id LIMIT 1});
my ($late) = P(q{SELECT created_at FROM queue_engine.runs WHERE run_id = (SELECT min(run_id) FROM queue_engine.runs
                 WHERE queue_id = (SELECT queue_id FROM queue_engine.queues WHERE queue = 'load'))});
push @filters,
  [ 'created_after', "created_after => '$mid'", "r.created_at >= '$mid'" ],
  [ 'created_before', "created_before => '$mid'", "r.created_at < '$mid'" ],
  [ 'created range', "created_after => '$mid', created_before => '$late'",
	"r.created_at >= '$mid' AND r.created_at < '$late'" ],
  [ 'payload_contains', q{payload_contains => '{"customer": "c1"}'}, q{r.payload @> '{"customer": "c1"}'} ],
  [ 'payload_contains nested', q{payload_contains => '{"deep": {"v": 3}}'}, q{r.payload @> '{"deep": {"v": 3}}'} ],
  [ 'queue + status + tag', q{queue => 'alpha', status => '{queued,executing}', tag => 'red'},
	q{q.queue = 'alpha' AND r.status IN ('queued', 'executing') AND r.tags @> ARRAY['red']} ],
  [ 'tenant + tag', q{tenant => 'acme', tag => 'child'}, q{t.tenant = 'acme' AND r.tags @> ARRAY['child']} ],
  [ 'tenant + payload', q{tenant => 'acme', payload_contains => '{"customer": "c2"}'},
	q{t.tenant = 'acme' AND r.payload @> '{"customer": "c2"}'} ];

for my $f (@filters)
{
	my ($name, $args, $where) = @$f;
	my $want_ids = truth($where);
	for my $ps ($name =~ /no filter|the load/ ? (50, 1000) : (7))
	{
		my ($prows, $ppages) = list_all($psess, $args, $ps);
		my ($srows, $spages) = eval { list_all($ssess, $args, $ps) };
		if (!$srows)
		{
			fail("list_runs $name (page_size $ps) on the standby: $@");
			$ssess->{stderr} = '';
			next;
		}
		is(ids_of($prows), $want_ids, "primary: list_runs $name, page_size $ps: $ppages pages, the right runs in order");
		is(join("\n", @$srows), join("\n", @$prows), "standby: list_runs $name, page_size $ps: the same $spages pages as the primary");
	}
}
# A small scan bound (queue_engine.list_runs_max_scan, user-settable):
# pages end early with a continuation row, on the standby as on the
# primary, and following them lists exactly the right runs.
for my $sess ($psess, $ssess) { $sess->query_safe('SET queue_engine.list_runs_max_scan = 25'); }
for my $f (
	[ 'payload_contains', q{payload_contains => '{"customer": "c1"}'}, q{r.payload @> '{"customer": "c1"}'} ],
	[ 'tenant + tag', q{tenant => 'acme', tag => 'child'}, q{t.tenant = 'acme' AND r.tags @> ARRAY['child']} ],
	[ 'tenant + a tag of another tenant', q{tenant => 'acme', tag => 'load'}, q{t.tenant = 'acme' AND r.tags @> ARRAY['load']} ])
{
	my ($name, $args, $where) = @$f;
	my ($prows) = list_all($psess, $args, 7);
	my ($srows, $spages) = eval { list_all($ssess, $args, 7) };
	$srows //= [];
	my $conts = grep { /^CONT\|/ } @$srows;
	if ($name eq 'tenant + tag')
	{
		note("max_scan 25, list_runs $name on the standby: $conts continuation rows in $spages pages");
	}
	else
	{
		cmp_ok($conts, '>', 0, "max_scan 25, list_runs $name on the standby: pages end with continuation rows ($conts in $spages pages)");
	}
	is(ids_of($srows), truth($where), '... following them lists exactly the right runs');
	is(join("\n", @$srows), join("\n", @$prows), '... the same pages as on the primary');
}
for my $sess ($psess, $ssess) { $sess->query_safe('RESET queue_engine.list_runs_max_scan'); }

# The batch of 30 shares one created_at: page_size 7 cut it several times.
is(P(q{SELECT count(DISTINCT created_at) FROM queue_engine.runs WHERE tags @> ARRAY['batch']}), '1',
	'(the 30 runs of the batch share one created_at)');

is(S($child_sql), P($child_sql), 'child_runs (two pages): the same on the standby');
like(S($child_sql), qr/completed.*\n.*completed.*\n.*failed.*\n.*queued.*\n.*queued/s, '... five children: 2 completed, 1 failed, 2 queued');
is(S($steps_sql), P($steps_sql), 'get_steps: the same on the standby');
is(scalar(() = S($steps_sql) =~ /\n/g) + 1, 4, '... four steps');
is(S($stats_sql), P($stats_sql), 'queue_stats: the same on the standby');

my $sm = S('SELECT queue_engine.metrics()');
my $pm = P('SELECT queue_engine.metrics()');
is(join("\n", metrics_problems($sm)), '', "metrics() on the standby parses as Prometheus text");
is(join("\n", metrics_problems($pm)), '', "metrics() on the primary parses as Prometheus text");
is(table_gauges($sm), table_gauges($pm), 'metrics(): run gauges, limits and pause flags the same on the standby');
like($sm, qr/^queue_engine_runs\{tenant="default",queue="alpha",status="waiting"\} 3$/m,
	'... e.g. alpha has 3 runs waiting (2 for an event, the parent for its children)');
like($sm, qr/^queue_engine_queue_paused\{tenant="default",queue="pz"\} 1$/m, '... pz is paused');
like($sm, qr/^queue_engine_concurrency_limit\{tenant="acme",queue="beta"\} 3$/m, '... beta has limit 3');
like($sm, qr/^queue_engine_xmin_horizon_age_xids\{holder="replication_slot"\} /m,
	'... and the xmin horizon gauges are there');
like($sm, qr/^queue_engine_start_delay_seconds_bucket\{le="\+Inf"\} /m, '... and the start delay histogram');

# ------------------------------------------------------------------ writes on the standby

# The SQLSTATE of a statement ('ok' when it succeeded).
sub sqlstate
{
	my ($node, $sql) = @_;
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY sqlstate\n$sql");
	return 'ok' if $rc == 0;
	return $1 if $err =~ /(?:ERROR|FATAL|PANIC):\s+([0-9A-Z]{5})/;
	return "rc=$rc: $err";
}

my ($exec_run, $exec_att) = split /\|/, P(q{SELECT run_id, attempt FROM queue_engine.runs WHERE status = 'executing' ORDER BY run_id LIMIT 1});
my %writes = (
	enqueue => q{SELECT queue_engine.enqueue('alpha', '{"on": "standby"}')},
	enqueue_batch => q{SELECT queue_engine.enqueue_batch('alpha', ARRAY['{}'::jsonb, '{}'])},
	dequeue => q{SELECT * FROM queue_engine.dequeue(ARRAY['alpha'])},
	'dequeue any' => q{SELECT * FROM queue_engine.dequeue()},
	'dequeue wait' => q{SELECT * FROM queue_engine.dequeue(ARRAY['alpha'], wait => '2 s')},
	complete => "SELECT queue_engine.complete($exec_run, '{}', attempt => $exec_att)",
	fail => "SELECT queue_engine.fail($exec_run, '{}', attempt => $exec_att)",
	heartbeat => "SELECT queue_engine.heartbeat($exec_run, attempt => $exec_att)",
	cancel => "SELECT queue_engine.cancel($exec_run)",
	save_step => "SELECT queue_engine.save_step($exec_run, $exec_att, 'standby', '{}')",
	wait_for_event => "SELECT queue_engine.wait_for_event($exec_run, $exec_att, 'x')",
	send_event => q{SELECT * FROM queue_engine.send_event('order.paid', '{"order": 1}')},
	create_queue => q{SELECT queue_engine.create_queue('standby_q')},
	alter_queue => q{SELECT queue_engine.alter_queue('alpha', concurrency_limit => 7)},
	pause_queue => q{SELECT queue_engine.pause_queue('alpha')},
);
for my $w (sort keys %writes)
{
	is(sqlstate($standby, $writes{$w}), '25006', "standby: $w fails with the read-only error 25006");
}
my %tasks = (
	run_maintenance => q{CALL queue_engine.run_maintenance()},
	rotate_segments => q{SELECT queue_engine.rotate_segments()},
	expire_runs => q{SELECT queue_engine.expire_runs()},
	promote_delayed => q{SELECT queue_engine.promote_delayed()},
	'check_consistency(false)' => q{SELECT * FROM queue_engine.check_consistency(false)},
);
for my $w (sort keys %tasks)
{
	like(sqlstate($standby, $tasks{$w}), qr/^(ok|25006)$/, "standby: $w does nothing or fails with 25006");
}
is(S('SELECT pg_is_in_recovery()'), 't', 'the standby is still up and in recovery');
is(S(get_runs_sql($all_ids)), P(get_runs_sql($all_ids)), '... and nothing changed');

# ------------------------------------------------------------------ the standby's log

$ssess->quit;
$psess->quit;
my $log = slurp_file($standby->logfile);
my @errors = grep { /\b(ERROR|PANIC):/ && !/ 25006 ERROR:/ } split /\n/, $log;
is(join("\n", @errors), '', "the standby's log has no ERROR but the read-only ones of the writes above");
my @bg = grep { /\] queue_engine[^\]]* \S+ (WARNING|ERROR|FATAL|PANIC):/ } split /\n/, $log;
is(join("\n", @bg), '', 'nothing at WARNING or above from a queue_engine background process on the standby');
unlike($log, qr/terminated by signal|server process .* exited with exit code [^0]/, 'no process of the standby crashed');
my @perrors = grep { /\] queue_engine[^\]]* \S+ (ERROR|FATAL|PANIC):/ } split /\n/, slurp_file($primary->logfile);
is(join("\n", @perrors), '', "the primary's worker logged no error either");

# ------------------------------------------------------------------ promoted, the standby's worker starts

# (Not while it was a standby: the worker starts once recovery is over.)
$primary->stop;
$standby->promote;
my $launcher = '';
$deadline = time + 60;
while (time < $deadline)
{
	$launcher = S(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'queue_engine launcher'});
	last if $launcher eq '1';
	usleep(100_000);
}
is($launcher, '1', 'once promoted, the standby starts its queue_engine launcher');
my $soon = S(q{SELECT queue_engine.enqueue('alpha', '{"after": "promotion"}', delay => '200 ms')});
my $st = '';
$deadline = time + 60;
while (time < $deadline)
{
	$st = S("SELECT status FROM queue_engine.runs WHERE run_id = $soon");
	last if $st eq 'queued';
	usleep(100_000);
}
is($st, 'queued', '... and its worker promotes a delayed run by itself');
my @after = grep { /\] queue_engine[^\]]* \S+ (ERROR|FATAL|PANIC):/ } split /\n/, slurp_file($standby->logfile);
is(join("\n", @after), '', '... logging no error');

$standby->stop;
done_testing();
