# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: anyvirt
short_description: The VMs of one or more platforms (libvirt, vSphere, Proxmox VE, VirtualBox) as inventory
version_added: "0.1.0"
description:
  - Lists the VMs of every URI with one listing per URI (anyvirt's C(host.vms.list())), and adds each as a host.
  - Groups them by backend (C(anyvirt_backend_libvirt)), node (C(anyvirt_node_pve1)), power state
    (C(anyvirt_state_running)) and template flag (C(anyvirt_templates)). Further groups, such as name patterns,
    come from O(groups) and O(keyed_groups).
  - Host variables are C(anyvirt_id), C(anyvirt_name), C(anyvirt_cpus), C(anyvirt_memory_mib), C(anyvirt_state),
    C(anyvirt_node), C(anyvirt_template), C(anyvirt_backend) and C(anyvirt_uri) (without credentials).
    With O(addresses), C(ansible_host) is the VM's first routable address. That costs one more call per running VM.
  - The file must end in C(anyvirt.yml) or C(anyvirt.yaml).
  - C(memory://) cannot be listed here. It lives in one process, and the plugin runs in Ansible's.
extends_documentation_fragment:
  - constructed
  - inventory_cache
requirements:
  - anyvirt (and the backend distributions of the platforms listed) on the controller
options:
  plugin:
    description: The name of this plugin. It must be C(anyvirt.cloud.anyvirt).
    required: true
    choices: [anyvirt.cloud.anyvirt]
    type: str
  uris:
    description:
      - The platforms to list. Each is a URI, or a mapping with C(uri) and optionally C(password), C(token),
        C(verify), C(ca) and C(timeout) for that URI alone (vault-encrypted values work).
    required: true
    type: list
    elements: raw
  password:
    description:
      - The password for every URI that has none of its own (vault-encrypted values work). It is never printed.
    type: str
    env:
      - name: ANYVIRT_PASSWORD
  token:
    description: The API token for every URI that has none of its own. It is never printed.
    type: str
    env:
      - name: ANYVIRT_TOKEN
  verify:
    description: Verify TLS certificates. Leave it unset to use each URI's C(?verify=), which defaults to true.
    type: bool
  ca:
    description: A CA bundle to trust.
    type: path
  timeout:
    description: Seconds that bound every call to a platform.
    type: float
  addresses:
    description:
      - Set C(ansible_host) to each running VM's first routable address. It needs one more call per running VM.
    type: bool
    default: false
  templates:
    description: List templates too. They are grouped in C(anyvirt_templates).
    type: bool
    default: true
"""

EXAMPLES = r"""
# inventory/anyvirt.yml: a KVM host and a Proxmox cluster, the password from a vault
plugin: anyvirt.cloud.anyvirt
uris:
  - libvirt+qemu+ssh://ops@kvm1/system
  - uri: proxmox://root%40pam@pve1:8006
    password: !vault |
      $ANSIBLE_VAULT;1.1;AES256
      ...
addresses: true
groups:
  webservers: anyvirt_name is match('web-')
keyed_groups:
  - key: anyvirt_cpus
    prefix: cpus
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/anyvirt-inventory
"""

import re
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

#: memory:// hosts live inside one process: the plugin would list an empty one.
MEMORY_REFUSED = "memory:// lives in one process and cannot be listed by the inventory plugin"
CONNECTION_KEYS = ("password", "token", "verify", "ca", "timeout")


def group_name(prefix: str, value: str) -> str:
    """A valid group name from platform text (a node's or state's name)."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', value)}"


def import_anyvirt() -> Any:
    """anyvirt, imported only when a listing is needed: importing it and its backends costs about as
    much as Ansible's own start, and a run served from the cache needs neither."""
    try:
        import anyvirt
    except ImportError:
        raise AnsibleError("the anyvirt inventory plugin needs the anyvirt Python package on the controller") from None
    return anyvirt


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "anyvirt.cloud.anyvirt"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(("anyvirt.yml", "anyvirt.yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        listings = None
        if use_cache:
            try:
                listings = self._cache[cache_key]
            except KeyError:
                listings = None
        if listings is None:
            anyvirt = import_anyvirt()
            listings = [self._list(anyvirt, target) for target in self._targets()]
            if self.get_option("cache"):
                self._cache[cache_key] = listings
        for listing in listings:
            self._add(listing)

    def _targets(self) -> list[dict[str, Any]]:
        """Each URI with its own connection options, the plugin's options filling the gaps."""
        shared = {key: self.get_option(key) for key in CONNECTION_KEYS}
        targets = []
        for entry in self.get_option("uris"):
            target = dict(entry) if isinstance(entry, dict) else {"uri": entry}
            if not target.get("uri"):
                raise AnsibleError("every entry of uris needs a uri")
            for key in CONNECTION_KEYS:
                if target.get(key) is None and shared[key] is not None:
                    target[key] = shared[key]
            for key in ("uri", "password", "token"):  # vault values decrypt here, into plain text
                if target.get(key) is not None:
                    target[key] = to_text(target[key])
            targets.append(target)
        return targets

    def _list(self, anyvirt: Any, target: dict[str, Any]) -> dict[str, Any]:
        """One URI's VMs as plain values (what the cache keeps: no secrets in it)."""
        uri = target.pop("uri")
        if uri.strip().lower().startswith("memory:"):
            raise AnsibleError(MEMORY_REFUSED)
        options = {key: value for key, value in target.items() if key in CONNECTION_KEYS and value is not None}
        try:
            with anyvirt.connect(uri, **options) as host:
                vms = host.vms.list()
                listing = {"uri": host.uri, "backend": host.backend, "vms": []}
                for vm in vms:
                    if vm.template and not self.get_option("templates"):
                        continue
                    entry = {"id": vm.id, "name": vm.name, "state": vm.state.value, "cpus": vm.cpus,
                             "memory_mib": vm.memory_mib, "node": vm.node, "template": vm.template,
                             "address": None}
                    if self.get_option("addresses") and vm.state is anyvirt.PowerState.RUNNING:
                        found = vm.addresses()
                        entry["address"] = str(found[0].ip) if found else None
                    listing["vms"].append(entry)
                return listing
        except anyvirt.AnyvirtError as exc:  # anyvirt's messages carry no secrets
            raise AnsibleError(f"anyvirt: {exc}") from None

    def _add(self, listing: dict[str, Any]) -> None:
        backend_group = self.inventory.add_group(group_name("anyvirt_backend", listing["backend"]))
        strict = self.get_option("strict")
        for vm in listing["vms"]:
            name = vm["name"]
            if name in self.inventory.hosts:  # two platforms, one name: keep both, apart
                name = f"{vm['name']}_{vm['id']}"
            self.inventory.add_host(name, group=backend_group)
            hostvars = {f"anyvirt_{key}": value for key, value in vm.items() if key != "address"}
            hostvars.update(anyvirt_backend=listing["backend"], anyvirt_uri=listing["uri"])
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
            if vm["address"]:
                self.inventory.set_variable(name, "ansible_host", vm["address"])
            self.inventory.add_child(self.inventory.add_group(group_name("anyvirt_state", vm["state"])), name)
            if vm["node"]:
                self.inventory.add_child(self.inventory.add_group(group_name("anyvirt_node", vm["node"])), name)
            if vm["template"]:
                self.inventory.add_child(self.inventory.add_group("anyvirt_templates"), name)
            self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)
