"""Stack configuration, read once into typed dataclasses and validated before any resource
is declared. Every error names the config key and says what to change.

`KEYS` is the one table of the `dockyard:*` keys. Each section of it has a parser that
returns a small dataclass; parse_config runs them all, collecting every problem, and puts
their fields side by side in DockyardConfig, which is what the components read."""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Mapping, Optional

import pulumi

from .ports import INGRESS_PORTS, NEVER_PUBLIC
from .archives import archive_image_id
from .maintenance import DEFAULT_PRUNE_AFTER, DEFAULT_PRUNE_SCHEDULE
from .ssh import SSH_CONFIG_UNSAFE, SSH_USER
from .topology import (DEFAULT_MANAGERS, MANAGER_COUNT_SETTABLE, MAX_MANAGERS, TIERS, Role, build_topology,
                       manager_count_problem)

NAMESPACE = "dockyard"
CLOUDS = ("digitalocean", "local")

# How `pulumi config` holds a key: TEXT, a string; STRUCTURED, a list or an object (set with
# --path; a plain string is taken too); SECRET, set with --secret and seen here only as a
# presence flag (the program reads its value as a secret).
TEXT, STRUCTURED, SECRET = "text", "structured", "secret"

# Every dockyard: key, by the section that parses it. Nothing else is read or accepted.
KEYS: dict[str, str] = {
    # placement (_placement)
    "tier": TEXT, "cloud": TEXT, "workers": TEXT, "managers": TEXT, "allowManagerMajorityLoss": TEXT,
    # network (_network)
    "region": TEXT, "vpcCidr": TEXT, "adminCidrs": STRUCTURED, "publicPorts": STRUCTURED,
    "encryptDataPath": TEXT, "dataPathCidr": TEXT,
    # machines (_machines)
    "image": TEXT, "sizes": STRUCTURED, "volumeSizes": STRUCTURED, "disposable": TEXT, "keptVolumes": STRUCTURED,
    # ssh (_ssh)
    "sshUser": TEXT, "sshPublicKey": TEXT, "sshKeyId": TEXT, "sshPrivateKeyPath": TEXT, "sshPrivateKey": SECRET,
    # engine (_engine)
    "dockerVersion": TEXT, "registryMirrors": STRUCTURED, "preloadImages": STRUCTURED,
    "pruneSchedule": TEXT, "pruneAfter": TEXT, "swarmHeartbeat": TEXT, "swarmAutolock": TEXT,
    # nfs (_nfs)
    "nfs": STRUCTURED,
    # ci (_ci)
    "ciServices": STRUCTURED, "ciImages": STRUCTURED, "ciAdminUser": TEXT, "ciAdminEmail": TEXT,
    "registryGcSchedule": TEXT,
    # platform services on the swarm (_platform)
    "platformServices": STRUCTURED, "platformImages": STRUCTURED, "domain": TEXT, "acmeEmail": TEXT,
    "monitoringRetention": TEXT, "logsRetention": TEXT, "alertWebhook": TEXT, "alertEmail": TEXT, "alertSmtp": TEXT,
    # backups (_backup)
    "backupRepository": TEXT, "backupPassword": SECRET, "backupAccessKeyId": TEXT, "backupSecretAccessKey": SECRET,
    "backupSchedule": TEXT, "backupKeep": STRUCTURED, "backupSwarmState": TEXT, "restoreFrom": TEXT,
}
KNOWN_KEYS = tuple(KEYS)

DEFAULT_SIZES = {
    "minimal": {"master": "s-2vcpu-4gb", "cicd": "s-2vcpu-4gb", "nfs": "s-2vcpu-4gb",
                "manager": "s-2vcpu-4gb", "worker": "s-2vcpu-2gb"},
    "default": {"master": "s-2vcpu-4gb", "cicd": "s-2vcpu-4gb", "nfs": "s-1vcpu-2gb",
                "manager": "s-2vcpu-2gb", "worker": "s-2vcpu-2gb"},
    "small": {"master": "s-2vcpu-4gb", "cicd": "s-2vcpu-4gb", "nfs": "s-2vcpu-2gb",
              "manager": "s-2vcpu-2gb", "worker": "s-2vcpu-4gb"},
    "medium": {"master": "s-2vcpu-2gb", "cicd": "s-4vcpu-8gb", "nfs": "s-2vcpu-4gb",
               "manager": "s-2vcpu-4gb", "worker": "s-4vcpu-8gb"},
}
# what a systemd OnCalendar= value is made of (checked again by systemd on the host)
CALENDAR_EVENT = re.compile(r"[A-Za-z0-9*,:. /~-]+")
DEFAULT_VOLUME_GB = {"nfs": 50, "ci": 30}
# Networks Docker makes on every host: the VPC must not overlap them
DOCKER_NETWORKS = {"172.17.0.0/16": "Docker's bridge (docker0)",
                   "172.18.0.0/16": "the swarm's docker_gwbridge",
                   "10.0.0.0/24": "the swarm's ingress network"}
# Where no NFS export or mount may go: the system's own directories, Docker's and the CI volume
SYSTEM_DIRECTORIES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
                      "/sys", "/tmp", "/usr", "/var/lib/docker", "/var/lib/dockyard", "/srv/ci")
DEFAULT_VPC_CIDR = {"digitalocean": "10.210.0.0/20", "local": "10.231.0.0/24"}
# The swarm nodes' WireGuard network, which carries the overlay networks' traffic: shared
# address space (RFC 6598), which no VPC and no Docker network uses
DEFAULT_DATA_PATH_CIDR = "100.90.0.0/16"

