"""The platform on a cloud's hosts: the cluster, then the CI/CD host's services through a
docker provider that reaches that host over ssh."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_docker as docker

from .authority import StackAuthority, StackAuthorityArgs
from .backup import BackupSecrets
from .ci_common import GITEA_PORT
from .cicd import CiCd, CiCdArgs
from .cluster import Cluster, ClusterArgs
from .config import DockyardConfig
from .hosts import Platform
from .ingress import Ingress, IngressArgs
from .logs import Logs, LogsArgs
from .monitoring import Monitoring, MonitoringArgs
from .panel import Panel, PanelArgs
from .ssh import docker_ssh_argv
from .topology import Role, Topology


@dataclass
class Deployment:
    cluster: Cluster
    cicd: Optional[CiCd]
    authority: Optional[StackAuthority] = None
    ingress: Optional[Ingress] = None
    panel: Optional[Panel] = None
    monitoring: Optional[Monitoring] = None
    logs: Optional[Logs] = None

    def outputs(self) -> dict[str, pulumi.Output]:
        """What the stack exports (secrets stay secrets)."""
        c = self.cluster
        result = {
            "master_address": c.master_address,
            "manager_addresses": c.manager_addresses,
            "worker_addresses": c.worker_addresses,
            "swarm_manager_endpoint": c.swarm_manager_endpoint,
            "nfs_exports": c.nfs_exports,
            "ssh_config": c.ssh_config,
        }
        if c.managers[0].unlock_key is not None:
            result["swarm_unlock_key"] = c.managers[0].unlock_key
        if c.platform.known_hosts is not None:
            # public keys: what `ssh -o UserKnownHostsFile=...` checks the hosts against
            result["known_hosts"] = pulumi.Output.unsecret(c.platform.known_hosts)
        if self.cicd is not None:
            optional = {
                "registry": self.cicd.registry_address,
                "registry_ca_certificate": self.cicd.ca_certificate,
                "registry_password": self.cicd.registry_password,
                "gitea_url": self.cicd.gitea_url,
                "gitea_admin_password": self.cicd.admin_password,
                "drone_url": self.cicd.drone_url,
                "drone_admin_token": self.cicd.drone_admin_token,
            }
            result.update({k: v for k, v in optional.items() if v is not None})
        if self.authority is not None:
            # what clients trust: the registry's and the ingress's certificates are signed by it
            result["ca_certificate"] = self.authority.cert_pem
        if self.ingress is not None:
            result["ingress_dashboard_url"] = self.ingress.dashboard_url
            result["ingress_dashboard_password"] = self.ingress.dashboard_password
        if self.panel is not None:
            result["panel_url"] = self.panel.url
            result["panel_admin_password"] = self.panel.admin_password
        if self.monitoring is not None:
            result["prometheus_url"] = self.monitoring.prometheus_url
            result["alertmanager_url"] = self.monitoring.alertmanager_url
            if self.monitoring.grafana_url is not None:
                result["grafana_url"] = self.monitoring.grafana_url
                result["grafana_admin_password"] = self.monitoring.grafana_admin_password
        if self.logs is not None:
            result["loki_url"] = self.logs.url
        return result


def docker_ssh_options(platform: Platform, stack: str, user: str, jump_host: Optional[pulumi.Input[str]]):
    """ssh options for the docker provider (it runs the system ssh): the stack's key, the
    hosts' keys when the cloud reported them, and for a host behind the master, a hop
    through the master with the same key."""
    identity, known_hosts, accept_new = platform.identity_file, platform.known_hosts_file, \
        platform.known_hosts_accept_new
    mux = str(ssh_mux_dir(stack))
    # after this run has written the known_hosts file, where the cloud writes one
    return pulumi.Output.all(jump_host, platform.known_hosts_synced).apply(
        lambda values: docker_ssh_argv(identity, user, values[0], known_hosts, mux, accept_new))


def ssh_mux_dir(stack: str) -> Path:
    """Where the docker providers' shared ssh connections keep their sockets (private), per
    stack: ssh's %C names a connection by address, and two stacks can share private ones."""
    path = Path(os.environ.get("DOCKYARD_CACHE_DIR", Path.home() / ".cache" / "dockyard")) / "ssh-mux" / stack
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def host_docker_provider(name: str, config: DockyardConfig, platform: Platform, host: str, master: str,
                         after: list[pulumi.Resource]) -> docker.Provider:
    """The docker provider of a host, reached where an operator reaches it. It does not
    retry a refused connection, so it waits for everything that restarts what it connects
    through: the host's engine (and preloads) and the master's sshd, which master.sh
    reloads. Its address waits for them too, so a preview of hosts that do not exist yet
    does not try to reach them."""
    address = pulumi.Output.all(platform.hosts[host].ssh_address, *[r.id for r in after]).apply(
        lambda values: f"ssh://{config.ssh.user}@{values[0]}")
    jump = platform.master_address if host != master else None
    return docker.Provider(
        name,
        host=address,
        ssh_opts=docker_ssh_options(platform, config.stack, config.ssh.user, jump),
        opts=pulumi.ResourceOptions(depends_on=[*after, *platform.ssh_files_written]),
    )


