"""What the wheels hold: the core carries no testbed, the backends carry theirs.

The wheels are really built (``uv build``, the project's own build backend),
then read as zip files: what a user would install.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Source that only testbeds and the demo-image builder contain: if any of these
# shows up in the core wheel, testbed code has come back.
TESTBED_CODE_MARKERS = (
    "class LibvirtDaemon",
    "class Vcsim",
    "def build_vcsim",
    "def build_image",
    "def build_guest_image",
    "unshare",
    "libvirtd",
    "GOPATH",
    "elf_i386",
)
TESTBED_SUFFIXES = (".go", ".patch", ".S", ".ld")


def _uv() -> str:
    """The uv scripts/python-env.sh ran (the machine's, else the one it installed)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "uv.sh")], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _wheel(project: Path, out: Path) -> zipfile.ZipFile:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    done = subprocess.run([_uv(), "build", "--wheel", "--out-dir", str(out), str(project)],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _entry_points(wheel: zipfile.ZipFile) -> configparser.ConfigParser:
    [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(name).decode())
    return parser


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zipfile.ZipFile]:
    projects = {"core": ROOT, "libvirt": ROOT / "backends" / "libvirt",
                "vsphere": ROOT / "backends" / "vsphere", "virtualbox": ROOT / "backends" / "virtualbox"}
    return {name: _wheel(path, tmp_path_factory.mktemp(name)) for name, path in projects.items()}


def test_core_wheel_holds_no_testbed_go_patch_or_guest_builder(wheels: dict[str, zipfile.ZipFile]) -> None:
    core = wheels["core"]
    files = [n for n in core.namelist() if not n.endswith("/")]
    assert "anyvirt/testing/suite/__init__.py" in files  # the contract suite stays
    assert not [n for n in files if n.endswith(TESTBED_SUFFIXES)]
    modules = {Path(n).stem for n in files if n.endswith(".py")}
    assert not modules & {"libvirt_testbed", "vcsim_testbed", "guest", "demo_image", "daemon", "vcsim",
                          "libvirt_fixtures", "vcsim_fixtures", "fixtures"}
    assert not [n for n in files if "testbed/" in n or "guest_src/" in n or "vcsim/" in n]
    for name in files:
        if name.endswith(".py"):
            text = core.read(name).decode()
            found = [marker for marker in TESTBED_CODE_MARKERS if marker in text]
            assert not found, f"{name} holds testbed code ({found})"


def test_core_wheel_registers_no_testbed_or_image(wheels: dict[str, zipfile.ZipFile]) -> None:
    groups = _entry_points(wheels["core"])
    assert not groups.has_section("anyvirt.testbeds")
    assert not groups.has_section("anyvirt.images")
    assert dict(groups["pytest11"]) == {"anyvirt": "anyvirt.testing.plugin"}


def test_libvirt_wheel_holds_its_testbed_and_the_demo_image(wheels: dict[str, zipfile.ZipFile]) -> None:
    wheel = wheels["libvirt"]
    files = set(wheel.namelist())
    for name in ("testbed/__init__.py", "testbed/daemon.py", "testbed/fixtures.py",
                 "demo_image/__init__.py", "demo_image/boot.S", "demo_image/boot.ld",
                 "testbed/linux_guest/bootdisk.py", "testbed/linux_guest/init.sh"):
        assert f"anyvirt_libvirt/{name}" in files
    groups = _entry_points(wheel)
    assert dict(groups["anyvirt.testbeds"]) == {"libvirt": "anyvirt_libvirt.testbed:TESTBED"}
    assert dict(groups["anyvirt.images"]) == {
        "demo": "anyvirt_libvirt.demo_image:BUILDER",
        "linux-guest": "anyvirt_libvirt.testbed.linux_guest.bootdisk:BUILDER",
    }
    assert not groups.has_section("pytest11")  # its fixtures are opted into, never auto-loaded


def test_vsphere_wheel_holds_vcsim_main_and_patches(wheels: dict[str, zipfile.ZipFile]) -> None:
    wheel = wheels["vsphere"]
    files = set(wheel.namelist())
    data = "anyvirt_vsphere/testbed/vcsim_src/"
    assert f"{data}main.go" in files
    assert len([n for n in files if n.startswith(data) and n.endswith(".patch")]) == len(
        list((ROOT / "backends/vsphere/src" / data).glob("*.patch"))) >= 2
    for name in ("__init__.py", "vcsim.py", "fixtures.py"):
        assert f"anyvirt_vsphere/testbed/{name}" in files
    groups = _entry_points(wheel)
    assert dict(groups["anyvirt.testbeds"]) == {"vsphere": "anyvirt_vsphere.testbed:TESTBED"}
    assert not groups.has_section("pytest11")


def test_virtualbox_wheel_holds_its_chroot_builder_and_fake(wheels: dict[str, zipfile.ZipFile]) -> None:
    wheel = wheels["virtualbox"]
    files = set(wheel.namelist())
    for name in ("__init__.py", "build-chroot.sh", "enter-chroot.c", "fake.py"):
        assert f"anyvirt_virtualbox/testbed/{name}" in files
    groups = _entry_points(wheel)
    assert dict(groups["anyvirt.testbeds"]) == {"virtualbox": "anyvirt_virtualbox.testbed:TESTBED"}
    assert dict(groups["anyvirt.backends"]) == {"virtualbox": "anyvirt_virtualbox.driver:VirtualBoxDriver"}
    assert not groups.has_section("pytest11")
