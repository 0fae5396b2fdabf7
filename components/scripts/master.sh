#!/usr/bin/env bash
# master.sh: make this host dockyard's master: the bastion every other host is reached
# through, with an inventory of the hosts it manages.
#
# Inputs (environment):
#   INVENTORY  one host per line: "<name> <private address> <roles>"
#
# Safe to run again: files are rewritten and sshd reloaded only when they change. A file is
# replaced whole (a temp file beside it, renamed), so no reader ever sees half of it.
set -eu

log() { echo "master: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

# write_file <path> <content>: replace the file whole: a temp file beside it, renamed over it
write_file() {
  tmp=$(mktemp "$1.XXXXXX")
  if ! { printf '%s\n' "$2" > "$tmp" && chmod 0644 "$tmp" && mv "$tmp" "$1"; }; then
    rm -f "$tmp"
    fatal "cannot write $1"
  fi
}

INVENTORY=${INVENTORY:-}
[ -n "$INVENTORY" ] || fatal "INVENTORY is empty"

mkdir -p /etc/dockyard
desired="# dockyard hosts managed from this master: name, private address, roles
$INVENTORY"
if [ "$(cat /etc/dockyard/inventory 2>/dev/null || true)" != "$desired" ]; then
  log "writing /etc/dockyard/inventory"
  write_file /etc/dockyard/inventory "$desired"
fi

# The bootstrap and the operators jump through this host to the private ones.
conf=/etc/ssh/sshd_config.d/50-dockyard-bastion.conf
bastion="# managed by dockyard: this host is the bastion of its stack
AllowTcpForwarding yes
PasswordAuthentication no"
if [ -d /etc/ssh/sshd_config.d ] && [ "$(cat "$conf" 2>/dev/null || true)" != "$bastion" ]; then
  log "configuring sshd as a bastion"
  write_file "$conf" "$bastion"
  sshd -t || { rm -f "$conf"; fatal "sshd rejected $conf"; }
  systemctl reload ssh 2>/dev/null || systemctl reload sshd
  # The reload returns once sshd has its signal, while sshd re-executes with its port
  # closed for a moment; what connects next (the docker provider, which does not retry)
  # must find it listening again.
  for _ in $(seq 1 30); do
    (exec 3<>/dev/tcp/127.0.0.1/22) 2>/dev/null && break
    sleep 1
  done
  (exec 3<>/dev/tcp/127.0.0.1/22) 2>/dev/null || log "warning: sshd does not listen on port 22 30 s after its reload"
fi
log "managing $(printf '%s\n' "$INVENTORY" | grep -c .) hosts"
