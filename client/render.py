"""How ``sttd stream`` shows messages: plain lines for pipes and files, a live line rewritten in
place for a terminal."""

from __future__ import annotations

import json
import sys
from typing import Protocol, TextIO


def final_times(msg: dict) -> str:
    return f"[{msg['start_ms'] / 1000:7.2f}-{msg['end_ms'] / 1000:7.2f}] "


def final_line(msg: dict) -> str:
    return final_times(msg) + msg["text"]


class Renderer(Protocol):
    def show(self, msg: dict) -> None: ...

    def close(self) -> None: ...


class JsonRenderer:
    """Every message as one JSON line (``--json``)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout

    def show(self, msg: dict) -> None:
        print(json.dumps(msg, ensure_ascii=False), file=self._out, flush=True)

    def close(self) -> None:
        pass


class PlainRenderer:
    """One line per partial and per final: stable for scripts and tests."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout

    def show(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "partial":
            print(f"  … {msg['text']}", file=self._out, flush=True)
        elif kind == "final":
            print(final_line(msg), file=self._out, flush=True)

    def close(self) -> None:
        pass


class LiveRenderer:
    """The open segment's partial on one line rewritten in place (settled words normal, the
    rest dim); its final replaces it, with its times, and stays."""

    def __init__(self, console=None) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = console or Console()
        self._live = Live(console=self._console, auto_refresh=False, transient=True,
                          redirect_stderr=False)
        self._live.start()

    def show(self, msg: dict) -> None:
        from rich.text import Text

        kind = msg["type"]
        if kind == "partial":
            self._live.update(partial_text(msg), refresh=True)
        elif kind == "final":
            self._live.update(Text(""), refresh=True)
            if msg["text"]:
                line = Text()
                line.append(final_times(msg), style="cyan")
                line.append(msg["text"])
                self._live.console.print(line)
        elif kind == "warning":
            self._live.console.print(Text(f"⚠ {msg.get('message', msg)}", style="yellow"))

    def close(self) -> None:
        self._live.stop()


def partial_text(msg: dict):
    """``stable_text`` is a prefix of ``text``: those words are settled, the rest may change."""
    from rich.text import Text

    text, stable = msg["text"], msg.get("stable_text") or ""
    if not text.startswith(stable):
        stable = ""  # not promised by the protocol; show it all as provisional
    line = Text()  # no base style: it would apply to every part
    line.append("  … ", style="dim")
    line.append(stable)
    line.append(text[len(stable):], style="dim")
    return line


def renderer_for(json_lines: bool, out: TextIO | None = None) -> Renderer:
    out = out or sys.stdout
    if json_lines:
        return JsonRenderer(out)
    if out.isatty():
        return LiveRenderer()
    return PlainRenderer(out)
