"""The management panel: Portainer CE. Its agent runs on every node (a global service that
reads the node's Docker); the server, which keeps its data on a local volume, is pinned to
the first manager and answers as portainer.<domain> through the ingress. The admin user's
password is set from a stack secret at the server's first start (no first-login race); it is
the stack's `panel_admin_password` output. Resources come from the swarm's docker provider
(opts.providers)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .config import PlatformSettings
from .ingress import (BY_TASK_ADDRESS, NETWORK as INGRESS_NETWORK, NO_ENV_NOISE, PROVIDER_NOISE, Chain, secret_file,
                      swarm_secret)

AGENT_NETWORK = "dockyard-panel"
AGENT_SERVICE = "portainer-agent"
AGENT_PORT = 9001
SERVER_PORT = 9000
DATA_VOLUME = "dockyard-portainer-data"
PASSWORD_FILE = "/run/secrets/portainer-admin-password"


def server_labels(domain: str, ingress_network: str) -> dict[str, str]:
    """What tells traefik to route portainer.<domain> to the server."""
    return {
        "traefik.enable": "true",
        "traefik.http.routers.portainer.rule": f"Host(`portainer.{domain}`)",
        "traefik.http.routers.portainer.entrypoints": "websecure",
        "traefik.http.services.portainer.loadbalancer.server.port": str(SERVER_PORT),
        "traefik.swarm.network": ingress_network,
    }


@dataclass
class PanelArgs:
    settings: PlatformSettings
    # the swarm node id of the manager that keeps the server's data
    server_node_id: pulumi.Input[str]
    ingress_network_id: pulumi.Input[str]
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    # the last platform resource made before these: they are made one after another (ingress.Chain)
    after: Optional[pulumi.Resource] = None
    # the first manager's machine: when it goes (a whole stack destroyed), its swarm's services,
    # networks and secrets went with it, and deleting them one by one would need it running
    deleted_with: Optional[pulumi.Resource] = None


class Panel(pulumi.ComponentResource):
    def __init__(self, name: str, args: PanelArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:platform:Panel", name, None, opts)
        settings = args.settings
        chain = Chain(pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, deleted_with=args.deleted_with),
                      args.after)

        self.network = chain.add(docker.Network(f"{name}-network", name=AGENT_NETWORK, driver="overlay",
                                                opts=chain.opts()))
        password = random.RandomPassword(f"{name}-admin-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))
        self.admin_password = pulumi.Output.secret(password.result)
        password_secret = chain.add(swarm_secret(f"{name}-admin-password-secret", "dockyard-portainer-admin",
                                                 password.result, chain.opts()))

        self.agent = chain.add(docker.Service(
            f"{name}-agent",
            name=AGENT_SERVICE,
            mode=docker.ServiceModeArgs(global_=True),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=settings.images["portainerAgent"],
                    env={"AGENT_CLUSTER_ADDR": f"tasks.{AGENT_SERVICE}"},
                    mounts=[
                        docker.ServiceTaskSpecContainerSpecMountArgs(
                            type="bind", source="/var/run/docker.sock", target="/var/run/docker.sock"),
                        docker.ServiceTaskSpecContainerSpecMountArgs(
                            type="bind", source="/var/lib/docker/volumes", target="/var/lib/docker/volumes"),
                    ],
                ),
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=["node.platform.os==linux"]),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=self.network.id)],
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="5s"),
            ),
            endpoint_spec=BY_TASK_ADDRESS,
            opts=pulumi.ResourceOptions.merge(chain.opts(), pulumi.ResourceOptions(ignore_changes=PROVIDER_NOISE)),
        ))
        server_node = pulumi.Output.from_input(args.server_node_id)
        self.server = chain.add(docker.Service(
            f"{name}-server",
            name="portainer",
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            labels=[docker.ServiceLabelArgs(label=k, value=v)
                    for k, v in server_labels(settings.domain, INGRESS_NETWORK).items()],
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=settings.images["portainer"],
                    args=["-H", f"tcp://tasks.{AGENT_SERVICE}:{AGENT_PORT}", "--tlsskipverify",
                          "--admin-password-file", PASSWORD_FILE],
                    mounts=[docker.ServiceTaskSpecContainerSpecMountArgs(
                        type="volume", source=DATA_VOLUME, target="/data")],
                    secrets=[secret_file(password_secret, PASSWORD_FILE)],
                ),
                # its data is on that manager's volume: it must come back there
                placement=docker.ServiceTaskSpecPlacementArgs(
                    constraints=[server_node.apply(lambda node: f"node.id=={node}")]),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=self.network.id),
                                    docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.ingress_network_id)],
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="5s"),
            ),
            endpoint_spec=BY_TASK_ADDRESS,
            opts=pulumi.ResourceOptions.merge(chain.opts(), pulumi.ResourceOptions(ignore_changes=NO_ENV_NOISE)),
        ))
        self.last = chain.last
        self.url = f"https://portainer.{settings.domain}/"
        self.register_outputs({"url": self.url})
