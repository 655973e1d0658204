"""anyvirt_vm's ``disks[].format``: the format of a disk's image, passed to anyvirt as given, so
the import never probes it. On the real libvirt daemon, a raw disk whose guest wrote a qcow2
image at its start is created raw, byte for byte; a format anyvirt does not know and a format
without an image fail their task, nothing made. The documented choices are anyvirt's own."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from ansible_support import BIN, COLLECTION, ansible_env, local_inventory, run_playbook
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

import anyvirt
from anyvirt.kit import qemu_img
from anyvirt.model import IMAGE_FORMATS
from anyvirt.testing.disk_bytes import raw_disk_that_looks_like_qcow2


def vm_task(disk: dict[str, object], **extra: object) -> dict[str, object]:
    return {"anyvirt.cloud.anyvirt_vm": {"uri": "{{ anyvirt_uri }}", "name": "{{ prefix }}-vm", "cpus": 1,
                                         "memory_mib": 64, "disks": [disk]}, **extra}


PLAY = [{
    "name": "disks in the format given",
    "hosts": "all",
    "gather_facts": False,
    "tasks": [
        {"name": "an unknown format", **vm_task({"image": "{{ image }}", "format": "qcow"},
                                                register="unknown", ignore_errors=True)},
        {"name": "a format without an image", **vm_task({"size_gib": 0.0625, "format": "raw"},
                                                         register="imageless", ignore_errors=True)},
        {"name": "nothing was made",
         "anyvirt.cloud.anyvirt_info": {"uri": "{{ anyvirt_uri }}", "name": "{{ prefix }}-vm"},
         "register": "nothing"},
        {"name": "a raw disk, read as raw", **vm_task({"image": "{{ image }}", "format": "raw"})},
        {"name": "each refusal says why", "ansible.builtin.assert": {"that": [
            "'qcow2, vmdk' in unknown.msg and 'qcow' in unknown.msg",
            "'give the image too' in imageless.msg",
            "not nothing.exists",
        ]}},
    ],
}]


@pytest.mark.timeout(600)
def test_a_raw_image_that_looks_like_qcow2_is_created_raw_when_its_format_is_given(
    libvirt_daemon: LibvirtDaemon, tmp_path: Path
) -> None:
    prefix = f"ans-{uuid.uuid4().hex[:6]}"
    image = tmp_path / "guest.img"
    image.write_bytes(raw_disk_that_looks_like_qcow2(tmp_path))
    home = tmp_path / "home"
    inventory = local_inventory(
        home, {"libvirt": {"anyvirt_uri": libvirt_daemon.anyvirt_uri, "prefix": prefix, "image": str(image)}}
    )
    playbook = tmp_path / "format.yml"
    playbook.write_text(json.dumps(PLAY), encoding="utf-8")
    try:
        run = run_playbook(playbook, home, inventory)
        assert run.returncode == 0 and run.failed == 0, run.output[-8000:]
        counts = run.recap["libvirt"]
        assert (counts["ignored"], counts["changed"]) == (2, 1), run.output[-8000:]
        with anyvirt.connect(libvirt_daemon.anyvirt_uri) as host:
            [disk] = host.vms.get(f"{prefix}-vm").info().disks
        assert disk.path is not None and disk.format is not None
        copy = tmp_path / "copy.raw"
        qemu_img.convert(disk.path, copy, source_format=disk.format, format="raw")
        got, want = copy.read_bytes(), image.read_bytes()
        assert got[:len(want)] == want and not got[len(want):].strip(b"\0")
    finally:
        with anyvirt.connect(libvirt_daemon.anyvirt_uri) as host:
            for vm in host.vms.list():
                if vm.name.startswith(prefix):
                    vm.delete(disks=True)


def test_the_documented_formats_are_anyvirts(tmp_path: Path) -> None:
    """ansible-doc's choices for ``disks[].format``, the argument spec's (module_utils) and
    anyvirt's IMAGE_FORMATS are one list."""
    done = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "module", "--json", "anyvirt.cloud.anyvirt_vm"],
        env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300, check=True,
    )
    options = json.loads(done.stdout)["anyvirt.cloud.anyvirt_vm"]["doc"]["options"]
    documented = options["disks"]["suboptions"]["format"]["choices"]
    path = COLLECTION / "plugins" / "module_utils" / "anyvirt_common.py"
    spec = importlib.util.spec_from_file_location("anyvirt_common_under_test", path)
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert documented == common.IMAGE_FORMATS == list(IMAGE_FORMATS)
