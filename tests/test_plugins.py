"""Testbeds and images come from the installed distributions' entry points, and stay out of the way.

* ``anyvirt testbed NAME`` / ``anyvirt image NAME`` list and run what the
  ``anyvirt.testbeds`` / ``anyvirt.images`` groups register: the backends'
  own, and a third party's (a real distribution on ``PYTHONPATH``, made here).
* The core's pytest plugin, loaded into every session of a project that
  installs anyvirt, adds no fixture that starts anything and no autouse
  fixture; the backends' testbed fixtures appear only when opted into.

Every command runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

THIRD_PARTY_MODULE = '''
import os
from pathlib import Path

from anyvirt.testbeds import RunningTestbed, TestbedOption


class LabTestbed:
    summary = "memory:// hosts, for the protocol's own test."
    options = (
        TestbedOption("prefix", "Host name prefix.", default="lab"),
        TestbedOption("count", "Hosts to name.", default=1, minimum=1, maximum=3),
        TestbedOption("loud_mode", "A flag.", default=False),
    )

    def start(self, prefix, count, loud_mode):
        record = Path(os.environ["LAB_RECORD"])
        record.write_text(f"started {prefix} {count} {loud_mode}")
        return RunningTestbed(
            uris=tuple(f"memory://{prefix}{i}" for i in range(count)),
            stop=lambda: record.write_text("stopped"),
            environment={"LAB_TOKEN": "t0ken"},
        )


class HalfImage:
    summary = "Writes half an image, then fails."
    formats = ("raw",)

    def write(self, path, fmt):
        path.write_bytes(b"half")
        raise RuntimeError("the disk filled up")


TESTBED = LabTestbed()
IMAGE = HalfImage()
HOLLOW = object()
'''

ENTRY_POINTS = """\
[anyvirt.testbeds]
lab = anyvirt_lab_plugin:TESTBED
broken = anyvirt_no_such_module_anywhere:TESTBED
hollow = anyvirt_lab_plugin:HOLLOW

[anyvirt.images]
half = anyvirt_lab_plugin:IMAGE
"""


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding an installed-looking distribution that registers a testbed and an image."""
    site = tmp_path_factory.mktemp("site")
    (site / "anyvirt_lab_plugin.py").write_text(THIRD_PARTY_MODULE)
    info = site / "anyvirt_lab_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: anyvirt-lab-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def _env(site: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return {**env, **extra}


def anyvirt_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "anyvirt.cli.main", *args], capture_output=True,
                          text=True, timeout=120, env=env or _env(), check=False)


# -- anyvirt testbed NAME ----------------------------------------------------------


def test_testbed_lists_the_backends_and_a_third_party(third_party: Path) -> None:
    done = anyvirt_cli("testbed", "--help", env=_env(third_party))
    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("Commands:", 1)[1]
    for name in ("libvirt", "vsphere", "lab", "broken"):
        assert f"  {name} " in commands
    assert "unavailable" in commands  # the broken one says so, and hides no other


def test_third_party_testbed_gets_its_options_and_is_stopped_by_sigterm(
    third_party: Path, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyvirt.cli.main", "--json", "testbed", "lab", "--prefix", "x",
         "--count", "2", "--loud-mode"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(third_party, LAB_RECORD=str(record)),
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1].rstrip() != "}":
            line = proc.stdout.readline()
            assert line, f"no JSON: {lines}"
            lines.append(line)
        data: dict[str, Any] = json.loads("".join(lines))
        assert data == {"uris": ["memory://x0", "memory://x1"], "environment": {"LAB_TOKEN": "t0ken"}}
        assert record.read_text() == "started x 2 True"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert record.read_text() == "stopped"
    assert "stopped" in err


def test_testbed_plain_output_prints_uris_and_exports(third_party: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyvirt.cli.main", "testbed", "lab"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(third_party, LAB_RECORD=str(tmp_path / "record")),
    )
    assert proc.stdout is not None
    first, second = proc.stdout.readline(), proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert (first, second) == ("memory://lab0\n", "export LAB_TOKEN=t0ken\n")
    assert proc.returncode == 0


def test_testbed_option_out_of_range_is_a_usage_error(third_party: Path) -> None:
    done = anyvirt_cli("testbed", "lab", "--count", "4", env=_env(third_party))
    assert done.returncode == 2
    assert "--count" in done.stderr


def test_unknown_testbed_names_what_is_installed() -> None:
    done = anyvirt_cli("testbed", "nosuchbed")
    assert done.returncode == 2
    installed = ", ".join(sorted(ep.name for ep in entry_points(group="anyvirt.testbeds")))
    assert f"no testbed 'nosuchbed' is installed (installed: {installed})" in done.stderr


