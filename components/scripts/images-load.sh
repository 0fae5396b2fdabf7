#!/usr/bin/env bash
# images-load.sh: load docker-archive tarballs (docker save format) into this host's engine,
# for hosts that cannot pull from a registry (air-gapped installs, the local VMs).
#
# Inputs (environment):
#   ARCHIVES  space-separated paths of the archives on this host
#
# Safe to run again: an archive whose image is already in the engine is skipped.
set -eu

log() { echo "images-load: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

ARCHIVES=${ARCHIVES:-}
[ -n "$ARCHIVES" ] || fatal "ARCHIVES is empty"

for archive in $ARCHIVES; do
  [ -f "$archive" ] || fatal "$archive does not exist"
  # "Config": "<id>.json" (docker save before 25) or "blobs/sha256/<id>" (OCI layout)
  id=$(tar -xOf "$archive" manifest.json |
    sed -n 's/.*"Config": *"\(blobs\/sha256\/\)\{0,1\}\([0-9a-f]\{64\}\)[^"]*".*/\2/p')
  [ -n "$id" ] || fatal "$archive has no manifest.json naming its image config"
  if docker image inspect "sha256:$id" >/dev/null 2>&1; then
    continue
  fi
  log "loading $archive"
  docker load -q -i "$archive" >&2 || fatal "docker load rejected $archive"
done
log "$(echo "$ARCHIVES" | wc -w) image archive(s) in place"
