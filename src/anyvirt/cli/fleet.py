"""Several connections at once, for the commands that read a fleet (``vms URI1 URI2``,
``vm show URI1 URI2 NAME``): each word a URI or a profile's name, read side by side.

A connection that fails does not hide the others: what could be read is printed, then
each failure is said, and the exit code is the first failure's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import attrs
import click

from anyvirt import profiles
from anyvirt.cli.context import Settings, complete_vm_names, looks_like_uri
from anyvirt.cli.exit_codes import CliError, exit_code_for
from anyvirt.connect import build_target
from anyvirt.errors import AnyvirtError, InvalidSpec, NotFound
from anyvirt.host import Host

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: connections opened at once (each mostly waits on the network)
PARALLEL = 8


@attrs.frozen
class Reached(Generic[T]):
    """What one connection gave (``result``), or why it gave nothing (``error``)."""

    label: str  #: how output names it: ``host.uri``, never the typed URI (it may hold a password)
    result: T | None = None
    error: AnyvirtError | None = None


def label_of(word: str | None) -> str:
    """A connection not (yet) made, named without its secrets."""
    if word is None:
        return "the default connection"
    if not looks_like_uri(word):
        return f"profile {word}"
    try:
        return build_target(word).safe_uri
    except AnyvirtError:
        return "a malformed URI"


def connect_word(found: Settings, word: str | None) -> Host:
    """A URI connects to it; any other word names a profile (``anyvirt vms lab prod``).
    A word that is neither is bad input (exit 2), as a malformed URI is."""
    if word is None or looks_like_uri(word):
        return found.connect(word)
    try:
        profiles.load_profile(word)
    except NotFound as missing:
        raise InvalidSpec(f"{word!r} is neither a connection URI (scheme://...) nor a profile: "
                          f"{missing}") from None
    return attrs.evolve(found, profile=word).connect(None)


def read_each(found: Settings, words: Sequence[str | None],
              read: Callable[[Host], T]) -> list[Reached[T]]:
    """``read`` on every connection, side by side; in the order given, each word once."""
    unique = list(dict.fromkeys(words))

    def one(word: str | None) -> Reached[T]:
        label = label_of(word)
        try:
            with connect_word(found, word) as host:
                label = host.uri
                return Reached(label, read(host))
        except AnyvirtError as exc:
            return Reached(label, None, exc)

    if len(unique) == 1:
        return [one(unique[0])]
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(unique))) as pool:
        return list(pool.map(one, unique))


def raise_failures(reached: Sequence[Reached[T]]) -> None:
    """After the output of what was read: fail for the connections that failed (one
    connection fails as any command does, with its own error)."""
    failed = [r for r in reached if r.error is not None]
    if not failed:
        return
    first = failed[0].error
    assert first is not None
    if len(reached) == 1:
        raise first
    lines = "\n".join(f"  {r.label}: {r.error}" for r in failed)
    raise CliError(f"{len(failed)} of {len(reached)} connections failed:\n{lines}",
                   exit_code_for(first), type(first).__name__)


def with_targets(name: str) -> Callable[[F], F]:
    """Positional arguments ``[URI|PROFILE]... NAME``: the connections to look in (none: the
    one anyvirt picks), then the name. The command receives ``targets`` (a list, ``[None]``
    for none given) and ``name.lower()``."""
    metavar = f"[URI|PROFILE]... {name}"

    def split(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
        if ctx.resilient_parsing:  # shell completion: the words typed so far
            return {"words": values}
        if not values or looks_like_uri(values[-1]):
            # `vm show libvirt+qemu:///system`: the name is missing, not a VM named after a URI
            where = " after the connection URI" if values else ""
            raise click.UsageError(f"missing argument {name}{where} (usage: {metavar})", ctx)
        words: list[str | None] = list(values[:-1]) or [None]
        return {"targets": words, name.lower(): values[-1]}

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, positionals: dict[str, Any], **kwargs: Any) -> Any:
            return func(*args, **positionals, **kwargs)

        return click.argument(  # type: ignore[return-value]
            "positionals", nargs=-1, metavar=metavar, callback=split,
            shell_complete=complete_vm_names)(wrapper)

    return decorate
