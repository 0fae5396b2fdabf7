"""Create, list and delete dockyard's local VMs.

Layout: one network namespace per stack network holds a bridge, the VMs' tap devices and
their qemu processes; a veth pair joins it to the host, which gets the first address of the
range. (A bridge in the host's own namespace can have VM-to-VM traffic dropped by the
host's firewall; inside the namespace nothing filters it.) Each VM boots the cached base
image through a copy-on-write overlay, with a separate data disk when its role keeps data.

Every command is safe to repeat: create on a running VM and delete on a missing one do
nothing, and delete works when the VM died by itself."""
from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "build-image.sh"
STATE = Path(os.environ.get("DOCKYARD_STATE_DIR", Path.home() / ".local" / "state" / "dockyard"))
CACHE = Path(os.environ.get("DOCKYARD_CACHE_DIR", Path.home() / ".cache" / "dockyard"))
BRIDGE = "br0"
DATA_DEVICE = "/dev/vdb"


class LocalCloudError(Exception):
    pass


def log(message: str) -> None:
    print(f"localcloud: {message}", file=sys.stderr, flush=True)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), text=True, capture_output=True)
    if check and result.returncode != 0:
        raise LocalCloudError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


# --- image ---------------------------------------------------------------------------------

def recipe_digest() -> str:
    """Changes when the image's recipe does: the build script or the images built into it."""
    digest = hashlib.sha256(RECIPE.read_bytes())
    digest.update((Path(__file__).parent / "images.py").read_bytes())
    return digest.hexdigest()[:16]


def image_dir() -> Path:
    return CACHE / "images" / recipe_digest()


def ensure_image() -> Path:
    """The base image for the current recipe, built once and shared by every VM."""
    target = image_dir()
    if (target / "base.raw").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits for the first build
        if (target / "base.raw").exists():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        log(f"building the base image {target.name} (about 2 minutes, once per recipe)")
        preload = Path(tempfile.mkdtemp(prefix="dockyard-preload-"))
        try:
            from localcloud.images import registry_image, write_archive

            # Docker Hub is out of reach: the stack's registry image comes inside the VM image
            write_archive(registry_image(), preload / "registry.tar")
            env = {**os.environ, "OUT": str(partial), "PACKAGE_CACHE": str(CACHE / "debs"),
                   "PRELOAD_DIR": str(preload)}
            result = subprocess.run(["bash", str(RECIPE)], env=env)
        finally:
            shutil.rmtree(preload, ignore_errors=True)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise LocalCloudError("the base image build failed (see the messages above)")
        partial.rename(target)
        for old in target.parent.iterdir():
            if old.is_dir() and old != target:
                shutil.rmtree(old, ignore_errors=True)
    return target


# --- network -------------------------------------------------------------------------------

def netns(net: str) -> str:
    return f"dockyard-{net}"


def host_link(net: str) -> str:
    return f"dy-{net}"[:15]


def netns_exists(net: str) -> bool:
    return netns(net) in run("ip", "netns", "list").stdout.split()


