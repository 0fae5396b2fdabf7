"""The stack's Docker registry on the CI/CD host. It serves TLS with a certificate from the
stack's CA (pulumi-tls) and asks for a password (pulumi-random, stored as a bcrypt htpasswd).
Every host trusts that CA through /etc/docker/certs.d, so none needs an insecure-registry
setting; the hosts in `logins` also log in to it."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .authority import StackAuthority, pem_digest
from .ci_common import CI_ROOT, HEALTH, REGISTRY_PORT, moved_child, service_container
from .hosts import Host
from .remote import run_script


def docker_config_json(registry: str, user: str, password: str) -> str:
    """A docker config.json holding the registry's credentials (what `docker login` writes)."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": auth}}}, sort_keys=True)


@dataclass
class RegistryArgs:
    host: Host                         # the CI/CD host
    user: str                          # the registry's one user (the stack's admin)
    gc_schedule: str                   # systemd OnCalendar= of its garbage collection
    image: pulumi.Input[str]           # the registry image's ID on the host
    network: pulumi.Input[str]         # the CI network's name
    authority: StackAuthority          # signs the registry's certificate
    clients: list[Host]                # every host of the stack: each trusts the registry's CA
    logins: list[str]                  # hosts whose docker CLI logs in
    # per host: what must exist before anything uses its engine (the engine, preloaded images)
    engine_ready: dict[str, list[pulumi.Resource]] = field(default_factory=dict)
    moved_from: Optional[pulumi.Resource] = None   # where stacks made before the split keep its state


class Registry(pulumi.ComponentResource):
    """Outputs: `address` (host:port), `ca_certificate`, `password` (secret), `files` (the
    command that wrote its certificate and credentials on the CI volume)."""

    def __init__(self, name: str, args: RegistryArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:ci:Registry", name, None, opts)
        host = args.host
        on_ci_host = args.engine_ready.get(host.name, [])
        self.address: pulumi.Output[str] = host.private_ip.apply(lambda ip: f"{ip}:{REGISTRY_PORT}")
        self.ca_certificate: pulumi.Output[str] = args.authority.cert_pem
        issued = args.authority.issue(f"{name}-registry", self, "registry", dns_names=["registry", "localhost"],
                                      ip_addresses=[host.private_ip], moved_from=args.moved_from)
        # letters and digits only: it goes into JSON and config files unquoted
        password = random.RandomPassword(f"{name}-registry-password", length=32, special=False,
                                         opts=moved_child(self, args.moved_from))
        self.password: pulumi.Output[str] = pulumi.Output.secret(password.result)
        htpasswd = pulumi.Output.secret(password.bcrypt_hash.apply(lambda h: f"{args.user}:{h}"))
        auth_json = pulumi.Output.secret(pulumi.Output.all(self.address, password.result).apply(
            lambda a: docker_config_json(a[0], args.user, a[1])))
        self.files = run_script(
            f"{name}-files",
            connection=host.connection,
            script="ci-files.sh",
            env={"CI_ROOT": CI_ROOT, "GC_SCHEDULE": args.gc_schedule},
            secret_env={"REGISTRY_CERT": issued.cert_pem, "REGISTRY_KEY": issued.private_key_pem,
                        "REGISTRY_HTPASSWD": htpasswd, "DOCKER_CONFIG_JSON": auth_json},
            opts=moved_child(self, args.moved_from, depends_on=on_ci_host),
        )
        # the registry reads its certificate at start: a new certificate restarts it
        cert_digest = pem_digest(issued.cert_pem)
        self.container = service_container(
            name, "registry", args.image, args.network, moved_child(self, args.moved_from, depends_on=[self.files]),
            secret_envs=False,
            ports=[docker.ContainerPortArgs(internal=5000, external=REGISTRY_PORT)],
            volumes=[
                docker.ContainerVolumeArgs(host_path=f"{CI_ROOT}/registry/data", container_path="/var/lib/registry"),
                docker.ContainerVolumeArgs(host_path=f"{CI_ROOT}/registry/certs", container_path="/certs",
                                           read_only=True),
                docker.ContainerVolumeArgs(host_path=f"{CI_ROOT}/registry/auth", container_path="/auth",
                                           read_only=True),
            ],
            envs=[
                "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/registry.crt",
                "REGISTRY_HTTP_TLS_KEY=/certs/registry.key",
                "REGISTRY_AUTH=htpasswd",
                "REGISTRY_AUTH_HTPASSWD_REALM=dockyard",
                "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd",
                "REGISTRY_STORAGE_DELETE_ENABLED=true",
                # health over plain HTTP on loopback only, for the health check
                "REGISTRY_HTTP_DEBUG_ADDR=127.0.0.1:5001",
            ],
            labels=[docker.ContainerLabelArgs(label="dockyard.certificate", value=cert_digest)],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:5001/debug/health"], **HEALTH),
        )
        for client in args.clients:
            logs_in = client.name in args.logins
            run_script(
                f"{name}-{client.name}-registry-client",
                connection=client.connection,
                script="registry-client.sh",
                env={"REGISTRY": self.address, "CA_CERT": args.authority.cert_pem},
                secret_env={"REGISTRY_USER": args.user, "REGISTRY_PASSWORD": password.result} if logs_in else None,
                opts=moved_child(self, args.moved_from,
                                 depends_on=args.engine_ready.get(client.name, []) + [self.container]),
            )
        self.register_outputs({"address": self.address, "ca_certificate": self.ca_certificate})
