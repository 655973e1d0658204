"""The image protocol: what ``anyvirt image NAME PATH`` writes, found through entry points.

An image builder makes a small disk image locally, with no download: a VM
that really boots, for trying anyvirt out (``DiskSpec(image=path)``,
``anyvirt vm create URI NAME --image PATH``). Builders live in the backend
distributions, registered under the ``anyvirt.images`` entry-point group::

    [project.entry-points."anyvirt.images"]
    demo = "anyvirt_libvirt.demo_image:BUILDER"

The registered object (see :class:`ImageBuilder`) has three members:

* ``summary``: one line, shown as the command's help;
* ``formats``: the disk formats it can write, the default first;
* ``write(path, fmt)``: write a new image to ``path`` (a file that does not
  exist yet); raise ``RuntimeError``
  (or a subclass) with the reason when it cannot (a missing tool).

:func:`write` is what the command and scripts call: it checks the name, the
format and the destination first, and lets the builder write to a temporary
file that only becomes ``path`` once complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

from anyvirt import plugins
from anyvirt.errors import AlreadyExists, InvalidSpec
from anyvirt.kit.paths import path_error

__all__ = ["GROUP", "ImageBuilder", "load", "names", "write"]

GROUP = "anyvirt.images"


class ImageBuilder(Protocol):
    """What a distribution registers under :data:`GROUP`."""

    @property
    def summary(self) -> str: ...

    @property
    def formats(self) -> Sequence[str]: ...

    def write(self, path: Path, fmt: str) -> None: ...


def names() -> list[str]:
    """The installed images' names; nothing is imported."""
    return plugins.names(GROUP)


def load(name: str) -> ImageBuilder:
    """The image builder registered as ``name``.

    :raises anyvirt.plugins.UnknownPlugin: none is installed under that name.
    :raises anyvirt.plugins.PluginBroken: it fails to import or lacks the protocol's members.
    """
    return cast(ImageBuilder, plugins.load(GROUP, name, "image", ("summary", "formats", "write")))


def write(name: str, path: str | os.PathLike[str], fmt: str | None = None, *,
          overwrite: bool = False) -> Path:
    """Write the image ``name`` to ``path`` (in ``fmt``, else the builder's default) and return the path.

    Missing parent directories are made. Nothing is left at ``path`` when the
    builder fails.

    :raises anyvirt.plugins.UnknownPlugin: no image of that name is installed.
    :raises InvalidSpec: the builder cannot write ``fmt``, or ``path`` is a directory or
        cannot be written (``StorageFull`` when its file system is full).
    :raises AlreadyExists: ``path`` exists and ``overwrite`` is false.
    """
    builder = load(name)
    formats = list(builder.formats)
    chosen = formats[0] if fmt is None else fmt
    if chosen not in formats:
        raise InvalidSpec(f"the image {name!r} comes in {', '.join(formats)}, not {chosen!r}")
    dest = Path(path)
    if dest.is_dir():
        raise InvalidSpec(f"{dest} is a directory; give the path of the image file to write")
    if dest.exists() and not overwrite:
        raise AlreadyExists(f"{dest} already exists (pass overwrite=True to replace it)")
    # a fresh name the builder creates itself, so the file gets the usual umask-based mode
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        builder.write(partial, chosen)
        os.replace(partial, dest)
    except OSError as exc:  # /proc/x.img, a read-only or full file system
        raise path_error(exc, f"cannot write {dest}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return dest
