"""A real Linux test guest, built from Debian packages only: Debian's kernel and ``busybox-static``.

It proves deployment end to end: the guest reads a NoCloud seed (a CD-ROM
labelled ``cidata``: ``meta-data``, ``user-data``, ``network-config``), sets
the hostname from ``local-hostname``, installs each user's
``ssh_authorized_keys`` (block-style ``#cloud-config``, as ``yaml.safe_dump``
writes it), runs DHCP (busybox ``udhcpc``) on every NIC, and prints each fact
it applied on the serial console as a line ``ANYVIRT-GUEST key=value ...``
(:func:`console_facts` reads them). A shell then stays on the serial line,
and the ACPI power button powers it off (busybox ``acpid``).

:func:`build_linux_guest` makes the kernel and initramfs:

* the kernel is ``vmlinuz`` from the package ``linux-image-amd64`` points to
  (``apt-get download``; :mod:`.kernel`), decompressed to its ELF image when
  QEMU can enter it directly (PVH: under TCG this turns a ~25 s boot into
  ~8 s, see :func:`~.kernel.pvh_kernel`), with the few modules the guest needs
  (CD-ROM, ISO 9660, virtio and e1000 NICs, the power button) and their
  dependencies, for those the kernel config builds as modules;
* the initramfs is ``/bin/busybox`` of Debian's ``busybox-static`` (installed
  by ``scripts/system-packages.sh test``), the modules, and the scripts beside
  this module (``init.sh``, ``udhcpc.sh``, ``power-button.sh``).

Both are cached under ``~/.cache/anyvirt/linux-guest/<key>`` (the key hashes
the scripts, module list and busybox binary), built in a temporary directory
and renamed into place, so a concurrent build never sees half a cache and a
missing cache only costs a rebuild (~15-25 s, mostly reading the 70 MB kernel
package). The package's compressed ``vmlinuz`` is kept beside them, for
boot loaders. The guest boots by direct kernel boot (:func:`domain_xml`), or
from a plain BIOS disk that VMs made through the API can use
(:mod:`.bootdisk`); a stock kernel does not run under the CI machines'
software-nested KVM, so the domain is ``type='qemu'`` (TCG; through the API:
a libvirt URI with ``?accel=tcg``), where it reaches DHCP in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

from attrs import frozen
from platformdirs import user_cache_dir

from anyvirt_libvirt.testbed.linux_guest import initramfs
from anyvirt_libvirt.testbed.linux_guest.kernel import (
    WANTED_MODULES,
    KernelFiles,
    KernelPackageError,
    download_kernel_package,
    extract_kernel,
    pvh_kernel,
)

__all__ = [
    "CMDLINE",
    "MARKER",
    "ConsoleFacts",
    "GuestAddressLine",
    "LinuxGuest",
    "LinuxGuestError",
    "build_linux_guest",
    "console_facts",
    "default_cache_dir",
    "domain_xml",
    "wait_for_console",
]

MARKER = "ANYVIRT-GUEST"
"""Every fact the guest applied is printed on the serial console as ``MARKER key=value ...``."""

CMDLINE = "console=ttyS0 quiet panic=-1"
"""Kernel command line: messages and the shell on the first serial port; reboot at once on panic."""

BUSYBOX = Path("/bin/busybox")
"""Where Debian's ``busybox-static`` installs the (static) binary."""

_SCRIPTS = ("init.sh", "udhcpc.sh", "power-button.sh")
_FORMAT = "4"  # bump when the layout of the archive or the cache changes
_MANIFEST = "guest.json"
_PT_INTERP = 3


class LinuxGuestError(RuntimeError):
    """The guest could not be built (a missing package or tool, or an unusable kernel package)."""


@frozen
class LinuxGuest:
    """A built guest: boot ``kernel`` with ``initrd`` and :data:`CMDLINE`."""

    kernel: Path  # the uncompressed ELF (PVH entry) where the kernel has one, else its bzImage
    bzimage: Path  # the package's compressed vmlinuz, what a boot loader loads (boot disk)
    initrd: Path
    kernel_package: str  # e.g. linux-image-6.1.0-57-amd64
    kernel_version: str  # Debian package version
    modules: tuple[str, ...]  # loaded at boot, in this order


