"""Writes `docs/reliability.md` from the results of a soak (pure text, unit-tested)."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any

from tools.load.model import Report
from tools.load.verify import Verdict


@dataclass
class ScenarioResult:
    name: str  # "baseline" or a fault name
    report: Report
    verdict: Verdict | None
    fault: dict[str, Any] | None = None
    resumed: tuple[int, int] | None = None  # (clients with data after the fault, clients that should)
    error: str | None = None  # the fault could not be injected / recovered
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        lost = self.report.orders_lost + self.report.orders_open + self.report.lost_messages
        if self.verdict is not None:
            lost += self.verdict.lost
        return lost

    @property
    def failure(self) -> str | None:
        """Why the scenario failed; None when it was survived. A check that had nothing to check
        fails too: no accepted order (nothing could be lost) or only empty books compared."""
        if self.error:
            return self.error
        if self.verdict is None:
            return "not verified"
        if self.lost:
            return "lost something"
        if self.report.orders_accepted == 0:
            return "no order accepted (nothing was checked)"
        if self.verdict.levels_compared == 0:
            return "the books compared were empty (nothing was checked)"
        if self.resumed is not None and self.resumed[0] < self.resumed[1]:
            return f"{self.resumed[1] - self.resumed[0]} clients got no depth after the fault"
        if self.fault and self.fault.get("others_starved"):
            return f"{self.fault['others_starved']} clients starved by the slow reader"
        if self.fault and self.fault.get("cleaned") is False:
            return "the connection registry did not forget the dropped clients"
        return None

    @property
    def survived(self) -> bool:
        return self.failure is None


@dataclass
class InputsTried:
    """Bad-input figures: from the pytest run of tests/reliability."""

    tests_passed: int = 0
    tests_failed: int = 0
    by_module: dict[str, int] = field(default_factory=dict)
    fuzz_examples: int = 0
    failed: list[str] = field(default_factory=list)
    error: str = ""  # the corpus did not run to the end (pytest usage error, timeout, no report)

    @property
    def ok(self) -> bool:
        return not self.error and self.tests_failed == 0 and self.tests_passed > 0


def machine() -> str:
    cpus = os.cpu_count()
    try:
        mem_kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "?"
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return f"{cpus} cores, {mem}, {platform.platform(terse=True)}, Python {platform.python_version()}, load average at the end {load}"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _lat(rep: Report, tier: str, event: str) -> str:
    row = next((r for r in rep.latency if r.tier == tier and r.event == event), None)
    return "-" if row is None else f"{_fmt(row.p50)} / {_fmt(row.p99)}"


def render(results: list[ScenarioResult], inputs: InputsTried | None, settings: dict[str, Any],
           wall_s: float, skipped: list[str] | tuple[str, ...] = ()) -> str:
    total_lost = sum(r.lost for r in results)
    survived = [r for r in results if r.fault is not None and r.survived]
    faults = [r.name for r in results if r.fault is not None or r.name != "baseline"]
    faults += [name for name in skipped if name != "baseline"]  # a skipped fault was not survived
    held_rate = max((r.report.orders_rate for r in results), default=0.0)
    conns = max((sum(r.report.connections.values()) for r in results), default=0)
    lines = [
        "# Reliability: load, faults and bad input (issue 10)",
        "",
        "Written by `make soak` (`python -m tools.soak`); every figure below is from that run.",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {machine()}.",
        f"Wall time of the soak: {wall_s:.0f} s. Settings: "
        + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".",
        "",
        "## Summary",
        "",
        f"- **Load held:** up to {held_rate:.1f} accepted orders/s over REST with {conns} WebSocket "
        f"connections open (logged-in and anonymous).",
        f"- **Faults survived:** {len(survived)} of {len(faults)}"
        + (": " + ", ".join(r.name for r in survived) if survived else "") + ".",
    ]
    if skipped:
        lines.append(f"- **Not run (time bound reached, the soak FAILS):** {', '.join(skipped)}.")
    if inputs is not None and inputs.error:
        lines.append(f"- **Bad inputs: the corpus did not run to the end ({inputs.error}); the soak FAILS.**")
    if inputs is not None:
        lines.append(f"- **Bad inputs tried:** {inputs.tests_passed + inputs.tests_failed} corpus cases "
                     f"({inputs.tests_passed} handled with a clear error, {inputs.tests_failed} failed)"
                     + (f", plus {inputs.fuzz_examples} schemathesis-generated requests" if inputs.fuzz_examples else "")
                     + ".")
    lines += [
        f"- **Anything lost:** {total_lost}"
        + (" — accepted orders without a final status, undelivered messages, books differing from a "
           "replay, trades missing or doubled." if total_lost else " (orders, messages, book levels, trades)."),
        "",
        "## Scenarios",
        "",
        "Each scenario is one load run (the fault injected at 30 % of the flow; the slow-reader and drop-without-close faults at 20 %), followed by the checks of "
        "`tools/load/verify.py`: every accepted order has a final status, the books in the depth cache equal a "
        "fresh `python -m engine_pkg replay` of the whole orders stream, every status and fill of the replay is "
        "on its stream, every trade id is in `trade_history` exactly once; and every client still connected "
        "received depth again after the fault. The streams hold every earlier scenario's records too, so the "
        "replay, `books = replay` (price levels compared) and `trades once` (trades on the stream) cover the soak "
        "so far; the other columns are this scenario's. A scenario with no accepted order or only empty books "
        "compared fails: it checked nothing.",
        "",
        "| scenario | orders/s | conns | accepted | final | lost orders | msgs expected / delivered | books = replay "
        "| trades once | resumed | depth p50/p99 ms (logged-in) | (anonymous) | errors | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rep, v = r.report, r.verdict
        exp = sum(rep.messages_expected.values())
        dlv = sum(rep.messages_delivered.values())
        books = "-" if v is None else (f"yes ({v.levels_compared} levels)" if not v.books_differing
                                       else f"NO ({', '.join(v.books_differing)})")
        trades = "-" if v is None else (
            f"yes ({v.trades})" if not (v.trades_missing or v.trades_duplicated or v.trades_unknown)
            else f"NO (missing {v.trades_missing}, dup {v.trades_duplicated}, unknown {v.trades_unknown})")
        resumed = "-" if r.resumed is None else f"{r.resumed[0]}/{r.resumed[1]}"
        errors = sum(rep.errors.values())
        result = "survived" if r.survived else f"FAILED: {r.failure}"
        lines.append(
            f"| {r.name} | {rep.orders_rate:.1f} | {sum(rep.connections.values())} | {rep.orders_accepted} | "
            f"{rep.orders_final} | {rep.orders_lost + rep.orders_open + (v.orders_without_final if v else 0)} | "
            f"{exp} / {dlv} | {books} | {trades} | {resumed} | {_lat(rep, 'logged-in', 'depth')} | "
            f"{_lat(rep, 'anonymous', 'depth')} | {errors} | {result} |")
    lines += ["", "### Details", ""]
    for r in results:
        lines.append(f"**{r.name}** ({r.seconds:.0f} s)")
        if r.fault:
            extra = {k: v for k, v in r.fault.items() if k not in ("fault", "start_ms", "end_ms")}
            lines.append(f"- fault took {r.fault['end_ms'] - r.fault['start_ms']} ms" +
                         (f"; {', '.join(f'{k}={v}' for k, v in extra.items())}" if extra else ""))
        if r.verdict is not None:
            lines.append(f"- verify: {r.verdict.summary()}")
            for d in r.verdict.details[:5]:
                lines.append(f"  - {d}")
        if r.report.errors:
            lines.append("- errors by kind: " + ", ".join(f"{k} × {n}" for k, n in sorted(r.report.errors.items())))
        if r.error:
            lines.append(f"- fault error: {r.error}")
        lines.append("")
    if inputs is not None and inputs.by_module:
        lines += ["## Bad input", "",
                  "The corpus lives in `tests/reliability/` and runs in `make test`; each case expects a clear "
                  "error (HTTP 4xx with a JSON `{code, message}`, an `error` WebSocket event, a 401 at connect, a "
                  "`REJECTED`/`BAD_ORDER` status) and then checks that nothing else moved (no record on the orders "
                  "stream, no new cache key, the connection still answers `ping`, a good order still flows).", "",
                  "| module | cases passed |", "|---|---|"]
        for mod, n in sorted(inputs.by_module.items()):
            lines.append(f"| `{mod}` | {n} |")
        lines.append("")
        if inputs.failed:
            lines += ["Failed in this run: " + ", ".join(f"`{n}`" for n in inputs.failed[:20]), ""]
    lines += [
        "## How to run",
        "",
        "- `make load ARGS=\"--clients 100 --rate 50 --duration 30\"` against a running `make dev` prints the load "
        "table (orders accepted/final, messages expected/delivered, latency percentiles per tier, errors by kind).",
        "- `make soak` (bounded: `ARGS=\"--flow 20 --rate 30 --clients 30\"`) starts its own stack on free ports "
        "and a temporary data folder, runs the baseline and every fault, and rewrites this file.",
        "- Latencies are measured to the moment the client read the message, on one machine's clock. For "
        "`order` and `fill` events they start at the order command's `ts` (stamped by the order router when the "
        "REST request arrives), so they include REST, Kinesis, the engine, the notify Lambda and the gateway; for "
        "`depth` they start at the depth's `t`, the engine's clock when it wrote the book, so they cover the "
        "streamer and the gateway only. The anonymous tier is pushed every 500 ms by design.",
        "",
        "## Decisions (where the issue is silent)",
        "",
        "- **Who listens.** Besides the N load clients, every trading user keeps one logged-in connection (a "
        "\"trader\"), so every order's owner is listening; logged-in load clients share those user ids (users with "
        "several devices), anonymous ones are read-only.",
        "- **Every accepted order ends final.** Takers are IOC (final at once); resting GTC makers are cancelled as "
        "soon as they are seen open after the flow, so \"accepted = final\" is a strict check, not an estimate.",
        "- **Anchors.** The load's own books are empty once every order is final, so before the first scenario "
        "the soak rests one BUY of 1 per symbol at half the mid price (user `soak-anchor`, below every taker) and "
        "never cancels it: each books check compares a non-empty book, and that order must come through every "
        "fault unchanged.",
        "- **Expected messages** are computed from ground truth: every status on the order-status stream once per "
        "live connection of its owner, every fill once per connection of its maker and of its taker, and the final "
        "depth `u` of each symbol at every main subscriber. Duplicates from a crash-replay are allowed on a stream "
        "but must be identical events; `trade_history` must hold each trade id exactly once.",
        "- **Silence is visible.** A client that hears nothing for 5 s while orders flow sends its subscription "
        "again and counts `ws resubscribe after silence`, so a lost subscription shows up as an error kind instead "
        "of as missing figures only.",
        "- **Valkey restart.** The local stack keeps both caches in one valkey-server with the append-only file "
        "on, so the keys and the connection registry survive the restart; a key the engine finds missing it writes "
        "back within about a second (next bullet).",
        "- **Depth cache loss.** The local caches share one valkey-server, so a non-persistent depth cache cannot "
        "be restarted alone; `depth-cache-loss` deletes every key the engine writes there instead (`depth`, "
        "`ticker`, open and closed 1-minute candles). Just before, it rests one order on a quiet symbol "
        "(`QUIETDC`) that takes no other order until the check, so only the engine's rebuild can bring its book "
        "back: `GET /depth/QUIETDC` must return exactly what it returned before (same `u`, levels and `t`) within "
        "15 s, and every load symbol must have its depth again. The rest of a real flush (connection registry, "
        "the admin's symbols) is not the engine's to rebuild and is left in place (docs/deploy.md).",
        "- **Isolation.** The stack runs in a child process (`tools/soak/stack.py`) so the load generator does not "
        "share a GIL with the REST server, gateway and pump threads. The figures still depend on what else the "
        "machine runs: the load average at the end of the run is recorded above.",
        "- **Fuzz.** Schemathesis also tries methods such as TRACE and QUERY; Python's `http.server` under "
        "`chalice local` answers those with 501 before the app sees them (API Gateway answers 403), so they are "
        "skipped; every other 5xx is a failure.",
        "",
    ]
    return "\n".join(lines)
