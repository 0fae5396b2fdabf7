"""Opt-in: Gitea, Drone and its runner on the `local` stack's CI host, with images built here
from the Go module proxy (`python3 -m localcloud ci-images`, about 6 minutes of compiling
on 2 cores the first time). Not part of `.ci/run`: run it with

    sudo DOCKYARD_E2E_CICD=1 .venv/bin/python -m pytest -m e2e tests/e2e/test_local_cicd.py

It brings up A (master + CI) and B (NFS + manager) through the real engine, checks that
Gitea and Drone answer only over HTTPS with a certificate of the stack's CA (this machine
trusts it from the stack's output, as README tells a user to), that Gitea is installed with
the generated admin password, that the OAuth2 application Drone
logs in with exists and is the one Drone uses, that Drone sends a login to Gitea with it,
that the runner reached Drone with the shared RPC secret, and that no secret is in clear.

Then it does what a user does with examples/web: logs in to Drone through Gitea once (the
form login and the OAuth2 grant, as a browser would), creates the repository, activates
it in Drone, marks it trusted and adds its secrets with the stack's admin token, and pushes.
Drone builds the image, pushes it to the registry and creates the swarm service; a second
push rolls the new version out. The example's Docker Hub images are swapped for the ones
built here (busybox and the pipeline image), which is all that changes in it.

Then pull-request previews (issue 19): this project goes into a private Gitea repository
that Drone builds with .drone.yml and the preview-only secrets, its step image built here
(`python3 -m localcloud preview-image`). A pull request that adds a worker gets one comment
for `default`, replaced by a second push; one that touches no stack file gets none; one that
breaks a policy gets the violation in its comment and a failed build.

Last, backups (restic's REST server on this machine): a and b back up on demand, the stack
is destroyed and brought up again with `restoreFrom: latest`, and the repository clones at
the same commit, the built image pulls by its digest, a file on the export reads back with
its checksum, Drone still lists the repository with its builds and keeps its login through
Gitea (the same OAuth2 application), and once the repository's secret holds the new stack's
key (README) a third push is built and served by the new swarm."""
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from tests.e2e.conftest import TIMINGS
from tests.e2e.stack import LocalStack, shows
from tests.e2e.test_local_stack import leftovers, start_backup_server, tear_down, timed, wait_for
from tests.engine import ROOT, Engine
from tests.test_engine_pipeline import TABLE_5_1_DEFAULT_HOSTS, UNPRICED_WORKERS, origin, set_default_stack  # noqa: F401  (a fixture)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("DOCKYARD_E2E_CICD") != "1",
                       reason="opt-in (DOCKYARD_E2E_CICD=1): builds Gitea and Drone from source first"),
]

NET = "e2eci"
MASTER, MANAGER = "10.234.0.11", "10.234.0.12"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "web"
CONFIG = {"cloud": "local", "tier": "default", "workers": "0", "vpcCidr": "10.234.0.0/24",
          "ciServices": ["registry", "gitea", "drone"]}
# backups to restic's REST server on this machine, as the default e2e's
BACKUP_LISTEN = "10.234.0.1:8765"
CONFIG["backupRepository"] = f"rest:http://{BACKUP_LISTEN}/{NET}"
BACKUP_PASSWORD = "e2e-backup-" + os.urandom(12).hex()


# Gitea and Drone serve HTTPS only, with certificates of the stack's CA: this machine trusts
# that CA as README tells a user to (`pulumi stack output ca_certificate`), a new one after
# the stack is recreated
TRUST: dict = {}


