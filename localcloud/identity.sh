#!/bin/sh
# identity.sh: give a VM restored from the warm template its own identity. Run inside the
# VM by the guest agent, right after the restore, before anything else talks to the VM.
# Every VM restored from one template resumes with the template's memory: the same random
# generator state, machine-id, SSH host keys, name, MAC and address, so each is replaced.
#
# Inputs (assignments in front of this text on stdin):
#   NAME         host name
#   ADDRESS      IP/prefix of eth0; GATEWAY its gateway (may be empty)
#   MAC          eth0's MAC address on the bridge
#   KEY          base64 of root's authorized_keys line
#   SEED         random hex from the machine running qemu, mixed into the kernel's generator
#   DATA_DEVICE  a hot-plugged data disk to wait for (may be empty)
#
# Prints the new ed25519 host public key. Safe to run twice: each run makes a new identity.
set -eu

fatal() { echo "identity: error: $*" >&2; exit 1; }

[ -n "${NAME:-}" ] || fatal "NAME must be set"
[ -n "${ADDRESS:-}" ] || fatal "ADDRESS must be set"
[ -n "${MAC:-}" ] || fatal "MAC must be set"
[ -n "${KEY:-}" ] || fatal "KEY must be set"
[ -n "${SEED:-}" ] || fatal "SEED must be set"

# The generator first: nothing below may draw from the state every clone shares. The seed
# goes into the input pool and RNDRESEEDCRNG (_IO('R', 7)) makes the generator use it now.
printf '%s' "$SEED" > /dev/urandom
perl -e 'open(my $f, "<", "/dev/urandom") or die "$!\n"; ioctl($f, 0x5207, 0) or die "RNDRESEEDCRNG: $!\n"' ||
  fatal "could not reseed the kernel's random generator"

systemd-id128 new > /etc/machine-id.new
mv /etc/machine-id.new /etc/machine-id

echo "$NAME" > /etc/hostname
hostname "$NAME"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$NAME" > /etc/hosts

rm -f /etc/ssh/ssh_host_*
ssh-keygen -A >/dev/null

mkdir -p /root/.ssh
chmod 700 /root/.ssh
echo "$KEY" | base64 -d > /root/.ssh/authorized_keys.new
chmod 600 /root/.ssh/authorized_keys.new
mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys

mkdir -p /etc/systemd/network
{
  # the MAC too: the network card's own address is the template's
  printf '[Match]\nName=eth0\n\n[Link]\nMACAddress=%s\n\n[Network]\nAddress=%s\n' "$MAC" "$ADDRESS"
  [ -z "${GATEWAY:-}" ] || printf 'Gateway=%s\n' "$GATEWAY"
} > /etc/systemd/network/10-eth0.network
ip link set eth0 down
ip link set eth0 address "$MAC"
ip link set eth0 up
networkctl reload
networkctl reconfigure eth0

# the journal is kept per machine-id; sshd reads its host keys when it starts
systemctl restart systemd-journald ssh

if [ -n "${DATA_DEVICE:-}" ]; then
  tries=0
  until [ -b "$DATA_DEVICE" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 60 ] || fatal "$DATA_DEVICE did not appear"
    sleep 0.5
  done
fi

cat /etc/ssh/ssh_host_ed25519_key.pub
