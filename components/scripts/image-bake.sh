#!/usr/bin/env bash
# image-bake.sh: finish a droplet that becomes dockyard's custom DigitalOcean image: the NFS
# tools, rsync and WireGuard's tools installed (NFS off until nfs-server.sh turns it on),
# the platform's images pulled, and everything a droplet must not share with another
# removed, so that each droplet made from the snapshot gets its own at its first boot
# (cloud-init makes the host keys and installs the droplet's SSH keys again). Runs after
# docker-host.sh installed Docker.
#
# Inputs (environment):
#   IMAGES   space-separated pinned image references to pull (e.g. registry:2.8.3)
#
# Safe to run again: installed packages and pulled images are kept.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell image-bake.sh | bash -s}"

default_env IMAGES
[ "$(id -u)" = 0 ] || fatal "must run as root"
command -v docker >/dev/null 2>&1 || fatal "docker is missing: run docker-host.sh first"

apt_install nfs-kernel-server nfs-common rsync wireguard-tools
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
apt_get clean
# cloud-init runs as on a new droplet: host keys, the droplet's own SSH keys, its name
cloud-init clean --logs >/dev/null 2>&1 || fatal "cloud-init clean failed"
set +f  # these two are globs
rm -rf /var/lib/apt/lists/*
rm -f /etc/ssh/ssh_host_*
set -f
# the builder's key must not open the droplets made from the image, nor its data path key
# (it has none, unless someone ran swarm-datapath.sh there) be every droplet's
rm -f /root/.ssh/authorized_keys /etc/wireguard/dockyard0.key /etc/wireguard/dockyard0.conf
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
sync
fstrim -a >/dev/null 2>&1 || true
log "ready for its snapshot: $(docker image ls -q | wc -l) image(s)"
