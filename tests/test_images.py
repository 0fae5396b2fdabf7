"""Container images written without Docker: the docker-archive format `docker load` reads,
with a base layer under the image's own files, and the CI images' layout."""
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from localcloud.ci_images import DRONE_CLONE, GITEA_STATIC, PIPELINE_TAG, ci_images
from localcloud.images import ImageSpec, write_archive


def layer_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def read_archive(path):
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]
        config = json.loads(tar.extractfile(manifest["Config"]).read())
        layers = [tarfile.open(fileobj=io.BytesIO(tar.extractfile(name).read())) for name in manifest["Layers"]]
    return manifest, config, layers


def test_an_archive_stacks_the_base_layer_under_the_images_files(tmp_path):
    base = layer_of({"usr/bin/git": b"git"})
    spec = ImageSpec(repo_tag="dockyard/t:1", cmd=["serve"], entrypoint=["/usr/local/bin/t"],
                     files={"/usr/local/bin/t": (b"binary", 0o755)}, base_layers=(base,))
    image_id = write_archive(spec, tmp_path / "t.tar")
    manifest, config, layers = read_archive(tmp_path / "t.tar")
    assert manifest["RepoTags"] == ["dockyard/t:1"] and manifest["Config"] == f"{image_id}.json"
    assert len(config["rootfs"]["diff_ids"]) == len(layers) == 2
    assert layers[0].getnames() == ["usr/bin/git"]
    assert "usr/local/bin/t" in layers[1].getnames()
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/t"] and config["config"]["Cmd"] == ["serve"]
    # the same spec gives the same image: its ID is a digest of what it holds
    assert write_archive(spec, tmp_path / "again.tar") == image_id


def test_ci_images_keep_debians_bin_link_and_carry_giteas_static_files(tmp_path):
    binaries = {}
    for name in ("gitea", "environment-to-ini", "drone-server", "drone-runner-docker"):
        binaries[name] = tmp_path / name
        binaries[name].write_bytes(name.encode())
    source = tmp_path / "gitea-src"
    for tree in ("options/locale", "templates", "public/img"):
        (source / tree).mkdir(parents=True)
        (source / tree / "f").write_text(tree)
    specs = ci_images(b"", {k: binaries[k] for k in ("gitea", "environment-to-ini")},
                      {"drone-server": binaries["drone-server"]},
                      {"drone-runner-docker": binaries["drone-runner-docker"]}, source, b"docker")
    assert set(specs) == {"gitea", "drone", "drone-runner", "drone-pipeline"}
    pipeline = specs["drone-pipeline"]
    assert pipeline.repo_tag == PIPELINE_TAG and pipeline.files["/usr/local/bin/docker"][0] == b"docker"
    for spec in specs.values():
        # a file under /bin would turn Debian's /bin -> usr/bin link into a directory
        assert all(not path.startswith(("/bin/", "/lib/", "/sbin/")) for path in spec.files)
        assert spec.entrypoint[0].startswith("/usr/local/bin/") and spec.entrypoint[0] in spec.files
    gitea = specs["gitea"]
    assert f"{GITEA_STATIC}/options/locale/f" in gitea.files and f"{GITEA_STATIC}/templates/f" in gitea.files
    entrypoint = gitea.files["/usr/local/bin/gitea-entrypoint"][0].decode()
    assert f"STATIC_ROOT_PATH = {GITEA_STATIC}" in entrypoint
    assert "environment-to-ini" in entrypoint and "--reuid=git" in entrypoint


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def origin(tmp_path):
    repo = tmp_path / "origin"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    for version in ("1", "2"):
        (repo / "index.html").write_text(f"dockyard web {version}\n")
        git("add", "index.html", cwd=repo)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", version, cwd=repo)
    return repo


def clone(tmp_path, **env):
    script = tmp_path / "drone-clone"
    script.write_text(DRONE_CLONE)
    workspace = tmp_path / "src"
    workspace.mkdir(exist_ok=True)
    return subprocess.run(["sh", str(script)], cwd=workspace, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env}), workspace


def test_the_clone_step_checks_out_the_commit_of_the_build(tmp_path, origin):
    first = git("rev-parse", "HEAD~1", cwd=origin)
    result, workspace = clone(tmp_path, DRONE_REMOTE_URL=f"file://{origin}", DRONE_COMMIT_REF="refs/heads/main",
                              DRONE_COMMIT_SHA=first)
    assert result.returncode == 0, result.stderr
    assert (workspace / "index.html").read_text() == "dockyard web 1\n"
    assert git("rev-parse", "HEAD", cwd=workspace) == first
    # run again in the same workspace (a retried step): it fetches and moves on
    result, _ = clone(tmp_path, DRONE_REMOTE_URL=f"file://{origin}", DRONE_COMMIT_BRANCH="main")
    assert result.returncode == 0, result.stderr
    assert (workspace / "index.html").read_text() == "dockyard web 2\n"


