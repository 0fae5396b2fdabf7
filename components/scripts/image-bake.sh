#!/usr/bin/env bash
# image-bake.sh: finish a droplet that becomes dockyard's custom DigitalOcean image: the NFS
# tools and rsync installed (NFS off until nfs-server.sh turns it on), the platform's images
# pulled, and everything a droplet must not share with another removed, so that each droplet
# made from the snapshot gets its own at its first boot (cloud-init makes the host keys and
# installs the droplet's SSH keys again). Runs after host-base.sh installed Docker.
#
# Inputs (environment):
#   IMAGES   space-separated pinned image references to pull (e.g. registry:2.8.3)
#
# Safe to run again: installed packages and pulled images are kept.
set -eu

log() { echo "image-bake: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

IMAGES=${IMAGES:-}
[ "$(id -u)" = 0 ] || fatal "must run as root"
command -v docker >/dev/null 2>&1 || fatal "docker is missing: run host-base.sh first"
export DEBIAN_FRONTEND=noninteractive
APT="apt-get -q -y -o DPkg::Lock::Timeout=600"

missing=""
for package in nfs-kernel-server nfs-common rsync; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
  log "installing$missing"
  $APT update >/dev/null
  # shellcheck disable=SC2086 # one word per package
  $APT install --no-install-recommends $missing >/dev/null
fi
# a droplet serves NFS only when the stack makes it an NFS server
systemctl disable --now nfs-server >/dev/null 2>&1 || true

for image in $IMAGES; do
  if docker image inspect "$image" >/dev/null 2>&1; then
    continue
  fi
  log "pulling $image"
  docker pull -q "$image" >/dev/null || fatal "could not pull $image"
done

log "removing what each droplet must have for itself"
$APT clean
rm -rf /var/lib/apt/lists/*
# cloud-init runs as on a new droplet: host keys, the droplet's own SSH keys, its name
cloud-init clean --logs >/dev/null 2>&1 || fatal "cloud-init clean failed"
rm -f /etc/ssh/ssh_host_*
# the builder's key must not open the droplets made from the image
rm -f /root/.ssh/authorized_keys
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
sync
fstrim -a >/dev/null 2>&1 || true
log "ready for its snapshot: $(docker image ls -q | wc -l) image(s)"
