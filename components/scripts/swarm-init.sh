#!/usr/bin/env bash
# swarm-init.sh: make this host the first manager of a new swarm.
#
# Inputs (environment):
#   ADVERTISE_ADDR  the host's private address; other nodes reach the swarm there, and the
#                   overlay networks' data (VXLAN) goes over it, never a public interface
#
# Output: the node ID of this manager on stdout.
# Safe to run again: a host that already manages a swarm is left as it is.
set -eu

log() { echo "swarm-init: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

ADVERTISE_ADDR=${ADVERTISE_ADDR:-}
[ -n "$ADVERTISE_ADDR" ] || fatal "ADVERTISE_ADDR must be set"

state=$(docker info --format '{{.Swarm.LocalNodeState}}') || fatal "docker does not answer"
case "$state" in
  active)
    [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
      fatal "this host is already a swarm worker; run 'docker swarm leave' on it first"
    log "already a swarm manager" ;;
  inactive)
    log "initialising the swarm on $ADVERTISE_ADDR"
    docker swarm init --advertise-addr "$ADVERTISE_ADDR" --listen-addr "$ADVERTISE_ADDR:2377" \
      --data-path-addr "$ADVERTISE_ADDR" >/dev/null ;;
  *) fatal "swarm state is '$state'; fix it by hand (docker swarm leave --force) and run again" ;;
esac
docker info --format '{{.Swarm.NodeID}}'
