"""Run the dockyard program on Pulumi mocks and record what it registers: every resource's
inputs (with which of them are secret), its dependencies and its options."""
from __future__ import annotations

import base64
import io
import hashlib
import ipaddress
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime.mocks import MockMonitor

from components.config import DEFAULT_DATA_PATH_CIDR, parse_config
from components.datapath import DATA_PATH_OUTPUT
from components.program import StackSettings
from components.program import run as run_the_program
from components.quorum import MANAGER_COUNT_OUTPUT
from components.shell import script_text

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"
UNLOCK_KEY = "SWMKEY-1-test-unlock-key"
TEST_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-private-key\n-----END OPENSSH PRIVATE KEY-----\n"
TEST_BACKUP_PASSWORD = "test-backup-password-kept-by-the-stack"
TEST_BACKUP_SECRET_KEY = "test-spaces-secret-key"
WORKER_TOKEN = "SWMTKN-1-testworkertoken"
MANAGER_TOKEN = "SWMTKN-1-testmanagertoken"
GENERATED_PREFIX = "generated-secret-"  # what the mocked pulumi-random passwords start with
OAUTH_SECRET = "gto_testoauthclientsecret"
GITEA_SECRET_KEY = "0123456789abcdef-gitea-secret-key-from-the-volume"
DRONE_DATABASE_SECRET = "0123456789abcdef0123456789abcdef"


