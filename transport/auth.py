"""Who may connect: API keys and the WebSocket Origin allow-list, checked before a WebSocket
is accepted or a request body is read.

Each protocol names where its clients put the key (``protocol.common.Credential``): an
``Authorization`` scheme (``Bearer``, Deepgram's ``Token``), a query parameter, or a
``Sec-WebSocket-Protocol`` entry (browsers: ``openai-insecure-api-key.<key>``, or Deepgram's
pair ``token, <key>``). A new place
is one reader in ``_READERS``."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import structlog

from config import Settings
from protocol.common import BEARER, QUERY_TOKEN, Credential

log = structlog.get_logger("sttd.auth")


class Gate:
    def __init__(self, settings: Settings) -> None:
        self._tokens = [t.encode() for t in settings.auth_token_list]
        self._origins = set(settings.allowed_origin_list)
        self.protect_metrics = settings.metrics_auth
        if self.protect_metrics and not self._tokens:
            # Kept open, not refused: there is no token to check, every endpoint is open
            # anyway, and a deployed config should not stop starting (or scraping) on upgrade.
            log.warning("auth.metrics_open", reason="STT_METRICS_AUTH=true has no effect "
                        "without STT_AUTH_TOKENS: /metrics and every other endpoint are open")

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def authorised(self, headers: Mapping[str, str], query: Mapping[str, str],
                   credentials: tuple[Credential, ...] = (BEARER, QUERY_TOKEN)) -> bool:
        """Whether the key presented first, in the order of ``credentials``, matches a
        configured token (a wrong header is not rescued by a query parameter). Every
        configured token is compared in constant time."""
        if not self._tokens:
            return True
        presented = next((key for c in credentials
                          if (key := _READERS[c.where](c.name, headers, query))), "")
        candidate = presented.encode()
        matched = False
        for token in self._tokens:  # no early exit: timing says nothing about which token
            matched |= hmac.compare_digest(candidate, token)
        return matched

    def origin_allowed(self, headers: Mapping[str, str]) -> bool:
        """Browsers send ``Origin``; other clients may not, and are not origin-bound."""
        origin = headers.get("origin")
        return not self._origins or origin is None or origin in self._origins


def _header(scheme: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """``Authorization: <scheme> <key>``, the scheme in any case (Deepgram sends ``bearer``)."""
    given, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if given.lower() == scheme else ""


def _query(name: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    return query.get(name, "")


def _subprotocol(prefix: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    for offered in headers.get("sec-websocket-protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith(prefix):
            return offered[len(prefix):]
    return ""


def _subprotocol_pair(name: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """Deepgram's browser form, ``new WebSocket(url, ["token", key])``: the entry after
    ``name`` is the key."""
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    for i, entry in enumerate(offered[:-1]):
        if entry.lower() == name:
            return offered[i + 1]
    return ""


_READERS = {"header": _header, "query": _query, "subprotocol": _subprotocol,
            "subprotocol_pair": _subprotocol_pair}
