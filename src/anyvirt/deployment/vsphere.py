"""vSphere: cloud-init's VMware datasource reads the seed from guestinfo variables,
which a VM's ``extraConfig`` sets (``guestinfo.metadata``, ``guestinfo.userdata``,
each with its ``.encoding``).

Both documents are gzipped (with no time stamp or file name, so the bytes are
the same every time) and base64-encoded (``gzip+base64``). Meta-data is JSON,
carrying the network config (version 2) under ``network`` as the datasource
expects.

Size: each guestinfo value is refused above :data:`GUESTINFO_VALUE_MAX` bytes
as encoded. 64 KiB is the limit of one message between guest and VMX in
open-vm-tools (``GUESTMSG_MAX_IN_SIZE`` in ``guest_msg_def.h``), the bound
VMware's own vm-operator holds cloud-init data to; guestinfo values are also
stored in the .vmx file, which is limited to 1 MiB by default
(``tools.setInfo.sizeLimit``), a limit four 64 KiB values stay well within.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Sequence

from anyvirt.deployment.documents import meta_data, network_config, user_data
from anyvirt.deployment.identity import ResolvedIdentity
from anyvirt.validation import invalid

ENCODING = "gzip+base64"
GUESTINFO_VALUE_MAX = 64 * 1024
KEYS = ("guestinfo.metadata", "guestinfo.metadata.encoding", "guestinfo.userdata",
        "guestinfo.userdata.encoding")


def encode(text: str) -> str:
    """gzip (deterministic: mtime 0, no name) then base64, as the datasource decodes it."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def _sized(key: str, value: str) -> str:
    if len(value) > GUESTINFO_VALUE_MAX:
        raise invalid("user_data" if key.endswith("userdata") else "identity", "size",
                      f"{key} would be {len(value)} bytes once gzipped and base64-encoded; vSphere's "
                      f"guestinfo values are limited to {GUESTINFO_VALUE_MAX} bytes")
    return value


def compile_vsphere(resolved: ResolvedIdentity, macs: Sequence[str] = ()) -> dict[str, str]:
    """The extraConfig key/values of one VM whose NICs have ``macs`` (in NIC order)."""
    metadata = {**meta_data(resolved), "network": network_config(resolved, macs)}
    text = json.dumps(metadata, sort_keys=True, ensure_ascii=True)
    return {
        "guestinfo.metadata": _sized("guestinfo.metadata", encode(text)),
        "guestinfo.metadata.encoding": ENCODING,
        "guestinfo.userdata": _sized("guestinfo.userdata", encode(user_data(resolved))),
        "guestinfo.userdata.encoding": ENCODING,
    }


__all__ = ["ENCODING", "GUESTINFO_VALUE_MAX", "KEYS", "compile_vsphere", "encode"]
