"""A click group whose sub-commands are the names an entry-point group registers.

``anyvirt testbed NAME`` and ``anyvirt image NAME`` list what the installed
distributions offer (:mod:`anyvirt.plugins`) without importing any of it; a
name's object is loaded only when its command runs or its help is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from anyvirt.plugins import PluginBroken, UnknownPlugin


class PluginGroup(click.Group):
    """``names()`` lists the sub-commands; ``load(name)`` and ``command(name, obj)`` make one."""

    def __init__(self, *args: Any, names: Callable[[], list[str]], load: Callable[[str], Any],
                 command: Callable[[str, Any], click.Command], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._names, self._load, self._command = names, load, command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        try:
            found = self._load(cmd_name)
        except UnknownPlugin:
            return None
        except PluginBroken as exc:
            return _broken_command(cmd_name, exc)
        return self._command(cmd_name, found)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and not args[0].startswith("-"):
            try:
                self._load(args[0])
            except UnknownPlugin as exc:  # says what is installed, and what to install
                raise click.UsageError(str(exc), ctx) from exc
            except PluginBroken:
                pass  # its command says so when run
        return super().resolve_command(ctx, args)


def _broken_command(name: str, error: PluginBroken) -> click.Command:
    def fail() -> None:
        raise click.ClickException(str(error))

    return click.Command(name, callback=fail, help=f"(unavailable: {error})")
