"""The management panel: Portainer CE. Its agent runs on every node (a global service that
reads the node's Docker); the server, which keeps its data on a local volume, is pinned to
the first manager and answers as portainer.<domain> through the ingress. The admin user's
password is set from a stack secret at the server's first start (no first-login race); it is
the stack's `panel_admin_password` output. Resources come from the swarm's docker provider
(opts.providers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .ingress import NETWORK as INGRESS_NETWORK
from .swarm_service import PlatformServiceArgs, bind, on_node, secret_file, service, swarm_secret, volume

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


@dataclass(kw_only=True)
class PanelArgs(PlatformServiceArgs):
    """Portainer's: the server keeps its data on `server_node_id`'s volume."""


class Panel(pulumi.ComponentResource):
    def __init__(self, name: str, args: PanelArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:platform:Panel", name, None, opts)
        settings = args.settings
        chain = args.chain(self)

        self.network = chain.add(docker.Network(f"{name}-network", name=AGENT_NETWORK, driver="overlay",
                                                opts=chain.opts()))
        password = random.RandomPassword(f"{name}-admin-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))
        self.admin_password = pulumi.Output.secret(password.result)
        password_secret = chain.add(swarm_secret(f"{name}-admin-password-secret", "dockyard-portainer-admin",
                                                 password.result, chain.opts()))

        self.agent = service(
            f"{name}-agent", chain, name=AGENT_SERVICE, image=settings.images["portainerAgent"],
            networks=[self.network.id], env={"AGENT_CLUSTER_ADDR": f"tasks.{AGENT_SERVICE}"},
            mounts=[bind("/var/run/docker.sock", "/var/run/docker.sock"),
                    bind("/var/lib/docker/volumes", "/var/lib/docker/volumes")],
            constraints=["node.platform.os==linux"])
        self.server = service(
            f"{name}-server", chain, name="portainer", image=settings.images["portainer"], replicas=1,
            networks=[self.network.id, args.ingress_network_id],
            labels=[docker.ServiceLabelArgs(label=k, value=v)
                    for k, v in server_labels(settings.domain, INGRESS_NETWORK).items()],
            args=["-H", f"tcp://tasks.{AGENT_SERVICE}:{AGENT_PORT}", "--tlsskipverify",
                  "--admin-password-file", PASSWORD_FILE],
            mounts=[volume(DATA_VOLUME, "/data")], secrets=[secret_file(password_secret, PASSWORD_FILE)],
            # its data is on that manager's volume: it must come back there
            constraints=[on_node(args.server_node_id)])
        self.last = chain.last
        self.url = f"https://portainer.{settings.domain}/"
        self.register_outputs({"url": self.url})
