"""Overcommit set everywhere users set things (connect keyword, URI, profile, environment,
the CLI's --overcommit), and the rule of which VMs count: powered-on ones by default."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import anyvirt
from anyvirt import CapacityExceeded, InvalidSpec, Overcommit, PowerState, VMSpec, memory
from anyvirt.cli.main import cli


@pytest.fixture
def name() -> Iterator[str]:
    found = f"oc-{uuid.uuid4().hex[:8]}"
    yield found
    memory.reset(found)


def small_host(name: str, **kwargs: object) -> anyvirt.Host:
    """A 2-CPU, 4 GiB machine: the laptop a newcomer loops clones on."""
    return anyvirt.connect(f"memory://{name}?nodes=1&cpus=2&memory_mib=4096", **kwargs)  # type: ignore[arg-type]


def test_a_loop_of_clones_on_two_cpus_passes_the_fifth(name: str) -> None:
    host = small_host(name)
    assert host.overcommit.counts == "powered-on"
    base = host.vms.create(VMSpec(name="base", cpus=2, memory_mib=512))
    clones = [base.clone(f"c{i}") for i in range(8)]  # 18 vCPUs defined on 2 CPUs x 4
    info = host.info()
    assert info.allocation.vcpus == 18 and info.allocation.powered_on_vcpus == 0
    for vm in clones[:4]:
        vm.start()  # 8 vCPUs powered on: the limit exactly
    with pytest.raises(CapacityExceeded, match="powered-on VMs' vCPUs") as refused:
        clones[4].start()
    assert "--overcommit" in str(refused.value)
    assert clones[4].refresh().state is PowerState.STOPPED
    clones[0].stop(force=True)
    clones[4].start()  # room again once one is off


def test_counting_defined_vms_refuses_the_create(name: str) -> None:
    host = small_host(name, overcommit=Overcommit(cpu=1.0, counts="defined"))
    host.vms.create(VMSpec(name="a", cpus=2, memory_mib=512))
    with pytest.raises(CapacityExceeded, match="defined VMs'"):
        host.vms.create(VMSpec(name="b", cpus=1, memory_mib=512))


def test_reconfigure_of_a_stopped_vm_counts_only_when_stopped_vms_do(name: str) -> None:
    host = small_host(name, overcommit="cpu=1")
    vm = host.vms.create(VMSpec(name="a", cpus=1, memory_mib=512))
    vm.reconfigure(cpus=4)  # stopped: holds nothing yet
    with pytest.raises(CapacityExceeded):
        vm.start()
    host.overcommit = Overcommit(cpu=1.0, counts="defined")
    with pytest.raises(CapacityExceeded):
        vm.reconfigure(cpus=5)


@pytest.mark.parametrize(("text", "expected"), [
    ("cpu=8", Overcommit(cpu=8.0)),
    ("cpu=8,memory=1.5,counts=defined", Overcommit(cpu=8.0, memory=1.5, counts="defined")),
    ("memory:2, counts:powered-on", Overcommit(memory=2.0)),
    ("unlimited", Overcommit.unlimited()),
])
def test_the_text_form(name: str, text: str, expected: Overcommit) -> None:
    assert small_host(name, overcommit=text).overcommit == expected
    if expected != Overcommit.unlimited():  # its text reads back
        assert small_host(name, overcommit=str(expected)).overcommit == expected


@pytest.mark.parametrize("text", ["cpu=0", "cpu=many", "cpus=4", "counts=all", "8"])
def test_bad_text_is_invalid_spec(name: str, text: str) -> None:
    with pytest.raises(InvalidSpec):
        small_host(name, overcommit=text)


def test_from_the_uri_profile_and_environment(name: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"memory://{name}?nodes=1&cpus=2"
    assert anyvirt.connect(f"{uri}&overcommit=cpu=3").overcommit == Overcommit(cpu=3.0)
    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.lab]\nuri = "{uri}"\novercommit = {{ cpu = 5, counts = "defined" }}\n'
                      f'[profiles.text]\nuri = "{uri}"\novercommit = "memory=2"\n')
    monkeypatch.setenv("ANYVIRT_CONFIG", str(config))
    assert anyvirt.connect(profile="lab").overcommit == Overcommit(cpu=5.0, counts="defined")
    assert anyvirt.connect(profile="text").overcommit == Overcommit(memory=2.0)
    # the keyword wins over the URI, the URI over the profile
    assert anyvirt.connect(f"{uri}&overcommit=cpu=3", overcommit="cpu=6").overcommit.cpu == 6.0
    assert anyvirt.connect(f"{uri}&overcommit=cpu=3", profile="lab").overcommit.cpu == 3.0
    monkeypatch.setenv("ANYVIRT_OVERCOMMIT", "cpu=7")
    assert anyvirt.connect(uri).overcommit == Overcommit(cpu=7.0)


def test_the_cli_global_option_and_info_explains_the_limit(name: str) -> None:
    uri = f"memory://{name}?nodes=1&cpus=2&memory_mib=4096"
    shown = CliRunner().invoke(cli, ["--overcommit", "cpu=3,counts=defined", "info", uri, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["info"]["overcommit"] == {"cpu": 3.0, "memory": 1.0, "counts": "defined"}
    table = CliRunner().invoke(cli, ["--format", "plain", "info", uri])
    assert "overcommit limit" in table.stdout
    assert "8 vCPUs (2 CPUs x 4)" in table.stdout and "stopped ones do not" in table.stdout
    bad = CliRunner().invoke(cli, ["--overcommit", "cpu=-1", "info", uri])
    assert bad.exit_code == 2, bad.output
