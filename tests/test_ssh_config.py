"""The exported ssh_config: a value that reaches it (the user, an address, the key's path, a
host alias) can never end its line and start a directive of its own, such as ProxyCommand."""
from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from components.ssh import BATCH_SSH_OPTIONS, ssh_config

NAMES = ["a", "b"]
ADDRESSES = ["203.0.113.10", "10.0.0.2"]
HOSTILE = [
    "x\n  ProxyCommand sh -c 'touch /tmp/pwned'",
    "x\r\nProxyCommand sh",
    "x\nHost *\n  ProxyCommand sh",
    'x" ProxyCommand "sh',
    "x ProxyCommand=sh",
    "x\tProxyCommand sh",
    "x\x00y",
    "x\\\nProxyCommand sh",
    "-oProxyCommand=sh",
    "",
]


def directives(text: str) -> list[tuple[str, str]]:
    """(block, keyword) of every line: what ssh would read as directives."""
    found, block = [], None
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword = line.split()[0]
        if keyword == "Host":
            block = line
        found.append((block, keyword))
    return found


def expected_directives(identity_file: str | None, options=()) -> list[str]:
    per_host = ["Host", "HostName", "User"] + (["IdentityFile", "IdentitiesOnly"] if identity_file else [])
    keywords = per_host + per_host + ["ProxyJump"]
    if options:
        keywords += ["Host"] + [o.split()[0] for o in options]
    return keywords


def render(**changes) -> str:
    args = {"stack": "s", "names": NAMES, "master": "a", "addresses": ADDRESSES, "user": "root",
            "identity_file": "/keys/id", "options": BATCH_SSH_OPTIONS, **changes}
    return ssh_config(**args)


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
@pytest.mark.parametrize("field", ["user", "identity_file", "address", "stack", "name"])
def test_a_hostile_value_never_adds_a_directive(field, value):
    changes = {"user": {"user": value}, "identity_file": {"identity_file": value},
               "address": {"addresses": [value, ADDRESSES[1]]}, "stack": {"stack": value},
               "name": {"names": ["a", value]}}[field]
    try:
        text = render(**changes)
    except ValueError as error:
        assert "ssh_config" in str(error)
        return
    assert [k for _, k in directives(text)] == expected_directives(changes.get("identity_file", "/keys/id"),
                                                                   BATCH_SSH_OPTIONS), text
    assert "ProxyCommand" not in [k for _, k in directives(text)]


@pytest.mark.parametrize("value", HOSTILE[:4], ids=repr)
def test_a_hostile_user_is_refused(value):
    with pytest.raises(ValueError, match="dockyard:sshUser"):
        render(user=value)


def test_a_key_path_with_spaces_is_quoted():
    text = render(identity_file="/home/me/my keys/id 1")
    assert '  IdentityFile "/home/me/my keys/id 1"' in text
    assert [k for _, k in directives(text)] == expected_directives("x", BATCH_SSH_OPTIONS)


def test_a_percent_in_the_key_path_is_not_a_token():
    assert "  IdentityFile /keys/100%%/id" in render(identity_file="/keys/100%/id")


def test_the_usual_config_is_unchanged():
    text = render(options=())
    assert text == ("Host dockyard-s-a\n  HostName 203.0.113.10\n  User root\n  IdentityFile /keys/id\n"
                    "  IdentitiesOnly yes\n\nHost dockyard-s-b\n  HostName 10.0.0.2\n  User root\n"
                    "  IdentityFile /keys/id\n  IdentitiesOnly yes\n  ProxyJump dockyard-s-a\n")


@pytest.mark.skipif(not shutil.which("ssh"), reason="needs the OpenSSH client")
def test_ssh_reads_the_quoted_path_as_one_file_and_nothing_else(tmp_path):
    config = tmp_path / "config"
    config.write_text(render(identity_file="/home/me/my keys/id 1", options=()))
    result = subprocess.run(["ssh", "-G", "-F", str(config), "dockyard-s-b"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    settings = result.stdout.splitlines()
    assert "identityfile /home/me/my keys/id 1" in settings
    assert "hostname 10.0.0.2" in settings and "user root" in settings
    assert not any(line.startswith("proxycommand") for line in settings)


@pytest.mark.parametrize("path", ["/k/id;touch /tmp/pwned", "/k/my key", "/k/$(id)", "/k/100%x", "/k/a'b"])
def test_the_docker_providers_hop_keeps_a_key_path_one_argument(path):
    from components.ssh import docker_ssh_argv

    argv = docker_ssh_argv(path, "root", "203.0.113.10")
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    # what /bin/sh gets once ssh has expanded %h:%p and turned each %% into %
    command = proxy.removeprefix("ProxyCommand=").replace("%h:%p", "10.0.0.2:22").replace("%%", "%")
    words = shlex.split(command)
    assert words[0] == "ssh" and words[-1] == "root@203.0.113.10" and words[-3:-1] == ["-W", "10.0.0.2:22"]
    assert f"IdentityFile={path}" in words, "the path is one word, whatever it holds"
    assert [a for a in argv if a.startswith("IdentityFile=")] == [f"IdentityFile={path.replace('%', '%%')}"]


def test_the_docker_providers_connections_to_a_host_share_one_ssh_connection(tmp_path):
    from components.ssh import docker_ssh_argv

    mux = tmp_path / "mux 100%"
    argv = docker_ssh_argv("/k/id", "root", "203.0.113.10", None, str(mux))
    result = subprocess.run(["ssh", "-G", *argv, "root@10.0.0.2"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    settings = result.stdout.splitlines()
    assert "controlmaster auto" in settings and "controlpersist 300" in settings
    path = next(line.split(" ", 1)[1] for line in settings if line.startswith("controlpath "))
    assert path.startswith(f"{mux}/") and len(path.rsplit("/", 1)[1]) == 40, "one socket per host, by hash"
    # the hop through the master is a plain connection (its stdio is the session's)
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    assert "Control" not in proxy
    assert not [a for a in docker_ssh_argv("/k/id", "root", None) if a.startswith("Control")], "off unless asked"
