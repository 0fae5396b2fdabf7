"""dockyard's local VMs: each runs qemu inside its network's namespace, with a tap device on
the bridge, and boots the base image through a copy-on-write overlay, with a separate data
disk when its role keeps data.

Every command is safe to repeat: create on a running VM and delete on a missing one do
nothing, and delete works when the VM died by itself."""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from localcloud.base_image import ensure_image
from localcloud.network import BRIDGE, in_netns, netns_exists, network_down
from localcloud.system import STATE, LocalCloudError, log, run

DATA_DEVICE = "/dev/vdb"


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
