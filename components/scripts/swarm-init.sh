#!/usr/bin/env bash
# swarm-init.sh: make this host the first manager of a new swarm.
#
# Inputs (environment):
#   ADVERTISE_ADDR  the host's private address; other nodes reach the swarm there
#   DATA_PATH_ADDR  where the overlay networks' data (VXLAN) comes and goes: the host's
#                   address on the encrypted data path (swarm-datapath.sh), or its private
#                   address (the default), never a public interface. Docker fixes it when the
#                   node joins: a node in the swarm with another one stops the run.
#   HEARTBEAT       how often nodes report to the managers, in seconds (default 5s, Docker's);
#                   a node silent for a few periods is down and its tasks are moved
#   AUTOLOCK        true: the swarm's managers encrypt their Raft keys with the unlock key
#                   (swarm-unlock-key.sh prints it) and a manager whose engine restarts stays
#                   locked until `docker swarm unlock`; false (default): not
#
# Output: the node ID of this manager on stdout.
# Safe to run again: a host that already manages a swarm is left as it is, but for a
# heartbeat or an autolock setting that differs.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-init.sh | bash -s}"

require_env ADVERTISE_ADDR
default_env HEARTBEAT=5s AUTOLOCK=false DATA_PATH_ADDR="$ADVERTISE_ADDR"
case "$AUTOLOCK" in true | false) ;; *) fatal "AUTOLOCK must be true or false, not '$AUTOLOCK'" ;; esac
case "$HEARTBEAT" in
  [1-9]s | [1-9][0-9]s | [1-9][0-9][0-9]s) ;;
  *) fatal "HEARTBEAT must be seconds such as 5s, not '$HEARTBEAT'" ;;
esac

state=$(docker info --format '{{.Swarm.LocalNodeState}}') || fatal "docker does not answer"
case "$state" in
  active)
    [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
      fatal "this host is already a swarm worker; run 'docker swarm leave' on it first"
    check_data_path_addr
    log "already a swarm manager" ;;
  inactive)
    log "initialising the swarm on $ADVERTISE_ADDR (data path $DATA_PATH_ADDR)"
    docker swarm init --advertise-addr "$ADVERTISE_ADDR" --listen-addr "$ADVERTISE_ADDR:2377" \
      --data-path-addr "$DATA_PATH_ADDR" >/dev/null ;;
  locked)
    fatal "this manager is locked (the swarm is autolocked and its engine restarted): unlock it with" \
      "'pulumi stack output --show-secrets swarm_unlock_key | ssh <this host> docker swarm unlock'," \
      "then run pulumi up again" ;;
  *) fatal "swarm state is '$state'; fix it by hand (docker swarm leave --force) and run again" ;;
esac
wanted=$(( ${HEARTBEAT%s} * 1000000000 ))
current=$(docker info --format '{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}') ||
  fatal "docker does not answer"
if [ "$current" != "$wanted" ]; then
  log "setting the nodes' heartbeat to $HEARTBEAT"
  docker swarm update --dispatcher-heartbeat "$HEARTBEAT" >/dev/null
fi
autolocked=$(docker info --format '{{.Swarm.Cluster.Spec.EncryptionConfig.AutoLockManagers}}') ||
  fatal "docker does not answer"
if [ "$AUTOLOCK" = true ] && [ "$autolocked" != true ]; then
  log "turning the swarm's autolock on"
  # it prints the unlock key: never to a log (swarm-unlock-key.sh hands it on as a secret)
  docker swarm update --autolock=true >/dev/null
elif [ "$AUTOLOCK" = false ] && [ "$autolocked" = true ]; then
  log "turning the swarm's autolock off"
  docker swarm update --autolock=false >/dev/null
fi
docker info --format '{{.Swarm.NodeID}}'
