# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The ``identity`` option of the modules that make VMs (anyvirt_vm, anyvirt_clone)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  identity:
    description:
      - Who a new VM is, applied by cloud-init on every platform. It holds the host name (by default the VM's
        name), users, extra cloud-config and per-NIC network settings.
      - It is given to VMs that the task creates, never to VMs that exist.
    type: dict
    suboptions:
      hostname:
        description: The host name; by default derived from the VM's name.
        type: str
      users:
        description: Logins to create.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: The login name.
            type: str
            required: true
          ssh_keys:
            description: Public keys allowed to log in.
            type: list
            elements: str
            default: []
          sudo:
            description: Passwordless sudo.
            type: bool
            default: false
          password_hash:
            description: A crypt hash of the password; without it the password is locked. Never logged.
            type: str
      user_data:
        description: Extra cloud-config (YAML text), merged with what anyvirt writes.
        type: str
      network:
        description: One entry per NIC, in the VM's NIC order; NICs without an entry use DHCP.
        type: list
        elements: dict
        default: []
        suboptions:
          dhcp:
            description: Ask DHCP (the default when O(identity.network[].addresses) is empty).
            type: bool
            default: false
          addresses:
            description: Fixed addresses with their prefix length, such as C(192.0.2.10/24).
            type: list
            elements: str
            default: []
          gateway:
            description: The IPv4 gateway.
            type: str
          gateway6:
            description: The IPv6 gateway.
            type: str
          nameservers:
            description: DNS servers.
            type: list
            elements: str
            default: []
          search:
            description: DNS search domains.
            type: list
            elements: str
            default: []
      instance_id:
        description: The cloud-init instance id; by default a new one.
        type: str
"""
