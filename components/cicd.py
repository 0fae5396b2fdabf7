"""The CI/CD host: Gitea (code), Drone (builds) and a Docker registry (images), as containers
that pulumi-docker manages over SSH, so an image bump is a diff in `pulumi preview`.

The registry serves TLS with a certificate from a CA the stack creates (pulumi-tls) and
asks for a password (pulumi-random, stored as a bcrypt htpasswd). Every host trusts that
CA through /etc/docker/certs.d, so no host needs an insecure-registry setting. Gitea is
installed without its web installer, and gitea-setup.sh creates the OAuth2 application
Drone logs in with, whose client id and secret go straight into Drone's container.

The docker provider for the CI/CD host comes in through `opts.providers`."""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .authority import StackAuthority
from .config import CiSettings
from .hosts import Host
from .remote import run_script

CI_ROOT = "/srv/ci"
REGISTRY_PORT = 5000
GITEA_PORT = 3000
DRONE_PORT = 8000
NETWORK = "dockyard-ci"
HEALTH = dict(interval="30s", timeout="5s", retries=3, start_period="20s")


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


def parse_data_secrets(stdout: str) -> dict[str, str]:
    """Gitea's SECRET_KEY and Drone's database secret, from ci-secrets.sh's output."""
    return parse_assignments(stdout, "ci-secrets.sh", "GITEA_SECRET_KEY", "DRONE_DATABASE_SECRET")


