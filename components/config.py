"""Stack configuration, read once into typed dataclasses and validated before any resource
is declared. Every error names the config key and says what to change."""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .topology import DEFAULT_MANAGERS, MANAGER_COUNT_SETTABLE, MAX_MANAGERS, TIERS, Role, build_topology

NAMESPACE = "dockyard"
CLOUDS = ("digitalocean", "local")

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
DEFAULT_VOLUME_GB = {"nfs": 50, "ci": 30}
DEFAULT_VPC_CIDR = {"digitalocean": "10.210.0.0/20", "local": "10.231.0.0/24"}

# The login user goes into the exported ssh_config and ssh's command lines: a POSIX user
# name only (useradd's default rule), so that it can never carry a second directive.
SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# What no ssh_config value may hold, quoted or not: a line end, a control character, the
# quote that would end the quoting, or the backslash that escapes it.
SSH_CONFIG_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')


class ConfigError(ValueError):
    """Bad stack configuration; the message lists every problem found."""


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
class DockyardConfig:
    stack: str
    tier: str
    cloud: str
    workers: int
    managers: int
    region: str
    vpc_cidr: str
    image: str
    sizes: Mapping[str, str]
    volume_gb: Mapping[str, int]
    ssh: SshSettings
    admin_cidrs: tuple[str, ...]
    public_ports: tuple[int, ...]
    docker_version: str
    registry_mirrors: tuple[str, ...]
    nfs: NfsSettings
    disposable: bool
    preload_images: tuple[str, ...] = field(default=())
    # dockyard:allowManagerMajorityLoss: the operator checked the managers and allows an
    # update that removes half of them or more
    allow_manager_majority_loss: bool = False
    # dockyard:keptVolumes: host name -> id of a volume a destroyed stack kept, to reattach
    kept_volumes: Mapping[str, str] = field(default_factory=dict)
    ci: CiSettings = field(default_factory=lambda: CiSettings((), dict(DEFAULT_CI_IMAGES), "dockyard",
                                                              "dockyard@localhost", "Sun *-*-* 03:00:00"))

    def size_of(self, role: Role) -> str:
        return self.sizes[role.value]


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


class _Parser:
    """Collects every problem so that one run shows all of them."""

    def __init__(self, raw: Mapping[str, Any]):
        self.raw = raw
        self.errors: list[str] = []

    def fail(self, name: str, message: str) -> None:
        self.errors.append(f"{_key(name)}: {message}")

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            self.fail(name, f"expected a string, got {value!r}")
            return default
        return value

    def integer(self, name: str, default: int | None) -> int | None:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        try:
            return int(str(value), 10)
        except ValueError:
            self.fail(name, f"expected a whole number, got {value!r}; set it with "
                            f"`pulumi config set {_key(name)} 2`")
            return default

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        text = str(value).lower()
        if text in ("true", "false"):
            return text == "true"
        self.fail(name, f"expected true or false, got {value!r}")
        return default

    def string_list(self, name: str) -> tuple[str, ...]:
        value = self.raw.get(name)
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value) if v]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            self.fail(name, f"expected a list, got {value!r}; set it with "
                            f"`pulumi config set --path '{_key(name)}[0]' VALUE`")
            return ()
        return tuple(str(v) for v in value)

    def mapping(self, name: str) -> Mapping[str, Any]:
        value = self.raw.get(name)
        if value is None or value == "":
            return {}
        if not isinstance(value, dict):
            self.fail(name, f"expected an object, got {value!r}; set a field with "
                            f"`pulumi config set --path '{_key(name)}.FIELD' VALUE`")
            return {}
        return value


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=True)


