"""Deployment: a new machine's identity, compiled to each platform's own mechanism.

* :class:`Identity`, :class:`User`, :class:`Dhcp`, :class:`Static`: the spec, checked
  when made (``InvalidSpec`` naming the field);
* :meth:`Identity.resolve` and :func:`for_clones`: the identity of one VM, or of each
  clone of a bulk clone (its own host name and instance id);
* the compilers, pure functions on plain values (no platform SDK):
  :func:`compile_nocloud` and :func:`seed_iso` (libvirt, VirtualBox),
  :func:`compile_vsphere` (guestinfo extraConfig), :func:`compile_proxmox` (native
  cloud-init keys, and whether a snippet would be needed).

``VMSpec(identity=...)`` and ``clone(..., identity=...)`` resolve the identity of
each new VM here (in the gate's checks, before anything is sent) and hand it to the
driver's ``apply_identity``; the compilers are usable on their own as well.
"""

from anyvirt.deployment.clones import for_clones
from anyvirt.deployment.identity import Dhcp, Identity, ResolvedIdentity, Static, User
from anyvirt.deployment.nocloud import NoCloudSeed, compile_nocloud, seed_iso, write_seed_iso
from anyvirt.deployment.proxmox import ProxmoxCloudInit, compile_proxmox
from anyvirt.deployment.vsphere import compile_vsphere

__all__ = [
    "Dhcp",
    "Identity",
    "NoCloudSeed",
    "ProxmoxCloudInit",
    "ResolvedIdentity",
    "Static",
    "User",
    "compile_nocloud",
    "compile_proxmox",
    "compile_vsphere",
    "for_clones",
    "seed_iso",
    "write_seed_iso",
]
