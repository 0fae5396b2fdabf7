#!/usr/bin/env bash
# master.sh: make this host dockyard's master: the bastion every other host is reached
# through, with an inventory of the hosts it manages.
#
# Inputs (environment):
#   INVENTORY  one host per line: "<name> <private address> <roles>"
#
# Safe to run again: files are rewritten and sshd reloaded only when they change.
set -eu

log() { echo "master: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

INVENTORY=${INVENTORY:-}
[ -n "$INVENTORY" ] || fatal "INVENTORY is empty"

mkdir -p /etc/dockyard
desired="# dockyard hosts managed from this master: name, private address, roles
$INVENTORY"
if [ "$(cat /etc/dockyard/inventory 2>/dev/null || true)" != "$desired" ]; then
  log "writing /etc/dockyard/inventory"
  printf '%s\n' "$desired" > /etc/dockyard/inventory
fi

# The bootstrap and the operators jump through this host to the private ones.
conf=/etc/ssh/sshd_config.d/50-dockyard-bastion.conf
bastion="# managed by dockyard: this host is the bastion of its stack
AllowTcpForwarding yes
PasswordAuthentication no"
if [ -d /etc/ssh/sshd_config.d ] && [ "$(cat "$conf" 2>/dev/null || true)" != "$bastion" ]; then
  log "configuring sshd as a bastion"
  printf '%s\n' "$bastion" > "$conf"
  sshd -t || { rm -f "$conf"; fatal "sshd rejected $conf"; }
  systemctl reload ssh 2>/dev/null || systemctl reload sshd
fi
log "managing $(printf '%s\n' "$INVENTORY" | grep -c .) hosts"