def in_netns(net: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", netns(net), *args, check=check)


def network_up(net: str, cidr: str) -> str:
    network = ipaddress.ip_network(cidr)
    host_address = f"{network.network_address + 1}/{network.prefixlen}"
    if not netns_exists(net):
        log(f"creating network {net} ({cidr}) in namespace {netns(net)}")
        run("ip", "netns", "add", netns(net))
    in_netns(net, "ip", "link", "set", "lo", "up")
    if in_netns(net, "ip", "link", "show", BRIDGE, check=False).returncode != 0:
        in_netns(net, "ip", "link", "add", BRIDGE, "type", "bridge")
    in_netns(net, "ip", "link", "set", BRIDGE, "up")
    link = host_link(net)
    if run("ip", "link", "show", link, check=False).returncode != 0:
        run("ip", "link", "add", link, "type", "veth", "peer", "name", "uplink", "netns", netns(net))
    in_netns(net, "ip", "link", "set", "uplink", "master", BRIDGE)
    in_netns(net, "ip", "link", "set", "uplink", "up")
    if host_address not in run("ip", "-o", "addr", "show", "dev", link).stdout:
        run("ip", "addr", "add", host_address, "dev", link)
    run("ip", "link", "set", link, "up")
    return host_address.split("/")[0]


def network_down(net: str) -> None:
    if netns_exists(net):
        run("ip", "netns", "delete", netns(net))
    if run("ip", "link", "show", host_link(net), check=False).returncode == 0:
        run("ip", "link", "delete", host_link(net))


# --- VMs -----------------------------------------------------------------------------------

def vm_dir(net: str, name: str) -> Path:
    return STATE / net / name


def tap(name: str) -> str:
    return f"t-{name}"[:15]


def pid_of(net: str, name: str) -> int | None:
    try:
        pid = int((vm_dir(net, name) / "pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    return pid if b"qemu-system" in cmdline else None


def accelerator() -> list[str]:
    """KVM where it really works; /dev/kvm under PVM (a VM host that is itself a VM)
    cannot boot a Debian kernel, so that counts as no KVM."""
    choice = os.environ.get("DOCKYARD_ACCEL", "auto")
    if choice == "auto":
        usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists()
        choice = "kvm" if usable else "tcg"
    if choice == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,tb-size=256", "-cpu", "qemu64"]


def mac_for(ip: str) -> str:
    packed = ipaddress.ip_address(ip).packed[-3:]
    return "52:54:00:" + ":".join(f"{b:02x}" for b in packed)


def wait_for_ssh(net: str, name: str, ip: str, timeout: float) -> None:
    start = time.monotonic()
    last_report = start
    while True:
        try:
            with socket.create_connection((ip, 22), timeout=5) as conn:
                conn.settimeout(10)
                if conn.recv(4).startswith(b"SSH-"):
                    log(f"{name}: SSH answers after {time.monotonic() - start:.0f} s")
                    return
        except OSError:
            pass
        now = time.monotonic()
        if now - start > timeout:
            raise LocalCloudError(f"{name} ({ip}) did not answer on SSH within {timeout:.0f} s; "
                                  f"its console is in {vm_dir(net, name)}/serial.log")
        if now - last_report >= 30:
            log(f"{name}: booting, {now - start:.0f} s")
            last_report = now
        time.sleep(5)


def create(net: str, name: str, address: str, key: str, data_gb: int, memory: int, cpus: int,
           wait: float) -> dict:
    interface = ipaddress.ip_interface(address)
    gateway = str(interface.network.network_address + 1)
    ip = str(interface.ip)
    directory = vm_dir(net, name)
    info = {"name": name, "ip": ip, "dataDevice": DATA_DEVICE if data_gb else ""}
    if pid_of(net, name):
        log(f"{name}: already running")
        if wait:
            wait_for_ssh(net, name, ip, wait)
        return info
    if not netns_exists(net):
        raise LocalCloudError(f"network {net} does not exist; run `python3 -m localcloud network-up` first")
    image = ensure_image()
    directory.mkdir(parents=True, exist_ok=True)
    overlay, data = directory / "root.qcow2", directory / "data.qcow2"
    if not overlay.exists():
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image / "base.raw"), "-F", "raw", str(overlay))
    drives = ["-drive", f"file={overlay},if=virtio,format=qcow2"]
    if data_gb:
        if not data.exists():
            run("qemu-img", "create", "-q", "-f", "qcow2", str(data), f"{data_gb}G")
        drives += ["-drive", f"file={data},if=virtio,format=qcow2"]
    device = tap(name)
    if in_netns(net, "ip", "link", "show", device, check=False).returncode != 0:
        in_netns(net, "ip", "tuntap", "add", "dev", device, "mode", "tap")
    in_netns(net, "ip", "link", "set", device, "master", BRIDGE)
    in_netns(net, "ip", "link", "set", device, "up")
    encoded_key = base64.b64encode(key.strip().encode()).decode()
    append = (f"root=/dev/vda rw console=ttyS0 net.ifnames=0 apparmor=0 "
              f"dockyard.hostname={name} dockyard.ip={address} dockyard.gw={gateway} dockyard.key={encoded_key}")
    (directory / "spec.json").write_text(json.dumps({**info, "address": address, "memory": memory, "cpus": cpus}))
    log(f"{name}: starting ({ip}, {memory} MiB, {cpus} CPU, {'data disk ' + str(data_gb) + ' GiB' if data_gb else 'no data disk'})")
    in_netns(
        net, "qemu-system-x86_64", "-name", name, *accelerator(), "-smp", str(cpus), "-m", str(memory),
        "-display", "none", "-monitor", "none", "-serial", f"file:{directory / 'serial.log'}",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"), "-append", append,
        *drives,
        "-netdev", f"tap,id=net0,ifname={device},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac_for(ip)}",
        "-daemonize", "-pidfile", str(directory / "pid"),
    )
    if wait:
        wait_for_ssh(net, name, ip, wait)
    return info


def key_file(net: str) -> Path:
    """Where the program keeps a copy of the network's SSH key for tools that need a file."""
    return STATE / net / "ssh-key"


def delete(net: str, name: str) -> None:
    pid = pid_of(net, name)
    if pid:
        log(f"{name}: stopping qemu (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not pid_of(net, name):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
    if netns_exists(net) and in_netns(net, "ip", "link", "show", tap(name), check=False).returncode == 0:
        in_netns(net, "ip", "link", "delete", tap(name))
    if vm_dir(net, name).exists():
        log(f"{name}: deleting its disks")
        shutil.rmtree(vm_dir(net, name))


def list_vms(net: str | None) -> list[dict]:
    found = []
    nets = [net] if net else sorted(p.name for p in STATE.iterdir()) if STATE.exists() else []
    for n in nets:
        base = STATE / n
        if not base.is_dir():
            continue
        for directory in sorted(p for p in base.iterdir() if p.is_dir()):
            spec = json.loads((directory / "spec.json").read_text()) if (directory / "spec.json").exists() else {}
            found.append({"network": n, "name": directory.name, "ip": spec.get("ip", ""),
                          "state": "running" if pid_of(n, directory.name) else "stopped"})
    return found


def cleanup(net: str) -> None:
    for vm in list_vms(net):
        delete(net, vm["name"])
    network_down(net)
    shutil.rmtree(STATE / net, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m localcloud", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("image", help="build the base image if its recipe changed; print its directory")
    p = sub.add_parser("network-up", help="create a VM network (idempotent)")
    p.add_argument("--net", required=True)
    p.add_argument("--cidr", required=True)
    p = sub.add_parser("network-down", help="delete a VM network")
    p.add_argument("--net", required=True)
    p = sub.add_parser("create", help="start a VM (idempotent); prints its name, address and data disk as JSON")
    p.add_argument("--net", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--address", required=True, help="IP/prefix, e.g. 10.231.0.11/24")
    p.add_argument("--key", required=True, help="the authorized_keys line for root")
    p.add_argument("--data-gb", type=int, default=0)
    p.add_argument("--memory", type=int, default=1024)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--wait", type=float, default=600, help="seconds to wait for SSH (0: do not wait)")
    p = sub.add_parser("delete", help="stop a VM and delete its disks and tap (idempotent)")
    p.add_argument("--net", required=True)
    p.add_argument("--name", required=True)
    p = sub.add_parser("list", help="list VMs")
    p.add_argument("--net")
    p = sub.add_parser("cleanup", help="delete every VM of a network and the network")
    p.add_argument("--net", required=True)
    p = sub.add_parser("ci-images", help="build Gitea, Drone and its runner here; write them as docker-archives "
                                         "to OUT and print the dockyard:ciImages settings for them as JSON")
    p.add_argument("--out", required=True)
    p = sub.add_parser("registry-image", help="write the dockyard/registry image as a docker-archive")
    p.add_argument("--out", required=True)
    p = sub.add_parser("web-image", help="write the dockyard/web:VERSION test app as a docker-archive")
    p.add_argument("--version", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "image":
            print(ensure_image())
        elif args.command == "network-up":
            print(network_up(args.net, args.cidr))
        elif args.command == "network-down":
            network_down(args.net)
        elif args.command == "create":
            print(json.dumps(create(args.net, args.name, args.address, args.key, args.data_gb, args.memory,
                                    args.cpus, args.wait)))
        elif args.command == "delete":
            delete(args.net, args.name)
        elif args.command == "list":
            for vm in list_vms(args.net):
                print(f"{vm['network']}\t{vm['name']}\t{vm['ip']}\t{vm['state']}")
        elif args.command == "cleanup":
            cleanup(args.net)
        elif args.command == "ci-images":
            from localcloud.ci_images import build_ci_images

            print(json.dumps(build_ci_images(Path(args.out))))
        elif args.command == "registry-image":
            from localcloud.images import registry_image, write_archive

            print(write_archive(registry_image(), Path(args.out)))
        elif args.command == "web-image":
            from localcloud.images import deb_file, web_image, write_archive

            print(write_archive(web_image(args.version, deb_file("busybox-static", "/bin/busybox")), Path(args.out)))
    except LocalCloudError as error:
        log(f"error: {error}")
        return 1
    return 0
