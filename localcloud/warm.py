"""Warm boots: a VM booted once from the base image, with the stack's preloaded images
already loaded into its Docker, and saved (its disk and its memory) as a template; every
VM then starts from that template in seconds instead of booting for a minute or more, and
gets its own identity (identity.sh) before anything reaches it.

A template is made once per base image recipe, VM size, accelerator and set of preloaded
archives, and shared by every VM and stack with the same; the five most recently used,
and any a VM runs on, are kept. A VM restored from it runs on a copy-on-write
overlay of the template's disk, which never changes after the save."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import shlex
import signal
import subprocess
import time
from pathlib import Path

from components.archives import archive_image_id
from components.maintenance import maintenance_env
from components.shell import script_text
from localcloud.base_image import ensure_image
from localcloud.qemu import GuestAgent, Monitor, accelerator_name, machine_args
from localcloud.system import CACHE, STATE, LocalCloudError, log

HERE = Path(__file__).resolve().parent
IDENTITY_SCRIPT = HERE / "identity.sh"
# what every host's bootstrap does first, done once in the template with the stack
# defaults, so that a VM's own run finds it done: Docker's daemon.json (no restart), the
# maintenance timers (no systemd reload)
TEMPLATE_BOOTSTRAP = (("docker-host.sh", {}), ("host-maintenance.sh", maintenance_env()))
TEMPLATES = CACHE / "warm"
KEEP_TEMPLATES = 5
# what the template's kernel is told: no name, address or key (those come after a restore)
TEMPLATE_APPEND = "root=/dev/vda rw console=ttyS0 net.ifnames=0 apparmor=0"
TEMPLATE_MAC = "52:54:00:00:00:01"
# the template VM needs a network card (its clones have one) but no network
TEMPLATE_NETDEV = "hubport,id=net0,hubid=0"  # no backend state to save (user-mode networking has some)
BOOT_TIMEOUT = 900


def image_ids(archives: list[Path]) -> dict[str, Path]:
    """Each archive by the ID of the image it holds (the same image twice counts once)."""
    try:
        return {archive_image_id(str(a)).removeprefix("sha256:"): a for a in archives}
    except ValueError as error:
        raise LocalCloudError(str(error)) from None


def template_key(base: Path, memory: int, cpus: int, archives: list[Path]) -> str:
    """What a template depends on: changing any of it makes another template."""
    recipe = {
        "base": base.name,
        "memory": memory,
        "cpus": cpus,
        "accel": accelerator_name(),
        "qemu": subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout,
        "devices": machine_args(name="", directory=Path("/"), memory=memory, cpus=cpus, kernel=Path("/"),
                                initrd=Path("/"), append="", root_disk=Path("/"), root_format="", netdev="", mac=""),
        "template": [TEMPLATE_APPEND, TEMPLATE_MAC, TEMPLATE_NETDEV],
        "bootstrap": [script_text(name) for name, _ in TEMPLATE_BOOTSTRAP],
        "archives": sorted(image_ids(archives)),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _copy_into_image(image: Path, sources: list[Path], directory: str) -> None:
    """Write files into an ext4 image without mounting it (debugfs)."""
    commands = [f"cd {directory}"] + [f'write "{s}" "{s.name}"' for s in sources]
    result = subprocess.run(["debugfs", "-w", "-f", "-", str(image)], input="\n".join(commands) + "\n",
                            text=True, capture_output=True)
    if result.returncode != 0:
        raise LocalCloudError(f"debugfs could not write the archives into {image}: {result.stderr.strip()}")
    listing = subprocess.run(["debugfs", "-R", f"ls -p {directory}", str(image)], text=True,
                             capture_output=True).stdout
    present = {line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6}
    missing = [s.name for s in sources if s.name not in present]
    if missing:
        raise LocalCloudError(f"debugfs did not write {', '.join(missing)} into {image}")


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def ensure_template(memory: int, cpus: int, archives: list[Path]) -> Path:
    """The template for this VM size and these archives, made if it does not exist yet."""
    base = ensure_image()
    target = TEMPLATES / template_key(base, memory, cpus, archives)
    if (target / "state").exists():
        os.utime(target)
        return target
    TEMPLATES.mkdir(parents=True, exist_ok=True)
    with open(TEMPLATES / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the VMs of a stack start at once: one makes it, the others wait
        if (target / "state").exists():
            os.utime(target)
            return target
        for stale in TEMPLATES.glob("*.partial"):  # a run killed while making one
            _stop(stale / "pid")
            shutil.rmtree(stale, ignore_errors=True)
        partial = target.with_name(target.name + ".partial")
        partial.mkdir(parents=True)
        started = time.monotonic()
        try:
            _make_template(base, partial, memory, cpus, archives)
        except BaseException:
            _stop(partial / "pid")
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(target)
        log(f"warm template {target.name} ready after {time.monotonic() - started:.0f} s")
        _prune_templates(keep=target)
    return target


def _make_template(base: Path, directory: Path, memory: int, cpus: int, archives: list[Path]) -> None:
    log(f"making a warm template ({memory} MiB, {cpus} CPU, {len(archives)} preloaded archive(s)); "
        f"once per base image, VM size and archive set")
    root = directory / "root.raw"
    subprocess.run(["cp", "--sparse=always", str(base / "base.raw"), str(root)], check=True)
    if archives:
        # dockyard-preload.service loads /var/lib/dockyard/preload/*.tar when the template
        # boots; each goes there under its image's ID, as two archives may share a name
        named = directory / "archives"
        named.mkdir()
        for image_id, archive in image_ids(archives).items():
            (named / f"{image_id}.tar").symlink_to(archive.resolve())
        _copy_into_image(root, sorted(named.iterdir()), "/var/lib/dockyard/preload")
        shutil.rmtree(named)
    for part in ("vmlinuz", "initrd.img"):
        shutil.copy(base / part, directory / part)
    args = machine_args(name="dockyard-template", directory=directory, memory=memory, cpus=cpus,
                        kernel=directory / "vmlinuz", initrd=directory / "initrd.img", append=TEMPLATE_APPEND,
                        root_disk=root, root_format="raw", netdev=TEMPLATE_NETDEV, mac=TEMPLATE_MAC)
    subprocess.run([*args, "-daemonize", "-pidfile", str(directory / "pid")], check=True)
    agent = GuestAgent(directory, timeout=BOOT_TIMEOUT)
    try:
        # the boot is done when its last unit is (the preload is one), and Docker answers
        code, out, err = agent.run("/bin/systemctl", "is-system-running", "--wait", timeout=BOOT_TIMEOUT)
        if out.strip() not in ("running", "degraded"):
            raise LocalCloudError(f"the template VM's boot ended {out.strip() or err.strip()}")
        code, out, err = agent.run("/bin/sh", "-c", "docker info --format '{{.ServerVersion}}' && "
                                   "! ls /var/lib/dockyard/preload/*.tar 2>/dev/null", timeout=120)
        if code != 0:
            raise LocalCloudError(f"the template VM is not ready: Docker or the preload failed ({err.strip()})")
        for script, env in TEMPLATE_BOOTSTRAP:
            assignments = "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())
            code, out, err = agent.run("/bin/bash", "-s", stdin=(assignments + script_text(script)).encode(),
                                       timeout=300)
            if code != 0:
                raise LocalCloudError(f"{script} failed in the template VM: {err.strip()[-500:]}")
        # a restored VM's clock jumps forward past the prune's time: the timer stays off until
        # the VM's own host-maintenance.sh, with the stack's images to keep, starts it
        code, out, err = agent.run("/bin/sh", "-c", "systemctl stop dockyard-prune.timer && sync && "
                                   "echo 3 > /proc/sys/vm/drop_caches", timeout=60)
    finally:
        agent.close()
    monitor = Monitor(directory)
    try:
        monitor.execute("stop")
        monitor.execute("migrate-set-parameters", **{"max-bandwidth": 8 << 30})
        monitor.execute("migrate", uri=f"exec:cat > {shlex.quote(str(directory / 'state.partial'))}")
        monitor.wait_for_migration(timeout=600)
        monitor.execute("quit")
    finally:
        monitor.close()
    for _ in range(50):
        if not _running(directory / "pid"):
            break
        time.sleep(0.2)
    (directory / "state.partial").rename(directory / "state")
    (directory / "pid").unlink(missing_ok=True)
    for sock in directory.glob("*.sock"):
        sock.unlink()


def _running(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False


def _prune_templates(keep: Path) -> None:
    """Beyond the KEEP_TEMPLATES most recently used, a template goes unless a VM's disk is
    an overlay of it (its spec.json names it)."""
    in_use = set()
    for spec in STATE.glob("*/*/spec.json"):
        try:
            in_use.add(json.loads(spec.read_text()).get("template"))
        except ValueError:
            pass
    templates = sorted((p for p in TEMPLATES.iterdir() if p.is_dir() and (p / "state").exists()),
                       key=lambda p: p.stat().st_mtime, reverse=True)
    for old in templates[KEEP_TEMPLATES:]:
        if old != keep and old.name not in in_use:
            shutil.rmtree(old, ignore_errors=True)


def restore(*, launcher: list[str], name: str, directory: Path, template: Path, memory: int, cpus: int, netdev: str,
            identity: dict[str, str], data_disk: Path | None) -> str:
    """Start VM `name` from `template` and give it `identity` (identity.sh's inputs);
    returns its new SSH host public key."""
    overlay = directory / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(template / "root.raw"), "-F", "raw",
                    str(overlay)], check=True)
    args = machine_args(name=name, directory=directory, memory=memory, cpus=cpus,
                        kernel=template / "vmlinuz", initrd=template / "initrd.img", append=TEMPLATE_APPEND,
                        root_disk=overlay, root_format="qcow2", netdev=netdev, mac=identity["MAC"])
    started = subprocess.run([*launcher, *args, "-S", "-incoming", f"exec:cat {shlex.quote(str(template / 'state'))}",
                              "-daemonize", "-pidfile", str(directory / "pid")], capture_output=True, text=True)
    if started.returncode != 0:
        raise LocalCloudError(f"qemu did not start: {started.stderr.strip()[-500:]}")
    monitor = Monitor(directory)
    try:
        monitor.wait_for_migration(timeout=300)
        if data_disk:
            monitor.execute("blockdev-add", **{"driver": "qcow2", "node-name": "data",
                                               "file": {"driver": "file", "filename": str(data_disk)}})
            monitor.execute("device_add", driver="virtio-blk-pci", drive="data", id="data0")
        monitor.execute("cont")
    finally:
        monitor.close()
    agent = GuestAgent(directory, timeout=60)
    try:
        # the VM resumes with the template's clock
        agent.execute("guest-set-time", time=time.time_ns())
        inputs = "".join(f"{key}={shlex.quote(value)}\n" for key, value in identity.items())
        code, out, err = agent.run("/bin/sh", "-s", stdin=(inputs + IDENTITY_SCRIPT.read_text()).encode(),
                                   timeout=120)
        if code != 0:
            raise LocalCloudError(f"identity.sh failed in {name}: {err.strip()}")
    finally:
        agent.close()
    return out.strip()
