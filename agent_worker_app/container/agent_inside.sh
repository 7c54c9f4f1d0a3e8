#!/usr/bin/env bash
# Runs inside the agent container, started by agent-worker (docker-init is PID 1).
#
# As root:  set the egress firewall, take the secrets out of /agent-worker/secrets, then drop for
#           good to the agent user with no capabilities and no-new-privileges (setpriv).
# As agent: check the task branch out into /workspace, run the agent (argv after "--", the task on
#           its stdin), commit what it left uncommitted, bundle base..HEAD into /agent-worker/out.
#
# Inputs: AW_BRANCH, AW_BASE, AW_OBJECT_FORMAT (sha1/sha256), AW_FIREWALL (1/0), AW_ALLOW_HOSTS;
# on stdin, a tar of agent-worker/task.md, agent-worker/secrets/<VAR>, agent-worker/shallow and
# agent-worker/exclude (when the repository has them) and, in copy mode, agent-worker/source.pack
# (otherwise the repository's object directories are mounted read-only at /source/objects-N).
# Outputs: /agent-worker/out/result.json (see write_result) and result.bundle (when HEAD moved
# on from the base); progress lines on stderr, for people only.
# Exit status: the agent's.
set -euo pipefail

IN=/agent-worker
OUT=/agent-worker/out
SETUP_WARNINGS=/run/agent-worker-warnings # root's, readable by the agent: written before the drop
warnings=()                                # the agent stage's own, kept in this shell's memory

say() { printf 'agent-worker: %s\n' "$*" >&2; }
warn() { say "warning: $*"; warnings+=("$*"); }

# The result channel: /agent-worker/out/result.json, the host's only source for how the task
# ended (its stdout and stderr are the agent's, and only shown). It is written last, after every
# process of the agent user is gone, and the host trusts it only from a task that ended by
# itself. phase: "setup" (the agent never started) or "agent".
write_result() { # phase error head bundle(true/false)
  local setup=()
  [[ -r "$SETUP_WARNINGS" ]] && mapfile -t setup <"$SETUP_WARNINGS"
  jq -n --arg phase "$1" --arg error "$2" --arg head "$3" --argjson bundle "$4" \
    '{phase: $phase, error: (if $error == "" then null else $error end),
      head: (if $head == "" then null else $head end), bundle: $bundle,
      warnings: $ARGS.positional}' \
    --args -- "${setup[@]}" "${warnings[@]}" >"$OUT/result.json.tmp" \
    && mv -f "$OUT/result.json.tmp" "$OUT/result.json"
}

fail_setup() { # message
  say "error: $1"
  write_result setup "$1" "" false || true
  exit 3
}

root_stage() {
  # The run's inputs (task.md, secrets/, source.pack, ...) arrive on stdin as one tar archive;
  # nothing after this reads stdin.
  tar -x -f - -C / --no-same-owner agent-worker
  exec </dev/null
  local log=/run/agent-worker-firewall.log
  : >"$SETUP_WARNINGS"
  if [[ "${AW_FIREWALL:-1}" == 1 ]]; then
    if ! /usr/local/bin/init-firewall.sh 2>"$log"; then
      cat "$log" >&2
      fail_setup "the firewall could not be set up: $(tail -n 1 "$log")"
    fi
    cat "$log" >&2
    sed -n 's/^agent-worker: warning: //p' "$log" >"$SETUP_WARNINGS"
  else
    say "warning: firewall disabled (--no-firewall): the agent can reach any address"
  fi
  local file name
  if [[ -d "$IN/secrets" ]]; then
    for file in "$IN"/secrets/*; do
      [[ -f "$file" ]] || continue
      name=${file##*/}
      [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { say "ignoring secret with a bad name"; continue; }
      export "$name=$(<"$file")"
    done
    rm -rf "$IN/secrets"
  fi
  exec setpriv --reuid=agent --regid=agent --init-groups \
    --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs \
    env HOME=/home/agent USER=agent LOGNAME=agent "$0" --as-agent "$@"
}

