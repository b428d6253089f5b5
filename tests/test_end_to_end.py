"""End to end, on the whole local stack started the way `make dev` starts it.

`python -m tools.dev` runs as a child (free ports, a temporary data folder): services,
provisioning, REST in process, gateway, pump, engine, streamer, console. Then:

- a test-mode user places crossing orders over REST; a websocket-client connection of
  that user, subscribed to TEST, receives `depth`, `candle`, `ticker`, its own `order`
  events and its `fill` (and nobody else's order events);
- `/chart` returns the candle;
- after `trades_backup` runs in the stack's pump (`python -m tools.pump invoke
  trades_backup`, what `make invoke NAME=trades_backup` runs), the closed candle is in
  DynamoDB and in S3.

The backup only moves CLOSED 1-minute candles. A candle closes at its minute's end (the
engine's clock, docs/engine_service.md) or, sooner, when a trade of a later minute arrives
(SPEC §3a: event time = the command's `ts`). So before the REST orders the test writes one
crossing pair straight onto `supernoba-orders` with a `ts` one minute in the past — a
legitimate order command (§2), as a delayed producer would send — and the REST trade of the
current minute then closes that candle. No waiting for the clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.ws_client import WsClient
from tools.dev import DevProcess

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


class Stack:
    """The running `python -m tools.dev` of this module; `restart()` keeps its data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.dev = DevProcess(data_dir, "--no-console", timeout=150).start()

    @property
    def info(self) -> dict[str, Any]:
        return self.dev.info

    def stop(self) -> None:
        children = json.loads((self.data_dir / "run" / "children.json").read_text())
        assert {"valkey", "kinesalite", "dynalite", "moto-s3", "engine", "streamer"} <= set(children)
        code = self.dev.stop()
        assert code == 0, f"tools.dev did not stop cleanly ({code}):\n{self.dev.output()[-2000:]}"
        left = [name for name, c in children.items() if Path(f"/proc/{c['pid']}").exists()
                and Path(f"/proc/{c['pid']}/cmdline").read_bytes().split(b"\0")[:-1] == [a.encode() for a in c["cmdline"]]]
        assert not left, f"still running after the stack stopped: {left}"
        assert not (self.data_dir / "run" / "stack.json").exists()

    def restart(self) -> None:
        self.stop()
        self.dev = DevProcess(self.data_dir, "--no-console", timeout=150).start()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    holder = Stack(tmp_path_factory.mktemp("e2e-stack"))
    try:
        yield holder
    finally:
        holder.stop()


