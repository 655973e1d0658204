"""Templates on VirtualBox, which has none of its own: anyvirt's mark in the VM's extra data.

``setextradata <uuid> anyvirt/template 1`` marks a VM; setting the key to nothing removes
it. VirtualBox keeps extra data in the VM's ``.vbox`` file, where the listing reads the
mark without a process per VM (``settings.MachineFacts.template``). The gate refuses to
start or change a template (the rules table, on ``VMSummary.template``); ``clonevm`` copies
extra data, so a clone's copy of the mark is removed as it is made.
"""

from __future__ import annotations

from anyvirt.tasks import Job
from anyvirt_virtualbox import machines
from anyvirt_virtualbox.runner import VBoxManage
from anyvirt_virtualbox.settings import TEMPLATE_KEY


def mark(vbox: VBoxManage, vm_id: str, template: bool, job: Job) -> None:
    """Mark the VM as a template, or (``template=False``) remove the mark."""
    job.check()
    uuid = machines.resolve(vbox, vm_id)
    value = ["1"] if template else []  # no value: VirtualBox deletes the key
    vbox.run(["setextradata", uuid, TEMPLATE_KEY, *value],
             f"{'marking' if template else 'unmarking'} VM {vm_id} as a template",
             timeout=job.remaining(120.0))


def is_template(vbox: VBoxManage, vm_id: str) -> bool:
    facts = machines.facts_for(vbox, vm_id)
    return facts is not None and facts.template
