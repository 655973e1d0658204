"""The demo image: a 512-byte boot sector that proves a VM really runs, built locally.

``anyvirt image demo PATH`` (or :func:`write_image`) writes it: a VM that boots
in seconds with no download, for trying anyvirt out, and the guest anyvirt's
own tests boot. The guest (``boot.S`` beside this module) prints :data:`MARKER`
on COM1, then ``COUNT <n>`` once a second starting at 0 on every cold boot,
stores the same counter in disk sector 1, and powers off when the ACPI power
button is pressed (printing :data:`OFF_MARKER` first). It boots in about 3 s
under KVM (including the software-nested KVM of CI machines, with the default
``qemu64`` CPU) and under TCG, on any x86 platform with BIOS firmware. With its
serial console sent to a file, a script can tell:

* a boot happened (:func:`wait_for_marker`);
* the guest is running, and since when (:func:`wait_for_counter`);
* a snapshot revert or live migration kept RAM (the counter continues instead of
  restarting at 0);
* a graceful shutdown really went through the guest (:data:`OFF_MARKER`, and the
  domain powers itself off);
* the disk is really the guest's disk (:func:`disk_counter`).

Like a real OS, the guest only hears the power button once it is running: a
press during the ~3 s of firmware before :data:`MARKER` is lost (QEMU records
the event only when the guest has enabled it), so wait for the marker before an
ACPI shutdown. A reset or reboot starts the counter at 0 again and prints the
marker again. Consoles: ``<serial type='file'><source path=... append='on'/>``
or a pty with ``<log file=... append='on'/>`` both work with the testbed's
``stdio_handler = "file"`` (no virtlogd); use ``append='on'``, or a migration
destination truncates the file.

:func:`build_image` assembles it with GNU ``as``/``ld`` (Debian package
``binutils``) into a pristine raw image, cached by source hash. That file is a
template: give each VM its own copy (:func:`write_image`), because the guest
writes to its disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

from platformdirs import user_cache_dir

from anyvirt.images import ImageBuilder
from anyvirt.kit import qemu_img

__all__ = [
    "BUILDER",
    "FORMATS",
    "IMAGE_SIZE",
    "MARKER",
    "OFF_MARKER",
    "DemoImageBuilder",
    "DemoImageError",
    "build_image",
    "default_cache_dir",
    "disk_counter",
    "last_counter",
    "read_console",
    "wait_for_counter",
    "wait_for_marker",
    "write_image",
]

MARKER = "ANYVIRT-GUEST-UP"
"""Printed on COM1 once the boot sector runs (after SeaBIOS, ~3 s after start)."""

OFF_MARKER = "ANYVIRT-GUEST-OFF"
"""Printed on COM1 when the guest saw the ACPI power button, just before it powers off."""

IMAGE_SIZE = 1024 * 1024
"""Size of the raw image: boot sector, the counter sector, and room to spare."""

FORMATS = ("raw", "qcow2")
"""Formats :func:`write_image` writes (qcow2 needs ``qemu-img``, Debian package ``qemu-utils``)."""

_SOURCES = ("boot.S", "boot.ld")
_DISK_MAGIC = b"AVCT"
_COUNT_LINE = re.compile(r"^COUNT (\d+)\r?$", re.MULTILINE)
_POLL_INTERVAL = 0.1
_QEMU_IMG_TIMEOUT = 60.0  # a 1 MiB image: seconds at most


class DemoImageError(RuntimeError):
    """The image could not be made (a missing tool, or a source that no longer assembles)."""


def _source_dir() -> Path:
    return Path(str(resources.files(__name__)))


def default_cache_dir() -> Path:
    """Where :func:`build_image` keeps the template unless told otherwise."""
    return Path(user_cache_dir("anyvirt")) / "demo-image"


def _source_hash(src: Path) -> str:
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(name.encode())
        digest.update((src / name).read_bytes())
    return digest.hexdigest()[:16]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise DemoImageError(
            f"GNU {name!r} is needed to build the anyvirt demo image but is not on PATH; "
            "install the Debian/Ubuntu package 'binutils' (apt-get install binutils)"
        )
    return found


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise DemoImageError(
            f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()}"
        )


def build_image(dest_dir: Path | None = None) -> Path:
    """Assemble the guest into ``dest_dir/anyvirt-guest-<hash>.img`` and return its path.

    ``dest_dir`` defaults to :func:`default_cache_dir`. The image is raw,
    :data:`IMAGE_SIZE` bytes: the boot sector, then zeros (so
    :func:`disk_counter` is ``None`` until the guest first writes). An image
    built from the same sources is reused; the build goes through a temporary
    file and an atomic rename, so concurrent builders do not see half a file.
    The result is a template: copy it per VM (:func:`write_image`).
    """
    src = _source_dir()
    dest_dir = default_cache_dir() if dest_dir is None else Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    image = dest_dir / f"anyvirt-guest-{_source_hash(src)}.img"
    if image.is_file() and image.stat().st_size == IMAGE_SIZE:
        return image
    assembler, linker = _tool("as"), _tool("ld")
    with tempfile.TemporaryDirectory(prefix="anyvirt-guest-build-") as tmp:
        obj, boot = Path(tmp) / "boot.o", Path(tmp) / "boot.bin"
        _run([assembler, "--32", "-o", str(obj), str(src / "boot.S")])
        _run([linker, "-m", "elf_i386", "-T", str(src / "boot.ld"),
              "--oformat", "binary", "-o", str(boot), str(obj)])
        sector = boot.read_bytes()
        if len(sector) != 512 or sector[510:] != b"\x55\xaa":
            raise DemoImageError(
                f"boot sector is {len(sector)} bytes or lacks the 0x55AA signature; "
                "the code outgrew 510 bytes"
            )
        fd, partial = tempfile.mkstemp(prefix=".anyvirt-guest-", dir=dest_dir)
        with os.fdopen(fd, "wb") as out:
            out.write(sector)
            out.truncate(IMAGE_SIZE)
        os.replace(partial, image)
    return image


def write_image(dest: Path, fmt: str = "raw", template: Path | None = None) -> Path:
    """Write a VM's own copy of the guest to ``dest`` (``raw``, or a standalone ``qcow2``).

    ``template`` is an image from :func:`build_image`, built (or found in the
    cache) when not given. An existing ``dest`` is replaced. qcow2 goes through
    the kit's qemu-img runner, which raises ``NotSupported`` naming the package
    when qemu-img is missing.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unsupported demo image format {fmt!r} (use {' or '.join(map(repr, FORMATS))})")
    dest = Path(dest).absolute()
    source = build_image() if template is None else Path(template)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "raw":
        shutil.copyfile(source, dest)
    else:
        qemu_img.convert(source, dest, source_format="raw", format="qcow2", timeout=_QEMU_IMG_TIMEOUT)
    return dest


