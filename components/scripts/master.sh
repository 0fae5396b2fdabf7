#!/usr/bin/env bash
# master.sh: make this host dockyard's master: the bastion every other host is reached
# through, with an inventory of the hosts it manages.
#
# Inputs (environment):
#   INVENTORY  one host per line: "<name> <private address> <roles>"
#
# Safe to run again: files are rewritten and sshd reloaded only when they change. A file is
# replaced whole (a temp file beside it, renamed), so no reader ever sees half of it.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell master.sh | bash -s}"

require_env INVENTORY

put_file /etc/dockyard/inventory 0644 <<EOF
# dockyard hosts managed from this master: name, private address, roles
$INVENTORY
EOF

# The bootstrap and the operators jump through this host to the private ones.
conf=/etc/ssh/sshd_config.d/50-dockyard-bastion.conf
if [ -d /etc/ssh/sshd_config.d ]; then
  put_file "$conf" 0644 "configuring sshd as a bastion" <<'EOF'
# managed by dockyard: this host is the bastion of its stack
AllowTcpForwarding yes
PasswordAuthentication no
EOF
  if [ "$file_changed" = yes ]; then
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
fi
log "managing $(printf '%s\n' "$INVENTORY" | grep -c .) hosts"
