"""What every command shares: the connection settings from the group's options, the
output format (``--json``, ``--format``), and the optional URI in front of a command's
own arguments.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click

import anyvirt
from anyvirt.cli.output import FORMATS, echo
from anyvirt.host import Host

F = TypeVar("F", bound=Callable[..., Any])

#: what a connection URI looks like (``memory://lab``, ``libvirt+qemu:///system``):
#: a scheme and ``://``. A VM may be called ``a:b``; nobody names a VM ``x://y``.
URI_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@attrs.define
class Settings:
    """The group's options, kept on ``click.Context.obj``."""

    profile: str | None = None
    username: str | None = None
    password_env: str | None = None
    insecure: bool = False
    call_timeout: float | None = None
    overcommit: str | None = None  # the policy's text; anyvirt.connect parses it
    debug: bool = False
    json: bool = False
    output_format: str | None = None  # None: table on a terminal, plain elsewhere

    def password(self) -> str | None:
        """The password from ``$<password-env>``; read only when connecting."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            # name the variable, never a value
            raise click.UsageError(f"--password-env {self.password_env}: that variable is not set")
        return value

    def connect(self, uri: str | None, *, changes: bool = False) -> Host:
        """Connect with these settings; ``uri=None`` lets anyvirt pick (profile, $ANYVIRT_URI, default).

        ``changes``: the command changes something, so a process-local memory://
        host earns a warning that the change ends with this command.
        """
        host = anyvirt.connect(
            uri,
            profile=self.profile,
            username=self.username,
            password=self.password(),
            verify=False if self.insecure else None,
            timeout=self.call_timeout,
            overcommit=self.overcommit,
        )
        if changes and host.backend == "memory":
            _warnings.append(
                f"warning: {host.uri} lives in this process only: what this command changed is "
                "gone now that it has exited (leave the URI out for the local QEMU, or use a "
                "testbed URI, to keep VMs)")
        return host


#: said once the command has succeeded (a failed command changed nothing to lose)
_warnings: list[str] = []


def flush_warnings() -> None:
    for line in dict.fromkeys(_warnings):
        echo(line, err=True)
    _warnings.clear()


_active: list[Settings] = []


def activate(found: Settings) -> Settings:
    """Make ``found`` the settings of this command line (errors are printed by them)."""
    _active[:] = [found]
    return found


def active() -> Settings | None:
    """The settings of the command line being run, once its options are parsed."""
    return _active[0] if _active else None


def reset() -> None:
    _active.clear()
    _warnings.clear()


def settings() -> Settings:
    ctx = click.get_current_context()
    obj = ctx.find_object(Settings)
    if obj is None:  # a command invoked on its own, outside the group
        obj = activate(ctx.ensure_object(Settings))
    return obj


def _settings_of(ctx: click.Context) -> Settings:
    found = ctx.find_object(Settings)
    return found if found is not None else activate(ctx.ensure_object(Settings))


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        found = _settings_of(ctx)
        found.json = True
        found.output_format = "json"
    return value


def _set_format(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        found = _settings_of(ctx)
        found.output_format = value
        found.json = value == "json"
    return value


def json_option(func: F) -> F:
    """``--json`` and ``--format``: how results are printed (also settable on the group).

    The values land on the shared ``Settings`` as soon as they are parsed, so an
    error raised later is printed in the same format.
    """
    taken = [opt for param in _params_of(func) for opt in getattr(param, "opts", ())]
    own_format = "--format" in taken
    if not own_format:  # e.g. `image demo --format qcow2` means the disk's format
        func = click.option("--format", "output_format", type=click.Choice(FORMATS), callback=_set_format,
                            expose_value=False, is_eager=True,
                            help="table (default on a terminal), plain (default in a pipe), tsv, "
                                 "names (first column only) or json.")(func)
    return click.option("--json", "json_flag", is_flag=True, callback=_set_json, is_eager=True,
                        help="Print JSON." if own_format else "Print JSON (same as --format json).")(func)


def _params_of(func: Any) -> list[click.Parameter]:
    if isinstance(func, click.Command):
        return list(func.params)
    return list(getattr(func, "__click_params__", []))


def json_mode(json_flag: bool = False) -> bool:
    return json_flag or settings().json


def looks_like_uri(value: str) -> bool:
    return bool(URI_SHAPE.match(value))


def complete_vm_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion: VM names from the connection the words typed so far point at.

    The URI is the first word when it looks like one, else the one anyvirt picks
    (profile, ``$ANYVIRT_URI``, the local default). Completion must never print
    an error into the user's prompt, so every failure completes nothing.
    """
    from click.shell_completion import CompletionItem

    if looks_like_uri(incomplete):
        return []
    typed = list((ctx.params.get("positionals") or {}).get("words", ()))
    uri = typed[0] if typed and looks_like_uri(typed[0]) else None
    try:
        found = ctx.find_object(Settings) or Settings()
        with found.connect(uri) as host:
            names = sorted(vm.name for vm in host.vms.list())
    except Exception:
        return []
    # a name holding control characters cannot be typed, and would reach the terminal (or,
    # with a line feed, forge completion entries): it is not offered
    return [CompletionItem(name) for name in names
            if name.startswith(incomplete) and name.isprintable()]


