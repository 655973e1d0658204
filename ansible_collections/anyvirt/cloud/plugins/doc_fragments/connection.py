# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The connection options every anyvirt.cloud module shares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - The anyvirt connection URI of the platform, for example C(libvirt+qemu:///system),
        C(vsphere://administrator%40vsphere.local@vc1), C(proxmox://root%40pam@pve1:8006) or C(virtualbox://).
      - Put no password in it; use O(password) or O(token) (from a vault), or anyvirt's environment variables.
      - C(memory://) cannot be used here. It lives in one process, and each module run is a process of its own.
    type: str
    required: true
  password:
    description:
      - The password for the URI's user. It is never logged.
    type: str
  token:
    description:
      - An API token, where the platform takes one (Proxmox C(user@realm!id=secret)). It is never logged.
    type: str
  verify:
    description:
      - Verify the platform's TLS certificate. Leave it unset to use the URI's C(?verify=), which defaults to true.
    type: bool
  ca:
    description:
      - A CA bundle to trust for the platform's certificate.
    type: path
  timeout:
    description:
      - Seconds that bound every call to the platform.
    type: float
requirements:
  - anyvirt (and the anyvirt backend distribution of the platform) on the host that runs the module
notes:
  - The module runs where its task runs, usually C(localhost), and talks to the platform's API from there.
"""
