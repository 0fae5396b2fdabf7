"""The warm template's pieces that run without a VM: what its key depends on, and writing
the preloaded archives into its disk image (debugfs, on a real ext4 image)."""
import shutil
import subprocess

import pytest

from components import shell
from localcloud import warm
from tests.harness import docker_archive


def test_the_template_key_follows_its_recipe_and_nothing_else(tmp_path, monkeypatch):
    base = tmp_path / "images" / "0123456789abcdef"
    base.mkdir(parents=True)
    web = docker_archive(tmp_path / "web.tar", "a" * 64)
    key = warm.template_key(base, 1536, 1, [web])
    assert warm.template_key(base, 1536, 1, [web]) == key
    assert warm.template_key(base, 2048, 1, [web]) != key, "another memory size is another template"
    assert warm.template_key(base, 1536, 1, []) != key, "another archive set is another template"
    moved = shutil.copy(web, tmp_path / "moved.tar")
    assert warm.template_key(base, 1536, 1, [moved]) == key, "an archive's path is not part of it"
    docker_archive(web, "b" * 64)
    assert warm.template_key(base, 1536, 1, [web]) != key, "a changed archive is"
    monkeypatch.setenv("DOCKYARD_ACCEL", "kvm")
    assert warm.template_key(base, 1536, 1, [moved]) != key, "a template saved under TCG does not restore under KVM"


def test_the_template_key_follows_the_bootstrap_as_the_template_runs_it(tmp_path, monkeypatch):
    """The template runs the scripts behind their library (script_text): an edit of either
    makes another template."""
    base = tmp_path / "images" / "0123456789abcdef"
    base.mkdir(parents=True)
    key = warm.template_key(base, 1536, 1, [])
    edited = tmp_path / "lib.sh"
    edited.write_text(shell.LIBRARY.read_text() + "# an edit\n")
    monkeypatch.setattr(shell, "LIBRARY", edited)
    shell.script_text.cache_clear()
    try:
        assert warm.template_key(base, 1536, 1, []) != key
    finally:
        monkeypatch.undo()
        shell.script_text.cache_clear()
    assert warm.template_key(base, 1536, 1, []) == key


def test_the_template_runs_the_hosts_first_bootstrap_with_the_stack_defaults():
    from components.maintenance import DEFAULT_PRUNE_AFTER, DEFAULT_PRUNE_SCHEDULE

    scripts = dict(warm.TEMPLATE_BOOTSTRAP)
    assert list(scripts) == ["docker-host.sh", "host-maintenance.sh"]
    assert scripts["host-maintenance.sh"]["PRUNE_SCHEDULE"] == DEFAULT_PRUNE_SCHEDULE
    assert scripts["host-maintenance.sh"]["PRUNE_AFTER"] == DEFAULT_PRUNE_AFTER


@pytest.mark.skipif(not shutil.which("mke2fs") or not shutil.which("debugfs"), reason="needs e2fsprogs")
def test_archives_are_written_into_the_template_disk_without_mounting_it(tmp_path):
    tree = tmp_path / "tree" / "var" / "lib" / "dockyard" / "preload"
    tree.mkdir(parents=True)
    image = tmp_path / "root.raw"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tmp_path / "tree"), str(image), "16M"], check=True)
    archives = [docker_archive(tmp_path / "web 1.tar", "c" * 64), docker_archive(tmp_path / "web-2.tar", "d" * 64)]
    warm._copy_into_image(image, archives, "/var/lib/dockyard/preload")
    for archive in archives:
        copied = subprocess.run(["debugfs", "-R", f'cat "/var/lib/dockyard/preload/{archive.name}"', str(image)],
                                capture_output=True, check=True).stdout
        assert copied == archive.read_bytes()
