"""What a new machine is told about itself: ``Identity``, its ``User`` entries, and the
network of each NIC (``Dhcp`` or ``Static``).

Every value is checked when the object is made (``InvalidSpec`` naming the field),
so a spec that exists is one every platform compiler can use; what only some
platforms cannot carry (Proxmox's one native user, vSphere's size limits) is
refused by that platform's compiler, still before anything is sent.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable
from typing import Any, TypeAlias

import attrs
from attrs import field, frozen

from anyvirt.deployment.cloudconfig import parse_user_data
from anyvirt.deployment.hostnames import check_hostname, hostname_from_name
from anyvirt.deployment.sshkeys import parse_ssh_key
from anyvirt.secret import Secret
from anyvirt.validation import invalid

IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: useradd's portable rule (lower-case, digits, '_' and '-', not starting with a digit or
#: '-'), at most 32 characters (utmp's ut_user)
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: crypt(5) formats that are still sound: SHA-512, SHA-256, yescrypt, bcrypt
_CRYPT = {
    "SHA-512 ($6$)": re.compile(r"\$6\$(rounds=[0-9]{1,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}"),
    "SHA-256 ($5$)": re.compile(r"\$5\$(rounds=[0-9]{1,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{43}"),
    "yescrypt ($y$)": re.compile(r"\$y\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{1,86}\$[./0-9A-Za-z]{43}"),
    "bcrypt ($2b$)": re.compile(r"\$2[aby]\$[0-9]{2}\$[./0-9A-Za-z]{53}"),
}
MAX_USERS = 64
MAX_KEYS_PER_USER = 64
#: glibc reads at most 3 name servers (MAXNS) and, before 2.26, 6 search domains
MAX_NAMESERVERS = 3
MAX_SEARCH_DOMAINS = 6
#: cloud-init's special entry for the distribution's default user
RESERVED_USER_NAMES = ("default",)


def _tuple(value: Any, what: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise invalid(what, "type", f"{what} must be a list, not {type(value).__name__}")
    return tuple(value)


# ---------------------------------------------------------------- users


def _user_name(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise invalid("user name", "type", f"a user name must be a string, not {type(value).__name__}")
    if not _USER_NAME.fullmatch(value):
        raise invalid("user name", "characters",
                      f"user name {value[:40]!r} must be 1 to 32 of a-z, 0-9, '_' and '-', starting "
                      "with a letter or '_'")
    if value in RESERVED_USER_NAMES:
        raise invalid("user name", "reserved",
                      f"user name {value!r} means the distribution's own user to cloud-init; "
                      "choose another name")


def _ssh_keys(value: Any) -> tuple[str, ...]:
    keys = tuple(parse_ssh_key(key) for key in _tuple(value, "ssh_keys"))
    if len(keys) > MAX_KEYS_PER_USER:
        raise invalid("ssh_keys", "length", f"a user has at most {MAX_KEYS_PER_USER} SSH keys")
    return keys


def _bool(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise invalid(attribute.name, "type", f"{attribute.name} must be True or False")


def _secret_hash(value: Secret | str | None) -> Secret | None:
    """A hash given as text is kept as a :class:`~anyvirt.target.Secret` from here on, so no
    dict, frame or traceback the identity passes through shows it; it is revealed only
    where a seed document or a request is written."""
    return Secret(value) if isinstance(value, str) else value


def _password_hash(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    # never quote the value: a plain password given here by mistake must not reach a message
    if value is None:
        return
    if not isinstance(value, Secret):
        raise invalid("password_hash", "type",
                      f"password_hash must be a string, not {type(value).__name__}")
    if not any(rx.fullmatch(value.reveal()) for rx in _CRYPT.values()):
        raise invalid("password_hash", "crypt format",
                      "password_hash must be a crypt(5) hash, one of "
                      f"{', '.join(_CRYPT)} (e.g. from 'mkpasswd -m sha-512'); a plain password "
                      "is never accepted, and MD5 and DES hashes are too weak")


@frozen
class User:
    """A login to create: ``User("ops", ssh_keys=["ssh-ed25519 AAAA... me@laptop"], sudo=True)``.

    ``sudo=True`` grants passwordless sudo. Without ``password_hash`` the password
    is locked (keys only); the hash (text or a Secret) is kept as a
    :class:`~anyvirt.target.Secret`: ``user.password_hash.reveal()`` gives it back.
    """

    name: str = field(validator=_user_name)
    ssh_keys: tuple[str, ...] = field(default=(), converter=_ssh_keys)
    sudo: bool = field(default=False, validator=_bool)
    password_hash: Secret | None = field(default=None, converter=_secret_hash,
                                         validator=_password_hash, repr=False)


# ---------------------------------------------------------------- network


@frozen
class Dhcp:
    """This NIC asks DHCP for its IPv4 address (the default for every NIC)."""


def _interfaces(value: Any) -> tuple[IPInterface, ...]:
    out = []
    for item in _tuple(value, "addresses"):
        if isinstance(item, str) and "/" not in item:
            raise invalid("addresses", "prefix",
                          f"address {item[:60]!r} needs its prefix length, e.g. 192.0.2.10/24")
        try:
            iface = ipaddress.ip_interface(item)
        except (ValueError, TypeError):
            raise invalid("addresses", "address",
                          f"{str(item)[:60]!r} is not an IP address with a prefix length") from None
        ip = iface.ip
        if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
            raise invalid("addresses", "address", f"{iface} is not an address a NIC can be given")
        net = iface.network
        if net.num_addresses > 2 and ip in (net.network_address, net.broadcast_address):
            which = "network" if ip == net.network_address else "broadcast"
            raise invalid("addresses", "address", f"{iface} is its network's {which} address")
        out.append(iface)
    if not out:
        raise invalid("addresses", "empty", "a Static NIC needs at least one address")
    if len({i.ip for i in out}) != len(out):
        raise invalid("addresses", "duplicate", "a Static NIC lists one address twice")
    return tuple(out)


def _gateway(value: Any, version: int) -> IPAddress | None:
    if value is None:
        return None
    what = "gateway" if version == 4 else "gateway6"
    try:
        ip = ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise invalid(what, "address", f"{what} {str(value)[:60]!r} is not an IP address") from None
    if ip.version != version:
        raise invalid(what, "address", f"{what} must be an IPv{version} address, not {ip}")
    return ip


def _gateway4(value: Any) -> Any:
    return _gateway(value, 4)


def _gateway6(value: Any) -> Any:
    return _gateway(value, 6)


def _nameservers(value: Any) -> tuple[IPAddress, ...]:
    out = []
    for item in _tuple(value, "nameservers"):
        try:
            out.append(ipaddress.ip_address(item))
        except (ValueError, TypeError):
            raise invalid("nameservers", "address",
                          f"name server {str(item)[:60]!r} is not an IP address") from None
    if len(out) > MAX_NAMESERVERS:
        raise invalid("nameservers", "length", f"at most {MAX_NAMESERVERS} name servers (glibc reads "
                                               "no more)")
    return tuple(out)


def _search(value: Any) -> tuple[str, ...]:
    out = tuple(check_hostname(item, "search domain") for item in _tuple(value, "search"))
    if len(out) > MAX_SEARCH_DOMAINS:
        raise invalid("search", "length", f"at most {MAX_SEARCH_DOMAINS} search domains")
    return out


@frozen
class Static:
    """Fixed addresses for one NIC: ``Static(["192.0.2.10/24"], gateway="192.0.2.1",
    nameservers=["192.0.2.53"], search=["example.com"])``. Strings or ``ipaddress``
    objects are accepted; the fields hold ``ipaddress`` objects."""

    addresses: tuple[IPInterface, ...] = field(converter=_interfaces)
    gateway: ipaddress.IPv4Address | None = field(default=None, converter=_gateway4)
    gateway6: ipaddress.IPv6Address | None = field(default=None, converter=_gateway6)
    nameservers: tuple[IPAddress, ...] = field(default=(), converter=_nameservers)
    search: tuple[str, ...] = field(default=(), converter=_search)

    def __attrs_post_init__(self) -> None:
        for gateway, what in ((self.gateway, "gateway"), (self.gateway6, "gateway6")):
            if gateway is not None and not any(gateway in iface.network for iface in self.addresses):
                raise invalid(what, "on-link", f"{what} {gateway} is in none of the NIC's networks "
                                               f"({', '.join(str(i.network) for i in self.addresses)})")

    def of_version(self, version: int) -> tuple[IPInterface, ...]:
        return tuple(iface for iface in self.addresses if iface.version == version)


NicNetwork: TypeAlias = Dhcp | Static


def _network(value: Any) -> tuple[NicNetwork, ...]:
    items = _tuple(value, "network")
    for item in items:
        if not isinstance(item, Dhcp | Static):
            raise invalid("network", "type",
                          f"network lists one Dhcp() or Static(...) per NIC, not {type(item).__name__}")
    return items


# ---------------------------------------------------------------- identity


def _users(value: Any) -> tuple[User, ...]:
    users = _tuple(value, "users")
    for user in users:
        if not isinstance(user, User):
            raise invalid("users", "type", f"users lists User(...) entries, not {type(user).__name__}")
    names = [user.name for user in users]
    if len(set(names)) != len(names):
        raise invalid("users", "duplicate", "two users have the same name")
    if len(users) > MAX_USERS:
        raise invalid("users", "length", f"at most {MAX_USERS} users")
    return users


def _optional_hostname(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_hostname(value)


def _optional_user_data(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        parse_user_data(value)


def check_instance_id(value: object) -> str:
    if not isinstance(value, str) or not _INSTANCE_ID.fullmatch(value):
        raise invalid("instance_id", "characters",
                      "instance_id must be 1 to 128 of A-Z, a-z, 0-9, '.', '_' and '-', starting "
                      "with a letter or digit")
    return value


def _optional_instance_id(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_instance_id(value)


def new_instance_id() -> str:
    """A fresh instance id: cloud-init runs its once-per-instance steps again for it."""
    return f"iid-{uuid.uuid4().hex}"


@frozen
class Identity:
    """Who a new machine is: host name (None: from the VM's name), users, extra
    cloud-config (``user_data``, merged by the rule in :mod:`anyvirt.deployment.cloudconfig`),
    one ``Dhcp()`` or ``Static(...)`` per NIC in the VM's NIC order (NICs beyond the
    list, and all of them when it is empty, use DHCP), and the cloud-init instance id
    (None: a new one per VM, so a clone is a new instance)."""

    users: tuple[User, ...] = field(default=(), converter=_users)
    hostname: str | None = field(default=None, validator=_optional_hostname)
    user_data: str | None = field(default=None, validator=_optional_user_data)
    network: tuple[NicNetwork, ...] = field(default=(), converter=_network)
    instance_id: str | None = field(default=None, validator=_optional_instance_id)

    def resolve(self, vm_name: str, instance_id: str | None = None) -> ResolvedIdentity:
        """This identity for the VM named ``vm_name``: the host name and instance id made
        concrete (``instance_id`` given here wins over the spec's, which wins over a new one)."""
        hostname = self.hostname if self.hostname is not None else hostname_from_name(vm_name)
        chosen = instance_id if instance_id is not None else self.instance_id
        chosen = new_instance_id() if chosen is None else check_instance_id(chosen)
        return ResolvedIdentity(self, hostname=hostname, instance_id=chosen)


@frozen
class ResolvedIdentity:
    """An ``Identity`` for one VM: what the platform compilers take. Pure data: the same
    value compiles to the same bytes."""

    identity: Identity
    hostname: str = field(validator=lambda _i, _a, v: check_hostname(v))
    instance_id: str = field(validator=lambda _i, _a, v: check_instance_id(v))

    @property
    def short_hostname(self) -> str:
        return self.hostname.split(".", 1)[0]


__all__ = ["Dhcp", "IPAddress", "IPInterface", "Identity", "NicNetwork", "ResolvedIdentity", "Static",
           "User", "check_instance_id", "new_instance_id"]
