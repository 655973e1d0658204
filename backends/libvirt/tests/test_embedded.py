"""The daemon-less default: ``qemu:///embed`` runs QEMU from this process, real guest included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from anyvirt_libvirt.demo_image import OFF_MARKER, read_console, wait_for_counter
from anyvirt_libvirt.driver import LibvirtDriver
from anyvirt_libvirt.embedded import SYSTEM_SOCKET, prepare_embed_root, system_daemon_reachable
from libvirt_support import guest_spec

import anyvirt
from anyvirt.model import PowerState


@pytest.fixture(scope="module")
def embed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root for the module: libvirt opens the embedded QEMU driver once per process,
    and refuses a second root while the first is open ("already open with path ...")."""
    return tmp_path_factory.mktemp("embed") / "root"


def test_default_uri_prefers_the_system_daemon_else_embeds() -> None:
    uri = LibvirtDriver.default_uri()
    if system_daemon_reachable():
        assert uri == "libvirt+qemu:///system"
    else:
        assert not SYSTEM_SOCKET.exists() or uri is not None
        assert uri is not None and uri.startswith("libvirt+qemu:///embed?root=")
        assert uri.endswith("/anyvirt/qemu-embed")


def test_embedded_qemu_runs_a_real_guest(embed_root: Path, guest_image: Path) -> None:
    with anyvirt.connect(f"libvirt+qemu:///embed?root={embed_root}") as host:
        vm = host.vms.create(guest_spec("embedded", guest_image))
        log = Path(vm.info().extra["console_log"])
        assert log.parent == (embed_root / "images").resolve()
        vm.start()
        wait_for_counter(log, 1)
        vm.stop(timeout=60)
        assert vm.refresh().state is PowerState.STOPPED
        assert OFF_MARKER in read_console(log)
        vm.delete(disks=True)
        assert not list((embed_root / "images").iterdir()), "disk and console log removed"


def test_embed_root_config_keeps_no_owner_xattrs(tmp_path: Path) -> None:
    """QEMU runs as the caller: no owner XATTRs (their stale-timestamp warnings went to the
    caller's stderr, from a child process past LIBVIRT_LOG_OUTPUTS), also in older roots."""
    fresh = tmp_path / "fresh"
    prepare_embed_root(fresh)
    assert "remember_owner = 0" in (fresh / "etc" / "qemu.conf").read_text()
    old = tmp_path / "old"
    (old / "etc").mkdir(parents=True)
    (old / "etc" / "qemu.conf").write_text('stdio_handler = "file"\n')
    prepare_embed_root(old)
    assert (old / "etc" / "qemu.conf").read_text() == 'stdio_handler = "file"\nremember_owner = 0\n'


def test_what_the_embedded_qemu_lacks_is_refused_with_the_reason(embed_root: Path) -> None:
    """The README's first example met a bare "libvirt does not support clone.running" here:
    the refusal says why, and host.why_not says it before trying."""
    from anyvirt import Capability, DiskSpec, NotSupported, VMSpec

    with anyvirt.connect(f"libvirt+qemu:///embed?root={embed_root}") as host:
        assert host.why_not(Capability.START) == ""
        why = host.why_not(Capability.CLONE_RUNNING)
        assert "embedded QEMU" in why and "stop the VM first" in why
        assert "migrate" in host.why_not(Capability.LIVE_MIGRATION)
        vm = host.vms.create(VMSpec(name="why", memory_mib=32, disks=[DiskSpec(size_gib=0.0625)]))
        try:
            vm.start()
            try:
                vm.clone("why-copy")
            except NotSupported as exc:
                assert str(exc) == f"libvirt does not support clone.running: {why}"
            else:
                raise AssertionError("the embedded QEMU cloned a running VM")
        finally:
            vm.refresh()
            if vm.state is not PowerState.STOPPED:
                vm.stop(force=True)
            vm.delete(disks=True)


def test_the_test_driver_says_why_it_lacks_migration() -> None:
    from anyvirt import Capability

    with anyvirt.connect("libvirt+test:///default") as host:
        assert "test driver" in host.why_not(Capability.LIVE_MIGRATION)


def _root_of_length(tmp_path: Path, length: int) -> Path:
    root = tmp_path / ("r" * (length - len(str(tmp_path)) - 1))
    assert len(str(root)) == length
    return root


def test_an_embedded_root_too_long_for_any_socket_is_refused_before_anything_is_made(
        tmp_path: Path) -> None:
    from anyvirt_libvirt.embedded import EMBED_ROOT_MAX

    from anyvirt import InvalidSpec

    root = _root_of_length(tmp_path, EMBED_ROOT_MAX + 1)
    refusal = rf"{EMBED_ROOT_MAX + 1} bytes long.*at most {EMBED_ROOT_MAX} bytes"
    with pytest.raises(InvalidSpec, match=refusal):
        anyvirt.connect(f"libvirt+qemu:///embed?root={root}")
    assert not root.exists()


#: run in a child: libvirt keeps one embed root per process, and this module's is open
_START_A_LONG_NAME = """
import sys
import anyvirt
from anyvirt import DiskSpec, InvalidSpec, PowerState, VMSpec
with anyvirt.connect("libvirt+qemu:///embed?root=" + sys.argv[1]) as host:
    vm = host.vms.create(VMSpec(name="a-name-of-twenty-chars", memory_mib=32,
                                disks=[DiskSpec(size_gib=0.0625)]))
    try:
        vm.start()
    except InvalidSpec as exc:
        print(str(exc))
    print(vm.refresh().state.value)
    vm.delete(disks=True)
"""


def test_a_vm_name_too_long_for_the_embedded_roots_sockets_is_named_as_the_cause(
        tmp_path: Path) -> None:
    """libvirt makes the guest's monitor socket in ``lib/qemu/domain-N-NAME/`` under the root
    (NAME: the first 20 characters); past 107 bytes the start fails, and the caller learns
    which input to shorten instead of only libvirt's "UNIX socket path ... too long"."""
    from anyvirt_libvirt.embedded import EMBED_ROOT_MAX

    root = _root_of_length(tmp_path, EMBED_ROOT_MAX)
    run = subprocess.run([sys.executable, "-c", _START_A_LONG_NAME, str(root)],
                         capture_output=True, text=True, timeout=120, check=True)
    refusal, state = run.stdout.strip().splitlines()
    assert "UNIX socket path" in refusal and "too long" in refusal
    assert "choose a shorter ?root= (or a shorter VM name)" in refusal
    assert state == "stopped"
