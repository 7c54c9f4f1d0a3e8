#!/usr/bin/env bash
# Default-deny egress for the agent container; run as root before the agent starts.
# Allowed: loopback, root's DNS to the configured resolvers (no other user's: the agent's
# lookups go to root's forwarder, which asks for allowed names only), replies to established
# connections, and root's connections to the ipset allowlist built from AW_ALLOW_HOSTS
# ("host[:port]" separated by commas or spaces).
#
# Egress by name: every other user's TCP connection to an allowed address (and port) is
# redirected (nat) to root's egress proxy (egress-proxy.py, started here), which lets it through
# only when the name it asks for (TLS server name, HTTP Host, CONNECT target) is an allowed
# name for that port; a connection that names no host, or an address, needs an address allowed
# as itself; a raw protocol is allowed by address. Their other packets (UDP, ICMP) leave by no
# route: a CDN's address is no name.
# Everything else is REJECTed so blocked connections fail fast, and recorded first: each blocked
# destination (address, protocol and port) is an entry of the ipset aw-blocked, whose counter
# counts its packets (a TCP connection attempt is one: its SYN). Only root can read or change it;
# agent_inside.sh reads it after the agent for the report. A name that does not resolve, or
# that adds nothing new, is a warning, never an abort. The sets and rules are each loaded in
# one call (ipset restore, iptables-restore): one command per rule costs a tenth of a second.
#
# Names: a small DNS forwarder of root's (dns-names.pl, started by record_names below) answers
# the container's lookups on 127.0.0.1: a lookup of an allowed name goes on to the resolver, and
# the address it resolved to is noted (so that the report can name a blocked address); any other
# is refused there, recorded, and asks nothing of anyone. `init-firewall.sh --report` prints
# the record of blocked destinations and refused lookups, with those names, as JSON (root only:
# agent_inside.sh runs it after the agent and the check).
set -euo pipefail

# Whose connections are the firewall's own (its egress proxy's and DNS forwarder's, and the
# credential gate's): root's (uid 0) in the agent's container; in a network companion
# (network-companion.sh: the agent's container joins its namespace, and a runtime such as
# gVisor makes every socket of the agent's root's in the kernel's eyes) a uid of their own,
# AW_NET_UID, with their records in AW_NET_DIR, a directory of that uid's.
NET_UID=${AW_NET_UID:-0}
NET_DIR=${AW_NET_DIR:-/run}
AS_NET=()
if ((NET_UID != 0)); then
  AS_NET=(setpriv "--reuid=$NET_UID" "--regid=$NET_UID" --clear-groups --inh-caps=-all
    --bounding-set=-all --no-new-privs)
fi

BLOCKED_SET=aw-blocked
NAMES=$NET_DIR/agent-worker-names # "address name" lines, root's (or AW_NET_UID's) only
REFUSED=$NET_DIR/agent-worker-refused # a name a line: lookups the forwarder refused
EGRESS_RULES=$NET_DIR/agent-worker-egress-rules # what the egress proxy allows
EGRESS_REFUSED=$NET_DIR/agent-worker-egress-refused # "count protocol address port [name]"
EGRESS_PORT=15001                                   # the egress proxy's, on 127.0.0.1

# A file of the firewall's own processes (made empty if it is not there): theirs alone.
own_file() { # path
  [[ -e "$1" ]] || : >"$1"
  chmod 0600 "$1"
  ((NET_UID == 0)) || chown "$NET_UID:$NET_UID" "$1"
}