def _aws(env: dict[str, str], service: str) -> Any:
    return boto3.Session(
        region_name=env["AWS_REGION"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).client(service, endpoint_url=env[f"AWS_ENDPOINT_URL_{service.upper()}"])


def _minute(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(second=0, microsecond=0)


def test_orders_to_websocket_chart_and_backup(stack: Stack) -> None:
    t0 = time.monotonic()

    def phase(name: str) -> None:
        print(f"e2e {time.monotonic() - t0:6.1f}s {name}", flush=True)

    info = stack.info
    env = info["env"]
    assert all(s["healthy"] for s in info["status"]), info["status"]
    rest = httpx.Client(base_url=info["urls"]["rest"], timeout=10)

    # TEST was activated on first start, through the admin API
    symbols = rest.get("/admin/symbols", headers={"X-Admin-Key": info["admin_api_key"]}).json()
    assert "TEST" in [s["symbol"] for s in symbols["symbols"]]

    # 1. a trade one minute in the past, written as plain order commands
    past_ms = int(time.time() * 1000) - 60_000
    kinesis = _aws(env, "kinesis")
    for cmd in (
        {"action": "ADD", "symbol": "TEST", "order_id": "e2e-seed-s", "user_id": "e2e-seed-a", "is_buy": False,
         "price": 990, "quantity": 3, "ts": past_ms},
        {"action": "ADD", "symbol": "TEST", "order_id": "e2e-seed-b", "user_id": "e2e-seed-b", "is_buy": True,
         "price": 990, "quantity": 3, "ts": past_ms + 1},
    ):
        kinesis.put_record(StreamName=env.get("KINESIS_ORDERS_STREAM", "supernoba-orders"), PartitionKey="TEST",
                           Data=json.dumps(cmd).encode())

    def chart() -> list[dict[str, Any]]:
        resp = rest.get("/chart", params={"symbol": "TEST", "interval": "1m", "limit": 10})
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]

    past_epoch = int(_minute(past_ms).timestamp())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(c["time"] == past_epoch for c in chart()):
        time.sleep(0.1)
    assert any(c["time"] == past_epoch and c["close"] == 990 for c in chart()), chart()

    phase("seed candle visible")
    # 2. the buyer watches TEST over WebSocket; a bystander is connected too
    buyer = WsClient(info["urls"]["ws"] + "?testMode=true&userId=e2e-buyer")
    other = WsClient(info["urls"]["ws"] + "?testMode=true&userId=e2e-bystander")
    try:
        for c in (buyer, other):
            c.send({"action": "subscribe", "main": "TEST"})
            c.wait_for(lambda m: m.get("e") == "subscribed", "subscribed")

        phase("subscribed")
        # 3. crossing orders over REST, test-mode users
        sell = rest.post("/orders", headers={"X-Test-User": "e2e-seller"},
                         json={"symbol": "TEST", "side": "SELL", "price": 1010, "quantity": 10})
        assert sell.status_code == 202, sell.text
        buy = rest.post("/orders", headers={"X-Test-User": "e2e-buyer"},
                        json={"symbol": "TEST", "side": "BUY", "price": 1010, "quantity": 4})
        assert buy.status_code == 202, buy.text
        assert buy.json()["status"] == "QUEUED"
        buy_id, sell_id = buy.json()["order_id"], sell.json()["order_id"]

        depth = buyer.wait_for(lambda m: m.get("e") == "d" and m.get("a") == [[1010, 6]], "depth after the trade")
        assert depth["s"] == "TEST" and depth["b"] == []
        candle = buyer.wait_for(lambda m: m.get("e") == "candle" and m.get("c") == "1010", "candle of the trade")
        assert candle["s"] == "TEST" and candle["v"] == "4"
        ticker = buyer.wait_for(lambda m: m.get("e") == "t" and m.get("p") == 1010, "ticker of the trade")
        assert ticker["s"] == "TEST"
        filled = buyer.wait_for(lambda m: m.get("e") == "order" and m.get("order_id") == buy_id
                                and m.get("status") == "FILLED", "own FILLED order event")
        assert filled["filled"] == 4 and filled["remaining"] == 0 and filled["user_id"] == "e2e-buyer"
        buyer.wait_for(lambda m: m.get("e") == "order" and m.get("order_id") == buy_id
                       and m.get("status") == "ACCEPTED", "own ACCEPTED order event")
        fill = buyer.wait_for(lambda m: m.get("e") == "fill" and m.get("taker_order_id") == buy_id, "own fill")
        assert fill["p"] == 1010 and fill["q"] == 4 and fill["maker_order_id"] == sell_id

        phase("buyer got every event")
        # the bystander sees the market, never the buyer's orders or fills
        other.wait_for(lambda m: m.get("e") == "d" and m.get("a") == [[1010, 6]], "bystander depth")
        time.sleep(0.3)
        assert not [m for m in other.all() if m.get("e") in ("order", "fill")]
        assert not [m for m in buyer.all() if m.get("e") == "order" and m.get("order_id") == sell_id]
    finally:
        buyer.close()
        other.close()

    phase("bystander checked")
    # 4. /chart has the new candle (hot) and the older one
    now_candles = {c["time"]: c for c in chart()}
    current = [c for c in now_candles.values() if c["close"] == 1010]
    assert current and current[0]["volume"] == 4 and current[0]["time"] > past_epoch

    phase("chart checked")
    # 5. the backup moves the closed candle to DynamoDB and S3
    proc = subprocess.run(
        [sys.executable, "-m", "tools.pump", "--data-dir", str(stack.data_dir), "invoke", "trades_backup"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["name"] == "trades_backup" and report["result"]["candles"] >= 1
    assert "event=schedule_fired name=trades_backup" in (stack.data_dir / "logs" / "pump.log").read_text()

    phase("backup invoked")
    ddb = _aws(env, "dynamodb")
    items = ddb.query(
        TableName=env.get("CANDLE_TABLE", "candle_history"),
        KeyConditionExpression="pk = :pk AND sk = :sk",
        ExpressionAttributeValues={":pk": {"S": "CANDLE#TEST#1m"}, ":sk": {"N": str(past_epoch)}},
    )["Items"]
    assert len(items) == 1, items
    s3 = _aws(env, "s3")
    key = _minute(past_ms).strftime("candles/TEST/1m/%Y/%m/%d/%H%M.jsonl")
    body = s3.get_object(Bucket=env.get("BACKUP_BUCKET", "supernoba-backup"), Key=key)["Body"].read().decode()
    line = json.loads(body.strip().splitlines()[0])
    assert str(line.get("c", line.get("close"))) == "990"

    # the trade itself was persisted by the fills trigger
    trades = ddb.query(
        TableName=env.get("DYNAMODB_TABLE", "trade_history"),
        KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "TRADE#TEST"}},
    )["Items"]
    assert len(trades) >= 2


def test_a_restart_keeps_books_symbols_and_trigger_positions(stack: Stack) -> None:
    """Runs after the test above, on the same data folder (SPEC §11: a restart keeps data)."""
    rest = httpx.Client(base_url=stack.info["urls"]["rest"], timeout=10)
    before = rest.get("/depth/TEST").json()
    assert before["a"] == [[1010, 6]], before
    checkpoints = stack.data_dir / "pump" / "checkpoints.json"
    assert checkpoints.exists()

    stack.restart()
    assert (stack.data_dir / "initialized").exists()
    rest = httpx.Client(base_url=stack.info["urls"]["rest"], timeout=10)
    after = rest.get("/depth/TEST").json()
    assert after["a"] == [[1010, 6]] and after["u"] == before["u"], after
    # trading goes on from the restored book, and its notifications still flow
    buyer = WsClient(stack.info["urls"]["ws"] + "?testMode=true&userId=e2e-buyer2")
    try:
        buyer.send({"action": "subscribe", "main": "TEST"})
        buyer.wait_for(lambda m: m.get("e") == "subscribed", "subscribed")
        buy = rest.post("/orders", headers={"X-Test-User": "e2e-buyer2"},
                        json={"symbol": "TEST", "side": "BUY", "price": 1010, "quantity": 6})
        assert buy.status_code == 202, buy.text
        buyer.wait_for(lambda m: m.get("e") == "d" and m.get("a") == [] and m.get("u", 0) > before["u"],
                       "depth of the emptied ask side")
        buyer.wait_for(lambda m: m.get("e") == "order" and m.get("order_id") == buy.json()["order_id"]
                       and m.get("status") == "FILLED", "FILLED after the restart")
    finally:
        buyer.close()
    # the fills trigger resumed after its checkpoint and stored the new trade (3 in all)
    ddb = _aws(stack.info["env"], "dynamodb")

    def trades() -> list[dict[str, Any]]:
        return ddb.query(
            TableName=stack.info["env"].get("DYNAMODB_TABLE", "trade_history"),
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "TRADE#TEST"}},
        )["Items"]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(trades()) < 3:
        time.sleep(0.2)
    assert len(trades()) == 3
    log = (stack.data_dir / "logs" / "pump.log").read_text()
    assert "source=on_fills stream=supernoba-fills" in log and "from=AFTER_SEQUENCE_NUMBER" in log


