#!/usr/bin/env bash
# host-base.sh: prepare a dockyard host: its data volume, the Docker engine and its config.
#
# Inputs (environment, all optional):
#   HOST_NAME         name the host should carry (empty: keep the current hostname)
#   DATA_DEVICE       block device of the host's data volume (empty: the host has none)
#   DATA_MOUNT        where that volume is mounted (formatted ext4 only when it is blank)
#   DOCKER_VERSION    version prefix of the docker.io package to install, e.g. 27.5
#                     (empty: the distribution's current one); an installed engine is kept
#   REGISTRY_MIRRORS  space-separated registry mirror URLs for daemon.json
#
# Runs on Ubuntu 24.04 and Debian 12. Safe to run again: every step checks first.
set -eu

log() { echo "host-base: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

HOST_NAME=${HOST_NAME:-}
DATA_DEVICE=${DATA_DEVICE:-}
DATA_MOUNT=${DATA_MOUNT:-}
DOCKER_VERSION=${DOCKER_VERSION:-}
REGISTRY_MIRRORS=${REGISTRY_MIRRORS:-}
export DEBIAN_FRONTEND=noninteractive
APT="apt-get -q -y -o DPkg::Lock::Timeout=600"

[ "$(id -u)" = 0 ] || fatal "must run as root"

if command -v cloud-init >/dev/null 2>&1; then
  log "waiting for cloud-init to finish"
  # exit status 2 means finished with recoverable errors; the host is still usable
  cloud-init status --wait >/dev/null 2>&1 || [ $? -eq 2 ] || fatal "cloud-init failed; see /var/log/cloud-init-output.log"
fi

if [ -n "$HOST_NAME" ] && [ "$(hostname)" != "$HOST_NAME" ]; then
  log "setting hostname $HOST_NAME"
  hostnamectl set-hostname "$HOST_NAME" 2>/dev/null || { echo "$HOST_NAME" > /etc/hostname; hostname "$HOST_NAME"; }
fi

if [ -n "$DATA_DEVICE" ]; then
  [ -n "$DATA_MOUNT" ] || fatal "DATA_DEVICE is set but DATA_MOUNT is not"
  for _ in $(seq 1 60); do [ -b "$DATA_DEVICE" ] && break; sleep 2; done
  [ -b "$DATA_DEVICE" ] || fatal "data volume $DATA_DEVICE did not appear"
  if ! blkid -o value -s TYPE "$DATA_DEVICE" >/dev/null 2>&1; then
    log "formatting blank data volume $DATA_DEVICE"
    mkfs.ext4 -q -L dockyard-data "$DATA_DEVICE"
  fi
  uuid=$(blkid -o value -s UUID "$DATA_DEVICE")
  [ -n "$uuid" ] || fatal "cannot read the filesystem UUID of $DATA_DEVICE"
  mkdir -p "$DATA_MOUNT"
  if ! grep -q "^UUID=$uuid " /etc/fstab; then
    log "adding $DATA_MOUNT to /etc/fstab"
    echo "UUID=$uuid $DATA_MOUNT ext4 defaults,nofail,discard 0 2" >> /etc/fstab
  fi
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
  log "installing docker.io ${DOCKER_VERSION:-(distribution version)}"
  $APT update >/dev/null
  package=docker.io
  if [ -n "$DOCKER_VERSION" ]; then
    version=$(apt-cache madison docker.io | awk -v want="$DOCKER_VERSION" '{ v = $3; if (index(v, want) == 1) { print v; exit } }')
    [ -n "$version" ] || fatal "no docker.io version starting with $DOCKER_VERSION in the apt sources (available: $(apt-cache madison docker.io | awk '{print $3}' | tr '\n' ' '))"
    package="docker.io=$version"
  fi
  $APT install --no-install-recommends "$package" >/dev/null
fi

# image archives to preload are copied here
mkdir -p /var/lib/dockyard/images

mirrors=""
for mirror in $REGISTRY_MIRRORS; do
  mirrors="${mirrors:+$mirrors, }\"$mirror\""
done
desired="{
  \"log-driver\": \"json-file\",
  \"log-opts\": {\"max-size\": \"10m\", \"max-file\": \"3\"},
  \"registry-mirrors\": [$mirrors]
}"
mkdir -p /etc/docker
restart=no
if [ "$(cat /etc/docker/daemon.json 2>/dev/null || true)" != "$desired" ]; then
  log "writing /etc/docker/daemon.json"
  printf '%s\n' "$desired" > /etc/docker/daemon.json.new
  mv /etc/docker/daemon.json.new /etc/docker/daemon.json
  restart=yes
fi

systemctl enable docker >/dev/null 2>&1 || true
if [ "$restart" = yes ] && systemctl is-active --quiet docker; then
  log "restarting docker for the new daemon.json"
  systemctl restart docker
else
  systemctl start docker
fi
for _ in $(seq 1 90); do docker info >/dev/null 2>&1 && break; sleep 2; done
docker info >/dev/null 2>&1 || fatal "dockerd does not answer; see journalctl -u docker"
# Host images that bring container images (dockyard's local VMs) load them at boot; wait
# for that, so that nothing after this pulls an image that is about to be there.
if systemctl cat dockyard-preload.service >/dev/null 2>&1; then
  systemctl start dockyard-preload.service || fatal "loading the host image's containers failed; see journalctl -u dockyard-preload"
fi
log "docker engine $(docker version --format '{{.Server.Version}}') is running"
