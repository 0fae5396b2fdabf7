#!/usr/bin/env bash
# swarm-remove-node.sh: take a node out of the swarm before its host is deleted: demote it
# if it is a manager, drain it, wait (bounded) for its tasks to move, then remove it.
# Run on a manager that stays. Works when the node's host is already gone.
#
# Inputs (environment):
#   NODE_ID        the node to remove
#   DRAIN_TIMEOUT  seconds to wait for its tasks to move elsewhere (default 120)
#
# Exits 3 when this host cannot act for the swarm (not a manager, or no leader in reach), so
# that the caller tries another manager.
# Safe to run again: a node that is no longer in the swarm is left alone.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-remove-node.sh | bash -s}"

cannot_act() { log "$*"; exit 3; }

require_env NODE_ID
default_env DRAIN_TIMEOUT=120
[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] || cannot_act "this host is not a swarm manager"
# a manager without a leader in reach cannot tell whether the node is still in the swarm
docker node ls -q >/dev/null 2>&1 || cannot_act "this manager has no leader in reach"

if ! docker node inspect "$NODE_ID" >/dev/null 2>&1; then
  log "$NODE_ID is not in the swarm any more"
  exit 0
fi
[ "$(docker info --format '{{.Swarm.NodeID}}')" != "$NODE_ID" ] || cannot_act "a manager cannot remove itself"

if [ "$(docker node inspect --format '{{.Spec.Role}}' "$NODE_ID")" = manager ]; then
  managers=$(docker node ls --filter role=manager -q | wc -l)
  reachable=$(docker node ls --filter role=manager --format '{{.ManagerStatus}}' | grep -c -E 'Leader|Reachable' || true)
  # after the demotion, the remaining managers must still hold a majority of themselves
  if [ $(( (reachable - 1) * 2 )) -le $(( managers - 1 )) ]; then
    fatal "demoting $NODE_ID would leave $((reachable - 1)) reachable of $((managers - 1)) managers: no majority"
  fi
  log "demoting $NODE_ID"
  docker node demote "$NODE_ID" >/dev/null
fi

log "draining $NODE_ID"
docker node update --availability drain "$NODE_ID" >/dev/null
# drained: nothing is meant to run on the node any more, every replicated service has as many
# tasks meant to run and running as it asks for, and no task meant to run is still starting.
# Counting matters: right after the drain the orchestrator has stopped the node's tasks before
# it has made their replacements, and in that moment no task is "starting"; and the swarm's
# own count of a service's running tasks still counts a stopping one. So the removal leaves no
# service short of its tasks, even one whose replicas all were on this node.
drained() {
  [ "$(docker node ps "$NODE_ID" --filter desired-state=running -q 2>/dev/null | wc -l)" -eq 0 ] || return 1
  for service in $(docker service ls -q --filter mode=replicated 2>/dev/null); do
    wanted=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "$service" 2>/dev/null) || return 1
    running=$(docker service ps "$service" --filter desired-state=running --format '{{.CurrentState}}' 2>/dev/null |
      grep -c '^Running' || true)
    [ "$running" -ge "$wanted" ] || return 1
  done
  ! docker service ls -q 2>/dev/null |
    xargs -r docker service ps --filter desired-state=running --format '{{.CurrentState}}' 2>/dev/null |
    grep -qv '^Running'
}
waited=0
while [ "$waited" -lt "$DRAIN_TIMEOUT" ]; do
  drained && break
  sleep 5
  waited=$((waited + 5))
done
[ "$waited" -lt "$DRAIN_TIMEOUT" ] ||
  log "warning: after ${DRAIN_TIMEOUT}s the tasks of $NODE_ID or their replacements are not all running; removing it anyway"

log "removing $NODE_ID from the swarm"
docker node rm --force "$NODE_ID" >/dev/null
