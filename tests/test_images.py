"""Container images written without Docker: the docker-archive format `docker load` reads,
with a base layer under the image's own files, and the CI images' layout."""
import io
import json
import tarfile

from localcloud.ci_images import GITEA_STATIC, ci_images
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
                      {"drone-runner-docker": binaries["drone-runner-docker"]}, source)
    assert set(specs) == {"gitea", "drone", "drone-runner"}
    for spec in specs.values():
        # a file under /bin would turn Debian's /bin -> usr/bin link into a directory
        assert all(not path.startswith(("/bin/", "/lib/", "/sbin/")) for path in spec.files)
        assert spec.entrypoint[0].startswith("/usr/local/bin/") and spec.entrypoint[0] in spec.files
    gitea = specs["gitea"]
    assert f"{GITEA_STATIC}/options/locale/f" in gitea.files and f"{GITEA_STATIC}/templates/f" in gitea.files
    entrypoint = gitea.files["/usr/local/bin/gitea-entrypoint"][0].decode()
    assert f"STATIC_ROOT_PATH = {GITEA_STATIC}" in entrypoint
    assert "environment-to-ini" in entrypoint and "--reuid=git" in entrypoint
