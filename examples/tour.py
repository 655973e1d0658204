#!/usr/bin/env python3
"""A tour of anyvirt: the same script on every backend it can reach, side by side.

For each target it connects, reads the host's facts, creates a small VM,
starts it, reads its serial console for a few seconds, snapshots it (with
memory where supported), reverts, migrates it to another node of the same
host (live if it runs), stops it, drops the snapshot, clones it (linked where
supported, else full), backs it up (an archive, then two restore points of a
repository: the second incremental), moves it to another platform, recovers
the VMs of a failed node (simulated on memory:// only: a tour never fails a
real node) and deletes everything it made. Each step's cell says how it went
and how long it took::

    ok 0.12 s  |  not supported  |  skipped: no second node  |  forced: <why>  |  failed: <message>

Graceful stop is asked for first; where the platform says the guest cannot
take it (vSphere without VMware Tools, a blank disk that ignores ACPI) the VM
is powered off instead and the cell says ``forced`` with the platform's reason:
that is the guest's limit, not a failure.

Targets: ``memory://tour`` always; the local default (``anyvirt.default_uri()``,
the local QEMU when the libvirt backend is installed) when it is not
memory://; then every URI given as an argument or in ``$ANYVIRT_TOUR_URIS``
(separated by white space). Credentials come the usual way (URI, profile,
``ANYVIRT_PASSWORD``...). Every VM the tour creates is removed at the end,
even when a step fails.

Exit status: 0 if every reachable backend passed every step it supports,
else 1. A target that cannot be reached is reported, not counted as failed.
``--json`` prints the cells as JSON instead of the table.

Written against anyvirt's public API only, as any user script would be.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.table import Table
from rich.text import Text

import anyvirt
import anyvirt.images
import anyvirt.memory
from anyvirt import Capability, DiskSpec, Identity, PowerState, User, VMSpec
from anyvirt.watch import Watch

STEPS = ("connect", "info", "create", "start", "console", "addresses", "snapshot", "revert", "migrate",
         "stop", "drop snapshot", "clone", "identity", "backup", "repository", "move", "recover",
         "delete", "watch")
MEMORY_TARGET = "memory://tour"
# where "move" takes each VM: another platform (for memory:// itself, another memory host)
MOVE_TARGET = "memory://tour-elsewhere"
ENV_URIS = "ANYVIRT_TOUR_URIS"
#: the identity the tour's clone is given: a user with a key (hostname: the clone's name)
TOUR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNY7wUXk/ocS/HORhj6gC7ir2M4NemnyZUcO7UIEcQG tour"
#: seconds a blank disk (no guest OS to answer ACPI) gets before it is powered off
BLANK_DISK_STOP_S = 5.0
#: the longest the console step listens for a line from a guest that boots: the demo guest
#: writes its first about 3 s after start on an idle machine, but 10 to 27 s were measured on a
#: busy 2-core one; the step ends at the first line, so this bounds only a slow machine
CONSOLE_BOOT_S = 30.0
#: the same for a blank disk: nothing boots to write, only a line that echoes input answers
CONSOLE_QUIET_S = 3.0
CELL_WIDTH = 64


@dataclass
class Cell:
    """The outcome of one step on one target."""

    outcome: str  # ok | not supported | skipped | forced | failed | unreachable
    seconds: float | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def text(self) -> str:
        if self.outcome == "ok":
            shown = f"ok {self.seconds:.2f} s"
            return f"{shown} ({self.detail})" if self.detail else shown
        return f"{self.outcome}: {self.detail}" if self.detail else self.outcome


@dataclass
class TourResult:
    """Every step's cell for one target."""

    label: str
    cells: dict[str, Cell] = field(default_factory=dict)
    reachable: bool = True

    @property
    def passed(self) -> bool:
        return not self.reachable or not any(c.failed for c in self.cells.values())


def warnings_named(warnings: Sequence[str]) -> str:
    """A move's warnings by their codes ("1 warning: mac-changed"), not just a count: the
    reader of the table must know what to check on the moved VM."""
    if not warnings:
        return "no warnings"
    codes = ", ".join(str(warning).partition(":")[0] for warning in warnings)
    return f"{len(warnings)} warning{'' if len(warnings) == 1 else 's'}: {codes}"


