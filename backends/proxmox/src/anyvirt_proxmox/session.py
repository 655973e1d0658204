"""One logged-in connection to a PVE API endpoint, on proxmoxer.

Two ways in, as PVE has them:

* a password: proxmoxer fetches a ticket and CSRF token, and renews the
  ticket after an hour (tickets expire after two); a 401 anyway (the ticket
  was revoked, the cluster restarted) logs in again, once, and repeats the
  request: PVE checks the ticket before it acts, so the refused request did
  nothing and repeating it is safe, writes included;
* an API token (``PVEAPIToken=user@realm!name=secret`` header, no CSRF), from
  ``?token_name=&token_value=`` or the keyword arguments of the same names.

TLS is verified unless the caller turned it off; ``?ca=`` trusts a bundle.
Every request carries the call timeout. Path segments are percent-encoded
here, once, so no caller's string reaches a URL as it is.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import quote

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException

from anyvirt.errors import AnyvirtError, AuthenticationFailed, ConnectionFailed, InvalidSpec
from anyvirt.target import Secret, Target
from anyvirt_proxmox.errors import translate_api_error, translate_transport_error

log = logging.getLogger("anyvirt.proxmox")

DEFAULT_PORT = 8006
KNOWN_OPTIONS = ("token_name", "token_value")


def _option(target: Target, key: str) -> str | None:
    value = target.options.get(key, target.query.get(key))
    return None if value is None else str(value.reveal() if isinstance(value, Secret) else value)


class Session:
    """The proxmoxer API object plus login, re-login and error translation."""

    def __init__(self, target: Target) -> None:
        if not target.host:
            raise InvalidSpec("proxmox:// needs a host, e.g. proxmox://root%40pam@pve1:8006")
        for key in target.query:
            if key not in KNOWN_OPTIONS:
                raise InvalidSpec(f"unknown option {key!r} for proxmox://; known: verify, ca, timeout, "
                                  "token_name, token_value")
        user = target.credentials.username
        if not user or "@" not in user:
            raise InvalidSpec("proxmox:// needs a user with its realm, e.g. proxmox://root%40pam@pve1 "
                              "(or username='root@pam')")
        self.target = target
        self.user = user
        self.port = target.port or DEFAULT_PORT
        token_value = _option(target, "token_value")
        if token_value is None and target.credentials.token:
            token_value = target.credentials.token.reveal()
        self._token_name = _option(target, "token_name")
        self._token = Secret(token_value) if token_value else None
        if self._token is not None and not self._token_name:
            raise InvalidSpec("an API token needs token_name= (the part after '!' in user@realm!name)")
        if self._token is None and not target.credentials.password:
            raise AuthenticationFailed(f"no password or API token given for {target.safe_uri}")
        self._verify: bool | str = (target.ca or True) if target.verify else False
        self._lock = threading.Lock()
        self._api: ProxmoxAPI | None = None
        self.logins = 0

    @property
    def uses_token(self) -> bool:
        return self._token is not None

    @property
    def base_url(self) -> str:
        host = f"[{self.target.host}]" if ":" in self.target.host else self.target.host
        return f"https://{host}:{self.port}/api2/json"

    # ------------------------------------------------------------ login
    def open(self) -> Session:
        self._login()
        return self

    def _login(self) -> ProxmoxAPI:
        what = f"logging in to {self.target.safe_uri}"
        try:
            if self._token is not None:
                api = ProxmoxAPI(self.target.host, port=self.port, user=self.user,
                                 token_name=self._token_name, token_value=self._token.reveal(),
                                 verify_ssl=self._verify, timeout=self.target.timeout)
                api.version.get()  # a token is only checked when used
            else:
                password = self.target.credentials.password
                assert password is not None
                api = ProxmoxAPI(self.target.host, port=self.port, user=self.user,
                                 password=password.reveal(), verify_ssl=self._verify,
                                 timeout=self.target.timeout)
        except AuthenticationError as exc:
            # proxmoxer says only "... code: N"; 401 is PVE refusing the password
            code = str(exc).rsplit("code:", 1)[-1].strip()
            err: AnyvirtError
            if code == "401":
                err = AuthenticationFailed(f"{what}: PVE refused the user or password (HTTP 401)")
            else:
                err = ConnectionFailed(f"{what}: the login answered HTTP {code}")
            raise err from exc.with_traceback(None)  # no frame holding the password survives
        except ResourceException as exc:
            raise translate_api_error(exc, what) from exc.with_traceback(None)
        except (requests.exceptions.RequestException, OSError) as exc:
            raise translate_transport_error(exc, what) from exc.with_traceback(None)
        self._api = api
        self.logins += 1
        return api

    def _current(self) -> ProxmoxAPI:
        with self._lock:
            return self._api if self._api is not None else self._login()

    def _relogin(self, stale: ProxmoxAPI) -> ProxmoxAPI:
        with self._lock:
            if self._api is stale:  # another thread may have logged in already
                log.info("PVE ticket refused; logging in again to %s", self.target.safe_uri)
                self._login()
            assert self._api is not None
            return self._api

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api._store["session"].close()

    @property
    def native(self) -> ProxmoxAPI:
        return self._current()

    # ------------------------------------------------------------ requests
    def call(self, method: str, path: tuple[object, ...], what: str, **params: Any) -> Any:
        """``method`` on the API path made of ``path`` segments (each percent-encoded), with
        ``params`` as query (GET, DELETE) or form (POST, PUT). Returns PVE's ``data``."""
        relative = "/".join(quote(str(seg), safe="") for seg in path)
        values = {k: _wire(v) for k, v in params.items() if v is not None}
        api = self._current()
        for attempt in (1, 2):
            try:
                return _send(api, method, relative, values)
            except ResourceException as exc:
                if exc.status_code == 401 and attempt == 1 and not self.uses_token:
                    api = self._relogin(api)
                    continue
                raise translate_api_error(exc, what) from exc
            except AuthenticationError as exc:
                # proxmoxer's hourly renewal (the ticket as password) was refused: log in afresh
                if attempt == 1:
                    api = self._relogin(api)
                    continue
                raise AuthenticationFailed(f"{what}: PVE refused to renew the ticket") from exc
            except (requests.exceptions.RequestException, OSError) as exc:
                raise translate_transport_error(exc, what) from exc
        raise AssertionError("unreachable")

    def get(self, path: tuple[object, ...], what: str, **params: Any) -> Any:
        return self.call("GET", path, what, **params)

    def post(self, path: tuple[object, ...], what: str, **params: Any) -> Any:
        return self.call("POST", path, what, **params)

    def put(self, path: tuple[object, ...], what: str, **params: Any) -> Any:
        return self.call("PUT", path, what, **params)

    def delete(self, path: tuple[object, ...], what: str, **params: Any) -> Any:
        return self.call("DELETE", path, what, **params)


def _wire(value: Any) -> Any:
    """PVE booleans are 0/1; everything else goes as text."""
    if isinstance(value, bool):
        return 1 if value else 0
    return value


def _send(api: ProxmoxAPI, method: str, relative: str, values: dict[str, Any]) -> Any:
    resource = api(relative)
    if method == "GET":
        return resource.get(**values)
    if method == "POST":
        return resource.post(**values)
    if method == "PUT":
        return resource.put(**values)
    if method == "DELETE":
        return resource.delete(**values)
    raise ValueError(f"unknown HTTP method {method}")
