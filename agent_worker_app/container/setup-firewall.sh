#!/bin/bash
# The network of the environment layer's setup commands (repository code, run at build time).
# The build's steps share this container's network namespace (network mode container:<id>):
# root here, with NET_ADMIN, closes it to private, loopback, link-local and shared (CGNAT)
# addresses and to the addresses given with --deny (the engine's own), except for the
# resolvers' port 53 and the addresses given with --allow (the user's --setup-allow-net);
# everything else stays open, as setup needs its package registries. The build's steps get no
# NET_ADMIN: they cannot change these rules. Then it waits until its stdin closes (the
# agent-worker that started it is done, or gone).
#   setup-firewall.sh [--allow CIDR]... [--deny CIDR]...
set -euo pipefail
PATH=/usr/sbin:/usr/bin:/sbin:/bin

fail() { printf 'agent-worker: error: setup network: %s\n' "$*" >&2; exit 1; }

allow=() deny=()
while (($#)); do
  case "$1" in
    --allow) allow+=("$2") ;;
    --deny) deny+=("$2") ;;
    *) fail "unknown argument $1" ;;
  esac
  shift 2
done

CLOSED4=(10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 127.0.0.0/8 169.254.0.0/16 100.64.0.0/10
  0.0.0.0/8 192.0.0.0/24 198.18.0.0/15 224.0.0.0/4 240.0.0.0/4)
CLOSED6=(::1/128 ::/128 fc00::/7 fe80::/10 fec0::/10 ff00::/8 64:ff9b::/96 64:ff9b:1::/48
  2001:db8::/32)
mapfile -t resolvers < <(awk '$1 == "nameserver" {print $2}' /etc/resolv.conf)

# of FAMILY ADDRESS: whether an address (or CIDR) is of that family (4 or 6)
of() { if [[ $2 == *:* ]]; then [[ $1 == 6 ]]; else [[ $1 == 4 ]]; fi; }

# rules FAMILY: the iptables-restore input for that family. The engine's addresses first (never
# reachable: its port is root on its host), then what the user allows, then the closed ranges.
rules() {
  local family=$1 address closed
  if [[ $family == 4 ]]; then closed=("${CLOSED4[@]}"); else closed=("${CLOSED6[@]}"); fi
  echo "*filter"
  echo ":INPUT ACCEPT [0:0]"
  echo ":FORWARD DROP [0:0]"
  echo ":OUTPUT ACCEPT [0:0]"
  echo "-A OUTPUT -o lo -j ACCEPT"
  for address in "${deny[@]}"; do
    if of "$family" "$address"; then
      echo "-A OUTPUT -d $address -p tcp -j REJECT --reject-with tcp-reset"
      echo "-A OUTPUT -d $address -j REJECT"
    fi
  done
  for address in "${resolvers[@]}"; do
    if of "$family" "$address"; then
      echo "-A OUTPUT -d $address -p udp --dport 53 -j ACCEPT"
      echo "-A OUTPUT -d $address -p tcp --dport 53 -j ACCEPT"
    fi
  done
  for address in "${allow[@]}"; do
    if of "$family" "$address"; then echo "-A OUTPUT -d $address -j ACCEPT"; fi
  done
  for address in "${closed[@]}"; do
    echo "-A OUTPUT -d $address -p tcp -j REJECT --reject-with tcp-reset"
    echo "-A OUTPUT -d $address -j REJECT"
  done
  echo "COMMIT"
}

rules 4 | iptables-restore || fail "cannot set the IPv4 rules (iptables)"
# IPv6 is closed whenever it cannot be filtered: a setup that could reach private IPv6
# addresses unfiltered is no build.
if ! rules 6 | ip6tables-restore 2>/dev/null; then
  # /proc/net/if_inet6: address, index, prefix length, scope (00: global), flags, name
  if awk '$6 != "lo" && $4 == "00" {found = 1} END {exit !found}' /proc/net/if_inet6 2>/dev/null; then
    fail "IPv6 cannot be filtered here (no ip6tables) and the build's network has an IPv6 address"
  fi
fi
echo ready
# Until agent-worker closes stdin (the build is over, or agent-worker is gone).
cat >/dev/null
