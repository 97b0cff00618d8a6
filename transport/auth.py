"""Who may connect: bearer tokens and the WebSocket Origin allow-list, checked before a
WebSocket is accepted or a request body is read."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import structlog

from config import Settings

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

    def authorised(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """``Authorization: Bearer <token>``, or ``?token=`` (browsers cannot set headers on
        a WebSocket). Every configured token is compared in constant time."""
        if not self._tokens:
            return True
        presented = _bearer(headers.get("authorization", "")) or query.get("token", "")
        candidate = presented.encode()
        matched = False
        for token in self._tokens:  # no early exit: timing says nothing about which token
            matched |= hmac.compare_digest(candidate, token)
        return matched

    def origin_allowed(self, headers: Mapping[str, str]) -> bool:
        """Browsers send ``Origin``; other clients may not, and are not origin-bound."""
        origin = headers.get("origin")
        return not self._origins or origin is None or origin in self._origins


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
