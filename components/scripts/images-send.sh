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
#   CONNECT_TRIES  how many times a host ssh cannot reach is tried (default 6, RETRY_PAUSE
#               seconds apart, default 10): a VM busy with its bootstrap can miss ssh's
#               bounded connect for a while
#
# Safe to run again: an image already in the engine is skipped.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell images-send.sh | bash -s}"

require_env HOST SSH_CONFIG ARCHIVES
default_env CONNECT_TRIES=6 RETRY_PAUSE=10

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
  tries=0
  while :; do
    status=0
    # -n: ssh must not read the archive list this loop reads on stdin
    ssh -n -F "$config" "$HOST" docker image inspect --format . "sha256:$id" >/dev/null 2>&1 || status=$?
    [ "$status" -eq 255 ] || break
    tries=$((tries + 1))
    [ "$tries" -lt "$CONNECT_TRIES" ] || fatal "cannot reach $HOST over ssh ($tries tries)"
    log "cannot reach $HOST yet; trying again in $RETRY_PAUSE s"
    sleep "$RETRY_PAUSE"
  done
  if [ "$status" -eq 0 ]; then
    kept=$((kept + 1))
    continue
  fi
  log "loading $(basename "$archive") into $HOST"
  ssh -F "$config" "$HOST" docker load -q < "$archive" >&2 || fatal "$HOST's docker load rejected $archive"
  sent=$((sent + 1))
done <<LIST
$ARCHIVES
LIST
log "$HOST: $sent image(s) loaded, $kept already there"