CI_SERVICES = ("registry", "gitea", "drone")
# Pinned official images; on local VMs the registry is the one built into the VM image from
# Debian's docker-registry package (Docker Hub is not reachable from there).
DEFAULT_CI_IMAGES = {
    "registry": "registry:2.8.3",
    "gitea": "gitea/gitea:1.22.6",
    "drone": "drone/drone:2.24.0",
    "droneRunner": "drone/drone-runner-docker:1.8.3",
}
LOCAL_REGISTRY_IMAGE = "dockyard/registry:2.8.2"
# Images without a default: the runner's own default clone image (drone/git:latest) is used
# unless this names one, e.g. one preloaded on hosts that cannot reach Docker Hub.
OPTIONAL_CI_IMAGES = ("droneClone",)

PLATFORM_SERVICES = ("ingress", "panel", "monitoring", "dashboards", "logs")
# DigitalOcean's default: all but the logs, whose collector's image (promtail) is past its end
# of life, so that a stack asks for them
DEFAULT_DIGITALOCEAN_SERVICES = ("ingress", "panel", "monitoring", "dashboards")
# Pinned upstream images. Their digests could not be read on the machine this was written on
# (no Docker Hub); pin one with e.g. `traefik:v3.7.13@sha256:...` in dockyard:platformImages.
DEFAULT_PLATFORM_IMAGES = {
    "traefik": "traefik:v3.6.12",
    "portainer": "portainer/portainer-ce:2.21.5",
    "portainerAgent": "portainer/agent:2.21.5",
    # the versions Debian 12 ships, which the local e2e runs
    "prometheus": "prom/prometheus:v2.42.0",
    "alertmanager": "prom/alertmanager:v0.25.0",
    "nodeExporter": "prom/node-exporter:v1.5.0",
    "cadvisor": "gcr.io/cadvisor/cadvisor:v0.49.1",
    "grafana": "grafana/grafana:10.4.2",
    "loki": "grafana/loki:3.7.8",
    # promtail's last image (it reached its end of life in March 2026; its library lives on in
    # Loki's module, which the local e2e builds it from: README, "Central logs")
    "promtail": "grafana/promtail:3.5.1",
}
DNS_NAME = re.compile(r"(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]")
IMAGE_REF = re.compile(r"[a-z0-9][a-z0-9._/:@-]*")


class ConfigError(ValueError, pulumi.RunError):
    """Bad stack configuration; the message lists every problem found. A RunError: raised
    where the program compares the configuration with the stack's last outputs (inside an
    apply), the engine shows its message alone, without a Python traceback."""


@dataclass(frozen=True)
class Placement:
    tier: str
    cloud: str
    workers: int
    managers: int
    # dockyard:allowManagerMajorityLoss: the operator checked the managers and allows an
    # update that removes half of them or more
    allow_manager_majority_loss: bool


@dataclass(frozen=True)
class NetworkSettings:
    region: str                    # DigitalOcean region slug
    vpc_cidr: str                  # the stack's private network
    admin_cidrs: tuple[str, ...]   # who may SSH to the master
    public_ports: tuple[int, ...]  # published on the swarm nodes to the internet
    # the WireGuard network the overlays' traffic crosses between swarm nodes, encrypted;
    # None: the overlays' traffic goes in clear over the private network
    data_path_cidr: Optional[str]


@dataclass(frozen=True)
class MachineSettings:
    image: str
    sizes: Mapping[str, str]
    volume_gb: Mapping[str, int]
    disposable: bool
    # dockyard:keptVolumes: host name -> id of a volume a destroyed stack kept, to reattach
    kept_volumes: Mapping[str, str]


@dataclass(frozen=True)
class EngineSettings:
    """The Docker engine of every host."""

    docker_version: str                # a docker.io package version prefix; "" for the distribution's
    registry_mirrors: tuple[str, ...]  # for daemon.json
    preload_images: tuple[str, ...]    # docker-archive tarballs here, loaded on every host
    preload_image_ids: tuple[str, ...]  # their images' IDs: no registry gives them back, the prune keeps them
    prune_schedule: str                # systemd OnCalendar= of the nightly Docker prune
    prune_after: str                   # what the prune removes must be older: hours, e.g. 168h
    swarm_heartbeat: str               # how often nodes report to the managers, e.g. 5s
    swarm_autolock: bool               # managers keep their Raft keys locked with the unlock key


@dataclass(frozen=True)
class SshSettings:
    user: str
    public_key: str | None        # a key dockyard uploads to DigitalOcean
    key_id: str | None            # or an existing DigitalOcean key (id or fingerprint)
    private_key_path: str | None  # the key the bootstrap logs in with
    private_key_in_config: bool   # dockyard:sshPrivateKey (a secret) is set instead


@dataclass(frozen=True)
class NfsSettings:
    export_root: str
    mount_root: str


@dataclass(frozen=True)
class CiSettings:
    services: tuple[str, ...]      # which of registry, gitea, drone run on the CI/CD host
    images: Mapping[str, str]      # image reference of each service (and droneRunner)
    admin_user: str                # Gitea admin, also Drone's admin and the registry's user
    admin_email: str
    gc_schedule: str               # systemd OnCalendar= of the registry's garbage collection

    def runs(self, service: str) -> bool:
        return service in self.services


@dataclass(frozen=True)
class PlatformSettings:
    """The platform's own services on the swarm."""

    services: tuple[str, ...]      # which of ingress (traefik) and panel (Portainer) run
    images: Mapping[str, str]      # traefik, portainer, portainerAgent
    domain: str                    # services answer as NAME.<domain>
    acme_email: Optional[str]      # set: certificates from Let's Encrypt; unset: from the stack's CA
    retention: str                 # how long Prometheus keeps metrics (e.g. 15d)
    logs_retention: str            # how long Loki keeps logs (whole days, e.g. 7d)
    alert_webhook: Optional[str]   # Alertmanager's receivers; none is valid
    alert_email: Optional[str]
    alert_smtp: Optional[str]      # host:port of the mail relay for alert_email

    def runs(self, service: str) -> bool:
        return service in self.services


