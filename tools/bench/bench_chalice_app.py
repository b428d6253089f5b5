"""Benchmark of the Chalice app's handlers (issue 5), in process, against real local services.

    python -m tools.bench.bench_chalice_app [--orders 500] [--candles 1440]

Starts valkey-server, kinesalite, dynalite and moto S3 (tools/services.py), provisions them,
builds the app's services and calls the handlers through Chalice's test client:

1. POST /orders (test-mode user, LIMIT): latency p50/p99 and orders/s of one caller — the
   Lambda's own cost: validation, Valkey checks, one PutRecord;
2. GET /chart 1m limit 100 and 1h limit 24 over a day of cold 1m candles + hot ones;
3. on_fills with a batch of 100 fills (DynamoDB batch writes, no connections);
4. trades_backup of 60 closed candles (S3 + DynamoDB 1m + roll-ups).

Progress goes to stderr, a figure table to stdout. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[bench_chalice_app] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.bench_chalice_app", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=500, help="POST /orders calls (default 500)")
    parser.add_argument("--candles", type=int, default=1440, help="cold 1m candles for the chart (default 1440)")
    args = parser.parse_args(argv)

    from tools.bench.common import stop_on_sigterm
    from tools.provision import provision
    from tools.services import LocalServices

    stop_on_sigterm()
    with tempfile.TemporaryDirectory() as tmp, LocalServices(log_dir=Path(tmp)) as services:
        log("services up")
        os.environ.update(services.env())
        os.environ["ALLOW_TEST_MODE"] = "true"
        from chalice.test import Client

        import app as app_module
        from chalice_app import keys
        from chalice_app.candles import Candle, CandleStore
        from chalice_app.config import Settings
        from chalice_app.services import build

        settings = Settings.from_env()
        provision(settings)
        svc = build(settings)
        app_module.services = svc
        r = svc.redis
        r.sadd(keys.ACTIVE_SYMBOLS, "BENCH")
        rows: list[tuple[str, str]] = []
        with Client(app_module.app) as client:
            body = json.dumps({"symbol": "BENCH", "side": "BUY", "price": 100, "quantity": 1}).encode()
            headers = {"Content-Type": "application/json", "X-Test-User": "u_bench"}

            def post() -> None:
                resp = client.http.post("/orders", headers=headers, body=body)
                assert resp.status_code == 202, resp.body

            timed(post, 20)  # warm-up
            log(f"POST /orders x{args.orders}")
            t0 = time.perf_counter()
            lat = timed(post, args.orders)
            wall = time.perf_counter() - t0
            rows.append(("POST /orders p50 / p99 (ms)", f"{pct(lat, .5):.1f} / {pct(lat, .99):.1f}"))
            rows.append(("POST /orders, one caller (orders/s)", f"{args.orders / wall:,.0f}"))

            log(f"chart: {args.candles} cold 1m candles")
            store = CandleStore(svc.dynamodb.Table(settings.candle_table))
            t_end = int(time.time()) // 60 * 60
            start = t_end - 60 * args.candles
            store.put_many("BENCH", "1m", [Candle(start + 60 * i, 100, 101, 99, 100, 1) for i in range(args.candles)])
            for i in range(5):
                stamp = datetime.fromtimestamp(t_end + 60 * i, UTC).strftime("%Y%m%d%H%M")
                r.rpush(keys.candle_closed("BENCH"), json.dumps({"o": 1, "h": 2, "l": 1, "c": 2, "v": 3, "t": stamp}))
            for interval, limit in (("1m", 100), ("1h", 24)):
                def chart(interval=interval, limit=limit) -> None:
                    resp = client.http.get(f"/chart?symbol=BENCH&interval={interval}&limit={limit}")
                    assert resp.status_code == 200, resp.body

                lat = timed(chart, 30)
                rows.append((f"GET /chart {interval} limit {limit}, no stored roll-ups, p50 / p99 (ms)",
                             f"{pct(lat, .5):.1f} / {pct(lat, .99):.1f}"))

            log("on_fills x 100")
            fills = [json.dumps({"e": "fill", "s": "BENCH", "trade_id": f"BENCH-{i:012d}", "p": 100, "q": 1,
                                 "maker_order_id": "m", "maker_user_id": "a", "taker_order_id": "t",
                                 "taker_user_id": "b", "taker_side": "BUY", "t": 1733896438267 + i,
                                 "seq": i}).encode() for i in range(100)]
            event = client.events.generate_kinesis_event(fills, settings.fills_stream)
            lat = timed(lambda: client.lambda_.invoke("on_fills", event), 5)
            rows.append(("on_fills, batch of 100 fills (ms, median of 5)", f"{statistics.median(lat):.0f}"))

            log("trades_backup of 60 candles")
            for i in range(60):
                stamp = datetime.fromtimestamp(start + 60 * i, UTC).strftime("%Y%m%d%H%M")
                r.rpush(keys.candle_closed("BENCH"), json.dumps({"o": 1, "h": 2, "l": 1, "c": 2, "v": 3, "t": stamp}))
            cw = client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
            t0 = time.perf_counter()
            report = client.lambda_.invoke("trades_backup", cw).payload
            rows.append((f"trades_backup, {report['candles']} candles + {report['rollups']} roll-ups (ms)",
                         f"{(time.perf_counter() - t0) * 1000:.0f}"))

    load = os.getloadavg()[0]
    print(f"\nChalice app handlers — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}\n")
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