def _cidr_problem(text: str) -> str | None:
    try:
        _network(text)
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
    p = _Parser(raw)
    p.errors.extend(unknown_key_problems(raw))

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
    if managers is None:
        managers = DEFAULT_MANAGERS[tier]
    elif tier not in MANAGER_COUNT_SETTABLE:
        if managers != DEFAULT_MANAGERS[tier]:
            p.fail("managers", f"tier {tier} always has {DEFAULT_MANAGERS[tier]} manager; remove the "
                               f"key, or choose tier small or medium to run 3, 5 or 7 managers")
        managers = DEFAULT_MANAGERS[tier]
    elif managers < 1 or managers > MAX_MANAGERS or managers % 2 == 0:
        p.fail("managers", f"must be odd and between 1 and {MAX_MANAGERS} so that Raft keeps a "
                           f"majority (3 tolerates 1 lost manager, 5 tolerates 2); got {managers}")
        managers = DEFAULT_MANAGERS[tier]

    region = p.string("region", "fra1")
    if not re.fullmatch(r"[a-z]{3}[0-9]", region):
        p.fail("region", f"{region!r} is not a DigitalOcean region slug such as fra1 or nyc3")

    vpc_cidr = p.string("vpcCidr", DEFAULT_VPC_CIDR[cloud])
    problem = _cidr_problem(vpc_cidr)
    if problem:
        p.fail("vpcCidr", problem)
    elif _network(vpc_cidr).version != 4 or not _network(vpc_cidr).is_private:
        p.fail("vpcCidr", f"{vpc_cidr} must be a private IPv4 range such as 10.210.0.0/20")

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

    admin_cidrs = p.string_list("adminCidrs")
    for cidr in admin_cidrs:
        problem = _cidr_problem(cidr)
        if problem:
            p.fail("adminCidrs", problem)
        elif _network(cidr).prefixlen == 0:
            p.fail("adminCidrs", f"{cidr} opens SSH on the master to the whole internet; "
                                 f"list only the networks you administer from")
    if cloud == "digitalocean" and not admin_cidrs:
        p.fail("adminCidrs", "list the networks allowed to SSH to the master, e.g. "
                             "`pulumi config set --path 'dockyard:adminCidrs[0]' 203.0.113.7/32`")

    public_ports: list[int] = []
    ports = p.string_list("publicPorts") if "publicPorts" in raw else ("80", "443")
    for port in ports:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            p.fail("publicPorts", f"{port!r} is not a TCP port")
        elif int(port) in (22, 111, 2049, 2375, 2376, 2377, 4789, 7946):
            p.fail("publicPorts", f"port {port} is an SSH, NFS or Docker control port and must "
                                  f"never be published to the internet; remove it")
        else:
            public_ports.append(int(port))

    ssh = SshSettings(
        user=_ssh_user(p),
        public_key=p.string("sshPublicKey"),
        key_id=p.string("sshKeyId"),
        private_key_path=p.string("sshPrivateKeyPath"),
        private_key_in_config=bool(raw.get("sshPrivateKey")),
    )
    if ssh.private_key_path:
        ssh = SshSettings(ssh.user, ssh.public_key, ssh.key_id,
                          os.path.expanduser(ssh.private_key_path), ssh.private_key_in_config)
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
    elif ssh.private_key_path and not ssh.private_key_in_config and not file_exists(ssh.private_key_path):
        p.fail("sshPrivateKeyPath", f"no file at {ssh.private_key_path}; create the key with "
                                    f"`ssh-keygen -t ed25519 -f {ssh.private_key_path}` or fix the path")

    docker_version = p.string("dockerVersion", "")
    if docker_version and not re.fullmatch(r"[0-9][0-9A-Za-z.+~:-]*", docker_version):
        p.fail("dockerVersion", f"{docker_version!r} is not a package version prefix such as 27.5")

    registry_mirrors = p.string_list("registryMirrors")
    for mirror in registry_mirrors:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?/?", mirror):
            p.fail("registryMirrors", f"{mirror!r} must be a URL such as https://mirror.example.com")

    nfs_raw = p.mapping("nfs")
    nfs = NfsSettings(str(nfs_raw.get("exportRoot", "/srv/nfs")), str(nfs_raw.get("mountRoot", "/mnt/nfs")))
    for key, path in (("exportRoot", nfs.export_root), ("mountRoot", nfs.mount_root)):
        if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", path):
            p.fail("nfs", f"{key} must be an absolute path without spaces, got {path!r}")

    preload_images = tuple(os.path.expanduser(path) for path in p.string_list("preloadImages"))
    for path in preload_images:
        if not file_exists(path):
            p.fail("preloadImages", f"no file at {path}; list docker-archive tarballs (docker save -o FILE IMAGE)")

    ci = _ci_settings(p, tier, cloud, "ciServices" in raw)

    image = p.string("image", "ubuntu-24-04-x64")
    disposable = p.boolean("disposable", cloud == "local")
    allow_majority_loss = p.boolean("allowManagerMajorityLoss", False)
    kept_volumes = {str(k): str(v) for k, v in p.mapping("keptVolumes").items()}
    if kept_volumes:
        with_volume = {h.name for h in build_topology(tier, workers, managers).hosts if h.volume}
        for host, volume_id in kept_volumes.items():
            if host not in with_volume:
                p.fail("keptVolumes", f"host {host!r} has no data volume in tier {tier}; "
                                      f"the hosts with one are {', '.join(sorted(with_volume))}")
            if not re.fullmatch(r"[0-9a-f-]{36}", volume_id):
                p.fail("keptVolumes", f"{host}: {volume_id!r} is not a volume id; find it with "
                                      f"`doctl compute volume list` (name dockyard-<stack>-{host}-...)")
        if cloud != "digitalocean":
            p.fail("keptVolumes", "only DigitalOcean volumes are kept; local stacks are disposable")

    if p.errors:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(p.errors))

    return DockyardConfig(
        stack=stack, tier=tier, cloud=cloud, workers=workers, managers=managers, region=region,
        vpc_cidr=vpc_cidr, image=image, sizes=sizes, volume_gb=volume_gb, ssh=ssh,
        admin_cidrs=admin_cidrs, public_ports=tuple(public_ports), docker_version=docker_version,
        registry_mirrors=registry_mirrors, nfs=nfs, disposable=disposable, preload_images=preload_images, ci=ci,
        allow_manager_majority_loss=allow_majority_loss, kept_volumes=kept_volumes,
    )