@dataclass(frozen=True)
class BackupSettings:
    """Backups of the hosts' data with restic (README, "Backups and restore"). The password
    and the S3 secret key are secrets the program reads itself (program.StackSettings)."""

    repository: Optional[str]      # restic repository; None: no backups
    access_key_id: Optional[str]   # of an s3: repository
    schedule: str                  # systemd OnCalendar= of the backups
    keep: Mapping[str, int]        # restic forget --keep-<period> N
    restore_from: Optional[str]    # "latest": a new host restores its data before it is used
    swarm_state: bool              # one manager backs up the swarm's Raft state too

    @property
    def enabled(self) -> bool:
        return self.repository is not None

    def forget_options(self) -> str:
        return " ".join(f"--keep-{period} {count}" for period, count in self.keep.items())


@dataclass(frozen=True)
class DockyardConfig:
    """The fields of Placement, NetworkSettings, MachineSettings and EngineSettings side by
    side, and the ssh, nfs and ci sections. No field has a default: parse_config fills each
    from its section, so a field added to one but not the other fails at once."""

    stack: str
    tier: str
    cloud: str
    workers: int
    managers: int
    allow_manager_majority_loss: bool
    region: str
    vpc_cidr: str
    admin_cidrs: tuple[str, ...]
    public_ports: tuple[int, ...]
    data_path_cidr: Optional[str]
    image: str
    sizes: Mapping[str, str]
    volume_gb: Mapping[str, int]
    disposable: bool
    kept_volumes: Mapping[str, str]
    docker_version: str
    registry_mirrors: tuple[str, ...]
    preload_images: tuple[str, ...]
    preload_image_ids: tuple[str, ...]
    prune_schedule: str
    prune_after: str
    swarm_heartbeat: str
    swarm_autolock: bool
    ssh: SshSettings
    nfs: NfsSettings
    ci: CiSettings
    platform: PlatformSettings
    backup: BackupSettings

    def size_of(self, role: Role) -> str:
        return self.sizes[role.value]


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


class _Parser:
    """Reads the keys of KEYS and collects every problem, so that one run shows all of them."""

    def __init__(self, raw: Mapping[str, Any], file_exists: Callable[[str], bool]):
        self.raw = raw
        self.file_exists = file_exists
        self.errors: list[str] = []

    def fail(self, name: str, message: str) -> None:
        self.errors.append(f"{_key(name)}: {message}")

    def value(self, name: str) -> Any:
        """The value of a key of KEYS; None when unset or empty."""
        if name not in KEYS:
            raise KeyError(f"{name} is read but not in config.KEYS")
        value = self.raw.get(name)
        return None if value is None or value == "" else value

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.value(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(name, f"expected a string, got {value!r}")
            return default
        return value

    def integer(self, name: str, default: int | None) -> int | None:
        value = self.value(name)
        if value is None:
            return default
        try:
            return int(str(value), 10)
        except ValueError:
            self.fail(name, f"expected a whole number, got {value!r}; set it with "
                            f"`pulumi config set {_key(name)} 2`")
            return default

    def boolean(self, name: str, default: bool) -> bool:
        value = self.value(name)
        if value is None:
            return default
        text = str(value).lower()
        if text in ("true", "false"):
            return text == "true"
        self.fail(name, f"expected true or false, got {value!r}")
        return default

    def string_list(self, name: str) -> tuple[str, ...]:
        value = self.value(name)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value) if v]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            self.fail(name, f"expected a list, got {value!r}; set it with "
                            f"`pulumi config set --path '{_key(name)}[0]' VALUE`")
            return ()
        return tuple(str(v) for v in value)

    def mapping(self, name: str) -> Mapping[str, Any]:
        value = self.value(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(name, f"expected an object, got {value!r}; set a field with "
                            f"`pulumi config set --path '{_key(name)}.FIELD' VALUE`")
            return {}
        return value


def _network_of(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=True)


def _cidr_problem(text: str) -> str | None:
    try:
        _network_of(text)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"{text!r} is not a CIDR block; write it like 203.0.113.7/32"
        return f"{text!r} has host bits set; did you mean {loose}?"
    return None


def parse_config(
    stack: str,
    raw: Mapping[str, Any],
    *,
    file_exists: Callable[[str], bool] = os.path.isfile,
) -> DockyardConfig:
    """Turn the raw `dockyard:*` values of a stack into a validated DockyardConfig.

    `raw` maps keys without the namespace to what `pulumi config` holds (strings, or
    lists/objects for structured values). Raises ConfigError listing every problem,
    an unknown key first (a typo would otherwise leave its setting at the default)."""
    p = _Parser(raw, file_exists)
    p.errors.extend(unknown_key_problems(raw))
    placement = _placement(p)
    platform_services = _platform_services(p, placement)
    network = _network(p, placement, ingress="ingress" in platform_services)
    machines = _machines(p, placement)
    ssh = _ssh(p, placement.cloud)
    engine = _engine(p, placement)
    nfs = _nfs(p)
    ci = _ci(p, placement)
    platform = _platform(p, placement, stack, network, platform_services)
    backup = _backup(p, placement, stack)
    if engine.swarm_autolock and backup.enabled and backup.swarm_state:
        p.fail("swarmAutolock", "an autolocked manager stays locked after its engine restarts, and the backup of "
                                "the swarm's Raft state restarts it every night: set dockyard:backupSwarmState "
                                "false (pulumi up recreates the swarm's services) or leave autolock off")
    if p.errors:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(p.errors))
    sections = (placement, network, machines, engine)
    return DockyardConfig(stack=stack, ssh=ssh, nfs=nfs, ci=ci, platform=platform, backup=backup,
                          **{f.name: getattr(s, f.name) for s in sections for f in fields(s)})


