#!/usr/bin/env bash
# swarm-recover.sh: bring back a swarm that lost its quorum, or whose manager lost its state,
# from the Raft backup this manager took (dockyard-backup's dockyard-swarm snapshots):
# Docker's documented recovery, `docker swarm init --force-new-cluster` on the restored state.
# The swarm comes back with its services, secrets and nodes; the workers reconnect by
# themselves, and other managers must leave and join again (README, "Backups and restore").
#
# Run as root on the manager that backs up the swarm's state, behind the scripts' library, e.g.
#   python3 -m components.shell swarm-recover.sh | ssh -F ssh_config dockyard-<stack>-b 'bash -s'
#
# Inputs (environment, optional):
#   SNAPSHOT   the snapshot to restore (default: this host's newest dockyard-swarm snapshot)
#   FORCE      yes: recover even though this manager still reaches a leader
#   SETTLE_SECONDS  how long the restored state may take to elect this manager by itself
#              before a new cluster is forced (default 60)
# For tests only:
#   SYSROOT    a directory that stands for / where the backup's settings are read
#
# The state the engine had is kept beside it (/var/lib/docker/swarm.before-recovery-<time>).
# Safe to run again: a manager that reaches its swarm's leader is left alone unless FORCE=yes.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-recover.sh | bash -s}"

default_env SNAPSHOT FORCE SETTLE_SECONDS=60 SYSROOT
SETTINGS=$SYSROOT/etc/dockyard/backup.env
[ -n "$SYSROOT" ] || [ "$(id -u)" = 0 ] || fatal "must run as root"
[ -f "$SETTINGS" ] || fatal "no $SETTINGS: backups are off (dockyard:backupRepository), or this is not the manager that backs up the swarm"
set -a
# shellcheck disable=SC1090
. "$SETTINGS"
set +a
[ -n "${SWARM_DIR:-}" ] || fatal "this host does not back up the swarm's state; run this on the manager that does (README, \"Backups and restore\")"
case "$SNAPSHOT" in *[!0-9a-f]*) fatal "SNAPSHOT must be a snapshot id, got '$SNAPSHOT'" ;; esac

if [ "$FORCE" != yes ] && docker node ls -q >/dev/null 2>&1; then
  log "this manager reaches its swarm's leader: nothing to recover (FORCE=yes recovers anyway)"
  exit 0
fi

found=$(restic --no-lock snapshots --host "$BACKUP_HOST" --tag dockyard-swarm --json) ||
  fatal "cannot list the snapshots in $RESTIC_REPOSITORY"
case "$found" in *"\"${SNAPSHOT:-id}"*) ;; *) fatal "no backup of the swarm's state of $BACKUP_HOST${SNAPSHOT:+ with id $SNAPSHOT} in $RESTIC_REPOSITORY" ;; esac

started=$(date +%s)
log "stopping docker"
systemctl stop docker.socket docker.service
# whatever happens next, the engine runs again when this ends
trap 'systemctl start docker.service' EXIT
if [ -e "$SWARM_DIR" ]; then
  aside="$SWARM_DIR.before-recovery-$(date +%s)"
  mv "$SWARM_DIR" "$aside"
  log "kept the engine's own state in $aside"
fi
log "restoring the swarm's state from ${SNAPSHOT:-the newest backup}"
restic restore "${SNAPSHOT:-latest}" --host "$BACKUP_HOST" --tag dockyard-swarm --target / >/dev/null
[ -d "$SWARM_DIR" ] || fatal "the backup holds no $SWARM_DIR"
systemctl start docker.service

# the address the node had, which the workers know it by
address=$(grep -o '"AdvertiseAddr":"[^"]*"' "$SWARM_DIR/docker-state.json" | cut -d'"' -f4 | sed 's/:[0-9]*$//')
[ -n "$address" ] || fatal "the restored state names no advertise address ($SWARM_DIR/docker-state.json)"
# a restored state whose only manager is this one elects it again by itself (in the real
# engine's run `swarm init` then timed out against the swarm starting up); one that names
# other managers has no quorum until a new cluster is forced
waited=0
until docker node ls -q >/dev/null 2>&1 || [ "$waited" -ge "$SETTLE_SECONDS" ]; do
  sleep 5
  waited=$((waited + 5))
done
if ! docker node ls -q >/dev/null 2>&1; then
  log "forcing a new cluster on $address from the restored state"
  docker swarm init --force-new-cluster --advertise-addr "$address" >/dev/null ||
    log "docker swarm init did not answer in time; waiting for the leader"
fi
waited=0
until docker node ls -q >/dev/null 2>&1; do
  [ "$waited" -lt 120 ] || fatal "the manager has no leader 120 s after the recovery; see journalctl -u docker"
  sleep 2
  waited=$((waited + 2))
done
log "recovered in $(( $(date +%s) - started )) s: $(docker node ls -q | wc -l) node(s), $(docker service ls -q | wc -l) service(s)"
