"""The platform on a set of hosts: the order in which the roles come up.

engine on every host -> master inventory and bastion
                     -> NFS exports -> NFS mounts (on every host that mounts them)
                     -> swarm init on the first manager -> join tokens (secret)
                        -> other managers join -> workers join -> node labels
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from .config import SSH_CONFIG_UNSAFE, SSH_USER, DockyardConfig
from .docker_host import DockerHost, DockerHostArgs
from .hosts import Platform
from .images import ImagePreload, ImagePreloadArgs
from .manager import ManagerAccess, SwarmManager, SwarmManagerArgs
from .master import Master, MasterArgs
from .nfs import NfsClient, NfsClientArgs, NfsServer, NfsServerArgs
from .topology import Role, Topology
from .worker import SwarmWorker, SwarmWorkerArgs


# For the memberships' ssh from the operator's machine: no prompt, and a bounded wait on a
# host that is gone or goes away.
BATCH_SSH_OPTIONS = ["BatchMode yes", "StrictHostKeyChecking no", "UserKnownHostsFile /dev/null",
                     "LogLevel ERROR", "ConnectTimeout 10", "ServerAliveInterval 10", "ServerAliveCountMax 3"]


def host_alias(stack: str, name: str) -> str:
    return f"dockyard-{stack}-{name}"


# ssh_config values that need no quoting, and what a host alias or an address may be
_SSH_WORD = re.compile(r"[A-Za-z0-9._/@:+~,=-]+")
_HOST_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]*")  # an IP address or a DNS name


def _refuse(what: str, value: str, rule: str) -> ValueError:
    return ValueError(f"{what} {value!r} cannot go in ssh_config: {rule}")


def _ssh_alias(value: str) -> str:
    if not _HOST_ALIAS.fullmatch(value):
        raise _refuse("host alias", value, "use letters, digits, '.', '_' or '-' (the stack and host names)")
    return value


def _ssh_address(value: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise _refuse("HostName", value, "it must be an IP address or a DNS name")
    return value


def _ssh_user(value: str) -> str:
    if not SSH_USER.fullmatch(value):
        raise _refuse("User", value, "set dockyard:sshUser to a POSIX user name such as root")
    return value


def _ssh_path(value: str) -> str:
    """A path as one ssh_config argument: '%' doubled (ssh expands %-tokens in paths), quoted
    when it holds a space; refused when it could end the line or the quoting."""
    if not value or SSH_CONFIG_UNSAFE.search(value):
        raise _refuse("IdentityFile", value,
                      "no line break, control character, '\"' or '\\' (dockyard:sshPrivateKeyPath)")
    value = value.replace("%", "%%")
    return value if _SSH_WORD.fullmatch(value.replace("%", "")) else f'"{value}"'


def _ssh_option(value: str) -> str:
    if SSH_CONFIG_UNSAFE.search(value):
        raise _refuse("option", value, "no line break, control character, '\"' or '\\'")
    return value


def ssh_config(stack: str, names: list[str], master: str, addresses: list[str], user: str,
               identity_file: Optional[str], options: Sequence[str] = ()) -> str:
    """An ssh_config snippet that reaches every host, the private ones through the master;
    `options` apply to all of them. Every value is checked (or quoted) so that none can end
    its line and add a directive; a value that cannot be written safely raises ValueError."""
    blocks = []
    for name, address in zip(names, addresses):
        lines = [f"Host {_ssh_alias(host_alias(stack, name))}", f"  HostName {_ssh_address(address)}",
                 f"  User {_ssh_user(user)}"]
        if identity_file:
            lines += [f"  IdentityFile {_ssh_path(identity_file)}", "  IdentitiesOnly yes"]
        if name != master:
            lines.append(f"  ProxyJump {_ssh_alias(host_alias(stack, master))}")
        blocks.append("\n".join(lines))
    if options:
        blocks.append("\n".join(["Host *"] + [f"  {_ssh_option(o)}" for o in options]))
    return "\n\n".join(blocks) + "\n"


@dataclass
class ClusterArgs:
    config: DockyardConfig
    topology: Topology
    platform: Platform


class Cluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: ClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:index:Cluster", name, None, opts)
        cfg, topo, hosts = args.config, args.topology, args.platform.hosts
        self.platform = args.platform
        child = pulumi.ResourceOptions(parent=self)
        addresses = {n: h.private_ip for n, h in hosts.items()}

        self.engines: dict[str, DockerHost] = {}
        for spec in topo.hosts:
            mount = {"nfs": cfg.nfs.export_root, "ci": "/srv/ci"}.get(spec.volume or "")
            # what owns the data on the volume: it must not start (and write to the root
            # disk) while the volume is missing
            owners = {"nfs": ("nfs-server",), "ci": ("docker",)}.get(spec.volume or "", ())
            self.engines[spec.name] = DockerHost(
                spec.name,
                DockerHostArgs(host=hosts[spec.name], docker_version=cfg.docker_version,
                               registry_mirrors=cfg.registry_mirrors, data_mount=mount, data_owners=owners),
                opts=child,
            )

        self.preloads: dict[str, ImagePreload] = {}
        if cfg.preload_images:
            for spec in topo.hosts:
                self.preloads[spec.name] = ImagePreload(
                    f"{spec.name}-images",
                    ImagePreloadArgs(host=hosts[spec.name], archives=cfg.preload_images,
                                     depends_on=[self.engines[spec.name].engine]),
                    opts=child,
                )

        def engine(name: str) -> list[pulumi.Resource]:
            return [self.engines[name].engine]

        master = topo.master
        self.master = Master(
            f"{master.name}-master",
            MasterArgs(host=hosts[master.name], hosts=[hosts[h.name] for h in topo.hosts],
                       public_address=args.platform.master_address, depends_on=engine(master.name)),
            opts=child,
        )

        exports = {e.name: e for e in topo.exports}
        # What serves each export; a replica server waits for the export it copies.
        export_ready: dict[str, list[pulumi.Resource]] = {}
        self.nfs_servers: dict[str, NfsServer] = {}
        for spec in topo.with_role(Role.NFS):
            own = [e for e in topo.exports if e.server == spec.name]
            server = NfsServer(
                f"{spec.name}-nfs",
                NfsServerArgs(host=hosts[spec.name], exports=own, addresses=addresses,
                              private_cidr=args.platform.private_cidr, all_exports=exports,
                              depends_on=engine(spec.name), export_ready=dict(export_ready)),
                opts=child,
            )
            self.nfs_servers[spec.name] = server
            export_ready.update({e.name: server.ready for e in own})

        self.nfs_clients: dict[str, NfsClient] = {}
        for spec in topo.hosts:
            mounts = topo.mounts_of(spec.name)
            if mounts:
                self.nfs_clients[spec.name] = NfsClient(
                    f"{spec.name}-nfs-client",
                    NfsClientArgs(host=hosts[spec.name], mounts=mounts, exports=exports, addresses=addresses,
                                  depends_on={m.export: engine(spec.name) + export_ready[m.export] for m in mounts}),
                    opts=child,
                )

        def labels(spec) -> dict[str, str]:
            result = {"dockyard.role": Role.MANAGER.value if spec.has(Role.MANAGER) else Role.WORKER.value}
            for m in topo.mounts_of(spec.name):
                result[f"dockyard.nfs.{m.export}"] = "rw" if m.writable else "ro"
            return result

        first, *others = topo.managers
        reach = [master.name] + [m.name for m in topo.managers if m.name != master.name]
        access = ManagerAccess(
            aliases=[host_alias(cfg.stack, m.name) for m in topo.managers],
            ssh_config=pulumi.Output.all(*[hosts[n].ssh_address for n in reach]).apply(
                lambda addrs: ssh_config(cfg.stack, reach, master.name, addrs, cfg.ssh.user,
                                         args.platform.identity_file,
                                         BATCH_SSH_OPTIONS)),
            ready=list(args.platform.identity_ready),
        )
        self.managers = [SwarmManager(f"{first.name}-manager",
                                      SwarmManagerArgs(host=hosts[first.name], labels=labels(first),
                                                       depends_on=engine(first.name), access=access),
                                      opts=child)]
        join = self.managers[0].join
        for spec in others:
            previous = self.managers[-1]
            self.managers.append(SwarmManager(
                f"{spec.name}-manager",
                SwarmManagerArgs(host=hosts[spec.name], labels=labels(spec), depends_on=engine(spec.name), join=join,
                                 membership_after=[previous.membership] if previous.membership else []),
                opts=child,
            ))
        self.workers = [
            SwarmWorker(f"{spec.name}-worker",
                        SwarmWorkerArgs(host=hosts[spec.name], join=join, labels=labels(spec),
                                        depends_on=engine(spec.name)),
                        opts=child)
            for spec in topo.workers
        ]

        self.master_address = self.master.address
        self.manager_addresses = pulumi.Output.all(*[hosts[m.name].private_ip for m in topo.managers]).apply(
            lambda ips: dict(zip([m.name for m in topo.managers], ips)))
        self.worker_addresses = pulumi.Output.all(*[hosts[w.name].private_ip for w in topo.workers]).apply(
            lambda ips: dict(zip([w.name for w in topo.workers], ips)))
        self.swarm_manager_endpoint = hosts[first.name].private_ip.apply(lambda ip: f"{ip}:2377")
        self.nfs_exports = pulumi.Output.all(*[addresses[e.server] for e in topo.exports]).apply(
            lambda ips: {e.name: {"source": f"{ip}:{e.path}",
                                  "writers": list(e.writers),
                                  "readOnlyToCluster": e.cluster_readable,
                                  "replicaOf": e.replica_of}
                         for e, ip in zip(topo.exports, ips)})
        names = [h.name for h in topo.hosts]
        self.ssh_config = pulumi.Output.all(*[hosts[n].ssh_address for n in names]).apply(
            lambda addrs: ssh_config(cfg.stack, names, master.name, addrs, cfg.ssh.user, args.platform.identity_file))
        self.register_outputs({
            "master_address": self.master_address,
            "manager_addresses": self.manager_addresses,
            "worker_addresses": self.worker_addresses,
            "swarm_manager_endpoint": self.swarm_manager_endpoint,
            "nfs_exports": self.nfs_exports,
            "ssh_config": self.ssh_config,
        })