def _placement(p: _Parser) -> Placement:
    tier = p.string("tier", "default")
    if tier not in TIERS:
        p.fail("tier", f"unknown tier {tier!r}; use one of {', '.join(TIERS)}")
        tier = "default"

    cloud = p.string("cloud", "local")
    if cloud not in CLOUDS:
        p.fail("cloud", f"unknown cloud {cloud!r}; use one of {', '.join(CLOUDS)}")
        cloud = "local"

    workers = p.integer("workers", 1)
    if workers is not None and workers < 0:
        p.fail("workers", f"must be 0 or more, got {workers}")
    workers = max(workers or 0, 0)

    managers = p.integer("managers", None)
    problem = None if managers is None else manager_count_problem(tier, managers)
    if problem:
        if tier not in MANAGER_COUNT_SETTABLE:
            counts = [str(n) for n in range(3, MAX_MANAGERS + 1, 2)]
            problem += (f"; remove the key, or choose tier {' or '.join(MANAGER_COUNT_SETTABLE)} to run "
                        f"{', '.join(counts[:-1])} or {counts[-1]} managers")
        p.fail("managers", problem)
    if managers is None or problem:
        managers = DEFAULT_MANAGERS[tier]
    return Placement(tier, cloud, workers, managers,
                     allow_manager_majority_loss=p.boolean("allowManagerMajorityLoss", False))


def _network(p: _Parser, placement: Placement, ingress: bool) -> NetworkSettings:
    region = p.string("region", "fra1")
    if not re.fullmatch(r"[a-z]{3}[0-9]", region):
        p.fail("region", f"{region!r} is not a DigitalOcean region slug such as fra1 or nyc3")

    vpc_cidr = p.string("vpcCidr", DEFAULT_VPC_CIDR[placement.cloud])
    problem = _cidr_problem(vpc_cidr)
    if problem:
        p.fail("vpcCidr", problem)
    elif _network_of(vpc_cidr).version != 4 or not _network_of(vpc_cidr).is_private:
        p.fail("vpcCidr", f"{vpc_cidr} must be a private IPv4 range such as 10.210.0.0/20")
    else:
        for docker_net, what in DOCKER_NETWORKS.items():
            if _network_of(vpc_cidr).overlaps(ipaddress.ip_network(docker_net)):
                p.fail("vpcCidr", f"{vpc_cidr} overlaps {docker_net}, {what} on every host, and the hosts "
                                  f"could not reach each other there; pick another range, e.g. 10.210.0.0/20")

    admin_cidrs = p.string_list("adminCidrs")
    for cidr in admin_cidrs:
        problem = _cidr_problem(cidr)
        if problem:
            p.fail("adminCidrs", problem)
        elif _network_of(cidr).prefixlen == 0:
            p.fail("adminCidrs", f"{cidr} opens SSH on the master to the whole internet; "
                                 f"list only the networks you administer from")
    if placement.cloud == "digitalocean" and not admin_cidrs:
        p.fail("adminCidrs", "list the networks allowed to SSH to the master, e.g. "
                             "`pulumi config set --path 'dockyard:adminCidrs[0]' 203.0.113.7/32`")

    public_ports: list[int] = []
    # by default the swarm's routing mesh publishes 80 and 443 on every node, unless the
    # ingress runs: then they are traefik's, on the managers (_platform)
    default_ports = () if ingress else ("80", "443")
    for port in p.string_list("publicPorts") if "publicPorts" in p.raw else default_ports:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            p.fail("publicPorts", f"{port!r} is not a TCP port")
        elif int(port) in NEVER_PUBLIC:
            p.fail("publicPorts", f"port {port} is an SSH, NFS or Docker control port and must "
                                  f"never be published to the internet; remove it")
        else:
            public_ports.append(int(port))
    return NetworkSettings(region, vpc_cidr, admin_cidrs, tuple(public_ports), _data_path(p, vpc_cidr))


def _data_path(p: _Parser, vpc_cidr: str) -> Optional[str]:
    """dockyard:encryptDataPath and dataPathCidr: where the overlays' traffic goes. Each swarm
    node's WireGuard address is its private address's offset in the VPC, at the same offset
    in this network, so the network must be at least as large as the VPC."""
    cidr = p.string("dataPathCidr", DEFAULT_DATA_PATH_CIDR)
    if not p.boolean("encryptDataPath", True):
        if "dataPathCidr" in p.raw:
            p.fail("dataPathCidr", "is used only with dockyard:encryptDataPath true; remove it")
        return None
    problem = _cidr_problem(cidr)
    if problem:
        p.fail("dataPathCidr", problem)
        return None
    network = _network_of(cidr)
    if (network.version != 4 or network.is_global or network.is_loopback or network.is_link_local
            or network.is_unspecified or network.is_reserved or network.is_multicast
            or network.overlaps(ipaddress.ip_network("0.0.0.0/8"))):
        p.fail("dataPathCidr", f"{cidr} must be a private (RFC 1918) or shared (RFC 6598) IPv4 range such as "
                               f"{DEFAULT_DATA_PATH_CIDR}")
        return None
    taken = {**DOCKER_NETWORKS, vpc_cidr: "the stack's VPC (dockyard:vpcCidr)"}
    for other, what in taken.items():
        if _cidr_problem(other) is None and network.overlaps(_network_of(other)):
            p.fail("dataPathCidr", f"{cidr} overlaps {other}, {what}; pick another range, "
                                   f"e.g. {DEFAULT_DATA_PATH_CIDR}")
            return None
    if _cidr_problem(vpc_cidr) is None and network.prefixlen > _network_of(vpc_cidr).prefixlen:
        p.fail("dataPathCidr", f"{cidr} is smaller than the VPC {vpc_cidr}: each swarm node's address "
                               f"in it is its private address's place in the VPC; use a /{_network_of(vpc_cidr).prefixlen} "
                               f"or larger")
        return None
    return cidr


