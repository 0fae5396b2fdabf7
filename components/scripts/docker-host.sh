#!/usr/bin/env bash
# docker-host.sh: prepare a dockyard host: its data volume, the Docker engine and its config.
#
# Installs:
#   dockyard-metadata-block.service: containers cannot reach the cloud's metadata service
#       (169.254.169.254; on DigitalOcean it serves the droplet's user data, which holds its
#       SSH host key): a REJECT, for every protocol, at the top of Docker's DOCKER-USER
#       chain, which filters what Docker forwards (bridge networks, the swarm's
#       docker_gwbridge) but not the host's own traffic, so cloud-init still reads it at
#       boot (and a container on the host's network still reaches it). Docker keeps
#       what that chain holds, but it is gone after a reboot: the unit makes it and puts
#       the rule back before each start of docker (so before Docker restarts its
#       containers), and only when it is missing.
#
# Inputs (environment, all optional):
#   HOST_NAME         name the host should carry (empty: keep the current hostname)
#   DATA_DEVICE       block device of the host's data volume (empty: the host has none)
#   DATA_MOUNT        where that volume is mounted (formatted ext4 only when it is blank)
#   DOCKER_VERSION    version prefix of the docker.io package to install, e.g. 27.5
#                     (empty: the distribution's current one); an installed engine is kept
#   REGISTRY_MIRRORS  space-separated registry mirror URLs for daemon.json
#   DATA_OWNERS       systemd units that keep their data on DATA_MOUNT (e.g. docker,
#                     nfs-server): each gets RequiresMountsFor=DATA_MOUNT, so it does not
#                     start, and write to the root disk, while the volume is missing
#   LIVE_RESTORE      true: the containers keep running while dockerd restarts (an upgrade);
#                     only on a host that is no swarm node, as Docker refuses it in swarm mode
#                     (default false)
# For tests only:
#   SYSROOT              a directory that stands for / in the paths this script itself writes
#                        (/etc/fstab and its lock, /etc/docker, /etc/systemd/system,
#                        /var/lib/dockyard); empty on a host
#   DATA_DEVICE_IS_FILE  yes: DATA_DEVICE may be a regular file (a disk image) instead of a
#                        block device
#
# The data volume is formatted only when it is blank: no signature that blkid -p or wipefs
# finds, and nothing but zeros in its first MiB. A volume with anything else on it is never
# formatted; the run stops and says what it found.
# Runs on Ubuntu 24.04 and Debian 12. Safe to run again: every step checks first. Safe to run
# at once with nfs-mount.sh: /etc/fstab is changed only under /run/lock/dockyard-fstab.lock.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell docker-host.sh | bash -s}"

default_env HOST_NAME DATA_DEVICE DATA_MOUNT DOCKER_VERSION REGISTRY_MIRRORS DATA_OWNERS SYSROOT DATA_DEVICE_IS_FILE \
  LIVE_RESTORE=false
case "$LIVE_RESTORE" in true | false) ;; *) fatal "LIVE_RESTORE must be true or false, not '$LIVE_RESTORE'" ;; esac
FSTAB=$SYSROOT/etc/fstab
FSTAB_LOCK=$SYSROOT/run/lock/dockyard-fstab.lock
DAEMON_JSON=$SYSROOT/etc/docker/daemon.json

[ "$(id -u)" = 0 ] || fatal "must run as root"

if command -v cloud-init >/dev/null 2>&1; then
  log "waiting for cloud-init to finish"
  # exit status 2 means finished with recoverable errors; the host is still usable
  cloud-init status --wait >/dev/null 2>&1 || [ $? -eq 2 ] || fatal "cloud-init failed; see /var/log/cloud-init-output.log"
fi

if [ -n "$HOST_NAME" ] && [ "$(hostname)" != "$HOST_NAME" ]; then
  log "setting hostname $HOST_NAME"
  hostnamectl set-hostname "$HOST_NAME" 2>/dev/null || { echo "$HOST_NAME" > "$SYSROOT/etc/hostname"; hostname "$HOST_NAME"; }
fi

# device_present <device>: the data volume is attached (a disk image file in tests)
device_present() {
  [ -b "$1" ] || { [ "$DATA_DEVICE_IS_FILE" = yes ] && [ -f "$1" ]; }
}

# device_contents <device>: what is on the device, one finding per line; empty when it is
# blank. A probe that fails counts as a finding: only a device known to be blank is formatted.
device_contents() {
  rc=0; found=$(blkid -p "$1" 2>&1) || rc=$?
  case "$rc" in
    0) printf 'blkid -p: %s\n' "$found" ;;
    2) ;;  # no signature
    *) printf 'blkid -p failed (exit %s): %s\n' "$rc" "$found" ;;
  esac
  if found=$(wipefs -n "$1" 2>&1); then
    [ -z "$found" ] || printf 'wipefs -n: %s\n' "$found"
  else
    printf 'wipefs -n failed: %s\n' "$found"
  fi
  cmp -s -n 1048576 "$1" /dev/zero || echo "its first MiB is not all zeros"
}

# add_to_fstab <prefix> <line>: append a line to /etc/fstab unless one starts with prefix;
# run under the lock nfs-mount.sh takes too
add_to_fstab() {
  grep -q "^$1" "$FSTAB" && return 0
  new=$(cat "$FSTAB" && printf '%s\n' "$2") || fatal "cannot read /etc/fstab"
  put_file "$FSTAB" 0644 "adding $DATA_MOUNT to /etc/fstab" <<<"$new"
}

