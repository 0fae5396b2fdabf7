#!/usr/bin/env bash
# run.sh: preview every stack a pull request touches and write one markdown comment per
# stack to OUT_DIR/<stack>.md; with GITEA_TOKEN set (Drone on the platform's own Gitea),
# also post each as a comment on the pull request, replacing the stack's previous one.
#
# Inputs (environment):
#   BASE_REF          the branch the pull request goes into, e.g. main
#   OUT_DIR           where the comments go (default: previews/out)
#   PULUMI_BACKEND_URL, PULUMI_CONFIG_PASSPHRASE, DIGITALOCEAN_TOKEN   for `pulumi preview`
#   GITEA_TOKEN       (optional) a Gitea token that may comment; with DRONE_REPO_LINK,
#                     DRONE_REPO and DRONE_PULL_REQUEST, which Drone sets
#
# A stack the backend does not have yet is made from its stack file (stacks/), and a
# private key file the stack names but this machine lacks is made as a throwaway: the
# preview reads it and connects to no host.
#
# Exits non-zero when a preview failed (after writing its comment), so the check is red.
set -eu
set -o pipefail

log() { echo "previews: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

BASE_REF=${BASE_REF:-}
OUT_DIR=${OUT_DIR:-previews/out}
GITEA_TOKEN=${GITEA_TOKEN:-}
[ -n "$BASE_REF" ] || fatal "BASE_REF is empty"
command -v pulumi >/dev/null 2>&1 || fatal "the pulumi CLI is missing"
PYTHON=${PYTHON:-.venv/bin/python}

# the clone step fetched it where this step has no credentials (a private repository on Drone)
git fetch -q origin "$BASE_REF" 2>/dev/null || true
git rev-parse -q --verify "origin/$BASE_REF" >/dev/null ||
  fatal "no origin/$BASE_REF to compare the pull request with: the clone step must fetch the branch it goes into"
stacks=$(git diff --name-only "origin/$BASE_REF"...HEAD | "$PYTHON" -m previews.touched --plain)
mkdir -p "$OUT_DIR"
failed=
# throwaway_key <stack>: a preview connects to no host, but the program checks that the
# stack's private key file exists; where the pipeline has none, a new key stands in for it
throwaway_key() {
  key_path=$(pulumi config get --stack "$1" dockyard:sshPrivateKeyPath 2>/dev/null) || return 0
  # the program expands a leading ~ (os.path.expanduser): so does this
  # shellcheck disable=SC2088
  case "$key_path" in "~/"*) key_path=$HOME/${key_path#"~/"} ;; esac
  [ -n "$key_path" ] && [ ! -e "$key_path" ] || return 0
  command -v ssh-keygen >/dev/null 2>&1 || fatal "no key at $key_path for $1, and no ssh-keygen to make one"
  log "$1: no key at $key_path; a throwaway key stands in (a preview connects to no host)"
  mkdir -p "$(dirname "$key_path")"
  ssh-keygen -q -t ed25519 -N "" -C "dockyard preview" -f "$key_path"
}

for stack in $stacks; do
  log "previewing $stack"
  # a backend only previews use starts empty: the stack is made there from its stack file
  pulumi stack select --create --non-interactive "$stack" >/dev/null
  throwaway_key "$stack"
  # the raw stream is never stored: the SDK's debug lines in it carry secrets in clear
  if ! PULUMI_ENABLE_STREAMING_JSON_PREVIEW=true pulumi preview --stack "$stack" --non-interactive --json \
      --policy-pack policies |
      "$PYTHON" -m previews.comment --stack "$stack" - --save "$OUT_DIR/$stack.jsonl" > "$OUT_DIR/$stack.md"; then
    failed="$failed $stack"
  fi
  if [ -n "$GITEA_TOKEN" ]; then
    "$PYTHON" -m previews.gitea "$OUT_DIR/$stack.md" "$stack"
  fi
done
[ -z "$failed" ] || fatal "the preview failed for:$failed"
log "previews written to $OUT_DIR for: ${stacks:-no stack}"
