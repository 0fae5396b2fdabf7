#!/usr/bin/env bash
# nfs-mount.sh: mount one dockyard NFS export on this host so that it survives reboot.
#
# Inputs (environment):
#   SOURCE       "<address>:<path>" of the export, or an absolute local path when this host
#                is the NFS server itself (then it is bind-mounted: no NFS loopback mount)
#   MOUNT_POINT  where to mount it
#   MODE         ro or rw
#   SYSROOT      optional, for tests: a directory that stands for / in the paths this script
#                itself writes (/etc/fstab and its lock); empty on a host
#
# Safe to run again: /etc/fstab is changed, and the export remounted, only when different.
# Safe to run at once with other runs on the same host (one per mount, rw and ro; and
# host-base.sh): every change of /etc/fstab holds /run/lock/dockyard-fstab.lock while it
# reads, edits and renames the file.
set -eu

log() { echo "nfs-mount: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

SOURCE=${SOURCE:-}
MOUNT_POINT=${MOUNT_POINT:-}
MODE=${MODE:-ro}
SYSROOT=${SYSROOT:-}
FSTAB=$SYSROOT/etc/fstab
FSTAB_LOCK=$SYSROOT/run/lock/dockyard-fstab.lock
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

# record_in_fstab: make $line the only fstab entry of $MOUNT_POINT; sets changed=yes when it
# had to. Holds the lock from the read to the rename; the new file is a temp file in /etc
# (same filesystem, so the rename is atomic) with a name no other run uses.
changed=no
record_in_fstab() {
  mkdir -p "$(dirname "$FSTAB_LOCK")"
  exec 9>>"$FSTAB_LOCK"
  flock -w 300 9 || fatal "another run held $FSTAB_LOCK for 5 minutes; is an fstab edit stuck?"
  if ! grep -qxF "$line" "$FSTAB"; then
    log "recording $MOUNT_POINT ($MODE) in /etc/fstab"
    tmp=$(mktemp "$FSTAB.dockyard.XXXXXX")
    if ! { awk -v mp="$MOUNT_POINT" '$2 != mp' "$FSTAB" > "$tmp" && printf '%s\n' "$line" >> "$tmp" &&
           chmod 0644 "$tmp" && mv "$tmp" "$FSTAB"; }; then
      rm -f "$tmp"
      fatal "cannot rewrite /etc/fstab"
    fi
    changed=yes
  fi
  exec 9>&-
}

mkdir -p "$MOUNT_POINT"
record_in_fstab
if [ "$changed" = yes ] && mountpoint -q "$MOUNT_POINT"; then umount -l "$MOUNT_POINT"; fi
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
