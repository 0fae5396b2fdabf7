"""The platform on a set of hosts: the order in which the roles come up.

engine on every host -> its data restored from a backup, when the stack restores
                     -> master inventory and bastion
                     -> NFS exports -> NFS mounts (on every host that mounts them)
                     -> the encrypted data path on every swarm node (WireGuard)
                     -> swarm init on the first manager -> join tokens (secret)
                        -> other managers join -> workers join -> node labels
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from .backup import Backup, BackupArgs, BackupSecrets, data_paths, paused_during_backup, swarm_state_host
from .config import DockyardConfig
from .datapath import SwarmDataPath, SwarmDataPathArgs
from .docker_host import DockerHost, DockerHostArgs
from .hosts import Platform
from .preload import ImagePreload, ImagePreloadArgs
from .manager import ManagerAccess, SwarmManager, SwarmManagerArgs
from .master import Master, MasterArgs
from .nfs import NfsClient, NfsClientArgs, NfsServer, NfsServerArgs
from .ports import SWARM_MANAGEMENT_PORT
from .ssh import batch_ssh_options, host_alias, ssh_config
from .topology import HostSpec, Role, Topology
from .worker import SwarmWorker, SwarmWorkerArgs


@dataclass
class ClusterArgs:
    config: DockyardConfig
    topology: Topology
    platform: Platform
    # the repository's password and keys, when the stack backs up (config.BackupSettings)
    backup_secrets: Optional[BackupSecrets] = None


def labels_of(topology: Topology, spec: HostSpec) -> dict[str, str]:
    """The swarm labels of a host's node: its role and how it mounts each export."""
    result = {"dockyard.role": Role.MANAGER.value if spec.has(Role.MANAGER) else Role.WORKER.value}
    for m in topology.mounts_of(spec.name):
        result[f"dockyard.nfs.{m.export}"] = "rw" if m.writable else "ro"
    return result


class Cluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: ClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:index:Cluster", name, None, opts)
        self._config, self._topology, self.platform = args.config, args.topology, args.platform
        self._hosts = args.platform.hosts
        self._backup_secrets = args.backup_secrets
        self._child = pulumi.ResourceOptions(parent=self)
        self._addresses = {n: h.private_ip for n, h in self._hosts.items()}
        self._engines()
        self.master = Master(
            f"{self._topology.master.name}-master",
            MasterArgs(host=self._hosts[self._topology.master.name],
                       hosts=[self._hosts[h.name] for h in self._topology.hosts],
                       public_address=self.platform.master_address,
                       depends_on=self.engine_up(self._topology.master.name)),
            opts=self._child,
        )
        self._preloads()
        self._nfs()
        self._swarm()
        self._outputs()

    def engine_up(self, name: str) -> list[pulumi.Resource]:
        """What a role on host `name` waits for: the host's Docker engine, and its data back
        when the stack restores a backup (the backup's setup runs after the engine)."""
        if name in self.backups:
            return [self.backups[name].setup]
        return [self.engines[name].engine]

    def _engines(self) -> None:
        cfg, child = self._config, self._child
        # never pruned: preloaded images (no registry gives them back) and what CI/CD runs
        keep_images = cfg.preload_image_ids + tuple(sorted(set(cfg.ci.images.values())))
        self.engines: dict[str, DockerHost] = {}
        self.backups: dict[str, Backup] = {}
        for spec in self._topology.hosts:
            mount = {"nfs": cfg.nfs.export_root, "ci": "/srv/ci"}.get(spec.volume or "")
            # what owns the data on the volume: it must not start (and write to the root
            # disk) while the volume is missing
            owners = {"nfs": ("nfs-server",), "ci": ("docker",)}.get(spec.volume or "", ())
            self.engines[spec.name] = DockerHost(
                spec.name,
                DockerHostArgs(host=self._hosts[spec.name], docker_version=cfg.docker_version,
                               registry_mirrors=cfg.registry_mirrors, data_mount=mount, data_owners=owners,
                               prune_schedule=cfg.prune_schedule, prune_after=cfg.prune_after,
                               keep_images=keep_images,
                               live_restore=not (spec.has(Role.MANAGER) or spec.has(Role.WORKER))),
                opts=child,
            )
            paths = data_paths(self._topology, spec)
            swarm_state = cfg.backup.swarm_state and spec.name == swarm_state_host(self._topology)
            if cfg.backup.enabled and (paths or swarm_state):
                assert self._backup_secrets is not None, "the program reads the backup's secrets"
                # the first host creates the repository, the others wait for it (two at once
                # could each write their own key to S3)
                first = next(iter(self.backups.values()), None)
                self.backups[spec.name] = Backup(
                    f"{spec.name}-backup",
                    BackupArgs(host=self._hosts[spec.name], host_name=spec.name, settings=cfg.backup,
                               secrets=self._backup_secrets, paths=paths, swarm_state=swarm_state,
                               paused=paused_during_backup(cfg.ci, spec),
                               creates_repository=first is None,
                               depends_on=[self.engines[spec.name].engine] + ([first.setup] if first else [])),
                    opts=child,
                )

    def _preloads(self) -> None:
        """The stack's preloaded images on every host, sent from here over ssh (through the
        master for the others, so after the master's sshd has its bastion settings)."""
        cfg, topo, platform = self._config, self._topology, self.platform
        self.preloads: dict[str, ImagePreload] = {}
        if not cfg.preload_images:
            return
        every_host = self._batch_ssh_config([h.name for h in topo.hosts])
        for spec in topo.hosts:
            self.preloads[spec.name] = ImagePreload(
                f"{spec.name}-images",
                ImagePreloadArgs(host_alias=host_alias(cfg.stack, spec.name), ssh_config=every_host,
                                 archives=cfg.preload_images, image_ids=cfg.preload_image_ids,
                                 depends_on=self.engine_up(spec.name) + [self.master.setup]
                                 + list(platform.ssh_files_written)),
                opts=self._child,
            )

    def _nfs(self) -> None:
        topo, hosts = self._topology, self._hosts
        exports = {e.name: e for e in topo.exports}
        # What serves each export; a replica server waits for the export it copies.
        export_served: dict[str, list[pulumi.Resource]] = {}
        self.nfs_servers: dict[str, NfsServer] = {}
        for spec in topo.with_role(Role.NFS):
            own = [e for e in topo.exports if e.server == spec.name]
            server = NfsServer(
                f"{spec.name}-nfs",
                NfsServerArgs(host=hosts[spec.name], exports=own, addresses=self._addresses,
                              private_cidr=self.platform.private_cidr, all_exports=exports,
                              depends_on=self.engine_up(spec.name), export_served=dict(export_served)),
                opts=self._child,
            )
            self.nfs_servers[spec.name] = server
            export_served.update({e.name: server.serving for e in own})

        self.nfs_clients: dict[str, NfsClient] = {}
        for spec in topo.hosts:
            mounts = topo.mounts_of(spec.name)
            if mounts:
                self.nfs_clients[spec.name] = NfsClient(
                    f"{spec.name}-nfs-client",
                    NfsClientArgs(host=hosts[spec.name], mounts=mounts, exports=exports, addresses=self._addresses,
                                  depends_on={m.export: self.engine_up(spec.name) + export_served[m.export]
                                              for m in mounts}),
                    opts=self._child,
                )

    def _batch_ssh_config(self, names: list[str]) -> pulumi.Output[str]:
        """An ssh_config for the operator's own ssh to `names` (the master first), as the
        memberships and the preloads use it: no prompt, bounded waits, the hosts' keys."""
        cfg, platform = self._config, self.platform
        # after this run has written the known_hosts file, where the cloud writes one
        return pulumi.Output.all(platform.known_hosts_synced, *[self._hosts[n].ssh_address for n in names]).apply(
            lambda values: ssh_config(cfg.stack, names, self._topology.master.name, values[1:], cfg.ssh.user,
                                      platform.identity_file,
                                      batch_ssh_options(platform.known_hosts_file, platform.known_hosts_accept_new)))

    def _manager_access(self) -> ManagerAccess:
        """How the memberships reach the managers from the operator's machine."""
        cfg, topo, platform = self._config, self._topology, self.platform
        master = topo.master.name
        reach = [master] + [m.name for m in topo.managers if m.name != master]
        return ManagerAccess(
            aliases=[host_alias(cfg.stack, m.name) for m in topo.managers],
            ssh_config=self._batch_ssh_config(reach),
            ssh_files_written=list(platform.ssh_files_written),
        )

    def _data_path(self) -> None:
        """The swarm nodes' WireGuard network, which their overlay traffic crosses, when the
        stack encrypts it (dockyard:encryptDataPath, the default)."""
        cfg, topo = self._config, self._topology
        self.data_path: Optional[SwarmDataPath] = None
        if cfg.data_path_cidr is None:
            return
        nodes = [spec.name for spec in topo.managers + topo.workers]
        self.data_path = SwarmDataPath(
            "swarm-data-path",
            SwarmDataPathArgs(hosts=[self._hosts[n] for n in nodes], private_cidr=self.platform.private_cidr,
                              data_path_cidr=cfg.data_path_cidr, depends_on={n: self.engine_up(n) for n in nodes}),
            opts=self._child)

    def swarm_node_ready(self, name: str) -> tuple[list[pulumi.Resource], Optional[pulumi.Output[str]]]:
        """What a swarm node's init or join waits for, and its data path address (None: its
        private address)."""
        if self.data_path is None:
            return self.engine_up(name), None
        # every node has the others as peers first: the overlays reach a node from its first task
        return self.engine_up(name) + list(self.data_path.ready.values()), self.data_path.addresses[name]

    def _swarm(self) -> None:
        topo, hosts, child = self._topology, self._hosts, self._child
        self._data_path()
        first, *others = topo.managers
        ready, data_path_address = self.swarm_node_ready(first.name)
        self.managers = [SwarmManager(f"{first.name}-manager",
                                      SwarmManagerArgs(host=hosts[first.name], labels=labels_of(topo, first),
                                                       depends_on=ready,
                                                       access=self._manager_access(),
                                                       heartbeat=self._config.swarm_heartbeat,
                                                       autolock=self._config.swarm_autolock,
                                                       data_path_address=data_path_address),
                                      opts=child)]
        join = self.managers[0].join
        for spec in others:
            previous = self.managers[-1]
            ready, data_path_address = self.swarm_node_ready(spec.name)
            self.managers.append(SwarmManager(
                f"{spec.name}-manager",
                SwarmManagerArgs(host=hosts[spec.name], labels=labels_of(topo, spec),
                                 depends_on=ready, join=join,
                                 membership_after=[previous.membership] if previous.membership else [],
                                 data_path_address=data_path_address),
                opts=child,
            ))
        self.workers = []
        for spec in topo.workers:
            ready, data_path_address = self.swarm_node_ready(spec.name)
            self.workers.append(SwarmWorker(
                f"{spec.name}-worker",
                SwarmWorkerArgs(host=hosts[spec.name], join=join, labels=labels_of(topo, spec),
                                depends_on=ready, data_path_address=data_path_address),
                opts=child))

    def _outputs(self) -> None:
        cfg, topo, hosts = self._config, self._topology, self._hosts
        first, master = topo.managers[0], topo.master
        self.master_address = self.master.address
        self.manager_addresses = pulumi.Output.all(*[hosts[m.name].private_ip for m in topo.managers]).apply(
            lambda ips: dict(zip([m.name for m in topo.managers], ips)))
        self.worker_addresses = pulumi.Output.all(*[hosts[w.name].private_ip for w in topo.workers]).apply(
            lambda ips: dict(zip([w.name for w in topo.workers], ips)))
        self.swarm_manager_endpoint = hosts[first.name].private_ip.apply(lambda ip: f"{ip}:{SWARM_MANAGEMENT_PORT}")
        self.nfs_exports = pulumi.Output.all(*[self._addresses[e.server] for e in topo.exports]).apply(
            lambda ips: {e.name: {"source": f"{ip}:{e.path}",
                                  "writers": list(e.writers),
                                  "readOnlyToCluster": e.cluster_readable,
                                  "replicaOf": e.replica_of}
                         for e, ip in zip(topo.exports, ips)})
        names = [h.name for h in topo.hosts]
        self.ssh_config = pulumi.Output.all(*[hosts[n].ssh_address for n in names]).apply(
            lambda addrs: ssh_config(cfg.stack, names, master.name, addrs, cfg.ssh.user, self.platform.identity_file))
        self.register_outputs({
            "master_address": self.master_address,
            "manager_addresses": self.manager_addresses,
            "worker_addresses": self.worker_addresses,
            "swarm_manager_endpoint": self.swarm_manager_endpoint,
            "nfs_exports": self.nfs_exports,
            "ssh_config": self.ssh_config,
        })
