"""One portable script, the same ending on every backend.

The scenario below is what an operator's automation does (the README's
example among it): each step's outcome is recorded as ``"ok"`` or the error
class's name, and compared with the outcome the semantics in
docs/concepts.md give *for the capabilities this connection declares*. So two
backends that declare the same capabilities must end every step the same
way, and a backend that lacks one gets ``NotSupported`` at that step and
nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from anyvirt.errors import AnyvirtError
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite.base import ContractTests
from anyvirt.testing.suite.test_deployment import IDENTITY, KEY_BODY, read_back
from anyvirt.vm import VM

C = Capability
OK = "ok"


class Scenario:
    """Runs steps, recording what each did; a step whose needs are not declared must
    end in ``NotSupported``, any other must end as the semantics say."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.caps = host.capabilities
        self.log: list[tuple[str, str, str]] = []  # (step, expected, got)

    def step(self, name: str, needs: set[Capability], expected: str,
             action: Callable[[], Any]) -> Any:
        want = expected if needs <= self.caps else "NotSupported"
        try:
            result = action()
            got = OK
        except AnyvirtError as exc:
            result, got = None, type(exc).__name__
        self.log.append((name, want, got))
        return result

    def check(self, name: str, fact: bool) -> None:
        self.log.append((name, "true", "true" if fact else "false"))

    def mismatches(self) -> list[tuple[str, str, str]]:
        return [row for row in self.log if row[1] != row[2]]


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.VM_DELETE)
class TestParity(ContractTests):
    def test_portable_script(self, anyvirt_host: Host, make_vm: Callable[..., VM],
                             request: pytest.FixtureRequest) -> None:
        host, sc = anyvirt_host, Scenario(anyvirt_host)
        caps = sc.caps
        vm = make_vm("par")
        running = {C.START, C.POWER_OFF} <= caps

        sc.step("start", {C.START}, OK, vm.start)
        sc.step("start again", {C.START}, "InvalidState", vm.start)
        if running:
            sc.check("running after start", vm.refresh().state is PowerState.RUNNING)
        snap = sc.step("snapshot (memory where the guest runs)",
                       {C.SNAPSHOTS} | ({C.MEMORY_SNAPSHOTS} if running else set()), OK,
                       lambda: vm.snapshots.create("pre-upgrade", memory=running))
        # the README's example: a linked clone of a running VM that has snapshots
        web2 = sc.step("linked clone of the running VM",
                       {C.LINKED_CLONE} | ({C.CLONE_RUNNING} if running else set()), OK,
                       lambda: make_vm.track(vm.clone(unique_name("par-l"), linked=True)))  # type: ignore[attr-defined]
        if web2 is not None:
            sc.check("clone is stopped", web2.state is PowerState.STOPPED)
            if C.SNAPSHOTS in caps:
                sc.check("clone has no snapshots", len(web2.snapshots.list()) == 0)
            sc.check("original still running", vm.refresh().state is (
                PowerState.RUNNING if running else PowerState.STOPPED))
        sc.step("delete a running VM", {C.VM_DELETE} | ({C.START} if running else set()),
                "InvalidState" if running else OK, (lambda: vm.delete()) if running else (lambda: None))
        if snap is not None:
            sc.step("revert", {C.SNAPSHOTS}, OK, snap.revert)
            sc.check("revert of a memory snapshot runs, of a disk one stops",
                     vm.refresh().state is (PowerState.RUNNING if snap.memory else PowerState.STOPPED))
        sc.step("pause", {C.PAUSE} | ({C.START} if running else set()),
                OK if running else "InvalidState", vm.pause)
        if running:
            sc.step("force off", {C.POWER_OFF}, OK, lambda: vm.stop(force=True))
            sc.step("force off again", {C.POWER_OFF}, "InvalidState", lambda: vm.stop(force=True))
        if web2 is not None:
            sc.step("delete the original of a linked clone with its disks", {C.VM_DELETE},
                    "InvalidState", lambda: vm.delete(disks=True))
            sc.check("the original is still there", host.vms.exists(vm.id))
            sc.step("delete the linked clone", {C.VM_DELETE}, OK, web2.delete)
        sc.step("reconfigure a stopped VM", {C.RECONFIGURE}, OK,
                lambda: vm.reconfigure(cpus=2))
        if C.RECONFIGURE in caps:
            sc.check("reconfigured", vm.refresh().cpus == 2)
        sc.step("reconfigure to nothing", {C.RECONFIGURE}, "InvalidSpec", lambda: vm.reconfigure())
        sc.step("clone to a taken name", {C.FULL_CLONE}, "AlreadyExists", lambda: vm.clone(vm.name))
        tmpl = sc.step("full clone", {C.FULL_CLONE}, OK,
                       lambda: make_vm.track(vm.clone(unique_name("par-f"))))  # type: ignore[attr-defined]
        if tmpl is not None:
            marked = sc.step("mark template", {C.TEMPLATES}, OK, tmpl.mark_template)
            if marked is not None:
                sc.step("start a template", {C.TEMPLATES, C.START}, "InvalidState", tmpl.start)
                of_template = set() if caps & {C.LINKED_CLONE, C.LINKED_CLONE_OF_TEMPLATE} \
                    else {C.LINKED_CLONE}
                deployed = sc.step("linked clone of a template", of_template, OK,
                                   lambda: make_vm.track(tmpl.clone(unique_name("par-t"), linked=True)))  # type: ignore[attr-defined]
                if deployed is not None:
                    sc.check("a template's clone is a VM", deployed.template is False)
                    sc.step("delete the template's linked clone", {C.VM_DELETE}, OK,
                            deployed.delete)
                back = sc.step("convert back to a VM", {C.TEMPLATE_TO_VM}, OK, tmpl.convert_to_vm)
                if back is not None:
                    sc.check("converted", host.vms.get(tmpl.id).template is False)
        # deployment: identity at clone time, read back; user_data is its own refinement
        if C.FULL_CLONE in caps:
            seeded = sc.step("full clone with identity", {C.FULL_CLONE, C.IDENTITY}, OK,
                             lambda: make_vm.track(vm.clone(unique_name("par-i"),  # type: ignore[attr-defined]
                                                            identity=IDENTITY)))
            if seeded is not None:
                sc.check("the clone's identity reads back",
                         "opsuser" in read_back(host, seeded) and KEY_BODY in read_back(host, seeded))
                sc.step("delete the clone with identity", {C.VM_DELETE}, OK, seeded.delete)
            with_data = attrs.evolve(IDENTITY, user_data="#cloud-config\npackages: [htop]\n")
            scripted = sc.step("full clone with user_data", {C.FULL_CLONE, C.IDENTITY,
                                                             C.IDENTITY_USER_DATA}, OK,
                               lambda: make_vm.track(vm.clone(unique_name("par-u"),  # type: ignore[attr-defined]
                                                              identity=with_data)))
            if scripted is not None:
                sc.check("the user_data reads back", "htop" in read_back(host, scripted))
                sc.step("delete the clone with user_data", {C.VM_DELETE}, OK, scripted.delete)
        sc.step("addresses of a stopped VM", {C.GUEST_ADDRESSES}, OK, vm.addresses)
        if snap is not None and C.COLD_MIGRATION in caps:
            target = request.getfixturevalue("anyvirt_migration_target")
            moved = sc.step("cold migration with snapshots", {C.COLD_MIGRATION_SNAPSHOTS}, OK,
                            lambda: vm.migrate(to=target, live=False))
            if moved is not None:
                sc.check("snapshots travelled", [s.name for s in vm.snapshots.list()] == ["pre-upgrade"])
        if snap is not None:
            sc.step("delete the snapshot", {C.SNAPSHOTS}, OK,
                    lambda: vm.snapshots.get("pre-upgrade").delete())
        sc.step("delete", {C.VM_DELETE}, OK, lambda: vm.delete(disks=True))
        sc.check("gone", not host.vms.exists(vm.id))
        assert sc.mismatches() == [], "\n".join(
            f"{step}: expected {want}, got {got}" for step, want, got in sc.mismatches())