def unwrap(value: Any) -> tuple[Any, bool]:
    """Plain value of a serialized property and whether any part of it is secret."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            inner, _ = unwrap(value.get("value"))
            return inner, True
        secret = False
        out = {}
        for k, v in value.items():
            out[k], s = unwrap(v)
            secret = secret or s
        return out, secret
    if isinstance(value, list):
        items = [unwrap(v) for v in value]
        return [i for i, _ in items], any(s for _, s in items)
    return value, False


def script_command(name: str, *args: str, bash: str = "bash") -> list[str]:
    """The argv that runs components/scripts/<name> as a host gets it: the text every sender
    sends (the library in front, components.shell.script_text), as `bash -c TEXT NAME ARGS`,
    the way the scripts that run on this machine are run (preload.py, manager.py)."""
    return [bash, "-c", script_text(name), name, *args]


def docker_archive(path: Path, image_id: str = "a" * 64) -> Path:
    """The smallest docker-archive the program reads: a manifest.json naming the image config."""
    manifest = json.dumps([{"Config": f"{image_id}.json", "RepoTags": ["web:1"], "Layers": []}]).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return path


TEST_HOST_KEY_PREFIX = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5-host-key-of-"


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    inputs: dict
    secret_inputs: set[str]
    dependencies: list[str]
    additional_secret_outputs: list[str]
    retain_on_delete: bool
    protect: bool
    import_id: str = ""
    ignore_changes: tuple[str, ...] = ()
    provider: str = ""  # "URN::ID" of the provider it was given, if any
    deleted_with: str = ""  # URN of the resource whose deletion takes this one with it
    delete_before_replace: bool = False
    # the alias specs it was given: {"name", "type", "parentUrn" | "noParent", ...} as the engine gets them
    aliases: list[dict] = field(default_factory=list)


class Mocks(pulumi.runtime.Mocks):
    def __init__(self, vpc_cidr: str, previous_managers: int | None = None, legacy_droplets: tuple[str, ...] = (),
                 previous_data_path: str | None = DEFAULT_DATA_PATH_CIDR, previous_known_hosts: str | None = None):
        self.network = ipaddress.ip_network(vpc_cidr)
        self.counter = 0
        # droplets made before the stack made host keys: the provider holds no user data for them
        self.legacy_droplets = legacy_droplets
        # the manager count the stack's last update exported; None: a new stack
        self.previous_managers = previous_managers
        # where that last update's overlay traffic went (None: a stack made before it said)
        self.previous_data_path = previous_data_path
        # the known_hosts lines that last update exported (None: a stack made before it did)
        self.previous_known_hosts = previous_known_hosts

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ == "pulumi:pulumi:StackReference":  # the manager guard reads its own stack
            last = {} if self.previous_managers is None else {MANAGER_COUNT_OUTPUT: self.previous_managers}
            if last and self.previous_data_path is not None:
                last[DATA_PATH_OUTPUT] = self.previous_data_path
            if last and self.previous_known_hosts is not None:
                last["known_hosts"] = self.previous_known_hosts
            return args.name, {"name": args.inputs["name"], "outputs": last, "secretOutputNames": []}
        outputs = dict(args.inputs)
        self.counter += 1
        n = self.counter
        if args.typ == "digitalocean:index/droplet:Droplet":
            # as the provider: a droplet's user data is kept as its SHA-1
            if "userData" in outputs and args.name not in self.legacy_droplets:
                outputs["userData"] = hashlib.sha1(unwrap(outputs["userData"])[0].encode()).hexdigest()
            else:
                outputs.pop("userData", None)
            outputs["ipv4Address"] = f"198.51.100.{n}"
            outputs["ipv4AddressPrivate"] = str(self.network.network_address + n)
            outputs["dropletUrn"] = f"do:droplet:{n}"
            return str(1000 + n), outputs
        if args.typ == "digitalocean:index/volume:Volume":
            outputs["volumeUrn"] = f"do:volume:{n}"
        if args.typ == "digitalocean:index/reservedIp:ReservedIp":
            outputs["ipAddress"] = "203.0.113.10"
            outputs["reservedIpUrn"] = "do:floatingip:203.0.113.10"
        if args.typ == "digitalocean:index/sshKey:SshKey":
            outputs["fingerprint"] = "aa:bb:cc"
        if args.typ == "tls:index/privateKey:PrivateKey":
            outputs["privateKeyOpenssh"] = TEST_KEY
            outputs["privateKeyPem"] = f"-----BEGIN PRIVATE KEY-----\n{args.name}\n-----END PRIVATE KEY-----\n"
            outputs["publicKeyOpenssh"] = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5{args.name.replace('-', '')}\n"
        if args.typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            outputs["certPem"] = f"-----BEGIN CERTIFICATE-----\n{args.name}\n-----END CERTIFICATE-----\n"
        if args.typ == "tls:index/certRequest:CertRequest":
            outputs["certRequestPem"] = f"-----BEGIN CERTIFICATE REQUEST-----\n{args.name}\n-----END CERTIFICATE REQUEST-----\n"
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"{GENERATED_PREFIX}{args.name}"
            outputs["bcryptHash"] = f"$2a$10$hashof{args.name}"
        if args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = f"sha256:{n:064x}"
            outputs["repoDigest"] = f"{outputs['name']}@sha256:{n:064x}"
        if args.typ == "command:local:Command":
            create, _ = unwrap(args.inputs.get("create", ""))
            # what `localcloud create` prints: the VM, and the SSH host key it made
            outputs["stdout"] = (json.dumps({"name": args.name, "hostKey": f"{TEST_HOST_KEY_PREFIX}{args.name} root@vm"})
                                 if "localcloud create" in create else "")
            outputs["stderr"] = ""
        if args.typ == "command:remote:Command":
            stdin, _ = unwrap(args.inputs.get("stdin", ""))
            if "DOCKYARD_SCRIPT='swarm-unlock-key'" in stdin:
                outputs["stdout"] = f"{UNLOCK_KEY}\n"
            elif "DOCKYARD_SCRIPT='swarm-datapath'" in stdin and "ACTION=key" in unwrap(args.inputs["create"])[0]:
                outputs["stdout"] = f"{data_path_public_key(args.name)}\n"
            elif "swarm-tokens.sh" in stdin:
                outputs["stdout"] = f"{WORKER_TOKEN}\n{MANAGER_TOKEN}\n"
            elif "gitea-setup.sh" in stdin:
                outputs["stdout"] = f"client_id=test-client-id\nclient_secret={OAUTH_SECRET}\n"
            elif "ci-secrets.sh" in stdin:
                outputs["stdout"] = f"GITEA_SECRET_KEY={GITEA_SECRET_KEY}\nDRONE_DATABASE_SECRET={DRONE_DATABASE_SECRET}\n"
            elif "swarm-init.sh" in stdin or "swarm-join.sh" in stdin:
                outputs["stdout"] = f"node-{args.name}\n"
            else:
                outputs["stdout"] = ""
            outputs["stderr"] = ""
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        raise AssertionError(f"the program called {args.token}: nothing may be looked up at preview time")


def data_path_public_key(resource_name: str) -> str:
    """The WireGuard public key the mocks' `swarm-datapath.sh key` run prints."""
    return base64.b64encode(hashlib.sha256(resource_name.encode()).digest()).decode()


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        raw = json_format.MessageToDict(request.object)
        inputs, secret_inputs = {}, set()
        for key, value in raw.items():
            inputs[key], secret = unwrap(value)
            if secret:
                secret_inputs.add(key)
        self.registrations.append(Registration(
            type=request.type, name=request.name, urn=response.urn, parent=request.parent,
            inputs=inputs, secret_inputs=secret_inputs, dependencies=list(request.dependencies),
            additional_secret_outputs=list(request.additionalSecretOutputs),
            retain_on_delete=bool(request.retainOnDelete), protect=bool(request.protect),
            import_id=request.importId, ignore_changes=tuple(request.ignoreChanges), provider=request.provider,
            deleted_with=request.deletedWith, delete_before_replace=bool(request.deleteBeforeReplace),
            aliases=[json_format.MessageToDict(alias).get("spec", {}) for alias in request.aliases],
        ))
        return response


