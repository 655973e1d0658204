"""Creating a VM from a ``VMSpec``: createvm, modifyvm, storagectl, createmedium, storageattach.

Everything the spec asks for is translated (and refused with ``InvalidSpec``)
before the first command runs. The VM gets a UUID chosen here, so a create
that fails half-way can always be undone: the VM is unregistered with its
media deleted, and any disk file made but not yet attached is removed too.

NIC networks are written as VirtualBox attachments: ``nat`` (also the default
and ``default``), ``bridged:<host interface>``, ``hostonly:<vboxnetN>``,
``internal:<name>`` and ``natnetwork:<name>``.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from pathlib import Path

import attrs

from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidSpec
from anyvirt.model import DiskSpec, Firmware, NicSpec, VMSpec
from anyvirt.tasks import Job
from anyvirt_virtualbox import images
from anyvirt_virtualbox.listings import Version
from anyvirt_virtualbox.machines import settings_path
from anyvirt_virtualbox.runner import VBoxManage
from anyvirt_virtualbox.vminfo import GUEST_OS_TYPES, NIC_MODELS

MAX_NICS = 8
DEFAULT_BUS = "sata"

#: anyvirt bus -> (controller name, storagectl arguments, ports per controller, devices per port)
CONTROLLERS: dict[str, tuple[str, tuple[str, ...], int, int]] = {
    "sata": ("SATA", ("--add", "sata", "--controller", "IntelAhci"), 30, 1),
    "scsi": ("SCSI", ("--add", "scsi", "--controller", "LsiLogic"), 16, 1),
    "ide": ("IDE", ("--add", "ide", "--controller", "PIIX4"), 2, 2),
    "nvme": ("NVMe", ("--add", "pcie", "--controller", "NVMe"), 255, 1),
    # the argument is "VirtIO" (7.2's storagectl refuses "VirtioSCSI", the type showvminfo
    # reports for it)
    "virtio": ("VirtIO", ("--add", "virtio", "--controller", "VirtIO"), 256, 1),
}

_ATTACH = {
    "bridged": ("bridged", "--bridgeadapter"),
    "hostonly": ("hostonly", "--hostonlyadapter"),
    "internal": ("intnet", "--intnet"),
    "intnet": ("intnet", "--intnet"),
    "natnetwork": ("natnetwork", "--nat-network"),
}
_MODEL_NAMES = {v: k for k, v in NIC_MODELS.items()}


@attrs.frozen
class DiskPlan:
    index: int
    spec: DiskSpec
    bus: str
    controller: str
    port: int
    device: int


def nic_arguments(slot: int, nic: NicSpec) -> list[str]:
    """The ``modifyvm`` arguments of one NIC (slot 1..8)."""
    network = nic.network or "nat"
    if network in ("nat", "default"):
        args = [f"--nic{slot}", "nat"]
    else:
        kind, sep, name = network.partition(":")
        if not sep or kind not in _ATTACH or not name:
            raise InvalidSpec(
                f"NIC network {network!r} is not a VirtualBox network: use nat, bridged:<interface>, "
                "hostonly:<vboxnetN>, internal:<name> or natnetwork:<name>"
            )
        mode, option = _ATTACH[kind]
        args = [f"--nic{slot}", mode, f"{option}{slot}", name]
    if nic.model:
        model = _MODEL_NAMES.get(nic.model, nic.model if nic.model in NIC_MODELS else None)
        if model is None:
            raise InvalidSpec(
                f"NIC model {nic.model!r} is not one VirtualBox has: {', '.join(sorted(_MODEL_NAMES))}"
            )
        args += [f"--nictype{slot}", model]
    if nic.mac:
        args += [f"--macaddress{slot}", nic.mac.replace(":", "").upper()]
    return args


def plan_disks(disks: tuple[DiskSpec, ...], version: Version) -> list[DiskPlan]:
    used: dict[str, int] = {}
    out = []
    for index, disk in enumerate(disks):
        bus = disk.bus or DEFAULT_BUS
        if bus not in CONTROLLERS:
            raise InvalidSpec(f"VirtualBox has no {bus!r} disk bus")
        if bus == "virtio" and not version.at_least(6, 1):
            raise InvalidSpec(f"virtio-scsi disks need VirtualBox 6.1 or later (this is {version})")
        if disk.storage is not None:
            raise InvalidSpec("VirtualBox keeps disks in the VM's folder; DiskSpec.storage is not used")
        name, _, ports, devices = CONTROLLERS[bus]
        n = used.get(bus, 0)
        if n >= ports * devices:
            raise InvalidSpec(f"a {bus} controller takes at most {ports * devices} disks")
        used[bus] = n + 1
        out.append(
            DiskPlan(index=index, spec=disk, bus=bus, controller=name, port=n // devices, device=n % devices)
        )
    return out


def modify_arguments(spec: VMSpec) -> list[str]:
    if len(spec.nics) > MAX_NICS:
        raise InvalidSpec(f"VirtualBox VMs have at most {MAX_NICS} NICs, not {len(spec.nics)}")
    args = [
        "--cpus",
        str(spec.cpus),
        "--memory",
        str(spec.memory_mib),
        "--firmware",
        "efi" if spec.firmware is Firmware.EFI else "bios",
    ]
    if spec.description:
        args += ["--description", spec.description]
    for slot, nic in enumerate(spec.nics, start=1):
        args += nic_arguments(slot, nic)
    return args


def medium_command(version: Version) -> list[str]:
    """``createmedium disk`` since 5.0; 4.x has only ``createhd``."""
    return ["createmedium", "disk"] if version.at_least(5) else ["createhd"]


def os_type(guest_os: str) -> str:
    return GUEST_OS_TYPES.get(guest_os.lower(), guest_os)


def create_vm(vbox: VBoxManage, spec: VMSpec, version: Version, job: Job) -> str:
    """Make and register the VM; returns its UUID. Undone completely if any step fails."""
    modify = modify_arguments(spec)
    disks = plan_disks(spec.disks, version)
    for disk in disks:
        if disk.spec.image is not None:
            images.inspect(disk.spec.image, disk.spec.format)  # a bad image fails before anything is made
    vm_id = str(uuid.uuid4())
    made_files: list[Path] = []
    job.progress(5, f"creating {spec.name}")
    vbox.run(
        ["createvm", "--name", spec.name, "--uuid", vm_id, "--ostype", os_type(spec.guest_os), "--register"],
        f"creating VM {spec.name!r}",
    )
    try:
        folder = _folder(vbox, vm_id)
        vbox.run(["modifyvm", vm_id, *modify], f"configuring VM {spec.name!r}")
        for bus in dict.fromkeys(d.bus for d in disks):
            name, add, ports, _ = CONTROLLERS[bus]
            count = sum(1 for d in disks if d.bus == bus)
            extra = ["--portcount", str(min(ports, max(count, 1)))] if bus in ("sata", "nvme") else []
            vbox.run(["storagectl", vm_id, "--name", name, *add, *extra], f"adding a {bus} controller")
        for n, disk in enumerate(disks):
            job.check()
            job.progress(10 + 80 * n / max(len(disks), 1), f"disk {n + 1} of {len(disks)}")
            path = folder / f"disk{disk.index}.vdi"
            made_files.append(path)
            _make_disk(vbox, disk.spec, path, version, job)
            vbox.run(
                [
                    "storageattach",
                    vm_id,
                    "--storagectl",
                    disk.controller,
                    "--port",
                    str(disk.port),
                    "--device",
                    str(disk.device),
                    "--type",
                    "hdd",
                    "--medium",
                    str(path),
                ],
                f"attaching disk {disk.index}",
            )
    except BaseException:
        _undo(vbox, vm_id, made_files)
        raise
    return vm_id


def _folder(vbox: VBoxManage, vm_id: str) -> Path:
    """The new VM's folder, from its settings path in the registry (``createvm`` prints the
    name before the ``Settings file:`` line, so its output is not read for it)."""
    path = settings_path(vbox, vm_id)
    if path is None:
        raise ConnectionFailed(f"VirtualBox names no settings file for the new VM {vm_id}")
    return path.parent


def _make_disk(vbox: VBoxManage, disk: DiskSpec, path: Path, version: Version, job: Job) -> None:
    size_mib = math.ceil(disk.size_bytes / (1024 * 1024)) if disk.size_bytes else 0
    if disk.image is None:
        vbox.run(
            [*medium_command(version), "--filename", str(path), "--size", str(size_mib), "--format", "VDI"],
            f"creating disk {path.name}",
            timeout=job.remaining(600.0),
        )
        return
    virtual = images.to_vdi(disk.image, str(path), job, disk.format)
    if size_mib and size_mib * 1024 * 1024 > virtual:
        vbox.run(
            ["modifymedium", "disk", str(path), "--resize", str(size_mib)],
            f"growing disk {path.name}",
            timeout=job.remaining(600.0),
        )


def _undo(vbox: VBoxManage, vm_id: str, files: list[Path]) -> None:
    """Remove what a failed create made; errors here must not hide the original one."""
    with contextlib.suppress(AnyvirtError):
        vbox.run(["unregistervm", vm_id, "--delete"], "removing the half-made VM", timeout=60.0)
    for path in files:
        if path.exists():
            with contextlib.suppress(AnyvirtError):
                vbox.run(["closemedium", "disk", str(path), "--delete"], "removing a disk", timeout=60.0)
            with contextlib.suppress(OSError):
                os.remove(path)
