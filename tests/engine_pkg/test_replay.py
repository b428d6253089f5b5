"""``python -m engine_pkg replay``, snapshots, and a replay of real LOBSTER order flow."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine_pkg import Engine
from engine_pkg.replay import replay
from tests.engine_pkg import lobster
from tests.engine_pkg.helpers import cmd

REPO = Path(__file__).resolve().parents[2]

COMMANDS = [
    cmd(action="ADD", symbol="BBB", order_id="o1", user_id="u1", is_buy=False, price=101, quantity=5, ts=10),
    cmd(action="ADD", symbol="AAA", order_id="o2", user_id="u1", is_buy=True, price=99, quantity=5),
    cmd(action="ADD", symbol="BBB", order_id="o3", user_id="u2", is_buy=True, price=102, quantity=3, ts=11),
    b"this is not json",
    cmd(action="ADD", symbol="bad", order_id="o4", user_id="u2", is_buy=True, price=1, quantity=1),
]


def run_replay(data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "engine_pkg", "replay", "-", *args],
        input=data,
        capture_output=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )


def test_replay_cli_outputs_events_then_depth_per_symbol_in_first_appearance_order() -> None:
    p = run_replay(b"\n".join(COMMANDS) + b"\n\n")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert [x["e"] for x in lines] == ["order", "order", "order", "fill", "order", "order", "order", "d", "d"]
    assert lines[1]["t"] == 0  # no ts -> 0 in replay
    assert lines[3]["trade_id"] == "BBB-000000000003" and lines[3]["t"] == 11
    assert lines[-2] == {"e": "d", "s": "BBB", "u": 3, "b": [], "a": [[101, 2]]}
    assert lines[-1] == {"e": "d", "s": "AAA", "u": 1, "b": [[99, 5]], "a": []}
    assert p.stdout.endswith(b'"a":[]}\n')
    assert b'"e":"d","s":"BBB","u":3,"b":[],"a":[[101,2]]}' in p.stdout  # compact separators
    assert b"dropped" in p.stderr


def test_replay_is_deterministic_and_reads_files(tmp_path: Path) -> None:
    f = tmp_path / "cmds.jsonl"
    f.write_bytes(b"\n".join(COMMANDS))
    runs = [
        subprocess.run(
            [sys.executable, "-m", "engine_pkg", "replay", str(f)],
            capture_output=True,
            cwd=REPO,
            check=True,
            timeout=60,
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] == run_replay(b"\n".join(COMMANDS)).stdout


def test_replay_depth_option() -> None:
    data = b"\n".join(
        cmd(action="ADD", symbol="T", order_id=f"o{i}", user_id="u", is_buy=True, price=100 + i, quantity=1)
        for i in range(15)
    )
    out = io.BytesIO()
    replay(io.BytesIO(data), out, depth=3)
    last = json.loads(out.getvalue().splitlines()[-1])
    assert last["b"] == [[114, 1], [113, 1], [112, 1]]
    default = json.loads(run_replay(data).stdout.splitlines()[-1])
    assert len(default["b"]) == 10


def test_replay_missing_file_fails_cleanly() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "engine_pkg", "replay", "/nonexistent.jsonl"],
        capture_output=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert p.returncode == 1 and b"nonexistent" in p.stderr


def test_cli_help() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "engine_pkg", "--help"], capture_output=True, cwd=REPO, check=True, timeout=60
    )
    assert b"replay" in p.stdout and b"--dev" in p.stdout and b"--debug" in p.stdout
    p = subprocess.run(
        [sys.executable, "-m", "engine_pkg", "replay", "--help"],
        capture_output=True,
        cwd=REPO,
        check=True,
        timeout=60,
    )
    assert b"--depth" in p.stdout


def test_restore_rejects_malformed_snapshots() -> None:
    eng = Engine(clock=lambda: 0)
    eng.process(COMMANDS)
    snap = eng.snapshot()
    for bad in [b"", b"junk", snap[:-1], snap + b"x", b"SNB1" + b"\xff" * 20, snap[:10]]:
        with pytest.raises(ValueError):
            Engine().restore(bad)
    fresh = Engine.from_snapshot(snap, clock=lambda: 0)
    assert fresh.depth("BBB") == eng.depth("BBB") and fresh.last_seq("AAA") == 1
    # a failed restore leaves the engine as it was
    with pytest.raises(ValueError):
        fresh.restore(b"junk")
    assert fresh.depth("BBB") == eng.depth("BBB")


def test_restored_engine_remembers_ids_priorities_and_seqs() -> None:
    eng = Engine(clock=lambda: 0)
    eng.process(
        [
            cmd(
                action="ADD",
                symbol="S",
                order_id=f"o{i}",
                user_id=f"u{i}",
                is_buy=False,
                price=100,
                quantity=1,
            )
            for i in range(3)
        ]
        + [cmd(action="CANCEL", symbol="S", order_id="o1", user_id="u1")]
    )
    new = Engine.from_snapshot(eng.snapshot(), clock=lambda: 0)
    res = new.process(
        [
            cmd(action="ADD", symbol="S", order_id="o1", user_id="x", is_buy=True, price=100, quantity=1),
            cmd(action="ADD", symbol="S", order_id="t", user_id="x", is_buy=True, price=100, quantity=2),
        ]
    )
    ev = [json.loads(e) for e in res.events]
    assert ev[0]["reason"] == "DUPLICATE_ORDER_ID" and ev[0]["seq"] == 5
    assert [e["maker_order_id"] for e in ev if e["e"] == "fill"] == ["o0", "o2"]


def test_snapshot_of_ids_spanning_several_arena_chunks_round_trips() -> None:
    # 12,000 ids of 5..64 bytes fill several 256 KiB string-arena chunks (entries are padded to
    # 8 bytes and carry the id's open order): every id must survive a snapshot, open or closed.
    def oid(i: int) -> str:
        return f"{i:05d}" + "x" * (i % 60)  # 5..64 bytes, unique

    n = 12_000
    eng = Engine(clock=lambda: 0)
    adds = [
        cmd(
            action="ADD",
            symbol="S",
            order_id=oid(i),
            user_id=f"u{i % 7}",
            is_buy=True,
            price=10 + i % 5,
            quantity=1,
        )
        for i in range(n)
    ]
    eng.process(adds)
    eng.process(
        [cmd(action="CANCEL", symbol="S", order_id=oid(i), user_id=f"u{i % 7}") for i in range(0, n, 2)]
    )
    snap = eng.snapshot()
    new = Engine.from_snapshot(snap, clock=lambda: 0)
    assert new.snapshot() == snap and new.open_orders() == n // 2
    res = new.process(adds)  # every id is remembered: all duplicates
    assert [json.loads(s)["reason"] for s in res.statuses] == ["DUPLICATE_ORDER_ID"] * n
    res = new.process(
        [cmd(action="CANCEL", symbol="S", order_id=oid(i), user_id=f"u{i % 7}") for i in range(n)]
    )
    assert [json.loads(s)["status"] for s in res.statuses] == ["REJECTED", "CANCELLED"] * (n // 2)
    assert new.open_orders() == 0



def test_ids_past_the_calloc_chunks_of_a_big_id_arena_are_found_after_a_snapshot_too() -> None:
    # 200,000 ids of 41 bytes take ~12 MB of arena: past its first eight 256 KiB chunks the
    # arena's chunks come from 2 MiB slabs. Ids in every part of it must still be found (cancel,
    # duplicate), in the engine and in one restored from its snapshot.
    n = 200_000

    def oid(i: int) -> bytes:
        return b"a-long-order-id-to-fill-the-arena-%07d" % i

    eng = Engine(clock=lambda: 0)
    for s in range(0, n, 5000):
        eng.process([b'{"action":"ADD","symbol":"BIG","order_id":"%s","user_id":"u%d","is_buy":true,'
                     b'"price":%d,"quantity":1}' % (oid(i), i % 7, 1 + i % 900) for i in range(s, s + 5000)])
    assert eng.open_orders() == n
    picks = [0, 7, 6_000, 50_000, 100_001, 150_000, n - 1]
    restored = Engine.from_snapshot(eng.snapshot(), clock=lambda: 0)
    for e in (eng, restored):
        res = e.process(
            [b'{"action":"CANCEL","symbol":"BIG","order_id":"%s","user_id":"u%d"}' % (oid(i), i % 7) for i in picks]
            + [b'{"action":"ADD","symbol":"BIG","order_id":"%s","user_id":"u1","is_buy":true,"price":5,"quantity":1}'
               % oid(123_456)]
        )
        st = [json.loads(s) for s in res.statuses]
        assert [(s["order_id"], s["status"]) for s in st[:-1]] == [(oid(i).decode(), "CANCELLED") for i in picks]
        assert (st[-1]["status"], st[-1]["reason"]) == ("REJECTED", "DUPLICATE_ORDER_ID")
        assert e.open_orders() == n - len(picks)


def test_lobster_order_flow_reproduces_the_visible_book() -> None:
    msgs, rows = lobster.load()
    rp = lobster.LobsterReplay()
    assert rp.reseed(rows[0]) > 0
    adjusted = 0
    for i in range(1, len(msgs)):
        rp.apply(msgs[i])
        bids, asks = lobster.row_levels(rows[i])
        d = rp.engine.depth(lobster.SYMBOL, 9)
        assert d["b"] == bids[:9] and d["a"] == asks[:9], f"message {i}: {msgs[i]}"
        adjusted += rp.reseed(rows[i])
    assert rp.rejected == []
    executions = [m for m in msgs[1:] if m[1] == "4"]
    assert sum(f["q"] for f in rp.fills) == sum(int(m[3]) for m in executions)
    # re-seeding only happens for levels coming back into view from beyond the 10 recorded ones
    assert adjusted < len(msgs) // 4
