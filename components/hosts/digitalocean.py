"""DigitalOcean hosts: one VPC per stack, a droplet per host, block volumes for stateful
hosts, a cloud firewall per role, a reserved IP for the master and a project that groups
it all. Nothing here looks anything up at preview time.

Each droplet's SSH host key is made by the stack (pulumi-tls) and installed by cloud-init
before sshd first starts, so every connection checks it, the first one included."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_digitalocean as do
import pulumi_tls as tls
from pulumi_command import local, remote

from ..config import DockyardConfig
from ..topology import HostSpec, Role, Topology
from . import Host, Platform, policy_facts
from .firewall import inbound_rules

# Droplets take a minute or two to start sshd; the bootstrap retries this many times
# (each dial waits up to 15 s) before it gives up.
SSH_DIAL_ATTEMPTS = 40


def tag_name(text: str) -> str:
    """DigitalOcean tags allow letters, digits, '-', '_' and ':'."""
    return re.sub(r"[^A-Za-z0-9_:-]", "-", text)


def droplet_tags(stack: str, roles) -> list[str]:
    return ["dockyard", tag_name(f"dockyard-stack:{stack}")] + sorted(
        tag_name(f"dockyard-role:{r.value}") for r in roles
    )


def volume_device(volume_name: str) -> str:
    return f"/dev/disk/by-id/scsi-0DO_Volume_{volume_name}"


def host_key_user_data(private_key_openssh: str, public_key_openssh: str) -> str:
    """cloud-init's user data that makes a droplet's only SSH host key the stack's: the
    image's keys deleted, none generated. cloud-init writes it before sshd first starts."""
    indented = "\n".join(f"    {line}" for line in private_key_openssh.strip().splitlines())
    return ("#cloud-config\n"
            "ssh_deletekeys: true\n"
            "ssh_genkeytypes: []\n"
            "ssh_keys:\n"
            "  ed25519_private: |\n"
            f"{indented}\n"
            f"  ed25519_public: {public_key_openssh.strip()}\n")


def user_data_digest(private_key_openssh: str, public_key_openssh: str) -> str:
    """What the provider keeps of a droplet's user data: its SHA-1, in hex."""
    return hashlib.sha1(host_key_user_data(private_key_openssh, public_key_openssh).encode()).hexdigest()


def known_hosts_names(line: str) -> list[str]:
    """The host names of a known_hosts line (its first field, comma-separated; a hashed
    one as it is written, "|1|salt|hash"); none for a comment, a blank or a marked line
    (@cert-authority, @revoked)."""
    fields = line.split()
    if not fields or fields[0].startswith(("#", "@")):
        return []
    return fields[0].split(",")


def names_any(names: list[str], addresses: set[str]) -> bool:
    """True if a line's `names` cover one of `addresses`, in clear or hashed the way ssh
    hashes them (HashKnownHosts: base64 of HMAC-SHA1 of the name, keyed with the salt)."""
    for name in names:
        if name.startswith("|1|"):
            try:
                salt, digest = (base64.b64decode(part, validate=True) for part in name[3:].split("|"))
            except ValueError:
                continue
            if any(hmac.compare_digest(hmac.new(salt, a.encode(), hashlib.sha1).digest(), digest)
                   for a in addresses):
                return True
        elif name in addresses:
            return True
    return False


def merged_known_hosts(existing: str, lines: str) -> str:
    """`lines` (the stack's), then the lines of `existing` that cover none of their
    addresses: the ones ssh's accept-new added for droplets made before the stack made host
    keys, which have no line of the stack's. A line of `existing` for any of the same
    addresses (an old key of the address) goes."""
    ours = [line for line in lines.splitlines() if line.strip()]
    addresses = {name for line in ours for name in known_hosts_names(line)}
    kept = [line for line in existing.splitlines() if not names_any(known_hosts_names(line), addresses)]
    return "".join(f"{line}\n" for line in ours + kept)


def sync_known_hosts(path: Path, lines: str) -> str:
    """Merge `lines` into the file at `path` (merged_known_hosts), unless it holds them
    already; replaced whole, so an ssh reading it never sees half a file. Returns the path."""
    existing = path.read_text() if path.is_file() else None
    merged = merged_known_hosts(existing or "", lines)
    if merged != (existing if existing is not None else ""):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        new = path.with_name(f"{path.name}.{os.getpid()}.new")
        new.write_text(merged)
        new.replace(path)
    return str(path)