def short(error: BaseException) -> str:
    """The whole message on one line: the table folds long cells, it never cuts them."""
    return " ".join(str(error).split()) or type(error).__name__


def size(count: int) -> str:
    """Bytes as a person reads them: KiB up to 10 MiB, then MiB."""
    return f"{count / 1024:.0f} KiB" if count < 10 << 20 else f"{count / (1 << 20):.0f} MiB"


def first_line(output: bytes) -> str | None:
    """The first whole line of console output with something visible on it, if one came."""
    *whole, _partial = output.split(b"\n")
    for raw in whole:
        line = raw.decode(errors="replace").strip()
        if any(c.isprintable() and not c.isspace() for c in line):
            return line
    return None


class GuestCannot(Exception):
    """The platform says the guest cannot do this (e.g. no VMware Tools): not a failure."""


def label_for(uri: str) -> str:
    """The URI without a password, for the table header before we have ``host.uri``."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))
    except ValueError:
        return uri.split("://", 1)[0] + "://…"


class Tour:
    """Runs the steps on one target, recording a cell per step."""

    def __init__(self, uri: str, image: Callable[[], Path | None], timeout: float) -> None:
        self.uri = uri
        self.result = TourResult(label_for(uri))
        self.timeout = timeout
        self._image = image
        self.host: anyvirt.Host | None = None
        self.vm: anyvirt.VM | None = None
        self.snapshot: anyvirt.Snapshot | None = None
        self.made: list[anyvirt.VM] = []  # everything to remove at the end, clones first
        self.deleted: list[str] = []  # ids the delete step removed (the watch must see each)
        self.tag = uuid.uuid4().hex[:6]
        self.boots = False  # whether the VM's disk holds a guest that answers ACPI

    # -- recording --------------------------------------------------------------
    def record(self, step: str, outcome: str, detail: str = "") -> None:
        self.result.cells[step] = Cell(outcome, None, detail)

    def timed(self, step: str, action: Callable[[], str | None]) -> bool:
        """Run ``action``; its return value, if any, is a note for the cell."""
        started = time.monotonic()
        try:
            note = action()
        except anyvirt.NotSupported as exc:
            self.result.cells[step] = Cell("not supported", None, short(exc))
            return False
        except GuestCannot as exc:
            self.result.cells[step] = Cell("forced", time.monotonic() - started, short(exc))
            return True
        except Exception as exc:  # the tour reports every failure and carries on
            self.result.cells[step] = Cell("failed", time.monotonic() - started, short(exc))
            return False
        self.result.cells[step] = Cell("ok", time.monotonic() - started, note or "")
        return True

    def supported(self, step: str, *needed: Capability) -> bool:
        assert self.host is not None
        missing = [c for c in needed if not self.host.supports(c)]
        if missing:
            self.record(step, "not supported", ", ".join(c.value for c in missing))
            return False
        return True

    # -- the steps ----------------------------------------------------------------
    def run(self) -> TourResult:
        try:
            self._steps()
        finally:
            self._clean_up()
            if self.host is not None:
                self.host.close()
        for step in STEPS:
            self.result.cells.setdefault(step, Cell("skipped", None, "earlier step failed"))
        return self.result

    def _connect(self) -> None:
        self.host = anyvirt.connect(self.uri)
        self.result.label = self.host.uri

    def _steps(self) -> None:
        started = time.monotonic()
        try:
            self._connect()
        except anyvirt.AnyvirtError as exc:
            self.result.reachable = False
            self.result.cells["connect"] = Cell("unreachable", None, short(exc))
            for step in STEPS[1:]:
                self.record(step, "-")
            return
        self.result.cells["connect"] = Cell("ok", time.monotonic() - started)
        host = self.host
        assert host is not None

        def info() -> str:
            facts = host.info()
            kind = host.backend if facts.hypervisor == host.backend else f"{host.backend}, {facts.hypervisor}"
            return f"{kind}, {facts.cpus} CPUs"

        self.timed("info", info)
        if not self.supported("create", Capability.VM_CREATE) or not self.timed("create", self._create):
            return
        if self.supported("start", Capability.START):
            self.timed("start", self._start)
        self._console()
        if self.supported("addresses", Capability.GUEST_ADDRESSES):
            self.timed("addresses", self._addresses)
        if self.supported("snapshot", Capability.SNAPSHOTS) and self.timed("snapshot", self._snapshot):
            self.timed("revert", self._revert)
        elif "revert" not in self.result.cells:
            self.record("revert", "not supported" if not host.supports(Capability.SNAPSHOTS) else "skipped",
                        "no snapshot")
        self._migrate()
        if self._vm().refresh().state is PowerState.RUNNING and self.supported("stop", Capability.STOP):
            self.timed("stop", self._stop)
        elif "stop" not in self.result.cells:
            self.record("stop", "skipped", "not running")
        if self.snapshot is not None:
            # a snapshot ties the disks down (libvirt will not make a linked clone of a VM
            # that has one): it has served its purpose, so drop it before cloning
            self.timed("drop snapshot", self._drop_snapshot)
        else:
            self.record("drop snapshot", "skipped", "no snapshot")
        self._clone()
        self._identity()
        self._backup_and_move()
        self._recover()
        if self.supported("delete", Capability.VM_DELETE):
            with host.vms.watch(interval=1.0) as changes:
                self.timed("delete", self._delete_all)
                self.timed("watch", lambda: self._removals_seen(changes))
        else:
            self.record("watch", "skipped", "nothing deleted to watch")

    def _vm(self) -> anyvirt.VM:
        assert self.vm is not None
        return self.vm

    def _create(self) -> str:
        assert self.host is not None
        disk, note = DiskSpec(size_gib=0.0625), "blank disk"
        if self.host.backend == "libvirt" and self.host.supports(Capability.VM_CREATE_FROM_IMAGE):
            image = self._image()
            if image is not None:  # a real guest that boots and powers off on ACPI
                disk, note = DiskSpec(image=str(image)), "boot-sector guest"
                self.boots = True
        self.vm = self.host.vms.create(
            VMSpec(name=f"tour-{self.tag}", cpus=1, memory_mib=64, disks=[disk],
                   description="made by examples/tour.py; safe to delete"),
            timeout=self.timeout,
        )
        self.made.append(self.vm)
        return note

    def _addresses(self) -> str:
        """The guest's own addresses, matched to its NICs (none where no guest runs yet)."""
        found = self._vm().addresses()
        return ", ".join(str(a.ip) for a in found) or "none yet (no guest agent or lease)"

    def _console(self) -> None:
        """Attach to the running VM's serial console, read a line, detach."""
        if not self.supported("console", Capability.CONSOLE):
            return
        if self._vm().refresh().state is not PowerState.RUNNING:
            self.record("console", "skipped", "not running")
            return
        self.timed("console", self._read_console)

    def _read_console(self) -> str:
        """A line typed first: a guest that answers input (a shell, memory://'s echoing line)
        answers it; one that only writes (the demo guest's counter) ignores it. Then the first
        line the console gives, within a bound: every wait is bounded."""
        probe = f"anyvirt-tour-{self.tag}"
        listen = CONSOLE_BOOT_S if self.boots else CONSOLE_QUIET_S
        seen = b""
        with self._vm().console(timeout=min(self.timeout, 30.0)) as console:
            console.write(f"{probe}\r\n")
            deadline = time.monotonic() + listen
            while first_line(seen) is None and (left := deadline - time.monotonic()) > 0:
                seen += console.read(timeout=min(left, 0.5))
        line = first_line(seen)
        if line is None:
            return f"{len(seen)} bytes in {listen:g} s, no whole line"
        whose = "our input, echoed" if line == probe else "not our input"
        # repr: the guest's control characters (a terminal's escapes) shown, never obeyed
        return f"{len(seen)} bytes; first line {line!r}, {whose}"

    def _identity(self) -> None:
        """A clone that comes up as its own machine: its own host name and the tour's key."""
        assert self.host is not None
        if not self.supported("identity", Capability.IDENTITY, Capability.FULL_CLONE):
            return

        def deploy() -> str:
            identity = Identity(users=[User("tour", ssh_keys=[TOUR_KEY], sudo=True)])
            name = f"tour-{self.tag}-id"
            clone = self._vm().clone(name, identity=identity, timeout=self.timeout)
            self.made.insert(0, clone)
            return f"{name}: hostname {name}, user tour"

        self.timed("identity", deploy)

    def _removals_seen(self, changes: Watch) -> str:
        """What the watch opened before the delete saw of it: one "removed" per VM."""
        wanted, seen = set(self.deleted), set[str]()
        deadline = time.monotonic() + 15.0
        while seen != wanted and time.monotonic() < deadline:
            change = changes.get(timeout=max(0.1, deadline - time.monotonic()))
            if change is not None and change.kind == "removed" and change.vm.id in wanted:
                seen.add(change.vm.id)
        if seen != wanted:
            raise RuntimeError(f"the watch saw {len(seen)} of {len(wanted)} removals")
        return f"{len(seen)} removal{'' if len(seen) == 1 else 's'} seen"

    def _snapshot(self) -> str:
        assert self.host is not None
        vm = self._vm().refresh()
        with_memory = vm.state is PowerState.RUNNING and self.host.supports(Capability.MEMORY_SNAPSHOTS)
        self.snapshot = vm.snapshots.create("tour", description="tour", memory=with_memory,
                                            timeout=self.timeout)
        return "with memory" if self.snapshot.memory else "disk only"

    def _revert(self) -> str:
        assert self.snapshot is not None
        self.snapshot.revert(timeout=self.timeout)
        return f"now {self._vm().state}"

    def _start(self) -> None:
        self._vm().start(timeout=self.timeout)

    def _stop(self) -> None:
        """Graceful first (the ACPI power button, or the guest tools), as on any platform.

        The host is asked, not guessed at: a platform that needs something in
        the guest for a graceful stop says so (InvalidState, e.g. vSphere
        without VMware Tools), and a blank disk has no guest to answer ACPI on a
        real hypervisor; then the VM is powered off and the cell says why.
        """
        assert self.host is not None
        vm = self._vm()
        real_guestless = not self.boots and self.host.backend != "memory"
        try:
            vm.stop(timeout=BLANK_DISK_STOP_S if real_guestless else min(self.timeout, 60.0))
        except anyvirt.InvalidState as exc:
            if not self.host.supports(Capability.POWER_OFF):
                raise
            vm.stop(force=True, timeout=self.timeout)
            raise GuestCannot(f"powered off instead: {short(exc)}") from exc
        except anyvirt.Timeout as exc:
            if not real_guestless or not self.host.supports(Capability.POWER_OFF):
                raise
            vm.stop(force=True, timeout=self.timeout)
            raise GuestCannot("powered off instead: a blank disk has no guest to answer ACPI") from exc

    def _drop_snapshot(self) -> None:
        assert self.snapshot is not None
        self.snapshot.delete(timeout=self.timeout)
        self.snapshot = None

    def _migrate(self) -> None:
        assert self.host is not None
        vm = self._vm().refresh()
        live = vm.state is PowerState.RUNNING
        if not self.supported("migrate", Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION):
            return
        others = [n for n in self.host.nodes.list() if n.id != vm.node and n.name != vm.node]
        if not others:
            self.record("migrate", "skipped", "no second node")
            return

        def move() -> str:
            result = vm.migrate(to=others[0], live=live, timeout=self.timeout)
            return f"{'live' if result.live else 'cold'} to {others[0].name}"

        self.timed("migrate", move)

    def _clone(self) -> None:
        assert self.host is not None
        linked = self.host.supports(Capability.LINKED_CLONE)
        if not linked and not self.supported("clone", Capability.FULL_CLONE):
            return

        def copy() -> str:
            clone = self._vm().clone(f"tour-{self.tag}-clone", linked=linked, timeout=self.timeout)
            self.made.insert(0, clone)  # linked clones go before the VM they share disks with
            return "linked" if linked else "full"

        self.timed("clone", copy)

    def _backup_and_move(self) -> None:
        """A portable backup, then a cold move to another platform (disks copied and verified)."""
        if not self.supported("backup", Capability.DISK_EXPORT):
            self.record("repository", "not supported", Capability.DISK_EXPORT.value)
            self.record("move", "not supported", Capability.DISK_EXPORT.value)
            return
        vm = self._vm().refresh()
        if vm.state is not PowerState.STOPPED:  # disks are copied only from a stopped VM
            vm.stop(force=True, timeout=self.timeout)
        with tempfile.TemporaryDirectory(prefix="anyvirt-tour-") as tmp:
            archive = Path(tmp) / "tour.avbk"
            self.timed("backup",
                       lambda: f"{vm.backup(archive, timeout=self.timeout).stat().st_size // 1024} KiB")

            def keep_history() -> str:
                """Two restore points in a repository: the second stores only what is new, and
                where the platform tracks changed blocks it reads only those too."""
                repo = anyvirt.BackupRepository(Path(tmp) / "repository")
                repo.backup(vm, timeout=self.timeout)
                second = repo.backup(vm, timeout=self.timeout)
                report = repo.verify()
                if not report.ok:
                    raise RuntimeError(f"the repository does not verify: {report.problems[0]}")
                kind = "incremental" if second.incremental else "full"
                return (f"{len(repo.points(vm))} points; the second {kind}: read "
                        f"{size(second.read_bytes)} of {size(second.size_bytes)}, stored "
                        f"{size(second.stored_bytes)}; verified")

            self.timed("repository", keep_history)

        def move() -> str:
            with anyvirt.connect(MOVE_TARGET) as elsewhere:
                result = anyvirt.migrate(vm, to=elsewhere, name=f"tour-{self.tag}-moved",
                                         timeout=self.timeout)
                elsewhere.vms.get(result.vm_id).delete()
            return f"to {elsewhere.backend}; {warnings_named(result.warnings)}"

        self.timed("move", move)

    def _recover(self) -> None:
        """A node fails and its VMs come back on another: simulated, on memory:// only."""
        assert self.host is not None
        if not self.supported("recover", Capability.NODE_RECOVERY):
            return
        if self.host.backend != "memory":
            # failing a node is the cluster's real outage: no tour does that to see a cell
            self.record("recover", "skipped", "a tour never fails a real node (docs/recovery.md)")
            return
        ours = {vm.id for vm in self.made}
        held: dict[str, set[str]] = {}  # node -> ids of the VMs on it
        for vm in self.host.vms.list():
            held.setdefault(vm.node or "", set()).add(vm.id)
        live = [n for n in self.host.nodes.list() if n.state == "online"]
        # only a node that holds nothing but the tour's own VMs is failed
        spare = [n for n in live if held.get(n.id, set()) | held.get(n.name, set()) <= ours]
        if len(live) < 2 or not spare:
            self.record("recover", "skipped",
                        "no second live node" if len(live) < 2 else "every node holds VMs of others")
            return
        self.timed("recover", lambda: self._fail_and_recover(spare[0]))

    def _fail_and_recover(self, node: anyvirt.Node) -> str:
        """A running VM of the tour's own on ``node``, the node failed with the memory backend's
        simulated failure, its VMs recovered, the node revived whatever happened."""
        assert self.host is not None
        vm = self.host.vms.create(VMSpec(name=f"tour-{self.tag}-rec", cpus=1, memory_mib=64,
                                         node=node.id, description="made by examples/tour.py"),
                                  timeout=self.timeout)
        self.made.insert(0, vm)
        vm.start(timeout=self.timeout)
        world = self.host.native.name  # memory://NAME: the simulation is per named host
        anyvirt.memory.fail_node(world, node.id)
        try:
            recovery = self.host.recover(node, timeout=self.timeout)
        finally:
            anyvirt.memory.revive_node(world, node.id)
        if recovery.failed:
            raise RuntimeError(f"{recovery.failed[0].vm_name} not recovered: {recovery.failed[0].reason}")
        vm.stop(force=True, timeout=self.timeout)  # the delete step removes stopped VMs
        each = ", ".join(f"{r.vm_name} {r.outcome.value} to {r.vm.node if r.vm else '?'} "
                         f"in {r.elapsed:.3f} s" for r in recovery)
        return f"{node.name} down (simulated); {each}; whole recovery {recovery.elapsed:.3f} s"

    def _delete_all(self) -> str:
        for vm in list(self.made):
            vm.delete(timeout=self.timeout)
            self.made.remove(vm)
            self.deleted.append(vm.id)
        return ""

    def _clean_up(self) -> None:
        """Whatever happened, remove what the tour made (clones first), forcing it off if need be."""
        for vm in list(self.made):
            self.made.remove(vm)
            try:
                vm.refresh()
                if vm.state in (PowerState.RUNNING, PowerState.PAUSED):
                    vm.stop(force=True, timeout=self.timeout)
                vm.delete(timeout=self.timeout)
            except anyvirt.NotFound:
                continue  # already gone
            except anyvirt.AnyvirtError as exc:
                note = f"could not remove {vm.name}: {short(exc)}"
                self.result.cells["delete"] = Cell("failed", None, note)


