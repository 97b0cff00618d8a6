"""Request fields every protocol validates the same way (WebSocket query, batch form)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationError

MAX_HOTWORDS = 100
MAX_HOTWORD_CHARS = 64
_LANGUAGE = re.compile(r"auto|[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def _language(v: str) -> str:
    if not _LANGUAGE.fullmatch(v):  # not match + "$": "$" also matches before a final "\n"
        raise ValueError("expected 'auto' or a BCP-47 tag such as 'en' or 'pt-BR'")
    return v.lower().replace("_", "-")


def _hotwords(v: Any) -> tuple[str, ...]:
    if isinstance(v, list | tuple):  # the parameter given more than once
        v = ",".join(map(str, v))
    words = tuple(w.strip() for w in str(v).split(",") if w.strip()) if v else ()
    if len(words) > MAX_HOTWORDS:
        raise ValueError(f"at most {MAX_HOTWORDS} hotwords")
    if any(len(w) > MAX_HOTWORD_CHARS for w in words):
        raise ValueError(f"each hotword at most {MAX_HOTWORD_CHARS} characters")
    return words


check_language = _language
Language = Annotated[str, AfterValidator(_language)]
Hotwords = Annotated[tuple[str, ...], BeforeValidator(_hotwords)]


def describe(exc: ValidationError) -> str:
    """One line naming each bad field and why."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "query"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if err["type"] != "missing" else f"{where} is required")
    return "; ".join(parts)
