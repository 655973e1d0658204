"""Deployment on VirtualBox: the identity as a NoCloud seed ISO on a DVD drive, and what the
Guest Additions report of the guest.

The seed is written (:func:`anyvirt.deployment.write_seed_iso`) into the VM's own folder as
:data:`SEED_FILE`, so it belongs to that VM alone: a clone that inherited its source's seed
attachment gets its own file on the same drive, and the source's file is never written.
``delete`` removes the file with the VM. A DVD is read-only by nature.

The Additions keep the guest's addresses in guest properties,
``/VirtualBox/GuestInfo/Net/<n>/V4/IP``, ``.../V4/Netmask`` and ``.../MAC`` (12 hex digits),
read with one ``guestproperty enumerate``. VirtualBox 7.2 prints each as
``<name><padding> = '<value>'``, then `` @ <time>`` and flags unless told not to; the
value is printed raw, so it is read up to the line's last quote, and only names of the
form above are used.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity, compile_nocloud, write_seed_iso
from anyvirt.deployment.nocloud import VOLUME_ID
from anyvirt.errors import AnyvirtError, InvalidState
from anyvirt.tasks import Job
from anyvirt_virtualbox import machines, vminfo
from anyvirt_virtualbox.create import CONTROLLERS
from anyvirt_virtualbox.machinereadable import Parsed, split_driver_warning
from anyvirt_virtualbox.runner import VBoxManage

SEED_FILE = "anyvirt-seed.iso"
SEED_FILES = ("meta-data", "user-data", "network-config", "vendor-data")
NET_PATTERN = "/VirtualBox/GuestInfo/Net/*"
_PROPERTY = re.compile(r"^(?P<name>/VirtualBox/GuestInfo/Net/(?P<n>\d+)/(?P<key>V4/IP|V4/Netmask|MAC))"
                       r" *= '(?P<value>.*)'(?: +@ [^']*)?$")


# ---------------------------------------------------------------- the seed
def seed_path(vbox: VBoxManage, vm_id: str, info: Parsed | None = None) -> Path:
    """Where the VM's own seed lives: its folder (the one of its ``.vbox`` file)."""
    cfg = machines.settings_path(vbox, vm_id, info)
    if cfg is None:
        raise InvalidState(f"VM {vm_id} has no settings file to put its seed beside")
    return cfg.parent / SEED_FILE


def _is_seed(attachment: vminfo.Attachment) -> bool:
    return attachment.dvd and Path(attachment.path).name == SEED_FILE


def _seed_slot(vbox: VBoxManage, uuid: str, info: Parsed) -> tuple[str, int, int]:
    """The DVD slot for the seed: the one of an inherited seed, else a free one on the VM's
    IDE or SATA controller, else on an IDE controller added for it."""
    attached = vminfo.attachments(info)
    inherited = next((a for a in attached if _is_seed(a)), None)
    if inherited is not None:
        return inherited.controller, inherited.port, inherited.device
    taken = {(a.controller, a.port, a.device) for a in attached}
    kinds = vminfo.controllers(info)
    for bus in ("ide", "sata"):
        for name, kind in kinds.items():
            if vminfo.CONTROLLER_BUS.get(kind) != bus:
                continue
            _, _, ports, devices = CONTROLLERS[bus]
            free = next(((name, p, d) for p in range(ports) for d in range(devices)
                         if (name, p, d) not in taken), None)
            if free is not None:
                return free
    if any(vminfo.CONTROLLER_BUS.get(kind) == "ide" for kind in kinds.values()):
        raise InvalidState(f"VM {uuid} has no free IDE or SATA slot for its seed DVD")
    name, add, _, _ = CONTROLLERS["ide"]
    vbox.run(["storagectl", uuid, "--name", name, *add], "adding an IDE controller for the seed DVD")
    return name, 0, 0


