"""API keys: who may generate. Optional; without `router.api_keys` every caller that reaches the port may.

Clients send `authorization: Bearer <key>` in the call metadata. The router holds only SHA-256 digests of the
keys (hex, from an environment variable and/or a file, e.g. a Kubernetes Secret), so neither the config nor the
replica's memory holds a usable key. A call without a key gets UNAUTHENTICATED, one with an unknown key
PERMISSION_DENIED, both before any decoding work; `grpc.health.v1` stays open for probes. Make a digest with
`printf %s "$KEY" | sha256sum`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Iterable

import grpc

from .config import ApiKeys
from .validation import RequestError

HEADER = "authorization"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _parse(text: str, source: str) -> set[str]:
    found = set()
    for line in text.splitlines():
        for item in re.split(r"[,\s]+", line.split("#", 1)[0].strip()):
            if not item:
                continue
            if not _DIGEST.match(item.lower()):
                raise ValueError(f"{source}: {item[:12]!r}... is not a SHA-256 hex digest (64 hex characters); "
                                 f"store `printf %s KEY | sha256sum`, never the key itself")
            found.add(item.lower())
    return found


def load_digests(keys: ApiKeys) -> frozenset[str]:
    """The accepted key digests; ValueError (naming the source) when a source is missing, malformed or empty:
    a server configured for keys never falls back to serving everyone."""
    found: set[str] = set()
    if keys.env is not None:
        if keys.env not in os.environ:
            raise ValueError(f"api_keys.env: environment variable {keys.env} is not set")
        found |= _parse(os.environ[keys.env], f"environment variable {keys.env}")
    if keys.file is not None:
        try:
            text = keys.file.read_text()
        except OSError as e:
            raise ValueError(f"api_keys.file: cannot read {keys.file}: {e.strerror}") from None
        found |= _parse(text, str(keys.file))
    if not found:
        raise ValueError("api_keys: no key digests found; add at least one")
    return frozenset(found)


def authorize(metadata: Iterable[tuple[str, str]], digests: frozenset[str] | None) -> None:
    """Raise RequestError unless the metadata carries one of the keys (always passes when keys are off)."""
    if digests is None:
        return
    values = [v for k, v in metadata if k.lower() == HEADER]
    if not values:
        raise RequestError(grpc.StatusCode.UNAUTHENTICATED,
                           f"this server needs an API key: send metadata `{HEADER}: Bearer <key>`")
    scheme, _, key = values[0].partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise RequestError(grpc.StatusCode.UNAUTHENTICATED, f"metadata `{HEADER}` must be `Bearer <key>`")
    presented = digest(key.strip())
    if not any(hmac.compare_digest(presented, d) for d in digests):
        raise RequestError(grpc.StatusCode.PERMISSION_DENIED, "the API key is not valid for this server")