def trust_the_stacks_ca(stack, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    ca = where / "ca.crt"
    ca.write_text(stack.outputs["ca_certificate"])
    TRUST.update(ca=str(ca), context=ssl.create_default_context(cafile=str(ca)))
    urllib.request.install_opener(urllib.request.build_opener(https_handler()))


def https_handler() -> urllib.request.HTTPSHandler:
    return urllib.request.HTTPSHandler(context=TRUST["context"])


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def http(url, user=None, password=None, follow=True):
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    opener = urllib.request.build_opener(https_handler(), *([] if follow else [NoRedirect]))
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
        ["python3", "-m", "localcloud", "ci-images", "--out", str(images)], check=True, stdout=subprocess.PIPE,
        text=True))
    settings = json.loads(built.stdout.strip().splitlines()[-1])
    archives = ("gitea", "drone", "drone-runner", "drone-pipeline", "busybox", "pulumi-python")
    # the pull-request previews' step image (engine, plugins, the requirements' wheels)
    timed("preview image (build)", lambda: subprocess.run(
        ["python3", "-m", "localcloud", "preview-image", "--out", str(images / "pulumi-python.tar")],
        check=True, stdout=subprocess.PIPE))
    backup_server = start_backup_server(tmp_path_factory.mktemp("backups"), NET, CONFIG["vpcCidr"], BACKUP_LISTEN)
    engine = Engine.in_tmp(tmp_path_factory.mktemp("engine"))
    stack = LocalStack.create(engine, NET, {**CONFIG, "ciImages": settings,
                                            "preloadImages": [str(images / f"{n}.tar") for n in archives]},
                              secrets={"backupPassword": BACKUP_PASSWORD})
    try:
        timed("up with Gitea and Drone", stack.up)
        trust_the_stacks_ca(stack, tmp_path_factory.mktemp("trust"))
        stack.preview("--expect-no-changes")
        yield stack
    finally:
        try:
            tear_down(stack, backup_server)
        finally:
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


def test_gitea_and_drone_answer_only_over_tls_with_the_stacks_certificate(stack):
    """Issue 14: no password, token or code crosses the network in clear."""
    for url in (stack.outputs["gitea_url"], stack.outputs["drone_url"]):
        assert url.startswith("https://")
        plain = http(url.replace("https://", "http://", 1) + "/")
        assert plain[0] == 400 and "HTTPS server" in plain[2], f"{url}: no plain HTTP"
        with pytest.raises(urllib.error.URLError) as refused:
            urllib.request.urlopen(url + "/", timeout=10, context=ssl.create_default_context())
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError), "public roots do not vouch for it"
        assert http(url + ("/api/healthz" if ":3000" in url else "/healthz"))[0] == 200, "the stack's CA does"


def drone_application(stack) -> dict:
    """Drone's OAuth2 application in Gitea (the only one of that name)."""
    status, _, body = http(f"{stack.outputs['gitea_url']}/api/v1/user/applications/oauth2", "dockyard",
                           stack.outputs["gitea_admin_password"])
    assert status == 200, body
    (app,) = [a for a in json.loads(body) if a["name"] == "drone"]
    return app


def test_drone_logs_in_through_gitea_with_its_oauth_application(stack):
    gitea, drone = stack.outputs["gitea_url"], stack.outputs["drone_url"]
    app = drone_application(stack)
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


