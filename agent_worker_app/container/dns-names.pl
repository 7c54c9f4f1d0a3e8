# The names record of init-firewall.sh: a DNS forwarder on 127.0.0.1:53, run by root in the
# background (the agent can neither stop it nor write its records). A query for an allowed name
# goes on to the resolver given (the agent's own queries cannot: the firewall lets only root's
# reach it), and for each A record of the answer "address name" is appended to RECORD. A query
# for any other name is answered REFUSED at once, asks nothing of anyone, and the name (as
# asked) is appended to REFUSED: nothing leaves the container by DNS but lookups of the names
# the run allows.
#   perl dns-names.pl RECORD RESOLVER-IPv4 ALLOWED-NAMES(comma-separated) REFUSED
# Builtins only, no pragmas: loading Socket costs 45 ms on a slow machine, strict and warnings 18.
# scripts/test compiles it under strict and warnings instead (perl -Mstrict -Mwarnings -c).
my ($record, $upstream, $allowed, $refusals) = @ARGV;
my %allowed = map { (lc $_ => 1) } grep { length } split(/,/, defined $allowed ? $allowed : "");
my $to = pack("S n C4 x8", 2, 53, split(/\./, $upstream)); # AF_INET sockaddr of the resolver
socket(my $listen, 2, 2, 17) or die "socket: $!";            # PF_INET, SOCK_DGRAM, UDP
bind($listen, pack("S n C4 x8", 2, 53, 127, 0, 0, 1)) or die "cannot listen: $!";
socket(my $up, 2, 2, 17) or die "socket: $!";
open(my $out, ">>", $record) or die "$record: $!"; select((select($out), $| = 1)[0]);
open(my $refused, ">>", $refusals) or die "$refusals: $!"; select((select($refused), $| = 1)[0]);
my $refused_lines = 0;
my (%pending, %seen); my $next = int(rand(65536));
my $watch = ""; vec($watch, fileno($listen), 1) = 1; vec($watch, fileno($up), 1) = 1;
sub skip { my ($m, $o) = @_;
  while ($o < length $m) { my $l = ord substr($m, $o, 1);
    return $o + 1 if $l == 0; return $o + 2 if ($l & 0xC0) == 0xC0; $o += $l + 1 }
  return -1 }
sub qname { my ($m) = @_; return () if length $m < 12; # (the one name asked, where it ends)
  my ($qd) = unpack "x4 n", $m; return () unless $qd == 1;
  my ($o, @labels) = (12);
  while ($o < length $m) { my $l = ord substr($m, $o, 1); return (lc join(".", @labels), $o + 1) if $l == 0;
    return () if $l >= 64; push @labels, substr($m, $o + 1, $l); $o += $l + 1 }
  return () }
sub note { my ($m) = @_; my ($name) = qname($m); return unless defined $name;
  my ($an) = unpack "x6 n", $m;
  $name =~ s/[^\x21-\x7e]/?/g; return if $name eq "";
  my $o = skip($m, 12); return if $o < 0; $o += 4;
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
    my ($name, $end) = qname(defined $q ? $q : "");
    if (defined $peer && length $q >= 12 && defined $name && $allowed{$name}) {
      my $id = $next++ & 0xFFFF; $pending{$id} = [$peer, substr($q, 0, 2), time];
      substr($q, 0, 2) = pack "n", $id; send($up, $q, 0, $to) }
    elsif (defined $peer && length $q >= 12) { # REFUSED: the question back, no records
      if (defined $end && $end + 4 <= length $q) { my $answer = substr($q, 0, $end + 4);
        substr($answer, 2, 2) = pack "n", ((unpack("n", substr($answer, 2, 2)) | 0x8080) & 0xFFF0) | 5;
        substr($answer, 6, 6) = pack "n3", 0, 0, 0; send($listen, $answer, 0, $peer) }
      my $shown = defined $name ? $name : "?"; $shown =~ s/[^\x21-\x7e]/?/g;
      print $refused "$shown\n" if $refused_lines++ < 10000 } }
  if ($n > 0 && vec($ready_now, fileno($up), 1)) {
    my $from = recv($up, my $r, 65535, 0); # answers only from the resolver asked
    if (defined $from && substr($from, 2, 6) eq substr($to, 2, 6) && length $r >= 12) {
      my $p = delete $pending{unpack "n", $r};
      if ($p) { substr($r, 0, 2) = $p->[1]; send($listen, $r, 0, $p->[0]); note($r) } } }
  my $now = time; for (keys %pending) { delete $pending{$_} if $now - $pending{$_}[2] > 10 } }
