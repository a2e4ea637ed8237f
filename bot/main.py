"""Composition root and command line: ``nemobot <command>``.

Connections (the HTTP client, the database, the platform adapters) are created here, inside one
``AsyncExitStack``, and handed to the parts that use them; nothing holds a connection globally.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from bot import __version__

log = logging.getLogger(__name__)


def _configure_logging() -> None:
    level = os.environ.get("NEMOBOT_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request URL at INFO; keep those out of the bot's log unless debugging.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemobot",
        description="Edit and generate videos by chatting, through NemoVideo or the local localnemo server.",
        epilog="Settings are read from the environment (and ./.env); see the README for the full list.",
    )
    parser.add_argument("--version", action="version", version=f"nemobot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve-local",
        help="run localnemo, the NemoVideo-compatible server, on this machine",
        description=(
            "Run localnemo: a NemoVideo-compatible HTTP/SSE server, the backend of the tests and of "
            "offline use. Point the bot at it with NEMO_API_BASE=http://HOST:PORT. "
            "Reads LOCALNEMO_DATA_DIR (default: a new temporary folder), LOCALNEMO_DIALECT (adk|simple), "
            "LOCALNEMO_JOB_SHAPE (top|wrapped), LOCALNEMO_RENDER_STEP_SECONDS, LOCALNEMO_HEARTBEAT_SECONDS, "
            "LOCALNEMO_SILENT_EVERY, LOCALNEMO_CREDITS."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 = any free)")
    return parser


async def _serve_local(host: str, port: int) -> None:
    from localnemo.config import LocalNemoConfig
    from localnemo.server import serve_forever

    await serve_forever(host, port, LocalNemoConfig.from_env())


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    _configure_logging()
    try:
        if args.command == "serve-local":
            asyncio.run(_serve_local(args.host, args.port))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