def _machines(p: _Parser, placement: Placement) -> MachineSettings:
    tier, cloud = placement.tier, placement.cloud
    sizes = dict(DEFAULT_SIZES[tier])
    for role, size in p.mapping("sizes").items():
        if role not in sizes:
            p.fail("sizes", f"unknown role {role!r}; the roles are {', '.join(sizes)}")
        elif not isinstance(size, str) or not re.fullmatch(r"[a-z0-9-]+", size):
            p.fail("sizes", f"size of {role} must be a droplet size slug such as s-2vcpu-4gb")
        else:
            sizes[role] = size

    volume_gb = dict(DEFAULT_VOLUME_GB)
    for purpose, gb in p.mapping("volumeSizes").items():
        if purpose not in volume_gb:
            p.fail("volumeSizes", f"unknown volume {purpose!r}; the volumes are nfs and ci")
            continue
        try:
            volume_gb[purpose] = int(gb)
        except (TypeError, ValueError):
            volume_gb[purpose] = 0
        if volume_gb[purpose] < 1:
            p.fail("volumeSizes", f"{purpose} must be a size in GiB of at least 1, got {gb!r}")

    kept_volumes = {str(k): str(v) for k, v in p.mapping("keptVolumes").items()}
    if kept_volumes:
        with_volume = {h.name for h in build_topology(tier, placement.workers, placement.managers).hosts
                       if h.volume}
        for host, volume_id in kept_volumes.items():
            if host not in with_volume:
                p.fail("keptVolumes", f"host {host!r} has no data volume in tier {tier}; "
                                      f"the hosts with one are {', '.join(sorted(with_volume))}")
            if not re.fullmatch(r"[0-9a-f-]{36}", volume_id):
                p.fail("keptVolumes", f"{host}: {volume_id!r} is not a volume id; find it with "
                                      f"`doctl compute volume list` (name dockyard-<stack>-{host}-...)")
        if cloud != "digitalocean":
            p.fail("keptVolumes", "only DigitalOcean volumes are kept; local stacks are disposable")
    return MachineSettings(image=p.string("image", "ubuntu-24-04-x64"), sizes=sizes, volume_gb=volume_gb,
                           disposable=p.boolean("disposable", cloud == "local"), kept_volumes=kept_volumes)


def _ssh(p: _Parser, cloud: str) -> SshSettings:
    path = p.string("sshPrivateKeyPath")
    ssh = SshSettings(
        user=_ssh_user(p),
        public_key=p.string("sshPublicKey"),
        key_id=p.string("sshKeyId"),
        private_key_path=os.path.expanduser(path) if path else path,
        private_key_in_config=bool(p.value("sshPrivateKey")),
    )
    if cloud == "digitalocean":
        if not ssh.public_key and not ssh.key_id:
            p.fail("sshPublicKey", "set the public key dockyard uploads (or dockyard:sshKeyId, "
                                   "the id or fingerprint of a key already in DigitalOcean)")
        if ssh.public_key and not re.match(r"(ssh-(ed25519|rsa)|ecdsa-sha2-\S+) \S+", ssh.public_key):
            p.fail("sshPublicKey", "must be an OpenSSH public key line (ssh-ed25519 AAAA...)")
        if not ssh.private_key_in_config and not ssh.private_key_path:
            p.fail("sshPrivateKeyPath", "set the path of the private key the bootstrap logs in "
                                        "with, or store the key itself with "
                                        "`pulumi config set --secret dockyard:sshPrivateKey < KEYFILE`")
    if ssh.private_key_path and SSH_CONFIG_UNSAFE.search(ssh.private_key_path):
        p.fail("sshPrivateKeyPath", f"{ssh.private_key_path!r} cannot go in the exported ssh_config: it holds a "
                                    f"line break, a control character, '\"' or '\\'; move the key to a "
                                    f"path without them")
    elif ssh.private_key_path and not ssh.private_key_in_config and not p.file_exists(ssh.private_key_path):
        p.fail("sshPrivateKeyPath", f"no file at {ssh.private_key_path}; create the key with "
                                    f"`ssh-keygen -t ed25519 -f {ssh.private_key_path}` or fix the path")
    return ssh


def _ssh_user(p: _Parser) -> str:
    user = p.string("sshUser", "root")
    if not SSH_USER.fullmatch(user):
        p.fail("sshUser", f"{user!r} is not a POSIX user name: up to 32 lowercase letters, digits, '_' or '-', "
                          f"starting with a letter or '_'; set the user the hosts' image logs in with, "
                          f"e.g. `pulumi config set dockyard:sshUser root`")
        return "root"
    return user


