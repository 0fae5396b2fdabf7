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
import subprocess
import time
from pathlib import Path

from localcloud.base_image import ensure_image
from localcloud.network import BRIDGE, in_netns, netns, netns_exists, network_down
from localcloud.qemu import machine_args
from localcloud.system import STATE, LocalCloudError, log, run
from localcloud.warm import ensure_template, restore

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
           wait: float, bake: list[Path] | None = None, hostname: str | None = None) -> dict:
    """Start VM `name`: from the warm template of its size and `bake` archives when it can be
    made and restored (seconds), else by a cold boot of the base image (a minute or more).
    Its host name inside is `hostname` (default: `name`)."""
    hostname = hostname or name
    interface = ipaddress.ip_interface(address)
    gateway = str(interface.network.network_address + 1)
    ip = str(interface.ip)
    directory = vm_dir(net, name)
    info = {"name": name, "ip": ip, "dataDevice": DATA_DEVICE if data_gb else ""}
    if pid_of(net, name):
        log(f"{name}: already running")
        if wait:
            wait_for_ssh(net, name, ip, wait)
        host_key = _recorded_host_key(directory) or _read_host_key_from_ssh(ip)
        if not host_key:
            raise LocalCloudError(f"{name} runs but its SSH host key is unknown; delete it and create it again")
        return {**info, "hostKey": host_key}
    if not netns_exists(net):
        raise LocalCloudError(f"network {net} does not exist; run `python3 -m localcloud network-up` first")
    bake = bake or []
    for archive in bake:
        if not archive.is_file():
            raise LocalCloudError(f"no archive at {archive} to preload")
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data.qcow2"
    if data_gb and not data.exists():
        run("qemu-img", "create", "-q", "-f", "qcow2", str(data), f"{data_gb}G")
    device = tap(name)
    if in_netns(net, "ip", "link", "show", device, check=False).returncode != 0:
        in_netns(net, "ip", "tuntap", "add", "dev", device, "mode", "tap")
    in_netns(net, "ip", "link", "set", device, "master", BRIDGE)
    in_netns(net, "ip", "link", "set", device, "up")
    netdev = f"tap,id=net0,ifname={device},script=no,downscript=no"
    (directory / "spec.json").write_text(json.dumps({**info, "address": address, "memory": memory, "cpus": cpus}))
    size = f"{ip}, {memory} MiB, {cpus} CPU, {'data disk ' + str(data_gb) + ' GiB' if data_gb else 'no data disk'}"
    host_key, boot = "", "cold"
    if os.environ.get("DOCKYARD_WARM_BOOT", "1") != "0" and not (directory / "root.qcow2").exists():
        try:
            template = ensure_template(memory, cpus, bake)
            log(f"{name}: restoring the warm template {template.name} ({size})")
            host_key = restore(
                launcher=["ip", "netns", "exec", netns(net)], name=name, directory=directory, template=template, memory=memory, cpus=cpus, netdev=netdev,
                data_disk=data if data_gb else None,
                identity={"NAME": hostname, "ADDRESS": address, "GATEWAY": gateway, "MAC": mac_for(ip),
                          "KEY": base64.b64encode(key.strip().encode()).decode(), "SEED": os.urandom(32).hex(),
                          "DATA_DEVICE": DATA_DEVICE if data_gb else ""})
            boot = "warm"
            _record(directory, template=template.name)
        except (LocalCloudError, OSError, subprocess.CalledProcessError) as error:
            log(f"{name}: warm boot failed ({error}); booting cold instead")
            _kill(net, name)
            (directory / "root.qcow2").unlink(missing_ok=True)
    if boot == "cold":
        _cold_boot(net, name, hostname, directory, address, gateway, key, memory, cpus, netdev,
                   data if data_gb else None, size, bake)
    if wait:
        wait_for_ssh(net, name, ip, wait)
    if not host_key:
        host_key = _read_host_key_from_ssh(ip)
    if not host_key:
        raise LocalCloudError(f"{name} answers on SSH but ssh-keyscan read no ed25519 host key from it")
    (directory / "host_key.pub").write_text(host_key + "\n")
    return {**info, "hostKey": host_key, "boot": boot}


def _cold_boot(net: str, name: str, hostname: str, directory: Path, address: str, gateway: str, key: str,
               memory: int, cpus: int, netdev: str, data: Path | None, size: str, bake: list[Path]) -> None:
    image = ensure_image()
    overlay = directory / "root.qcow2"
    if not overlay.exists():
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image / "base.raw"), "-F", "raw", str(overlay))
    encoded_key = base64.b64encode(key.strip().encode()).decode()
    append = (f"root=/dev/vda rw console=ttyS0 net.ifnames=0 apparmor=0 "
              f"dockyard.hostname={hostname} dockyard.ip={address} dockyard.gw={gateway} dockyard.key={encoded_key}")
    if bake:
        log(f"{name}: a cold boot does not preload {len(bake)} archive(s); the stack loads them over ssh")
    log(f"{name}: booting cold ({size})")
    drives = ["-drive", f"file={data},if=virtio,format=qcow2"] if data else []
    args = machine_args(name=name, directory=directory, memory=memory, cpus=cpus, kernel=image / "vmlinuz",
                        initrd=image / "initrd.img", append=append, root_disk=overlay, root_format="qcow2",
                        netdev=netdev, mac=mac_for(address.split("/")[0]))
    in_netns(net, *args, *drives, "-daemonize", "-pidfile", str(directory / "pid"))


def _record(directory: Path, **facts: str) -> None:
    spec = directory / "spec.json"
    spec.write_text(json.dumps({**json.loads(spec.read_text()), **facts}))


def _recorded_host_key(directory: Path) -> str:
    try:
        return (directory / "host_key.pub").read_text().strip()
    except FileNotFoundError:
        return ""


def _read_host_key_from_ssh(ip: str) -> str:
    """A cold-booted VM made its own key: read it as the first ssh client would."""
    result = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-T", "10", ip], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            return " ".join(parts[1:3])
    return ""


def _kill(net: str, name: str) -> None:
    pid = pid_of(net, name)
    if pid:
        os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not pid_of(net, name):
                break
            time.sleep(0.1)


def key_file(net: str) -> Path:
    """Where the program keeps a copy of the network's SSH key for tools that need a file."""
    return STATE / net / "ssh-key"


def known_hosts_file(net: str) -> Path:
    """Where the program keeps the keys the network's VMs reported, for ssh to check them."""
    return STATE / net / "known_hosts"


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
