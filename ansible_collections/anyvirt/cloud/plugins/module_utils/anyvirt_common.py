# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What every anyvirt.cloud module shares: the connection options, connecting, turning
anyvirt's typed errors into a failed result, the spec and identity from module
parameters, and the facts a module returns about a VM.

The modules are thin: each one decides what should change (so check mode and --diff
come from the same decision) and calls anyvirt's public API to change it.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import anyvirt
    from anyvirt.deployment.identity import Dhcp, Static
except ImportError:
    anyvirt = None
    ANYVIRT_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    ANYVIRT_IMPORT_ERROR = None

#: The options every module takes to reach a platform (see doc_fragments/connection.py).
CONNECTION_ARGS: dict[str, Any] = {
    "uri": {"type": "str", "required": True},
    "password": {"type": "str", "no_log": True},
    "token": {"type": "str", "no_log": True},
    "verify": {"type": "bool"},
    "ca": {"type": "path"},
    "timeout": {"type": "float"},
}

#: memory:// hosts live inside one process; each module run is a process of its own.
MEMORY_REFUSED = ("memory:// lives in one process and cannot serve separate module runs: every task "
                  "would see an empty host. Use a real platform's URI (libvirt, vSphere, Proxmox, "
                  "VirtualBox).")

#: anyvirt's image formats (``anyvirt.model.IMAGE_FORMATS``) written out, because Ansible's sanity test
#: compares an argument spec's choices with DOCUMENTATION where anyvirt is not installed;
#: tests/ansible holds the two lists and anyvirt's equal.
IMAGE_FORMATS = ["raw", "qcow2", "vmdk", "vdi", "vpc", "vhdx"]

USER_ARGS: dict[str, Any] = {
    "name": {"type": "str", "required": True},
    "ssh_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},  # public keys
    "sudo": {"type": "bool", "default": False},
    "password_hash": {"type": "str", "no_log": True},
}

NIC_NETWORK_ARGS: dict[str, Any] = {
    "dhcp": {"type": "bool", "default": False},
    "addresses": {"type": "list", "elements": "str", "default": []},
    "gateway": {"type": "str"},
    "gateway6": {"type": "str"},
    "nameservers": {"type": "list", "elements": "str", "default": []},
    "search": {"type": "list", "elements": "str", "default": []},
}

IDENTITY_ARG: dict[str, Any] = {
    "type": "dict",
    "options": {
        "hostname": {"type": "str"},
        "users": {"type": "list", "elements": "dict", "options": USER_ARGS, "default": []},
        "user_data": {"type": "str"},
        "network": {"type": "list", "elements": "dict", "options": NIC_NETWORK_ARGS, "default": []},
        "instance_id": {"type": "str"},
    },
}


#: Where backups go: a portable archive file, or a backup repository (see doc_fragments/backup_target.py).
BACKUP_TARGET_ARGS: dict[str, Any] = {
    "path": {"type": "path"},
    "repository": {"type": "str"},
    "passphrase": {"type": "str", "no_log": True},
    "repository_password": {"type": "str", "no_log": True},
    "key_filename": {"type": "path"},
    "known_hosts": {"type": "path"},
}
BACKUP_TARGET_EXCLUSIVE = [("path", "repository")]


def open_repository(params: dict[str, Any], create: bool, missing_ok: bool = False) -> Any:
    """The ``repository`` option's ``anyvirt.BackupRepository`` (its secrets stay no_log); None
    with ``missing_ok`` where there is none yet (check mode, which must not make one)."""
    options = {key: params[key] for key in ("passphrase", "key_filename", "known_hosts") if params.get(key)}
    if params.get("repository_password"):
        options["password"] = params["repository_password"]
    try:
        return anyvirt.BackupRepository(params["repository"], create=create, **options)
    except anyvirt.NotFound:
        if missing_ok:
            return None
        raise


def target_connection_args(prefix: str) -> dict[str, Any]:
    """The connection options again, each named with ``prefix`` and none required."""
    return {prefix + key: {**value, "required": False} for key, value in CONNECTION_ARGS.items()}


def require_anyvirt(module: Any) -> None:
    if ANYVIRT_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("anyvirt"), exception=ANYVIRT_IMPORT_ERROR)


def is_memory_uri(uri: str) -> bool:
    return uri.strip().lower().startswith("memory:")


def connect(module: Any, prefix: str = "") -> Any:
    """An open ``anyvirt.Host`` for the module's URI, with its credentials (never logged:
    ``no_log`` on the options, and anyvirt keeps them out of errors). ``prefix`` picks a
    second set of the same options (``to_uri``, ``to_password``, ... for a move's target)."""
    require_anyvirt(module)
    params = module.params
    uri = params[prefix + "uri"]
    if is_memory_uri(uri):
        module.fail_json(msg=MEMORY_REFUSED)
    options = {key: params[prefix + key] for key in ("password", "token", "verify", "ca", "timeout")
               if params.get(prefix + key) is not None}
    try:
        return anyvirt.connect(uri, **options)
    except anyvirt.AnyvirtError as exc:
        fail(module, exc)
        raise  # not reached: fail_json exits