# [{address, protocol, port, count, names}] from the counting ipset and the names record,
# {address "", protocol "dns", port 53, count, names [the name]} for each name whose lookups the
# forwarder refused, and {address, protocol "tls" or "http", port, count, names [the name asked
# for, if any]} for each the egress proxy refused; most refused first.
report() {
  local entries
  entries=$(ipset save "$BLOCKED_SET" 2>/dev/null | awk '$1 == "add" {
      split($3, a, ","); split(a[2], p, ":"); n = 0
      for (i = 4; i < NF; i++) if ($i == "packets") n = $(i + 1)
      printf "%s %s %s %s\n", a[1], p[1], p[2], n
    }')
  if [[ -z "$entries" && ! -s "$REFUSED" && ! -s "$EGRESS_REFUSED" ]]; then # the usual case, without jq's 60 ms start
    echo '[]'
    return 0
  fi
  [[ -f "$NAMES" ]] || : >"$NAMES"
  [[ -f "$REFUSED" ]] || : >"$REFUSED"
  [[ -f "$EGRESS_REFUSED" ]] || : >"$EGRESS_REFUSED"
  printf '%s\n' "$entries" | jq -Rsc --rawfile names "$NAMES" --rawfile refused "$REFUSED" \
    --rawfile egress "$EGRESS_REFUSED" '
      ($names | split("\n") | map(select(. != "") | split(" ") | select(length == 2))
        | reduce .[] as $pair ({}; .[$pair[0]] += [$pair[1]])) as $known
      | (split("\n") | map(select(. != "") | split(" ")
        | {address: .[0], protocol: .[1], port: (.[2] | tonumber), count: (.[3] | tonumber),
           names: (($known[.[0]] // []) | unique | .[:5])}))
      + ($refused | split("\n") | map(select(. != "")) | group_by(.)
        | map({address: "", protocol: "dns", port: 53, count: length, names: [.[0]]}))
      + ($egress | split("\n") | map(select(. != "") | split(" ") | select(length >= 4)
        | {address: .[2], protocol: .[1], port: (.[3] | tonumber), count: (.[0] | tonumber),
           names: .[4:5]}))
      | sort_by(-.count, .address, .port, .names)'
}

if [[ "${1:-}" == "--report" ]]; then
  report
  exit 0
fi

warn() { printf 'agent-worker: warning: firewall: %s\n' "$*" >&2; }
say() { printf 'agent-worker: firewall: %s\n' "$*" >&2; }

declare -A hosts=() ports=() # "ip" and "ip,tcp:port" entries of the two sets
declare -A names=() # the allowed host names, whose lookups the forwarder passes on
declare -A rules=() # the egress proxy's: "name NAME PORT", "literal IP PORT" (PORT "*": any)

allow() { # host[:port]
  local spec=$1 host port="" ips ip added=0
  if [[ "$spec" =~ ^\[(.+)\](:([0-9]+))?$ ]]; then
    host=${BASH_REMATCH[1]}; port=${BASH_REMATCH[3]}
  elif [[ "$spec" =~ ^([^:]+):([0-9]+)$ ]]; then
    host=${BASH_REMATCH[1]}; port=${BASH_REMATCH[2]}
  else
    host=$spec
  fi
  if [[ "$host" =~ ^[0-9.]+$ ]]; then
    ips=$host
    rules["literal $host ${port:-*}"]=1
  elif [[ "$host" == *:* ]]; then
    warn "$spec is an IPv6 address; IPv6 egress is blocked"; return 0
  else
    names[${host,,}]=1
    rules["name ${host,,} ${port:-*}"]=1
    ips=$(getent ahostsv4 "$host" | awk '{print $1}' | sort -u) || true
    if [[ -z "$ips" ]]; then warn "$host does not resolve; not allowed"; return 0; fi
  fi
  for ip in $ips; do
    if [[ -n "${hosts[$ip]:-}" ]]; then
      continue
    elif [[ -z "$port" ]]; then
      hosts[$ip]=1; added=1
    elif [[ -z "${ports[$ip,tcp:$port]:-}" ]]; then
      ports[$ip,tcp:$port]=1; added=1
    fi
  done
  if ((added)); then say "allowed $spec (${ips//$'\n'/ })"; else warn "$spec adds nothing new (already allowed)"; fi
}

allow_list=${AW_ALLOW_HOSTS:-}
for spec in ${allow_list//,/ }; do
  allow "$spec"
done

# The egress proxy, started now (its interpreter's start overlaps the rules' loading below) and
# waited for in the self-test. Without it the agent reaches nothing: no run.
PROBE_REDIRECT=192.0.2.2 # TEST-NET-1: the redirect's self-test, answered by the proxy itself
EGRESS_PROXY=/usr/local/bin/egress-proxy.py
{
  for entry in "${!rules[@]}"; do echo "$entry"; done
  for entry in "${!hosts[@]}"; do echo "address $entry *"; done
  for entry in "${!ports[@]}"; do echo "address ${entry%%,*} ${entry##*:}"; done
  echo "probe $PROBE_REDIRECT 9"
} >"$EGRESS_RULES"
own_file "$EGRESS_RULES"
setsid "${AS_NET[@]}" /usr/bin/python3 -I -S "$EGRESS_PROXY" "$EGRESS_PORT" "$EGRESS_RULES" "$EGRESS_REFUSED" \
  </dev/null >/dev/null 2>&1 &

{
  echo "create aw-hosts hash:ip family inet -exist"
  echo "create aw-ports hash:ip,port family inet -exist"
  echo "create $BLOCKED_SET hash:ip,port family inet counters maxelem 4096 -exist"
  for entry in "${!hosts[@]}"; do echo "add aw-hosts $entry -exist"; done
  for entry in "${!ports[@]}"; do echo "add aw-ports $entry -exist"; done
  echo "add aw-ports $PROBE_REDIRECT,tcp:9 -exist"
} | ipset restore

# Every other user's TCP to an allowed destination goes to the egress proxy. (The nat table is
# Docker's too, for its embedded DNS: added to, never flushed.)
{
  echo "*nat"
  echo "-A OUTPUT -p tcp -m owner ! --uid-owner $NET_UID -m set --match-set aw-hosts dst -j REDIRECT --to-ports $EGRESS_PORT"
  echo "-A OUTPUT -p tcp -m owner ! --uid-owner $NET_UID -m set --match-set aw-ports dst,dst -j REDIRECT --to-ports $EGRESS_PORT"
  echo "COMMIT"
} | iptables-restore --noflush

{
  echo "*filter"
  echo ":INPUT DROP [0:0]"
  echo ":FORWARD DROP [0:0]"
  echo ":OUTPUT DROP [0:0]"
  echo "-A INPUT -i lo -j ACCEPT"
  echo "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
  echo "-A OUTPUT -o lo -j ACCEPT"
  # (a connection redirected to the proxy still names its first route's interface here)
  echo "-A OUTPUT -d 127.0.0.1 -p tcp --dport $EGRESS_PORT -m conntrack --ctstate DNAT -j ACCEPT"
  echo "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
  while read -r resolver; do # root's lookups only: the agent's go to root's forwarder
    echo "-A OUTPUT -d $resolver -p udp --dport 53 -m owner --uid-owner $NET_UID -j ACCEPT"
    echo "-A OUTPUT -d $resolver -p tcp --dport 53 -m owner --uid-owner $NET_UID -j ACCEPT"
  done < <(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ {print $2}' /etc/resolv.conf)
  echo "-A OUTPUT -m owner --uid-owner $NET_UID -m set --match-set aw-hosts dst -j ACCEPT"
  echo "-A OUTPUT -p tcp -m owner --uid-owner $NET_UID -m set --match-set aw-ports dst,dst -j ACCEPT"
  # Counted when already recorded, then recorded (an entry starts at its first packet): in this
  # order each blocked packet counts once.
  echo "-A OUTPUT -m set --match-set $BLOCKED_SET dst,dst"
  echo "-A OUTPUT -p tcp -j SET --add-set $BLOCKED_SET dst,dst"
  echo "-A OUTPUT -p udp -j SET --add-set $BLOCKED_SET dst,dst"
  echo "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset"
  echo "-A OUTPUT -j REJECT --reject-with icmp-admin-prohibited"
  echo "COMMIT"
} | iptables-restore

fail() { printf 'agent-worker: error: firewall: %s\n' "$*" >&2; exit 1; }

# IPv6 is closed whenever it cannot be filtered: no ip6tables here, and an IPv6 address other
# than loopback's and link-local ones, is no run (the agent would reach IPv6 destinations
# unfiltered).
if ! printf '%s\n' "*filter" ":INPUT DROP [0:0]" ":FORWARD DROP [0:0]" ":OUTPUT DROP [0:0]" \
    "-A INPUT -i lo -j ACCEPT" "-A OUTPUT -o lo -j ACCEPT" "COMMIT" | ip6tables-restore 2>/dev/null; then
  # /proc/net/if_inet6: address (32 hex digits), index, prefix length, scope (00: global), flags
  if awk '$6 != "lo" && $4 == "00" {found = 1} END {exit !found}' /proc/net/if_inet6 2>/dev/null; then
    fail "IPv6 cannot be filtered here (no ip6tables) and the container has an IPv6 address: not starting the agent unfiltered"
  fi
  say "no ip6tables here, and no IPv6 address to filter"
fi

# The rules' self-test: a connection they refuse must be refused by them, at once (a reset).
# Where rules do not act on the container's network (a runtime whose network stack is not the
# kernel's), the agent would run unfiltered: no run. The probe's record is taken back.
PROBE=192.0.2.1 # TEST-NET-1: never routed, never allowed (refused below if it were)
[[ -z "${hosts[$PROBE]:-}" ]] || fail "$PROBE is the firewall's self-test address; it cannot be allowed"
said=$(timeout 3 bash -c "exec 3<>/dev/tcp/$PROBE/9" 2>&1) && said="it connected"
ipset del "$BLOCKED_SET" "$PROBE,tcp:9" 2>/dev/null || true
if [[ "$said" != *"Connection refused"* ]]; then
  fail "its deny rule did not deny a connection to $PROBE:9 (${said:-no answer within 3 s}): not starting the agent unfiltered"
fi

# The redirect's self-test: another user's connection to an allowed destination must reach the
# egress proxy (which answers this one itself), or the run stops there. The proxy is waited
# for first (listening on 127.0.0.1: 0100007F, state 0A), at most 3 s.
listening=0
for _ in {1..150}; do
  if grep -q " 0100007F:$(printf '%04X' "$EGRESS_PORT") 00000000:0000 0A " /proc/net/tcp; then
    listening=1
    break
  fi
  sleep 0.02
done
((listening)) || fail "the egress proxy is not listening (is /usr/bin/python3 in the image?): not starting the agent"
said=$(timeout 3 setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
  bash -c "exec 3<>/dev/tcp/$PROBE_REDIRECT/9 && head -n 1 <&3" 2>&1) || true
ipset del "$BLOCKED_SET" "$PROBE_REDIRECT,tcp:9" 2>/dev/null || true
if [[ "$said" != "agent-worker egress proxy" ]]; then
  fail "its redirect rule did not bring a connection to $PROBE_REDIRECT:9 to the egress proxy (${said:-no answer within 3 s}): not starting the agent"
fi
say "egress limited to ${#hosts[@]} host(s) and ${#ports[@]} host:port pair(s), by name"

# The names record: a DNS forwarder on 127.0.0.1:53 (dns-names.pl, installed beside this script;
# root's: the agent can neither stop it nor write its records) passes each UDP query for an
# allowed name to the first configured resolver and notes the A records of the answer under
# the name asked for; it refuses every other name. resolv.conf lists it alone (its search and
# options lines kept): nobody but root reaches the resolvers. Without perl, or if it cannot
# listen, the agent resolves nothing (its allowed hosts' addresses are allowed all the same).
DNS_FORWARDER=/usr/local/bin/dns-names.pl

record_names() {
  local upstream
  upstream=$(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ {print $2; exit}' /etc/resolv.conf)
  if [[ -z "$upstream" ]] || ! command -v perl >/dev/null; then
    return 0
  fi
  : >"$NAMES"
  : >"$REFUSED"
  own_file "$NAMES"
  own_file "$REFUSED"
  local allowed
  allowed=$(IFS=,; echo "${!names[*]}")
  setsid "${AS_NET[@]}" perl "$DNS_FORWARDER" "$NAMES" "$upstream" "$allowed" "$REFUSED" </dev/null >/dev/null 2>&1 &
  { echo "nameserver 127.0.0.1"; grep -v '^[[:space:]]*nameserver' /etc/resolv.conf || true; } \
    >/run/agent-worker-resolv.conf
  cat /run/agent-worker-resolv.conf >/etc/resolv.conf # the bind-mounted file, written in place
  local _ # listening well before the agent starts, as a rule; waited for, at most a second
  for _ in {1..50}; do
    grep -q ' 0100007F:0035 ' /proc/net/udp 2>/dev/null && return 0
    sleep 0.02
  done
  warn "the DNS forwarder is not listening: the agent's lookups will fail"
}

record_names
