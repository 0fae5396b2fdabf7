"""A stand-in for the Pulumi engine, for the one thing it cannot do on machines where the
engine's plugins cannot be built: run the program's commands for real.

It runs the dockyard program on the Pulumi SDK's mock monitor, and the mock *executes*
each `command:local:Command` (with sh, in its `dir`, with its `environment` added to this
process's, and `stdin` on stdin, for create and delete alike) and `command:remote:Command` (with
ssh, `create` as the remote command line and `stdin` on stdin, through `proxy` as a jump
host when set). For the other providers it does what their resources would:
- tls: SSH keys with ssh-keygen; ECDSA keys, the CA, CSRs and signed certificates with
  the `cryptography` package;
- random: passwords from `secrets`, their bcrypt hash with `bcrypt`;
- docker: the provider's `host` and `sshOpts` are used as the docker CLI would (ssh to the
  host, run `docker` there); RemoteImage inspects or pulls, Network creates, Container is
  `docker run` with the resource's ports, volumes, env (sent as an env file on stdin, never
  on a command line), labels, network and health check.
Generated keys, certificates and passwords are kept per resource name, so a second `up`
sees the same values, as the engine's state would give.

The SDK registers a resource only once the resources it depends on are registered, so
commands run in the program's dependency order, in parallel where the program allows it.
`destroy()` runs the deletes in reverse order.

What it does not do: diff against a previous state (a second `up` re-runs every command
and recreates every container, which is the idempotency check), refresh, or the
DigitalOcean provider."""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shlex
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
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
    # docker providers by id: their host and ssh options
    docker_hosts: dict = field(default_factory=dict)
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

    def _run(self, typ: str, name: str, argv: list[str], stdin: str | None = None, command: str = "",
             cwd: str | None = None, env: dict | None = None) -> tuple[str, str]:
        print(f"  + {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        result = subprocess.run(argv, input=stdin, text=True, capture_output=True, cwd=cwd,
                                env={**os.environ, **env} if env else None)
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
        if args.typ.startswith(("tls:", "random:")):
            inputs.update(self._generated(args.typ, args.name, inputs))
        elif args.typ == "pulumi:providers:docker":
            with self.lock:
                self.docker_hosts[f"{args.name}-id"] = inputs
        elif args.typ.startswith("docker:"):
            inputs.update(self._docker(args.typ, args.name, inputs, args.provider))
        elif args.typ == "command:local:Command":
            how = dict(stdin=inputs.get("stdin"), cwd=inputs.get("dir"), env=inputs.get("environment"))
            stdout, stderr = self._run(args.typ, args.name, ["sh", "-c", inputs["create"]], command=inputs["create"],
                                       **how)
            inputs.update(stdout=stdout.rstrip("\n"), stderr=stderr.rstrip("\n"))
            if inputs.get("delete"):
                with self.lock:
                    self.deletable[args.name] = ["sh", "-c", inputs["delete"]], how
        elif args.typ == "command:remote:Command":
            argv = self._ssh_argv(inputs["connection"], inputs["create"])
            stdout, stderr = self._run(args.typ, args.name, argv, inputs.get("stdin"), inputs["create"])
            inputs.update(stdout=stdout.rstrip("\n"), stderr=stderr.rstrip("\n"))
            if inputs.get("delete"):
                with self.lock:
                    self.deletable[args.name] = self._ssh_argv(inputs["connection"], inputs["delete"]), {}
        elif args.typ == "command:remote:CopyToRemote":
            target = inputs["remotePath"]
            command = f"cat > {shlex.quote(target)}.part && mv {shlex.quote(target)}.part {shlex.quote(target)}"
            with open(inputs["source"].path, "rb") as source:
                print(f"  + {args.name}", file=sys.stderr, flush=True)
                subprocess.run(self._ssh_argv(inputs["connection"], command), stdin=source, check=True)
        return f"{args.name}-id", inputs

    # -- tls and random ---------------------------------------------------------------------

    def _generated(self, typ: str, name: str, inputs: dict) -> dict:
        kept = self.workdir / f"generated-{name}.json"
        if kept.exists():
            return json.loads(kept.read_text())
        if typ == "tls:index/privateKey:PrivateKey" and inputs.get("algorithm") == "ED25519":
            path = self.workdir / f"generated-{name}"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
            values = {"privateKeyOpenssh": path.read_text(), "publicKeyOpenssh": Path(f"{path}.pub").read_text()}
        elif typ == "tls:index/privateKey:PrivateKey":
            key = ec.generate_private_key(ec.SECP256R1())
            values = {"privateKeyPem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()).decode()}
        elif typ == "tls:index/selfSignedCert:SelfSignedCert":
            key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), None)
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, inputs["subject"]["commonName"])])
            cert = (self._certificate(subject, subject, key.public_key(), inputs["validityPeriodHours"])
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .sign(key, hashes.SHA256()))
            values = {"certPem": cert.public_bytes(serialization.Encoding.PEM).decode()}
        elif typ == "tls:index/certRequest:CertRequest":
            key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), None)
            names = [x509.DNSName(d) for d in inputs.get("dnsNames", [])]
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses", [])]
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, inputs["subject"]["commonName"])]))
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .sign(key, hashes.SHA256()))
            values = {"certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}
        elif typ == "tls:index/locallySignedCert:LocallySignedCert":
            csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
            ca = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
            ca_key = serialization.load_pem_private_key(inputs["caPrivateKeyPem"].encode(), None)
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            cert = (self._certificate(csr.subject, ca.subject, csr.public_key(), inputs["validityPeriodHours"])
                    .add_extension(sans, critical=False)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                    .sign(ca_key, hashes.SHA256()))
            values = {"certPem": cert.public_bytes(serialization.Encoding.PEM).decode()}
        elif typ == "random:index/randomPassword:RandomPassword":
            alphabet = string.ascii_letters + string.digits
            result = "".join(secrets.choice(alphabet) for _ in range(int(inputs["length"])))
            values = {"result": result, "bcryptHash": bcrypt.hashpw(result.encode(), bcrypt.gensalt()).decode()}
        else:
            raise RuntimeError(f"the replay cannot make a {typ}")
        kept.write_text(json.dumps(values))
        kept.chmod(0o600)
        return values

    @staticmethod
    def _certificate(subject, issuer, public_key, hours) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=int(hours))))

    # -- docker -------------------------------------------------------------------------------

    def _docker_argv(self, provider_ref: str, command: str) -> list[str]:
        provider = self.docker_hosts[provider_ref.rsplit("::", 1)[-1]]
        opts = provider.get("sshOpts") or []
        if isinstance(opts, str):
            opts = json.loads(opts)
        return ["ssh", *opts, provider["host"].removeprefix("ssh://"), command]

    def _docker(self, typ: str, name: str, inputs: dict, provider: str) -> dict:
        if typ == "docker:index/remoteImage:RemoteImage":
            image = shlex.quote(inputs["name"])
            stdout, _ = self._run(typ, name, self._docker_argv(
                provider, f"docker image inspect -f '{{{{.Id}}}}' {image} 2>/dev/null || "
                          f"{{ docker pull -q {image} >&2 && docker image inspect -f '{{{{.Id}}}}' {image}; }}"),
                None, f"image {inputs['name']}")
            return {"imageId": stdout.strip(), "repoDigest": ""}
        if typ == "docker:index/network:Network":
            network = shlex.quote(inputs["name"])
            self._run(typ, name, self._docker_argv(
                provider, f"docker network inspect {network} >/dev/null 2>&1 || docker network create {network}"),
                None, f"network {inputs['name']}")
            return {}
        if typ == "docker:index/container:Container":
            container = inputs["name"]
            run = ["docker", "run", "-d", "--name", container, "--restart", inputs.get("restart", "no"),
                   "--env-file", "/dev/stdin"]
            for network in inputs.get("networksAdvanced", []):
                run += ["--network", network["name"]] + [f"--network-alias={a}" for a in network.get("aliases", [])]
            for port in inputs.get("ports", []):  # numbers arrive as floats from protobuf
                run += ["-p", f"{int(port.get('external', port['internal']))}:{int(port['internal'])}"]
            for volume in inputs.get("volumes", []):
                run += ["-v", f"{volume['hostPath']}:{volume['containerPath']}" + (":ro" if volume.get("readOnly") else "")]
            for label in inputs.get("labels", []):
                run += ["--label", f"{label['label']}={label['value']}"]
            health = inputs.get("healthcheck")
            if health:
                run += ["--health-cmd", shlex.join(health["tests"][1:])]
                run += [f"--health-{k.replace('startPeriod', 'start-period')}="
                        f"{int(health[k]) if isinstance(health[k], float) else health[k]}"
                        for k in ("interval", "timeout", "retries", "startPeriod") if k in health]
            run += [inputs["image"], *inputs.get("command", [])]
            remove = f"docker rm -f {shlex.quote(container)} >/dev/null 2>&1 || true"
            env_file = "".join(f"{e}\n" for e in inputs.get("envs", []))
            self._run(typ, name, self._docker_argv(provider, f"{remove}; {shlex.join(run)}"), env_file,
                      f"docker run {container}")
            if inputs.get("mustRun"):
                self._run(typ, f"{name} (running)", self._docker_argv(
                    provider, f"sleep 3; docker inspect -f '{{{{.State.Running}}}}' {shlex.quote(container)} | grep -qx true"
                              f" || {{ docker logs --tail 20 {shlex.quote(container)}; exit 1; }}"),
                    None, f"running {container}")
            with self.lock:
                self.deletable[name] = self._docker_argv(provider, remove), {}
            return {}
        raise RuntimeError(f"the replay cannot make a {typ}")

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
        outputs: dict = {}

        @pulumi.runtime.test
        def program():
            declared = deploy(config, topology, None).outputs()
            names = list(declared)
            return pulumi.Output.all(*declared.values()).apply(lambda vs: outputs.update(zip(names, vs)))

        program()
        self.outputs = outputs
        # what the program no longer declares is deleted, newest first, as the engine does
        for name in reversed([n for n in previous if n not in self.deletable]):
            argv, how = previous[name]
            self._run("delete", f"{name} (delete)", argv, command=argv[-1], **how)
        return outputs

    def destroy(self) -> None:
        """Delete everything that has a delete, newest first (as the engine does)."""
        for name in reversed(list(self.deletable)):
            argv, how = self.deletable[name]
            self._run("delete", f"{name} (delete)", argv, command=argv[-1], **how)
        self.deletable = {}

    def key_file(self) -> str:
        (key,) = [g for g in self.workdir.glob("generated-*") if g.suffix == ""]
        return str(key)

    def ssh(self, host: str, command: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        argv = ["ssh", *SSH_OPTIONS, "-i", self.key_file(), f"root@{host}", command]
        result = subprocess.run(argv, text=True, capture_output=True, timeout=300, input=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {host} {shlex.quote(command)}: {result.stderr}")
        return result
