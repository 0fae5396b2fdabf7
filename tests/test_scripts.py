"""Every bootstrap script is valid bash and clean under shellcheck, and follows the
house rules that keep it safe to run twice and quiet about secrets."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "components" / "scripts").glob("*.sh"))
ALL_SHELL = (SCRIPTS + sorted((ROOT / "tools").glob("*.sh")) + sorted((ROOT / "previews").glob("*.sh"))
             + sorted((ROOT / "localcloud").glob("*.sh")) + [ROOT / ".ci" / "run"])


def test_there_are_scripts():
    assert len(SCRIPTS) >= 8


@pytest.mark.parametrize("script", ALL_SHELL, ids=lambda p: p.name)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", ALL_SHELL, ids=lambda p: p.name)
def test_shellcheck(script):
    assert shutil.which("shellcheck"), "install shellcheck (apt-get install shellcheck); .ci/run does"
    result = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_house_style(script):
    text = script.read_text()
    assert "\nset -eu\n" in text
    assert "fatal()" in text
    assert "set -x" not in text, "tracing would print secrets"
    header = text.split("set -eu")[0]
    assert "Input" in header, "the header documents the script's inputs"


# a redirect or mv to a fixed temp name: two runs at once would write the same temp file
FIXED_TEMP_NAME = re.compile(r'(>>?|\bmv)\s+"?[$/][^\s";|&]*\.(new|tmp|bak)\b')


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_files_are_replaced_through_a_temp_file_of_their_own(script):
    text = script.read_text()
    assert not FIXED_TEMP_NAME.search(text), \
        "write to `tmp=$(mktemp \"$file.XXXXXX\")` beside the file, then mv it over the file"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_fstab_is_changed_only_under_the_lock(script):
    text = script.read_text()
    if "etc/fstab" not in text.split("set -eu", 1)[1]:
        return
    assert "dockyard-fstab.lock" in text and "flock" in text, \
        "hold /run/lock/dockyard-fstab.lock (flock) from reading /etc/fstab to renaming the new one"
