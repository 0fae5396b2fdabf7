"""Opt-in: swarm autolock (dockyard:swarmAutolock, issue 14) through the real engine, on one
local VM (the minimal tier, no workers, no platform services). Not part of `.ci/run`:

    sudo DOCKYARD_E2E_AUTOLOCK=1 .venv/bin/python -m pytest -m e2e tests/e2e/test_local_autolock.py

`pulumi up` makes the swarm autolocked and hands its unlock key to the `swarm_unlock_key`
output, never printing it; a restarted engine leaves the manager locked, and the key from
the output unlocks it, as README's "Security model" tells an operator to."""
import os
import subprocess

import pytest

from tests.e2e.conftest import TIMINGS
from tests.e2e.stack import LocalStack
from tests.e2e.test_local_stack import timed, wait_for
from tests.engine import Engine

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("DOCKYARD_E2E_AUTOLOCK") != "1",
                       reason="opt-in (DOCKYARD_E2E_AUTOLOCK=1): a VM of its own"),
]

NET = "e2elock"
MANAGER = "10.235.0.11"
CONFIG = {"cloud": "local", "tier": "minimal", "workers": "0", "vpcCidr": "10.235.0.0/24",
          "swarmAutolock": "true", "platformServices": []}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    subprocess.run(["python3", "-m", "localcloud", "cleanup", "--net", NET], check=True)
    stack = LocalStack.create(Engine.in_tmp(tmp_path_factory.mktemp("engine")), NET, CONFIG)
    try:
        timed("up with an autolocked swarm", stack.up)
        yield stack
    finally:
        try:
            timed("destroy", stack.destroy)
        finally:
            subprocess.run(["python3", "-m", "localcloud", "cleanup", "--net", NET], check=True)


def state(stack) -> str:
    return stack.ssh(MANAGER, "docker info --format '{{.Swarm.LocalNodeState}}'").stdout.strip()


def test_a_restarted_manager_stays_locked_until_the_key_from_the_output_unlocks_it(stack):
    key = stack.outputs["swarm_unlock_key"]
    assert key.startswith("SWMKEY-1-") and key == stack.ssh(MANAGER, "docker swarm unlock-key -q").stdout.strip()
    assert stack.ssh(MANAGER, "docker info --format "
                              "'{{.Swarm.Cluster.Spec.EncryptionConfig.AutoLockManagers}}'").stdout.strip() == "true"
    assert not any(key in update.console() for update in stack.updates), "the key is in nothing `up` printed"
    stack.ssh(MANAGER, "systemctl restart docker")
    wait_for("the restarted manager, locked", lambda: state(stack) == "locked", timeout=120)
    unlocked = stack.ssh(MANAGER, "docker swarm unlock", stdin=key + "\n", check=False)
    assert unlocked.returncode == 0, unlocked.stderr
    assert state(stack) == "active"
    TIMINGS.append("[e2e-autolock] locked after an engine restart, unlocked with the swarm_unlock_key output")
