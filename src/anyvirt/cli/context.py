"""What every command shares: the connection settings from the group's options,
``--json``, and the optional URI in front of a command's own arguments.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click

import anyvirt
from anyvirt.host import Host

F = TypeVar("F", bound=Callable[..., Any])


@attrs.define
class Settings:
    """The group's options, kept on ``click.Context.obj``."""

    profile: str | None = None
    username: str | None = None
    password_env: str | None = None
    insecure: bool = False
    call_timeout: float | None = None
    debug: bool = False
    json: bool = False

    def password(self) -> str | None:
        """The password from ``$<password-env>``; read only when connecting."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            # name the variable, never a value
            raise click.UsageError(f"--password-env {self.password_env}: that variable is not set")
        return value

    def connect(self, uri: str | None) -> Host:
        """Connect with these settings; ``uri=None`` lets anyvirt pick (profile, $ANYVIRT_URI, default)."""
        return anyvirt.connect(
            uri,
            profile=self.profile,
            username=self.username,
            password=self.password(),
            verify=False if self.insecure else None,
            timeout=self.call_timeout,
        )


def settings() -> Settings:
    ctx = click.get_current_context()
    obj = ctx.find_object(Settings)
    if obj is None:  # a command invoked on its own, outside the group
        obj = ctx.ensure_object(Settings)
    return obj


def json_option(func: F) -> F:
    """``--json``: machine-readable output on stdout (also settable on the group)."""
    return click.option("--json", "json_flag", is_flag=True, help="Print JSON instead of tables.")(func)


def json_mode(json_flag: bool) -> bool:
    return json_flag or settings().json


def with_uri(*names: str) -> Callable[[F], F]:
    """Positional arguments ``[URI] NAME...``: the URI may be left out when a profile,
    ``$ANYVIRT_URI`` or the local default says where to connect.

    The command receives ``uri`` (str or None) and one keyword per name
    (lower-cased). Counting decides: as many values as names means no URI.
    """
    metavar = " ".join(["[URI]", *names])

    def split(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
        if len(values) == len(names) + 1:
            uri: str | None = values[0]
            rest = values[1:]
        elif len(values) == len(names):
            uri, rest = None, values
        else:
            # values are not echoed: the URI could carry a password
            raise click.BadParameter(f"expected {metavar}, got {len(values)} argument(s)", ctx, param)
        out: dict[str, Any] = {"uri": uri}
        out.update({name.lower(): value for name, value in zip(names, rest, strict=True)})
        return out

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, positionals: dict[str, Any], **kwargs: Any) -> Any:
            return func(*args, **positionals, **kwargs)

        return click.argument(  # type: ignore[return-value]
            "positionals", nargs=-1, metavar=metavar, callback=split
        )(wrapper)

    return decorate
