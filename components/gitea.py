"""Gitea on the CI/CD host, installed without its web installer, serving HTTPS only with the
certificate ci-tls.sh put on the CI volume (the stack's CA signs it). gitea-setup.sh makes
the admin and the OAuth2 application Drone logs in with, and prints that application's
client id and secret for Drone's container."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .ci_common import (CI_ROOT, DRONE_PORT, GITEA_PORT, HEALTH, TLS_DIR, TLS_MOUNT, TRUST_ENV, moved_child,
                        service_container, tls_volume)
from .hosts import Host
from .remote import run_script


def parse_assignments(stdout: str, script: str, *required: str) -> dict[str, str]:
    """The NAME=value lines a script printed, each of `required` among them."""
    values = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    missing = set(required) - values.keys()
    if missing:
        raise ValueError(f"{script} printed no {', '.join(sorted(missing))}")
    return values


def parse_oauth_app(stdout: str) -> dict[str, str]:
    """client_id and client_secret from gitea-setup.sh's output."""
    return parse_assignments(stdout, "gitea-setup.sh", "client_id", "client_secret")


@dataclass
class GiteaArgs:
    host: Host                              # the CI/CD host
    admin_user: str
    admin_email: str
    image: pulumi.Input[str]                # Gitea's image ID on the host
    network: pulumi.Input[str]              # the CI network's name
    url_address: pulumi.Input[str]          # where users reach Gitea and Drone
    secret_key: pulumi.Input[str]           # Gitea's SECRET_KEY, kept with its data
    after: list[pulumi.Resource]            # what must exist before Gitea starts (ci-tls.sh's files among it)
    tls_digest: pulumi.Input[str]           # of its certificate and the CA: a new one restarts Gitea
    moved_from: Optional[pulumi.Resource] = None   # where stacks made before the split keep its state


class Gitea(pulumi.ComponentResource):
    """Outputs: `url`, `drone_url` (the redirect its OAuth2 application allows),
    `admin_password` (secret), `oauth_app` (secret: client_id and client_secret)."""

    def __init__(self, name: str, args: GiteaArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:ci:Gitea", name, None, opts)
        address = pulumi.Output.from_input(args.url_address)
        self.url: pulumi.Output[str] = address.apply(lambda a: f"https://{a}:{GITEA_PORT}")
        self.drone_url: pulumi.Output[str] = address.apply(lambda a: f"https://{a}:{DRONE_PORT}")
        # letters and digits only: it goes into a JSON body unquoted
        admin_password = random.RandomPassword(f"{name}-gitea-admin-password", length=24, special=False,
                                               opts=moved_child(self, args.moved_from))
        self.admin_password: pulumi.Output[str] = pulumi.Output.secret(admin_password.result)
        self.container = service_container(
            name, "gitea", args.image, args.network, moved_child(self, args.moved_from, depends_on=args.after),
            ports=[docker.ContainerPortArgs(internal=3000, external=GITEA_PORT)],
            volumes=[docker.ContainerVolumeArgs(host_path=f"{CI_ROOT}/gitea", container_path="/data"), tls_volume()],
            labels=[docker.ContainerLabelArgs(label="dockyard.certificate", value=args.tls_digest)],
            envs=[
                "GITEA__server__PROTOCOL=https",
                f"GITEA__server__CERT_FILE={TLS_MOUNT}/web.crt",
                f"GITEA__server__KEY_FILE={TLS_MOUNT}/web.key",
                # Drone's webhooks and OAuth2 token calls go to a server the stack's CA signed
                TRUST_ENV,
                "USER_UID=1000", "USER_GID=1000",
                "GITEA__security__INSTALL_LOCK=true",
                pulumi.Output.from_input(args.secret_key).apply(lambda key: f"GITEA__security__SECRET_KEY={key}"),
                "GITEA__database__DB_TYPE=sqlite3",
                self.url.apply(lambda u: f"GITEA__server__ROOT_URL={u}/"),
                address.apply(lambda a: f"GITEA__server__DOMAIN={a}"),
                "GITEA__server__DISABLE_SSH=true",
                "GITEA__service__DISABLE_REGISTRATION=true",
                # Drone's webhook endpoint is on this host, which Gitea refuses by default
                address.apply(lambda a: f"GITEA__webhook__ALLOWED_HOST_LIST={a},loopback,private"),
            ],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "curl", "-fsS", "-o", "/dev/null", "--cacert", f"{TLS_MOUNT}/ca.crt",
                       "https://localhost:3000/api/healthz"], **HEALTH),
        )
        self.setup = run_script(
            f"{name}-gitea-setup",
            connection=args.host.connection,
            script="gitea-setup.sh",
            env={"GITEA_CONTAINER": "gitea", "GITEA_URL": f"https://localhost:{GITEA_PORT}",
                 "CA_FILE": f"{TLS_DIR}/ca.crt",
                 "ADMIN_USER": args.admin_user, "ADMIN_EMAIL": args.admin_email, "DRONE_URL": self.drone_url,
                 "CI_ROOT": CI_ROOT},
            secret_env={"ADMIN_PASSWORD": admin_password.result},
            secret_stdout=True,
            opts=moved_child(self, args.moved_from, depends_on=[self.container]),
        )
        self.oauth_app: pulumi.Output[dict] = pulumi.Output.secret(self.setup.stdout.apply(parse_oauth_app))
        self.register_outputs({"url": self.url})
