#!/usr/bin/env bash
# Runs inside the agent container, started by agent-worker (docker-init is PID 1).
#
# As root:  set the egress firewall, take the secrets out of /agent-worker/secrets, then start the
#           agent stage as the agent user with no capabilities and no-new-privileges (setpriv),
#           and supervise it: pass stop signals on, stop it when agent-worker is gone (the end of
#           stdin) or the task's own deadline passes. Then read the firewall's record of
#           blocked destinations, and report how it all ended.
# As agent: check the task branch out into /workspace, run the maintenance commands, run the
#           agent (argv after "--", the task on its stdin), commit what it left uncommitted,
#           bundle base..HEAD into /agent-worker/out.
# With --check (the check's own container, a fresh one from the same image: check_root), no
# agent: root closes the network, the agent user checks out AW_BASE (the branch's final commit)
# and runs the maintenance commands, then root runs the check as the agent user and reports it.
#
# Inputs: AW_BRANCH, AW_BASE, AW_OBJECT_FORMAT (sha1/sha256), AW_FIREWALL (1/0, or companion: a
# network companion holds the firewall and the gate, network-companion.sh), AW_ALLOW_HOSTS,
# AW_DEADLINE (epoch seconds; or AW_DEADLINE_AFTER, seconds from the container's start, where
# the start can be long after the run made its spec: a node pulling the image first), AW_SESSION_DIR (where the agent keeps its sessions, if it can
# resume one); on stdin, a tar of agent-worker/task.md, agent-worker/nonce,
# agent-worker/secrets/<VAR>, agent-worker/maintenance/<N> (the Nth maintenance command),
# agent-worker/check (the check command), agent-worker/session/* (an earlier session, for
# --continue), agent-worker/shallow and
# agent-worker/exclude (when the repository has them) and, in copy mode, agent-worker/source.pack
# (with an explicit --workspace mount, the repository's object directories are mounted
# read-only at /source/objects-N instead: every object in them readable).
# With AW_INPUTS=files (an engine with no stdin and no copy-out) the same tar arrives in pieces,
# as configs in /run/agent-worker-input/ (task, source) and secrets /run/secrets/agent-worker-input-*
# (nonce, credentials), all root's alone; what /agent-worker/out holds is printed on stderr, framed
# with the nonce, before the result line (with AW_FRAME_MAX, too, when it is that small).
# Outputs: the result line on stderr (see emit_result), /agent-worker/out/result.bundle (when
# HEAD moved on from the base) and /agent-worker/out/session/ (the agent's session files); other
# lines on stderr are progress, for people only.
# Environment: the container starts this script as `/bin/bash -p` (no BASH_ENV or ENV file, no
# functions from the environment) with the dynamic loader's variables blanked by the host
# (their project values as AW_KEEP_<NAME>). Root then keeps the whole environment for the
# agent's processes (AGENT_ENV_FILE) and runs on with a fixed one (PATH, LANG, HOME, TZ, the git
# identity, the AW_* variables), as does the agent stage: only the agent, the maintenance
# commands and the check get the project's (AGENT_ENV_FOR_AGENT, written by root).
# Exit status: the agent's.
set -euo pipefail

IN=/agent-worker
OUT=/agent-worker/out
SETUP_WARNINGS=/run/agent-worker-warnings # root's, readable by the agent: written before the drop
warnings=()                                # the agent stage's own, kept in this shell's memory

say() { printf 'agent-worker: %s\n' "$*" >&2; }
warn() { say "warning: $*"; warnings+=("$*"); }

