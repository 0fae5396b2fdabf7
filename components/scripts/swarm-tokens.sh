#!/usr/bin/env bash
# swarm-tokens.sh: print the swarm's join tokens, worker first, then manager, one per line.
# Run on a manager. The caller keeps the output secret (no logging, secret outputs).
#
# Inputs: none. Safe to run again: it only reads.
set -eu

fatal() { echo "swarm-tokens: error: $*" >&2; exit 1; }

[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] || fatal "this host is not a swarm manager"
docker swarm join-token -q worker
docker swarm join-token -q manager
