"""Talking to a running qemu: its QMP monitor (pause, save, hot-plug a disk) and the guest
agent inside the VM (run a command, set the clock), both over unix sockets in the VM's
directory; and the device set every dockyard VM has, so that a VM saved once can be
restored in another (a restore needs the same devices in the same order)."""
from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path

from localcloud.system import LocalCloudError

MONITOR_SOCKET = "qmp.sock"
AGENT_SOCKET = "qga.sock"


def accelerator() -> list[str]:
    """KVM where it really works; /dev/kvm under PVM (a VM host that is itself a VM)
    cannot boot a Debian kernel, so that counts as no KVM."""
    choice = accelerator_name()
    if choice == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,tb-size=256", "-cpu", "qemu64"]


def accelerator_name() -> str:
    choice = os.environ.get("DOCKYARD_ACCEL", "auto")
    if choice == "auto":
        usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists()
        choice = "kvm" if usable else "tcg"
    return choice


def machine_args(*, name: str, directory: Path, memory: int, cpus: int, kernel: Path, initrd: Path,
                 append: str, root_disk: Path, root_format: str, netdev: str, mac: str) -> list[str]:
    """qemu's arguments for one VM, data disk excepted: a restored VM must have the devices
    of the VM it was saved from, in the same order, so this is the one place they are listed."""
    return [
        "qemu-system-x86_64", "-name", name, *accelerator(), "-smp", str(cpus), "-m", str(memory),
        "-display", "none", "-monitor", "none", "-serial", f"file:{directory / 'serial.log'}",
        "-qmp", f"unix:{directory / MONITOR_SOCKET},server=on,wait=off",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
        "-drive", f"file={root_disk},if=virtio,format={root_format}",
        "-netdev", netdev,
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
        "-device", "virtio-serial-pci,id=serial0",
        "-chardev", f"socket,id=agent0,path={directory / AGENT_SOCKET},server=on,wait=off",
        "-device", "virtserialport,bus=serial0.0,chardev=agent0,name=org.qemu.guest_agent.0",
    ]


class _JsonSocket:
    def __init__(self, path: Path, timeout: float):
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        self._socket.connect(str(path))
        self._buffer = b""

    def send(self, message: dict) -> None:
        self._socket.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict:
        while b"\n" not in self._buffer:
            chunk = self._socket.recv(65536)
            if not chunk:
                raise LocalCloudError("qemu closed the socket")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        # the agent starts a delimited sync's answer with 0xff to flush what a previous client left
        line = line.lstrip(b"\xff").strip()
        if not line:
            return self.receive()
        try:
            return json.loads(line)
        except ValueError:
            return {}

    def request(self, who: str, command: str, arguments: dict):
        """Send one command; return its answer, skipping what else arrives (QMP's events)."""
        self.send({"execute": command, **({"arguments": arguments} if arguments else {})})
        while True:
            answer = self.receive()
            if "return" in answer:
                return answer["return"]
            if "error" in answer:
                raise LocalCloudError(f"{who} refused {command}: {answer['error'].get('desc', answer['error'])}")

    def close(self) -> None:
        self._socket.close()


class Monitor:
    """QMP: commands and their answers; the events in between are dropped."""

    def __init__(self, directory: Path, timeout: float = 30):
        path = directory / MONITOR_SOCKET
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._socket = _JsonSocket(path, timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise LocalCloudError(f"qemu's monitor did not answer at {path}")
                time.sleep(0.2)
        self._socket.receive()  # the greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments):
        return self._socket.request("qemu", command, arguments)

    def wait_for_migration(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.execute("query-migrate").get("status", "none")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise LocalCloudError(f"the migration {status}: {self.execute('query-migrate').get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise LocalCloudError(f"the migration did not finish in {timeout:.0f} s (status {status})")
            time.sleep(0.3)

    def close(self) -> None:
        self._socket.close()


class GuestAgent:
    """qemu-guest-agent inside the VM: runs a program there and returns its exit code and output."""

    def __init__(self, directory: Path, timeout: float):
        path = directory / AGENT_SOCKET
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                self._socket = _JsonSocket(path, 10)
                self._sync()
                return
            except (OSError, LocalCloudError) as error:
                last_error = str(error)
                try:
                    self._socket.close()
                except AttributeError:
                    pass
            if time.monotonic() > deadline:
                raise LocalCloudError(f"the guest agent did not answer within {timeout:.0f} s ({last_error})")
            time.sleep(1)

    def _sync(self) -> None:
        token = int.from_bytes(os.urandom(4), "big")
        self._socket.send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
        while self._socket.receive().get("return") != token:
            pass

    def execute(self, command: str, **arguments):
        return self._socket.request("the guest agent", command, arguments)

    def run(self, path: str, *args: str, stdin: bytes = b"", timeout: float = 120) -> tuple[int, str, str]:
        request = {"path": path, "arg": list(args), "capture-output": True}
        if stdin:
            request["input-data"] = base64.b64encode(stdin).decode()
        pid = self.execute("guest-exec", **request)["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.execute("guest-exec-status", pid=pid)
            if status.get("exited"):
                decode = lambda key: base64.b64decode(status.get(key, "")).decode(errors="replace")  # noqa: E731
                return status.get("exitcode", -1), decode("out-data"), decode("err-data")
            if time.monotonic() > deadline:
                raise LocalCloudError(f"{path} did not finish in the VM within {timeout:.0f} s")
            time.sleep(0.5)

    def close(self) -> None:
        self._socket.close()
