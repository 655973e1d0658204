"""The one ``qemu-img`` runner: every backend and the migration code call qemu-img here.

Why one place: qemu-img is both the most useful and the most dangerous tool a
backend runs. An image file is data from somewhere else (an archive, a
download, a guest's own disk), and qemu-img follows what the data says: a
qcow2 backing file, a VMDK extent, a qcow2 external data file, a ``json:``
or ``nbd:`` name all make it open another file or a network connection. So:

- arguments are lists (never a shell), paths come after ``--`` and are made
  absolute, so neither a leading ``-`` nor a ``proto:`` prefix is read as
  anything but a file name;
- formats are allow-listed (:data:`FORMATS`) and always passed with ``-f``;
  an untrusted image is probed once, by :func:`probe_format` (our own magic
  check, no qemu-img), never by qemu-img's probe (a raw guest disk that
  starts with a qcow2 header must stay raw);
- :func:`inspect_untrusted` refuses, before qemu-img opens anything, an image
  with a backing file, an external extent, a data file or a ``json:`` name,
  unless the caller made that backing itself (``trusted_backing=``);
- every call has a timeout, long ones report ``-p`` progress to the Job and
  stop on cancel; failures are ``InvalidSpec`` (the image is bad) or
  ``TaskFailed`` (the work failed), with qemu-img's own stderr.

The one block graph qemu-img is ever given as a ``json:`` name is one anyvirt built:
a raw view of NBD exports (:mod:`anyvirt.kit.raw_view`) is recorded here, in this
process only, with the exports it shows (:class:`NbdImage`), and a conversion that reads
that view as raw reads the exports directly instead, with several requests in flight,
rather than through the view's daemon and FUSE one request at a time. Nothing in an
image, a path or a user's input adds to the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
from attrs import frozen

from anyvirt.errors import AnyvirtError, Cancelled, InvalidSpec, NotSupported, TaskFailed, Timeout
from anyvirt.kit.view_records import ViewRecord
from anyvirt.model import IMAGE_FORMATS
from anyvirt.tasks import Job

#: The image formats anyvirt reads and writes: the model's, so ``DiskSpec.format`` is
#: checked against the same list (qemu-img knows many more; none is a disk file a user
#: would hand over).
FORMATS: tuple[str, ...] = IMAGE_FORMATS

INFO_TIMEOUT = 60.0  # reading a header: seconds even on a slow disk
CREATE_TIMEOUT = 120.0
CONVERT_TIMEOUT = 3600.0  # copies whole disks; a Job's deadline bounds it further
MAP_TIMEOUT = 600.0  # reads metadata only, but a huge fragmented image has much of it
_STDERR_KEPT = 600  # characters of qemu-img's complaint kept in an error message
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_OPTION_KEY = re.compile(r"^[a-z][a-z0-9_.-]*$")


@frozen
class ImageInfo:
    """What ``qemu-img info`` says about one image (sizes in bytes)."""

    path: str
    format: str
    virtual_size: int
    actual_size: int | None = None
    backing_file: str | None = None  # as qemu-img resolves it (``full-backing-filename``)
    backing_format: str | None = None
    backing_chain: tuple[ImageInfo, ...] = ()  # the images below, when asked for
    extents: tuple[str, ...] = ()  # VMDK extent files (a monolithic sparse VMDK lists itself)
    data_file: str | None = None  # a qcow2 external data file
    cluster_size: int | None = None
    dirty: bool = False
    encrypted: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageInfo:
        specific = (data.get("format-specific") or {}).get("data") or {}
        return cls(
            path=str(data.get("filename", "")),
            format=str(data.get("format", "")),
            virtual_size=int(data.get("virtual-size", 0)),
            actual_size=_int_or_none(data.get("actual-size")),
            backing_file=data.get("full-backing-filename") or data.get("backing-filename"),
            backing_format=data.get("backing-filename-format"),
            extents=tuple(str(e.get("filename", "")) for e in specific.get("extents", ())),
            data_file=specific.get("data-file"),
            cluster_size=_int_or_none(data.get("cluster-size")),
            dirty=bool(data.get("dirty-flag", False)),
            encrypted=bool(data.get("encrypted", False)),
        )


@frozen
class Measure:
    """``qemu-img measure``: bytes a conversion needs now, and fully allocated."""

    required: int
    fully_allocated: int


# ------------------------------------------------------------------ the binary
#: the condition, in the support matrix, of what converts images with qemu-img
CONDITION = "qemu-img installed where anyvirt runs"


def available() -> bool:
    """Whether qemu-img is installed (the memory backend can do without it)."""
    return shutil.which("qemu-img") is not None


def binary() -> str:
    found = shutil.which("qemu-img")
    if found is None:
        raise NotSupported("this host", "qemu-img", "qemu-img is needed (apt-get install qemu-utils)")
    return found


@frozen
class NbdImage:
    """A disk as NBD exports on a private UNIX socket: ``layers`` are ``(export name,
    format)`` from the top (the disk) down to its base, each layer's backing the next one
    (given here, never read from an image), the formats from the caller's trusted record."""

    socket_path: str
    layers: tuple[tuple[str, str], ...]

    def __attrs_post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a chain needs at least one layer")
        for index, (_name, fmt) in enumerate(self.layers):
            check_format(fmt)
            if fmt != "qcow2" and index + 1 < len(self.layers):
                raise ValueError(f"layer {index} ({fmt}) cannot have a backing file")

    def nodes(self) -> list[dict[str, Any]]:
        """The block graph as QEMU's blockdev nodes, read-only, the base first (a backing
        must exist before its user): ``file{n}`` reads export ``n``, ``image{n}`` decodes it;
        the disk is ``image0``."""
        nodes: list[dict[str, Any]] = []
        for index in reversed(range(len(self.layers))):
            fmt = self.layers[index][1]
            image: dict[str, Any] = {"driver": fmt, "node-name": f"image{index}",
                                     "file": f"file{index}", "read-only": True}
            if fmt == "qcow2":
                image["backing"] = f"image{index + 1}" if index + 1 < len(self.layers) else None
            nodes += [{**self._export(index), "node-name": f"file{index}"}, image]
        return nodes

    def json_name(self) -> str | None:
        """The disk as one ``json:`` name qemu-img opens, or None for a chain: qemu opens an
        inline backing together with the file name the top layer's header names, and
        refuses that pair for an NBD export."""
        if len(self.layers) != 1:
            return None
        fmt = self.layers[0][1]
        spec: dict[str, Any] = {"driver": fmt, "read-only": True, "file": self._export(0)}
        if fmt == "qcow2":
            spec["backing"] = None
        return "json:" + json.dumps(spec)

    def _export(self, index: int) -> dict[str, Any]:
        return {"driver": "nbd", "export": self.layers[index][0], "read-only": True,
                "server": {"type": "unix", "path": self.socket_path}}


