"""Running the project's shell scripts on a host over SSH with pulumi-command.

A script goes to `bash -s` on stdin; plain values go in front of it on the command line
(`VAR=value bash -s`), so a preview shows when they change. Secret values are prepended
to the script text on stdin, so they never appear in argv, in logs or in plain state:
the engine stores stdin encrypted because it is built from secrets."""
from __future__ import annotations

import shlex
from typing import Mapping, Optional

import pulumi
from pulumi_command import remote

# what the other senders (manager.py, preload.py, images/digitalocean) import from here too
from .shell import script_digest, script_text  # noqa: F401


def command_line(env: Mapping[str, str]) -> str:
    assignments = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items()))
    return f"{assignments} bash -s".strip()


def secret_preamble(secret_env: Mapping[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in sorted(secret_env.items()))


def run_script(
    resource_name: str,
    *,
    connection: pulumi.Input[remote.ConnectionArgs],
    script: str,
    env: Optional[Mapping[str, pulumi.Input[str]]] = None,
    secret_env: Optional[Mapping[str, pulumi.Input[str]]] = None,
    secret_stdout: bool = False,
    delete_env: Optional[Mapping[str, str]] = None,
    opts: Optional[pulumi.ResourceOptions] = None,
) -> remote.Command:
    """One run of components/scripts/<script> on a host, behind the scripts' library.

    The script's digest is a trigger, so editing the script or the library re-runs it on
    the next `up` (every script is idempotent). With `secret_stdout` the output is a secret
    and the engine does not stream it. With `delete_env`, deleting the resource runs the script
    again with those values (stdin is the same for both), to undo what it installed."""
    create = pulumi.Output.from_input(env or {}).apply(command_line)
    if secret_env:
        stdin = pulumi.Output.secret(
            pulumi.Output.from_input(secret_env).apply(lambda values: secret_preamble(values) + script_text(script))
        )
    else:
        stdin = script_text(script)
    extra: dict = {}
    if delete_env is not None:
        extra["delete"] = command_line(delete_env)
        # a changed script replaces the command: undo the old run before the new one installs,
        # not after (the engine's default order), which would remove what the new one put
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True))
    if secret_stdout:
        extra["logging"] = remote.Logging.NONE
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["stdout", "stderr"])
        )
    return remote.Command(
        resource_name,
        connection=connection,
        create=create,
        stdin=stdin,
        triggers=[f"{script}@{script_digest(script)}"],
        opts=opts,
        **extra,
    )