def test_simulator_trades_through_the_rest_api(stack: Stack) -> None:
    """`--simulate`'s market simulator, in this process, against the running stack."""
    from tools.simulator import Simulator

    info = stack.info
    sim = Simulator(info["urls"]["rest"], admin_key=info["admin_api_key"], symbols=("SIMX",),
                    orders_per_second=25, seed=7).start()
    rest = httpx.Client(base_url=info["urls"]["rest"], timeout=10)
    try:
        deadline = time.monotonic() + 30
        depth: dict[str, Any] = {}
        while time.monotonic() < deadline:
            depth = rest.get("/depth/SIMX").json()
            if sim.counters["placed"] >= 30 and depth.get("b") and depth.get("a"):
                break
            time.sleep(0.2)
    finally:
        sim.stop()
    assert sim.counters["placed"] >= 30 and sim.counters["errors"] == 0, sim.summary()
    assert depth.get("b") and depth.get("a"), depth
    assert depth["b"][0][0] < depth["a"][0][0]  # makers quote around the mid; takers clear crosses


def test_the_order_command_printed_at_start_is_accepted(stack: Stack) -> None:
    """The banner's `try:` line is what a new user pastes first: it must give 202, not 415."""
    # the last one: after a restart the stack's output file holds both starts' banners
    line = [ln for ln in stack.dev.output().splitlines() if ln.strip().startswith("try:")][-1]
    command = line.split("try:", 1)[1].strip()
    assert command.startswith("curl ") and stack.info["urls"]["rest"] + "/orders" in command
    out = subprocess.run(["bash", "-c", command + " -s -w ' %{http_code}'"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    body, code = out.rsplit(" ", 1)
    assert code == "202", out
    assert json.loads(body)["status"] == "QUEUED"


def test_reset_of_a_running_stacks_folder_is_refused_before_anything_is_deleted(stack: Stack) -> None:
    before = sorted(p.relative_to(stack.data_dir) for p in stack.data_dir.rglob("*"))
    out = subprocess.run([sys.executable, "-m", "tools.dev", "--reset", "--data-dir", str(stack.data_dir),
                          "--no-console"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 1 and "already uses" in out.stderr, out.stderr
    assert "deleting" not in out.stdout
    after = sorted(p.relative_to(stack.data_dir) for p in stack.data_dir.rglob("*"))
    assert set(before) <= set(after), "nothing of the running stack's folder was deleted"
    assert (stack.data_dir / "run" / "dev.pid").read_text().strip() == str(stack.dev.info["pid"])


def test_the_invoke_hint_names_a_non_default_data_folder(stack: Stack) -> None:
    line = [ln for ln in stack.dev.output().splitlines() if ln.strip().startswith("invoke:")][-1]
    assert line.split("invoke:", 1)[1].strip() == f'make invoke NAME=trades_backup ARGS="--data-dir {stack.data_dir}"'
