"""Error-translation tables: a platform's exceptions to anyvirt's error tree, by ordered rules.

Each backend meets a zoo of exceptions (SDK faults, HTTP statuses, socket and
TLS errors, error codes inside messages). A table says, in one readable
place, which becomes which: the first matching :class:`Rule` decides the
anyvirt class and the message. The original is chained (``__cause__``), so
nothing is lost for debugging, while the message itself is built from a
template and scrubbed of anything that looks like a secret (a password
option, credentials in a URL, a session cookie, and the session's own
secrets when the table is told them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import field, frozen

from anyvirt.errors import AnyvirtError

_SECRET_PATTERNS = (
    # password=..., token: ..., api_key=...: the value up to a separator
    re.compile(r"(?i)\b(pass(?:word|wd)?|token|secret|api[_-]?key|ticket|csrf\w*)(\s*[=:]\s*)"
               r"(\"[^\"]*\"|'[^']*'|[^\s&,;]+)"),
    re.compile(r"(?i)(://[^/\s:@]*:)[^@\s/]+@"),  # scheme://user:password@host
    re.compile(r"(?i)\b(authorization|cookie|set-cookie)(\s*:\s*)([^\r\n]+)"),
    re.compile(r"(?i)\b(vmware_soap_session|PVEAuthCookie)(=)(\"[^\"]*\"|[^\s;]+)"),
)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret-looking value (and each of ``secrets``) masked."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_mask, text)
    return text


def _mask(match: re.Match[str]) -> str:
    groups = match.groups()
    if len(groups) == 1:  # the URL form: keep "://user:"
        return f"{groups[0]}***@"
    return f"{groups[0]}{groups[1]}***"


@frozen
class Rule:
    """When an exception matches (all given criteria), which error to raise, with what message.

    ``types``: isinstance of one of them; ``codes``: the table's code of the
    exception is one of them (an HTTP status, an SDK error number);
    ``pattern``: a regular expression found in its message. ``template`` may
    use ``{what}`` (the caller's "creating VM 'web1'"), ``{message}``,
    ``{type}``, ``{code}`` and the table's extra fields. ``build`` makes the
    error where its class does not take just a message (``NotSupported``).
    ``detail`` replaces the table's message for this rule.
    """

    error: type[AnyvirtError]
    types: tuple[type[BaseException], ...] = ()
    codes: tuple[object, ...] = ()
    pattern: str | None = None
    template: str = "{what}: {message}"
    build: Callable[[str, str], AnyvirtError] | None = None  # (message, what) -> error
    detail: Callable[[BaseException], str] | None = None
    _regex: re.Pattern[str] | None = field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "_regex", re.compile(self.pattern, re.IGNORECASE))

    def matches(self, exc: BaseException, code: object, message: str) -> bool:
        if self.types and not isinstance(exc, self.types):
            return False
        if self.codes and code not in self.codes:
            return False
        return self._regex is None or bool(self._regex.search(message))


class ErrorTable:
    """An ordered list of rules, the last word ``default``, and how to read an exception.

    ``code`` and ``message`` read the exception (``message`` defaults to
    ``str``); ``fields`` adds template fields; ``secrets`` gives strings that
    must never appear (a session's password), asked for at translation time.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        default: Rule,
        code: Callable[[BaseException], object] | None = None,
        message: Callable[[BaseException], str] = str,
        fields: Callable[[BaseException], Mapping[str, object]] | None = None,
        secrets: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.default = default
        self._code = code
        self._message = message
        self._fields = fields
        self._secrets = secrets

    def rule_for(self, exc: BaseException) -> Rule:
        code = self._code(exc) if self._code is not None else None
        message = self._message(exc)
        return next((r for r in self.rules if r.matches(exc, code, message)), self.default)

    def translate(self, exc: BaseException, what: str) -> AnyvirtError:
        """The anyvirt error for ``exc`` raised while doing ``what``, with ``exc`` as its cause.
        An AnyvirtError is already translated and comes back as it is."""
        if isinstance(exc, AnyvirtError):
            return exc
        rule = self.rule_for(exc)
        code = self._code(exc) if self._code is not None else None
        values: dict[str, Any] = {
            "what": what,
            "message": rule.detail(exc) if rule.detail is not None else self._message(exc),
            "type": type(exc).__name__,
            "code": code,
        }
        if self._fields is not None:
            values.update(self._fields(exc))
        secrets = tuple(self._secrets()) if self._secrets is not None else ()
        text = scrub(rule.template.format_map(values), secrets)
        error = rule.build(text, what) if rule.build is not None else rule.error(text)
        error.__cause__ = exc
        return error


def without_frames(exc: BaseException) -> BaseException:
    """``exc`` and everything chained to it with their tracebacks dropped.

    An SDK's frames under a failed call hold what it was sent in their locals (the
    call's arguments, the request body): a revealed password at a login, a password
    hash in an identity's request. A traceback kept on the chain would hand them to
    ``pytest --showlocals``, Sentry or any debugger. The type and message, all a
    caller needs, stay.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        item.__traceback__ = None
        pending += [item.__cause__, item.__context__]
    return exc


__all__ = ["ErrorTable", "Rule", "scrub", "without_frames"]
