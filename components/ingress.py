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

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .authority import StackAuthority
from .config import PlatformSettings

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


def content_name(prefix: str, content: str) -> str:
    """Swarm secrets cannot change: a new content is a new secret, named by its digest, which
    the service switches to before the old one is deleted."""
    return f"{prefix}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"


def swarm_secret(resource_name: str, prefix: str, content: pulumi.Input[str],
                 opts: pulumi.ResourceOptions) -> docker.Secret:
    """A swarm secret holding `content`, a secret in the state too; its name (from the
    digest, which tells nothing of the content) is not."""
    content = pulumi.Output.secret(content)
    return docker.Secret(
        resource_name,
        name=pulumi.Output.unsecret(content.apply(lambda text: content_name(prefix, text))),
        data=content.apply(lambda text: base64.b64encode(text.encode()).decode()),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["data"])),
    )


class Chain:
    """Resource options that make each resource wait for the one made before it. The docker
    provider opens an ssh connection for every resource it handles; a burst of them at once
    (a dozen handshakes through the master) overwhelms a small host's sshd. One at a time,
    the first opens the shared connection (ssh.docker_ssh_argv) and the others reuse it."""

    def __init__(self, opts: pulumi.ResourceOptions, after: Optional[pulumi.Resource] = None):
        self._opts = opts
        self.last = after

    def opts(self) -> pulumi.ResourceOptions:
        if self.last is None:
            return self._opts
        return pulumi.ResourceOptions.merge(self._opts, pulumi.ResourceOptions(depends_on=[self.last]))

    def add(self, resource: pulumi.Resource):
        self.last = resource
        return resource


# The platform's services that publish no port are reached by their tasks' addresses (DNS
# round robin), without a virtual IP: a virtual IP is an IPVS balancer that every container
# on the network sets up for every service on it, the bulk of a container's start on a small
# host (minutes for the monitoring's seven containers on an emulated CPU). traefik and
# Prometheus address the tasks themselves anyway.
BY_TASK_ADDRESS = docker.ServiceEndpointSpecArgs(mode="dnsrr")
# What the docker provider itself plans for a service on every preview though nothing changed
# (inputDiff false: an unset env or sysctl map "added", an unset restart window "deleted";
# pulumi-docker 5.1.0, cf. pulumi/pulumi-docker#1285): left as they are.
PROVIDER_NOISE = ["taskSpec.containerSpec.sysctl", "taskSpec.restartPolicy.window"]
NO_ENV_NOISE = [*PROVIDER_NOISE, "taskSpec.containerSpec.env"]  # for services that set no env


def secret_file(secret: docker.Secret, path: str) -> docker.ServiceTaskSpecContainerSpecSecretArgs:
    return docker.ServiceTaskSpecContainerSpecSecretArgs(secret_id=secret.id, secret_name=secret.name,
                                                        file_name=path, file_mode=0o400)


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

        mounts = [docker.ServiceTaskSpecContainerSpecMountArgs(
            type="bind", source="/var/run/docker.sock", target="/var/run/docker.sock", read_only=True)]
        if settings.acme_email:
            mounts.append(docker.ServiceTaskSpecContainerSpecMountArgs(
                type="volume", source="dockyard-traefik-acme", target="/data"))
        self.service = chain.add(docker.Service(
            f"{name}-traefik",
            name="traefik",
            mode=docker.ServiceModeArgs(global_=True),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=settings.images["traefik"],
                    args=traefik_args(settings),
                    mounts=mounts,
                    secrets=secrets,
                    # No health check: `traefik healthcheck` starts a second traefik every
                    # interval, on a small or busy host a second's CPU and 100 MiB each time,
                    # and under load it timed out and had swarm kill the traefik that served
                    # (refusing every connection of that manager). Swarm restarts it if it exits;
                    # Prometheus scrapes its metrics (ping answers on the metrics entrypoint).
                ),
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=["node.role==manager"]),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=self.network.id)],
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="5s"),
            ),
            endpoint_spec=docker.ServiceEndpointSpecArgs(ports=[
                docker.ServiceEndpointSpecPortArgs(target_port=port, published_port=port, publish_mode="host")
                for port in (80, 443)]),
            # host ports: the old task must free them before the new one starts
            update_config=docker.ServiceUpdateConfigArgs(order="stop-first", parallelism=1, delay="10s",
                                                         failure_action="rollback"),
            opts=pulumi.ResourceOptions.merge(chain.opts(), pulumi.ResourceOptions(ignore_changes=NO_ENV_NOISE)),
        ))
        self.last = chain.last
        self.dashboard_url = f"https://traefik.{settings.domain}/dashboard/"
        self.register_outputs({"network": self.network.name, "dashboard_url": self.dashboard_url})
