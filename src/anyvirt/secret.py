"""A string that will not show itself, and the helper that makes one: a leaf (it imports
nothing of anyvirt's), so value types anywhere (an identity's password hash, a connection's
password) can hold one."""

from __future__ import annotations

from typing import Any


class Secret:
    """A string that will not show itself. Call ``reveal()`` at the one place it is sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def as_secret(value: Secret | str | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(str(value))
