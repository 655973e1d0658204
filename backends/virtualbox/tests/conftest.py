"""Fixtures for the VirtualBox backend's tests.

``real_vboxmanage`` is the real VirtualBox 7.2 of the Debian sid chroot (built
on first use, about a minute, then cached under ``~/.cache/anyvirt``). ``fake_vboxmanage``
is the project's fake, for running states only. Every test gets its own home
(``VBOX_USER_HOME`` with its own VBoxSVC, and machine folder); ``other_real_home`` is a
second one, the target of migrations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_virtualbox.testbed import Home, build_chroot, fake_vboxmanage, make_home, served_home

import anyvirt
from anyvirt.host import Host

CAPTURES = Path(__file__).with_name("captures")


@pytest.fixture(scope="session")
def real_vboxmanage() -> Path:
    """The testbed's real VirtualBox 7.2 (the full one of $ANYVIRT_VIRTUALBOX_VBOXMANAGE has
    its own module, test_contract_virtualbox_full)."""
    return build_chroot()


@pytest.fixture(scope="session")
def fake_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_vboxmanage(tmp_path_factory.mktemp("fake-bin"))


@pytest.fixture
def real_home(real_vboxmanage: Path, tmp_path: Path) -> Iterator[Home]:
    with served_home(real_vboxmanage, tmp_path / "vbox") as home:
        yield home


@pytest.fixture
def other_real_home(real_vboxmanage: Path, tmp_path: Path) -> Iterator[Home]:
    """A second home on the same VirtualBox: another host, as far as anyvirt can tell (its
    own VBoxSVC, registry and machine folder), the target of migrations."""
    with served_home(real_vboxmanage, tmp_path / "other") as home:
        yield home


@pytest.fixture
def other_real_host(other_real_home: Home) -> Iterator[Host]:
    with anyvirt.connect(other_real_home.uri) as host:
        yield host


@pytest.fixture
def fake_home(fake_binary: Path, tmp_path: Path) -> Home:
    return make_home(fake_binary, tmp_path / "fake")


@pytest.fixture
def real_host(real_home: Home) -> Iterator[Host]:
    with anyvirt.connect(real_home.uri) as host:
        yield host


@pytest.fixture
def fake_host(fake_home: Home) -> Iterator[Host]:
    with anyvirt.connect(fake_home.uri) as host:
        yield host


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a module that sets ``RUNNING_STATES_ONLY``, keep only the tests that need a running
    guest (their ``anyvirt_requires`` names a running-state capability) and TestNotSupported:
    everything else is proven on the real VirtualBox, so the fake is not asked to."""
    from anyvirt_virtualbox.driver import RUNNING

    keep, drop = [], []
    for item in items:
        module = getattr(item, "module", None)
        if not getattr(module, "RUNNING_STATES_ONLY", False):
            keep.append(item)
            continue
        needed = {c for m in item.iter_markers("anyvirt_requires") for c in m.args}
        cls = getattr(item, "cls", None)
        if needed & RUNNING or (cls is not None and cls.__name__ == "TestNotSupported"):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
