"""Every bootstrap script is valid bash and clean under shellcheck as a host gets it (behind
the scripts' library, components/scripts/lib.sh), and follows the house rules that keep it
safe to run twice and quiet about secrets."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.shell import LIBRARY, SCRIPTS_DIR, script_text

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in SCRIPTS_DIR.glob("*.sh") if p != LIBRARY)
ALL_SHELL = ([LIBRARY] + SCRIPTS + sorted((ROOT / "tools").glob("*.sh")) + sorted((ROOT / "previews").glob("*.sh"))
             + sorted((ROOT / "localcloud").glob("*.sh")) + [ROOT / ".ci" / "run"])


def header(text: str) -> str:
    """A script's header: its first comment lines, up to the first line that is not one."""
    lines = text.splitlines()
    return "\n".join(lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))])


def code(text: str) -> str:
    return text[len(header(text)):]


def test_there_are_scripts():
    assert len(SCRIPTS) >= 8


@pytest.mark.parametrize("script", ALL_SHELL, ids=lambda p: p.name)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax_of_what_a_host_runs(script):
    subprocess.run(["bash", "-n"], input=script_text(script.name), text=True, check=True)


@pytest.mark.parametrize("script", ALL_SHELL, ids=lambda p: p.name)
def test_shellcheck(script):
    assert shutil.which("shellcheck"), "install shellcheck (apt-get install shellcheck); .ci/run does"
    if script in SCRIPTS:
        # as a host gets it: the library's functions and variables are defined in front of it
        result = subprocess.run(["shellcheck", "-x", "-s", "bash", "-"], input=script_text(script.name),
                                capture_output=True, text=True)
        where = f"(line numbers count from the library's first line; the script starts at line " \
                f"{len(script_text(script.name).splitlines()) - len(script.read_text().splitlines()) + 1})"
    else:
        result = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
        where = ""
    assert result.returncode == 0, result.stdout + where


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_house_style(script):
    text = script.read_text()
    sent = script_text(script.name)
    # set -eu and fatal() are the library's, in front of every script
    assert sent.startswith(LIBRARY.read_text())
    assert "\nset -eu\n" in sent
    assert "fatal()" in sent
    assert "set -x" not in sent, "tracing would print secrets"
    assert "Input" in header(text), "the header documents the script's inputs"
    assert not re.search(r"^(log|fatal)\(\)", text, re.M), "log and fatal are the library's"
    assert not re.search(r"\beval\b", code(text)), "indirection is ${!name}; require_env checks a list of names"


def test_the_library_sets_the_shell_up_before_anything_else():
    text = LIBRARY.read_text()
    assert "Input" in header(text), "the header documents what the library gives the scripts"
    commands = [line for line in code(text).splitlines() if line.strip() and not line.startswith("#")]
    assert commands[:2] == ["set -eu", "set -f"], "errors stop a script, and a value is never a glob"
    assert "set -x" not in text


# a redirect or mv to a fixed temp name: two runs at once would write the same temp file
FIXED_TEMP_NAME = re.compile(r'(>>?|\bmv)\s+"?[$/][^\s";|&]*\.(new|tmp|bak)\b')


@pytest.mark.parametrize("script", [LIBRARY] + SCRIPTS, ids=lambda p: p.name)
def test_files_are_replaced_through_a_temp_file_of_their_own(script):
    text = script.read_text()
    assert not FIXED_TEMP_NAME.search(text), \
        "write to `tmp=$(mktemp \"$file.XXXXXX\")` beside the file, then mv it over the file"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_fstab_is_changed_only_under_the_lock(script):
    text = script.read_text()
    if "etc/fstab" not in code(text):
        return
    assert "dockyard-fstab.lock" in text and re.search(r'^\s*locked "\$FSTAB_LOCK" ', text, re.M), \
        "hold /run/lock/dockyard-fstab.lock (locked) from reading /etc/fstab to renaming the new one"
    locked = re.search(r"^locked\(\) \{\n.*?^\}", LIBRARY.read_text(), re.M | re.S)
    assert locked and "flock" in locked.group(0)
