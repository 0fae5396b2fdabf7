#!/usr/bin/env bash
# backup.sh: back up this host's data with restic, on a schedule and on demand; on a new host,
# first restore that data from the repository, before anything that uses it starts.
#
# Installs:
#   /etc/dockyard/backup.env and backup.password (0600): the repository, its keys, its password
#   /usr/local/sbin/dockyard-backup: one backup of BACKUP_PATHS, then the snapshots of this
#       host beyond BACKUP_KEEP forgotten and pruned; `systemctl start dockyard-backup` runs it
#   dockyard-backup.service and .timer (BACKUP_SCHEDULE)
#
# Inputs (environment):
#   BACKUP_HOST        the name this host's snapshots carry (restic --host): the stack's host name
#   BACKUP_PATHS       space-separated absolute directories to back up (and to restore); may be
#                      empty on a host that backs up only the swarm's state
#   BACKUP_PAUSE       space-separated containers paused while BACKUP_PATHS is read (Gitea and
#                      Drone, whose SQLite databases and repositories must be read as of one
#                      moment, as a crash would leave them); may be empty
#   SWARM_STATE        yes: also back up this manager's swarm state (/var/lib/docker/swarm) as
#                      Docker documents it, with the engine stopped for the copy, tagged
#                      dockyard-swarm; it is restored only by swarm-recover.sh, never by RESTORE
#   RESTIC_REPOSITORY  the restic repository (s3:https://..., rest:http://...)
#   RESTIC_PASSWORD    (secret) the repository's password
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  (secret) keys of an s3: repository; optional
#   BACKUP_SCHEDULE    systemd OnCalendar= of the backup
#   BACKUP_KEEP        restic forget options, e.g. "--keep-daily 7 --keep-weekly 4"
#   INIT_REPOSITORY    yes: create the repository when it does not exist. One host of a stack
#                      does (the others wait for it): two hosts creating it at once on S3
#                      would leave one host's key over the other's
#   RESTORE            "latest": restore BACKUP_PATHS from this host's newest snapshot, once,
#                      and only into empty directories; empty: no restore. A stack that
#                      restores never creates the repository
#   REMOVE             1: stop the timer and remove what this script installs (backups turned
#                      off: the command's delete); the repository and the data are left alone
# For tests only:
#   SYSROOT            a directory that stands for / in the paths this script writes (its
#                      settings, units, marker and cache; BACKUP_PATHS are taken as they are)
#   SKIP_SYSTEMD       yes: write the units but do not ask systemd to load or start them
#
# Safe to run again: files are written only when they change; a restore happens once per
# host (/var/lib/dockyard/backup-restored) and never over data; one that stopped halfway is
# taken up again by the next run.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell backup.sh | bash -s}"

default_env BACKUP_HOST BACKUP_PATHS BACKUP_PAUSE SWARM_STATE RESTIC_REPOSITORY RESTIC_PASSWORD BACKUP_SCHEDULE \
  BACKUP_KEEP INIT_REPOSITORY RESTORE SYSROOT SKIP_SYSTEMD AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY REMOVE=0
UNITS=$SYSROOT/etc/systemd/system
PASSWORD_FILE=$SYSROOT/etc/dockyard/backup.password

if [ "$REMOVE" = 1 ]; then
  if [ "$SKIP_SYSTEMD" != yes ] && systemctl is-enabled --quiet dockyard-backup.timer 2>/dev/null; then
    log "stopping dockyard-backup.timer"
    systemctl disable --now dockyard-backup.timer >/dev/null 2>&1
  fi
  rm -f "$UNITS/dockyard-backup.timer" "$UNITS/dockyard-backup.service" "$SYSROOT/usr/local/sbin/dockyard-backup" \
    "$SYSROOT/etc/dockyard/backup.env" "$PASSWORD_FILE"
  [ "$SKIP_SYSTEMD" = yes ] || systemctl daemon-reload
  log "backups of this host are off"
  exit 0
fi

