"""The ``anyvirt`` command group: shared options, error handling, exit codes.

Errors from anyvirt become one line, ``error: <message>`` on stderr, and an
exit code by error family (see ``exit_codes``); ``--debug`` adds the
traceback. Messages come from anyvirt's errors, which never contain
credentials, and URIs are shown only as ``host.uri`` (without secrets).
"""

from __future__ import annotations

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
    commands_snapshot,
    commands_testbed,
    commands_vm,
)
from anyvirt.cli.context import Settings
from anyvirt.cli.exit_codes import ExitCode, exit_code_epilog, exit_code_for
from anyvirt.errors import AnyvirtError


class CommandFailed(click.ClickException):
    """An anyvirt error on its way out as ``error: ...`` and its exit code."""

    def __init__(self, error: BaseException, code: ExitCode) -> None:
        super().__init__(str(error) or type(error).__name__)
        # click declares exit_code per class; ours depends on the error, so set it per instance
        self.exit_code = int(code)  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file or sys.stderr)


class AnyvirtGroup(click.Group):
    """Turns anyvirt errors raised by any sub-command into ``CommandFailed``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AnyvirtError as exc:
            _traceback_if_debug(ctx)
            raise CommandFailed(exc, exit_code_for(exc)) from exc
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
@click.option("--json", "json_flag", is_flag=True, help="JSON output for every command.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, profile: str | None, username: str | None, password_env: str | None,
        insecure: bool, call_timeout: float | None, json_flag: bool, debug: bool) -> None:
    """One command for virtual machines on libvirt/KVM, vSphere, Proxmox, VirtualBox and memory://.

    Every command takes the connection URI first (e.g. libvirt+qemu:///system,
    vsphere://user@vc, memory://lab). It may be left out when --profile,
    $ANYVIRT_PROFILE or $ANYVIRT_URI says where to connect; with none of them
    the local default is used (the local QEMU, else memory://default).
    """
    ctx.obj = Settings(
        profile=profile, username=username, password_env=password_env, insecure=insecure,
        call_timeout=call_timeout, debug=debug, json=json_flag,
    )
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")


commands_host.register(cli)
cli.add_command(commands_vm.vm)
cli.add_command(commands_snapshot.snapshot)
cli.add_command(commands_testbed.testbed)
cli.add_command(commands_image.image)
commands_move.register(cli)


def main(argv: Sequence[str] | None = None) -> None:
    """The console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="anyvirt")


if __name__ == "__main__":
    main()
