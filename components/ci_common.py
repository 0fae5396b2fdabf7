"""What the CI/CD host's services share: where their data lives, their ports and network,
the health check timing, and the options of a resource that moved into a service's own
component (its state is kept: the same name, under the component that made it before)."""
from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_docker as docker

CI_ROOT = "/srv/ci"
REGISTRY_PORT = 5000
GITEA_PORT = 3000
DRONE_PORT = 8000
NETWORK = "dockyard-ci"
HEALTH = dict(interval="30s", timeout="5s", retries=3, start_period="20s")
# ci-tls.sh's files: on the host, and where Gitea, Drone and the runner see them
TLS_DIR = f"{CI_ROOT}/tls"
TLS_MOUNT = "/etc/dockyard/tls"
# what Go (Gitea, Drone, the runner) and curl trust: the host's roots and the stack's CA
TRUST_ENV = f"SSL_CERT_FILE={TLS_MOUNT}/ca-bundle.crt"
# the same roots for the pipelines' steps: a copy no step can change (ci-tls.sh)
STEPS_BUNDLE = f"{TLS_DIR}/steps/ca-bundle.crt"


def tls_volume() -> docker.ContainerVolumeArgs:
    return docker.ContainerVolumeArgs(host_path=TLS_DIR, container_path=TLS_MOUNT, read_only=True)


def moved_child(parent: pulumi.Resource, moved_from: Optional[pulumi.Resource],
                **options) -> pulumi.ResourceOptions:
    """A child of `parent` that stacks made before the split kept under `moved_from`."""
    aliases = [pulumi.Alias(parent=moved_from)] if moved_from is not None else None
    return pulumi.ResourceOptions(parent=parent, aliases=aliases, **options)


def service_container(name: str, key: str, image: pulumi.Input[str], network: pulumi.Input[str],
                      opts: pulumi.ResourceOptions, secret_envs: bool = True, **kwargs) -> docker.Container:
    """A CI service's container: on the CI network under its own name, restarted unless
    stopped; its environment a secret unless it holds none."""
    if secret_envs:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["envs"]))
    return docker.Container(
        f"{name}-{key}",
        name=key,
        image=image,
        restart="unless-stopped",
        must_run=True,
        networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network, aliases=[key])],
        opts=opts,
        **kwargs,
    )
