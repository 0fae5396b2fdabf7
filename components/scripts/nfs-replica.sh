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

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell nfs-replica.sh | bash -s}"

require_env SOURCE_DIR TARGET
[ "$(id -u)" = 0 ] || fatal "must run as root"
mountpoint -q "$SOURCE_DIR" || fatal "$SOURCE_DIR is not mounted"

command -v rsync >/dev/null 2>&1 || apt_install rsync
mkdir -p "$TARGET"

put_file /etc/systemd/system/dockyard-nfs-replica.service 0644 <<EOF
[Unit]
Description=dockyard: copy $SOURCE_DIR to $TARGET
RequiresMountsFor=$SOURCE_DIR $TARGET

[Service]
Type=oneshot
ExecStart=/usr/bin/rsync -a --delete $SOURCE_DIR/ $TARGET/
EOF
put_file /etc/systemd/system/dockyard-nfs-replica.timer 0644 <<EOF
[Unit]
Description=dockyard: copy $SOURCE_DIR to $TARGET every minute

[Timer]
OnBootSec=30s
OnUnitActiveSec=60s

[Install]
WantedBy=timers.target
EOF
[ "$units_changed" = no ] || systemctl daemon-reload
systemctl enable --now dockyard-nfs-replica.timer >/dev/null 2>&1
systemctl start dockyard-nfs-replica.service
log "$TARGET is a copy of $SOURCE_DIR, refreshed every minute"
