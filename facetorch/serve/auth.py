"""API keys: a key file of ``read KEY`` / ``admin KEY`` lines, sent as ``Authorization: Bearer KEY``.

``read`` may recognise, verify and list people; ``admin`` may also enrol and delete. A missing or
unknown key gets 401, a read key on an admin route 403. Keys are compared in constant time and
never written anywhere: not in a message, not in a log line (errors about the key file name the
line, not the key). Without a key file the service is open, and the command line refuses to bind
anything but a loopback address (:func:`check_bind`).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Optional

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facetorch.serve.inputs import ApiError

__all__ = ["ROLES", "Keys", "check_bind", "load_keys"]

ROLES = ("read", "admin")
MIN_KEY = 16  # characters: a key anyone could guess protects nothing

bearer = HTTPBearer(auto_error=False, description="an API key of the key file (read or admin)")


class Keys:
    """The keys of a key file and their roles; ``None`` keys: the service is open (loopback only)."""

    def __init__(self, roles: Optional[dict[str, str]] = None) -> None:
        self._roles = dict(roles) if roles is not None else None

    @property
    def enabled(self) -> bool:
        """Whether requests must send a key."""
        return self._roles is not None

    def role_of(self, key: str) -> Optional[str]:
        """The key's role, or None; every known key is compared (in constant time), so timing tells nothing."""
        found = None
        for known, role in (self._roles or {}).items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = role
        return found

    def require(self, role: str) -> Callable[..., Awaitable[str]]:
        """A FastAPI dependency that lets a request through with a key of ``role`` (admin keys may do what read keys may)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")

        async def check(credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer)]) -> str:
            if not self.enabled:
                return "admin"
            if credentials is None or not credentials.credentials:
                raise _unauthorized("send an API key as 'Authorization: Bearer KEY'")
            held = self.role_of(credentials.credentials)
            if held is None:
                raise _unauthorized("the API key is not valid")
            if role == "admin" and held != "admin":
                raise ApiError(403, "this needs an admin key; the key sent is a read key")
            return held

        return check


class _Unauthorized(ApiError):
    headers = {"WWW-Authenticate": "Bearer"}


def _unauthorized(message: str) -> ApiError:
    return _Unauthorized(401, message)


def load_keys(path: Optional[str | Path]) -> Keys:
    """The keys of ``path`` (``None``: no key file, an open service).

    Lines are ``read KEY`` or ``admin KEY``; blank lines and lines starting with ``#`` are skipped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line, an unknown role, a key shorter than 16 characters, one key
            with two roles, or no key at all (the message names the line, never the key).
    """
    if path is None:
        return Keys(None)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--api_keys {str(path)!r} does not exist (expected lines 'read KEY' or 'admin KEY')")
    roles: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"--api_keys {str(path)!r} line {number}"
        if len(words) != 2 or words[0] not in ROLES:
            raise ValueError(f"{where}: expected 'read KEY' or 'admin KEY' (a role, a space, a key without spaces), got "
                             f"{len(words)} words starting with {words[0][:8]!r}")  # fmt: skip
        role, key = words
        if len(key) < MIN_KEY:
            raise ValueError(f"{where}: the key has {len(key)} characters; use at least {MIN_KEY} (e.g. python -c "
                             "\"import secrets; print(secrets.token_urlsafe(32))\")")  # fmt: skip
        if roles.get(key, role) != role:
            raise ValueError(f"{where}: this key is also listed as {roles[key]!r}; give each key one role")
        roles[key] = role
    if not roles:
        raise ValueError(f"--api_keys {str(path)!r} holds no key (expected lines 'read KEY' or 'admin KEY')")
    return Keys(roles)


def check_bind(host: str, keys: Keys) -> None:
    """Refuse to serve an open service (no key file) on anything but a loopback address.

    Raises:
        ValueError: ``host`` is not loopback and there is no key file.
    """
    if keys.enabled or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--host {host!r} is not a loopback address and there is no --api_keys file: anyone who reaches "
                         "the port could enrol and delete people. Give --api_keys FILE (lines 'read KEY' / 'admin KEY'), "
                         "or serve on 127.0.0.1 behind a reverse proxy")  # fmt: skip
