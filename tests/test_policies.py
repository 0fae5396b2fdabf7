"""Every policy with one compliant and at least one violating case, on real
ResourceValidationArgs/StackValidationArgs objects."""
import inspect
import sys
from pathlib import Path

import pytest
from pulumi_policy import ResourceValidationArgs, StackValidationArgs
from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "policies"))
import dockyard_policies as p  # noqa: E402


def options(protect=False):
    return PolicyResourceOptions(protect=protect, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=[])


def resource_args(resource_type, props, config=None, name="r"):
    return ResourceValidationArgs(resource_type, props, f"urn:pulumi:s::dockyard::{resource_type}::{name}", name,
                                  options(), None, config=config)


def resource(resource_type, props, name="r", protect=False):
    return PolicyResource(resource_type, props, f"urn:pulumi:s::dockyard::{resource_type}::{name}", name,
                          options(protect), None, None, [], {})


def stack_args(resources, config=None):
    return StackValidationArgs(resources, config=config)


def violations(policy, args, **kw):
    messages = []
    policy(args, lambda message, urn=None: messages.append(message), **kw)
    return messages


def firewall(name, *rules):
    return {"name": name, "inboundRules": list(rules)}


def rule(port, *sources, protocol="tcp"):
    return {"protocol": protocol, "portRange": port, "sourceAddresses": list(sources)}


def droplet(name="dockyard-s-a", size="s-2vcpu-4gb", **changes):
    props = {"name": name, "size": size, "vpcUuid": "vpc-1", "monitoring": True,
             "tags": ["dockyard", "dockyard-stack:s", "dockyard-role:master"]}
    props.update(changes)
    return props


CLOUD = "dockyard:digitalocean:Cloud"


# --- control ports -------------------------------------------------------------------------

def test_control_ports_from_vpc_are_fine():
    args = resource_args(p.FIREWALL, firewall("dockyard-s-manager", rule("2377", "10.0.0.0/16"),
                                              rule("443", "0.0.0.0/0", "::/0")))
    assert violations(p.no_control_ports_to_internet, args) == []


@pytest.mark.parametrize("port,source,named", [("2377", "0.0.0.0/0", "2377"), ("2049", "::/0", "2049"),
                                                ("1-65535", "0.0.0.0/0", "2375"), ("all", "::/0", "4789"),
                                                ("51820", "0.0.0.0/0", "51820")])
def test_control_ports_to_internet_are_refused(port, source, named):
    args = resource_args(p.FIREWALL, firewall("dockyard-s-worker", rule(port, source)))
    found = violations(p.no_control_ports_to_internet, args)
    assert any(m.startswith(f"Close port {named}/") and "only from the VPC range" in m for m in found)


# --- SSH -------------------------------------------------------------------------------------

def test_ssh_on_master_from_admin_cidr_is_fine():
    args = resource_args(p.FIREWALL, firewall("dockyard-s-master", rule("22", "203.0.113.7/32")),
                         config={"adminCidrs": ["203.0.113.0/24"]})
    assert violations(p.ssh_only_master_from_admins, args) == []


def test_ssh_on_a_worker_from_outside_is_refused():
    args = resource_args(p.FIREWALL, firewall("dockyard-s-worker", rule("22", "203.0.113.7/32")))
    (message,) = violations(p.ssh_only_master_from_admins, args)
    assert message.startswith("Remove SSH from 203.0.113.7/32 on firewall dockyard-s-worker")


def test_ssh_on_master_from_the_internet_is_refused():
    args = resource_args(p.FIREWALL, firewall("dockyard-s-master", rule("22", "0.0.0.0/0")))
    (message,) = violations(p.ssh_only_master_from_admins, args)
    assert message.startswith("Restrict SSH on firewall dockyard-s-master to dockyard:adminCidrs")