def _ssh_user(p: _Parser) -> str:
    user = p.string("sshUser", "root")
    if not SSH_USER.fullmatch(user):
        p.fail("sshUser", f"{user!r} is not a POSIX user name: up to 32 lowercase letters, digits, '_' or '-', "
                          f"starting with a letter or '_'; set the user the hosts' image logs in with, "
                          f"e.g. `pulumi config set dockyard:sshUser root`")
        return "root"
    return user


def _ci_settings(p: _Parser, tier: str, cloud: str, services_set: bool) -> CiSettings:
    if tier == "minimal":
        default_services: tuple[str, ...] = ()
    elif cloud == "local":
        # Gitea and Drone images must be built and preloaded first (README, "CI/CD on local VMs")
        default_services = ("registry",)
    else:
        default_services = CI_SERVICES
    services = p.string_list("ciServices") if services_set else default_services
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
    if not re.fullmatch(r"[A-Za-z0-9*,:. /~-]+", gc_schedule):
        p.fail("registryGcSchedule", f"{gc_schedule!r} is not a systemd calendar event such as "
                                     f"'Sun *-*-* 03:00:00' or 'daily'")
    return CiSettings(tuple(services), images, admin_user, admin_email, gc_schedule)


CONFIG_KEYS = (
    "tier", "cloud", "workers", "managers", "region", "vpcCidr", "image", "sizes",
    "volumeSizes", "sshUser", "sshPublicKey", "sshKeyId", "sshPrivateKeyPath", "adminCidrs",
    "publicPorts", "dockerVersion", "registryMirrors", "nfs", "disposable", "preloadImages",
    "ciServices", "ciImages", "ciAdminUser", "ciAdminEmail", "registryGcSchedule", "allowManagerMajorityLoss",
    "keptVolumes",
)
# set with `pulumi config set --secret`; read only as a secret
SECRET_KEYS = ("sshPrivateKey",)
KNOWN_KEYS = CONFIG_KEYS + SECRET_KEYS
OBJECT_KEYS = ("sizes", "volumeSizes", "adminCidrs", "publicPorts", "registryMirrors", "nfs", "preloadImages",
               "ciServices", "ciImages", "keptVolumes")


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
    for key in CONFIG_KEYS:
        if key in OBJECT_KEYS:
            try:
                value = cfg.get_object(key)
            except Exception:  # a plain string where a list/object was expected
                value = cfg.get(key)
        else:
            value = cfg.get(key)
        if value is not None:
            raw[key] = value
    if cfg.get_secret("sshPrivateKey") is not None:
        raw["sshPrivateKey"] = True
    return raw