def _engine(p: _Parser, placement: Placement) -> EngineSettings:
    docker_version = p.string("dockerVersion", "")
    if docker_version and not re.fullmatch(r"[0-9][0-9A-Za-z.+~:-]*", docker_version):
        p.fail("dockerVersion", f"{docker_version!r} is not a package version prefix such as 27.5")

    registry_mirrors = p.string_list("registryMirrors")
    for mirror in registry_mirrors:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?/?", mirror):
            p.fail("registryMirrors", f"{mirror!r} must be a URL such as https://mirror.example.com")

    preload_images = tuple(os.path.expanduser(path) for path in p.string_list("preloadImages"))
    image_ids = []
    for path in preload_images:
        if not p.file_exists(path):
            p.fail("preloadImages", f"no file at {path}; list docker-archive tarballs (docker save -o FILE IMAGE)")
            continue
        try:
            image_ids.append(archive_image_id(path))
        except ValueError as error:
            p.fail("preloadImages", f"{error}; write one with docker save -o FILE IMAGE")
    prune_schedule = p.string("pruneSchedule", DEFAULT_PRUNE_SCHEDULE)
    if not CALENDAR_EVENT.fullmatch(prune_schedule):
        p.fail("pruneSchedule", f"{prune_schedule!r} is not a systemd calendar event such as "
                                f"'*-*-* 03:30:00' or 'daily'")
    prune_after = p.string("pruneAfter", DEFAULT_PRUNE_AFTER)
    if not re.fullmatch(r"[0-9]{1,6}h", prune_after):
        p.fail("pruneAfter", f"{prune_after!r} is not a number of hours such as 168h (a week)")
    # Docker's 5 s everywhere but on local VMs: on an emulated CPU a busy manager missed its
    # own node's heartbeats, declared it down and rescheduled every task, over and over
    heartbeat = p.string("swarmHeartbeat", "20s" if placement.cloud == "local" else "5s")
    if not re.fullmatch(r"[1-9][0-9]{0,2}s", heartbeat):
        p.fail("swarmHeartbeat", f"{heartbeat!r} is not a number of seconds such as 5s")
    return EngineSettings(docker_version, registry_mirrors, preload_images, tuple(image_ids), prune_schedule,
                          prune_after, heartbeat, p.boolean("swarmAutolock", False))


def _nfs(p: _Parser) -> NfsSettings:
    nfs_raw = p.mapping("nfs")
    nfs = NfsSettings(str(nfs_raw.get("exportRoot", "/srv/nfs")), str(nfs_raw.get("mountRoot", "/mnt/nfs")))
    paths = (("exportRoot", nfs.export_root), ("mountRoot", nfs.mount_root))
    for key, path in paths:
        if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", path) or ".." in path.split("/"):
            p.fail("nfs", f"{key} must be an absolute path without spaces or '..', got {path!r}")
        elif clash := _system_path_clash(path):
            p.fail("nfs", f"{key} {path} {clash}; use a directory of its own such as "
                          f"{'/srv/nfs' if key == 'exportRoot' else '/mnt/nfs'}")
    if _within(nfs.export_root, nfs.mount_root) or _within(nfs.mount_root, nfs.export_root):
        p.fail("nfs", f"exportRoot {nfs.export_root} and mountRoot {nfs.mount_root} must not contain each "
                      f"other: a host that serves and mounts would mount an export over itself")
    return nfs


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _system_path_clash(path: str) -> Optional[str]:
    """Why a data directory may not be at `path`, or None."""
    for system in SYSTEM_DIRECTORIES:
        if _within(path, system):
            return f"is in {system}, which the system owns"
        if _within(system, path):
            return f"contains {system}: exporting or mounting over it would break the host"
    return None


