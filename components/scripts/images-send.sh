#!/usr/bin/env bash
# images-send.sh: load docker-archive tarballs (docker save format) from this machine into a
# host's Docker engine over ssh, each only when the host does not have its image yet: a
# host started from an image that already holds them (a local VM's warm template, a baked
# droplet image) receives nothing. Run locally (pulumi-command local) by ImagePreload.
#
# Inputs (environment):
#   HOST        the ssh Host alias of the host
#   SSH_CONFIG  an ssh_config text that defines it (address, user, key, jump host)
#   ARCHIVES    paths of the archives on this machine, one per line
#
# Safe to run again: an image already in the engine is skipped.
set -eu

log() { echo "images-send: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

HOST=${HOST:-}
SSH_CONFIG=${SSH_CONFIG:-}
ARCHIVES=${ARCHIVES:-}
[ -n "$HOST" ] || fatal "HOST must be set"
[ -n "$SSH_CONFIG" ] || fatal "SSH_CONFIG must be set"
[ -n "$ARCHIVES" ] || fatal "ARCHIVES is empty"

config=$(mktemp)
trap 'rm -f "$config"' EXIT
printf '%s\n' "$SSH_CONFIG" > "$config"

image_id() {
  # "Config": "<id>.json" (docker save before 25) or "blobs/sha256/<id>" (OCI layout)
  tar -xOf "$1" manifest.json |
    sed -n 's/.*"Config": *"\(blobs\/sha256\/\)\{0,1\}\([0-9a-f]\{64\}\)[^"]*".*/\2/p'
}

sent=0
kept=0
while IFS= read -r archive; do
  [ -n "$archive" ] || continue
  [ -f "$archive" ] || fatal "$archive does not exist"
  id=$(image_id "$archive")
  [ -n "$id" ] || fatal "$archive has no manifest.json naming its image config"
  # exit 1: no such image; 255: ssh could not reach the host
  status=0
  # -n: ssh must not read the archive list this loop reads on stdin
  ssh -n -F "$config" "$HOST" docker image inspect --format . "sha256:$id" >/dev/null 2>&1 || status=$?
  case $status in
    0) kept=$((kept + 1)); continue ;;
    255) fatal "cannot reach $HOST over ssh" ;;
  esac
  log "loading $(basename "$archive") into $HOST"
  ssh -F "$config" "$HOST" docker load -q < "$archive" >&2 || fatal "$HOST's docker load rejected $archive"
  sent=$((sent + 1))
done <<LIST
$ARCHIVES
LIST
log "$HOST: $sent image(s) loaded, $kept already there"
