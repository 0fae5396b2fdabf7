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
# docker-host.sh): every change of /etc/fstab holds /run/lock/dockyard-fstab.lock while it
# reads, edits and renames the file.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell nfs-mount.sh | bash -s}"

require_env SOURCE MOUNT_POINT
default_env MODE=ro SYSROOT
FSTAB=$SYSROOT/etc/fstab
FSTAB_LOCK=$SYSROOT/run/lock/dockyard-fstab.lock
case "$MODE" in ro|rw) ;; *) fatal "MODE must be ro or rw, got $MODE" ;; esac
[ "$(id -u)" = 0 ] || fatal "must run as root"

case "$SOURCE" in
  /*)
    [ -d "$SOURCE" ] || fatal "$SOURCE does not exist on this host"
    line="$SOURCE $MOUNT_POINT none bind,$MODE,nofail 0 0" ;;
  *:/*)
    command -v mount.nfs4 >/dev/null 2>&1 || apt_install nfs-common
    line="$SOURCE $MOUNT_POINT nfs4 $MODE,nfsvers=4.2,_netdev,nofail,hard 0 0" ;;
  *) fatal "SOURCE must be <address>:<path> or an absolute path, got $SOURCE" ;;
esac

# record_in_fstab: make $line the only fstab entry of $MOUNT_POINT; run under the lock every
# run on this host takes, from the read to the rename. Sets changed=yes when it had to.
changed=no
record_in_fstab() {
  grep -qxF "$line" "$FSTAB" && return 0
  new=$(awk -v mp="$MOUNT_POINT" '$2 != mp' "$FSTAB" && printf '%s\n' "$line") || fatal "cannot read /etc/fstab"
  put_file "$FSTAB" 0644 "recording $MOUNT_POINT ($MODE) in /etc/fstab" <<<"$new"
  changed=$file_changed
}

mkdir -p "$MOUNT_POINT"
locked "$FSTAB_LOCK" record_in_fstab
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
