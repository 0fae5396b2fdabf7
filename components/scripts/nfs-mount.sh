#!/usr/bin/env bash
# nfs-mount.sh: mount one dockyard NFS export on this host so that it survives reboot.
#
# Inputs (environment):
#   SOURCE       "<address>:<path>" of the export, or an absolute local path when this host
#                is the NFS server itself (then it is bind-mounted: no NFS loopback mount)
#   MOUNT_POINT  where to mount it
#   MODE         ro or rw
#
# Safe to run again: /etc/fstab is changed, and the export remounted, only when different.
set -eu

log() { echo "nfs-mount: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

SOURCE=${SOURCE:-}
MOUNT_POINT=${MOUNT_POINT:-}
MODE=${MODE:-ro}
if [ -z "$SOURCE" ] || [ -z "$MOUNT_POINT" ]; then fatal "SOURCE and MOUNT_POINT must be set"; fi
case "$MODE" in ro|rw) ;; *) fatal "MODE must be ro or rw, got $MODE" ;; esac
[ "$(id -u)" = 0 ] || fatal "must run as root"

case "$SOURCE" in
  /*)
    [ -d "$SOURCE" ] || fatal "$SOURCE does not exist on this host"
    line="$SOURCE $MOUNT_POINT none bind,$MODE,nofail 0 0" ;;
  *:/*)
    if ! command -v mount.nfs4 >/dev/null 2>&1; then
      log "installing nfs-common"
      apt-get -q -y -o DPkg::Lock::Timeout=600 update >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends nfs-common >/dev/null
    fi
    line="$SOURCE $MOUNT_POINT nfs4 $MODE,nfsvers=4.2,_netdev,nofail,hard 0 0" ;;
  *) fatal "SOURCE must be <address>:<path> or an absolute path, got $SOURCE" ;;
esac

mkdir -p "$MOUNT_POINT"
if ! grep -qxF "$line" /etc/fstab; then
  log "recording $MOUNT_POINT ($MODE) in /etc/fstab"
  awk -v mp="$MOUNT_POINT" '$2 != mp' /etc/fstab > /etc/fstab.new
  echo "$line" >> /etc/fstab.new
  mv /etc/fstab.new /etc/fstab
  if mountpoint -q "$MOUNT_POINT"; then umount -l "$MOUNT_POINT"; fi
fi
if ! mountpoint -q "$MOUNT_POINT"; then
  for attempt in 1 2 3 4 5 6; do
    mount "$MOUNT_POINT" && break
    [ "$attempt" = 6 ] && fatal "cannot mount $SOURCE on $MOUNT_POINT"
    log "mount failed, retrying in 10 s"
    sleep 10
  done
fi
# a bind mount with "ro" in fstab is only read-only once remounted on older util-linux
if [ "$MODE" = ro ] && ! findmnt -no OPTIONS "$MOUNT_POINT" | grep -qE '(^|,)ro(,|$)'; then
  mount -o remount,bind,ro "$MOUNT_POINT"
fi
log "$SOURCE is mounted on $MOUNT_POINT ($MODE)"