require_env BACKUP_HOST BACKUP_SCHEDULE RESTIC_REPOSITORY RESTIC_PASSWORD
[ -n "$BACKUP_PATHS" ] || [ "$SWARM_STATE" = yes ] || fatal "BACKUP_PATHS must be set"
case "$BACKUP_HOST" in *[!A-Za-z0-9_.-]*) fatal "BACKUP_HOST must be a host name, got '$BACKUP_HOST'" ;; esac
for path in $BACKUP_PATHS; do
  case "$path" in /*) ;; *) fatal "BACKUP_PATHS must be absolute directories, got '$path'" ;; esac
  case "$path" in *[!A-Za-z0-9/._-]* | */../* | */..) fatal "BACKUP_PATHS: '$path' is not a plain path" ;; esac
done
for container in $BACKUP_PAUSE; do
  case "$container" in *[!A-Za-z0-9_.-]*) fatal "BACKUP_PAUSE must be container names, got '$container'" ;; esac
done
case "$BACKUP_KEEP" in *[!a-z0-9\ -]*) fatal "BACKUP_KEEP must be restic forget options such as --keep-daily 7" ;; esac
case "$SWARM_STATE" in "" | yes) ;; *) fatal "SWARM_STATE must be yes or empty, got '$SWARM_STATE'" ;; esac
case "$INIT_REPOSITORY" in "" | yes) ;; *) fatal "INIT_REPOSITORY must be yes or empty" ;; esac
case "$RESTORE" in "" | latest) ;; *) fatal "RESTORE must be latest or empty, got '$RESTORE'" ;; esac
# what goes into the settings file and the timer: one line each, nothing sh or systemd would
# read more into (the values are not repeated here: the keys may be secret)
for value in "$RESTIC_REPOSITORY" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"; do
  case "$value" in *[!A-Za-z0-9:/._~%+=@,-]*)
    fatal "the repository or an S3 key holds a character it cannot hold here (a space, a quote, a line break, '\$' or '\\'); check dockyard:backupRepository and the S3 keys" ;;
  esac
done
case "$BACKUP_SCHEDULE" in *[!A-Za-z0-9:/._~*,\ -]*) fatal "BACKUP_SCHEDULE is not a systemd calendar event" ;; esac
[ -n "$SYSROOT" ] || [ "$(id -u)" = 0 ] || fatal "must run as root"

command -v restic >/dev/null 2>&1 || apt_install restic

# restic reads the password from its file here as the timer does (it trims the file's
# whitespace, not the variable's: one source keeps both the same)
printf '%s\n' "$RESTIC_PASSWORD" | put_file "$PASSWORD_FILE" 600
unset RESTIC_PASSWORD
export RESTIC_REPOSITORY RESTIC_PASSWORD_FILE="$PASSWORD_FILE" AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
# restic's cache belongs with the host's state, not in a home directory
export RESTIC_CACHE_DIR=$SYSROOT/var/cache/dockyard-restic

# quietly <restic arguments>: restic, its words shown only when it fails (they hold no secret)
quietly() {
  out=$(restic "$@" 2>&1) && return 0
  printf '%s\n' "$out" | tail -n 5 | sed 's/^/restic: /' >&2
  return 1
}

if ! quietly --no-lock cat config; then
  if [ "$INIT_REPOSITORY" != yes ] || [ "$RESTORE" = latest ]; then
    fatal "cannot open the restic repository $RESTIC_REPOSITORY (restic's words above): check dockyard:backupRepository, backupPassword and the S3 keys"
  fi
  log "creating the repository"
  quietly init || fatal "cannot open or create the restic repository $RESTIC_REPOSITORY (restic's words above): check dockyard:backupRepository, backupPassword and the S3 keys"
fi