def docker_config_json(registry: str, user: str, password: str) -> str:
    """A docker config.json holding the registry's credentials (what `docker login` writes)."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": auth}}}, sort_keys=True)


@dataclass
class CiCdArgs:
    stack: str
    settings: CiSettings
    host: Host                         # the CI/CD host
    url_address: pulumi.Input[str]     # where users reach Gitea and Drone
    clients: list[Host]                # every host of the stack: each trusts the registry's CA
    logins: list[str]                  # hosts whose docker CLI logs in to the registry
    # per host: what must exist before anything uses its engine (the engine, preloaded images)
    ready: dict[str, list[pulumi.Resource]] = field(default_factory=dict)
    # signs the registry's certificate; needed when the registry runs
    authority: Optional[StackAuthority] = None


class CiCd(pulumi.ComponentResource):
    def __init__(self, name: str, args: CiCdArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:role:CiCd", name, None, opts)
        s, host = args.settings, args.host
        child = pulumi.ResourceOptions(parent=self)
        self.registry_address: Optional[pulumi.Output[str]] = None
        self.ca_certificate: Optional[pulumi.Output[str]] = None
        self.registry_password: Optional[pulumi.Output[str]] = None
        self.admin_password: Optional[pulumi.Output[str]] = None
        self.gitea_url: Optional[pulumi.Output[str]] = None
        self.drone_url: Optional[pulumi.Output[str]] = None
        self.drone_admin_token: Optional[pulumi.Output[str]] = None
        self.containers: dict[str, docker.Container] = {}

        address = pulumi.Output.from_input(args.url_address)
        ci_ready = args.ready.get(host.name, [])

        def password(suffix: str, length: int = 32) -> random.RandomPassword:
            # letters and digits only: these go into JSON, URLs and config files unquoted
            return random.RandomPassword(f"{name}-{suffix}", length=length, special=False, opts=child)

        self.network = docker.Network(f"{name}-network", name=NETWORK,
                                      opts=pulumi.ResourceOptions(parent=self, depends_on=ci_ready))
        images = {key: docker.RemoteImage(f"{name}-{key}-image", name=s.images[key], keep_locally=True,
                                          opts=pulumi.ResourceOptions(parent=self, depends_on=ci_ready))
                  for key in self._images_needed(s)}

        def container(key: str, image: str, depends_on: list[pulumi.Resource], secret_envs: bool = True,
                      **kwargs) -> docker.Container:
            self.containers[key] = docker.Container(
                f"{name}-{key}",
                name=key,
                image=images[image].image_id,
                restart="unless-stopped",
                must_run=True,
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.network.name, aliases=[key])],
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on,
                                            additional_secret_outputs=["envs"] if secret_envs else None),
                **kwargs,
            )
            return self.containers[key]

        files_ready: list[pulumi.Resource] = list(ci_ready)
        if s.runs("registry"):
            if args.authority is None:
                raise ValueError("the registry's certificate needs the stack's authority (CiCdArgs.authority)")
            self.registry_address = host.private_ip.apply(lambda ip: f"{ip}:{REGISTRY_PORT}")
            self.ca_certificate = args.authority.cert_pem
            issued = args.authority.issue(f"{name}-registry", self, "registry", dns_names=["registry", "localhost"],
                                          ip_addresses=[host.private_ip])
            registry_password = password("registry-password")
            self.registry_password = pulumi.Output.secret(registry_password.result)
            htpasswd = pulumi.Output.secret(registry_password.bcrypt_hash.apply(lambda h: f"{s.admin_user}:{h}"))
            auth_json = pulumi.Output.secret(pulumi.Output.all(self.registry_address, registry_password.result).apply(
                lambda a: docker_config_json(a[0], s.admin_user, a[1])))
            self.files = run_script(
                f"{name}-files",
                connection=host.connection,
                script="ci-files.sh",
                env={"CI_ROOT": CI_ROOT, "GC_SCHEDULE": s.gc_schedule},
                secret_env={"REGISTRY_CERT": issued.cert_pem, "REGISTRY_KEY": issued.private_key_pem,
                            "REGISTRY_HTPASSWD": htpasswd, "DOCKER_CONFIG_JSON": auth_json},
                opts=pulumi.ResourceOptions(parent=self, depends_on=ci_ready),
            )
            files_ready = [self.files]
            # the registry reads its certificate at start: a new certificate restarts it
            cert_digest = issued.cert_pem.apply(lambda pem: hashlib.sha256(pem.encode()).hexdigest()[:16])
            registry = container(
                "registry", "registry", files_ready, secret_envs=False,
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
                secret_env = None
                if client.name in args.logins:
                    secret_env = {"REGISTRY_USER": s.admin_user, "REGISTRY_PASSWORD": registry_password.result}
                run_script(
                    f"{name}-{client.name}-registry-client",
                    connection=client.connection,
                    script="registry-client.sh",
                    env={"REGISTRY": self.registry_address, "CA_CERT": args.authority.cert_pem},
                    secret_env=secret_env,
                    opts=pulumi.ResourceOptions(parent=self,
                                                depends_on=args.ready.get(client.name, []) + [registry]),
                )

        if s.runs("gitea"):
            self.gitea_url = address.apply(lambda a: f"http://{a}:{GITEA_PORT}")
            self.drone_url = address.apply(lambda a: f"http://{a}:{DRONE_PORT}")
            admin_password = password("gitea-admin-password", 24)
            self.admin_password = pulumi.Output.secret(admin_password.result)
            # kept on the CI volume with the data they protect, not made by the stack: a
            # recreated stack that adopts the volume must decrypt what is on it
            self.data_secrets = run_script(
                f"{name}-data-secrets", connection=host.connection, script="ci-secrets.sh",
                env={"CI_ROOT": CI_ROOT}, secret_stdout=True,
                opts=pulumi.ResourceOptions(parent=self, depends_on=files_ready))
            data_secrets = pulumi.Output.secret(self.data_secrets.stdout.apply(parse_data_secrets))
            gitea = container(
                "gitea", "gitea", files_ready,
                ports=[docker.ContainerPortArgs(internal=3000, external=GITEA_PORT)],
                volumes=[docker.ContainerVolumeArgs(host_path=f"{CI_ROOT}/gitea", container_path="/data")],
                envs=[
                    "USER_UID=1000", "USER_GID=1000",
                    "GITEA__security__INSTALL_LOCK=true",
                    data_secrets.apply(lambda d: f"GITEA__security__SECRET_KEY={d['GITEA_SECRET_KEY']}"),
                    "GITEA__database__DB_TYPE=sqlite3",
                    self.gitea_url.apply(lambda u: f"GITEA__server__ROOT_URL={u}/"),
                    address.apply(lambda a: f"GITEA__server__DOMAIN={a}"),
                    "GITEA__server__DISABLE_SSH=true",
                    "GITEA__service__DISABLE_REGISTRATION=true",
                    # Drone's webhook endpoint is on this host, which Gitea refuses by default
                    address.apply(lambda a: f"GITEA__webhook__ALLOWED_HOST_LIST={a},loopback,private"),
                ],
                healthcheck=docker.ContainerHealthcheckArgs(
                    tests=["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:3000/api/healthz"], **HEALTH),
            )
            self.gitea_setup = run_script(
                f"{name}-gitea-setup",
                connection=host.connection,
                script="gitea-setup.sh",
                env={"GITEA_CONTAINER": "gitea", "GITEA_URL": f"http://127.0.0.1:{GITEA_PORT}",
                     "ADMIN_USER": s.admin_user, "ADMIN_EMAIL": s.admin_email, "DRONE_URL": self.drone_url,
                     "CI_ROOT": CI_ROOT},
                secret_env={"ADMIN_PASSWORD": admin_password.result},
                secret_stdout=True,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gitea]),
            )

        if s.runs("drone"):
            oauth = pulumi.Output.secret(self.gitea_setup.stdout.apply(parse_oauth_app))
            rpc_secret = pulumi.Output.secret(password("drone-rpc-secret").result)
            # the admin's API token, for scripts and the drone CLI (DRONE_TOKEN)
            self.drone_admin_token = pulumi.Output.secret(password("drone-admin-token").result)
            drone = container(
                "drone", "drone", [self.gitea_setup],
                ports=[docker.ContainerPortArgs(internal=80, external=DRONE_PORT)],
                volumes=[docker.ContainerVolumeArgs(host_path=f"{CI_ROOT}/drone/data", container_path="/data")],
                envs=[
                    self.gitea_url.apply(lambda u: f"DRONE_GITEA_SERVER={u}"),
                    oauth.apply(lambda o: f"DRONE_GITEA_CLIENT_ID={o['client_id']}"),
                    oauth.apply(lambda o: f"DRONE_GITEA_CLIENT_SECRET={o['client_secret']}"),
                    rpc_secret.apply(lambda r: f"DRONE_RPC_SECRET={r}"),
                    address.apply(lambda a: f"DRONE_SERVER_HOST={a}:{DRONE_PORT}"),
                    "DRONE_SERVER_PROTO=http",
                    self.drone_admin_token.apply(
                        lambda token: f"DRONE_USER_CREATE=username:{s.admin_user},admin:true,token:{token}"),
                    "DRONE_DATABASE_DRIVER=sqlite3",
                    "DRONE_DATABASE_DATASOURCE=/data/database.sqlite",
                    data_secrets.apply(lambda d: f"DRONE_DATABASE_SECRET={d['DRONE_DATABASE_SECRET']}"),
                ],
                healthcheck=docker.ContainerHealthcheckArgs(
                    tests=["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/healthz"], **HEALTH),
            )
            runner_volumes = [docker.ContainerVolumeArgs(host_path="/var/run/docker.sock",
                                                         container_path="/var/run/docker.sock")]
            runner_envs = [
                "DRONE_RPC_PROTO=http", "DRONE_RPC_HOST=drone",
                rpc_secret.apply(lambda r: f"DRONE_RPC_SECRET={r}"),
                f"DRONE_RUNNER_NAME={host.name}", "DRONE_RUNNER_CAPACITY=2",
                # the clone credentials (the user's Gitea token) go to the clone step only
                "DRONE_NETRC_CLONE_ONLY=true",
            ]
            if "droneClone" in s.images:
                runner_envs.append(f"DRONE_RUNNER_CLONE_IMAGE={s.images['droneClone']}")
            if s.runs("registry"):
                # pipelines pull private images from the stack's registry with these credentials
                runner_volumes.append(docker.ContainerVolumeArgs(
                    host_path=f"{CI_ROOT}/drone/docker-config.json",
                    container_path="/etc/dockyard/docker-config.json", read_only=True))
                runner_envs.append("DRONE_DOCKER_CONFIG=/etc/dockyard/docker-config.json")
            container(
                "drone-runner", "droneRunner", [drone],
                volumes=runner_volumes,
                envs=runner_envs,
                healthcheck=docker.ContainerHealthcheckArgs(
                    tests=["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3000/healthz"], **HEALTH),
            )

        self.register_outputs({
            "registry": self.registry_address,
            "gitea_url": self.gitea_url,
            "drone_url": self.drone_url,
        })

    @staticmethod
    def _images_needed(s: CiSettings) -> list[str]:
        keys = [k for k in ("registry", "gitea", "drone") if s.runs(k)]
        if s.runs("drone"):
            keys += ["droneRunner"] + (["droneClone"] if "droneClone" in s.images else [])
        return keys
