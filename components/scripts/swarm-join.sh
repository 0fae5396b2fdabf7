#!/usr/bin/env bash
# swarm-join.sh: join this host to the swarm as a manager or a worker.
#
# Inputs (environment):
#   MANAGER_ADDR    private address of a manager of the swarm
#   ADVERTISE_ADDR  this host's private address; the swarm's managers reach it there
#   DATA_PATH_ADDR  where the overlay networks' data (VXLAN) comes and goes: the host's
#                   address on the encrypted data path (swarm-datapath.sh), or its private
#                   address (the default). Docker fixes it when the node joins: a node in the
#                   swarm with another one stops the run.
#   JOIN_ROLE       manager or worker
#   FIRST_MANAGER_ID  node ID of the swarm's first manager: a host already in a swarm that
#                   does not have it among its managers is in another swarm (the first
#                   manager was made again, and made a new one); it leaves that swarm and
#                   joins this one
#   JOIN_TOKEN      the join token for that role; it must come in with the script on stdin,
#                   never on a command line. It is sent to dockerd's socket on stdin too,
#                   so it never shows in any process's argv.
#
# Output: this node's ID on stdout.
# Safe to run again: a host already in the swarm is left as it is.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-join.sh | bash -s}"

require_env MANAGER_ADDR ADVERTISE_ADDR JOIN_TOKEN
default_env JOIN_ROLE FIRST_MANAGER_ID DATA_PATH_ADDR="$ADVERTISE_ADDR"
case "$JOIN_ROLE" in manager|worker) ;; *) fatal "JOIN_ROLE must be manager or worker" ;; esac
command -v curl >/dev/null 2>&1 || fatal "curl is needed to talk to dockerd's socket"

state=$(docker info --format '{{.Swarm.LocalNodeState}}') || fatal "docker does not answer"
if [ "$state" = active ] && [ -n "$FIRST_MANAGER_ID" ]; then
  managers=$(docker info --format '{{range .Swarm.RemoteManagers}}{{.NodeID}} {{end}}')
  case " $managers " in
    *" $FIRST_MANAGER_ID "*) ;;
    *)
      log "this host is in another swarm (managers: ${managers:-none known}), not the one of manager $FIRST_MANAGER_ID; leaving it"
      docker swarm leave --force >/dev/null || fatal "cannot leave the other swarm"
      state=inactive ;;
  esac
fi
case "$state" in
  active)
    is_manager=$(docker info --format '{{.Swarm.ControlAvailable}}')
    if [ "$JOIN_ROLE" = manager ] && [ "$is_manager" != true ]; then
      fatal "this host is a swarm worker; promote it from a manager (docker node promote) instead"
    fi
    check_data_path_addr
    log "already in the swarm" ;;
  inactive)
    log "joining the swarm at $MANAGER_ADDR as a $JOIN_ROLE"
    # printf is a shell builtin: the token goes into curl's stdin, not into an argv
    response=$(printf '{"ListenAddr":"%s:2377","AdvertiseAddr":"%s","DataPathAddr":"%s","RemoteAddrs":["%s:2377"],"JoinToken":"%s"}' \
        "$ADVERTISE_ADDR" "$ADVERTISE_ADDR" "$DATA_PATH_ADDR" "$MANAGER_ADDR" "$JOIN_TOKEN" |
      curl -sS --unix-socket /var/run/docker.sock -o - -w '\n%{http_code}' \
        -H 'Content-Type: application/json' --data-binary @- http://localhost/swarm/join) ||
      fatal "cannot reach dockerd's socket"
    code=$(printf '%s' "$response" | tail -n 1)
    [ "$code" = 200 ] || fatal "dockerd refused the join (HTTP $code): $(printf '%s' "$response" | head -n 1)"
    for _ in $(seq 1 30); do
      [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ] && break
      sleep 2
    done ;;
  locked)
    fatal "this manager is locked (the swarm is autolocked and its engine restarted): unlock it with" \
      "'pulumi stack output --show-secrets swarm_unlock_key | ssh <this host> docker swarm unlock'," \
      "then run pulumi up again" ;;
  *) fatal "swarm state is '$state'; fix it by hand (docker swarm leave --force) and run again" ;;
esac
docker info --format '{{.Swarm.NodeID}}'