@dataclass
class Run:
    registrations: list[Registration]
    outputs: dict = field(default_factory=dict)
    cluster: object = None
    deployment: object = None
    # the key the program resolved for the hosts (components.program.users_private_key)
    private_key: object = None

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == typ]

    def named(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        assert len(matches) == 1, f"{name}: {len(matches)} resources"
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.registrations if r.urn == urn)

    def depends_on(self, resource: Registration, other: Registration) -> bool:
        """True if `resource` waits for `other`, directly or through its dependencies."""
        seen, todo = set(), list(resource.dependencies)
        while todo:
            urn = todo.pop()
            if urn == other.urn:
                return True
            if urn in seen:
                continue
            seen.add(urn)
            dep = next((r for r in self.registrations if r.urn == urn), None)
            if dep is None:  # a read, not a registration (the stack's reference to itself)
                continue
            todo.extend(dep.dependencies)
            # depending on a component means depending on its children
            todo.extend(r.urn for r in self.registrations if r.parent == urn)
        return False

    def commands(self, script: str) -> list[Registration]:
        return [r for r in self.of_type("command:remote:Command") if f"{script}@" in json.dumps(r.inputs.get("triggers"))]


BASE_CONFIG = {
    "cloud": "digitalocean",
    "region": "fra1",
    "adminCidrs": ["203.0.113.0/24"],
    "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey dockyard@test",
    "sshPrivateKey": True,
}



# What the program writes on the operator's machine (the droplets' known_hosts) goes here in
# tests, never into the real ~/.local/state/dockyard of whoever runs them
TEST_STATE_DIR = Path(tempfile.mkdtemp(prefix="dockyard-test-state-"))


def run_program(stack: str = "test", previous_managers: int | None = None, legacy_droplets: tuple[str, ...] = (),
                previous_data_path: str | None = DEFAULT_DATA_PATH_CIDR, state_dir: Path = TEST_STATE_DIR,
                previous_known_hosts: str | None = None, preview: bool = False, **overrides) -> Run:
    """The program of components/program.py on mocks, with BASE_CONFIG and `overrides` as the
    stack's `dockyard:*` values (an override of None removes the key). The stack's
    dockyard:sshPrivateKey is TEST_KEY, a secret; `previous_managers` is the manager count
    of the stack's last update, `previous_data_path` the data path it exported and
    `previous_known_hosts` its known_hosts output (both only with `previous_managers`). Files
    the program writes on the operator's machine go under `state_dir`. `preview`: a dry run,
    where what a mock leaves out of a resource's outputs is unknown."""
    raw = {k: v for k, v in {**BASE_CONFIG, **overrides}.items() if v is not None}
    config = parse_config(stack, raw)  # a bad configuration fails here, before the mocks
    mocks = Mocks(config.vpc_cidr, previous_managers, legacy_droplets, previous_data_path, previous_known_hosts)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="dockyard", stack=stack, preview=preview, monitor=monitor)
    run = Run(monitor.registrations)

    @pulumi.runtime.test
    def program():
        key = pulumi.Output.secret(TEST_KEY) if raw.get("sshPrivateKey") else None
        result = run_the_program(StackSettings(
            stack, raw, key,
            backup_password=pulumi.Output.secret(TEST_BACKUP_PASSWORD) if raw.get("backupPassword") else None,
            backup_secret_access_key=pulumi.Output.secret(TEST_BACKUP_SECRET_KEY)
            if raw.get("backupSecretAccessKey") else None))
        run.cluster = result.deployment.cluster
        run.deployment = result.deployment
        run.private_key = result.private_key
        names = list(result.exports)
        return pulumi.Output.all(*result.exports.values()).apply(
            lambda values: run.outputs.update(zip(names, values)))

    saved = os.environ.get("DOCKYARD_STATE_DIR")
    os.environ["DOCKYARD_STATE_DIR"] = str(state_dir)
    try:
        program()
    finally:
        if saved is None:
            del os.environ["DOCKYARD_STATE_DIR"]
        else:
            os.environ["DOCKYARD_STATE_DIR"] = saved
    return run