def fail(module: Any, exc: BaseException, **result: Any) -> None:
    """A typed anyvirt error as a failed result: anyvirt's message and the error's name."""
    module.fail_json(msg=str(exc), error=type(exc).__name__, **result)


@contextlib.contextmanager
def anyvirt_task(options: dict[str, Any], result: dict[str, Any],
                 refuse: Callable[[dict[str, Any]], str | None] | None = None,
                 **settings: Any) -> Iterator[tuple[Any, Any]]:
    """A module's whole run: the module with the connection options plus its own ``options``
    (check mode supported; ``settings`` are AnsibleModule's other arguments), ``refuse(params)``
    naming a bad combination before anything is reached, the connected host, anyvirt's typed
    errors as a failed task with ``result`` so far, the host closed, and ``result`` returned.

        with anyvirt_task(OPTIONS, result) as (module, host):
            ...
    """
    module = AnsibleModule(argument_spec={**CONNECTION_ARGS, **options}, supports_check_mode=True, **settings)
    reason = refuse(module.params) if refuse is not None else None
    if reason:
        module.fail_json(msg=reason)
    host = connect(module)
    try:
        yield module, host
    except anyvirt.AnyvirtError as exc:
        fail(module, exc, **result)
    finally:
        host.close()
    module.exit_json(**result)


def record_change(module: Any, result: dict[str, Any], changed: bool, before: dict[str, Any],
                  after: dict[str, Any]) -> bool:
    """Put a decided change in ``result`` (``changed``, and the ``diff`` under --diff); true when
    it is to be made, false in check mode, which only reports it."""
    result["changed"] = changed
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    return changed and not module.check_mode


def find_vm(host: Any, name: str) -> Any:
    """The VM named ``name`` (or with that id), or None when there is none."""
    try:
        return host.vms.get(name)
    except anyvirt.NotFound:
        return None


def find_snapshot(vm: Any, name: str) -> Any:
    """The VM's snapshot named ``name`` (or with that id), or None (also when there is no VM)."""
    if vm is None:
        return None
    try:
        return vm.snapshots.get(name)
    except anyvirt.NotFound:
        return None


def vm_facts(vm: Any) -> dict[str, Any]:
    """What a module returns about a VM: the listing's fields, plain values."""
    return {
        "id": vm.id,
        "name": vm.name,
        "state": vm.state.value,
        "cpus": vm.cpus,
        "memory_mib": vm.memory_mib,
        "node": vm.node,
        "template": vm.template,
    }


def address_facts(addresses: list[Any]) -> list[dict[str, Any]]:
    return [{"mac": a.mac, "ip": str(a.ip), "prefix": a.prefix, "source": a.source} for a in addresses]


def _nic_network(entry: dict[str, Any]) -> Any:
    if entry.get("dhcp") or not entry.get("addresses"):
        return Dhcp()
    return Static(entry["addresses"], gateway=entry.get("gateway"), gateway6=entry.get("gateway6"),
                  nameservers=entry.get("nameservers") or (), search=entry.get("search") or ())


def identity_from_params(value: dict[str, Any] | None) -> Any:
    """``anyvirt.Identity`` from the ``identity`` option (None when not given); anyvirt
    validates every field and raises ``InvalidSpec`` before anything is sent."""
    if value is None:
        return None
    users = [anyvirt.User(u["name"], ssh_keys=u.get("ssh_keys") or (), sudo=bool(u.get("sudo")),
                          password_hash=u.get("password_hash")) for u in value.get("users") or ()]
    return anyvirt.Identity(users=users, hostname=value.get("hostname"), user_data=value.get("user_data"),
                            network=[_nic_network(n) for n in value.get("network") or ()],
                            instance_id=value.get("instance_id"))


def spec_from_params(params: dict[str, Any]) -> Any:
    """``anyvirt.VMSpec`` from anyvirt_vm's options (anyvirt validates it)."""
    disks = [anyvirt.DiskSpec(size_gib=d.get("size_gib"), image=d.get("image"), bus=d.get("bus"),
                              storage=d.get("storage"), format=d.get("format")) for d in params.get("disks") or ()]
    nics = [anyvirt.NicSpec(network=n.get("network"), model=n.get("model"), mac=n.get("mac"))
            for n in params.get("nics") or ()]
    fields: dict[str, Any] = {"name": params["name"], "disks": disks, "nics": nics,
                              "identity": identity_from_params(params.get("identity"))}
    for key in ("cpus", "memory_mib", "node", "description", "guest_os", "firmware"):
        if params.get(key) is not None:
            fields[key] = params[key]
    return anyvirt.VMSpec(**fields)