class GuestImage:
    """Writes the bootable demo image once, on first use, where one is installed and can be built."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._tried = False
        self._path: Path | None = None

    def __call__(self) -> Path | None:
        if not self._tried:
            self._tried = True
            try:
                # `anyvirt image demo`: the tiny guest of anyvirt-libvirt (needs binutils)
                self._path = anyvirt.images.write("demo", self._directory / "demo.img")
            except Exception:  # not installed, or no binutils: fall back to a blank disk
                self._path = None
        return self._path


def targets(given: Sequence[str], use_default: bool) -> list[str]:
    found = [MEMORY_TARGET]
    if use_default:
        default = anyvirt.default_uri()
        if not default.startswith("memory:"):
            found.append(default)
    found += list(given) + os.environ.get(ENV_URIS, "").split()
    unique: list[str] = []
    for uri in found:
        if uri not in unique:
            unique.append(uri)
    return unique


def render(results: Sequence[TourResult], console: Console) -> None:
    table = Table(title="anyvirt tour")
    table.add_column("step", style="bold")
    for result in results:
        # Text: never read as markup; long cells wrap within the column, never cut off
        table.add_column(Text(result.label), overflow="fold", max_width=CELL_WIDTH)
    styles = {"ok": "green", "failed": "red", "not supported": "yellow", "forced": "yellow",
              "unreachable": "magenta"}
    for step in STEPS:
        row = []
        for result in results:
            cell = result.cells[step]
            style = styles.get(cell.outcome, "dim")
            row.append(Text(cell.text(), style=style))
        table.add_row(step, *row)
    console.print(table)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="anyvirt-tour-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("uris", nargs="*", help=f"more targets (also ${ENV_URIS})")
    parser.add_argument("--no-default", action="store_true",
                        help="do not add the local default (anyvirt.default_uri())")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per operation")
    parser.add_argument("--json", action="store_true", help="print the cells as JSON, not a table")
    args = parser.parse_args(argv)

    console = Console(width=None if sys.stdout.isatty() else 200)
    with _workdir() as work:
        image = GuestImage(work)
        results = []
        for uri in targets(args.uris, not args.no_default):
            if not args.json:
                console.print(Text(f"touring {label_for(uri)} ...", style="dim"))
            results.append(Tour(uri, image, args.timeout).run())
    if args.json:
        print(json.dumps([{"target": r.label, "reachable": r.reachable, "passed": r.passed,
                           "cells": {step: {"outcome": c.outcome, "seconds": c.seconds,
                                            "detail": c.detail} for step, c in r.cells.items()}}
                          for r in results], indent=2))
    else:
        render(results, console)
    failed = [r.label for r in results if not r.passed]
    if failed:
        if not args.json:
            console.print(Text(f"failed on: {', '.join(failed)}", style="red"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