#: one-layer raw views anyvirt made of NBD exports, while they last
VIEWED: ViewRecord[NbdImage] = ViewRecord()


@contextlib.contextmanager
def viewing(path: str | os.PathLike[str], image: NbdImage) -> Iterator[None]:
    """While the block lasts, ``path`` (a raw view anyvirt made of ``image``: the same
    guest bytes) is read by qemu-img from ``image`` itself."""
    with VIEWED.recorded_one(path_arg(path), image):
        yield


def _source(path: str | os.PathLike[str], fmt: str) -> list[str]:
    """The arguments naming an image to read: ``-f FORMAT -- PATH``, or the NBD graph a
    recorded raw view shows (its format is in the graph) when it is read as raw."""
    src = path_arg(path)
    viewed = VIEWED.get(src) if check_format(fmt) == "raw" else None
    direct = viewed.json_name() if viewed is not None else None
    if direct is None:
        return ["-f", fmt, "--", src]
    return ["--", direct]


#: bytes of a qcow2 header that say which other files it opens (version 3: 104)
QCOW2_HEADER = 104
_QCOW2_EXTERNAL_DATA = 1 << 2  # incompatible feature: the guest data lives in another file


def qcow2_data_file_named(header: bytes) -> bool:
    """Whether a qcow2 ``header`` (its first :data:`QCOW2_HEADER` bytes) says its data
    lives in an external data file: QEMU would open that file, by the name the image
    gives, on this machine. For layers served from afar, whose header nobody here
    checked with qemu-img; anything shorter or not a qcow2 v3 names no data file."""
    if len(header) < QCOW2_HEADER or not header.startswith(b"QFI\xfb"):
        return False
    version, = struct.unpack_from(">I", header, 4)
    if version < 3:
        return False
    incompatible, = struct.unpack_from(">Q", header, 72)
    return bool(incompatible & _QCOW2_EXTERNAL_DATA)


