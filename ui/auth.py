"""Reviewer logins: a JSON file of user names with salted scrypt password hashes.

``{"format": "rrg-review-users", "users": {"NAME": {"scrypt": {"n", "r", "p"}, "salt": HEX, "hash": HEX}}}``

Passwords are never stored; checks compare in constant time. The file is written with mode 0600,
replaced atomically. ``python app.py --auth-file FILE --add-user NAME`` adds or resets a user.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from rrg_core.errors import RRGError

FORMAT = "rrg-review-users"
#: scrypt cost: 2**14 x 8 uses 16 MiB and about 50 ms a check (OWASP's minimum is 2**17 x 8 x 1 for
#: stored hashes of many users; a handful of reviewers behind a login page is the case here).
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


class AuthError(RRGError):
    """The logins file or a user entry is unusable; the message says what to fix."""


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024, dklen=32
    )


def check_name(name: str) -> str:
    """A user name: 1-64 letters, digits, space, dot, underscore, @ or -, starting with a letter or digit."""
    clean = (name or "").strip()
    if not _NAME.match(clean):
        raise AuthError(
            f"user name {clean[:40]!r} is not allowed: use 1 to 64 letters, digits, spaces or . _ @ - "
            "(starting with a letter or digit)"
        )
    return clean


@dataclass
class UserFile:
    """The logins of an auth file (empty when the file does not exist yet)."""

    path: Path
    users: dict[str, dict]

    @classmethod
    def load(cls, path: str | os.PathLike, *, must_exist: bool = True) -> UserFile:
        """Read the file; :class:`AuthError` when it is missing (``must_exist``), unreadable or malformed."""
        path = Path(path).expanduser()
        if not path.exists():
            if must_exist:
                raise AuthError(
                    f"no logins file at {path}: create it with "
                    f"python app.py --auth-file {path} --add-user NAME"
                )
            return cls(path, {})
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise AuthError(f"the logins file {path} cannot be read: {error}") from None
        if (
            not isinstance(document, dict)
            or document.get("format") != FORMAT
            or not isinstance(document.get("users"), dict)
        ):
            raise AuthError(f"{path} is not an rrg-review logins file (format {FORMAT!r})")
        return cls(path, document["users"])

    def add(self, name: str, password: str) -> None:
        """Add ``name`` or replace its password, and write the file."""
        name = check_name(name)
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"the password must have at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        digest = _hash(password, salt, **SCRYPT)
        self.users[name] = {"scrypt": dict(SCRYPT), "salt": salt.hex(), "hash": digest.hex()}
        self._write()

    def check(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (False for an unknown name, after the same work)."""
        entry = self.users.get((name or "").strip())
        try:
            params = entry["scrypt"] if entry else SCRYPT
            salt = bytes.fromhex(entry["salt"]) if entry else b"\0" * 16
            expected = bytes.fromhex(entry["hash"]) if entry else b"\0" * 32
            digest = _hash(password or "", salt, int(params["n"]), int(params["r"]), int(params["p"]))
        except (KeyError, TypeError, ValueError):
            return False
        return entry is not None and hmac.compare_digest(digest, expected)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp-{secrets.token_hex(4)}")
        data = json.dumps({"format": FORMAT, "users": self.users}, indent=2) + "\n"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def is_loopback(host: str) -> bool:
    """Whether ``host`` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    name = (host or "").strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
