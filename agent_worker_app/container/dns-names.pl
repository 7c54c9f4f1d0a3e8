# The names record of init-firewall.sh: a DNS forwarder on 127.0.0.1:53, run by root in the
# background (the agent can neither stop it nor write its record). It passes each UDP query to
# the resolver given and appends "address name" to the record for each A record of the answer,
# under the name asked for.
#   perl dns-names.pl RECORD RESOLVER-IPv4
# Builtins only, no pragmas: loading Socket costs 45 ms on a slow machine, strict and warnings 18.
# scripts/test compiles it under strict and warnings instead (perl -Mstrict -Mwarnings -c).
my ($record, $upstream) = @ARGV;
my $to = pack("S n C4 x8", 2, 53, split(/\./, $upstream)); # AF_INET sockaddr of the resolver
socket(my $listen, 2, 2, 17) or die "socket: $!";            # PF_INET, SOCK_DGRAM, UDP
bind($listen, pack("S n C4 x8", 2, 53, 127, 0, 0, 1)) or die "cannot listen: $!";
socket(my $up, 2, 2, 17) or die "socket: $!";
open(my $out, ">>", $record) or die "$record: $!"; select((select($out), $| = 1)[0]);
my (%pending, %seen); my $next = int(rand(65536));
my $watch = ""; vec($watch, fileno($listen), 1) = 1; vec($watch, fileno($up), 1) = 1;
sub skip { my ($m, $o) = @_;
  while ($o < length $m) { my $l = ord substr($m, $o, 1);
    return $o + 1 if $l == 0; return $o + 2 if ($l & 0xC0) == 0xC0; $o += $l + 1 }
  return -1 }
sub note { my ($m) = @_; return if length $m < 12;
  my ($qd, $an) = unpack "x4 n n", $m; return unless $qd == 1;
  my ($o, @labels) = (12);
  while ($o < length $m) { my $l = ord substr($m, $o, 1); last if $l == 0;
    return if $l >= 64; push @labels, substr($m, $o + 1, $l); $o += $l + 1 }
  my $name = lc join(".", @labels); $name =~ s/[^\x21-\x7e]/?/g; return if $name eq "";
  $o = skip($m, 12); return if $o < 0; $o += 4;
  for (1 .. $an) { $o = skip($m, $o); return if $o < 0 || $o + 10 > length $m;
    my ($type, undef, undef, $len) = unpack "n n N n", substr($m, $o, 10); $o += 10;
    return if $o + $len > length $m;
    if ($type == 1 && $len == 4) { my $line = join(".", unpack "C4", substr($m, $o, 4)) . " $name";
      if (!$seen{$line} && keys %seen < 10000) { $seen{$line} = 1; print $out "$line\n" } }
    $o += $len } }
while (1) {
  my $n = select(my $ready_now = $watch, undef, undef, 5);
  if ($n > 0 && vec($ready_now, fileno($listen), 1)) {
    my $peer = recv($listen, my $q, 4096, 0);
    if (defined $peer && length $q >= 12) {
      my $id = $next++ & 0xFFFF; $pending{$id} = [$peer, substr($q, 0, 2), time];
      substr($q, 0, 2) = pack "n", $id; send($up, $q, 0, $to) } }
  if ($n > 0 && vec($ready_now, fileno($up), 1)) {
    my $from = recv($up, my $r, 65535, 0); # answers only from the resolver asked
    if (defined $from && substr($from, 2, 6) eq substr($to, 2, 6) && length $r >= 12) {
      my $p = delete $pending{unpack "n", $r};
      if ($p) { substr($r, 0, 2) = $p->[1]; send($listen, $r, 0, $p->[0]); note($r) } } }
  my $now = time; for (keys %pending) { delete $pending{$_} if $now - $pending{$_}[2] > 10 } }
