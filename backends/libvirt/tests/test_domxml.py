"""Domain XML from a spec: pure logic, no daemon."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from anyvirt_libvirt.domxml import DiskPlan, HostChoices, build_domain_xml
from anyvirt_libvirt.hostfacts import _baseline_model

from anyvirt import VMSpec

DOMCAPS = """<domainCapabilities><cpu><mode name='custom' supported='yes'>
  <model usable='yes'>qemu64</model><model usable='no'>Nehalem</model>
  <model usable='yes'>Westmere</model><model usable='yes'>pentium3</model>
</mode></cpu></domainCapabilities>"""


def test_the_oldest_usable_baseline_model_is_chosen() -> None:
    assert _baseline_model(ET.fromstring(DOMCAPS)) == "Westmere"
    nested = DOMCAPS.replace("usable='yes'>Westmere", "usable='no'>Westmere")
    assert _baseline_model(ET.fromstring(nested)) is None, "nothing usable: hypervisor default"


def test_cpu_element_follows_the_choice() -> None:
    spec = VMSpec(name="w")
    disks = [DiskPlan(path="/pool/w.qcow2")]
    with_model = ET.fromstring(build_domain_xml(
        spec, str(uuid.uuid4()), HostChoices("kvm", cpu_model="Nehalem"), disks, [], None))
    model = with_model.find("cpu/model")
    assert model is not None
    assert model.text == "Nehalem"
    assert model.get("fallback") == "forbid"
    default = ET.fromstring(build_domain_xml(
        spec, str(uuid.uuid4()), HostChoices("kvm"), disks, [], None))
    assert default.find("cpu") is None


def test_hostile_names_are_escaped_by_the_xml_library() -> None:
    name = "a'b\"c<d>&e ü"
    xml = build_domain_xml(VMSpec(name=name, description="</description><evil/>"),
                           str(uuid.uuid4()), HostChoices("kvm"), [], [], None)
    root = ET.fromstring(xml)
    assert root.findtext("name") == name
    assert root.findtext("description") == "</description><evil/>"
    assert root.find(".//evil") is None


def test_platform_shaped_values_read_back_as_data() -> None:
    """Names and descriptions shaped like domain XML (naming another VM) come back from
    parse_vm_info as written, and the VM keeps its own uuid, name, memory and CPUs."""
    from anyvirt_libvirt.domxml import parse_vm_info

    from anyvirt.model import PowerState
    from anyvirt.testing.suite.test_hostile_values import hostile_descriptions, hostile_names

    other = str(uuid.uuid4())
    for name in [*hostile_names(other, "victim"), "plain"]:
        for text in hostile_descriptions(other, "victim"):
            own = str(uuid.uuid4())
            spec = VMSpec(name=name, cpus=3, memory_mib=96, description=text)
            xml = build_domain_xml(spec, own, HostChoices("kvm"), [], [], None)
            info = parse_vm_info(xml, PowerState.STOPPED, "shut off", None)
            assert (info.id, info.name, info.cpus, info.memory_mib) == (own, name, 3, 96)
            assert info.description == spec.description
