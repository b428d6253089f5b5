"""`python -m streamer_pkg [--debug] [--init]`: run the streamer until SIGTERM / Ctrl-C.

Configuration comes from the environment through `chalice_app.config.Settings`
(WEBSOCKET_ENDPOINT, DEPTH_CACHE_URL / DEPTH_CACHE_HOST / VALKEY_HOST, STREAMER_HTTP_PORT,
DEBUG_MODE, LOG_LEVEL) plus the STREAMER_* tunables of docs/streamer.md. Exit codes:
0 clean stop, 1 a tier loop crashed (a bug; logged), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from chalice_app import keys
from chalice_app.config import Settings
from chalice_app.logs import setup_logging
from streamer_pkg.tiers import Streamer, StreamerOptions

log = logging.getLogger("supernoba.streamer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m streamer_pkg",
        description="Push order-book depth, candles and tickers from the Valkey depth cache to "
        "WebSocket connections (PostToConnection): logged-in every 50 ms and on each engine "
        "change notification, anonymous every 500 ms.",
    )
    p.add_argument("--debug", action="store_true", help="DEBUG logs (same as DEBUG_MODE=true)")
    p.add_argument("--init", action="store_true",
                   help=f"reset the anonymous-tier cache ({keys.STREAMER_ANON_CACHE}) before starting, so every "
                   "anonymous subscriber gets a full snapshot")
    return p.parse_args(argv)


async def _run(streamer: Streamer) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, streamer.request_stop)
    await streamer.run_forever()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # e.g. STREAMER_REALTIME_MS=abc
        setup_logging(logging.INFO)
        log.error("event=bad_config error=%s", exc)
        return 2
    debug = args.debug or settings.debug_mode
    setup_logging(logging.DEBUG if debug else settings.log_level, quiet_level=logging.INFO)
    try:
        streamer = Streamer(settings, StreamerOptions.from_settings(settings), init=args.init)
    except ValueError as exc:
        log.error("event=bad_config error=%s", exc)
        return 2
    asyncio.run(_run(streamer))
    return 1 if streamer.failed else 0


if __name__ == "__main__":
    sys.exit(main())
