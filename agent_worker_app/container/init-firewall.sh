#!/usr/bin/env bash
# Default-deny egress for the agent container; run as root before the agent starts.
# Allowed: loopback, DNS to the configured resolvers, replies to established connections, and
# the ipset allowlist built from AW_ALLOW_HOSTS ("host[:port]" separated by commas or spaces).
# Everything else is REJECTed so blocked connections fail fast, and recorded first: each blocked
# destination (address, protocol and port) is an entry of the ipset aw-blocked, whose counter
# counts its packets (a TCP connection attempt is one: its SYN). Only root can read or change it;
# agent_inside.sh reads it after the agent for the report. A name that does not resolve, or
# that adds nothing new, is a warning, never an abort. The sets and rules are each loaded in
# one call (ipset restore, iptables-restore): one command per rule costs a tenth of a second.
set -euo pipefail

warn() { printf 'agent-worker: warning: firewall: %s\n' "$*" >&2; }
say() { printf 'agent-worker: firewall: %s\n' "$*" >&2; }

declare -A hosts=() ports=() # "ip" and "ip,tcp:port" entries of the two sets

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

for spec in ${AW_ALLOW_HOSTS//,/ }; do
  allow "$spec"
done

{
  echo "create aw-hosts hash:ip family inet -exist"
  echo "create aw-ports hash:ip,port family inet -exist"
  echo "create aw-blocked hash:ip,port family inet counters maxelem 4096 -exist"
  for entry in "${!hosts[@]}"; do echo "add aw-hosts $entry -exist"; done
  for entry in "${!ports[@]}"; do echo "add aw-ports $entry -exist"; done
} | ipset restore

{
  echo "*filter"
  echo ":INPUT DROP [0:0]"
  echo ":FORWARD DROP [0:0]"
  echo ":OUTPUT DROP [0:0]"
  echo "-A INPUT -i lo -j ACCEPT"
  echo "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
  echo "-A OUTPUT -o lo -j ACCEPT"
  echo "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
  for resolver in $(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ {print $2}' /etc/resolv.conf); do
    echo "-A OUTPUT -d $resolver -p udp --dport 53 -j ACCEPT"
    echo "-A OUTPUT -d $resolver -p tcp --dport 53 -j ACCEPT"
  done
  echo "-A OUTPUT -m set --match-set aw-hosts dst -j ACCEPT"
  echo "-A OUTPUT -p tcp -m set --match-set aw-ports dst,dst -j ACCEPT"
  # Counted when already recorded, then recorded (an entry starts at its first packet): in this
  # order each blocked packet counts once.
  echo "-A OUTPUT -m set --match-set aw-blocked dst,dst"
  echo "-A OUTPUT -p tcp -j SET --add-set aw-blocked dst,dst"
  echo "-A OUTPUT -p udp -j SET --add-set aw-blocked dst,dst"
  echo "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset"
  echo "-A OUTPUT -j REJECT --reject-with icmp-admin-prohibited"
  echo "COMMIT"
} | iptables-restore

if ! printf '%s\n' "*filter" ":INPUT DROP [0:0]" ":FORWARD DROP [0:0]" ":OUTPUT DROP [0:0]" \
    "-A INPUT -i lo -j ACCEPT" "-A OUTPUT -o lo -j ACCEPT" "COMMIT" | ip6tables-restore 2>/dev/null; then
  warn "could not block IPv6 egress (no ip6tables in this kernel?)"
fi
say "egress limited to ${#hosts[@]} host(s) and ${#ports[@]} host:port pair(s)"