def test_a_broken_testbed_fails_with_its_import_error(third_party: Path) -> None:
    done = anyvirt_cli("testbed", "broken", env=_env(third_party))
    assert done.returncode == 1
    assert "the testbed 'broken'" in done.stderr
    assert "anyvirt_no_such_module_anywhere" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_object_without_the_protocol_is_refused_by_name(third_party: Path) -> None:
    done = anyvirt_cli("testbed", "hollow", env=_env(third_party))
    assert done.returncode == 1
    assert "the testbed 'hollow' (anyvirt_lab_plugin:HOLLOW) has no summary, options, start" in done.stderr


# -- anyvirt image NAME PATH ---------------------------------------------------------


def test_image_demo_writes_a_boot_sector(tmp_path: Path) -> None:
    path = tmp_path / "images" / "demo.img"  # a missing directory is made
    done = anyvirt_cli("image", "demo", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(path)
    assert f"--image {path}" in done.stderr
    data = path.read_bytes()
    assert len(data) == 1024 * 1024
    assert data[510:512] == b"\x55\xaa"
    assert b"ANYVIRT-GUEST-UP" in data[:512]
    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.img"]


def test_image_demo_qcow2_as_json(tmp_path: Path) -> None:
    path = tmp_path / "demo.qcow2"
    done = anyvirt_cli("--json", "image", "demo", "--format", "qcow2", str(path))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data == {"path": str(path), "format": "qcow2", "size_bytes": path.stat().st_size}
    assert path.read_bytes()[:4] == b"QFI\xfb"


def test_image_demo_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "taken.img"
    path.write_bytes(b"mine")
    done = anyvirt_cli("image", "demo", str(path))
    assert done.returncode == 4
    assert "--force" in done.stderr
    assert path.read_bytes() == b"mine"
    assert anyvirt_cli("image", "demo", "--force", str(path)).returncode == 0
    assert path.stat().st_size == 1024 * 1024


def test_unknown_image_names_what_is_installed(tmp_path: Path) -> None:
    done = anyvirt_cli("image", "nosuchimage", str(tmp_path / "x.img"))
    assert done.returncode == 2
    assert "no image 'nosuchimage' is installed (installed: demo, linux-guest)" in done.stderr


def test_a_failing_builder_leaves_no_file(third_party: Path, tmp_path: Path) -> None:
    path = tmp_path / "half.img"
    done = anyvirt_cli("image", "half", str(path), env=_env(third_party))
    assert done.returncode == 1
    assert "error: the image was not written: the disk filled up" in done.stderr
    assert list(tmp_path.iterdir()) == []


# -- the pytest plugin stays inert ----------------------------------------------------

PROBE_TEST = """
def test_probe(request):
    print("FIXTURES", sorted(request.fixturenames))
"""
TESTBED_FIXTURES = ("libvirt_daemon", "libvirt_daemon_pair", "guest_image", "vcsim_vcenter", "vcsim_esx")


def _pytest_in(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=project, capture_output=True, text=True, timeout=120, env=_env(),
                          check=False)


def _project(tmp_path: Path, conftest: str = "") -> Path:
    project = tmp_path / "userproject"
    project.mkdir()
    (project / "test_probe.py").write_text(PROBE_TEST)
    (project / "conftest.py").write_text(textwrap.dedent(conftest))
    return project


def test_installed_anyvirt_adds_no_autouse_and_no_testbed_fixture(tmp_path: Path) -> None:
    project = _project(tmp_path)
    run = _pytest_in(project, "-s", "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FIXTURES ['request']" in run.stdout  # nothing autouse anywhere
    listed = _pytest_in(project, "--fixtures")
    assert listed.returncode == 0, listed.stderr
    assert "make_vm" in listed.stdout  # the plugin is loaded...
    for name in TESTBED_FIXTURES:
        assert name not in listed.stdout  # ...and brings no testbed
    markers = _pytest_in(project, "--markers")
    assert "anyvirt_requires" in markers.stdout


def test_testbed_fixtures_come_when_opted_into(tmp_path: Path) -> None:
    project = _project(tmp_path, conftest="""
        pytest_plugins = ["anyvirt_libvirt.testbed.fixtures", "anyvirt_vsphere.testbed.fixtures"]
    """)
    listed = _pytest_in(project, "--fixtures")
    assert listed.returncode == 0, listed.stderr
    for name in TESTBED_FIXTURES:
        assert name in listed.stdout
    run = _pytest_in(project, "-s", "-q")
    assert "FIXTURES ['request']" in run.stdout  # opted in, still nothing autouse