def test_master_ssh_must_match_the_stacks_admin_cidrs():
    cloud = resource(CLOUD, {"adminCidrs": ["203.0.113.0/24"]})
    good = resource(p.FIREWALL, firewall("dockyard-s-master", rule("22", "203.0.113.7/32")))
    bad = resource(p.FIREWALL, firewall("dockyard-s-master", rule("22", "198.51.100.0/24")))
    assert violations(p.ssh_sources_match_admin_cidrs, stack_args([cloud, good])) == []
    (message,) = violations(p.ssh_sources_match_admin_cidrs, stack_args([cloud, bad]))
    assert message.startswith("Remove SSH from 198.51.100.0/24 on firewall dockyard-s-master, or add it")


# --- droplets ------------------------------------------------------------------------------

def test_droplet_in_vpc_with_monitoring_and_tags_is_fine():
    assert violations(p.droplet_in_vpc_monitored_tagged, resource_args(p.DROPLET, droplet())) == []


@pytest.mark.parametrize("change,start", [({"vpcUuid": None}, "Put droplet"),
                                          ({"monitoring": False}, "Turn monitoring on"),
                                          ({"tags": ["dockyard-role:worker"]}, "Tag droplet dockyard-s-a with its stack"),
                                          ({"tags": ["dockyard-stack:s"]}, "Tag droplet dockyard-s-a with its role")])
def test_droplet_violations(change, start):
    found = violations(p.droplet_in_vpc_monitored_tagged, resource_args(p.DROPLET, droplet(**change)))
    assert len(found) == 1 and found[0].startswith(start)


def test_droplet_size_allowed():
    assert violations(p.droplet_size_allowed, resource_args(p.DROPLET, droplet())) == []
    (message,) = violations(p.droplet_size_allowed, resource_args(p.DROPLET, droplet(size="s-32vcpu-192gb")))
    assert message.startswith("Use an allowed size for droplet dockyard-s-a instead of 's-32vcpu-192gb'")
    config = {"allowedSizes": ["s-1vcpu-1gb"]}
    assert violations(p.droplet_size_allowed, resource_args(p.DROPLET, droplet(), config=config))


# --- cost ----------------------------------------------------------------------------------

def test_cost_within_budget():
    resources = [resource(p.DROPLET, droplet(size="s-2vcpu-4gb"), name=f"d{i}") for i in range(3)]
    resources.append(resource(p.VOLUME, {"name": "v", "size": 50}))
    assert violations(p.monthly_cost_within_budget, stack_args(resources, {"monthlyBudget": 100})) == []


def test_cost_over_budget():
    resources = [resource(p.DROPLET, droplet(size="s-8vcpu-16gb"), name=f"d{i}") for i in range(3)]
    (message,) = violations(p.monthly_cost_within_budget, stack_args(resources, {"monthlyBudget": 200}))
    assert message.startswith("Bring the stack's estimated cost of $288/month within the budget of $200")


def test_cost_with_unpriced_size():
    resources = [resource(p.DROPLET, droplet(size="gpu-h100x8-640gb"))]
    (message,) = violations(p.monthly_cost_within_budget, stack_args(resources))
    assert message.startswith("Add a price for droplet sizes gpu-h100x8-640gb")


# --- managers --------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 3, 5, 7])
def test_odd_manager_counts_pass(count):
    managers = [resource(p.MANAGER, {}, name=f"m{i}") for i in range(count)]
    assert violations(p.swarm_manager_count, stack_args(managers)) == []


@pytest.mark.parametrize("count", [2, 4, 9])
def test_even_or_too_many_managers_fail(count):
    managers = [resource(p.MANAGER, {}, name=f"m{i}") for i in range(count)]
    (message,) = violations(p.swarm_manager_count, stack_args(managers))
    assert message.startswith(f"Run an odd number of swarm managers between 1 and 7, not {count}")


# --- registry ------------------------------------------------------------------------------

GOOD_REGISTRY = {"name": "registry", "image": "dockyard/registry:2", "envs": [
    "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/tls.crt", "REGISTRY_HTTP_TLS_KEY=/certs/tls.key",
    "REGISTRY_AUTH=htpasswd", "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd"]}


def test_registry_with_tls_and_auth_passes():
    assert violations(p.registry_tls_and_auth, resource_args(p.CONTAINER, GOOD_REGISTRY)) == []


