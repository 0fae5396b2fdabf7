#!/usr/bin/env bash
# swarm-unlock-key.sh: on the first manager of an autolocked swarm, print the key that
# unlocks a manager whose engine restarted (`docker swarm unlock`); print nothing when the
# swarm is not autolocked. Its output is a secret: the command that runs it keeps stdout and
# stderr secret and logs neither.
#
# Inputs: none.
# Safe to run again: it only reads.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-unlock-key.sh | bash -s}"

locked=$(docker info --format '{{.Swarm.Cluster.Spec.EncryptionConfig.AutoLockManagers}}') ||
  fatal "docker does not answer, or this host manages no swarm"
[ "$locked" = true ] || exit 0
# read before it is printed: a failure prints nothing
key=$(docker swarm unlock-key -q) || fatal "docker did not give the swarm's unlock key"
[ -n "$key" ] || fatal "docker gave an empty unlock key"
printf '%s\n' "$key"
