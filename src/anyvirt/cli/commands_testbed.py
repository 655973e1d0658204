"""``anyvirt testbed NAME``: start a local test target and keep it up until Ctrl-C / SIGTERM.

The testbeds come from the backend distributions (:mod:`anyvirt.testbeds`):
one sub-command per ``anyvirt.testbeds`` entry point, its options taken from
the testbed's own declaration. A testbed is imported only when its command
is run or its help shown, so ``anyvirt`` starts without libvirt's binding or
build tools.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from anyvirt import testbeds
from anyvirt.cli.context import json_mode, json_option
from anyvirt.cli.output import echo, print_json
from anyvirt.cli.plugin_group import PluginGroup
from anyvirt.errors import AnyvirtError
from anyvirt.testbeds import RunningTestbed, Testbed, TestbedOption


@click.group(cls=PluginGroup, names=testbeds.names, load=testbeds.load,
             command=lambda name, found: _testbed_command(name, found))
def testbed() -> None:
    """Start a local test target (from the installed backends) for trying anyvirt out."""


@contextmanager
def _until_stopped() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM; the previous handlers come back afterwards."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _wait_for_signal(stop: threading.Event) -> None:
    # wait in slices: a bare Event.wait() would delay signal handling on some Pythons
    while not stop.wait(0.5):
        pass


def _click_option(option: TestbedOption) -> click.Option:
    flag = "--" + option.name.replace("_", "-")
    if isinstance(option.default, bool):
        return click.Option([flag, option.name], is_flag=True, default=option.default, help=option.help)
    if isinstance(option.default, int):
        return click.Option([flag, option.name], type=click.IntRange(option.minimum, option.maximum),
                            default=option.default, show_default=True, help=option.help)
    return click.Option([flag, option.name], default=option.default, show_default=True, help=option.help)


def _show(running: RunningTestbed, as_json: bool) -> None:
    if as_json:
        print_json({"uris": list(running.uris), "environment": dict(running.environment)})
        return
    for uri in running.uris:
        echo(uri)
    for variable, value in running.environment.items():
        echo(f"export {variable}={value}")
    click.echo("running; press Ctrl-C (or send SIGTERM) to stop", err=True)


def _testbed_command(name: str, found: Testbed) -> click.Command:
    def run(json_flag: bool, **options: Any) -> None:
        with _until_stopped() as stop:
            try:
                running = found.start(**options)
            except RuntimeError as exc:  # missing packages, a failed build: exit 1, no traceback
                raise AnyvirtError(f"the testbed did not start: {exc}") from exc
            try:
                _show(running, json_mode(json_flag))
                _wait_for_signal(stop)
            finally:
                running.stop()
        click.echo("stopped", err=True)

    command = click.Command(name, callback=run, help=found.summary,
                            params=[_click_option(option) for option in found.options])
    return json_option(command)