# The stack output of the droplets' known_hosts lines (components/deployment.py exports the
# platform's `known_hosts` under it), which the next run writes to the file first
KNOWN_HOSTS_OUTPUT = "known_hosts"


def known_hosts_path(stack: str) -> Path:
    """Where the operator's machine keeps the droplets' host keys for the system ssh (the
    docker provider, the memberships): per stack, beside the local VMs' state."""
    base = Path(os.environ.get("DOCKYARD_STATE_DIR", Path.home() / ".local" / "state" / "dockyard"))
    return base / "digitalocean" / stack / "known_hosts"


@dataclass
class DigitalOceanCloudArgs:
    config: DockyardConfig
    topology: Topology
    private_key: pulumi.Input[str]
    # the `known_hosts` the stack's last update exported (None in it: a new stack, or one
    # made before it did), from its own stack reference: known in a preview too
    previous_known_hosts: Optional[pulumi.Output[Optional[str]]] = None


class DigitalOceanCloud(pulumi.ComponentResource):
    """The machines of a topology on DigitalOcean."""

    platform: Platform

    def __init__(self, name: str, args: DigitalOceanCloudArgs, opts: Optional[pulumi.ResourceOptions] = None):
        cfg, topo = args.config, args.topology
        # one value for the volumes' retainOnDelete and for what the policy pack is told of it
        # (the analyzer protocol does not carry the option itself)
        self._retain_volumes = not cfg.disposable
        declared = policy_facts(cfg, admin_cidrs=list(cfg.admin_cidrs), retain_volumes=self._retain_volumes)
        super().__init__("dockyard:digitalocean:Cloud", name, declared, opts)
        self._cloud_name, self._config, self._topology = name, cfg, topo
        self._child = pulumi.ResourceOptions(parent=self)
        self._prefix = f"dockyard-{cfg.stack}"

        self.vpc = do.Vpc(f"{name}-vpc", name=self._prefix, region=cfg.region, ip_range=cfg.vpc_cidr,
                          description=f"dockyard stack {cfg.stack}", opts=self._child)
        self._machines()
        master = topo.master
        self.reserved_ip = do.ReservedIp(f"{name}-{master.name}-ip", region=cfg.region,
                                         droplet_id=self.droplets[master.name].id.apply(int), opts=self._child)
        self._firewalls()
        self.project = do.Project(
            f"{name}-project",
            name=self._prefix,
            description=f"dockyard {cfg.tier} tier, stack {cfg.stack}",
            purpose="Service or API",
            environment="Development" if cfg.disposable else "Production",
            resources=[d.droplet_urn for d in self.droplets.values()]
            + [v.volume_urn for v in self.volumes.values()]
            + [self.reserved_ip.reserved_ip_urn],
            opts=self._child,
        )
        self.known_hosts = self._known_hosts()
        self.known_hosts_synced = self._sync_known_hosts(args.previous_known_hosts)
        # accept-new: a droplet made before the stack made host keys has no line, and is
        # accepted unseen as before; one with a line is refused any other key
        self.platform = Platform(hosts=self._hosts(args.private_key), private_cidr=cfg.vpc_cidr,
                                 master_address=self.reserved_ip.ip_address, identity_file=cfg.ssh.private_key_path,
                                 known_hosts_file=str(known_hosts_path(cfg.stack)), known_hosts_accept_new=True,
                                 known_hosts=self.known_hosts_lines, known_hosts_synced=self.known_hosts_synced,
                                 ssh_files_written=[self.known_hosts])

        self.register_outputs({
            **declared,
            "vpc_id": self.vpc.id,
            "master_address": self.reserved_ip.ip_address,
            "droplet_ids": {n: d.id for n, d in self.droplets.items()},
        })

    def _ssh_key_ref(self) -> pulumi.Input[str]:
        """The key droplets are made with: the one dockyard uploads, or one already there."""
        cfg = self._config
        if cfg.ssh.public_key:
            key = do.SshKey(f"{self._cloud_name}-ssh-key", name=self._prefix, public_key=cfg.ssh.public_key,
                            opts=self._child)
            return key.fingerprint
        return cfg.ssh.key_id

    def _machines(self) -> None:
        """A droplet per host, and the data volume of a host that keeps data, attached."""
        name, cfg, prefix = self._cloud_name, self._config, self._prefix
        ssh_key_ref = self._ssh_key_ref()
        self.droplets: dict[str, do.Droplet] = {}
        self.host_keys: dict[str, tls.PrivateKey] = {}
        self.volumes: dict[str, do.Volume] = {}
        self.attachments: dict[str, do.VolumeAttachment] = {}
        for spec in self._topology.hosts:
            host_key = tls.PrivateKey(f"{name}-{spec.name}-host-key", algorithm="ED25519", opts=self._child)
            self.host_keys[spec.name] = host_key
            droplet = do.Droplet(
                f"{name}-{spec.name}",
                name=f"{prefix}-{spec.name}",
                image=cfg.image,
                region=cfg.region,
                size=cfg.size_of(spec.primary_role),
                vpc_uuid=self.vpc.id,
                monitoring=True,
                ipv6=False,
                ssh_keys=[ssh_key_ref],
                tags=droplet_tags(cfg.stack, spec.roles),
                # a secret: it holds the host's private key
                user_data=pulumi.Output.secret(pulumi.Output.all(
                    host_key.private_key_openssh, host_key.public_key_openssh).apply(
                    lambda keys: host_key_user_data(*keys))),
                # A new image, key or user data would replace the droplet, and a replaced first
                # manager starts a new swarm: they apply to new droplets only (a droplet made
                # before the stack made host keys keeps its own, accepted unseen). To rebuild
                # one on purpose: `pulumi up --replace <its URN>`.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["image", "sshKeys", "userData"]),
            )
            self.droplets[spec.name] = droplet
            if spec.volume:
                volume_name = f"{prefix}-{spec.name}-{spec.volume}"
                volume = do.Volume(
                    f"{name}-{spec.name}-{spec.volume}",
                    name=volume_name,
                    region=cfg.region,
                    size=cfg.volume_gb[spec.volume],
                    initial_filesystem_type="ext4",
                    description=f"dockyard {cfg.stack}: {spec.volume} data of host {spec.name}",
                    # Stateful data outlives `pulumi destroy` unless the stack is disposable;
                    # a recreated stack adopts the kept volume instead of making a blank one.
                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=self._retain_volumes,
                                                import_=cfg.kept_volumes.get(spec.name)),
                )
                self.volumes[spec.name] = volume
                self.attachments[spec.name] = do.VolumeAttachment(
                    f"{name}-{spec.name}-{spec.volume}-attachment",
                    droplet_id=droplet.id.apply(int),
                    volume_id=volume.id,
                    opts=self._child,
                )

    def _firewalls(self) -> None:
        """A cloud firewall per role, with the rules of hosts/firewall.py."""
        cfg, topo = self._config, self._topology
        master_droplet = self.droplets[topo.master.name]
        self.firewalls: dict[Role, do.Firewall] = {}
        for role in Role:
            members = [self.droplets[h.name] for h in topo.with_role(role)]
            if not members:
                continue
            self.firewalls[role] = do.Firewall(
                f"{self._cloud_name}-{role.value}-firewall",
                name=f"{self._prefix}-{role.value}",
                droplet_ids=[d.id.apply(int) for d in members],
                inbound_rules=[
                    do.FirewallInboundRuleArgs(
                        protocol=rule.protocol,
                        port_range=rule.port_range or None,
                        source_addresses=list(rule.source_addresses) or None,
                        source_droplet_ids=[master_droplet.id.apply(int)] if rule.from_master else None,
                    )
                    for rule in inbound_rules(role, cfg.vpc_cidr, cfg.admin_cidrs, cfg.public_ports, cfg.ci.services,
                                              cfg.platform.runs("ingress"), cfg.data_path_cidr is not None)
                ],
                outbound_rules=[
                    do.FirewallOutboundRuleArgs(protocol="tcp", port_range="1-65535",
                                                destination_addresses=["0.0.0.0/0", "::/0"]),
                    do.FirewallOutboundRuleArgs(protocol="udp", port_range="1-65535",
                                                destination_addresses=["0.0.0.0/0", "::/0"]),
                    do.FirewallOutboundRuleArgs(protocol="icmp", destination_addresses=["0.0.0.0/0", "::/0"]),
                ],
                opts=self._child,
            )

    def host_key(self, name: str) -> pulumi.Output[Optional[str]]:
        """The public host key droplet `name` was made with ("ssh-ed25519 AAAA..."); None for a
        droplet made before the stack made host keys. The provider keeps a droplet's user data
        as its SHA-1 (hex), so a droplet made with this key's user data has that digest; one
        made without any has none, and the SDK then hands back the program's own input, which
        is no digest. Not a secret: a key that is None must stay a plain null."""
        key = self.host_keys[name]
        return pulumi.Output.unsecret(pulumi.Output.all(
            self.droplets[name].user_data, key.private_key_openssh, key.public_key_openssh).apply(
            lambda values: values[2].strip() if values[0] == user_data_digest(values[1], values[2]) else None))

    def _connection(self, spec: HostSpec, private_key: pulumi.Input[str]) -> remote.ConnectionArgs:
        """How the bootstrap reaches a droplet: the master directly, the others through it;
        each checks the host key the droplet was made with."""
        droplet, user = self.droplets[spec.name], self._config.ssh.user
        common = dict(user=user, private_key=private_key,
                      dial_error_limit=SSH_DIAL_ATTEMPTS, per_dial_timeout=15)
        if spec.has(Role.MASTER):
            return remote.ConnectionArgs(host=droplet.ipv4_address, host_key=self.host_key(spec.name), **common)
        master = self._topology.master.name
        return remote.ConnectionArgs(
            host=droplet.ipv4_address_private,
            host_key=self.host_key(spec.name),
            proxy=remote.ProxyConnectionArgs(host=self.droplets[master].ipv4_address, user=user,
                                             private_key=private_key, host_key=self.host_key(master),
                                             dial_error_limit=SSH_DIAL_ATTEMPTS, per_dial_timeout=15),
            **common,
        )

    def _known_hosts(self) -> local.Command:
        """The droplets' host keys in a known_hosts file on this machine, for the tools that
        run the system ssh: the master under its reserved and its own public address, every
        droplet under its private one."""
        path = known_hosts_path(self._config.stack)
        master = self._topology.master.name
        entries = []
        for spec in self._topology.hosts:
            droplet = self.droplets[spec.name]
            addresses = [droplet.ipv4_address_private]
            if spec.name == master:
                addresses += [self.reserved_ip.ip_address, droplet.ipv4_address]
            entries.append(pulumi.Output.all(self.host_key(spec.name), *addresses).apply(
                lambda values: f"{','.join(values[1:])} {values[0]}\n" if values[0] else ""))
        self.known_hosts_lines = pulumi.Output.all(*entries).apply("".join)
        new = shlex.quote(f"{path}.new")
        return local.Command(
            f"{self._cloud_name}-known-hosts",
            # replaced whole: an ssh reading it never sees half a file
            create=f"mkdir -p {shlex.quote(str(path.parent))} && cat > {new} && mv -f {new} {shlex.quote(str(path))}",
            # new droplets change it: `create` runs again and writes the whole file
            stdin=self.known_hosts_lines,
            delete=f"rm -f {shlex.quote(str(path))}",
            opts=self._child,
        )

    def _sync_known_hosts(self, previous: Optional[pulumi.Output[Optional[str]]]) -> Optional[pulumi.Output[str]]:
        """The file's path once this run has merged into it the lines the stack's last
        update exported. Not only the command writes the file (it runs where the droplets
        were made, when they change): on another machine, the stack's keys are checked from
        its first run on instead of being accepted unseen. The last output is known at the
        start of every run, a preview's too: what reads the file does not wait for droplets
        being made, nor becomes unknown in a preview that adds one. A new stack has no such
        output: nothing to write (the command writes the new droplets' lines)."""
        if previous is None:
            return None
        path = known_hosts_path(self._config.stack)

        def sync(lines: Optional[str]) -> str:
            if isinstance(lines, str) and lines.strip():
                return sync_known_hosts(path, lines)
            return str(path)
        return pulumi.Output.unsecret(previous).apply(sync)

    def _hosts(self, private_key: pulumi.Input[str]) -> dict[str, Host]:
        hosts: dict[str, Host] = {}
        for spec in self._topology.hosts:
            droplet = self.droplets[spec.name]
            provisioned: list[pulumi.Resource] = [droplet] + [self.firewalls[r] for r in spec.roles]
            device = None
            if spec.name in self.attachments:
                provisioned.append(self.attachments[spec.name])
                device = volume_device(f"{self._prefix}-{spec.name}-{spec.volume}")
            hosts[spec.name] = Host(
                spec=spec,
                private_ip=droplet.ipv4_address_private,
                connection=self._connection(spec, private_key),
                ssh_address=self.reserved_ip.ip_address if spec.has(Role.MASTER) else droplet.ipv4_address_private,
                data_device=device,
                provisioned=provisioned,
            )
        return hosts
