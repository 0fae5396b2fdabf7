"""dockyard's policies as plain functions, so that tests can call them and the pack in
__main__.py only assembles them. Messages say what to change.

Props are resource inputs as the engine passes them (camelCase). The analyzer protocol
does not carry `retainOnDelete`, so the volume policy checks what the program declares on
its cloud component (`retainVolumes`, `disposable`), which is where that option comes from.

During a preview some inputs are not known yet (a droplet's VPC id, an image id): reading
one raises pulumi_policy's UnknownValueError, and the engine then skips the policy with a
note. `_known` reads a value without raising, so each policy decides what an unknown means
for it."""
from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from pulumi_policy.proxy import UnknownValueError

# The pack runs from policies/; the rules it shares with the program are plain Python modules
# of the project (no Pulumi imports), read from their one home.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from components.ports import CONTROL_PORTS  # noqa: E402
from components.topology import MANAGER_COUNT_SETTABLE  # noqa: E402

DROPLET = "digitalocean:index/droplet:Droplet"
FIREWALL = "digitalocean:index/firewall:Firewall"
VOLUME = "digitalocean:index/volume:Volume"
CONTAINER = "docker:index/container:Container"
CLOUD_COMPONENTS = ("dockyard:digitalocean:Cloud", "dockyard:local:Cloud")
MANAGER = "dockyard:role:SwarmManager"
WORKER = "dockyard:role:SwarmWorker"

INTERNET = ("0.0.0.0/0", "::/0")

# USD per month, DigitalOcean list prices; the pack's config can replace the table.
DEFAULT_PRICES = {
    "s-1vcpu-512mb-10gb": 4, "s-1vcpu-1gb": 6, "s-1vcpu-2gb": 12, "s-2vcpu-2gb": 18,
    "s-2vcpu-4gb": 24, "s-4vcpu-8gb": 48, "s-8vcpu-16gb": 96, "c-2": 42, "c-4": 84,
    "g-2vcpu-8gb": 63, "m-2vcpu-16gb": 84,
}
DEFAULT_VOLUME_PRICE_PER_GB = 0.10
DEFAULT_MONTHLY_BUDGET = 1000

Report = Callable[..., None]
UNKNOWN = object()  # a value the engine will only know once the resource exists


def _known(props: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """props[key], `default` when absent, UNKNOWN when set but not known during a preview."""
    try:
        value = props.get(key, default)
    except UnknownValueError:
        return UNKNOWN
    return default if value is None else value


def _ports(port_range: str | None) -> tuple[int, int]:
    if not port_range or port_range == "all":
        return 1, 65535
    low, _, high = str(port_range).partition("-")
    return int(low), int(high or low)


def _opens_to_internet(sources: Iterable[str]) -> list[str]:
    found = []
    for source in sources or ():
        try:
            if ipaddress.ip_network(source, strict=False).prefixlen == 0:
                found.append(source)
        except ValueError:
            continue
    return found


# VPCs use RFC 1918 ranges; Python's is_private would also count documentation ranges.
PRIVATE_RANGES = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]


def _private(source: str) -> bool:
    try:
        net = ipaddress.ip_network(source, strict=False)
    except ValueError:
        return False
    return any(net.version == r.version and net.subnet_of(r) for r in PRIVATE_RANGES)


def _within(source: str, allowed: Iterable[str]) -> bool:
    try:
        net = ipaddress.ip_network(source, strict=False)
        return any(net.version == a.version and net.subnet_of(a)
                   for a in (ipaddress.ip_network(x, strict=False) for x in allowed))
    except ValueError:
        return False


def _role_of_firewall(props: Mapping[str, Any]) -> str:
    return str(props.get("name", "")).rsplit("-", 1)[-1]


# --- resource policies -------------------------------------------------------------------

def no_control_ports_to_internet(args, report_violation: Report) -> None:
    if args.resource_type != FIREWALL:
        return
    for rule in args.props.get("inboundRules") or []:
        internet = _opens_to_internet(rule.get("sourceAddresses") or [])
        if not internet:
            continue
        low, high = _ports(rule.get("portRange"))
        for port, what in sorted(CONTROL_PORTS.items()):
            if low <= port <= high:
                report_violation(
                    f"Close port {port}/{rule.get('protocol')} ({what}) to {', '.join(internet)} in firewall "
                    f"{args.props.get('name')}: allow swarm, NFS and Docker API ports only from the VPC range.")


