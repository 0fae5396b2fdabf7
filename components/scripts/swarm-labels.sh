#!/usr/bin/env bash
# swarm-labels.sh: set dockyard's labels on a swarm node. Run on a manager.
#
# Inputs (environment):
#   NODE_ID  the node to label
#   LABELS   space-separated key=value pairs, e.g. "dockyard.role=worker dockyard.nfs=ro"
#
# Safe to run again: a label already at its value is not touched.
set -eu

log() { echo "swarm-labels: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

NODE_ID=${NODE_ID:-}
LABELS=${LABELS:-}
[ -n "$NODE_ID" ] || fatal "NODE_ID must be set"

for label in $LABELS; do
  key=${label%%=*}
  value=${label#*=}
  [ "$key" != "$label" ] || fatal "label $label is not key=value"
  current=$(docker node inspect --format "{{ index .Spec.Labels \"$key\" }}" "$NODE_ID") ||
    fatal "node $NODE_ID is not in this swarm"
  if [ "$current" != "$value" ]; then
    log "labelling $NODE_ID $key=$value"
    docker node update --label-add "$key=$value" "$NODE_ID" >/dev/null
  fi
done
