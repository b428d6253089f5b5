"""`python -m tools.load` — run one load against a running local stack and print the table.

    make load ARGS="--clients 100 --mode mixed --rate 100 --duration 30"

Exit status: 0 when nothing was lost (every accepted order reached a final status, every
expected message was delivered) and the REST API answered no request with a 5xx, 1 otherwise,
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import uuid

from chalice_app.config import ENV
from chalice_app.logs import setup_logging
from tools.load.model import LoadConfig, build_report
from tools.load.runner import run_load


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rest", default=os.environ.get(ENV.SUPERNOBA_REST_URL, LoadConfig.rest_url),
                   help="REST base URL (default %(default)s)")
    p.add_argument("--ws", default=os.environ.get(ENV.SUPERNOBA_WS_URL, LoadConfig.ws_url),
                   help="WebSocket URL (default %(default)s)")
    p.add_argument("--clients", type=int, default=20, help="WebSocket clients besides the traders (default 20)")
    p.add_argument("--mode", choices=("logged-in", "anonymous", "mixed"), default="mixed")
    p.add_argument("--rate", type=float, default=20.0, help="orders per second (default 20)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of order flow (default 10)")
    p.add_argument("--symbols", default="TEST", help="comma-separated symbols (default TEST)")
    p.add_argument("--users", type=int, default=8, help="trading users (default 8)")
    p.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for final statuses")
    p.add_argument("--admin-key", default=os.environ.get(ENV.ADMIN_API_KEY, ""),
                   help="X-Admin-Key to make the symbols active (default $ADMIN_API_KEY)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--verbose", "-v", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        cfg = LoadConfig(rest_url=args.rest, ws_url=args.ws, clients=args.clients, mode=args.mode, rate=args.rate,
                         duration=args.duration, symbols=tuple(s.strip() for s in args.symbols.split(",") if s.strip()),
                         users=args.users, drain=args.drain, admin_key=args.admin_key, seed=args.seed,
                         run_id=uuid.uuid4().hex[:6])
    except ValueError as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 2
    rec, depth_u = asyncio.run(run_load(cfg))
    report = build_report(rec, final_depth_u=depth_u)
    print(report.table())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report.as_dict(), fh, indent=2, default=str)
    lost = report.orders_lost + report.orders_open + report.lost_messages
    server_errors = sum(n for kind, n in report.errors.items() if kind.startswith("rest HTTP 5"))
    return 0 if lost == 0 and server_errors == 0 and report.orders_accepted > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