def deploy(config: DockyardConfig, topology: Topology, platform: Platform,
           backup_secrets: Optional[BackupSecrets] = None) -> Deployment:
    """The platform on the hosts a cloud made: the cluster and, where the tier has a CI/CD
    host and the stack runs services on it, those services."""
    cluster = Cluster(config.stack, ClusterArgs(config=config, topology=topology, platform=platform,
                                                backup_secrets=backup_secrets))

    engine_and_images = {name: [cluster.preloads[name].load] if name in cluster.preloads else cluster.engine_up(name)
                         for name in cluster.engines}
    ci_hosts = topology.with_role(Role.CICD)
    # the registry, Gitea and Drone serve certificates it signs, and so does the ingress
    serves_tls = bool(ci_hosts) and any(config.ci.runs(service) for service in ("registry", "gitea"))
    authority = None
    if serves_tls or config.platform.runs("ingress"):
        authority = StackAuthority("ca", StackAuthorityArgs(
            stack=config.stack,
            # it was the CiCd component's until the ingress needed it too
            previous_parent_urn=pulumi.resource.create_urn("cicd", "dockyard:role:CiCd"),
            previous_names={"key": "cicd-ca-key", "cert": "cicd-ca"}))

    cicd = None
    if ci_hosts and config.ci.services:
        ci, master = ci_hosts[0].name, topology.master.name
        provider = host_docker_provider(f"{ci}-docker-provider", config, platform, ci, master,
                                        [engine_and_images[ci][0], cluster.master.setup])
        logins = [ci] + [m.name for m in topology.managers]
        cicd = CiCd("cicd", CiCdArgs(
            stack=config.stack, settings=config.ci, host=platform.hosts[ci],
            url_address=platform.hosts[ci].ssh_address,
            clients=[platform.hosts[h.name] for h in topology.hosts], logins=logins, engine_ready=engine_and_images,
            authority=authority,
        ), opts=pulumi.ResourceOptions(providers={"docker": provider}))

    ingress = panel = monitoring = logs = None
    if config.platform.runs("ingress"):
        first = topology.managers[0].name
        swarm_formed = [cluster.managers[0].joined, cluster.managers[0].labels]
        swarm = host_docker_provider(f"{first}-swarm-docker-provider", config, platform, first,
                                     topology.master.name,
                                     [*swarm_formed, engine_and_images[first][0], cluster.master.setup])
        on_swarm = pulumi.ResourceOptions(providers={"docker": swarm})
        # a service's tasks start on every node at once: the managers need its image first
        images_on_managers = [engine_and_images[m.name][0] for m in topology.managers]
        ingress = Ingress("ingress", IngressArgs(
            settings=config.platform, authority=authority,
            manager_addresses=[platform.hosts[m.name].private_ip for m in topology.managers],
            depends_on=[*swarm_formed, *images_on_managers], deleted_with=platform.hosts[first].machine),
            opts=on_swarm)
        if config.platform.runs("panel"):
            panel = Panel("panel", PanelArgs(
                settings=config.platform, server_node_id=cluster.managers[0].node_id,
                ingress_network_id=ingress.network.id, depends_on=[*swarm_formed, *images_on_managers],
                deleted_with=platform.hosts[first].machine, after=ingress.last),
                opts=on_swarm)
        if config.platform.runs("monitoring"):
            monitoring = Monitoring("monitoring", MonitoringArgs(
                settings=config.platform, server_node_id=cluster.managers[0].node_id,
                managers=[platform.hosts[m.name] for m in topology.managers],
                ingress_network_id=ingress.network.id,
                registry_url=cicd.registry_address.apply(lambda a: f"https://{a}/v2/")
                if cicd is not None and cicd.registry_address is not None else None,
                # from the managers, over the private network the firewall lets through
                gitea_url=platform.hosts[ci_hosts[0].name].private_ip.apply(
                    lambda ip: f"https://{ip}:{GITEA_PORT}/api/healthz")
                if cicd is not None and config.ci.runs("gitea") else None,
                ca_certificate=authority.cert_pem if authority is not None else None,
                depends_on=[*swarm_formed, *images_on_managers], deleted_with=platform.hosts[first].machine,
                after=(panel or ingress).last),
                opts=on_swarm)
        if config.platform.runs("logs"):
            logs = Logs("logs", LogsArgs(
                settings=config.platform, server_node_id=cluster.managers[0].node_id,
                ingress_network_id=ingress.network.id,
                depends_on=[*swarm_formed, *images_on_managers], deleted_with=platform.hosts[first].machine,
                after=(monitoring or panel or ingress).last),
                opts=on_swarm)
    return Deployment(cluster, cicd, authority, ingress, panel, monitoring, logs)
