"""tools/bench/common.py: the SIGTERM hook and the figure table every benchmark prints."""

from __future__ import annotations

import os
import signal

import pytest

from tools.bench.common import status, stop_on_sigterm, table


@pytest.fixture
def restore_sigterm():
    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


def test_the_first_sigterm_unwinds_like_ctrl_c_and_later_ones_cannot_cut_the_clean_up(restore_sigterm):
    stop_on_sigterm()
    cleaned = False
    with pytest.raises(KeyboardInterrupt):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes of the main thread
                pass
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # `timeout make` sends a second one (make forwards it)
            for _ in range(1000):
                pass
            cleaned = True
    assert cleaned
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)  # exec'd children get the default


def test_table_pads_short_rows_and_refuses_long_ones():
    out = table(["measure", "result", "goal", "status"], [["a", 1], ["b", 2, "< 3", status(True)]])
    assert out.splitlines() == ["| measure | result | goal | status |", "|---|---|---|---|",
                                "| a | 1 |  |  |", "| b | 2 | < 3 | met |"]
    with pytest.raises(ValueError):
        table(["a"], [[1, 2]])
    assert status(False) == "MISSED"