def repo_tag(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        (tag,) = json.loads(tar.extractfile("manifest.json").read())[0]["RepoTags"]
    return tag


class HiddenInputs(HTMLParser):
    """The hidden fields of a page's forms (Gitea's CSRF token, the OAuth2 grant's fields)."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""


def hidden_inputs(page: str) -> dict[str, str]:
    parser = HiddenInputs()
    parser.feed(page)
    return parser.fields


def log_in_to_drone_through_gitea(gitea: str, drone: str, user: str, password: str,
                                  granted_before: bool = False) -> None:
    """What a user does once in a browser: Drone's login sends them to Gitea, they sign in
    and grant Drone access, and Gitea sends them back to Drone with a code. A user who
    granted it before (`granted_before`: an earlier test of this run may have) is sent back
    at once."""
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), https_handler())

    def post(url, fields):
        return browser.open(urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode()), timeout=30)

    form = browser.open(f"{gitea}/user/login", timeout=30).read().decode()
    signed_in = post(f"{gitea}/user/login", {"_csrf": hidden_inputs(form)["_csrf"], "user_name": user,
                                            "password": password})
    assert "/user/login" not in signed_in.geturl(), "Gitea did not take the admin's password"
    grant = browser.open(f"{drone}/login", timeout=30)
    if granted_before and grant.geturl().startswith(drone):
        assert grant.status == 200 and "/login" not in grant.geturl(), grant.geturl()
        return
    assert grant.geturl().startswith(f"{gitea}/login/oauth/authorize"), grant.geturl()
    fields = hidden_inputs(grant.read().decode())
    assert fields.get("client_id"), "Gitea shows the grant page for Drone's application"
    back = post(f"{gitea}/login/oauth/grant", {**fields, "granted": "true"})
    assert back.geturl().startswith(drone) and back.status == 200, back.geturl()


def drone_api(stack, method: str, path: str, body=None):
    request = urllib.request.Request(f"{stack.outputs['drone_url']}/api{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Authorization", f"Bearer {stack.outputs['drone_admin_token']}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def git_env(stack) -> dict:
    """git over HTTP as the admin, the password in a header from the environment, so it is on
    no command line."""
    token = b64encode(f"dockyard:{stack.outputs['gitea_admin_password']}".encode()).decode()
    return {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {token}", "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSL_CAINFO": TRUST["ca"]}


def push(stack, workdir: Path, message: str) -> None:
    """git push over HTTP as the admin (git_env)."""
    env = git_env(stack)

    def git(*args):
        subprocess.run(["git", *args], cwd=workdir, env=env, check=True, capture_output=True)
    git("add", "-A")
    git("-c", "user.name=dockyard", "-c", "user.email=dockyard@localhost", "commit", "-q", "-m", message)
    git("push", "-q", f"{stack.outputs['gitea_url']}/dockyard/web.git", "main")


def ended_build(stack, number: int, repo: str = "dockyard/web") -> dict:
    """Drone's build `number` of `repo`, once it has ended, whatever its status."""
    def done():
        builds = drone_api(stack, "GET", f"/repos/{repo}/builds")
        build = next((b for b in builds if b["number"] == number), None)
        return build if build and build["status"] not in ("pending", "running") else None
    return wait_for(f"Drone build {number} of {repo}", done, timeout=1200, every=10)


def pull_request_build(stack, repo: str, pull: int, commit: str) -> dict:
    """The ended build of pull request `pull` at `commit`."""
    def done():
        builds = drone_api(stack, "GET", f"/repos/{repo}/builds")
        build = next((b for b in builds if b["ref"] == f"refs/pull/{pull}/head" and b["after"] == commit), None)
        return build if build and build["status"] not in ("pending", "running") else None
    return wait_for(f"Drone's build of pull request {pull} at {commit[:8]}", done, timeout=1200, every=10)


def build_logs(stack, number: int, repo: str = "dockyard/web") -> str:
    detail = drone_api(stack, "GET", f"/repos/{repo}/builds/{number}")
    logs = []
    for stage in detail.get("stages", []):
        for step in stage.get("steps", []):
            lines = drone_api(stack, "GET", f"/repos/{repo}/builds/{number}/logs/{stage['number']}/"
                                             f"{step['number']}") or []
            logs.append(f"--- {step['name']} ({step['status']})\n" + "".join(line["out"] for line in lines))
    return "\n".join(logs)


def finished_build(stack, number: int, repo: str = "dockyard/web") -> dict:
    build = ended_build(stack, number, repo)
    if build["status"] != "success":
        raise AssertionError(f"build {number} ended {build['status']}:\n" + build_logs(stack, number, repo)[-6000:])
    return build


def served(stack) -> str:
    return stack.ssh(MANAGER, "curl -s --max-time 5 http://127.0.0.1:8080/", check=False).stdout.strip()


def test_a_push_is_built_pushed_to_the_registry_and_rolled_out_by_the_swarm(stack, tmp_path):
    gitea, drone = stack.outputs["gitea_url"], stack.outputs["drone_url"]
    password = stack.outputs["gitea_admin_password"]
    timed("Drone login through Gitea", lambda: log_in_to_drone_through_gitea(gitea, drone, "dockyard", password))

    request = urllib.request.Request(f"{gitea}/api/v1/user/repos", method="POST",
                                     data=json.dumps({"name": "web", "private": True,
                                                      "default_branch": "main"}).encode())
    request.add_header("Authorization", "Basic " + b64encode(f"dockyard:{password}".encode()).decode())
    request.add_header("Content-Type", "application/json")
    urllib.request.urlopen(request, timeout=30).close()

    drone_api(stack, "POST", "/user/repos?async=false")
    repo = drone_api(stack, "POST", "/repos/dockyard/web")
    assert repo["active"] is True
    # host volumes (the docker socket, the registry login) need a trusted repository
    assert drone_api(stack, "PATCH", "/repos/dockyard/web", {"trusted": True})["trusted"] is True
    key = Path(stack.key_file()).read_text()
    for name, data in (("registry", stack.outputs["registry"]), ("swarm_manager", f"ssh://root@{MANAGER}"),
                       ("swarm_ssh_key", key)):
        drone_api(stack, "POST", "/repos/dockyard/web/secrets", {"name": name, "data": data})
    hooks = http(f"{gitea}/api/v1/repos/dockyard/web/hooks", "dockyard", password)[2]
    assert any(h["config"]["url"].startswith(f"{drone}/hook") for h in json.loads(hooks)), "Drone's webhook"

    workdir = tmp_path / "web"
    shutil.copytree(EXAMPLE, workdir)
    (busybox_archive,) = [a for a in stack.config("preloadImages") if a.endswith("/busybox.tar")]
    busybox, pipeline = repo_tag(Path(busybox_archive)), stack.config("ciImages")["droneClone"]
    for name in (".drone.yml", "Dockerfile"):
        text = (workdir / name).read_text()
        text = text.replace("busybox:1.36", busybox).replace("docker:27-cli", pipeline)
        (workdir / name).write_text(text)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=workdir, check=True)

    start = time.monotonic()
    push(stack, workdir, "web 1")
    build = timed("push -> build -> deploy (service created)", lambda: finished_build(stack, 1))
    wait_for("the first version served by the swarm", lambda: served(stack) == "dockyard web, built by Drone",
             timeout=180, every=5)
    TIMINGS.append(f"[e2e-cicd] first push to served: {time.monotonic() - start:.0f} s")
    sha = build["after"][:8]
    spec = json.loads(stack.ssh(MANAGER, "docker service inspect web").stdout)[0]["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"].startswith(f"{stack.outputs['registry']}/web:{sha}")
    assert spec["UpdateConfig"]["Order"] == "start-first"
    assert spec["UpdateConfig"]["FailureAction"] == "rollback"

    start = time.monotonic()
    (workdir / "index.html").write_text("dockyard web 2, built by Drone\n")
    push(stack, workdir, "web 2")
    build = timed("push -> build -> rolling update", lambda: finished_build(stack, 2))
    wait_for("the second version served by the swarm", lambda: served(stack) == "dockyard web 2, built by Drone",
             timeout=180, every=5)
    TIMINGS.append(f"[e2e-cicd] second push to served: {time.monotonic() - start:.0f} s")
    image = json.loads(stack.ssh(MANAGER, "docker service inspect web").stdout)[0]["Spec"]["TaskTemplate"]
    assert image["ContainerSpec"]["Image"].startswith(f"{stack.outputs['registry']}/web:{build['after'][:8]}")
    assert stack.ssh(MASTER, f"curl -s -o /dev/null -w '%{{http_code}}' --cacert /etc/docker/certs.d/"
                             f"{stack.outputs['registry']}/ca.crt https://{stack.outputs['registry']}/v2/",
                     check=False).stdout == "401", "the registry still wants its password"


