"""The stack files: each names its tier and passes validation once a user adds their own
key and admin address (the only values a stack file cannot carry for them)."""
from pathlib import Path

import pytest
import yaml

from components.config import parse_config
from components.topology import build_topology

STACKS = Path(__file__).resolve().parent.parent / "stacks"
USER_VALUES = {
    "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey user@host",
    "adminCidrs": ["198.51.100.7/32"],
}
HOSTS = {"minimal": 1, "default": 2, "small": 5, "medium": 11}


def stack_config(stack: str) -> dict:
    data = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    return {k.split(":", 1)[1]: v for k, v in data["config"].items() if k.startswith("dockyard:")}


@pytest.mark.parametrize("tier", list(HOSTS))
def test_digitalocean_stack(tier):
    raw = {**stack_config(tier), **USER_VALUES}
    config = parse_config(tier, raw, file_exists=lambda path: True)
    assert (config.tier, config.cloud) == (tier, "digitalocean")
    topo = build_topology(config.tier, config.workers, config.managers)
    assert len(topo.hosts) == HOSTS[tier] + config.workers


def test_digitalocean_stacks_use_distinct_vpc_ranges():
    ranges = [stack_config(t)["vpcCidr"] for t in HOSTS]
    assert len(set(ranges)) == len(ranges), "VPC ranges may not overlap within one account"


def test_stack_without_user_values_says_what_to_set():
    with pytest.raises(ValueError) as info:
        parse_config("small", stack_config("small"), file_exists=lambda path: True)
    assert "dockyard:adminCidrs" in str(info.value) and "dockyard:sshPublicKey" in str(info.value)


def test_local_stack_is_three_vms():
    config = parse_config("local", stack_config("local"), file_exists=lambda path: False)
    assert (config.tier, config.cloud, config.workers) == ("default", "local", 1)
    assert config.disposable
    assert len(build_topology(config.tier, config.workers).hosts) == 3
