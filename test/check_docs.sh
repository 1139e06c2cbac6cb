#!/usr/bin/env bash
# test/check_docs.sh: does README.md document the whole public interface?
#
# Reads what CREATE EXTENSION would run (the install script and the update
# scripts on the path to the control file's default_version, in order, so
# the final signature of a function replaced by an update counts) and
# src/guc.c, then checks README.md:
#   - every public function or procedure has a heading (##…######) naming
#     it, and under that heading its signature "name(" and each of its
#     argument names;
#   - every view has a heading naming it;
#   - every setting queue_engine.X of src/guc.c has a table row starting
#     "| `queue_engine.X`";
#   - every signature line "name(" in a README code block names a function
#     that exists (nothing documented that was dropped or renamed).
# Public: SECURITY DEFINER functions, procedures and views.  Helpers that the
# API calls are listed in INTERNAL below; a function that is neither
# SECURITY DEFINER nor listed there is reported, so that a new function is
# either documented or declared internal on purpose.
#
# Usage: test/check_docs.sh [README]      (default: README.md of the repo)
# Exit status 0 when complete; 1 naming everything missing.  Needs only
# bash and perl (no server).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readme=${1:-$root/README.md}

# Functions the API calls internally, not meant for users (README,
# "Internal objects").
INTERNAL="count_delta_segment check_positive check_interval ensure_tenant live_queue lock_queue_name
  queue_definitions_changed queue_below_limit queue_at_limit_marked definition_change_lock
  restore_default_tenant check_name_length tenant_access_changed require_access
  require_unscoped access_privileges privilege_sql check_grant_args set_queue_paused
  run_meta_or_null current_segment runs_change queue_policy_assign move_concurrency_keys
  list_runs_page"