def test_no_ci_secret_is_in_clear(stack):
    secrets = stack.secrets_in_state()
    named = [stack.outputs["gitea_admin_password"], stack.outputs["registry_password"],
             stack.outputs["drone_admin_token"]]
    assert set(named) <= secrets
    assert len(secrets) > len(named) + 2, "the OAuth2 client secret and the RPC secret are secrets too"
    plain_state = stack.engine.export(NET)
    assert not [s[:8] for s in secrets if shows(plain_state, s)], "pulumi stack export holds no secret in clear"
    for update in stack.updates:
        assert not [s[:8] for s in secrets if shows(update.console(), s)], "no update printed a secret"
    cmdlines = stack.ssh(MASTER, "cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '").stdout
    assert not any(s in cmdlines for s in secrets)
    TIMINGS.append(f"[e2e-cicd] secrets checked: {len(secrets)}")


def gitea_api(stack, method: str, path: str, body=None):
    """Gitea's API as the admin."""
    request = urllib.request.Request(f"{stack.outputs['gitea_url']}/api/v1{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    credentials = f"dockyard:{stack.outputs['gitea_admin_password']}"
    request.add_header("Authorization", "Basic " + b64encode(credentials.encode()).decode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def preview_comments(stack, number: int) -> list[dict]:
    return [c for c in gitea_api(stack, "GET", f"/repos/dockyard/platform/issues/{number}/comments")
            if c["body"].startswith("<!-- dockyard-preview:")]


def droplets_planned(comment: str) -> int:
    """N of the comment's "- `digitalocean:index/droplet:Droplet`: N to create" line."""
    prefix = "- `digitalocean:index/droplet:Droplet`: "
    line = next(line for line in comment.splitlines() if line.startswith(prefix))
    counts = dict(reversed(part.split(" ", 1)) for part in line[len(prefix):].split(", "))
    return int(counts["to create"])


def test_a_pull_request_gets_one_preview_comment_per_touched_stack_from_drone(stack, origin, tmp_path):
    """Issue 19: this project in the platform's Gitea, its .drone.yml run by Drone on pull
    requests with the preview-only secrets README tells a maintainer to add."""
    gitea, drone = stack.outputs["gitea_url"], stack.outputs["drone_url"]
    # the push test, when it ran first, granted Drone access already
    log_in_to_drone_through_gitea(gitea, drone, "dockyard", stack.outputs["gitea_admin_password"],
                                  granted_before=True)
    gitea_api(stack, "POST", "/user/repos", {"name": "platform", "private": True, "default_branch": "main"})
    drone_api(stack, "POST", "/user/repos?async=false")
    assert drone_api(stack, "POST", "/repos/dockyard/platform")["active"] is True
    assert drone_api(stack, "PATCH", "/repos/dockyard/platform", {"ignore_forks": True})["ignore_forks"] is True
    token = gitea_api(stack, "POST", "/users/dockyard/tokens",
                      {"name": "previews", "scopes": ["write:issue", "read:repository"]})["sha1"]
    for name, data in (("preview_pulumi_backend_url", "file:///tmp"),
                       ("preview_pulumi_config_passphrase", os.urandom(12).hex()),
                       ("digitalocean_read_token", "dummy-read-token"), ("gitea_token", token)):
        drone_api(stack, "POST", "/repos/dockyard/platform/secrets",
                  {"name": name, "data": data, "pull_request": True})

    # the project as its maintainer keeps it (tests/test_engine_pipeline.origin), with the step
    # image built here: the CI host reaches neither Docker Hub nor PyPI
    work = tmp_path / "platform"
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
    pipeline = (ROOT / ".drone.yml").read_text()
    assert "image: pulumi/pulumi-python:3.259.0" in pipeline
    (work / ".drone.yml").write_text(pipeline.replace("pulumi/pulumi-python:3.259.0", "dockyard/pulumi-python:3.259.0"))
    env = git_env(stack)
    remote = f"{gitea}/dockyard/platform.git"

    def commit_and_push(message: str, branch: str) -> str:
        for args in (["add", "-A"], ["-c", "user.name=dockyard", "-c", "user.email=dockyard@localhost", "commit",
                                     "-q", "-m", message], ["push", "-q", remote, f"HEAD:refs/heads/{branch}"]):
            subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, check=True, capture_output=True,
                              text=True).stdout.strip()

    def previewed(pull: int, commit: str, status: str = "success") -> dict:
        build = pull_request_build(stack, "dockyard/platform", pull, commit)
        assert build["event"] == "pull_request"
        assert build["status"] == status, build_logs(stack, build["number"], "dockyard/platform")[-6000:]
        return build

    commit_and_push("the platform, previewed on pull requests", "main")

    # 1. one more worker: one comment, for `default`
    subprocess.run(["git", "checkout", "-q", "-b", "more-workers"], cwd=work, check=True)
    set_default_stack(work, "workers", "3")
    commit = commit_and_push("one more worker", "more-workers")
    start = time.monotonic()
    pull = gitea_api(stack, "POST", "/repos/dockyard/platform/pulls",
                     {"head": "more-workers", "base": "main", "title": "One more worker"})["number"]
    timed("pull request -> preview comment", lambda: previewed(pull, commit))
    TIMINGS.append(f"[e2e-cicd] pull request opened to its preview comment: {time.monotonic() - start:.0f} s")
    (comment,) = preview_comments(stack, pull)
    assert comment["body"].startswith("<!-- dockyard-preview:default -->"), comment["body"][:200]
    # the preview backend is empty in each build's container: the whole default tier is
    # planned, table 5.1's two hosts and the pull request's workers
    assert droplets_planned(comment["body"]) == TABLE_5_1_DEFAULT_HOSTS + 3, comment["body"][:3000]

    # 2. a second push to it replaces that comment
    set_default_stack(work, "workers", "4")
    commit = commit_and_push("and another", "more-workers")
    timed("second push -> comment replaced", lambda: previewed(pull, commit))
    (again,) = preview_comments(stack, pull)
    assert again["id"] == comment["id"], "the same comment"
    assert droplets_planned(again["body"]) == TABLE_5_1_DEFAULT_HOSTS + 4, "with the new plan"

    # 3. no stack file touched: no preview
    subprocess.run(["git", "checkout", "-q", "main"], cwd=work, check=True)
    subprocess.run(["git", "checkout", "-q", "-b", "docs"], cwd=work, check=True)
    (work / "NOTES.md").write_text("How the platform is run.\n")
    commit = commit_and_push("notes", "docs")
    docs = gitea_api(stack, "POST", "/repos/dockyard/platform/pulls",
                     {"head": "docs", "base": "main", "title": "Notes"})["number"]
    previewed(docs, commit)
    assert preview_comments(stack, docs) == []

    # 4. a policy broken: the comment shows it and the build fails
    subprocess.run(["git", "checkout", "-q", "main"], cwd=work, check=True)
    subprocess.run(["git", "checkout", "-q", "-b", "big-workers"], cwd=work, check=True)
    set_default_stack(work, *UNPRICED_WORKERS)
    commit = commit_and_push("bigger workers", "big-workers")
    big = gitea_api(stack, "POST", "/repos/dockyard/platform/pulls",
                    {"head": "big-workers", "base": "main", "title": "Bigger workers"})["number"]
    previewed(big, commit, status="failure")
    (refused,) = preview_comments(stack, big)
    assert "#### Policy violations:" in refused["body"] and "droplet-size-allowed" in refused["body"]


def test_destroy_and_recreate_from_a_backup_brings_back_gitea_drone_the_registry_and_the_export(stack, tmp_path):
    """Issue 17's case: what a user pushed and built outlives `pulumi destroy` through a backup."""
    gitea = stack.outputs["gitea_url"]
    heads = subprocess.run(["git", "ls-remote", f"{gitea}/dockyard/web.git", "main"], env=git_env(stack),
                           check=True, capture_output=True, text=True).stdout.split()
    commit = heads[0]
    # the swarm pins the pushed tag to its digest (registry/web:<commit>@sha256:...); the
    # manager holds the image by that digest only
    pinned = json.loads(stack.ssh(MANAGER, "docker service inspect web").stdout)[0]["Spec"]["TaskTemplate"][
        "ContainerSpec"]["Image"]
    tag, digest = pinned.split("@")
    image = f"{tag.rsplit(':', 1)[0]}@{digest}"
    assert digest.startswith("sha256:") and stack.ssh(MANAGER, f"docker image inspect {image}", check=False).returncode == 0
    checksum = stack.ssh(MANAGER, "head -c 2000000 /dev/urandom > /mnt/nfs/data/backup-probe && "
                                  "sha256sum < /srv/nfs/data/backup-probe").stdout.split()[0]
    builds = sorted(b["number"] for b in drone_api(stack, "GET", "/repos/dockyard/web/builds"))
    client_id = drone_application(stack)["client_id"]

    for host in (MASTER, MANAGER):
        timed(f"backup on {host}", lambda: stack.ssh(host, "systemctl start dockyard-backup.service"))
        said = stack.ssh(host, "journalctl -u dockyard-backup.service -o cat --no-pager | "
                               "grep -E 'backed up|paused' | tail -n 3").stdout
        TIMINGS.extend(f"[e2e-cicd] {host}: {line}" for line in said.splitlines())
    assert "paused gitea drone while their data is read" in stack.ssh(
        MASTER, "journalctl -u dockyard-backup.service -o cat --no-pager").stdout
    assert stack.ssh(MASTER, "docker inspect -f '{{.State.Paused}}' gitea drone").stdout.split() == ["false", "false"]
    size = stack.ssh(MASTER, "set -a; . /etc/dockyard/backup.env; restic stats --mode raw-data --quiet | "
                             "grep -i 'total size'").stdout.strip()
    TIMINGS.append(f"[e2e-cicd] the repository after one backup of a and b: {size}")

    timed("destroy", stack.destroy)
    assert leftovers(NET) == []
    stack.set("restoreFrom", "latest")
    recreated = timed("up after destroy, restoring the backup", stack.up)
    trust_the_stacks_ca(stack, tmp_path / "trust")  # the recreated stack has a CA of its own
    for host in ("a", "b"):
        said = [line for line in recreated.printed(f"{host}-backup-restic").splitlines() if "restored" in line]
        assert said, f"{host} restored its data"
        TIMINGS.append(f"[e2e-cicd] {said[-1].strip()}")
    wait_for("4 healthy CI containers again", lambda: all(
        line.endswith(" healthy") for line in stack.ssh(
            MASTER, "docker inspect -f '{{.Name}} {{.State.Health.Status}}' registry gitea drone drone-runner"
        ).stdout.splitlines()), timeout=300)

    # the repository clones, at the same commit, with the new stack's admin password
    clone = tmp_path / "web"
    subprocess.run(["git", "clone", "-q", f"{stack.outputs['gitea_url']}/dockyard/web.git", str(clone)],
                   env=git_env(stack), check=True, capture_output=True)
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True, capture_output=True,
                          text=True).stdout.strip() == commit
    # the image pulls by its digest from the new registry (its new password), on a new host
    pulled = stack.ssh(MANAGER, f"docker pull {image}", check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert stack.ssh(MANAGER, "sha256sum < /srv/nfs/data/backup-probe").stdout.split()[0] == checksum
    # Drone still lists the repository, active and trusted, with its builds, to the new admin token
    repo = drone_api(stack, "GET", "/repos/dockyard/web")
    assert repo["active"] is True and repo["trusted"] is True
    assert sorted(b["number"] for b in drone_api(stack, "GET", "/repos/dockyard/web/builds")) == builds
    assert "dockyard/web" in [r["slug"] for r in drone_api(stack, "GET", "/user/repos")]
    stack.preview("--expect-no-changes")

    # Drone's OAuth2 application is the one restored (its credentials are kept on the CI
    # volume), so the login Drone holds for the user still works: no one logs in again
    assert drone_application(stack)["client_id"] == client_id
    drone_api(stack, "POST", "/user/repos?async=false")
    # it builds again once the repository's secret holds the new stack's key (README)
    drone_api(stack, "PATCH", "/repos/dockyard/web/secrets/swarm_ssh_key", {"data": Path(stack.key_file()).read_text()})
    start = time.monotonic()
    (clone / "index.html").write_text("dockyard web 3, built by Drone\n")
    push(stack, clone, "web 3")
    timed("push after the restore -> build -> deploy", lambda: finished_build(stack, max(builds) + 1))
    wait_for("the third version served by the new swarm", lambda: served(stack) == "dockyard web 3, built by Drone",
             timeout=180, every=5)
    TIMINGS.append(f"[e2e-cicd] push after the restore to served: {time.monotonic() - start:.0f} s")
