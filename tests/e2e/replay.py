"""A stand-in for the Pulumi engine, for the one thing it cannot do on machines where the
engine's plugins cannot be built: run the program's commands for real.

It runs the dockyard program on the Pulumi SDK's mock monitor, and the mock *executes*
each `command:local:Command` (with sh, in its `dir`) and `command:remote:Command` (with
ssh, `create` as the remote command line and `stdin` on stdin, through `proxy` as a jump
host when set), and makes `tls:index/privateKey:PrivateKey` keys with ssh-keygen. The SDK
registers a resource only once the resources it depends on are registered, so commands run
in the program's dependency order, in parallel where the program allows it. `destroy()`
runs the local commands' `delete` in reverse order.

What it does not do: diff against a previous state (a second `up` re-runs every command,
which is the idempotency check), refresh, or anything for other providers."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi.runtime.mocks import MockMonitor

from components.config import parse_config
from components.platform import deploy
from components.topology import build_topology
from tests.harness import unwrap

SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15"]


@dataclass
class Executed:
    type: str
    name: str
    command: str
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Replay:
    stack: str
    raw_config: dict
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dockyard-replay-")))
    executed: list[Executed] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    # resources of the last up that have a delete, in registration order: name -> how to delete
    deletable: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the mock provider ------------------------------------------------------------------

    def _key_file(self, private_key: str) -> str:
        path = self.workdir / f"key-{abs(hash(private_key))}"
        if not path.exists():
            path.write_text(private_key)
            path.chmod(0o600)
        return str(path)

    def _log(self, name: str, text: str) -> None:
        for line in text.splitlines():
            print(f"    {name}: {line}", file=sys.stderr, flush=True)

    def _run(self, typ: str, name: str, argv: list[str], stdin: str | None, command: str,
             cwd: str | None = None) -> tuple[str, str]:
        print(f"  + {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        result = subprocess.run(argv, input=stdin, text=True, capture_output=True, cwd=cwd)
        seconds = time.monotonic() - start
        self._log(name, result.stderr)
        with self.lock:
            self.executed.append(Executed(typ, name, command, result.stdout, result.stderr, seconds))
        if result.returncode != 0:
            raise RuntimeError(f"{name} failed with exit code {result.returncode}: {result.stderr[-2000:]}")
        print(f"  = {name} ({seconds:.0f} s)", file=sys.stderr, flush=True)
        return result.stdout, result.stderr

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs, _ = unwrap(dict(args.inputs))
        if args.typ == "tls:index/privateKey:PrivateKey":
            path = self.workdir / f"generated-{args.name}"
            if not path.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", args.name, "-f", str(path)],
                               check=True)
            inputs["privateKeyOpenssh"] = path.read_text()
            inputs["publicKeyOpenssh"] = Path(f"{path}.pub").read_text()
        elif args.typ == "command:local:Command":
            stdout, stderr = self._run(args.typ, args.name, ["sh", "-c", inputs["create"]], inputs.get("stdin"),
                                       inputs["create"], inputs.get("dir"))
            inputs.update(stdout=stdout.rstrip("\n"), stderr=stderr.rstrip("\n"))
            if inputs.get("delete"):
                with self.lock:
                    self.deletable[args.name] = ["sh", "-c", inputs["delete"]], inputs.get("dir")
        elif args.typ == "command:remote:Command":
            argv = self._ssh_argv(inputs["connection"], inputs["create"])
            stdout, stderr = self._run(args.typ, args.name, argv, inputs.get("stdin"), inputs["create"])
            inputs.update(stdout=stdout.rstrip("\n"), stderr=stderr.rstrip("\n"))
            if inputs.get("delete"):
                with self.lock:
                    self.deletable[args.name] = self._ssh_argv(inputs["connection"], inputs["delete"]), None
        elif args.typ == "command:remote:CopyToRemote":
            target = inputs["remotePath"]
            command = f"cat > {shlex.quote(target)}.part && mv {shlex.quote(target)}.part {shlex.quote(target)}"
            with open(inputs["source"].path, "rb") as source:
                print(f"  + {args.name}", file=sys.stderr, flush=True)
                subprocess.run(self._ssh_argv(inputs["connection"], command), stdin=source, check=True)
        return f"{args.name}-id", inputs

    def _ssh_argv(self, conn: dict, command: str) -> list[str]:
        argv = ["ssh", *SSH_OPTIONS, "-i", self._key_file(conn["privateKey"])]
        if conn.get("proxy"):
            proxy = conn["proxy"]
            jump = (f"ssh {' '.join(SSH_OPTIONS)} -i {self._key_file(proxy['privateKey'])} -W %h:%p "
                    f"{proxy.get('user', 'root')}@{proxy['host']}")
            argv += ["-o", f"ProxyCommand={jump}"]
        return argv + [f"{conn.get('user', 'root')}@{conn['host']}", command]

    def call(self, args):
        raise RuntimeError(f"unexpected invoke {args.token}")

    # -- lifecycle --------------------------------------------------------------------------

    def up(self) -> dict:
        """One `pulumi up` of the stack, executed for real. Returns the stack outputs."""
        config = parse_config(self.stack, self.raw_config, file_exists=os.path.isfile)
        previous, self.deletable = self.deletable, {}
        topology = build_topology(config.tier, config.workers, config.managers,
                                  config.nfs.export_root, config.nfs.mount_root)
        outer = self

        class _Mocks(pulumi.runtime.Mocks):
            def new_resource(self, args):
                return outer.new_resource(args)

            def call(self, args):
                return outer.call(args)

        mocks = _Mocks()
        pulumi.runtime.set_mocks(mocks, project="dockyard", stack=self.stack, preview=False,
                                 monitor=MockMonitor(mocks))
        names = ("master_address", "manager_addresses", "worker_addresses", "swarm_manager_endpoint",
                 "nfs_exports", "ssh_config")
        outputs: dict = {}

        @pulumi.runtime.test
        def program():
            cluster = deploy(config, topology, None)
            values = [getattr(cluster, n) for n in names]
            return pulumi.Output.all(*values).apply(lambda vs: outputs.update(zip(names, vs)))

        program()
        self.outputs = outputs
        # what the program no longer declares is deleted, newest first, as the engine does
        for name in reversed([n for n in previous if n not in self.deletable]):
            argv, cwd = previous[name]
            self._run("delete", f"{name} (delete)", argv, None, argv[-1], cwd=cwd)
        return outputs

    def destroy(self) -> None:
        """Delete everything that has a delete, newest first (as the engine does)."""
        for name in reversed(list(self.deletable)):
            argv, cwd = self.deletable[name]
            self._run("delete", f"{name} (delete)", argv, None, argv[-1], cwd=cwd)
        self.deletable = {}

    def key_file(self) -> str:
        generated = sorted(self.workdir.glob("generated-*"))
        generated = [g for g in generated if not g.name.endswith(".pub")]
        return str(generated[0])

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["ssh", *SSH_OPTIONS, "-i", self.key_file(), f"root@{host}", command]
        result = subprocess.run(argv, text=True, capture_output=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {host} {shlex.quote(command)}: {result.stderr}")
        return result