def read_console(path: Path) -> str:
    """The serial log text so far; ``""`` when the file does not exist (yet)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return ""
    return data.decode("ascii", errors="replace")


def last_counter(path: Path) -> int | None:
    """The last complete ``COUNT <n>`` line on the console, or ``None`` if none yet.

    A half-written last line is ignored (only lines ending in a newline count).
    """
    text = read_console(path)
    complete = text[: text.rfind("\n") + 1]
    found = _COUNT_LINE.findall(complete)
    return int(found[-1]) if found else None


def wait_for_marker(path: Path, timeout: float = 30.0, marker: str = MARKER) -> None:
    """Block until ``marker`` (default :data:`MARKER`) is on the console; else :class:`TimeoutError`."""
    deadline = time.monotonic() + timeout
    while marker not in read_console(path):
        if time.monotonic() >= deadline:
            tail = read_console(path)[-300:]
            raise TimeoutError(f"{marker!r} not on console {path} after {timeout}s; tail: {tail!r}")
        time.sleep(_POLL_INTERVAL)


def wait_for_counter(path: Path, minimum: int, timeout: float = 30.0) -> int:
    """Block until the console counter is at least ``minimum``; return the value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = last_counter(path)
        if value is not None and value >= minimum:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"guest counter on {path} is {value}, not >= {minimum}, after {timeout}s"
            )
        time.sleep(_POLL_INTERVAL)


def disk_counter(image_path: Path) -> int | None:
    """The counter the guest last wrote to disk sector 1, or ``None`` if it never wrote.

    Reads a raw image directly; a qcow2 image (including one with a backing
    chain) has its first sectors copied to a temporary raw file with ``qemu-img dd``. Read it
    while the VM is stopped (or accept a value up to a second old).
    """
    image_path = Path(image_path)
    if qemu_img.probe_format(image_path) == "qcow2":
        with tempfile.TemporaryDirectory(prefix="anyvirt-guest-disk-") as tmp:
            raw = Path(tmp) / "disk.raw"
            # Only the first two sectors: cheap even for a large disk.
            qemu_img.run(["dd", "-U", "-f", "qcow2", "-O", "raw", "bs=512", "count=2",
                          f"if={qemu_img.path_arg(image_path)}", f"of={qemu_img.path_arg(raw)}"],
                         what=f"reading the demo guest's counter from {image_path.name}",
                         timeout=_QEMU_IMG_TIMEOUT)
            return _counter_from_raw(raw)
    return _counter_from_raw(image_path)


def _counter_from_raw(raw: Path) -> int | None:
    with open(raw, "rb") as f:
        f.seek(512)
        sector = f.read(8)
    if len(sector) < 8 or sector[:4] != _DISK_MAGIC:
        return None
    return int.from_bytes(sector[4:8], "little")


class DemoImageBuilder:
    """``anyvirt image demo``: the :class:`anyvirt.images.ImageBuilder` of this image."""

    summary = (f"The tiny demo guest: boots in seconds on x86 BIOS, prints {MARKER} on its serial "
               "console, powers off on ACPI (needs binutils).")
    formats = FORMATS

    def write(self, path: Path, fmt: str) -> None:
        write_image(path, fmt)


BUILDER: ImageBuilder = DemoImageBuilder()
"""Registered under the ``anyvirt.images`` entry-point group as ``demo`` (typed: mypy checks the protocol)."""
