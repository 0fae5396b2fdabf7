"""tools/toolchain.sh installs the engine from a mirror of Pulumi's releases, checking each
file against SHA256SUMS; and the README's set-up block, run as a new user types it on a
fresh copy of the project, ends with the pinned CLI and the five plugins.

The mirror is DOCKYARD_TOOLCHAIN_MIRROR, else ../shared/toolchain beside the checkout (what
.ci/run points at). These tests install into temporary directories, never into the
developer's own toolchain or PULUMI_HOME."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.engine import ROOT, pinned_version

pytestmark = pytest.mark.engine

PLUGINS = {"command": "1.2.1", "digitalocean": "4.76.0", "docker": "5.1.0", "tls": "5.5.1", "random": "4.21.1"}


def mirror() -> Path:
    path = Path(os.environ.get("DOCKYARD_TOOLCHAIN_MIRROR") or ROOT.parent / "shared" / "toolchain")
    assert (path / "SHA256SUMS").is_file(), f"no mirror of Pulumi's releases at {path} (DOCKYARD_TOOLCHAIN_MIRROR)"
    return path.resolve()


def fresh_env(tmp: Path, mirror_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PULUMI_", "DOCKYARD_")) and k != "VIRTUAL_ENV"}
    # the toolchain's own PATH entries out, so that nothing installed before is found
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if "dockyard/toolchain" not in p and ".venv" not in p)
    env.update(DOCKYARD_TOOLCHAIN_MIRROR=str(mirror_dir), DOCKYARD_TOOLCHAIN_DIR=str(tmp / "toolchain"),
               DOCKYARD_STATE_HOME=str(tmp / "state"), PULUMI_HOME=str(tmp / "pulumi-home"))
    return env


def toolchain(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "tools/toolchain.sh")], env=env, capture_output=True, text=True,
                          timeout=300)


def fake_mirror(tmp: Path, sums) -> Path:
    """A mirror of links to the real files, with a SHA256SUMS of our own."""
    fake = tmp / "mirror"
    fake.mkdir()
    for item in mirror().glob("*.tar.gz"):
        (fake / item.name).symlink_to(item)
    lines = (mirror() / "SHA256SUMS").read_text().splitlines()
    (fake / "SHA256SUMS").write_text("\n".join(sums(lines)) + "\n")
    return fake


def test_the_readme_set_up_on_a_fresh_copy_gives_the_pinned_cli_and_plugins(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- set-up: tested -->\s*```sh\n(.*?)```", readme, re.S)
    assert block, "README.md has a set-up block marked <!-- set-up: tested -->"
    commands = block.group(1)
    copy = tmp_path / "dockyard"
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    env = fresh_env(tmp_path, mirror())
    script = f"set -e\ncd {copy}\n{commands}\npulumi plugin ls --json > plugins.json\n"
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"v{pinned_version()}" in result.stdout.split()
    installed = {p["name"]: p["version"] for p in json.loads((copy / "plugins.json").read_text())}
    assert installed == PLUGINS
    progress = [line for line in result.stderr.splitlines() if line.startswith("toolchain: ")]
    assert len(progress) == 1 + len(PLUGINS) + 1, "one line per component, and one when ready"

    again = toolchain(env)
    assert again.returncode == 0 and again.stderr.count(": in place") == 1 + len(PLUGINS), again.stderr


def test_a_file_whose_checksum_differs_is_refused_by_name(tmp_path):
    docker = f"pulumi-resource-docker-v{PLUGINS['docker']}-linux-amd64.tar.gz"
    fake = fake_mirror(tmp_path, lambda lines: ["0" * 64 + line[64:] if line.endswith(docker) else line
                                                for line in lines])
    result = toolchain(fresh_env(tmp_path, fake))
    assert result.returncode != 0
    assert f"checksum mismatch for {fake}/{docker}" in result.stderr
    installed = subprocess.run([str(tmp_path / f"toolchain/pulumi-{pinned_version()}/pulumi/pulumi"), "plugin", "ls"],
                               env=fresh_env(tmp_path, fake), capture_output=True, text=True).stdout
    assert "docker" not in installed, "nothing of a refused file is installed"


def test_a_file_missing_from_the_mirror_or_its_sums_is_named(tmp_path):
    fake = fake_mirror(tmp_path, lambda lines: [line for line in lines if "-tls-" not in line])
    result = toolchain(fresh_env(tmp_path, fake))
    assert result.returncode != 0
    assert f"pulumi-resource-tls-v{PLUGINS['tls']}-linux-amd64.tar.gz is not listed in {fake}/SHA256SUMS" \
        in result.stderr
    (fake / f"pulumi-v{pinned_version()}-linux-x64.tar.gz").unlink()
    again = tmp_path / "again"
    again.mkdir()
    result = toolchain(fresh_env(again, fake))
    assert result.returncode != 0
    assert f"{fake}/pulumi-v{pinned_version()}-linux-x64.tar.gz is missing from the mirror" in result.stderr
