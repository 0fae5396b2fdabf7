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
#   BACKUP_PATHS       space-separated absolute directories to back up (and to restore)
#   RESTIC_REPOSITORY  the restic repository (s3:..., rest:..., sftp:..., or a local path)
#   RESTIC_PASSWORD    (secret) the repository's password
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  (secret) keys of an s3: repository; optional
#   BACKUP_SCHEDULE    systemd OnCalendar= of the backup
#   BACKUP_KEEP        restic forget options, e.g. "--keep-daily 7 --keep-weekly 4"
#   RESTORE            "latest": restore BACKUP_PATHS from this host's newest snapshot, once,
#                      and only into empty directories; empty: no restore
#   REMOVE             1: stop the timer and remove what this script installs (backups turned
#                      off: the command's delete); the repository and the data are left alone
# For tests only:
#   SYSROOT            a directory that stands for / in the paths this script writes (its
#                      settings, units, marker and cache; BACKUP_PATHS are taken as they are)
#   SKIP_SYSTEMD       yes: write the units but do not ask systemd to load or start them
#
# The repository is created when it does not exist (by whichever host gets there first).
# Safe to run again: files are written only when they change; a restore happens once per
# host (/var/lib/dockyard/backup-restored records which snapshot) and never over data.
set -eu

log() { echo "backup: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

BACKUP_HOST=${BACKUP_HOST:-}
BACKUP_PATHS=${BACKUP_PATHS:-}
BACKUP_SCHEDULE=${BACKUP_SCHEDULE:-}
BACKUP_KEEP=${BACKUP_KEEP:-}
RESTORE=${RESTORE:-}
SYSROOT=${SYSROOT:-}
SKIP_SYSTEMD=${SKIP_SYSTEMD:-}
AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-}
AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-}
REMOVE=${REMOVE:-0}
set -f  # the lists below are split on spaces, never globbed
UNITS=$SYSROOT/etc/systemd/system

if [ "$REMOVE" = 1 ]; then
  if [ "$SKIP_SYSTEMD" != yes ] && systemctl is-enabled --quiet dockyard-backup.timer 2>/dev/null; then
    log "stopping dockyard-backup.timer"
    systemctl disable --now dockyard-backup.timer >/dev/null 2>&1
  fi
  rm -f "$UNITS/dockyard-backup.timer" "$UNITS/dockyard-backup.service" "$SYSROOT/usr/local/sbin/dockyard-backup" \
    "$SYSROOT/etc/dockyard/backup.env" "$SYSROOT/etc/dockyard/backup.password"
  [ "$SKIP_SYSTEMD" = yes ] || systemctl daemon-reload
  log "backups of this host are off"
  exit 0
fi

[ -n "$BACKUP_HOST" ] || fatal "BACKUP_HOST must be set"
[ -n "$BACKUP_PATHS" ] || fatal "BACKUP_PATHS must be set"
[ -n "$BACKUP_SCHEDULE" ] || fatal "BACKUP_SCHEDULE must be set"
[ -n "${RESTIC_REPOSITORY:-}" ] || fatal "RESTIC_REPOSITORY must be set"
[ -n "${RESTIC_PASSWORD:-}" ] || fatal "RESTIC_PASSWORD must be set"
case "$BACKUP_HOST" in *[!A-Za-z0-9_.-]*) fatal "BACKUP_HOST must be a host name, got '$BACKUP_HOST'" ;; esac
for path in $BACKUP_PATHS; do
  case "$path" in /*) ;; *) fatal "BACKUP_PATHS must be absolute directories, got '$path'" ;; esac
  case "$path" in *[!A-Za-z0-9/._-]* | */../* | */..) fatal "BACKUP_PATHS: '$path' is not a plain path" ;; esac
done
case "$BACKUP_KEEP" in *[!a-z0-9\ -]*) fatal "BACKUP_KEEP must be restic forget options such as --keep-daily 7" ;; esac
case "$RESTORE" in "" | latest) ;; *) fatal "RESTORE must be latest or empty, got '$RESTORE'" ;; esac
[ -n "$SYSROOT" ] || [ "$(id -u)" = 0 ] || fatal "must run as root"
export RESTIC_REPOSITORY RESTIC_PASSWORD AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
# restic's cache belongs with the host's state, not in a home directory
export RESTIC_CACHE_DIR=$SYSROOT/var/cache/dockyard-restic

if ! command -v restic >/dev/null 2>&1; then
  log "installing restic"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -q -y -o DPkg::Lock::Timeout=600 update >/dev/null
  apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends restic >/dev/null