if [ -n "$DATA_DEVICE" ]; then
  [ -n "$DATA_MOUNT" ] || fatal "DATA_DEVICE is set but DATA_MOUNT is not"
  for _ in $(seq 1 60); do device_present "$DATA_DEVICE" && break; sleep 2; done
  device_present "$DATA_DEVICE" || fatal "data volume $DATA_DEVICE did not appear"
  uuid=$(blkid -o value -s UUID "$DATA_DEVICE" 2>/dev/null || true)
  if [ -z "$uuid" ]; then
    contents=$(device_contents "$DATA_DEVICE")
    if [ -n "$contents" ]; then
      fatal "data volume $DATA_DEVICE has no filesystem dockyard can mount but is not blank; not formatting it:
$contents
Find out what is on it (blkid -p $DATA_DEVICE; wipefs -n $DATA_DEVICE). Only if it holds nothing you need, erase it (wipefs -a $DATA_DEVICE; dd if=/dev/zero of=$DATA_DEVICE bs=1M count=1) and run again."
    fi
    log "formatting blank data volume $DATA_DEVICE"
    mkfs.ext4 -q -L dockyard-data "$DATA_DEVICE"
    uuid=$(blkid -o value -s UUID "$DATA_DEVICE" || true)
    [ -n "$uuid" ] || fatal "cannot read the filesystem UUID of $DATA_DEVICE after formatting it"
  fi
  type=$(blkid -o value -s TYPE "$DATA_DEVICE" 2>/dev/null || true)
  [ "$type" = ext4 ] || fatal "data volume $DATA_DEVICE holds ${type:-something with a UUID but no filesystem type}, not the ext4 dockyard mounts; not touching it. Check what it is (blkid -p $DATA_DEVICE)."
  mkdir -p "$DATA_MOUNT"
  locked "$FSTAB_LOCK" add_to_fstab "UUID=$uuid " "UUID=$uuid $DATA_MOUNT ext4 defaults,nofail,discard 0 2"
  if ! mountpoint -q "$DATA_MOUNT"; then
    log "mounting $DATA_DEVICE on $DATA_MOUNT"
    mount "$DATA_MOUNT"
  fi
fi

if command -v dockerd >/dev/null 2>&1; then
  installed=$(dpkg-query -W -f='${Version}' docker.io 2>/dev/null || dockerd --version)
  case "$installed" in
    "$DOCKER_VERSION"*) log "docker engine $installed already installed" ;;
    *) log "warning: docker engine $installed is installed, not $DOCKER_VERSION; leaving it as it is" ;;
  esac
else
  apt_update
  package=docker.io
  if [ -n "$DOCKER_VERSION" ]; then
    version=$(apt-cache madison docker.io | awk -v want="$DOCKER_VERSION" '{ v = $3; if (index(v, want) == 1) { print v; exit } }')
    [ -n "$version" ] || fatal "no docker.io version starting with $DOCKER_VERSION in the apt sources (available: $(apt-cache madison docker.io | awk '{print $3}' | tr '\n' ' '))"
    package="docker.io=$version"
  fi
  apt_install "$package"
fi

# The volume mounts with nofail, so that a host whose volume is missing still boots and can
# be reached; what keeps data there waits for the mount instead.
for unit in $DATA_OWNERS; do
  [ -n "$DATA_MOUNT" ] || fatal "DATA_OWNERS is set but DATA_MOUNT is not"
  put_file "$SYSROOT/etc/systemd/system/$unit.service.d/dockyard-data.conf" 0644 \
    "writing $unit's requirement of $DATA_MOUNT" <<EOF
[Unit]
RequiresMountsFor=$DATA_MOUNT
EOF
done
# Only what Docker forwards is refused: the host itself (cloud-init, at every boot) still
# needs the metadata.
put_firewall_unit dockyard-metadata-block "dockyard: containers cannot reach the metadata service (169.254.169.254)" \
  "DOCKER-USER -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable"
metadata_block_changed=$file_changed
[ "$units_changed" = no ] || systemctl daemon-reload

# image archives to preload are copied here
mkdir -p "$SYSROOT/var/lib/dockyard/images"

mirrors=""
for mirror in $REGISTRY_MIRRORS; do
  mirrors="${mirrors:+$mirrors, }\"$mirror\""
done
# no-new-privileges: no process in a container gains privileges through setuid binaries
desired="{
  \"no-new-privileges\": true,
  \"live-restore\": $LIVE_RESTORE,
  \"log-driver\": \"json-file\",
  \"log-opts\": {\"max-size\": \"10m\", \"max-file\": \"3\"},
  \"registry-mirrors\": [$mirrors]
}"
put_file "$DAEMON_JSON" 0644 "writing /etc/docker/daemon.json" <<<"$desired"
restart=$file_changed

systemctl is-enabled --quiet docker 2>/dev/null || systemctl enable docker >/dev/null 2>&1 || true
if [ "$restart" = yes ] && systemctl is-active --quiet docker; then
  log "restarting docker for the new daemon.json"
  systemctl restart docker
else
  systemctl start docker
fi
for _ in $(seq 1 90); do docker info >/dev/null 2>&1 && break; sleep 2; done
docker info >/dev/null 2>&1 || fatal "dockerd does not answer; see journalctl -u docker"
firewall_unit_up dockyard-metadata-block "$metadata_block_changed"
# Host images that bring container images (dockyard's local VMs) load them at boot; wait
# for that, so that nothing after this pulls an image that is about to be there.
if systemctl cat dockyard-preload.service >/dev/null 2>&1; then
  systemctl start dockyard-preload.service || fatal "loading the host image's containers failed; see journalctl -u dockyard-preload"
fi
log "docker engine $(docker version --format '{{.Server.Version}}') is running"