def with_uri(*names: str, optional: int = 0) -> Callable[[F], F]:
    """Positional arguments ``[URI] NAME...``: the URI may be left out when a profile,
    ``$ANYVIRT_URI`` or the local default says where to connect.

    The command receives ``uri`` (str or None) and one keyword per name
    (lower-cased). Counting decides: as many values as names means no URI. A
    value where a name belongs that looks like a URI means the name is missing:
    ``anyvirt vm show libvirt+qemu:///system`` is bad input naming VM, not a
    search for a VM called after the URI. The last ``optional`` names may be
    left out (they are then None); the URI is then known by its shape only.
    """
    metavar = " ".join(["[URI]", *names[:len(names) - optional],
                        *(f"[{n}]" for n in names[len(names) - optional:])])

    def split(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
        if ctx.resilient_parsing:  # shell completion: the words typed so far, for complete_vm_names
            return {"words": values}
        given_uri = bool(values and names) and looks_like_uri(values[0]) and not names[0].endswith("URI")
        required = len(names) - optional
        uri: str | None
        rest: tuple[str | None, ...]
        if optional and required <= len(values) - given_uri <= len(names):
            uri = values[0] if given_uri else None
            rest = values[1:] if given_uri else values
            rest += (None,) * (len(names) - len(rest))
        elif len(values) == len(names) + 1:
            uri = values[0]
            rest = values[1:]
        elif len(values) == len(names) and not given_uri:
            uri, rest = None, values
        else:
            after = values[1:] if given_uri else values
            if len(after) < len(names):
                where = " after the connection URI" if given_uri else ""
                raise click.UsageError(f"missing argument {' '.join(names[len(after):])}{where} "
                                       f"(usage: {metavar})", ctx)
            # values are not echoed: the URI could carry a password
            raise click.UsageError(f"expected {metavar}, got {len(values)} arguments", ctx)
        for name, value in zip(names, rest, strict=True):
            if value is not None and looks_like_uri(value) and not name.endswith("URI"):
                raise click.UsageError(
                    f"missing argument {name}: a connection URI stands where {name} belongs "
                    f"(usage: {metavar})", ctx)
        out: dict[str, Any] = {"uri": uri}
        out.update({name.lower(): value for name, value in zip(names, rest, strict=True)})
        return out

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, positionals: dict[str, Any], **kwargs: Any) -> Any:
            return func(*args, **positionals, **kwargs)

        return click.argument(  # type: ignore[return-value]
            "positionals", nargs=-1, metavar=metavar, callback=split,
            shell_complete=complete_vm_names if names and names[0] == "VM" else None,
        )(wrapper)

    return decorate

