"""Debian's kernel for the Linux test guest: ``vmlinuz`` and a few modules from ``linux-image-amd64``.

The package is fetched with ``apt-get download`` (the machine's own apt
sources, no other download) and read as a stream: only ``vmlinuz``, the
kernel config and the ``.ko`` files of the wanted modules and what they
depend on are kept, never the 400 MB tree. Dependencies come from each
module's own ``.modinfo`` ELF section (``depends=``), since the package ships
no ``modules.dep`` (``depmod`` runs at install time) and ``kmod`` may be absent.
"""

from __future__ import annotations

import lzma
import re
import struct
import subprocess
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from attrs import frozen

__all__ = [
    "KERNEL_PACKAGE",
    "WANTED_MODULES",
    "KernelFiles",
    "KernelPackageError",
    "download_kernel_package",
    "extract_kernel",
    "load_order",
    "module_dependencies",
    "pvh_kernel",
]

KERNEL_PACKAGE = "linux-image-amd64"
"""Debian's metapackage; it depends on the versioned ``linux-image-<abi>-amd64``."""

WANTED_MODULES = (
    # the cidata CD-ROM on an IDE (pc/i440fx) or SATA (q35) controller
    "ata_piix", "ahci", "sr_mod", "cdrom", "isofs",
    # virtio devices (disk and NIC) and the e1000 NIC
    "virtio_pci", "virtio_blk", "virtio_net", "e1000",
    # the ACPI power button, read by busybox acpid through an input event device
    "button", "evdev",
)
"""Modules the guest loads when its kernel builds them as modules (``=m`` in the config)."""

_CONFIG_OF_MODULE = {
    "ata_piix": "CONFIG_ATA_PIIX", "ahci": "CONFIG_SATA_AHCI", "sr_mod": "CONFIG_BLK_DEV_SR",
    "cdrom": "CONFIG_CDROM", "isofs": "CONFIG_ISO9660_FS", "virtio_pci": "CONFIG_VIRTIO_PCI",
    "virtio_blk": "CONFIG_VIRTIO_BLK", "virtio_net": "CONFIG_VIRTIO_NET", "e1000": "CONFIG_E1000",
    "button": "CONFIG_ACPI_BUTTON", "evdev": "CONFIG_INPUT_EVDEV",
}
_APT_TIMEOUT = 300.0
_VERSIONED = re.compile(r"^(linux-image-[0-9][A-Za-z0-9.+-]*)\s*(?:\(=\s*([^)\s]+)\s*\))?$")


class KernelPackageError(RuntimeError):
    """The kernel package could not be fetched or lacks what the guest needs."""


@frozen
class KernelFiles:
    """What the guest takes from the kernel package."""

    package: str  # e.g. linux-image-6.1.0-57-amd64
    version: str  # the Debian package version, e.g. 6.1.192-3
    release: str  # the kernel release (modules directory), e.g. 6.1.0-57-amd64
    vmlinuz: bytes
    config: str
    modules: dict[str, bytes]  # module name -> .ko bytes, dependencies included
    load_order: tuple[str, ...]  # the modules, each after what it depends on


def _apt_get_download(package: str, into: Path) -> Path:
    before = set(into.glob("*.deb"))
    try:
        done = subprocess.run(
            # as root apt drops to "_apt" for downloads unless told otherwise (a warning only)
            ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", "--", package],
            cwd=into, capture_output=True, text=True, timeout=_APT_TIMEOUT, check=False,
        )
    except FileNotFoundError as exc:
        raise KernelPackageError("apt-get is needed to fetch Debian's kernel package") from exc
    new = sorted(set(into.glob("*.deb")) - before)
    if done.returncode != 0 or len(new) != 1:
        raise KernelPackageError(
            f"apt-get download {package} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
            " (run apt-get update first?)"
        )
    return new[0]