# restore: on a host whose directories are empty, from its newest snapshot, once
MARKER=$SYSROOT/var/lib/dockyard/backup-restored
RESTORING=$SYSROOT/var/lib/dockyard/backup-restoring
if [ "$RESTORE" = latest ] && [ -n "$BACKUP_PATHS" ] && [ ! -f "$MARKER" ]; then
  found=$(restic --no-lock snapshots --host "$BACKUP_HOST" --tag dockyard --json) ||
    fatal "cannot list the snapshots of $BACKUP_HOST"
  case "$found" in *'"id"'*) ;; *)
    fatal "no snapshot of host $BACKUP_HOST in the repository to restore; unset dockyard:restoreFrom to start it empty" ;;
  esac
  # a restore that stopped halfway left what it wrote: the next run takes it up
  if [ ! -f "$RESTORING" ]; then
    for path in $BACKUP_PATHS; do
      if [ -d "$path" ] && [ -n "$(find "$path" -mindepth 1 -maxdepth 1 ! -name lost+found | head -n 1)" ]; then
        fatal "$path already holds data: a restore never writes over it; unset dockyard:restoreFrom, or empty $path" \
          "(if rm refuses a file, chattr -R -i $path first: the CI volume keeps one immutable)"
      fi
    done
  fi
  mkdir -p "$(dirname "$MARKER")"
  touch "$RESTORING"
  log "restoring $BACKUP_PATHS from the newest snapshot of $BACKUP_HOST"
  started=$(date +%s)
  # a snapshot holds this host's paths by their absolute names; another host's prune may hold
  # the repository's lock for a while
  attempt=1
  until quietly restore latest --host "$BACKUP_HOST" --tag dockyard --target /; do
    [ "$attempt" -lt 5 ] || fatal "the restore stopped (restic's words above); run pulumi up again to take it up"
    attempt=$((attempt + 1))
    sleep 30
  done
  date -u +%Y-%m-%dT%H:%M:%SZ > "$MARKER"
  rm -f "$RESTORING"
  log "restored $BACKUP_HOST's newest snapshot in $(( $(date +%s) - started )) s"
fi

swarm_dir=""
if [ "$SWARM_STATE" = yes ]; then
  swarm_dir=/var/lib/docker/swarm
fi
put_file "$SYSROOT/etc/dockyard/backup.env" 600 <<EOF
RESTIC_REPOSITORY=$RESTIC_REPOSITORY
RESTIC_PASSWORD_FILE=/etc/dockyard/backup.password
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
RESTIC_CACHE_DIR=/var/cache/dockyard-restic
BACKUP_HOST=$BACKUP_HOST
BACKUP_PATHS="$BACKUP_PATHS"
BACKUP_PAUSE="$BACKUP_PAUSE"
BACKUP_KEEP="$BACKUP_KEEP"
SWARM_DIR=$swarm_dir
EOF

