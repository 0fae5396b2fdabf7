"""The platform on a cloud's hosts: the cluster, then the CI/CD host's services through a
docker provider that reaches that host over ssh."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker

from .cicd import CiCd, CiCdArgs
from .cluster import Cluster, ClusterArgs
from .config import DockyardConfig
from .hosts import Platform
from .ssh import docker_ssh_argv
from .topology import Role, Topology


@dataclass
class Deployment:
    cluster: Cluster
    cicd: Optional[CiCd]

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
        return result


def docker_ssh_options(platform: Platform, user: str, jump_host: Optional[pulumi.Input[str]]):
    """ssh options for the docker provider (it runs the system ssh): the stack's key, the
    hosts' keys when the cloud reported them, and for a host behind the master, a hop
    through the master with the same key."""
    identity, known_hosts = platform.identity_file, platform.known_hosts_file
    if jump_host is None:
        return docker_ssh_argv(identity, user, None, known_hosts)
    return pulumi.Output.from_input(jump_host).apply(
        lambda master: docker_ssh_argv(identity, user, master, known_hosts))


def ci_docker_provider(config: DockyardConfig, platform: Platform, ci_host: str, master: str,
                       after: list[pulumi.Resource]) -> docker.Provider:
    """The docker provider of the CI/CD host, reached where an operator reaches it. It does
    not retry a refused connection, so it waits for everything that restarts what it
    connects through: the host's engine (and preloads) and the master's sshd, which
    master.sh reloads. Its address waits for them too, so a preview of hosts that do not
    exist yet does not try to reach them."""
    address = pulumi.Output.all(platform.hosts[ci_host].ssh_address, *[r.id for r in after]).apply(
        lambda values: f"ssh://{config.ssh.user}@{values[0]}")
    jump = platform.master_address if ci_host != master else None
    return docker.Provider(
        f"{ci_host}-docker-provider",
        host=address,
        ssh_opts=docker_ssh_options(platform, config.ssh.user, jump),
        opts=pulumi.ResourceOptions(depends_on=[*after, *platform.ssh_files_written]),
    )


def deploy(config: DockyardConfig, topology: Topology, platform: Platform) -> Deployment:
    """The platform on the hosts a cloud made: the cluster and, where the tier has a CI/CD
    host and the stack runs services on it, those services."""
    cluster = Cluster(config.stack, ClusterArgs(config=config, topology=topology, platform=platform))

    cicd = None
    ci_hosts = topology.with_role(Role.CICD)
    if ci_hosts and config.ci.services:
        ci, master = ci_hosts[0].name, topology.master.name
        # what a host's containers wait for: its engine, and its preloaded images when it has some
        engine_and_images = {name: [cluster.preloads[name].load if name in cluster.preloads else e.engine]
                     for name, e in cluster.engines.items()}
        provider = ci_docker_provider(config, platform, ci, master,
                                      [engine_and_images[ci][0], cluster.master.setup])
        logins = [ci] + [m.name for m in topology.managers]
        cicd = CiCd("cicd", CiCdArgs(
            stack=config.stack, settings=config.ci, host=platform.hosts[ci],
            url_address=platform.hosts[ci].ssh_address,
            clients=[platform.hosts[h.name] for h in topology.hosts], logins=logins, ready=engine_and_images,
        ), opts=pulumi.ResourceOptions(providers={"docker": provider}))
    return Deployment(cluster, cicd)