def apply_identity(vbox: VBoxManage, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
    job.check()
    uuid = machines.resolve(vbox, vm_id)
    info = machines.show(vbox, uuid)
    macs = [nic.mac for nic in vminfo.nics(info) if nic.mac]
    seed = compile_nocloud(identity, macs)
    path = seed_path(vbox, uuid, info)
    controller, port, device = _seed_slot(vbox, uuid, info)
    # written beside, then renamed: a seed the VM already has is replaced whole or not at all
    partial = path.with_name(f".{SEED_FILE}.partial")
    with open(partial, "wb") as out:
        write_seed_iso(seed.files(), out)
    try:
        fresh = not path.exists()
        partial.replace(path)
        try:
            vbox.run(["storageattach", uuid, "--storagectl", controller, "--port", str(port),
                      "--device", str(device), "--type", "dvddrive", "--medium", str(path)],
                     f"attaching the seed of VM {vm_id}", timeout=job.remaining(120.0))
        except BaseException:
            if fresh:
                remove_seed_file(vbox, path)
            raise
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def remove_seed_file(vbox: VBoxManage, path: Path) -> None:
    """Forget the seed medium and remove its file, unless another VM still has it in a drive
    (a clone that never got an identity of its own reads its source's seed)."""
    if path.name != SEED_FILE:
        return
    try:
        vbox.run(["closemedium", "dvd", str(path)], "forgetting a seed DVD image")
    except InvalidState:
        return  # attached elsewhere: that VM's drive keeps it
    except AnyvirtError:
        pass  # not registered (any more): only the file is left
    with contextlib.suppress(OSError):
        path.unlink()


def read_seed(path: Path) -> dict[str, str] | None:
    """The NoCloud files of a seed ISO (None when the image is not one)."""
    import pycdlib  # a third of a second to import: most calls never read a seed

    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (OSError, pycdlib.pycdlibexception.PyCdlibException):
        return None
    try:
        if iso.pvd.volume_identifier.decode("ascii", "replace").strip() != VOLUME_ID:
            return None
        found: dict[str, str] = {}
        for name in SEED_FILES:
            buffer = io.BytesIO()
            try:
                iso.get_file_from_iso_fp(buffer, rr_path=f"/{name}")
            except pycdlib.pycdlibexception.PyCdlibException:
                continue
            found[name] = buffer.getvalue().decode("utf-8", "replace")
        return found
    finally:
        iso.close()


def read_identity(vbox: VBoxManage, vm_id: str) -> dict[str, str] | None:
    """The files of the seed on the VM's DVD drive, read from the image itself."""
    info = machines.show(vbox, vm_id)
    for attachment in vminfo.attachments(info):
        if _is_seed(attachment):
            return read_seed(Path(attachment.path))
    return None


# ---------------------------------------------------------------- what the Additions report
def reported_addresses(text: str) -> list[ReportedAddress]:
    """``guestproperty enumerate --no-timestamp --no-flags`` of the ``Net`` properties."""
    _, text = split_driver_warning(text)
    nets: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        match = _PROPERTY.match(line.rstrip())
        if match is not None:
            nets.setdefault(int(match["n"]), {})[match["key"]] = match["value"]
    found = []
    for _, net in sorted(nets.items()):
        if net.get("MAC") and net.get("V4/IP"):
            found.append(ReportedAddress(net["MAC"], net["V4/IP"], _prefix(net.get("V4/Netmask")), "agent"))
    return found


def _prefix(netmask: str | None) -> int | None:
    if not netmask:
        return None
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
    except ValueError:
        return None


def guest_addresses(vbox: VBoxManage, vm_id: str) -> list[ReportedAddress]:
    uuid = machines.resolve(vbox, vm_id)
    out = vbox.run(["guestproperty", "enumerate", uuid, "--no-timestamp", "--no-flags", NET_PATTERN],
                   f"reading the guest addresses of VM {vm_id}")
    return reported_addresses(out.stdout)


def guest_reports_up(vbox: VBoxManage, vm_id: str) -> bool | None:
    """True when the Additions run in the guest (``GuestAdditionsRunLevel`` above 0); None
    for a running VM without them (nothing in it could say so); False when it is not running."""
    info = machines.show(vbox, vm_id)
    if info.get("VMState") not in ("running", "paused"):
        return False
    level = info.get("GuestAdditionsRunLevel")
    return True if level.isdigit() and int(level) > 0 else None


def seeds_of(vbox: VBoxManage, vm_id: str) -> Iterable[Path]:
    """The VM's own seed file, if it has one (the one in its folder)."""
    with contextlib.suppress(AnyvirtError):
        path = seed_path(vbox, vm_id)
        if path.exists():
            yield path


__all__ = ["SEED_FILE", "apply_identity", "guest_addresses", "guest_reports_up", "read_identity",
           "read_seed", "remove_seed_file", "reported_addresses", "seed_path", "seeds_of"]
