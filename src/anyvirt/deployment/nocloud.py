"""cloud-init's NoCloud seed: three files on an ISO 9660 image labelled ``cidata``
(libvirt attaches it as a read-only CD-ROM, VirtualBox as a DVD).

The image is written by pycdlib (pure Python): ISO 9660 names for the
standard's sake, and Joliet and Rock Ridge names so that Linux (which prefers
Rock Ridge) and other readers see the lower-case ``meta-data``, ``user-data``
and ``network-config`` cloud-init looks for. It is deterministic: every time
stamp in it is :data:`SEED_TIME` in UTC, so the same seed gives the same bytes
(a re-created seed can be compared, and an upload resumed or skipped).
"""

from __future__ import annotations

import io
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from attrs import field, frozen

from anyvirt.deployment.cloudconfig import dump_yaml
from anyvirt.deployment.documents import meta_data, network_config, user_data
from anyvirt.deployment.identity import ResolvedIdentity

VOLUME_ID = "cidata"
#: 2000-01-01T00:00:00Z: the one time stamp in every seed image
SEED_TIME = 946684800.0
#: file name on the seed -> its ISO 9660 level 1 name (8.3, upper case)
_ISO_NAMES = {"meta-data": "/META_DAT.;1", "user-data": "/USER_DAT.;1",
              "network-config": "/NETWORK_.;1", "vendor-data": "/VENDOR_D.;1"}


@frozen
class NoCloudSeed:
    """The seed's files as text, as cloud-init reads them."""

    meta_data: str
    user_data: str = field(repr=False)  # may hold password hashes
    network_config: str

    def files(self) -> dict[str, bytes]:
        return {"meta-data": self.meta_data.encode(), "user-data": self.user_data.encode(),
                "network-config": self.network_config.encode()}


def compile_nocloud(resolved: ResolvedIdentity, macs: Sequence[str] = ()) -> NoCloudSeed:
    """The NoCloud seed of one VM whose NICs have ``macs`` (in NIC order; empty: DHCP on all)."""
    return NoCloudSeed(meta_data=dump_yaml(meta_data(resolved)), user_data=user_data(resolved),
                       network_config=dump_yaml(network_config(resolved, macs)))


class _FrozenClock(types.SimpleNamespace):
    """What pycdlib's modules see as ``time`` while a seed is written: every "now" is
    SEED_TIME, every local time is UTC (so the machine's time zone changes nothing)."""


_CLOCK = _FrozenClock(time=lambda: SEED_TIME, localtime=time.gmtime, gmtime=time.gmtime,
                      strftime=time.strftime, mktime=time.mktime, timezone=0, altzone=0, daylight=0)
#: pycdlib reads the clock through its modules' ``time``: one seed at a time swaps it
_CLOCK_LOCK = threading.Lock()


@contextmanager
def _frozen_clock() -> Iterator[None]:
    # imported here: pycdlib takes a third of a second to import, and most uses of
    # anyvirt never write a seed
    import pycdlib.dates
    import pycdlib.headervd
    import pycdlib.pycdlib
    import pycdlib.utils

    modules = (pycdlib.pycdlib, pycdlib.headervd, pycdlib.dates, pycdlib.utils)
    with _CLOCK_LOCK:
        saved = [module.time for module in modules]
        for module in modules:
            module.time = _CLOCK  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module, original in zip(modules, saved, strict=True):
                module.time = original  # type: ignore[attr-defined]


def write_seed_iso(files: Mapping[str, bytes], out: BinaryIO) -> int:
    """Write the ISO image of ``files`` (names from the NoCloud set: meta-data, user-data,
    network-config, vendor-data) to the binary stream ``out``; returns the bytes written.

    pycdlib seeks while it writes: a stream that cannot seek (a pipe, a platform's upload
    stream) gets the image written in memory first, then in order (a seed is tens of KiB).
    """
    unknown = sorted(set(files) - set(_ISO_NAMES))
    if unknown:
        raise ValueError(f"not NoCloud seed files: {unknown}")
    if not out.seekable():
        buffer = io.BytesIO()
        size = write_seed_iso(files, buffer)
        out.write(buffer.getbuffer())
        return size
    start = out.tell()
    with _frozen_clock():
        import pycdlib

        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=1, vol_ident=VOLUME_ID, joliet=3, rock_ridge="1.09")
        for name in sorted(files):
            data = files[name]
            iso.add_fp(io.BytesIO(data), len(data), _ISO_NAMES[name], rr_name=name,
                       joliet_path=f"/{name}")
        iso.write_fp(out)
        iso.close()
    return out.tell() - start


def seed_iso(seed: NoCloudSeed) -> bytes:
    """The seed as one ISO image in memory (a seed is tens of KiB)."""
    buffer = io.BytesIO()
    write_seed_iso(seed.files(), buffer)
    return buffer.getvalue()


__all__ = ["SEED_TIME", "VOLUME_ID", "NoCloudSeed", "compile_nocloud", "seed_iso", "write_seed_iso"]