def ssh_only_master_from_admins(args, report_violation: Report, admin_cidrs: Iterable[str] = ()) -> None:
    if args.resource_type != FIREWALL:
        return
    allowed = list(admin_cidrs) or list(args.get_config().get("adminCidrs", []))
    is_master = _role_of_firewall(args.props) == "master"
    for rule in args.props.get("inboundRules") or []:
        if rule.get("protocol") != "tcp":
            continue
        low, high = _ports(rule.get("portRange"))
        if not low <= 22 <= high:
            continue
        outside = [s for s in rule.get("sourceAddresses") or [] if not _private(s)]
        if not outside:
            continue
        name = args.props.get("name")
        if not is_master:
            report_violation(f"Remove SSH from {', '.join(outside)} on firewall {name}: only the master takes "
                             f"SSH from outside the VPC; other hosts take it from the master.")
        elif _opens_to_internet(outside):
            report_violation(f"Restrict SSH on firewall {name} to dockyard:adminCidrs instead of "
                             f"{', '.join(_opens_to_internet(outside))}.")
        elif allowed:
            stray = [s for s in outside if not _within(s, allowed)]
            if stray:
                report_violation(f"Remove SSH from {', '.join(stray)} on firewall {name}, or add it to "
                                 f"dockyard:adminCidrs ({', '.join(allowed)}).")


def droplet_in_vpc_monitored_tagged(args, report_violation: Report) -> None:
    if args.resource_type != DROPLET:
        return
    name = args.props.get("name", args.name)
    if not _known(args.props, "vpcUuid"):  # an unknown id is a VPC being made: set
        report_violation(f"Put droplet {name} in the stack's VPC: set vpc_uuid.")
    if args.props.get("monitoring") is not True:
        report_violation(f"Turn monitoring on for droplet {name}: set monitoring=True.")
    tags = args.props.get("tags") or []
    if not any(str(t).startswith("dockyard-stack:") for t in tags):
        report_violation(f"Tag droplet {name} with its stack (dockyard-stack:<stack>).")
    if not any(str(t).startswith("dockyard-role:") for t in tags):
        report_violation(f"Tag droplet {name} with its role (dockyard-role:<role>).")


def droplet_size_allowed(args, report_violation: Report) -> None:
    if args.resource_type != DROPLET:
        return
    config = args.get_config()
    allowed = list(config.get("allowedSizes") or config.get("prices") or DEFAULT_PRICES)
    size = args.props.get("size")
    if size not in allowed:
        report_violation(f"Use an allowed size for droplet {args.props.get('name', args.name)} instead of "
                         f"{size!r}: one of {', '.join(allowed)} (dockyard:sizes sets them).")


def registry_tls_and_auth(args, report_violation: Report) -> None:
    # a container runs the registry if it says so by its name or its image reference (with
    # pulumi-docker the image is often an ID, so the name is what is left)
    if args.resource_type != CONTAINER:
        return
    image = _known(args.props, "image", "")
    named = f"{_known(args.props, 'name', '')} {'' if image is UNKNOWN else image}"
    if "registry" not in named:
        return
    env = {}
    for item in args.props.get("envs") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    name = args.props.get("name", args.name)
    if not env.get("REGISTRY_HTTP_TLS_CERTIFICATE") or not env.get("REGISTRY_HTTP_TLS_KEY"):
        report_violation(f"Serve registry {name} over TLS: set REGISTRY_HTTP_TLS_CERTIFICATE and "
                         f"REGISTRY_HTTP_TLS_KEY.")
    if env.get("REGISTRY_AUTH") != "htpasswd" or not env.get("REGISTRY_AUTH_HTPASSWD_PATH"):
        report_violation(f"Require authentication on registry {name}: set REGISTRY_AUTH=htpasswd and "
                         f"REGISTRY_AUTH_HTPASSWD_PATH.")


# --- stack policies ----------------------------------------------------------------------

def _cloud(resources) -> Mapping[str, Any]:
    for r in resources:
        if r.resource_type in CLOUD_COMPONENTS:
            return r.props
    return {}


def swarm_manager_count(args, report_violation: Report) -> None:
    managers = [r for r in args.resources if r.resource_type == MANAGER]
    count = len(managers)
    if count and (count % 2 == 0 or count > 7):
        report_violation(f"Run an odd number of swarm managers between 1 and 7, not {count}: set "
                         f"dockyard:managers to 3, 5 or 7 so that Raft keeps a majority.")


