#!/usr/bin/env bash
# nfs-replica.sh: keep a read-only copy of another NFS server's export (medium tier: the
# read server of the NFS pair copies the write server every minute).
#
# Inputs (environment):
#   SOURCE  the export to copy, "<address>:<path>"
#   TARGET  the local directory that receives the copy (this host exports it read-only)
#
# Safe to run again: the mount, the unit files and the timer are changed only when different.
set -eu

log() { echo "nfs-replica: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

SOURCE=${SOURCE:-}
TARGET=${TARGET:-}
if [ -z "$SOURCE" ] || [ -z "$TARGET" ]; then fatal "SOURCE and TARGET must be set"; fi
[ "$(id -u)" = 0 ] || fatal "must run as root"
export DEBIAN_FRONTEND=noninteractive

missing=""
command -v rsync >/dev/null 2>&1 || missing="$missing rsync"
command -v mount.nfs4 >/dev/null 2>&1 || missing="$missing nfs-common"
if [ -n "$missing" ]; then
  log "installing$missing"
  apt-get -q -y -o DPkg::Lock::Timeout=600 update >/dev/null
  # shellcheck disable=SC2086 # the list is meant to split into package names
  apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends $missing >/dev/null
fi

source_dir=/var/lib/dockyard/replica-source
mkdir -p "$source_dir" "$TARGET"
line="$SOURCE $source_dir nfs4 ro,nfsvers=4.2,_netdev,nofail,hard 0 0"
if ! grep -qxF "$line" /etc/fstab; then
  log "mounting $SOURCE read-only on $source_dir"
  awk -v mp="$source_dir" '$2 != mp' /etc/fstab > /etc/fstab.new
  echo "$line" >> /etc/fstab.new
  mv /etc/fstab.new /etc/fstab
  if mountpoint -q "$source_dir"; then umount -l "$source_dir"; fi
fi
mountpoint -q "$source_dir" || mount "$source_dir" || fatal "cannot mount $SOURCE"

service="[Unit]
Description=dockyard: copy $SOURCE to $TARGET
RequiresMountsFor=$source_dir $TARGET

[Service]
Type=oneshot
ExecStart=/usr/bin/rsync -a --delete $source_dir/ $TARGET/"
timer="[Unit]
Description=dockyard: copy $SOURCE to $TARGET every minute

[Timer]
OnBootSec=30s
OnUnitActiveSec=60s

[Install]
WantedBy=timers.target"

changed=no
write_unit() { # <file> <content>
  if [ "$(cat "$1" 2>/dev/null || true)" != "$2" ]; then
    printf '%s\n' "$2" > "$1"
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
log "$TARGET is a copy of $SOURCE, refreshed every minute"
