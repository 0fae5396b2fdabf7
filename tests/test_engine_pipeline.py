"""previews/run.sh, the script both preview pipelines run, run here for real with the engine:
in a clone of a repository whose pull request changes one stack file, against a backend that
only previews use and that starts empty, on a machine without the stack's private key, and
with a dummy token and DigitalOcean's API pointed at a closed port (a call would fail it)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from previews.comment import changes, read_events
from tests.engine import ROOT, copy_project, require_cli

pytestmark = pytest.mark.engine

DROPLET = "digitalocean:index/droplet:Droplet"
TABLE_5_1_DEFAULT_HOSTS = 2


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """The project's repository as a maintainer keeps it: the default stack's file carries
    the public key and the admin address (README, "Deploy a DigitalOcean tier")."""
    require_cli()
    tmp = tmp_path_factory.mktemp("pipeline")
    repo = copy_project(tmp / "origin")
    (repo / ".venv").unlink()
    shutil.copytree(ROOT / "previews", repo / "previews", ignore=shutil.ignore_patterns("__pycache__", "out"))
    shutil.copy2(ROOT / ".gitignore", repo / ".gitignore")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "key")], check=True)
    stack_file = repo / "stacks" / "Pulumi.default.yaml"
    settings = yaml.safe_load(stack_file.read_text())
    settings["config"].update({"dockyard:sshPublicKey": (tmp / "key.pub").read_text().strip(),
                               "dockyard:adminCidrs": ["198.51.100.7/32"],
                               "digitalocean:apiEndpoint": "http://127.0.0.1:9"})
    stack_file.write_text(yaml.safe_dump(settings))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.name=maintainer", "-c", "user.email=m@example.org", "add", "-A")
    git(repo, "-c", "user.name=maintainer", "-c", "user.email=m@example.org", "commit", "-q", "-m", "platform")
    return repo


def pull_request(origin: Path, tmp: Path, change) -> Path:
    """A clone of `origin` on a branch with one commit that `change(clone)` made, as a CI
    runner checks a pull request out."""
    clone = tmp / "clone"
    git(tmp, "clone", "-q", str(origin), str(clone))
    git(clone, "checkout", "-q", "-b", "pull-request")
    change(clone)
    git(clone, "-c", "user.name=contributor", "-c", "user.email=c@example.org", "commit", "-q", "-am", "change")
    (clone / ".venv").symlink_to(ROOT / ".venv")
    return clone


def set_default_stack(clone: Path, key: str, value) -> None:
    """A pull request's change to the default stack's file: `dockyard:<key>` set to `value`."""
    stack_file = clone / "stacks" / "Pulumi.default.yaml"
    settings = yaml.safe_load(stack_file.read_text())
    settings["config"][f"dockyard:{key}"] = value
    stack_file.write_text(yaml.safe_dump(settings))


def one_more_worker(clone: Path) -> None:
    """The pull request's change: the default stack gets a third worker."""
    set_default_stack(clone, "workers", "3")


# a worker size the policy pack has no price for: droplet-size-allowed refuses it
UNPRICED_WORKERS = ("sizes", {"worker": "s-32vcpu-192gb"})


def run_pipeline(clone: Path, tmp: Path) -> subprocess.CompletedProcess:
    backend = tmp / "preview-backend"
    backend.mkdir()
    env = {**os.environ, "BASE_REF": "main", "OUT_DIR": str(tmp / "out"),
           "PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_CONFIG_PASSPHRASE": "previews-only",
           "DIGITALOCEAN_TOKEN": "dummy-read-token", "PULUMI_SKIP_UPDATE_CHECK": "true",
           "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
           # the runner's home: no ~/.ssh key of the maintainer's, no pulumi login
           "HOME": str(tmp / "home"), "PULUMI_HOME": os.environ.get("PULUMI_HOME", str(Path.home() / ".pulumi"))}
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    return subprocess.run(["bash", "previews/run.sh"], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=900)


def test_a_pull_request_that_adds_a_worker_gets_the_default_stacks_preview_from_an_empty_backend(origin, tmp_path):
    clone = pull_request(origin, tmp_path, one_more_worker)
    result = run_pipeline(clone, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["default.jsonl", "default.md"]
    assert "a throwaway key stands in" in result.stderr
    events = read_events((tmp_path / "out" / "default.jsonl").read_text())
    droplets = [c for c in changes(events) if c.type == DROPLET]
    assert {c.op for c in droplets} == {"create"} and len(droplets) == TABLE_5_1_DEFAULT_HOSTS + 3
    comment = (tmp_path / "out" / "default.md").read_text()
    assert "### `pulumi preview` of stack `default`" in comment
    assert f"- `{DROPLET}`: {TABLE_5_1_DEFAULT_HOSTS + 3} to create\n" in comment, "the reviewer sees table 5.1's count"


def test_a_pull_request_that_touches_no_stack_previews_nothing(origin, tmp_path):
    def docs_only(clone: Path):
        (clone / "README.md").write_text("How to run the platform.\n")
        git(clone, "add", "README.md")

    clone = pull_request(origin, tmp_path, docs_only)
    result = run_pipeline(clone, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "out").iterdir()) == []
    assert "for: no stack" in result.stderr


def test_a_pull_request_that_breaks_a_policy_gets_the_violation_in_its_comment_and_fails(origin, tmp_path):
    clone = pull_request(origin, tmp_path, lambda clone: set_default_stack(clone, *UNPRICED_WORKERS))
    result = run_pipeline(clone, tmp_path)
    assert result.returncode != 0, "the check is red"
    assert "the preview failed for: default" in result.stderr
    comment = (tmp_path / "out" / "default.md").read_text()
    assert "#### Policy violations:" in comment and "droplet-size-allowed" in comment
    assert "s-32vcpu-192gb" in comment