# ------------------------------------------------------------------ arguments
def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidSpec(f"image format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def path_arg(path: str | os.PathLike[str]) -> str:
    """A path as qemu-img must see it: absolute, so ``-x`` is no option and ``nbd:x`` no protocol."""
    text = os.fspath(path)
    if not text:
        raise InvalidSpec("an image path must not be empty")
    if "\0" in text or "\n" in text:
        raise InvalidSpec(f"image path {text!r} contains a control character")
    return os.path.abspath(text)


def options_arg(options: Mapping[str, str | int | bool]) -> list[str]:
    """``-o key=value,...``; commas in values doubled, as qemu's option parser wants."""
    if not options:
        return []
    parts = []
    for key, value in options.items():
        if not _OPTION_KEY.match(key):
            raise InvalidSpec(f"qemu-img option name {key!r} is not valid")
        text = ("on" if value else "off") if isinstance(value, bool) else str(value)
        if "\n" in text or "\0" in text:
            raise InvalidSpec(f"qemu-img option {key} has a control character")
        parts.append(f"{key}={text.replace(',', ',,')}")
    return ["-o", ",".join(parts)]


# ------------------------------------------------------------------ running
def run(
    args: Sequence[str],
    *,
    what: str,
    timeout: float,
    job: Job | None = None,
    error: type[AnyvirtError] = TaskFailed,
    ok_codes: Iterable[int] = (0,),
    span: tuple[float, float] = (0.0, 100.0),
    on_output: Callable[[bytes], None] | None = None,
) -> tuple[int, str]:
    """Run ``qemu-img *args``; returns (exit code, stdout). Bounded by ``timeout`` and
    the job's deadline; a cancelled job kills qemu-img. ``-p`` progress goes to the job,
    mapped into ``span`` of its percent (a conversion that is one step of several).
    ``on_output`` takes stdout chunk by chunk as it comes, instead of it being kept
    (output as long as the image is big: ``map``); stdout is then returned empty."""
    limit = timeout if job is None else (job.remaining(timeout) or 0.0)
    if job is not None:
        job.check()
    deadline = time.monotonic() + limit
    try:
        proc = subprocess.Popen(  # an argument list: no shell ever
            [binary(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise error(f"{what}: qemu-img could not start: {exc}") from exc
    out, err = bytearray(), bytearray()
    try:
        _pump(proc, out, err, deadline, job, what, span, on_output)
        # the pipes are closed; the exit itself is bounded too
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise Timeout(f"{what}: qemu-img did not finish within {limit:g} s") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    if code not in tuple(ok_codes):
        message = err.decode("utf-8", "replace").strip()[:_STDERR_KEPT] or f"exit code {code}"
        raise error(f"{what}: {message}")
    return code, out.decode("utf-8", "replace")


def _pump(proc: subprocess.Popen[bytes], out: bytearray, err: bytearray, deadline: float,
          job: Job | None, what: str, span: tuple[float, float],
          on_output: Callable[[bytes], None] | None = None) -> None:
    """Read both pipes until qemu-img closes them, watching the clock and the job."""
    assert proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"{what}: qemu-img did not finish in time (it was stopped)")
            if job is not None and job.cancelled:
                raise Cancelled(f"{what} was cancelled")
            for key, _ in sel.select(min(left, 0.2)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buffer: bytearray = key.data
                if buffer is err:
                    buffer.extend(chunk[: max(0, 65536 - len(err))])  # bounded
                    continue
                if on_output is not None:
                    on_output(chunk)
                    continue
                found = _PROGRESS.findall(chunk)
                if found and job is not None:
                    low, high = span
                    job.progress(low + (high - low) * float(found[-1]) / 100.0, what)
                    continue  # progress lines are not output anyone reads
                buffer.extend(chunk)


# ------------------------------------------------------------------ reading images
def info(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    backing_chain: bool = False,
    force_share: bool = False,
    timeout: float = INFO_TIMEOUT,
    job: Job | None = None,
) -> ImageInfo:
    """``qemu-img info`` of an image anyvirt made or already inspected.

    Without ``format`` qemu-img probes: only for images we wrote ourselves.
    ``backing_chain`` opens every backing file (fills ``backing_chain``).
    ``force_share`` (``-U``) reads an image a running VM holds.
    """
    args = ["info", "--output=json"]
    if format is not None:
        args += ["-f", check_format(format)]
    if backing_chain:
        args.append("--backing-chain")
    if force_share:
        args.append("-U")
    target = path_arg(path)
    _, out = run([*args, "--", target], what=f"reading image {target}", timeout=timeout,
                 job=job, error=InvalidSpec)
    try:
        data = json.loads(out)
    except json.JSONDecodeError as exc:
        raise InvalidSpec(f"qemu-img info of {target} gave no JSON") from exc
    if isinstance(data, list):
        chain = [ImageInfo.from_json(d) for d in data]
        if not chain:
            raise InvalidSpec(f"qemu-img info of {target} listed no image")
        return attrs.evolve(chain[0], backing_chain=tuple(chain[1:]))
    return ImageInfo.from_json(data)


def probe_format(path: str | os.PathLike[str]) -> str:
    """The format of an image file by its magic bytes, read by us, not by qemu-img.

    Anything unrecognised is raw, as qemu-img would say. The result may be a
    format outside :data:`FORMATS` (``qcow`` v1, ``vmdk3``); callers check.
    """
    with open(path_arg(path), "rb") as handle:
        head = handle.read(4096)
        size = handle.seek(0, os.SEEK_END)
        tail = b""
        if size >= 512:
            handle.seek(size - 512)
            tail = handle.read(512)
    if head.startswith(b"QFI\xfb"):
        version = struct.unpack(">I", head[4:8])[0] if len(head) >= 8 else 0
        return "qcow2" if version in (2, 3) else "qcow"
    if head.startswith(b"KDMV"):
        return "vmdk"
    if head.startswith(b"COWD"):
        return "vmdk3"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix") or tail.startswith(b"conectix"):
        return "vpc"
    if len(head) >= 68 and struct.unpack("<I", head[64:68])[0] == 0xBEDA107F:
        return "vdi"
    if _looks_like_vmdk_descriptor(head):
        return "vmdk"
    return "raw"


def _looks_like_vmdk_descriptor(head: bytes) -> bool:
    """A text VMDK descriptor, as qemu's own probe would take it (a ``version=`` line)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return False
    return "# Disk DescriptorFile" in text or bool(re.search(r"^\s*version\s*=", text, re.M))


def inspect_untrusted(
    path: str | os.PathLike[str],
    allowed_formats: Iterable[str] = FORMATS,
    *,
    format: str | None = None,
    trusted_backing: str | os.PathLike[str] | None = None,
    timeout: float = INFO_TIMEOUT,
    job: Job | None = None,
) -> ImageInfo:
    """Read an image that came from elsewhere, refusing anything that points outside it.

    The format is ``format`` (what a manifest declared) or our own probe, and
    must be in ``allowed_formats``. Refused with ``InvalidSpec``, before
    qemu-img opens the file: a backing file (unless it is ``trusted_backing``,
    one the caller made, with its format recorded), an external VMDK extent,
    a qcow2 data file, a differencing VHD/VDI, a ``json:`` name. Pass the
    returned ``format`` to every later qemu-img call.
    """
    allowed = tuple(allowed_formats)
    for fmt in allowed:
        check_format(fmt)
    text = os.fspath(path)
    if text.startswith("json:"):
        raise InvalidSpec(f"{text[:40]!r}...: a json: name is a qemu block spec, not an image file")
    target = path_arg(text)
    if not os.path.isfile(target):
        raise InvalidSpec(f"disk image {text!r} is not a file")
    fmt = format if format is not None else probe_format(target)
    if fmt not in allowed:
        raise InvalidSpec(f"disk image {text!r} is {fmt}; expected {' or '.join(allowed)}")
    trusted = None if trusted_backing is None else os.path.realpath(path_arg(trusted_backing))
    _check_header(target, fmt, trusted)
    found = info(target, format=fmt, timeout=timeout, job=job)
    _check_info(found, target, fmt, trusted)
    return found


def _check_header(target: str, fmt: str, trusted: str | None) -> None:
    """What qemu-img would open besides the file itself, read from the header by us."""
    with open(target, "rb") as handle:
        head = handle.read(4096)
        if fmt == "qcow2":
            _check_qcow2(handle, head, target, trusted)
        elif fmt == "vmdk":
            _check_vmdk(handle, head, target)
        elif fmt == "vpc":
            size = handle.seek(0, os.SEEK_END)
            footer = head[:512] if head.startswith(b"conectix") else _read_at(handle, size - 512, 512)
            if len(footer) >= 64 and struct.unpack(">I", footer[60:64])[0] == 4:
                raise InvalidSpec(f"{target} is a differencing VHD: it needs its parent disk")
        elif fmt == "vdi" and len(head) >= 80 and struct.unpack("<I", head[76:80])[0] in (3, 4):
            raise InvalidSpec(f"{target} is a differencing VDI: it needs its parent disk")


def _read_at(handle: Any, offset: int, size: int) -> bytes:
    handle.seek(max(0, offset))
    data: bytes = handle.read(size)
    return data


def _check_qcow2(handle: Any, head: bytes, target: str, trusted: str | None) -> None:
    if len(head) < 72:
        raise InvalidSpec(f"{target} is too short for a qcow2 image")
    backing_offset, backing_size = struct.unpack(">QI", head[8:20])
    version = struct.unpack(">I", head[4:8])[0]
    if version >= 3 and len(head) >= 80 and struct.unpack(">Q", head[72:80])[0] & 0x4:
        raise InvalidSpec(f"{target} keeps its data in an external data file: refused")
    if not backing_offset:
        return
    name = _read_at(handle, backing_offset, min(backing_size, 1023)).decode("utf-8", "replace")
    if trusted is not None and not name.startswith("json:") and ":" not in name.split("/")[0]:
        resolved = name if os.path.isabs(name) else os.path.join(os.path.dirname(target), name)
        if os.path.realpath(resolved) == trusted:
            return
    raise InvalidSpec(f"{target} has a backing file ({name[:80]!r}): an image that points at "
                      "other files or servers is not accepted")


def _check_vmdk(handle: Any, head: bytes, target: str) -> None:
    if not head.startswith(b"KDMV"):
        # a text descriptor: its disk lives in extent files next to it (or anywhere)
        raise InvalidSpec(f"{target} is a VMDK descriptor whose data lives in other (extent) "
                          "files: give a single-file (monolithicSparse or streamOptimized) VMDK")
    _, _, capacity, _, desc_offset, desc_size = struct.unpack("<IIQQQQ", head[4:44])
    if capacity == 0 and desc_offset:
        raise InvalidSpec(f"{target} is a VMDK whose descriptor lists other extent files")
    if desc_offset:
        desc = _read_at(handle, desc_offset * 512, min(desc_size, 128) * 512)
        text = desc.split(b"\0", 1)[0].decode("ascii", "replace")
        parent = re.search(r'^\s*parentFileNameHint\s*=\s*"?([^"\n]*)', text, re.M)
        if parent and parent.group(1).strip():
            raise InvalidSpec(f"{target} is a VMDK delta disk with a parent: refused")


def _check_info(found: ImageInfo, target: str, fmt: str, trusted: str | None) -> None:
    """Second line of defence: what qemu-img reports must agree with the header checks."""
    if found.format != fmt:
        raise InvalidSpec(f"{target}: qemu-img reads it as {found.format}, not {fmt}")
    if found.path.startswith("json:"):
        raise InvalidSpec(f"{target}: qemu-img names it with a json: spec: refused")
    if found.data_file:
        raise InvalidSpec(f"{target} keeps its data in an external data file: refused")
    for extent in found.extents:
        resolved = extent if os.path.isabs(extent) else os.path.join(os.path.dirname(target), extent)
        if os.path.realpath(resolved) != os.path.realpath(target):
            raise InvalidSpec(f"{target} has an external extent {extent!r}: refused")
    if found.backing_file is not None:
        if trusted is None or os.path.realpath(found.backing_file) != trusted:
            raise InvalidSpec(f"{target} has a backing file: refused")
        if found.backing_format not in FORMATS:
            # without a recorded format, every later open would make qemu-img probe it
            raise InvalidSpec(f"{target}: the format of its backing file is not recorded")


# ------------------------------------------------------------------ writing images
def create(
    path: str | os.PathLike[str],
    format: str,
    size: int | None = None,
    *,
    backing: str | os.PathLike[str] | None = None,
    backing_format: str | None = None,
    options: Mapping[str, str | int | bool] | None = None,
    timeout: float = CREATE_TIMEOUT,
    job: Job | None = None,
) -> None:
    """A new image; with ``backing`` a linked clone (copy-on-write overlay) of it."""
    args = ["create", "-q", "-f", check_format(format)]
    if backing is not None:
        if backing_format is None:
            raise InvalidSpec("a backing file needs its format (backing_format=)")
        args += ["-b", path_arg(backing), "-F", check_format(backing_format)]
    elif size is None:
        raise InvalidSpec("a new image without a backing file needs a size")
    args += options_arg(options or {})
    target = path_arg(path)
    args += ["--", target]
    if size is not None:
        if size <= 0:
            raise InvalidSpec(f"image size must be positive, not {size}")
        args.append(str(int(size)))
    run(args, what=f"creating image {target}", timeout=timeout, job=job)


def resize(path: str | os.PathLike[str], format: str, size: int, *,
           timeout: float = CREATE_TIMEOUT, job: Job | None = None) -> None:
    """Grow an image to ``size`` bytes (qemu-img refuses to shrink without --shrink)."""
    if size <= 0:
        raise InvalidSpec(f"image size must be positive, not {size}")
    target = path_arg(path)
    run(["resize", "-q", "-f", check_format(format), "--", target, str(int(size))],
        what=f"resizing image {target}", timeout=timeout, job=job)


def convert(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    source_format: str,
    format: str,
    options: Mapping[str, str | int | bool] | None = None,
    force_share: bool = False,
    timeout: float = CONVERT_TIMEOUT,
    job: Job | None = None,
    span: tuple[float, float] = (0.0, 100.0),
) -> None:
    """Copy ``source`` into a new image ``destination`` of ``format`` (sparse; progress to
    ``job`` within ``span``). A partial destination is removed when the conversion fails."""
    args = ["convert", "-p" if job is not None else "-q", "-O", check_format(format)]
    if force_share:
        args.append("-U")
    args += options_arg(options or {})
    src, dst = path_arg(source), path_arg(destination)
    existed = os.path.lexists(dst)
    try:
        run([*args, *_source(src, source_format), dst],
            what=f"converting {os.path.basename(src)} to {format}",
            timeout=timeout, job=job, span=span)
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                os.unlink(dst)
        raise


def compare(
    first: str | os.PathLike[str],
    second: str | os.PathLike[str],
    *,
    first_format: str,
    second_format: str,
    strict: bool = False,
    force_share: bool = False,
    timeout: float = CONVERT_TIMEOUT,
    job: Job | None = None,
) -> bool:
    """Whether two images hold the same guest-visible bytes (``strict``: sizes equal too)."""
    args = ["compare", "-p" if job is not None else "-q",
            "-f", check_format(first_format), "-F", check_format(second_format)]
    if strict:
        args.append("-s")
    if force_share:
        args.append("-U")
    a, b = path_arg(first), path_arg(second)
    code, _ = run([*args, "--", a, b], what=f"comparing {a} and {b}", timeout=timeout, job=job,
                  ok_codes=(0, 1))
    return code == 0


def measure(
    source: str | os.PathLike[str],
    *,
    source_format: str,
    format: str,
    timeout: float = INFO_TIMEOUT,
    job: Job | None = None,
) -> Measure:
    """How many bytes converting ``source`` to ``format`` needs (to check space first)."""
    src = path_arg(source)
    _, out = run(["measure", "--output=json", "-f", check_format(source_format),
                  "-O", check_format(format), "--", src],
                 what=f"measuring {src}", timeout=timeout, job=job, error=InvalidSpec)
    try:
        data = json.loads(out)
        return Measure(required=int(data["required"]), fully_allocated=int(data["fully-allocated"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidSpec(f"qemu-img measure of {src} gave no sizes") from exc


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


__all__ = [
    "FORMATS",
    "QCOW2_HEADER",
    "ImageInfo",
    "Measure",
    "NbdImage",
    "available",
    "binary",
    "check_format",
    "compare",
    "convert",
    "create",
    "info",
    "inspect_untrusted",
    "measure",
    "probe_format",
    "qcow2_data_file_named",
    "resize",
    "run",
    "viewing",
]