fi

units_changed=no

# install_file <path> <mode>: stdin becomes the file at path, through a temp file beside it
# (made with the final mode, so a secret is never readable by others), only when it differs
install_file() {
  mkdir -p "$(dirname "$1")"
  tmp=$(umask 077 && mktemp "$1.XXXXXX")
  cat > "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then
    rm -f "$tmp"
    return 0
  fi
  chmod "$2" "$tmp"
  mv "$tmp" "$1"
  log "writing $1"
  case "$1" in "$UNITS"/*) units_changed=yes ;; esac
}

# the repository: made by the first host to find it missing; a host that lost that race
# finds it there afterwards
if ! restic cat config >/dev/null 2>&1; then
  log "creating the repository"
  restic init >/dev/null 2>&1 || restic cat config >/dev/null 2>&1 ||
    fatal "cannot open or create the restic repository; check dockyard:backupRepository and its keys"
fi

# restore: on a host whose directories are empty, from its newest snapshot, once
MARKER=$SYSROOT/var/lib/dockyard/backup-restored
if [ "$RESTORE" = latest ] && [ ! -f "$MARKER" ]; then
  snapshot=$(restic snapshots --host "$BACKUP_HOST" --tag dockyard --latest 1 --json |
    grep -o '"short_id":"[0-9a-f]*"' | tail -n 1 | cut -d'"' -f4)
  [ -n "$snapshot" ] || fatal "no snapshot of host $BACKUP_HOST in the repository to restore; unset dockyard:restoreFrom to start it empty"
  for path in $BACKUP_PATHS; do
    if [ -d "$path" ] && [ -n "$(find "$path" -mindepth 1 -maxdepth 1 ! -name lost+found | head -n 1)" ]; then
      fatal "$path already holds data: a restore never writes over it; unset dockyard:restoreFrom, or empty $path"
    fi
  done
  log "restoring $BACKUP_PATHS from snapshot $snapshot"
  started=$(date +%s)
  # a snapshot holds this host's paths by their absolute names
  restic restore "$snapshot" --target / >/dev/null
  mkdir -p "$(dirname "$MARKER")"
  echo "$snapshot" > "$MARKER"
  log "restored snapshot $snapshot in $(( $(date +%s) - started )) s"
fi

printf '%s\n' "$RESTIC_PASSWORD" | install_file "$SYSROOT/etc/dockyard/backup.password" 600
install_file "$SYSROOT/etc/dockyard/backup.env" 600 <<EOF
RESTIC_REPOSITORY=$RESTIC_REPOSITORY
RESTIC_PASSWORD_FILE=/etc/dockyard/backup.password
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
RESTIC_CACHE_DIR=/var/cache/dockyard-restic
BACKUP_HOST=$BACKUP_HOST
BACKUP_PATHS="$BACKUP_PATHS"
BACKUP_KEEP="$BACKUP_KEEP"
EOF

install_file "$SYSROOT/usr/local/sbin/dockyard-backup" 755 <<'RUN'
#!/bin/sh
# dockyard-backup: one backup of this host's data (settings in /etc/dockyard/backup.env), then
# its snapshots beyond the kept ones forgotten. Hosts share the repository: a step that finds
# it locked by another host's prune waits and tries again.
set -eu
set -f
: "${BACKUP_HOST:?}" "${BACKUP_PATHS:?}"
retry() {
  for attempt in 1 2 3 4 5 6; do
    "$@" && return 0
    echo "dockyard-backup: '$1 $2' failed (attempt $attempt), trying again in 30 s" >&2
    sleep 30
  done
  return 1
}
existing=""
for path in $BACKUP_PATHS; do
  [ -d "$path" ] && existing="$existing $path"
done
[ -n "$existing" ] || { echo "dockyard-backup: none of $BACKUP_PATHS exists yet"; exit 0; }
started=$(date +%s)
# shellcheck disable=SC2086
retry restic backup --quiet --host "$BACKUP_HOST" --tag dockyard $existing
if [ -n "${BACKUP_KEEP:-}" ]; then
  # shellcheck disable=SC2086
  retry restic forget --quiet --host "$BACKUP_HOST" --tag dockyard $BACKUP_KEEP --prune
fi
echo "dockyard-backup: backed up$existing in $(( $(date +%s) - started )) s"
RUN

install_file "$UNITS/dockyard-backup.service" 644 <<'EOF'
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

install_file "$UNITS/dockyard-backup.timer" 644 <<EOF
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