def default_cache_dir() -> Path:
    """Where :func:`build_linux_guest` keeps built guests unless told otherwise."""
    return Path(user_cache_dir("anyvirt")) / "linux-guest"


def _script(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def _is_static_elf(data: bytes) -> bool:
    """True for an ELF64 executable without a program interpreter (statically linked)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != _PT_INTERP
               for i in range(phnum))


def _busybox() -> bytes:
    try:
        data = BUSYBOX.read_bytes()
    except FileNotFoundError:
        data = b""
    if not _is_static_elf(data):
        raise LinuxGuestError(
            f"a static {BUSYBOX} is needed: install the Debian package 'busybox-static' "
            "(scripts/system-packages.sh test)"
        )
    return data


def _cache_key(busybox: bytes) -> str:
    digest = hashlib.sha256(_FORMAT.encode())
    for name in _SCRIPTS:
        digest.update(name.encode() + b"\0" + _script(name))
    digest.update(",".join(WANTED_MODULES).encode())
    digest.update(hashlib.sha256(busybox).digest())
    return digest.hexdigest()[:16]


def _load_cached(entry: Path) -> LinuxGuest | None:
    try:
        manifest = json.loads((entry / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    guest = LinuxGuest(kernel=entry / "kernel", bzimage=entry / "vmlinuz", initrd=entry / "initrd.img",
                       kernel_package=manifest["kernel_package"],
                       kernel_version=manifest["kernel_version"],
                       modules=tuple(manifest["modules"]))
    files = (guest.kernel, guest.bzimage, guest.initrd)
    return guest if all(path.is_file() for path in files) else None


def _archive(kernel: KernelFiles, busybox: bytes) -> bytes:
    entries = [initramfs.directory(d) for d in
               ("bin", "dev", "etc", "etc/acpi", "etc/acpi/PWRF", "etc/acpi/PWRB", "lib",
                "lib/modules", "proc", "sys", "root", "home", "tmp", "run", "seed")]
    entries += [
        initramfs.file("bin/busybox", busybox, 0o755),
        initramfs.symlink("bin/sh", "busybox"),
        initramfs.file("init", _script("init.sh"), 0o755),
        initramfs.file("etc/udhcpc.script", _script("udhcpc.sh"), 0o755),
        initramfs.file("etc/anyvirt-modules", "".join(f"{m}\n" for m in kernel.load_order).encode()),
        initramfs.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        initramfs.file("etc/group", b"root:x:0:\n"),
    ]
    # busybox acpid runs <conf dir>/<event>/<code> for the power button (fixed or control method)
    power = _script("power-button.sh")
    entries += [initramfs.file(f"etc/acpi/{event}/00000080", power, 0o755) for event in ("PWRF", "PWRB")]
    entries += [initramfs.file(f"lib/modules/{name}.ko", kernel.modules[name]) for name in kernel.load_order]
    return initramfs.initramfs(entries)


def build_linux_guest(cache_dir: Path | None = None) -> LinuxGuest:
    """The guest's kernel and initramfs, from the cache or built now (see the module doc)."""
    busybox = _busybox()
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    entry = root / _cache_key(busybox)
    cached = _load_cached(entry)
    if cached is not None:
        return cached
    partial = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        try:
            kernel = extract_kernel(download_kernel_package(partial))
        except KernelPackageError as exc:
            raise LinuxGuestError(f"cannot take the guest's kernel from Debian's package: {exc}") from exc
        for deb in partial.glob("*.deb"):
            deb.unlink()
        (partial / "kernel").write_bytes(pvh_kernel(kernel.vmlinuz, kernel.config) or kernel.vmlinuz)
        (partial / "vmlinuz").write_bytes(kernel.vmlinuz)
        (partial / "initrd.img").write_bytes(_archive(kernel, busybox))
        (partial / _MANIFEST).write_text(json.dumps({
            "kernel_package": kernel.package, "kernel_version": kernel.version,
            "kernel_release": kernel.release, "modules": list(kernel.load_order),
        }, indent=1))
        with contextlib.suppress(OSError):  # another build won the race: use its result
            os.rename(partial, entry)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    built = _load_cached(entry)
    if built is None:
        raise LinuxGuestError(f"the guest built into {entry} cannot be read back")
    return built


# -- the domain ---------------------------------------------------------------------


def domain_xml(
    name: str,
    guest: LinuxGuest,
    *,
    console: Path,
    disk: Path | None = None,
    seed: Path | None = None,
    network: str | None = None,
    mac: str | None = None,
    memory_mib: int = 192,
) -> str:
    """A TCG domain booting ``guest``: serial console to the file ``console``.

    ``disk`` (qcow2) is attached as virtio ``vda``; ``seed`` (an ISO) as a
    read-only IDE CD-ROM; ``network`` gives one virtio NIC on that libvirt
    network (with ``mac`` if given).
    """
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(dom, "vcpu").text = "1"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(guest.kernel)
    ET.SubElement(os_el, "initrd").text = str(guest.initrd)
    ET.SubElement(os_el, "cmdline").text = CMDLINE
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"
    devices = ET.SubElement(dom, "devices")
    if disk is not None:
        el = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(el, "driver", name="qemu", type="qcow2")
        ET.SubElement(el, "source", file=str(disk))
        ET.SubElement(el, "target", dev="vda", bus="virtio")
    if seed is not None:
        el = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(el, "driver", name="qemu", type="raw")
        ET.SubElement(el, "source", file=str(seed))
        ET.SubElement(el, "target", dev="hdc", bus="ide")
        ET.SubElement(el, "readonly")
    if network is not None:
        el = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(el, "source", network=network)
        if mac is not None:
            ET.SubElement(el, "mac", address=mac)
        ET.SubElement(el, "model", type="virtio")
        # no iPXE option ROM: the kernel is booted directly, and under TCG the ROM costs seconds
        ET.SubElement(el, "rom", enabled="no")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(console), append="on")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


