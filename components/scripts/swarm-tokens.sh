#!/usr/bin/env bash
# swarm-tokens.sh: print the swarm's join tokens, worker first, then manager, one per line.
# Run on a manager. The caller keeps the output secret (no logging, secret outputs).
#
# Inputs: none. Safe to run again: it only reads.
# Both tokens are read and checked before either is printed: a run that fails prints
# nothing on stdout, so no token ends up in a failed resource's output or error message.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-tokens.sh | bash -s}"

# token <worker|manager>: the join token of that role, or fail without printing it
token() {
  value=$(docker swarm join-token -q "$1") || fatal "cannot read the $1 join token (docker swarm join-token -q $1)"
  case "$value" in
    SWMTKN-*) ;;
    *) fatal "docker returned no $1 join token; check \`docker info\` on this manager" ;;
  esac
  printf '%s' "$value"
}

[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] || fatal "this host is not a swarm manager"
worker=$(token worker)
manager=$(token manager)
printf '%s\n%s\n' "$worker" "$manager"
