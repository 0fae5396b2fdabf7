"""ssh as dockyard uses it from the operator's machine: the option lists, the POSIX user
name rule, and the ssh_config text the stack exports and the memberships use. Pure Python
(no Pulumi imports), so that config.py checks its values with the same rules."""
from __future__ import annotations

import re
import shlex
from typing import Optional, Sequence

# The login user goes into the exported ssh_config and ssh's command lines: a POSIX user
# name only (useradd's default rule), so that it can never carry a second directive.
SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# What no ssh_config value may hold, quoted or not: a line end, a control character, the
# quote that would end the quoting, or the backslash that escapes it.
SSH_CONFIG_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')

# The hosts are new machines whose keys nobody has seen yet, as with pulumi-command's
# connections; the key pair of the stack is what authenticates.
UNSEEN_HOST_KEYS = (("StrictHostKeyChecking", "no"), ("UserKnownHostsFile", "/dev/null"), ("LogLevel", "ERROR"))
NO_PROMPT = (("BatchMode", "yes"),)


def host_key_checks(known_hosts: Optional[str], accept_new: bool = False) -> tuple[tuple[str, str], ...]:
    """Where the cloud knows each host's key (local VMs report theirs, droplets get the
    stack's), ssh checks it against the stack's known_hosts file: only the file's keys, or
    with `accept_new` a host missing from it accepted (and added); with no file, the hosts'
    keys are unseen (above)."""
    if known_hosts is None:
        return UNSEEN_HOST_KEYS
    # ssh expands %-tokens in UserKnownHostsFile: a literal % is written %%
    return (("StrictHostKeyChecking", "accept-new" if accept_new else "yes"),
            ("UserKnownHostsFile", known_hosts.replace("%", "%%")), ("LogLevel", "ERROR"))


def as_argv(options: Sequence[tuple[str, str]]) -> list[str]:
    """ssh command-line options: -o Key=value."""
    return [arg for key, value in options for arg in ("-o", f"{key}={value}")]


def as_config_lines(options: Sequence[tuple[str, str]]) -> list[str]:
    """ssh_config lines: Key value."""
    return [f"{key} {value}" for key, value in options]


def batch_ssh_options(known_hosts: Optional[str] = None, accept_new: bool = False) -> list[str]:
    """For the operator's machine's own ssh to the hosts (memberships, preloads): no prompt,
    and a bounded wait on a host that is gone or goes away."""
    return as_config_lines(NO_PROMPT + host_key_checks(known_hosts, accept_new) + (
        ("ConnectTimeout", "10"), ("ServerAliveInterval", "10"), ("ServerAliveCountMax", "3")))


BATCH_SSH_OPTIONS = batch_ssh_options()


def docker_ssh_argv(identity_file: Optional[str], user: str, jump_host: Optional[str],
                    known_hosts: Optional[str] = None, mux_dir: Optional[str] = None,
                    accept_new: bool = False) -> list[str]:
    """ssh options for the docker provider, which runs the system ssh: the stack's key and,
    for a host behind the master, a hop through the master (`jump_host`) with the same key.

    With `mux_dir`, the provider's connections to a host share one ssh connection (a
    control socket there): it opens one per resource it reads, all at once in a refresh, and
    that many handshakes at a time make a busy host's sshd drop some ("Connection timed out
    during banner exchange"). The socket outlives the run by five minutes."""
    # 60 s: a first connection through the master to a host busy starting services can take
    # longer than the 15 s the bootstrap's own ssh allows
    # a shared connection to a host that died (a destroyed VM whose address comes back) must
    # end within 30 s, not hang every session sent through it
    options = as_argv(host_key_checks(known_hosts, accept_new) + NO_PROMPT + (("ConnectTimeout", "60"),
                                                                  ("ServerAliveInterval", "15"),
                                                                  ("ServerAliveCountMax", "2")))
    # ssh expands %-tokens in IdentityFile and ProxyCommand: a literal % is written %%
    identity = (as_argv((("IdentityFile", identity_file.replace("%", "%%")), ("IdentitiesOnly", "yes")))
                if identity_file else [])
    # quoted: ssh splits an option's value at spaces (a cache directory may hold one)
    shared = (as_argv((("ControlMaster", "auto"), ("ControlPath", f'"{mux_dir.replace("%", "%%")}/%C"'),
                       ("ControlPersist", "300"))) if mux_dir else [])
    if jump_host is None:
        return options + identity + shared
    # ProxyCommand is run by /bin/sh: every word is quoted, so a key path is one argument
    hop_args = ["ssh", *options, *identity, "-W", "%h:%p", f"{user}@{jump_host}"]
    hop = " ".join(arg if arg == "%h:%p" else shlex.quote(arg.replace("%%", "%")).replace("%", "%%")
                   for arg in hop_args)
    return options + identity + shared + ["-o", f"ProxyCommand={hop}"]


def host_alias(stack: str, name: str) -> str:
    return f"dockyard-{stack}-{name}"


# ssh_config values that need no quoting, and what a host alias or an address may be
_SSH_WORD = re.compile(r"[A-Za-z0-9._/@:+~,=-]+")
_HOST_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]*")  # an IP address or a DNS name


def _refuse(what: str, value: str, rule: str) -> ValueError:
    return ValueError(f"{what} {value!r} cannot go in ssh_config: {rule}")


def _ssh_alias(value: str) -> str:
    if not _HOST_ALIAS.fullmatch(value):
        raise _refuse("host alias", value, "use letters, digits, '.', '_' or '-' (the stack and host names)")
    return value


def _ssh_address(value: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise _refuse("HostName", value, "it must be an IP address or a DNS name")
    return value


def _ssh_user(value: str) -> str:
    if not SSH_USER.fullmatch(value):
        raise _refuse("User", value, "set dockyard:sshUser to a POSIX user name such as root")
    return value


def _ssh_path(value: str) -> str:
    """A path as one ssh_config argument: '%' doubled (ssh expands %-tokens in paths), quoted
    when it holds a space; refused when it could end the line or the quoting."""
    if not value or SSH_CONFIG_UNSAFE.search(value):
        raise _refuse("IdentityFile", value,
                      "no line break, control character, '\"' or '\\' (dockyard:sshPrivateKeyPath)")
    value = value.replace("%", "%%")
    return value if _SSH_WORD.fullmatch(value.replace("%", "")) else f'"{value}"'


def _ssh_option(value: str) -> str:
    if SSH_CONFIG_UNSAFE.search(value):
        raise _refuse("option", value, "no line break, control character, '\"' or '\\'")
    return value


def ssh_config(stack: str, names: list[str], master: str, addresses: list[str], user: str,
               identity_file: Optional[str], options: Sequence[str] = ()) -> str:
    """An ssh_config snippet that reaches every host, the private ones through the master;
    `options` apply to all of them. Every value is checked (or quoted) so that none can end
    its line and add a directive; a value that cannot be written safely raises ValueError."""
    blocks = []
    for name, address in zip(names, addresses):
        lines = [f"Host {_ssh_alias(host_alias(stack, name))}", f"  HostName {_ssh_address(address)}",
                 f"  User {_ssh_user(user)}"]
        if identity_file:
            lines += [f"  IdentityFile {_ssh_path(identity_file)}", "  IdentitiesOnly yes"]
        if name != master:
            lines.append(f"  ProxyJump {_ssh_alias(host_alias(stack, master))}")
        blocks.append("\n".join(lines))
    if options:
        blocks.append("\n".join(["Host *"] + [f"  {_ssh_option(o)}" for o in options]))
    return "\n\n".join(blocks) + "\n"
