"""`python -m tools.soak` (`make soak`): load + faults for a bounded time, then docs/reliability.md.

Starts its own local stack (`tools.dev.LocalStack`, in a child process, free ports, a
temporary data folder), then runs a baseline load and one load per fault (see
`tools/faults.py`), each followed by the ground-truth checks of `tools/load/verify.py`.
Then it runs the bad-input corpus (`pytest tests/reliability`) for the "inputs tried"
figures, and writes the report. Every step is bounded; `--max-minutes` bounds the whole.

Exit status: 0 when every fault was survived and nothing was lost, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import orjson

from chalice_app.config import Settings
from chalice_app.logs import setup_logging
from tools.faults import FAULTS, FaultError, resumed_after
from tools.load.model import LoadConfig, build_report
from tools.load.runner import LoadContext, run_load
from tools.load.verify import VerifyError, read_stream, verify
from tools.services import REPO_ROOT
from tools.soak.report import InputsTried, ScenarioResult, render
from tools.soak.stack import StackError, StackProcess

log = logging.getLogger("supernoba.soak")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flow", type=float, default=15.0, help="seconds of order flow per scenario (default 15)")
    p.add_argument("--rate", type=float, default=10.0, help="orders per second (default 10)")
    p.add_argument("--drain", type=float, default=150.0,
                   help="max seconds per scenario to reach final statuses (ends earlier after 20 s without news)")
    p.add_argument("--clients", type=int, default=20, help="WebSocket clients besides the traders (default 20)")
    p.add_argument("--mode", choices=("logged-in", "anonymous", "mixed"), default="mixed")
    p.add_argument("--symbols", default="TEST,SOAK2", help="comma-separated symbols (default TEST,SOAK2)")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    p.add_argument("--no-baseline", action="store_true", help="skip the run without a fault")
    p.add_argument("--no-inputs", action="store_true", help="skip the bad-input corpus run")
    p.add_argument("--max-minutes", type=float, default=9.0, help="stop starting scenarios after this (default 9)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "reliability.md")
    p.add_argument("--json", type=Path, help="also write every figure as JSON")
    p.add_argument("--data-dir", type=Path, help="stack data folder (default: a temporary one, removed after)")
    p.add_argument("--verbose", "-v", action="store_true")
    return p.parse_args(argv)


def run_inputs(timeout: float = 300.0) -> InputsTried:
    """Run the bad-input corpus and count its cases per module (from a JUnit XML report)."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
               "tests/reliability"]
        print(f"soak: bad-input corpus: {' '.join(cmd[2:])}", flush=True)
        out = InputsTried()
        try:
            rc = subprocess.run(cmd, cwd=REPO_ROOT, timeout=timeout, check=False, stdout=subprocess.DEVNULL).returncode
            if rc not in (0, 1):  # 0: all passed, 1: some failed (counted below); else pytest did not run them
                out.error = f"pytest exited with code {rc}"
        except subprocess.TimeoutExpired:
            log.error("event=inputs_timeout seconds=%s", timeout)
            out.error = f"timed out after {timeout:.0f} s"
        if not xml.exists():
            out.error = out.error or "no JUnit report"
            return out
        for case in ET.parse(xml).getroot().iter("testcase"):
            mod = (case.get("classname") or "?").split(".")[-1]
            failed = case.find("failure") is not None or case.find("error") is not None
            if case.find("skipped") is not None:
                continue
            if failed:
                out.tests_failed += 1
                out.failed.append(f"{mod}::{case.get('name')}")
            else:
                out.tests_passed += 1
                out.by_module[mod] = out.by_module.get(mod, 0) + 1
            for prop in case.iter("property"):
                if prop.get("name") == "fuzz_examples":
                    out.fuzz_examples += int(prop.get("value") or 0)
        return out


#: The user of the anchors: one resting BUY per symbol, far below the load's prices (no taker
#: reaches it), placed once before the first scenario and never cancelled. Every load ends with
#: its own orders final (so its books empty); the anchors keep each books check comparing a
#: non-empty book, and a resting order must come through every fault unchanged.
ANCHOR_USER = "soak-anchor"


def place_anchors(http: httpx.Client, symbols: tuple[str, ...], price: int, admin_key: str,
                  timeout: float = 30.0) -> list[str]:
    """Activate `symbols` and rest one anchor on each; returns their order ids once every one
    shows in `GET /depth/{symbol}`. StackError when one is refused or does not show in time."""
    ids = []
    for sym in symbols:
        if admin_key:
            resp = http.post("/admin/symbols", json={"symbol": sym}, headers={"X-Admin-Key": admin_key})
            if resp.status_code >= 400 and resp.status_code != 409:
                raise StackError(f"cannot activate {sym}: HTTP {resp.status_code} {resp.text[:200]}")
        resp = http.post("/orders", headers={"X-Test-User": ANCHOR_USER},
                         json={"symbol": sym, "side": "BUY", "price": price, "quantity": 1, "type": "LIMIT",
                               "tif": "GTC", "client_order_id": f"anchor-{uuid.uuid4().hex[:8]}"})
        if resp.status_code != 202:
            raise StackError(f"the anchor order on {sym} was refused: HTTP {resp.status_code} {resp.text[:200]}")
        ids.append(resp.json()["order_id"])
    deadline = time.monotonic() + timeout
    waiting = list(symbols)
    while waiting:
        depth = http.get(f"/depth/{waiting[0]}").json()
        if any(level[0] == price for level in depth.get("b") or []):
            waiting.pop(0)
            continue
        if time.monotonic() > deadline:
            raise StackError(f"the anchor order on {waiting[0]} did not reach its depth within {timeout:.0f}s")
        time.sleep(0.1)
    return ids


