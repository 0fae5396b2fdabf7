#!/usr/bin/env bash
# nfs-server.sh: serve dockyard's NFS exports (NFSv4 only, port 2049/tcp).
#
# Inputs (environment):
#   EXPORTS  one export per line in exports(5) form: "<path> <client>(<options>) ...";
#            every path is created if missing. These lines are all of dockyard's exports
#            on this host: the file /etc/exports.d/dockyard.exports is replaced by them.
#
# Safe to run again: the file is rewritten and re-exported only when it changes.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell nfs-server.sh | bash -s}"

require_env EXPORTS
[ "$(id -u)" = 0 ] || fatal "must run as root"

command -v exportfs >/dev/null 2>&1 || apt_install nfs-kernel-server

printf '%s\n' "$EXPORTS" | while read -r path _; do
  [ -n "$path" ] || continue
  case "$path" in /*) ;; *) fatal "export path $path is not absolute" ;; esac
  if [ ! -d "$path" ]; then
    log "creating $path"
    mkdir -p "$path"
  fi
done

file=/etc/exports.d/dockyard.exports
# exportfs reads only *.exports: put_file's temp file beside it is not one
put_file "$file" 0644 <<EOF
# managed by dockyard; edits are overwritten
$EXPORTS
EOF

systemctl enable nfs-server >/dev/null 2>&1 || true
systemctl is-active --quiet nfs-server || systemctl start nfs-server
exportfs -ra || fatal "exportfs rejected $file"
log "exporting: $(exportfs -s | awk '{print $1}' | sort -u | tr '\n' ' ')"
