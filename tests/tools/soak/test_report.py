"""docs/reliability.md is rendered from the soak's results: figures, verdicts, failures named."""

from __future__ import annotations

from tools.load.model import LatencyRow, Report
from tools.load.verify import Verdict
from tools.soak.report import InputsTried, ScenarioResult, render


def _report(lost: int = 0) -> Report:
    return Report(duration_s=20.0, orders_sent=600, orders_accepted=600, orders_final=600 - lost, orders_open=0,
                  orders_lost=lost, orders_rate=30.0, connections={"logged-in": 23, "anonymous": 15},
                  messages_expected={"order": 100}, messages_delivered={"order": 100}, messages_total=5000,
                  latency=[LatencyRow("logged-in", "depth", 10, 40.0, 80.0, 120.0, 130.0)],
                  errors={"ws resubscribe after silence": 2})


def test_all_survived_reports_zero_lost():
    results = [ScenarioResult("baseline", _report(), Verdict(trades=10, levels_compared=2)),
               ScenarioResult("engine-kill9", _report(), Verdict(trades=20, levels_compared=2),
                              fault={"fault": "engine-kill9", "start_ms": 0, "end_ms": 1500}, resumed=(38, 38))]
    text = render(results, InputsTried(tests_passed=300, by_module={"test_rest_corpus": 200}, fuzz_examples=90),
                  {"rate": "30/s"}, 100.0)
    assert "**Anything lost:** 0" in text
    assert "**Faults survived:** 1 of 1: engine-kill9" in text
    assert "30.0 accepted orders/s" in text and "38 WebSocket connections" in text
    assert "| engine-kill9 | 30.0 | 38 | 600 | 600 | 0 | 100 / 100 | yes (2 levels) | yes (20) | 38/38 | 40 / 120 |" in text
    assert "300 corpus cases" in text and "90 schemathesis" in text


def test_failures_are_named():
    bad = Verdict(trades=5, trades_duplicated=1, books_differing=["TEST"])
    results = [ScenarioResult("valkey-restart", _report(lost=2), bad,
                              fault={"fault": "valkey-restart", "start_ms": 0, "end_ms": 10}, resumed=(30, 38))]
    assert not results[0].survived and results[0].lost == 4
    text = render(results, None, {}, 10.0)
    assert "**Anything lost:** 4" in text
    assert "Faults survived:** 0 of 1" in text
    assert "NO (TEST)" in text and "dup 1" in text and "30/38" in text and "FAILED" in text


def test_a_fault_that_could_not_be_injected_is_not_survived():
    r = ScenarioResult("streamer-kill9", _report(), Verdict(), fault=None, error="streamer is not running")
    assert not r.survived
    starving = ScenarioResult("slow-reader", _report(), Verdict(),
                              fault={"fault": "slow-reader", "start_ms": 0, "end_ms": 1, "others_starved": 3})
    assert not starving.survived


def test_a_scenario_that_checked_nothing_is_not_survived():
    """No accepted order (nothing could be lost) or only empty books compared (any two empty books
    are equal) is a failure, named as such, not a pass with zero lost."""
    nothing = _report()
    nothing.orders_sent, nothing.orders_accepted, nothing.orders_final = 600, 0, 0
    nothing.messages_expected = nothing.messages_delivered = {}
    fault = {"fault": "kinesis-restart", "start_ms": 0, "end_ms": 10}
    none_accepted = ScenarioResult("kinesis-restart", nothing, Verdict(levels_compared=2), fault=fault,
                                   resumed=(38, 38))
    assert none_accepted.lost == 0 and not none_accepted.survived
    assert "FAILED: no order accepted" in render([none_accepted], None, {}, 10.0)
    empty_books = ScenarioResult("kinesis-restart", _report(), Verdict(trades=10), fault=fault, resumed=(38, 38))
    assert empty_books.lost == 0 and not empty_books.survived
    text = render([empty_books], None, {}, 10.0)
    assert "FAILED: the books compared were empty" in text and "Faults survived:** 0 of 1" in text
    assert ScenarioResult("kinesis-restart", _report(), Verdict(trades=10, levels_compared=1), fault=fault,
                          resumed=(38, 38)).survived


def test_skipped_faults_and_a_corpus_that_did_not_run_are_failures():
    results = [ScenarioResult("baseline", _report(), Verdict(trades=10, levels_compared=2))]
    broken = InputsTried(error="pytest exited with code 4")
    assert not broken.ok and not InputsTried().ok and InputsTried(tests_passed=3).ok
    text = render(results, broken, {}, 10.0, ["engine-kill9", "kinesis-restart"])
    assert "**Faults survived:** 0 of 2" in text
    assert "Not run (time bound reached, the soak FAILS):** engine-kill9, kinesis-restart" in text
    assert "the corpus did not run to the end (pytest exited with code 4); the soak FAILS" in text


def test_the_faults_module_lists_its_faults_and_says_how_to_run_them(capsys):
    from tools.faults import FAULTS, main

    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list(FAULTS)
    assert main([]) == 2 and "python -m tools.soak --faults" in capsys.readouterr().out
