"""How the platform's services are made on the swarm (ingress, panel, monitoring, logs): one
after another (Chain), their files as swarm secrets named by content, and one `service()`
for the settings every one of them shares."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_docker as docker

from .config import PlatformSettings

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
Mount = docker.ServiceTaskSpecContainerSpecMountArgs


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


def secret_file(secret: docker.Secret, path: str) -> docker.ServiceTaskSpecContainerSpecSecretArgs:
    return docker.ServiceTaskSpecContainerSpecSecretArgs(secret_id=secret.id, secret_name=secret.name,
                                                        file_name=path, file_mode=0o400)


def bind(source: str, target: str, read_only: Optional[bool] = None) -> Mount:
    return Mount(type="bind", source=source, target=target, read_only=read_only)


def volume(source: str, target: str) -> Mount:
    return Mount(type="volume", source=source, target=target)


def on_node(node_id: pulumi.Input[str]) -> pulumi.Output[str]:
    """The placement constraint of a service whose data is on that node's volume."""
    return pulumi.Output.from_input(node_id).apply(lambda node: f"node.id=={node}")


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


@dataclass(kw_only=True)
class PlatformServiceArgs:
    """What every platform service after the ingress is given (PanelArgs, MonitoringArgs, LogsArgs)."""

    settings: PlatformSettings
    # the swarm node id of the manager that keeps the service's data
    server_node_id: pulumi.Input[str]
    ingress_network_id: pulumi.Input[str]
    # what must exist before a service is declared (the swarm, images on the managers)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    # the first manager's machine: when it goes (a whole stack destroyed), its swarm's services,
    # networks and secrets went with it, and deleting them one by one would need it running
    deleted_with: Optional[pulumi.Resource] = None
    # the last platform resource made before these: they are made one after another (Chain)
    after: Optional[pulumi.Resource] = None

    def chain(self, component: pulumi.Resource) -> Chain:
        """The chain the component's resources are made in, after `after`."""
        return Chain(pulumi.ResourceOptions(parent=component, depends_on=self.depends_on,
                                            deleted_with=self.deleted_with), self.after)


def service(resource_name: str, chain: Chain, *, name: str, image: str, networks: Sequence[pulumi.Input[str]],
            replicas: Optional[int] = None, args: Optional[list[str]] = None, env: Optional[dict] = None,
            user: Optional[str] = None, mounts: Sequence[Mount] = (),
            secrets: Sequence[docker.ServiceTaskSpecContainerSpecSecretArgs] = (),
            constraints: Sequence[pulumi.Input[str]] = (), labels: Optional[list[docker.ServiceLabelArgs]] = None,
            memory_mib: Optional[int] = None, endpoint_spec: docker.ServiceEndpointSpecArgs = BY_TASK_ADDRESS,
            update_config: Optional[docker.ServiceUpdateConfigArgs] = None) -> docker.Service:
    """A platform service, next in `chain`: on every node (`replicas` None) or replicated,
    on the networks with these IDs, restarted whatever stopped it."""
    mode = (docker.ServiceModeArgs(global_=True) if replicas is None
            else docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=replicas)))
    resources = None
    if memory_mib is not None:
        resources = docker.ServiceTaskSpecResourcesArgs(
            limits=docker.ServiceTaskSpecResourcesLimitsArgs(memory_bytes=memory_mib * 1024 * 1024))
    return chain.add(docker.Service(
        resource_name,
        name=name,
        mode=mode,
        labels=labels,
        task_spec=docker.ServiceTaskSpecArgs(
            container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                image=image, args=args, env=env, user=user, mounts=list(mounts) or None,
                secrets=list(secrets) or None),
            placement=docker.ServiceTaskSpecPlacementArgs(constraints=list(constraints)) if constraints else None,
            networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=network) for network in networks],
            restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="5s"),
            resources=resources,
        ),
        endpoint_spec=endpoint_spec,
        update_config=update_config,
        opts=pulumi.ResourceOptions.merge(
            chain.opts(), pulumi.ResourceOptions(ignore_changes=PROVIDER_NOISE if env else NO_ENV_NOISE)),
    ))
