"""The local default for ``anyvirt.connect()`` with no URI.

The system daemon when one answers (``qemu:///system``); otherwise QEMU in
libvirt's daemon-less embedded mode, ``qemu:///embed?root=DIR`` with DIR in
the user's data directory. Embedded mode runs the QEMU driver inside this
process: it needs libvirt's event loop (started by the connection module),
has no storage or network drivers (disks are qcow2 files managed with
``qemu-img`` in ``DIR/images``) and keeps its VMs while the process lives.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import libvirt
import platformdirs

from anyvirt.errors import ConnectionFailed, InvalidSpec
from anyvirt_libvirt.connection import ensure_event_loop
from anyvirt_libvirt.errors import SOCKET_PATH_MAX

SYSTEM_SOCKET = Path("/run/libvirt/libvirt-sock")
SYSTEM_URI = "qemu:///system"


def embed_root() -> Path:
    return Path(platformdirs.user_data_dir("anyvirt")) / "qemu-embed"


#: QEMU runs as the caller here, so there is no owner to remember and restore; the
#: XATTRs libvirt would keep for it on the images only earn stderr warnings
#: ("Invalid XATTR timestamp", from a forked child that logs past LIBVIRT_LOG_OUTPUTS)
REMEMBER_OWNER = "remember_owner = 0"


#: the shortest socket libvirt makes under an embedded root for a running guest (its QMP
#: monitor, for domain 1 named "x"): a root longer than what this leaves can start no VM,
#: and one almost as long fails already when libvirt probes QEMU (``lib/qemu/qmp-XXXXXX/``)
_SHORTEST_GUEST_SOCKET = "/lib/qemu/domain-1-x/monitor.sock"
EMBED_ROOT_MAX = SOCKET_PATH_MAX - len(_SHORTEST_GUEST_SOCKET)


def check_embed_root_length(root: Path) -> None:
    """InvalidSpec, before anything is made, for a root whose QEMU sockets cannot exist."""
    length = len(os.fsencode(root.absolute()))
    if length > EMBED_ROOT_MAX:
        raise InvalidSpec(
            f"libvirt+qemu:///embed?root={root}: that path is {length} bytes long, and libvirt "
            f"makes QEMU's sockets under it (a UNIX socket path has at most {SOCKET_PATH_MAX} "
            f"bytes): choose a root of at most {EMBED_ROOT_MAX} bytes (the local default's is "
            "$XDG_DATA_HOME/anyvirt/qemu-embed, else ~/.local/share/anyvirt/qemu-embed)")


def prepare_embed_root(root: Path) -> None:
    """Write the embedded driver's qemu.conf once: run QEMU as this user, log to files."""
    conf = root / "etc" / "qemu.conf"
    if conf.exists():
        text = conf.read_text()
        if "remember_owner" not in text:  # a root prepared by an earlier version
            conf.write_text(text.rstrip("\n") + "\n" + REMEMBER_OWNER + "\n")
        return
    conf.parent.mkdir(parents=True, exist_ok=True)
    lines = ['stdio_handler = "file"', REMEMBER_OWNER]
    if os.geteuid() == 0:
        # /dev/kvm is root-only on many hosts; as root, run QEMU as root too
        lines += ['user = "root"', 'group = "root"']
    conf.write_text("\n".join(lines) + "\n")


def system_daemon_reachable() -> bool:
    if not SYSTEM_SOCKET.exists():
        return False
    ensure_event_loop()
    try:
        conn = libvirt.openReadOnly(SYSTEM_URI)
    except libvirt.libvirtError:
        return False
    try:
        return bool(conn.getType() == "QEMU")
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def default_uri() -> str:
    """The anyvirt URI of the local QEMU (issue item 9)."""
    if system_daemon_reachable():
        return "libvirt+" + SYSTEM_URI
    root = embed_root()
    prepare_embed_root(root)
    return "libvirt+qemu:///embed?root=" + quote(str(root), safe="/")


def embed_images_dir(uri_query_root: str) -> Path:
    return Path(uri_query_root) / "images"


#: what libvirt says when, as root, its QEMU driver cannot find the build's QEMU account
_MISSING_ACCOUNT = ("Failed to parse user", "Failed to parse group")
_NO_SOCKET = "libvirt-sock"
_EMBED_BUSY = "driver.pid"


def explain_open_failure(error: ConnectionFailed, uri: str) -> ConnectionFailed:
    """The connection error with what a newcomer can do about it, where we know.

    As root, libvirt's QEMU driver (embedded too) looks up its build's QEMU user
    and group before it reads any qemu.conf, so a machine without Debian's
    ``libvirt-daemon-system`` (which creates them) cannot run it; and
    ``qemu:///system`` without a running daemon has nobody to answer.
    """
    text = str(error)
    if any(marker in text for marker in _MISSING_ACCOUNT):
        hint = ("as root, libvirt's QEMU driver needs its QEMU account (Debian: user 'libvirt-qemu' "
                "in group 'kvm', group 'libvirt-qemu'); `bash scripts/tour.sh` creates them, or run "
                "anyvirt as an ordinary user")
    elif _EMBED_BUSY in text:
        hint = ("another process is using this embedded local QEMU (it serves one process at a "
                "time): run the commands one after the other")
    elif uri.startswith(SYSTEM_URI) and _NO_SOCKET in text:
        hint = ("no libvirt daemon is running: start it (systemctl start libvirtd), or leave the URI "
                "out to use the embedded local QEMU (the default)")
    else:
        return error
    return ConnectionFailed(f"{text}; {hint}")
