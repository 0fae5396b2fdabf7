"""The CI/CD host: a Docker registry (images), Gitea (code) and Drone (builds), each its own
component (registry.py, gitea.py, drone.py), as containers that pulumi-docker manages over
SSH, so an image bump is a diff in `pulumi preview`. This component holds what they share:
the CI network, the pulled images and the secrets kept with Gitea's and Drone's data.

The docker provider for the CI/CD host comes in through `opts.providers`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_docker as docker

from .authority import StackAuthority, pem_digest
from .ci_common import CI_ROOT, NETWORK
from .config import CiSettings
from .drone import Drone, DroneArgs
from .gitea import Gitea, GiteaArgs, parse_assignments
from .hosts import Host
from .registry import Registry, RegistryArgs
from .remote import run_script


def parse_data_secrets(stdout: str) -> dict[str, str]:
    """Gitea's SECRET_KEY and Drone's database secret, from ci-secrets.sh's output."""
    return parse_assignments(stdout, "ci-secrets.sh", "GITEA_SECRET_KEY", "DRONE_DATABASE_SECRET")


@dataclass
class CiCdArgs:
    stack: str
    settings: CiSettings
    host: Host                         # the CI/CD host
    url_address: pulumi.Input[str]     # where users reach Gitea and Drone
    clients: list[Host]                # every host of the stack: each trusts the registry's CA
    logins: list[str]                  # hosts whose docker CLI logs in to the registry
    # per host: what must exist before anything uses its engine (the engine, preloaded images)
    engine_ready: dict[str, list[pulumi.Resource]] = field(default_factory=dict)
    # signs the registry's, Gitea's and Drone's certificates; needed when one of them runs
    authority: Optional[StackAuthority] = None


def images_needed(settings: CiSettings) -> list[str]:
    keys = [k for k in ("registry", "gitea", "drone") if settings.runs(k)]
    if settings.runs("drone"):
        keys += ["droneRunner"] + (["droneClone"] if "droneClone" in settings.images else [])
    return keys


class CiCd(pulumi.ComponentResource):
    """Outputs: `registry` (host:port), `gitea_url`, `drone_url`; secrets for the exports:
    `registry_password`, `admin_password`, `drone_admin_token`."""

    def __init__(self, name: str, args: CiCdArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:role:CiCd", name, None, opts)
        s, host = args.settings, args.host
        self.registry_address = self.ca_certificate = self.registry_password = None
        self.admin_password = self.gitea_url = self.drone_url = self.drone_admin_token = None
        on_ci_host = args.engine_ready.get(host.name, [])
        self.network = docker.Network(f"{name}-network", name=NETWORK,
                                      opts=pulumi.ResourceOptions(parent=self, depends_on=on_ci_host))
        images = {key: docker.RemoteImage(f"{name}-{key}-image", name=s.images[key], keep_locally=True,
                                          opts=pulumi.ResourceOptions(parent=self, depends_on=on_ci_host))
                  for key in images_needed(s)}
        # the services are children of their own components; `moved_from` keeps the state of
        # stacks made when they were this component's
        services = pulumi.ResourceOptions(parent=self)
        files_written: list[pulumi.Resource] = list(on_ci_host)
        if s.runs("registry"):
            if args.authority is None:
                raise ValueError("the registry's certificate needs the stack's authority (CiCdArgs.authority)")
            registry = Registry(name, RegistryArgs(
                host=host, user=s.admin_user, gc_schedule=s.gc_schedule, image=images["registry"].image_id,
                network=self.network.name, authority=args.authority, clients=args.clients, logins=args.logins,
                engine_ready=args.engine_ready, moved_from=self), opts=services)
            self.registry_address, self.ca_certificate = registry.address, registry.ca_certificate
            self.registry_password = registry.password
            files_written = [registry.files]

        if s.runs("gitea"):
            if args.authority is None:
                raise ValueError("Gitea's and Drone's certificate needs the stack's authority (CiCdArgs.authority)")
            # kept on the CI volume with the data they protect, not made by the stack: a
            # recreated stack that adopts the volume must decrypt what is on it
            self.data_secrets = run_script(
                f"{name}-data-secrets", connection=host.connection, script="ci-secrets.sh",
                env={"CI_ROOT": CI_ROOT}, secret_stdout=True,
                opts=pulumi.ResourceOptions(parent=self, depends_on=files_written))
            data_secrets = pulumi.Output.secret(self.data_secrets.stdout.apply(parse_data_secrets))
            tls_files, tls_digest = self._web_tls(name, host, args)
            gitea = Gitea(name, GiteaArgs(
                host=host, admin_user=s.admin_user, admin_email=s.admin_email, image=images["gitea"].image_id,
                network=self.network.name, url_address=args.url_address,
                secret_key=data_secrets.apply(lambda d: d["GITEA_SECRET_KEY"]), after=[*files_written, tls_files],
                tls_digest=tls_digest, moved_from=self), opts=services)
            self.gitea_url, self.drone_url, self.admin_password = gitea.url, gitea.drone_url, gitea.admin_password

            if s.runs("drone"):
                drone = Drone(name, DroneArgs(
                    host=host, admin_user=s.admin_user, image=images["drone"].image_id,
                    runner_image=images["droneRunner"].image_id, network=self.network.name,
                    url_address=args.url_address, gitea_url=gitea.url, oauth_app=gitea.oauth_app,
                    database_secret=data_secrets.apply(lambda d: d["DRONE_DATABASE_SECRET"]), after=[gitea.setup],
                    clone_image=s.images.get("droneClone"), registry_login=s.runs("registry"),
                    tls_digest=tls_digest, moved_from=self),
                    opts=services)
                self.drone_admin_token = drone.admin_token

        self.register_outputs({
            "registry": self.registry_address,
            "gitea_url": self.gitea_url,
            "drone_url": self.drone_url,
        })

    def _web_tls(self, name: str, host: Host, args: CiCdArgs) -> tuple[pulumi.Resource, pulumi.Output[str]]:
        """The certificate Gitea and Drone serve, on the CI volume with the CA bundle their
        clients trust (ci-tls.sh); and its digest, which restarts them when it is renewed.
        Its names: users' address, the private one (the swarm's monitoring), loopback (the
        setup script, the health checks), the names on the CI network (the runner)."""
        addresses = pulumi.Output.all(host.private_ip, args.url_address).apply(
            lambda found: sorted({*found, "127.0.0.1"}))
        issued = args.authority.issue(f"{name}-web", self, "gitea", dns_names=["gitea", "drone", "localhost"],
                                      ip_addresses=addresses)
        files = run_script(
            f"{name}-tls-files", connection=host.connection, script="ci-tls.sh",
            env={"CI_ROOT": CI_ROOT, "CA_CERT": args.authority.cert_pem},
            secret_env={"WEB_CERT": issued.cert_pem, "WEB_KEY": issued.private_key_pem},
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.engine_ready.get(host.name, [])))
        return files, pem_digest(issued.cert_pem, args.authority.cert_pem)
