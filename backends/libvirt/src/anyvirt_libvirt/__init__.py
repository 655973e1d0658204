"""anyvirt backend: libvirt (KVM/QEMU, and libvirt's test driver)."""

import os
from pathlib import Path

import platformdirs


def _quiet_in_process_drivers() -> None:
    """Send libvirt's own log to a file unless the caller chose an output.

    The embedded QEMU driver (``qemu:///embed``, the local default) runs inside
    this process, and libvirt logs every error it raises, expected ones like
    "Domain not found" for ``host.vms.exists()`` included, to the host
    program's stderr. anyvirt turns those errors into exceptions, so the log
    belongs in a file. Set ``LIBVIRT_LOG_OUTPUTS`` yourself to override; it is
    read once, when libvirt is first imported, hence here.
    """
    if "LIBVIRT_LOG_OUTPUTS" in os.environ:
        return
    log_dir = Path(platformdirs.user_cache_dir("anyvirt"))
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    os.environ["LIBVIRT_LOG_OUTPUTS"] = f"3:file:{log_dir / 'libvirt.log'}"


_quiet_in_process_drivers()
