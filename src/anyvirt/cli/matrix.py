"""The support matrix, built from what each installed driver declares.

Shared by ``anyvirt capabilities --all`` and the documentation's build hook,
so the published matrix is never written by hand and cannot drift from the
code. A backend column lists every scheme served by the same driver class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from anyvirt import registry
from anyvirt.driver import Driver
from anyvirt.model import Capability

# One line per capability for the docs and the CLI, keyed by the capability's
# value so that this table survives capabilities being added to or removed
# from the enum: a capability without an entry still appears, undescribed
# (tests/test_docs.py fails the build until it has one).
_DESCRIPTIONS: dict[str, str] = {
    "vm.create": "create (define) a VM from a VMSpec",
    "vm.create.from_image": "create a VM whose disk is an existing image file",
    "vm.delete": "delete a VM, with or without its disks",
    "vm.start": "power on",
    "vm.console": "interactive serial console (`vm.console()`, `anyvirt vm console -i`)",
    "vm.stop": "graceful shutdown (ACPI / guest tools)",
    "vm.power_off": "hard power-off (`stop(force=True)`, `anyvirt vm stop --force`)",
    "vm.reboot": "guest reboot",
    "vm.reset": "hard reset",
    "vm.pause": "pause and resume (CPUs frozen, memory kept)",
    "vm.suspend": "suspend to disk",
    "vm.reconfigure": "change CPUs and memory",
    "vm.reconfigure.live": "change CPUs and memory of a running VM",
    "snapshot": "snapshots: create, list, revert, delete",
    "snapshot.memory": "snapshots that keep a running guest's memory",
    "clone.full": "full clone",
    "clone.linked": "linked (copy-on-write) clone",
    "clone.running": "clone a running VM (a crash-consistent, point-in-time copy)",
    "clone.linked.template": "linked clones of templates (clone.linked: of any VM)",
    "templates.convert": "turn a template back into a VM",
    "vm.delete.keep_disks": "delete a VM but keep its disks (delete(disks=False))",
    "migration.cold.snapshots": "cold migration that carries the VM's snapshots",
    "migration.live.snapshots": "live migration of a VM that has snapshots",
    "migration.cold": "migrate a stopped VM to another node or host",
    "migration.live": "migrate a running VM without stopping it",
    "templates": "templates",
    "task.cancel": "cancel a running task on the platform",
    "disk.export": "export disks as a stream (backup, cross-platform migration)",
    "node.maintenance": "put a node into maintenance mode",
    "node.recover": "recover a failed node's VMs (`host.recover(node)`): each reported, "
                    "whoever brings it back",
    "node.recover.restart": "anyvirt itself brings a failed node's VMs up on a live node "
                            "from their shared disks (`host.recover(node, to=)`)",
    "disk.export.snapshot": "export a running VM's disks as a snapshot froze them "
                            "(`anyvirt.migrate(vm, to, snapshot=True)`)",
    "disk.changed_blocks": "the platform records changed blocks: a repository's incremental "
                           "backup reads only those (without: a full read, deduplicated)",
    "identity": "a VM's own hostname, users and SSH keys at first boot "
                "(`VMSpec(identity=)`, `clone(identity=)`)",
    "identity.user_data": "the caller's own cloud-config for first boot (`Identity(user_data=)`)",
    "guest.addresses": "the guest's IP addresses (`vm.addresses()`, `vm.wait_ready()`)",
}



def describe(capability: Capability) -> str:
    return _DESCRIPTIONS.get(capability.value, "")


def python_name(capability: Capability) -> str:
    """How Python code names it: ``Capability.LINKED_CLONE`` for ``clone.linked``."""
    return f"Capability.{capability.name}"


YES = "yes"
NO = "-"
#: a cell offered only where a condition holds, with the condition's note number
IF = "if [{}]"


@attrs.frozen
class Column:
    """One backend in the matrix: its schemes, what its driver can offer, and which of it
    only where a condition holds (a version, a configuration)."""

    schemes: tuple[str, ...]
    platform: str
    capabilities: frozenset[Capability]
    conditions: Mapping[Capability, str] = attrs.field(factory=dict)

    @property
    def title(self) -> str:
        return " / ".join(self.schemes)


@attrs.frozen
class Note:
    """A condition under the matrix: ``[number] backend: capabilities: condition``."""

    number: int
    column: str
    capabilities: tuple[Capability, ...]
    condition: str

    def text(self, code: Callable[[str], str] = str) -> str:
        caps = ", ".join(code(cap.value) for cap in self.capabilities)
        return f"[{self.number}] {code(self.column)}: {caps}: {self.condition}"


def notes(cols: list[Column]) -> list[Note]:
    """The conditions, numbered in reading order, one note per backend and condition."""
    found: list[Note] = []
    for col in cols:
        by_condition: dict[str, list[Capability]] = {}
        for cap in Capability:
            if cap in col.capabilities and cap in col.conditions:
                by_condition.setdefault(col.conditions[cap], []).append(cap)
        for condition, caps in by_condition.items():
            found.append(Note(len(found) + 1, col.title, tuple(caps), condition))
    return found


def cells(cols: list[Column]) -> list[tuple[Capability, list[str]]]:
    """Per capability, per column: yes, no, or "if [n]" with note n's condition."""
    numbers = {(note.column, cap): note.number for note in notes(cols) for cap in note.capabilities}
    return [(cap, [IF.format(numbers[col.title, cap]) if (col.title, cap) in numbers
                   else YES if cap in col.capabilities else NO for col in cols])
            for cap in Capability]


def columns(drivers: Mapping[str, type[Driver]] | None = None) -> list[Column]:
    """One column per driver class, schemes sharing a class merged, in scheme order."""
    found = registry.all_drivers() if drivers is None else dict(drivers)
    by_class: dict[type[Driver], list[str]] = {}
    for scheme in sorted(found):
        by_class.setdefault(found[scheme], []).append(scheme)
    return [
        Column(schemes=tuple(schemes), platform=cls.platform or cls.backend or schemes[0],
               capabilities=frozenset(cls.possible_capabilities),
               conditions=dict(cls.capability_conditions))
        for cls, schemes in by_class.items()
    ]


def rows(cols: list[Column]) -> list[tuple[Capability, list[bool]]]:
    return [(cap, [cap in col.capabilities for col in cols]) for cap in Capability]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def support_matrix_markdown(drivers: Mapping[str, type[Driver]] | None = None) -> str:
    """The support matrix as a Markdown table: a row per capability, a column per backend.

    It says what each driver *can* offer: "yes" on every connection, "if [n]" only where
    note n's condition holds (a version, a configuration: ESXi without vCenter cannot
    migrate). ``host.capabilities`` tells for a connection, ``host.why_not`` why not.
    """
    cols = columns(drivers)
    header = ["capability", "Python name", "meaning", *(f"`{c.title}`" for c in cols)]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---", "---", "---", *([":---:"] * len(cols))]) + " |",
    ]
    for cap, marks in cells(cols):
        row = [f"`{cap.value}`", f"`{python_name(cap)}`", _md_cell(describe(cap)), *marks]
        lines.append("| " + " | ".join(row) + " |")
    conditions = "\n".join(f"- {note.text(lambda t: f'`{t}`')}" for note in notes(cols))
    platforms = "\n".join(f"- `{c.title}`: {_md_cell(c.platform)}" for c in cols)
    return ("\n".join(lines)
            + "\n\nWhere a cell says \"if\", a connection has it only where the condition "
              "holds (`anyvirt capabilities URI` and `host.why_not(capability)` tell):\n\n"
            + conditions + "\n\nBackends installed when this was built:\n\n" + platforms + "\n")
