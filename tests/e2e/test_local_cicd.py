"""Opt-in: Gitea, Drone and its runner on the `local` stack's CI host, with images built here
from the Go module proxy (`python3 -m localcloud ci-images`, about 6 minutes of compiling
on 2 cores the first time). Not part of `.ci/run`: run it with

    sudo DOCKYARD_E2E_CICD=1 .venv/bin/python -m pytest -m e2e tests/e2e/test_local_cicd.py

It brings up A (master + CI) and B (NFS + manager) through the stand-in engine, checks that
Gitea is installed with the generated admin password, that the OAuth2 application Drone
logs in with exists and is the one Drone uses, that Drone sends a login to Gitea with it,
that the runner reached Drone with the shared RPC secret, and that no secret is in clear."""
import json
import os
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode

import pytest

from tests.e2e.conftest import TIMINGS
from tests.e2e.replay import Replay
from tests.e2e.test_local_stack import timed, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("DOCKYARD_E2E_CICD") != "1",
                       reason="opt-in (DOCKYARD_E2E_CICD=1): builds Gitea and Drone from source first"),
]

NET = "e2eci"
MASTER = "10.234.0.11"
CONFIG = {"cloud": "local", "tier": "default", "workers": "0", "vpcCidr": "10.234.0.0/24",
          "ciServices": ["registry", "gitea", "drone"]}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def http(url, user=None, password=None, follow=True):
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    subprocess.run(["python3", "-m", "localcloud", "cleanup", "--net", NET], check=True)
    images = tmp_path_factory.mktemp("ci-images")
    built = timed("CI images (build or cache)", lambda: subprocess.run(
        ["python3", "-m", "localcloud", "ci-images", "--out", str(images)], check=True, capture_output=True,
        text=True))
    settings = json.loads(built.stdout.strip().splitlines()[-1])
    replay = Replay(NET, {**CONFIG, "ciImages": settings,
                          "preloadImages": [str(images / f"{n}.tar") for n in ("gitea", "drone", "drone-runner")]})
    try:
        timed("up with Gitea and Drone", replay.up)
        yield replay
    finally:
        timed("destroy", replay.destroy)
        subprocess.run(["python3", "-m", "localcloud", "cleanup", "--net", NET], check=True)


def test_every_ci_container_becomes_healthy(stack):
    def healthy():
        states = stack.ssh(MASTER, "docker inspect -f '{{.Name}} {{.State.Health.Status}}' "
                                   "registry gitea drone drone-runner").stdout.split("\n")
        return all(line.endswith(" healthy") for line in states if line) and len([s for s in states if s]) == 4
    wait_for("4 healthy CI containers", healthy, timeout=300)


def test_gitea_is_installed_with_the_generated_admin_password(stack):
    url, password = stack.outputs["gitea_url"], stack.outputs["gitea_admin_password"]
    status, _, body = http(f"{url}/api/v1/user", "dockyard", password)
    assert status == 200 and json.loads(body)["is_admin"] is True
    assert http(f"{url}/api/v1/user", "dockyard", "wrong")[0] == 401
    assert http(f"{url}/user/sign_up")[0] in (403, 404) or "disabled" in http(f"{url}/user/sign_up")[2].lower()


def test_drone_logs_in_through_gitea_with_its_oauth_application(stack):
    gitea, drone = stack.outputs["gitea_url"], stack.outputs["drone_url"]
    status, _, body = http(f"{gitea}/api/v1/user/applications/oauth2", "dockyard", stack.outputs["gitea_admin_password"])
    (app,) = [a for a in json.loads(body) if a["name"] == "drone"]
    assert app["redirect_uris"] == [f"{drone}/login"]
    assert http(f"{drone}/healthz")[0] == 200
    status, headers, _ = http(f"{drone}/login", follow=False)
    assert status in (302, 303, 307)
    location = headers.get("Location", "")
    assert location.startswith(f"{gitea}/login/oauth/authorize?") and f"client_id={app['client_id']}" in location


def test_the_runner_reached_drone_with_the_shared_secret(stack):
    logs = wait_for("the runner's ping", lambda: (lambda out: out if "successfully pinged" in out else None)(
        stack.ssh(MASTER, "docker logs drone-runner 2>&1").stdout), timeout=180)
    assert "successfully pinged the remote server" in logs


def test_no_ci_secret_is_in_clear(stack):
    setup = [e for e in stack.executed if e.name == "cicd-gitea-setup"]
    client_secret = next(line.split("=", 1)[1] for line in setup[0].stdout.splitlines()
                         if line.startswith("client_secret="))
    secrets = [stack.outputs["gitea_admin_password"], stack.outputs["registry_password"], client_secret]
    for e in stack.executed:
        visible = e.command + e.stderr + ("" if e in setup else e.stdout)
        assert not any(s in visible for s in secrets), f"{e.name} shows a secret"
    cmdlines = stack.ssh(MASTER, "cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '").stdout
    assert not any(s in cmdlines for s in secrets)
    TIMINGS.append(f"[e2e-cicd] secrets checked: {len(secrets)}")