def _truth(settings: Settings) -> tuple[list[dict], list[dict]]:
    import boto3

    kinesis = boto3.Session(region_name=settings.aws_region).client("kinesis")
    statuses = [orjson.loads(r) for r in read_stream(kinesis, settings.status_stream)]
    fills = [orjson.loads(r) for r in read_stream(kinesis, settings.fills_stream)]
    return statuses, fills


def run_scenario(name: str, cfg: LoadConfig, stack: StackProcess, settings: Settings) -> ScenarioResult:
    t0 = time.monotonic()
    fault_fn = FAULTS.get(name)
    errors: list[str] = []

    async def script(ctx: LoadContext) -> None:
        if fault_fn is None:
            return
        try:
            await fault_fn(ctx, stack)
        except (FaultError, StackError) as exc:
            errors.append(str(exc))
            log.error("event=fault_failed fault=%s error=%s", name, exc)

    print(f"soak: scenario {name}: {cfg.clients} clients + {cfg.users} traders, {cfg.rate:g} orders/s for "
          f"{cfg.duration:g}s", flush=True)
    rec, depth_u = asyncio.run(run_load(cfg, script if fault_fn else None))
    try:
        statuses, fills = _truth(settings)
        report = build_report(rec, final_depth_u=depth_u, status_truth=statuses, fill_truth=fills)
        accepted = [o.order_id for o in rec.orders if o.accepted and o.kind != "cancel" and o.order_id]
        verdict = verify(settings, accepted)
    except VerifyError as exc:
        report = build_report(rec, final_depth_u=depth_u)
        return ScenarioResult(name, report, None, rec.faults[0] if rec.faults else None, None,
                              f"verify failed: {exc}", time.monotonic() - t0)
    fault = rec.faults[0] if rec.faults else None
    resumed = resumed_after(rec, fault) if fault else None
    if fault_fn is not None and fault is None and not errors:
        errors.append("the fault was not injected (the flow ended first)")
    res = ScenarioResult(name, report, verdict, fault, resumed, "; ".join(errors) or None, time.monotonic() - t0)
    print(f"soak: scenario {name}: {'survived' if res.survived else 'FAILED'}; lost {res.lost}; "
          f"{verdict.summary()}", flush=True)
    print(report.table(), flush=True)
    return res


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # a background job inherits SIGINT ignored; SIGTERM must also stop the stack cleanly
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        print(f"soak: unknown fault(s) {unknown}; known: {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    scenarios = ([] if args.no_baseline else ["baseline"]) + names
    symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
    t_start = time.monotonic()
    deadline = t_start + args.max_minutes * 60
    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.mkdtemp(prefix="supernoba-soak-")
        data_dir = Path(tmp)
    results: list[ScenarioResult] = []
    skipped: list[str] = []
    print(f"soak: starting the local stack in {data_dir}", flush=True)
    stack = StackProcess(data_dir, log_level="INFO")
    try:
        stack.start()
        assert stack.info is not None
        os.environ.update(stack.info.env)  # boto3 / redis of the verifier point at the stack
        settings = Settings.from_env(stack.info.env)
        print(f"soak: stack up: REST {stack.info.rest_url}, WebSocket {stack.info.ws_url}, logs {stack.info.log_dir}",
              flush=True)
        try:
            with httpx.Client(base_url=stack.info.rest_url, timeout=10.0, trust_env=False) as http:
                anchors = place_anchors(http, symbols, LoadConfig.mid_price // 2, stack.info.admin_key)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise StackError(f"cannot place the anchor orders: {exc!r}") from exc
        print(f"soak: {len(anchors)} anchor orders resting (one per symbol, kept all soak long)", flush=True)
        for i, name in enumerate(scenarios):
            if time.monotonic() > deadline:
                skipped = scenarios[i:]
                print(f"soak: time bound reached; skipping {skipped} (the soak fails)", flush=True)
                break
            cfg = LoadConfig(rest_url=stack.info.rest_url, ws_url=stack.info.ws_url, clients=args.clients,
                             mode=args.mode, rate=args.rate, duration=args.flow, symbols=symbols,
                             admin_key=stack.info.admin_key, seed=i + 1, run_id=uuid.uuid4().hex[:6], drain=args.drain)
            results.append(run_scenario(name, cfg, stack, settings))
    except StackError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("soak: interrupted; stopping the stack", file=sys.stderr)
        return 130
    finally:
        stack.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    inputs = None if args.no_inputs else run_inputs()
    wall = time.monotonic() - t_start
    settings_txt = {"flow per scenario": f"{args.flow:g}s", "rate": f"{args.rate:g}/s", "clients": args.clients,
                    "traders": 8, "mode": args.mode, "symbols": ",".join(symbols)}
    text = render(results, inputs, settings_txt, wall, skipped)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"soak: wrote {args.out}", flush=True)
    if args.json:
        args.json.write_text(orjson.dumps([{"name": r.name, "report": r.report.as_dict(),
                                            "verdict": r.verdict.__dict__ if r.verdict else None,
                                            "fault": r.fault, "resumed": r.resumed, "error": r.error}
                                           for r in results], default=str).decode())
    ok = all(r.survived for r in results) and not skipped and (inputs is None or inputs.ok)
    lost = sum(r.lost for r in results)
    print(f"soak: {'PASS' if ok else 'FAIL'}: {sum(1 for r in results if r.survived)}/{len(results) + len(skipped)} "
          f"scenarios survived ({len(skipped)} not run), lost {lost}"
          + (f"; bad-input corpus: {inputs.error}" if inputs is not None and inputs.error else ""), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
