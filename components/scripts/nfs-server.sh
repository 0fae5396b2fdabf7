#!/usr/bin/env bash
# nfs-server.sh: serve dockyard's NFS exports (NFSv4 only, port 2049/tcp).
#
# Inputs (environment):
#   EXPORTS  one export per line in exports(5) form: "<path> <client>(<options>) ...";
#            every path is created if missing. These lines are all of dockyard's exports
#            on this host: the file /etc/exports.d/dockyard.exports is replaced by them.
#
# Safe to run again: the file is rewritten and re-exported only when it changes.
set -eu

log() { echo "nfs-server: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

EXPORTS=${EXPORTS:-}
[ -n "$EXPORTS" ] || fatal "EXPORTS is empty"
[ "$(id -u)" = 0 ] || fatal "must run as root"
export DEBIAN_FRONTEND=noninteractive

if ! command -v exportfs >/dev/null 2>&1; then
  log "installing nfs-kernel-server"
  apt-get -q -y -o DPkg::Lock::Timeout=600 update >/dev/null
  apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends nfs-kernel-server >/dev/null
fi

printf '%s\n' "$EXPORTS" | while read -r path _; do
  [ -n "$path" ] || continue
  case "$path" in /*) ;; *) fatal "export path $path is not absolute" ;; esac
  if [ ! -d "$path" ]; then
    log "creating $path"
    mkdir -p "$path"
  fi
done

mkdir -p /etc/exports.d
file=/etc/exports.d/dockyard.exports
desired="# managed by dockyard; edits are overwritten
$EXPORTS"
if [ "$(cat "$file" 2>/dev/null || true)" != "$desired" ]; then
  log "writing $file"
  tmp=$(mktemp "$file.XXXXXX")  # beside it, so that the rename is atomic; exportfs reads only *.exports
  if ! { printf '%s\n' "$desired" > "$tmp" && chmod 0644 "$tmp" && mv "$tmp" "$file"; }; then
    rm -f "$tmp"
    fatal "cannot write $file"
  fi
fi

systemctl enable nfs-server >/dev/null 2>&1 || true
systemctl is-active --quiet nfs-server || systemctl start nfs-server
exportfs -ra || fatal "exportfs rejected $file"
log "exporting: $(exportfs -s | awk '{print $1}' | sort -u | tr '\n' ' ')"
