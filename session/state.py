"""One session's lifecycle as an explicit state machine: illegal transitions raise.

    OPEN ──eos/limit──▶ FINISHING ──end sent──▶ ENDED
      │                    │
      ├──server drain──▶ DRAINING ──shutting_down sent──▶ ENDED
      │                    │
      └──error───────────▶ FAILED ──error sent──▶ ENDED
    (any state) ──socket gone──▶ CLOSED

``outcome`` is what ``stt_sessions_total`` and ``session.closed`` report.
"""

from __future__ import annotations

from enum import Enum


class SessionState(Enum):
    OPEN = "open"  # reading the client and recognising
    FINISHING = "finishing"  # input is over (eos, audio limit): recognising what was accepted
    DRAINING = "draining"  # the server is stopping: recognising what was accepted, then 1012
    FAILED = "failed"  # an error is on its way to the client; no more recognition
    ENDED = "ended"  # the last message was sent and the socket closed by the server
    CLOSED = "closed"  # released; nothing more happens


class IllegalTransition(RuntimeError):
    pass


_NEXT: dict[SessionState, frozenset[SessionState]] = {
    SessionState.OPEN: frozenset({SessionState.FINISHING, SessionState.DRAINING,
                                  SessionState.FAILED, SessionState.ENDED,
                                  SessionState.CLOSED}),
    SessionState.FINISHING: frozenset({SessionState.DRAINING, SessionState.FAILED,
                                       SessionState.ENDED, SessionState.CLOSED}),
    SessionState.DRAINING: frozenset({SessionState.FAILED, SessionState.ENDED,
                                      SessionState.CLOSED}),
    SessionState.FAILED: frozenset({SessionState.ENDED, SessionState.CLOSED}),
    SessionState.ENDED: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


class Lifecycle:
    def __init__(self) -> None:
        self.state = SessionState.OPEN
        self.outcome = "disconnected"  # until the session ends otherwise

    @property
    def reading(self) -> bool:
        return self.state is SessionState.OPEN

    def to(self, state: SessionState) -> None:
        if state not in _NEXT[self.state]:
            raise IllegalTransition(f"session cannot go from {self.state.value} to {state.value}")
        self.state = state

    def ended(self, outcome: str) -> None:
        """The server sent its last message (``completed``, ``drained`` or ``error``)."""
        self.to(SessionState.ENDED)
        self.outcome = outcome

    def close(self, drain_requested: bool) -> None:
        if self.state is SessionState.CLOSED:
            return
        if self.state is not SessionState.ENDED and drain_requested:
            self.outcome = "drain_timeout"  # closed by the server before its final
        elif self.state is SessionState.FAILED:
            self.outcome = "error"
        self.to(SessionState.CLOSED)