def _ci(p: _Parser, placement: Placement) -> CiSettings:
    tier, cloud = placement.tier, placement.cloud
    if tier == "minimal":
        default_services: tuple[str, ...] = ()
    elif cloud == "local":
        # Gitea and Drone images must be built and preloaded first (README, "CI/CD on local VMs")
        default_services = ("registry",)
    else:
        default_services = CI_SERVICES
    services = p.string_list("ciServices") if "ciServices" in p.raw else default_services
    for service in services:
        if service not in CI_SERVICES:
            p.fail("ciServices", f"unknown service {service!r}; choose from {', '.join(CI_SERVICES)}")
    if tier == "minimal" and services:
        p.fail("ciServices", "the minimal tier has no CI/CD host and uses third-party CI (thesis 5.1); "
                             "remove the key, or choose tier default, small or medium")
    if "drone" in services and "gitea" not in services:
        p.fail("ciServices", "drone logs in and fetches code through gitea; add gitea or remove drone")

    images = dict(DEFAULT_CI_IMAGES)
    if cloud == "local":
        images["registry"] = LOCAL_REGISTRY_IMAGE
    for key, ref in p.mapping("ciImages").items():
        if key not in images and key not in OPTIONAL_CI_IMAGES:
            p.fail("ciImages", f"unknown image {key!r}; the images are {', '.join([*images, *OPTIONAL_CI_IMAGES])}")
        elif not isinstance(ref, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", ref) or ref.endswith(":latest"):
            p.fail("ciImages", f"{key}: {ref!r} must be a pinned image reference such as gitea/gitea:1.22.6 "
                               f"(not :latest, so that an upgrade shows in `pulumi preview`)")
        else:
            images[key] = ref

    admin_user = p.string("ciAdminUser", "dockyard")
    # Gitea reserves "admin" and names with characters other than these
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{1,38}", admin_user) or admin_user in ("admin", "root"):
        p.fail("ciAdminUser", f"{admin_user!r} is not allowed as Gitea's admin; use lowercase letters, "
                              f"digits, '.', '_' or '-', and not admin or root")
    admin_email = p.string("ciAdminEmail", f"{admin_user}@localhost")
    if not re.fullmatch(r"[^@\s]+@[^@\s]+", admin_email):
        p.fail("ciAdminEmail", f"{admin_email!r} is not an email address")
    gc_schedule = p.string("registryGcSchedule", "Sun *-*-* 03:00:00")
    if not CALENDAR_EVENT.fullmatch(gc_schedule):
        p.fail("registryGcSchedule", f"{gc_schedule!r} is not a systemd calendar event such as "
                                     f"'Sun *-*-* 03:00:00' or 'daily'")
    return CiSettings(tuple(services), images, admin_user, admin_email, gc_schedule)


def _platform_services(p: _Parser, placement: Placement) -> tuple[str, ...]:
    """dockyard:platformServices, or the default: DEFAULT_DIGITALOCEAN_SERVICES on
    DigitalOcean; none on local VMs, which cannot pull images (README, "Platform services on
    local VMs")."""
    if "platformServices" in p.raw:
        return p.string_list("platformServices")
    return DEFAULT_DIGITALOCEAN_SERVICES if placement.cloud == "digitalocean" else ()


def _platform(p: _Parser, placement: Placement, stack: str, network: NetworkSettings,
              services: tuple[str, ...]) -> PlatformSettings:
    for service in services:
        if service not in PLATFORM_SERVICES:
            p.fail("platformServices", f"unknown service {service!r}; choose from {', '.join(PLATFORM_SERVICES)}")
    for needs_ingress in ("panel", "monitoring", "dashboards", "logs"):
        if needs_ingress in services and "ingress" not in services:
            p.fail("platformServices", f"{needs_ingress!r} is served through the ingress; add ingress or remove "
                                       f"{needs_ingress}")
    if "dashboards" in services and "monitoring" not in services:
        p.fail("platformServices", "the dashboards show what monitoring collects; add monitoring or remove dashboards")
    if "ingress" in services:
        for port in sorted(set(INGRESS_PORTS) & set(network.public_ports)):
            p.fail("publicPorts", f"port {port} is the ingress's (traefik publishes 80 and 443 on the managers); "
                                  f"remove it from dockyard:publicPorts and route the app through traefik labels, "
                                  f"or remove ingress from dockyard:platformServices")

    images = dict(DEFAULT_PLATFORM_IMAGES)
    for key, ref in p.mapping("platformImages").items():
        if key not in images:
            p.fail("platformImages", f"unknown image {key!r}; the images are {', '.join(images)}")
        elif not isinstance(ref, str) or not IMAGE_REF.fullmatch(ref) or ref.endswith(":latest"):
            p.fail("platformImages", f"{key}: {ref!r} must be a pinned image reference such as "
                                     f"{DEFAULT_PLATFORM_IMAGES[key]} (not :latest, so that an upgrade shows in "
                                     f"`pulumi preview`)")
        else:
            images[key] = ref

    default_domain = f"{stack.lower()}.dockyard.internal"
    domain = p.string("domain", default_domain).lower().rstrip(".")
    if not DNS_NAME.fullmatch(domain):
        p.fail("domain", f"{domain!r} is not a DNS name such as apps.example.com; services answer as "
                         f"NAME.<domain>")
    acme_email = p.string("acmeEmail")
    if acme_email is not None:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", acme_email):
            p.fail("acmeEmail", f"{acme_email!r} is not an email address")
        if "domain" not in p.raw:
            p.fail("acmeEmail", "Let's Encrypt certifies a domain you own: set dockyard:domain too, with DNS "
                                "records for it pointing at the managers")
        if placement.cloud == "local":
            p.fail("acmeEmail", "Let's Encrypt cannot reach local VMs; remove the key (the ingress then "
                                "serves certificates of the stack's own CA)")
    retention = p.string("monitoringRetention", "15d")
    if not re.fullmatch(r"[1-9][0-9]{0,4}[hdwy]", retention):
        p.fail("monitoringRetention", f"{retention!r} is not a duration such as 15d, 4w or 720h")
    logs_retention = p.string("logsRetention", "7d")
    # Loki's compactor deletes by whole days of its daily index
    if not re.fullmatch(r"[1-9][0-9]{0,4}[dwy]", logs_retention):
        p.fail("logsRetention", f"{logs_retention!r} is not a whole number of days such as 7d, 2w or 1y")
    webhook = p.string("alertWebhook")
    if webhook is not None and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/%?=&-]*)?", webhook):
        p.fail("alertWebhook", f"{webhook!r} must be an http(s) URL such as https://hooks.example.com/alerts")
    email = p.string("alertEmail")
    smtp = p.string("alertSmtp")
    if email is not None:
        if not re.fullmatch(r"[^@\s\"]+@[A-Za-z0-9.-]+\.[A-Za-z]+", email):
            p.fail("alertEmail", f"{email!r} is not an email address")
        if smtp is None:
            p.fail("alertSmtp", "set the mail relay alerts go through, e.g. smtp.example.com:587")
    if smtp is not None and not re.fullmatch(r"[A-Za-z0-9.-]+:[0-9]{1,5}", smtp):
        p.fail("alertSmtp", f"{smtp!r} must be host:port, e.g. smtp.example.com:587")
    return PlatformSettings(tuple(services), images, domain, acme_email, retention, logs_retention, webhook, email,
                            smtp)


BACKUP_PERIODS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
DEFAULT_BACKUP_KEEP = {"daily": 7, "weekly": 4, "monthly": 6}
# restic's repository kinds the hosts can reach with what the stack gives them: S3 (DigitalOcean
# Spaces) with its keys, and restic's REST server (without a password: on a private network)
BACKUP_REPOSITORY = re.compile(r"(s3|rest):https?://[A-Za-z0-9._~/:%+-]+")