# The agent stage's account: /agent-worker/out/result.json, written last, after every process of
# the agent user is gone. The root stage vouches for it only when the agent stage ended by
# itself (status 0, or 3 for a setup failure): an agent can kill the stage, not make it succeed.
# phase: "setup" (the agent never started) or "agent"; agent_exit: the agent's exit status.
write_result() { # phase error head bundle(true/false) [agent_exit]
  local setup=() stopped=""
  [[ -r "$SETUP_WARNINGS" ]] && mapfile -t setup <"$SETUP_WARNINGS"
  [[ -r "$STOP_REASON" ]] && stopped=$(<"$STOP_REASON")
  # The usual ending, with no text to escape, without jq (each jq costs 40 ms and more)
  if [[ -z "$2$stopped" && ${#setup[@]} == 0 && ${#warnings[@]} == 0 && "$3" =~ ^[0-9a-f]*$ ]]; then
    local head=null
    [[ -n "$3" ]] && head="\"$3\""
    printf '{"phase": "%s", "error": null, "head": %s, "bundle": %s, "agent_exit": %s, %s}\n' \
      "$1" "$head" "$4" "${5:-null}" '"stopped": null, "warnings": []' >"$OUT/result.json.tmp" \
      && mv -f "$OUT/result.json.tmp" "$OUT/result.json"
    return
  fi
  jq -n --arg phase "$1" --arg error "$2" --arg head "$3" --argjson bundle "$4" \
    --argjson exit "${5:-null}" --arg stopped "$stopped" \
    '{phase: $phase, error: (if $error == "" then null else $error end),
      head: (if $head == "" then null else $head end), bundle: $bundle, agent_exit: $exit,
      stopped: (if $stopped == "" then null else $stopped end), warnings: $ARGS.positional}' \
    --args -- "${setup[@]}" "${warnings[@]}" >"$OUT/result.json.tmp" \
    && mv -f "$OUT/result.json.tmp" "$OUT/result.json"
}

fail_setup() { # message
  say "error: $1"
  write_result setup "$1" "" false || true
  exit 3
}

# The result channel to the host: one line on stderr, "agent-worker-result <nonce> <base64 of
# the JSON>", printed by root after the agent stage ended. The nonce came in with the inputs and
# never left root's memory: nothing the agent prints can pass for it.
emit_result() { # json (one line)
  local line
  line="agent-worker-result $NONCE $(printf '%s' "$1" | base64 -w0)"
  # root's copy, for a run that recovers a lost task: the same line, so that the recovering
  # run knows it by the nonce it recorded, and a container that is not this task's cannot
  # pass for it (labels anyone can set)
  (umask 077 && printf '%s\n' "$line" >"$ACCOUNT")
  if [[ -z "$CHECKING" ]] && { [[ "${AW_INPUTS:-stdin}" == files ]] || fits_a_frame; }; then
    emit_files
  fi
  printf '\n%s\n' "$line" >&2
}
ACCOUNT=/run/agent-worker-result.json

# Whether the result files are at most AW_FRAME_MAX bytes (0 or unset: never): a Docker host
# then takes them from the output, sparing a copy out of the stopped container (about 0.1 s).
fits_a_frame() {
  local max=${AW_FRAME_MAX:-0} size
  ((max > 0)) || return 1
  size=$(du -s -b "$OUT" 2>/dev/null) || return 1
  ((${size%%[[:space:]]*} <= max))
}

# What the task leaves, for a host that cannot copy it out (or, when small, need not): a tar of the result files as base64
# lines "agent-worker-out <nonce> <data>" on stderr. Only regular files, read by root once the
# agent's processes are gone.
emit_files() {
  local names=() name
  # the bundle, the largest, last: a host that stops reading at its cap keeps the others
  for name in agent-tail.jsonl session result.bundle; do
    [[ -e "$OUT/$name" && ! -L "$OUT/$name" ]] && names+=("$name")
  done
  # (sed's script through a pipe: the nonce in an argument would be in /proc for every process)
  tar -c -C "$OUT" -T /dev/null "${names[@]}" | base64 -w 3000 \
    | sed -f <(printf 's/^/agent-worker-out %s /\n' "$NONCE") >&2 || true
}

# The run's inputs: a tar on stdin, whose rest stays open as agent-worker's attach (fd 3 then),
# or, with AW_INPUTS=files, the same tar in pieces as configs and secrets; fd 3 then never ends
# (nobody is attached: the task's deadline stops it).
read_inputs() {
  if [[ "${AW_INPUTS:-stdin}" != files ]]; then
    tar -x -f - -C / --no-same-owner agent-worker
    exec 3<&0 </dev/null
    return
  fi
  cat /run/agent-worker-input/* | tar -x -f - -C / --no-same-owner agent-worker
  cat /run/secrets/agent-worker-input-* | tar -x -f - -C / --no-same-owner agent-worker
  mkfifo -m 600 /run/agent-worker-hold
  exec 3<>/run/agent-worker-hold </dev/null
}

NONCE=
STOP_REASON=/run/agent-worker-stop-reason # root's, readable by the agent stage
STAGE=/run/agent-worker-stage              # root's: what a stop stops (a pid, or -group)
CHECK=                                     # the check command, in root's memory
stopped=0                                  # root was told to stop (a signal)

# Three descriptions of the container's stderr, each with its own flags: a reopening through
# /proc is a new one. Fd 2 becomes root's own, fd 4 keeps the original for the agent stage, and
# fd 5 is the agent's. An agent can make its stderr non-blocking (Claude Code does), and root's
# frames on a shared one were cut short once the pipe held 64 KiB. Only a pipe (or a terminal)
# can be reopened; anything else (or a reopening refused) is shared as before.
separate_stderr() {
  exec 4>&2 5>&2
  if [[ -p /proc/self/fd/2 || -c /proc/self/fd/2 ]]; then
    { exec 5>/proc/self/fd/4; } 2>/dev/null || exec 5>&4
    # (by way of fd 6: the group's own redirection of fd 2 is undone when it ends)
    if { exec 6>/proc/self/fd/4; } 2>/dev/null; then exec 2>&6 6>&-; fi
  fi
}

ROOT_PATH=/usr/sbin:/usr/bin:/sbin:/bin
AGENT_ENV_FILE=/run/agent-worker-agent-env # root's: the environment the container was given
AGENT_ENV_FOR_AGENT=/run/agent-worker-agent-env.agent # root's, readable: the agent's (below)
AGENT_ENV=() # the agent's processes' environment (agent_env; in the agent stage, the file's)

# Root's first step: the environment the container was given (the image's, the project's, the
# run's) kept for the agent user, and this script again with only what root needs: nothing of
# the project's (PATH, PERL5OPT, TAR_OPTIONS, XTABLES_LIBDIR, ...) reaches what root runs.
# Builtins only until then.
clean_root() {
  local name kept=()
  (
    umask 077
    for name in $(compgen -e); do printf '%s=%s\0' "$name" "${!name}"; done >"$AGENT_ENV_FILE"
  )
  for name in $(compgen -e); do
    case "$name" in
      AW_KEEP_*) ;;
      AW_* | TZ | GIT_AUTHOR_NAME | GIT_AUTHOR_EMAIL | GIT_COMMITTER_NAME | GIT_COMMITTER_EMAIL)
        kept+=("$name=${!name}")
        ;;
    esac
  done
  exec /usr/bin/env -i PATH="$ROOT_PATH" LANG=C.UTF-8 HOME=/root "${kept[@]}" \
    /bin/bash -p "$0" --as-root "$@"
}

# The environment of the agent's processes (AGENT_ENV): what the container was given, the
# loader's variables the host kept aside put back, the agent user's own names; then what root
# adds (arguments).
agent_env() { # [NAME=VALUE...]
  local entries=() entry kept=()
  mapfile -d '' -t entries <"$AGENT_ENV_FILE"
  AGENT_ENV=()
  for entry in "${entries[@]}"; do
    case "$entry" in
      AW_KEEP_*) kept+=("${entry#AW_KEEP_}") ;; # after the blank one: the last one counts
      HOME=* | USER=* | LOGNAME=*) ;;
      *) AGENT_ENV+=("$entry") ;;
    esac
  done
  AGENT_ENV+=("${kept[@]}" HOME=/home/agent USER=agent LOGNAME=agent "$@")
}

root_stage() {
  separate_stderr
  if [[ -n "${AW_DEADLINE_AFTER:-}" ]]; then
    local started
    printf -v started '%(%s)T' -1
    export AW_DEADLINE=$((started + AW_DEADLINE_AFTER))
  fi
  # The run's inputs (task.md, nonce, secrets/, source.pack, ...): see read_inputs.
  read_inputs
  [[ -r "$IN/nonce" ]] && NONCE=$(<"$IN/nonce")
  rm -f "$IN/nonce"
  if [[ -f "$IN/check" ]]; then CHECK=$(<"$IN/check"); fi
  if [[ "${1:-}" == --check ]]; then check_root; fi
  take_secrets
  local log=/run/agent-worker-firewall.log
  : >"$SETUP_WARNINGS"
  if [[ "${AW_FIREWALL:-1}" == 1 ]]; then
    if ! /usr/local/bin/init-firewall.sh 2>"$log" 4>&- 5>&-; then
      cat "$log" >&2
      root_fails "the firewall could not be set up: $(tail -n 1 "$log")"
    fi
    cat "$log" >&2
    sed -n 's/^agent-worker: warning: //p' "$log" >"$SETUP_WARNINGS"
  elif [[ "${AW_FIREWALL:-1}" == companion ]]; then
    companion_firewall
  else
    say "warning: firewall disabled (--no-firewall): the agent can reach any address"
  fi
  [[ -z "$GATE_STARTED" ]] || gate_listening
  supervise "$@"
}

# The firewall of a network companion (network-companion.sh: this container shares its network
# namespace, and has no capability to change it): what it said, as the host passed it on
# (agent-worker/firewall.log), and two probes of its rules from here, as the agent user: one they
# refuse must be refused at once (a reset), one they send to the egress proxy must reach it.
# Otherwise the agent would run unfiltered: no run.
companion_firewall() {
  local log=$IN/firewall.log said
  if [[ -f "$log" ]]; then
    cat "$log" >&2
    sed -n 's/^agent-worker: warning: //p' "$log" >"$SETUP_WARNINGS"
  fi
  said=$("${AS_AGENT[@]}" timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.1/9' 2>&1) && said="it connected"
  if [[ "$said" != *"Connection refused"* ]]; then
    root_fails "the firewall could not be set up: the network companion's rules did not deny this container's connection to 192.0.2.1:9 (${said:-no answer within 3 s}): not starting the agent unfiltered"
  fi
  said=$("${AS_AGENT[@]}" timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.2/9 && head -n 1 <&3' 2>&1) || true
  if [[ "$said" != "agent-worker egress proxy" ]]; then
    root_fails "the firewall could not be set up: the network companion's rules did not bring this container's connection to 192.0.2.2:9 to its egress proxy (${said:-no answer within 3 s}): not starting the agent"
  fi
  say "firewall: this container's egress goes through its network companion's rules"
}

# The secrets (agent-worker/secrets/<VAR>), out of the inputs. With a credential gate
# (AW_GATE_UPSTREAM: the agent's real API), the one credential goes to the gate, root's, and the
# agent gets GATE_PLACEHOLDER in its place (and the gate's address as its API, set by the host):
# no process of the agent user's ever holds it. Without one (an agent that cannot be pointed at
# a gate), the agent gets the secret itself.
GATE_PORT=7358
GATE_PLACEHOLDER=agent-worker-credential-placeholder
GATE_METER=/run/agent-worker-meter.json # root's: what the gate counted
GATE_STARTED=
take_secrets() {
  local file name
  if [[ -d "$IN/secrets" ]]; then
    for file in "$IN"/secrets/*; do
      [[ -f "$file" ]] || continue
      name=${file##*/}
      [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { say "ignoring secret with a bad name"; continue; }
      if [[ -n "${AW_GATE_UPSTREAM:-}" && "${AW_FIREWALL:-1}" == companion ]]; then
        export "$name=$GATE_PLACEHOLDER" # the credential went to the companion's gate alone
      elif [[ -n "${AW_GATE_UPSTREAM:-}" ]]; then
        [[ -z "$GATE_STARTED" ]] || root_fails "the credential gate takes one credential, not several"
        start_gate "$file"
        export "$name=$GATE_PLACEHOLDER"
      else
        export "$name=$(<"$file")"
      fi
      AW_SECRET_NAMES+=" $name" # for the agent only: maintenance and the check run without them
    done
    rm -rf "$IN/secrets"
  fi
  export AW_SECRET_NAMES
}

# The gate (credential-gate.py), the credential (the file given, opened here: it is removed
# at once) on its stdin; in the background, while the firewall is set up (gate_listening waits
# for it).
start_gate() { # file
  local secret
  : >"$GATE_METER"
  chmod 0600 "$GATE_METER"
  exec {secret}<"$1"
  setsid /usr/bin/python3 -I -S /usr/local/bin/credential-gate.py "$GATE_PORT" "$AW_GATE_UPSTREAM" \
    "$GATE_PLACEHOLDER" "$GATE_METER" ${AW_GATE_PRICES:+"$AW_GATE_PRICES"} \
    <&"$secret" >/dev/null 2>/run/agent-worker-gate.log 3<&- 4>&- 5>&- &
  GATE_STARTED=$!
  exec {secret}<&-
}

gate_listening() {
  local port _
  printf -v port '0100007F:%04X 00000000:0000 0A' "$GATE_PORT"
  for _ in {1..250}; do
    grep -q " $port " /proc/net/tcp 2>/dev/null && return 0
    kill -0 "$GATE_STARTED" 2>/dev/null || break
    sleep 0.02
  done
  root_fails "the credential gate did not start: $(tail -n 1 /run/agent-worker-gate.log 2>/dev/null)"
}

# What the gate counted (JSON), or null without a gate.
meter_json() {
  local meter=null
  [[ -n "$GATE_STARTED" && -s "$GATE_METER" ]] && meter=$(<"$GATE_METER")
  printf '%s' "${meter//$'\n'/}"
}

root_fails() { # message: a setup failure before the agent stage exists
  say "error: $1"
  warnings=()
  emit_result "$(jq -cn --arg error "$1" '{phase: "setup", error: $error, bundle: false}')"
  exit 3
}

AW_SECRET_NAMES=${AW_SECRET_NAMES:-} # root sets it; the agent stage inherits it
child=
# shellcheck disable=SC2317 # reachable: supervise's trap runs it
forward() {
  stopped=1
  [[ -n "$child" ]] && kill -TERM -- "$child" 2>/dev/null
  return 0
}
# SIGUSR1: stop at once (the host saw the container's disk pass --disk): the agent stage kills
# the agent without the polite steps, in which a flood of writes would go on, then saves its work.
# shellcheck disable=SC2317 # reachable: supervise's trap runs it
forward_now() {
  stopped=1
  [[ -n "$child" ]] && kill -USR1 -- "$child" 2>/dev/null
  return 0
}

# AGENT_ENV without the secret variables (their placeholders): what the agent gets, the
# project's own commands (maintenance, check) do not. NUL-separated.
without_secrets() {
  local entry
  for entry in "${AGENT_ENV[@]}"; do
    [[ " $AW_SECRET_NAMES " == *" ${entry%%=*} "* ]] || printf '%s\0' "$entry"
  done
}

# Stops the agent stage (politely: its trap stops the agent with SIGINT first) when agent-worker
# is gone (its attach, our fd 3, ends) or the task's own deadline passes: a lost agent-worker
# costs nothing more, and the commits are kept for the next run to recover.
watchdog() {
  local now
  printf -v now '%(%s)T' -1
  local left=$((${AW_DEADLINE:-0} - now))
  if ((${AW_DEADLINE:-0} > 0)); then
    if timeout "$((left > 1 ? left : 1))" cat <&3 >/dev/null; then
      echo "agent-worker was gone" >"$STOP_REASON"
    else
      echo "the task's deadline passed" >"$STOP_REASON"
    fi
  else
    cat <&3 >/dev/null
    echo "agent-worker was gone" >"$STOP_REASON"
  fi
  say "$(cat "$STOP_REASON"): stopping the agent"
  local target
  target=$(cat "$STAGE" 2>/dev/null) || true
  [[ -n "$target" ]] && kill -TERM -- "$target" 2>/dev/null
  return 0
}

# Root's way to run a command as the agent user: its groups, no capabilities of any kind, and
# no-new-privileges.
AS_AGENT=(setpriv --reuid=agent --regid=agent --init-groups
  --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs)
# AW_PROC_LIMIT: the agent user's processes, held by the kernel that runs them (RLIMIT_NPROC),
# where the engine's pids limit would not hold them but kill the whole sandbox (gVisor's: to the
# host it is one process tree): a fork past it fails, as under a pids limit, and the run goes on.
if [[ "${AW_PROC_LIMIT:-}" =~ ^[1-9][0-9]*$ ]]; then
  AS_AGENT=(prlimit "--nproc=$AW_PROC_LIMIT:$AW_PROC_LIMIT" "${AS_AGENT[@]}")
fi

# A child's exit status: wait for it, and again while a trapped signal cuts the wait short (wait
# then returns over 128 and the child still runs). The first wait is never behind a `kill -0`:
# a child that ended at once (a check of `false`) may be reaped already, and a loop that looked
# first would skip the wait and report it as exit status 0.
wait_child() {
  local pid=$1 status=0
  wait "$pid" || status=$?
  while kill -0 "$pid" 2>/dev/null; do
    status=0
    wait "$pid" || status=$?
  done
  return "$status"
}

supervise() {
  trap forward TERM INT HUP
  trap forward_now USR1
  local name placeholders=()
  for name in $AW_SECRET_NAMES; do placeholders+=("$name=${!name}"); done
  agent_env "${placeholders[@]}"
  printf '%s\0' "${AGENT_ENV[@]}" >"$AGENT_ENV_FOR_AGENT"
  "${AS_AGENT[@]}" /usr/bin/env HOME=/home/agent USER=agent LOGNAME=agent \
    /bin/bash -p "$0" --as-agent "$@" 3<&- 2>&4 4>&- &
  child=$!
  echo "$child" >"$STAGE"
  watchdog &
  local dog=$! status=0
  wait_child "$child" || status=$?
  local result=$OUT/result.json error=""
  # Nothing of the agent user's is left running when root reads what it could write: anything
  # the stage ran (a hook, a filter) could have left a process that rewrites the account.
  if ! kill_user_processes; then
    error="processes of the agent user outlived the agent stage and could not be stopped"
    status=3
  elif [[ "$status" != 0 && "$status" != 3 ]] || [[ -L "$result" || ! -f "$result" ]]; then
    error="the agent stage ended with status $status before it could say how the agent ended"
  fi
  seal_out
  if [[ -n "$error" ]]; then
    kill "$dog" 2>/dev/null || true
    warnings=()
    emit_result "$(jq -cn --arg error "$error" --argjson blocked "$(blocked_json)" \
      --argjson meter "$(meter_json)" \
      '{phase: "agent", error: $error, bundle: false, blocked: $blocked, meter: $meter}')"
    exit "$status"
  fi
  # Passed on as the agent stage wrote it, with root's own word added: the blocked
  # destinations (the host parses it, and refuses what it cannot read). No jq on this path:
  # each jq costs 60 ms on a slow machine. (The check runs in a container of its own.)
  local json blocked
  json=$(<"$result")
  json=${json//$'\n'/}
  kill "$dog" 2>/dev/null || true
  exec 3<&-
  blocked=$(blocked_json)
  json=${json%"${json##*[![:space:]]}"}
  if [[ "$json" != "{"*"}" ]]; then
    warnings=()
    emit_result "$(jq -cn '{phase: "agent", bundle: false,
      error: "the agent stage left an account that cannot be read"}')"
    exit 3
  fi
  # root's keys last: a JSON reader keeps the last of a repeated key
  json="${json%\}},\"check\":null,\"blocked\":$blocked,\"meter\":$(meter_json)}"
  emit_result "$json"
  [[ "$json" =~ \"agent_exit\":[[:space:]]*([0-9]+) ]] && exit "${BASH_REMATCH[1]}"
  exit 3
}

# The check's container (--check): a fresh one from the run's image, so a fresh home and
# setup's paths as setup left them; nothing of the agent's container but the commit. Root
# closes the network; the agent user checks the commit out and runs the maintenance commands
# (prepare_stage); root then runs the check (run_check), waits for every process of the agent
# user to be gone, and reports on the result channel, with this container's own nonce:
# {"phase": "check", "error": why the check did not run or null, "check": its record or null}.
CHECKING= # set in the check's container: its result is the line alone, no files
check_root() {
  CHECKING=1
  trap forward TERM INT HUP
  close_network
  agent_env # without secrets: none came in
  printf '%s\0' "${AGENT_ENV[@]}" >"$AGENT_ENV_FOR_AGENT"
  "${AS_AGENT[@]}" /usr/bin/env HOME=/home/agent USER=agent LOGNAME=agent \
    /bin/bash -p "$0" --prepare-check 3<&- 2>&4 4>&- &
  child=$!
  echo "$child" >"$STAGE"
  watchdog &
  local dog=$! status=0 error="" check=null
  while kill -0 "$child" 2>/dev/null; do
    status=0
    wait "$child" || status=$?
  done
  child=
  : >"$STAGE"
  # What maintenance left running (a database) stays up for the check, as it would for the
  # agent: it is the commit's own code, as the check is.
  if ((stopped)) || [[ -s "$STOP_REASON" ]]; then
    error="stopped before the check ran"
  elif [[ "$status" != 0 ]]; then
    error="the checkout for the check failed (exit status $status)"
    local said=$OUT/result.json
    if [[ -f "$said" && ! -L "$said" ]]; then # the stage's own words: a message, nothing more
      said=$(head -c 4000 "$said" | jq -r '.error // empty' 2>/dev/null) || said=""
      [[ -n "$said" ]] && error=$said
    fi
  else
    run_check # in this shell, not a subshell: a stop signal reaches the check at once
    check=$(<"$CHECK_RESULT")
  fi
  if ! kill_user_processes; then
    error="processes of the agent user outlived the check and could not be stopped"
    check=null
  fi
  kill "$dog" 2>/dev/null || true
  exec 3<&-
  warnings=()
  emit_result "$(jq -cn --arg error "$error" --argjson check "$check" \
    '{phase: "check", error: (if $error == "" then null else $error end), check: $check}')"
  exit 0
}

# The check's container has no network: the engine gave it none (Docker's "none"), or, where
# an engine cannot (a swarm service), root closes it here before any other user's process
# starts: loopback only, IPv4 and IPv6.
close_network() {
  local dev
  for dev in /sys/class/net/*; do
    [[ "${dev##*/}" == lo ]] && continue
    printf '%s\n' '*filter' ':INPUT DROP [0:0]' ':FORWARD DROP [0:0]' ':OUTPUT DROP [0:0]' \
      '-A INPUT -i lo -j ACCEPT' '-A OUTPUT -o lo -j ACCEPT' COMMIT >/run/agent-worker-offline
    iptables-restore </run/agent-worker-offline 2>/dev/null \
      || root_fails "the check's container could not be taken offline (iptables)"
    if ! ip6tables-restore </run/agent-worker-offline 2>/dev/null \
      && [[ -s /proc/net/if_inet6 ]] && grep -qv ' lo$' /proc/net/if_inet6; then
      root_fails "the check's container could not be taken offline (ip6tables)"
    fi
    return 0
  done
}

# The agent user's part of the check's container: the commit checked out, the maintenance
# commands run. Exit status 0, or 3 with the reason in result.json.
prepare_stage() {
  trap on_signal TERM INT HUP
  mapfile -d '' -t AGENT_ENV <"$AGENT_ENV_FOR_AGENT"
  { : >&5; } 2>/dev/null || exec 5>&2
  BEFORE="the check"
  rm -rf "$OUT/result.json"
  checkout_workspace
  ((stopping == 0)) || fail_setup "stopped before the check"
  run_maintenance
  ((stopping == 0)) || fail_setup "stopped before the check"
  exit 0
}
BEFORE="the agent" # what a failed maintenance command keeps from starting

# The check command, run by root: as the agent user, in /workspace, under the same limits, its
# output in a file only root can read. Its outcome is root's own record: the processes of the
# agent user are all gone before it is sent.
# A stop (timeout, signal, agent-worker gone) stops it. Its JSON: CHECK_RESULT.
CHECK_RESULT=/run/agent-worker-check.json
run_check() {
  local log=/run/agent-worker-check.log status=0 start end
  agent_env # without the secret variables' placeholders
  : >"$log"
  chmod 0600 "$log"
  say "check: ${CHECK%%$'\n'*}"
  start=${EPOCHREALTIME/[.,]/} # microseconds, whatever the locale's decimal mark
  (cd /workspace && exec setsid "${AS_AGENT[@]}" /usr/bin/env -i "${AGENT_ENV[@]}" \
    /bin/bash -c "$CHECK") </dev/null >"$log" 2>&1 3<&- 4>&- 5>&- &
  local pid=$!
  child=-$pid
  echo "-$pid" >"$STAGE"
  wait_child "$pid" || status=$?
  end=${EPOCHREALTIME/[.,]/}
  child=
  : >"$STAGE"
  kill_user_processes || true # what is left cannot change root's record of it
  local why=null
  if ((stopped)); then
    why='"stopped by a signal"'
  elif [[ -s "$STOP_REASON" ]]; then
    why=$(jq -Rs 'rtrimstr("\n")' "$STOP_REASON")
  fi
  tail -n 20 "$log" | cut -c 1-500 | sed 's/^/agent-worker: check: /' >&2
  say "check: $([[ "$status" == 0 ]] && echo passed || echo failed) (exit status $status)"
  tail -n 20 "$log" | cut -c 1-500 | jq -Rsc --arg command "$CHECK" --argjson exit "$status" \
    --argjson ms "$(((end - start) / 1000))" --argjson stopped "$why" \
    '{command: $command, ran: true, exit_code: (if $stopped == null then $exit else null end),
      duration_s: ($ms / 1000), stopped: $stopped,
      output_tail: (split("\n") | if .[-1] == "" then .[:-1] else . end)}' >"$CHECK_RESULT"
}

# Every process of the agent user, gone (what the agent stage or the check left running): a
# kill(-1) made as that user reaches all of them at once (no fork outruns it), and root then
# sees none left but the dead; 1 when some still are.
kill_user_processes() {
  local _
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    agent_processes_left || return 0
    setpriv --reuid=agent --regid=agent --clear-groups /usr/bin/kill -s KILL -- -1 2>/dev/null \
      || true
    sleep 0.05
  done
  ! agent_processes_left
}

agent_processes_left() {
  local state
  while read -r state; do
    [[ "$state" == Z* ]] || return 0
  done < <(ps -u agent -o stat= 2>/dev/null)
  return 1
}

# What the agent stage left in the output, root's from here on: nothing of the agent user's
# that might still run (a process root failed to stop) can change the bundle root hands back.
seal_out() {
  chown -R -h root:root "$OUT" 2>/dev/null || true
  chmod -R go-w "$OUT" 2>/dev/null || true
}

# The firewall's record of what it blocked: [{address, protocol, port, count, names}] (JSON),
# from state only root can read or change (init-firewall.sh); [] without the firewall.
blocked_json() { # (a network companion's record is its own: the host reads it there)
  if [[ "${AW_FIREWALL:-1}" != 1 ]]; then
    echo '[]'
    return 0
  fi
  /usr/local/bin/init-firewall.sh --report 2>/dev/null || echo '[]'
}

# The agent's own repository of the task branch, built from what the host sent and nothing
# else of the user's repository (no config, hooks, refs or run data): the shared object
# directories (/source/objects-N, read-only) or a pack of the branch, the shallow boundary, the
# user's ignore rules that live outside the tree.
build_repository() {
  cd /workspace || return 1
  local prepared=0
  has_entries . && prepared=1 # the environment's setup left files here
  git init --quiet --object-format="${AW_OBJECT_FORMAT:-sha1}" --initial-branch="$AW_BRANCH" . \
    || return 1
  if [[ -f "$IN/source.pack" ]]; then
    git index-pack --stdin <"$IN/source.pack" >/dev/null || return 1
  else
    local dir
    for dir in /source/objects-*; do
      if [[ ! -r "$dir" || ! -x "$dir" || ! -r "$dir/pack" || ! -x "$dir/pack" ]]; then
        echo "the repository's objects are not readable by other users (made under umask 077?):" \
          "--workspace copy sends them in instead" >&2
        return 1
      fi
      printf '%s\n' "$dir"
    done >.git/objects/info/alternates
  fi
  if [[ -s "$IN/shallow" ]]; then cp "$IN/shallow" .git/shallow || return 1; fi
  if [[ -s "$IN/exclude" ]]; then cat "$IN/exclude" >>.git/info/exclude || return 1; fi
  git update-ref "refs/heads/$AW_BRANCH" "$AW_BASE" || return 1
  git reset --quiet --hard || return 1
  if ((prepared)); then exclude_prepared || return 1; fi
}

# Whether a directory holds anything, dot files included: read by the shell (readdir), no
# program's stat of it (ls asks statx, which gVisor's 2022 kernel refuses with EINVAL: an
# empty answer there would take setup's .venv for the agent's own work).
has_entries() { # dir
  local found
  found=$(shopt -s nullglob dotglob && cd -- "$1" 2>/dev/null && for entry in *; do
    printf 1
    break
  done)
  [[ -n "$found" ]]
}

# What setup made in /workspace (a .venv, node_modules, build output) stays where the tools look
# for it, and out of the agent's commits: each path the checkout did not bring is excluded
# (escaped, so that a name is never read as a pattern). Tracked files are the branch's.
exclude_prepared() {
  local path
  git ls-files -z --others --directory | while IFS= read -r -d '' path; do
    [[ "$path" == *$'\n'* ]] && continue
    printf '/%s\n' "$(printf '%s' "$path" | sed 's/[][*?\\!# ]/\\&/g')"
  done >>.git/info/exclude
}

checkout_workspace() {
  local failure=/tmp/agent-worker-clone.err
  if ! build_repository 2>"$failure"; then
    fail_setup "cannot check out the task branch in the container: $(tail -n 1 "$failure" \
| tr -d '\r')"
  fi
  # A fresh checkout is "racily clean": its files are as new as its index, so the next
  # `git add` or `git status` would hash every file again, and, unable to freshen objects that
  # live in the read-only /source, write each one anew. Settle the index once, here.
  git update-index -q --refresh || true
  [[ -n "${GIT_AUTHOR_NAME:-}" ]] && git config user.name "$GIT_AUTHOR_NAME"
  [[ -n "${GIT_AUTHOR_EMAIL:-}" ]] && git config user.email "$GIT_AUTHOR_EMAIL"
  local head
  head=$(git rev-parse HEAD)
  [[ "$head" == "$AW_BASE" ]] || fail_setup "the checkout is at $head, not at $AW_BASE"
}

# Submodules are not checked out in the container: what the agent writes under one is not kept.
warn_submodule_changes() {
  local entry path
  while IFS= read -r -d '' entry; do
    [[ "$entry" == "160000 "* ]] || continue
    path=${entry#*$'\t'}
    if [[ -d "$path" ]] && has_entries "$path"; then
      warn "the agent wrote files under the submodule $(printf '%q' "$path"); they are \
not kept (submodules are not checked out in the container)"
    fi
  done < <(own_git ls-files --stage -z 2>/dev/null | grep -z '^160000 ' || true)
}

agent_pid=
stopping=0
# shellcheck disable=SC2317 # reachable: agent_stage's trap runs it
on_signal() { stopping=1; }

# A stop asks politely first: on SIGINT Claude Code still prints its result (with the token
# usage so far); SIGTERM and SIGKILL follow for an agent that does not end.
stop_agent() {
  local sig signals=(INT TERM KILL)
  ((stopping == 2)) && signals=(KILL) # stop at once (SIGUSR1)
  for sig in "${signals[@]}"; do
    kill "-$sig" -- "-$agent_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$agent_pid" 2>/dev/null || return 0
      sleep 0.1
    done
  done
}

# Ends every other process of the agent user: stray background jobs, fork bombs. (kill -1 says
# it succeeded whenever any other process exists, root's supervisor included, so what is left of
# the agent user's is counted instead; a child of this script that died is waited for.)
kill_leftovers() {
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    others_left || return 0
    kill -KILL -1 2>/dev/null || true
    wait 2>/dev/null || true
    sleep 0.05
  done
}

others_left() {
  local pid
  for pid in $(pgrep -u "$EUID"); do
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    [[ "$(state_of "$pid")" == [Z-] ]] && continue # dead, or gone (pgrep's own subshell)
    return 0
  done
  return 1
}

# Commits what the agent left and bundles base..HEAD for the host; prints "<head> <true|false>"
# (whether there is a bundle). Called in a condition, where `set -e` does not apply, so every
# step says itself when it fails. Once the agent is gone (and own_config ran): with
# agent-worker's own git only.
commit_and_bundle() {
  cd /workspace || return 1
  own_git update-index -q --refresh >/dev/null || true
  own_git add -A >/dev/null || return 1
  if ! own_git diff --cached --quiet; then
    local title msg=/tmp/agent-worker-commit-msg
    title=$(head -n 1 "$IN/task.md" | cut -c 1-60)
    rm -rf "$msg" # (the agent's, if it made one: a link would be written through)
    printf 'agent-worker: work the agent left uncommitted\n\nTask: %s\n' "$title" >"$msg"
    own_git commit --quiet --no-verify --file "$msg" >/dev/null || return 1
  fi
  local head bundle=false
  head=$(own_git rev-parse HEAD) || return 1
  if [[ "$head" != "$AW_BASE" ]] && own_git merge-base --is-ancestor "$AW_BASE" "$head"; then
    own_git bundle create --quiet "$OUT/result.bundle" "$AW_BASE..HEAD" || return 1
    bundle=true
  fi
  printf '%s %s\n' "$head" "$bundle"
}

# agent-worker's own git, in the agent's clone after the agent: nothing the agent configured
# runs in it. No system or global config (the agent's home is the agent's), the clone's config
# one agent-worker wrote (own_config), no hooks or fsmonitor whatever a config says, replace
# refs and grafts ignored, and an environment of its own: no GIT_* or loader variable of the
# project's, git and what it runs by absolute path.
own_git() {
  env -i PATH=/usr/bin:/bin HOME=/nonexistent LC_ALL=C ${TZ:+"TZ=$TZ"} \
    GIT_DIR=/workspace/.git GIT_WORK_TREE=/workspace GIT_CONFIG_NOSYSTEM=1 \
    GIT_CONFIG_GLOBAL=/dev/null GIT_NO_REPLACE_OBJECTS=1 GIT_GRAFT_FILE=/dev/null \
    GIT_TERMINAL_PROMPT=0 GIT_EXEC_PATH=/usr/lib/git-core \
    ${GIT_AUTHOR_NAME:+"GIT_AUTHOR_NAME=$GIT_AUTHOR_NAME"} \
    ${GIT_AUTHOR_EMAIL:+"GIT_AUTHOR_EMAIL=$GIT_AUTHOR_EMAIL"} \
    ${GIT_COMMITTER_NAME:+"GIT_COMMITTER_NAME=$GIT_COMMITTER_NAME"} \
    ${GIT_COMMITTER_EMAIL:+"GIT_COMMITTER_EMAIL=$GIT_COMMITTER_EMAIL"} \
    /usr/bin/git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c commit.gpgsign=false \
    -c gc.auto=0 -c maintenance.auto=false "$@"
}

# The clone's config, replaced by agent-worker's own: with the agent's go its hooks path,
# filter, diff and merge drivers, fsmonitor, includes, core.worktree, signing, pager and every
# other setting that names a program (the attributes that name drivers then name none). A
# commondir would lend the clone another directory's config: it goes too.
own_config() {
  local dir=/workspace/.git
  if [[ -L "$dir" || ! -d "$dir" ]]; then
    echo "the agent's clone has no .git directory any more" >&2
    return 1
  fi
  rm -f "$dir/config" "$dir/commondir" || return 1
  {
    printf '[core]\n\trepositoryformatversion = %s\n\tbare = false\n' \
      "$([[ "${AW_OBJECT_FORMAT:-sha1}" == sha1 ]] && echo 0 || echo 1)"
    [[ "${AW_OBJECT_FORMAT:-sha1}" == sha1 ]] \
      || printf '[extensions]\n\tobjectformat = %s\n' "$AW_OBJECT_FORMAT"
  } >"$dir/config"
}

# Waits up to 1 s for background jobs of this script to end (they end when their input does,
# unless a process the agent left behind still holds it), and reaps those that did.
settle() {
  local pid tick running
  for ((tick = 0; tick < 50; tick++)); do
    running=0
    for pid in "$@"; do
      [[ "$(state_of "$pid")" == [Z-] ]] || running=1
    done
    ((running)) || break
    sleep 0.02
  done
  for pid in "$@"; do
    if [[ "$(state_of "$pid")" == Z ]]; then wait "$pid" 2>/dev/null || true; fi
  done
  return 0
}

# A process's state letter (Z: dead, not yet waited for), or "-" when it is gone.
state_of() {
  local stat
  if read -r stat 2>/dev/null <"/proc/$1/stat"; then
    stat=${stat##*) }
    printf '%s' "${stat%% *}"
  else
    printf -- '-'
  fi
}

# The maintenance commands (agent-worker/maintenance/1, 2, ...), in order, in /workspace,
# before the agent and without its secrets; the first that fails ends the run, and the agent
# never starts. A stop stops the command at once.
run_maintenance() {
  local dir=$IN/maintenance log=/tmp/agent-worker-maintenance.log
  [[ -d "$dir" ]] || return 0
  local names=() plain=() name cmd n=0 status pid start ms
  mapfile -t names < <(find "$dir" -mindepth 1 -maxdepth 1 -type f -printf '%f\n' | sort -n)
  mapfile -d '' -t plain < <(without_secrets)
  for name in "${names[@]}"; do
    n=$((n + 1))
    cmd=$(<"$dir/$name")
    say "maintenance ${n}/${#names[@]}: ${cmd%%$'\n'*}"
    start=${EPOCHREALTIME/[.,]/} # microseconds, whatever the locale's decimal mark
    (cd /workspace && exec setsid /usr/bin/env -i "${plain[@]}" /bin/bash -c "$cmd") \
      </dev/null >"$log" 2>&1 5>&- &
    pid=$!
    status=0
    wait "$pid" || status=$?
    if ((stopping)); then
      kill -KILL -- "-$pid" 2>/dev/null || true
      fail_setup "stopped during maintenance command ${n} of ${#names[@]}"
    fi
    tail -n 200 "$log" | cut -c 1-500 | sed 's/^/agent-worker: maintenance: /' >&2
    if [[ "$status" != 0 ]]; then
      fail_setup "maintenance command ${n} of ${#names[@]} failed (exit status $status): \
$(jq -Rn --arg c "$cmd" '$c') ($BEFORE did not start); its last output: \
$(tail -n 5 "$log" | cut -c 1-300 | tr '\n' '|' | sed 's/|$//; s/|/ | /g')"
    fi
    ms=$(((${EPOCHREALTIME/[.,]/} - start) / 1000))
    say "maintenance ${n}/${#names[@]}: passed in $((ms / 1000)).$((ms % 1000 / 100)) s"
  done
}

# The agent's earlier session (--continue), back where the agent keeps its sessions.
restore_session() {
  [[ -n "${AW_SESSION_DIR:-}" && -d "$IN/session" ]] || return 0
  { mkdir -p "$AW_SESSION_DIR" && cp -R "$IN/session/." "$AW_SESSION_DIR/"; } \
    || warn "the agent's earlier session could not be restored"
}

# The agent's session files (regular files at the top of its session directory, no links), for
# a later run that continues the branch.
save_session() {
  [[ -n "${AW_SESSION_DIR:-}" && -d "$AW_SESSION_DIR" ]] || return 0
  {
    mkdir -p "$OUT/session" \
      && find "$AW_SESSION_DIR" -maxdepth 1 -type f -name '*.jsonl' -exec cp -t "$OUT/session" {} + \
      && chmod -R a+rX "$OUT/session"
  } || warn "the agent's session could not be saved"
}

agent_stage() {
  trap on_signal TERM INT HUP
  trap 'stopping=2' USR1
  mapfile -d '' -t AGENT_ENV <"$AGENT_ENV_FOR_AGENT"
  { : >&5; } 2>/dev/null || exec 5>&2 # no stderr of the agent's own (not started by root_stage)
  rm -rf "$OUT/result.json" "$OUT/result.bundle" "$OUT/agent-tail.jsonl" "$OUT/session"
  checkout_workspace
  restore_session
  ((stopping == 0)) || fail_setup "stopped before the agent started"
  run_maintenance
  ((stopping == 0)) || fail_setup "stopped before the agent started"
  # The agent's stdout goes to agent-worker as it comes, and its last lines to agent-tail.jsonl:
  # the final figures of an agent stopped after agent-worker was gone, for the run that recovers
  # its work. (tee -p: a failed copy never breaks the agent's own output.)
  local out=/tmp/agent-worker-stdout tail_in=/tmp/agent-worker-tail
  mkfifo "$out" "$tail_in"
  tail -n 500 <"$tail_in" >"$OUT/agent-tail.jsonl" 5>&- &
  local tail_pid=$!
  tee -p "$tail_in" <"$out" 5>&- &
  local tee_pid=$!
  # setsid: the agent leads its own process group, so a stop reaches its children too.
  setsid /usr/bin/env -i "${AGENT_ENV[@]}" "$@" <"$IN/task.md" >"$out" 2>&5 5>&- &
  agent_pid=$!
  local status=0
  wait "$agent_pid" || status=$?
  if ((stopping)); then
    say "stopping the agent"
    stop_agent
    status=0
    wait "$agent_pid" 2>/dev/null || status=$? # (no "Killed" notice of bash's as its last word)
  fi
  trap '' TERM INT HUP
  # What the agent left running in its process group may hold its output open: gone first, so
  # that the copies see the end of it at once.
  kill -KILL -- "-$agent_pid" 2>/dev/null || true
  settle "$tee_pid" "$tail_pid"
  kill_leftovers
  # From here on no process of the agent's is left: what follows is this script's own word.
  rm -rf "$OUT/result.json" "$OUT/result.json.tmp" "$OUT/result.bundle" "$OUT/session"
  save_session
  cd /workspace || true
  local failure=/tmp/agent-worker-finalize.err result
  rm -rf "$failure"
  if own_config 2>"$failure" && { warn_submodule_changes || true; } \
    && result=$(commit_and_bundle 2>"$failure"); then
    write_result agent "" "${result% *}" "${result#* }" "$status"
  else
    rm -f "$OUT/result.bundle"
    write_result agent "could not save the agent's work: $(tail -n 3 "$failure" | tr '\n' ' ')" \
      "" false "$status"
  fi
  exit 0 # the agent's status is in the result; 0 says this stage ended by itself
}

if [[ "${1:-}" == "--as-agent" ]]; then
  shift
  [[ "${1:-}" == "--" ]] && shift
  agent_stage "$@"
fi
[[ "${1:-}" == "--prepare-check" ]] && prepare_stage
((EUID == 0)) || { say "error: must start as root (the firewall needs it)"; exit 3; }
[[ "${1:-}" == "--as-root" ]] || clean_root "$@"
shift
root_stage "$@"
