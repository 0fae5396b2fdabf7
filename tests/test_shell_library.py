"""The scripts' shell library (components/scripts/lib.sh): what every sender sends is the
library and the script (components.shell.script_text), an edit of the library runs every
script again, and each of its functions does what the scripts rely on, run here in bash."""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from components import shell
from components.shell import LIBRARY, SCRIPTS_DIR, script_digest, script_text
from tests.harness import script_command

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in SCRIPTS_DIR.glob("*.sh") if p != LIBRARY)


# --- a script without the library -------------------------------------------------------------

@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_run_without_the_library_stops_before_its_first_command(name, tmp_path):
    """Without lib.sh there is no set -eu, fatal or require_env: a script sent as the bare
    file (an old runbook's `bash -s < script`) must stop before it does anything."""
    result = subprocess.run([shutil.which("bash"), str(SCRIPTS_DIR / name)], env={"PATH": str(tmp_path)}, cwd=tmp_path,
                            input="", text=True, capture_output=True, timeout=30)
    assert result.returncode != 0
    assert "runs behind lib.sh: python3 -m components.shell" in result.stderr
    assert "command not found" not in result.stderr and result.stdout == ""
    assert not (SCRIPTS_DIR / name).stat().st_mode & 0o111, "not executable: it is never run as a file"


# --- what leaves the repository ----------------------------------------------------------------

def test_a_script_is_sent_behind_the_library_with_its_name_for_the_log():
    for name in SCRIPTS:
        stem = name.removesuffix(".sh")
        assert script_text(name) == f"{LIBRARY.read_text()}DOCKYARD_SCRIPT='{stem}'\n{(SCRIPTS_DIR / name).read_text()}"


@pytest.mark.parametrize("name", ["lib.sh", "../remote.py", "scripts/docker-host.sh", "docker-host", "Docker-Host.sh"])
def test_only_the_scripts_can_be_sent(name):
    with pytest.raises(ValueError):
        script_text(name)


def test_no_sender_reads_a_script_but_through_script_text():
    """run_script, the memberships, the image preloads, the droplet image and the warm
    template all send script_text: nothing else in the program builds a path into
    components/scripts (a sender that did would send a script without its library)."""
    sources = [ROOT / "__main__.py"] + [p for part in ("components", "localcloud", "images", "tools", "previews",
                                                       "policies") for p in (ROOT / part).glob("**/*.py")]
    sources.remove(ROOT / "components" / "shell.py")
    assert sources
    readers = [str(p.relative_to(ROOT)) for p in sources if re.search(r"""["']scripts["']|scripts/[\w-]+\.sh["']""",
                                                                      p.read_text())]
    assert readers == []