def _deb_field(deb: Path, name: str) -> str:
    done = subprocess.run(["dpkg-deb", "-f", "--", str(deb), name],
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise KernelPackageError(f"dpkg-deb cannot read {deb.name}: {done.stderr.strip()}")
    return done.stdout.strip()


def download_kernel_package(into: Path) -> Path:
    """Fetch the kernel image package ``linux-image-amd64`` points to; return the ``.deb``."""
    meta = _apt_get_download(KERNEL_PACKAGE, into)
    for alternative in _deb_field(meta, "Depends").replace("|", ",").split(","):
        match = _VERSIONED.match(alternative.strip())
        if match:
            versioned = match.group(1) + (f"={match.group(2)}" if match.group(2) else "")
            return _apt_get_download(versioned, into)
    raise KernelPackageError(f"{KERNEL_PACKAGE} names no linux-image-* package to depend on")


def module_dependencies(ko: bytes) -> tuple[str, ...]:
    """The ``depends=`` of a kernel module, read from its ELF ``.modinfo`` section."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2 or ko[5] != 1:
        raise KernelPackageError("not a little-endian ELF64 kernel module")
    shoff, = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", ko, shoff + index * shentsize)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name_at, offset, size = section(index)
        name = ko[names_at + name_at: ko.index(b"\0", names_at + name_at)]
        if name == b".modinfo":
            for entry in ko[offset: offset + size].split(b"\0"):
                if entry.startswith(b"depends="):
                    value = entry[len(b"depends="):].decode()
                    return tuple(dep for dep in value.split(",") if dep)
            return ()
    return ()


def load_order(wanted: Iterable[str], depends: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """``wanted`` and everything they need, each module after its dependencies."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise KernelPackageError(f"module dependency cycle through {name}")
        if name not in depends:
            raise KernelPackageError(f"module {name} is not in the kernel package")
        visiting.add(name)
        for dep in depends[name]:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return tuple(order)


def _unxz(data: bytes) -> bytes:
    return lzma.LZMADecompressor().decompress(data)  # stops at the stream's end


def _gunzip(data: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)  # ignores trailing bytes


#: the bzImage's compression (config) -> its payload's magic and decompressor
_PAYLOADS: dict[str, tuple[bytes, Callable[[bytes], bytes]]] = {
    "CONFIG_KERNEL_XZ": (b"\xfd7zXZ\x00", _unxz),
    "CONFIG_KERNEL_GZIP": (b"\x1f\x8b\x08", _gunzip),
}


def pvh_kernel(vmlinuz: bytes, config: str) -> bytes | None:
    """The uncompressed ELF kernel inside ``vmlinuz``, when QEMU can boot it directly (PVH).

    Under TCG the bzImage's own decompressor is emulated instruction by
    instruction: unpacking Debian's xz kernel took ~10-20 s of a ~25 s boot. A
    kernel built with ``CONFIG_PVH`` has an ELF note QEMU's ``-kernel`` enters
    directly, so the guest boots from the ELF decompressed here, once. ``None``
    when the kernel has no PVH entry or an unknown compression (boot ``vmlinuz``).
    """
    if not re.search(r"^CONFIG_PVH=y$", config, re.MULTILINE):
        return None
    for option, (magic, decompress) in _PAYLOADS.items():
        if re.search(rf"^{option}=y$", config, re.MULTILINE):
            start = vmlinuz.find(magic)
            if start < 0:
                return None
            try:
                elf = decompress(vmlinuz[start:])
            except (lzma.LZMAError, zlib.error):
                return None
            return elf if elf[:4] == b"\x7fELF" else None
    return None


def _modules_built_as_modules(config: str) -> list[str]:
    """Of :data:`WANTED_MODULES`, those the kernel config builds as modules (``=m``).

    Built-in ones (``=y``) need no loading; one that is neither is missing.
    """
    settings = dict(re.findall(r"^(CONFIG_\w+)=(\S+)$", config, re.MULTILINE))
    wanted = []
    for module in WANTED_MODULES:
        setting = settings.get(_CONFIG_OF_MODULE[module])
        if setting == "m":
            wanted.append(module)
        elif setting != "y":
            raise KernelPackageError(f"the kernel has no {module} ({_CONFIG_OF_MODULE[module]})")
    return wanted


def _module_name(member: str) -> str:
    # The module name is the file name with '-' read as '_' (crc-itu-t.ko is crc_itu_t).
    return Path(member).name.removesuffix(".ko").replace("-", "_")


_PackageRead = tuple[dict[str, bytes], dict[str, tuple[str, ...]], dict[str, bytes]]


def _read_package(deb: Path, keep: set[str] | None) -> _PackageRead:
    """One pass over the package's files: boot files, every module's dependencies, kept modules."""
    boot: dict[str, bytes] = {}
    depends: dict[str, tuple[str, ...]] = {}
    kept: dict[str, bytes] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", "--", str(deb)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                path = member.name.removeprefix("./")
                if path.startswith("boot/vmlinuz-") or path.startswith("boot/config-"):
                    stream = tar.extractfile(member)
                    assert stream is not None
                    boot[path.removeprefix("boot/")] = stream.read()
                elif path.startswith("lib/modules/") and path.endswith(".ko"):
                    stream = tar.extractfile(member)
                    assert stream is not None
                    data = stream.read()
                    name = _module_name(path)
                    depends[name] = module_dependencies(data)
                    if keep is None or name in keep:
                        kept[name] = data
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise KernelPackageError(f"dpkg-deb could not read {deb.name}: {stderr.strip()}")
    return boot, depends, kept


def extract_kernel(deb: Path) -> KernelFiles:
    """Read ``vmlinuz``, the config and the guest's modules (with dependencies) from ``deb``.

    Module bytes are kept only for the wanted modules and their usual
    dependencies; if the kernel grew a new dependency, a second pass fetches it.
    """
    package, version = _deb_field(deb, "Package"), _deb_field(deb, "Version")
    keep = set(WANTED_MODULES) | {"libata", "libahci", "scsi_mod", "scsi_common", "virtio",
                                  "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                                  "net_failover", "failover"}
    boot, depends, kept = _read_package(deb, keep)
    kernels = [name for name in boot if name.startswith("vmlinuz-")]
    if len(kernels) != 1:
        raise KernelPackageError(f"{deb.name} holds {len(kernels)} kernels, not one")
    release = kernels[0].removeprefix("vmlinuz-")
    config = boot.get(f"config-{release}", b"").decode()
    if not config:
        raise KernelPackageError(f"{deb.name} has no config-{release}")
    order = load_order(_modules_built_as_modules(config), depends)
    missing = set(order) - set(kept)
    if missing:
        _, _, more = _read_package(deb, missing)
        kept.update(more)
    return KernelFiles(package=package, version=version, release=release,
                       vmlinuz=boot[kernels[0]], config=config,
                       modules={name: kept[name] for name in order}, load_order=order)