# -- the console ----------------------------------------------------------------------


@frozen
class GuestAddressLine:
    """An ``address=`` line: what the guest's DHCP client applied to one NIC."""

    address: str  # e.g. 192.168.200.57/24
    mac: str
    nic: str


@frozen
class ConsoleFacts:
    """What the guest reported applying, read from its console text."""

    hostname: str | None
    instance_id: str | None
    ssh_keys: tuple[tuple[str, str], ...]  # (user, key)
    addresses: tuple[GuestAddressLine, ...]
    seed_done: bool
    init_done: bool


# Anywhere in a line: the shell's prompt may precede a line printed asynchronously (DHCP).
_MARKER_LINE = re.compile(rf"{MARKER} (.*?)\r?$", re.MULTILINE)


def _fields(rest: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in rest.split() if "=" in part)


def console_facts(text: str) -> ConsoleFacts:
    """Parse the guest's ``ANYVIRT-GUEST`` lines (complete lines only) from console text."""
    complete = text[: text.rfind("\n") + 1]
    hostname = instance = None
    keys: list[tuple[str, str]] = []
    addresses: list[GuestAddressLine] = []
    seed_done = init_done = False
    for rest in _MARKER_LINE.findall(complete):
        if rest.startswith("ssh-key "):
            user, _, key = rest.removeprefix("ssh-key user=").partition(" ")
            keys.append((user, key))
            continue
        fields = _fields(rest)
        if "hostname" in fields:
            hostname = fields["hostname"]
        if "instance-id" in fields:
            instance = fields["instance-id"]
        if "address" in fields:
            addresses.append(GuestAddressLine(fields["address"], fields.get("mac", ""),
                                              fields.get("nic", "")))
        seed_done = seed_done or rest == "seed-done"
        init_done = init_done or rest.split(" ", 1)[0] == "init-done"
    return ConsoleFacts(hostname, instance, tuple(keys), tuple(addresses), seed_done, init_done)


def _read(path: Path) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def wait_for_console(
    path: Path, ready: Callable[[ConsoleFacts], bool], timeout: float = 60.0,
) -> ConsoleFacts:
    """Poll the console file until ``ready(facts)``; :class:`TimeoutError` with its tail otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        facts = console_facts(_read(path))
        if ready(facts):
            return facts
        if time.monotonic() >= deadline:
            raise TimeoutError(f"guest console {path} not ready after {timeout}s; "
                               f"tail: {_read(path)[-600:]!r}")
        time.sleep(0.1)


def iter_marker_lines(text: str) -> Iterable[str]:
    """Every ``ANYVIRT-GUEST`` line's content, in order (for diagnostics)."""
    return _MARKER_LINE.findall(text)