def test_the_operator_gets_the_same_text_for_a_script_run_by_hand():
    printed = subprocess.run(["python3", "-m", "components.shell", "swarm-recover.sh"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert printed == script_text("swarm-recover.sh")


def test_an_edit_of_the_library_changes_every_scripts_digest(tmp_path, monkeypatch):
    before = {name: script_digest(name) for name in SCRIPTS}
    edited = tmp_path / "lib.sh"
    edited.write_text(LIBRARY.read_text() + "# an edit\n")
    monkeypatch.setattr(shell, "LIBRARY", edited)
    script_text.cache_clear()
    try:
        after = {name: script_digest(name) for name in SCRIPTS}
    finally:
        monkeypatch.undo()
        script_text.cache_clear()
    assert [name for name in SCRIPTS if after[name] == before[name]] == []
    assert {name: script_digest(name) for name in SCRIPTS} == before


def test_a_scripts_log_lines_carry_its_name():
    result = subprocess.run(script_command("swarm-labels.sh"), env={"PATH": os.environ["PATH"]},
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (1, "swarm-labels: error: NODE_ID must be set\n")


# --- the functions -------------------------------------------------------------------------------

def library(code: str, cwd: Path | None = None, path: str | None = None,
            **env: str) -> subprocess.CompletedProcess:
    """`code` run behind the library, as a script named probe."""
    return subprocess.run(["bash", "-c", f"{LIBRARY.read_text()}DOCKYARD_SCRIPT=probe\n{code}"],
                          env={"PATH": path or os.environ["PATH"], **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_fatal_says_why_and_stops_with_exit_1():
    result = library('log "starting"\nfatal "no disk"\necho after')
    assert result.returncode == 1
    assert result.stderr == "probe: starting\nprobe: error: no disk\n"
    assert result.stdout == ""


def test_a_failing_command_or_an_unset_variable_stops_the_script():
    assert library("false\necho after").stdout == ""
    unset = library('echo "$NOT_SET"\necho after')
    assert unset.returncode != 0 and unset.stdout == "" and "NOT_SET" in unset.stderr


def test_globbing_is_off(tmp_path):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.txt").write_text("")
    listed = library('list="*.txt /etc/*"\nfor word in $list; do echo "$word"; done', cwd=tmp_path)
    assert listed.stdout.split() == ["*.txt", "/etc/*"], "a value holding a * stays that value"
    meant = library("set +f\necho *.txt\nset -f\necho *.txt", cwd=tmp_path)
    assert meant.stdout.splitlines() == ["a.txt b.txt", "*.txt"], "a script that means a glob turns it on"


def test_require_env_names_every_empty_variable_and_no_value():
    result = library("require_env GIVEN EMPTY UNSET OTHER\necho after", GIVEN="s3cret-value", EMPTY="",
                     OTHER="x")
    assert result.returncode == 1
    assert result.stderr == "probe: error: EMPTY, UNSET must be set\n"
    assert "s3cret" not in result.stderr + result.stdout
    assert library("require_env GIVEN\necho after", GIVEN="x").stdout == "after\n"


def test_default_env_keeps_what_the_environment_gives_and_fills_in_the_rest():
    result = library('default_env GIVEN=default EMPTY=fallback UNSET PLAIN="two words"\n'
                     'printf "%s|" "$GIVEN" "$EMPTY" "$UNSET" "$PLAIN"', GIVEN="from-env", EMPTY="")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from-env|fallback||two words|"


def put(target: Path, content: str, mode: str = "640", *extra: str) -> subprocess.CompletedProcess:
    """put_file target mode [extra], content on stdin; prints file_changed and units_changed."""
    args = " ".join(f'"{a}"' for a in extra)
    return subprocess.run(["bash", "-c", f'{LIBRARY.read_text()}DOCKYARD_SCRIPT=probe\n'
                                         f'put_file "{target}" {mode} {args}\necho "$file_changed $units_changed"'],
                          input=content, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"]})


def test_put_file_writes_the_file_with_its_mode_whatever_the_umask(tmp_path):
    target = tmp_path / "etc" / "dockyard" / "settings"
    os.umask(0o022)
    result = put(target, "A=1\nB=2\n", "600")
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "A=1\nB=2\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert result.stdout == "yes no\n"
    assert result.stderr == f"probe: writing {target}\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["settings"], "no temp file is left"


def test_put_file_writes_nothing_when_the_content_is_there(tmp_path):
    target = tmp_path / "settings"
    assert put(target, "A=1\n").returncode == 0
    before = target.stat()
    again = put(target, "A=1\n")
    assert again.returncode == 0 and again.stdout == "no no\n" and again.stderr == ""
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "not even rewritten"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings"]


def test_put_file_replaces_a_file_whole_by_a_rename(tmp_path):
    target = tmp_path / "settings"
    assert put(target, "old content\n").returncode == 0
    with target.open() as reader:
        changed = put(target, "new content\n", "644", "writing the new settings")
        assert changed.returncode == 0 and changed.stdout == "yes no\n"
        assert changed.stderr == "probe: writing the new settings\n", "the message the script gives"
        assert reader.read() == "old content\n", "a reader of the old file reads all of it: a new file took its name"
    assert target.read_text() == "new content\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_put_file_keeps_what_it_writes_private_until_it_is_whole(tmp_path):
    target = tmp_path / "backup.password"
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)
    writing = subprocess.Popen(["bash", "-c", f'{LIBRARY.read_text()}put_file "{target}" 644 < "{fifo}"'],
                               env={"PATH": os.environ["PATH"]}, stderr=subprocess.PIPE, text=True)
    with open(fifo, "w") as stdin:
        stdin.write("half a secret")
        stdin.flush()
        deadline = time.monotonic() + 30
        while not (temps := list(tmp_path.glob("backup.password.*"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(temps) == 1 and not target.exists(), "the content goes to a temp file beside the file"
        assert stat.S_IMODE(temps[0].stat().st_mode) == 0o600, "readable by nobody else while it is written"
    assert writing.wait(timeout=30) == 0, writing.stderr.read()
    assert target.read_text() == "half a secret" and stat.S_IMODE(target.stat().st_mode) == 0o644


def test_put_file_says_when_a_systemd_unit_changed(tmp_path):
    unit = tmp_path / "etc/systemd/system/docker.service.d/dockyard.conf"
    assert put(unit, "[Unit]\n").stdout == "yes yes\n"
    assert put(unit, "[Unit]\n").stdout == "no no\n", "an unchanged unit needs no daemon-reload"


def test_put_file_stops_where_it_cannot_write_and_leaves_nothing(tmp_path):
    taken = tmp_path / "settings"
    (taken / "inside").mkdir(parents=True)  # a directory where the file should be
    result = put(taken, "x\n")
    assert result.returncode == 1 and result.stderr.endswith(f"probe: error: cannot write {taken}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings"], "no temp file is left"
    assert [p.name for p in taken.iterdir()] == ["inside"], "nor put into the directory"


def test_locked_runs_one_edit_of_a_file_at_a_time(tmp_path):
    """Each run reads the file, takes a moment, and writes it back with its own line: without
    the lock, runs at once would drop each other's lines."""
    target, lock = tmp_path / "fstab", tmp_path / "run/lock/probe.lock"
    target.write_text("# host's own line\n")
    code = (f'append() {{ new=$(cat "{target}" && sleep 0.02 && echo "line $1"); put_file "{target}" 644 <<<"$new"; }}\n'
            f'locked "{lock}" append "$N"')
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda n: library(code, N=str(n)), range(20)))
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    lines = target.read_text().splitlines()
    assert lines[0] == "# host's own line" and sorted(lines[1:]) == sorted(f"line {n}" for n in range(20))


def test_locked_waits_for_the_holder_and_returns_the_commands_status(tmp_path):
    lock = tmp_path / "probe.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = subprocess.Popen(["bash", "-c", f'{LIBRARY.read_text()}locked "{lock}" echo ran'],
                                   env={"PATH": os.environ["PATH"]}, stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        assert waiting.poll() is None, "it waits while another run holds the lock"
    assert waiting.communicate(timeout=30)[0] == "ran\n"
    status = library(f'if locked "{lock}" false; then echo yes; else echo "no $?"; fi\n'
                     f'flock -n "{lock}" echo "let go"')
    assert status.stdout == "no 1\nlet go\n"


FAKE_DPKG_QUERY = """#!/bin/bash
# installed: present 1.0, pinned 2.0
case "${!#}" in
  present) printf 'install ok installed 1.0' ;;
  pinned) printf 'install ok installed 2.0' ;;
  removed) printf 'deinstall ok config-files 1.0' ;;
  *) echo "dpkg-query: no packages found matching ${!#}" >&2; exit 1 ;;
esac
"""
FAKE_APT_GET = """#!/bin/bash
echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND apt-get $*" >> "$LOG_DIR/apt"
"""


@pytest.fixture
def apt(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("dpkg-query", FAKE_DPKG_QUERY), ("apt-get", FAKE_APT_GET)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for tool in ("bash", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return bin_dir


def apt_calls(apt: Path) -> list[str]:
    log = apt.parent / "apt"
    return log.read_text().splitlines() if log.exists() else []


def test_apt_install_installs_only_what_is_missing_after_one_update(apt):
    result = library("apt_install present pinned=2.0 missing removed pinned=3.0\napt_install other",
                     path=str(apt), LOG_DIR=str(apt.parent))
    assert result.returncode == 0, result.stderr
    apt_get = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600"
    assert apt_calls(apt) == [f"{apt_get} update",
                              f"{apt_get} install --no-install-recommends missing removed pinned=3.0",
                              f"{apt_get} install --no-install-recommends other"]
    assert result.stderr == "probe: installing missing removed pinned=3.0\nprobe: installing other\n"


def test_apt_install_of_what_is_there_asks_apt_nothing(apt):
    result = library("apt_install present pinned=2.0", path=str(apt), LOG_DIR=str(apt.parent))
    assert result.returncode == 0 and result.stderr == ""
    assert apt_calls(apt) == []
