"""The preview pipeline's image (python3 -m localcloud preview-image), built here, runs what
.drone.yml runs, offline: its steps' commands in a root filesystem made of the image's layers
(chroot, as root), against a clone of a pull request that adds a worker to `default`, with
a backend of its own that starts empty. No Docker Hub, no PyPI: the engine, the plugins and
the requirements' wheels are in the image."""
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from previews.comment import changes, read_events
from tests.e2e.conftest import TIMINGS
from tests.test_engine_pipeline import one_more_worker, origin, pull_request  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e
PIPELINE = yaml.safe_load((Path(__file__).resolve().parents[2] / ".drone.yml").read_text())


def unpack(archive: Path, root: Path) -> dict:
    """The image's layers, in order, into `root`; returns its config."""
    with tarfile.open(archive) as image:
        manifest = json.loads(image.extractfile("manifest.json").read())[0]
        config = json.loads(image.extractfile(manifest["Config"]).read())["config"]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=image.extractfile(layer)) as files:
                files.extractall(root, filter="fully_trusted")
    return config


def run_in(root: Path, workdir: str, env: dict, command: str) -> subprocess.CompletedProcess:
    """`command` as a pipeline step runs it: /bin/sh -c in the image's filesystem, with its /dev and /proc."""
    for mount in ("dev", "proc"):
        (root / mount).mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", "/dev", str(root / "dev")], check=True)
    try:
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
        try:
            return subprocess.run(["chroot", str(root), "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                                   "sh", "-c", f"cd {workdir} && {command}"],
                                  capture_output=True, text=True, timeout=1200)
        finally:
            subprocess.run(["umount", str(root / "proc")], check=True)
    finally:
        subprocess.run(["umount", str(root / "dev")], check=True)


def test_the_pipeline_image_previews_a_pull_request_offline(origin, tmp_path):  # noqa: F811
    if os.geteuid() != 0:
        pytest.fail("this test needs root (chroot, mounts); run it as root")
    start = time.monotonic()
    archive = tmp_path / "pulumi-python.tar"
    tag = subprocess.run(["python3", "-m", "localcloud", "preview-image", "--out", str(archive)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    TIMINGS.append(f"[e2e] preview image {tag}: built in {time.monotonic() - start:.0f} s, "
                   f"{archive.stat().st_size / 2**20:.0f} MiB")

    clone = pull_request(origin, tmp_path, one_more_worker)
    (clone / ".venv").unlink()  # the step makes its own
    root = tmp_path / "root"
    root.mkdir()
    config = unpack(archive, root)
    # the pull request's checkout and the repository it came from, where the runner has them
    subprocess.run(["cp", "-a", str(clone), str(root / "drone-src")], check=True)
    (root / origin.relative_to("/")).parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(origin), str(root / origin.relative_to("/"))], check=True)
    (root / "tmp" / "backend").mkdir(parents=True, exist_ok=True)
    (step,) = PIPELINE["steps"]
    env = dict(item.split("=", 1) for item in config["Env"])
    env.update({"HOME": "/root", "BASE_REF": "main", "PULUMI_BACKEND_URL": "file:///tmp/backend",
                "PULUMI_CONFIG_PASSPHRASE": "previews-only", "DIGITALOCEAN_TOKEN": "dummy-read-token"})
    start = time.monotonic()
    result = run_in(root, "/drone-src", env, " && ".join(step["commands"]))
    TIMINGS.append(f"[e2e] the pipeline's commands in the image: {time.monotonic() - start:.0f} s")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    out = root / "drone-src" / "previews" / "out"
    assert "### `pulumi preview` of stack `default`" in (out / "default.md").read_text()
    planned = changes(read_events((out / "default.jsonl").read_text()))
    droplets = [c for c in planned if c.type == "digitalocean:index/droplet:Droplet"]
    assert {c.op for c in droplets} == {"create"} and len(droplets) == 5, "table 5.1's 2 hosts and 3 workers"
