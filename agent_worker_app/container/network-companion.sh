#!/usr/bin/env bash
# The agent's network, held by a container of its own (a companion, always under runc), for an
# agent whose runtime's network stack is not the kernel's (gVisor): rules made inside such a
# sandbox do not act on its network, but rules in a namespace it joins do. agent-worker starts
# this container first (root, NET_ADMIN and NET_RAW, the run's image), then the agent's
# container in its network namespace (Docker's network mode container:<id>), with no
# capability to change what is set here.
#
# Here: the egress firewall (init-firewall.sh), its egress proxy and DNS forwarder, and the
# credential gate (credential-gate.py), all three under a uid of their own (AW_NET_UID): the
# kernel sees every socket of a gVisor sandbox as its sandbox's (root's), so the rules can trust
# no uid of the agent's container, root's included. The credential never enters the agent's
# container: it comes here, on this container's stdin, and only the gate holds it.
#
# Stdin (agent-worker's attach, never anyone else's): the credential on the first line (an
# empty line: none), then requests a line each: "report" prints the firewall's record of
# blocked destinations and the gate's meter as one line on stdout,
# "agent-worker-network {"blocked": [...], "meter": {...} or null}". Its end (agent-worker done,
# or gone) ends this container, which the engine then removes.
# Stdout: "ready" once the firewall, its self-tests and the gate are up; then the reports.
# Stderr: the firewall's progress and warnings; on failure its last line says why (exit 1).
# Environment: AW_ALLOW_HOSTS, AW_NET_UID, AW_GATE_UPSTREAM and AW_GATE_PRICES (with a
# credential), AW_GATE_PORT; everything else is cleared first.
set -euo pipefail

if [[ "${1:-}" != --clean ]]; then # the image's environment reaches nothing root runs here
  exec /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
    AW_ALLOW_HOSTS="${AW_ALLOW_HOSTS:-}" AW_NET_UID="${AW_NET_UID:-}" \
    AW_GATE_UPSTREAM="${AW_GATE_UPSTREAM:-}" AW_GATE_PRICES="${AW_GATE_PRICES:-}" \
    AW_GATE_PORT="${AW_GATE_PORT:-}" /bin/bash -p "$0" --clean
fi

fail() {
  printf 'agent-worker: error: %s\n' "$*" >&2
  exit 1
}

NET_UID=${AW_NET_UID:?}
[[ "$NET_UID" =~ ^[1-9][0-9]*$ ]] || fail "AW_NET_UID is not a uid other than root's"
NET_DIR=/run/agent-worker-net
mkdir -m 0770 "$NET_DIR" # NET_UID's, and root's group's: root has no DAC_OVERRIDE here
chown "$NET_UID:0" "$NET_DIR"
AS_NET=(setpriv "--reuid=$NET_UID" "--regid=$NET_UID" --clear-groups --inh-caps=-all
  --bounding-set=-all --no-new-privs)
METER=$NET_DIR/agent-worker-meter.json
GATE_PORT=${AW_GATE_PORT:-7358}
GATE_PLACEHOLDER=agent-worker-credential-placeholder

gate=
IFS= read -r secret || fail "no input"
if [[ -n "$secret" ]]; then
  [[ -n "$AW_GATE_UPSTREAM" ]] || fail "a credential came without the gate's upstream"
  : >"$METER"
  chmod 0600 "$METER"
  chown "$NET_UID:$NET_UID" "$METER"
  # (the credential through a pipe, never an argument or a file)
  setsid "${AS_NET[@]}" /usr/bin/python3 -I -S /usr/local/bin/credential-gate.py "$GATE_PORT" \
    "$AW_GATE_UPSTREAM" "$GATE_PLACEHOLDER" "$METER" ${AW_GATE_PRICES:+"$AW_GATE_PRICES"} \
    < <(printf '%s' "$secret") >/dev/null 2>"$NET_DIR/gate.log" &
  gate=$!
fi
secret=

if ! AW_NET_DIR=$NET_DIR /usr/local/bin/init-firewall.sh 2>"$NET_DIR/firewall.log"; then
  cat "$NET_DIR/firewall.log" >&2
  fail "$(tail -n 1 "$NET_DIR/firewall.log" | sed 's/^agent-worker: error: //')"
fi
cat "$NET_DIR/firewall.log" >&2

if [[ -n "$gate" ]]; then
  printf -v listening '0100007F:%04X 00000000:0000 0A' "$GATE_PORT"
  up=0
  for _ in {1..250}; do
    if grep -q " $listening " /proc/net/tcp; then up=1; break; fi
    kill -0 "$gate" 2>/dev/null || break
    sleep 0.02
  done
  ((up)) || fail "the credential gate did not start: $(tail -n 1 "$NET_DIR/gate.log" 2>/dev/null)"
fi
echo ready

# The self-tests' probes of the agent's container (refused, redirected) are no blocked
# destinations of the agent's: taken out of the record before each report.
report() {
  ipset del aw-blocked 192.0.2.1,tcp:9 2>/dev/null || true
  local blocked meter=null
  blocked=$(AW_NET_DIR=$NET_DIR /usr/local/bin/init-firewall.sh --report 2>/dev/null) \
    || blocked='[]'
  [[ -n "$gate" && -s "$METER" ]] && meter=$(<"$METER")
  printf 'agent-worker-network {"blocked": %s, "meter": %s}\n' "${blocked//$'\n'/}" \
    "${meter//$'\n'/}"
}

while IFS= read -r request; do
  [[ "$request" == report ]] && report
done
exit 0