def test_registry_without_tls_or_auth_fails():
    props = {**GOOD_REGISTRY, "envs": ["REGISTRY_AUTH=htpasswd", "REGISTRY_AUTH_HTPASSWD_PATH=/a"]}
    (message,) = violations(p.registry_tls_and_auth, resource_args(p.CONTAINER, props))
    assert message.startswith("Serve registry registry over TLS")
    props = {**GOOD_REGISTRY, "envs": GOOD_REGISTRY["envs"][:2]}
    (message,) = violations(p.registry_tls_and_auth, resource_args(p.CONTAINER, props))
    assert message.startswith("Require authentication on registry registry")


# --- volumes ---------------------------------------------------------------------------------

def test_retained_or_protected_volumes_pass():
    volume = resource(p.VOLUME, {"name": "nfs"})
    assert violations(p.stateful_volumes_kept, stack_args([resource(CLOUD, {"retainVolumes": True}), volume])) == []
    protected = resource(p.VOLUME, {"name": "nfs"}, protect=True)
    assert violations(p.stateful_volumes_kept, stack_args([resource(CLOUD, {}), protected])) == []
    disposable = resource(CLOUD, {"disposable": True, "retainVolumes": False})
    assert violations(p.stateful_volumes_kept, stack_args([disposable, volume])) == []


def test_unkept_volume_fails():
    volume = resource(p.VOLUME, {"name": "dockyard-s-b-nfs"})
    (message,) = violations(p.stateful_volumes_kept, stack_args([resource(CLOUD, {"retainVolumes": False}), volume]))
    assert message.startswith("Keep volume dockyard-s-b-nfs when resources are deleted")


# --- advisory --------------------------------------------------------------------------------

def test_advisories():
    one = [resource(CLOUD, {"tier": "small"}), resource(p.MANAGER, {})]
    assert violations(p.single_manager_warning, stack_args(one))
    assert violations(p.no_workers_warning, stack_args(one))
    three = one + [resource(p.MANAGER, {}, name="m2"), resource(p.MANAGER, {}, name="m3"),
                   resource(p.WORKER, {})]
    assert violations(p.single_manager_warning, stack_args(three)) == []
    assert violations(p.no_workers_warning, stack_args(three)) == []


# --- the program's own stacks ----------------------------------------------------------------

RESOURCE_POLICIES = [policy.validate for policy in p.POLICIES if not policy.advisory and not policy.stack]
STACK_POLICIES = [policy.validate for policy in p.POLICIES if not policy.advisory and policy.stack]


def test_the_pack_holds_every_policy_function_once():
    functions = {name for name, value in vars(p).items()
                 if inspect.isfunction(value) and not name.startswith("_") and value.__module__ == p.__name__
                 and value.__code__.co_varnames[:2] == ("args", "report_violation")}
    in_pack = [policy.validate.__name__ for policy in p.POLICIES]
    assert sorted(in_pack) == sorted(functions)
    assert len({policy.name for policy in p.POLICIES}) == len(p.POLICIES)


@pytest.mark.parametrize("tier,workers", [("minimal", "1"), ("default", "2"), ("small", "3"), ("medium", "6")])
def test_every_tier_passes_the_mandatory_policies(tier, workers):
    from tests.harness import run_program

    run = run_program(stack=tier, tier=tier, workers=workers)
    found = []
    for r in run.registrations:
        args = resource_args(r.type, r.inputs, name=r.name)
        for policy in RESOURCE_POLICIES:
            found += violations(policy, args)
    resources = [resource(r.type, r.inputs, name=r.name, protect=r.protect) for r in run.registrations]
    for policy in STACK_POLICIES:
        found += violations(policy, stack_args(resources))
    assert found == []


def test_a_worker_count_over_budget_fails_the_cost_policy():
    from tests.harness import run_program

    run = run_program(stack="big", tier="medium", workers="40")
    resources = [resource(r.type, r.inputs, name=r.name) for r in run.registrations]
    (message,) = violations(p.monthly_cost_within_budget, stack_args(resources))
    assert "within the budget of $1000" in message
