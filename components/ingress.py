"""The swarm's HTTPS ingress: traefik (v3) on every manager, publishing 80 and 443 in host
mode, routing to the services that ask for it with labels on one overlay network.

    traefik.enable=true
    traefik.http.routers.web.rule=Host(`web.<domain>`)
    traefik.http.services.web.loadbalancer.server.port=8080
    traefik.swarm.lbswarm=true      (through the service's VIP: a rolling update drops nothing)

plus the network `dockyard-ingress` (examples/web/stack.yml). Plain HTTP is redirected to
HTTPS. Certificates come from Let's Encrypt when the stack sets dockyard:acmeEmail, else
from the stack's CA (a certificate for <domain> and *.<domain>). The dashboard answers as
traefik.<domain> behind basic auth (user admin, password the stack's
`ingress_dashboard_password` output), and Prometheus metrics are on port 8082 of the
network. Resources come from the swarm's docker provider (opts.providers)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .authority import StackAuthority
from .config import PlatformSettings
from .swarm_service import Chain, bind, secret_file, service, swarm_secret, volume

NETWORK = "dockyard-ingress"
METRICS_PORT = 8082
DASHBOARD_USER = "admin"
SECRETS_DIR = "/run/secrets"
ACME_STORAGE = "/data/acme.json"
RESOLVER = "letsencrypt"


def traefik_args(settings: PlatformSettings) -> list[str]:
    """traefik's static configuration, as its command line."""
    args = [
        "--entrypoints.web.address=:80",
        "--entrypoints.web.http.redirections.entrypoint.to=websecure",
        "--entrypoints.web.http.redirections.entrypoint.scheme=https",
        "--entrypoints.websecure.address=:443",
        "--entrypoints.websecure.http.tls=true",
        f"--entrypoints.metrics.address=:{METRICS_PORT}",
        "--providers.swarm.endpoint=unix:///var/run/docker.sock",
        "--providers.swarm.exposedbydefault=false",
        f"--providers.swarm.network={NETWORK}",
        f"--providers.file.filename={SECRETS_DIR}/traefik-dynamic.yml",
        "--api.dashboard=true",
        "--ping=true",
        "--ping.entrypoint=metrics",
        "--metrics.prometheus=true",
        "--metrics.prometheus.entrypoint=metrics",
        "--metrics.prometheus.addserviceslabels=true",
        "--log.level=INFO",
    ]
    if settings.acme_email:
        args += [
            f"--certificatesresolvers.{RESOLVER}.acme.email={settings.acme_email}",
            f"--certificatesresolvers.{RESOLVER}.acme.storage={ACME_STORAGE}",
            f"--certificatesresolvers.{RESOLVER}.acme.httpchallenge.entrypoint=web",
            f"--entrypoints.websecure.http.tls.certresolver={RESOLVER}",
        ]
    return args


def dynamic_config(domain: str, users_line: str) -> str:
    """traefik's file-provider configuration: the default certificate (the stack CA's; with
    ACME, what a name without a certificate yet gets) and the dashboard behind basic auth."""
    return f"""\
tls:
  stores:
    default:
      defaultCertificate:
        certFile: {SECRETS_DIR}/ingress-cert.pem
        keyFile: {SECRETS_DIR}/ingress-key.pem
http:
  routers:
    dashboard:
      rule: "Host(`traefik.{domain}`)"
      entryPoints: [websecure]
      service: api@internal
      middlewares: [dashboard-auth]
      tls: {{}}
  middlewares:
    dashboard-auth:
      basicAuth:
        users:
          - "{users_line}"
"""


@dataclass
class IngressArgs:
    settings: PlatformSettings
    authority: StackAuthority
    # the managers' addresses, in the CA's certificate too (for clients that use an address)
    manager_addresses: list[pulumi.Input[str]] = field(default_factory=list)
    # what must exist before a service is declared (the swarm, images on the managers)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    # the first manager's machine: when it goes (a whole stack destroyed), its swarm's services,
    # networks and secrets went with it, and deleting them one by one would need it running
    deleted_with: Optional[pulumi.Resource] = None


class Ingress(pulumi.ComponentResource):
    def __init__(self, name: str, args: IngressArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:platform:Ingress", name, None, opts)
        settings = args.settings
        chain = Chain(pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, deleted_with=args.deleted_with))

        self.network = chain.add(docker.Network(f"{name}-network", name=NETWORK, driver="overlay", attachable=True,
                                                opts=chain.opts()))

        password = random.RandomPassword(f"{name}-dashboard-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))
        self.dashboard_password = pulumi.Output.secret(password.result)
        issued = args.authority.issue(f"{name}-default", self, settings.domain,
                                      dns_names=[settings.domain, f"*.{settings.domain}"],
                                      ip_addresses=args.manager_addresses)
        files = {
            "traefik-dynamic.yml": password.bcrypt_hash.apply(
                lambda hashed: dynamic_config(settings.domain, f"{DASHBOARD_USER}:{hashed}")),
            "ingress-cert.pem": issued.cert_pem,
            "ingress-key.pem": issued.private_key_pem,
        }
        secrets = []
        # in the order Docker lists them (by file), or every preview shows a change
        for file_name, content in sorted(files.items()):
            stem = file_name.rsplit(".", 1)[0]
            secret = chain.add(swarm_secret(f"{name}-{stem}", f"dockyard-{stem}", content, chain.opts()))
            secrets.append(secret_file(secret, f"{SECRETS_DIR}/{file_name}"))

        mounts = [bind("/var/run/docker.sock", "/var/run/docker.sock", read_only=True)]
        if settings.acme_email:
            mounts.append(volume("dockyard-traefik-acme", "/data"))
        # No health check: `traefik healthcheck` starts a second traefik every interval, on a
        # small or busy host a second's CPU and 100 MiB each time, and under load it timed out and
        # had swarm kill the traefik that served (refusing every connection of that manager).
        # Swarm restarts it if it exits; Prometheus scrapes its metrics (ping answers on the
        # metrics entrypoint).
        self.service = service(
            f"{name}-traefik", chain, name="traefik", image=settings.images["traefik"], networks=[self.network.id],
            args=traefik_args(settings), mounts=mounts, secrets=secrets, constraints=["node.role==manager"],
            endpoint_spec=docker.ServiceEndpointSpecArgs(ports=[
                docker.ServiceEndpointSpecPortArgs(target_port=port, published_port=port, publish_mode="host")
                for port in (80, 443)]),
            # host ports: the old task must free them before the new one starts
            update_config=docker.ServiceUpdateConfigArgs(order="stop-first", parallelism=1, delay="10s",
                                                         failure_action="rollback"))
        self.last = chain.last
        self.dashboard_url = f"https://traefik.{settings.domain}/dashboard/"
        self.register_outputs({"network": self.network.name, "dashboard_url": self.dashboard_url})
