"""Command line of engine_pkg: ``python -m engine_pkg [--debug] [--dev]`` runs the service,
``python -m engine_pkg replay FILE|- [--depth N]`` replays order commands (SPEC section 10)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from chalice_app.messages import DEPTH_LEVELS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine_pkg",
        description="Supernoba matching engine. Without a subcommand: the long-running service "
        "(Kinesis in, Valkey + Kinesis out).",
    )
    p.add_argument("--debug", action="store_true", help="DEBUG logging")
    p.add_argument(
        "--dev",
        action="store_true",
        help="clear this engine's caches and snapshots, start with empty books from LATEST",
    )
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("replay", help="replay JSON Lines order commands; print events and final depth")
    r.add_argument("file", help="JSON Lines file of order commands, or - for stdin")
    r.add_argument("--depth", type=int, default=DEPTH_LEVELS, metavar="N",
                   help="depth levels per side (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "replay":
        from chalice_app.logs import setup_logging

        setup_logging(logging.DEBUG if args.debug else logging.INFO)
        from engine_pkg.replay import main as replay_main

        return replay_main(args.file, args.depth)
    # lazy: replay works without the service package; the service sets up its own logging
    service_main = importlib.import_module("engine_pkg.service.main")
    rc = service_main.main(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