def test_the_clone_step_keeps_credentials_in_a_private_netrc(tmp_path, origin):
    result, _ = clone(tmp_path, DRONE_REMOTE_URL=f"file://{origin}", DRONE_NETRC_MACHINE="10.0.0.2",
                      DRONE_NETRC_USERNAME="dockyard", DRONE_NETRC_PASSWORD="t0ken")
    assert result.returncode == 0, result.stderr
    netrc = tmp_path / ".netrc"
    assert netrc.read_text() == "machine 10.0.0.2\nlogin dockyard\npassword t0ken\n"
    assert netrc.stat().st_mode & 0o077 == 0
    assert "t0ken" not in result.stdout + result.stderr


def test_the_clone_step_is_posix_sh_and_shellcheck_clean(tmp_path):
    assert shutil.which("shellcheck"), "install shellcheck (apt-get install shellcheck); .ci/run does"
    script = tmp_path / "drone-clone"
    script.write_text(DRONE_CLONE)
    result = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_a_first_base_layer_build_makes_debootstraps_package_cache_and_reports_its_failure(tmp_path, monkeypatch):
    """debootstrap refuses a --cache-dir that does not exist: on a new machine the cache is made
    first, and a failed debootstrap says why instead of an exit status."""
    import localcloud.ci_images as ci
    from localcloud.system import LocalCloudError

    monkeypatch.setattr(ci, "CACHE", tmp_path / "cache")
    seen = {}

    def fake_debootstrap(argv, **kwargs):
        cache_dir = next(a.split("=", 1)[1] for a in argv if a.startswith("--cache-dir="))
        seen["cache_dir_existed"] = os.path.isdir(cache_dir)
        return subprocess.CompletedProcess(argv, 1, "", "E: Couldn't download packages: git")

    monkeypatch.setattr(ci.subprocess, "run", fake_debootstrap)
    with pytest.raises(LocalCloudError, match="Couldn't download packages: git"):
        ci.base_layer()
    assert seen == {"cache_dir_existed": True}


def test_the_preview_image_carries_the_pinned_engine_plugins_and_wheels_for_pip_without_an_index(tmp_path):
    from localcloud.preview_image import PULUMI_HOME, WHEELS, pins, preview_image
    from localcloud.system import LocalCloudError

    cli, plugins, wheels = tmp_path / "cli", tmp_path / "plugins", tmp_path / "wheels"
    for directory in (cli, wheels):
        directory.mkdir()
    (cli / "pulumi").write_text("cli")
    (wheels / "pulumi-3-py3-none-any.whl").write_text("wheel")
    versions = pins()
    assert versions["cli"] == "3.259.0" and "policy" not in versions and versions["digitalocean"] == "4.76.0"
    with pytest.raises(LocalCloudError, match="plugins missing"):
        preview_image(layer_of({}), cli, plugins, wheels)
    for name, version in versions.items():
        if name != "cli":
            (plugins / f"resource-{name}-v{version}").mkdir(parents=True)
            (plugins / f"resource-{name}-v{version}" / f"pulumi-resource-{name}").write_text(name)
    (plugins / "resource-tls-v99.0.0").mkdir()  # another version beside the pinned one
    spec = preview_image(layer_of({}), cli, plugins, wheels)
    assert spec.repo_tag == "dockyard/pulumi-python:3.259.0"
    env = dict(item.split("=", 1) for item in spec.env)
    assert env["PIP_NO_INDEX"] == "1" and env["PIP_FIND_LINKS"] == WHEELS and env["PULUMI_HOME"] == PULUMI_HOME
    assert env["PATH"].startswith("/usr/local/pulumi:")
    with tarfile.open(fileobj=io.BytesIO(spec.base_layers[1])) as tar:
        names = set(tar.getnames())
    assert "usr/local/pulumi/pulumi" in names and f"{WHEELS.strip('/')}/pulumi-3-py3-none-any.whl" in names
    assert f"{PULUMI_HOME.strip('/')}/plugins/resource-digitalocean-v4.76.0/pulumi-resource-digitalocean" in names
    assert not any("resource-tls-v99" in name for name in names), "only the pinned versions"


def test_the_clone_step_of_a_pull_request_fetches_the_branch_it_goes_into(tmp_path, origin):
    git("checkout", "-q", "-b", "feature", cwd=origin)
    (origin / "index.html").write_text("dockyard web 3\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "web 3", cwd=origin)
    git("update-ref", "refs/pull/1/head", "HEAD", cwd=origin)
    git("checkout", "-q", "main", cwd=origin)
    result, workspace = clone(tmp_path, DRONE_REMOTE_URL=f"file://{origin}", DRONE_COMMIT_REF="refs/pull/1/head",
                              DRONE_TARGET_BRANCH="main")
    assert result.returncode == 0, result.stderr
    assert (workspace / "index.html").read_text() == "dockyard web 3\n"
    assert git("rev-parse", "origin/main", cwd=workspace) == git("rev-parse", "main", cwd=origin)
    changed = git("diff", "--name-only", "origin/main...HEAD", cwd=workspace)
    assert changed == "index.html"
