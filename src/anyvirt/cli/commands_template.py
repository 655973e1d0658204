"""``anyvirt template ...``: make a VM a template, deploy VMs from it, turn it back."""

from __future__ import annotations

import click

from anyvirt.cli.commands_vm import find_vm, run_task, timeout_option
from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.output import print_json, say, styled_state
from anyvirt.vm import VM


@click.group()
def template() -> None:
    """Templates: mark a stopped VM as one, deploy VMs from it, convert it back to a VM."""


@template.command()
@with_uri("VM")
@timeout_option()
@json_option
def mark(uri: str | None, vm: str, op_timeout: float, json_flag: bool) -> None:
    """Make a stopped VM a template: it can no longer start; `template deploy` copies it."""
    with settings().connect(uri, changes=True) as host:
        target = find_vm(host, vm)
        run_task(f"mark {target.name} as template",
                 lambda _: target.mark_template(wait=False, timeout=op_timeout), op_timeout, json_flag)
        if json_mode(json_flag):
            print_json(target.refresh().summary)
        else:
            say(f"{target.name}: now a template")


@template.command()
@with_uri("TEMPLATE", "NEW_NAME")
@click.option("--linked", is_flag=True, help="Share the template's disks copy-on-write.")
@click.option("--node", help="Node (hypervisor) to place the new VM on.")
@click.option("--start", "start_after", is_flag=True, help="Start the new VM once deployed.")
@timeout_option()
@json_option
def deploy(uri: str | None, template: str, new_name: str, linked: bool, node: str | None,
           start_after: bool, op_timeout: float, json_flag: bool) -> None:
    """Create a VM from a template (a full copy, or --linked)."""
    with settings().connect(uri, changes=True) as host:
        source = find_vm(host, template)
        made: VM = run_task(
            f"deploy {source.name}",
            lambda on_progress: source.clone(new_name, linked=linked, node=node, wait=False,
                                             timeout=op_timeout, on_progress=on_progress),
            op_timeout, json_flag)
        if start_after:
            run_task(f"start {made.name}",
                     lambda on_progress: made.start(wait=False, timeout=op_timeout, on_progress=on_progress),
                     op_timeout, json_flag)
        made.refresh()
        if json_mode(json_flag):
            print_json(made.summary)
        else:
            say(f"{made.name}: deployed from {source.name} (", styled_state(made.state), ")")


@template.command()
@with_uri("TEMPLATE")
@click.option("--node", help="Node to register the VM on, where the platform asks for one.")
@timeout_option()
@json_option
def convert(uri: str | None, template: str, node: str | None, op_timeout: float, json_flag: bool) -> None:
    """Turn a template back into an ordinary VM that can start."""
    with settings().connect(uri, changes=True) as host:
        target = find_vm(host, template)
        run_task(f"convert {target.name} to a VM",
                 lambda _: target.convert_to_vm(node=node, wait=False, timeout=op_timeout),
                 op_timeout, json_flag)
        if json_mode(json_flag):
            print_json(target.refresh().summary)
        else:
            say(f"{target.name}: now a VM (", styled_state(target.refresh().state), ")")
