"""Named connection profiles in a TOML file, and credentials from the environment.

The file is ``$ANYVIRT_CONFIG`` or ``config.toml`` in the platform's user
config dir (``~/.config/anyvirt/config.toml`` on Linux)::

    [profiles.lab]
    uri = "proxmox://root%40pam@pve1:8006"
    password_env = "PVE_PASSWORD"     # or: password = "..." (keep the file 0600)
    verify = false
    overcommit = "cpu=8,counts=defined"   # or a table: overcommit = { cpu = 8 }

A profile's ``password`` or ``token`` is read into a ``Secret`` at once.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import platformdirs

from anyvirt.errors import InvalidSpec, NotFound
from anyvirt.target import Secret

ENV_URI = "ANYVIRT_URI"
ENV_PROFILE = "ANYVIRT_PROFILE"
ENV_CONFIG = "ANYVIRT_CONFIG"
ENV_USERNAME = "ANYVIRT_USERNAME"
ENV_PASSWORD = "ANYVIRT_PASSWORD"  # noqa: S105 - the variable's name, not a password
ENV_TOKEN = "ANYVIRT_TOKEN"  # noqa: S105
ENV_OVERCOMMIT = "ANYVIRT_OVERCOMMIT"

_PROFILE_KEYS = {
    "uri", "username", "password", "password_env", "token", "token_env",
    "verify", "ca", "timeout", "overcommit",
}


def config_path() -> Path:
    override = os.environ.get(ENV_CONFIG)
    if override:
        return Path(override)
    return platformdirs.user_config_path("anyvirt") / "config.toml"


def load_profile(name: str) -> dict[str, Any]:
    """The settings of profile ``name``, with ``*_env`` indirections resolved."""
    path = config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"profile {name!r}: no config file at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSpec(f"config file {path} is not valid TOML: {exc}") from None
    profiles = data.get("profiles", {})
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise NotFound(f"no profile {name!r} in {path} (profiles: {known})")
    raw = dict(profiles[name])
    unknown = set(raw) - _PROFILE_KEYS
    if unknown:
        raise InvalidSpec(f"profile {name!r} has unknown keys: {', '.join(sorted(unknown))}")
    for secret in ("password", "token"):
        env = raw.pop(f"{secret}_env", None)
        if secret in raw:
            raw[secret] = Secret(str(raw[secret]))
        elif env is not None:
            if env not in os.environ:
                raise InvalidSpec(f"profile {name!r} reads {secret} from ${env}, which is not set")
            raw[secret] = Secret(os.environ[env])
    return raw


def from_environment() -> dict[str, str | Secret]:
    """Credentials from ANYVIRT_USERNAME / ANYVIRT_PASSWORD / ANYVIRT_TOKEN (the password
    and token as Secrets), and the overcommit policy from ANYVIRT_OVERCOMMIT."""
    out: dict[str, str | Secret] = {}
    for key, env in (("username", ENV_USERNAME), ("overcommit", ENV_OVERCOMMIT)):
        if os.environ.get(env):
            out[key] = os.environ[env]
    for key, env in (("password", ENV_PASSWORD), ("token", ENV_TOKEN)):
        if os.environ.get(env):
            out[key] = Secret(os.environ[env])
    return out
