#!/usr/bin/env bash
# swarm-membership.sh: a node's place in the swarm, kept from the operator's machine through
# whichever manager answers. Run locally (pulumi-command local) by the node's membership:
#   swarm-membership.sh check    the node is in the swarm; prints its ID (create, update)
#   swarm-membership.sh remove   runs swarm-remove-node.sh, given on stdin, on a manager (delete)
#
# Inputs (environment):
#   NODE_ID        the node
#   MANAGERS       ssh Host aliases of the managers to try, in order, the first manager first
#   SSH_CONFIG     an ssh_config text that defines those aliases (address, user, key, jump
#                  host) with a bounded ConnectTimeout
#   DRAIN_TIMEOUT  passed on to swarm-remove-node.sh (default 120)
#   CHECK_ROUNDS   how many times `check` goes through the managers before it fails
#                  (default 6, ROUND_PAUSE seconds apart, default 10): a manager busy
#                  loading images can miss ssh's bounded banner exchange for a while
#
# A manager that cannot be reached (ssh exits 255), or that cannot act for the swarm there
# (swarm-remove-node.sh exits 3), is skipped. When no manager can act, `remove` warns and
# succeeds: the swarm is gone or out of reach, and a destroy of a stack whose managers are
# dead must still finish (so one round only). `check` tries again, then fails. Safe to run again, as swarm-remove-node.sh is.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-membership.sh | bash -s}"

ACTION=${1:-}
case "$ACTION" in check|remove) ;; *) fatal "usage: swarm-membership.sh check|remove" ;; esac
require_env NODE_ID MANAGERS SSH_CONFIG
default_env DRAIN_TIMEOUT=120 CHECK_ROUNDS=6 ROUND_PAUSE=10
case "$NODE_ID" in *[!A-Za-z0-9]*) fatal "NODE_ID $NODE_ID is not a swarm node ID" ;; esac

config=$(mktemp)
trap 'rm -f "$config"' EXIT
printf '%s\n' "$SSH_CONFIG" > "$config"
if [ "$ACTION" = remove ]; then
  removal=$(cat)
  [ -n "$removal" ] || fatal "swarm-remove-node.sh must come on stdin"
fi

# try_managers: 0 once one manager acted, 1 when none could; a refusal is fatal at once
try_managers() {
  for manager in $MANAGERS; do
    status=0
    if [ "$ACTION" = check ]; then
      ssh -F "$config" "$manager" \
        "[ \"\$(docker info --format '{{.Swarm.ControlAvailable}}')\" = true ] || exit 3
         docker node inspect --format '{{.ID}}' $NODE_ID" || status=$?
    else
      printf '%s\n' "$removal" |
        ssh -F "$config" "$manager" "NODE_ID=$NODE_ID DRAIN_TIMEOUT=$DRAIN_TIMEOUT bash -s" || status=$?
    fi
    case "$status" in
      0) return 0 ;;
      255) log "cannot reach manager $manager; trying the next one" ;;
      3) log "manager $manager cannot act for the swarm; trying the next one" ;;
      *) fatal "$ACTION of node $NODE_ID on manager $manager failed (exit $status)" ;;
    esac
  done
  return 1
}

rounds=1
[ "$ACTION" = remove ] || rounds=$CHECK_ROUNDS
round=1
while :; do
  if try_managers; then exit 0; fi
  [ "$round" -lt "$rounds" ] || break
  round=$((round + 1))
  log "no manager answered; round $round of $rounds in ${ROUND_PAUSE}s"
  sleep "$ROUND_PAUSE"
done

[ "$ACTION" = remove ] || fatal "no manager of $MANAGERS answers; is the swarm up?"
log "warning: no manager of $MANAGERS answers, so node $NODE_ID was not removed from the swarm;"
log "warning: if the swarm lives on, run 'docker node rm --force $NODE_ID' on one of its managers"