def monthly_cost_within_budget(args, report_violation: Report) -> None:
    config = args.get_config()
    prices = dict(config.get("prices") or DEFAULT_PRICES)
    per_gb = float(config.get("volumePricePerGb", DEFAULT_VOLUME_PRICE_PER_GB))
    budget = float(config.get("monthlyBudget", DEFAULT_MONTHLY_BUDGET))
    total = 0.0
    unknown = []
    for r in args.resources:
        if r.resource_type == DROPLET:
            size = r.props.get("size")
            if size in prices:
                total += float(prices[size])
            else:
                unknown.append(str(size))
        elif r.resource_type == VOLUME:
            total += per_gb * float(r.props.get("size") or 0)
    if unknown:
        report_violation(f"Add a price for droplet sizes {', '.join(sorted(set(unknown)))} to the policy "
                         f"pack's price table, or use a listed size, so the stack's cost can be checked.")
    if total > budget:
        report_violation(f"Bring the stack's estimated cost of ${total:.0f}/month within the budget of "
                         f"${budget:.0f}: use smaller dockyard:sizes or fewer dockyard:workers, or raise "
                         f"the pack's monthlyBudget.")


def stateful_volumes_kept(args, report_violation: Report) -> None:
    cloud = _cloud(args.resources)
    if cloud.get("disposable") is True:
        return
    for r in args.resources:
        if r.resource_type != VOLUME or r.opts.protect:
            continue
        if cloud.get("retainVolumes") is not True:
            report_violation(f"Keep volume {r.props.get('name', r.name)} when resources are deleted: retain or "
                             f"protect it, or set dockyard:disposable true if this environment's data may go.")


def ssh_sources_match_admin_cidrs(args, report_violation: Report) -> None:
    """The master's SSH sources must be the stack's own dockyard:adminCidrs."""
    admin = _cloud(args.resources).get("adminCidrs") or []
    if not admin:
        return

    class _Args:  # the resource policy's view of one firewall
        def __init__(self, r):
            self.resource_type, self.props, self.name = r.resource_type, r.props, r.name

        def get_config(self):
            return {}

    for r in args.resources:
        if r.resource_type == FIREWALL:
            ssh_only_master_from_admins(_Args(r), report_violation, admin_cidrs=admin)


# --- advisory ----------------------------------------------------------------------------

def single_manager_warning(args, report_violation: Report) -> None:
    cloud = _cloud(args.resources)
    managers = [r for r in args.resources if r.resource_type == MANAGER]
    if cloud.get("tier") in MANAGER_COUNT_SETTABLE and len(managers) == 1:
        report_violation("Consider 3 swarm managers: with one, losing it stops all scheduling "
                         "(set dockyard:managers 3).")


def no_workers_warning(args, report_violation: Report) -> None:
    if any(r.resource_type == MANAGER for r in args.resources) and not any(
            r.resource_type == WORKER for r in args.resources):
        report_violation("Consider adding workers (dockyard:workers): without them, services run on the "
                         "managers and compete with Raft for CPU.")


# --- the pack ----------------------------------------------------------------------------
# The one table the pack (__main__.py) and the tests both iterate.

@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    validate: Callable[..., None]
    stack: bool = False  # a stack policy (sees every resource), else a resource policy
    advisory: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)  # JSON schema of the pack config it reads


_STRINGS = {"type": "array", "items": {"type": "string"}}

POLICIES = (
    Policy("swarm-manager-count", "Swarm managers per stack: odd, between 1 and 7.", swarm_manager_count,
           stack=True),
    Policy("no-control-ports-to-internet",
           f"No firewall rule opens {', '.join(map(str, CONTROL_PORTS))} to the internet.",
           no_control_ports_to_internet),
    Policy("ssh-only-master", "SSH from beyond the VPC only on the master, never from the whole internet.",
           ssh_only_master_from_admins, config={"adminCidrs": _STRINGS}),
    Policy("ssh-from-admin-cidrs", "The master's SSH sources are the stack's dockyard:adminCidrs.",
           ssh_sources_match_admin_cidrs, stack=True),
    Policy("droplet-in-vpc-monitored-tagged",
           "Every droplet is in a VPC, has monitoring on, and is tagged with stack and role.",
           droplet_in_vpc_monitored_tagged),
    Policy("droplet-size-allowed", "Droplet sizes come from an allowed list.", droplet_size_allowed,
           config={"allowedSizes": _STRINGS, "prices": {"type": "object"}}),
    Policy("monthly-cost-within-budget", "The stack's estimated monthly cost is within budget.",
           monthly_cost_within_budget, stack=True,
           config={"monthlyBudget": {"type": "number"}, "prices": {"type": "object"},
                   "volumePricePerGb": {"type": "number"}}),
    Policy("registry-tls-and-auth", "The registry is served with TLS and requires auth.", registry_tls_and_auth),
    Policy("stateful-volumes-kept", "NFS and CI volumes survive deletes unless the stack is disposable.",
           stateful_volumes_kept, stack=True),
    Policy("single-manager-warning", "Small and medium tiers should run more than one manager.",
           single_manager_warning, stack=True, advisory=True),
    Policy("no-workers-warning", "A stack without workers runs services on its managers.",
           no_workers_warning, stack=True, advisory=True),
)
