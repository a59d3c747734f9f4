"""Who may POST data or commands to the worker's HTTP endpoints.

Every endpoint that accepts data or commands (webhook ingest, ``/control``) requires a bearer
token; ``/metrics`` and ``/healthz`` are read-only and stay open. Tokens come from the
environment, never from topology.yaml:

- ``AIOPS_HTTP_TOKENS="alice=<token>,ci-bot=<token>"``, and/or
- ``AIOPS_HTTP_TOKENS_FILE=/run/secrets/aiops-tokens``: one ``name=token`` a line, ``#`` comments.

The name before ``=`` is the principal: it is what approvals and silences record as ``by``.
With no token configured every such endpoint answers 401 (a secure default, said in the body).

Tokens are kept only as SHA-256 digests, and a presented token is compared with every one of
them with :func:`hmac.compare_digest` (digests of equal length, no early exit), so the time a
check takes says nothing about which token, or how much of one, matched. No message here ever
contains a token.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MIN_TOKEN_LENGTH = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$")

UNCONFIGURED = ("no HTTP tokens are configured, so every data and command endpoint refuses requests: set "
                "AIOPS_HTTP_TOKENS='name=token,...' or AIOPS_HTTP_TOKENS_FILE (one name=token a line) "
                "in the worker's environment")


class AuthConfigError(ValueError):
    """The token configuration is invalid; ``str()`` names the entry, never the token."""


@dataclass(frozen=True)
class Authenticator:
    """Bearer tokens by principal name (as SHA-256 digests).

    Examples
    --------
    >>> auth = Authenticator.from_pairs({"alice": "s3cret-token-of-alice", "ci-bot": "another-long-token"})
    >>> auth.authenticate("Bearer s3cret-token-of-alice")
    'alice'
    >>> auth.authenticate("Bearer wrong") is None, auth.authenticate(None) is None
    (True, True)
    >>> Authenticator.from_pairs({}).configured
    False
    """

    _digests: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_pairs(cls, tokens: Mapping[str, str]) -> Authenticator:
        problems = []
        seen: dict[bytes, str] = {}
        for name, token in tokens.items():
            if not _NAME.match(name):
                problems.append(f"principal name {name[:64]!r}: letters, digits and ._@:- only, at most 64")
            if len(token) < MIN_TOKEN_LENGTH:
                problems.append(f"the token of {name[:64]!r} is too short (at least {MIN_TOKEN_LENGTH} characters)")
            d = _digest(token)
            if d in seen:
                problems.append(f"{name[:64]!r} and {seen[d]!r} have the same token: each principal needs its own")
            seen[d] = name
        if problems:
            raise AuthConfigError("; ".join(problems))
        return cls(tuple(sorted((name, _digest(token)) for name, token in tokens.items())))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Authenticator:
        """Tokens from ``AIOPS_HTTP_TOKENS`` and the file named by ``AIOPS_HTTP_TOKENS_FILE``."""
        pairs: dict[str, str] = {}
        inline = environ.get("AIOPS_HTTP_TOKENS", "")
        for i, item in enumerate(x for x in inline.split(",") if x.strip()):
            _add(pairs, item, f"AIOPS_HTTP_TOKENS entry {i + 1}")
        path = environ.get("AIOPS_HTTP_TOKENS_FILE", "")
        if path:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise AuthConfigError(f"AIOPS_HTTP_TOKENS_FILE {path}: cannot read it ({exc.strerror})") from None
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    _add(pairs, line, f"{path}:{n}")
        return cls.from_pairs(pairs)

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    @property
    def principals(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._digests)

    def authenticate(self, authorization: str | None) -> str | None:
        """The principal whose token the ``Authorization`` header carries, else ``None``."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = _digest(token.strip())
        found = None
        for name, digest in self._digests:  # every one, whatever matched: no early exit
            if hmac.compare_digest(presented, digest):
                found = name
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _add(pairs: dict[str, str], item: str, where: str) -> None:
    name, sep, token = item.strip().partition("=")
    name, token = name.strip(), token.strip()
    if not sep or not name or not token:
        raise AuthConfigError(f"{where}: expected name=token")
    if name in pairs:
        raise AuthConfigError(f"{where}: principal {name[:64]!r} is defined twice")
    pairs[name] = token


__all__ = ["AuthConfigError", "Authenticator", "MIN_TOKEN_LENGTH", "UNCONFIGURED"]
