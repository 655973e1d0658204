"""The ``anyvirt`` command group: shared options, error handling, exit codes.

Errors from anyvirt become one line, ``error: <message>`` on stderr, and an
exit code by error family (see ``exit_codes``); with ``--json`` (or ``--format
json``) that line is one JSON object instead, ``{"type", "message",
"exit_code"}``. ``--debug`` adds the traceback. Ctrl-C exits 130 and says
whether the platform carries on with what was interrupted. Messages come from
anyvirt's errors, which never contain credentials, and URIs are shown only as
``host.uri`` (without secrets).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import IO, Any

import click

from anyvirt import __version__
from anyvirt.cli import (
    commands_host,
    commands_image,
    commands_move,
    commands_node,
    commands_recover,
    commands_repo,
    commands_snapshot,
    commands_template,
    commands_testbed,
    commands_vm,
    commands_watch,
    completion,
    context,
)
from anyvirt.cli.console_session import let_go_of_stdout
from anyvirt.cli.context import Settings
from anyvirt.cli.exit_codes import ExitCode, exit_code_epilog, exit_code_for
from anyvirt.cli.output import FORMATS, echo, escape_controls
from anyvirt.cli.waiting import Interrupted, interrupted_message
from anyvirt.cli.wording import for_cli, seen
from anyvirt.errors import AnyvirtError


class CommandFailed(click.ClickException):
    """An anyvirt error on its way out as ``error: ...`` and its exit code."""

    def __init__(self, error: BaseException, code: ExitCode) -> None:
        super().__init__(for_cli(str(error) or type(error).__name__, seen.by_id))
        self.kind = type(error).__name__
        # click declares exit_code per class; ours depends on the error, so set it per instance
        self.exit_code = int(code)  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(escape_controls(f"error: {self.format_message()}", keep="\n"),
                   file=file or sys.stderr)


def _json_wanted(args: Sequence[str]) -> bool:
    """Whether the failed command asked for JSON (parsed settings, else the raw words)."""
    active = context.active()
    if active is not None and active.json:
        return True
    words = list(args)[: list(args).index("--")] if "--" in args else list(args)
    return "--json" in words or "--format=json" in words or any(
        a == "--format" and b == "json" for a, b in itertools.pairwise(words))


def _fail(kind: str, message: str, code: int, as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps({"type": kind, "message": message, "exit_code": code}), err=True)
    else:
        # names and platform text inside a message are shown, never obeyed by the terminal
        line = f"error: {message}" if kind != "UsageError" else message
        echo(line, err=True, keep="\n")
    return code


def _interrupted(exc: KeyboardInterrupt) -> str:
    return exc.message if isinstance(exc, Interrupted) else interrupted_message()


class AnyvirtGroup(click.Group):
    """Turns anyvirt errors raised by any sub-command into ``CommandFailed``, and prints
    every failure (anyvirt error, bad usage, Ctrl-C) in the format the command asked for."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        context.reset()
        try:
            result = super().main(args=words, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except KeyboardInterrupt as exc:
            code = _fail("Interrupted", _interrupted(exc), 130, _json_wanted(words))
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # click's wrapping of Ctrl-C
                code = _fail("Interrupted", _interrupted(exc.__cause__), 130, _json_wanted(words))
            else:  # a question answered no, or no terminal to ask on
                code = _fail("Aborted", "aborted: nothing was changed", 1, _json_wanted(words))
        except CommandFailed as exc:
            code = _fail(exc.kind, exc.format_message(), exc.exit_code, _json_wanted(words))
        except click.UsageError as exc:
            if _json_wanted(words):
                code = _fail("UsageError", exc.format_message(), exc.exit_code, True)
            else:  # the usage error repeats what was typed
                shown = io.StringIO()
                exc.show(file=shown)
                click.echo(escape_controls(shown.getvalue(), keep="\n"), err=True, nl=False)
                code = exc.exit_code
        except click.ClickException as exc:
            code = _fail(getattr(exc, "kind", "Error"), exc.format_message(), exc.exit_code,
                         _json_wanted(words))
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        if code == 0:
            context.flush_warnings()
        if not standalone_mode:
            return code
        sys.exit(code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AnyvirtError as exc:
            _traceback_if_debug(ctx)
            raise CommandFailed(exc, exit_code_for(exc)) from exc
        except BrokenPipeError:  # `| head` took what it wanted and left: not an error
            let_go_of_stdout()
            return 0
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            # a bug or a broken backend install: still one line, the details behind --debug
            _traceback_if_debug(ctx)
            raise CommandFailed(
                RuntimeError(f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)"),
                ExitCode.FAILURE,
            ) from exc


def _traceback_if_debug(ctx: click.Context) -> None:
    settings = ctx.find_object(Settings)
    if settings is not None and settings.debug:
        traceback.print_exc(file=sys.stderr)


@click.group(cls=AnyvirtGroup, epilog=exit_code_epilog(), context_settings={"max_content_width": 100})
@click.version_option(__version__, prog_name="anyvirt")
@click.option("--profile", envvar="ANYVIRT_PROFILE", help="Named profile from the config file.")
@click.option("--username", help="User to log in as (else from the URI, profile or $ANYVIRT_USERNAME).")
@click.option("--password-env", metavar="VAR",
              help="Read the password from environment variable VAR (never pass it as an argument).")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates (verify=false).")
@click.option("--timeout", "call_timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Timeout of each network call to the platform.")
@click.option("--overcommit", metavar="POLICY", envvar="ANYVIRT_OVERCOMMIT",
              help="How far allocation may pass capacity, and which VMs count: e.g. "
                   "cpu=8,memory=1.5,counts=defined, or unlimited (default cpu=4,memory=1,"
                   "counts=powered-on: stopped VMs hold nothing).")
@click.option("--json", "json_flag", is_flag=True, help="JSON output for every command (errors too).")
@click.option("--format", "output_format", type=click.Choice(FORMATS),
              help="Output of every command: table (default on a terminal), plain (default in a "
                   "pipe), tsv, names or json.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, profile: str | None, username: str | None, password_env: str | None,
        insecure: bool, call_timeout: float | None, overcommit: str | None, json_flag: bool,
        output_format: str | None, debug: bool) -> None:
    """One command for virtual machines on libvirt/KVM, vSphere, Proxmox, VirtualBox and memory://.

    Every command takes the connection URI first (e.g. libvirt+qemu:///system,
    vsphere://user@vc). It may be left out when --profile, $ANYVIRT_PROFILE or
    $ANYVIRT_URI says where to connect; with none of them the local default is
    used (the local QEMU, else memory://default). A memory:// host lives only as
    long as one command: use it with the Python API, not across commands.
    """
    ctx.obj = context.activate(Settings(
        profile=profile, username=username, password_env=password_env, insecure=insecure,
        call_timeout=call_timeout, overcommit=overcommit, debug=debug, json=json_flag,
        output_format=output_format or ("json" if json_flag else None),
    ))
    if output_format == "json":
        ctx.obj.json = True
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")


commands_host.register(cli)
cli.add_command(commands_vm.vm)
cli.add_command(commands_snapshot.snapshot)
cli.add_command(commands_template.template)
cli.add_command(commands_node.node)
cli.add_command(commands_testbed.testbed)
cli.add_command(completion.completion)
cli.add_command(commands_image.image)
commands_move.register(cli)
commands_repo.register(cli)
commands_recover.register(cli)
cli.add_command(commands_watch.events)


def main(argv: Sequence[str] | None = None) -> None:
    """The console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="anyvirt")


if __name__ == "__main__":
    main()
