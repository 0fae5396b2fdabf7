"""The preview pipeline's image for hosts that cannot reach Docker Hub or PyPI: what
`pulumi/pulumi-python` gives the pull-request previews (.drone.yml), built here.

    python3 -m localcloud preview-image --out FILE

writes FILE, a docker-archive of dockyard/pulumi-python:<the pinned CLI version>: a Debian 12
minbase layer with python3, venv, git and the ssh client; the Pulumi CLI and its Python
language host (from tools/setup.sh's toolchain, itself from the mirror or the official
downloads); the resource plugins at the pinned versions; and the wheels of requirements.txt,
which pip takes without an index (PIP_NO_INDEX, PIP_FIND_LINKS), so the pipeline's own
`python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` works offline."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from localcloud.ci_images import base_layer
from localcloud.images import ImageSpec, write_archive
from localcloud.system import LocalCloudError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = "git,ca-certificates,openssh-client,python3,python3-venv"
CLI_DIR = "/usr/local/pulumi"
PULUMI_HOME = "/usr/local/share/pulumi"
WHEELS = "/usr/local/share/dockyard/wheels"


def pins() -> dict[str, str]:
    """requirements.txt's `pulumi==V` and `pulumi-NAME==V` pins: the CLI ("cli") and each
    resource plugin (every pin but the policy SDK's, as tools/toolchain.sh reads them)."""
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"pulumi(?:-([a-z0-9]+))?==([0-9.]+)", line.strip())
        if match and match.group(1) != "policy":
            found[match.group(1) or "cli"] = match.group(2)
    return found


def tree_layer(trees: dict[str, Path]) -> bytes:
    """One layer holding each local directory at its path in the image (files, links, modes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for target, source in sorted(trees.items()):
            tar.add(source, arcname=target.strip("/"),
                    filter=lambda info: None if info.name.endswith((".lock", ".lastused")) else info)
    return buffer.getvalue()


def toolchain_dirs() -> tuple[Path, Path]:
    """The pinned CLI's directory and the plugins' (PULUMI_HOME/plugins) that setup installed."""
    version = pins()["cli"]
    cli = Path(os.environ.get("DOCKYARD_TOOLCHAIN_DIR", Path.home() / ".cache" / "dockyard" / "toolchain")) \
        / f"pulumi-{version}" / "pulumi"
    plugins = Path(os.environ.get("PULUMI_HOME", Path.home() / ".pulumi")) / "plugins"
    if not (cli / "pulumi").is_file():
        raise LocalCloudError(f"no Pulumi CLI {version} at {cli}: run tools/setup.sh first")
    return cli, plugins


def preview_image(base: bytes, cli: Path, plugins: Path, wheels: Path) -> ImageSpec:
    wanted = {f"resource-{name}-v{version}": plugins / f"resource-{name}-v{version}"
              for name, version in pins().items() if name != "cli"}
    missing = [name for name, path in wanted.items() if not path.is_dir()]
    if missing:
        raise LocalCloudError(f"plugins missing from {plugins}: {', '.join(missing)}; run tools/setup.sh first")
    trees = {CLI_DIR: cli, WHEELS: wheels}
    trees.update({f"{PULUMI_HOME}/plugins/{name}": path for name, path in wanted.items()})
    return ImageSpec(
        repo_tag=f"dockyard/pulumi-python:{pins()['cli']}",
        cmd=["/bin/bash"],
        env=(f"PATH={CLI_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             f"PULUMI_HOME={PULUMI_HOME}", "PULUMI_SKIP_UPDATE_CHECK=true",
             "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true",
             "PIP_NO_INDEX=1", f"PIP_FIND_LINKS={WHEELS}", "PIP_DISABLE_PIP_VERSION_CHECK=1"),
        base_layers=(base, tree_layer(trees)))


def download_wheels(dest: Path) -> None:
    """requirements.txt's packages (and what builds an sdist) as wheels for Debian 12's Python
    3.11 on amd64, from the index this machine reaches."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(dest),
         "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
         "--platform", "manylinux_2_17_x86_64", "--platform", "any",
         "-r", str(ROOT / "requirements.txt"), "pip", "setuptools", "wheel"],
        text=True, capture_output=True)
    if result.returncode != 0:
        raise LocalCloudError(f"pip download of requirements.txt failed: {result.stderr.strip()[-2000:]}")


def build_preview_image(out: Path) -> str:
    """Write the archive to `out`; returns its repo tag."""
    cli, plugins = toolchain_dirs()
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp) / "wheels"
        download_wheels(wheels)
        spec = preview_image(base_layer(PACKAGES), cli, plugins, wheels)
        write_archive(spec, out)
    return spec.repo_tag
