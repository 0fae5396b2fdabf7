#!/usr/bin/env bash
# swarm-labels.sh: set dockyard's labels on a swarm node. Run on a manager.
#
# Inputs (environment):
#   NODE_ID  the node to label
#   LABELS   space-separated key=value pairs, e.g. "dockyard.role=worker dockyard.nfs=ro"
#
# Safe to run again: a label already at its value is not touched.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-labels.sh | bash -s}"

require_env NODE_ID
default_env LABELS

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
