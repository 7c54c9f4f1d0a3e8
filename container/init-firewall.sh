#!/usr/bin/env bash
# Default-deny egress for the agent container; run as root before the agent starts.
# Allowed: loopback, DNS to the configured resolvers, replies to established connections, and
# the ipset allowlist built from AW_ALLOW_HOSTS ("host[:port]" separated by commas or spaces).
# Everything else is REJECTed so blocked connections fail fast. A name that does not resolve,
# or that adds nothing new, is a warning, never an abort.
set -euo pipefail

warn() { printf 'agent-worker: warning: firewall: %s\n' "$*" >&2; }
say() { printf 'agent-worker: firewall: %s\n' "$*" >&2; }

ipset create aw-hosts hash:ip family inet -exist
ipset create aw-ports hash:ip,port family inet -exist

add_entry() { # ip [port]
  local set=aw-hosts entry=$1
  if [[ -n "${2:-}" ]]; then set=aw-ports; entry="$1,tcp:$2"; fi
  if ipset test "$set" "$entry" 2>/dev/null || { [[ -n "${2:-}" ]] && ipset test aw-hosts "$1" 2>/dev/null; }; then
    return 1
  fi
  ipset add "$set" "$entry"
}

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
  elif [[ "$host" == *:* ]]; then
    warn "$spec is an IPv6 address; IPv6 egress is blocked"; return 0
  else
    ips=$(getent ahostsv4 "$host" | awk '{print $1}' | sort -u) || true
    if [[ -z "$ips" ]]; then warn "$host does not resolve; not allowed"; return 0; fi
  fi
  for ip in $ips; do
    if add_entry "$ip" "$port"; then added=1; fi
  done
  if ((added)); then say "allowed $spec (${ips//$'\n'/ })"; else warn "$spec adds nothing new (already allowed)"; fi
}

for spec in ${AW_ALLOW_HOSTS//,/ }; do
  allow "$spec"
done

iptables -F OUTPUT
iptables -F INPUT
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -A OUTPUT -o lo -j ACCEPT
iptables -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
for resolver in $(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ {print $2}' /etc/resolv.conf); do
  iptables -A OUTPUT -d "$resolver" -p udp --dport 53 -j ACCEPT
  iptables -A OUTPUT -d "$resolver" -p tcp --dport 53 -j ACCEPT
done
iptables -A OUTPUT -m set --match-set aw-hosts dst -j ACCEPT
iptables -A OUTPUT -p tcp -m set --match-set aw-ports dst,dst -j ACCEPT
iptables -A OUTPUT -p tcp -j REJECT --reject-with tcp-reset
iptables -A OUTPUT -j REJECT --reject-with icmp-admin-prohibited
iptables -P INPUT DROP
iptables -P FORWARD DROP
iptables -P OUTPUT DROP

if ip6tables -S >/dev/null 2>&1; then
  ip6tables -F OUTPUT && ip6tables -A OUTPUT -o lo -j ACCEPT \
    && ip6tables -A OUTPUT -j REJECT && ip6tables -P OUTPUT DROP \
    || warn "could not block IPv6 egress"
fi
say "egress limited to $(ipset list aw-hosts | grep -c '^[0-9]') host(s) and $(ipset list aw-ports | grep -c '^[0-9]') host:port pair(s)"
