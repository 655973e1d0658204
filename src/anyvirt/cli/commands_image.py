"""``anyvirt image NAME PATH``: write a small disk image locally, with no download.

The images come from the backend distributions (:mod:`anyvirt.images`): one
sub-command per ``anyvirt.images`` entry point (``anyvirt image demo PATH``
is the tiny guest of anyvirt-libvirt, a VM that really boots).
"""

from __future__ import annotations

from pathlib import Path

import click

from anyvirt import images
from anyvirt.cli.context import json_mode, json_option
from anyvirt.cli.output import echo, print_json
from anyvirt.cli.plugin_group import PluginGroup
from anyvirt.errors import AlreadyExists, AnyvirtError
from anyvirt.images import ImageBuilder


@click.group(cls=PluginGroup, names=images.names, load=images.load,
             command=lambda name, found: _image_command(name, found))
def image() -> None:
    """Write a small bootable disk image (from the installed backends), with no download."""


def _image_command(name: str, builder: ImageBuilder) -> click.Command:
    formats = list(builder.formats)

    def run(path: Path, fmt: str, force: bool, json_flag: bool) -> None:
        if path.exists() and not path.is_dir() and not force:
            raise AlreadyExists(f"{path} already exists; pass --force to replace it")
        try:
            written = images.write(name, path, fmt, overwrite=force)
        except RuntimeError as exc:  # a missing tool: exit 1 with its reason, no traceback
            raise AnyvirtError(f"the image was not written: {exc}") from exc
        if json_mode(json_flag):
            print_json({"path": str(written), "format": fmt, "size_bytes": written.stat().st_size})
            return
        echo(str(written))
        echo(f"use it as a VM's disk: anyvirt vm create URI NAME --image {written}", err=True)

    params: list[click.Parameter] = [
        click.Argument(["path"], type=click.Path(dir_okay=False, writable=True, path_type=Path)),
        click.Option(["--format", "fmt"], type=click.Choice(formats), default=formats[0],
                     show_default=True, help="Disk format to write."),
        click.Option(["--force"], is_flag=True, help="Replace PATH if it exists."),
    ]
    return json_option(click.Command(name, callback=run, params=params, help=builder.summary))
