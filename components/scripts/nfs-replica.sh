#!/usr/bin/env bash
# nfs-replica.sh: keep a copy of a mounted export in a local directory (medium tier: the read
# server of the NFS pair copies the write server's export every minute and serves the copy
# read-only). The source is mounted first, by nfs-mount.sh.
#
# Inputs (environment):
#   SOURCE_DIR  where the export to copy is mounted (read-only)
#   TARGET      the local directory that receives the copy
#
# Safe to run again: the unit files and the timer are changed only when different.
set -eu

log() { echo "nfs-replica: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

SOURCE_DIR=${SOURCE_DIR:-}
TARGET=${TARGET:-}
if [ -z "$SOURCE_DIR" ] || [ -z "$TARGET" ]; then fatal "SOURCE_DIR and TARGET must be set"; fi
[ "$(id -u)" = 0 ] || fatal "must run as root"
mountpoint -q "$SOURCE_DIR" || fatal "$SOURCE_DIR is not mounted"

if ! command -v rsync >/dev/null 2>&1; then
  log "installing rsync"
  apt-get -q -y -o DPkg::Lock::Timeout=600 update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends rsync >/dev/null
fi
mkdir -p "$TARGET"

service="[Unit]
Description=dockyard: copy $SOURCE_DIR to $TARGET
RequiresMountsFor=$SOURCE_DIR $TARGET

[Service]
Type=oneshot
ExecStart=/usr/bin/rsync -a --delete $SOURCE_DIR/ $TARGET/"
timer="[Unit]
Description=dockyard: copy $SOURCE_DIR to $TARGET every minute

[Timer]
OnBootSec=30s
OnUnitActiveSec=60s

[Install]
WantedBy=timers.target"

changed=no
write_unit() { # <file> <content>: replaced whole, through a temp file beside it and a rename
  if [ "$(cat "$1" 2>/dev/null || true)" != "$2" ]; then
    tmp=$(mktemp "$1.XXXXXX")
    if ! { printf '%s\n' "$2" > "$tmp" && chmod 0644 "$tmp" && mv "$tmp" "$1"; }; then
      rm -f "$tmp"
      fatal "cannot write $1"
    fi
    changed=yes
  fi
}
write_unit /etc/systemd/system/dockyard-nfs-replica.service "$service"
write_unit /etc/systemd/system/dockyard-nfs-replica.timer "$timer"
if [ "$changed" = yes ]; then
  log "installing the replica timer"
  systemctl daemon-reload
fi
systemctl enable --now dockyard-nfs-replica.timer >/dev/null 2>&1
systemctl start dockyard-nfs-replica.service
log "$TARGET is a copy of $SOURCE_DIR, refreshed every minute"