def _backup(p: _Parser, placement: Placement, stack: str) -> BackupSettings:
    repository = p.string("backupRepository")
    if repository is not None:
        if not BACKUP_REPOSITORY.fullmatch(repository):
            p.fail("backupRepository", f"{repository!r} is not a restic repository the hosts can reach, such as "
                                       f"s3:https://fra1.digitaloceanspaces.com/BUCKET/{stack} or "
                                       f"rest:http://10.0.0.5:8000/{stack}")
        if re.match(r"(s3|rest):https?://[^/]*@", repository):
            p.fail("backupRepository", "holds a user name or password, which would be in clear in the stack's "
                                       "settings; give S3 keys with dockyard:backupAccessKeyId and "
                                       "`pulumi config set --secret dockyard:backupSecretAccessKey`")
        if not p.value("backupPassword"):
            p.fail("backupPassword", "the repository is encrypted with a password the stack keeps: "
                                     "`pulumi config set --secret dockyard:backupPassword` (keep a copy: "
                                     "without it no backup can be read, by this stack or a new one)")
        if repository.startswith("s3:") and not (p.value("backupAccessKeyId") and p.value("backupSecretAccessKey")):
            p.fail("backupAccessKeyId", "an s3: repository needs the bucket's keys: dockyard:backupAccessKeyId and "
                                        "`pulumi config set --secret dockyard:backupSecretAccessKey`")
    else:
        for key in ("backupPassword", "backupAccessKeyId", "backupSecretAccessKey", "backupSchedule", "backupKeep",
                    "backupSwarmState", "restoreFrom"):
            if p.value(key):
                p.fail(key, "has no effect without dockyard:backupRepository; set the repository or remove the key")

    access_key_id = p.string("backupAccessKeyId")
    if access_key_id is not None and not re.fullmatch(r"[A-Za-z0-9]{8,128}", access_key_id):
        p.fail("backupAccessKeyId", f"{access_key_id!r} is not an access key id (letters and digits)")
    schedule = p.string("backupSchedule", "*-*-* 02:30:00")
    if not CALENDAR_EVENT.fullmatch(schedule):
        p.fail("backupSchedule", f"{schedule!r} is not a systemd calendar event such as '*-*-* 02:30:00' or 'hourly'")
    keep: dict[str, int] = {}
    raw_keep = p.mapping("backupKeep") if "backupKeep" in p.raw else DEFAULT_BACKUP_KEEP
    for period, count in raw_keep.items():
        if period not in BACKUP_PERIODS:
            p.fail("backupKeep", f"unknown period {period!r}; use {', '.join(BACKUP_PERIODS)}")
        elif not str(count).isdigit() or int(count) < 1:
            p.fail("backupKeep", f"{period}: {count!r} must be a whole number of snapshots, 1 or more")
        else:
            keep[period] = int(count)
    if not raw_keep:
        p.fail("backupKeep", "keeps nothing; give at least one period, e.g. daily: 7")
    restore_from = p.string("restoreFrom")
    if restore_from is not None and restore_from != "latest":
        p.fail("restoreFrom", f"{restore_from!r}: only latest (each host's newest snapshot) is supported")
    return BackupSettings(repository, access_key_id, schedule, keep, restore_from,
                          swarm_state=p.boolean("backupSwarmState", True))


def unknown_key_problems(names: Iterable[str]) -> list[str]:
    """An error for each name that is not a dockyard key, with the closest one when a key is close."""
    by_lower = {key.lower(): key for key in KNOWN_KEYS}
    problems = []
    for name in sorted(set(names) - set(KNOWN_KEYS)):
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
        if close:
            meant = _key(by_lower[close[0]])
            hint = (f"did you mean {meant}? Move the value: `pulumi config rm {_key(name)}`, "
                    f"then `pulumi config set {meant} VALUE`")
        else:
            hint = (f"remove it with `pulumi config rm {_key(name)}`; the keys are "
                    f"{', '.join(sorted(KNOWN_KEYS, key=str.lower))}")
        problems.append(f"{_key(name)}: unknown key, its value would be ignored; {hint}")
    return problems


def configured_keys() -> list[str]:
    """Every `dockyard:*` key the stack sets, without the namespace.

    pulumi.Config cannot list keys. The language host hands the program the whole stack
    config as JSON in PULUMI_CONFIG (keys "dockyard:name"), which the runtime loads into
    its config map before the program runs; both are read, so that config set through
    `pulumi.runtime.set_all_config` (mocks, the automation API) counts too."""
    from pulumi.runtime import config as runtime_config

    names = set(runtime_config.get_config_env())
    loaded = getattr(runtime_config, "CONFIG", None)
    if loaded is not None:
        names |= set(loaded.get())
    prefix = _key("")
    return sorted(name[len(prefix):] for name in names if name.startswith(prefix))


def read_raw_config(cfg, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The stack's `dockyard:*` values as plain data (secrets only as a presence flag).

    `names` are the keys the stack sets (default: configured_keys()); an unknown one is
    kept as a presence flag, so that parse_config names it."""
    raw: dict[str, Any] = {}
    for name in configured_keys() if names is None else names:
        if name not in KNOWN_KEYS:
            raw[name] = True  # presence only: its value is never used and may be a secret
    for key, held in KEYS.items():
        if held == SECRET:
            value = True if cfg.get_secret(key) is not None else None  # presence only
        elif held == STRUCTURED:
            value = _structured(cfg, key)
        else:
            value = cfg.get(key)
        if value is not None:
            raw[key] = value
    return raw


def _structured(cfg, key: str) -> Any:
    try:
        return cfg.get_object(key)
    except pulumi.ConfigTypeError:  # a plain string where a list or object was expected
        return cfg.get(key)