control=$(ls "$root"/*.control)
ext=$(basename "$control" .control)
target=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$control")
[ -n "$target" ] || { echo "check_docs: no default_version in $control" >&2; exit 1; }

# The scripts CREATE EXTENSION runs for $target: its own install script if
# there is one, else the shortest chain of updates from an install script.
mapfile -t scripts < <(cd "$root/sql" && perl -e '
  my ($ext, $target) = @ARGV;
  my (%base, %edges);
  for my $f (glob("$ext--*.sql")) {
    if ($f =~ /^\Q$ext\E--([^-]+(?:-[^-]+)*?)--(.+)\.sql$/) { push @{$edges{$1}}, $2; }
    elsif ($f =~ /^\Q$ext\E--(.+)\.sql$/) { $base{$1} = 1; }
  }
  if ($base{$target}) { print "$ext--$target.sql\n"; exit 0; }
  my @best;
  for my $b (sort keys %base) {
    my @queue = ([$b]);
    my %seen = ($b => 1);
    while (my $path = shift @queue) {
      my $v = $path->[-1];
      if ($v eq $target) { @best = @$path if !@best || @$path < @best; last; }
      for my $n (@{$edges{$v} || []}) {
        next if $seen{$n}++;
        push @queue, [@$path, $n];
      }
    }
  }
  die "check_docs: no install path to version $target in sql/\n" unless @best;
  print "$ext--$best[0].sql\n";
  print "$ext--$best[$_-1]--$best[$_].sql\n" for 1 .. $#best;
' "$ext" "$target")
[ ${#scripts[@]} -gt 0 ] || exit 1

cd "$root/sql"
perl - "$readme" "$root/src/guc.c" "$INTERNAL" "${scripts[@]}" <<'PERL'
use strict;
use warnings;

my ($readme, $gucfile, $internal, @scripts) = @ARGV;
my %internal = map { $_ => 1 } split ' ', $internal;

sub slurp { local $/; open my $fh, '<', $_[0] or die "check_docs: $_[0]: $!\n"; <$fh> }

# Split a SQL script into statements: semicolons inside quotes, dollar
# quotes and comments do not end one.
sub statements {
    my ($sql) = @_;
    my (@out, $cur);
    $cur = '';
    while (length $sql) {
        if ($sql =~ s/^(--[^\n]*\n?)//) { next; }
        if ($sql =~ s{^(/\*.*?\*/)}{}s) { next; }
        if ($sql =~ s/^(\$(\w*)\$.*?\$\2\$)//s) { $cur .= $1; next; }
        if ($sql =~ s/^('(?:[^']|'')*')//s) { $cur .= $1; next; }
        if ($sql =~ s/^;//) { push @out, $cur; $cur = ''; next; }
        $sql =~ s/^([^;'\$\-\/]+|.)//s;
        $cur .= $1;
    }
    push @out, $cur if $cur =~ /\S/;
    return @out;
}

# name => { kind, definer, args => [...] }, as left by the last script.
my %objects;
for my $script (@scripts) {
    for my $st (statements(slurp($script))) {
        $st =~ s/^\s+//;
        if ($st =~ /^CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\s+queue_engine\.(\w+)\s*\((.*?)\)\s*(?:RETURNS|AS|LANGUAGE)\b/is) {
            my ($kind, $name, $arglist) = (uc $1, $2, $3);
            my @args;
            for my $a (split /,/, $arglist) {
                $a =~ s/^\s+//;
                next unless length $a;
                $a =~ s/^(?:IN|OUT|INOUT|VARIADIC)\s+//i;
                push @args, $1 if $a =~ /^(\w+)\s+\S/;
            }
            my $body_free = $st;
            $body_free =~ s/\$(\w*)\$.*?\$\1\$//gs;
            $objects{$name} = { kind => $kind, args => \@args,
                                definer => ($body_free =~ /\bSECURITY\s+DEFINER\b/i) ? 1 : 0 };
        }
        elsif ($st =~ /^CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+queue_engine\.(\w+)/is) {
            $objects{$1} = { kind => 'VIEW', args => [], definer => 0 };
        }
        elsif ($st =~ /^DROP\s+(FUNCTION|PROCEDURE|VIEW)\s+(?:IF\s+EXISTS\s+)?queue_engine\.(\w+)/is) {
            delete $objects{$2};
        }
    }
}

my $doc = slurp($readme);
my @lines = split /\n/, $doc;

# Sections: each heading with the text up to the next heading of the same
# or a higher level.
my @sections;
for my $i (0 .. $#lines) {
    next unless $lines[$i] =~ /^(#{2,6})\s+(.*)$/;
    my ($level, $title) = (length $1, $2);
    my $j = $i + 1;
    while ($j <= $#lines) {
        last if $lines[$j] =~ /^(#{2,6})\s/ && length($1) <= $level;
        $j++;
    }
    push @sections, { title => $title, text => join("\n", @lines[$i + 1 .. $j - 1]) };
}

my @missing;
my ($nfunc, $nview, $nguc) = (0, 0, 0);
for my $name (sort keys %objects) {
    my $o = $objects{$name};
    next if $internal{$name};
    if ($o->{kind} eq 'FUNCTION' && !$o->{definer}) {
        push @missing, "function $name: not SECURITY DEFINER and not in INTERNAL of test/check_docs.sh (document it, or declare it internal)";
        next;
    }
    my @hits = grep { $_->{title} =~ /(?<![\w.])\Q$name\E(?!\w)/ } @sections;
    if (!@hits) {
        push @missing, lc($o->{kind}) . " $name: no heading in the README names it";
        next;
    }
    if ($o->{kind} eq 'VIEW') { $nview++; next; }
    my ($sec) = grep { $_->{text} =~ /(?<![\w.])\Q$name\E\(/ } @hits;
    if (!$sec) {
        push @missing, lc($o->{kind}) . " $name: its section has no signature \"$name(\"";
        next;
    }
    my @noarg = grep { $sec->{text} !~ /(?<!\w)\Q$_\E(?!\w)/ } @{$o->{args}};
    push @missing, lc($o->{kind}) . " $name: argument(s) not in its section: @noarg" if @noarg;
    $nfunc++;
}

# Signature lines in code blocks must name existing functions.
my $in_code = 0;
for my $l (@lines) {
    if ($l =~ /^```/) { $in_code = !$in_code; next; }
    next unless $in_code;
    if ($l =~ /^(\w+)\(/ && !$objects{$1}) {
        push @missing, "README documents $1(), which the install scripts do not create";
    }
}

my $guc = slurp($gucfile);
for my $g ($guc =~ /DefineCustom\w+Variable\(\s*"queue_engine\.(\w+)"/g) {
    if ($doc =~ /^\|\s*`queue_engine\.\Q$g\E`/m) { $nguc++; }
    else { push @missing, "setting queue_engine.$g: no table row \"| `queue_engine.$g`\" in the README"; }
}

if (@missing) {
    print STDERR "check_docs: $readme is missing:\n";
    print STDERR "  - $_\n" for @missing;
    exit 1;
}
printf "check_docs: %s documents %d functions, %d views and %d settings (scripts: %s)\n",
    $readme, $nfunc, $nview, $nguc, join(' ', @scripts);
PERL