put_file "$SYSROOT/usr/local/sbin/dockyard-backup" 755 <<'RUN'
#!/bin/sh
# dockyard-backup: one backup of this host's data (settings in /etc/dockyard/backup.env), then
# its snapshots beyond the kept ones forgotten. Hosts share the repository: a step that finds
# it locked by another host's prune waits and tries again.
set -eu
set -f
: "${BACKUP_HOST:?}"
retry() {
  for attempt in 1 2 3 4 5 6 7 8; do
    "$@" && return 0
    echo "dockyard-backup: '$*' failed (attempt $attempt of 8), trying again in 60 s" >&2
    sleep 60
  done
  return 1
}
# snapshot <tag> <path>...: restic's exit 3 is a snapshot taken with some files unreadable,
# which a new attempt would only take again
snapshot() {
  tag=$1
  shift
  status=0
  restic backup --quiet --host "$BACKUP_HOST" --tag "$tag" "$@" || status=$?
  [ "$status" -ne 3 ] || echo "dockyard-backup: warning: some files of $* could not be read" >&2
  [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
}
# forget <tag>: this host's snapshots with that tag beyond the kept ones
forget() {
  [ -n "${BACKUP_KEEP:-}" ] || return 0
  # shellcheck disable=SC2086
  retry restic forget --quiet --host "$BACKUP_HOST" --tag "$1" $BACKUP_KEEP --prune
}
existing=""
for path in ${BACKUP_PATHS:-}; do
  [ -d "$path" ] && existing="$existing $path"
done
# the running containers of BACKUP_PAUSE are frozen while their data is read, and thawed
# however the backup ends. A container is counted as paused before it is asked to pause: a
# stop that kills `docker pause` halfway must not leave it frozen
paused=""
thaw() {
  for container in $paused; do
    docker unpause "$container" >/dev/null 2>&1 ||
      [ "$(docker inspect --type container -f '{{.State.Paused}}' "$container" 2>/dev/null)" != true ] ||
      echo "dockyard-backup: warning: cannot unpause $container" >&2
  done
  paused=""
}
trap thaw EXIT
trap 'thaw; exit 1' INT TERM
freeze() {
  for container in ${BACKUP_PAUSE:-}; do
    [ "$(docker inspect --type container -f '{{.State.Running}} {{.State.Paused}}' "$container" 2>/dev/null)" = "true false" ] ||
      continue
    paused="$paused $container"
    docker pause "$container" >/dev/null || echo "dockyard-backup: warning: cannot pause $container; its data is read as it runs" >&2
  done
  [ -z "$paused" ] || echo "dockyard-backup: paused$paused while their data is read"
}
# frozen for one attempt at a time: a retry's wait for another host's lock is not spent frozen
frozen_snapshot() {
  freeze
  frozen_status=0
  snapshot "$@" || frozen_status=$?
  thaw
  return "$frozen_status"
}
# one backup of this host at a time: a second one would thaw the containers during the first's read
exec 9>"${LOCK_FILE:-/run/dockyard-backup.lock}"
flock -n 9 || { echo "dockyard-backup: another backup of this host is running" >&2; exit 1; }
# a container a stopped backup left paused (held by nobody now that the lock is ours) runs again
for container in ${BACKUP_PAUSE:-}; do
  [ "$(docker inspect --type container -f '{{.State.Paused}}' "$container" 2>/dev/null)" = true ] || continue
  echo "dockyard-backup: unpausing $container, left paused by a backup that was stopped" >&2
  paused="$paused $container"
done
thaw
started=$(date +%s)
if [ -n "$existing" ]; then
  if [ -n "${BACKUP_PAUSE:-}" ]; then
    # the bulk (a registry's first upload can take hours) is read unfrozen first; the frozen
    # snapshot after it reads only what changed since, so Gitea and Drone stop for seconds
    # shellcheck disable=SC2086
    retry snapshot dockyard-unfrozen $existing
  fi
  # shellcheck disable=SC2086
  retry frozen_snapshot dockyard $existing
  forget dockyard
  if [ -n "${BACKUP_PAUSE:-}" ]; then
    # the unfrozen pass is only the frozen one's parent: its data is the frozen one's too
    retry restic forget --quiet --host "$BACKUP_HOST" --tag dockyard-unfrozen --keep-last 1
  fi
  echo "dockyard-backup: backed up$existing in $(( $(date +%s) - started )) s"
elif [ -n "${BACKUP_PATHS:-}" ]; then
  echo "dockyard-backup: none of $BACKUP_PATHS exists yet"
fi
if [ -n "${SWARM_DIR:-}" ] && [ -d "$SWARM_DIR" ]; then
  # the swarm's Raft state as Docker documents its backup: copied while the engine is stopped,
  # so that it is consistent; this node's tasks stop meanwhile (on small and medium it is not
  # the first manager, and the others keep the quorum)
  started=$(date +%s)
  systemctl stop docker.socket docker.service
  copied=0
  retry snapshot dockyard-swarm "$SWARM_DIR" || copied=$?
  systemctl start docker.service
  [ "$copied" -eq 0 ] || exit "$copied"
  forget dockyard-swarm
  echo "dockyard-backup: backed up the swarm's state ($SWARM_DIR) in $(( $(date +%s) - started )) s, the engine stopped meanwhile"
fi
RUN

put_file "$UNITS/dockyard-backup.service" 644 <<'EOF'
[Unit]
Description=dockyard: back up this host's data with restic
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
EnvironmentFile=/etc/dockyard/backup.env
ExecStart=/usr/local/sbin/dockyard-backup
Nice=10
IOSchedulingClass=idle
EOF

put_file "$UNITS/dockyard-backup.timer" 644 <<EOF
[Unit]
Description=dockyard: back up this host's data on a schedule

[Timer]
OnCalendar=$BACKUP_SCHEDULE
RandomizedDelaySec=10min
Persistent=true

[Install]
WantedBy=timers.target
EOF

[ "$SKIP_SYSTEMD" != yes ] || exit 0
if [ "$units_changed" = yes ]; then
  systemctl daemon-reload
fi
systemctl is-enabled --quiet dockyard-backup.timer 2>/dev/null || systemctl enable dockyard-backup.timer >/dev/null 2>&1
systemctl is-active --quiet dockyard-backup.timer || systemctl start dockyard-backup.timer
