"""Drone on the CI/CD host: the server, logged in to through Gitea's OAuth2 application, and
one docker runner beside it. The admin's API token is made here (DRONE_USER_CREATE), for
scripts and the drone CLI. The server serves HTTPS only (ci-tls.sh's certificate, which
Gitea's shares); the runner reaches it over HTTPS too, and every pipeline step trusts the
stack's CA (the clone step fetches from Gitea with it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .ci_common import (CI_ROOT, DRONE_PORT, HEALTH, STEPS_BUNDLE, TLS_DIR, TLS_MOUNT, TRUST_ENV, moved_child,
                        service_container, tls_volume)
from .hosts import Host


@dataclass
class DroneArgs:
    host: Host                               # the CI/CD host
    admin_user: str
    image: pulumi.Input[str]                 # the server's image ID on the host
    runner_image: pulumi.Input[str]          # the docker runner's
    network: pulumi.Input[str]               # the CI network's name
    url_address: pulumi.Input[str]           # where users reach Drone
    gitea_url: pulumi.Input[str]
    oauth_app: pulumi.Input[dict]            # secret: client_id and client_secret in Gitea
    database_secret: pulumi.Input[str]       # encrypts the secrets in Drone's database
    after: list[pulumi.Resource]             # what must exist before the server starts (Gitea's setup)
    tls_digest: pulumi.Input[str]            # of its certificate and the CA: a new one restarts the server
    clone_image: Optional[str] = None        # the clone step's image, where Docker Hub is out of reach
    # pipelines pull private images from the stack's registry with the credentials ci-files.sh wrote
    registry_login: bool = False
    moved_from: Optional[pulumi.Resource] = None   # where stacks made before the split keep its state


class Drone(pulumi.ComponentResource):
    """Outputs: `admin_token` (secret)."""

    def __init__(self, name: str, args: DroneArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:ci:Drone", name, None, opts)
        address = pulumi.Output.from_input(args.url_address)
        oauth = pulumi.Output.secret(args.oauth_app)

        def secret(suffix: str) -> pulumi.Output[str]:
            made = random.RandomPassword(f"{name}-{suffix}", length=32, special=False,
                                         opts=moved_child(self, args.moved_from))
            return pulumi.Output.secret(made.result)

        rpc_secret = secret("drone-rpc-secret")
        # signs the session cookies: without one Drone makes a new one at each start, and every
        # restart (an image bump, a renewed certificate) logs every user out
        cookie_secret = secret("drone-cookie-secret")
        self.admin_token: pulumi.Output[str] = secret("drone-admin-token")
        self.server = service_container(
            name, "drone", args.image, args.network, moved_child(self, args.moved_from, depends_on=args.after),
            # with a certificate Drone serves HTTPS on 443 (and redirects 80 there)
            ports=[docker.ContainerPortArgs(internal=443, external=DRONE_PORT)],
            volumes=[docker.ContainerVolumeArgs(host_path=f"{CI_ROOT}/drone/data", container_path="/data"),
                     tls_volume()],
            labels=[docker.ContainerLabelArgs(label="dockyard.certificate", value=args.tls_digest)],
            envs=[
                f"DRONE_TLS_CERT={TLS_MOUNT}/web.crt", f"DRONE_TLS_KEY={TLS_MOUNT}/web.key", TRUST_ENV,
                pulumi.Output.from_input(args.gitea_url).apply(lambda u: f"DRONE_GITEA_SERVER={u}"),
                oauth.apply(lambda o: f"DRONE_GITEA_CLIENT_ID={o['client_id']}"),
                oauth.apply(lambda o: f"DRONE_GITEA_CLIENT_SECRET={o['client_secret']}"),
                rpc_secret.apply(lambda r: f"DRONE_RPC_SECRET={r}"),
                cookie_secret.apply(lambda c: f"DRONE_COOKIE_SECRET={c}"),
                address.apply(lambda a: f"DRONE_SERVER_HOST={a}:{DRONE_PORT}"),
                "DRONE_SERVER_PROTO=https",
                self.admin_token.apply(
                    lambda token: f"DRONE_USER_CREATE=username:{args.admin_user},admin:true,token:{token}"),
                "DRONE_DATABASE_DRIVER=sqlite3",
                "DRONE_DATABASE_DATASOURCE=/data/database.sqlite",
                pulumi.Output.from_input(args.database_secret).apply(lambda s: f"DRONE_DATABASE_SECRET={s}"),
            ],
            healthcheck=docker.ContainerHealthcheckArgs(
                # busybox's wget (the official image's) has no option for a CA file; on
                # loopback the answer is what counts
                tests=["CMD", "wget", "-q", "-O", "/dev/null", "--no-check-certificate", "https://localhost/healthz"],
                **HEALTH),
        )
        # the runner needs the bundle only, not the key beside it
        volumes = [docker.ContainerVolumeArgs(host_path="/var/run/docker.sock", container_path="/var/run/docker.sock"),
                   docker.ContainerVolumeArgs(host_path=f"{TLS_DIR}/ca-bundle.crt",
                                              container_path=f"{TLS_MOUNT}/ca-bundle.crt", read_only=True)]
        step_bundle = "/etc/ssl/certs/ca-certificates.crt"
        envs = [
            "DRONE_RPC_PROTO=https", "DRONE_RPC_HOST=drone", TRUST_ENV,
            # every step's CA bundle is the host's roots and the stack's CA (the runner's parser
            # refuses a ":ro" suffix; ci-tls.sh makes the file immutable), and the tools that
            # keep roots of their own (Python's requests, Node) are pointed at it
            f"DRONE_RUNNER_VOLUMES={STEPS_BUNDLE}:{step_bundle}",
            f"DRONE_RUNNER_ENVIRON=SSL_CERT_FILE:{step_bundle},REQUESTS_CA_BUNDLE:{step_bundle},"
            f"NODE_EXTRA_CA_CERTS:{step_bundle},GIT_SSL_CAINFO:{step_bundle}",
            rpc_secret.apply(lambda r: f"DRONE_RPC_SECRET={r}"),
            f"DRONE_RUNNER_NAME={args.host.name}", "DRONE_RUNNER_CAPACITY=2",
            # the clone credentials (the user's Gitea token) go to the clone step only
            "DRONE_NETRC_CLONE_ONLY=true",
        ]
        if args.clone_image:
            envs.append(f"DRONE_RUNNER_CLONE_IMAGE={args.clone_image}")
        if args.registry_login:
            volumes.append(docker.ContainerVolumeArgs(
                host_path=f"{CI_ROOT}/drone/docker-config.json",
                container_path="/etc/dockyard/docker-config.json", read_only=True))
            envs.append("DRONE_DOCKER_CONFIG=/etc/dockyard/docker-config.json")
        self.runner = service_container(
            name, "drone-runner", args.runner_image, args.network,
            moved_child(self, args.moved_from, depends_on=[self.server]),
            volumes=volumes, envs=envs,
            # Go reads its roots once: a new CA restarts the runner too
            labels=[docker.ContainerLabelArgs(label="dockyard.certificate", value=args.tls_digest)],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3000/healthz"], **HEALTH),
        )
        self.register_outputs({})
