"""A raw view of any image, without a copy: for streaming a qcow2 or VMDK where raw bytes go.

Platforms that take disks as raw bytes (a vSphere flat extent over HTTPS)
used to need ``qemu-img convert`` into a temporary raw file first: a second
full copy of the disk on the local disk, and a stage that must finish before
the upload can start. ``qemu-storage-daemon`` can instead export the image
through FUSE as a read-only regular file holding its guest-visible bytes,
decoded on demand as the upload reads it (holes answer ``SEEK_DATA``).

Only for images already checked by :func:`anyvirt.kit.qemu_img.inspect_untrusted`:
the format is given, never probed, and the qcow2 backing chain is cut
(``"backing": null``), so the daemon opens the one file and nothing else.
The block graph is passed as JSON, so no file name is ever parsed as options.
Where there is no daemon or no FUSE, :func:`raw_view` raises ``NotSupported``
and the caller converts as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from anyvirt.errors import NotSupported, TaskFailed
from anyvirt.kit import qemu_img
from anyvirt.model import Capability
from anyvirt.tasks import Job

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: the view's read-ahead: a reader's pages come in requests this big rather than the
#: kernel's default 128 KiB (each request is a round trip through the daemon, and through
#: an NBD server behind it; measured: 1 MiB requests took 0.6x the wall of 128 KiB ones)
READ_AHEAD_KIB = 1024
#: glibc's malloc for the daemon: keep its 1 MiB read buffers on the heap. By default
#: each one is mapped and unmapped again per read (above the 128 KiB mmap threshold), so
#: every read of the view paid 256 page faults in the daemon
DAEMON_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024 * 1024),
                 "MALLOC_TRIM_THRESHOLD_": str(256 * 1024 * 1024)}


def available() -> bool:
    return shutil.which("qemu-storage-daemon") is not None and os.access("/dev/fuse", os.R_OK | os.W_OK)


def _graph(image: str, fmt: str, mountpoint: Path) -> list[str]:
    file_node = {"driver": "file", "node-name": "file", "filename": image, "read-only": True}
    image_node: dict[str, object] = {"driver": qemu_img.check_format(fmt), "node-name": "image",
                                     "file": "file", "read-only": True}
    if fmt == "qcow2":
        image_node["backing"] = None  # checked to have none; never follow one
    export = {"type": "fuse", "id": "view", "node-name": "image", "mountpoint": str(mountpoint),
              "writable": False}
    return ["--blockdev", json.dumps(file_node), "--blockdev", json.dumps(image_node),
            "--export", json.dumps(export)]


def _mounted(mountpoint: Path) -> bool:
    target = os.fsencode(str(mountpoint))
    with open("/proc/self/mounts", "rb") as mounts:
        return any(line.split()[1:2] == [target] for line in mounts)


@contextlib.contextmanager
def raw_view(path: str | os.PathLike[str], format: str, size: int, *,
             job: Job | None = None) -> Iterator[Path]:
    """Yield a path whose content is the raw guest bytes of image ``path`` (``size`` of
    them), for as long as the block lasts; the daemon is stopped and the mount gone after.
    Raises ``NotSupported`` where this machine cannot do it."""
    image = qemu_img.path_arg(path)
    with _view(lambda mountpoint: _graph(image, format, mountpoint), size, job) as view:
        yield view


@contextlib.contextmanager
def raw_view_of_nbd_chain(socket_path: str | os.PathLike[str],
                          layers: Sequence[tuple[str, str]], size: int, *,
                          job: Job | None = None) -> Iterator[Path]:
    """:func:`raw_view` of a disk whose image files are NBD exports on ``socket_path``:
    ``layers`` is ``(export name, format)`` from the top (the disk) down to its base, each
    layer's backing file the next one (given here, never read from the image), so a
    linked clone's chain is flattened as it is read. The formats come from the caller's
    trusted record (a storage pool), never from probing. While the view lasts, a
    conversion by the kit's qemu-img that reads a one-layer view as raw reads the export
    directly (:func:`anyvirt.kit.qemu_img.viewing`): the same bytes, without the daemon's
    hop."""
    image = qemu_img.NbdImage(socket_path=os.fspath(socket_path), layers=tuple(layers))

    def graph(mountpoint: Path) -> list[str]:
        args = [arg for node in image.nodes() for arg in ("--blockdev", json.dumps(node))]
        export = {"type": "fuse", "id": "view", "node-name": "image0",
                  "mountpoint": str(mountpoint), "writable": False}
        return [*args, "--export", json.dumps(export)]

    with _view(graph, size, job) as view, qemu_img.viewing(view, image):
        yield view


@contextlib.contextmanager
def _view(graph: Callable[[Path], list[str]], size: int, job: Job | None) -> Iterator[Path]:
    if not available():
        raise NotSupported("this host", Capability.VM_CREATE_FROM_IMAGE,
                           "a raw image view needs qemu-storage-daemon and /dev/fuse")
    with tempfile.TemporaryDirectory(prefix="anyvirt-view-") as tmp:
        mountpoint = Path(tmp) / "raw"
        mountpoint.touch(mode=0o600)
        proc = subprocess.Popen(  # an argument list: no shell
            ["qemu-storage-daemon", *graph(mountpoint)], env={**os.environ, **DAEMON_MALLOC},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for_mount(proc, mountpoint, size, job)
            yield mountpoint
        finally:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
            if _mounted(mountpoint):  # the daemon unmounts on exit; a killed one may not
                subprocess.run(["umount", "-l", str(mountpoint)], check=False,
                               capture_output=True)


def _wait_for_mount(proc: subprocess.Popen[bytes], mountpoint: Path, size: int,
                    job: Job | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read(600).decode("utf-8", "replace").strip() if proc.stderr else ""
            if "fuse" in err.lower():
                raise NotSupported("this host", Capability.VM_CREATE_FROM_IMAGE,
                                   f"a raw image view needs FUSE: {err}")
            raise TaskFailed(f"qemu-storage-daemon could not open the image: {err}")
        if _mounted(mountpoint):
            found = mountpoint.stat()
            if found.st_size != size:
                raise TaskFailed(f"the raw view holds {found.st_size} bytes, the image {size}")
            _widen_read_ahead(found.st_dev)
            return
        if job is not None:
            job.check()
        time.sleep(0.02)
    raise TaskFailed(f"qemu-storage-daemon did not export the image within {START_TIMEOUT:g} s")


def _widen_read_ahead(device: int) -> None:
    """Raise the mount's read-ahead (its own backing device: nothing else reads through
    it); best effort: only root may, and the view works without."""
    setting = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    with contextlib.suppress(OSError):
        setting.write_text(str(READ_AHEAD_KIB))


__all__ = ["available", "raw_view", "raw_view_of_nbd_chain"]
