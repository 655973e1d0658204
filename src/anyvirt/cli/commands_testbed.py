"""``anyvirt testbed ...``: start a local test target and keep it up until Ctrl-C / SIGTERM.

The testbed modules are imported inside the commands: they pull in libvirt's
Python binding or build tools the rest of the CLI must not need.
"""

from __future__ import annotations

import secrets
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

from anyvirt.cli.context import json_mode, json_option
from anyvirt.cli.output import print_json


@click.group()
def testbed() -> None:
    """Start local test targets (isolated libvirtd, vcsim) for trying anyvirt out."""


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


def _testbed_failed(exc: RuntimeError) -> click.ClickException:
    """Testbed start-up errors (missing packages, build failures) as exit code 1, no traceback."""
    return click.ClickException(f"the testbed did not start: {exc}")


def _wait_for_signal(stop: threading.Event) -> None:
    # wait in slices: a bare Event.wait() would delay signal handling on some Pythons
    while not stop.wait(0.5):
        pass


@testbed.command()
@click.option("--count", type=click.IntRange(1, 2), default=1, show_default=True,
              help="Daemons to start (two can live-migrate to each other).")
@json_option
def libvirt(count: int, json_flag: bool) -> None:
    """Start isolated libvirtd daemons (needs root and Debian's libvirt + QEMU packages)."""
    from anyvirt.testing import libvirt_testbed

    with _until_stopped() as stop:
        try:
            daemons = libvirt_testbed.start_daemons(count)
        except RuntimeError as exc:
            raise _testbed_failed(exc) from exc
        try:
            uris = [d.anyvirt_uri for d in daemons]
            if json_mode(json_flag):
                print_json({"uris": uris})
            else:
                for uri in uris:
                    click.echo(uri)
                click.echo("running; press Ctrl-C (or send SIGTERM) to stop", err=True)
            _wait_for_signal(stop)
        finally:
            for daemon in daemons:
                daemon.stop()
    click.echo("stopped", err=True)


@testbed.command()
@click.option("--esx", is_flag=True, help="Simulate a standalone ESXi host instead of a vCenter.")
@click.option("--vms", type=click.IntRange(min=0), default=2, show_default=True,
              help="VMs per resource pool in the simulated inventory.")
@click.option("--hosts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Hosts per cluster (vCenter mode).")
@json_option
def vsphere(esx: bool, vms: int, hosts: int, json_flag: bool) -> None:
    """Build (first time: about 15 s) and start vcsim, VMware's vSphere API simulator."""
    from anyvirt.testing.vcsim_testbed import Vcsim

    # a fresh throwaway password per run, printed once, for this simulator only
    password = secrets.token_urlsafe(12)
    sim = Vcsim(esx=esx, vms=vms, hosts=hosts, password=password)
    with _until_stopped() as stop:
        try:
            sim.start()
        except RuntimeError as exc:
            raise _testbed_failed(exc) from exc
        try:
            if json_mode(json_flag):
                print_json({"uri": sim.anyvirt_uri, "password_env": "ANYVIRT_PASSWORD",
                            "password": password})
            else:
                click.echo(sim.anyvirt_uri)
                click.echo(f"export ANYVIRT_PASSWORD={password}")
                click.echo("running; press Ctrl-C (or send SIGTERM) to stop", err=True)
            _wait_for_signal(stop)
        finally:
            sim.stop()
    click.echo("stopped", err=True)