# The agent's own repository of the task branch, built from what the host sent and nothing
# else of the user's repository (no config, hooks, refs or run data): the shared object
# directories (/source/objects-N, read-only) or a pack of the branch, the shallow boundary, the
# user's ignore rules that live outside the tree.
build_repository() {
  cd /workspace || return 1
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
    if [[ -d "$path" ]] && [[ -n "$(ls -A -- "$path" 2>/dev/null)" ]]; then
      warn "the agent wrote files under the submodule $(printf '%q' "$path"); they are \
not kept (submodules are not checked out in the container)"
    fi
  done < <(git ls-files --stage -z 2>/dev/null)
}

agent_pid=
stopping=0
on_signal() { stopping=1; }

# A stop asks politely first: on SIGINT Claude Code still prints its result (with the token
# usage so far); SIGTERM and SIGKILL follow for an agent that does not end.
stop_agent() {
  local sig tick
  for sig in INT TERM KILL; do
    kill "-$sig" -- "-$agent_pid" 2>/dev/null || true
    for tick in $(seq 1 50); do
      kill -0 "$agent_pid" 2>/dev/null || return 0
      sleep 0.1
    done
  done
}

# Ends every other process of the agent user: stray background jobs, fork bombs.
kill_leftovers() {
  local round
  for round in 1 2 3 4 5 6 7 8 9 10; do
    kill -KILL -1 2>/dev/null || return 0
    sleep 0.1
  done
}

# Commits what the agent left and bundles base..HEAD for the host; prints "<head> <true|false>"
# (whether there is a bundle). Called in a condition, where `set -e` does not apply, so every
# step says itself when it fails.
commit_and_bundle() {
  cd /workspace || return 1
  git update-index -q --refresh >/dev/null || true
  git add -A >/dev/null || return 1
  if ! git diff --cached --quiet; then
    local title msg=/tmp/agent-worker-commit-msg
    title=$(head -n 1 "$IN/task.md" | cut -c 1-60)
    printf 'agent-worker: work the agent left uncommitted\n\nTask: %s\n' "$title" >"$msg"
    git -c commit.gpgsign=false commit --quiet --no-verify --file "$msg" >/dev/null || return 1
  fi
  local head bundle=false
  head=$(git rev-parse HEAD) || return 1
  if [[ "$head" != "$AW_BASE" ]] && git merge-base --is-ancestor "$AW_BASE" "$head"; then
    git bundle create --quiet "$OUT/result.bundle" "$AW_BASE..HEAD" || return 1
    bundle=true
  fi
  printf '%s %s\n' "$head" "$bundle"
}

agent_stage() {
  trap on_signal TERM INT HUP
  rm -f "$OUT/result.json" "$OUT/result.bundle"
  checkout_workspace
  # setsid: the agent leads its own process group, so a stop reaches its children too.
  setsid "$@" <"$IN/task.md" &
  agent_pid=$!
  local status=0
  wait "$agent_pid" || status=$?
  if ((stopping)); then
    say "stopping the agent"
    stop_agent
    status=0
    wait "$agent_pid" || status=$?
  fi
  trap '' TERM INT HUP
  kill_leftovers
  # From here on no process of the agent's is left: what follows is this script's own word.
  rm -f "$OUT/result.json" "$OUT/result.json.tmp" "$OUT/result.bundle"
  cd /workspace && { warn_submodule_changes || true; }
  local failure=/tmp/agent-worker-finalize.err result
  if result=$(commit_and_bundle 2>"$failure"); then
    write_result agent "" "${result% *}" "${result#* }"
  else
    rm -f "$OUT/result.bundle"
    write_result agent "could not save the agent's work: $(tail -n 3 "$failure" | tr '\n' ' ')" \
      "" false
  fi
  exit "$status"
}

if [[ "${1:-}" == "--as-agent" ]]; then
  shift
  [[ "${1:-}" == "--" ]] && shift
  agent_stage "$@"
fi
[[ "$(id -u)" == 0 ]] || fail_setup "must start as root (the firewall needs it)"
root_stage "$@"
