"""HAProxy agent-check responder: this process's free session slots as a server weight.

HAProxy's ``agent-check`` opens a TCP connection to ``agent-port`` every ``agent-inter`` and
reads one ASCII line (HAProxy 2.6 configuration manual, 5.2 "agent-check"). The line is what
``agent_reply`` returns:

- ``ready up 37%``: free slots / ``STT_MAX_SESSIONS`` as a share of the configured weight (at
  least 1 % while a slot is free), so ``balance leastconn`` favours the replica with most room;
  ``ready`` lifts a ``drain`` an earlier process on this port reported.
- ``ready up 0%`` when full: weight 0 takes no new sessions but stays UP (a full replica is
  healthy; ``drain`` would also need ``ready`` to undo, and reads as an operator's action).
- ``drain`` while draining (SIGTERM): open sessions finish, nothing new is sent here.
- ``down`` while the backend is not loaded or no inference thread runs.

Whatever HAProxy sends (``agent-send``) is ignored: the answer does not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from transport.context import ServerContext

log = structlog.get_logger("sttd")

_WRITE_TIMEOUT = 2.0  # an agent that cannot take one line this fast is not HAProxy


def agent_reply(ctx: ServerContext) -> str:
    """The one line HAProxy reads, with its newline."""
    if ctx.draining:
        return "drain\n"
    if not ctx.ready or ctx.pool.alive == 0:
        return "down\n"
    free, limit = max(ctx.slots.free, 0), ctx.slots.limit
    percent = max(1, free * 100 // limit) if free else 0
    return f"ready up {percent}%\n"


async def start_agent(ctx: ServerContext, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port``; a port already taken fails the start-up, like the HTTP one."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(agent_reply(ctx).encode("ascii"))
            async with asyncio.timeout(_WRITE_TIMEOUT):
                await writer.drain()
        except (OSError, TimeoutError):
            pass  # the checker went away: it asks again next interval
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(answer, host, port)
    except OSError as exc:
        raise RuntimeError(f"STT_AGENT_PORT {port} on {host}: {exc.strerror}; one agent per "
                           "process (with --workers, run one replica per port)") from exc
    log.info("agent.listening", host=host, port=port)
    return server


async def stop_agent(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()
