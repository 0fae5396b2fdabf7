#!/usr/bin/env bash
# build-image.sh: build the Debian 12 base image of dockyard's local VMs: a root filesystem
# with a Debian kernel, openssh, docker.io and the NFS server and client already installed,
# so that the VMs need no network to bootstrap.
#
# Inputs (environment):
#   OUT           directory that receives base.raw, vmlinuz, initrd.img (required)
#   MIRROR        Debian mirror (default: http://deb.debian.org/debian)
#   PACKAGE_CACHE directory where debootstrap keeps downloaded packages between builds
#   IMAGE_SIZE    size of the root filesystem (default 6G; sparse on disk)
#   PRELOAD_DIR   directory of docker-archive tarballs the VMs load into Docker at first
#                 boot (optional; the local stack's registry image comes this way)
#
# Needs root, debootstrap and e2fsprogs. Writes to OUT only when the whole build succeeded,
# so an interrupted build never leaves a half image behind.
set -eu

log() { echo "build-image: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

OUT=${OUT:-}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGE_CACHE=${PACKAGE_CACHE:-}
IMAGE_SIZE=${IMAGE_SIZE:-6G}
PRELOAD_DIR=${PRELOAD_DIR:-}
[ -n "$OUT" ] || fatal "OUT must be set"
[ "$(id -u)" = 0 ] || fatal "must run as root (debootstrap and chroot)"
command -v debootstrap >/dev/null 2>&1 || fatal "debootstrap is missing: apt-get install debootstrap"
command -v mke2fs >/dev/null 2>&1 || fatal "mke2fs is missing: apt-get install e2fsprogs"

PACKAGES=systemd-sysv,udev,dbus,kmod,iproute2,openssh-server,ca-certificates,linux-image-cloud-amd64,initramfs-tools,docker.io,nfs-kernel-server,nfs-common,iptables,busybox,curl,procps,ipvsadm,rsync,qemu-guest-agent,restic,wireguard-tools

work=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-image.XXXXXX")
root="$work/rootfs"
cleanup() {
  for m in dev/pts dev proc sys; do
    mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT

started=$(date +%s)
log "debootstrap bookworm (minbase + $(echo "$PACKAGES" | tr ',' '\n' | wc -l) packages)"
cache_args=""
if [ -n "$PACKAGE_CACHE" ]; then
  mkdir -p "$PACKAGE_CACHE"
  cache_args="--cache-dir=$PACKAGE_CACHE"
fi
# shellcheck disable=SC2086 # cache_args is empty or one word
debootstrap --variant=minbase $cache_args --include="$PACKAGES" bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; fatal "debootstrap failed"; }
log "debootstrap done in $(( $(date +%s) - started )) s"

mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"

echo "/dev/vda / ext4 defaults,noatime 0 1" > "$root/etc/fstab"
echo dockyard-image > "$root/etc/hostname"  # replaced at first boot
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"
: > "$root/etc/machine-id"           # systemd makes a new one on each VM's first boot
rm -f "$root"/etc/ssh/ssh_host_*     # each VM makes its own host keys
printf 'nameserver 127.0.0.1\n' > "$root/etc/resolv.conf"

# A small initramfs: the VM disks are virtio, the root is ext4.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 > "$root/etc/initramfs-tools/modules"
# The swarm's routing mesh and overlay networks need these at boot.
printf '%s\n' ip_vs ip_vs_rr br_netfilter vxlan overlay > "$root/etc/modules-load.d/dockyard.conf"

cat > "$root/usr/local/sbin/dockyard-firstboot" <<'SCRIPT'
#!/bin/sh
# Set this VM's address and SSH key from the kernel command line (dockyard.ip, dockyard.gw,
# dockyard.key = base64 of the authorized_keys line) at every boot, and its name
# (dockyard.hostname) at the first: the bootstrap may rename the host after that.
set -eu
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^dockyard\.$1=//p" | tail -n 1; }
name=$(arg hostname); address=$(arg ip); gateway=$(arg gw); key=$(arg key)
if [ -n "$name" ] && [ "$(cat /etc/hostname)" = dockyard-image ]; then
  echo "$name" > /etc/hostname
  hostname "$name"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$name" > /etc/hosts
fi
if [ -n "$address" ]; then
  mkdir -p /etc/systemd/network
  {
    printf '[Match]\nName=eth0\n\n[Network]\nAddress=%s\n' "$address"
    [ -z "$gateway" ] || printf 'Gateway=%s\n' "$gateway"
  } > /etc/systemd/network/10-eth0.network
fi
if [ -n "$key" ]; then
  mkdir -p /root/.ssh
  chmod 700 /root/.ssh
  echo "$key" | base64 -d > /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
fi
ssh-keygen -A >/dev/null
SCRIPT
chmod 755 "$root/usr/local/sbin/dockyard-firstboot"
cat > "$root/etc/systemd/system/dockyard-firstboot.service" <<'UNIT'
[Unit]
Description=dockyard: name, address and SSH key of this VM
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target systemd-networkd.service ssh.service
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/dockyard-firstboot

[Install]
WantedBy=sysinit.target
UNIT

mkdir -p "$root/var/lib/dockyard/preload"
if [ -n "$PRELOAD_DIR" ]; then
  for archive in "$PRELOAD_DIR"/*.tar; do
    [ -f "$archive" ] || continue
    log "preloading $(basename "$archive")"
    cp "$archive" "$root/var/lib/dockyard/preload/"
  done
fi
cat > "$root/usr/local/sbin/dockyard-preload" <<'SCRIPT'
#!/bin/sh
# Load the archives in /var/lib/dockyard/preload once; each is removed when it is loaded,
# so that later boots skip this.
set -eu
for archive in /var/lib/dockyard/preload/*.tar; do
  [ -f "$archive" ] || continue
  docker load -q -i "$archive"
  rm -f "$archive"
done
SCRIPT
chmod 755 "$root/usr/local/sbin/dockyard-preload"
cat > "$root/etc/systemd/system/dockyard-preload.service" <<'UNIT'
[Unit]
Description=dockyard: load the images that came with the VM image into Docker
After=docker.service
Requires=docker.service
ConditionDirectoryNotEmpty=/var/lib/dockyard/preload

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/dockyard-preload

[Install]
WantedBy=multi-user.target
UNIT

chroot "$root" /bin/sh -eu <<'CHROOT'
export DEBIAN_FRONTEND=noninteractive
systemctl enable dockyard-preload.service >/dev/null 2>&1
systemctl enable dockyard-firstboot.service systemd-networkd.service ssh.service docker.service >/dev/null 2>&1
# Nothing periodic: on a slow emulated CPU these timers steal the bootstrap's time.
for timer in apt-daily apt-daily-upgrade man-db e2scrub_all fstrim dpkg-db-backup logrotate; do
  systemctl disable "$timer.timer" >/dev/null 2>&1 || true
  systemctl mask "$timer.timer" >/dev/null 2>&1 || true
done
systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
passwd -l root >/dev/null
update-initramfs -u -k all >/dev/null 2>&1
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/*.log
CHROOT

kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then fatal "no kernel or initrd in the root filesystem"; fi
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"

for m in dev/pts dev proc sys; do umount -l "$root/$m"; done
log "making the $IMAGE_SIZE root filesystem"
mke2fs -q -t ext4 -L dockyard-root -d "$root" "$work/base.raw" "$IMAGE_SIZE"

mkdir -p "$OUT"
mv "$work/vmlinuz" "$work/initrd.img" "$OUT/"
mv "$work/base.raw" "$OUT/base.raw"
log "image ready in $OUT after $(( $(date +%s) - started )) s"
